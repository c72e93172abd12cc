//! Scenario tests of the lanes, baselines and detectors: seeded simulated traffic
//! (weekly rhythm, several models, routes and tenants, late evals) is replayed
//! through the same pipeline `serve` runs, and each test asserts what fires and
//! what does not.

use std::path::Path;

use driftwarden::config::{Config, FileConfig, Overrides};
use driftwarden::demo::Story;
use driftwarden::domain::{Alert, AlertEvent, Kind, Scope};
use driftwarden::replay::{ReplayFiles, run};
use driftwarden::sim::{Profile, Scenario, scenarios, write_changes_jsonl, write_records_jsonl};

/// What a replay of one scenario produced.
struct Outcome {
    firing: Vec<Alert>,
    db: tempfile::TempDir,
}

impl Outcome {
    fn fired(&self, kind: Kind, scope: &[(&str, &str)]) -> Vec<&Alert> {
        let scope: Scope = scope
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.firing
            .iter()
            .filter(|a| a.kind == kind && a.scope == scope)
            .collect()
    }

    fn describe(&self) -> String {
        self.firing
            .iter()
            .map(|a| format!("{} {} {:?} {}", a.rule, a.kind.as_str(), a.scope, a.tier))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn replay_scenario(name: &str, seed: u64) -> Outcome {
    replay_scenario_with(name, seed, true)
}

fn replay_scenario_with(name: &str, seed: u64, keep_aggregates: bool) -> Outcome {
    let scenario = scenarios::by_name(name, Profile::default()).expect("a shipped scenario");
    let (out, events) = replay(&scenario, seed, keep_aggregates);
    assert!(
        events > 500_000,
        "the scenario is two weeks of traffic: {events} events"
    );
    out
}

/// Replay `scenario`'s traffic, evals and changes; the outcome and the event count.
fn replay(scenario: &Scenario, seed: u64, keep_aggregates: bool) -> (Outcome, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = dir.path().join("events.jsonl");
    let evals = dir.path().join("evals.jsonl");
    let changes = dir.path().join("changes.jsonl");
    let generator = scenario.generator(seed).expect("a valid profile");
    write_records_jsonl(generator, &events, Some(&evals)).expect("writing the log");
    write_changes_jsonl(&scenario.changes, &changes).expect("writing the changes");
    let overrides = Overrides {
        db: Some(dir.path().join("replay.db")),
        rules: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")),
        ..Overrides::default()
    };
    let config = Config::resolve(FileConfig::default(), overrides).expect("default config");
    let files = ReplayFiles {
        events,
        format: "native".into(),
        evals: Some(evals),
        changes: Some(changes),
        keep_raw: false,
        keep_aggregates,
    };
    let mut firing = Vec::new();
    let summary = run(&config, &files, |a| {
        if a.event == AlertEvent::Firing {
            firing.push(a.clone());
        }
    })
    .expect("replay runs");
    (Outcome { firing, db: dir }, summary.events)
}

#[test]
fn two_quiet_weeks_raise_nothing() {
    let out = replay_scenario("quiet", 11);
    assert!(
        out.firing.is_empty(),
        "quiet traffic fired:\n{}",
        out.describe()
    );
}

#[test]
fn an_announced_deploy_that_lengthens_prompts_raises_no_drift_and_yields_an_impact_report() {
    let out = replay_scenario("announced_deploy", 12);
    let on_route: Vec<&Alert> = out
        .firing
        .iter()
        .filter(|a| a.scope.get("route").is_some_and(|r| r == "summarize"))
        .collect();
    assert!(
        on_route.is_empty(),
        "the announced deploy raised drift:\n{}",
        out.describe()
    );
    let conn = rusqlite::Connection::open(out.db.path().join("replay.db")).expect("replay store");
    let impact: String = conn
        .query_row(
            "SELECT impact FROM change_events WHERE kind = 'deploy'",
            [],
            |r| r.get(0),
        )
        .expect("the deploy has an impact report");
    let report: serde_json::Value = serde_json::from_str(&impact).expect("report JSON");
    let tokens = report["signals"]
        .as_array()
        .expect("signals")
        .iter()
        .find(|s| s["signal"] == "tokens_per_request")
        .expect("tokens per request compared");
    assert_eq!(tokens["changed"], true, "{report:#}");
    assert!(tokens["shift"].as_f64().unwrap() > 0.3, "{report:#}");
    assert!(tokens["p_value"].as_f64().unwrap() < 0.001, "{report:#}");
}

#[test]
fn a_silent_model_version_change_with_a_price_rise_is_unannounced() {
    let out = replay_scenario("silent_model_bump", 13);
    let flagged = out
        .fired(Kind::UnannouncedChange, &[("model", "gpt-4o")])
        .len()
        + out.fired(Kind::CostDrift, &[("model", "gpt-4o")]).len();
    assert!(
        flagged > 0,
        "no unannounced_change or cost_drift on gpt-4o:\n{}",
        out.describe()
    );
    let conn = rusqlite::Connection::open(out.db.path().join("replay.db")).expect("replay store");
    let detected: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM change_events WHERE kind = 'model_bump' AND origin = 'detected'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        detected, 1,
        "the bump is recorded as an automatic change event"
    );
}

#[test]
fn a_slow_daily_cost_creep_raises_baseline_creep() {
    let out = replay_scenario("slow_creep", 14);
    let creep: Vec<&Alert> = out
        .firing
        .iter()
        .filter(|a| {
            a.kind == Kind::BaselineCreep && a.scope.get("route").is_some_and(|r| r == "extract")
        })
        .collect();
    assert!(
        !creep.is_empty(),
        "no baseline_creep on route=extract:\n{}",
        out.describe()
    );
    let elsewhere = out
        .firing
        .iter()
        .filter(|a| {
            a.kind == Kind::BaselineCreep && a.scope.get("route").is_some_and(|r| r != "extract")
        })
        .count();
    assert_eq!(elsewhere, 0, "creep on other routes:\n{}", out.describe());
}

#[test]
fn evals_stopping_while_cost_falls_raises_false_efficiency() {
    let out = replay_scenario("evals_off", 15);
    assert!(
        !out.fired(Kind::FalseEfficiency, &[("route", "classify")])
            .is_empty(),
        "no false_efficiency on route=classify:\n{}",
        out.describe()
    );
}

#[test]
fn one_tenants_spike_is_traffic_drift_on_that_tenant_only() {
    let out = replay_scenario("tenant_spike", 16);
    assert!(
        !out.fired(Kind::TrafficDrift, &[("tenant", "tenant-16")])
            .is_empty(),
        "no traffic_drift on tenant-16:\n{}",
        out.describe()
    );
    let wider: Vec<&Alert> = out
        .firing
        .iter()
        .filter(|a| matches!(a.kind, Kind::TrafficDrift | Kind::CostDrift))
        .filter(|a| a.scope.get("tenant").is_none_or(|t| t != "tenant-16"))
        .filter(|a| a.at_ms >= Profile::default().day(14.0))
        .collect();
    assert!(
        wider.is_empty(),
        "the spike leaked into other scopes: {wider:#?}"
    );

    // A temporary replay store keeps no aggregates: the alerts are the same.
    let lean = replay_scenario_with("tenant_spike", 16, false);
    let lines = |o: &Outcome| -> Vec<String> {
        o.firing
            .iter()
            .map(|a| serde_json::to_string(a).expect("an alert serializes"))
            .collect()
    };
    assert_eq!(lines(&lean), lines(&out));
    let aggregate_rows = |o: &Outcome| -> i64 {
        rusqlite::Connection::open(o.db.path().join("replay.db"))
            .expect("replay store")
            .query_row("SELECT COUNT(*) FROM agg_minute", [], |r| r.get(0))
            .expect("counting aggregate rows")
    };
    assert!(aggregate_rows(&out) > 0);
    assert_eq!(aggregate_rows(&lean), 0);
}

#[test]
fn lagged_evals_with_falling_scores_raise_quality_drift_on_that_route() {
    let out = replay_scenario("quality_drop", 17);
    assert!(
        !out.fired(Kind::QualityDrift, &[("route", "summarize")])
            .is_empty(),
        "no quality_drift on route=summarize:\n{}",
        out.describe()
    );
    let other_routes = out
        .firing
        .iter()
        .filter(|a| a.kind == Kind::QualityDrift)
        .filter(|a| a.scope.get("route").is_some_and(|r| r != "summarize"))
        .count();
    assert_eq!(other_routes, 0, "{}", out.describe());
}

#[test]
fn a_global_error_burst_pages() {
    let out = replay_scenario("error_burst", 18);
    let burst = out.fired(Kind::StructuralDrift, &[]);
    assert!(
        burst
            .iter()
            .any(|a| a.rule == "error-rate" && a.tier_rank == 1),
        "no page-tier error-rate alert on global:\n{}",
        out.describe()
    );
}

/// `driftwarden demo` ends its story at the minute it starts, so the story's buckets
/// fall differently on every run. Replayed from start minutes across a whole bucket,
/// every chapter's alert fires. At 07:34 and 07:44 the quiet spiking tenant's
/// request counts once read as a level change after the model bump (a median of
/// about 2 requests a bucket moves in whole steps), its baselines restarted, and
/// the spike a day later went unseen.
#[test]
fn the_demo_story_fires_every_chapter_whatever_minute_it_starts() {
    for start in ["07:30", "07:34", "07:37", "07:44"] {
        let now = chrono::DateTime::parse_from_rfc3339(&format!("2026-11-27T{start}:00Z"))
            .expect("a valid time")
            .timestamp_millis();
        let story = Story::new(now);
        let (out, _) = replay(&story.scenario, 1, false);
        let fired = |kind: Kind, scope: &[(&str, &str)]| !out.fired(kind, scope).is_empty();
        let tenant = story.spiking_tenant.as_str();
        assert!(
            fired(Kind::UnannouncedChange, &[("model", "gpt-4o")]),
            "{start}: no unannounced change on gpt-4o:\n{}",
            out.describe()
        );
        assert!(
            out.firing.iter().any(|a| a.kind == Kind::FalseEfficiency),
            "{start}: no false efficiency:\n{}",
            out.describe()
        );
        assert!(
            fired(Kind::TrafficDrift, &[("tenant", tenant)]),
            "{start}: no traffic drift on {tenant}:\n{}",
            out.describe()
        );
        assert!(
            out.fired(Kind::StructuralDrift, &[])
                .iter()
                .any(|a| a.rule == "error-rate" && a.tier_rank == 1),
            "{start}: no page-tier error-rate alert:\n{}",
            out.describe()
        );
    }
}
