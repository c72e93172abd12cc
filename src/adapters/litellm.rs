//! LiteLLM's `StandardLoggingPayload`, as its generic API callback posts it
//! (see shared/GATEWAYS.md). Records are large (messages, response, tracebacks);
//! only the fields below are read and nothing else is kept.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::timestamp::epoch_to_ms;
use super::{Context, Rejected, millis, non_empty, tokens};
use crate::domain::{CostSource, UsageEvent};

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Payload<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    response_cost: Option<f64>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    custom_llm_provider: Option<Cow<'a, str>>,
    #[serde(default)]
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
    startTime: f64,
    #[serde(default)]
    endTime: Option<f64>,
    #[serde(default)]
    completionStartTime: Option<f64>,
    /// The provider-side model name (`openai/gpt-4o`).
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    /// The model name the client asked for.
    #[serde(borrow, default)]
    model_group: Option<Cow<'a, str>>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    request_tags: Option<Vec<serde_json::Value>>,
    #[serde(borrow, default)]
    error_information: Option<ErrorInformation<'a>>,
    /// Kept raw: only `choices[0].finish_reason` is read, and only if it parses.
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    user_api_key_hash: Option<String>,
    user_api_key_alias: Option<String>,
    user_api_key_team_id: Option<String>,
    user_api_key_team_alias: Option<String>,
    user_api_key_end_user_id: Option<String>,
    user_api_key_request_route: Option<String>,
    usage_object: Option<UsageObject>,
}

#[derive(Deserialize, Default)]
struct UsageObject {
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize, Default)]
struct PromptTokensDetails {
    cached_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorInformation<'a> {
    #[serde(default)]
    error_code: Option<serde_json::Value>,
    #[serde(borrow, default)]
    error_class: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Response {
    choices: Option<Vec<Choice>>,
}

#[derive(Deserialize)]
struct Choice {
    finish_reason: Option<String>,
}

pub(super) fn decode(raw: &[u8], ctx: &Context) -> Result<UsageEvent, Rejected> {
    let p: Payload = serde_json::from_slice(raw).map_err(Rejected::json)?;
    let meta = p.metadata.unwrap_or_default();
    let model = non_empty(p.model_group.as_deref())
        .or_else(|| non_empty(p.model.as_deref()))
        .ok_or_else(|| Rejected("neither model_group nor model is set".into()))?;
    let failed = p.status.as_deref() == Some("failure");
    let error = p.error_information;
    let status = if failed {
        error
            .as_ref()
            .and_then(|e| e.error_code.as_ref())
            .and_then(|c| match c {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            })
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c >= 400)
            .unwrap_or(500)
    } else {
        200
    };
    let tenant = [
        &meta.user_api_key_team_alias,
        &meta.user_api_key_team_id,
        &meta.user_api_key_alias,
        &meta.user_api_key_hash,
        &meta.user_api_key_end_user_id,
    ]
    .into_iter()
    .find_map(|v| non_empty(v.as_deref()))
    .map(|raw| ctx.identity.label(&raw));
    let route = p
        .request_tags
        .as_ref()
        .and_then(|tags| tags.iter().find_map(|t| non_empty(t.as_str())))
        .or_else(|| non_empty(meta.user_api_key_request_route.as_deref()));
    let cached = meta
        .usage_object
        .and_then(|u| u.prompt_tokens_details)
        .and_then(|d| d.cached_tokens);
    let finish_reason = p
        .response
        .and_then(|r| serde_json::from_str::<Response>(r.get()).ok())
        .and_then(|r| r.choices)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.finish_reason);
    // The id is half of the dedupe key (ts, id): a blank one would make every
    // request of the same millisecond one.
    if p.id.trim().is_empty() {
        return Err(Rejected("id is blank".into()));
    }
    let ts_ms = epoch_to_ms(p.startTime)?;
    let since_start = |t: Option<f64>| millis(t.map(|t| (t - p.startTime) * 1000.0));
    Ok(UsageEvent {
        id: p.id.into(),
        ts_ms,
        resolved_model: non_empty(p.model.as_deref()).filter(|m| *m != model),
        model,
        provider: non_empty(p.custom_llm_provider.as_deref()),
        route,
        tenant,
        prompt_tokens: tokens("prompt_tokens", p.prompt_tokens)?,
        completion_tokens: tokens("completion_tokens", p.completion_tokens)?,
        cached_tokens: tokens("cached_tokens", cached)?,
        cost_source: if p.response_cost.is_some() {
            CostSource::Gateway
        } else {
            CostSource::Unknown
        },
        cost_usd: p.response_cost,
        list_cost_usd: None,
        latency_ms: since_start(p.endTime),
        ttft_ms: if p.stream == Some(true) {
            since_start(p.completionStartTime)
        } else {
            None
        },
        status: Some(status),
        finish_reason: non_empty(finish_reason),
        error_type: if failed {
            Some(non_empty(error.and_then(|e| e.error_class)).unwrap_or_else(|| "failure".into()))
        } else {
            None
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::Format;
    use super::super::test_support::*;

    /// A success record in the shape litellm 1.x's generic API logger posts.
    pub const SUCCESS: &str = r#"{"id":"chatcmpl-7f3a","trace_id":"b1c2","call_type":"acompletion","stream":true,"response_cost":0.00042,"status":"success","custom_llm_provider":"openai","total_tokens":30,"prompt_tokens":10,"completion_tokens":20,"startTime":1780315200.5,"endTime":1780315201.25,"completionStartTime":1780315200.75,"response_time":0.75,"model":"openai/gpt-4o","model_id":"abc","model_group":"gpt-4o","api_base":"https://api.openai.com","metadata":{"user_api_key_hash":"88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b","user_api_key_alias":"ci-key","user_api_key_team_id":"team-123","user_api_key_team_alias":"search-team","user_api_key_request_route":"/chat/completions","spend_logs_metadata":null},"cache_hit":false,"request_tags":["summarize"],"end_user":"","messages":[{"role":"user","content":"hi"}],"response":{"id":"chatcmpl-7f3a","choices":[{"finish_reason":"length","index":0,"message":{"content":"hello","role":"assistant"}}],"usage":{"prompt_tokens":10,"completion_tokens":20}},"hidden_params":{"model_id":"abc","api_base":"https://api.openai.com","response_cost":0.00042},"model_parameters":{},"error_str":null,"error_information":{"error_code":"","error_class":"","llm_provider":""}}"#;

    /// A failed call: zero tokens and cost, a UUID id, error code as a string.
    pub const FAILURE: &str = r#"{"id":"5b0d3c6e-2f8c-4b8e-9a51-1f1d2c3b4a5e","call_type":"acompletion","stream":false,"response_cost":0.0,"status":"failure","custom_llm_provider":"openai","total_tokens":0,"prompt_tokens":0,"completion_tokens":0,"startTime":1780315300.0,"endTime":1780315300.2,"completionStartTime":1780315300.2,"model":"openai/gpt-4o","model_group":"gpt-4o","metadata":{"user_api_key_alias":"ci-key"},"request_tags":[],"response":null,"error_str":"litellm.InternalServerError: boom\nTraceback ...","error_information":{"error_code":"500","error_class":"InternalServerError","llm_provider":"openai","traceback":"Traceback (most recent call last): ..."}}"#;

    #[test]
    fn success_record() {
        let e = usage(Format::LiteLlm, SUCCESS);
        assert_eq!(e.id, "chatcmpl-7f3a");
        assert_eq!(e.ts_ms, 1_780_315_200_500);
        assert_eq!(e.model, "gpt-4o");
        assert_eq!(e.resolved_model.as_deref(), Some("openai/gpt-4o"));
        assert_eq!(e.provider.as_deref(), Some("openai"));
        assert_eq!(e.route.as_deref(), Some("summarize"));
        assert_eq!((e.prompt_tokens, e.completion_tokens), (10, 20));
        assert_eq!(e.cost_usd, Some(0.00042));
        assert_eq!(e.latency_ms, Some(750));
        assert_eq!(e.ttft_ms, Some(250));
        assert_eq!(e.status, Some(200));
        assert_eq!(e.finish_reason.as_deref(), Some("length"));
        assert!(e.is_truncated());
        let tenant = e.tenant.unwrap();
        assert!(
            tenant.starts_with("id-") && !tenant.contains("search"),
            "{tenant}"
        );
    }

    #[test]
    fn failure_record() {
        let e = usage(Format::LiteLlm, FAILURE);
        assert_eq!(e.status, Some(500));
        assert_eq!(e.error_type.as_deref(), Some("InternalServerError"));
        assert_eq!((e.prompt_tokens, e.completion_tokens), (0, 0));
        assert_eq!(e.route, None);
        assert!(e.is_error());
    }

    #[test]
    fn record_without_model_is_rejected() {
        let raw = r#"{"id":"x","startTime":1780315200.0,"status":"success"}"#;
        assert!(
            decode(Format::LiteLlm, raw)
                .unwrap_err()
                .0
                .contains("model")
        );
    }

    #[test]
    fn a_blank_id_is_rejected_and_a_blank_tag_names_no_route() {
        let blank = SUCCESS.replacen(r#""id":"chatcmpl-7f3a""#, r#""id":"  ""#, 1);
        assert!(
            decode(Format::LiteLlm, &blank)
                .unwrap_err()
                .0
                .contains("id")
        );
        let tags = SUCCESS.replace(r#"["summarize"]"#, r#"["  ", " extract "]"#);
        assert_eq!(
            usage(Format::LiteLlm, &tags).route.as_deref(),
            Some("extract")
        );
        let none = SUCCESS.replace(r#"["summarize"]"#, r#"[" "]"#);
        assert_eq!(
            usage(Format::LiteLlm, &none).route.as_deref(),
            Some("/chat/completions")
        );
    }
}
