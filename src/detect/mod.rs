//! Detectors: judge a bucket's signals against their baselines with tests that
//! respect sample size, and attribute each finding to the smallest scope that
//! explains it.

pub mod band;
pub mod bump;
pub mod creep;
pub mod drift;
pub mod efficiency;
pub mod harm;
pub mod pooled;
pub mod pvm;
pub mod rules;
pub mod step;
pub mod view;
pub mod words;

use serde_json::{Value, json};

use crate::baselines::stats;
use crate::domain::{Baseline, Impact, Kind, Lane, Scope, Signal};
use crate::lanes::scopes::{ScopeId, ScopeIndex};
use rules::Rule;

/// One rule's positive judgement on one scope in one bucket.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Index of the rule in the rule set.
    pub rule: usize,
    /// The rule's name.
    pub rule_name: String,
    /// The scope it was found on.
    pub scope: ScopeId,
    /// The scope's labels.
    pub labels: Scope,
    /// What it is.
    pub kind: Kind,
    /// The rule's lane.
    pub lane: Lane,
    /// The signal it read.
    pub signal: Signal,
    /// +1 up, −1 down.
    pub sign: f64,
    /// Size of the deviation in observation units (for attribution between a scope
    /// and its children: extra errors, extra requests, extra spend-weighted units).
    pub excess: f64,
    /// One sentence.
    pub summary: String,
    /// Everything that supports it.
    pub evidence: serde_json::Map<String, Value>,
    /// The harm of the deviation, which its tier is chosen from.
    pub impact: Impact,
    /// What `impact` measures, in words (`evidence.tier.harm`).
    pub harm: &'static str,
    /// Why it must not alert though it was found (warm-up after a change event, a
    /// change event nearby). Muted findings still explain their parents.
    pub muted: Option<String>,
    /// A hard guard: never muted.
    pub hard: bool,
    /// The rule's cap on the tier.
    pub max_tier: Option<String>,
    /// How long the condition must hold before firing, ms.
    pub for_ms: i64,
    /// Requested models carrying a tenth or more of the scope's requests: what links
    /// it to related scopes in one incident.
    pub links: Vec<String>,
}

/// The outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Test {
    /// +1 or −1.
    pub sign: f64,
    /// Relative change against the baseline.
    pub rel: f64,
    /// The change in the signal's own unit (value − baseline): times the samples,
    /// the absolute excess that attribution compares between scopes.
    pub diff: f64,
    /// Robust z-score.
    pub z: f64,
    /// The test's p-value (one-sided in the rule's direction).
    pub p_value: f64,
    /// Which test.
    pub name: &'static str,
}

impl Test {
    /// A finding with no baseline to compare with (past a hard limit, a newcomer's
    /// first traffic): the whole value is the excess.
    pub fn without_baseline(value: f64, name: &'static str) -> Test {
        Test {
            sign: 1.0,
            rel: 0.0,
            diff: value,
            z: 0.0,
            p_value: 0.0,
            name,
        }
    }
}

/// Counts a proportion or mean test needs besides the signal's value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Observations (requests, verdicts, scored evals).
    pub n: u64,
    /// Successes for a proportion (errors, truncations, passes, evaluated).
    pub x: u64,
    /// Variance of the observations, for a mean (eval scores).
    pub variance: f64,
}

/// Whether a signal is a rate of events among observations, judged with a
/// proportion test against the pooled (mean) rate.
pub fn is_proportion(signal: Signal) -> bool {
    matches!(
        signal,
        Signal::ErrorRate | Signal::TruncationRate | Signal::EvalPassRate | Signal::EvalCoverage
    )
}

/// Fewest events beyond (or short of) the baseline rate for a proportion to count.
const MIN_EXCESS_EVENTS: f64 = 5.0;

/// Fewest requests beyond (or short of) the baseline for a volume change to count.
const MIN_EXCESS_REQUESTS: f64 = 10.0;

/// Judge a scalar value against its baseline under `rule`.
pub fn judge_scalar(
    rule: &Rule,
    signal: Signal,
    value: f64,
    counts: Counts,
    base: &Baseline,
) -> Option<Test> {
    let proportion = is_proportion(signal);
    let center = if proportion { base.mean } else { base.median };
    let diff = value - center;
    let sign = diff.signum();
    if !rule.direction.admits(sign) {
        return None;
    }
    let rel = diff / center.abs().max(1e-9);
    let robust = match base.seasonal {
        true => base.z(value, 0.02),
        false => base.z_wide(value, 0.02),
    };
    let (z, name) = match signal {
        // Too few expected events, or non-events (a 97% pass rate), for the normal
        // approximation: the exact test.
        _ if proportion && (counts.n as f64 * center.min(1.0 - center)) < 10.0 => (
            stats::binomial_z(counts.x, counts.n, center),
            "exact binomial test",
        ),
        _ if proportion => (
            stats::proportion_z(counts.x, counts.n, center),
            "proportion z-test",
        ),
        // Both must agree: the count's own Poisson noise and the day-to-day spread.
        Signal::Requests => {
            let poisson = stats::poisson_z(value, center);
            (
                sign * poisson.abs().min(robust.abs()),
                "poisson and robust z",
            )
        }
        Signal::EvalScore => {
            let spread = 1.4826 * base.mad;
            let z = stats::mean_shift_z(diff, counts.variance, counts.n, spread, base.n as u64);
            (z, "mean vs baseline (t)")
        }
        _ => (robust, "robust z"),
    };
    let p_value = stats::one_sided_p(z, sign > 0.0);
    let enough = signal == Signal::Requests || counts.n >= rule.min_samples;
    // A handful of events is an anecdote however small the baseline rate was.
    let excess_events = match signal {
        _ if proportion => (counts.x as f64 - counts.n as f64 * center).abs() >= MIN_EXCESS_EVENTS,
        Signal::Requests => diff.abs() >= MIN_EXCESS_REQUESTS,
        _ => true,
    };
    // The recent-window fallback knows nothing of the time of day: ask more of it.
    let min_z = if base.seasonal {
        rule.min_z
    } else {
        rule.min_z * 1.5
    };
    let passes = enough
        && excess_events
        && p_value < rule.alpha
        && rel.abs() >= rule.min_change
        && diff.abs() >= rule.min_abs
        && z.abs() >= min_z;
    passes.then_some(Test {
        sign,
        rel,
        diff,
        z,
        p_value,
        name,
    })
}

/// Whether a finding at `parent` is explained by a child finding: one child
/// carries at least this share of the parent's excess.
const EXPLAINS: f64 = 0.7;

/// Keep, per rule and direction, only the smallest scopes that explain what was
/// found: a parent whose excess one child carries is dropped (the child speaks for
/// it), and a child of a parent that stands is dropped (it is part of the parent's
/// incident). A child does not speak for its parent when a sibling on the same
/// dimension moves the same way: the cause spans them (all traffic stopping is the
/// gateway's, not its largest provider's), nor when it has no sibling at all (the
/// one route of a gateway is the gateway). Muted findings take part, then are removed.
pub fn attribute(findings: Vec<Finding>, index: &ScopeIndex) -> Vec<Finding> {
    let same = |a: &Finding, p: &Finding| a.rule == p.rule && a.sign == p.sign;
    let found =
        |scope: ScopeId, p: &Finding| findings.iter().find(|c| c.scope == scope && same(c, p));
    let explained: Vec<bool> = findings
        .iter()
        .map(|p| {
            let children = index.children(p.scope);
            children.iter().any(|&(dim, child)| {
                let carries = found(child, p)
                    .is_some_and(|c| p.excess != 0.0 && c.excess / p.excess >= EXPLAINS);
                let mut siblings = children
                    .iter()
                    .filter(|&&(d, sib)| d == dim && sib != child)
                    .peekable();
                // The only value of its dimension (one route) is its parent by
                // another name: it explains nothing.
                carries
                    && siblings.peek().is_some()
                    && siblings.all(|&(_, sib)| found(sib, p).is_none())
            })
        })
        .collect();
    let standing: Vec<bool> = findings
        .iter()
        .zip(&explained)
        .map(|(f, e)| !e || f.hard)
        .collect();
    let keep: Vec<bool> = findings
        .iter()
        .enumerate()
        .map(|(i, f)| {
            standing[i]
                && !findings.iter().enumerate().any(|(j, a)| {
                    standing[j]
                        && a.rule == f.rule
                        && a.sign == f.sign
                        && index.is_ancestor(a.scope, f.scope)
                })
        })
        .collect();
    findings
        .into_iter()
        .zip(keep)
        .filter(|(f, k)| *k && (f.muted.is_none() || f.hard))
        .map(|(f, _)| f)
        .collect()
}

/// Kinds a more specific kind on the same scope makes redundant.
fn supersedes(winner: Kind, other: Kind) -> bool {
    winner == Kind::FalseEfficiency && matches!(other, Kind::EvalCoverageDrop | Kind::QualityDrift)
}

/// One alert per scope and kind per bucket: the earliest rule wins and lists the
/// others in its evidence; a `false_efficiency` absorbs the coverage and quality
/// findings it was built from.
pub fn dedupe(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    let mut sorted = findings;
    sorted.sort_by_key(|f| (f.scope, f.kind != Kind::FalseEfficiency, f.rule));
    for f in sorted {
        let winner = out
            .iter_mut()
            .find(|w| w.scope == f.scope && (w.kind == f.kind || supersedes(w.kind, f.kind)));
        match winner {
            Some(w) => {
                let also = w.evidence.entry("also").or_insert_with(|| json!([]));
                if let Value::Array(list) = also {
                    list.push(json!({"rule": f.rule_name, "kind": f.kind, "summary": f.summary}));
                }
            }
            None => out.push(f),
        }
    }
    out
}

/// Words for a direction in summaries.
pub fn movement(sign: f64) -> &'static str {
    if sign > 0.0 { "above" } else { "below" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::one_rule;

    fn baseline(mean: f64) -> Baseline {
        Baseline {
            median: mean,
            mad: 0.02,
            mean,
            n: 24,
            seasonal: true,
            mean_dev: 0.02,
        }
    }

    #[test]
    fn a_high_pass_rate_is_judged_by_its_few_failures() {
        let r = one_rule(
            "[[rule]]\nname = \"pass\"\nsignal = \"eval_pass_rate\"\nscopes = [\"model\"]\ndirection = \"down\"\nmin_change = 0.1\nalpha = 1e-4\nmin_samples = 20\n",
        );
        let judge = |x: u64, n: u64| {
            let counts = Counts {
                n,
                x,
                variance: 0.0,
            };
            judge_scalar(
                &r,
                Signal::EvalPassRate,
                x as f64 / n as f64,
                counts,
                &baseline(0.972),
            )
        };
        // Six failures where one is usual: rare (p about 0.002), not 1e-4 rare, though
        // the normal approximation would call it z = -5.
        assert!(judge(25, 31).is_none());
        // Half failing is.
        let t = judge(15, 31).expect("a real drop");
        assert_eq!(t.name, "exact binomial test");
        assert!(t.p_value < 1e-4, "{t:?}");
    }

    fn finding(index: &ScopeIndex, scope: ScopeId, excess: f64) -> Finding {
        Finding {
            rule: 0,
            rule_name: "traffic-volume".into(),
            scope,
            labels: index.labels(scope).clone(),
            kind: Kind::TrafficDrift,
            lane: Lane::Cost,
            signal: Signal::Requests,
            sign: excess.signum(),
            excess,
            summary: String::new(),
            evidence: serde_json::Map::new(),
            impact: Impact::default(),
            harm: "",
            muted: None,
            hard: false,
            max_tier: None,
            for_ms: 0,
            links: Vec::new(),
        }
    }

    #[test]
    fn a_child_speaks_for_its_parent_unless_its_siblings_move_too() {
        use crate::lanes::scopes::{GLOBAL, ScopePlan};
        let mut index = ScopeIndex::new(ScopePlan::default());
        let provider = crate::domain::SCOPE_DIMS
            .iter()
            .position(|d| *d == "provider");
        let provider = provider.expect("a provider dimension");
        let (openai, anthropic) = (
            index.single(provider, "openai"),
            index.single(provider, "anthropic"),
        );
        let scopes = |kept: Vec<Finding>| kept.iter().map(|f| f.scope).collect::<Vec<_>>();
        // openai alone carries 80% of the drop: it is the cause.
        let alone = vec![
            finding(&index, GLOBAL, -100.0),
            finding(&index, openai, -80.0),
        ];
        assert_eq!(scopes(attribute(alone, &index)), [openai]);
        // Both providers drop: the cause is wider than either, global speaks.
        let both = vec![
            finding(&index, GLOBAL, -100.0),
            finding(&index, openai, -80.0),
            finding(&index, anthropic, -20.0),
        ];
        assert_eq!(scopes(attribute(both, &index)), [GLOBAL]);
        // The only route carries everything: it is the gateway by another name.
        let route = crate::domain::SCOPE_DIMS.iter().position(|d| *d == "route");
        let chat = index.single(route.expect("a route dimension"), "chat");
        let only = vec![
            finding(&index, GLOBAL, -100.0),
            finding(&index, chat, -100.0),
        ];
        assert_eq!(scopes(attribute(only, &index)), [GLOBAL]);
    }

    #[test]
    fn a_recent_fallback_of_two_levels_does_not_call_the_higher_one_an_outage() {
        let r = one_rule(
            "[[rule]]\nname = \"p95\"\nsignal = \"latency_p95\"\nscopes = [\"model\"]\ndirection = \"up\"\nmin_change = 0.5\nmin_samples = 50\n",
        );
        // 36 recent buckets: most a quiet night's 324 ms, the rest a busy day's ~1.6 s.
        let base = Baseline {
            median: 324.0,
            mad: 93.47,
            mean: 860.2,
            n: 36,
            seasonal: false,
            mean_dev: 560.0,
        };
        let counts = Counts {
            n: 50,
            x: 0,
            variance: 0.0,
        };
        assert!(judge_scalar(&r, Signal::LatencyP95, 1755.0, counts, &base).is_none());
        // The same history learned for this hour of the day would say so.
        let seasonal = Baseline {
            seasonal: true,
            ..base
        };
        assert!(judge_scalar(&r, Signal::LatencyP95, 1755.0, counts, &seasonal).is_some());
    }
}
