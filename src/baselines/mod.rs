//! Baselines: what normal looks like, per signal and scope, learned per epoch.
//!
//! Each series keeps the bucket values of its current epoch in two places: a ring
//! per seasonal slot (hour of day × weekday/weekend, UTC) and a recent ring. The
//! baseline for a bucket is the median and MAD of its slot's ring once that holds
//! enough days; before that, of the recent ring — except for volume and spend,
//! which follow the clock and are never judged against the fallback. A series
//! without enough data has no baseline, and a signal without a baseline never alerts.
//!
//! A change event starts a warm-up: values go to a side buffer while the old
//! baseline keeps judging (muted). At the end of the warm-up the post-change values
//! are compared with the old baseline; if the level moved, a new epoch starts from
//! them, otherwise they join the old history and nothing is lost.

mod mix;
mod ring;
mod series;
// Public for the detectors above, which judge with the same tests.
pub mod stats;

pub use mix::Mix;
pub use ring::SortedRing;
pub use series::{Series, Verdict};

use serde::{Deserialize, Serialize};

/// Baseline parameters (`[baselines]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineParams {
    /// Values kept per seasonal slot (with 10-minute buckets, 24 = four days).
    pub seasonal_cap: usize,
    /// Values a seasonal slot needs before it is used (12 = two days).
    pub seasonal_min: usize,
    /// Values in the recent ring (144 = one day of 10-minute buckets).
    pub recent_cap: usize,
    /// How many of the newest recent values the fallback baseline uses.
    pub recent_window: usize,
    /// Values the fallback needs before it is used.
    pub recent_min: usize,
    /// Values after an epoch starts from which its anchor (the level creep is
    /// measured against) is taken.
    pub anchor_len: usize,
    /// Half-life of the pooled counts of mixes and distributions, in buckets.
    pub mix_half_life: f64,
}

impl Default for BaselineParams {
    fn default() -> BaselineParams {
        BaselineParams {
            seasonal_cap: 24,
            seasonal_min: 12,
            recent_cap: 144,
            recent_window: 36,
            recent_min: 18,
            anchor_len: 144,
            mix_half_life: 432.0,
        }
    }
}

/// Seasonal slots: 24 hours × {weekday, weekend}.
pub const SLOTS: usize = 48;

/// The seasonal slot of a time: hour of day (UTC), and 24 more on Saturday and Sunday.
pub fn slot(ts_ms: i64) -> usize {
    let hours = ts_ms.div_euclid(3_600_000);
    let hour = hours.rem_euclid(24) as usize;
    // 1970-01-01 was a Thursday: day 0 → weekday 3 (Mon = 0).
    let weekday = (hours.div_euclid(24) + 3).rem_euclid(7);
    hour + if weekday >= 5 { 24 } else { 0 }
}

/// Median and MAD of `values` (reordered in place); `None` when empty.
pub fn median_mad(values: &mut [f32]) -> Option<(f64, f64)> {
    let med = median(values)?;
    for v in values.iter_mut() {
        *v = (*v as f64 - med).abs() as f32;
    }
    Some((med, median(values)?))
}

/// The median of `values` (reordered in place), if there are any.
pub fn median(values: &mut [f32]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (lower, m, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    let m = *m as f64;
    if n % 2 == 1 {
        return Some(m);
    }
    let below = lower.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    Some((below + m) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_split_hours_and_weekends() {
        // 2026-06-01 was a Monday.
        let monday_noon = chrono::DateTime::parse_from_rfc3339("2026-06-01T12:30:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(slot(monday_noon), 12);
        assert_eq!(slot(monday_noon + 5 * 86_400_000), 36, "saturday");
        assert_eq!(slot(monday_noon + 6 * 86_400_000), 36, "sunday");
        assert_eq!(slot(monday_noon + 7 * 86_400_000), 12, "next monday");
    }

    #[test]
    fn median_and_mad_are_robust() {
        let mut v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(median_mad(&mut v), Some((3.0, 1.0)));
        let mut even = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(median_mad(&mut even).unwrap().0, 2.5);
        assert_eq!(median_mad(&mut []), None);
    }
}
