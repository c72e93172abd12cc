//! Steps: a level that jumped and stayed, with no change event to explain it
//! (`unannounced_change`), found by a two-sided CUSUM over robust z-scores.

use serde_json::json;

use super::rules::Rule;
use super::view::{BucketView, Detection};
use super::words::{base_json, round, scope_args, signal_words};
use super::{Test, movement};
use crate::baselines::stats;
use crate::domain::{ChangeEvent, rfc3339_ms, scope_label};
use crate::lanes::cell::Cell;
use crate::lanes::signals::{samples, usage_value};

/// Slack of the CUSUM, in robust deviations: drift smaller than this never adds up.
const SLACK: f64 = 1.0;
/// Threshold of the CUSUM: the accumulated excess that makes a step.
const THRESHOLD: f64 = 12.0;
/// How long before a bucket a change event may have taken effect and still cover
/// the step the bucket shows (a CUSUM needs a few buckets to cross).
const COVER_BEFORE_MS: i64 = 6 * 3_600_000;

/// A two-sided CUSUM step detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cusum {
    up: f64,
    down: f64,
}

impl Cusum {
    /// Feed a robust z-score (slack `k`, threshold `h`). Returns +1 or −1 when a
    /// step up or down is detected, then starts over.
    pub fn feed(&mut self, z: f64, k: f64, h: f64) -> i8 {
        let z = z.clamp(-6.0, 6.0);
        self.up = (self.up + z - k).max(0.0);
        self.down = (self.down - z - k).max(0.0);
        let step = if self.up > h {
            1
        } else if self.down > h {
            -1
        } else {
            0
        };
        if step != 0 {
            self.reset();
        }
        step
    }

    /// Forget what was accumulated (a change event starts a warm-up).
    pub fn reset(&mut self) {
        *self = Cusum::default();
    }
}

/// One scope's step state for one signal.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct StepState {
    /// The CUSUM over the signal's robust z-scores.
    pub cusum: Cusum,
    /// The sign of a step being reported: it stays found while the level stays at
    /// least half the rule's change away in that direction.
    held: f64,
}

/// A step in `rule`'s signal. A step a change event covers (one taking effect up to
/// six hours before the bucket, within `tolerance_ms`, on an overlapping scope) is
/// found muted: it explains its parents and raises nothing.
pub fn detect(
    rule: &Rule,
    view: &BucketView<Cell>,
    state: &mut StepState,
    changes: &[ChangeEvent],
    tolerance_ms: i64,
) -> Option<Detection> {
    let value = usage_value(view.cell, rule.signal)?;
    if view.warming || samples(view.cell, rule.signal) < rule.min_samples {
        return None;
    }
    let base = view.base(rule.signal)?;
    let z = base.z(value, 0.02);
    let rel = (value - base.median) / base.median.abs().max(1e-12);
    let step = state.cusum.feed(base.z(value, 0.05), SLACK, THRESHOLD);
    let held = state.held;
    let sign = if step != 0 && rule.direction.admits(step as f64) && rel.abs() >= rule.min_change {
        step as f64
    } else if held != 0.0 && rel.signum() == held && rel.abs() >= rule.min_change / 2.0 {
        held
    } else {
        0.0
    };
    state.held = sign;
    if sign == 0.0 {
        return None;
    }
    let labels = view.labels;
    let cover = changes.iter().find(|c| {
        c.ts_ms >= view.start_ms - COVER_BEFORE_MS - tolerance_ms
            && c.ts_ms <= view.end_ms + tolerance_ms
            && c.scope
                .iter()
                .all(|(k, v)| labels.get(k).is_none_or(|x| x == v))
    });
    let summary = format!(
        "{} on {scope_text} stepped {} its baseline ({:+.0}%) and no change event covers it: post one with `driftwarden recalibrate --kind deploy|model_bump|config_change {}` if this was intended, else investigate what changed",
        signal_words(rule.signal),
        movement(sign),
        rel * 100.0,
        scope_args(labels),
        scope_text = scope_label(labels),
    );
    let test = Test {
        sign,
        rel,
        diff: value - base.median,
        z,
        p_value: stats::one_sided_p(z, sign > 0.0),
        name: "cusum",
    };
    let mut d = Detection::new(
        rule.signal,
        test,
        (json!(round(value)), base_json(Some(&base))),
        summary,
    );
    d.muted = cover.map(|c| {
        format!(
            "covered by the {} change at {}",
            c.kind.as_str(),
            rfc3339_ms::format(c.ts_ms)
        )
    });
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::one_rule;
    use crate::detect::view::testkit::{History, TEN_MIN, posted};
    use crate::domain::{ChangeKind, Signal};

    #[test]
    fn cusum_finds_a_step_and_not_noise() {
        let mut s = Cusum::default();
        let noise = [0.5, -0.8, 1.1, -0.3, 0.2, -1.0, 0.9, -0.4];
        for z in noise.iter().cycle().take(200) {
            assert_eq!(s.feed(*z, 0.5, 8.0), 0);
        }
        let steps: Vec<i8> = (0..5).map(|_| s.feed(3.0, 0.5, 8.0)).collect();
        assert_eq!(steps, [0, 0, 0, 1, 0]);
    }

    /// A day of cost per request around 0.01, then `after` for `buckets` buckets:
    /// the detections, bucket by bucket.
    fn run(after: f64, buckets: i64, changes: &[ChangeEvent]) -> Vec<Option<Detection>> {
        let rule = one_rule(
            "[[rule]]\nname = \"cost-step\"\ndetector = \"step\"\nsignal = \"cost_per_request\"\nscopes = [\"model\"]\nmin_change = 0.1\nmin_samples = 30\n",
        );
        let mut history = History::new(&[("model", "m")]);
        history.learn(Signal::CostPerRequest, 0..144, |i| {
            0.01 + [0.0, 1e-4, -1e-4][i as usize % 3]
        });
        let mut state = StepState::default();
        (144..144 + buckets)
            .map(|i| {
                let cell = Cell {
                    requests: 100,
                    costed: 100,
                    cost: after * 100.0,
                    ..Cell::default()
                };
                let view = history.view(i * TEN_MIN, &cell, false);
                detect(&rule, &view, &mut state, changes, 3_600_000)
            })
            .collect()
    }

    #[test]
    fn a_lasting_step_is_found_and_stays_found_while_the_level_holds() {
        let found = run(0.014, 6, &[]);
        let first = found.iter().position(Option::is_some).expect("a step");
        assert!(first <= 2, "found only at bucket {first}");
        for d in &found[first..] {
            let d = d.as_ref().expect("held while the level holds");
            assert_eq!(d.test.sign, 1.0);
            assert!(d.muted.is_none());
            assert!(
                d.summary.contains("stepped above its baseline (+40%)"),
                "{}",
                d.summary
            );
        }
    }

    #[test]
    fn a_small_move_is_no_step_and_a_covered_step_is_muted() {
        assert!(run(0.0102, 6, &[]).iter().all(Option::is_none));
        let deploy = posted(ChangeKind::Deploy, 143 * TEN_MIN, &[], "v2");
        let found = run(0.014, 3, &[deploy]);
        let d = found.iter().flatten().next().expect("still found");
        assert!(
            d.muted
                .as_deref()
                .unwrap()
                .starts_with("covered by the deploy change")
        );
    }
}
