//! Holding a lease on a shared PostgreSQL store, and running work only while it is
//! held: the leader's duties (lease `leader`), and each gateway database follower
//! (lease `source:<name>`). The timing is `store::pg::lease::Elector`'s; this loop
//! talks to the database and starts or stops the work.

use std::time::{Duration, Instant};

use crate::stop::Stop;
use crate::store::location::PgUrl;
use crate::store::pg::lease::{self, Change, Elector, Lease};

/// Work that runs while a lease is held.
pub(super) trait Held {
    /// What runs: stopped by `end`.
    type Running;
    /// Start on a newly gained `lease`; `None` when it could not start (logged), and
    /// the lease is given back so another replica may try.
    fn start(&mut self, lease: &Lease) -> Option<Self::Running>;
    /// Whether what runs has failed on its own, so the lease should be given back
    /// for another replica (or a later attempt) to take.
    fn failed(&self, _running: &Self::Running) -> bool {
        false
    }
    /// Stop what `start` started: the lease was lost or the daemon stops.
    fn end(&mut self, running: Self::Running);
}

/// Hold lease `name` (lasting `ttl_ms` unrenewed) as `holder` on `db` until `stop`,
/// running `work` while holding it. Returns once `stop` is set, after ending the work
/// and releasing the lease (so another replica takes over at once instead of after
/// the TTL).
pub(super) fn hold<W: Held>(
    db: &PgUrl,
    (name, ttl_ms): (&str, i64),
    holder: &str,
    stop: &Stop,
    mut work: W,
) {
    let origin = Instant::now();
    let local_ms = || origin.elapsed().as_millis() as i64;
    let mut elector = Elector::new(ttl_ms);
    let mut client: Option<postgres::Client> = None;
    let mut running: Option<W::Running> = None;
    while !stop.is_set() {
        if elector.due(local_ms()) {
            let sent = local_ms();
            let result = attempt(&mut client, db, name, holder, elector.ttl_ms());
            if let Err(e) = &result {
                tracing::warn!(lease = name, cause = %e, "lease attempt failed; retrying");
                client = None;
            }
            match elector.observe(sent, result.map_err(|_| ())) {
                Change::Gained => {
                    let lease = elector.leader(local_ms()).cloned();
                    if let Some(lease) = lease {
                        tracing::info!(lease = name, token = lease.token, holder, "lease gained");
                        running = work.start(&lease);
                        if running.is_none() {
                            step_down(&mut client, &mut elector, local_ms(), stop);
                        }
                    }
                }
                Change::Lost => {
                    tracing::warn!(lease = name, holder, "lease lost: stopping its work");
                    end(&mut work, &mut running);
                }
                Change::Renewed | Change::Follower => {}
            }
        }
        if running.as_ref().is_some_and(|r| work.failed(r)) {
            tracing::error!(
                lease = name,
                holder,
                "the lease's work failed: giving the lease back"
            );
            end(&mut work, &mut running);
            step_down(&mut client, &mut elector, local_ms(), stop);
        }
        // The elector's own deadline passes before the database's: stop acting then,
        // even when no renewal could tell us (the database unreachable).
        if running.is_some() && elector.leader(local_ms()).is_none() {
            tracing::warn!(
                lease = name,
                holder,
                "lease could not be renewed in time: stopping its work"
            );
            end(&mut work, &mut running);
        }
        let wait = (elector.next_attempt_ms() - local_ms()).clamp(10, 1_000);
        stop.sleep(Duration::from_millis(wait as u64));
    }
    end(&mut work, &mut running);
    if let Some(lease) = elector.leader(local_ms()).cloned() {
        give_back(&mut client, &lease);
        tracing::info!(lease = name, token = lease.token, "lease released");
    }
}

/// End the running work, if any.
fn end<W: Held>(work: &mut W, running: &mut Option<W::Running>) {
    if let Some(r) = running.take() {
        work.end(r);
    }
}

/// Give the lease back after its work could not start or failed, then wait one
/// attempt interval: another replica may take it, and a lasting failure is not
/// retried in a tight loop.
fn step_down(
    client: &mut Option<postgres::Client>,
    elector: &mut Elector,
    now_ms: i64,
    stop: &Stop,
) {
    if let Some(lease) = elector.leader(now_ms).cloned() {
        give_back(client, &lease);
    }
    let ttl_ms = elector.ttl_ms();
    *elector = Elector::new(ttl_ms);
    stop.sleep(Duration::from_millis((ttl_ms / 3) as u64));
}

/// One acquire on the server's clock, connecting first when needed.
fn attempt(
    client: &mut Option<postgres::Client>,
    db: &PgUrl,
    name: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<Option<Lease>, crate::store::StoreError> {
    if client.is_none() {
        *client = Some(crate::store::pg::connect(db.expose())?);
    }
    let c = client.as_mut().expect("connected above");
    let now = lease::db_now_ms(c)?;
    lease::acquire(c, name, holder, ttl_ms, now)
}

/// Release `lease`, logging a failure (it then lapses after its TTL).
fn give_back(client: &mut Option<postgres::Client>, lease: &Lease) {
    let Some(c) = client.as_mut() else { return };
    let released = lease::db_now_ms(c).and_then(|now| lease::release(c, lease, now));
    if let Err(e) = released {
        tracing::warn!(lease = %lease.name, cause = %e, "could not release the lease; it lapses on its own");
    }
}
