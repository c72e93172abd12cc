//! Requests and spend per scope over a time window, summed from `agg_minute`: what
//! the daily digest's volume/mix/rate split is computed from.

use super::StoreError;
use super::sql::{Sql, SqlExt};

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
    conn: &(impl Sql + ?Sized),
    dims: &[&str],
    since_minute: i64,
    until_minute: i64,
) -> Result<Vec<ScopeTotal>, StoreError> {
    let mut out = Vec::new();
    for dim in dims {
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        out.extend(conn.rows(
            "SELECT value, CAST(SUM(requests) AS BIGINT), SUM(cost_usd) FROM agg_minute \
             WHERE dim = ?1 AND minute >= ?2 AND minute < ?3 GROUP BY value ORDER BY value",
            &[(*dim).into(), since_minute.into(), until_minute.into()],
            |r| {
                Ok(ScopeTotal {
                    dim: dim.to_string(),
                    value: r.text(0)?,
                    requests: r.int(1)?.max(0) as u64,
                    cost_usd: r.real(2)?,
                })
            },
        )?);
    }
    Ok(out)
}
