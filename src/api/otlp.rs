//! `POST /v1/traces` and `POST /v1/metrics`: the OTLP/HTTP receiver (protobuf or JSON,
//! optionally gzip). GenAI spans become usage events through `adapters::otlp`, token
//! usage histograms of services that send no spans through `adapters::otlp_metrics`, with the webhook's
//! guarantees: the token before the body, a bounded body (also once unzipped), the
//! answer only after the commit, idempotency by `(ts, id)` (the id is the trace and
//! span id, so a resent span is stored once), dead letters for refused spans.
//!
//! Answers follow the OTLP/HTTP specification: 200 with an `ExportTraceServiceResponse`
//! in the request's encoding, with `partial_success` counting refused spans; errors
//! carry a `google.rpc.Status` in that encoding; 503 (which exporters retry) when the
//! store cannot commit.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::auth::require_token;
use super::{AppState, read_body};
use crate::adapters::otlp::{self, Encoding};
use crate::adapters::otlp_metrics::{self, Cumulative};
use crate::adapters::{Context, Record, Rejected, finish_usage};
use crate::clock::now_ms;
use crate::domain::UsageEvent;
use crate::ingest::add_decoded;
use crate::store::Batch;

/// Refusal reasons quoted in `partial_success.error_message`, at most.
const MAX_QUOTED: usize = 5;

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    code: i32,
    /// What went wrong, for the exporter's log.
    #[prost(string, tag = "2")]
    message: String,
}

/// `google.rpc.Code` values used here.
const INVALID_ARGUMENT: i32 = 3;
const UNAUTHENTICATED: i32 = 16;
const UNAVAILABLE: i32 = 14;
const RESOURCE_EXHAUSTED: i32 = 8;

/// An error answer in the request's encoding.
fn failure(status: StatusCode, encoding: Encoding, message: impl Into<String>) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => UNAUTHENTICATED,
        StatusCode::PAYLOAD_TOO_LARGE => RESOURCE_EXHAUSTED,
        s if s.is_server_error() => UNAVAILABLE,
        _ => INVALID_ARGUMENT,
    };
    let body = RpcStatus {
        code,
        message: message.into(),
    };
    encoded(status, encoding, body.encode_to_vec(), &body)
}

fn encoded(
    status: StatusCode,
    encoding: Encoding,
    protobuf: Vec<u8>,
    json: &impl serde::Serialize,
) -> Response {
    match encoding {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            protobuf,
        )
            .into_response(),
        Encoding::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(json).expect("an OTLP answer serializes"),
        )
            .into_response(),
    }
}

/// The body's encoding from its `Content-Type`, if OTLP defines it.
fn encoding(headers: &HeaderMap) -> Option<Encoding> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next()?.trim();
    match mime.to_ascii_lowercase().as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        "application/json" => Some(Encoding::Json),
        _ => None,
    }
}

/// Unzip `body` if its `Content-Encoding` says gzip, refusing more than `limit` bytes
/// unzipped (a small body must not expand past the body limit).
fn unzip(headers: &HeaderMap, body: &[u8], limit: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let coding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match coding.as_deref() {
        None | Some("" | "identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("the gzip body cannot be read: {e}"),
                    )
                })?;
            if out.len() > limit {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body unzips to more than {limit} bytes (max_body_bytes); export smaller batches"
                    ),
                ));
            }
            Ok(out)
        }
        Some(other) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        )),
    }
}

/// What the OTLP endpoints share beyond `AppState`: the cumulative metric points seen,
/// and the services whose spans arrive (their metrics would count calls twice).
#[derive(Debug)]
pub struct OtlpState {
    cumulative: Mutex<Cumulative>,
    span_services: Mutex<HashMap<String, i64>>,
}

/// How long a service counts as sending spans after its last one.
const SPANS_FRESH_MS: i64 = 3_600_000;

impl OtlpState {
    /// Nothing seen yet, at `now_ms`.
    pub fn new(now_ms: i64) -> OtlpState {
        OtlpState {
            cumulative: Mutex::new(Cumulative::new(now_ms.max(0) as u64 * 1_000_000)),
            span_services: Mutex::new(HashMap::new()),
        }
    }

    fn saw_spans(&self, services: impl IntoIterator<Item = String>, now: i64) {
        let mut seen = self.span_services.lock().unwrap_or_else(|p| p.into_inner());
        for s in services {
            seen.insert(s, now);
        }
    }

    fn sends_spans(&self, service: &str, now: i64) -> bool {
        let seen = self.span_services.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(service)
            .is_some_and(|at| now - at < SPANS_FRESH_MS)
    }
}

/// The request's encoding and body, unzipped, once its token passed; or the answer.
async fn receive(state: &AppState, req: Request) -> Result<(Encoding, Vec<u8>), Response> {
    let Some(enc) = encoding(req.headers()) else {
        return Err(failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Encoding::Json,
            "OTLP/HTTP bodies are application/x-protobuf or application/json",
        ));
    };
    if let Err(e) = require_token(req.headers(), &state.token) {
        return Err(failure(StatusCode::UNAUTHORIZED, enc, e.message()));
    }
    let headers = req.headers().clone();
    let body = read_body(req.into_body(), state.max_body_bytes)
        .await
        .map_err(|e| failure(e.status(), enc, e.message()))?;
    let limit = state.max_body_bytes;
    let unzipped = tokio::task::spawn_blocking(move || unzip(&headers, &body, limit)).await;
    match unzipped {
        Ok(Ok(bytes)) => Ok((enc, bytes)),
        Ok(Err((status, message))) => Err(failure(status, enc, message)),
        Err(e) => Err(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            enc,
            e.to_string(),
        )),
    }
}

/// Put each decoded event (finished: time checked, priced) or refusal into `batch`;
/// the refusals' `where: why` lines.
fn fill(
    batch: &mut Batch,
    items: impl IntoIterator<Item = (String, Result<Option<UsageEvent>, Rejected>, Vec<u8>)>,
    ctx: &Context,
) -> Vec<String> {
    let now = now_ms();
    let mut reasons = Vec::new();
    for (position, result, raw) in items {
        let result = result
            .and_then(|e| e.map(|e| finish_usage(e, now, ctx)).transpose())
            .map(|e| e.map(Record::Usage));
        if let Some(reason) = add_decoded(batch, result, || position.clone(), || raw) {
            reasons.push(format!("{position}: {reason}"));
        }
    }
    reasons
}

/// Commit `batch` (if it holds anything).
async fn commit(state: &AppState, batch: Batch) -> Result<(), Unstored> {
    if batch.events.is_empty() && batch.dead_letters.is_empty() {
        return Ok(());
    }
    state.writer.commit(batch).await.map(drop).map_err(|e| {
        tracing::error!(cause = %e, "OTLP data could not be committed");
        Unstored::Unavailable(format!("the data could not be stored ({e}); retry"))
    })
}

/// The first refusal reasons, for `partial_success.error_message`.
fn quote(reasons: &[String]) -> String {
    reasons
        .iter()
        .take(MAX_QUOTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why an export could not be stored: a client's mistake or the store's failure.
pub(super) enum Unstored {
    /// The request is not what the endpoint reads (400 / INVALID_ARGUMENT).
    Invalid(String),
    /// The store did not commit (503 / UNAVAILABLE: exporters retry).
    Unavailable(String),
}

/// Store what `request`'s GenAI spans say; the refusal reasons of its refused spans.
pub(super) async fn export_traces(
    state: &AppState,
    request: ExportTraceServiceRequest,
) -> Result<Vec<String>, Unstored> {
    let ctx = state.ctx.clone();
    let (batch, reasons, services) = tokio::task::spawn_blocking(move || {
        let mut batch = Batch::new("http:otlp", "otlp");
        let spans = otlp::spans(&request, &ctx);
        let reasons = fill(
            &mut batch,
            spans.into_iter().map(|s| (s.position, s.result, s.raw)),
            &ctx,
        );
        (batch, reasons, otlp::services_with_genai_spans(&request))
    })
    .await
    .map_err(|e| Unstored::Unavailable(e.to_string()))?;
    commit(state, batch).await?;
    state.otlp.saw_spans(services, now_ms());
    Ok(reasons)
}

/// Store what `request`'s token-usage histograms say; the refusal reasons.
pub(super) async fn export_metrics(
    state: &AppState,
    request: ExportMetricsServiceRequest,
) -> Result<Vec<String>, Unstored> {
    let ctx = state.ctx.clone();
    let otlp_state = state.otlp.clone();
    let (batch, reasons) = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        let outcome = {
            let mut cumulative = otlp_state
                .cumulative
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            otlp_metrics::events(
                &request,
                &mut cumulative,
                |s| otlp_state.sends_spans(s, now),
                &ctx,
            )
        };
        let mut batch = Batch::new("http:otlp-metrics", "otlp");
        batch.skipped = outcome.skipped;
        let items = outcome
            .events
            .into_iter()
            .map(|e| (String::new(), Ok(Some(e)), Vec::new()))
            .chain(outcome.refused.into_iter().map(|(position, why)| {
                let raw = position.clone().into_bytes();
                (position, Err(why), raw)
            }));
        let reasons = fill(&mut batch, items, &ctx);
        (batch, reasons)
    })
    .await
    .map_err(|e| Unstored::Unavailable(e.to_string()))?;
    commit(state, batch).await?;
    Ok(reasons)
}

/// The trace answer for `reasons`, with `partial_success` when any span was refused.
pub(super) fn trace_answer(reasons: &[String]) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (!reasons.is_empty()).then(|| ExportTracePartialSuccess {
            rejected_spans: reasons.len() as i64,
            error_message: quote(reasons),
        }),
    }
}

/// The metrics answer for `reasons`.
pub(super) fn metrics_answer(reasons: &[String]) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: (!reasons.is_empty()).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: reasons.len() as i64,
            error_message: quote(reasons),
        }),
    }
}

/// An HTTP answer for an export that could not be stored.
fn unstored(e: Unstored, enc: Encoding) -> Response {
    match e {
        Unstored::Invalid(m) => failure(StatusCode::BAD_REQUEST, enc, m),
        Unstored::Unavailable(m) => failure(StatusCode::SERVICE_UNAVAILABLE, enc, m),
    }
}

/// `POST /v1/traces`.
pub async fn traces(State(state): State<AppState>, req: Request) -> Response {
    let (enc, bytes) = match receive(&state, req).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let result = match otlp::decode_traces(&bytes, enc) {
        Ok(request) => export_traces(&state, request).await,
        Err(e) => Err(Unstored::Invalid(e.0)),
    };
    match result {
        Ok(reasons) => {
            let answer = trace_answer(&reasons);
            encoded(StatusCode::OK, enc, answer.encode_to_vec(), &answer)
        }
        Err(e) => unstored(e, enc),
    }
}

/// `POST /v1/metrics`: `gen_ai.client.token.usage` of services that send no spans.
pub async fn metrics(State(state): State<AppState>, req: Request) -> Response {
    let (enc, bytes) = match receive(&state, req).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let result = match otlp_metrics::decode(&bytes, enc) {
        Ok(request) => export_metrics(&state, request).await,
        Err(e) => Err(Unstored::Invalid(e.0)),
    };
    match result {
        Ok(reasons) => {
            let answer = metrics_answer(&reasons);
            encoded(StatusCode::OK, enc, answer.encode_to_vec(), &answer)
        }
        Err(e) => unstored(e, enc),
    }
}
