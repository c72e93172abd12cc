//! Ingest benchmark: `cargo bench --bench ingest`.
//!
//! On one generated usage log in driftwarden's native JSON (BENCH_LINES lines, default
//! 1,000,000; fixed seed, timestamps over the three days before now) it measures:
//!
//! 1. `driftwarden import FILE` into a fresh SQLite store, BENCH_RUNS times (default 5):
//!    events/s (the child's wall time, spawn to exit, as seen from here) and the
//!    child's peak RSS (`wait4`), on all cores and pinned to one with `taskset -c 0`.
//!    Target: >= 400k events/s on one core (reported, never enforced).
//! 2. mtail, if installed, counting prompt + completion tokens per model on the same
//!    file in one-shot mode (`bench/tokens_per_model.mtail`), 3 runs each way; its
//!    counts are checked against the generator's. Target: driftwarden >= 4x mtail.
//! 3. `driftwarden serve` receiving the same events over loopback as NDJSON batches of
//!    1000 and of 5000 from two client threads, 3 runs each: events/s and the server's
//!    peak RSS (VmHWM).
//!
//! Every run checks that all events were stored, and fails loudly otherwise. The end is
//! a markdown table for docs/benchmarks.md. This is not a test: under `cargo test --all-targets`
//! (which passes no `--bench`) it only says how to run it.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Bench, Machine, Rng, Watched, command, cores_cell, cores_label, cumulative, describe,
    env_usize, find_on_path, median, tail, taskset, thousands, verdict, vm_hwm_kib,
};

const SEED: u64 = 0x5eed_d21f_7a4d_e110;
const ONE_CORE_TARGET: f64 = 400_000.0;
const MTAIL_RATIO_TARGET: f64 = 4.0;
const MTAIL_RUNS: usize = 3;
const WEBHOOK_RUNS: usize = 3;
const WEBHOOK_CLIENTS: usize = 2;
const WEBHOOK_BATCHES: [usize; 2] = [1000, 5000];
/// A child that takes longer than this is killed and the bench fails.
const CHILD_LIMIT: Duration = Duration::from_secs(600);

fn main() {
    if !common::bench_requested("ingest") {
        return;
    }
    let lines = env_usize("BENCH_LINES", 1_000_000);
    let runs = env_usize("BENCH_RUNS", 5);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bench = Bench::new("driftwarden-bench-");
    let started = Instant::now();
    let machine = Machine::probe();
    let mtail_version = common::first_line("mtail", &["--version"])
        .map_or("not installed".into(), |v| {
            v.split(" git revision").next().unwrap_or(&v).to_string()
        });
    common::print_title("driftwarden ingest benchmark");
    machine.print_start(&format!("lines {lines}, runs {runs}"), &bench);

    let log = generate(&bench.tmp.path().join("usage.jsonl"), lines);
    let mut rows: Vec<Row> = Vec::new();

    // 1. File import.
    let taskset = taskset();
    let mut import = BTreeMap::new();
    for pin in [false, true] {
        if common::skip_pinned(pin, taskset.is_some(), "import") {
            continue;
        }
        println!("\n## import, {}", cores_label(pin));
        let mut eps = Vec::new();
        let mut rss = Vec::new();
        for run in 1..=runs {
            let (e, r) = bench.import_once(&log, pin, run);
            eps.push(e);
            rss.push(r);
        }
        let m = (median(&mut eps), median(&mut rss));
        println!(
            "median: {} events/s, peak RSS {:.1} MiB",
            thousands(m.0),
            m.1
        );
        if pin {
            println!(
                "target on one core: >= {} events/s: {}",
                thousands(ONE_CORE_TARGET),
                verdict(m.0 >= ONE_CORE_TARGET)
            );
        }
        import.insert(pin, m);
    }

    // 2. mtail side by side.
    let mut mtail = BTreeMap::new();
    match find_on_path("mtail") {
        None => println!("\n## mtail: mtail not installed: apt-get install mtail"),
        Some(exe) => {
            let progs = bench.tmp.path().join("mtail-progs");
            fs::create_dir_all(&progs).expect("creating the mtail programs dir");
            fs::copy(
                repo.join("bench/tokens_per_model.mtail"),
                progs.join("tokens_per_model.mtail"),
            )
            .expect("copying bench/tokens_per_model.mtail");
            for pin in [false, true] {
                if pin && taskset.is_none() {
                    continue;
                }
                println!("\n## mtail one-shot, {}", cores_label(pin));
                let mut lps = Vec::new();
                let mut rss = Vec::new();
                for run in 1..=runs.min(MTAIL_RUNS) {
                    let (l, r) = bench.mtail_once(&exe, &progs, &log, pin, run);
                    lps.push(l);
                    rss.push(r);
                }
                let m = (median(&mut lps), median(&mut rss));
                println!(
                    "median: {} lines/s, peak RSS {:.1} MiB",
                    thousands(m.0),
                    m.1
                );
                if let Some(d) = import.get(&pin) {
                    let ratio = d.0 / m.0;
                    println!(
                        "driftwarden/mtail: {ratio:.2}x (target >= {MTAIL_RATIO_TARGET}x: {})",
                        verdict(ratio >= MTAIL_RATIO_TARGET)
                    );
                }
                mtail.insert(pin, m);
            }
        }
    }

    // 3. Webhook over loopback.
    let data: &'static [u8] = Box::leak(
        fs::read(&log.path)
            .expect("reading the generated log")
            .into_boxed_slice(),
    );
    let mut webhook = Vec::new();
    for per in WEBHOOK_BATCHES {
        let batches = split_batches(data, per);
        println!(
            "\n## webhook POST /v1/events, NDJSON {per}/batch ({} batches), {WEBHOOK_CLIENTS} client threads",
            batches.len()
        );
        let mut eps = Vec::new();
        let mut rss = Vec::new();
        for run in 1..=runs.min(WEBHOOK_RUNS) {
            let (e, r) = bench.webhook_once(&batches, log.lines, per, run);
            eps.push(e);
            rss.push(r);
        }
        let m = (median(&mut eps), median(&mut rss));
        println!(
            "median: {} events/s, server peak RSS {:.1} MiB",
            thousands(m.0),
            m.1
        );
        webhook.push((per, m));
    }

    // 4. The table.
    for pin in [false, true] {
        if let Some(&(eps, rss)) = import.get(&pin) {
            let vs = mtail.get(&pin).map(|m| eps / m.0);
            let mut target = String::new();
            if pin {
                target.push_str(&format!(">= 400k/s: {}", verdict(eps >= ONE_CORE_TARGET)));
            }
            if let Some(v) = vs {
                if !target.is_empty() {
                    target.push_str("; ");
                }
                target.push_str(&format!(
                    ">= 4x mtail: {}",
                    verdict(v >= MTAIL_RATIO_TARGET)
                ));
            }
            rows.push(Row {
                what: "`driftwarden import` (file, native)".into(),
                cores: cores_cell(pin),
                rate: format!("{} events/s", thousands(eps)),
                rss,
                vs_mtail: vs.map_or("n/a".into(), |v| format!("{v:.1}x")),
                target,
            });
        }
    }
    for pin in [false, true] {
        if let Some(&(lps, rss)) = mtail.get(&pin) {
            rows.push(Row {
                what: "mtail `--one_shot`, tokens per model".into(),
                cores: cores_cell(pin),
                rate: format!("{} lines/s", thousands(lps)),
                rss,
                vs_mtail: "1.0x".into(),
                target: String::new(),
            });
        }
    }
    for (per, (eps, rss)) in webhook {
        rows.push(Row {
            what: format!("webhook NDJSON, {per}/request, {WEBHOOK_CLIENTS} clients"),
            cores: format!("{} (shared with the clients)", machine.nproc),
            rate: format!("{} events/s", thousands(eps)),
            rss,
            vs_mtail: "n/a".into(),
            target: String::new(),
        });
    }
    let mtail_note = if mtail.is_empty() {
        "mtail: not installed".to_string()
    } else {
        format!("mtail: {mtail_version}")
    };
    println!("\n## Results (paste into docs/benchmarks.md)\n");
    println!("Machine: {}; {mtail_note}.  ", machine.summary());
    println!(
        "Input: {} native JSON lines, {:.0} MiB; medians of {runs} import runs, {} mtail runs, {} webhook runs; driftwarden {}.\n",
        thousands(log.lines as f64),
        log.bytes as f64 / (1 << 20) as f64,
        runs.min(MTAIL_RUNS),
        runs.min(WEBHOOK_RUNS),
        machine.commit
    );
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.what.clone(),
                r.cores.clone(),
                r.rate.clone(),
                format!("{:.1}", r.rss),
                r.vs_mtail.clone(),
                r.target.clone(),
            ]
        })
        .collect();
    common::print_table(
        &[
            "Ingest path",
            "CPUs",
            "Throughput (median)",
            "Peak RSS MiB (median)",
            "vs mtail",
            "Target",
        ],
        &[false, false, true, true, true, false],
        &cells,
    );
    common::print_total(started);
}

impl Bench {
    /// One `driftwarden import` into a fresh store: (events/s, peak RSS MiB).
    fn import_once(&self, log: &Generated, pin: bool, run: usize) -> (f64, f64) {
        let dir = self.fresh_dir(&format!("import-{}-{run}", pin as u8));
        let mut cmd = command(&self.bin, pin);
        cmd.arg("import")
            .arg(&log.path)
            .args(["--format", "native", "--db"])
            .arg(dir.join("x.db"))
            .arg("--rules")
            .arg(&self.rules);
        let out = run_child(cmd, &dir.join("stderr.log"), "driftwarden import");
        let n = log.lines;
        let added: Option<u64> = out
            .stdout
            .strip_prefix("imported ")
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok());
        if added != Some(n as u64)
            || !out.stdout.contains(&format!("store holds {n} events"))
            || !out.stdout.contains(" 0 dead letters")
        {
            panic!(
                "driftwarden import did not store all {n} events; it said:\n{}\nstderr:\n{}",
                out.stdout,
                tail(&dir.join("stderr.log"))
            );
        }
        let eps = n as f64 / out.secs;
        println!(
            "run {run}: {:.2}s wall, {} events/s, peak RSS {:.1} MiB, CPU {:.2}s, preempted {}x; it says: {}",
            out.secs,
            thousands(eps),
            out.maxrss_mib,
            out.cpu_secs,
            out.preempted,
            out.stdout.trim()
        );
        fs::remove_dir_all(&dir).expect("removing the import dir");
        (eps, out.maxrss_mib)
    }

    /// One mtail one-shot over the log: (lines/s, peak RSS MiB), after checking its counts.
    fn mtail_once(
        &self,
        exe: &Path,
        progs: &Path,
        log: &Generated,
        pin: bool,
        run: usize,
    ) -> (f64, f64) {
        let dir = self.fresh_dir(&format!("mtail-{}-{run}", pin as u8));
        let mut cmd = command(exe, pin);
        cmd.args(["--one_shot", "--one_shot_format", "json", "--logtostderr"])
            // It opens an HTTP listener even in one-shot mode: keep it on loopback.
            .args(["--address", "127.0.0.1", "--port", "0", "--progs"])
            .arg(progs)
            .arg("--logs")
            .arg(&log.path);
        let out = run_child(cmd, &dir.join("stderr.log"), "mtail");
        let counted = |metric: &str| -> BTreeMap<String, u64> {
            let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
                panic!("mtail's one-shot output is not JSON ({e}):\n{}", out.stdout)
            });
            let mut by_model = BTreeMap::new();
            for m in json[metric].as_array().into_iter().flatten() {
                for lv in m["LabelValues"].as_array().into_iter().flatten() {
                    let model = lv["Labels"][0].as_str().unwrap_or_default().to_string();
                    *by_model.entry(model).or_default() +=
                        lv["Value"]["Value"].as_u64().unwrap_or(0);
                }
            }
            by_model
        };
        let requests = counted("requests");
        let tokens = counted("tokens");
        let lines: u64 = requests.values().sum();
        if lines != log.lines as u64 || tokens != log.tokens_by_model {
            panic!(
                "mtail counted {lines} of {} lines; tokens per model {tokens:?}, expected {:?}\nstderr:\n{}",
                log.lines,
                log.tokens_by_model,
                tail(&dir.join("stderr.log"))
            );
        }
        let lps = lines as f64 / out.secs;
        println!(
            "run {run}: {:.2}s wall, {} lines/s, peak RSS {:.1} MiB, CPU {:.2}s, preempted {}x; counted {lines} lines, tokens per model match",
            out.secs,
            thousands(lps),
            out.maxrss_mib,
            out.cpu_secs,
            out.preempted
        );
        fs::remove_dir_all(&dir).expect("removing the mtail dir");
        (lps, out.maxrss_mib)
    }

    /// One `driftwarden serve` fed every batch: (events/s, server VmHWM MiB).
    fn webhook_once(
        &self,
        batches: &[&'static [u8]],
        events: usize,
        per: usize,
        run: usize,
    ) -> (f64, f64) {
        let dir = self.fresh_dir(&format!("webhook-{per}-{run}"));
        let stderr = dir.join("stderr.log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--db")
            .arg(dir.join("w.db"))
            .arg("--rules")
            .arg(&self.rules)
            .args(["--listen", "127.0.0.1:0"]);
        common::serve_io(&mut cmd, &stderr);
        let (mut server, base) = common::spawn_serve(&mut cmd, &stderr);
        let url = format!("{base}/v1/events");

        let client = common::http_client(Duration::from_secs(120));
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let accepted: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..WEBHOOK_CLIENTS)
                .map(|_| {
                    s.spawn(|| {
                        let mut accepted = 0;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&body) = batches.get(i) else {
                                return accepted;
                            };
                            accepted += post(&client, &url, body, i);
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a client thread panicked"))
                .sum()
        });
        let secs = started.elapsed().as_secs_f64();
        let hwm_mib = vm_hwm_kib(server.pid) as f64 / 1024.0;
        server.stop(libc::SIGTERM, Duration::from_secs(60), &stderr);
        if accepted != events as u64 {
            panic!(
                "the server accepted {accepted} of {events} events; stderr:\n{}",
                tail(&stderr)
            );
        }
        let eps = events as f64 / secs;
        println!(
            "run {run}: {secs:.2}s, {} events/s, accepted {accepted}, server VmHWM {hwm_mib:.1} MiB",
            thousands(eps)
        );
        fs::remove_dir_all(&dir).expect("removing the webhook dir");
        (eps, hwm_mib)
    }
}

/// POST one NDJSON batch; returns its `accepted` count, panicking on anything but 200.
fn post(client: &reqwest::blocking::Client, url: &str, body: &'static [u8], i: usize) -> u64 {
    let (report, text) = common::post_ndjson(client, url, body, &format!("POST batch {i}"));
    report["accepted"]
        .as_u64()
        .unwrap_or_else(|| panic!("POST batch {i}: no `accepted` in {text}"))
}

/// NDJSON bodies of `per` lines each, borrowed from the file's bytes.
fn split_batches(data: &'static [u8], per: usize) -> Vec<&'static [u8]> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    for nl in memchr::memchr_iter(b'\n', data) {
        count += 1;
        if count == per {
            out.push(&data[start..=nl]);
            start = nl + 1;
            count = 0;
        }
    }
    if start < data.len() {
        out.push(&data[start..]);
    }
    out
}

// ---------------------------------------------------------------------------------
// Child processes.

/// What a measured child did.
struct Exit {
    secs: f64,
    maxrss_mib: f64,
    cpu_secs: f64,
    /// Times the child was preempted: high counts mean other work competed for the CPU.
    preempted: i64,
    stdout: String,
}

/// Run `cmd` to its end: wall time from spawn to exit, peak RSS, CPU time, stdout.
/// Fails loudly on a non-zero exit, with the end of its stderr.
fn run_child(mut cmd: Command, stderr: &Path, what: &'static str) -> Exit {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(stderr).expect("creating the stderr file"));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut watched = Watched::new(&child, what);
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
            "{cmd:?} failed ({}); stdout:\n{stdout}\nstderr:\n{}",
            describe(status),
            tail(stderr)
        );
    }
    Exit {
        secs: ended.duration_since(started).as_secs_f64(),
        // Linux reports ru_maxrss in KiB.
        maxrss_mib: ru.ru_maxrss as f64 / 1024.0,
        cpu_secs: common::secs(ru.ru_utime) + common::secs(ru.ru_stime),
        preempted: ru.ru_nivcsw,
        stdout,
    }
}

// ---------------------------------------------------------------------------------
// The generated log.

struct Model {
    name: &'static str,
    resolved: &'static str,
    provider: &'static str,
    weight: u64,
    /// US dollars per million input, cached input and output tokens.
    price: (f64, f64, f64),
    /// Milliseconds per output token.
    ms_per_token: f64,
}

const MODELS: [Model; 6] = [
    Model {
        name: "gpt-4o-mini",
        resolved: "gpt-4o-mini-2024-07-18",
        provider: "openai",
        weight: 30,
        price: (0.15, 0.075, 0.60),
        ms_per_token: 9.0,
    },
    Model {
        name: "gpt-4o",
        resolved: "gpt-4o-2024-08-06",
        provider: "openai",
        weight: 18,
        price: (2.50, 1.25, 10.0),
        ms_per_token: 18.0,
    },
    Model {
        name: "gpt-4.1",
        resolved: "gpt-4.1-2025-04-14",
        provider: "openai",
        weight: 12,
        price: (2.00, 0.50, 8.0),
        ms_per_token: 16.0,
    },
    Model {
        name: "gpt-4.1-mini",
        resolved: "gpt-4.1-mini-2025-04-14",
        provider: "openai",
        weight: 15,
        price: (0.40, 0.10, 1.60),
        ms_per_token: 8.0,
    },
    Model {
        name: "claude-3-5-sonnet",
        resolved: "claude-3-5-sonnet-20241022",
        provider: "anthropic",
        weight: 15,
        price: (3.00, 0.30, 15.0),
        ms_per_token: 20.0,
    },
    Model {
        name: "claude-3-5-haiku",
        resolved: "claude-3-5-haiku-20241022",
        provider: "anthropic",
        weight: 10,
        price: (0.80, 0.08, 4.0),
        ms_per_token: 10.0,
    },
];

/// Route name, weight, median prompt and completion tokens.
const ROUTES: [(&str, u64, f64, f64); 7] = [
    ("chat", 30, 1200.0, 250.0),
    ("classify", 20, 600.0, 8.0),
    ("summarize", 15, 3000.0, 300.0),
    ("extract", 12, 1500.0, 120.0),
    ("agent", 10, 6000.0, 400.0),
    ("translate", 8, 800.0, 700.0),
    ("code-review", 5, 4000.0, 600.0),
];

const TENANTS: u64 = 50;

/// splitmix64's finalizer: a bijection, so distinct inputs give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Generated {
    path: PathBuf,
    lines: usize,
    bytes: u64,
    tokens_by_model: BTreeMap<String, u64>,
}

/// Write `lines` native usage records, oldest first, spread over the three days that
/// end five minutes before now (the record contents depend only on the seed).
fn generate(path: &Path, lines: usize) -> Generated {
    let started = Instant::now();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let end_ms = now_ms / 60_000 * 60_000 - 5 * 60_000;
    let span_ms: i64 = 3 * 86_400_000;
    let model_cum = cumulative(MODELS.iter().map(|m| m.weight));
    let route_cum = cumulative(ROUTES.iter().map(|r| r.1));
    // Zipf-like: a few big tenants, a long tail.
    let tenant_cum = cumulative((1..=TENANTS).map(|k| 10_000 / k));
    let mut rng = Rng(SEED);
    let mut tokens_by_model: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).expect("creating the log"));
    for i in 0..lines {
        let model = &MODELS[rng.pick(&model_cum)];
        let (route, _, prompt_median, completion_median) = ROUTES[rng.pick(&route_cum)];
        let tenant = rng.pick(&tenant_cum);
        // Written when the request ends, so slightly out of order.
        let ts = end_ms - span_ms + (i as i64 * span_ms) / lines as i64 - rng.below(2000) as i64;
        let roll = rng.below(10_000);
        let (status, error_type) = match roll {
            0..120 => (429, "\"rate_limit_error\""),
            120..180 => (500, "\"api_error\""),
            180..210 => (503, "\"overloaded_error\""),
            210..250 => (400, "\"invalid_request_error\""),
            _ => (200, "null"),
        };
        let (prompt, completion, cached, finish, latency);
        if status == 200 {
            prompt = rng.lognormal(prompt_median, 0.6);
            let f = rng.below(1000);
            finish = if f < 30 {
                "\"length\""
            } else if f < 31 {
                "\"content_filter\""
            } else if route == "agent" && f < 450 {
                "\"tool_calls\""
            } else {
                "\"stop\""
            };
            completion = if finish == "\"length\"" {
                4096
            } else {
                rng.lognormal(completion_median, 0.8)
            };
            cached = if prompt >= 1024 && rng.below(100) < 35 {
                (prompt as f64 * (0.3 + 0.65 * rng.unit())) as u64 / 128 * 128
            } else {
                0
            };
            latency = (150.0
                + prompt as f64 * 0.04
                + completion as f64 * model.ms_per_token * (0.7 + 0.6 * rng.unit()))
                as u64;
        } else {
            (prompt, completion, cached, finish) = (0, 0, 0, "null");
            latency = 20 + rng.below(if status == 400 { 200 } else { 30_000 });
        }
        let (p_in, p_cached, p_out) = model.price;
        let cost = ((prompt - cached) as f64 * p_in
            + cached as f64 * p_cached
            + completion as f64 * p_out)
            / 1e6;
        *tokens_by_model.entry(model.name.to_string()).or_default() += prompt + completion;
        writeln!(
            out,
            r#"{{"id":"req-{id:016x}","ts":"{ts}","model":"{model}","resolved_model":"{resolved}","provider":"{provider}","route":"{route}","tenant":"team-{tenant:02}","prompt_tokens":{prompt},"completion_tokens":{completion},"cached_tokens":{cached},"cost_usd":{cost:.8},"latency_ms":{latency},"status":{status},"finish_reason":{finish},"error_type":{error_type}}}"#,
            id = mix(SEED ^ i as u64),
            ts = Rfc3339(ts),
            model = model.name,
            resolved = model.resolved,
            provider = model.provider,
        )
        .expect("writing the log");
    }
    out.flush().expect("writing the log");
    drop(out);
    let bytes = fs::metadata(path).expect("the log").len();
    println!(
        "\ngenerated {} lines, {:.1} MiB ({} bytes), in {:.1}s: {}",
        thousands(lines as f64),
        bytes as f64 / (1 << 20) as f64,
        bytes,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Generated {
        path: path.to_path_buf(),
        lines,
        bytes,
        tokens_by_model,
    }
}

/// Epoch milliseconds as `2026-06-01T12:00:00.123Z`.
struct Rfc3339(i64);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.div_euclid(1000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60,
            self.0.rem_euclid(1000)
        )
    }
}

// ---------------------------------------------------------------------------------
// Reporting.

struct Row {
    what: String,
    cores: String,
    rate: String,
    rss: f64,
    vs_mtail: String,
    target: String,
}
