//! Drift: a bucket's value, mix or distribution away from its baseline, judged
//! with a test that respects how many samples it rests on.

use std::collections::VecDeque;

use serde_json::json;

use super::pvm::Pvm;
use super::rules::Rule;
use super::view::{BucketView, Detection};
use super::words::{base_json, round, scalar_summary, signal_words};
use super::{Counts, Test, is_proportion, judge_scalar};
use crate::domain::{Baseline, Lane, Signal, scope_label};
use crate::lanes::Symbols;
use crate::lanes::cell::{Cell, EvalCell};
use crate::lanes::signals::{
    category_name, eval_samples, eval_value, mix_counts, samples, usage_value,
};

/// (requests, errors, truncated) of a scope's last buckets with traffic, so a small
/// scope's rates can be judged over consecutive buckets pooled until they hold a
/// rule's `min_samples`: a quiet tenant can alert at all.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RecentCounts {
    buckets: VecDeque<(u32, u32, u32)>,
    cap: usize,
}

impl RecentCounts {
    /// Pooling at most `cap` buckets (the current one included).
    pub fn new(cap: usize) -> RecentCounts {
        RecentCounts {
            buckets: VecDeque::with_capacity(cap),
            cap: cap.max(1),
        }
    }

    /// Remember a bucket with traffic (after it was judged).
    pub fn push(&mut self, cell: &Cell) {
        if self.buckets.len() == self.cap {
            self.buckets.pop_front();
        }
        self.buckets
            .push_back((cell.requests, cell.errors, cell.truncated));
    }

    /// `rule`'s signal in `cell` and the counts its test rests on, with how many
    /// buckets they span: a rate below `min_samples` pools the buckets before it.
    pub fn pool(&self, rule: &Rule, cell: &Cell) -> Option<(f64, Counts, usize)> {
        let value = usage_value(cell, rule.signal)?;
        let x_of = |errors: u32, truncated: u32| match rule.signal {
            Signal::ErrorRate => errors as u64,
            Signal::TruncationRate => truncated as u64,
            _ => 0,
        };
        let mut counts = Counts {
            n: samples(cell, rule.signal),
            x: x_of(cell.errors, cell.truncated),
            variance: 0.0,
        };
        if !is_proportion(rule.signal) || counts.n >= rule.min_samples {
            return Some((value, counts, 1));
        }
        let mut buckets = 1;
        for &(n, errors, truncated) in self.buckets.iter().rev().take(self.cap - 1) {
            if counts.n >= rule.min_samples {
                break;
            }
            counts.n += n as u64;
            counts.x += x_of(errors, truncated);
            buckets += 1;
        }
        Some((counts.x as f64 / counts.n.max(1) as f64, counts, buckets))
    }
}

/// A mix (status, finish reason, models, token lengths) moved away from its pooled
/// history: chi-square test and total variation distance.
pub fn mix(rule: &Rule, view: &BucketView<Cell>, syms: &Symbols) -> Option<Detection> {
    let counts = mix_counts(view.cell, rule.signal);
    let n: u64 = counts.iter().map(|&(_, c)| c as u64).sum();
    if n < rule.min_samples {
        return None;
    }
    let t = view.mix(rule.signal).test(&counts, 200.0)?;
    if t.p_value >= rule.alpha || t.tvd < rule.min_change {
        return None;
    }
    // Routing is told by where the traffic went, the rest by what moved most.
    let (cat, before, now) = match rule.signal {
        Signal::ModelMix => t.rise,
        _ => t.top,
    };
    let name = |c: u32| match rule.signal {
        Signal::ResolvedModelMix | Signal::ModelMix => syms.name(c).to_string(),
        s => category_name(s, c),
    };
    let scope = scope_label(view.labels);
    let summary = match rule.signal {
        Signal::ModelMix => format!(
            "{scope} now sends {:.0}% of its requests to {} (was {:.0}%): its traffic is routed differently (total variation {:.2}, chi-square p={:.1e})",
            now * 100.0,
            name(cat),
            before * 100.0,
            t.tvd,
            t.p_value
        ),
        _ => format!(
            "{} on {scope} shifted: {} is {:.0}% of requests, was {:.0}% (total variation {:.2}, chi-square p={:.1e})",
            signal_words(rule.signal),
            name(cat),
            now * 100.0,
            before * 100.0,
            t.tvd,
            t.p_value
        ),
    };
    let test = Test {
        sign: 1.0,
        rel: t.tvd,
        diff: t.tvd,
        z: 0.0,
        p_value: t.p_value,
        name: "chi-square",
    };
    let mut d = Detection::new(
        rule.signal,
        test,
        (json!({name(cat): now}), json!({name(cat): before})),
        summary,
    );
    d.evidence.insert(
        "chi_square".into(),
        json!({"statistic": round(t.chi2), "df": t.df, "total_variation": round(t.tvd)}),
    );
    Some(d)
}

/// What else a usage scalar's drift is judged with: the scope's recent buckets
/// for pooling, whether it is a newcomer (and its share of requests), and the
/// price-volume-mix split of its spend.
pub struct UsageContext<'a> {
    /// The scope's recent buckets, for pooling a thin rate.
    pub recent: &'a RecentCounts,
    /// `Some(share of all requests)` when the scope is new and already large.
    pub newcomer: Option<f64>,
    /// The spend change split into volume, mix and rate effects.
    pub pvm: Option<&'a Pvm>,
}

/// A usage scalar (volume, spend, cost, tokens, rates, latency) away from its
/// baseline, or past the rule's hard limit, or a newcomer's first traffic.
pub fn usage(rule: &Rule, view: &BucketView<Cell>, ctx: &UsageContext) -> Option<Detection> {
    let (value, counts, pooled_buckets) = ctx.recent.pool(rule, view.cell)?;
    let base = view.base(rule.signal);
    // Pooled buckets judge a small scope, but only a bucket that itself moves the
    // way the finding says may raise it: an episode an hour ago must not live on in
    // the pooled window.
    let own = usage_value(view.cell, rule.signal).unwrap_or(value);
    let own_moves = base.as_ref().is_none_or(|b| {
        let center = match is_proportion(rule.signal) {
            true => b.mean,
            false => b.median,
        };
        (own - center).signum() == (value - center).signum() && own != center
    });
    if pooled_buckets > 1 && !own_moves {
        return None;
    }
    let hard = rule.hard_limit.is_some_and(|h| value >= h) && counts.n >= rule.min_samples;
    let test = match base
        .as_ref()
        .and_then(|b| judge_scalar(rule, rule.signal, value, counts, b))
    {
        Some(t) => t,
        // Past the guard with no baseline to compare: every failure counts as excess.
        None if hard => Test::without_baseline(value, "hard limit"),
        None if ctx.newcomer.is_some() && rule.signal == Signal::Requests => {
            Test::without_baseline(value, "newcomer")
        }
        None => return None,
    };
    // A spend change that is mostly more requests is traffic, not cost.
    if rule.signal == Signal::Spend && ctx.pvm.is_some_and(|p| p.volume_share() >= 0.7) {
        return None;
    }
    let scope = scope_label(view.labels);
    let summary = match (test.name, ctx.newcomer) {
        ("newcomer", Some(share)) => format!(
            "{scope} was never seen before and sent {} requests, {:.1}% of all: a new integration, or a key in the wrong hands?",
            view.cell.requests,
            share * 100.0
        ),
        _ => scalar_summary(rule.signal, &scope, value, base.as_ref(), &test),
    };
    let mut d = Detection::new(
        rule.signal,
        test,
        (json!(round(value)), base_json(base.as_ref())),
        summary,
    );
    d.hard = hard;
    if let Some(limit) = rule.hard_limit.filter(|_| hard) {
        d.evidence.insert("hard_limit".into(), json!(limit));
    }
    if pooled_buckets > 1 {
        d.evidence.insert(
            "pooled".into(),
            json!({"buckets": pooled_buckets, "requests": counts.n, "events": counts.x}),
        );
    }
    if let Some(p) = ctx.pvm.filter(|_| rule.signal.lane() == Lane::Cost) {
        d.evidence.insert("price_volume_mix".into(), p.to_json());
    }
    Some(d)
}

/// An eval signal's test in a bucket, against its baseline: `(value, test, baseline)`.
pub fn eval_test(
    rule: &Rule,
    signal: Signal,
    view: &BucketView<EvalCell>,
) -> Option<(f64, Test, Baseline)> {
    let cell = view.cell;
    let value = eval_value(cell, signal)?;
    let base = view.base(signal)?;
    let mean = cell.score_sum / cell.scores.max(1) as f64;
    let counts = Counts {
        n: eval_samples(cell, signal),
        x: match signal {
            Signal::EvalPassRate => cell.passed as u64,
            Signal::EvalCoverage => cell.evaluated as u64,
            _ => 0,
        },
        variance: (cell.score_sq / cell.scores.max(1) as f64 - mean * mean).max(0.0),
    };
    let test = judge_scalar(rule, signal, value, counts, &base)?;
    Some((value, test, base))
}

/// An eval signal (score, pass rate, coverage, lag) away from its baseline.
pub fn eval(rule: &Rule, view: &BucketView<EvalCell>) -> Option<Detection> {
    let (value, test, base) = eval_test(rule, rule.signal, view)?;
    let summary = scalar_summary(
        rule.signal,
        &scope_label(view.labels),
        value,
        Some(&base),
        &test,
    );
    Some(Detection::new(
        rule.signal,
        test,
        (json!(round(value)), base_json(Some(&base))),
        summary,
    ))
}
