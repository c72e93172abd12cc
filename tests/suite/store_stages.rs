//! The stages' tables through `store::sql`, the same checks on both backends: a
//! SQLite file and a REAL PostgreSQL server (tests/suite/support/dbservers.rs; without its
//! binaries the PostgreSQL half fails under `CI=true` and says SKIPPED otherwise).
//!
//! Run: `cargo test --release --test suite store_stages::`.

use crate::support::dbservers;

use std::collections::{BTreeMap, HashMap};

use dbservers::*;
use driftwarden::domain::{Alert, AlertEvent, ChangeEvent, ChangeKind, Kind, Lane, Tier};
use driftwarden::exceptions::{Policy, Registry};
use driftwarden::store::alerts::{self, AlertFilter};
use driftwarden::store::exceptions::{self, NewException};
use driftwarden::store::snapshot::{self, SnapshotMeta};
use driftwarden::store::sql::{Db, SqlExt, Transact};
use driftwarden::store::{Store, pg};

const NOW: i64 = 1_764_000_000_000;
const DAY: i64 = 86_400_000;

/// Run `check` on a fresh SQLite store, then on a fresh PostgreSQL one.
fn on_both(test: &str, check: impl Fn(&mut Db, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw.db");
    drop(Store::open(&path).unwrap());
    let mut lite = exceptions::open(&path.as_path().into()).unwrap();
    check(&mut lite, "sqlite");

    let Some(server) = PgServer::start_for(test) else {
        return;
    };
    let pw = server.create_store_db("dw", "dw");
    let client = pg::open(&server.url("dw", &pw, "dw")).unwrap();
    check(&mut Db::pg(client), "postgres");
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

fn line(rule: &str, scope: &[(&str, &str)], at_ms: i64, rank: u8) -> Alert {
    Alert {
        event: AlertEvent::Firing,
        members: Vec::new(),
        reopens: 0,
        incident: None,
        rule: rule.into(),
        lane: Lane::Cost,
        kind: Kind::CostDrift,
        scope: scope
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        at_ms,
        tier: if rank == 1 { "page" } else { "ticket" }.into(),
        tier_rank: rank,
        summary: format!("{rule} moved"),
        evidence: serde_json::json!({"z": 7.5, "observed": [1, 2]}),
    }
}

#[test]
fn alert_rows_transitions_and_changes_read_back_alike_on_both_backends() {
    on_both("alert_rows_on_both_backends", |db, backend| {
        assert_eq!(alerts::last_ids(db).unwrap(), (0, 0), "{backend}");
        let a = line("cpr", &[("model", "gpt-4o")], NOW, 1);
        let b = line("err", &[], NOW + 60_000, 3);
        db.write(|tx| {
            alerts::insert(tx, 1, &a, "firing", NOW - 60_000)?;
            alerts::transition(tx, 1, 1, &a, "firing", None)?;
            alerts::set_incident(tx, 1, 1, 0)?;
            alerts::insert(tx, 2, &b, "pending", NOW)?;
            alerts::add_pending(tx, 1, "slack", "page")?;
            alerts::add_pending(tx, 1, "slack", "page")?;
            alerts::add_pending(tx, 1, "email", "page")
        })
        .unwrap();
        assert_eq!(alerts::last_ids(db).unwrap(), (2, 1), "{backend}");
        let pending = alerts::pending_lines(db).unwrap();
        let channels: Vec<_> = pending.iter().map(|p| p.channel.as_str()).collect();
        assert_eq!(
            channels,
            ["email", "slack"],
            "{backend}: one row per channel"
        );
        assert_eq!(pending[0].line, a, "{backend}: the line reads back whole");
        db.write(|tx| alerts::clear_pending(tx, &[1], "slack"))
            .unwrap();
        assert_eq!(alerts::pending_lines(db).unwrap().len(), 1, "{backend}");

        let open = alerts::open_alerts(db).unwrap();
        assert_eq!(open.len(), 2, "{backend}");
        assert!(open[0].firing && !open[1].firing, "{backend}");
        assert_eq!(open[0].incident_id, Some(1), "{backend}");
        assert_eq!(open[0].scope["model"], "gpt-4o", "{backend}");

        let mut resolved = a.clone();
        resolved.at_ms = NOW + 120_000;
        db.write(|tx| {
            alerts::update(tx, 1, &resolved, "resolved", Some(9))?;
            alerts::transition(tx, 2, 1, &resolved, "resolved", Some(9))?;
            alerts::update(tx, 2, &b, "firing", None)
        })
        .unwrap();
        let (last, at) = alerts::last_transition(db, 1, "resolved").unwrap().unwrap();
        assert_eq!((last, at), (resolved, NOW + 120_000), "{backend}");
        assert_eq!(alerts::open_alerts(db).unwrap().len(), 1, "{backend}");

        let share = alerts::suppressed_share(db, NOW - DAY).unwrap();
        let share: BTreeMap<_, _> = share.into_iter().collect();
        assert_eq!(share["cpr"], 1.0, "{backend}");
        assert_eq!(share["err"], 0.0, "{backend}");

        let all = AlertFilter {
            limit: 10,
            ..AlertFilter::default()
        };
        let rows = alerts::list(db, &all).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            [2, 1],
            "{backend}"
        );
        assert_eq!(rows[1].tier_rank, Some(1), "{backend}");
        assert_eq!(rows[1].evidence["z"], 7.5, "{backend}");
        assert!(rows[1].resolved_at.is_some() && rows[0].fired_at.is_some());
        for (filter, want) in [
            (
                AlertFilter {
                    suppressed: Some(true),
                    ..all.clone()
                },
                vec![1],
            ),
            (
                AlertFilter {
                    state: Some("firing".into()),
                    ..all.clone()
                },
                vec![2],
            ),
            (
                AlertFilter {
                    since_ms: Some(NOW - 1),
                    tier: Some("ticket".into()),
                    ..all.clone()
                },
                vec![2],
            ),
            (
                AlertFilter {
                    rule: Some("nope".into()),
                    ..all.clone()
                },
                vec![],
            ),
        ] {
            let ids: Vec<i64> = alerts::list(db, &filter)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(ids, want, "{backend}: {filter:?}");
        }

        let change = ChangeEvent {
            kind: ChangeKind::ModelBump,
            ts_ms: NOW,
            scope: [("model".to_string(), "gpt-4o".to_string())].into(),
            note: "gpt-4o now resolves to gpt-4o-2024-11-20".into(),
            origin: "detected".into(),
        };
        db.write(|tx| {
            alerts::insert_change(tx, &change, NOW)?;
            alerts::insert_change(tx, &change, NOW + 1)?;
            alerts::set_impact(tx, &change, &serde_json::json!({"cost": "+45%"}))
        })
        .unwrap();
        let stored = db
            .rows("SELECT impact FROM change_events", &[], |r| r.text(0))
            .unwrap();
        assert_eq!(stored, [r#"{"cost":"+45%"}"#], "{backend}: stored once");
    });
}
