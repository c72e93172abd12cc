//! The PostgreSQL store's write path (`store::pg::ingest::PgWriter`) against a REAL
//! PostgreSQL server: the same batches give the same reports, `Fresh` indexes and rows
//! as SQLite's `Store`; two replicas committing the same events at once store and
//! report each once; day partitions are created on demand and dropped by retention;
//! replicas share one identity salt.
//!
//! Each test starts its own private server (tests/suite/support/dbservers.rs). Without the
//! PostgreSQL binaries a test prints `SKIPPED:` and passes, unless `CI` is set, when it
//! fails. Run: `cargo test --release --test suite store_pg_ingest::`.

use crate::support::dbservers;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Barrier};

use dbservers::*;
use driftwarden::domain::{
    ChangeEvent, ChangeKind, CostSource, DbCursor, DeadLetter, EvalScore, Fingerprint,
    TailCheckpoint, UsageEvent,
};
use driftwarden::store::pg::ingest::PgWriter;
use driftwarden::store::{Batch, Store};

const DAY_MS: i64 = 86_400_000;
/// 2026-03-10T00:00:00Z: the tests' first day.
const DAY0: i64 = 20_522 * DAY_MS;

/// A server with database `dw` and a login role with the store's grants; returns it
/// and the role's URL.
fn server(test: &str) -> Option<(PgServer, String)> {
    let pg = PgServer::start_for(test)?;
    let pw = pg.create_store_db("dw", "dw_writer");
    let url = pg.url("dw_writer", &pw, "dw");
    Some((pg, url))
}

/// A small deterministic generator (an LCG): the batches are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// An event with labels varied by `rng`; tenant `tenant` (none if `None`).
fn event(rng: &mut Lcg, id: &str, ts_ms: i64, tenant: Option<String>) -> UsageEvent {
    let models = ["gpt-4o", "claude-3-5-sonnet", "llama-3-70b"];
    let routes = [Some("chat"), Some("classify"), None];
    let providers = [Some("openai"), None];
    let status = [Some(200), Some(200), Some(500), None];
    let finish = [Some("stop"), Some("length"), None];
    let pick = |rng: &mut Lcg, n: usize| rng.below(n as u64) as usize;
    UsageEvent {
        id: id.into(),
        ts_ms,
        model: models[pick(rng, 3)].into(),
        resolved_model: (pick(rng, 4) == 0).then(|| "gpt-4o-2024-08-06".into()),
        provider: providers[pick(rng, 2)].map(Into::into),
        route: routes[pick(rng, 3)].map(Into::into),
        tenant: tenant.map(Into::into),
        prompt_tokens: rng.below(5_000),
        completion_tokens: rng.below(1_000),
        cached_tokens: rng.below(100),
        cost_usd: (pick(rng, 5) != 0).then(|| rng.below(100_000) as f64 / 7_919.0),
        cost_source: [
            CostSource::Gateway,
            CostSource::PriceTable,
            CostSource::Unknown,
        ][pick(rng, 3)],
        list_cost_usd: (pick(rng, 2) == 0).then(|| rng.below(100_000) as f64 / 6_007.0),
        latency_ms: (pick(rng, 6) != 0).then(|| rng.below(30_000)),
        ttft_ms: (pick(rng, 2) == 0).then(|| rng.below(3_000)),
        status: status[pick(rng, 4)],
        finish_reason: finish[pick(rng, 3)].map(Into::into),
        error_type: (pick(rng, 10) == 0).then(|| "rate_limit".into()),
    }
}

fn eval(request: &str, ts_ms: i64, score: f64) -> EvalScore {
    EvalScore {
        request_id: Some(request.into()),
        route: None,
        model: Some("gpt-4o".into()),
        evaluator: "judge-v1".into(),
        ts_ms,
        score: Some(score),
        passed: Some(score > 0.5),
    }
}

fn change(ts_ms: i64, note: &str, origin: &str) -> ChangeEvent {
    ChangeEvent {
        kind: ChangeKind::Deploy,
        ts_ms,
        scope: BTreeMap::from([("route".to_string(), "chat".to_string())]),
        note: note.into(),
        origin: origin.into(),
    }
}

/// Three batches from three sources covering every part of a commit: duplicates
/// within and across batches (a duplicate with other numbers: the first one counts),
/// events with and without tenants, 40 tenants against a cap of 5, two days.
fn comparison_batches() -> Vec<Batch> {
    let mut rng = Lcg(7);
    let tenant = |rng: &mut Lcg| (rng.below(5) != 0).then(|| format!("tenant-{}", rng.below(40)));
    let mut a = Batch::new("tail:/var/log/a.jsonl", "native");
    for i in 0..300 {
        let t = tenant(&mut rng);
        let ts = DAY0 + 86_300_000 + i * 997; // across midnight: two days
        a.events.push(event(&mut rng, &format!("a{i}"), ts, t));
    }
    // A duplicate inside the batch, with other numbers: the first one is stored.
    let mut dup = event(&mut rng, "a7", a.events[7].ts_ms, Some("tenant-1".into()));
    dup.prompt_tokens = 1;
    a.events.push(dup);
    a.evals = vec![
        eval("a1", DAY0, 0.9),
        eval("a2", DAY0, 0.1),
        eval("a1", DAY0, 0.3),
    ];
    a.dead_letters = vec![DeadLetter {
        source: a.source.clone(),
        position: "1234".into(),
        reason: "not JSON".into(),
        raw: "{oops".into(),
    }];
    a.checkpoint = Some(TailCheckpoint {
        path: "/var/log/a.jsonl".into(),
        fingerprint: Fingerprint {
            dev: 8,
            inode: 1_234_567,
            head_len: 4096,
            head_hash: u64::MAX - 17,
        },
        offset: 987_654,
    });

    let mut b = Batch::new("http:events", "native");
    // Resent: a slice of batch a, plus new events.
    b.events.extend(a.events[100..150].iter().cloned());
    for i in 0..200 {
        let t = tenant(&mut rng);
        b.events.push(event(
            &mut rng,
            &format!("b{i}"),
            DAY0 + DAY_MS + i * 3_001,
            t,
        ));
    }
    b.evals = vec![eval("a1", DAY0, 0.7), eval("b1", DAY0 + 5, 0.6)];
    b.changes = vec![
        change(DAY0 + 1_000, "v2", "api"),
        change(DAY0 + 2_000, "v3", "api"),
        change(DAY0 + 1_000, "v2", "detected"),
    ];
    b.dead_letters = vec![DeadLetter {
        source: b.source.clone(),
        position: "line 3".into(),
        reason: "no model".into(),
        raw: "{}".into(),
    }];

    let mut c = Batch::new("db:newapi:postgres://gw@db/newapi#logs", "newapi");
    for i in 0..150 {
        let t = tenant(&mut rng);
        c.events.push(event(
            &mut rng,
            &format!("c{i}"),
            DAY0 + 3_600_000 + i * 60_000,
            t,
        ));
    }
    c.events.extend(b.events[60..70].iter().cloned());
    c.changes = vec![
        change(DAY0 + 2_000, "v3", "api"),
        change(DAY0 + 9_000, "v4", "api"),
    ];
    c.db_cursor = Some(DbCursor {
        source: c.source.clone(),
        last_id: 4_242,
    });
    vec![a, b, c]
}

/// A column value as both databases give it.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    I(i64),
    F(f64),
    T(String),
}

fn sorted(mut rows: Vec<Vec<V>>) -> Vec<Vec<V>> {
    rows.sort_by_cached_key(|r| format!("{r:?}"));
    rows
}

fn sqlite_rows(store: &Store, sql: &str) -> Vec<Vec<V>> {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => V::Null,
                        rusqlite::types::ValueRef::Integer(v) => V::I(v),
                        rusqlite::types::ValueRef::Real(v) => V::F(v),
                        rusqlite::types::ValueRef::Text(t) => {
                            V::T(String::from_utf8(t.to_vec()).unwrap())
                        }
                        rusqlite::types::ValueRef::Blob(_) => panic!("a blob in {sql}"),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<Vec<Vec<V>>, _>>()
        .unwrap();
    sorted(rows)
}

fn pg_rows(c: &mut postgres::Client, sql: &str) -> Vec<Vec<V>> {
    use postgres::types::Type;
    let rows = c.query(sql, &[]).unwrap();
    let rows = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match *r.columns()[i].type_() {
                    Type::INT8 => r.get::<_, Option<i64>>(i).map_or(V::Null, V::I),
                    Type::FLOAT8 => r.get::<_, Option<f64>>(i).map_or(V::Null, V::F),
                    Type::TEXT => r.get::<_, Option<String>>(i).map_or(V::Null, V::T),
                    ref t => panic!("column type {t} in {sql}"),
                })
                .collect()
        })
        .collect();
    sorted(rows)
}

/// What both stores must hold alike (no row ids: each database numbers its own rows;
/// sources by name).
const SAME: [&str; 8] = [
    "SELECT ts_ms, id, model, resolved_model, provider, route, tenant, prompt_tokens, \
     completion_tokens, cached_tokens, cost_usd, cost_source, list_cost_usd, latency_ms, \
     ttft_ms, status, finish_reason, error_type, \
     (SELECT name FROM sources s WHERE s.id = source_id), received_ms FROM events",
    "SELECT minute, dim, value, requests, errors, truncated, prompt_tokens, completion_tokens, \
     cached_tokens, cost_usd, costed_requests, list_cost_usd, latency_ms_sum, latency_count \
     FROM agg_minute",
    "SELECT dim, value FROM agg_values",
    "SELECT key, request_id, route, model, evaluator, ts_ms, score, passed, \
     (SELECT name FROM sources s WHERE s.id = source_id), received_ms FROM eval_scores",
    "SELECT received_ms, source, position, reason, raw FROM dead_letters",
    "SELECT source, last_id, updated_ms FROM db_cursors",
    "SELECT path, dev, inode, head_len, head_hash, byte_offset, updated_ms FROM tail_checkpoints",
    "SELECT ts_ms, kind, scope, note, origin, received_ms, impact FROM change_events",
];

#[test]
fn postgres_commits_as_sqlite_does() {
    let test = "postgres_commits_as_sqlite_does";
    let Some((pg, url)) = server(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = Store::open(&dir.path().join("t.db"))
        .unwrap()
        .with_cardinality_cap(5);
    let mut writer = PgWriter::open(&url, "node-a")
        .unwrap()
        .with_cardinality_cap(5);
    let batches = comparison_batches();
    let mut inserted = 0;
    for (n, batch) in batches.iter().enumerate() {
        let now = DAY0 + 10 * DAY_MS + n as i64;
        let want = sqlite.commit_fresh(batch, now).unwrap();
        let got = writer.commit_fresh(batch, now).unwrap();
        assert_eq!(got, want, "batch {n} from {}", batch.source);
        inserted += want.0.events_inserted;
    }
    // The batches exercise what they are meant to: duplicates of both kinds were met
    // and the cap sent tenants to `_other`.
    let mut c = pg.admin("dw");
    assert!(inserted > 0 && inserted < batches.iter().map(|b| b.events.len() as u64).sum());
    let other = pg_rows(
        &mut c,
        "SELECT 1::int8 FROM agg_minute WHERE value = '_other'",
    );
    assert!(!other.is_empty(), "no aggregate under _other");
    for sql in SAME {
        let want = sqlite_rows(&sqlite, sql);
        assert!(!want.is_empty(), "nothing to compare in {sql}");
        assert_eq!(pg_rows(&mut c, sql), want, "{sql}");
    }
    let nodes = pg_rows(&mut c, "SELECT node FROM tail_checkpoints");
    assert_eq!(nodes, [vec![V::T("node-a".into())]]);

    // A second writer (a restart) loads the ids and admitted values and goes on alike.
    let mut again = PgWriter::open(&url, "node-a")
        .unwrap()
        .with_cardinality_cap(5);
    let mut rng = Lcg(99);
    let mut batch = Batch::new("http:events", "native");
    for i in 0..50 {
        let t = Some(format!("late-{}", i % 7));
        batch
            .events
            .push(event(&mut rng, &format!("d{i}"), DAY0 + i * 1_000, t));
    }
    batch.events.extend(batches[0].events[..5].iter().cloned());
    let now = DAY0 + 20 * DAY_MS;
    let want = sqlite.commit_fresh(&batch, now).unwrap();
    assert_eq!(again.commit_fresh(&batch, now).unwrap(), want);
    for sql in &SAME[..3] {
        assert_eq!(pg_rows(&mut c, sql), sqlite_rows(&sqlite, sql), "{sql}");
    }
}

/// Batch `b` of the replica test: 400 events over 8 days (so partitions are new to
/// both replicas at once), half of them with a tenant new in this batch.
fn replica_batch(b: usize) -> Batch {
    let mut rng = Lcg(b as u64 + 1);
    let mut batch = Batch::new("http:events", "native");
    for i in 0..400 {
        let tenant = (i % 2 == 0).then(|| format!("t{b}-{}", i % 10));
        let ts = DAY0 + (b as i64 % 8) * DAY_MS + i as i64 * 1_000;
        let mut e = event(&mut rng, &format!("r{b}-{i}"), ts, tenant);
        e.model = format!("model-{}", b % 4).into();
        batch.events.push(e);
    }
    batch
}

#[test]
fn two_replicas_store_and_report_each_event_once() {
    let test = "two_replicas_store_and_report_each_event_once";
    let Some((pg, url)) = server(test) else {
        return;
    };
    const BATCHES: usize = 24;
    const CAP: usize = 30;
    let batches: Arc<Vec<Batch>> = Arc::new((0..BATCHES).map(replica_batch).collect());
    let start = Arc::new(Barrier::new(2));
    let replicas: Vec<_> = ["node-a", "node-b"]
        .into_iter()
        .enumerate()
        .map(|(r, node)| {
            let (url, batches, start) = (url.clone(), batches.clone(), start.clone());
            std::thread::spawn(move || {
                let mut w = PgWriter::open(&url, node)
                    .unwrap()
                    .with_cardinality_cap(CAP);
                start.wait();
                // Both post every batch: one from the start, the other from the middle
                // (wrapping around), so at times they hold the same events at once.
                let mut fresh = Vec::new();
                for k in 0..BATCHES {
                    let b = (k + r * BATCHES / 2) % BATCHES;
                    let (report, f) = w
                        .commit_fresh(&batches[b], 1_000 + k as i64)
                        .unwrap_or_else(|e| panic!("{node} batch {b}: {e}"));
                    assert_eq!(
                        report.events_inserted + report.events_duplicate,
                        batches[b].events.len() as u64
                    );
                    assert_eq!(report.events_inserted, f.events.len() as u64);
                    fresh.push((b, f.events));
                }
                fresh
            })
        })
        .collect();
    let mut reported: HashMap<(usize, u32), u32> = HashMap::new();
    for r in replicas {
        for (b, events) in r.join().expect("a replica panicked") {
            for i in events {
                *reported.entry((b, i)).or_default() += 1;
            }
        }
    }
    let total: usize = batches.iter().map(|b| b.events.len()).sum();
    assert_eq!(
        reported.len(),
        total,
        "every event reported new by one replica"
    );
    assert!(
        reported.values().all(|&n| n == 1),
        "an event reported new twice"
    );

    let mut c = pg.admin("dw");
    let count =
        |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM event_rows"),
        total as i64
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT sum(requests)::int8 FROM agg_minute WHERE dim = 'global'"
        ),
        total as i64
    );
    let with_tenant = batches
        .iter()
        .flat_map(|b| &b.events)
        .filter(|e| e.tenant.is_some())
        .count();
    assert_eq!(
        count(
            &mut c,
            "SELECT sum(requests)::int8 FROM agg_minute WHERE dim = 'tenant'"
        ),
        with_tenant as i64
    );
    // 120 tenants seen (5 a batch), admitted under one lock: exactly the cap, no more.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM agg_values WHERE dim = 'tenant'"
        ),
        CAP as i64
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM event_tenants"), 120);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM event_labels"),
        count(
            &mut c,
            "SELECT count(*) FROM (SELECT DISTINCT model, resolved_model, provider, \
             route, status, finish_reason, error_type, cost_source, source_id FROM event_labels) d"
        )
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'event_rows'::regclass"
        ),
        8
    );
}

#[test]
fn retention_drops_whole_day_partitions() {
    let test = "retention_drops_whole_day_partitions";
    let Some((pg, url)) = server(test) else {
        return;
    };
    let mut w = PgWriter::open(&url, "node-a").unwrap();
    let mut rng = Lcg(3);
    let mut batch = Batch::new("http:events", "native");
    let per_day = [5, 7, 11];
    for (d, n) in per_day.iter().enumerate() {
        for i in 0..*n {
            let ts = DAY0 + d as i64 * DAY_MS + i * 3_600_000;
            batch
                .events
                .push(event(&mut rng, &format!("d{d}-{i}"), ts, None));
        }
    }
    batch.evals = vec![
        eval("d0-1", DAY0 + 1, 0.5),
        eval("d2-1", DAY0 + 2 * DAY_MS + 6 * 3_600_000, 0.5),
    ];
    w.commit(&batch, DAY0).unwrap();
    let mut c = pg.admin("dw");
    let partitions = |c: &mut postgres::Client| -> Vec<String> {
        let mut names: Vec<String> = c
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'event_rows'::regclass",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        names.sort();
        names
    };
    let days = [
        "event_rows_20260310",
        "event_rows_20260311",
        "event_rows_20260312",
    ];
    assert_eq!(partitions(&mut c), days);

    // A cutoff in the third day: the first two go, the third stays whole (even its
    // rows before the cutoff).
    let cutoff = DAY0 + 2 * DAY_MS + 5 * 3_600_000;
    // Notifications delivered before the cutoff go too; later or undelivered stay.
    for (state, sent) in [
        ("sent", Some(cutoff - 1)),
        ("sent", Some(cutoff)),
        ("pending", None),
    ] {
        c.execute(
            "INSERT INTO outbox (channel, message, created_ms, next_attempt_ms, state, sent_ms) \
             VALUES ('slack', '{}', $1, $1, $2, $3)",
            &[&DAY0, &state, &sent],
        )
        .unwrap();
    }
    assert_eq!(w.prune(cutoff).unwrap(), (per_day[0] + per_day[1]) as u64);
    assert_eq!(partitions(&mut c), days[2..]);
    for gone in &days[..2] {
        let exists: Option<String> = c
            .query_one("SELECT to_regclass($1)::text", &[gone])
            .unwrap()
            .get(0);
        assert_eq!(exists, None, "{gone}");
    }
    let count =
        |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(count(&mut c, "SELECT count(*) FROM event_rows"), per_day[2]);
    assert_eq!(count(&mut c, "SELECT count(*) FROM eval_scores"), 1);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM outbox WHERE state = 'sent'"),
        1
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM outbox"), 2);
    assert_eq!(w.prune(cutoff).unwrap(), 0, "nothing left to drop");

    // The writer creates a dropped day's partition again for a late event.
    let mut late = Batch::new("http:events", "native");
    late.events
        .push(event(&mut rng, "late", DAY0 + 60_000, None));
    assert_eq!(w.commit(&late, DAY0).unwrap().events_inserted, 1);
    assert_eq!(partitions(&mut c), [days[0], days[2]]);
}

#[test]
fn replicas_share_one_identity_salt() {
    let test = "replicas_share_one_identity_salt";
    let Some((_pg, url)) = server(test) else {
        return;
    };
    let start = Arc::new(Barrier::new(2));
    let salts: Vec<[u8; 32]> = ["node-a", "node-b"]
        .into_iter()
        .map(|node| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                let mut w = PgWriter::open(&url, node).unwrap();
                start.wait();
                w.identity_salt().unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(salts[0], salts[1]);
    assert_ne!(salts[0], [0; 32]);
    let mut later = PgWriter::open(&url, "node-c").unwrap();
    assert_eq!(later.identity_salt().unwrap(), salts[0]);
}
