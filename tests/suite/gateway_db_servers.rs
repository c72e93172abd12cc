//! The gateway-database source against REAL PostgreSQL and MariaDB servers: the real
//! daemon follows a New API / One API `logs` table while the tests insert rows, stop
//! the database, revoke grants and kill the daemon with SIGKILL.
//!
//! Each test starts its own private database server (tests/suite/support/dbservers.rs: a
//! copy of a once-per-process template data dir, a free port on 127.0.0.1, a unix
//! socket in a temp dir; shut down when the test ends) and its own daemon on port 0.
//!
//! Needs the server binaries: Debian's `postgresql` (initdb, postgres under
//! /usr/lib/postgresql/N/bin) and `mariadb-server` (mariadbd, mariadb-install-db).
//! CI installs them with `apt-get install -y postgresql mariadb-server`.
//! If they are missing:
//! - with `CI` set (CI=true), each test FAILS, saying what to install;
//! - otherwise each test prints a loud `SKIPPED: ...` line to stderr and passes.
//!
//! Run: `cargo test --release --test suite gateway_db_servers::`.

use crate::common::{self, TestApp};

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::dbservers::*;
use driftwarden::store::sql::{SqlExt, Value as SqlValue};
use mysql::prelude::Queryable;
use serde_json::{Value, json};

crate::on_postgres!(
    postgres_follows_new_rows,
    postgres_kill9_mid_backfill,
    postgres_restart_resumes,
    postgres_row_committed_after_a_higher_id_is_not_lost,
    mariadb_follows_and_survives_kill9,
    oneapi_flavour_on_mariadb,
);

/// How long a condition may take before a test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How long a 100k-row backfill may take.
const BACKFILL_WAIT: Duration = Duration::from_secs(90);
/// Rows of the backfill tests (100k or more).
const BULK_ROWS: i64 = 100_000;
/// The backfill tests kill the daemon once this many rows are stored: several
/// batches in, with commits in flight, and far from the end (about 70k events/s here).
const KILL_AT: i64 = BULK_ROWS / 5;

const INGESTED: &str = "driftwarden_events_ingested_total";
const DUPLICATE: &str = "driftwarden_events_duplicate_total";
const SKIPPED: &str = "driftwarden_records_skipped_total";
const REJECTED: &str = "driftwarden_records_rejected_total";
const LAST_ID: &str = "driftwarden_gateway_db_last_id";
const ROWS_BEHIND: &str = "driftwarden_gateway_db_rows_behind";
const POLL_ERRORS: &str = "driftwarden_gateway_db_poll_errors_total";
const LAST_SUCCESS: &str = "driftwarden_gateway_db_last_success_seconds";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------

/// A running `driftwarden serve` following gateway databases: the harness's
/// `TestApp`, with what these tests read of a gateway source.
struct Daemon(TestApp);

impl std::ops::Deref for Daemon {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut TestApp {
        &mut self.0
    }
}

impl Daemon {
    /// Start `serve` with `extra` arguments, an optional `--config` TOML, extra
    /// environment variables and a `RUST_LOG` filter; wait for its ready line.
    fn start(
        extra: &[&str],
        config: Option<&str>,
        envs: &[(&str, &str)],
        rust_log: &str,
    ) -> Daemon {
        let mut builder = TestApp::builder().rust_log(rust_log);
        for arg in extra {
            builder = builder.arg(arg);
        }
        for (key, value) in envs {
            builder = builder.env(key, value);
        }
        if let Some(toml) = config {
            builder = builder.config(toml);
        }
        Daemon(builder.spawn())
    }

    fn get_text(&self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        r.text().expect("body")
    }

    fn stats_text(&self) -> String {
        self.get_text("/v1/stats")
    }

    fn stats(&self) -> Value {
        serde_json::from_str(&self.stats_text()).expect("stats JSON")
    }

    fn events(&self) -> u64 {
        self.stats()["events"].as_u64().expect("stats.events")
    }

    /// `gateway_dbs[0]` of /v1/stats, once the source has reported anything.
    fn gw(&self) -> Option<Value> {
        let s = self.stats();
        let list = s["gateway_dbs"].as_array().expect("stats.gateway_dbs");
        assert!(list.len() <= 1, "one gateway source expected: {s}");
        list.first().cloned()
    }

    /// A sample of a `{source}` gauge or a `{source,format}` counter.
    fn metric(&self, name: &str, source: &str, format: Option<&str>) -> Option<f64> {
        let key = match format {
            Some(f) => format!("{name}{{source=\"{source}\",format=\"{f}\"}} "),
            None => format!("{name}{{source=\"{source}\"}} "),
        };
        self.metrics_text().lines().find_map(|l| {
            l.strip_prefix(&key)
                .map(|v| v.trim().parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
        })
    }

    /// Poll `cond` until it holds; fail after `limit` with the stats and stderr.
    fn wait(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        loop {
            if cond(self) {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for: {what}\nstats: {}\nstderr:\n{}",
                    self.stats_text(),
                    tail(&self.log_text(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the source reports a successful poll that saw `last_id` as its cursor:
    /// everything up to it is committed.
    fn wait_caught_up(&self, last_id: i64, limit: Duration) {
        self.wait(
            &format!("gateway_dbs[0].last_id == {last_id}"),
            limit,
            |d| d.gw().is_some_and(|g| g["last_id"] == json!(last_id)),
        );
    }

    /// Stored events by the gateway row id (`newapi:ID` / `oneapi:ID`).
    fn stored(&self) -> BTreeMap<i64, Stored> {
        let rows = self
            .store()
            .rows(
                "SELECT events.id, ts_ms, status, error_type, latency_ms, ttft_ms, resolved_model, \
                 cost_usd, provider, sources.name FROM events JOIN sources ON sources.id = source_id",
                &[],
                |r| {
                    Ok(Stored {
                        id: r.text(0)?,
                        ts_ms: r.int(1)?,
                        status: r.opt_int(2)?,
                        error_type: r.opt_text(3)?,
                        latency_ms: r.opt_int(4)?,
                        ttft_ms: r.opt_int(5)?,
                        resolved_model: r.opt_text(6)?,
                        cost_usd: r.opt_real(7)?,
                        provider: r.opt_text(8)?,
                        source: r.text(9)?,
                    })
                },
            )
            .unwrap();
        rows.into_iter()
            .map(|e| {
                let n =
                    e.id.rsplit(':')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("event id {:?} is not FLAVOUR:ROWID", e.id));
                (n, e)
            })
            .collect()
    }

    /// (events stored, the committed cursor of `source`), read from the store.
    fn store_counts(&self, source: &str) -> (i64, Option<i64>) {
        let store = self.store();
        let events = store
            .row("SELECT COUNT(*) FROM events", &[], |r| r.int(0))
            .unwrap()
            .unwrap_or(0);
        let cursor = store
            .row(
                "SELECT last_id FROM db_cursors WHERE source = ?1",
                &[SqlValue::Text(source)],
                |r| r.int(0),
            )
            .unwrap();
        (events, cursor)
    }
}

#[derive(Debug, Clone)]
#[allow(dead_code)]
struct Stored {
    id: String,
    ts_ms: i64,
    status: Option<i64>,
    error_type: Option<String>,
    latency_ms: Option<i64>,
    ttft_ms: Option<i64>,
    resolved_model: Option<String>,
    cost_usd: Option<f64>,
    provider: Option<String>,
    source: String,
}

/// The daemon's `gateway database poll failed` warnings (with DRIFTWARDEN_LOG_FORMAT=json),
/// oldest first, as (cause, retry_in_ms).
fn poll_failures(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == json!("gateway database poll failed"))
        .map(|v| {
            (
                v["fields"]["cause"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                v["fields"]["retry_in_ms"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// None of `secrets` appears in /v1/stats, /metrics or the daemon's stderr.
fn assert_no_secrets(d: &Daemon, secrets: &[&str]) {
    for (place, text) in [
        ("GET /v1/stats", d.stats_text()),
        ("GET /metrics", d.metrics_text()),
        ("the daemon's stderr", d.log_text()),
    ] {
        for s in secrets {
            assert!(
                !text.contains(s),
                "{place} contains the secret {s:?}:\n{text}"
            );
        }
    }
}

fn source_name(flavour: &str, printable_url: &str) -> String {
    format!("db:{flavour}:{printable_url}#logs")
}

/// A config with one gateway database whose URL comes from `env:VAR`, polled often.
fn fast_poll_config(var: &str) -> String {
    format!("[[gateway_db]]\nurl = \"env:{var}\"\npoll_ms = 100\n")
}

// ---------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------

/// A PostgreSQL server with database `newapi`, New API's `logs` and a reader role with
/// SELECT on it; returns (server, admin connection to newapi, reader URL, password).
fn pg_newapi(test: &str) -> Option<(PgServer, postgres::Client, String, String)> {
    let pg = PgServer::start_for(test)?;
    let pw = secret("Pw");
    pg.create_db_and_role("newapi", "gw_reader", &pw);
    let mut admin = pg.admin("newapi");
    admin.batch_execute(PG_NEWAPI_LOGS).expect("creating logs");
    admin
        .batch_execute("GRANT SELECT ON logs TO gw_reader")
        .expect("granting SELECT");
    let url = pg.url("gw_reader", &pw, "newapi");
    Some((pg, admin, url, pw))
}

#[test]
fn postgres_follows_new_rows() {
    let Some((pg, mut admin, url, pw)) = pg_newapi("postgres_follows_new_rows") else {
        return;
    };
    let source = source_name("newapi", &pg.printable_url("gw_reader", "newapi"));
    let now = now_secs();
    let old: Vec<LogRow> = (0..10).map(|i| LogRow::consume(now - 900 + i)).collect();
    let old_ids = pg_insert_newapi(&mut admin, &old);

    // Plain flags, default start (newest), default poll interval.
    let d = Daemon::start(&["--gateway-db", &url], None, &[], "info");
    d.wait_caught_up(*old_ids.last().unwrap(), WAIT);
    assert_eq!(
        d.events(),
        0,
        "rows written before the start are not ingested"
    );

    let t = now - 60;
    let mut broken = LogRow::consume(t + 2);
    broken.other = Some(r#"{"model_ratio":1.25,"frt":"#.into());
    let mut no_other = LogRow::consume(t + 3);
    no_other.other = None;
    let mut error_plain = LogRow::error(t + 5);
    error_plain.other = Some(String::new());
    let rows = vec![
        LogRow::consume(t),            // 0 consume
        LogRow::of_type(TOPUP, t + 1), // 1 top-up: skipped
        broken,                        // 2 consume, broken `other`
        no_other,                      // 3 consume, NULL `other`
        LogRow::error(t + 4),          // 4 error, status_code in other
        error_plain,                   // 5 error, empty other
        LogRow::of_type(TOPUP, t + 6), // 6 top-up: skipped
    ];
    let ids = pg_insert_newapi(&mut admin, &rows);
    d.wait_caught_up(*ids.last().unwrap(), WAIT);

    let stored = d.stored();
    let want: Vec<i64> = [0, 2, 3, 4, 5].iter().map(|&i| ids[i]).collect();
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        want,
        "exactly the consume and error rows become events"
    );
    let s = d.stats();
    assert_eq!(s["events"], json!(5), "{s}");
    assert_eq!(s["dead_letters"], json!(0), "{s}");

    let ok = &stored[&ids[0]];
    assert_eq!(ok.id, format!("newapi:{}", ids[0]));
    assert_eq!(ok.ts_ms, t * 1000);
    assert_eq!(ok.status, Some(200));
    assert_eq!(ok.latency_ms, Some(2000), "use_time is seconds");
    assert_eq!(ok.ttft_ms, Some(412), "other.frt");
    assert_eq!(ok.resolved_model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(ok.cost_usd, Some(1335.0 / 500_000.0));
    assert_eq!(ok.provider.as_deref(), Some("channel-7"));
    assert_eq!(ok.source, source);
    let broken = &stored[&ids[2]];
    assert_eq!(
        (
            broken.status,
            broken.resolved_model.as_deref(),
            broken.ttft_ms
        ),
        (Some(200), None, None)
    );
    assert_eq!(broken.latency_ms, Some(2000));
    assert_eq!(stored[&ids[3]].status, Some(200));
    let e = &stored[&ids[4]];
    assert_eq!(
        (e.status, e.error_type.as_deref()),
        (Some(502), Some("gateway_error"))
    );
    assert_eq!(e.cost_usd, Some(0.0));
    let e = &stored[&ids[5]];
    assert_eq!(
        (e.status, e.error_type.as_deref()),
        (Some(500), Some("gateway_error"))
    );

    assert_eq!(d.metric(INGESTED, &source, Some("newapi")), Some(5.0));
    assert_eq!(
        d.metric(SKIPPED, &source, Some("newapi")),
        Some(2.0),
        "top-ups are skipped"
    );
    assert_eq!(
        d.metric(REJECTED, &source, Some("newapi")).unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        d.metric(DUPLICATE, &source, Some("newapi")).unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        d.metric(LAST_ID, &source, None),
        Some(*ids.last().unwrap() as f64)
    );
    assert_eq!(d.metric(ROWS_BEHIND, &source, None), Some(0.0));
    assert_eq!(d.metric(POLL_ERRORS, &source, None).unwrap_or(0.0), 0.0);
    assert!(d.metric(LAST_SUCCESS, &source, None).unwrap_or(0.0) >= (now - 60) as f64);
    let g = d.gw().unwrap();
    assert_eq!(g["source"], json!(source));
    assert_eq!(
        (g["rows_behind"].clone(), g["poll_errors"].clone()),
        (json!(0), json!(0)),
        "{g}"
    );
    assert_eq!(g["last_error"], Value::Null, "{g}");
    assert_no_secrets(&d, &[&pw, &url]);
}

#[test]
fn postgres_kill9_mid_backfill() {
    let Some((pg, mut admin, url, pw)) = pg_newapi("postgres_kill9_mid_backfill") else {
        return;
    };
    let source = source_name("newapi", &pg.printable_url("gw_reader", "newapi"));
    let (first, last) = pg_fill_consume(&mut admin, BULK_ROWS, now_secs() - 300);

    let mut d = Daemon::start(
        &["--gateway-db", &url, "--gateway-db-start", "first"],
        None,
        &[],
        "info",
    );
    // Kill once some, not all, rows are stored.
    let start = Instant::now();
    loop {
        let n = d.events() as i64;
        assert!(
            n < BULK_ROWS,
            "the backfill finished before the test could kill it (raise BULK_ROWS)"
        );
        if n >= KILL_AT {
            break;
        }
        assert!(
            start.elapsed() < BACKFILL_WAIT,
            "not {KILL_AT} events within {BACKFILL_WAIT:?}:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    let (stored, cursor) = d.store_counts(&source);
    let cursor = cursor.expect("a committed cursor");
    assert!(
        (KILL_AT..BULK_ROWS).contains(&stored),
        "killed mid-backfill: {stored} of {BULK_ROWS} stored"
    );
    // The cursor is committed with its events: it covers exactly the stored rows.
    let upto: i64 = admin
        .query_one("SELECT COUNT(*) FROM logs WHERE id <= $1", &[&cursor])
        .unwrap()
        .get(0);
    assert_eq!(
        (stored, first - 1 < cursor),
        (upto, true),
        "events stored vs rows up to the committed cursor {cursor}"
    );

    eprintln!("killed with {stored} of {BULK_ROWS} events stored");
    d.restart();
    let t0 = Instant::now();
    d.wait(&format!("{BULK_ROWS} events"), BACKFILL_WAIT, |d| {
        d.events() as i64 >= BULK_ROWS
    });
    eprintln!("rest of the backfill took {:?}", t0.elapsed());
    d.wait_caught_up(last, WAIT);
    assert_eq!(d.events() as i64, BULK_ROWS);
    assert_eq!(
        d.metric(DUPLICATE, &source, Some("newapi")).unwrap_or(0.0),
        0.0,
        "rows read again after the restart"
    );
    assert_eq!(
        d.metric(INGESTED, &source, Some("newapi")),
        Some((BULK_ROWS - stored) as f64),
        "the restarted daemon stores exactly the rows the first one had not"
    );
    assert_eq!(d.metric(ROWS_BEHIND, &source, None), Some(0.0));
    assert_eq!(d.store_counts(&source), (BULK_ROWS, Some(last)));
    assert_no_secrets(&d, &[&pw, &url]);
}

#[test]
fn postgres_restart_resumes() {
    let Some((mut pg, mut admin, url, pw)) = pg_newapi("postgres_restart_resumes") else {
        return;
    };
    let source = source_name("newapi", &pg.printable_url("gw_reader", "newapi"));
    let d = Daemon::start(
        &[],
        Some(&fast_poll_config("DW_TEST_GATEWAY_URL")),
        &[
            ("DW_TEST_GATEWAY_URL", &url),
            ("DRIFTWARDEN_LOG_FORMAT", "json"),
        ],
        "info",
    );
    // Empty table: the cursor starts at 0.
    d.wait_caught_up(0, WAIT);
    let t = now_secs() - 120;
    let rows: Vec<LogRow> = (0..5).map(|i| LogRow::consume(t + i)).collect();
    let ids = pg_insert_newapi(&mut admin, &rows);
    d.wait_caught_up(ids[4], WAIT);
    assert_eq!(d.events(), 5);

    // PostgreSQL goes away (pg_ctl stop -m fast); nothing is written meanwhile.
    drop(admin);
    pg.stop_fast();
    d.wait("poll_errors >= 2 while PostgreSQL is down", WAIT, |d| {
        d.gw()
            .is_some_and(|g| g["poll_errors"].as_u64().unwrap_or(0) >= 2)
    });
    let g = d.gw().unwrap();
    assert!(
        g["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{g}"
    );
    assert_eq!(g["last_id"], json!(ids[4]), "{g}");
    eprintln!("while PostgreSQL is down: {g}");
    let errors_down = g["poll_errors"].as_u64().unwrap();
    assert!(d.metric(POLL_ERRORS, &source, None).unwrap_or(0.0) >= 2.0);
    assert_eq!(d.events(), 5);

    // Back: rows written now arrive.
    pg.start_again();
    let mut admin = pg.admin("newapi");
    let more: Vec<LogRow> = (10..17).map(|i| LogRow::consume(t + i)).collect();
    let more_ids = pg_insert_newapi(&mut admin, &more);
    d.wait_caught_up(*more_ids.last().unwrap(), WAIT);
    assert_eq!(d.events(), 12);
    let stored: Vec<i64> = d.stored().keys().copied().collect();
    assert_eq!(stored, [ids.clone(), more_ids.clone()].concat());
    assert!(d.gw().unwrap()["poll_errors"].as_u64().unwrap() >= errors_down);
    assert_eq!(d.metric(INGESTED, &source, Some("newapi")), Some(12.0));
    assert_eq!(
        d.metric(DUPLICATE, &source, Some("newapi")).unwrap_or(0.0),
        0.0
    );
    assert_eq!(d.metric(ROWS_BEHIND, &source, None), Some(0.0));

    // A second, short outage after a healthy spell: the retry backoff starts over.
    let failures_before = poll_failures(&d.log_text()).len();
    drop(admin);
    pg.stop_fast();
    d.wait("a poll error in the second outage", WAIT, |d| {
        poll_failures(&d.log_text()).len() > failures_before
    });
    pg.start_again();
    let mut admin = pg.admin("newapi");
    let last = pg_insert_newapi(&mut admin, &[LogRow::consume(t + 20)]);
    d.wait_caught_up(last[0], WAIT);
    assert_eq!(d.events(), 13);
    assert_no_secrets(&d, &[&pw, &url]);

    let failures = poll_failures(&d.log_text());
    let (cause, retry_ms) = &failures[failures_before];
    assert_eq!(
        *retry_ms, 500,
        "the first failure after the follower recovered should retry after the initial \
         500 ms, not a backoff left over from the earlier outage ({cause}); all failures: \
         {failures:?}"
    );
}

#[test]
fn postgres_without_select_grant() {
    let test = "postgres_without_select_grant";
    let Some(pg) = PgServer::start_for(test) else {
        return;
    };
    let pw = secret("Nogrant");
    pg.create_db_and_role("newapi", "gw_nogrant", &pw);
    let mut admin = pg.admin("newapi");
    admin.batch_execute(PG_NEWAPI_LOGS).unwrap();
    let t = now_secs() - 120;
    pg_insert_newapi(&mut admin, &[LogRow::consume(t)]);
    let url = pg.url("gw_nogrant", &pw, "newapi");
    let source = source_name("newapi", &pg.printable_url("gw_nogrant", "newapi"));
    // The URL is in the config file itself, as an operator might write it.
    let config = format!("[[gateway_db]]\nurl = \"{url}\"\npoll_ms = 100\n");
    let d = Daemon::start(
        &[],
        Some(&config),
        &[("DRIFTWARDEN_LOG_FORMAT", "json")],
        "debug",
    );

    // 1. Connects, sees no table it may read: says to GRANT SELECT.
    d.wait("an error naming GRANT SELECT", WAIT, |d| {
        d.gw().is_some_and(|g| {
            g["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("GRANT SELECT"))
        })
    });
    let g = d.gw().unwrap();
    assert_eq!(g["source"], json!(source), "{g}");
    assert!(g["poll_errors"].as_u64().unwrap() >= 1, "{g}");
    assert_eq!(g["last_success_ms"], Value::Null, "{g}");
    assert!(d.metric(POLL_ERRORS, &source, None).unwrap_or(0.0) >= 1.0);
    assert_eq!(d.events(), 0);
    assert!(
        !poll_failures(&d.log_text()).is_empty(),
        "the failure is logged:\n{}",
        d.log_text()
    );
    assert_no_secrets(&d, &[&pw, &url]);

    // 2. Granted: the follower recovers on its own.
    admin
        .batch_execute("GRANT SELECT ON logs TO gw_nogrant")
        .unwrap();
    d.wait("a successful poll after GRANT", WAIT, |d| {
        d.gw().is_some_and(|g| g["last_success_ms"].is_i64())
    });
    let ids = pg_insert_newapi(&mut admin, &[LogRow::consume(t + 1)]);
    d.wait_caught_up(ids[0], WAIT);
    assert_eq!(d.events(), 1, "only the row written after the start");

    // 3. Revoked while following: the query fails with the same advice.
    let errors_before = d.gw().unwrap()["poll_errors"].as_u64().unwrap();
    let logged_before = poll_failures(&d.log_text()).len();
    admin
        .batch_execute("REVOKE SELECT ON logs FROM gw_nogrant")
        .unwrap();
    d.wait("an error naming GRANT SELECT after REVOKE", WAIT, |d| {
        d.gw().is_some_and(|g| {
            g["poll_errors"].as_u64().unwrap() > errors_before
                && g["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("GRANT SELECT"))
        })
    });
    assert_no_secrets(&d, &[&pw, &url]);

    // The operator also needs the server's own reason, not only our advice.
    let failures = poll_failures(&d.log_text());
    let (revoked, _) = &failures[logged_before];
    assert!(
        revoked.contains("permission denied for table logs"),
        "the error of a SELECT the server refused should carry PostgreSQL's message \
         (\"permission denied for table logs\"), got {revoked:?}"
    );
}

/// Gateways insert log rows from many requests at once, each in its own transaction:
/// PostgreSQL hands out the id at INSERT, so a row can become visible after a row
/// with a higher id. Following by `id > cursor` must not skip it.
#[test]
fn postgres_row_committed_after_a_higher_id_is_not_lost() {
    let Some((pg, mut admin, url, _pw)) =
        pg_newapi("postgres_row_committed_after_a_higher_id_is_not_lost")
    else {
        return;
    };
    let d = Daemon::start(
        &[],
        Some(&fast_poll_config("DW_TEST_GATEWAY_URL")),
        &[("DW_TEST_GATEWAY_URL", &url)],
        "info",
    );
    d.wait_caught_up(0, WAIT);
    let t = now_secs() - 60;

    // Request A's INSERT has its id but has not committed yet...
    let mut slow = pg.admin("newapi");
    let mut a = slow.transaction().unwrap();
    let late = pg_insert_newapi(&mut a, &[LogRow::consume(t)])[0];
    // ...while request B's row, with the next id, commits and is followed.
    let b = pg_insert_newapi(&mut admin, &[LogRow::consume(t + 1)])[0];
    assert!(b > late);
    d.wait(&format!("row {b} stored"), WAIT, |d| {
        d.stored().contains_key(&b)
    });
    // A commits a moment later; then more traffic.
    a.commit().unwrap();
    let c = pg_insert_newapi(&mut admin, &[LogRow::consume(t + 2)])[0];
    d.wait(&format!("row {c} stored"), WAIT, |d| {
        d.stored().contains_key(&c)
    });
    // A follower may take a few polls to come back for a row that appeared late.
    d.wait(
        &format!(
            "row {late}, committed after row {b} had been followed, stored too \
             (it is in the table, below the cursor: skipped for good)"
        ),
        Duration::from_secs(15),
        |d| d.stored().contains_key(&late),
    );
    d.wait_caught_up(c, WAIT);
    let stored: Vec<i64> = d.stored().keys().copied().collect();
    assert_eq!(stored, vec![late, b, c]);
}

#[test]
fn postgres_start_at_a_time() {
    let Some((pg, mut admin, url, _pw)) = pg_newapi("postgres_start_at_a_time") else {
        return;
    };
    let source = source_name("newapi", &pg.printable_url("gw_reader", "newapi"));
    let t = now_secs() - 3600;
    let created = [t - 7200, t - 60, t - 1, t, t, t + 1, t + 30];
    let rows: Vec<LogRow> = created.iter().map(|&c| LogRow::consume(c)).collect();
    let ids = pg_insert_newapi(&mut admin, &rows);
    let start = chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let d = Daemon::start(
        &["--gateway-db", &url, "--gateway-db-start", &start],
        None,
        &[],
        "info",
    );
    d.wait_caught_up(*ids.last().unwrap(), WAIT);
    let stored = d.stored();
    let want: Vec<i64> = ids[3..].to_vec();
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        want,
        "only rows created at or after {start}"
    );
    for (i, &id) in ids.iter().enumerate().skip(3) {
        assert_eq!(stored[&id].ts_ms, created[i] * 1000);
    }

    // And it follows from there.
    let later = pg_insert_newapi(&mut admin, &[LogRow::consume(now_secs() - 5)]);
    d.wait_caught_up(later[0], WAIT);
    assert_eq!(d.events(), 5);
    assert_eq!(d.metric(INGESTED, &source, Some("newapi")), Some(5.0));
}

// ---------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------

#[test]
fn mariadb_follows_and_survives_kill9() {
    let Some(my) = MariaDb::start_for("mariadb_follows_and_survives_kill9") else {
        return;
    };
    let pw = secret("MyPw");
    my.create_db_and_user("newapi", "gw_reader", &pw);
    let mut admin = my.admin_db("newapi");
    admin.query_drop(MY_NEWAPI_LOGS).expect("creating logs");
    admin
        .query_drop("GRANT SELECT ON newapi.logs TO 'gw_reader'@'%'")
        .unwrap();
    let url = my.url("gw_reader", &pw, "newapi");
    let source = source_name("newapi", &my.printable_url("gw_reader", "newapi"));
    let now = now_secs();
    let old: Vec<LogRow> = (0..10).map(|i| LogRow::consume(now - 900 + i)).collect();
    let old_ids = my_insert_newapi(&mut admin, &old);

    let mut d = Daemon::start(
        &[],
        Some(&fast_poll_config("DW_TEST_MARIADB_URL")),
        &[("DW_TEST_MARIADB_URL", &url)],
        "info",
    );
    d.wait_caught_up(*old_ids.last().unwrap(), WAIT);
    assert_eq!(
        d.events(),
        0,
        "rows written before the start are not ingested"
    );

    // Like postgres_follows_new_rows.
    let t = now - 60;
    let mut broken = LogRow::consume(t + 2);
    broken.other = Some(r#"{"frt": 12, "upstream_model_name": "#.into());
    let rows = vec![
        LogRow::consume(t),
        LogRow::of_type(TOPUP, t + 1),
        broken,
        LogRow::error(t + 3),
        LogRow::of_type(TOPUP, t + 4),
        LogRow::error(t + 5),
        LogRow::consume(t + 6),
    ];
    let ids = my_insert_newapi(&mut admin, &rows);
    d.wait_caught_up(*ids.last().unwrap(), WAIT);
    let stored = d.stored();
    let want: Vec<i64> = [0, 2, 3, 5, 6].iter().map(|&i| ids[i]).collect();
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), want);
    assert_eq!(stored[&ids[0]].latency_ms, Some(2000));
    assert_eq!(
        stored[&ids[0]].resolved_model.as_deref(),
        Some("gpt-4o-2024-08-06")
    );
    assert_eq!(
        stored[&ids[2]].status,
        Some(200),
        "broken other still counts"
    );
    assert_eq!(stored[&ids[3]].status, Some(502));
    assert_eq!(stored[&ids[3]].error_type.as_deref(), Some("gateway_error"));
    assert_eq!(d.metric(INGESTED, &source, Some("newapi")), Some(5.0));
    assert_eq!(d.metric(SKIPPED, &source, Some("newapi")), Some(2.0));
    assert_eq!(d.stats()["dead_letters"], json!(0));

    // Like postgres_kill9_mid_backfill, on a backlog that appears while following.
    let before = d.events() as i64;
    let (first, last) = my_fill_consume(&mut admin, BULK_ROWS, now - 30);
    let start = Instant::now();
    loop {
        let n = d.events() as i64 - before;
        assert!(
            n < BULK_ROWS,
            "the backfill finished before the test could kill it (raise BULK_ROWS)"
        );
        if n >= KILL_AT {
            break;
        }
        assert!(
            start.elapsed() < BACKFILL_WAIT,
            "not {KILL_AT} bulk events within {BACKFILL_WAIT:?}:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    let (stored_at_kill, cursor) = d.store_counts(&source);
    let cursor = cursor.expect("a committed cursor");
    let bulk_stored = stored_at_kill - before;
    assert!(
        (KILL_AT..BULK_ROWS).contains(&bulk_stored),
        "killed mid-backfill: {bulk_stored} of {BULK_ROWS} stored"
    );
    let upto: i64 = admin
        .exec_first(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM logs WHERE id >= ? AND id <= ?",
            (first, cursor),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        bulk_stored, upto,
        "events stored vs rows up to the committed cursor {cursor}"
    );

    eprintln!("killed with {bulk_stored} of {BULK_ROWS} bulk events stored");
    d.restart();
    let total = before + BULK_ROWS;
    d.wait(&format!("{total} events"), BACKFILL_WAIT, |d| {
        d.events() as i64 >= total
    });
    d.wait_caught_up(last, WAIT);
    assert_eq!(d.events() as i64, total);
    assert_eq!(
        d.metric(DUPLICATE, &source, Some("newapi")).unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        d.metric(INGESTED, &source, Some("newapi")),
        Some((total - stored_at_kill) as f64)
    );
    assert_eq!(d.store_counts(&source), (total, Some(last)));
    assert_no_secrets(&d, &[&pw, &url]);
}

#[test]
fn oneapi_flavour_on_mariadb() {
    let Some(my) = MariaDb::start_for("oneapi_flavour_on_mariadb") else {
        return;
    };
    let pw = secret("OnePw");
    my.create_db_and_user("oneapi", "oneapi_ro", &pw);
    let mut admin = my.admin_db("oneapi");
    admin.query_drop(MY_ONEAPI_LOGS).unwrap();
    admin
        .query_drop("GRANT SELECT ON oneapi.logs TO 'oneapi_ro'@'%'")
        .unwrap();
    let url = my.url("oneapi_ro", &pw, "oneapi");
    let source = source_name("oneapi", &my.printable_url("oneapi_ro", "oneapi"));
    let t = now_secs() - 600;
    let mut a = LogRow::consume(t);
    a.model_name = "claude-3-5-sonnet".into();
    a.quota = 2500;
    a.time = 1534;
    let mut b = LogRow::consume(t + 1);
    b.time = 250;
    let mut test_row = LogRow::consume(t + 2);
    test_row.kind = 5; // One API: a channel test
    test_row.time = 800;
    let rows = vec![
        a,
        LogRow::of_type(TOPUP, t + 1),
        test_row.clone(),
        b,
        LogRow::of_type(MANAGE, t + 3),
    ];
    let ids = my_insert_oneapi(&mut admin, &rows);

    let d = Daemon::start(
        &[
            "--gateway-db",
            &url,
            "--gateway-db-flavour",
            "oneapi",
            "--gateway-db-start",
            "first",
        ],
        None,
        &[],
        "info",
    );
    d.wait_caught_up(*ids.last().unwrap(), WAIT);
    let stored = d.stored();
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        vec![ids[0], ids[3]]
    );
    let e = &stored[&ids[0]];
    assert_eq!(e.id, format!("oneapi:{}", ids[0]));
    assert_eq!(e.latency_ms, Some(1534), "elapsed_time is milliseconds");
    assert_eq!(e.cost_usd, Some(2500.0 / 500_000.0));
    assert_eq!(e.status, Some(200));
    assert_eq!(e.provider.as_deref(), Some("channel-7"));
    assert_eq!(e.source, source);
    assert_eq!(stored[&ids[3]].latency_ms, Some(250));
    assert_eq!(d.metric(INGESTED, &source, Some("oneapi")), Some(2.0));
    assert_eq!(
        d.metric(SKIPPED, &source, Some("oneapi")),
        Some(3.0),
        "test, top-up, manage"
    );

    // Followed live too: another channel test is skipped, another request stored.
    let mut c = LogRow::consume(t + 10);
    c.time = 99;
    let more = my_insert_oneapi(&mut admin, &[test_row, c]);
    d.wait_caught_up(more[1], WAIT);
    let stored = d.stored();
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        vec![ids[0], ids[3], more[1]]
    );
    assert_eq!(stored[&more[1]].latency_ms, Some(99));
    assert_eq!(d.metric(SKIPPED, &source, Some("oneapi")), Some(4.0));
    assert_eq!(d.stats()["dead_letters"], json!(0));
    assert_no_secrets(&d, &[&pw, &url]);
}

// ---------------------------------------------------------------------------------
// TLS (sslmode, sslrootcert) against servers that require it
// ---------------------------------------------------------------------------------

/// `SCHEME://gw_reader:PW@HOST:PORT/newapi[?QUERY]`.
fn reader_url(scheme: &str, host: &str, port: u16, pw: &str, query: &str) -> String {
    let url = format!("{scheme}://gw_reader:{pw}@{host}:{port}/newapi");
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

/// A daemon following `url` (from the environment, polled often).
fn follow(url: &str) -> Daemon {
    Daemon::start(
        &[],
        Some(&fast_poll_config("DW_TEST_GATEWAY_URL")),
        &[("DW_TEST_GATEWAY_URL", url)],
        "info",
    )
}

/// Wait until the source's `last_error` contains `needle`.
fn wait_error(d: &Daemon, needle: &str) {
    d.wait(&format!("last_error containing {needle:?}"), WAIT, |d| {
        d.gw()
            .is_some_and(|g| g["last_error"].as_str().is_some_and(|e| e.contains(needle)))
    });
}

/// New API's `logs` in database `newapi` of `pg`, readable by `gw_reader`; returns an
/// admin connection and the reader's password.
fn pg_newapi_on(pg: &PgServer) -> (postgres::Client, String) {
    let pw = secret("TlsPw");
    pg.create_db_and_role("newapi", "gw_reader", &pw);
    let mut admin = pg.admin("newapi");
    admin.batch_execute(PG_NEWAPI_LOGS).expect("creating logs");
    admin
        .batch_execute("GRANT SELECT ON logs TO gw_reader")
        .expect("granting SELECT");
    (admin, pw)
}

/// As `pg_newapi_on`, in MariaDB.
fn my_newapi_on(my: &MariaDb) -> (mysql::Conn, String) {
    let pw = secret("TlsPw");
    my.create_db_and_user("newapi", "gw_reader", &pw);
    let mut admin = my.admin_db("newapi");
    admin.query_drop(MY_NEWAPI_LOGS).expect("creating logs");
    admin
        .query_drop("GRANT SELECT ON newapi.logs TO 'gw_reader'@'%'")
        .expect("granting SELECT");
    (admin, pw)
}

/// A daemon following `scheme://gw_reader@localhost:port` with `sslmode=verify-full`
/// against the test CA: it catches up, then stores the three rows `insert` adds.
fn follows_over_verify_full(
    scheme: &str,
    port: u16,
    pw: &str,
    insert: impl FnOnce(&[LogRow]) -> Vec<i64>,
) -> Daemon {
    let query = format!(
        "sslmode=verify-full&sslrootcert={}",
        test_pki().ca.display()
    );
    let d = follow(&reader_url(scheme, "localhost", port, pw, &query));
    d.wait_caught_up(0, WAIT);
    let t = now_secs() - 60;
    let ids = insert(&[
        LogRow::consume(t),
        LogRow::error(t + 1),
        LogRow::consume(t + 2),
    ]);
    d.wait_caught_up(*ids.last().unwrap(), WAIT);
    assert_eq!(d.stored().keys().copied().collect::<Vec<_>>(), ids);
    d
}

#[test]
fn postgres_over_tls_verify_full() {
    let Some(pg) = PgServer::start_tls_for("postgres_over_tls_verify_full") else {
        return;
    };
    let (mut admin, pw) = pg_newapi_on(&pg);
    let d = follows_over_verify_full("postgres", pg.port(), &pw, |rows| {
        pg_insert_newapi(&mut admin, rows)
    });
    assert_eq!(
        d.gw().unwrap()["source"],
        json!(format!(
            "db:newapi:postgres://gw_reader@localhost:{}/newapi#logs",
            pg.port()
        )),
        "the source's name (its cursor's key) leaves out the TLS parameters"
    );
    let encrypted: Option<bool> = admin
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = 'gw_reader'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(encrypted, Some(true), "the follower's session is TLS");
    assert_no_secrets(&d, &[&pw]);
}

/// The TLS mistakes both servers must explain, each followed by its own daemon, all
/// at once: a wrong CA, a name mismatch (while `verify-ca` by the same name works),
/// `sslmode=disable` refused saying `disabled_says`, the default mode working, and
/// `require` against a server without TLS. `extra` holds more (daemon, expected
/// error) cases, started by the caller, awaited with these.
fn tls_failures_say_what_to_do(
    scheme: &str,
    (tls_port, plain_port): (u16, u16),
    pw: &str,
    disabled_says: &str,
    extra: Vec<(Daemon, &str)>,
) {
    let pki = test_pki();
    let (ca, other) = (pki.ca.display(), pki.other_ca.display());
    let url = |host: &str, query: &str| reader_url(scheme, host, tls_port, pw, query);
    let wrong_ca = follow(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    ));
    let by_ip = follow(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    let ca_only = follow(&url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ));
    let disabled = follow(&url("localhost", "sslmode=disable"));
    let default_mode = follow(&url("localhost", ""));
    let no_tls = follow(&reader_url(
        scheme,
        "localhost",
        plain_port,
        pw,
        "sslmode=require",
    ));

    wait_error(
        &wrong_ca,
        &format!("the server's certificate is not signed by the CA in sslrootcert={other}: "),
    );
    wait_error(
        &by_ip,
        "the certificate is for localhost, not 127.0.0.1; use the name in the certificate \
         or sslmode=verify-ca",
    );
    ca_only.wait_caught_up(0, WAIT);
    wait_error(&disabled, disabled_says);
    default_mode.wait_caught_up(0, WAIT);
    wait_error(
        &no_tls,
        "does not offer TLS, and sslmode=require requires it",
    );
    for (d, says) in &extra {
        wait_error(d, says);
    }
    let fixed = [wrong_ca, by_ip, ca_only, disabled, default_mode, no_tls];
    for d in fixed.iter().chain(extra.iter().map(|(d, _)| d)) {
        assert_no_secrets(d, &[pw]);
    }
}

#[test]
fn postgres_tls_failures_say_what_to_do() {
    let test = "postgres_tls_failures_say_what_to_do";
    let Some(pg) = PgServer::start_tls_for(test) else {
        return;
    };
    let Some(plain) = PgServer::start_for(test) else {
        return;
    };
    let (_admin, pw) = pg_newapi_on(&pg);
    let no_ca_file = follow(&reader_url(
        "postgres",
        "localhost",
        pg.port(),
        &pw,
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ));
    tls_failures_say_what_to_do(
        "postgres",
        (pg.port(), plain.port()),
        &pw,
        "accepts this user only over TLS: drop sslmode=disable",
        vec![(
            no_ca_file,
            "cannot read the CA file sslrootcert=/nonexistent/ca.pem",
        )],
    );
}

#[test]
fn mariadb_over_tls_verify_full() {
    let Some(my) = MariaDb::start_tls_for("mariadb_over_tls_verify_full") else {
        return;
    };
    let (mut admin, pw) = my_newapi_on(&my);
    let d = follows_over_verify_full("mysql", my.port(), &pw, |rows| {
        my_insert_newapi(&mut admin, rows)
    });
    assert_no_secrets(&d, &[&pw]);
}

#[test]
fn mariadb_tls_failures_say_what_to_do() {
    let test = "mariadb_tls_failures_say_what_to_do";
    let Some(my) = MariaDb::start_tls_for(test) else {
        return;
    };
    let Some(plain) = MariaDb::start_for(test) else {
        return;
    };
    let (_admin, pw) = my_newapi_on(&my);
    // MariaDB answers a plain connection it refuses as it does a wrong password.
    tls_failures_say_what_to_do(
        "mysql",
        (my.port(), plain.port()),
        &pw,
        "if the server requires TLS (require_secure_transport), drop sslmode=disable",
        Vec::new(),
    );
}
