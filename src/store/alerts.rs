//! Alert rows and their transitions, detected change events and change-impact
//! reports: written by the alert stage on its own connection (rare, small writes
//! that SQLite serializes with the writer thread's through the busy timeout). The
//! SQL is written once for both backends (`store::sql`).

use serde::Serialize;
use serde_json::Value;

use super::StoreError;
use super::sql::{Row, Sql, SqlExt};
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
pub fn open(db: &super::Location) -> Result<super::sql::Db, StoreError> {
    db.side()
}

fn scope_json(scope: &Scope) -> String {
    serde_json::to_string(scope).expect("a string map serializes")
}

/// A tier rank as stored (1 = most severe).
fn rank(v: Option<i64>) -> Option<u8> {
    v.and_then(|r| u8::try_from(r).ok())
}

/// Store a new alert episode `id` (pending or straight to firing).
pub fn insert(
    db: &(impl Sql + ?Sized),
    id: i64,
    a: &Alert,
    state: &str,
    started_ms: i64,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO alerts (id, rule, scope, lane, kind, state, tier, tier_rank, started_ms, fired_ms, summary, evidence, suppressed_by) \
         VALUES (?12, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL)",
        &[
            (&a.rule).into(),
            (&scope_json(&a.scope)).into(),
            a.lane.as_str().into(),
            a.kind.as_str().into(),
            state.into(),
            (&a.tier).into(),
            u32::from(a.tier_rank).into(),
            started_ms.into(),
            (state == "firing").then_some(a.at_ms).into(),
            (&a.summary).into(),
            (&a.evidence.to_string()).into(),
            id.into(),
        ],
    )?;
    Ok(())
}

/// Move an alert to `state` with its latest line; `firing` sets fired_ms, `resolved`
/// resolved_ms.
pub fn update(
    db: &(impl Sql + ?Sized),
    id: i64,
    a: &Alert,
    state: &str,
    suppressed_by: Option<i64>,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE alerts SET state = ?2, tier = ?3, tier_rank = ?4, summary = ?5, evidence = ?6, suppressed_by = ?7, \
         fired_ms = CASE WHEN ?2 = 'firing' AND fired_ms IS NULL THEN ?8 ELSE fired_ms END, \
         resolved_ms = CASE WHEN ?2 = 'resolved' THEN ?8 ELSE resolved_ms END WHERE id = ?1",
        &[
            id.into(),
            state.into(),
            (&a.tier).into(),
            u32::from(a.tier_rank).into(),
            (&a.summary).into(),
            (&a.evidence.to_string()).into(),
            suppressed_by.into(),
            a.at_ms.into(),
        ],
    )?;
    Ok(())
}

/// Put alert `id` in incident `incident_id` (its root's id), which reopened `reopens` times.
pub fn set_incident(
    db: &(impl Sql + ?Sized),
    id: i64,
    incident_id: i64,
    reopens: u32,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE alerts SET incident_id = ?2, reopens = ?3 WHERE id = ?1",
        &[id.into(), incident_id.into(), reopens.into()],
    )?;
    Ok(())
}

/// Mark an alert resolved when only its row is known (it was open before a restart).
pub fn mark_resolved(db: &(impl Sql + ?Sized), id: i64, at_ms: i64) -> Result<(), StoreError> {
    db.execute(
        "UPDATE alerts SET state = 'resolved', resolved_ms = ?2 WHERE id = ?1",
        &[id.into(), at_ms.into()],
    )?;
    Ok(())
}

/// Record transition `id` of alert `alert_id` with the line that announced it.
pub fn transition(
    db: &(impl Sql + ?Sized),
    id: i64,
    alert_id: i64,
    a: &Alert,
    state: &str,
    suppressed_by: Option<i64>,
) -> Result<(), StoreError> {
    let line = serde_json::to_string(a).expect("an alert serializes");
    db.execute(
        "INSERT INTO alert_transitions (id, alert_id, at_ms, state, suppressed_by, line) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            id.into(),
            alert_id.into(),
            a.at_ms.into(),
            state.into(),
            suppressed_by.into(),
            (&line).into(),
        ],
    )?;
    Ok(())
}

/// The highest alert and transition ids in use (0 when there are none): the
/// alert stage allocates the ids after them.
pub fn last_ids(db: &(impl Sql + ?Sized)) -> Result<(i64, i64), StoreError> {
    let ids = db.row(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM alerts), \
         (SELECT COALESCE(MAX(id), 0) FROM alert_transitions)",
        &[],
        |r| Ok((r.int(0)?, r.int(1)?)),
    )?;
    Ok(ids.unwrap_or((0, 0)))
}

/// Note that transition `transition`'s line waits in a group for `channel` of `tier`.
pub fn add_pending(
    db: &(impl Sql + ?Sized),
    transition: i64,
    channel: &str,
    tier: &str,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO notify_pending (transition_id, channel, tier) VALUES (?1, ?2, ?3) \
         ON CONFLICT DO NOTHING",
        &[transition.into(), channel.into(), tier.into()],
    )?;
    Ok(())
}

/// The lines of `channel` that left their group for the outbox.
pub fn clear_pending(
    db: &(impl Sql + ?Sized),
    transitions: &[i64],
    channel: &str,
) -> Result<(), StoreError> {
    for t in transitions {
        db.execute(
            "DELETE FROM notify_pending WHERE transition_id = ?1 AND channel = ?2",
            &[(*t).into(), channel.into()],
        )?;
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
pub fn pending_lines(db: &(impl Sql + ?Sized)) -> Result<Vec<PendingLine>, StoreError> {
    let rows = db.rows(
        "SELECT p.transition_id, p.channel, p.tier, t.line FROM notify_pending p \
         JOIN alert_transitions t ON t.id = p.transition_id ORDER BY p.transition_id, p.channel",
        &[],
        |r| Ok((r.int(0)?, r.text(1)?, r.text(2)?, r.text(3)?)),
    )?;
    let mut out = Vec::new();
    for (transition, channel, tier, line) in rows {
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
    db: &(impl Sql + ?Sized),
    alert_id: i64,
    state: &str,
) -> Result<Option<(Alert, i64)>, StoreError> {
    let row = db.row(
        "SELECT line, at_ms FROM alert_transitions WHERE alert_id = ?1 AND state = ?2 \
         ORDER BY id DESC LIMIT 1",
        &[alert_id.into(), state.into()],
        |r| Ok((r.text(0)?, r.int(1)?)),
    )?;
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
pub fn open_alerts(db: &(impl Sql + ?Sized)) -> Result<Vec<OpenAlert>, StoreError> {
    db.rows(
        "SELECT id, rule, scope, lane, state, started_ms, suppressed_by, incident_id, reopens \
         FROM alerts WHERE state IN ('pending', 'firing') ORDER BY id",
        &[],
        |r| {
            let lane = r.text(3)?;
            // An open alert of a lane this build does not know cannot be judged: stop
            // rather than file it under another lane, where a miss would resolve it.
            let lane = Lane::from_name(&lane).ok_or_else(|| {
                StoreError::Unreadable(format!(
                    "alert has an unknown lane {lane:?}; was the database written by a newer driftwarden?"
                ))
            })?;
            Ok(OpenAlert {
                id: r.int(0)?,
                rule: r.text(1)?,
                scope: serde_json::from_str(&r.text(2)?).unwrap_or_default(),
                lane,
                firing: r.text(4)? == "firing",
                started_ms: r.int(5)?,
                suppressed_by: r.opt_int(6)?,
                incident_id: r.opt_int(7)?,
                reopens: u32::try_from(r.int(8)?).unwrap_or(u32::MAX),
            })
        },
    )
}

/// Share of firings suppressed per rule since `since_ms`.
pub fn suppressed_share(
    db: &(impl Sql + ?Sized),
    since_ms: i64,
) -> Result<Vec<(String, f64)>, StoreError> {
    db.rows(
        "SELECT rule, CAST(AVG(CASE WHEN suppressed_by IS NULL THEN 0.0 ELSE 1.0 END) AS DOUBLE PRECISION) \
         FROM alerts \
         WHERE fired_ms IS NOT NULL AND started_ms >= ?1 AND lane != 'meta' GROUP BY rule",
        &[since_ms.into()],
        |r| Ok((r.text(0)?, r.real(1)?)),
    )
}

/// Store a change event detected in the data (ignored when already stored).
pub fn insert_change(
    db: &(impl Sql + ?Sized),
    c: &ChangeEvent,
    now_ms: i64,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO change_events (ts_ms, kind, scope, note, origin, received_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        &[
            c.ts_ms.into(),
            c.kind.as_str().into(),
            (&scope_json(&c.scope)).into(),
            (&c.note).into(),
            (&c.origin).into(),
            now_ms.into(),
        ],
    )?;
    Ok(())
}

/// Attach a change-impact report to its change event.
pub fn set_impact(
    db: &(impl Sql + ?Sized),
    c: &ChangeEvent,
    report: &Value,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE change_events SET impact = ?5 \
         WHERE kind = ?1 AND ts_ms = ?2 AND scope = ?3 AND note = ?4",
        &[
            c.kind.as_str().into(),
            c.ts_ms.into(),
            (&scope_json(&c.scope)).into(),
            (&c.note).into(),
            (&report.to_string()).into(),
        ],
    )?;
    Ok(())
}

/// Alerts matching `f`, newest first.
pub fn list(db: &(impl Sql + ?Sized), f: &AlertFilter) -> Result<Vec<AlertRow>, StoreError> {
    let ts = |ms: Option<i64>| ms.map(rfc3339_ms::format);
    db.rows(
        "SELECT id, rule, scope, lane, kind, state, tier, tier_rank, started_ms, fired_ms, resolved_ms, summary, evidence, suppressed_by \
         FROM alerts WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1) AND (CAST(?2 AS TEXT) IS NULL OR rule = ?2) \
         AND (CAST(?3 AS TEXT) IS NULL OR kind = ?3) AND (CAST(?4 AS TEXT) IS NULL OR tier = ?4) \
         AND (CAST(?5 AS BIGINT) IS NULL OR started_ms >= ?5) \
         AND (CAST(?6 AS BIGINT) IS NULL OR (CASE WHEN suppressed_by IS NULL THEN 0 ELSE 1 END) = ?6) \
         ORDER BY id DESC LIMIT ?7",
        &[
            f.state.as_ref().into(),
            f.rule.as_ref().into(),
            f.kind.as_ref().into(),
            f.tier.as_ref().into(),
            f.since_ms.into(),
            f.suppressed.into(),
            f.limit.into(),
        ],
        |r: &dyn Row| {
            Ok(AlertRow {
                id: r.int(0)?,
                rule: r.text(1)?,
                scope: serde_json::from_str(&r.text(2)?).unwrap_or_default(),
                lane: r.text(3)?,
                kind: r.text(4)?,
                state: r.text(5)?,
                tier: r.opt_text(6)?,
                tier_rank: rank(r.opt_int(7)?),
                started_at: rfc3339_ms::format(r.int(8)?),
                fired_at: ts(r.opt_int(9)?),
                resolved_at: ts(r.opt_int(10)?),
                summary: r.text(11)?,
                evidence: serde_json::from_str(&r.text(12)?).unwrap_or(Value::Null),
                suppressed_by: r.opt_int(13)?,
            })
        },
    )
}
