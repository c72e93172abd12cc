//! The statements of a batch's transaction (`PgWriter::commit_fresh`), each writing
//! its rows in one global key order so that replicas never wait on each other
//! crosswise: raw rows through the staging table, aggregates, evals, change events.

use std::collections::hash_map::Entry;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, Statement, Transaction};
use rustc_hash::FxHashMap;

use super::error;
use crate::domain::UsageEvent;
use crate::store::aggregate::{AggValues, MinuteAggregates, ValueIds};
use crate::store::{Batch, StoreError};

/// The staging table of raw rows: one per connection, emptied by every commit.
pub(super) const STAGING: &str = "CREATE TEMPORARY TABLE event_staging (
    ts_ms BIGINT, id TEXT, labels_id BIGINT, tenant_id BIGINT, prompt_tokens BIGINT,
    completion_tokens BIGINT, cached_tokens BIGINT, cost_usd DOUBLE PRECISION,
    list_cost_usd DOUBLE PRECISION, latency_ms BIGINT, ttft_ms BIGINT
) ON COMMIT DELETE ROWS";

/// The staging table's column types, in order, for the binary COPY.
const STAGING_TYPES: [Type; 11] = [
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT8,
    Type::INT8,
];

/// `COLLATE "C"`: byte order, the same on every server whatever its locale, and
/// cheaper to compare than a linguistic collation.
const INSERT_EVENTS: &str = "INSERT INTO event_rows (ts_ms, id, labels_id, tenant_id, \
    prompt_tokens, completion_tokens, cached_tokens, cost_usd, list_cost_usd, latency_ms, \
    ttft_ms, received_ms) \
    SELECT ts_ms, id, labels_id, tenant_id, prompt_tokens, completion_tokens, cached_tokens, \
    cost_usd, list_cost_usd, latency_ms, ttft_ms, $1 FROM event_staging \
    ORDER BY ts_ms, id COLLATE \"C\" \
    ON CONFLICT DO NOTHING RETURNING ts_ms, id";

const UPSERT_AGGREGATES: &str = "INSERT INTO agg_minute (minute, dim, value, requests, errors, \
    truncated, prompt_tokens, completion_tokens, cached_tokens, cost_usd, costed_requests, \
    list_cost_usd, latency_ms_sum, latency_count) \
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], \
    $7::int8[], $8::int8[], $9::int8[], $10::float8[], $11::int8[], $12::float8[], $13::int8[], \
    $14::int8[]) \
    ON CONFLICT (minute, dim, value) DO UPDATE SET \
    requests = agg_minute.requests + excluded.requests, \
    errors = agg_minute.errors + excluded.errors, \
    truncated = agg_minute.truncated + excluded.truncated, \
    prompt_tokens = agg_minute.prompt_tokens + excluded.prompt_tokens, \
    completion_tokens = agg_minute.completion_tokens + excluded.completion_tokens, \
    cached_tokens = agg_minute.cached_tokens + excluded.cached_tokens, \
    cost_usd = agg_minute.cost_usd + excluded.cost_usd, \
    costed_requests = agg_minute.costed_requests + excluded.costed_requests, \
    list_cost_usd = agg_minute.list_cost_usd + excluded.list_cost_usd, \
    latency_ms_sum = agg_minute.latency_ms_sum + excluded.latency_ms_sum, \
    latency_count = agg_minute.latency_count + excluded.latency_count";

const INSERT_EVALS: &str = "INSERT INTO eval_scores (key, request_id, route, model, evaluator, \
    ts_ms, score, passed, source_id, received_ms) \
    SELECT k, r, ro, m, ev, ts, sc, pa, $9, $10 FROM unnest($1::text[], $2::text[], $3::text[], \
    $4::text[], $5::text[], $6::int8[], $7::float8[], $8::int8[]) AS u (k, r, ro, m, ev, ts, sc, pa) \
    ON CONFLICT (key) DO NOTHING RETURNING key";

const INSERT_DEAD_LETTERS: &str = "INSERT INTO dead_letters (received_ms, source, position, \
    reason, raw) SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])";

const UPSERT_CHECKPOINT: &str = "INSERT INTO tail_checkpoints (node, path, dev, inode, head_len, \
    head_hash, byte_offset, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
    ON CONFLICT (node, path) DO UPDATE SET dev = excluded.dev, inode = excluded.inode, \
    head_len = excluded.head_len, head_hash = excluded.head_hash, \
    byte_offset = excluded.byte_offset, updated_ms = excluded.updated_ms";

const INSERT_CHANGE: &str = "INSERT INTO change_events (ts_ms, kind, scope, note, origin, \
    received_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

const UPSERT_CURSOR: &str = "INSERT INTO db_cursors (source, last_id, updated_ms) \
    VALUES ($1, $2, $3) \
    ON CONFLICT (source) DO UPDATE SET last_id = excluded.last_id, updated_ms = excluded.updated_ms";

/// The batch statements, prepared once per connection.
pub(super) struct Statements {
    insert_events: Statement,
    upsert_aggregates: Statement,
    insert_evals: Statement,
    pub(super) insert_dead_letters: Statement,
    pub(super) upsert_checkpoint: Statement,
    insert_change: Statement,
    pub(super) upsert_cursor: Statement,
}

impl Statements {
    pub(super) fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            insert_events: client.prepare(INSERT_EVENTS)?,
            upsert_aggregates: client.prepare(UPSERT_AGGREGATES)?,
            insert_evals: client.prepare(INSERT_EVALS)?,
            insert_dead_letters: client.prepare(INSERT_DEAD_LETTERS)?,
            upsert_checkpoint: client.prepare(UPSERT_CHECKPOINT)?,
            insert_change: client.prepare(INSERT_CHANGE)?,
            upsert_cursor: client.prepare(UPSERT_CURSOR)?,
        })
    }
}

/// Store `events` with their label and tenant ids `rows`; returns the indexes of the
/// newly stored ones, in batch order, and how many were duplicates (of a stored event,
/// or of an earlier one of the batch, which is the one stored, as on SQLite).
pub(super) fn insert_events(
    tx: &mut Transaction,
    st: &Statements,
    events: &[UsageEvent],
    rows: &[(i64, Option<i64>)],
    now_ms: i64,
) -> Result<(Vec<u32>, u64), StoreError> {
    if events.is_empty() {
        return Ok((Vec::new(), 0));
    }
    // The first of each (ts_ms, id) in the batch: only those are staged.
    let mut first: FxHashMap<(i64, &str), u32> = FxHashMap::default();
    first.reserve(events.len());
    let sink = tx
        .copy_in("COPY event_staging FROM STDIN (FORMAT binary)")
        .map_err(error)?;
    let mut copy = BinaryCopyInWriter::new(sink, &STAGING_TYPES);
    for (i, (e, (labels_id, tenant_id))) in events.iter().zip(rows).enumerate() {
        match first.entry((e.ts_ms, e.id.as_str())) {
            Entry::Occupied(_) => continue,
            Entry::Vacant(v) => v.insert(i as u32),
        };
        let values: [&(dyn ToSql + Sync); 11] = [
            &e.ts_ms,
            &e.id.as_str(),
            labels_id,
            tenant_id,
            &(e.prompt_tokens as i64),
            &(e.completion_tokens as i64),
            &(e.cached_tokens as i64),
            &e.cost_usd,
            &e.list_cost_usd,
            &e.latency_ms.map(|v| v as i64),
            &e.ttft_ms.map(|v| v as i64),
        ];
        copy.write(&values).map_err(error)?;
    }
    copy.finish().map_err(error)?;
    let returned = tx.query(&st.insert_events, &[&now_ms]).map_err(error)?;
    let mut stored = Vec::with_capacity(returned.len());
    for r in &returned {
        let key = (r.get::<_, i64>(0), r.get::<_, &str>(1));
        let index = first.get(&key).ok_or_else(|| {
            StoreError::Postgres(format!("event_rows returned {key:?}, which was not staged"))
        })?;
        stored.push(*index);
    }
    // Batch order: the aggregates then add up in the order SQLite's do (floating-point
    // sums depend on it), and `Fresh` lists indexes as SQLite's does.
    stored.sort_unstable();
    let duplicates = (events.len() - stored.len()) as u64;
    Ok((stored, duplicates))
}

/// Add the newly stored events (`stored`, indexes into `events`) to the per-minute
/// aggregates, in one statement.
pub(super) fn upsert_aggregates(
    tx: &mut Transaction,
    st: &Statements,
    events: &[UsageEvent],
    stored: &[u32],
    ids: &[ValueIds],
    values: &AggValues,
) -> Result<(), StoreError> {
    let mut agg = MinuteAggregates::default();
    for &i in stored {
        agg.add(&events[i as usize], &ids[i as usize]);
    }
    let rows = agg.rows(values);
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&crate::store::aggregate::Totals) -> i64| {
        rows.iter().map(|r| f(r.3)).collect::<Vec<i64>>()
    };
    let minute: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let dim: Vec<&str> = rows.iter().map(|r| r.1).collect();
    let value: Vec<&str> = rows.iter().map(|r| r.2).collect();
    let cost: Vec<f64> = rows.iter().map(|r| r.3.cost_usd).collect();
    let list_cost: Vec<f64> = rows.iter().map(|r| r.3.list_cost_usd).collect();
    tx.execute(
        &st.upsert_aggregates,
        &[
            &minute,
            &dim,
            &value,
            &column(|t| t.requests),
            &column(|t| t.errors),
            &column(|t| t.truncated),
            &column(|t| t.prompt_tokens),
            &column(|t| t.completion_tokens),
            &column(|t| t.cached_tokens),
            &cost,
            &column(|t| t.costed_requests),
            &list_cost,
            &column(|t| t.latency_ms_sum),
            &column(|t| t.latency_count),
        ],
    )
    .map_err(error)?;
    Ok(())
}

/// Store the batch's eval scores; returns the indexes of the new ones, in batch order.
/// The first of a key in the batch is the one stored, as on SQLite.
pub(super) fn insert_evals(
    tx: &mut Transaction,
    st: &Statements,
    batch: &Batch,
    source_id: i64,
    now_ms: i64,
) -> Result<Vec<u32>, StoreError> {
    if batch.evals.is_empty() {
        return Ok(Vec::new());
    }
    let mut first: FxHashMap<String, u32> = FxHashMap::default();
    let mut order = Vec::with_capacity(batch.evals.len());
    for (i, s) in batch.evals.iter().enumerate() {
        let key = s.key();
        if !first.contains_key(&key) {
            first.insert(key.clone(), i as u32);
            order.push((key, i));
        }
    }
    order.sort_unstable();
    let evals = order.iter().map(|(_, i)| &batch.evals[*i]);
    let key: Vec<&str> = order.iter().map(|(k, _)| k.as_str()).collect();
    let request_id: Vec<Option<&str>> = evals.clone().map(|s| s.request_id.as_deref()).collect();
    let route: Vec<Option<&str>> = evals.clone().map(|s| s.route.as_deref()).collect();
    let model: Vec<Option<&str>> = evals.clone().map(|s| s.model.as_deref()).collect();
    let evaluator: Vec<&str> = evals.clone().map(|s| s.evaluator.as_str()).collect();
    let ts_ms: Vec<i64> = evals.clone().map(|s| s.ts_ms).collect();
    let score: Vec<Option<f64>> = evals.clone().map(|s| s.score).collect();
    let passed: Vec<Option<i64>> = evals.map(|s| s.passed.map(i64::from)).collect();
    let returned = tx
        .query(
            &st.insert_evals,
            &[
                &key,
                &request_id,
                &route,
                &model,
                &evaluator,
                &ts_ms,
                &score,
                &passed,
                &source_id,
                &now_ms,
            ],
        )
        .map_err(error)?;
    let mut fresh = returned
        .iter()
        .map(|r| {
            let key: &str = r.get(0);
            first.get(key).copied().ok_or_else(|| {
                StoreError::Postgres(format!(
                    "eval_scores returned key {key}, which was not sent"
                ))
            })
        })
        .collect::<Result<Vec<u32>, StoreError>>()?;
    fresh.sort_unstable();
    Ok(fresh)
}

/// Store the batch's change events; returns the indexes of the new ones, in batch
/// order. Written in key order (the first of a key in the batch first), a few a batch.
pub(super) fn insert_changes(
    tx: &mut Transaction,
    st: &Statements,
    batch: &Batch,
    now_ms: i64,
) -> Result<Vec<u32>, StoreError> {
    let mut order: Vec<(&str, i64, String, &str, usize)> = batch
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let scope = serde_json::to_string(&c.scope).expect("a string map serializes");
            (c.kind.as_str(), c.ts_ms, scope, c.note.as_str(), i)
        })
        .collect();
    order.sort_unstable();
    let mut fresh = Vec::new();
    for (kind, ts_ms, scope, note, i) in &order {
        let origin = &batch.changes[*i].origin;
        let n = tx
            .execute(
                &st.insert_change,
                &[ts_ms, kind, scope, note, origin, &now_ms],
            )
            .map_err(error)?;
        if n == 1 {
            fresh.push(*i as u32);
        }
    }
    fresh.sort_unstable();
    Ok(fresh)
}
