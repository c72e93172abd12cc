//! The exception registry against a running daemon: `/v1/exceptions` and the
//! `driftwarden exceptions` commands, with the audit log they leave.

use crate::common;

use std::process::{Command, Output};

use common::{TOKEN, spawn_app};
use serde_json::{Value, json};

crate::on_postgres!(
    the_api_creates_lists_renews_up_to_the_limit_revokes_and_audits,
    the_exceptions_commands_drive_the_registry,
    command_mistakes_are_explained,
);

fn cli(args: &[&str], url: &str, token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    cmd.args(args)
        .env("DRIFTWARDEN_URL", url)
        .env("USER", "ana")
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

fn actions(audit: &Value) -> Vec<&str> {
    audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect()
}

#[test]
fn the_api_creates_lists_renews_up_to_the_limit_revokes_and_audits() {
    let app = spawn_app();
    let body = json!({
        "rule": "cost-per-request",
        "scope": {"model": "gpt-4o"},
        "reason": "nightly batch re-embeds the catalogue",
        "owner": "ana",
        "ticket": "OPS-42",
        "for": "3d",
    });
    let unauth = app
        .client
        .post(app.url("/v1/exceptions"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);

    let created = app.post("/v1/exceptions", body.to_string());
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().unwrap();
    let id = created["exception"]["id"].as_i64().unwrap();
    assert_eq!(created["exception"]["status"], "active");
    assert_eq!(created["exception"]["renewals"], 0);
    assert_eq!(created["warnings"], json!([]));

    let too_long = app.post(
        "/v1/exceptions",
        json!({"rule":"r","reason":"r","owner":"o","for":"15d"}).to_string(),
    );
    assert_eq!(too_long.status().as_u16(), 400);
    assert!(too_long.text().unwrap().contains("at most 14 days"));
    let no_expiry = app.post(
        "/v1/exceptions",
        json!({"rule":"r","reason":"r","owner":"o"}).to_string(),
    );
    assert_eq!(no_expiry.status().as_u16(), 400);

    let wild: Value = app
        .post(
            "/v1/exceptions",
            json!({"rule":"error-rate","scope":{"route":"*"},"reason":"flaky upstream","owner":"bo","for":"1d"}).to_string(),
        )
        .json()
        .unwrap();
    assert!(
        wild["warnings"][0]
            .as_str()
            .unwrap()
            .contains("never suppresses a rank-1"),
        "{wild}"
    );

    let list: Value = app.get("/v1/exceptions?active=true").json().unwrap();
    assert_eq!(list["exceptions"].as_array().unwrap().len(), 2);

    let renew = |path: &str| {
        app.client
            .post(app.url(path))
            .bearer_auth(TOKEN)
            .json(&json!({"for": "2d", "actor": "ana"}))
            .send()
            .unwrap()
    };
    let renew_path = format!("/v1/exceptions/{id}/renew");
    for n in 1..=2 {
        let r = renew(&renew_path);
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.json::<Value>().unwrap()["exception"]["renewals"], n);
    }
    let refused = renew(&renew_path);
    assert_eq!(refused.status().as_u16(), 409);
    let msg = refused.json::<Value>().unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        msg,
        "renewed 2 times already: fix the rule (loosen its threshold or scope) instead of renewing"
    );
    assert_eq!(renew("/v1/exceptions/9999/renew").status().as_u16(), 404);

    let delete_unauth = app
        .client
        .delete(app.url(&format!("/v1/exceptions/{id}")))
        .send()
        .unwrap();
    assert_eq!(delete_unauth.status().as_u16(), 401);
    let revoked = app
        .client
        .delete(app.url(&format!("/v1/exceptions/{id}?actor=bo")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    assert_eq!(
        revoked.json::<Value>().unwrap()["exception"]["status"],
        "revoked"
    );

    let active: Value = app.get("/v1/exceptions?active=true").json().unwrap();
    assert_eq!(active["exceptions"].as_array().unwrap().len(), 1);
    let all: Value = app.get("/v1/exceptions").json().unwrap();
    assert_eq!(all["exceptions"].as_array().unwrap().len(), 2);

    let audit: Value = app
        .get(&format!("/v1/exceptions/{id}/audit"))
        .json()
        .unwrap();
    assert_eq!(
        actions(&audit),
        ["created", "renewed", "renewed", "revoked"]
    );
    assert_eq!(audit["audit"][3]["actor"], "bo");
    assert_eq!(audit["audit"][0]["details"]["ticket"], "OPS-42");
    assert_eq!(
        app.sql_i64("SELECT count(*) FROM exception_audit"),
        5,
        "four changes to one exception, one to the other"
    );
}

#[test]
fn the_exceptions_commands_drive_the_registry() {
    let app = spawn_app();
    let url = app.address.as_str();
    let add = cli(
        &[
            "exceptions",
            "add",
            "--rule",
            "cost-per-request",
            "--scope",
            "model=gpt-4o",
            "--scope",
            "route=*",
            "--reason",
            "nightly batch",
            "--owner",
            "ana",
            "--for",
            "7d",
        ],
        url,
        Some(TOKEN),
    );
    assert!(add.status.success(), "{}", text(&add));
    assert!(
        text(&add).contains("created exception 1") && text(&add).contains("warning:"),
        "{}",
        text(&add)
    );

    let list = cli(&["exceptions", "list"], url, None);
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        text(&list).contains("model=gpt-4o,route=*") && text(&list).contains("nightly batch"),
        "{}",
        text(&list)
    );

    for _ in 0..2 {
        let renew = cli(
            &["exceptions", "renew", "1", "--for", "1d"],
            url,
            Some(TOKEN),
        );
        assert!(renew.status.success(), "{}", text(&renew));
    }
    let refused = cli(
        &["exceptions", "renew", "1", "--for", "1d"],
        url,
        Some(TOKEN),
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("409") && text(&refused).contains("fix the rule"),
        "{}",
        text(&refused)
    );

    let revoke = cli(&["exceptions", "revoke", "1"], url, Some(TOKEN));
    assert!(revoke.status.success(), "{}", text(&revoke));
    let again = cli(&["exceptions", "revoke", "1"], url, Some(TOKEN));
    assert!(!again.status.success());
    assert!(text(&again).contains("was revoked"), "{}", text(&again));

    let empty = cli(&["exceptions", "list"], url, None);
    assert!(
        text(&empty).contains("no active exceptions"),
        "{}",
        text(&empty)
    );
    let audit = cli(&["exceptions", "audit", "1"], url, None);
    let log = text(&audit);
    assert!(
        log.contains("created") && log.contains("renewed") && log.contains("revoked"),
        "{log}"
    );
    assert!(log.contains("ana"), "the actor defaults to $USER: {log}");
}

#[test]
fn command_mistakes_are_explained() {
    let app = spawn_app();
    let url = app.address.as_str();
    let help = cli(&["exceptions", "add", "--help"], url, None);
    assert!(text(&help).contains("Example: driftwarden exceptions add"));
    let base = [
        "exceptions",
        "add",
        "--rule",
        "r",
        "--reason",
        "x",
        "--owner",
        "o",
    ];
    let no_expiry = cli(&base, url, Some(TOKEN));
    assert!(!no_expiry.status.success());
    assert!(text(&no_expiry).contains("--for"), "{}", text(&no_expiry));
    let no_token = cli(&[&base[..], &["--for", "1d"]].concat(), url, None);
    assert!(!no_token.status.success());
    assert!(
        text(&no_token).contains("no API token"),
        "{}",
        text(&no_token)
    );
    let bad_duration = cli(
        &[&base[..], &["--for", "1 week"]].concat(),
        url,
        Some(TOKEN),
    );
    assert!(!bad_duration.status.success());
    assert!(
        text(&bad_duration).contains("e.g. 7d"),
        "{}",
        text(&bad_duration)
    );
    let missing = cli(&["exceptions", "revoke", "42"], url, Some(TOKEN));
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("no exception 42"),
        "{}",
        text(&missing)
    );
}
