//! Ground truth of a scenario, and the scorer that holds a replay's alert lines and
//! notifications against it.
//!
//! Detection work is judged by what a team would receive, not by whether "an alert
//! fired": the score counts recall within each incident's deadline, false alarms,
//! the messages each channel got (after grouping and budgets), the median delay and
//! the tier errors. `driftwarden replay --truth FILE` prints it; scenario tests
//! assert it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::alerts::Sent;
use crate::domain::{Alert, AlertEvent, Kind, Scope, rfc3339_ms};

/// How long after an incident's end (or after the scenario's data ends, for a
/// lasting one) lines on its scopes still count as its own: a resolve, a late
/// consequence.
const GRACE_MS: i64 = 6 * 3_600_000;

/// What a scenario planted, and what it must not alert on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Truth {
    /// Drifts a team must hear about.
    #[serde(default)]
    pub incidents: Vec<TruthIncident>,
    /// Changes a team must not be told about (an announced deploy): any firing line
    /// on their scopes in their window is a false alarm.
    #[serde(default)]
    pub silent: Vec<TruthIncident>,
}

/// One planted drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruthIncident {
    /// What it is, in a few words.
    pub name: String,
    /// When it starts.
    #[serde(rename = "start", with = "rfc3339_ms")]
    pub start_ms: i64,
    /// When it ends; `None` for a lasting change.
    #[serde(rename = "end", with = "opt_rfc3339", default)]
    pub end_ms: Option<i64>,
    /// The scope that carries it (the root cause).
    pub scope: Scope,
    /// Other scopes it moves (a routing shift moves models and providers). Lines on
    /// these, on the root's ancestors or on its descendants count as this incident.
    #[serde(default)]
    pub related: Vec<Scope>,
    /// Kinds that count as finding it.
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Minutes after `start` by which it must be found.
    #[serde(default)]
    pub deadline_minutes: i64,
    /// The most severe tier it may be notified at.
    #[serde(default)]
    pub highest_tier: Option<String>,
    /// The least severe tier it may be notified at.
    #[serde(default)]
    pub lowest_tier: Option<String>,
}

mod opt_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ms) => s.serialize_some(&crate::domain::rfc3339_ms::format(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            chrono::DateTime::parse_from_rfc3339(&t)
                .map(|t| t.timestamp_millis())
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// A truth file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    /// It cannot be read.
    #[error("cannot read truth file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a truth file.
    #[error(
        "{path}: not a truth file ({source}); write one with `driftwarden generate --truth FILE`"
    )]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

impl Truth {
    /// Read a truth file (JSON).
    pub fn load(path: &Path) -> Result<Truth, TruthError> {
        let shown = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TruthError::Read {
            path: shown(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| TruthError::Parse {
            path: shown(),
            source,
        })
    }
}

/// Whether one scope's labels contain the other's: the same scope, an ancestor or a
/// descendant.
fn nested(a: &Scope, b: &Scope) -> bool {
    let within = |x: &Scope, y: &Scope| x.iter().all(|(k, v)| y.get(k) == Some(v));
    within(a, b) || within(b, a)
}

impl TruthIncident {
    fn covers(&self, scope: &Scope, at_ms: i64, data_end_ms: i64, grace_ms: i64) -> bool {
        let until = self.end_ms.unwrap_or(data_end_ms) + grace_ms;
        (self.start_ms..=until).contains(&at_ms)
            && (nested(&self.scope, scope) || self.related.iter().any(|r| nested(r, scope)))
    }
}

/// How one incident went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentScore {
    /// Its name.
    pub name: String,
    /// Found by a line of an accepted kind within the deadline.
    pub found: bool,
    /// Minutes from its start to the first line of an accepted kind.
    pub delay_minutes: Option<f64>,
    /// The most severe tier of a line that told of it (firing, updated or reopened).
    pub tier: Option<String>,
    /// Why that tier is wrong, if it is.
    pub tier_error: Option<String>,
    /// Firing lines that count as this incident.
    pub firing_lines: u64,
    /// Messages per channel that told of it.
    pub notifications: BTreeMap<String, u64>,
    /// The most messages on one channel on any UTC day after its first.
    pub most_per_later_day: u64,
}

/// A replay held against its truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Per incident.
    pub incidents: Vec<IncidentScore>,
    /// Found incidents / incidents.
    pub recall: f64,
    /// Firing lines that belong to no incident (or to a silent change).
    pub false_alarms: u64,
    /// Messages per channel whose every line was a false alarm.
    pub false_alarm_notifications: BTreeMap<String, u64>,
    /// All messages per channel, informational ones (change reports) included.
    pub notifications: BTreeMap<String, u64>,
    /// Median minutes to find an incident.
    pub median_delay_minutes: Option<f64>,
    /// Incidents notified above their highest or below their lowest tier.
    pub tier_errors: u64,
    /// Days of data scored.
    pub days: f64,
}

impl Score {
    /// Compare `lines` (every line a replay printed) and `sent` (what each channel
    /// received) with `truth`. `tiers` are the tier names, most severe first;
    /// `(data_start_ms, data_end_ms)` the span of the data.
    pub fn new(
        truth: &Truth,
        lines: &[Alert],
        sent: &[Sent],
        tiers: &[String],
        (data_start_ms, data_end_ms): (i64, i64),
    ) -> Score {
        let rank = |name: &str| tiers.iter().position(|t| t == name);
        let firing: Vec<&Alert> = lines
            .iter()
            .filter(|a| a.event == AlertEvent::Firing)
            .collect();
        let belongs =
            |i: &TruthIncident, a: &Alert| i.covers(&a.scope, a.at_ms, data_end_ms, GRACE_MS);
        // A silent change's window is exact: what follows it is another story.
        let hushed = |i: &TruthIncident, a: &Alert| i.covers(&a.scope, a.at_ms, data_end_ms, 0);
        let mut incidents = Vec::new();
        // A line tells of an incident when it covers it and carries an accepted kind,
        // as its own or a member's: an outage on global hours after a tenant's
        // spike covers the tenant but does not tell of its spike.
        let tells = |i: &TruthIncident, a: &Alert| {
            belongs(i, a)
                && (i.kinds.contains(&a.kind)
                    || a.members.iter().any(|m| i.kinds.contains(&m.kind)))
        };
        for i in &truth.incidents {
            let own: Vec<&&Alert> = firing.iter().filter(|a| belongs(i, a)).collect();
            let first = lines
                .iter()
                .filter(|a| a.event != AlertEvent::Resolved && tells(i, a))
                .map(|a| a.at_ms)
                .min();
            let delay_minutes = first.map(|t| (t - i.start_ms) as f64 / 60_000.0);
            let found = delay_minutes.is_some_and(|d| d <= i.deadline_minutes as f64);
            let top = lines
                .iter()
                .filter(|a| a.event != AlertEvent::Resolved && tells(i, a))
                .min_by_key(|a| a.tier_rank)
                .map(|a| a.tier.clone());
            let tier_error = top.as_deref().and_then(|t| {
                let r = rank(t)?;
                match (&i.highest_tier, &i.lowest_tier) {
                    (Some(h), _) if rank(h).is_some_and(|h| r < h) => {
                        Some(format!("{t} is above the highest tier {h}"))
                    }
                    (_, Some(l)) if rank(l).is_some_and(|l| r > l) => {
                        Some(format!("{t} is below the lowest tier {l}"))
                    }
                    _ => None,
                }
            });
            let carried: Vec<&Sent> = sent
                .iter()
                .filter(|s| s.message.alerts.iter().any(|a| tells(i, a)))
                .collect();
            let mut notifications = BTreeMap::new();
            let mut per_day: BTreeMap<(&str, i64), u64> = BTreeMap::new();
            for s in &carried {
                *notifications.entry(s.channel.clone()).or_default() += 1;
                *per_day
                    .entry((s.channel.as_str(), s.at_ms.div_euclid(86_400_000)))
                    .or_default() += 1;
            }
            let first_day = carried.iter().map(|s| s.at_ms.div_euclid(86_400_000)).min();
            let most_per_later_day = per_day
                .iter()
                .filter(|((_, day), _)| Some(*day) != first_day)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            incidents.push(IncidentScore {
                name: i.name.clone(),
                found,
                delay_minutes,
                tier: top,
                tier_error,
                firing_lines: own.len() as u64,
                notifications,
                most_per_later_day,
            });
        }
        let explained = |a: &Alert| {
            truth.incidents.iter().any(|i| belongs(i, a))
                && !truth.silent.iter().any(|i| hushed(i, a))
        };
        let false_alarms = firing.iter().filter(|a| !explained(a)).count() as u64;
        let mut notifications = BTreeMap::new();
        let mut false_alarm_notifications = BTreeMap::new();
        for s in sent {
            *notifications.entry(s.channel.clone()).or_default() += 1;
            let alarms = &s.message.alerts;
            // A false alarm's own resolve may share the message: it is no excuse.
            if alarms.iter().any(|a| a.event == AlertEvent::Firing)
                && alarms.iter().all(|a| !explained(a))
            {
                *false_alarm_notifications
                    .entry(s.channel.clone())
                    .or_default() += 1;
            }
        }
        let mut delays: Vec<f64> = incidents
            .iter()
            .filter(|i| i.found)
            .filter_map(|i| i.delay_minutes)
            .collect();
        delays.sort_by(f64::total_cmp);
        let median_delay_minutes = match delays.len() {
            0 => None,
            n if n % 2 == 1 => Some(delays[n / 2]),
            n => Some((delays[n / 2 - 1] + delays[n / 2]) / 2.0),
        };
        let found = incidents.iter().filter(|i| i.found).count();
        Score {
            recall: if incidents.is_empty() {
                1.0
            } else {
                found as f64 / incidents.len() as f64
            },
            tier_errors: incidents.iter().filter(|i| i.tier_error.is_some()).count() as u64,
            incidents,
            false_alarms,
            false_alarm_notifications,
            notifications,
            median_delay_minutes,
            days: (data_end_ms - data_start_ms).max(0) as f64 / 86_400_000.0,
        }
    }

    /// A few lines a person reads.
    pub fn report(&self) -> String {
        let channels = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                return "none".to_string();
            }
            m.iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!(
            "score over {:.1} days: recall {:.2}, {} false alarm lines ({} false alarm messages), tier errors {}, median delay {}\nnotifications: {}\n",
            self.days,
            self.recall,
            self.false_alarms,
            channels(&self.false_alarm_notifications),
            self.tier_errors,
            self.median_delay_minutes
                .map_or("-".to_string(), |d| format!("{d:.0} min")),
            channels(&self.notifications),
        );
        for i in &self.incidents {
            out.push_str(&format!(
                "  {}: {} (delay {}), tier {}{}, {} firing lines, messages: {}, most on a later day {}\n",
                i.name,
                if i.found { "found" } else { "MISSED" },
                i.delay_minutes
                    .map_or("-".to_string(), |d| format!("{d:.0} min")),
                i.tier.as_deref().unwrap_or("-"),
                i.tier_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (WRONG: {e})")),
                i.firing_lines,
                channels(&i.notifications),
                i.most_per_later_day
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Lane, Message};

    const H: i64 = 3_600_000;

    fn scope(pairs: &[(&str, &str)]) -> Scope {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn line(event: AlertEvent, kind: Kind, scope: Scope, at_ms: i64, tier: &str) -> Alert {
        let rank = ["page", "alert", "digest", "record"]
            .iter()
            .position(|t| *t == tier)
            .unwrap() as u8
            + 1;
        Alert {
            event,
            rule: "r".into(),
            lane: Lane::Cost,
            kind,
            scope,
            at_ms,
            tier: tier.into(),
            tier_rank: rank,
            summary: String::new(),
            evidence: serde_json::json!({}),
            members: Vec::new(),
            reopens: 0,
            incident: None,
        }
    }

    fn sent(channel: &str, at_ms: i64, alerts: Vec<Alert>) -> Sent {
        Sent {
            channel: channel.into(),
            at_ms,
            message: Message {
                title: String::new(),
                tier: Some(alerts[0].tier.clone()),
                alerts,
                text: String::new(),
            },
        }
    }

    fn tiers() -> Vec<String> {
        ["page", "alert", "digest", "record"]
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    fn truth() -> Truth {
        Truth {
            incidents: vec![TruthIncident {
                name: "spike".into(),
                start_ms: 10 * H,
                end_ms: Some(12 * H),
                scope: scope(&[("tenant", "t1")]),
                related: Vec::new(),
                kinds: vec![Kind::TrafficDrift],
                deadline_minutes: 60,
                highest_tier: Some("alert".into()),
                lowest_tier: Some("digest".into()),
            }],
            silent: vec![TruthIncident {
                name: "deploy".into(),
                start_ms: 0,
                end_ms: Some(5 * H),
                scope: scope(&[("route", "chat")]),
                related: Vec::new(),
                kinds: Vec::new(),
                deadline_minutes: 0,
                highest_tier: None,
                lowest_tier: None,
            }],
        }
    }

    #[test]
    fn a_timely_incident_at_its_tier_with_one_message_scores_clean() {
        let t1 = scope(&[("tenant", "t1")]);
        let fire = line(
            AlertEvent::Firing,
            Kind::TrafficDrift,
            t1.clone(),
            10 * H + 1_800_000,
            "alert",
        );
        let done = line(
            AlertEvent::Resolved,
            Kind::TrafficDrift,
            t1,
            12 * H,
            "alert",
        );
        let messages = [
            sent("slack", fire.at_ms, vec![fire.clone()]),
            sent("slack", done.at_ms, vec![done.clone()]),
        ];
        let s = Score::new(&truth(), &[fire, done], &messages, &tiers(), (0, 24 * H));
        assert_eq!(s.recall, 1.0);
        assert_eq!(s.incidents[0].delay_minutes, Some(30.0));
        assert_eq!((s.false_alarms, s.tier_errors), (0, 0));
        assert_eq!(s.incidents[0].notifications["slack"], 2);
        assert_eq!(s.median_delay_minutes, Some(30.0));
        assert_eq!(s.days, 1.0);
    }

    #[test]
    fn a_false_alarm_sent_with_its_own_resolve_is_still_a_false_alarm() {
        let stray = scope(&[("model", "m")]);
        let fire = line(
            AlertEvent::Firing,
            Kind::QualityDrift,
            stray.clone(),
            20 * H,
            "page",
        );
        let done = line(
            AlertEvent::Resolved,
            Kind::QualityDrift,
            stray,
            21 * H,
            "page",
        );
        let messages = [sent("slack", 22 * H, vec![fire.clone(), done.clone()])];
        let s = Score::new(&truth(), &[fire, done], &messages, &tiers(), (0, 24 * H));
        assert_eq!(s.false_alarm_notifications.get("slack"), Some(&1));
    }

    #[test]
    fn an_outage_on_global_covers_a_spike_but_does_not_tell_of_it() {
        let t1 = scope(&[("tenant", "t1")]);
        let spike = line(AlertEvent::Firing, Kind::TrafficDrift, t1, 10 * H, "digest");
        let outage = line(
            AlertEvent::Firing,
            Kind::StructuralDrift,
            Scope::new(),
            11 * H,
            "page",
        );
        let messages = [sent("slack", outage.at_ms, vec![outage.clone()])];
        let s = Score::new(&truth(), &[spike, outage], &messages, &tiers(), (0, 24 * H));
        let i = &s.incidents[0];
        assert_eq!(i.tier.as_deref(), Some("digest"), "{i:?}");
        assert_eq!((s.tier_errors, i.notifications.len()), (0, 0), "{i:?}");
        assert_eq!(i.firing_lines, 2, "both lines cover it");
    }

    #[test]
    fn late_loud_noisy_and_silent_breaking_replays_are_scored_as_such() {
        let t1 = scope(&[("tenant", "t1")]);
        // Found after its deadline, at page (above its highest tier).
        let late = line(
            AlertEvent::Firing,
            Kind::TrafficDrift,
            t1.clone(),
            11 * H + 1,
            "page",
        );
        // The announced deploy alerted, and an unrelated scope too.
        let deploy = line(
            AlertEvent::Firing,
            Kind::CostDrift,
            scope(&[("route", "chat")]),
            H,
            "alert",
        );
        let stray = line(
            AlertEvent::Firing,
            Kind::CostDrift,
            scope(&[("model", "m")]),
            20 * H,
            "alert",
        );
        // Told three times on the next day.
        let repeats: Vec<Sent> = (0..3)
            .map(|i| sent("slack", 26 * H + i * H, vec![late.clone()]))
            .collect();
        let mut messages = vec![
            sent("slack", H, vec![deploy.clone()]),
            sent("slack", late.at_ms, vec![late.clone()]),
        ];
        messages.extend(repeats);
        let lines = [late, deploy, stray];
        let s = Score::new(&truth(), &lines, &messages, &tiers(), (0, 48 * H));
        assert_eq!(s.recall, 0.0, "found after its deadline");
        assert!(
            s.incidents[0]
                .tier_error
                .as_deref()
                .unwrap()
                .contains("above")
        );
        assert_eq!(s.false_alarms, 2);
        assert_eq!(s.false_alarm_notifications["slack"], 1);
        assert_eq!(s.incidents[0].most_per_later_day, 3);
        assert!(s.report().contains("MISSED"));
    }

    #[test]
    fn a_member_of_an_accepted_kind_finds_the_incident() {
        let t1 = scope(&[("tenant", "t1")]);
        let mut head = line(
            AlertEvent::Firing,
            Kind::CostDrift,
            t1.clone(),
            10 * H + 600_000,
            "alert",
        );
        head.members.push(crate::domain::Member {
            rule: "traffic-volume".into(),
            kind: Kind::TrafficDrift,
            scope: t1,
            tier: "alert".into(),
            summary: String::new(),
        });
        let s = Score::new(&truth(), &[head], &[], &tiers(), (0, 24 * H));
        assert_eq!(s.recall, 1.0);
    }

    #[test]
    fn a_truth_file_round_trips_and_a_bad_one_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.json");
        std::fs::write(&path, serde_json::to_string(&truth()).unwrap()).unwrap();
        assert_eq!(Truth::load(&path).unwrap(), truth());
        std::fs::write(&path, "{\"incidents\": 3}").unwrap();
        let err = Truth::load(&path).unwrap_err().to_string();
        assert!(err.contains("generate --truth"), "{err}");
    }
}
