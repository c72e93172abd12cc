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
mod state;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Alert, Exception, Message};
use crate::engine::Output;
use crate::exceptions::{ExceptionError, Registry};
use crate::store::snapshot::{self, SnapshotMeta};
use crate::store::sql::{Db, Transact};
use crate::store::{StoreError, alerts as sql, outbox};
use crate::tiers::Tiers;
use decide::{Active, Decider, Decisions, Write, budgeted};
use incident::Incident;
use state::StageState;

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
    /// The alert state stored in an analysis snapshot does not decode.
    #[error("the analysis snapshot's alert state does not decode: {0}")]
    State(#[from] serde_json::Error),
}

/// Encodes the analysis state around the alert stage's own (its argument): the
/// snapshot's description and bytes.
pub type Encoder<'a> = dyn Fn(&[u8]) -> (SnapshotMeta, Vec<u8>) + 'a;

/// The alert stage. Owns its own connection to the daemon's database.
pub struct AlertStage {
    conn: Db,
    registry: Option<Registry>,
    delivery: Delivery,
    decider: Decider,
    /// Messages kept under `Delivery::Count`, until taken.
    counted: Vec<Sent>,
    /// Decide each evaluation at its own judged time instead of the caller's clock
    /// (replay, and `serve --clock data`).
    data_clock: bool,
    /// On the data clock: the newest evaluation's judged time.
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
        conn: Db,
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
            data_clock: delivery == Delivery::Count,
            replay_clock_ms: i64::MIN,
            last_housekeeping_ms: i64::MIN,
            regroup,
        })
    }

    /// Decide each evaluation at its own judged time, as a replay does, though
    /// messages go to the outbox (`serve --clock data`).
    pub fn on_data_clock(mut self) -> AlertStage {
        self.data_clock = true;
        self
    }

    /// Store and route what the engine produced; `now_ms` is the clock notifications
    /// and budgets run on (wall clock live, data clock in replay). Returns every
    /// firing and resolved line, suppressed ones included.
    pub fn handle(&mut self, out: Output, now_ms: i64) -> Result<Vec<Alert>, AlertError> {
        Ok(self.handle_and_snapshot(out, now_ms, None, None)?.0)
    }

    /// `handle`, storing a snapshot of the analysis state after it in the one
    /// transaction of every write it makes (its evaluations' decisions, the messages
    /// that fell due, the hour's housekeeping): after a crash the store holds both or
    /// neither, so a restart from the snapshot repeats nothing and loses nothing.
    /// `snapshot` encodes the analysis state around the stage's own (its argument);
    /// it is called only when the step judged or wrote something. The snapshot's
    /// description is returned with the lines; its `write_ms` includes the insert.
    pub fn handle_and_snapshot(
        &mut self,
        out: Output,
        now_ms: i64,
        snapshot: Option<&Encoder<'_>>,
        decided_ms: Option<i64>,
    ) -> Result<(Vec<Alert>, Option<SnapshotMeta>), AlertError> {
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
            // On the data clock each evaluation is decided at its own time (groups
            // sent and housekeeping done as that time passes them), so what a replay
            // groups and repeats is what a live daemon would have, however the data
            // was cut into steps.
            let now_ms = match self.data_clock {
                false => now_ms,
                true => {
                    self.replay_clock_ms = self.replay_clock_ms.max(tick.judged_ms);
                    let at = self.replay_clock_ms;
                    self.due(at, &mut decided);
                    self.housekeeping(at, &mut decided)?;
                    at
                }
            };
            let exceptions = self.exceptions(now_ms)?;
            decided.extend(self.decider.tick(tick, now_ms, &exceptions));
        }
        if !self.data_clock {
            self.housekeeping(now_ms, &mut decided)?;
        }
        self.due(now_ms, &mut decided);
        // A step that judged nothing and wrote nothing changed no state a restart
        // could not rebuild: it stores nothing (not even how far decisions reach,
        // which would make a start distrust an exact snapshot).
        let acted = !out.ticks.is_empty() || !decided.writes.is_empty();
        let decided_ms = decided_ms.filter(|_| acted);
        let mut encoded = match snapshot {
            Some(encode) if acted => Some(encode(&self.state_bytes())),
            _ => None,
        };
        let snap = encoded.as_mut().map(|(m, b)| (m, b.as_slice()));
        let lines = self.apply(decided, snap, decided_ms)?;
        Ok((lines, encoded.map(|(m, _)| m)))
    }

    /// The exceptions active at `now_ms` (none without a registry).
    fn exceptions(&self, now_ms: i64) -> Result<Vec<Exception>, AlertError> {
        match &self.registry {
            Some(registry) => Ok(registry.active(&self.conn, now_ms)?),
            None => Ok(Vec::new()),
        }
    }

    /// The groups due by `now_ms`, as writes. On the data clock each is sent at its
    /// own due time, which the group's next message waits from.
    fn due(&mut self, now_ms: i64, decided: &mut Decisions) {
        let mut flushed = Vec::new();
        match self.data_clock {
            true => {
                while let Some(at) = self.decider.next_due().filter(|&d| d <= now_ms) {
                    flushed.extend(self.decider.flush(at).into_iter().map(|f| (f, at)));
                }
            }
            false => flushed.extend(self.decider.flush(now_ms).into_iter().map(|f| (f, now_ms))),
        }
        for (f, at_ms) in flushed {
            decided.writes.push(Write::Flushed {
                channel: f.channel,
                message: f.message,
                transitions: f.transitions,
                at_ms,
            });
        }
    }

    /// The stage's state for an analysis snapshot.
    pub fn state_bytes(&self) -> Vec<u8> {
        let state = StageState {
            decider: self.decider.state(),
            replay_clock_ms: self.replay_clock_ms,
            last_housekeeping_ms: self.last_housekeeping_ms,
        };
        serde_json::to_vec(&state).expect("the stage's state always encodes")
    }

    /// Take a snapshot's stage state in place of the one rebuilt from the store's
    /// rows (which the snapshot covers: it was stored with the last decisions).
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), AlertError> {
        let state: StageState = serde_json::from_slice(bytes)?;
        for (channel, transition) in self.decider.restore(state.decider) {
            tracing::warn!(%channel, transition, "a waiting alert line's tier no longer routes to its channel; dropped");
            sql::clear_pending(&self.conn, &[transition], &channel)?;
        }
        self.replay_clock_ms = state.replay_clock_ms;
        self.last_housekeeping_ms = state.last_housekeeping_ms;
        // The snapshot's groups hold the lines that waited, and its budget counts
        // what was sent.
        self.regroup = None;
        Ok(())
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
        // The messages' lines, to wait in their groups again if nothing is written.
        let flushed: Vec<(String, Vec<i64>, Message, i64)> = decided
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Flushed {
                    channel,
                    message,
                    transitions,
                    at_ms,
                } => Some((
                    channel.clone(),
                    transitions.clone(),
                    message.clone(),
                    *at_ms,
                )),
                _ => None,
            })
            .collect();
        match self.write(decided.writes, snapshot, decided_ms) {
            Ok(()) => Ok(decided.lines),
            Err(e) => {
                for (channel, transitions, message, at_ms) in flushed {
                    let tier = message.tier.unwrap_or_default();
                    for (t, line) in transitions.into_iter().zip(message.alerts) {
                        self.decider.regroup(&tier, &channel, t, line, at_ms);
                    }
                }
                Err(e)
            }
        }
    }

    /// `apply`'s transaction.
    fn write(
        &mut self,
        writes: Vec<Write>,
        snapshot: Option<(&mut SnapshotMeta, &[u8])>,
        decided_ms: Option<i64>,
    ) -> Result<(), AlertError> {
        let AlertStage {
            conn,
            registry,
            delivery,
            counted,
            ..
        } = self;
        conn.write(|tx| {
            for w in writes {
                match w {
                    Write::Alert {
                        id,
                        line,
                        state,
                        started_ms,
                    } => sql::insert(tx, id, &line, state, started_ms)?,
                    Write::Update {
                        id,
                        line,
                        state,
                        suppressed_by,
                    } => sql::update(tx, id, &line, state, suppressed_by)?,
                    Write::Incident {
                        id,
                        incident,
                        reopens,
                    } => sql::set_incident(tx, id, incident, reopens)?,
                    Write::Resolved { id, at_ms } => sql::mark_resolved(tx, id, at_ms)?,
                    Write::Transition {
                        id,
                        alert,
                        line,
                        state,
                        suppressed_by,
                    } => sql::transition(tx, id, alert, &line, state, suppressed_by)?,
                    Write::Pending {
                        transition,
                        channel,
                        tier,
                    } => {
                        if *delivery == Delivery::Outbox {
                            sql::add_pending(tx, transition, &channel, &tier)?;
                        }
                    }
                    Write::Hit { exception, at_ms } => {
                        if let Some(registry) = registry {
                            registry.record_hit(tx, exception, at_ms)?;
                        }
                    }
                    Write::Flushed {
                        channel,
                        message,
                        transitions,
                        at_ms,
                    } => match *delivery {
                        Delivery::Outbox => {
                            outbox::enqueue(tx, &channel, &message, at_ms)?;
                            sql::clear_pending(tx, &transitions, &channel)?;
                        }
                        Delivery::Count => counted.push(Sent {
                            channel,
                            at_ms,
                            message,
                        }),
                    },
                    Write::Send {
                        channel,
                        message,
                        at_ms,
                    } => match *delivery {
                        Delivery::Outbox => {
                            outbox::enqueue(tx, &channel, &message, at_ms)?;
                        }
                        Delivery::Count => counted.push(Sent {
                            channel,
                            at_ms,
                            message,
                        }),
                    },
                }
            }
            if let Some(watermark_ms) = decided_ms {
                snapshot::write_decided(tx, watermark_ms)?;
            }
            if let Some((meta, bytes)) = snapshot {
                let started = std::time::Instant::now();
                snapshot::write(tx, meta, bytes)?;
                meta.write_ms += started.elapsed().as_millis() as i64;
            }
            Ok(())
        })
    }

    /// Send what is due (call periodically even without new ticks). A message goes
    /// to the outbox in the same transaction that clears its lines' `notify_pending`
    /// rows, so after a crash each line is either in the outbox or regrouped.
    pub fn flush(&mut self, now_ms: i64) -> Result<(), AlertError> {
        self.resume(now_ms)?;
        let mut decided = Decisions::default();
        self.due(now_ms, &mut decided);
        self.apply(decided, None, None)?;
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

    /// End of a replay: close the budget's days so floods are reported, and send
    /// every group (all are due by then).
    pub fn finish(&mut self, at_ms: i64) -> Result<Vec<Alert>, AlertError> {
        let mut decided = self.decider.floods(i64::MAX, at_ms);
        let r = self.decider.routing();
        let due = at_ms + (r.group_wait_seconds + r.group_interval_seconds) as i64 * 1000;
        self.due(due, &mut decided);
        self.apply(decided, None, None)
    }

    /// Messages counted under `Delivery::Count` since the last call.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.counted)
    }

    /// Once an hour (the first call in a new hour of `now_ms`): report budget
    /// floods, expire exceptions, and raise or resolve the exception-creep
    /// meta-alerts, as decisions of the step in progress.
    fn housekeeping(&mut self, now_ms: i64, decided: &mut Decisions) -> Result<(), AlertError> {
        if now_ms.div_euclid(HOUR_MS) == self.last_housekeeping_ms.div_euclid(HOUR_MS) {
            return Ok(());
        }
        self.last_housekeeping_ms = now_ms;
        decided.extend(self.decider.floods(now_ms, now_ms));
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        registry.sweep_expired(&mut self.conn, now_ms)?;
        let shares: HashMap<String, f64> =
            sql::suppressed_share(&self.conn, now_ms - 7 * 24 * HOUR_MS)?
                .into_iter()
                .collect();
        let creeping = registry.creep(&self.conn, now_ms, &shares, self.decider.meta_tier())?;
        decided.extend(self.decider.meta("exception_creep", creeping, now_ms));
        Ok(())
    }
}
