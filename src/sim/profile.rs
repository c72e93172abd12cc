//! What normal traffic looks like: volume and its weekly rhythm, models, routes,
//! tenants, errors, truncation, caching, latency and evals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SimError;

/// 2026-06-01T00:00:00Z, a Monday: the default start, so day 6 and 7 are a weekend.
pub const DEFAULT_START_MS: i64 = 1_780_272_000_000;

/// One millisecond-day.
pub const DAY_MS: i64 = 86_400_000;

/// Normal traffic of a simulated gateway. Every field has a default, so a TOML or JSON
/// profile names only what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// First instant of traffic, milliseconds since the Unix epoch (UTC).
    pub start_ms: i64,
    /// How long traffic runs, in days (fractions allowed).
    pub days: f64,
    /// Mean requests per minute at the busiest hour of a weekday.
    pub peak_rpm: f64,
    /// Volume per UTC hour of day relative to `peak_rpm` (24 values; 1.0 is the peak).
    pub hourly: Vec<f64>,
    /// Volume on Saturday and Sunday relative to a weekday.
    pub weekend_factor: f64,
    /// The models clients ask for, with their overall traffic shares.
    pub models: Vec<ModelSpec>,
    /// The application routes, each with its own token shapes and model preference.
    pub routes: Vec<RouteSpec>,
    /// Number of tenants, named `tenant-01` .. (see `Profile::tenant_name`).
    pub tenants: u32,
    /// Zipf exponent of tenant shares: 0 is uniform, 1.1 gives one tenant about a
    /// third of the traffic among 20.
    pub tenant_skew: f64,
    /// Share of requests that fail (status 429, 500 or 503).
    pub error_rate: f64,
    /// Share of successful requests cut off by the token limit (`finish_reason` `length`),
    /// besides those whose sampled completion reaches the route's limit.
    pub truncation_rate: f64,
    /// Share of successful requests that hit the provider's prompt cache.
    pub cached_share: f64,
    /// Median delay between a request and its eval score, in minutes.
    pub eval_lag_median_min: f64,
    /// Log-space spread of the eval delay (lognormal sigma); clamped to 1 min .. 6 h.
    pub eval_lag_sigma: f64,
    /// The evaluator name on every score.
    pub evaluator: String,
}

/// A requested model and what the gateway resolves it to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The name clients ask for (`gpt-4o`).
    pub name: String,
    /// The dated snapshot that answers (`gpt-4o-2024-08-06`).
    pub resolved: String,
    /// The upstream provider (`openai`).
    pub provider: String,
    /// Relative traffic share across all routes.
    pub share: f64,
    /// Output speed, which sets latency together with the token counts.
    pub tokens_per_second: f64,
}

/// A lognormal token count: `median` and the log-space `sigma`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDist {
    /// Median token count.
    pub median: f64,
    /// Lognormal sigma (0.5 means roughly ×/÷ 1.65 for one standard deviation).
    pub sigma: f64,
}

/// One application route (use case).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Route name (`chat`).
    pub name: String,
    /// Relative traffic share.
    pub share: f64,
    /// Prompt token counts.
    pub prompt: TokenDist,
    /// Completion token counts.
    pub completion: TokenDist,
    /// The `max_tokens` the route sends: a completion reaching it is truncated.
    pub max_completion: u64,
    /// Preference per model name, multiplied with the model's share. Empty means the
    /// models' own shares; otherwise a model not listed is never used on this route.
    #[serde(default)]
    pub models: BTreeMap<String, f64>,
    /// Share of successful requests that get an eval score.
    pub eval_fraction: f64,
    /// Mean eval score (scores have a 0.08 standard deviation, clamped to 0..1).
    pub eval_mean: f64,
    /// Whether clients stream answers (New API's `is_stream`).
    pub stream: bool,
}

impl Default for Profile {
    fn default() -> Profile {
        let model = |name: &str, resolved: &str, provider: &str, share: f64, tps: f64| ModelSpec {
            name: name.into(),
            resolved: resolved.into(),
            provider: provider.into(),
            share,
            tokens_per_second: tps,
        };
        let prefs = |list: &[(&str, f64)]| {
            list.iter()
                .map(|(m, w)| (m.to_string(), *w))
                .collect::<BTreeMap<_, _>>()
        };
        let tokens = |median: f64, sigma: f64| TokenDist { median, sigma };
        Profile {
            start_ms: DEFAULT_START_MS,
            days: 16.0,
            peak_rpm: 60.0,
            hourly: vec![
                0.12, 0.10, 0.08, 0.08, 0.10, 0.15, 0.25, 0.45, 0.75, 0.95, 1.0, 1.0, 0.9, 0.95,
                1.0, 1.0, 0.95, 0.8, 0.6, 0.45, 0.35, 0.28, 0.2, 0.15,
            ],
            weekend_factor: 0.4,
            models: vec![
                model("gpt-4o", "gpt-4o-2024-08-06", "openai", 0.45, 80.0),
                model(
                    "claude-3-5-sonnet",
                    "claude-3-5-sonnet-20241022",
                    "anthropic",
                    0.25,
                    60.0,
                ),
                model(
                    "gpt-4o-mini",
                    "gpt-4o-mini-2024-07-18",
                    "openai",
                    0.30,
                    120.0,
                ),
            ],
            routes: vec![
                RouteSpec {
                    name: "chat".into(),
                    share: 0.4,
                    prompt: tokens(900.0, 0.6),
                    completion: tokens(250.0, 0.7),
                    max_completion: 2048,
                    models: prefs(&[("gpt-4o", 1.0), ("claude-3-5-sonnet", 1.0)]),
                    eval_fraction: 0.10,
                    eval_mean: 0.86,
                    stream: true,
                },
                RouteSpec {
                    name: "classify".into(),
                    share: 0.3,
                    prompt: tokens(400.0, 0.4),
                    completion: tokens(8.0, 0.3),
                    max_completion: 64,
                    models: prefs(&[("gpt-4o-mini", 1.0), ("gpt-4o", 0.3)]),
                    eval_fraction: 0.20,
                    eval_mean: 0.90,
                    stream: false,
                },
                RouteSpec {
                    name: "summarize".into(),
                    share: 0.2,
                    prompt: tokens(3000.0, 0.5),
                    completion: tokens(300.0, 0.4),
                    max_completion: 1024,
                    models: prefs(&[("gpt-4o", 1.0), ("claude-3-5-sonnet", 1.0)]),
                    eval_fraction: 0.15,
                    eval_mean: 0.84,
                    stream: false,
                },
                RouteSpec {
                    name: "extract".into(),
                    share: 0.1,
                    prompt: tokens(1500.0, 0.5),
                    completion: tokens(150.0, 0.5),
                    max_completion: 1024,
                    models: prefs(&[("gpt-4o", 1.0), ("gpt-4o-mini", 1.0)]),
                    eval_fraction: 0.10,
                    eval_mean: 0.85,
                    stream: false,
                },
            ],
            tenants: 20,
            tenant_skew: 1.1,
            error_rate: 0.01,
            truncation_rate: 0.02,
            cached_share: 0.3,
            eval_lag_median_min: 20.0,
            eval_lag_sigma: 1.0,
            evaluator: "judge-v1".into(),
        }
    }
}

impl Profile {
    /// The first instant after the traffic.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + (self.days * DAY_MS as f64) as i64
    }

    /// The instant `day` days after the start (day 14 is the first instant of the 15th day).
    pub fn day(&self, day: f64) -> i64 {
        self.start_ms + (day * DAY_MS as f64) as i64
    }

    /// The name of tenant `rank` (0 is the biggest): `tenant-07`, zero-padded to the
    /// width of the largest rank so names sort by rank.
    pub fn tenant_name(&self, rank: u32) -> String {
        let width = self.tenants.max(10).ilog10() as usize + 1;
        format!("tenant-{:0width$}", rank + 1)
    }

    /// The mean requests per minute in the minute starting at `ts_ms`.
    pub fn rate_at(&self, ts_ms: i64) -> f64 {
        let hour = ts_ms.rem_euclid(DAY_MS) / 3_600_000;
        // 1970-01-01 was a Thursday: shift so that Monday is 0.
        let weekday = (ts_ms.div_euclid(DAY_MS) + 3).rem_euclid(7);
        let weekend = if weekday >= 5 {
            self.weekend_factor
        } else {
            1.0
        };
        self.peak_rpm * self.hourly[hour as usize] * weekend
    }

    /// Checks what the generator relies on: shapes, ranges and names.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Profile(m));
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(SimError::Profile(format!("{name} {v} is outside 0..1")))
            }
        };
        if self.hourly.len() != 24 || self.hourly.iter().any(|h| !(h.is_finite() && *h >= 0.0)) {
            return bad("hourly needs 24 non-negative values".into());
        }
        if !(self.days.is_finite() && self.days > 0.0) {
            return bad(format!("days {} must be positive", self.days));
        }
        if !(self.peak_rpm.is_finite() && self.peak_rpm >= 0.0) {
            return bad(format!("peak_rpm {} must be non-negative", self.peak_rpm));
        }
        if self.tenants == 0 {
            return bad("tenants must be at least 1".into());
        }
        if !(self.tenant_skew.is_finite() && self.tenant_skew >= 0.0) {
            return bad(format!(
                "tenant_skew {} must be non-negative",
                self.tenant_skew
            ));
        }
        unit("weekend_factor", self.weekend_factor)?;
        unit("error_rate", self.error_rate)?;
        unit("truncation_rate", self.truncation_rate)?;
        unit("cached_share", self.cached_share)?;
        if !(self.eval_lag_median_min > 0.0 && self.eval_lag_sigma >= 0.0) {
            return bad("eval lag needs a positive median and a non-negative sigma".into());
        }
        if self.models.is_empty() || self.routes.is_empty() {
            return bad("a profile needs at least one model and one route".into());
        }
        for m in &self.models {
            if !(m.share >= 0.0 && m.tokens_per_second > 0.0) {
                return bad(format!("model {}: share or speed out of range", m.name));
            }
        }
        for r in &self.routes {
            unit(&format!("route {} eval_fraction", r.name), r.eval_fraction)?;
            unit(&format!("route {} eval_mean", r.name), r.eval_mean)?;
            let dists = [r.prompt, r.completion];
            if r.share < 0.0
                || r.max_completion == 0
                || dists.iter().any(|d| d.median < 1.0 || d.sigma < 0.0)
            {
                return bad(format!(
                    "route {}: share, tokens or max_completion out of range",
                    r.name
                ));
            }
            if let Some(unknown) = r
                .models
                .keys()
                .find(|k| !self.models.iter().any(|m| &m.name == *k))
            {
                return bad(format!("route {} prefers unknown model {unknown}", r.name));
            }
            if self.model_weights(r).iter().all(|w| *w <= 0.0) {
                return bad(format!(
                    "route {} has no model with a positive weight",
                    r.name
                ));
            }
        }
        if self.routes.iter().all(|r| r.share <= 0.0) {
            return bad("no route has a positive share".into());
        }
        Ok(())
    }

    /// Weight of each model (in `models` order) on `route`.
    pub(super) fn model_weights(&self, route: &RouteSpec) -> Vec<f64> {
        self.models
            .iter()
            .map(|m| {
                let pref = if route.models.is_empty() {
                    1.0
                } else {
                    route.models.get(&m.name).copied().unwrap_or(0.0)
                };
                m.share * pref
            })
            .collect()
    }
}
