//! Read-only queries, on either backend (`store::sql`). A query given a `Location`
//! opens its own reader (on SQLite a read-only connection, which WAL lets run beside
//! the writer); one given a connection runs on it, so a caller making several reads
//! connects once. Callers in async code run these on a blocking thread.

use std::path::Path;

use serde::Serialize;

use super::sql::{Dialect, Row, Sql, SqlExt, Value};
use super::{Location, StoreError};
use crate::domain::{
    ChangeEvent, ChangeKind, CostSource, EvalScore, Fingerprint, TailCheckpoint, UsageEvent,
};

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
    /// The store's size: a SQLite file plus its write-ahead log, or the PostgreSQL
    /// database.
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
pub fn stats(db: &Location) -> Result<Stats, StoreError> {
    let conn = db.reader()?;
    let count = |table: &str| -> Result<u64, StoreError> {
        let n = conn.row(&format!("SELECT COUNT(*) FROM {table}"), &[], |r| r.int(0))?;
        Ok(n.unwrap_or(0).max(0) as u64)
    };
    Ok(Stats {
        // The table behind the `events` view: SQLite counts a table from its B-tree
        // pages, but a view row by row through its joins.
        events: count("event_rows")?,
        evals: count("eval_scores")?,
        dead_letters: count("dead_letters")?,
        aggregate_rows: count("agg_minute")?,
        db_bytes: match db.sqlite_path() {
            Some(path) => file_bytes(path),
            None => database_bytes(&conn)?,
        },
    })
}

/// The store's size: on SQLite the database file plus its WAL, on PostgreSQL the
/// whole database (every replica's rows, indexes and partitions).
pub fn db_bytes(db: &Location) -> Result<u64, StoreError> {
    match db.sqlite_path() {
        Some(path) => Ok(file_bytes(path)),
        None => database_bytes(&db.reader()?),
    }
}

/// Size on disk of a SQLite file and its WAL; a missing file counts 0.
fn file_bytes(path: &Path) -> u64 {
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

/// Size of the PostgreSQL database `conn` is connected to.
fn database_bytes(conn: &(impl Sql + ?Sized)) -> Result<u64, StoreError> {
    let n = conn.row("SELECT pg_database_size(current_database())", &[], |r| {
        r.int(0)
    })?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// The newest dead letters first, optionally of one source.
pub fn dead_letters(
    db: &Location,
    source: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredDeadLetter>, StoreError> {
    db.reader()?.rows(
        "SELECT id, received_ms, source, position, reason, raw FROM dead_letters \
         WHERE (CAST(?1 AS TEXT) IS NULL OR source = ?1) ORDER BY id DESC LIMIT ?2",
        &[source.into(), limit.into()],
        |r| {
            Ok(StoredDeadLetter {
                id: r.int(0)?,
                received_ms: r.int(1)?,
                source: r.text(2)?,
                position: r.text(3)?,
                reason: r.text(4)?,
                raw: r.text(5)?,
            })
        },
    )
}

/// Requests per epoch minute for one scope, oldest first.
pub fn minute_totals(db: &Location, dim: &str, value: &str) -> Result<Vec<(i64, u64)>, StoreError> {
    db.reader()?.rows(
        "SELECT minute, requests FROM agg_minute WHERE dim = ?1 AND value = ?2 ORDER BY minute",
        &[dim.into(), value.into()],
        |r| Ok((r.int(0)?, r.int(1)?.max(0) as u64)),
    )
}

/// The last committed checkpoint of a tailed path on node `node`. On PostgreSQL each
/// replica tails its own node's files, so checkpoints are kept per node; a SQLite
/// store has one node and ignores `node`.
pub fn checkpoint(
    db: &Location,
    node: &str,
    tail_path: &str,
) -> Result<Option<TailCheckpoint>, StoreError> {
    let conn = db.reader()?;
    let mut sql = String::from(
        "SELECT dev, inode, head_len, head_hash, byte_offset FROM tail_checkpoints WHERE path = ?1",
    );
    let mut params = vec![tail_path.into()];
    if conn.dialect() == Dialect::Postgres {
        sql.push_str(" AND node = ?2");
        params.push(node.into());
    }
    conn.row(&sql, &params, |r| {
        Ok(TailCheckpoint {
            path: tail_path.to_string(),
            fingerprint: Fingerprint {
                dev: r.int(0)? as u64,
                inode: r.int(1)? as u64,
                head_len: r.int(2)? as u64,
                head_hash: r.int(3)? as u64,
            },
            offset: r.int(4)? as u64,
        })
    })
}

/// Check the database answers a trivial query.
pub fn ping(db: &Location) -> Result<(), StoreError> {
    db.reader()?.row("SELECT 1", &[], |_| Ok(()))?;
    Ok(())
}

/// The last committed cursor of a gateway database source.
pub fn db_cursor(db: &Location, source: &str) -> Result<Option<i64>, StoreError> {
    db.reader()?.row(
        "SELECT last_id FROM db_cursors WHERE source = ?1",
        &[source.into()],
        |r| r.int(0),
    )
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
    /// The before/after report, once the change's warm-up is over.
    pub impact: Option<serde_json::Value>,
}

/// Change events at or after `since_ms`, newest first.
pub fn changes(
    conn: &(impl Sql + ?Sized),
    since_ms: i64,
    limit: u32,
) -> Result<Vec<StoredChange>, StoreError> {
    conn.rows(
        "SELECT id, kind, ts_ms, scope, note, origin, received_ms, impact FROM change_events \
         WHERE ts_ms >= ?1 ORDER BY ts_ms DESC, id DESC LIMIT ?2",
        &[since_ms.into(), limit.into()],
        |r| {
            Ok(StoredChange {
                id: r.int(0)?,
                kind: r.text(1)?,
                ts_ms: r.int(2)?,
                scope: serde_json::from_str(&r.text(3)?).unwrap_or(serde_json::Value::Null),
                note: r.text(4)?,
                origin: r.text(5)?,
                received_ms: r.int(6)?,
                impact: r
                    .opt_text(7)?
                    .and_then(|text| serde_json::from_str(&text).ok()),
            })
        },
    )
}

/// Requests of one scope (a dimension's value) over a period.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ScopeCount {
    /// `global`, `model`, `route`, `tenant` or `provider`.
    pub dim: String,
    /// The dimension's value; empty for `global`.
    pub value: String,
    /// Requests in the period.
    pub requests: u64,
}

/// The scopes with traffic since `since_minute` (epoch minutes): the `per_dim` busiest
/// values of each dimension, by dimension and then most requests first.
pub fn scopes(
    db: &Location,
    since_minute: i64,
    per_dim: u32,
) -> Result<Vec<ScopeCount>, StoreError> {
    db.reader()?.rows(
        "SELECT dim, value, n FROM ( \
           SELECT dim, value, CAST(SUM(requests) AS BIGINT) AS n, \
                  ROW_NUMBER() OVER (PARTITION BY dim ORDER BY SUM(requests) DESC, value) AS place \
           FROM agg_minute WHERE minute >= ?1 GROUP BY dim, value) AS ranked \
         WHERE place <= ?2 ORDER BY dim, n DESC, value",
        &[since_minute.into(), per_dim.into()],
        |r| {
            Ok(ScopeCount {
                dim: r.text(0)?,
                value: r.text(1)?,
                requests: r.int(2)?.max(0) as u64,
            })
        },
    )
}

/// One scope's per-minute aggregates summed over one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AggBucket {
    /// Start of the bucket, epoch minutes (a multiple of the step).
    pub minute: i64,
    /// Requests.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Requests cut off by the length limit.
    pub truncated: u64,
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// Spend in USD of the requests whose cost is known.
    pub cost_usd: f64,
    /// Requests whose cost is known.
    pub costed_requests: u64,
    /// Sum of the latencies reported.
    pub latency_ms_sum: u64,
    /// Requests that reported a latency.
    pub latency_count: u64,
}

/// A scope's aggregates in buckets of `step_minutes` over `[since_minute, until_minute)`,
/// oldest first; buckets without traffic are absent. `dim` is `global` (value `""`) or
/// a dimension.
pub fn agg_buckets(
    db: &Location,
    dim: &str,
    value: &str,
    since_minute: i64,
    until_minute: i64,
    step_minutes: i64,
) -> Result<Vec<AggBucket>, StoreError> {
    // PostgreSQL sums BIGINTs as NUMERIC: cast back.
    db.reader()?.rows(
        "SELECT (minute / ?5) * ?5 AS b, CAST(SUM(requests) AS BIGINT), \
                CAST(SUM(errors) AS BIGINT), CAST(SUM(truncated) AS BIGINT), \
                CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT), SUM(cost_usd), \
                CAST(SUM(costed_requests) AS BIGINT), CAST(SUM(latency_ms_sum) AS BIGINT), \
                CAST(SUM(latency_count) AS BIGINT) \
         FROM agg_minute WHERE dim = ?1 AND value = ?2 AND minute >= ?3 AND minute < ?4 \
         GROUP BY b ORDER BY b",
        &[
            dim.into(),
            value.into(),
            since_minute.into(),
            until_minute.into(),
            step_minutes.into(),
        ],
        |r| {
            let n = |i: usize| r.int(i).map(|v| v.max(0) as u64);
            Ok(AggBucket {
                minute: r.int(0)?,
                requests: n(1)?,
                errors: n(2)?,
                truncated: n(3)?,
                tokens: n(4)?,
                cost_usd: r.real(5)?,
                costed_requests: n(6)?,
                latency_ms_sum: n(7)?,
                latency_count: n(8)?,
            })
        },
    )
}

/// Eval scores of one scope summed over one time bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalBucket {
    /// Start of the bucket, milliseconds since the Unix epoch (a multiple of the step).
    pub start_ms: i64,
    /// Eval scores in the bucket.
    pub evals: u64,
    /// Mean of the scores given; `None` when only pass/fail was given.
    pub mean_score: Option<f64>,
    /// Share of the pass/fail verdicts that passed; `None` when none was given.
    pub pass_rate: Option<f64>,
}

/// How long before the first bucket the requests that evals of the range scored may
/// have run: evals arrive after their request, and this bounds the events scanned.
const EVAL_LAG_MS: i64 = 86_400_000;

/// A scope's eval scores in buckets of `step_ms` over `[since_ms, until_ms)`, oldest
/// first; buckets without evals are absent. For a dimension, an eval counts when the
/// request it scored (a stored raw event) is in scope, or when it names the scope's
/// route or model itself.
pub fn eval_buckets(
    db: &Location,
    dim: &str,
    value: &str,
    since_ms: i64,
    until_ms: i64,
    step_ms: i64,
) -> Result<Vec<EvalBucket>, StoreError> {
    // Column names cannot be bound as parameters, so each dimension has its own
    // filter; values are always bound (?4 the value, ?5 the earliest request time).
    let in_scope = match dim {
        "global" => "",
        "model" => {
            "AND (model = ?4 OR request_id IN \
               (SELECT id FROM events WHERE ts_ms >= ?5 AND ts_ms < ?2 AND model = ?4))"
        }
        "route" => {
            "AND (route = ?4 OR request_id IN \
               (SELECT id FROM events WHERE ts_ms >= ?5 AND ts_ms < ?2 AND route = ?4))"
        }
        "tenant" => {
            "AND request_id IN \
               (SELECT id FROM events WHERE ts_ms >= ?5 AND ts_ms < ?2 AND tenant = ?4)"
        }
        "provider" => {
            "AND request_id IN \
               (SELECT id FROM events WHERE ts_ms >= ?5 AND ts_ms < ?2 AND provider = ?4)"
        }
        _ => return Ok(Vec::new()),
    };
    // PostgreSQL averages integers as NUMERIC: cast both averages.
    let sql = format!(
        "SELECT (ts_ms / ?3) * ?3 AS b, COUNT(*), CAST(AVG(score) AS DOUBLE PRECISION), \
         CAST(AVG(passed) AS DOUBLE PRECISION) \
         FROM eval_scores WHERE ts_ms >= ?1 AND ts_ms < ?2 {in_scope} GROUP BY b ORDER BY b"
    );
    let lag = since_ms - EVAL_LAG_MS;
    let mut params = vec![since_ms.into(), until_ms.into(), step_ms.into()];
    // A statement takes exactly the parameters it names (PostgreSQL cannot type one
    // it does not use).
    if !in_scope.is_empty() {
        params.extend([Value::from(value), Value::from(lag)]);
    }
    db.reader()?.rows(&sql, &params, |r| {
        Ok(EvalBucket {
            start_ms: r.int(0)?,
            evals: r.int(1)?.max(0) as u64,
            mean_score: r.opt_real(2)?,
            pass_rate: r.opt_real(3)?,
        })
    })
}

/// Whether the store holds an analysis snapshot or raw events: history an analysis
/// on it goes on from.
pub fn holds_history(conn: &(impl Sql + ?Sized)) -> Result<bool, StoreError> {
    exists(
        conn,
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM analysis_snapshot) \
         OR EXISTS (SELECT 1 FROM events) THEN 1 ELSE 0 END",
    )
}

/// Whether the store holds raw events.
pub fn holds_events(conn: &(impl Sql + ?Sized)) -> Result<bool, StoreError> {
    exists(
        conn,
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM events) THEN 1 ELSE 0 END",
    )
}

/// The answer of `sql`, one row of 1 or 0.
fn exists(conn: &(impl Sql + ?Sized), sql: &str) -> Result<bool, StoreError> {
    Ok(conn.row(sql, &[], |r| r.int(0))? == Some(1))
}

/// The columns [`usage_event`] reads, in its order.
pub(crate) const EVENT_COLUMNS: &str = "id, ts_ms, model, resolved_model, provider, route, tenant, \
     prompt_tokens, completion_tokens, cached_tokens, cost_usd, cost_source, list_cost_usd, \
     latency_ms, ttft_ms, status, finish_reason, error_type";

/// A usage event from the columns of `r` from `at` on, as [`EVENT_COLUMNS`] lists them.
pub(crate) fn usage_event(r: &dyn Row, at: usize) -> Result<UsageEvent, StoreError> {
    let label = |i: usize| r.opt_text(at + i).map(|v| v.map(Into::into));
    Ok(UsageEvent {
        id: r.text(at)?.into(),
        ts_ms: r.int(at + 1)?,
        model: r.text(at + 2)?.into(),
        resolved_model: label(3)?,
        provider: label(4)?,
        route: label(5)?,
        tenant: label(6)?,
        prompt_tokens: r.int(at + 7)? as u64,
        completion_tokens: r.int(at + 8)? as u64,
        cached_tokens: r.int(at + 9)? as u64,
        cost_usd: r.opt_real(at + 10)?,
        cost_source: match r.text(at + 11)?.as_str() {
            "gateway" => CostSource::Gateway,
            "price_table" => CostSource::PriceTable,
            _ => CostSource::Unknown,
        },
        list_cost_usd: r.opt_real(at + 12)?,
        latency_ms: r.opt_int(at + 13)?.map(|v| v as u64),
        ttft_ms: r.opt_int(at + 14)?.map(|v| v as u64),
        status: r.opt_int(at + 15)?.and_then(|v| u16::try_from(v).ok()),
        finish_reason: label(16)?,
        error_type: label(17)?,
    })
}

/// The columns [`eval_score`] reads, in its order.
pub(crate) const EVAL_COLUMNS: &str = "request_id, route, model, evaluator, ts_ms, score, passed";

/// An eval score from the columns of `r` from `at` on, as [`EVAL_COLUMNS`] lists them.
pub(crate) fn eval_score(r: &dyn Row, at: usize) -> Result<EvalScore, StoreError> {
    Ok(EvalScore {
        request_id: r.opt_text(at)?,
        route: r.opt_text(at + 1)?,
        model: r.opt_text(at + 2)?,
        evaluator: r.text(at + 3)?,
        ts_ms: r.int(at + 4)?,
        score: r.opt_real(at + 5)?,
        passed: r.opt_int(at + 6)?.map(|v| v != 0),
    })
}

/// The columns [`change_event`] reads, in its order.
pub(crate) const CHANGE_COLUMNS: &str = "kind, ts_ms, scope, note, origin";

/// A change event from the columns of `r` from `at` on, as [`CHANGE_COLUMNS`] lists them.
pub(crate) fn change_event(r: &dyn Row, at: usize) -> Result<ChangeEvent, StoreError> {
    Ok(ChangeEvent {
        kind: match r.text(at)?.as_str() {
            "deploy" => ChangeKind::Deploy,
            "model_bump" => ChangeKind::ModelBump,
            _ => ChangeKind::ConfigChange,
        },
        ts_ms: r.int(at + 1)?,
        scope: serde_json::from_str(&r.text(at + 2)?).unwrap_or_default(),
        note: r.text(at + 3)?,
        origin: r.text(at + 4)?,
    })
}

/// Stored usage events with `ts_ms` in `[from_ms, to_ms)` after the key `after`
/// (exclusive), in key order, at most `limit`: a page of history to warm the
/// analysis with after a restart. Ids are ordered by the database's collation (bytes
/// on SQLite); pages follow one another whatever it is.
pub fn events_page(
    conn: &(impl Sql + ?Sized),
    after: (i64, &str),
    to_ms: i64,
    limit: u32,
) -> Result<Vec<UsageEvent>, StoreError> {
    conn.rows(
        &format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE (ts_ms, id) > (?1, ?2) AND ts_ms < ?3 \
             ORDER BY ts_ms, id LIMIT ?4"
        ),
        &[after.0.into(), after.1.into(), to_ms.into(), limit.into()],
        |r| usage_event(r, 0),
    )
}

/// Stored eval scores with `ts_ms` in `[from_ms, to_ms)`, oldest first.
pub fn evals_between(
    conn: &(impl Sql + ?Sized),
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<EvalScore>, StoreError> {
    conn.rows(
        &format!(
            "SELECT {EVAL_COLUMNS} FROM eval_scores WHERE ts_ms >= ?1 AND ts_ms < ?2 ORDER BY ts_ms"
        ),
        &[from_ms.into(), to_ms.into()],
        |r| eval_score(r, 0),
    )
}

/// Stored change events since `from_ms`, oldest first.
pub fn changes_since(
    conn: &(impl Sql + ?Sized),
    from_ms: i64,
) -> Result<Vec<ChangeEvent>, StoreError> {
    conn.rows(
        &format!("SELECT {CHANGE_COLUMNS} FROM change_events WHERE ts_ms >= ?1 ORDER BY ts_ms"),
        &[from_ms.into()],
        |r| change_event(r, 0),
    )
}
