//! Eval scores of a thin scope, pooled: a quiet route gets a few scores per bucket,
//! too few for a rule's `min_samples`, so its scores are pooled over consecutive
//! buckets until they are enough (for at most a day) and each full pool is judged
//! against the scope's recent pooled means. The mean of a handful of scores is
//! mostly sampling noise, so a thin route's quality is compared pool to pool, not
//! bucket to seasonal bucket.

use serde_json::json;

use super::rules::Rule;
use super::view::{BucketView, Detection};
use super::words::{base_json, round, scalar_summary};
use super::{Counts, Test};
use crate::baselines::SortedRing;
use crate::baselines::stats;
use crate::domain::{Baseline, Signal, scope_label};
use crate::lanes::cell::EvalCell;

/// How many pooled means the baseline remembers.
const MEANS: usize = 48;
/// Pooled means needed before a pool is judged.
const MIN_MEANS: usize = 12;
/// The longest a pool gathers scores: a scope with fewer in a day is not judged.
const MAX_SPAN_MS: i64 = 86_400_000;

/// A scope's pool in progress and its recent pooled means.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ScorePool {
    /// Scores, their sum and sum of squares, since `since_ms`.
    n: u64,
    sum: f64,
    sq: f64,
    buckets: u32,
    since_ms: Option<i64>,
    means: SortedRing,
}

/// A full pool: its mean score and what it rests on.
#[derive(Debug, Clone, Copy)]
pub struct Pooled {
    /// Mean of the pooled scores.
    pub mean: f64,
    /// Scores and their variance.
    pub counts: Counts,
    /// Buckets the pool spans (its last bucket included).
    pub buckets: u32,
    /// The scope's recent pooled means, once there are enough.
    pub base: Option<Baseline>,
}

impl ScorePool {
    /// Add the bucket starting at `start_ms`: the pool, when it now holds `target`
    /// scores. A bucket that alone holds `target` is judged by itself and ends the
    /// pool in progress (the pooled means stay for the next quiet spell).
    pub fn add(&mut self, start_ms: i64, cell: &EvalCell, target: u64) -> Option<Pooled> {
        if cell.scores as u64 >= target.max(1) {
            self.clear();
            return None;
        }
        if self.since_ms.is_some_and(|s| start_ms - s >= MAX_SPAN_MS) {
            self.clear();
        }
        if cell.scores == 0 {
            return None;
        }
        self.since_ms.get_or_insert(start_ms);
        self.n += cell.scores as u64;
        self.sum += cell.score_sum;
        self.sq += cell.score_sq;
        self.buckets += 1;
        if self.n < target {
            return None;
        }
        let mean = self.sum / self.n as f64;
        let pooled = Pooled {
            mean,
            counts: Counts {
                n: self.n,
                x: 0,
                variance: (self.sq / self.n as f64 - mean * mean).max(0.0),
            },
            buckets: self.buckets,
            base: self.baseline(),
        };
        self.clear();
        Some(pooled)
    }

    /// Learn a full pool's mean as normal (not while an alert on it is open).
    pub fn learn(&mut self, mean: f64) {
        self.means.push(mean as f32, MEANS);
    }

    fn clear(&mut self) {
        (self.n, self.sum, self.sq, self.buckets, self.since_ms) = (0, 0.0, 0.0, 0, None);
    }

    fn baseline(&self) -> Option<Baseline> {
        if self.means.len() < MIN_MEANS {
            return None;
        }
        let (median, mad, mean_dev) = self.means.summary()?;
        let n = self.means.len();
        let mean = self.means.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        Some(Baseline {
            median,
            mad,
            mean,
            n,
            seasonal: false,
            mean_dev,
        })
    }
}

/// How far a pool's mean lies from the recent pooled means, as a z: its own
/// sampling error and the pooled means' robust spread together, on Student's t, as
/// a bucket's mean score is judged (`judge_scalar`). Either error alone is estimated
/// from a few dozen values and is sometimes much too small.
fn shift_z(pooled: &Pooled, base: &Baseline, diff: f64) -> f64 {
    let c = pooled.counts;
    stats::mean_shift_z(diff, c.variance, c.n, 1.4826 * base.mad, base.n as u64)
}

/// A full pool's mean score away from the scope's recent pooled means.
pub fn score(rule: &Rule, view: &BucketView<EvalCell>, pooled: &Pooled) -> Option<Detection> {
    let base = pooled.base?;
    let diff = pooled.mean - base.median;
    let sign = diff.signum();
    if !rule.direction.admits(sign) || pooled.counts.n < rule.min_samples {
        return None;
    }
    let z = shift_z(pooled, &base, diff);
    let rel = diff / base.median.abs().max(1e-9);
    let p_value = stats::one_sided_p(z, sign > 0.0);
    let passes = p_value < rule.alpha
        && rel.abs() >= rule.min_change
        && diff.abs() >= rule.min_abs
        && z.abs() >= rule.min_z;
    if !passes {
        return None;
    }
    let test = Test {
        sign,
        rel,
        diff,
        z,
        p_value,
        name: "pooled mean vs recent pools",
    };
    let summary = scalar_summary(
        Signal::EvalScore,
        &scope_label(view.labels),
        pooled.mean,
        Some(&base),
        &test,
    );
    let mut d = Detection::new(
        Signal::EvalScore,
        test,
        (json!(round(pooled.mean)), base_json(Some(&base))),
        summary,
    );
    d.evidence.insert(
        "pooled".into(),
        json!({"buckets": pooled.buckets, "scores": pooled.counts.n}),
    );
    Some(d)
}

/// Where an open alert's pooled score stands: back within half the rule's change,
/// or no longer detectably away, is calm.
pub fn inside(rule: &Rule, pooled: &Pooled) -> Option<bool> {
    let base = pooled.base?;
    let diff = pooled.mean - base.median;
    let near = (diff / base.median.abs().max(1e-9)).abs() < rule.min_change / 2.0;
    Some(near || shift_z(pooled, &base, diff).abs() < 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::one_rule;
    use crate::detect::view::testkit::{History, TEN_MIN};

    fn rule() -> Rule {
        one_rule(
            "[[rule]]\nname = \"eval-score\"\nsignal = \"eval_score\"\nscopes = [\"route\"]\ndirection = \"down\"\nmin_change = 0.05\nmin_abs = 0.03\nalpha = 1e-4\nmin_samples = 20\n",
        )
    }

    /// A bucket with `scores` scores, alternating `level - 0.15` and `level + 0.15`.
    fn cell(scores: u32, level: f64) -> EvalCell {
        let mut c = EvalCell {
            requests: 40,
            evaluated: scores,
            ..EvalCell::default()
        };
        for i in 0..scores {
            let s = level + if i % 2 == 0 { -0.15 } else { 0.15 };
            c.add(Some(s), None, 0.0, false);
        }
        c
    }

    /// Feed `buckets` buckets of `scores` scores at `level` from bucket `from`;
    /// learn each full pool unless `hold`; the detections of the full pools.
    fn feed(
        pool: &mut ScorePool,
        (from, buckets): (i64, i64),
        scores: u32,
        level: f64,
        hold: bool,
    ) -> Vec<Option<Detection>> {
        let rule = rule();
        let history = History::new(&[("route", "classify")]);
        let mut out = Vec::new();
        for i in from..from + buckets {
            let c = cell(scores, level);
            if let Some(p) = pool.add(i * TEN_MIN, &c, rule.min_samples) {
                out.push(score(&rule, &history.view(i * TEN_MIN, &c, false), &p));
                if !hold {
                    pool.learn(p.mean);
                }
            }
        }
        out
    }

    #[test]
    fn a_thin_routes_scores_are_pooled_until_enough_and_judged_pool_to_pool() {
        let mut pool = ScorePool::default();
        // Five scores a bucket: a pool every four buckets; 30 quiet pools.
        let quiet = feed(&mut pool, (0, 120), 5, 0.82, false);
        assert_eq!(quiet.len(), 30);
        assert!(quiet.iter().all(Option::is_none), "steady scores are quiet");
        // The route's answers fall to 0.62: the first full pool finds it.
        let fall = feed(&mut pool, (120, 4), 5, 0.62, true);
        let d = fall[0].as_ref().expect("a fall of 0.2 is found");
        assert_eq!(d.evidence["pooled"]["scores"], 20);
        assert_eq!(d.evidence["pooled"]["buckets"], 4);
        assert!(d.test.z < -4.0, "{:?}", d.test);
        // A fall of 0.03 is not.
        let mut other = ScorePool::default();
        feed(&mut other, (0, 120), 5, 0.82, false);
        assert!(feed(&mut other, (120, 4), 5, 0.79, true)[0].is_none());
    }

    #[test]
    fn a_busy_bucket_ends_pooling_and_a_pool_spans_at_most_a_day() {
        let rule = rule();
        let mut pool = ScorePool::default();
        assert!(pool.add(0, &cell(19, 0.8), 20).is_none());
        assert!(
            pool.add(TEN_MIN, &cell(20, 0.8), 20).is_none(),
            "judged by itself"
        );
        assert!(pool.add(2 * TEN_MIN, &cell(1, 0.8), 20).is_none());
        // A day later the old score is gone: 19 more do not fill the pool.
        let day = MAX_SPAN_MS;
        assert!(pool.add(2 * TEN_MIN + day, &cell(19, 0.8), 20).is_none());
        let full = pool.add(3 * TEN_MIN + day, &cell(1, 0.8), 20).expect("20");
        assert_eq!((full.counts.n, full.buckets), (20, 2));
        assert!(full.base.is_none(), "no pooled means yet");
        assert_eq!(inside(&rule, &full), None);
    }
}
