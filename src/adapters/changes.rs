//! Change events (deploys, model bumps, config changes) as posted to
//! `/recalibrate` or written one per line in a replay's changes file.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::timestamp::Ts;
use crate::domain::{ChangeEvent, ChangeKind, SCOPE_DIMS};

/// Longest note kept, in characters.
const MAX_NOTE_CHARS: usize = 1000;

/// A change event as posted (DESIGN.md, "ChangeEvent").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    kind: ChangeKind,
    /// When it happened; default now.
    ts: Option<Ts>,
    #[serde(default)]
    scope: BTreeMap<String, String>,
    #[serde(default)]
    note: String,
}

/// What is wrong with a posted change event; each message says what to send instead.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Not JSON, or not a change event's fields.
    #[error(
        "invalid change event: {0}; expected {{\"kind\":\"deploy|model_bump|config_change\",\"ts\":\"...\",\"scope\":{{\"route\":\"...\"}},\"note\":\"...\"}}"
    )]
    Json(serde_json::Error),
    /// A scope key that is not a scope dimension.
    #[error("scope key {0:?} is not one of {dims}", dims = SCOPE_DIMS.join(", "))]
    ScopeKey(String),
    /// A scope dimension with a blank value.
    #[error("scope {0} has an empty value")]
    EmptyScope(String),
    /// A note beyond `MAX_NOTE_CHARS`.
    #[error("note is longer than {max} characters", max = MAX_NOTE_CHARS)]
    NoteTooLong,
    /// A time beyond the allowed clock skew.
    #[error("ts is in the future: post a change when it happens")]
    Future,
}

/// Turn a posted body into a change event, or say what is wrong with it.
pub fn parse_change(body: &[u8], now: i64, max_future_ms: i64) -> Result<ChangeEvent, ChangeError> {
    let b: ChangeBody = serde_json::from_slice(body).map_err(ChangeError::Json)?;
    for (dim, value) in &b.scope {
        if !SCOPE_DIMS.contains(&dim.as_str()) {
            return Err(ChangeError::ScopeKey(dim.clone()));
        }
        if value.trim().is_empty() {
            return Err(ChangeError::EmptyScope(dim.clone()));
        }
    }
    if b.note.chars().count() > MAX_NOTE_CHARS {
        return Err(ChangeError::NoteTooLong);
    }
    let ts_ms = b.ts.map(|t| t.0).unwrap_or(now);
    if ts_ms > now + max_future_ms {
        return Err(ChangeError::Future);
    }
    Ok(ChangeEvent {
        kind: b.kind,
        ts_ms,
        scope: b.scope,
        note: b.note,
        origin: "api".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_358_400_000;

    #[test]
    fn design_example_parses() {
        let c = parse_change(
            br#"{"kind":"deploy","ts":"2026-06-01T12:00:00Z","scope":{"route":"summarize"},"note":"prompt template v2"}"#,
            NOW,
            900_000,
        )
        .unwrap();
        assert_eq!(c.kind, ChangeKind::Deploy);
        assert_eq!(c.ts_ms, 1_780_315_200_000);
        assert_eq!(c.scope.get("route").map(String::as_str), Some("summarize"));
        assert_eq!(c.note, "prompt template v2");
    }

    #[test]
    fn defaults_to_now_and_everything() {
        let c = parse_change(br#"{"kind":"model_bump"}"#, NOW, 0).unwrap();
        assert_eq!((c.ts_ms, c.scope.is_empty()), (NOW, true));
    }

    #[test]
    fn mistakes_are_explained() {
        for (body, want) in [
            (r#"{"kind":"rollout"}"#, "deploy|model_bump|config_change"),
            (
                r#"{"kind":"deploy","scope":{"region":"eu"}}"#,
                "is not one of model, route",
            ),
            (r#"{"kind":"deploy","scope":{"route":" "}}"#, "empty value"),
            (
                r#"{"kind":"deploy","ts":"2030-01-01T00:00:00Z"}"#,
                "in the future",
            ),
            (r#"{"kind":"deploy","by":"me"}"#, "unknown field"),
        ] {
            let err = parse_change(body.as_bytes(), NOW, 900_000)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
    }
}
