//! Hysteresis: where an open alert's value stands in a bucket that did not find
//! it. Only a return well inside the band calms an alert; a thin bucket cannot
//! prove a lasting state over.

use super::drift::RecentCounts;
use super::rules::{Detector, Rule};
use super::view::BucketView;
use super::{Counts, is_proportion};
use crate::baselines::stats;
use crate::domain::Signal;
use crate::lanes::cell::{Cell, EvalCell};
use crate::lanes::signals::{eval_samples, eval_value, mix_counts};

/// Where an open alert's value stands in a bucket that did not find it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Band {
    /// Back within half the rule's change of its baseline: calm.
    Inside,
    /// Not significant, but still as far out as half the rule's change: the alert
    /// stays open (a thin bucket cannot prove a lasting state over).
    Outside,
    /// Too few samples, or no value, to tell.
    Unknown,
}

impl Band {
    /// `value` against `center` for an open `rule` with `n` samples.
    pub fn of(rule: &Rule, value: Option<f64>, center: Option<f64>, n: u64) -> Band {
        let (Some(v), Some(c)) = (value, center) else {
            return Band::Unknown;
        };
        // Telling "back to normal" needs fewer samples than finding a drift: a third.
        if n < (rule.min_samples / 3).max(1) && rule.signal != Signal::Requests {
            return Band::Unknown;
        }
        match ((v - c) / c.abs().max(1e-9)).abs() < rule.min_change / 2.0 {
            true => Band::Inside,
            false => Band::Outside,
        }
    }

    /// A rate of events (`counts.x` of `counts.n`) against `center`: outside only
    /// while it is both half the rule's change away and still detectably so. On a
    /// quiet scope one error in thirty requests is three times a 1% baseline, yet
    /// says nothing: without the test such an alert would stay open all night.
    pub fn of_rate(rule: &Rule, value: f64, center: Option<f64>, counts: Counts) -> Band {
        let band = Band::of(rule, Some(value), center, counts.n);
        match (band, center) {
            (Band::Outside, Some(c)) if stats::binomial_z(counts.x, counts.n, c).abs() < 2.0 => {
                Band::Inside
            }
            _ => band,
        }
    }

    /// An open usage-lane alert of `rule` in a bucket that did not find it. Only
    /// drift holds a band; a step, creep or bump that is not found again is calm.
    pub fn usage(rule: &Rule, view: &BucketView<Cell>, recent: &RecentCounts) -> Band {
        match rule.detector {
            Detector::Drift if rule.signal.is_mix() => {
                let counts = mix_counts(view.cell, rule.signal);
                let n = counts.iter().map(|&(_, c)| c as u64).sum::<u64>();
                match view.mix(rule.signal).test(&counts, 200.0) {
                    Some(t) if n >= rule.min_samples => match t.tvd < rule.min_change / 2.0 {
                        true => Band::Inside,
                        false => Band::Outside,
                    },
                    _ => Band::Unknown,
                }
            }
            Detector::Drift => {
                let center = center(view.base(rule.signal), rule.signal);
                match recent.pool(rule, view.cell) {
                    Some((value, counts, _)) if is_proportion(rule.signal) => {
                        Band::of_rate(rule, value, center, counts)
                    }
                    Some((value, counts, _)) => Band::of(rule, Some(value), center, counts.n),
                    None => Band::Unknown,
                }
            }
            _ => Band::Inside,
        }
    }

    /// An open eval-lane alert of `rule` in a bucket that did not find it: false
    /// efficiency holds while eval coverage stays away.
    pub fn eval(rule: &Rule, view: &BucketView<EvalCell>) -> Band {
        let signal = match rule.detector {
            Detector::Drift => rule.signal,
            Detector::FalseEfficiency => Signal::EvalCoverage,
            _ => return Band::Inside,
        };
        let center = center(view.base(signal), signal);
        let n = eval_samples(view.cell, signal);
        Band::of(rule, eval_value(view.cell, signal), center, n)
    }
}

/// The centre a signal's test compares with: the mean of a rate, else the median.
fn center(base: Option<crate::domain::Baseline>, signal: Signal) -> Option<f64> {
    base.map(|b| match is_proportion(signal) {
        true => b.mean,
        false => b.median,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::one_rule;
    use crate::detect::view::testkit::{History, TEN_MIN};

    fn error_rule() -> Rule {
        one_rule(
            "[[rule]]\nname = \"error-rate\"\nsignal = \"error_rate\"\nscopes = [\"route\"]\nmin_change = 1.0\nmin_samples = 30\n",
        )
    }

    #[test]
    fn a_thin_rate_calms_unless_it_is_still_detectably_away() {
        let rule = &error_rule();
        let band = |x: u64, n: u64| {
            let counts = Counts {
                n,
                x,
                variance: 0.0,
            };
            Band::of_rate(rule, x as f64 / n as f64, Some(0.012), counts)
        };
        // One error in thirty is three times 1.2%, and nothing to go on.
        assert_eq!(band(1, 30), Band::Inside);
        // Ten in thirty still is.
        assert_eq!(band(10, 30), Band::Outside);
        // Too few to tell either way.
        assert_eq!(band(1, 5), Band::Unknown);
        assert_eq!(band(0, 300), Band::Inside);
    }

    #[test]
    fn an_open_error_alert_holds_while_its_scope_still_fails_and_calms_when_it_stops() {
        let rule = error_rule();
        let mut history = History::new(&[]);
        // A day of 1% errors.
        history.learn(Signal::ErrorRate, 0..144, |_| 0.01);
        let at = 144 * TEN_MIN;
        let band = |requests: u32, errors: u32| {
            let cell = Cell {
                requests,
                errors,
                ..Cell::default()
            };
            Band::usage(
                &rule,
                &history.view(at, &cell, false),
                &RecentCounts::new(1),
            )
        };
        assert_eq!(band(100, 30), Band::Outside);
        assert_eq!(band(100, 1), Band::Inside);
        // A quiet bucket cannot tell.
        assert_eq!(band(5, 0), Band::Unknown);
    }
}
