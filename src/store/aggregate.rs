//! Per-minute aggregates per scope, folded in memory for one batch and then
//! upserted, so a batch of thousands of events touches a handful of rows.

use rustc_hash::{FxHashMap, FxHashSet};

use rusqlite::{Connection, Transaction, params};

use crate::domain::UsageEvent;

/// The dimensions aggregated on ingest, besides `global` (which has the empty value).
const DIMS: [&str; 4] = ["model", "route", "tenant", "provider"];

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    requests: i64,
    errors: i64,
    truncated: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    cost_usd: f64,
    costed_requests: i64,
    list_cost_usd: f64,
    latency_ms_sum: i64,
    latency_count: i64,
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

/// One batch's aggregates, keyed by (epoch minute, dimension, value); the dimension
/// indexes `DIMS`, or is `GLOBAL` (value ""). Values borrow from the batch's events,
/// and one flat map serves the whole batch: with thousands of tenants nearly every
/// event opens a tenant cell, and neither a key allocation nor a small map per minute
/// (growing from empty every time) is then cheap.
#[derive(Debug, Default)]
pub(super) struct MinuteAggregates<'a> {
    // FxHash: hit five times per ingested event. Colliding keys could only slow one
    // batch (at most `batch_records` events), so SipHash's flood resistance is not needed.
    cells: FxHashMap<(i64, u8, &'a str), Totals>,
}

/// The dimension index of the global cell.
const GLOBAL: u8 = DIMS.len() as u8;

/// The value a dimension's overflow is counted under (as the lanes' scopes do).
const OTHER: &str = "_other";

/// The values each dimension keeps its own rows for, at most `cap` per dimension.
#[derive(Debug)]
pub(super) struct AggValues {
    cap: usize,
    known: [FxHashSet<Box<str>>; DIMS.len()],
}

impl AggValues {
    /// Load the admitted values.
    pub(super) fn load(conn: &Connection, cap: usize) -> rusqlite::Result<AggValues> {
        let mut known: [FxHashSet<Box<str>>; DIMS.len()] = Default::default();
        let mut stmt = conn.prepare("SELECT dim, value FROM agg_values")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (dim, value) = row?;
            if let Some(d) = DIMS.iter().position(|x| *x == dim) {
                known[d].insert(value.into());
            }
        }
        Ok(AggValues { cap, known })
    }

    /// The value to aggregate `value` under: itself when admitted (admitting it, and
    /// recording it in `tx`, while the dimension is under its cap), else `_other`.
    fn admit<'a>(
        &mut self,
        tx: &Transaction,
        dim: usize,
        value: &'a str,
    ) -> rusqlite::Result<&'a str> {
        if self.known[dim].contains(value) {
            return Ok(value);
        }
        if self.known[dim].len() >= self.cap {
            return Ok(OTHER);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO agg_values (dim, value) VALUES (?1, ?2)")?
            .execute(params![DIMS[dim], value])?;
        self.known[dim].insert(value.into());
        Ok(value)
    }
}

impl<'a> MinuteAggregates<'a> {
    pub(super) fn add(
        &mut self,
        e: &'a UsageEvent,
        values: &mut AggValues,
        tx: &Transaction,
    ) -> rusqlite::Result<()> {
        let minute = e.ts_ms.div_euclid(60_000);
        self.cells.entry((minute, GLOBAL, "")).or_default().add(e);
        let labels = [
            Some(e.model.as_str()),
            e.route.as_deref(),
            e.tenant.as_deref(),
            e.provider.as_deref(),
        ];
        for (dim, value) in labels.into_iter().enumerate() {
            let Some(v) = value else { continue };
            let v = values.admit(tx, dim, v)?;
            self.cells.entry((minute, dim as u8, v)).or_default().add(e);
        }
        Ok(())
    }

    pub(super) fn upsert(&self, tx: &Transaction) -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO agg_minute (minute, dim, value, requests, errors, truncated, prompt_tokens, \
             completion_tokens, cached_tokens, cost_usd, costed_requests, list_cost_usd, latency_ms_sum, latency_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
             ON CONFLICT (minute, dim, value) DO UPDATE SET \
             requests = requests + excluded.requests, errors = errors + excluded.errors, \
             truncated = truncated + excluded.truncated, prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
             completion_tokens = completion_tokens + excluded.completion_tokens, \
             cached_tokens = cached_tokens + excluded.cached_tokens, cost_usd = cost_usd + excluded.cost_usd, \
             costed_requests = costed_requests + excluded.costed_requests, \
             list_cost_usd = list_cost_usd + excluded.list_cost_usd, \
             latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
             latency_count = latency_count + excluded.latency_count",
        )?;
        let dim_name = |d: u8| DIMS.get(d as usize).copied().unwrap_or("global");
        let mut rows: Vec<(i64, &str, &str, &Totals)> = self
            .cells
            .iter()
            .map(|(&(minute, dim, value), t)| (minute, dim_name(dim), value, t))
            .collect();
        // In primary-key order (SQLite's BINARY collation is byte order, as `str`'s):
        // each upsert then lands next to the previous one in the WITHOUT ROWID tree, so
        // new rows append at its right edge instead of splitting pages at random.
        rows.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        for (minute, dim, value, t) in rows {
            // Positional binds without a params slice: this runs about once per event
            // when every event has its own tenant.
            stmt.raw_bind_parameter(1, minute)?;
            stmt.raw_bind_parameter(2, dim)?;
            stmt.raw_bind_parameter(3, value)?;
            stmt.raw_bind_parameter(4, t.requests)?;
            stmt.raw_bind_parameter(5, t.errors)?;
            stmt.raw_bind_parameter(6, t.truncated)?;
            stmt.raw_bind_parameter(7, t.prompt_tokens)?;
            stmt.raw_bind_parameter(8, t.completion_tokens)?;
            stmt.raw_bind_parameter(9, t.cached_tokens)?;
            stmt.raw_bind_parameter(10, t.cost_usd)?;
            stmt.raw_bind_parameter(11, t.costed_requests)?;
            stmt.raw_bind_parameter(12, t.list_cost_usd)?;
            stmt.raw_bind_parameter(13, t.latency_ms_sum)?;
            stmt.raw_bind_parameter(14, t.latency_count)?;
            stmt.raw_execute()?;
        }
        Ok(())
    }
}
