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

use postgres::Client;
use rustc_hash::FxHashMap;

use super::rows::{self, STAGING, Statements};
use super::{dictionary, error, partitions};
use crate::store::aggregate::AggValues;
use crate::store::labels::Interner;
use crate::store::{Batch, CommitReport, Fresh, StoreError};

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
        if let Some(lease) = &batch.fence {
            super::lease::check_now(&mut tx, lease)?;
        }
        let (stored, duplicates) =
            rows::insert_events(&mut tx, st, &batch.events, &ids.rows, now_ms)?;
        report.events_inserted = stored.len() as u64;
        report.events_duplicate = duplicates;
        rows::upsert_aggregates(&mut tx, st, &batch.events, &stored, &ids.values, values)?;
        fresh.events = stored;

        let evals = rows::insert_evals(&mut tx, st, batch, source_id, now_ms)?;
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

        let changes = rows::insert_changes(&mut tx, st, batch, now_ms)?;
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
        let tx = {
            let sql = crate::store::sql::Pg::new(tx);
            crate::store::outbox::prune_sent(&sql, cutoff_ms)?;
            sql.into_inner()
        };
        tx.commit().map_err(error)?;
        for day in days {
            self.days.remove(&day);
        }
        Ok(events)
    }
}
