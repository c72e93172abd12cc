//! New API and One API `logs` rows (see shared/GATEWAYS.md), given as JSON objects.
//!
//! Both gateways keep usage only in their database; the database follower and the
//! webhook hand rows to this adapter in the same JSON shape.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{Context, Record, Rejected, millis, non_empty, tokens};
use crate::domain::{CostSource, UsageEvent};

/// The two gateways share the table but differ in a few columns and type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavour {
    NewApi,
    OneApi,
}

const TYPE_CONSUME: i64 = 2;
/// New API: a failed request (quota and tokens are 0). One API: a channel test, skipped.
const TYPE_ERROR_OR_TEST: i64 = 5;

/// A New API / One API `logs` row: parsed from JSON (webhook) or built by the
/// database follower straight from the columns.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct LogRow<'a> {
    /// The row's primary key: increasing, the follower's cursor.
    pub id: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// 2 consume, 5 error (New API) or channel test (One API); other types are skipped.
    #[serde(rename = "type")]
    pub kind: i64,
    /// The gateway user (an identity: hashed or aliased).
    #[serde(borrow, default)]
    pub username: Option<Cow<'a, str>>,
    /// The API key's name (an identity: hashed or aliased).
    #[serde(borrow, default)]
    pub token_name: Option<Cow<'a, str>>,
    /// The model the client asked for.
    #[serde(borrow, default)]
    pub model_name: Option<Cow<'a, str>>,
    /// Quota units charged (`quota_per_unit` of them make a dollar).
    #[serde(default)]
    pub quota: Option<i64>,
    /// Input tokens.
    #[serde(default)]
    pub prompt_tokens: Option<i64>,
    /// Output tokens.
    #[serde(default)]
    pub completion_tokens: Option<i64>,
    /// New API: seconds.
    #[serde(default)]
    pub use_time: Option<f64>,
    /// One API: milliseconds.
    #[serde(default)]
    pub elapsed_time: Option<f64>,
    /// The channel (upstream) id; the DB column is `channel_id`.
    #[serde(default, alias = "channel_id")]
    pub channel: Option<i64>,
    /// The channel's name, when known (a join in the gateway, or our channel map).
    #[serde(borrow, default)]
    pub channel_name: Option<Cow<'a, str>>,
    /// New API's user group.
    #[serde(borrow, default)]
    pub group: Option<Cow<'a, str>>,
    /// New API: a JSON object stored as a string. Never trusted to parse.
    #[serde(borrow, default)]
    pub other: Option<Cow<'a, str>>,
}

/// The keys of New API's `other` column that we use; any may be missing.
#[derive(Deserialize, Default)]
struct Other {
    frt: Option<f64>,
    cache_tokens: Option<i64>,
    is_model_mapped: Option<bool>,
    upstream_model_name: Option<String>,
    status_code: Option<u16>,
}

pub(super) fn decode(
    raw: &[u8],
    ctx: &Context,
    flavour: Flavour,
) -> Result<Option<Record>, Rejected> {
    from_row(
        &serde_json::from_slice(raw).map_err(Rejected::json)?,
        ctx,
        flavour,
    )
}

pub(super) fn from_row(
    row: &LogRow,
    ctx: &Context,
    flavour: Flavour,
) -> Result<Option<Record>, Rejected> {
    let failed = match (row.kind, flavour) {
        (TYPE_CONSUME, _) => false,
        (TYPE_ERROR_OR_TEST, Flavour::NewApi) => true,
        // Top-ups, management, system, refunds and channel tests are not requests.
        _ => return Ok(None),
    };
    let model = non_empty(row.model_name.as_deref())
        .ok_or_else(|| Rejected("model_name is empty".into()))?;
    let ts_ms = row
        .created_at
        .checked_mul(1000)
        .filter(|_| row.created_at > 0)
        .ok_or_else(|| Rejected(format!("created_at {} is not a unix time", row.created_at)))?;
    // A broken `other` must not lose the record: fall back to no extras.
    let other: Other = row
        .other
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let quota = row.quota.unwrap_or(0);
    if quota < 0 {
        return Err(Rejected(format!("quota is negative ({quota})")));
    }
    let identity = non_empty(row.token_name.as_deref()).or(non_empty(row.username.as_deref()));
    let latency_ms = match flavour {
        Flavour::NewApi => millis(row.use_time.map(|s| s * 1000.0)),
        Flavour::OneApi => millis(row.elapsed_time),
    };
    let resolved_model = if other.is_model_mapped.unwrap_or(true) {
        non_empty(other.upstream_model_name)
    } else {
        None
    };
    let prefix = match flavour {
        Flavour::NewApi => "newapi",
        Flavour::OneApi => "oneapi",
    };
    Ok(Some(Record::Usage(UsageEvent {
        id: compact_str::format_compact!("{prefix}:{}", row.id),
        ts_ms,
        model,
        resolved_model,
        provider: non_empty(row.channel_name.as_deref()).or_else(|| {
            row.channel
                .map(|c| compact_str::format_compact!("channel-{c}"))
        }),
        route: non_empty(row.group.as_deref()),
        tenant: identity.map(|raw| ctx.identity.label(&raw)),
        prompt_tokens: tokens("prompt_tokens", row.prompt_tokens)?,
        completion_tokens: tokens("completion_tokens", row.completion_tokens)?,
        cached_tokens: tokens("other.cache_tokens", other.cache_tokens)?,
        cost_usd: Some(quota as f64 / ctx.quota_per_unit),
        cost_source: CostSource::Gateway,
        list_cost_usd: None,
        latency_ms,
        ttft_ms: millis(other.frt),
        status: Some(if failed {
            other.status_code.unwrap_or(500)
        } else {
            200
        }),
        finish_reason: None,
        error_type: failed.then(|| "gateway_error".into()),
    })))
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::test_support::*;

    /// A consume row as New API writes it (model/log.go), `other` from log_info_generate.go.
    const NEWAPI_CONSUME: &str = r#"{"id":4711,"user_id":3,"created_at":1780315200,"type":2,"content":"model ratio 1.25","username":"alice","token_name":"prod-classifier","model_name":"gpt-4o","quota":1335,"prompt_tokens":812,"completion_tokens":64,"use_time":2,"is_stream":true,"channel_id":7,"channel_name":"azure-east","token_id":12,"group":"default","ip":"10.0.0.1","other":"{\"model_ratio\":1.25,\"group_ratio\":1,\"completion_ratio\":4,\"cache_tokens\":128,\"cache_ratio\":0.5,\"frt\":412,\"is_model_mapped\":true,\"upstream_model_name\":\"gpt-4o-2024-08-06\"}"}"#;

    #[test]
    fn newapi_consume_row() {
        let e = usage(Format::NewApi, NEWAPI_CONSUME);
        assert_eq!(e.id, "newapi:4711");
        assert_eq!(e.ts_ms, 1_780_315_200_000);
        assert_eq!(e.model, "gpt-4o");
        assert_eq!(e.resolved_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(e.provider.as_deref(), Some("azure-east"));
        assert_eq!(e.route.as_deref(), Some("default"));
        assert_eq!(
            (e.prompt_tokens, e.completion_tokens, e.cached_tokens),
            (812, 64, 128)
        );
        assert!((e.cost_usd.unwrap() - 1335.0 / 500_000.0).abs() < 1e-12);
        assert!(
            e.list_cost_usd.is_some(),
            "gpt-4o is priced, list cost kept beside"
        );
        assert_eq!(e.latency_ms, Some(2000));
        assert_eq!(e.ttft_ms, Some(412));
        assert_eq!(e.status, Some(200));
        let tenant = e.tenant.unwrap();
        assert!(
            tenant.starts_with("id-") && !tenant.contains("prod"),
            "{tenant}"
        );
    }

    #[test]
    fn a_row_built_in_memory_decodes_like_its_text() {
        let row: super::LogRow = serde_json::from_str(NEWAPI_CONSUME).unwrap();
        let mut d = super::super::Decoder::new(Format::NewApi, ctx());
        let from_row = d.decode_row(&row, NOW).unwrap();
        assert_eq!(from_row, decode(Format::NewApi, NEWAPI_CONSUME).unwrap());
    }

    #[test]
    fn broken_other_still_yields_the_event() {
        let raw = NEWAPI_CONSUME.replace(
            r#""other":"{\"model_ratio"#,
            r#""other":"{not json\"model_ratio"#,
        );
        let e = usage(Format::NewApi, &raw);
        assert_eq!(e.id, "newapi:4711");
        assert_eq!(e.cached_tokens, 0);
        assert_eq!(e.resolved_model, None);
    }

    #[test]
    fn newapi_error_row_is_a_failed_request() {
        let raw = r#"{"id":9,"created_at":1780315200,"type":5,"username":"bob","token_name":"","model_name":"gpt-4o","quota":0,"prompt_tokens":0,"completion_tokens":0,"use_time":1,"channel_id":2,"other":""}"#;
        let e = usage(Format::NewApi, raw);
        assert_eq!(e.status, Some(500));
        assert!(e.is_error());
        assert_eq!(e.provider.as_deref(), Some("channel-2"));
        assert!(
            e.tenant.unwrap().starts_with("id-"),
            "username used when token_name is empty"
        );
    }

    #[test]
    fn non_request_rows_are_skipped_not_rejected() {
        for kind in [0, 1, 3, 4, 6] {
            let raw = format!(
                r#"{{"id":1,"created_at":1780315200,"type":{kind},"model_name":"","quota":500000}}"#
            );
            assert_eq!(decode(Format::NewApi, &raw), Ok(None), "type {kind}");
        }
        // In One API, type 5 is a channel test.
        let test_row = r#"{"id":1,"created_at":1780315200,"type":5,"model_name":"gpt-4o"}"#;
        assert_eq!(decode(Format::OneApi, test_row), Ok(None));
    }

    #[test]
    fn oneapi_consume_row_uses_elapsed_milliseconds() {
        let raw = r#"{"id":77,"user_id":1,"created_at":1780315200,"type":2,"content":"","username":"carol","token_name":"batch","model_name":"claude-3-5-sonnet","quota":2500,"prompt_tokens":100,"completion_tokens":50,"channel":4,"request_id":"2026060112000012345","elapsed_time":1534,"is_stream":false,"system_prompt_reset":false}"#;
        let e = usage(Format::OneApi, raw);
        assert_eq!(e.id, "oneapi:77");
        assert_eq!(e.latency_ms, Some(1534));
        assert_eq!(e.provider.as_deref(), Some("channel-4"));
        assert!((e.cost_usd.unwrap() - 0.005).abs() < 1e-12);
        assert_eq!(e.list_cost_usd, None);
    }

    #[test]
    fn negative_tokens_rejected() {
        let raw =
            r#"{"id":1,"created_at":1780315200,"type":2,"model_name":"gpt-4o","prompt_tokens":-1}"#;
        assert!(
            decode(Format::NewApi, raw)
                .unwrap_err()
                .0
                .contains("negative")
        );
    }
}
