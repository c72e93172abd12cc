//! The notifier on a PostgreSQL store that several replicas share: real HTTP receivers
//! (tests/suite/support/receivers.rs) and a private PostgreSQL server per test
//! (tests/suite/support/dbservers.rs; skipped with a loud line when PostgreSQL is not
//! installed, a failure under CI). Each replica is a worker with its own claimer name;
//! the leader's is fenced by the leader lease. No test sleeps a fixed time: each waits
//! for what the receiver or the outbox shows.
//!
//! The tests are plain threads that run the notifier on a runtime of their own: the
//! PostgreSQL client they read the store with blocks, which a thread driving async
//! tasks must not do.

use crate::support::dbservers;
use crate::support::receivers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbservers::PgServer;
use driftwarden::config::FileConfig;
use driftwarden::notify::{self, Channel, Message, Notifier, WorkerOptions};
use driftwarden::store::Location;
use driftwarden::store::outbox::{self, OutboxRow, OutboxState};
use driftwarden::store::pg::{self, lease};
use driftwarden::telemetry::Metrics;
use receivers::Receiver;

/// How long a condition may take before a test fails.
const WAIT: Duration = Duration::from_secs(30);

/// A migrated PostgreSQL store, the server it lives on, and a runtime for notifiers.
struct Store {
    _server: PgServer,
    url: String,
    location: Location,
    runtime: tokio::runtime::Runtime,
}

impl Store {
    fn start(test: &str) -> Option<Store> {
        let server = PgServer::start_for(test)?;
        let password = server.create_store_db("dw", "dw_app");
        let url = server.url("dw_app", &password, "dw");
        pg::open(&url).expect("migrating as dw_app");
        let location = Location::parse(&url).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Some(Store {
            _server: server,
            url,
            location,
            runtime,
        })
    }

    /// Queue one message per title on `channel`, in order, on the store's clock.
    fn enqueue(&self, channel: &str, titles: &[String]) {
        let conn = outbox::open(&self.location).unwrap();
        for title in titles {
            let now = outbox::clock_ms(&conn).unwrap();
            outbox::enqueue(&conn, channel, &message(title), now).unwrap();
        }
    }

    fn rows(&self) -> Vec<OutboxRow> {
        let mut rows = outbox::list(&self.location, None, 1000).unwrap();
        rows.reverse();
        rows
    }

    fn all_sent(&self) -> bool {
        self.rows().iter().all(|r| r.state == OutboxState::Sent)
    }

    /// Who holds the claim on each row, in queue order.
    fn claimers(&self) -> Vec<Option<String>> {
        let mut c = pg::connect(&self.url).unwrap();
        c.query("SELECT claimed_by FROM outbox ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    fn notifier(&self, channels: &[Channel], options: WorkerOptions) -> Notifier {
        let _inside = self.runtime.enter();
        notify::spawn(
            &self.location,
            channels,
            options,
            Arc::new(Metrics::default()),
        )
        .unwrap()
    }

    fn stop(&self, notifier: Notifier) {
        self.runtime.block_on(notifier.stop());
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

fn titles(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// One generic webhook channel named `hook` posting to `receiver`.
fn hook(receiver: &Receiver) -> Vec<Channel> {
    let text = format!(
        "[[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        receiver.url("/in")
    );
    let file: FileConfig = toml::from_str(&text).unwrap();
    notify::config::resolve(file.channel).unwrap()
}

/// A replica's worker options: its claimer name, quick polls and retries.
fn replica(claimer: &str) -> WorkerOptions {
    WorkerOptions {
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(200),
        poll: Duration::from_millis(25),
        send_timeout: Duration::from_secs(10),
        claimer: claimer.into(),
        ..WorkerOptions::default()
    }
}

/// The titles the receiver got, in arrival order.
fn received(receiver: &Receiver) -> Vec<String> {
    receiver
        .bodies()
        .iter()
        .map(|b| b["title"].as_str().unwrap().to_string())
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_worker_on_postgres_delivers_in_queue_order_once_each() {
    let Some(store) = Store::start("a_worker_on_postgres_delivers") else {
        return;
    };
    let receiver = Receiver::start();
    let queued = titles("m", 40);
    store.enqueue("hook", &queued);
    let worker = store.notifier(&hook(&receiver), replica("replica-a"));
    wait_for("every row sent", || store.all_sent());
    store.stop(worker);
    assert_eq!(received(&receiver), queued, "in queue order, once each");
    assert!(
        store
            .claimers()
            .iter()
            .all(|c| c.as_deref() == Some("replica-a"))
    );
}

#[test]
fn two_replicas_deliver_each_row_exactly_once_in_queue_order() {
    let Some(store) = Store::start("two_replicas_deliver_each_row") else {
        return;
    };
    let receiver = Receiver::start();
    let (before, during) = (titles("before", 40), titles("during", 40));
    store.enqueue("hook", &before);
    let channels = hook(&receiver);
    let a = store.notifier(&channels, replica("replica-a"));
    let b = store.notifier(&channels, replica("replica-b"));
    store.enqueue("hook", &during);
    wait_for("every row sent", || {
        store.rows().len() == 80 && store.all_sent()
    });
    store.stop(a);
    store.stop(b);
    let expected: Vec<String> = before.into_iter().chain(during).collect();
    assert_eq!(received(&receiver), expected, "in queue order, once each");
    let keys = receiver.header("idempotency-key");
    let distinct: std::collections::HashSet<_> = keys.iter().flatten().collect();
    assert_eq!(distinct.len(), 80, "one key per row: {keys:?}");
}

/// The leader's worker loses its lease while a send is in flight: its mark is refused,
/// it stops, and the new leader's worker delivers the rows it had claimed once the
/// claim expires, the one in flight again (the documented window) with the same
/// Idempotency-Key.
#[test]
fn a_fenced_worker_stops_and_the_new_leader_delivers_its_claimed_rows() {
    let Some(store) = Store::start("a_fenced_worker_stops") else {
        return;
    };
    let receiver = Receiver::start();
    let mut admin = pg::connect(&store.url).unwrap();
    let now = lease::db_now_ms(&mut admin).unwrap();
    let old = lease::acquire(&mut admin, "leader", "replica-a", 60_000, now)
        .unwrap()
        .expect("a free lease");
    let queued = titles("m", 3);
    store.enqueue("hook", &queued);
    receiver.hold(true);
    let channels = hook(&receiver);
    let a = store.notifier(
        &channels,
        WorkerOptions {
            // Short, so the new leader need not wait long for its rows; still above
            // the send timeout, as the worker requires.
            claim_ttl: Duration::from_secs(3),
            send_timeout: Duration::from_secs(2),
            fence: Some(old.clone()),
            ..replica("replica-a")
        },
    );
    wait_for("the first send to arrive", || receiver.count() == 1);
    assert_eq!(
        store.claimers(),
        vec![Some("replica-a".to_string()); 3],
        "the batch is claimed"
    );

    // replica-b takes the lease over (on a clock past the old lease's expiry).
    let new = lease::acquire(&mut admin, "leader", "replica-b", 60_000, old.expires_ms)
        .unwrap()
        .expect("the lease has expired on that clock");
    assert_eq!(new.token, old.token + 1);
    receiver.hold(false);
    wait_for("the old leader to stop", || a.is_fenced());
    store.stop(a);
    assert_eq!(receiver.count(), 1, "the old leader sent nothing more");
    for r in store.rows() {
        assert_eq!(
            (r.state, r.attempts, r.sent_ms),
            (OutboxState::Pending, 0, None),
            "the old leader recorded nothing: {r:?}"
        );
    }
    assert_eq!(store.claimers(), vec![Some("replica-a".to_string()); 3]);

    let b = store.notifier(
        &channels,
        WorkerOptions {
            fence: Some(new),
            ..replica("replica-b")
        },
    );
    wait_for("the new leader to deliver", || receiver.count() == 4);
    wait_for("every row sent", || store.all_sent());
    store.stop(b);
    let first = queued[0].clone();
    assert_eq!(
        received(&receiver),
        vec![first.clone(), first, queued[1].clone(), queued[2].clone()],
        "the send in flight at the takeover once more, then the rest in order"
    );
    let keys = receiver.header("idempotency-key");
    assert!(keys[0].is_some());
    assert_eq!(keys[0], keys[1], "the same key from both replicas");
    assert_eq!(store.claimers(), vec![Some("replica-b".to_string()); 3]);
}
