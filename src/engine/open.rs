//! Open alerts as the engine tracks them per scope: held series, hysteresis
//! (calm evaluations in a row before closing), and lasting levels learned as the
//! new normal.

use super::state::ScopeState;
use super::{Engine, EngineParams};
use crate::baselines::Verdict;
use crate::detect::Finding;
use crate::detect::band::Band;
use crate::detect::rules::{Detector, Rule};
use crate::domain::{Lane, Scope, Signal};
use crate::lanes::scopes::ScopeId;

/// An open alert as the engine tracks it on one scope: its series are held (not
/// learned) and it is judged against the relaxed bar until it is calm.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(super) struct Open {
    pub(super) rule: usize,
    pub(super) since_ms: i64,
    /// Evaluations in a row without a finding.
    pub(super) calm: u32,
    /// Whether its condition held for the rule's `for` (its alert fires): only then
    /// is it judged against the relaxed bar. A blip that never fired closes at once.
    pub(super) confirmed: bool,
}

/// Evaluations in a row back inside the band before an open alert closes and its
/// series learn again.
const CALM_TO_CLOSE: u32 = 3;

/// The rules that found something on one scope in this evaluation (a muted finding
/// is not an open alert, a hard one always is).
pub(super) fn found_rules(findings: &[Finding]) -> Vec<usize> {
    findings
        .iter()
        .filter(|f| f.muted.is_none() || f.hard)
        .map(|f| f.rule)
        .collect()
}

/// The confirmed open alerts of a scope on the usage lanes (`eval` false) or the
/// eval lane, as (rule, scope) keys.
pub(super) fn open_on_lane(
    st: &ScopeState,
    rules: &[Rule],
    eval: bool,
    labels: &Scope,
) -> Vec<(String, Scope)> {
    st.open
        .iter()
        .filter(|o| o.confirmed && (rules[o.rule].lane() == Lane::Eval) == eval)
        .map(|o| (rules[o.rule].name.clone(), labels.clone()))
        .collect()
}

/// What one evaluation's open alerts produced across its scopes.
#[derive(Default)]
pub(super) struct Tracked {
    /// Levels learned as the new normal, by scope.
    pub(super) learned: Vec<(ScopeId, Lasting)>,
    /// Open alerts whose bucket could not tell: (rule, scope).
    pub(super) waiting: Vec<(String, Scope)>,
}

/// A level an open alert held for the whole warm-up length, learned as the new normal.
pub(super) struct Lasting {
    pub(super) rule: usize,
    pub(super) signal: Signal,
    pub(super) since_ms: i64,
    pub(super) verdict: LastingVerdict,
}

/// The comparison that let a lasting level become the new normal.
pub(super) enum LastingVerdict {
    Scalar(Verdict),
    /// Total variation distance and p-value of a mix.
    Mix(f64, f64),
}

/// Whether a signal may become the new normal by lasting. A state that is harm in
/// itself (failures, cut-off answers, worse or unchecked answers) never is: it
/// stays one open alert until it ends or an exception covers it.
fn learnable(signal: Signal) -> bool {
    !matches!(
        signal,
        Signal::ErrorRate
            | Signal::TruncationRate
            | Signal::StatusMix
            | Signal::EvalScore
            | Signal::EvalPassRate
            | Signal::EvalCoverage
    )
}

/// The series an open alert of `rule` holds.
fn held_signals(rule: &Rule) -> Vec<Signal> {
    match rule.detector {
        Detector::Drift | Detector::Step => vec![rule.signal],
        Detector::FalseEfficiency => vec![Signal::EvalCoverage, Signal::EvalScore],
        Detector::Creep | Detector::ModelBump => Vec::new(),
    }
}

/// One evaluation of a scope's open alerts on the usage lanes (`eval` false) or the
/// eval lane: rules that found something open (and hold their series) or stay
/// open; the others count calm evaluations and close after `CALM_TO_CLOSE`,
/// forgetting what they held. A learnable level held for the warm-up length
/// becomes the new normal (returned, for a detected change event and its report).
fn track_open(
    st: &mut ScopeState,
    rules: &[Rule],
    found: &[usize],
    (start, end): (i64, i64),
    (eval, bands): (bool, &[(usize, Band)]),
    params: &EngineParams,
) -> (Vec<Lasting>, Vec<usize>) {
    let on_lane = |ri: usize| (rules[ri].lane() == Lane::Eval) == eval;
    for &ri in found {
        match st.open.iter_mut().find(|o| o.rule == ri) {
            Some(o) => {
                o.calm = 0;
                o.confirmed |= start - o.since_ms >= rules[ri].for_ms;
            }
            None => {
                st.open.push(Open {
                    rule: ri,
                    since_ms: start,
                    calm: 0,
                    confirmed: rules[ri].for_ms == 0,
                });
                for signal in held_signals(&rules[ri]) {
                    match signal.is_mix() {
                        true => st.mixes[signal.index()].hold(start),
                        false => st.series[signal.index()].hold(start, learnable(signal)),
                    }
                }
            }
        }
    }
    // A bucket too thin to judge (a quiet night on a small scope) is neither a
    // finding nor calm: the open alert waits for data that can tell.
    let mut waiting = Vec::new();
    for o in st.open.iter_mut() {
        if !on_lane(o.rule) || found.contains(&o.rule) {
            continue;
        }
        let band = bands
            .iter()
            .find(|b| b.0 == o.rule)
            .map_or(Band::Inside, |b| b.1);
        match (o.confirmed, band) {
            // A blip that never fired closes at the first bucket without it.
            (false, _) => o.calm = CALM_TO_CLOSE,
            (true, Band::Inside) => o.calm += 1,
            (true, Band::Outside | Band::Unknown) => {
                o.calm = 0;
                waiting.push(o.rule);
            }
        }
    }
    let rp = &params.recalibration;
    let mut lasting = Vec::new();
    let mut closed = Vec::new();
    for o in &st.open {
        let rule = &rules[o.rule];
        if !on_lane(o.rule) {
            continue;
        }
        if o.calm >= CALM_TO_CLOSE {
            closed.push(o.rule);
            continue;
        }
        let lasted = end - o.since_ms >= rp.warmup_minutes * 60_000;
        if !lasted
            || !learnable(rule.signal)
            || !matches!(rule.detector, Detector::Drift | Detector::Step)
        {
            continue;
        }
        let signal = rule.signal;
        let verdict = match signal.is_mix() {
            true => {
                let mix = &mut st.mixes[signal.index()];
                if mix.held_since().is_none() {
                    continue;
                }
                mix.end_warmup(rp.min_mix_shift)
                    .map(|t| LastingVerdict::Mix(t.tvd, t.p_value))
            }
            false => {
                let series = &mut st.series[signal.index()];
                if series.held_since().is_none() {
                    continue;
                }
                series
                    .end_warmup(
                        signal.seasonal_only(),
                        signal == Signal::Requests,
                        rp.min_shift,
                        &params.baselines,
                    )
                    .map(LastingVerdict::Scalar)
            }
        };
        closed.push(o.rule);
        if let Some(verdict) = verdict {
            lasting.push(Lasting {
                rule: o.rule,
                signal,
                since_ms: o.since_ms,
                verdict,
            });
        }
    }
    st.open.retain(|o| !closed.contains(&o.rule));
    for ri in closed {
        for signal in held_signals(&rules[ri]) {
            let still_held = st
                .open
                .iter()
                .any(|o| held_signals(&rules[o.rule]).contains(&signal));
            if still_held {
                continue;
            }
            match signal.is_mix() {
                true => st.mixes[signal.index()].release(),
                false => st.series[signal.index()].release(),
            }
        }
    }
    (lasting, waiting)
}

impl Engine {
    /// After an evaluation of scope `id` on the usage lanes (`eval` false) or the
    /// eval lane: track its open alerts (`track_open`), collecting the levels they
    /// learned and the keys that wait for data.
    pub(super) fn track(
        &mut self,
        id: ScopeId,
        found: &[usize],
        lane: (bool, &[(usize, Band)]),
        span: (i64, i64),
        out: &mut Tracked,
    ) {
        let st = &mut self.states[id as usize];
        let (lasting, thin) = track_open(st, &self.rules, found, span, lane, &self.params);
        out.learned.extend(lasting.into_iter().map(|l| (id, l)));
        let labels = self.lanes.index.labels(id);
        out.waiting.extend(
            thin.into_iter()
                .map(|ri| (self.rules[ri].name.clone(), labels.clone())),
        );
    }
}
