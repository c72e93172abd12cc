//! Reading the lanes' signals off a bucket's counts.

use super::cell::{Cell, EvalCell};
use crate::domain::Signal;

/// The value of a scalar usage-side signal, when the bucket defines it.
pub fn usage_value(cell: &Cell, signal: Signal) -> Option<f64> {
    let n = cell.requests as f64;
    let per = |x: f64, d: f64| (d > 0.0).then(|| x / d);
    match signal {
        Signal::Requests => Some(n),
        Signal::Spend => Some(cell.cost),
        Signal::CostPerRequest => per(cell.cost, cell.costed as f64),
        Signal::CostPer1kTokens => per(cell.cost * 1000.0, cell.costed_tokens as f64),
        Signal::TokensPerRequest => per(
            (cell.prompt_tokens + cell.completion_tokens) as f64,
            n - cell.errors as f64,
        ),
        Signal::ErrorRate => per(cell.errors as f64, n),
        Signal::TruncationRate => per(cell.truncated as f64, n),
        Signal::LatencyP50 => cell.latency_quantile(0.5),
        Signal::LatencyP95 => cell.latency_quantile(0.95),
        _ => None,
    }
}

/// The value of an eval-lane signal, when the bucket defines it.
pub fn eval_value(cell: &EvalCell, signal: Signal) -> Option<f64> {
    let per = |x: f64, d: f64| (d > 0.0).then(|| x / d);
    match signal {
        Signal::EvalScore => per(cell.score_sum, cell.scores as f64),
        Signal::EvalPassRate => per(cell.passed as f64, cell.verdicts as f64),
        Signal::EvalCoverage => {
            per(cell.evaluated as f64, cell.requests as f64).map(|c| c.min(1.0))
        }
        Signal::EvalLag => per(cell.lag_sum_s, cell.evaluated as f64),
        _ => None,
    }
}

/// How many observations a signal's value rests on in this bucket.
pub fn samples(cell: &Cell, signal: Signal) -> u64 {
    match signal {
        Signal::CostPerRequest | Signal::CostPer1kTokens => cell.costed as u64,
        Signal::TokensPerRequest => cell.requests.saturating_sub(cell.errors) as u64,
        Signal::LatencyP50 | Signal::LatencyP95 => {
            cell.latency.as_ref().map_or(0, |s| s.0.count() as u64)
        }
        _ => cell.requests as u64,
    }
}

/// How many observations an eval signal rests on.
pub fn eval_samples(cell: &EvalCell, signal: Signal) -> u64 {
    match signal {
        Signal::EvalScore => cell.scores as u64,
        Signal::EvalPassRate => cell.verdicts as u64,
        Signal::EvalLag => cell.evaluated as u64,
        _ => cell.requests as u64,
    }
}

/// A mix or distribution signal's counts, as (category, count).
pub fn mix_counts(cell: &Cell, signal: Signal) -> Vec<(u32, u32)> {
    let dense = |counts: &[u32]| -> Vec<(u32, u32)> {
        counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as u32, *c))
            .collect()
    };
    match signal {
        Signal::StatusMix => dense(&cell.status),
        Signal::FinishMix => dense(&cell.finish),
        Signal::PromptTokens => dense(&cell.prompt_hist),
        Signal::CompletionTokens => dense(&cell.completion_hist),
        Signal::ResolvedModelMix => cell.resolved.clone(),
        Signal::ModelMix => cell
            .by_model
            .iter()
            .map(|(m, s)| (*m, s.requests))
            .collect(),
        _ => Vec::new(),
    }
}

/// A readable name for a mix category (the resolved model's name comes from the
/// caller's symbol table).
pub fn category_name(signal: Signal, category: u32) -> String {
    const STATUS: [&str; 5] = ["2xx", "4xx", "429", "5xx", "other"];
    const FINISH: [&str; 5] = ["stop", "length", "tool_calls", "content_filter", "other"];
    match signal {
        Signal::StatusMix => STATUS.get(category as usize).unwrap_or(&"?").to_string(),
        Signal::FinishMix => FINISH.get(category as usize).unwrap_or(&"?").to_string(),
        Signal::PromptTokens | Signal::CompletionTokens => {
            let low = if category == 0 {
                0
            } else {
                1u64 << (category - 1)
            };
            format!("{low}-{} tokens", (1u64 << category).saturating_sub(1))
        }
        _ => category.to_string(),
    }
}
