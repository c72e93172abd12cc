//! The leader's feed (`store::pg::feed`) against a REAL PostgreSQL server: what two
//! replicas commit is read back once each, in received order; a commit that lands
//! late (stamped before rows already fed) is still fed once; a feed started beside a
//! resume feeds exactly what the resume did not see.
//!
//! Each test starts its own private server (tests/suite/support/dbservers.rs). Without the
//! PostgreSQL binaries a test prints `SKIPPED:` and passes, unless `CI` is set, when it
//! fails. Run: `cargo test --release --test suite store_pg_feed::`.

use crate::support::dbservers;

use std::collections::BTreeMap;

use dbservers::*;
use driftwarden::domain::{ChangeEvent, ChangeKind, CostSource, EvalScore, UsageEvent};
use driftwarden::store::Batch;
use driftwarden::store::pg::feed::{Feed, LOOKBACK_MS};
use driftwarden::store::pg::ingest::PgWriter;
use driftwarden::store::sql::{Db, Sql, SqlExt};

/// Received stamps: far from zero, so nothing compares against an unset column.
const T0: i64 = 1_800_000_000_000;

fn server(test: &str) -> Option<(PgServer, String)> {
    let pg = PgServer::start_for(test)?;
    let pw = pg.create_store_db("dw", "dw_replica");
    let url = pg.url("dw_replica", &pw, "dw");
    Some((pg, url))
}

fn event(id: &str, ts_ms: i64) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        ts_ms,
        model: "gpt-4o".into(),
        resolved_model: None,
        provider: Some("openai".into()),
        route: Some("chat".into()),
        tenant: Some("acme".into()),
        prompt_tokens: 120,
        completion_tokens: 30,
        cached_tokens: 0,
        cost_usd: Some(0.25),
        cost_source: CostSource::Gateway,
        list_cost_usd: None,
        latency_ms: Some(900),
        ttft_ms: None,
        status: Some(200),
        finish_reason: Some("stop".into()),
        error_type: None,
    }
}

fn batch(ids: &[&str]) -> Batch {
    let mut b = Batch::new("http:events", "native");
    b.events = ids.iter().map(|id| event(id, T0 - 60_000)).collect();
    b
}

/// Every event id the feed hands over until it has nothing more, in order.
fn drain(feed: &mut Feed) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(c) = feed.poll().expect("polling the feed") {
        assert_eq!(c.fresh.events.len(), c.batch.events.len(), "all fresh");
        ids.extend(c.batch.events.iter().map(|e| e.id.to_string()));
    }
    ids
}

#[test]
fn two_replicas_commits_are_fed_once_each_late_commits_included() {
    let Some((_pg, url)) = server("two_replicas_commits_are_fed_once_each_late_commits_included")
    else {
        return;
    };
    let mut a = PgWriter::open(&url, "node-a").unwrap();
    let mut b = PgWriter::open(&url, "node-b").unwrap();
    let db = Db::pg(driftwarden::store::pg::connect(&url).unwrap());
    let (mut feed, ()) = Feed::start(db, T0, |_| Ok(())).unwrap();
    assert!(drain(&mut feed).is_empty(), "an empty store feeds nothing");

    a.commit(&batch(&["a1", "a2"]), T0 + 1_000).unwrap();
    b.commit(&batch(&["b1"]), T0 + 2_000).unwrap();
    // The same event posted to both replicas is stored, and fed, once.
    b.commit(&batch(&["a2", "b2"]), T0 + 3_000).unwrap();
    assert_eq!(drain(&mut feed), ["a1", "a2", "b1", "b2"]);
    assert!(drain(&mut feed).is_empty(), "nothing twice");

    // A commit stamped before rows already fed (a slow transaction, a replica whose
    // clock runs behind) is fed when it lands, within the lookback.
    a.commit(&batch(&["late"]), T0 + 3_000 - LOOKBACK_MS / 2)
        .unwrap();
    b.commit(&batch(&["b3"]), T0 + 4_000).unwrap();
    let mut got = drain(&mut feed);
    got.sort();
    assert_eq!(got, ["b3", "late"]);
    assert!(drain(&mut feed).is_empty());
}

#[test]
fn evals_and_change_events_from_any_replica_are_fed_too() {
    let Some((_pg, url)) = server("evals_and_change_events_from_any_replica_are_fed_too") else {
        return;
    };
    let mut a = PgWriter::open(&url, "node-a").unwrap();
    let db = Db::pg(driftwarden::store::pg::connect(&url).unwrap());
    let (mut feed, ()) = Feed::start(db, T0, |_| Ok(())).unwrap();
    let mut posted = Batch::new("http:evals", "native");
    posted.evals.push(EvalScore {
        request_id: Some("r1".into()),
        route: Some("chat".into()),
        model: Some("gpt-4o".into()),
        evaluator: "faithfulness".into(),
        ts_ms: T0 - 30_000,
        score: Some(0.75),
        passed: Some(true),
    });
    posted.changes.push(ChangeEvent {
        kind: ChangeKind::ModelBump,
        ts_ms: T0 - 20_000,
        scope: BTreeMap::from([("model".to_string(), "gpt-4o".to_string())]),
        note: "gpt-4o-2024-11-20".into(),
        origin: "api".into(),
    });
    a.commit(&posted, T0 + 500).unwrap();
    let c = feed.poll().unwrap().expect("a batch");
    assert_eq!(c.batch.evals, posted.evals);
    assert_eq!(c.batch.changes, posted.changes);
    assert_eq!((c.fresh.evals.len(), c.fresh.changes.len()), (1, 1));
    assert!(feed.poll().unwrap().is_none());
}

#[test]
fn a_feed_started_with_a_resume_feeds_what_the_resume_did_not_see() {
    let Some((_pg, url)) = server("a_feed_started_with_a_resume_feeds_what_the_resume_did_not_see")
    else {
        return;
    };
    let mut a = PgWriter::open(&url, "node-a").unwrap();
    a.commit(&batch(&["before-1", "before-2"]), T0 - 2_000)
        .unwrap();
    let db = Db::pg(driftwarden::store::pg::connect(&url).unwrap());
    // The resume reads inside the feed's snapshot: a commit landing meanwhile (from
    // another connection) is neither in what the resume saw nor lost to the feed.
    let mut other = PgWriter::open(&url, "node-b").unwrap();
    let (mut feed, resumed) = Feed::start(db, T0 - 1_000, |conn| {
        let before = conn.rows("SELECT id FROM events ORDER BY id", &[], |r| r.text(0))?;
        other.commit(&batch(&["during"]), T0 - 1_500).unwrap();
        let after = conn.rows("SELECT id FROM events ORDER BY id", &[], |r| r.text(0))?;
        assert_eq!(before, after, "one snapshot");
        Ok(after)
    })
    .unwrap();
    assert_eq!(resumed, ["before-1", "before-2"]);
    a.commit(&batch(&["after"]), T0 + 1_000).unwrap();
    let mut got = drain(&mut feed);
    got.sort();
    assert_eq!(got, ["after", "during"]);
}

/// A row stamped just before the start's window, while the newest row the resume saw
/// is inside it: the first lookback (from that newest row) reaches below the window,
/// and must not feed again what the resume counted. Once (issue 16) a leader that
/// took over a replica's backlog counted 16,203 such rows twice.
#[test]
fn the_first_lookback_does_not_feed_again_what_the_resume_counted() {
    let Some((_pg, url)) = server("the_first_lookback_does_not_feed_again_what_the_resume_counted")
    else {
        return;
    };
    let mut a = PgWriter::open(&url, "node-a").unwrap();
    // The start's window is [T0 - LOOKBACK_MS, ..): "older" is just below it, and
    // within the lookback of "newest".
    a.commit(&batch(&["older"]), T0 - LOOKBACK_MS - 200)
        .unwrap();
    a.commit(&batch(&["newest"]), T0 - 500).unwrap();
    let db = Db::pg(driftwarden::store::pg::connect(&url).unwrap());
    let (mut feed, resumed) = Feed::start(db, T0, |conn| {
        conn.rows("SELECT id FROM events ORDER BY id", &[], |r| r.text(0))
    })
    .unwrap();
    assert_eq!(resumed, ["newest", "older"]);
    assert!(drain(&mut feed).is_empty(), "the resume counted both");
    a.commit(&batch(&["after"]), T0 + 1_000).unwrap();
    assert_eq!(drain(&mut feed), ["after"]);
}

/// A poll that fails after reading one table (here: the evals table is gone for a
/// moment) hands nothing over and moves no cursor: the next poll, on a new
/// connection, feeds those rows.
#[test]
fn a_poll_that_fails_part_way_loses_nothing() {
    let Some((_pg, url)) = server("a_poll_that_fails_part_way_loses_nothing") else {
        return;
    };
    let mut a = PgWriter::open(&url, "node-a").unwrap();
    let db = Db::pg(driftwarden::store::pg::connect(&url).unwrap());
    let (mut feed, ()) = Feed::start(db, T0, |_| Ok(())).unwrap();
    a.commit(&batch(&["e1", "e2"]), T0 + 1_000).unwrap();
    let owner = Db::pg(driftwarden::store::pg::connect(&url).unwrap());
    owner
        .execute("ALTER TABLE eval_scores RENAME TO eval_scores_away", &[])
        .unwrap();
    assert!(feed.poll().is_err(), "the evals table is gone");
    owner
        .execute("ALTER TABLE eval_scores_away RENAME TO eval_scores", &[])
        .unwrap();
    feed.reconnect(Db::pg(driftwarden::store::pg::connect(&url).unwrap()));
    assert_eq!(drain(&mut feed), ["e1", "e2"]);
    assert!(drain(&mut feed).is_empty());
}

/// While the feed pages through a backlog it does not look back; a commit that lands
/// behind the cursor meanwhile (stamped 8 s before rows already read, inside the
/// lookback) is fed once the feed catches up, even though the cursor has moved on by
/// more than the lookback since.
#[test]
fn a_late_commit_behind_a_paging_feed_is_fed_once_it_catches_up() {
    let Some((_pg, url)) = server("a_late_commit_behind_a_paging_feed_is_fed_once_it_catches_up")
    else {
        return;
    };
    let mut a = PgWriter::open(&url, "node-a").unwrap();
    let db = Db::pg(driftwarden::store::pg::connect(&url).unwrap());
    let (mut feed, ()) = Feed::start(db, T0, |_| Ok(())).unwrap();
    // Three commits of more rows than a poll reads (20,000), 30 s apart.
    let page: Vec<String> = (0..20_000).map(|i| format!("{i:05}")).collect();
    for (n, stamp) in [(0, T0 + 1_000), (1, T0 + 31_000), (2, T0 + 61_000)] {
        let ids: Vec<String> = page.iter().map(|i| format!("c{n}-{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        a.commit(&batch(&refs), stamp).unwrap();
    }
    let fed = |feed: &mut Feed| feed.poll().unwrap().map_or(0, |c| c.batch.events.len());
    assert_eq!(fed(&mut feed), 20_000, "a full page: no lookback yet");
    assert_eq!(fed(&mut feed), 20_000, "the cursor is at the second commit");
    a.commit(&batch(&["late"]), T0 + 31_000 - LOOKBACK_MS + 2_000)
        .unwrap();
    assert_eq!(fed(&mut feed), 20_000, "the cursor moves 30 s on");
    let rest = drain(&mut feed);
    assert_eq!(rest, ["late"], "fed once caught up, and nothing twice");
    assert!(drain(&mut feed).is_empty());
}
