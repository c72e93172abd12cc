//! SQL of the exception registry (`exceptions`, `exception_audit`).
//!
//! Exception writes do not go through the writer thread: they are rare (a person
//! adds, renews or revokes one; the alert stage counts a hit or sweeps expiries) and
//! each is one small `BEGIN IMMEDIATE` transaction on its own connection. IMMEDIATE
//! takes SQLite's write lock up front, so a concurrent writer-thread commit waits in
//! the busy handler (5 s on both sides) instead of failing; WAL keeps readers unblocked.

use std::path::Path;

use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value;

use super::StoreError;
use crate::domain::{Exception, Scope};

/// A connection to the daemon's database, as `open` returns it: callers hold it
/// without knowing the database library.
pub use rusqlite::Connection;

const COLUMNS: &str = "id, rule, scope, reason, owner, ticket, created_ms, expires_ms, renewals, hits, last_hit_ms, revoked_ms";

/// A new exception, validated by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct NewException {
    /// The rule it covers.
    pub rule: String,
    /// Scope matcher.
    pub scope: Scope,
    /// Why.
    pub reason: String,
    /// Who answers for it.
    pub owner: String,
    /// Ticket tracking the fix.
    pub ticket: Option<String>,
    /// When it expires, ms since the epoch.
    pub expires_ms: i64,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Row id, in the order changes happened.
    pub id: i64,
    /// The exception changed.
    pub exception_id: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// `created`, `renewed`, `revoked` or `expired`.
    pub action: String,
    /// Who did it (`daemon` for expiries).
    pub actor: String,
    /// What changed.
    pub details: Value,
}

/// Open a read-write connection on the daemon's (already migrated) database. It
/// never creates the file: a missing database means the daemon has not started.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    super::open_side(path)
}

/// Run `f` in one `BEGIN IMMEDIATE` transaction: committed when it returns `Ok`,
/// rolled back otherwise.
pub fn write<T, E: From<StoreError>>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::from)?;
    let out = f(&tx)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(out)
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Exception> {
    let scope: String = r.get(2)?;
    Ok(Exception {
        id: r.get(0)?,
        rule: r.get(1)?,
        scope: serde_json::from_str(&scope).unwrap_or_default(),
        reason: r.get(3)?,
        owner: r.get(4)?,
        ticket: r.get(5)?,
        created_ms: r.get(6)?,
        expires_ms: r.get(7)?,
        renewals: r.get(8)?,
        hits: r.get(9)?,
        last_hit_ms: r.get(10)?,
        revoked_ms: r.get(11)?,
    })
}

/// Insert an exception; the caller audits it.
pub fn insert(conn: &Connection, new: &NewException, now_ms: i64) -> Result<Exception, StoreError> {
    let scope = serde_json::to_string(&new.scope).expect("a string map serializes");
    conn.execute(
        "INSERT INTO exceptions (rule, scope, reason, owner, ticket, created_ms, expires_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            new.rule,
            scope,
            new.reason,
            new.owner,
            new.ticket,
            now_ms,
            new.expires_ms
        ],
    )?;
    let id = conn.last_insert_rowid();
    get(conn, id)?.ok_or(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows))
}

/// One exception by id.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Exception>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM exceptions WHERE id = ?1"),
            params![id],
            from_row,
        )
        .optional()?)
}

/// Every exception, newest first; with `active_at`, only those neither revoked nor
/// expired at that time.
pub fn list(conn: &Connection, active_at: Option<i64>) -> Result<Vec<Exception>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM exceptions \
         WHERE ?1 IS NULL OR (revoked_ms IS NULL AND expires_ms > ?1) ORDER BY id DESC"
    ))?;
    let rows = stmt.query_map(params![active_at], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Set a new expiry and renewal count, clearing an audited expiry.
pub fn set_expiry(
    conn: &Connection,
    id: i64,
    expires_ms: i64,
    renewals: u32,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE exceptions SET expires_ms = ?2, renewals = ?3, expired_ms = NULL WHERE id = ?1",
        params![id, expires_ms, renewals],
    )?;
    Ok(())
}

/// Mark revoked at `now_ms`.
pub fn set_revoked(conn: &Connection, id: i64, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE exceptions SET revoked_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(())
}

/// Count one suppressed alert.
pub fn add_hit(conn: &Connection, id: i64, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE exceptions SET hits = hits + 1, last_hit_ms = max(coalesce(last_hit_ms, ?2), ?2) WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(())
}

/// Mark every exception expired by `now_ms` whose expiry is not yet recorded, and
/// return them; the caller audits each.
pub fn mark_expired(conn: &Connection, now_ms: i64) -> Result<Vec<Exception>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "UPDATE exceptions SET expired_ms = ?1 \
         WHERE expires_ms <= ?1 AND revoked_ms IS NULL AND expired_ms IS NULL RETURNING {COLUMNS}"
    ))?;
    let rows = stmt.query_map(params![now_ms], from_row)?;
    let mut out: Vec<Exception> = rows.collect::<Result<_, _>>()?;
    out.sort_by_key(|e| e.id);
    Ok(out)
}

/// Append an audit row.
pub fn audit(
    conn: &Connection,
    exception_id: i64,
    at_ms: i64,
    action: &str,
    actor: &str,
    details: &Value,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO exception_audit (exception_id, at_ms, action, actor, details) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![exception_id, at_ms, action, actor, details.to_string()],
    )?;
    Ok(())
}

/// The audit log of one exception, oldest first.
pub fn audit_log(conn: &Connection, exception_id: i64) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, exception_id, at_ms, action, actor, details FROM exception_audit \
         WHERE exception_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![exception_id], |r| {
        let details: String = r.get(5)?;
        Ok(AuditEntry {
            id: r.get(0)?,
            exception_id: r.get(1)?,
            at_ms: r.get(2)?,
            action: r.get(3)?,
            actor: r.get(4)?,
            details: serde_json::from_str(&details).unwrap_or(Value::Null),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Active exceptions per rule at `now_ms`, with their ids: `(rule, ids)`, by rule.
pub fn active_by_rule(
    conn: &Connection,
    now_ms: i64,
) -> Result<Vec<(String, Vec<i64>)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT rule, id FROM exceptions WHERE revoked_ms IS NULL AND expires_ms > ?1 ORDER BY rule, id",
    )?;
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    let rows = stmt.query_map(params![now_ms], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
    for row in rows {
        let (rule, id) = row?;
        match out.last_mut() {
            Some((r, ids)) if *r == rule => ids.push(id),
            _ => out.push((rule, vec![id])),
        }
    }
    Ok(out)
}
