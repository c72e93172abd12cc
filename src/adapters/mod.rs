//! Adapters turn each gateway's record shape into `UsageEvent`s (or `EvalScore`s).
//!
//! **Invariant:** adapters do no IO. A record that cannot become an event is a
//! `Rejected` with a reason (it goes to dead letters); a record that is simply not a
//! usage record (a top-up row, a CSV header) is skipped.

pub mod body;
pub mod changes;
mod evals;
mod flat;
mod litellm;
mod mapped;
mod native;
mod newapi;
pub mod otlp;
pub mod otlp_metrics;
pub mod timestamp;

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;

pub use mapped::{
    FAILED, FailedWhen, FieldMap, FieldSpec, FieldTable, InvalidFormat, MappedFormat, MappedKind,
    Mapping, Text,
};
pub use newapi::LogRow;

use crate::domain::{CostSource, EvalScore, UsageEvent};
use crate::identity::Identity;
use crate::pricing::PriceTable;

/// A record the adapter refused, with the reason shown in dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

impl Rejected {
    pub(crate) fn json(e: serde_json::Error) -> Rejected {
        Rejected(format!("invalid record: {e}"))
    }
}

/// An unreadable timestamp refuses its record, with the timestamp's message as the reason.
impl From<timestamp::TimestampError> for Rejected {
    fn from(e: timestamp::TimestampError) -> Rejected {
        Rejected(e.to_string())
    }
}

/// The adapters' property tests run 256 cases unless `PROPTEST_CASES` asks for more
/// (a long campaign) or fewer.
#[cfg(test)]
fn proptest_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
    )
}

/// What one raw record became.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A request's usage.
    Usage(UsageEvent),
    /// A quality score.
    Eval(EvalScore),
}

/// The record shapes driftwarden reads.
#[derive(Debug, Clone)]
pub enum Format {
    /// driftwarden's own `UsageEvent` JSON (DESIGN.md).
    Native,
    /// A New API `logs` row as a JSON object.
    NewApi,
    /// A One API `logs` row as a JSON object.
    OneApi,
    /// LiteLLM's `StandardLoggingPayload`.
    LiteLlm,
    /// `EvalScore` JSON.
    Evals,
    /// A user-defined field mapping over JSON lines or CSV.
    Mapped(Arc<Mapping>),
}

impl Format {
    /// Look a format up by name: a built-in, or one of the mapped formats from the config.
    pub fn by_name(
        name: &str,
        mapped: &BTreeMap<String, Arc<Mapping>>,
    ) -> Result<Format, UnknownFormat> {
        Ok(match name {
            "native" => Format::Native,
            "newapi" => Format::NewApi,
            "oneapi" => Format::OneApi,
            "litellm" => Format::LiteLlm,
            "evals" => Format::Evals,
            other => match mapped.get(other) {
                Some(m) => Format::Mapped(m.clone()),
                None => {
                    let mut known = vec!["native", "newapi", "oneapi", "litellm", "evals"];
                    known.extend(mapped.keys().map(String::as_str));
                    return Err(UnknownFormat {
                        name: other.to_string(),
                        known: known.join(", "),
                    });
                }
            },
        })
    }

    /// Whether this format produces eval scores rather than usage events.
    pub fn is_evals(&self) -> bool {
        matches!(self, Format::Evals)
    }
}

/// A format name that is neither built in nor defined in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown format {name:?}; known formats: {known} (define more under [formats.NAME] in the config)"
)]
pub struct UnknownFormat {
    name: String,
    /// The names there are, comma-separated, for the message.
    known: String,
}

/// What every adapter needs besides the record.
#[derive(Debug, Clone)]
pub struct Context {
    /// Prices for list cost, and for cost when the record carries none.
    pub pricing: Arc<PriceTable>,
    /// Turns gateway identities into tenant labels (alias or salted hash).
    pub identity: Arc<Identity>,
    /// New API / One API quota units per US dollar.
    pub quota_per_unit: f64,
    /// How far in the future a timestamp may be before the record is refused.
    pub max_future_ms: i64,
}

/// Decodes the records of one source in one format. Holds the state a format keeps
/// across records (a mapped format's CSV parser and header).
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    ctx: Arc<Context>,
    /// A mapped format's reader, made at its first use and kept for every record.
    mapped: Option<mapped::Reader>,
}

impl Decoder {
    /// A decoder for `format` that has read no CSV header yet.
    pub fn new(format: Format, ctx: Arc<Context>) -> Decoder {
        Decoder {
            format,
            ctx,
            mapped: None,
        }
    }

    /// Whether the format reads its column names from the first line of a file. A tailer
    /// that resumes mid-file hands that line over with `set_header` first.
    pub fn wants_header(&self) -> bool {
        match (&self.format, &self.mapped) {
            (_, Some(reader)) => reader.wants_header(),
            (Format::Mapped(m), None) => m.header_from_file(),
            _ => false,
        }
    }

    /// Use `line` as the CSV header.
    pub fn set_header(&mut self, line: &[u8]) {
        if let Format::Mapped(m) = &self.format {
            self.mapped
                .get_or_insert_with(|| mapped::Reader::new(m.clone()))
                .set_header(line);
        }
    }

    /// Decode one record (one line or one JSON value). `position` identifies it within
    /// its source and makes a stable id for formats whose records carry none.
    /// `Ok(None)` means the record is not a usage record and is skipped.
    pub fn decode(
        &mut self,
        raw: &[u8],
        position: u64,
        now_ms: i64,
    ) -> Result<Option<Record>, Rejected> {
        let ctx = &*self.ctx;
        let record = match &self.format {
            Format::Native => native::decode(raw, ctx).map(|e| Some(Record::Usage(e))),
            Format::NewApi => newapi::decode(raw, ctx, newapi::Flavour::NewApi),
            Format::OneApi => newapi::decode(raw, ctx, newapi::Flavour::OneApi),
            Format::LiteLlm => litellm::decode(raw, ctx).map(|e| Some(Record::Usage(e))),
            Format::Evals => evals::decode(raw).map(|e| Some(Record::Eval(e))),
            Format::Mapped(m) => self
                .mapped
                .get_or_insert_with(|| mapped::Reader::new(m.clone()))
                .decode(raw, position, ctx),
        }?;
        self.finish(record, now_ms)
    }

    /// Decode a gateway `logs` row built straight from database columns (no JSON text
    /// in between). The format decides New API or One API semantics; any other format
    /// reads the row as New API.
    pub fn decode_row(&mut self, row: &LogRow, now_ms: i64) -> Result<Option<Record>, Rejected> {
        let flavour = match &self.format {
            Format::OneApi => newapi::Flavour::OneApi,
            _ => newapi::Flavour::NewApi,
        };
        let record = newapi::from_row(row, &self.ctx, flavour)?;
        self.finish(record, now_ms)
    }

    /// The checks and pricing every decoded record gets, whatever its format.
    fn finish(&self, record: Option<Record>, now_ms: i64) -> Result<Option<Record>, Rejected> {
        let ctx = &*self.ctx;
        match record {
            Some(Record::Usage(e)) => Ok(Some(Record::Usage(finish_usage(e, now_ms, ctx)?))),
            Some(Record::Eval(e)) => {
                check_time(e.ts_ms, now_ms, ctx)?;
                Ok(Some(Record::Eval(e)))
            }
            None => Ok(None),
        }
    }
}

/// The checks and pricing every usage event gets, from a line or from a span: its
/// time within bounds, its list cost (and its cost, when the record carried none).
pub fn finish_usage(mut e: UsageEvent, now_ms: i64, ctx: &Context) -> Result<UsageEvent, Rejected> {
    check_time(e.ts_ms, now_ms, ctx)?;
    price(&mut e, &ctx.pricing)?;
    Ok(e)
}

fn check_time(ts_ms: i64, now_ms: i64, ctx: &Context) -> Result<(), Rejected> {
    if ts_ms < MIN_TS_MS {
        return Err(Rejected(format!(
            "timestamp {ts_ms} ms is before 2001: check the timestamp unit (seconds, milliseconds or RFC 3339)"
        )));
    }
    if ts_ms > now_ms + ctx.max_future_ms {
        return Err(Rejected(format!(
            "timestamp is {}s in the future (limit {}s): check the gateway's clock or the timestamp unit",
            (ts_ms - now_ms) / 1000,
            ctx.max_future_ms / 1000
        )));
    }
    Ok(())
}

/// Fill in the price-table cost, and the charged cost when the record carried none.
fn price(e: &mut UsageEvent, pricing: &PriceTable) -> Result<(), Rejected> {
    if let Some(c) = e.cost_usd
        && (!c.is_finite() || c < 0.0)
    {
        return Err(Rejected(format!(
            "cost_usd {c} is negative or not a number"
        )));
    }
    let models: &[&str] = match &e.resolved_model {
        Some(r) => &[r.as_str(), e.model.as_str()],
        None => &[e.model.as_str()],
    };
    e.list_cost_usd = pricing.cost(
        models,
        e.ts_ms,
        e.prompt_tokens,
        e.completion_tokens,
        e.cached_tokens,
    );
    if e.cost_usd.is_none() {
        e.cost_usd = e.list_cost_usd;
        e.cost_source = if e.cost_usd.is_some() {
            CostSource::PriceTable
        } else {
            CostSource::Unknown
        };
    }
    Ok(())
}

/// More tokens than any model's context in one request: a corrupt record, refused so
/// that aggregate sums cannot overflow.
const MAX_TOKENS: i64 = 1_000_000_000;
/// Durations above a day are not request latencies; they are dropped.
const MAX_MILLIS: f64 = 86_400_000.0;
/// Epoch milliseconds before 2001-09-09 (1e12): a unit mistake, not a request time.
const MIN_TS_MS: i64 = 1_000_000_000_000;

/// A token count from a record: present, not negative, plausible.
pub(crate) fn tokens(field: &str, v: Option<i64>) -> Result<u64, Rejected> {
    match v {
        None => Ok(0),
        Some(n) if n < 0 => Err(Rejected(format!("{field} is negative ({n})"))),
        Some(n) if n > MAX_TOKENS => Err(Rejected(format!(
            "{field} is implausibly large ({n} > {MAX_TOKENS})"
        ))),
        Some(n) => Ok(n as u64),
    }
}

/// A duration in milliseconds from a record: within 0..=1 day, else absent.
pub(crate) fn millis(v: Option<f64>) -> Option<u64> {
    v.filter(|x| x.is_finite() && (0.0..=MAX_MILLIS).contains(x))
        .map(|x| x.round() as u64)
}

/// Treat empty strings as absent.
pub(crate) fn non_empty<S: AsRef<str>>(s: Option<S>) -> Option<CompactString> {
    s.and_then(|s| {
        let s = s.as_ref();
        // Most labels have nothing to trim: two visible ASCII ends say so without
        // `trim`, which decodes characters from both ends (1% of an import).
        let t = match (s.as_bytes().first(), s.as_bytes().last()) {
            (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => s,
            _ => s.trim(),
        };
        (!t.is_empty()).then(|| CompactString::from(t))
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::collections::HashMap;

    /// A context with a small price table and a fixed salt, as adapters see in production.
    pub fn ctx() -> Arc<Context> {
        let pricing = PriceTable::parse(
            r#"
[[price]]
model = "gpt-4o"
effective_from = "2024-01-01"
input_per_1m = 2.5
output_per_1m = 10.0
cached_input_per_1m = 1.25
"#,
            "test",
        )
        .unwrap();
        Arc::new(Context {
            pricing: Arc::new(pricing),
            identity: Arc::new(Identity::new(
                [1; 32],
                HashMap::from([("alias-me".to_string(), "team-alias".to_string())]),
            )),
            quota_per_unit: 500_000.0,
            max_future_ms: 15 * 60 * 1000,
        })
    }

    /// 2026-06-02T00:00:00Z: "now" for adapter tests, after every fixture's timestamp.
    pub const NOW: i64 = 1_780_358_400_000;

    pub fn decode(format: Format, raw: &str) -> Result<Option<Record>, Rejected> {
        Decoder::new(format, ctx()).decode(raw.as_bytes(), 0, NOW)
    }

    pub fn usage(format: Format, raw: &str) -> UsageEvent {
        match decode(format, raw) {
            Ok(Some(Record::Usage(e))) => e,
            other => panic!("expected a usage event, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn labels_are_trimmed_and_blank_ones_dropped() {
        let cases = [
            ("gpt-4o", Some("gpt-4o")),
            (" gpt-4o", Some("gpt-4o")),
            ("gpt-4o\t", Some("gpt-4o")),
            ("\u{a0}équipe\u{2003}", Some("équipe")),
            ("é", Some("é")),
            ("a b", Some("a b")),
            ("x", Some("x")),
            ("", None),
            (" \n ", None),
            ("\u{3000}", None),
        ];
        for (raw, want) in cases {
            assert_eq!(non_empty(Some(raw)).as_deref(), want, "{raw:?}");
        }
        assert_eq!(non_empty(None::<&str>), None);
    }

    #[test]
    fn implausible_numbers_are_refused_or_dropped() {
        let big = r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":9000000000000,"completion_tokens":1}"#;
        assert!(
            decode(Format::Native, big)
                .unwrap_err()
                .0
                .contains("implausibly large")
        );
        let epoch = r#"{"id":"a","ts":0,"model":"m","prompt_tokens":1,"completion_tokens":1}"#;
        assert!(
            decode(Format::Native, epoch)
                .unwrap_err()
                .0
                .contains("before 2001")
        );
        let slow = r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1,"latency_ms":1e300}"#;
        assert_eq!(usage(Format::Native, slow).latency_ms, None);
    }

    #[test]
    fn far_future_timestamps_are_rejected_with_a_hint() {
        let raw = r#"{"id":"a","ts":"2030-01-01T00:00:00Z","model":"gpt-4o","prompt_tokens":1,"completion_tokens":1}"#;
        let err = decode(Format::Native, raw).unwrap_err();
        assert!(err.0.contains("in the future"), "{err}");
    }

    #[test]
    fn cost_from_price_table_when_record_has_none() {
        let raw = r#"{"id":"a","ts":"2026-06-01T12:00:00Z","model":"gpt-4o","prompt_tokens":1000000,"completion_tokens":0}"#;
        let e = usage(Format::Native, raw);
        assert_eq!(e.cost_source, CostSource::PriceTable);
        assert_eq!(e.cost_usd, Some(2.5));
        assert_eq!(e.list_cost_usd, Some(2.5));
    }

    #[test]
    fn gateway_cost_kept_beside_list_cost() {
        let raw = r#"{"id":"a","ts":"2026-06-01T12:00:00Z","model":"gpt-4o","prompt_tokens":1000000,"completion_tokens":0,"cost_usd":3.0}"#;
        let e = usage(Format::Native, raw);
        assert_eq!(e.cost_source, CostSource::Gateway);
        assert_eq!((e.cost_usd, e.list_cost_usd), (Some(3.0), Some(2.5)));
    }

    #[test]
    fn unpriced_model_without_cost_is_unknown_not_zero() {
        let raw = r#"{"id":"a","ts":"2026-06-01T12:00:00Z","model":"mystery","prompt_tokens":5,"completion_tokens":5}"#;
        let e = usage(Format::Native, raw);
        assert_eq!((e.cost_source, e.cost_usd), (CostSource::Unknown, None));
    }

    #[test]
    fn unknown_format_lists_the_known_ones() {
        let err = Format::by_name("nope", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("native, newapi, oneapi, litellm, evals"),
            "{err}"
        );
    }
}
