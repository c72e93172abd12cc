//! `POST /v1/events` and `POST /v1/evals`: webhooks for gateways and evaluators.
//!
//! The token is checked before the body is read; the body is bounded (413); the answer
//! is sent only after the records are committed, and counts what happened to each.

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::require_token;
use super::{ApiError, AppState, read_body};
use crate::adapters::{Decoder, Format, MappedKind, body};
use crate::clock::now_ms;
use crate::ingest::{add_dead_letter, add_record};
use crate::store::Batch;

/// Rejection reasons listed in one answer, at most; the rest are only counted.
const MAX_LISTED_ERRORS: usize = 100;

#[derive(Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

/// What happened to the records of one request.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub errors: Vec<RecordError>,
}

/// Why one record of the body was rejected (it is in dead letters too).
#[derive(Debug, Serialize)]
pub struct RecordError {
    /// The record's number in the body (line number for NDJSON and CSV), from 1.
    pub record: u64,
    pub reason: String,
}

/// `POST /v1/events?format=native|newapi|oneapi|litellm|<mapped>`.
pub async fn events(
    State(state): State<AppState>,
    Query(q): Query<FormatQuery>,
    req: Request,
) -> Result<(StatusCode, Json<IngestReport>), ApiError> {
    // Before anything else: unknown callers learn nothing, not even format names.
    require_token(req.headers(), &state.token)?;
    let name = q.format.unwrap_or_else(|| "native".into());
    let format = Format::by_name(&name, &state.formats)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if format.is_evals() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "eval scores go to POST /v1/evals",
        ));
    }
    ingest(state, "http:events", name, format, req).await
}

/// `POST /v1/evals`: `EvalScore` records.
pub async fn evals(
    State(state): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<IngestReport>), ApiError> {
    ingest(state, "http:evals", "evals".into(), Format::Evals, req).await
}

async fn ingest(
    state: AppState,
    source: &'static str,
    format_name: String,
    format: Format,
    req: Request,
) -> Result<(StatusCode, Json<IngestReport>), ApiError> {
    require_token(req.headers(), &state.token)?;
    let body = read_body(req.into_body(), state.max_body_bytes).await?;
    let ctx = state.ctx.clone();
    let (batch, mut report) = tokio::task::spawn_blocking(move || {
        let line_based = matches!(&format, Format::Mapped(m) if m.kind() == MappedKind::Csv);
        let mut decoder = Decoder::new(format, ctx);
        let mut batch = Batch::new(source, format_name);
        let mut report = IngestReport::default();
        let now = now_ms();
        for item in body::split(&body, line_based) {
            let number = item.number;
            let reason = match item.error {
                Some(reason) => {
                    add_dead_letter(
                        &mut batch,
                        format!("record {number}"),
                        reason.clone(),
                        item.raw,
                    );
                    Some(reason)
                }
                None => add_record(
                    &mut batch,
                    &mut decoder,
                    item.raw,
                    number,
                    || format!("record {number}"),
                    now,
                ),
            };
            if let Some(reason) = reason
                && report.errors.len() < MAX_LISTED_ERRORS
            {
                report.errors.push(RecordError {
                    record: number,
                    reason,
                });
            }
        }
        (batch, report)
    })
    .await
    .map_err(ApiError::internal)?;
    if batch.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body holds no records: send a JSON object, a JSON array or newline-delimited records",
        ));
    }
    report.skipped = batch.skipped;
    let committed = state
        .writer
        .commit(batch)
        .await
        .map_err(ApiError::internal)?;
    report.accepted = committed.events_inserted + committed.evals_inserted;
    report.duplicates = committed.events_duplicate + committed.evals_duplicate;
    report.rejected = committed.dead_letters;
    let status = if report.rejected > 0 && report.accepted + report.duplicates + report.skipped == 0
    {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(report)))
}
