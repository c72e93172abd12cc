//! A gateway's SQLite database (New API's and One API's default), opened read-only
//! with a busy timeout so the gateway never sees a lock error because of us.

use std::time::Duration;

use crate::adapters::LogRow;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, params};

use super::{Backend, Cell, DbError, DbSpec, Kind, LogReader, Queries, log_row};

pub(super) struct Reader {
    conn: Connection,
    queries: Queries,
    url: String,
}

impl Reader {
    pub(super) fn open(spec: &DbSpec) -> Result<Reader, DbError> {
        let path = spec.url.trim_start_matches("sqlite://");
        let err = |e: rusqlite::Error| DbError(format!("gateway database {path}: {e}"));
        if !std::path::Path::new(path).exists() {
            return Err(DbError(format!(
                "gateway database {path} does not exist (check --gateway-db; sqlite:///absolute/path has three slashes)"
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(err)?;
        let present: Vec<String> = stmt
            .query_map(params![spec.table], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        drop(stmt);
        if present.is_empty() {
            return Err(DbError(format!(
                "gateway database {path} has no table {}",
                spec.table
            )));
        }
        let queries = Queries::new(Backend::Sqlite, &spec.table, &present)?;
        Ok(Reader {
            conn,
            queries,
            url: spec.url.clone(),
        })
    }

    fn one_id(&self, sql: &str, args: impl rusqlite::Params) -> Result<Option<i64>, DbError> {
        self.conn
            .query_row(sql, args, |r| r.get::<_, Option<i64>>(0))
            .map_err(|e| DbError::from_driver(e, &self.url))
    }
}

impl LogReader for Reader {
    fn max_id(&mut self) -> Result<Option<i64>, DbError> {
        self.one_id(&self.queries.max_id, [])
    }

    fn first_id_since(&mut self, created_at: i64) -> Result<Option<i64>, DbError> {
        self.one_id(&self.queries.first_since, params![created_at])
    }

    fn fetch(&mut self, after: i64, limit: u32) -> Result<Vec<LogRow<'static>>, DbError> {
        self.rows(&self.queries.fetch, params![after, limit])
    }

    fn fetch_range(&mut self, from: i64, to: i64) -> Result<Vec<LogRow<'static>>, DbError> {
        self.rows(&self.queries.fetch_range, params![from, to])
    }
}

impl Reader {
    fn rows(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<LogRow<'static>>, DbError> {
        let err = |e: rusqlite::Error| DbError::from_driver(e, &self.url);
        let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
        let columns = &self.queries.columns;
        let rows = stmt
            .query_map(args, |r| {
                log_row(columns, |i, kind| {
                    // Read text lossily: one row with invalid UTF-8 must not stall the source.
                    Ok(match (kind, r.get_ref(i)?) {
                        (_, ValueRef::Null) => None,
                        (Kind::Int, v) => Some(Cell::Int(v.as_i64()?)),
                        (Kind::Text, ValueRef::Text(t)) => {
                            Some(Cell::Text(String::from_utf8_lossy(t).into_owned()))
                        }
                        (Kind::Text, v) => Some(Cell::Text(format!("{v:?}"))),
                    })
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }
}
