//! Timestamps as gateways write them: RFC 3339 strings, or epoch seconds or
//! milliseconds as numbers (or numeric strings).

use chrono::{DateTime, NaiveDateTime};
use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// Epoch values at or above this are milliseconds (1e11 s is the year 5138).
const MS_THRESHOLD: f64 = 1e11;

/// A timestamp that could not be read; the message names the forms that can.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimestampError {
    /// Text in none of the accepted forms.
    #[error("timestamp {0:?} is neither RFC 3339 nor epoch seconds/milliseconds")]
    Unrecognized(String),
    /// Text that does not match a mapped format's `ts_format`.
    #[error("timestamp {text:?} does not match {pattern:?}: {source}")]
    Pattern {
        /// The text as the record holds it.
        text: String,
        /// The strftime pattern from the config.
        pattern: String,
        /// What chrono found wrong.
        source: chrono::ParseError,
    },
    /// A number that is negative, infinite or NaN.
    #[error("timestamp {0} is not a valid epoch time")]
    Epoch(f64),
}

/// Parse a textual timestamp into epoch milliseconds.
///
/// Accepts RFC 3339 (`2026-06-01T12:00:00.123Z`), a naive `YYYY-MM-DD HH:MM:SS[.fff]`
/// or `YYYY-MM-DDTHH:MM:SS[.fff]` taken as UTC, and a number of seconds or milliseconds.
pub fn parse_ts_str(s: &str) -> Result<i64, TimestampError> {
    let s = s.trim();
    if let Some(ms) = utc_z(s.as_bytes()) {
        return Ok(ms);
    }
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
    Err(TimestampError::Unrecognized(s.to_string()))
}

/// The shape nearly every gateway writes, `YYYY-MM-DDTHH:MM:SS[.fff]Z`, read without
/// the general parser (which was a tenth of decoding a native line). Anything else,
/// or a date that does not exist, is `None` and goes to the general parsers.
fn utc_z(b: &[u8]) -> Option<i64> {
    let (head, frac) = match b {
        [head @ .., b'Z'] if head.len() >= 19 => head.split_at(19),
        _ => return None,
    };
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        head[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if head[4] != b'-'
        || head[7] != b'-'
        || head[10] != b'T'
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    let millis = match frac {
        [] => 0,
        [b'.', rest @ ..] if (1..=9).contains(&rest.len()) => {
            let mut ms = 0;
            for i in 0..3 {
                let c = rest.get(i).copied().unwrap_or(b'0');
                ms = ms * 10 + i64::from(c.is_ascii_digit().then(|| c - b'0')?);
            }
            if !rest.iter().all(u8::is_ascii_digit) {
                return None;
            }
            ms
        }
        _ => return None,
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)?;
    let time = date.and_hms_opt(digits(11..13)?, digits(14..16)?, digits(17..19)?)?;
    Some(time.and_utc().timestamp_millis() + millis)
}

/// Parse with an explicit strftime pattern (from a mapped format's config), as UTC.
pub fn parse_ts_with(s: &str, pattern: &str) -> Result<i64, TimestampError> {
    if let Ok(t) = DateTime::parse_from_str(s.trim(), pattern) {
        return Ok(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(s.trim(), pattern)
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|source| TimestampError::Pattern {
            text: s.to_string(),
            pattern: pattern.to_string(),
            source,
        })
}

/// Convert epoch seconds or milliseconds (told apart by magnitude) into milliseconds.
pub fn epoch_to_ms(n: f64) -> Result<i64, TimestampError> {
    if !n.is_finite() || n < 0.0 {
        return Err(TimestampError::Epoch(n));
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
    fn the_utc_fast_path_agrees_with_chrono_or_defers_to_it() {
        let agree = [
            "2026-06-01T12:00:00Z",
            "2026-06-01T12:00:00.1Z",
            "2026-06-01T12:00:00.123Z",
            "2026-06-01T12:00:00.123456Z",
            "2026-06-01T12:00:00.999999999Z",
            "2024-02-29T23:59:59.5Z",
            "1970-01-01T00:00:00Z",
        ];
        for s in agree {
            let chrono = DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
            assert_eq!(utc_z(s.as_bytes()), Some(chrono), "{s}");
        }
        let defer = [
            "2026-06-01T12:00:00+02:00",
            "2026-06-01 12:00:00Z",
            "2026-02-29T12:00:00Z",
            "2026-13-01T12:00:00Z",
            "2026-06-01T24:00:00Z",
            "2026-06-01T12:00:60Z",
            "2026-06-01T12:00:00.Z",
            "2026-06-01T12:00:00.12x4Z",
            "2026-06-01T12:00:00.1234567890Z",
            "2026-0a-01T12:00:00Z",
        ];
        for s in defer {
            assert_eq!(utc_z(s.as_bytes()), None, "{s}");
        }
        assert!(parse_ts_str("2026-02-29T12:00:00Z").is_err());
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
