//! The notification outbox on PostgreSQL: the SQLite outbox's rows and rules
//! (`store::outbox`), for several replicas of which only the leader delivers.
//!
//! Every write is fenced by the leader lease in its own transaction ([`lease::check`]):
//! a replica that lost leadership while paused enqueues, claims and marks nothing. A
//! delivering task first [`claim`]s rows (its name and a claim deadline on each), sends
//! them, and marks each with the same claimer name; a mark whose claim was taken over
//! changes nothing and returns `false`. A claim outlives the process that made it only
//! until its deadline, after which another claimer (the next leader) takes the row.
//!
//! **Order.** As on SQLite, each channel delivers in queue order: a claim takes a
//! channel's pending rows in id order and stops at the first that waits for a retry or
//! is claimed (by anyone, the caller included: that row is already being delivered),
//! so a resolve never overtakes its opening. Row-level `SKIP LOCKED` alone cannot keep
//! that order (a claimer would skip a row another claimer is taking and claim the one
//! behind it), so the skipping is per channel: a claim takes each channel's advisory
//! transaction lock with `pg_try_advisory_xact_lock` and leaves the channels another
//! transaction holds to the next claim. [`enqueue`] waits for the same lock, so rows of
//! one channel commit in id order and a claim never passes a row committed late with a
//! smaller id.
//!
//! **Delivery window.** A row is marked sent right after its channel accepted it. A
//! crash (or a lost lease: the mark is fenced) between a channel's 2xx and the commit
//! of [`mark_sent`] leaves the row pending; once its claim expires the next claimer
//! sends it again. That resend, at most once per such crash, is the one duplicate a
//! channel can see.

use postgres::{GenericClient, Row};

use super::error;
use super::lease::{self, Lease};
use crate::domain::Message;
use crate::store::StoreError;
use crate::store::outbox::{OutboxRow, OutboxState};

/// First key of the two-part advisory lock taken per channel ("dwob"); the second is
/// the channel name's hash. Two-part keys never collide with one-part ones (the
/// migration lock).
const CHANNEL_LOCK: i32 = 0x6477_6f62;

const COLUMNS: &str =
    "id, channel, message, created_ms, next_attempt_ms, attempts, state, last_error, sent_ms";

fn outbox_row(r: &Row) -> Result<OutboxRow, StoreError> {
    let id: i64 = r.get(0);
    let message = serde_json::from_str(r.get(2))
        .map_err(|e| StoreError::Postgres(format!("outbox row {id}: unreadable message: {e}")))?;
    Ok(OutboxRow {
        id,
        channel: r.get(1),
        message,
        created_ms: r.get(3),
        next_attempt_ms: r.get(4),
        attempts: u32::try_from(r.get::<_, i64>(5)).unwrap_or(u32::MAX),
        state: OutboxState::parse(r.get(6)).unwrap_or(OutboxState::Dead),
        last_error: r.get(7),
        sent_ms: r.get(8),
    })
}

/// Queue `message` for the channel named `channel`, due at once, as `leader`'s holder.
/// Returns the row id. Pass a `Transaction` to enqueue together with other writes (it
/// becomes a savepoint; the fencing lock lasts until the outer commit).
pub fn enqueue(
    client: &mut impl GenericClient,
    leader: &Lease,
    channel: &str,
    message: &Message,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let json = serde_json::to_string(message)
        .map_err(|e| StoreError::Postgres(format!("outbox message for {channel}: {e}")))?;
    let mut tx = client.transaction().map_err(error)?;
    lease::check(&mut tx, leader, now_ms)?;
    // Rows of one channel commit one at a time, in id order (see the module doc).
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&CHANNEL_LOCK, &channel],
    )
    .map_err(error)?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO outbox (channel, message, created_ms, next_attempt_ms) \
             VALUES ($1, $2, $3, $3) RETURNING id",
            &[&channel, &json, &now_ms],
        )
        .map_err(error)?
        .get(0);
    tx.commit().map_err(error)?;
    Ok(id)
}

/// Claim up to `limit` due rows for `claimer` until `now_ms + claim_ms`, as `leader`'s
/// holder, and return them in id order. Per channel, the rows taken are a prefix of its
/// pending rows in queue order: the first row that waits for a retry or carries a live
/// claim holds back the rest of its channel. Channels whose lock another claim or an
/// enqueue holds are skipped this time.
pub fn claim(
    client: &mut impl GenericClient,
    leader: &Lease,
    claimer: &str,
    now_ms: i64,
    claim_ms: i64,
    limit: u32,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut tx = client.transaction().map_err(error)?;
    lease::check(&mut tx, leader, now_ms)?;
    let channels: Vec<String> = tx
        .query(
            "SELECT DISTINCT channel FROM outbox WHERE state = 'pending' ORDER BY channel",
            &[],
        )
        .map_err(error)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut claimed = Vec::new();
    for channel in channels {
        let left = i64::from(limit) - claimed.len() as i64;
        if left <= 0 {
            break;
        }
        let locked: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
                &[&CHANNEL_LOCK, &channel],
            )
            .map_err(error)?
            .get(0);
        if !locked {
            continue;
        }
        // No other claim of this channel runs now, so waiting on a row lock only waits
        // for a mark in flight; FOR UPDATE then returns each row as that mark left it
        // (a row no longer pending drops out, which is right: it blocks nothing).
        let rows = tx
            .query(
                &format!(
                    "SELECT {COLUMNS}, claim_until_ms FROM outbox \
                     WHERE channel = $1 AND state = 'pending' ORDER BY id LIMIT $2 FOR UPDATE"
                ),
                &[&channel, &left],
            )
            .map_err(error)?;
        for r in &rows {
            let claim_until: Option<i64> = r.get(9);
            let waits = r.get::<_, i64>(4) > now_ms;
            let held = claim_until.is_some_and(|until| until > now_ms);
            if waits || held {
                break;
            }
            claimed.push(outbox_row(r)?);
        }
    }
    if !claimed.is_empty() {
        let ids: Vec<i64> = claimed.iter().map(|r| r.id).collect();
        tx.execute(
            "UPDATE outbox SET claimed_by = $1, claim_until_ms = $2 WHERE id = ANY($3)",
            &[&claimer, &now_ms.saturating_add(claim_ms), &ids],
        )
        .map_err(error)?;
    }
    tx.commit().map_err(error)?;
    claimed.sort_by_key(|r| r.id);
    Ok(claimed)
}

/// Run one fenced update of a row `claimer` has claimed; whether it changed the row.
fn update_claimed(
    client: &mut impl GenericClient,
    leader: &Lease,
    now_ms: i64,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<bool, StoreError> {
    let mut tx = client.transaction().map_err(error)?;
    lease::check(&mut tx, leader, now_ms)?;
    let n = tx.execute(sql, params).map_err(error)?;
    tx.commit().map_err(error)?;
    Ok(n == 1)
}

/// Record a delivery. `false` when the row is not pending any more or another claimer
/// has taken it over (its claim expired): that claimer delivers it, or did.
pub fn mark_sent(
    client: &mut impl GenericClient,
    leader: &Lease,
    claimer: &str,
    id: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    update_claimed(
        client,
        leader,
        now_ms,
        "UPDATE outbox SET state = 'sent', sent_ms = $3, claim_until_ms = NULL \
         WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
        &[&id, &claimer, &now_ms],
    )
}

/// Record a failed attempt and when to try again, and give the claim up: the retry
/// time alone holds the channel back now, and any claimer may take the row when due.
/// The caller's claims on the rows behind it in its channel are given up too (they
/// must wait for this one, and their marks now return `false`): as on SQLite, a
/// failure ends the channel's batch. `error` must already be scrubbed. `false` as
/// for [`mark_sent`].
#[allow(clippy::too_many_arguments)]
pub fn mark_retry(
    client: &mut impl GenericClient,
    leader: &Lease,
    claimer: &str,
    id: i64,
    attempts: u32,
    next_attempt_ms: i64,
    error: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = client.transaction().map_err(self::error)?;
    lease::check(&mut tx, leader, now_ms)?;
    let retried = tx
        .query_opt(
            "UPDATE outbox SET attempts = $3, next_attempt_ms = $4, last_error = $5, \
                 claimed_by = NULL, claim_until_ms = NULL \
             WHERE id = $1 AND claimed_by = $2 AND state = 'pending' RETURNING channel",
            &[
                &id,
                &claimer,
                &i64::from(attempts),
                &next_attempt_ms,
                &error,
            ],
        )
        .map_err(self::error)?;
    if let Some(r) = &retried {
        tx.execute(
            "UPDATE outbox SET claimed_by = NULL, claim_until_ms = NULL \
             WHERE channel = $1 AND id > $2 AND claimed_by = $3 AND state = 'pending'",
            &[&r.get::<_, &str>(0), &id, &claimer],
        )
        .map_err(self::error)?;
    }
    tx.commit().map_err(self::error)?;
    Ok(retried.is_some())
}

/// Give a row up for good. `error` must already be scrubbed. `false` as for
/// [`mark_sent`].
pub fn mark_dead(
    client: &mut impl GenericClient,
    leader: &Lease,
    claimer: &str,
    id: i64,
    attempts: u32,
    error: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    update_claimed(
        client,
        leader,
        now_ms,
        "UPDATE outbox SET state = 'dead', attempts = $3, last_error = $4, claim_until_ms = NULL \
         WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
        &[&id, &claimer, &i64::from(attempts), &error],
    )
}

/// Rows per state for one channel: (pending, dead).
pub fn backlog(client: &mut impl GenericClient, channel: &str) -> Result<(u64, u64), StoreError> {
    let r = client
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'dead') \
             FROM outbox WHERE channel = $1 AND state != 'sent'",
            &[&channel],
        )
        .map_err(error)?;
    Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
}

/// Pending rows per channel name, for channels that may not be configured any more.
pub fn pending_by_channel(
    client: &mut impl GenericClient,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = client
        .query(
            "SELECT channel, COUNT(*) FROM outbox WHERE state = 'pending' \
             GROUP BY channel ORDER BY channel",
            &[],
        )
        .map_err(error)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect())
}

/// Delete sent rows delivered before `before_ms`, as `leader`'s holder (retention is
/// leader work); pending and dead rows are kept.
pub fn prune_sent(
    client: &mut impl GenericClient,
    leader: &Lease,
    before_ms: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut tx = client.transaction().map_err(error)?;
    lease::check(&mut tx, leader, now_ms)?;
    let n = tx
        .execute(
            "DELETE FROM outbox WHERE state = 'sent' AND sent_ms < $1",
            &[&before_ms],
        )
        .map_err(error)?;
    tx.commit().map_err(error)?;
    Ok(n)
}
