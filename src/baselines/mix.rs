//! Pooled counts of a mix or distribution (status classes, finish reasons,
//! resolved models, token-length bins), decayed so old traffic fades.

use serde::{Deserialize, Serialize};

/// A chi-square goodness-of-fit of one bucket's counts against the pool.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MixTest {
    /// The chi-square statistic.
    pub chi2: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// Its p-value.
    pub p_value: f64,
    /// Total variation distance between the two mixes (0..=1): the effect size.
    pub tvd: f64,
    /// Observations in the bucket.
    pub n: u64,
    /// The category whose share moved most, and its share before and now.
    pub top: (u32, f64, f64),
    /// The category whose share grew most, and its share before and now (where
    /// a route's traffic went).
    pub rise: (u32, f64, f64),
}

/// Decayed pooled counts per category, with the warm-up's side pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Mix {
    counts: Vec<(u32, f64)>,
    post: Option<Vec<(u32, f64)>>,
    post_from: i64,
    /// Whether `post` pools an open alert's buckets rather than a warm-up's.
    held: bool,
}

impl Mix {
    /// Fold in the counts of the bucket starting at `ts_ms`, decaying the pool by
    /// `decay` first.
    pub fn add(&mut self, bucket: &[(u32, u32)], decay: f64, ts_ms: i64) {
        let pool = match self.post.as_mut().filter(|_| ts_ms >= self.post_from) {
            Some(post) => post,
            None => {
                for (_, c) in &mut self.counts {
                    *c *= decay;
                }
                &mut self.counts
            }
        };
        add_counts(pool, bucket);
    }

    /// Observations in the pool (decayed).
    pub fn total(&self) -> f64 {
        self.counts.iter().map(|(_, c)| c).sum()
    }

    /// The category with the largest pooled share.
    pub fn dominant(&self) -> Option<u32> {
        self.counts
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|&(k, _)| k)
    }

    /// Test `bucket` against the pool; `None` when the pool has fewer than
    /// `min_pool` observations or the bucket is empty.
    pub fn test(&self, bucket: &[(u32, u32)], min_pool: f64) -> Option<MixTest> {
        test_counts(&self.counts, bucket, min_pool)
    }

    /// Start a warm-up for a change at `from_ms`: buckets from then on pool aside.
    pub fn begin_warmup(&mut self, from_ms: i64) {
        if self.post.is_none() {
            self.post_from = from_ms;
        }
        self.post.get_or_insert_with(Vec::new);
        self.held = false;
    }

    /// An alert on this mix opened at `from_ms`: its buckets pool aside, not into
    /// the baseline, until `release` forgets them or `end_warmup` learns them.
    pub fn hold(&mut self, from_ms: i64) {
        if self.post.is_none() {
            self.post_from = from_ms;
            self.post = Some(Vec::new());
            self.held = true;
        }
    }

    /// When the open alert holding this mix began, if one does.
    pub fn held_since(&self) -> Option<i64> {
        self.held.then_some(self.post_from)
    }

    /// The open alert closed: forget the buckets it held.
    pub fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.post = None;
        }
    }

    /// End the warm-up: when the post-change pool differs (p < 0.001 and total
    /// variation at least `min_tvd`), it becomes the new pool (a new epoch);
    /// otherwise it is merged in. Returns the comparison.
    pub fn end_warmup(&mut self, min_tvd: f64) -> Option<MixTest> {
        self.held = false;
        let post = self.post.take()?;
        let as_bucket: Vec<(u32, u32)> = post.iter().map(|&(k, c)| (k, c.round() as u32)).collect();
        let verdict = self.test(&as_bucket, 30.0);
        if verdict.is_some_and(|t| t.p_value < 0.001 && t.tvd >= min_tvd) {
            self.counts = post;
        } else {
            for (k, c) in post {
                add_count(&mut self.counts, k, c);
            }
        }
        verdict
    }
}

fn add_counts(pool: &mut Vec<(u32, f64)>, bucket: &[(u32, u32)]) {
    for &(k, n) in bucket {
        add_count(pool, k, n as f64);
    }
}

fn add_count(pool: &mut Vec<(u32, f64)>, key: u32, n: f64) {
    match pool.iter_mut().find(|(k, _)| *k == key) {
        Some((_, c)) => *c += n,
        None => pool.push((key, n)),
    }
}

fn test_counts(pool: &[(u32, f64)], bucket: &[(u32, u32)], min_pool: f64) -> Option<MixTest> {
    let total: f64 = pool.iter().map(|(_, c)| c).sum();
    let n: u64 = bucket.iter().map(|&(_, c)| c as u64).sum();
    if total < min_pool || n == 0 {
        return None;
    }
    let mut keys: Vec<u32> = pool.iter().map(|&(k, _)| k).collect();
    keys.extend(bucket.iter().map(|&(k, _)| k));
    keys.sort_unstable();
    keys.dedup();
    let k = keys.len() as f64;
    let (mut chi2, mut tvd, mut top): (f64, f64, (u32, f64, f64)) = (0.0, 0.0, (0, 0.0, 0.0));
    let mut rise = (0, 0.0, 0.0);
    for key in keys {
        let pooled = pool.iter().find(|(x, _)| *x == key).map_or(0.0, |p| p.1);
        let observed = bucket.iter().find(|(x, _)| *x == key).map_or(0, |b| b.1) as f64;
        // Add-half smoothing: a category the pool never saw has a small expected
        // count instead of zero, so a brand-new category is significant but finite.
        let share = (pooled + 0.5) / (total + 0.5 * k);
        let expected = n as f64 * share;
        chi2 += (observed - expected).powi(2) / expected;
        let now = observed / n as f64;
        let moved = (now - pooled / total).abs();
        tvd += moved / 2.0;
        if moved > (top.2 - top.1).abs() {
            top = (key, pooled / total, now);
        }
        if now - pooled / total > rise.2 - rise.1 {
            rise = (key, pooled / total, now);
        }
    }
    let df = (k - 1.0).max(1.0);
    Some(MixTest {
        chi2,
        df,
        p_value: super::stats::chi2_sf(chi2, df),
        tvd,
        n,
        top,
        rise,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_mix_is_not_significant_and_a_new_category_is() {
        let mut mix = Mix::default();
        for _ in 0..20 {
            mix.add(&[(0, 95), (1, 5)], 1.0, 0);
        }
        let same = mix.test(&[(0, 94), (1, 6)], 100.0).unwrap();
        assert!(same.p_value > 0.1 && same.tvd < 0.02, "{same:?}");
        let new = mix.test(&[(0, 40), (2, 60)], 100.0).unwrap();
        assert!(new.p_value < 1e-9 && new.tvd > 0.5, "{new:?}");
        assert_eq!(new.top.0, 2);
        assert_eq!(mix.dominant(), Some(0));
        // Traffic moved from 0 to 1: the rise names where it went.
        let moved = mix.test(&[(0, 30), (1, 70)], 100.0).unwrap();
        assert_eq!(moved.rise.0, 1);
        assert!((moved.rise.1 - 0.05).abs() < 1e-9 && (moved.rise.2 - 0.7).abs() < 1e-9);
    }

    #[test]
    fn a_small_pool_judges_nothing() {
        let mut mix = Mix::default();
        mix.add(&[(0, 10)], 1.0, 0);
        assert!(mix.test(&[(1, 10)], 100.0).is_none());
    }

    #[test]
    fn warmup_replaces_the_pool_only_when_the_mix_moved() {
        let mut mix = Mix::default();
        mix.add(&[(0, 900), (1, 100)], 1.0, 0);
        mix.begin_warmup(0);
        mix.add(&[(0, 90), (1, 10)], 1.0, 0);
        assert!(!mix.end_warmup(0.1).unwrap().p_value.is_nan());
        assert!((mix.total() - 1100.0).abs() < 1e-9, "merged");
        mix.begin_warmup(0);
        mix.add(&[(2, 100)], 1.0, 0);
        mix.end_warmup(0.1);
        assert_eq!(mix.dominant(), Some(2), "replaced");
    }
}
