//! Where the daemon's own store lives: a SQLite file (the embedded default, one
//! sidecar) or a PostgreSQL database that several replicas share. Every stage is
//! handed a `Location` and opens its own connection through it, so none of them
//! needs to know which backend it runs on.

use std::fmt;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::sql::Db;
use crate::dbconn::printable_url;
use crate::domain::{ExposeSecret, Secret};

/// The daemon's database, as `--db` named it.
#[derive(Clone)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://...`, or `env:VAR` naming one).
    Postgres(PgUrl),
}

/// A PostgreSQL URL with its password kept secret; `Display` prints it without.
#[derive(Clone)]
pub struct PgUrl {
    url: Secret,
    printable: String,
}

impl PgUrl {
    /// The URL to connect with (password included): hand it to the driver only.
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }
}

impl Location {
    /// Read a `--db` value: `postgres://...`, `postgresql://...` or `env:VAR` is a
    /// PostgreSQL database; anything else a SQLite file path.
    pub fn parse(value: &str) -> Result<Location, StoreError> {
        Ok(match super::pg::url_of(value)? {
            Some(url) => Location::Postgres(PgUrl {
                printable: printable_url(&url),
                url: url.into(),
            }),
            None => Location::Sqlite(PathBuf::from(value)),
        })
    }

    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// The SQLite file, or an error naming `what` for a part that runs on SQLite
    /// only.
    pub fn lite(&self, what: &str) -> Result<&Path, StoreError> {
        self.sqlite_path()
            .ok_or_else(|| StoreError::Postgres(format!("{what} does not run on PostgreSQL yet")))
    }

    /// Whether the store already exists (a PostgreSQL database is assumed to).
    pub fn exists(&self) -> bool {
        self.sqlite_path().is_none_or(Path::exists)
    }

    /// Create the store if needed and bring its schema up to date (what the writer
    /// does when it opens), for a command that reads it before writing.
    pub fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Location::Sqlite(p) => drop(super::Store::open(p)?),
            Location::Postgres(u) => drop(super::pg::open(u.expose())?),
        }
        Ok(())
    }

    /// A read-write connection of its own on the (already migrated) store, for the
    /// stages that write beside the ingest writer.
    pub fn side(&self) -> Result<Db, StoreError> {
        Ok(match self {
            Location::Sqlite(p) => Db::Lite(super::open_side(p)?),
            Location::Postgres(u) => Db::pg(super::pg::connect(u.expose())?),
        })
    }

    /// A connection for reads. On SQLite it is read-only; PostgreSQL's is the same
    /// kind of connection as `side`'s (the role's grants decide).
    pub fn reader(&self) -> Result<Db, StoreError> {
        Ok(match self {
            Location::Sqlite(p) => Db::Lite(super::open_reader(p)?),
            Location::Postgres(u) => Db::pg(super::pg::connect(u.expose())?),
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(u) => f.write_str(&u.printable),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::Sqlite(p)
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Location {
        Location::Sqlite(p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_sqlite_and_a_url_is_postgres_without_its_password() {
        let l = Location::parse("data/driftwarden.db").unwrap();
        assert_eq!(l.sqlite_path(), Some(Path::new("data/driftwarden.db")));
        let l = Location::parse("postgres://dw:hunter2@db.internal/dw").unwrap();
        assert!(l.sqlite_path().is_none());
        let shown = format!("{l} {l:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
        match l {
            Location::Postgres(u) => assert!(u.expose().contains("hunter2")),
            Location::Sqlite(_) => unreachable!(),
        }
    }
}
