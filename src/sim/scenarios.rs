//! Named scenarios for tests and the demo. Each takes the normal traffic (`Profile`)
//! and plants one drift. Unless noted, the drift starts after 14 quiet days (at
//! `profile.day(14.0)`, the first instant of day 15; with the default start that is a
//! Monday) and the default profile runs 16 days. Injection times are absolute, so a
//! test can move `profile.start_ms` forward to skip most of the quiet prefix.

use std::collections::BTreeMap;

use super::inject::{Effect, Filter, Injection};
use super::profile::Profile;
use super::{Scenario, SimError};
use crate::domain::{ChangeEvent, ChangeKind};

/// The names `by_name` knows, in the order of this file.
pub const NAMES: [&str; 8] = [
    "quiet",
    "announced_deploy",
    "silent_model_bump",
    "slow_creep",
    "evals_off",
    "tenant_spike",
    "quality_drop",
    "error_burst",
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
) -> Scenario {
    Scenario {
        name: name.to_string(),
        profile,
        injections,
        changes,
    }
}

/// Nothing happens: the baseline every detector must stay silent on.
pub fn quiet(profile: Profile) -> Scenario {
    scenario("quiet", profile, vec![], vec![])
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
    scenario("announced_deploy", profile, vec![inject], vec![change])
}

/// From day 15 the gateway resolves `gpt-4o` to a new snapshot (`gpt-4o-2024-11-20`)
/// that costs ×1.5, and nobody said so. Expected: the resolved-model mix changes and
/// cost per request rises on `gpt-4o` with no change event: an unannounced change.
pub fn silent_model_bump(profile: Profile) -> Scenario {
    let inject = Injection::from(
        profile.day(14.0),
        Filter::model("gpt-4o"),
        Effect::ResolveTo {
            resolved_model: "gpt-4o-2024-11-20".to_string(),
            price_multiplier: 1.5,
        },
    );
    scenario("silent_model_bump", profile, vec![inject], vec![])
}

/// Unit cost on route `extract` creeps up 4% a day, compounding, from day 8 (so it is
/// about ×1.37 by the end of day 16). Expected: no single step, but baseline creep
/// against the epoch's anchor.
pub fn slow_creep(profile: Profile) -> Scenario {
    let inject = Injection::from(
        profile.day(7.0),
        Filter::route("extract"),
        Effect::DailyCostCreep(0.04),
    );
    scenario("slow_creep", profile, vec![inject], vec![])
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
    scenario("evals_off", profile, injections, vec![])
}

/// The tenant ranked at three quarters of the tenant list (a small one: `tenant-16` of
/// 20) sends ×15 its usual volume for 3 hours from 10:00 on day 15. Expected: a
/// traffic drift scoped to that tenant, with unit cost unchanged; small blast radius.
pub fn tenant_spike(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 10 * 3_600_000;
    let tenant = profile.tenant_name(profile.tenants * 3 / 4);
    let inject = Injection::window(
        from,
        from + 3 * 3_600_000,
        Filter::tenant(&tenant),
        Effect::Volume(15.0),
    );
    scenario("tenant_spike", profile, vec![inject], vec![])
}

/// Eval scores on route `summarize` drop by 0.25 from day 15 (mean 0.84 to about 0.59,
/// so most fail), while cost and structure stay the same. Evals arrive with a median
/// lag of an hour, so the drop shows in the eval lane later than the request time.
/// Expected: quality drift on the route.
pub fn quality_drop(mut profile: Profile) -> Scenario {
    profile.eval_lag_median_min = 60.0;
    let inject = Injection::from(
        profile.day(14.0),
        Filter::route("summarize"),
        Effect::EvalScoreShift(-0.25),
    );
    scenario("quality_drop", profile, vec![inject], vec![])
}

/// 40% of all requests fail for 30 minutes from 11:00 on day 15 (an upstream outage),
/// then everything recovers. Expected: a structural drift (error rate) that fires and
/// resolves.
pub fn error_burst(profile: Profile) -> Scenario {
    let from = profile.day(14.0) + 11 * 3_600_000;
    let inject = Injection::window(
        from,
        from + 30 * 60_000,
        Filter::all(),
        Effect::ErrorRate(0.4),
    );
    scenario("error_burst", profile, vec![inject], vec![])
}
