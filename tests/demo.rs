//! `driftwarden demo`: the real binary plays the whole story, and the daemon it runs
//! reports each chapter's alert (read from `GET /v1/alerts` and `GET /v1/changes` once
//! the story is over and the dashboard still serves; then SIGTERM stops it, as Ctrl-C).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The story must end within two minutes of the command starting.
const STORY_LIMIT: Duration = Duration::from_secs(120);
/// The test gives up on a hung process after this.
const HARD_LIMIT: Duration = Duration::from_secs(240);

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
fn demo_tells_the_whole_story_within_two_minutes() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["demo", "--listen", "127.0.0.1:0", "--seed", "1"])
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
    let mut elapsed = None;
    loop {
        let left = HARD_LIMIT.saturating_sub(started.elapsed());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "demo still running after {HARD_LIMIT:?}:\n{}",
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
            elapsed = Some(started.elapsed());
            let base = base
                .as_deref()
                .expect("the dashboard URL is printed at start");
            snapshot = Some((get(base, "/v1/alerts?limit=1000"), get(base, "/v1/changes")));
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        out.push(line);
    }
    let status = child.wait().unwrap();
    let text = out.join("\n");
    assert!(status.success(), "demo failed ({status}):\n{text}");
    let elapsed = elapsed.unwrap_or_else(|| panic!("the story did not end:\n{text}"));
    assert!(
        elapsed < STORY_LIMIT,
        "the demo took {elapsed:?}, over {STORY_LIMIT:?}"
    );
    let (alerts, changes) = snapshot.unwrap_or_else(|| panic!("no summary:\n{text}"));
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

    // What the terminal shows: the URL, the narration, alerts as Slack would get them.
    assert!(text.contains("▶"), "{text}");
    assert!(text.contains("──── driftwarden → slack ────"), "{text}");
    assert!(text.contains("story over in"), "{text}");
}
