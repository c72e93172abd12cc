//! Price-volume-mix: a scope's spend change split into more requests (volume),
//! requests moved between models (mix) and models' unit costs (rate), so that a
//! spend rise that is only more traffic is not told as a cost drift.

use serde_json::{Value, json};

use super::view::BucketView;
use super::words::round;
use crate::domain::Signal;
use crate::lanes::cell::Cell;

/// Per requested model: decayed requests with a known cost and their spend, the
/// "before" side of price-volume-mix. Both decay together, so spend / requests is
/// the model's recent unit cost.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ModelPool {
    entries: Vec<(u32, f64, f64)>,
}

impl ModelPool {
    /// Fold a bucket in, after decaying what was pooled by `decay`.
    pub fn add(&mut self, cell: &Cell, decay: f64) {
        for e in &mut self.entries {
            e.1 *= decay;
            e.2 *= decay;
        }
        for (m, share) in &cell.by_model {
            match self.entries.iter_mut().find(|e| e.0 == *m) {
                Some(e) => {
                    e.1 += share.costed as f64;
                    e.2 += share.cost;
                }
                None => self.entries.push((*m, share.costed as f64, share.cost)),
            }
        }
    }

    /// (share of requests, unit cost) of model `m`.
    fn pooled(&self, m: u32) -> (f64, f64) {
        let total: f64 = self.entries.iter().map(|e| e.1).sum();
        match self.entries.iter().find(|e| e.0 == m) {
            Some(&(_, n, cost)) if n > 0.0 && total > 0.0 => (n / total, cost / n),
            _ => (0.0, 0.0),
        }
    }
}

/// A spend change split into volume, mix and unit-rate effects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pvm {
    /// Spend the request baseline and the pooled unit costs expect.
    pub expected: f64,
    /// Spend observed.
    pub observed: f64,
    /// The part of the change that is more (or fewer) requests.
    pub volume: f64,
    /// The part that is requests moved between models.
    pub mix: f64,
    /// The part that is models' unit costs.
    pub rate: f64,
}

impl Pvm {
    /// The volume effect's share of all three effects' sizes.
    pub fn volume_share(&self) -> f64 {
        let total = self.volume.abs() + self.mix.abs() + self.rate.abs();
        if total > 0.0 {
            self.volume.abs() / total
        } else {
            0.0
        }
    }

    /// As evidence.
    pub fn to_json(self) -> Value {
        json!({
            "expected_spend": round(self.expected),
            "observed_spend": round(self.observed),
            "volume_effect": round(self.volume),
            "mix_effect": round(self.mix),
            "rate_effect": round(self.rate),
        })
    }
}

/// Price-volume-mix against the pooled per-model shares and unit costs and the
/// seasonal request baseline.
pub fn price_volume_mix(view: &BucketView<Cell>, models: &ModelPool) -> Option<Pvm> {
    let n0 = view.base(Signal::Requests)?.median;
    let cell = view.cell;
    if models.entries.is_empty() || cell.costed == 0 {
        return None;
    }
    let n1 = cell.costed as f64;
    let pooled = |m: u32| models.pooled(m);
    let unit0: f64 = models
        .entries
        .iter()
        .map(|e| {
            let (s, c) = pooled(e.0);
            s * c
        })
        .sum();
    let (mut mix, mut rate) = (0.0, 0.0);
    let mut keys: Vec<u32> = models.entries.iter().map(|e| e.0).collect();
    keys.extend(cell.by_model.iter().map(|(m, _)| *m));
    keys.sort_unstable();
    keys.dedup();
    for m in keys {
        let (s0, c0) = pooled(m);
        let now = cell.by_model.iter().find(|(x, _)| *x == m).map(|(_, s)| *s);
        let s1 = now.map_or(0.0, |s| s.costed as f64 / n1);
        let c1 = now
            .filter(|s| s.costed > 0)
            .map_or(c0, |s| s.cost / s.costed as f64);
        let c0 = if s0 > 0.0 { c0 } else { c1 };
        mix += n1 * (s1 - s0) * c0;
        rate += n1 * s1 * (c1 - c0);
    }
    Some(Pvm {
        expected: n0 * unit0,
        observed: cell.cost,
        volume: (n1 - n0) * unit0,
        mix,
        rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::view::testkit::{History, TEN_MIN};
    use crate::lanes::cell::ModelShare;

    /// Model `model`'s `requests`, each of them costed, at `cost` in all.
    fn share(model: u32, requests: u32, cost: f64) -> (u32, ModelShare) {
        (
            model,
            ModelShare {
                requests,
                cost,
                costed: requests,
            },
        )
    }

    /// Model 0 and model 1 each had 50 requests a bucket for two weeks, at $0.01
    /// and $0.03: the split of a bucket with these shares.
    fn split(by_model: Vec<(u32, ModelShare)>) -> Pvm {
        let mut history = History::new(&[]);
        history.learn(Signal::Requests, 0..14 * 144, |_| 100.0);
        let mut models = ModelPool::default();
        let usual = Cell {
            by_model: vec![share(0, 50, 0.5), share(1, 50, 1.5)],
            ..Cell::default()
        };
        for _ in 0..14 * 144 {
            models.add(&usual, 0.99);
        }
        let cell = Cell {
            requests: by_model.iter().map(|m| m.1.requests).sum(),
            costed: by_model.iter().map(|m| m.1.costed).sum(),
            cost: by_model.iter().map(|m| m.1.cost).sum(),
            by_model,
            ..Cell::default()
        };
        price_volume_mix(&history.view(14 * 144 * TEN_MIN, &cell, false), &models).expect("a split")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn twice_the_requests_is_volume_and_a_dearer_model_is_rate() {
        let doubled = split(vec![share(0, 100, 1.0), share(1, 100, 3.0)]);
        assert!(
            close(doubled.expected, 2.0) && close(doubled.volume, 2.0),
            "{doubled:?}"
        );
        assert!(
            close(doubled.mix, 0.0) && close(doubled.rate, 0.0),
            "{doubled:?}"
        );
        assert!(doubled.volume_share() > 0.99);
        let dearer = split(vec![share(0, 50, 1.0), share(1, 50, 1.5)]);
        assert!(
            close(dearer.rate, 0.5) && close(dearer.volume, 0.0),
            "{dearer:?}"
        );
        let moved = split(vec![share(1, 100, 3.0)]);
        assert!(close(moved.mix, 1.0) && close(moved.rate, 0.0), "{moved:?}");
    }
}
