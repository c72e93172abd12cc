//! Named scenarios for tests and the demo. Each takes the normal traffic (`Profile`)
//! and plants one drift. Unless noted, the drift starts after 14 quiet days (at
//! `profile.day(14.0)`, the first instant of day 15; with the default start that is a
//! Monday) and the default profile runs 16 days. Injection times are absolute, so a
//! test can move `profile.start_ms` forward to skip most of the quiet prefix.

use std::collections::BTreeMap;

use super::inject::{Effect, Filter, Injection};
use super::profile::Profile;
use super::truth::{Truth, TruthIncident};
use super::{Scenario, SimError};
use crate::domain::{ChangeEvent, ChangeKind, Kind, Scope};

/// The names `by_name` knows, in the order of this file.
pub const NAMES: [&str; 16] = [
    "quiet",
    "announced_deploy",
    "silent_model_bump",
    "slow_creep",
    "evals_off",
    "tenant_spike",
    "quality_drop",
    "error_burst",
    "small_tenant_errors",
    "price_rise",
    "model_errors",
    "provider_latency",
    "new_tenant",
    "gateway_down",
    "quality_creep",
    "route_moved",
];

/// The scenario called `name` over `profile`.
pub fn by_name(name: &str, profile: Profile) -> Result<Scenario, SimError> {
    Ok(match name {
        "quiet" => quiet(profile),
        "announced_deploy" => announced_deploy(profile),
        "silent_model_bump" => silent_model_bump(profile),
        "slow_creep" => slow_creep(profile),
        "evals_off" => evals_off(profile),
        "tenant_spike" => tenant_spike(profile),
        "quality_drop" => quality_drop(profile),
        "error_burst" => error_burst(profile),
        "small_tenant_errors" => small_tenant_errors(profile),
        "price_rise" => price_rise(profile),
        "model_errors" => model_errors(profile),
        "provider_latency" => provider_latency(profile),
        "new_tenant" => new_tenant(profile),
        "gateway_down" => gateway_down(profile),
        "quality_creep" => quality_creep(profile),
        "route_moved" => route_moved(profile),
        other => {
            return Err(SimError::UnknownScenario {
                name: other.to_string(),
            });
        }
    })
}

fn scenario(
    name: &str,
    profile: Profile,
    injections: Vec<Injection>,
    changes: Vec<ChangeEvent>,
    truth: Truth,
) -> Scenario {
    Scenario {
        name: name.to_string(),
        profile,
        injections,
        changes,
        truth,
    }
}

/// A scope of one dimension.
pub fn scope(dim: &str, value: &str) -> Scope {
    Scope::from([(dim.to_string(), value.to_string())])
}

/// A planted drift a team must hear of: `kinds` find it within `deadline_minutes`,
/// notified at a tier from `tiers.0` (most severe allowed) to `tiers.1` (least).
pub fn incident(
    name: &str,
    (start_ms, end_ms): (i64, Option<i64>),
    scope: Scope,
    kinds: &[Kind],
    deadline_minutes: i64,
    tiers: (&str, &str),
) -> TruthIncident {
    TruthIncident {
        name: name.to_string(),
        start_ms,
        end_ms,
        scope,
        related: Vec::new(),
        kinds: kinds.to_vec(),
        deadline_minutes,
        highest_tier: Some(tiers.0.to_string()),
        lowest_tier: Some(tiers.1.to_string()),
    }
}

/// An announced change a team must not be alerted about, from `start_ms` to `end_ms`.
pub fn silent(name: &str, (start_ms, end_ms): (i64, Option<i64>), scope: Scope) -> TruthIncident {
    TruthIncident {
        name: name.to_string(),
        start_ms,
        end_ms,
        scope,
        related: Vec::new(),
        kinds: Vec::new(),
        deadline_minutes: 0,
        highest_tier: None,
        lowest_tier: None,
    }
}

fn incidents(list: Vec<TruthIncident>) -> Truth {
    Truth {
        incidents: list,
        silent: Vec::new(),
    }
}

/// Nothing happens: the baseline every detector must stay silent on.
pub fn quiet(profile: Profile) -> Scenario {
    scenario("quiet", profile, vec![], vec![], Truth::default())
}

/// A deploy on route `summarize` lengthens its prompts ×1.6 from day 15, and the team
/// announced it: a deploy change event at that instant scoped to the route. Expected:
/// a cost step explained by the change (a new epoch), not an unannounced change.
pub fn announced_deploy(profile: Profile) -> Scenario {
    let at = profile.day(14.0);
    let change = ChangeEvent {
        kind: ChangeKind::Deploy,
        ts_ms: at,
        scope: BTreeMap::from([("route".to_string(), "summarize".to_string())]),
        note: "summarize prompt template v2".to_string(),
        origin: "api".to_string(),
    };
    let inject = Injection::from(at, Filter::route("summarize"), Effect::PromptTokens(1.6));
    let truth = Truth {
        incidents: Vec::new(),
        silent: vec![silent(
            "announced deploy",
            (at, None),
            scope("route", "summarize"),
        )],
    };
    scenario(
        "announced_deploy",
        profile,
        vec![inject],
        vec![change],
        truth,
    )
}

/// From day 15 the gateway resolves `gpt-4o` to a new snapshot (`gpt-4o-2024-11-20`)
/// that costs ×1.5, and nobody said so. Expected: the resolved-model mix changes and
/// cost per request rises on `gpt-4o` with no change event: an unannounced change.
pub fn silent_model_bump(profile: Profile) -> Scenario {
    let at = profile.day(14.0);
    let inject = Injection::from(
        at,
        Filter::model("gpt-4o"),
        Effect::ResolveTo {
            resolved_model: "gpt-4o-2024-11-20".to_string(),
            price_multiplier: 1.5,
        },
    );
    let truth = incidents(vec![incident(
        "gpt-4o silently bumped to a pricier snapshot",
        (at, None),
        scope("model", "gpt-4o"),
        &[Kind::UnannouncedChange, Kind::CostDrift],
        120,
        ("page", "alert"),
    )]);
    scenario("silent_model_bump", profile, vec![inject], vec![], truth)
}

/// Unit cost on route `extract` creeps up 4% a day, compounding, from day 8 (so it is
/// about ×1.37 by the end of day 16). Expected: no single step, but baseline creep
/// against the epoch's anchor.
pub fn slow_creep(profile: Profile) -> Scenario {
    let at = profile.day(7.0);
    let inject = Injection::from(at, Filter::route("extract"), Effect::DailyCostCreep(0.04));
    let truth = incidents(vec![incident(
        "extract's unit cost creeps 4% a day",
        (at, None),
        scope("route", "extract"),
        &[
            Kind::BaselineCreep,
            Kind::UnannouncedChange,
            Kind::CostDrift,
        ],
        3 * 24 * 60,
        // A few dollars a day on the simulated gateway: told in the digest at most.
        ("digest", "record"),
    )]);
    scenario("slow_creep", profile, vec![inject], vec![], truth)
}

/// From day 15 route `classify` stops being evaluated and its prompts shrink ×0.6, so
/// its cost falls. Expected: false efficiency (cost down while eval coverage
/// collapses), not a saving to celebrate.
pub fn evals_off(profile: Profile) -> Scenario {
    let at = profile.day(14.0);
    let injections = vec![
        Injection::from(at, Filter::route("classify"), Effect::EvalsStop),
        Injection::from(at, Filter::route("classify"), Effect::PromptTokens(0.6)),
    ];
    let mut off = incident(
        "classify's evals switched off while its prompts shrink",
        (at, None),
        scope("route", "classify"),
        &[Kind::FalseEfficiency, Kind::EvalCoverageDrop],
        8 * 60,
        ("page", "alert"),
    );
    off.related = vec![scope("model", "gpt-4o-mini")];
    scenario(
        "evals_off",
        profile,
        injections,
        vec![],
        incidents(vec![off]),
    )
}

/// The tenant ranked at three quarters of the tenant list (a small one: `tenant-16` of
/// 20) sends ×15 its usual volume for 3 hours from 10:00 on day 15. Expected: a
/// traffic drift scoped to that tenant, with unit cost unchanged; small blast radius.
pub fn tenant_spike(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 10 * 3_600_000;
    let tenant = profile.tenant_name(profile.tenants * 3 / 4);
    let to = from + 3 * 3_600_000;
    let inject = Injection::window(from, to, Filter::tenant(&tenant), Effect::Volume(15.0));
    let truth = incidents(vec![incident(
        "one small tenant sends x15 for 3 h",
        (from, Some(to)),
        scope("tenant", &tenant),
        &[Kind::TrafficDrift],
        60,
        ("alert", "digest"),
    )]);
    scenario("tenant_spike", profile, vec![inject], vec![], truth)
}

/// Eval scores on route `summarize` drop by 0.25 from day 15 (mean 0.84 to about 0.59,
/// so most fail), while cost and structure stay the same. Evals arrive with a median
/// lag of an hour, so the drop shows in the eval lane later than the request time.
/// Expected: quality drift on the route.
pub fn quality_drop(mut profile: Profile) -> Scenario {
    profile.eval_lag_median_min = 60.0;
    let at = profile.day(14.0);
    let inject = Injection::from(
        at,
        Filter::route("summarize"),
        Effect::EvalScoreShift(-0.25),
    );
    let mut worse = incident(
        "summarize's answers get worse",
        (at, None),
        scope("route", "summarize"),
        &[Kind::QualityDrift],
        8 * 60,
        ("page", "alert"),
    );
    // The route's answers come from these models: their scores fall with it.
    worse.related = vec![
        scope("model", "gpt-4o"),
        scope("model", "claude-3-5-sonnet"),
    ];
    let truth = incidents(vec![worse]);
    scenario("quality_drop", profile, vec![inject], vec![], truth)
}

/// 40% of all requests fail for 30 minutes from 11:00 on day 15 (an upstream outage),
/// then everything recovers. Expected: a structural drift (error rate) that fires and
/// resolves.
pub fn error_burst(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 11 * 3_600_000;
    let to = from + 30 * 60_000;
    let inject = Injection::window(from, to, Filter::all(), Effect::ErrorRate(0.4));
    let truth = incidents(vec![incident(
        "upstream outage: 40% of requests fail for 30 min",
        (from, Some(to)),
        Scope::new(),
        &[Kind::StructuralDrift],
        30,
        ("page", "page"),
    )]);
    scenario("error_burst", profile, vec![inject], vec![], truth)
}

/// Half the requests of a small tenant (`tenant-08`, about 3% of traffic: some 16
/// requests a bucket at the busiest hour) fail for one hour from 10:00 on day 15.
/// Expected: a structural drift on that tenant within the hour, found over pooled
/// buckets with an exact test, at a tier no higher than `alert`.
pub fn small_tenant_errors(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 10 * 3_600_000;
    let to = from + 3_600_000;
    let tenant = profile.tenant_name(7);
    let inject = Injection::window(from, to, Filter::tenant(&tenant), Effect::ErrorRate(0.5));
    let truth = incidents(vec![incident(
        "half of a small tenant's requests fail for an hour",
        (from, Some(to)),
        scope("tenant", &tenant),
        &[Kind::StructuralDrift],
        60,
        // A few dozen failed requests: recorded or in the digest, never a page.
        ("alert", "record"),
    )]);
    scenario("small_tenant_errors", profile, vec![inject], vec![], truth)
}

/// `gpt-4o-mini` (about 28% of requests) fails 60% of its requests for 40 minutes
/// from 11:00 on day 15. Expected: an incident headed by the model, its routes,
/// provider and global listed as consequences, at the tier of its harm (some 17% of
/// all requests failed: `alert` under the shipped tiers).
pub fn model_errors(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 11 * 3_600_000;
    let to = from + 40 * 60_000;
    let inject = Injection::window(
        from,
        to,
        Filter::model("gpt-4o-mini"),
        Effect::ErrorRate(0.6),
    );
    let mut failing = incident(
        "gpt-4o-mini fails 60% of its requests for 40 min",
        (from, Some(to)),
        scope("model", "gpt-4o-mini"),
        &[Kind::StructuralDrift],
        30,
        ("alert", "alert"),
    );
    failing.related = vec![
        scope("route", "classify"),
        scope("route", "extract"),
        scope("provider", "openai"),
    ];
    scenario(
        "model_errors",
        profile,
        vec![inject],
        vec![],
        incidents(vec![failing]),
    )
}

/// Provider `anthropic` answers 2.5× slower for four hours from 10:00 on day 15, the
/// others as fast as ever. Expected: a latency finding naming the provider (or its
/// one model), not only global, at `alert` (the latency rules' cap).
pub fn provider_latency(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 10 * 3_600_000;
    let to = from + 4 * 3_600_000;
    let inject = Injection::window(
        from,
        to,
        Filter::provider("anthropic"),
        Effect::Latency(2.5),
    );
    let mut slow = incident(
        "anthropic answers 2.5x slower for 4 h",
        (from, Some(to)),
        scope("provider", "anthropic"),
        &[Kind::StructuralDrift],
        60,
        ("alert", "alert"),
    );
    slow.related = vec![scope("model", "claude-3-5-sonnet")];
    scenario(
        "provider_latency",
        profile,
        vec![inject],
        vec![],
        incidents(vec![slow]),
    )
}

/// The smallest tenant (`tenant-20`, about 1% of traffic when it is there) sends
/// nothing for two weeks, then from 10:00 on day 15 three times its share (a new
/// integration, or a leaked key). Expected: a traffic drift on the newcomer within
/// the hour, though it has no baseline.
pub fn new_tenant(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 10 * 3_600_000;
    let tenant = profile.tenant_name(profile.tenants - 1);
    let absent = Injection::window(
        profile.start_ms,
        from,
        Filter::tenant(&tenant),
        Effect::Volume(0.0),
    );
    let arrives = Injection::from(from, Filter::tenant(&tenant), Effect::Volume(3.0));
    let truth = incidents(vec![incident(
        "a tenant never seen before sends 3% of all requests",
        (from, None),
        scope("tenant", &tenant),
        &[Kind::TrafficDrift],
        // "2% of requests within an hour": two buckets to see it last.
        60,
        ("alert", "record"),
    )]);
    scenario("new_tenant", profile, vec![absent, arrives], vec![], truth)
}

/// Nothing at all arrives for an hour from 14:00 on day 15: the gateway is down, or
/// its log stopped being written. Expected: a traffic drift on global (a drop to
/// zero, found in the empty buckets) that pages within 30 minutes and resolves when
/// traffic is back, with no alert per tenant, model or route.
pub fn gateway_down(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 14 * 3_600_000;
    let to = from + 3_600_000;
    let inject = Injection::window(from, to, Filter::all(), Effect::Volume(0.0));
    let truth = incidents(vec![incident(
        "no traffic at all for an hour",
        (from, Some(to)),
        Scope::new(),
        &[Kind::TrafficDrift],
        30,
        ("page", "page"),
    )]);
    scenario("gateway_down", profile, vec![inject], vec![], truth)
}

/// Eval scores on route `extract` (a tenth of the traffic, a tenth of it scored: 1 to
/// 16 scores a bucket) fall from about 0.85 to 0.75 over three days from day 10, and
/// stay there. No bucket is far off on its own. Expected: a quality finding on the
/// route within two days of the start.
pub fn quality_creep(profile: Profile) -> Scenario {
    let at = profile.day(9.0);
    let ramp = Effect::EvalScoreRamp {
        total: -0.1,
        days: 3.0,
    };
    let inject = Injection::from(at, Filter::route("extract"), ramp);
    let truth = incidents(vec![incident(
        "extract's answers get slowly worse",
        (at, None),
        scope("route", "extract"),
        &[Kind::QualityDrift, Kind::BaselineCreep],
        2 * 24 * 60,
        ("page", "digest"),
    )]);
    scenario("quality_creep", profile, vec![inject], vec![], truth)
}

/// From 10:00 on day 15 route `extract` sends the requests it sent to `gpt-4o`
/// (half of them) to `gpt-4o-mini` instead, for good, and nobody said so. Expected:
/// one incident headed by the route's routing shift, with the models' traffic and
/// cost moves as its consequences, learned as the new normal after the warm-up.
pub fn route_moved(profile: Profile) -> Scenario {
    let at = profile.day(14.0) + 10 * 3_600_000;
    let filter = Filter {
        model: Some("gpt-4o".to_string()),
        ..Filter::route("extract")
    };
    let inject = Injection::from(at, filter, Effect::RouteTo("gpt-4o-mini".to_string()));
    let mut moved = incident(
        "extract's gpt-4o requests go to gpt-4o-mini",
        (at, None),
        scope("route", "extract"),
        &[Kind::RoutingShift],
        30,
        ("alert", "record"),
    );
    moved.related = vec![scope("model", "gpt-4o"), scope("model", "gpt-4o-mini")];
    scenario(
        "route_moved",
        profile,
        vec![inject],
        vec![],
        incidents(vec![moved]),
    )
}

/// From day 15 `gpt-4o-mini` costs ×1.4 for good (a price change nobody posted).
/// Expected: one cost incident on the model that becomes the new normal after the
/// warm-up length (a detected change event with its report), not a flap.
pub fn price_rise(profile: Profile) -> Scenario {
    let at = profile.day(14.0);
    let inject = Injection::from(
        at,
        Filter::model("gpt-4o-mini"),
        Effect::CostMultiplier(1.4),
    );
    let mut rise = incident(
        "gpt-4o-mini's price rises 40% for good",
        (at, None),
        scope("model", "gpt-4o-mini"),
        &[Kind::CostDrift, Kind::UnannouncedChange],
        // It starts at midnight: the night's thin traffic shows it by the morning.
        8 * 60,
        // A few dollars a day on the simulated gateway.
        ("alert", "record"),
    );
    // The routes it serves see their unit cost move with it.
    rise.related = vec![scope("route", "classify"), scope("route", "extract")];
    scenario(
        "price_rise",
        profile,
        vec![inject],
        vec![],
        incidents(vec![rise]),
    )
}

#[cfg(test)]
mod tests {
    use super::super::generate::tests::run;
    use super::super::profile::DAY_MS;
    use super::*;
    use crate::domain::{EvalScore, UsageEvent};
    use compact_str::CompactString;

    /// The scenario with most of its quiet prefix skipped (it starts a day before the
    /// drift), and the quiet run over the same profile.
    fn pair(name: &str, peak_rpm: f64) -> (Scenario, Scenario) {
        let mut s = by_name(
            name,
            Profile {
                peak_rpm,
                ..Profile::default()
            },
        )
        .unwrap();
        s.profile.start_ms = s.profile.day(13.0);
        s.profile.days = 2.0;
        let q = quiet(s.profile.clone());
        (s, q)
    }

    /// Whether an injection of `s` touches `e`.
    fn affected(s: &Scenario, e: &UsageEvent) -> bool {
        s.injections.iter().any(|inj| {
            let f = &inj.filter;
            let is = |want: &Option<String>, got: &Option<CompactString>| {
                want.is_none() || want.as_deref() == got.as_deref()
            };
            inj.active_at(e.ts_ms)
                && f.model.as_ref().is_none_or(|m| *m == e.model)
                && is(&f.route, &e.route)
                && is(&f.tenant, &e.tenant)
                && is(&f.provider, &e.provider)
        })
    }

    /// Runs both and checks every request the drift does not touch is unchanged;
    /// `changed(quiet, drifted)` checks the touched ones. Returns both eval streams.
    fn check(
        name: &str,
        changed: impl Fn(&UsageEvent, &UsageEvent),
    ) -> (Scenario, Vec<EvalScore>, Vec<EvalScore>) {
        let (s, q) = pair(name, 10.0);
        let (drifted, drifted_evals) = run(&s, 4);
        let (quiet, quiet_evals) = run(&q, 4);
        assert_eq!(drifted.len(), quiet.len());
        let mut touched = 0;
        for (a, b) in quiet.iter().zip(&drifted) {
            if affected(&s, a) {
                touched += 1;
                changed(a, b);
            } else {
                assert_eq!(a, b);
            }
        }
        assert!(touched > 50, "{name}: only {touched} requests in scope");
        (s, quiet_evals, drifted_evals)
    }

    fn scores(evals: &[EvalScore], ids: &std::collections::HashSet<&str>) -> Vec<f64> {
        evals
            .iter()
            .filter(|e| ids.contains(e.request_id.as_deref().unwrap()))
            .map(|e| e.score.unwrap())
            .collect()
    }

    fn cost_ratio(a: &UsageEvent, b: &UsageEvent) -> f64 {
        b.cost_usd.unwrap() / a.cost_usd.unwrap()
    }

    #[test]
    fn announced_deploy_lengthens_summarize_prompts_and_announces_it() {
        let (s, _, _) = check("announced_deploy", |a, b| {
            if !a.is_error() {
                assert!(
                    (b.prompt_tokens as f64 - 1.6 * a.prompt_tokens as f64).abs() <= 1.6,
                    "{a:?} {b:?}"
                );
                assert!(b.cost_usd > a.cost_usd);
                assert_eq!(a.completion_tokens, b.completion_tokens);
            }
        });
        assert_eq!(s.changes.len(), 1);
        assert_eq!(s.changes[0].ts_ms, s.injections[0].from_ms);
        assert_eq!(s.changes[0].scope["route"], "summarize");
    }

    #[test]
    fn silent_model_bump_resolves_gpt4o_to_a_pricier_snapshot_unannounced() {
        let (s, _, _) = check("silent_model_bump", |a, b| {
            assert_eq!(b.resolved_model.as_deref(), Some("gpt-4o-2024-11-20"));
            if !a.is_error() {
                assert!((cost_ratio(a, b) - 1.5).abs() < 1e-9);
            }
        });
        assert!(s.changes.is_empty());
    }

    #[test]
    fn slow_creep_compounds_extract_cost_daily() {
        check("slow_creep", |a, b| {
            if !a.is_error() {
                let days = (a.ts_ms - Profile::default().day(7.0)) as f64 / DAY_MS as f64;
                assert!((cost_ratio(a, b) - 1.04f64.powf(days)).abs() < 1e-9);
                assert!(days >= 6.0 && cost_ratio(a, b) > 1.26);
                assert_eq!(a.prompt_tokens, b.prompt_tokens);
            }
        });
    }

    #[test]
    fn evals_off_stops_classify_evals_and_shrinks_its_prompts() {
        let touched = std::cell::RefCell::new(std::collections::HashSet::new());
        let (_, quiet_evals, drifted_evals) = check("evals_off", |a, b| {
            touched.borrow_mut().insert(a.id.clone());
            if !a.is_error() {
                assert!(b.cost_usd < a.cost_usd);
            }
        });
        let touched = touched.into_inner();
        let ids = touched.iter().map(CompactString::as_str).collect();
        assert!(scores(&quiet_evals, &ids).len() > 10);
        assert!(scores(&drifted_evals, &ids).is_empty());
        assert_eq!(
            quiet_evals.len() - scores(&quiet_evals, &ids).len(),
            drifted_evals.len()
        );
    }

    #[test]
    fn quality_drop_lowers_summarize_scores_only() {
        let touched = std::cell::RefCell::new(std::collections::HashSet::new());
        let (_, quiet_evals, drifted_evals) = check("quality_drop", |a, b| {
            assert_eq!(a, b, "requests themselves do not change");
            touched.borrow_mut().insert(a.id.clone());
        });
        let touched = touched.into_inner();
        let ids = touched.iter().map(CompactString::as_str).collect();
        let (before, after) = (scores(&quiet_evals, &ids), scores(&drifted_evals, &ids));
        assert_eq!(before.len(), after.len());
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            (mean(&before) - mean(&after) - 0.25).abs() < 0.02,
            "{} {}",
            mean(&before),
            mean(&after)
        );
        let untouched = |v: &[EvalScore]| {
            v.iter()
                .filter(|e| !ids.contains(e.request_id.as_deref().unwrap()))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(untouched(&quiet_evals), untouched(&drifted_evals));
    }

    #[test]
    fn error_burst_fails_forty_percent_for_thirty_minutes() {
        let failed = std::cell::Cell::new((0, 0));
        check("error_burst", |a, b| {
            let (f, n) = failed.get();
            failed.set((f + usize::from(b.is_error()), n + 1));
            if !b.is_error() {
                assert_eq!(a, b);
            }
        });
        let (f, n) = failed.get();
        let share = f as f64 / n as f64;
        assert!((0.3..0.5).contains(&share), "{f} of {n}");
    }

    #[test]
    fn tenant_spike_multiplies_one_tenants_volume_for_three_hours() {
        let (s, q) = pair("tenant_spike", 10.0);
        let strip = |mut e: UsageEvent| {
            e.id.clear();
            e
        };
        let (drifted, _) = run(&s, 4);
        let (quiet, _) = run(&q, 4);
        let (spiked, rest): (Vec<_>, Vec<_>) = drifted
            .into_iter()
            .map(strip)
            .partition(|e| affected(&s, e));
        let (base, quiet_rest): (Vec<_>, Vec<_>) =
            quiet.into_iter().map(strip).partition(|e| affected(&s, e));
        assert_eq!(rest, quiet_rest, "other tenants and hours are untouched");
        let ratio = spiked.len() as f64 / base.len() as f64;
        assert!(
            base.len() > 10 && (12.0..18.0).contains(&ratio),
            "{} vs {}",
            spiked.len(),
            base.len()
        );
        assert!(
            base.iter().all(|e| spiked.contains(e)),
            "the spike adds to the usual requests"
        );
        assert_eq!(s.injections[0].filter.tenant.as_deref(), Some("tenant-16"));
    }

    #[test]
    fn every_name_builds_and_unknown_names_are_refused() {
        for name in NAMES {
            assert_eq!(by_name(name, Profile::default()).unwrap().name, name);
        }
        assert!(
            by_name("nope", Profile::default())
                .unwrap_err()
                .to_string()
                .contains("quiet")
        );
    }
}
