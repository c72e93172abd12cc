//! `GET /v1/outbox`: notifications waiting, delivered or given up. Needs no token:
//! rows carry titles, states and scrubbed errors, never a URL or a message body.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::domain::rfc3339_ms;
use crate::store::outbox::{self, OutboxState};

#[derive(Deserialize)]
pub struct OutboxQuery {
    /// `pending`, `sent` or `dead`; default all.
    state: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/outbox?state=dead&limit=`: newest first (default 100, at most 1000).
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<Value>, ApiError> {
    let wanted = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(OutboxState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state {s:?} is not one of pending, sent, dead"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let path = state.db.clone();
    let rows = tokio::task::spawn_blocking(move || outbox::list(&path, wanted, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "channel": r.channel,
                "state": r.state,
                "title": r.message.title,
                "tier": r.message.tier,
                "alerts": r.message.alerts.len(),
                "attempts": r.attempts,
                "created": rfc3339_ms::format(r.created_ms),
                "next_attempt": (r.state == OutboxState::Pending).then(|| rfc3339_ms::format(r.next_attempt_ms)),
                "sent": r.sent_ms.map(rfc3339_ms::format),
                "last_error": r.last_error,
            })
        })
        .collect();
    Ok(Json(json!({ "notifications": rows })))
}
