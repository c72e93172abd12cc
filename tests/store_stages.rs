//! The stages' tables through `store::sql`, the same checks on both backends: a
//! SQLite file and a REAL PostgreSQL server (tests/support/dbservers.rs; without its
//! binaries the PostgreSQL half fails under `CI=true` and says SKIPPED otherwise).
//!
//! Run: `cargo test --release --test store_stages`.

#[path = "support/dbservers.rs"]
mod dbservers;

use std::collections::{BTreeMap, HashMap};

use dbservers::*;
use driftwarden::domain::Tier;
use driftwarden::exceptions::{Policy, Registry};
use driftwarden::store::exceptions::{self, NewException};
use driftwarden::store::snapshot::{self, SnapshotMeta};
use driftwarden::store::sql::{Db, Pg, SqlExt, Transact};
use driftwarden::store::{Store, pg};

const NOW: i64 = 1_764_000_000_000;
const DAY: i64 = 86_400_000;

/// Run `check` on a fresh SQLite store, then on a fresh PostgreSQL one.
fn on_both(test: &str, check: impl Fn(&mut Db, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.db");
    drop(Store::open(&path).unwrap());
    let mut lite = exceptions::open(&path).unwrap();
    check(&mut lite, "sqlite");

    let Some(server) = PgServer::start_for(test) else {
        return;
    };
    let pw = secret("pw");
    server.create_db_and_role("dw", "dw", &pw);
    server
        .admin("dw")
        .batch_execute("GRANT CREATE ON SCHEMA public TO dw")
        .unwrap();
    let client = pg::open(&server.url("dw", &pw, "dw")).unwrap();
    check(&mut Db::Pg(Pg::new(client)), "postgres");
}

fn new(rule: &str, scope: &[(&str, &str)], days: i64) -> NewException {
    NewException {
        rule: rule.into(),
        scope: scope
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        reason: "known: a migration runs tonight".into(),
        owner: "ana".into(),
        ticket: Some("OPS-1".into()),
        expires_ms: NOW + days * DAY,
    }
}

#[test]
fn the_exception_registry_keeps_its_rows_and_audit_alike_on_both_backends() {
    on_both("exception_registry_on_both_backends", |db, backend| {
        let r = Registry::new(Policy {
            max_lifetime_days: 14,
            max_renewals: 1,
            max_active_per_rule: 1,
        });
        let a = r
            .create(db, new("cpr", &[("model", "gpt-4o")], 2), "ana", NOW)
            .unwrap()
            .exception;
        let b = r
            .create(db, new("cpr", &[("route", "*")], 3), "bob", NOW)
            .unwrap()
            .exception;
        assert!(b.id > a.id, "{backend}: ids grow");
        assert_eq!(a.ticket.as_deref(), Some("OPS-1"), "{backend}");
        assert_eq!(a.scope["model"], "gpt-4o", "{backend}");

        r.record_hit(db, a.id, NOW + 9).unwrap();
        r.record_hit(db, a.id, NOW + 5).unwrap();
        let hit = exceptions::get(db, a.id).unwrap().unwrap();
        assert_eq!((hit.hits, hit.last_hit_ms), (2, Some(NOW + 9)), "{backend}");

        let renewed = r.renew(db, a.id, DAY, "ana", NOW + 1).unwrap();
        assert_eq!(renewed.expires_ms, NOW + 3 * DAY, "{backend}");
        let err = r.renew(db, a.id, DAY, "ana", NOW + 2).unwrap_err();
        assert!(err.to_string().contains("renew"), "{backend}: {err}");

        let creep = r
            .creep(
                &*db,
                NOW + 3,
                &HashMap::new(),
                &Tier {
                    name: "ticket".into(),
                    rank: 3,
                    channels: vec![],
                },
            )
            .unwrap();
        assert_eq!(creep.len(), 1, "{backend}: two active on cpr, one allowed");

        r.revoke(db, b.id, "bob", NOW + 4).unwrap();
        assert!(r.revoke(db, b.id, "bob", NOW + 5).is_err(), "{backend}");
        let swept = r.sweep_expired(db, NOW + 3 * DAY).unwrap();
        assert_eq!(swept.len(), 1, "{backend}: a expired, b was revoked");
        assert!(r.sweep_expired(db, NOW + 4 * DAY).unwrap().is_empty());

        let actions = |id| -> Vec<String> {
            r.audit(&*db, id)
                .unwrap()
                .into_iter()
                .map(|e| e.action)
                .collect()
        };
        assert_eq!(
            actions(a.id),
            ["created", "renewed", "expired"],
            "{backend}"
        );
        assert_eq!(actions(b.id), ["created", "revoked"], "{backend}");
        assert!(r.list(&*db, true, NOW + 4 * DAY).unwrap().is_empty());
        assert_eq!(r.list(&*db, false, NOW).unwrap().len(), 2, "{backend}");
    });
}

#[test]
fn a_failed_write_leaves_nothing_on_both_backends() {
    on_both("a_failed_write_leaves_nothing", |db, backend| {
        let out: Result<(), driftwarden::store::StoreError> = db.write(|tx| {
            exceptions::insert(tx, &new("cpr", &[], 1), NOW)?;
            tx.execute("INSERT INTO no_such_table VALUES (1)", &[])?;
            Ok(())
        });
        assert!(out.is_err(), "{backend}");
        let n = db
            .row("SELECT count(*) FROM exceptions", &[], |r| r.int(0))
            .unwrap();
        assert_eq!(n, Some(0), "{backend}: rolled back");
    });
}

#[test]
fn the_analysis_snapshot_is_replaced_and_read_back_on_both_backends() {
    on_both("analysis_snapshot_on_both_backends", |db, backend| {
        assert_eq!(snapshot::read(db).unwrap(), None, "{backend}");
        let mut meta = SnapshotMeta {
            format_version: 3,
            watermark_ms: 600_000,
            written_ms: 5,
            write_ms: 2,
            bytes: 3,
        };
        db.write(|tx| snapshot::write(tx, &meta, b"abc")).unwrap();
        db.write(|tx| snapshot::write_decided(tx, 660_000)).unwrap();
        db.write(|tx| snapshot::write_decided(tx, 720_000)).unwrap();
        assert_eq!(
            snapshot::read_decided(db).unwrap(),
            Some(720_000),
            "{backend}"
        );
        meta.watermark_ms = 1_200_000;
        meta.bytes = 4;
        let bytes = [0u8, 255, 7, 0];
        db.write(|tx| snapshot::write(tx, &meta, &bytes)).unwrap();
        assert_eq!(
            snapshot::read(db).unwrap(),
            Some((meta, bytes.to_vec())),
            "{backend}: replaced, bytes kept exactly"
        );
        assert_eq!(
            snapshot::read_decided(db).unwrap(),
            None,
            "{backend}: a snapshot covers every decision stored before it"
        );
    });
}
