//! Leases with fencing tokens: which replica leads (`leader`: analysis, alert decisions,
//! schedules, notification delivery) and which follows each gateway database source
//! (`source:<name>`).
//!
//! A lease is one row of `leases` (migration 0012). A holder takes it with [`acquire`]
//! when it is free, expired or already its own, and keeps it by calling [`acquire`]
//! again before it expires ([`Elector`] decides when). Each new tenure gets a token
//! larger than every earlier one (the row is never deleted, so tokens never go back).
//!
//! **Fencing.** Every transaction that writes as a holder calls [`check`] first: it
//! share-locks the lease row and refuses ([`StoreError::Fenced`]) unless the row still
//! names this holder with this token and has not expired. The share lock is held to
//! the end of the transaction, so a takeover (which updates the row) waits until the
//! old holder's transaction has committed or rolled back: a write is either wholly
//! before the takeover or refused. A holder that was paused (GC, SIGSTOP, a partition)
//! past its expiry therefore writes nothing, even if no one has taken over yet.
//!
//! **Clock.** Every function takes `now_ms` so tests can inject time. Expiry is
//! compared between the `now_ms` of different replicas, so production callers pass
//! [`db_now_ms`] (the database server's clock): replica clocks may then disagree
//! without effect. [`Elector`] keeps its own idea of "still leader" on the replica's
//! monotonic clock, measured from before each renewal was sent, which never
//! overestimates the lease it holds.

use postgres::{GenericClient, Transaction};

use super::error;
use crate::store::StoreError;

/// A lease as its holder holds it: the token to fence writes with, and when it expires
/// on the clock it was acquired with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `leader`, or `source:<name>` for a gateway database source.
    pub name: String,
    /// Who holds it ([`replica_id`]).
    pub holder: String,
    /// Fencing token: larger for every new tenure, kept by renewals.
    pub token: i64,
    /// When it lapses unless renewed, milliseconds since the Unix epoch.
    pub expires_ms: i64,
}

/// Take or renew lease `name` for `holder` until `now_ms + ttl_ms`. `None` when another
/// holder's lease is still live.
///
/// One statement, so it is atomic: racing replicas serialize on the row (or on its
/// primary key when it does not exist yet), and each re-checks the row as the winner
/// left it, so at most one gets the lease. A renewal (same holder, not yet expired)
/// keeps the token; any new tenure, including this holder's own after its lease
/// lapsed, takes the previous token + 1 (the first ever is 1): whatever was prepared
/// under the old tenure cannot pass [`check`] any more.
pub fn acquire(
    client: &mut impl GenericClient,
    name: &str,
    holder: &str,
    ttl_ms: i64,
    now_ms: i64,
) -> Result<Option<Lease>, StoreError> {
    let row = client
        .query_opt(
            "INSERT INTO leases AS l (name, holder, token, expires_ms, acquired_ms, renewed_ms) \
             VALUES ($1, $2, 1, $3::bigint + $4::bigint, $4, $4) \
             ON CONFLICT (name) DO UPDATE SET \
                 token = CASE WHEN l.holder = excluded.holder AND l.expires_ms > $4 \
                              THEN l.token ELSE l.token + 1 END, \
                 acquired_ms = CASE WHEN l.holder = excluded.holder AND l.expires_ms > $4 \
                                    THEN l.acquired_ms ELSE $4 END, \
                 holder = excluded.holder, \
                 expires_ms = excluded.expires_ms, \
                 renewed_ms = $4 \
             WHERE l.holder = excluded.holder OR l.expires_ms <= $4 \
             RETURNING token, expires_ms",
            &[&name, &holder, &ttl_ms, &now_ms],
        )
        .map_err(error)?;
    Ok(row.map(|r| Lease {
        name: name.to_string(),
        holder: holder.to_string(),
        token: r.get(0),
        expires_ms: r.get(1),
    }))
}

/// Give `lease` up at `now_ms` if it is still this tenure's, so a graceful shutdown
/// hands over at once instead of after the TTL. Returns whether it was still held.
/// The row (and its token) stays: the next holder's token is still larger.
pub fn release(
    client: &mut impl GenericClient,
    lease: &Lease,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "UPDATE leases SET expires_ms = LEAST(expires_ms, $4) \
             WHERE name = $1 AND holder = $2 AND token = $3",
            &[&lease.name, &lease.holder, &lease.token, &now_ms],
        )
        .map_err(error)?;
    Ok(n == 1)
}

/// The fencing check: call it inside every transaction that writes as `lease`'s
/// holder, before committing (first is simplest). Fails with [`StoreError::Fenced`]
/// unless the lease row names this holder with this token and has not expired at
/// `now_ms`; the expiry counts even when no one has taken over yet, because a takeover
/// may happen any moment after it.
///
/// `FOR SHARE` locks the row until the transaction ends, so a takeover's [`acquire`]
/// waits for this transaction: it cannot slip in between this check and the commit.
/// (Under READ COMMITTED, the default; under REPEATABLE READ a concurrent takeover
/// makes this statement fail with a serialization error instead, which is refused
/// too.)
pub fn check(tx: &mut Transaction<'_>, lease: &Lease, now_ms: i64) -> Result<(), StoreError> {
    let row = tx
        .query_opt(
            "SELECT holder, token, expires_ms FROM leases WHERE name = $1 FOR SHARE",
            &[&lease.name],
        )
        .map_err(error)?;
    let held = row.is_some_and(|r| {
        r.get::<_, &str>(0) == lease.holder
            && r.get::<_, i64>(1) == lease.token
            && r.get::<_, i64>(2) > now_ms
    });
    if held {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            lease: lease.name.clone(),
            token: lease.token,
        })
    }
}

/// [`check`] on the database server's clock ([`db_now_ms`]).
pub fn check_now(tx: &mut Transaction<'_>, lease: &Lease) -> Result<(), StoreError> {
    let now_ms = db_now_ms(tx)?;
    check(tx, lease, now_ms)
}

/// The database server's clock, milliseconds since the Unix epoch: the `now_ms` that
/// production callers pass to this module, so every replica compares expiries on one
/// clock. `clock_timestamp()`, not `now()`: the time of the call, not of the start of
/// an enclosing transaction.
pub fn db_now_ms(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )
        .map_err(error)?;
    Ok(row.get(0))
}

/// A holder name for this process: host name, process id and a random suffix (so a
/// restarted process with a recycled pid is a new holder). Nothing secret: it is
/// stored in `leases.holder` and `outbox.claimed_by` and shows in logs.
pub fn replica_id() -> String {
    let host = host_name();
    // Without the OS's random source, the clock's nanoseconds still tell two
    // processes with the same host and pid apart.
    let suffix = getrandom::u32().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    });
    format!("{host}-{}-{suffix:08x}", std::process::id())
}

/// The machine's host name (`unknown-host` when it has none): part of the replica id,
/// and the default node name under which a replica keeps its tail checkpoints.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// Default lease TTL for `leader` (see [`Elector`] for the takeover arithmetic).
pub const DEFAULT_TTL_MS: i64 = 15_000;

/// What an [`Elector`] learned from one acquire attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This replica became the holder (a new token): start the holder's work.
    Gained,
    /// Still the holder with the same token.
    Renewed,
    /// This replica held the lease and no longer does (another holds it, the attempt
    /// failed past the safety margin, or a new token replaced ours): stop at once.
    Lost,
    /// Not the holder before, not now.
    Follower,
}

/// When to (re)acquire a lease and whether this replica may act as its holder. Pure:
/// the caller runs [`acquire`] when [`Elector::due`] says so and reports the outcome.
///
/// Times are the replica's own monotonic milliseconds (any origin). The holder counts
/// its lease from just *before* it sent the acquire that granted it, so its estimate
/// ends no later than the database's `expires_ms`; it stops acting as holder
/// `margin_ms` before even that, leaving room for clock rate drift and for work
/// already under way to finish (fencing refuses whatever writes come later).
///
/// Takeover arithmetic with the defaults (TTL 15 s, attempts every TTL/3 = 5 s):
/// a crashed leader last renewed at most when it crashed, so its lease lapses within
/// 15 s of the crash; every follower attempts every 5 s, so one takes the lease within
/// 5 s after that, plus one round trip: a new leader within about 20 s, under the
/// 30 s allowed, with room for a slow round trip or a follower that was itself in the
/// middle of a retry. A live leader renews twice more before its lease could lapse, so
/// one lost or slow renewal does not cost leadership.
#[derive(Debug, Clone)]
pub struct Elector {
    ttl_ms: i64,
    every_ms: i64,
    margin_ms: i64,
    held: Option<Lease>,
    /// Local time until which this replica may act as holder.
    valid_until_ms: i64,
    next_attempt_ms: i64,
}

impl Default for Elector {
    fn default() -> Elector {
        Elector::new(DEFAULT_TTL_MS)
    }
}

impl Elector {
    /// An elector for leases of `ttl_ms`: attempts every `ttl_ms / 3`, acts as holder
    /// until `ttl_ms / 5` before its lease could lapse. The first attempt is due at once.
    pub fn new(ttl_ms: i64) -> Elector {
        Elector {
            ttl_ms,
            every_ms: ttl_ms / 3,
            margin_ms: ttl_ms / 5,
            held: None,
            valid_until_ms: i64::MIN,
            next_attempt_ms: i64::MIN,
        }
    }

    /// The TTL to pass to [`acquire`].
    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// Whether an acquire attempt is due at local time `now_ms`.
    pub fn due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_attempt_ms
    }

    /// When the next attempt is due, local milliseconds (sleep until then).
    pub fn next_attempt_ms(&self) -> i64 {
        self.next_attempt_ms
    }

    /// Record an attempt sent at local time `sent_ms` (taken just before the call) and
    /// its result: `Ok(lease)` as [`acquire`] returned it, `Err(())` when it failed
    /// (the database could not be reached). A failed attempt keeps a held lease until
    /// its margin: the row may well still be ours, and fencing guards the writes.
    pub fn observe(&mut self, sent_ms: i64, result: Result<Option<Lease>, ()>) -> Change {
        self.next_attempt_ms = sent_ms.saturating_add(self.every_ms);
        let was = self.held.take();
        match (was, result) {
            (was, Ok(Some(lease))) => {
                let change = match &was {
                    Some(w) if w.token == lease.token && w.name == lease.name => Change::Renewed,
                    // Held with another token: that tenure ended while we looked away.
                    // Report the loss first; the next attempt reports the gain.
                    Some(_) => Change::Lost,
                    None => Change::Gained,
                };
                if change == Change::Lost {
                    self.valid_until_ms = i64::MIN;
                    self.next_attempt_ms = sent_ms;
                } else {
                    self.valid_until_ms = sent_ms
                        .saturating_add(self.ttl_ms)
                        .saturating_sub(self.margin_ms);
                    self.held = Some(lease);
                }
                change
            }
            (Some(_), Ok(None)) => {
                self.valid_until_ms = i64::MIN;
                Change::Lost
            }
            (Some(w), Err(())) if sent_ms < self.valid_until_ms => {
                self.held = Some(w);
                Change::Renewed
            }
            (Some(_), Err(())) => {
                self.valid_until_ms = i64::MIN;
                Change::Lost
            }
            (None, _) => Change::Follower,
        }
    }

    /// The lease this replica may act on at local time `now_ms`: `Some` only while
    /// `now_ms` is before the lease's (local, conservative) expiry minus the margin.
    /// Check before starting each piece of holder work; writes are fenced regardless.
    pub fn leader(&self, now_ms: i64) -> Option<&Lease> {
        self.held.as_ref().filter(|_| now_ms < self.valid_until_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(token: i64) -> Lease {
        Lease {
            name: "leader".into(),
            holder: "a".into(),
            token,
            expires_ms: 0,
        }
    }

    #[test]
    fn defaults_renew_every_5s_and_hold_until_12s_after_the_attempt() {
        let mut e = Elector::default();
        assert!(e.due(0));
        assert_eq!(e.leader(0), None);
        assert_eq!(e.observe(1_000, Ok(Some(lease(1)))), Change::Gained);
        assert_eq!(e.next_attempt_ms(), 6_000);
        assert!(!e.due(5_999) && e.due(6_000));
        // 15 s TTL from the moment before the attempt, minus the 3 s margin.
        assert_eq!(e.leader(12_999).map(|l| l.token), Some(1));
        assert_eq!(e.leader(13_000), None);
        assert_eq!(e.observe(6_000, Ok(Some(lease(1)))), Change::Renewed);
        assert_eq!(e.leader(17_999).map(|l| l.token), Some(1));
        assert_eq!(e.leader(18_000), None);
    }

    #[test]
    fn a_follower_stays_a_follower_until_it_gets_the_lease() {
        let mut e = Elector::new(15_000);
        assert_eq!(e.observe(0, Ok(None)), Change::Follower);
        assert_eq!(e.observe(5_000, Err(())), Change::Follower);
        assert_eq!(e.leader(5_000), None);
        assert_eq!(e.next_attempt_ms(), 10_000);
        assert_eq!(e.observe(10_000, Ok(Some(lease(2)))), Change::Gained);
        assert_eq!(e.leader(10_000).map(|l| l.token), Some(2));
    }

    #[test]
    fn failed_renewals_keep_the_lease_only_until_the_margin() {
        let mut e = Elector::new(15_000);
        e.observe(0, Ok(Some(lease(1))));
        assert_eq!(e.observe(5_000, Err(())), Change::Renewed);
        assert_eq!(e.observe(10_000, Err(())), Change::Renewed);
        // Still counted from the last success at 0: valid until 12 s.
        assert_eq!(e.leader(11_999).map(|l| l.token), Some(1));
        assert_eq!(e.leader(12_000), None);
        assert_eq!(e.observe(15_000, Err(())), Change::Lost);
        assert_eq!(e.leader(15_000), None);
        assert_eq!(e.observe(20_000, Ok(None)), Change::Follower);
    }

    #[test]
    fn losing_to_another_holder_or_a_new_token_ends_leadership_at_once() {
        let mut e = Elector::new(15_000);
        e.observe(0, Ok(Some(lease(1))));
        assert_eq!(e.observe(5_000, Ok(None)), Change::Lost);
        assert_eq!(e.leader(5_000), None);

        // A new token means our tenure ended in between: whatever the old one did is
        // fenced, so the caller must restart its holder work; the retry is due at once.
        e.observe(10_000, Ok(Some(lease(2))));
        assert_eq!(e.observe(15_000, Ok(Some(lease(3)))), Change::Lost);
        assert_eq!(e.leader(15_000), None);
        assert!(e.due(15_000));
        assert_eq!(e.observe(15_000, Ok(Some(lease(3)))), Change::Gained);
    }

    /// One lease row as the database keeps it, for simulating [`acquire`].
    struct Row {
        holder: &'static str,
        token: i64,
        expires_ms: i64,
    }

    fn fake_acquire(row: &mut Option<Row>, holder: &'static str, now: i64) -> Option<Lease> {
        let ours = row
            .as_ref()
            .is_some_and(|r| r.holder == holder && r.expires_ms > now);
        let free = row
            .as_ref()
            .is_none_or(|r| r.holder == holder || r.expires_ms <= now);
        if !free {
            return None;
        }
        let token = match row {
            Some(r) if ours => r.token,
            Some(r) => r.token + 1,
            None => 1,
        };
        *row = Some(Row {
            holder,
            token,
            expires_ms: now + DEFAULT_TTL_MS,
        });
        Some(Lease {
            name: "leader".into(),
            holder: holder.into(),
            token,
            expires_ms: now + DEFAULT_TTL_MS,
        })
    }

    #[test]
    fn a_crashed_leader_is_replaced_within_30s_whatever_the_phase() {
        for phase in (0..5_000).step_by(250) {
            let mut row = None;
            let (mut a, mut b) = (Elector::default(), Elector::default());
            // Crashes just after a renewal: the worst case.
            let crash = 15_001;
            let mut gained = None;
            for now in 0..60_000 {
                if now < crash && a.due(now) {
                    a.observe(now, Ok(fake_acquire(&mut row, "a", now)));
                }
                if now >= phase
                    && b.due(now)
                    && b.observe(now, Ok(fake_acquire(&mut row, "b", now))) == Change::Gained
                {
                    gained = Some(now);
                    break;
                }
                // Never two leaders at once, by their own reckoning.
                assert!(a.leader(now).is_none() || b.leader(now).is_none(), "{now}");
            }
            let took = gained.expect("b takes over") - crash;
            assert!(took <= 20_000, "phase {phase}: took {took} ms");
        }
    }
}
