//! driftwarden's own store on PostgreSQL, for several replicas sharing one database
//! (SQLite stays the embedded default for a single sidecar). One connection per
//! stage, as on SQLite; TLS as the gateway sources do it (`sslmode`, `sslrootcert`).
//!
//! The schema is `migrations/postgres/`, numbered as SQLite's `migrations/`: version N
//! holds the same tables on both.

mod dictionary;
pub mod feed;
pub mod ingest;
pub mod lease;
pub mod migrate;
mod partitions;
mod rows;

use postgres::Client;

use super::StoreError;
use crate::dbconn::postgres::connect as connect_postgres;
use crate::dbconn::printable_url;

/// The database URL a `--db` value names: `postgres://...` (or `postgresql://...`)
/// as given, or `env:VAR` read from the environment, so the password stays out of
/// the command line. `None` when the value is not a PostgreSQL URL (a SQLite path).
pub fn url_of(db: &str) -> Result<Option<String>, StoreError> {
    let url = crate::dbconn::url_from(db, "--db").map_err(StoreError::Postgres)?;
    let is_pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if db.starts_with("env:") && !is_pg {
        return Err(StoreError::Postgres(format!(
            "--db is {db}, whose value is not a postgres:// URL"
        )));
    }
    Ok(is_pg.then_some(url))
}

/// Connect to `url` and bring its schema up to `SCHEMA_VERSION` (replicas starting
/// together migrate one after the other).
pub fn open(url: &str) -> Result<Client, StoreError> {
    let mut client = connect(url)?;
    migrate::to_latest(&mut client, &printable_url(url))?;
    Ok(client)
}

/// One more connection on an already migrated database.
pub fn connect(url: &str) -> Result<Client, StoreError> {
    connect_postgres(url, "driftwarden's tables").map_err(|e| StoreError::Postgres(e.0))
}

/// A statement's error with the server's own message (the client's text alone is
/// only its kind, "db error").
pub(crate) fn error(e: postgres::Error) -> StoreError {
    StoreError::Postgres(match e.as_db_error() {
        Some(db) => format!("{e}: {}", db.message()),
        None => e.to_string(),
    })
}
