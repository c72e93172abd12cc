//! DingTalk robots: a `markdown` message, signed when the robot has a secret
//! (`timestamp` in milliseconds and `sign` = base64(HMAC-SHA256 keyed by the secret
//! over `"{timestamp}\n{secret}"`), URL-encoded in the query). A robot takes 20
//! messages a minute and is throttled for 10 minutes beyond that, so the worker paces
//! it to one message every 3 seconds. Refusals come inside a 200 (`errcode`).

use std::time::Duration;

use serde_json::{Value, json};

use super::message::{bytes, cut, headline, markdown};
use super::sign;
use super::webhook::Refusals;
use crate::domain::Message;

/// Bytes of the markdown text (DingTalk refuses bodies near 20,000 bytes).
const MAX_TEXT: usize = 18_000;

/// How DingTalk refuses inside a 200 (130101: "send too fast", throttled for 10 min).
pub const REFUSALS: Refusals = Refusals {
    code: "errcode",
    text: "errmsg",
    rate_limited: &[(130101, Duration::from_secs(600))],
    transient: &[-1],
};

/// The robot's URL with `timestamp` and `sign` added for `secret` at `now_ms`.
pub fn signed_url(webhook_url: &str, secret: Option<&str>, now_ms: i64) -> String {
    let Some(secret) = secret else {
        return webhook_url.to_string();
    };
    match reqwest::Url::parse(webhook_url) {
        Ok(mut url) => {
            url.query_pairs_mut()
                .append_pair("timestamp", &now_ms.to_string())
                .append_pair("sign", &sign::dingtalk(now_ms, secret));
            url.to_string()
        }
        // Checked when the config was loaded.
        Err(_) => webhook_url.to_string(),
    }
}

/// The JSON body for a DingTalk robot.
pub fn render(m: &Message, dashboard_url: Option<&str>) -> Value {
    json!({
        "msgtype": "markdown",
        "markdown": {
            // Shown in the chat list and the notification.
            "title": cut(&headline(m), 60),
            "text": markdown(m, MAX_TEXT, bytes, dashboard_url),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::message_with;

    #[test]
    fn the_signature_goes_in_the_query_url_encoded() {
        let url = signed_url(
            "https://oapi.dingtalk.com/robot/send?access_token=T0K",
            Some("SECx"),
            1_599_360_473_000,
        );
        let parsed = reqwest::Url::parse(&url).unwrap();
        let q: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q[0], ("access_token".into(), "T0K".into()));
        assert_eq!(q[1], ("timestamp".into(), "1599360473000".into()));
        assert_eq!(q[2].1, sign::dingtalk(1_599_360_473_000, "SECx"));
        assert!(!url.contains('+') && !url.contains("=="), "{url}");
        assert_eq!(
            signed_url("https://h/robot/send?access_token=T", None, 5),
            "https://h/robot/send?access_token=T"
        );
    }

    #[test]
    fn the_markdown_fits() {
        let body = render(&message_with(90, &"字".repeat(300)), None);
        let text = body["markdown"]["text"].as_str().unwrap();
        assert!(text.len() <= MAX_TEXT);
        assert!(
            text.starts_with("**[PAGE] Cost drift on gpt-4o**"),
            "{text}"
        );
        assert!(
            text.contains("more alerts (see `driftwarden alerts`"),
            "{text}"
        );
        assert_eq!(body["msgtype"], "markdown");
    }
}
