//! The OTLP/HTTP receiver against the real OpenTelemetry SDK: its OTLP exporter sends
//! GenAI spans, as protobuf and as JSON, to a real daemon; the events stored are
//! counted against what was exported. Resends, gzip, refusals and non-GenAI spans use
//! bodies built with the OTLP protocol's own types.

use crate::common;

use std::collections::HashMap;
use std::io::Write;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, Status, Tracer, TracerProvider};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as PbKeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PbSpan};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;

crate::on_postgres!(
    genai_spans_from_the_sdk_become_usage_events_protobuf_and_json,
    a_resent_export_is_stored_once_and_refused_spans_are_partial_success,
    the_receiver_refuses_what_it_cannot_read_in_the_otlp_way,
    token_usage_metrics_count_the_calls_of_services_without_spans,
    genai_spans_over_grpc_with_the_token_in_the_metadata,
);

/// Text an instrumentation may put on a span, which driftwarden must never store.
const PROMPT: &str = "PROMPT-TEXT-never-stored";
const COMPLETION: &str = "COMPLETION-TEXT-never-stored";

/// Export `calls` GenAI chat spans through the SDK's OTLP/HTTP exporter; every
/// `fail_every`-th fails (error status and `error.type`). The first half uses the
/// current attribute names, the second the older ones.
fn export(app: &common::TestApp, protocol: Protocol, calls: usize, fail_every: usize) {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(app.url("/v1/traces"))
        .with_headers(HashMap::from([(
            "authorization".to_string(),
            format!("Bearer {}", app.token),
        )]))
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("support-bot").build())
        .build();
    let tracer = provider.tracer("genai-test");
    for i in 0..calls {
        let mut span = tracer.start("chat gpt-4o");
        let current = i < calls / 2;
        let (input, output, provider_key) = match current {
            true => (
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.output_tokens",
                "gen_ai.provider.name",
            ),
            false => (
                "gen_ai.usage.prompt_tokens",
                "gen_ai.usage.completion_tokens",
                "gen_ai.system",
            ),
        };
        span.set_attributes([
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new(provider_key, "openai"),
            KeyValue::new("gen_ai.request.model", "gpt-4o"),
            KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
            KeyValue::new(input, 100i64),
            KeyValue::new(output, 20i64),
            KeyValue::new("gen_ai.usage.cache_read.input_tokens", 40i64),
            KeyValue::new("user.id", "alice@example.com"),
            KeyValue::new("gen_ai.prompt", PROMPT),
        ]);
        span.add_event(
            "gen_ai.content.completion",
            vec![KeyValue::new("gen_ai.completion", COMPLETION)],
        );
        if i % fail_every == 0 {
            span.set_attribute(KeyValue::new("error.type", "RateLimitError"));
            span.set_status(Status::error("429 from upstream"));
        } else {
            span.set_attribute(KeyValue::new(
                "gen_ai.response.finish_reasons",
                opentelemetry::Value::Array(opentelemetry::Array::String(vec!["stop".into()])),
            ));
        }
        span.end();
    }
    for r in [provider.force_flush(), provider.shutdown()] {
        r.unwrap();
    }
}

#[test]
fn genai_spans_from_the_sdk_become_usage_events_protobuf_and_json() {
    let app = common::TestApp::builder().spawn();
    export(&app, Protocol::HttpBinary, 1000, 10);
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events"), 1000);
    assert_eq!(
        app.sql_i64(
            "SELECT COUNT(*) FROM events WHERE status >= 400 AND error_type = 'RateLimitError'"
        ),
        100,
        "every tenth call failed"
    );
    assert_eq!(
        app.sql_i64(
            "SELECT COUNT(*) FROM events WHERE prompt_tokens = 100 AND completion_tokens = 20 \
             AND cached_tokens = 40 AND provider = 'openai' AND route = 'support-bot' \
             AND resolved_model = 'gpt-4o-2024-08-06' AND cost_source = 'price_table'"
        ),
        1000,
        "both attribute generations read, priced from the table"
    );
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events WHERE finish_reason = 'stop'"),
        900
    );
    // The user id is a gateway identity: stored hashed, never raw.
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events WHERE tenant LIKE '%alice%'"),
        0
    );
    assert_eq!(app.sql_i64("SELECT COUNT(DISTINCT tenant) FROM events"), 1);

    export(&app, Protocol::HttpJson, 1000, 4);
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events"), 2000);
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events WHERE status >= 400"),
        350
    );

    let store = app.stored_bytes();
    let text = String::from_utf8_lossy(&store);
    assert!(
        !text.contains(PROMPT) && !text.contains(COMPLETION),
        "a prompt or completion was stored"
    );
}

fn attr(key: &str, value: any_value::Value) -> PbKeyValue {
    PbKeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A GenAI span (or, without a model, a plain one) ending `ago_ms` before now.
fn span(n: u8, model: Option<&str>, ago_ms: u64) -> PbSpan {
    let end = (common::now_ms() as u64 - ago_ms) * 1_000_000;
    let mut attributes = vec![attr(
        "gen_ai.operation.name",
        any_value::Value::StringValue("chat".into()),
    )];
    if let Some(m) = model {
        attributes.push(attr(
            "gen_ai.request.model",
            any_value::Value::StringValue(m.into()),
        ));
        attributes.push(attr(
            "gen_ai.usage.input_tokens",
            any_value::Value::IntValue(10),
        ));
    }
    PbSpan {
        trace_id: vec![7; 16],
        span_id: vec![n; 8],
        name: format!("span {n}"),
        start_time_unix_nano: end - 500_000_000,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

fn request(spans: Vec<PbSpan>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn post(app: &common::TestApp, body: Vec<u8>, content_type: &str, gzip: bool) -> (u16, Vec<u8>) {
    let client = reqwest::blocking::Client::new();
    let mut req = client
        .post(app.url("/v1/traces"))
        .bearer_auth(&app.token)
        .header("content-type", content_type);
    let body = if gzip {
        req = req.header("content-encoding", "gzip");
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&body).unwrap();
        z.finish().unwrap()
    } else {
        body
    };
    let r = req.body(body).send().unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

#[test]
fn a_resent_export_is_stored_once_and_refused_spans_are_partial_success() {
    let app = common::TestApp::builder().spawn();
    let good = request(vec![
        span(1, Some("gpt-4o"), 1000),
        span(2, Some("gpt-4o-mini"), 2000),
    ]);
    for _ in 0..2 {
        let (status, body) = post(&app, good.encode_to_vec(), "application/x-protobuf", true);
        assert_eq!(status, 200);
        let answer = ExportTraceServiceResponse::decode(&body[..]).unwrap();
        assert_eq!(answer.partial_success, None);
    }
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events"),
        2,
        "the resend counted once"
    );

    // One span without a model (refused), one that is not a GenAI call (skipped: an
    // HTTP span of the same service), one good; as OTLP/JSON.
    let mut plain = span(5, None, 1000);
    plain.attributes.clear();
    let mixed = request(vec![
        span(3, None, 1000),
        plain,
        span(4, Some("gpt-4o"), 1000),
    ]);
    let (status, body) = post(
        &app,
        serde_json::to_vec(&mixed).unwrap(),
        "application/json",
        false,
    );
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 1, "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("without gen_ai.request.model"),
        "{message}"
    );
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events"), 3);
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM dead_letters WHERE source = 'http:otlp'"),
        1
    );
}

#[test]
fn the_receiver_refuses_what_it_cannot_read_in_the_otlp_way() {
    let app = common::TestApp::builder().spawn();
    let client = reqwest::blocking::Client::new();
    let body = request(vec![span(1, Some("gpt-4o"), 1000)]).encode_to_vec();
    // No token: 401 with a google.rpc.Status, before the body is read.
    let r = client
        .post(app.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let (status, answer) = post(
        &app,
        b"not protobuf at all \xff\xff".to_vec(),
        "application/x-protobuf",
        false,
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    let (status, _) = post(&app, body.clone(), "text/plain", false);
    assert_eq!(status, 415);
    // A zip bomb: a small gzip body that unzips past max_body_bytes is refused.
    let (status, _) = post(&app, vec![0u8; 40 << 20], "application/x-protobuf", true);
    assert_eq!(status, 413);
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events"), 0);
}

/// Record `calls` GenAI calls of 100 input and 20 output tokens on the SDK's
/// `gen_ai.client.token.usage` histogram of `service`, flushing after every `flush_every`.
fn export_metrics(
    app: &common::TestApp,
    service: &'static str,
    temporality: opentelemetry_sdk::metrics::Temporality,
    calls: usize,
    flush_every: usize,
) {
    use opentelemetry::metrics::MeterProvider;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(app.url("/v1/metrics"))
        .with_headers(HashMap::from([(
            "authorization".to_string(),
            format!("Bearer {}", app.token),
        )]))
        .with_temporality(temporality)
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let histogram = provider
        .meter("genai-test")
        .u64_histogram("gen_ai.client.token.usage")
        .with_unit("{token}")
        .build();
    let labels = |kind: &'static str| {
        [
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.provider.name", "openai"),
            KeyValue::new("gen_ai.request.model", "gpt-4o"),
            KeyValue::new("gen_ai.token.type", kind),
        ]
    };
    for i in 1..=calls {
        histogram.record(100, &labels("input"));
        histogram.record(20, &labels("output"));
        if i % flush_every == 0 {
            provider.force_flush().unwrap();
        }
    }
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();
}

/// Metrics stand in for the calls of a service that sends no spans: delta and
/// cumulative token-usage histograms from the SDK become one event per call with the
/// tokens shared evenly, a cumulative series counted by its differences; a service
/// whose spans arrive is not counted twice from its metrics.
#[test]
fn token_usage_metrics_count_the_calls_of_services_without_spans() {
    use opentelemetry_sdk::metrics::Temporality;
    let app = common::TestApp::builder().spawn();
    export_metrics(&app, "batch-delta", Temporality::Delta, 300, 100);
    let count = |route: &str| {
        app.sql_i64(&format!(
            "SELECT COUNT(*) FROM events WHERE route = '{route}' AND model = 'gpt-4o' \
             AND prompt_tokens = 100 AND completion_tokens = 20 AND provider = 'openai'"
        ))
    };
    assert_eq!(count("batch-delta"), 300);
    // Cumulative: the SDK exports the running total after each flush (and at shutdown).
    export_metrics(&app, "batch-cumulative", Temporality::Cumulative, 250, 50);
    assert_eq!(count("batch-cumulative"), 250, "differenced, not summed");

    // A service whose spans arrive: its metrics would count its calls twice.
    export(&app, Protocol::HttpBinary, 10, 100);
    let before = app.sql_i64("SELECT COUNT(*) FROM events");
    export_metrics(&app, "support-bot", Temporality::Delta, 40, 40);
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM events"), before);
}

/// OTLP/gRPC, on when `otlp_grpc_listen` is set: the SDK's tonic exporter delivers
/// GenAI spans with the token in its metadata; without the token nothing is stored.
#[test]
fn genai_spans_over_grpc_with_the_token_in_the_metadata() {
    use opentelemetry_otlp::WithTonicConfig;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = common::TestApp::builder()
        .config(&format!("otlp_grpc_listen = \"127.0.0.1:{port}\"\n"))
        .spawn();
    // The exporter's channel lives on this runtime; the SDK's batch thread uses it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send = |token: Option<&str>, calls: usize| {
        let _guard = rt.enter();
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(t) = token {
            metadata.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_metadata(metadata)
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("grpc-app").build())
            .build();
        let tracer = provider.tracer("genai-grpc");
        for _ in 0..calls {
            let mut span = tracer.start("chat gpt-4o");
            span.set_attributes([
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.request.model", "gpt-4o"),
                KeyValue::new("gen_ai.usage.input_tokens", 50i64),
                KeyValue::new("gen_ai.usage.output_tokens", 5i64),
            ]);
            span.end();
        }
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    };
    send(None, 20);
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events"),
        0,
        "no token, nothing stored"
    );
    let refused = rt.block_on(async {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        client
            .export(request(vec![span(1, Some("gpt-4o"), 1000)]))
            .await
            .unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    send(Some(&app.token), 100);
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events WHERE route = 'grpc-app' AND prompt_tokens = 50"),
        100
    );
}
