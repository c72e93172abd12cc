//! Schedules with the real daemon: a calendar recalibration fires and posts its
//! change event, and `driftwarden digest` prints the daily digest from the store.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{TestApp, wait_until};
use serde_json::Value;

crate::on_postgres!(a_calendar_recalibration_posts_a_change_event_on_its_schedule,);

#[test]
fn a_calendar_recalibration_posts_a_change_event_on_its_schedule() {
    let mut app = TestApp::builder()
        .config(
            r#"
[schedules]
calendar_recalibration = "*/2 * * * * *"
calendar_scope = { route = "chat" }
calendar_note = "every two seconds"
"#,
        )
        .spawn();
    let mut calendar = Vec::new();
    // Two, so the analysis has had a tick after a change-only batch.
    wait_until(
        "two calendar change events in GET /v1/changes",
        Duration::from_secs(10),
        || {
            let changes: Value = app.get("/v1/changes").json().expect("changes JSON");
            calendar = changes["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["origin"] == "calendar")
                .cloned()
                .collect();
            calendar.len() >= 2
        },
    );
    let found = &calendar[0];
    assert_eq!(found["kind"], "config_change");
    assert_eq!(found["scope"]["route"], "chat");
    assert_eq!(found["note"], "every two seconds");
    assert_eq!(
        found["ts_ms"].as_i64().unwrap() % 2000,
        0,
        "stamped with its fire time: {found}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["digest", "--print", "--db"])
        .arg(app.db_arg())
        .args(["--rules", concat!(env!("CARGO_MANIFEST_DIR"), "/rules")])
        .env_remove("DRIFTWARDEN_CONFIG")
        .output()
        .expect("running driftwarden digest");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "[DIGEST] driftwarden daily digest ",
        "(calendar): every two seconds",
        "Spend (against the day before)",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    app.terminate();
    let log = app.log_text();
    assert!(
        !log.contains("panicked") && !log.contains("no longer analysed"),
        "the analysis must survive change-only batches:\n{log}"
    );
}

#[test]
fn an_invalid_cron_expression_is_refused_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("driftwarden.toml");
    std::fs::write(&config, "[schedules]\ndigest = \"0 9 * * *\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["check", "--config"])
        .arg(&config)
        .args(["--rules", concat!(env!("CARGO_MANIFEST_DIR"), "/rules")])
        .output()
        .expect("running driftwarden check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("[schedules] digest = \"0 9 * * *\""), "{err}");
}
