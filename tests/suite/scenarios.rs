//! The scenario suite: seeded simulated traffic (weekly rhythm, several models,
//! routes and tenants, late evals) with planted drifts is replayed through the same
//! pipeline `serve` runs, and what a team would have received is scored against each
//! scenario's ground truth (`Scenario::truth`): recall within each incident's
//! deadline, false alarms, the messages each channel got after grouping and budgets,
//! and tier errors.

use std::path::Path;

use driftwarden::config::{Config, FileConfig, Overrides};
use driftwarden::demo::Story;
use driftwarden::domain::{Alert, AlertEvent, ChangeEvent, ChangeKind, Kind};
use driftwarden::replay::{ReplayFiles, ReplaySummary, run};
use driftwarden::sim::{
    Profile, Scenario, Score, Truth, scenarios, write_changes_jsonl, write_records_jsonl,
};
use driftwarden::tiers::Tiers;

/// What a replay of one scenario produced, scored against its truth.
struct Outcome {
    lines: Vec<Alert>,
    summary: ReplaySummary,
    score: Score,
    db: tempfile::TempDir,
}

impl Outcome {
    fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.lines.iter().filter(|a| a.event == AlertEvent::Firing)
    }

    /// Messages sent to `channel` whose tier is `tier`.
    fn messages(&self, channel: &str, tier: &str) -> usize {
        self.summary
            .sent
            .iter()
            .filter(|s| s.channel == channel && s.message.tier.as_deref() == Some(tier))
            .count()
    }

    fn describe(&self) -> String {
        let lines: Vec<String> = self
            .lines
            .iter()
            .map(|a| {
                format!(
                    "{} {:?} {} {} {:?} {} members={}",
                    a.at_ms,
                    a.event,
                    a.rule,
                    a.kind.as_str(),
                    a.scope,
                    a.tier,
                    a.members.len()
                )
            })
            .collect();
        let sent: Vec<String> = self
            .summary
            .sent
            .iter()
            .map(|s| format!("{} {} {}", s.at_ms, s.channel, s.message.title))
            .collect();
        format!(
            "{}\nlines:\n{}\nmessages:\n{}",
            self.score.report(),
            lines.join("\n"),
            sent.join("\n")
        )
    }
}

fn rules_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

/// Replay `scenario`'s traffic, evals and changes, and score it.
fn replay(scenario: &Scenario, seed: u64, keep_aggregates: bool) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = dir.path().join("events.jsonl");
    let evals = dir.path().join("evals.jsonl");
    let changes = dir.path().join("changes.jsonl");
    let generator = scenario.generator(seed).expect("a valid profile");
    write_records_jsonl(generator, &events, Some(&evals)).expect("writing the log");
    write_changes_jsonl(&scenario.changes, &changes).expect("writing the changes");
    let overrides = Overrides {
        db: Some(dir.path().join("replay.db").display().to_string()),
        rules: Some(rules_dir()),
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
    let mut lines = Vec::new();
    let summary = run(&config, &files, |a| lines.push(a.clone())).expect("replay runs");
    let tiers: Vec<String> = Tiers::load(&rules_dir())
        .expect("the shipped tiers")
        .defs()
        .iter()
        .map(|d| d.tier.name.clone())
        .collect();
    let span = summary.span_ms.expect("events were replayed");
    let score = Score::new(&scenario.truth, &lines, &summary.sent, &tiers, span);
    Outcome {
        lines,
        summary,
        score,
        db: dir,
    }
}

fn shipped(name: &str) -> Scenario {
    scenarios::by_name(name, Profile::default()).expect("a shipped scenario")
}

/// The targets every scenario meets: every incident found within its deadline and
/// notified within its tier window, at most one message per incident per day after
/// its first, and no false alarm that reaches a channel.
fn assert_targets(name: &str, out: &Outcome) {
    let s = &out.score;
    assert!(
        s.recall == 1.0,
        "{name}: an incident was missed\n{}",
        out.describe()
    );
    assert_eq!(s.tier_errors, 0, "{name}: tier errors\n{}", out.describe());
    // At most one false alarm per 14 quiet days reaches Slack.
    let false_messages = s
        .false_alarm_notifications
        .get("slack")
        .copied()
        .unwrap_or(0);
    assert!(
        false_messages as f64 <= (s.days / 14.0).ceil(),
        "{name}: {false_messages} false alarms reached Slack\n{}",
        out.describe()
    );
    for i in &s.incidents {
        assert!(
            i.most_per_later_day <= 1,
            "{name}: {} was told {} times on one later day\n{}",
            i.name,
            i.most_per_later_day,
            out.describe()
        );
    }
}

/// Every shipped scenario, each on its own seed, two at a time.
#[test]
fn every_scenario_meets_the_volume_targets() {
    let names: Vec<(u64, &str)> = scenarios::NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| (11 + i as u64, *n))
        .collect();
    for pair in names.chunks(2) {
        std::thread::scope(|scope| {
            for &(seed, name) in pair {
                scope.spawn(move || {
                    let out = replay(&shipped(name), seed, false);
                    assert!(
                        out.summary.events > 500_000,
                        "{name}: two weeks of traffic, {} events",
                        out.summary.events
                    );
                    assert_targets(name, &out);
                });
            }
        });
    }
}

#[test]
fn two_quiet_weeks_send_nothing() {
    let out = replay(&shipped("quiet"), 21, false);
    assert!(out.summary.sent.is_empty(), "{}", out.describe());
    assert!(
        out.firing().all(|a| a.tier_rank >= 3),
        "only digest or record lines, if any:\n{}",
        out.describe()
    );
}

#[test]
fn an_announced_deploy_is_silent_and_yields_an_impact_report() {
    let out = replay(&shipped("announced_deploy"), 12, true);
    assert!(
        out.summary.sent.is_empty(),
        "the announced deploy reached a channel:\n{}",
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
fn a_silent_model_bump_is_one_incident_and_a_detected_change_event() {
    let out = replay(&shipped("silent_model_bump"), 13, false);
    let opened: Vec<&Alert> = out
        .firing()
        .filter(|a| a.scope.get("model").is_some_and(|m| m == "gpt-4o"))
        .collect();
    assert_eq!(opened.len(), 1, "{}", out.describe());
    assert_eq!(opened[0].kind, Kind::UnannouncedChange);
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
        "the bump is recorded as a detected change event"
    );
}

/// A model bump posted at 11:00 whose switch shows in the data 80 minutes later
/// (beyond the 60-minute tolerance, within the warm-up) is announced: nothing on the
/// model reaches a channel.
#[test]
fn a_posted_model_bump_covers_a_switch_that_shows_later() {
    let mut scenario = shipped("silent_model_bump");
    let switch = scenario.injections[0].from_ms + 11 * 3_600_000;
    scenario.injections[0].from_ms = switch;
    scenario.changes.push(ChangeEvent {
        kind: ChangeKind::ModelBump,
        ts_ms: switch - 80 * 60_000,
        scope: scenarios::scope("model", "gpt-4o"),
        note: "gpt-4o to the 2024-11-20 snapshot".into(),
        origin: "api".into(),
    });
    scenario.truth = Truth {
        incidents: Vec::new(),
        silent: vec![scenarios::silent(
            "the posted bump",
            (switch - 80 * 60_000, None),
            scenarios::scope("model", "gpt-4o"),
        )],
    };
    let out = replay(&scenario, 13, false);
    let unannounced = out
        .firing()
        .filter(|a| a.kind == Kind::UnannouncedChange)
        .count();
    assert_eq!(unannounced, 0, "{}", out.describe());
    assert!(out.summary.sent.is_empty(), "{}", out.describe());
}

/// Evals switched off for good: one incident that stays open while coverage sits at
/// zero (quiet nights included), headed by the false efficiency, never learned.
#[test]
fn evals_switched_off_for_good_stay_one_open_incident() {
    let out = replay(&shipped("evals_off"), 15, false);
    // Opened, raised to page when the evals were judged, and one daily reminder.
    let told = out.score.incidents[0].notifications.get("slack").copied();
    assert!(told.is_some_and(|n| n <= 3), "{}", out.describe());
    let told_false_efficiency = out.lines.iter().any(|a| {
        a.event != AlertEvent::Resolved
            && (a.kind == Kind::FalseEfficiency
                || a.members.iter().any(|m| m.kind == Kind::FalseEfficiency))
    });
    assert!(told_false_efficiency, "{}", out.describe());
    let unchecked = |k: Kind| matches!(k, Kind::EvalCoverageDrop | Kind::FalseEfficiency);
    let resolved_on_route = out.lines.iter().any(|a| {
        a.event == AlertEvent::Resolved
            && (unchecked(a.kind) || a.members.iter().any(|m| unchecked(m.kind)))
    });
    assert!(
        !resolved_on_route,
        "coverage never came back, yet the incident resolved:\n{}",
        out.describe()
    );
}

#[test]
fn one_tenants_spike_is_traffic_drift_on_that_tenant_below_page() {
    let out = replay(&shipped("tenant_spike"), 16, true);
    let spike: Vec<&Alert> = out
        .firing()
        .filter(|a| a.kind == Kind::TrafficDrift)
        .collect();
    assert_eq!(spike.len(), 1, "{}", out.describe());
    assert_eq!(
        spike[0].scope.get("tenant").map(String::as_str),
        Some("tenant-16")
    );
    assert!(spike[0].tier_rank > 1, "{}", out.describe());
    assert_eq!(out.messages("slack", "page"), 0, "{}", out.describe());

    // A temporary replay store keeps no aggregates: the lines are the same.
    let lean = replay(&shipped("tenant_spike"), 16, false);
    let json = |o: &Outcome| -> Vec<String> {
        o.lines
            .iter()
            .map(|a| serde_json::to_string(a).expect("an alert serializes"))
            .collect()
    };
    assert_eq!(json(&lean), json(&out));
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
fn a_global_error_burst_pages_once_and_resolves_once() {
    let out = replay(&shipped("error_burst"), 18, false);
    let burst: Vec<&Alert> = out.firing().filter(|a| a.tier_rank == 1).collect();
    assert_eq!(burst.len(), 1, "{}", out.describe());
    assert_eq!(burst[0].kind, Kind::StructuralDrift, "{}", out.describe());
    assert_eq!(
        out.score.incidents[0].notifications.get("slack"),
        Some(&2),
        "one page and one resolve:\n{}",
        out.describe()
    );
    let resolved = out
        .lines
        .iter()
        .find(|a| a.event == AlertEvent::Resolved && a.tier_rank == 1)
        .expect("the burst resolves");
    assert!(
        resolved
            .summary
            .starts_with("back inside its baseline; while firing: error rate"),
        "a resolve says the trouble is over: {}",
        resolved.summary
    );
}

#[test]
fn an_hour_without_any_traffic_pages_once_on_global_and_resolves_once() {
    let out = replay(&shipped("gateway_down"), 25, false);
    let firing: Vec<&Alert> = out
        .firing()
        .filter(|a| a.kind == Kind::TrafficDrift)
        .collect();
    assert_eq!(firing.len(), 1, "one incident:\n{}", out.describe());
    let down = firing[0];
    assert!(down.scope.is_empty(), "global, not each tenant and model");
    assert!(down.members.is_empty(), "the rest are part of it, not told");
    assert_eq!((down.kind, down.tier_rank), (Kind::TrafficDrift, 1));
    assert!(
        down.summary.starts_with("no requests at all on global"),
        "silence is said in words: {}",
        down.summary
    );
    assert_eq!(
        out.score.incidents[0].notifications.get("slack"),
        Some(&2),
        "one page and one resolve:\n{}",
        out.describe()
    );
}

#[test]
fn a_route_moved_to_another_model_is_one_incident_headed_by_its_routing_shift() {
    let scenario = shipped("route_moved");
    let out = replay(&scenario, 27, false);
    // From the move on: a false alarm days before it (this seed has one, an eval
    // score pool at 4.2 sigma) is the scorer's to count, not this incident's shape.
    let moved_ms = scenario.truth.incidents[0].start_ms;
    let told: Vec<&Alert> = out
        .firing()
        .filter(|a| a.tier_rank <= 2 && a.at_ms >= moved_ms)
        .collect();
    assert_eq!(told.len(), 1, "one incident told:\n{}", out.describe());
    let shift = told[0];
    assert_eq!(shift.kind, Kind::RoutingShift, "{}", out.describe());
    assert_eq!(
        shift.scope.get("route").map(String::as_str),
        Some("extract")
    );
    assert!(
        shift
            .summary
            .starts_with("route=extract now sends 100% of its requests to gpt-4o-mini"),
        "where the traffic went: {}",
        shift.summary
    );
    // The models' traffic and cost moves are consequences, not incidents of their own.
    let later: Vec<&Alert> = out
        .lines
        .iter()
        .filter(|a| a.event == AlertEvent::Updated && a.kind == Kind::RoutingShift)
        .collect();
    assert!(
        later
            .iter()
            .any(|a| a.members.iter().any(|m| m.scope.contains_key("model"))),
        "{}",
        out.describe()
    );
    assert_eq!(
        out.score.incidents[0].notifications.get("slack"),
        Some(&2),
        "{}",
        out.describe()
    );
}

#[test]
fn one_models_errors_are_told_on_that_model_with_the_rest_as_consequences() {
    let out = replay(&shipped("model_errors"), 19, false);
    // Digest and record lines of the quiet weeks are no incident anyone is told of.
    let opened: Vec<&Alert> = out.firing().filter(|a| a.tier_rank <= 2).collect();
    assert_eq!(opened.len(), 1, "one incident:\n{}", out.describe());
    let head = opened[0];
    assert_eq!(head.rule, "error-rate", "{}", out.describe());
    assert_eq!(
        head.scope.get("model").map(String::as_str),
        Some("gpt-4o-mini"),
        "{}",
        out.describe()
    );
    assert_eq!(head.scope.len(), 1, "{}", out.describe());
    // Its provider carries it too, as a consequence; its harm is an alert, not a page.
    let told: Vec<&Alert> = out.lines.iter().filter(|a| a.rule == head.rule).collect();
    assert!(
        told.iter().any(|a| a
            .members
            .iter()
            .any(|m| m.scope.get("provider").is_some_and(|p| p == "openai"))),
        "{}",
        out.describe()
    );
    assert_eq!(head.tier, "alert", "{}", out.describe());
    assert!(
        out.lines.iter().all(|a| a.tier_rank > 1),
        "{}",
        out.describe()
    );
    // Told once, and the all-clear within hours of the end, not the next morning.
    let resolved = out
        .lines
        .iter()
        .find(|a| a.event == AlertEvent::Resolved && a.rule == head.rule)
        .unwrap_or_else(|| panic!("never resolved:\n{}", out.describe()));
    assert!(
        resolved.at_ms - head.at_ms < 4 * 3_600_000,
        "{}",
        out.describe()
    );
}

#[test]
fn one_providers_slow_answers_are_told_on_that_provider() {
    let out = replay(&shipped("provider_latency"), 20, false);
    let opened: Vec<&Alert> = out.firing().filter(|a| a.tier_rank <= 2).collect();
    assert_eq!(opened.len(), 1, "one incident:\n{}", out.describe());
    let head = opened[0];
    assert_eq!(head.rule, "latency-p95", "{}", out.describe());
    // Anthropic serves one model: the provider and its model are the same requests.
    let named = head.scope.get("provider").is_some_and(|p| p == "anthropic")
        || head
            .scope
            .get("model")
            .is_some_and(|m| m == "claude-3-5-sonnet");
    assert!(named, "not global alone:\n{}", out.describe());
}

/// `driftwarden demo` ends its story at the minute it starts, so the story's buckets
/// and weekdays fall differently on every run. Replayed from start minutes across a
/// whole bucket, on weekdays and weekends, and minutes before midnight UTC, every
/// chapter is told, at the right volume: at most 8 Slack messages over the story, at
/// most one page per chapter, the outage a page, the deploy silent and the spiking
/// tenant below page. (`tests/suite/demo.rs` plays it through the daemon from a Sunday
/// 23:57:30.)
#[test]
fn the_demo_story_is_told_at_the_right_volume_whatever_time_it_starts() {
    for start in [
        // A Friday morning, across a whole bucket.
        "2026-11-27T07:30:00Z",
        "2026-11-27T07:34:00Z",
        "2026-11-27T07:37:00Z",
        "2026-11-27T07:44:00Z",
        // A Saturday afternoon: the chapters fall from Friday evening into Saturday.
        "2026-11-28T15:13:00Z",
        // A Sunday minutes before midnight: every chapter on the weekend.
        "2026-11-29T23:57:30Z",
    ] {
        assert_demo_story_volume(start);
    }
}

/// The story starting on a Monday, minutes after midnight: judged lane by lane, a
/// replay's batch let the structural step of the evals-off chapter be learned (and
/// its incident resolve) before the evals of its start settled and joined it, so
/// the chapter was told three times (firing, resolved, updated to a page).
#[test]
fn the_demo_story_starting_on_a_monday_is_told_at_the_right_volume() {
    assert_demo_story_volume("2026-12-02T00:03:00Z");
}

/// Replay the demo's story ending at `start` and hold what the team receives.
fn assert_demo_story_volume(start: &str) {
    let now = chrono::DateTime::parse_from_rfc3339(start)
        .expect("a valid time")
        .timestamp_millis();
    let story = Story::new(now);
    let out = replay(&story.scenario, 1, false);
    assert_targets(&format!("demo at {start}"), &out);
    let slack = out.score.notifications.get("slack").copied().unwrap_or(0);
    assert!(
        slack <= 8,
        "{start}: {slack} Slack messages\n{}",
        out.describe()
    );
    // At most one page per chapter: page-tier messages that open or raise.
    let pages = out
        .summary
        .sent
        .iter()
        .filter(|s| s.channel == "slack" && s.message.tier.as_deref() == Some("page"))
        .filter(|s| {
            s.message
                .alerts
                .iter()
                .any(|a| a.event != AlertEvent::Resolved)
        })
        .count();
    assert!(
        pages <= out.score.incidents.len(),
        "{start}: {pages} pages for {} chapters\n{}",
        out.score.incidents.len(),
        out.describe()
    );
    let outage = out
        .score
        .incidents
        .iter()
        .find(|i| i.name == "upstream outage")
        .expect("the outage chapter");
    assert_eq!(outage.tier.as_deref(), Some("page"), "{}", out.describe());
    let spike = out
        .score
        .incidents
        .iter()
        .find(|i| i.name == "one tenant's spike")
        .expect("the spike chapter");
    assert_ne!(spike.tier.as_deref(), Some("page"), "{}", out.describe());
}

/// summarize is a thin route at night (a few scores a bucket): its answers falling
/// at midnight are found by its first full pool of scores (within the hours a pool
/// takes to fill at night), not when the morning's traffic brings enough scores into
/// one bucket (seven hours later).
#[test]
fn a_thin_routes_quality_drop_at_night_is_found_by_its_pooled_scores() {
    let out = replay(&shipped("quality_drop"), 11, false);
    let drop = &out.score.incidents[0];
    let delay = drop.delay_minutes.expect("found");
    assert!(delay <= 240.0, "{delay} min\n{}", out.describe());
    let first = out
        .firing()
        .find(|a| a.rule == "eval-score")
        .expect("an eval-score line");
    assert!(
        first.evidence["pooled"]["scores"].as_u64() >= Some(20),
        "{}",
        first.evidence
    );
}
