//! The leader's duties: the analysis (with the alert stage), notification delivery and
//! the schedules. One process runs them: a single daemon on SQLite always, a replica
//! on PostgreSQL only while it holds the leader lease (`tenure`), every write fenced by
//! that lease.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{ANALYSIS_QUEUE, DaemonError};
use crate::analysis::{Analysis, Progress};
use crate::config::Config;
use crate::notify::Notifier;
use crate::schedule::Scheduler;
use crate::sources::clocks::SourceClocks;
use crate::stop::Stop;
use crate::store::pg::feed::Feed;
use crate::store::pg::lease::Lease;
use crate::store::sql::Sql;
use crate::store::writer::{Committed, Writer};
use crate::store::{Location, StoreError};
use crate::telemetry::Metrics;

/// What the duties share with the rest of the daemon.
#[derive(Clone)]
pub(super) struct Shared {
    pub config: Config,
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    pub progress: Progress,
    pub runtime: tokio::runtime::Handle,
    /// This process's name in leases and outbox claims.
    pub holder: String,
}

/// How often the leader reads back what the replicas committed.
const FEED_EVERY: Duration = Duration::from_millis(500);

/// The duties while they run.
pub(super) struct Duties {
    analysis: JoinHandle<()>,
    /// On PostgreSQL: the thread that feeds the analysis from the store.
    feed: Option<(Stop, JoinHandle<()>)>,
    notifier: Notifier,
    schedules: Scheduler,
}

impl Duties {
    /// Start the duties. `input` is the writer's committed batches on SQLite; on
    /// PostgreSQL (`None`) the analysis is fed from the store, fenced by `lease`.
    pub fn start(
        shared: &Shared,
        input: Option<Receiver<Committed>>,
        clocks: SourceClocks,
        lease: Option<&Lease>,
    ) -> Result<Duties, DaemonError> {
        let config = &shared.config;
        let mut analysis = Analysis::open(config, crate::alerts::Delivery::Outbox, lease.cloned())?;
        let (batches, feed) = match input {
            Some(input) => {
                // The analysis resumes from its snapshot (logged there), or is built
                // from the raw events the store holds.
                let resumed = analysis.resume(&config.db, crate::clock::now_ms())?;
                shared.progress.resumed(resumed);
                (input, None)
            }
            None => {
                let (tx, rx) = std::sync::mpsc::sync_channel(ANALYSIS_QUEUE);
                let mut conn = config.db.reader()?;
                let from_ms = server_now(&mut conn)?;
                let (feed, resumed) = Feed::start(conn, from_ms, |db| {
                    analysis
                        .resume_on(db, crate::clock::now_ms())
                        .map_err(|e| StoreError::Postgres(e.to_string()))
                })?;
                shared.progress.resumed(resumed);
                (rx, Some(spawn_feed(feed, config.db.clone(), tx)))
            }
        };
        let progress = shared.progress.clone();
        let clock_mode = config.clock;
        let analysis = std::thread::Builder::new()
            .name("analysis".into())
            .spawn(move || {
                crate::analysis::run_live(
                    analysis,
                    batches,
                    clocks,
                    progress,
                    clock_mode,
                    crate::clock::now_ms,
                )
            })
            .expect("spawning the analysis thread");
        if let Some(lease) = lease {
            take_over_claims(&config.db, lease, &shared.holder)?;
        }
        let _runtime = shared.runtime.enter();
        let notifier = crate::notify::spawn(
            &config.db,
            &config.channels,
            crate::notify::WorkerOptions {
                dashboard_url: config.dashboard_url.clone(),
                fence: lease.cloned(),
                claimer: shared.holder.clone(),
                ..crate::notify::WorkerOptions::default()
            },
            shared.metrics.clone(),
        )?;
        let jobs = crate::schedule::Jobs::new(
            shared.writer.clone(),
            config.db.clone(),
            &config.rules,
            config.retention_days,
            crate::exceptions::Registry::new(config.exceptions),
        )?;
        let schedules = Scheduler::spawn(&config.schedules, jobs);
        shared.metrics.leader.set(1);
        shared
            .metrics
            .leader_token
            .set(lease.map_or(0, |l| l.token));
        Ok(Duties {
            analysis,
            feed,
            notifier,
            schedules,
        })
    }

    /// Stop delivery, the schedules and the feed. The analysis stops once its input
    /// closes: on PostgreSQL that is now (the feed's end of it is gone), on SQLite
    /// when the writer stops; the caller joins the returned thread then.
    pub fn stop(self, shared: &Shared) -> JoinHandle<()> {
        shared.metrics.leader.set(0);
        shared.metrics.leader_token.set(0);
        if let Some((stop, feed)) = self.feed {
            stop.set();
            if feed.join().is_err() {
                tracing::error!("analysis feed panicked");
            }
        }
        shared.runtime.block_on(async {
            self.notifier.stop().await;
            self.schedules.stop().await;
        });
        self.analysis
    }
}

/// Void the outbox claims of earlier leaders, so their rows go out now instead of
/// when the claims expire. Only the leader delivers, and an earlier leader's marks are
/// fenced by the lease this one now holds; what it may still have in flight is the
/// documented window (a 2xx whose mark never committed is sent once more).
fn take_over_claims(db: &Location, lease: &Lease, holder: &str) -> Result<(), StoreError> {
    let conn = db.side()?.fenced(lease.clone());
    let n = conn.execute(
        "UPDATE outbox SET claimed_by = NULL, claim_until_ms = NULL \
         WHERE state = 'pending' AND claimed_by IS NOT NULL AND claimed_by <> ?1",
        &[holder.into()],
    )?;
    if n > 0 {
        tracing::info!(
            rows = n,
            "took over the outbox claims of the previous leader"
        );
    }
    Ok(())
}

/// The database server's clock, so the feed's start compares with stamps made on it.
fn server_now(conn: &mut crate::store::sql::Db) -> Result<i64, StoreError> {
    use crate::store::sql::SqlExt;
    conn.row(
        "SELECT CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)",
        &[],
        |r| r.int(0),
    )?
    .ok_or_else(|| StoreError::Postgres("the server did not say its time".into()))
}

/// Read the store into the analysis every `FEED_EVERY` until stopped, reconnecting
/// after an error (the feed keeps its place).
fn spawn_feed(mut feed: Feed, db: Location, tx: SyncSender<Committed>) -> (Stop, JoinHandle<()>) {
    let stop = Stop::default();
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("analysis-feed".into())
        .spawn(move || {
            while !stopped.sleep(FEED_EVERY) {
                loop {
                    match feed.poll() {
                        Ok(Some(batch)) => {
                            if tx.send(batch).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(cause = %e, "reading the replicas' commits failed; reconnecting");
                            match db.reader() {
                                Ok(conn) => feed.reconnect(conn),
                                Err(e) => tracing::warn!(cause = %e, "reconnecting the analysis feed failed"),
                            }
                            break;
                        }
                    }
                }
            }
        })
        .expect("spawning the analysis feed thread");
    (stop, thread)
}

/// The leader's duties as a tenure's work (PostgreSQL).
pub(super) struct Leading(pub Shared);

impl super::tenure::Held for Leading {
    type Running = Duties;

    fn start(&mut self, lease: &Lease) -> Option<Duties> {
        match Duties::start(&self.0, None, SourceClocks::default(), Some(lease)) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(cause = %e, "could not start the leader's duties");
                None
            }
        }
    }

    fn end(&mut self, running: Duties) {
        if running.stop(&self.0).join().is_err() {
            tracing::error!("analysis thread panicked");
        }
    }
}
