//! Change events: `POST /recalibrate`, `GET /v1/changes`, and the `recalibrate` /
//! `changes` commands a deploy pipeline runs against the daemon.

use crate::common;

use std::process::{Command, Output};

use common::{TOKEN, spawn_app};
use driftwarden::store::sql::{Sql, Value as SqlValue};
use serde_json::{Value, json};

crate::on_postgres!(
    posted_changes_are_stored_once_and_listed,
    the_recalibrate_command_posts_and_changes_lists,
    command_errors_say_what_to_do,
    the_ci_deploy_script_records_a_deploy,
    alerts_are_listed_with_filters_by_the_api_and_the_alerts_command,
);

fn cli(args: &[&str], url: &str, token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    cmd.args(args)
        .env("DRIFTWARDEN_URL", url)
        .env_remove("DRIFTWARDEN_TOKEN");
    if let Some(t) = token {
        cmd.env("DRIFTWARDEN_TOKEN", t);
    }
    cmd.current_dir(std::env::temp_dir())
        .output()
        .expect("run driftwarden")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn posted_changes_are_stored_once_and_listed() {
    let app = spawn_app();
    let body = json!({"kind":"deploy","ts":"2026-11-01T12:00:00Z","scope":{"route":"summarize"},"note":"prompt template v2"});
    let unauth = app
        .client
        .post(app.url("/recalibrate"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);

    let first = app.post("/recalibrate", body.to_string());
    assert_eq!(first.status().as_u16(), 201);
    let again = app.post("/recalibrate", body.to_string());
    assert_eq!(
        again.status().as_u16(),
        200,
        "a retried deploy hook is a no-op"
    );
    assert_eq!(again.json::<Value>().unwrap()["duplicates"], 1);

    let bad = app.post(
        "/recalibrate",
        r#"{"kind":"deploy","scope":{"region":"eu"}}"#,
    );
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().unwrap().contains("not one of model, route"));

    let list: Value = app.get("/v1/changes").json().unwrap();
    let changes = list["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["kind"], "deploy");
    assert_eq!(changes[0]["scope"], json!({"route":"summarize"}));
    assert_eq!(changes[0]["note"], "prompt template v2");
    assert_eq!(changes[0]["origin"], "api");
    let later: Value = app
        .get("/v1/changes?since=2026-11-02T00:00:00Z")
        .json()
        .unwrap();
    assert_eq!(later["changes"].as_array().unwrap().len(), 0);
}

#[test]
fn the_recalibrate_command_posts_and_changes_lists() {
    let app = spawn_app();
    let out = cli(
        &[
            "recalibrate",
            "--kind",
            "model_bump",
            "--scope",
            "model=gpt-4o",
            "--note",
            "2024-08-06 snapshot",
        ],
        &app.address,
        Some(TOKEN),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with("recorded:"), "{}", text(&out));
    let out = cli(&["changes"], &app.address, None);
    assert!(out.status.success(), "{}", text(&out));
    let listed = text(&out);
    assert!(
        listed.contains("model_bump")
            && listed.contains("gpt-4o")
            && listed.contains("2024-08-06 snapshot"),
        "{listed}"
    );
}

#[test]
fn command_errors_say_what_to_do() {
    let app = spawn_app();
    let wrong = cli(
        &["recalibrate", "--kind", "deploy"],
        &app.address,
        Some("not-the-token-0000"),
    );
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("refused the token"),
        "{}",
        text(&wrong)
    );
    let bad_scope = cli(
        &["recalibrate", "--kind", "deploy", "--scope", "route"],
        &app.address,
        Some(TOKEN),
    );
    assert!(!bad_scope.status.success());
    assert!(
        text(&bad_scope).contains("must be DIM=VALUE"),
        "{}",
        text(&bad_scope)
    );
    let down = cli(&["changes"], "http://127.0.0.1:9", None);
    assert!(!down.status.success());
    assert!(
        text(&down).contains("cannot reach driftwarden"),
        "{}",
        text(&down)
    );
}

#[test]
fn the_ci_deploy_script_records_a_deploy() {
    let app = spawn_app();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ci/post-deploy.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("DRIFTWARDEN_BIN", env!("CARGO_BIN_EXE_driftwarden"))
        .env("DRIFTWARDEN_URL", &app.address)
        .env("DRIFTWARDEN_TOKEN", TOKEN)
        .env("DEPLOY_ROUTE", "summarize")
        .env("DEPLOY_NOTE", "release 2026.11.27")
        .output()
        .expect("run the deploy script");
    assert!(out.status.success(), "{}", text(&out));
    let list: Value = app.get("/v1/changes").json().unwrap();
    let c = &list["changes"][0];
    assert_eq!(
        (c["kind"].as_str(), c["note"].as_str()),
        (Some("deploy"), Some("release 2026.11.27"))
    );
    assert_eq!(c["scope"], json!({"route": "summarize"}));

    let missing = Command::new("bash")
        .arg(script)
        .env_remove("DRIFTWARDEN_URL")
        .env_remove("DRIFTWARDEN_TOKEN")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("set DRIFTWARDEN_URL"),
        "{}",
        text(&missing)
    );
}

#[test]
fn alerts_are_listed_with_filters_by_the_api_and_the_alerts_command() {
    let app = spawn_app();
    let store = app.store();
    for (rule, state, tier, rank, suppressed) in [
        ("cost-per-request", "firing", "page", 1, SqlValue::Null),
        ("traffic-volume", "resolved", "digest", 3, SqlValue::Int(7)),
    ] {
        let summary = format!("{rule} moved");
        store
            .execute(
                "INSERT INTO alerts (rule, scope, lane, kind, state, tier, tier_rank, started_ms, fired_ms, summary, evidence, suppressed_by) \
                 VALUES (?1, '{\"model\":\"gpt-4o\"}', 'cost', 'cost_drift', ?2, ?3, ?4, ?5, ?5, ?6, '{}', ?7)",
                &[
                    SqlValue::Text(rule),
                    SqlValue::Text(state),
                    SqlValue::Text(tier),
                    SqlValue::Int(rank),
                    SqlValue::Int(common::now_ms()),
                    SqlValue::Text(&summary),
                    suppressed,
                ],
            )
            .expect("storing an alert");
    }
    let all: Value = app.get("/v1/alerts").json().unwrap();
    assert_eq!(all["alerts"].as_array().unwrap().len(), 2);
    let firing: Value = app.get("/v1/alerts?state=firing&tier=page").json().unwrap();
    let rows = firing["alerts"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{firing}");
    assert_eq!(rows[0]["rule"], "cost-per-request");
    assert_eq!(rows[0]["scope"]["model"], "gpt-4o");
    let suppressed: Value = app.get("/v1/alerts?suppressed=true").json().unwrap();
    assert_eq!(suppressed["alerts"][0]["suppressed_by"], 7);
    assert_eq!(app.get("/v1/alerts?state=burning").status(), 400);

    let out = cli(&["alerts", "--state", "firing"], &app.address, None);
    assert!(out.status.success(), "{}", text(&out));
    let listed = text(&out);
    assert!(
        listed.contains("cost-per-request")
            && listed.contains("page")
            && !listed.contains("traffic-volume"),
        "{listed}"
    );
    let out = cli(&["alerts", "--kind", "cost_drift"], &app.address, None);
    assert!(
        text(&out).contains("suppressed by exception 7"),
        "{}",
        text(&out)
    );
}
