//! `POST /v1/traces`: the OTLP/HTTP receiver (protobuf or JSON, optionally gzip).
//! GenAI spans become usage events through `adapters::otlp`, with the webhook's
//! guarantees: the token before the body, a bounded body (also once unzipped), the
//! answer only after the commit, idempotency by `(ts, id)` (the id is the trace and
//! span id, so a resent span is stored once), dead letters for refused spans.
//!
//! Answers follow the OTLP/HTTP specification: 200 with an `ExportTraceServiceResponse`
//! in the request's encoding, with `partial_success` counting refused spans; errors
//! carry a `google.rpc.Status` in that encoding; 503 (which exporters retry) when the
//! store cannot commit.

use std::io::Read;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use super::auth::require_token;
use super::{AppState, read_body};
use crate::adapters::otlp::{self, Encoding};
use crate::adapters::{Record, finish_usage};
use crate::clock::now_ms;
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

/// `POST /v1/traces`.
pub async fn traces(State(state): State<AppState>, req: Request) -> Response {
    let Some(enc) = encoding(req.headers()) else {
        return failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Encoding::Json,
            "OTLP/HTTP bodies are application/x-protobuf or application/json",
        );
    };
    if let Err(e) = require_token(req.headers(), &state.token) {
        return failure(StatusCode::UNAUTHORIZED, enc, e.message());
    }
    let headers = req.headers().clone();
    let body = match read_body(req.into_body(), state.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return failure(e.status(), enc, e.message()),
    };
    let limit = state.max_body_bytes;
    let ctx = state.ctx.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let bytes = unzip(&headers, &body, limit)?;
        let request =
            otlp::decode_traces(&bytes, enc).map_err(|e| (StatusCode::BAD_REQUEST, e.0))?;
        let mut batch = Batch::new("http:otlp", "otlp");
        let mut reasons = Vec::new();
        let now = now_ms();
        for span in otlp::spans(&request, &ctx) {
            let result = span
                .result
                .and_then(|e| e.map(|e| finish_usage(e, now, &ctx)).transpose())
                .map(|e| e.map(Record::Usage));
            let raw = span.raw;
            if let Some(reason) = add_decoded(&mut batch, result, || span.position.clone(), || raw)
            {
                reasons.push(format!("{}: {reason}", span.position));
            }
        }
        Ok::<_, (StatusCode, String)>((batch, reasons))
    })
    .await;
    let (batch, reasons) = match decoded {
        Ok(Ok(done)) => done,
        Ok(Err((status, message))) => return failure(status, enc, message),
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, enc, e.to_string()),
    };
    if !(batch.events.is_empty() && batch.dead_letters.is_empty()) {
        if let Err(e) = state.writer.commit(batch).await {
            tracing::error!(cause = %e, "OTLP spans could not be committed");
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                enc,
                format!("the spans could not be stored ({e}); retry"),
            );
        }
    }
    let response = ExportTraceServiceResponse {
        partial_success: (!reasons.is_empty()).then(|| ExportTracePartialSuccess {
            rejected_spans: reasons.len() as i64,
            error_message: reasons
                .iter()
                .take(MAX_QUOTED)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        }),
    };
    encoded(StatusCode::OK, enc, response.encode_to_vec(), &response)
}
