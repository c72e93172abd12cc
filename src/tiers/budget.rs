//! Anti-inflation: a daily notification budget per tier and channel. Beyond it,
//! alerts fold into one summary message per tier, channel and UTC day, and a
//! `tier_flooding` meta-alert names the rules that flooded.
//!
//! Pure: the clock is an argument, so replay on a data clock folds exactly as live
//! does. The counts live in memory; a start seeds the day's sent counts from the
//! messages already in the outbox (`seed`), so a restarting daemon does not send a
//! fresh budget's worth each time. The day's folded counts are not recovered.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use serde_json::json;

use super::Tiers;
use crate::domain::{Alert, AlertEvent, Kind, Lane, Tier};

const DAY_MS: i64 = 86_400_000;

/// Whether a notification may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the budget: send it.
    Send,
    /// Over the budget: do not send; it is counted into the day's summary.
    Fold,
}

/// One tier's channel that went over its budget on one UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct Flood {
    /// The tier's name.
    pub tier: String,
    /// The channel's name.
    pub channel: String,
    /// The UTC day.
    pub day: NaiveDate,
    /// The budget that was exceeded.
    pub budget: u32,
    /// Notifications folded (not sent) that day.
    pub folded: u32,
    /// Folded notifications per rule, most first (ties by name).
    pub rules: Vec<(String, u32)>,
}

/// One tier's channel's notifications of one UTC day.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct DayCount {
    sent: u32,
    folded: BTreeMap<String, u32>,
}

/// Notification counts per tier, channel and UTC day.
#[derive(Debug)]
pub struct Budget {
    limits: HashMap<String, u32>,
    counts: HashMap<(String, String, i64), DayCount>,
}

fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

impl Budget {
    /// The counts of the days not yet closed, for a snapshot.
    pub fn counts(&self) -> Vec<((String, String, i64), DayCount)> {
        let mut counts: Vec<_> = self
            .counts
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        counts
    }

    /// Replace the counts with a snapshot's.
    pub fn restore(&mut self, counts: Vec<((String, String, i64), DayCount)>) {
        self.counts = counts.into_iter().collect();
    }

    /// Empty counts, with each tier's `daily_budget` as its limit.
    pub fn new(tiers: &Tiers) -> Budget {
        Budget {
            limits: tiers
                .defs()
                .iter()
                .filter_map(|d| Some((d.tier.name.clone(), d.daily_budget?)))
                .collect(),
            counts: HashMap::new(),
        }
    }

    /// Count a notification of `rule` on `channel` for `tier` at `now_ms` (UTC day of
    /// `now_ms`). A tier with no budget always sends.
    pub fn admit(&mut self, tier: &str, channel: &str, rule: &str, now_ms: i64) -> Admission {
        let Some(&limit) = self.limits.get(tier) else {
            return Admission::Send;
        };
        let count = self
            .counts
            .entry((tier.to_string(), channel.to_string(), day_of(now_ms)))
            .or_default();
        if count.sent < limit {
            count.sent += 1;
            Admission::Send
        } else {
            *count.folded.entry(rule.to_string()).or_default() += 1;
            tracing::debug!(
                tier,
                channel,
                rule,
                "tier budget exceeded; notification folded"
            );
            Admission::Fold
        }
    }

    /// Count `sent` notifications already sent on `channel` for `tier` on the UTC day
    /// of `at_ms` (from the outbox, at a start).
    pub fn seed(&mut self, tier: &str, channel: &str, at_ms: i64, sent: u32) {
        if !self.limits.contains_key(tier) {
            return;
        }
        self.counts
            .entry((tier.to_string(), channel.to_string(), day_of(at_ms)))
            .or_default()
            .sent += sent;
    }

    /// The floods of every UTC day before `now_ms`'s, each returned once, oldest
    /// first; the counts of those days are dropped. Call it on every evaluation
    /// tick; at the end of a replay, pass a time after the last day to flush it.
    pub fn take_floods(&mut self, now_ms: i64) -> Vec<Flood> {
        let today = day_of(now_ms);
        let closed: Vec<_> = self
            .counts
            .keys()
            .filter(|(_, _, day)| *day < today)
            .cloned()
            .collect();
        let mut floods = Vec::new();
        for key in closed {
            let count = self.counts.remove(&key).expect("key just listed");
            if count.folded.is_empty() {
                continue;
            }
            let (tier, channel, day) = key;
            let mut rules: Vec<(String, u32)> = count.folded.into_iter().collect();
            rules.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            floods.push(Flood {
                budget: self.limits.get(&tier).copied().unwrap_or(0),
                folded: rules.iter().map(|(_, n)| n).sum(),
                day: chrono::DateTime::from_timestamp(day * 86_400, 0)
                    .map(|t| t.date_naive())
                    .unwrap_or_default(),
                tier,
                channel,
                rules,
            });
        }
        floods.sort_by(|a, b| (a.day, &a.tier, &a.channel).cmp(&(b.day, &b.tier, &b.channel)));
        floods
    }
}

/// `rule (n), rule (n), ...` for the first few rules.
fn top_rules(rules: &[(String, u32)]) -> String {
    const SHOWN: usize = 5;
    let mut text: Vec<String> = rules
        .iter()
        .take(SHOWN)
        .map(|(r, n)| format!("{r} ({n})"))
        .collect();
    if rules.len() > SHOWN {
        text.push(format!("and {} more rules", rules.len() - SHOWN));
    }
    text.join(", ")
}

/// The one summary message a channel gets for a flooded day, in place of the
/// notifications that were folded.
pub fn flood_summary(flood: &Flood) -> String {
    format!(
        "{} more {} alerts on {} were not sent on {} (daily budget {}): {}",
        flood.folded,
        flood.tier,
        flood.channel,
        flood.day,
        flood.budget,
        top_rules(&flood.rules)
    )
}

/// One `tier_flooding` meta-alert per flooded tier and day, naming the rules that
/// flood, in `meta_tier` (`Tiers::meta_tier`). A notification folded on several
/// channels counts once: per rule, the most any channel folded. The notifier sends
/// these outside the budget, so a flooded tier can still say it flooded.
pub fn flooding_alerts(floods: &[Flood], meta_tier: &Tier, at_ms: i64) -> Vec<Alert> {
    let mut by_tier: BTreeMap<(NaiveDate, &str), Vec<&Flood>> = BTreeMap::new();
    for f in floods {
        by_tier.entry((f.day, &f.tier)).or_default().push(f);
    }
    by_tier
        .into_iter()
        .map(|((day, tier), floods)| {
            let mut rules: BTreeMap<&str, u32> = BTreeMap::new();
            for f in &floods {
                for (rule, n) in &f.rules {
                    let r = rules.entry(rule).or_default();
                    *r = (*r).max(*n);
                }
            }
            let mut rules: Vec<(String, u32)> =
                rules.into_iter().map(|(r, n)| (r.to_string(), n)).collect();
            rules.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let folded: u32 = rules.iter().map(|(_, n)| n).sum();
            Alert {
                event: AlertEvent::Firing,
                members: Vec::new(),
                reopens: 0,
                incident: None,
                rule: Kind::TierFlooding.as_str().to_string(),
                lane: Lane::Meta,
                kind: Kind::TierFlooding,
                scope: [("tier".to_string(), tier.to_string())].into(),
                at_ms,
                tier: meta_tier.name.clone(),
                tier_rank: meta_tier.rank,
                summary: format!(
                    "tier {tier} flooded on {day}: {folded} notifications folded beyond its daily budget; top rules: {}. Raise their thresholds, cap their tier, or fix the cause",
                    top_rules(&rules)
                ),
                evidence: json!({
                    "day": day.to_string(),
                    "folded": folded,
                    "rules": rules.iter().map(|(r, n)| json!({"rule": r, "folded": n})).collect::<Vec<_>>(),
                    "channels": floods.iter().map(|f| json!({"channel": f.channel, "budget": f.budget, "folded": f.folded})).collect::<Vec<_>>(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-06-06T00:00:00Z.
    const DAY: i64 = 1_780_704_000_000;
    const HOUR: i64 = 3_600_000;

    fn budget() -> Budget {
        Budget::new(
            &Tiers::parse(
                "[[tier]]\nname = \"page\"\nchannels = [\"slack\", \"email\"]\ndaily_budget = 2\n[tier.when]\nspend_share = 0.5\n[[tier]]\nname = \"record\"\n",
                "t",
            )
            .unwrap(),
        )
    }

    #[test]
    fn sends_within_budget_then_folds_and_resets_at_utc_midnight() {
        let mut b = budget();
        let late = DAY + 23 * HOUR;
        assert_eq!(b.admit("page", "slack", "a", DAY), Admission::Send);
        assert_eq!(b.admit("page", "slack", "a", DAY + HOUR), Admission::Send);
        assert_eq!(
            b.admit("page", "slack", "a", DAY + 2 * HOUR),
            Admission::Fold
        );
        assert_eq!(b.admit("page", "slack", "b", late), Admission::Fold);
        assert_eq!(b.admit("page", "slack", "a", late), Admission::Fold);
        assert_eq!(
            b.admit("page", "email", "a", late),
            Admission::Send,
            "each channel has its own budget"
        );
        assert_eq!(
            b.admit("record", "x", "a", late),
            Admission::Send,
            "no budget"
        );
        assert!(b.take_floods(late).is_empty(), "the day is not over yet");

        let next = DAY + 24 * HOUR;
        assert_eq!(b.admit("page", "slack", "a", next), Admission::Send);
        let floods = b.take_floods(next);
        assert_eq!(floods.len(), 1);
        let f = &floods[0];
        assert_eq!((f.tier.as_str(), f.channel.as_str()), ("page", "slack"));
        assert_eq!(f.day.to_string(), "2026-06-06");
        assert_eq!((f.folded, f.budget), (3, 2));
        assert_eq!(f.rules, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
        assert!(
            b.take_floods(next).is_empty(),
            "each flood is returned once"
        );
        assert_eq!(b.admit("page", "slack", "a", next + HOUR), Admission::Send);
        assert_eq!(b.admit("page", "slack", "a", next + HOUR), Admission::Fold);
        assert_eq!(b.take_floods(i64::MAX).len(), 1, "a late time flushes");
    }

    #[test]
    fn one_meta_alert_per_flooded_tier_names_the_rules() {
        let mut b = budget();
        for ch in ["slack", "email"] {
            for rule in ["noisy", "noisy", "noisy", "other", "other"] {
                b.admit("page", ch, rule, DAY);
            }
        }
        let floods = b.take_floods(DAY + 24 * HOUR);
        assert_eq!(floods.len(), 2);
        assert!(flood_summary(&floods[0]).contains("3 more page alerts on email"));
        let meta = Tier {
            name: "alert".into(),
            rank: 2,
            channels: vec!["slack".into()],
        };
        let alerts = flooding_alerts(&floods, &meta, DAY + 24 * HOUR);
        assert_eq!(alerts.len(), 1, "channels of one tier share one meta-alert");
        let a = &alerts[0];
        assert_eq!((a.kind, a.lane), (Kind::TierFlooding, Lane::Meta));
        assert_eq!(a.scope.get("tier").map(String::as_str), Some("page"));
        assert_eq!((a.tier.as_str(), a.tier_rank), ("alert", 2));
        assert!(
            a.summary.contains("top rules: other (2), noisy (1)"),
            "{}",
            a.summary
        );
        assert_eq!(a.evidence["folded"], 3);
        assert_eq!(a.evidence["channels"].as_array().unwrap().len(), 2);
    }
}
