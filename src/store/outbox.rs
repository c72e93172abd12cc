//! The notification outbox: notifications waiting for delivery, delivered, or given up,
//! on either backend (one SQL text over [`Sql`]; `conn.dialect()` only where PostgreSQL
//! needs what SQLite does not: advisory locks, row locks, its own clock).
//!
//! The alert stage and the digest [`enqueue`]; the delivery worker (`notify::worker`),
//! one task per channel, [`claim`]s a channel's due rows, sends them and marks each
//! ([`mark_sent`], [`mark_retry`], [`mark_dead`]) with the claimer name it claimed
//! them under. Every update of a row requires it to be `pending` and claimed by the
//! marker, so a sent or dead row never changes again and a claimer whose claim was
//! taken over changes nothing (the mark returns `false`).
//!
//! **Several replicas (PostgreSQL).** Only the leader delivers: its worker's connection
//! is fenced by the leader lease (`Db::fenced`), so a replica that lost the lease while
//! paused claims and marks nothing (`StoreError::Fenced`). A claim lasts until its
//! deadline; after that another claimer (the next leader's worker) takes the row. A
//! SQLite store has one process, which claims with no lifetime (see
//! `notify::WorkerOptions::claim_ttl`): its rows are taken again at once after a crash.
//!
//! **Order.** Each channel delivers in queue order: a claim takes a channel's pending
//! rows in id order and stops at the first that waits for a retry or carries a live
//! claim (anyone's, the caller's included: that row is being delivered), so a resolve
//! never overtakes its opening. Row-level `SKIP LOCKED` alone cannot keep that order on
//! PostgreSQL (a claimer would skip a row another is taking and claim the one behind
//! it), so the skipping is per channel: a claim takes the channel's advisory
//! transaction lock with `pg_try_advisory_xact_lock` and returns nothing when another
//! transaction holds it. [`enqueue`] waits for the same lock, so rows of one channel
//! commit in id order and a claim never passes a row committed late with a smaller id.
//! On SQLite the single writer already commits rows in id order.
//!
//! **Delivery window.** A row is marked sent right after its channel accepted it. A
//! crash, or a lost lease (the mark is fenced), between a channel's 2xx and the commit
//! of [`mark_sent`] leaves the row pending; once its claim expires (on SQLite: at the
//! restart) the next claimer sends it again. That resend, at most once per such crash
//! or failover, is the one duplicate a channel can see. Where the channel lets us, the
//! receiver can fold it: a generic webhook gets an `Idempotency-Key` header fixed per
//! row (`notify::webhook::idempotency_key`), and PagerDuty deduplicates on the
//! incident's `dedup_key`, which is the same from every replica. Chat services (Slack,
//! Teams, ...) and email have no such key: there the duplicate shows. A claim that
//! expires while its send is still running (a send slower than the claim TTL) opens the
//! same window, which is why the TTL must exceed a send's timeout.

use serde::Serialize;

use super::sql::{Db, Dialect, Row, Sql, SqlExt, Transact};
use super::{Location, StoreError};
use crate::domain::Message;

/// First key of the two-part advisory lock taken per channel on PostgreSQL ("dwob");
/// the second is the channel name's hash. Two-part keys never collide with one-part
/// ones (the migration lock).
const CHANNEL_LOCK: i64 = 0x6477_6f62;

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for its next attempt.
    Pending,
    /// A channel answered 2xx (or accepted the mail); never sent again.
    Sent,
    /// Given up after too many failures, or a failure retrying cannot fix.
    Dead,
}

impl OutboxState {
    /// Stable name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Dead => "dead",
        }
    }

    /// The state of a stored name, `None` for any other text.
    pub fn parse(s: &str) -> Option<OutboxState> {
        match s {
            "pending" => Some(OutboxState::Pending),
            "sent" => Some(OutboxState::Sent),
            "dead" => Some(OutboxState::Dead),
            _ => None,
        }
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    /// Row id, increasing in enqueue order.
    pub id: i64,
    /// The channel's name in the config.
    pub channel: String,
    /// What to send.
    pub message: Message,
    /// When it was enqueued, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Not attempted before this time, milliseconds since the Unix epoch.
    pub next_attempt_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Pending, sent or dead.
    pub state: OutboxState,
    /// The last failure, scrubbed of URLs and passwords.
    pub last_error: Option<String>,
    /// When a channel accepted it, milliseconds since the Unix epoch.
    pub sent_ms: Option<i64>,
}

const COLUMNS: &str =
    "id, channel, message, created_ms, next_attempt_ms, attempts, state, last_error, sent_ms";

/// A row as [`COLUMNS`] lists them; the inner error when its message is unreadable.
fn read(r: &dyn Row) -> Result<Result<OutboxRow, serde_json::Error>, StoreError> {
    let message = match serde_json::from_str(&r.text(2)?) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(OutboxRow {
        id: r.int(0)?,
        channel: r.text(1)?,
        message,
        created_ms: r.int(3)?,
        next_attempt_ms: r.int(4)?,
        attempts: u32::try_from(r.int(5)?).unwrap_or(u32::MAX),
        state: OutboxState::parse(&r.text(6)?).unwrap_or(OutboxState::Dead),
        last_error: r.opt_text(7)?,
        sent_ms: r.opt_int(8)?,
    }))
}

/// A row that must be readable: an unreadable message fails, naming the row.
fn row(r: &dyn Row) -> Result<OutboxRow, StoreError> {
    read(r)?.map_err(|e| {
        StoreError::Unreadable(format!(
            "outbox row {}: unreadable message ({e}); mark it dead or delete it",
            r.int(0).unwrap_or(-1)
        ))
    })
}

/// Open a writable connection to the (already migrated) database, for the delivery
/// worker or the alert stage.
pub fn open(db: &Location) -> Result<Db, StoreError> {
    db.side()
}

/// The store's clock, milliseconds since the Unix epoch: the database server's on
/// PostgreSQL (claims made by different replicas are compared on one clock, as leases
/// are, `store::pg::lease::db_now_ms`), this machine's on SQLite.
pub fn clock_ms(conn: &(impl Sql + ?Sized)) -> Result<i64, StoreError> {
    match conn.dialect() {
        Dialect::Sqlite => Ok(crate::clock::now_ms()),
        Dialect::Postgres => conn
            .row(
                "SELECT CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)",
                &[],
                |r| r.int(0),
            )?
            .ok_or_else(|| StoreError::Unreadable("the server's clock returned no row".into())),
    }
}

/// Queue `message` for the channel named `channel`, due at once. Returns the row id.
/// Pass a transaction to enqueue together with other writes.
pub fn enqueue(
    conn: &(impl Sql + ?Sized),
    channel: &str,
    message: &Message,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let json = serde_json::to_string(message).expect("a message serializes");
    // The id is read back by a second statement, not `RETURNING`: a fenced connection
    // fences `execute` only.
    let last_id = match conn.dialect() {
        Dialect::Sqlite => {
            conn.execute(
                "INSERT INTO outbox (channel, message, created_ms, next_attempt_ms) \
                 VALUES (?1, ?2, ?3, ?3)",
                &[channel.into(), json.as_str().into(), now_ms.into()],
            )?;
            "SELECT last_insert_rowid()"
        }
        Dialect::Postgres => {
            // Rows of one channel commit one at a time, in id order (see the module
            // doc). The lock lasts until the enclosing transaction ends; the CTE is
            // read, so PostgreSQL evaluates it.
            conn.execute(
                "WITH channel_lock AS MATERIALIZED \
                     (SELECT pg_advisory_xact_lock(CAST(?4 AS INTEGER), hashtext(?1))) \
                 INSERT INTO outbox (channel, message, created_ms, next_attempt_ms) \
                 SELECT ?1, CAST(?2 AS TEXT), CAST(?3 AS BIGINT), CAST(?3 AS BIGINT) \
                 FROM channel_lock",
                &[
                    channel.into(),
                    json.as_str().into(),
                    now_ms.into(),
                    CHANNEL_LOCK.into(),
                ],
            )?;
            "SELECT currval(pg_get_serial_sequence('outbox', 'id'))"
        }
    };
    conn.row(last_id, &[], |r| r.int(0))?
        .ok_or_else(|| StoreError::Unreadable("the new outbox row's id was not returned".into()))
}

/// Rows enqueued at or after `since_ms`, in enqueue order. A row whose message cannot
/// be read is skipped with a warning.
pub fn created_since(
    conn: &(impl Sql + ?Sized),
    since_ms: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = conn.rows(
        &format!("SELECT {COLUMNS} FROM outbox WHERE created_ms >= ?1 ORDER BY id"),
        &[since_ms.into()],
        |r| Ok((r.int(0)?, read(r)?)),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, r)| {
            r.inspect_err(
                |e| tracing::warn!(outbox_id = id, cause = %e, "unreadable outbox message skipped"),
            )
            .ok()
        })
        .collect())
}

/// Claim up to `limit` due rows of `channel` for `claimer` until `now_ms + claim_ms`
/// and return them in queue order: a prefix of the channel's pending rows, up to the
/// first that waits for a retry or carries a live claim (see the module doc). On
/// PostgreSQL it is one transaction (fenced when `db` is), and empty while another
/// claim or an enqueue holds the channel's lock.
pub fn claim(
    db: &mut Db,
    channel: &str,
    claimer: &str,
    now_ms: i64,
    claim_ms: i64,
    limit: u32,
) -> Result<Vec<OutboxRow>, StoreError> {
    let claim = |conn: &dyn Sql| claim_in(conn, channel, claimer, now_ms, claim_ms, limit);
    match db.dialect() {
        Dialect::Postgres => db.write(claim),
        // One process delivers a SQLite store, and each channel from one task, so the
        // claim needs no transaction: an idle channel costs one read, as before claims.
        Dialect::Sqlite => claim(&*db),
    }
}

fn claim_in(
    conn: &dyn Sql,
    channel: &str,
    claimer: &str,
    now_ms: i64,
    claim_ms: i64,
    limit: u32,
) -> Result<Vec<OutboxRow>, StoreError> {
    let pg = conn.dialect() == Dialect::Postgres;
    if pg {
        let locked = conn.row(
            "SELECT CASE WHEN pg_try_advisory_xact_lock(CAST(?1 AS INTEGER), hashtext(?2)) \
             THEN 1 ELSE 0 END",
            &[CHANNEL_LOCK.into(), channel.into()],
            |r| r.int(0),
        )?;
        if locked != Some(1) {
            return Ok(Vec::new());
        }
    }
    // On PostgreSQL no other claim of this channel runs now, so waiting on a row lock
    // only waits for a mark in flight; FOR UPDATE then reads each row as that mark left
    // it (a row no longer pending drops out, which is right: it blocks nothing).
    let sql = format!(
        "SELECT {COLUMNS}, claim_until_ms FROM outbox \
         WHERE channel = ?1 AND state = 'pending' ORDER BY id LIMIT ?2{}",
        if pg { " FOR UPDATE" } else { "" }
    );
    let mut claimed = Vec::new();
    let mut open = true;
    conn.each(&sql, &[channel.into(), limit.into()], &mut |r| {
        let waits = r.int(4)? > now_ms;
        let held = r.opt_int(9)?.is_some_and(|until| until > now_ms);
        open &= !(waits || held);
        if open {
            claimed.push(row(r)?);
        }
        Ok(())
    })?;
    if let (Some(first), Some(last)) = (claimed.first(), claimed.last()) {
        // The claimed rows are exactly the channel's pending rows from the first to the
        // last id: nothing else of the channel can commit meanwhile (the lock above on
        // PostgreSQL; one process on SQLite).
        conn.execute(
            "UPDATE outbox SET claimed_by = ?1, claim_until_ms = ?2 \
             WHERE channel = ?3 AND state = 'pending' AND id BETWEEN ?4 AND ?5",
            &[
                claimer.into(),
                now_ms.saturating_add(claim_ms).into(),
                channel.into(),
                first.id.into(),
                last.id.into(),
            ],
        )?;
    }
    Ok(claimed)
}

/// When `channel` may deliver next: when its oldest pending row (which holds back the
/// rest) is due and no longer claimed. `None` when nothing is pending.
pub fn next_due_ms(conn: &(impl Sql + ?Sized), channel: &str) -> Result<Option<i64>, StoreError> {
    conn.row(
        "SELECT CASE WHEN claim_until_ms > next_attempt_ms THEN claim_until_ms \
                     ELSE next_attempt_ms END \
         FROM outbox WHERE channel = ?1 AND state = 'pending' ORDER BY id LIMIT 1",
        &[channel.into()],
        |r| r.int(0),
    )
}

/// Record a delivery. `false` when the row is not pending any more or is no longer
/// `claimer`'s (its claim expired and another claimer took it: that one delivers it,
/// or did).
pub fn mark_sent(
    conn: &(impl Sql + ?Sized),
    claimer: &str,
    id: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE outbox SET state = 'sent', sent_ms = ?3, claim_until_ms = NULL \
         WHERE id = ?1 AND claimed_by = ?2 AND state = 'pending'",
        &[id.into(), claimer.into(), now_ms.into()],
    )?;
    Ok(n == 1)
}

/// Record a failed attempt and when to try again, and give the row's claim up: its
/// retry time alone holds the channel back now, and any claimer may take it when due.
/// The caller then [`release`]s the rows it claimed behind it (they must wait for this
/// one). `error` must already be scrubbed. `false` as for [`mark_sent`].
pub fn mark_retry(
    conn: &(impl Sql + ?Sized),
    claimer: &str,
    id: i64,
    attempts: u32,
    next_attempt_ms: i64,
    error: &str,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE outbox SET attempts = ?3, next_attempt_ms = ?4, last_error = ?5, \
             claimed_by = NULL, claim_until_ms = NULL \
         WHERE id = ?1 AND claimed_by = ?2 AND state = 'pending'",
        &[
            id.into(),
            claimer.into(),
            attempts.into(),
            next_attempt_ms.into(),
            error.into(),
        ],
    )?;
    Ok(n == 1)
}

/// Give a row up for good. `error` must already be scrubbed. `false` as for
/// [`mark_sent`].
pub fn mark_dead(
    conn: &(impl Sql + ?Sized),
    claimer: &str,
    id: i64,
    attempts: u32,
    error: &str,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE outbox SET state = 'dead', attempts = ?3, last_error = ?4, claim_until_ms = NULL \
         WHERE id = ?1 AND claimed_by = ?2 AND state = 'pending'",
        &[id.into(), claimer.into(), attempts.into(), error.into()],
    )?;
    Ok(n == 1)
}

/// Give up `claimer`'s claims on the pending rows of `channel` it will not deliver
/// now (the rest of a batch after a failure, or at a stop), so they are due again at
/// once instead of at their claim's deadline. Returns how many.
pub fn release(
    conn: &(impl Sql + ?Sized),
    channel: &str,
    claimer: &str,
) -> Result<u64, StoreError> {
    conn.execute(
        "UPDATE outbox SET claimed_by = NULL, claim_until_ms = NULL \
         WHERE channel = ?1 AND claimed_by = ?2 AND state = 'pending'",
        &[channel.into(), claimer.into()],
    )
}

/// Rows per state for one channel: (pending, dead).
pub fn backlog(conn: &(impl Sql + ?Sized), channel: &str) -> Result<(u64, u64), StoreError> {
    let counts = conn.row(
        "SELECT COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0), \
                COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0) \
         FROM outbox WHERE channel = ?1 AND state != 'sent'",
        &[channel.into()],
        |r| Ok((r.int(0)? as u64, r.int(1)? as u64)),
    )?;
    Ok(counts.unwrap_or((0, 0)))
}

/// Pending rows per channel name, for channels that may not be configured any more.
pub fn pending_by_channel(conn: &(impl Sql + ?Sized)) -> Result<Vec<(String, u64)>, StoreError> {
    conn.rows(
        "SELECT channel, COUNT(*) FROM outbox WHERE state = 'pending' \
         GROUP BY channel ORDER BY channel",
        &[],
        |r| Ok((r.text(0)?, r.int(1)? as u64)),
    )
}

/// Delete sent rows delivered before `before_ms`; pending and dead rows are kept.
/// Retention is leader work on PostgreSQL: pass the leader's fenced connection.
pub fn prune_sent(conn: &(impl Sql + ?Sized), before_ms: i64) -> Result<u64, StoreError> {
    conn.execute(
        "DELETE FROM outbox WHERE state = 'sent' AND sent_ms < ?1",
        &[before_ms.into()],
    )
}

/// The newest rows first, optionally in one state, on a connection for reads.
pub fn list(
    db: &Location,
    state: Option<OutboxState>,
    limit: u32,
) -> Result<Vec<OutboxRow>, StoreError> {
    db.reader()?.rows(
        &format!(
            "SELECT {COLUMNS} FROM outbox WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1) \
             ORDER BY id DESC LIMIT ?2"
        ),
        &[state.map(OutboxState::as_str).into(), limit.into()],
        row,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn message(title: &str) -> Message {
        Message {
            title: title.into(),
            tier: None,
            alerts: Vec::new(),
            text: "body".into(),
        }
    }

    #[test]
    fn a_row_moves_pending_to_sent_and_then_never_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let mut conn = open(&path.as_path().into()).unwrap();
        let id = enqueue(&conn, "slack", &message("one"), 1_000).unwrap();
        let email = enqueue(&conn, "email", &message("two"), 1_000).unwrap();
        assert_eq!(email, id + 1);
        assert!(
            claim(&mut conn, "slack", "w", 999, 0, 10)
                .unwrap()
                .is_empty()
        );
        let rows = claim(&mut conn, "slack", "w", 1_000, 0, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].message, message("one"));
        assert_eq!(rows[0].state, OutboxState::Pending);

        assert!(mark_retry(&conn, "w", id, 1, 5_000, "HTTP 500").unwrap());
        assert!(
            !mark_retry(&conn, "w", id, 2, 6_000, "HTTP 500").unwrap(),
            "unclaimed"
        );
        assert!(
            claim(&mut conn, "slack", "w", 4_999, 0, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(next_due_ms(&conn, "slack").unwrap(), Some(5_000));
        assert_eq!(backlog(&conn, "slack").unwrap(), (1, 0));

        // A claim of no lifetime (SQLite's) holds nothing back at a later claim.
        assert_eq!(
            claim(&mut conn, "slack", "w", 5_000, 0, 10).unwrap().len(),
            1
        );
        assert!(
            !mark_sent(&conn, "other", id, 6_000).unwrap(),
            "not its claim"
        );
        assert!(mark_sent(&conn, "w", id, 6_000).unwrap());
        assert!(!mark_sent(&conn, "w", id, 7_000).unwrap(), "sent once only");
        assert!(!mark_dead(&conn, "w", id, 9, "late failure").unwrap());
        let listed = list(&path.as_path().into(), Some(OutboxState::Sent), 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].sent_ms, listed[0].attempts, listed[0].state),
            (Some(6_000), 1, OutboxState::Sent)
        );
        assert_eq!(next_due_ms(&conn, "slack").unwrap(), None);
        assert_eq!(
            pending_by_channel(&conn).unwrap(),
            vec![("email".to_string(), 1)]
        );
        assert_eq!(created_since(&conn, 1_000).unwrap().len(), 2);
        assert_eq!(prune_sent(&conn, 6_001).unwrap(), 1);
        assert_eq!(list(&path.as_path().into(), None, 10).unwrap().len(), 1);
    }
}
