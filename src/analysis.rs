//! The analysis stage as one unit: the engine (lanes, baselines, detectors) and the
//! alert stage (lifecycle, tiers, exceptions, notifications), fed with committed
//! batches. `serve` runs it on its own thread on the wall clock; `replay` runs it
//! inline on the data clock. Same code, same decisions.

use std::path::Path;

use crate::alerts::{AlertError, AlertStage, Delivery, Encoder, Sent};
use crate::config::{ClockMode, Config};
use crate::detect::rules::{RuleContext, RuleErrors, RuleSet};
use crate::domain::Alert;
use crate::engine::{Cut, Engine, FORMAT_VERSION, SnapshotError};
use crate::exceptions::Registry;
use crate::store::pg::lease::Lease;
use crate::store::snapshot::{self, SnapshotMeta};
use crate::store::writer::Committed;
use crate::store::{Batch, Fresh, StoreError, queries};
use crate::tiers::{TierError, Tiers};

/// Why the analysis could not start.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The rule files are invalid (every error, with file and line).
    #[error("{0}")]
    Rules(RuleErrors),
    /// The tier file is invalid.
    #[error(transparent)]
    Tiers(#[from] TierError),
    /// A setting of `[analysis]` is invalid.
    #[error("[analysis] in the config: {0}")]
    Config(#[from] crate::lanes::PairError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored analysis snapshot was written by a newer driftwarden.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The snapshot rebuilt at start could not be stored.
    #[error(transparent)]
    Alerts(#[from] AlertError),
}

impl From<RuleErrors> for AnalysisError {
    fn from(e: RuleErrors) -> AnalysisError {
        AnalysisError::Rules(e)
    }
}

/// Load and validate the tiers and rules of `dir`, with the pairs configured.
pub fn load_rules(config: &Config, dir: &Path) -> Result<(Tiers, RuleSet), AnalysisError> {
    let tiers = Tiers::load(dir)?;
    let ctx = RuleContext {
        pairs: Engine::pair_shapes(&config.engine.analysis)?,
        tiers: tiers.defs().iter().map(|d| d.tier.name.clone()).collect(),
    };
    let rules = RuleSet::load_dir(dir, &ctx)?;
    Ok((tiers, rules))
}

/// Engine and alert stage together.
pub struct Analysis {
    engine: Engine,
    stage: AlertStage,
    /// Which steps store a snapshot.
    snapshots: Snapshots,
    last_snapshot: Option<SnapshotMeta>,
    /// When the last one was stored, on the process's monotonic clock: the
    /// decision clock may be the data's, which a backlog moves by days a second.
    last_snapshot_at: Option<std::time::Instant>,
    /// The newest event time the start fed from the store: where the data clock
    /// stands before any source delivers.
    stored_newest_ms: i64,
}

/// Which steps of the analysis store a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Snapshots {
    /// None: one is stored when asked (`store_snapshot`, the end of a replay).
    WhenAsked,
    /// A step that judged a bucket, at most every `SNAPSHOT_EVERY` (`serve`).
    Throttled,
    /// Every step that judged or wrote anything (`serve --clock data`): a restart
    /// then never re-judges, and decides exactly as the process that stopped.
    EveryStep,
}

/// Stored records fed to the engine at a start.
#[derive(Debug, Default, Clone, Copy)]
struct Fed {
    events: u64,
    evals: u64,
}

/// What a start loaded the analysis from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Resumed {
    /// The stored snapshot's description, when one was loaded.
    pub snapshot: Option<SnapshotMeta>,
    /// With a snapshot: the time from which stored events were fed again (the
    /// buckets it left open).
    pub events_from_ms: Option<i64>,
    /// With a snapshot: the time of the newest eval it counted (later ones were
    /// fed again).
    pub evals_after_ms: Option<i64>,
    /// With a snapshot: the data time up to which the steps after it had stored
    /// their decisions, re-judged silently at start (when past the snapshot).
    pub rejudged_to_ms: Option<i64>,
    /// Stored events fed after it (or, without one, every stored event).
    pub events_refed: u64,
    /// Stored evals fed after it (or every stored eval).
    pub evals_refed: u64,
    /// Without a usable snapshot: days of raw events the state was rebuilt from.
    pub rebuilt_days: Option<f64>,
    /// Why a stored snapshot was not used, when one was not.
    pub not_loaded: Option<String>,
}

impl Analysis {
    /// Open on the config's database and rules. Under `Delivery::Count` (replay)
    /// alerts are stored and returned, and messages counted, not queued.
    ///
    /// With `fence` (a replica on PostgreSQL leading under that lease), every write of
    /// the alert stage checks the lease in its transaction: a replica that lost it
    /// writes nothing.
    pub fn open(
        config: &Config,
        delivery: Delivery,
        fence: Option<Lease>,
    ) -> Result<Analysis, AnalysisError> {
        let (tiers, rules) = load_rules(config, &config.rules)?;
        let engine = Engine::new(config.engine.clone(), rules.rules)?;
        let conn = match fence {
            Some(lease) => config.db.side()?.fenced(lease),
            None => config.db.side()?,
        };
        let registry = Some(Registry::new(config.exceptions));
        let mut stage = AlertStage::new(conn, tiers, registry, config.routing, delivery)?;
        let mut snapshots = Snapshots::Throttled;
        if config.clock == ClockMode::Data {
            stage = stage.on_data_clock();
            snapshots = Snapshots::EveryStep;
        }
        Ok(Analysis {
            engine,
            stage,
            snapshots,
            last_snapshot: None,
            last_snapshot_at: None,
            stored_newest_ms: i64::MIN,
        })
    }

    /// Store a snapshot only when asked (`store_snapshot`), not at every step that
    /// judged a bucket: a replay judges thousands a second and leaves one at its end.
    pub fn snapshot_when_asked(mut self) -> Analysis {
        self.snapshots = Snapshots::WhenAsked;
        self
    }

    /// The last snapshot stored since start.
    pub fn last_snapshot(&self) -> Option<SnapshotMeta> {
        self.last_snapshot
    }

    /// Store a snapshot of the state now, covering `watermark_ms`, in its own
    /// transaction (the end of a replay, a rebuild at start).
    pub fn store_snapshot(&mut self, watermark_ms: i64) -> Result<SnapshotMeta, AlertError> {
        let (mut meta, bytes) = encode(&self.engine, watermark_ms, &self.stage.state_bytes());
        self.stage.store_snapshot(&mut meta, &bytes)?;
        self.stored(meta);
        Ok(meta)
    }

    /// A snapshot was stored (committed): remember it for the spacing and the API.
    fn stored(&mut self, meta: SnapshotMeta) {
        tracing::debug!(
            watermark_ms = meta.watermark_ms,
            bytes = meta.bytes,
            write_ms = meta.write_ms,
            "analysis snapshot stored"
        );
        self.last_snapshot = Some(meta);
        self.last_snapshot_at = Some(std::time::Instant::now());
    }

    /// Count the new records of a committed batch (changes first, so a change and
    /// the events after it arrive in order).
    pub fn feed(&mut self, batch: &Batch, fresh: &Fresh) {
        for &i in &fresh.changes {
            self.engine.observe_change(&batch.changes[i as usize]);
        }
        for &i in &fresh.events {
            self.engine.observe_event(&batch.events[i as usize]);
        }
        for &i in &fresh.evals {
            self.engine.observe_eval(&batch.evals[i as usize]);
        }
    }

    /// Move the data clock to `watermark_ms` and handle what comes out, with
    /// notifications on the `now_ms` clock. Returns the firing and resolved lines.
    /// A step that is snapshotted stores the snapshot of the state after it in the
    /// transaction of its writes; one that is not marks how far the stored
    /// decisions reach, which a start re-judges silently.
    pub fn advance(&mut self, watermark_ms: i64, now_ms: i64) -> Result<Vec<Alert>, AlertError> {
        self.engine.advance(watermark_ms);
        let out = self.engine.drain();
        // A backfill judges many buckets a second, and a snapshot of a large gateway
        // is tens of megabytes (mostly the requests whose evals may still come): on
        // the wall clock one is written SNAPSHOT_EVERY at most, and at least
        // SNAPSHOT_SPACING times as long as the last one took after it, so
        // snapshots never take more than 1/SNAPSHOT_SPACING of the analysis' time.
        let due = match self.snapshots {
            Snapshots::WhenAsked => return self.stage.handle(out, now_ms),
            Snapshots::EveryStep => true,
            Snapshots::Throttled => {
                let took = self.last_snapshot.map_or(0, |m| m.write_ms.max(0) as u64);
                let spacing = SNAPSHOT_EVERY.max(std::time::Duration::from_millis(
                    took.saturating_mul(SNAPSHOT_SPACING),
                ));
                !out.ticks.is_empty()
                    && self.last_snapshot_at.is_none_or(|t| t.elapsed() >= spacing)
            }
        };
        let engine = &self.engine;
        let encode = |stage: &[u8]| encode(engine, watermark_ms, stage);
        let encoder: &Encoder<'_> = &encode;
        let (lines, meta) = self.stage.handle_and_snapshot(
            out,
            now_ms,
            due.then_some(encoder),
            Some(watermark_ms),
        )?;
        if let Some(meta) = meta {
            self.stored(meta);
        }
        Ok(lines)
    }

    /// The data ends at `last_ms` (end of a replay): judge what is complete, not
    /// the partial last bucket; notifications on the `now_ms` clock.
    pub fn end_of_data(&mut self, last_ms: i64, now_ms: i64) -> Result<Vec<Alert>, AlertError> {
        self.engine.end_of_data(last_ms);
        let out = self.engine.drain();
        self.stage.handle(out, now_ms)
    }

    /// The messages counted under `Delivery::Count` since the last call.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        self.stage.take_sent()
    }

    /// Close the day's budgets and send what is still grouped (end of a replay).
    pub fn finish(&mut self, at_ms: i64) -> Result<Vec<Alert>, AlertError> {
        self.stage.finish(at_ms)
    }

    /// Load the state a start resumes from: the stored snapshot, then the stored
    /// records it does not cover (events of the buckets it left open, evals after
    /// the newest it counted, change events it does not know), which the next steps
    /// judge. Without a snapshot, or with one this build cannot use (an older format,
    /// other bucket or scope settings), the state is rebuilt from every raw event the
    /// store holds, with a warning naming what was lost. A snapshot of a newer
    /// format is refused.
    pub fn resume(
        &mut self,
        db: &crate::store::Location,
        now_ms: i64,
    ) -> Result<Resumed, AnalysisError> {
        self.resume_on(&db.reader()?, now_ms)
    }

    /// `resume` on a connection the caller opened: the leader of several replicas
    /// resumes inside the snapshot its feed starts from (`store::pg::feed`).
    pub fn resume_on(
        &mut self,
        conn: &crate::store::sql::Db,
        now_ms: i64,
    ) -> Result<Resumed, AnalysisError> {
        let not_loaded = match snapshot::read(conn)? {
            None => None,
            Some((meta, bytes)) => match self.engine.load(&bytes) {
                Ok((cut, stage)) => {
                    let (events, evals) = self.refeed(conn, cut)?;
                    // The steps after the snapshot stored their decisions: judge
                    // their buckets again to rebuild the state, and drop what that
                    // raises (it was raised, and stored, when it happened). The
                    // alert state is then the one rebuilt from the stored rows;
                    // without such steps, the snapshot's is exact.
                    let decided = snapshot::read_decided(conn)?;
                    if decided.is_none()
                        && let Err(e) = self.stage.restore_state(&stage)
                    {
                        tracing::warn!(cause = %e, "the snapshot's alert state could not be restored; alert state rebuilt from the stored alerts");
                    }
                    let rejudged = decided.filter(|&d| d > meta.watermark_ms);
                    if let Some(decided) = rejudged {
                        self.engine.advance(decided);
                        drop(self.engine.drain());
                    }
                    tracing::info!(
                        watermark_ms = meta.watermark_ms,
                        rejudged_to_ms = rejudged,
                        bytes = meta.bytes,
                        written_ms = meta.written_ms,
                        events_refed = events,
                        evals_refed = evals,
                        "analysis resumed from its snapshot"
                    );
                    return Ok(Resumed {
                        snapshot: Some(meta),
                        events_from_ms: Some(cut.events_from),
                        evals_after_ms: Some(cut.evals_after_ms),
                        rejudged_to_ms: rejudged,
                        events_refed: events,
                        evals_refed: evals,
                        rebuilt_days: None,
                        not_loaded: None,
                    });
                }
                Err(e @ SnapshotError::TooNew { .. }) => return Err(e.into()),
                Err(e) => Some(e.to_string()),
            },
        };
        let (Fed { events, evals }, span) = self.warm(conn, i64::MIN / 4, now_ms)?;
        let days = span.map_or(0.0, |(first, last)| (last - first) as f64 / 86_400_000.0);
        match &not_loaded {
            Some(why) => tracing::warn!(
                cause = %why,
                events,
                days = format!("{days:.1}"),
                "analysis snapshot not used: seasonal slots, epochs, anchors, warm-ups and step sums rebuilt from the raw events kept; older history is lost"
            ),
            None => tracing::info!(
                events,
                days = format!("{days:.1}"),
                "no analysis snapshot yet: analysis built from the raw events kept"
            ),
        }
        // An empty store's state is stored too (covering no data), so that a store
        // without a snapshot always holds history judged before snapshots were kept:
        // a daemon killed before its first step's snapshot was stored resumes from
        // this one and judges what it had read, instead of taking it as judged.
        self.store_snapshot(span.map_or(0, |(_, last)| last))?;
        if span.is_none() {
            // Nothing judged yet: the first step's snapshot does not wait after it.
            self.last_snapshot_at = None;
        }
        Ok(Resumed {
            snapshot: None,
            events_from_ms: None,
            evals_after_ms: None,
            rejudged_to_ms: None,
            events_refed: events,
            evals_refed: evals,
            rebuilt_days: Some(days),
            not_loaded,
        })
    }

    /// Feed what a loaded snapshot does not cover, without judging it: the next
    /// steps judge it as if it had just arrived. (events, evals) fed.
    fn refeed(
        &mut self,
        conn: &(impl crate::store::sql::Sql + ?Sized),
        cut: Cut,
    ) -> Result<(u64, u64), StoreError> {
        // The engine skips the change events it knows.
        for c in queries::changes_since(conn, i64::MIN / 4)? {
            self.engine.observe_change(&c);
        }
        let mut evals =
            queries::evals_between(conn, cut.evals_after_ms.saturating_add(1), i64::MAX / 4)?;
        evals.reverse();
        let refed_evals = evals.len() as u64;
        let mut after = (cut.events_from.saturating_sub(1), String::new());
        let mut refed = 0u64;
        loop {
            let events = queries::events_page(conn, (after.0, &after.1), i64::MAX / 4, 50_000)?;
            let Some(last) = events.last() else { break };
            after = (last.ts_ms, last.id.to_string());
            let until = last.ts_ms;
            // Events of the second before belong to a closed bucket: not fed again.
            for e in events.iter().filter(|e| e.ts_ms >= cut.events_from) {
                self.engine.observe_event(e);
                self.stored_newest_ms = self.stored_newest_ms.max(e.ts_ms);
                refed += 1;
            }
            while evals.last().is_some_and(|e| e.ts_ms <= until) {
                self.engine.observe_eval(&evals.pop().expect("peeked"));
            }
        }
        while let Some(e) = evals.pop() {
            self.engine.observe_eval(&e);
        }
        Ok((refed, refed_evals))
    }

    /// Rebuild the engine's state from stored history from `from` on: events,
    /// evals and change events, on their data clock. What that history would have
    /// raised was raised when it happened, so it is dropped. What was fed, and the
    /// first and last event time.
    fn warm(
        &mut self,
        conn: &(impl crate::store::sql::Sql + ?Sized),
        from: i64,
        now_ms: i64,
    ) -> Result<(Fed, Option<(i64, i64)>), StoreError> {
        let mut changes = queries::changes_since(conn, from)?;
        changes.reverse();
        let mut evals = queries::evals_between(conn, from, now_ms)?;
        evals.reverse();
        let mut after = (from - 1, String::new());
        let mut fed = Fed::default();
        let mut span: Option<(i64, i64)> = None;
        loop {
            let events = queries::events_page(conn, (after.0, &after.1), now_ms, 50_000)?;
            let Some(last) = events.last() else { break };
            span = Some((span.map_or(events[0].ts_ms, |s| s.0), last.ts_ms));
            after = (last.ts_ms, last.id.to_string());
            let until = last.ts_ms;
            while changes.last().is_some_and(|c| c.ts_ms <= until) {
                let c = changes.pop().expect("peeked");
                self.engine.observe_change(&c);
            }
            for e in &events {
                self.engine.observe_event(e);
            }
            self.stored_newest_ms = self.stored_newest_ms.max(until);
            while evals.last().is_some_and(|e| e.ts_ms <= until) {
                let e = evals.pop().expect("peeked");
                self.engine.observe_eval(&e);
                fed.evals += 1;
            }
            fed.events += events.len() as u64;
            self.engine.advance(until);
            drop(self.engine.drain());
        }
        // Evals stored ahead of the newest event (an evals file is read ahead of the
        // events) wait for their requests as they did when first read.
        while let Some(e) = evals.pop() {
            self.engine.observe_eval(&e);
            fed.evals += 1;
        }
        Ok((fed, span))
    }

    /// Records the lanes could not use.
    pub fn counters(&self) -> crate::lanes::LaneCounters {
        self.engine.counters()
    }
}

/// How far the live analysis has got, shared with the API (`analysis` in
/// `/v1/stats`): the data time it has judged up to and the clock time of that step,
/// what the start resumed from and the last snapshot stored. A test or the demo
/// awaits it to know that everything before a data time has been judged and its
/// notifications routed, instead of sleeping.
#[derive(Debug, Clone, Default)]
pub struct Progress(std::sync::Arc<std::sync::Mutex<Shown>>);

/// What `Progress` shows.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Shown {
    /// The last step, `None` before the first.
    #[serde(flatten)]
    pub step: Option<Advanced>,
    /// The last snapshot stored (or loaded at start).
    pub snapshot: Option<SnapshotMeta>,
    /// What the start resumed from.
    pub resumed: Option<Resumed>,
}

/// One step of the live analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Advanced {
    /// Data time every bucket before which is closed and judged, ms.
    pub watermark_ms: i64,
    /// Clock time of the step (`clock::now_ms`), on which notifications are
    /// grouped and sent, ms.
    pub at_ms: i64,
}

impl Progress {
    /// The last step, `None` before the first.
    pub fn get(&self) -> Option<Advanced> {
        self.shown().step
    }

    /// Everything shown.
    pub fn shown(&self) -> Shown {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, step: Advanced, snapshot: Option<SnapshotMeta>) {
        let mut shown = self.0.lock().unwrap_or_else(|p| p.into_inner());
        shown.step = Some(step);
        shown.snapshot = snapshot.or(shown.snapshot);
    }

    /// Record what the start resumed from.
    pub fn resumed(&self, resumed: Resumed) {
        let mut shown = self.0.lock().unwrap_or_else(|p| p.into_inner());
        shown.snapshot = resumed.snapshot;
        shown.resumed = Some(resumed);
    }
}

/// The analysis state (`engine`'s, with the alert stage's `stage`) encoded,
/// described as covering `watermark_ms` and written now (on the wall clock, whatever
/// clock decisions run on).
fn encode(engine: &Engine, watermark_ms: i64, stage: &[u8]) -> (SnapshotMeta, Vec<u8>) {
    tracing::debug!(watermark_ms, "analysis snapshot begins");
    let started = std::time::Instant::now();
    let bytes = engine.snapshot(stage);
    let meta = SnapshotMeta {
        format_version: FORMAT_VERSION,
        watermark_ms,
        written_ms: crate::clock::now_ms(),
        write_ms: started.elapsed().as_millis() as i64,
        bytes: bytes.len() as u64,
    };
    (meta, bytes)
}

/// The shortest time between two snapshots of the live analysis.
const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How many times as long as the last snapshot took the next one waits at least:
/// snapshots cost at most 1/20 = 5% of the live analysis' time.
const SNAPSHOT_SPACING: u64 = 20;

/// Batches taken off the queue at once, at most, before the clock may move.
const DRAIN_MAX: usize = 64;

/// Run the analysis live until `batches` closes: fold each committed batch and close
/// buckets as far as every pulling source has delivered (`clocks`). A source reading
/// a backlog moves the clock along its data, as replay would; sources that are
/// caught up let the wall clock close buckets, empty ones included, so silence is
/// judged. Records pushed by webhooks hold the clock at their newest time while they
/// flow (a backfill posted over HTTP). `now` is the clock (`clock::now_ms` in `serve`).
/// On `ClockMode::Data` the wall never closes a bucket and decisions run at the
/// data's time, as in replay.
pub fn run_live(
    mut analysis: Analysis,
    batches: std::sync::mpsc::Receiver<Committed>,
    clocks: crate::sources::clocks::SourceClocks,
    progress: Progress,
    mode: ClockMode,
    now: impl Fn() -> i64,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let tick = std::time::Duration::from_secs(1);
    let quiet = std::time::Duration::from_secs(10);
    let mut last_tick = std::time::Instant::now();
    let mut last_batch: Option<std::time::Instant> = None;
    // The data clock stands where the stored data ends: a source with nothing new
    // to deliver after a start lets the data clock judge what the store holds.
    let mut newest = analysis.stored_newest_ms;
    loop {
        let first = match batches.recv_timeout(tick) {
            Ok(c) => Some(c),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = now();
        // The sources' clocks are read before the queue is taken: a source reports
        // a batch only after it was queued here, so all they count is in hand once
        // the queue is empty. While a backlog keeps it full, the newest event fed
        // (below, `pushed`) bounds the clock too.
        let held = clocks.watermark(now);
        let before = newest;
        let queued = std::iter::from_fn(|| batches.try_recv().ok()).take(DRAIN_MAX);
        for c in first.into_iter().chain(queued) {
            analysis.feed(&c.batch, &c.fresh);
            newest = c
                .batch
                .events
                .iter()
                .map(|e| e.ts_ms)
                .fold(newest, i64::max);
            last_batch = Some(std::time::Instant::now());
        }
        // Close buckets as the data time moves, not only once a second: a backfill
        // feeds days of data a second, and every bucket left open until the next
        // tick (cells and sketches for every scope) is held at once.
        let due = last_tick.elapsed() >= tick;
        let Some(held) = held.filter(|_| due || newest > before) else {
            continue;
        };
        if due {
            last_tick = std::time::Instant::now();
        }
        let flowing = last_batch.is_some_and(|t| t.elapsed() < quiet);
        let pushed = match (mode, flowing && newest > i64::MIN) {
            (ClockMode::Data, _) => newest,
            (ClockMode::Wall, true) => newest.min(now),
            (ClockMode::Wall, false) => now,
        };
        let watermark = held.min(pushed);
        if watermark == i64::MIN {
            continue;
        }
        let now = match mode {
            ClockMode::Wall => now,
            ClockMode::Data => watermark,
        };
        advance(&mut analysis, watermark, now);
        // The engine never moves its clock back: report the furthest point judged.
        let furthest = progress
            .get()
            .map_or(watermark, |p| p.watermark_ms.max(watermark));
        progress.set(
            Advanced {
                watermark_ms: furthest,
                at_ms: now,
            },
            analysis.last_snapshot(),
        );
    }
    tracing::debug!("analysis stopped");
}

/// Advance the analysis to `watermark` and log the alert lines it produced.
fn advance(analysis: &mut Analysis, watermark: i64, now: i64) {
    match analysis.advance(watermark, now) {
        Ok(lines) => {
            for a in lines {
                tracing::info!(event = ?a.event, rule = %a.rule, kind = a.kind.as_str(), scope = %crate::domain::scope_label(&a.scope), tier = %a.tier, summary = %a.summary, "alert");
            }
        }
        Err(e) => tracing::error!(cause = %e, "analysis could not store its results"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::config::{FileConfig, Overrides};
    use crate::sources::clocks::{FAILING_HOLD_MS, SourceClocks};

    const MIN: i64 = 60_000;
    const T0: i64 = 1_780_000_200_000;

    #[test]
    fn a_failing_source_holds_the_live_analysis_then_lets_it_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let overrides = Overrides {
            db: Some(dir.path().join("live.db").display().to_string()),
            rules: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")),
            ..Overrides::default()
        };
        let config = Config::resolve(FileConfig::default(), overrides).expect("config");
        let _store = crate::store::Store::open(config.db.sqlite_path().unwrap()).expect("store");
        let analysis = Analysis::open(&config, Delivery::Count, None).expect("analysis");
        let clock = Arc::new(AtomicI64::new(T0));
        let clocks = SourceClocks::default();
        let progress = Progress::default();
        let (send, batches) = std::sync::mpsc::channel();
        let live = {
            let (clocks, progress, clock) = (clocks.clone(), progress.clone(), clock.clone());
            std::thread::spawn(move || {
                run_live(
                    analysis,
                    batches,
                    clocks,
                    progress,
                    ClockMode::Wall,
                    move || clock.load(Ordering::SeqCst),
                )
            })
        };
        // Set the clock and wait until the analysis has taken a step at that time.
        let step_at = |at: i64| {
            clock.store(at, Ordering::SeqCst);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match progress.get() {
                    Some(p) if p.at_ms == at => return p.watermark_ms,
                    _ if std::time::Instant::now() > deadline => panic!("no step at {at}"),
                    _ => std::thread::yield_now(),
                }
            }
        };
        clocks.caught_up("tail:a", T0);
        clocks.caught_up("db:b", T0);
        assert_eq!(step_at(T0 + MIN), T0, "both delivered up to T0");
        // b fails: the file is read on, but b's data up to now may still come.
        clocks.failing("db:b", T0 + MIN, "connection refused");
        clocks.caught_up("tail:a", T0 + 10 * MIN);
        assert_eq!(step_at(T0 + 10 * MIN), T0, "b holds the buckets after T0");
        // Past the hold, buckets close without b (its rows will count as late).
        let later = T0 + MIN + FAILING_HOLD_MS + 1;
        clocks.caught_up("tail:a", later);
        assert_eq!(step_at(later), later);
        drop(send);
        live.join()
            .expect("the analysis stops when its queue closes");
    }
}
