//! `driftwarden demo`: the real binary plays the whole story, and the daemon it runs
//! reports each chapter's alert (read from `GET /v1/alerts`, `GET /v1/changes` and
//! `GET /v1/outbox` once the story is over and the dashboard still serves; then
//! SIGTERM stops it, as Ctrl-C).
//!
//! The story starts at a chosen instant (`--start`), not at the minute the test runs:
//! a Sunday a few minutes before midnight UTC, so the story's buckets fall off the
//! hour and the daemon's clock crosses into Monday while it tells the end. The story
//! at other minutes and weekdays is replayed, faster, by
//! `tests/suite/scenarios.rs` (`the_demo_story_is_told_at_the_right_volume_whatever_time_it_starts`).
//! The demo says the story is over only once its daemon has judged and notified
//! everything up to the story's end, so no wall-clock limit decides the outcome.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// When the story starts: a Sunday, 2 min 30 s before midnight UTC.
const START: &str = "2026-11-29T23:57:30Z";
/// Only a guard against a hung process, far beyond a healthy run on a loaded
/// machine: how long the story takes never decides the outcome.
const HANG_GUARD: Duration = Duration::from_secs(600);
/// Incidents the story plants (the deploy is announced, not one of them).
const CHAPTERS: usize = 4;

fn get(base: &str, path: &str) -> Value {
    reqwest::blocking::get(format!("{base}{path}"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn scope(a: &Value, dim: &str) -> Option<String> {
    a["scope"][dim].as_str().map(String::from)
}

#[test]
fn demo_tells_the_whole_story_at_the_right_volume() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["demo", "--listen", "127.0.0.1:0", "--seed", "1"])
        .args(["--start", START])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting driftwarden demo");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut out = Vec::new();
    let mut base = None;
    let mut snapshot = None;
    loop {
        let left = HANG_GUARD.saturating_sub(started.elapsed());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "demo still running after {HANG_GUARD:?}:\n{}",
                    out.join("\n")
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if base.is_none()
            && let Some(rest) = line.strip_prefix("driftwarden demo: dashboard at ")
        {
            base = rest
                .split_whitespace()
                .next()
                .map(|u| u.trim_end_matches('/').to_string());
        }
        if line.starts_with("story over; dashboard still at") {
            let base = base
                .as_deref()
                .expect("the dashboard URL is printed at start");
            snapshot = Some((
                get(base, "/v1/alerts?limit=1000"),
                get(base, "/v1/changes"),
                get(base, "/v1/outbox?limit=1000"),
            ));
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        out.push(line);
    }
    let status = child.wait().unwrap();
    let text = out.join("\n");
    assert!(status.success(), "demo failed ({status}):\n{text}");
    eprintln!("the demo took {:?}", started.elapsed());
    let (alerts, changes, outbox) = snapshot.unwrap_or_else(|| panic!("no summary:\n{text}"));
    let fired: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a["fired_at"].is_null())
        .collect();
    let has = |pred: &dyn Fn(&Value) -> bool| fired.iter().copied().find(|a| pred(a));

    assert!(
        has(
            &|a| ["unannounced_change", "cost_drift"].contains(&a["kind"].as_str().unwrap())
                && scope(a, "model").as_deref() == Some("gpt-4o")
        )
        .is_some(),
        "no unannounced change on gpt-4o:\n{text}"
    );
    assert!(
        has(&|a| a["kind"] == "false_efficiency").is_some(),
        "no false efficiency:\n{text}"
    );
    let spike = has(&|a| {
        a["kind"] == "traffic_drift" && scope(a, "tenant").as_deref() == Some("tenant-16")
    })
    .unwrap_or_else(|| panic!("no traffic drift on tenant-16:\n{text}"));
    let burst =
        has(&|a| a["rule"] == "error-rate" && a["scope"].as_object().is_some_and(|s| s.is_empty()))
            .unwrap_or_else(|| panic!("no global error-rate alert:\n{text}"));
    assert_eq!(burst["tier_rank"], 1, "the outage is top tier: {burst}");
    assert_eq!(burst["tier"], "page", "the outage is a page: {burst}");
    assert!(
        spike["tier_rank"].as_u64() > burst["tier_rank"].as_u64(),
        "the tenant spike is in a lower tier than the outage: {spike}"
    );

    let deploy = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "deploy" && c["scope"]["route"] == "summarize")
        .unwrap_or_else(|| panic!("the deploy was not posted: {changes}"));
    assert!(
        !deploy["impact"].is_null(),
        "no change-impact report for the deploy: {deploy}"
    );
    // No drift alert on the deployed route from the deploy until the next chapter
    // (the silent model bump, 9 h later), which touches the route too.
    let deploy_ms = deploy["ts_ms"].as_i64().unwrap();
    let next_chapter_ms = deploy_ms + 9 * 3_600_000;
    let false_alarm = has(&|a| {
        let started_ms = chrono::DateTime::parse_from_rfc3339(a["started_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        scope(a, "route").as_deref() == Some("summarize")
            && (deploy_ms..next_chapter_ms).contains(&started_ms)
    });
    assert!(
        false_alarm.is_none(),
        "the announced deploy raised an alert: {false_alarm:?}"
    );

    // What the team receives, as the replayed story holds it at other start times:
    // at most 8 Slack messages, at most one page per chapter that opens or raises.
    let slack: Vec<&Value> = outbox["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == "slack")
        .collect();
    assert!(
        slack.len() <= 8,
        "{} Slack messages: {slack:?}",
        slack.len()
    );
    let pages = slack
        .iter()
        .filter(|n| n["tier"] == "page")
        .filter(|n| {
            let title = n["title"].as_str().unwrap();
            !title.starts_with("[page] RESOLVED") && !title.ends_with("incidents resolved")
        })
        .count();
    assert!(
        (1..=CHAPTERS).contains(&pages),
        "{pages} pages for {CHAPTERS} chapters: {slack:?}"
    );

    // What the terminal shows: the URL, the narration, alerts as Slack would get them.
    assert!(text.contains("▶"), "{text}");
    assert!(text.contains("──── driftwarden → slack ────"), "{text}");
    assert!(text.contains("story over in"), "{text}");
}
