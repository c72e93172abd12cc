//! Judging a closed usage bucket: every scope's structure and cost signals
//! against their baselines, then learning from the bucket.

use serde_json::json;

use super::open::{Tracked, found_rules, open_on_lane};
use super::report::SignalImpact;
use super::state::{MIXES, USAGE_SCALARS, learn_silence};
use super::{Engine, Tick, bar, linked_models, names};
use crate::detect::band::Band;
use crate::detect::drift::UsageContext;
use crate::detect::harm::{slow_excess, usage_harm};
use crate::detect::pvm::price_volume_mix;
use crate::detect::rules::{Detector, Rule, shape_of};
use crate::detect::view::{BucketView, Detection};
use crate::detect::words::round;
use crate::detect::{Finding, bump, creep, drift, step};
use crate::domain::{Impact, Lane, Scope, Signal, rfc3339_ms};
use crate::lanes::cell::Cell;
use crate::lanes::scopes::{GLOBAL, ScopeId};
use crate::lanes::signals::{mix_counts, samples, usage_value};
use crate::lanes::{ClosedBucket, Symbols};

/// How long a scope counts as new after its first traffic.
const NEWCOMER_WINDOW_MS: i64 = 3_600_000;
/// The share of all requests in a bucket that makes a new scope worth telling of;
/// smaller newcomers learn their baseline silently.
const NEWCOMER_SHARE: f64 = 0.02;
/// Requests in a bucket below which a newcomer's share says nothing (a quiet night).
const NEWCOMER_MIN_REQUESTS: u32 = 10;

/// One scope in one usage bucket, as its findings are built.
struct Judged<'a> {
    id: ScopeId,
    labels: &'a Scope,
    cell: &'a Cell,
    /// The scope's size: its blast radius.
    scope: &'a Impact,
    warming: bool,
    span: (i64, i64),
    /// All requests in the bucket (at least 1) and buckets per day.
    g_requests: f64,
    per_day: f64,
    syms: &'a Symbols,
}

impl Judged<'_> {
    /// A usage detection as a finding: the scope's size as evidence, the harm of
    /// the deviation as the impact its tier is chosen from, its excess for
    /// attribution. A drift during a change's warm-up is muted; steps and creep are
    /// not judged then, and a model bump is muted only when a change announced it.
    fn finding(&self, d: Detection, ri: usize, rule: &Rule) -> Finding {
        let (cell, test) = (self.cell, d.test);
        let mut evidence = d.evidence;
        evidence.insert(
            "impact".into(),
            serde_json::to_value(self.scope).unwrap_or_default(),
        );
        let (impact, harm) = usage_harm(
            rule.signal,
            self.scope,
            cell,
            &test,
            self.g_requests,
            self.per_day,
        );
        evidence.insert("observed".into(), d.observed);
        evidence.insert("baseline".into(), d.baseline);
        evidence.insert("test".into(), json!({"name": test.name, "z": round(test.z), "p_value": test.p_value, "change": round(test.rel)}));
        let (start, end) = self.span;
        evidence.insert("bucket".into(), json!({"start": rfc3339_ms::format(start), "end": rfc3339_ms::format(end), "requests": cell.requests}));
        let weight = match rule.signal {
            Signal::Requests | Signal::Spend => 1.0,
            s => samples(cell, s) as f64,
        };
        let warm = self.warming && !d.hard && rule.detector == Detector::Drift;
        Finding {
            rule: ri,
            rule_name: rule.name.clone(),
            scope: self.id,
            labels: self.labels.clone(),
            kind: rule.kind,
            lane: rule.lane(),
            signal: rule.signal,
            sign: test.sign,
            excess: match slow_excess(cell, rule.signal, &test) {
                Some(slow) => slow * test.sign,
                None => (test.diff * weight).abs() * test.sign,
            },
            summary: d.summary,
            evidence,
            impact,
            harm,
            muted: d
                .muted
                .or_else(|| warm.then(|| "warm-up after a change event".to_string())),
            hard: d.hard,
            max_tier: rule.max_tier.clone(),
            for_ms: rule.for_ms,
            links: names(linked_models(cell), self.syms),
        }
    }
}

impl Engine {
    pub(super) fn judge_usage(&mut self, b: ClosedBucket) -> Tick {
        let bucket_ms = self.params.analysis.bucket_ms();
        let (start, end) = (b.start_ms, b.start_ms + bucket_ms);
        let empty = Cell::default();
        let global = b.cells.get(&GLOBAL).unwrap_or(&empty);
        let (g_requests, g_spend) = (global.requests.max(1) as f64, global.cost);
        let per_day = 86_400_000.0 / bucket_ms as f64;
        let bp = self.params.baselines;
        let tolerance_ms = self.params.recalibration.tolerance_minutes * 60_000;
        let warmup_ms = self.params.recalibration.warmup_minutes * 60_000;
        let mut findings = Vec::new();
        let mut new_changes = Vec::new();
        let mut tracked = Tracked::default();
        // Before the gateway's own traffic has a baseline every scope is new.
        let settled = self
            .states
            .get(GLOBAL as usize)
            .is_some_and(|g| g.series[Signal::Requests.index()].has_baseline(start, false, &bp));

        for id in self.lanes.index.ids() {
            let cell = b.cells.get(&id).unwrap_or(&empty);
            let labels = self.lanes.index.labels(id);
            let shape = shape_of(labels.keys());
            let has_traffic = cell.requests > 0;
            let st = &mut self.states[id as usize];
            if !has_traffic && !st.series[Signal::Requests.index()].has_baseline(start, true, &bp) {
                tracked
                    .waiting
                    .extend(open_on_lane(st, &self.rules, false, labels));
                if st.seen {
                    learn_silence(&mut st.series, start, &bp);
                }
                continue;
            }
            if has_traffic && !st.seen {
                st.seen = true;
                st.first_seen = settled.then_some(start);
            }
            // A scope never seen before that takes a share of traffic at once (a
            // leaked key, a new integration gone wild) is judged without a baseline.
            let newcomer = st
                .first_seen
                .is_some_and(|f| start - f < NEWCOMER_WINDOW_MS)
                && cell.requests as f64 >= NEWCOMER_SHARE * g_requests
                && cell.requests >= NEWCOMER_MIN_REQUESTS;
            let warming = st.warm_until.is_some_and(|u| start < u);
            let impact = Impact {
                requests_share: cell.requests as f64 / g_requests,
                spend_share: if g_spend > 0.0 {
                    cell.cost / g_spend
                } else {
                    0.0
                },
                tenants: if labels.contains_key("tenant") {
                    has_traffic as u32
                } else {
                    cell.tenants.len() as u32
                },
                money_at_risk_per_day_usd: cell.cost * per_day,
                customer_facing: cell.customer_facing,
            };
            let keep = start - (self.params.analysis.eval_settle_minutes + 60) * 60_000;
            st.impacts.retain(|m| m.0 >= keep);
            st.impacts.push((start, impact.clone()));
            let judged = Judged {
                id,
                labels,
                cell,
                scope: &impact,
                warming,
                span: (start, end),
                g_requests,
                per_day,
                syms: &self.lanes.syms,
            };
            let view = BucketView::new(
                (start, end),
                labels,
                cell,
                (&st.series, &st.mixes),
                warming,
                &bp,
            );
            let pvm = price_volume_mix(&view, &st.models);
            let first = findings.len();
            for (ri, rule) in self.rules.iter().enumerate() {
                if rule.lane() == Lane::Eval || !rule.scopes.contains(&shape) {
                    continue;
                }
                let open = st.open.iter().any(|o| o.rule == ri && o.confirmed);
                let rule = &*bar(rule, open);
                let detection = match rule.detector {
                    Detector::Drift if rule.signal.is_mix() => {
                        drift::mix(rule, &view, &self.lanes.syms)
                    }
                    Detector::Drift => {
                        let ctx = UsageContext {
                            recent: &st.recent,
                            newcomer: newcomer.then_some(impact.requests_share),
                            pvm: pvm.as_ref(),
                        };
                        drift::usage(rule, &view, &ctx)
                    }
                    Detector::Step => {
                        let state = st.steps.entry(rule.signal).or_default();
                        step::detect(rule, &view, state, &self.changes, tolerance_ms)
                    }
                    Detector::Creep => creep::detect(rule, &view, open),
                    Detector::ModelBump => {
                        let windows = (tolerance_ms, warmup_ms);
                        let syms = &self.lanes.syms;
                        bump::detect(rule, &view, syms, &mut st.bump, &self.changes, windows).map(
                            |b| {
                                new_changes.extend(b.detected);
                                b.detection
                            },
                        )
                    }
                    Detector::FalseEfficiency => None,
                };
                if let Some(d) = detection {
                    findings.push(judged.finding(d, ri, rule));
                }
            }
            let found = found_rules(&findings[first..]);
            let bands: Vec<(usize, Band)> = st
                .open
                .iter()
                .map(|o| (o.rule, Band::usage(&self.rules[o.rule], &view, &st.recent)))
                .collect();
            self.track(id, &found, (false, &bands), (start, end), &mut tracked);
            // Learn from this bucket (after judging it, so it is not its own baseline).
            let st = &mut self.states[id as usize];
            if !has_traffic {
                learn_silence(&mut st.series, start, &bp);
            }
            for signal in USAGE_SCALARS.into_iter().filter(|_| has_traffic) {
                if let Some(v) = usage_value(cell, signal) {
                    if signal == Signal::CostPerRequest {
                        if let Some(base) = st.series[signal.index()].baseline(start, false, &bp) {
                            st.cost_moves.push((
                                start,
                                (v - base.median) / base.median.abs().max(1e-12),
                                base.z(v, 0.02),
                            ));
                            st.cost_moves.retain(|m| m.0 >= keep);
                        }
                    }
                    st.series[signal.index()].push(start, v, &bp);
                }
            }
            if has_traffic {
                st.recent.push(cell);
                st.linked.clear();
                st.linked.extend(linked_models(cell));
                for signal in MIXES {
                    st.mixes[signal.index()].add(&mix_counts(cell, signal), self.decay, start);
                }
                st.models.add(cell, self.decay);
            }
            if st.warm_until.is_some_and(|u| end >= u) {
                self.end_usage_warmup(id);
            }
        }
        for c in new_changes {
            self.out.changes.push(c.clone());
            self.observe_change(&c);
        }
        let learned = self.learned(tracked.learned, end);
        self.tick(
            findings,
            end,
            vec![Lane::Structure, Lane::Cost],
            learned,
            tracked.waiting,
        )
    }

    fn end_usage_warmup(&mut self, id: ScopeId) {
        let rp = self.params.recalibration;
        let bp = self.params.baselines;
        let st = &mut self.states[id as usize];
        st.warm_until = None;
        let mut signals = Vec::new();
        for signal in USAGE_SCALARS {
            let series = &mut st.series[signal.index()];
            if let Some(v) = series.end_warmup(
                signal.seasonal_only(),
                signal == Signal::Requests,
                rp.min_shift,
                &bp,
            ) {
                if !v.changed {
                    series.reanchor(&bp);
                }
                signals.push(SignalImpact { signal, verdict: v });
            }
        }
        let mut mixes = Vec::new();
        for signal in MIXES {
            if let Some(t) = st.mixes[signal.index()].end_warmup(rp.min_mix_shift) {
                if t.p_value < 0.001 && t.tvd >= rp.min_mix_shift {
                    mixes.push((signal, round(t.tvd), t.p_value));
                }
            }
        }
        st.pending_report = Some(signals);
        st.pending_mixes = mixes;
    }
}
