//! Notification grouping per tier and channel: the first alert of a quiet group
//! waits `group_wait` for company, later ones go out at most every
//! `group_interval`, so a burst becomes one message instead of fifty.
//!
//! Each line carries the id of the alert transition it announces, so the stage can
//! mark it sent to the outbox (see `notify_pending` in `store::alerts`).

use std::collections::BTreeMap;

use crate::domain::{Alert, AlertEvent, Message, scope_label};

/// The lines waiting for one (tier, channel) message.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Group {
    /// (transition id, line), in arrival order.
    alerts: Vec<(i64, Alert)>,
    /// When its first waiting line came, ms.
    opened_ms: i64,
    due_ms: i64,
    last_flush_ms: Option<i64>,
}

/// A group's message, due now.
#[derive(Debug)]
pub struct Flushed {
    /// The channel to send it to.
    pub channel: String,
    /// The message, one or more alert lines.
    pub message: Message,
    /// The transitions its lines announce.
    pub transitions: Vec<i64>,
}

/// Open notification groups, keyed by (tier, channel).
#[derive(Debug)]
pub struct Grouper {
    wait_ms: i64,
    interval_ms: i64,
    groups: BTreeMap<(String, String), Group>,
}

impl Grouper {
    /// Groups that wait `wait_ms` before their first message and `interval_ms` between messages.
    pub fn new(wait_ms: i64, interval_ms: i64) -> Grouper {
        Grouper {
            wait_ms,
            interval_ms,
            groups: BTreeMap::new(),
        }
    }

    /// Queue an alert line, announcing transition `transition`, for `channel` under `tier`.
    pub fn add(&mut self, tier: &str, channel: &str, transition: i64, alert: Alert, now_ms: i64) {
        let group = self
            .groups
            .entry((tier.to_string(), channel.to_string()))
            .or_default();
        if group.alerts.is_empty() {
            let after_last = group
                .last_flush_ms
                .map_or(i64::MIN, |t| t + self.interval_ms);
            group.opened_ms = now_ms;
            group.due_ms = (now_ms + self.wait_ms).max(after_last);
        }
        group.alerts.push((transition, alert));
    }

    /// The open groups, for a snapshot.
    pub fn groups(&self) -> Vec<((String, String), Group)> {
        self.groups
            .iter()
            .map(|(k, g)| (k.clone(), g.clone()))
            .collect()
    }

    /// Replace the groups with a snapshot's, due as this grouper's wait and
    /// interval say (the configuration may have changed since).
    pub fn restore(&mut self, groups: Vec<((String, String), Group)>) {
        self.groups = groups.into_iter().collect();
        for g in self.groups.values_mut() {
            let after_last = g.last_flush_ms.map_or(i64::MIN, |t| t + self.interval_ms);
            g.due_ms = (g.opened_ms + self.wait_ms).max(after_last);
        }
    }

    /// Drop the waiting lines of the groups `keep` refuses; their (channel,
    /// transition) pairs.
    pub fn drop_unless(&mut self, keep: impl Fn(&str, &str) -> bool) -> Vec<(String, i64)> {
        let mut dropped = Vec::new();
        for ((tier, channel), g) in &mut self.groups {
            if !keep(tier, channel) {
                dropped.extend(g.alerts.drain(..).map(|(t, _)| (channel.clone(), t)));
            }
        }
        dropped
    }

    /// When the next group with lines is due, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.groups
            .values()
            .filter(|g| !g.alerts.is_empty())
            .map(|g| g.due_ms)
            .min()
    }

    /// Messages due at `now_ms`.
    pub fn flush(&mut self, now_ms: i64) -> Vec<Flushed> {
        let mut out = Vec::new();
        for ((tier, channel), group) in &mut self.groups {
            if group.alerts.is_empty() || group.due_ms > now_ms {
                continue;
            }
            let (transitions, alerts) = std::mem::take(&mut group.alerts).into_iter().unzip();
            group.last_flush_ms = Some(now_ms);
            out.push(Flushed {
                channel: channel.clone(),
                message: message(tier, alerts),
                transitions,
            });
        }
        out
    }
}

fn message(tier: &str, alerts: Vec<Alert>) -> Message {
    let resolved = alerts
        .iter()
        .filter(|a| a.event == AlertEvent::Resolved)
        .count();
    let firing = alerts.len() - resolved;
    let title = match (alerts.as_slice(), firing, resolved) {
        ([one], _, _) => format!(
            "{} {} on {}",
            match one.event {
                AlertEvent::Firing => "FIRING",
                AlertEvent::Updated => "UPDATED",
                AlertEvent::Reopened => "REOPENED",
                AlertEvent::Resolved => "RESOLVED",
            },
            one.kind.as_str(),
            scope_label(&one.scope)
        ),
        (_, f, 0) => format!("{f} incidents firing"),
        (_, 0, r) => format!("{r} incidents resolved"),
        (_, f, r) => format!("{f} firing, {r} resolved"),
    };
    Message {
        title: format!("[{tier}] {title}"),
        tier: Some(tier.to_string()),
        alerts,
        text: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, Lane};

    fn alert(rule: &str) -> Alert {
        Alert {
            event: AlertEvent::Firing,
            members: Vec::new(),
            reopens: 0,
            incident: None,
            rule: rule.into(),
            lane: Lane::Cost,
            kind: Kind::CostDrift,
            scope: Default::default(),
            at_ms: 0,
            tier: "page".into(),
            tier_rank: 1,
            summary: String::new(),
            evidence: serde_json::json!({}),
        }
    }

    #[test]
    fn a_burst_waits_then_goes_as_one_message_and_later_ones_respect_the_interval() {
        let mut g = Grouper::new(30_000, 300_000);
        g.add("page", "slack", 7, alert("a"), 0);
        g.add("page", "slack", 8, alert("b"), 10_000);
        assert!(g.flush(29_000).is_empty());
        let sent = g.flush(30_000);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].message.alerts.len(), 2);
        assert_eq!(sent[0].message.title, "[page] 2 incidents firing");
        assert_eq!(sent[0].transitions, [7, 8]);
        g.add("page", "slack", 9, alert("c"), 40_000);
        assert!(g.flush(100_000).is_empty(), "within the group interval");
        assert_eq!(g.flush(330_000).len(), 1);
    }

    #[test]
    fn groups_are_per_tier_and_channel() {
        let mut g = Grouper::new(0, 0);
        g.add("page", "slack", 1, alert("a"), 0);
        g.add("page", "email", 1, alert("a"), 0);
        g.add("digest", "email", 2, alert("b"), 0);
        assert_eq!(g.flush(0).len(), 3);
    }
}
