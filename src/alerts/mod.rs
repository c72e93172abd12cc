//! Alerts: findings become alerts with a lifecycle (pending → firing → resolved,
//! keyed by rule and scope), a tier from their blast radius, exception checks, a
//! daily budget, grouping, and a durable outbox entry per notification.
//!
//! **Invariant:** every alert and transition is stored, including suppressed ones;
//! an exception stops notification, never recording.

pub mod grouping;

use std::collections::HashMap;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::detect::Finding;
use crate::domain::{Alert, AlertEvent, Lane, Scope};
use crate::engine::{Output, Tick};
use crate::exceptions::Registry;
use crate::notify::Message;
use crate::store::{StoreError, alerts as sql, outbox};
use crate::tiers::Tiers;
use crate::tiers::{Admission, Budget, flood_summary, flooding_alerts};
use grouping::Grouper;

/// `[routing]` in the config: how notifications are grouped and repeated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingParams {
    /// Seconds a new group waits for more alerts before its first message.
    pub group_wait_seconds: u64,
    /// Seconds between two messages of one group.
    pub group_interval_seconds: u64,
    /// Seconds after which a still-firing alert is notified again.
    pub repeat_interval_seconds: u64,
}

impl Default for RoutingParams {
    fn default() -> RoutingParams {
        RoutingParams {
            group_wait_seconds: 30,
            group_interval_seconds: 300,
            repeat_interval_seconds: 4 * 3600,
        }
    }
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
}

/// Evaluations in a row without the condition before a firing alert resolves, so an
/// alert near its threshold does not flap between firing and resolved.
const RESOLVE_AFTER: u32 = 3;

/// The alert stage. Owns its own connection to the daemon's database.
pub struct AlertStage {
    conn: Connection,
    tiers: Tiers,
    budget: Budget,
    registry: Option<Registry>,
    routing: RoutingParams,
    grouper: Grouper,
    notify: bool,
    active: HashMap<(String, Scope), Active>,
    last_housekeeping_ms: i64,
    /// Lines that waited in a group when the daemon last stopped, regrouped by
    /// `resume` (which has the clock); `None` once it ran, and in replay.
    regroup: Option<Vec<sql::PendingLine>>,
}

const HOUR_MS: i64 = 3_600_000;

impl AlertStage {
    /// An alert stage on `conn`. With `notify` false (replay), nothing is queued
    /// for delivery; alerts are still stored and returned.
    pub fn new(
        conn: Connection,
        tiers: Tiers,
        registry: Option<Registry>,
        routing: RoutingParams,
        notify: bool,
    ) -> Result<AlertStage, StoreError> {
        let mut active = HashMap::new();
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
            active.insert(
                key,
                Active {
                    id: a.id,
                    firing: a.firing,
                    started_ms: a.started_ms,
                    suppressed_by: a.suppressed_by,
                    lane,
                    last: fired.map(|(line, _)| line),
                    notified_ms,
                    misses: 0,
                },
            );
        }
        let budget = Budget::new(&tiers);
        let regroup = if notify {
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
            notify,
            active,
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
            self.inform(
                &format!(
                    "Change impact: {} {}",
                    r.change.kind.as_str(),
                    crate::domain::scope_label(&r.scope)
                ),
                &r.summary,
                now_ms,
            )?;
        }
        let mut lines = Vec::new();
        for tick in &out.ticks {
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
        self.flush(i64::MAX)?;
        Ok(lines)
    }

    fn inform(&mut self, title: &str, text: &str, now_ms: i64) -> Result<(), StoreError> {
        if !self.notify {
            return Ok(());
        }
        let meta = self.tiers.meta_tier().clone();
        let message = Message {
            title: title.to_string(),
            tier: None,
            alerts: Vec::new(),
            text: text.to_string(),
        };
        for channel in &meta.channels {
            outbox::enqueue(&self.conn, channel, &message, now_ms)?;
        }
        Ok(())
    }

    fn line(&self, f: &Finding, at_ms: i64) -> Alert {
        let assignment = self.tiers.assign(&f.impact, f.max_tier.as_deref());
        let mut evidence = f.evidence.clone();
        evidence.insert("tier".into(), assignment.evidence(&f.impact));
        Alert {
            event: AlertEvent::Firing,
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
        let mut seen = std::collections::HashSet::new();
        for f in &tick.findings {
            let key = (f.rule_name.clone(), f.labels.clone());
            seen.insert(key.clone());
            let line = self.line(f, tick.at_ms);
            match self
                .active
                .get(&key)
                .map(|a| (a.firing, a.started_ms, a.suppressed_by, a.notified_ms, a.id))
            {
                None => {
                    let fire = f.for_ms == 0;
                    let suppressed = if fire {
                        self.suppression(&line, now_ms)?
                    } else {
                        None
                    };
                    let state = if fire { "firing" } else { "pending" };
                    let id = sql::insert(&self.conn, &line, state, tick.at_ms, suppressed)?;
                    let transition = sql::transition(&self.conn, id, &line, state, suppressed)?;
                    self.active.insert(
                        key,
                        Active {
                            id,
                            firing: fire,
                            started_ms: tick.at_ms,
                            suppressed_by: suppressed,
                            lane: f.lane,
                            last: Some(line.clone()),
                            notified_ms: now_ms,
                            misses: 0,
                        },
                    );
                    if fire {
                        self.fired(&line, suppressed, transition, now_ms, lines)?;
                    }
                }
                Some((false, started, _, _, id)) => {
                    if tick.at_ms - started >= f.for_ms {
                        let suppressed = self.suppression(&line, now_ms)?;
                        sql::update(&self.conn, id, &line, "firing", suppressed)?;
                        let transition =
                            sql::transition(&self.conn, id, &line, "firing", suppressed)?;
                        if let Some(a) = self.active.get_mut(&key) {
                            a.firing = true;
                            a.suppressed_by = suppressed;
                            a.notified_ms = now_ms;
                        }
                        self.fired(&line, suppressed, transition, now_ms, lines)?;
                    }
                    if let Some(a) = self.active.get_mut(&key) {
                        a.last = Some(line);
                    }
                }
                Some((true, _, suppressed, notified, id)) => {
                    // An exception that expired or was revoked lets the alert flow again.
                    let still = match suppressed {
                        Some(_) => self.suppression(&line, now_ms)?,
                        None => None,
                    };
                    sql::update(&self.conn, id, &line, "firing", still)?;
                    let repeat =
                        now_ms - notified >= self.routing.repeat_interval_seconds as i64 * 1000;
                    if (suppressed.is_some() && still.is_none()) || (still.is_none() && repeat) {
                        let transition = sql::transition(&self.conn, id, &line, "firing", None)?;
                        self.route(&line, transition, now_ms)?;
                        if let Some(a) = self.active.get_mut(&key) {
                            a.notified_ms = now_ms;
                        }
                    }
                    if let Some(a) = self.active.get_mut(&key) {
                        a.suppressed_by = still;
                        a.last = Some(line);
                    }
                }
            }
        }
        for key in &seen {
            if let Some(a) = self.active.get_mut(key) {
                a.misses = 0;
            }
        }
        let mut missed: Vec<(String, Scope)> = self
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
            let Some(a) = self.active.remove(&key) else {
                continue;
            };
            let Some(mut line) = a.last else {
                sql::mark_resolved(&self.conn, a.id, tick.at_ms)?;
                continue;
            };
            line.event = AlertEvent::Resolved;
            line.at_ms = tick.at_ms;
            sql::update(&self.conn, a.id, &line, "resolved", a.suppressed_by)?;
            if a.firing {
                let transition =
                    sql::transition(&self.conn, a.id, &line, "resolved", a.suppressed_by)?;
                if a.suppressed_by.is_none() {
                    self.route(&line, transition, now_ms)?;
                }
                lines.push(line);
            }
        }
        Ok(())
    }

    fn fired(
        &mut self,
        line: &Alert,
        suppressed: Option<i64>,
        transition: i64,
        now_ms: i64,
        lines: &mut Vec<Alert>,
    ) -> Result<(), StoreError> {
        match (suppressed, &self.registry) {
            (Some(id), Some(registry)) => {
                registry
                    .record_hit(&self.conn, id, now_ms)
                    .map_err(|e| StoreError::Migrate(e.to_string()))?;
                tracing::info!(rule = %line.rule, exception = id, "alert suppressed by an exception");
            }
            _ => self.route(line, transition, now_ms)?,
        }
        lines.push(line.clone());
        Ok(())
    }

    fn route(&mut self, line: &Alert, transition: i64, now_ms: i64) -> Result<(), StoreError> {
        if !self.notify {
            return Ok(());
        }
        let Some(def) = self.tiers.by_name(&line.tier) else {
            return Ok(());
        };
        for channel in def.tier.channels.clone() {
            // Resolves are not budgeted: they close what was already said.
            let admitted = !budgeted(line)
                || self.budget.admit(&line.tier, &channel, &line.rule, now_ms) == Admission::Send;
            if admitted {
                self.group(&line.tier, &channel, transition, line, now_ms)?;
            }
        }
        Ok(())
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
        sql::add_pending(&self.conn, transition, channel, tier)?;
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
            if self.notify {
                let message = Message {
                    title: format!("[{}] {} alerts folded", f.tier, f.folded),
                    tier: Some(f.tier.clone()),
                    alerts: Vec::new(),
                    text: flood_summary(f),
                };
                outbox::enqueue(&self.conn, &f.channel, &message, at_ms)?;
            }
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
        if self.notify {
            for channel in self.tiers.meta_tier().channels.clone() {
                self.group(&alert.tier, &channel, transition, &alert, now_ms)?;
            }
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
