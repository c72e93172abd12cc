//! PostgreSQL store ingest benchmark: `cargo bench --bench pg_ingest`.
//!
//! Two replicas writing one PostgreSQL database: two threads, each with its own
//! `PgWriter` (its own connection), each committing BENCH_EVENTS events (default
//! 1,000,000) in batches of 4,096 and of 8,192 (BENCH_BATCH picks one size), as a
//! webhook, a gateway database source or a tailer hands them over. The events are generated before the clock starts
//! (fixed seed): 4 models, 3 routes, 2 providers, 100 tenants, a few statuses, over a
//! day that crosses midnight (two day partitions), both replicas' events interleaved
//! in time as live traffic is. Targets: at least 150,000 events/s in total.
//!
//! The server is a private PostgreSQL on this machine (tests/suite/support/dbservers.rs,
//! `start_durable_for`): fsync, synchronous commit and full-page writes on (the
//! defaults), 512 MB of shared buffers, 4 GB of WAL between checkpoints. Each run
//! writes a fresh database; BENCH_RUNS runs (default 3), reported as the median. A
//! run's time, per replica, is from both starting together until its last commit;
//! the total is all events over the slower replica's time. Each run then checks that
//! every event was stored once and aggregated once, and fails loudly otherwise.
//! This is not a test: under `cargo test --all-targets` (which passes no `--bench`) it
//! only says how to run it.

#[path = "../tests/suite/support/dbservers.rs"]
mod dbservers;

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Machine, Rng, env_usize, median, thousands, verdict};
use driftwarden::domain::{CostSource, UsageEvent};
use driftwarden::store::Batch;
use driftwarden::store::pg::ingest::PgWriter;

const SEED: u64 = 0x5eed_0f9a_111e_5700;
const TARGET: f64 = 150_000.0;
const WRITERS: usize = 2;
/// Batch sizes measured (BENCH_BATCH picks one): a webhook request or a gateway
/// database poll (`batch_rows` 5,000) hands over a few thousand, a tailer up to
/// 8,192 (`batch_records`).
const BATCH_SIZES: [usize; 2] = [4_096, 8_192];
/// 2026-03-10T12:00:00Z: the traffic's day starts at noon, so it crosses midnight.
const START_MS: i64 = 20_522 * 86_400_000 + 43_200_000;

fn main() {
    if !common::bench_requested("pg_ingest") {
        return;
    }
    let per_writer = env_usize("BENCH_EVENTS", 1_000_000);
    let sizes = match std::env::var("BENCH_BATCH") {
        Ok(_) => vec![env_usize("BENCH_BATCH", 4_096)],
        Err(_) => BATCH_SIZES.to_vec(),
    };
    let runs = env_usize("BENCH_RUNS", 3);
    common::print_title("driftwarden PostgreSQL ingest benchmark");
    println!("machine: {}", Machine::probe().summary());
    let Some(pg) = dbservers::PgServer::start_durable_for("pg_ingest bench") else {
        return;
    };
    let mut admin = pg.admin("postgres");
    let version: String = admin
        .query_one("SHOW server_version", &[])
        .expect("asking the server's version")
        .get(0);
    println!(
        "PostgreSQL {version} on this machine: durable (fsync, synchronous_commit, full_page_writes on)"
    );
    let started = Instant::now();
    let mut table = Vec::new();
    for batch_size in sizes {
        println!(
            "{WRITERS} writers x {} events in batches of {}, {runs} runs",
            thousands(per_writer as f64),
            thousands(batch_size as f64)
        );
        let batches: Arc<Vec<Vec<Batch>>> = Arc::new(
            (0..WRITERS)
                .map(|w| generate(w, per_writer, batch_size))
                .collect(),
        );
        let mut totals = Vec::new();
        let mut per = vec![Vec::new(); WRITERS];
        for run in 0..runs {
            let pw = dbservers::secret("Bench");
            let (db, role) = (
                format!("b{batch_size}r{run}"),
                format!("w{batch_size}r{run}"),
            );
            pg.create_db_and_role(&db, &role, &pw);
            admin
                .batch_execute(&format!("ALTER DATABASE {db} OWNER TO {role}"))
                .expect("handing the database to its role");
            let times = run_once(&pg.url(&role, &pw, &db), &batches);
            let slowest = times.iter().max().copied().unwrap_or_default();
            let total = (WRITERS * per_writer) as f64 / slowest.as_secs_f64();
            let rates: Vec<f64> = times
                .iter()
                .map(|t| per_writer as f64 / t.as_secs_f64())
                .collect();
            check(&mut pg.admin(&db), WRITERS * per_writer);
            println!(
                "run {}: {} events/s in total; per writer {}",
                run + 1,
                thousands(total),
                rates
                    .iter()
                    .map(|r| format!("{} events/s", thousands(*r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            totals.push(total);
            for (w, r) in rates.into_iter().enumerate() {
                per[w].push(r);
            }
        }
        let total = median(&mut totals);
        table.push(format!(
            "| {WRITERS} | {} each | {} | {} | {} | >= {}: {} |",
            thousands(per_writer as f64),
            thousands(batch_size as f64),
            thousands(total),
            per.iter_mut()
                .map(|r| thousands(median(r)))
                .collect::<Vec<_>>()
                .join(" / "),
            thousands(TARGET),
            verdict(total >= TARGET)
        ));
    }
    println!();
    println!(
        "| writers | events | batch | events/s in total (median) | per writer (median) | target |"
    );
    println!("|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    common::print_total(started);
}

/// Writer `w`'s batches: `n` events, every other second-slice of the day (the other
/// writer takes the slices between), ids distinct across writers.
fn generate(w: usize, n: usize, batch_size: usize) -> Vec<Batch> {
    let mut rng = Rng(SEED ^ w as u64);
    let models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3-70b"];
    let routes = [Some("chat"), Some("classify"), Some("summarize")];
    let step = 86_400_000 / (n as i64 * WRITERS as i64);
    let mut batches = Vec::with_capacity(n.div_ceil(batch_size));
    let mut batch = Batch::with_capacity("http:events", "native", batch_size);
    for i in 0..n {
        let ts = START_MS + (i * WRITERS + w) as i64 * step;
        let status = [200, 200, 200, 200, 200, 200, 200, 200, 429, 500][rng.below(10) as usize];
        batch.events.push(UsageEvent {
            id: format!("w{w}-{i:08}").into(),
            ts_ms: ts,
            model: models[rng.below(4) as usize].into(),
            resolved_model: None,
            provider: Some(["openai", "anthropic"][rng.below(2) as usize].into()),
            route: routes[rng.below(3) as usize].map(Into::into),
            tenant: Some(format!("tenant-{:03}", rng.below(100)).into()),
            prompt_tokens: rng.lognormal(800.0, 1.0),
            completion_tokens: rng.lognormal(200.0, 1.0),
            cached_tokens: rng.below(100),
            cost_usd: Some(rng.unit() / 100.0),
            cost_source: CostSource::Gateway,
            list_cost_usd: None,
            latency_ms: Some(rng.lognormal(900.0, 0.6)),
            ttft_ms: Some(rng.lognormal(300.0, 0.5)),
            status: Some(status),
            finish_reason: Some(if status == 200 { "stop" } else { "error" }.into()),
            error_type: None,
        });
        if batch.events.len() == batch_size {
            batches.push(std::mem::replace(
                &mut batch,
                Batch::with_capacity("http:events", "native", batch_size),
            ));
        }
    }
    if !batch.events.is_empty() {
        batches.push(batch);
    }
    batches
}

/// Each writer's time from the common start to its last commit.
fn run_once(url: &str, batches: &Arc<Vec<Vec<Batch>>>) -> Vec<Duration> {
    // Opened (and the schema migrated) before the clock starts.
    let start = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, batches, start) = (url.to_string(), batches.clone(), start.clone());
            std::thread::spawn(move || {
                let mut writer = PgWriter::open(&url, &format!("node-{w}"))
                    .unwrap_or_else(|e| panic!("opening writer {w}: {e}"));
                start.wait();
                let t0 = Instant::now();
                for (k, batch) in batches[w].iter().enumerate() {
                    let report = writer
                        .commit(batch, START_MS)
                        .unwrap_or_else(|e| panic!("writer {w}, batch {k}: {e}"));
                    assert_eq!(report.events_inserted, batch.events.len() as u64);
                }
                t0.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a writer panicked"))
        .collect()
}

/// Every event stored once and counted once in the global aggregates.
fn check(c: &mut postgres::Client, events: usize) {
    let stored: i64 = c
        .query_one("SELECT count(*) FROM event_rows", &[])
        .expect("counting events")
        .get(0);
    let counted: i64 = c
        .query_one(
            "SELECT sum(requests)::int8 FROM agg_minute WHERE dim = 'global'",
            &[],
        )
        .expect("summing aggregates")
        .get(0);
    assert_eq!(
        (stored, counted),
        (events as i64, events as i64),
        "events stored and aggregated"
    );
}
