//! `mapped`: any JSON-lines or CSV usage log, read through a field mapping from the
//! config (for example a home-made router's `time,model,cost` log).
//!
//! ```toml
//! [formats.router]
//! kind = "csv"                 # or "jsonl"
//! [formats.router.fields]
//! ts = "time"                  # a column name, or a dotted JSON path ("usage.prompt_tokens")
//! model = { column = "model", map = { ChatGPT = "gpt-3.5-turbo" } }
//! provider = { const = "openai" }
//! cost_usd = "cost"
//! failed_when = { column = "cost", empty = true }
//! ```
//!
//! `MappedFormat` is the config as written; `compile` checks it into a `Mapping`, where
//! every column or JSON path the fields read has a slot. A `Reader` (one per source:
//! a file, a request body) keeps one CSV parser with its buffers and the column of each
//! slot across lines; a JSON line is walked once, keeping only the values at the
//! mapped paths (no document tree, no path splitting per line).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

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

/// A user-defined format as the config writes it: a layout and which field holds what.
/// `compile` checks it and makes the `Mapping` decoders read with.
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
/// its position). `failed_when` marks the records of failed requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FieldMap {
    pub ts: FieldSpec,
    pub model: FieldSpec,
    pub id: Option<FieldSpec>,
    pub resolved_model: Option<FieldSpec>,
    pub provider: Option<FieldSpec>,
    pub route: Option<FieldSpec>,
    pub tenant: Option<FieldSpec>,
    pub prompt_tokens: Option<FieldSpec>,
    pub completion_tokens: Option<FieldSpec>,
    pub cached_tokens: Option<FieldSpec>,
    pub cost_usd: Option<FieldSpec>,
    pub latency_ms: Option<FieldSpec>,
    pub ttft_ms: Option<FieldSpec>,
    pub status: Option<FieldSpec>,
    pub finish_reason: Option<FieldSpec>,
    pub error_type: Option<FieldSpec>,
    pub failed_when: Option<FailedWhen>,
}

/// Where one field's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldSpec {
    /// `model = "Model"`: a column name, or a dotted JSON path.
    Column(String),
    /// `model = { column = "Model", map = { .. } }`, `{ const = "gpt-4o" }`, ...
    Table(FieldTable),
}

/// The table form of a field: a column or a constant, with optional value mapping
/// and, for `ts`, a base time and unit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldTable {
    /// The column name or dotted JSON path (`path` is accepted as well).
    #[serde(alias = "path")]
    pub column: Option<String>,
    /// The value of every record, instead of a column.
    #[serde(rename = "const")]
    pub constant: Option<Text>,
    /// Values to replace, by their trimmed text; others pass through unchanged.
    #[serde(default)]
    pub map: BTreeMap<String, Text>,
    /// The value when the record's is missing or blank or, with `map`, not a key of it.
    pub default: Option<Text>,
    /// `ts` only: the time the column's numbers count from (RFC 3339).
    pub relative_to: Option<String>,
    /// `ts` only: the unit of the column's numbers: `s`, `ms` or `us`.
    pub unit: Option<String>,
}

/// When a record is a failed request: the column's value equals one of some values,
/// or is (or is not) empty. Exactly one of `equals`, `in` and `empty` is given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedWhen {
    /// The column name or dotted JSON path to test (`path` is accepted as well).
    #[serde(alias = "path")]
    pub column: String,
    /// Failed when the value is this (as text, or as a number when both are numbers).
    pub equals: Option<Text>,
    /// Failed when the value is one of these.
    #[serde(rename = "in")]
    pub any_of: Option<Vec<Text>>,
    /// `true`: failed when the value is missing or blank; `false`: when it is not.
    pub empty: Option<bool>,
}

/// A scalar of the config (string, number or boolean), kept as its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FieldSpec, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a column name or JSON path, or a table such as { column = \"Model\", map = { .. } } or { const = \"gpt-4o\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Column(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                FieldTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(FieldSpec::Table)
            }
        }
        d.deserialize_any(SpecVisitor)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// A mapped format the config cannot use; the message names the key and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFormat {
    /// The csv reader splits on one byte.
    #[error("delimiter {0:?} must be a single ASCII character")]
    Delimiter(char),
    /// A key under `fields` (or `failed_when`) is unusable.
    #[error("fields.{key}: {problem}")]
    Field {
        /// The key, such as `ts` or `failed_when`.
        key: &'static str,
        /// What is wrong and what to write instead.
        problem: String,
    },
}

fn default_delimiter() -> char {
    ','
}

fn default_true() -> bool {
    true
}

/// The units `ts = { unit = .. }` takes, with their length in milliseconds.
const UNITS: [(&str, f64); 3] = [("s", 1000.0), ("ms", 1.0), ("us", 0.001)];

/// Columns or JSON paths a mapping can read: one per field, and `failed_when`'s.
const MAX_SLOTS: usize = 17;

impl MappedFormat {
    /// Check what serde cannot (a one-byte delimiter, each field's keys fit together,
    /// the units and base times parse, JSON paths do not overlap, CSV columns exist)
    /// and build the `Mapping` to decode with.
    pub fn compile(&self) -> Result<Mapping, InvalidFormat> {
        if !self.delimiter.is_ascii() {
            return Err(InvalidFormat::Delimiter(self.delimiter));
        }
        let mut slots = Slots::default();
        let f = &self.fields;
        let mut optional =
            |key, spec: &Option<FieldSpec>| spec.as_ref().map(|s| slots.field(key, s)).transpose();
        let id = optional("id", &f.id)?;
        let resolved_model = optional("resolved_model", &f.resolved_model)?;
        let provider = optional("provider", &f.provider)?;
        let route = optional("route", &f.route)?;
        let tenant = optional("tenant", &f.tenant)?;
        let prompt_tokens = optional("prompt_tokens", &f.prompt_tokens)?;
        let completion_tokens = optional("completion_tokens", &f.completion_tokens)?;
        let cached_tokens = optional("cached_tokens", &f.cached_tokens)?;
        let cost_usd = optional("cost_usd", &f.cost_usd)?;
        let latency_ms = optional("latency_ms", &f.latency_ms)?;
        let ttft_ms = optional("ttft_ms", &f.ttft_ms)?;
        let status = optional("status", &f.status)?;
        let finish_reason = optional("finish_reason", &f.finish_reason)?;
        let error_type = optional("error_type", &f.error_type)?;
        let ts = slots.field("ts", &f.ts)?;
        let model = slots.field("model", &f.model)?;
        let failed_when = f
            .failed_when
            .as_ref()
            .map(|w| Failure::compile(w, &mut slots))
            .transpose()?;
        if matches!(ts.from, From::Const(_)) {
            return Err(field_error(
                "ts",
                "a const time puts every record at one instant: name the column that holds it",
            ));
        }
        if id
            .as_ref()
            .is_some_and(|id| matches!(id.from, From::Const(_)))
        {
            return Err(field_error(
                "id",
                "a const id makes every record a duplicate of the first: name the column that holds it, or leave id out",
            ));
        }
        let when = When::compile(&f.ts, self.ts_format.as_deref())?;
        let tree = match self.kind {
            MappedKind::Jsonl => Node::tree(&slots)?,
            MappedKind::Csv => Node::default(),
        };
        let mapping = Mapping {
            kind: self.kind,
            delimiter: self.delimiter as u8,
            hash_tenant: self.hash_tenant,
            columns: self.columns.clone(),
            sources: slots.sources,
            tree,
            when,
            fields: Fields {
                ts,
                model,
                id,
                resolved_model,
                provider,
                route,
                tenant,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                cost_usd,
                latency_ms,
                ttft_ms,
                status,
                finish_reason,
                error_type,
            },
            failed_when,
        };
        if !self.columns.is_empty() {
            for (slot, key) in mapping.sources.iter().zip(&slots.keys) {
                if !self.columns.contains(slot) {
                    return Err(field_error(
                        key,
                        format!(
                            "column {slot:?} is not one of `columns` ({}): add it there or name another",
                            self.columns.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(mapping)
    }
}

fn field_error(key: &'static str, problem: impl Into<String>) -> InvalidFormat {
    InvalidFormat::Field {
        key,
        problem: problem.into(),
    }
}

/// The columns or JSON paths a mapping reads, each once, with the first key reading it.
#[derive(Default)]
struct Slots {
    sources: Vec<String>,
    keys: Vec<&'static str>,
}

impl Slots {
    fn slot(&mut self, key: &'static str, column: &str) -> Result<usize, InvalidFormat> {
        if column.trim().is_empty() {
            return Err(field_error(key, "the column name is empty"));
        }
        if let Some(i) = self.sources.iter().position(|s| s == column) {
            return Ok(i);
        }
        self.sources.push(column.to_string());
        self.keys.push(key);
        Ok(self.sources.len() - 1)
    }

    fn field(&mut self, key: &'static str, spec: &FieldSpec) -> Result<Field, InvalidFormat> {
        let table = match spec {
            FieldSpec::Column(c) => {
                return Ok(Field {
                    from: From::Slot(self.slot(key, c)?),
                    map: FxHashMap::default(),
                    default: None,
                });
            }
            FieldSpec::Table(t) => t,
        };
        if key != "ts" && (table.relative_to.is_some() || table.unit.is_some()) {
            return Err(field_error(
                key,
                "relative_to and unit apply to ts only: remove them",
            ));
        }
        let from = match (&table.column, &table.constant) {
            (Some(c), None) => From::Slot(self.slot(key, c)?),
            (None, Some(c)) => {
                if !table.map.is_empty() || table.default.is_some() {
                    return Err(field_error(
                        key,
                        "map and default apply to a column's values, not to a const: write the value itself as the const",
                    ));
                }
                From::Const(CompactString::from(c.0.trim()))
            }
            (Some(_), Some(_)) => {
                return Err(field_error(
                    key,
                    "give a column or a const, not both (a const is the same for every record)",
                ));
            }
            (None, None) => {
                return Err(field_error(
                    key,
                    "give a column (or path) to read, or a const: { column = \"..\" } or { const = \"..\" }",
                ));
            }
        };
        Ok(Field {
            from,
            map: table
                .map
                .iter()
                .map(|(k, v)| (k.trim().to_string(), CompactString::from(v.0.trim())))
                .collect(),
            default: table
                .default
                .as_ref()
                .map(|d| CompactString::from(d.0.trim())),
        })
    }
}

/// A checked mapped format: each column or JSON path read has a slot, each field
/// where its value comes from.
#[derive(Debug)]
pub struct Mapping {
    kind: MappedKind,
    delimiter: u8,
    hash_tenant: bool,
    /// Configured CSV column names; empty when the header line names them.
    columns: Vec<String>,
    /// The column name or JSON path of each slot.
    sources: Vec<String>,
    /// JSON lines: the mapped paths as a tree of object keys.
    tree: Node,
    when: When,
    fields: Fields,
    failed_when: Option<Failure>,
}

/// Each `UsageEvent` field's source.
#[derive(Debug)]
struct Fields {
    ts: Field,
    model: Field,
    id: Option<Field>,
    resolved_model: Option<Field>,
    provider: Option<Field>,
    route: Option<Field>,
    tenant: Option<Field>,
    prompt_tokens: Option<Field>,
    completion_tokens: Option<Field>,
    cached_tokens: Option<Field>,
    cost_usd: Option<Field>,
    latency_ms: Option<Field>,
    ttft_ms: Option<Field>,
    status: Option<Field>,
    finish_reason: Option<Field>,
    error_type: Option<Field>,
}

#[derive(Debug)]
struct Field {
    from: From,
    /// Values replaced, by trimmed text.
    map: FxHashMap<String, CompactString>,
    default: Option<CompactString>,
}

#[derive(Debug)]
enum From {
    Slot(usize),
    Const(CompactString),
}

/// How `ts` becomes epoch milliseconds.
#[derive(Debug)]
enum When {
    /// RFC 3339, or epoch seconds or milliseconds told apart by magnitude.
    Auto,
    /// `ts_format`: a strftime pattern.
    Pattern(String),
    /// `unit` (and `relative_to`): a number of units after a base time.
    Offset { base_ms: i64, unit_ms: f64 },
}

impl When {
    fn compile(ts: &FieldSpec, ts_format: Option<&str>) -> Result<When, InvalidFormat> {
        let (relative_to, unit) = match ts {
            FieldSpec::Table(t) => (t.relative_to.as_deref(), t.unit.as_deref()),
            FieldSpec::Column(_) => (None, None),
        };
        if relative_to.is_none() && unit.is_none() {
            return Ok(ts_format.map_or(When::Auto, |p| When::Pattern(p.to_string())));
        }
        if ts_format.is_some() {
            return Err(field_error(
                "ts",
                "relative_to and unit read a number, ts_format reads text: use one or the other",
            ));
        }
        let unit = unit.unwrap_or("s");
        let unit_ms = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, ms)| *ms)
            .ok_or_else(|| field_error("ts", format!("unit {unit:?} is not one of s, ms, us")))?;
        let base_ms = match relative_to {
            None => 0,
            Some(t) => parse_ts_str(t).map_err(|e| {
                field_error(
                    "ts",
                    format!("relative_to {t:?} is not a time ({e}): write it as RFC 3339, such as 2023-06-01T00:00:00Z"),
                )
            })?,
        };
        Ok(When::Offset { base_ms, unit_ms })
    }
}

/// `failed_when`, checked.
#[derive(Debug)]
struct Failure {
    slot: usize,
    test: Test,
}

#[derive(Debug)]
enum Test {
    /// One of these texts, each with its value when it is a number.
    AnyOf(Vec<(String, Option<f64>)>),
    /// Missing or blank (`true`), or present (`false`).
    Empty(bool),
}

impl Failure {
    fn compile(w: &FailedWhen, slots: &mut Slots) -> Result<Failure, InvalidFormat> {
        let slot = slots.slot("failed_when", &w.column)?;
        let values = |v: &[Text]| {
            v.iter()
                .map(|t| {
                    let t = t.0.trim();
                    (t.to_string(), t.parse::<f64>().ok())
                })
                .collect()
        };
        let test = match (&w.equals, &w.any_of, w.empty) {
            (Some(v), None, None) => Test::AnyOf(values(std::slice::from_ref(v))),
            (None, Some(v), None) if !v.is_empty() => Test::AnyOf(values(v)),
            (None, Some(_), None) => {
                return Err(field_error(
                    "failed_when",
                    "`in` lists no values: name at least one",
                ));
            }
            (None, None, Some(e)) => Test::Empty(e),
            _ => {
                return Err(field_error(
                    "failed_when",
                    "give exactly one of equals, in or empty",
                ));
            }
        };
        Ok(Failure { slot, test })
    }

    fn holds(&self, vals: &[Val]) -> bool {
        match (&self.test, &vals[self.slot]) {
            (Test::Empty(e), v) => v.is_blank() == *e,
            (Test::AnyOf(_), Val::Absent) => false,
            (Test::AnyOf(any), v) => {
                let text = v.text();
                let text = text.trim();
                let number = match v {
                    Val::Num(n) => n.as_f64(),
                    _ => text.parse::<f64>().ok(),
                };
                any.iter()
                    .any(|(t, n)| t == text || (n.is_some() && *n == number))
            }
        }
    }
}

/// The mapped JSON paths as a tree: a node is a key's slot or the keys under it.
#[derive(Debug, Default)]
struct Node {
    slot: Option<usize>,
    children: Vec<(String, Node)>,
}

impl Node {
    /// The tree of every slot's dotted path; a path that runs through another's value
    /// (`usage` and `usage.in`) cannot be read and is refused.
    fn tree(slots: &Slots) -> Result<Node, InvalidFormat> {
        let mut root = Node::default();
        for (slot, (path, key)) in slots.sources.iter().zip(&slots.keys).enumerate() {
            let mut node = &mut root;
            for part in path.split('.') {
                if part.is_empty() {
                    return Err(field_error(
                        key,
                        format!("path {path:?} has an empty key: write keys joined by single dots"),
                    ));
                }
                if node.slot.is_some() {
                    break;
                }
                let i = match node.children.iter().position(|(k, _)| k == part) {
                    Some(i) => i,
                    None => {
                        node.children.push((part.to_string(), Node::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[i].1;
            }
            if node.slot.is_some() || !node.children.is_empty() {
                return Err(field_error(
                    key,
                    format!(
                        "path {path:?} overlaps another field's path (one is inside the other's value): map each field to a value, not to an object"
                    ),
                ));
            }
            node.slot = Some(slot);
        }
        Ok(root)
    }
}

impl Mapping {
    /// Whether the log is CSV or JSON lines.
    pub fn kind(&self) -> MappedKind {
        self.kind
    }

    /// Whether column names come from the first line of the file or body.
    pub(super) fn header_from_file(&self) -> bool {
        self.kind == MappedKind::Csv && self.columns.is_empty()
    }
}

/// One slot's value in a record.
#[derive(Debug, Default)]
enum Val<'a> {
    /// Not in the record, or JSON `null`.
    #[default]
    Absent,
    /// A CSV cell (trimmed) or a JSON string.
    Str(Cow<'a, str>),
    /// A JSON number.
    Num(Number),
    /// A JSON boolean, array or object, as JSON text.
    Json(String),
}

impl Val<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self {
            Val::Absent => Cow::Borrowed(""),
            Val::Str(s) => Cow::Borrowed(s),
            Val::Num(n) => Cow::Owned(n.to_string()),
            Val::Json(s) => Cow::Borrowed(s),
        }
    }

    fn is_blank(&self) -> bool {
        match self {
            Val::Absent => true,
            Val::Str(s) => s.trim().is_empty(),
            Val::Num(_) | Val::Json(_) => false,
        }
    }
}

/// Reads one source's records in a mapped format. A CSV source keeps one parser, its
/// buffers and each slot's column (from the header line or `columns`) across lines.
#[derive(Debug)]
pub(super) struct Reader {
    mapping: Arc<Mapping>,
    csv: csv_core::Reader,
    /// A CSV line's unquoted fields, back to back, and where each ends.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// How many fields the last line `split` read has.
    fields: usize,
    /// The header's trimmed names, once read: a repeated header line is skipped.
    header: Option<Vec<String>>,
    /// The CSV column of each slot.
    at: Vec<Option<usize>>,
}

impl Reader {
    pub(super) fn new(mapping: Arc<Mapping>) -> Reader {
        let csv = csv_core::ReaderBuilder::new()
            .delimiter(mapping.delimiter)
            .build();
        let mut r = Reader {
            csv,
            out: vec![0; 1024],
            ends: vec![0; 32],
            fields: 0,
            header: None,
            at: Vec::new(),
            mapping,
        };
        let columns = r.mapping.columns.clone();
        r.locate(&columns);
        r
    }

    /// Whether column names are still to come from a header line.
    pub(super) fn wants_header(&self) -> bool {
        self.mapping.header_from_file() && self.header.is_none()
    }

    /// Take `line` as the CSV header: the column names slots are read from.
    pub(super) fn set_header(&mut self, line: &[u8]) {
        if self.split(line).is_err() {
            return;
        }
        let names: Vec<String> = (0..self.fields)
            .map(|i| String::from_utf8_lossy(self.field(i)).trim().to_string())
            .collect();
        self.locate(&names);
        self.header = Some(names);
    }

    fn locate(&mut self, names: &[String]) {
        self.at = self
            .mapping
            .sources
            .iter()
            .map(|s| names.iter().position(|n| n == s))
            .collect();
    }

    pub(super) fn decode(
        &mut self,
        raw: &[u8],
        position: u64,
        ctx: &Context,
    ) -> Result<Option<Record>, Rejected> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let mut vals: [Val; MAX_SLOTS] = Default::default();
        match self.mapping.kind {
            MappedKind::Jsonl => {
                // One check of the whole line: read from a `str`, serde_json checks no
                // string again.
                let text = std::str::from_utf8(raw).map_err(|e| {
                    Rejected(format!(
                        "invalid record: not UTF-8 at byte {}: write the log as UTF-8",
                        e.valid_up_to()
                    ))
                })?;
                let mut de = serde_json::Deserializer::from_str(text);
                Walk {
                    node: &self.mapping.tree,
                    vals: &mut vals,
                }
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(Rejected::json)?;
            }
            MappedKind::Csv => {
                if self.wants_header() {
                    self.set_header(raw);
                    return Ok(None);
                }
                self.split(raw)?;
                if self.is_header() {
                    // A header line repeated after rotation or truncation.
                    return Ok(None);
                }
                for (slot, at) in self.at.iter().enumerate() {
                    if let Some(i) = *at
                        && i < self.fields
                    {
                        let cell = std::str::from_utf8(self.field(i)).map_err(|_| {
                            Rejected(format!(
                                "column {:?} is not UTF-8: save the log as UTF-8",
                                self.mapping.sources[slot]
                            ))
                        })?;
                        vals[slot] = Val::Str(Cow::Borrowed(cell.trim()));
                    }
                }
            }
        }
        self.mapping.event(&vals, raw, position, ctx).map(Some)
    }

    /// Parse one CSV line into `out` and `ends`, with the reader reset to a record's start.
    fn split(&mut self, line: &[u8]) -> Result<(), Rejected> {
        self.csv.reset();
        let (mut input, mut nout, mut nend) = (line, 0, 0);
        loop {
            let (res, nin, o, e) =
                self.csv
                    .read_record(input, &mut self.out[nout..], &mut self.ends[nend..]);
            input = &input[nin..];
            nout += o;
            nend += e;
            match res {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    let len = self.out.len();
                    self.out.resize(len * 2, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    if !input.iter().all(u8::is_ascii_whitespace) {
                        return Err(Rejected(
                            "the CSV line holds more than one record (a carriage return inside it?): quote the field"
                                .into(),
                        ));
                    }
                    self.fields = nend;
                    return Ok(());
                }
                csv_core::ReadRecordResult::End => {
                    return Err(Rejected("empty CSV line".into()));
                }
            }
        }
    }

    /// The `i`th field of the line `split` read.
    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.out[start..self.ends[i]]
    }

    /// Whether the line `split` read is the header again.
    fn is_header(&self) -> bool {
        self.header.as_ref().is_some_and(|h| {
            h.len() == self.fields
                && h.iter()
                    .enumerate()
                    .all(|(i, n)| self.field(i).trim_ascii() == n.as_bytes())
        })
    }
}

/// A field's value in one record, after `const`, `map` and `default`.
enum Got<'v> {
    Absent,
    Text(&'v str),
    Num(&'v Number),
}

impl Mapping {
    /// The event a record's slot values make. `raw` and `position` make the id of a
    /// record without one.
    fn event(
        &self,
        vals: &[Val],
        raw: &[u8],
        position: u64,
        ctx: &Context,
    ) -> Result<Record, Rejected> {
        let f = &self.fields;
        let ts_ms = self.ts(vals)?;
        let model = self
            .text(&f.model, vals)
            .ok_or_else(|| self.missing("model", &f.model))?;
        let text = |k: &Option<Field>| k.as_ref().and_then(|k| self.text(k, vals));
        let number = |name: &str, k: &Option<Field>| match k {
            Some(k) => self.number(name, k, vals),
            None => Ok(None),
        };
        let int = |name: &str, k: &Option<Field>| -> Result<Option<i64>, Rejected> {
            Ok(number(name, k)?.map(|n| n as i64))
        };
        let id = match text(&f.id) {
            Some(id) => id,
            None => {
                let h = blake3::hash(raw);
                compact_str::format_compact!("{}@{position}", &h.to_hex()[..16])
            }
        };
        let tenant = text(&f.tenant).map(|t| {
            if self.hash_tenant {
                ctx.identity.label(&t)
            } else {
                ctx.identity.alias_or(t)
            }
        });
        let cost_usd = number("cost_usd", &f.cost_usd)?;
        let mut status = int("status", &f.status)?.and_then(|s| u16::try_from(s).ok());
        let mut error_type = text(&f.error_type);
        if self.failed_when.as_ref().is_some_and(|w| w.holds(vals)) {
            // What the record says of the failure stands; a success status does not.
            status = Some(status.filter(|s| *s >= 400).unwrap_or(500));
            error_type.get_or_insert_with(|| FAILED.into());
        }
        Ok(Record::Usage(UsageEvent {
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
            latency_ms: millis(number("latency_ms", &f.latency_ms)?),
            ttft_ms: millis(number("ttft_ms", &f.ttft_ms)?),
            status,
            finish_reason: text(&f.finish_reason),
            error_type,
        }))
    }

    /// The record's time in epoch milliseconds.
    fn ts(&self, vals: &[Val]) -> Result<i64, Rejected> {
        let f = &self.fields.ts;
        Ok(match (&self.when, self.value(f, vals)) {
            (_, Got::Absent) => return Err(self.missing("ts", f)),
            (When::Offset { base_ms, unit_ms }, _) => {
                let n = self
                    .number("ts", f, vals)?
                    .ok_or_else(|| self.missing("ts", f))?;
                base_ms.saturating_add((n * unit_ms).round() as i64)
            }
            (When::Pattern(p), Got::Text(s)) => parse_ts_with(s, p)?,
            (When::Pattern(p), Got::Num(n)) => parse_ts_with(&n.to_string(), p)?,
            (When::Auto, Got::Num(n)) => epoch_to_ms(n.as_f64().unwrap_or(f64::NAN))?,
            (When::Auto, Got::Text(s)) => parse_ts_str(s)?,
        })
    }

    /// A field's value: the slot's or the const, through `map` and `default`.
    fn value<'v>(&'v self, f: &'v Field, vals: &'v [Val]) -> Got<'v> {
        let v = match &f.from {
            From::Const(c) => return Got::Text(c),
            From::Slot(i) => &vals[*i],
        };
        let got = match v {
            Val::Absent => Got::Absent,
            Val::Str(s) => Got::Text(s),
            Val::Num(n) => Got::Num(n),
            Val::Json(s) => Got::Text(s),
        };
        let default = || f.default.as_deref().map(Got::Text);
        if v.is_blank() {
            return default().unwrap_or(got);
        }
        if f.map.is_empty() {
            return got;
        }
        match f.map.get(v.text().trim()) {
            Some(m) => Got::Text(m),
            None => default().unwrap_or(got),
        }
    }

    /// A label: trimmed, blank is absent.
    fn text(&self, f: &Field, vals: &[Val]) -> Option<CompactString> {
        match self.value(f, vals) {
            Got::Absent => None,
            Got::Text(s) => non_empty(Some(s)),
            Got::Num(n) => non_empty(Some(n.to_string())),
        }
    }

    /// A number from a JSON number or a numeric text; absent or blank is `None`.
    fn number(&self, name: &str, f: &Field, vals: &[Val]) -> Result<Option<f64>, Rejected> {
        let s = match self.value(f, vals) {
            Got::Absent => return Ok(None),
            Got::Num(n) => return Ok(n.as_f64()),
            Got::Text(s) => s.trim(),
        };
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| {
                Rejected(format!(
                    "field {:?} ({name}) is not a number: {s:?}",
                    self.source(f)
                ))
            })
    }

    fn missing(&self, name: &str, f: &Field) -> Rejected {
        Rejected(format!("field {:?} ({name}) is missing", self.source(f)))
    }

    /// The column or path a field reads, for messages.
    fn source<'v>(&'v self, f: &'v Field) -> &'v str {
        match &f.from {
            From::Slot(i) => &self.sources[*i],
            From::Const(c) => c,
        }
    }
}

/// The error type of a record `failed_when` marks, unless its `error_type` field names one.
pub const FAILED: &str = "failed";

/// Walks a JSON value along the mapping's tree and keeps the values at its slots;
/// everything else is skipped unread.
struct Walk<'n, 'v, 'de> {
    node: &'n Node,
    vals: &'v mut [Val<'de>],
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.node.slot {
            Some(slot) => {
                self.vals[slot] = Val::deserialize(d)?;
                Ok(())
            }
            None => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(child) = map.next_key_seed(Key(self.node))? {
            match child {
                Some(node) => map.next_value_seed(Walk {
                    node,
                    vals: &mut *self.vals,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    // A value where the paths go on into an object holds none of them: they are missing.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// An object key, looked up among a node's children without being copied.
struct Key<'n>(&'n Node);

impl<'de, 'n> DeserializeSeed<'de> for Key<'n> {
    type Value = Option<&'n Node>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<&'n Node>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'n> Visitor<'_> for Key<'n> {
    type Value = Option<&'n Node>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<&'n Node>, E> {
        // Byte by byte: keys are short, and a memcmp call per candidate cost more (3%
        // of a replay) than the compare itself.
        let same =
            |k: &str| k.len() == key.len() && k.bytes().zip(key.bytes()).all(|(a, b)| a == b);
        Ok(self
            .0
            .children
            .iter()
            .find(|(k, _)| same(k))
            .map(|(_, n)| n))
    }
}

impl<'de> Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Val<'de>, D::Error> {
        struct ValVisitor;
        impl<'de> Visitor<'de> for ValVisitor {
            type Value = Val<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
                Ok(Val::Num(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
                Ok(Val::Num(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'de>, E> {
                Ok(Number::from_f64(v).map_or(Val::Absent, Val::Num))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val<'de>, E> {
                Ok(Val::Json(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
                Ok(Val::Absent)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Val<'de>, A::Error> {
                serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(|v| Val::Json(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Val<'de>, A::Error> {
                serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|v| Val::Json(v.to_string()))
            }
        }
        d.deserialize_any(ValVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_support::*;
    use super::super::{Decoder, Format, Record};
    use super::*;

    fn compile(toml_text: &str) -> Result<Mapping, InvalidFormat> {
        toml::from_str::<MappedFormat>(toml_text).unwrap().compile()
    }

    fn format(toml_text: &str) -> Format {
        Format::Mapped(Arc::new(compile(toml_text).unwrap()))
    }

    /// A CSV format with a header line and these `[fields]`.
    fn csv(fields: &str) -> Format {
        format(&format!("kind = \"csv\"\n[fields]\n{fields}"))
    }

    fn router_csv() -> Format {
        csv("ts = \"time\"\nmodel = \"model\"\ncost_usd = \"cost\"")
    }

    fn event(d: &mut Decoder, line: &str) -> UsageEvent {
        match d.decode(line.as_bytes(), 7, NOW) {
            Ok(Some(Record::Usage(e))) => e,
            other => panic!("expected an event from {line:?}, got {other:?}"),
        }
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
        // A repeated header line is skipped, not rejected, spaces and all.
        assert_eq!(d.decode(b"time,model,cost", 40, NOW), Ok(None));
        assert_eq!(d.decode(b"time, model ,cost", 41, NOW), Ok(None));
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

    /// One reader reads every line of a source: quoting, doubled quotes and the
    /// delimiter inside quotes survive from line to line, and a bad line between good
    /// ones is refused alone.
    #[test]
    fn one_reader_keeps_quoting_and_refuses_bad_lines_alone() {
        let mut d = Decoder::new(
            csv("ts = \"time\"\nmodel = \"model\"\nroute = \"route\""),
            ctx(),
        );
        assert_eq!(d.decode(b"time,route,model", 0, NOW), Ok(None));
        let e = event(&mut d, r#"1780315200,"a,b","gpt-4o""#);
        assert_eq!(
            (e.route.as_deref(), e.model.as_str()),
            (Some("a,b"), "gpt-4o")
        );
        let e = event(&mut d, r#"1780315201,"say ""hi""",m"#);
        assert_eq!(e.route.as_deref(), Some(r#"say "hi""#));
        let long = "x".repeat(5000);
        let e = event(&mut d, &format!("1780315202,{long},m"));
        assert_eq!(e.route.as_deref(), Some(long.as_str()));
        let err = d
            .decode(b"1780315203,r,m\r1780315204,r,m", 9, NOW)
            .unwrap_err();
        assert!(err.0.contains("more than one record"), "{err}");
        let err = d.decode(b"1780315203,r\xff,m", 10, NOW).unwrap_err();
        assert!(err.0.contains("not UTF-8"), "{err}");
        let e = event(&mut d, "1780315205,,m");
        assert_eq!((e.route, e.ts_ms), (None, 1_780_315_205_000));
        // Fewer cells than columns: the missing ones are absent.
        let err = d.decode(b"1780315206", 11, NOW).unwrap_err();
        assert!(err.0.contains("\"model\" (model) is missing"), "{err}");
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
provider = "meta.provider"
route = "meta.tags"
"#,
        );
        let e = usage(
            f.clone(),
            r#"{"at":1780315200,"code":429,"request":{"id":"r1","model":"m","x":[1,{"y":2}]},"usage":{"in":5,"out":"7"},"meta":{"provider":true,"tags":["a"]}}"#,
        );
        assert_eq!(e.id, "r1");
        assert_eq!((e.prompt_tokens, e.completion_tokens), (5, 7));
        assert_eq!(e.status, Some(429));
        assert!(e.is_error());
        assert_eq!(e.provider.as_deref(), Some("true"));
        assert_eq!(e.route.as_deref(), Some(r#"["a"]"#));
        // Escaped keys and values are read; a path through a non-object is missing.
        let e = usage(
            f.clone(),
            r#"{"a\u0074":"2026-06-01T12:00:00Z","request":{"model":"g\u00e9"},"usage":5}"#,
        );
        assert_eq!((e.model.as_str(), e.prompt_tokens), ("gé", 0));
        for (raw, want) in [
            (r#"{"at":1780315200}"#, "(model) is missing"),
            (r#"[1,2]"#, "(ts) is missing"),
            (
                r#"{"at":1780315200,"request":{"model":"m"}} x"#,
                "invalid record",
            ),
            (
                r#"{"at":1780315200,"request":{"model":"m""#,
                "invalid record",
            ),
        ] {
            let err = decode(f.clone(), raw).unwrap_err();
            assert!(err.0.contains(want), "{raw}: {err}");
        }
    }

    #[test]
    fn missing_required_field_is_named() {
        let mut d = Decoder::new(router_csv(), ctx());
        d.set_header(b"time,model,cost");
        let err = d.decode(b"2026-06-01T12:00:00Z,,0.1", 0, NOW).unwrap_err();
        assert!(err.0.contains("(model) is missing"), "{err}");
    }

    #[test]
    fn const_map_and_default() {
        let f = csv(r#"
ts = "t"
model = { column = "m", map = { ChatGPT = "gpt-3.5-turbo", "GPT-4" = "gpt-4" } }
provider = { const = "azure" }
route = { column = "r", map = { "Conversation log" = "conversation" }, default = "other" }
finish_reason = { column = "f", default = "stop" }
status = { column = "s", map = { ok = 200, bad = "503" } }
"#);
        let mut d = Decoder::new(f, ctx());
        assert_eq!(d.decode(b"t,m,r,f,s", 0, NOW), Ok(None));
        let e = event(&mut d, "1780315200, ChatGPT ,Conversation log,,ok");
        assert_eq!(e.model, "gpt-3.5-turbo");
        assert_eq!(e.provider.as_deref(), Some("azure"));
        assert_eq!(e.route.as_deref(), Some("conversation"));
        assert_eq!(e.finish_reason.as_deref(), Some("stop"));
        assert_eq!(e.status, Some(200));
        // Unmapped values pass through unless a default names what they become.
        let e = event(&mut d, "1780315200,claude-x,API log,length,bad");
        assert_eq!(e.model, "claude-x");
        assert_eq!(e.route.as_deref(), Some("other"));
        assert_eq!(e.finish_reason.as_deref(), Some("length"));
        assert_eq!(e.status, Some(503));
        assert_eq!(
            event(&mut d, "1780315200,GPT-4,,,").route.as_deref(),
            Some("other")
        );
    }

    #[test]
    fn timestamps_relative_to_a_base_in_a_unit() {
        let base = 1_685_577_600_000; // 2023-06-01T00:00:00Z
        for (unit, value, want) in [
            ("s", "90", base + 90_000),
            ("s", "1.2345", base + 1_235),
            ("ms", "1500.4", base + 1_500),
            ("us", "2500", base + 3),
            ("s", "-1", base - 1_000),
        ] {
            let f = format(&format!(
                r#"
kind = "jsonl"
[fields]
ts = {{ path = "t", relative_to = "2023-06-01T00:00:00Z", unit = "{unit}" }}
model = {{ const = "gpt-4o" }}
"#
            ));
            assert_eq!(usage(f.clone(), &format!(r#"{{"t":{value}}}"#)).ts_ms, want);
            assert_eq!(
                usage(f.clone(), &format!(r#"{{"t":"{value}"}}"#)).ts_ms,
                want
            );
            let err = decode(f, r#"{"t":"soon"}"#).unwrap_err();
            assert!(err.0.contains(r#"field "t" (ts) is not a number"#), "{err}");
        }
        // A unit alone reads epoch time in that unit.
        let f = format(
            "kind = \"jsonl\"\n[fields]\nts = { column = \"t\", unit = \"us\" }\nmodel = \"m\"",
        );
        assert_eq!(
            usage(f, r#"{"t":1780315200123456,"m":"x"}"#).ts_ms,
            1_780_315_200_123
        );
    }

    #[test]
    fn failed_when_marks_failures() {
        let with = |test: &str| {
            let mut d = Decoder::new(
                csv(&format!(
                    r#"
ts = "t"
model = "m"
status = "s"
error_type = "e"
failed_when = {{ column = "out", {test} }}
"#
                )),
                ctx(),
            );
            assert_eq!(d.decode(b"t,m,out,s,e", 0, NOW), Ok(None));
            d
        };
        let mut d = with(r#"equals = "0""#);
        let e = event(&mut d, "1780315200,m,0,,");
        assert_eq!(
            (e.status, e.error_type.as_deref()),
            (Some(500), Some(FAILED))
        );
        assert!(e.is_error());
        let e = event(&mut d, "1780315200,m,0.0,429,rate_limited");
        assert_eq!(
            (e.status, e.error_type.as_deref()),
            (Some(429), Some("rate_limited"))
        );
        let e = event(&mut d, "1780315200,m,0,200,");
        assert_eq!(e.status, Some(500), "a success status does not stand");
        let e = event(&mut d, "1780315200,m,12,200,");
        assert_eq!((e.status, e.error_type), (Some(200), None));
        assert!(!event(&mut d, "1780315200,m,,,").is_error());

        let mut d = with(r#"in = ["x", 7]"#);
        assert!(event(&mut d, "1780315200,m,7,,").is_error());
        assert!(event(&mut d, "1780315200,m, x ,,").is_error());
        assert!(!event(&mut d, "1780315200,m,y,,").is_error());

        let mut d = with("empty = true");
        assert!(event(&mut d, "1780315200,m,,,").is_error());
        assert!(!event(&mut d, "1780315200,m,3,,").is_error());
        let mut d = with("empty = false");
        assert!(!event(&mut d, "1780315200,m,,,").is_error());
        assert!(event(&mut d, "1780315200,m,boom,,").is_error());
    }

    #[test]
    fn mistakes_are_named_with_their_key() {
        let fmt = |fields: &str, extra: &str| {
            compile(&format!("kind = \"jsonl\"\n{extra}\n[fields]\n{fields}\n"))
                .unwrap_err()
                .to_string()
        };
        let cases = [
            (
                r#"ts = { column = "t", unit = "min" }
model = "m""#,
                "",
                r#"fields.ts: unit "min" is not one of s, ms, us"#,
            ),
            (
                r#"ts = { column = "t", relative_to = "June" }
model = "m""#,
                "",
                r#"fields.ts: relative_to "June" is not a time"#,
            ),
            (
                r#"ts = { column = "t", unit = "s" }
model = "m""#,
                r#"ts_format = "%s""#,
                "fields.ts: relative_to and unit read a number",
            ),
            (
                r#"ts = "t"
model = { column = "m", unit = "s" }"#,
                "",
                "fields.model: relative_to and unit apply to ts only",
            ),
            (
                r#"ts = "t"
model = { column = "m", const = "x" }"#,
                "",
                "fields.model: give a column or a const, not both",
            ),
            (
                r#"ts = "t"
model = { const = "x", default = "y" }"#,
                "",
                "fields.model: map and default apply to a column's values",
            ),
            (
                r#"ts = "t"
model = { map = { a = "b" } }"#,
                "",
                "fields.model: give a column (or path) to read, or a const",
            ),
            (
                r#"ts = { const = "2026-06-01T00:00:00Z" }
model = "m""#,
                "",
                "fields.ts: a const time",
            ),
            (
                r#"ts = "t"
model = "m"
id = { const = "req" }"#,
                "",
                "fields.id: a const id makes every record a duplicate",
            ),
            (
                r#"ts = "t"
model = "m"
failed_when = { column = "x", equals = "0", empty = true }"#,
                "",
                "fields.failed_when: give exactly one of equals, in or empty",
            ),
            (
                r#"ts = "t"
model = "m"
failed_when = { column = "x", in = [] }"#,
                "",
                "fields.failed_when: `in` lists no values",
            ),
            (
                r#"ts = "usage"
model = "usage.model""#,
                "",
                "fields.model: path \"usage.model\" overlaps another field's path",
            ),
            (
                r#"ts = "t"
model = "a..b""#,
                "",
                "fields.model: path \"a..b\" has an empty key",
            ),
            (
                r#"ts = "t"
model = "  ""#,
                "",
                "fields.model: the column name is empty",
            ),
        ];
        for (fields, extra, want) in cases {
            let err = fmt(fields, extra);
            assert!(err.starts_with(want), "{fields}\n-> {err}");
        }
        let err = compile(
            r#"
kind = "csv"
columns = ["t", "m"]
[fields]
ts = "t"
model = "m"
route = "Route"
"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"fields.route: column "Route" is not one of `columns` (t, m): add it there or name another"#
        );
        let unknown = toml::from_str::<MappedFormat>(
            "kind = \"csv\"\n[fields]\nts = { column = \"t\", units = \"s\" }\nmodel = \"m\"",
        )
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `units`"),
            "{unknown}"
        );
    }
}
