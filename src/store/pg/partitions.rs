//! `event_rows` is partitioned by UTC day of `ts_ms` (migration 0007): one partition
//! `event_rows_YYYYMMDD` a day, created by the first writer to store an event of that
//! day, dropped whole by retention.

use std::collections::HashSet;

use chrono::DateTime;
use postgres::Client;

use super::error;
use crate::store::StoreError;

/// Milliseconds in a UTC day.
const DAY_MS: i64 = 86_400_000;

/// Advisory lock class of partition creation (the two-key form; the day is the second
/// key): two replicas creating one day's partition at once would otherwise both pass
/// `IF NOT EXISTS` and one fail on the catalog's unique index.
const CREATE_LOCK_CLASS: i32 = 0x6477_7064; // "dwpd"

/// Advisory lock of retention: two replicas pruning at once drop each partition once.
pub(super) const PRUNE_LOCK: i64 = 0x6477_5f70_7275_6e65; // "dw_prune"

/// The UTC day (days since the epoch) of `ts_ms`.
pub(super) fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS)
}

/// `event_rows_YYYYMMDD` of `day`. Built from an integer, so safe to splice into DDL
/// (which takes no parameters).
fn name(day: i64) -> Result<String, StoreError> {
    DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| format!("event_rows_{}", d.format("%Y%m%d")))
        .ok_or_else(|| StoreError::Postgres(format!("event time of day {day} is out of range")))
}

/// The day of partition `relname`, if it is one of ours.
fn day_of_name(relname: &str) -> Option<i64> {
    let digits = relname.strip_prefix("event_rows_")?;
    let date = chrono::NaiveDate::parse_from_str(digits, "%Y%m%d").ok()?;
    Some(
        date.signed_duration_since(chrono::NaiveDate::default())
            .num_days(),
    )
}

/// Create the partitions of `days` that `known` does not list yet, each in a short
/// transaction of its own (creating a partition locks the parent table, so not inside
/// a batch's transaction), and add them to `known`.
pub(super) fn ensure(
    client: &mut Client,
    known: &mut HashSet<i64>,
    days: &[i64],
) -> Result<(), StoreError> {
    for &day in days {
        if known.contains(&day) {
            continue;
        }
        let table = name(day)?;
        let lock_day = i32::try_from(day).map_err(|_| {
            StoreError::Postgres(format!("event time of day {day} is out of range"))
        })?;
        let mut tx = client.transaction().map_err(error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&CREATE_LOCK_CLASS, &lock_day],
        )
        .map_err(error)?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} PARTITION OF event_rows FOR VALUES FROM ({}) TO ({})",
            day * DAY_MS,
            (day + 1) * DAY_MS
        ))
        .map_err(error)?;
        tx.commit().map_err(error)?;
        known.insert(day);
    }
    Ok(())
}

/// Inside `tx` (which holds `PRUNE_LOCK`): drop every partition whose whole day is
/// before `cutoff_ms`, and return the days dropped and the rows they held (counted
/// exactly, with `count(*)`, before the drop: a scan of each dropped day, once a day,
/// where the planner's estimate could be off by any amount or unset).
pub(super) fn drop_before(
    tx: &mut postgres::Transaction,
    cutoff_ms: i64,
) -> Result<(Vec<i64>, u64), StoreError> {
    let rows = tx
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'event_rows'::regclass",
            &[],
        )
        .map_err(error)?;
    let mut days: Vec<i64> = rows
        .iter()
        .filter_map(|r| day_of_name(r.get(0)))
        .filter(|day| (day + 1) * DAY_MS <= cutoff_ms)
        .collect();
    days.sort_unstable();
    let mut dropped = 0;
    for &day in &days {
        let table = name(day)?;
        let count: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(error)?
            .get(0);
        tx.batch_execute(&format!("DROP TABLE {table}"))
            .map_err(error)?;
        dropped += count as u64;
    }
    Ok((days, dropped))
}
