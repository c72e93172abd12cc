//! Replay benchmark: `cargo bench --bench replay`.
//!
//! The target: `driftwarden replay` of a 1M-event, 14-day log at >= 300k
//! events/s on one core and under 200 MB peak RSS with 10k distinct tenants.
//!
//! `driftwarden::sim` writes a 14-day `quiet` scenario (fixed seed) in native JSONL with
//! its eval scores beside it: about BENCH_EVENTS events (default 1,000,000; the peak
//! rate is solved from the profile's weekly rhythm) over BENCH_TENANTS tenants (default
//! 10,000, Zipf exponent 0.5 so that every tenant appears; the bench checks they do).
//! Then `driftwarden replay --events .. --evals .. --rules rules` runs BENCH_RUNS times
//! (default 3) on all cores and pinned to one with `taskset -c 0`, each with a fresh
//! temporary store (raw rows off, as replay's default). Per run: wall time from spawn
//! to exit, events/s on it, the child's CPU time and peak RSS (`wait4` rusage), and
//! every run must replay every event and print the same alert lines. The end prints the
//! medians as a markdown table for docs/benchmarks.md. The same events are then written
//! as a CSV log and as nested JSON lines and replayed, pinned, through `[formats.NAME]`
//! mappings (`replay --format NAME --config ..`): every mapped run must replay every
//! event and print the alert lines of the native runs. BENCH_DATA=DIR writes (and keeps) the
//! generated files in DIR instead of the temp dir. This is not a test: under
//! `cargo test --all-targets` (which passes no `--bench`) it only says how to run it.

mod common;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    Bench, Machine, Watched, command, cores_cell, cores_label, describe, env_usize, median, tail,
    taskset, thousands, verdict,
};
use driftwarden::sim::{self, Profile, SimRecord};

const SEED: u64 = 0x7e91_a7ad_2026_0601;
const DAYS: f64 = 14.0;
/// Zipf exponent of tenant shares: low enough that the smallest of 10k tenants still
/// expects about 50 requests in 1M.
const TENANT_SKEW: f64 = 0.5;
const ONE_CORE_TARGET: f64 = 300_000.0;
/// A mapped format's target on one core: its parsing may cost a little more than native's.
const MAPPED_ONE_CORE_TARGET: f64 = 250_000.0;
const RSS_TARGET_MB: f64 = 200.0;
/// A replay that takes longer than this is killed and the bench fails.
const CHILD_LIMIT: Duration = Duration::from_secs(600);

fn main() {
    if !common::bench_requested("replay") {
        return;
    }
    let want = env_usize("BENCH_EVENTS", 1_000_000);
    let tenants = env_usize("BENCH_TENANTS", 10_000);
    let runs = env_usize("BENCH_RUNS", 3);
    let bench = Bench::new("driftwarden-bench-replay-");
    let started = Instant::now();
    let machine = Machine::probe();
    common::print_title("driftwarden replay benchmark");
    machine.print_start(
        &format!("about {want} events, {tenants} tenants, {DAYS} days, runs {runs}"),
        &bench,
    );

    // BENCH_DATA keeps the generated files in a directory of one's choosing (to profile
    // or diff a replay by hand); by default they go with the temp dir.
    let data = std::env::var_os("BENCH_DATA").map_or(bench.tmp.path().to_path_buf(), PathBuf::from);
    fs::create_dir_all(&data).expect("creating the data dir");
    let log = generate(&data, want, tenants);
    let taskset = taskset();
    let mut results = Vec::new();
    let mut alerts: Option<String> = None;
    for pin in [false, true] {
        if common::skip_pinned(pin, taskset.is_some(), "replay") {
            continue;
        }
        println!("\n## replay, {}", cores_label(pin));
        let (mut eps, mut cpu_eps, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=runs {
            let r = replay_once(&bench, &log, &Input::native(&log), pin, run, false);
            match &alerts {
                None => alerts = Some(r.stdout),
                Some(first) if *first != r.stdout => {
                    panic!("run {run} printed other alert lines than the first run")
                }
                Some(_) => {}
            }
            eps.push(r.events_per_sec);
            cpu_eps.push(r.events_per_cpu_sec);
            rss.push(r.maxrss_mb);
        }
        let m = (median(&mut eps), median(&mut cpu_eps), median(&mut rss));
        println!(
            "median: {} events/s wall, {} events per CPU second, peak RSS {:.1} MB",
            thousands(m.0),
            thousands(m.1),
            m.2
        );
        if pin {
            println!(
                "target on one core: >= {} events/s: {}",
                thousands(ONE_CORE_TARGET),
                verdict(m.0 >= ONE_CORE_TARGET)
            );
        }
        println!(
            "target peak RSS < {RSS_TARGET_MB} MB: {}",
            verdict(m.2 < RSS_TARGET_MB)
        );
        results.push((pin, m));
    }
    let lines = alerts.as_deref().map_or(0, |a| a.lines().count());
    println!("\nevery run printed the same {lines} alert lines");

    // The same events through mapped formats, on one core (their target).
    let mut mapped_results = Vec::new();
    if !common::skip_pinned(true, taskset.is_some(), "replay of mapped formats") {
        let mapped = write_mapped(&data, &log);
        for input in &mapped {
            println!(
                "\n## replay --format {}, {}",
                input.label,
                cores_label(true)
            );
            let (mut eps, mut cpu_eps) = (Vec::new(), Vec::new());
            for run in 1..=runs {
                let r = replay_once(&bench, &log, input, true, run, false);
                if alerts.as_deref().is_some_and(|first| *first != r.stdout) {
                    panic!(
                        "the {} run {run} printed other alert lines than native",
                        input.label
                    );
                }
                eps.push(r.events_per_sec);
                cpu_eps.push(r.events_per_cpu_sec);
            }
            let m = (median(&mut eps), median(&mut cpu_eps));
            println!(
                "median: {} events/s wall, {} events per CPU second; target on one core: >= {} events/s: {}",
                thousands(m.0),
                thousands(m.1),
                thousands(MAPPED_ONE_CORE_TARGET),
                verdict(m.0 >= MAPPED_ONE_CORE_TARGET)
            );
            mapped_results.push((input.label, m));
        }
    }

    // A kept store: the replay leaves its analysis snapshot for `serve` to go on from.
    // Its share of the replay is what storing it costs a backtest.
    println!("\n## replay --db (leaves its analysis snapshot), all cores");
    let (mut share, mut bytes) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let r = replay_once(&bench, &log, &Input::native(&log), false, run, true);
        if alerts.as_deref().is_some_and(|first| *first != r.stdout) {
            panic!("the kept-store run {run} printed other alert lines");
        }
        let (b, ms, secs) = r.snapshot.expect("a kept run reports its snapshot");
        println!(
            "  snapshot {:.1} MiB stored in {ms:.0} ms: {:.2}% of the run",
            b as f64 / 1_048_576.0,
            ms / 10.0 / secs
        );
        share.push(ms / 10.0 / secs);
        bytes.push(b as f64 / 1_048_576.0);
    }
    let snap = (median(&mut share), median(&mut bytes));
    println!(
        "median: snapshot {:.1} MiB, {:.2}% of the replay; target <= 5%: {}",
        snap.1,
        snap.0,
        verdict(snap.0 <= 5.0)
    );

    println!(
        "\n## Results ({}; {}, {} events, {} evals, {} tenants; medians of {runs})\n",
        machine.summary(),
        machine.commit,
        thousands(log.events as f64),
        thousands(log.evals as f64),
        thousands(log.tenants as f64)
    );
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|&(pin, (eps, cpu_eps, rss))| {
            let mut target = format!("< {RSS_TARGET_MB} MB: {}", verdict(rss < RSS_TARGET_MB));
            if pin {
                target = format!(">= 300k/s: {}; {target}", verdict(eps >= ONE_CORE_TARGET));
            }
            vec![
                "`driftwarden replay` (native, evals)".into(),
                cores_cell(pin),
                format!("{} events/s", thousands(eps)),
                format!("{} events/s", thousands(cpu_eps)),
                format!("{rss:.1}"),
                target,
            ]
        })
        .chain(mapped_results.iter().map(|&(label, (eps, cpu_eps))| {
            vec![
                format!("`driftwarden replay --format {label}` (evals)"),
                cores_cell(true),
                format!("{} events/s", thousands(eps)),
                format!("{} events/s", thousands(cpu_eps)),
                String::new(),
                format!(">= 250k/s: {}", verdict(eps >= MAPPED_ONE_CORE_TARGET)),
            ]
        }))
        .collect();
    common::print_table(
        &[
            "Path",
            "CPUs",
            "Wall (median)",
            "Per CPU second (median)",
            "Peak RSS MB",
            "Target",
        ],
        &[false, false, true, true, true, false],
        &rows,
    );
    println!(
        "\nreplay --db: the snapshot left behind is {:.1} MiB at {} tenants and takes {:.2}% of the replay (median; target <= 5%: {})",
        snap.1,
        thousands(log.tenants as f64),
        snap.0,
        verdict(snap.0 <= 5.0)
    );
    common::print_total(started);
}

/// The generated files and what they hold.
struct Log {
    events_path: PathBuf,
    evals_path: PathBuf,
    events: u64,
    evals: u64,
    tenants: usize,
}

/// Write the scenario's events and evals under `dir`, about `want` events over
/// `tenants` tenants; fails if a tenant never appears.
fn generate(dir: &Path, want: usize, tenants: usize) -> Log {
    let started = Instant::now();
    let unit = Profile {
        days: DAYS,
        peak_rpm: 1.0,
        tenants: tenants as u32,
        tenant_skew: TENANT_SKEW,
        ..Profile::default()
    };
    // Expected requests at a peak of 1 request/minute, summed minute by minute.
    let per_peak_rpm: f64 = (unit.start_ms..unit.end_ms())
        .step_by(60_000)
        .map(|t| unit.rate_at(t))
        .sum();
    let profile = Profile {
        peak_rpm: want as f64 / per_peak_rpm,
        ..unit
    };
    let scenario = sim::scenarios::quiet(profile);
    let mut seen = HashSet::new();
    let records = scenario
        .generator(SEED)
        .expect("the bench profile is valid")
        .inspect(|r| {
            if let SimRecord::Usage(e) = r
                && let Some(t) = &e.tenant
                && !seen.contains(t.as_str())
            {
                seen.insert(t.clone());
            }
        });
    let events_path = dir.join("events.jsonl");
    let evals_path = dir.join("evals.jsonl");
    let (events, evals) = sim::write_records_jsonl(records, &events_path, Some(&evals_path))
        .expect("writing the generated log");
    let bytes = fs::metadata(&events_path).map_or(0, |m| m.len());
    println!(
        "generated {} events ({:.0} MiB) and {} evals, {} distinct tenants, peak {:.1} requests/min, in {:.1}s",
        thousands(events as f64),
        bytes as f64 / (1 << 20) as f64,
        thousands(evals as f64),
        seen.len(),
        scenario.profile.peak_rpm,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        seen.len(),
        tenants,
        "not every tenant appears: lower TENANT_SKEW or raise BENCH_EVENTS"
    );
    Log {
        events_path,
        evals_path,
        events,
        evals,
        tenants: seen.len(),
    }
}

/// What one replay run measured.
struct Run {
    events_per_sec: f64,
    events_per_cpu_sec: f64,
    maxrss_mb: f64,
    stdout: String,
    /// With a kept store: the snapshot left behind, (bytes, ms to store it), and the
    /// run's wall seconds.
    snapshot: Option<(u64, f64, f64)>,
}

/// The events file a replay reads, and the `[formats.NAME]` it reads it through.
struct Input {
    /// What the results call it: `native` or the format's name.
    label: &'static str,
    events: PathBuf,
    /// The config file defining the mapped format; none for native.
    config: Option<PathBuf>,
}

impl Input {
    fn native(log: &Log) -> Input {
        Input {
            label: "native",
            events: log.events_path.clone(),
            config: None,
        }
    }
}

/// Every `UsageEvent` field of the native log (by its native key), with the CSV column
/// and the JSON path the bench's mapped logs hold it in.
const MAPPED_FIELDS: [(&str, &str, &str); 16] = [
    ("ts", "time", "at"),
    ("id", "id", "request.id"),
    ("model", "model", "request.model"),
    ("resolved_model", "resolved", "response.model"),
    ("provider", "provider", "upstream.provider"),
    ("route", "route", "meta.route"),
    ("tenant", "tenant", "meta.tenant"),
    ("prompt_tokens", "in", "usage.in"),
    ("completion_tokens", "out", "usage.out"),
    ("cached_tokens", "cached", "usage.cached"),
    ("cost_usd", "usd", "billing.usd"),
    ("latency_ms", "ms", "timing.total"),
    ("ttft_ms", "ttft", "timing.first"),
    ("status", "status", "response.status"),
    ("finish_reason", "finish", "response.finish"),
    ("error_type", "error", "response.error"),
];

/// The mapped formats of the bench, `bench_csv` (with a header line) and `bench_jsonl`
/// (nested objects). Every field is mapped and tenants are kept as written, so a
/// replay through either reads the very events of the native log.
fn mapped_config() -> String {
    let mut config = String::new();
    for (name, kind, csv) in [("bench_csv", "csv", true), ("bench_jsonl", "jsonl", false)] {
        config += &format!("[formats.{name}]\nkind = \"{kind}\"\nhash_tenant = false\n");
        config += &format!("[formats.{name}.fields]\n");
        for (field, column, path) in MAPPED_FIELDS {
            config += &format!("{field} = \"{}\"\n", if csv { column } else { path });
        }
    }
    config
}

/// Write the native log's events as the two mapped logs, with the config naming them.
fn write_mapped(dir: &Path, log: &Log) -> Vec<Input> {
    let started = Instant::now();
    let config = dir.join("mapped.toml");
    fs::write(&config, mapped_config()).expect("writing the mapped formats' config");
    let csv_path = dir.join("events.csv");
    let json_path = dir.join("events-mapped.jsonl");
    let mut csv = csv::Writer::from_writer(BufWriter::new(
        File::create(&csv_path).expect("creating the CSV log"),
    ));
    csv.write_record(MAPPED_FIELDS.map(|(_, column, _)| column))
        .expect("writing the CSV header");
    let mut json = BufWriter::new(File::create(&json_path).expect("creating the JSON log"));
    let native = BufReader::new(File::open(&log.events_path).expect("opening the native log"));
    for line in native.lines() {
        let line = line.expect("reading the native log");
        let e: serde_json::Value = serde_json::from_str(&line).expect("a native line is JSON");
        let cell = |key: &str| match &e[key] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        csv.write_record(MAPPED_FIELDS.map(|(field, _, _)| cell(field)))
            .expect("writing a CSV line");
        let mut nested = serde_json::Map::new();
        for (field, _, path) in MAPPED_FIELDS {
            let value = e[field].clone();
            match path.split_once('.') {
                Some((outer, inner)) => {
                    nested.entry(outer).or_insert_with(|| serde_json::json!({}))[inner] = value
                }
                None => {
                    nested.insert(path.into(), value);
                }
            }
        }
        serde_json::to_writer(&mut json, &nested).expect("writing a JSON line");
        json.write_all(b"\n").expect("writing a JSON line");
    }
    csv.flush().expect("writing the CSV log");
    json.flush().expect("writing the JSON log");
    println!(
        "\nwrote the events as CSV ({:.0} MiB) and nested JSON lines ({:.0} MiB) in {:.1}s",
        fs::metadata(&csv_path).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64,
        fs::metadata(&json_path).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    vec![
        Input {
            label: "bench_csv",
            events: csv_path,
            config: Some(config.clone()),
        },
        Input {
            label: "bench_jsonl",
            events: json_path,
            config: Some(config),
        },
    ]
}

/// One `driftwarden replay` of `input`, its store in a fresh directory; `kept`
/// keeps it (`--db`), so the replay leaves its analysis snapshot there.
fn replay_once(bench: &Bench, log: &Log, input: &Input, pin: bool, run: usize, kept: bool) -> Run {
    let dir = bench.fresh_dir(&format!("replay-{}-{run}", if pin { 1 } else { 0 }));
    let stderr = dir.join("stderr.log");
    let mut cmd = command(&bench.bin, pin);
    cmd.arg("replay").arg("--events").arg(&input.events);
    if let Some(config) = &input.config {
        cmd.arg("--format")
            .arg(input.label)
            .arg("--config")
            .arg(config);
    }
    cmd.arg("--evals")
        .arg(&log.evals_path)
        .arg("--rules")
        .arg(&bench.rules)
        // The replay's temporary store goes under the run's directory.
        .env("TMPDIR", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr).expect("creating the stderr file"));
    if kept {
        cmd.arg("--db").arg(dir.join("kept.db"));
    }
    let spawned = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut watched = Watched::new(&child, "driftwarden replay");
    drop(child);
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let (ended, status, ru) = watched.wait(CHILD_LIMIT);
    let stdout = reader.join().expect("stdout reader");
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        panic!(
            "{cmd:?} failed ({}); stderr:\n{}",
            describe(status),
            tail(&stderr)
        );
    }
    let summary = fs::read_to_string(&stderr).unwrap_or_default();
    let replayed = replayed_events(&summary);
    if replayed != Some(log.events) {
        panic!(
            "replay read {replayed:?} of {} events; stderr:\n{}",
            log.events,
            tail(&stderr)
        );
    }
    let secs = ended.duration_since(spawned).as_secs_f64();
    let cpu = common::secs(ru.ru_utime) + common::secs(ru.ru_stime);
    // Linux reports ru_maxrss in KiB; the target is in MB.
    let maxrss_mb = ru.ru_maxrss as f64 * 1024.0 / 1e6;
    let snapshot = kept.then(|| {
        let (bytes, ms) = snapshot_left(&summary).unwrap_or_else(|| {
            panic!(
                "a kept store without a snapshot; stderr:\n{}",
                tail(&stderr)
            )
        });
        (bytes, ms, secs)
    });
    let r = Run {
        events_per_sec: log.events as f64 / secs,
        events_per_cpu_sec: log.events as f64 / cpu,
        maxrss_mb,
        stdout,
        snapshot,
    };
    println!(
        "run {run}: {secs:.2}s wall, {} events/s, CPU {cpu:.2}s ({} events/s), peak RSS {maxrss_mb:.1} MB, preempted {}x, {} alert lines",
        thousands(r.events_per_sec),
        thousands(r.events_per_cpu_sec),
        ru.ru_nivcsw,
        r.stdout.lines().count()
    );
    fs::remove_dir_all(&dir).expect("removing the run dir");
    r
}

/// Bytes and milliseconds of replay's `analysis snapshot left in the store: N bytes,
/// covering data to .., stored in M ms` line.
fn snapshot_left(stderr: &str) -> Option<(u64, f64)> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("analysis snapshot left in the store: "))?;
    let bytes = line.split_whitespace().next()?.parse().ok()?;
    let ms = line
        .rsplit_once("stored in ")?
        .1
        .trim_end_matches(" ms")
        .parse()
        .ok()?;
    Some((bytes, ms))
}

/// The event count of replay's summary line (`replayed N events, ...`).
fn replayed_events(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("replayed "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
