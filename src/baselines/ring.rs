//! A seasonal slot's ring of bucket values, with a sorted copy beside its age order.
//!
//! A scope's baseline is the median, MAD and mean deviation of a slot's values, and
//! every judged scope asks for it in every bucket: selecting the median and then the
//! MAD anew each time (with an allocation) was a fifth of a replay's instructions.
//! The ring changes by one value a bucket, so once a baseline has been read from it
//! it keeps a sorted copy up to date (a binary search and a short move per value)
//! and reads the summary off that. Rings nobody reads (most signals of most scopes
//! learn every bucket but have no rule) never sort.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::median_mad;

/// A capped FIFO of values, with a sorted copy of them once one was needed.
/// Part of the analysis snapshot by its values only: the sorted copy is made again
/// at the first `summary` after a load, as after a start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SortedRing {
    /// The values, oldest first.
    by_age: VecDeque<f32>,
    /// The same values in `f32::total_cmp` order (the order `median_mad` selects
    /// in), from the first `summary` on.
    #[serde(skip)]
    sorted: OnceCell<Vec<f32>>,
}

impl SortedRing {
    /// Append `value`, first dropping the oldest when the ring holds `cap` values.
    pub fn push(&mut self, value: f32, cap: usize) {
        let old = match self.by_age.len() == cap {
            true => self.by_age.pop_front(),
            false => None,
        };
        self.by_age.push_back(value);
        let Some(sorted) = self.sorted.get_mut() else {
            return;
        };
        let position = |x: f32| sorted.partition_point(|v| v.total_cmp(&x) == Ordering::Less);
        let to = position(value);
        match old {
            // One shift between the old value's place and the new one's.
            Some(old) => {
                let from = position(old);
                debug_assert_eq!(sorted[from].to_bits(), old.to_bits());
                match from < to {
                    true => {
                        sorted.copy_within(from + 1..to, from);
                        sorted[to - 1] = value;
                    }
                    false => {
                        sorted.copy_within(to..from, to + 1);
                        sorted[to] = value;
                    }
                }
            }
            None => sorted.insert(to, value),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.by_age.len()
    }

    /// Whether the ring holds no value.
    pub fn is_empty(&self) -> bool {
        self.by_age.is_empty()
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &f32> {
        self.by_age.iter()
    }

    /// Median, MAD and mean absolute deviation from the median, `None` when empty:
    /// bit for bit what `median_mad` of the values and then the mean of the
    /// deviations it leaves in place give. Read off the sorted copy when its values
    /// are finite and their deviations add up the same in any order (unless the
    /// deviations are some 2^29 apart in size); otherwise by `median_mad` itself.
    pub fn summary(&self) -> Option<(f64, f64, f64)> {
        if self.by_age.is_empty() {
            return None;
        }
        let sorted = self.sorted.get_or_init(|| {
            let mut sorted: Vec<f32> = self.by_age.iter().copied().collect();
            sorted.sort_unstable_by(f32::total_cmp);
            sorted
        });
        sorted_summary(sorted).or_else(|| {
            let mut values: Vec<f32> = self.by_age.iter().copied().collect();
            let (median, mad) = median_mad(&mut values)?;
            let sum: f64 = values.iter().map(|&d| d as f64).sum();
            Some((median, mad, sum / values.len() as f64))
        })
    }
}

/// The summary of a non-empty slice sorted in `f32::total_cmp` order, or `None`
/// when it cannot promise `median_mad`'s result.
fn sorted_summary(sorted: &[f32]) -> Option<(f64, f64, f64)> {
    let n = sorted.len();
    if !sorted[0].is_finite() || !sorted[n - 1].is_finite() {
        return None;
    }
    let mid = n / 2;
    // As `median`: the middle value, or the mean of the two middle ones. When the
    // lower one is a zero of either sign the upper one is a zero or above, so which
    // zero `median`'s max over the lower half picks does not change the mean.
    let median = match n % 2 {
        1 => sorted[mid] as f64,
        _ => (sorted[mid - 1] as f64 + sorted[mid] as f64) / 2.0,
    };
    let dev = |v: f32| (v as f64 - median).abs() as f32;
    // The deviations fall towards the median and rise after it: merging the two
    // runs outwards from the median yields them in ascending order.
    let split = sorted.partition_point(|&v| (v as f64) < median);
    let (mut below, mut above) = (sorted[..split].iter().rev(), sorted[split..].iter());
    let (mut next_below, mut next_above) =
        (below.next().map(|&v| dev(v)), above.next().map(|&v| dev(v)));
    let (mut lower, mut middle) = (0.0_f32, 0.0_f32);
    for _ in 0..=mid {
        lower = middle;
        middle = match (next_below, next_above) {
            (Some(b), a) if a.is_none_or(|a| b <= a) => {
                next_below = below.next().map(|&v| dev(v));
                b
            }
            (_, Some(a)) => {
                next_above = above.next().map(|&v| dev(v));
                a
            }
            // `(Some, None)` passes the first arm's guard, and a merge of n
            // deviations never runs dry within its first n/2 + 1.
            _ => unreachable!("the merge takes at most n deviations"),
        };
    }
    let mad = match n % 2 {
        1 => middle as f64,
        _ => (lower as f64 + middle as f64) / 2.0,
    };
    let (mut sum, mut lowest) = (0.0_f64, i32::MAX);
    for &v in sorted {
        let d = dev(v);
        sum += d as f64;
        lowest = lowest.min(lowest_bit(d));
    }
    order_free(sum, lowest).then(|| (median, mad, sum / n as f64))
}

/// The exponent of the lowest set bit of a non-negative float (`i32::MAX` for zero).
fn lowest_bit(t: f32) -> i32 {
    let bits = t.to_bits();
    let (exponent, fraction) = (bits >> 23, bits & 0x7f_ffff);
    match (exponent, fraction) {
        (0, 0) => i32::MAX,
        (0, f) => -149 + f.trailing_zeros() as i32,
        (e, f) => e as i32 - 150 + (f | 0x80_0000).trailing_zeros() as i32,
    }
}

/// Whether `sum`, an f64 sum of non-negative terms in some order whose lowest set
/// bit is 2^`lowest` ([`lowest_bit`]), is what every order gives: true when it is
/// below 2^(lowest + 53). Every partial sum is then a multiple of 2^lowest (a
/// rounded one too) and at most `sum` (the terms are non-negative and rounding is
/// monotone), so each addition's exact result is representable and none rounds.
fn order_free(sum: f64, lowest: i32) -> bool {
    lowest == i32::MAX || sum < f64::from_bits(((lowest + 53 + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    /// What `summary` must equal: the selections on the values in age order, then
    /// the mean of the deviations in the order they leave them.
    fn by_selection(ring: &SortedRing) -> Option<[u64; 3]> {
        let mut values: Vec<f32> = ring.iter().copied().collect();
        let (median, mad) = median_mad(&mut values)?;
        let mean_dev = values.iter().map(|&d| d as f64).sum::<f64>() / values.len() as f64;
        Some([median.to_bits(), mad.to_bits(), mean_dev.to_bits()])
    }

    fn bits(summary: Option<(f64, f64, f64)>) -> Option<[u64; 3]> {
        summary.map(|(a, b, c)| [a.to_bits(), b.to_bits(), c.to_bits()])
    }

    #[test]
    fn the_summary_equals_the_selections_bit_for_bit() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        // Duplicates, signed zeros, everyday magnitudes, wide exponents, non-finite.
        let kinds: [fn(&mut Xoshiro256PlusPlus) -> f32; 6] = [
            |r| r.random_range(0..4) as f32,
            |r| [0.0, -0.0, 1.0, -1.0][r.random_range(0..4)],
            |r| r.random_range(50.0..5000.0),
            |r| r.random_range(-1e-3..1e-3),
            |r| r.random_range(-1.0f32..1.0) * 2f32.powi(r.random_range(-100..100)),
            |r| [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0][r.random_range(0..5)],
        ];
        for cap in [1, 2, 3, 24, 25, 36] {
            for kind in kinds.into_iter().cycle().take(4 * kinds.len()) {
                let mut ring = SortedRing::default();
                for _ in 0..3 * cap {
                    ring.push(kind(&mut rng), cap);
                    // Some reads start late: the sorted copy is made then.
                    if rng.random_range(0..4) == 0 {
                        assert_eq!(bits(ring.summary()), by_selection(&ring), "{ring:?}");
                    }
                }
                assert_eq!(bits(ring.summary()), by_selection(&ring), "{ring:?}");
                assert_eq!(ring.len(), cap);
            }
        }
        assert_eq!(SortedRing::default().summary(), None);
    }

    #[test]
    fn the_sorted_copy_follows_the_ring_from_the_first_summary_on() {
        let values = [
            3.0,
            -0.0,
            0.0,
            1.0,
            3.0,
            f32::NAN,
            2.0,
            0.0,
            -5.0,
            3.0,
            3.0,
            9.0,
        ];
        for first_read in 0..values.len() {
            let mut ring = SortedRing::default();
            for (i, &v) in values.iter().enumerate() {
                ring.push(v, 4);
                if i == first_read {
                    ring.summary();
                }
                let Some(sorted) = ring.sorted.get() else {
                    assert!(i < first_read, "sorted from the first read on");
                    continue;
                };
                let mut want: Vec<f32> = ring.iter().copied().collect();
                want.sort_by(f32::total_cmp);
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(sorted), bits(&want), "{first_read} {i}");
            }
            assert_eq!(
                ring.iter().copied().collect::<Vec<_>>(),
                [-5.0, 3.0, 3.0, 9.0]
            );
        }
    }

    #[test]
    fn everyday_values_are_read_off_the_sorted_copy() {
        for n in [1, 2, 23, 24, 36] {
            let mut sorted: Vec<f32> = (0..n).map(|i| 100.0 + (i * 37 % 11) as f32 * 0.1).collect();
            sorted.sort_by(f32::total_cmp);
            assert!(sorted_summary(&sorted).is_some(), "{n} values");
        }
        assert_eq!(sorted_summary(&[1.0, f32::NAN]), None);
    }

    #[test]
    fn a_sum_is_order_free_only_while_it_fits_53_bits_above_its_lowest_bit() {
        let check = |terms: &[f32]| {
            let sum = terms.iter().map(|&x| x as f64).sum::<f64>();
            order_free(sum, terms.iter().map(|&t| lowest_bit(t)).min().unwrap())
        };
        assert!(check(&[1.0, 2f32.powi(-52), 0.0]));
        assert!(!check(&[1.0, 2f32.powi(-53)]));
        assert!(check(&[f32::from_bits(1), 2f32.powi(-97)]));
        assert!(check(&[0.0, 0.0]));
        assert!(!check(&[f32::INFINITY, 1.0]));
        // 3 * 2^-140, a subnormal; `powi(-140)` would pass through 2^140, which overflows
        // f32 in an unoptimized build.
        assert_eq!(lowest_bit(f32::from_bits(3 << 9)), -140);
        assert_eq!(lowest_bit(f32::from_bits(0b1000)), -146);
        assert_eq!(lowest_bit(6.0), 1);
    }
}
