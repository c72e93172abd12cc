//! Following a gateway's usage table: New API and One API write per-request usage only
//! to the `logs` table of their database (SQLite, PostgreSQL or MySQL).
//!
//! The follower reads rows with `id` above its cursor in bounded batches, hands each
//! row (as a JSON object) to the same `newapi`/`oneapi` adapter the webhook uses, and
//! commits the cursor in the same transaction as the events, so a crash at any
//! moment neither loses nor repeats a row. It never writes to the gateway's database.

mod mysql;
mod postgres;
use crate::dbconn::tls;
pub use crate::dbconn::{DbError, printable_url};
mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use crate::adapters::{Decoder, Format, LogRow};
use crate::clock::now_ms;
use crate::domain::DbCursor;
use crate::ingest::add_row;
use crate::sources::SourceEnv;
use crate::store::{Batch, StoreError, queries};
use crate::telemetry::SourceOnly;

/// Which gateway wrote the table (they differ in columns and type codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// New API (the default).
    #[default]
    Newapi,
    /// One API.
    Oneapi,
}

impl Flavour {
    fn format(self) -> (&'static str, Format) {
        match self {
            Flavour::Newapi => ("newapi", Format::NewApi),
            Flavour::Oneapi => ("oneapi", Format::OneApi),
        }
    }
}

/// Where a source with no stored cursor begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbStart {
    /// Only rows written from now on (the default: no surprise backfill).
    Newest,
    /// Every row in the table.
    First,
    /// Rows created at or after this time (epoch milliseconds).
    Since(i64),
}

/// A gateway database source that cannot be followed; the message says why and
/// what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDbSource(String);

impl std::str::FromStr for DbStart {
    type Err = InvalidDbSource;
    fn from_str(s: &str) -> Result<DbStart, InvalidDbSource> {
        match s {
            "newest" => Ok(DbStart::Newest),
            "first" => Ok(DbStart::First),
            t => crate::adapters::timestamp::parse_ts_str(t)
                .map(DbStart::Since)
                .map_err(|_| {
                    InvalidDbSource(format!(
                        "{t:?} is not newest, first, or a time such as 2026-06-01T00:00:00Z"
                    ))
                }),
        }
    }
}

/// One gateway database to follow.
#[derive(Clone)]
pub struct DbSpec {
    /// `sqlite:///path/one-api.db`, `postgres://...` or `mysql://...`. May hold a password:
    /// never logged; `name` is the printable form.
    pub url: String,
    /// Which gateway wrote the table; picks the adapter.
    pub flavour: Flavour,
    /// Name of the usage table (letters, digits and `_` only).
    pub table: String,
    /// Where to begin when no cursor is stored.
    pub start: DbStart,
    /// Wait between polls once caught up.
    pub poll: Duration,
    /// Rows read per query, at most.
    pub batch_rows: u32,
    /// Channel id to a readable provider name.
    pub channels: BTreeMap<i64, String>,
}

impl std::fmt::Debug for DbSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSpec")
            .field("url", &printable_url(&self.url))
            .field("flavour", &self.flavour)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DbSpec {
    /// The source name used in metrics, cursors and dead letters: no credentials.
    pub fn name(&self) -> String {
        format!(
            "db:{}:{}#{}",
            self.flavour.format().0,
            printable_url(&self.url),
            self.table
        )
    }

    /// Check the URL scheme, its TLS parameters, and the table name (it is spliced
    /// into SQL, so only letters, digits and `_` are allowed).
    pub fn validate(&self) -> Result<(), InvalidDbSource> {
        if !self
            .table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.table.is_empty()
        {
            return Err(InvalidDbSource(format!(
                "table name {:?} may hold only letters, digits and _",
                self.table
            )));
        }
        match Backend::of(&self.url) {
            Some(Backend::Sqlite) => Ok(()),
            Some(Backend::Postgres | Backend::Mysql) => {
                tls::split(&self.url).map(drop).map_err(|why| {
                    InvalidDbSource(format!(
                        "gateway database URL {}: {why}",
                        printable_url(&self.url)
                    ))
                })
            }
            None => Err(InvalidDbSource(format!(
                "gateway database URL {} must start with sqlite://, postgres://, postgresql:// or mysql://",
                printable_url(&self.url)
            ))),
        }
    }
}

/// The columns of a New API / One API `logs` table that the adapter reads. Any may be
/// missing in a given version; the SELECT lists only those present.
const COLUMNS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("created_at", Kind::Int),
    ("type", Kind::Int),
    ("username", Kind::Text),
    ("token_name", Kind::Text),
    ("model_name", Kind::Text),
    ("quota", Kind::Int),
    ("prompt_tokens", Kind::Int),
    ("completion_tokens", Kind::Int),
    ("use_time", Kind::Int),
    ("elapsed_time", Kind::Int),
    ("channel_id", Kind::Int),
    ("group", Kind::Text),
    ("other", Kind::Text),
];

/// How a column is read: every integer type as a 64-bit integer, everything else as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
}

/// The SQL dialect details that differ between backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    fn of(url: &str) -> Option<Backend> {
        let scheme = url.split_once("://")?.0;
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "mysql" | "mariadb" => Some(Backend::Mysql),
            _ => None,
        }
    }

    fn quote(self, ident: &str) -> String {
        match self {
            Backend::Mysql => format!("`{ident}`"),
            _ => format!("\"{ident}\""),
        }
    }

    fn cast(self, column: &str, kind: Kind) -> String {
        let col = self.quote(column);
        match (self, kind) {
            (Backend::Sqlite, Kind::Int) => format!("CAST({col} AS INTEGER)"),
            (Backend::Sqlite, Kind::Text) => format!("CAST({col} AS TEXT)"),
            (Backend::Postgres, Kind::Int) => format!("CAST({col} AS BIGINT)"),
            (Backend::Postgres, Kind::Text) => format!("CAST({col} AS TEXT)"),
            (Backend::Mysql, Kind::Int) => format!("CAST({col} AS SIGNED)"),
            (Backend::Mysql, Kind::Text) => format!("CAST({col} AS CHAR)"),
        }
    }

    fn placeholder(self, n: usize) -> String {
        match self {
            Backend::Postgres => format!("${n}"),
            Backend::Sqlite => format!("?{n}"),
            Backend::Mysql => "?".to_string(),
        }
    }
}

/// The queries for one table, built once from the columns it has.
#[derive(Debug, Clone)]
struct Queries {
    columns: Vec<(&'static str, Kind)>,
    fetch: String,
    fetch_range: String,
    max_id: String,
    first_since: String,
}

impl Queries {
    fn new(backend: Backend, table: &str, present: &[String]) -> Result<Queries, DbError> {
        let columns: Vec<(&'static str, Kind)> = COLUMNS
            .iter()
            .copied()
            .filter(|(name, _)| present.iter().any(|p| p.eq_ignore_ascii_case(name)))
            .collect();
        for required in ["id", "created_at", "type", "model_name"] {
            if !columns.iter().any(|(n, _)| *n == required) {
                return Err(DbError(format!(
                    "table {table} has no column {required}: is this a New API / One API logs table? (columns: {})",
                    present.join(", ")
                )));
            }
        }
        let t = backend.quote(table);
        let id = backend.quote("id");
        let select = columns
            .iter()
            .map(|(name, kind)| backend.cast(name, *kind))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Queries {
            fetch: format!(
                "SELECT {select} FROM {t} WHERE {id} > {} ORDER BY {id} LIMIT {}",
                backend.placeholder(1),
                backend.placeholder(2)
            ),
            fetch_range: format!(
                "SELECT {select} FROM {t} WHERE {id} >= {} AND {id} <= {} ORDER BY {id}",
                backend.placeholder(1),
                backend.placeholder(2)
            ),
            max_id: format!("SELECT CAST(MAX({id}) AS {}) FROM {t}", int_type(backend)),
            first_since: format!(
                "SELECT CAST(MIN({id}) AS {}) FROM {t} WHERE {} >= {}",
                int_type(backend),
                backend.quote("created_at"),
                backend.placeholder(1)
            ),
            columns,
        })
    }
}

fn int_type(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INTEGER",
        Backend::Postgres => "BIGINT",
        Backend::Mysql => "SIGNED",
    }
}

/// One column value, as any backend reads it (see `Kind`).
enum Cell {
    Int(i64),
    Text(String),
}

/// Build a `logs` row from its columns; `get(i, kind)` reads column `i`.
fn log_row<E>(
    columns: &[(&'static str, Kind)],
    mut get: impl FnMut(usize, Kind) -> Result<Option<Cell>, E>,
) -> Result<LogRow<'static>, E> {
    let mut row = LogRow::default();
    for (i, (name, kind)) in columns.iter().enumerate() {
        let Some(cell) = get(i, *kind)? else { continue };
        match (*name, cell) {
            ("id", Cell::Int(v)) => row.id = v,
            ("created_at", Cell::Int(v)) => row.created_at = v,
            ("type", Cell::Int(v)) => row.kind = v,
            ("quota", Cell::Int(v)) => row.quota = Some(v),
            ("prompt_tokens", Cell::Int(v)) => row.prompt_tokens = Some(v),
            ("completion_tokens", Cell::Int(v)) => row.completion_tokens = Some(v),
            ("use_time", Cell::Int(v)) => row.use_time = Some(v as f64),
            ("elapsed_time", Cell::Int(v)) => row.elapsed_time = Some(v as f64),
            ("channel_id", Cell::Int(v)) => row.channel = Some(v),
            ("username", Cell::Text(t)) => row.username = Some(Cow::Owned(t)),
            ("token_name", Cell::Text(t)) => row.token_name = Some(Cow::Owned(t)),
            ("model_name", Cell::Text(t)) => row.model_name = Some(Cow::Owned(t)),
            ("group", Cell::Text(t)) => row.group = Some(Cow::Owned(t)),
            ("other", Cell::Text(t)) => row.other = Some(Cow::Owned(t)),
            _ => {}
        }
    }
    Ok(row)
}

/// One connection to a gateway database, read-only.
trait LogReader: Send {
    /// Highest id in the table (`None` when empty).
    fn max_id(&mut self) -> Result<Option<i64>, DbError>;
    /// Lowest id created at or after `created_at` (unix seconds).
    fn first_id_since(&mut self, created_at: i64) -> Result<Option<i64>, DbError>;
    /// Rows with id above `after`, in id order, at most `limit`.
    fn fetch(&mut self, after: i64, limit: u32) -> Result<Vec<LogRow<'static>>, DbError>;
    /// Rows with `from <= id <= to`, in id order.
    fn fetch_range(&mut self, from: i64, to: i64) -> Result<Vec<LogRow<'static>>, DbError>;
}

fn connect(spec: &DbSpec) -> Result<Box<dyn LogReader>, DbError> {
    match Backend::of(&spec.url) {
        Some(Backend::Sqlite) => Ok(Box::new(sqlite::Reader::open(spec)?)),
        Some(Backend::Postgres) => Ok(Box::new(postgres::Reader::open(spec)?)),
        Some(Backend::Mysql) => Ok(Box::new(mysql::Reader::open(spec)?)),
        None => Err(DbError(format!(
            "unsupported database URL {}",
            printable_url(&spec.url)
        ))),
    }
}

/// Live state of one source, shown in `/metrics` and `/v1/stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DbHealth {
    /// The source's name, credentials removed.
    pub source: String,
    /// Highest row id read, as of the last successful poll.
    pub last_id: Option<i64>,
    /// How far the table's highest id was above `last_id` at the last successful poll.
    pub rows_behind: Option<i64>,
    /// Failed polls since the daemon started.
    pub poll_errors: u64,
    /// The latest failure's reason; cleared by the next successful poll.
    pub last_error: Option<String>,
    /// When the latest failure happened, milliseconds since the Unix epoch.
    pub last_error_ms: Option<i64>,
    /// When the last successful poll ended, milliseconds since the Unix epoch.
    pub last_success_ms: Option<i64>,
}

/// Shared registry of database source health.
pub type HealthBoard = Arc<std::sync::Mutex<BTreeMap<String, DbHealth>>>;

/// First wait after a failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// How long a missing id is waited for. Gateways insert each log row in its own
/// transaction, so row N can become visible after row N+1; an id that never appears
/// (a rolled-back insert) is given up after this long.
const GAP_GRACE: Duration = Duration::from_secs(30);
/// Rows created less than this long ago (by the gateway's clock, which may be off
/// from ours) count as live traffic whose missing predecessors may still commit.
const RECENT_ROW: Duration = Duration::from_secs(600);
/// Queries for late rows per poll, at most (one per run of consecutive missing ids).
const MAX_GAP_QUERIES: usize = 16;
/// Jumps in id larger than this (deleted ranges, a reseeded sequence) are not tracked
/// id by id.
const MAX_GAP_IDS: i64 = 10_000;

/// How far the table has been read: the highest id seen, and the ids below it that
/// were missing when it was read (their inserts may still commit).
#[derive(Debug)]
struct Progress {
    high: i64,
    gaps: BTreeMap<i64, Instant>,
}

impl Progress {
    fn new(cursor: i64) -> Progress {
        Progress {
            high: cursor,
            gaps: BTreeMap::new(),
        }
    }

    /// The committed cursor: every id at or below it is stored or given up. A
    /// restart re-reads from here, so a pending gap is never lost.
    fn watermark(&self) -> i64 {
        self.gaps
            .first_key_value()
            .map(|(id, _)| id - 1)
            .unwrap_or(self.high)
    }

    /// Record that row `id` was read; `recent` says whether its missing
    /// predecessors may still commit.
    fn saw(&mut self, id: i64, recent: bool) {
        if recent && id > self.high + 1 && id - self.high - 1 <= MAX_GAP_IDS {
            let now = Instant::now();
            for missing in self.high + 1..id {
                self.gaps.insert(missing, now);
            }
        }
        self.high = self.high.max(id);
    }

    /// Whether `id` was a gap (and is now filled).
    fn filled(&mut self, id: i64) -> bool {
        self.gaps.remove(&id).is_some()
    }

    fn expire(&mut self, now: Instant, grace: Duration) {
        self.gaps
            .retain(|_, seen| now.duration_since(*seen) < grace);
    }

    /// Runs of consecutive missing ids, lowest first, at most `max` of them.
    fn gap_runs(&self, max: usize) -> Vec<(i64, i64)> {
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for &id in self.gaps.keys() {
            let extends = runs.last().is_some_and(|(_, end)| end + 1 == id);
            if extends {
                runs.last_mut().expect("checked above").1 = id;
            } else if runs.len() == max {
                break;
            } else {
                runs.push((id, id));
            }
        }
        runs
    }
}
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Follows one gateway database. Run it on its own thread with `run`.
pub struct Follower {
    spec: DbSpec,
    source: String,
    env: SourceEnv,
    health: HealthBoard,
    /// Set by every successful poll; read and cleared on the next failure.
    polled_ok: std::cell::Cell<bool>,
}

impl Follower {
    /// A follower of `spec` that commits through `writer` and reports into `health`.
    pub fn new(spec: DbSpec, env: SourceEnv, health: HealthBoard) -> Follower {
        let source = spec.name();
        Follower {
            spec,
            source,
            env,
            health,
            polled_ok: std::cell::Cell::new(false),
        }
    }

    /// Follow until `stop` is set. Connection and query errors are counted, logged
    /// without credentials, and retried with exponential backoff from the last
    /// committed cursor.
    pub fn run(self) {
        let mut backoff = INITIAL_BACKOFF;
        while !self.env.stop.is_set() {
            match self.follow() {
                Ok(()) => return,
                Err(e) => {
                    // A source that polled fine since the last failure starts over
                    // with a short wait: one long outage must not slow every later one.
                    if self.polled_ok.replace(false) {
                        backoff = INITIAL_BACKOFF;
                    }
                    self.record_error(&e);
                    tracing::warn!(source = %self.source, cause = %e, retry_in_ms = backoff.as_millis() as u64, "gateway database poll failed");
                    if self.env.stop.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn follow(&self) -> Result<(), FollowError> {
        let mut reader = connect(&self.spec)?;
        let mut progress = Progress::new(self.start_cursor(reader.as_mut())?);
        tracing::info!(source = %self.source, cursor = progress.high, "following gateway database");
        let (format_name, format) = self.spec.flavour.format();
        let mut decoder = Decoder::new(format, self.env.ctx.clone());
        let mut in_flight = self.env.in_flight(&self.source);
        loop {
            if self.env.stop.is_set() {
                return Ok(in_flight.wait()?);
            }
            let polled_at = now_ms();
            let committed = progress.watermark();
            let mut rows = reader.fetch(progress.high, self.spec.batch_rows)?;
            let full = rows.len() as u32 >= self.spec.batch_rows;
            // Only a recent row's missing predecessors can still be in flight; gaps in
            // history (deleted or rolled-back rows) are final.
            let recent_from = now_ms() / 1000 - RECENT_ROW.as_secs() as i64;
            for row in &rows {
                progress.saw(row.id, row.created_at >= recent_from);
            }
            progress.expire(Instant::now(), GAP_GRACE);
            // Look again only at the missing ids, one query per run of consecutive ones.
            for (from, to) in progress.gap_runs(MAX_GAP_QUERIES) {
                let late = reader.fetch_range(from, to)?;
                rows.extend(late.into_iter().filter(|r| progress.filled(r.id)));
            }
            if !rows.is_empty() || progress.watermark() != committed {
                let mut batch = Batch::new(&self.source, format_name);
                let now = now_ms();
                for mut row in rows {
                    let id = row.id;
                    self.name_channel(&mut row);
                    let source = &self.source;
                    add_row(
                        &mut batch,
                        &mut decoder,
                        &row,
                        || format!("{source}@id={id}"),
                        now,
                    );
                }
                batch.db_cursor = Some(DbCursor {
                    source: self.source.clone(),
                    last_id: progress.watermark(),
                });
                batch.fence = self.env.fence.clone();
                in_flight.submit(&self.env.writer, batch)?;
            }
            if full {
                continue;
            }
            in_flight.wait()?;
            // Rows committed before the poll began are in hand (or gaps waited for).
            self.env.clocks.caught_up(&self.source, polled_at);
            let max = reader.max_id()?;
            self.record_success(progress.high, max);
            if self.env.stop.sleep(self.spec.poll) {
                return Ok(());
            }
        }
    }

    /// The committed cursor, or the start policy's (committed at once, so a restart
    /// before the first new row does not skip rows written meanwhile).
    fn start_cursor(&self, reader: &mut dyn LogReader) -> Result<i64, FollowError> {
        if let Some(c) = queries::db_cursor(&self.env.db, &self.source)? {
            return Ok(c);
        }
        let cursor = match self.spec.start {
            DbStart::First => 0,
            DbStart::Newest => reader.max_id()?.unwrap_or(0),
            DbStart::Since(ms) => match reader.first_id_since(ms.div_euclid(1000))? {
                Some(first) => first - 1,
                None => reader.max_id()?.unwrap_or(0),
            },
        };
        let mut batch = Batch::new(&self.source, self.spec.flavour.format().0);
        batch.db_cursor = Some(DbCursor {
            source: self.source.clone(),
            last_id: cursor,
        });
        batch.fence = self.env.fence.clone();
        self.env.writer.submit_blocking(batch)?.wait_blocking()?;
        Ok(cursor)
    }

    fn name_channel(&self, row: &mut LogRow) {
        if row.channel_name.is_none()
            && let Some(name) = row.channel.and_then(|id| self.spec.channels.get(&id))
        {
            row.channel_name = Some(Cow::Owned(name.clone()));
        }
    }

    fn record_success(&self, cursor: i64, max: Option<i64>) {
        self.polled_ok.set(true);
        let behind = max.map(|m| (m - cursor).max(0));
        let labels = SourceOnly {
            source: self.source.clone(),
        };
        self.env
            .metrics
            .db_last_id
            .get_or_create(&labels)
            .set(cursor);
        self.env
            .metrics
            .db_rows_behind
            .get_or_create(&labels)
            .set(behind.unwrap_or(0));
        let now = now_ms();
        self.env
            .metrics
            .db_last_success
            .get_or_create(&labels)
            .set(now / 1000);
        let mut board = self.health.lock().expect("health lock");
        let h = board.entry(self.source.clone()).or_default();
        h.source = self.source.clone();
        h.last_id = Some(cursor);
        h.rows_behind = behind;
        h.last_success_ms = Some(now);
        h.last_error = None;
    }

    fn record_error(&self, e: &FollowError) {
        let labels = SourceOnly {
            source: self.source.clone(),
        };
        self.env.metrics.db_poll_errors.get_or_create(&labels).inc();
        self.env
            .clocks
            .failing(&self.source, now_ms(), &e.to_string());
        let mut board = self.health.lock().expect("health lock");
        let h = board.entry(self.source.clone()).or_default();
        h.source = self.source.clone();
        h.poll_errors += 1;
        h.last_error = Some(e.to_string());
        h.last_error_ms = Some(now_ms());
    }
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_url_has_no_credentials() {
        assert_eq!(
            printable_url(
                "postgres://newapi:s3cret@db.internal:5432/newapi?sslmode=require&password=x"
            ),
            "postgres://newapi@db.internal:5432/newapi"
        );
        assert_eq!(
            printable_url("sqlite:///data/one-api.db"),
            "sqlite:///data/one-api.db"
        );
        assert_eq!(printable_url("mysql://u:p@h/db"), "mysql://u@h/db");
        assert_eq!(
            printable_url("postgres://u:pa/ss?@x@h:5432/db?sslmode=require"),
            "postgres://u@h:5432/db"
        );
    }

    #[test]
    fn driver_errors_lose_the_password() {
        let e = DbError::from_driver("auth failed for s3cret", "postgres://u:s3cret@h/db");
        assert_eq!(e.0, "auth failed for ***");
        let e = DbError::from_driver("bad pa/ss?x", "postgres://u:pa/ss?x@h/db");
        assert_eq!(e.0, "bad ***");
    }

    #[test]
    fn select_lists_only_present_columns_with_dialect_quoting() {
        let present: Vec<String> = ["id", "created_at", "type", "model_name", "group", "quota"]
            .map(String::from)
            .to_vec();
        let q = Queries::new(Backend::Mysql, "logs", &present).unwrap();
        assert!(q.fetch.contains("CAST(`group` AS CHAR)"), "{}", q.fetch);
        assert!(!q.fetch.contains("other"), "{}", q.fetch);
        assert!(
            q.fetch.ends_with("WHERE `id` > ? ORDER BY `id` LIMIT ?"),
            "{}",
            q.fetch
        );
        let q = Queries::new(Backend::Postgres, "logs", &present).unwrap();
        assert!(q.fetch.contains("\"id\" > $1"), "{}", q.fetch);
        let err = Queries::new(Backend::Sqlite, "users", &["id".to_string()]).unwrap_err();
        assert!(err.0.contains("no column created_at"), "{err}");
    }

    #[test]
    fn late_rows_hold_the_watermark_until_they_arrive_or_expire() {
        let mut p = Progress::new(10);
        p.saw(11, true);
        p.saw(14, true); // 12 and 13 not visible yet
        assert_eq!(p.high, 14);
        assert_eq!(p.watermark(), 11);
        p.saw(16, true); // 15 missing as well
        assert_eq!(p.gap_runs(16), vec![(12, 13), (15, 15)]);
        assert_eq!(p.gap_runs(1), vec![(12, 13)]);
        assert!(p.filled(12));
        assert!(!p.filled(12), "a gap fills once");
        assert_eq!(p.watermark(), 12);
        p.expire(Instant::now() + GAP_GRACE, GAP_GRACE);
        assert_eq!(p.watermark(), 16, "13 and 15 never committed: given up");
        p.saw(16 + MAX_GAP_IDS + 5, true);
        assert_eq!(
            p.watermark(),
            16 + MAX_GAP_IDS + 5,
            "huge jumps are not tracked"
        );
        p.saw(16 + MAX_GAP_IDS + 9, false);
        assert!(p.gap_runs(16).is_empty(), "gaps in history are final");
    }

    #[test]
    fn start_parses_policies_and_times() {
        assert_eq!("newest".parse::<DbStart>(), Ok(DbStart::Newest));
        assert_eq!("first".parse::<DbStart>(), Ok(DbStart::First));
        assert_eq!(
            "2026-06-01T00:00:00Z".parse::<DbStart>(),
            Ok(DbStart::Since(1_780_272_000_000))
        );
        assert!("soon".parse::<DbStart>().is_err());
    }

    #[test]
    fn tls_parameters_are_checked_at_start() {
        let spec = |url: &str| DbSpec {
            url: url.into(),
            flavour: Flavour::Newapi,
            table: "logs".into(),
            start: DbStart::Newest,
            poll: Duration::from_secs(2),
            batch_rows: 5000,
            channels: BTreeMap::new(),
        };
        let err = spec("postgres://u:s3cret@h/db?sslmode=verify_full")
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "gateway database URL postgres://u@h/db: sslmode=\"verify_full\" is not one of \
             disable, prefer, require, verify-ca, verify-full"
        );
        assert!(
            spec("mysql://u@h/db?sslmode=verify-ca&sslrootcert=/etc/ca.pem")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn table_names_cannot_inject_sql() {
        let spec = DbSpec {
            url: "sqlite:///x.db".into(),
            flavour: Flavour::Newapi,
            table: "logs; DROP TABLE logs".into(),
            start: DbStart::Newest,
            poll: Duration::from_secs(2),
            batch_rows: 5000,
            channels: BTreeMap::new(),
        };
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("only letters")
        );
    }
}
