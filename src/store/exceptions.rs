//! SQL of the exception registry (`exceptions`, `exception_audit`).
//!
//! Exception writes do not go through the writer thread: they are rare (a person
//! adds, renews or revokes one; the alert stage counts a hit or sweeps expiries) and
//! each is one small `BEGIN IMMEDIATE` transaction on its own connection. IMMEDIATE
//! takes SQLite's write lock up front, so a concurrent writer-thread commit waits in
//! the busy handler (5 s on both sides) instead of failing; WAL keeps readers unblocked.
//! On PostgreSQL each is a plain transaction. The SQL is written once for both
//! (`store::sql`).

use serde::Serialize;
use serde_json::Value as Json;

use super::sql::{Db, Row, Sql, SqlExt};
use super::{Location, StoreError};
use crate::domain::{Exception, Scope};

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
    pub details: Json,
}

/// Open a read-write connection on the daemon's (already migrated) database. It
/// never creates the file: a missing database means the daemon has not started.
pub fn open(db: &Location) -> Result<Db, StoreError> {
    db.side()
}

fn from_row(r: &dyn Row) -> Result<Exception, StoreError> {
    Ok(Exception {
        id: r.int(0)?,
        rule: r.text(1)?,
        scope: serde_json::from_str(&r.text(2)?).unwrap_or_default(),
        reason: r.text(3)?,
        owner: r.text(4)?,
        ticket: r.opt_text(5)?,
        created_ms: r.int(6)?,
        expires_ms: r.int(7)?,
        renewals: u32::try_from(r.int(8)?).unwrap_or(u32::MAX),
        hits: r.int(9)? as u64,
        last_hit_ms: r.opt_int(10)?,
        revoked_ms: r.opt_int(11)?,
    })
}

/// Insert an exception; the caller audits it.
pub fn insert(
    db: &(impl Sql + ?Sized),
    new: &NewException,
    now_ms: i64,
) -> Result<Exception, StoreError> {
    let scope = serde_json::to_string(&new.scope).expect("a string map serializes");
    let inserted = db.row(
        &format!(
            "INSERT INTO exceptions (rule, scope, reason, owner, ticket, created_ms, expires_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING {COLUMNS}"
        ),
        &[
            (&new.rule).into(),
            (&scope).into(),
            (&new.reason).into(),
            (&new.owner).into(),
            new.ticket.as_ref().into(),
            now_ms.into(),
            new.expires_ms.into(),
        ],
        from_row,
    )?;
    inserted.ok_or_else(|| StoreError::Unreadable("INSERT ... RETURNING returned no row".into()))
}

/// One exception by id.
pub fn get(db: &(impl Sql + ?Sized), id: i64) -> Result<Option<Exception>, StoreError> {
    db.row(
        &format!("SELECT {COLUMNS} FROM exceptions WHERE id = ?1"),
        &[id.into()],
        from_row,
    )
}

/// Every exception, newest first; with `active_at`, only those neither revoked nor
/// expired at that time.
pub fn list(
    db: &(impl Sql + ?Sized),
    active_at: Option<i64>,
) -> Result<Vec<Exception>, StoreError> {
    db.rows(
        &format!(
            "SELECT {COLUMNS} FROM exceptions \
             WHERE CAST(?1 AS BIGINT) IS NULL OR (revoked_ms IS NULL AND expires_ms > ?1) ORDER BY id DESC"
        ),
        &[active_at.into()],
        from_row,
    )
}

/// Set a new expiry and renewal count, clearing an audited expiry.
pub fn set_expiry(
    db: &(impl Sql + ?Sized),
    id: i64,
    expires_ms: i64,
    renewals: u32,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE exceptions SET expires_ms = ?2, renewals = ?3, expired_ms = NULL WHERE id = ?1",
        &[id.into(), expires_ms.into(), renewals.into()],
    )?;
    Ok(())
}

/// Mark revoked at `now_ms`.
pub fn set_revoked(db: &(impl Sql + ?Sized), id: i64, now_ms: i64) -> Result<(), StoreError> {
    db.execute(
        "UPDATE exceptions SET revoked_ms = ?2 WHERE id = ?1",
        &[id.into(), now_ms.into()],
    )?;
    Ok(())
}

/// Count one suppressed alert.
pub fn add_hit(db: &(impl Sql + ?Sized), id: i64, now_ms: i64) -> Result<(), StoreError> {
    db.execute(
        "UPDATE exceptions SET hits = hits + 1, last_hit_ms = \
         CASE WHEN last_hit_ms IS NULL OR last_hit_ms < ?2 THEN ?2 ELSE last_hit_ms END \
         WHERE id = ?1",
        &[id.into(), now_ms.into()],
    )?;
    Ok(())
}

/// Mark every exception expired by `now_ms` whose expiry is not yet recorded, and
/// return them; the caller audits each.
pub fn mark_expired(db: &(impl Sql + ?Sized), now_ms: i64) -> Result<Vec<Exception>, StoreError> {
    let mut out = db.rows(
        &format!(
            "UPDATE exceptions SET expired_ms = ?1 \
             WHERE expires_ms <= ?1 AND revoked_ms IS NULL AND expired_ms IS NULL \
             RETURNING {COLUMNS}"
        ),
        &[now_ms.into()],
        from_row,
    )?;
    out.sort_by_key(|e| e.id);
    Ok(out)
}

/// Append an audit row.
pub fn audit(
    db: &(impl Sql + ?Sized),
    exception_id: i64,
    at_ms: i64,
    action: &str,
    actor: &str,
    details: &Json,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO exception_audit (exception_id, at_ms, action, actor, details) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        &[
            exception_id.into(),
            at_ms.into(),
            action.into(),
            actor.into(),
            (&details.to_string()).into(),
        ],
    )?;
    Ok(())
}

/// The audit log of one exception, oldest first.
pub fn audit_log(
    db: &(impl Sql + ?Sized),
    exception_id: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    db.rows(
        "SELECT id, exception_id, at_ms, action, actor, details FROM exception_audit \
         WHERE exception_id = ?1 ORDER BY id",
        &[exception_id.into()],
        |r| {
            Ok(AuditEntry {
                id: r.int(0)?,
                exception_id: r.int(1)?,
                at_ms: r.int(2)?,
                action: r.text(3)?,
                actor: r.text(4)?,
                details: serde_json::from_str(&r.text(5)?).unwrap_or(Json::Null),
            })
        },
    )
}

/// Active exceptions per rule at `now_ms`, with their ids: `(rule, ids)`, by rule.
pub fn active_by_rule(
    db: &(impl Sql + ?Sized),
    now_ms: i64,
) -> Result<Vec<(String, Vec<i64>)>, StoreError> {
    let rows = db.rows(
        "SELECT rule, id FROM exceptions WHERE revoked_ms IS NULL AND expires_ms > ?1 \
         ORDER BY rule, id",
        &[now_ms.into()],
        |r| Ok((r.text(0)?, r.int(1)?)),
    )?;
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    for (rule, id) in rows {
        match out.last_mut() {
            Some((r, ids)) if *r == rule => ids.push(id),
            _ => out.push((rule, vec![id])),
        }
    }
    Ok(out)
}
