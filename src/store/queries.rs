//! Read-only queries, each on its own read-only connection (WAL lets them run beside
//! the writer). Callers in async code run these on a blocking thread.

use std::path::Path;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{StoreError, open_reader};
use crate::domain::TailCheckpoint;
use crate::sources::fingerprint::Fingerprint;

/// Stored record counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Usage events in the store (within retention).
    pub events: u64,
    /// Eval scores in the store.
    pub evals: u64,
    /// Dead letters in the store.
    pub dead_letters: u64,
    /// Per-minute aggregate rows, one per scope and minute.
    pub aggregate_rows: u64,
    /// Database file size plus its write-ahead log.
    pub db_bytes: u64,
}

/// A dead letter as stored.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoredDeadLetter {
    /// Row id, increasing in arrival order.
    pub id: i64,
    /// When it was stored, milliseconds since the Unix epoch.
    pub received_ms: i64,
    /// Which source it came from (`tail:/path`, `http:events`, ...).
    pub source: String,
    /// Where in that source: a byte offset, a line number or a row id.
    pub position: String,
    /// Why the record was refused.
    pub reason: String,
    /// The record's text, bounded and with secrets redacted.
    pub raw: String,
}

/// Counts of everything stored.
pub fn stats(path: &Path) -> Result<Stats, StoreError> {
    let conn = open_reader(path)?;
    let count = |table: &str| -> Result<u64, StoreError> {
        Ok(
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })? as u64,
        )
    };
    Ok(Stats {
        // The table behind the `events` view: SQLite counts a table from its B-tree
        // pages, but a view row by row through its joins.
        events: count("event_rows")?,
        evals: count("eval_scores")?,
        dead_letters: count("dead_letters")?,
        aggregate_rows: count("agg_minute")?,
        db_bytes: db_bytes(path),
    })
}

/// Size on disk of the database and its WAL.
pub fn db_bytes(path: &Path) -> u64 {
    let wal = path.with_extension(match path.extension() {
        Some(ext) => format!("{}-wal", ext.to_string_lossy()),
        None => "wal".to_string(),
    });
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The newest dead letters first, optionally of one source.
pub fn dead_letters(
    path: &Path,
    source: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredDeadLetter>, StoreError> {
    let conn = open_reader(path)?;
    let mut stmt = conn.prepare(
        "SELECT id, received_ms, source, position, reason, raw FROM dead_letters \
         WHERE (?1 IS NULL OR source = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![source, limit], |r| {
        Ok(StoredDeadLetter {
            id: r.get(0)?,
            received_ms: r.get(1)?,
            source: r.get(2)?,
            position: r.get(3)?,
            reason: r.get(4)?,
            raw: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Requests per epoch minute for one scope, oldest first.
pub fn minute_totals(path: &Path, dim: &str, value: &str) -> Result<Vec<(i64, u64)>, StoreError> {
    let conn = open_reader(path)?;
    let mut stmt = conn.prepare(
        "SELECT minute, requests FROM agg_minute WHERE dim = ?1 AND value = ?2 ORDER BY minute",
    )?;
    let rows = stmt.query_map(params![dim, value], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The last committed checkpoint for a tailed path.
pub fn checkpoint(db: &Path, tail_path: &str) -> Result<Option<TailCheckpoint>, StoreError> {
    let conn = open_reader(db)?;
    Ok(conn
        .query_row(
            "SELECT dev, inode, head_len, head_hash, byte_offset FROM tail_checkpoints WHERE path = ?1",
            params![tail_path],
            |r| {
                Ok(TailCheckpoint {
                    path: tail_path.to_string(),
                    fingerprint: Fingerprint {
                        dev: r.get::<_, i64>(0)? as u64,
                        inode: r.get::<_, i64>(1)? as u64,
                        head_len: r.get::<_, i64>(2)? as u64,
                        head_hash: r.get::<_, i64>(3)? as u64,
                    },
                    offset: r.get::<_, i64>(4)? as u64,
                })
            },
        )
        .optional()?)
}

/// Check the database answers a trivial query.
pub fn ping(db: &Path) -> Result<(), StoreError> {
    let conn = open_reader(db)?;
    conn.query_row("SELECT 1", [], |_| Ok(()))?;
    Ok(())
}

/// The last committed cursor of a gateway database source.
pub fn db_cursor(db: &Path, source: &str) -> Result<Option<i64>, StoreError> {
    let conn = open_reader(db)?;
    Ok(conn
        .query_row(
            "SELECT last_id FROM db_cursors WHERE source = ?1",
            params![source],
            |r| r.get(0),
        )
        .optional()?)
}

/// A stored change event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoredChange {
    /// Row id, increasing in arrival order.
    pub id: i64,
    /// `deploy`, `model_bump` or `config_change`.
    pub kind: String,
    /// When the change took effect, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Dimension to value as a JSON object; empty means everything.
    pub scope: serde_json::Value,
    /// Free text saying what changed.
    pub note: String,
    /// `api` when posted, `detected` when found in the data.
    pub origin: String,
    /// When it was stored, milliseconds since the Unix epoch.
    pub received_ms: i64,
}

/// Change events at or after `since_ms`, newest first.
pub fn changes(db: &Path, since_ms: i64, limit: u32) -> Result<Vec<StoredChange>, StoreError> {
    let conn = open_reader(db)?;
    let mut stmt = conn.prepare(
        "SELECT id, kind, ts_ms, scope, note, origin, received_ms FROM change_events \
         WHERE ts_ms >= ?1 ORDER BY ts_ms DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![since_ms, limit], |r| {
        let scope: String = r.get(3)?;
        Ok(StoredChange {
            id: r.get(0)?,
            kind: r.get(1)?,
            ts_ms: r.get(2)?,
            scope: serde_json::from_str(&scope).unwrap_or(serde_json::Value::Null),
            note: r.get(4)?,
            origin: r.get(5)?,
            received_ms: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
