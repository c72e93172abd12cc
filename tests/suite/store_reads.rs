//! Every read of the store (`store::queries`, `store::spend`, `Digest::build`) on both
//! backends: the same batches committed to a SQLite `Store` and to a REAL PostgreSQL
//! server through `PgWriter`, then each read asked of both and the answers compared,
//! and checked against what the batches hold (so a translation wrong on both
//! backends alike fails too).
//!
//! The server is a private one (tests/suite/support/dbservers.rs). Without the PostgreSQL
//! binaries the test prints `SKIPPED:` and passes, unless `CI` is set, when it fails.
//! Run: `cargo test --release --test suite store_reads::`.

use crate::support::dbservers;

use std::collections::BTreeMap;
use std::fmt::Debug;

use dbservers::*;
use driftwarden::domain::{
    Alert, AlertEvent, ChangeEvent, ChangeKind, CostSource, DbCursor, DeadLetter, EvalScore,
    Fingerprint, Kind, Lane, TailCheckpoint, UsageEvent,
};
use driftwarden::schedule::digest::Digest;
use driftwarden::store::exceptions::NewException;
use driftwarden::store::pg::ingest::PgWriter;
use driftwarden::store::queries::{self, AggBucket, EvalBucket};
use driftwarden::store::spend::{self, ScopeTotal};
use driftwarden::store::{Batch, Location, Store};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// 2026-06-07T09:00:00Z: the digest's fire time; the data covers the two days before.
const NOW: i64 = 1_780_822_800_000;
const TAILED: &str = "/var/log/gw/usage.jsonl";
const TAIL_SOURCE: &str = "tail:/var/log/gw/usage.jsonl";
const DB_SOURCE: &str = "db:newapi:postgres://gw@db/newapi#logs";

/// A small deterministic generator (an LCG): the data is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn pick<T: Copy>(&mut self, of: &[T]) -> T {
        of[self.below(of.len() as u64) as usize]
    }
}

/// Event `i` of 600 over the two days before `NOW`: three share each time, their ids
/// in the reverse of their order in the batch, so reads must order by key.
fn event(rng: &mut Lcg, i: i64) -> UsageEvent {
    let ts_ms = NOW - 2 * DAY + 5 * MINUTE + (i / 3) * 14 * MINUTE + 1_234;
    UsageEvent {
        id: format!("req-{:04}", 1_000 - i).into(),
        ts_ms,
        model: rng
            .pick(&["gpt-4o", "claude-3-5-sonnet", "llama-3-70b"])
            .into(),
        resolved_model: rng.pick(&[None, Some("gpt-4o-2024-08-06")]).map(Into::into),
        provider: rng
            .pick(&[Some("openai"), Some("anthropic"), None])
            .map(Into::into),
        route: rng
            .pick(&[Some("chat"), Some("summarize"), None])
            .map(Into::into),
        tenant: rng
            .pick(&[Some("team-a"), Some("team-b"), Some("team-c"), None])
            .map(Into::into),
        prompt_tokens: rng.below(5_000),
        completion_tokens: rng.below(1_000),
        cached_tokens: rng.below(100),
        cost_usd: (rng.below(5) != 0).then(|| rng.below(100_000) as f64 / 7_919.0),
        cost_source: rng.pick(&[
            CostSource::Gateway,
            CostSource::PriceTable,
            CostSource::Unknown,
        ]),
        list_cost_usd: (rng.below(2) == 0).then(|| rng.below(100_000) as f64 / 6_007.0),
        latency_ms: (rng.below(6) != 0).then(|| rng.below(30_000)),
        ttft_ms: (rng.below(2) == 0).then(|| rng.below(3_000)),
        status: rng.pick(&[Some(200), Some(200), Some(429), Some(500), None]),
        finish_reason: rng
            .pick(&[Some("stop"), Some("length"), None])
            .map(Into::into),
        error_type: (rng.below(10) == 0).then(|| "rate_limit".into()),
    }
}

/// An eval of event `of` (or of a model only), each at its own time.
fn eval(rng: &mut Lcg, n: i64, of: Option<&UsageEvent>) -> EvalScore {
    let score = rng.pick(&[Some(0.9), Some(0.35), Some(0.6), None]);
    EvalScore {
        request_id: of.map(|e| e.id.to_string()),
        route: None,
        model: match of {
            Some(_) => None,
            None => Some("gpt-4o".into()),
        },
        evaluator: "judge-v1".into(),
        ts_ms: of.map_or(NOW - 30 * HOUR, |e| e.ts_ms) + 1_000 + n,
        score,
        passed: rng.pick(&[Some(true), Some(false), None]),
    }
}

fn change(ts_ms: i64, kind: ChangeKind, route: Option<&str>, note: &str) -> ChangeEvent {
    ChangeEvent {
        kind,
        ts_ms,
        scope: route
            .map(|r| BTreeMap::from([("route".to_string(), r.to_string())]))
            .unwrap_or_default(),
        note: note.into(),
        origin: "api".into(),
    }
}

fn dead(source: &str, position: &str, reason: &str) -> DeadLetter {
    DeadLetter {
        source: source.into(),
        position: position.into(),
        reason: reason.into(),
        raw: format!("{{\"{position}\""),
    }
}

fn tail_checkpoint(inode: u64, offset: u64) -> TailCheckpoint {
    TailCheckpoint {
        path: TAILED.into(),
        fingerprint: Fingerprint {
            dev: 2049,
            inode,
            head_len: 256,
            head_hash: u64::MAX - inode,
        },
        offset,
    }
}

/// Three batches from three sources: 600 events (a resent slice among them), evals
/// of events and of a model, change events (one resent), dead letters, a tail
/// checkpoint and a database cursor.
fn batches() -> Vec<Batch> {
    let mut rng = Lcg(11);
    let events: Vec<UsageEvent> = (0..600).map(|i| event(&mut rng, i)).collect();

    let mut a = Batch::new(TAIL_SOURCE, "native");
    a.events = events[..250].to_vec();
    a.evals = (0..40)
        .map(|n| eval(&mut rng, n, Some(&events[n as usize * 6])))
        .collect();
    a.dead_letters = vec![
        dead(TAIL_SOURCE, "1024", "not JSON"),
        dead(TAIL_SOURCE, "2048", "no model"),
    ];
    a.checkpoint = Some(tail_checkpoint(77, 98_304));
    a.changes = vec![change(
        NOW - 40 * HOUR,
        ChangeKind::ModelBump,
        None,
        "gpt-4o",
    )];

    let mut b = Batch::new("http:events", "native");
    b.events = events[200..450].to_vec();
    b.evals = (40..60)
        .map(|n| eval(&mut rng, n, Some(&events[n as usize * 7])))
        .collect();
    b.evals.extend((60..70).map(|n| eval(&mut rng, n, None)));
    b.dead_letters = vec![dead("http:events", "line 3", "negative cost")];
    b.changes = vec![
        change(NOW - 5 * HOUR, ChangeKind::Deploy, Some("summarize"), "v2"),
        change(NOW - HOUR, ChangeKind::ConfigChange, None, "calendar"),
    ];

    let mut c = Batch::new(DB_SOURCE, "newapi");
    c.events = events[450..].to_vec();
    c.changes = vec![change(
        NOW - 5 * HOUR,
        ChangeKind::Deploy,
        Some("summarize"),
        "v2",
    )];
    c.db_cursor = Some(DbCursor {
        source: DB_SOURCE.into(),
        last_id: 4_242,
    });
    vec![a, b, c]
}

/// The alert, exception and impact report the digest lists, written through the
/// stages' own SQL on a side connection.
fn stage_rows(db: &Location, deploy: &ChangeEvent) {
    let side = db.side().unwrap();
    let alert = Alert {
        event: AlertEvent::Firing,
        members: Vec::new(),
        reopens: 0,
        incident: None,
        rule: "cost-per-request".into(),
        lane: Lane::Cost,
        kind: Kind::CostDrift,
        scope: BTreeMap::from([("model".to_string(), "gpt-4o".to_string())]),
        at_ms: NOW - HOUR,
        tier: "digest".into(),
        tier_rank: 3,
        summary: "cost per request up 30% on gpt-4o".into(),
        evidence: serde_json::json!({"z": 7.5}),
    };
    driftwarden::store::alerts::insert(&side, 1, &alert, "firing", NOW - HOUR).unwrap();
    let report = serde_json::json!({"summary": "cost per request up 12% after v2"});
    driftwarden::store::alerts::set_impact(&side, deploy, &report).unwrap();
    let e = driftwarden::store::exceptions::insert(
        &side,
        &NewException {
            rule: "error-rate".into(),
            scope: BTreeMap::from([("route".to_string(), "chat".to_string())]),
            reason: "a migration runs tonight".into(),
            owner: "ana".into(),
            ticket: None,
            expires_ms: NOW + 2 * DAY,
        },
        NOW - DAY,
    )
    .unwrap();
    driftwarden::store::exceptions::add_hit(&side, e.id, NOW - HOUR).unwrap();
}

/// `read` of both stores, asserted equal; SQLite's answer.
fn same<T: PartialEq + Debug>(
    what: &str,
    lite: &Location,
    pg: &Location,
    read: impl Fn(&Location) -> T,
) -> T {
    let want = read(lite);
    assert_eq!(read(pg), want, "{what}: PostgreSQL answers otherwise");
    want
}

/// A sum of floats to 1e-6: the backends may add the same rows in another order.
fn rounded(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Whether two sums of the same numbers, added in other orders (and one maybe
/// `rounded`), agree.
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-6 * want.abs().max(1.0)
}

/// The events the batches store: the first of each key, in key order.
fn stored_events(batches: &[Batch]) -> Vec<UsageEvent> {
    let mut by_key = BTreeMap::new();
    for e in batches.iter().flat_map(|b| &b.events) {
        by_key
            .entry((e.ts_ms, e.id.to_string()))
            .or_insert_with(|| e.clone());
    }
    by_key.into_values().collect()
}

#[test]
fn every_read_answers_alike_on_sqlite_and_postgres() {
    let test = "every_read_answers_alike_on_sqlite_and_postgres";
    let Some(server) = PgServer::start_for(test) else {
        return;
    };
    let pw = server.create_store_db("dw", "dw_reads");
    let url = server.url("dw_reads", &pw, "dw");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.db");
    let mut sqlite = Store::open(&path).unwrap();
    let mut node_a = PgWriter::open(&url, "node-a").unwrap();
    let batches = batches();
    for (n, batch) in batches.iter().enumerate() {
        let now = NOW - 10 * MINUTE + n as i64;
        assert_eq!(
            node_a.commit(batch, now).unwrap(),
            sqlite.commit(batch, now).unwrap()
        );
    }
    // Another replica tails a file at the same path on its own node.
    let mut node_b = PgWriter::open(&url, "node-b").unwrap();
    let mut other = Batch::new(TAIL_SOURCE, "native");
    other.checkpoint = Some(tail_checkpoint(91, 512));
    node_b.commit(&other, NOW).unwrap();
    let lite = Location::from(path.as_path());
    let pg = Location::parse(&url).unwrap();
    let deploy = &batches[1].changes[0];
    stage_rows(&lite, deploy);
    stage_rows(&pg, deploy);

    let events = stored_events(&batches);
    assert_eq!(events.len(), 600, "the resent slice is stored once");

    // Counts.
    queries::ping(&lite).unwrap();
    queries::ping(&pg).unwrap();
    let counts = same("stats", &lite, &pg, |db| {
        let s = queries::stats(db).unwrap();
        assert!(s.db_bytes > 0, "{db}: no size");
        (s.events, s.evals, s.dead_letters, s.aggregate_rows)
    });
    assert_eq!((counts.0, counts.1, counts.2), (600, 70, 3));
    assert!(counts.3 > 600, "aggregate rows: a minute per scope");
    assert!(queries::db_bytes(&pg).unwrap() > 0);

    // Raw history, paged as a restart warms the analysis: every field, in key order.
    let paged = same("events_page", &lite, &pg, |db| {
        let conn = db.reader().unwrap();
        let mut all: Vec<UsageEvent> = Vec::new();
        let mut after = (i64::MIN / 4, String::new());
        loop {
            let page = queries::events_page(&conn, (after.0, &after.1), NOW, 7).unwrap();
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 7);
            after = (last.ts_ms, last.id.to_string());
            all.extend(page);
        }
        all
    });
    assert_eq!(paged, events);
    let bounded = same("events_page before a time", &lite, &pg, |db| {
        queries::events_page(
            &db.reader().unwrap(),
            (events[9].ts_ms, ""),
            events[30].ts_ms,
            1000,
        )
        .unwrap()
    });
    assert_eq!(bounded, events[9..30]);

    let evals = same("evals_between", &lite, &pg, |db| {
        queries::evals_between(&db.reader().unwrap(), NOW - 2 * DAY, NOW).unwrap()
    });
    let mut want: Vec<EvalScore> = batches.iter().flat_map(|b| b.evals.clone()).collect();
    want.sort_by_key(|e| e.ts_ms);
    assert_eq!(evals, want);
    for passed in [Some(true), Some(false), None] {
        assert!(evals.iter().any(|e| e.passed == passed), "{passed:?}");
    }

    let changes = same("changes_since", &lite, &pg, |db| {
        queries::changes_since(&db.reader().unwrap(), NOW - 41 * HOUR).unwrap()
    });
    let notes: Vec<_> = changes.iter().map(|c| (c.kind, c.note.as_str())).collect();
    assert_eq!(
        notes,
        [
            (ChangeKind::ModelBump, "gpt-4o"),
            (ChangeKind::Deploy, "v2"),
            (ChangeKind::ConfigChange, "calendar")
        ]
    );
    assert_eq!(changes[1], *deploy);
    // Stored rows as the API lists them, newest first; ids are each database's own.
    let listed = same("changes", &lite, &pg, |db| {
        let rows = queries::changes(&db.reader().unwrap(), NOW - 6 * HOUR, 10).unwrap();
        rows.into_iter()
            .map(|mut c| {
                c.id = 0;
                c
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].note, "calendar");
    assert_eq!(
        listed[1].impact.as_ref().and_then(|i| i.get("summary")),
        Some(&serde_json::json!("cost per request up 12% after v2"))
    );
    assert!(listed[0].impact.is_none());

    let resume_from = |db: &Location| {
        let conn = db.reader().unwrap();
        (
            queries::holds_history(&conn).unwrap(),
            queries::holds_events(&conn).unwrap(),
        )
    };
    assert_eq!(same("holds", &lite, &pg, resume_from), (true, true));

    // Dead letters, newest first, of every source or one.
    let letters = same("dead_letters", &lite, &pg, |db| {
        queries::dead_letters(db, None, 10)
            .unwrap()
            .into_iter()
            .map(|d| (d.received_ms, d.source, d.position, d.reason, d.raw))
            .collect::<Vec<_>>()
    });
    let positions: Vec<_> = letters.iter().map(|d| d.2.as_str()).collect();
    assert_eq!(positions, ["line 3", "2048", "1024"]);
    let tail_only = same("dead_letters of a source", &lite, &pg, |db| {
        queries::dead_letters(db, Some(TAIL_SOURCE), 1)
            .unwrap()
            .into_iter()
            .map(|d| d.position)
            .collect::<Vec<_>>()
    });
    assert_eq!(tail_only, ["2048"]);

    // Checkpoints are per node on PostgreSQL; SQLite has one node.
    let a = Some(tail_checkpoint(77, 98_304));
    assert_eq!(queries::checkpoint(&lite, "node-a", TAILED).unwrap(), a);
    assert_eq!(queries::checkpoint(&lite, "node-b", TAILED).unwrap(), a);
    assert_eq!(queries::checkpoint(&pg, "node-a", TAILED).unwrap(), a);
    assert_eq!(
        queries::checkpoint(&pg, "node-b", TAILED).unwrap(),
        Some(tail_checkpoint(91, 512))
    );
    assert_eq!(queries::checkpoint(&pg, "node-c", TAILED).unwrap(), None);
    assert_eq!(
        queries::checkpoint(&pg, "node-a", "/elsewhere").unwrap(),
        None
    );

    let cursor = same("db_cursor", &lite, &pg, |db| {
        (
            queries::db_cursor(db, DB_SOURCE).unwrap(),
            queries::db_cursor(db, "db:other").unwrap(),
        )
    });
    assert_eq!(cursor, (Some(4_242), None));

    // Aggregates.
    let minutes = same("minute_totals", &lite, &pg, |db| {
        queries::minute_totals(db, "global", "").unwrap()
    });
    assert_eq!(minutes.iter().map(|m| m.1).sum::<u64>(), 600);
    assert!(minutes.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
    let since = (NOW - 3 * DAY) / MINUTE;
    let scopes = same("scopes", &lite, &pg, |db| {
        queries::scopes(db, since, 2).unwrap()
    });
    let global = scopes.iter().find(|s| s.dim == "global").unwrap();
    assert_eq!(global.requests, 600);
    for dim in ["model", "route", "tenant", "provider"] {
        let of: Vec<_> = scopes.iter().filter(|s| s.dim == dim).collect();
        assert_eq!(of.len(), 2, "{dim}: the 2 busiest values");
        assert!(of[0].requests >= of[1].requests, "{dim}: busiest first");
        let busiest = events
            .iter()
            .filter(|e| dim_value(e, dim).as_deref() == Some(of[0].value.as_str()))
            .count() as u64;
        assert_eq!(of[0].requests, busiest, "{dim}={}", of[0].value);
    }

    let step = 6 * 60;
    let buckets = same("agg_buckets", &lite, &pg, |db| {
        queries::agg_buckets(db, "model", "gpt-4o", since, NOW / MINUTE, step)
            .unwrap()
            .into_iter()
            .map(|b| AggBucket {
                cost_usd: rounded(b.cost_usd),
                ..b
            })
            .collect::<Vec<_>>()
    });
    let gpt: Vec<&UsageEvent> = events.iter().filter(|e| e.model == "gpt-4o").collect();
    assert!(buckets.len() > 4);
    assert!(buckets.iter().all(|b| b.minute % step == 0));
    let sum = |f: fn(&AggBucket) -> u64| buckets.iter().map(f).sum::<u64>();
    assert_eq!(sum(|b| b.requests), gpt.len() as u64);
    assert_eq!(
        sum(|b| b.tokens),
        gpt.iter()
            .map(|e| e.prompt_tokens + e.completion_tokens)
            .sum::<u64>()
    );
    assert_eq!(
        sum(|b| b.costed_requests),
        gpt.iter().filter(|e| e.cost_usd.is_some()).count() as u64
    );
    assert_eq!(
        sum(|b| b.latency_ms_sum),
        gpt.iter().filter_map(|e| e.latency_ms).sum::<u64>()
    );
    assert!(close(
        buckets.iter().map(|b| b.cost_usd).sum(),
        gpt.iter().filter_map(|e| e.cost_usd).sum()
    ));

    for (dim, value) in [
        ("global", ""),
        ("model", "gpt-4o"),
        ("route", "chat"),
        ("tenant", "team-a"),
        ("provider", "openai"),
    ] {
        let evals_in = same("eval_buckets", &lite, &pg, |db| {
            queries::eval_buckets(db, dim, value, NOW - 2 * DAY, NOW, 6 * HOUR)
                .unwrap()
                .into_iter()
                .map(|b| EvalBucket {
                    mean_score: b.mean_score.map(rounded),
                    pass_rate: b.pass_rate.map(rounded),
                    ..b
                })
                .collect::<Vec<_>>()
        });
        let scored: Vec<&EvalScore> = evals
            .iter()
            .filter(|e| dim == "global" || in_scope(e, &events, dim, value))
            .collect();
        assert!(!scored.is_empty(), "{dim}: no evals in scope");
        let step = 6 * HOUR;
        let mut want: BTreeMap<i64, (u64, Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for e in scored {
            let bucket = want.entry(e.ts_ms / step * step).or_default();
            bucket.0 += 1;
            bucket.1.extend(e.score);
            bucket.2.extend(e.passed.map(|p| f64::from(u8::from(p))));
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let agrees = |got: Option<f64>, want: Option<f64>| match (got, want) {
            (Some(g), Some(w)) => close(g, w),
            (g, w) => g == w,
        };
        assert_eq!(evals_in.len(), want.len(), "{dim}={value}");
        for (got, (start_ms, (evals, scores, verdicts))) in evals_in.iter().zip(want) {
            assert_eq!(
                (got.start_ms, got.evals),
                (start_ms, evals),
                "{dim}={value}"
            );
            assert!(agrees(got.mean_score, mean(&scores)), "{dim}: {got:?}");
            assert!(agrees(got.pass_rate, mean(&verdicts)), "{dim}: {got:?}");
        }
    }

    // The digest: spend per scope over the day and the day before, and all it lists.
    let totals = same("spend::totals", &lite, &pg, |db| {
        let conn = db.reader().unwrap();
        let to = NOW / MINUTE;
        spend::totals(&conn, &["model", "tenant"], to - 1440, to)
            .unwrap()
            .into_iter()
            .map(|t| ScopeTotal {
                cost_usd: rounded(t.cost_usd),
                ..t
            })
            .collect::<Vec<_>>()
    });
    let day: Vec<&UsageEvent> = events.iter().filter(|e| e.ts_ms >= NOW - DAY).collect();
    let gpt_day = totals
        .iter()
        .find(|t| t.dim == "model" && t.value == "gpt-4o")
        .unwrap();
    assert_eq!(
        gpt_day.requests,
        day.iter().filter(|e| e.model == "gpt-4o").count() as u64
    );
    assert_eq!(
        totals
            .iter()
            .filter(|t| t.dim == "model")
            .map(|t| t.requests)
            .sum::<u64>(),
        day.len() as u64
    );
    let text = same("Digest::build", &lite, &pg, |db| {
        Digest::build(db, "digest", NOW).unwrap().text()
    });
    for want in [
        "Digest alerts (1)",
        "cost per request up 30% on gpt-4o",
        "Changes (2)",
        "impact: cost per request up 12% after v2",
        "Exceptions (1, most hits first)",
        "error-rate on route=chat: 1 hit",
        &format!("{} requests (was {})", day.len(), events.len() - day.len()),
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
}

#[test]
fn an_empty_store_holds_no_history_on_either_backend() {
    let test = "an_empty_store_holds_no_history_on_either_backend";
    let Some(server) = PgServer::start_for(test) else {
        return;
    };
    let pw = server.create_store_db("dw", "dw_empty");
    let url = server.url("dw_empty", &pw, "dw");
    drop(PgWriter::open(&url, "node-a").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.db");
    drop(Store::open(&path).unwrap());
    for db in [
        Location::from(path.as_path()),
        Location::parse(&url).unwrap(),
    ] {
        let conn = db.reader().unwrap();
        assert!(!queries::holds_history(&conn).unwrap(), "{db}");
        assert!(!queries::holds_events(&conn).unwrap(), "{db}");
        let s = queries::stats(&db).unwrap();
        assert_eq!((s.events, s.evals, s.dead_letters), (0, 0, 0), "{db}");
        assert!(queries::scopes(&db, 0, 5).unwrap().is_empty(), "{db}");
        assert_eq!(queries::checkpoint(&db, "node-a", TAILED).unwrap(), None);
        let digest = Digest::build(&db, "digest", NOW).unwrap().text();
        assert!(
            digest.contains("no traffic on either day"),
            "{db}: {digest}"
        );
    }
}

/// Event `e`'s value of dimension `dim`.
fn dim_value(e: &UsageEvent, dim: &str) -> Option<String> {
    match dim {
        "model" => Some(e.model.to_string()),
        "route" => e.route.as_ref().map(ToString::to_string),
        "tenant" => e.tenant.as_ref().map(ToString::to_string),
        "provider" => e.provider.as_ref().map(ToString::to_string),
        _ => None,
    }
}

/// Whether eval `e` counts for the scope `dim=value`: it names the route or model, or
/// the request it scored is in scope.
fn in_scope(e: &EvalScore, events: &[UsageEvent], dim: &str, value: &str) -> bool {
    let names = match dim {
        "model" => e.model.as_deref() == Some(value),
        "route" => e.route.as_deref() == Some(value),
        _ => false,
    };
    names
        || e.request_id.as_deref().is_some_and(|id| {
            events
                .iter()
                .any(|ev| ev.id == id && dim_value(ev, dim).as_deref() == Some(value))
        })
}
