//! The simple baselines of return targets: a linear model on four classic features, and two
//! of those features alone, scored like the model's arms on the same test samples.
//!
//! Features of a sample (its window's last bar `end`, nothing after it): momentum, the log
//! return over bars `end-59 ..= end-5` (the last week skipped); short-term reversal, the log
//! return over `end-4 ..= end`; volatility, the log of the last 20 bars' root mean square
//! return; volume trend, the log volume change over the last 5 bars. Each is standardised
//! across the instruments of its date (so the model ranks instruments, as the targets do), and
//! the forward return is demeaned across them; least squares on the training samples gives
//! the weights. Nothing about the test period enters the fit.

use std::collections::BTreeMap;

use crate::features::InstrumentSeries;
use crate::finetune::{IcReport, SampleSet, ic_report};

/// Features per sample.
const K: usize = 4;

/// The feature names, in order.
pub const NAMES: [&str; K] = [
    "momentum 60-5",
    "reversal 5",
    "volatility 20",
    "volume trend 5",
];

fn sum(x: &[f64]) -> f64 {
    x.iter().filter(|v| v.is_finite()).sum()
}

fn raw(s: &InstrumentSeries, end: usize) -> [f64; K] {
    let lo = |k: usize| end.saturating_sub(k);
    let momentum = if end >= 5 {
        sum(&s.logret[lo(59)..=end - 5])
    } else {
        f64::NAN
    };
    let reversal = sum(&s.logret[lo(4)..=end]);
    let volatility = crate::vol::trailing_log_vol(s, end, 20);
    let volume: f64 = s.feats[lo(4)..=end].iter().map(|f| f64::from(f[3])).sum();
    [momentum, reversal, volatility, volume]
}

/// Standardised features of every sample of `set`, and the forward returns demeaned per date.
#[allow(clippy::needless_range_loop)] // a feature index across the samples of a date
fn design(set: &SampleSet) -> (Vec<[f64; K]>, Vec<f64>) {
    let mut x: Vec<[f64; K]> = set
        .samples
        .iter()
        .map(|s| raw(&set.universe.series[s.series], s.end))
        .collect();
    let mut y: Vec<f64> = set.samples.iter().map(|s| s.ret).collect();
    let mut by_row: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in set.samples.iter().enumerate() {
        by_row.entry(s.row).or_default().push(i);
    }
    for idx in by_row.values() {
        let n = idx.len() as f64;
        for k in 0..K {
            let vals: Vec<f64> = idx.iter().map(|&i| x[i][k]).collect();
            let m = vals.iter().sum::<f64>() / n;
            let sd = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
            for &i in idx {
                x[i][k] = if sd > 0.0 && sd.is_finite() {
                    (x[i][k] - m) / sd
                } else {
                    0.0
                };
            }
        }
        let my = idx.iter().map(|&i| y[i]).sum::<f64>() / n;
        for &i in idx {
            y[i] -= my;
        }
    }
    (x, y)
}

/// Solves `a · b = c` for `b` (Gaussian elimination with partial pivoting); `None` when `a` is
/// singular.
pub(crate) fn solve<const N: usize>(mut a: [[f64; N]; N], mut c: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let p = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[p][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, p);
        c.swap(col, p);
        for r in 0..N {
            if r != col {
                let f = a[r][col] / a[col][col];
                let pivot = a[col];
                for (x, p) in a[r][col..].iter_mut().zip(&pivot[col..]) {
                    *x -= f * p;
                }
                c[r] -= f * c[col];
            }
        }
    }
    Some(std::array::from_fn(|i| c[i] / a[i][i]))
}

/// The linear model's weights, fitted on `train` (`None` when the features are collinear).
pub fn fit(train: &SampleSet) -> Option<[f64; K]> {
    let (x, y) = design(train);
    let (mut a, mut c) = ([[0.0; K]; K], [0.0; K]);
    for (xi, yi) in x.iter().zip(&y) {
        if !yi.is_finite() || xi.iter().any(|v| !v.is_finite()) {
            continue;
        }
        for i in 0..K {
            for j in 0..K {
                a[i][j] += xi[i] * xi[j];
            }
            c[i] += xi[i] * yi;
        }
    }
    solve(a, c)
}

/// The baselines on `test`, the linear model fitted on `train`: (name, test scores).
pub fn baselines(train: &SampleSet, test: &SampleSet) -> Vec<(String, IcReport)> {
    let (x, _) = design(test);
    let score = |f: &dyn Fn(&[f64; K]) -> f64| -> Vec<f32> {
        #[allow(clippy::cast_possible_truncation)]
        x.iter().map(|xi| f(xi) as f32).collect()
    };
    let mut out = Vec::new();
    if let Some(w) = fit(train) {
        let pred = score(&|xi| (0..K).map(|k| w[k] * xi[k]).sum());
        out.push(("linear (4 features)".to_string(), ic_report(test, &pred)));
    }
    out.push((NAMES[0].to_string(), ic_report(test, &score(&|xi| xi[0]))));
    out.push((
        format!("-{}", NAMES[1]),
        ic_report(test, &score(&|xi| -xi[1])),
    ));
    let (name, k, sign) = best_single(train);
    out.push((
        format!("best single factor on training ({name})"),
        ic_report(test, &score(&|xi| sign * xi[k])),
    ));
    out
}

/// The single feature, either way round, with the best mean rank IC on `train`: the factor a
/// researcher would have picked before the test, and its (name, index, sign).
pub fn best_single(train: &SampleSet) -> (String, usize, f64) {
    let (x, _) = design(train);
    let mut best = (String::new(), 0, 1.0, f64::NEG_INFINITY);
    for k in 0..K {
        for sign in [1.0, -1.0] {
            #[allow(clippy::cast_possible_truncation)]
            let pred: Vec<f32> = x.iter().map(|xi| (sign * xi[k]) as f32).collect();
            let ic = ic_report(train, &pred).rank_ic;
            if ic.is_finite() && ic > best.3 {
                let name = if sign > 0.0 {
                    NAMES[k].to_string()
                } else {
                    format!("-{}", NAMES[k])
                };
                best = (name, k, sign, ic);
            }
        }
    }
    (best.0, best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_recovers_known_weights() {
        let a = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let b = [1.5, -2.0, 0.25];
        let c: [f64; 3] = std::array::from_fn(|i| (0..3).map(|j| a[i][j] * b[j]).sum());
        let got = solve(a, c).unwrap_or([f64::NAN; 3]);
        for (g, w) in got.iter().zip(b) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert!(solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]).is_none());
    }
}
