//! Creep: a signal's rolling level that moved away from its epoch's anchor a
//! little every day (`baseline_creep`), which a rolling baseline absorbs and no
//! bucket-to-baseline test can see.

use serde_json::json;

use super::Test;
use super::rules::Rule;
use super::view::{BucketView, Detection};
use super::words::{fmt_num, round, scope_args, signal_words};
use crate::domain::scope_label;

/// Creep in `rule`'s signal on the view's scope. With `open` (its alert already
/// fires) only the distance from the anchor counts, so the finding holds while
/// the level stays away. Not judged during a change's warm-up.
pub fn detect<C>(rule: &Rule, view: &BucketView<C>, open: bool) -> Option<Detection> {
    let series = view.series(rule.signal);
    let (anchor, level, rel) = series.creep(rule.min_change, open, view.params)?;
    if view.warming || !rule.direction.admits(rel) {
        return None;
    }
    let summary = format!(
        "{} on {} has crept {:+.0}% from its epoch's anchor ({} → {}) with no change event; the rolling baseline absorbed it. If this is the new normal, post a change event to start a new epoch: `driftwarden recalibrate --kind config_change {}`",
        signal_words(rule.signal),
        scope_label(view.labels),
        rel * 100.0,
        fmt_num(anchor),
        fmt_num(level),
        scope_args(view.labels)
    );
    let test = Test {
        sign: rel.signum(),
        rel,
        diff: level - anchor,
        z: 0.0,
        p_value: 0.0,
        name: "anchor vs rolling level",
    };
    let mut d = Detection::new(
        rule.signal,
        test,
        (
            json!({"rolling_level": round(level)}),
            json!({"anchor": round(anchor)}),
        ),
        summary,
    );
    d.evidence.insert("epoch".into(), json!(series.epoch()));
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::one_rule;
    use crate::detect::view::testkit::{History, TEN_MIN};
    use crate::domain::Signal;
    use crate::lanes::cell::Cell;

    /// Route `chat`'s tokens per request over `days` days, climbing `per_day`
    /// (relative) a day.
    fn creeping(per_day: f64, days: i64) -> History {
        let mut history = History::new(&[("route", "chat")]);
        history.learn(Signal::TokensPerRequest, 0..days * 144, |i| {
            500.0 * (1.0 + per_day * i as f64 / 144.0)
        });
        history
    }

    fn judge(history: &History, at: i64, warming: bool) -> Option<Detection> {
        let rule = one_rule(
            "[[rule]]\nname = \"token-creep\"\ndetector = \"creep\"\nsignal = \"tokens_per_request\"\nscopes = [\"route\"]\nmin_change = 0.1\n",
        );
        detect(&rule, &history.view(at, &Cell::default(), warming), false)
    }

    #[test]
    fn a_few_percent_a_day_is_found_within_days_and_a_flat_series_is_not() {
        let at = 6 * 144 * TEN_MIN;
        let d = judge(&creeping(0.04, 6), at, false).expect("creep found");
        assert_eq!(d.test.sign, 1.0);
        assert!(d.test.rel >= 0.1, "{:?}", d.test);
        assert!(
            d.summary.contains("route=chat has crept +"),
            "{}",
            d.summary
        );
        assert_eq!(d.evidence["epoch"], 0);
        assert!(judge(&creeping(0.0, 6), at, false).is_none());
        // A change's warm-up is no time to call a level a creep.
        assert!(judge(&creeping(0.04, 6), at, true).is_none());
    }
}
