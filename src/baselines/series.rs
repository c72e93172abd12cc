//! One scalar series (a signal in a scope): seasonal and recent rings, the epoch's
//! anchor, a step detector, and the warm-up after a change event.

use std::cell::Cell;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::ring::SortedRing;
use super::{BaselineParams, SLOTS, median, median_mad, slot};
use crate::domain::Baseline;

/// The before/after comparison that ends a warm-up: the series' part of a
/// change-impact report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The old baseline's median (averaged over the post-change buckets' slots).
    pub before: f64,
    /// Values the old baseline was learned from (at the first post-change bucket).
    pub before_n: usize,
    /// Median of the post-change values.
    pub after: f64,
    /// Post-change values.
    pub after_n: usize,
    /// (after − before) / |before|.
    pub shift: f64,
    /// The shift in standard errors of the median residual.
    pub z: f64,
    /// Two-sided p-value of `z`.
    pub p_value: f64,
    /// Whether the level moved, so a new epoch started.
    pub changed: bool,
}

/// A scalar series' history in its current epoch.
/// Part of the analysis snapshot; the cached baseline is not (it is asked for anew).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    seasonal: Vec<SortedRing>,
    recent: VecDeque<f32>,
    since_epoch: usize,
    anchor: Option<(f64, f64)>,
    /// The rolling level as it was at the last whole day of the epoch.
    day_level: Option<f64>,
    /// Post-change values `(ts_ms, value)` while a warm-up runs.
    post: Option<Vec<(i64, f32)>>,
    /// When the running warm-up's change took effect: earlier buckets still learn.
    post_from: i64,
    /// `Some(keep)` while `post` holds the values of an open alert rather than of a
    /// change's warm-up; `keep` false drops them.
    held: Option<bool>,
    epoch: u32,
    /// The last baseline given and the window it came from, until the next learned
    /// value: the engine asks for the same one several times a bucket (its rules,
    /// the price-volume-mix, the cost moves).
    #[serde(skip)]
    last: Cell<Option<(Window, Option<Baseline>)>>,
}

/// Which values a baseline is learned from (see `Series::baseline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// A seasonal slot's ring.
    Seasonal(usize),
    /// The newest this many values of the recent ring.
    Recent(usize),
}

impl Series {
    /// The seasonal ring a baseline for a bucket starting at `ts_ms` is learned from:
    /// the slot's, once it has `seasonal_min` values.
    fn seasonal_window(&self, ts_ms: i64, p: &BaselineParams) -> Option<&SortedRing> {
        self.seasonal
            .get(slot(ts_ms))
            .filter(|r| r.len() >= p.seasonal_min)
    }

    /// The values the fallback baseline is learned from when there is no seasonal
    /// window: unless `seasonal_only`, the last `recent_window` of the recent ring
    /// once it has `recent_min`. Empty when there is not enough history.
    fn recent_window(
        &self,
        seasonal_only: bool,
        p: &BaselineParams,
    ) -> impl ExactSizeIterator<Item = &f32> {
        let recent = self.recent.len();
        let skip = match seasonal_only || recent < p.recent_min {
            true => recent,
            false => recent.saturating_sub(p.recent_window),
        };
        self.recent.iter().skip(skip)
    }

    /// The baseline for a bucket starting at `ts_ms`, if there is enough history.
    pub fn baseline(
        &self,
        ts_ms: i64,
        seasonal_only: bool,
        p: &BaselineParams,
    ) -> Option<Baseline> {
        let ring = self.seasonal_window(ts_ms, p);
        let window = match ring {
            Some(_) => Window::Seasonal(slot(ts_ms)),
            None => Window::Recent(self.recent_window(seasonal_only, p).len()),
        };
        if let Some((last, baseline)) = self.last.get()
            && last == window
        {
            return baseline;
        }
        let baseline = match ring {
            Some(ring) => ring.summary().map(|(median, mad, mean_dev)| Baseline {
                median,
                mad,
                mean: mean(ring.iter()),
                n: ring.len(),
                seasonal: true,
                mean_dev,
            }),
            None => self.recent_baseline(seasonal_only, p),
        };
        self.last.set(Some((window, baseline)));
        baseline
    }

    /// The baseline of the recent window, if it holds any value.
    fn recent_baseline(&self, seasonal_only: bool, p: &BaselineParams) -> Option<Baseline> {
        let mut values: Vec<f32> = self.recent_window(seasonal_only, p).copied().collect();
        let centre = mean(values.iter());
        let (median, mad) = median_mad(&mut values)?;
        // `median_mad` left each value's absolute deviation from the median in place.
        let mean_dev = mean(values.iter());
        Some(Baseline {
            median,
            mad,
            mean: centre,
            n: values.len(),
            seasonal: false,
            mean_dev,
        })
    }

    /// Whether `baseline` would give one, without computing it: the engine asks this of
    /// every quiet scope in every bucket.
    pub fn has_baseline(&self, ts_ms: i64, seasonal_only: bool, p: &BaselineParams) -> bool {
        match self.seasonal_window(ts_ms, p) {
            Some(ring) => !ring.is_empty(),
            None => self.recent_window(seasonal_only, p).len() > 0,
        }
    }

    /// Record a bucket's value (into the warm-up buffer while one runs).
    pub fn push(&mut self, ts_ms: i64, value: f64, p: &BaselineParams) {
        if !value.is_finite() {
            return;
        }
        if let Some(post) = self.post.as_mut().filter(|_| ts_ms >= self.post_from) {
            if self.held != Some(false) {
                post.push((ts_ms, value as f32));
            }
            return;
        }
        self.learn(ts_ms, value as f32, p);
    }

    fn learn(&mut self, ts_ms: i64, value: f32, p: &BaselineParams) {
        *self.last.get_mut() = None;
        if self.seasonal.is_empty() {
            self.seasonal = vec![SortedRing::default(); SLOTS];
        }
        self.seasonal[slot(ts_ms)].push(value, p.seasonal_cap);
        if self.recent.len() == p.recent_cap {
            self.recent.pop_front();
        }
        self.recent.push_back(value);
        self.since_epoch += 1;
        if self.since_epoch % p.recent_cap == 0 {
            self.day_level = self.level(p);
        }
        if self.anchor.is_none() && self.since_epoch >= p.anchor_len {
            let mut values: Vec<f32> = self.recent.iter().copied().collect();
            self.anchor = median_mad(&mut values);
        }
    }

    /// The epoch's anchor (median, MAD), once it has `anchor_len` values.
    pub fn anchor(&self) -> Option<(f64, f64)> {
        self.anchor
    }

    /// The rolling level: median of the recent ring, once it is full.
    pub fn level(&self, p: &BaselineParams) -> Option<f64> {
        if self.recent.len() < p.recent_cap {
            return None;
        }
        let mut values: Vec<f32> = self.recent.iter().copied().collect();
        median(&mut values)
    }

    /// Slow drift of the rolling level away from the epoch's anchor: `(anchor,
    /// level, relative change)` when the change is at least `min_change` and did
    /// not arrive as a step within the last day (a step is the drift and step
    /// detectors' business; creep is what moves a little every day).
    /// With `open` (its alert already fires) only the distance counts: a creep
    /// stays reported while the level stays away from the anchor.
    pub fn creep(
        &self,
        min_change: f64,
        open: bool,
        p: &BaselineParams,
    ) -> Option<(f64, f64, f64)> {
        let (anchor, _) = self.anchor?;
        let level = self.level(p)?;
        let scale = anchor.abs().max(1e-12);
        let rel = (level - anchor) / scale;
        let recent_step = ((level - self.day_level?) / scale).abs();
        (rel.abs() >= min_change && (open || recent_step < min_change / 2.0))
            .then_some((anchor, level, rel))
    }

    /// Move the anchor to the current level (after a creep was reported, so it is
    /// reported once per level, not on every bucket).
    pub fn reanchor(&mut self, p: &BaselineParams) {
        if let (Some(level), Some((_, mad))) = (self.level(p), self.anchor) {
            self.anchor = Some((level, mad));
        }
    }

    /// Start a warm-up for a change at `from_ms`: values of buckets from then on
    /// wait aside until `end_warmup`; earlier buckets (closing late) still learn.
    /// A warm-up takes over the values an open alert held.
    pub fn begin_warmup(&mut self, from_ms: i64) {
        if self.post.is_none() {
            self.post_from = from_ms;
        }
        self.post.get_or_insert_with(Vec::new);
        self.held = None;
    }

    /// An alert on this series opened at `from_ms`: from then on its values are not
    /// learned, so the anomaly never becomes its own baseline. With `keep` they wait
    /// aside (a level that may last and become the new normal through `end_warmup`);
    /// without, they are dropped (a state that is harm in itself is never learned).
    pub fn hold(&mut self, from_ms: i64, keep: bool) {
        if self.post.is_none() {
            self.post_from = from_ms;
            self.post = Some(Vec::new());
            self.held = Some(keep);
        }
    }

    /// When the open alert holding this series began, if one does.
    pub fn held_since(&self) -> Option<i64> {
        self.held.map(|_| self.post_from)
    }

    /// The open alert closed: the values it held were the anomaly, and are forgotten.
    pub fn release(&mut self) {
        if self.held.take().is_some() {
            self.post = None;
        }
    }

    /// The epoch number (0 for the first).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// End the warm-up: compare the post-change values with the old baseline and
    /// either start a new epoch from them or fold them into the old history.
    /// `counts`: the values are event counts per bucket (see `compare`).
    /// `None` when there was nothing to compare.
    pub fn end_warmup(
        &mut self,
        seasonal_only: bool,
        counts: bool,
        min_shift: f64,
        p: &BaselineParams,
    ) -> Option<Verdict> {
        self.held = None;
        let post = self.post.take()?;
        let verdict = self.compare(&post, seasonal_only, counts, min_shift, p);
        let fresh = verdict.is_none_or(|v| v.changed);
        if fresh && verdict.is_some() {
            let epoch = self.epoch + 1;
            *self = Series {
                epoch,
                ..Series::default()
            };
        }
        for (ts, v) in post {
            self.learn(ts, v, p);
        }
        verdict
    }

    /// The shift of the post-change values from the old baseline: the median residual
    /// in standard errors. With `counts`, the shift must also stand against the
    /// Poisson noise of the post-change total (as the volume detector's test does):
    /// the median of small counts moves in whole steps, so a tenant's usual 2 requests
    /// a bucket could otherwise read as a 45% fall and restart its baselines.
    fn compare(
        &self,
        post: &[(i64, f32)],
        seasonal_only: bool,
        counts: bool,
        min_shift: f64,
        p: &BaselineParams,
    ) -> Option<Verdict> {
        let mut residuals = Vec::with_capacity(post.len());
        let (mut before, mut spread, mut before_n) = (0.0, 0.0, 0);
        let (mut observed, mut expected) = (0.0, 0.0);
        for &(ts, v) in post {
            let Some(b) = self.baseline(ts, seasonal_only, p) else {
                continue;
            };
            if residuals.is_empty() {
                before_n = b.n;
            }
            residuals.push((v as f64 - b.median) as f32);
            before += b.median;
            spread += (1.4826 * b.mad).max(b.median.abs() * 0.01);
            observed += v as f64;
            expected += b.mean;
        }
        let n = residuals.len();
        if n < 3 {
            return None;
        }
        before /= n as f64;
        spread = (spread / n as f64).max(1e-9);
        let mut after_values: Vec<f32> = post.iter().map(|&(_, v)| v).collect();
        let (after, _) = median_mad(&mut after_values)?;
        let (shift_abs, _) = median_mad(&mut residuals)?;
        // Standard error of a median: √(π/2) · σ / √n.
        let mut z = shift_abs / (1.2533 * spread / (n as f64).sqrt());
        if counts {
            let poisson = super::stats::poisson_z(observed, expected);
            z = if poisson.signum() == z.signum() {
                z.signum() * z.abs().min(poisson.abs())
            } else {
                0.0
            };
        }
        let p_value = super::stats::two_sided_p(z);
        let shift = shift_abs / before.abs().max(1e-12);
        Some(Verdict {
            before,
            before_n,
            after,
            after_n: post.len(),
            shift,
            z,
            p_value,
            changed: p_value < 0.001 && shift.abs() >= min_shift,
        })
    }
}

fn mean<'a>(values: impl ExactSizeIterator<Item = &'a f32>) -> f64 {
    let n = values.len().max(1) as f64;
    values.map(|&v| v as f64).sum::<f64>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MIN: i64 = 600_000;
    /// 1970-01-05 was a Monday: tests start there so three days are weekdays.
    const MONDAY: i64 = 4 * 86_400_000;

    fn filled(days: i64, value: impl Fn(i64) -> f64, p: &BaselineParams) -> Series {
        let mut s = Series::default();
        for i in 0..days * 144 {
            s.push(MONDAY + i * TEN_MIN, value(i), p);
        }
        s
    }

    #[test]
    fn an_open_alert_holds_its_series_and_a_release_forgets_the_anomaly() {
        let p = BaselineParams::default();
        let mut s = filled(3, |i| 100.0 + (i % 5) as f64, &p);
        let at = MONDAY + 3 * 144 * TEN_MIN;
        let before = s.baseline(at, false, &p).unwrap();
        s.hold(at, false);
        assert_eq!(s.held_since(), Some(at));
        for i in 0..36 {
            s.push(at + i * TEN_MIN, 500.0, &p);
        }
        // Held values are neither learned nor kept.
        assert_eq!(s.baseline(at, false, &p).unwrap(), before);
        s.release();
        assert_eq!(s.held_since(), None);
        s.push(at + 36 * TEN_MIN, 101.0, &p);
        assert!(s.baseline(at, false, &p).unwrap().median < 110.0);
    }

    #[test]
    fn a_lasting_held_level_becomes_a_new_epoch_and_a_warmup_takes_over_a_hold() {
        let p = BaselineParams::default();
        let mut s = filled(3, |i| 100.0 + (i % 5) as f64, &p);
        let at = MONDAY + 3 * 144 * TEN_MIN;
        s.hold(at, true);
        for i in 0..36 {
            s.push(at + i * TEN_MIN, 140.0 + (i % 3) as f64, &p);
        }
        let v = s.end_warmup(false, false, 0.05, &p).unwrap();
        assert!(v.changed && v.shift > 0.3, "{v:?}");
        assert_eq!(s.epoch(), 1);
        assert!(s.baseline(at + 36 * TEN_MIN, false, &p).unwrap().median > 130.0);

        // A change event's warm-up takes the held buffer over.
        s.hold(at + 40 * TEN_MIN, false);
        s.begin_warmup(at + 40 * TEN_MIN);
        assert_eq!(s.held_since(), None);
    }

    #[test]
    fn a_history_on_two_levels_is_not_read_as_flat() {
        let p = BaselineParams::default();
        // Most buckets at one level, the rest at twice it: the MAD is zero.
        let s = filled(3, |i| if i % 144 % 5 < 3 { 1000.0 } else { 2000.0 }, &p);
        let b = s.baseline(MONDAY + 3 * 144 * TEN_MIN, false, &p).unwrap();
        assert_eq!(b.mad, 0.0);
        assert!(b.z(2000.0, 0.02) < 4.0, "{b:?}: z {}", b.z(2000.0, 0.02));
        assert!(b.z(5000.0, 0.02) > 4.0);
        // A flat history still floors the spread at 2% of its median.
        let flat = filled(3, |_| 1000.0, &p);
        let b = flat
            .baseline(MONDAY + 3 * 144 * TEN_MIN, false, &p)
            .unwrap();
        assert_eq!(b.z(1100.0, 0.02), 5.0);
    }

    #[test]
    fn has_baseline_says_what_baseline_would() {
        let p = BaselineParams::default();
        let mut s = Series::default();
        let mut seen = [false; 2];
        for i in 0..4 * 144 {
            let next = MONDAY + (i + 1) * TEN_MIN;
            s.push(MONDAY + i * TEN_MIN, (i % 7) as f64, &p);
            for seasonal_only in [false, true] {
                let has = s.has_baseline(next, seasonal_only, &p);
                assert_eq!(has, s.baseline(next, seasonal_only, &p).is_some(), "{i}");
                seen[has as usize] = true;
            }
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn a_remembered_baseline_is_the_one_computed_afresh() {
        let p = BaselineParams::default();
        let mut s = Series::default();
        for i in 0..4 * 144 {
            s.push(MONDAY + i * TEN_MIN, ((i * 7919) % 13) as f64, &p);
            // Interleaved windows: the next bucket's slot, another slot, the fallback.
            let next = MONDAY + (i + 1) * TEN_MIN;
            for (ts, seasonal_only) in [(next, false), (next + 7 * 3_600_000, false), (next, true)]
                .into_iter()
                .cycle()
                .take(7)
            {
                let fresh = Series {
                    last: Cell::new(None),
                    ..s.clone()
                };
                assert_eq!(
                    s.baseline(ts, seasonal_only, &p),
                    fresh.baseline(ts, seasonal_only, &p),
                    "{i}"
                );
            }
        }
    }

    #[test]
    fn no_baseline_until_enough_history_then_recent_then_seasonal() {
        let p = BaselineParams::default();
        let mut s = Series::default();
        assert!(s.baseline(0, false, &p).is_none());
        for i in 0..18 {
            s.push(MONDAY + i * TEN_MIN, 10.0, &p);
        }
        let b = s.baseline(MONDAY + 18 * TEN_MIN, false, &p).unwrap();
        assert!(!b.seasonal && b.median == 10.0);
        assert!(
            s.baseline(MONDAY + 18 * TEN_MIN, true, &p).is_none(),
            "volume waits for seasonal"
        );
        let s = filled(3, |i| (i % 144) as f64, &p);
        let b = s
            .baseline(MONDAY + 3 * 86_400_000 + 3_600_000, true, &p)
            .unwrap();
        assert!(b.seasonal);
        assert!((6.0..=11.0).contains(&b.median), "hour 1 values: {b:?}");
    }

    #[test]
    fn a_warmup_with_a_real_shift_starts_a_new_epoch() {
        let p = BaselineParams::default();
        let noisy = |i: i64| 10.0 + ((i * 7919) % 11) as f64 / 10.0;
        let mut s = filled(3, noisy, &p);
        s.begin_warmup(i64::MIN);
        let start = 3 * 144;
        for i in start..start + 18 {
            s.push(MONDAY + i * TEN_MIN, noisy(i) * 1.6, &p);
        }
        let v = s.end_warmup(false, false, 0.05, &p).unwrap();
        assert!(v.changed && v.shift > 0.4 && v.p_value < 1e-6, "{v:?}");
        assert_eq!(s.epoch(), 1);
        let b = s
            .baseline(MONDAY + (start + 18) * TEN_MIN, false, &p)
            .unwrap();
        assert!(b.median > 15.0, "learned from post-change data only: {b:?}");
    }

    #[test]
    fn a_warmup_without_a_shift_keeps_the_history() {
        let p = BaselineParams::default();
        let noisy = |i: i64| 10.0 + ((i * 7919) % 11) as f64 / 10.0;
        let mut s = filled(3, noisy, &p);
        s.begin_warmup(i64::MIN);
        for i in 432..450 {
            s.push(MONDAY + i * TEN_MIN, noisy(i), &p);
        }
        let v = s.end_warmup(false, false, 0.05, &p).unwrap();
        assert!(!v.changed, "{v:?}");
        assert_eq!(s.epoch(), 0);
        assert!(
            s.baseline(MONDAY + 450 * TEN_MIN, true, &p)
                .unwrap()
                .seasonal
        );
    }

    /// How many of `seeds` warm-ups end in a new epoch, for a series of Poisson counts
    /// (mean `before` a bucket over 3 days, then `after` for the 6 h warm-up).
    fn epochs_started(seeds: u64, before: f64, after: f64, counts: bool) -> usize {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Poisson};
        let p = BaselineParams::default();
        (0..seeds)
            .filter(|&seed| {
                let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
                let mut draw = |mean: f64| Poisson::new(mean).unwrap().sample(&mut rng);
                let mut s = Series::default();
                for i in 0..3 * 144 {
                    s.push(MONDAY + i * TEN_MIN, draw(before), &p);
                }
                s.begin_warmup(i64::MIN);
                for i in 3 * 144..3 * 144 + 36 {
                    s.push(MONDAY + i * TEN_MIN, draw(after), &p);
                }
                s.end_warmup(true, counts, 0.05, &p).unwrap().changed
            })
            .count()
    }

    #[test]
    fn a_warmup_over_small_counts_restarts_only_on_a_real_change() {
        // A quiet tenant's 2 requests a bucket: medians of such counts move in whole
        // steps, and the median test alone read unchanged traffic as a change.
        // The test's level is 0.001: about 1 in 1000 by chance (3 here; the median
        // alone, 28; a doubling is found 972 times).
        let unchanged = epochs_started(1000, 2.2, 2.2, true);
        assert!(
            unchanged <= 5,
            "{unchanged} of 1000 unchanged warm-ups restarted"
        );
        let median_alone = epochs_started(1000, 2.2, 2.2, false);
        assert!(
            median_alone >= 15,
            "the case this guards against: {median_alone}"
        );
        let doubled = epochs_started(1000, 2.2, 4.4, true);
        assert!(doubled >= 950, "only {doubled} of 1000 doublings restarted");
    }

    #[test]
    fn the_anchor_is_the_level_of_the_first_day() {
        let p = BaselineParams::default();
        let s = filled(3, |i| 10.0 + i as f64 / 144.0, &p);
        let (anchor, _) = s.anchor().unwrap();
        assert!((10.0..11.0).contains(&anchor), "{anchor}");
        assert!(s.level(&p).unwrap() > 12.0);
    }
}
