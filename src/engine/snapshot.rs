//! The analysis snapshot: the engine's state between buckets as bytes, so a start
//! resumes where the last run stopped instead of relearning from raw events.
//!
//! Layout: the magic `DWAS`, the format version (u32, little endian), then the
//! body encoded with postcard. What is left out is rebuilt: the rules come from the
//! rules files (open alerts name theirs, so a reordered file still matches), caches
//! are recomputed when first asked, and the usage side of the buckets still open is
//! re-fed from the stored events (`Cut::events_from`), as are the evals stored after
//! the newest one counted (`Cut::evals_after_ms`).
//!
//! **Invariant:** the same state encodes to the same bytes (every map is written
//! in key order), and an engine loaded from a snapshot judges the data that follows
//! as the engine that wrote it would.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::Engine;
use super::state::ScopeState;
use crate::domain::ChangeEvent;
use crate::lanes::{Lanes, LanesState, ScopesError};

/// The format version this build writes and reads. Bump it whenever the encoded
/// state changes shape; an older snapshot is then rebuilt from raw events.
pub const FORMAT_VERSION: u32 = 3;

const MAGIC: [u8; 4] = *b"DWAS";
const HEADER: usize = MAGIC.len() + 4;

/// Why a snapshot cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A newer driftwarden wrote it.
    #[error(
        "the analysis snapshot has format version {found}, newer than this driftwarden understands ({supported}); run a newer driftwarden or point --db at another file"
    )]
    TooNew {
        /// The snapshot's format version.
        found: u32,
        /// The version this build writes.
        supported: u32,
    },
    /// An older driftwarden wrote it, in a shape this build no longer reads.
    #[error(
        "the analysis snapshot has format version {found}, older than this driftwarden's {supported}"
    )]
    TooOld {
        /// The snapshot's format version.
        found: u32,
        /// The version this build writes.
        supported: u32,
    },
    /// The bytes do not start with a snapshot header.
    #[error("the stored analysis snapshot has no snapshot header")]
    Header,
    /// The body does not decode.
    #[error("the stored analysis snapshot does not decode: {0}")]
    Decode(String),
    /// Settings that shape the state (bucket length, scopes) changed since it was written.
    #[error("[analysis] {0} changed since the snapshot was written")]
    Settings(String),
    /// Its scopes do not fit the configured dimensions and pairs.
    #[error(transparent)]
    Scopes(#[from] ScopesError),
}

/// Where a loaded snapshot leaves off: what a start re-feeds from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Stored events at or after this time are re-fed (their buckets were open).
    pub events_from: i64,
    /// Stored evals after this time are re-fed (the newest one counted).
    pub evals_after_ms: i64,
}

/// The settings a state is only meaningful under.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Shape {
    bucket_minutes: i64,
    cardinality_cap: usize,
    pairs: Vec<String>,
}

/// The encoded state.
#[derive(Serialize, Deserialize)]
struct Body<S> {
    shape: Shape,
    /// Rule names by index, as the open alerts refer to them.
    rules: Vec<String>,
    lanes: LanesState,
    states: S,
    changes: Vec<ChangeEvent>,
    /// The alert stage's state, encoded by the stage, taken after the same step.
    stage: Vec<u8>,
}

/// The format version of stored snapshot bytes, read from their header.
fn format_version(bytes: &[u8]) -> Result<u32, SnapshotError> {
    match bytes.get(..HEADER) {
        Some(h) if h[..MAGIC.len()] == MAGIC => {
            let v: [u8; 4] = h[MAGIC.len()..]
                .try_into()
                .map_err(|_| SnapshotError::Header)?;
            Ok(u32::from_le_bytes(v))
        }
        _ => Err(SnapshotError::Header),
    }
}

impl Engine {
    fn shape(&self) -> Shape {
        let a = &self.params.analysis;
        Shape {
            bucket_minutes: a.bucket_minutes,
            cardinality_cap: a.cardinality_cap,
            pairs: a.pairs.clone(),
        }
    }

    /// The engine's state as snapshot bytes, with the alert stage's (`stage`, taken
    /// after the same step). Call it after `drain`: what was produced and not yet
    /// handed over is not part of it.
    pub fn snapshot(&self, stage: &[u8]) -> Vec<u8> {
        let body = Body {
            shape: self.shape(),
            rules: self.rules.iter().map(|r| r.name.clone()).collect(),
            lanes: self.lanes.state(),
            states: &self.states,
            changes: self.changes.clone(),
            stage: stage.to_vec(),
        };
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        // Writing to a Vec fails only on a serializer error, which the derived
        // impls of these types never raise (no maps of unknown length).
        postcard::to_io(&body, &mut out).expect("the engine's state always encodes");
        out
    }

    /// Replace this (fresh) engine's state with a snapshot's, under this engine's
    /// settings and rules. Returns what the caller must re-feed from the store, and
    /// the alert stage's state stored with it.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(Cut, Vec<u8>), SnapshotError> {
        let found = format_version(bytes)?;
        if found > FORMAT_VERSION {
            return Err(SnapshotError::TooNew {
                found,
                supported: FORMAT_VERSION,
            });
        }
        if found < FORMAT_VERSION {
            return Err(SnapshotError::TooOld {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let body: Body<Vec<ScopeState>> = postcard::from_bytes(&bytes[HEADER..])
            .map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let shape = self.shape();
        let changed: Vec<&str> = [
            (
                "bucket_minutes",
                body.shape.bucket_minutes != shape.bucket_minutes,
            ),
            (
                "cardinality_cap",
                body.shape.cardinality_cap != shape.cardinality_cap,
            ),
            ("pairs", body.shape.pairs != shape.pairs),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
        if !changed.is_empty() {
            return Err(SnapshotError::Settings(changed.join(", ")));
        }
        let plan = self
            .params
            .analysis
            .plan()
            .map_err(|e| SnapshotError::Settings(e.to_string()))?;
        let cut = Cut {
            events_from: body.lanes.events_from(),
            evals_after_ms: body.lanes.evals_through_ms(),
        };
        let lanes = Lanes::restore(self.params.analysis.clone(), plan, body.lanes)?;
        // Open alerts follow their rule by name; one whose rule is gone is dropped
        // (its series learn again), as a rule removed while running would leave it.
        let by_name: FxHashMap<&str, usize> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        let mut states = body.states;
        for st in &mut states {
            st.open.retain_mut(|o| {
                let now = body
                    .rules
                    .get(o.rule)
                    .and_then(|name| by_name.get(name.as_str()));
                now.map(|&i| o.rule = i).is_some()
            });
        }
        self.lanes = lanes;
        self.states = states;
        self.changes = body.changes;
        self.out = super::Output::default();
        Ok((cut, body.stage))
    }
}

/// A scope's pending change-impact report, encoded as (signal, verdict) pairs:
/// `SignalImpact` is flattened for its JSON, which a compact encoding cannot read.
pub(super) mod reports {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::baselines::Verdict;
    use crate::domain::Signal;
    use crate::engine::SignalImpact;

    pub(in crate::engine) fn serialize<S: Serializer>(
        report: &Option<Vec<SignalImpact>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let pairs: Option<Vec<(Signal, Verdict)>> = report
            .as_ref()
            .map(|r| r.iter().map(|i| (i.signal, i.verdict)).collect());
        pairs.serialize(s)
    }

    pub(in crate::engine) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<SignalImpact>>, D::Error> {
        let pairs: Option<Vec<(Signal, Verdict)>> = Option::deserialize(d)?;
        Ok(pairs.map(|p| {
            p.into_iter()
                .map(|(signal, verdict)| SignalImpact { signal, verdict })
                .collect()
        }))
    }
}

/// A hash map encoded as its entries in key order, so the same map always encodes
/// to the same bytes.
pub(super) mod sorted {
    use std::hash::Hash;

    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(in crate::engine) fn serialize<K, V, S>(
        map: &FxHashMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error>
    where
        K: Serialize + Ord,
        V: Serialize,
        S: Serializer,
    {
        let mut entries: Vec<(&K, &V)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries.serialize(s)
    }

    pub(in crate::engine) fn deserialize<'de, K, V, D>(d: D) -> Result<FxHashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let entries: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(entries.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Signal;
    use crate::engine::EngineParams;
    use crate::lanes::scopes::GLOBAL;
    use crate::store::tests::event;

    const MIN: i64 = 60_000;

    /// Two requests a minute from `from` (inclusive) to `to` (exclusive).
    fn traffic(from: i64, to: i64) -> Vec<crate::domain::UsageEvent> {
        (from..to)
            .step_by(30_000)
            .map(|ts| event(&format!("r{ts}"), ts))
            .collect()
    }

    #[test]
    fn a_restart_in_the_middle_of_a_weekend_judges_it_against_its_weekend_slots() {
        // Monday 2026-11-16 00:00 UTC to Saturday 2026-11-28 12:00: one weekend and a
        // half, which a four-day re-read of raw events could not give a weekend slot.
        let monday = chrono::DateTime::parse_from_rfc3339("2026-11-16T00:00:00Z")
            .expect("a time")
            .timestamp_millis();
        let saturday_noon = monday + (12 * 24 + 12) * 60 * MIN;
        let mut original = Engine::new(EngineParams::default(), Vec::new()).expect("defaults");
        let history = traffic(monday, saturday_noon);
        for e in &history {
            original.observe_event(e);
        }
        original.advance(saturday_noon);
        drop(original.drain());
        let bytes = original.snapshot(b"stage");

        let mut restored = Engine::new(EngineParams::default(), Vec::new()).expect("defaults");
        let (cut, stage) = restored
            .load(&bytes)
            .expect("the same build reads its snapshot");
        assert_eq!(stage, b"stage", "the stage's state comes back as stored");
        for e in history.iter().filter(|e| e.ts_ms >= cut.events_from) {
            restored.observe_event(e);
        }
        let after = saturday_noon + 80 * MIN;
        for engine in [&mut original, &mut restored] {
            for e in &traffic(saturday_noon, after) {
                engine.observe_event(e);
            }
            engine.advance(after);
            drop(engine.drain());
        }
        let one_pm = saturday_noon + 60 * MIN;
        let bp = EngineParams::default().baselines;
        let base = |engine: &Engine| {
            engine.states[GLOBAL as usize].series[Signal::Requests.index()]
                .baseline(one_pm, false, &bp)
                .expect("a baseline")
        };
        assert!(base(&restored).seasonal, "{:?}", base(&restored));
        assert_eq!(base(&restored), base(&original));
        assert_eq!(restored.snapshot(&[]), original.snapshot(&[]));
    }
}
