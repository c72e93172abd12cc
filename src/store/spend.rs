//! Requests and spend per scope over a time window, summed from `agg_minute`: what
//! the daily digest's volume/mix/rate split is computed from.

use rusqlite::{Connection, params};

use super::StoreError;

/// One scope's requests and spend over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeTotal {
    /// `global`, `model`, `route`, `tenant` or `provider`.
    pub dim: String,
    /// The dimension's value; empty for `global`.
    pub value: String,
    /// Requests in the window.
    pub requests: u64,
    /// Spend in USD of the requests whose cost is known.
    pub cost_usd: f64,
}

/// Every value of the dimensions `dims` with traffic in
/// `[since_minute, until_minute)` (epoch minutes), by dimension and value.
pub fn totals(
    conn: &Connection,
    dims: &[&str],
    since_minute: i64,
    until_minute: i64,
) -> Result<Vec<ScopeTotal>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT value, SUM(requests), SUM(cost_usd) FROM agg_minute \
         WHERE dim = ?1 AND minute >= ?2 AND minute < ?3 GROUP BY value ORDER BY value",
    )?;
    let mut out = Vec::new();
    for dim in dims {
        let rows = stmt.query_map(params![dim, since_minute, until_minute], |r| {
            Ok(ScopeTotal {
                dim: dim.to_string(),
                value: r.get(0)?,
                requests: r.get::<_, i64>(1)?.max(0) as u64,
                cost_usd: r.get(2)?,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}
