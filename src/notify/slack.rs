//! Slack incoming webhooks: a Block Kit message with a top-level `text` fallback
//! (what notifications, screen readers and old clients show).

use serde_json::{Value, json};

use super::message::{Facts, cut, facts, more_alerts, plain_text};
use crate::domain::Message;

/// Blocks Slack accepts in one message.
const MAX_BLOCKS: usize = 50;
/// Alerts shown as blocks; the fallback text still lists every one.
const MAX_ALERT_BLOCKS: usize = 10;
/// Characters in a section's text (Slack allows 3000).
const MAX_SECTION: usize = 2900;
/// Characters in the header (Slack allows 150).
const MAX_HEADER: usize = 150;
/// Characters in the fallback text (Slack truncates near 40000).
const MAX_FALLBACK: usize = 3900;

/// The JSON body for a Slack incoming webhook.
pub fn render(m: &Message, dashboard_url: Option<&str>) -> Value {
    // Slack refuses a header with empty text, and a refused message is never retried.
    let title = match m.title.trim() {
        "" => "driftwarden",
        t => t,
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": cut(title, MAX_HEADER), "emoji": true}
    })];
    let mut context = Vec::new();
    if let Some(tier) = &m.tier {
        context.push(format!("*Tier:* {}", escape(tier)));
    }
    if !m.alerts.is_empty() {
        context.push(format!("*Alerts:* {}", m.alerts.len()));
    }
    if !context.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context.join("  ·  ")}]}));
    }
    if !m.text.is_empty() {
        blocks.push(section(&escape(&m.text)));
    }
    for alert in m.alerts.iter().take(MAX_ALERT_BLOCKS) {
        blocks.push(json!({"type": "divider"}));
        blocks.extend(alert_blocks(&facts(alert)));
    }
    if m.alerts.len() > MAX_ALERT_BLOCKS {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": more_alerts(m.alerts.len() - MAX_ALERT_BLOCKS, dashboard_url)}]}));
    }
    blocks.truncate(MAX_BLOCKS);
    json!({"text": cut(&plain_text(m), MAX_FALLBACK), "blocks": blocks})
}

fn alert_blocks(f: &Facts) -> Vec<Value> {
    let mut head = format!(
        "*{}* {} on `{}`\n{}",
        f.event,
        escape(&f.what),
        escape(&f.scope),
        f.at
    );
    if !f.summary.is_empty() {
        head.push_str(&format!("\n{}", escape(&f.summary)));
    }
    let mut fields = Vec::new();
    let mut field = |label: &str, value: &str| {
        fields.push(
            json!({"type": "mrkdwn", "text": cut(&format!("*{label}*\n{}", escape(value)), 1900)}),
        );
    };
    if let Some(o) = &f.observed {
        field("Observed", o);
    }
    if let Some(b) = &f.baseline {
        field("Baseline", b);
    }
    if !f.impact.is_empty() {
        field("Blast radius", &f.impact.join("\n"));
    }
    if let Some(why) = &f.why_tier {
        field("Why this tier", why);
    }
    let mut section_block = section(&head);
    if !fields.is_empty() {
        section_block["fields"] = Value::Array(fields);
    }
    let mut out = vec![section_block];
    if !f.changes.is_empty() {
        let lines: Vec<String> = f
            .changes
            .iter()
            .map(|c| format!("• {}", escape(c)))
            .collect();
        out.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": cut(&format!("*Changes nearby*\n{}", lines.join("\n")), MAX_SECTION)}]}));
    }
    if !f.members.is_empty() || f.reopens > 0 {
        let mut lines: Vec<String> = f
            .members
            .iter()
            .map(|m| format!("• {}", escape(m)))
            .collect();
        if f.reopens > 0 {
            lines.push(format!("Reopened {} time(s)", f.reopens));
        }
        out.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": cut(&format!("*Same incident*\n{}", lines.join("\n")), MAX_SECTION)}]}));
    }
    out
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(text, MAX_SECTION)}})
}

/// Slack's mrkdwn treats these three as control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::alert;

    #[test]
    fn block_kit_shape_with_fallback() {
        let m = Message {
            title: "Cost drift on gpt-4o".into(),
            tier: Some("page".into()),
            alerts: vec![alert()],
            text: String::new(),
        };
        let v = render(&m, None);
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("[PAGE] Cost drift on gpt-4o"), "{text}");
        assert!(text.contains("observed 0.01235"), "{text}");
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let section = blocks.iter().find(|b| b["type"] == "section").unwrap();
        let head = section["text"]["text"].as_str().unwrap();
        assert!(head.contains("&lt;since&gt;"), "mrkdwn escaped: {head}");
        let fields: Vec<&str> = section["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert!(fields[0].starts_with("*Observed*"), "{fields:?}");
        assert!(fields[2].contains("$182.50/day spent"), "{fields:?}");
        let changes = blocks.last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap();
        assert!(changes.contains("prompt template v2"), "{changes}");
    }

    #[test]
    fn many_alerts_stay_within_slack_limits() {
        let m = Message {
            title: "x".repeat(400),
            tier: None,
            alerts: vec![alert(); 40],
            text: "digest".into(),
        };
        let v = render(&m, None);
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks.len() <= MAX_BLOCKS);
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= MAX_HEADER);
        assert!(v["text"].as_str().unwrap().chars().count() <= MAX_FALLBACK);
        let last = blocks.last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap();
        assert!(last.contains("30 more alerts"), "{last}");
        let untitled = render(
            &Message {
                title: " ".into(),
                ..m
            },
            None,
        );
        assert_eq!(untitled["blocks"][0]["text"]["text"], "driftwarden");
    }
}
