//! The analysis stage as one unit: the engine (lanes, baselines, detectors) and the
//! alert stage (lifecycle, tiers, exceptions, notifications), fed with committed
//! batches. `serve` runs it on its own thread on the wall clock; `replay` runs it
//! inline on the data clock. Same code, same decisions.

use std::path::Path;

use crate::alerts::AlertStage;
use crate::config::Config;
use crate::detect::rules::{RuleContext, RuleErrors, RuleSet};
use crate::domain::Alert;
use crate::engine::Engine;
use crate::exceptions::Registry;
use crate::store::{Batch, Fresh, StoreError, alerts as sql};
use crate::tiers::{TierError, Tiers};

/// Why the analysis could not start.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The rule files are invalid.
    #[error("{0}\n(run `driftwarden check --rules DIR` to see every problem)")]
    Rules(#[from] RuleErrors),
    /// The tier file is invalid.
    #[error(transparent)]
    Tiers(#[from] TierError),
    /// A setting of `[analysis]` is invalid.
    #[error("[analysis] in the config: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Load and validate the tiers and rules of `dir`, with the pairs configured.
pub fn load_rules(config: &Config, dir: &Path) -> Result<(Tiers, RuleSet), AnalysisError> {
    let tiers = Tiers::load(dir)?;
    let ctx = RuleContext {
        pairs: Engine::pair_shapes(&config.engine.analysis).map_err(AnalysisError::Config)?,
        tiers: tiers.defs().iter().map(|d| d.tier.name.clone()).collect(),
    };
    let rules = RuleSet::load_dir(dir, &ctx)?;
    Ok((tiers, rules))
}

/// Engine and alert stage together.
pub struct Analysis {
    engine: Engine,
    stage: AlertStage,
}

impl Analysis {
    /// Open on the config's database and rules. `notify` false: alerts are stored
    /// and returned but nothing is queued for delivery (replay).
    pub fn open(config: &Config, notify: bool) -> Result<Analysis, AnalysisError> {
        let (tiers, rules) = load_rules(config, &config.rules)?;
        let engine =
            Engine::new(config.engine.clone(), rules.rules).map_err(AnalysisError::Config)?;
        let conn = sql::open(&config.db)?;
        let registry = Some(Registry::new(config.exceptions));
        let stage = AlertStage::new(conn, tiers, registry, config.routing, notify)?;
        Ok(Analysis { engine, stage })
    }

    /// Count the new records of a committed batch (changes first, so a change and
    /// the events after it arrive in order).
    pub fn feed(&mut self, batch: &Batch, fresh: &Fresh) {
        for &i in &fresh.changes {
            self.engine.observe_change(&batch.changes[i as usize]);
        }
        for &i in &fresh.events {
            self.engine.observe_event(&batch.events[i as usize]);
        }
        for &i in &fresh.evals {
            self.engine.observe_eval(&batch.evals[i as usize]);
        }
    }

    /// Move the data clock to `watermark_ms` and handle what comes out, with
    /// notifications on the `now_ms` clock. Returns the firing and resolved lines.
    pub fn advance(&mut self, watermark_ms: i64, now_ms: i64) -> Result<Vec<Alert>, StoreError> {
        self.engine.advance(watermark_ms);
        let out = self.engine.drain();
        self.stage.handle(out, now_ms)
    }

    /// Close the day's budgets and send what is still grouped (end of a replay).
    pub fn finish(&mut self, at_ms: i64) -> Result<Vec<Alert>, StoreError> {
        self.stage.finish(at_ms)
    }

    /// Records the lanes could not use.
    pub fn counters(&self) -> crate::lanes::LaneCounters {
        self.engine.counters()
    }
}
