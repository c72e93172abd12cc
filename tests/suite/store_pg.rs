//! driftwarden's own store on a REAL PostgreSQL server: the schema migrations.
//!
//! Each test starts a private server (tests/suite/support/dbservers.rs). Without the server
//! binaries a test fails under `CI=true` and says SKIPPED otherwise.
//!
//! Run: `cargo test --release --test suite store_pg::`.

use crate::support::dbservers;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use dbservers::*;
use driftwarden::store::{SCHEMA_VERSION, Store, pg};

/// A server with database `dw` owned by nobody but the superuser, and a login role
/// `dw` allowed to connect and to create tables in its public schema (the grants a
/// store needs to migrate itself). Returns the server and the role's URL.
fn server(test: &str) -> Option<(PgServer, String)> {
    let pg = PgServer::start_for(test)?;
    let pw = pg.create_store_db("dw", "dw");
    let url = pg.url("dw", &pw, "dw");
    Some((pg, url))
}

/// Table (or view) name to its columns, in order, each with its type as one word.
type Schema = BTreeMap<String, Vec<(String, String)>>;

fn sqlite_schema(path: &std::path::Path) -> Schema {
    let conn = rusqlite::Connection::open(path).unwrap();
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
             AND name NOT LIKE 'sqlite_%'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|t| {
            let cols = conn
                .prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
                .unwrap()
                .query_map([&t], |r| {
                    let ty: String = r.get(1)?;
                    let word = match ty.as_str() {
                        "INTEGER" => "integer",
                        "REAL" => "real",
                        "TEXT" => "text",
                        "BLOB" => "blob",
                        other => panic!("unexpected SQLite type {other} in {t}"),
                    };
                    Ok((r.get(0)?, word.to_string()))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (t, cols)
        })
        .collect()
}

fn pg_schema(client: &mut postgres::Client) -> Schema {
    let mut schema = Schema::new();
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> 'driftwarden_schema' \
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .unwrap();
    for r in rows {
        let (table, col, ty): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let word = match ty.as_str() {
            "bigint" => "integer",
            "double precision" => "real",
            "text" => "text",
            "bytea" => "blob",
            other => panic!("unexpected PostgreSQL type {other} in {table}.{col}"),
        };
        schema
            .entry(table)
            .or_default()
            .push((col, word.to_string()));
    }
    schema
}

#[test]
fn postgres_holds_the_same_tables_and_columns_as_sqlite() {
    let Some((_pg, url)) = server("postgres_holds_the_same_tables_and_columns_as_sqlite") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.db");
    drop(Store::open(&path).unwrap());
    let mut lite = sqlite_schema(&path);
    let mut client = pg::open(&url).unwrap();
    let mut post = pg_schema(&mut client);

    // The one planned difference: each replica tails its own node's files.
    let checkpoints = post.get_mut("tail_checkpoints").unwrap();
    assert_eq!(checkpoints[0], ("node".to_string(), "text".to_string()));
    checkpoints.remove(0);
    // SQLite keeps its migration bookkeeping elsewhere (user_version); nothing else differs.
    lite.remove("rusqlite_migrations");
    assert_eq!(
        lite.keys().collect::<Vec<_>>(),
        post.keys().collect::<Vec<_>>(),
        "the same tables and views"
    );
    for (table, cols) in &lite {
        assert_eq!(cols, &post[table], "columns of {table}");
    }
    assert!(lite.contains_key("leases") && lite.contains_key("event_rows"));
}

#[test]
fn event_rows_are_partitioned_by_day_and_the_events_view_reads_them() {
    let Some((_pg, url)) = server("event_rows_are_partitioned_by_day") else {
        return;
    };
    let mut client = pg::open(&url).unwrap();
    let strategy: String = client
        .query_one(
            "SELECT partstrat::text FROM pg_partitioned_table \
             WHERE partrelid = 'event_rows'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(strategy, "r", "range partitions");
    // Without a partition for its day a row has nowhere to go: the writer makes them.
    let err = client
        .execute(
            "INSERT INTO event_rows (ts_ms, id, labels_id, prompt_tokens, completion_tokens, \
             cached_tokens, received_ms) VALUES (0, 'a', 1, 1, 1, 0, 0)",
            &[],
        )
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("no partition")),
        "{err:?}"
    );
}

#[test]
fn replicas_starting_together_migrate_once() {
    let Some((_pg, url)) = server("replicas_starting_together_migrate_once") else {
        return;
    };
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                pg::open(&url).map(drop)
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().expect("every replica opens the store");
    }
    let mut client = pg::connect(&url).unwrap();
    let version: i64 = client
        .query_one("SELECT version FROM driftwarden_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let leases: i64 = client
        .query_one("SELECT count(*) FROM leases", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        leases, 0,
        "the last migration ran once and its tables are usable"
    );
}

#[test]
fn a_database_from_a_newer_driftwarden_is_refused() {
    let Some((_pg, url)) = server("a_database_from_a_newer_driftwarden_is_refused") else {
        return;
    };
    let mut client = pg::open(&url).unwrap();
    client
        .execute("UPDATE driftwarden_schema SET version = version + 1", &[])
        .unwrap();
    let err = pg::open(&url).err().expect("must refuse").to_string();
    assert!(err.contains("newer than this driftwarden"), "{err}");
    assert!(
        !err.contains(url.split(['@', ':']).nth(2).unwrap()),
        "no password: {err}"
    );
}

#[test]
fn a_role_that_cannot_create_tables_is_told_what_to_grant() {
    let Some(pg) = PgServer::start_for("a_role_that_cannot_create_tables") else {
        return;
    };
    let pw = secret("pw");
    pg.create_db_and_role("dw", "dw_nogrant", &pw);
    let url = pg.url("dw_nogrant", &pw, "dw");
    let err = pg::open(&url).err().expect("must fail").to_string();
    assert!(err.contains("GRANT CREATE ON SCHEMA"), "{err}");
    assert!(!err.contains(&pw), "no password: {err}");
}

#[test]
fn the_url_may_come_from_the_environment() {
    assert_eq!(pg::url_of("/var/lib/driftwarden/dw.db").unwrap(), None);
    assert_eq!(
        pg::url_of("postgres://u@h/db").unwrap().as_deref(),
        Some("postgres://u@h/db")
    );
    // The suite's other tests run beside this one and spawn processes: setting a
    // variable here would race with them. Run this test again in a child process of
    // this binary that has it set.
    const VAR: &str = "DW_TEST_STORE_URL";
    if std::env::var_os(VAR).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store_pg::the_url_may_come_from_the_environment"])
            .env(VAR, "postgresql://u:p@h/db")
            .output()
            .expect("running this test in a child process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert_eq!(
        pg::url_of("env:DW_TEST_STORE_URL").unwrap().as_deref(),
        Some("postgresql://u:p@h/db")
    );
    let err = pg::url_of("env:DW_TEST_STORE_URL_UNSET")
        .unwrap_err()
        .to_string();
    assert!(err.contains("DW_TEST_STORE_URL_UNSET is not set"), "{err}");
}

#[test]
fn the_store_connects_over_verified_tls() {
    let Some(pg) = PgServer::start_tls_for("the_store_connects_over_verified_tls") else {
        return;
    };
    let pw = pg.create_store_db("dw", "dw");
    let url = format!(
        "postgres://dw:{pw}@localhost:{}/dw?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        test_pki().ca.display()
    );
    let mut client = pg::open(&url).unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl);
    let wrong = format!(
        "postgres://dw:{pw}@localhost:{}/dw?sslrootcert={}",
        pg.port(),
        test_pki().other_ca.display()
    );
    let err = pg::open(&wrong)
        .err()
        .expect("an unknown CA must fail")
        .to_string();
    assert!(!err.contains(&pw), "no password: {err}");
}
