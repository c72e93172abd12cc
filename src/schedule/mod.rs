//! Schedules (`[schedules]`): cron expressions for the daily digest, the exception
//! expiry sweep, retention and an optional calendar recalibration. One tokio task per
//! schedule computes the next fire time, sleeps until then, runs its job and stops on
//! the daemon's shutdown (after finishing a job in progress).
//!
//! Expressions are the `cron` crate's: six fields with seconds first (`sec min hour
//! day-of-month month day-of-week`, an optional seventh for the year) or a shorthand
//! such as `@daily`, always in UTC.

pub mod digest;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cron::Schedule;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::domain::{ChangeEvent, ChangeKind, SCOPE_DIMS, Scope};
use crate::exceptions::{ExceptionError, Registry};
use crate::stop::Stop;
use crate::store::pg::lease::Lease;
use crate::store::sql::Db;
use crate::store::writer::Writer;
use crate::store::{Batch, Location, StoreError};
use crate::tiers::{TierDef, TierError, Tiers};

/// Default digest: 09:00 UTC every day.
pub const DEFAULT_DIGEST: &str = "0 0 9 * * *";
/// Default exception sweep: every 5 minutes, so an expired exception is audited and
/// stops suppressing within minutes rather than at the alert stage's hourly sweep.
pub const DEFAULT_EXCEPTION_SWEEP: &str = "0 */5 * * * *";
/// Default retention: at the top of every hour.
pub const DEFAULT_RETENTION: &str = "0 0 * * * *";
/// The value that turns a schedule off.
pub const OFF: &str = "off";
/// The origin of change events a calendar recalibration posts.
pub const CALENDAR_ORIGIN: &str = "calendar";
const DEFAULT_CALENDAR_NOTE: &str = "calendar recalibration";
const MAX_NOTE_CHARS: usize = 1000;

/// `[schedules]` in the config file, as written. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulesConfig {
    /// When the daily digest is built and queued (default `0 0 9 * * *`; `off`).
    pub digest: Option<String>,
    /// When expired exceptions are swept and audited (default every 5 minutes; `off`).
    pub exception_sweep: Option<String>,
    /// When raw records past `retention_days` are deleted (default hourly).
    pub retention: Option<String>,
    /// When a calendar recalibration is posted (default none). Change events come
    /// first: see docs/alerting.md, "Schedules and the digest".
    pub calendar_recalibration: Option<String>,
    /// Scope of the calendar's change events (default everything).
    #[serde(default)]
    pub calendar_scope: Scope,
    /// Note of the calendar's change events (default `calendar recalibration`).
    pub calendar_note: Option<String>,
}

/// The calendar recalibration: a `config_change` posted on a schedule.
#[derive(Debug, Clone)]
pub struct Calendar {
    /// When to post.
    pub schedule: Schedule,
    /// Scope of the change events; empty means everything.
    pub scope: Scope,
    /// Their note.
    pub note: String,
}

/// The validated schedules the daemon runs.
#[derive(Debug, Clone)]
pub struct Schedules {
    /// Daily digest; `None` when off.
    pub digest: Option<Schedule>,
    /// Exception expiry sweep; `None` when off.
    pub exception_sweep: Option<Schedule>,
    /// Retention: it cannot be off, or raw events would grow without bound.
    pub retention: Schedule,
    /// Calendar recalibration; `None` unless configured.
    pub calendar: Option<Calendar>,
}

impl Default for Schedules {
    fn default() -> Schedules {
        SchedulesConfig::default()
            .resolve()
            .expect("the default schedules are valid")
    }
}

/// A `[schedules]` setting that cannot run; the message names the key and says how
/// to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchedule(String);

impl SchedulesConfig {
    /// Validate every expression and the calendar's scope. The message names the key.
    pub fn resolve(self) -> Result<Schedules, InvalidSchedule> {
        let optional = |key: &str, value: Option<String>, default: Option<&str>| match value
            .as_deref()
            .or(default)
        {
            None | Some(OFF) => Ok(None),
            Some(expr) => parse(key, expr).map(Some),
        };
        let retention = match self.retention.as_deref() {
            Some(OFF) => {
                return Err(InvalidSchedule(format!(
                    "[schedules] retention cannot be {OFF:?}: raw events would grow without bound; use a rare schedule such as \"@weekly\""
                )));
            }
            expr => parse("retention", expr.unwrap_or(DEFAULT_RETENTION))?,
        };
        let calendar = match optional("calendar_recalibration", self.calendar_recalibration, None)?
        {
            Some(schedule) => {
                for (dim, value) in &self.calendar_scope {
                    if !SCOPE_DIMS.contains(&dim.as_str()) || value.trim().is_empty() {
                        return Err(InvalidSchedule(format!(
                            "[schedules] calendar_scope: {dim:?} = {value:?} must be one of {} with a non-empty value",
                            SCOPE_DIMS.join(", ")
                        )));
                    }
                }
                let note = self
                    .calendar_note
                    .unwrap_or_else(|| DEFAULT_CALENDAR_NOTE.to_string());
                if note.chars().count() > MAX_NOTE_CHARS {
                    return Err(InvalidSchedule(format!(
                        "[schedules] calendar_note is longer than {MAX_NOTE_CHARS} characters"
                    )));
                }
                Some(Calendar {
                    schedule,
                    scope: self.calendar_scope,
                    note,
                })
            }
            None => None,
        };
        Ok(Schedules {
            digest: optional("digest", self.digest, Some(DEFAULT_DIGEST))?,
            exception_sweep: optional(
                "exception_sweep",
                self.exception_sweep,
                Some(DEFAULT_EXCEPTION_SWEEP),
            )?,
            retention,
            calendar,
        })
    }
}

/// Parse one cron expression of `[schedules]`, refusing one that never fires.
fn parse(key: &str, expr: &str) -> Result<Schedule, InvalidSchedule> {
    let schedule = Schedule::from_str(expr).map_err(|e| {
        InvalidSchedule(format!(
            "[schedules] {key} = {expr:?} is not a cron expression ({e}): write six fields, seconds first \
             (sec min hour day-of-month month day-of-week, UTC), e.g. \"0 0 9 * * *\" for 09:00 daily, \
             or a shorthand such as \"@daily\"; a five-field crontab line needs a leading \"0 \""
        ))
    })?;
    if next_fire(&schedule, crate::clock::now_ms()).is_none() {
        return Err(InvalidSchedule(format!(
            "[schedules] {key} = {expr:?} never fires"
        )));
    }
    Ok(schedule)
}

/// The first fire time of `schedule` strictly after `after_ms`, in milliseconds since
/// the Unix epoch; `None` when it never fires again.
pub fn next_fire(schedule: &Schedule, after_ms: i64) -> Option<i64> {
    let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
    schedule
        .after(&after)
        .next()
        .map(|t| t.timestamp_millis())
        .filter(|&t| t > after_ms)
}

/// Why the schedules could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The tier file (the digest's channels) is invalid.
    #[error(transparent)]
    Tiers(#[from] TierError),
}

/// Why a scheduled job failed. It is logged, and the schedule fires again at its
/// next time.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// The store (the writer, or a connection of the job's own) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The exception sweep failed.
    #[error(transparent)]
    Exceptions(#[from] ExceptionError),
    /// The blocking part of a job panicked.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

/// What the jobs work on.
#[derive(Clone)]
pub struct Jobs {
    /// The store's writer: retention and calendar change events go through it.
    pub writer: Writer,
    /// The daemon's database, for the digest and the sweep's own connections.
    pub db: Location,
    /// Days of raw records retention keeps.
    pub retention_days: u32,
    /// The exception registry the sweep runs.
    pub registry: Registry,
    /// The tier whose channels get the digest (`digest::digest_tier`).
    pub digest_tier: TierDef,
    /// On PostgreSQL, the leader lease: the jobs' own writes (the digest's outbox
    /// rows, the sweep's exception updates) commit only while it holds.
    pub fence: Option<Lease>,
}

impl Jobs {
    /// The jobs of a daemon on `db` with the tiers of `rules`.
    pub fn new(
        writer: Writer,
        db: Location,
        rules: &std::path::Path,
        retention_days: u32,
        registry: Registry,
        fence: Option<Lease>,
    ) -> Result<Jobs, ScheduleError> {
        let tiers = Tiers::load(rules)?;
        Ok(Jobs {
            writer,
            db,
            retention_days,
            registry,
            digest_tier: tiers.digest().clone(),
            fence,
        })
    }

    /// A connection of the jobs' own, fenced by the leader lease when there is one.
    fn side(db: &Location, fence: Option<Lease>) -> Result<Db, StoreError> {
        let conn = db.side()?;
        Ok(match fence {
            Some(lease) => conn.fenced(lease),
            None => conn,
        })
    }

    async fn retention(&self, at_ms: i64) -> Result<String, JobError> {
        let cutoff = at_ms - i64::from(self.retention_days) * 86_400_000;
        let n = self.writer.prune(cutoff).await?;
        Ok(format!(
            "deleted {n} raw events (and delivered notifications) older than {} days",
            self.retention_days
        ))
    }

    async fn sweep(&self, at_ms: i64) -> Result<String, JobError> {
        let (db, registry, fence) = (self.db.clone(), self.registry, self.fence.clone());
        let expired = tokio::task::spawn_blocking(move || -> Result<_, JobError> {
            let mut conn = Jobs::side(&db, fence)?;
            Ok(registry.sweep_expired(&mut conn, at_ms)?)
        })
        .await??;
        Ok(format!("{} exceptions expired", expired.len()))
    }

    async fn digest(&self, at_ms: i64) -> Result<String, JobError> {
        let (db, tier, fence) = (
            self.db.clone(),
            self.digest_tier.clone(),
            self.fence.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<String, StoreError> {
            let d = digest::Digest::build(&db, &tier.tier.name, at_ms)?;
            let queued = digest::enqueue(&mut Jobs::side(&db, fence)?, &tier, &d.message(), at_ms)?;
            Ok(format!(
                "digest queued for {queued} channel(s) of tier {}",
                tier.tier.name
            ))
        })
        .await?
        .map_err(JobError::from)
    }

    async fn calendar(&self, calendar: &Calendar, at_ms: i64) -> Result<String, JobError> {
        let mut batch = Batch::new("schedule:calendar", "change");
        batch.changes.push(calendar_change(calendar, at_ms));
        let report = self.writer.commit(batch).await?;
        Ok(if report.changes_inserted > 0 {
            "config_change posted".to_string()
        } else {
            "config_change already recorded".to_string()
        })
    }
}

/// The change event a calendar recalibration posts at its fire time. The fire time
/// (not the wall clock) is its `ts`, so a restart within the same second cannot post
/// it twice: the store keeps change events unique by kind, time, scope and note.
pub fn calendar_change(calendar: &Calendar, at_ms: i64) -> ChangeEvent {
    ChangeEvent {
        kind: ChangeKind::ConfigChange,
        ts_ms: at_ms,
        scope: calendar.scope.clone(),
        note: calendar.note.clone(),
        origin: CALENDAR_ORIGIN.to_string(),
    }
}

enum Job {
    Retention,
    Sweep,
    Digest,
    Calendar(Box<Calendar>),
}

impl Job {
    fn name(&self) -> &'static str {
        match self {
            Job::Retention => "retention",
            Job::Sweep => "exception_sweep",
            Job::Digest => "digest",
            Job::Calendar(_) => "calendar_recalibration",
        }
    }

    async fn run(&self, jobs: &Jobs, at_ms: i64) -> Result<String, JobError> {
        match self {
            Job::Retention => jobs.retention(at_ms).await,
            Job::Sweep => jobs.sweep(at_ms).await,
            Job::Digest => jobs.digest(at_ms).await,
            Job::Calendar(c) => jobs.calendar(c, at_ms).await,
        }
    }
}

/// The running schedule tasks.
pub struct Scheduler {
    stop: Stop,
    tasks: Vec<JoinHandle<()>>,
}

impl Scheduler {
    /// Start one task per configured schedule on the current tokio runtime.
    pub fn spawn(schedules: &Schedules, jobs: Jobs) -> Scheduler {
        let stop = Stop::default();
        let mut planned = vec![(Job::Retention, schedules.retention.clone())];
        if let Some(s) = &schedules.exception_sweep {
            planned.push((Job::Sweep, s.clone()));
        }
        if let Some(s) = &schedules.digest {
            planned.push((Job::Digest, s.clone()));
        }
        if let Some(c) = &schedules.calendar {
            planned.push((Job::Calendar(Box::new(c.clone())), c.schedule.clone()));
        }
        let tasks = planned
            .into_iter()
            .map(|(job, schedule)| {
                tracing::info!(schedule = job.name(), cron = %schedule, "schedule started");
                tokio::spawn(drive(job, schedule, jobs.clone(), stop.clone()))
            })
            .collect();
        Scheduler { stop, tasks }
    }

    /// Stop every schedule, waiting for a job in progress to finish.
    pub async fn stop(mut self) {
        self.stop.set();
        for t in std::mem::take(&mut self.tasks) {
            if let Err(e) = t.await {
                tracing::error!(cause = %e, "schedule task failed");
            }
        }
    }
}

impl Drop for Scheduler {
    /// Nothing could stop the schedules once their `Scheduler` is gone.
    fn drop(&mut self) {
        self.stop.set();
    }
}

async fn drive(job: Job, schedule: Schedule, jobs: Jobs, stop: Stop) {
    // The last fire time: a sleep that ends a hair early must not fire it twice.
    let mut last = i64::MIN;
    loop {
        let now = crate::clock::now_ms();
        let Some(at) = next_fire(&schedule, now.max(last)) else {
            tracing::warn!(schedule = job.name(), "schedule has no further fire time");
            return;
        };
        let wait = Duration::from_millis((at - now).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.stopped() => return,
        }
        last = at;
        match job.run(&jobs, at).await {
            Ok(outcome) => {
                tracing::info!(schedule = job.name(), at_ms = at, %outcome, "schedule ran")
            }
            Err(cause) => {
                tracing::error!(schedule = job.name(), at_ms = at, %cause, "schedule failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-06-07T08:59:59.500Z.
    const CLOCK: i64 = 1_780_822_799_500;

    fn config(toml_text: &str) -> Result<Schedules, InvalidSchedule> {
        toml::from_str::<SchedulesConfig>(toml_text)
            .expect("valid [schedules] keys")
            .resolve()
    }

    #[test]
    fn defaults_digest_at_nine_sweep_every_five_minutes_retention_hourly() {
        let s = Schedules::default();
        assert!(s.calendar.is_none());
        let digest = s.digest.unwrap();
        assert_eq!(next_fire(&digest, CLOCK), Some(CLOCK + 500), "09:00:00 UTC");
        assert_eq!(
            next_fire(&digest, CLOCK + 500),
            Some(CLOCK + 500 + 86_400_000),
            "strictly after: the next day"
        );
        let sweep = s.exception_sweep.unwrap();
        assert_eq!(next_fire(&sweep, CLOCK), Some(CLOCK + 500));
        assert_eq!(next_fire(&sweep, CLOCK + 500), Some(CLOCK + 500 + 300_000));
        assert_eq!(next_fire(&s.retention, CLOCK), Some(CLOCK + 500));
        assert_eq!(
            next_fire(&s.retention, CLOCK + 1000),
            Some(CLOCK + 500 + 3_600_000)
        );
    }

    #[test]
    fn configured_expressions_and_the_calendar() {
        let s = config(
            r#"
digest = "@daily"
exception_sweep = "off"
retention = "0 30 2 * * *"
calendar_recalibration = "0 0 0 * * Mon"
calendar_scope = { route = "chat" }
calendar_note = "weekly reset"
"#,
        )
        .unwrap();
        assert_eq!(
            next_fire(s.digest.as_ref().unwrap(), CLOCK),
            Some(1_780_876_800_000)
        );
        assert!(s.exception_sweep.is_none());
        assert_eq!(next_fire(&s.retention, CLOCK), Some(1_780_885_800_000));
        let cal = s.calendar.unwrap();
        // 2026-06-07 is a Sunday: the next Monday 00:00 is the next day.
        assert_eq!(next_fire(&cal.schedule, CLOCK), Some(1_780_876_800_000));
        let change = calendar_change(&cal, 1_780_876_800_000);
        assert_eq!(
            (change.kind, change.origin.as_str(), change.note.as_str()),
            (ChangeKind::ConfigChange, "calendar", "weekly reset")
        );
        assert_eq!(change.scope.get("route").map(String::as_str), Some("chat"));
        let every_two = config("calendar_recalibration = \"*/2 * * * * *\"").unwrap();
        let two = every_two.calendar.unwrap().schedule;
        assert_eq!(next_fire(&two, CLOCK), Some(CLOCK + 500));
        assert_eq!(next_fire(&two, CLOCK + 500), Some(CLOCK + 2500));
    }

    #[test]
    fn mistakes_name_the_key() {
        let err = config("digest = \"0 9 * * *\"").unwrap_err().to_string();
        assert!(err.contains("[schedules] digest = \"0 9 * * *\""), "{err}");
        assert!(err.contains("seconds first"), "{err}");
        let err = config("retention = \"off\"").unwrap_err().to_string();
        assert!(err.contains("retention cannot be"), "{err}");
        let err = config("exception_sweep = \"0 0 0 30 2 *\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exception_sweep") && err.contains("never fires"),
            "{err}"
        );
        let err =
            config("calendar_recalibration = \"@daily\"\ncalendar_scope = { region = \"eu\" }")
                .unwrap_err()
                .to_string();
        assert!(err.contains("calendar_scope"), "{err}");
        let err = toml::from_str::<SchedulesConfig>("digets = \"@daily\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
