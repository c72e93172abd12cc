//! The alert stage's state in an analysis snapshot: open alerts, incidents (resolved
//! ones within the reopen window too), notification groups and the day's budget
//! counts, so a restart decides and groups what follows exactly as the process
//! that wrote it. Encoded as JSON (alert lines carry free-form evidence) and kept
//! opaque inside the engine's versioned snapshot.

use serde::{Deserialize, Serialize};

use super::decide::Active;
use super::grouping::Group;
use super::incident::{Incident, Key};
use crate::tiers::DayCount;

/// The decider's state.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeciderState {
    pub(super) active: Vec<(Key, Active)>,
    pub(super) incidents: Vec<Incident>,
    pub(super) learned: Vec<(Key, String)>,
    pub(super) last_ids: (i64, i64),
    pub(super) groups: Vec<((String, String), Group)>,
    pub(super) budget: Vec<((String, String, i64), DayCount)>,
}

/// The stage's state: the decider's and the stage's own clocks.
#[derive(Debug, Serialize, Deserialize)]
pub struct StageState {
    pub(super) decider: DeciderState,
    pub(super) replay_clock_ms: i64,
    pub(super) last_housekeeping_ms: i64,
}

/// (De)serialize a map as a sequence of pairs: JSON object keys are strings only,
/// and these maps are keyed by (rule, scope).
pub mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Write the map's entries as a sequence of pairs.
    pub fn serialize<'a, M, K, V, S>(map: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        s.collect_seq(map)
    }

    /// Read a sequence of pairs into the map.
    pub fn deserialize<'de, M, K, V, D>(d: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}
