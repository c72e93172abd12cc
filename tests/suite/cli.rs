//! The command line as a user meets it: errors that say what to do, and exit codes
//! scripts can rely on. (`check` on the shipped example configs: tests/suite/deploy.rs.)

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
fn replicas_on_postgres_without_a_shared_token_are_refused_before_they_connect() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the refusal must come before any connection.
    let out = driftwarden(
        &[
            "serve",
            "--db",
            "postgres://dw@127.0.0.1:1/dw",
            "--listen",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("every replica needs the same API token")
            && said.contains("DRIFTWARDEN_TOKEN")
            && !said.contains("connect"),
        "{said}"
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

/// The private directory named in a run's log line about the shipped rules.
fn shipped_dir(log: &str) -> Option<std::path::PathBuf> {
    let line = log
        .lines()
        .find(|l| l.contains("using the shipped rules"))?;
    // The log may be coloured: drop its escape sequences (ESC [ ... m) first.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                chars.by_ref().find(|&c| c == 'm');
            }
            c => plain.push(c),
        }
    }
    let from = plain.find(" dir=")? + " dir=".len();
    Some(plain[from..].split_whitespace().next()?.into())
}

#[test]
fn a_binary_alone_runs_on_the_rules_it_was_built_with() {
    let alone = tempfile::tempdir().unwrap();
    let rules = repo().join("rules");
    let with_dir = driftwarden(&["check", "--rules", rules.to_str().unwrap()], alone.path());
    assert!(with_dir.status.success(), "{}", text(&with_dir));
    let out = driftwarden(&["check"], alone.path());
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    let dir = shipped_dir(&log).unwrap_or_else(|| panic!("the log says so: {log}"));
    assert!(!dir.exists(), "the private directory is removed at exit");
    // The same tiers and rules as the directory they were built from.
    let counts = |o: &Output| {
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        s[s.find("priced in").unwrap()..]
            .split_once(';')
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(counts(&out), counts(&with_dir));

    // A replay alone judges with them too.
    let line = |id: &str, ts: &str| {
        format!(
            "{{\"id\":\"{id}\",\"ts\":\"{ts}\",\"model\":\"gpt-4o\",\"prompt_tokens\":10,\"completion_tokens\":5,\"status\":200}}\n"
        )
    };
    let log_file = alone.path().join("usage.jsonl");
    let lines = line("a", "2026-06-01T00:00:00Z") + &line("b", "2026-06-01T00:30:00Z");
    std::fs::write(&log_file, lines).unwrap();
    let replay = driftwarden(&["replay", "--events", "usage.jsonl"], alone.path());
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("replayed 2 events"),
        "{}",
        text(&replay)
    );
    assert!(shipped_dir(&String::from_utf8_lossy(&replay.stderr)).is_some());
}

#[test]
fn a_rules_directory_named_that_does_not_exist_stays_an_error() {
    let alone = tempfile::tempdir().unwrap();
    let out = driftwarden(&["check", "--rules", "my-rules"], alone.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("my-rules"), "{}", text(&out));
    let config = alone.path().join("driftwarden.toml");
    std::fs::write(&config, "rules = \"their-rules\"\n").unwrap();
    let out = driftwarden(&["check", "--config", "driftwarden.toml"], alone.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("their-rules"), "{}", text(&out));
    assert!(shipped_dir(&text(&out)).is_none(), "{}", text(&out));
}

#[test]
fn rules_write_starts_a_directory_and_print_shows_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = driftwarden(&["rules", "--write", "rules"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
    for name in ["drift.toml", "pricing.toml", "tiers.toml"] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join("rules").join(name)).unwrap(),
            std::fs::read_to_string(repo().join("rules").join(name)).unwrap(),
            "{name}"
        );
    }
    // Edited, then written again: refused, the edit kept.
    std::fs::write(dir.path().join("rules/drift.toml"), "# mine\n").unwrap();
    let again = driftwarden(&["rules", "--write", "rules"], dir.path());
    assert!(!again.status.success());
    assert!(text(&again).contains("exists"), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rules/drift.toml")).unwrap(),
        "# mine\n"
    );
    let printed = driftwarden(&["rules", "--print"], dir.path());
    assert!(printed.status.success(), "{}", text(&printed));
    let printed = String::from_utf8_lossy(&printed.stdout);
    let tiers = std::fs::read_to_string(repo().join("rules/tiers.toml")).unwrap();
    assert!(printed.contains(&format!("# ==> tiers.toml <==\n{tiers}")));
    assert!(printed.contains("# ==> drift.toml <==") && printed.contains("# ==> pricing.toml <=="));
    let neither = driftwarden(&["rules"], dir.path());
    assert!(!neither.status.success(), "one action is required");
}

/// deploy/burstgpt.toml reads the BurstGPT trace's CSV layout: models mapped to priced
/// names, times from the configured start, zero response tokens as failures, the log
/// type as the route; a broken line is a dead letter and the lines around it are read.
#[test]
fn burstgpt_example_imports_the_trace_layout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("burst.csv"),
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n\
         5,ChatGPT,472,18,490,Conversation log\n\
         45,ChatGPT,1087,0,1087,Conversation log\n\
         118.5,GPT-4,417,276,693,API log\n\
         soon,GPT-4,10,10,20,API log\n\
         3600,GPT-4,1500,0,1500,API log\n",
    )
    .unwrap();
    let config = repo().join("deploy/burstgpt.toml");
    let rules = repo().join("rules");
    let out = driftwarden(
        &[
            "import",
            "burst.csv",
            "--format",
            "burstgpt",
            "--config",
            config.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
            "--db",
            "x.db",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("imported 4 events"), "{}", text(&out));
    assert!(text(&out).contains("1 dead letters"), "{}", text(&out));

    let conn = rusqlite::Connection::open(dir.path().join("x.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT ts_ms, model, provider, route, prompt_tokens, completion_tokens, status, \
             error_type, cost_source FROM events ORDER BY ts_ms",
        )
        .unwrap();
    type Row = (
        i64,
        String,
        String,
        String,
        i64,
        i64,
        Option<i64>,
        Option<String>,
        String,
    );
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // 2023-07-01T00:00:00Z, the start deploy/burstgpt.toml gives the trace.
    let base = 1_688_169_600_000;
    let row = |offset_ms: i64, model: &str, route: &str, tokens: (i64, i64), failed: bool| {
        (
            base + offset_ms,
            model.to_string(),
            "azure-openai".to_string(),
            route.to_string(),
            tokens.0,
            tokens.1,
            failed.then_some(500),
            failed.then(|| "failed".to_string()),
            "price_table".to_string(),
        )
    };
    assert_eq!(
        rows,
        vec![
            row(5_000, "gpt-3.5-turbo", "conversation", (472, 18), false),
            row(45_000, "gpt-3.5-turbo", "conversation", (1087, 0), true),
            row(118_500, "gpt-4", "api", (417, 276), false),
            row(3_600_000, "gpt-4", "api", (1500, 0), true),
        ]
    );
    let reason: String = conn
        .query_row("SELECT reason FROM dead_letters", [], |r| r.get(0))
        .unwrap();
    assert!(
        reason.contains("\"Timestamp\" (ts) is not a number"),
        "{reason}"
    );
}
