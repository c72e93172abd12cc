//! Following a New API / One API `logs` table in the gateway's own SQLite file, as
//! `driftwarden serve --gateway-db sqlite:///...` does for a real gateway.

use crate::common;
use crate::support::newapi_sqlite;

use std::path::Path;
use std::time::Duration;

use common::{TestApp, WAIT, now_ms, wait_until};
use rusqlite::{Connection, params};

crate::on_postgres!(
    follows_new_rows_from_the_newest_by_default,
    kill9_mid_backfill_stores_each_row_once,
    the_gateway_never_sees_a_lock_error_in_either_journal_mode,
    start_at_a_time_skips_older_rows,
    a_missing_table_is_reported_not_fatal,
    a_backfill_does_not_hold_up_the_webhook,
);

const OTHER: &str =
    r#"{"model_ratio":1.25,"group_ratio":1,"completion_ratio":4,"cache_tokens":0,"frt":350}"#;

fn gateway(path: &Path, journal: &str) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", journal).unwrap();
    conn.execute_batch(newapi_sqlite::NEWAPI_SCHEMA).unwrap();
    conn
}

/// Insert `n` rows of `kind` (2 consume, 5 error, 1 top-up) in one transaction.
fn insert(conn: &mut Connection, n: usize, kind: i64, other: &str) {
    let tx = conn.transaction().unwrap();
    insert_rows(&tx, n, kind, other);
    tx.commit().unwrap();
}

/// Insert `n` rows of `kind` in the transaction open on `conn`, if any.
fn insert_rows(conn: &Connection, n: usize, kind: i64, other: &str) {
    let mut stmt = conn
        .prepare(
            "INSERT INTO logs (user_id, created_at, type, content, username, token_name, model_name, quota, \
             prompt_tokens, completion_tokens, use_time, is_stream, channel_id, \"group\", other) \
             VALUES (1, ?1, ?2, '', 'alice', 'prod-key', 'gpt-4o', 1500, 900, 80, 2, 1, 3, 'default', ?3)",
        )
        .unwrap();
    for _ in 0..n {
        stmt.execute(params![now_ms() / 1000 - 60, kind, other])
            .unwrap();
    }
}

fn source(path: &Path) -> String {
    format!("db:newapi:sqlite://{}#logs", path.display())
}

fn app_on(gateway_db: &Path, extra: &str) -> common::AppBuilder {
    TestApp::builder().config(&format!(
        "[[gateway_db]]\nurl = \"sqlite://{}\"\npoll_ms = 100\n{extra}",
        gateway_db.display()
    ))
}

#[test]
fn follows_new_rows_from_the_newest_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("one-api.db");
    let mut gw = gateway(&db, "wal");
    insert(&mut gw, 50, 2, OTHER); // history before driftwarden starts: not read
    let app = app_on(&db, "").spawn();
    let src = source(&db);
    wait_until("cursor committed at the newest row", WAIT, || {
        app.metric_opt(&format!(
            "driftwarden_gateway_db_last_id{{source=\"{src}\"}}"
        )) == Some(50.0)
    });
    insert(&mut gw, 10, 2, OTHER);
    insert(&mut gw, 3, 5, "");
    insert(&mut gw, 4, 1, "");
    insert(&mut gw, 2, 2, "{this is not json");
    let stats = app.wait_stats("15 events", |s| s.events >= 15);
    assert_eq!(
        stats.events, 15,
        "10 consume + 3 error + 2 with broken other"
    );
    assert_eq!(stats.dead_letters, 0);
    wait_until("top-ups counted as skipped", WAIT, || {
        app.metric(&format!(
            "driftwarden_records_skipped_total{{source=\"{src}\",format=\"newapi\"}}"
        )) == 4.0
    });
    let errors = app.sql_i64("SELECT COUNT(*) FROM events WHERE status >= 400");
    assert_eq!(errors, 3);
    let tenants = app.sql_i64("SELECT COUNT(*) FROM events WHERE tenant LIKE 'id-%'");
    assert_eq!(tenants, 15, "token names are stored hashed");
    let v: serde_json::Value = app.get("/v1/stats").json().unwrap();
    let health = &v["gateway_dbs"][0];
    assert_eq!(health["source"], src.as_str());
    assert_eq!(health["last_id"], 69);
    assert_eq!(health["rows_behind"], 0);
}

#[test]
fn kill9_mid_backfill_stores_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new-api.db");
    // A rollback journal: the test's exclusive lock below keeps the follower out.
    let mut gw = gateway(&db, "delete");
    const ROWS: usize = 120_000;
    const HELD: usize = 1_000;
    let total = (ROWS + HELD) as i64;
    insert(&mut gw, ROWS, 2, OTHER);
    let mut app = app_on(&db, "start = \"first\"\nbatch_rows = 2000\n").spawn();
    app.wait_stats("part of the backfill", |s| s.events > 0);
    // Hold the backfill unfinished, however far it got: more rows written under an
    // exclusive lock that is kept through the kill. The follower waits for the lock and
    // cannot read them, so the daemon dies with part of the table stored.
    gw.busy_timeout(Duration::from_secs(10)).unwrap();
    gw.execute_batch("BEGIN EXCLUSIVE").unwrap();
    insert_rows(&gw, HELD, 2, OTHER);
    app.kill9();
    gw.execute_batch("COMMIT").unwrap();
    let mid = app.sql_i64("SELECT COUNT(*) FROM events");
    let cursor = app.sql_i64("SELECT last_id FROM db_cursors");
    // Ids run 1..=total without gaps, so a cursor committed with its rows equals
    // their count; the restart must resume from it.
    assert_eq!(mid, cursor, "the cursor commits with the rows it covers");
    assert!(
        0 < mid && mid < total,
        "the kill must land mid-backfill (stored {mid} of {total})"
    );
    app.restart();
    let src = source(&db);
    app.wait_stats("the whole backfill", |s| s.events >= total as u64);
    assert_eq!(app.stats().events, total as u64);
    let dup = app.metric(&format!(
        "driftwarden_events_duplicate_total{{source=\"{src}\",format=\"newapi\"}}"
    ));
    assert_eq!(dup, 0.0, "the cursor, not dedupe, prevents re-reading");
    let aggregated =
        app.sql_i64("SELECT CAST(SUM(requests) AS BIGINT) FROM agg_minute WHERE dim = 'global'");
    assert_eq!(aggregated, total);
}

#[test]
fn the_gateway_never_sees_a_lock_error_in_either_journal_mode() {
    for journal in ["delete", "wal"] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("one-api.db");
        let mut gw = gateway(&db, journal);
        // The gateway's own busy timeout (New API and One API set one in their DSN).
        gw.busy_timeout(Duration::from_millis(2000)).unwrap();
        let app = app_on(&db, "start = \"first\"\n").spawn();
        let mut written = 0;
        for _ in 0..200 {
            insert(&mut gw, 5, 2, OTHER); // panics on SQLITE_BUSY
            written += 5;
        }
        app.wait_stats(&format!("{written} events ({journal})"), |s| {
            s.events >= written
        });
        assert_eq!(app.stats().events, written, "{journal}");
        let modified = std::fs::metadata(&db).unwrap().modified().unwrap();
        drop(app);
        assert_eq!(
            std::fs::metadata(&db).unwrap().modified().unwrap(),
            modified,
            "driftwarden must not write to the gateway's database"
        );
    }
}

#[test]
fn start_at_a_time_skips_older_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new-api.db");
    let gw = gateway(&db, "wal");
    let now = now_ms() / 1000;
    for (age_s, n) in [(7200, 5), (30, 7)] {
        for _ in 0..n {
            gw.execute(
                "INSERT INTO logs (created_at, type, token_name, model_name, quota, prompt_tokens, completion_tokens) \
                 VALUES (?1, 2, 'k', 'gpt-4o', 10, 1, 1)",
                params![now - age_s],
            )
            .unwrap();
        }
    }
    let since = chrono::DateTime::from_timestamp(now - 3600, 0)
        .unwrap()
        .to_rfc3339();
    let app = app_on(&db, &format!("start = \"{since}\"\n")).spawn();
    // Every row was written before the daemon started: once the follower has been
    // at the end of the table with all it read stored, no older row can still come.
    wait_until("the follower caught up", WAIT, || {
        let v: serde_json::Value = app.get("/v1/stats").json().unwrap();
        v["sources"][0]["caught_up_ms"].is_i64()
    });
    assert_eq!(app.stats().events, 7);
}

#[test]
fn a_missing_table_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE other (x)")
        .unwrap();
    let app = app_on(&db, "").spawn();
    wait_until("a poll error with the reason", WAIT, || {
        let v: serde_json::Value = app.get("/v1/stats").json().unwrap();
        v["gateway_dbs"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("has no table logs"))
    });
    assert_eq!(app.get("/healthz").status().as_u16(), 200);
}

#[test]
fn a_backfill_does_not_hold_up_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new-api.db");
    // A rollback journal: the test's exclusive lock below keeps the follower out.
    let mut gw = gateway(&db, "delete");
    const ROWS: usize = 200_000;
    const HELD: usize = 1_000;
    insert(&mut gw, ROWS, 2, OTHER);
    let app = app_on(&db, "start = \"first\"\n").spawn();
    app.wait_stats("the backfill under way", |s| s.events > 0);
    // Hold the backfill unfinished, however far it got: more rows written under an
    // exclusive lock, committed only once the webhook has answered. The follower
    // waits for the lock (its busy timeout) and cannot reach the end meanwhile.
    gw.busy_timeout(Duration::from_secs(10)).unwrap();
    gw.execute_batch("BEGIN EXCLUSIVE").unwrap();
    insert_rows(&gw, HELD, 2, OTHER);
    let line = common::native_line("live-1", common::recent_ms());
    let (status, answer) = app.post_events("native", line);
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    // Answered while the backfill could not finish: a webhook that waited for it
    // would have hung until the client's timeout.
    gw.execute_batch("COMMIT").unwrap();
    let total = (ROWS + HELD) as u64 + 1;
    app.wait_stats("the whole backfill", |s| s.events >= total);
    assert_eq!(app.stats().events, total);
}
