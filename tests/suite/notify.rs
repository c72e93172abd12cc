//! Notification delivery against real receivers: an HTTP server standing in for Slack
//! and generic webhooks (it records bodies and answers 500, 404 or 429 when told), and
//! an SMTP server over TCP. The worker runs on a real outbox (a SQLite file, and in
//! `on_postgres` a private PostgreSQL server), and is stopped and started again on the
//! same store to show what survives a restart.

use crate::common;
use crate::support::receivers;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftwarden::config::FileConfig;
use driftwarden::domain::Alert;
use driftwarden::notify::{self, Channel, Message, Notifier, WorkerOptions};
use driftwarden::store::Location;
use driftwarden::store::outbox::{self, OutboxRow, OutboxState};
use driftwarden::store::sql::Sql;
use driftwarden::telemetry::Metrics;
use receivers::{Receiver, Reply, smtp_server};
use serde_json::{Value, json};

crate::on_postgres!(
    slack_gets_block_kit_with_a_fallback_text,
    discord_gets_content_and_an_embed_per_alert_after_failures,
    pagerduty_triggers_and_resolves_one_incident_by_its_dedup_key,
    teams_gets_an_adaptive_card_after_a_failure,
    telegram_gets_an_html_message_for_its_chat_after_a_429,
    feishu_gets_a_signed_card_that_verifies,
    a_refusal_inside_a_200_is_not_counted_as_sent,
    dingtalk_gets_signed_markdown_paced_to_twenty_a_minute,
    wecom_gets_markdown_within_4096_bytes,
    a_500_is_retried_with_backoff_until_it_is_accepted,
    a_webhook_retry_carries_the_same_idempotency_key,
    a_worker_survives_a_failing_outbox_query_and_delivers_after_it,
    retry_after_on_429_is_honored,
    slack_gets_at_most_one_message_per_second,
    after_max_attempts_a_notification_is_dead,
    a_4xx_other_than_429_is_dead_at_once,
    a_sent_notification_is_never_sent_again_after_a_restart,
    a_pending_notification_survives_a_restart_and_is_delivered_after_it,
    email_arrives_over_smtp_with_plain_and_html_parts,
    the_daemon_delivers_the_outbox_and_lists_dead_notifications,
);

/// How long a condition may take before a test fails.
const WAIT: Duration = Duration::from_secs(20);

/// An alert line as the alert stage writes it (DESIGN.md), with full evidence.
fn alert() -> Alert {
    serde_json::from_value(json!({
        "event": "firing", "rule": "cost-per-request", "lane": "cost", "kind": "cost_drift",
        "scope": {"model": "gpt-4o"}, "at": "2026-06-06T09:40:00Z", "tier": "page",
        "tier_rank": 1, "summary": "cost per request up 48% since the deploy",
        "evidence": {
            "observed": 0.0123, "baseline": 0.0083,
            "impact": {"requests_share": 0.42, "spend_share": 0.615, "tenants": 7,
                       "money_at_risk_per_day_usd": 182.5, "customer_facing": true},
            "changes": [{"kind": "deploy", "at": "2026-06-06T09:00:00Z",
                         "scope": {"route": "summarize"}, "note": "prompt template v2"}]
        }
    }))
    .unwrap()
}

fn message(title: &str) -> Message {
    Message {
        title: title.into(),
        tier: Some("page".into()),
        alerts: vec![alert()],
        text: String::new(),
    }
}

/// Channels from `[[channel]]` TOML, resolved as the daemon does.
fn channels(toml_text: &str) -> Vec<Channel> {
    let file: FileConfig = toml::from_str(toml_text).unwrap();
    notify::config::resolve(file.channel).unwrap()
}

fn fast() -> WorkerOptions {
    WorkerOptions {
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(200),
        max_attempts: 8,
        poll: Duration::from_millis(25),
        send_timeout: Duration::from_secs(5),
        dashboard_url: Some("https://driftwarden.example/".into()),
        ..WorkerOptions::default()
    }
}

/// Run `f`, which talks to the store, from async test code: on PostgreSQL the
/// blocking client must not run on a thread that drives tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    if common::on_pg() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// A migrated store: a SQLite file in a temp dir, or in `on_postgres` a database of
/// the test's PostgreSQL server. The first half keeps it alive.
fn database() -> (common::TestStore, Location) {
    let store = blocking(common::TestStore::new);
    let location = store.location.clone();
    (store, location)
}

fn enqueue(db: &Location, channel: &str, m: &Message) -> i64 {
    blocking(|| {
        let conn = outbox::open(db).unwrap();
        outbox::enqueue(&conn, channel, m, common::now_ms()).unwrap()
    })
}

fn start(db: &Location, channels: &[Channel], options: WorkerOptions) -> (Notifier, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let n = notify::spawn(db, channels, options, metrics.clone()).unwrap();
    (n, metrics)
}

fn row(db: &Location, id: i64) -> OutboxRow {
    blocking(|| outbox::list(db, None, 1000))
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .expect("row exists")
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The worker of `channel`'s poll counter, `None` before the notifier created it.
fn polls(metrics: &Metrics, channel: &str) -> Option<f64> {
    common::sample(
        &metrics.render(),
        &format!("driftwarden_outbox_polls_total{{channel=\"{channel}\"}}"),
    )
}

/// Wait until the worker of `channel` has looked for due rows `more` times since.
async fn wait_polls(metrics: &Metrics, channel: &str, more: f64) {
    let count = || polls(metrics, channel).unwrap_or(0.0);
    let from = count();
    wait_for(&format!("{more} polls of {channel}"), || {
        count() >= from + more
    })
    .await;
}

async fn wait_state(db: &Location, id: i64, state: OutboxState) -> OutboxRow {
    wait_for(&format!("row {id} {state:?}"), || {
        row(db, id).state == state
    })
    .await;
    row(db, id)
}

fn slack_toml(url: &str) -> String {
    format!("[[channel]]\nname = \"oncall\"\ntype = \"slack\"\nwebhook_url = \"{url}\"\n")
}

fn webhook_toml(url: &str) -> String {
    format!("[[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_block_kit_with_a_fallback_text() {
    let slack = Receiver::start();
    let (_dir, db) = database();
    let id = enqueue(&db, "oncall", &message("Cost drift on gpt-4o"));
    let (worker, metrics) = start(
        &db,
        &channels(&slack_toml(&slack.url("/services/T0/B0/x"))),
        fast(),
    );
    let sent = wait_state(&db, id, OutboxState::Sent).await;
    worker.stop().await;

    assert_eq!((sent.attempts, sent.last_error), (0, None));
    let body = &slack.bodies()[0];
    let text = body["text"].as_str().unwrap();
    for want in [
        "[PAGE] Cost drift on gpt-4o",
        "on model=gpt-4o",
        "observed 0.0123 vs baseline 0.0083",
        "42.0% of requests, 61.5% of spend, 7 tenants, $182.50/day spent, customer-facing",
        "change nearby: deploy at 2026-06-06T09:00:00Z (route=summarize): prompt template v2",
    ] {
        assert!(text.contains(want), "fallback lacks {want:?}: {text}");
    }
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "Cost drift on gpt-4o");
    let section = blocks.iter().find(|b| b["type"] == "section").unwrap();
    assert!(
        section["text"]["text"]
            .as_str()
            .unwrap()
            .contains("*FIRING*")
    );
    assert_eq!(section["fields"].as_array().unwrap().len(), 3);
    let rendered = metrics.render();
    assert!(
        common::sample(
            &rendered,
            "driftwarden_notifications_sent_total{channel=\"oncall\"}"
        ) == Some(1.0),
        "{rendered}"
    );
    assert_eq!(
        common::sample(&rendered, "driftwarden_outbox_pending{channel=\"oncall\"}"),
        Some(0.0)
    );
}

/// Discord: a receiver that fails first (500, then 429 with Retry-After) gets the
/// message once it accepts, as Discord's webhook shape: content, one embed per
/// alert, no mentions parsed. The webhook's secret path never reaches the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_gets_content_and_an_embed_per_alert_after_failures() {
    let discord = Receiver::start();
    discord.then(&[Reply::Status(500), Reply::RetryAfter(0)]);
    let (_dir, db) = database();
    let id = enqueue(&db, "team", &message("Cost drift on gpt-4o"));
    let url = discord.url("/api/webhooks/123/sekrit-token");
    let toml =
        format!("[[channel]]\nname = \"team\"\ntype = \"discord\"\nwebhook_url = \"{url}\"\n");
    let (worker, _) = start(&db, &channels(&toml), fast());
    let sent = wait_state(&db, id, OutboxState::Sent).await;
    worker.stop().await;
    assert_eq!(discord.count(), 3, "two failures, then accepted, once");
    assert_eq!(sent.attempts, 2);
    assert!(!sent.last_error.unwrap_or_default().contains("sekrit"));
    let body = &discord.bodies()[2];
    assert_eq!(body["content"], "**[PAGE] Cost drift on gpt-4o**");
    assert_eq!(body["allowed_mentions"]["parse"], json!([]));
    let embeds = body["embeds"].as_array().unwrap();
    assert_eq!(embeds.len(), 1);
    assert!(
        embeds[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("FIRING cost-per-request"),
        "{body}"
    );
    assert!(
        embeds[0]["description"]
            .as_str()
            .unwrap()
            .contains("**Blast radius:**"),
        "{body}"
    );
}

/// HMAC-SHA256 as base64, written here from the vendors' documentation rather than
/// taken from driftwarden, so a wrong signature in the product fails these tests.
fn hmac_sha256_base64(key: &[u8], data: &[u8]) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The channel `name` of `kind` with extra `keys` lines, as TOML.
fn channel_toml(name: &str, kind: &str, keys: &str) -> String {
    format!("[[channel]]\nname = \"{name}\"\ntype = \"{kind}\"\n{keys}\n")
}

/// One firing alert of incident `incident`, and its resolve.
fn incident_messages(incident: i64) -> (Message, Message) {
    let mut firing = alert();
    firing.incident = Some(incident);
    let mut resolved = firing.clone();
    resolved.event = driftwarden::domain::AlertEvent::Resolved;
    resolved.summary = "cost per request back to its baseline".into();
    let message = |a: Alert, title: &str| Message {
        title: title.into(),
        tier: Some("page".into()),
        alerts: vec![a],
        text: String::new(),
    };
    (
        message(firing, "Cost drift on gpt-4o"),
        message(resolved, "Resolved: cost drift on gpt-4o"),
    )
}

/// Enqueue `messages` for `channel`, run a worker until all are sent, and return the
/// rows: a receiver that failed first must have got each message once it accepted.
async fn deliver(channel_toml: &str, messages: &[Message]) -> Vec<OutboxRow> {
    let (_dir, db) = database();
    let name = channels(channel_toml)[0].name.clone();
    let ids: Vec<i64> = messages.iter().map(|m| enqueue(&db, &name, m)).collect();
    let (worker, _) = start(&db, &channels(channel_toml), fast());
    let mut rows = Vec::new();
    for id in ids {
        rows.push(wait_state(&db, id, OutboxState::Sent).await);
    }
    worker.stop().await;
    rows
}

/// PagerDuty Events API v2: the opening triggers and the resolve resolves, both with
/// the incident's dedup_key; a 500 and a 429 first are retried, and the resolve
/// (queued second) waits for the trigger instead of overtaking it; the routing key is
/// in each body and nowhere in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_triggers_and_resolves_one_incident_by_its_dedup_key() {
    let pd = Receiver::start();
    pd.then(&[
        Reply::Status(500),
        Reply::Json(429, r#"{"status":"throttle event"}"#),
    ]);
    let (open, resolve) = incident_messages(17);
    let toml = channel_toml(
        "oncall",
        "pagerduty",
        &format!(
            "routing_key = \"sekrit-routing-key\"\nurl = \"{}\"",
            pd.url("/v2/enqueue")
        ),
    );
    let rows = deliver(&toml, &[open, resolve]).await;
    let accepted = pd.accepted();
    assert_eq!(accepted.len(), 2, "one trigger, one resolve: {accepted:#?}");
    assert_eq!(pd.count(), 4);
    let (trigger, resolve) = (&accepted[0], &accepted[1]);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(trigger["routing_key"], "sekrit-routing-key");
    assert_eq!(trigger["dedup_key"], "driftwarden/incident/17");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
    let payload = &trigger["payload"];
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["source"], "driftwarden");
    assert!(payload["summary"].as_str().unwrap().len() <= 1024);
    assert!(
        chrono::DateTime::parse_from_rfc3339(payload["timestamp"].as_str().unwrap()).is_ok(),
        "{payload}"
    );
    assert_eq!(
        payload["custom_details"]["blast_radius"],
        "42.0% of requests, 61.5% of spend, 7 tenants, $182.50/day spent, customer-facing"
    );
    assert_eq!(trigger["client_url"], "https://driftwarden.example/");
    for r in &rows {
        assert!(!r.last_error.clone().unwrap_or_default().contains("sekrit"));
    }
}

/// Microsoft Teams (Workflows): one Adaptive Card per message, after a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_gets_an_adaptive_card_after_a_failure() {
    let teams = Receiver::start();
    teams.then(&[Reply::Status(502)]);
    let (open, resolve) = incident_messages(3);
    let url = teams.url("/workflows/abc/triggers/manual/paths/invoke");
    let toml = channel_toml(
        "ms",
        "teams",
        &format!("webhook_url = \"{url}?sig=sekrit-sig\""),
    );
    deliver(&toml, &[open, resolve]).await;
    let accepted = teams.accepted();
    assert_eq!((teams.count(), accepted.len()), (3, 2));
    for (body, event) in accepted.iter().zip(["FIRING", "RESOLVED"]) {
        assert_eq!(body["type"], "message");
        let attachment = &body["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(
            (card["type"].as_str(), card["version"].as_str()),
            (Some("AdaptiveCard"), Some("1.4"))
        );
        let text = card["body"][1]["text"].as_str().unwrap();
        assert!(text.starts_with(event), "{text}");
    }
    assert_eq!(teams.queries()[1], "sig=sekrit-sig");
}

/// Telegram: sendMessage at /bot<token>/, after a 429 that says its wait in the body
/// (as Telegram does) and a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_gets_an_html_message_for_its_chat_after_a_429() {
    let tg = Receiver::start();
    tg.then(&[
        Reply::Json(429, r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}"#),
        Reply::Status(500),
    ]);
    let (open, resolve) = incident_messages(5);
    let toml = channel_toml(
        "tg",
        "telegram",
        &format!(
            "bot_token = \"123456:sekrit-bot\"\nchat_id = \"-1001234567890\"\nurl = \"{}\"",
            tg.url("")
        ),
    );
    let rows = deliver(&toml, &[open, resolve]).await;
    let accepted = tg.accepted();
    assert_eq!((tg.count(), accepted.len()), (4, 2));
    assert!(
        tg.paths()
            .iter()
            .all(|p| p == "/bot123456:sekrit-bot/sendMessage")
    );
    // The 429's wait (1 s) was honoured before the next attempt.
    assert!(
        tg.gaps()[0] >= Duration::from_millis(900),
        "{:?}",
        tg.gaps()
    );
    let body = &accepted[0];
    assert_eq!(body["chat_id"], "-1001234567890");
    assert_eq!(body["parse_mode"], "HTML");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("<b>[PAGE] Cost drift on gpt-4o</b>"),
        "{text}"
    );
    assert!(
        accepted[1]["text"]
            .as_str()
            .unwrap()
            .contains("RESOLVED cost-per-request")
    );
    for r in &rows {
        assert!(!r.last_error.clone().unwrap_or_default().contains("sekrit"));
    }
}

/// Feishu/Lark: the body's `sign` verifies with Feishu's documented algorithm
/// (HMAC-SHA256 keyed by "timestamp\nsecret" over nothing), the timestamp is now;
/// a 500 first is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feishu_gets_a_signed_card_that_verifies() {
    let lark = Receiver::start();
    lark.then(&[Reply::Status(500)]);
    lark.always(Some(Reply::Json(
        200,
        r#"{"code":0,"msg":"success","data":{}}"#,
    )));
    let (open, resolve) = incident_messages(8);
    let url = lark.url("/open-apis/bot/v2/hook/sekrit-hook");
    let toml = channel_toml(
        "lark",
        "feishu",
        &format!("webhook_url = \"{url}\"\nsecret = \"sekrit-sign\""),
    );
    deliver(&toml, &[open, resolve]).await;
    let accepted = lark.accepted();
    assert_eq!((lark.count(), accepted.len()), (3, 2));
    for (body, template) in accepted.iter().zip(["red", "green"]) {
        let ts = body["timestamp"].as_str().unwrap();
        let secs: i64 = ts.parse().unwrap();
        assert!((secs - common::now_ms() / 1000).abs() < 3600, "{ts}");
        let want = hmac_sha256_base64(format!("{ts}\nsekrit-sign").as_bytes(), b"");
        assert_eq!(body["sign"], want.as_str(), "the signature verifies");
        assert_eq!(body["msg_type"], "interactive");
        assert_eq!(body["card"]["header"]["template"], template);
    }
}

/// Feishu refuses inside a 200 (a bad signature, code 19021): dead at once, as a
/// permanent refusal, with Feishu's message kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_inside_a_200_is_not_counted_as_sent() {
    let lark = Receiver::start();
    lark.always(Some(Reply::Json(200, r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#)));
    let (_dir, db) = database();
    let id = enqueue(&db, "lark", &incident_messages(1).0);
    let toml = channel_toml(
        "lark",
        "feishu",
        &format!("webhook_url = \"{}\"", lark.url("/hook/x")),
    );
    let (worker, _) = start(&db, &channels(&toml), fast());
    let dead = wait_state(&db, id, OutboxState::Dead).await;
    worker.stop().await;
    assert_eq!(lark.count(), 1);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("code 19021: sign match fail or timestamp is not within one hour from current time")
    );
}

/// DingTalk: `timestamp` (ms) and the URL-encoded `sign` in the query verify with
/// DingTalk's documented algorithm (HMAC-SHA256 keyed by the secret over
/// "timestamp\nsecret"); "system busy" (-1) inside a 200 is retried; messages are
/// paced to one every 3 s (20 a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dingtalk_gets_signed_markdown_paced_to_twenty_a_minute() {
    let ding = Receiver::start();
    ding.then(&[Reply::Json(200, r#"{"errcode":-1,"errmsg":"system busy"}"#)]);
    ding.always(Some(Reply::Json(200, r#"{"errcode":0,"errmsg":"ok"}"#)));
    let (open, resolve) = incident_messages(9);
    let url = ding.url("/robot/send?access_token=sekrit-token");
    let toml = channel_toml(
        "ding",
        "dingtalk",
        &format!("webhook_url = \"{url}\"\nsecret = \"SECsekrit\""),
    );
    deliver(&toml, &[open, resolve]).await;
    assert_eq!(ding.count(), 3, "one retry, then each once");
    for gap in ding.gaps() {
        assert!(gap >= Duration::from_millis(2900), "paced: {gap:?}");
    }
    let bodies = ding.bodies();
    for (query, body) in ding.queries().iter().zip(&bodies) {
        let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://h/?{query}"))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(pairs[0], ("access_token".into(), "sekrit-token".into()));
        let (ts, sign) = (&pairs[1].1, &pairs[2].1);
        let ms: i64 = ts.parse().unwrap();
        assert!((ms - common::now_ms()).abs() < 3_600_000, "{ts}");
        let want = hmac_sha256_base64(b"SECsekrit", format!("{ts}\nSECsekrit").as_bytes());
        assert_eq!(sign, &want, "the signature verifies");
        assert_eq!(body["msgtype"], "markdown");
        assert!(
            body["markdown"]["text"]
                .as_str()
                .unwrap()
                .starts_with("**[PAGE] ")
        );
    }
    assert!(
        bodies[2]["markdown"]["text"]
            .as_str()
            .unwrap()
            .contains("**RESOLVED**")
    );
}

/// WeCom: markdown within 4096 bytes, retried after "api freq out of limit" is not
/// needed here: a 500 first, then each message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_gets_markdown_within_4096_bytes() {
    let wx = Receiver::start();
    wx.then(&[Reply::Status(500)]);
    wx.always(Some(Reply::Json(200, r#"{"errcode":0,"errmsg":"ok"}"#)));
    let (mut open, resolve) = incident_messages(11);
    open.alerts[0].summary = "成本上升 ".repeat(600);
    let url = wx.url("/cgi-bin/webhook/send?key=sekrit-key");
    deliver(
        &channel_toml("wx", "wecom", &format!("webhook_url = \"{url}\"")),
        &[open, resolve],
    )
    .await;
    let accepted = wx.accepted();
    assert_eq!((wx.count(), accepted.len()), (3, 2));
    for body in &accepted {
        assert_eq!(body["msgtype"], "markdown");
        let content = body["markdown"]["content"].as_str().unwrap();
        assert!(content.len() <= 4096, "{}", content.len());
        assert!(content.contains("cost-per-request"), "{content}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_with_backoff_until_it_is_accepted() {
    let slack = Receiver::start();
    slack.then(&[Reply::Status(500), Reply::Status(503)]);
    let (_dir, db) = database();
    let id = enqueue(&db, "oncall", &message("retry me"));
    let (worker, metrics) = start(&db, &channels(&slack_toml(&slack.url("/s"))), fast());
    let sent = wait_state(&db, id, OutboxState::Sent).await;
    worker.stop().await;
    assert_eq!(slack.count(), 3);
    assert_eq!(sent.attempts, 2);
    assert_eq!(sent.last_error.as_deref(), Some("HTTP 503: failure 503"));
    let rendered = metrics.render();
    assert_eq!(
        common::sample(
            &rendered,
            "driftwarden_notification_failures_total{channel=\"oncall\"}"
        ),
        Some(2.0)
    );
}

/// A generic webhook's `Idempotency-Key` names the outbox row: the same at each attempt
/// of it, another for the next row, so a receiver can drop a resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retry_carries_the_same_idempotency_key() {
    let hook = Receiver::start();
    hook.then(&[Reply::Status(500)]);
    let (_dir, db) = database();
    let first = enqueue(&db, "hook", &message("once"));
    let second = enqueue(&db, "hook", &message("twice"));
    let (worker, _) = start(&db, &channels(&webhook_toml(&hook.url("/in"))), fast());
    wait_state(&db, second, OutboxState::Sent).await;
    worker.stop().await;
    let keys: Vec<String> = hook
        .header("idempotency-key")
        .into_iter()
        .map(|k| k.expect("every request has an Idempotency-Key"))
        .collect();
    let rows = [row(&db, first), row(&db, second)];
    let key = |r: &OutboxRow| format!("\"driftwarden-{}-{}\"", r.created_ms, r.id);
    assert_eq!(
        keys,
        vec![key(&rows[0]), key(&rows[0]), key(&rows[1])],
        "the failed attempt, its retry, the next row"
    );
}

/// A failing outbox query (here: the table is gone for a while) is logged, counted
/// in `/metrics` and retried; the worker keeps delivering once the query works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_a_failing_outbox_query_and_delivers_after_it() {
    let slack = Receiver::start();
    let (_dir, db) = database();
    let (worker, metrics) = start(&db, &channels(&slack_toml(&slack.url("/s"))), fast());
    // The poll counter exists from the start, before the worker's first poll.
    assert!(polls(&metrics, "oncall").is_some());
    let rename = |from: &str, to: &str| {
        blocking(|| {
            let admin = outbox::open(&db).unwrap();
            admin
                .execute(&format!("ALTER TABLE {from} RENAME TO {to}"), &[])
                .unwrap();
        })
    };
    rename("outbox", "outbox_away");
    let errors = || {
        common::sample(
            &metrics.render(),
            "driftwarden_outbox_query_errors_total{channel=\"oncall\"}",
        )
        .unwrap_or(0.0)
    };
    wait_for("a failed outbox query to be counted", || errors() >= 2.0).await;
    // While the query fails, no poll is counted.
    let failing = polls(&metrics, "oncall");
    let seen_errors = errors();
    wait_for("two more failed queries", || errors() >= seen_errors + 2.0).await;
    assert_eq!(polls(&metrics, "oncall"), failing);
    rename("outbox_away", "outbox");
    let id = enqueue(&db, "oncall", &message("still here"));
    wait_state(&db, id, OutboxState::Sent).await;
    worker.stop().await;
    assert_eq!(slack.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_is_honored() {
    let hook = Receiver::start();
    hook.then(&[Reply::RetryAfter(1)]);
    let (_dir, db) = database();
    let id = enqueue(&db, "hook", &message("slow down"));
    let (worker, _) = start(&db, &channels(&webhook_toml(&hook.url("/alerts"))), fast());
    let sent = wait_state(&db, id, OutboxState::Sent).await;
    worker.stop().await;
    assert_eq!(hook.count(), 2);
    let gap = hook.gaps()[0];
    // The backoff alone would retry after 25-50 ms.
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert_eq!(sent.attempts, 1);
    assert!(sent.last_error.unwrap().starts_with("HTTP 429"));
    let body = &hook.bodies()[1];
    assert_eq!(body["title"], "slow down");
    assert_eq!(body["alerts"][0]["rule"], "cost-per-request");
    assert_eq!(body["alerts"][0]["at"], "2026-06-06T09:40:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_at_most_one_message_per_second() {
    let slack = Receiver::start();
    let (_dir, db) = database();
    let ids: Vec<i64> = (0..3)
        .map(|i| enqueue(&db, "oncall", &message(&format!("m{i}"))))
        .collect();
    let (worker, _) = start(&db, &channels(&slack_toml(&slack.url("/s"))), fast());
    wait_state(&db, ids[2], OutboxState::Sent).await;
    worker.stop().await;
    assert_eq!(slack.count(), 3);
    for gap in slack.gaps() {
        // Arrival times carry some network jitter; without pacing the gaps are a few ms.
        assert!(gap >= Duration::from_millis(900), "gap of {gap:?}");
    }
    let titles: Vec<Value> = slack
        .bodies()
        .iter()
        .map(|b| b["blocks"][0]["text"]["text"].clone())
        .collect();
    assert_eq!(
        titles,
        [json!("m0"), json!("m1"), json!("m2")],
        "in enqueue order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_attempts_a_notification_is_dead() {
    let hook = Receiver::start();
    hook.always(Some(Reply::Status(500)));
    let (_dir, db) = database();
    let id = enqueue(&db, "hook", &message("doomed"));
    let options = WorkerOptions {
        max_attempts: 3,
        ..fast()
    };
    let (worker, metrics) = start(&db, &channels(&webhook_toml(&hook.url("/a"))), options);
    let dead = wait_state(&db, id, OutboxState::Dead).await;
    // Ten more polls (25 ms each), past the longest backoff (200 ms): a worker that
    // wrongly went on retrying would have tried again.
    wait_polls(&metrics, "hook", 10.0).await;
    worker.stop().await;
    assert_eq!(hook.count(), 3);
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 500: failure 500"));
    let rendered = metrics.render();
    for (name, want) in [
        (
            "driftwarden_notifications_dead_total{channel=\"hook\"}",
            1.0,
        ),
        (
            "driftwarden_notification_failures_total{channel=\"hook\"}",
            3.0,
        ),
        ("driftwarden_outbox_dead{channel=\"hook\"}", 1.0),
        ("driftwarden_outbox_pending{channel=\"hook\"}", 0.0),
    ] {
        assert_eq!(
            common::sample(&rendered, name),
            Some(want),
            "{name} in {rendered}"
        );
    }
    assert_eq!(
        blocking(|| outbox::list(&db, Some(OutboxState::Dead), 10))
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_other_than_429_is_dead_at_once() {
    let hook = Receiver::start();
    hook.always(Some(Reply::Status(404)));
    let (_dir, db) = database();
    let id = enqueue(&db, "hook", &message("gone"));
    let (worker, _) = start(&db, &channels(&webhook_toml(&hook.url("/a"))), fast());
    let dead = wait_state(&db, id, OutboxState::Dead).await;
    worker.stop().await;
    assert_eq!((hook.count(), dead.attempts), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_notification_is_never_sent_again_after_a_restart() {
    let slack = Receiver::start();
    let (_dir, db) = database();
    let chans = channels(&slack_toml(&slack.url("/s")));
    let id = enqueue(&db, "oncall", &message("once"));
    let (worker, _) = start(&db, &chans, fast());
    wait_state(&db, id, OutboxState::Sent).await;
    worker.stop().await;

    let (worker, metrics) = start(&db, &chans, fast());
    // Several polls of the new worker: the row was there to take each time.
    wait_polls(&metrics, "oncall", 3.0).await;
    worker.stop().await;
    assert_eq!(slack.count(), 1);
    assert_eq!(row(&db, id).state, OutboxState::Sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_notification_survives_a_restart_and_is_delivered_after_it() {
    let slack = Receiver::start();
    slack.then(&[Reply::Status(502)]);
    let (_dir, db) = database();
    let chans = channels(&slack_toml(&slack.url("/s")));
    let id = enqueue(&db, "oncall", &message("persistent"));
    // A long backoff: the retry is due only after the restart.
    let slow = WorkerOptions {
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(2),
        ..fast()
    };
    let (worker, _) = start(&db, &chans, slow);
    wait_for("the first attempt", || row(&db, id).attempts == 1).await;
    worker.stop().await;
    assert_eq!(row(&db, id).state, OutboxState::Pending);

    let (worker, _) = start(&db, &chans, fast());
    let sent = wait_state(&db, id, OutboxState::Sent).await;
    worker.stop().await;
    assert_eq!((slack.count(), sent.attempts), (2, 1));
    assert_eq!(slack.bodies()[1]["blocks"][0]["text"]["text"], "persistent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_arrives_over_smtp_with_plain_and_html_parts() {
    let (bag, port) = smtp_server();

    let (_dir, db) = database();
    let chans = channels(&format!(
        "[[channel]]\nname = \"mail\"\ntype = \"email\"\nsmtp_url = \"smtp://127.0.0.1:{port}?tls=none\"\n\
         from = \"Driftwarden <dw@example.com>\"\nto = [\"ops@example.com\", \"sre@example.com\"]\n"
    ));
    let mut m = message("Cost drift on <gpt-4o>");
    m.alerts[0].summary = "spend & cost <up>".into();
    let id = enqueue(&db, "mail", &m);
    let (worker, _) = start(&db, &chans, fast());
    wait_state(&db, id, OutboxState::Sent).await;
    worker.stop().await;

    let mails = bag.mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1);
    let mail = mailparse::parse_mail(&mails[0]).unwrap();
    let header = |name: &str| {
        mail.headers
            .iter()
            .find(|h| h.get_key().eq_ignore_ascii_case(name))
            .map(|h| h.get_value())
            .unwrap_or_default()
    };
    assert_eq!(
        header("Subject"),
        "[driftwarden] [PAGE] Cost drift on <gpt-4o>"
    );
    assert!(header("From").contains("dw@example.com"));
    assert!(header("To").contains("ops@example.com") && header("To").contains("sre@example.com"));
    let part = |mime: &str| {
        mail.subparts
            .iter()
            .find(|p| p.ctype.mimetype == mime)
            .unwrap_or_else(|| panic!("no {mime} part"))
            .get_body()
            .unwrap()
    };
    let plain = part("text/plain");
    assert!(
        plain.contains("observed 0.0123 vs baseline 0.0083"),
        "{plain}"
    );
    assert!(plain.contains("spend & cost <up>"), "{plain}");
    let html = part("text/html");
    assert!(
        html.contains("<h2>Cost drift on &lt;gpt-4o&gt;</h2>"),
        "{html}"
    );
    assert!(html.contains("spend &amp; cost &lt;up&gt;"), "{html}");
    assert!(html.contains("prompt template v2"), "{html}");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: the worker's tasks log on the thread the capturing subscriber is set on.
#[tokio::test(flavor = "current_thread")]
async fn webhook_urls_and_passwords_never_reach_logs_or_the_outbox() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let logs = Capture::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let toml_text = format!(
        "[[channel]]\nname = \"oncall\"\ntype = \"slack\"\n\
         webhook_url = \"http://127.0.0.1:{closed}/services/T0/B0/slack-s3cret-token\"\n\
         [[channel]]\nname = \"mail\"\ntype = \"email\"\n\
         smtp_url = \"smtp://bob:hunter2-pw@127.0.0.1:{closed}?tls=none\"\nto = [\"ops@example.com\"]\n"
    );
    let chans = channels(&toml_text);
    let (_dir, db) = database();
    let a = enqueue(&db, "oncall", &message("a"));
    let b = enqueue(&db, "mail", &message("b"));
    let options = WorkerOptions {
        max_attempts: 2,
        ..fast()
    };
    let (worker, _) = start(&db, &chans, options);
    let slack_row = wait_state(&db, a, OutboxState::Dead).await;
    let mail_row = wait_state(&db, b, OutboxState::Dead).await;
    worker.stop().await;

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("notification given up"), "{logged}");
    let stored = format!("{:?} {:?}", slack_row.last_error, mail_row.last_error);
    assert!(stored.to_lowercase().contains("refused"), "{stored}");
    let debug = format!("{chans:?}");
    // Logs at every level, the dependencies' included (hyper's trace lines name the
    // host and port, which are no secret).
    for secret in ["s3cret", "hunter2", "/services/"] {
        assert!(!logged.contains(secret), "{secret} logged: {logged}");
    }
    for secret in ["s3cret", "hunter2", "/services/", &format!(":{closed}")] {
        assert!(!stored.contains(secret), "{secret} stored: {stored}");
        assert!(!debug.contains(secret), "{secret} in Debug: {debug}");
    }
}

/// The daemon end to end: `[[channel]]` from its config file, a row enqueued by
/// another connection (as the alert stage does), `/v1/outbox` and `/metrics`.
#[test]
fn the_daemon_delivers_the_outbox_and_lists_dead_notifications() {
    let slack = Receiver::start();
    slack.then(&[Reply::Status(404)]);
    let app = common::TestApp::builder()
        .config(&slack_toml(&slack.url("/services/T0/B0/daemon-secret")))
        .spawn();
    let conn = outbox::open(&app.location()).unwrap();
    let dead = outbox::enqueue(&conn, "oncall", &message("first"), common::now_ms()).unwrap();
    common::wait_until("a dead notification", common::WAIT, || {
        app.metric("driftwarden_outbox_dead{channel=\"oncall\"}") == 1.0
    });
    let sent = outbox::enqueue(&conn, "oncall", &message("second"), common::now_ms()).unwrap();
    common::wait_until("a sent notification", common::WAIT, || {
        app.metric("driftwarden_notifications_sent_total{channel=\"oncall\"}") == 1.0
    });

    let r = app.get("/v1/outbox?state=dead");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let rows = v["notifications"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0]["id"], dead);
    assert_eq!(rows[0]["title"], "first");
    assert_eq!(rows[0]["last_error"], "HTTP 404: failure 404");
    let all: Value = app.get("/v1/outbox").json().unwrap();
    assert_eq!(all["notifications"][0]["id"], sent);
    assert_eq!(all["notifications"][0]["state"], "sent");
    assert_eq!(app.get("/v1/outbox?state=lost").status().as_u16(), 400);
    assert_eq!(slack.paths()[1], "/services/T0/B0/daemon-secret");

    let everything = format!("{text}{all}{}{}", app.metrics_text(), app.log_text());
    assert!(!everything.contains("daemon-secret"), "{everything}");
    assert!(
        !everything.contains(&slack.addr().to_string()),
        "{everything}"
    );
}
