//! Property tests for every adapter, through the library's public API: whatever bytes
//! arrive, decoding never panics and either yields a record or a dead letter with a
//! reason; generated valid records decode to the values they were generated from; and
//! the native fast path (flat scanner) reads a line exactly as the serde path does.
//!
//! The crate-private halves (flat scanner vs serde_json, native fast path vs serde on
//! the raw record) are the `props` modules in src/adapters/flat.rs and native.rs.
//!
//! Cases per property: 256, or `PROPTEST_CASES` when set (docs/sources.md, "Testing the
//! adapters", shows a long campaign).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::DateTime;
use driftwarden::adapters::body::split;
use driftwarden::adapters::changes::parse_change;
use driftwarden::adapters::timestamp::{epoch_to_ms, parse_ts_str};
use driftwarden::adapters::{Context, Decoder, Format, LogRow, MappedFormat, Record, Rejected};
use driftwarden::domain::{CostSource, EvalScore, UsageEvent};
use driftwarden::identity::Identity;
use driftwarden::pricing::PriceTable;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// 2026-06-02T00:00:00Z: "now" for every decode, after every generated timestamp.
const NOW: i64 = 1_780_358_400_000;
/// 2001-09-09: the earliest timestamp adapters accept (epoch ms 1e12).
const MIN_TS: i64 = 1_000_000_000_000;
const MAX_TOKENS: u64 = 1_000_000_000;
const QUOTA_PER_UNIT: f64 = 500_000.0;

/// 256 cases unless `PROPTEST_CASES` asks for more (a long campaign) or fewer, and
/// failures persisted beside the other regressions (cargo runs integration tests from
/// the package root, so the relative path lands in proptest-regressions/).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/adapters_props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

fn ctx() -> Arc<Context> {
    let pricing = PriceTable::parse(
        r#"
[[price]]
model = "gpt-4o"
effective_from = "2024-01-01"
input_per_1m = 2.5
output_per_1m = 10.0
cached_input_per_1m = 1.25
"#,
        "props",
    )
    .unwrap();
    Arc::new(Context {
        pricing: Arc::new(pricing),
        identity: Arc::new(Identity::new(
            [7; 32],
            HashMap::from([("alias-me".to_string(), "team-alias".to_string())]),
        )),
        quota_per_unit: QUOTA_PER_UNIT,
        max_future_ms: 15 * 60 * 1000,
    })
}

fn identity() -> Identity {
    Identity::new(
        [7; 32],
        HashMap::from([("alias-me".to_string(), "team-alias".to_string())]),
    )
}

fn mapped(toml_text: &str) -> Format {
    let m: MappedFormat = toml::from_str(toml_text).unwrap();
    Format::Mapped(Arc::new(m.compile().unwrap()))
}

const MAPPED_JSONL: &str = r#"
kind = "jsonl"
[fields]
id = "req.id"
ts = "at"
model = "req.model"
resolved_model = "req.resolved"
provider = "provider"
route = "route"
tenant = "who"
prompt_tokens = "usage.in"
completion_tokens = "usage.out"
cached_tokens = "usage.cached"
cost_usd = "cost"
latency_ms = "ms"
status = "code"
finish_reason = "finish"
error_type = "err"
"#;

/// Column names configured, `;`-delimited: no header line.
const MAPPED_CSV: &str = r#"
kind = "csv"
delimiter = ";"
columns = ["at", "model", "id", "in", "out", "cost", "code", "who", "route"]
[fields]
ts = "at"
model = "model"
id = "id"
prompt_tokens = "in"
completion_tokens = "out"
cost_usd = "cost"
status = "code"
tenant = "who"
route = "route"
"#;

/// Column names from the file's first line.
const MAPPED_CSV_HEADER: &str = r#"
kind = "csv"
[fields]
ts = "time"
model = "model"
cost_usd = "cost"
"#;

/// Every format a line can be decoded as.
fn all_formats() -> Vec<(&'static str, Format)> {
    vec![
        ("native", Format::Native),
        ("newapi", Format::NewApi),
        ("oneapi", Format::OneApi),
        ("litellm", Format::LiteLlm),
        ("evals", Format::Evals),
        ("mapped-jsonl", mapped(MAPPED_JSONL)),
        ("mapped-csv", mapped(MAPPED_CSV)),
        ("mapped-csv-header", mapped(MAPPED_CSV_HEADER)),
    ]
}

fn decode(format: &Format, raw: &[u8]) -> Result<Option<Record>, Rejected> {
    Decoder::new(format.clone(), ctx()).decode(raw, 0, NOW)
}

/// The dead-letter contract: a refusal always says why.
fn assert_total(name: &str, raw: &[u8], r: &Result<Option<Record>, Rejected>) {
    if let Err(Rejected(reason)) = r {
        assert!(
            !reason.trim().is_empty(),
            "{name}: empty rejection reason for {:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

fn usage(r: Result<Option<Record>, Rejected>, raw: &str) -> UsageEvent {
    match r {
        Ok(Some(Record::Usage(e))) => e,
        other => panic!("expected a usage event from {raw}\ngot {other:?}"),
    }
}

/// `non_empty`'s contract as the docs state it: trimmed, and blank means absent.
fn label(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------
// JSON text with control over how it is written: whitespace, escapes, key order,
// duplicate keys and raw (possibly invalid) fragments.

/// A JSON value as written. `Num` and `Raw` are text, so a number can be spelled any
/// way (`1E+2`, `-0`, `1e400`) and `Raw` can be anything at all (`NaN`, a bare control
/// character in a string).
#[derive(Clone, Debug, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
    Raw(String),
}

fn num(n: impl ToString) -> J {
    J::Num(n.to_string())
}

fn s(v: &str) -> J {
    J::Str(v.to_string())
}

/// Optional fields: absent, explicitly `null`, or present.
#[derive(Clone, Debug)]
enum Opt<T> {
    Absent,
    Null,
    Val(T),
}

impl<T> Opt<T> {
    fn get(&self) -> Option<&T> {
        match self {
            Opt::Val(v) => Some(v),
            _ => None,
        }
    }
}

fn opt<T: std::fmt::Debug + Clone>(
    inner: impl Strategy<Value = T>,
) -> impl Strategy<Value = Opt<T>> {
    prop_oneof![
        1 => Just(Opt::Absent),
        1 => Just(Opt::Null),
        3 => inner.prop_map(Opt::Val),
    ]
}

/// Push `key: value` unless absent.
fn put<T>(fields: &mut Vec<(String, J)>, key: &str, v: &Opt<T>, f: impl FnOnce(&T) -> J) {
    match v {
        Opt::Absent => {}
        Opt::Null => fields.push((key.into(), J::Null)),
        Opt::Val(v) => fields.push((key.into(), f(v))),
    }
}

/// How to write a record: `escapes` 0 never escapes what need not be, 1 sometimes,
/// 2 always (`\uXXXX`, surrogate pairs past the BMP); `ws` 0 compact, else some
/// whitespace between tokens; `shuffle` reorders the keys. `seed` drives the choices.
#[derive(Clone, Copy, Debug)]
struct Style {
    escapes: u8,
    ws: bool,
    shuffle: bool,
    seed: u64,
}

fn style() -> impl Strategy<Value = Style> {
    (0u8..3, any::<bool>(), any::<bool>(), any::<u64>()).prop_map(|(escapes, ws, shuffle, seed)| {
        Style {
            escapes,
            ws,
            shuffle,
            seed: seed | 1,
        }
    })
}

/// A compact plain style: what most writers produce, and what the fast path reads.
const PLAIN: Style = Style {
    escapes: 0,
    ws: false,
    shuffle: false,
    seed: 1,
};

struct Writer {
    style: Style,
    state: u64,
    out: String,
}

impl Writer {
    fn coin(&mut self, one_in: u64) -> bool {
        // xorshift64: deterministic from the seed, so a failing case replays.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % one_in == 0
    }

    fn ws(&mut self) {
        if self.style.ws && self.coin(3) {
            let w = [" ", "\t", "\n", "\r\n", "   "][(self.state >> 8) as usize % 5];
            self.out.push_str(w);
        }
    }

    fn string(&mut self, v: &str) {
        self.out.push('"');
        for c in v.chars() {
            let escape = match self.style.escapes {
                0 => false,
                1 => self.coin(4),
                _ => true,
            };
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' if !escape => self.out.push_str("\\n"),
                '\t' if !escape => self.out.push_str("\\t"),
                '\r' if !escape => self.out.push_str("\\r"),
                '\u{8}' if !escape => self.out.push_str("\\b"),
                '\u{c}' if !escape => self.out.push_str("\\f"),
                '/' if escape => self.out.push_str("\\/"),
                c if escape || (c as u32) < 0x20 => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        // Upper or lower case hex: both are JSON.
                        if self.coin(2) {
                            self.out.push_str(&format!("\\u{u:04x}"));
                        } else {
                            self.out.push_str(&format!("\\u{u:04X}"));
                        }
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn value(&mut self, j: &J) {
        match j {
            J::Null => self.out.push_str("null"),
            J::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) | J::Raw(n) => self.out.push_str(n),
            J::Str(v) => self.string(v),
            J::Arr(items) => {
                self.out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(',');
                    }
                    self.ws();
                    self.value(v);
                }
                self.ws();
                self.out.push(']');
            }
            J::Obj(fields) => {
                let mut order: Vec<usize> = (0..fields.len()).collect();
                if self.style.shuffle {
                    for i in (1..order.len()).rev() {
                        self.coin(1);
                        order.swap(i, (self.state % (i as u64 + 1)) as usize);
                    }
                }
                self.out.push('{');
                for (n, &i) in order.iter().enumerate() {
                    if n > 0 {
                        self.ws();
                        self.out.push(',');
                    }
                    self.ws();
                    self.string(&fields[i].0);
                    self.ws();
                    self.out.push(':');
                    self.ws();
                    self.value(&fields[i].1);
                }
                self.ws();
                self.out.push('}');
            }
        }
    }
}

fn render(j: &J, style: Style) -> String {
    let mut w = Writer {
        style,
        state: style.seed,
        out: String::new(),
    };
    w.ws();
    w.value(j);
    w.ws();
    w.out
}

/// Strings as gateways should not send but might: any Unicode, control characters,
/// blanks, and a few plausible labels.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9._/-]{0,15}",
        2 => any::<String>(),
        1 => "[ \t\u{a0}\u{3000}]{0,3}[a-zé ü\u{1F600}\u{7f}\u{1}-\u{1f}]{1,8}[ \t\n]{0,2}",
        1 => Just(String::new()),
    ]
}

/// A label that is not blank once trimmed (for required string fields).
fn present() -> impl Strategy<Value = String> {
    text().prop_filter("not blank", |s| !s.trim().is_empty())
}

/// Numbers in every JSON spelling, including ones out of every type's range.
fn any_number() -> impl Strategy<Value = J> {
    prop_oneof![
        any::<i64>().prop_map(num),
        any::<u64>().prop_map(num),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| num(format!("{f:e}"))),
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?".prop_map(J::Num),
        prop::sample::select(vec![
            "-0",
            "-0.0",
            "0e0",
            "1E+2",
            "1e400",
            "-1e400",
            "1e-400",
            "4.9e-324",
            "1.7976931348623157e308",
            "18446744073709551616",
            "-9223372036854775809",
            "9223372036854775807",
            "99999999999999999999999999",
            "0.30000000000000004",
        ])
        .prop_map(num),
    ]
}

/// Valid JSON of any shape: the wrong type for most fields, and nested garbage.
fn junk() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(num),
        decimal().prop_map(|d| J::Num(d.0)),
        text().prop_map(J::Str),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec(("[a-z_]{0,6}", inner), 0..4).prop_map(J::Obj),
        ]
    })
}

/// Values of the wrong type, numbers out of every range, NaN-like spellings (not
/// JSON), bare control characters in strings, and nested garbage.
fn weird() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        junk(),
        any_number(),
        prop::sample::select(vec![
            "NaN",
            "Infinity",
            "-Infinity",
            "nan",
            "+1",
            "01",
            ".5",
            "1.",
            "tru",
            "nul"
        ])
        .prop_map(|r| J::Raw(r.into())),
        prop::sample::select(vec![
            "NaN",
            "inf",
            "-1",
            "1e400",
            "",
            " ",
            "2026-13-45T99:00:00Z"
        ])
        .prop_map(s),
        // A raw control character inside a string: invalid JSON.
        "[a-z]{0,3}[\u{0}-\u{1f}][a-z]{0,3}".prop_map(|v| J::Raw(format!("\"{v}\""))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec(("[a-z_]{0,6}", inner), 0..4).prop_map(J::Obj),
        ]
    })
}

/// A structural change to a valid record.
#[derive(Clone, Debug)]
enum Mutation {
    /// Drop the field at this index (modulo the field count).
    Drop(usize),
    /// Give the field another value, usually of the wrong type.
    Retype(usize, J),
    /// Repeat the field, with the same or another value.
    Dup(usize, Option<J>),
    /// Add an unknown key holding garbage.
    Extra(String, J),
    /// Cut the written line to this many bytes (modulo its length).
    Truncate(usize),
    /// Overwrite one byte (possibly breaking UTF-8).
    Byte(usize, u8),
    /// Insert bytes somewhere.
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Drop),
        (any::<usize>(), weird()).prop_map(|(i, j)| Mutation::Retype(i, j)),
        (any::<usize>(), prop::option::of(weird())).prop_map(|(i, j)| Mutation::Dup(i, j)),
        ("[a-z_~é]{0,8}", weird()).prop_map(|(k, j)| Mutation::Extra(k, j)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

/// What a mutation did, for the properties that can say more than "no panic".
#[derive(Debug, PartialEq)]
enum Damage {
    /// This key is gone.
    Dropped(String),
    /// This key now appears twice.
    Duplicated(String),
    /// The line is a proper prefix of a valid record (and not blank).
    Truncated,
    Other,
}

fn apply(fields: &[(String, J)], m: &Mutation, style: Style) -> (Vec<u8>, Damage) {
    let mut fields = fields.to_vec();
    let n = fields.len().max(1);
    let mut damage = Damage::Other;
    match m {
        Mutation::Drop(i) if !fields.is_empty() => {
            damage = Damage::Dropped(fields.remove(i % n).0);
        }
        Mutation::Retype(i, j) if !fields.is_empty() => fields[i % n].1 = j.clone(),
        Mutation::Dup(i, j) if !fields.is_empty() => {
            let (k, v) = fields[i % n].clone();
            damage = Damage::Duplicated(k.clone());
            fields.push((k, j.clone().unwrap_or(v)));
        }
        Mutation::Extra(k, j) => fields.insert(0, (k.clone(), j.clone())),
        _ => {}
    }
    let mut bytes = render(&J::Obj(fields), style).into_bytes();
    match m {
        Mutation::Truncate(i) => {
            let full = bytes.trim_ascii().len();
            bytes.truncate(i % bytes.len());
            if !bytes.trim_ascii().is_empty() && bytes.trim_ascii().len() < full {
                damage = Damage::Truncated;
            }
        }
        Mutation::Byte(i, b) => {
            let i = i % bytes.len();
            bytes[i] = *b;
        }
        Mutation::Insert(i, b) => {
            let i = i % (bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
        }
        _ => {}
    }
    (bytes, damage)
}

/// A damaged record decoded as `format`: never a panic, a reason when refused, and
/// for formats read into a serde struct, a dropped `required` key, a repeated `known`
/// key or a truncated line is a dead letter, never a record.
fn assert_damage_handled(
    name: &str,
    format: &Format,
    raw: &[u8],
    damage: &Damage,
    required: &[&str],
    known: &[&str],
) {
    let r = decode(format, raw);
    assert_total(name, raw, &r);
    let must_reject = match damage {
        Damage::Dropped(k) => required.contains(&k.as_str()),
        Damage::Duplicated(k) => known.contains(&k.as_str()),
        Damage::Truncated => true,
        Damage::Other => false,
    };
    if must_reject {
        assert!(
            r.is_err(),
            "{name}: {damage:?} accepted: {:?}\n-> {r:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

// ---------------------------------------------------------------------------------
// Timestamps.

/// A timestamp in one of the spellings gateways use, and the epoch ms it means.
fn timestamp() -> impl Strategy<Value = (J, i64)> {
    (MIN_TS..=NOW, 0u8..9).prop_map(|(ms, form)| {
        let t = DateTime::from_timestamp_millis(ms).unwrap();
        let secs = ms.div_euclid(1000);
        match form {
            0 => (num(ms), ms),
            1 => (num(secs), secs * 1000),
            2 => (num(format!("{secs}.{:03}", ms % 1000)), ms),
            3 => (J::Str(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()), ms),
            4 => {
                let local = t.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap());
                (
                    J::Str(local.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()),
                    ms,
                )
            }
            5 => (J::Str(t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()), ms),
            6 => (J::Str(ms.to_string()), ms),
            7 => (
                J::Str(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                secs * 1000,
            ),
            // 13 significant digits and a zero net exponent: exact in every parser.
            _ => {
                let d = ms.to_string();
                (num(format!("{}.{}e{}", &d[..1], &d[1..], d.len() - 1)), ms)
            }
        }
    })
}

/// A non-negative decimal as writers spell it (`0.00267`, `267e-5`, `2.67E-3`) and its
/// value. Nine significant digits and at most 12 decimals: exactly representable as
/// the nearest double by any correct parser, so the expected value is unambiguous.
fn decimal() -> impl Strategy<Value = (String, f64)> {
    (0u64..1_000_000_000, 0u32..=12, 0u8..3).prop_map(|(m, scale, form)| {
        let text = match form {
            0 if scale == 0 => m.to_string(),
            0 => {
                let d = format!("{m:0>width$}", width = scale as usize + 1);
                let (int, frac) = d.split_at(d.len() - scale as usize);
                format!("{int}.{frac}")
            }
            1 => format!("{m}e-{scale}"),
            _ => format!("{m}E-{scale}"),
        };
        let v = text.parse().unwrap();
        (text, v)
    })
}

/// A duration in ms as written (`840`, `840.5`), in or out of the 0..=1 day range.
fn duration() -> impl Strategy<Value = (String, Option<u64>)> {
    (0u64..100_000_000, any::<bool>()).prop_map(|(ms, half)| {
        let text = if half {
            format!("{ms}.5")
        } else {
            ms.to_string()
        };
        let v: f64 = text.parse().unwrap();
        let want = (v <= 86_400_000.0).then(|| v.round() as u64);
        (text, want)
    })
}

// ---------------------------------------------------------------------------------
// Native.

#[derive(Clone, Debug)]
struct NativeGen {
    id: String,
    ts: (J, i64),
    model: String,
    resolved_model: Opt<String>,
    provider: Opt<String>,
    route: Opt<String>,
    tenant: Opt<String>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: Opt<u64>,
    cost_usd: Opt<(String, f64)>,
    latency_ms: Opt<(String, Option<u64>)>,
    ttft_ms: Opt<(String, Option<u64>)>,
    status: Opt<u16>,
    finish_reason: Opt<String>,
    error_type: Opt<String>,
}

fn native_gen() -> impl Strategy<Value = NativeGen> {
    let labels = (
        opt(text()),
        opt(text()),
        opt(text()),
        opt(prop_oneof![Just("alias-me".to_string()), text()]),
        opt(text()),
        opt(text()),
    );
    let numbers = (
        0..=MAX_TOKENS,
        0..=MAX_TOKENS,
        opt(0..=MAX_TOKENS),
        opt(decimal()),
        opt(duration()),
        opt(duration()),
        opt(any::<u16>()),
    );
    (
        present(),
        timestamp(),
        prop_oneof![Just("gpt-4o".to_string()), present()],
        labels,
        numbers,
    )
        .prop_map(|(id, ts, model, l, n)| NativeGen {
            id,
            ts,
            model,
            resolved_model: l.0,
            provider: l.1,
            route: l.2,
            tenant: l.3,
            finish_reason: l.4,
            error_type: l.5,
            prompt_tokens: n.0,
            completion_tokens: n.1,
            cached_tokens: n.2,
            cost_usd: n.3,
            latency_ms: n.4,
            ttft_ms: n.5,
            status: n.6,
        })
}

const NATIVE_REQUIRED: [&str; 5] = ["id", "ts", "model", "prompt_tokens", "completion_tokens"];
const NATIVE_KNOWN: [&str; 16] = [
    "id",
    "ts",
    "model",
    "resolved_model",
    "provider",
    "route",
    "tenant",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "status",
    "finish_reason",
    "error_type",
];

impl NativeGen {
    fn fields(&self) -> Vec<(String, J)> {
        let mut f = vec![
            ("id".into(), s(&self.id)),
            ("ts".into(), self.ts.0.clone()),
            ("model".into(), s(&self.model)),
        ];
        put(&mut f, "resolved_model", &self.resolved_model, |v| s(v));
        put(&mut f, "provider", &self.provider, |v| s(v));
        put(&mut f, "route", &self.route, |v| s(v));
        put(&mut f, "tenant", &self.tenant, |v| s(v));
        f.push(("prompt_tokens".into(), num(self.prompt_tokens)));
        f.push(("completion_tokens".into(), num(self.completion_tokens)));
        put(&mut f, "cached_tokens", &self.cached_tokens, |v| num(v));
        put(&mut f, "cost_usd", &self.cost_usd, |v| num(&v.0));
        put(&mut f, "latency_ms", &self.latency_ms, |v| num(&v.0));
        put(&mut f, "ttft_ms", &self.ttft_ms, |v| num(&v.0));
        put(&mut f, "status", &self.status, |v| num(v));
        put(&mut f, "finish_reason", &self.finish_reason, |v| s(v));
        put(&mut f, "error_type", &self.error_type, |v| s(v));
        f
    }

    fn check(&self, e: &UsageEvent) {
        let str_opt = |o: &Opt<String>| label(o.get().map(String::as_str));
        assert_eq!(e.id, self.id);
        assert_eq!(e.ts_ms, self.ts.1);
        assert_eq!(e.model, self.model);
        assert_eq!(
            e.resolved_model.as_deref().map(str::to_string),
            str_opt(&self.resolved_model)
        );
        assert_eq!(
            e.provider.as_deref().map(str::to_string),
            str_opt(&self.provider)
        );
        assert_eq!(e.route.as_deref().map(str::to_string), str_opt(&self.route));
        let tenant = str_opt(&self.tenant).map(|t| identity().alias_or(t.into()).to_string());
        assert_eq!(e.tenant.as_deref().map(str::to_string), tenant);
        assert_eq!(e.prompt_tokens, self.prompt_tokens);
        assert_eq!(e.completion_tokens, self.completion_tokens);
        assert_eq!(
            e.cached_tokens,
            self.cached_tokens.get().copied().unwrap_or(0)
        );
        match self.cost_usd.get() {
            Some((_, c)) => {
                assert_eq!(e.cost_usd, Some(*c));
                assert_eq!(e.cost_source, CostSource::Gateway);
            }
            None => assert_ne!(e.cost_source, CostSource::Gateway),
        }
        assert_eq!(e.latency_ms, self.latency_ms.get().and_then(|d| d.1));
        assert_eq!(e.ttft_ms, self.ttft_ms.get().and_then(|d| d.1));
        assert_eq!(e.status, self.status.get().copied());
        assert_eq!(
            e.finish_reason.as_deref().map(str::to_string),
            str_opt(&self.finish_reason)
        );
        assert_eq!(
            e.error_type.as_deref().map(str::to_string),
            str_opt(&self.error_type)
        );
    }
}

/// The same line with an unknown key holding an array first: the flat scanner declines
/// nested values, so this is the serde path's reading of the line.
fn via_serde(raw: &[u8]) -> Option<Vec<u8>> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace())?;
    (raw[start] == b'{').then(|| {
        let mut out = raw[..=start].to_vec();
        out.extend_from_slice(br#""~":[{}],"#);
        out.extend_from_slice(&raw[start + 1..]);
        out
    })
}

/// Fast path and serde path read `raw` the same: same event, or both refuse.
fn assert_paths_agree(raw: &[u8]) {
    let Some(slow) = via_serde(raw) else { return };
    let (a, b) = (decode(&Format::Native, raw), decode(&Format::Native, &slow));
    match (&a, &b) {
        (Ok(x), Ok(y)) => assert_eq!(x, y, "{:?}", String::from_utf8_lossy(raw)),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "fast and serde paths disagree on {:?}\nas read: {a:?}\nserde:   {b:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes at all, in any format: a record, a skip, or a reasoned dead letter.
    #[test]
    fn arbitrary_bytes_never_panic(raw in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        any::<String>().prop_map(String::into_bytes),
        weird().prop_map(|j| render(&j, PLAIN).into_bytes()),
    ]) {
        for (name, format) in all_formats() {
            let r = decode(&format, &raw);
            assert_total(name, &raw, &r);
        }
        assert_paths_agree(&raw);
    }

    /// A generated native record decodes to exactly the values it was generated from,
    /// however it is written (escapes, whitespace, key order).
    #[test]
    fn native_round_trip(g in native_gen(), st in style()) {
        let raw = render(&J::Obj(g.fields()), st);
        let e = usage(decode(&Format::Native, raw.as_bytes()), &raw);
        g.check(&e);
        assert_paths_agree(raw.as_bytes());
    }

    /// Damaged native records: never a panic, a reason when refused, a refusal for
    /// structural damage, and the fast path reads them as serde does.
    #[test]
    fn native_mutations(g in native_gen(), st in style(), m in mutation()) {
        let (raw, damage) = apply(&g.fields(), &m, st);
        assert_damage_handled("native", &Format::Native, &raw, &damage, &NATIVE_REQUIRED, &NATIVE_KNOWN);
        assert_paths_agree(&raw);
    }

    /// Lines from random JSON-number spellings in every numeric field, written plainly
    /// so the flat scanner reads them: it must agree with serde on each.
    #[test]
    fn native_numbers_read_as_serde_reads_them(
        g in native_gen(),
        field in prop::sample::select(vec![
            "ts", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd",
            "latency_ms", "ttft_ms", "status",
        ]),
        n in any_number(),
    ) {
        let mut fields = g.fields();
        fields.retain(|(k, _)| k != field);
        fields.push((field.to_string(), n));
        let raw = render(&J::Obj(fields), PLAIN);
        assert_total("native", raw.as_bytes(), &decode(&Format::Native, raw.as_bytes()));
        assert_paths_agree(raw.as_bytes());
    }
}

// ---------------------------------------------------------------------------------
// New API / One API.

#[derive(Clone, Debug)]
struct OtherGen {
    frt: Opt<(String, Option<u64>)>,
    cache_tokens: Opt<u64>,
    is_model_mapped: Opt<bool>,
    upstream_model_name: Opt<String>,
    status_code: Opt<u16>,
}

#[derive(Clone, Debug)]
struct RowGen {
    id: i64,
    created_at: i64,
    kind: i64,
    username: Opt<String>,
    token_name: Opt<String>,
    model_name: String,
    quota: Opt<u32>,
    prompt_tokens: Opt<u64>,
    completion_tokens: Opt<u64>,
    /// New API's seconds, as written, and the ms they make.
    use_time: Opt<(String, u64)>,
    elapsed_time: Opt<(String, Option<u64>)>,
    channel: Opt<i64>,
    channel_key: &'static str,
    channel_name: Opt<String>,
    group: Opt<String>,
    /// A valid `other` object, or garbage text that must not lose the record.
    other: Opt<Result<OtherGen, String>>,
}

fn row_gen() -> impl Strategy<Value = RowGen> {
    let other = prop_oneof![
        3 => (opt(duration()), opt(0..=MAX_TOKENS), opt(any::<bool>()), opt(text()), opt(any::<u16>()))
            .prop_map(|(frt, cache_tokens, is_model_mapped, upstream_model_name, status_code)| {
                Ok(OtherGen { frt, cache_tokens, is_model_mapped, upstream_model_name, status_code })
            }),
        1 => prop_oneof![text(), weird().prop_map(|j| render(&j, PLAIN))].prop_map(Err),
    ];
    let head = (
        any::<i64>(),
        MIN_TS / 1000..=NOW / 1000,
        prop_oneof![3 => Just(2i64), 2 => Just(5i64), 1 => -2i64..10],
        opt(text()),
        opt(prop_oneof![Just("alias-me".to_string()), text()]),
        prop_oneof![Just("gpt-4o".to_string()), present()],
        opt(any::<u32>()),
        opt(0..=MAX_TOKENS),
    );
    let tail = (
        opt(0..=MAX_TOKENS),
        opt((0u64..90_000_000).prop_map(|ms| (format!("{}.{:03}", ms / 1000, ms % 1000), ms))),
        opt(duration()),
        opt(any::<i64>()),
        prop::sample::select(vec!["channel", "channel_id"]),
        opt(text()),
        opt(text()),
        opt(other),
    );
    (head, tail).prop_map(|(h, t)| RowGen {
        id: h.0,
        created_at: h.1,
        kind: h.2,
        username: h.3,
        token_name: h.4,
        model_name: h.5,
        quota: h.6,
        prompt_tokens: h.7,
        completion_tokens: t.0,
        use_time: t.1,
        elapsed_time: t.2,
        channel: t.3,
        channel_key: t.4,
        channel_name: t.5,
        group: t.6,
        other: t.7,
    })
}

const ROW_REQUIRED: [&str; 3] = ["id", "created_at", "type"];
const ROW_KNOWN: [&str; 15] = [
    "id",
    "created_at",
    "type",
    "username",
    "token_name",
    "model_name",
    "quota",
    "prompt_tokens",
    "completion_tokens",
    "use_time",
    "elapsed_time",
    "channel",
    "channel_name",
    "group",
    "other",
];

impl RowGen {
    fn other_text(&self) -> Opt<String> {
        match &self.other {
            Opt::Absent => Opt::Absent,
            Opt::Null => Opt::Null,
            Opt::Val(Err(garbage)) => Opt::Val(garbage.clone()),
            Opt::Val(Ok(o)) => {
                let mut f = vec![("model_ratio".to_string(), num("1.25"))];
                put(&mut f, "frt", &o.frt, |v| num(&v.0));
                put(&mut f, "cache_tokens", &o.cache_tokens, |v| num(v));
                put(&mut f, "is_model_mapped", &o.is_model_mapped, |b| {
                    J::Bool(*b)
                });
                put(&mut f, "upstream_model_name", &o.upstream_model_name, |v| {
                    s(v)
                });
                put(&mut f, "status_code", &o.status_code, |v| num(v));
                Opt::Val(render(&J::Obj(f), PLAIN))
            }
        }
    }

    fn fields(&self) -> Vec<(String, J)> {
        let mut f = vec![
            ("id".into(), num(self.id)),
            ("user_id".into(), num(3)),
            ("created_at".into(), num(self.created_at)),
            ("type".into(), num(self.kind)),
            ("content".into(), s("model ratio 1.25")),
        ];
        put(&mut f, "username", &self.username, |v| s(v));
        put(&mut f, "token_name", &self.token_name, |v| s(v));
        f.push(("model_name".into(), s(&self.model_name)));
        put(&mut f, "quota", &self.quota, |v| num(v));
        put(&mut f, "prompt_tokens", &self.prompt_tokens, |v| num(v));
        put(&mut f, "completion_tokens", &self.completion_tokens, |v| {
            num(v)
        });
        put(&mut f, "use_time", &self.use_time, |v| num(&v.0));
        put(&mut f, "elapsed_time", &self.elapsed_time, |v| num(&v.0));
        put(&mut f, self.channel_key, &self.channel, |v| num(v));
        put(&mut f, "channel_name", &self.channel_name, |v| s(v));
        put(&mut f, "group", &self.group, |v| s(v));
        put(&mut f, "other", &self.other_text(), |v| s(v));
        f
    }

    /// What the row must decode to, from the gateways' documented semantics.
    fn check(&self, r: Result<Option<Record>, Rejected>, one_api: bool, raw: &str) {
        let request = self.kind == 2 || (self.kind == 5 && !one_api);
        if !request {
            assert_eq!(r, Ok(None), "type {} is skipped: {raw}", self.kind);
            return;
        }
        let e = usage(r, raw);
        let other = match &self.other {
            Opt::Val(Ok(o)) => Some(o),
            _ => None,
        };
        let prefix = if one_api { "oneapi" } else { "newapi" };
        assert_eq!(e.id, format!("{prefix}:{}", self.id));
        assert_eq!(e.ts_ms, self.created_at * 1000);
        assert_eq!(Some(e.model.to_string()), label(Some(&self.model_name)));
        let cached = other.and_then(|o| o.cache_tokens.get().copied());
        assert_eq!(
            e.prompt_tokens,
            self.prompt_tokens.get().copied().unwrap_or(0)
        );
        assert_eq!(
            e.completion_tokens,
            self.completion_tokens.get().copied().unwrap_or(0)
        );
        assert_eq!(e.cached_tokens, cached.unwrap_or(0));
        let quota = f64::from(self.quota.get().copied().unwrap_or(0));
        assert_eq!(e.cost_usd, Some(quota / QUOTA_PER_UNIT));
        assert_eq!(e.cost_source, CostSource::Gateway);
        let latency = if one_api {
            self.elapsed_time.get().and_then(|d| d.1)
        } else {
            self.use_time
                .get()
                .map(|d| d.1)
                .filter(|ms| *ms <= 86_400_000)
        };
        assert_eq!(e.latency_ms, latency);
        assert_eq!(e.ttft_ms, other.and_then(|o| o.frt.get()).and_then(|d| d.1));
        let provider = label(self.channel_name.get().map(String::as_str))
            .or_else(|| self.channel.get().map(|c| format!("channel-{c}")));
        assert_eq!(e.provider.as_deref().map(str::to_string), provider);
        assert_eq!(
            e.route.as_deref().map(str::to_string),
            label(self.group.get().map(String::as_str))
        );
        let who = label(self.token_name.get().map(String::as_str))
            .or_else(|| label(self.username.get().map(String::as_str)));
        assert_eq!(
            e.tenant.as_deref().map(str::to_string),
            who.map(|w| identity().label(&w).to_string())
        );
        let resolved = other
            .filter(|o| o.is_model_mapped.get() != Some(&false))
            .and_then(|o| label(o.upstream_model_name.get().map(String::as_str)));
        assert_eq!(e.resolved_model.as_deref().map(str::to_string), resolved);
        if self.kind == 5 {
            let code = other.and_then(|o| o.status_code.get().copied());
            assert_eq!(e.status, Some(code.unwrap_or(500)));
            assert_eq!(e.error_type.as_deref(), Some("gateway_error"));
        } else {
            assert_eq!((e.status, e.error_type), (Some(200), None));
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// A New API / One API row decodes to its documented meaning, in either flavour;
    /// a garbage `other` column loses only the extras.
    #[test]
    fn gateway_row_round_trip(g in row_gen(), st in style()) {
        let raw = render(&J::Obj(g.fields()), st);
        g.check(decode(&Format::NewApi, raw.as_bytes()), false, &raw);
        g.check(decode(&Format::OneApi, raw.as_bytes()), true, &raw);
    }

    /// A row the database follower builds from columns decodes as its JSON text does.
    #[test]
    fn gateway_row_from_columns_matches_text(g in row_gen()) {
        let raw = render(&J::Obj(g.fields()), PLAIN);
        let row: LogRow = serde_json::from_str(&raw).unwrap();
        for format in [Format::NewApi, Format::OneApi] {
            let mut d = Decoder::new(format.clone(), ctx());
            assert_eq!(d.decode_row(&row, NOW), decode(&format, raw.as_bytes()), "{raw}");
        }
        // And the row serialized back (as the webhook would forward it) reads the same.
        let again = serde_json::to_vec(&row).unwrap();
        assert_eq!(decode(&Format::NewApi, &again), decode(&Format::NewApi, raw.as_bytes()));
    }

    #[test]
    fn gateway_row_mutations(g in row_gen(), st in style(), m in mutation()) {
        let (raw, damage) = apply(&g.fields(), &m, st);
        for (name, format) in [("newapi", Format::NewApi), ("oneapi", Format::OneApi)] {
            assert_damage_handled(name, &format, &raw, &damage, &ROW_REQUIRED, &ROW_KNOWN);
        }
    }
}

// ---------------------------------------------------------------------------------
// LiteLLM.

#[derive(Clone, Debug)]
struct LiteGen {
    id: String,
    /// Start as epoch ms (written as seconds with 3 decimals).
    start_ms: i64,
    latency_ms: Opt<u64>,
    ttft_ms: Opt<u64>,
    stream: Opt<bool>,
    cost: Opt<(String, f64)>,
    failed: bool,
    error_code: Opt<J>,
    error_class: Opt<String>,
    provider: Opt<String>,
    prompt_tokens: Opt<u64>,
    completion_tokens: Opt<u64>,
    cached_tokens: Opt<u64>,
    model: Opt<String>,
    model_group: Opt<String>,
    /// Metadata keys in tenant precedence order: team alias, team id, key alias, key hash, end user.
    who: [Opt<String>; 5],
    request_route: Opt<String>,
    tags: Opt<Vec<J>>,
    finish_reason: Opt<String>,
}

fn lite_gen() -> impl Strategy<Value = LiteGen> {
    let error_code = prop_oneof![
        (0u32..1000).prop_map(num),
        (0u32..1000).prop_map(|c| J::Str(c.to_string())),
        Just(s("")),
        junk(),
    ];
    let a = (
        present(),
        MIN_TS..=NOW - 100_000_000,
        opt(0u64..90_000_000),
        opt(0u64..90_000_000),
        opt(any::<bool>()),
        opt(decimal()),
        any::<bool>(),
        opt(error_code),
        opt(text()),
        opt(text()),
    );
    let b = (
        opt(0..=MAX_TOKENS),
        opt(0..=MAX_TOKENS),
        opt(0..=MAX_TOKENS),
        opt(prop_oneof![Just("openai/gpt-4o".to_string()), text()]),
        opt(prop_oneof![Just("gpt-4o".to_string()), text()]),
        [
            opt(text()),
            opt(text()),
            opt(text()),
            opt(text()),
            opt(text()),
        ],
        opt(text()),
        opt(prop::collection::vec(
            prop_oneof![3 => "[a-z]{1,8}".prop_map(J::Str), 1 => junk()],
            0..3,
        )),
        opt(text()),
    );
    (a, b)
        .prop_filter("a model or model_group", |(_, b)| {
            label(b.3.get().map(String::as_str)).is_some()
                || label(b.4.get().map(String::as_str)).is_some()
        })
        .prop_map(|(a, b)| LiteGen {
            id: a.0,
            start_ms: a.1,
            latency_ms: a.2,
            ttft_ms: a.3,
            stream: a.4,
            cost: a.5,
            failed: a.6,
            error_code: a.7,
            error_class: a.8,
            provider: a.9,
            prompt_tokens: b.0,
            completion_tokens: b.1,
            cached_tokens: b.2,
            model: b.3,
            model_group: b.4,
            who: b.5,
            request_route: b.6,
            tags: b.7,
            finish_reason: b.8,
        })
}

const LITE_REQUIRED: [&str; 2] = ["id", "startTime"];
const LITE_KNOWN: [&str; 16] = [
    "id",
    "stream",
    "response_cost",
    "status",
    "custom_llm_provider",
    "prompt_tokens",
    "completion_tokens",
    "startTime",
    "endTime",
    "completionStartTime",
    "model",
    "model_group",
    "metadata",
    "request_tags",
    "error_information",
    "response",
];

fn secs(ms: i64) -> J {
    num(format!("{}.{:03}", ms / 1000, ms % 1000))
}

impl LiteGen {
    fn fields(&self) -> Vec<(String, J)> {
        let mut f = vec![
            ("id".into(), s(&self.id)),
            ("call_type".into(), s("acompletion")),
            ("startTime".into(), secs(self.start_ms)),
            (
                "status".into(),
                s(if self.failed { "failure" } else { "success" }),
            ),
        ];
        put(&mut f, "stream", &self.stream, |b| J::Bool(*b));
        put(&mut f, "response_cost", &self.cost, |v| num(&v.0));
        put(&mut f, "custom_llm_provider", &self.provider, |v| s(v));
        put(&mut f, "prompt_tokens", &self.prompt_tokens, |v| num(v));
        put(&mut f, "completion_tokens", &self.completion_tokens, |v| {
            num(v)
        });
        put(&mut f, "endTime", &self.latency_ms, |d| {
            secs(self.start_ms + *d as i64)
        });
        put(&mut f, "completionStartTime", &self.ttft_ms, |d| {
            secs(self.start_ms + *d as i64)
        });
        put(&mut f, "model", &self.model, |v| s(v));
        put(&mut f, "model_group", &self.model_group, |v| s(v));
        let mut meta = Vec::new();
        let keys = [
            "user_api_key_team_alias",
            "user_api_key_team_id",
            "user_api_key_alias",
            "user_api_key_hash",
            "user_api_key_end_user_id",
        ];
        for (k, v) in keys.iter().zip(&self.who) {
            put(&mut meta, k, v, |v| s(v));
        }
        put(
            &mut meta,
            "user_api_key_request_route",
            &self.request_route,
            |v| s(v),
        );
        put(&mut meta, "usage_object", &self.cached_tokens, |c| {
            J::Obj(vec![(
                "prompt_tokens_details".into(),
                J::Obj(vec![("cached_tokens".into(), num(c))]),
            )])
        });
        f.push(("metadata".into(), J::Obj(meta)));
        put(&mut f, "request_tags", &self.tags, |t| J::Arr(t.clone()));
        put(&mut f, "response", &self.finish_reason, |r| {
            J::Obj(vec![(
                "choices".into(),
                J::Arr(vec![J::Obj(vec![
                    ("finish_reason".into(), s(r)),
                    ("index".into(), num(0)),
                ])]),
            )])
        });
        let mut err = Vec::new();
        put(&mut err, "error_code", &self.error_code, |c| c.clone());
        put(&mut err, "error_class", &self.error_class, |v| s(v));
        f.push(("error_information".into(), J::Obj(err)));
        f
    }

    fn check(&self, e: &UsageEvent) {
        let model = label(self.model_group.get().map(String::as_str))
            .or_else(|| label(self.model.get().map(String::as_str)))
            .unwrap();
        assert_eq!(e.id, self.id);
        assert_eq!(e.ts_ms, self.start_ms);
        assert_eq!(e.model, model);
        let resolved = label(self.model.get().map(String::as_str)).filter(|m| *m != model);
        assert_eq!(e.resolved_model.as_deref().map(str::to_string), resolved);
        assert_eq!(
            e.provider.as_deref().map(str::to_string),
            label(self.provider.get().map(String::as_str))
        );
        assert_eq!(
            e.prompt_tokens,
            self.prompt_tokens.get().copied().unwrap_or(0)
        );
        assert_eq!(
            e.completion_tokens,
            self.completion_tokens.get().copied().unwrap_or(0)
        );
        assert_eq!(
            e.cached_tokens,
            self.cached_tokens.get().copied().unwrap_or(0)
        );
        match self.cost.get() {
            Some((_, c)) => {
                assert_eq!((e.cost_usd, e.cost_source), (Some(*c), CostSource::Gateway))
            }
            None => assert_ne!(e.cost_source, CostSource::Gateway),
        }
        let within_day = |d: &u64| (*d <= 86_400_000).then_some(*d);
        assert_eq!(e.latency_ms, self.latency_ms.get().and_then(within_day));
        let ttft = match self.stream.get() {
            Some(true) => self.ttft_ms.get().and_then(within_day),
            _ => None,
        };
        assert_eq!(e.ttft_ms, ttft);
        let who = self
            .who
            .iter()
            .find_map(|w| label(w.get().map(String::as_str)));
        assert_eq!(
            e.tenant.as_deref().map(str::to_string),
            who.map(|w| identity().label(&w).to_string())
        );
        // The first non-blank string tag names the route, else the key's request route.
        let tag = self.tags.get().and_then(|t| {
            t.iter().find_map(|j| match j {
                J::Str(v) => label(Some(v.as_str())),
                _ => None,
            })
        });
        let route = tag.or_else(|| label(self.request_route.get().map(String::as_str)));
        assert_eq!(e.route.as_deref().map(str::to_string), route);
        assert_eq!(
            e.finish_reason.as_deref().map(str::to_string),
            label(self.finish_reason.get().map(String::as_str))
        );
        if self.failed {
            let code = match self.error_code.get() {
                Some(J::Num(n)) => n.parse::<u16>().ok(),
                Some(J::Str(v)) => v.parse::<u16>().ok(),
                _ => None,
            };
            assert_eq!(e.status, Some(code.filter(|c| *c >= 400).unwrap_or(500)));
            let class = label(self.error_class.get().map(String::as_str));
            assert_eq!(
                e.error_type.as_deref().map(str::to_string),
                Some(class.unwrap_or_else(|| "failure".into()))
            );
        } else {
            assert_eq!((e.status, e.error_type.as_deref()), (Some(200), None));
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn litellm_round_trip(g in lite_gen(), st in style()) {
        let raw = render(&J::Obj(g.fields()), st);
        g.check(&usage(decode(&Format::LiteLlm, raw.as_bytes()), &raw));
    }

    #[test]
    fn litellm_mutations(g in lite_gen(), st in style(), m in mutation()) {
        let (raw, damage) = apply(&g.fields(), &m, st);
        assert_damage_handled("litellm", &Format::LiteLlm, &raw, &damage, &LITE_REQUIRED, &LITE_KNOWN);
    }
}

// ---------------------------------------------------------------------------------
// Eval scores.

#[derive(Clone, Debug)]
struct EvalGen {
    request_id: Opt<String>,
    route: Opt<String>,
    model: Opt<String>,
    evaluator: String,
    ts: (J, i64),
    score: Opt<(String, f64)>,
    passed: Opt<bool>,
}

fn eval_gen() -> impl Strategy<Value = EvalGen> {
    // Scores mostly in 0..1, some beyond (up to 1e9/1e0).
    let score = prop_oneof![
        3 => (0u64..=1000).prop_map(|m| (format!("{}", m as f64 / 1000.0), m as f64 / 1000.0)),
        1 => decimal(),
        1 => decimal().prop_map(|(t, v)| (format!("-{t}"), -v)),
    ];
    (
        opt(text()),
        opt(text()),
        opt(text()),
        text(),
        timestamp(),
        opt(score),
        opt(any::<bool>()),
    )
        .prop_map(
            |(request_id, route, model, evaluator, ts, score, passed)| EvalGen {
                request_id,
                route,
                model,
                evaluator,
                ts,
                score,
                passed,
            },
        )
}

const EVAL_REQUIRED: [&str; 2] = ["evaluator", "ts"];
const EVAL_KNOWN: [&str; 7] = [
    "request_id",
    "route",
    "model",
    "evaluator",
    "ts",
    "score",
    "passed",
];

impl EvalGen {
    fn fields(&self) -> Vec<(String, J)> {
        let mut f = Vec::new();
        put(&mut f, "request_id", &self.request_id, |v| s(v));
        put(&mut f, "route", &self.route, |v| s(v));
        put(&mut f, "model", &self.model, |v| s(v));
        f.push(("evaluator".into(), s(&self.evaluator)));
        f.push(("ts".into(), self.ts.0.clone()));
        put(&mut f, "score", &self.score, |v| num(&v.0));
        put(&mut f, "passed", &self.passed, |b| J::Bool(*b));
        f
    }

    /// The whole contract of an eval score: the record, or which rule refused it.
    fn check(&self, r: Result<Option<Record>, Rejected>, raw: &str) {
        let l = |o: &Opt<String>| label(o.get().map(String::as_str));
        let score = self.score.get().map(|s| s.1);
        let want = if label(Some(&self.evaluator)).is_none() {
            Err("evaluator is empty")
        } else if l(&self.request_id).is_none()
            && l(&self.route).is_none()
            && l(&self.model).is_none()
        {
            Err("needs request_id")
        } else if score.is_none() && self.passed.get().is_none() {
            Err("score or passed")
        } else if score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            Err("outside 0..1")
        } else {
            Ok(EvalScore {
                request_id: l(&self.request_id),
                route: l(&self.route),
                model: l(&self.model),
                evaluator: label(Some(&self.evaluator)).unwrap(),
                ts_ms: self.ts.1,
                score,
                passed: self.passed.get().copied(),
            })
        };
        match (want, r) {
            (Ok(want), Ok(Some(Record::Eval(got)))) => assert_eq!(got, want, "{raw}"),
            (Err(why), Err(Rejected(reason))) => assert!(reason.contains(why), "{raw}: {reason}"),
            (want, got) => panic!("{raw}\nwant {want:?}\ngot {got:?}"),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn evals_round_trip(g in eval_gen(), st in style()) {
        let raw = render(&J::Obj(g.fields()), st);
        g.check(decode(&Format::Evals, raw.as_bytes()), &raw);
    }

    #[test]
    fn evals_mutations(g in eval_gen(), st in style(), m in mutation()) {
        let (raw, damage) = apply(&g.fields(), &m, st);
        assert_damage_handled("evals", &Format::Evals, &raw, &damage, &EVAL_REQUIRED, &EVAL_KNOWN);
    }
}

// ---------------------------------------------------------------------------------
// Mapped formats (JSON lines with dotted paths, CSV with configured or header columns).

#[derive(Clone, Debug)]
struct MappedGen {
    id: Opt<String>,
    ts: (J, i64),
    model: String,
    resolved: Opt<String>,
    provider: Opt<String>,
    route: Opt<String>,
    who: Opt<String>,
    /// Token counts, each written as a JSON number or a numeric string.
    tokens: [Opt<(u64, bool)>; 3],
    cost: Opt<((String, f64), bool)>,
    latency: Opt<(String, Option<u64>)>,
    status: Opt<u16>,
    finish: Opt<String>,
    err: Opt<String>,
}

fn mapped_gen() -> impl Strategy<Value = MappedGen> {
    let tok = || opt((0..=MAX_TOKENS, any::<bool>()));
    (
        (
            opt(text()),
            timestamp(),
            present(),
            opt(text()),
            opt(text()),
            opt(text()),
            opt(text()),
        ),
        (
            [tok(), tok(), tok()],
            opt((decimal(), any::<bool>())),
            opt(duration()),
            opt(any::<u16>()),
            opt(text()),
            opt(text()),
        ),
    )
        .prop_map(|(a, b)| MappedGen {
            id: a.0,
            ts: a.1,
            model: a.2,
            resolved: a.3,
            provider: a.4,
            route: a.5,
            who: a.6,
            tokens: b.0,
            cost: b.1,
            latency: b.2,
            status: b.3,
            finish: b.4,
            err: b.5,
        })
}

/// A `MAPPED_CSV` line that cannot become an event.
fn broken_csv_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"1780315200;\"m\"x\r1780315200;m".to_vec()),
        Just(b"1780315200;\xff\xfe".to_vec()),
        Just(b"\"1780315200;m".to_vec()),
        "[a-z]{1,8};[a-z]{1,8}".prop_map(String::into_bytes),
    ]
}

impl MappedGen {
    /// The JSON-lines object for `MAPPED_JSONL`: nested under `req` and `usage`.
    fn json(&self) -> J {
        let mut req = Vec::new();
        put(&mut req, "id", &self.id, |v| s(v));
        req.push(("model".into(), s(&self.model)));
        put(&mut req, "resolved", &self.resolved, |v| s(v));
        let mut usage = Vec::new();
        for (k, t) in ["in", "out", "cached"].into_iter().zip(&self.tokens) {
            put(&mut usage, k, t, |(n, as_text)| {
                if *as_text {
                    J::Str(n.to_string())
                } else {
                    num(n)
                }
            });
        }
        let mut f = vec![
            ("at".into(), self.ts.0.clone()),
            ("req".into(), J::Obj(req)),
            ("usage".into(), J::Obj(usage)),
        ];
        put(&mut f, "provider", &self.provider, |v| s(v));
        put(&mut f, "route", &self.route, |v| s(v));
        put(&mut f, "who", &self.who, |v| s(v));
        put(&mut f, "cost", &self.cost, |((t, _), as_text)| {
            if *as_text { s(t) } else { num(t) }
        });
        put(&mut f, "ms", &self.latency, |v| num(&v.0));
        put(&mut f, "code", &self.status, |v| num(v));
        put(&mut f, "finish", &self.finish, |v| s(v));
        put(&mut f, "err", &self.err, |v| s(v));
        J::Obj(f)
    }

    /// The `;`-separated line for `MAPPED_CSV`, quoted as a CSV writer quotes.
    fn csv(&self) -> Vec<u8> {
        let cell = |o: &Opt<String>| o.get().cloned().unwrap_or_default();
        let ts = match &self.ts.0 {
            J::Num(n) | J::Str(n) => n.clone(),
            other => panic!("{other:?}"),
        };
        let row = [
            ts,
            self.model.clone(),
            cell(&self.id),
            self.tokens[0]
                .get()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            self.tokens[1]
                .get()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            self.cost.get().map(|c| c.0.0.clone()).unwrap_or_default(),
            self.status.get().map(u16::to_string).unwrap_or_default(),
            cell(&self.who),
            cell(&self.route),
        ];
        let mut w = csv::WriterBuilder::new()
            .delimiter(b';')
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        w.write_record(&row).unwrap();
        let mut out = w.into_inner().unwrap();
        out.pop();
        out
    }

    fn check(&self, e: &UsageEvent, csv: bool, raw: &[u8]) {
        let l = |o: &Opt<String>| label(o.get().map(String::as_str));
        let lopt = |o: Option<compact_str::CompactString>| o.map(|c| c.to_string());
        // A CSV cell cannot be "absent": an empty one is, and cells are trimmed, so the
        // label rules already cover both layouts.
        match l(&self.id) {
            Some(id) => assert_eq!(e.id, id),
            None => assert!(e.id.ends_with("@0"), "position-based id: {}", e.id),
        }
        assert_eq!(e.ts_ms, self.ts.1, "{}", String::from_utf8_lossy(raw));
        assert_eq!(Some(e.model.to_string()), label(Some(&self.model)));
        assert_eq!(e.prompt_tokens, self.tokens[0].get().map_or(0, |t| t.0));
        assert_eq!(e.completion_tokens, self.tokens[1].get().map_or(0, |t| t.0));
        assert_eq!(e.route.clone().map(|c| c.to_string()), l(&self.route));
        assert_eq!(
            lopt(e.tenant.clone()),
            l(&self.who).map(|w| identity().label(&w).to_string())
        );
        assert_eq!(e.status, self.status.get().copied());
        match self.cost.get() {
            Some(((_, c), _)) => {
                assert_eq!((e.cost_usd, e.cost_source), (Some(*c), CostSource::Gateway))
            }
            None => assert_ne!(e.cost_source, CostSource::Gateway),
        }
        if !csv {
            assert_eq!(e.cached_tokens, self.tokens[2].get().map_or(0, |t| t.0));
            assert_eq!(lopt(e.resolved_model.clone()), l(&self.resolved));
            assert_eq!(lopt(e.provider.clone()), l(&self.provider));
            assert_eq!(e.latency_ms, self.latency.get().and_then(|d| d.1));
            assert_eq!(lopt(e.finish_reason.clone()), l(&self.finish));
            assert_eq!(lopt(e.error_type.clone()), l(&self.err));
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mapped_jsonl_round_trip(g in mapped_gen(), st in style()) {
        let raw = render(&g.json(), st);
        let e = usage(decode(&mapped(MAPPED_JSONL), raw.as_bytes()), &raw);
        g.check(&e, false, raw.as_bytes());
    }

    #[test]
    fn mapped_csv_round_trip(g in mapped_gen()) {
        let raw = g.csv();
        let r = decode(&mapped(MAPPED_CSV), &raw);
        let e = usage(r, &String::from_utf8_lossy(&raw));
        g.check(&e, true, &raw);
    }

    /// One decoder reads a whole CSV source with one parser: rows quoted as a CSV
    /// writer quotes them come back as written, and a broken line between them (a
    /// stray quote, two records on a line, bytes that are not UTF-8) is refused alone.
    #[test]
    fn mapped_csv_rows_round_trip_through_one_reader(
        rows in prop::collection::vec((mapped_gen(), prop::option::of(broken_csv_line())), 1..8),
    ) {
        let mut d = Decoder::new(mapped(MAPPED_CSV), ctx());
        for (g, broken) in &rows {
            let raw = g.csv();
            let e = usage(d.decode(&raw, 0, NOW), &String::from_utf8_lossy(&raw));
            g.check(&e, true, &raw);
            if let Some(line) = broken {
                let r = d.decode(line, 1, NOW);
                assert!(r.is_err(), "{:?} -> {r:?}", String::from_utf8_lossy(line));
                assert_total("mapped-csv", line, &r);
            }
        }
    }

    #[test]
    fn mapped_jsonl_mutations(g in mapped_gen(), st in style(), m in mutation()) {
        let J::Obj(fields) = g.json() else { unreachable!() };
        let (raw, damage) = apply(&fields, &m, st);
        // Dropping the timestamp, or the object holding the model, loses a required field.
        assert_damage_handled("mapped-jsonl", &mapped(MAPPED_JSONL), &raw, &damage, &["at", "req"], &[]);
    }

    /// A CSV source: a header line, then lines of any bytes. Every line decodes, is
    /// skipped or is refused with a reason; a repeated header is skipped.
    #[test]
    fn mapped_csv_lines_never_panic(
        header in prop_oneof![Just(b"time,model,cost".to_vec()), prop::collection::vec(any::<u8>(), 0..40)],
        lines in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..60),
            "[0-9T:Z .,\"a-z\n-]{0,40}".prop_map(String::into_bytes),
        ], 0..8),
    ) {
        let mut d = Decoder::new(mapped(MAPPED_CSV_HEADER), ctx());
        let header_line = header.clone();
        let first = d.decode(&header, 0, NOW);
        assert_total("mapped-csv-header", &header, &first);
        for (i, line) in lines.iter().enumerate() {
            let r = d.decode(line, i as u64 + 1, NOW);
            assert_total("mapped-csv-header", line, &r);
        }
        if header_line == b"time,model,cost" {
            assert_eq!(d.decode(&header_line, 99, NOW), Ok(None));
        }
    }
}

// ---------------------------------------------------------------------------------
// Change events, bodies, timestamps.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn change_round_trip(
        kind in prop::sample::select(vec!["deploy", "model_bump", "config_change"]),
        ts in opt(timestamp()),
        scope in prop::collection::btree_map(
            prop::sample::select(vec!["model", "route", "tenant", "provider"]),
            present(),
            0..4,
        ),
        note in prop_oneof![text(), "[a-z ]{990,1010}"],
        st in style(),
    ) {
        let mut f = vec![("kind".to_string(), s(kind))];
        put(&mut f, "ts", &ts, |t| t.0.clone());
        let scope: BTreeMap<String, String> =
            scope.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        f.push(("scope".into(), J::Obj(scope.iter().map(|(k, v)| (k.clone(), s(v))).collect())));
        f.push(("note".into(), s(&note)));
        let raw = render(&J::Obj(f), st);
        let r = parse_change(raw.as_bytes(), NOW, 900_000);
        if note.chars().count() > 1000 {
            assert!(r.unwrap_err().to_string().contains("longer than"), "{raw}");
            return Ok(());
        }
        let c = r.unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(c.kind.as_str(), kind);
        let want_ts = match &ts { Opt::Val(t) => t.1, _ => NOW };
        assert_eq!(c.ts_ms, want_ts);
        assert_eq!(c.scope, scope);
        assert_eq!(c.note, note);
    }

    #[test]
    fn change_bytes_and_mutations_never_panic(
        raw in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            (weird(), mutation(), style()).prop_map(|(j, m, st)| {
                let fields = vec![("kind".to_string(), s("deploy")), ("note".into(), j)];
                apply(&fields, &m, st).0
            }),
        ],
    ) {
        if let Err(e) = parse_change(&raw, NOW, 900_000) {
            assert!(!e.to_string().trim().is_empty());
        }
    }

    /// Splitting a body never panics; items are numbered in order, borrowed from the
    /// body, and a split error says why.
    #[test]
    fn body_split_is_total(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(weird().prop_map(|j| render(&j, PLAIN)), 0..5)
                .prop_map(|v| v.join("\n").into_bytes()),
            prop::collection::vec(weird().prop_map(|j| render(&j, PLAIN)), 0..5)
                .prop_map(|v| format!("[{}]", v.join(",")).into_bytes()),
        ],
        line_based in any::<bool>(),
    ) {
        let items = split(&body, line_based);
        let range = body.as_ptr_range();
        let mut last = 0;
        for item in &items {
            assert!(item.number > last, "numbers increase");
            last = item.number;
            let r = item.raw.as_ptr_range();
            assert!(range.start <= r.start && r.end <= range.end, "borrowed from the body");
            if let Some(e) = &item.error {
                assert!(!e.trim().is_empty());
            }
        }
    }

    /// An array of generated native records splits into those records, and an NDJSON
    /// body of them into its lines.
    #[test]
    fn body_split_round_trip(records in prop::collection::vec(native_gen(), 1..5), st in style()) {
        let texts: Vec<String> = records
            .iter()
            .map(|g| render(&J::Obj(g.fields()), Style { ws: false, ..st }))
            .collect();
        let array = format!("[{}]", texts.join(","));
        let items = split(array.as_bytes(), false);
        assert_eq!(items.len(), texts.len());
        for (i, (item, text)) in items.iter().zip(&texts).enumerate() {
            assert_eq!((item.number, item.raw, &item.error), (i as u64 + 1, text.as_bytes(), &None));
        }
        let ndjson = texts.join("\n");
        let items = split(ndjson.as_bytes(), false);
        assert_eq!(items.len(), texts.len());
        for (item, text) in items.iter().zip(&texts) {
            assert_eq!(item.raw, text.as_bytes());
        }
    }

    /// Every spelling of a generated instant parses to that instant; any text and any
    /// float are a value or an error, never a panic.
    #[test]
    fn timestamps_parse_to_the_instant(
        t in timestamp(),
        frac in "[0-9]{1,9}",
        junk in any::<String>(),
        f in any::<f64>(),
    ) {
        if let J::Str(text) = &t.0 {
            assert_eq!(parse_ts_str(text), Ok(t.1), "{text}");
        }
        // Any fraction length: the UTC fast path and chrono agree.
        let secs = t.1.div_euclid(1000);
        let base = DateTime::from_timestamp(secs, 0).unwrap().format("%Y-%m-%dT%H:%M:%S");
        let text = format!("{base}.{frac}Z");
        let chrono = DateTime::parse_from_rfc3339(&text).unwrap().timestamp_millis();
        assert_eq!(parse_ts_str(&text), Ok(chrono), "{text}");
        let _ = parse_ts_str(&junk);
        match epoch_to_ms(f) {
            Ok(ms) => assert!(f.is_finite() && f >= 0.0 && ms >= 0),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
