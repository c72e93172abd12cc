//! The harm of a usage finding's deviation, which its tier is chosen from: never
//! the size of the scope alone.

use super::Test;
use crate::domain::{Impact, Lane, Signal};
use crate::lanes::cell::Cell;
use crate::lanes::signals::samples;

/// A latency quantile's excess as a count that adds up across scopes: the requests
/// slower than the baseline's quantile beyond the share that always is (5% for p95).
/// A difference of quantiles times requests does not add up, so a parent's p95
/// could never be explained by the one provider that slowed.
pub fn slow_excess(cell: &Cell, signal: Signal, test: &Test) -> Option<f64> {
    let q = match signal {
        Signal::LatencyP50 => 0.5,
        Signal::LatencyP95 => 0.95,
        _ => return None,
    };
    let n = samples(cell, signal) as f64;
    let usual = cell.latency_quantile(q)? - test.diff;
    Some(((cell.latency_share_above(usual) - (1.0 - q)) * n).abs())
}

/// The harm a usage finding's deviation does, as the impact its tier is chosen
/// from, and what that measure is. Never the size of the scope alone: failures and
/// moved requests count by their excess over the baseline as a share of all
/// requests, cost and extra traffic by the money per day they move (a spend share
/// would let a three-hour spike of a busy hour page); `scope` is the scope's own
/// size (its tenants, whether it faces customers).
pub fn usage_harm(
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
