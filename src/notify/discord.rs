//! Discord webhooks: the title as `content`, one embed per alert, within Discord's
//! documented limits (content 2000 characters, 10 embeds, 6000 characters over all
//! embeds, title 256, description 4096, 25 fields of 1024). Nothing in an alert may
//! ping anyone: `allowed_mentions` parses no mentions.

use serde_json::{Value, json};

use super::message::{cut, facts, more_alerts};
use crate::domain::Message;

/// Characters of `content`.
const MAX_CONTENT: usize = 2000;
/// Embeds in one message.
const MAX_EMBEDS: usize = 10;
/// Characters over all embeds' titles, descriptions and fields.
const MAX_EMBED_TOTAL: usize = 6000;
/// Characters one alert's embed may use, so ten fit in the total.
const PER_EMBED: usize = MAX_EMBED_TOTAL / MAX_EMBEDS - 20;
/// Embed colours: firing red, resolved green.
const FIRING: u32 = 0xD0_30_30;
const RESOLVED: u32 = 0x2E_A0_43;

/// The JSON body for a Discord webhook.
pub fn render(m: &Message, dashboard_url: Option<&str>) -> Value {
    let mut content = match &m.tier {
        Some(tier) => format!("**[{}] {}**", tier.to_uppercase(), m.title),
        None => format!("**{}**", m.title),
    };
    if !m.text.is_empty() {
        content.push_str(&format!("\n{}", m.text.trim_end()));
    }
    let shown = m.alerts.len().min(MAX_EMBEDS);
    if m.alerts.len() > shown {
        content.push('\n');
        content.push_str(&more_alerts(m.alerts.len() - shown, dashboard_url));
    }
    let embeds: Vec<Value> = m.alerts[..shown]
        .iter()
        .map(|alert| {
            let f = facts(alert);
            let title = cut(&format!("{} {} on {}", f.event, f.what, f.scope), 200);
            let mut description = f.summary.clone();
            for (label, value) in [("Observed", &f.observed), ("Baseline", &f.baseline)] {
                if let Some(v) = value {
                    description.push_str(&format!("\n**{label}:** {v}"));
                }
            }
            if !f.impact.is_empty() {
                description.push_str(&format!("\n**Blast radius:** {}", f.impact.join(", ")));
            }
            if let Some(why) = &f.why_tier {
                description.push_str(&format!("\n**Tier:** {why}"));
            }
            let room = PER_EMBED.saturating_sub(title.chars().count() + f.at.len());
            json!({
                "title": title,
                "description": cut(&description, room),
                "color": if f.event == "RESOLVED" { RESOLVED } else { FIRING },
                "timestamp": f.at,
            })
        })
        .collect();
    json!({
        "content": cut(&content, MAX_CONTENT),
        "embeds": embeds,
        "allowed_mentions": {"parse": []},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::message_with;

    fn embed_chars(body: &Value) -> usize {
        body["embeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["title"].as_str().unwrap().chars().count()
                    + e["description"].as_str().unwrap().chars().count()
            })
            .sum()
    }

    #[test]
    fn a_message_fits_discords_limits_however_many_and_long_its_alerts() {
        let m = message_with(25, &"word ".repeat(2_000));
        let body = render(&m, None);
        assert!(body["content"].as_str().unwrap().chars().count() <= MAX_CONTENT);
        assert!(
            body["content"]
                .as_str()
                .unwrap()
                .contains("…and 15 more alerts")
        );
        assert_eq!(body["embeds"].as_array().unwrap().len(), MAX_EMBEDS);
        assert!(
            embed_chars(&body) <= MAX_EMBED_TOTAL,
            "{}",
            embed_chars(&body)
        );
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn an_alert_is_an_embed_with_its_summary_and_colour() {
        let m = message_with(1, "@everyone cost per request rose 40%");
        let body = render(&m, None);
        let embed = &body["embeds"][0];
        assert!(
            embed["title"].as_str().unwrap().starts_with("FIRING"),
            "{embed}"
        );
        assert!(
            embed["description"]
                .as_str()
                .unwrap()
                .starts_with("@everyone cost per request rose 40%"),
            "{embed}"
        );
        assert_eq!(embed["color"], FIRING);
        assert!(body["content"].as_str().unwrap().starts_with("**[PAGE] "));
    }
}
