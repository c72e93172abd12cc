//! Telegram bots: `sendMessage` to one chat, as HTML (the headline bold, everything
//! else escaped text). Telegram takes 4096 characters after entities are parsed;
//! alerts that would not fit are counted in a last line that points to the dashboard.

use serde_json::{Value, json};

use super::message::{alert_text, chars, facts, fit, headline};
use crate::domain::Message;

/// Telegram's Bot API.
pub const API_URL: &str = "https://api.telegram.org";
/// Characters of a message's text after entity parsing.
const MAX_TEXT: usize = 4096;

/// The `sendMessage` URL of bot `token` under `api_url`.
pub fn send_url(api_url: &str, token: &str) -> String {
    format!("{}/bot{token}/sendMessage", api_url.trim_end_matches('/'))
}

/// The JSON body of `sendMessage` for `chat_id`.
pub fn render(m: &Message, chat_id: &str, dashboard_url: Option<&str>) -> Value {
    let head = headline(m);
    let mut first = head.clone();
    if !m.text.is_empty() {
        first.push_str(&format!("\n\n{}", m.text.trim_end()));
    }
    // An informational message is all head; an alert message keeps room for its alerts.
    let room = if m.alerts.is_empty() {
        MAX_TEXT
    } else {
        MAX_TEXT / 2
    };
    let plain = fit(
        &super::message::cut(&first, room),
        m.alerts.iter().map(|a| alert_text(&facts(a))),
        MAX_TEXT,
        chars,
        dashboard_url,
    );
    // The headline is the plain text's first line; only it is bold. Escaping does not
    // count against the limit: Telegram counts the text after parsing.
    let text = match plain.split_once('\n') {
        Some((h, rest)) => format!("<b>{}</b>\n{}", escape(h), escape(rest)),
        None => format!("<b>{}</b>", escape(&plain)),
    };
    json!({
        "chat_id": chat_id,
        "text": text,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": true},
    })
}

/// Telegram's HTML mode needs `<`, `>` and `&` as entities.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Read a 2xx answer: `{"ok": false}` is a refusal.
pub fn check(body: &str) -> Result<(), super::SendError> {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match v.get("ok").and_then(Value::as_bool) {
        Some(false) => Err(super::SendError::Permanent(format!(
            "Telegram refused: {}",
            v.get("description").and_then(Value::as_str).unwrap_or("")
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::message_with;

    /// The text as Telegram counts it: entities parsed.
    fn parsed(text: &str) -> String {
        text.replace("<b>", "")
            .replace("</b>", "")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    #[test]
    fn the_text_fits_telegrams_limit_and_escapes_html() {
        let m = message_with(40, "cost <up> & more ");
        let body = render(&m, "-100123", Some("https://dw.example/"));
        let text = body["text"].as_str().unwrap();
        assert!(
            text.starts_with("<b>[PAGE] Cost drift on gpt-4o</b>\n"),
            "{text}"
        );
        assert!(text.contains("cost &lt;up&gt; &amp; more"), "{text}");
        assert!(parsed(text).chars().count() <= MAX_TEXT);
        assert!(text.contains("more alerts: https://dw.example/"), "{text}");
        assert_eq!(body["chat_id"], "-100123");
        assert_eq!(body["parse_mode"], "HTML");
    }

    #[test]
    fn one_huge_alert_is_cut_not_dropped() {
        let m = message_with(1, &"word ".repeat(3000));
        let text = render(&m, "1", None)["text"].as_str().unwrap().to_string();
        assert!(parsed(&text).chars().count() <= MAX_TEXT);
        assert!(text.contains("FIRING cost-per-request"), "{text}");
    }

    #[test]
    fn a_refusal_in_a_200_is_permanent() {
        assert!(check(r#"{"ok":true,"result":{}}"#).is_ok());
        assert!(check(r#"{"ok":false,"description":"Bad Request: chat not found"}"#).is_err());
    }
}
