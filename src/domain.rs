//! Domain types shared by every pipeline stage.
//!
//! Adapters produce these, the store persists them, and later stages (lanes,
//! baselines, detectors, alerts) read them. Nothing here does IO.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// One request seen by the gateway, normalized from any supported record shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// Idempotency key: a resent record with the same id is stored once.
    pub id: CompactString,
    /// Request time, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// The model the client asked for.
    pub model: CompactString,
    /// The model that actually answered (a dated snapshot, an upstream name).
    pub resolved_model: Option<CompactString>,
    /// The upstream provider or gateway channel that served the request.
    pub provider: Option<CompactString>,
    /// Application route or use case (for example `classify`).
    pub route: Option<CompactString>,
    /// Tenant label: an operator-chosen label, or an alias / salted hash of a
    /// gateway identity. Never a raw key or user id.
    pub tenant: Option<CompactString>,
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input tokens served from the provider's prompt cache (part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// Cost in USD as charged: from the record when it has one, else from the price table.
    pub cost_usd: Option<f64>,
    /// Where `cost_usd` came from.
    pub cost_source: CostSource,
    /// List price from the price table, kept beside a gateway-reported cost so a gap
    /// between what the gateway charged and list price stays visible.
    pub list_cost_usd: Option<f64>,
    /// End-to-end request duration in milliseconds, when the gateway reports it.
    pub latency_ms: Option<u64>,
    /// Time to first token, when the gateway reports it.
    pub ttft_ms: Option<u64>,
    /// HTTP-like status: 200 for success, the upstream error code otherwise.
    pub status: Option<u16>,
    /// Why generation stopped, as the provider said (`stop`, `length`, ...).
    pub finish_reason: Option<CompactString>,
    /// The error's type or class, when the request failed.
    pub error_type: Option<CompactString>,
}

impl UsageEvent {
    /// Whether the request failed (status 400 or above, or an error type was reported).
    pub fn is_error(&self) -> bool {
        self.status.is_some_and(|s| s >= 400) || self.error_type.is_some()
    }

    /// Whether the completion was cut off by the token limit.
    pub fn is_truncated(&self) -> bool {
        self.finish_reason.as_deref() == Some("length")
    }
}

/// Where an event's cost came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The gateway's record carried the cost.
    Gateway,
    /// Computed from `rules/pricing.toml` at the event's time.
    PriceTable,
    /// Neither: the model is not priced and the record had no cost.
    Unknown,
}

impl CostSource {
    /// Stable name used in storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Gateway => "gateway",
            CostSource::PriceTable => "price_table",
            CostSource::Unknown => "unknown",
        }
    }
}

/// A quality score for one request (or for a route / model as a whole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalScore {
    /// The scored request's `UsageEvent::id`; `None` for a route- or model-level score.
    pub request_id: Option<String>,
    /// The route the score is about, if given.
    pub route: Option<String>,
    /// The model the score is about, if given.
    pub model: Option<String>,
    /// What produced the score (`judge-v1`, `regex`); never empty.
    pub evaluator: String,
    /// When the score was given, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// Score in 0..=1.
    pub score: Option<f64>,
    /// Pass/fail verdict, for evaluators that give one.
    pub passed: Option<bool>,
}

impl EvalScore {
    /// Idempotency key: the same evaluator scoring the same subject at the same time once.
    pub fn key(&self) -> String {
        let subject = self
            .request_id
            .as_deref()
            .map(|r| format!("req={r}"))
            .unwrap_or_else(|| {
                format!(
                    "route={};model={}",
                    self.route.as_deref().unwrap_or(""),
                    self.model.as_deref().unwrap_or("")
                )
            });
        format!("{subject};evaluator={};ts={}", self.evaluator, self.ts_ms)
    }
}

/// A record that could not become an event, kept with the reason so nothing is lost silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Which source it came from (`tail:/var/log/x.jsonl`, `http:events`, ...).
    pub source: String,
    /// Where in that source: a byte offset, or a line number in a request body.
    pub position: String,
    /// Why the record was refused, redacted and bounded like `raw`.
    pub reason: String,
    /// The record's text, bounded and with secrets redacted.
    pub raw: String,
}

/// Identity of one file, independent of its current name. Taken and checked by
/// `sources::fingerprint` (the file IO); a plain value here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Device number of the filesystem holding the file.
    pub dev: u64,
    /// Inode number on that device.
    pub inode: u64,
    /// How many leading bytes `head_hash` covers (less than
    /// `sources::fingerprint::HEAD_BYTES` while the file is short).
    pub head_len: u64,
    /// Checksum (BLAKE3, first 8 bytes) of the file's first `head_len` bytes.
    pub head_hash: u64,
}

/// Where a tailed file has been read up to; committed with the events it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCheckpoint {
    /// The configured path being followed.
    pub path: String,
    /// Identity of the file `offset` belongs to, so a rotated or replaced file is noticed.
    pub fingerprint: Fingerprint,
    /// Byte offset just past the last complete line handed to the store.
    pub offset: u64,
}

/// How far a gateway database source has read its logs table; committed with the
/// events it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbCursor {
    /// The source's name (`db:newapi:sqlite:/path#logs`), credentials removed.
    pub source: String,
    /// Highest row id whose record is in the store (or was skipped).
    pub last_id: i64,
}

/// What changed, as posted to `/recalibrate` (or detected in the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A release of the application (code, prompts).
    Deploy,
    /// A change of the model or model version behind the scope.
    ModelBump,
    /// A gateway or application setting changed.
    ConfigChange,
}

impl ChangeKind {
    /// Stable name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deploy => "deploy",
            ChangeKind::ModelBump => "model_bump",
            ChangeKind::ConfigChange => "config_change",
        }
    }
}

/// The dimensions a scope can name.
pub const SCOPE_DIMS: [&str; 4] = ["model", "route", "tenant", "provider"];

/// Most distinct values a dimension keeps by default, in the lanes' scopes and the
/// store's aggregates alike; later values are counted under `_other`.
pub const CARDINALITY_CAP: usize = 300;

/// A change that starts a new baseline epoch for the series in its scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// What kind of change it was.
    pub kind: ChangeKind,
    /// When the change took effect, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// Dimension to value (`{"route": "summarize"}`); empty means everything.
    pub scope: BTreeMap<String, String>,
    /// Free text saying what changed (`prompt template v2`); may be empty.
    pub note: String,
    /// `api` when posted, `detected` when found in the data.
    pub origin: String,
}

/// The labels a change, an alert or an exception applies to: dimension to value
/// (`{"model": "gpt-4o", "route": "chat"}`). Empty means everything (the global scope).
pub type Scope = BTreeMap<String, String>;

/// Writes a scope as `model=gpt-4o,route=chat`, or `global` when it is empty.
pub fn scope_label(scope: &Scope) -> String {
    if scope.is_empty() {
        return "global".to_string();
    }
    let parts: Vec<String> = scope.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

/// The signal lane a rule reads. `meta` is for alerts about alerting itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Errors, status and finish-reason mix, resolved models, token and latency distributions.
    Structure,
    /// Volume, spend, cost per request, cost per 1k tokens, tokens per request.
    Cost,
    /// Eval score, pass rate, eval coverage and lag.
    Eval,
    /// Alerting about alerting: tier floods, exception creep.
    Meta,
}

impl Lane {
    /// Stable name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Structure => "structure",
            Lane::Cost => "cost",
            Lane::Eval => "eval",
            Lane::Meta => "meta",
        }
    }

    /// The lane stored as `name` (see [`Lane::as_str`]).
    pub fn from_name(name: &str) -> Option<Lane> {
        [Lane::Structure, Lane::Cost, Lane::Eval, Lane::Meta]
            .into_iter()
            .find(|l| l.as_str() == name)
    }
}

/// What a finding says happened. Every alert has exactly one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// More or fewer requests; unit cost unchanged.
    TrafficDrift,
    /// The same requests cost more or less.
    CostDrift,
    /// Errors, truncation, status mix, resolved models or token/latency shapes changed.
    StructuralDrift,
    /// Eval scores or pass rate fell.
    QualityDrift,
    /// Fewer requests are being evaluated.
    EvalCoverageDrop,
    /// Cost fell while eval coverage or quality fell too: the "disabled checks" trap.
    FalseEfficiency,
    /// A step change that no change event covers.
    UnannouncedChange,
    /// A route's or tenant's requests went to other models than before.
    RoutingShift,
    /// The rolling baseline drifted from its epoch's anchor with no change event.
    BaselineCreep,
    /// A tier's daily budget overflowed; names the rules that flood it.
    TierFlooding,
    /// A rule gathers too many exceptions, or most of its firings are suppressed.
    ExceptionCreep,
}

impl Kind {
    /// Stable name used in storage, rules and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TrafficDrift => "traffic_drift",
            Kind::CostDrift => "cost_drift",
            Kind::StructuralDrift => "structural_drift",
            Kind::QualityDrift => "quality_drift",
            Kind::EvalCoverageDrop => "eval_coverage_drop",
            Kind::FalseEfficiency => "false_efficiency",
            Kind::UnannouncedChange => "unannounced_change",
            Kind::RoutingShift => "routing_shift",
            Kind::BaselineCreep => "baseline_creep",
            Kind::TierFlooding => "tier_flooding",
            Kind::ExceptionCreep => "exception_creep",
        }
    }
}

/// The measured blast radius of an alert's scope over its window: what the tier is
/// computed from. Shares are of the global totals over the same window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// Requests in scope / all requests, 0..=1.
    pub requests_share: f64,
    /// Spend in scope / all spend, 0..=1.
    pub spend_share: f64,
    /// Distinct tenants with traffic in scope.
    pub tenants: u32,
    /// Spend at risk per day in USD: the scope's daily spend run-rate for a cost or
    /// quality finding, the extra spend per day for a cost increase.
    pub money_at_risk_per_day_usd: f64,
    /// Whether a route labelled customer-facing in the config is in scope.
    pub customer_facing: bool,
}

/// Whether an alert line announces a firing or a resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// An incident opened (its root alert fired after its rule's `for` duration):
    /// the one line that notifies.
    Firing,
    /// An open incident changed: a consequence joined it, or its tier rose (only a
    /// rise in tier notifies).
    Updated,
    /// A resolved incident fired again within the reopen window: the same incident,
    /// not a new one, and not notified again.
    Reopened,
    /// Every alert of the incident cleared.
    Resolved,
}

/// A consequence listed under an incident's root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member alert's rule.
    pub rule: String,
    /// What it found.
    pub kind: Kind,
    /// Where.
    pub scope: Scope,
    /// Its own tier.
    pub tier: String,
    /// Its own sentence.
    pub summary: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One alert line: the shape printed by replay, served by the API and posted by the
/// webhook notifier (DESIGN.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Which transition of its incident the line announces.
    pub event: AlertEvent,
    /// The rule's name in `rules/*.toml`.
    pub rule: String,
    /// The lane the rule reads.
    pub lane: Lane,
    /// What happened.
    pub kind: Kind,
    /// The smallest scope that explains the finding.
    pub scope: Scope,
    /// When (data time), milliseconds since the Unix epoch (UTC); `at` on the wire.
    #[serde(rename = "at", with = "rfc3339_ms")]
    pub at_ms: i64,
    /// Tier name (`page`, `alert`, `digest`, `record`).
    pub tier: String,
    /// 1 is the most severe tier.
    pub tier_rank: u8,
    /// One sentence a person reads first.
    pub summary: String,
    /// Observed vs baseline, test statistics, impact numbers, nearby change events.
    pub evidence: serde_json::Value,
    /// The incident's consequences: alerts of the same cause on related scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// How often the incident reopened.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reopens: u32,
    /// The incident's id (its root alert's id), the same on every line of the
    /// incident, whichever member heads it: what paging tools deduplicate on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<i64>,
}

/// One notification as queued in the outbox: the alert stage and the digest write it,
/// `notify` renders and delivers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The headline (email subject, Slack header).
    pub title: String,
    /// The tier the alerts were routed by, if any.
    pub tier: Option<String>,
    /// The alert lines this notification groups; empty for an informational message.
    pub alerts: Vec<Alert>,
    /// Free text: the whole content of an informational message, an optional preface
    /// for a group of alerts.
    pub text: String,
}

/// A blast-radius severity tier (`rules/tiers.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    /// Its name, for example `page`.
    pub name: String,
    /// 1 is the most severe.
    pub rank: u8,
    /// Notification channels (names from the config) that hear about this tier.
    pub channels: Vec<String>,
}

/// An entry of the exception registry: while active, matching alerts are recorded
/// but not notified. Always expires; renewals are limited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exception {
    /// Registry id.
    pub id: i64,
    /// The rule it covers.
    pub rule: String,
    /// Scope labels that must match the alert's scope; a value `*` matches any value
    /// (not allowed when the alert would be top tier).
    pub scope: Scope,
    /// Why the alert may be ignored.
    pub reason: String,
    /// Who answers for it.
    pub owner: String,
    /// A ticket tracking the fix, if any.
    pub ticket: Option<String>,
    /// Created, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Expires (required), milliseconds since the Unix epoch.
    pub expires_ms: i64,
    /// How many times it was renewed.
    pub renewals: u32,
    /// How many alerts it suppressed.
    pub hits: u64,
    /// When it last suppressed one.
    pub last_hit_ms: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<i64>,
}

/// Serde for a millisecond timestamp written as RFC 3339 (`2026-06-01T12:00:00.123Z`).
pub mod rfc3339_ms {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes the timestamp as RFC 3339 UTC with milliseconds when they are not zero.
    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*ms))
    }

    /// Reads an RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.timestamp_millis())
            .map_err(D::Error::custom)
    }

    /// The RFC 3339 text of a millisecond timestamp.
    pub fn format(ms: i64) -> String {
        let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        let precision = if ms % 1000 == 0 {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Millis
        };
        t.to_rfc3339_opts(precision, true)
    }
}

/// A signal a lane computes per scope and evaluation bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Requests in the bucket (volume).
    Requests,
    /// Spend in USD in the bucket.
    Spend,
    /// Spend / requests with a known cost.
    CostPerRequest,
    /// Spend per 1,000 tokens (prompt + completion).
    CostPer1kTokens,
    /// Prompt + completion tokens per request.
    TokensPerRequest,
    /// Failed requests / requests.
    ErrorRate,
    /// Completions cut off by the token limit (`finish_reason = length`) / requests.
    TruncationRate,
    /// Mix of status classes (2xx, 4xx, 429, 5xx, other).
    StatusMix,
    /// Mix of finish reasons (stop, length, tool_calls, content_filter, other).
    FinishMix,
    /// Mix of resolved models for a requested model.
    ResolvedModelMix,
    /// Distribution of prompt tokens per request.
    PromptTokens,
    /// Distribution of completion tokens per request.
    CompletionTokens,
    /// Median latency in ms.
    LatencyP50,
    /// 95th percentile latency in ms.
    LatencyP95,
    /// Mean eval score of the bucket's requests.
    EvalScore,
    /// Share of evaluated requests that passed.
    EvalPassRate,
    /// Evaluated requests / requests.
    EvalCoverage,
    /// Mean time from request to its eval, in seconds.
    EvalLag,
    /// Mix of requested models: where a route's or tenant's traffic is sent.
    ModelMix,
}

impl Signal {
    /// Every signal, in a fixed order (index = position).
    pub const ALL: [Signal; 19] = [
        Signal::Requests,
        Signal::Spend,
        Signal::CostPerRequest,
        Signal::CostPer1kTokens,
        Signal::TokensPerRequest,
        Signal::ErrorRate,
        Signal::TruncationRate,
        Signal::StatusMix,
        Signal::FinishMix,
        Signal::ResolvedModelMix,
        Signal::PromptTokens,
        Signal::CompletionTokens,
        Signal::LatencyP50,
        Signal::LatencyP95,
        Signal::EvalScore,
        Signal::EvalPassRate,
        Signal::EvalCoverage,
        Signal::EvalLag,
        Signal::ModelMix,
    ];

    /// Position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The lane that computes it.
    pub fn lane(self) -> Lane {
        use Signal::*;
        match self {
            Requests | Spend | CostPerRequest | CostPer1kTokens | TokensPerRequest => Lane::Cost,
            EvalScore | EvalPassRate | EvalCoverage | EvalLag => Lane::Eval,
            _ => Lane::Structure,
        }
    }

    /// The kind a drift of this signal is, unless a rule says otherwise.
    pub fn default_kind(self) -> Kind {
        use Signal::*;
        match self {
            Requests => Kind::TrafficDrift,
            Spend | CostPerRequest | CostPer1kTokens | TokensPerRequest => Kind::CostDrift,
            EvalScore | EvalPassRate => Kind::QualityDrift,
            EvalCoverage | EvalLag => Kind::EvalCoverageDrop,
            ModelMix => Kind::RoutingShift,
            _ => Kind::StructuralDrift,
        }
    }

    /// Whether the signal's level follows the clock (volume, spend), so only a
    /// seasonal baseline (same hour, same kind of day) can judge it.
    pub fn seasonal_only(self) -> bool {
        matches!(self, Signal::Requests | Signal::Spend)
    }

    /// Whether the signal is a mix or distribution (judged with a chi-square test
    /// against pooled counts) rather than one number.
    pub fn is_mix(self) -> bool {
        use Signal::*;
        matches!(
            self,
            StatusMix | FinishMix | ResolvedModelMix | PromptTokens | CompletionTokens | ModelMix
        )
    }

    /// Stable name used in rules and evidence.
    pub fn as_str(self) -> &'static str {
        use Signal::*;
        match self {
            Requests => "requests",
            Spend => "spend",
            CostPerRequest => "cost_per_request",
            CostPer1kTokens => "cost_per_1k_tokens",
            TokensPerRequest => "tokens_per_request",
            ErrorRate => "error_rate",
            TruncationRate => "truncation_rate",
            StatusMix => "status_mix",
            FinishMix => "finish_mix",
            ResolvedModelMix => "resolved_model_mix",
            PromptTokens => "prompt_tokens",
            CompletionTokens => "completion_tokens",
            LatencyP50 => "latency_p50",
            LatencyP95 => "latency_p95",
            EvalScore => "eval_score",
            EvalPassRate => "eval_pass_rate",
            EvalCoverage => "eval_coverage",
            EvalLag => "eval_lag",
            ModelMix => "model_mix",
        }
    }

    /// The signal named `name` in rules.
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// What normal looks like for one signal in one scope at one time of the week.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Median of the history it was learned from.
    pub median: f64,
    /// Median absolute deviation of that history (robust spread).
    pub mad: f64,
    /// Mean of that history: the pooled level of a rate of rare events, whose
    /// median is often zero.
    pub mean: f64,
    /// How many values it was learned from.
    pub n: usize,
    /// Whether it came from the same hour and kind of day (seasonal) rather than
    /// the recent-window fallback.
    pub seasonal: bool,
    /// Mean absolute deviation of that history from its median: the spread when
    /// the MAD collapses to zero on values that take a few discrete levels.
    pub mean_dev: f64,
}

impl Baseline {
    /// The robust z-score of `value`: distance from the median in MAD-derived
    /// standard deviations, with the spread floored at `rel_floor` of the median so
    /// a perfectly flat history does not turn noise into infinity. When over half the
    /// history sits on one value the MAD is zero though the rest may jump (a quiet
    /// hour's p95 latency on a few discrete levels): the mean absolute deviation
    /// stands in for it.
    pub fn z(&self, value: f64, rel_floor: f64) -> f64 {
        let robust = match self.mad > 0.0 {
            true => 1.4826 * self.mad,
            false => 1.2533 * self.mean_dev,
        };
        self.z_over(value, robust, rel_floor)
    }

    /// The z-score against the wider of the MAD-derived spread and the mean absolute
    /// deviation: for a recent-window fallback, whose values mix hours of the day. A
    /// quiet night's p95 latency sits on one level and the day's on another; the MAD
    /// sees only the night and would call the morning an outage.
    pub fn z_wide(&self, value: f64, rel_floor: f64) -> f64 {
        let robust = (1.4826 * self.mad).max(1.2533 * self.mean_dev);
        self.z_over(value, robust, rel_floor)
    }

    /// Distance from the median in units of `robust`, floored at `rel_floor` of the
    /// median (and never zero).
    fn z_over(&self, value: f64, robust: f64, rel_floor: f64) -> f64 {
        let spread = robust.max(self.median.abs() * rel_floor).max(1e-9);
        (value - self.median) / spread
    }
}

/// A secret value (an API token, a URL with a password): `secrecy`'s string, whose
/// `Debug` never shows it (a logged config or argument list cannot leak it) and which
/// is zeroed on drop. Read it with [`ExposeSecret::expose_secret`], in the one place
/// that must use it.
pub type Secret = secrecy::SecretString;
pub use secrecy::ExposeSecret;
