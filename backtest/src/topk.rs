//! The reference portfolio: a daily top-k equal-weight long book, and its metrics.
//!
//! Conventions (those of the peer reference, so results can be checked against it):
//! * `fwd[t] = close[t+1] / close[t] - 1`, NaN on the last bar;
//! * `w[t]` = 1/k_t on the k largest finite signal values of bar t (ties: leftmost
//!   instrument first), k_t = min(k, number of finite values);
//! * `held[t] = w[t-1]`: the signal seen at the close of t-1 sets the book traded at the
//!   close of t, which earns `fwd[t]` (one bar of execution lag);
//! * `gross[t] = Σ held·fwd` (a missing return counts as 0), `turnover[t] = Σ |held[t] - held[t-1]|`,
//!   `net = gross - cost · turnover`;
//! * statistics over bars with a non-empty book and some known forward return: annualised
//!   geometric return, Sharpe (sample std), maximum drawdown, mean turnover; the daily
//!   Spearman IC of the signal against the forward return, its mean and mean/std.

use serde::{Deserialize, Serialize};

use crate::eval::Mat;
use crate::ops;

/// The reference book's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    /// Names held.
    pub k: usize,
    /// Cost per unit of two-sided turnover (0.001 = 10 bps).
    pub cost: f64,
    /// Bars per year.
    pub periods_per_year: f64,
}

impl Default for TopK {
    fn default() -> TopK {
        TopK { k: 50, cost: 0.001, periods_per_year: 252.0 }
    }
}

/// The reference metrics of one strategy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RefMetrics {
    /// Annualised geometric return of the net equity.
    pub ann_return: f64,
    /// Annualised Sharpe ratio of net returns.
    pub sharpe: f64,
    /// Maximum drawdown (negative).
    pub max_dd: f64,
    /// Mean two-sided turnover per bar.
    pub turnover: f64,
    /// Mean daily Spearman IC.
    pub ic_mean: f64,
    /// IC mean / IC standard deviation.
    pub ic_ir: f64,
}

/// A matrix transposed to rows (one bar across instruments, contiguous).
#[derive(Debug, Clone)]
pub struct Rows {
    /// Bars.
    pub t: usize,
    /// Instruments.
    pub n: usize,
    /// Values, bar by bar.
    pub data: Vec<f64>,
}

impl Rows {
    /// Transposes a column-major matrix.
    pub fn from_mat(m: &Mat) -> Rows {
        let mut data = vec![0.0; m.t * m.n];
        for j in 0..m.n {
            for (i, v) in m.col(j).iter().enumerate() {
                data[i * m.n + j] = *v;
            }
        }
        Rows { t: m.t, n: m.n, data }
    }

    /// Bar `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.n..(i + 1) * self.n]
    }
}

/// Forward one-bar returns of a close matrix, as rows.
pub fn forward_returns(close: &Mat) -> Rows {
    let mut fwd = Mat::filled(close.t, close.n, f64::NAN);
    for j in 0..close.n {
        let c = close.col(j);
        let o = &mut fwd.data[j * close.t..(j + 1) * close.t];
        for i in 0..close.t.saturating_sub(1) {
            o[i] = c[i + 1] / c[i] - 1.0;
        }
    }
    Rows::from_mat(&fwd)
}

/// Equal weights on the `k` largest finite values of a row (leftmost first among ties).
pub fn topk_weights(row: &[f64], k: usize, out: &mut [f64], scratch: &mut Vec<f64>) {
    let s = |v: f64| if v.is_finite() { v } else { f64::NEG_INFINITY };
    scratch.clear();
    scratch.extend(row.iter().map(|v| s(*v)));
    let kk = k.min(scratch.len()).max(1);
    // The k-th largest value, found in linear time.
    let (_, kth, _) = scratch.select_nth_unstable_by(kk - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    let gt = row.iter().filter(|v| s(**v) > kth).count();
    let mut need = k.saturating_sub(gt);
    let mut chosen = 0usize;
    for (o, v) in out.iter_mut().zip(row) {
        let x = s(*v);
        let take = v.is_finite()
            && (x > kth
                || (x == kth && need > 0 && {
                    need -= 1;
                    true
                }));
        *o = if take { 1.0 } else { 0.0 };
        chosen += usize::from(take);
    }
    if chosen > 0 {
        let w = 1.0 / chosen as f64;
        for o in out.iter_mut() {
            *o *= w;
        }
    }
}

/// Spearman correlation of two rows over the instruments finite in both.
pub fn spearman(a: &[f64], b: &[f64], order: &mut Vec<usize>) -> f64 {
    let n = a.len();
    let mask: Vec<bool> = a.iter().zip(b).map(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let m = mask.iter().filter(|v| **v).count();
    if m < 2 {
        return f64::NAN;
    }
    let masked = |x: &[f64]| -> Vec<f64> { x.iter().zip(&mask).map(|(v, k)| if *k { *v } else { f64::NAN }).collect() };
    let (am, bm) = (masked(a), masked(b));
    let mut ra = vec![0.0; n];
    let mut rb = vec![0.0; n];
    ops::rank_avg(&am, &mut ra, order);
    ops::rank_avg(&bm, &mut rb, order);
    let mean = |r: &[f64]| ops::nansum_count(r).0 / m as f64;
    let (ma, mb) = (mean(&ra), mean(&rb));
    let (mut num, mut sa, mut sb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        if mask[i] {
            let (x, y) = (ra[i] - ma, rb[i] - mb);
            num += x * y;
            sa += x * x;
            sb += y * y;
        }
    }
    let ic = num / (sa * sb).sqrt();
    if ic.is_finite() { ic } else { f64::NAN }
}

/// Runs the reference book on a signal.
pub fn backtest(signal: &Mat, fwd: &Rows, cfg: &TopK) -> RefMetrics {
    let sig = Rows::from_mat(signal);
    let (t, n) = (sig.t, sig.n);
    let mut held_prev = vec![0.0; n];
    let mut w = vec![0.0; n];
    let mut scratch = Vec::with_capacity(n);
    let mut order = Vec::with_capacity(n);
    let (mut nets, mut turns) = (Vec::with_capacity(t), Vec::with_capacity(t));
    let mut ics = Vec::with_capacity(t);
    for i in 0..t {
        // held[i] = w[i - 1]; w of this bar becomes next bar's book.
        let held = if i == 0 { vec![0.0; n] } else { std::mem::take(&mut w) };
        let f = fwd.row(i);
        let gross: f64 = held.iter().zip(f).map(|(h, r)| h * if r.is_nan() { 0.0 } else { *r }).sum();
        let turnover: f64 = held.iter().zip(&held_prev).map(|(a, b)| (a - b).abs()).sum();
        let net = gross - cfg.cost * turnover;
        let active = held.iter().sum::<f64>() > 0.0 && f.iter().any(|r| r.is_finite());
        if active {
            nets.push(net);
            turns.push(turnover);
        }
        w = vec![0.0; n];
        topk_weights(sig.row(i), cfg.k, &mut w, &mut scratch);
        ics.push(spearman(sig.row(i), f, &mut order));
        held_prev = held;
    }
    let stats = summary(&nets, cfg.periods_per_year);
    let ic: Vec<f64> = ics.into_iter().filter(|v| !v.is_nan()).collect();
    let ic_mean = ic.iter().sum::<f64>() / ic.len() as f64;
    let ic_sd = sample_std(&ic);
    RefMetrics {
        ann_return: stats.0,
        sharpe: stats.1,
        max_dd: stats.2,
        turnover: turns.iter().sum::<f64>() / turns.len() as f64,
        ic_mean,
        ic_ir: ic_mean / ic_sd,
    }
}

fn sample_std(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// (annualised return, Sharpe, maximum drawdown) of per-bar net returns.
pub fn summary(net: &[f64], periods: f64) -> (f64, f64, f64) {
    let n = net.len() as f64;
    let mut eq = 1.0;
    let mut peak = f64::NEG_INFINITY;
    let mut dd = 0.0f64;
    for r in net {
        eq *= 1.0 + r;
        peak = peak.max(eq);
        dd = dd.min(eq / peak - 1.0);
    }
    let ann = eq.powf(periods / n) - 1.0;
    let mean = net.iter().sum::<f64>() / n;
    let sharpe = mean / sample_std(net) * periods.sqrt();
    (ann, sharpe, dd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_breaks_ties_leftmost_and_skips_nan() {
        let mut w = vec![0.0; 5];
        topk_weights(&[1.0, 3.0, f64::NAN, 3.0, 3.0], 2, &mut w, &mut Vec::new());
        assert_eq!(w, [0.0, 0.5, 0.0, 0.5, 0.0]);
        topk_weights(&[f64::NAN, 2.0, f64::INFINITY], 2, &mut w[..3], &mut Vec::new());
        assert_eq!(&w[..3], [0.0, 1.0, 0.0]);
    }

    #[test]
    fn spearman_of_a_monotone_pair_is_one() {
        let ic = spearman(&[1.0, 2.0, 3.0, f64::NAN], &[10.0, 20.0, 30.0, 5.0], &mut Vec::new());
        assert!((ic - 1.0).abs() < 1e-15);
        let ic = spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0], &mut Vec::new());
        assert!((ic + 1.0).abs() < 1e-15);
    }

    #[test]
    fn summary_by_hand() {
        let (ann, sharpe, dd) = summary(&[0.1, -0.5, 0.2], 3.0);
        assert!((ann - (1.1 * 0.5 * 1.2 - 1.0)).abs() < 1e-12);
        assert!((dd - (0.55 / 1.1 - 1.0)).abs() < 1e-12);
        let m = (0.1 - 0.5 + 0.2) / 3.0;
        let sd = (((0.1f64 - m).powi(2) + (-0.5f64 - m).powi(2) + (0.2f64 - m).powi(2)) / 2.0).sqrt();
        assert!((sharpe - m / sd * 3.0f64.sqrt()).abs() < 1e-12);
    }
}
