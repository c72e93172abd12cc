//! Interned event labels: the writer's in-memory copy of `event_labels` and
//! `event_tenants` (migration 0007), so storing an event costs two hash lookups and
//! integer binds instead of eight text binds; a new value costs one small insert.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::HashTable;
use rusqlite::{Connection, Transaction, params};
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::domain::UsageEvent;

/// The fields of an event stored once in `event_labels`, as borrowed from the event.
/// Ordered so that writers sharing a PostgreSQL database insert new label rows in one
/// order (two replicas then never wait on each other's rows crosswise).
#[derive(Hash, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key<'a> {
    pub model: &'a str,
    pub resolved_model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub route: Option<&'a str>,
    pub status: Option<u16>,
    pub finish_reason: Option<&'a str>,
    pub error_type: Option<&'a str>,
    pub cost_source: &'a str,
    pub source_id: i64,
}

impl<'a> Key<'a> {
    /// The label fields of `e`, read from `source_id`.
    pub(super) fn of(e: &'a UsageEvent, source_id: i64) -> Key<'a> {
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
    /// No labels or tenants yet (a PostgreSQL writer fills it from its own reads).
    pub(super) fn empty() -> Interner {
        Interner {
            labels: HashTable::new(),
            tenants: FxHashMap::default(),
        }
    }

    /// Read both tables.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Interner> {
        let mut interner = Interner::empty();
        let mut stmt = conn.prepare(
            "SELECT id, model, resolved_model, provider, route, status, finish_reason, error_type, \
             cost_source, source_id FROM event_labels",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (model, resolved_model, provider, route): (
                String,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            let (finish_reason, error_type, cost_source): (Option<String>, Option<String>, String) =
                (r.get(6)?, r.get(7)?, r.get(8)?);
            let key = Key {
                model: &model,
                resolved_model: resolved_model.as_deref(),
                provider: provider.as_deref(),
                route: route.as_deref(),
                status: r.get(5)?,
                finish_reason: finish_reason.as_deref(),
                error_type: error_type.as_deref(),
                cost_source: &cost_source,
                source_id: r.get(9)?,
            };
            interner.remember_label(&key, r.get(0)?);
        }
        let mut stmt = conn.prepare("SELECT id, name FROM event_tenants")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            interner.remember_tenant(&r.get::<_, String>(1)?, r.get(0)?);
        }
        Ok(interner)
    }

    /// The id of the label row `key`, if known.
    pub(super) fn find_label(&self, key: &Key) -> Option<i64> {
        self.labels
            .find(key.hash(), |o| o.matches(key))
            .map(|o| o.id)
    }

    /// Remember that label row `key` has id `id`.
    pub(super) fn remember_label(&mut self, key: &Key, id: i64) {
        let owned = Owned {
            model: key.model.into(),
            resolved_model: boxed(key.resolved_model),
            provider: boxed(key.provider),
            route: boxed(key.route),
            status: key.status,
            finish_reason: boxed(key.finish_reason),
            error_type: boxed(key.error_type),
            cost_source: key.cost_source.into(),
            source_id: key.source_id,
            id,
        };
        self.labels
            .insert_unique(key.hash(), owned, |o| o.key().hash());
    }

    /// The id of tenant `name`, if known.
    pub(super) fn find_tenant(&self, name: &str) -> Option<i64> {
        self.tenants.get(name).copied()
    }

    /// Remember that tenant `name` has id `id`.
    pub(super) fn remember_tenant(&mut self, name: &str, id: i64) {
        self.tenants.insert(name.into(), id);
    }

    /// The `event_labels` id of `e`'s labels from `source_id`, inserted on first sight.
    pub(super) fn label_id(
        &mut self,
        tx: &Transaction,
        e: &UsageEvent,
        source_id: i64,
    ) -> rusqlite::Result<i64> {
        let key = Key::of(e, source_id);
        if let Some(id) = self.find_label(&key) {
            return Ok(id);
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
        self.remember_label(&key, id);
        Ok(id)
    }

    /// The `event_tenants` id of `name`, inserted on first sight.
    pub(super) fn tenant_id(&mut self, tx: &Transaction, name: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.find_tenant(name) {
            return Ok(id);
        }
        tx.prepare_cached("INSERT INTO event_tenants (name) VALUES (?1)")?
            .execute(params![name])?;
        let id = tx.last_insert_rowid();
        self.remember_tenant(name, id);
        Ok(id)
    }
}
