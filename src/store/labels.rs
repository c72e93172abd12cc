//! Interned event labels: the writer's in-memory copy of `event_labels` and
//! `event_tenants` (migration 0007), so storing an event costs two hash lookups and
//! integer binds instead of eight text binds; a new value costs one small insert.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::HashTable;
use rusqlite::{Connection, Transaction, params};
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::domain::UsageEvent;

/// The fields of an event stored once in `event_labels`, as borrowed from the event.
#[derive(Hash)]
struct Key<'a> {
    model: &'a str,
    resolved_model: Option<&'a str>,
    provider: Option<&'a str>,
    route: Option<&'a str>,
    status: Option<u16>,
    finish_reason: Option<&'a str>,
    error_type: Option<&'a str>,
    cost_source: &'a str,
    source_id: i64,
}

impl<'a> Key<'a> {
    fn of(e: &'a UsageEvent, source_id: i64) -> Key<'a> {
        Key {
            model: &e.model,
            resolved_model: e.resolved_model.as_deref(),
            provider: e.provider.as_deref(),
            route: e.route.as_deref(),
            status: e.status,
            finish_reason: e.finish_reason.as_deref(),
            error_type: e.error_type.as_deref(),
            cost_source: e.cost_source.as_str(),
            source_id,
        }
    }

    fn hash(&self) -> u64 {
        let mut h = FxBuildHasher.build_hasher();
        Hash::hash(self, &mut h);
        h.finish()
    }
}

/// An `event_labels` row held by the interner.
struct Owned {
    model: Box<str>,
    resolved_model: Option<Box<str>>,
    provider: Option<Box<str>>,
    route: Option<Box<str>>,
    status: Option<u16>,
    finish_reason: Option<Box<str>>,
    error_type: Option<Box<str>>,
    cost_source: Box<str>,
    source_id: i64,
    id: i64,
}

impl Owned {
    fn key(&self) -> Key<'_> {
        Key {
            model: &self.model,
            resolved_model: self.resolved_model.as_deref(),
            provider: self.provider.as_deref(),
            route: self.route.as_deref(),
            status: self.status,
            finish_reason: self.finish_reason.as_deref(),
            error_type: self.error_type.as_deref(),
            cost_source: &self.cost_source,
            source_id: self.source_id,
        }
    }

    fn matches(&self, k: &Key) -> bool {
        let o = self.key();
        o.source_id == k.source_id
            && o.status == k.status
            && o.model == k.model
            && o.route == k.route
            && o.resolved_model == k.resolved_model
            && o.provider == k.provider
            && o.finish_reason == k.finish_reason
            && o.error_type == k.error_type
            && o.cost_source == k.cost_source
    }
}

fn boxed(s: Option<&str>) -> Option<Box<str>> {
    s.map(Box::from)
}

/// Every label and tenant id in the store. Ids handed out inside a transaction that
/// then fails would point at rows that do not exist: after a failed commit the store
/// drops the interner and loads it again.
pub(super) struct Interner {
    // A HashTable rather than a map: looked up by a key borrowed from the event,
    // without building an owned key first.
    labels: HashTable<Owned>,
    tenants: FxHashMap<Box<str>, i64>,
}

impl Interner {
    /// Read both tables.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Interner> {
        let mut labels = HashTable::new();
        let mut stmt = conn.prepare(
            "SELECT id, model, resolved_model, provider, route, status, finish_reason, error_type, \
             cost_source, source_id FROM event_labels",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let owned = Owned {
                id: r.get(0)?,
                model: r.get::<_, String>(1)?.into(),
                resolved_model: r.get::<_, Option<String>>(2)?.map(Into::into),
                provider: r.get::<_, Option<String>>(3)?.map(Into::into),
                route: r.get::<_, Option<String>>(4)?.map(Into::into),
                status: r.get(5)?,
                finish_reason: r.get::<_, Option<String>>(6)?.map(Into::into),
                error_type: r.get::<_, Option<String>>(7)?.map(Into::into),
                cost_source: r.get::<_, String>(8)?.into(),
                source_id: r.get(9)?,
            };
            labels.insert_unique(owned.key().hash(), owned, |o| o.key().hash());
        }
        let mut tenants = FxHashMap::default();
        let mut stmt = conn.prepare("SELECT id, name FROM event_tenants")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            tenants.insert(r.get::<_, String>(1)?.into(), r.get(0)?);
        }
        Ok(Interner { labels, tenants })
    }

    /// The `event_labels` id of `e`'s labels from `source_id`, inserted on first sight.
    pub(super) fn label_id(
        &mut self,
        tx: &Transaction,
        e: &UsageEvent,
        source_id: i64,
    ) -> rusqlite::Result<i64> {
        let key = Key::of(e, source_id);
        let hash = key.hash();
        if let Some(o) = self.labels.find(hash, |o| o.matches(&key)) {
            return Ok(o.id);
        }
        tx.prepare_cached(
            "INSERT INTO event_labels (model, resolved_model, provider, route, status, \
             finish_reason, error_type, cost_source, source_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            key.model,
            key.resolved_model,
            key.provider,
            key.route,
            key.status,
            key.finish_reason,
            key.error_type,
            key.cost_source,
            key.source_id
        ])?;
        let id = tx.last_insert_rowid();
        let owned = Owned {
            model: key.model.into(),
            resolved_model: boxed(key.resolved_model),
            provider: boxed(key.provider),
            route: boxed(key.route),
            status: key.status,
            finish_reason: boxed(key.finish_reason),
            error_type: boxed(key.error_type),
            cost_source: key.cost_source.into(),
            source_id,
            id,
        };
        self.labels.insert_unique(hash, owned, |o| o.key().hash());
        Ok(id)
    }

    /// The `event_tenants` id of `name`, inserted on first sight.
    pub(super) fn tenant_id(&mut self, tx: &Transaction, name: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.tenants.get(name) {
            return Ok(id);
        }
        tx.prepare_cached("INSERT INTO event_tenants (name) VALUES (?1)")?
            .execute(params![name])?;
        let id = tx.last_insert_rowid();
        self.tenants.insert(name.into(), id);
        Ok(id)
    }
}
