//! False efficiency: cost per request fell while eval coverage or the eval score
//! fell with it. Cheaper because checks stopped or answers got worse, not because
//! of an improvement.

use serde_json::json;

use super::drift::eval_test;
use super::rules::{Direction, Rule};
use super::view::{BucketView, Detection};
use super::words::{base_json, fmt_num, round};
use crate::domain::{Signal, scope_label};
use crate::lanes::cell::EvalCell;

/// How far cost per request must have fallen (relative) for a cheaper bucket to count.
const COST_FALL: f64 = -0.1;
/// And how clearly (robust z-score).
const COST_Z: f64 = -2.0;
/// The smallest fall of the eval score that makes cheaper answers worse ones.
const SCORE_FALL: f64 = 0.05;

/// False efficiency in a bucket whose cost per request moved by `cost_move`
/// (relative change, robust z) as the usage lane judged it, if it did.
pub fn detect(
    rule: &Rule,
    view: &BucketView<EvalCell>,
    cost_move: Option<(f64, f64)>,
) -> Option<Detection> {
    let (cost_rel, cost_z) = cost_move?;
    if cost_rel > COST_FALL || cost_z > COST_Z {
        return None;
    }
    // Only a fall makes cheaper answers suspect, whatever direction the rule names:
    // more answers checked while cost falls is the opposite of false efficiency.
    let down = Rule {
        direction: Direction::Down,
        ..rule.clone()
    };
    let coverage = eval_test(&down, Signal::EvalCoverage, view);
    let score_rule = Rule {
        min_change: SCORE_FALL,
        ..down
    };
    let (what, (value, test, base)) = match coverage {
        Some(c) => ("eval coverage", c),
        None => (
            "eval score",
            eval_test(&score_rule, Signal::EvalScore, view)?,
        ),
    };
    let summary = format!(
        "false efficiency on {}: cost per request fell {:.0}% while {what} fell to {} from {} — cheaper because checks stopped or answers got worse, not because of an improvement",
        scope_label(view.labels),
        -cost_rel * 100.0,
        fmt_num(value),
        fmt_num(base.median)
    );
    Some(Detection::new(
        rule.signal,
        test,
        (
            json!({what: round(value), "cost_per_request_change": round(cost_rel)}),
            base_json(Some(&base)),
        ),
        summary,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::one_rule;
    use crate::detect::view::testkit::{History, TEN_MIN};

    fn judge(evaluated: u32, cost_move: Option<(f64, f64)>) -> Option<Detection> {
        let rule = one_rule(
            "[[rule]]\nname = \"false-efficiency\"\ndetector = \"false_efficiency\"\nsignal = \"eval_coverage\"\nscopes = [\"route\"]\nmin_change = 0.3\nmin_samples = 20\n",
        );
        let mut history = History::new(&[("route", "extract")]);
        history.learn(Signal::EvalCoverage, 0..144, |_| 0.5).learn(
            Signal::EvalScore,
            0..144,
            |_| 0.8,
        );
        let cell = EvalCell {
            requests: 100,
            evaluated,
            ..EvalCell::default()
        };
        detect(&rule, &history.view(144 * TEN_MIN, &cell, false), cost_move)
    }

    #[test]
    fn cheaper_with_evals_switched_off_is_false_efficiency() {
        let d = judge(0, Some((-0.4, -8.0))).expect("false efficiency");
        assert!(
            d.summary.starts_with("false efficiency on route=extract: cost per request fell 40% while eval coverage fell to 0 from 0.5"),
            "{}",
            d.summary
        );
        assert_eq!(d.observed["cost_per_request_change"], -0.4);
    }

    #[test]
    fn cheaper_with_evals_as_usual_or_evals_off_at_the_usual_cost_is_not() {
        assert!(judge(50, Some((-0.4, -8.0))).is_none());
        assert!(judge(0, Some((-0.05, -8.0))).is_none());
        assert!(judge(0, None).is_none());
    }

    #[test]
    fn cheaper_with_more_answers_checked_is_not() {
        // The shipped rule names no direction: coverage rising from 0.5 to 1 is no fall.
        assert!(judge(100, Some((-0.4, -8.0))).is_none());
    }
}
