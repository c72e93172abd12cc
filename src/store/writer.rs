//! The writer thread: owns the one writable `Store` and commits batches in arrival
//! order. Async handlers and blocking tailers both hand batches over through `Writer`.

use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, oneshot};

use super::pg::ingest::PgWriter;
use super::{Batch, CommitReport, Fresh, Store, StoreError};
use crate::telemetry::{Metrics, SourceLabels};

/// A committed batch and which of its records were new, for the analysis.
pub struct Committed {
    /// The batch as committed.
    pub batch: Box<Batch>,
    /// Its new (non-duplicate) records.
    pub fresh: super::Fresh,
}

/// The store the writer thread commits to: SQLite's `Store` or PostgreSQL's
/// `PgWriter`, which store the same rows and report the same way.
pub trait Ingest: Send + 'static {
    /// Store `batch` in one transaction; which of its records were new.
    fn commit_fresh(
        &mut self,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<(CommitReport, Fresh), StoreError>;
    /// Retention: drop raw records older than `cutoff_ms`; the events dropped.
    fn prune(&mut self, cutoff_ms: i64) -> Result<u64, StoreError>;
}

impl Ingest for Store {
    fn commit_fresh(
        &mut self,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<(CommitReport, Fresh), StoreError> {
        Store::commit_fresh(self, batch, now_ms)
    }
    fn prune(&mut self, cutoff_ms: i64) -> Result<u64, StoreError> {
        Store::prune(self, cutoff_ms)
    }
}

impl Ingest for PgWriter {
    fn commit_fresh(
        &mut self,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<(CommitReport, Fresh), StoreError> {
        PgWriter::commit_fresh(self, batch, now_ms)
    }
    fn prune(&mut self, cutoff_ms: i64) -> Result<u64, StoreError> {
        PgWriter::prune(self, cutoff_ms)
    }
}

/// How many batches may wait for the writer before senders block (backpressure).
const QUEUE_DEPTH: usize = 8;

enum Job {
    Commit {
        batch: Box<Batch>,
        reply: oneshot::Sender<Result<CommitReport, StoreError>>,
    },
    Prune {
        cutoff_ms: i64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

/// A handle to the writer thread. Cheap to clone; the thread stops when every
/// handle is dropped, after committing what was queued.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// A commit that has been queued; wait on it to learn whether it landed.
pub struct Pending(oneshot::Receiver<Result<CommitReport, StoreError>>);

impl Pending {
    /// Wait for the commit from blocking code.
    pub fn wait_blocking(self) -> Result<CommitReport, StoreError> {
        self.0.blocking_recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Wait for the commit from async code.
    pub async fn wait(self) -> Result<CommitReport, StoreError> {
        self.0.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// The commit a source has queued and not yet seen land. One at a time: the source
/// decodes its next batch while this one commits, and learns of a failure before it
/// queues anything after it, so a later checkpoint never lands past a failed batch.
#[derive(Default)]
pub struct InFlight {
    /// The queued commit and the newest event time it holds.
    pending: Option<(Pending, Option<i64>)>,
    /// Told the newest event time of each batch once it has landed.
    on_landed: Option<Box<dyn FnMut(i64) + Send>>,
}

impl InFlight {
    /// Tell `on_landed` the newest event time of every batch that lands (a source's
    /// data clock).
    pub fn reporting(on_landed: impl FnMut(i64) + Send + 'static) -> InFlight {
        InFlight {
            pending: None,
            on_landed: Some(Box::new(on_landed)),
        }
    }

    /// Wait for the previous commit, then queue `batch`.
    pub fn submit(&mut self, writer: &Writer, batch: Batch) -> Result<(), StoreError> {
        self.wait()?;
        let newest = batch.events.iter().map(|e| e.ts_ms).max();
        self.pending = Some((writer.submit_blocking(batch)?, newest));
        Ok(())
    }

    /// Wait until the queued commit (if any) has landed.
    pub fn wait(&mut self) -> Result<(), StoreError> {
        let Some((pending, newest)) = self.pending.take() else {
            return Ok(());
        };
        pending.wait_blocking()?;
        if let (Some(report), Some(newest)) = (self.on_landed.as_mut(), newest) {
            report(newest);
        }
        Ok(())
    }
}

impl Writer {
    /// Start the writer thread on `store`. With `analysis`, every committed batch
    /// that holds new records is handed on to it after its commit.
    pub fn spawn(
        store: impl Ingest,
        metrics: Arc<Metrics>,
        analysis: Option<std::sync::mpsc::SyncSender<Committed>>,
    ) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, rx, metrics, analysis))
            .expect("spawning the writer thread");
        (Writer { jobs: tx }, handle)
    }

    /// Queue a batch from blocking code (a tailer). Blocks while the queue is full.
    pub fn submit_blocking(&self, batch: Batch) -> Result<Pending, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .blocking_send(Job::Commit {
                batch: Box::new(batch),
                reply,
            })
            .map_err(|_| StoreError::WriterGone)?;
        Ok(Pending(rx))
    }

    /// Commit a batch from async code and wait until it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<CommitReport, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Commit {
                batch: Box::new(batch),
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        Pending(rx).wait().await
    }

    /// Delete raw records older than `cutoff_ms`.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Prune { cutoff_ms, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

fn run(
    mut store: impl Ingest,
    mut jobs: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
    analysis: Option<std::sync::mpsc::SyncSender<Committed>>,
) {
    while let Some(job) = jobs.blocking_recv() {
        match job {
            Job::Commit { batch, reply } => {
                let result = store.commit_fresh(&batch, crate::clock::now_ms());
                let fresh = match &result {
                    Ok((report, fresh)) => {
                        record(&metrics, &batch, report);
                        Some(fresh.clone())
                    }
                    Err(e) => {
                        metrics.commit_errors.inc();
                        tracing::error!(source = %batch.source, cause = %e, "commit failed");
                        None
                    }
                };
                let result = result.map(|(report, _)| report);
                // Handed to the analysis before the source hears of it landing: a
                // source's data clock then never runs ahead of what the analysis has.
                if let (Some(tx), Some(fresh)) = (&analysis, fresh) {
                    let new = fresh.events.len() + fresh.evals.len() + fresh.changes.len();
                    // Blocks while the analysis is behind: backpressure, not loss.
                    if new > 0 && tx.send(Committed { batch, fresh }).is_err() {
                        tracing::warn!(
                            "analysis stopped; committed batches are no longer analysed"
                        );
                    }
                }
                // The sender may have given up waiting (shutdown); the commit stands.
                let _ = reply.send(result);
            }
            Job::Prune { cutoff_ms, reply } => {
                let _ = reply.send(store.prune(cutoff_ms));
            }
        }
    }
    tracing::debug!("store writer stopped");
}

fn record(metrics: &Metrics, batch: &Batch, report: &CommitReport) {
    let labels = SourceLabels {
        source: batch.source.clone(),
        format: batch.format.clone(),
    };
    let add = |family: &Family<SourceLabels, Counter>, n: u64| {
        if n > 0 {
            family.get_or_create(&labels).inc_by(n);
        }
    };
    add(&metrics.events_ingested, report.events_inserted);
    add(&metrics.events_duplicate, report.events_duplicate);
    add(&metrics.evals_ingested, report.evals_inserted);
    add(&metrics.records_rejected, report.dead_letters);
    add(&metrics.records_skipped, batch.skipped);
}
