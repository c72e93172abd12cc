//! Several `driftwarden serve` replicas on one REAL PostgreSQL (issue 16): any replica
//! ingests, one leader judges and notifies, a new leader takes over within 30 s of a
//! `kill -9`, each notification reaches the receiver once, and a leader paused
//! (`SIGSTOP`) past its lease writes nothing as leader once it runs again.
//!
//! The replicas run on the data clock with one-minute buckets, and error-rate's hard
//! guard fires in the bucket it is crossed in, so an incident opens as soon as the
//! minute after the burst is posted. Waits are on observable points (the receiver's
//! count, a replica's `driftwarden_leader` gauge, rows in the store); only the
//! "nothing more arrives" checks settle for a few seconds.

use crate::common;
use crate::support::newapi_sqlite;
use crate::support::receivers;

use std::time::{Duration, Instant};

use common::TestApp;
use common::dbservers::PgServer;
use receivers::{Receiver, Reply};
use serde_json::Value;

const MINUTE: i64 = 60_000;
/// The bound on a takeover.
const TAKEOVER: Duration = Duration::from_secs(30);
/// How long a woken old leader is given to write what it must not: a process that
/// must do nothing offers no point to await (its duties stop on its own clock, after
/// `driftwarden_leader` already says 0).
const WOKEN_GRACE: Duration = Duration::from_millis(3000);

/// A private PostgreSQL with a store database; the application role's URL.
fn store(test: &str) -> Option<(PgServer, String)> {
    let pg = PgServer::start_for(test)?;
    let password = pg.create_store_db("dw", "dw_replica");
    let url = pg.url("dw_replica", &password, "dw");
    Some((pg, url))
}

/// One-minute buckets judged on the data clock, sent at once, to one Slack channel.
fn config(slack: &Receiver) -> String {
    format!(
        "clock = \"data\"\n[analysis]\nbucket_minutes = 1\nlateness_minutes = 0\n\
         [routing]\ngroup_wait_seconds = 0\n\
         [[channel]]\nname = \"slack\"\ntype = \"slack\"\nwebhook_url = \"{}\"\n",
        slack.url("/services/T0/B0/replicas")
    )
}

fn replicas(url: &str, rules: &std::path::Path, config: &str, nodes: &[&str]) -> Vec<TestApp> {
    nodes
        .iter()
        .map(|node| {
            TestApp::builder()
                .db_url(url)
                .node(node)
                .rules(rules)
                .config(config)
                .spawn()
        })
        .collect()
}

/// Which of the live `apps` leads, once exactly one does; fails after `limit`.
fn leader(apps: &[TestApp], live: &[usize], limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        let leading: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| apps[i].metric_opt("driftwarden_leader") == Some(1.0))
            .collect();
        if let [one] = leading[..] {
            return one;
        }
        assert!(
            start.elapsed() < limit,
            "no single leader among {live:?} within {limit:?} (leading: {leading:?}); logs:\n{}",
            live.iter()
                .map(|&i| apps[i].log_text())
                .collect::<Vec<_>>()
                .join("\n-----\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Post minute `minute` of the history (40 requests, half failed in the burst
/// minute) to `app`.
fn post_minute(app: &TestApp, start: i64, minute: i64, burst: i64) {
    let lines: Vec<String> = (0..40)
        .map(|i| {
            let failed = minute == burst && i % 2 == 0;
            common::usage_line(
                &format!("m{minute}-{i}"),
                start + minute * MINUTE + i * 1000,
                failed,
            )
        })
        .collect();
    let (status, report) = app.post_events("native", lines.join("\n"));
    assert_eq!(status, 200, "{report}");
}

fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Slack messages accepted whose text holds `word` (FIRING, RESOLVED).
fn accepted_with(slack: &Receiver, word: &str) -> Vec<Value> {
    slack
        .accepted()
        .into_iter()
        .filter(|b| b.to_string().contains(word))
        .collect()
}

fn count(url: &str, sql: &str) -> i64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connecting");
    c.query_one(sql, &[]).expect(sql).get(0)
}

#[test]
fn three_replicas_open_and_resolve_one_incident_once_through_a_kill_9_of_the_leader() {
    let Some((_pg, url)) =
        store("three_replicas_open_and_resolve_one_incident_once_through_a_kill_9_of_the_leader")
    else {
        return;
    };
    let slack = Receiver::start();
    // Refused until after the failover: the opening waits in the outbox when the
    // leader dies.
    slack.always(Some(Reply::Status(500)));
    let rules = common::hard_guard_rules();
    let mut apps = replicas(
        &url,
        rules.path(),
        &config(&slack),
        &["node-a", "node-b", "node-c"],
    );
    let first = leader(&apps, &[0, 1, 2], TAKEOVER);
    for (i, app) in apps.iter().enumerate() {
        let role = app.get("/healthz").json::<Value>().unwrap()["role"].clone();
        assert_eq!(role, if i == first { "leader" } else { "follower" });
        let token = app.metric("driftwarden_leader_token");
        assert_eq!(token > 0.0, i == first, "replica {i}: token {token}");
    }

    // 25 healthy minutes (the baseline), the burst, a healthy minute that closes it:
    // each minute posted to one replica and again to the next (a retrying gateway).
    let start = (common::now_ms() - 3_600_000) / MINUTE * MINUTE;
    let burst = 25;
    for minute in 0..=burst + 1 {
        let to = minute as usize % 3;
        post_minute(&apps[to], start, minute, burst);
        post_minute(&apps[(to + 1) % 3], start, minute, burst);
    }
    wait(
        "the opening tried (and refused)",
        Duration::from_secs(60),
        || slack.count() >= 1,
    );
    assert!(slack.accepted().is_empty());

    apps[first].kill9();
    let killed = Instant::now();
    let live: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let next = leader(&apps, &live, TAKEOVER);
    let takeover = killed.elapsed();
    eprintln!("a new leader {takeover:?} after the kill");
    assert!(takeover < TAKEOVER, "a new leader after {takeover:?}");

    slack.always(None);
    wait("the opening delivered", Duration::from_secs(60), || {
        !accepted_with(&slack, "FIRING").is_empty()
    });
    for minute in burst + 2..=burst + 16 {
        post_minute(&apps[live[minute as usize % 2]], start, minute, burst);
    }
    wait("the resolve delivered", Duration::from_secs(60), || {
        !accepted_with(&slack, "RESOLVED").is_empty()
    });
    apps[next].wait_outbox_polls(&["slack"]);

    let posted = (burst + 17) * 40;
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM events"),
        posted,
        "each event once"
    );
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(DISTINCT incident_id) FROM alerts WHERE rule = 'error-rate' AND tier = 'page'"
        ),
        1,
        "one incident"
    );
    let (firing, resolved) = (
        accepted_with(&slack, "FIRING"),
        accepted_with(&slack, "RESOLVED"),
    );
    // The old leader never had a 2xx, so not even the documented duplicate applies.
    assert_eq!(
        (firing.len(), resolved.len()),
        (1, 1),
        "{:#?}",
        slack.accepted()
    );
    assert!(
        firing[0].to_string().contains("error-rate"),
        "{}",
        firing[0]
    );
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(*) FROM outbox WHERE channel = 'slack' AND state <> 'sent'"
        ),
        0,
        "every Slack notification marked sent (the page tier's email has no channel here)"
    );
    assert!(
        apps[next].log_text().contains("lease gained"),
        "{}",
        apps[next].log_text()
    );

    // A clean stop (a rolling update) releases the lease: the last replica leads at its
    // next attempt, without waiting out the 15 s TTL.
    let last = live.iter().copied().find(|&i| i != next).unwrap();
    let stopping = Instant::now();
    apps[next].terminate();
    leader(&apps, &[last], TAKEOVER);
    let handover = stopping.elapsed();
    eprintln!("a new leader {handover:?} after a clean stop");
    assert!(
        handover < Duration::from_secs(14),
        "handover took {handover:?}"
    );
}

#[test]
fn a_leader_paused_past_its_lease_writes_nothing_as_leader_after_it_resumes() {
    let Some((_pg, url)) =
        store("a_leader_paused_past_its_lease_writes_nothing_as_leader_after_it_resumes")
    else {
        return;
    };
    let slack = Receiver::start();
    let rules = common::hard_guard_rules();
    let apps = replicas(&url, rules.path(), &config(&slack), &["node-a", "node-b"]);
    let paused = leader(&apps, &[0, 1], TAKEOVER);
    let other = 1 - paused;
    apps[paused].pause();
    let stopped = Instant::now();
    // Only the live replica is asked: a frozen one would not answer.
    leader(&apps, &[other], TAKEOVER + Duration::from_secs(5));
    let takeover = stopped.elapsed();
    eprintln!("a new leader {takeover:?} after the kill");
    assert!(takeover < TAKEOVER, "a new leader after {takeover:?}");

    // The new leader judges a burst and notifies while the old one is frozen.
    let start = (common::now_ms() - 3_600_000) / MINUTE * MINUTE;
    for minute in 0..=26 {
        post_minute(&apps[other], start, minute, 25);
    }
    wait("the opening delivered", Duration::from_secs(60), || {
        !accepted_with(&slack, "FIRING").is_empty()
    });
    apps[other].wait_outbox_polls(&["slack"]);
    let rows = |table: &str| count(&url, &format!("SELECT COUNT(*) FROM {table}"));
    let before = (
        rows("alerts"),
        rows("alert_transitions"),
        rows("outbox"),
        rows("analysis_snapshot"),
    );
    let snapshot_at = count(
        &url,
        "SELECT COALESCE(MAX(created_ms), 0) FROM analysis_snapshot",
    );

    // The old leader wakes believing it leads; it must notice, stop, and write nothing.
    apps[paused].resume();
    wait("the old leader stepping down", TAKEOVER, || {
        apps[paused].metric_opt("driftwarden_leader") == Some(0.0)
    });
    std::thread::sleep(WOKEN_GRACE);
    assert_eq!(
        (
            rows("alerts"),
            rows("alert_transitions"),
            rows("outbox"),
            rows("analysis_snapshot")
        ),
        before,
        "the old leader wrote rows"
    );
    assert_eq!(
        count(
            &url,
            "SELECT COALESCE(MAX(created_ms), 0) FROM analysis_snapshot"
        ),
        snapshot_at,
        "the old leader overwrote the snapshot"
    );
    assert_eq!(
        accepted_with(&slack, "FIRING").len(),
        1,
        "{:#?}",
        slack.accepted()
    );
    let log = apps[paused].log_text();
    assert!(
        log.contains("lease lost") || log.contains("could not be renewed in time"),
        "{log}"
    );
    assert_eq!(apps[other].metric_opt("driftwarden_leader"), Some(1.0));
}

/// Insert `n` consumed requests into a New API `logs` table in SQLite.
fn gateway_rows(path: &std::path::Path, n: usize) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(newapi_sqlite::NEWAPI_SCHEMA).unwrap();
    let tx = conn.transaction().unwrap();
    for _ in 0..n {
        tx.execute(
            "INSERT INTO logs (user_id, created_at, type, content, username, token_name, model_name, quota, \
             prompt_tokens, completion_tokens, use_time, is_stream, channel_id, \"group\", other) \
             VALUES (1, ?1, 2, '', 'alice', 'prod-key', 'gpt-4o', 1500, 900, 80, 2, 1, 3, 'default', '{}')",
            [common::now_ms() / 1000 - 60],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn a_gateway_database_is_followed_by_one_replica_at_a_time_and_taken_over_after_a_kill_9() {
    let Some((_pg, url)) = store(
        "a_gateway_database_is_followed_by_one_replica_at_a_time_and_taken_over_after_a_kill_9",
    ) else {
        return;
    };
    let gateway = tempfile::tempdir().unwrap();
    let logs = gateway.path().join("one-api.db");
    gateway_rows(&logs, 50);
    let config = format!(
        "[[gateway_db]]\nurl = \"sqlite://{}\"\npoll_ms = 100\nstart = \"first\"\n",
        logs.display()
    );
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let mut apps = replicas(
        &url,
        std::path::Path::new(rules),
        &config,
        &["node-a", "node-b"],
    );
    let events = || count(&url, "SELECT COUNT(*) FROM events");
    wait("the first 50 rows stored", Duration::from_secs(60), || {
        events() == 50
    });

    // One lease for the source, held by one of the two processes; only that one reads.
    let holder = |url: &str| -> (String, i64) {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let rows = c
            .query(
                "SELECT holder, token FROM leases WHERE name LIKE 'source:%'",
                &[],
            )
            .unwrap();
        assert_eq!(rows.len(), 1, "one source lease");
        (rows[0].get(0), rows[0].get(1))
    };
    let (first_holder, first_token) = holder(&url);
    let following = (0..2)
        .find(|&i| first_holder.contains(&format!("-{}-", apps[i].pid())))
        .unwrap_or_else(|| panic!("no replica holds {first_holder}"));
    let other = 1 - following;
    let last_id = format!(
        "driftwarden_gateway_db_last_id{{source=\"db:newapi:sqlite://{}#logs\"}}",
        logs.display()
    );
    assert_eq!(apps[following].metric_opt(&last_id), Some(50.0));
    assert_eq!(
        apps[other].metric_opt(&last_id),
        None,
        "the other replica reads nothing"
    );

    apps[following].kill9();
    let killed = Instant::now();
    gateway_rows(&logs, 30);
    wait(
        "the next 30 rows stored by the other replica",
        TAKEOVER + Duration::from_secs(10),
        || events() == 80,
    );
    eprintln!(
        "the source followed again {:?} after the kill",
        killed.elapsed()
    );
    let (next_holder, next_token) = holder(&url);
    assert!(
        next_holder.contains(&format!("-{}-", apps[other].pid())),
        "{next_holder}"
    );
    assert_eq!(next_token, first_token + 1);
    assert_eq!(apps[other].metric_opt(&last_id), Some(80.0));
    // Gateway rows are stored once: the cursor moved with them, under the lease.
    assert_eq!(events(), 80);
}

/// A first leader on a store that `import` filled (import migrates a fresh PostgreSQL
/// store first) builds its analysis from 300,000 stored events on its analysis thread
/// while its lease thread renews a 3 s lease: one tenure, no step-down, and it leads
/// once the analysis is built.
#[test]
fn a_leader_whose_resume_reads_a_long_backlog_keeps_its_lease() {
    const EVENTS: usize = 300_000;
    let Some((_pg, url)) = store("long_resume") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backlog.jsonl");
    let start = common::now_ms() - 3 * 3_600_000;
    let lines: String = (0..EVENTS)
        .map(|i| common::native_line(&format!("b{i}"), start + i as i64 * 10) + "\n")
        .collect();
    std::fs::write(&file, lines).unwrap();
    let import = std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .arg("import")
        .arg(&file)
        .env("DRIFTWARDEN_DB", &url)
        .env("DRIFTWARDEN_TOKEN", common::TOKEN)
        .env_remove("DRIFTWARDEN_CONFIG")
        .output()
        .expect("running driftwarden import");
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert_eq!(count(&url, "SELECT COUNT(*) FROM events"), EVENTS as i64);

    let app = TestApp::builder()
        .db_url(&url)
        .config("lease_seconds = 3\n")
        .spawn();
    wait("the analysis resumed", Duration::from_secs(120), || {
        app.get("/v1/stats").json::<Value>().unwrap()["analysis"]["resumed"]["events_refed"]
            .as_u64()
            .is_some()
    });
    // Two more renewals, read from the lease row: a lease the loop had failed to renew
    // meanwhile would have been lost and gained again by then.
    let renewed = || count(&url, "SELECT renewed_ms FROM leases WHERE name = 'leader'");
    let mut seen = vec![renewed()];
    wait(
        "two more renewals of the lease",
        Duration::from_secs(30),
        || {
            let now = renewed();
            if Some(&now) != seen.last() {
                seen.push(now);
            }
            seen.len() >= 3
        },
    );
    let log = app.log_text();
    assert_eq!(
        log.matches("lease gained").count(),
        1,
        "one tenure from the start:\n{log}"
    );
    assert!(
        !log.contains("could not be renewed in time") && !log.contains("giving the lease back"),
        "{log}"
    );
    assert!(
        log.contains("analysis built from the raw events kept"),
        "{log}"
    );
    assert_eq!(app.metric("driftwarden_leader"), 1.0);
}
