//! What the engine keeps per scope between buckets: series and mixes (the
//! baselines), warm-ups, detector state and open alerts.

use rustc_hash::FxHashMap;

use super::Open;
use super::report::SignalImpact;
use crate::baselines::{BaselineParams, Mix, Series};
use crate::detect::bump::BumpState;
use crate::detect::drift::RecentCounts;
use crate::detect::pooled::ScorePool;
use crate::detect::pvm::ModelPool;
use crate::detect::step::StepState;
use crate::domain::{Impact, Signal};

/// One scope's state, as the analysis snapshot keeps it too.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct ScopeState {
    /// Scalar series by [`Signal::index`].
    pub(super) series: Vec<Series>,
    /// Mixes by [`Signal::index`].
    pub(super) mixes: Vec<Mix>,
    /// Per-model (requests, spend) pool for price-volume-mix.
    pub(super) models: ModelPool,
    /// End of the usage lanes' warm-up after a change event.
    pub(super) warm_until: Option<i64>,
    /// End of the eval lane's warm-up (evals settle later than usage).
    pub(super) eval_warm_until: Option<i64>,
    /// Changes whose warm-up covers this scope and whose report is still due.
    pub(super) warm_changes: Vec<usize>,
    /// The usage lanes' half of the change-impact report, until the evals settle.
    #[serde(with = "super::snapshot::reports")]
    pub(super) pending_report: Option<Vec<SignalImpact>>,
    /// The mixes that moved, for the same report.
    pub(super) pending_mixes: Vec<(Signal, f64, f64)>,
    /// Step detectors' state, per signal.
    #[serde(with = "super::snapshot::sorted")]
    pub(super) steps: FxHashMap<Signal, StepState>,
    /// The model bump detector's state.
    pub(super) bump: BumpState,
    /// (bucket start, relative change, z) of cost per request, for false efficiency.
    pub(super) cost_moves: Vec<(i64, f64, f64)>,
    /// (bucket start, blast radius) of buckets whose evals are not judged yet.
    pub(super) impacts: Vec<(i64, Impact)>,
    /// Rules with an open alert on this scope.
    pub(super) open: Vec<Open>,
    /// The scope's last buckets with traffic, for judging a small scope's rates
    /// over pooled buckets.
    pub(super) recent: RecentCounts,
    /// A thin scope's eval scores pooled over buckets, and its recent pooled means.
    pub(super) score_pool: ScorePool,
    /// Models carrying a tenth or more of the scope's requests in its last bucket
    /// with traffic: the links of its eval findings.
    pub(super) linked: Vec<u32>,
    /// Start of the first bucket with traffic, once the gateway's own traffic had
    /// a baseline (`None` for scopes that were there from the start).
    pub(super) first_seen: Option<i64>,
    /// Whether the scope had traffic before; `first_seen` is set only once.
    pub(super) seen: bool,
}

impl ScopeState {
    /// A scope with no history; its rates pool at most `pool_buckets` buckets.
    pub(super) fn new(pool_buckets: usize) -> ScopeState {
        ScopeState {
            series: vec![Series::default(); Signal::ALL.len()],
            mixes: vec![Mix::default(); Signal::ALL.len()],
            recent: RecentCounts::new(pool_buckets),
            ..ScopeState::default()
        }
    }
}

/// The usage lanes' scalar signals, learned per bucket.
pub(super) const USAGE_SCALARS: [Signal; 9] = [
    Signal::Requests,
    Signal::Spend,
    Signal::CostPerRequest,
    Signal::CostPer1kTokens,
    Signal::TokensPerRequest,
    Signal::ErrorRate,
    Signal::TruncationRate,
    Signal::LatencyP50,
    Signal::LatencyP95,
];
/// The mixes and distributions, pooled per bucket.
pub(super) const MIXES: [Signal; 6] = [
    Signal::StatusMix,
    Signal::FinishMix,
    Signal::ResolvedModelMix,
    Signal::PromptTokens,
    Signal::CompletionTokens,
    Signal::ModelMix,
];
/// The eval lane's signals.
pub(super) const EVAL_SCALARS: [Signal; 4] = [
    Signal::EvalScore,
    Signal::EvalPassRate,
    Signal::EvalCoverage,
    Signal::EvalLag,
];

/// A silent bucket is a zero of volume and spend: an hour that is always silent
/// learns that it is, and traffic in it is judged.
pub(super) fn learn_silence(series: &mut [Series], start: i64, bp: &BaselineParams) {
    for signal in USAGE_SCALARS.into_iter().filter(|s| s.seasonal_only()) {
        series[signal.index()].push(start, 0.0, bp);
    }
}
