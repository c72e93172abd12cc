//! A gateway's PostgreSQL database: one connection (TLS as the URL's `sslmode` says,
//! through rustls), a read-only session, a statement timeout. A lost connection is an
//! error; the follower reconnects.

use crate::adapters::LogRow;
use postgres::Client;

use super::{Backend, Cell, DbError, DbSpec, Kind, LogReader, Queries, log_row};
use crate::dbconn::postgres::{connect, explain};

pub(super) struct Reader {
    client: Client,
    queries: Queries,
    url: String,
}

impl Reader {
    pub(super) fn open(spec: &DbSpec) -> Result<Reader, DbError> {
        let url = spec.url.as_str();
        let mut client = connect(url, &spec.table)?;
        let err = |e: postgres::Error| DbError::from_driver(explain(&e, &spec.table), url);
        client
            .batch_execute(
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; SET statement_timeout = '30s'",
            )
            .map_err(err)?;
        let present: Vec<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_name = $1 AND table_schema = ANY (current_schemas(false))",
                &[&spec.table],
            )
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if present.is_empty() {
            return Err(DbError(format!(
                "no table {} visible to this user in {} (check the database name and GRANT SELECT ON {} TO <user>)",
                spec.table,
                super::printable_url(url),
                spec.table
            )));
        }
        let queries = Queries::new(Backend::Postgres, &spec.table, &present)?;
        Ok(Reader {
            client,
            queries,
            url: spec.url.clone(),
        })
    }

    fn one_id(
        &mut self,
        sql: &str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<i64>, DbError> {
        let row = self.client.query_one(sql, args).map_err(|e| self.err(e))?;
        Ok(row.get::<_, Option<i64>>(0))
    }

    fn err(&self, e: postgres::Error) -> DbError {
        DbError::from_driver(explain(&e, ""), &self.url)
    }
}

impl LogReader for Reader {
    fn max_id(&mut self) -> Result<Option<i64>, DbError> {
        let sql = self.queries.max_id.clone();
        self.one_id(&sql, &[])
    }

    fn first_id_since(&mut self, created_at: i64) -> Result<Option<i64>, DbError> {
        let sql = self.queries.first_since.clone();
        self.one_id(&sql, &[&created_at])
    }

    fn fetch(&mut self, after: i64, limit: u32) -> Result<Vec<LogRow<'static>>, DbError> {
        let sql = self.queries.fetch.clone();
        self.rows(&sql, &[&after, &i64::from(limit)])
    }

    fn fetch_range(&mut self, from: i64, to: i64) -> Result<Vec<LogRow<'static>>, DbError> {
        let sql = self.queries.fetch_range.clone();
        self.rows(&sql, &[&from, &to])
    }
}

impl Reader {
    fn rows(
        &mut self,
        sql: &str,
        args: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<LogRow<'static>>, DbError> {
        let rows = self
            .client
            .query(sql, args)
            .map_err(|e| DbError::from_driver(explain(&e, ""), &self.url))?;
        let columns = &self.queries.columns;
        rows.iter()
            .map(|r| {
                log_row(columns, |i, kind| {
                    Ok::<_, postgres::Error>(match kind {
                        Kind::Int => r.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
                        Kind::Text => r.try_get::<_, Option<String>>(i)?.map(Cell::Text),
                    })
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| DbError::from_driver(explain(&e, ""), &self.url))
    }
}
