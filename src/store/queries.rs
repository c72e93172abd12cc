//! Read-only queries, each on its own read-only connection (WAL lets them run beside
//! the writer). Callers in async code run these on a blocking thread.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

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
pub fn stats(db: &Location) -> Result<Stats, StoreError> {
    let conn = db.lite_reader("reading the store")?;
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
        db_bytes: db_bytes(db),
    })
}

/// Size on disk of the database and its WAL.
pub fn db_bytes(db: &Location) -> u64 {
    let Some(path) = db.sqlite_path() else {
        return 0;
    };
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
    db: &Location,
    source: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredDeadLetter>, StoreError> {
    let conn = db.lite_reader("reading the store")?;
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
pub fn minute_totals(db: &Location, dim: &str, value: &str) -> Result<Vec<(i64, u64)>, StoreError> {
    let conn = db.lite_reader("reading the store")?;
    let mut stmt = conn.prepare(
        "SELECT minute, requests FROM agg_minute WHERE dim = ?1 AND value = ?2 ORDER BY minute",
    )?;
    let rows = stmt.query_map(params![dim, value], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The last committed checkpoint for a tailed path.
pub fn checkpoint(db: &Location, tail_path: &str) -> Result<Option<TailCheckpoint>, StoreError> {
    let conn = db.lite_reader("reading the store")?;
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
pub fn ping(db: &Location) -> Result<(), StoreError> {
    let conn = db.lite_reader("reading the store")?;
    conn.query_row("SELECT 1", [], |_| Ok(()))?;
    Ok(())
}

/// The last committed cursor of a gateway database source.
pub fn db_cursor(db: &Location, source: &str) -> Result<Option<i64>, StoreError> {
    let conn = db.lite_reader("reading the store")?;
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
    /// The before/after report, once the change's warm-up is over.
    pub impact: Option<serde_json::Value>,
}

/// Change events at or after `since_ms`, newest first.
pub fn changes(db: &Location, since_ms: i64, limit: u32) -> Result<Vec<StoredChange>, StoreError> {
    let conn = db.lite_reader("reading the store")?;
    let mut stmt = conn.prepare(
        "SELECT id, kind, ts_ms, scope, note, origin, received_ms, impact FROM change_events \
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
            impact: r
                .get::<_, Option<String>>(7)?
                .and_then(|text| serde_json::from_str(&text).ok()),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
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
    let conn = db.lite_reader("reading the store")?;
    let mut stmt = conn.prepare(
        "SELECT dim, value, n FROM ( \
           SELECT dim, value, SUM(requests) AS n, \
                  ROW_NUMBER() OVER (PARTITION BY dim ORDER BY SUM(requests) DESC, value) AS rank \
           FROM agg_minute WHERE minute >= ?1 GROUP BY dim, value) \
         WHERE rank <= ?2 ORDER BY dim, n DESC, value",
    )?;
    let rows = stmt.query_map(params![since_minute, per_dim], |r| {
        Ok(ScopeCount {
            dim: r.get(0)?,
            value: r.get(1)?,
            requests: r.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
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
    let conn = db.lite_reader("reading the store")?;
    let mut stmt = conn.prepare(
        "SELECT (minute / ?5) * ?5 AS b, SUM(requests), SUM(errors), SUM(truncated), \
                SUM(prompt_tokens + completion_tokens), SUM(cost_usd), SUM(costed_requests), \
                SUM(latency_ms_sum), SUM(latency_count) \
         FROM agg_minute WHERE dim = ?1 AND value = ?2 AND minute >= ?3 AND minute < ?4 \
         GROUP BY b ORDER BY b",
    )?;
    let rows = stmt.query_map(
        params![dim, value, since_minute, until_minute, step_minutes],
        |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok(AggBucket {
                minute: r.get(0)?,
                requests: n(1)?,
                errors: n(2)?,
                truncated: n(3)?,
                tokens: n(4)?,
                cost_usd: r.get(5)?,
                costed_requests: n(6)?,
                latency_ms_sum: n(7)?,
                latency_count: n(8)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
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
    // statement text; values are always bound.
    let sql = match dim {
        "global" => {
            "SELECT (ts_ms / ?3) * ?3 AS b, COUNT(*), AVG(score), AVG(passed) \
             FROM eval_scores WHERE ts_ms >= ?1 AND ts_ms < ?2 GROUP BY b ORDER BY b"
        }
        "model" => {
            "SELECT (ts_ms / ?3) * ?3 AS b, COUNT(*), AVG(score), AVG(passed) \
             FROM eval_scores WHERE ts_ms >= ?1 AND ts_ms < ?2 AND (model = ?4 OR request_id IN \
               (SELECT id FROM events WHERE ts_ms >= ?5 AND ts_ms < ?2 AND model = ?4)) \
             GROUP BY b ORDER BY b"
        }
        "route" => {
            "SELECT (ts_ms / ?3) * ?3 AS b, COUNT(*), AVG(score), AVG(passed) \
             FROM eval_scores WHERE ts_ms >= ?1 AND ts_ms < ?2 AND (route = ?4 OR request_id IN \
               (SELECT id FROM events WHERE ts_ms >= ?5 AND ts_ms < ?2 AND route = ?4)) \
             GROUP BY b ORDER BY b"
        }
        "tenant" => {
            "SELECT (ts_ms / ?3) * ?3 AS b, COUNT(*), AVG(score), AVG(passed) \
             FROM eval_scores WHERE ts_ms >= ?1 AND ts_ms < ?2 AND request_id IN \
               (SELECT id FROM events WHERE ts_ms >= ?5 AND ts_ms < ?2 AND tenant = ?4) \
             GROUP BY b ORDER BY b"
        }
        "provider" => {
            "SELECT (ts_ms / ?3) * ?3 AS b, COUNT(*), AVG(score), AVG(passed) \
             FROM eval_scores WHERE ts_ms >= ?1 AND ts_ms < ?2 AND request_id IN \
               (SELECT id FROM events WHERE ts_ms >= ?5 AND ts_ms < ?2 AND provider = ?4) \
             GROUP BY b ORDER BY b"
        }
        _ => return Ok(Vec::new()),
    };
    let conn = db.lite_reader("reading the store")?;
    let mut stmt = conn.prepare(sql)?;
    let bucket = |r: &rusqlite::Row<'_>| {
        Ok(EvalBucket {
            start_ms: r.get(0)?,
            evals: r.get::<_, i64>(1)?.max(0) as u64,
            mean_score: r.get(2)?,
            pass_rate: r.get(3)?,
        })
    };
    let rows = if dim == "global" {
        stmt.query_map(params![since_ms, until_ms, step_ms], bucket)?
            .collect::<Result<_, _>>()?
    } else {
        let lag = since_ms - EVAL_LAG_MS;
        stmt.query_map(params![since_ms, until_ms, step_ms, value, lag], bucket)?
            .collect::<Result<_, _>>()?
    };
    Ok(rows)
}

/// Whether the store holds an analysis snapshot or raw events: history an analysis
/// on it goes on from.
pub fn holds_history(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM analysis_snapshot) OR EXISTS (SELECT 1 FROM events)",
        [],
        |r| r.get(0),
    )?)
}

/// Whether the store holds raw events.
pub fn holds_events(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))?)
}

/// Stored usage events with `ts_ms` in `[from_ms, to_ms)` after the key `after`
/// (exclusive), in key order, at most `limit`: a page of history to warm the
/// analysis with after a restart.
pub fn events_page(
    conn: &Connection,
    after: (i64, &str),
    to_ms: i64,
    limit: u32,
) -> Result<Vec<UsageEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts_ms, model, resolved_model, provider, route, tenant, prompt_tokens, completion_tokens, \
         cached_tokens, cost_usd, cost_source, list_cost_usd, latency_ms, ttft_ms, status, finish_reason, error_type \
         FROM events WHERE (ts_ms, id) > (?1, ?2) AND ts_ms < ?3 ORDER BY ts_ms, id LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![after.0, after.1, to_ms, limit], |r| {
        let source: String = r.get(11)?;
        Ok(UsageEvent {
            id: r.get_ref(0)?.as_str()?.into(),
            ts_ms: r.get(1)?,
            model: r.get_ref(2)?.as_str()?.into(),
            resolved_model: r.get_ref(3)?.as_str_or_null()?.map(Into::into),
            provider: r.get_ref(4)?.as_str_or_null()?.map(Into::into),
            route: r.get_ref(5)?.as_str_or_null()?.map(Into::into),
            tenant: r.get_ref(6)?.as_str_or_null()?.map(Into::into),
            prompt_tokens: r.get::<_, i64>(7)? as u64,
            completion_tokens: r.get::<_, i64>(8)? as u64,
            cached_tokens: r.get::<_, i64>(9)? as u64,
            cost_usd: r.get(10)?,
            cost_source: match source.as_str() {
                "gateway" => CostSource::Gateway,
                "price_table" => CostSource::PriceTable,
                _ => CostSource::Unknown,
            },
            list_cost_usd: r.get(12)?,
            latency_ms: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
            ttft_ms: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
            status: r.get(15)?,
            finish_reason: r.get_ref(16)?.as_str_or_null()?.map(Into::into),
            error_type: r.get_ref(17)?.as_str_or_null()?.map(Into::into),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stored eval scores with `ts_ms` in `[from_ms, to_ms)`, oldest first.
pub fn evals_between(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<EvalScore>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT request_id, route, model, evaluator, ts_ms, score, passed FROM eval_scores \
         WHERE ts_ms >= ?1 AND ts_ms < ?2 ORDER BY ts_ms",
    )?;
    let rows = stmt.query_map(params![from_ms, to_ms], |r| {
        Ok(EvalScore {
            request_id: r.get(0)?,
            route: r.get(1)?,
            model: r.get(2)?,
            evaluator: r.get(3)?,
            ts_ms: r.get(4)?,
            score: r.get(5)?,
            passed: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stored change events since `from_ms`, oldest first.
pub fn changes_since(conn: &Connection, from_ms: i64) -> Result<Vec<ChangeEvent>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT kind, ts_ms, scope, note, origin FROM change_events WHERE ts_ms >= ?1 ORDER BY ts_ms",
    )?;
    let rows = stmt.query_map([from_ms], |r| {
        let kind: String = r.get(0)?;
        let scope: String = r.get(2)?;
        Ok((kind, r.get(1)?, scope, r.get(3)?, r.get(4)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, ts_ms, scope, note, origin): (String, i64, String, String, String) = row?;
        let kind = match kind.as_str() {
            "deploy" => ChangeKind::Deploy,
            "model_bump" => ChangeKind::ModelBump,
            _ => ChangeKind::ConfigChange,
        };
        out.push(ChangeEvent {
            kind,
            ts_ms,
            scope: serde_json::from_str(&scope).unwrap_or_default(),
            note,
            origin,
        });
    }
    Ok(out)
}
