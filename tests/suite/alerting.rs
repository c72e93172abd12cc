//! Alert routing from findings to notifications, end to end.
//!
//! The first tests drive the real `AlertStage` with engine ticks built by hand, on a
//! migrated SQLite file and the shipped (or lightly edited) rule files, and read what
//! it stored and queued: tiers from blast radius, daily budgets that fold and raise
//! `tier_flooding`, exceptions that suppress, expire and let the alert flow again.
//! The last ones run the real daemon against a real HTTP server standing in for
//! Slack and an SMTP server over TCP, and count what arrives.
//!
//! The third renewal of an exception being refused (409 with its message) is
//! covered by `tests/suite/exceptions.rs`.

use crate::common;
use crate::support::receivers;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{hard_guard_rules, replace_once, rules_dir, usage_line};
use driftwarden::alerts::{AlertStage, Delivery, RoutingParams};
use driftwarden::detect::Finding;
use driftwarden::domain::{Alert, AlertEvent, Impact, Kind, Lane, Scope, Signal};
use driftwarden::engine::{Output, Tick};
use driftwarden::exceptions::{Policy, Registry};
use driftwarden::notify::Message;
use driftwarden::store::Location;
use driftwarden::store::alerts::{self as alert_sql, AlertFilter, AlertRow};
use driftwarden::store::exceptions::{self as exception_sql, NewException};
use driftwarden::store::outbox::{self, OutboxRow, OutboxState};
use driftwarden::store::sql::{SqlExt, Value as SqlValue};
use driftwarden::tiers::Tiers;
use receivers::{Receiver, Reply, smtp_server};
use serde_json::{Value, json};
use tempfile::TempDir;

crate::on_postgres!(
    a_small_tenant_lands_in_a_low_tier_while_a_provider_wide_burst_pages,
    a_burst_keeps_its_peaks_tier_from_pending_to_resolved,
    a_line_waiting_in_its_group_survives_a_crash_and_goes_out_once,
    an_alert_firing_across_a_restart_resolves_with_a_notification,
    a_budget_overflow_folds_into_one_summary_and_raises_tier_flooding,
    a_restart_does_not_renew_the_days_budget,
    an_exception_suppresses_then_expires_and_the_alert_flows_again,
    a_hard_guard_burst_reaches_slack_and_email_exactly_once_through_500s,
    kill_9_while_an_alert_waits_in_its_group_loses_nothing,
    after_kill_9_with_notifications_pending_each_arrives_exactly_once,
    related_findings_in_one_bucket_are_one_incident_with_its_members,
    a_refire_within_the_reopen_window_reopens_quietly,
    a_digest_tier_alert_waits_for_the_daily_digest,
    a_lasting_incident_is_repeated_once_a_day,
    a_log_that_stopped_being_written_pages_on_global_once_the_tailer_caught_up,
    every_channel_gets_one_message_per_opening_and_one_per_resolve,
);

/// 2026-06-06T09:00:00Z: a working morning, well inside one UTC day.
const T0: i64 = 1_780_736_400_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// The end of the UTC day of `T0`.
const MIDNIGHT: i64 = 1_780_790_400_000;

/// Both lanes of the usage rules: a tick that evaluates them resolves any alert of
/// theirs it does not find again.
const USAGE_LANES: [Lane; 2] = [Lane::Structure, Lane::Cost];

/// A fresh migrated store (SQLite, or PostgreSQL in `on_postgres`) and where it is.
fn database() -> (common::TestStore, Location) {
    let store = common::TestStore::new();
    let location = store.location.clone();
    (store, location)
}

/// Notifications go out as soon as they are routed, so each handled tick shows its
/// messages in the outbox at once.
fn immediate() -> RoutingParams {
    RoutingParams {
        group_wait_seconds: 0,
        group_interval_seconds: 0,
        ..RoutingParams::default()
    }
}

fn stage(db: &Location, tiers: Tiers) -> AlertStage {
    AlertStage::new(
        alert_sql::open(db).unwrap(),
        tiers,
        Some(Registry::new(Policy::default())),
        immediate(),
        Delivery::Outbox,
    )
    .unwrap()
}

fn scope(pairs: &[(&str, &str)]) -> Scope {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn impact(share: f64, tenants: u32, money: f64) -> Impact {
    Impact {
        requests_share: share,
        spend_share: share,
        tenants,
        money_at_risk_per_day_usd: money,
        customer_facing: false,
    }
}

/// A finding as the engine hands it over, for a rule of `rules/drift.toml`.
fn finding(rule: &str, labels: Scope, impact: Impact, for_ms: i64) -> Finding {
    let (kind, lane, signal) = match rule {
        "error-rate" => (Kind::StructuralDrift, Lane::Structure, Signal::ErrorRate),
        "traffic-volume" => (Kind::TrafficDrift, Lane::Cost, Signal::Requests),
        "spend" => (Kind::CostDrift, Lane::Cost, Signal::Spend),
        "unit-price" => (Kind::CostDrift, Lane::Cost, Signal::CostPer1kTokens),
        "cost-per-request" => (Kind::CostDrift, Lane::Cost, Signal::CostPerRequest),
        other => panic!("no finding template for rule {other}"),
    };
    let mut evidence = serde_json::Map::new();
    evidence.insert("signal".into(), json!(signal));
    evidence.insert("observed".into(), json!(0.31));
    evidence.insert("baseline".into(), json!(0.02));
    evidence.insert("impact".into(), serde_json::to_value(&impact).unwrap());
    Finding {
        rule: 0,
        rule_name: rule.to_string(),
        scope: 0,
        summary: format!("{rule} on {labels:?} moved"),
        labels,
        kind,
        lane,
        signal,
        sign: 1.0,
        excess: 1.0,
        evidence,
        impact,
        harm: "test harm",
        muted: None,
        hard: false,
        max_tier: None,
        for_ms,
        links: Vec::new(),
    }
}

fn tick(at_ms: i64, findings: Vec<Finding>) -> Output {
    Output {
        ticks: vec![Tick {
            at_ms,
            judged_ms: at_ms,
            lanes: USAGE_LANES.to_vec(),
            findings,
            learned: Vec::new(),
            holding: Vec::new(),
        }],
        ..Output::default()
    }
}

fn stored(db: &Location) -> Vec<AlertRow> {
    let conn = alert_sql::open(db).unwrap();
    alert_sql::list(
        &conn,
        &AlertFilter {
            limit: 1000,
            ..AlertFilter::default()
        },
    )
    .unwrap()
}

fn stored_one(db: &Location, rule: &str, labels: &Scope) -> AlertRow {
    let rows: Vec<AlertRow> = stored(db)
        .into_iter()
        .filter(|a| a.rule == rule && &a.scope == labels)
        .collect();
    assert_eq!(rows.len(), 1, "one stored {rule} alert on {labels:?}");
    rows.into_iter().next().unwrap()
}

/// Outbox rows of `channel`, oldest first.
fn queued(db: &Location, channel: &str) -> Vec<OutboxRow> {
    let mut rows: Vec<OutboxRow> = outbox::list(db, None, 1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.channel == channel)
        .collect();
    rows.reverse();
    rows
}

/// Every alert line queued for `channel`, in order.
/// The page tier's channels each got exactly these rules' lines, in order.
fn assert_page_sent(db: &Location, rules: &[&str]) {
    for channel in ["slack", "email"] {
        let sent: Vec<String> = queued_alerts(db, channel)
            .into_iter()
            .map(|a| a.rule)
            .collect();
        assert_eq!(sent, rules, "{channel}");
    }
}

fn queued_alerts(db: &Location, channel: &str) -> Vec<Alert> {
    queued(db, channel)
        .into_iter()
        .flat_map(|r| r.message.alerts)
        .collect()
}

#[test]
fn a_small_tenant_lands_in_a_low_tier_while_a_provider_wide_burst_pages() {
    let (_dir, db) = database();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut stage = stage(&db, Tiers::load(&shipped).unwrap());
    // Unrelated scopes: two incidents, each at its own tier.
    let tenant = scope(&[("tenant", "tiny-co")]);
    let global = scope(&[("provider", "openai")]);
    let findings = || {
        vec![
            finding(
                "error-rate",
                tenant.clone(),
                impact(0.01, 1, 2.0),
                10 * MINUTE,
            ),
            finding(
                "error-rate",
                global.clone(),
                impact(1.0, 40, 900.0),
                10 * MINUTE,
            ),
        ]
    };

    // error-rate holds for 10 minutes before it fires: one bucket is not enough.
    let lines = stage.handle(tick(T0, findings()), T0).unwrap();
    assert!(lines.is_empty(), "pending alerts print nothing: {lines:?}");
    assert!(outbox::list(&db, None, 10).unwrap().is_empty());
    assert!(stored(&db).iter().all(|a| a.state == "pending"));

    let at = T0 + 10 * MINUTE;
    let lines = stage.handle(tick(at, findings()), at).unwrap();
    let line = |s: &Scope| {
        lines
            .iter()
            .find(|a| &a.scope == s)
            .unwrap_or_else(|| panic!("no line for {s:?} in {lines:?}"))
    };
    let (small, big) = (line(&tenant), line(&global));
    assert_eq!(small.event, AlertEvent::Firing);
    assert!(small.tier_rank >= 3, "small tenant tier {small:?}");
    assert_eq!((small.tier.as_str(), small.tier_rank), ("digest", 3));
    assert_eq!((big.tier.as_str(), big.tier_rank), ("page", 1));

    // The evidence carries the numbers that chose the tier.
    let tier = &small.evidence["tier"];
    assert_eq!(tier["tier"], "digest");
    assert_eq!(tier["impact"]["requests_share"], 0.01);
    assert_eq!(tier["impact"]["spend_share"], 0.01);
    assert_eq!(tier["impact"]["tenants"], 1);
    let chosen = tier["chosen_by"].as_str().unwrap();
    assert!(chosen.contains("requests_share 0.01 >= 0.005"), "{chosen}");
    let tier = &big.evidence["tier"];
    assert_eq!(tier["impact"]["tenants"], 40);
    assert_eq!(tier["impact"]["requests_share"], 1.0);
    assert!(
        tier["chosen_by"].as_str().unwrap().contains(">= 0.25"),
        "{tier}"
    );

    for (labels, tier, rank) in [(&tenant, "digest", 3), (&global, "page", 1)] {
        let row = stored_one(&db, "error-rate", labels);
        assert_eq!(row.state, "firing");
        assert_eq!(
            (row.tier.as_deref(), row.tier_rank),
            (Some(tier), Some(rank))
        );
        assert_eq!(row.suppressed_by, None);
        assert_eq!(row.evidence["tier"]["tier_rank"], rank);
    }

    // The page goes to Slack and email; the digest waits for the daily digest.
    let slack = queued_alerts(&db, "slack");
    assert_eq!(slack.len(), 1, "{slack:?}");
    assert_eq!((&slack[0].scope, slack[0].tier_rank), (&global, 1));
    let mut email: Vec<(String, u8)> = queued(&db, "email")
        .iter()
        .map(|r| {
            assert_eq!(r.message.alerts.len(), 1);
            let a = &r.message.alerts[0];
            (scope_text(&a.scope), a.tier_rank)
        })
        .collect();
    email.sort();
    assert_eq!(email, [("provider=openai".to_string(), 1)]);
    for row in queued(&db, "email") {
        let tier = row.message.tier.clone().unwrap();
        assert!(
            row.message.title.starts_with(&format!("[{tier}] FIRING")),
            "{}",
            row.message.title
        );
    }
}

#[test]
fn a_burst_keeps_its_peaks_tier_from_pending_to_resolved() {
    let (_dir, db) = database();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut stage = stage(&db, Tiers::load(&shipped).unwrap());
    let global = Scope::new();
    let burst = |share: f64| {
        finding(
            "error-rate",
            global.clone(),
            impact(share, 40, 0.0),
            10 * MINUTE,
        )
    };
    // The worst bucket comes first, while the alert still waits out its `for`.
    assert!(
        stage
            .handle(tick(T0, vec![burst(0.38)]), T0)
            .unwrap()
            .is_empty()
    );
    let at = T0 + 10 * MINUTE;
    let lines = stage.handle(tick(at, vec![burst(0.1)]), at).unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (lines[0].event, lines[0].tier.as_str()),
        (AlertEvent::Firing, "page"),
        "{lines:?}"
    );
    assert_eq!(queued_alerts(&db, "slack").len(), 1);
    // Still firing at a tenth: still a page, and its resolve is told as one.
    let at = at + 10 * MINUTE;
    assert!(
        stage
            .handle(tick(at, vec![burst(0.1)]), at)
            .unwrap()
            .is_empty()
    );
    let mut resolved = Vec::new();
    for i in 1..=3 {
        let at = at + i * 10 * MINUTE;
        resolved.extend(stage.handle(tick(at, vec![]), at).unwrap());
    }
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(
        (resolved[0].event, resolved[0].tier.as_str()),
        (AlertEvent::Resolved, "page"),
        "{resolved:?}"
    );
    let stored = stored_one(&db, "error-rate", &global);
    assert_eq!(stored.tier.as_deref(), Some("page"));
}

/// A line waits in its group (`group_wait`) before it becomes an outbox message. A
/// crash in that window must not lose it: the next start regroups it from
/// `notify_pending`, and it goes out once on each of its tier's channels.
#[test]
fn a_line_waiting_in_its_group_survives_a_crash_and_goes_out_once() {
    let (_dir, db) = database();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let waiting = RoutingParams {
        group_wait_seconds: 60,
        group_interval_seconds: 300,
        ..RoutingParams::default()
    };
    let open = || {
        AlertStage::new(
            alert_sql::open(&db).unwrap(),
            Tiers::load(&shipped).unwrap(),
            Some(Registry::new(Policy::default())),
            waiting,
            Delivery::Outbox,
        )
        .unwrap()
    };
    let burst = || {
        vec![finding(
            "error-rate",
            Scope::new(),
            impact(1.0, 40, 900.0),
            0,
        )]
    };
    let mut stage = open();
    let lines = stage.handle(tick(T0, burst()), T0).unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].tier, "page");
    assert!(
        outbox::list(&db, None, 10).unwrap().is_empty(),
        "in its group"
    );
    drop(stage); // the daemon dies inside group_wait

    // The restart comes 5 h later, past the 4 h repeat interval, and the alert still
    // holds: the regrouped line is its notification, not a repeat beside it.
    let restart = T0 + 5 * 60 * MINUTE;
    let mut stage = open();
    let lines = stage.handle(tick(restart, burst()), restart).unwrap();
    assert!(lines.is_empty(), "still firing, nothing new: {lines:?}");
    assert!(
        outbox::list(&db, None, 10).unwrap().is_empty(),
        "regrouped, it waits group_wait again"
    );
    stage.flush(restart + 61_000).unwrap();
    for channel in ["slack", "email"] {
        let sent = queued_alerts(&db, channel);
        assert_eq!(sent.len(), 1, "{channel}: {sent:?}");
        assert_eq!(sent[0].rule, "error-rate");
    }
    let waiting = db
        .reader()
        .unwrap()
        .row("SELECT COUNT(*) FROM notify_pending", &[], |r| r.int(0))
        .unwrap();
    assert_eq!(waiting, Some(0));
    drop(stage);

    // In the outbox, it is no longer waiting: another start sends nothing more.
    let mut stage = open();
    stage.flush(restart + 10 * MINUTE).unwrap();
    assert_eq!(outbox::list(&db, None, 10).unwrap().len(), 2);
}

fn scope_text(s: &Scope) -> String {
    driftwarden::domain::scope_label(s)
}

/// An alert firing when the daemon restarts still resolves out loud: its last line
/// comes back from the store, so the resolve is notified like any other.
#[test]
fn an_alert_firing_across_a_restart_resolves_with_a_notification() {
    let (_dir, db) = database();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let burst = vec![finding(
        "error-rate",
        Scope::new(),
        impact(1.0, 40, 900.0),
        0,
    )];
    let mut before = stage(&db, Tiers::load(&shipped).unwrap());
    before.handle(tick(T0, burst), T0).unwrap();
    drop(before);

    let mut after = stage(&db, Tiers::load(&shipped).unwrap());
    let mut resolved = Vec::new();
    for i in 1..=3 {
        let at = T0 + i * 10 * MINUTE;
        resolved.extend(after.handle(tick(at, Vec::new()), at).unwrap());
    }
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].event, AlertEvent::Resolved);
    let events: Vec<AlertEvent> = queued_alerts(&db, "slack")
        .into_iter()
        .map(|a| a.event)
        .collect();
    assert_eq!(events, [AlertEvent::Firing, AlertEvent::Resolved]);
}

/// The shipped rules with the page tier's daily budget lowered from 5 to 2.
fn rules_with_page_budget_of_two() -> TempDir {
    rules_dir(|name, text| match name {
        "tiers.toml" => replace_once(
            text,
            "name = \"page\"\nchannels = [\"slack\", \"email\"]\ndaily_budget = 5\n",
            "name = \"page\"\nchannels = [\"slack\", \"email\"]\ndaily_budget = 2\n",
        ),
        _ => text.to_string(),
    })
}

#[test]
fn a_budget_overflow_folds_into_one_summary_and_raises_tier_flooding() {
    let rules = rules_with_page_budget_of_two();
    let (_dir, db) = database();
    let mut stage = stage(&db, Tiers::load(rules.path()).unwrap());
    let page = || impact(0.6, 12, 1200.0);
    // Five page alerts across rules, one more per 10-minute bucket; each tick holds
    // every finding of its bucket, so the earlier ones keep firing (not resolving).
    // Unrelated scopes: each alert is an incident of its own.
    let firing = [
        ("error-rate", scope(&[("provider", "openai")])),
        ("spend", scope(&[("model", "claude-3-5-sonnet")])),
        ("cost-per-request", scope(&[("model", "gpt-4o")])),
        ("unit-price", scope(&[("route", "chat")])),
        ("traffic-volume", scope(&[("tenant", "t-1")])),
    ];
    for i in 0..firing.len() {
        let findings = firing[..=i]
            .iter()
            .map(|(rule, s)| finding(rule, s.clone(), page(), 0))
            .collect();
        let at = T0 + i as i64 * 10 * MINUTE;
        let lines = stage.handle(tick(at, findings), at).unwrap();
        assert_eq!(lines.len(), 1, "one new firing line per tick: {lines:?}");
        assert_eq!(lines[0].tier, "page");
    }

    // Only the budget's worth went out, on each channel of the tier.
    assert_page_sent(&db, &["error-rate", "spend"]);
    assert!(stored(&db).iter().all(|a| a.rule != "tier_flooding"));
    assert_eq!(stored(&db).len(), 5, "folded alerts are still recorded");

    // The first evaluation of the next UTC day closes the flooded one.
    let next_day = MIDNIGHT + 5 * MINUTE;
    let lines = stage.handle(Output::default(), next_day).unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let meta = &lines[0];
    assert_eq!(
        (meta.rule.as_str(), meta.kind),
        ("tier_flooding", Kind::TierFlooding)
    );
    assert_eq!((meta.tier.as_str(), meta.tier_rank), ("alert", 2));
    let row = stored_one(&db, "tier_flooding", &scope(&[("tier", "page")]));
    assert_eq!((row.state.as_str(), row.lane.as_str()), ("firing", "meta"));
    assert_eq!(row.evidence["folded"], 3);
    for rule in ["cost-per-request", "unit-price", "traffic-volume"] {
        assert!(
            row.summary.contains(&format!("{rule} (1)")),
            "{}",
            row.summary
        );
    }
    assert!(!row.summary.contains("spend"), "{}", row.summary);

    // One summary per channel for the folded three; the meta-alert goes to the meta
    // tier's channel (slack), outside the page budget.
    for channel in ["slack", "email"] {
        let summaries: Vec<Message> = queued(&db, channel)
            .into_iter()
            .map(|r| r.message)
            .filter(|m| m.alerts.is_empty())
            .collect();
        assert_eq!(summaries.len(), 1, "{channel}: {summaries:?}");
        assert_eq!(summaries[0].title, "[page] 3 alerts folded");
        let want =
            format!("3 more page alerts on {channel} were not sent on 2026-06-06 (daily budget 2)");
        assert!(summaries[0].text.contains(&want), "{}", summaries[0].text);
    }
    let slack = queued_alerts(&db, "slack");
    assert_eq!(slack.last().unwrap().rule, "tier_flooding");
    assert!(
        queued_alerts(&db, "email")
            .iter()
            .all(|a| a.rule != "tier_flooding")
    );

    // The new day has a fresh budget.
    let at = next_day + 10 * MINUTE;
    let summarize = scope(&[("route", "summarize")]);
    let findings = vec![finding("error-rate", summarize.clone(), page(), 0)];
    stage.handle(tick(at, findings), at).unwrap();
    let last = queued(&db, "slack").pop().unwrap().message;
    assert!(
        last.alerts.iter().any(|a| a.rule == "error-rate"
            && a.scope == summarize
            && a.event == AlertEvent::Firing),
        "{last:?}"
    );
}

/// The daily budget counts what the outbox already holds for the day: a restarted
/// daemon does not send a fresh budget's worth.
#[test]
fn a_restart_does_not_renew_the_days_budget() {
    let rules = rules_with_page_budget_of_two();
    let (_dir, db) = database();
    let page = || impact(0.6, 12, 1200.0);
    let rules_then = [
        ("error-rate", scope(&[("provider", "openai")])),
        ("spend", scope(&[("model", "claude-3-5-sonnet")])),
        ("cost-per-request", scope(&[("model", "gpt-4o")])),
    ];
    for (i, (rule, labels)) in rules_then.iter().enumerate() {
        // A new stage on the same file for each alert: three restarts in one day.
        let mut stage = stage(&db, Tiers::load(rules.path()).unwrap());
        let at = T0 + i as i64 * 10 * MINUTE;
        let findings = vec![finding(rule, labels.clone(), page(), 0)];
        let lines = stage.handle(tick(at, findings), at).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
    }
    assert_page_sent(&db, &["error-rate", "spend"]);
}

#[test]
fn an_exception_suppresses_then_expires_and_the_alert_flows_again() {
    let (_dir, db) = database();
    let registry = Registry::new(Policy::default());
    let mut conn = exception_sql::open(&db).unwrap();
    let gpt = scope(&[("model", "gpt-4o")]);
    let claude = scope(&[("model", "claude-3-5-sonnet")]);
    let created = registry
        .create(
            &mut conn,
            NewException {
                rule: "cost-per-request".into(),
                scope: gpt.clone(),
                reason: "nightly batch re-embeds the catalogue".into(),
                owner: "ana".into(),
                ticket: Some("OPS-42".into()),
                expires_ms: T0 + 2 * HOUR,
            },
            "ana",
            T0 - MINUTE,
        )
        .unwrap();
    let id = created.exception.id;
    let mut stage = stage(&db, Tiers::defaults());
    // 10% of requests: the `alert` tier, which notifies Slack.
    let findings = || {
        vec![
            finding("cost-per-request", gpt.clone(), impact(0.1, 3, 20.0), 0),
            finding("cost-per-request", claude.clone(), impact(0.1, 3, 20.0), 0),
        ]
    };

    let lines = stage.handle(tick(T0, findings()), T0).unwrap();
    assert_eq!(
        lines.len(),
        2,
        "a suppressed alert is still a line: {lines:?}"
    );
    let row = stored_one(&db, "cost-per-request", &gpt);
    assert_eq!(
        (row.state.as_str(), row.suppressed_by),
        ("firing", Some(id))
    );
    assert_eq!(
        stored_one(&db, "cost-per-request", &claude).suppressed_by,
        None
    );
    let slack = queued_alerts(&db, "slack");
    assert_eq!(
        slack.len(),
        1,
        "only the unexcepted scope is notified: {slack:?}"
    );
    assert_eq!(slack[0].scope, claude);
    let exception =
        |conn: &driftwarden::store::sql::Db| exception_sql::get(conn, id).unwrap().unwrap();
    let e = exception(&conn);
    assert_eq!((e.hits, e.last_hit_ms), (1, Some(T0)));

    // Still firing an hour later, still excepted: nothing more is queued.
    let at = T0 + HOUR;
    stage.handle(tick(at, findings()), at).unwrap();
    assert_eq!(queued_alerts(&db, "slack").len(), 1);
    assert_eq!(
        stored_one(&db, "cost-per-request", &gpt).suppressed_by,
        Some(id)
    );

    // The exception expires at T0 + 2h; the next evaluation notifies the alert.
    let at = T0 + 3 * HOUR;
    stage.handle(tick(at, findings()), at).unwrap();
    let slack = queued_alerts(&db, "slack");
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert_eq!(
        (&slack[1].scope, slack[1].event),
        (&gpt, AlertEvent::Firing)
    );
    assert_eq!(
        stored_one(&db, "cost-per-request", &gpt).suppressed_by,
        None
    );
    let actions: Vec<String> = registry
        .audit(&conn, id)
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["created", "expired"]);
    assert_eq!(
        exception(&conn).hits,
        1,
        "an expired exception counts no more hits"
    );
}

// ---------------------------------------------------------------------------
// The real daemon, a Slack stand-in and an SMTP server.

/// Slack's header block: the message title.
fn slack_title(body: &Value) -> String {
    body["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `[[channel]]` entries named as the shipped tiers route (`slack`, `email`).
fn channels_toml(slack: &Receiver, smtp_port: Option<u16>) -> String {
    let mut toml = format!(
        "[[channel]]\nname = \"slack\"\ntype = \"slack\"\nwebhook_url = \"{}\"\n",
        slack.url("/services/T0/B0/alerting")
    );
    if let Some(port) = smtp_port {
        toml.push_str(&format!(
            "[[channel]]\nname = \"email\"\ntype = \"email\"\nsmtp_url = \"smtp://127.0.0.1:{port}?tls=none\"\n\
             from = \"driftwarden <dw@example.com>\"\nto = [\"oncall@example.com\"]\n"
        ));
    }
    toml
}

/// (id, state, failed attempts) of each outbox row of `channel`, oldest first. A
/// writable connection: after a kill the WAL may need recovering, which a read-only
/// one cannot do.
fn outbox_states(app: &common::TestApp, channel: &str) -> Vec<(i64, String, u32)> {
    app.store()
        .rows(
            "SELECT id, state, attempts FROM outbox WHERE channel = ?1 ORDER BY id",
            &[SqlValue::Text(channel)],
            |r| Ok((r.int(0)?, r.text(1)?, r.int(2)? as u32)),
        )
        .unwrap()
}

/// Poll `cond` until it holds, failing after `limit` with the daemon's log.
fn wait_for(app: &common::TestApp, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; daemon log:\n{}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One-minute buckets closed without lateness, and `[routing]`'s group wait.
fn burst_config(group_wait_seconds: u32, channels: &str) -> String {
    format!(
        "[analysis]\nbucket_minutes = 1\nlateness_minutes = 0\n[routing]\ngroup_wait_seconds = {group_wait_seconds}\n{channels}"
    )
}

/// Post 40 requests, half of them 502s, in the current minute.
fn post_error_burst(app: &common::TestApp) {
    // Posted in the last seconds of a minute, the burst could land in a bucket the
    // idle daemon closes before it reads the batch; start with the next minute.
    let into_minute = common::now_ms() % MINUTE;
    if into_minute > 50_000 {
        std::thread::sleep(Duration::from_millis((MINUTE - into_minute + 100) as u64));
    }
    let ts = common::now_ms();
    post_minute(app, "burst", |i| (ts, i % 2 == 0));
}

/// Post 40 usage lines named `{prefix}-{i}`; `at(i)` gives each its time and
/// whether it failed.
fn post_minute(app: &common::TestApp, prefix: &str, at: impl Fn(i64) -> (i64, bool)) {
    let events: Vec<String> = (0..40)
        .map(|i| {
            let (ts, failed) = at(i);
            usage_line(&format!("{prefix}-{i}"), ts, failed)
        })
        .collect();
    let (status, report) = app.post_events("native", events.join("\n"));
    assert_eq!(
        (status, report["accepted"].as_u64()),
        (200, Some(40)),
        "{report}"
    );
}

/// The minute closes on the wall clock once ingest has been quiet for 10 s.
const BURST_JUDGED: Duration = Duration::from_secs(100);

/// A burst of upstream errors trips error-rate's hard limit (0.25 in
/// `rules/drift.toml`), which fires without any baseline. The daemon runs on
/// one-minute buckets with no lateness and error-rate without its `for`, so the
/// burst is judged when the current minute closes (at most a minute of waiting)
/// instead of after two ten-minute buckets. Slack answers 500 twice, then 200.
#[test]
fn a_hard_guard_burst_reaches_slack_and_email_exactly_once_through_500s() {
    let slack = Receiver::start();
    slack.then(&[Reply::Status(500), Reply::Status(500)]);
    let (mails, smtp_port) = smtp_server();
    let rules = hard_guard_rules();
    let app = common::TestApp::builder()
        .rules(rules.path())
        .config(&burst_config(0, &channels_toml(&slack, Some(smtp_port))))
        .spawn();
    post_error_burst(&app);
    wait_for(&app, "a queued Slack notification", BURST_JUDGED, || {
        !outbox_states(&app, "slack").is_empty()
    });
    wait_for(
        &app,
        "every notification sent",
        Duration::from_secs(30),
        || {
            ["slack", "email"].iter().all(|c| {
                let rows = outbox_states(&app, c);
                !rows.is_empty() && rows.iter().all(|(_, state, _)| state == "sent")
            })
        },
    );
    app.wait_outbox_polls(&["slack", "email"]);

    let alerts = app.sql_i64(
        "SELECT COUNT(*) FROM alerts WHERE rule = 'error-rate' AND state = 'firing' AND tier = 'page'",
    );
    assert!(alerts >= 1, "no firing error-rate page alert stored");
    let rows = outbox_states(&app, "slack");
    let accepted = slack.accepted();
    assert_eq!(
        accepted.len(),
        rows.len(),
        "each Slack notification once: {rows:?}"
    );
    assert_eq!(
        slack.count(),
        rows.len() + 2,
        "two refusals, then one delivery each"
    );
    assert!(rows.iter().map(|r| r.2).sum::<u32>() == 2, "{rows:?}");
    let mut titles: Vec<String> = accepted.iter().map(slack_title).collect();
    titles.sort();
    titles.dedup();
    assert_eq!(titles.len(), accepted.len(), "{titles:?}");
    let text = accepted[0]["text"].as_str().unwrap();
    for want in [
        "[PAGE]",
        "error-rate",
        "structural_drift",
        "past its hard limit",
        // The harm chose the tier: half of all requests failed.
        "tier: page because requests_share 0.5 >=",
        "excess failed requests",
    ] {
        assert!(text.contains(want), "Slack text lacks {want:?}: {text}");
    }

    let email_rows = outbox_states(&app, "email");
    let received = mails.mails.lock().unwrap().clone();
    assert_eq!(received.len(), email_rows.len(), "each mail once");
    let mail = mailparse::parse_mail(&received[0]).unwrap();
    let subject = mail
        .headers
        .iter()
        .find(|h| h.get_key().eq_ignore_ascii_case("subject"))
        .map(|h| h.get_value())
        .unwrap_or_default();
    assert!(subject.starts_with("[driftwarden] [PAGE]"), "{subject}");
    let plain = mail
        .subparts
        .iter()
        .find(|p| p.ctype.mimetype == "text/plain")
        .expect("a plain-text part")
        .get_body()
        .unwrap();
    assert!(
        plain.contains("error-rate") && plain.contains("past its hard limit"),
        "{plain}"
    );
}

/// `kill -9` while an alert waits in its group (`group_wait`): after the restart it
/// goes out once, neither lost nor repeated.
#[test]
fn kill_9_while_an_alert_waits_in_its_group_loses_nothing() {
    let slack = Receiver::start();
    let rules = hard_guard_rules();
    let channels = channels_toml(&slack, None);
    let mut app = common::TestApp::builder()
        .rules(rules.path())
        .config(&burst_config(3600, &channels))
        .spawn();
    post_error_burst(&app);
    wait_for(&app, "the alert waiting in its group", BURST_JUDGED, || {
        app.sql_i64("SELECT COUNT(*) FROM notify_pending WHERE channel = 'slack'") >= 1
    });
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM outbox"), 0);
    app.kill9();

    std::fs::write(app.path("driftwarden.toml"), burst_config(0, &channels)).unwrap();
    app.restart();
    wait_for(&app, "the regrouped alert sent", common::WAIT, || {
        let rows = outbox_states(&app, "slack");
        !rows.is_empty() && rows.iter().all(|(_, state, _)| state == "sent")
    });
    app.wait_outbox_polls(&["slack"]);
    let accepted = slack.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    let text = accepted[0]["text"].as_str().unwrap();
    assert!(text.contains("error-rate"), "{text}");
    assert_eq!(app.sql_i64("SELECT COUNT(*) FROM notify_pending"), 0);
}

/// Notifications queued before a start (as an alert stage leaves them), refused
/// while the daemon runs, the daemon killed with them pending; after the restart
/// Slack accepts, and each arrives exactly once.
#[test]
fn after_kill_9_with_notifications_pending_each_arrives_exactly_once() {
    let slack = Receiver::start();
    slack.always(Some(Reply::Status(500)));
    let mut builder = common::TestApp::builder().config(&format!(
        "[routing]\ngroup_wait_seconds = 0\n{}",
        channels_toml(&slack, None)
    ));
    let db = builder.store();
    let titles: Vec<String> = (1..=3).map(|i| format!("pending {i}")).collect();
    {
        let conn = outbox::open(&db).unwrap();
        for t in &titles {
            let message = Message {
                title: t.clone(),
                tier: Some("page".into()),
                alerts: Vec::new(),
                text: format!("{t} of 3"),
            };
            outbox::enqueue(&conn, "slack", &message, common::now_ms()).unwrap();
        }
    }
    let mut app = builder.spawn();
    wait_for(&app, "refused attempts", common::WAIT, || {
        slack.count() >= 2
    });
    app.kill9();
    let rows = outbox_states(&app, "slack");
    assert!(
        rows.iter().all(|(_, state, _)| state == "pending"),
        "killed with every notification pending: {rows:?}"
    );
    assert!(slack.accepted().is_empty());

    slack.always(None);
    app.restart();
    wait_for(
        &app,
        "every notification sent",
        Duration::from_secs(30),
        || {
            outbox_states(&app, "slack")
                .iter()
                .all(|(_, state, _)| state == "sent")
        },
    );
    app.wait_outbox_polls(&["slack"]);

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for body in slack.accepted() {
        *counts.entry(slack_title(&body)).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = titles.iter().map(|t| (t.clone(), 1)).collect();
    assert_eq!(counts, want);
    let sent = outbox::list(&db, Some(OutboxState::Sent), 10).unwrap();
    assert_eq!(sent.len(), 3);
}

/// Findings of one cause in one bucket — a parent and its child — are one incident:
/// one line with the other as a member, one message per channel.
#[test]
fn related_findings_in_one_bucket_are_one_incident_with_its_members() {
    let (_dir, db) = database();
    let mut stage = stage(&db, Tiers::defaults());
    let model = scope(&[("model", "gpt-4o")]);
    let findings = vec![
        finding("error-rate", Scope::new(), impact(0.4, 20, 0.0), 0),
        finding("error-rate", model.clone(), impact(0.3, 12, 0.0), 0),
    ];
    let lines = stage.handle(tick(T0, findings), T0).unwrap();
    assert_eq!(lines.len(), 1, "one incident: {lines:?}");
    assert_eq!(lines[0].event, AlertEvent::Firing);
    assert_eq!(lines[0].members.len(), 1, "{lines:?}");
    for channel in ["slack", "email"] {
        assert_eq!(queued(&db, channel).len(), 1, "{channel}");
    }
    // Both alerts are stored, in one incident.
    let rows = stored(&db);
    assert_eq!(rows.len(), 2);
}

/// A lasting state near its threshold: the same rule and scope firing again soon
/// after it resolved reopens the incident without a new message, and its second
/// resolve is not told again.
#[test]
fn a_refire_within_the_reopen_window_reopens_quietly() {
    let (_dir, db) = database();
    let mut stage = stage(&db, Tiers::defaults());
    let model = scope(&[("model", "gpt-4o")]);
    let fire = |at: i64| {
        tick(
            at,
            vec![finding(
                "cost-per-request",
                model.clone(),
                impact(0.1, 3, 80.0),
                0,
            )],
        )
    };
    let quiet = |at: i64| tick(at, Vec::new());
    let mut at = T0;
    let lines = stage.handle(fire(at), at).unwrap();
    assert_eq!(lines[0].event, AlertEvent::Firing);
    let mut events = Vec::new();
    for _ in 0..3 {
        at += 10 * MINUTE;
        events.extend(
            stage
                .handle(quiet(at), at)
                .unwrap()
                .into_iter()
                .map(|l| l.event),
        );
    }
    assert_eq!(events, [AlertEvent::Resolved]);
    let told = queued(&db, "slack").len();
    assert_eq!(told, 2, "the firing and its resolve");

    at += HOUR;
    let lines = stage.handle(fire(at), at).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0].event, lines[0].reopens),
        (AlertEvent::Reopened, 1)
    );
    for _ in 0..3 {
        at += 10 * MINUTE;
        stage.handle(quiet(at), at).unwrap();
    }
    assert_eq!(queued(&db, "slack").len(), told, "nothing more was sent");

    // Past the reopen window it is a new incident, told again.
    at += 7 * HOUR;
    let lines = stage.handle(fire(at), at).unwrap();
    assert_eq!((lines[0].event, lines[0].reopens), (AlertEvent::Firing, 0));
    assert_eq!(queued(&db, "slack").len(), told + 1);
}

/// A digest-tier alert is recorded and printed but sent only in the daily digest.
#[test]
fn a_digest_tier_alert_waits_for_the_daily_digest() {
    let (_dir, db) = database();
    let mut stage = stage(&db, Tiers::defaults());
    let tenant = scope(&[("tenant", "small-co")]);
    let findings = vec![finding("error-rate", tenant, impact(0.01, 1, 0.0), 0)];
    let lines = stage.handle(tick(T0, findings), T0).unwrap();
    assert_eq!((lines.len(), lines[0].tier.as_str()), (1, "digest"));
    assert!(outbox::list(&db, None, 10).unwrap().is_empty());
}

/// A still-firing incident is told again once per repeat interval (a day by
/// default), not on every evaluation.
#[test]
fn a_lasting_incident_is_repeated_once_a_day() {
    let (_dir, db) = database();
    let tiers = Tiers::defaults();
    let mut stage = AlertStage::new(
        alert_sql::open(&db).unwrap(),
        tiers,
        None,
        RoutingParams {
            group_wait_seconds: 0,
            group_interval_seconds: 0,
            ..RoutingParams::default()
        },
        Delivery::Outbox,
    )
    .unwrap();
    let route = scope(&[("route", "classify")]);
    let mut at = T0;
    for _ in 0..(30 * 6) {
        let findings = vec![finding("error-rate", route.clone(), impact(0.3, 8, 0.0), 0)];
        stage.handle(tick(at, findings), at).unwrap();
        at += 10 * MINUTE;
    }
    // 30 hours: the first message and one repeat after 24 hours.
    assert_eq!(queued(&db, "slack").len(), 2);
}

/// Eight days of steady traffic (about 50 requests every ten minutes) in a tailed
/// file that stopped being written 40 minutes before the daemon starts. The tailer
/// reads the backlog along its data clock, then is caught up: the wall clock closes
/// the empty buckets since, and the drop to zero pages once, on global, in words.
/// Eight days give every seasonal slot (hour of day, weekday or weekend) two days of
/// history whatever the day and hour the test runs at.
#[test]
fn a_log_that_stopped_being_written_pages_on_global_once_the_tailer_caught_up() {
    let slack = Receiver::start();
    let builder = common::TestApp::builder()
        .tail("usage.jsonl")
        .tail_start("beginning");
    let bucket = 10 * MINUTE;
    let end = (common::now_ms() - 40 * MINUTE).div_euclid(bucket) * bucket;
    let start = end - 8 * 24 * HOUR;
    let mut text = String::new();
    let mut last = 0;
    for b in 0..(end - start) / bucket {
        let n = 46 + (b * 7) % 9;
        for k in 0..n {
            last = start + b * bucket + k * (bucket / n);
            text.push_str(&common::native_line(&format!("r{b}-{k}"), last));
            text.push('\n');
        }
    }
    common::append(&builder.path("usage.jsonl"), &text);
    let config = format!(
        "[routing]\ngroup_wait_seconds = 0\n{}",
        channels_toml(&slack, None)
    );
    let app = builder.config(&config).spawn();
    wait_for(
        &app,
        "a Slack page about the silence",
        Duration::from_secs(120),
        || !slack.accepted().is_empty(),
    );
    let accepted = slack.accepted();
    assert_eq!(accepted.len(), 1, "one message: {accepted:?}");
    let title = slack_title(&accepted[0]);
    assert!(title.contains("traffic_drift on global"), "{title}");
    let text = accepted[0]["text"].as_str().unwrap();
    assert!(text.contains("[PAGE]"), "{text}");
    assert!(text.contains("no requests at all on global"), "{text}");

    let stats: Value = app.get("/v1/stats").json().unwrap();
    let source = &stats["sources"][0];
    assert_eq!(source["state"], "live", "{stats}");
    assert_eq!(source["newest_record_ms"], json!(last), "{stats}");
    assert!(source["idle_seconds"].as_i64().is_some(), "{stats}");
}

/// Every chat and paging channel, a receiver each that refuses its first request
/// (500), then accepts.
const CHANNELS: [&str; 7] = [
    "pagerduty",
    "teams",
    "telegram",
    "feishu",
    "dingtalk",
    "wecom",
    "discord",
];

/// `[[channel]]` for `kind`, named after it, delivering to `r`; signing channels sign
/// with `sekrit-sign`.
fn chat_channel_toml(kind: &str, r: &Receiver) -> String {
    let keys = match kind {
        "pagerduty" => format!(
            "routing_key = \"sekrit-routing\"\nurl = \"{}\"",
            r.url("/v2/enqueue")
        ),
        "telegram" => format!(
            "bot_token = \"1:sekrit\"\nchat_id = \"-100200\"\nurl = \"{}\"",
            r.url("")
        ),
        "feishu" | "dingtalk" => format!(
            "webhook_url = \"{}\"\nsecret = \"sekrit-sign\"",
            r.url("/hook?access_token=sekrit")
        ),
        _ => format!("webhook_url = \"{}\"", r.url("/hook/sekrit")),
    };
    format!("[[channel]]\nname = \"{kind}\"\ntype = \"{kind}\"\n{keys}\n")
}

/// Whether the signature a Feishu or DingTalk receiver got verifies with the vendor's
/// documented algorithm (written here, not taken from driftwarden).
fn signature_verifies(kind: &str, body: &Value, query: &str) -> bool {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let mac = |key: &[u8], data: &[u8]| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    };
    match kind {
        "feishu" => {
            let ts = body["timestamp"].as_str().unwrap_or_default();
            body["sign"] == mac(format!("{ts}\nsekrit-sign").as_bytes(), b"").as_str()
        }
        "dingtalk" => {
            let pairs: BTreeMap<String, String> =
                reqwest::Url::parse(&format!("http://h/?{query}"))
                    .unwrap()
                    .query_pairs()
                    .into_owned()
                    .collect();
            let ts = pairs.get("timestamp").cloned().unwrap_or_default();
            pairs.get("sign")
                == Some(&mac(
                    b"sekrit-sign",
                    format!("{ts}\nsekrit-sign").as_bytes(),
                ))
        }
        _ => true,
    }
}

/// The whole path for every chat and paging channel: a real daemon on the data clock
/// (one-minute buckets) reads healthy traffic, a burst of upstream errors that trips
/// error-rate's hard guard, and healthy traffic again. Each channel's receiver refuses
/// the first request and then gets exactly two messages: the incident's opening and
/// its resolve, in that order; Feishu's and DingTalk's signatures verify; PagerDuty's
/// resolve carries its trigger's dedup_key.
#[test]
fn every_channel_gets_one_message_per_opening_and_one_per_resolve() {
    let receivers: Vec<(&str, Receiver)> = CHANNELS
        .iter()
        .map(|kind| {
            let r = Receiver::start();
            r.then(&[Reply::Status(500)]);
            if matches!(*kind, "feishu" | "dingtalk" | "wecom") {
                r.always(Some(Reply::Json(
                    200,
                    r#"{"code":0,"errcode":0,"msg":"ok"}"#,
                )));
            }
            (*kind, r)
        })
        .collect();
    let page_channels = format!("{CHANNELS:?}");
    let rules = rules_dir(|name, text| match name {
        "drift.toml" => replace_once(
            text,
            "hard_limit = 0.25\nfor = \"10m\"\n",
            "hard_limit = 0.25\n",
        ),
        "tiers.toml" => replace_once(
            text,
            "name = \"page\"\nchannels = [\"slack\", \"email\"]",
            &format!("name = \"page\"\nchannels = {page_channels}"),
        ),
        _ => text.to_string(),
    });
    let mut config = String::from(
        "clock = \"data\"\n[analysis]\nbucket_minutes = 1\nlateness_minutes = 0\n[routing]\ngroup_wait_seconds = 0\n",
    );
    for (kind, r) in &receivers {
        config.push_str(&chat_channel_toml(kind, r));
    }
    let app = common::TestApp::builder()
        .rules(rules.path())
        .config(&config)
        .spawn();
    // An hour ago, on a minute: 25 healthy minutes (the baseline a resolve is judged
    // against: without one a calm bucket cannot be told from a thin one), the burst,
    // 15 healthy minutes.
    let start = (common::now_ms() - HOUR) / MINUTE * MINUTE;
    for minute in 0..41 {
        post_minute(&app, &format!("m{minute}"), |i| {
            (
                start + minute * MINUTE + i * 1000,
                minute == 25 && i % 2 == 0,
            )
        });
    }
    wait_for(
        &app,
        "an opening and a resolve for each channel",
        BURST_JUDGED,
        || {
            CHANNELS.iter().all(|c| {
                let rows = outbox_states(&app, c);
                rows.len() >= 2 && rows.iter().all(|(_, state, _)| state == "sent")
            })
        },
    );
    app.wait_outbox_polls(&CHANNELS);

    let incidents = app.sql_i64(
        "SELECT COUNT(DISTINCT incident_id) FROM alerts WHERE rule = 'error-rate' AND tier = 'page'",
    );
    assert_eq!(incidents, 1, "one incident");
    for (kind, r) in &receivers {
        let accepted = r.accepted();
        assert_eq!(
            (r.count(), accepted.len(), outbox_states(&app, kind).len()),
            (3, 2, 2),
            "{kind}: one refusal, then the opening and the resolve once each: {accepted:#?}"
        );
        let queries = r.queries();
        for (hit, body) in accepted.iter().enumerate() {
            assert!(
                signature_verifies(kind, body, &queries[hit + 1]),
                "{kind}: {body}"
            );
        }
        let text = accepted.iter().map(Value::to_string).collect::<Vec<_>>();
        if *kind == "pagerduty" {
            assert_eq!(
                (&accepted[0]["event_action"], &accepted[1]["event_action"]),
                (&json!("trigger"), &json!("resolve"))
            );
            assert_eq!(accepted[0]["dedup_key"], accepted[1]["dedup_key"]);
            assert!(text[0].contains("error-rate"), "{}", text[0]);
        } else {
            assert!(
                text[0].contains("FIRING") && text[0].contains("error-rate"),
                "{kind}: {}",
                text[0]
            );
            assert!(
                text[1].contains("RESOLVED") && text[1].contains("error-rate"),
                "{kind}: {}",
                text[1]
            );
        }
        assert!(!app.log_text().contains("sekrit"), "a secret in the log");
    }
}
