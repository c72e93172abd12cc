//! Read endpoints for the dashboard: `GET /v1/scopes` (which scopes have traffic) and
//! `GET /v1/series` (one scope's three lanes per time bucket, each signal with a
//! seasonal baseline band).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::adapters::timestamp::parse_ts_str;
use crate::baselines::{median_mad, slot};
use crate::clock::now_ms;
use crate::domain::{SCOPE_DIMS, rfc3339_ms};
use crate::exceptions::parse_duration;
use crate::store::queries::{self, AggBucket, EvalBucket};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// How far back `/v1/scopes` looks.
const SCOPES_WINDOW_MS: i64 = 7 * DAY_MS;
/// Values listed per dimension by `/v1/scopes`.
const SCOPES_PER_DIM: u32 = 50;
/// Longest range `/v1/series` answers.
const MAX_RANGE_MS: i64 = 31 * DAY_MS;
/// Most buckets `/v1/series` answers; a longer range needs a larger step.
const MAX_POINTS: i64 = 2000;
/// Earlier values a bucket's slot needs before the bucket gets a baseline band.
const MIN_BAND_VALUES: usize = 3;

/// `GET /v1/scopes`: the busiest values of each dimension over the last 7 days.
pub async fn scopes(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let since_ms = now_ms() - SCOPES_WINDOW_MS;
    let path = state.db.clone();
    let rows = tokio::task::spawn_blocking(move || {
        queries::scopes(&path, since_ms.div_euclid(MINUTE_MS), SCOPES_PER_DIM)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "since": rfc3339_ms::format(since_ms),
        "scopes": rows,
    })))
}

#[derive(Deserialize)]
pub struct SeriesQuery {
    /// `global` or `dim=value`.
    scope: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// Bucket width: `10m`, `1h`, `1d`.
    step: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// `global` or `dim=value` as (dim, value), `global` having the empty value.
fn parse_scope(text: &str) -> Result<(String, String), ApiError> {
    let text = text.trim();
    if text.is_empty() || text == "global" {
        return Ok(("global".into(), String::new()));
    }
    match text.split_once('=') {
        Some((dim, value)) if SCOPE_DIMS.contains(&dim) && !value.is_empty() => {
            Ok((dim.to_string(), value.to_string()))
        }
        _ => Err(bad(format!(
            "scope {text:?} must be global or DIM=VALUE with DIM one of {}",
            SCOPE_DIMS.join(", ")
        ))),
    }
}

/// The buckets a query asks for: aligned to the step from the epoch, so that every
/// bucket of a slot covers the same hours on every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    since_ms: i64,
    until_ms: i64,
    step_ms: i64,
}

impl Range {
    fn parse(q: &SeriesQuery, now: i64) -> Result<Range, ApiError> {
        let ts = |s: &Option<String>| s.as_deref().map(parse_ts_str).transpose();
        let until = ts(&q.until)?.unwrap_or(now);
        let since = ts(&q.since)?.unwrap_or(until - DAY_MS);
        if since >= until {
            return Err(bad("since must be before until"));
        }
        if until - since > MAX_RANGE_MS {
            return Err(bad("the range is longer than 31 days: ask for less"));
        }
        let step_ms =
            parse_duration(q.step.as_deref().unwrap_or("10m")).map_err(|e| bad(e.to_string()))?;
        let since_ms = since.div_euclid(step_ms) * step_ms;
        let until_ms = (until + step_ms - 1).div_euclid(step_ms) * step_ms;
        if (until_ms - since_ms) / step_ms > MAX_POINTS {
            return Err(bad(format!(
                "that range and step make more than {MAX_POINTS} points: use a larger step"
            )));
        }
        Ok(Range {
            since_ms,
            until_ms,
            step_ms,
        })
    }

    /// Start of every bucket, oldest first.
    fn starts(&self) -> Vec<i64> {
        (self.since_ms..self.until_ms)
            .step_by(self.step_ms as usize)
            .collect()
    }
}

/// Divide, or `None` when there is nothing to divide by.
fn ratio(num: f64, den: u64) -> Option<f64> {
    (den > 0).then(|| num / den as f64)
}

/// Per bucket, the median and MAD of the same signal in the buckets of the same
/// seasonal slot (hour of day, weekday or weekend) on earlier days of the range.
fn band(starts: &[i64], values: &[Option<f64>]) -> (Vec<Option<f64>>, Vec<Option<f64>>) {
    let mut by_slot: BTreeMap<usize, Vec<(i64, f32)>> = BTreeMap::new();
    let mut medians = Vec::with_capacity(starts.len());
    let mut mads = Vec::with_capacity(starts.len());
    for (&t, v) in starts.iter().zip(values) {
        let day = t.div_euclid(DAY_MS);
        let earlier = by_slot.entry(slot(t)).or_default();
        let mut same_slot: Vec<f32> = earlier
            .iter()
            .filter(|(d, _)| *d < day)
            .map(|(_, v)| *v)
            .collect();
        let (median, mad) = if same_slot.len() >= MIN_BAND_VALUES {
            median_mad(&mut same_slot).unzip()
        } else {
            (None, None)
        };
        medians.push(median);
        mads.push(mad);
        if let Some(v) = v {
            earlier.push((day, *v as f32));
        }
    }
    (medians, mads)
}

/// A signal's wire form: its values and baseline band, bucket by bucket.
fn signal(starts: &[i64], values: Vec<Option<f64>>) -> Value {
    let (median, mad) = band(starts, &values);
    json!({ "values": values, "median": median, "mad": mad })
}

/// The three lanes of one scope, bucket by bucket; buckets without data count zero
/// requests and have no ratios.
fn lanes(starts: &[i64], aggs: &[AggBucket], evals: &[EvalBucket]) -> Value {
    let aggs: BTreeMap<i64, &AggBucket> = aggs.iter().map(|b| (b.minute * MINUTE_MS, b)).collect();
    let evals: BTreeMap<i64, &EvalBucket> = evals.iter().map(|b| (b.start_ms, b)).collect();
    let empty = AggBucket::default();
    let a: Vec<&AggBucket> = starts
        .iter()
        .map(|t| aggs.get(t).copied().unwrap_or(&empty))
        .collect();
    let e: Vec<Option<&EvalBucket>> = starts.iter().map(|t| evals.get(t).copied()).collect();
    let agg = |f: fn(&AggBucket) -> Option<f64>| signal(starts, a.iter().map(|b| f(b)).collect());
    let eval = |f: fn(&EvalBucket) -> Option<f64>| {
        signal(starts, e.iter().map(|b| b.and_then(f)).collect())
    };
    json!({
        "cost": {
            "requests": agg(|b| Some(b.requests as f64)),
            "spend_usd": agg(|b| Some(b.cost_usd)),
            "cost_per_request_usd": agg(|b| ratio(b.cost_usd, b.costed_requests)),
            "tokens_per_request": agg(|b| ratio(b.tokens as f64, b.requests)),
        },
        "structure": {
            "error_rate": agg(|b| ratio(b.errors as f64, b.requests)),
            "truncation_rate": agg(|b| ratio(b.truncated as f64, b.requests)),
            "mean_latency_ms": agg(|b| ratio(b.latency_ms_sum as f64, b.latency_count)),
        },
        "eval": {
            "mean_score": eval(|b| b.mean_score),
            "pass_rate": eval(|b| b.pass_rate),
            "evals": signal(starts, e.iter().map(|b| Some(b.map_or(0, |b| b.evals) as f64)).collect()),
        },
    })
}

/// `GET /v1/series?scope=model=gpt-4o&since=&until=&step=10m`: one scope's cost,
/// structure and eval lanes per bucket (default: the last 24 hours in 10-minute
/// buckets; at most 31 days and 2000 buckets).
pub async fn series(
    State(state): State<AppState>,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let (dim, value) = parse_scope(q.scope.as_deref().unwrap_or("global"))?;
    let range = Range::parse(&q, now_ms())?;
    let path = state.db.clone();
    let (d, v) = (dim.clone(), value.clone());
    let (aggs, evals) = tokio::task::spawn_blocking(move || {
        let aggs = queries::agg_buckets(
            &path,
            &d,
            &v,
            range.since_ms / MINUTE_MS,
            range.until_ms / MINUTE_MS,
            range.step_ms / MINUTE_MS,
        )?;
        let evals =
            queries::eval_buckets(&path, &d, &v, range.since_ms, range.until_ms, range.step_ms)?;
        Ok::<_, crate::store::StoreError>((aggs, evals))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let starts = range.starts();
    tracing::debug!(dim = %dim, value = %value, points = starts.len(), "series");
    Ok(Json(json!({
        "scope": { "dim": dim, "value": value },
        "since": rfc3339_ms::format(range.since_ms),
        "until": rfc3339_ms::format(range.until_ms),
        "step_ms": range.step_ms,
        "lanes": lanes(&starts, &aggs, &evals),
        "t": starts,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2026-06-01 00:00 UTC.
    const MONDAY: i64 = 1_780_272_000_000;

    fn query(since: &str, until: &str, step: &str) -> SeriesQuery {
        SeriesQuery {
            scope: None,
            since: Some(since.into()),
            until: Some(until.into()),
            step: Some(step.into()),
        }
    }

    #[test]
    fn scopes_are_global_or_one_dimension() {
        assert_eq!(parse_scope("global").unwrap(), ("global".into(), "".into()));
        assert_eq!(
            parse_scope("model=gpt-4o=x").unwrap(),
            ("model".into(), "gpt-4o=x".into())
        );
        for bad in ["region=eu", "model=", "model"] {
            let e = parse_scope(bad).unwrap_err();
            assert!(e.message.contains("global or DIM=VALUE"), "{bad}");
        }
    }

    #[test]
    fn ranges_are_aligned_and_bounded() {
        let r = Range::parse(
            &query("2026-06-01T00:05:00Z", "2026-06-01T01:01:00Z", "10m"),
            0,
        )
        .unwrap();
        assert_eq!(r.since_ms, MONDAY);
        assert_eq!(r.until_ms, MONDAY + 70 * MINUTE_MS);
        assert_eq!(r.starts().len(), 7);
        for (q, want) in [
            (
                query("2026-06-01T00:00:00Z", "2026-07-15T00:00:00Z", "1d"),
                "31 days",
            ),
            (
                query("2026-06-01T00:00:00Z", "2026-06-30T00:00:00Z", "1m"),
                "larger step",
            ),
            (
                query("2026-06-02T00:00:00Z", "2026-06-01T00:00:00Z", "1h"),
                "before until",
            ),
            (
                query("2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z", "soon"),
                "e.g.",
            ),
        ] {
            let e = Range::parse(&q, 0).unwrap_err();
            assert!(e.message.contains(want), "{}", e.message);
        }
    }

    #[test]
    fn the_band_uses_the_same_slot_on_earlier_days_only() {
        // Hourly buckets over four weekdays: hour 9 is 100, 110, 90, then 500.
        let starts: Vec<i64> = (0..96).map(|h| MONDAY + h * 3_600_000).collect();
        let values: Vec<Option<f64>> = (0..96)
            .map(|h| {
                Some(match (h / 24, h % 24) {
                    (0, 9) => 100.0,
                    (1, 9) => 110.0,
                    (2, 9) => 90.0,
                    (3, 9) => 500.0,
                    _ => 1.0,
                })
            })
            .collect();
        let (median, mad) = band(&starts, &values);
        // Days 0–2 have fewer than three earlier values in their slot.
        assert_eq!(median[2 * 24 + 9], None);
        // Day 3, hour 9: the median of 100, 110, 90, not moved by its own 500.
        assert_eq!(median[3 * 24 + 9], Some(100.0));
        assert_eq!(mad[3 * 24 + 9], Some(10.0));
        assert_eq!(median[3 * 24 + 10], Some(1.0));
    }

    #[test]
    fn empty_buckets_count_zero_requests_and_have_no_ratios() {
        let starts = [MONDAY, MONDAY + 600_000];
        let agg = AggBucket {
            minute: MONDAY / MINUTE_MS,
            requests: 4,
            errors: 1,
            tokens: 400,
            cost_usd: 0.2,
            costed_requests: 2,
            ..AggBucket::default()
        };
        let v = lanes(&starts, &[agg], &[]);
        assert_eq!(v["cost"]["requests"]["values"], json!([4.0, 0.0]));
        assert_eq!(
            v["cost"]["cost_per_request_usd"]["values"],
            json!([0.1, null])
        );
        assert_eq!(v["structure"]["error_rate"]["values"], json!([0.25, null]));
        assert_eq!(v["eval"]["evals"]["values"], json!([0.0, 0.0]));
        assert_eq!(v["eval"]["mean_score"]["values"], json!([null, null]));
    }
}
