//! Read endpoints about driftwarden itself: health, metrics, stats, dead letters.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_token;
use super::{ApiError, AppState};
use crate::store::queries;

/// `GET /healthz`: the process is up and its store answers.
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let path = state.db.clone();
    tokio::task::spawn_blocking(move || queries::ping(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "role": role(&state),
    })))
}

/// What this process does: `single` (one daemon on SQLite, which always leads), or,
/// of several replicas on PostgreSQL, `leader` (analysis, alerts, delivery) or
/// `follower` (ingest and the API only).
fn role(state: &AppState) -> &'static str {
    match (state.db.sqlite_path(), state.metrics.leader.get()) {
        (Some(_), _) => "single",
        (None, 1) => "leader",
        (None, _) => "follower",
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let path = state.db.clone();
    // On PostgreSQL the size is a query: a failed one leaves the gauge as it was and
    // the rest of the metrics are still served.
    let size = match tokio::task::spawn_blocking(move || queries::db_bytes(&path)).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match size {
        Ok(bytes) => {
            state.metrics.db_bytes.set(bytes as i64);
        }
        Err(cause) => tracing::warn!(%cause, "database size not read for /metrics"),
    }
    // Only the process running the analysis has a lag; a follower shows none.
    let lag = match (state.metrics.leader.get(), state.analysis.get()) {
        (1, Some(step)) => (crate::clock::now_ms() - step.watermark_ms).max(0) / 1000,
        _ => 0,
    };
    state.metrics.analysis_lag_seconds.set(lag);
    if let Some(s) = state.analysis.shown().snapshot {
        let m = &state.metrics;
        m.snapshot_watermark_ms.set(s.watermark_ms);
        m.snapshot_bytes.set(s.bytes as i64);
        m.snapshot_age_seconds
            .set((crate::clock::now_ms() - s.written_ms).max(0) / 1000);
        m.snapshot_write_seconds.set(s.write_ms as f64 / 1000.0);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// `GET /v1/stats`: stored counts, each pulling source's data clock and state, the
/// state of each gateway database source, and how far the analysis has judged.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let path = state.db.clone();
    let stats = tokio::task::spawn_blocking(move || queries::stats(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let sources: Vec<_> = state
        .db_health
        .lock()
        .expect("health lock")
        .values()
        .cloned()
        .collect();
    let mut body = serde_json::to_value(stats).map_err(ApiError::internal)?;
    body["gateway_dbs"] = serde_json::to_value(sources).map_err(ApiError::internal)?;
    let now = crate::clock::now_ms();
    let clocks: Vec<Value> = state
        .source_clocks
        .snapshot()
        .into_iter()
        .map(|c| {
            let mut v = serde_json::to_value(&c).unwrap_or_default();
            // How long since it last delivered a record: a source that stops
            // delivering shows here before anything else notices.
            v["idle_seconds"] = json!(c.last_delivery_ms.map(|t| (now - t).max(0) / 1000));
            v
        })
        .collect();
    body["sources"] = Value::Array(clocks);
    body["analysis"] = serde_json::to_value(state.analysis.shown()).map_err(ApiError::internal)?;
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct DeadLetterQuery {
    source: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/deadletters?source=&limit=`: newest first (default 100, at most 1000).
///
/// Needs the token: dead letters keep (redacted) record text.
pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<Value>, ApiError> {
    require_token(&headers, &state.token)?;
    let path = state.db.clone();
    let limit = q.limit.unwrap_or(100).min(1000);
    let rows = tokio::task::spawn_blocking(move || {
        queries::dead_letters(&path, q.source.as_deref(), limit)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(json!({ "dead_letters": rows })))
}
