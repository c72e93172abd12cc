//! Judging a settled eval bucket: every scope's answer quality and eval coverage
//! against their baselines, then learning from the bucket.

use serde_json::json;

use super::open::{Tracked, found_rules, open_on_lane};
use super::report::SignalImpact;
use super::state::EVAL_SCALARS;
use super::{Engine, Tick, bar, names};
use crate::detect::band::Band;
use crate::detect::rules::{Detector, Rule, shape_of};
use crate::detect::view::{BucketView, Detection};
use crate::detect::words::round;
use crate::detect::{Finding, creep, drift, efficiency, pooled};
use crate::domain::{ChangeEvent, Impact, Lane, Signal, rfc3339_ms};
use crate::lanes::SettledBucket;
use crate::lanes::scopes::{GLOBAL, ScopeId};
use crate::lanes::signals::eval_value;

impl Engine {
    pub(super) fn judge_evals(&mut self, b: SettledBucket) -> Tick {
        let bucket_ms = self.params.analysis.bucket_ms();
        let (start, end) = (b.start_ms, b.start_ms + bucket_ms);
        let bp = self.params.baselines;
        let mut findings = Vec::new();
        let mut tracked = Tracked::default();
        let mut ids: Vec<ScopeId> = b.cells.keys().copied().collect();
        ids.sort_unstable();
        let g_requests = b.cells.get(&GLOBAL).map_or(1, |c| c.requests.max(1)) as f64;
        // A scope with no requests in the bucket has nothing to judge: its open
        // alerts wait for data rather than resolve.
        for (id, st) in self.states.iter().enumerate() {
            if !b.cells.contains_key(&(id as ScopeId)) {
                let labels = self.lanes.index.labels(id as ScopeId);
                tracked
                    .waiting
                    .extend(open_on_lane(st, &self.rules, true, labels));
            }
        }
        for id in ids {
            let cell = &b.cells[&id];
            let labels = self.lanes.index.labels(id);
            let shape = shape_of(labels.keys());
            let st = &mut self.states[id as usize];
            let warming = st.eval_warm_until.is_some_and(|u| start < u);
            // The bucket's blast radius as the usage lane measured it, when it is
            // still kept (a scope's eval bucket can outlive its usage record).
            let measured = st.impacts.iter().find(|m| m.0 == start).map(|m| &m.1);
            let scope_size = measured.cloned().unwrap_or_default();
            // Every answer in scope is affected by a quality or coverage drift: its
            // harm is the scope's share of requests, averaged over the buckets the
            // usage lane still keeps (a few hours): one night bucket where the scope
            // had most of the little traffic must not make a slow quality finding a page.
            let shares = st.impacts.iter().map(|m| m.1.requests_share);
            let kept = st.impacts.len().max(1) as f64;
            let impact = Impact {
                requests_share: match st.impacts.is_empty() {
                    true => cell.requests as f64 / g_requests,
                    false => shares.sum::<f64>() / kept,
                },
                tenants: scope_size.tenants,
                customer_facing: scope_size.customer_facing,
                ..Impact::default()
            };
            let cost_move = st
                .cost_moves
                .iter()
                .find(|m| m.0 == start)
                .map(|&(_, rel, z)| (rel, z));
            // A thin scope's scores pool over buckets until a score rule can judge them.
            let pooled = self
                .rules
                .iter()
                .find(|r| pools_scores(r) && r.scopes.contains(&shape))
                .and_then(|r| st.score_pool.add(start, cell, r.min_samples));
            let view = BucketView::new(
                (start, end),
                labels,
                cell,
                (&st.series, &st.mixes),
                warming,
                &bp,
            );
            let finding = |d: Detection, ri: usize, rule: &Rule| {
                let mut evidence = d.evidence;
                evidence.insert("observed".into(), d.observed);
                evidence.insert("baseline".into(), d.baseline);
                let test = d.test;
                evidence.insert("test".into(), json!({"name": test.name, "z": round(test.z), "p_value": test.p_value, "change": round(test.rel)}));
                evidence.insert("bucket".into(), json!({"start": rfc3339_ms::format(start), "end": rfc3339_ms::format(end), "requests": cell.requests, "evaluated": cell.evaluated, "scores": cell.scores}));
                if let Some(size) = measured {
                    evidence.insert(
                        "impact".into(),
                        serde_json::to_value(size).unwrap_or_default(),
                    );
                }
                Finding {
                    rule: ri,
                    rule_name: rule.name.clone(),
                    scope: id,
                    labels: labels.clone(),
                    kind: rule.kind,
                    lane: Lane::Eval,
                    signal: rule.signal,
                    sign: test.sign,
                    excess: test.diff * cell.requests.max(1) as f64,
                    summary: d.summary,
                    evidence,
                    impact: impact.clone(),
                    harm: "the scope's share of requests (every answer in it is affected)",
                    muted: d
                        .muted
                        .or_else(|| warming.then(|| "warm-up after a change event".to_string())),
                    hard: false,
                    max_tier: rule.max_tier.clone(),
                    for_ms: rule.for_ms,
                    links: names(st.linked.iter().copied(), &self.lanes.syms),
                }
            };
            let first = findings.len();
            for (ri, rule) in self.rules.iter().enumerate() {
                if rule.lane() != Lane::Eval || !rule.scopes.contains(&shape) {
                    continue;
                }
                let open = st.open.iter().any(|o| o.rule == ri && o.confirmed);
                let rule = &*bar(rule, open);
                let detection = match rule.detector {
                    Detector::Drift => drift::eval(rule, &view).or_else(|| {
                        let p = pooled.filter(|_| pools_scores(rule))?;
                        pooled::score(rule, &view, &p)
                    }),
                    Detector::Creep => creep::detect(rule, &view, open),
                    Detector::FalseEfficiency => efficiency::detect(rule, &view, cost_move),
                    Detector::Step | Detector::ModelBump => None,
                };
                if let Some(d) = detection {
                    findings.push(finding(d, ri, rule));
                }
            }
            let found = found_rules(&findings[first..]);
            let thin = |rule: &Rule| pools_scores(rule) && (cell.scores as u64) < rule.min_samples;
            let bands: Vec<(usize, Band)> = st
                .open
                .iter()
                .map(|o| {
                    let rule = &self.rules[o.rule];
                    // A thin scope's open score alert is told by its next full pool.
                    let band = match (thin(rule), pooled) {
                        (false, _) => Band::eval(rule, &view),
                        (true, Some(p)) => match pooled::inside(rule, &p) {
                            Some(true) => Band::Inside,
                            Some(false) => Band::Outside,
                            None => Band::Unknown,
                        },
                        (true, None) => Band::Unknown,
                    };
                    (o.rule, band)
                })
                .collect();
            self.track(id, &found, (true, &bands), (start, end), &mut tracked);
            let st = &mut self.states[id as usize];
            // Like a series, the pooled means do not learn while a score alert is open.
            let held = st.open.iter().any(|o| pools_scores(&self.rules[o.rule]));
            if let Some(p) = pooled.filter(|_| !held) {
                st.score_pool.learn(p.mean);
            }
            for signal in EVAL_SCALARS {
                if let Some(v) = eval_value(cell, signal) {
                    st.series[signal.index()].push(start, v, &bp);
                }
            }
            if st.eval_warm_until.is_some_and(|u| end >= u) {
                self.end_eval_warmup(id, end);
            }
        }
        let learned = self.learned(tracked.learned, end);
        self.tick(findings, end, vec![Lane::Eval], learned, tracked.waiting)
    }

    fn end_eval_warmup(&mut self, id: ScopeId, at_ms: i64) {
        let rp = self.params.recalibration;
        let bp = self.params.baselines;
        let labels = self.lanes.index.labels(id).clone();
        let st = &mut self.states[id as usize];
        st.eval_warm_until = None;
        let mut signals = st.pending_report.take().unwrap_or_default();
        for signal in EVAL_SCALARS {
            let series = &mut st.series[signal.index()];
            if let Some(v) = series.end_warmup(false, false, rp.min_shift, &bp) {
                if !v.changed {
                    series.reanchor(&bp);
                }
                signals.push(SignalImpact { signal, verdict: v });
            }
        }
        let mixes = std::mem::take(&mut st.pending_mixes);
        // The report belongs to the change's own scope (global for an empty scope); two
        // changes in one warm-up share the comparison rather than lose a report.
        let due: Vec<ChangeEvent> = std::mem::take(&mut st.warm_changes)
            .into_iter()
            .map(|i| self.changes[i].clone())
            .filter(|c| c.scope == labels)
            .collect();
        for change in due {
            self.report(
                change,
                labels.clone(),
                signals.clone(),
                mixes.clone(),
                at_ms,
            );
        }
    }
}

/// Whether `rule` judges eval scores bucket by bucket, and so pools a thin scope's.
fn pools_scores(rule: &Rule) -> bool {
    rule.detector == Detector::Drift && rule.signal == Signal::EvalScore
}
