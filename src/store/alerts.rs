//! Alert rows and their transitions, detected change events and change-impact
//! reports: written by the alert stage on its own connection (rare, small writes
//! that SQLite serializes with the writer thread's through the busy timeout).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::StoreError;
use crate::domain::{Alert, ChangeEvent, Lane, Scope, rfc3339_ms};

/// A stored alert, as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    /// Row id.
    pub id: i64,
    /// Rule name.
    pub rule: String,
    /// Scope labels.
    pub scope: Scope,
    /// Lane.
    pub lane: String,
    /// Kind.
    pub kind: String,
    /// pending, firing or resolved.
    pub state: String,
    /// Tier name.
    pub tier: Option<String>,
    /// Tier rank (1 = most severe).
    pub tier_rank: Option<u8>,
    /// When the condition was first seen (RFC 3339, data time).
    pub started_at: String,
    /// When it fired.
    pub fired_at: Option<String>,
    /// When it resolved.
    pub resolved_at: Option<String>,
    /// One sentence.
    pub summary: String,
    /// The evidence.
    pub evidence: Value,
    /// The exception that suppressed its notification, if any.
    pub suppressed_by: Option<i64>,
}

/// Filters of `GET /v1/alerts`.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// pending, firing, resolved; `None` for all.
    pub state: Option<String>,
    /// Rule name.
    pub rule: Option<String>,
    /// Kind name.
    pub kind: Option<String>,
    /// Tier name.
    pub tier: Option<String>,
    /// Only alerts started at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only suppressed (true) or only notified (false) alerts.
    pub suppressed: Option<bool>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// Open a writable connection for the alert stage.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    super::open_side(path)
}

fn scope_json(scope: &Scope) -> String {
    serde_json::to_string(scope).expect("a string map serializes")
}

/// Store a new alert episode `id` (pending or straight to firing).
pub fn insert(
    conn: &Connection,
    id: i64,
    a: &Alert,
    state: &str,
    started_ms: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO alerts (id, rule, scope, lane, kind, state, tier, tier_rank, started_ms, fired_ms, summary, evidence, suppressed_by) \
         VALUES (?13, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
            a.rule,
            scope_json(&a.scope),
            a.lane.as_str(),
            a.kind.as_str(),
            state,
            a.tier,
            a.tier_rank,
            started_ms,
            (state == "firing").then_some(a.at_ms),
            a.summary,
            a.evidence.to_string(),
            None::<i64>,
            id
        ])?;
    Ok(())
}

/// Move an alert to `state` with its latest line; `firing` sets fired_ms, `resolved`
/// resolved_ms.
pub fn update(
    conn: &Connection,
    id: i64,
    a: &Alert,
    state: &str,
    suppressed_by: Option<i64>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE alerts SET state = ?2, tier = ?3, tier_rank = ?4, summary = ?5, evidence = ?6, suppressed_by = ?7, \
         fired_ms = CASE WHEN ?2 = 'firing' AND fired_ms IS NULL THEN ?8 ELSE fired_ms END, \
         resolved_ms = CASE WHEN ?2 = 'resolved' THEN ?8 ELSE resolved_ms END WHERE id = ?1",
        params![id, state, a.tier, a.tier_rank, a.summary, a.evidence.to_string(), suppressed_by, a.at_ms],
    )?;
    Ok(())
}

/// Put alert `id` in incident `incident_id` (its root's id), which reopened `reopens` times.
pub fn set_incident(
    conn: &Connection,
    id: i64,
    incident_id: i64,
    reopens: u32,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE alerts SET incident_id = ?2, reopens = ?3 WHERE id = ?1",
        params![id, incident_id, reopens],
    )?;
    Ok(())
}

/// Mark an alert resolved when only its row is known (it was open before a restart).
pub fn mark_resolved(conn: &Connection, id: i64, at_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_ms = ?2 WHERE id = ?1",
        params![id, at_ms],
    )?;
    Ok(())
}

/// Record transition `id` of alert `alert_id` with the line that announced it.
pub fn transition(
    conn: &Connection,
    id: i64,
    alert_id: i64,
    a: &Alert,
    state: &str,
    suppressed_by: Option<i64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO alert_transitions (id, alert_id, at_ms, state, suppressed_by, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![id, alert_id, a.at_ms, state, suppressed_by, serde_json::to_string(a).expect("an alert serializes")])?;
    Ok(())
}

/// The highest alert and transition ids in use (0 when there are none): the
/// alert stage allocates the ids after them.
pub fn last_ids(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn.query_row(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM alerts), (SELECT COALESCE(MAX(id), 0) FROM alert_transitions)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// Note that transition `transition`'s line waits in a group for `channel` of `tier`.
pub fn add_pending(
    conn: &Connection,
    transition: i64,
    channel: &str,
    tier: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO notify_pending (transition_id, channel, tier) VALUES (?1, ?2, ?3)",
        params![transition, channel, tier],
    )?;
    Ok(())
}

/// The lines of `channel` that left their group for the outbox.
pub fn clear_pending(
    conn: &Connection,
    transitions: &[i64],
    channel: &str,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM notify_pending WHERE transition_id = ?1 AND channel = ?2")?;
    for t in transitions {
        stmt.execute(params![t, channel])?;
    }
    Ok(())
}

/// A line that was waiting in a group when the daemon stopped.
#[derive(Debug, Clone)]
pub struct PendingLine {
    /// The transition it announces.
    pub transition: i64,
    /// The channel it waits for.
    pub channel: String,
    /// The tier whose group it is in.
    pub tier: String,
    /// The alert line.
    pub line: Alert,
}

/// Every line waiting in a group, oldest transition first.
pub fn pending_lines(conn: &Connection) -> Result<Vec<PendingLine>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT p.transition_id, p.channel, p.tier, t.line FROM notify_pending p \
         JOIN alert_transitions t ON t.id = p.transition_id ORDER BY p.transition_id, p.channel",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (transition, channel, tier, line) = row?;
        match serde_json::from_str(&line) {
            Ok(line) => out.push(PendingLine {
                transition,
                channel,
                tier,
                line,
            }),
            // Written by this program; a line it cannot read is reported, not fatal.
            Err(e) => {
                tracing::warn!(transition, error = %e, "unreadable pending alert line skipped")
            }
        }
    }
    Ok(out)
}

/// The line and data time of an alert's latest transition to `state`.
pub fn last_transition(
    conn: &Connection,
    alert_id: i64,
    state: &str,
) -> Result<Option<(Alert, i64)>, StoreError> {
    let row: Option<(String, i64)> = conn
        .query_row(
            "SELECT line, at_ms FROM alert_transitions WHERE alert_id = ?1 AND state = ?2 \
             ORDER BY id DESC LIMIT 1",
            params![alert_id, state],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(line, at)| Some((serde_json::from_str(&line).ok()?, at))))
}

/// An alert still pending or firing, picked up after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAlert {
    /// Row id.
    pub id: i64,
    /// Rule name.
    pub rule: String,
    /// Scope labels.
    pub scope: Scope,
    /// Its rule's lane.
    pub lane: Lane,
    /// Whether it fired (else pending).
    pub firing: bool,
    /// When its condition was first seen.
    pub started_ms: i64,
    /// The exception suppressing it, if any.
    pub suppressed_by: Option<i64>,
    /// Its incident (the root alert's id), once it fired.
    pub incident_id: Option<i64>,
    /// How often its incident reopened.
    pub reopens: u32,
}

/// Alerts pending or firing.
pub fn open_alerts(conn: &Connection) -> Result<Vec<OpenAlert>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, rule, scope, lane, state, started_ms, suppressed_by, incident_id, reopens FROM alerts WHERE state IN ('pending', 'firing') ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let scope: String = r.get(2)?;
        let state: String = r.get(4)?;
        let lane: String = r.get(3)?;
        // An open alert of a lane this build does not know cannot be judged: stop
        // rather than file it under another lane, where a miss would resolve it.
        let lane = Lane::from_name(&lane).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("alert has an unknown lane {lane:?}; was the database written by a newer driftwarden?").into(),
            )
        })?;
        Ok(OpenAlert {
            id: r.get(0)?,
            rule: r.get(1)?,
            scope: serde_json::from_str(&scope).unwrap_or_default(),
            lane,
            firing: state == "firing",
            started_ms: r.get(5)?,
            suppressed_by: r.get(6)?,
            incident_id: r.get(7)?,
            reopens: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Share of firings suppressed per rule since `since_ms`.
pub fn suppressed_share(
    conn: &Connection,
    since_ms: i64,
) -> Result<Vec<(String, f64)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT rule, AVG(suppressed_by IS NOT NULL) FROM alerts WHERE fired_ms IS NOT NULL AND started_ms >= ?1 AND lane != 'meta' GROUP BY rule",
    )?;
    let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Store a change event detected in the data (ignored when already stored).
pub fn insert_change(conn: &Connection, c: &ChangeEvent, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO change_events (ts_ms, kind, scope, note, origin, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![c.ts_ms, c.kind.as_str(), scope_json(&c.scope), c.note, c.origin, now_ms],
    )?;
    Ok(())
}

/// Attach a change-impact report to its change event.
pub fn set_impact(conn: &Connection, c: &ChangeEvent, report: &Value) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE change_events SET impact = ?5 WHERE kind = ?1 AND ts_ms = ?2 AND scope = ?3 AND note = ?4",
        params![c.kind.as_str(), c.ts_ms, scope_json(&c.scope), c.note, report.to_string()],
    )?;
    Ok(())
}

/// Alerts matching `f`, newest first.
pub fn list(conn: &Connection, f: &AlertFilter) -> Result<Vec<AlertRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, rule, scope, lane, kind, state, tier, tier_rank, started_ms, fired_ms, resolved_ms, summary, evidence, suppressed_by \
         FROM alerts WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR rule = ?2) AND (?3 IS NULL OR kind = ?3) \
         AND (?4 IS NULL OR tier = ?4) AND (?5 IS NULL OR started_ms >= ?5) \
         AND (?6 IS NULL OR (suppressed_by IS NOT NULL) = ?6) ORDER BY id DESC LIMIT ?7",
    )?;
    let ts = |ms: Option<i64>| ms.map(rfc3339_ms::format);
    let rows = stmt.query_map(
        params![
            f.state,
            f.rule,
            f.kind,
            f.tier,
            f.since_ms,
            f.suppressed,
            f.limit
        ],
        |r| {
            let scope: String = r.get(2)?;
            let evidence: String = r.get(12)?;
            Ok(AlertRow {
                id: r.get(0)?,
                rule: r.get(1)?,
                scope: serde_json::from_str(&scope).unwrap_or_default(),
                lane: r.get(3)?,
                kind: r.get(4)?,
                state: r.get(5)?,
                tier: r.get(6)?,
                tier_rank: r.get(7)?,
                started_at: rfc3339_ms::format(r.get(8)?),
                fired_at: ts(r.get(9)?),
                resolved_at: ts(r.get(10)?),
                summary: r.get(11)?,
                evidence: serde_json::from_str(&evidence).unwrap_or(Value::Null),
                suppressed_by: r.get(13)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
