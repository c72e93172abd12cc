//! `POST /recalibrate` takes a change event (a deploy, a model bump, a config change)
//! and `GET /v1/changes` lists them. A change starts a new baseline epoch for the
//! series in its scope, so posting deploys keeps drift alerts about real drift.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_token;
use super::{ApiError, AppState, read_body};
use crate::adapters::timestamp::{Ts, parse_ts_str};
use crate::clock::now_ms;
use crate::domain::{ChangeEvent, ChangeKind, SCOPE_DIMS};
use crate::store::{Batch, queries};

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

/// Turn a posted body into a change event, or say what is wrong with it.
fn parse_change(body: &[u8], now: i64, max_future_ms: i64) -> Result<ChangeEvent, String> {
    let b: ChangeBody = serde_json::from_slice(body).map_err(|e| {
        format!(
            "invalid change event: {e}; expected {{\"kind\":\"deploy|model_bump|config_change\",\"ts\":\"...\",\"scope\":{{\"route\":\"...\"}},\"note\":\"...\"}}"
        )
    })?;
    for (dim, value) in &b.scope {
        if !SCOPE_DIMS.contains(&dim.as_str()) {
            return Err(format!(
                "scope key {dim:?} is not one of {}",
                SCOPE_DIMS.join(", ")
            ));
        }
        if value.trim().is_empty() {
            return Err(format!("scope {dim} has an empty value"));
        }
    }
    if b.note.chars().count() > MAX_NOTE_CHARS {
        return Err(format!("note is longer than {MAX_NOTE_CHARS} characters"));
    }
    let ts_ms = b.ts.map(|t| t.0).unwrap_or(now);
    if ts_ms > now + max_future_ms {
        return Err("ts is in the future: post a change when it happens".into());
    }
    Ok(ChangeEvent {
        kind: b.kind,
        ts_ms,
        scope: b.scope,
        note: b.note,
        origin: "api".into(),
    })
}

/// `POST /recalibrate`.
pub async fn recalibrate(
    State(state): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_token(req.headers(), &state.token)?;
    let body = read_body(req.into_body(), state.max_body_bytes).await?;
    let change = parse_change(&body, now_ms(), state.ctx.max_future_ms)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    let mut batch = Batch::new("http:recalibrate", "change");
    batch.changes.push(change.clone());
    let report = state
        .writer
        .commit(batch)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(kind = change.kind.as_str(), ts_ms = change.ts_ms, scope = ?change.scope, duplicate = report.changes_duplicate > 0, "change event");
    let status = if report.changes_inserted > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "accepted": report.changes_inserted,
            "duplicates": report.changes_duplicate,
            "change": change,
        })),
    ))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    /// RFC 3339 time or epoch seconds/milliseconds; default: everything.
    since: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/changes?since=&limit=`: newest first (default 100, at most 1000).
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = match q.since.as_deref() {
        Some(s) => parse_ts_str(s).map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?,
        None => i64::MIN,
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let path = state.db_path.clone();
    let rows = tokio::task::spawn_blocking(move || queries::changes(&path, since, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "changes": rows })))
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
            let err = parse_change(body.as_bytes(), NOW, 900_000).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }
}
