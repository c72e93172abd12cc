//! The analysis engine: lanes → baselines → detectors, on a data clock.
//!
//! `serve` feeds it committed batches and advances it with the wall clock;
//! `replay` feeds it files and advances it with the newest event time. Nothing
//! here does IO: the caller stores what comes out (alert ticks, detected change
//! events, change-impact reports), so live and replay share every decision.

mod evals;
mod open;
mod report;
mod snapshot;
mod state;
mod usage;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::baselines::BaselineParams;
use crate::detect::rules::{Rule, Shape};
use crate::detect::{Finding, attribute, dedupe};
use crate::domain::{ChangeEvent, EvalScore, Lane, Scope, UsageEvent, rfc3339_ms};
use crate::lanes::cell::Cell;
use crate::lanes::scopes::ScopeId;
use crate::lanes::{LaneParams, Lanes, PairError};
use open::Open;
pub use report::{ImpactReport, SignalImpact};
pub use snapshot::{Cut, FORMAT_VERSION, SnapshotError};
use state::ScopeState;

/// Engine parameters: `[analysis]` and `[baselines]` in the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineParams {
    /// Buckets, lateness, eval settling, scopes.
    pub analysis: LaneParams,
    /// How baselines learn.
    pub baselines: BaselineParams,
    /// Recalibration after change events.
    pub recalibration: RecalibrationParams,
}

/// How change events recalibrate baselines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecalibrationParams {
    /// Minutes after a change during which its scope raises no drift alert and
    /// post-change values are gathered for the impact report.
    pub warmup_minutes: i64,
    /// Smallest relative level shift after a change that starts a new epoch.
    pub min_shift: f64,
    /// Smallest total variation distance of a mix after a change that starts a new epoch.
    pub min_mix_shift: f64,
    /// A step or model bump within this many minutes of a covering change event
    /// counts as announced.
    pub tolerance_minutes: i64,
}

impl Default for RecalibrationParams {
    fn default() -> RecalibrationParams {
        RecalibrationParams {
            warmup_minutes: 360,
            min_shift: 0.05,
            min_mix_shift: 0.05,
            tolerance_minutes: 60,
        }
    }
}

/// One evaluation: the findings of one bucket on some lanes.
#[derive(Debug, Clone)]
pub struct Tick {
    /// Data time of the evaluation (the bucket's end), ms.
    pub at_ms: i64,
    /// The earliest data time it could be judged live: the bucket's end plus the
    /// lateness allowance (usage) or the eval settling time (evals). Replay runs its
    /// notifications on this clock.
    pub judged_ms: i64,
    /// The lanes evaluated (alerts of rules on other lanes are left as they are).
    pub lanes: Vec<Lane>,
    /// Positive findings after attribution.
    pub findings: Vec<Finding>,
    /// Lasting levels learned as the new normal in this evaluation: (rule, scope,
    /// what a person reads when its alert resolves).
    pub learned: Vec<(String, Scope, String)>,
    /// Conditions still found but left out by attribution (a parent or child speaks
    /// for them) or by one-per-kind, and open alerts whose bucket was too thin to
    /// judge: an alert already firing on them keeps firing rather than resolve and
    /// fire again as attribution moves between scopes or a quiet night passes.
    pub holding: Vec<(String, Scope)>,
}

/// What the engine produced since the last drain.
#[derive(Debug, Default)]
pub struct Output {
    /// Evaluations, in order.
    pub ticks: Vec<Tick>,
    /// Change events detected in the data (model bumps), to be stored.
    pub changes: Vec<ChangeEvent>,
    /// Finished change-impact reports, to be stored and notified.
    pub reports: Vec<ImpactReport>,
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    params: EngineParams,
    rules: Vec<Rule>,
    lanes: Lanes,
    states: Vec<ScopeState>,
    /// Every change event known, posted or detected, in the order they came.
    changes: Vec<ChangeEvent>,
    decay: f64,
    out: Output,
}

impl Engine {
    /// An engine with these rules; errors name a bad `[analysis]` setting.
    pub fn new(params: EngineParams, rules: Vec<Rule>) -> Result<Engine, PairError> {
        let plan = params.analysis.plan()?;
        let decay = 0.5f64.powf(1.0 / params.baselines.mix_half_life.max(1.0));
        Ok(Engine {
            lanes: Lanes::new(params.analysis.clone(), plan),
            params,
            rules,
            states: Vec::new(),
            changes: Vec::new(),
            decay,
            out: Output::default(),
        })
    }

    /// The pair shapes configured, for rule validation.
    pub fn pair_shapes(params: &LaneParams) -> Result<Vec<Shape>, PairError> {
        Ok(params
            .plan()?
            .pairs
            .iter()
            .map(|&(a, b)| (1 << a) | (1 << b))
            .collect())
    }

    /// Counters of records the lanes could not use.
    pub fn counters(&self) -> crate::lanes::LaneCounters {
        self.lanes.counters
    }

    /// Count an event.
    pub fn observe_event(&mut self, e: &UsageEvent) {
        self.lanes.add_event(e);
    }

    /// Count an eval score.
    pub fn observe_eval(&mut self, e: &EvalScore) {
        self.lanes.add_eval(e);
    }

    /// A change event: every series whose traffic overlaps its scope starts a warm-up.
    pub fn observe_change(&mut self, c: &ChangeEvent) {
        let known = self.changes.iter().any(|k| {
            k.kind == c.kind && k.ts_ms == c.ts_ms && k.scope == c.scope && k.note == c.note
        });
        if known {
            return;
        }
        let warm_until = c.ts_ms + self.params.recalibration.warmup_minutes * 60_000;
        self.changes.push(c.clone());
        let idx = self.changes.len() - 1;
        let ids: Vec<ScopeId> = self.lanes.index.ids().collect();
        self.ensure_states();
        for id in ids {
            if !self.lanes.index.overlaps(id, &c.scope) {
                continue;
            }
            let st = &mut self.states[id as usize];
            st.warm_until = Some(st.warm_until.map_or(warm_until, |w| w.max(warm_until)));
            st.eval_warm_until = st.warm_until;
            st.warm_changes.push(idx);
            for s in &mut st.series {
                s.begin_warmup(c.ts_ms);
            }
            for s in st.steps.values_mut() {
                s.cusum.reset();
            }
            for m in &mut st.mixes {
                m.begin_warmup(c.ts_ms);
            }
        }
    }

    fn ensure_states(&mut self) {
        // A small scope's rates pool at most an hour of buckets.
        let pool_buckets = (3_600_000 / self.params.analysis.bucket_ms()).max(1) as usize;
        while self.states.len() < self.lanes.index.len() {
            self.states.push(ScopeState::new(pool_buckets));
        }
    }

    /// Move the data clock to `watermark_ms`: close and judge every bucket that is
    /// due, and judge every bucket whose evals settled.
    pub fn advance(&mut self, watermark_ms: i64) {
        // A clock before any data (a replay whose first records were all counted
        // before) judges nothing.
        if watermark_ms == i64::MIN {
            return;
        }
        self.advance_split(watermark_ms, watermark_ms);
    }

    /// The data ends at `last_ms` (a replay's files are read): judge every complete
    /// bucket and the evals of each (the files held every eval there is). The bucket
    /// `last_ms` falls in is partial and is left unjudged, not read as a drop.
    pub fn end_of_data(&mut self, last_ms: i64) {
        let p = &self.params.analysis;
        let partial = last_ms.div_euclid(p.bucket_ms()) * p.bucket_ms();
        self.advance_split(partial + p.lateness_minutes * 60_000, i64::MAX / 4);
    }

    /// Judge the due buckets of both lanes in the order a clock moving one bucket at
    /// a time would: each eval bucket that settled before a usage bucket closed is
    /// judged before it. So hours of data arriving at once (a replay's batch, a
    /// backfill) tell the same story as a steady stream; judged lane by lane, a
    /// lasting step learned hours after its start would resolve its incident before
    /// the evals of that start could join it.
    fn advance_split(&mut self, watermark_ms: i64, eval_watermark_ms: i64) {
        let a = &self.params.analysis;
        let closes_after = a.bucket_ms() + a.lateness_minutes * 60_000;
        for bucket in self.lanes.close_until(watermark_ms) {
            // At a tie the usage bucket goes first, as at one watermark step.
            let due = bucket.start_ms + closes_after;
            self.settle_until(eval_watermark_ms.min(due - 1));
            self.ensure_states();
            let tick = self.judge_usage(bucket);
            self.out.ticks.push(tick);
        }
        self.settle_until(eval_watermark_ms);
    }

    fn settle_until(&mut self, eval_watermark_ms: i64) {
        for bucket in self.lanes.settle_until(eval_watermark_ms) {
            self.ensure_states();
            let tick = self.judge_evals(bucket);
            self.out.ticks.push(tick);
        }
    }

    /// Take what was produced.
    pub fn drain(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    /// An evaluation's tick: its findings attributed to the smallest explaining scope
    /// and one per scope and kind, with nearby change events in their evidence.
    fn tick(
        &self,
        findings: Vec<Finding>,
        at_ms: i64,
        lanes: Vec<Lane>,
        learned: Vec<(String, Scope, String)>,
        waiting: Vec<(String, Scope)>,
    ) -> Tick {
        let raw: Vec<(String, Scope)> = findings
            .iter()
            .filter(|f| f.muted.is_none() || f.hard)
            .map(|f| (f.rule_name.clone(), f.labels.clone()))
            .collect();
        let mut kept = dedupe(attribute(findings, &self.lanes.index));
        for f in &mut kept {
            f.evidence.insert(
                "changes".into(),
                nearby_changes(self.changes.iter(), &f.labels, at_ms),
            );
        }
        let holding = raw
            .into_iter()
            .filter(|k| !kept.iter().any(|f| f.rule_name == k.0 && f.labels == k.1))
            .chain(waiting)
            .collect();
        let a = &self.params.analysis;
        let wait = match lanes.contains(&Lane::Eval) {
            true => a.eval_settle_minutes,
            false => a.lateness_minutes,
        };
        Tick {
            at_ms,
            judged_ms: at_ms + wait * 60_000,
            lanes,
            findings: kept,
            learned,
            holding,
        }
    }
}

/// The changes a reader should weigh as a cause, newest first: posted ones of
/// the last day, and ones the data showed within two hours (a change learned
/// hours ago explains nothing new), at most three.
fn nearby_changes<'a>(
    changes: impl Iterator<Item = &'a ChangeEvent>,
    scope: &Scope,
    at_ms: i64,
) -> Value {
    let reach = |c: &ChangeEvent| match c.origin == "detected" {
        true => 2 * 3_600_000,
        false => 86_400_000,
    };
    let mut near: Vec<&ChangeEvent> = changes
        .filter(|c| (at_ms - reach(c)..=at_ms).contains(&c.ts_ms))
        .filter(|c| {
            c.scope
                .iter()
                .all(|(k, v)| scope.get(k).is_none_or(|x| x == v))
        })
        .collect();
    near.sort_by_key(|c| std::cmp::Reverse(c.ts_ms));
    let list = near
        .into_iter()
        .take(3)
        .map(|c| json!({"kind": c.kind, "at": rfc3339_ms::format(c.ts_ms), "scope": c.scope, "note": c.note, "origin": c.origin}))
        .collect();
    Value::Array(list)
}

/// The bar a rule's finding must pass: its own, or once its alert fired on the
/// scope the relaxed one that keeps it firing while the condition holds.
fn bar(rule: &Rule, open: bool) -> std::borrow::Cow<'_, Rule> {
    match open {
        true => std::borrow::Cow::Owned(rule.relaxed()),
        false => std::borrow::Cow::Borrowed(rule),
    }
}

/// Requested models carrying a tenth or more of a cell's requests.
fn linked_models(cell: &Cell) -> impl Iterator<Item = u32> + '_ {
    let floor = cell.requests as f64 * 0.1;
    cell.by_model
        .iter()
        .filter(move |(_, share)| share.requests as f64 >= floor && share.requests > 0)
        .map(|(m, _)| *m)
}

/// The names of `models`, for a finding's links.
fn names(models: impl Iterator<Item = u32>, syms: &crate::lanes::Symbols) -> Vec<String> {
    models.map(|m| syms.name(m).to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChangeKind;
    use crate::store::tests::event;

    /// The evaluations an engine produces for eight hours of requests (each scored
    /// ten minutes later), advanced every `step_ms`: (lanes, data time, judged time).
    fn ticks_advanced_every(step_ms: i64) -> Vec<(Vec<Lane>, i64, i64)> {
        let mut engine = Engine::new(EngineParams::default(), Vec::new()).expect("defaults");
        let (span, every) = (8 * 3_600_000, 60_000);
        let mut ticks = Vec::new();
        let mut advanced = 0;
        for ts in (0..span).step_by(every as usize) {
            let id = format!("r{ts}");
            engine.observe_event(&event(&id, ts));
            engine.observe_eval(&EvalScore {
                request_id: Some(id),
                route: None,
                model: None,
                evaluator: "judge".into(),
                ts_ms: ts + 600_000,
                score: Some(0.9),
                passed: None,
            });
            if ts - advanced >= step_ms {
                engine.advance(ts);
                advanced = ts;
                ticks.extend(engine.drain().ticks);
            }
        }
        engine.advance(span);
        ticks.extend(engine.drain().ticks);
        ticks
            .into_iter()
            .map(|t| (t.lanes, t.at_ms, t.judged_ms))
            .collect()
    }

    #[test]
    fn hours_of_data_at_once_are_judged_in_the_order_a_steady_stream_is() {
        let steady = ticks_advanced_every(60_000);
        let at_once = ticks_advanced_every(i64::MAX);
        assert!(
            steady.iter().any(|t| t.0 == [Lane::Eval]) && steady.len() > 40,
            "both lanes judged: {steady:?}"
        );
        assert_eq!(at_once, steady);
        let judged: Vec<i64> = steady.iter().map(|t| t.2).collect();
        assert!(judged.is_sorted(), "judged times run forward: {judged:?}");
    }

    #[test]
    fn nearby_changes_are_posted_ones_of_the_day_and_fresh_detected_ones() {
        let change = |h: i64, origin: &str, route: Option<&str>| ChangeEvent {
            kind: ChangeKind::Deploy,
            ts_ms: h * 3_600_000,
            scope: route
                .map(|r| [("route".to_string(), r.to_string())].into())
                .unwrap_or_default(),
            note: format!("{origin} at {h}"),
            origin: origin.into(),
        };
        let all = [
            change(1, "api", None),
            change(10, "detected", None),
            change(19, "detected", None),
            change(20, "api", Some("chat")),
            change(20, "api", Some("extract")),
            change(21, "calendar", None),
            change(22, "api", None),
        ];
        let chat: Scope = [("route".to_string(), "chat".to_string())].into();
        let notes = |v: Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c["note"].as_str().unwrap().to_string())
                .collect()
        };
        // At 20:30 on route chat: newest first, at most three; a change detected at
        // 10:00 or one on another route explains nothing here.
        let near = nearby_changes(all.iter(), &chat, 20 * 3_600_000 + 1_800_000);
        assert_eq!(notes(near), ["api at 20", "detected at 19", "api at 1"]);
        let later = nearby_changes(all.iter(), &Scope::new(), 23 * 3_600_000);
        assert_eq!(notes(later), ["api at 22", "calendar at 21", "api at 20"]);
    }
}
