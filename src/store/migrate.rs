//! Schema migrations: the numbered SQL files in `migrations/`, applied in order at
//! start. The applied version is recorded in SQLite's `user_version`.

use std::path::Path;

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::StoreError;

/// Every migration, in order. Append only: never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_gateway_db_cursors.sql"),
    include_str!("../../migrations/0003_change_events.sql"),
    include_str!("../../migrations/0004_alerts.sql"),
    include_str!("../../migrations/0005_exceptions.sql"),
    include_str!("../../migrations/0006_outbox.sql"),
    include_str!("../../migrations/0007_compact_events.sql"),
    include_str!("../../migrations/0008_agg_values.sql"),
    include_str!("../../migrations/0009_notify_pending.sql"),
    include_str!("../../migrations/0010_incidents.sql"),
    include_str!("../../migrations/0011_analysis_snapshot.sql"),
    include_str!("../../migrations/0012_replicas.sql"),
    include_str!("../../migrations/0013_feed_index.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the database up to `SCHEMA_VERSION`, refusing one written by a newer version.
pub(super) fn to_latest(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
    migrations
        .to_latest(conn)
        .map_err(|e| StoreError::Migrate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    #[test]
    fn migrations_are_valid() {
        Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
            .validate()
            .unwrap();
    }

    #[test]
    fn database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(&path).err().expect("must refuse").to_string();
        assert!(err.contains("newer than this driftwarden"), "{err}");
        assert!(err.contains("run a newer driftwarden"), "{err}");
    }

    #[test]
    fn events_stored_before_0007_read_the_same_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = Connection::open(&path).unwrap();
        Migrations::new(MIGRATIONS[..6].iter().map(|sql| M::up(sql)).collect())
            .to_version(&mut conn, 6)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO sources (id, name) VALUES (1, 'tail:/a'), (2, 'http:events');
             INSERT INTO events VALUES
               (60000, 'a', 'gpt-4o', 'gpt-4o-2024-08-06', 'openai', 'chat', 'team-a', 10, 2, 1,
                0.5, 'gateway', 0.4, 120, 30, 200, 'stop', NULL, 1, 7),
               (60001, 'b', 'gpt-4o', NULL, NULL, NULL, NULL, 3, 4, 0,
                NULL, 'unknown', NULL, NULL, NULL, NULL, NULL, 'timeout', 2, 8),
               (60002, 'c', 'gpt-4o', 'gpt-4o-2024-08-06', 'openai', 'chat', 'team-b', 5, 6, 0,
                0.1, 'gateway', 0.1, 90, NULL, 200, 'stop', NULL, 1, 9);",
        )
        .unwrap();
        let dump = |conn: &Connection| -> Vec<String> {
            let mut stmt = conn
                .prepare("SELECT quote(ts_ms) || quote(id) || quote(model) || quote(resolved_model) || quote(provider) || quote(route) || quote(tenant) || quote(prompt_tokens) || quote(completion_tokens) || quote(cached_tokens) || quote(cost_usd) || quote(cost_source) || quote(list_cost_usd) || quote(latency_ms) || quote(ttft_ms) || quote(status) || quote(finish_reason) || quote(error_type) || quote(source_id) || quote(received_ms) FROM events ORDER BY ts_ms")
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let before = dump(&conn);
        drop(conn);
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        assert_eq!(dump(&conn), before);
        let labels: i64 = conn
            .query_row("SELECT COUNT(*) FROM event_labels", [], |r| r.get(0))
            .unwrap();
        assert_eq!(labels, 2, "rows a and c share their labels");
    }
}
