//! Feishu/Lark custom bots: an interactive card (a coloured header and the alerts as
//! `lark_md`), signed when the bot has a secret (timestamp in seconds and
//! `sign` = base64(HMAC-SHA256 keyed by `"{timestamp}\n{secret}"` over nothing), in the
//! body). Feishu takes at most 20 KB per request and 100 messages a minute (5 a
//! second) per bot, and answers refusals inside a 200 (`code` other than 0).

use std::time::Duration;

use serde_json::{Value, json};

use super::message::{bytes, facts, headline, markdown};
use super::sign;
use super::webhook::Refusals;
use crate::domain::Message;

/// Bytes of the card's text, so the body stays under Feishu's 20 KB.
const MAX_TEXT: usize = 18_000;

/// How Feishu refuses inside a 200 (11232: "frequency limited").
pub const REFUSALS: Refusals = Refusals {
    code: "code",
    text: "msg",
    rate_limited: &[(11232, Duration::from_secs(60))],
    transient: &[],
};

/// The JSON body for a Feishu custom bot, signed with `secret` at `now_s` if given.
pub fn render(m: &Message, secret: Option<&str>, now_s: i64, dashboard_url: Option<&str>) -> Value {
    let template = match m.alerts.iter().map(|a| facts(a).event).collect::<Vec<_>>() {
        events if events.is_empty() => "blue",
        events if events.iter().all(|e| *e == "RESOLVED") => "green",
        _ => "red",
    };
    let mut text = markdown(m, MAX_TEXT, bytes, dashboard_url);
    // The headline is the card's header; the text goes on after it.
    if let Some(rest) = text.split_once("\n\n").map(|(_, rest)| rest.to_string()) {
        text = rest;
    } else {
        text.clear();
    }
    let mut elements = Vec::new();
    if !text.is_empty() {
        elements.push(json!({"tag": "div", "text": {"tag": "lark_md", "content": text}}));
    }
    if let Some(url) = dashboard_url {
        elements.push(json!({"tag": "action", "actions": [{"tag": "button",
            "text": {"tag": "plain_text", "content": "Open the dashboard"}, "type": "default", "url": url}]}));
    }
    let mut body = json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {"title": {"tag": "plain_text", "content": super::message::cut(&headline(m), 200)}, "template": template},
            "elements": elements,
        },
    });
    if let Some(secret) = secret {
        body["timestamp"] = json!(now_s.to_string());
        body["sign"] = json!(sign::feishu(now_s, secret));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::message_with;

    #[test]
    fn a_signed_card_within_feishus_limit() {
        let m = message_with(80, &"长".repeat(400));
        let body = render(
            &m,
            Some("s3cret"),
            1_599_360_473,
            Some("https://dw.example/"),
        );
        assert!(
            body.to_string().len() <= 20 * 1024,
            "{}",
            body.to_string().len()
        );
        assert_eq!(body["msg_type"], "interactive");
        assert_eq!(body["timestamp"], "1599360473");
        assert_eq!(body["sign"], sign::feishu(1_599_360_473, "s3cret"));
        assert_eq!(body["card"]["header"]["template"], "red");
        assert_eq!(
            body["card"]["header"]["title"]["content"],
            "[PAGE] Cost drift on gpt-4o"
        );
        let text = body["card"]["elements"][0]["text"]["content"]
            .as_str()
            .unwrap();
        assert!(text.starts_with("**FIRING** cost-per-request"), "{text}");
        assert!(text.contains("more alerts: https://dw.example/"), "{text}");
    }

    #[test]
    fn without_a_secret_nothing_is_signed() {
        let body = render(&message_with(1, "cost up"), None, 1, None);
        assert!(body.get("sign").is_none() && body.get("timestamp").is_none());
    }
}
