//! The statistical tests baselines and detectors use, on statrs distributions. Each
//! respects sample size: the same relative change is significant in a thousand
//! requests and not in ten.

use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, DiscreteCDF, Normal, StudentsT};

fn std_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("standard normal")
}

/// Two-sided p-value of a standard normal z.
pub fn two_sided_p(z: f64) -> f64 {
    if !z.is_finite() {
        return 0.0;
    }
    2.0 * std_normal().sf(z.abs())
}

/// One-sided p-value of z in the direction `up` (true: larger is the alternative).
pub fn one_sided_p(z: f64, up: bool) -> f64 {
    let z = if up { z } else { -z };
    if z.is_nan() {
        return 1.0;
    }
    std_normal().sf(z)
}

/// Survival function of the chi-square distribution.
pub fn chi2_sf(chi2: f64, df: f64) -> f64 {
    match ChiSquared::new(df) {
        Ok(d) if chi2.is_finite() => d.sf(chi2),
        _ => 0.0,
    }
}

/// Score test of a proportion: `x` successes in `n` trials against a baseline rate
/// `p0` (floored away from 0 and 1). Returns the z statistic.
pub fn proportion_z(x: u64, n: u64, p0: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let p0 = p0.clamp(1e-4, 1.0 - 1e-4);
    let n = n as f64;
    // Continuity correction toward the null.
    let diff = x as f64 - n * p0;
    let corrected = diff.signum() * (diff.abs() - 0.5).max(0.0);
    corrected / (n * p0 * (1.0 - p0)).sqrt()
}

/// Exact binomial test of `x` successes in `n` trials against a baseline rate `p0`,
/// as the z of a standard normal with the same one-sided p-value: for counts too
/// small for the normal approximation (a quiet tenant's 16 requests).
pub fn binomial_z(x: u64, n: u64, p0: f64) -> f64 {
    let p0 = p0.clamp(1e-4, 1.0 - 1e-4);
    let Ok(dist) = Binomial::new(p0, n) else {
        return 0.0;
    };
    let expected = n as f64 * p0;
    // P(X >= x) above the expectation, P(X <= x) below it.
    let (p, sign) = match x as f64 >= expected {
        true => (1.0 - dist.cdf(x.saturating_sub(1)), 1.0),
        false => (dist.cdf(x), -1.0),
    };
    let p = p.clamp(1e-300, 0.5);
    sign * std_normal().inverse_cdf(1.0 - p).max(0.0)
}

/// Test of a count against an expected Poisson mean: z of the observed count with
/// the mean's own variance (a normal approximation, fine above ~10 expected).
pub fn poisson_z(observed: f64, expected: f64) -> f64 {
    let expected = expected.max(1.0);
    (observed - expected) / expected.sqrt()
}

/// A bucket's mean against a baseline's: `diff` over the standard error of the
/// bucket's own `n` samples (`variance`) and the baseline's spread between buckets
/// (`spread`, learned from `base_n` buckets). Student's t with Welch-Satterthwaite
/// degrees of freedom, returned as the z of a standard normal with the same
/// one-sided p-value: twenty scores do not know their own variance well, and a
/// normal reading of their t makes one bucket in a few thousand look like a drop.
pub fn mean_shift_z(diff: f64, variance: f64, n: u64, spread: f64, base_n: u64) -> f64 {
    let own = variance / n.max(1) as f64;
    let between = spread * spread;
    let se2 = (own + between).max(1e-18);
    let t = diff / se2.sqrt();
    let terms = own * own / (n.max(2) - 1) as f64 + between * between / (base_n.max(2) - 1) as f64;
    let df = match terms > 0.0 {
        true => se2 * se2 / terms,
        false => f64::INFINITY,
    };
    let Ok(dist) = StudentsT::new(0.0, 1.0, df.clamp(1.0, 1e6)) else {
        return t;
    };
    let p = dist.sf(t.abs()).min(0.5);
    // Past what a double can tell apart, the t is its own z.
    if p < 1e-300 {
        return t;
    }
    diff.signum() * -std_normal().inverse_cdf(p)
}

/// Welch's t-test of two samples given as (mean, variance, n). Returns (t, df,
/// two-sided p).
pub fn welch(a: (f64, f64, f64), b: (f64, f64, f64)) -> Option<(f64, f64, f64)> {
    let ((ma, va, na), (mb, vb, nb)) = (a, b);
    if na < 2.0 || nb < 2.0 {
        return None;
    }
    let (sa, sb) = (va / na, vb / nb);
    let se2 = sa + sb;
    if se2 <= 0.0 {
        return None;
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df.max(1.0)).ok()?;
    Some((t, df, 2.0 * dist.sf(t.abs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mean_shift_of_few_samples_is_read_on_students_t() {
        // Many samples: the normal reading.
        let z = mean_shift_z(-0.05, 0.01, 10_000, 0.0, 24);
        assert!((z + 50.0).abs() < 0.5, "{z}");
        // Twenty-one scores, t = -4.12: p about 2.6e-4 on t(20), not 1.9e-5.
        let se = (0.0225f64 / 21.0).sqrt();
        let z = mean_shift_z(-4.12 * se, 0.0225, 21, 0.0, 24);
        assert!((-3.6..-3.3).contains(&z), "{z}");
        // The baseline's spread adds to the error, with the baseline's own df.
        assert!(mean_shift_z(-0.1, 0.0225, 21, 0.03, 24).abs() < z.abs());
    }

    #[test]
    fn the_exact_binomial_test_agrees_with_the_normal_one_on_large_counts_and_judges_small_ones() {
        // Large counts: both say the same.
        let (exact, approx) = (binomial_z(130, 1000, 0.1), proportion_z(130, 1000, 0.1));
        assert!((exact - approx).abs() < 0.3, "{exact} vs {approx}");
        // Half of 16 requests failing against a 1% rate: far beyond chance.
        assert!(binomial_z(8, 16, 0.01) > 6.0);
        // One failure in 16 against 1%: nothing to see.
        assert!(binomial_z(1, 16, 0.01) < 2.0);
        // Fewer than expected reads as a negative z.
        assert!(binomial_z(0, 200, 0.2) < -4.0);
    }

    #[test]
    fn normal_p_values() {
        assert!((two_sided_p(1.96) - 0.05).abs() < 1e-3);
        assert!((one_sided_p(1.645, true) - 0.05).abs() < 1e-3);
        assert!(one_sided_p(1.645, false) > 0.9);
    }

    #[test]
    fn proportion_test_respects_sample_size() {
        // 2% → 4% is noise in 100 requests and certain in 10,000.
        assert!(one_sided_p(proportion_z(4, 100, 0.02), true) > 0.05);
        assert!(one_sided_p(proportion_z(400, 10_000, 0.02), true) < 1e-6);
    }

    #[test]
    fn chi_square_and_welch() {
        assert!((chi2_sf(3.841, 1.0) - 0.05).abs() < 1e-3);
        let (_, _, p) = welch((0.85, 0.01, 200.0), (0.80, 0.01, 200.0)).unwrap();
        assert!(p < 1e-4, "{p}");
        let (_, _, p) = welch((0.85, 0.01, 10.0), (0.84, 0.01, 10.0)).unwrap();
        assert!(p > 0.5, "{p}");
        assert!(welch((0.8, 0.0, 1.0), (0.8, 0.0, 5.0)).is_none());
    }
}
