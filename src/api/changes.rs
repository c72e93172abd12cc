//! `POST /recalibrate` takes a change event (a deploy, a model bump, a config change)
//! and `GET /v1/changes` lists them. A change starts a new baseline epoch for the
//! series in its scope, so posting deploys keeps drift alerts about real drift.

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_token;
use super::{ApiError, AppState, read_body};
use crate::adapters::changes::parse_change;
use crate::adapters::timestamp::parse_ts_str;
use crate::clock::now_ms;
use crate::store::{Batch, queries};

/// `POST /recalibrate`.
pub async fn recalibrate(
    State(state): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_token(req.headers(), &state.token)?;
    let body = read_body(req.into_body(), state.max_body_bytes).await?;
    let change = parse_change(&body, now_ms(), state.ctx.max_future_ms)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
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
        Some(s) => parse_ts_str(s)?,
        None => i64::MIN,
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let path = state.db.clone();
    let rows = tokio::task::spawn_blocking(move || queries::changes(&path.reader()?, since, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "changes": rows })))
}
