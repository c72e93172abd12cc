//! `EvalScore` JSON (DESIGN.md): a quality score for a request, or for a route or model.

use serde::Deserialize;

use super::timestamp::Ts;
use super::{Rejected, non_empty};
use crate::domain::EvalScore;

#[derive(Deserialize)]
struct RawEval {
    request_id: Option<String>,
    route: Option<String>,
    model: Option<String>,
    evaluator: String,
    ts: Ts,
    score: Option<f64>,
    passed: Option<bool>,
}

pub(super) fn decode(raw: &[u8]) -> Result<EvalScore, Rejected> {
    let r: RawEval = serde_json::from_slice(raw).map_err(Rejected::json)?;
    let e = EvalScore {
        request_id: non_empty(r.request_id).map(Into::into),
        route: non_empty(r.route).map(Into::into),
        model: non_empty(r.model).map(Into::into),
        evaluator: non_empty(Some(r.evaluator))
            .ok_or_else(|| Rejected("evaluator is empty".into()))?
            .into(),
        ts_ms: r.ts.0,
        score: r.score,
        passed: r.passed,
    };
    if e.request_id.is_none() && e.route.is_none() && e.model.is_none() {
        return Err(Rejected(
            "an eval score needs request_id, or route/model for a scope-level score".into(),
        ));
    }
    match e.score {
        None if e.passed.is_none() => {
            return Err(Rejected("an eval score needs score or passed".into()));
        }
        Some(s) if !(0.0..=1.0).contains(&s) => {
            return Err(Rejected(format!("score {s} is outside 0..1")));
        }
        _ => {}
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Format, Record};

    #[test]
    fn design_example() {
        let raw = r#"{"request_id":"req-1","ts":"2026-06-01T13:10:00Z","evaluator":"judge-v1","score":0.82}"#;
        match decode(Format::Evals, raw) {
            Ok(Some(Record::Eval(e))) => {
                assert_eq!(e.request_id.as_deref(), Some("req-1"));
                assert_eq!(e.score, Some(0.82));
                assert_eq!(e.ts_ms, 1_780_319_400_000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scope_level_pass_fail_score() {
        let raw = r#"{"route":"classify","ts":1780315200,"evaluator":"regex","passed":false}"#;
        assert!(matches!(
            decode(Format::Evals, raw),
            Ok(Some(Record::Eval(_)))
        ));
    }

    #[test]
    fn impossible_scores_are_rejected() {
        for (raw, want) in [
            (
                r#"{"request_id":"a","ts":1780315200,"evaluator":"j","score":1.5}"#,
                "outside 0..1",
            ),
            (
                r#"{"request_id":"a","ts":1780315200,"evaluator":"j"}"#,
                "score or passed",
            ),
            (
                r#"{"ts":1780315200,"evaluator":"j","score":0.5}"#,
                "needs request_id",
            ),
        ] {
            assert!(
                decode(Format::Evals, raw).unwrap_err().0.contains(want),
                "{raw}"
            );
        }
    }
}
