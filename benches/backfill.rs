//! Backfill benchmark: `cargo bench --bench backfill`.
//!
//! Issue 5's target: backfill of 1M New API `logs` rows from SQLite and from PostgreSQL
//! into driftwarden's store, rows/s and peak memory; at least 200k rows/s from SQLite.
//!
//! One generated New API `logs` table (BENCH_ROWS rows, default 1,000,000; fixed seed;
//! `created_at` over the three days that end five minutes before now; several models,
//! 50 token names, 20 users, 8 channels, `other` JSON as New API writes it; about 2%
//! type 5 error rows and 1% type 1 top-ups, which driftwarden skips) is written to a
//! SQLite file and, when PostgreSQL's server binaries are installed, copied into a
//! private PostgreSQL server (tests/suite/support/dbservers.rs) on loopback. Then, BENCH_RUNS
//! times each (default 3), into a fresh store:
//!
//! 1. `driftwarden serve --gateway-db sqlite://FILE --gateway-db-start first`, on all
//!    cores and pinned to one with `taskset -c 0`;
//! 2. the same with `--gateway-db postgres://...`.
//!
//! A run's time is from spawning `driftwarden serve` until its `/metrics` shows the
//! source's `gateway_db_last_id` at the table's max id and `gateway_db_rows_behind` 0
//! (polled every 50 ms; the follower sets both only after the rows are committed).
//! Rows/s counts every row read, skipped top-ups included; events/s the stored events.
//! Peak RSS is the server's VmHWM. Each run also reports the CPU time other processes
//! used meanwhile (`/proc/stat` less driftwarden's and this bench's own), and the end
//! says so when that skewed a SQLite run. Every run then checks through `/v1/stats`
//! that all consume and error rows were stored with no dead letters, stops the server
//! with SIGTERM and requires exit code 0; anything else fails loudly. The end is a
//! markdown table for docs/benchmarks.md. This is not a test: under `cargo test --all-targets` (which
//! passes no `--bench`) it only says how to run it.

#[path = "../tests/suite/support/dbservers.rs"]
mod dbservers;
#[path = "../tests/suite/support/newapi_sqlite.rs"]
mod newapi_sqlite;

mod common;

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

use common::{
    Bench, Machine, Rng, TOKEN, command, cores_cell, cores_label, cumulative, describe, env_usize,
    find_on_path, median, tail, taskset, thousands, verdict, vm_hwm_kib,
};

const SEED: u64 = 0xbacf_111d_a7a5_e7e5;
const SQLITE_TARGET: f64 = 200_000.0;
/// How often `/metrics` is read while a backfill runs.
const POLL: Duration = Duration::from_millis(50);
/// A backfill that takes longer than this is killed and the bench fails.
const BACKFILL_LIMIT: Duration = Duration::from_secs(600);
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// CPU seconds other processes may use during a run before the numbers are called skewed.
const OTHERS_LIMIT: f64 = 0.5;
const PG_DB: &str = "newapi";
const PG_USER: &str = "newapi_reader";

/// The columns every insert fills (`id` comes from the table).
const INSERT_COLUMNS: &str = r#"user_id, created_at, type, content, username, token_name, model_name, quota, prompt_tokens, completion_tokens, use_time, is_stream, channel_id, token_id, "group", ip, other"#;

fn main() {
    if !common::bench_requested("backfill") {
        return;
    }
    let n = env_usize("BENCH_ROWS", 1_000_000);
    let runs = env_usize("BENCH_RUNS", 3);
    let bench = Bench::new("driftwarden-backfill-");
    let started = Instant::now();
    let pg_bindir = pg_bindir();
    let machine = Machine::probe();
    let pg_version = pg_bindir
        .as_deref()
        .and_then(|d| common::first_line(d.join("postgres"), &["--version"]))
        .map_or("PostgreSQL".into(), |v| {
            v.replace("postgres (PostgreSQL)", "PostgreSQL")
        });
    common::print_title("driftwarden backfill benchmark");
    machine.print_start(&format!("rows {n}, runs {runs}"), &bench);

    // The rows are a function of the seed and this end time, so both databases get
    // the same table.
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let end_s = now_s / 60 * 60 - 5 * 60;
    let gw_path = bench.tmp.path().join("newapi.db");
    let facts = write_sqlite(&gw_path, n, end_s);
    let sqlite_bytes = fs::metadata(&gw_path).expect("the gateway db").len();
    let sqlite_url = format!("sqlite://{}", gw_path.display());
    let sqlite = Table {
        name: format!("db:newapi:{sqlite_url}#logs"),
        url: sqlite_url,
        facts,
    };
    let mut results: Vec<TableRow> = Vec::new();

    // 1. SQLite, all cores and one.
    let taskset = taskset();
    for pin in [false, true] {
        if common::skip_pinned(pin, taskset.is_some(), "SQLite") {
            continue;
        }
        println!("\n## SQLite, {}", cores_label(pin));
        let m = bench.measure(&sqlite, pin, runs, "sqlite");
        println!(
            "target: >= {} rows/s from SQLite: {}",
            thousands(SQLITE_TARGET),
            verdict(m.rows_s >= SQLITE_TARGET)
        );
        results.push(TableRow {
            what: "New API `logs` in SQLite (file)".into(),
            short: if pin {
                "SQLite, 1 core"
            } else {
                "SQLite, all cores"
            },
            cores: cores_cell(pin),
            target: format!(">= 200k rows/s: {}", verdict(m.rows_s >= SQLITE_TARGET)),
            m,
        });
    }

    // 2. PostgreSQL on loopback.
    let mut pg_note = "PostgreSQL: not installed, skipped".to_string();
    match &pg_bindir {
        None => println!(
            "\n## PostgreSQL: skipped (server binaries not found: no /usr/lib/postgresql/N/bin, \
             no initdb on the PATH, no DRIFTWARDEN_PG_BINDIR): {}",
            dbservers::APT_LINE
        ),
        Some(_) => match dbservers::PgServer::start_for("backfill bench") {
            None => println!("\n## PostgreSQL: skipped (the server could not be set up)"),
            Some(server) => {
                println!("\n## PostgreSQL (loopback TCP, port {})", server.port());
                let (table, bytes) = load_postgres(&server, n, end_s, &sqlite.facts);
                pg_note = format!(
                    "{} (fsync off, shared_buffers 32MB, as in tests/suite/support/dbservers.rs), table {:.0} MiB",
                    pg_version,
                    bytes as f64 / (1 << 20) as f64
                );
                let m = bench.measure(&table, false, runs, "postgres");
                results.push(TableRow {
                    what: "New API `logs` in PostgreSQL (loopback TCP)".into(),
                    short: "PostgreSQL (its server's CPU included)",
                    cores: format!("{} (shared with PostgreSQL)", machine.nproc),
                    target: String::new(),
                    m,
                });
                drop(server);
            }
        },
    }

    // 3. The table.
    println!("\n## Results (paste into docs/benchmarks.md)\n");
    println!(
        "Machine: {}; SQLite {} (bundled); {pg_note}.  ",
        machine.summary(),
        rusqlite::version()
    );
    let f = &sqlite.facts;
    println!(
        "Input: {} New API `logs` rows ({} consume, {} error, {} top-up, skipped), SQLite file {:.0} MiB; \
         time from spawning `driftwarden serve --gateway-db-start first` until `/metrics` shows the cursor \
         at the last id with 0 rows behind (polled every {} ms); medians of {runs} runs; driftwarden {}.\n",
        thousands(f.rows as f64),
        thousands(f.consume as f64),
        thousands(f.errors as f64),
        thousands(f.topups as f64),
        sqlite_bytes as f64 / (1 << 20) as f64,
        POLL.as_millis(),
        machine.commit
    );
    let cells: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.what.clone(),
                r.cores.clone(),
                format!("{} rows/s", thousands(r.m.rows_s)),
                format!("{} events/s", thousands(r.m.events_s)),
                format!("{:.1}", r.m.rss_mib),
                r.target.clone(),
            ]
        })
        .collect();
    common::print_table(
        &[
            "Backfill source",
            "CPUs",
            "Rows/s (median)",
            "Events/s (median)",
            "Peak RSS MiB (median)",
            "Target",
        ],
        &[false, false, true, true, true, false],
        &cells,
    );
    let others: Vec<String> = results
        .iter()
        .map(|r| format!("{} {:.2}s", r.short, r.m.others_cpu))
        .collect();
    println!(
        "\nCPU used by other processes during a run (the most in any run): {}",
        others.join("; ")
    );
    if results
        .iter()
        .any(|r| r.short.starts_with("SQLite") && r.m.others_cpu > OTHERS_LIMIT)
    {
        println!(
            "note: other processes used more than {OTHERS_LIMIT}s of CPU during a SQLite run: \
             the machine was not quiet, so the numbers are skewed; run it again when it is"
        );
    }
    common::print_total(started);
}

/// A gateway table to backfill from.
struct Table {
    url: String,
    /// The source name driftwarden uses in its metrics.
    name: String,
    facts: Facts,
}

/// Medians of one configuration's runs.
#[derive(Clone, Copy)]
struct Medians {
    rows_s: f64,
    events_s: f64,
    rss_mib: f64,
    /// The most CPU seconds other processes used during one run.
    others_cpu: f64,
}

struct TableRow {
    what: String,
    /// A few words for notes.
    short: &'static str,
    cores: String,
    m: Medians,
    target: String,
}

/// What one backfill run measured.
struct Sample {
    secs: f64,
    rss_mib: f64,
    /// CPU seconds used during the run by everything but driftwarden and this bench.
    others_cpu: f64,
}

impl Bench {
    fn measure(&self, table: &Table, pin: bool, runs: usize, label: &str) -> Medians {
        let f = &table.facts;
        let mut rows_s = Vec::new();
        let mut events_s = Vec::new();
        let mut rss = Vec::new();
        let mut others_cpu = 0f64;
        for run in 1..=runs {
            let s = self.backfill_once(table, pin, &format!("{label}-{}-{run}", pin as u8), run);
            rows_s.push(f.rows as f64 / s.secs);
            events_s.push(f.events() as f64 / s.secs);
            rss.push(s.rss_mib);
            others_cpu = others_cpu.max(s.others_cpu);
        }
        let m = Medians {
            rows_s: median(&mut rows_s),
            events_s: median(&mut events_s),
            rss_mib: median(&mut rss),
            others_cpu,
        };
        println!(
            "median: {} rows/s, {} events/s, peak RSS {:.1} MiB",
            thousands(m.rows_s),
            thousands(m.events_s),
            m.rss_mib
        );
        m
    }

    /// One `driftwarden serve` backfilling `table` into a fresh store.
    fn backfill_once(&self, table: &Table, pin: bool, dir_name: &str, run: usize) -> Sample {
        let dir = self.fresh_dir(dir_name);
        let stderr = dir.join("stderr.log");
        let mut cmd = command(&self.bin, pin);
        cmd.arg("serve")
            .arg("--db")
            .arg(dir.join("run.db"))
            .arg("--rules")
            .arg(&self.rules)
            .args(["--listen", "127.0.0.1:0", "--gateway-db"])
            .arg(&table.url)
            .args(["--gateway-db-start", "first"]);
        common::serve_io(&mut cmd, &stderr);
        let busy0 = machine_busy_secs();
        let self0 = self_cpu_secs();
        let started = Instant::now();
        let (mut server, base) = common::spawn_serve(&mut cmd, &stderr);
        let client = common::http_client(Duration::from_secs(30));

        // Poll /metrics until the cursor is at the end and nothing is behind.
        let metrics_url = format!("{base}/metrics");
        let last_id = format!(
            "driftwarden_gateway_db_last_id{{source=\"{}\"}} ",
            table.name
        );
        let behind = format!(
            "driftwarden_gateway_db_rows_behind{{source=\"{}\"}} ",
            table.name
        );
        let mut polls = 0u32;
        let secs = loop {
            let text = get(&client, &metrics_url);
            polls += 1;
            let gauge = |prefix: &str| -> Option<i64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|v| v.trim().parse().ok())
            };
            if gauge(&last_id) == Some(table.facts.max_id) && gauge(&behind) == Some(0) {
                break started.elapsed().as_secs_f64();
            }
            let errors: f64 = text
                .lines()
                .filter(|l| l.starts_with("driftwarden_gateway_db_poll_errors"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if errors > 0.0 {
                panic!(
                    "driftwarden could not read {}: {errors} poll errors; stderr:\n{}",
                    table.name,
                    tail(&stderr)
                );
            }
            if let Some(status) = server.exited() {
                panic!(
                    "driftwarden serve exited during the backfill ({}); stderr:\n{}",
                    describe(status),
                    tail(&stderr)
                );
            }
            if started.elapsed() > BACKFILL_LIMIT {
                let gateway: Vec<&str> =
                    text.lines().filter(|l| l.contains("gateway_db")).collect();
                panic!(
                    "the backfill did not reach id {} within {BACKFILL_LIMIT:?}; metrics:\n{}\nstderr:\n{}",
                    table.facts.max_id,
                    gateway.join("\n"),
                    tail(&stderr)
                );
            }
            std::thread::sleep(POLL);
        };
        let rss_mib = vm_hwm_kib(server.pid) as f64 / 1024.0;
        let child_cpu = proc_cpu_secs(server.pid);
        let others_cpu =
            (machine_busy_secs() - busy0 - child_cpu - (self_cpu_secs() - self0)).max(0.0);

        // Everything stored, nothing rejected (COUNT(*): only now, once).
        let stats: serde_json::Value =
            serde_json::from_str(&get(&client, &format!("{base}/v1/stats")))
                .expect("/v1/stats answers JSON");
        let events = stats["events"].as_u64();
        let dead = stats["dead_letters"].as_u64();
        if events != Some(table.facts.events()) || dead != Some(0) {
            panic!(
                "expected {} events and no dead letters; /v1/stats says {stats}; stderr:\n{}",
                table.facts.events(),
                tail(&stderr)
            );
        }
        let ru = server.stop(libc::SIGTERM, STOP_LIMIT, &stderr);
        let cpu = common::secs(ru.ru_utime) + common::secs(ru.ru_stime);
        println!(
            "run {run}: {secs:.2}s, {} rows/s, {} events/s, VmHWM {rss_mib:.1} MiB, CPU {child_cpu:.2}s ({cpu:.2}s to exit), preempted {}x, {polls} polls, others' CPU {others_cpu:.2}s; stored {} events",
            thousands(table.facts.rows as f64 / secs),
            thousands(table.facts.events() as f64 / secs),
            ru.ru_nivcsw,
            table.facts.events()
        );
        fs::remove_dir_all(&dir).expect("removing the run dir");
        Sample {
            secs,
            rss_mib,
            others_cpu,
        }
    }
}

/// GET `url` with the token; the body, panicking on anything but 200.
fn get(client: &reqwest::blocking::Client, url: &str) -> String {
    let resp = client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    if status != reqwest::StatusCode::OK {
        panic!("GET {url}: HTTP {status}: {text}");
    }
    text
}

// ---------------------------------------------------------------------------------
// The gateway databases.

/// Write the generated rows to a new SQLite file in one transaction.
fn write_sqlite(path: &Path, n: usize, end_s: i64) -> Facts {
    let started = Instant::now();
    let mut conn = Connection::open(path).expect("creating the gateway db");
    conn.execute_batch(newapi_sqlite::NEWAPI_SCHEMA)
        .expect("creating the logs table");
    let tx = conn.transaction().expect("begin");
    let mut facts = {
        let mut stmt = tx
            .prepare(&format!(
                "INSERT INTO logs ({INSERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ))
            .expect("preparing the insert");
        generate(n, end_s, |r| {
            stmt.execute(params![
                r.user_id,
                r.created_at,
                r.kind,
                r.content,
                r.username,
                r.token_name,
                r.model_name,
                r.quota,
                r.prompt_tokens,
                r.completion_tokens,
                r.use_time,
                r.is_stream as i64,
                r.channel_id,
                r.token_id,
                r.group,
                r.ip,
                r.other,
            ])
            .expect("inserting a row");
        })
    };
    tx.commit().expect("commit");
    let (max_id, count): (i64, i64) = conn
        .query_row("SELECT MAX(id), COUNT(*) FROM logs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("counting the rows");
    assert_eq!(count as usize, n, "rows in the SQLite table");
    facts.max_id = max_id;
    drop(conn);
    println!(
        "\nSQLite gateway db: {} rows ({} consume, {} error, {} top-up), {:.1} MiB, written in {:.1}s: {}",
        thousands(n as f64),
        thousands(facts.consume as f64),
        thousands(facts.errors as f64),
        thousands(facts.topups as f64),
        fs::metadata(path).expect("the gateway db").len() as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    facts
}

/// Create the New API schema in a fresh database, COPY the same rows in, and give a
/// login role SELECT on it. Returns the table and its size in bytes.
fn load_postgres(
    server: &dbservers::PgServer,
    n: usize,
    end_s: i64,
    same_as: &Facts,
) -> (Table, i64) {
    let started = Instant::now();
    let password = dbservers::secret("pw");
    server.create_db_and_role(PG_DB, PG_USER, &password);
    let mut c = server.admin(PG_DB);
    c.batch_execute(dbservers::PG_NEWAPI_LOGS)
        .expect("creating the logs table");
    let writer = c
        .copy_in(&format!("COPY logs ({INSERT_COLUMNS}) FROM STDIN"))
        .expect("starting COPY");
    let mut out = BufWriter::with_capacity(1 << 20, writer);
    let mut line = String::new();
    let mut facts = generate(n, end_s, |r| {
        use std::fmt::Write as _;
        line.clear();
        let _ = write!(line, "{}\t{}\t{}\t", r.user_id, r.created_at, r.kind);
        copy_text(&mut line, &r.content);
        for s in [r.username, r.token_name, r.model_name] {
            line.push('\t');
            copy_text(&mut line, s);
        }
        let _ = write!(
            line,
            "\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t",
            r.quota,
            r.prompt_tokens,
            r.completion_tokens,
            r.use_time,
            if r.is_stream { 't' } else { 'f' },
            r.channel_id,
            r.token_id
        );
        copy_text(&mut line, r.group);
        line.push('\t');
        copy_text(&mut line, &r.ip);
        line.push('\t');
        copy_text(&mut line, &r.other);
        line.push('\n');
        out.write_all(line.as_bytes()).expect("writing COPY data");
    });
    let writer = out
        .into_inner()
        .unwrap_or_else(|e| panic!("flushing COPY data: {}", e.error()));
    let copied = writer.finish().expect("finishing COPY");
    assert_eq!(copied as usize, n, "rows copied into PostgreSQL");
    // Set hint bits and statistics now, so every run reads the same settled table.
    c.batch_execute("VACUUM (FREEZE, ANALYZE) logs")
        .expect("vacuuming the table");
    c.batch_execute(&format!("GRANT SELECT ON logs TO {PG_USER}"))
        .expect("granting SELECT");
    let row = c
        .query_one(
            "SELECT MAX(id), COUNT(*), pg_total_relation_size('logs') FROM logs",
            &[],
        )
        .expect("counting the rows");
    facts.max_id = row.get(0);
    assert_eq!(
        row.get::<_, i64>(1) as usize,
        n,
        "rows in the PostgreSQL table"
    );
    let bytes: i64 = row.get(2);
    assert!(
        facts.same_rows(same_as),
        "PostgreSQL got other rows than SQLite"
    );
    println!(
        "PostgreSQL gateway db: {} rows COPYed, vacuumed and analysed in {:.1}s, table with indexes {:.1} MiB",
        thousands(n as f64),
        started.elapsed().as_secs_f64(),
        bytes as f64 / (1 << 20) as f64
    );
    let table = Table {
        url: server.url(PG_USER, &password, PG_DB),
        name: format!("db:newapi:{}#logs", server.printable_url(PG_USER, PG_DB)),
        facts,
    };
    (table, bytes)
}

/// Append `s` escaped for COPY's text format.
fn copy_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// PostgreSQL's server binaries, found as tests/suite/support/dbservers.rs finds them (so a
/// missing server is a note here even with CI set, where dbservers would fail).
fn pg_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DRIFTWARDEN_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return (dir.join("initdb").is_file() && dir.join("postgres").is_file()).then_some(dir);
    }
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return Some(bin);
    }
    let initdb = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join("initdb"))
        .find(|p| p.is_file())
        .or_else(|| find_on_path("initdb"))?;
    let dir = initdb.parent()?.to_path_buf();
    dir.join("postgres").is_file().then_some(dir)
}

// ---------------------------------------------------------------------------------
// The generated rows.

/// How many rows of each kind a generation wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Facts {
    rows: usize,
    consume: u64,
    errors: u64,
    topups: u64,
    /// Sum of prompt + completion tokens, a check that two generations agree.
    tokens: u64,
    max_id: i64,
}

impl Facts {
    /// The rows driftwarden stores as events: consume and error rows.
    fn events(&self) -> u64 {
        self.consume + self.errors
    }

    fn same_rows(&self, other: &Facts) -> bool {
        (
            self.rows,
            self.consume,
            self.errors,
            self.topups,
            self.tokens,
        ) == (
            other.rows,
            other.consume,
            other.errors,
            other.topups,
            other.tokens,
        )
    }
}

/// One New API `logs` row.
struct LogRow<'a> {
    user_id: i64,
    created_at: i64,
    kind: i64,
    content: String,
    username: &'a str,
    token_name: &'a str,
    model_name: &'a str,
    quota: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    use_time: i64,
    is_stream: bool,
    channel_id: i64,
    token_id: i64,
    group: &'a str,
    ip: String,
    other: String,
}

struct Model {
    name: &'static str,
    /// `upstream_model_name` when the channel maps it.
    upstream: Option<&'static str>,
    weight: u64,
    /// New API's `model_ratio` and `completion_ratio`.
    ratio: f64,
    completion_ratio: f64,
    cache_ratio: f64,
    claude: bool,
    /// Channel ids that serve the model.
    channels: &'static [i64],
}

const MODELS: [Model; 8] = [
    Model {
        name: "gpt-4o-mini",
        upstream: Some("gpt-4o-mini-2024-07-18"),
        weight: 28,
        ratio: 0.075,
        completion_ratio: 4.0,
        cache_ratio: 0.5,
        claude: false,
        channels: &[1, 2, 3],
    },
    Model {
        name: "gpt-4o",
        upstream: Some("gpt-4o-2024-08-06"),
        weight: 16,
        ratio: 1.25,
        completion_ratio: 4.0,
        cache_ratio: 0.5,
        claude: false,
        channels: &[1, 2, 3],
    },
    Model {
        name: "gpt-4.1",
        upstream: Some("gpt-4.1-2025-04-14"),
        weight: 12,
        ratio: 1.0,
        completion_ratio: 4.0,
        cache_ratio: 0.25,
        claude: false,
        channels: &[1, 2],
    },
    Model {
        name: "gpt-4.1-mini",
        upstream: Some("gpt-4.1-mini-2025-04-14"),
        weight: 14,
        ratio: 0.2,
        completion_ratio: 4.0,
        cache_ratio: 0.25,
        claude: false,
        channels: &[1, 3],
    },
    Model {
        name: "claude-3-5-sonnet-20241022",
        upstream: None,
        weight: 12,
        ratio: 1.5,
        completion_ratio: 5.0,
        cache_ratio: 0.1,
        claude: true,
        channels: &[4, 5],
    },
    Model {
        name: "claude-3-5-haiku-20241022",
        upstream: None,
        weight: 8,
        ratio: 0.4,
        completion_ratio: 5.0,
        cache_ratio: 0.1,
        claude: true,
        channels: &[4, 5],
    },
    Model {
        name: "deepseek-chat",
        upstream: Some("deepseek-v3"),
        weight: 6,
        ratio: 0.135,
        completion_ratio: 4.0,
        cache_ratio: 0.1,
        claude: false,
        channels: &[6],
    },
    Model {
        name: "gemini-2.0-flash",
        upstream: None,
        weight: 4,
        ratio: 0.05,
        completion_ratio: 4.0,
        cache_ratio: 0.25,
        claude: false,
        channels: &[7, 8],
    },
];

/// Group name, weight, group ratio.
const GROUPS: [(&str, u64, f64); 3] = [("default", 70, 1.0), ("vip", 20, 0.8), ("svip", 10, 0.6)];
const USERS: u64 = 20;
const TOKENS: u64 = 50;
const TOKEN_KINDS: [&str; 5] = ["prod", "staging", "batch", "agent", "eval"];
/// Failed requests: status code, error type, error code.
const ERRORS: [(u16, &str, &str); 4] = [
    (429, "upstream_error", "rate_limit_exceeded"),
    (500, "upstream_error", "internal_server_error"),
    (502, "new_api_error", "bad_response_status_code"),
    (503, "upstream_error", "model_overloaded"),
];

/// Call `each` with `n` New API rows, oldest first, `created_at` spread over the
/// three days before `end_s` (the rows depend only on the seed and `end_s`).
fn generate(n: usize, end_s: i64, mut each: impl FnMut(&LogRow<'_>)) -> Facts {
    let users: Vec<String> = (1..=USERS).map(|u| format!("user{u:02}")).collect();
    let tokens: Vec<String> = (0..TOKENS)
        .map(|t| format!("{}-{:02}", TOKEN_KINDS[(t % 5) as usize], t + 1))
        .collect();
    let model_cum = cumulative(MODELS.iter().map(|m| m.weight));
    let group_cum = cumulative(GROUPS.iter().map(|g| g.1));
    // Zipf-like: a few busy keys, a long tail.
    let token_cum = cumulative((1..=TOKENS).map(|k| 10_000 / k));
    let span_s: i64 = 3 * 86_400;
    let mut rng = Rng(SEED);
    let mut facts = Facts {
        rows: n,
        ..Facts::default()
    };
    for i in 0..n {
        let token = rng.pick(&token_cum) as u64;
        // Each key belongs to one user.
        let user = token % USERS;
        let model = &MODELS[rng.pick(&model_cum)];
        let (group, _, group_ratio) = GROUPS[rng.pick(&group_cum)];
        let channel_id = model.channels[rng.below(model.channels.len() as u64) as usize];
        // Written when the request ends, so a second or two out of order.
        let created_at = end_s - span_s + (i as i64 * span_s) / n as i64 - rng.below(3) as i64;
        let is_stream = rng.below(100) < 60;
        let ip = if rng.below(10) < 8 {
            format!("10.0.{}.{}", user + 1, 10 + rng.below(200))
        } else {
            String::new()
        };
        let roll = rng.below(10_000);
        let mut row = LogRow {
            user_id: user as i64 + 1,
            created_at,
            kind: 2,
            content: String::new(),
            username: &users[user as usize],
            token_name: &tokens[token as usize],
            model_name: model.name,
            quota: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            use_time: 0,
            is_stream,
            channel_id,
            token_id: token as i64 + 1,
            group,
            ip,
            other: String::new(),
        };
        if roll < 100 {
            // A top-up: not a request.
            let dollars = [5, 10, 20, 50, 100][rng.below(5) as usize];
            row.kind = 1;
            row.content = format!("Recharged via redemption code, quota ${dollars}.00");
            row.token_name = "";
            row.model_name = "";
            row.quota = dollars * 500_000;
            row.channel_id = 0;
            row.token_id = 0;
            row.is_stream = false;
            facts.topups += 1;
        } else if roll < 300 {
            // A failed request: no tokens, no quota.
            let (status, error_type, error_code) = ERRORS[rng.below(4) as usize];
            row.kind = 5;
            row.content = format!("status_code={status}, upstream error: {error_code}");
            row.use_time = rng.below(30) as i64;
            row.other = format!(
                r#"{{"error_type":"{error_type}","error_code":"{error_code}","status_code":{status},"channel_id":{channel_id},"request_path":"/v1/chat/completions"}}"#
            );
            facts.errors += 1;
        } else {
            let prompt = rng.lognormal(1200.0, 0.8);
            let completion = rng.lognormal(250.0, 0.9);
            let cache = if prompt >= 1024 && rng.below(100) < 30 {
                (prompt as f64 * (0.3 + 0.6 * rng.unit())) as u64 / 128 * 128
            } else {
                0
            };
            let quota = ((prompt - cache) as f64
                + cache as f64 * model.cache_ratio
                + completion as f64 * model.completion_ratio)
                * model.ratio
                * group_ratio;
            let frt = 150 + rng.below(2500);
            row.quota = quota.round() as i64;
            row.prompt_tokens = prompt as i64;
            row.completion_tokens = completion as i64;
            row.use_time = 1 + (frt + completion * 12) as i64 / 1000;
            row.content = format!(
                "model ratio {:.3}, completion ratio {:.2}, group ratio {group_ratio:.2}",
                model.ratio, model.completion_ratio
            );
            let mut other = format!(
                r#"{{"cache_ratio":{},"cache_tokens":{cache},"completion_ratio":{},"frt":{frt},"group_ratio":{group_ratio},"model_price":-1,"model_ratio":{},"user_group_ratio":-1"#,
                model.cache_ratio, model.completion_ratio, model.ratio
            );
            if model.claude {
                let creation = if rng.below(10) == 0 {
                    rng.below(4096)
                } else {
                    0
                };
                other.push_str(&format!(r#","cache_creation_tokens":{creation}"#));
            }
            if let Some(upstream) = model.upstream.filter(|_| rng.below(10) < 6) {
                other.push_str(&format!(
                    r#","is_model_mapped":true,"upstream_model_name":"{upstream}""#
                ));
            }
            if rng.below(20) == 0 {
                other.push_str(r#","reasoning_effort":"medium""#);
            }
            other.push('}');
            row.other = other;
            facts.consume += 1;
            facts.tokens += prompt + completion;
        }
        each(&row);
    }
    facts
}

// ---------------------------------------------------------------------------------
// CPU time, for what other processes used during a run.

/// CPU seconds all CPUs have spent busy since boot (`/proc/stat`; idle and iowait
/// excluded).
fn machine_busy_secs() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    busy / clock_ticks()
}

/// User + system CPU seconds of a live process (`/proc/PID/stat`).
fn proc_cpu_secs(pid: libc::pid_t) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name's closing parenthesis start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    (field(11) + field(12)) / clock_ticks()
}

/// This process's CPU seconds (all threads).
fn self_cpu_secs() -> f64 {
    // SAFETY: rusage is plain integers; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    common::secs(ru.ru_utime) + common::secs(ru.ru_stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}
