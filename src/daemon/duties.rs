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
    /// On PostgreSQL: stops the thread that feeds the analysis from the store.
    feed: Option<Stop>,
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
        let (progress, clock_mode) = (shared.progress.clone(), config.clock);
        let live = move |analysis, batches| {
            crate::analysis::run_live(
                analysis,
                batches,
                clocks,
                progress,
                clock_mode,
                crate::clock::now_ms,
            )
        };
        let (analysis, feed) = match input {
            Some(input) => {
                // The analysis resumes from its snapshot (logged there), or is built
                // from the raw events the store holds.
                let resumed = analysis.resume(&config.db, crate::clock::now_ms())?;
                shared.progress.resumed(resumed);
                (spawn_analysis(move || live(analysis, input)), None)
            }
            None => {
                let stop = Stop::default();
                let (stopped, db) = (stop.clone(), config.db.clone());
                let progress = shared.progress.clone();
                // Resumed on the analysis thread, not in the lease loop: a resume that
                // reads a long backlog must not keep the lease from being renewed.
                let thread = spawn_analysis(move || {
                    let feed = match resume_from_store(&mut analysis, &db, &progress) {
                        Ok(feed) => feed,
                        Err(e) => {
                            tracing::error!(cause = %e, "the analysis could not resume from the store");
                            return;
                        }
                    };
                    let (tx, rx) = std::sync::mpsc::sync_channel(ANALYSIS_QUEUE);
                    let feeder = spawn_feed(feed, db, tx, stopped);
                    live(analysis, rx);
                    if feeder.join().is_err() {
                        tracing::error!("analysis feed panicked");
                    }
                });
                (thread, Some(stop))
            }
        };
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
            lease.cloned(),
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

    /// Whether the analysis ended while the duties run (it could not resume, or it
    /// failed): the leader should step down rather than hold the lease without it.
    pub fn failed(&self) -> bool {
        self.analysis.is_finished()
    }

    /// Stop delivery, the schedules and the feed. The analysis stops once its input
    /// closes: on PostgreSQL once the feed has stopped (after a resume under way), on
    /// SQLite when the writer stops; the caller joins the returned thread then.
    pub fn stop(self, shared: &Shared) -> JoinHandle<()> {
        shared.metrics.leader.set(0);
        shared.metrics.leader_token.set(0);
        if let Some(stop) = self.feed {
            stop.set();
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

/// Resume `analysis` from the store (its snapshot and the events committed since) and
/// start the feed of what replicas commit after, in one snapshot of the database.
fn resume_from_store(
    analysis: &mut Analysis,
    db: &Location,
    progress: &Progress,
) -> Result<Feed, StoreError> {
    let conn = db.reader()?;
    // The server's clock: the replicas stamp rows with their own clocks, which must
    // agree with it within the feed's lookback (NTP).
    let from_ms = crate::store::outbox::clock_ms(&conn)?;
    let (feed, resumed) = Feed::start(conn, from_ms, |db| {
        analysis
            .resume_on(db, crate::clock::now_ms())
            .map_err(|e| StoreError::Postgres(e.to_string()))
    })?;
    progress.resumed(resumed);
    Ok(feed)
}

fn spawn_analysis(run: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("analysis".into())
        .spawn(run)
        .expect("spawning the analysis thread")
}

/// Read the store into the analysis every `FEED_EVERY` until stopped, reconnecting
/// after an error (the feed keeps its place).
fn spawn_feed(
    mut feed: Feed,
    db: Location,
    tx: SyncSender<Committed>,
    stopped: Stop,
) -> JoinHandle<()> {
    std::thread::Builder::new()
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
        .expect("spawning the analysis feed thread")
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

    fn failed(&self, running: &Duties) -> bool {
        running.failed()
    }

    fn end(&mut self, running: Duties) {
        if running.stop(&self.0).join().is_err() {
            tracing::error!("analysis thread panicked");
        }
    }
}
