//! The analysis engine: lanes → baselines → detectors, on a data clock.
//!
//! `serve` feeds it committed batches and advances it with the wall clock;
//! `replay` feeds it files and advances it with the newest event time. Nothing
//! here does IO: the caller stores what comes out (alert ticks, detected change
//! events, change-impact reports), so live and replay share every decision.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::baselines::{BaselineParams, Mix, Series, Verdict};
use crate::detect::rules::{Detector, Rule, Shape, shape_of};
use crate::detect::{Counts, Finding, Test, attribute, dedupe, judge_scalar, movement, stats};
use crate::domain::{
    Baseline, ChangeEvent, ChangeKind, EvalScore, Impact, Lane, Scope, Signal, UsageEvent,
    rfc3339_ms, scope_label,
};
use crate::lanes::cell::{Cell, EvalCell};
use crate::lanes::scopes::{GLOBAL, ScopeId};
use crate::lanes::signals::{
    category_name, eval_samples, eval_value, mix_counts, samples, usage_value,
};
use crate::lanes::{ClosedBucket, LaneParams, Lanes, SettledBucket};

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

/// An open alert as the engine tracks it on one scope: its series are held (not
/// learned) and it is judged against the relaxed bar until it is calm.
#[derive(Debug, Clone, Copy)]
struct Open {
    rule: usize,
    since_ms: i64,
    /// Evaluations in a row without a finding.
    calm: u32,
    /// Whether its condition held for the rule's `for` (its alert fires): only then
    /// is it judged against the relaxed bar. A blip that never fired closes at once.
    confirmed: bool,
}

/// Evaluations in a row back inside the band before an open alert closes and its
/// series learn again.
const CALM_TO_CLOSE: u32 = 3;

/// Before/after comparison of one signal for a change-impact report.
#[derive(Debug, Clone, Serialize)]
pub struct SignalImpact {
    /// The signal.
    pub signal: Signal,
    /// The comparison.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What a change event did, per signal, with confidence.
#[derive(Debug, Clone, Serialize)]
pub struct ImpactReport {
    /// The change.
    pub change: ChangeEvent,
    /// When the report was made (data time), ms.
    pub at_ms: i64,
    /// The scope the report is about.
    pub scope: Scope,
    /// Numeric signals compared before and after.
    pub signals: Vec<SignalImpact>,
    /// Mixes and distributions that moved: (signal, total variation, p-value).
    pub mixes: Vec<(Signal, f64, f64)>,
    /// One paragraph a person reads.
    pub summary: String,
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

#[derive(Debug)]
struct KnownChange {
    event: ChangeEvent,
}

#[derive(Debug, Default)]
struct ScopeState {
    series: Vec<Series>,
    mixes: Vec<Mix>,
    /// Per-model (requests, spend) pool for price-volume-mix.
    models: ModelPool,
    warm_until: Option<i64>,
    eval_warm_until: Option<i64>,
    /// Changes whose warm-up covers this scope and whose report is still due.
    warm_changes: Vec<usize>,
    pending_report: Option<Vec<SignalImpact>>,
    pending_mixes: Vec<(Signal, f64, f64)>,
    steps: FxHashMap<Signal, f64>,
    bumped_to: Option<u32>,
    /// The posted change that announced the switch to `bumped_to`, if one did.
    bump_cover: Option<ChangeEvent>,
    /// (bucket start, relative change, z) of cost per request, for false efficiency.
    cost_moves: Vec<(i64, f64, f64)>,
    /// (bucket start, blast radius) of buckets whose evals are not judged yet.
    impacts: Vec<(i64, Impact)>,
    /// Rules with an open alert on this scope.
    open: Vec<Open>,
    /// (requests, errors, truncated) of the scope's last buckets with traffic, for
    /// judging a small scope's rates over pooled buckets.
    pooled: std::collections::VecDeque<(u32, u32, u32)>,
    /// Models carrying a tenth or more of the scope's requests in its last bucket
    /// with traffic: the links of its eval findings.
    linked: Vec<u32>,
    /// Start of the first bucket with traffic, once the gateway's own traffic had
    /// a baseline (`None` for scopes that were there from the start).
    first_seen: Option<i64>,
    /// Whether the scope had traffic before; `first_seen` is set only once.
    seen: bool,
}

impl ScopeState {
    fn new() -> ScopeState {
        ScopeState {
            series: vec![Series::default(); Signal::ALL.len()],
            mixes: vec![Mix::default(); Signal::ALL.len()],
            ..ScopeState::default()
        }
    }
}

/// How long a scope counts as new after its first traffic.
const NEWCOMER_WINDOW_MS: i64 = 3_600_000;
/// The share of all requests in a bucket that makes a new scope worth telling of;
/// smaller newcomers learn their baseline silently.
const NEWCOMER_SHARE: f64 = 0.02;
/// Requests in a bucket below which a newcomer's share says nothing (a quiet night).
const NEWCOMER_MIN_REQUESTS: u32 = 10;

const USAGE_SCALARS: [Signal; 9] = [
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
const MIXES: [Signal; 6] = [
    Signal::StatusMix,
    Signal::FinishMix,
    Signal::ResolvedModelMix,
    Signal::PromptTokens,
    Signal::CompletionTokens,
    Signal::ModelMix,
];
const EVAL_SCALARS: [Signal; 4] = [
    Signal::EvalScore,
    Signal::EvalPassRate,
    Signal::EvalCoverage,
    Signal::EvalLag,
];

/// The engine.
#[derive(Debug)]
pub struct Engine {
    params: EngineParams,
    rules: Vec<Rule>,
    lanes: Lanes,
    states: Vec<ScopeState>,
    changes: Vec<KnownChange>,
    decay: f64,
    out: Output,
}

impl Engine {
    /// An engine with these rules; errors name a bad `[analysis]` setting.
    pub fn new(params: EngineParams, rules: Vec<Rule>) -> Result<Engine, String> {
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
    pub fn pair_shapes(params: &LaneParams) -> Result<Vec<Shape>, String> {
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
            k.event.kind == c.kind
                && k.event.ts_ms == c.ts_ms
                && k.event.scope == c.scope
                && k.event.note == c.note
        });
        if known {
            return;
        }
        let warm_until = c.ts_ms + self.params.recalibration.warmup_minutes * 60_000;
        self.changes.push(KnownChange { event: c.clone() });
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
            for m in &mut st.mixes {
                m.begin_warmup(c.ts_ms);
            }
        }
    }

    fn ensure_states(&mut self) {
        while self.states.len() < self.lanes.index.len() {
            self.states.push(ScopeState::new());
        }
    }

    /// Move the data clock to `watermark_ms`: close and judge every bucket that is
    /// due, and judge every bucket whose evals settled.
    pub fn advance(&mut self, watermark_ms: i64) {
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

    fn advance_split(&mut self, watermark_ms: i64, eval_watermark_ms: i64) {
        for bucket in self.lanes.close_until(watermark_ms) {
            self.ensure_states();
            let tick = self.judge_usage(bucket);
            self.out.ticks.push(tick);
        }
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

    fn judge_usage(&mut self, b: ClosedBucket) -> Tick {
        let bucket_ms = self.params.analysis.bucket_ms();
        let (start, end) = (b.start_ms, b.start_ms + bucket_ms);
        let empty = Cell::default();
        let global = b.cells.get(&GLOBAL).unwrap_or(&empty);
        let (g_requests, g_spend) = (global.requests.max(1) as f64, global.cost);
        let per_day = 86_400_000.0 / bucket_ms as f64;
        // Buckets a small scope's rates may pool: an hour's worth.
        let pool_buckets = (3_600_000 / bucket_ms).max(1) as usize;
        let bp = self.params.baselines;
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
            let pvm = price_volume_mix(st, cell, start, &bp);
            let keep = start - (self.params.analysis.eval_settle_minutes + 60) * 60_000;
            st.impacts.retain(|m| m.0 >= keep);
            st.impacts.push((start, impact.clone()));
            let first = findings.len();
            // Each signal's baseline once per scope and bucket: several rules and the
            // open alerts' bands read the same one.
            let mut bases = [None; Signal::ALL.len()];
            for (ri, rule) in self.rules.iter().enumerate() {
                if rule.lane() == Lane::Eval || !rule.scopes.contains(&shape) {
                    continue;
                }
                let open = st.open.iter().any(|o| o.rule == ri && o.confirmed);
                let rule = &*bar(rule, open);
                let finding = |test: Test,
                               observed: Value,
                               baseline: Value,
                               summary: String,
                               mut evidence: serde_json::Map<String, Value>,
                               hard: bool| {
                    let weight = match rule.signal {
                        Signal::Requests | Signal::Spend => 1.0,
                        s => samples(cell, s) as f64,
                    };
                    // The scope's size is its blast radius; the deviation's harm
                    // chooses the tier (`evidence.tier`).
                    evidence.insert(
                        "impact".into(),
                        serde_json::to_value(&impact).unwrap_or_default(),
                    );
                    let (impact, harm) =
                        usage_harm(rule.signal, &impact, cell, &test, g_requests, per_day);
                    evidence.insert("observed".into(), observed);
                    evidence.insert("baseline".into(), baseline);
                    evidence.insert("test".into(), json!({"name": test.name, "z": round(test.z), "p_value": test.p_value, "change": round(test.rel)}));
                    evidence.insert("bucket".into(), json!({"start": rfc3339_ms::format(start), "end": rfc3339_ms::format(end), "requests": cell.requests}));
                    Finding {
                        rule: ri,
                        rule_name: rule.name.clone(),
                        scope: id,
                        labels: labels.clone(),
                        kind: rule.kind,
                        lane: rule.lane(),
                        signal: rule.signal,
                        sign: test.sign,
                        excess: match slow_excess(cell, rule.signal, &test) {
                            Some(slow) => slow * test.sign,
                            None => (test.diff * weight).abs() * test.sign,
                        },
                        summary,
                        evidence,
                        impact,
                        harm,
                        muted: (warming && !hard)
                            .then(|| "warm-up after a change event".to_string()),
                        hard,
                        max_tier: rule.max_tier.clone(),
                        for_ms: rule.for_ms,
                        links: names(linked_models(cell), &self.lanes.syms),
                    }
                };
                match rule.detector {
                    Detector::Drift if rule.signal.is_mix() => {
                        let counts = mix_counts(cell, rule.signal);
                        let n: u64 = counts.iter().map(|&(_, c)| c as u64).sum();
                        if n < rule.min_samples {
                            continue;
                        }
                        let Some(t) = st.mixes[rule.signal.index()].test(&counts, 200.0) else {
                            continue;
                        };
                        if t.p_value >= rule.alpha || t.tvd < rule.min_change {
                            continue;
                        }
                        let name = |c: u32| match rule.signal {
                            Signal::ResolvedModelMix | Signal::ModelMix => {
                                self.lanes.syms.name(c).to_string()
                            }
                            s => category_name(s, c),
                        };
                        // Routing is told by where the traffic went, the rest by
                        // what moved most.
                        let (cat, before, now) = match rule.signal {
                            Signal::ModelMix => t.rise,
                            _ => t.top,
                        };
                        let summary = match rule.signal {
                            Signal::ModelMix => format!(
                                "{} now sends {:.0}% of its requests to {} (was {:.0}%): its traffic is routed differently (total variation {:.2}, chi-square p={:.1e})",
                                scope_label(labels),
                                now * 100.0,
                                name(cat),
                                before * 100.0,
                                t.tvd,
                                t.p_value
                            ),
                            _ => format!(
                                "{} on {} shifted: {} is {:.0}% of requests, was {:.0}% (total variation {:.2}, chi-square p={:.1e})",
                                rule.signal.as_str().replace('_', " "),
                                scope_label(labels),
                                name(cat),
                                now * 100.0,
                                before * 100.0,
                                t.tvd,
                                t.p_value
                            ),
                        };
                        let test = Test {
                            sign: 1.0,
                            rel: t.tvd,
                            diff: t.tvd,
                            z: 0.0,
                            p_value: t.p_value,
                            name: "chi-square",
                        };
                        let mut ev = serde_json::Map::new();
                        ev.insert("signal".into(), json!(rule.signal));
                        ev.insert("chi_square".into(), json!({"statistic": round(t.chi2), "df": t.df, "total_variation": round(t.tvd)}));
                        findings.push(finding(
                            test,
                            json!({name(cat): now}),
                            json!({name(cat): before}),
                            summary,
                            ev,
                            false,
                        ));
                    }
                    Detector::Drift => {
                        let Some((value, counts, pooled_buckets)) =
                            usage_counts(st, cell, rule, pool_buckets)
                        else {
                            continue;
                        };
                        let base = base_of(&mut bases, &st.series, rule.signal, start, &bp);
                        // Pooled buckets judge a small scope, but only a bucket that
                        // itself moves the way the finding says may raise it: an
                        // episode an hour ago must not live on in the pooled window.
                        let own = usage_value(cell, rule.signal).unwrap_or(value);
                        let own_moves = base.as_ref().is_none_or(|b| {
                            let center = match crate::detect::is_proportion(rule.signal) {
                                true => b.mean,
                                false => b.median,
                            };
                            (own - center).signum() == (value - center).signum() && own != center
                        });
                        if pooled_buckets > 1 && !own_moves {
                            continue;
                        }
                        let hard = rule.hard_limit.is_some_and(|h| value >= h)
                            && counts.n >= rule.min_samples;
                        let test = match &base {
                            Some(base) => judge_scalar(rule, rule.signal, value, counts, base),
                            None => None,
                        };
                        let test = match (test, hard) {
                            (Some(t), _) => t,
                            // Past the guard with no baseline to compare: every
                            // failure counts as excess.
                            (None, true) => Test {
                                sign: 1.0,
                                rel: 0.0,
                                diff: value,
                                z: 0.0,
                                p_value: 0.0,
                                name: "hard limit",
                            },
                            (None, false) if newcomer && rule.signal == Signal::Requests => Test {
                                sign: 1.0,
                                rel: 0.0,
                                diff: value,
                                z: 0.0,
                                p_value: 0.0,
                                name: "newcomer",
                            },
                            (None, false) => continue,
                        };
                        let mut ev = serde_json::Map::new();
                        ev.insert("signal".into(), json!(rule.signal));
                        if let Some(limit) = rule.hard_limit.filter(|_| hard) {
                            ev.insert("hard_limit".into(), json!(limit));
                        }
                        if pooled_buckets > 1 {
                            ev.insert(
                                "pooled".into(),
                                json!({"buckets": pooled_buckets, "requests": counts.n, "events": counts.x}),
                            );
                        }
                        if rule.signal.lane() == Lane::Cost {
                            if let Some(p) = &pvm {
                                ev.insert("price_volume_mix".into(), p.to_json());
                            }
                        }
                        // A spend change that is mostly more requests is traffic, not cost.
                        if rule.signal == Signal::Spend
                            && pvm.as_ref().is_some_and(|p| p.volume_share() >= 0.7)
                        {
                            continue;
                        }
                        let summary = match test.name {
                            "newcomer" => format!(
                                "{} was never seen before and sent {} requests, {:.1}% of all: a new integration, or a key in the wrong hands?",
                                scope_label(labels),
                                cell.requests,
                                impact.requests_share * 100.0
                            ),
                            _ => scalar_summary(
                                rule.signal,
                                &scope_label(labels),
                                value,
                                base.as_ref(),
                                &test,
                            ),
                        };
                        findings.push(finding(
                            test,
                            json!(round(value)),
                            base_json(base.as_ref()),
                            summary,
                            ev,
                            hard,
                        ));
                    }
                    Detector::Step => {
                        let Some(value) = usage_value(cell, rule.signal) else {
                            continue;
                        };
                        if warming || samples(cell, rule.signal) < rule.min_samples {
                            continue;
                        }
                        let Some(base) = base_of(&mut bases, &st.series, rule.signal, start, &bp)
                        else {
                            continue;
                        };
                        let series = &mut st.series[rule.signal.index()];
                        let z = base.z(value, 0.02);
                        let rel = (value - base.median) / base.median.abs().max(1e-12);
                        let step = series.cusum(base.z(value, 0.05), 1.0, 12.0);
                        let held = st.steps.get(&rule.signal).copied().unwrap_or(0.0);
                        let sign = if step != 0
                            && rule.direction.admits(step as f64)
                            && rel.abs() >= rule.min_change
                        {
                            step as f64
                        } else if held != 0.0
                            && rel.signum() == held
                            && rel.abs() >= rule.min_change / 2.0
                        {
                            held
                        } else {
                            0.0
                        };
                        if sign == 0.0 {
                            st.steps.remove(&rule.signal);
                            continue;
                        }
                        st.steps.insert(rule.signal, sign);
                        let cover = self.changes.iter().map(|k| &k.event).find(|c| {
                            c.ts_ms
                                >= start
                                    - 6 * 3_600_000
                                    - self.params.recalibration.tolerance_minutes * 60_000
                                && c.ts_ms
                                    <= end + self.params.recalibration.tolerance_minutes * 60_000
                                && c.scope
                                    .iter()
                                    .all(|(k, v)| labels.get(k).is_none_or(|x| x == v))
                        });
                        let summary = format!(
                            "{} on {scope_text} stepped {} its baseline ({:+.0}%) and no change event covers it: post one with `driftwarden recalibrate --kind deploy|model_bump|config_change {}` if this was intended, else investigate what changed",
                            rule.signal.as_str().replace('_', " "),
                            movement(sign),
                            rel * 100.0,
                            scope_args(labels),
                            scope_text = scope_label(labels),
                        );
                        let test = Test {
                            sign,
                            rel,
                            diff: value - base.median,
                            z,
                            p_value: stats::one_sided_p(z, sign > 0.0),
                            name: "cusum",
                        };
                        let mut ev = serde_json::Map::new();
                        ev.insert("signal".into(), json!(rule.signal));
                        let mut f = finding(
                            test,
                            json!(round(value)),
                            base_json(Some(&base)),
                            summary,
                            ev,
                            false,
                        );
                        if let Some(c) = cover {
                            f.muted = Some(format!(
                                "covered by the {} change at {}",
                                c.kind.as_str(),
                                rfc3339_ms::format(c.ts_ms)
                            ));
                        }
                        findings.push(f);
                    }
                    Detector::Creep => {
                        let series = &st.series[rule.signal.index()];
                        let Some((anchor, level, rel)) = series.creep(rule.min_change, open, &bp)
                        else {
                            continue;
                        };
                        if warming || !rule.direction.admits(rel) {
                            continue;
                        }
                        let summary = creep_summary(rule.signal, labels, anchor, level, rel);
                        let test = Test {
                            sign: rel.signum(),
                            rel,
                            diff: level - anchor,
                            z: 0.0,
                            p_value: 0.0,
                            name: "anchor vs rolling level",
                        };
                        let mut ev = serde_json::Map::new();
                        ev.insert("signal".into(), json!(rule.signal));
                        ev.insert("epoch".into(), json!(series.epoch()));
                        findings.push(finding(
                            test,
                            json!({"rolling_level": round(level)}),
                            json!({"anchor": round(anchor)}),
                            summary,
                            ev,
                            false,
                        ));
                    }
                    Detector::ModelBump => {
                        let Some(model) = labels.get("model").cloned() else {
                            continue;
                        };
                        let pool = &st.mixes[Signal::ResolvedModelMix.index()];
                        if pool.total() < 100.0 || (cell.requests as u64) < rule.min_samples {
                            continue;
                        }
                        let (Some(before), Some(&(now, n))) = (
                            pool.dominant(),
                            cell.resolved.iter().max_by_key(|(_, n)| *n),
                        ) else {
                            continue;
                        };
                        if now == before || (n as f64) < 0.5 * cell.requests as f64 {
                            continue;
                        }
                        let (was, is) = (
                            self.lanes.syms.name(before).to_string(),
                            self.lanes.syms.name(now).to_string(),
                        );
                        // A posted model bump announces the switch whenever it first
                        // shows in the data within its warm-up, not only within the
                        // tolerance (providers roll snapshots out gradually); the
                        // switch stays announced for as long as it is found.
                        let warmup = self.params.recalibration.warmup_minutes;
                        let first_seen = st.bumped_to != Some(now);
                        let posted = covered(
                            &self.changes,
                            self.params.recalibration.tolerance_minutes,
                            labels,
                            start,
                            end,
                            true,
                        )
                        .or_else(|| {
                            self.changes.iter().map(|k| &k.event).find(|c| {
                                c.origin != "detected"
                                    && c.kind == ChangeKind::ModelBump
                                    && (start - warmup * 60_000..=end).contains(&c.ts_ms)
                                    && c.scope
                                        .iter()
                                        .all(|(k, v)| labels.get(k).is_none_or(|x| x == v))
                            })
                        })
                        .cloned();
                        let posted = match first_seen {
                            true => posted,
                            false => posted.or_else(|| st.bump_cover.clone()),
                        };
                        if first_seen {
                            st.bumped_to = Some(now);
                            st.bump_cover = posted.clone();
                            new_changes.push(ChangeEvent {
                                kind: ChangeKind::ModelBump,
                                ts_ms: start,
                                scope: Scope::from([("model".to_string(), model.clone())]),
                                note: format!("{model} now resolves to {is} (was {was}); detected from the data"),
                                origin: "detected".into(),
                            });
                        }
                        let summary = format!(
                            "model {model} now resolves to {is} (was {was}) and no change event announced it: post `driftwarden recalibrate --kind model_bump --scope model={model}` when you bump models, or ask the provider what changed"
                        );
                        let test = Test {
                            sign: 1.0,
                            rel: n as f64 / cell.requests as f64,
                            diff: n as f64 / cell.requests as f64,
                            z: 0.0,
                            p_value: 0.0,
                            name: "dominant resolved model",
                        };
                        let mut ev = serde_json::Map::new();
                        ev.insert("signal".into(), json!(Signal::ResolvedModelMix));
                        let mut f = finding(
                            test,
                            json!({"resolved_model": is}),
                            json!({"resolved_model": was}),
                            summary,
                            ev,
                            false,
                        );
                        f.muted = posted.map(|c| {
                            format!(
                                "announced by the {} change at {}",
                                c.kind.as_str(),
                                rfc3339_ms::format(c.ts_ms)
                            )
                        });
                        findings.push(f);
                    }
                    Detector::FalseEfficiency => {}
                }
            }
            let st = &mut self.states[id as usize];
            let found = found_rules(&findings[first..]);
            let bands: Vec<(usize, Band)> = st
                .open
                .iter()
                .map(|o| {
                    let r = &self.rules[o.rule];
                    let band = match r.detector {
                        Detector::Drift if r.signal.is_mix() => {
                            let counts = mix_counts(cell, r.signal);
                            let n = counts.iter().map(|&(_, c)| c as u64).sum::<u64>();
                            match st.mixes[r.signal.index()].test(&counts, 200.0) {
                                Some(t) if n >= r.min_samples => match t.tvd < r.min_change / 2.0 {
                                    true => Band::Inside,
                                    false => Band::Outside,
                                },
                                _ => Band::Unknown,
                            }
                        }
                        Detector::Drift => {
                            let base = base_of(&mut bases, &st.series, r.signal, start, &bp);
                            let center =
                                base.map(|b| match crate::detect::is_proportion(r.signal) {
                                    true => b.mean,
                                    false => b.median,
                                });
                            match usage_counts(st, cell, r, pool_buckets) {
                                Some((value, counts, _))
                                    if crate::detect::is_proportion(r.signal) =>
                                {
                                    Band::of_rate(r, value, center, counts)
                                }
                                Some((value, counts, _)) => {
                                    Band::of(r, Some(value), center, counts.n)
                                }
                                None => Band::Unknown,
                            }
                        }
                        _ => Band::Inside,
                    };
                    (o.rule, band)
                })
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
                            let keep =
                                start - (self.params.analysis.eval_settle_minutes + 60) * 60_000;
                            st.cost_moves.retain(|m| m.0 >= keep);
                        }
                    }
                    st.series[signal.index()].push(start, v, &bp);
                }
            }
            if has_traffic {
                if st.pooled.len() == pool_buckets {
                    st.pooled.pop_front();
                }
                st.pooled
                    .push_back((cell.requests, cell.errors, cell.truncated));
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

    /// After an evaluation of scope `id` on the usage lanes (`eval` false) or the
    /// eval lane: track its open alerts (`track_open`), collecting the levels they
    /// learned and the keys that wait for data.
    fn track(
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

    /// Lasting levels learned by their series: each becomes a detected change event
    /// with its impact report, and a note for its alert's resolve.
    fn learned(
        &mut self,
        lasting: Vec<(ScopeId, Lasting)>,
        at_ms: i64,
    ) -> Vec<(String, Scope, String)> {
        let mut notes = Vec::new();
        for (id, l) in lasting {
            let labels = self.lanes.index.labels(id).clone();
            let rule = &self.rules[l.rule];
            let what = l.signal.as_str().replace('_', " ");
            let change = ChangeEvent {
                kind: ChangeKind::ConfigChange,
                ts_ms: l.since_ms,
                scope: labels.clone(),
                note: format!(
                    "{what} on {} stayed away from its baseline for {} h with no change event; learned as the new normal (detected from the data)",
                    scope_label(&labels),
                    (at_ms - l.since_ms) / 3_600_000
                ),
                origin: "detected".into(),
            };
            notes.push((
                rule.name.clone(),
                labels.clone(),
                format!(
                    "{what} on {} held its new level since {}: learned as the new normal (a detected config_change with its impact report, see `driftwarden changes`). If the level is not acceptable, fix its cause: the way back is judged against the new level and announced",
                    scope_label(&labels),
                    rfc3339_ms::format(l.since_ms)
                ),
            ));
            self.out.changes.push(change.clone());
            self.changes.push(KnownChange {
                event: change.clone(),
            });
            let (signals, mixes) = match l.verdict {
                LastingVerdict::Scalar(v) => (
                    vec![SignalImpact {
                        signal: l.signal,
                        verdict: v,
                    }],
                    Vec::new(),
                ),
                LastingVerdict::Mix(tvd, p) => (Vec::new(), vec![(l.signal, round(tvd), p)]),
            };
            self.report(change, labels, signals, mixes, at_ms);
        }
        notes
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
                nearby_changes(self.changes.iter().map(|k| &k.event), &f.labels, at_ms),
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

    fn judge_evals(&mut self, b: SettledBucket) -> Tick {
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
            let labels = self.lanes.index.labels(id).clone();
            let shape = shape_of(labels.keys());
            let scope_text = scope_label(&labels);
            let st = &mut self.states[id as usize];
            let warming = st.eval_warm_until.is_some_and(|u| start < u);
            // Every answer in scope is affected by a quality or coverage drift: its
            // harm is the scope's share of requests.
            // The bucket's blast radius as the usage lane measured it, when it is
            // still kept (a scope's eval bucket can outlive its usage record).
            let measured = st
                .impacts
                .iter()
                .find(|m| m.0 == start)
                .map(|m| m.1.clone());
            let scope_size = measured.clone().unwrap_or_default();
            // Averaged over the buckets the usage lane still keeps (a few hours): one
            // night bucket where the scope had most of the little traffic must not
            // make a slow quality finding a page.
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
            let first = findings.len();
            for (ri, rule) in self.rules.iter().enumerate() {
                if rule.lane() != Lane::Eval || !rule.scopes.contains(&shape) {
                    continue;
                }
                let open = st.open.iter().any(|o| o.rule == ri && o.confirmed);
                let rule = &*bar(rule, open);
                let make =
                    |test: Test, summary: String, mut evidence: serde_json::Map<String, Value>| {
                        evidence.insert("test".into(), json!({"name": test.name, "z": round(test.z), "p_value": test.p_value, "change": round(test.rel)}));
                        evidence.insert("bucket".into(), json!({"start": rfc3339_ms::format(start), "end": rfc3339_ms::format(end), "requests": cell.requests, "evaluated": cell.evaluated, "scores": cell.scores}));
                        if let Some(size) = &measured {
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
                            summary,
                            evidence,
                            impact: impact.clone(),
                            harm: "the scope's share of requests (every answer in it is affected)",
                            muted: warming.then(|| "warm-up after a change event".to_string()),
                            hard: false,
                            max_tier: rule.max_tier.clone(),
                            for_ms: rule.for_ms,
                            links: names(st.linked.iter().copied(), &self.lanes.syms),
                        }
                    };
                match rule.detector {
                    Detector::Drift => {
                        let Some((value, test, base)) =
                            eval_test(rule, rule.signal, cell, st, start, &bp)
                        else {
                            continue;
                        };
                        let summary =
                            scalar_summary(rule.signal, &scope_text, value, Some(&base), &test);
                        let mut ev = serde_json::Map::new();
                        ev.insert("signal".into(), json!(rule.signal));
                        ev.insert("observed".into(), json!(round(value)));
                        ev.insert("baseline".into(), base_json(Some(&base)));
                        findings.push(make(test, summary, ev));
                    }
                    Detector::Creep => {
                        let series = &st.series[rule.signal.index()];
                        let Some((anchor, level, rel)) = series.creep(rule.min_change, open, &bp)
                        else {
                            continue;
                        };
                        if warming || !rule.direction.admits(rel) {
                            continue;
                        }
                        let summary = creep_summary(rule.signal, &labels, anchor, level, rel);
                        let mut ev = serde_json::Map::new();
                        ev.insert("signal".into(), json!(rule.signal));
                        ev.insert("observed".into(), json!({"rolling_level": round(level)}));
                        ev.insert("baseline".into(), json!({"anchor": round(anchor)}));
                        findings.push(make(
                            Test {
                                sign: rel.signum(),
                                rel,
                                diff: level - anchor,
                                z: 0.0,
                                p_value: 0.0,
                                name: "anchor vs rolling level",
                            },
                            summary,
                            ev,
                        ));
                    }
                    Detector::FalseEfficiency => {
                        let Some(&(_, cost_rel, cost_z)) =
                            st.cost_moves.iter().find(|m| m.0 == start)
                        else {
                            continue;
                        };
                        if cost_rel > -0.1 || cost_z > -2.0 {
                            continue;
                        }
                        let coverage = eval_test(rule, Signal::EvalCoverage, cell, st, start, &bp);
                        let score_rule = Rule {
                            min_change: 0.05,
                            direction: crate::detect::rules::Direction::Down,
                            ..rule.clone()
                        };
                        let score = eval_test(&score_rule, Signal::EvalScore, cell, st, start, &bp);
                        let (what, (value, test, base)) = match (coverage, score) {
                            (Some(c), _) => ("eval coverage", c),
                            (None, Some(s)) => ("eval score", s),
                            (None, None) => continue,
                        };
                        let summary = format!(
                            "false efficiency on {scope_text}: cost per request fell {:.0}% while {what} fell to {} from {} — cheaper because checks stopped or answers got worse, not because of an improvement",
                            -cost_rel * 100.0,
                            fmt_num(value),
                            fmt_num(base.median)
                        );
                        let mut ev = serde_json::Map::new();
                        ev.insert("signal".into(), json!(rule.signal));
                        ev.insert(
                            "observed".into(),
                            json!({what: round(value), "cost_per_request_change": round(cost_rel)}),
                        );
                        ev.insert("baseline".into(), base_json(Some(&base)));
                        findings.push(make(test, summary, ev));
                    }
                    Detector::Step | Detector::ModelBump => {}
                }
            }
            let st = &mut self.states[id as usize];
            let found = found_rules(&findings[first..]);
            let bands: Vec<(usize, Band)> = st
                .open
                .iter()
                .map(|o| {
                    let r = &self.rules[o.rule];
                    let signal = match r.detector {
                        Detector::Drift => r.signal,
                        Detector::FalseEfficiency => Signal::EvalCoverage,
                        _ => return (o.rule, Band::Inside),
                    };
                    let center = st.series[signal.index()]
                        .baseline(start, false, &bp)
                        .map(|b| match crate::detect::is_proportion(signal) {
                            true => b.mean,
                            false => b.median,
                        });
                    let n = eval_samples(cell, signal);
                    (o.rule, Band::of(r, eval_value(cell, signal), center, n))
                })
                .collect();
            self.track(id, &found, (true, &bands), (start, end), &mut tracked);
            let st = &mut self.states[id as usize];
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
            .map(|i| self.changes[i].event.clone())
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

    fn report(
        &mut self,
        change: ChangeEvent,
        labels: Scope,
        signals: Vec<SignalImpact>,
        mixes: Vec<(Signal, f64, f64)>,
        at_ms: i64,
    ) {
        let moved: Vec<String> = signals
            .iter()
            .filter(|s| s.verdict.changed)
            .map(|s| {
                format!(
                    "{} {:+.0}% (p={:.1e})",
                    s.signal.as_str().replace('_', " "),
                    s.verdict.shift * 100.0,
                    s.verdict.p_value
                )
            })
            .chain(mixes.iter().map(|(s, tvd, _)| {
                format!(
                    "{} shifted (total variation {tvd})",
                    s.as_str().replace('_', " ")
                )
            }))
            .collect();
        let summary = if moved.is_empty() {
            format!(
                "{} on {} ({}): no signal moved beyond noise; baselines kept their history",
                change.kind.as_str(),
                scope_label(&change.scope),
                change.note
            )
        } else {
            format!(
                "{} on {} ({}): {}; baselines for these signals restarted from post-change data",
                change.kind.as_str(),
                scope_label(&change.scope),
                change.note,
                moved.join(", ")
            )
        };
        self.out.reports.push(ImpactReport {
            scope: labels,
            change,
            at_ms,
            signals,
            mixes,
            summary,
        });
    }
}

/// The rules that found something on one scope in this evaluation (a muted finding
/// is not an open alert, a hard one always is).
fn found_rules(findings: &[Finding]) -> Vec<usize> {
    findings
        .iter()
        .filter(|f| f.muted.is_none() || f.hard)
        .map(|f| f.rule)
        .collect()
}

/// A usage scalar's value in a bucket and the counts its test rests on, with how
/// many buckets they span. A small scope's rate is judged over its last buckets
/// pooled until they hold the rule's `min_samples` (at most `pool_buckets`, an
/// hour), so a quiet tenant can alert at all.
fn usage_counts(
    st: &ScopeState,
    cell: &Cell,
    rule: &Rule,
    pool_buckets: usize,
) -> Option<(f64, Counts, usize)> {
    let value = usage_value(cell, rule.signal)?;
    let x_of = |errors: u32, truncated: u32| match rule.signal {
        Signal::ErrorRate => errors as u64,
        Signal::TruncationRate => truncated as u64,
        _ => 0,
    };
    let mut counts = Counts {
        n: samples(cell, rule.signal),
        x: x_of(cell.errors, cell.truncated),
        variance: 0.0,
    };
    if !crate::detect::is_proportion(rule.signal) || counts.n >= rule.min_samples {
        return Some((value, counts, 1));
    }
    let mut buckets = 1;
    for &(n, errors, truncated) in st.pooled.iter().rev().take(pool_buckets - 1) {
        if counts.n >= rule.min_samples {
            break;
        }
        counts.n += n as u64;
        counts.x += x_of(errors, truncated);
        buckets += 1;
    }
    Some((counts.x as f64 / counts.n.max(1) as f64, counts, buckets))
}

/// Where an open alert's value stands in a bucket that did not find it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Band {
    /// Back within half the rule's change of its baseline: calm.
    Inside,
    /// Not significant, but still as far out as half the rule's change: the alert
    /// stays open (a thin bucket cannot prove a lasting state over).
    Outside,
    /// Too few samples, or no value, to tell.
    Unknown,
}

impl Band {
    /// `value` against `center` for an open `rule` with `n` samples.
    fn of(rule: &Rule, value: Option<f64>, center: Option<f64>, n: u64) -> Band {
        let (Some(v), Some(c)) = (value, center) else {
            return Band::Unknown;
        };
        // Telling "back to normal" needs fewer samples than finding a drift: a third.
        if n < (rule.min_samples / 3).max(1) && rule.signal != Signal::Requests {
            return Band::Unknown;
        }
        match ((v - c) / c.abs().max(1e-9)).abs() < rule.min_change / 2.0 {
            true => Band::Inside,
            false => Band::Outside,
        }
    }

    /// A rate of events (`counts.x` of `counts.n`) against `center`: outside only
    /// while it is both half the rule's change away and still detectably so. On a
    /// quiet scope one error in thirty requests is three times a 1% baseline, yet
    /// says nothing: without the test such an alert would stay open all night.
    fn of_rate(rule: &Rule, value: f64, center: Option<f64>, counts: Counts) -> Band {
        let band = Band::of(rule, Some(value), center, counts.n);
        match (band, center) {
            (Band::Outside, Some(c)) if stats::binomial_z(counts.x, counts.n, c).abs() < 2.0 => {
                Band::Inside
            }
            _ => band,
        }
    }
}

/// The confirmed open alerts of a scope on the usage lanes (`eval` false) or the
/// eval lane, as (rule, scope) keys.
fn open_on_lane(
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
struct Tracked {
    /// Levels learned as the new normal, by scope.
    learned: Vec<(ScopeId, Lasting)>,
    /// Open alerts whose bucket could not tell: (rule, scope).
    waiting: Vec<(String, Scope)>,
}

/// A level an open alert held for the whole warm-up length, learned as the new normal.
struct Lasting {
    rule: usize,
    signal: Signal,
    since_ms: i64,
    verdict: LastingVerdict,
}

/// The comparison that let a lasting level become the new normal.
enum LastingVerdict {
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

fn covered<'a>(
    changes: &'a [KnownChange],
    tol_minutes: i64,
    scope: &Scope,
    from_ms: i64,
    to_ms: i64,
    posted_only: bool,
) -> Option<&'a ChangeEvent> {
    let tol = tol_minutes * 60_000;
    changes
        .iter()
        .map(|k| &k.event)
        .filter(|c| !posted_only || c.origin != "detected")
        .filter(|c| c.ts_ms >= from_ms - tol && c.ts_ms <= to_ms + tol)
        .find(|c| {
            c.scope
                .iter()
                .all(|(k, v)| scope.get(k).is_none_or(|x| x == v))
        })
}

fn eval_test(
    rule: &Rule,
    signal: Signal,
    cell: &EvalCell,
    st: &ScopeState,
    start: i64,
    bp: &BaselineParams,
) -> Option<(f64, Test, Baseline)> {
    let value = eval_value(cell, signal)?;
    let n = eval_samples(cell, signal);
    let base = st.series[signal.index()].baseline(start, false, bp)?;
    let mean = cell.score_sum / cell.scores.max(1) as f64;
    let counts = Counts {
        n,
        x: match signal {
            Signal::EvalPassRate => cell.passed as u64,
            Signal::EvalCoverage => cell.evaluated as u64,
            _ => 0,
        },
        variance: (cell.score_sq / cell.scores.max(1) as f64 - mean * mean).max(0.0),
    };
    let test = judge_scalar(rule, signal, value, counts, &base)?;
    Some((value, test, base))
}

/// Per requested model: decayed requests with a known cost and their spend, the
/// "before" side of price-volume-mix. Both decay together, so spend / requests is
/// the model's recent unit cost.
#[derive(Debug, Default)]
struct ModelPool {
    entries: Vec<(u32, f64, f64)>,
}

impl ModelPool {
    fn add(&mut self, cell: &Cell, decay: f64) {
        for e in &mut self.entries {
            e.1 *= decay;
            e.2 *= decay;
        }
        for (m, share) in &cell.by_model {
            match self.entries.iter_mut().find(|e| e.0 == *m) {
                Some(e) => {
                    e.1 += share.costed as f64;
                    e.2 += share.cost;
                }
                None => self.entries.push((*m, share.costed as f64, share.cost)),
            }
        }
    }

    /// (share of requests, unit cost) of model `m`.
    fn pooled(&self, m: u32) -> (f64, f64) {
        let total: f64 = self.entries.iter().map(|e| e.1).sum();
        match self.entries.iter().find(|e| e.0 == m) {
            Some(&(_, n, cost)) if n > 0.0 && total > 0.0 => (n / total, cost / n),
            _ => (0.0, 0.0),
        }
    }
}

/// A spend change split into volume, mix and unit-rate effects.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pvm {
    expected: f64,
    observed: f64,
    volume: f64,
    mix: f64,
    rate: f64,
}

impl Pvm {
    fn volume_share(&self) -> f64 {
        let total = self.volume.abs() + self.mix.abs() + self.rate.abs();
        if total > 0.0 {
            self.volume.abs() / total
        } else {
            0.0
        }
    }

    fn to_json(self) -> Value {
        json!({
            "expected_spend": round(self.expected),
            "observed_spend": round(self.observed),
            "volume_effect": round(self.volume),
            "mix_effect": round(self.mix),
            "rate_effect": round(self.rate),
        })
    }
}

/// Price-volume-mix against the pooled per-model shares and unit costs and the
/// seasonal request baseline.
fn price_volume_mix(st: &ScopeState, cell: &Cell, start: i64, bp: &BaselineParams) -> Option<Pvm> {
    let n0 = st.series[Signal::Requests.index()]
        .baseline(start, true, bp)?
        .median;
    if st.models.entries.is_empty() || cell.costed == 0 {
        return None;
    }
    let n1 = cell.costed as f64;
    let pooled = |m: u32| st.models.pooled(m);
    let unit0: f64 = st
        .models
        .entries
        .iter()
        .map(|e| {
            let (s, c) = pooled(e.0);
            s * c
        })
        .sum();
    let (mut mix, mut rate) = (0.0, 0.0);
    let mut keys: Vec<u32> = st.models.entries.iter().map(|e| e.0).collect();
    keys.extend(cell.by_model.iter().map(|(m, _)| *m));
    keys.sort_unstable();
    keys.dedup();
    for m in keys {
        let (s0, c0) = pooled(m);
        let now = cell.by_model.iter().find(|(x, _)| *x == m).map(|(_, s)| *s);
        let s1 = now.map_or(0.0, |s| s.costed as f64 / n1);
        let c1 = now
            .filter(|s| s.costed > 0)
            .map_or(c0, |s| s.cost / s.costed as f64);
        let c0 = if s0 > 0.0 { c0 } else { c1 };
        mix += n1 * (s1 - s0) * c0;
        rate += n1 * s1 * (c1 - c0);
    }
    Some(Pvm {
        expected: n0 * unit0,
        observed: cell.cost,
        volume: (n1 - n0) * unit0,
        mix,
        rate,
    })
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

/// A latency quantile's excess as a count that adds up across scopes: the requests
/// slower than the baseline's quantile beyond the share that always is (5% for p95).
/// A difference of quantiles times requests does not add up, so a parent's p95
/// could never be explained by the one provider that slowed.
fn slow_excess(cell: &Cell, signal: Signal, test: &Test) -> Option<f64> {
    let q = match signal {
        Signal::LatencyP50 => 0.5,
        Signal::LatencyP95 => 0.95,
        _ => return None,
    };
    let n = samples(cell, signal) as f64;
    let usual = cell.latency_quantile(q)? - test.diff;
    Some(((cell.latency_share_above(usual) - (1.0 - q)) * n).abs())
}

/// The bar a rule's finding must pass: its own, or once its alert fired on the
/// scope the relaxed one that keeps it firing while the condition holds.
fn bar(rule: &Rule, open: bool) -> std::borrow::Cow<'_, Rule> {
    match open {
        true => std::borrow::Cow::Owned(rule.relaxed()),
        false => std::borrow::Cow::Borrowed(rule),
    }
}

/// The harm a usage finding's deviation does, as the impact its tier is chosen
/// from, and what that measure is. Never the size of the scope alone: failures and
/// moved requests count by their excess over the baseline as a share of all
/// requests, cost and extra traffic by the money per day they move (a spend share
/// would let a three-hour spike of a busy hour page); `scope` is the scope's own
/// size (its tenants, whether it faces customers).
fn usage_harm(
    signal: Signal,
    scope: &Impact,
    cell: &Cell,
    test: &Test,
    g_requests: f64,
    per_day: f64,
) -> (Impact, &'static str) {
    let n = cell.requests as f64;
    let mut h = Impact {
        customer_facing: scope.customer_facing,
        ..Impact::default()
    };
    let harm = match signal {
        Signal::Requests if test.diff >= 0.0 => {
            let unit = match cell.requests {
                0 => 0.0,
                _ => cell.cost / n,
            };
            h.money_at_risk_per_day_usd = test.diff * unit * per_day;
            "extra money per day"
        }
        Signal::Requests => {
            // The requests that did not come, as a share of what the gateway expected.
            let missing = -test.diff;
            h.requests_share = missing / (g_requests + missing).max(1.0);
            h.tenants = scope.tenants;
            "missing requests as a share of all requests"
        }
        s if s.lane() == Lane::Cost => {
            let extra = cell.cost * test.rel / (1.0 + test.rel).max(1e-9);
            h.money_at_risk_per_day_usd = extra.abs() * per_day;
            "extra money per day"
        }
        Signal::ErrorRate | Signal::TruncationRate => {
            h.requests_share = (test.diff * n).abs() / g_requests.max(1.0);
            h.tenants = scope.tenants;
            "excess failed requests as a share of all requests"
        }
        Signal::LatencyP50 | Signal::LatencyP95 => {
            h.requests_share = scope.requests_share;
            h.tenants = scope.tenants;
            "the scope's share of requests (every answer in it is slower)"
        }
        _ => {
            h.requests_share = (test.rel * n).abs() / g_requests.max(1.0);
            h.tenants = scope.tenants;
            "requests whose category moved, as a share of all requests"
        }
    };
    (h, harm)
}

/// A silent bucket is a zero of volume and spend: an hour that is always silent
/// learns that it is, and traffic in it is judged.
fn learn_silence(series: &mut [Series], start: i64, bp: &BaselineParams) {
    for signal in USAGE_SCALARS.into_iter().filter(|s| s.seasonal_only()) {
        series[signal.index()].push(start, 0.0, bp);
    }
}

/// `signal`'s baseline for the bucket at `start`, computed once into `bases`.
fn base_of(
    bases: &mut [Option<Option<Baseline>>; Signal::ALL.len()],
    series: &[Series],
    signal: Signal,
    start: i64,
    bp: &BaselineParams,
) -> Option<Baseline> {
    *bases[signal.index()]
        .get_or_insert_with(|| series[signal.index()].baseline(start, signal.seasonal_only(), bp))
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

fn round(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let digits = 4 - x.abs().log10().ceil() as i32;
    let f = 10f64.powi(digits.clamp(0, 12));
    (x * f).round() / f
}

fn fmt_num(x: f64) -> String {
    format!("{}", round(x))
}

fn base_json(b: Option<&Baseline>) -> Value {
    match b {
        Some(b) => {
            json!({"median": round(b.median), "mean": round(b.mean), "mad": round(b.mad), "n": b.n, "seasonal": b.seasonal})
        }
        None => Value::Null,
    }
}

fn creep_summary(signal: Signal, labels: &Scope, anchor: f64, level: f64, rel: f64) -> String {
    format!(
        "{} on {} has crept {:+.0}% from its epoch's anchor ({} → {}) with no change event; the rolling baseline absorbed it. If this is the new normal, post a change event to start a new epoch: `driftwarden recalibrate --kind config_change {}`",
        signal.as_str().replace('_', " "),
        scope_label(labels),
        rel * 100.0,
        fmt_num(anchor),
        fmt_num(level),
        scope_args(labels)
    )
}

fn scope_args(labels: &Scope) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("--scope {k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn scalar_summary(
    signal: Signal,
    scope: &str,
    value: f64,
    base: Option<&Baseline>,
    test: &Test,
) -> String {
    let name = signal.as_str().replace('_', " ");
    let proportion = crate::detect::is_proportion(signal);
    // The same centre the test used, and the evidence shows (`mean` or `median`).
    let center = |b: &Baseline| if proportion { b.mean } else { b.median };
    let shown = |x: f64| match proportion {
        true => format!("{}%", fmt_num(x * 100.0)),
        false => fmt_num(x),
    };
    match base {
        Some(b) if signal == Signal::Requests && value == 0.0 => format!(
            "no requests at all on {scope} in this bucket, where its {} baseline expects {}: is the gateway down, or has its log stopped being written?",
            if b.seasonal { "seasonal" } else { "recent" },
            fmt_num(b.median),
        ),
        // A relative change against zero is no number a person can read.
        Some(b) if center(b) == 0.0 => format!(
            "{name} on {scope} is {}, against none before (its {} baseline is 0; z={:.1}, p={:.1e})",
            shown(value),
            if b.seasonal { "seasonal" } else { "recent" },
            test.z,
            test.p_value
        ),
        Some(b) => format!(
            "{name} on {scope} is {}, {:.0}% {} its {} baseline {} (z={:.1}, p={:.1e})",
            shown(value),
            test.rel.abs() * 100.0,
            movement(test.sign),
            if b.seasonal { "seasonal" } else { "recent" },
            shown(center(b)),
            test.z,
            test.p_value
        ),
        None => format!("{name} on {scope} is {}, past its hard limit", shown(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(rel: f64) -> Test {
        Test {
            sign: 1.0,
            rel,
            diff: 0.004,
            z: 9.0,
            p_value: 1e-9,
            name: "exact binomial test",
        }
    }

    fn base(mean: f64, median: f64) -> Baseline {
        Baseline {
            median,
            mad: 0.0,
            mean,
            n: 24,
            seasonal: true,
            mean_dev: 0.0,
        }
    }

    #[test]
    fn a_thin_rate_calms_unless_it_is_still_detectably_away() {
        let rule = &crate::detect::rules::one_rule(
            "[[rule]]\nname = \"error-rate\"\nsignal = \"error_rate\"\nscopes = [\"route\"]\nmin_change = 1.0\nmin_samples = 30\n",
        );
        let band = |x: u64, n: u64| {
            let counts = Counts {
                n,
                x,
                variance: 0.0,
            };
            Band::of_rate(rule, x as f64 / n as f64, Some(0.012), counts)
        };
        // One error in thirty is three times 1.2%, and nothing to go on.
        assert_eq!(band(1, 30), Band::Inside);
        // Ten in thirty still is.
        assert_eq!(band(10, 30), Band::Outside);
        // Too few to tell either way.
        assert_eq!(band(1, 5), Band::Unknown);
        assert_eq!(band(0, 300), Band::Inside);
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

    #[test]
    fn a_summary_against_a_zero_baseline_says_so_in_words() {
        let s = scalar_summary(
            Signal::ErrorRate,
            "global",
            0.004,
            Some(&base(0.0, 0.0)),
            &test(4e9),
        );
        assert_eq!(
            s,
            "error rate on global is 0.4%, against none before (its seasonal baseline is 0; z=9.0, p=1.0e-9)"
        );
    }

    #[test]
    fn a_rate_summary_quotes_the_mean_the_test_used_and_the_evidence_shows() {
        let b = base(0.02, 0.0);
        let s = scalar_summary(Signal::ErrorRate, "global", 0.1, Some(&b), &test(4.0));
        assert!(
            s.contains("is 10%, 400% above its seasonal baseline 2%"),
            "{s}"
        );
        assert_eq!(base_json(Some(&b))["mean"], 0.02);
        let s = scalar_summary(
            Signal::CostPerRequest,
            "model=m",
            0.006,
            Some(&base(0.0051, 0.005)),
            &test(0.2),
        );
        assert!(
            s.contains("is 0.006, 20% above its seasonal baseline 0.005"),
            "{s}"
        );
    }
}
