//! Raw event rows, written `ROWS` to a statement.
//!
//! One row per statement spent a third of SQLite's time on the statement itself (step,
//! reset, halt, clearing registers). A full chunk goes in as one plain INSERT: when no
//! row of it is stored already, which is the normal case, that is all. When one is (a
//! resent batch), the INSERT fails on the primary key, SQLite backs out that statement
//! alone (its default ABORT keeps the transaction and the earlier statements), and the
//! chunk is written again row by row with OR IGNORE, which tells the new rows apart.

use std::sync::LazyLock;

use rusqlite::{ErrorCode, Statement, Transaction};

use crate::domain::UsageEvent;

/// Rows per multi-row statement. Besides its fixed cost, a statement that may abort
/// copies every page it is first to touch into SQLite's statement journal (16 KiB a
/// page), and more rows share that copy: 32 rows per statement saved 4% of an import's
/// instructions over one, 128 another 4.5%, 512 only 0.5% more.
pub(super) const ROWS: usize = 256;

const INSERT: &str = "INSERT INTO event_rows (ts_ms, id, labels_id, tenant_id, prompt_tokens, \
    completion_tokens, cached_tokens, cost_usd, list_cost_usd, latency_ms, ttft_ms, received_ms) VALUES ";
/// Columns bound per row. The last column, `received_ms`, is the same for every row of
/// a batch: it is parameter `?1` in every row, bound once per statement.
const COLUMNS: usize = 11;

/// Row `r`'s values: `(?2, ..., ?12, ?1)` for row 0, `(?13, ..., ?23, ?1)` for row 1, ...
fn values(r: usize) -> String {
    format!("({}, ?1)", super::placeholders(2 + r * COLUMNS, COLUMNS))
}

static MANY: LazyLock<String> = LazyLock::new(|| {
    let rows: Vec<String> = (0..ROWS).map(values).collect();
    format!("{INSERT}{}", rows.join(", "))
});

static ONE: LazyLock<String> = LazyLock::new(|| {
    let or_ignore = INSERT.replacen("INSERT", "INSERT OR IGNORE", 1);
    format!("{or_ignore}{}", values(0))
});

/// An event to store, with the ids of its label row and tenant.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    /// Index into the batch's events.
    pub index: u32,
    /// `event_labels` id.
    pub labels_id: i64,
    /// `event_tenants` id.
    pub tenant_id: Option<i64>,
}

/// Store `rows` (of `events`), calling `stored` with the index of each newly stored
/// one, in order. Returns how many were stored already (duplicates).
pub(super) fn insert(
    tx: &Transaction,
    events: &[UsageEvent],
    rows: &[Row],
    now_ms: i64,
    mut stored: impl FnMut(u32),
) -> rusqlite::Result<u64> {
    let mut duplicates = 0;
    // Prepared once per batch: a cached statement's bindings are cleared each time it
    // goes back to the cache, and SQLite then allocates every bound text again.
    let mut many = tx.prepare_cached(&MANY)?;
    let mut one = tx.prepare_cached(&ONE)?;
    many.raw_bind_parameter(1, now_ms)?;
    one.raw_bind_parameter(1, now_ms)?;
    for chunk in rows.chunks(ROWS) {
        if chunk.len() == ROWS {
            for (r, row) in chunk.iter().enumerate() {
                bind(&mut many, 1 + r * COLUMNS, &events[row.index as usize], row)?;
            }
            match many.raw_execute() {
                Ok(_) => {
                    chunk.iter().for_each(|row| stored(row.index));
                    continue;
                }
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {}
                Err(e) => return Err(e),
            }
        }
        for row in chunk {
            bind(&mut one, 1, &events[row.index as usize], row)?;
            if one.raw_execute()? == 1 {
                stored(row.index);
            } else {
                duplicates += 1;
            }
        }
    }
    Ok(duplicates)
}

/// Bind one row's values to parameters `at + 1 ..= at + COLUMNS`, without a params
/// slice: this runs once per event.
fn bind(stmt: &mut Statement, at: usize, e: &UsageEvent, row: &Row) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at + 1, e.ts_ms)?;
    stmt.raw_bind_parameter(at + 2, e.id.as_str())?;
    stmt.raw_bind_parameter(at + 3, row.labels_id)?;
    stmt.raw_bind_parameter(at + 4, row.tenant_id)?;
    stmt.raw_bind_parameter(at + 5, e.prompt_tokens as i64)?;
    stmt.raw_bind_parameter(at + 6, e.completion_tokens as i64)?;
    stmt.raw_bind_parameter(at + 7, e.cached_tokens as i64)?;
    stmt.raw_bind_parameter(at + 8, e.cost_usd)?;
    stmt.raw_bind_parameter(at + 9, e.list_cost_usd)?;
    stmt.raw_bind_parameter(at + 10, e.latency_ms.map(|v| v as i64))?;
    stmt.raw_bind_parameter(at + 11, e.ttft_ms.map(|v| v as i64))
}
