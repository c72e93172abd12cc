//! Schema migrations on PostgreSQL: `migrations/postgres/*.sql`, applied in order in
//! one transaction under an advisory lock, so replicas that start together migrate
//! one after the other and the second finds the work done. The version is the one
//! row of `driftwarden_schema`.

use postgres::Client;
use postgres::error::SqlState;

use super::super::{SCHEMA_VERSION, StoreError};
use super::error;

/// Every migration, in order, numbered as SQLite's. Append only.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_init.sql"),
    include_str!("../../../migrations/postgres/0002_gateway_db_cursors.sql"),
    include_str!("../../../migrations/postgres/0003_change_events.sql"),
    include_str!("../../../migrations/postgres/0004_alerts.sql"),
    include_str!("../../../migrations/postgres/0005_exceptions.sql"),
    include_str!("../../../migrations/postgres/0006_outbox.sql"),
    include_str!("../../../migrations/postgres/0007_compact_events.sql"),
    include_str!("../../../migrations/postgres/0008_agg_values.sql"),
    include_str!("../../../migrations/postgres/0009_notify_pending.sql"),
    include_str!("../../../migrations/postgres/0010_incidents.sql"),
    include_str!("../../../migrations/postgres/0011_analysis_snapshot.sql"),
    include_str!("../../../migrations/postgres/0012_replicas.sql"),
    include_str!("../../../migrations/postgres/0013_feed_index.sql"),
];

/// Key of the advisory lock held while migrating ("dw-schema" in ASCII).
const LOCK_KEY: i64 = 0x6477_2d73_6368_656d;

/// Bring the database up to `SCHEMA_VERSION`, refusing one written by a newer
/// version. `name` names the database in errors (no password).
pub fn to_latest(client: &mut Client, name: &str) -> Result<(), StoreError> {
    const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);
    let mut tx = client.transaction().map_err(error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .map_err(error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS driftwarden_schema (
             id      BIGINT PRIMARY KEY CHECK (id = 1),
             version BIGINT NOT NULL
         )",
    )
    .map_err(|e| failed("its version table", e))?;
    let found: i64 = tx
        .query_opt("SELECT version FROM driftwarden_schema WHERE id = 1", &[])
        .map_err(error)?
        .map_or(0, |r| r.get(0));
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: name.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)
            .map_err(|e| failed(&format!("migration {}", i + 1), e))?;
    }
    tx.execute(
        "INSERT INTO driftwarden_schema (id, version) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        &[&SCHEMA_VERSION],
    )
    .map_err(error)?;
    tx.commit().map_err(error)
}

/// A migration step's error, with the grant to ask for when the role may not create tables.
fn failed(step: &str, e: postgres::Error) -> StoreError {
    let hint = if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        " (the store creates its own tables: GRANT CREATE ON SCHEMA public TO <user>, \
         or run the first start as the schema's owner)"
    } else {
        ""
    };
    StoreError::Migrate(format!("PostgreSQL {step}: {}{hint}", error(e)))
}
