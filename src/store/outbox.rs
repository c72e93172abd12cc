//! The notification outbox: notifications waiting for delivery, delivered, or given up.
//!
//! The alert stage enqueues on its own connection and the delivery worker
//! (`notify::worker`) updates rows on another. Rows are small and rare next to event
//! batches, so WAL's one-writer-at-a-time plus a busy timeout is all the coordination
//! they need. Every update of a row requires it to be `pending`, so a sent or dead row
//! never changes again.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{Location, StoreError};
use crate::domain::Message;

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

fn row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    let text: String = r.get(2)?;
    let message = serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let state: String = r.get(6)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        channel: r.get(1)?,
        message,
        created_ms: r.get(3)?,
        next_attempt_ms: r.get(4)?,
        attempts: r.get(5)?,
        state: OutboxState::parse(&state).unwrap_or(OutboxState::Dead),
        last_error: r.get(7)?,
        sent_ms: r.get(8)?,
    })
}

/// Open a writable connection to the (already migrated) database, for the delivery
/// worker or the alert stage.
pub fn open(db: &Location) -> Result<Connection, StoreError> {
    db.lite_side("the outbox")
}

/// Queue `message` for the channel named `channel`, due at once. Returns the row id.
pub fn enqueue(
    conn: &Connection,
    channel: &str,
    message: &Message,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let json = serde_json::to_string(message).expect("a message serializes");
    conn.execute(
        "INSERT INTO outbox (channel, message, created_ms, next_attempt_ms) VALUES (?1, ?2, ?3, ?3)",
        params![channel, json, now_ms],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Rows enqueued at or after `since_ms`, in enqueue order. A row whose message cannot
/// be read is skipped with a warning.
pub fn created_since(conn: &Connection, since_ms: i64) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE created_ms >= ?1 ORDER BY id"
    ))?;
    let mut out = Vec::new();
    for r in stmt.query_map(params![since_ms], row)? {
        match r {
            Ok(r) => out.push(r),
            Err(rusqlite::Error::FromSqlConversionFailure(..)) => {
                tracing::warn!("unreadable outbox message skipped");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Pending rows of `channel` in queue order, at most `limit`, up to the first that
/// waits for a retry: a channel delivers in order, so a resolve never overtakes the
/// opening it closes while that opening is retried.
pub fn due(
    conn: &Connection,
    channel: &str,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE channel = ?1 AND state = 'pending' \
         ORDER BY id LIMIT ?2"
    ))?;
    let mut out = Vec::new();
    for r in stmt.query_map(params![channel, limit], row)? {
        let r = r?;
        // In order: a row waiting for its retry holds back the rows queued after it.
        if r.next_attempt_ms > now_ms {
            break;
        }
        out.push(r);
    }
    Ok(out)
}

/// When the oldest pending row of `channel` (which holds back the rest) is due.
pub fn next_due_ms(conn: &Connection, channel: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT next_attempt_ms FROM outbox WHERE channel = ?1 AND state = 'pending' \
             ORDER BY id LIMIT 1",
            params![channel],
            |r| r.get(0),
        )
        .optional()?)
}

/// Record a delivery. Returns whether the row was pending (false: already final).
pub fn mark_sent(conn: &Connection, id: i64, now_ms: i64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE outbox SET state = 'sent', sent_ms = ?2 WHERE id = ?1 AND state = 'pending'",
        params![id, now_ms],
    )?;
    Ok(n == 1)
}

/// Record a failed attempt and when to try again. `error` must already be scrubbed.
pub fn mark_retry(
    conn: &Connection,
    id: i64,
    attempts: u32,
    next_attempt_ms: i64,
    error: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 \
         WHERE id = ?1 AND state = 'pending'",
        params![id, attempts, next_attempt_ms, error],
    )?;
    Ok(())
}

/// Give a row up for good. `error` must already be scrubbed.
pub fn mark_dead(conn: &Connection, id: i64, attempts: u32, error: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE outbox SET state = 'dead', attempts = ?2, last_error = ?3 \
         WHERE id = ?1 AND state = 'pending'",
        params![id, attempts, error],
    )?;
    Ok(())
}

/// Rows per state for one channel: (pending, dead).
pub fn backlog(conn: &Connection, channel: &str) -> Result<(u64, u64), StoreError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'dead'), 0) \
         FROM outbox WHERE channel = ?1 AND state != 'sent'",
        params![channel],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )?)
}

/// Pending rows per channel name, for channels that may not be configured any more.
pub fn pending_by_channel(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT channel, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY channel ORDER BY channel",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Delete sent rows delivered before `before_ms`; pending and dead rows are kept.
pub fn prune_sent(conn: &Connection, before_ms: i64) -> Result<u64, StoreError> {
    let n = conn.execute(
        "DELETE FROM outbox WHERE state = 'sent' AND sent_ms < ?1",
        params![before_ms],
    )?;
    Ok(n as u64)
}

/// The newest rows first, optionally in one state, on a read-only connection.
pub fn list(
    db: &Location,
    state: Option<OutboxState>,
    limit: u32,
) -> Result<Vec<OutboxRow>, StoreError> {
    let conn = db.lite_reader("reading the store")?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![state.map(OutboxState::as_str), limit], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
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
        let conn = open(&path.as_path().into()).unwrap();
        let id = enqueue(&conn, "slack", &message("one"), 1_000).unwrap();
        enqueue(&conn, "email", &message("two"), 1_000).unwrap();
        assert!(due(&conn, "slack", 999, 10).unwrap().is_empty());
        let rows = due(&conn, "slack", 1_000, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].message, message("one"));
        assert_eq!(rows[0].state, OutboxState::Pending);

        mark_retry(&conn, id, 1, 5_000, "HTTP 500").unwrap();
        assert!(due(&conn, "slack", 4_999, 10).unwrap().is_empty());
        assert_eq!(next_due_ms(&conn, "slack").unwrap(), Some(5_000));
        assert_eq!(backlog(&conn, "slack").unwrap(), (1, 0));

        assert!(mark_sent(&conn, id, 6_000).unwrap());
        assert!(!mark_sent(&conn, id, 7_000).unwrap(), "sent once only");
        mark_dead(&conn, id, 9, "late failure").unwrap();
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
        assert_eq!(prune_sent(&conn, 6_001).unwrap(), 1);
        assert_eq!(list(&path.as_path().into(), None, 10).unwrap().len(), 1);
    }
}
