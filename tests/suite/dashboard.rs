//! The dashboard in a real headless Chromium (Debian's `chromium`), driven over the
//! DevTools protocol: the page loads without console errors, the cost chart draws
//! the seeded traffic of the chosen scope, and an exception created with the page's
//! form is in `GET /v1/exceptions`.

use crate::common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::page::Page;
use common::{TestApp, now_ms};
use driftwarden::store::sql::{Sql, Value as SqlValue};
use futures::StreamExt;
use serde_json::Value;

crate::on_postgres!(the_dashboard_charts_seeded_data_and_creates_exceptions,);

/// Where Debian's package puts the browser; `DRIFTWARDEN_CHROMIUM` overrides it.
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the page may take to show what a step waits for.
const PAGE_WAIT: Duration = Duration::from_secs(30);
const RULE: &str = "dashboard-created-rule";

fn chromium() -> PathBuf {
    let path = std::env::var_os("DRIFTWARDEN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CHROMIUM));
    // Fail, never skip: a dashboard nobody loaded in a browser is untested.
    assert!(
        path.exists(),
        "{} not found: install Chromium to run the dashboard test (apt-get install -y chromium; .ci/run does this)",
        path.display()
    );
    path
}

/// A few hundred native events over the last four hours on two models, a change
/// event everyone's charts mark, a few eval scores and one stored alert.
fn seed(app: &TestApp) {
    let start = now_ms() - 4 * 3_600_000;
    let lines: Vec<String> = (0..400)
        .map(|i| {
            let model = if i % 3 == 0 { "claude-3-5-sonnet" } else { "gpt-4o" };
            let status = if i % 17 == 0 { 500 } else { 200 };
            let ts = start + i * 36_000;
            format!(
                r#"{{"id":"dash-{i}","ts":{ts},"model":"{model}","provider":"openai","route":"chat","tenant":"team-{t}","prompt_tokens":{p},"completion_tokens":{c},"cost_usd":{cost},"latency_ms":{l},"status":{status},"finish_reason":"stop"}}"#,
                t = i % 4,
                p = 400 + (i % 50) * 7,
                c = 60 + i % 30,
                cost = 0.002 + (i % 10) as f64 * 0.0001,
                l = 500 + (i % 40) * 10,
            )
        })
        .collect();
    let (status, report) = app.post_events("native", lines.join("\n"));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 400, "{report}");

    let evals: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"request_id":"dash-{}","ts":{},"evaluator":"judge-v1","score":0.8}}"#,
                i * 10,
                start + i * 360_000 + 60_000
            )
        })
        .collect();
    let r = app.post("/v1/evals", evals.join("\n"));
    assert!(r.status().is_success(), "POST /v1/evals: {:?}", r.text());

    let change = format!(
        r#"{{"kind":"deploy","ts":{},"note":"prompt template v2"}}"#,
        now_ms() - 2 * 3_600_000
    );
    let r = app.post("/recalibrate", change);
    assert!(r.status().is_success(), "POST /recalibrate: {:?}", r.text());

    // Alerts come from the alert stage; one row stored directly lets the page render
    // one wherever `/v1/alerts` is served.
    app.store()
        .execute(
            "INSERT INTO alerts (rule, scope, lane, kind, state, tier, tier_rank, started_ms, fired_ms, summary, evidence) \
             VALUES ('cost-per-request', '{\"model\":\"gpt-4o\"}', 'cost', 'cost_drift', 'firing', 'page', 1, ?1, ?1, \
                     'cost per request up 40%', '{\"observed\":0.0031,\"baseline\":{\"median\":0.0022}}')",
            &[SqlValue::Int(now_ms() - 3_600_000)],
        )
    .expect("storing an alert");
}

/// Poll `js` (an expression) in the page until it is `true`.
async fn wait_js(page: &Page, what: &str, js: &str) {
    let start = Instant::now();
    loop {
        let ok = page
            .evaluate(js)
            .await
            .ok()
            .and_then(|v| v.into_value::<bool>().ok())
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            start.elapsed() < PAGE_WAIT,
            "timed out after {PAGE_WAIT:?} waiting for the page: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(page: &Page, selector: &str, text: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {selector}: {e}"))
        .type_str(text)
        .await
        .unwrap_or_else(|e| panic!("typing into {selector}: {e}"));
}

async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
}

/// What the page logs last, so the test knows every earlier console event arrived.
const END_MARKER: &str = "driftwarden-test: end of the walk";

/// Use the page as a person would; return every console error and uncaught exception.
async fn drive(chrome: PathBuf, url: String, token: String) -> Vec<String> {
    let profile = tempfile::tempdir().expect("a profile dir");
    let config = BrowserConfig::builder()
        .chrome_executable(chrome)
        .new_headless_mode()
        // The test runs as root in a container, where Chromium's sandbox cannot start.
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 900)
        .launch_timeout(Duration::from_secs(30))
        .request_timeout(Duration::from_secs(30))
        .build()
        .expect("a browser config");
    let (mut browser, mut handler) = Browser::launch(config).await.expect("launching Chromium");
    // The handler drives the DevTools connection; a message it cannot parse (a newer
    // Chromium's event) is not the page's fault, so it keeps going.
    let driver = tokio::spawn(async move { while handler.next().await.is_some() {} });

    let page = browser.new_page("about:blank").await.expect("a new tab");
    let problems = Arc::new(Mutex::new(Vec::new()));
    let mut console = page
        .event_listener::<EventConsoleApiCalled>()
        .await
        .unwrap();
    let mut thrown = page.event_listener::<EventExceptionThrown>().await.unwrap();
    let mut log = page.event_listener::<EventEntryAdded>().await.unwrap();
    let p = problems.clone();
    // The page logs END_MARKER last; CDP delivers console events in order, so once it
    // arrives every event logged before it has been seen.
    let (end_seen, end) = tokio::sync::oneshot::channel::<()>();
    let mut end_seen = Some(end_seen);
    let listeners = tokio::spawn(async move {
        loop {
            let problem = tokio::select! {
                Some(e) = console.next() => {
                    let marker = e.args.first().and_then(|a| a.value.as_ref()).and_then(Value::as_str) == Some(END_MARKER);
                    if marker {
                        end_seen.take().map(|s| s.send(()));
                    }
                    matches!(e.r#type, ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert)
                        .then(|| format!("console.{:?}: {:?}", e.r#type, e.args.iter().map(|a| a.value.clone()).collect::<Vec<_>>()))
                }
                Some(e) = thrown.next() => Some(format!("uncaught: {:?}", e.exception_details)),
                Some(e) = log.next() => {
                    let entry = &e.entry;
                    (entry.level == LogEntryLevel::Error)
                        .then(|| format!("log {:?}: {} {:?}", entry.source, entry.text, entry.url))
                }
                else => break,
            };
            if let Some(problem) = problem {
                p.lock().unwrap().push(problem);
            }
        }
    });

    page.goto(url.as_str())
        .await
        .expect("loading the dashboard");
    wait_js(
        &page,
        "the scope picker lists model=gpt-4o",
        r#"document.querySelector('#scope option[value="model=gpt-4o"]') !== null"#,
    )
    .await;
    page.evaluate(
        "(() => { const s = document.getElementById('scope'); s.value = 'model=gpt-4o'; \
         s.dispatchEvent(new Event('change')); return true; })()",
    )
    .await
    .expect("choosing a scope");
    wait_js(
        &page,
        "the requests chart draws model=gpt-4o's traffic, with the deploy marked",
        r#"(() => {
            const p = document.querySelector('#chart-cost-requests path.obs');
            return document.getElementById('lanes-scope').textContent.startsWith('model=gpt-4o')
                && p !== null && Number(p.dataset.points) >= 20 && (p.getAttribute('d').match(/L/g) || []).length >= 19
                && document.querySelectorAll('#chart-cost-requests line.change').length >= 1;
        })()"#,
    )
    .await;
    wait_js(
        &page,
        "the alerts panel shows the stored alert with its tier",
        r#"(() => { const t = document.getElementById('alerts-body').textContent;
            return t.includes('cost per request up 40%') && t.includes('page'); })()"#,
    )
    .await;
    wait_js(
        &page,
        "the ingest panel shows the stored events",
        r#"document.getElementById('stats-body').textContent.includes('Events stored400')"#,
    )
    .await;

    fill(&page, "#token", &token).await;
    click(&page, "#token-save").await;
    fill(&page, "#ex-rule", RULE).await;
    fill(&page, "#ex-scope", "model=gpt-4o").await;
    fill(&page, "#ex-reason", "batch backfill this week").await;
    fill(&page, "#ex-owner", "ana").await;
    fill(&page, "#ex-ticket", "OPS-42").await;
    click(&page, "#ex-create").await;
    wait_js(
        &page,
        "the page confirms the exception and lists it",
        &format!(
            r#"document.getElementById('ex-message').textContent.startsWith('Created exception')
               && document.getElementById('exceptions-body').textContent.includes('{RULE}')"#
        ),
    )
    .await;
    // Every console event the page logged so far arrives before the tab closes.
    page.evaluate(format!("console.debug({END_MARKER:?})"))
        .await
        .expect("logging the end marker");
    tokio::time::timeout(Duration::from_secs(60), end)
        .await
        .expect("the end marker's console event within a minute")
        .expect("the console listener is running");

    browser.close().await.expect("closing Chromium");
    browser.wait().await.expect("waiting for Chromium to exit");
    driver.abort();
    listeners.abort();
    problems.lock().unwrap().clone()
}

/// Evals in `/v1/series` of `scope` over the last 6 hours, summed over the buckets.
fn evals_in(app: &TestApp, scope: &str) -> f64 {
    let since = now_ms() - 6 * 3_600_000;
    let r = app.get(&format!("/v1/series?scope={scope}&since={since}&step=30m"));
    assert_eq!(r.status().as_u16(), 200, "GET /v1/series?scope={scope}");
    let body: Value = r.json().expect("series JSON");
    body["lanes"]["eval"]["evals"]["values"]
        .as_array()
        .expect("eval counts")
        .iter()
        .map(|v| v.as_f64().unwrap_or(0.0))
        .sum()
}

#[test]
fn the_dashboard_charts_seeded_data_and_creates_exceptions() {
    let chrome = chromium();
    let app = common::spawn_app();
    seed(&app);
    // Evals reach a scope through the raw event they scored: every third scored
    // request ran on claude, all of them on route chat.
    assert_eq!(evals_in(&app, "global"), 40.0);
    assert_eq!(evals_in(&app, "model=gpt-4o"), 26.0);
    assert_eq!(evals_in(&app, "route=chat"), 40.0);
    assert_eq!(evals_in(&app, "tenant=team-0"), 20.0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let problems = runtime.block_on(drive(chrome, app.url("/"), app.token.clone()));
    assert!(
        problems.is_empty(),
        "the page logged errors:\n{}",
        problems.join("\n")
    );

    let r = app.get("/v1/exceptions");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().expect("exceptions JSON");
    let created = body["exceptions"]
        .as_array()
        .expect("an exceptions list")
        .iter()
        .find(|e| e["rule"] == RULE)
        .unwrap_or_else(|| panic!("the exception created on the page is not listed: {body}"));
    assert_eq!(created["scope"]["model"], "gpt-4o", "{created}");
    assert_eq!(created["owner"], "ana");
    assert_eq!(created["ticket"], "OPS-42");
    assert_eq!(created["status"], "active");
}
