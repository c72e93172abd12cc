//! The alert stage's decisions, without IO: an evaluation's findings become alert
//! lifecycles (pending → firing → resolved), incidents, tiers, exception checks,
//! budgets and groups, returned as the writes that record them. The stage applies
//! those writes in one transaction per evaluation; nothing here touches the store,
//! so every decision is testable without SQLite.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::RoutingParams;
use super::grouping::{Flushed, Grouper};
use super::incident::{Incident, Key};
use super::state::DeciderState;
use crate::detect::Finding;
use crate::domain::Message;
use crate::domain::{Alert, AlertEvent, Exception, Lane, Scope};
use crate::engine::Tick;
use crate::exceptions::covering;
use crate::tiers::{Admission, Budget, Tiers, flood_summary, flooding_alerts};

/// Evaluations in a row without the condition before a firing alert resolves, so an
/// alert near its threshold does not flap between firing and resolved.
const RESOLVE_AFTER: u32 = 3;

/// One write a decision makes; the stage applies a call's writes in order, in one
/// transaction. Ids are allocated here, so a decision can refer to the rows it makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A new alert episode (pending, or straight to firing).
    Alert {
        /// Its id.
        id: i64,
        /// Its first line.
        line: Alert,
        /// `pending` or `firing`.
        state: &'static str,
        /// When its condition was first seen (data time), ms.
        started_ms: i64,
    },
    /// An alert's new state and latest line.
    Update {
        /// The alert.
        id: i64,
        /// Its latest line.
        line: Alert,
        /// `firing` or `resolved`.
        state: &'static str,
        /// The exception suppressing it, if any.
        suppressed_by: Option<i64>,
    },
    /// An alert joined incident `incident` (its root's id), which reopened `reopens` times.
    Incident {
        /// The alert.
        id: i64,
        /// The incident.
        incident: i64,
        /// How often the incident reopened.
        reopens: u32,
    },
    /// An alert known only by its row (open before a restart) resolved.
    Resolved {
        /// The alert.
        id: i64,
        /// When, data time, ms.
        at_ms: i64,
    },
    /// A transition, with the line that announced it.
    Transition {
        /// Its id.
        id: i64,
        /// The alert (or incident root) it belongs to.
        alert: i64,
        /// The line.
        line: Alert,
        /// `pending`, `firing`, `updated`, `reopened` or `resolved`.
        state: &'static str,
        /// The exception suppressing it, if any.
        suppressed_by: Option<i64>,
    },
    /// A transition's line waits in a group for a channel (durable, so a crash
    /// before the group's message reaches the outbox regroups it).
    Pending {
        /// The transition.
        transition: i64,
        /// The channel.
        channel: String,
        /// The tier whose group it is in.
        tier: String,
    },
    /// An exception suppressed an incident.
    Hit {
        /// The exception.
        exception: i64,
        /// When, ms.
        at_ms: i64,
    },
    /// A group's message: to the outbox, clearing its lines' `Pending` rows.
    Flushed {
        /// The channel.
        channel: String,
        /// The message.
        message: Message,
        /// The transitions its lines announce.
        transitions: Vec<i64>,
        /// When it was due, ms.
        at_ms: i64,
    },
    /// A message sent at once, not through a group (a budget's flood summary).
    Send {
        /// The channel.
        channel: String,
        /// The message.
        message: Message,
        /// When, ms.
        at_ms: i64,
    },
}

/// What one call decided: the writes to apply, and every firing, updated, reopened
/// and resolved line (suppressed ones included) for the caller to print or count.
#[derive(Debug, Default)]
pub struct Decisions {
    /// The writes, in order.
    pub writes: Vec<Write>,
    /// The lines.
    pub lines: Vec<Alert>,
}

impl Decisions {
    /// Append `more` after these.
    pub fn extend(&mut self, more: Decisions) {
        self.writes.extend(more.writes);
        self.lines.extend(more.lines);
    }
}

/// An alert that is pending or firing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Active {
    /// Its id.
    pub id: i64,
    /// Whether it fires (else it is pending its rule's `for`).
    pub firing: bool,
    /// When its condition was first seen (data time), ms.
    pub started_ms: i64,
    /// The exception suppressing it, if any.
    pub suppressed_by: Option<i64>,
    /// Its rule's lane: only an evaluation of that lane can miss it.
    pub lane: Lane,
    /// Its latest line.
    pub last: Option<Alert>,
    /// When it was last notified (stage clock), ms.
    pub notified_ms: i64,
    /// Evaluations of its lane in a row that did not find it.
    pub misses: u32,
    /// Its incident's id, once it fired.
    pub incident: Option<i64>,
    /// Models its scope's traffic goes to (links it to related scopes).
    pub links: Vec<String>,
}

/// The state of the alert stage's decisions.
pub struct Decider {
    tiers: Tiers,
    budget: Budget,
    routing: RoutingParams,
    grouper: Grouper,
    active: HashMap<Key, Active>,
    /// Open incidents, and resolved ones within the reopen window, by id.
    incidents: BTreeMap<i64, Incident>,
    /// What an alert's resolve says when its level was learned as the new normal.
    learned: HashMap<Key, String>,
    /// The last alert and transition ids in use.
    last_ids: (i64, i64),
    /// What the call in progress decided.
    out: Decisions,
}

/// Whether `tier` routes to `channel` under `tiers`.
fn routes(tiers: &Tiers, tier: &str, channel: &str) -> bool {
    tiers
        .by_name(tier)
        .is_some_and(|d| d.tier.channels.iter().any(|c| c == channel))
}

/// The state a transition row records for a line's event.
fn event_state(event: AlertEvent) -> &'static str {
    match event {
        AlertEvent::Firing => "firing",
        AlertEvent::Updated => "updated",
        AlertEvent::Reopened => "reopened",
        AlertEvent::Resolved => "resolved",
    }
}

/// Whether a line counted against its tier's budget when it was routed: firing
/// lines do; resolves and meta-alerts do not.
pub fn budgeted(line: &Alert) -> bool {
    line.event == AlertEvent::Firing && line.lane != Lane::Meta
}

impl Decider {
    /// Decisions on top of the alerts and incidents still open in the store;
    /// `last_ids` are the highest alert and transition ids it holds.
    pub fn new(
        tiers: Tiers,
        routing: RoutingParams,
        active: HashMap<Key, Active>,
        incidents: BTreeMap<i64, Incident>,
        last_ids: (i64, i64),
    ) -> Decider {
        Decider {
            budget: Budget::new(&tiers),
            grouper: Grouper::new(
                routing.group_wait_seconds as i64 * 1000,
                routing.group_interval_seconds as i64 * 1000,
            ),
            tiers,
            routing,
            active,
            incidents,
            learned: HashMap::new(),
            last_ids,
            out: Decisions::default(),
        }
    }

    /// The state a snapshot keeps (everything but the configuration).
    pub fn state(&self) -> DeciderState {
        let active = sorted(&self.active);
        let learned = sorted(&self.learned);
        DeciderState {
            active,
            incidents: self.incidents.values().cloned().collect(),
            learned,
            last_ids: self.last_ids,
            groups: self.grouper.groups(),
            budget: self.budget.counts(),
        }
    }

    /// Take a snapshot's state in place of the one rebuilt from the store's rows.
    /// Waiting lines whose tier no longer routes to their channel (the
    /// configuration changed since) are dropped: their (channel, transition) pairs.
    pub fn restore(&mut self, state: DeciderState) -> Vec<(String, i64)> {
        self.active = state.active.into_iter().collect();
        self.incidents = state.incidents.into_iter().map(|i| (i.id, i)).collect();
        self.learned = state.learned.into_iter().collect();
        self.last_ids = state.last_ids;
        self.grouper.restore(state.groups);
        self.budget.restore(state.budget);
        let tiers = &self.tiers;
        self.grouper
            .drop_unless(|tier, channel| routes(tiers, tier, channel))
    }

    /// When the next waiting group is due, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.grouper.next_due()
    }

    /// The routing parameters.
    pub fn routing(&self) -> &RoutingParams {
        &self.routing
    }

    /// The tier of meta-alerts (about the alerting itself).
    pub fn meta_tier(&self) -> &crate::domain::Tier {
        self.tiers.meta_tier()
    }

    /// Decide one evaluation at `now_ms` (the clock notifications and budgets run
    /// on), with the exceptions active then.
    pub fn tick(&mut self, tick: &Tick, now_ms: i64, exceptions: &[Exception]) -> Decisions {
        let reopen_ms = self.routing.reopen_window_seconds as i64 * 1000;
        self.incidents
            .retain(|_, i| i.resolved_ms.is_none_or(|r| tick.at_ms - r <= reopen_ms));
        for (rule, scope, note) in &tick.learned {
            self.learned
                .insert((rule.clone(), scope.clone()), note.clone());
        }
        let mut seen = HashSet::new();
        let mut starting = Vec::new();
        for f in &tick.findings {
            let key = (f.rule_name.clone(), f.labels.clone());
            seen.insert(key.clone());
            let line = self.line(f, tick.at_ms);
            match self.active.get_mut(&key) {
                None => {
                    let fire = f.for_ms == 0;
                    let state = if fire { "firing" } else { "pending" };
                    self.last_ids.0 += 1;
                    let id = self.last_ids.0;
                    self.out.writes.push(Write::Alert {
                        id,
                        line: line.clone(),
                        state,
                        started_ms: tick.at_ms,
                    });
                    if !fire {
                        self.transition(id, &line, state, None);
                    }
                    self.active.insert(
                        key.clone(),
                        Active {
                            id,
                            firing: fire,
                            started_ms: tick.at_ms,
                            suppressed_by: None,
                            lane: f.lane,
                            last: Some(line),
                            notified_ms: now_ms,
                            misses: 0,
                            incident: None,
                            links: f.links.clone(),
                        },
                    );
                    if fire {
                        starting.push(key);
                    }
                }
                Some(a) if !a.firing => {
                    // It fires at the worst it was while pending: a burst whose peak
                    // fell in its first bucket must not be told at its tail's tier.
                    let worse = a
                        .last
                        .as_ref()
                        .is_some_and(|l| l.tier_rank < line.tier_rank);
                    if !worse {
                        a.last = Some(line);
                    }
                    a.links = f.links.clone();
                    if tick.at_ms - a.started_ms >= f.for_ms {
                        a.firing = true;
                        starting.push(key);
                    }
                }
                Some(_) => self.still_firing(&key, line, f.links.clone(), now_ms, exceptions),
            }
        }
        self.start_firing(starting, now_ms, exceptions);
        for key in seen.iter().chain(&tick.holding) {
            if let Some(a) = self.active.get_mut(key) {
                a.misses = 0;
            }
        }
        seen.extend(tick.holding.iter().cloned());
        let mut missed: Vec<Key> = self
            .active
            .iter()
            .filter(|(k, a)| tick.lanes.contains(&a.lane) && !seen.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        // A stable order, so a replay prints the same lines in the same order every run.
        missed.sort();
        for key in missed {
            let Some(a) = self.active.get_mut(&key) else {
                continue;
            };
            a.misses += 1;
            if a.firing && a.misses < RESOLVE_AFTER {
                continue;
            }
            self.resolve(&key, tick.at_ms, now_ms);
        }
        std::mem::take(&mut self.out)
    }

    /// Record a transition; its id.
    fn transition(
        &mut self,
        alert: i64,
        line: &Alert,
        state: &'static str,
        suppressed_by: Option<i64>,
    ) -> i64 {
        self.last_ids.1 += 1;
        let id = self.last_ids.1;
        self.out.writes.push(Write::Transition {
            id,
            alert,
            line: line.clone(),
            state,
            suppressed_by,
        });
        id
    }

    fn update(&mut self, id: i64, line: &Alert, state: &'static str, suppressed_by: Option<i64>) {
        self.out.writes.push(Write::Update {
            id,
            line: line.clone(),
            state,
            suppressed_by,
        });
    }

    fn line(&self, f: &Finding, at_ms: i64) -> Alert {
        let assignment = self.tiers.assign(&f.impact, f.max_tier.as_deref());
        let mut evidence = f.evidence.clone();
        let mut tier = assignment.evidence(&f.impact);
        tier["harm"] = Value::from(f.harm);
        evidence.insert("tier".into(), tier);
        Alert {
            event: AlertEvent::Firing,
            members: Vec::new(),
            reopens: 0,
            incident: None,
            rule: f.rule_name.clone(),
            lane: f.lane,
            kind: f.kind,
            scope: f.labels.clone(),
            at_ms,
            tier: assignment.tier.name,
            tier_rank: assignment.tier.rank,
            summary: f.summary.clone(),
            evidence: Value::Object(evidence),
        }
    }

    /// Alerts that start firing in this evaluation, earliest seen first: each reopens
    /// a recently resolved incident it was part of, joins an open incident it is
    /// related to, or opens one of its own. Incidents opened here are announced once,
    /// after every alert of the evaluation found its place, with all their members.
    fn start_firing(&mut self, mut keys: Vec<Key>, now_ms: i64, exceptions: &[Exception]) {
        keys.sort_by_key(|k| {
            let a = &self.active[k];
            let rank = a.last.as_ref().map_or(u8::MAX, |l| l.tier_rank);
            (a.started_ms, rank, k.clone())
        });
        let window = self.routing.incident_window_seconds as i64 * 1000;
        let mut opened: Vec<i64> = Vec::new();
        for key in keys {
            let a = &self.active[&key];
            let (id, started, links) = (a.id, a.started_ms, a.links.clone());
            let Some(line) = a.last.clone() else { continue };
            let (at, kind) = (line.at_ms, line.kind);
            // A recently resolved incident this alert was part of reopens; else an
            // open one it belongs to takes it; else a recently resolved one it would
            // have joined reopens (a consequence judged late, such as evals that
            // settle hours after their requests).
            let find = |open: bool, member_only: bool| {
                self.incidents
                    .values()
                    .filter(|i| i.resolved_ms.is_none() == open)
                    .find(|i| {
                        i.has(&key)
                            || (!member_only && i.takes((&key, kind), started, &links, window))
                    })
                    .map(|i| i.id)
            };
            let found = find(false, true)
                .map(|i| (i, AlertEvent::Reopened))
                .or_else(|| find(true, false).map(|i| (i, AlertEvent::Updated)))
                .or_else(|| find(false, false).map(|i| (i, AlertEvent::Reopened)));
            let (inc_id, event) = match found {
                Some(found) => found,
                None => {
                    let mut inc =
                        Incident::open(id, key.clone(), line.clone(), links.clone(), started);
                    inc.suppressed_by =
                        covering(exceptions, &line.rule, &line.scope, line.tier_rank);
                    self.incidents.insert(id, inc);
                    opened.push(id);
                    (id, AlertEvent::Firing)
                }
            };
            let inc = self.incidents.get_mut(&inc_id).expect("just found");
            let joins = !inc.has(&key);
            if event == AlertEvent::Reopened {
                inc.resolved_ms = None;
                inc.reopens += 1;
            }
            inc.set(key.clone(), line.clone(), links);
            inc.reroot(&key);
            let (suppressed, reopens, told) = (inc.suppressed_by, inc.reopens, inc.notified_rank);
            // A consequence worse than what the team was told raises the incident's
            // tier; an incident nobody was told of yet is announced as firing when it
            // reaches the team (a record-tier one that reopens stays a reopen).
            let mut out = inc.line(event, at);
            let heard = self.tiers.above_digest(&out.tier);
            if told.is_none() && (event == AlertEvent::Updated || heard) {
                out.event = AlertEvent::Firing;
            }
            let event_out = out.event;
            self.update(id, &line, "firing", suppressed);
            self.out.writes.push(Write::Incident {
                id,
                incident: inc_id,
                reopens,
            });
            if inc_id != id {
                self.out.writes.push(Write::Incident {
                    id: inc_id,
                    incident: inc_id,
                    reopens,
                });
            }
            if let Some(a) = self.active.get_mut(&key) {
                a.incident = Some(inc_id);
                a.suppressed_by = suppressed;
            }
            if event == AlertEvent::Firing || opened.contains(&inc_id) {
                // Announced with its incident below.
                self.transition(id, &line, "firing", suppressed);
                continue;
            }
            let louder = told.map_or(self.tiers.above_digest(&out.tier), |r| out.tier_rank < r);
            if event_out == AlertEvent::Updated && !joins && !louder {
                // A member firing again inside its open incident: nothing new to say.
                self.transition(id, &line, "firing", suppressed);
                continue;
            }
            let transition = self.transition(id, &out, event_state(event_out), suppressed);
            if louder && suppressed.is_none() {
                self.notify_incident(inc_id, &out, transition, now_ms);
            }
            self.out.lines.push(out);
        }
        for inc_id in opened {
            let inc = &self.incidents[&inc_id];
            let (out, suppressed) = (
                inc.line(AlertEvent::Firing, inc.root_at()),
                inc.suppressed_by,
            );
            let transition = self.transition(inc_id, &out, "firing", suppressed);
            match suppressed {
                Some(exception) => {
                    self.out.writes.push(Write::Hit {
                        exception,
                        at_ms: now_ms,
                    });
                    tracing::info!(rule = %out.rule, exception, "incident suppressed by an exception");
                }
                None => self.notify_incident(inc_id, &out, transition, now_ms),
            }
            self.out.lines.push(out);
        }
    }

    /// An alert still firing: keep its incident's latest line; notify again when a
    /// repeat is due, its exception ended, or a member's tier rose.
    fn still_firing(
        &mut self,
        key: &Key,
        mut line: Alert,
        links: Vec<String>,
        now_ms: i64,
        exceptions: &[Exception],
    ) {
        let Some(a) = self.active.get_mut(key) else {
            return;
        };
        // A firing alert keeps the worst tier it reached: the outage that paged is
        // still a page in its quieter last bucket, and its resolve reaches whoever
        // was paged.
        if let Some(worst) = a.last.as_ref().filter(|l| l.tier_rank < line.tier_rank) {
            line.tier = worst.tier.clone();
            line.tier_rank = worst.tier_rank;
            if let (Some(tier), Some(evidence)) =
                (worst.evidence.get("tier"), line.evidence.as_object_mut())
            {
                evidence.insert("tier".into(), tier.clone());
            }
        }
        a.last = Some(line.clone());
        a.links = links.clone();
        let (id, inc_id) = (a.id, a.incident);
        let Some(inc) = inc_id.and_then(|i| self.incidents.get_mut(&i)) else {
            self.update(id, &line, "firing", None);
            return;
        };
        inc.set(key.clone(), line.clone(), links);
        let was = inc.suppressed_by;
        let out = inc.line(AlertEvent::Firing, line.at_ms);
        // An exception that expired or was revoked lets the incident flow again.
        let still = match (was, inc.root == *key) {
            (Some(_), true) => covering(exceptions, &out.rule, &out.scope, out.tier_rank),
            _ => was,
        };
        inc.suppressed_by = still;
        let repeat = self.routing.repeat_interval_seconds as i64 * 1000;
        let repeat_due = inc.notified_rank.is_some()
            && now_ms - inc.notified_ms >= repeat
            && self.tiers.above_digest(&out.tier);
        let louder = inc.notified_rank.is_some_and(|r| out.tier_rank < r);
        let out = match louder && !repeat_due {
            true => inc.line(AlertEvent::Updated, line.at_ms),
            false => out,
        };
        let inc_id = inc.id;
        self.update(id, &line, "firing", still);
        if still.is_some() {
            return;
        }
        if repeat_due || louder || was.is_some() {
            let transition = self.transition(inc_id, &out, event_state(out.event), None);
            self.notify_incident(inc_id, &out, transition, now_ms);
        }
    }

    /// An alert's condition is gone: record it, and resolve its incident once none
    /// of the incident's alerts still fires (notified once, if the team was told).
    fn resolve(&mut self, key: &Key, at_ms: i64, now_ms: i64) {
        let Some(a) = self.active.remove(key) else {
            return;
        };
        let Some(mut line) = a.last else {
            self.out.writes.push(Write::Resolved { id: a.id, at_ms });
            return;
        };
        line.event = AlertEvent::Resolved;
        line.at_ms = at_ms;
        // The last firing line's numbers describe the trouble, not its end: say so.
        line.summary = match self.learned.remove(key) {
            Some(note) => note,
            None => format!("back inside its baseline; while firing: {}", line.summary),
        };
        self.update(a.id, &line, "resolved", a.suppressed_by);
        if !a.firing {
            return;
        }
        self.transition(a.id, &line, "resolved", a.suppressed_by);
        let Some(inc_id) = a.incident else {
            return;
        };
        if let Some(inc) = self.incidents.get_mut(&inc_id) {
            inc.set(key.clone(), line, a.links);
        }
        if self
            .active
            .values()
            .any(|x| x.firing && x.incident == Some(inc_id))
        {
            return;
        }
        let Some(inc) = self.incidents.get_mut(&inc_id) else {
            return;
        };
        inc.resolved_ms = Some(at_ms);
        let out = inc.line(AlertEvent::Resolved, at_ms);
        // A flapping incident says "resolved" once, not after every reopen.
        let tell = inc.suppressed_by.is_none() && inc.notified_rank.is_some() && !inc.resolve_told;
        if tell {
            inc.resolve_told = true;
        }
        let suppressed = inc.suppressed_by;
        let transition = self.transition(inc_id, &out, "resolved", suppressed);
        if tell {
            self.route(&out, transition, now_ms);
        }
        self.out.lines.push(out);
    }

    /// Route an incident's line and remember what the team was told.
    fn notify_incident(&mut self, inc_id: i64, out: &Alert, transition: i64, now_ms: i64) {
        if !self.route(out, transition, now_ms) {
            return;
        }
        if let Some(inc) = self.incidents.get_mut(&inc_id) {
            // The most severe tier told so far: a tier that wavers between two
            // buckets is not news twice.
            inc.notified_rank = Some(
                inc.notified_rank
                    .map_or(out.tier_rank, |r| r.min(out.tier_rank)),
            );
            inc.notified_ms = now_ms;
            inc.resolve_told = false;
        }
    }

    /// Send a line to its tier's channels; whether the tier notifies one by one.
    /// Digest-tier lines wait for the daily digest, which reads them from the store.
    fn route(&mut self, line: &Alert, transition: i64, now_ms: i64) -> bool {
        let Some(def) = self.tiers.by_name(&line.tier) else {
            return false;
        };
        if !self.tiers.above_digest(&line.tier) || def.tier.channels.is_empty() {
            return false;
        }
        for channel in def.tier.channels.clone() {
            // Resolves are not budgeted: they close what was already said.
            let admitted = !budgeted(line)
                || self.budget.admit(&line.tier, &channel, &line.rule, now_ms) == Admission::Send;
            if admitted {
                self.group(&line.tier, &channel, transition, line, now_ms);
            }
        }
        true
    }

    /// Put a line in its group, durably.
    fn group(&mut self, tier: &str, channel: &str, transition: i64, line: &Alert, now_ms: i64) {
        self.out.writes.push(Write::Pending {
            transition,
            channel: channel.to_string(),
            tier: tier.to_string(),
        });
        self.grouper
            .add(tier, channel, transition, line.clone(), now_ms);
    }

    /// The groups whose message is due at `now_ms`.
    pub fn flush(&mut self, now_ms: i64) -> Vec<Flushed> {
        self.grouper.flush(now_ms)
    }

    /// Put lines back in their group (their message could not be written), or
    /// regroup a line that waited in a group when the daemon stopped.
    pub fn regroup(
        &mut self,
        tier: &str,
        channel: &str,
        transition: i64,
        line: Alert,
        now_ms: i64,
    ) {
        self.grouper.add(tier, channel, transition, line, now_ms);
    }

    /// Whether `tier` still routes to `channel` (the configuration may have changed
    /// since a line was grouped).
    pub fn routes(&self, tier: &str, channel: &str) -> bool {
        routes(&self.tiers, tier, channel)
    }

    /// After a start: `sent` notifications of the day per (tier, channel) count
    /// against the budget, and an alert whose line waited in a group was notified now.
    pub fn resume(&mut self, sent: HashMap<(String, String), u32>, waited: &[Key], now_ms: i64) {
        for key in waited {
            if let Some(a) = self.active.get_mut(key) {
                a.notified_ms = now_ms;
            }
        }
        for ((tier, channel), n) in sent {
            self.budget.seed(&tier, &channel, now_ms, n);
        }
    }

    /// The budget's days that ended by `until_ms`: one summary message per flooded
    /// tier and channel, and a meta-alert per flooding rule.
    pub fn floods(&mut self, until_ms: i64, at_ms: i64) -> Decisions {
        let floods = self.budget.take_floods(until_ms);
        for f in &floods {
            self.out.writes.push(Write::Send {
                channel: f.channel.clone(),
                message: Message {
                    title: format!("[{}] {} alerts folded", f.tier, f.folded),
                    tier: Some(f.tier.clone()),
                    alerts: Vec::new(),
                    text: flood_summary(f),
                },
                at_ms,
            });
        }
        if !floods.is_empty() {
            let meta = self.tiers.meta_tier().clone();
            for alert in flooding_alerts(&floods, &meta, at_ms) {
                self.meta_alert(alert, at_ms);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Meta-alerts about the alerting itself (exception creep) as they stand at
    /// `now_ms`: new ones fire, ones that went away resolve.
    pub fn meta(&mut self, rule: &str, alerts: Vec<Alert>, now_ms: i64) -> Decisions {
        let keys: HashSet<Key> = alerts
            .iter()
            .map(|a| (a.rule.clone(), a.scope.clone()))
            .collect();
        for alert in alerts {
            self.meta_alert(alert, now_ms);
        }
        let mut gone: Vec<(String, Scope)> = self
            .active
            .keys()
            .filter(|(r, _)| r == rule)
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        gone.sort();
        for key in gone {
            let Some(a) = self.active.remove(&key) else {
                continue;
            };
            if let Some(mut line) = a.last {
                line.event = AlertEvent::Resolved;
                line.at_ms = now_ms;
                self.update(a.id, &line, "resolved", None);
                self.transition(a.id, &line, "resolved", None);
                self.out.lines.push(line);
            }
        }
        std::mem::take(&mut self.out)
    }

    fn meta_alert(&mut self, alert: Alert, now_ms: i64) {
        let key = (alert.rule.clone(), alert.scope.clone());
        if self.active.contains_key(&key) {
            return;
        }
        self.last_ids.0 += 1;
        let id = self.last_ids.0;
        self.out.writes.push(Write::Alert {
            id,
            line: alert.clone(),
            state: "firing",
            started_ms: alert.at_ms,
        });
        let transition = self.transition(id, &alert, "firing", None);
        for channel in self.tiers.meta_tier().channels.clone() {
            self.group(&alert.tier, &channel, transition, &alert, now_ms);
        }
        self.active.insert(
            key,
            Active {
                id,
                firing: true,
                started_ms: alert.at_ms,
                suppressed_by: None,
                lane: Lane::Meta,
                last: Some(alert.clone()),
                notified_ms: now_ms,
                misses: 0,
                incident: None,
                links: Vec::new(),
            },
        );
        self.out.lines.push(alert);
    }
}

/// A map's entries in key order (a snapshot encodes the same state to the same bytes).
fn sorted<K: Ord + Clone, V: Clone>(map: &HashMap<K, V>) -> Vec<(K, V)> {
    let mut entries: Vec<(K, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Impact, Kind, Signal};

    const T0: i64 = 1_780_000_200_000;
    const BUCKET: i64 = 600_000;

    fn scope(pairs: &[(&str, &str)]) -> Scope {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// An error-rate finding whose excess failures are `share` of all requests.
    fn errors(labels: Scope, share: f64) -> Finding {
        Finding {
            rule: 0,
            rule_name: "error-rate".into(),
            scope: 0,
            labels,
            kind: Kind::StructuralDrift,
            lane: Lane::Structure,
            signal: Signal::ErrorRate,
            sign: 1.0,
            excess: 100.0,
            summary: "errors".into(),
            evidence: serde_json::Map::new(),
            impact: Impact {
                requests_share: share,
                ..Impact::default()
            },
            harm: "excess failed requests as a share of all requests",
            muted: None,
            hard: false,
            max_tier: None,
            for_ms: 0,
            links: Vec::new(),
        }
    }

    fn tick(at_ms: i64, findings: Vec<Finding>) -> Tick {
        Tick {
            at_ms,
            judged_ms: at_ms,
            lanes: vec![Lane::Structure, Lane::Cost],
            findings,
            learned: Vec::new(),
            holding: Vec::new(),
        }
    }

    fn decider() -> Decider {
        let routing = RoutingParams {
            group_wait_seconds: 0,
            group_interval_seconds: 0,
            ..RoutingParams::default()
        };
        Decider::new(
            Tiers::defaults(),
            routing,
            HashMap::new(),
            BTreeMap::new(),
            (41, 99),
        )
    }

    /// (transition, channel) of each line put in a group.
    fn pending(d: &Decisions) -> Vec<(i64, String)> {
        d.writes
            .iter()
            .filter_map(|w| match w {
                Write::Pending {
                    transition,
                    channel,
                    ..
                } => Some((*transition, channel.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_outage_pages_once_stays_quiet_while_it_lasts_and_resolves_once() {
        let mut d = decider();
        let gw = scope(&[]);
        let first = d.tick(&tick(T0, vec![errors(gw.clone(), 0.4)]), T0, &[]);
        // A new alert row with the next id, its transitions, one page to each channel.
        assert!(matches!(
            first.writes[0],
            Write::Alert {
                id: 42,
                state: "firing",
                ..
            }
        ));
        assert_eq!(
            pending(&first),
            [(101, "slack".into()), (101, "email".into())]
        );
        assert_eq!(first.lines.len(), 1);
        assert_eq!(
            (first.lines[0].event, first.lines[0].tier.as_str()),
            (AlertEvent::Firing, "page")
        );
        // Still failing for an hour: recorded, never said again.
        for i in 1..6 {
            let at = T0 + i * BUCKET;
            let again = d.tick(&tick(at, vec![errors(gw.clone(), 0.3)]), at, &[]);
            assert!(pending(&again).is_empty(), "bucket {i}: {:?}", again.writes);
            assert!(again.lines.is_empty());
        }
        // Two calm evaluations keep it firing; the third resolves it, told once.
        let mut resolved = Vec::new();
        for i in 6..9 {
            let at = T0 + i * BUCKET;
            resolved.push(d.tick(&tick(at, vec![]), at, &[]));
        }
        assert!(resolved[..2].iter().all(|r| r.writes.is_empty()));
        let end = &resolved[2];
        assert_eq!(end.lines.len(), 1);
        assert_eq!(
            (end.lines[0].event, end.lines[0].tier.as_str()),
            (AlertEvent::Resolved, "page")
        );
        assert_eq!(pending(end).len(), 2);
    }

    #[test]
    fn a_parent_and_its_child_starting_together_are_one_incident_and_one_message() {
        let mut d = decider();
        let findings = vec![
            errors(scope(&[("model", "gpt-4o")]), 0.3),
            errors(scope(&[("model", "gpt-4o"), ("route", "chat")]), 0.28),
        ];
        let out = d.tick(&tick(T0, findings), T0, &[]);
        assert_eq!(out.lines.len(), 1, "{:?}", out.lines);
        // The headline with the other alert listed as a member.
        assert_eq!(out.lines[0].members.len(), 1);
        assert_eq!(pending(&out).len(), 2, "one message per page channel");
        // Both alerts are put in the root's incident.
        let incidents: Vec<i64> = out
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Incident { incident, .. } => Some(*incident),
                _ => None,
            })
            .collect();
        assert!(incidents.len() >= 2 && incidents.iter().all(|&i| i == incidents[0]));
    }

    #[test]
    fn an_exception_suppresses_notification_never_recording() {
        let mut d = decider();
        let route = scope(&[("route", "chat")]);
        let exception = Exception {
            id: 7,
            rule: "error-rate".into(),
            scope: route.clone(),
            reason: "known flaky upstream".into(),
            owner: "ana".into(),
            ticket: None,
            created_ms: T0 - BUCKET,
            expires_ms: T0 + 86_400_000,
            renewals: 0,
            hits: 0,
            last_hit_ms: None,
            revoked_ms: None,
        };
        let out = d.tick(&tick(T0, vec![errors(route, 0.06)]), T0, &[exception]);
        assert!(pending(&out).is_empty());
        assert!(out.writes.contains(&Write::Hit {
            exception: 7,
            at_ms: T0
        }));
        assert!(out.writes.iter().any(|w| matches!(
            w,
            Write::Transition {
                suppressed_by: Some(7),
                ..
            }
        )));
        assert_eq!(out.lines.len(), 1);
    }

    #[test]
    fn a_pending_alert_fires_only_after_its_for() {
        let mut d = decider();
        let mut f = errors(scope(&[("route", "chat")]), 0.06);
        f.for_ms = 2 * BUCKET;
        let at = |i: i64| T0 + i * BUCKET;
        let first = d.tick(&tick(at(0), vec![f.clone()]), at(0), &[]);
        assert!(matches!(
            first.writes[0],
            Write::Alert {
                state: "pending",
                ..
            }
        ));
        assert!(first.lines.is_empty());
        assert!(
            d.tick(&tick(at(1), vec![f.clone()]), at(1), &[])
                .lines
                .is_empty()
        );
        let fired = d.tick(&tick(at(2), vec![f]), at(2), &[]);
        assert_eq!(fired.lines.len(), 1);
        assert_eq!(
            pending(&fired),
            [(fired_transition(&fired), "slack".into())]
        );
    }

    #[test]
    fn an_incident_first_told_when_it_reopens_louder_is_announced_as_firing() {
        let mut d = decider();
        let route = scope(&[("route", "chat")]);
        let at = |i: i64| T0 + i * BUCKET;
        let quiet = d.tick(&tick(at(0), vec![errors(route.clone(), 1e-6)]), at(0), &[]);
        assert_eq!(quiet.lines[0].tier, "record", "nobody is told");
        assert!(pending(&quiet).is_empty());
        for i in 1..4 {
            d.tick(&tick(at(i), vec![]), at(i), &[]);
        }
        // Another rule on the same scope, soon after, at page tier: the team hears
        // of this incident for the first time, so it is not "reopened" to them.
        let mut mix = errors(route, 0.4);
        mix.rule_name = "status-mix".into();
        let loud = d.tick(&tick(at(5), vec![mix]), at(5), &[]);
        assert_eq!(loud.lines.len(), 1, "{:?}", loud.lines);
        assert_eq!(
            (loud.lines[0].event, loud.lines[0].tier.as_str()),
            (AlertEvent::Firing, "page")
        );
        assert_eq!(
            loud.lines[0].members.len(),
            1,
            "the earlier finding is listed"
        );
        assert_eq!(pending(&loud).len(), 2);
    }

    /// The transition of the incident's announcement: the last one written.
    fn fired_transition(d: &Decisions) -> i64 {
        d.writes
            .iter()
            .rev()
            .find_map(|w| match w {
                Write::Transition { id, .. } => Some(*id),
                _ => None,
            })
            .unwrap()
    }
}
