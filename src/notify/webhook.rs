//! Posting JSON over HTTP: the generic webhook notifier, and the one request path the
//! Slack notifier shares. Turns every answer into sent, retry (with `Retry-After` on
//! 429) or give up.

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

/// Longest part of an error answer's body kept in `last_error`.
const MAX_BODY_SNIPPET: usize = 200;

/// POST `body` to `url`; `Ok` only on 2xx.
pub async fn post_json(
    client: &reqwest::Client,
    url: &Secret,
    body: &Value,
) -> Result<(), SendError> {
    let response = client
        .post(url.expose_secret())
        .json(body)
        .send()
        .await
        .map_err(|e| SendError::Transient(chain(&e.without_url())))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, crate::clock::now_ms()));
    let text = response.text().await.unwrap_or_default();
    let snippet: String = text.trim().chars().take(MAX_BODY_SNIPPET).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {}: {snippet}", status.as_u16())
    };
    Err(match status {
        StatusCode::TOO_MANY_REQUESTS => SendError::RateLimited {
            message,
            retry_after,
        },
        // A timeout or "too early" may pass; any other 4xx means the request or the
        // URL is wrong, and sending the same request again cannot help.
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY => SendError::Transient(message),
        s if s.is_client_error() => SendError::Permanent(message),
        _ => SendError::Transient(message),
    })
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
