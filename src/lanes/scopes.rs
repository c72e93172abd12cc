//! The scope index: which series an event belongs to. Each distinct scope (global,
//! `model=gpt-4o`, `route=chat`, `model=gpt-4o,route=chat`, ...) gets a small id.
//! A dimension with more values than its cap sends the rest to one `_other` scope,
//! so memory stays bounded whatever the gateway sends.

use rustc_hash::FxHashMap;

use crate::domain::{CARDINALITY_CAP, SCOPE_DIMS, Scope, UsageEvent};

/// A scope's id in the index; 0 is the global scope.
pub type ScopeId = u32;

/// The id of the global scope.
pub const GLOBAL: ScopeId = 0;

/// The value a dimension's overflow is counted under.
pub const OTHER: &str = "_other";

/// Which scopes to keep and how many values per dimension.
#[derive(Debug, Clone)]
pub struct ScopePlan {
    /// Most distinct values kept per dimension; later values go to `_other`.
    pub cap: usize,
    /// Pairs of dimensions aggregated together, as indexes into `SCOPE_DIMS`.
    pub pairs: Vec<(usize, usize)>,
    /// Most distinct values kept per pair.
    pub pair_cap: usize,
}

impl Default for ScopePlan {
    fn default() -> ScopePlan {
        ScopePlan {
            cap: CARDINALITY_CAP,
            pairs: vec![(0, 1)],
            pair_cap: 1000,
        }
    }
}

/// Every scope seen so far, with its labels, parents and children.
#[derive(Debug)]
pub struct ScopeIndex {
    plan: ScopePlan,
    labels: Vec<Scope>,
    /// Per scope: (dimension, child) pairs one label down.
    children: Vec<Vec<(usize, ScopeId)>>,
    by_value: [FxHashMap<Box<str>, ScopeId>; SCOPE_DIMS.len()],
    pairs: Vec<FxHashMap<(ScopeId, ScopeId), ScopeId>>,
    by_labels: FxHashMap<Scope, ScopeId>,
}

impl ScopeIndex {
    /// An index holding only the global scope.
    pub fn new(plan: ScopePlan) -> ScopeIndex {
        let pairs = plan.pairs.iter().map(|_| FxHashMap::default()).collect();
        let mut index = ScopeIndex {
            plan,
            labels: Vec::new(),
            children: Vec::new(),
            by_value: Default::default(),
            pairs,
            by_labels: FxHashMap::default(),
        };
        index.insert(Scope::new(), &[]);
        index
    }

    /// The index a snapshot's scopes (labels by id) describe under `plan`: each
    /// scope is inserted again in id order, as it was first (a pair always after its
    /// two singles), so ids, children and lookups come out as they were.
    pub fn rebuild(plan: ScopePlan, scopes: Vec<Scope>) -> Result<ScopeIndex, super::ScopesError> {
        let mut index = ScopeIndex::new(plan);
        for (id, labels) in scopes.into_iter().enumerate().skip(1) {
            let bad = || super::ScopesError {
                id,
                labels: crate::domain::scope_label(&labels),
            };
            let dim = |k: &str| SCOPE_DIMS.iter().position(|d| *d == k);
            let entries: Vec<(usize, &str)> = labels
                .iter()
                .map(|(k, v)| dim(k).map(|d| (d, v.as_str())))
                .collect::<Option<_>>()
                .ok_or_else(bad)?;
            match *entries.as_slice() {
                [(d, v)] => {
                    let value: Box<str> = v.into();
                    let new = index.insert(labels.clone(), &[(d, GLOBAL)]);
                    index.by_value[d].insert(value, new);
                }
                [(d1, v1), (d2, v2)] => {
                    let p = (0..index.plan.pairs.len())
                        .find(|&p| {
                            let (a, b) = index.plan.pairs[p];
                            (a, b) == (d1, d2) || (a, b) == (d2, d1)
                        })
                        .ok_or_else(bad)?;
                    let (a, b) = index.plan.pairs[p];
                    let value = |d: usize| if d == d1 { v1 } else { v2 };
                    let x = index.by_value[a].get(value(a)).copied().ok_or_else(bad)?;
                    let y = index.by_value[b].get(value(b)).copied().ok_or_else(bad)?;
                    let new = index.insert(labels.clone(), &[(b, x), (a, y)]);
                    index.pairs[p].insert((x, y), new);
                }
                _ => return Err(bad()),
            }
        }
        Ok(index)
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether only the global scope exists.
    pub fn is_empty(&self) -> bool {
        self.labels.len() <= 1
    }

    /// The labels of scope `id`.
    pub fn labels(&self, id: ScopeId) -> &Scope {
        &self.labels[id as usize]
    }

    /// The scope with exactly these labels, if it has been seen.
    pub fn find(&self, labels: &Scope) -> Option<ScopeId> {
        self.by_labels.get(labels).copied()
    }

    /// Scopes one label below `id`, with the dimension that label is on.
    pub fn children(&self, id: ScopeId) -> &[(usize, ScopeId)] {
        &self.children[id as usize]
    }

    /// Every scope id.
    pub fn ids(&self) -> impl Iterator<Item = ScopeId> + use<> {
        0..self.labels.len() as ScopeId
    }

    /// Whether scope `a`'s labels are a strict subset of `b`'s (a is an ancestor).
    pub fn is_ancestor(&self, a: ScopeId, b: ScopeId) -> bool {
        let (la, lb) = (self.labels(a), self.labels(b));
        la.len() < lb.len() && la.iter().all(|(k, v)| lb.get(k) == Some(v))
    }

    /// Whether the two scopes can hold the same traffic: no dimension they both
    /// name has different values. Everything overlaps the global scope.
    pub fn overlaps(&self, id: ScopeId, other: &Scope) -> bool {
        let labels = self.labels(id);
        other
            .iter()
            .all(|(k, v)| labels.get(k).is_none_or(|mine| mine == v))
    }

    /// The scopes `e` counts in, global first, written into `out`.
    pub fn scopes_of(&mut self, e: &UsageEvent, out: &mut Vec<ScopeId>) {
        out.clear();
        out.push(GLOBAL);
        let values = [
            Some(e.model.as_str()),
            e.route.as_deref(),
            e.tenant.as_deref(),
            e.provider.as_deref(),
        ];
        let mut singles = [None; SCOPE_DIMS.len()];
        for (dim, value) in values.into_iter().enumerate() {
            if let Some(v) = value {
                let id = self.single(dim, v);
                singles[dim] = Some(id);
                out.push(id);
            }
        }
        for p in 0..self.plan.pairs.len() {
            let (a, b) = self.plan.pairs[p];
            if let (Some(x), Some(y)) = (singles[a], singles[b]) {
                out.push(self.pair(p, x, y));
            }
        }
    }

    /// The scope for one label, interning it (or `_other` past the cap).
    pub fn single(&mut self, dim: usize, value: &str) -> ScopeId {
        if let Some(&id) = self.by_value[dim].get(value) {
            return id;
        }
        let value = if self.by_value[dim].len() >= self.plan.cap {
            OTHER
        } else {
            value
        };
        if let Some(&id) = self.by_value[dim].get(value) {
            return id;
        }
        let labels = Scope::from([(SCOPE_DIMS[dim].to_string(), value.to_string())]);
        let id = self.insert(labels, &[(dim, GLOBAL)]);
        self.by_value[dim].insert(value.into(), id);
        id
    }

    fn pair(&mut self, p: usize, x: ScopeId, y: ScopeId) -> ScopeId {
        if let Some(&id) = self.pairs[p].get(&(x, y)) {
            return id;
        }
        let (a, b) = self.plan.pairs[p];
        let (x, y) = if self.pairs[p].len() >= self.plan.pair_cap {
            (self.single(a, OTHER), self.single(b, OTHER))
        } else {
            (x, y)
        };
        if let Some(&id) = self.pairs[p].get(&(x, y)) {
            return id;
        }
        let mut labels = self.labels(x).clone();
        labels.extend(self.labels(y).clone());
        // The pair is a child of each single: along b under x, along a under y.
        let id = self.insert(labels, &[(b, x), (a, y)]);
        self.pairs[p].insert((x, y), id);
        id
    }

    fn insert(&mut self, labels: Scope, parents: &[(usize, ScopeId)]) -> ScopeId {
        let id = self.labels.len() as ScopeId;
        for &(dim, parent) in parents {
            self.children[parent as usize].push((dim, id));
        }
        self.by_labels.insert(labels.clone(), id);
        self.labels.push(labels);
        self.children.push(Vec::new());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::event;

    #[test]
    fn an_event_counts_in_global_each_dimension_and_the_model_route_pair() {
        let mut index = ScopeIndex::new(ScopePlan::default());
        let mut e = event("a", 0);
        e.route = Some("chat".into());
        e.tenant = Some("t1".into());
        let mut out = Vec::new();
        index.scopes_of(&e, &mut out);
        let names: Vec<String> = out
            .iter()
            .map(|&id| crate::domain::scope_label(index.labels(id)))
            .collect();
        assert_eq!(
            names,
            [
                "global",
                "model=gpt-4o",
                "route=chat",
                "tenant=t1",
                "provider=openai",
                "model=gpt-4o,route=chat"
            ]
        );
        let pair = out[5];
        assert!(index.is_ancestor(out[1], pair) && index.is_ancestor(GLOBAL, pair));
        assert!(!index.is_ancestor(out[3], pair));
        assert_eq!(index.children(out[1]), &[(1, pair)]);
    }

    #[test]
    fn values_past_the_cap_share_one_other_scope() {
        let plan = ScopePlan {
            cap: 2,
            ..ScopePlan::default()
        };
        let mut index = ScopeIndex::new(plan);
        let ids: Vec<ScopeId> = ["a", "b", "c", "d", "a"]
            .iter()
            .map(|t| index.single(2, t))
            .collect();
        assert_eq!(ids[0], ids[4]);
        assert_eq!(ids[2], ids[3]);
        assert_eq!(index.labels(ids[2]).get("tenant").unwrap(), OTHER);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn overlap_is_no_conflicting_label() {
        let mut index = ScopeIndex::new(ScopePlan::default());
        let chat = index.single(1, "chat");
        let route = |v: &str| Scope::from([("route".to_string(), v.to_string())]);
        assert!(index.overlaps(chat, &route("chat")));
        assert!(!index.overlaps(chat, &route("extract")));
        assert!(index.overlaps(GLOBAL, &route("extract")));
        let model = Scope::from([("model".to_string(), "x".to_string())]);
        assert!(index.overlaps(chat, &model));
    }
}
