//! The write path of the PostgreSQL store: `PgWriter`, the twin of SQLite's `Store`
//! for one replica of several sharing a database. The same batch gives the same
//! `CommitReport` and `Fresh` on both, and stores the same rows.
//!
//! A batch is one transaction (events, their aggregates, evals, dead letters, the
//! checkpoint, the cursor, change events), after two kinds of short ones that only
//! add shared dictionary entries: the day partitions the batch needs
//! (`partitions::ensure`), and new labels, tenants and admitted aggregate values
//! (`dictionary::ids`).
//!
//! Raw rows go to a temporary staging table by binary COPY, then into `event_rows`
//! with `ON CONFLICT DO NOTHING RETURNING`, which names the rows that were new: an
//! event posted to two replicas at once is stored once, and reported new by exactly
//! one (the other waits for the first's transaction, then sees the row).
//!
//! Replicas never wait on each other crosswise (which PostgreSQL would break by
//! failing one of them, after its `deadlock_timeout`): every statement writes its rows
//! in one global order (events by `(ts_ms, id)`, aggregates by `(minute, dim, value)`,
//! evals and change events by key), and the statements come in the same order in
//! every transaction.

use std::collections::HashSet;
use std::collections::hash_map::Entry;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, Statement, Transaction};
use rustc_hash::FxHashMap;

use super::{dictionary, error, partitions};
use crate::domain::UsageEvent;
use crate::store::aggregate::{AggValues, MinuteAggregates, ValueIds};
use crate::store::labels::Interner;
use crate::store::{Batch, CommitReport, Fresh, StoreError};

/// The staging table of raw rows: one per connection, emptied by every commit.
const STAGING: &str = "CREATE TEMPORARY TABLE event_staging (
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
struct Statements {
    insert_events: Statement,
    upsert_aggregates: Statement,
    insert_evals: Statement,
    insert_dead_letters: Statement,
    upsert_checkpoint: Statement,
    insert_change: Statement,
    upsert_cursor: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
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

/// The writable PostgreSQL store of one replica (`node`). Owned by one thread; other
/// replicas write the same database through their own.
pub struct PgWriter {
    client: Client,
    statements: Statements,
    /// This replica's name: tail checkpoints are its own (each tails its node's files).
    node: String,
    /// Source name to its row in `sources`.
    source_ids: FxHashMap<String, i64>,
    /// Label and tenant ids; `None` until loaded, and again after a failed commit.
    interner: Option<Interner>,
    /// Admitted aggregate values; `None` until loaded, and again after a failed commit.
    agg_values: Option<AggValues>,
    /// Days whose `event_rows` partition exists; emptied after a failed commit, which
    /// may have failed because another replica's retention dropped one of them.
    days: HashSet<i64>,
    /// Most values per aggregated dimension.
    cardinality_cap: usize,
}

impl PgWriter {
    /// Connect to `url` as replica `node`, migrating the schema if needed.
    pub fn open(url: &str, node: &str) -> Result<PgWriter, StoreError> {
        let mut client = super::open(url)?;
        client.batch_execute(STAGING).map_err(error)?;
        let statements = Statements::prepare(&mut client).map_err(error)?;
        Ok(PgWriter {
            client,
            statements,
            node: node.to_string(),
            source_ids: FxHashMap::default(),
            interner: None,
            agg_values: None,
            days: HashSet::new(),
            cardinality_cap: crate::domain::CARDINALITY_CAP,
        })
    }

    /// Keep at most `cap` values per aggregated dimension (model, route, tenant,
    /// provider) in their own rows; later ones are counted under `_other`. The cap is
    /// the database's, not one replica's: admissions are serialized across replicas
    /// (an advisory lock), so all of them together admit at most `cap` values.
    pub fn with_cardinality_cap(mut self, cap: usize) -> PgWriter {
        self.cardinality_cap = cap.max(1);
        self.agg_values = None;
        self
    }

    /// The identity salt, shared by every replica: the first to start stores one, and
    /// the others (starting at the same time too) read that one.
    pub fn identity_salt(&mut self) -> Result<[u8; 32], StoreError> {
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|e| StoreError::Random(e.to_string()))?;
        // A stored value of the wrong length (damaged) is replaced, as SQLite's store does.
        self.client
            .execute(
                "INSERT INTO meta (key, value) VALUES ('identity_salt', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value \
                 WHERE octet_length(meta.value) <> 32",
                &[&salt.as_slice()],
            )
            .map_err(error)?;
        let stored: Vec<u8> = self
            .client
            .query_one("SELECT value FROM meta WHERE key = 'identity_salt'", &[])
            .map_err(error)?
            .get(0);
        <[u8; 32]>::try_from(stored.as_slice())
            .map_err(|_| StoreError::Postgres("meta.identity_salt is not 32 bytes".into()))
    }

    /// The id of a source name, created on first use.
    fn source_id(&mut self, name: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.source_ids.get(name) {
            return Ok(*id);
        }
        // DO UPDATE returns the id of a row another replica inserted too.
        let id = self
            .client
            .query_one(
                "INSERT INTO sources (name) VALUES ($1) \
                 ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
                &[&name],
            )
            .map_err(error)?
            .get(0);
        self.source_ids.insert(name.to_string(), id);
        Ok(id)
    }

    /// Store a batch (see `commit_fresh`).
    pub fn commit(&mut self, batch: &Batch, now_ms: i64) -> Result<CommitReport, StoreError> {
        self.commit_fresh(batch, now_ms).map(|(report, _)| report)
    }

    /// Store a batch in one transaction, as `Store::commit_fresh` does, and say which
    /// records were new: across replicas, each event is new to exactly one commit.
    pub fn commit_fresh(
        &mut self,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<(CommitReport, Fresh), StoreError> {
        let result = self.commit_with(batch, now_ms);
        if result.is_err() {
            // Ids and days cached by a commit that failed may be wrong (another
            // replica's retention, a lost connection): read them again next time.
            self.interner = None;
            self.agg_values = None;
            self.days.clear();
        }
        result
    }

    fn commit_with(
        &mut self,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<(CommitReport, Fresh), StoreError> {
        let source_id = self.source_id(&batch.source)?;
        let mut days: Vec<i64> = batch
            .events
            .iter()
            .map(|e| partitions::day_of(e.ts_ms))
            .collect();
        days.sort_unstable();
        days.dedup();
        partitions::ensure(&mut self.client, &mut self.days, &days)?;
        let interner = match &mut self.interner {
            Some(i) => i,
            None => self
                .interner
                .insert(dictionary::load_interner(&mut self.client)?),
        };
        let values = match &mut self.agg_values {
            Some(v) => v,
            None => self.agg_values.insert(dictionary::load_agg_values(
                &mut self.client,
                self.cardinality_cap,
            )?),
        };
        let ids = dictionary::ids(&mut self.client, interner, values, &batch.events, source_id)?;

        let mut report = CommitReport::default();
        let mut fresh = Fresh::default();
        let st = &self.statements;
        let mut tx = self.client.transaction().map_err(error)?;
        let (stored, duplicates) = insert_events(&mut tx, st, &batch.events, &ids.rows, now_ms)?;
        report.events_inserted = stored.len() as u64;
        report.events_duplicate = duplicates;
        upsert_aggregates(&mut tx, st, &batch.events, &stored, &ids.values, values)?;
        fresh.events = stored;

        let evals = insert_evals(&mut tx, st, batch, source_id, now_ms)?;
        report.evals_inserted = evals.len() as u64;
        report.evals_duplicate = (batch.evals.len() - evals.len()) as u64;
        fresh.evals = evals;

        if !batch.dead_letters.is_empty() {
            let column = |f: fn(&crate::domain::DeadLetter) -> &str| {
                batch.dead_letters.iter().map(f).collect::<Vec<_>>()
            };
            let n = tx
                .execute(
                    &st.insert_dead_letters,
                    &[
                        &now_ms,
                        &column(|d| &d.source),
                        &column(|d| &d.position),
                        &column(|d| &d.reason),
                        &column(|d| &d.raw),
                    ],
                )
                .map_err(error)?;
            report.dead_letters = n;
        }

        if let Some(cp) = &batch.checkpoint {
            let f = &cp.fingerprint;
            tx.execute(
                &st.upsert_checkpoint,
                &[
                    &self.node,
                    &cp.path,
                    &(f.dev as i64),
                    &(f.inode as i64),
                    &(f.head_len as i64),
                    &(f.head_hash as i64),
                    &(cp.offset as i64),
                    &now_ms,
                ],
            )
            .map_err(error)?;
        }

        let changes = insert_changes(&mut tx, st, batch, now_ms)?;
        report.changes_inserted = changes.len() as u64;
        report.changes_duplicate = (batch.changes.len() - changes.len()) as u64;
        fresh.changes = changes;

        if let Some(c) = &batch.db_cursor {
            tx.execute(&st.upsert_cursor, &[&c.source, &c.last_id, &now_ms])
                .map_err(error)?;
        }
        tx.commit().map_err(error)?;
        Ok((report, fresh))
    }

    /// Retention: drop every day partition of raw events wholly before `cutoff_ms`
    /// (the rows of the cutoff's own day stay until their whole day has passed), and
    /// delete eval scores and dead letters older than it and notifications delivered
    /// before it, as SQLite's `Store::prune` does. Aggregates, alerts and pending or
    /// dead notifications are kept. Returns the number of events dropped, counted
    /// exactly before each drop.
    pub fn prune(&mut self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.client.transaction().map_err(error)?;
        // Dropping a partition locks `event_rows` until the commit: first, before
        // this transaction holds any row another writer may wait for.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&partitions::PRUNE_LOCK],
        )
        .map_err(error)?;
        let (days, events) = partitions::drop_before(&mut tx, cutoff_ms)?;
        tx.execute("DELETE FROM eval_scores WHERE ts_ms < $1", &[&cutoff_ms])
            .map_err(error)?;
        tx.execute(
            "DELETE FROM dead_letters WHERE received_ms < $1",
            &[&cutoff_ms],
        )
        .map_err(error)?;
        tx.execute(
            "DELETE FROM outbox WHERE state = 'sent' AND sent_ms < $1",
            &[&cutoff_ms],
        )
        .map_err(error)?;
        tx.commit().map_err(error)?;
        for day in days {
            self.days.remove(&day);
        }
        Ok(events)
    }
}

/// Store `events` with their label and tenant ids `rows`; returns the indexes of the
/// newly stored ones, in batch order, and how many were duplicates (of a stored event,
/// or of an earlier one of the batch, which is the one stored, as on SQLite).
fn insert_events(
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
fn upsert_aggregates(
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
fn insert_evals(
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
fn insert_changes(
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
