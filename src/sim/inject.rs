//! Injections: the drifts a scenario plants in otherwise normal traffic.

use serde::{Deserialize, Serialize};

/// Which requests an injection touches: every named dimension must be equal; an
/// empty filter matches everything. `model` is the requested model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Requested model.
    pub model: Option<String>,
    /// Route.
    pub route: Option<String>,
    /// Tenant label (`tenant-07`).
    pub tenant: Option<String>,
    /// Provider.
    pub provider: Option<String>,
}

impl Filter {
    /// Matches every request.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Matches one route.
    pub fn route(route: &str) -> Filter {
        Filter {
            route: Some(route.into()),
            ..Filter::default()
        }
    }

    /// Matches one requested model.
    pub fn model(model: &str) -> Filter {
        Filter {
            model: Some(model.into()),
            ..Filter::default()
        }
    }

    /// Matches one provider.
    pub fn provider(provider: &str) -> Filter {
        Filter {
            provider: Some(provider.into()),
            ..Filter::default()
        }
    }

    /// Matches one tenant.
    pub fn tenant(tenant: &str) -> Filter {
        Filter {
            tenant: Some(tenant.into()),
            ..Filter::default()
        }
    }
}

/// What an injection does to the requests it matches. Effects of overlapping
/// injections compose (multipliers multiply; the last `ResolveTo` / `ErrorRate` wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Prompt tokens × m (a longer prompt template).
    PromptTokens(f64),
    /// Completion tokens × m (capped by the route's `max_completion`).
    CompletionTokens(f64),
    /// The gateway silently resolves the model to another snapshot, whose price is the
    /// old one × `price_multiplier`.
    ResolveTo {
        /// The new resolved model name.
        resolved_model: String,
        /// Unit price of the new snapshot relative to the old.
        price_multiplier: f64,
    },
    /// Matching requests get no eval scores (checks switched off).
    EvalsStop,
    /// Eval scores move by this much (clamped to 0..1).
    EvalScoreShift(f64),
    /// Eval scores move by `total`, reached linearly over `days` from the
    /// injection's start and held after (answers getting slowly worse).
    EvalScoreRamp {
        /// The shift reached at the end of the ramp.
        total: f64,
        /// How long the ramp takes, in days.
        days: f64,
    },
    /// Requests × m: extra requests of the same model, route and tenant are added
    /// (m below 1 drops requests instead).
    Volume(f64),
    /// Share of matching requests that fail, replacing the profile's error rate.
    ErrorRate(f64),
    /// Unit cost grows by this fraction per day, compounding from the injection's start.
    DailyCostCreep(f64),
    /// Cost × m with tokens unchanged (a pricing or billing change).
    CostMultiplier(f64),
    /// Time to first token and generation time × m (a slow provider region).
    Latency(f64),
    /// Matching requests are sent to this model instead (the gateway's routing for
    /// a route changed); it must be one of the profile's models.
    RouteTo(String),
}

/// One planted drift: `effect` on the requests that match `filter` in
/// `from_ms .. to_ms` (open-ended when `to_ms` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// First affected instant, milliseconds since the Unix epoch.
    pub from_ms: i64,
    /// First instant no longer affected; `None` lasts to the end.
    #[serde(default)]
    pub to_ms: Option<i64>,
    /// Which requests it touches.
    #[serde(default)]
    pub filter: Filter,
    /// What it does to them.
    pub effect: Effect,
}

impl Injection {
    /// An open-ended injection from `from_ms` on.
    pub fn from(from_ms: i64, filter: Filter, effect: Effect) -> Injection {
        Injection {
            from_ms,
            to_ms: None,
            filter,
            effect,
        }
    }

    /// An injection over `from_ms .. to_ms`.
    pub fn window(from_ms: i64, to_ms: i64, filter: Filter, effect: Effect) -> Injection {
        Injection {
            from_ms,
            to_ms: Some(to_ms),
            filter,
            effect,
        }
    }

    /// Whether `ts_ms` is inside the injection's time window.
    pub fn active_at(&self, ts_ms: i64) -> bool {
        ts_ms >= self.from_ms && self.to_ms.is_none_or(|to| ts_ms < to)
    }
}
