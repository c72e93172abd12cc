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
//! by the resume or fed afterwards, never both and never neither. The lookback never
//! reaches below that window (the cursor's `horizon`): the keys of rows older than it
//! were not noted, since the resume counted every one of them that was visible.
//!
//! **Backlogs.** While a poll reads a full page the feed does not look back; the
//! first poll that catches up looks back from where the last caught-up poll's window
//! began, so a late commit that landed behind the cursor while it paged is fed too.
//! The keys of that stretch are kept until then.
//!
//! **Errors.** A poll reads all three tables before it moves any cursor: a read that
//! fails part-way (the connection lost) leaves the place where it was, and the next
//! poll, on a new connection, reads the same rows again.

use std::collections::HashMap;

use super::super::sql::{Db, Row, Sql, SqlExt, Value};
use super::super::writer::Committed;
use super::super::{Batch, Fresh, StoreError, queries};

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
    /// The received time below which the lookback does not read: the start's window,
    /// then the floor of the last poll that caught up. While the feed pages through a
    /// backlog it does not look back; the first poll that catches up looks back from
    /// here, so a commit that landed behind the cursor meanwhile is still fed.
    horizon: i64,
}

impl Cursor {
    /// Whether the row at `key` was handed over already.
    fn knows(&self, key: &(i64, i64, String)) -> bool {
        self.seen.contains_key(&(key.1, key.2.clone()))
    }

    /// Take in a successful poll's `step`.
    fn apply(&mut self, step: Step) {
        self.after = step.after;
        self.seen.extend(step.taken);
        if step.caught_up {
            let floor = lookback_from(self.after.0, self.horizon);
            self.seen.retain(|_, received| *received >= floor);
            self.horizon = floor;
        }
    }
}

/// What one poll read from a table: applied to its cursor once the whole poll is read.
struct Step {
    after: (i64, i64, String),
    /// The rows handed over, by key, with their stamps.
    taken: HashMap<(i64, String), i64>,
    /// Whether the forward read reached the newest row (the lookback was read too).
    caught_up: bool,
}

/// A table as the feed reads it: `place` (`received_ms, k1, k2`, the row's position in
/// the feed) then `columns` (what `store::queries` maps to the record).
struct Table {
    place: &'static str,
    columns: &'static str,
    from: &'static str,
    /// `k1, k2` as columns, for the keyset comparison.
    keys: &'static str,
}

impl Table {
    /// `SELECT place, columns FROM table`.
    fn select(&self) -> String {
        format!("SELECT {}, {} {}", self.place, self.columns, self.from)
    }
}

/// Where a record's own columns begin, after its place.
const AT: usize = 3;

const EVENTS: Table = Table {
    place: "received_ms, ts_ms, id",
    columns: queries::EVENT_COLUMNS,
    from: "FROM events",
    keys: "ts_ms, id",
};

const EVALS: Table = Table {
    place: "received_ms, ts_ms, key",
    columns: queries::EVAL_COLUMNS,
    from: "FROM eval_scores",
    keys: "ts_ms, key",
};

const CHANGES: Table = Table {
    place: "received_ms, id, ''",
    columns: queries::CHANGE_COLUMNS,
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
                cursor.horizon = floor;
                let keys = feed.db.rows(
                    &format!(
                        "{} WHERE received_ms >= ?1 ORDER BY 1, 2, 3",
                        table.select()
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
        let events = read(&self.db, &EVENTS, &self.events, |r| {
            batch.events.push(queries::usage_event(r, AT)?);
            Ok(())
        })?;
        let evals = read(&self.db, &EVALS, &self.evals, |r| {
            batch.evals.push(queries::eval_score(r, AT)?);
            Ok(())
        })?;
        let changes = read(&self.db, &CHANGES, &self.changes, |r| {
            batch.changes.push(queries::change_event(r, AT)?);
            Ok(())
        })?;
        self.events.apply(events);
        self.evals.apply(evals);
        self.changes.apply(changes);
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

/// Where the next lookback begins once a cursor at `received` caught up: 10 s behind
/// it, never below `horizon`.
fn lookback_from(received: i64, horizon: i64) -> i64 {
    (received - LOOKBACK_MS).max(horizon)
}

/// Read `table` forward from `cursor` (a page), and, when caught up, the lookback
/// window again; call `take` on each row not handed over before. The cursor moves
/// only once the caller applies the returned step.
fn read(
    db: &Db,
    table: &Table,
    cursor: &Cursor,
    mut take: impl FnMut(&dyn Row) -> Result<(), StoreError>,
) -> Result<Step, StoreError> {
    let mut step = Step {
        after: cursor.after.clone(),
        taken: HashMap::new(),
        caught_up: false,
    };
    let mut fresh =
        |r: &dyn Row, key: (i64, i64, String), step: &mut Step| -> Result<(), StoreError> {
            let known = cursor.knows(&key) || step.taken.contains_key(&(key.1, key.2.clone()));
            if !known {
                take(r)?;
                step.taken.insert((key.1, key.2), key.0);
            }
            Ok(())
        };
    let (received, k1, k2) = cursor.after.clone();
    let forward = format!(
        "{} WHERE received_ms >= ?1 AND (received_ms, {}) > (?1, ?2, ?3) \
         ORDER BY 1, 2, 3 LIMIT ?4",
        table.select(),
        table.keys
    );
    let mut read = 0;
    db.each(
        &forward,
        &[received.into(), k1.into(), Value::Text(&k2), PAGE.into()],
        &mut |r| {
            read += 1;
            let key = key_of(r)?;
            step.after = key.clone();
            fresh(r, key, &mut step)
        },
    )?;
    if read == PAGE {
        return Ok(step);
    }
    // Caught up: rows committed late, from the last caught-up poll's floor (never
    // below the start's window) to the cursor.
    step.caught_up = true;
    let floor = cursor.horizon;
    db.each(
        &format!(
            "{} WHERE received_ms >= ?1 AND received_ms <= ?2",
            table.select()
        ),
        &[floor.into(), step.after.0.into()],
        &mut |r| fresh(r, key_of(r)?, &mut step),
    )?;
    Ok(step)
}
