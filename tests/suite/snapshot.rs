//! The analysis snapshot: an engine restored from its snapshot judges what follows
//! exactly as the engine that wrote it, the same state encodes to the same bytes, a
//! snapshot of another format is refused (newer) or rebuilt from raw events (older),
//! and a daemon stopped and started again resumes from its snapshot, re-feeding only
//! the stored events its snapshot left open.

use crate::common;

use std::path::{Path, PathBuf};

use common::{TestApp, append, native_line, now_ms};
use driftwarden::alerts::Delivery;
use driftwarden::analysis::{Analysis, AnalysisError, load_rules};
use driftwarden::config::{Config, FileConfig, Overrides};
use driftwarden::domain::{CostSource, UsageEvent};
use driftwarden::engine::{Cut, Engine, FORMAT_VERSION, Output, Tick};
use driftwarden::sim::{Profile, SimRecord, scenarios};
use driftwarden::store::snapshot::{self, SnapshotMeta};
use driftwarden::store::sql::{Db, SqlExt, Value as SqlValue};
use driftwarden::store::{Batch, Location, Store};

crate::on_postgres!(
    a_restarted_daemon_resumes_from_its_snapshot_and_refeeds_only_the_open_buckets,
    a_daemon_killed_while_it_reads_a_backlog_tells_what_one_replay_does,
    killed_while_answers_get_worse_it_tells_what_one_replay_does,
    killed_around_a_silent_gateway_it_tells_what_one_replay_does
);

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn config(db: &Path) -> Config {
    let overrides = Overrides {
        db: Some(db.display().to_string()),
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
    feed_with(engine, records, newest, |o| out.extend(described(o)));
    out
}

/// Feed `records` in steps as `feed` does, handing each step's output to `each`.
fn feed_with(
    engine: &mut Engine,
    records: &[SimRecord],
    newest: &mut i64,
    mut each: impl FnMut(Output),
) {
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
        each(engine.drain());
    }
}

fn drained(engine: &mut Engine) -> Vec<String> {
    described(engine.drain())
}

fn described(o: Output) -> Vec<String> {
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

/// A clean stop and start on a Saturday: the weekend's hour slots are still judged
/// against their seasonal (weekend) baseline, learned from the weekend a week before,
/// as by the daemon never stopped. A start that re-read only the last four days of
/// raw events (the way before snapshots) has no weekend day to learn from and falls
/// back to the recent window.
#[test]
fn a_restart_on_a_weekend_judges_its_hours_against_their_weekend_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("unused.db"));
    let scenario = scenarios::by_name("quiet", Profile::default()).unwrap();
    let profile = &scenario.profile;
    // Day 0 is a Monday: day 12 is the second Saturday. Stop at its noon; from 14:00
    // for an hour every request costs three times as much and its prompts are longer.
    let stop = profile.day(12.5);
    let (from, to) = (stop + 2 * 3_600_000, stop + 3 * 3_600_000);
    let records: Vec<SimRecord> = scenario
        .generator(5)
        .unwrap()
        .take_while(|r| record_ms(r) < profile.day(13.0))
        .map(|r| match r {
            SimRecord::Usage(mut e) if (from..to).contains(&e.ts_ms) => {
                e.prompt_tokens *= 3;
                e.cost_usd = e.cost_usd.map(|c| c * 3.0);
                e.list_cost_usd = e.list_cost_usd.map(|c| c * 3.0);
                SimRecord::Usage(e)
            }
            r => r,
        })
        .collect();
    let at = records.iter().position(|r| record_ms(r) >= stop).unwrap();
    let (before, after) = records.split_at(at - at % STEP);
    // (rule, scope, seasonal) of every finding judged while the hour lasts.
    let judged = |engine: &mut Engine, newest: &mut i64| {
        let mut seen = Vec::new();
        feed_with(engine, after, newest, |o| {
            for t in o.ticks.iter().filter(|t| (from..=to).contains(&t.at_ms)) {
                for f in &t.findings {
                    let seasonal = f.evidence.get("baseline").and_then(|b| b.get("seasonal"));
                    if let Some(seasonal) = seasonal.and_then(serde_json::Value::as_bool) {
                        seen.push((f.rule_name.clone(), format!("{:?}", f.labels), seasonal));
                    }
                }
            }
        });
        seen
    };

    let mut kept = engine(&config);
    let mut newest = i64::MIN;
    feed(&mut kept, before, &mut newest);
    let bytes = kept.snapshot(b"{}");
    let mut restarted = engine(&config);
    let (cut, _) = restarted.load(&bytes).expect("its own snapshot loads");
    refeed(&mut restarted, before, cut);
    let mut newest_restarted = newest;
    let expected = judged(&mut kept, &mut newest);
    let got = judged(&mut restarted, &mut newest_restarted);
    assert!(
        !got.is_empty(),
        "the dearer hour is found after the restart"
    );
    assert!(
        got.iter().all(|(_, _, seasonal)| *seasonal),
        "judged against the weekend slots after the restart: {got:?}"
    );
    assert_eq!(got, expected, "as the daemon never stopped");

    let mut four_days = engine(&config);
    let since = stop - 4 * 86_400_000;
    let recent: Vec<SimRecord> = before
        .iter()
        .filter(|r| record_ms(r) >= since)
        .cloned()
        .collect();
    let mut newest_cold = i64::MIN;
    feed(&mut four_days, &recent, &mut newest_cold);
    let cold = judged(&mut four_days, &mut newest_cold);
    assert!(
        !cold.is_empty(),
        "the dearer hour is found without a snapshot too"
    );
    assert!(
        cold.iter().all(|(_, _, seasonal)| !seasonal),
        "four days before a Saturday hold no weekend day: {cold:?}"
    );
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
    let mut analysis = Analysis::open(&config(&newer), Delivery::Count, None).unwrap();
    match analysis.resume(&newer.as_path().into(), now_ms()) {
        Err(e @ AnalysisError::Snapshot(_)) => {
            let text = e.to_string();
            assert!(text.contains("run a newer driftwarden"), "{text}");
        }
        other => panic!("a newer snapshot must be refused: {other:?}"),
    }

    let older = dir.path().join("older.db");
    let events = store_with_snapshot(&older, 30, FORMAT_VERSION - 1);
    let mut analysis = Analysis::open(&config(&older), Delivery::Count, None).unwrap();
    let resumed = analysis
        .resume(&older.as_path().into(), now_ms())
        .expect("rebuilt");
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
    let rebuilt = first["analysis"]["resumed"]["rebuilt_days"].as_f64();
    if app.on_postgres() {
        // A replica ingests before it leads: the leader rebuilds from what is stored
        // by then, at most the file's three hours.
        assert!(
            rebuilt.is_some_and(|days| days <= 180.0 / 1440.0 + 1e-9),
            "{first}"
        );
    } else {
        assert_eq!(
            rebuilt,
            Some(0.0),
            "an empty store: nothing to rebuild from"
        );
    }
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

    let (stored, _) = snapshot::read(&app.store())
        .unwrap()
        .expect("a stored snapshot");
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

const DAY: i64 = 86_400_000;

/// Two weeks of scenario `name` ending half a day ago, and its end.
fn scenario_records(name: &str) -> (Vec<SimRecord>, i64) {
    let profile = Profile {
        start_ms: (now_ms() - 16 * DAY).div_euclid(DAY) * DAY,
        days: 15.5,
        ..Profile::default()
    };
    let scenario = scenarios::by_name(name, profile).unwrap();
    let end = scenario.profile.start_ms + (scenario.profile.days * DAY as f64) as i64;
    (scenario.generator(11).unwrap().collect(), end)
}

fn record_ms(r: &SimRecord) -> i64 {
    match r {
        SimRecord::Usage(e) => e.ts_ms,
        SimRecord::Eval(e) => e.ts_ms,
    }
}

/// The data clock; raw events kept long enough to re-feed any of the scenario; an
/// alert line waits an hour of data time in its group, so a kill finds lines
/// waiting and a restart must keep their group's timing.
const SCENARIO_TOML: &str =
    "clock = \"data\"\nretention_days = 30\n[routing]\ngroup_wait_seconds = 3600\n";

/// `SCENARIO_TOML` on the store at `db`.
fn scenario_config(db: &Path) -> Config {
    let file: FileConfig = toml::from_str(SCENARIO_TOML).unwrap();
    let overrides = Overrides {
        db: Some(db.display().to_string()),
        rules: Some(rules_dir()),
        ..Overrides::default()
    };
    Config::resolve(file, overrides).expect("the scenario's config")
}

/// A daemon on the data clock tailing `events.jsonl` and `evals.jsonl` (written
/// from `records`) from the beginning.
fn data_clock_app(records: &[SimRecord]) -> TestApp {
    let builder = TestApp::builder()
        .tail("events.jsonl")
        .tail_as("evals.jsonl", "evals")
        .tail_start("beginning")
        .config(SCENARIO_TOML)
        // The marks of each snapshot written, for `kill_inside_a_snapshot_write`.
        .rust_log("info,driftwarden::analysis=debug");
    if common::on_pg() {
        // Replicas ingest whether or not one leads, and a first leader builds its
        // baselines from what is stored by then without judging it: let the leader
        // resume on an empty store, as a daemon on SQLite starts, then write.
        append(&builder.path("events.jsonl"), "");
        append(&builder.path("evals.jsonl"), "");
        let app = builder.spawn();
        append_records(&app, records);
        return app;
    }
    let (events, evals) = (builder.path("events.jsonl"), builder.path("evals.jsonl"));
    driftwarden::sim::write_records_jsonl(records.iter().cloned(), &events, Some(&evals)).unwrap();
    builder.spawn()
}

/// The log lines (debug, `driftwarden::analysis`) around each snapshot written:
/// encoding begins, and the step's transaction with it committed.
const SNAPSHOT_BEGINS: &str = "analysis snapshot begins";
const SNAPSHOT_STORED: &str = "analysis snapshot stored";

/// Kill the daemon with SIGKILL while it writes a snapshot: after its log says one
/// began and before it says it was stored. A kill that lands elsewhere restarts the
/// daemon and tries again; returns how many kills it took.
fn kill_inside_a_snapshot_write(app: &mut TestApp) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let last_mark = |text: &str| {
        let begins = text.rfind(SNAPSHOT_BEGINS);
        let stored = text.rfind(SNAPSHOT_STORED);
        match (begins, stored) {
            (Some(b), Some(s)) => Some(b > s),
            (b, _) => b.map(|_| true),
        }
    };
    let mut log = std::fs::File::open(app.path("daemon.stderr.log")).expect("the daemon's log");
    for kills in 1..=50 {
        let mut offset = log.seek(SeekFrom::End(0)).unwrap();
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // Lines are written whole, one write each: a chunk read ends at a line's end
        // or mid-line, and a marker cut in two is read whole on the next poll.
        while last_mark(&seen) != Some(true) && std::time::Instant::now() < deadline {
            let mut chunk = String::new();
            log.seek(SeekFrom::Start(offset)).unwrap();
            offset += log.read_to_string(&mut chunk).unwrap() as u64;
            seen.push_str(&chunk);
            let mut cut = seen.len().saturating_sub(4096);
            while !seen.is_char_boundary(cut) {
                cut += 1;
            }
            seen.drain(..cut);
        }
        app.kill9();
        let mut rest = String::new();
        log.seek(SeekFrom::Start(offset)).unwrap();
        log.read_to_string(&mut rest).unwrap();
        seen.push_str(&rest);
        if last_mark(&seen) == Some(true) {
            return kills;
        }
        app.restart();
    }
    panic!("no kill landed inside a snapshot write in 50 tries");
}

/// Append `records` to the files `data_clock_app` tails (while it is stopped).
fn append_records(app: &TestApp, records: &[SimRecord]) {
    let (events, evals) = (app.path("part-events.jsonl"), app.path("part-evals.jsonl"));
    driftwarden::sim::write_records_jsonl(records.iter().cloned(), &events, Some(&evals)).unwrap();
    for (part, tailed) in [(events, "events.jsonl"), (evals, "evals.jsonl")] {
        append(&app.path(tailed), &std::fs::read_to_string(part).unwrap());
    }
}

/// The records in `[from, to)`.
fn between(records: &[SimRecord], from: i64, to: i64) -> Vec<SimRecord> {
    records
        .iter()
        .filter(|r| (from..to).contains(&record_ms(r)))
        .cloned()
        .collect()
}

/// Replay the whole scenario into the store at `db`, from files written in `dir`.
fn replay_into(dir: &Path, records: &[SimRecord], db: &Path) -> driftwarden::replay::ReplaySummary {
    let (events, evals) = (dir.join("all-events.jsonl"), dir.join("all-evals.jsonl"));
    driftwarden::sim::write_records_jsonl(records.iter().cloned(), &events, Some(&evals)).unwrap();
    let files = driftwarden::replay::ReplayFiles {
        events,
        format: "native".into(),
        evals: Some(evals),
        changes: None,
        keep_raw: false,
        keep_aggregates: true,
    };
    driftwarden::replay::run(&scenario_config(db), &files, |_| {}).unwrap()
}

/// The messages a replay counted before `end_ms`, as `outbox_messages` shows them.
fn sent_before(summary: &driftwarden::replay::ReplaySummary, end_ms: i64) -> Vec<String> {
    summary
        .sent
        .iter()
        .filter(|s| s.at_ms < end_ms)
        .map(|s| {
            format!(
                "{} {} {}",
                s.at_ms,
                s.channel,
                serde_json::to_string(&s.message).unwrap()
            )
        })
        .collect()
}

/// The alert notifications a daemon put in its outbox before `end_ms`: time,
/// channel and message.
fn outbox_messages(db: &Db, end_ms: i64) -> Vec<String> {
    db.rows(
        "SELECT created_ms, channel, message FROM outbox WHERE created_ms < ?1 ORDER BY id",
        &[SqlValue::Int(end_ms)],
        |r| Ok((r.int(0)?, r.text(1)?, r.text(2)?)),
    )
    .unwrap()
    .into_iter()
    .filter(|(_, _, message)| {
        let m: serde_json::Value = serde_json::from_str(message).unwrap();
        !m["tier"].is_null()
    })
    .map(|(at, channel, message)| format!("{at} {channel} {message}"))
    .collect()
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
fn decisions(db: &Db, end_ms: i64) -> (Vec<String>, Vec<String>) {
    let lines = db
        .rows(
            "SELECT line FROM alert_transitions WHERE at_ms < ?1 ORDER BY id",
            &[SqlValue::Int(end_ms)],
            |r| r.text(0),
        )
        .unwrap();
    let reports = db
        .rows(
            "SELECT ts_ms, kind, scope, origin, impact FROM change_events WHERE ts_ms < ?1
             ORDER BY ts_ms, kind, scope",
            &[SqlValue::Int(end_ms)],
            |r| {
                Ok(format!(
                    "{} {} {} {} {}",
                    r.int(0)?,
                    r.text(1)?,
                    r.text(2)?,
                    r.text(3)?,
                    r.opt_text(4)?.unwrap_or_else(|| "-".into())
                ))
            },
        )
        .unwrap();
    (lines, reports)
}

/// The store of the SQLite file at `path`.
fn sqlite(path: &Path) -> Db {
    Location::Sqlite(path.to_path_buf()).reader().unwrap()
}

/// The kill -9 equivalence of issue 13: a daemon on the data clock, killed at
/// several moments while it reads two weeks of a scenario (mid-backlog, between two
/// snapshots, while an incident's line waits in its group), stores exactly the alert
/// transitions, change events with their impact reports and notifications one
/// uninterrupted replay of the same files gives. A tenant's traffic spikes.
#[test]
fn a_daemon_killed_while_it_reads_a_backlog_tells_what_one_replay_does() {
    killed_and_replayed("tenant_spike", true);
}

/// The eval lane: a route's answers get worse, and its scores arrive an hour late
/// (some after their bucket settles). The tailed evals file is read ahead of the
/// events, replay releases evals at the events' clock: both count a score by its own
/// time, so the pace at which the files are read changes nothing.
#[test]
fn killed_while_answers_get_worse_it_tells_what_one_replay_does() {
    killed_and_replayed("quality_drop", true);
}

/// Silence: the gateway stops sending for a while. On the data clock a silence is
/// judged when the data after it arrives, all at once, so no line waits in a group
/// at a moment the data reaches.
#[test]
fn killed_around_a_silent_gateway_it_tells_what_one_replay_does() {
    killed_and_replayed("gateway_down", false);
}

/// Kill a data-clock daemon reading `scenario` at several points (one with a line
/// waiting in its group when `waits`), and compare with one replay.
fn killed_and_replayed(scenario: &str, waits: bool) {
    let (records, end) = scenario_records(scenario);
    let backlog = end - 8 * DAY;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replay.db");
    let summary = replay_into(dir.path(), &records, &db);
    // The first alert message after the backlog: half an hour before it is sent
    // its line waits in its group (an hour of data time), which a restart must keep.
    let sent = summary
        .sent
        .iter()
        .map(|s| s.at_ms)
        .find(|&at| at > backlog + 3_600_000)
        .unwrap_or_else(|| panic!("{scenario}: the drift is told"));
    let waiting = sent - 30 * 60_000;
    // The data clock stands at the newest record written.
    let reached = between(&records, backlog, waiting)
        .iter()
        .filter(|r| matches!(r, SimRecord::Usage(_)))
        .map(record_ms)
        .max()
        .expect("traffic after the backlog");

    let mut killed = data_clock_app(&between(&records, i64::MIN, backlog));
    // A kill while a snapshot is written, wherever the reading of the backlog has
    // got to, and one at the end of what was written.
    let kills = kill_inside_a_snapshot_write(&mut killed);
    eprintln!("{scenario}: killed inside a snapshot write after {kills} kill(s)");
    killed.restart();
    wait_judged(&killed, backlog - 10 * 60_000);
    killed.kill9();
    append_records(&killed, &between(&records, backlog, waiting));
    killed.restart();
    wait_judged(&killed, reached);
    if waits {
        assert!(
            killed.sql_i64("SELECT COUNT(*) FROM notify_pending") > 0,
            "{scenario}: killed with a line waiting in its group"
        );
    }
    killed.kill9();
    append_records(&killed, &between(&records, waiting, i64::MAX));
    killed.restart();
    let resumed = stats_json(&killed)["analysis"]["resumed"].clone();
    assert!(resumed["snapshot"].is_object(), "{resumed}");
    assert!(
        resumed["rejudged_to_ms"].is_null(),
        "on the data clock every step is snapshotted: {resumed}"
    );
    // The last hours' eval buckets settle only once the replay ends: compare before.
    let compared = end - 6 * 3_600_000;
    wait_judged(&killed, compared + 4 * 3_600_000);
    killed.terminate();

    let (lines, reports) = decisions(&sqlite(&db), compared);
    let (got_lines, got_reports) = decisions(&killed.store(), compared);
    let extra: Vec<&String> = got_lines
        .iter()
        .filter(|l| !lines.contains(l))
        .take(6)
        .collect();
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| !got_lines.contains(l))
        .take(6)
        .collect();
    assert_eq!(
        got_lines.len(),
        lines.len(),
        "{scenario}: as many transitions\nEXTRA {extra:#?}\nMISSING {missing:#?}"
    );
    for (i, (g, e)) in got_lines.iter().zip(&lines).enumerate() {
        assert_eq!(g, e, "{scenario}: transition {i} differs");
    }
    assert_eq!(got_reports, reports, "{scenario}: change-impact reports");
    // Each restart resumes from a backlog of hundreds of thousands of events, longer
    // than a test lease's renewal margin: the lease must stay renewed meanwhile.
    let log = killed.log_text();
    assert!(
        !log.contains("lease could not be renewed in time")
            && !log.contains("giving the lease back"),
        "{scenario}: the leader stepped down:\n{log}"
    );
    assert_eq!(
        outbox_messages(&killed.store(), compared),
        sent_before(&summary, compared),
        "{scenario}: notifications"
    );
}

/// Issue 13's replay parity: `serve` (on the data clock) reads the first ten days
/// of a scenario and is stopped; `replay --db` on its store, given the whole files,
/// goes on from its snapshot (skipping what it counted) and ends with exactly the
/// transitions, reports and notifications of one replay of the whole files.
#[test]
fn a_replay_goes_on_where_serve_stopped_as_one_replay_of_everything() {
    let (records, end) = scenario_records("tenant_spike");
    let stop = end - 5 * DAY;
    let first: Vec<SimRecord> = records
        .iter()
        .filter(|r| record_ms(r) < stop)
        .cloned()
        .collect();
    let mut app = data_clock_app(&first);
    wait_judged(&app, stop - 3_600_000);
    app.terminate();
    let told_by_serve = outbox_messages(&app.store(), i64::MAX);

    let dir = tempfile::tempdir().unwrap();
    let continued = replay_into(dir.path(), &records, &app.db);
    let resumed = continued
        .resumed
        .clone()
        .expect("the store's analysis was resumed");
    assert!(resumed.snapshot.is_some(), "{resumed:?}");
    assert!(continued.skipped > 0, "what serve counted is skipped");
    let whole = dir.path().join("whole.db");
    let reference = replay_into(dir.path(), &records, &whole);

    let compared = end - 6 * 3_600_000;
    let expected = decisions(&sqlite(&whole), compared);
    let got = decisions(&app.store(), compared);
    assert!(
        expected.0.iter().any(|l| l.contains("\"firing\"")),
        "the spike fires after the stop"
    );
    let short = |l: &String| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        format!("{} {} {} {}", v["at"], v["event"], v["rule"], v["scope"])
    };
    let missing: Vec<String> = expected
        .0
        .iter()
        .filter(|l| !got.0.contains(l))
        .map(short)
        .collect();
    let extra: Vec<String> = got
        .0
        .iter()
        .filter(|l| !expected.0.contains(l))
        .map(short)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    for (i, (g, e)) in got.0.iter().zip(&expected.0).enumerate() {
        assert_eq!(g, e, "transition {i} differs");
    }
    assert_eq!(got.1, expected.1, "change-impact reports");
    let mut told = told_by_serve;
    told.extend(sent_before(&continued, compared));
    assert_eq!(told, sent_before(&reference, compared), "notifications");
}
