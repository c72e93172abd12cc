//! One SQL text for both backends. The stages' small tables (alerts, exceptions, the
//! outbox, the analysis snapshot) are written once against [`Sql`], which SQLite
//! connections and PostgreSQL clients both implement, so a stage does not know which
//! backend it runs on and one test suite covers both. The ingest path is the
//! exception: each backend has its own tuned writer (`Store`, `pg::ingest`).
//!
//! Statements are written in SQLite's numbered form (`?1`, `?2`); PostgreSQL is
//! handed `$1`, `$2`. They keep to what both dialects read alike: `ON CONFLICT ...
//! DO NOTHING / DO UPDATE`, `RETURNING`, `IS [NOT] DISTINCT FROM`, no boolean-valued
//! results (`CASE ... THEN 1 ELSE 0 END`), every integer a 64-bit one, and a
//! parameter tested for NULL is cast (`CAST(?1 AS BIGINT) IS NULL`): PostgreSQL must
//! know its type; an average is cast to `DOUBLE PRECISION` (PostgreSQL's would be
//! NUMERIC).

use std::cell::RefCell;
use std::error::Error as StdError;

use bytes::BytesMut;
use postgres::GenericClient;
use postgres::types::{IsNull, ToSql, Type};

use super::StoreError;
use super::pg::lease::{self, Lease};

/// A statement parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL, whatever the column's type.
    Null,
    /// An integer (also a boolean or a smaller integer, where the column is one).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Real(v) => ValueRef::Real(v),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl ToSql for Value<'_> {
    /// Encoded as the type PostgreSQL inferred for the parameter: an integer bound
    /// to a boolean, a 32-bit integer or a float is converted (out of range fails).
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::BOOL => (v != 0).to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT4 => (v as f32).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// One result row; columns by index from 0.
pub trait Row {
    /// An integer column (a PostgreSQL count or boolean reads as one too).
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    /// A floating-point column (an integer reads as one).
    fn real(&self, i: usize) -> Result<f64, StoreError>;
    /// A nullable floating-point column.
    fn opt_real(&self, i: usize) -> Result<Option<f64>, StoreError>;
    /// A nullable text column.
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    /// A nullable bytes column.
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;

    /// A text column.
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| null_in(i))
    }

    /// A bytes column.
    fn blob(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        self.opt_blob(i)?.ok_or_else(|| null_in(i))
    }
}

fn null_in(i: usize) -> StoreError {
    StoreError::Unreadable(format!("column {i} is NULL where a value was expected"))
}

/// Which backend a connection talks to, for the few statements the dialects cannot
/// share (PostgreSQL's advisory locks, SQLite's file size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A connection, or a transaction on one, of either backend.
pub trait Sql {
    /// The backend this connection talks to.
    fn dialect(&self) -> Dialect;
    /// Run a statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError>;
    /// Run a query, calling `f` on each row in order.
    fn each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// Typed reads on any [`Sql`].
pub trait SqlExt: Sql {
    /// Every row, mapped by `f`.
    fn rows<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&dyn Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.each(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row mapped by `f`, if there is one.
    fn row<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&dyn Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut out = None;
        self.each(sql, params, &mut |r| {
            if out.is_none() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl<S: Sql + ?Sized> SqlExt for S {}

// --- SQLite -----------------------------------------------------------------------

struct LiteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl Row for LiteRow<'_, '_> {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.0.get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.0.get(i)?)
    }
    fn real(&self, i: usize) -> Result<f64, StoreError> {
        Ok(self.0.get(i)?)
    }
    fn opt_real(&self, i: usize) -> Result<Option<f64>, StoreError> {
        Ok(self.0.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.0.get(i)?)
    }
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(i)?)
    }
}

impl Sql for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let n = self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            f(&LiteRow(r))?;
        }
        Ok(())
    }
}

impl Sql for rusqlite::Transaction<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        Sql::execute(&**self, sql, params)
    }

    fn each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        Sql::each(&**self, sql, params, f)
    }
}

// --- PostgreSQL -------------------------------------------------------------------

/// A PostgreSQL client or transaction as an [`Sql`]. The client needs `&mut` for
/// every statement; the cell lends it for one statement at a time.
///
/// A client [`fenced`](Pg::fenced) by a lease writes only as that lease's holder:
/// every write (a lone statement, or a [`Transact::write`]) runs in a transaction
/// that first passes [`lease::check`](super::pg::lease::check), so a replica that
/// lost the lease (paused past its expiry) writes nothing. Reads are not fenced.
pub struct Pg<C> {
    client: RefCell<C>,
    fence: Option<Lease>,
}

impl<C: GenericClient> Pg<C> {
    /// Wrap a client or a transaction.
    pub fn new(client: C) -> Pg<C> {
        Pg {
            client: RefCell::new(client),
            fence: None,
        }
    }

    /// Fence every write with `lease`.
    pub fn fenced(mut self, lease: Lease) -> Pg<C> {
        self.fence = Some(lease);
        self
    }

    /// The client back.
    pub fn into_inner(self) -> C {
        self.client.into_inner()
    }
}

/// `sql` with each `?N` as `$N`. Statements hold no `?` in literals.
fn numbered(sql: &str) -> String {
    sql.replace('?', "$")
}

fn pg_params<'a>(params: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

struct PgRow(postgres::Row);

impl PgRow {
    /// Column `i` as an integer of whatever width PostgreSQL gave it.
    fn any_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        let got = match self.0.columns().get(i).map(|c| c.type_()) {
            Some(&Type::INT4) => self
                .0
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(i64::from)),
            Some(&Type::INT2) => self
                .0
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(i64::from)),
            Some(&Type::BOOL) => self
                .0
                .try_get::<_, Option<bool>>(i)
                .map(|v| v.map(i64::from)),
            _ => self.0.try_get::<_, Option<i64>>(i),
        };
        got.map_err(super::pg::error)
    }
}

impl Row for PgRow {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.any_int(i)?.ok_or_else(|| null_in(i))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.any_int(i)
    }
    fn real(&self, i: usize) -> Result<f64, StoreError> {
        self.opt_real(i)?.ok_or_else(|| null_in(i))
    }
    fn opt_real(&self, i: usize) -> Result<Option<f64>, StoreError> {
        match self.0.columns().get(i).map(|c| c.type_()) {
            Some(&Type::FLOAT4) => self
                .0
                .try_get::<_, Option<f32>>(i)
                .map(|v| v.map(f64::from))
                .map_err(super::pg::error),
            Some(&Type::FLOAT8) => self.0.try_get(i).map_err(super::pg::error),
            _ => Ok(self.any_int(i)?.map(|v| v as f64)),
        }
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.0.try_get(i).map_err(super::pg::error)
    }
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.try_get(i).map_err(super::pg::error)
    }
}

impl<C: GenericClient> Sql for Pg<C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let mut client = self.client.borrow_mut();
        let Some(lease) = &self.fence else {
            return client
                .execute(&numbered(sql), &pg_params(params))
                .map_err(super::pg::error);
        };
        let mut tx = client.transaction().map_err(super::pg::error)?;
        lease::check_now(&mut tx, lease)?;
        let n = tx
            .execute(&numbered(sql), &pg_params(params))
            .map_err(super::pg::error)?;
        tx.commit().map_err(super::pg::error)?;
        Ok(n)
    }

    fn each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Fetched whole before `f` runs, so `f` may use this connection again.
        let rows = self
            .client
            .borrow_mut()
            .query(&numbered(sql), &pg_params(params))
            .map_err(super::pg::error)?;
        for r in rows {
            f(&PgRow(r))?;
        }
        Ok(())
    }
}

// --- Either -----------------------------------------------------------------------

/// A connection of its own to the daemon's database, on either backend: what the
/// stages that write rare, small rows beside the ingest writer hold (the exception
/// registry, the alert stage, the notifier).
pub enum Db {
    /// A SQLite connection (see `store::open_side`).
    Lite(rusqlite::Connection),
    /// A PostgreSQL client (see `store::pg::connect`).
    Pg(Box<Pg<postgres::Client>>),
}

/// A connection that runs a closure in one transaction.
pub trait Transact {
    /// Run `f` in one transaction: committed when it returns `Ok`, rolled back
    /// otherwise. On SQLite it is `BEGIN IMMEDIATE`, which takes the write lock up
    /// front, so a concurrent commit of the writer thread waits in the busy handler
    /// instead of failing.
    fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&dyn Sql) -> Result<T, E>,
    ) -> Result<T, E>;
}

impl Transact for rusqlite::Connection {
    fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&dyn Sql) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(out)
    }
}

impl Transact for Pg<postgres::Client> {
    fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&dyn Sql) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut tx = self
            .client
            .get_mut()
            .transaction()
            .map_err(super::pg::error)?;
        if let Some(lease) = &self.fence {
            lease::check_now(&mut tx, lease)?;
        }
        let tx = Pg::new(tx);
        let out = f(&tx)?;
        tx.into_inner().commit().map_err(super::pg::error)?;
        Ok(out)
    }
}

impl Transact for Db {
    fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&dyn Sql) -> Result<T, E>,
    ) -> Result<T, E> {
        match self {
            Db::Lite(c) => c.write(f),
            Db::Pg(c) => c.write(f),
        }
    }
}

impl Db {
    /// A PostgreSQL client as a `Db`.
    pub fn pg(client: postgres::Client) -> Db {
        Db::Pg(Box::new(Pg::new(client)))
    }

    /// Fence every write with `lease` (see [`Pg`]). SQLite has one writer process and
    /// no leases: a SQLite connection is returned as it is.
    pub fn fenced(self, lease: Lease) -> Db {
        match self {
            Db::Pg(c) => Db::Pg(Box::new(c.fenced(lease))),
            lite => lite,
        }
    }
}

impl Sql for Db {
    fn dialect(&self) -> Dialect {
        match self {
            Db::Lite(_) => Dialect::Sqlite,
            Db::Pg(_) => Dialect::Postgres,
        }
    }

    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        match self {
            Db::Lite(c) => Sql::execute(c, sql, params),
            Db::Pg(c) => c.execute(sql, params),
        }
    }

    fn each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Db::Lite(c) => c.each(sql, params, f),
            Db::Pg(c) => c.each(sql, params, f),
        }
    }
}
