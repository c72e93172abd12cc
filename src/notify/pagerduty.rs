//! PagerDuty Events API v2: one event per alert of a message. An incident's
//! opening, escalation or reopening triggers; its resolve resolves. Every event of one
//! incident carries the same `dedup_key`, so PagerDuty keeps one alert per incident,
//! a retried trigger folds into it, and the resolve closes exactly it.
//!
//! Informational messages (digests, change-impact reports) page no one: PagerDuty
//! receives only alerts, and such a message counts as delivered.

use serde_json::{Map, Value, json};

use super::message::{Facts, cut, facts};
use crate::domain::{Alert, AlertEvent, Message};

/// PagerDuty's (US) events endpoint; EU accounts use `https://events.eu.pagerduty.com/v2/enqueue`.
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Characters of `payload.summary` (PagerDuty's limit).
const MAX_SUMMARY: usize = 1024;
/// Characters of one `custom_details` value, so an event stays far below 512 KB.
const MAX_DETAIL: usize = 4000;

/// The key PagerDuty deduplicates on: the incident's id, or for a line outside any
/// incident (a meta-alert) its rule, kind and scope.
pub fn dedup_key(alert: &Alert) -> String {
    match alert.incident {
        Some(id) => format!("driftwarden/incident/{id}"),
        None => {
            let f = facts(alert);
            let digest = blake3::hash(format!("{}\n{}", f.what, f.scope).as_bytes());
            format!("driftwarden/{}", &digest.to_hex()[..24])
        }
    }
}

/// PagerDuty's severity for a tier rank: the most severe tier is `critical`.
fn severity(rank: u8) -> &'static str {
    match rank {
        0 | 1 => "critical",
        2 => "error",
        3 => "warning",
        _ => "info",
    }
}

/// The events for `m`, in order; empty for an informational message.
pub fn events(m: &Message, routing_key: &str, dashboard_url: Option<&str>) -> Vec<Value> {
    m.alerts
        .iter()
        .map(|alert| event(alert, routing_key, dashboard_url))
        .collect()
}

fn event(alert: &Alert, routing_key: &str, dashboard_url: Option<&str>) -> Value {
    let dedup_key = dedup_key(alert);
    if alert.event == AlertEvent::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let f = facts(alert);
    let summary = format!(
        "[{}] {} on {}: {}",
        alert.tier.to_uppercase(),
        f.what,
        f.scope,
        f.summary
    );
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "driftwarden",
        "payload": {
            "summary": cut(&summary, MAX_SUMMARY),
            "source": "driftwarden",
            "severity": severity(alert.tier_rank),
            "timestamp": f.at,
            "component": alert.scope.get("model").map_or("global", String::as_str),
            "group": alert.rule,
            "class": alert.kind.as_str(),
            "custom_details": details(&f, alert),
        },
    });
    if let Some(url) = dashboard_url {
        body["client_url"] = json!(url);
        body["links"] = json!([{"href": url, "text": "driftwarden dashboard"}]);
    }
    body
}

fn details(f: &Facts, alert: &Alert) -> Value {
    let mut d = Map::new();
    let mut put = |k: &str, v: String| {
        d.insert(k.into(), Value::String(cut(&v, MAX_DETAIL)));
    };
    put("event", f.event.to_string());
    put("tier", alert.tier.clone());
    put("scope", f.scope.clone());
    if let Some(o) = &f.observed {
        put("observed", o.clone());
    }
    if let Some(b) = &f.baseline {
        put("baseline", b.clone());
    }
    if !f.impact.is_empty() {
        put("blast_radius", f.impact.join(", "));
    }
    if let Some(why) = &f.why_tier {
        put("why_this_tier", why.clone());
    }
    if !f.changes.is_empty() {
        put("changes_nearby", f.changes.join("\n"));
    }
    if !f.members.is_empty() {
        put("consequences", f.members.join("\n"));
    }
    if f.reopens > 0 {
        put("reopens", f.reopens.to_string());
    }
    Value::Object(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::{alert, message_with};

    #[test]
    fn an_incident_triggers_and_resolves_under_one_dedup_key() {
        let mut firing = alert();
        firing.incident = Some(41);
        let mut resolved = firing.clone();
        resolved.event = AlertEvent::Resolved;
        // Another member may head the incident by the time it resolves.
        resolved.scope = [("route".to_string(), "chat".to_string())].into();
        let m = |a: Alert| Message {
            alerts: vec![a],
            ..message_with(0, "")
        };
        let t = &events(&m(firing), "R0UT1NGKEY", Some("https://dw.example/"))[0];
        let r = &events(&m(resolved), "R0UT1NGKEY", None)[0];
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(t["dedup_key"], "driftwarden/incident/41");
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(t["payload"]["severity"], "critical");
        assert_eq!(t["payload"]["source"], "driftwarden");
        assert_eq!(t["client_url"], "https://dw.example/");
        assert!(
            t["payload"]["summary"]
                .as_str()
                .unwrap()
                .starts_with("[PAGE] cost-per-request · cost_drift on model=gpt-4o: cost per")
        );
        assert!(r.get("payload").is_none());
    }

    #[test]
    fn a_long_summary_is_cut_and_an_informational_message_sends_nothing() {
        let m = message_with(3, &"x".repeat(5000));
        let evs = events(&m, "k", None);
        assert_eq!(evs.len(), 3);
        let summary = evs[0]["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), MAX_SUMMARY);
        assert!(events(&message_with(0, ""), "k", None).is_empty());
        // Without an incident the key still names one alert, stably.
        assert_eq!(evs[0]["dedup_key"], evs[1]["dedup_key"]);
        assert!(
            evs[0]["dedup_key"]
                .as_str()
                .unwrap()
                .starts_with("driftwarden/")
        );
    }
}
