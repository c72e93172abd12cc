//! The leader's feed: what any replica committed, read back in the order it was
//! received, as the batches the analysis folds. On SQLite the one writer hands its
//! committed batches to the analysis; on PostgreSQL every replica commits, so the
//! leader reads them back from the tables.
//!
//! **Order.** Rows are read by `(received_ms, key)`. `received_ms` is stamped by the
//! committing replica before its transaction commits, so a row can become visible
//! after rows with a larger `received_ms` (a slow commit, another replica's clock a
//! little behind). The feed therefore reads each table twice: forward from where it
//! got to, and, once caught up, the last [`LOOKBACK_MS`] again, feeding what it had
//! not seen (the keys of that window are kept). A row whose commit lags its stamp by
//! more than the lookback is missed; the writer commits within a second or two.
//!
//! **Start.** [`Feed::start`] runs the analysis' resume and reads the keys of the
//! lookback window in one `REPEATABLE READ` snapshot, so each row is either counted
//! by the resume or fed afterwards, never both and never neither.

use std::collections::HashMap;

use super::super::sql::{Db, Row, Sql, SqlExt, Value};
use super::super::writer::Committed;
use super::super::{Batch, Fresh, StoreError};
use crate::domain::{ChangeEvent, ChangeKind, CostSource, EvalScore, UsageEvent};

/// How far back, in received time, a late commit is still picked up.
pub const LOOKBACK_MS: i64 = 10_000;

/// Rows read per table and poll, at most: a backlog arrives in pages.
const PAGE: i64 = 20_000;

/// One table's place in the feed.
#[derive(Default)]
struct Cursor {
    /// The last row read forward: (received_ms, k1, k2).
    after: (i64, i64, String),
    /// Keys read with `received_ms` in the lookback window, and their stamps.
    seen: HashMap<(i64, String), i64>,
}

/// A table as the feed reads it.
struct Table {
    /// `received_ms, k1, k2` (the row's place), then the payload.
    select: &'static str,
    from: &'static str,
    /// `k1, k2` as columns, for the keyset comparison.
    keys: &'static str,
}

const EVENTS: Table = Table {
    select: "SELECT received_ms, ts_ms, id, id, ts_ms, model, resolved_model, provider, route, tenant, \
             prompt_tokens, completion_tokens, cached_tokens, cost_usd, cost_source, list_cost_usd, \
             latency_ms, ttft_ms, status, finish_reason, error_type",
    from: "FROM events",
    keys: "ts_ms, id",
};

const EVALS: Table = Table {
    select: "SELECT received_ms, ts_ms, key, request_id, route, model, evaluator, ts_ms, score, passed",
    from: "FROM eval_scores",
    keys: "ts_ms, key",
};

const CHANGES: Table = Table {
    select: "SELECT received_ms, id, '', kind, ts_ms, scope, note, origin",
    from: "FROM change_events",
    keys: "id, ''",
};

/// The leader's reader of what every replica committed.
pub struct Feed {
    db: Db,
    events: Cursor,
    evals: Cursor,
    changes: Cursor,
}

impl Feed {
    /// Start a feed on `db` (a PostgreSQL connection of its own): run `resume` on it
    /// and note what it covered, in one snapshot (see the module doc). `from_ms` is
    /// the received time from which rows are not yet known to the caller: the
    /// server's clock before the resume.
    pub fn start<T>(
        db: Db,
        from_ms: i64,
        resume: impl FnOnce(&Db) -> Result<T, StoreError>,
    ) -> Result<(Feed, T), StoreError> {
        db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", &[])?;
        let started = (|| -> Result<(Feed, T), StoreError> {
            let resumed = resume(&db)?;
            let mut feed = Feed {
                db,
                events: Cursor::default(),
                evals: Cursor::default(),
                changes: Cursor::default(),
            };
            let floor = from_ms - LOOKBACK_MS;
            for (table, cursor) in [
                (&EVENTS, &mut feed.events),
                (&EVALS, &mut feed.evals),
                (&CHANGES, &mut feed.changes),
            ] {
                cursor.after = (floor, i64::MIN, String::new());
                let keys = feed.db.rows(
                    &format!(
                        "{} {} WHERE received_ms >= ?1 ORDER BY 1, 2, 3",
                        table.select, table.from
                    ),
                    &[floor.into()],
                    key_of,
                )?;
                for (received, k1, k2) in keys {
                    cursor.seen.insert((k1, k2.clone()), received);
                    cursor.after = (received, k1, k2);
                }
            }
            Ok((feed, resumed))
        })();
        // On an error the connection (and its transaction) was dropped with the feed.
        let (feed, resumed) = started?;
        feed.db.execute("COMMIT", &[])?;
        Ok((feed, resumed))
    }

    /// Go on reading on a new connection `db` (after an error), from where it got to.
    pub fn reconnect(&mut self, db: Db) {
        self.db = db;
    }

    /// What was committed since the last poll, as one batch (`None` when nothing was).
    pub fn poll(&mut self) -> Result<Option<Committed>, StoreError> {
        let mut batch = Batch::new("replicas", "store");
        read(&self.db, &EVENTS, &mut self.events, |r| {
            batch.events.push(usage_event(r)?);
            Ok(())
        })?;
        read(&self.db, &EVALS, &mut self.evals, |r| {
            batch.evals.push(eval_score(r)?);
            Ok(())
        })?;
        read(&self.db, &CHANGES, &mut self.changes, |r| {
            batch.changes.push(change_event(r)?);
            Ok(())
        })?;
        if batch.events.is_empty() && batch.evals.is_empty() && batch.changes.is_empty() {
            return Ok(None);
        }
        let all = |n: usize| (0..n as u32).collect();
        let fresh = Fresh {
            events: all(batch.events.len()),
            evals: all(batch.evals.len()),
            changes: all(batch.changes.len()),
        };
        Ok(Some(Committed {
            batch: Box::new(batch),
            fresh,
        }))
    }
}

/// A row's place: `(received_ms, k1, k2)`, its first three columns.
fn key_of(r: &dyn Row) -> Result<(i64, i64, String), StoreError> {
    Ok((r.int(0)?, r.int(1)?, r.text(2)?))
}

/// Read `table` forward from `cursor` (a page), and, when caught up, the lookback
/// window again; call `take` on each row not seen before.
fn read(
    db: &Db,
    table: &Table,
    cursor: &mut Cursor,
    mut take: impl FnMut(&dyn Row) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let (received, k1, k2) = cursor.after.clone();
    let forward = format!(
        "{} {} WHERE received_ms >= ?1 AND (received_ms, {}) > (?1, ?2, ?3) \
         ORDER BY 1, 2, 3 LIMIT ?4",
        table.select, table.from, table.keys
    );
    let mut read = 0;
    db.each(
        &forward,
        &[received.into(), k1.into(), Value::Text(&k2), PAGE.into()],
        &mut |r| {
            read += 1;
            let key = key_of(r)?;
            cursor.after = key.clone();
            if cursor.seen.insert((key.1, key.2), key.0).is_none() {
                take(r)?;
            }
            Ok(())
        },
    )?;
    if read == PAGE {
        return Ok(());
    }
    // Caught up: rows committed late within the window, then forget what left it.
    let floor = cursor.after.0 - LOOKBACK_MS;
    db.each(
        &format!(
            "{} {} WHERE received_ms >= ?1 AND received_ms <= ?2",
            table.select, table.from
        ),
        &[floor.into(), cursor.after.0.into()],
        &mut |r| {
            let key = key_of(r)?;
            if cursor.seen.insert((key.1, key.2), key.0).is_none() {
                take(r)?;
            }
            Ok(())
        },
    )?;
    cursor.seen.retain(|_, received| *received >= floor);
    Ok(())
}

fn usage_event(r: &dyn Row) -> Result<UsageEvent, StoreError> {
    Ok(UsageEvent {
        id: r.text(3)?.into(),
        ts_ms: r.int(4)?,
        model: r.text(5)?.into(),
        resolved_model: r.opt_text(6)?.map(Into::into),
        provider: r.opt_text(7)?.map(Into::into),
        route: r.opt_text(8)?.map(Into::into),
        tenant: r.opt_text(9)?.map(Into::into),
        prompt_tokens: r.int(10)? as u64,
        completion_tokens: r.int(11)? as u64,
        cached_tokens: r.int(12)? as u64,
        cost_usd: r.opt_real(13)?,
        cost_source: match r.text(14)?.as_str() {
            "gateway" => CostSource::Gateway,
            "price_table" => CostSource::PriceTable,
            _ => CostSource::Unknown,
        },
        list_cost_usd: r.opt_real(15)?,
        latency_ms: r.opt_int(16)?.map(|v| v as u64),
        ttft_ms: r.opt_int(17)?.map(|v| v as u64),
        status: r.opt_int(18)?.map(|v| v as u16),
        finish_reason: r.opt_text(19)?.map(Into::into),
        error_type: r.opt_text(20)?.map(Into::into),
    })
}

fn eval_score(r: &dyn Row) -> Result<EvalScore, StoreError> {
    Ok(EvalScore {
        request_id: r.opt_text(3)?,
        route: r.opt_text(4)?,
        model: r.opt_text(5)?,
        evaluator: r.text(6)?,
        ts_ms: r.int(7)?,
        score: r.opt_real(8)?,
        passed: r.opt_int(9)?.map(|v| v != 0),
    })
}

fn change_event(r: &dyn Row) -> Result<ChangeEvent, StoreError> {
    Ok(ChangeEvent {
        kind: match r.text(3)?.as_str() {
            "deploy" => ChangeKind::Deploy,
            "model_bump" => ChangeKind::ModelBump,
            _ => ChangeKind::ConfigChange,
        },
        ts_ms: r.int(4)?,
        scope: serde_json::from_str(&r.text(5)?).unwrap_or_default(),
        note: r.text(6)?,
        origin: r.text(7)?,
    })
}
