//! OTLP metrics: the GenAI client histogram `gen_ai.client.token.usage` becomes usage
//! events, for services that export metrics but no spans. Each data point pair (input
//! and output tokens of one model over one interval) stands for `count` calls; they
//! become that many events at the interval's end, sharing the tokens evenly. Volume,
//! tokens, spend and cost per request are right; per-request distributions are flat
//! within an interval, and failures are not known (the histogram has no error type).
//!
//! Delta points are read as they come. Cumulative points are differenced per series
//! against the last point seen (`Cumulative`); a series' first point counts whole only
//! if it started after the receiver did, else it only sets the reference (a restart
//! must not count a service's lifetime again).

use std::collections::{BTreeMap, HashMap};

use compact_str::CompactString;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric::Data};
use prost::Message;

use super::otlp::{Encoding, text};
use super::{Context, Rejected};
use crate::domain::{CostSource, UsageEvent};

/// The metric read.
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// Calls one data point may stand for; more is refused as implausible.
const MAX_CALLS_PER_POINT: u64 = 1_000_000;

/// Read an `ExportMetricsServiceRequest`.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportMetricsServiceRequest, Rejected> {
    match encoding {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body).map_err(|e| {
            Rejected(format!(
                "not an OTLP ExportMetricsServiceRequest (protobuf): {e}"
            ))
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            Rejected(format!(
                "not an OTLP ExportMetricsServiceRequest (JSON): {e}"
            ))
        }),
    }
}

/// The last cumulative point of each series, to difference the next against.
#[derive(Debug)]
pub struct Cumulative {
    /// When the receiver started (ns): a series that started later counts whole.
    since_ns: u64,
    last: HashMap<String, (u64, u64, f64)>,
}

impl Cumulative {
    /// No series seen yet; series started after `since_ns` count from their start.
    pub fn new(since_ns: u64) -> Cumulative {
        Cumulative {
            since_ns,
            last: HashMap::new(),
        }
    }

    /// The new calls and tokens of a cumulative point of `series`, if any.
    fn delta(&mut self, series: String, start: u64, count: u64, sum: f64) -> Option<(u64, f64)> {
        let previous = self.last.insert(series, (start, count, sum));
        match previous {
            Some((s, c, v)) if s == start && count >= c => Some((count - c, (sum - v).max(0.0))),
            // A new start time is a reset: everything since it is new.
            Some(_) => Some((count, sum)),
            None if start >= self.since_ns => Some((count, sum)),
            None => None,
        }
    }
}

/// What a request's metrics became.
#[derive(Debug, Default)]
pub struct MetricOutcome {
    /// Events for the calls the points stand for.
    pub events: Vec<UsageEvent>,
    /// Points not read: other metrics, services that send spans, cumulative references.
    pub skipped: u64,
    /// Points refused, each with where and why.
    pub refused: Vec<(String, Rejected)>,
}

/// Calls and tokens of one model over one interval.
#[derive(Default)]
struct Interval {
    labels: Vec<(String, String)>,
    time_ns: u64,
    calls: u64,
    input: f64,
    output: f64,
}

/// Events from `req`'s token-usage histograms; `sends_spans(service)` says whether a
/// service's spans already arrive (its metrics would count its calls twice).
pub fn events(
    req: &ExportMetricsServiceRequest,
    state: &mut Cumulative,
    sends_spans: impl Fn(&str) -> bool,
    ctx: &Context,
) -> MetricOutcome {
    let mut out = MetricOutcome::default();
    let mut intervals: BTreeMap<String, Interval> = BTreeMap::new();
    for rm in &req.resource_metrics {
        let resource = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let service = text(resource, "service.name").unwrap_or("");
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                let Some(Data::Histogram(h)) = (metric.name == TOKEN_USAGE)
                    .then_some(())
                    .and(metric.data.as_ref())
                else {
                    out.skipped += count_points(metric.data.as_ref());
                    continue;
                };
                if sends_spans(service) {
                    out.skipped += h.data_points.len() as u64;
                    continue;
                }
                let cumulative =
                    h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                for p in &h.data_points {
                    let position = format!("{TOKEN_USAGE} at {} ns", p.time_unix_nano);
                    let kind = text(&p.attributes, "gen_ai.token.type").unwrap_or("");
                    if !matches!(kind, "input" | "output") {
                        out.skipped += 1;
                        continue;
                    }
                    let mut labels: Vec<(String, String)> = p
                        .attributes
                        .iter()
                        .filter(|kv| kv.key != "gen_ai.token.type")
                        .filter_map(|kv| {
                            Some((
                                kv.key.clone(),
                                text(std::slice::from_ref(kv), &kv.key)?.to_string(),
                            ))
                        })
                        .collect();
                    labels.push(("service.name".into(), service.to_string()));
                    labels.sort();
                    let series = format!("{labels:?}");
                    let sum = p.sum.unwrap_or(0.0);
                    let (calls, tokens) = match cumulative {
                        true => match state.delta(
                            format!("{series}{kind}"),
                            p.start_time_unix_nano,
                            p.count,
                            sum,
                        ) {
                            Some(d) => d,
                            None => {
                                out.skipped += 1;
                                continue;
                            }
                        },
                        false => (p.count, sum),
                    };
                    if !(tokens.is_finite() && tokens >= 0.0) || calls > MAX_CALLS_PER_POINT {
                        out.refused.push((
                            position,
                            Rejected(format!(
                                "{TOKEN_USAGE}: {calls} calls, {tokens} tokens is not a usage count"
                            )),
                        ));
                        continue;
                    }
                    let interval = intervals
                        .entry(format!("{series}@{}", p.time_unix_nano))
                        .or_default();
                    interval.labels = labels;
                    interval.time_ns = p.time_unix_nano;
                    interval.calls = interval.calls.max(calls);
                    match kind {
                        "input" => interval.input += tokens,
                        _ => interval.output += tokens,
                    }
                }
            }
        }
    }
    for (key, interval) in intervals {
        match calls_of(&key, &interval, ctx) {
            Ok(events) => out.events.extend(events),
            Err(e) => out.refused.push((format!("{TOKEN_USAGE} {key}"), e)),
        }
    }
    out
}

fn count_points(data: Option<&Data>) -> u64 {
    (match data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }) as u64
}

/// The `calls` events of one interval, tokens shared evenly (the remainder one each
/// to the first calls), ids stable so a resent export is stored once.
fn calls_of(key: &str, iv: &Interval, ctx: &Context) -> Result<Vec<UsageEvent>, Rejected> {
    let label = |k: &str| {
        iv.labels
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let model = label("gen_ai.request.model")
        .or_else(|| label("gen_ai.response.model"))
        .ok_or_else(|| Rejected(format!("{TOKEN_USAGE} point without gen_ai.request.model")))?;
    let digest = blake3::hash(key.as_bytes()).to_hex();
    let (input, output) = (iv.input.round() as u64, iv.output.round() as u64);
    let n = iv.calls;
    let share = |total: u64, i: u64| total / n + u64::from(i < total % n);
    Ok((0..n)
        .map(|i| UsageEvent {
            id: CompactString::from(format!("otlp-metric-{}-{i}", &digest[..24])),
            ts_ms: (iv.time_ns / 1_000_000) as i64,
            model: CompactString::from(model),
            resolved_model: label("gen_ai.response.model")
                .filter(|r| *r != model)
                .map(CompactString::from),
            provider: label("gen_ai.provider.name")
                .or_else(|| label("gen_ai.system"))
                .map(CompactString::from),
            route: label("service.name").map(CompactString::from),
            tenant: label("user.id").map(|raw| ctx.identity.label(raw)),
            prompt_tokens: share(input, i),
            completion_tokens: share(output, i),
            cached_tokens: 0,
            cost_usd: None,
            cost_source: CostSource::Unknown,
            list_cost_usd: None,
            latency_ms: None,
            ttft_ms: None,
            status: Some(200),
            finish_reason: None,
            error_type: None,
        })
        .collect())
}
