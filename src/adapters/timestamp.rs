//! Timestamps as gateways write them: RFC 3339 strings, or epoch seconds or
//! milliseconds as numbers (or numeric strings).

use chrono::{DateTime, NaiveDateTime};
use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// Epoch values at or above this are milliseconds (1e11 s is the year 5138).
const MS_THRESHOLD: f64 = 1e11;

/// Parse a textual timestamp into epoch milliseconds.
///
/// Accepts RFC 3339 (`2026-06-01T12:00:00.123Z`), a naive `YYYY-MM-DD HH:MM:SS[.fff]`
/// or `YYYY-MM-DDTHH:MM:SS[.fff]` taken as UTC, and a number of seconds or milliseconds.
pub fn parse_ts_str(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return epoch_to_ms(n);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "timestamp {s:?} is neither RFC 3339 nor epoch seconds/milliseconds"
    ))
}

/// Parse with an explicit strftime pattern (from a mapped format's config), as UTC.
pub fn parse_ts_with(s: &str, pattern: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_str(s.trim(), pattern) {
        return Ok(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(s.trim(), pattern)
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|e| format!("timestamp {s:?} does not match {pattern:?}: {e}"))
}

/// Convert epoch seconds or milliseconds (told apart by magnitude) into milliseconds.
pub fn epoch_to_ms(n: f64) -> Result<i64, String> {
    if !n.is_finite() || n < 0.0 {
        return Err(format!("timestamp {n} is not a valid epoch time"));
    }
    Ok(if n >= MS_THRESHOLD {
        n as i64
    } else {
        (n * 1000.0).round() as i64
    })
}

/// A timestamp field in a JSON record, deserialized straight to epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ts(pub i64);

impl<'de> serde::Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 string or epoch seconds/milliseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts, E> {
                parse_ts_str(v).map(Ts).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
                epoch_to_ms(v as f64).map(Ts).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
                epoch_to_ms(v as f64).map(Ts).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts, E> {
                epoch_to_ms(v).map(Ts).map_err(E::custom)
            }
        }
        d.deserialize_any(TsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_documented_forms_agree() {
        let want = 1_780_315_200_123; // 2026-06-01T12:00:00.123Z
        assert_eq!(parse_ts_str("2026-06-01T12:00:00.123Z"), Ok(want));
        assert_eq!(parse_ts_str("2026-06-01T14:00:00.123+02:00"), Ok(want));
        assert_eq!(parse_ts_str("2026-06-01 12:00:00.123"), Ok(want));
        assert_eq!(parse_ts_str("1780315200.123"), Ok(want));
        assert_eq!(parse_ts_str("1780315200123"), Ok(want));
        let ts: Ts = serde_json::from_str("1780315200123").unwrap();
        assert_eq!(ts.0, want);
        let ts: Ts = serde_json::from_str("1780315200.123").unwrap();
        assert_eq!(ts.0, want);
    }

    #[test]
    fn garbage_and_negative_times_are_errors() {
        assert!(parse_ts_str("yesterday").is_err());
        assert!(serde_json::from_str::<Ts>("-5").is_err());
        assert!(serde_json::from_str::<Ts>("true").is_err());
    }

    #[test]
    fn explicit_pattern() {
        assert_eq!(
            parse_ts_with("01/06/2026 12:00", "%d/%m/%Y %H:%M"),
            Ok(1_780_315_200_000)
        );
    }
}
