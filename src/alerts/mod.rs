//! Alerts: findings become alerts with a lifecycle (pending → firing → resolved,
//! keyed by rule and scope), a tier from their blast radius, exception checks, a
//! daily budget, grouping, and a durable outbox entry per notification.
//!
//! The decisions are made without IO in [`decide`]; this stage loads what they
//! start from, applies what they write in one transaction per evaluation, and
//! delivers what their groups release.
//!
//! **Invariant:** every alert and transition is stored, including suppressed ones;
//! an exception stops notification, never recording.

pub mod decide;
pub mod grouping;
pub mod incident;

use std::collections::{BTreeMap, HashMap};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Alert, Exception, Message};
use crate::engine::Output;
use crate::exceptions::{ExceptionError, Registry};
use crate::store::snapshot::{self, SnapshotMeta};
use crate::store::{StoreError, alerts as sql, outbox};
use crate::tiers::Tiers;
use decide::{Active, Decider, Decisions, Write, budgeted};
use incident::Incident;

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

/// What can stop the alert stage.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The exception registry failed (expiring, or counting what it suppressed).
    #[error("exception registry: {0}")]
    Exceptions(#[from] ExceptionError),
}

/// The alert stage. Owns its own connection to the daemon's database.
pub struct AlertStage {
    conn: Connection,
    registry: Option<Registry>,
    delivery: Delivery,
    decider: Decider,
    /// Messages kept under `Delivery::Count`, until taken.
    counted: Vec<Sent>,
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
        let mut incidents = BTreeMap::new();
        for a in sql::open_alerts(&conn)? {
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
                    lane: a.lane,
                    last,
                    notified_ms,
                    misses: 0,
                    incident,
                    links: Vec::new(),
                },
            );
        }
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
        let last_ids = sql::last_ids(&conn)?;
        Ok(AlertStage {
            conn,
            decider: Decider::new(tiers, routing, active, incidents, last_ids),
            registry,
            delivery,
            counted: Vec::new(),
            replay_clock_ms: i64::MIN,
            last_housekeeping_ms: i64::MIN,
            regroup,
        })
    }

    /// Store and route what the engine produced; `now_ms` is the clock notifications
    /// and budgets run on (wall clock live, data clock in replay). Returns every
    /// firing and resolved line, suppressed ones included.
    pub fn handle(&mut self, out: Output, now_ms: i64) -> Result<Vec<Alert>, AlertError> {
        self.handle_and_snapshot(out, now_ms, None, None)
    }

    /// `handle`, storing the analysis snapshot that covers `out` in the transaction
    /// of its evaluations' writes: after a crash the store holds both or neither.
    /// `write_ms` of the snapshot's description gains the time its insert took.
    pub fn handle_and_snapshot(
        &mut self,
        out: Output,
        now_ms: i64,
        snapshot: Option<(&mut SnapshotMeta, &[u8])>,
        decided_ms: Option<i64>,
    ) -> Result<Vec<Alert>, AlertError> {
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
        let mut decided = Decisions::default();
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
            let exceptions = self.exceptions(now_ms)?;
            let tick = self.decider.tick(tick, now_ms, &exceptions);
            let writes = self.count_sends(tick.writes);
            decided.writes.extend(writes);
            decided.lines.extend(tick.lines);
        }
        // One transaction for the evaluations of one step of the clock and the
        // snapshot of the state after them: an alert's transition and the
        // `notify_pending` rows of its notification are stored together or not at
        // all, and a restart resumes from a state whose decisions are all stored.
        let mut lines = self.apply(decided, snapshot, decided_ms)?;
        if now_ms.div_euclid(HOUR_MS) != self.last_housekeeping_ms.div_euclid(HOUR_MS) {
            self.last_housekeeping_ms = now_ms;
            lines.extend(self.housekeeping(now_ms)?);
        }
        self.flush(now_ms)?;
        Ok(lines)
    }

    /// The exceptions active at `now_ms` (none without a registry).
    fn exceptions(&self, now_ms: i64) -> Result<Vec<Exception>, AlertError> {
        match &self.registry {
            Some(registry) => Ok(registry.active(&self.conn, now_ms)?),
            None => Ok(Vec::new()),
        }
    }

    /// Under `Delivery::Count`, keep an evaluation's messages at once, before the
    /// groups the next evaluation releases, as they were sent; the other writes.
    fn count_sends(&mut self, writes: Vec<Write>) -> Vec<Write> {
        if self.delivery != Delivery::Count {
            return writes;
        }
        let mut rest = Vec::with_capacity(writes.len());
        for w in writes {
            match w {
                Write::Send {
                    channel,
                    message,
                    at_ms,
                } => self.counted.push(Sent {
                    channel,
                    at_ms,
                    message,
                }),
                w => rest.push(w),
            }
        }
        rest
    }

    /// Store an analysis snapshot on its own (the end of a replay).
    pub fn store_snapshot(
        &mut self,
        meta: &mut SnapshotMeta,
        bytes: &[u8],
    ) -> Result<(), AlertError> {
        self.apply(Decisions::default(), Some((meta, bytes)), None)?;
        Ok(())
    }

    /// Apply one call's writes, the snapshot if any and the data time its decisions
    /// reach (`decided_ms`) if given, in one transaction; its lines.
    fn apply(
        &mut self,
        decided: Decisions,
        snapshot: Option<(&mut SnapshotMeta, &[u8])>,
        decided_ms: Option<i64>,
    ) -> Result<Vec<Alert>, AlertError> {
        if decided.writes.is_empty() && snapshot.is_none() && decided_ms.is_none() {
            return Ok(decided.lines);
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        for w in decided.writes {
            match w {
                Write::Alert {
                    id,
                    line,
                    state,
                    started_ms,
                } => sql::insert(&tx, id, &line, state, started_ms)?,
                Write::Update {
                    id,
                    line,
                    state,
                    suppressed_by,
                } => sql::update(&tx, id, &line, state, suppressed_by)?,
                Write::Incident {
                    id,
                    incident,
                    reopens,
                } => sql::set_incident(&tx, id, incident, reopens)?,
                Write::Resolved { id, at_ms } => sql::mark_resolved(&tx, id, at_ms)?,
                Write::Transition {
                    id,
                    alert,
                    line,
                    state,
                    suppressed_by,
                } => sql::transition(&tx, id, alert, &line, state, suppressed_by)?,
                Write::Pending {
                    transition,
                    channel,
                    tier,
                } => {
                    if self.delivery == Delivery::Outbox {
                        sql::add_pending(&tx, transition, &channel, &tier)?;
                    }
                }
                Write::Hit { exception, at_ms } => {
                    if let Some(registry) = &self.registry {
                        registry.record_hit(&tx, exception, at_ms)?;
                    }
                }
                Write::Send {
                    channel,
                    message,
                    at_ms,
                } => match self.delivery {
                    Delivery::Outbox => {
                        outbox::enqueue(&tx, &channel, &message, at_ms)?;
                    }
                    Delivery::Count => self.counted.push(Sent {
                        channel,
                        at_ms,
                        message,
                    }),
                },
            }
        }
        if let Some(watermark_ms) = decided_ms {
            snapshot::write_decided(&tx, watermark_ms)?;
        }
        if let Some((meta, bytes)) = snapshot {
            let started = std::time::Instant::now();
            snapshot::write(&tx, meta, bytes)?;
            meta.write_ms += started.elapsed().as_millis() as i64;
        }
        tx.commit().map_err(StoreError::from)?;
        Ok(decided.lines)
    }

    /// Send what is due (call periodically even without new ticks). A message goes
    /// to the outbox in the same transaction that clears its lines' `notify_pending`
    /// rows, so after a crash each line is either in the outbox or regrouped.
    pub fn flush(&mut self, now_ms: i64) -> Result<(), StoreError> {
        self.resume(now_ms)?;
        let due = self.decider.flush(now_ms);
        if due.is_empty() {
            return Ok(());
        }
        if self.delivery == Delivery::Count {
            for f in due {
                self.counted.push(Sent {
                    channel: f.channel,
                    at_ms: now_ms,
                    message: f.message,
                });
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
                    self.decider.regroup(&tier, &f.channel, t, line, now_ms);
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
        let Some(pending) = self.regroup.take() else {
            return Ok(());
        };
        let day_start = now_ms - now_ms.rem_euclid(86_400_000);
        let mut sent: HashMap<(String, String), u32> = HashMap::new();
        for row in outbox::created_since(&self.conn, day_start)? {
            let Some(tier) = row.message.tier else {
                continue;
            };
            let firing = row.message.alerts.iter().filter(|a| budgeted(a)).count() as u32;
            *sent.entry((tier, row.channel)).or_default() += firing;
        }
        let mut waited = Vec::new();
        for p in pending {
            if !self.decider.routes(&p.tier, &p.channel) {
                // The configuration changed since: the tier no longer sends there.
                tracing::warn!(tier = %p.tier, channel = %p.channel, rule = %p.line.rule, "a waiting alert line's tier no longer routes to its channel; dropped");
                sql::clear_pending(&self.conn, &[p.transition], &p.channel)?;
                continue;
            }
            if budgeted(&p.line) {
                *sent.entry((p.tier.clone(), p.channel.clone())).or_default() += 1;
                // It is the alert's latest notification: a repeat counts from now.
                waited.push((p.line.rule.clone(), p.line.scope.clone()));
            }
            self.decider
                .regroup(&p.tier, &p.channel, p.transition, p.line, now_ms);
        }
        self.decider.resume(sent, &waited, now_ms);
        Ok(())
    }

    /// End of a replay: close the budget's days so floods are reported.
    pub fn finish(&mut self, at_ms: i64) -> Result<Vec<Alert>, AlertError> {
        let decided = self.decider.floods(i64::MAX, at_ms);
        let lines = self.apply(decided, None, None)?;
        // Every group is due by then.
        let r = self.decider.routing();
        let due = at_ms + (r.group_wait_seconds + r.group_interval_seconds) as i64 * 1000;
        self.flush(due)?;
        Ok(lines)
    }

    /// Messages counted under `Delivery::Count` since the last call.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.counted)
    }

    /// Hourly: report budget floods, expire exceptions, and raise or resolve the
    /// exception-creep meta-alerts.
    fn housekeeping(&mut self, now_ms: i64) -> Result<Vec<Alert>, AlertError> {
        let decided = self.decider.floods(now_ms, now_ms);
        let mut lines = self.apply(decided, None, None)?;
        let Some(registry) = &self.registry else {
            return Ok(lines);
        };
        registry.sweep_expired(&mut self.conn, now_ms)?;
        let shares: HashMap<String, f64> =
            sql::suppressed_share(&self.conn, now_ms - 7 * 24 * HOUR_MS)?
                .into_iter()
                .collect();
        let creeping = registry.creep(&self.conn, now_ms, &shares, self.decider.meta_tier())?;
        let decided = self.decider.meta("exception_creep", creeping, now_ms);
        lines.extend(self.apply(decided, None, None)?);
        Ok(lines)
    }
}
