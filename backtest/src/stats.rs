//! Multiple-testing statistics: the probabilistic and deflated Sharpe ratios (Bailey & López
//! de Prado, 2014) and the probability of backtest overfitting by combinatorially symmetric
//! cross-validation (Bailey, Borwein, López de Prado & Zhu, 2015); the test of a difference of
//! two Sharpe ratios (Jobson & Korkie, 1981; Memmel, 2003).
//!
//! Sharpe ratios here are per bar (not annualised), as in the papers' formulas.

use serde::{Deserialize, Serialize};

/// The Euler-Mascheroni constant.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Standard normal cumulative distribution.
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal quantile: Acklam's rational approximation refined by one Halley step
/// against the exact CDF, accurate to about 1e-15.
pub fn norm_ppf(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let lo = 0.02425;
    let x = if p < lo {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - lo {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let e = norm_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// Probabilistic Sharpe ratio: the probability that the true per-bar Sharpe exceeds
/// `benchmark`, given an estimate `sr` from `t` bars with skewness `skew` and (non-excess)
/// kurtosis `kurt`.
pub fn probabilistic_sharpe(sr: f64, benchmark: f64, t: usize, skew: f64, kurt: f64) -> f64 {
    let var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr;
    norm_cdf((sr - benchmark) * ((t as f64 - 1.0).sqrt()) / var.sqrt())
}

/// The Sharpe ratio the best of `trials` independent strategies with zero true Sharpe is
/// expected to show, when their estimated Sharpe ratios have variance `variance`.
pub fn expected_max_sharpe(trials: usize, variance: f64) -> f64 {
    if trials < 2 {
        return 0.0;
    }
    let n = trials as f64;
    variance.sqrt()
        * ((1.0 - EULER_GAMMA) * norm_ppf(1.0 - 1.0 / n)
            + EULER_GAMMA * norm_ppf(1.0 - 1.0 / (n * std::f64::consts::E)))
}

/// The deflated Sharpe ratio and its parts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Deflated {
    /// The Sharpe ratio the best of the trials would show by luck alone (per bar).
    #[serde(with = "crate::nonfinite")]
    pub expected_max: f64,
    /// Probability that the true Sharpe exceeds `expected_max`: the deflated Sharpe ratio.
    #[serde(with = "crate::nonfinite")]
    pub dsr: f64,
}

/// Deflates a selected strategy's per-bar Sharpe ratio for the number of trials and the
/// variance of the trials' Sharpe ratios.
pub fn deflated_sharpe(
    sr: f64,
    t: usize,
    skew: f64,
    kurt: f64,
    trials: usize,
    variance: f64,
) -> Deflated {
    let expected_max = expected_max_sharpe(trials, variance);
    Deflated {
        expected_max,
        dsr: probabilistic_sharpe(sr, expected_max, t, skew, kurt),
    }
}

/// The best of `active.len()` strategies by per-bar Sharpe ratio, each over the bars it held a
/// position (its active returns), deflated for how many were tried and the variance of their
/// Sharpe ratios: its index, its Sharpe ratio and the deflation. The best's bar count and
/// return moments come from the same active bars as its Sharpe ratio, so a strategy that
/// traded on a few bars is not credited with the evidence of the whole period. `None` when
/// fewer than two have a finite Sharpe ratio.
pub fn deflate_best(active: &[Vec<f64>]) -> Option<(usize, f64, Deflated)> {
    let sharpe = |r: &[f64]| {
        let n = r.len() as f64;
        let m = r.iter().sum::<f64>() / n;
        m / (r.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    let srs: Vec<f64> = active.iter().map(|r| sharpe(r)).collect();
    let finite: Vec<f64> = srs.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < 2 {
        return None;
    }
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    let variance =
        finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (finite.len() as f64 - 1.0);
    let (best, &sr) = srs
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let (skew, kurt) = moments(&active[best]);
    let deflated = deflated_sharpe(sr, active[best].len(), skew, kurt, active.len(), variance);
    Some((best, sr, deflated))
}

/// Sample skewness and non-excess kurtosis of returns (population moments, as in the papers).
pub fn moments(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let m2 = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
    let m3 = x.iter().map(|v| (v - m).powi(3)).sum::<f64>() / n;
    let m4 = x.iter().map(|v| (v - m).powi(4)).sum::<f64>() / n;
    (m3 / m2.powf(1.5), m4 / (m2 * m2))
}

/// Two strategies' Sharpe ratios on the same bars, and whether they differ more than chance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SharpeDifference {
    /// The first's per-bar Sharpe ratio less the second's.
    pub difference: f64,
    /// The difference over its standard error: beyond ±1.96, it is unlikely to be chance (5 %,
    /// two-sided).
    pub z: f64,
    /// Bars on which both had a return.
    pub bars: usize,
}

/// Tests the difference of the per-bar Sharpe ratios of `a` and `b`, returns on the same
/// bars (a bar counts when both are finite), by Jobson and Korkie's statistic with Memmel's
/// correction (2003): with Sharpe ratios s₁, s₂, correlation ρ and T bars, the difference's
/// variance is (2(1 − ρ) + ½(s₁² + s₂² − 2 s₁ s₂ ρ²)) / T. It assumes returns independent from
/// bar to bar and normal, so with fat tails it understates the uncertainty. `None` with fewer
/// than three such bars or when either does not vary.
pub fn sharpe_difference(a: &[f64], b: &[f64]) -> Option<SharpeDifference> {
    let pairs: Vec<(f64, f64)> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (*x, *y))
        .collect();
    let t = pairs.len();
    if t < 3 {
        return None;
    }
    let n = t as f64;
    let (ma, mb) = pairs
        .iter()
        .fold((0.0, 0.0), |(p, q), (x, y)| (p + x / n, q + y / n));
    let (mut vaa, mut vbb, mut vab) = (0.0, 0.0, 0.0);
    for (x, y) in &pairs {
        vaa += (x - ma) * (x - ma);
        vbb += (y - mb) * (y - mb);
        vab += (x - ma) * (y - mb);
    }
    let (da, db) = ((vaa / (n - 1.0)).sqrt(), (vbb / (n - 1.0)).sqrt());
    // A constant series leaves rounding's residue as its spread.
    if da <= 1e-12 * ma.abs() || db <= 1e-12 * mb.abs() || da == 0.0 || db == 0.0 {
        return None;
    }
    let (sa, sb) = (ma / da, mb / db);
    let rho = vab / (vaa * vbb).sqrt();
    let variance = (2.0 * (1.0 - rho) + 0.5 * (sa * sa + sb * sb - 2.0 * sa * sb * rho * rho)) / n;
    let difference = sa - sb;
    let z = if difference == 0.0 {
        0.0
    } else {
        difference / variance.max(0.0).sqrt()
    };
    Some(SharpeDifference {
        difference,
        z,
        bars: t,
    })
}

/// The result of combinatorially symmetric cross-validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pbo {
    /// Probability of backtest overfitting: the share of splits where the in-sample best
    /// strategy ranks in the bottom half out of sample.
    #[serde(with = "crate::nonfinite")]
    pub pbo: f64,
    /// Logit of the out-of-sample relative rank of the in-sample best, per split.
    pub logits: Vec<f64>,
    /// Splits evaluated: C(S, S/2).
    pub splits: usize,
}

/// Probability of backtest overfitting of `returns[strategy][bar]` (all strategies over the
/// same bars), cutting the bars into `s` (even) blocks and scoring by mean/std (Sharpe).
///
/// Returns `None` if there are fewer than two strategies or `s` is odd, below 2, or larger
/// than the bars allow.
pub fn pbo(returns: &[Vec<f64>], s: usize) -> Option<Pbo> {
    let n = returns.len();
    let t = returns.first()?.len();
    if n < 2 || s < 2 || s % 2 == 1 || t < 2 * s || returns.iter().any(|r| r.len() != t) {
        return None;
    }
    // Per strategy and block: count, sum and sum of squares, so every split's Sharpe comes
    // from block totals.
    let bounds: Vec<(usize, usize)> = (0..s).map(|b| (b * t / s, (b + 1) * t / s)).collect();
    let blocks: Vec<Vec<(f64, f64, f64)>> = returns
        .iter()
        .map(|r| {
            bounds
                .iter()
                .map(|&(a, b)| {
                    let xs = r[a..b].iter().filter(|v| v.is_finite());
                    xs.fold((0.0, 0.0, 0.0), |(c, s1, s2), v| {
                        (c + 1.0, s1 + v, s2 + v * v)
                    })
                })
                .collect()
        })
        .collect();
    let sharpe = |strat: usize, mask: u64, take: bool| {
        let (mut c, mut s1, mut s2) = (0.0, 0.0, 0.0);
        for (b, &(bc, b1, b2)) in blocks[strat].iter().enumerate() {
            if ((mask >> b) & 1 == 1) == take {
                c += bc;
                s1 += b1;
                s2 += b2;
            }
        }
        let mean = s1 / c;
        let var = (s2 - c * mean * mean) / (c - 1.0);
        if var > 0.0 {
            mean / var.sqrt()
        } else {
            f64::NAN
        }
    };
    let mut logits = Vec::new();
    for mask in 0u64..(1u64 << s) {
        if mask.count_ones() as usize != s / 2 {
            continue;
        }
        let is: Vec<f64> = (0..n).map(|k| sharpe(k, mask, true)).collect();
        // The in-sample best; the first among equals, so the result is deterministic.
        let best = (0..n)
            .filter(|k| is[*k].is_finite())
            .max_by(|a, b| is[*a].total_cmp(&is[*b]).then(b.cmp(a)))?;
        let oos: Vec<f64> = (0..n).map(|k| sharpe(k, mask, false)).collect();
        let below = oos.iter().filter(|v| **v < oos[best]).count() as f64;
        let ties = oos.iter().filter(|v| **v == oos[best]).count() as f64;
        // Relative rank in (0, 1): average rank among ties, over N + 1.
        let omega = (below + (ties + 1.0) / 2.0) / (n as f64 + 1.0);
        logits.push((omega / (1.0 - omega)).ln());
    }
    let splits = logits.len();
    let pbo = logits.iter().filter(|l| **l <= 0.0).count() as f64 / splits as f64;
    Some(Pbo {
        pbo,
        logits,
        splits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharpe_difference_is_tested_as_by_hand() {
        let a = [
            0.01, -0.02, 0.015, 0.003, -0.004, 0.02, 0.001, -0.006, 0.012, 0.004,
        ];
        let b = [
            0.008, -0.015, 0.01, 0.006, -0.01, 0.012, 0.002, -0.002, 0.006, 0.0,
        ];
        // numpy: per-bar Sharpe with ddof 1, np.corrcoef, Memmel's variance.
        let d = sharpe_difference(&a, &b).unwrap();
        assert!(
            (d.difference - 0.105_072_122_518_155_73).abs() < 1e-12,
            "{d:?}"
        );
        assert!((d.z - 0.870_246_443_885_348_6).abs() < 1e-9, "{d:?}");
        assert_eq!(d.bars, 10);
        let back = sharpe_difference(&b, &a).unwrap();
        assert!((back.z + d.z).abs() < 1e-12);
        // A bar missing on either side is left out of both.
        let mut gappy = a.to_vec();
        gappy.push(f64::NAN);
        let mut more = b.to_vec();
        more.push(0.5);
        assert_eq!(sharpe_difference(&gappy, &more), Some(d));
        // The same series do not differ; a constant one has no Sharpe ratio.
        assert_eq!(sharpe_difference(&a, &a).unwrap().z, 0.0);
        assert_eq!(sharpe_difference(&a, &[0.001; 10]), None);
        // A real edge over many bars is told from chance, a small one over few is not.
        let long: Vec<f64> = (0..2000)
            .map(|i| ((i * 7919) % 101) as f64 / 1e4 - 0.0049)
            .collect();
        let better: Vec<f64> = long
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.001 + ((i * 104_729) % 97) as f64 / 1e4 - 0.0048)
            .collect();
        assert!(sharpe_difference(&better, &long).unwrap().z > 5.0);
        assert!(sharpe_difference(&better[..20], &long[..20]).unwrap().z < 1.96);
    }

    #[test]
    fn normal_quantiles_invert_the_cdf() {
        for p in [1e-10, 0.001, 0.02425, 0.3, 0.5, 0.9, 0.99, 1.0 - 1e-9] {
            assert!(
                (norm_cdf(norm_ppf(p)) - p).abs() < 1e-14 * p.max(1e-3),
                "{p}"
            );
        }
        assert!((norm_ppf(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
    }

    /// The numerical example of Bailey & López de Prado (2014), "The Deflated Sharpe Ratio":
    /// 100 trials whose annualised Sharpe ratios have variance 1/2, a best annualised Sharpe
    /// of 2.5 over 1250 daily returns (5 years of 250 days) with skewness -3 and kurtosis 10.
    /// The paper finds an expected maximum Sharpe of 0.1132 per day and a DSR of about 0.90.
    #[test]
    fn a_best_that_traded_on_few_bars_is_deflated_on_those_bars() {
        // Twenty strategies of noise over 250 bars, and one of ten active bars whose per-bar
        // Sharpe ratio (about 0.5) is the best: ten bars are weak evidence of it.
        let noise = |k: usize| -> Vec<f64> {
            (0..250)
                .map(|i| (((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.02)
                .collect()
        };
        let thin: Vec<f64> = [2.0, -0.5, 1.5, 0.2, 1.8, -0.8, 1.2, 0.6, 0.9, -0.2]
            .iter()
            .map(|v| v * 0.01)
            .collect();
        let mut trials: Vec<Vec<f64>> = (0..20).map(noise).collect();
        trials.push(thin.clone());
        let (best, sr, d) = deflate_best(&trials).unwrap();
        assert_eq!(best, 20);
        assert!(sr > 0.4 && sr < 0.8, "{sr}");
        assert!(d.dsr < 0.95, "ten bars at Sharpe {sr} deflate to {}", d.dsr);
        // The same Sharpe ratio held over 250 bars is evidence.
        let mut long = trials.clone();
        long[20] = thin.iter().cycle().take(250).copied().collect();
        let (_, sr_long, d_long) = deflate_best(&long).unwrap();
        assert!((sr_long - sr).abs() < 0.05, "{sr_long} vs {sr}");
        assert!(d_long.dsr > 0.99, "{}", d_long.dsr);
        assert!(deflate_best(&trials[..1]).is_none());
    }

    #[test]
    fn deflated_sharpe_reproduces_the_papers_example() {
        let days = 250.0f64;
        let d = deflated_sharpe(2.5 / days.sqrt(), 1250, -3.0, 10.0, 100, 0.5 / days);
        assert!((d.expected_max - 0.1132).abs() < 5e-5, "{}", d.expected_max);
        assert!((d.dsr - 0.9002).abs() < 5e-4, "{}", d.dsr);
        // More trials, more deflation.
        let more = deflated_sharpe(2.5 / days.sqrt(), 1250, -3.0, 10.0, 1000, 0.5 / days);
        assert!(more.dsr < d.dsr && more.expected_max > d.expected_max);
    }

    /// The probabilistic Sharpe ratio at a zero benchmark with normal returns is Φ(SR·√(T-1)/√(1+SR²/2)).
    #[test]
    fn probabilistic_sharpe_under_normality() {
        let (sr, t) = (0.1, 101);
        let want = norm_cdf(sr * 10.0 / (1.0f64 + sr * sr / 2.0).sqrt());
        assert!((probabilistic_sharpe(sr, 0.0, t, 0.0, 3.0) - want).abs() < 1e-15);
    }

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // Sum of 12 uniforms minus 6: close enough to a standard normal for these tests.
        let mut s = 0.0;
        for _ in 0..12 {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            s += (*seed >> 11) as f64 / (1u64 << 53) as f64;
        }
        s - 6.0
    }

    #[test]
    fn pbo_of_pure_noise_is_about_one_half_and_of_real_skill_near_zero() {
        let mut seed = 42;
        // One draw's splits share its data and are strongly correlated, so average over draws.
        let mut mean = 0.0;
        for _ in 0..40 {
            let noise: Vec<Vec<f64>> = (0..20)
                .map(|_| (0..400).map(|_| lcg(&mut seed)).collect())
                .collect();
            mean += pbo(&noise, 8).unwrap_or_else(|| panic!("pbo")).pbo / 40.0;
        }
        assert!((mean - 0.5).abs() < 0.1, "{mean}");
        let noise: Vec<Vec<f64>> = (0..50)
            .map(|_| (0..1000).map(|_| lcg(&mut seed)).collect())
            .collect();
        let p = pbo(&noise, 16).unwrap_or_else(|| panic!("pbo"));
        assert_eq!(p.splits, 12_870); // C(16, 8), as in the paper's setup
        let mut skilled = noise.clone();
        for v in skilled[7].iter_mut() {
            *v += 0.5;
        }
        let p = pbo(&skilled, 16).unwrap_or_else(|| panic!("pbo"));
        assert!(p.pbo < 0.01, "{}", p.pbo);
    }

    /// Two strategies, two blocks, by hand: A wins the first block and loses the second; B the
    /// reverse. Each split picks the in-sample winner, which is the loser out of sample.
    #[test]
    fn pbo_by_hand() {
        let a = vec![1.0, 2.0, 1.5, 1.0, -1.0, -2.0, -1.5, -1.0];
        let b = vec![-1.0, -2.0, -1.5, -1.0, 1.0, 2.0, 1.5, 1.0];
        let p = pbo(&[a, b], 2).unwrap_or_else(|| panic!("pbo"));
        assert_eq!((p.splits, p.pbo), (2, 1.0));
        // Rank 1 of 2 out of sample: omega = 1/3, logit = ln(1/2).
        assert!(p.logits.iter().all(|l| (l - 0.5f64.ln()).abs() < 1e-12));
    }

    /// A noise strategy of `t` daily returns forced to an annualised Sharpe ratio of exactly
    /// `sr` over the whole sample (rescaled to a daily volatility of 1/sqrt(252), re-centred
    /// to a daily mean of sr/252), as in the test cases of Bailey, Borwein, López de Prado &
    /// Zhu (2015), "The Probability of Backtest Overfitting", section 5.
    fn exact_sharpe(seed: &mut u64, t: usize, sr: f64) -> Vec<f64> {
        let x: Vec<f64> = (0..t).map(|_| lcg(seed)).collect();
        let m = x.iter().sum::<f64>() / t as f64;
        let sd = (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (t as f64 - 1.0)).sqrt();
        let (sigma, mu) = (1.0 / 252f64.sqrt(), sr / 252.0);
        x.iter().map(|v| (v - m) / sd * sigma + mu).collect()
    }

    /// The paper's three test cases, N = 100 strategies of T = 1000 daily returns, S = 16
    /// blocks (12,870 splits each):
    /// 1. full overfit: every strategy has a whole-sample Sharpe ratio of exactly zero, so what
    ///    a strategy gains in sample it loses out of sample: the in-sample best is nearly
    ///    always below the median out of sample (PBO close to 1);
    /// 2. high overfit: 99 pure-noise strategies and one with a true Sharpe ratio of 1: the
    ///    in-sample best is mostly one of the lucky noise strategies (PBO well above 0);
    /// 3. low overfit: the same with a true Sharpe ratio of 2: the real strategy wins in
    ///    sample far more often, and the PBO falls well below the second case's.
    #[test]
    fn pbo_reproduces_the_papers_three_test_cases() {
        let mut seed = 2015;
        let (n, t, s) = (100, 1000, 16);
        let full: Vec<Vec<f64>> = (0..n).map(|_| exact_sharpe(&mut seed, t, 0.0)).collect();
        let full = pbo(&full, s).unwrap_or_else(|| panic!("pbo"));
        assert_eq!(full.splits, 12_870);
        let with_skill = |seed: &mut u64, sr: f64| {
            let mut m: Vec<Vec<f64>> = (0..n - 1)
                .map(|_| (0..t).map(|_| lcg(seed) / 252f64.sqrt()).collect())
                .collect();
            m.push(exact_sharpe(seed, t, sr));
            pbo(&m, s).unwrap_or_else(|| panic!("pbo")).pbo
        };
        assert_eq!(full.pbo, 1.0, "full overfit");
        // One draw's splits share its data, so the skilled cases are averaged over draws.
        let draws = 6;
        let high = (0..draws).map(|_| with_skill(&mut seed, 1.0)).sum::<f64>() / draws as f64;
        let low = (0..draws).map(|_| with_skill(&mut seed, 2.0)).sum::<f64>() / draws as f64;
        assert!(high > 0.3, "high overfit: {high}");
        assert!(
            low < 0.25 && low < high - 0.1,
            "low overfit: {low} (high {high})"
        );
    }
}
