//! Posting JSON over HTTP: the generic webhook notifier, and the one request path every
//! HTTP channel shares. Turns every answer into sent, retry (with `Retry-After` on
//! 429) or give up, including the refusals chat services put inside a 200.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::Value;

use super::{SendError, chain};
use crate::domain::ExposeSecret;
use crate::domain::{Message, Secret};

/// The generic webhook's body: the message itself (`title`, `tier`, `alerts` as alert
/// lines, `text`).
pub fn render(m: &Message) -> Value {
    serde_json::to_value(m).expect("a message serializes")
}

/// The header carrying [`idempotency_key`] (IETF draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The generic webhook's `Idempotency-Key` for the outbox row `id` enqueued at
/// `created_ms`: the same at every attempt of the row and from every replica (both are
/// stored in the row), so a receiver that remembers the keys it accepted can drop the
/// one resend the outbox's delivery window allows (`store::outbox`). The id alone is
/// unique within a store; the enqueue time tells a row apart from another store's (or
/// a recreated one's) that reuses the id. Nothing secret, no part of the URL: receivers
/// log it. A quoted string, the draft's Structured Field form.
pub fn idempotency_key(id: i64, created_ms: i64) -> String {
    format!("\"driftwarden-{created_ms}-{id}\"")
}

/// Longest part of an error answer's body kept in `last_error`.
const MAX_BODY_SNIPPET: usize = 200;

/// POST `body` to `url`; `Ok` only on 2xx.
pub async fn post_json(
    client: &reqwest::Client,
    url: &Secret,
    body: &Value,
) -> Result<(), SendError> {
    post_json_answered(client, url, body, |_| Ok(())).await
}

/// POST `body` to `url`; on 2xx, `answer` reads the response body, for the chat
/// services that say "refused" inside a 200 (Feishu, DingTalk, WeCom, Telegram).
pub async fn post_json_answered(
    client: &reqwest::Client,
    url: &Secret,
    body: &Value,
    answer: impl FnOnce(&str) -> Result<(), SendError>,
) -> Result<(), SendError> {
    post(client.post(url.expose_secret()).json(body), answer).await
}

/// Send `request`; turn its answer into sent, retry or give up.
pub async fn post(
    request: reqwest::RequestBuilder,
    answer: impl FnOnce(&str) -> Result<(), SendError>,
) -> Result<(), SendError> {
    let response = request
        .send()
        .await
        .map_err(|e| SendError::Transient(chain(&e.without_url())))?;
    let status = response.status();
    let header_retry = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, crate::clock::now_ms()));
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        return answer(&text);
    }
    let snippet: String = text.trim().chars().take(MAX_BODY_SNIPPET).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {}: {snippet}", status.as_u16())
    };
    Err(match status {
        StatusCode::TOO_MANY_REQUESTS => SendError::RateLimited {
            message,
            // Telegram says it in the body: `{"parameters": {"retry_after": 35}}`.
            retry_after: header_retry.or_else(|| {
                serde_json::from_str::<Value>(&text)
                    .ok()?
                    .pointer("/parameters/retry_after")?
                    .as_u64()
                    .map(Duration::from_secs)
            }),
        },
        // A timeout or "too early" may pass; any other 4xx means the request or the
        // URL is wrong, and sending the same request again cannot help.
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY => SendError::Transient(message),
        s if s.is_client_error() => SendError::Permanent(message),
        _ => SendError::Transient(message),
    })
}

/// How a chat service that answers 200 with an error code in the body said no.
pub struct Refusals {
    /// The JSON field holding the code (`errcode`, `code`); 0 means accepted.
    pub code: &'static str,
    /// The field holding its text.
    pub text: &'static str,
    /// Codes meaning "too many messages", with how long the service throttles.
    pub rate_limited: &'static [(i64, Duration)],
    /// Codes that may pass ("system busy").
    pub transient: &'static [i64],
}

impl Refusals {
    /// Read a 2xx answer: a code other than 0 is a refusal (a body without the code
    /// field, or not JSON, counts as accepted: the service took the request).
    pub fn check(&self, body: &str) -> Result<(), SendError> {
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            return Ok(());
        };
        let code = match v.get(self.code).and_then(Value::as_i64) {
            None | Some(0) => return Ok(()),
            Some(c) => c,
        };
        let text: String = v
            .get(self.text)
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(MAX_BODY_SNIPPET)
            .collect();
        let message = format!("{} {code}: {text}", self.code);
        if let Some((_, wait)) = self.rate_limited.iter().find(|(c, _)| *c == code) {
            return Err(SendError::RateLimited {
                message,
                retry_after: Some(*wait),
            });
        }
        Err(match self.transient.contains(&code) {
            true => SendError::Transient(message),
            false => SendError::Permanent(message),
        })
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = (at.timestamp_millis() - now_ms).max(0);
    Some(Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERRCODE: Refusals = Refusals {
        code: "errcode",
        text: "errmsg",
        rate_limited: &[(45009, Duration::from_secs(60))],
        transient: &[-1],
    };

    #[test]
    fn a_refusal_inside_a_200_is_read_by_its_code() {
        assert_eq!(ERRCODE.check(r#"{"errcode":0,"errmsg":"ok"}"#), Ok(()));
        assert_eq!(ERRCODE.check("ok"), Ok(()));
        assert_eq!(
            ERRCODE.check(r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
            Err(SendError::RateLimited {
                message: "errcode 45009: api freq out of limit".into(),
                retry_after: Some(Duration::from_secs(60)),
            })
        );
        assert!(matches!(
            ERRCODE.check(r#"{"errcode":-1,"errmsg":"system busy"}"#),
            Err(SendError::Transient(_))
        ));
        assert_eq!(
            ERRCODE.check(r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#),
            Err(SendError::Permanent(
                "errcode 93000: invalid webhook url".into()
            ))
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after(" 7 ", 0), Some(Duration::from_secs(7)));
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
