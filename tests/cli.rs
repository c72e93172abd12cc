//! The command line as a user meets it: errors that say what to do, and exit codes
//! scripts can rely on. (`check` on the shipped example configs: tests/deploy.rs.)

use std::path::Path;
use std::process::{Command, Output};

fn driftwarden(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(args)
        .current_dir(dir)
        .env_remove("DRIFTWARDEN_TOKEN")
        .env_remove("DRIFTWARDEN_CONFIG")
        .output()
        .expect("run driftwarden")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_fails_with_file_and_reason_on_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:7878\"\nretention_dayz = 3\n").unwrap();
    let out = driftwarden(&["check", "--config", bad.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("bad.toml") && msg.contains("retention_dayz"),
        "{msg}"
    );
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn check_fails_on_a_broken_price_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pricing.toml"),
        "[[price]]\nmodel = \"m\"\neffective_from = \"2025-01-01\"\ninput_per_1m = -2\noutput_per_1m = 1\n",
    )
    .unwrap();
    let out = driftwarden(
        &["check", "--rules", dir.path().to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("not negative"), "{}", text(&out));
}

#[test]
fn check_fails_with_the_line_of_a_broken_tier_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tiers.toml"),
        "[[tier]]\nname = \"page\"\n[tier.when]\nspend_share = 25\n\n[[tier]]\nname = \"record\"\n",
    )
    .unwrap();
    let out = driftwarden(
        &["check", "--rules", dir.path().to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("tiers.toml:3:") && msg.contains("between 0 and 1"),
        "{msg}"
    );
}

#[test]
fn check_lists_every_broken_rule_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        "[[rule]]\nname = \"a\"\nsignal = \"eror_rate\"\n\n[[rule]]\nname = \"b\"\nsignal = \"requests\"\nfor = \"soon\"\n",
    )
    .unwrap();
    let out = driftwarden(
        &["check", "--rules", dir.path().to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success(), "an invalid rule set must fail check");
    let msg = text(&out);
    assert!(msg.contains("2 error(s) in the rules"), "{msg}");
    assert!(
        msg.contains("mine.toml:3:") && msg.contains("error_rate"),
        "{msg}"
    );
    assert!(msg.contains("mine.toml:8:") && msg.contains("20m"), "{msg}");
}

#[test]
fn help_teaches_with_examples() {
    let out = driftwarden(&["serve", "--help"], repo());
    assert!(out.status.success());
    let help = text(&out);
    for want in [
        "--tail <PATH[:FORMAT]>",
        "DRIFTWARDEN_TOKEN",
        "Example:",
        "--tail-start",
    ] {
        assert!(help.contains(want), "missing {want:?} in:\n{help}");
    }
}

#[test]
fn a_database_from_a_newer_version_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let out = driftwarden(
        &[
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("newer than this driftwarden"),
        "{}",
        text(&out)
    );
}

#[test]
fn import_reports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp() - 60;
    let line = |i: i64| {
        format!(
            "{{\"id\":\"r{i}\",\"ts\":{now},\"model\":\"gpt-4o\",\"prompt_tokens\":10,\"completion_tokens\":2}}\n"
        )
    };
    let log = dir.path().join("usage.jsonl");
    std::fs::write(&log, (0..10).map(line).collect::<String>() + "{broken\n").unwrap();
    let args = ["import", "usage.jsonl", "--db", "x.db", "--rules", "none"];
    let out = driftwarden(&args, dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("imported 10 events"), "{}", text(&out));
    assert!(text(&out).contains("1 dead letters"), "{}", text(&out));
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, (10..13).map(line).collect::<String>().as_bytes()).unwrap();
    let out = driftwarden(&args, dir.path());
    assert!(text(&out).contains("imported 3 events"), "{}", text(&out));
    assert!(
        text(&out).contains("store holds 13 events"),
        "{}",
        text(&out)
    );
}

#[test]
fn import_of_a_missing_file_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let out = driftwarden(&["import", "nope.jsonl", "--db", "x.db"], dir.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("nope.jsonl"), "{}", text(&out));
}
