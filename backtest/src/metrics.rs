//! Performance metrics of a [`Book`] over any range of bars: by split, by walk-forward fold
//! and by calendar year; and the decay of the information coefficient with the horizon.

use std::ops::Range;

use lim_market::Timestamp;
use serde::{Deserialize, Serialize};

use crate::eval::Mat;
use crate::topk::{Book, Target, spearman, summary};

/// Metrics of a book over a range of bars. Statistics use active bars only (a non-empty book
/// and a known return); `inactive_bars` counts the rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Active bars.
    pub bars: usize,
    /// Bars in the range with no book or no known return.
    pub inactive_bars: usize,
    /// Annualised geometric return.
    #[serde(with = "crate::nonfinite")]
    pub ann_return: f64,
    /// Annualised volatility.
    #[serde(with = "crate::nonfinite")]
    pub ann_vol: f64,
    /// Annualised Sharpe ratio (no risk-free rate).
    #[serde(with = "crate::nonfinite")]
    pub sharpe: f64,
    /// Annualised Sortino ratio (downside deviation against zero).
    #[serde(with = "crate::nonfinite")]
    pub sortino: f64,
    /// Annualised return over the magnitude of the maximum drawdown.
    #[serde(with = "crate::nonfinite")]
    pub calmar: f64,
    /// Maximum drawdown (negative).
    #[serde(with = "crate::nonfinite")]
    pub max_dd: f64,
    /// Longest time under water, in bars.
    pub max_dd_bars: usize,
    /// Mean two-sided turnover per bar.
    #[serde(with = "crate::nonfinite")]
    pub turnover: f64,
    /// Share of active bars with a positive net return.
    #[serde(with = "crate::nonfinite")]
    pub hit_rate: f64,
    /// Mean gross exposure.
    #[serde(with = "crate::nonfinite")]
    pub exposure: f64,
    /// Mean Pearson IC against the next bar's return.
    #[serde(with = "crate::nonfinite")]
    pub ic: f64,
    /// Mean Spearman (rank) IC.
    #[serde(with = "crate::nonfinite")]
    pub rank_ic: f64,
    /// IC mean over its standard deviation across bars (not annualised; Qlib's ICIR).
    #[serde(with = "crate::nonfinite")]
    pub icir: f64,
    /// Rank IC mean over its standard deviation across bars (Qlib's Rank ICIR). Metrics
    /// written before it existed read NaN.
    #[serde(with = "crate::nonfinite", default = "not_measured")]
    pub rank_icir: f64,
}

fn not_measured() -> f64 {
    f64::NAN
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn std(x: &[f64]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() as f64 - 1.0)).sqrt()
}

fn finite(x: &[f64]) -> Vec<f64> {
    x.iter().copied().filter(|v| !v.is_nan()).collect()
}

impl Metrics {
    /// Measures `book` over `range`, annualising with `periods` bars a year.
    pub fn of(book: &Book, range: Range<usize>, periods: f64) -> Metrics {
        let net = finite(&book.net[range.clone()]);
        let (ann_return, sharpe, max_dd) = summary(&net, periods);
        let downside =
            (net.iter().map(|r| r.min(0.0).powi(2)).sum::<f64>() / net.len() as f64).sqrt();
        let mut eq = 1.0f64;
        let (mut peak, mut under, mut longest) = (1.0f64, 0usize, 0usize);
        for r in &net {
            eq *= 1.0 + r;
            if eq >= peak {
                peak = eq;
                under = 0;
            } else {
                under += 1;
                longest = longest.max(under);
            }
        }
        let rank_ic = finite(&book.ic[range.clone()]);
        let ic = finite(&book.ic_pearson[range.clone()]);
        Metrics {
            bars: net.len(),
            inactive_bars: range.len() - net.len(),
            ann_return,
            ann_vol: std(&net) * periods.sqrt(),
            sharpe,
            sortino: mean(&net) / downside * periods.sqrt(),
            calmar: ann_return / max_dd.abs(),
            max_dd,
            max_dd_bars: longest,
            turnover: mean(&finite(&book.turnover[range.clone()])),
            hit_rate: net.iter().filter(|r| **r > 0.0).count() as f64 / net.len() as f64,
            exposure: mean(&finite(&book.exposure[range.clone()])),
            ic: mean(&ic),
            icir: mean(&ic) / std(&ic),
            rank_ic: mean(&rank_ic),
            rank_icir: mean(&rank_ic) / std(&rank_ic),
        }
    }
}

/// One calendar year of a book.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Year {
    /// The year.
    pub year: i32,
    /// Compounded net return.
    #[serde(with = "crate::nonfinite")]
    pub ret: f64,
    /// Annualised Sharpe ratio within the year.
    #[serde(with = "crate::nonfinite")]
    pub sharpe: f64,
    /// Maximum drawdown within the year.
    #[serde(with = "crate::nonfinite")]
    pub max_dd: f64,
    /// Active bars.
    pub bars: usize,
}

/// The book year by year over `range` (`times` are the bars' times).
pub fn per_year(book: &Book, times: &[Timestamp], range: Range<usize>, periods: f64) -> Vec<Year> {
    let mut out: Vec<Year> = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let year = times[start].ymd().0;
        let mut end = start;
        while end < range.end && times[end].ymd().0 == year {
            end += 1;
        }
        let net = finite(&book.net[start..end]);
        if !net.is_empty() {
            let (_, sharpe, max_dd) = summary(&net, periods);
            let ret = net.iter().fold(1.0, |e, r| e * (1.0 + r)) - 1.0;
            out.push(Year {
                year,
                ret,
                sharpe,
                max_dd,
                bars: net.len(),
            });
        }
        start = end;
    }
    out
}

/// Metrics on `folds` consecutive, equal folds of `range`: how stable the result is through
/// time. Signals only ever use the past, so nothing is refitted between folds.
pub fn walk_forward(
    book: &Book,
    range: Range<usize>,
    folds: usize,
    periods: f64,
) -> Vec<(Range<usize>, Metrics)> {
    let len = range.len();
    (0..folds.max(1))
        .map(|f| {
            let r =
                range.start + f * len / folds.max(1)..range.start + (f + 1) * len / folds.max(1);
            (r.clone(), Metrics::of(book, r, periods))
        })
        .filter(|(r, _)| !r.is_empty())
        .collect()
}

/// A book's result on one selection fold (see [`crate::folds`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// Active bars in the fold.
    pub bars: usize,
    /// Annualised Sharpe ratio over them (NaN with fewer than two, or without variation).
    #[serde(with = "crate::nonfinite")]
    pub sharpe: f64,
}

/// The book's Sharpe ratio on each fold (each a set of ranges, as [`crate::folds::blocks`]
/// makes them).
pub fn on_folds(book: &Book, folds: &[Vec<Range<usize>>], periods: f64) -> Vec<Fold> {
    folds
        .iter()
        .map(|ranges| {
            let net: Vec<f64> = ranges
                .iter()
                .flat_map(|r| book.net[r.clone()].iter().copied())
                .filter(|v| !v.is_nan())
                .collect();
            let sharpe = if net.len() < 2 {
                f64::NAN
            } else {
                summary(&net, periods).1
            };
            Fold {
                bars: net.len(),
                sharpe,
            }
        })
        .collect()
}

/// Mean rank IC of a signal against the return over the next `h` bars, for each horizon.
pub fn ic_decay(
    signal: &Mat,
    close: &Mat,
    horizons: &[usize],
    range: Range<usize>,
) -> Vec<(usize, f64)> {
    let sig = crate::topk::Rows::from_mat(signal);
    horizons
        .iter()
        .map(|&h| {
            let mut fwd = Mat::filled(close.t, close.n, f64::NAN);
            for j in 0..close.n {
                let c = close.col(j);
                for i in 0..close.t.saturating_sub(h) {
                    fwd.data[j * close.t + i] = c[i + h] / c[i] - 1.0;
                }
            }
            let target = Target::from_forward(&fwd);
            let (mut buf, mut scratch) = (Vec::new(), crate::ops::RankScratch::default());
            let ics: Vec<f64> = range
                .clone()
                .map(|i| spearman(sig.row(i), &target, i, &mut buf, &mut scratch))
                .filter(|v| !v.is_nan())
                .collect();
            (h, mean(&ics))
        })
        .collect()
}

/// How one return series moves with another over the bars where both are known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoMove {
    /// Bars where both are known.
    pub bars: usize,
    /// Pearson correlation (NaN with fewer than 20 such bars or no variation).
    #[serde(with = "crate::nonfinite")]
    pub correlation: f64,
    /// Beta of `a` on `b`: cov(a, b) / var(b).
    #[serde(with = "crate::nonfinite")]
    pub beta: f64,
}

/// The annualised information ratio of `a` over benchmark `b`: the mean of the active return
/// `a - b` over its standard deviation, over the bars where both are finite (NaN with fewer than
/// 20 such bars).
pub fn information_ratio(a: &[f64], b: &[f64], periods: f64) -> f64 {
    let active: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| x - y)
        .collect();
    if active.len() < 20 {
        return f64::NAN;
    }
    mean(&active) / std(&active) * periods.sqrt()
}

/// The pairs of `a` and `b` where both are finite.
pub fn finite_pairs(a: &[f64], b: &[f64]) -> Vec<(f64, f64)> {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (*x, *y))
        .collect()
}

/// Co-moments of `pairs` about their means: (Σxy, Σxx, Σyy).
fn co_moments(pairs: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = pairs.len() as f64;
    let mx = pairs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pairs.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxy, sxx, syy)
}

/// Pearson correlation of `pairs` (NaN with fewer than three, or without variation).
pub fn pearson(pairs: &[(f64, f64)]) -> f64 {
    if pairs.len() < 3 {
        return f64::NAN;
    }
    let (sxy, sxx, syy) = co_moments(pairs);
    sxy / (sxx * syy).sqrt()
}

/// Correlation and beta of return series `a` against `b` (e.g. a strategy against a baseline),
/// over the bars where both are finite.
pub fn co_move(a: &[f64], b: &[f64]) -> CoMove {
    let pairs = finite_pairs(a, b);
    let bars = pairs.len();
    if bars < 20 {
        return CoMove {
            bars,
            correlation: f64::NAN,
            beta: f64::NAN,
        };
    }
    let (sxy, sxx, syy) = co_moments(&pairs);
    CoMove {
        bars,
        correlation: sxy / (sxx * syy).sqrt(),
        beta: sxy / syy,
    }
}

#[cfg(test)]
mod co_move_tests {
    use super::co_move;

    #[test]
    fn a_scaled_copy_has_correlation_one_and_its_scale_as_beta() {
        let b: Vec<f64> = (0..50)
            .map(|i| ((i * 7919) % 13) as f64 / 100.0 - 0.06)
            .collect();
        let mut a: Vec<f64> = b.iter().map(|v| 2.0 * v + 0.001).collect();
        a[3] = f64::NAN;
        let m = co_move(&a, &b);
        assert_eq!(m.bars, 49);
        assert!((m.correlation - 1.0).abs() < 1e-12 && (m.beta - 2.0).abs() < 1e-12);
        assert!(co_move(&a[..10], &b[..10]).correlation.is_nan());
    }

    #[test]
    fn the_information_ratio_is_the_annualised_sharpe_of_the_active_return() {
        let b: Vec<f64> = (0..60).map(|i| ((i * 31) % 7) as f64 / 100.0).collect();
        let active: Vec<f64> = (0..60).map(|i| 0.001 + ((i % 2) as f64) * 0.002).collect();
        let a: Vec<f64> = b.iter().zip(&active).map(|(x, d)| x + d).collect();
        let (m, sd) = (super::mean(&active), super::std(&active));
        let ir = super::information_ratio(&a, &b, 252.0);
        assert!((ir - m / sd * 252f64.sqrt()).abs() < 1e-9, "{ir}");
        assert!(super::information_ratio(&a[..5], &b[..5], 252.0).is_nan());
    }
}
