//! Alerts: findings become alerts with a lifecycle (pending → firing → resolved,
//! keyed by rule and scope), a tier from their blast radius, exception checks, a
//! daily budget, grouping, and a durable outbox entry per notification.
//!
//! **Invariant:** every alert and transition is stored, including suppressed ones;
//! an exception stops notification, never recording.

pub mod grouping;
pub mod incident;

use std::collections::HashMap;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::detect::Finding;
use crate::domain::{Alert, AlertEvent, Lane, Message, Scope};
use crate::engine::{Output, Tick};
use crate::exceptions::Registry;
use crate::store::{StoreError, alerts as sql, outbox};
use crate::tiers::Tiers;
use crate::tiers::{Admission, Budget, flood_summary, flooding_alerts};
use grouping::Grouper;
use incident::{Incident, Key};

/// `[routing]` in the config: how notifications are grouped and repeated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingParams {
    /// Seconds a new group waits for more alerts before its first message.
    pub group_wait_seconds: u64,
    /// Seconds between two messages of one group.
    pub group_interval_seconds: u64,
    /// Seconds after which a still-firing incident of a tier above the digest is
    /// notified again.
    pub repeat_interval_seconds: u64,
    /// Seconds apart (in data time) two related alerts may start and still be one
    /// incident: the same bucket or the next few (a rule's `for` delays some).
    pub incident_window_seconds: u64,
    /// Seconds after an incident resolved during which a new alert on one of its
    /// scopes reopens it (quietly) instead of opening a new incident.
    pub reopen_window_seconds: u64,
}

impl Default for RoutingParams {
    fn default() -> RoutingParams {
        RoutingParams {
            group_wait_seconds: 30,
            group_interval_seconds: 300,
            repeat_interval_seconds: 24 * 3600,
            incident_window_seconds: 1800,
            reopen_window_seconds: 6 * 3600,
        }
    }
}

/// Where the stage's notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Durably into the outbox, for the notification workers (`serve`).
    Outbox,
    /// Grouped and budgeted exactly as live, then kept in memory for the caller
    /// (`replay`): a backtest shows what each channel would have received, and a
    /// replay store never holds messages a later `serve` would deliver.
    Count,
}

/// A message the stage sent (or, under `Delivery::Count`, would have sent).
#[derive(Debug, Clone)]
pub struct Sent {
    /// The channel's name.
    pub channel: String,
    /// When, on the stage's clock, ms.
    pub at_ms: i64,
    /// The message.
    pub message: Message,
}

/// Whether a line counted against its tier's budget when it was routed: firing
/// lines do; resolves and meta-alerts do not.
fn budgeted(line: &Alert) -> bool {
    line.event == AlertEvent::Firing && line.lane != Lane::Meta
}

#[derive(Debug)]
struct Active {
    id: i64,
    firing: bool,
    started_ms: i64,
    suppressed_by: Option<i64>,
    lane: Lane,
    last: Option<Alert>,
    notified_ms: i64,
    /// Evaluations of its lane in a row that did not find it.
    misses: u32,
    /// Its incident's id, once it fired.
    incident: Option<i64>,
    /// Models its scope's traffic goes to (links it to related scopes).
    links: Vec<String>,
}

/// Evaluations in a row without the condition before a firing alert resolves, so an
/// alert near its threshold does not flap between firing and resolved.
const RESOLVE_AFTER: u32 = 3;

/// The state a transition row records for a line's event.
fn event_state(event: AlertEvent) -> &'static str {
    match event {
        AlertEvent::Firing => "firing",
        AlertEvent::Updated => "updated",
        AlertEvent::Reopened => "reopened",
        AlertEvent::Resolved => "resolved",
    }
}

/// The alert stage. Owns its own connection to the daemon's database.
pub struct AlertStage {
    conn: Connection,
    tiers: Tiers,
    budget: Budget,
    registry: Option<Registry>,
    routing: RoutingParams,
    grouper: Grouper,
    delivery: Delivery,
    /// Messages kept under `Delivery::Count`, until taken.
    counted: Vec<Sent>,
    active: HashMap<Key, Active>,
    /// Open incidents, and resolved ones within the reopen window, by id.
    incidents: std::collections::BTreeMap<i64, Incident>,
    /// What an alert's resolve says when its level was learned as the new normal.
    learned: HashMap<Key, String>,
    /// Under `Delivery::Count`: the newest evaluation's judged time.
    replay_clock_ms: i64,
    last_housekeeping_ms: i64,
    /// Lines that waited in a group when the daemon last stopped, regrouped by
    /// `resume` (which has the clock); `None` once it ran, and in replay.
    regroup: Option<Vec<sql::PendingLine>>,
}

const HOUR_MS: i64 = 3_600_000;

impl AlertStage {
    /// An alert stage on `conn`. Under `Delivery::Count` (replay) nothing is queued
    /// for delivery; what would have been sent is kept for `take_sent`.
    pub fn new(
        conn: Connection,
        tiers: Tiers,
        registry: Option<Registry>,
        routing: RoutingParams,
        delivery: Delivery,
    ) -> Result<AlertStage, StoreError> {
        let mut active = HashMap::new();
        let mut incidents = std::collections::BTreeMap::new();
        for a in sql::open_alerts(&conn)? {
            let lane = match a.lane.as_str() {
                "cost" => Lane::Cost,
                "eval" => Lane::Eval,
                "meta" => Lane::Meta,
                _ => Lane::Structure,
            };
            // A firing alert's last line lets it resolve with a notification; its last
            // firing notification (first or repeat) is when the next repeat counts from.
            let fired = match a.firing {
                true => sql::last_transition(&conn, a.id, "firing")?,
                false => None,
            };
            let notified_ms = fired.as_ref().map_or(a.started_ms, |(_, at)| *at);
            let key = (a.rule, a.scope);
            let last = fired.map(|(line, _)| line);
            // Its incident comes back around the first of its alerts still open.
            let incident = match (a.incident_id, &last) {
                (Some(id), Some(line)) => {
                    let inc = incidents.entry(id).or_insert_with(|| {
                        let mut inc =
                            Incident::open(id, key.clone(), line.clone(), vec![], a.started_ms);
                        inc.notified_rank = Some(line.tier_rank);
                        inc.notified_ms = notified_ms;
                        inc.suppressed_by = a.suppressed_by;
                        inc.reopens = a.reopens;
                        inc
                    });
                    inc.set(key.clone(), line.clone(), vec![]);
                    Some(id)
                }
                _ => None,
            };
            active.insert(
                key,
                Active {
                    id: a.id,
                    firing: a.firing,
                    started_ms: a.started_ms,
                    suppressed_by: a.suppressed_by,
                    lane,
                    last,
                    notified_ms,
                    misses: 0,
                    incident,
                    links: Vec::new(),
                },
            );
        }
        let budget = Budget::new(&tiers);
        let regroup = if delivery == Delivery::Outbox {
            Some(sql::pending_lines(&conn)?)
        } else {
            None
        };
        if let Some(lines) = regroup.as_ref().filter(|r| !r.is_empty()) {
            tracing::info!(
                lines = lines.len(),
                "alert lines that waited in a group at the last stop are regrouped"
            );
        }
        Ok(AlertStage {
            conn,
            grouper: Grouper::new(
                routing.group_wait_seconds as i64 * 1000,
                routing.group_interval_seconds as i64 * 1000,
            ),
            tiers,
            budget,
            registry,
            routing,
            delivery,
            counted: Vec::new(),
            active,
            incidents,
            learned: HashMap::new(),
            replay_clock_ms: i64::MIN,
            last_housekeeping_ms: i64::MIN,
            regroup,
        })
    }

    /// Store and route what the engine produced; `now_ms` is the clock notifications
    /// and budgets run on (wall clock live, data clock in replay). Returns every
    /// firing and resolved line, suppressed ones included.
    pub fn handle(&mut self, out: Output, now_ms: i64) -> Result<Vec<Alert>, StoreError> {
        self.resume(now_ms)?;
        for c in &out.changes {
            sql::insert_change(&self.conn, c, now_ms)?;
        }
        for r in &out.reports {
            let report = serde_json::to_value(r).unwrap_or(Value::Null);
            sql::set_impact(&self.conn, &r.change, &report)?;
            tracing::info!(kind = r.change.kind.as_str(), scope = %crate::domain::scope_label(&r.scope), summary = %r.summary, "change-impact report");
            // Reports are read in the daily digest (and `driftwarden changes`), not
            // sent one by one: an announced change stays silent, and a detected one
            // is told by its alert.
        }
        let mut lines = Vec::new();
        for tick in &out.ticks {
            // A replay's clock is each evaluation's own time, so what it groups and
            // repeats is what a live daemon would have.
            let now_ms = match self.delivery {
                Delivery::Outbox => now_ms,
                Delivery::Count => {
                    self.replay_clock_ms = self.replay_clock_ms.max(tick.judged_ms);
                    self.flush(self.replay_clock_ms)?;
                    self.replay_clock_ms
                }
            };
            // One transaction per evaluation: an alert's transition and the
            // `notify_pending` rows of its notification are stored together or not at all.
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            match self.tick(tick, now_ms, &mut lines) {
                Ok(()) => self.conn.execute_batch("COMMIT")?,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        if now_ms.div_euclid(HOUR_MS) != self.last_housekeeping_ms.div_euclid(HOUR_MS) {
            self.last_housekeeping_ms = now_ms;
            self.housekeeping(now_ms, &mut lines)?;
        }
        self.flush(now_ms)?;
        Ok(lines)
    }

    /// Send what is due (call periodically even without new ticks). A message goes
    /// to the outbox in the same transaction that clears its lines' `notify_pending`
    /// rows, so after a crash each line is either in the outbox or regrouped.
    pub fn flush(&mut self, now_ms: i64) -> Result<(), StoreError> {
        self.resume(now_ms)?;
        let due = self.grouper.flush(now_ms);
        if due.is_empty() {
            return Ok(());
        }
        if self.delivery == Delivery::Count {
            for f in due {
                self.send(&f.channel, f.message, now_ms)?;
            }
            return Ok(());
        }
        let written = (|| -> Result<(), StoreError> {
            let tx = self.conn.unchecked_transaction()?;
            for f in &due {
                outbox::enqueue(&tx, &f.channel, &f.message, now_ms)?;
                sql::clear_pending(&tx, &f.transitions, &f.channel)?;
            }
            Ok(tx.commit()?)
        })();
        if let Err(e) = written {
            // Nothing was written: the lines wait in their groups for the next flush.
            for f in due {
                let tier = f.message.tier.unwrap_or_default();
                for (t, line) in f.transitions.into_iter().zip(f.message.alerts) {
                    self.grouper.add(&tier, &f.channel, t, line, now_ms);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Once, at the first clock after a start: count the day's notifications already
    /// in the outbox against the budget, and regroup the lines that waited in a group
    /// when the daemon stopped (admitted then, so they count too).
    fn resume(&mut self, now_ms: i64) -> Result<(), StoreError> {
        if self.regroup.is_none() {
            return Ok(());
        }
        let day_start = now_ms - now_ms.rem_euclid(86_400_000);
        let mut sent: HashMap<(String, String), u32> = HashMap::new();
        for row in outbox::created_since(&self.conn, day_start)? {
            let Some(tier) = row.message.tier else {
                continue;
            };
            let firing = row.message.alerts.iter().filter(|a| budgeted(a)).count() as u32;
            *sent.entry((tier, row.channel)).or_default() += firing;
        }
        for p in self.regroup.take().unwrap_or_default() {
            let routed = self
                .tiers
                .by_name(&p.tier)
                .is_some_and(|d| d.tier.channels.contains(&p.channel));
            if !routed {
                // The configuration changed since: the tier no longer sends there.
                tracing::warn!(tier = %p.tier, channel = %p.channel, rule = %p.line.rule, "a waiting alert line's tier no longer routes to its channel; dropped");
                sql::clear_pending(&self.conn, &[p.transition], &p.channel)?;
                continue;
            }
            if budgeted(&p.line) {
                *sent.entry((p.tier.clone(), p.channel.clone())).or_default() += 1;
                // It is the alert's latest notification: a repeat counts from now.
                if let Some(a) = self
                    .active
                    .get_mut(&(p.line.rule.clone(), p.line.scope.clone()))
                {
                    a.notified_ms = now_ms;
                }
            }
            self.grouper
                .add(&p.tier, &p.channel, p.transition, p.line, now_ms);
        }
        for ((tier, channel), n) in sent {
            self.budget.seed(&tier, &channel, now_ms, n);
        }
        Ok(())
    }

    /// End of a replay: close the budget's days so floods are reported.
    pub fn finish(&mut self, at_ms: i64) -> Result<Vec<Alert>, StoreError> {
        let mut lines = Vec::new();
        self.floods(i64::MAX, at_ms, &mut lines)?;
        // Every group is due by then.
        let r = &self.routing;
        self.flush(at_ms + (r.group_wait_seconds + r.group_interval_seconds) as i64 * 1000)?;
        Ok(lines)
    }

    /// Messages counted under `Delivery::Count` since the last call.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.counted)
    }

    /// One message to one channel: into the outbox, or kept for counting.
    fn send(&mut self, channel: &str, message: Message, now_ms: i64) -> Result<(), StoreError> {
        match self.delivery {
            Delivery::Outbox => {
                outbox::enqueue(&self.conn, channel, &message, now_ms)?;
            }
            Delivery::Count => self.counted.push(Sent {
                channel: channel.to_string(),
                at_ms: now_ms,
                message,
            }),
        }
        Ok(())
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

    fn suppression(&self, a: &Alert, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let Some(registry) = &self.registry else {
            return Ok(None);
        };
        registry
            .matching(&self.conn, &a.rule, &a.scope, a.tier_rank, now_ms)
            .map_err(|e| StoreError::Migrate(e.to_string()))
    }

    fn tick(&mut self, tick: &Tick, now_ms: i64, lines: &mut Vec<Alert>) -> Result<(), StoreError> {
        let reopen_ms = self.routing.reopen_window_seconds as i64 * 1000;
        self.incidents
            .retain(|_, i| i.resolved_ms.is_none_or(|r| tick.at_ms - r <= reopen_ms));
        for (rule, scope, note) in &tick.learned {
            self.learned
                .insert((rule.clone(), scope.clone()), note.clone());
        }
        let mut seen = std::collections::HashSet::new();
        let mut starting = Vec::new();
        for f in &tick.findings {
            let key = (f.rule_name.clone(), f.labels.clone());
            seen.insert(key.clone());
            let line = self.line(f, tick.at_ms);
            match self.active.get_mut(&key) {
                None => {
                    let fire = f.for_ms == 0;
                    let state = if fire { "firing" } else { "pending" };
                    let id = sql::insert(&self.conn, &line, state, tick.at_ms, None)?;
                    if !fire {
                        sql::transition(&self.conn, id, &line, state, None)?;
                    }
                    self.active.insert(
                        key.clone(),
                        Active {
                            id,
                            firing: fire,
                            started_ms: tick.at_ms,
                            suppressed_by: None,
                            lane: f.lane,
                            last: Some(line.clone()),
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
                Some(_) => self.still_firing(&key, line, f.links.clone(), now_ms)?,
            }
        }
        self.start_firing(starting, now_ms, lines)?;
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
            self.resolve(&key, tick.at_ms, now_ms, lines)?;
        }
        Ok(())
    }

    /// Alerts that start firing in this evaluation, earliest seen first: each reopens
    /// a recently resolved incident it was part of, joins an open incident it is
    /// related to, or opens one of its own. Incidents opened here are announced once,
    /// after every alert of the evaluation found its place, with all their members.
    fn start_firing(
        &mut self,
        mut keys: Vec<Key>,
        now_ms: i64,
        lines: &mut Vec<Alert>,
    ) -> Result<(), StoreError> {
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
                    let suppressed = self.suppression(&line, now_ms)?;
                    let mut inc =
                        Incident::open(id, key.clone(), line.clone(), links.clone(), started);
                    inc.suppressed_by = suppressed;
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
            let (suppressed, reopens) = (inc.suppressed_by, inc.reopens);
            sql::update(&self.conn, id, &line, "firing", suppressed)?;
            sql::set_incident(&self.conn, id, inc_id, reopens)?;
            if inc_id != id {
                sql::set_incident(&self.conn, inc_id, inc_id, reopens)?;
            }
            if let Some(a) = self.active.get_mut(&key) {
                a.incident = Some(inc_id);
                a.suppressed_by = suppressed;
            }
            if event == AlertEvent::Firing || opened.contains(&inc_id) {
                // Announced with its incident below.
                sql::transition(&self.conn, id, &line, "firing", suppressed)?;
                continue;
            }
            // A consequence worse than what the team was told raises the incident's
            // tier; an incident nobody was told of yet is announced as firing.
            let told = inc.notified_rank;
            let event = match told {
                None if event == AlertEvent::Updated => AlertEvent::Firing,
                _ => event,
            };
            let out = inc.line(event, at);
            let louder = told.map_or(self.tiers.above_digest(&out.tier), |r| out.tier_rank < r);
            if event == AlertEvent::Updated && !joins && !louder {
                // A member firing again inside its open incident: nothing new to say.
                sql::transition(&self.conn, id, &line, "firing", suppressed)?;
                continue;
            }
            let transition = sql::transition(&self.conn, id, &out, event_state(event), suppressed)?;
            if louder && suppressed.is_none() {
                self.notify_incident(inc_id, &out, transition, now_ms)?;
            }
            lines.push(out);
        }
        for inc_id in opened {
            let inc = &self.incidents[&inc_id];
            let (out, suppressed) = (
                inc.line(AlertEvent::Firing, inc.root_at()),
                inc.suppressed_by,
            );
            let transition = sql::transition(&self.conn, inc_id, &out, "firing", suppressed)?;
            match (suppressed, &self.registry) {
                (Some(exception), Some(registry)) => {
                    registry
                        .record_hit(&self.conn, exception, now_ms)
                        .map_err(|e| StoreError::Migrate(e.to_string()))?;
                    tracing::info!(rule = %out.rule, exception, "incident suppressed by an exception");
                }
                _ => self.notify_incident(inc_id, &out, transition, now_ms)?,
            }
            lines.push(out);
        }
        Ok(())
    }

    /// An alert still firing: keep its incident's latest line; notify again when a
    /// repeat is due, its exception ended, or a member's tier rose.
    fn still_firing(
        &mut self,
        key: &Key,
        line: Alert,
        links: Vec<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let Some(a) = self.active.get_mut(key) else {
            return Ok(());
        };
        let mut line = line;
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
            sql::update(&self.conn, id, &line, "firing", None)?;
            return Ok(());
        };
        inc.set(key.clone(), line.clone(), links);
        let was = inc.suppressed_by;
        let out = inc.line(AlertEvent::Firing, line.at_ms);
        let root = inc.root == *key;
        // An exception that expired or was revoked lets the incident flow again.
        let still = match (was, root) {
            (Some(_), true) => self.suppression(&out, now_ms)?,
            _ => was,
        };
        let inc = self
            .incidents
            .get_mut(&inc_id.expect("has one"))
            .expect("open");
        inc.suppressed_by = still;
        sql::update(&self.conn, id, &line, "firing", still)?;
        if still.is_some() {
            return Ok(());
        }
        let repeat = self.routing.repeat_interval_seconds as i64 * 1000;
        let repeat_due = inc.notified_rank.is_some()
            && now_ms - inc.notified_ms >= repeat
            && self.tiers.above_digest(&out.tier);
        let louder = inc.notified_rank.is_some_and(|r| out.tier_rank < r);
        let unsuppressed = was.is_some();
        if repeat_due || louder || unsuppressed {
            let out = match louder && !repeat_due {
                true => inc.line(AlertEvent::Updated, line.at_ms),
                false => out,
            };
            let inc_id = inc.id;
            let transition =
                sql::transition(&self.conn, inc_id, &out, event_state(out.event), None)?;
            self.notify_incident(inc_id, &out, transition, now_ms)?;
        }
        Ok(())
    }

    /// An alert's condition is gone: record it, and resolve its incident once none
    /// of the incident's alerts still fires (notified once, if the team was told).
    fn resolve(
        &mut self,
        key: &Key,
        at_ms: i64,
        now_ms: i64,
        lines: &mut Vec<Alert>,
    ) -> Result<(), StoreError> {
        let Some(a) = self.active.remove(key) else {
            return Ok(());
        };
        let Some(mut line) = a.last else {
            sql::mark_resolved(&self.conn, a.id, at_ms)?;
            return Ok(());
        };
        line.event = AlertEvent::Resolved;
        line.at_ms = at_ms;
        // The last firing line's numbers describe the trouble, not its end: say so.
        line.summary = match self.learned.remove(key) {
            Some(note) => note,
            None => format!("back inside its baseline; while firing: {}", line.summary),
        };
        sql::update(&self.conn, a.id, &line, "resolved", a.suppressed_by)?;
        if !a.firing {
            return Ok(());
        }
        sql::transition(&self.conn, a.id, &line, "resolved", a.suppressed_by)?;
        let Some(inc_id) = a.incident else {
            return Ok(());
        };
        if let Some(inc) = self.incidents.get_mut(&inc_id) {
            inc.set(key.clone(), line, a.links);
        }
        if self
            .active
            .values()
            .any(|x| x.firing && x.incident == Some(inc_id))
        {
            return Ok(());
        }
        let Some(inc) = self.incidents.get_mut(&inc_id) else {
            return Ok(());
        };
        inc.resolved_ms = Some(at_ms);
        let out = inc.line(AlertEvent::Resolved, at_ms);
        let transition = sql::transition(&self.conn, inc_id, &out, "resolved", inc.suppressed_by)?;
        // A flapping incident says "resolved" once, not after every reopen.
        if inc.suppressed_by.is_none() && inc.notified_rank.is_some() && !inc.resolve_told {
            inc.resolve_told = true;
            self.route(&out, transition, now_ms)?;
        }
        lines.push(out);
        Ok(())
    }

    /// Route an incident's line and remember what the team was told.
    fn notify_incident(
        &mut self,
        inc_id: i64,
        out: &Alert,
        transition: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.route(out, transition, now_ms)? {
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
        Ok(())
    }

    /// Send a line to its tier's channels; whether the tier notifies one by one.
    /// Digest-tier lines wait for the daily digest, which reads them from the store.
    fn route(&mut self, line: &Alert, transition: i64, now_ms: i64) -> Result<bool, StoreError> {
        let Some(def) = self.tiers.by_name(&line.tier) else {
            return Ok(false);
        };
        if !self.tiers.above_digest(&line.tier) || def.tier.channels.is_empty() {
            return Ok(false);
        }
        for channel in def.tier.channels.clone() {
            // Resolves are not budgeted: they close what was already said.
            let admitted = !budgeted(line)
                || self.budget.admit(&line.tier, &channel, &line.rule, now_ms) == Admission::Send;
            if admitted {
                self.group(&line.tier, &channel, transition, line, now_ms)?;
            }
        }
        Ok(true)
    }

    /// Put a line in its group, durably: a crash before the group's message reaches
    /// the outbox regroups it at the next start.
    fn group(
        &mut self,
        tier: &str,
        channel: &str,
        transition: i64,
        line: &Alert,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.delivery == Delivery::Outbox {
            sql::add_pending(&self.conn, transition, channel, tier)?;
        }
        self.grouper
            .add(tier, channel, transition, line.clone(), now_ms);
        Ok(())
    }

    fn floods(
        &mut self,
        until_ms: i64,
        at_ms: i64,
        lines: &mut Vec<Alert>,
    ) -> Result<(), StoreError> {
        let floods = self.budget.take_floods(until_ms);
        if floods.is_empty() {
            return Ok(());
        }
        for f in &floods {
            let message = Message {
                title: format!("[{}] {} alerts folded", f.tier, f.folded),
                tier: Some(f.tier.clone()),
                alerts: Vec::new(),
                text: flood_summary(f),
            };
            self.send(&f.channel, message, at_ms)?;
        }
        let meta = self.tiers.meta_tier().clone();
        for alert in flooding_alerts(&floods, &meta, at_ms) {
            self.meta_alert(alert, at_ms, lines)?;
        }
        Ok(())
    }

    fn meta_alert(
        &mut self,
        alert: Alert,
        now_ms: i64,
        lines: &mut Vec<Alert>,
    ) -> Result<(), StoreError> {
        let key = (alert.rule.clone(), alert.scope.clone());
        if self.active.contains_key(&key) {
            return Ok(());
        }
        let id = sql::insert(&self.conn, &alert, "firing", alert.at_ms, None)?;
        let transition = sql::transition(&self.conn, id, &alert, "firing", None)?;
        for channel in self.tiers.meta_tier().channels.clone() {
            self.group(&alert.tier, &channel, transition, &alert, now_ms)?;
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
        lines.push(alert);
        Ok(())
    }

    fn housekeeping(&mut self, now_ms: i64, lines: &mut Vec<Alert>) -> Result<(), StoreError> {
        self.floods(now_ms, now_ms, lines)?;
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        let err = |e: crate::exceptions::ExceptionError| StoreError::Migrate(e.to_string());
        registry
            .sweep_expired(&mut self.conn, now_ms)
            .map_err(err)?;
        let shares: HashMap<String, f64> =
            sql::suppressed_share(&self.conn, now_ms - 7 * 24 * HOUR_MS)?
                .into_iter()
                .collect();
        let meta = self.tiers.meta_tier().clone();
        let creeping = registry
            .creep(&self.conn, now_ms, &shares, &meta)
            .map_err(err)?;
        let keys: std::collections::HashSet<(String, Scope)> = creeping
            .iter()
            .map(|a| (a.rule.clone(), a.scope.clone()))
            .collect();
        for alert in creeping {
            self.meta_alert(alert, now_ms, lines)?;
        }
        // Creep that went away resolves.
        let mut gone: Vec<(String, Scope)> = self
            .active
            .keys()
            .filter(|(rule, _)| rule == "exception_creep")
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        gone.sort();
        for key in gone {
            if let Some(a) = self.active.remove(&key) {
                if let Some(mut line) = a.last {
                    line.event = AlertEvent::Resolved;
                    line.at_ms = now_ms;
                    sql::update(&self.conn, a.id, &line, "resolved", None)?;
                    sql::transition(&self.conn, a.id, &line, "resolved", None)?;
                    lines.push(line);
                }
            }
        }
        Ok(())
    }
}
