//! The exception registry over HTTP: `POST /v1/exceptions` (create), `GET
//! /v1/exceptions` (list), `DELETE /v1/exceptions/{id}` (revoke), `POST
//! /v1/exceptions/{id}/renew` and `GET /v1/exceptions/{id}/audit`. Changes need the
//! token; reading does not, like `GET /v1/changes`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::require_token;
use super::{ApiError, AppState, read_body};
use crate::adapters::timestamp::Ts;
use crate::clock::now_ms;
use crate::domain::{Exception, rfc3339_ms};
use crate::exceptions::{ExceptionError, Registry, parse_duration};
use crate::store::exceptions::{self as sql, NewException};

/// Longest actor name kept in the audit log.
const MAX_ACTOR_CHARS: usize = 200;

impl From<ExceptionError> for ApiError {
    fn from(e: ExceptionError) -> ApiError {
        let status = match &e {
            ExceptionError::Invalid(_) => StatusCode::BAD_REQUEST,
            ExceptionError::NotFound(_) => StatusCode::NOT_FOUND,
            ExceptionError::RenewalLimit(_) | ExceptionError::Revoked(_) => StatusCode::CONFLICT,
            ExceptionError::Store(_) => return ApiError::internal(e),
        };
        ApiError::new(status, e.to_string())
    }
}

/// An exception as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    rule: String,
    #[serde(default)]
    scope: BTreeMap<String, String>,
    reason: String,
    owner: String,
    ticket: Option<String>,
    /// When it expires; this or `for` is required.
    expires_at: Option<Ts>,
    /// How long it runs from now (`7d`); this or `expires_at` is required.
    #[serde(rename = "for")]
    duration: Option<String>,
    /// Who is asking, for the audit log; default the owner.
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    /// How much longer (`7d`).
    #[serde(rename = "for")]
    duration: String,
    actor: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn actor(given: Option<String>, default: &str) -> Result<String, ApiError> {
    let a = given.unwrap_or_else(|| default.to_string());
    if a.trim().is_empty() || a.chars().count() > MAX_ACTOR_CHARS {
        return Err(bad(format!(
            "actor must be a name of 1 to {MAX_ACTOR_CHARS} characters"
        )));
    }
    Ok(a)
}

/// Turn a posted body into a new exception and its audit actor, or say what is wrong.
fn parse_create(body: &[u8], now: i64) -> Result<(NewException, String), ApiError> {
    let b: CreateBody = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "invalid exception: {e}; expected {{\"rule\":\"...\",\"scope\":{{\"model\":\"...\"}},\"reason\":\"...\",\"owner\":\"...\",\"ticket\":\"...\",\"for\":\"7d\"}} (or \"expires_at\" instead of \"for\")"
        ))
    })?;
    let expires_ms = match (b.expires_at, b.duration.as_deref()) {
        (Some(t), None) => t.0,
        (None, Some(d)) => now + parse_duration(d).map_err(|e| bad(e.to_string()))?,
        _ => {
            return Err(bad(
                "give exactly one of expires_at (RFC 3339) or for (7d, 36h): every exception expires",
            ));
        }
    };
    let actor = actor(b.actor, &b.owner)?;
    Ok((
        NewException {
            rule: b.rule,
            scope: b.scope,
            reason: b.reason,
            owner: b.owner,
            ticket: b.ticket.filter(|t| !t.trim().is_empty()),
            expires_ms,
        },
        actor,
    ))
}

/// The wire form of an exception: its fields, its status now and readable times.
fn view(e: &Exception, now: i64) -> Value {
    let status = if e.revoked_ms.is_some() {
        "revoked"
    } else if e.expires_ms <= now {
        "expired"
    } else {
        "active"
    };
    let mut v = serde_json::to_value(e).expect("an exception serializes");
    v["status"] = json!(status);
    v["created_at"] = json!(rfc3339_ms::format(e.created_ms));
    v["expires_at"] = json!(rfc3339_ms::format(e.expires_ms));
    v
}

/// Run `f` on a read-write connection to the daemon's database, off the async runtime.
async fn with_db<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut crate::store::sql::Db, Registry) -> Result<T, ExceptionError> + Send + 'static,
) -> Result<T, ApiError> {
    let path = state.db.clone();
    let registry = state.exceptions;
    tokio::task::spawn_blocking(move || {
        let mut conn = sql::open(&path)?;
        f(&mut conn, registry)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

/// `POST /v1/exceptions`.
pub async fn create(
    State(state): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_token(req.headers(), &state.token)?;
    let body = read_body(req.into_body(), state.max_body_bytes).await?;
    let now = now_ms();
    let (new, actor) = parse_create(&body, now)?;
    let created = with_db(&state, move |conn, r| r.create(conn, new, &actor, now)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "exception": view(&created.exception, now),
            "warnings": created.warnings,
        })),
    ))
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// Only exceptions neither expired nor revoked.
    #[serde(default)]
    active: bool,
}

/// `GET /v1/exceptions?active=true`: newest first.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let rows = with_db(&state, move |conn, r| r.list(conn, q.active, now)).await?;
    let rows: Vec<Value> = rows.iter().map(|e| view(e, now)).collect();
    Ok(Json(json!({ "exceptions": rows })))
}

#[derive(Deserialize)]
pub struct RevokeQuery {
    /// Who revokes, for the audit log.
    actor: Option<String>,
}

/// `DELETE /v1/exceptions/{id}?actor=`: revoke.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<RevokeQuery>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    require_token(req.headers(), &state.token)?;
    let actor = actor(q.actor, "api")?;
    let now = now_ms();
    let e = with_db(&state, move |conn, r| r.revoke(conn, id, &actor, now)).await?;
    Ok(Json(json!({ "exception": view(&e, now) })))
}

/// `POST /v1/exceptions/{id}/renew` with `{"for":"7d"}`.
pub async fn renew(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    require_token(req.headers(), &state.token)?;
    let body = read_body(req.into_body(), state.max_body_bytes).await?;
    let b: RenewBody = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("invalid renewal: {e}; expected {{\"for\":\"7d\"}}")))?;
    let extend_ms = parse_duration(&b.duration).map_err(|e| bad(e.to_string()))?;
    let actor = actor(b.actor, "api")?;
    let now = now_ms();
    let e = with_db(&state, move |conn, r| {
        r.renew(conn, id, extend_ms, &actor, now)
    })
    .await?;
    Ok(Json(json!({ "exception": view(&e, now) })))
}

/// `GET /v1/exceptions/{id}/audit`: every change, oldest first.
pub async fn audit(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let rows = with_db(&state, move |conn, r| r.audit(conn, id)).await?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).expect("an audit entry serializes");
            v["at"] = json!(rfc3339_ms::format(a.at_ms));
            v
        })
        .collect();
    Ok(Json(json!({ "audit": rows })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_704_000_000;

    #[test]
    fn a_duration_or_an_expiry_is_required() {
        let (n, actor) = parse_create(
            br#"{"rule":"cpr","scope":{"model":"gpt-4o"},"reason":"batch","owner":"ana","for":"2d"}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(
            (n.expires_ms, actor.as_str()),
            (NOW + 2 * 86_400_000, "ana")
        );
        let (n, _) = parse_create(
            br#"{"rule":"cpr","reason":"batch","owner":"ana","expires_at":"2026-06-07T00:00:00Z","actor":"ci"}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(n.expires_ms, NOW + 86_400_000);
        for (body, want) in [
            (
                r#"{"rule":"cpr","reason":"r","owner":"o"}"#,
                "exactly one of expires_at",
            ),
            (
                r#"{"rule":"cpr","reason":"r","owner":"o","for":"1d","expires_at":"2026-06-07T00:00:00Z"}"#,
                "exactly one of expires_at",
            ),
            (
                r#"{"rule":"cpr","reason":"r","owner":"o","for":"soon"}"#,
                "e.g. 7d",
            ),
            (
                r#"{"rule":"cpr","reason":"r","owner":"o","for":"1d","tier":"page"}"#,
                "unknown field",
            ),
        ] {
            let err = parse_create(body.as_bytes(), NOW).unwrap_err();
            assert!(err.message.contains(want), "{body}: {}", err.message);
        }
    }
}
