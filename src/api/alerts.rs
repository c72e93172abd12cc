//! `GET /v1/alerts`: stored alerts, suppressed ones included, newest first.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::adapters::timestamp::parse_ts_str;
use crate::store::alerts::{AlertFilter, list as list_alerts};

/// Query parameters of `GET /v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    state: Option<String>,
    rule: Option<String>,
    kind: Option<String>,
    tier: Option<String>,
    since: Option<String>,
    suppressed: Option<bool>,
    limit: Option<u32>,
}

/// `GET /v1/alerts?state=&rule=&kind=&tier=&since=&suppressed=&limit=`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = q
        .state
        .as_deref()
        .filter(|s| !["pending", "firing", "resolved"].contains(s))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("state {s:?}: use pending, firing or resolved"),
        ));
    }
    let since_ms = match q.since.as_deref() {
        Some(s) => Some(parse_ts_str(s)?),
        None => None,
    };
    let filter = AlertFilter {
        state: q.state,
        rule: q.rule,
        kind: q.kind,
        tier: q.tier,
        since_ms,
        suppressed: q.suppressed,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let path = state.db.clone();
    let rows = tokio::task::spawn_blocking(move || list_alerts(&path.reader()?, &filter))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "alerts": rows })))
}
