//! The PostgreSQL writer's dictionaries: interned label rows and tenants, and the
//! values admitted per aggregate dimension, shared by every replica of one database.
//!
//! New entries are written in a short transaction of their own, before the batch's
//! transaction: a replica then never waits on another's open batch for a label, and
//! an entry, once committed, is never rolled back, so the ids the writer caches stay
//! valid whatever happens to the batch (an entry whose batch then fails is harmless:
//! a label row no event uses yet, a value admitted as the retried batch admits it).
//! New label rows and tenants go in sorted order, so two replicas inserting the same
//! ones never wait on each other crosswise.

use std::convert::Infallible;

use postgres::{Client, GenericClient, Transaction};

use super::error;
use crate::domain::UsageEvent;
use crate::store::StoreError;
use crate::store::aggregate::{AggValues, ValueIds};
use crate::store::labels::{Interner, Key};

/// Advisory lock taken to admit aggregate values: admissions are serialized across
/// replicas, so each sees the others' and no dimension goes past its cap.
const ADMISSION_LOCK: i64 = 0x6477_6167_5f76_616c; // "dwag_val"

/// Every label row and tenant of the database.
pub(super) fn load_interner(client: &mut Client) -> Result<Interner, StoreError> {
    let mut interner = Interner::empty();
    let rows = client
        .query(
            "SELECT id, model, resolved_model, provider, route, status, finish_reason, \
             error_type, cost_source, source_id FROM event_labels",
            &[],
        )
        .map_err(error)?;
    for r in &rows {
        remember_label_row(&mut interner, r)?;
    }
    let rows = client
        .query("SELECT id, name FROM event_tenants", &[])
        .map_err(error)?;
    for r in &rows {
        interner.remember_tenant(r.get(1), r.get(0));
    }
    Ok(interner)
}

/// Remember a row of `event_labels`: its id, then its nine label columns.
fn remember_label_row(interner: &mut Interner, r: &postgres::Row) -> Result<(), StoreError> {
    let status: Option<i64> = r.get(5);
    let status = status
        .map(u16::try_from)
        .transpose()
        .map_err(|_| StoreError::Postgres(format!("event_labels has status {status:?}")))?;
    let key = Key {
        model: r.get(1),
        resolved_model: r.get(2),
        provider: r.get(3),
        route: r.get(4),
        status,
        finish_reason: r.get(6),
        error_type: r.get(7),
        cost_source: r.get(8),
        source_id: r.get(9),
    };
    interner.remember_label(&key, r.get(0));
    Ok(())
}

/// Every admitted value of the database.
pub(super) fn load_agg_values(client: &mut Client, cap: usize) -> Result<AggValues, StoreError> {
    let mut values = AggValues::new(cap);
    read_agg_values(client, &mut values)?;
    Ok(values)
}

fn read_agg_values(
    client: &mut impl GenericClient,
    values: &mut AggValues,
) -> Result<(), StoreError> {
    let rows = client
        .query("SELECT dim, value FROM agg_values", &[])
        .map_err(error)?;
    for r in &rows {
        values.stored(r.get(0), r.get(1));
    }
    Ok(())
}

/// Per event of a batch: its label row id, tenant id and aggregate value ids.
pub(super) struct Ids {
    /// `(labels_id, tenant_id)` per event.
    pub rows: Vec<(i64, Option<i64>)>,
    /// Value ids per event.
    pub values: Vec<ValueIds>,
}

/// A value of a full-looking or unknown dimension needs the admission lock first.
struct NeedsLock;

/// The ids of every event of `events` (read from `source_id`), inserting the label
/// rows, tenants and admitted values `interner` and `values` do not know, in one
/// transaction committed before this returns (none when nothing is new).
pub(super) fn ids(
    client: &mut Client,
    interner: &mut Interner,
    values: &mut AggValues,
    events: &[UsageEvent],
    source_id: i64,
) -> Result<Ids, StoreError> {
    let mut rows = Vec::with_capacity(events.len());
    let mut new_labels = Vec::new();
    let mut new_tenants = Vec::new();
    for e in events {
        let key = Key::of(e, source_id);
        let labels_id = interner.find_label(&key);
        if labels_id.is_none() {
            new_labels.push(key);
        }
        let tenant_id = match e.tenant.as_deref() {
            Some(t) => {
                let id = interner.find_tenant(t);
                if id.is_none() {
                    new_tenants.push(t);
                }
                id.map(Some)
            }
            None => Some(None),
        };
        rows.push((labels_id, tenant_id));
    }
    let mut ids = Ids {
        rows: Vec::with_capacity(events.len()),
        values: Vec::with_capacity(events.len()),
    };
    // Usually every id is known: no transaction then.
    for &(labels_id, tenant_id) in &rows {
        match (labels_id, tenant_id) {
            (Some(l), Some(t)) => ids.rows.push((l, t)),
            _ => break,
        }
    }
    unlocked(values, events, &mut ids);
    if ids.values.len() == events.len() {
        return Ok(ids);
    }
    let mut tx = client.transaction().map_err(error)?;
    insert_labels(&mut tx, interner, new_labels)?;
    insert_tenants(&mut tx, interner, new_tenants)?;
    for (e, &(labels_id, tenant_id)) in events.iter().zip(&rows).skip(ids.rows.len()) {
        let labels_id = match labels_id {
            Some(id) => id,
            None => known(interner.find_label(&Key::of(e, source_id)))?,
        };
        let tenant_id = match (tenant_id, e.tenant.as_deref()) {
            (Some(id), _) => id,
            (None, name) => Some(known(name.and_then(|t| interner.find_tenant(t)))?),
        };
        ids.rows.push((labels_id, tenant_id));
    }
    unlocked(values, events, &mut ids);
    let from = ids.values.len();
    if from < events.len() {
        // The first value to admit: take the lock, read what other replicas admitted
        // meanwhile, then admit in memory in batch order (as on SQLite) and insert
        // the admitted values together.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADMISSION_LOCK])
            .map_err(error)?;
        read_agg_values(&mut tx, values)?;
        let mut admitted: Vec<(&'static str, String)> = Vec::new();
        for (e, &(labels_id, tenant_id)) in events.iter().zip(&ids.rows).skip(from) {
            let record = |dim, value: &str| {
                admitted.push((dim, value.to_string()));
                Ok::<(), Infallible>(())
            };
            let Ok(v) = values.ids_with(e, labels_id, tenant_id, record);
            ids.values.push(v);
        }
        let (dims, names): (Vec<&str>, Vec<&str>) =
            admitted.iter().map(|(d, v)| (*d, v.as_str())).unzip();
        tx.execute(
            "INSERT INTO agg_values (dim, value) SELECT * FROM unnest($1::text[], $2::text[]) \
             ON CONFLICT DO NOTHING",
            &[&dims, &names],
        )
        .map_err(error)?;
    }
    tx.commit().map_err(error)?;
    Ok(ids)
}

/// Value ids for the events after those `ids` has them for, while their label ids are
/// known and no value needs admitting: each value is then known or its dimension
/// full, decisions that never change, so no lock is needed.
fn unlocked(values: &mut AggValues, events: &[UsageEvent], ids: &mut Ids) {
    let from = ids.values.len();
    for (e, &(labels_id, tenant_id)) in events.iter().zip(&ids.rows).skip(from) {
        match values.ids_with(e, labels_id, tenant_id, |_, _| Err(NeedsLock)) {
            Ok(v) => ids.values.push(v),
            Err(NeedsLock) => return,
        }
    }
}

/// The id of a label row or tenant just inserted or read back; missing only if the
/// server broke `RETURNING`'s promise.
fn known(id: Option<i64>) -> Result<i64, StoreError> {
    id.ok_or_else(|| {
        StoreError::Postgres("a label row or tenant just inserted was not returned".into())
    })
}

/// Insert label rows `keys` (new to this writer, perhaps not to the database) and
/// remember their ids. `DO UPDATE` rather than `DO NOTHING`: it returns the id of a
/// row another replica inserted too, in the same statement.
fn insert_labels(
    tx: &mut Transaction,
    interner: &mut Interner,
    mut keys: Vec<Key>,
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    let model: Vec<&str> = keys.iter().map(|k| k.model).collect();
    let resolved_model = column(&keys, |k| k.resolved_model);
    let provider = column(&keys, |k| k.provider);
    let route = column(&keys, |k| k.route);
    let finish_reason = column(&keys, |k| k.finish_reason);
    let error_type = column(&keys, |k| k.error_type);
    let cost_source: Vec<&str> = keys.iter().map(|k| k.cost_source).collect();
    let status: Vec<Option<i64>> = keys.iter().map(|k| k.status.map(i64::from)).collect();
    let source_id: Vec<i64> = keys.iter().map(|k| k.source_id).collect();
    let rows = tx
        .query(
            "INSERT INTO event_labels (model, resolved_model, provider, route, status, \
             finish_reason, error_type, cost_source, source_id) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
             $6::text[], $7::text[], $8::text[], $9::int8[]) \
             ON CONFLICT (model, resolved_model, provider, route, status, finish_reason, \
             error_type, cost_source, source_id) DO UPDATE SET model = excluded.model \
             RETURNING id, model, resolved_model, provider, route, status, finish_reason, \
             error_type, cost_source, source_id",
            &[
                &model,
                &resolved_model,
                &provider,
                &route,
                &status,
                &finish_reason,
                &error_type,
                &cost_source,
                &source_id,
            ],
        )
        .map_err(error)?;
    for r in &rows {
        remember_label_row(interner, r)?;
    }
    Ok(())
}

/// One optional text column of `keys`, as an array parameter.
fn column<'a>(keys: &[Key<'a>], f: impl Fn(&Key<'a>) -> Option<&'a str>) -> Vec<Option<&'a str>> {
    keys.iter().map(f).collect()
}

/// Insert tenants `names` (new to this writer) and remember their ids.
fn insert_tenants(
    tx: &mut Transaction,
    interner: &mut Interner,
    mut names: Vec<&str>,
) -> Result<(), StoreError> {
    if names.is_empty() {
        return Ok(());
    }
    names.sort_unstable();
    names.dedup();
    let rows = tx
        .query(
            "INSERT INTO event_tenants (name) SELECT * FROM unnest($1::text[]) \
             ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id, name",
            &[&names],
        )
        .map_err(error)?;
    for r in &rows {
        interner.remember_tenant(r.get(1), r.get(0));
    }
    Ok(())
}
