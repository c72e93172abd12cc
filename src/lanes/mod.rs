//! Lanes: fold usage events and eval scores into per-scope, per-bucket counts, and
//! read the three lanes' signals off them.
//!
//! Buckets are fixed windows (10 minutes by default) on the data clock. A bucket
//! closes when the watermark passes its end plus the allowed lateness; its
//! structure and cost signals are judged then. Its eval signals wait until the
//! evals have settled (`eval_settle`), because scores arrive hours late; each
//! bucket is judged once, so a late score never raises a second alert.

pub mod cell;
pub mod scopes;
pub mod signals;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher, RandomState};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::domain::{EvalScore, Scope, UsageEvent};
use cell::{Cell, EvalCell, EventSyms, Sym};
use scopes::{ScopeId, ScopeIndex, ScopePlan};

/// Lane parameters (`[analysis]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaneParams {
    /// Bucket length in minutes.
    pub bucket_minutes: i64,
    /// How late (minutes past its end, on the data clock) an event may arrive and
    /// still count in its bucket.
    pub lateness_minutes: i64,
    /// How long after a bucket ends its evals are waited for before it is judged.
    pub eval_settle_minutes: i64,
    /// Routes whose traffic reaches customers; filled from the top-level
    /// `customer_facing_routes` setting.
    #[serde(skip)]
    pub customer_facing_routes: Vec<String>,
    /// Most distinct values per dimension; the rest count under `_other`.
    pub cardinality_cap: usize,
    /// Pairs of dimensions aggregated together, e.g. `["model+route"]`.
    pub pairs: Vec<String>,
    /// Most request ids remembered for joining late evals to their requests.
    pub max_eval_joins: usize,
}

impl Default for LaneParams {
    fn default() -> LaneParams {
        LaneParams {
            bucket_minutes: 10,
            lateness_minutes: 2,
            eval_settle_minutes: 240,
            customer_facing_routes: Vec::new(),
            cardinality_cap: ScopePlan::default().cap,
            pairs: vec!["model+route".into()],
            max_eval_joins: 2_000_000,
        }
    }
}

/// A scope pair in `[analysis] pairs` that is not two different dimensions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pair {pair:?}: write two different dimensions joined by '+', from {}", crate::domain::SCOPE_DIMS.join(", "))]
pub struct PairError {
    /// The pair as written.
    pub pair: String,
}

impl LaneParams {
    /// Bucket length in ms.
    pub fn bucket_ms(&self) -> i64 {
        self.bucket_minutes.max(1) * 60_000
    }

    /// When the bucket starting at `start_ms` settles: its eval lane is judged once
    /// the data clock reaches this point, with the scores timed up to it.
    pub fn settles_ms(&self, start_ms: i64) -> i64 {
        start_ms + self.bucket_ms() + self.eval_settle_minutes * 60_000
    }

    /// The scope plan these parameters describe; errors name a bad pair.
    pub fn plan(&self) -> Result<ScopePlan, PairError> {
        let dims = crate::domain::SCOPE_DIMS;
        let mut pairs = Vec::new();
        for p in &self.pairs {
            let parts: Vec<&str> = p.split('+').collect();
            let pos = |d: &str| dims.iter().position(|x| *x == d);
            match parts.as_slice() {
                [a, b] if pos(a).is_some() && pos(b).is_some() && a != b => {
                    pairs.push((pos(a).unwrap_or(0), pos(b).unwrap_or(0)))
                }
                _ => return Err(PairError { pair: p.clone() }),
            }
        }
        Ok(ScopePlan {
            cap: self.cardinality_cap.max(1),
            pairs,
            pair_cap: self.cardinality_cap.max(1) * 4,
        })
    }
}

/// A bucket whose usage side closed: every scope's counts.
#[derive(Debug)]
pub struct ClosedBucket {
    /// Bucket start, ms.
    pub start_ms: i64,
    /// Counts per scope with traffic.
    pub cells: FxHashMap<ScopeId, Cell>,
}

/// A bucket whose evals settled: every scope's eval counts.
#[derive(Debug)]
pub struct SettledBucket {
    /// Bucket start, ms.
    pub start_ms: i64,
    /// Eval counts per scope with traffic or evals.
    pub cells: FxHashMap<ScopeId, EvalCell>,
}

/// What a request's evals need of it: its bucket, time and scopes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Join {
    bucket: i64,
    ts_ms: i64,
    evaluated: bool,
    scopes: JoinScopes,
}

/// Scopes an event counts in with the default plan: global, four dimensions, one pair.
const INLINE_SCOPES: usize = 6;

/// A request's scopes, kept inline when they fit (the default plan's always do): one
/// join is stored per event, and a heap allocation for each was a measurable part of
/// a replay's time.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum JoinScopes {
    Inline(u8, [ScopeId; INLINE_SCOPES]),
    Spilled(Box<[ScopeId]>),
}

impl JoinScopes {
    fn new(scopes: &[ScopeId]) -> JoinScopes {
        if scopes.len() <= INLINE_SCOPES {
            let mut inline = [0; INLINE_SCOPES];
            inline[..scopes.len()].copy_from_slice(scopes);
            JoinScopes::Inline(scopes.len() as u8, inline)
        } else {
            JoinScopes::Spilled(scopes.into())
        }
    }

    fn as_slice(&self) -> &[ScopeId] {
        match self {
            JoinScopes::Inline(n, inline) => &inline[..*n as usize],
            JoinScopes::Spilled(s) => s,
        }
    }
}

/// Interned strings (models, resolved models, tenants).
#[derive(Debug, Default)]
pub struct Symbols {
    ids: FxHashMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
}

impl Symbols {
    /// The id of `name`, interning it.
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as Sym;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The name of `id`.
    pub fn name(&self, id: Sym) -> &str {
        self.names.get(id as usize).map_or("?", |n| n)
    }
}

/// Fresh keys for the joins' hash, random per process (std's per-process seeds).
fn new_join_keys() -> (u64, u64) {
    let seeds = RandomState::new();
    (seeds.hash_one(0u8), seeds.hash_one(1u8))
}

/// The longest run of empty buckets handed over: a week, the seasonal memory.
const MAX_SILENT_MS: i64 = 7 * 86_400_000;

/// Counters of records the lanes could not use (they are still stored).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCounters {
    /// Events whose bucket had already closed.
    pub late_events: u64,
    /// Evals whose bucket had already been judged, or whose request is unknown.
    pub unmatched_evals: u64,
    /// Evals timed after their request's bucket settled (`eval_settle_minutes`
    /// after its end): many of them mean the evaluator lags more than the setting.
    pub late_evals: u64,
}

/// The open buckets of every scope.
#[derive(Debug)]
pub struct Lanes {
    params: LaneParams,
    /// The scope index, shared with baselines and detectors.
    pub index: ScopeIndex,
    /// Interned labels.
    pub syms: Symbols,
    customer_facing: Vec<String>,
    open: BTreeMap<i64, FxHashMap<ScopeId, Cell>>,
    evals: BTreeMap<i64, FxHashMap<ScopeId, EvalCell>>,
    /// Joins by a keyed 64-bit hash (SipHash-1-3) of the request id rather than the
    /// id itself: no allocation per event, and the keys (drawn when the lanes start
    /// afresh, kept in the snapshot so the joins outlive a restart) keep senders from
    /// crafting ids that collide. Two ids colliding by chance (about 1e-7 for 2M remembered ids)
    /// behave like a resent id: the later request's join wins.
    joins: FxHashMap<u64, Join>,
    join_keys: (u64, u64),
    /// Evals read before their request (a backlog of two files read at different
    /// paces, an eval posted before the gateway's log line is tailed), by join key:
    /// counted when the request arrives, unmatched once their time's bucket closed.
    parked: FxHashMap<u64, Vec<Parked>>,
    parked_len: usize,
    closed_before: i64,
    /// The next bucket to hand over, once the data has begun: buckets without any
    /// event are handed over too (empty), so silence is judged like traffic.
    next_bucket: Option<i64>,
    judged_before: i64,
    /// What could not be used.
    pub counters: LaneCounters,
    /// The newest eval time counted: a restart re-feeds the stored evals after it.
    evals_through_ms: i64,
    scratch: Vec<ScopeId>,
}

/// What the lanes keep between buckets, as the analysis snapshot holds it: scopes
/// and labels by id (so every `ScopeId` and `Sym` stays valid), the eval side of the
/// buckets not judged yet and the joins their evals need, and the clocks. The usage
/// side of the open buckets is left out: it is rebuilt from the stored events from
/// `events_from` on, which a start re-feeds.
#[derive(Debug, Serialize, Deserialize)]
pub struct LanesState {
    scopes: Vec<Scope>,
    names: Vec<Box<str>>,
    evals: Vec<(i64, Vec<(ScopeId, EvalCell)>)>,
    joins: Vec<(u64, Join)>,
    join_keys: (u64, u64),
    parked: Vec<(u64, Vec<Parked>)>,
    closed_before: i64,
    next_bucket: Option<i64>,
    judged_before: i64,
    counters: LaneCounters,
    evals_through_ms: i64,
}

/// An eval waiting for its request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Parked {
    ts_ms: i64,
    score: Option<f64>,
    passed: Option<bool>,
}

impl LanesState {
    /// Events at or after this time were in buckets still open: a restart re-feeds
    /// them from the store.
    pub fn events_from(&self) -> i64 {
        self.closed_before
    }

    /// The newest eval time counted: a restart re-feeds the stored evals after it.
    pub fn evals_through_ms(&self) -> i64 {
        self.evals_through_ms
    }
}

/// A snapshot's scopes that do not form an index this build makes.
#[derive(Debug, thiserror::Error)]
#[error("scope {id} ({labels}) of the snapshot fits no dimension or pair configured")]
pub struct ScopesError {
    /// The scope's id.
    pub id: usize,
    /// Its labels.
    pub labels: String,
}

impl Lanes {
    /// Empty lanes.
    pub fn new(params: LaneParams, plan: ScopePlan) -> Lanes {
        Lanes {
            customer_facing: params.customer_facing_routes.clone(),
            params,
            index: ScopeIndex::new(plan),
            syms: Symbols::default(),
            open: BTreeMap::new(),
            evals: BTreeMap::new(),
            joins: FxHashMap::default(),
            join_keys: new_join_keys(),
            parked: FxHashMap::default(),
            parked_len: 0,
            closed_before: i64::MIN,
            next_bucket: None,
            judged_before: i64::MIN,
            counters: LaneCounters::default(),
            evals_through_ms: i64::MIN,
            scratch: Vec::new(),
        }
    }

    /// The state a snapshot keeps, every map in key order so that the same state
    /// always encodes to the same bytes.
    pub fn state(&self) -> LanesState {
        let mut joins: Vec<(u64, Join)> = self.joins.iter().map(|(&k, j)| (k, j.clone())).collect();
        joins.sort_unstable_by_key(|j| j.0);
        let evals = self
            .evals
            .iter()
            .map(|(&start, cells)| {
                let mut cells: Vec<(ScopeId, EvalCell)> =
                    cells.iter().map(|(&s, c)| (s, c.clone())).collect();
                cells.sort_unstable_by_key(|c| c.0);
                (start, cells)
            })
            .collect();
        let mut parked: Vec<(u64, Vec<Parked>)> =
            self.parked.iter().map(|(&k, p)| (k, p.clone())).collect();
        parked.sort_unstable_by_key(|p| p.0);
        LanesState {
            scopes: self
                .index
                .ids()
                .map(|id| self.index.labels(id).clone())
                .collect(),
            names: self.syms.names.clone(),
            evals,
            joins,
            join_keys: self.join_keys,
            parked,
            closed_before: self.closed_before,
            next_bucket: self.next_bucket,
            judged_before: self.judged_before,
            counters: self.counters,
            evals_through_ms: self.evals_through_ms,
        }
    }

    /// Lanes on these parameters from a snapshot's state, with no open bucket: the
    /// caller re-feeds the events from `state.events_from()` on.
    pub fn restore(
        params: LaneParams,
        plan: ScopePlan,
        state: LanesState,
    ) -> Result<Lanes, ScopesError> {
        let mut lanes = Lanes::new(params, plan.clone());
        lanes.index = ScopeIndex::rebuild(plan, state.scopes)?;
        for name in &state.names {
            lanes.syms.intern(name);
        }
        lanes.evals = state
            .evals
            .into_iter()
            .map(|(start, cells)| (start, cells.into_iter().collect()))
            .collect();
        lanes.joins = state.joins.into_iter().collect();
        lanes.join_keys = state.join_keys;
        lanes.parked_len = state.parked.iter().map(|p| p.1.len()).sum();
        lanes.parked = state.parked.into_iter().collect();
        lanes.closed_before = state.closed_before;
        lanes.next_bucket = state.next_bucket;
        lanes.judged_before = state.judged_before;
        lanes.counters = state.counters;
        lanes.evals_through_ms = state.evals_through_ms;
        Ok(lanes)
    }

    fn join_key(&self, request_id: &str) -> u64 {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.join_keys.0, self.join_keys.1);
        h.write(request_id.as_bytes());
        h.finish()
    }

    /// The parameters.
    pub fn params(&self) -> &LaneParams {
        &self.params
    }

    fn bucket_of(&self, ts_ms: i64) -> i64 {
        let b = self.params.bucket_ms();
        ts_ms.div_euclid(b) * b
    }

    /// Count one event; false when its bucket has already closed.
    pub fn add_event(&mut self, e: &UsageEvent) -> bool {
        let bucket = self.bucket_of(e.ts_ms);
        if bucket < self.closed_before {
            self.counters.late_events += 1;
            return false;
        }
        let syms = EventSyms {
            model: self.syms.intern(&e.model),
            resolved: self
                .syms
                .intern(e.resolved_model.as_deref().unwrap_or(&e.model)),
            tenant: e.tenant.as_deref().map(|t| self.syms.intern(t)),
            customer_facing: e
                .route
                .as_deref()
                .is_some_and(|r| self.customer_facing.iter().any(|c| c == r)),
        };
        let mut scopes = std::mem::take(&mut self.scratch);
        self.index.scopes_of(e, &mut scopes);
        let cells = self.open.entry(bucket).or_default();
        for &s in &scopes {
            cells.entry(s).or_default().add(e, syms);
        }
        if self.joins.len() < self.params.max_eval_joins {
            let key = self.join_key(e.id.as_str());
            // The same request again (re-fed after a restart, its join kept in the
            // snapshot) keeps whether it was evaluated, so its next eval is not
            // counted as its first.
            let evaluated = self
                .joins
                .get(&key)
                .is_some_and(|j| j.evaluated && j.ts_ms == e.ts_ms && j.bucket == bucket);
            self.joins.insert(
                key,
                Join {
                    bucket,
                    ts_ms: e.ts_ms,
                    evaluated,
                    scopes: JoinScopes::new(&scopes),
                },
            );
            if let Some(waiting) = self.parked.remove(&key) {
                self.parked_len -= waiting.len();
                for p in waiting {
                    self.join_eval(key, p);
                }
            }
        }
        self.scratch = scopes;
        true
    }

    /// Count an eval against the request joined under `key`; false when there is
    /// no such request or its bucket was judged.
    fn join_eval(&mut self, key: u64, p: Parked) -> bool {
        let Some(join) = self.joins.get_mut(&key) else {
            return false;
        };
        if join.bucket < self.judged_before {
            self.counters.unmatched_evals += 1;
            return true;
        }
        // Late by its own time, however early it was read: whether a score timed after
        // the settle point is counted must not depend on how far ahead of the events
        // its file was read (a daemon and a replay of the same data agree).
        if p.ts_ms > self.params.settles_ms(join.bucket) {
            self.counters.late_evals += 1;
            return true;
        }
        let first = !join.evaluated;
        join.evaluated = true;
        let lag_s = (p.ts_ms - join.ts_ms).max(0) as f64 / 1000.0;
        let cells = self.evals.entry(join.bucket).or_default();
        for &s in join.scopes.as_slice() {
            cells
                .entry(s)
                .or_default()
                .add(p.score, p.passed, lag_s, first);
        }
        true
    }

    /// Count one eval score against its request (or its route/model scope).
    pub fn add_eval(&mut self, ev: &EvalScore) {
        self.evals_through_ms = self.evals_through_ms.max(ev.ts_ms);
        if let Some(id) = &ev.request_id {
            let key = self.join_key(id.as_str());
            let p = Parked {
                ts_ms: ev.ts_ms,
                score: ev.score,
                passed: ev.passed,
            };
            if self.join_eval(key, p) {
                return;
            }
            // Its request comes no later than it: while the eval's bucket is open,
            // the request may still be read.
            let waits = self.bucket_of(ev.ts_ms) >= self.closed_before
                && self.parked_len < self.params.max_eval_joins;
            match waits {
                true => {
                    self.parked.entry(key).or_default().push(p);
                    self.parked_len += 1;
                }
                false => self.counters.unmatched_evals += 1,
            }
            return;
        }
        let bucket = self.bucket_of(ev.ts_ms);
        if bucket < self.judged_before {
            self.counters.unmatched_evals += 1;
            return;
        }
        let mut scopes = Vec::new();
        if let Some(r) = &ev.route {
            scopes.push(self.index.single(1, r));
        }
        if let Some(m) = &ev.model {
            scopes.push(self.index.single(0, m));
        }
        let cells = self.evals.entry(bucket).or_default();
        for s in scopes {
            cells
                .entry(s)
                .or_default()
                .add(ev.score, ev.passed, 0.0, false);
        }
    }

    /// Close every bucket that ends at least `lateness` before `watermark_ms`, from
    /// the first event on: a bucket nobody sent anything in closes empty (a silent
    /// gateway is judged, and a silent hour learns its zero).
    pub fn close_until(&mut self, watermark_ms: i64) -> Vec<ClosedBucket> {
        let b = self.params.bucket_ms();
        let cutoff = watermark_ms - self.params.lateness_minutes * 60_000 - b;
        let last = cutoff.div_euclid(b) * b;
        let mut closed = Vec::new();
        let mut next = self
            .next_bucket
            .or_else(|| self.open.first_key_value().map(|(&k, _)| k));
        while let Some(mut start_ms) = next.filter(|&s| s <= last) {
            if !self.open.contains_key(&start_ms) {
                // A silence longer than the baselines remember is judged by its
                // newest part only: the days before teach nothing a week of zeros does not.
                let resume = self.open.first_key_value().map_or(last + b, |(&k, _)| k);
                if resume - start_ms > MAX_SILENT_MS {
                    start_ms = (resume - MAX_SILENT_MS).div_euclid(b) * b;
                }
            }
            next = Some(start_ms + b);
            let Some(cells) = self.open.remove(&start_ms) else {
                closed.push(ClosedBucket {
                    start_ms,
                    cells: FxHashMap::default(),
                });
                continue;
            };
            let evals = self.evals.entry(start_ms).or_default();
            for (&s, c) in &cells {
                evals.entry(s).or_default().requests += c.requests - c.errors;
            }
            closed.push(ClosedBucket { start_ms, cells });
        }
        self.next_bucket = next;
        self.closed_before = self.closed_before.max(last + b);
        if self.parked_len > 0 {
            // A parked eval whose own bucket closed can no longer meet its request.
            let open_from = self.closed_before;
            let mut dropped = 0;
            self.parked.retain(|_, waiting| {
                let before = waiting.len();
                waiting.retain(|p| p.ts_ms.div_euclid(b) * b >= open_from);
                dropped += before - waiting.len();
                !waiting.is_empty()
            });
            self.parked_len -= dropped;
            self.counters.unmatched_evals += dropped as u64;
        }
        closed
    }

    /// Hand over every closed bucket whose evals have settled by `watermark_ms`.
    pub fn settle_until(&mut self, watermark_ms: i64) -> Vec<SettledBucket> {
        let mut settled = Vec::new();
        while let Some(entry) = self.evals.first_entry() {
            let start_ms = *entry.key();
            if self.params.settles_ms(start_ms) > watermark_ms || start_ms >= self.closed_before {
                break;
            }
            settled.push(SettledBucket {
                start_ms,
                cells: entry.remove(),
            });
            self.judged_before = start_ms + self.params.bucket_ms();
        }
        if !settled.is_empty() {
            let judged = self.judged_before;
            self.joins.retain(|_, j| j.bucket >= judged);
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::event;

    fn eval(id: &str, ts_ms: i64, score: f64) -> EvalScore {
        EvalScore {
            request_id: Some(id.into()),
            route: None,
            model: None,
            evaluator: "j".into(),
            ts_ms,
            score: Some(score),
            passed: Some(score >= 0.7),
        }
    }

    #[test]
    fn buckets_close_after_lateness_and_evals_settle_later() {
        let mut lanes = Lanes::new(LaneParams::default(), ScopePlan::default());
        assert!(lanes.add_event(&event("a", 60_000)));
        assert!(lanes.add_event(&event("b", 590_000)));
        assert!(
            lanes.close_until(600_000 + 60_000).is_empty(),
            "within lateness"
        );
        assert!(lanes.add_event(&event("c", 599_000)), "late but in time");
        let closed = lanes.close_until(600_000 + 120_000);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].cells[&scopes::GLOBAL].requests, 3);
        assert!(!lanes.add_event(&event("d", 1_000)), "its bucket closed");
        assert_eq!(lanes.counters.late_events, 1);

        lanes.add_eval(&eval("a", 3_600_000, 0.9));
        lanes.add_eval(&eval("a", 3_700_000, 0.5));
        lanes.add_eval(&eval("zzz", 3_700_000, 0.5));
        assert!(lanes.settle_until(3 * 3_600_000).is_empty(), "not settled");
        let settled = lanes.settle_until(5 * 3_600_000);
        assert_eq!(settled.len(), 1);
        let g = &settled[0].cells[&scopes::GLOBAL];
        assert_eq!((g.requests, g.evaluated, g.scores), (3, 1, 2));
        assert!((g.lag_sum_s - 3_540.0).abs() < 1e-9);
        lanes.add_eval(&eval("b", 6 * 3_600_000, 0.1));
        assert_eq!(lanes.counters.unmatched_evals, 0, "their requests may come");
        lanes.close_until(8 * 3_600_000);
        assert_eq!(
            lanes.counters.unmatched_evals, 2,
            "a judged bucket takes no more evals, and an unknown request's eval waits only while its bucket is open"
        );
    }

    /// Requests with an eval in the global cells of `settled`.
    fn evaluated(settled: Vec<SettledBucket>) -> u32 {
        settled
            .iter()
            .filter_map(|b| b.cells.get(&scopes::GLOBAL))
            .map(|c| c.evaluated)
            .sum()
    }

    #[test]
    fn an_eval_read_before_its_request_counts_when_the_request_arrives() {
        let mut lanes = Lanes::new(LaneParams::default(), ScopePlan::default());
        assert!(lanes.add_event(&event("a", 60_000)));
        // The evals file is read ahead of the events file.
        lanes.add_eval(&eval("b", 700_000, 0.4));
        lanes.add_eval(&eval("c", 700_000, 0.4));
        assert!(lanes.add_event(&event("b", 650_000)));
        assert_eq!(lanes.counters.unmatched_evals, 0);
        // c never comes: once its bucket closed it is unmatched.
        lanes.close_until(3_600_000);
        assert_eq!(lanes.counters.unmatched_evals, 1);
        assert_eq!(
            evaluated(lanes.settle_until(6 * 3_600_000)),
            1,
            "b's eval joined b"
        );
        // The parked eval survives a snapshot.
        lanes.add_eval(&eval("d", 4 * 3_600_000, 0.4));
        let state = lanes.state();
        let mut restored =
            Lanes::restore(LaneParams::default(), ScopePlan::default(), state).expect("restore");
        assert!(restored.add_event(&event("d", 4 * 3_600_000 - 1_000)));
        let early = restored.settle_until(9 * 3_600_000);
        assert_eq!(evaluated(early), 0, "d's bucket is not closed yet");
        restored.close_until(5 * 3_600_000);
        let settled = restored.settle_until(10 * 3_600_000);
        assert_eq!(
            evaluated(settled),
            1,
            "d's eval, parked before the snapshot, joined d"
        );
    }

    #[test]
    fn an_eval_timed_after_its_bucket_settles_is_late_however_early_it_is_read() {
        let mut lanes = Lanes::new(LaneParams::default(), ScopePlan::default());
        let settles = lanes.params.settles_ms(0);
        assert_eq!(settles, 600_000 + 240 * 60_000);
        for id in ["a", "b", "c"] {
            assert!(lanes.add_event(&event(id, 60_000)));
        }
        // All three scores are read while the bucket is still waiting for its evals.
        lanes.add_eval(&eval("a", settles - 1, 0.9));
        lanes.add_eval(&eval("b", settles, 0.9));
        lanes.add_eval(&eval("c", settles + 1, 0.9));
        assert_eq!(lanes.counters.late_evals, 1);
        // The same holds for a score read before its request.
        lanes.add_eval(&eval("d", settles + 1, 0.9));
        assert!(lanes.add_event(&event("d", 70_000)));
        assert_eq!(lanes.counters.late_evals, 2);
        assert_eq!(lanes.counters.unmatched_evals, 0);
        lanes.close_until(settles);
        assert_eq!(evaluated(lanes.settle_until(settles)), 2, "a and b count");
    }

    #[test]
    fn buckets_without_events_close_empty_once_the_data_has_begun() {
        let mut lanes = Lanes::new(LaneParams::default(), ScopePlan::default());
        assert!(lanes.close_until(0).is_empty(), "no data, no buckets");
        lanes.add_event(&event("a", 60_000));
        lanes.add_event(&event("b", 1_800_000 + 5));
        let closed = lanes.close_until(2_400_000 + 120_000);
        let starts: Vec<i64> = closed.iter().map(|c| c.start_ms).collect();
        assert_eq!(starts, [0, 600_000, 1_200_000, 1_800_000]);
        assert!(closed[1].cells.is_empty() && closed[2].cells.is_empty());
        assert_eq!(closed[3].cells[&scopes::GLOBAL].requests, 1);
        let quiet = lanes.close_until(3_600_000 + 120_000);
        let starts: Vec<i64> = quiet.iter().map(|c| c.start_ms).collect();
        assert_eq!(
            starts,
            [2_400_000, 3_000_000],
            "the wall clock closes silence"
        );
    }

    #[test]
    fn a_silence_longer_than_a_week_is_handed_over_from_its_last_week() {
        let mut lanes = Lanes::new(LaneParams::default(), ScopePlan::default());
        lanes.add_event(&event("a", 0));
        let month = 30 * 86_400_000;
        lanes.add_event(&event("b", month));
        let closed = lanes.close_until(month + 600_000 + 120_000);
        assert_eq!(closed.first().map(|c| c.start_ms), Some(0));
        assert_eq!(closed[1].start_ms, month - MAX_SILENT_MS);
        assert_eq!(closed.len(), 1 + (MAX_SILENT_MS / 600_000) as usize + 1);
        assert_eq!(closed.last().map(|c| !c.cells.is_empty()), Some(true));
    }
}
