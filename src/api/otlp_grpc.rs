//! OTLP/gRPC (the collector's trace and metrics services, usually on port 4317): off
//! unless `otlp_grpc_listen` is set. The same stores and guarantees as OTLP/HTTP
//! (`otlp.rs`): the bearer token in the `authorization` metadata, checked before the
//! message is read; messages bounded by `max_body_bytes` (gzip accepted, bounded once
//! unzipped); the answer after the commit; `partial_success` for refused spans.

use std::net::SocketAddr;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::AppState;
use super::auth::require_token;
use super::otlp::{Unstored, export_metrics, export_traces, metrics_answer, trace_answer};

/// Both services, sharing the API's state.
#[derive(Clone)]
struct Collector(AppState);

fn status(e: Unstored) -> Status {
    match e {
        Unstored::Invalid(m) => Status::invalid_argument(m),
        // UNAVAILABLE is what OTLP exporters retry.
        Unstored::Unavailable(m) => Status::unavailable(m),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let reasons = export_traces(&self.0, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(trace_answer(&reasons)))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let reasons = export_metrics(&self.0, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(metrics_answer(&reasons)))
    }
}

/// Serve OTLP/gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = state.max_body_bytes;
    let token = state.token.clone();
    // The token is checked from the metadata, before the message is decoded.
    let check = move |req: Request<()>| {
        let mut headers = axum::http::HeaderMap::new();
        if let Some(v) = req.metadata().get("authorization") {
            if let Ok(v) = axum::http::HeaderValue::from_bytes(v.as_bytes()) {
                headers.insert(axum::http::header::AUTHORIZATION, v);
            }
        }
        match require_token(&headers, &token) {
            Ok(()) => Ok(req),
            Err(e) => Err(Status::unauthenticated(e.message())),
        }
    };
    let collector = Collector(state);
    let traces = TraceServiceServer::new(collector.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let metrics = MetricsServiceServer::new(collector)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving OTLP/gRPC");
    tonic::transport::Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(
            traces,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            metrics, check,
        ))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}
