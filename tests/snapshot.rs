//! The analysis snapshot: an engine restored from its snapshot judges what follows
//! exactly as the engine that wrote it, the same state encodes to the same bytes, a
//! snapshot of another format is refused (newer) or rebuilt from raw events (older),
//! and a daemon stopped and started again resumes from its snapshot, re-feeding only
//! the stored events its snapshot left open.

mod common;

use std::path::{Path, PathBuf};

use common::{TestApp, append, native_line, now_ms};
use driftwarden::alerts::Delivery;
use driftwarden::analysis::{Analysis, AnalysisError, load_rules};
use driftwarden::config::{Config, FileConfig, Overrides};
use driftwarden::domain::{CostSource, UsageEvent};
use driftwarden::engine::{Cut, Engine, FORMAT_VERSION, Tick};
use driftwarden::sim::{Profile, SimRecord, scenarios};
use driftwarden::store::snapshot::{self, SnapshotMeta};
use driftwarden::store::{Batch, Store};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn config(db: &Path) -> Config {
    let overrides = Overrides {
        db: Some(db.to_path_buf()),
        rules: Some(rules_dir()),
        ..Overrides::default()
    };
    Config::resolve(FileConfig::default(), overrides).expect("default config")
}

fn engine(config: &Config) -> Engine {
    let (_, rules) = load_rules(config, &rules_dir()).expect("the shipped rules");
    Engine::new(config.engine.clone(), rules.rules).expect("default settings")
}

/// Records fed per step of the clock, as a replay's batch.
const STEP: usize = 2_000;

/// Feed `records` in steps, advancing to the newest event time after each; the
/// ticks, detected changes and reports produced, as text.
fn feed(engine: &mut Engine, records: &[SimRecord], newest: &mut i64) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in records.chunks(STEP) {
        for r in chunk {
            match r {
                SimRecord::Usage(e) => {
                    *newest = (*newest).max(e.ts_ms);
                    engine.observe_event(e);
                }
                SimRecord::Eval(e) => engine.observe_eval(e),
            }
        }
        engine.advance(*newest);
        out.extend(drained(engine));
    }
    out
}

fn drained(engine: &mut Engine) -> Vec<String> {
    let o = engine.drain();
    let ticks = o.ticks.iter().map(|t: &Tick| format!("{t:?}"));
    let changes = o.changes.iter().map(|c| format!("{c:?}"));
    let reports = o.reports.iter().map(|r| format!("{r:?}"));
    ticks.chain(changes).chain(reports).collect()
}

/// Re-feed what the snapshot left out, in the order it first came: the events of
/// the buckets still open and the evals after the newest counted.
fn refeed(engine: &mut Engine, records: &[SimRecord], cut: Cut) {
    for r in records {
        match r {
            SimRecord::Usage(e) if e.ts_ms >= cut.events_from => engine.observe_event(e),
            SimRecord::Eval(e) if e.ts_ms > cut.evals_after_ms => engine.observe_eval(e),
            _ => {}
        }
    }
}

#[test]
fn an_engine_restored_from_its_snapshot_judges_what_follows_as_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("unused.db"));
    let scenario = scenarios::by_name("tenant_spike", Profile::default()).unwrap();
    let records: Vec<SimRecord> = scenario.generator(7).unwrap().collect();
    // Cut an hour into the spike: an alert is open, warm-ups and steps run, evals of
    // the last hours are waiting to settle.
    let spike = scenario.profile.day(14.0) + 11 * 3_600_000;
    let at = records
        .iter()
        .position(|r| matches!(r, SimRecord::Usage(e) if e.ts_ms >= spike))
        .unwrap();
    let cut_index = at - at % STEP;
    let (before, after) = records.split_at(cut_index);

    let mut original = engine(&config);
    let mut newest = i64::MIN;
    feed(&mut original, before, &mut newest);
    let bytes = original.snapshot(b"{}");

    let mut restored = engine(&config);
    let (cut, stage) = restored.load(&bytes).expect("its own snapshot loads");
    assert_eq!(
        restored.snapshot(&stage),
        bytes,
        "decoding and encoding again gives the same bytes"
    );
    assert!(
        cut.events_from <= newest && cut.events_from > newest - 3_600_000,
        "the open buckets are the last minutes: {cut:?}, newest {newest}"
    );
    refeed(&mut restored, before, cut);

    let mut newest_restored = newest;
    let expected = feed(&mut original, after, &mut newest);
    let got = feed(&mut restored, after, &mut newest_restored);
    original.end_of_data(newest);
    restored.end_of_data(newest);
    let (expected_end, got_end) = (drained(&mut original), drained(&mut restored));
    let tenant = format!(
        "\"tenant\": \"{}\"",
        scenario
            .profile
            .tenant_name(scenario.profile.tenants * 3 / 4)
    );
    assert!(
        expected
            .iter()
            .any(|t| t.contains("rule_name") && t.contains(&tenant)),
        "the spike is judged after the cut, so the comparison covers an open alert"
    );
    assert_eq!(expected.len(), got.len(), "as many evaluations");
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(e, g, "evaluation {i} after the cut differs");
    }
    assert_eq!(expected_end, got_end);
}

#[test]
fn a_snapshot_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("unused.db"));
    let mut e = engine(&config);
    e.observe_event(&event("a", 0));
    e.advance(3_600_000);
    drop(e.drain());
    let bytes = e.snapshot(&[]);
    let with_version = |v: u32| {
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        b
    };
    let newer = engine(&config)
        .load(&with_version(FORMAT_VERSION + 1))
        .unwrap_err()
        .to_string();
    assert!(newer.contains("newer than this driftwarden"), "{newer}");
    assert!(newer.contains("run a newer driftwarden"), "{newer}");
    let older = engine(&config)
        .load(&with_version(FORMAT_VERSION - 1))
        .unwrap_err()
        .to_string();
    assert!(older.contains("older than this driftwarden"), "{older}");
    let garbage = engine(&config)
        .load(b"not a snapshot")
        .unwrap_err()
        .to_string();
    assert!(garbage.contains("no snapshot header"), "{garbage}");
}

fn event(id: &str, ts_ms: i64) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        ts_ms,
        model: "gpt-4o".into(),
        resolved_model: None,
        provider: Some("openai".into()),
        route: Some("chat".into()),
        tenant: Some("team-a".into()),
        prompt_tokens: 120,
        completion_tokens: 30,
        cached_tokens: 0,
        cost_usd: Some(0.0006),
        cost_source: CostSource::Gateway,
        list_cost_usd: None,
        latency_ms: Some(420),
        ttft_ms: None,
        status: Some(200),
        finish_reason: Some("stop".into()),
        error_type: None,
    }
}

/// A store holding `hours` of events, one a minute, ending now, and a snapshot row
/// of format `version`.
fn store_with_snapshot(db: &Path, hours: i64, version: u32) -> i64 {
    let mut store = Store::open(db).unwrap();
    let mut batch = Batch::new("test", "native");
    let end = now_ms();
    for m in 0..hours * 60 {
        batch.events.push(event(&format!("e{m}"), end - m * 60_000));
    }
    store.commit(&batch, end).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(db).unwrap();
    let meta = SnapshotMeta {
        format_version: version,
        watermark_ms: end,
        written_ms: end,
        write_ms: 1,
        bytes: 8,
    };
    let mut bytes = b"DWAS".to_vec();
    bytes.extend_from_slice(&version.to_le_bytes());
    snapshot::write(&conn, &meta, &bytes).unwrap();
    hours * 60
}

#[test]
fn a_start_refuses_a_newer_snapshot_and_rebuilds_from_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.db");
    store_with_snapshot(&newer, 1, FORMAT_VERSION + 1);
    let mut analysis = Analysis::open(&config(&newer), Delivery::Count).unwrap();
    match analysis.resume(&newer, now_ms()) {
        Err(e @ AnalysisError::Snapshot(_)) => {
            let text = e.to_string();
            assert!(text.contains("run a newer driftwarden"), "{text}");
        }
        other => panic!("a newer snapshot must be refused: {other:?}"),
    }

    let older = dir.path().join("older.db");
    let events = store_with_snapshot(&older, 30, FORMAT_VERSION - 1);
    let mut analysis = Analysis::open(&config(&older), Delivery::Count).unwrap();
    let resumed = analysis.resume(&older, now_ms()).expect("rebuilt");
    assert_eq!(resumed.events_refed, events as u64, "every stored event");
    let why = resumed
        .not_loaded
        .expect("says why the snapshot was not used");
    assert!(why.contains("older than this driftwarden"), "{why}");
    let days = resumed.rebuilt_days.expect("rebuilt from raw events");
    assert!((days - 30.0 / 24.0).abs() < 0.01, "{days}");
    // The rebuilt state replaced the old snapshot.
    let conn = driftwarden::store::open_reader(&older).unwrap();
    let (meta, _) = snapshot::read(&conn).unwrap().expect("a snapshot");
    assert_eq!(meta.format_version, FORMAT_VERSION);
}

fn stats_json(app: &TestApp) -> serde_json::Value {
    app.get("/v1/stats").json().expect("stats JSON")
}

#[test]
fn a_restarted_daemon_resumes_from_its_snapshot_and_refeeds_only_the_open_buckets() {
    // Three hours of requests, one a minute, ending a minute ago, in the file the
    // daemon tails from its start: the buckets up to the last quarter hour close (and
    // are snapshotted), the newest stay open.
    let builder = TestApp::builder()
        .tail("gateway.jsonl")
        .tail_start("beginning");
    let end = now_ms() - 60_000;
    let lines: String = (0..180)
        .map(|m| native_line(&format!("r{m}"), end - (179 - m) * 60_000) + "\n")
        .collect();
    append(&builder.path("gateway.jsonl"), &lines);
    let mut app = builder.spawn();
    let first = stats_json(&app);
    assert_eq!(
        first["analysis"]["resumed"]["rebuilt_days"], 0.0,
        "an empty store: nothing to rebuild from"
    );
    app.wait_stats("the events stored", |s| s.events == 180);
    let mut last = serde_json::Value::Null;
    let covered = std::time::Instant::now();
    while last["analysis"]["snapshot"]["watermark_ms"]
        .as_i64()
        .is_none_or(|w| w < end)
    {
        assert!(
            covered.elapsed() < common::WAIT,
            "no snapshot covering the stored events: {last}\n{}",
            app.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
        last = stats_json(&app);
    }
    let bytes = app.metric("driftwarden_snapshot_bytes");
    assert!(bytes > 0.0, "the snapshot's size is a metric");
    app.terminate();

    let conn = driftwarden::store::open_reader(&app.db).unwrap();
    let (stored, _) = snapshot::read(&conn).unwrap().expect("a stored snapshot");
    drop(conn);
    app.restart();
    let resumed = stats_json(&app)["analysis"]["resumed"].clone();
    assert_eq!(
        resumed["snapshot"]["watermark_ms"].as_i64(),
        Some(stored.watermark_ms),
        "{resumed}"
    );
    assert!(resumed["rebuilt_days"].is_null(), "{resumed}");
    let from = resumed["events_from_ms"]
        .as_i64()
        .expect("where re-feeding began");
    let open = app.sql_i64(&format!(
        "SELECT COUNT(*) FROM events WHERE ts_ms >= {from}"
    ));
    let refed = resumed["events_refed"].as_i64().unwrap();
    assert_eq!(
        refed, open,
        "only the events of the buckets left open: {resumed}"
    );
    assert!(refed > 0 && refed < 180, "{resumed}");
    let log = app.log_text();
    assert!(log.contains("analysis resumed from its snapshot"), "{log}");
}

/// A daemon on the data clock tailing a scenario's events and evals from the
/// beginning (raw events kept long enough to re-feed any of it); the files' paths
/// and the time its data ends.
fn scenario_app() -> (TestApp, PathBuf, PathBuf, i64) {
    const DAY: i64 = 86_400_000;
    let profile = Profile {
        start_ms: (now_ms() - 16 * DAY).div_euclid(DAY) * DAY,
        days: 15.5,
        ..Profile::default()
    };
    let scenario = scenarios::by_name("tenant_spike", profile).unwrap();
    let builder = TestApp::builder()
        .tail("events.jsonl")
        .tail_as("evals.jsonl", "evals")
        .tail_start("beginning")
        .config("clock = \"data\"\nretention_days = 30\n");
    let (events, evals) = (builder.path("events.jsonl"), builder.path("evals.jsonl"));
    driftwarden::sim::write_records_jsonl(scenario.generator(11).unwrap(), &events, Some(&evals))
        .unwrap();
    let end = scenario.profile.start_ms + (scenario.profile.days * DAY as f64) as i64;
    (builder.spawn(), events, evals, end)
}

/// Wait (up to two minutes: a backlog of two weeks) until the analysis has judged
/// every bucket before `data_ms`.
fn wait_judged(app: &TestApp, data_ms: i64) {
    let started = std::time::Instant::now();
    loop {
        let w = stats_json(app)["analysis"]["watermark_ms"].as_i64();
        if w.is_some_and(|w| w >= data_ms) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the analysis did not reach {data_ms} (at {w:?})\n{}",
            app.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Every alert transition stored in `conn` whose bucket is before `end_ms` (its
/// whole line: event, rule, scope, bucket time, tier, summary, evidence), in order,
/// and every change-impact report.
fn decisions(conn: &rusqlite::Connection, end_ms: i64) -> (Vec<String>, Vec<String>) {
    let strings = |sql: &str| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([end_ms], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    (
        strings("SELECT line FROM alert_transitions WHERE at_ms < ?1 ORDER BY id"),
        strings(
            "SELECT ts_ms || ' ' || kind || ' ' || scope || ' ' || origin || ' '
                    || COALESCE(impact, '-')
             FROM change_events WHERE ts_ms < ?1 ORDER BY ts_ms, kind, scope",
        ),
    )
}

/// The kill -9 equivalence of issue 13: a daemon on the data clock, killed at
/// several moments while it reads two weeks of a scenario (mid-backlog, between two
/// snapshots, while the spike's incident is open), stores exactly the alert
/// transitions, change-impact reports and notifications one uninterrupted replay of
/// the same files gives.
#[test]
fn a_daemon_killed_while_it_reads_a_backlog_tells_what_one_replay_does() {
    let (mut killed, events, evals, end) = scenario_app();
    let spike = end - 36 * 3_600_000 + 90 * 60_000;
    for at in [
        end - 8 * 86_400_000,
        end - 3 * 86_400_000,
        spike,
        spike + 3_600_000,
    ] {
        wait_judged(&killed, at);
        killed.kill9();
        killed.restart();
        let resumed = stats_json(&killed)["analysis"]["resumed"].clone();
        assert!(resumed["snapshot"].is_object(), "{resumed}");
        assert!(
            resumed["rejudged_to_ms"].is_null(),
            "on the data clock every step is snapshotted: {resumed}"
        );
    }
    // The last hours' eval buckets settle only once the replay ends: compare before.
    let compared = end - 6 * 3_600_000;
    wait_judged(&killed, compared + 4 * 3_600_000);
    killed.terminate();

    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("replay.db"));
    let files = driftwarden::replay::ReplayFiles {
        events,
        format: "native".into(),
        evals: Some(evals),
        changes: None,
        keep_raw: false,
        keep_aggregates: false,
    };
    let summary = driftwarden::replay::run(&config, &files, |_| {}).unwrap();
    let replayed = rusqlite::Connection::open(&config.db).unwrap();
    let (lines, reports) = decisions(&replayed, compared);
    let sent: Vec<String> = summary
        .sent
        .iter()
        .filter(|s| s.at_ms < compared)
        .map(|s| {
            format!(
                "{} {} {}",
                s.at_ms,
                s.channel,
                serde_json::to_string(&s.message).unwrap()
            )
        })
        .collect();

    let (got_lines, got_reports) = decisions(&killed.sql(), compared);
    let got_sent: Vec<String> = {
        let conn = killed.sql();
        let mut stmt = conn
            .prepare(
                "SELECT created_ms || ' ' || channel || ' ' || message FROM outbox
                 WHERE created_ms < ?1 AND json_extract(message, '$.tier') IS NOT NULL ORDER BY id",
            )
            .unwrap();
        stmt.query_map([compared], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        lines.iter().any(|l| l.contains("\"firing\"")),
        "the spike fires: {lines:?}"
    );
    assert!(!sent.is_empty(), "the spike is told");
    assert_eq!(got_lines.len(), lines.len(), "as many transitions");
    for (i, (g, e)) in got_lines.iter().zip(&lines).enumerate() {
        assert_eq!(g, e, "transition {i} differs");
    }
    assert_eq!(got_reports, reports, "change-impact reports");
    assert_eq!(got_sent, sent, "notifications");
}
