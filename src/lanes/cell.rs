//! What one scope accumulates over one evaluation bucket: the counts every lane's
//! signals are computed from. Folded per event, so each field is cheap to add to.

use rustc_hash::FxHashSet;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use crate::domain::UsageEvent;

/// Status classes of the status mix: 2xx, 4xx other than 429, 429, 5xx, other.
pub const STATUS_CLASSES: usize = 5;
/// Finish reasons of the finish mix: stop, length, tool_calls, content_filter, other.
pub const FINISH_CLASSES: usize = 5;
/// Bins of the token-length histograms: bin i holds lengths in [2^(i-1), 2^i).
pub const TOKEN_BINS: usize = 24;

/// A small interned string (model, resolved model, tenant).
pub type Sym = u32;

/// Per requested model inside a scope: what price-volume-mix needs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelShare {
    /// Requests for the model.
    pub requests: u32,
    /// Known spend for the model, USD.
    pub cost: f64,
    /// Requests whose cost is known.
    pub costed: u32,
}

/// A latency sketch (relative-error quantiles, DDSketch).
#[derive(Clone)]
pub struct Latency(pub DDSketch);

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Latency({} samples)", self.0.count())
    }
}

/// One scope's counts over one bucket.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Requests.
    pub requests: u32,
    /// Failed requests.
    pub errors: u32,
    /// Completions cut off by the token limit.
    pub truncated: u32,
    /// Status mix counts.
    pub status: [u32; STATUS_CLASSES],
    /// Finish-reason mix counts.
    pub finish: [u32; FINISH_CLASSES],
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Tokens of requests whose cost is known (for cost per 1k tokens).
    pub costed_tokens: u64,
    /// Known spend, USD.
    pub cost: f64,
    /// Requests whose cost is known.
    pub costed: u32,
    /// Prompt-length histogram (log2 bins).
    pub prompt_hist: [u32; TOKEN_BINS],
    /// Completion-length histogram (log2 bins).
    pub completion_hist: [u32; TOKEN_BINS],
    /// Latency sketch (relative-error quantiles), when any request reported latency.
    pub latency: Option<Box<Latency>>,
    /// Per requested model: requests and spend.
    pub by_model: Vec<(Sym, ModelShare)>,
    /// Per resolved model: requests (the resolved-model mix).
    pub resolved: Vec<(Sym, u32)>,
    /// Distinct tenants seen.
    pub tenants: FxHashSet<Sym>,
    /// Whether a customer-facing route had traffic here.
    pub customer_facing: bool,
}

impl Default for Cell {
    fn default() -> Cell {
        Cell {
            requests: 0,
            errors: 0,
            truncated: 0,
            status: [0; STATUS_CLASSES],
            finish: [0; FINISH_CLASSES],
            prompt_tokens: 0,
            completion_tokens: 0,
            costed_tokens: 0,
            cost: 0.0,
            costed: 0,
            prompt_hist: [0; TOKEN_BINS],
            completion_hist: [0; TOKEN_BINS],
            latency: None,
            by_model: Vec::new(),
            resolved: Vec::new(),
            tenants: FxHashSet::default(),
            customer_facing: false,
        }
    }
}

/// The interned labels of one event, looked up once and shared by all its scopes.
#[derive(Debug, Clone, Copy)]
pub struct EventSyms {
    /// Requested model.
    pub model: Sym,
    /// Resolved model (the requested one when the record has none).
    pub resolved: Sym,
    /// Tenant, if any.
    pub tenant: Option<Sym>,
    /// Whether the route is customer-facing.
    pub customer_facing: bool,
}

impl Cell {
    /// Count one event.
    pub fn add(&mut self, e: &UsageEvent, syms: EventSyms) {
        self.requests += 1;
        self.errors += e.is_error() as u32;
        self.truncated += e.is_truncated() as u32;
        self.status[status_class(e)] += 1;
        self.finish[finish_class(e.finish_reason.as_deref())] += 1;
        // A failed request reports no tokens (New API writes 0): its length says
        // nothing of the prompts, and counting it would repeat an error burst as a
        // length drift on every scope it touches.
        if !e.is_error() {
            self.prompt_tokens += e.prompt_tokens;
            self.completion_tokens += e.completion_tokens;
            self.prompt_hist[token_bin(e.prompt_tokens)] += 1;
            self.completion_hist[token_bin(e.completion_tokens)] += 1;
        }
        let share = match self.by_model.iter_mut().find(|(m, _)| *m == syms.model) {
            Some((_, s)) => s,
            None => {
                self.by_model.push((syms.model, ModelShare::default()));
                &mut self.by_model.last_mut().expect("just pushed").1
            }
        };
        share.requests += 1;
        // Failed requests cost nothing and are never evaluated: counting them would
        // turn an error burst into a fake cost drop and a fake coverage drop.
        if let Some(c) = e.cost_usd.filter(|_| !e.is_error()) {
            self.cost += c;
            self.costed += 1;
            self.costed_tokens += e.prompt_tokens + e.completion_tokens;
            share.cost += c;
            share.costed += 1;
        }
        // A failed request often names no upstream model: it says nothing of the mix.
        if !e.is_error() {
            match self.resolved.iter_mut().find(|(m, _)| *m == syms.resolved) {
                Some((_, n)) => *n += 1,
                None => self.resolved.push((syms.resolved, 1)),
            }
        }
        if let Some(l) = e.latency_ms {
            self.latency
                .get_or_insert_with(|| Box::new(Latency(DDSketch::new(SketchConfig::defaults()))))
                .0
                .add(l as f64);
        }
        if let Some(t) = syms.tenant {
            self.tenants.insert(t);
        }
        self.customer_facing |= syms.customer_facing;
    }

    /// A latency quantile in ms, if any request reported latency.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        self.latency.as_ref()?.0.quantile(q).ok().flatten()
    }

    /// The share of latencies above `ms`, to the sketch's resolution: the sketch has
    /// no rank query, so the quantile that crosses `ms` is found by bisection.
    pub fn latency_share_above(&self, ms: f64) -> f64 {
        let (mut below, mut above) = (0.0_f64, 1.0_f64);
        if self.latency_quantile(1.0).is_none_or(|max| max <= ms) {
            return 0.0;
        }
        for _ in 0..16 {
            let mid = (below + above) / 2.0;
            match self.latency_quantile(mid) {
                Some(v) if v > ms => above = mid,
                _ => below = mid,
            }
        }
        1.0 - above
    }
}

fn status_class(e: &UsageEvent) -> usize {
    match e.status {
        Some(200..=299) => 0,
        Some(429) => 2,
        Some(400..=499) => 1,
        Some(500..=599) => 3,
        None if e.error_type.is_none() => 0,
        _ => 4,
    }
}

fn finish_class(reason: Option<&str>) -> usize {
    match reason {
        None | Some("stop") | Some("end_turn") | Some("stop_sequence") => 0,
        Some("length") | Some("max_tokens") => 1,
        Some("tool_calls") | Some("tool_use") | Some("function_call") => 2,
        Some("content_filter") => 3,
        Some(_) => 4,
    }
}

/// The log2 bin of a token count: 0 for 0, else 1 + floor(log2(n)), capped.
pub fn token_bin(n: u64) -> usize {
    ((64 - n.leading_zeros()) as usize).min(TOKEN_BINS - 1)
}

/// Eval counts for one scope's bucket, gathered until the bucket's evals settle.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalCell {
    /// Requests in the bucket (from the usage side).
    pub requests: u32,
    /// Requests with at least one eval.
    pub evaluated: u32,
    /// Scores given.
    pub scores: u32,
    /// Sum of scores.
    pub score_sum: f64,
    /// Sum of squared scores (for the variance in Welch's test).
    pub score_sq: f64,
    /// Pass/fail verdicts given.
    pub verdicts: u32,
    /// Passing verdicts.
    pub passed: u32,
    /// Sum of request-to-eval lags, seconds.
    pub lag_sum_s: f64,
}

impl EvalCell {
    /// Count one eval; `first` when it is the request's first eval.
    pub fn add(&mut self, score: Option<f64>, passed: Option<bool>, lag_s: f64, first: bool) {
        if first {
            self.evaluated += 1;
            self.lag_sum_s += lag_s;
        }
        if let Some(s) = score {
            self.scores += 1;
            self.score_sum += s;
            self.score_sq += s * s;
        }
        if let Some(p) = passed {
            self.verdicts += 1;
            self.passed += p as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::event;

    #[test]
    fn token_bins_are_log2() {
        assert_eq!(token_bin(0), 0);
        assert_eq!(token_bin(1), 1);
        assert_eq!(token_bin(3), 2);
        assert_eq!(token_bin(1024), 11);
        assert_eq!(token_bin(u64::MAX), TOKEN_BINS - 1);
    }

    #[test]
    fn the_share_above_a_latency_is_read_off_the_sketch() {
        let mut cell = Cell::default();
        let mut sketch = DDSketch::new(SketchConfig::defaults());
        for ms in 1..=1000 {
            sketch.add(f64::from(ms));
        }
        cell.latency = Some(Box::new(Latency(sketch)));
        for (ms, share) in [(500.0, 0.5), (900.0, 0.1), (100.0, 0.9)] {
            let got = cell.latency_share_above(ms);
            assert!((got - share).abs() < 0.02, "above {ms}: {got}");
        }
        assert_eq!(cell.latency_share_above(5000.0), 0.0);
        assert_eq!(Cell::default().latency_share_above(1.0), 0.0);
    }

    #[test]
    fn a_cell_counts_mixes_models_and_latency() {
        let syms = EventSyms {
            model: 1,
            resolved: 2,
            tenant: Some(3),
            customer_facing: true,
        };
        let mut cell = Cell::default();
        let mut ok = event("a", 0);
        ok.latency_ms = Some(100);
        cell.add(&ok, syms);
        let mut bad = event("b", 0);
        bad.status = Some(429);
        bad.finish_reason = Some("length".into());
        bad.latency_ms = Some(300);
        cell.add(&bad, syms);
        assert_eq!((cell.requests, cell.errors, cell.truncated), (2, 1, 1));
        assert_eq!(cell.status, [1, 0, 1, 0, 0]);
        assert_eq!(cell.finish, [1, 1, 0, 0, 0]);
        let counted: u32 = cell.prompt_hist.iter().sum();
        assert_eq!(counted, 1, "the failed request has no prompt length");
        assert_eq!(cell.by_model[0].1.requests, 2);
        assert_eq!(
            cell.resolved,
            vec![(2, 1)],
            "the failed request says nothing of the mix"
        );
        let p50 = cell.latency_quantile(0.5).unwrap();
        assert!((95.0..=105.0).contains(&p50), "{p50}");
        assert!(cell.customer_facing && cell.tenants.contains(&3));
    }
}
