//! Microsoft Teams through a Workflows webhook ("Post to a channel when a webhook
//! request is received"): a message with one Adaptive Card attachment. Teams takes at
//! most 28 KB per message; alerts that would not fit are counted in a last line that
//! points to the dashboard.

use serde_json::{Value, json};

use super::message::{cut, facts, headline, more_alerts};
use crate::domain::Message;

/// Bytes of the whole JSON body, under Teams' 28 KB per message.
const MAX_BODY: usize = 26_000;
/// Characters of one text block.
const MAX_TEXT: usize = 4_000;

/// The JSON body for a Teams Workflows webhook.
pub fn render(m: &Message, dashboard_url: Option<&str>) -> Value {
    let resolved = !m.alerts.is_empty() && m.alerts.iter().all(|a| facts(a).event == "RESOLVED");
    let mut body = vec![json!({
        "type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": true,
        "color": if resolved { "Good" } else if m.alerts.is_empty() { "Default" } else { "Attention" },
        "text": cut(&headline(m), 300),
    })];
    if !m.text.is_empty() {
        body.push(
            json!({"type": "TextBlock", "wrap": true, "text": cut(m.text.trim_end(), MAX_TEXT)}),
        );
    }
    let mut size = card(&body, dashboard_url).to_string().len();
    let reserve = more_alerts(m.alerts.len(), dashboard_url).len() + 100;
    for (shown, alert) in m.alerts.iter().enumerate() {
        let blocks = alert_blocks(alert);
        let grow: usize = blocks.iter().map(|b| b.to_string().len() + 1).sum();
        let last = shown + 1 == m.alerts.len();
        if shown > 0 && size + grow + if last { 0 } else { reserve } > MAX_BODY {
            body.push(
                json!({"type": "TextBlock", "wrap": true, "isSubtle": true, "separator": true,
                "text": more_alerts(m.alerts.len() - shown, dashboard_url)}),
            );
            break;
        }
        size += grow;
        body.extend(blocks);
    }
    card(&body, dashboard_url)
}

fn alert_blocks(alert: &crate::domain::Alert) -> Vec<Value> {
    let f = facts(alert);
    let mut facts_set = Vec::new();
    let mut fact = |title: &str, value: String| {
        facts_set.push(json!({"title": title, "value": cut(&value, 1_000)}));
    };
    if let Some(o) = &f.observed {
        fact("Observed", o.clone());
    }
    if let Some(b) = &f.baseline {
        fact("Baseline", b.clone());
    }
    if !f.impact.is_empty() {
        fact("Blast radius", f.impact.join(", "));
    }
    if let Some(why) = &f.why_tier {
        fact("Tier", why.clone());
    }
    for c in &f.changes {
        fact("Change nearby", c.clone());
    }
    for m in &f.members {
        fact("Consequence", m.clone());
    }
    fact("At", f.at.clone());
    vec![
        json!({"type": "TextBlock", "wrap": true, "weight": "Bolder", "separator": true,
            "color": if f.event == "RESOLVED" { "Good" } else { "Attention" },
            "text": cut(&format!("{} {} on {}", f.event, f.what, f.scope), 500)}),
        json!({"type": "TextBlock", "wrap": true, "text": cut(&f.summary, MAX_TEXT)}),
        json!({"type": "FactSet", "facts": facts_set}),
    ]
}

/// The Workflows message around an Adaptive Card with `body`.
fn card(body: &[Value], dashboard_url: Option<&str>) -> Value {
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    });
    if let Some(url) = dashboard_url {
        content["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Open the dashboard", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::message_with;

    #[test]
    fn a_message_is_one_adaptive_card_within_teams_size_limit() {
        let m = message_with(60, &"long words ".repeat(300));
        let body = render(&m, Some("https://dw.example/"));
        assert!(
            body.to_string().len() <= 28 * 1024,
            "{}",
            body.to_string().len()
        );
        let attachment = &body["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        let blocks = card["body"].as_array().unwrap();
        assert_eq!(blocks[0]["text"], "[PAGE] Cost drift on gpt-4o");
        let last = blocks.last().unwrap()["text"].as_str().unwrap();
        assert!(
            last.starts_with("…and ") && last.ends_with("more alerts: https://dw.example/"),
            "{last}"
        );
        assert_eq!(card["actions"][0]["url"], "https://dw.example/");
    }

    #[test]
    fn every_alert_shows_when_they_fit() {
        let body = render(&message_with(3, "cost up"), None);
        let blocks = body["attachments"][0]["content"]["body"]
            .as_array()
            .unwrap();
        assert_eq!(blocks.len(), 1 + 3 * 3);
        assert_eq!(blocks[3]["type"], "FactSet");
        assert!(body["attachments"][0]["content"].get("actions").is_none());
    }
}
