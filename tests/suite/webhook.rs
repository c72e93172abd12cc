//! The webhook API, end to end: the real daemon receives gateway and evaluator records
//! over HTTP.

use crate::common;

use serde_json::{Value, json};

use common::*;
use driftwarden::store::sql::{SqlExt, Value as SqlValue};

crate::on_postgres!(
    requests_without_the_right_token_are_refused_and_store_nothing,
    bodies_over_max_body_bytes_get_413_and_store_nothing,
    a_batch_sent_twice_is_stored_once,
    one_pretty_printed_object_is_one_record,
    mixed_ndjson_accepts_the_good_and_reports_each_bad_record,
    a_body_of_only_bad_records_is_422,
    litellm_json_array_of_success_and_failure,
    a_full_litellm_batch_of_several_megabytes_is_accepted,
    newapi_consume_row_is_stored_and_top_up_skipped,
    eval_scores_are_stored_and_bad_ones_dead_lettered,
    an_api_key_in_a_rejected_record_is_never_stored_or_logged,
    an_api_key_in_a_mistyped_field_is_not_echoed_into_the_stored_reason,
    health_metrics_and_unknown_formats,
);

fn report(v: &Value) -> IngestReport {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not an ingest report: {e}: {v}"))
}

fn ndjson(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn requests_without_the_right_token_are_refused_and_store_nothing() {
    let app = spawn_app();
    let body = native_lines("unauth", 3, recent_ms());
    for path in ["/v1/events", "/v1/evals"] {
        let missing = app
            .client
            .post(app.url(path))
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(missing.status().as_u16(), 401, "{path} without a token");
        let msg: Value = missing.json().unwrap();
        assert!(msg["error"].as_str().unwrap().contains("missing API token"));
        for wrong in [
            "Bearer test-token-3f9a1c7e5b2d4087",
            "Bearer short",
            "Basic test-token-3f9a1c7e5b2d4086",
            "test-token-3f9a1c7e5b2d4086",
        ] {
            let r = app
                .client
                .post(app.url(path))
                .header("authorization", wrong)
                .body(body.clone())
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 401, "{path} with {wrong:?}");
        }
    }
    let s = app.stats();
    assert_eq!((s.events, s.evals, s.dead_letters), (0, 0, 0));

    // The right token works on the same daemon.
    let (status, v) = app.post_events("native", body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(report(&v).accepted, 3);
}

#[test]
fn bodies_over_max_body_bytes_get_413_and_store_nothing() {
    const LIMIT: usize = 4096;
    let app = TestApp::builder()
        .config(&format!("max_body_bytes = {LIMIT}\n"))
        .spawn();
    let ts = recent_ms();
    // Whole lines up to the limit, padded with blank space to exactly LIMIT bytes.
    let mut body = String::new();
    let mut n = 0;
    loop {
        let line = native_line(&format!("fits-{n}"), ts + n as i64) + "\n";
        if body.len() + line.len() > LIMIT {
            break;
        }
        body.push_str(&line);
        n += 1;
    }
    body.push_str(&" ".repeat(LIMIT - body.len()));
    assert_eq!(body.len(), LIMIT);
    let over = format!("{body}\n");

    let r = app.post("/v1/events", over.clone());
    assert_eq!(r.status().as_u16(), 413);
    let msg: Value = r.json().unwrap();
    assert!(
        msg["error"].as_str().unwrap().contains("max_body_bytes"),
        "{msg}"
    );
    // Without a Content-Length (chunked), the limit holds too.
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(over.clone().into_bytes()));
    assert_eq!(app.post("/v1/events", chunked).status().as_u16(), 413);
    // The token is checked before the body is read: a request without one is refused
    // while its body was never sent. (Sending the body races the server's close.)
    assert!(
        unsent_body_answer(&app.url(""), over.len()).starts_with("HTTP/1.1 401"),
        "a request without a token must be refused before its body is read"
    );
    let s = app.stats();
    assert_eq!((s.events, s.dead_letters), (0, 0));

    let (status, v) = app.post_events("native", body);
    assert_eq!(
        status, 200,
        "a body of exactly max_body_bytes is accepted: {v}"
    );
    assert_eq!(report(&v).accepted, n as u64);
    assert_eq!(app.stats().events, n as u64);
}

#[test]
fn a_batch_sent_twice_is_stored_once() {
    let app = spawn_app();
    let body = native_lines("twice", 50, recent_ms());
    let (status, first) = app.post_events("native", body.clone());
    assert_eq!(status, 200);
    let first = report(&first);
    assert_eq!(
        (first.accepted, first.duplicates, first.rejected),
        (50, 0, 0)
    );
    let stats = app.stats();

    let (status, second) = app.post_events("native", body);
    assert_eq!(status, 200);
    let second = report(&second);
    assert_eq!(
        (second.accepted, second.duplicates, second.rejected),
        (0, 50, 0)
    );
    assert_eq!(app.stats().events, stats.events);
    assert_eq!(app.stats().aggregate_rows, stats.aggregate_rows);
    assert_eq!(
        app.sql_i64("SELECT CAST(SUM(requests) AS BIGINT) FROM agg_minute WHERE dim = 'global'"),
        50
    );
    assert_eq!(
        app.metric(r#"driftwarden_events_duplicate_total{source="http:events",format="native"}"#),
        50.0
    );
}

#[test]
fn one_pretty_printed_object_is_one_record() {
    let app = spawn_app();
    let one: Value = serde_json::from_str(&native_line("pretty", recent_ms())).unwrap();
    let (status, v) = app.post_events("native", serde_json::to_string_pretty(&one).unwrap());
    assert_eq!(status, 200, "{v}");
    let r = report(&v);
    assert_eq!((r.accepted, r.rejected), (1, 0), "{v}");
    assert_eq!(app.stored_ids(), vec!["pretty"]);
}

#[test]
fn mixed_ndjson_accepts_the_good_and_reports_each_bad_record() {
    let app = spawn_app();
    let ts = recent_ms();
    let future = now_ms() + 3600 * 1000;
    let body = ndjson(&[
        native_line("good-1", ts),
        r#"{"id":"broken","ts":"#.to_string(),
        native_line("good-2", ts + 1),
        String::new(),
        native_line("negative", ts + 2)
            .replace(r#""completion_tokens":30"#, r#""completion_tokens":-30"#),
        native_line("good-3", ts + 3),
        native_line("from-the-future", future),
    ]);
    let (status, v) = app.post_events("native", body);
    assert_eq!(status, 200, "{v}");
    let r = report(&v);
    assert_eq!((r.accepted, r.rejected, r.duplicates), (3, 3, 0));
    let listed: Vec<u64> = r.errors.iter().map(|e| e.record).collect();
    assert_eq!(listed, vec![2, 5, 7], "record numbers are line numbers");
    let want = [
        "invalid record",
        "completion_tokens is negative (-30)",
        "in the future",
    ];
    for (e, want) in r.errors.iter().zip(want) {
        assert!(e.reason.contains(want), "record {}: {}", e.record, e.reason);
    }
    assert_eq!(app.stored_ids(), vec!["good-1", "good-2", "good-3"]);

    let mut dl = app.dead_letters(Some("http:events"));
    dl.sort_by_key(|d| d.id);
    let positions: Vec<&str> = dl.iter().map(|d| d.position.as_str()).collect();
    assert_eq!(positions, vec!["record 2", "record 5", "record 7"]);
    for (d, e) in dl.iter().zip(&r.errors) {
        assert_eq!(d.source, "http:events");
        assert_eq!(d.reason, e.reason);
    }
    assert!(app.dead_letters(Some("http:evals")).is_empty());
    let anonymous = app.get("/v1/deadletters");
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "dead letters need the token"
    );
    let newest = app
        .client
        .get(app.url("/v1/deadletters?source=http:events&limit=1"))
        .bearer_auth(&app.token)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(newest["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(newest["dead_letters"][0]["position"], "record 7");
}

#[test]
fn a_body_of_only_bad_records_is_422() {
    let app = spawn_app();
    let body = ndjson(&[
        "not json at all".to_string(),
        r#"{"id":"no-model","ts":1,"prompt_tokens":1,"completion_tokens":1}"#.to_string(),
    ]);
    let (status, v) = app.post_events("native", body);
    assert_eq!(status, 422, "{v}");
    let r = report(&v);
    assert_eq!((r.accepted, r.rejected), (0, 2));
    assert!(r.errors[1].reason.contains("missing field `model`"), "{v}");
    let s = app.stats();
    assert_eq!((s.events, s.dead_letters), (0, 2));

    // A malformed JSON array is one bad record too.
    let (status, v) = app.post_events("native", r#"[{"id":"a"},"#);
    assert_eq!(status, 422, "{v}");
    assert!(
        report(&v).errors[0]
            .reason
            .contains("not a valid JSON array")
    );

    // An empty body holds no records at all: a client mistake, not a rejection.
    let (status, v) = app.post_events("native", "  \n");
    assert_eq!(status, 400, "{v}");
    assert_eq!(app.stats().dead_letters, 3);
}

/// A LiteLLM success record in the shape litellm 1.x's generic API logger posts
/// (as in src/adapters/litellm.rs and shared/GATEWAYS.md).
const LITELLM_SUCCESS: &str = r#"{"id":"chatcmpl-7f3a","trace_id":"b1c2","call_type":"acompletion","stream":true,"response_cost":0.00042,"status":"success","custom_llm_provider":"openai","total_tokens":30,"prompt_tokens":10,"completion_tokens":20,"startTime":1780315200.5,"endTime":1780315201.25,"completionStartTime":1780315200.75,"response_time":0.75,"model":"openai/gpt-4o","model_id":"abc","model_group":"gpt-4o","api_base":"https://api.openai.com","metadata":{"user_api_key_hash":"88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b","user_api_key_alias":"ci-key","user_api_key_team_id":"team-123","user_api_key_team_alias":"search-team","user_api_key_request_route":"/chat/completions","spend_logs_metadata":null},"cache_hit":false,"request_tags":["summarize"],"end_user":"","messages":[{"role":"user","content":"hi"}],"response":{"id":"chatcmpl-7f3a","choices":[{"finish_reason":"length","index":0,"message":{"content":"hello","role":"assistant"}}],"usage":{"prompt_tokens":10,"completion_tokens":20}},"hidden_params":{"model_id":"abc","api_base":"https://api.openai.com","response_cost":0.00042},"model_parameters":{},"error_str":null,"error_information":{"error_code":"","error_class":"","llm_provider":""}}"#;

/// A failed call: zero tokens and cost, a UUID id, error code as a string.
const LITELLM_FAILURE: &str = r#"{"id":"5b0d3c6e-2f8c-4b8e-9a51-1f1d2c3b4a5e","call_type":"acompletion","stream":false,"response_cost":0.0,"status":"failure","custom_llm_provider":"openai","total_tokens":0,"prompt_tokens":0,"completion_tokens":0,"startTime":1780315300.0,"endTime":1780315300.2,"completionStartTime":1780315300.2,"model":"openai/gpt-4o","model_group":"gpt-4o","metadata":{"user_api_key_alias":"ci-key"},"request_tags":[],"response":null,"error_str":"litellm.InternalServerError: boom\nTraceback ...","error_information":{"error_code":"500","error_class":"InternalServerError","llm_provider":"openai","traceback":"Traceback (most recent call last): ..."}}"#;

/// A LiteLLM record `fixture` with a new id, started at `start_s` (epoch seconds).
fn litellm(fixture: &str, id: &str, start_s: f64) -> Value {
    let mut v: Value = serde_json::from_str(fixture).unwrap();
    let old = v["startTime"].as_f64().unwrap();
    for key in ["startTime", "endTime", "completionStartTime"] {
        let t = v[key].as_f64().unwrap();
        v[key] = json!(start_s + (t - old));
    }
    v["id"] = json!(id);
    v
}

#[test]
fn litellm_json_array_of_success_and_failure() {
    let app = spawn_app();
    let start = recent_ms() as f64 / 1000.0;
    let body = json!([
        litellm(LITELLM_SUCCESS, "chatcmpl-ok-1", start),
        litellm(
            LITELLM_FAILURE,
            "5b0d3c6e-0000-4b8e-9a51-1f1d2c3b4a5e",
            start + 1.0
        ),
        litellm(LITELLM_SUCCESS, "chatcmpl-ok-2", start + 2.0),
    ]);
    let (status, v) = app.post_events("litellm", body.to_string());
    assert_eq!(status, 200, "{v}");
    let r = report(&v);
    assert_eq!((r.accepted, r.rejected), (3, 0), "{v}");

    let store = app.store();
    let row = |id: &str| {
        store
            .row(
                "SELECT model, resolved_model, route, tenant, status, error_type, finish_reason, \
                 latency_ms, ttft_ms, cost_usd, prompt_tokens, completion_tokens FROM events WHERE id = ?1",
                &[SqlValue::Text(id)],
                |r| {
                    Ok((
                        r.text(0)?,
                        r.opt_text(1)?,
                        r.opt_text(2)?,
                        r.opt_text(3)?,
                        r.opt_int(4)?,
                        r.opt_text(5)?,
                        r.opt_text(6)?,
                        r.opt_int(7)?,
                        r.opt_int(8)?,
                        r.opt_real(9)?,
                        r.int(10)?,
                        r.int(11)?,
                    ))
                },
            )
            .unwrap()
            .expect("the event is stored")
    };
    let ok = row("chatcmpl-ok-1");
    assert_eq!(ok.0, "gpt-4o");
    assert_eq!(ok.1.as_deref(), Some("openai/gpt-4o"));
    assert_eq!(ok.2.as_deref(), Some("summarize"));
    let tenant = ok.3.unwrap();
    assert!(
        tenant.starts_with("id-") && !tenant.contains("search"),
        "identities are hashed: {tenant}"
    );
    assert_eq!((ok.4, ok.5), (Some(200), None));
    assert_eq!(ok.6.as_deref(), Some("length"));
    assert_eq!((ok.7, ok.8), (Some(750), Some(250)));
    assert_eq!(ok.9, Some(0.00042));
    assert_eq!((ok.10, ok.11), (10, 20));
    let failed = row("5b0d3c6e-0000-4b8e-9a51-1f1d2c3b4a5e");
    assert_eq!(failed.4, Some(500));
    assert_eq!(failed.5.as_deref(), Some("InternalServerError"));
    assert_eq!((failed.10, failed.11), (0, 0));
}

#[test]
fn a_full_litellm_batch_of_several_megabytes_is_accepted() {
    const RECORDS: usize = 512;
    let app = spawn_app();
    let start = recent_ms() as f64 / 1000.0;
    // Text that must be read past and never stored.
    let prompt = format!("PROMPT-TEXT-NEVER-STORED {}", "lorem ipsum ".repeat(500));
    let answer = format!("ANSWER-TEXT-NEVER-STORED {}", "dolor sit amet ".repeat(400));
    let records: Vec<Value> = (0..RECORDS)
        .map(|i| {
            let fixture = if i % 10 == 9 {
                LITELLM_FAILURE
            } else {
                LITELLM_SUCCESS
            };
            let mut v = litellm(fixture, &format!("big-{i}"), start + i as f64 / 100.0);
            v["messages"] = json!([
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": prompt},
            ]);
            if i % 10 != 9 {
                v["response"]["choices"][0]["message"]["content"] = json!(answer);
            }
            v
        })
        .collect();
    let body = serde_json::to_string(&records).unwrap();
    assert!(
        body.len() > 5 << 20 && body.len() < 16 << 20,
        "a realistic batch: {} bytes",
        body.len()
    );

    let (status, v) = app.post_events("litellm", body);
    assert_eq!(status, 200, "{v}");
    let r = report(&v);
    assert_eq!((r.accepted, r.rejected), (RECORDS as u64, 0));
    assert_eq!(app.stats().events, RECORDS as u64);
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events WHERE status = 500"),
        (RECORDS / 10) as i64
    );
    let bytes = app.stored_bytes();
    for marker in ["PROMPT-TEXT-NEVER-STORED", "ANSWER-TEXT-NEVER-STORED"] {
        assert!(
            !contains_bytes(&bytes, marker.as_bytes()),
            "{marker} found in the database"
        );
    }
}

#[test]
fn newapi_consume_row_is_stored_and_top_up_skipped() {
    let app = spawn_app();
    let created = recent_ms() / 1000;
    let consume = json!({
        "id": 4711, "user_id": 3, "created_at": created, "type": 2,
        "content": "model ratio 1.25", "username": "alice", "token_name": "prod-classifier",
        "model_name": "gpt-4o", "quota": 1335, "prompt_tokens": 812, "completion_tokens": 64,
        "use_time": 2, "is_stream": true, "channel_id": 7, "channel_name": "azure-east",
        "token_id": 12, "group": "default", "ip": "10.0.0.1",
        "other": "{\"model_ratio\":1.25,\"cache_tokens\":128,\"frt\":412,\"is_model_mapped\":true,\"upstream_model_name\":\"gpt-4o-2024-08-06\"}"
    });
    let top_up = json!({
        "id": 4712, "user_id": 3, "created_at": created, "type": 1,
        "content": "top-up 10 USD", "username": "alice", "model_name": "", "quota": 5000000
    });
    let (status, v) = app.post_events("newapi", json!([consume, top_up]).to_string());
    assert_eq!(status, 200, "{v}");
    let r = report(&v);
    assert_eq!((r.accepted, r.skipped, r.rejected), (1, 1, 0), "{v}");
    assert_eq!(app.stored_ids(), vec!["newapi:4711"]);
    let (cost, cached, ts) = app
        .sql_rows("SELECT cost_usd, cached_tokens, ts_ms FROM events", |r| {
            Ok((r.real(0)?, r.int(1)?, r.int(2)?))
        })
        .remove(0);
    assert!((cost - 1335.0 / 500_000.0).abs() < 1e-12, "{cost}");
    assert_eq!((cached, ts), (128, created * 1000));

    // A body of nothing but a top-up is fine: skipped, not rejected.
    let (status, v) = app.post_events("newapi", top_up.to_string());
    assert_eq!(status, 200, "{v}");
    assert_eq!(report(&v).skipped, 1);
    assert_eq!(
        app.metric(r#"driftwarden_records_skipped_total{source="http:events",format="newapi"}"#),
        2.0
    );
    let s = app.stats();
    assert_eq!((s.events, s.dead_letters), (1, 0));
}

#[test]
fn eval_scores_are_stored_and_bad_ones_dead_lettered() {
    let app = spawn_app();
    let ts = recent_ms();
    let body = ndjson(&[
        json!({"request_id": "req-1", "ts": ts, "evaluator": "judge-v1", "score": 0.82})
            .to_string(),
        json!({"route": "classify", "ts": ts, "evaluator": "regex", "passed": false}).to_string(),
        json!({"request_id": "req-2", "ts": ts, "evaluator": "judge-v1", "score": 1.5}).to_string(),
        json!({"request_id": "req-3", "ts": ts, "evaluator": "judge-v1"}).to_string(),
        json!({"ts": ts, "evaluator": "judge-v1", "score": 0.5}).to_string(),
    ]);
    let r = app.post("/v1/evals", body.clone());
    assert_eq!(r.status().as_u16(), 200);
    let r: IngestReport = r.json().unwrap();
    assert_eq!((r.accepted, r.rejected), (2, 3));
    let s = app.stats();
    assert_eq!((s.evals, s.events, s.dead_letters), (2, 0, 3));

    let mut dl = app.dead_letters(Some("http:evals"));
    dl.sort_by_key(|d| d.id);
    let got: Vec<(&str, bool)> = dl
        .iter()
        .zip(["outside 0..1", "score or passed", "needs request_id"])
        .map(|(d, want)| (d.position.as_str(), d.reason.contains(want)))
        .collect();
    assert_eq!(
        got,
        vec![("record 3", true), ("record 4", true), ("record 5", true)],
        "{dl:#?}"
    );
    assert!(app.dead_letters(Some("http:events")).is_empty());

    // Scores are idempotent too.
    let r: IngestReport = app.post("/v1/evals", body).json().unwrap();
    assert_eq!((r.accepted, r.duplicates, r.rejected), (0, 2, 3));
    assert_eq!(app.stats().evals, 2);
    assert_eq!(
        app.metric(r#"driftwarden_evals_ingested_total{source="http:evals",format="evals"}"#),
        2.0
    );
}

const SECRET: &str = "sk-live-abcdefghijklmnop";

/// Fail if `SECRET` (or its distinctive part) is anywhere the daemon keeps or shows.
fn assert_secret_kept_nowhere(app: &TestApp) {
    let needles = [SECRET, "abcdefghijklmnop"];
    for d in app.dead_letters(None) {
        for n in needles {
            assert!(
                !d.raw.contains(n) && !d.reason.contains(n),
                "secret in dead letter {d:#?}"
            );
        }
    }
    let log = app.log_text();
    let db = app.stored_bytes();
    for n in needles {
        assert!(!log.contains(n), "secret in the daemon's log:\n{log}");
        assert!(
            !contains_bytes(&db, n.as_bytes()),
            "secret in the database file"
        );
    }
}

#[test]
fn an_api_key_in_a_rejected_record_is_never_stored_or_logged() {
    let app = TestApp::builder().rust_log("debug").spawn();
    let ts = recent_ms();
    let body = ndjson(&[
        // Rejected for negative tokens, carrying the key in a member named like one.
        format!(
            r#"{{"id":"leaky-1","ts":{ts},"model":"gpt-4o","prompt_tokens":-1,"completion_tokens":1,"api_key":"{SECRET}"}}"#
        ),
        // Broken JSON with the key in it.
        format!(r#"{{"id":"leaky-2","api_key":"{SECRET}","ts":"#),
        // The key pasted into free text, and as a bearer header value.
        format!(
            r#"{{"id":"leaky-3","ts":{ts},"model":"","prompt_tokens":1,"completion_tokens":1,"note":"key {SECRET}","headers":"Authorization: Bearer {SECRET}"}}"#
        ),
    ]);
    let (status, v) = app.post_events("native", body);
    assert_eq!(status, 422, "{v}");
    assert_eq!(report(&v).rejected, 3);
    assert_eq!(app.dead_letters(None).len(), 3);
    assert_secret_kept_nowhere(&app);
}

#[test]
fn an_api_key_in_a_mistyped_field_is_not_echoed_into_the_stored_reason() {
    let app = TestApp::builder().rust_log("debug").spawn();
    let ts = recent_ms();
    // A gateway that puts the key where a typed value belongs: the decoder's reason
    // quotes the offending value.
    let body = ndjson(&[
        format!(
            r#"{{"id":"typed-1","ts":"{SECRET}","model":"gpt-4o","prompt_tokens":1,"completion_tokens":1}}"#
        ),
        format!(
            r#"{{"id":"typed-2","ts":{ts},"model":"gpt-4o","prompt_tokens":1,"completion_tokens":1,"status":"{SECRET}"}}"#
        ),
    ]);
    let (status, v) = app.post_events("native", body);
    assert_eq!(status, 422, "{v}");
    assert_eq!(app.dead_letters(None).len(), 2);
    assert_secret_kept_nowhere(&app);
}

#[test]
fn health_metrics_and_unknown_formats() {
    let app = TestApp::builder()
        .config(
            r#"
[formats.router]
kind = "csv"
[formats.router.fields]
ts = "time"
model = "model"
cost_usd = "cost"
"#,
        )
        .spawn();
    let health = || {
        let r = app.get("/healthz");
        assert_eq!(r.status().as_u16(), 200);
        r.json::<Value>().unwrap()
    };
    assert_eq!(health()["status"], "ok");
    if app.on_postgres() {
        // The only replica on PostgreSQL takes the leader lease, with the first token.
        wait_until("the replica leads", WAIT, || health()["role"] == "leader");
        assert_eq!(app.metric("driftwarden_leader_token"), 1.0);
    } else {
        // One daemon on SQLite leads on its own.
        assert_eq!(health()["role"], "single");
        assert_eq!(app.metric("driftwarden_leader_token"), 0.0);
    }
    assert_eq!(app.metric("driftwarden_leader"), 1.0);

    let ts = recent_ms();
    let body = ndjson(&[
        native_line("m-1", ts),
        native_line("m-2", ts + 1),
        "{".to_string(),
    ]);
    assert_eq!(app.post_events("native", body.clone()).0, 200);
    assert_eq!(app.post_events("native", body).0, 200);
    let text = app.metrics_text();
    let labels = r#"{source="http:events",format="native"}"#;
    for (name, want) in [
        ("driftwarden_events_ingested_total", 2.0),
        ("driftwarden_events_duplicate_total", 2.0),
        ("driftwarden_records_rejected_total", 2.0),
    ] {
        assert_eq!(
            sample(&text, &format!("{name}{labels}")),
            Some(want),
            "{name} in:\n{text}"
        );
    }
    let db_bytes = sample(&text, "driftwarden_db_bytes").expect("db_bytes gauge");
    assert!(db_bytes > 0.0);

    // A CSV body in a mapped format from the config.
    let t = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    let csv = format!(
        "time,model,cost\n{},gpt-4o-mini,0.001\n{},gpt-4o-mini,0.002\n",
        t(ts),
        t(ts + 1000)
    );
    let (status, v) = app.post_events("router", csv);
    assert_eq!(status, 200, "{v}");
    let r = report(&v);
    assert_eq!((r.accepted, r.skipped), (2, 1), "header skipped: {v}");

    let (status, v) = app.post_events("nope", native_line("x", ts));
    assert_eq!(status, 400);
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("unknown format \"nope\"")
            && msg.contains("native, newapi, oneapi, litellm, evals, router"),
        "{msg}"
    );
    let (status, v) = app.post_events("evals", native_line("x", ts));
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("/v1/evals"), "{v}");
    assert_eq!(app.stats().events, 4);
}

/// The status line and headers the server at `base` answers to a POST /v1/events that
/// announces `len` bytes of body and never sends them. The read timeout only guards
/// against a hang: a server that waited for the body would fail the test there.
fn unsent_body_answer(base: &str, len: usize) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        conn,
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn
            .read(&mut buf)
            .expect("an answer before the body was sent");
        assert!(n > 0, "the connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}
