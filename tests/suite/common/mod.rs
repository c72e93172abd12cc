//! The integration test harness (zero2prod's pattern): `spawn_app` starts the real
//! `driftwarden serve` binary on port 0 in its own temp dir, learns its address from
//! the ready line it prints, and hands back a `TestApp` to talk to it over HTTP, read
//! its metrics and store, kill it, and start it again on the same database and files.
//!
//! The daemons run on a SQLite file by default. [`on_postgres!`] runs a file's tests a
//! second time with every daemon on its own database of a private PostgreSQL server
//! (one server per test), so the same assertions hold against both backends; tests
//! read the store through [`TestApp::store`], which speaks to either.

#![allow(dead_code)]

pub use crate::support::dbservers;

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbservers::PgServer;
use driftwarden::store::Location;
use driftwarden::store::sql::{Db, Dialect, Row, Sql, SqlExt};
use reqwest::blocking::{Client, Response};
use serde::Deserialize;
use tempfile::TempDir;

/// The API token every test daemon runs with (passed through `DRIFTWARDEN_TOKEN`).
pub const TOKEN: &str = "test-token-3f9a1c7e5b2d4086";
/// How long a condition may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(20);
/// The lease TTL of daemons on an `on_postgres` test's server.
pub const TEST_LEASE_SECONDS: u32 = 5;
/// How long the daemon may take to print its ready line.
const READY_LIMIT: Duration = Duration::from_secs(20);
const READY_PREFIX: &str = "driftwarden listening on http://";

/// `GET /v1/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Stats {
    pub events: u64,
    pub evals: u64,
    pub dead_letters: u64,
    pub aggregate_rows: u64,
    pub db_bytes: u64,
}

/// One row of `GET /v1/deadletters`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub received_ms: i64,
    pub source: String,
    pub position: String,
    pub reason: String,
    pub raw: String,
}

#[derive(Deserialize)]
struct DeadLetters {
    dead_letters: Vec<DeadLetter>,
}

/// What `POST /v1/events` and `POST /v1/evals` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub errors: Vec<RecordError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordError {
    pub record: u64,
    pub reason: String,
}

/// Whether the tests run under CI (`CI` set to anything but empty, `0` or `false`):
/// there a missing tool fails the test that needs it instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
        .unwrap_or(false)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A timestamp a few minutes before now: inside the retention period and not in the
/// future, so every test's events are kept.
pub fn recent_ms() -> i64 {
    now_ms() - 5 * 60_000
}

/// A native `UsageEvent` line (no newline). The id comes first so that files of
/// different events differ in their leading bytes.
pub fn native_line(id: &str, ts_ms: i64) -> String {
    format!(
        r#"{{"id":"{id}","ts":{ts_ms},"model":"gpt-4o","provider":"openai","route":"chat","tenant":"team-a","prompt_tokens":120,"completion_tokens":30,"cost_usd":0.0006,"latency_ms":420,"status":200,"finish_reason":"stop"}}"#
    )
}

/// `count` native lines with ids `{prefix}-{i}`, each ending in a newline.
pub fn native_lines(prefix: &str, count: usize, ts_ms: i64) -> String {
    (0..count)
        .map(|i| native_line(&format!("{prefix}-{i}"), ts_ms + i as i64) + "\n")
        .collect()
}

/// Append `text` to the file at `path`, creating it if needed.
pub fn append(path: &Path, text: &str) {
    let mut f = File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Poll `cond` every 25 ms until it holds; fail the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

thread_local! {
    /// The PostgreSQL server of the running `on_postgres` test, if any: each daemon
    /// the test starts gets a database of its own on it.
    static PG: RefCell<Option<Arc<PgServer>>> = const { RefCell::new(None) };
}

/// Run `test` with every daemon it starts on a private PostgreSQL server instead of
/// a SQLite file. Outside CI, with PostgreSQL not installed, the test is skipped with
/// a `SKIPPED:` line (under `CI=true` it fails instead).
pub fn run_on_postgres(name: &str, test: fn()) {
    let Some(pg) = PgServer::start_for(name) else {
        return;
    };
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PG.with(|p| p.borrow_mut().take());
        }
    }
    PG.with(|p| *p.borrow_mut() = Some(Arc::new(pg)));
    let _reset = Reset;
    test();
}

/// Whether this test's daemons run on PostgreSQL (inside [`run_on_postgres`]).
pub fn on_pg() -> bool {
    PG.with(|p| p.borrow().is_some())
}

/// A fresh store database on the running test's PostgreSQL server: the server (kept
/// alive by whoever holds it) and the application role's URL.
pub fn pg_store() -> Option<(Arc<PgServer>, String)> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pg = PG.with(|p| p.borrow().clone())?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (db, role) = (format!("dw{n}"), format!("dw_app{n}"));
    let password = pg.create_store_db(&db, &role);
    let url = pg.url(&role, &password, &db);
    Some((pg, url))
}

/// A fresh, migrated store for a test that drives the stages itself: a SQLite file
/// in a temp dir, or inside [`run_on_postgres`] a database of the test's server.
pub struct TestStore {
    pub location: Location,
    _dir: TempDir,
    _pg: Option<Arc<PgServer>>,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let (pg, location) = match pg_store() {
            Some((server, url)) => (Some(server), Location::parse(&url).unwrap()),
            None => (None, Location::Sqlite(dir.path().join("driftwarden.db"))),
        };
        location.migrate().expect("creating the store");
        TestStore {
            location,
            _dir: dir,
            _pg: pg,
        }
    }
}

/// Repeat the named tests of this file with their daemons on PostgreSQL, in a module
/// `on_postgres` (so `cargo test on_postgres` runs only those).
#[macro_export]
macro_rules! on_postgres {
    ($($test:ident),+ $(,)?) => {
        /// This file's tests again, with every daemon on a private PostgreSQL store.
        mod on_postgres {
            $(
                #[test]
                fn $test() {
                    $crate::common::run_on_postgres(stringify!($test), super::$test);
                }
            )+
        }
    };
}

/// How to start a test daemon. Files named here live in the app's temp dir.
pub struct AppBuilder {
    dir: TempDir,
    tails: Vec<String>,
    config: Option<String>,
    tail_start: Option<String>,
    rust_log: String,
    rules: Option<PathBuf>,
    /// A PostgreSQL store's URL instead of the temp dir's SQLite file.
    db_url: Option<String>,
    node: Option<String>,
    /// The PostgreSQL server of an `on_postgres` test, once a store is made on it.
    pg: Option<Arc<PgServer>>,
    /// Arguments after the ones above, and environment variables of the daemon.
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl AppBuilder {
    /// Run on the PostgreSQL store at `url` (passed as `DRIFTWARDEN_DB`, so the
    /// password stays off the command line) instead of a SQLite file.
    pub fn db_url(mut self, url: &str) -> AppBuilder {
        self.db_url = Some(url.to_string());
        self
    }

    /// The store this daemon will run on, created and migrated now, so a test can
    /// seed it before the start.
    pub fn store(&mut self) -> Location {
        if self.db_url.is_none()
            && let Some((server, url)) = pg_store()
        {
            self.pg = Some(server);
            self.db_url = Some(url);
        }
        let location = match &self.db_url {
            Some(url) => Location::parse(url).expect("a valid store URL"),
            None => Location::Sqlite(self.path("driftwarden.db")),
        };
        location.migrate().expect("creating the store");
        location
    }

    /// `--node NAME`.
    pub fn node(mut self, name: &str) -> AppBuilder {
        self.node = Some(name.to_string());
        self
    }

    /// A path inside the app's temp dir (to write tailed files before the start).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Tail `name` (in the temp dir) in the native format.
    pub fn tail(self, name: &str) -> AppBuilder {
        self.tail_as(name, "native")
    }

    /// Tail `name` (in the temp dir) in `format`.
    pub fn tail_as(mut self, name: &str, format: &str) -> AppBuilder {
        let path = self.path(name);
        self.tails.push(format!("{}:{format}", path.display()));
        self
    }

    /// Run with this TOML as `--config`.
    pub fn config(mut self, toml: &str) -> AppBuilder {
        self.config = Some(toml.to_string());
        self
    }

    /// `--tail-start beginning|end`.
    pub fn tail_start(mut self, start: &str) -> AppBuilder {
        self.tail_start = Some(start.to_string());
        self
    }

    /// `--rules DIR` (default: the shipped `rules/`).
    pub fn rules(mut self, dir: &Path) -> AppBuilder {
        self.rules = Some(dir.to_path_buf());
        self
    }

    /// One more argument of `serve`, after the harness's own.
    pub fn arg(mut self, arg: &str) -> AppBuilder {
        self.extra_args.push(arg.to_string());
        self
    }

    /// An environment variable of the daemon (a gateway URL kept off the command
    /// line, `DRIFTWARDEN_LOG_FORMAT`).
    pub fn env(mut self, key: &str, value: &str) -> AppBuilder {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// `RUST_LOG` for the daemon (default `info`).
    pub fn rust_log(mut self, filter: &str) -> AppBuilder {
        self.rust_log = filter.to_string();
        self
    }

    /// Start the daemon and wait for its ready line.
    pub fn spawn(mut self) -> TestApp {
        if self.db_url.is_none()
            && let Some((server, url)) = pg_store()
        {
            self.pg = Some(server);
            self.db_url = Some(url);
        }
        let pg = self.pg.clone();
        let db = self.dir.path().join("driftwarden.db");
        let log = self.dir.path().join("daemon.stderr.log");
        let mut args: Vec<String> = vec!["serve".into()];
        if self.db_url.is_none() {
            args.extend(["--db".into(), db.display().to_string()]);
        }
        if let Some(node) = &self.node {
            args.extend(["--node".into(), node.clone()]);
        }
        args.extend([
            "--rules".into(),
            self.rules.map_or_else(
                || concat!(env!("CARGO_MANIFEST_DIR"), "/rules").into(),
                |dir| dir.display().to_string(),
            ),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ]);
        // Replicas in tests take over a killed one's leases within seconds, not the
        // default 15 s lease (tests/suite/replicas.rs keeps the default).
        if pg.is_some() {
            self.config = Some(format!(
                "lease_seconds = {TEST_LEASE_SECONDS}\n{}",
                self.config.unwrap_or_default()
            ));
        }
        if let Some(toml) = &self.config {
            let path = self.dir.path().join("driftwarden.toml");
            std::fs::write(&path, toml).expect("writing the config file");
            args.extend(["--config".into(), path.display().to_string()]);
        }
        for t in &self.tails {
            args.extend(["--tail".into(), t.clone()]);
        }
        if let Some(start) = &self.tail_start {
            args.extend(["--tail-start".into(), start.clone()]);
        }
        args.extend(self.extra_args);
        let mut app = TestApp {
            address: String::new(),
            db,
            token: TOKEN.to_string(),
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("building the HTTP client"),
            dir: self.dir,
            child: None,
            args,
            envs: self.envs,
            rust_log: self.rust_log,
            log,
            db_url: self.db_url,
            _pg: pg,
        };
        app.start();
        app
    }
}

/// A running `driftwarden serve` and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the current process (changes on restart).
    pub address: String,
    pub db: PathBuf,
    pub token: String,
    pub client: Client,
    /// The temp dir holding the database, config, log and tailed files.
    pub dir: TempDir,
    child: Option<Child>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    rust_log: String,
    /// The daemon's stderr, appended across restarts.
    log: PathBuf,
    db_url: Option<String>,
    /// The PostgreSQL server of an `on_postgres` test, kept up while the app lives.
    _pg: Option<Arc<PgServer>>,
}

/// A daemon with no tails and default settings.
pub fn spawn_app() -> TestApp {
    TestApp::builder().spawn()
}

impl TestApp {
    pub fn builder() -> AppBuilder {
        AppBuilder {
            dir: tempfile::Builder::new()
                .prefix("driftwarden-test-")
                .tempdir()
                .expect("creating a temp dir"),
            tails: Vec::new(),
            config: None,
            tail_start: None,
            rust_log: "info".into(),
            rules: None,
            db_url: None,
            node: None,
            pg: None,
            extra_args: Vec::new(),
            envs: Vec::new(),
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the daemon log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
        match &self.db_url {
            Some(url) => command.env("DRIFTWARDEN_DB", url),
            None => command.env_remove("DRIFTWARDEN_DB"),
        };
        let mut child = command
            .args(&self.args)
            .current_dir(self.dir.path())
            .env("DRIFTWARDEN_TOKEN", &self.token)
            .env("RUST_LOG", &self.rust_log)
            .env_remove("DRIFTWARDEN_CONFIG")
            .env_remove("DRIFTWARDEN_LOG_FORMAT")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("starting driftwarden");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            // Keep draining so the daemon never writes into a full or closed pipe.
            for _ in lines {}
        });
        self.child = Some(child);
        let line = match rx.recv_timeout(READY_LIMIT) {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "driftwarden exited before its ready line; stderr:\n{}",
                self.log_text()
            ),
            Err(_) => panic!(
                "no ready line within {READY_LIMIT:?}; stderr:\n{}",
                self.log_text()
            ),
        };
        let port = line
            .strip_prefix(READY_PREFIX)
            .and_then(|rest| rest.strip_prefix("127.0.0.1:"))
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        assert_ne!(port, 0, "the ready line must name the bound port");
        self.address = format!("http://127.0.0.1:{port}");
        // The only daemon on an `on_postgres` database leads once it holds the lease
        // (after a kill -9, once the dead one's lapsed): from then on it judges as a
        // daemon on SQLite does from its start.
        if self._pg.is_some() {
            self.wait_leading();
        }
    }

    /// Wait until `/healthz` says this daemon leads (on SQLite: `single`, at once) and
    /// its analysis has resumed from the store (on SQLite, before the ready line).
    pub fn wait_leading(&self) {
        let limit = Duration::from_secs(3 * u64::from(TEST_LEASE_SECONDS)) + WAIT;
        let start = Instant::now();
        loop {
            let role = self
                .get("/healthz")
                .json::<serde_json::Value>()
                .ok()
                .and_then(|h| h["role"].as_str().map(str::to_string));
            if matches!(role.as_deref(), Some("leader" | "single"))
                && !self
                    .get("/v1/stats")
                    .json::<serde_json::Value>()
                    .ok()
                    .is_none_or(|s| s["analysis"]["resumed"].is_null())
            {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "not leading after {limit:?} (role {role:?}); stderr:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Path of a file in the app's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Everything the daemon wrote to stderr so far (all runs).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the daemon is running").id() as i32
    }

    /// SIGKILL the daemon and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        child.kill().expect("sending SIGKILL");
        child.wait().expect("reaping the daemon");
    }

    /// SIGSTOP the daemon: it stays alive, frozen, until `resume`.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT a paused daemon.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "sending signal {signal}");
    }

    /// SIGTERM the daemon and require a clean exit within the wait limit.
    pub fn terminate(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "sending SIGTERM");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the daemon") {
                assert!(
                    status.success(),
                    "driftwarden exited with {status} on SIGTERM; stderr:\n{}",
                    self.log_text()
                );
                return;
            }
            if start.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("driftwarden did not stop within {WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the daemon again with the same arguments, database and files. Stops it
    /// first with SIGTERM if it is still running.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.start();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST `body` with the app's token.
    pub fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POST to `/v1/events?format=FORMAT` and return the status and the answer's JSON.
    pub fn post_events(
        &self,
        format: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> (u16, serde_json::Value) {
        let r = self.post(&format!("/v1/events?format={format}"), body);
        let status = r.status().as_u16();
        (status, r.json().expect("a JSON answer"))
    }

    pub fn stats(&self) -> Stats {
        let r = self.get("/v1/stats");
        assert_eq!(r.status().as_u16(), 200, "GET /v1/stats");
        r.json().expect("stats JSON")
    }

    /// Dead letters, newest first, optionally of one source.
    pub fn dead_letters(&self, source: Option<&str>) -> Vec<DeadLetter> {
        let mut req = self
            .client
            .get(self.url("/v1/deadletters"))
            .bearer_auth(&self.token)
            .query(&[("limit", "1000")]);
        if let Some(s) = source {
            req = req.query(&[("source", s)]);
        }
        let r = req.send().expect("GET /v1/deadletters");
        assert_eq!(r.status().as_u16(), 200, "GET /v1/deadletters");
        r.json::<DeadLetters>()
            .expect("dead letters JSON")
            .dead_letters
    }

    pub fn metrics_text(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status().as_u16(), 200, "GET /metrics");
        r.text().expect("metrics text")
    }

    /// The value of one sample, `name{labels}` exactly as rendered; `None` when the
    /// daemon has not created it (yet).
    pub fn metric_opt(&self, name_with_labels: &str) -> Option<f64> {
        sample(&self.metrics_text(), name_with_labels)
    }

    /// Wait until the worker of each of `channels` has looked at the outbox three
    /// more times: a due row it would wrongly send again (one it failed to mark, one
    /// marked sent yet claimed again) is sent by then. Rows still waiting out a retry
    /// backoff, and rows the alert stage may yet queue, are not covered: the callers
    /// wait for every row to be sent first, and count the messages the alert stage
    /// queued for what they posted.
    pub fn wait_outbox_polls(&self, channels: &[&str]) {
        let polls = |c: &str| {
            self.metric(&format!(
                "driftwarden_outbox_polls_total{{channel=\"{c}\"}}"
            ))
        };
        let start: Vec<f64> = channels.iter().map(|c| polls(c)).collect();
        let began = Instant::now();
        while channels.iter().zip(&start).any(|(c, s)| polls(c) < s + 3.0) {
            assert!(
                began.elapsed() < WAIT,
                "the notifier of {channels:?} did not poll the outbox three times within {WAIT:?}; stderr:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The value of one sample; 0 when the daemon has not created it.
    pub fn metric(&self, name_with_labels: &str) -> f64 {
        self.metric_opt(name_with_labels).unwrap_or(0.0)
    }

    /// Wait until `stats()` satisfies `cond`, and return those stats.
    pub fn wait_stats(&self, what: &str, mut cond: impl FnMut(&Stats) -> bool) -> Stats {
        let start = Instant::now();
        loop {
            let s = self.stats();
            if cond(&s) {
                return s;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "timed out after {WAIT:?} waiting for: {what}; last stats {s:?}; stderr:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until the tailer of `path` has read everything written to it except
    /// `pending` bytes of an unfinished line, as its `tail_bytes_behind` gauge says.
    /// The gauge is set only after the tailer has committed what it read, at the end
    /// of the file.
    pub fn wait_tail_behind(&self, path: &Path, pending: u64) {
        let name = behind_metric(path);
        wait_until(&format!("{name} == {pending}"), WAIT, || {
            self.metric_opt(&name) == Some(pending as f64)
        });
    }

    /// The store as `--db` names it: the SQLite file, or the PostgreSQL URL.
    pub fn db_arg(&self) -> String {
        match &self.db_url {
            Some(url) => url.clone(),
            None => self.db.display().to_string(),
        }
    }

    /// Where the daemon keeps its store.
    pub fn location(&self) -> Location {
        Location::parse(&self.db_arg()).expect("a valid store location")
    }

    /// A read-write connection to the daemon's store, SQLite or PostgreSQL.
    pub fn store(&self) -> Db {
        self.location()
            .side()
            .unwrap_or_else(|e| panic!("opening the store {}: {e}", self.location()))
    }

    /// Whether the daemon runs on PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.db_url.is_some()
    }

    /// Open the SQLite file read-only (WAL lets this run beside the daemon), for the
    /// tests that look at SQLite itself.
    pub fn sql(&self) -> rusqlite::Connection {
        assert!(
            self.db_url.is_none(),
            "sql() reads the SQLite file; use store() on PostgreSQL"
        );
        let conn = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("opening the database read-only");
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    /// Ids of stored events, sorted (in Rust: the backends collate differently).
    pub fn stored_ids(&self) -> Vec<String> {
        let mut ids = self.sql_rows("SELECT id FROM events", |r| r.text(0));
        ids.sort();
        ids
    }

    /// Every row of `query`, mapped by `f`.
    pub fn sql_rows<T>(
        &self,
        query: &str,
        f: impl FnMut(&dyn Row) -> Result<T, driftwarden::store::StoreError>,
    ) -> Vec<T> {
        self.store()
            .rows(query, &[], f)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// One integer from a query (0 for a NULL, as from `SUM` over no rows). Write
    /// sums as `CAST(SUM(x) AS BIGINT)`: PostgreSQL sums integers into NUMERIC.
    pub fn sql_i64(&self, query: &str) -> i64 {
        self.store()
            .row(query, &[], |r| r.opt_int(0))
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .flatten()
            .unwrap_or(0)
    }

    /// Everything the store holds, as bytes to search for what must never be kept:
    /// on SQLite the database file with its WAL and shared-memory files; on
    /// PostgreSQL the text of every row of every table.
    pub fn stored_bytes(&self) -> Vec<u8> {
        let store = self.store();
        if store.dialect() == Dialect::Postgres {
            return postgres_rows_text(&store).into_bytes();
        }
        let mut out = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", self.db.display()));
            if let Ok(b) = std::fs::read(&p) {
                out.extend(b);
            }
        }
        out
    }
}

/// The text form of every row of every table in schema `public`.
fn postgres_rows_text(store: &Db) -> String {
    let tables = store
        .rows(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
            &[],
            |r| r.text(0),
        )
        .expect("listing the tables");
    let mut out = String::new();
    for table in tables {
        let query = format!("SELECT t::text FROM \"{table}\" t");
        for row in store
            .rows(&query, &[], |r| r.text(0))
            .unwrap_or_else(|e| panic!("{query}: {e}"))
        {
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of `name_with_labels` in Prometheus text.
pub fn sample(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name_with_labels)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("bad sample {line:?}: {e}"))
            })
    })
}

/// `source` label of a tailed file.
pub fn tail_source(path: &Path) -> String {
    format!("tail:{}", path.display())
}

/// `name{source="tail:PATH",format="FORMAT"}`.
pub fn tail_counter(name: &str, path: &Path, format: &str) -> String {
    format!(
        "{name}{{source=\"{}\",format=\"{format}\"}}",
        tail_source(path)
    )
}

pub fn behind_metric(path: &Path) -> String {
    format!(
        "driftwarden_tail_bytes_behind{{path=\"{}\"}}",
        path.display()
    )
}

pub fn rotations_metric(path: &Path) -> String {
    format!(
        "driftwarden_tail_rotations_total{{path=\"{}\"}}",
        path.display()
    )
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A copy of the shipped `rules/` with each file's text passed through `edit(name, text)`.
pub fn rules_dir(edit: impl Fn(&str, &str) -> String) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(dir.path().join(&name), edit(&name, &text)).unwrap();
        }
    }
    dir
}

/// `text` with its one occurrence of `from` replaced by `to`.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "expected one {from:?}");
    text.replace(from, to)
}

/// The shipped rules with error-rate's hard guard (0.25) firing in the bucket it is
/// crossed in (no `for`).
pub fn hard_guard_rules() -> TempDir {
    rules_dir(|name, text| match name {
        "drift.toml" => replace_once(
            text,
            "hard_limit = 0.25\nfor = \"10m\"\n",
            "hard_limit = 0.25\n",
        ),
        _ => text.to_string(),
    })
}

/// One native usage line of 100 + 20 tokens on gpt-4o, failed (502) or not.
pub fn usage_line(id: &str, ts: i64, failed: bool) -> String {
    let (status, error) = match failed {
        true => (502, "\"upstream_error\""),
        false => (200, "null"),
    };
    format!(
        r#"{{"id":"{id}","ts":{ts},"model":"gpt-4o","provider":"openai","route":"chat","tenant":"team-a","prompt_tokens":100,"completion_tokens":20,"cost_usd":0.0005,"latency_ms":300,"status":{status},"error_type":{error}}}"#
    )
}
