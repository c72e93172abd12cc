//! The price table (`rules/pricing.toml`): dollars per million tokens per model, with
//! an `effective_from` date on every entry so that a price change is history, not a rewrite.

use std::path::Path;

use chrono::NaiveDate;
use rustc_hash::FxHashMap;
use serde::Deserialize;

/// A price table failed to load.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The price table file could not be read.
    #[error("cannot read price table {path}: {source}")]
    Read {
        /// Path of the price table.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The price table does not parse or holds an impossible price.
    #[error("price table {path} is invalid: {message}")]
    Invalid {
        /// Path (or other origin) of the price table.
        path: String,
        /// What is wrong: the parser's message or the offending model.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    #[serde(default)]
    price: Vec<PriceEntry>,
}

/// One price of one model from a date on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// Model name, matched against an event's resolved model first, then its requested model.
    pub model: String,
    /// First day (from midnight UTC) this price applies.
    pub effective_from: NaiveDate,
    /// USD per million uncached prompt tokens.
    pub input_per_1m: f64,
    /// USD per million completion tokens.
    pub output_per_1m: f64,
    /// Price of cached input tokens; defaults to the input price.
    pub cached_input_per_1m: Option<f64>,
}

/// All prices, per model, ordered by `effective_from`.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    // FxHash: looked up once or twice per event; the keys come from the config.
    by_model: FxHashMap<String, Vec<(i64, PriceEntry)>>,
}

impl PriceTable {
    /// Load `pricing.toml` from a rules directory; a missing file is an empty table.
    pub fn load_dir(dir: &Path) -> Result<PriceTable, PricingError> {
        let path = dir.join("pricing.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => PriceTable::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PriceTable::default()),
            Err(source) => Err(PricingError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Parse a price table; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<PriceTable, PricingError> {
        let invalid = |message: String| PricingError::Invalid {
            path: origin.to_string(),
            message,
        };
        let file: PricingFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut by_model: FxHashMap<String, Vec<(i64, PriceEntry)>> = FxHashMap::default();
        for entry in file.price {
            let prices = [
                entry.input_per_1m,
                entry.output_per_1m,
                entry.cached_input_per_1m.unwrap_or(0.0),
            ];
            if prices.iter().any(|p| !p.is_finite() || *p < 0.0) {
                return Err(invalid(format!(
                    "model {:?}: prices must be finite and not negative",
                    entry.model
                )));
            }
            let from_ms = entry
                .effective_from
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc()
                .timestamp_millis();
            let list = by_model.entry(entry.model.clone()).or_default();
            if list.iter().any(|(t, _)| *t == from_ms) {
                return Err(invalid(format!(
                    "model {:?} has two prices effective from {}",
                    entry.model, entry.effective_from
                )));
            }
            list.push((from_ms, entry));
        }
        for list in by_model.values_mut() {
            list.sort_by_key(|(t, _)| *t);
        }
        Ok(PriceTable { by_model })
    }

    /// Number of models priced.
    pub fn len(&self) -> usize {
        self.by_model.len()
    }

    /// Whether no model is priced.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// The price of `model` in force at `ts_ms`, if any.
    pub fn price_at(&self, model: &str, ts_ms: i64) -> Option<&PriceEntry> {
        let list = self.by_model.get(model)?;
        let idx = list.partition_point(|(from, _)| *from <= ts_ms);
        idx.checked_sub(1).map(|i| &list[i].1)
    }

    /// List cost in USD of one request. Cached tokens are part of the prompt tokens
    /// and billed at the cached price.
    pub fn cost(
        &self,
        models: &[&str],
        ts_ms: i64,
        prompt: u64,
        completion: u64,
        cached: u64,
    ) -> Option<f64> {
        let price = models.iter().find_map(|m| self.price_at(m, ts_ms))?;
        let cached = cached.min(prompt);
        let uncached = (prompt - cached) as f64;
        let cached_price = price.cached_input_per_1m.unwrap_or(price.input_per_1m);
        Some(
            (uncached * price.input_per_1m
                + cached as f64 * cached_price
                + completion as f64 * price.output_per_1m)
                / 1_000_000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
[[price]]
model = "gpt-4o"
effective_from = "2024-05-13"
input_per_1m = 5.0
output_per_1m = 15.0

[[price]]
model = "gpt-4o"
effective_from = "2024-10-01"
input_per_1m = 2.5
output_per_1m = 10.0
cached_input_per_1m = 1.25
"#;

    fn ms(date: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(date)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn price_in_force_follows_effective_from() {
        let t = PriceTable::parse(TABLE, "test").unwrap();
        assert_eq!(t.price_at("gpt-4o", ms("2024-05-01T00:00:00Z")), None);
        assert_eq!(
            t.price_at("gpt-4o", ms("2024-06-01T00:00:00Z"))
                .unwrap()
                .input_per_1m,
            5.0
        );
        assert_eq!(
            t.price_at("gpt-4o", ms("2024-10-01T00:00:00Z"))
                .unwrap()
                .input_per_1m,
            2.5
        );
    }

    #[test]
    fn cost_bills_cached_tokens_at_cached_price() {
        let t = PriceTable::parse(TABLE, "test").unwrap();
        let cost = t
            .cost(
                &["unknown", "gpt-4o"],
                ms("2025-01-01T00:00:00Z"),
                1_000_000,
                100_000,
                400_000,
            )
            .unwrap();
        // 600k * 2.5 + 400k * 1.25 + 100k * 10, per million.
        assert!((cost - (1.5 + 0.5 + 1.0)).abs() < 1e-9, "{cost}");
        assert_eq!(t.cost(&["nope"], 0, 1, 1, 0), None);
    }

    #[test]
    fn negative_prices_and_duplicate_dates_are_refused() {
        let neg =
            "[[price]]\nmodel='m'\neffective_from='2024-01-01'\ninput_per_1m=-1\noutput_per_1m=1\n";
        assert!(
            PriceTable::parse(neg, "t")
                .unwrap_err()
                .to_string()
                .contains("not negative")
        );
        let dup = format!(
            "{TABLE}\n[[price]]\nmodel='gpt-4o'\neffective_from='2024-10-01'\ninput_per_1m=1\noutput_per_1m=1\n"
        );
        assert!(
            PriceTable::parse(&dup, "t")
                .unwrap_err()
                .to_string()
                .contains("two prices")
        );
    }
}
