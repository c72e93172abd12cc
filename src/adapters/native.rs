//! driftwarden's own `UsageEvent` JSON (DESIGN.md, "Native record shapes").

use std::borrow::Cow;

use serde::Deserialize;

use super::timestamp::Ts;
use super::{Context, Rejected, millis, non_empty, tokens};
use crate::domain::{CostSource, UsageEvent};

#[derive(Deserialize)]
struct NativeRecord<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    ts: Ts,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    resolved_model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow)]
    route: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tenant: Option<Cow<'a, str>>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: Option<i64>,
    cost_usd: Option<f64>,
    latency_ms: Option<f64>,
    ttft_ms: Option<f64>,
    status: Option<u16>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error_type: Option<Cow<'a, str>>,
}

pub(super) fn decode(raw: &[u8], ctx: &Context) -> Result<UsageEvent, Rejected> {
    // One UTF-8 check of the whole line (ASCII runs go a word at a time) instead of one
    // per string field: that per-field check was about 6% of a replay's instructions.
    // A line that is not UTF-8 takes the slice path, so its rejection reads as before.
    let r: NativeRecord = match std::str::from_utf8(raw) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(raw),
    }
    .map_err(Rejected::json)?;
    if r.id.trim().is_empty() {
        return Err(Rejected("id is empty".into()));
    }
    if r.model.trim().is_empty() {
        return Err(Rejected("model is empty".into()));
    }
    Ok(UsageEvent {
        id: r.id.into_owned(),
        ts_ms: r.ts.0,
        model: r.model.into_owned(),
        resolved_model: non_empty(r.resolved_model),
        provider: non_empty(r.provider),
        route: non_empty(r.route),
        // A native tenant is a label the sender chose; only a configured alias replaces it.
        tenant: non_empty(r.tenant).map(|t| ctx.identity.alias_or(t)),
        prompt_tokens: tokens("prompt_tokens", Some(r.prompt_tokens))?,
        completion_tokens: tokens("completion_tokens", Some(r.completion_tokens))?,
        cached_tokens: tokens("cached_tokens", r.cached_tokens)?,
        cost_source: if r.cost_usd.is_some() {
            CostSource::Gateway
        } else {
            CostSource::Unknown
        },
        cost_usd: r.cost_usd,
        list_cost_usd: None,
        latency_ms: millis(r.latency_ms),
        ttft_ms: millis(r.ttft_ms),
        status: r.status,
        finish_reason: non_empty(r.finish_reason),
        error_type: non_empty(r.error_type),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Format, Record};
    use crate::domain::CostSource;

    const DESIGN_EXAMPLE: &str = r#"{"id":"req-1","ts":"2026-06-01T12:00:00.123Z","model":"gpt-4o","resolved_model":"gpt-4o-2024-08-06","provider":"openai","route":"classify","tenant":"team-a","prompt_tokens":812,"completion_tokens":64,"cached_tokens":0,"cost_usd":0.00267,"latency_ms":840,"status":200,"finish_reason":"stop","error_type":null}"#;

    #[test]
    fn design_example_round_trips_every_field() {
        let e = usage(Format::Native, DESIGN_EXAMPLE);
        assert_eq!(e.id, "req-1");
        assert_eq!(e.ts_ms, 1_780_315_200_123);
        assert_eq!(e.resolved_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(e.provider.as_deref(), Some("openai"));
        assert_eq!(e.route.as_deref(), Some("classify"));
        assert_eq!(e.tenant.as_deref(), Some("team-a"));
        assert_eq!((e.prompt_tokens, e.completion_tokens), (812, 64));
        assert_eq!(e.cost_usd, Some(0.00267));
        assert_eq!(e.cost_source, CostSource::Gateway);
        assert_eq!(e.latency_ms, Some(840));
        assert_eq!(e.status, Some(200));
        assert_eq!(e.finish_reason.as_deref(), Some("stop"));
        assert_eq!(e.error_type, None);
    }

    #[test]
    fn epoch_seconds_and_milliseconds() {
        let s = usage(
            Format::Native,
            r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
        );
        let ms = usage(
            Format::Native,
            r#"{"id":"a","ts":1780315200000,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
        );
        assert_eq!(s.ts_ms, ms.ts_ms);
    }

    #[test]
    fn required_fields_and_impossible_values_are_named() {
        let cases = [
            (
                r#"{"ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
                "missing field `id`",
            ),
            (
                r#"{"id":"a","ts":1780315200,"model":"m","completion_tokens":1}"#,
                "missing field `prompt_tokens`",
            ),
            (
                r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":-3,"completion_tokens":1}"#,
                "prompt_tokens is negative (-3)",
            ),
            (
                r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1,"cost_usd":-1}"#,
                "negative",
            ),
            (r#"{"id":"a","ts":"#, "invalid record"),
        ];
        for (raw, want) in cases {
            let err = decode(Format::Native, raw).unwrap_err();
            assert!(err.0.contains(want), "{raw}: {err}");
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_rejected_by_the_json_parser() {
        let mut raw = br#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1,"route":"x"#.to_vec();
        raw.extend_from_slice(b"\xff\"}");
        let err = super::super::Decoder::new(Format::Native, ctx())
            .decode(&raw, 0, NOW)
            .unwrap_err();
        assert!(
            err.0
                .starts_with("invalid record: invalid unicode code point"),
            "{err}"
        );
    }

    #[test]
    fn configured_alias_replaces_native_tenant() {
        let raw = r#"{"id":"a","ts":1780315200,"model":"m","tenant":"alias-me","prompt_tokens":1,"completion_tokens":1}"#;
        match decode(Format::Native, raw) {
            Ok(Some(Record::Usage(e))) => assert_eq!(e.tenant.as_deref(), Some("team-alias")),
            other => panic!("{other:?}"),
        }
    }
}
