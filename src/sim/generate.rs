//! The generator: a scenario and a seed in, a time-ordered stream of usage events and
//! eval scores out.
//!
//! Randomness is keyed, not streamed: each minute has its own generator (arrivals and
//! request attributes) and each request its own (tokens, errors, latency, eval), both
//! seeded from the scenario seed. So an injection changes only the requests it matches:
//! the same seed with and without it gives identical requests everywhere else, which is
//! what lets a test say "this drift, and nothing else".

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use compact_str::CompactString;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Poisson, StandardNormal, Zipf};

use super::inject::{Effect, Injection};
use super::profile::{DAY_MS, ModelSpec, Profile, RouteSpec};
use super::{Scenario, SimError, SimRecord};
use crate::domain::{CostSource, EvalScore, UsageEvent};
use crate::pricing::PriceTable;

const MINUTE_MS: i64 = 60_000;
/// Eval lag bounds: an evaluator needs at least a minute, and a score older than six
/// hours would be useless to the eval lane.
const MIN_LAG_MS: f64 = 60_000.0;
const MAX_LAG_MS: f64 = 6.0 * 3_600_000.0;
/// Spread of eval scores around the route's mean.
const SCORE_SD: f64 = 0.08;
/// A score at or above this passes.
pub const PASS_SCORE: f64 = 0.7;

/// An iterator of `SimRecord`s in non-decreasing `ts_ms` order: usage events as they
/// arrive and eval scores when they are given (after their request; scores given after
/// the traffic's end still come, last).
pub struct Generator {
    plan: Plan,
    prices: Arc<PriceTable>,
    seed: u64,
    minute: i64,
    next_id: u64,
    drafts: Vec<Draft>,
    ready: VecDeque<UsageEvent>,
    evals: BinaryHeap<Reverse<PendingEval>>,
}

impl Generator {
    /// A generator for `scenario` and `seed`, costing requests with `prices`.
    pub fn new(
        scenario: &Scenario,
        seed: u64,
        prices: Arc<PriceTable>,
    ) -> Result<Generator, SimError> {
        Ok(Generator {
            plan: Plan::new(&scenario.profile, &scenario.injections)?,
            prices,
            seed,
            minute: 0,
            next_id: 1,
            drafts: Vec::new(),
            ready: VecDeque::new(),
            evals: BinaryHeap::new(),
        })
    }

    fn fill_minute(&mut self) {
        let plan = &self.plan;
        let minute_start = plan.start_ms + self.minute * MINUTE_MS;
        let span = MINUTE_MS.min(plan.end_ms - minute_start);
        let minute_seed = mix(self.seed, self.minute as u64);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(minute_seed);
        // A partial last minute gets its share of the minute's rate.
        let lambda = plan.profile.rate_at(minute_start) * span as f64 / MINUTE_MS as f64;
        let arrivals = Poisson::new(lambda).map_or(0, |p| p.sample(&mut rng) as u64);
        for i in 0..arrivals {
            let ts = minute_start + rng.random_range(0..span);
            let route = pick(&plan.route_cum, rng.random());
            let drawn = pick(&plan.routes[route].model_cum, rng.random());
            let tenant = (plan.zipf.sample(&mut rng) as u32 - 1).min(plan.tenants.len() as u32 - 1);
            let model = plan
                .matching(ts, route, drawn, tenant)
                .find_map(|inj| inj.route_to)
                .unwrap_or(drawn);
            // Drawn even when no Volume injection applies, so that one does not shift
            // the draws of the requests after it.
            let extra: f64 = rng.random();
            let volume: f64 = plan
                .matching(ts, route, model, tenant)
                .filter_map(|inj| match inj.effect {
                    Effect::Volume(m) => Some(m),
                    _ => None,
                })
                .product();
            let copies = volume.floor() as u64 + u64::from(extra < volume.fract());
            for copy in 0..copies {
                let mut erng = Xoshiro256PlusPlus::seed_from_u64(mix(mix(minute_seed, i), copy));
                let ts = if copy == 0 {
                    ts
                } else {
                    minute_start + erng.random_range(0..span)
                };
                let draft = self
                    .plan
                    .draft(&mut erng, &self.prices, ts, route, model, tenant);
                self.drafts.push(Draft {
                    order: (i, copy),
                    ..draft
                });
            }
        }
        self.drafts.sort_by_key(|d| (d.event.ts_ms, d.order));
        for mut d in self.drafts.drain(..) {
            d.event.id = compact_str::format_compact!("req-{}-{}", self.seed, self.next_id);
            if let Some((score, lag_ms)) = d.eval {
                self.evals.push(Reverse(PendingEval {
                    seq: self.next_id,
                    eval: EvalScore {
                        request_id: Some(d.event.id.to_string()),
                        route: None,
                        model: None,
                        evaluator: self.plan.profile.evaluator.clone(),
                        ts_ms: d.event.ts_ms + lag_ms,
                        score: Some(score),
                        passed: Some(score >= PASS_SCORE),
                    },
                }));
            }
            self.next_id += 1;
            self.ready.push_back(d.event);
        }
        self.minute += 1;
    }
}

impl Iterator for Generator {
    type Item = SimRecord;

    fn next(&mut self) -> Option<SimRecord> {
        while self.ready.is_empty() && self.minute < self.plan.minutes {
            self.fill_minute();
        }
        let eval_first = match (self.evals.peek(), self.ready.front()) {
            (Some(Reverse(e)), Some(u)) => e.eval.ts_ms < u.ts_ms,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if eval_first {
            return self.evals.pop().map(|Reverse(e)| SimRecord::Eval(e.eval));
        }
        self.ready.pop_front().map(SimRecord::Usage)
    }
}

/// A request before it has its id (ids follow time order, known after sorting).
struct Draft {
    /// Arrival index in the minute and copy number: a stable tie-break for equal times.
    order: (u64, u64),
    event: UsageEvent,
    /// Score and lag of its eval, if it gets one.
    eval: Option<(f64, i64)>,
}

struct PendingEval {
    seq: u64,
    eval: EvalScore,
}

impl PartialEq for PendingEval {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for PendingEval {}

impl PartialOrd for PendingEval {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PendingEval {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.eval.ts_ms, self.seq).cmp(&(other.eval.ts_ms, other.seq))
    }
}

/// The profile and injections, checked and turned into lookup tables.
struct Plan {
    profile: Profile,
    start_ms: i64,
    end_ms: i64,
    minutes: i64,
    routes: Vec<RoutePlan>,
    route_cum: Vec<f64>,
    tenants: Vec<String>,
    zipf: Zipf<f64>,
    injections: Vec<InjectionPlan>,
}

struct RoutePlan {
    model_cum: Vec<f64>,
}

/// An injection with its filter resolved to indices.
struct InjectionPlan {
    from_ms: i64,
    to_ms: Option<i64>,
    models: Vec<bool>,
    routes: Vec<bool>,
    /// `Some(None)`: the filter names a tenant the profile does not have.
    tenant: Option<Option<u32>>,
    effect: Effect,
    /// The model index a `RouteTo` sends requests to.
    route_to: Option<usize>,
}

/// What the active injections do to one request.
struct Effects<'a> {
    prompt: f64,
    completion: f64,
    resolve: Option<(&'a str, f64)>,
    evals_stop: bool,
    score_shift: f64,
    error_rate: f64,
    cost: f64,
    latency: f64,
}

impl Plan {
    fn new(profile: &Profile, injections: &[Injection]) -> Result<Plan, SimError> {
        profile.validate()?;
        let routes = profile
            .routes
            .iter()
            .map(|r| RoutePlan {
                model_cum: cumulative(&profile.model_weights(r)),
            })
            .collect();
        let route_cum = cumulative(&profile.routes.iter().map(|r| r.share).collect::<Vec<_>>());
        let tenants: Vec<String> = (0..profile.tenants)
            .map(|t| profile.tenant_name(t))
            .collect();
        let zipf = Zipf::new(profile.tenants as f64, profile.tenant_skew)
            .map_err(|e| SimError::Profile(format!("tenant shares: {e}")))?;
        let model_index = |name: &str| profile.models.iter().position(|m| m.name == name);
        if let Some(name) = injections.iter().find_map(|inj| match &inj.effect {
            Effect::RouteTo(name) if model_index(name).is_none() => Some(name),
            _ => None,
        }) {
            return Err(SimError::Profile(format!(
                "an injection routes to {name}, which is not one of the profile's models"
            )));
        }
        let injections = injections
            .iter()
            .map(|inj| {
                let f = &inj.filter;
                InjectionPlan {
                    route_to: match &inj.effect {
                        Effect::RouteTo(name) => model_index(name),
                        _ => None,
                    },
                    from_ms: inj.from_ms,
                    to_ms: inj.to_ms,
                    models: profile
                        .models
                        .iter()
                        .map(|m| {
                            f.model.as_ref().is_none_or(|x| *x == m.name)
                                && f.provider.as_ref().is_none_or(|x| *x == m.provider)
                        })
                        .collect(),
                    routes: profile
                        .routes
                        .iter()
                        .map(|r| f.route.as_ref().is_none_or(|x| *x == r.name))
                        .collect(),
                    tenant: f
                        .tenant
                        .as_ref()
                        .map(|t| tenants.iter().position(|n| n == t).map(|p| p as u32)),
                    effect: inj.effect.clone(),
                }
            })
            .collect();
        let start_ms = profile.start_ms;
        let end_ms = profile.end_ms();
        Ok(Plan {
            profile: profile.clone(),
            start_ms,
            end_ms,
            minutes: (end_ms - start_ms + MINUTE_MS - 1) / MINUTE_MS,
            routes,
            route_cum,
            tenants,
            zipf,
            injections,
        })
    }

    fn matching(
        &self,
        ts: i64,
        route: usize,
        model: usize,
        tenant: u32,
    ) -> impl Iterator<Item = &InjectionPlan> {
        self.injections.iter().filter(move |inj| {
            ts >= inj.from_ms
                && inj.to_ms.is_none_or(|to| ts < to)
                && inj.models[model]
                && inj.routes[route]
                && inj.tenant.is_none_or(|t| t == Some(tenant))
        })
    }

    fn effects(&self, ts: i64, route: usize, model: usize, tenant: u32) -> Effects<'_> {
        let mut fx = Effects {
            prompt: 1.0,
            completion: 1.0,
            resolve: None,
            evals_stop: false,
            score_shift: 0.0,
            error_rate: self.profile.error_rate,
            cost: 1.0,
            latency: 1.0,
        };
        for inj in self.matching(ts, route, model, tenant) {
            match &inj.effect {
                Effect::PromptTokens(m) => fx.prompt *= m,
                Effect::CompletionTokens(m) => fx.completion *= m,
                Effect::ResolveTo {
                    resolved_model,
                    price_multiplier,
                } => fx.resolve = Some((resolved_model, *price_multiplier)),
                Effect::EvalsStop => fx.evals_stop = true,
                Effect::EvalScoreShift(d) => fx.score_shift += d,
                Effect::EvalScoreRamp { total, days } => {
                    let done = (ts - inj.from_ms) as f64 / (days.max(1e-9) * DAY_MS as f64);
                    fx.score_shift += total * done.clamp(0.0, 1.0)
                }
                Effect::ErrorRate(r) => fx.error_rate = *r,
                Effect::DailyCostCreep(f) => {
                    fx.cost *= (1.0 + f).powf((ts - inj.from_ms) as f64 / DAY_MS as f64)
                }
                Effect::CostMultiplier(m) => fx.cost *= m,
                Effect::Latency(m) => fx.latency *= m,
                Effect::Volume(_) | Effect::RouteTo(_) => {}
            }
        }
        fx
    }

    /// One request. Every random number is drawn whatever the effects, so an effect
    /// changes only what it is about (an error burst turns requests into errors but
    /// leaves the others exactly as they were).
    fn draft(
        &self,
        rng: &mut Xoshiro256PlusPlus,
        prices: &PriceTable,
        ts: i64,
        route: usize,
        model: usize,
        tenant: u32,
    ) -> Draft {
        let mut normal = || -> f64 { StandardNormal.sample(rng) };
        let [z_prompt, z_completion, z_ttft, z_latency, z_score, z_lag] =
            std::array::from_fn(|_| normal());
        let [u_error, u_status, u_trunc, u_cache, u_cached, u_eval]: [f64; 6] =
            std::array::from_fn(|_| rng.random());
        let fx = self.effects(ts, route, model, tenant);
        let r: &RouteSpec = &self.profile.routes[route];
        let m: &ModelSpec = &self.profile.models[model];
        let resolved = fx.resolve.map_or(m.resolved.as_str(), |(name, _)| name);
        let mut event = UsageEvent {
            id: CompactString::default(),
            ts_ms: ts,
            model: m.name.as_str().into(),
            resolved_model: Some(resolved.into()),
            provider: Some(m.provider.as_str().into()),
            route: Some(r.name.as_str().into()),
            tenant: Some(self.tenants[tenant as usize].as_str().into()),
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            cost_usd: Some(0.0),
            cost_source: CostSource::Gateway,
            list_cost_usd: Some(0.0),
            latency_ms: None,
            ttft_ms: None,
            status: Some(200),
            finish_reason: None,
            error_type: None,
        };
        if u_error < fx.error_rate {
            let (status, kind) = match u_status {
                u if u < 0.5 => (429, "rate_limit_error"),
                u if u < 0.8 => (500, "api_error"),
                _ => (503, "overloaded_error"),
            };
            event.status = Some(status);
            event.error_type = Some(kind.into());
            // Failures come back fast and cost nothing.
            event.latency_ms = Some((300.0 * (0.5 * z_latency).exp()) as u64);
            return Draft {
                order: (0, 0),
                event,
                eval: None,
            };
        }
        let prompt = (r.prompt.median * (r.prompt.sigma * z_prompt).exp() * fx.prompt)
            .round()
            .max(1.0) as u64;
        let wanted =
            r.completion.median * (r.completion.sigma * z_completion).exp() * fx.completion;
        let truncated = u_trunc < self.profile.truncation_rate || wanted >= r.max_completion as f64;
        let completion = if truncated {
            r.max_completion
        } else {
            wanted.round().max(1.0) as u64
        };
        let cached = if u_cache < self.profile.cached_share {
            (prompt as f64 * (0.3 + 0.6 * u_cached)) as u64
        } else {
            0
        };
        let list = prices
            .cost(&[resolved, &m.name], ts, prompt, completion, cached)
            .map(|c| c * fx.resolve.map_or(1.0, |(_, p)| p));
        let ttft = (120.0 + 0.04 * prompt as f64) * (0.3 * z_ttft).exp() * fx.latency;
        let generation =
            completion as f64 / m.tokens_per_second * 1000.0 * (0.2 * z_latency).exp() * fx.latency;
        event.prompt_tokens = prompt;
        event.completion_tokens = completion;
        event.cached_tokens = cached;
        event.list_cost_usd = list;
        event.cost_usd = list.map(|c| c * fx.cost);
        if list.is_none() {
            event.cost_source = CostSource::Unknown;
        }
        event.ttft_ms = Some(ttft.round() as u64);
        event.latency_ms = Some((ttft + generation).round() as u64);
        event.finish_reason = Some(if truncated { "length" } else { "stop" }.into());
        let eval = (!fx.evals_stop && u_eval < r.eval_fraction).then(|| {
            // Three decimals, as judges report them (and exact through JSON).
            let score = ((r.eval_mean + fx.score_shift + SCORE_SD * z_score).clamp(0.0, 1.0)
                * 1000.0)
                .round()
                / 1000.0;
            let lag = (self.profile.eval_lag_median_min
                * 60_000.0
                * (self.profile.eval_lag_sigma * z_lag).exp())
            .clamp(MIN_LAG_MS, MAX_LAG_MS);
            (score, lag as i64)
        });
        Draft {
            order: (0, 0),
            event,
            eval,
        }
    }
}

/// Running sums of `weights`, for `pick`.
fn cumulative(weights: &[f64]) -> Vec<f64> {
    weights
        .iter()
        .scan(0.0, |sum, w| {
            *sum += w.max(0.0);
            Some(*sum)
        })
        .collect()
}

/// The index whose slice of the running sums `u` (uniform in 0..1) falls in.
fn pick(cum: &[f64], u: f64) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    cum.partition_point(|c| *c <= u * total).min(cum.len() - 1)
}

/// Combines two keys into a seed (SplitMix64's finalizer), so that nearby minutes and
/// requests get unrelated random streams.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.rotate_left(23) ^ b.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::{HashMap, HashSet};

    use super::super::{Profile, Scenario, SimRecord, scenarios};
    use super::*;

    /// Usage events and eval scores of a scenario, split.
    pub fn run(s: &Scenario, seed: u64) -> (Vec<UsageEvent>, Vec<EvalScore>) {
        let (mut usage, mut evals) = (Vec::new(), Vec::new());
        for r in s.generator(seed).unwrap() {
            match r {
                SimRecord::Usage(e) => usage.push(e),
                SimRecord::Eval(e) => evals.push(e),
            }
        }
        (usage, evals)
    }

    fn small(days: f64, peak_rpm: f64) -> Scenario {
        scenarios::quiet(Profile {
            days,
            peak_rpm,
            ..Profile::default()
        })
    }

    #[test]
    fn same_seed_same_records_other_seed_other_records() {
        let s = small(0.5, 20.0);
        let a: Vec<SimRecord> = s.generator(1).unwrap().collect();
        let b: Vec<SimRecord> = s.generator(1).unwrap().collect();
        assert!(a.len() > 1000, "{}", a.len());
        assert_eq!(a, b);
        let strip = |mut e: UsageEvent| {
            e.id.clear();
            e
        };
        let other: Vec<UsageEvent> = run(&s, 2).0.into_iter().map(strip).collect();
        let first: Vec<UsageEvent> = run(&s, 1).0.into_iter().map(strip).collect();
        assert_ne!(other, first);
    }

    #[test]
    fn records_are_time_ordered_ids_unique_and_eval_lag_bounded() {
        let s = small(2.0, 10.0);
        let records: Vec<SimRecord> = s.generator(3).unwrap().collect();
        assert!(records.windows(2).all(|w| w[0].ts_ms() <= w[1].ts_ms()));
        let mut requests = HashMap::new();
        let mut lags = Vec::new();
        for r in &records {
            match r {
                SimRecord::Usage(e) => {
                    assert!(e.id.starts_with("req-3-"), "{}", e.id);
                    assert!(
                        requests.insert(e.id.clone(), e.ts_ms).is_none(),
                        "duplicate id"
                    );
                    assert!(e.ts_ms >= s.profile.start_ms && e.ts_ms < s.profile.end_ms());
                }
                SimRecord::Eval(v) => {
                    let asked = requests[v.request_id.as_deref().unwrap()];
                    lags.push(v.ts_ms - asked);
                    assert_eq!(v.passed, Some(v.score.unwrap() >= PASS_SCORE));
                }
            }
        }
        lags.sort_unstable();
        assert!(lags.len() > 1000, "{}", lags.len());
        assert!(lags[0] >= 60_000 && *lags.last().unwrap() <= 6 * 3_600_000);
        let median_min = lags[lags.len() / 2] as f64 / 60_000.0;
        assert!(
            (15.0..27.0).contains(&median_min),
            "median lag {median_min} min"
        );
        let share = lags.len() as f64 / requests.len() as f64;
        assert!((0.08..0.2).contains(&share), "eval coverage {share}");
    }

    #[test]
    fn weekly_seasonality_is_visible() {
        let (usage, _) = run(&small(14.0, 4.0), 5);
        let mut by_hour = [0u32; 24];
        let mut by_day = [0u32; 14];
        for e in &usage {
            let day = ((e.ts_ms - DEFAULT_START) / DAY_MS) as usize;
            by_day[day] += 1;
            // The default start is a Monday: days 5, 6, 12, 13 are weekends.
            if day % 7 < 5 {
                by_hour[((e.ts_ms % DAY_MS) / 3_600_000) as usize] += 1;
            }
        }
        assert!(by_hour[10] > 2 * by_hour[3], "{by_hour:?}");
        assert!(by_hour[15] > 2 * by_hour[23], "{by_hour:?}");
        let weekend = by_day
            .iter()
            .enumerate()
            .filter(|(d, _)| d % 7 >= 5)
            .map(|(_, n)| *n)
            .sum::<u32>()
            / 4;
        let weekday = by_day
            .iter()
            .enumerate()
            .filter(|(d, _)| d % 7 < 5)
            .map(|(_, n)| *n)
            .sum::<u32>()
            / 10;
        assert!(
            (weekend as f64) < 0.55 * weekday as f64,
            "weekend {weekend} weekday {weekday}"
        );
    }

    const DEFAULT_START: i64 = super::super::DEFAULT_START_MS;

    #[test]
    fn ten_thousand_tenants_all_appear_in_a_large_run() {
        let s = scenarios::quiet(Profile {
            days: 1.0,
            peak_rpm: 400.0,
            tenants: 10_000,
            tenant_skew: 0.3,
            ..Profile::default()
        });
        let mut seen = HashSet::new();
        let mut n = 0;
        for r in s.generator(11).unwrap() {
            if let SimRecord::Usage(e) = r {
                seen.insert(e.tenant.unwrap());
                n += 1;
            }
        }
        assert_eq!(seen.len(), 10_000, "{n} events");
        assert!(seen.contains("tenant-00001") && seen.contains("tenant-10000"));
    }

    #[test]
    fn errors_truncation_and_cost_look_like_a_gateway() {
        let (usage, _) = run(&small(1.0, 20.0), 9);
        let n = usage.len() as f64;
        let errors = usage.iter().filter(|e| e.is_error()).count() as f64 / n;
        let truncated = usage.iter().filter(|e| e.is_truncated()).count() as f64 / n;
        assert!((0.005..0.02).contains(&errors), "error share {errors}");
        assert!(
            (0.01..0.04).contains(&truncated),
            "truncation share {truncated}"
        );
        for e in &usage {
            assert_eq!(e.is_error(), e.status != Some(200));
            assert!(e.cached_tokens <= e.prompt_tokens);
            assert!(e.cost_usd.is_some(), "every default model is priced: {e:?}");
        }
        let claude = usage
            .iter()
            .find(|e| e.model == "claude-3-5-sonnet" && !e.is_error() && e.cached_tokens == 0)
            .unwrap();
        // Priced at claude-3-5-sonnet's list price: 3 in, 15 out per million.
        let expected =
            (claude.prompt_tokens as f64 * 3.0 + claude.completion_tokens as f64 * 15.0) / 1e6;
        assert!((claude.cost_usd.unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn invalid_profiles_are_refused() {
        let mut s = small(1.0, 1.0);
        s.profile.routes[0].models.insert("gpt-5".into(), 1.0);
        assert!(
            s.generator(1)
                .err()
                .unwrap()
                .to_string()
                .contains("unknown model gpt-5")
        );
        let s = small(1.0, 1.0);
        let mut bad = s.clone();
        bad.profile.hourly.pop();
        assert!(bad.generator(1).is_err());
    }
}
