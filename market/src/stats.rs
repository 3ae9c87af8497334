//! Basic return statistics, for `lim data show`.

use serde::{Deserialize, Serialize};

/// Summary statistics of a return series (NaN entries are skipped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReturnStats {
    /// Returns used.
    pub count: usize,
    /// Returns that were NaN or infinite and skipped.
    pub skipped: usize,
    /// Mean per-bar return.
    pub mean: f64,
    /// Per-bar standard deviation (sample).
    pub std: f64,
    /// Annualised mean (`mean × periods`).
    pub annual_mean: f64,
    /// Annualised volatility (`std × √periods`).
    pub annual_vol: f64,
    /// Smallest return.
    pub min: f64,
    /// Largest return.
    pub max: f64,
    /// Sample skewness.
    pub skew: f64,
    /// Excess kurtosis.
    pub kurtosis: f64,
}

impl ReturnStats {
    /// Computes statistics of `returns`, annualised with `periods` bars per year.
    pub fn of(returns: &[f64], periods: f64) -> ReturnStats {
        let xs: Vec<f64> = returns.iter().copied().filter(|x| x.is_finite()).collect();
        let n = xs.len();
        let skipped = returns.len() - n;
        let nf = n as f64;
        let mean = xs.iter().sum::<f64>() / nf;
        let m2 = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / nf;
        let m3 = xs.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / nf;
        let m4 = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / nf;
        let std = if n > 1 {
            (m2 * nf / (nf - 1.0)).sqrt()
        } else {
            f64::NAN
        };
        ReturnStats {
            count: n,
            skipped,
            mean,
            std,
            annual_mean: mean * periods,
            annual_vol: std * periods.sqrt(),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            skew: m3 / m2.powf(1.5),
            kurtosis: m4 / (m2 * m2) - 3.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReturnStats;

    #[test]
    fn hand_computed_moments() {
        let s = ReturnStats::of(&[0.01, -0.01, 0.02, f64::NAN], 252.0);
        assert_eq!((s.count, s.skipped), (3, 1));
        assert!((s.mean - 0.02 / 3.0).abs() < 1e-15);
        // sample variance of (0.01, -0.01, 0.02) = 0.000233.. ; std = 0.015275
        assert!((s.std - 0.015_275_252_316_519_466).abs() < 1e-12);
        assert_eq!((s.min, s.max), (-0.01, 0.02));
    }
}
