//! driftwarden's own `UsageEvent` JSON (DESIGN.md, "Native record shapes").

use std::borrow::Cow;

use serde::Deserialize;

use super::flat::{self, Flat, Key};
use super::timestamp::{Ts, epoch_to_ms, parse_ts_str};
use super::{Context, Rejected, millis, non_empty, tokens};
use crate::domain::{CostSource, UsageEvent};

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct NativeRecord<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    ts: Ts,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    resolved_model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow)]
    route: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tenant: Option<Cow<'a, str>>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: Option<i64>,
    cost_usd: Option<f64>,
    latency_ms: Option<f64>,
    ttft_ms: Option<f64>,
    status: Option<u16>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error_type: Option<Cow<'a, str>>,
}

pub(super) fn decode(raw: &[u8], ctx: &Context) -> Result<UsageEvent, Rejected> {
    // One UTF-8 check of the whole line (ASCII runs go a word at a time) instead of one
    // per string field: that per-field check was about 6% of a replay's instructions.
    // A line that is not UTF-8 takes the slice path, so its rejection reads as before.
    let r: NativeRecord = match std::str::from_utf8(raw) {
        Ok(text) => match fast(text) {
            Some(r) => r,
            None => serde_json::from_str(text).map_err(Rejected::json)?,
        },
        Err(_) => serde_json::from_slice(raw).map_err(Rejected::json)?,
    };
    if r.id.trim().is_empty() {
        return Err(Rejected("id is empty".into()));
    }
    if r.model.trim().is_empty() {
        return Err(Rejected("model is empty".into()));
    }
    Ok(UsageEvent {
        id: r.id.into(),
        ts_ms: r.ts.0,
        model: r.model.into(),
        resolved_model: non_empty(r.resolved_model),
        provider: non_empty(r.provider),
        route: non_empty(r.route),
        // A native tenant is a label the sender chose; only a configured alias replaces it.
        tenant: non_empty(r.tenant).map(|t| ctx.identity.alias_or(t)),
        prompt_tokens: tokens("prompt_tokens", Some(r.prompt_tokens))?,
        completion_tokens: tokens("completion_tokens", Some(r.completion_tokens))?,
        cached_tokens: tokens("cached_tokens", r.cached_tokens)?,
        cost_source: if r.cost_usd.is_some() {
            CostSource::Gateway
        } else {
            CostSource::Unknown
        },
        cost_usd: r.cost_usd,
        list_cost_usd: None,
        latency_ms: millis(r.latency_ms),
        ttft_ms: millis(r.ttft_ms),
        status: r.status,
        finish_reason: non_empty(r.finish_reason),
        error_type: non_empty(r.error_type),
    })
}

/// The fields in the order DESIGN.md (and most writers) put them; a field's index
/// here is its bit in `fast`.
const KEYS: [&str; 16] = [
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

/// The record read by the flat scanner, exactly as serde would read it; `None` for
/// anything serde might read differently or reject (a wrong type, a missing or
/// repeated field, a bad timestamp), which serde then reads and words the error for.
fn fast(text: &str) -> Option<NativeRecord<'_>> {
    let mut r = NativeRecord {
        id: Cow::Borrowed(""),
        ts: Ts(0),
        model: Cow::Borrowed(""),
        resolved_model: None,
        provider: None,
        route: None,
        tenant: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: None,
        cost_usd: None,
        latency_ms: None,
        ttft_ms: None,
        status: None,
        finish_reason: None,
        error_type: None,
    };
    // One bit per field: serde rejects a repeated field, and a required one missing.
    let mut seen = 0u32;
    const REQUIRED: u32 = 0b1_1000_0111; // id, ts, model, prompt_tokens, completion_tokens
    fn text_of(v: Flat<'_>) -> Option<Option<Cow<'_, str>>> {
        match v {
            Flat::Str(s) => Some(Some(Cow::Borrowed(s))),
            Flat::Null => Some(None),
            _ => None,
        }
    }
    flat::scan(text, &KEYS, |key, v| {
        let Key::Known(bit) = key else {
            return Some(());
        };
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        match (bit, v) {
            (0, Flat::Str(s)) => r.id = Cow::Borrowed(s),
            (1, Flat::Str(s)) => r.ts = Ts(parse_ts_str(s).ok()?),
            (1, Flat::Num(n)) => {
                let n = match n.parse::<u64>() {
                    Ok(u) => u as f64,
                    Err(_) => float(n)?,
                };
                r.ts = Ts(epoch_to_ms(n).ok()?);
            }
            (2, Flat::Str(s)) => r.model = Cow::Borrowed(s),
            (3, v) => r.resolved_model = text_of(v)?,
            (4, v) => r.provider = text_of(v)?,
            (5, v) => r.route = text_of(v)?,
            (6, v) => r.tenant = text_of(v)?,
            (7, Flat::Num(n)) => r.prompt_tokens = int(n)?,
            (8, Flat::Num(n)) => r.completion_tokens = int(n)?,
            (9, Flat::Num(n)) => r.cached_tokens = Some(int(n)?),
            (10..=12, Flat::Num(n)) => {
                let n = Some(float(n)?);
                match bit {
                    10 => r.cost_usd = n,
                    11 => r.latency_ms = n,
                    _ => r.ttft_ms = n,
                }
            }
            (13, Flat::Num(n)) => r.status = Some(int(n)?),
            (14, v) => r.finish_reason = text_of(v)?,
            (15, v) => r.error_type = text_of(v)?,
            (9..=13, Flat::Null) => {}
            _ => return None,
        }
        Some(())
    })?;
    (seen & REQUIRED == REQUIRED).then_some(r)
}

/// An integer field as serde reads it. serde_json reads `-0` as a float, which an
/// integer field refuses, while `str::parse` says 0: leave it to serde. (No other JSON
/// integer starts with `-0`, and no fraction or exponent parses as an integer.)
fn int<T: std::str::FromStr>(n: &str) -> Option<T> {
    if n.starts_with("-0") {
        return None;
    }
    n.parse().ok()
}

/// A float field as serde reads it. serde_json parses with `float_roundtrip` (see
/// Cargo.toml), so a finite value is the correctly rounded one `str::parse` gives;
/// what `parse` makes infinite (`1e400`, refused by serde) or flushes to zero from a
/// non-zero mantissa (`1e-400`) is left to serde.
fn float(n: &str) -> Option<f64> {
    let v: f64 = n.parse().ok()?;
    let mantissa = n.split(['e', 'E']).next().unwrap_or(n);
    let zero_written = mantissa
        .bytes()
        .all(|b| matches!(b, b'0' | b'.' | b'-' | b'+'));
    (v.is_finite() && (v != 0.0 || zero_written)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Format, Record};
    use crate::domain::CostSource;

    const DESIGN_EXAMPLE: &str = r#"{"id":"req-1","ts":"2026-06-01T12:00:00.123Z","model":"gpt-4o","resolved_model":"gpt-4o-2024-08-06","provider":"openai","route":"classify","tenant":"team-a","prompt_tokens":812,"completion_tokens":64,"cached_tokens":0,"cost_usd":0.00267,"latency_ms":840,"status":200,"finish_reason":"stop","error_type":null}"#;

    #[test]
    fn design_example_round_trips_every_field() {
        let e = usage(Format::Native, DESIGN_EXAMPLE);
        assert_eq!(e.id, "req-1");
        assert_eq!(e.ts_ms, 1_780_315_200_123);
        assert_eq!(e.resolved_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(e.provider.as_deref(), Some("openai"));
        assert_eq!(e.route.as_deref(), Some("classify"));
        assert_eq!(e.tenant.as_deref(), Some("team-a"));
        assert_eq!((e.prompt_tokens, e.completion_tokens), (812, 64));
        assert_eq!(e.cost_usd, Some(0.00267));
        assert_eq!(e.cost_source, CostSource::Gateway);
        assert_eq!(e.latency_ms, Some(840));
        assert_eq!(e.status, Some(200));
        assert_eq!(e.finish_reason.as_deref(), Some("stop"));
        assert_eq!(e.error_type, None);
    }

    #[test]
    fn epoch_seconds_and_milliseconds() {
        let s = usage(
            Format::Native,
            r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
        );
        let ms = usage(
            Format::Native,
            r#"{"id":"a","ts":1780315200000,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
        );
        assert_eq!(s.ts_ms, ms.ts_ms);
    }

    #[test]
    fn required_fields_and_impossible_values_are_named() {
        let cases = [
            (
                r#"{"ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
                "missing field `id`",
            ),
            (
                r#"{"id":"a","ts":1780315200,"model":"m","completion_tokens":1}"#,
                "missing field `prompt_tokens`",
            ),
            (
                r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":-3,"completion_tokens":1}"#,
                "prompt_tokens is negative (-3)",
            ),
            (
                r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1,"cost_usd":-1}"#,
                "negative",
            ),
            (r#"{"id":"a","ts":"#, "invalid record"),
        ];
        for (raw, want) in cases {
            let err = decode(Format::Native, raw).unwrap_err();
            assert!(err.0.contains(want), "{raw}: {err}");
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_rejected_by_the_json_parser() {
        let mut raw = br#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1,"route":"x"#.to_vec();
        raw.extend_from_slice(b"\xff\"}");
        let err = super::super::Decoder::new(Format::Native, ctx())
            .decode(&raw, 0, NOW)
            .unwrap_err();
        assert!(
            err.0
                .starts_with("invalid record: invalid unicode code point"),
            "{err}"
        );
    }

    /// The fast path and serde agree on every line the fast path reads, and the fast
    /// path reads the ordinary ones.
    fn agrees_with_serde(text: &str) -> bool {
        let serde = serde_json::from_str::<super::NativeRecord>(text);
        match super::fast(text) {
            Some(fast) => {
                assert_eq!(Some(&fast), serde.as_ref().ok(), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_fast_path_reads_ordinary_lines_as_serde_does() {
        let ordinary = [
            DESIGN_EXAMPLE,
            r#"{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
            r#"{"id":"a","ts":1780315200.5,"model":"m","prompt_tokens":0,"completion_tokens":-1}"#,
            r#" { "id" : "a", "ts" : "2026-06-01T14:00:00+02:00", "model":"m", "prompt_tokens":1,
                 "completion_tokens":2, "extra":{"ignored":true} } "#,
            r#"{"model":"m","completion_tokens":2,"prompt_tokens":1,"ts":"2026-06-01 12:00:00","id":"é",
                "route":null,"tenant":"","cost_usd":1e-3,"latency_ms":12.5,"ttft_ms":null,
                "status":503,"finish_reason":null,"error_type":"timeout","cached_tokens":null,"other":[1]}"#,
        ];
        let mut read = 0;
        for text in ordinary {
            read += agrees_with_serde(text) as usize;
        }
        // Only the two with nested unknown values go to serde.
        assert_eq!(read, 3);
        for declined in [
            r#"{"id":"a","id":"b","ts":1,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
            r#"{"ts":1,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
            r#"{"id":"a","ts":1,"model":"m","prompt_tokens":1.5,"completion_tokens":1}"#,
            r#"{"id":"a","ts":-1,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
            r#"{"id":"a","ts":"soon","model":"m","prompt_tokens":1,"completion_tokens":1}"#,
            r#"{"id":"a","ts":1,"model":"m","prompt_tokens":1,"completion_tokens":1,"status":70000}"#,
            r#"{"id":"a","ts":1,"model":"m","prompt_tokens":1,"completion_tokens":1,"route":5}"#,
            r#"{"id":null,"ts":1,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
            r#"{"id":"a\u0062","ts":1,"model":"m","prompt_tokens":1,"completion_tokens":1}"#,
        ] {
            assert!(super::fast(declined).is_none(), "{declined}");
        }
    }

    #[test]
    fn the_fast_path_never_disagrees_with_serde_on_damaged_lines() {
        // Every one-byte deletion and a set of one-byte replacements of a full line:
        // whatever the fast path still reads, serde must read the same.
        let line = DESIGN_EXAMPLE.replace(
            r#""error_type":null"#,
            r#""error_type":null,"cost_usd":2.5e-3"#,
        );
        let line = line.replacen(r#""cost_usd":0.00267,"#, "", 1);
        let bytes = line.as_bytes();
        let mut read = 0;
        for i in 0..bytes.len() {
            let mut cut = bytes.to_vec();
            cut.remove(i);
            if let Ok(text) = std::str::from_utf8(&cut) {
                read += agrees_with_serde(text) as usize;
            }
            for b in [
                b'"', b'0', b'-', b'.', b'e', b',', b'}', b' ', b'x', b'\\', b'n',
            ] {
                let mut changed = bytes.to_vec();
                changed[i] = b;
                if let Ok(text) = std::str::from_utf8(&changed) {
                    read += agrees_with_serde(text) as usize;
                }
            }
        }
        assert!(read > bytes.len(), "only {read} variants were read");
    }

    /// Found by the property tests (`props` below): numbers `str::parse` reads but
    /// serde_json reads otherwise. The fast path leaves them to serde, which then refuses
    /// `-0` tokens and `1e400`, and rounds long mantissas its own way.
    #[test]
    fn numbers_serde_reads_otherwise_are_left_to_serde() {
        let line = |field: &str, n: &str| {
            format!(
                r#"{{"id":"a","ts":1780315200,"model":"m","prompt_tokens":1,"completion_tokens":1,"{field}":{n}}}"#
            )
        };
        for (field, n) in [
            ("prompt_tokens", "-0"),
            ("completion_tokens", "-0"),
            ("cached_tokens", "-0"),
            ("status", "-0"),
            ("cost_usd", "1e400"),
            ("latency_ms", "1e400"),
            ("ttft_ms", "1e-400"),
        ] {
            let text = line(field, n).replacen(&format!("\"{field}\":1,"), "", 1);
            let text = if field == "ts" {
                text.replacen(r#""ts":1780315200,"#, "", 1)
            } else {
                text
            };
            assert!(!agrees_with_serde(&text), "{text}");
        }
        // What writers usually send stays on the fast path, long mantissas (Python's
        // and the simulator's shortest round-trip spellings) included.
        for (field, n) in [
            ("cost_usd", "0.9010010220000001"),
            ("cost_usd", "0.000045075000000000005"),
            ("ts", "1780315200.1234567891"),
            ("cost_usd", "2.5e-05"),
            ("cost_usd", "0.00267"),
            ("cost_usd", "0"),
            ("latency_ms", "840.25"),
            ("ts", "1780315200.123"),
        ] {
            let text = line(field, n);
            let text = if field == "ts" {
                text.replacen(r#""ts":1780315200,"#, "", 1)
            } else {
                text
            };
            assert!(agrees_with_serde(&text), "{text}");
        }
    }

    #[test]
    fn configured_alias_replaces_native_tenant() {
        let raw = r#"{"id":"a","ts":1780315200,"model":"m","tenant":"alias-me","prompt_tokens":1,"completion_tokens":1}"#;
        match decode(Format::Native, raw) {
            Ok(Some(Record::Usage(e))) => assert_eq!(e.tenant.as_deref(), Some("team-alias")),
            other => panic!("{other:?}"),
        }
    }
}

/// Property tests: the fast path reads a line exactly as serde does, or leaves it to
/// serde. 256 cases a property, or `PROPTEST_CASES` (docs/sources.md, "Testing the
/// adapters").
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::{KEYS, NativeRecord, fast};

    /// Numbers in every spelling: integers, fractions, exponents, `-0`, long mantissas
    /// (where float parsers may round differently) and values beyond every range.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?",
            2 => (0u64..2_000_000_000_000).prop_map(|n| n.to_string()),
            1 => prop::sample::select(vec![
                "-0", "-0.0", "0e0", "-0e5", "1E+2", "1e400", "-1e400", "1e-400", "4.9e-324",
                "1.7976931348623157e308", "18446744073709551615", "18446744073709551616",
                "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                "-9223372036854775809", "65535", "65536", "1780315200.1234567891",
                "0.30000000000000004", "123456789012345678901234567890",
            ])
            .prop_map(String::from),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => number(),
            3 => "\"[a-z0-9 é:.+-]{0,12}\"",
            2 => prop::sample::select(vec![
                "\"2026-06-01T12:00:00.123Z\"", "\"2026-06-01T14:00:00+02:00\"",
                "\"2026-06-01 12:00:00\"", "\"1780315200\"", "\"2026-02-29T12:00:00Z\"",
                "\"-1\"", "\"1e400\"", "\"\"", "\" \"",
            ])
            .prop_map(String::from),
            1 => prop::sample::select(vec!["null", "true", "false", "{}", "[1]", "\"\\u0061\""])
                .prop_map(String::from),
        ]
    }

    /// A native line: the required fields (usually), then any known or unknown keys
    /// with any values, in any order, repeats included, with or without spaces.
    fn line() -> impl Strategy<Value = String> {
        let required = (
            prop_oneof![4 => Just("\"a\"".to_string()), 1 => value()],
            prop_oneof![
                4 => prop::sample::select(vec!["1780315200", "1780315200123", "\"2026-06-01T12:00:00Z\""])
                    .prop_map(String::from),
                2 => value(),
            ],
            prop_oneof![4 => Just("\"gpt-4o\"".to_string()), 1 => value()],
            prop_oneof![4 => (0u32..100_000).prop_map(|n| n.to_string()), 2 => value()],
            prop_oneof![4 => (0u32..100_000).prop_map(|n| n.to_string()), 2 => value()],
        );
        let key = prop_oneof![
            8 => prop::sample::select(KEYS.to_vec()).prop_map(String::from),
            1 => "[a-z_]{1,6}",
        ];
        let extra = prop::collection::vec((key, value()), 0..8);
        (required, any::<u8>(), extra, any::<bool>(), any::<u64>()).prop_map(
            |((id, ts, model, p, c), drop, extra, spaced, seed)| {
                let mut members: Vec<(String, String)> = [
                    ("id", id),
                    ("ts", ts),
                    ("model", model),
                    ("prompt_tokens", p),
                    ("completion_tokens", c),
                ]
                .into_iter()
                .enumerate()
                // Now and then one required field is left out.
                .filter(|(i, _)| usize::from(drop % 16) != *i)
                .map(|(_, (k, v))| (k.to_string(), v))
                .chain(extra)
                .collect();
                // A seeded shuffle, so a failure replays.
                let mut state = seed | 1;
                for i in (1..members.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    members.swap(i, (state % (i as u64 + 1)) as usize);
                }
                let sep = if spaced { ", " } else { "," };
                let colon = if spaced { " : " } else { ":" };
                let body: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
                    .collect();
                format!("{{{}}}", body.join(sep))
            },
        )
    }

    /// The fast path's record, when it gives one, is serde's record.
    fn assert_agrees(text: &str) -> bool {
        let Some(fast) = fast(text) else {
            return false;
        };
        match serde_json::from_str::<NativeRecord>(text) {
            Ok(serde) => assert_eq!(fast, serde, "{text}"),
            Err(e) => panic!("fast path read {text}\nas {fast:?}\nbut serde refuses it: {e}"),
        }
        true
    }

    proptest! {
        #![proptest_config(crate::adapters::proptest_config())]

        #[test]
        fn fast_path_reads_as_serde_does(text in line()) {
            assert_agrees(&text);
        }

        /// Not vacuous: a plain valid line with ordinary numbers is read by the fast path.
        #[test]
        fn fast_path_reads_ordinary_lines(
            ts in 1_000_000_000u64..1_780_000_000,
            p in 0u32..1_000_000,
            c in 0u32..1_000_000,
            cost in 0u32..1_000_000,
            latency in 0u32..100_000,
            status in 100u16..600,
        ) {
            let text = format!(
                r#"{{"id":"r","ts":{ts},"model":"m","prompt_tokens":{p},"completion_tokens":{c},"cost_usd":{cost}e-6,"latency_ms":{latency}.5,"status":{status}}}"#
            );
            prop_assert!(assert_agrees(&text), "declined {}", text);
        }
    }
}
