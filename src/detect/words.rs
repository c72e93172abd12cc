//! What findings say: summaries a person reads, and numbers rounded for reading.

use serde_json::{Value, json};

use super::{Test, is_proportion, movement};
use crate::domain::{Baseline, Scope, Signal};

/// `x` to four significant digits (at most twelve decimals), for evidence a person reads.
pub fn round(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let digits = 4 - x.abs().log10().ceil() as i32;
    let f = 10f64.powi(digits.clamp(0, 12));
    (x * f).round() / f
}

/// `x` rounded, as text.
pub fn fmt_num(x: f64) -> String {
    format!("{}", round(x))
}

/// A baseline as evidence (`null` when there is none).
pub fn base_json(b: Option<&Baseline>) -> Value {
    match b {
        Some(b) => {
            json!({"median": round(b.median), "mean": round(b.mean), "mad": round(b.mad), "n": b.n, "seasonal": b.seasonal})
        }
        None => Value::Null,
    }
}

/// A signal's name in a sentence ("cost per request").
pub fn signal_words(signal: Signal) -> String {
    signal.as_str().replace('_', " ")
}

/// The `--scope` arguments that name `labels` on the command line.
pub fn scope_args(labels: &Scope) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("--scope {k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A scalar drift in words, quoting the centre the test used (the mean of a rate,
/// the median otherwise) as the evidence shows it.
pub fn scalar_summary(
    signal: Signal,
    scope: &str,
    value: f64,
    base: Option<&Baseline>,
    test: &Test,
) -> String {
    let name = signal_words(signal);
    let proportion = is_proportion(signal);
    let center = |b: &Baseline| if proportion { b.mean } else { b.median };
    let shown = |x: f64| match proportion {
        true => format!("{}%", fmt_num(x * 100.0)),
        false => fmt_num(x),
    };
    match base {
        Some(b) if signal == Signal::Requests && value == 0.0 => format!(
            "no requests at all on {scope} in this bucket, where its {} baseline expects {}: is the gateway down, or has its log stopped being written?",
            if b.seasonal { "seasonal" } else { "recent" },
            fmt_num(b.median),
        ),
        // A relative change against zero is no number a person can read.
        Some(b) if center(b) == 0.0 => format!(
            "{name} on {scope} is {}, against none before (its {} baseline is 0; z={:.1}, p={:.1e})",
            shown(value),
            if b.seasonal { "seasonal" } else { "recent" },
            test.z,
            test.p_value
        ),
        Some(b) => format!(
            "{name} on {scope} is {}, {:.0}% {} its {} baseline {} (z={:.1}, p={:.1e})",
            shown(value),
            test.rel.abs() * 100.0,
            movement(test.sign),
            if b.seasonal { "seasonal" } else { "recent" },
            shown(center(b)),
            test.z,
            test.p_value
        ),
        None => format!("{name} on {scope} is {}, past its hard limit", shown(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(rel: f64) -> Test {
        Test {
            sign: 1.0,
            rel,
            diff: 0.004,
            z: 9.0,
            p_value: 1e-9,
            name: "exact binomial test",
        }
    }

    fn base(mean: f64, median: f64) -> Baseline {
        Baseline {
            median,
            mad: 0.0,
            mean,
            n: 24,
            seasonal: true,
            mean_dev: 0.0,
        }
    }

    #[test]
    fn a_summary_against_a_zero_baseline_says_so_in_words() {
        let s = scalar_summary(
            Signal::ErrorRate,
            "global",
            0.004,
            Some(&base(0.0, 0.0)),
            &test(4e9),
        );
        assert_eq!(
            s,
            "error rate on global is 0.4%, against none before (its seasonal baseline is 0; z=9.0, p=1.0e-9)"
        );
    }

    #[test]
    fn a_rate_summary_quotes_the_mean_the_test_used_and_the_evidence_shows() {
        let b = base(0.02, 0.0);
        let s = scalar_summary(Signal::ErrorRate, "global", 0.1, Some(&b), &test(4.0));
        assert!(
            s.contains("is 10%, 400% above its seasonal baseline 2%"),
            "{s}"
        );
        assert_eq!(base_json(Some(&b))["mean"], 0.02);
        let s = scalar_summary(
            Signal::CostPerRequest,
            "model=m",
            0.006,
            Some(&base(0.0051, 0.005)),
            &test(0.2),
        );
        assert!(
            s.contains("is 0.006, 20% above its seasonal baseline 0.005"),
            "{s}"
        );
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(round(0.123456), 0.1235);
        assert_eq!(round(123456.7), 123457.0);
        assert_eq!(round(0.0), 0.0);
        assert!(round(f64::NAN).is_nan());
        assert_eq!(fmt_num(2.0), "2");
    }
}
