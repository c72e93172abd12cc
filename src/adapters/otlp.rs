//! OTLP traces: spans that carry OpenTelemetry GenAI semantic-convention attributes
//! become usage events. Both generations of the conventions are read
//! (`gen_ai.usage.input_tokens`/`output_tokens` and the older `prompt_tokens`/
//! `completion_tokens`; `gen_ai.provider.name` and the older `gen_ai.system`). Spans
//! without GenAI attributes (HTTP, database, the application's own) are skipped.
//!
//! Nothing of a prompt or a completion is read: only names, counts, times and status.

use compact_str::CompactString;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::json;

use super::{Context, Rejected};
use crate::domain::UsageEvent;

/// How an OTLP/HTTP body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON: hex ids, lowerCamelCase keys).
    Json,
}

/// Read an `ExportTraceServiceRequest`.
pub fn decode_traces(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportTraceServiceRequest, Rejected> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| {
            Rejected(format!(
                "not an OTLP ExportTraceServiceRequest (protobuf): {e}"
            ))
        }),
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| Rejected(format!("not an OTLP ExportTraceServiceRequest (JSON): {e}"))),
    }
}

/// What one span became.
#[derive(Debug)]
pub struct SpanOutcome {
    /// `trace <hex>/span <hex>`, for dead letters.
    pub position: String,
    /// A usage event, `None` for a span that is not a GenAI call, or why it was refused.
    pub result: Result<Option<UsageEvent>, Rejected>,
    /// What a dead letter keeps of the span: its name, ids and GenAI attributes (no
    /// prompt or completion).
    pub raw: Vec<u8>,
}

/// Every span of `req`, in order.
pub fn spans(req: &ExportTraceServiceRequest, ctx: &Context) -> Vec<SpanOutcome> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(outcome(span, resource, ctx));
            }
        }
    }
    out
}

/// The `service.name` of every resource that sent a GenAI span in `req`.
pub fn services_with_genai_spans(req: &ExportTraceServiceRequest) -> Vec<String> {
    req.resource_spans
        .iter()
        .filter(|rs| {
            rs.scope_spans
                .iter()
                .any(|ss| ss.spans.iter().any(|s| is_genai(&s.attributes)))
        })
        .filter_map(|rs| {
            let attrs = &rs.resource.as_ref()?.attributes;
            text(attrs, "service.name").map(String::from)
        })
        .collect()
}

fn outcome(span: &Span, resource: &[KeyValue], ctx: &Context) -> SpanOutcome {
    let (trace, id) = (hex(&span.trace_id), hex(&span.span_id));
    let position = format!("trace {trace}/span {id}");
    let result = if is_genai(&span.attributes) {
        usage(span, &trace, &id, resource, ctx).map(Some)
    } else {
        Ok(None)
    };
    let raw = match &result {
        Err(_) => summary(span, &trace, &id),
        Ok(_) => Vec::new(),
    };
    SpanOutcome {
        position,
        result,
        raw,
    }
}

/// A span is a GenAI call when it names an operation, a provider or a model.
fn is_genai(attrs: &[KeyValue]) -> bool {
    attrs.iter().any(|kv| {
        matches!(
            kv.key.as_str(),
            "gen_ai.operation.name"
                | "gen_ai.provider.name"
                | "gen_ai.system"
                | "gen_ai.request.model"
        )
    })
}

fn usage(
    span: &Span,
    trace: &str,
    id: &str,
    resource: &[KeyValue],
    ctx: &Context,
) -> Result<UsageEvent, Rejected> {
    let a = &span.attributes[..];
    let model = text(a, "gen_ai.request.model")
        .or_else(|| text(a, "gen_ai.response.model"))
        .ok_or_else(|| {
            Rejected("GenAI span without gen_ai.request.model or gen_ai.response.model".into())
        })?;
    if trace.is_empty() || id.is_empty() {
        return Err(Rejected(
            "span without a trace id or span id: it could not be stored once".into(),
        ));
    }
    let end = if span.end_time_unix_nano > 0 {
        span.end_time_unix_nano
    } else {
        span.start_time_unix_nano
    };
    if end == 0 {
        return Err(Rejected("span without start or end time".into()));
    }
    let tokens = |keys: &[&str]| -> Result<u64, Rejected> {
        match keys.iter().find_map(|k| number(a, k).map(|n| (k, n))) {
            None => Ok(0),
            Some((_, n)) if n >= 0.0 && n.fract() == 0.0 => Ok(n as u64),
            Some((k, n)) => Err(Rejected(format!(
                "{k} is {n}: token counts are whole numbers, at least 0"
            ))),
        }
    };
    let failed = text(a, "error.type").is_some()
        || span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32);
    let http_status =
        number(a, "http.response.status_code").and_then(|n| u16::try_from(n as i64).ok());
    let status = match failed {
        true => http_status.filter(|s| *s >= 400).unwrap_or(500),
        false => http_status.filter(|s| *s < 400).unwrap_or(200),
    };
    let error_type = match failed {
        true => Some(
            text(a, "error.type")
                .map_or(CompactString::const_new("span_error"), CompactString::from),
        ),
        false => None,
    };
    Ok(UsageEvent {
        id: CompactString::from(format!("{trace}{id}")),
        ts_ms: (end / 1_000_000) as i64,
        resolved_model: text(a, "gen_ai.response.model")
            .filter(|r| *r != model)
            .map(CompactString::from),
        model: CompactString::from(model),
        provider: text(a, "gen_ai.provider.name")
            .or_else(|| text(a, "gen_ai.system"))
            .map(CompactString::from),
        route: text(a, "driftwarden.route")
            .or_else(|| text(resource, "service.name"))
            .map(CompactString::from),
        tenant: text(a, "user.id")
            .or_else(|| text(a, "enduser.id"))
            .map(|raw| ctx.identity.label(raw)),
        prompt_tokens: tokens(&["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"])?,
        completion_tokens: tokens(&[
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
        ])?,
        cached_tokens: tokens(&[
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
        ])?,
        cost_usd: number(a, "gen_ai.usage.cost"),
        cost_source: match number(a, "gen_ai.usage.cost") {
            Some(_) => crate::domain::CostSource::Gateway,
            None => crate::domain::CostSource::Unknown,
        },
        list_cost_usd: None,
        latency_ms: span
            .end_time_unix_nano
            .checked_sub(span.start_time_unix_nano)
            .filter(|_| span.start_time_unix_nano > 0)
            .map(|ns| ns / 1_000_000),
        ttft_ms: None,
        status: Some(status),
        finish_reason: finish_reason(a).map(CompactString::from),
        error_type,
    })
}

/// The first of `gen_ai.response.finish_reasons` (an array; a plain string is read too).
fn finish_reason(a: &[KeyValue]) -> Option<&str> {
    match &get(a, "gen_ai.response.finish_reasons")?.value {
        Some(Value::ArrayValue(arr)) => arr.values.iter().find_map(|v| match &v.value {
            Some(Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        }),
        Some(Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key)?.value.as_ref()
}

/// A non-empty string attribute.
pub(super) fn text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match &get(attrs, key)?.value {
        Some(Value::StringValue(s)) if !s.trim().is_empty() => Some(s.trim()),
        _ => None,
    }
}

/// A numeric attribute, whether sent as an int, a double or a numeric string.
fn number(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match &get(attrs, key)?.value {
        Some(Value::IntValue(i)) => Some(*i as f64),
        Some(Value::DoubleValue(d)) if d.is_finite() => Some(*d),
        Some(Value::StringValue(s)) => s.trim().parse().ok().filter(|d: &f64| d.is_finite()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The attributes a dead letter keeps besides `gen_ai.usage.*`: an allowlist, since
/// the conventions keep adding attributes that hold text (`gen_ai.input.messages`,
/// `gen_ai.system_instructions`, `gen_ai.prompt`).
const KEPT: [&str; 8] = [
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.finish_reasons",
    "error.type",
    "http.response.status_code",
];

/// The span as a dead letter keeps it: name, ids, times, status and its `gen_ai.*`,
/// `error.type` and HTTP status attributes, never other attributes or events (where
/// instrumentations put prompts and completions).
fn summary(span: &Span, trace: &str, id: &str) -> Vec<u8> {
    let attrs: serde_json::Map<String, serde_json::Value> = span
        .attributes
        .iter()
        .filter(|kv| kv.key.starts_with("gen_ai.usage.") || KEPT.contains(&kv.key.as_str()))
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => json!(s),
                Some(Value::IntValue(i)) => json!(i),
                Some(Value::DoubleValue(d)) => json!(d),
                Some(Value::BoolValue(b)) => json!(b),
                _ => json!("(not a scalar)"),
            };
            (kv.key.clone(), v)
        })
        .collect();
    serde_json::to_vec(&json!({
        "trace_id": trace, "span_id": id, "name": span.name,
        "start_time_unix_nano": span.start_time_unix_nano.to_string(),
        "end_time_unix_nano": span.end_time_unix_nano.to_string(),
        "status": span.status.as_ref().map(|s| s.code),
        "attributes": attrs,
    }))
    .expect("a summary serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::test_support::ctx;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn genai_span(attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: 1_780_000_000_000_000_000,
            end_time_unix_nano: 1_780_000_000_750_000_000,
            attributes,
            ..Default::default()
        }
    }

    #[test]
    fn a_refused_span_keeps_no_text_in_its_dead_letter() {
        let span = genai_span(vec![
            kv("gen_ai.operation.name", Value::StringValue("chat".into())),
            kv("gen_ai.usage.input_tokens", Value::IntValue(-3)),
            kv(
                "gen_ai.input.messages",
                Value::StringValue("SECRET prompt".into()),
            ),
            kv("gen_ai.prompt", Value::StringValue("SECRET prompt".into())),
            kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
        ]);
        let out = outcome(&span, &[], &ctx());
        let reason = out.result.unwrap_err().0;
        assert!(
            reason.contains("gen_ai.usage.input_tokens is -3"),
            "{reason}"
        );
        let raw = String::from_utf8(out.raw).unwrap();
        assert!(!raw.contains("SECRET"), "{raw}");
        assert!(raw.contains("\"gen_ai.request.model\":\"gpt-4o\""), "{raw}");
        assert_eq!(
            out.position,
            format!("trace {}/span {}", "01".repeat(16), "02".repeat(8))
        );
    }

    #[test]
    fn numbers_come_as_ints_doubles_or_strings_and_latency_from_the_times() {
        let span = genai_span(vec![
            kv("gen_ai.request.model", Value::StringValue("gpt-4o".into())),
            kv("gen_ai.usage.input_tokens", Value::DoubleValue(12.0)),
            kv("gen_ai.usage.output_tokens", Value::StringValue("7".into())),
            kv("gen_ai.usage.cost", Value::DoubleValue(0.0025)),
            kv("http.response.status_code", Value::IntValue(503)),
            kv(
                "error.type",
                Value::StringValue("ServiceUnavailable".into()),
            ),
        ]);
        let e = outcome(&span, &[], &ctx()).result.unwrap().unwrap();
        assert_eq!((e.prompt_tokens, e.completion_tokens), (12, 7));
        assert_eq!(
            (e.cost_usd, e.latency_ms, e.status),
            (Some(0.0025), Some(750), Some(503))
        );
        assert_eq!(e.error_type.as_deref(), Some("ServiceUnavailable"));
        assert_eq!(e.ts_ms, 1_780_000_000_750);
        let plain = genai_span(vec![kv("http.route", Value::StringValue("/chat".into()))]);
        assert!(outcome(&plain, &[], &ctx()).result.unwrap().is_none());
    }
}
