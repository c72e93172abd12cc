//! The HTTP API.
//!
//! **Invariant:** this module is the only one that knows axum and the wire JSON of
//! responses. Handlers hand work to the same stages every source uses.

mod alerts;
mod auth;
mod changes;
mod dashboard;
mod exceptions;
mod health;
mod ingest;
mod otlp;
mod otlp_grpc;
mod outbox;
mod series;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;

pub use otlp::OtlpState;
pub use otlp_grpc::serve as serve_otlp_grpc;

use crate::adapters::timestamp::TimestampError;
use crate::adapters::{Context, Mapping};
use crate::sources::gateway_db::HealthBoard;
use crate::store::writer::Writer;
use crate::telemetry::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Handle to the store's writer thread, which commits every ingest batch.
    pub writer: Writer,
    /// Prices, identity labels and limits, shared with the other sources.
    pub ctx: Arc<Context>,
    /// Mapped formats by name, chosen with `?format=NAME`.
    pub formats: Arc<BTreeMap<String, Arc<Mapping>>>,
    /// driftwarden's database, opened read-only for stats and listings.
    pub db: crate::store::Location,
    /// The daemon's metrics, rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The bearer token every write endpoint requires.
    pub token: Arc<str>,
    /// Request bodies above this get 413.
    pub max_body_bytes: usize,
    /// Live state of gateway database sources.
    pub db_health: HealthBoard,
    /// Each pulling source's data clock.
    pub source_clocks: crate::sources::clocks::SourceClocks,
    /// How far the live analysis has judged.
    pub analysis: crate::analysis::Progress,
    /// The exception registry's limits.
    pub exceptions: crate::exceptions::Registry,
    /// What the OTLP endpoints remember between requests.
    pub otlp: Arc<OtlpState>,
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    // Write handlers read their bodies themselves, after the token check, within
    // `max_body_bytes`; this limit covers any other extractor.
    let limit = state.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/v1/stats", get(health::stats))
        .route("/v1/deadletters", get(health::dead_letters))
        .route("/v1/events", post(ingest::events))
        .route("/v1/evals", post(ingest::evals))
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/metrics", post(otlp::metrics))
        .route("/recalibrate", post(changes::recalibrate))
        .route("/v1/changes", get(changes::list))
        .route(
            "/v1/exceptions",
            post(exceptions::create).get(exceptions::list),
        )
        .route("/v1/exceptions/{id}", delete(exceptions::revoke))
        .route("/v1/exceptions/{id}/renew", post(exceptions::renew))
        .route("/v1/exceptions/{id}/audit", get(exceptions::audit))
        .route("/v1/outbox", get(outbox::list))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/scopes", get(series::scopes))
        .route("/v1/series", get(series::series))
        .route("/", get(dashboard::index))
        .route("/assets/{name}", get(dashboard::assets))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// An error answer: a status and a message that says what to do.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error answer with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What the answer says.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(cause = %e, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// A timestamp in a request (a query's `since` or `until`) is the client's to fix: 400.
impl From<TimestampError> for ApiError {
    fn from(e: TimestampError) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// Read a request body of at most `limit` bytes (413 beyond it).
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes (max_body_bytes); send smaller batches"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))
        }
    })
}
