//! The store: one SQLite file in WAL mode.
//!
//! **Invariant:** this module is the only one that knows rusqlite and SQL. Every
//! write goes through one `Store` owned by the writer thread (`writer.rs`); readers
//! open their own read-only connections (`queries.rs`), which WAL lets run beside it.

mod aggregate;
pub mod alerts;
mod events;
pub mod exceptions;
mod labels;
pub mod location;
mod migrate;
pub mod outbox;
pub mod pg;
pub mod queries;
pub mod snapshot;
pub mod spend;
pub mod sql;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::domain::{ChangeEvent, DbCursor, DeadLetter, EvalScore, TailCheckpoint, UsageEvent};

pub use location::Location;
pub use migrate::SCHEMA_VERSION;

/// What can go wrong with the store. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened.
    #[error("cannot open database {path}: {source} (check the path exists and is writable)")]
    Open {
        /// Path of the database.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was migrated by a newer driftwarden.
    #[error(
        "database {path} has schema version {found}, newer than this driftwarden understands ({supported}); run a newer driftwarden or point --db at another file"
    )]
    TooNew {
        /// Path of the database.
        path: String,
        /// Schema version of the file.
        found: i64,
        /// Highest schema version this build knows.
        supported: i64,
    },
    /// A migration step failed.
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// A statement or transaction failed.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The operating system's random source failed (a new store needs a salt for
    /// the identities it hashes).
    #[error("the system's random source failed: {0}; the store cannot create its identity salt")]
    Random(String),
    /// A PostgreSQL store's connection, statement or transaction failed (the
    /// message carries the server's words, never the password).
    #[error("PostgreSQL store: {0}")]
    Postgres(String),
    /// A stored row this build cannot read (written by a newer driftwarden, or by hand).
    #[error("unreadable stored data: {0}")]
    Unreadable(String),
    /// A write made as a lease's holder found the lease held by a newer token: this
    /// replica lost the lease (paused, partitioned) and must not write as its holder.
    #[error("lease {lease} has moved past token {token}: this replica is no longer its holder")]
    Fenced {
        /// The lease's name (`leader`, `source:<name>`).
        lease: String,
        /// The token the write was made with.
        token: i64,
    },
    /// The writer thread has stopped, so nothing more can be committed.
    #[error("the store's writer has stopped (is the daemon shutting down?)")]
    WriterGone,
}

/// Everything one source hands over in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// `tail:/path`, `http:events`, ...
    pub source: String,
    /// The format name the records were read as (for metrics).
    pub format: String,
    /// Records skipped as not usage records (top-ups, CSV headers), counted with the commit.
    pub skipped: u64,
    /// Usage events to insert.
    pub events: Vec<UsageEvent>,
    /// Eval scores to insert.
    pub evals: Vec<EvalScore>,
    /// Records refused, each with its reason.
    pub dead_letters: Vec<DeadLetter>,
    /// For tailed files: where reading has got to, committed with the records above.
    pub checkpoint: Option<TailCheckpoint>,
    /// For gateway databases: the last row id covered, committed with the records above.
    pub db_cursor: Option<DbCursor>,
    /// Change events (deploys, model bumps, config changes).
    pub changes: Vec<ChangeEvent>,
    /// On PostgreSQL: the lease its source is read under (a gateway database is
    /// followed by one replica at a time). The commit checks it in its transaction,
    /// so a replica that lost the lease moves neither the cursor nor the rows.
    pub fence: Option<pg::lease::Lease>,
}

impl Batch {
    /// An empty batch from `source`, read as `format`.
    pub fn new(source: impl Into<String>, format: impl Into<String>) -> Batch {
        Batch {
            source: source.into(),
            format: format.into(),
            ..Batch::default()
        }
    }

    /// Like `new`, with room for `events` usage events: a tailer fills thousands, and
    /// growing the vector by doubling copied each event twice more.
    pub fn with_capacity(
        source: impl Into<String>,
        format: impl Into<String>,
        events: usize,
    ) -> Batch {
        let mut batch = Batch::new(source, format);
        batch.events.reserve_exact(events);
        batch
    }

    /// Records in the batch (events, evals and dead letters).
    pub fn len(&self) -> usize {
        self.events.len() + self.evals.len() + self.dead_letters.len() + self.changes.len()
    }

    /// Whether there is nothing to commit (not even a count of skipped records).
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.skipped == 0 && self.db_cursor.is_none()
    }
}

/// What a commit stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    /// Usage events newly stored.
    pub events_inserted: u64,
    /// Usage events already stored (same `(ts, id)`), left unchanged.
    pub events_duplicate: u64,
    /// Eval scores newly stored.
    pub evals_inserted: u64,
    /// Eval scores already stored (same key), left unchanged.
    pub evals_duplicate: u64,
    /// Dead letters stored.
    pub dead_letters: u64,
    /// Change events newly stored.
    pub changes_inserted: u64,
    /// Change events already stored, left unchanged.
    pub changes_duplicate: u64,
}

/// Which records of a batch were new, by index into its vectors.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fresh {
    /// Indexes into `Batch::events`.
    pub events: Vec<u32>,
    /// Indexes into `Batch::evals`.
    pub evals: Vec<u32>,
    /// Indexes into `Batch::changes`.
    pub changes: Vec<u32>,
}

/// The writable store. Owned by exactly one thread.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Source name to its row in `sources`; a handful of entries, read on every commit.
    source_ids: HashMap<String, i64>,
    /// Whether raw event and eval rows are written (replay may keep aggregates only).
    keep_raw: bool,
    /// Whether per-minute aggregates are written (a replay store deleted unread skips them).
    keep_aggregates: bool,
    /// Label and tenant ids of stored events; `None` until loaded, and again after a
    /// failed commit (which may have rolled back ids it handed out).
    interner: Option<labels::Interner>,
    /// Values with their own aggregate rows; `None` until loaded, and again after a
    /// failed commit (which may have rolled back values it admitted).
    agg_values: Option<aggregate::AggValues>,
    /// Most values per aggregated dimension.
    cardinality_cap: usize,
}

impl Store {
    /// Keep at most `cap` values per aggregated dimension (model, route, tenant,
    /// provider) in their own rows; later ones are counted under `_other`.
    pub fn with_cardinality_cap(mut self, cap: usize) -> Store {
        self.cardinality_cap = cap.max(1);
        self.agg_values = None;
        self
    }

    /// Keep only aggregates, not raw event and eval rows: for a throwaway replay store,
    /// where speed matters and nothing reads raw rows. Events and evals are then not
    /// deduplicated.
    pub fn without_raw_events(mut self) -> Store {
        self.keep_raw = false;
        self
    }

    /// Keep no per-minute aggregates either: for a replay store that is deleted when
    /// the replay ends, which nothing reads (the analysis keeps its own buckets). A
    /// commit then stores only evals' absence, changes, dead letters and checkpoints.
    pub fn without_aggregates(mut self) -> Store {
        self.keep_aggregates = false;
        self
    }

    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Takes effect only when the file is created: wide event rows pack better in
        // larger pages (fewer B-tree splits per insert).
        conn.pragma_update(None, "page_size", 16384)?;
        // WAL: readers never block the writer. synchronous=NORMAL in WAL survives a
        // process crash (kill -9) with every committed transaction intact; only an OS
        // crash or power loss can drop the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 16 MiB: the writer's working set is the right edge of event_rows, the current
        // minutes' aggregates and the interior pages above them. A larger cache only keeps
        // pages ingest never touches again, each costing page faults on first use (64 MiB
        // took 19k faults per million imported events, 16 MiB 6k, for 3% of the import).
        conn.pragma_update(None, "cache_size", -16384)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Checkpoint the WAL every ~40 MB (2,500 16-KiB pages) instead of ~4 MB: pages rewritten by
        // consecutive batches (aggregates, the tree's right edge) are copied once.
        conn.pragma_update(None, "wal_autocheckpoint", 2_500)?;
        migrate::to_latest(&mut conn, path)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            source_ids: HashMap::new(),
            keep_raw: true,
            keep_aggregates: true,
            interner: None,
            agg_values: None,
            cardinality_cap: crate::domain::CARDINALITY_CAP,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity salt, created on first use so hashed labels stay stable across restarts.
    pub fn identity_salt(&self) -> Result<[u8; 32], StoreError> {
        let existing: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'identity_salt'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(v) = existing.filter(|v| v.len() == 32) {
            let mut salt = [0u8; 32];
            salt.copy_from_slice(&v);
            return Ok(salt);
        }
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|e| StoreError::Random(e.to_string()))?;
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('identity_salt', ?1)",
            params![salt.to_vec()],
        )?;
        Ok(salt)
    }

    /// The id of a source name, created on first use.
    fn source_id(&mut self, name: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.source_ids.get(name) {
            return Ok(*id);
        }
        self.conn.execute(
            "INSERT OR IGNORE INTO sources (name) VALUES (?1)",
            params![name],
        )?;
        let id = self.conn.query_row(
            "SELECT id FROM sources WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        self.source_ids.insert(name.to_string(), id);
        Ok(id)
    }

    /// Store a batch in one transaction: events (idempotent by id) with their
    /// per-minute aggregates, eval scores, dead letters and the tail checkpoint.
    pub fn commit(&mut self, batch: &Batch, now_ms: i64) -> Result<CommitReport, StoreError> {
        self.commit_fresh(batch, now_ms).map(|(report, _)| report)
    }

    /// Like `commit`, and say which records were new (not duplicates), so the
    /// analysis counts each record once however often it is resent.
    pub fn commit_fresh(
        &mut self,
        batch: &Batch,
        now_ms: i64,
    ) -> Result<(CommitReport, Fresh), StoreError> {
        let source_id = self.source_id(&batch.source)?;
        let mut interner = match self.interner.take() {
            Some(i) => i,
            None => labels::Interner::load(&self.conn)?,
        };
        let mut values = match self.agg_values.take() {
            Some(v) => v,
            None => aggregate::AggValues::load(&self.conn, self.cardinality_cap)?,
        };
        let result = self.commit_with(batch, now_ms, source_id, &mut interner, &mut values);
        if result.is_ok() {
            self.interner = Some(interner);
            self.agg_values = Some(values);
        }
        result
    }

    fn commit_with(
        &mut self,
        batch: &Batch,
        now_ms: i64,
        source_id: i64,
        interner: &mut labels::Interner,
        values: &mut aggregate::AggValues,
    ) -> Result<(CommitReport, Fresh), StoreError> {
        let mut report = CommitReport::default();
        let mut fresh = Fresh::default();
        let tx = self.conn.transaction()?;
        {
            // Label ids for raw rows, value ids for aggregates; a replay store that keeps
            // neither only passes each event on to the analysis.
            let mut rows = Vec::new();
            let mut ids = Vec::new();
            if self.keep_raw || self.keep_aggregates {
                for (i, e) in batch.events.iter().enumerate() {
                    let labels_id = interner.label_id(&tx, e, source_id)?;
                    let tenant_id = match &e.tenant {
                        Some(t) => Some(interner.tenant_id(&tx, t)?),
                        None => None,
                    };
                    if self.keep_aggregates {
                        ids.push(values.ids(&tx, e, labels_id, tenant_id)?);
                    }
                    if self.keep_raw {
                        rows.push(events::Row {
                            index: i as u32,
                            labels_id,
                            tenant_id,
                        });
                    }
                }
            }
            let mut agg = aggregate::MinuteAggregates::default();
            let stored = |i: u32| {
                report.events_inserted += 1;
                fresh.events.push(i);
                if let Some(ids) = ids.get(i as usize) {
                    agg.add(&batch.events[i as usize], ids);
                }
            };
            if self.keep_raw {
                report.events_duplicate =
                    events::insert(&tx, &batch.events, &rows, now_ms, stored)?;
            } else {
                (0..batch.events.len() as u32).for_each(stored);
            }
            agg.upsert(&tx, values)?;

            let mut insert_eval = tx.prepare_cached(
                "INSERT OR IGNORE INTO eval_scores (key, request_id, route, model, evaluator, ts_ms, score, passed, source_id, received_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (i, s) in batch.evals.iter().enumerate() {
                if !self.keep_raw {
                    report.evals_inserted += 1;
                    fresh.evals.push(i as u32);
                    continue;
                }
                let changed = insert_eval.execute(params![
                    s.key(),
                    s.request_id,
                    s.route,
                    s.model,
                    s.evaluator,
                    s.ts_ms,
                    s.score,
                    s.passed,
                    source_id,
                    now_ms
                ])?;
                if changed == 1 {
                    report.evals_inserted += 1;
                    fresh.evals.push(i as u32);
                } else {
                    report.evals_duplicate += 1;
                }
            }

            let mut insert_dead = tx.prepare_cached(
                "INSERT INTO dead_letters (received_ms, source, position, reason, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for d in &batch.dead_letters {
                insert_dead.execute(params![now_ms, d.source, d.position, d.reason, d.raw])?;
                report.dead_letters += 1;
            }

            if let Some(cp) = &batch.checkpoint {
                tx.execute(
                    "INSERT INTO tail_checkpoints (path, dev, inode, head_len, head_hash, byte_offset, updated_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (path) DO UPDATE SET dev = excluded.dev, inode = excluded.inode, \
                     head_len = excluded.head_len, head_hash = excluded.head_hash, \
                     byte_offset = excluded.byte_offset, updated_ms = excluded.updated_ms",
                    params![
                        cp.path,
                        cp.fingerprint.dev as i64,
                        cp.fingerprint.inode as i64,
                        cp.fingerprint.head_len as i64,
                        cp.fingerprint.head_hash as i64,
                        cp.offset as i64,
                        now_ms
                    ],
                )?;
            }
            let mut insert_change = tx.prepare_cached(
                "INSERT OR IGNORE INTO change_events (ts_ms, kind, scope, note, origin, received_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (i, c) in batch.changes.iter().enumerate() {
                let scope = serde_json::to_string(&c.scope).expect("a string map serializes");
                let changed = insert_change.execute(params![
                    c.ts_ms,
                    c.kind.as_str(),
                    scope,
                    c.note,
                    c.origin,
                    now_ms
                ])?;
                if changed == 1 {
                    report.changes_inserted += 1;
                    fresh.changes.push(i as u32);
                } else {
                    report.changes_duplicate += 1;
                }
            }

            if let Some(c) = &batch.db_cursor {
                tx.execute(
                    "INSERT INTO db_cursors (source, last_id, updated_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (source) DO UPDATE SET last_id = excluded.last_id, updated_ms = excluded.updated_ms",
                    params![c.source, c.last_id, now_ms],
                )?;
            }
        }
        tx.commit()?;
        Ok((report, fresh))
    }

    /// Delete raw events, eval scores and dead letters older than `cutoff_ms`, and
    /// notifications delivered before it. Per-minute aggregates, alerts and pending or
    /// dead notifications are kept. Returns the number of events deleted.
    pub fn prune(&mut self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let events = tx.execute(
            "DELETE FROM event_rows WHERE ts_ms < ?1",
            params![cutoff_ms],
        )?;
        tx.execute(
            "DELETE FROM eval_scores WHERE ts_ms < ?1",
            params![cutoff_ms],
        )?;
        tx.execute(
            "DELETE FROM dead_letters WHERE received_ms < ?1",
            params![cutoff_ms],
        )?;
        outbox::prune_sent(&tx, cutoff_ms)?;
        tx.commit()?;
        Ok(events as u64)
    }
}

/// Open a read-write connection of its own on the daemon's (already migrated)
/// database, for the stages that write rare, small rows beside the writer thread
/// (exceptions, alerts, the outbox). It never creates the file; SQLite serializes
/// its writes with the writer's through the busy timeout.
pub fn open_side(path: &Path) -> Result<Connection, StoreError> {
    open_existing(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
}

/// Open a read-only connection for queries.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    open_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// A connection of its own on an existing database, with the store's busy timeout.
fn open_existing(path: &Path, mode: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(
        |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        },
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// `count` numbered parameters from `first`: `?3, ?4, ?5` for (3, 3). The multi-row
/// statements of ingest number every row's values apart.
fn placeholders(first: usize, count: usize) -> String {
    let params: Vec<String> = (first..first + count).map(|i| format!("?{i}")).collect();
    params.join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{CostSource, Fingerprint};

    pub(crate) fn event(id: &str, ts_ms: i64) -> UsageEvent {
        UsageEvent {
            id: id.into(),
            ts_ms,
            model: "gpt-4o".into(),
            resolved_model: None,
            provider: Some("openai".into()),
            route: Some("chat".into()),
            tenant: Some("team-a".into()),
            prompt_tokens: 100,
            completion_tokens: 10,
            cached_tokens: 0,
            cost_usd: Some(0.01),
            cost_source: CostSource::Gateway,
            list_cost_usd: None,
            latency_ms: Some(100),
            ttft_ms: None,
            status: Some(200),
            finish_reason: Some("stop".into()),
            error_type: None,
        }
    }

    #[test]
    fn values_past_the_cardinality_cap_aggregate_under_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut store = Store::open(&path).unwrap().with_cardinality_cap(2);
        let mut batch = Batch::new("test", "native");
        for (i, t) in ["a", "b", "c", "d", "a"].iter().enumerate() {
            let mut e = event(&format!("r{i}"), 60_000);
            e.tenant = Some((*t).into());
            batch.events.push(e);
        }
        store.commit(&batch, 0).unwrap();
        let rows: Vec<(String, i64)> = {
            let mut stmt = store
                .conn
                .prepare(
                    "SELECT value, requests FROM agg_minute WHERE dim = 'tenant' ORDER BY value",
                )
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(
            rows,
            [("_other".to_string(), 2), ("a".into(), 2), ("b".into(), 1)]
        );
        drop(store);
        // The admitted values survive a restart: `c` stays under `_other`.
        let mut store = Store::open(&path).unwrap().with_cardinality_cap(2);
        let mut batch = Batch::new("test", "native");
        let mut e = event("r9", 60_000);
        e.tenant = Some("c".into());
        batch.events.push(e);
        store.commit(&batch, 0).unwrap();
        let other: i64 = store
            .conn
            .query_row(
                "SELECT requests FROM agg_minute WHERE dim = 'tenant' AND value = '_other'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(other, 3);
    }

    #[test]
    fn duplicates_are_counted_once_and_aggregated_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        let mut batch = Batch::new("test", "native");
        batch.events = vec![event("a", 60_000), event("b", 61_000), event("a", 60_000)];
        let r = store.commit(&batch, 0).unwrap();
        assert_eq!((r.events_inserted, r.events_duplicate), (2, 1));
        let r = store.commit(&batch, 0).unwrap();
        assert_eq!((r.events_inserted, r.events_duplicate), (0, 3));
        let stats = queries::stats(&store.path().into()).unwrap();
        assert_eq!(stats.events, 2);
        let global = queries::minute_totals(&store.path().into(), "global", "").unwrap();
        assert_eq!(global, vec![(1, 2)], "one minute, two requests");
    }

    #[test]
    fn a_resent_event_inside_a_full_chunk_is_found_among_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        let rows = events::ROWS as u32;
        let (resent, repeated) = (rows + 10, 2 * rows + 5);
        let mut first = Batch::new("test", "native");
        first.events = vec![event("e10", 60_000), event(&format!("e{resent}"), 60_000)];
        store.commit(&first, 0).unwrap();
        // Four full chunks and a tail: the first two each hold a resent event, the third
        // repeats e20 from inside the batch, the fourth is all new.
        let n = 4 * rows + 7;
        let mut batch = Batch::new("test", "native");
        batch.events = (0..n).map(|i| event(&format!("e{i}"), 60_000)).collect();
        batch.events[repeated as usize] = event("e20", 60_000);
        let (r, fresh) = store.commit_fresh(&batch, 0).unwrap();
        assert_eq!(
            (r.events_inserted, r.events_duplicate),
            (u64::from(n) - 3, 3)
        );
        let want: Vec<u32> = (0..n)
            .filter(|i| ![10, resent, repeated].contains(i))
            .collect();
        assert_eq!(fresh.events, want);
        let stored = u64::from(n) - 1;
        assert_eq!(queries::stats(&store.path().into()).unwrap().events, stored);
        let global = queries::minute_totals(&store.path().into(), "global", "").unwrap();
        assert_eq!(global, vec![(1, stored)]);
    }

    #[test]
    fn aggregates_of_overlapping_batches_add_up_across_full_upsert_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        // Minutes 0..20, then 10..30: each minute is five aggregate rows (global, model,
        // route, tenant, provider), so each batch spans several full multi-row upserts,
        // and the second one's first half updates rows the first one inserted.
        let mut expected = std::collections::BTreeMap::new();
        for (b, minutes) in [(0, 0..20i64), (1, 10..30)] {
            let mut batch = Batch::new("test", "native");
            for m in minutes {
                for k in 0..=(m % 3) {
                    batch
                        .events
                        .push(event(&format!("b{b}m{m}k{k}"), m * 60_000));
                    *expected.entry(m).or_insert(0u64) += 1;
                }
            }
            store.commit(&batch, 0).unwrap();
        }
        let want: Vec<(i64, u64)> = expected.into_iter().collect();
        const { assert!(aggregate::UPSERT_ROWS < 5 * 20) };
        for (dim, value) in [("global", ""), ("tenant", "team-a"), ("model", "gpt-4o")] {
            let got = queries::minute_totals(&store.path().into(), dim, value).unwrap();
            assert_eq!(got, want, "{dim}");
        }
    }

    #[test]
    fn retention_deletes_old_raw_rows_and_delivered_notifications_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        let mut batch = Batch::new("test", "native");
        batch.events = vec![event("old", 60_000), event("new", 10 * 60_000)];
        store.commit(&batch, 0).unwrap();
        let message = crate::domain::Message {
            title: "t".into(),
            tier: None,
            alerts: Vec::new(),
            text: String::new(),
        };
        let sent_at = |id: i64, ms: i64| {
            store
                .conn
                .execute(
                    "UPDATE outbox SET state = 'sent', sent_ms = ?2 WHERE id = ?1",
                    params![id, ms],
                )
                .unwrap();
        };
        let old_sent = outbox::enqueue(&store.conn, "slack", &message, 1_000).unwrap();
        let new_sent = outbox::enqueue(&store.conn, "slack", &message, 1_000).unwrap();
        let pending = outbox::enqueue(&store.conn, "slack", &message, 1_000).unwrap();
        sent_at(old_sent, 2_000);
        sent_at(new_sent, 9 * 60_000);

        assert_eq!(store.prune(5 * 60_000).unwrap(), 1);
        let ids: Vec<String> = {
            let mut stmt = store.conn.prepare("SELECT id FROM event_rows").unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(ids, ["new"]);
        let global = queries::minute_totals(&store.path().into(), "global", "").unwrap();
        assert_eq!(global, vec![(1, 1), (10, 1)], "aggregates are kept");
        let ids: Vec<i64> = outbox::list(&store.path().into(), None, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [pending, new_sent]);
    }

    #[test]
    fn labels_are_stored_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut batch = Batch::new("test", "native");
        batch.events = vec![event("a", 60_000)];
        Store::open(&path).unwrap().commit(&batch, 0).unwrap();
        let mut other = event("b", 61_000);
        other.tenant = Some("team-b".into());
        batch.events = vec![event("c", 62_000), other];
        Store::open(&path).unwrap().commit(&batch, 0).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM event_labels"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM event_tenants"), 2);
        assert_eq!(
            count("SELECT COUNT(*) FROM events WHERE tenant = 'team-a'"),
            2
        );
    }

    #[test]
    fn checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        let cp = TailCheckpoint {
            path: "/x.log".into(),
            fingerprint: Fingerprint {
                dev: 1,
                inode: 2,
                head_len: 3,
                head_hash: u64::MAX - 5,
            },
            offset: 42,
        };
        let mut batch = Batch::new("tail:/x.log", "native");
        batch.checkpoint = Some(cp.clone());
        store.commit(&batch, 0).unwrap();
        assert_eq!(
            queries::checkpoint(&store.path().into(), "node", "/x.log").unwrap(),
            Some(cp)
        );
        assert_eq!(
            queries::checkpoint(&store.path().into(), "node", "/y.log").unwrap(),
            None
        );
    }

    #[test]
    fn salt_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let a = Store::open(&path).unwrap().identity_salt().unwrap();
        let b = Store::open(&path).unwrap().identity_salt().unwrap();
        assert_eq!(a, b);
    }
}
