//! Leases, fencing and the claimed outbox on a real PostgreSQL (`store::pg::lease`,
//! `store::outbox` on a fenced `store::sql::Db`).
//!
//! Each test starts its own private server (tests/suite/support/dbservers.rs; skipped with a
//! loud line when PostgreSQL is not installed, a failure under CI) and migrates it as
//! a role that has only CONNECT and CREATE on the schema. Time is injected: no test
//! waits on the wall clock; concurrency is threads released together by a barrier.

use crate::support::dbservers;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use dbservers::PgServer;
use driftwarden::domain::{Message, Tier};
use driftwarden::schedule::digest;
use driftwarden::store::StoreError;
use driftwarden::store::outbox::{self, OutboxState};
use driftwarden::store::pg::{
    self,
    lease::{self, Lease, acquire, check, release},
};
use driftwarden::store::sql::{Db as StageDb, Pg, Sql, SqlExt, Transact};
use driftwarden::tiers::TierDef;
use postgres::Client;

const TTL: i64 = 15_000;
/// An injected "now" far from zero, so no expiry compares against an unset column.
const T0: i64 = 1_800_000_000_000;

/// A migrated database and the URL of its application role.
struct Db {
    _server: PgServer,
    url: String,
}

impl Db {
    fn start(test: &str) -> Option<Db> {
        let server = PgServer::start_for(test)?;
        let password = server.create_store_db("dw", "dw_app");
        let url = server.url("dw_app", &password, "dw");
        pg::open(&url).expect("migrating as dw_app");
        Some(Db {
            _server: server,
            url,
        })
    }

    fn connect(&self) -> Client {
        pg::connect(&self.url).expect("connecting as dw_app")
    }

    /// A stage's connection, fenced by `lease` as the leader's stages are.
    fn fenced(&self, lease: &Lease) -> StageDb {
        StageDb::pg(self.connect()).fenced(lease.clone())
    }

    fn count(&self, sql: &str) -> i64 {
        self.connect().query_one(sql, &[]).expect(sql).get(0)
    }
}

fn message(title: &str) -> Message {
    Message {
        title: title.into(),
        tier: None,
        alerts: Vec::new(),
        text: "body".into(),
    }
}

fn fenced(result: Result<impl std::fmt::Debug, StoreError>, token: i64) {
    match result {
        Err(StoreError::Fenced { lease, token: t }) if t == token => {
            assert_eq!(lease, "leader")
        }
        other => panic!("expected Fenced at token {token}, got {other:?}"),
    }
}

/// Take the `leader` lease for `holder` at `now`, which must succeed.
fn lead(c: &mut Client, holder: &str, now: i64) -> Lease {
    acquire(c, "leader", holder, TTL, now)
        .expect("acquire")
        .unwrap_or_else(|| panic!("{holder} could not take the leader lease at {now}"))
}

/// Every holder tries `name` at the same injected `now`, each on its own connection,
/// released together by a barrier. The results in holder order.
fn race(db: &Db, name: &str, holders: &[String], now: i64) -> Vec<Option<Lease>> {
    let barrier = Arc::new(Barrier::new(holders.len()));
    let threads: Vec<_> = holders
        .iter()
        .map(|holder| {
            let (mut c, barrier) = (db.connect(), barrier.clone());
            let (name, holder) = (name.to_string(), holder.clone());
            std::thread::spawn(move || {
                barrier.wait();
                acquire(&mut c, &name, &holder, TTL, now).expect("acquire")
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("racing thread"))
        .collect()
}

fn winners(results: &[Option<Lease>]) -> Vec<&Lease> {
    results.iter().flatten().collect()
}

#[test]
fn two_replicas_race_for_leader_then_take_over_after_expiry_with_the_next_token() {
    let Some(db) = Db::start("two_replicas_race_for_leader") else {
        return;
    };
    let holders = ["replica-a".to_string(), "replica-b".to_string()];
    let first = race(&db, "leader", &holders, T0);
    let won = winners(&first);
    assert_eq!(won.len(), 1, "{first:?}");
    let (leader, other) = if first[0].is_some() {
        (&holders[0], &holders[1])
    } else {
        (&holders[1], &holders[0])
    };
    assert_eq!((won[0].token, won[0].expires_ms), (1, T0 + TTL));

    let (mut l, mut o) = (db.connect(), db.connect());
    // Renewals keep the token and push the expiry out.
    let renewed = acquire(&mut l, "leader", leader, TTL, T0 + 5_000).unwrap();
    assert_eq!(
        renewed.map(|x| (x.token, x.expires_ms)),
        Some((1, T0 + 5_000 + TTL))
    );
    let expiry = T0 + 5_000 + TTL;
    assert_eq!(
        acquire(&mut o, "leader", other, TTL, expiry - 1).unwrap(),
        None
    );

    let took = acquire(&mut o, "leader", other, TTL, expiry).unwrap();
    assert_eq!(took.as_ref().map(|x| x.token), Some(2), "token + 1");
    assert_eq!(
        acquire(&mut l, "leader", leader, TTL, expiry).unwrap(),
        None
    );
    let again = acquire(&mut o, "leader", other, TTL, expiry + 5_000).unwrap();
    assert_eq!(again.map(|x| x.token), Some(2), "renewal keeps the token");

    // The old leader, back after its lease lapsed, is a new tenure: token 3.
    let back = acquire(&mut l, "leader", leader, TTL, expiry + 5_000 + TTL).unwrap();
    assert_eq!(back.map(|x| x.token), Some(3));
    // Other leases are independent.
    let source = acquire(&mut o, "source:gw", other, TTL, T0).unwrap();
    assert_eq!(source.map(|x| x.token), Some(1));
}

#[test]
fn eight_threads_racing_for_a_lease_get_exactly_one_winner() {
    let Some(db) = Db::start("eight_threads_racing") else {
        return;
    };
    let holders: Vec<String> = (0..8).map(|i| format!("replica-{i}")).collect();
    for round in 0..20 {
        let name = format!("race-{round}");
        let free = race(&db, &name, &holders, T0);
        let won = winners(&free);
        assert_eq!(won.len(), 1, "round {round} on a free lease: {free:?}");
        assert_eq!(won[0].token, 1);
        // All race again the moment it expires: one takes over, with the next token.
        let lapsed = race(&db, &name, &holders, T0 + TTL);
        let won = winners(&lapsed);
        assert_eq!(
            won.len(),
            1,
            "round {round} on an expired lease: {lapsed:?}"
        );
        assert_eq!(won[0].token, 2);
    }
}

#[test]
fn a_paused_old_leader_writes_nothing() {
    let Some(db) = Db::start("a_paused_old_leader_writes_nothing") else {
        return;
    };
    let (mut a, mut b) = (db.connect(), db.connect());
    let old = lead(&mut a, "replica-a", T0);
    // replica-a pauses; its lease lapses and replica-b takes over.
    let new = lead(&mut b, "replica-b", T0 + TTL);
    assert_eq!((old.token, new.token), (1, 2));

    // replica-a wakes up believing it is still T0 + 1 (well inside its lease): its
    // token is stale regardless of its clock.
    let mut a = StageDb::pg(a).fenced(old);
    fenced(outbox::enqueue(&a, "slack", &message("stale"), T0 + 1), 1);
    // A transaction that writes something else and enqueues, as the alert stage
    // does: nothing of it stays.
    fenced(
        a.write(|tx| {
            tx.execute(
                "INSERT INTO outbox (channel, message, created_ms, next_attempt_ms) \
                 VALUES ('raw', '{}', 0, 0)",
                &[],
            )?;
            outbox::enqueue(tx, "slack", &message("stale"), T0 + 1)
        }),
        1,
    );
    fenced(outbox::prune_sent(&a, T0), 1);
    // The daily digest the schedules queue for every channel of its tier.
    let digest_tier = TierDef {
        tier: Tier {
            name: "digest".into(),
            rank: 3,
            channels: vec!["slack".into(), "email".into()],
        },
        when: None,
        daily_budget: None,
    };
    fenced(
        digest::enqueue(&mut a, &digest_tier, &message("digest"), T0 + 1),
        1,
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM outbox"),
        0,
        "nothing written"
    );

    // The new leader writes.
    let b = StageDb::pg(b).fenced(new);
    outbox::enqueue(&b, "slack", &message("fresh"), T0 + TTL).unwrap();
    assert_eq!(db.count("SELECT COUNT(*) FROM outbox"), 1);
}

#[test]
fn a_fenced_stage_connection_writes_only_while_its_lease_holds() {
    let Some(db) = Db::start("a_fenced_stage_connection_writes_only_while_its_lease_holds") else {
        return;
    };
    let (mut a, mut b) = (db.connect(), db.connect());
    // On the server's clock, as the daemon's stages fence (`lease::check_now`).
    let now = lease::db_now_ms(&mut a).unwrap();
    let old = lead(&mut a, "replica-a", now);
    let mut stage = StageDb::pg(a).fenced(old.clone());
    let insert = "INSERT INTO outbox (channel, message, created_ms, next_attempt_ms) \
                  VALUES (?1, '{}', 0, 0)";
    stage
        .execute(insert, &["lone".into()])
        .expect("a lone write while leading");
    stage
        .write(|tx| tx.execute(insert, &["in a transaction".into()]))
        .expect("a transaction while leading");
    assert_eq!(db.count("SELECT COUNT(*) FROM outbox"), 2);

    // replica-b takes over once the lease has lapsed (its injected clock is past it).
    let new = lead(&mut b, "replica-b", old.expires_ms);
    assert_eq!(new.token, old.token + 1);
    fenced(stage.execute(insert, &["stale lone".into()]), old.token);
    fenced(
        stage.write(|tx| tx.execute(insert, &["stale transaction".into()])),
        old.token,
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM outbox"),
        2,
        "nothing written"
    );
    // Reads are not fenced: a follower serves the API.
    let n = stage
        .row("SELECT COUNT(*) FROM outbox", &[], |r| r.int(0))
        .unwrap();
    assert_eq!(n, Some(2));
}

#[test]
fn a_holder_past_its_own_expiry_is_fenced_before_anyone_takes_over() {
    let Some(db) = Db::start("a_holder_past_its_own_expiry") else {
        return;
    };
    let mut a = db.connect();
    // Taken a TTL ago on the server's clock, by which stage writes are fenced: lapsed
    // now, and no one took it over.
    let now = lease::db_now_ms(&mut a).unwrap();
    let held = lead(&mut a, "replica-a", now - TTL);
    let mut tx = a.transaction().unwrap();
    check(&mut tx, &held, held.expires_ms - 1).expect("live a millisecond before expiry");
    fenced(check(&mut tx, &held, held.expires_ms), 1);
    drop(tx);
    fenced(
        outbox::enqueue(&db.fenced(&held), "slack", &message("late"), now),
        1,
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM outbox"), 0);
    // No one took over: the row still names replica-a with token 1.
    let row = a
        .query_one(
            "SELECT holder, token FROM leases WHERE name = 'leader'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, &str>(0), row.get::<_, i64>(1)),
        ("replica-a", 1)
    );
    // A holder that never existed is fenced too.
    let ghost = Lease {
        name: "leader".into(),
        holder: "replica-z".into(),
        token: 1,
        expires_ms: held.expires_ms,
    };
    let mut tx = a.transaction().unwrap();
    fenced(check(&mut tx, &ghost, held.expires_ms - 1), 1);
}

#[test]
fn a_takeover_waits_for_the_open_fenced_transaction() {
    let Some(db) = Db::start("a_takeover_waits_for_the_open_fenced_transaction") else {
        return;
    };
    let mut a = db.connect();
    let old = lead(&mut a, "replica-a", T0);
    let mut tx = a.transaction().unwrap();
    // Checked a millisecond before expiry: valid, and the lease row is now share-locked.
    check(&mut tx, &old, T0 + TTL - 1).unwrap();

    let mut b = db.connect();
    // The guard: a takeover that never got the row fails the test instead of hanging.
    b.batch_execute("SET statement_timeout = '20s'").unwrap();
    let b_pid: i32 = b.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let barrier = Arc::new(Barrier::new(2));
    let takeover = std::thread::spawn({
        let barrier = barrier.clone();
        move || {
            barrier.wait();
            let new = acquire(&mut b, "leader", "replica-b", TTL, T0 + TTL);
            // What the new leader sees the moment it holds the lease.
            let seen: i64 = b
                .query_one("SELECT COUNT(*) FROM outbox", &[])
                .unwrap()
                .get(0);
            (new, seen)
        }
    });
    barrier.wait();
    // Wait (on the server's state, not a timer) until the takeover is blocked on the
    // lease row's lock.
    let mut watch = db.connect();
    loop {
        // No row once the takeover's connection is gone: it did not wait.
        let waiting: Option<String> = watch
            .query_opt(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                &[&b_pid],
            )
            .unwrap()
            .and_then(|r| r.get(0));
        if waiting.as_deref() == Some("Lock") {
            break;
        }
        assert!(
            !takeover.is_finished(),
            "the takeover did not wait for the lock"
        );
        std::thread::yield_now();
    }
    // Still the holder: the write made under the lock commits.
    let tx = Pg::new(tx);
    outbox::enqueue(&tx, "slack", &message("in time"), T0 + TTL - 1).unwrap();
    tx.into_inner().commit().unwrap();

    let (new, seen) = takeover.join().unwrap();
    let new = new.expect("takeover").expect("the lease was expired");
    assert_eq!(new.token, 2);
    assert_eq!(
        seen, 1,
        "the takeover completed after the old leader's commit"
    );
    // From now on the old leader is fenced.
    let a = StageDb::pg(a).fenced(old);
    fenced(outbox::enqueue(&a, "slack", &message("late"), T0 + 1), 1);
}

#[test]
fn release_hands_the_lease_over_at_once() {
    let Some(db) = Db::start("release_hands_the_lease_over_at_once") else {
        return;
    };
    let (mut a, mut b) = (db.connect(), db.connect());
    let held = lead(&mut a, "replica-a", T0);
    assert_eq!(
        acquire(&mut b, "leader", "replica-b", TTL, T0 + 100).unwrap(),
        None
    );
    let stranger = Lease {
        holder: "replica-b".into(),
        ..held.clone()
    };
    assert!(
        !release(&mut b, &stranger, T0 + 100).unwrap(),
        "not b's to release"
    );
    assert!(release(&mut a, &held, T0 + 100).unwrap());
    let took = acquire(&mut b, "leader", "replica-b", TTL, T0 + 100).unwrap();
    assert_eq!(took.map(|l| l.token), Some(2));
    assert!(
        !release(&mut a, &held, T0 + 200).unwrap(),
        "already handed over"
    );
    let a = StageDb::pg(a).fenced(held);
    fenced(outbox::enqueue(&a, "slack", &message("x"), T0 + 100), 1);
}

#[test]
fn db_now_and_replica_ids_are_what_production_uses() {
    let Some(db) = Db::start("db_now_and_replica_ids") else {
        return;
    };
    let mut c = db.connect();
    let local = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let server = lease::db_now_ms(&mut c).unwrap();
    // Same machine: the two clocks agree to well within a minute.
    assert!((server - local).abs() < 60_000, "{server} vs {local}");
    let (one, two) = (lease::replica_id(), lease::replica_id());
    assert_ne!(one, two, "a random suffix per call");
    assert!(one.contains(&format!("-{}-", std::process::id())), "{one}");
}

/// Enqueue `titles` on `channel`; their ids in order.
fn fill(c: &StageDb, channel: &str, titles: &[&str]) -> Vec<i64> {
    titles
        .iter()
        .map(|t| outbox::enqueue(c, channel, &message(t), T0).unwrap())
        .collect()
}

fn ids(rows: &[driftwarden::store::outbox::OutboxRow]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

#[test]
fn claims_keep_each_channel_in_queue_order() {
    let Some(db) = Db::start("claims_keep_each_channel_in_queue_order") else {
        return;
    };
    let leader = lead(&mut db.connect(), "replica-a", T0);
    let mut c = db.fenced(&leader);
    let email = fill(&c, "email", &["e1", "e2"]);
    let slack = fill(&c, "slack", &["s1", "s2", "s3"]);
    let claim = |c: &mut StageDb, channel: &str, who: &str, now: i64, limit: u32| {
        outbox::claim(c, channel, who, now, 60_000, limit).unwrap()
    };

    let a = claim(&mut c, "email", "a", T0, 1);
    assert_eq!(ids(&a), vec![email[0]]);
    assert_eq!(a[0].message, message("e1"));
    // e1 is a's: it holds back e2, for b and for a alike.
    assert!(claim(&mut c, "email", "b", T0, 10).is_empty());
    assert!(claim(&mut c, "email", "a", T0, 10).is_empty());
    assert_eq!(ids(&claim(&mut c, "slack", "b", T0, 10)), slack);

    // s1 fails: it waits for its retry, and b gives up its claims behind it.
    assert!(outbox::mark_retry(&c, "b", slack[0], 1, T0 + 1_000, "HTTP 500").unwrap());
    assert_eq!(outbox::release(&c, "slack", "b").unwrap(), 2);
    assert!(
        !outbox::mark_sent(&c, "b", slack[1], T0).unwrap(),
        "released"
    );
    assert!(claim(&mut c, "slack", "c", T0 + 999, 10).is_empty());
    assert_eq!(outbox::next_due_ms(&c, "slack").unwrap(), Some(T0 + 1_000));

    assert!(outbox::mark_sent(&c, "a", email[0], T0).unwrap());
    assert!(!outbox::mark_sent(&c, "a", email[0], T0).unwrap(), "once");
    assert_eq!(
        ids(&claim(&mut c, "email", "c", T0 + 999, 10)),
        vec![email[1]]
    );
    let retried = claim(&mut c, "slack", "c", T0 + 1_000, 10);
    assert_eq!(ids(&retried), slack);
    assert_eq!(
        (retried[0].attempts, retried[0].last_error.as_deref()),
        (1, Some("HTTP 500"))
    );
    // A claimed first row holds its channel until the claim's deadline.
    assert_eq!(
        outbox::next_due_ms(&c, "slack").unwrap(),
        Some(T0 + 1_000 + 60_000)
    );

    // A dead row no longer holds its channel back.
    assert!(outbox::mark_dead(&c, "c", email[1], 1, "HTTP 400").unwrap());
    assert_eq!(outbox::backlog(&c, "email").unwrap(), (0, 1));
    assert_eq!(outbox::backlog(&c, "slack").unwrap(), (3, 0));
    assert_eq!(
        outbox::pending_by_channel(&c).unwrap(),
        vec![("slack".to_string(), 3)]
    );
    for id in &slack {
        assert!(outbox::mark_sent(&c, "c", *id, T0 + 2_000).unwrap());
    }
    assert_eq!(outbox::prune_sent(&c, T0 + 2_000).unwrap(), 1);
    assert_eq!(outbox::prune_sent(&c, T0 + 2_001).unwrap(), 3);
    let states = c
        .rows("SELECT state FROM outbox ORDER BY id", &[], |r| r.text(0))
        .unwrap();
    assert_eq!(states, vec![OutboxState::Dead.as_str()]);
}

#[test]
fn a_claim_skips_a_channel_whose_enqueue_has_not_committed() {
    let Some(db) = Db::start("a_claim_skips_a_channel_whose_enqueue") else {
        return;
    };
    let leader = lead(&mut db.connect(), "replica-a", T0);
    let mut c = db.fenced(&leader);
    let first = fill(&c, "slack", &["one"]);
    fill(&c, "email", &["mail"]);
    // An enqueue in a transaction still open holds the channel's lock: a claim of that
    // channel takes nothing (it could pass the uncommitted row), others go on.
    let mut raw = db.connect();
    let tx = Pg::new(raw.transaction().unwrap());
    let late = outbox::enqueue(&tx, "slack", &message("two"), T0).unwrap();
    assert!(
        outbox::claim(&mut c, "slack", "a", T0, 60_000, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        outbox::claim(&mut c, "email", "a", T0, 60_000, 10)
            .unwrap()
            .len(),
        1
    );
    tx.into_inner().commit().unwrap();
    let both = outbox::claim(&mut c, "slack", "a", T0, 60_000, 10).unwrap();
    assert_eq!(ids(&both), vec![first[0], late]);
}

#[test]
fn an_expired_claim_is_taken_over_and_the_old_claimer_cannot_mark_it() {
    let Some(db) = Db::start("an_expired_claim_is_taken_over") else {
        return;
    };
    let leader = lead(&mut db.connect(), "replica-a", T0);
    let mut c = db.fenced(&leader);
    let rows = fill(&c, "slack", &["one", "two"]);
    let claimed = outbox::claim(&mut c, "slack", "old", T0, 1_000, 10).unwrap();
    assert_eq!(ids(&claimed), rows);
    assert!(
        outbox::claim(&mut c, "slack", "new", T0 + 999, 1_000, 10)
            .unwrap()
            .is_empty()
    );
    let taken = outbox::claim(&mut c, "slack", "new", T0 + 1_000, 1_000, 10).unwrap();
    assert_eq!(
        ids(&taken),
        rows,
        "taken over at the claim's expiry, in order"
    );

    assert!(!outbox::mark_sent(&c, "old", rows[0], T0 + 1_001).unwrap());
    assert!(!outbox::mark_retry(&c, "old", rows[0], 1, T0, "x").unwrap());
    assert!(!outbox::mark_dead(&c, "old", rows[0], 1, "x").unwrap());
    assert!(outbox::mark_sent(&c, "new", rows[0], T0 + 1_001).unwrap());

    // An expired claim nobody took over can still be marked by its claimer: the
    // message went out, so recording it avoids a resend.
    assert!(outbox::mark_sent(&c, "new", rows[1], T0 + 5_000).unwrap());

    // A leader that lost its lease marks, claims and releases nothing, even a row it
    // claimed.
    let next = fill(&c, "slack", &["three"]);
    outbox::claim(&mut c, "slack", "old", T0 + 5_000, 12_000, 10).unwrap();
    let new_leader = lead(&mut db.connect(), "replica-b", T0 + TTL);
    fenced(outbox::mark_sent(&c, "old", next[0], T0 + 5_001), 1);
    fenced(outbox::release(&c, "slack", "old"), 1);
    fenced(
        outbox::claim(&mut c, "slack", "old", T0 + 5_001, 60_000, 10),
        1,
    );
    // The new leader takes the row once the old claim expires (T0 + 17 s).
    let mut b = db.fenced(&new_leader);
    assert!(
        outbox::claim(&mut b, "slack", "b", T0 + TTL, 60_000, 10)
            .unwrap()
            .is_empty()
    );
    let resent = outbox::claim(&mut b, "slack", "b", T0 + 17_000, 60_000, 10).unwrap();
    assert_eq!(ids(&resent), next);
}

#[test]
fn four_claimers_deliver_500_rows_in_channel_order_exactly_once() {
    const CLAIMERS: usize = 4;
    const ROWS: usize = 500;
    let Some(db) = Db::start("four_claimers_deliver_500_rows") else {
        return;
    };
    let leader = lead(&mut db.connect(), "replica-a", T0);
    let channels = ["dingtalk", "email", "pagerduty", "slack", "webhook"];
    let c = db.fenced(&leader);
    for i in 0..ROWS {
        let title = format!("m{i}");
        outbox::enqueue(&c, channels[i % channels.len()], &message(&title), T0).unwrap();
    }

    let sent: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let started = Instant::now();
    let threads: Vec<_> = (0..CLAIMERS)
        .map(|i| {
            let (mut c, mut raw) = (db.fenced(&leader), db.connect());
            let (barrier, sent) = (barrier.clone(), sent.clone());
            std::thread::spawn(move || {
                let me = format!("claimer-{i}");
                barrier.wait();
                let mut claims = 0;
                loop {
                    let mut claimed_any = false;
                    // Each claimer walks the channels from its own starting point, as
                    // one task per channel would, so they contend on every channel.
                    for k in 0..channels.len() {
                        let channel = channels[(i + k) % channels.len()];
                        let rows = outbox::claim(&mut c, channel, &me, T0, 600_000, 16).unwrap();
                        if rows.is_empty() {
                            continue;
                        }
                        claimed_any = true;
                        claims += 1;
                        // No row ahead of a claimed one in its channel may still be
                        // pending unless this claim holds it too.
                        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                        let ahead: i64 = raw
                            .query_one(
                                "SELECT COUNT(*) FROM outbox o JOIN outbox r \
                                   ON r.channel = o.channel AND o.id < r.id \
                                 WHERE r.id = ANY($1) AND o.state = 'pending' \
                                   AND NOT (o.id = ANY($1))",
                                &[&ids],
                            )
                            .unwrap()
                            .get(0);
                        assert_eq!(ahead, 0, "{me} claimed past a pending row: {ids:?}");
                        for row in rows {
                            assert!(
                                outbox::mark_sent(&c, &me, row.id, T0).unwrap(),
                                "{me} lost row {}",
                                row.id
                            );
                            sent.lock().unwrap().push((me.clone(), row.id));
                        }
                    }
                    if !claimed_any {
                        if outbox::pending_by_channel(&c).unwrap().is_empty() {
                            return claims;
                        }
                        // Everything left is claimed by others: look again.
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let claims: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let elapsed = started.elapsed();

    let sent = sent.lock().unwrap();
    let distinct: HashSet<i64> = sent.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        (sent.len(), distinct.len()),
        (ROWS, ROWS),
        "each row sent exactly once"
    );
    let mut per_claimer: BTreeMap<&str, usize> = BTreeMap::new();
    for (who, _) in sent.iter() {
        *per_claimer.entry(who).or_default() += 1;
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM outbox WHERE state = 'sent'"),
        ROWS as i64
    );
    eprintln!(
        "{ROWS} rows in {} channels, {CLAIMERS} claimers: {elapsed:?} \
         ({:.0} rows/s; claims per claimer {claims:?}; rows per claimer {per_claimer:?})",
        channels.len(),
        ROWS as f64 / elapsed.as_secs_f64()
    );
}
