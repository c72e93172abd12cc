//! Start-up benchmark: `cargo bench --bench startup`.
//!
//! Issue 13's targets: `driftwarden serve` on a store holding 30 days of history at
//! 100 requests/s is healthy, its analysis resumed from the stored snapshot, in under
//! 3 s; its peak memory at start-up is no higher than in steady state; a snapshot
//! costs at most 5% of the analysis' throughput; the snapshot's size at 10,000 tenants.
//!
//! The store. `serve` keeps raw events and eval scores `retention_days` (7 by default;
//! the hourly retention job deletes older ones) and per-minute aggregates, alerts and
//! the one snapshot row for good, so 30 days of running leave 30 days of aggregates, the
//! last 7 days of raw rows, and the snapshot of an analysis that learned from all 30.
//! The bench builds exactly that through the library, the way replay does but without
//! files: `driftwarden::sim` generates a flat BENCH_RATE requests/s (default 100, every
//! hour and weekday alike; its evals beside them) over BENCH_TENANTS tenants (Zipf 0.5,
//! as the replay bench), a generator thread cuts it into batches, `Store::commit_fresh`
//! stores them (aggregates always, raw rows only for the last 7 days), and an `Analysis`
//! on its own thread folds and judges them on their data clock and stores its
//! snapshot at the end. The history ends at the current minute, so `serve` starts as a
//! daemon stopped a moment ago would. The store is cached in BENCH_DATA (default
//! `target/bench-startup`), one directory per days/rate/tenants, with a `state.json`
//! saying where its data ends; a later run extends it to the current minute first
//! (the analysis resumed from its snapshot, as `serve` does, then fed the gap), and so
//! does every start-up run, so each start finds a history that ends just now.
//!
//! Per tenant count (BENCH_TENANTS, a comma list, default `200,10000`):
//! 0. The snapshot's size and write time in-process: an `Analysis` resumed on the store
//!    (as `serve` resumes) stores its snapshot BENCH_RUNS times (`store_snapshot`:
//!    encode and store, its own transaction); the median, and of it the encoding (the
//!    stored row's `encode_ms`).
//! 1. BENCH_RUNS (default 5) starts of the release binary, `serve --db STORE --rules
//!    rules --listen 127.0.0.1:PORT`: the time from spawn until `/healthz` answers 200
//!    and `/metrics` shows the snapshot it resumed from (polled every 5 ms; `serve`
//!    resumes before it listens), and the peak RSS then (`VmHWM`); then `/v1/stats` must
//!    show `analysis.resumed` from a snapshot (it is read after the measurement: it
//!    counts every stored row, over a second on this store). Then SIGTERM.
//! 2. One more start, then live traffic: the simulated gateway goes on at the same rate
//!    in real time, each second's requests posted to `/v1/events` (NDJSON) and the evals
//!    due to `/v1/evals`, for BENCH_LIVE_SECS (default 60) and at least until the daemon
//!    has judged a bucket and stored a snapshot since its start (buckets are 10 minutes
//!    plus 2 of lateness, so up to 12 minutes). The peak RSS is reset (`clear_refs` 5)
//!    once the start is over, so the steady-state peak is that of live running alone;
//!    the size and write time of the snapshot the daemon stored come from `/metrics`.
//!
//! The snapshot's share of the analysis' time is derived, not measured: `serve` stores
//! one at most every 10 s of wall time and at least 20 times its last write time after
//! it (`analysis::SNAPSHOT_EVERY`, `SNAPSHOT_SPACING`), each on the analysis thread, so
//! the share is at most write time / max(10 s, 20 x write time). (Live, a snapshot is
//! stored only when a bucket is judged, about once per 10-minute bucket; replay stores
//! one at its end.)
//!
//! BENCH_BUILD_ONLY=1 only builds (or brings up to date) the stores and prints their
//! snapshot's size and write time. BENCH_DAYS (default 30) and BENCH_RATE make a quick
//! run possible:
//! `BENCH_DAYS=2 BENCH_RATE=20 BENCH_TENANTS=200 BENCH_RUNS=3 cargo bench --bench startup`.
//! This is not a test: under `cargo test --all-targets` it only says how to run it.

mod common;

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Bench, Machine, TOKEN, Watched, median, tail, thousands, verdict};
use driftwarden::alerts::Delivery;
use driftwarden::analysis::Analysis;
use driftwarden::config::{Config, FileConfig, Overrides};
use driftwarden::domain::{EvalScore, UsageEvent};
use driftwarden::sim::{self, DAY_MS, Profile, SimRecord};
use driftwarden::store::snapshot::SnapshotMeta;
use driftwarden::store::{Batch, Fresh, Store};
use serde::{Deserialize, Serialize};

// The daemon's allocator, so that the snapshot writes timed here allocate as its do.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 0x5a7e_0013_2026_1205;
/// Zipf exponent of tenant shares, as in the replay bench.
const TENANT_SKEW: f64 = 0.5;
/// `serve`'s default `retention_days`: raw events and evals older than this are deleted.
const RETENTION_DAYS: i64 = 7;
/// Events per committed batch while building (replay's chunk).
const CHUNK: usize = 8192;
const MINUTE_MS: i64 = 60_000;
const STARTUP_TARGET_SECS: f64 = 3.0;
/// At most one snapshot per this much wall time (`analysis::SNAPSHOT_EVERY`)...
const SNAPSHOT_EVERY_MS: f64 = 10_000.0;
/// ...and the next waits at least this many times the last one's write time
/// (`analysis::SNAPSHOT_SPACING`).
const SNAPSHOT_SPACING: f64 = 20.0;

/// The most of the analysis' time snapshots written in `write_ms` each can take.
fn snapshot_share(write_ms: f64) -> f64 {
    write_ms / SNAPSHOT_EVERY_MS.max(SNAPSHOT_SPACING * write_ms)
}
const SHARE_TARGET: f64 = 0.05;
/// How long a start may take before the bench gives up on it.
const START_LIMIT: Duration = Duration::from_secs(300);
/// The longest the live phase waits for a snapshot after the start.
const LIVE_LIMIT: Duration = Duration::from_secs(20 * 60);
/// Bumped when the way the store is built changes, so a cached one is rebuilt.
const STORE_VERSION: u32 = 1;

fn main() {
    if !common::bench_requested("startup") {
        return;
    }
    let days = env_f64("BENCH_DAYS", 30.0);
    let rate = env_f64("BENCH_RATE", 100.0);
    let runs = common::env_usize("BENCH_RUNS", 5);
    let live_secs = common::env_usize("BENCH_LIVE_SECS", 60) as u64;
    // Only build (or bring up to date) the cached stores.
    let build_only = std::env::var_os("BENCH_BUILD_ONLY").is_some_and(|v| v != "0");
    let tenant_counts: Vec<usize> = std::env::var("BENCH_TENANTS")
        .unwrap_or_else(|_| "200,10000".into())
        .split(',')
        .map(|t| {
            t.trim()
                .replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("BENCH_TENANTS={t:?} is not a list of counts"))
        })
        .collect();
    let data = std::env::var_os("BENCH_DATA").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-startup"),
        PathBuf::from,
    );
    let bench = Bench::new("driftwarden-bench-startup-");
    let started = Instant::now();
    let machine = Machine::probe();
    common::print_title("driftwarden start-up benchmark");
    machine.print_start(
        &format!(
            "{days} days at {rate} requests/s, tenants {tenant_counts:?}, runs {runs}, live {live_secs}s; stores in {}",
            data.display()
        ),
        &bench,
    );

    let mut rows = Vec::new();
    for &tenants in &tenant_counts {
        let store = CachedStore::new(&data, days, rate, tenants, &bench.rules);
        println!("\n## {tenants} tenants: {}", store.dir.display());
        let built = store.ensure();
        let size = db_bytes(&store.db);
        let (writes, snapshot_bytes) = store.snapshot_writes(runs);
        let mut write_ms: Vec<f64> = writes.iter().map(|w| w.0).collect();
        let mut encode_ms: Vec<f64> = writes.iter().map(|w| w.1).collect();
        let (write_ms, encode_ms) = (median(&mut write_ms), median(&mut encode_ms));
        println!(
            "snapshot: {:.1} MiB, written {runs} times by the resumed analysis: median {write_ms:.0} ms, of which encoding {encode_ms:.0} ms (each: {})",
            snapshot_bytes as f64 / (1u64 << 20) as f64,
            writes
                .iter()
                .map(|w| format!("{:.0}/{:.0}", w.0, w.1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if build_only {
            println!(
                "store: {:.2} GiB, data to {} ms; snapshot {:.1} MiB written in {} ms",
                size as f64 / (1u64 << 30) as f64,
                store.load_state().map_or(0, |s| s.end_ms),
                built.snapshot.bytes as f64 / (1u64 << 20) as f64,
                built.snapshot.write_ms
            );
            continue;
        }
        println!(
            "store: {:.2} GiB; {} raw events and {} evals kept, {} aggregate rows",
            size as f64 / (1u64 << 30) as f64,
            thousands(built.raw_events as f64),
            thousands(built.raw_evals as f64),
            thousands(built.aggregate_rows as f64)
        );

        let (mut secs, mut hwm) = (Vec::new(), Vec::new());
        let mut refed = Vec::new();
        for run in 1..=runs {
            let topped = store.ensure();
            let r = start_once(&bench, &store.db, &format!("{tenants}-{run}"), None);
            println!(
                "run {run}: healthy and resumed in {:.3}s (ready line at {:.3}s; /v1/stats then answered in {:.2}s), start-up peak RSS {:.1} MiB; re-fed {} events and {} evals; snapshot {:.1} MiB (top-up of {:.0}s of data took {:.1}s)",
                r.secs,
                r.ready_secs,
                r.stats_secs,
                r.hwm_kib as f64 / 1024.0,
                thousands(r.events_refed as f64),
                thousands(r.evals_refed as f64),
                r.snapshot_bytes as f64 / (1u64 << 20) as f64,
                topped.data_secs,
                topped.secs,
            );
            secs.push(r.secs);
            hwm.push(r.hwm_kib as f64 / 1024.0);
            refed.push(r.events_refed as f64);
        }
        let start_secs = median(&mut secs);
        let start_hwm = median(&mut hwm);
        let refed = median(&mut refed);
        println!(
            "median: healthy and resumed in {start_secs:.3}s ({} < {STARTUP_TARGET_SECS}s), start-up peak RSS {start_hwm:.1} MiB",
            verdict(start_secs < STARTUP_TARGET_SECS)
        );

        store.ensure();
        let live = live_once(&bench, &store, live_secs, tenants);
        let share = snapshot_share(live.write_ms);
        println!(
            "steady state after {:.0}s of live traffic ({} events, {} evals posted): peak RSS {:.1} MiB, RSS at the end {:.1} MiB; snapshot {:.1} MiB written in {:.0} ms (builder: {:.0} ms) -> at most {:.2}% of the analysis' time",
            live.secs,
            thousands(live.events as f64),
            thousands(live.evals as f64),
            live.hwm_kib as f64 / 1024.0,
            live.rss_kib as f64 / 1024.0,
            live.snapshot_bytes as f64 / (1u64 << 20) as f64,
            live.write_ms,
            built.snapshot.write_ms,
            share * 100.0
        );
        rows.push(Row {
            tenants,
            size,
            start_secs,
            start_hwm,
            refed,
            steady_hwm: live.hwm_kib as f64 / 1024.0,
            steady_rss: live.rss_kib as f64 / 1024.0,
            snapshot_bytes: live.snapshot_bytes,
            write_ms: live.write_ms,
            inproc_write_ms: write_ms,
            inproc_encode_ms: encode_ms,
        });
    }

    if rows.is_empty() {
        common::print_total(started);
        return;
    }
    println!(
        "\n## Results ({}; {}; {days} days at {rate} requests/s; medians of {runs} starts)\n",
        machine.summary(),
        machine.commit,
    );
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                thousands(r.tenants as f64),
                format!("{:.1}", r.size as f64 / (1u64 << 30) as f64),
                format!(
                    "{:.2} s ({})",
                    r.start_secs,
                    verdict(r.start_secs < STARTUP_TARGET_SECS)
                ),
                thousands(r.refed),
                format!("{:.1}", r.start_hwm),
                format!("{:.1}", r.steady_hwm),
                format!("{:.1}", r.steady_rss),
                verdict(r.start_hwm <= r.steady_hwm).to_string(),
                format!("{:.1}", r.snapshot_bytes as f64 / (1u64 << 20) as f64),
                format!("{:.0}", r.write_ms),
                format!("{:.0} ({:.0})", r.inproc_write_ms, r.inproc_encode_ms),
                format!(
                    "<= {:.1}% ({}); <= {:.1}% ({})",
                    snapshot_share(r.write_ms) * 100.0,
                    verdict(snapshot_share(r.write_ms) <= SHARE_TARGET + 1e-9),
                    snapshot_share(r.inproc_write_ms) * 100.0,
                    verdict(snapshot_share(r.inproc_write_ms) <= SHARE_TARGET + 1e-9)
                ),
            ]
        })
        .collect();
    common::print_table(
        &[
            "Tenants",
            "Store GiB",
            "Healthy + resumed (< 3 s)",
            "Events re-fed",
            "Start-up peak RSS MiB",
            "Steady peak RSS MiB",
            "Steady RSS at end MiB",
            "Start-up peak <= steady peak",
            "Snapshot MiB",
            "Snapshot write ms, daemon",
            "Snapshot write ms, in-process (encoding)",
            "Snapshot share, derived: daemon; in-process (<= 5%)",
        ],
        &[
            true, true, true, true, true, true, true, false, true, true, true, false,
        ],
        &table,
    );
    common::print_total(started);
}

struct Row {
    tenants: usize,
    size: u64,
    start_secs: f64,
    start_hwm: f64,
    refed: f64,
    steady_hwm: f64,
    steady_rss: f64,
    snapshot_bytes: u64,
    write_ms: f64,
    /// Median of the in-process writes, and of their encoding part.
    inproc_write_ms: f64,
    inproc_encode_ms: f64,
}

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .ok()
            .filter(|&x: &f64| x > 0.0 && x.is_finite())
            .unwrap_or_else(|| panic!("{name}={v:?} is not a positive number")),
        Err(_) => default,
    }
}

fn wall_ms() -> i64 {
    driftwarden::clock::now_ms()
}

/// The store file and its `-wal`, bytes.
fn db_bytes(db: &Path) -> u64 {
    let wal = db.with_extension("db-wal");
    [db, wal.as_path()]
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

// ---------------------------------------------------------------------------------
// The store.

/// Where a cached store's data ends, and the evals given after that end (they arrive
/// when the data reaches their time).
#[derive(Serialize, Deserialize)]
struct State {
    version: u32,
    days: f64,
    rate: f64,
    tenants: usize,
    start_ms: i64,
    end_ms: i64,
    segments: u64,
    pending: Vec<EvalScore>,
    /// Set while data is being added: a store left so was cut short, its aggregates
    /// may hold part of a segment that would be added again, so it is rebuilt.
    #[serde(default)]
    in_progress: bool,
}

struct CachedStore {
    dir: PathBuf,
    db: PathBuf,
    days: f64,
    rate: f64,
    tenants: usize,
    config: Config,
}

/// What a store holds after `ensure`, and what the extension did.
struct Built {
    /// Data seconds added, and the wall seconds that took.
    data_secs: f64,
    secs: f64,
    snapshot: SnapshotMeta,
    raw_events: u64,
    raw_evals: u64,
    aggregate_rows: u64,
}

impl CachedStore {
    fn new(data: &Path, days: f64, rate: f64, tenants: usize, rules: &Path) -> CachedStore {
        let dir = data.join(format!("d{days}-r{rate}-t{tenants}"));
        fs::create_dir_all(&dir).expect("creating the store dir");
        let db = dir.join("store.db");
        let overrides = Overrides {
            db: Some(db.display().to_string()),
            rules: Some(rules.to_path_buf()),
            ..Overrides::default()
        };
        let config = Config::resolve(FileConfig::default(), overrides).expect("bench config");
        CachedStore {
            dir,
            db,
            days,
            rate,
            tenants,
            config,
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn load_state(&self) -> Option<State> {
        let text = fs::read_to_string(self.state_path()).ok()?;
        let s: State = serde_json::from_str(&text).ok()?;
        let same = !s.in_progress
            && s.version == STORE_VERSION
            && s.days == self.days
            && s.rate == self.rate
            && s.tenants == self.tenants;
        (same && self.db.exists()).then_some(s)
    }

    fn save_state(&self, s: &State) {
        let tmp = self.dir.join("state.json.tmp");
        fs::write(&tmp, serde_json::to_vec(s).expect("state JSON")).expect("writing the state");
        fs::rename(&tmp, self.state_path()).expect("replacing the state");
    }

    /// The traffic of `[from_ms, to_ms)`: flat `rate` requests/s over the tenants.
    fn profile(&self, from_ms: i64, to_ms: i64) -> Profile {
        Profile {
            start_ms: from_ms,
            days: (to_ms - from_ms) as f64 / DAY_MS as f64,
            peak_rpm: self.rate * 60.0,
            hourly: vec![1.0; 24],
            weekend_factor: 1.0,
            tenants: self.tenants as u32,
            tenant_skew: TENANT_SKEW,
            ..Profile::default()
        }
    }

    /// Build the store, or extend the cached one, so that its data ends at the
    /// current minute.
    fn ensure(&self) -> Built {
        let now = wall_ms();
        let to = now - now.rem_euclid(MINUTE_MS);
        if let Some(built) = self.ensure_to(to, self.load_state()) {
            return built;
        }
        println!(
            "the stored snapshot does not load in this build (its format changed): rebuilding"
        );
        self.ensure_to(to, None)
            .expect("a new store resumes from nothing")
    }

    fn ensure_to(&self, to: i64, state: Option<State>) -> Option<Built> {
        let mut state = match state {
            Some(s) => s,
            None => {
                for ext in ["db", "db-wal", "db-shm"] {
                    let _ = fs::remove_file(self.db.with_extension(ext));
                }
                let start = to - (self.days * DAY_MS as f64) as i64;
                let start = start - start.rem_euclid(MINUTE_MS);
                println!(
                    "building the store: {} days at {} requests/s, {} tenants (about {} events)",
                    self.days,
                    self.rate,
                    self.tenants,
                    thousands((to - start) as f64 / 1000.0 * self.rate)
                );
                State {
                    version: STORE_VERSION,
                    days: self.days,
                    rate: self.rate,
                    tenants: self.tenants,
                    start_ms: start,
                    end_ms: start,
                    segments: 0,
                    pending: Vec::new(),
                    in_progress: false,
                }
            }
        };
        let from = state.end_ms;
        state.in_progress = true;
        self.save_state(&state);
        let b = self.extend(&mut state, to.max(from))?;
        state.in_progress = false;
        self.save_state(&state);
        if to - from > 3_600_000 {
            println!(
                "added {:.1} days of data ({} events, {} evals) in {:.0}s: {} events/s; snapshot {:.1} MiB written in {} ms",
                (to - from) as f64 / DAY_MS as f64,
                thousands(b.0 as f64),
                thousands(b.1 as f64),
                b.2,
                thousands(b.0 as f64 / b.2.max(1e-9)),
                b.3.bytes as f64 / (1u64 << 20) as f64,
                b.3.write_ms
            );
        }
        let conn = driftwarden::store::open_reader(&self.db).expect("reading the store");
        let count = |sql: &str| -> u64 {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .expect("counting rows") as u64
        };
        Some(Built {
            data_secs: (to - from) as f64 / 1000.0,
            secs: b.2,
            snapshot: b.3,
            raw_events: count("SELECT count(*) FROM event_rows"),
            raw_evals: count("SELECT count(*) FROM eval_scores"),
            aggregate_rows: count("SELECT count(*) FROM agg_minute"),
        })
    }

    /// Resume an analysis on the store, as `serve` does, and store its snapshot `n`
    /// times: (write ms, of which encoding ms) of each, and the size.
    fn snapshot_writes(&self, n: usize) -> (Vec<(f64, f64)>, u64) {
        let state = self.load_state().expect("the store was just extended");
        let mut analysis = Analysis::open(&self.config, Delivery::Count, None)
            .expect("opening the analysis")
            .snapshot_when_asked();
        analysis
            .resume(&self.db.as_path().into(), state.end_ms)
            .expect("resuming the analysis");
        let conn = driftwarden::store::open_reader(&self.db).expect("reading the store");
        let mut bytes = 0;
        let writes = (0..n)
            .map(|_| {
                let meta = store_snapshot(&mut analysis, state.end_ms);
                bytes = meta.bytes;
                let encode_ms: i64 = conn
                    .query_row("SELECT encode_ms FROM analysis_snapshot", [], |r| r.get(0))
                    .expect("the snapshot row");
                (meta.write_ms as f64, encode_ms as f64)
            })
            .collect();
        (writes, bytes)
    }

    /// Feed the traffic of `[state.end_ms, to)` through the store and the analysis
    /// (resumed from the store first), store the snapshot, delete raw rows past the
    /// retention. (events, evals, wall seconds, snapshot); `None` if the stored
    /// snapshot cannot be loaded by this build.
    fn extend(&self, state: &mut State, to: i64) -> Option<(u64, u64, f64, SnapshotMeta)> {
        let started = Instant::now();
        let from = state.end_ms;
        let seed = SEED ^ (state.segments << 32);
        state.segments += 1;
        let keep_raw_from = to - RETENTION_DAYS * DAY_MS;
        let mut store = Store::open(&self.db)
            .expect("opening the store")
            .with_cardinality_cap(self.config.engine.analysis.cardinality_cap);
        let mut raw = from >= keep_raw_from;
        if !raw {
            store = store.without_raw_events();
        }

        // The analysis resumes before anything new is committed (it re-reads what the
        // snapshot left open), then folds each committed batch.
        let (to_analysis, batches) = mpsc::sync_channel::<(Box<Batch>, Fresh)>(4);
        let (ready_tx, ready) = mpsc::channel();
        let config = self.config.clone();
        let db = self.db.clone();
        let analysis = std::thread::spawn(move || {
            let mut analysis = Analysis::open(&config, Delivery::Count, None)
                .expect("opening the analysis")
                .snapshot_when_asked();
            let resumed = analysis
                .resume(&db.as_path().into(), to)
                .expect("resuming the analysis");
            // A store whose snapshot this build cannot load (an older format) is of
            // no use: `serve` would rebuild its state from 7 days of raw events.
            let usable = resumed.not_loaded.is_none();
            ready_tx.send(usable).expect("main thread");
            if !usable {
                return None;
            }
            let mut watermark = from;
            for (batch, fresh) in batches {
                analysis.feed(&batch, &fresh);
                watermark = batch
                    .events
                    .iter()
                    .map(|e| e.ts_ms)
                    .fold(watermark, i64::max);
                analysis
                    .advance(watermark, watermark)
                    .expect("judging the history");
            }
            analysis.advance(to, to).expect("judging the history");
            Some(store_snapshot(&mut analysis, to))
        });
        if !ready.recv().expect("the analysis resumed") {
            drop(analysis.join());
            return None;
        }

        let pending = std::mem::take(&mut state.pending);
        let (to_store, generated) = mpsc::sync_channel::<Box<Batch>>(4);
        let profile = self.profile(from, to);
        let generator = std::thread::spawn(move || generate(profile, seed, pending, to, to_store));
        let (mut events, mut evals) = (0u64, 0u64);
        for batch in generated {
            let newest = batch.events.iter().map(|e| e.ts_ms).max().unwrap_or(from);
            if !raw && newest >= keep_raw_from {
                drop(store);
                store = Store::open(&self.db)
                    .expect("opening the store")
                    .with_cardinality_cap(self.config.engine.analysis.cardinality_cap);
                raw = true;
            }
            let (report, fresh) = store.commit_fresh(&batch, newest).expect("committing");
            events += report.events_inserted;
            evals += batch.evals.len() as u64;
            to_analysis
                .send((batch, fresh))
                .expect("the analysis thread");
        }
        state.pending = generator.join().expect("the generator thread");
        drop(to_analysis);
        let snapshot = analysis
            .join()
            .expect("the analysis thread")
            .expect("the analysis resumed");
        store.prune(keep_raw_from).expect("retention");
        state.end_ms = to;
        Some((events, evals, started.elapsed().as_secs_f64(), snapshot))
    }
}

/// Store the analysis' snapshot now, covering `watermark_ms`.
fn store_snapshot(analysis: &mut Analysis, watermark_ms: i64) -> SnapshotMeta {
    analysis
        .store_snapshot(watermark_ms)
        .expect("storing the snapshot")
}

/// The simulated traffic of `profile` in batches of CHUNK events with the evals given
/// up to each batch's newest event, `pending` evals (given before `profile` starts,
/// at or after its start) merged in. Returns the evals given at or after `to`.
fn generate(
    profile: Profile,
    seed: u64,
    pending: Vec<EvalScore>,
    to: i64,
    out: mpsc::SyncSender<Box<Batch>>,
) -> Vec<EvalScore> {
    let mut pending: VecDeque<EvalScore> = pending.into();
    let mut later = Vec::new();
    let mut batch = new_batch();
    let mut records = match profile.days > 0.0 {
        true => Some(
            sim::scenarios::quiet(profile)
                .generator(seed)
                .expect("the bench profile is valid"),
        ),
        false => None,
    };
    let send = |batch: &mut Box<Batch>| {
        let full = std::mem::replace(batch, new_batch());
        out.send(full).expect("the store thread");
    };
    while let Some(r) = records.as_mut().and_then(Iterator::next) {
        match r {
            SimRecord::Usage(e) => {
                while pending.front().is_some_and(|p| p.ts_ms <= e.ts_ms) {
                    batch.evals.push(pending.pop_front().expect("peeked"));
                }
                batch.events.push(e);
                if batch.events.len() == CHUNK {
                    send(&mut batch);
                }
            }
            SimRecord::Eval(e) if e.ts_ms < to => batch.evals.push(e),
            SimRecord::Eval(e) => later.push(e),
        }
    }
    while pending.front().is_some_and(|p| p.ts_ms < to) {
        batch.evals.push(pending.pop_front().expect("peeked"));
    }
    later.extend(pending);
    later.sort_by_key(|e| e.ts_ms);
    if !batch.events.is_empty() || !batch.evals.is_empty() {
        send(&mut batch);
    }
    later
}

fn new_batch() -> Box<Batch> {
    let mut b = Box::new(Batch::new("bench:sim", "native"));
    b.events.reserve(CHUNK);
    b
}

// ---------------------------------------------------------------------------------
// The daemon.

/// `driftwarden serve` on `db`, spawned and watched, with its base URL.
struct Server {
    watched: Watched,
    base: String,
    stderr: PathBuf,
    spawned: Instant,
    ready_at: mpsc::Receiver<Instant>,
}

fn spawn_server(bench: &Bench, db: &Path, name: &str) -> Server {
    let dir = bench.fresh_dir(name);
    let stderr = dir.join("stderr.log");
    // A free port, chosen here so the bench can poll before the ready line.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut cmd = Command::new(&bench.bin);
    cmd.arg("serve")
        .arg("--db")
        .arg(db)
        .arg("--rules")
        .arg(&bench.rules)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    common::serve_io(&mut cmd, &stderr);
    let spawned = Instant::now();
    let mut child = cmd.spawn().expect("spawning driftwarden serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let watched = Watched::new(&child, "driftwarden serve");
    drop(child);
    let (tx, ready_at) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        if r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let _ = tx.send(Instant::now());
        }
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    Server {
        watched,
        base: format!("http://127.0.0.1:{port}"),
        stderr,
        spawned,
        ready_at,
    }
}

impl Server {
    /// Poll until `/healthz` answers 200 and the analysis has resumed from its
    /// snapshot (`/metrics` shows the loaded snapshot's size: cheap, where
    /// `/v1/stats` counts every stored row); the seconds since spawn. `serve` resumes
    /// before it listens, so today the two come together.
    fn wait_resumed(&mut self, client: &reqwest::blocking::Client) -> f64 {
        loop {
            if let Some(status) = self.watched.exited() {
                panic!(
                    "driftwarden serve exited during start-up ({}); stderr:\n{}",
                    common::describe(status),
                    tail(&self.stderr)
                );
            }
            if self.spawned.elapsed() > START_LIMIT {
                panic!(
                    "driftwarden serve was not healthy within {START_LIMIT:?}; stderr:\n{}",
                    tail(&self.stderr)
                );
            }
            let healthy = client
                .get(format!("{}/healthz", self.base))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if healthy
                && self
                    .metric(client, "driftwarden_snapshot_bytes")
                    .is_some_and(|b| b > 0.0)
            {
                return self.spawned.elapsed().as_secs_f64();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// One value of `/metrics` (Prometheus text).
    fn metric(&self, client: &reqwest::blocking::Client, name: &str) -> Option<f64> {
        let text = client
            .get(format!("{}/metrics", self.base))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    fn stats(&self, client: &reqwest::blocking::Client) -> Option<serde_json::Value> {
        let resp = client
            .get(format!("{}/v1/stats", self.base))
            .bearer_auth(TOKEN)
            .send()
            .ok()?;
        resp.status().is_success().then(|| resp.json().ok())?
    }

    fn stop(mut self) {
        self.watched
            .stop(libc::SIGTERM, Duration::from_secs(120), &self.stderr);
    }
}

/// What one start measured.
struct Start {
    secs: f64,
    ready_secs: f64,
    /// How long the first `/v1/stats` took to answer.
    stats_secs: f64,
    hwm_kib: u64,
    events_refed: u64,
    evals_refed: u64,
    snapshot_bytes: u64,
}

/// Start the daemon on `db` and measure until its analysis has resumed; stop it unless
/// `keep` takes it (the live phase).
fn start_once(bench: &Bench, db: &Path, name: &str, keep: Option<&mut Option<Server>>) -> Start {
    let client = common::http_client(Duration::from_secs(60));
    let mut server = spawn_server(bench, db, &format!("start-{name}"));
    let secs = server.wait_resumed(&client);
    let hwm_kib = common::vm_hwm_kib(server.watched.pid);
    // What it resumed from (`/v1/stats` counts every stored row: seconds on this
    // store, so it is read after the measurement).
    let asked = Instant::now();
    let stats = server.stats(&client).unwrap_or_default();
    let stats_secs = asked.elapsed().as_secs_f64();
    let ready_secs = server
        .ready_at
        .try_recv()
        .map_or(f64::NAN, |t| t.duration_since(server.spawned).as_secs_f64());
    let resumed = &stats["analysis"]["resumed"];
    if resumed["snapshot"].is_null() {
        panic!(
            "the daemon did not resume from a snapshot: {resumed}; stderr:\n{}",
            tail(&server.stderr)
        );
    }
    let start = Start {
        secs,
        ready_secs,
        stats_secs,
        hwm_kib,
        events_refed: resumed["events_refed"].as_u64().unwrap_or(0),
        evals_refed: resumed["evals_refed"].as_u64().unwrap_or(0),
        snapshot_bytes: resumed["snapshot"]["bytes"].as_u64().unwrap_or(0),
    };
    match keep {
        Some(slot) => *slot = Some(server),
        None => server.stop(),
    }
    start
}

fn proc_kib(pid: libc::pid_t, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What the live phase measured.
struct Live {
    secs: f64,
    events: u64,
    evals: u64,
    hwm_kib: u64,
    rss_kib: u64,
    snapshot_bytes: u64,
    write_ms: f64,
}

/// Start the daemon, then post the simulated gateway's traffic in real time until
/// `live_secs` have passed and the daemon has stored a snapshot since its start.
fn live_once(bench: &Bench, store: &CachedStore, live_secs: u64, tenants: usize) -> Live {
    let mut state = store.load_state().expect("the store was just extended");
    let mut slot = None;
    let start = start_once(
        bench,
        &store.db,
        &format!("{tenants}-live"),
        Some(&mut slot),
    );
    let server = slot.expect("the live server");
    let pid = server.watched.pid;
    let client = common::http_client(Duration::from_secs(60));
    let loaded_watermark = server
        .metric(&client, "driftwarden_snapshot_watermark_ms")
        .unwrap_or(0.0) as i64;
    println!(
        "live start: healthy and resumed in {:.3}s, start-up peak RSS {:.1} MiB; posting live traffic",
        start.secs,
        start.hwm_kib as f64 / 1024.0
    );
    // From here on the peak is that of live running.
    fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM (clear_refs)");

    // The traffic from where the store ends, generated ahead for the longest the
    // phase may run; posted as the wall clock passes each record's time.
    let from = state.end_ms;
    let until = from + LIVE_LIMIT.as_millis() as i64 + 2 * MINUTE_MS;
    let seed = SEED ^ (state.segments << 32);
    state.segments += 1;
    // Saved now, so that a phase cut short never reuses this seed (its ids).
    store.save_state(&state);
    let mut records: VecDeque<SimRecord> = sim::scenarios::quiet(store.profile(from, until))
        .generator(seed)
        .expect("the live profile is valid")
        .collect();
    let mut pending: VecDeque<EvalScore> = std::mem::take(&mut state.pending).into();
    let (mut events, mut evals) = (0u64, 0u64);
    let began = Instant::now();
    let end_ms = loop {
        let now = wall_ms();
        let due: Vec<SimRecord> = std::iter::from_fn(|| {
            records
                .front()
                .is_some_and(|r| r.ts_ms() <= now)
                .then(|| records.pop_front().expect("peeked"))
        })
        .collect();
        let mut usage = Vec::new();
        let mut scores: Vec<EvalScore> = std::iter::from_fn(|| {
            pending
                .front()
                .is_some_and(|e| e.ts_ms <= now)
                .then(|| pending.pop_front().expect("peeked"))
        })
        .collect();
        for r in due {
            match r {
                SimRecord::Usage(e) => usage.push(e),
                SimRecord::Eval(e) => scores.push(e),
            }
        }
        events += post_usage(&client, &server.base, &usage);
        evals += post_evals(&client, &server.base, &scores);
        // A snapshot stored since the start covers data past the loaded one's.
        let snapshot_after_start = server
            .metric(&client, "driftwarden_snapshot_watermark_ms")
            .is_some_and(|w| w as i64 > loaded_watermark);
        let elapsed = began.elapsed();
        // Stop at a minute boundary of the data, so the store's state says where
        // the traffic ends.
        let boundary = now - now.rem_euclid(MINUTE_MS);
        let done = (elapsed.as_secs() >= live_secs && snapshot_after_start) || elapsed > LIVE_LIMIT;
        if done && records.front().is_none_or(|r| r.ts_ms() >= boundary) {
            if !snapshot_after_start {
                println!("note: no snapshot was stored within {LIVE_LIMIT:?} of live traffic");
            }
            break boundary;
        }
        std::thread::sleep(Duration::from_millis(1000 - (now.rem_euclid(1000)) as u64));
    };
    let secs = began.elapsed().as_secs_f64();
    let hwm_kib = proc_kib(pid, "VmHWM:");
    let rss_kib = proc_kib(pid, "VmRSS:");
    let live = Live {
        secs,
        events,
        evals,
        hwm_kib,
        rss_kib,
        snapshot_bytes: server
            .metric(&client, "driftwarden_snapshot_bytes")
            .unwrap_or(0.0) as u64,
        write_ms: server
            .metric(&client, "driftwarden_snapshot_write_seconds")
            .map_or(f64::NAN, |s| s * 1000.0),
    };
    server.stop();
    // What was generated past the end and not posted: evals wait for the next
    // extension; requests are dropped (the next one starts at the boundary).
    pending.extend(records.into_iter().filter_map(|r| match r {
        SimRecord::Eval(e) => Some(e),
        SimRecord::Usage(_) => None,
    }));
    let mut pending: Vec<EvalScore> = pending.into();
    pending.sort_by_key(|e| e.ts_ms);
    state.pending = pending;
    state.end_ms = end_ms;
    store.save_state(&state);
    live
}

fn post_usage(client: &reqwest::blocking::Client, base: &str, events: &[UsageEvent]) -> u64 {
    if events.is_empty() {
        return 0;
    }
    let path = std::env::temp_dir().join(format!(
        "driftwarden-bench-live-{}.jsonl",
        std::process::id()
    ));
    sim::write_native_jsonl(events, &path).expect("writing the live lines");
    post(client, &format!("{base}/v1/events"), &path, events.len())
}

fn post_evals(client: &reqwest::blocking::Client, base: &str, evals: &[EvalScore]) -> u64 {
    if evals.is_empty() {
        return 0;
    }
    let path = std::env::temp_dir().join(format!(
        "driftwarden-bench-live-evals-{}.jsonl",
        std::process::id()
    ));
    sim::write_evals_jsonl(evals, &path).expect("writing the live eval lines");
    post(client, &format!("{base}/v1/evals"), &path, evals.len())
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Path, want: usize) -> u64 {
    let body = fs::read(body).expect("reading the live lines");
    let (report, text) = common::post_ndjson(client, url, body, &format!("POST {url}"));
    // A record posted by a live phase that was cut short (the store's state not saved)
    // comes again as a duplicate: counted, not a failure.
    let accepted = report["accepted"].as_u64().unwrap_or(0);
    let duplicates = report["duplicates"].as_u64().unwrap_or(0);
    if accepted + duplicates != want as u64 {
        panic!("POST {url}: {accepted} of {want} accepted: {text}");
    }
    accepted
}
