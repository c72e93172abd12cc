//! Per-minute aggregates per scope, folded in memory for one batch and then
//! upserted, so a batch of thousands of events touches a handful of rows.

use rustc_hash::FxHashMap;

use std::sync::LazyLock;

use rusqlite::{Connection, Statement, Transaction, params};

use crate::domain::UsageEvent;

/// The dimensions aggregated on ingest, besides `global` (which has the empty value).
const DIMS: [&str; 4] = ["model", "route", "tenant", "provider"];

/// One `agg_minute` row's numbers.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Totals {
    pub requests: i64,
    pub errors: i64,
    pub truncated: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_usd: f64,
    pub costed_requests: i64,
    pub list_cost_usd: f64,
    pub latency_ms_sum: i64,
    pub latency_count: i64,
}

impl Totals {
    fn add(&mut self, e: &UsageEvent) {
        self.requests += 1;
        self.errors += e.is_error() as i64;
        self.truncated += e.is_truncated() as i64;
        self.prompt_tokens += e.prompt_tokens as i64;
        self.completion_tokens += e.completion_tokens as i64;
        self.cached_tokens += e.cached_tokens as i64;
        if let Some(c) = e.cost_usd {
            self.cost_usd += c;
            self.costed_requests += 1;
        }
        self.list_cost_usd += e.list_cost_usd.unwrap_or(0.0);
        if let Some(l) = e.latency_ms {
            self.latency_ms_sum += l as i64;
            self.latency_count += 1;
        }
    }
}

/// Aggregate rows per multi-row upsert: one statement per row spent most of an
/// upsert's time on the statement itself (as event rows did, see `events`).
pub(super) const UPSERT_ROWS: usize = 32;

/// Columns of an `agg_minute` row, each bound per row.
const AGG_COLUMNS: usize = 14;

/// Upsert of `rows` aggregate rows: a new row is inserted, an existing one (a minute
/// an earlier batch also counted) adds this batch's totals to its own.
fn upsert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            format!(
                "({})",
                super::placeholders(1 + r * AGG_COLUMNS, AGG_COLUMNS)
            )
        })
        .collect();
    format!(
        "INSERT INTO agg_minute (minute, dim, value, requests, errors, truncated, prompt_tokens, \
         completion_tokens, cached_tokens, cost_usd, costed_requests, list_cost_usd, latency_ms_sum, latency_count) \
         VALUES {} \
         ON CONFLICT (minute, dim, value) DO UPDATE SET \
         requests = requests + excluded.requests, errors = errors + excluded.errors, \
         truncated = truncated + excluded.truncated, prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
         completion_tokens = completion_tokens + excluded.completion_tokens, \
         cached_tokens = cached_tokens + excluded.cached_tokens, cost_usd = cost_usd + excluded.cost_usd, \
         costed_requests = costed_requests + excluded.costed_requests, \
         list_cost_usd = list_cost_usd + excluded.list_cost_usd, \
         latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
         latency_count = latency_count + excluded.latency_count",
        values.join(", ")
    )
}

static UPSERT_MANY: LazyLock<String> = LazyLock::new(|| upsert_sql(UPSERT_ROWS));
static UPSERT_ONE: LazyLock<String> = LazyLock::new(|| upsert_sql(1));

/// Bind one aggregate row to parameters `at + 1 ..= at + AGG_COLUMNS`, positionally:
/// this runs about once per event when every event has its own tenant.
fn bind_row(
    stmt: &mut Statement,
    at: usize,
    minute: i64,
    dim: &str,
    value: &str,
    t: &Totals,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at + 1, minute)?;
    stmt.raw_bind_parameter(at + 2, dim)?;
    stmt.raw_bind_parameter(at + 3, value)?;
    stmt.raw_bind_parameter(at + 4, t.requests)?;
    stmt.raw_bind_parameter(at + 5, t.errors)?;
    stmt.raw_bind_parameter(at + 6, t.truncated)?;
    stmt.raw_bind_parameter(at + 7, t.prompt_tokens)?;
    stmt.raw_bind_parameter(at + 8, t.completion_tokens)?;
    stmt.raw_bind_parameter(at + 9, t.cached_tokens)?;
    stmt.raw_bind_parameter(at + 10, t.cost_usd)?;
    stmt.raw_bind_parameter(at + 11, t.costed_requests)?;
    stmt.raw_bind_parameter(at + 12, t.list_cost_usd)?;
    stmt.raw_bind_parameter(at + 13, t.latency_ms_sum)?;
    stmt.raw_bind_parameter(at + 14, t.latency_count)
}

/// One batch's aggregates, keyed by (epoch minute, dimension, value id); the dimension
/// indexes `DIMS`, or is `GLOBAL` (value id 0), and the value id indexes
/// `AggValues::names`. Integer keys: this map is hit five times per ingested event, and
/// hashing and comparing label strings there was most of its cost.
#[derive(Debug, Default)]
pub(super) struct MinuteAggregates {
    // FxHash: colliding keys could only slow one batch (at most `batch_records`
    // events), so SipHash's flood resistance is not needed.
    cells: FxHashMap<(i64, u8, u32), Totals>,
}

/// The dimension index of the global cell.
const GLOBAL: u8 = DIMS.len() as u8;

/// The value a dimension's overflow is counted under (as the lanes' scopes do).
const OTHER: &str = "_other";

/// The value id of `OTHER` in every dimension.
const OTHER_ID: u32 = 0;

/// The value ids an event aggregates under, per dimension of `DIMS`.
pub(super) type ValueIds = [Option<u32>; DIMS.len()];

/// The values each dimension keeps its own rows for, at most `cap` per dimension,
/// with the value ids of the label rows and tenants already seen (admission never
/// changes once decided, so each is decided once).
#[derive(Debug)]
pub(super) struct AggValues {
    cap: usize,
    /// Per dimension: admitted value to its id (an index into `names`).
    known: [FxHashMap<Box<str>, u32>; DIMS.len()],
    /// Per dimension: id to value; id 0 is `OTHER`.
    names: [Vec<Box<str>>; DIMS.len()],
    /// `event_labels` id to the value ids of its model, route and provider.
    by_labels: FxHashMap<i64, ValueIds>,
    /// `event_tenants` id to the tenant's value id.
    by_tenant: FxHashMap<i64, u32>,
}

const MODEL: usize = 0;
const ROUTE: usize = 1;
const TENANT: usize = 2;
const PROVIDER: usize = 3;

impl AggValues {
    /// No values admitted yet, `cap` per dimension at most.
    pub(super) fn new(cap: usize) -> AggValues {
        AggValues {
            cap,
            known: Default::default(),
            names: std::array::from_fn(|_| vec![Box::from(OTHER)]),
            by_labels: FxHashMap::default(),
            by_tenant: FxHashMap::default(),
        }
    }

    /// Load the admitted values.
    pub(super) fn load(conn: &Connection, cap: usize) -> rusqlite::Result<AggValues> {
        let mut values = AggValues::new(cap);
        let mut stmt = conn.prepare("SELECT dim, value FROM agg_values")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (dim, value) = row?;
            values.stored(&dim, &value);
        }
        Ok(values)
    }

    /// Take in a row of `agg_values` (admitted by this writer or, on a shared
    /// database, by another one); a value already known is left as it is.
    pub(super) fn stored(&mut self, dim: &str, value: &str) {
        if let Some(d) = DIMS.iter().position(|x| *x == dim)
            && !self.known[d].contains_key(value)
        {
            self.remember(d, value);
        }
    }

    fn remember(&mut self, dim: usize, value: &str) -> u32 {
        let id = self.names[dim].len() as u32;
        self.names[dim].push(value.into());
        self.known[dim].insert(value.into(), id);
        id
    }

    /// The id to aggregate `value` under: its own when admitted (admitting it, after
    /// `record` has stored it, while the dimension is under its cap), else `OTHER_ID`.
    fn admit<E>(
        &mut self,
        dim: usize,
        value: &str,
        record: &mut impl FnMut(&'static str, &str) -> Result<(), E>,
    ) -> Result<u32, E> {
        if let Some(&id) = self.known[dim].get(value) {
            return Ok(id);
        }
        if self.known[dim].len() >= self.cap {
            return Ok(OTHER_ID);
        }
        record(DIMS[dim], value)?;
        Ok(self.remember(dim, value))
    }

    /// The value ids of `e`, stored with labels `labels_id` and tenant `tenant_id`,
    /// recording each newly admitted value in `tx`.
    pub(super) fn ids(
        &mut self,
        tx: &Transaction,
        e: &UsageEvent,
        labels_id: i64,
        tenant_id: Option<i64>,
    ) -> rusqlite::Result<ValueIds> {
        // Prepared only when a value is admitted: this runs once per event.
        self.ids_with(e, labels_id, tenant_id, |dim, value| {
            tx.prepare_cached("INSERT OR IGNORE INTO agg_values (dim, value) VALUES (?1, ?2)")?
                .execute(params![dim, value])
                .map(drop)
        })
    }

    /// The value ids of `e`, stored with labels `labels_id` and tenant `tenant_id`.
    /// A value admitted now is first handed to `record` (dimension, value), which
    /// stores it; when `record` fails, nothing is admitted and the error is returned.
    pub(super) fn ids_with<E>(
        &mut self,
        e: &UsageEvent,
        labels_id: i64,
        tenant_id: Option<i64>,
        mut record: impl FnMut(&'static str, &str) -> Result<(), E>,
    ) -> Result<ValueIds, E> {
        let mut ids = match self.by_labels.get(&labels_id) {
            Some(ids) => *ids,
            None => {
                let mut ids = [None; DIMS.len()];
                ids[MODEL] = Some(self.admit(MODEL, &e.model, &mut record)?);
                for (dim, value) in [(ROUTE, &e.route), (PROVIDER, &e.provider)] {
                    if let Some(v) = value {
                        ids[dim] = Some(self.admit(dim, v, &mut record)?);
                    }
                }
                self.by_labels.insert(labels_id, ids);
                ids
            }
        };
        if let (Some(tid), Some(name)) = (tenant_id, e.tenant.as_deref()) {
            ids[TENANT] = Some(match self.by_tenant.get(&tid) {
                Some(&id) => id,
                None => {
                    let id = self.admit(TENANT, name, &mut record)?;
                    self.by_tenant.insert(tid, id);
                    id
                }
            });
        }
        Ok(ids)
    }

    fn name(&self, dim: u8, id: u32) -> (&'static str, &str) {
        match self.names.get(dim as usize) {
            Some(names) => (DIMS[dim as usize], &names[id as usize]),
            None => ("global", ""),
        }
    }
}

impl MinuteAggregates {
    pub(super) fn add(&mut self, e: &UsageEvent, ids: &ValueIds) {
        let minute = e.ts_ms.div_euclid(60_000);
        self.cells.entry((minute, GLOBAL, 0)).or_default().add(e);
        for (dim, id) in ids.iter().enumerate() {
            if let Some(id) = id {
                self.cells
                    .entry((minute, dim as u8, *id))
                    .or_default()
                    .add(e);
            }
        }
    }

    /// Every cell as an `agg_minute` row (minute, dimension, value, totals), in primary
    /// key order (byte order, as SQLite's BINARY collation and Rust's `str` compare).
    pub(super) fn rows<'a>(
        &'a self,
        values: &'a AggValues,
    ) -> Vec<(i64, &'static str, &'a str, &'a Totals)> {
        let mut rows: Vec<(i64, &str, &str, &Totals)> = self
            .cells
            .iter()
            .map(|(&(minute, dim, id), t)| {
                let (dim, value) = values.name(dim, id);
                (minute, dim, value, t)
            })
            .collect();
        rows.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        rows
    }

    pub(super) fn upsert(&self, tx: &Transaction, values: &AggValues) -> rusqlite::Result<()> {
        // In primary-key order: each upsert then lands next to the previous one in the
        // WITHOUT ROWID tree, so new rows append at its right edge instead of splitting
        // pages at random.
        let rows = self.rows(values);
        // Prepared once per batch, as events::insert does.
        let mut many = tx.prepare_cached(&UPSERT_MANY)?;
        let mut one = tx.prepare_cached(&UPSERT_ONE)?;
        for chunk in rows.chunks(UPSERT_ROWS) {
            // The last, partial chunk goes row by row.
            let (stmt, per) = if chunk.len() == UPSERT_ROWS {
                (&mut many, UPSERT_ROWS)
            } else {
                (&mut one, 1)
            };
            for group in chunk.chunks(per) {
                for (r, &(minute, dim, value, t)) in group.iter().enumerate() {
                    bind_row(stmt, r * AGG_COLUMNS, minute, dim, value, t)?;
                }
                stmt.raw_execute()?;
            }
        }
        Ok(())
    }
}
