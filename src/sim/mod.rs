//! A seeded, deterministic simulated gateway: normal traffic with weekly rhythm, plus
//! planted drifts, for scenario tests, the demo and benchmarks.
//!
//! A `Scenario` is a `Profile` (what normal traffic looks like), `Injection`s (drifts
//! planted in a time window and scope) and the `ChangeEvent`s a team would have
//! announced. `Scenario::generator(seed)` yields `SimRecord`s in time order; the
//! writers put them in driftwarden's native JSONL shapes or in a New API `logs` table.
//!
//! ```
//! use driftwarden::sim::{Profile, SimRecord, scenarios};
//!
//! let scenario = scenarios::announced_deploy(Profile { peak_rpm: 2.0, ..Profile::default() });
//! let first = scenario.generator(7).unwrap().next().unwrap();
//! assert!(matches!(first, SimRecord::Usage(_)));
//! ```

mod generate;
mod inject;
mod newapi;
mod profile;
pub mod scenarios;
pub mod truth;
mod write;

use std::sync::Arc;

pub use generate::{Generator, PASS_SCORE};
pub use inject::{Effect, Filter, Injection};
pub use newapi::{NEWAPI_SCHEMA, NewApiLogWriter, QUOTA_PER_USD};
pub use profile::{DAY_MS, DEFAULT_START_MS, ModelSpec, Profile, RouteSpec, TokenDist};
pub use truth::{IncidentScore, Score, Truth, TruthIncident};
pub use write::{write_changes_jsonl, write_evals_jsonl, write_native_jsonl, write_records_jsonl};

use crate::domain::{ChangeEvent, EvalScore, UsageEvent};
use crate::pricing::{PriceTable, PricingError};

/// The shipped price table (`rules/pricing.toml`), so the simulator costs requests
/// without a rules directory.
const SHIPPED_PRICES: &str = include_str!("../../rules/pricing.toml");

/// Why a simulation could not run or be written.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The profile is inconsistent (a share out of range, an unknown model name).
    #[error("invalid traffic profile: {0}")]
    Profile(String),
    /// No scenario has this name.
    #[error("unknown scenario {name:?}; known scenarios: {}", scenarios::NAMES.join(", "))]
    UnknownScenario {
        /// The name asked for.
        name: String,
    },
    /// The price table did not load.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The New API database refused a statement.
    #[error("New API logs database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The driver's error.
        source: rusqlite::Error,
    },
}

/// One record of the simulated stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SimRecord {
    /// A request, at its request time.
    Usage(UsageEvent),
    /// An eval score, at the time it was given (request time + lag).
    Eval(EvalScore),
}

impl SimRecord {
    /// The record's time, milliseconds since the Unix epoch.
    pub fn ts_ms(&self) -> i64 {
        match self {
            SimRecord::Usage(e) => e.ts_ms,
            SimRecord::Eval(e) => e.ts_ms,
        }
    }
}

/// Normal traffic, the drifts planted in it, and the changes that were announced.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name (`quiet`, `announced_deploy`, ...).
    pub name: String,
    /// Normal traffic.
    pub profile: Profile,
    /// Planted drifts.
    pub injections: Vec<Injection>,
    /// Change events a team posted (deploys): export them with `write_changes_jsonl`.
    pub changes: Vec<ChangeEvent>,
    /// What a team must be told, and what not: the scenario's ground truth.
    pub truth: Truth,
}

impl Scenario {
    /// The records of this scenario for `seed`, costed with the shipped price table.
    pub fn generator(&self, seed: u64) -> Result<Generator, SimError> {
        Generator::new(self, seed, Arc::new(shipped_prices()?))
    }

    /// The first instant at which any injection starts, if there is one.
    pub fn first_injection_ms(&self) -> Option<i64> {
        self.injections.iter().map(|i| i.from_ms).min()
    }
}

/// The price table shipped in `rules/pricing.toml`.
pub fn shipped_prices() -> Result<PriceTable, SimError> {
    Ok(PriceTable::parse(SHIPPED_PRICES, "rules/pricing.toml")?)
}
