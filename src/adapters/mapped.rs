//! `mapped`: any JSON-lines or CSV usage log, read through a field mapping from the
//! config (for example a home-made router's `time,model,cost` log).
//!
//! ```toml
//! [formats.router]
//! kind = "csv"                 # or "jsonl"
//! [formats.router.fields]
//! ts = "time"                  # a column name, or a dotted JSON path ("usage.prompt_tokens")
//! model = "model"
//! cost_usd = "cost"
//! ```

use serde::Deserialize;
use serde_json::Value;

use super::timestamp::{epoch_to_ms, parse_ts_str, parse_ts_with};
use super::{Context, Record, Rejected, millis, non_empty, tokens};
use crate::domain::{CostSource, UsageEvent};

/// How a mapped log is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappedKind {
    /// Delimited columns, named by a header line or by `columns`.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// A user-defined format: a layout and which field holds what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedFormat {
    /// Whether the log is CSV or JSON lines.
    pub kind: MappedKind,
    /// CSV field delimiter (one byte).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// CSV column names, for files without a header line. Empty: the first line is the header.
    #[serde(default)]
    pub columns: Vec<String>,
    /// A strftime pattern for `ts`; by default RFC 3339 or epoch seconds/milliseconds.
    pub ts_format: Option<String>,
    /// Whether the tenant field is a gateway identity (user id, key name) to be hashed
    /// or aliased. Turn off only when it holds labels you chose.
    #[serde(default = "default_true")]
    pub hash_tenant: bool,
    /// Which column or JSON path holds each `UsageEvent` field.
    pub fields: FieldMap,
}

/// Where each `UsageEvent` field comes from. `ts` and `model` are required; the rest
/// are optional (tokens default to 0; a missing `id` becomes a hash of the line and
/// its position).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    pub ts: String,
    pub model: String,
    pub id: Option<String>,
    pub resolved_model: Option<String>,
    pub provider: Option<String>,
    pub route: Option<String>,
    pub tenant: Option<String>,
    pub prompt_tokens: Option<String>,
    pub completion_tokens: Option<String>,
    pub cached_tokens: Option<String>,
    pub cost_usd: Option<String>,
    pub latency_ms: Option<String>,
    pub status: Option<String>,
    pub finish_reason: Option<String>,
    pub error_type: Option<String>,
}

/// A CSV delimiter the csv reader cannot take: it splits on one byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delimiter {0:?} must be a single ASCII character")]
pub struct InvalidDelimiter(pub char);

fn default_delimiter() -> char {
    ','
}

fn default_true() -> bool {
    true
}

impl MappedFormat {
    /// Check what serde cannot: a one-byte delimiter.
    pub fn validate(&self) -> Result<(), InvalidDelimiter> {
        if !self.delimiter.is_ascii() {
            return Err(InvalidDelimiter(self.delimiter));
        }
        Ok(())
    }

    /// Whether column names come from the first line of the file or body.
    pub(super) fn header_from_file(&self) -> bool {
        self.kind == MappedKind::Csv && self.columns.is_empty()
    }

    pub(super) fn parse_header(&self, line: &[u8]) -> Option<csv::StringRecord> {
        self.csv_record(line)
            .ok()
            .map(|r| r.iter().map(str::trim).collect())
    }

    fn csv_record(&self, line: &[u8]) -> Result<csv::StringRecord, Rejected> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(self.delimiter as u8)
            .from_reader(line);
        let mut record = csv::StringRecord::new();
        match reader.read_record(&mut record) {
            Ok(true) => Ok(record),
            Ok(false) => Err(Rejected("empty CSV line".into())),
            Err(e) => Err(Rejected(format!("invalid CSV line: {e}"))),
        }
    }

    pub(super) fn decode(
        &self,
        raw: &[u8],
        position: u64,
        header: &mut Option<csv::StringRecord>,
        ctx: &Context,
    ) -> Result<Option<Record>, Rejected> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let fields = match self.kind {
            MappedKind::Jsonl => Fields::Json(serde_json::from_slice(raw).map_err(Rejected::json)?),
            MappedKind::Csv => {
                if self.header_from_file() && header.is_none() {
                    *header = self.parse_header(raw);
                    return Ok(None);
                }
                let record = self.csv_record(raw)?;
                let names = match header.as_ref() {
                    Some(h) => h.iter().map(str::to_string).collect(),
                    None => self.columns.clone(),
                };
                if header.as_ref().is_some_and(|h| record == *h) {
                    // A header line repeated after rotation or truncation.
                    return Ok(None);
                }
                Fields::Csv { names, record }
            }
        };
        let f = &self.fields;
        let ts_raw = fields
            .text(&f.ts)
            .ok_or_else(|| Rejected(format!("field {:?} (ts) is missing", f.ts)))?;
        let ts_ms = match &self.ts_format {
            Some(p) => parse_ts_with(&ts_raw, p),
            None => match fields.get_json(&f.ts) {
                Some(Value::Number(n)) => epoch_to_ms(n.as_f64().unwrap_or(f64::NAN)),
                _ => parse_ts_str(&ts_raw),
            },
        }?;
        let model = non_empty(fields.text(&f.model))
            .ok_or_else(|| Rejected(format!("field {:?} (model) is missing", f.model)))?;
        let id = match f.id.as_ref().and_then(|k| non_empty(fields.text(k))) {
            Some(id) => id,
            None => {
                let h = blake3::hash(raw);
                compact_str::format_compact!("{}@{position}", &h.to_hex()[..16])
            }
        };
        let text = |k: &Option<String>| k.as_ref().and_then(|k| non_empty(fields.text(k)));
        let int = |name: &str, k: &Option<String>| -> Result<Option<i64>, Rejected> {
            Ok(fields.number(name, k)?.map(|n| n as i64))
        };
        let tenant = text(&f.tenant).map(|t| {
            if self.hash_tenant {
                ctx.identity.label(&t)
            } else {
                ctx.identity.alias_or(t)
            }
        });
        let cost_usd = fields.number("cost_usd", &f.cost_usd)?;
        Ok(Some(Record::Usage(UsageEvent {
            id,
            ts_ms,
            model,
            resolved_model: text(&f.resolved_model),
            provider: text(&f.provider),
            route: text(&f.route),
            tenant,
            prompt_tokens: tokens("prompt_tokens", int("prompt_tokens", &f.prompt_tokens)?)?,
            completion_tokens: tokens(
                "completion_tokens",
                int("completion_tokens", &f.completion_tokens)?,
            )?,
            cached_tokens: tokens("cached_tokens", int("cached_tokens", &f.cached_tokens)?)?,
            cost_source: if cost_usd.is_some() {
                CostSource::Gateway
            } else {
                CostSource::Unknown
            },
            cost_usd,
            list_cost_usd: None,
            latency_ms: millis(fields.number("latency_ms", &f.latency_ms)?),
            ttft_ms: None,
            status: int("status", &f.status)?.and_then(|s| u16::try_from(s).ok()),
            finish_reason: text(&f.finish_reason),
            error_type: text(&f.error_type),
        })))
    }
}

/// One parsed record of a mapped log, addressed by column name or JSON path.
enum Fields {
    Json(Value),
    Csv {
        names: Vec<String>,
        record: csv::StringRecord,
    },
}

impl Fields {
    fn get_json(&self, path: &str) -> Option<&Value> {
        match self {
            Fields::Json(v) => path.split('.').try_fold(v, |v, key| v.get(key)),
            Fields::Csv { .. } => None,
        }
    }

    fn text(&self, key: &str) -> Option<String> {
        match self {
            Fields::Json(_) => match self.get_json(key)? {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            },
            Fields::Csv { names, record } => {
                let i = names.iter().position(|n| n == key)?;
                record.get(i).map(|s| s.trim().to_string())
            }
        }
    }

    /// A number from a numeric JSON value or a numeric text; absent or empty is `None`.
    fn number(&self, field: &str, key: &Option<String>) -> Result<Option<f64>, Rejected> {
        let Some(key) = key else { return Ok(None) };
        if let Some(Value::Number(n)) = self.get_json(key) {
            return Ok(n.as_f64());
        }
        match non_empty(self.text(key)) {
            None => Ok(None),
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or_else(|| Rejected(format!("field {key:?} ({field}) is not a number: {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_support::*;
    use super::super::{Decoder, Format, Record};
    use super::*;

    fn format(toml_text: &str) -> Format {
        let m: MappedFormat = toml::from_str(toml_text).unwrap();
        m.validate().unwrap();
        Format::Mapped(Arc::new(m))
    }

    fn router_csv() -> Format {
        format(
            r#"
kind = "csv"
[fields]
ts = "time"
model = "model"
cost_usd = "cost"
"#,
        )
    }

    #[test]
    fn home_made_router_csv_with_header() {
        let mut d = Decoder::new(router_csv(), ctx());
        assert_eq!(d.decode(b"time,model,cost", 0, NOW), Ok(None));
        let Ok(Some(Record::Usage(e))) =
            d.decode(b"2026-06-01T12:00:00Z,gpt-4o-mini,0.0012", 16, NOW)
        else {
            panic!("expected an event")
        };
        assert_eq!(e.model, "gpt-4o-mini");
        assert_eq!(e.cost_usd, Some(0.0012));
        assert_eq!(e.ts_ms, 1_780_315_200_000);
        assert!(e.id.ends_with("@16"), "position-based id: {}", e.id);
        // A repeated header line is skipped, not rejected.
        assert_eq!(d.decode(b"time,model,cost", 40, NOW), Ok(None));
        let err = d
            .decode(b"2026-06-01T12:00:00Z,gpt-4o-mini,cheap", 60, NOW)
            .unwrap_err();
        assert!(err.0.contains("not a number"), "{err}");
    }

    #[test]
    fn resumed_tail_gets_header_from_first_line() {
        let mut d = Decoder::new(router_csv(), ctx());
        assert!(d.wants_header());
        d.set_header(b"time,model,cost");
        assert!(!d.wants_header());
        assert!(matches!(
            d.decode(b"1780315200,m,0.5", 99, NOW),
            Ok(Some(Record::Usage(_)))
        ));
    }

    #[test]
    fn csv_with_configured_columns_and_custom_time() {
        let f = format(
            r#"
kind = "csv"
delimiter = ";"
columns = ["when", "who", "model", "in", "out"]
ts_format = "%d/%m/%Y %H:%M"
[fields]
ts = "when"
model = "model"
tenant = "who"
prompt_tokens = "in"
completion_tokens = "out"
"#,
        );
        let e = usage(f, "01/06/2026 12:00;user-42;gpt-4o;1000;10");
        assert_eq!(e.ts_ms, 1_780_315_200_000);
        assert_eq!((e.prompt_tokens, e.completion_tokens), (1000, 10));
        assert!(
            e.tenant.unwrap().starts_with("id-"),
            "tenant hashed by default"
        );
        assert_eq!(e.cost_source, CostSource::PriceTable);
    }

    #[test]
    fn jsonl_with_nested_paths() {
        let f = format(
            r#"
kind = "jsonl"
[fields]
id = "request.id"
ts = "at"
model = "request.model"
prompt_tokens = "usage.in"
completion_tokens = "usage.out"
status = "code"
"#,
        );
        let e = usage(
            f,
            r#"{"at":1780315200,"code":429,"request":{"id":"r1","model":"m"},"usage":{"in":5,"out":"7"}}"#,
        );
        assert_eq!(e.id, "r1");
        assert_eq!((e.prompt_tokens, e.completion_tokens), (5, 7));
        assert_eq!(e.status, Some(429));
        assert!(e.is_error());
    }

    #[test]
    fn missing_required_field_is_named() {
        let mut d = Decoder::new(router_csv(), ctx());
        d.set_header(b"time,model,cost");
        let err = d.decode(b"2026-06-01T12:00:00Z,,0.1", 0, NOW).unwrap_err();
        assert!(err.0.contains("(model) is missing"), "{err}");
    }
}
