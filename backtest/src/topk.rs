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

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::eval::{Mat, Signal};
use crate::ops;

/// The reference book's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    /// Names held.
    pub k: usize,
    /// Cost per unit of two-sided turnover (0.001 = 10 bps).
    #[serde(with = "crate::nonfinite")]
    pub cost: f64,
    /// Bars per year.
    #[serde(with = "crate::nonfinite")]
    pub periods_per_year: f64,
}

impl Default for TopK {
    fn default() -> TopK {
        TopK {
            k: 50,
            cost: 0.001,
            periods_per_year: 252.0,
        }
    }
}

/// The reference metrics of one strategy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RefMetrics {
    /// Annualised geometric return of the net equity.
    #[serde(with = "crate::nonfinite")]
    pub ann_return: f64,
    /// Annualised Sharpe ratio of net returns.
    #[serde(with = "crate::nonfinite")]
    pub sharpe: f64,
    /// Maximum drawdown (negative).
    #[serde(with = "crate::nonfinite")]
    pub max_dd: f64,
    /// Mean two-sided turnover per bar.
    #[serde(with = "crate::nonfinite")]
    pub turnover: f64,
    /// Mean daily Spearman IC.
    #[serde(with = "crate::nonfinite")]
    pub ic_mean: f64,
    /// IC mean / IC standard deviation.
    #[serde(with = "crate::nonfinite")]
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
        // Column-major data is a row-major `n × t` matrix.
        Rows {
            t: m.t,
            n: m.n,
            data: ops::transpose(&m.data, m.n, m.t),
        }
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

/// Scratch space for choosing a book's names, kept from bar to bar.
#[derive(Debug, Default)]
pub struct Selection {
    buf: Vec<f64>,
    /// The k-th largest value of the last row seen: a good first guess for the next bar, since
    /// signals change little from bar to bar. Only speeds the search; results never depend on it.
    hint: Option<f64>,
}

/// Equal weights on the `k` largest finite values of a row (leftmost first among ties).
pub fn topk_weights(row: &[f64], k: usize, out: &mut [f64], sel: &mut Selection) {
    if row.is_empty() {
        return;
    }
    // Non-finite values rank below every number.
    fn s(v: f64) -> f64 {
        if v.is_finite() { v } else { f64::NEG_INFINITY }
    }
    let n = row.len();
    let kk = k.min(n).max(1);
    let desc = |a: &f64, b: &f64| b.total_cmp(a);
    let buf = &mut sel.buf;
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    // Keeps the values that `keep` admits at the front of `buf`, without a branch per value
    // (which values qualify is unpredictable): each is written, and the end moves on if kept.
    fn gather(row: &[f64], buf: &mut [f64], keep: impl Fn(f64) -> bool) -> usize {
        let mut m = 0;
        for v in row {
            let x = s(*v);
            buf[m] = x;
            m += usize::from(keep(x));
        }
        m
    }
    let finite: usize = row.iter().map(|v| usize::from(v.is_finite())).sum();
    // The k-th largest value, in linear time: among the values at or above the last bar's k-th
    // value when there are enough of them (usually a few more than k), else among those below.
    // The front of `buf` ends up holding every value above the k-th, so those are counted there.
    let (kth, gt) = match sel.hint {
        Some(h) if h.is_finite() => {
            let m = gather(row, buf, |x| x >= h);
            if m >= kk {
                let kth = *buf[..m].select_nth_unstable_by(kk - 1, desc).1;
                (kth, buf[..kk - 1].iter().filter(|x| **x > kth).count())
            } else {
                let above = m;
                let m = gather(row, buf, |x| x < h);
                let kth = *buf[..m].select_nth_unstable_by(kk - 1 - above, desc).1;
                (
                    kth,
                    above + buf[..kk - 1 - above].iter().filter(|x| **x > kth).count(),
                )
            }
        }
        _ => {
            let m = gather(row, buf, |_| true);
            let kth = *buf[..m].select_nth_unstable_by(kk - 1, desc).1;
            (kth, buf[..kk - 1].iter().filter(|x| **x > kth).count())
        }
    };
    sel.hint = Some(kth);
    // Every value above the k-th is taken, then values equal to it from the left until k are
    // held: min(k, finite values) in all.
    let chosen = k.min(finite);
    if chosen == 0 {
        out.fill(0.0);
        return;
    }
    let w = 1.0 / chosen as f64;
    // Above the k-th means finite.
    for (o, v) in out.iter_mut().zip(row) {
        *o = if s(*v) > kth { w } else { 0.0 };
    }
    // Then values equal to the k-th, leftmost first (finite ones: the k-th may be -inf).
    let mut need = k.saturating_sub(gt);
    for (o, v) in out.iter_mut().zip(row) {
        if need == 0 {
            break;
        }
        if *v == kth && v.is_finite() {
            *o = w;
            need -= 1;
        }
    }
}

/// What strategies are judged against: forward returns, and per bar the order and ranks of
/// the finite ones (computed once per batch: most signals are finite wherever the return is,
/// and then the return's own ranks apply; otherwise the order gives the ranks of any subset
/// in one walk).
#[derive(Debug, Clone)]
pub struct Target {
    /// Forward one-bar returns, as rows.
    pub fwd: Rows,
    /// One allocation of two `t × n` halves. The first: per bar, its instruments with a finite
    /// return in ascending order of return (ties by instrument), `finite[i]` of them at the
    /// start of the bar's row. The second: per bar and instrument, the bits of its average-tie
    /// rank among the finite returns as an `f32` (NaN if its return is not finite; halves
    /// below 2^23 are exact).
    cells: Vec<u32>,
    finite: Vec<u32>,
}

impl Target {
    /// The target of a close matrix: next-bar returns.
    pub fn new(close: &Mat) -> Target {
        let fwd = forward_returns(close);
        Target::from_rows(fwd)
    }

    /// A target of any forward returns, given column-major.
    pub fn from_forward(fwd: &Mat) -> Target {
        Target::from_rows(Rows::from_mat(fwd))
    }

    fn from_rows(fwd: Rows) -> Target {
        let (t, n) = (fwd.t, fwd.n);
        let mut cells = vec![f32::NAN.to_bits(); 2 * t * n];
        let mut finite = vec![0u32; t];
        if n > 0 {
            let (orders, ranks) = cells.split_at_mut(t * n);
            orders
                .par_chunks_mut(n)
                .zip(ranks.par_chunks_mut(n))
                .zip(finite.par_iter_mut())
                .enumerate()
                .for_each(|(i, ((o, r), count))| {
                    let f = fwd.row(i);
                    let mut k = 0;
                    for (j, v) in f.iter().enumerate() {
                        if v.is_finite() {
                            o[k] = j as u32;
                            k += 1;
                        }
                    }
                    o[..k].sort_unstable_by(|&x, &y| {
                        f[x as usize]
                            .partial_cmp(&f[y as usize])
                            .unwrap_or(std::cmp::Ordering::Equal)
                            .then(x.cmp(&y))
                    });
                    *count = k as u32;
                    ranks_along(
                        o[..k].iter().copied(),
                        f,
                        |_| true,
                        |j, v| r[j] = (v as f32).to_bits(),
                    );
                });
        }
        Target { fwd, cells, finite }
    }

    /// Bar `i`'s finite instruments in ascending order of return.
    fn order(&self, i: usize) -> &[u32] {
        let n = self.fwd.n;
        &self.cells[i * n..i * n + self.finite[i] as usize]
    }

    /// Bar `i`'s ranks among its finite returns, as `f32` bits.
    fn ranks(&self, i: usize) -> &[u32] {
        let (t, n) = (self.fwd.t, self.fwd.n);
        &self.cells[(t + i) * n..(t + i + 1) * n]
    }
}

/// Average-tie ranks 1, 2, … of the instruments that `keep` admits, walking a row's ascending
/// `order`: `put(instrument, rank)`. Equal values share the average of their positions.
fn ranks_along(
    order: impl Iterator<Item = u32> + Clone,
    values: &[f64],
    keep: impl Fn(usize) -> bool,
    mut put: impl FnMut(usize, f64),
) {
    let mut pos = 0usize;
    let mut rest = order.map(|j| j as usize).peekable();
    while let Some(&first) = rest.peek() {
        // A run of equal returns.
        let v = values[first];
        let run = rest.clone().take_while(|&j| values[j] == v);
        let (len, c) = run
            .clone()
            .fold((0, 0), |(l, c), j| (l + 1, c + usize::from(keep(j))));
        if c > 0 {
            let r = pos as f64 + (c as f64 + 1.0) / 2.0;
            for j in run.filter(|&j| keep(j)) {
                put(j, r);
            }
            pos += c;
        }
        for _ in 0..len {
            rest.next();
        }
    }
}

/// Spearman correlation of a signal row with the target's row `i`, over the instruments
/// finite in both.
pub fn spearman(
    sig: &[f64],
    target: &Target,
    i: usize,
    buf: &mut Vec<f64>,
    scratch: &mut ops::RankScratch,
) -> f64 {
    ics(sig, false, target, i, buf, scratch).0
}

/// Lanes of a sum, so that the compiler can add four numbers at once: lane `j % 4` takes
/// element `j`, and the lanes are added at the end, always in the same order.
const LANES: usize = 4;

fn lanes_total(s: [f64; LANES]) -> f64 {
    (s[0] + s[1]) + (s[2] + s[3])
}

/// The Spearman and Pearson correlations of a signal row with the target's row `i`, over the
/// instruments finite in both, and the row's infinite values. `ranks`: the row holds the
/// `rank` operator's percentile ranks of its numbers, or their negations ([`Signal::ranks`]).
fn ics(
    sig: &[f64],
    ranks: bool,
    target: &Target,
    i: usize,
    buf: &mut Vec<f64>,
    scratch: &mut ops::RankScratch,
) -> (f64, f64, usize) {
    let (a, b) = (sig, target.fwd.row(i));
    let n = a.len();
    if buf.len() != 3 * n {
        buf.clear();
        buf.resize(3 * n, 0.0);
    }
    let (am, rest) = buf.split_at_mut(n);
    let (ra, rb) = rest.split_at_mut(n);
    // Pass 1: the sums of the pairs that count (both finite), and the counts that tell which
    // ranks apply.
    let (mut numbers, mut infinite, mut finite_a, mut finite_b, mut m) = (0, 0, 0, 0, 0);
    let (mut suma, mut sumb) = ([0.0; LANES], [0.0; LANES]);
    let mut first = |l: usize, x: f64, y: f64| {
        let (fa, fb) = (x.is_finite(), y.is_finite());
        let both = fa && fb;
        numbers += usize::from(!x.is_nan());
        infinite += usize::from(x.is_infinite());
        finite_a += usize::from(fa);
        finite_b += usize::from(fb);
        m += usize::from(both);
        suma[l] += if both { x } else { 0.0 };
        sumb[l] += if both { y } else { 0.0 };
    };
    let whole = n - n % LANES;
    for (ac, bc) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
    {
        for l in 0..LANES {
            first(l, ac[l], bc[l]);
        }
    }
    for j in whole..n {
        first(j - whole, a[j], b[j]);
    }
    if m < 2 {
        return (f64::NAN, f64::NAN, infinite);
    }
    let (ma, mb) = (lanes_total(suma) / m as f64, lanes_total(sumb) / m as f64);
    // The signal is finite wherever the return is; the return wherever the signal is.
    let (superset, subset) = (m == finite_b, m == finite_a);
    // Ranks 1..=m (ties averaged) always sum to m(m+1)/2: their mean is exactly (m+1)/2.
    let mean = (m as f64 + 1.0) / 2.0;
    let own = target.ranks(i);
    let own = |j: usize| f64::from(f32::from_bits(own[j]));
    let sums = if ranks && subset && superset {
        // The usual case: signal and return are finite in the same places, the return's own
        // ranks apply, and percentile ranks over the very instruments of the correlation are
        // their ranks divided by the count (negated ranks: reversed, plus a constant). A
        // correlation does not change under a positive linear map, so the signal's numbers
        // serve as its own ranks. Nothing needs writing down.
        moments(
            n,
            (ma, mb, ma, mean),
            |j| a[j].is_finite(),
            a,
            b,
            |j| a[j],
            own,
        )
    } else {
        // The signal where both are finite, NaN elsewhere: what is ranked.
        for ((o, x), y) in am.iter_mut().zip(a).zip(b) {
            *o = if x.is_finite() && y.is_finite() {
                *x
            } else {
                f64::NAN
            };
        }
        let (ra, mean_a): (&[f64], f64) = if ranks && subset {
            (a, ma)
        } else {
            ops::rank_avg_of_ranks(am, numbers, ra, scratch);
            (ra, mean)
        };
        let pair = |j: usize| !am[j].is_nan();
        let means = (ma, mb, mean_a, mean);
        if superset {
            // The correlation covers every finite return: the return's own ranks apply.
            moments(n, means, pair, a, b, |j| ra[j], own)
        } else {
            // The return's ranks among the pairs that count, in one walk over its order.
            ranks_along(target.order(i).iter().copied(), b, pair, |j, r| rb[j] = r);
            moments(n, means, pair, a, b, |j| ra[j], |j| rb[j])
        }
    };
    let [num, va, vb, rnum, sa, sb] = sums;
    let pearson = num / (va * vb).sqrt();
    let ic = rnum / (sa * sb).sqrt();
    let finite = |v: f64| if v.is_finite() { v } else { f64::NAN };
    (finite(ic), finite(pearson), infinite)
}

/// Pass 2 of [`ics`]: over the pairs that count (`pair(j)`), with `means` of the signal, the
/// return and their ranks, the sums of products and squares of the deviations of the numbers
/// (`num`, `va`, `vb`) and of the ranks `ra(j)`, `rb(j)` (`rnum`, `sa`, `sb`), in four lanes.
fn moments(
    n: usize,
    (ma, mb, mean_a, mean_b): (f64, f64, f64, f64),
    pair: impl Fn(usize) -> bool,
    a: &[f64],
    b: &[f64],
    ra: impl Fn(usize) -> f64,
    rb: impl Fn(usize) -> f64,
) -> [f64; 6] {
    let mut s = [[0.0; LANES]; 6];
    let mut step = |l: usize, j: usize| {
        let w = pair(j);
        let x = if w { a[j] - ma } else { 0.0 };
        let y = if w { b[j] - mb } else { 0.0 };
        let p = if w { ra(j) - mean_a } else { 0.0 };
        let q = if w { rb(j) - mean_b } else { 0.0 };
        s[0][l] += x * y;
        s[1][l] += x * x;
        s[2][l] += y * y;
        s[3][l] += p * q;
        s[4][l] += p * p;
        s[5][l] += q * q;
    };
    let whole = n - n % LANES;
    for c in (0..whole).step_by(LANES) {
        for l in 0..LANES {
            step(l, c + l);
        }
    }
    for j in whole..n {
        step(j - whole, j);
    }
    s.map(lanes_total)
}

/// A book run through time: per bar, the net return and turnover (NaN where the book was
/// empty or no return was known) and the IC.
#[derive(Debug, Clone, PartialEq)]
pub struct Book {
    /// Net return per bar (after costs); NaN on inactive bars.
    pub net: Vec<f64>,
    /// Two-sided turnover per bar; NaN on inactive bars.
    pub turnover: Vec<f64>,
    /// Spearman (rank) IC of the signal against the next bar's return; NaN where undefined.
    pub ic: Vec<f64>,
    /// Pearson IC of the signal against the next bar's return; NaN where undefined.
    pub ic_pearson: Vec<f64>,
    /// Gross exposure (sum of absolute weights) held per bar; NaN on inactive bars.
    pub exposure: Vec<f64>,
    /// Signal cells that were infinite and so treated as missing: counted, never silently used.
    pub nonfinite_signal_cells: usize,
    /// Per bar, the instruments inside the universe with a known return: what a book could
    /// choose among. A top-k book with no more than k of them holds them all, whatever its
    /// signal says (see [`crate::session::Session::selection_folds_of`]).
    pub tradable: Vec<u32>,
}

/// Runs the reference book on a signal.
pub fn run(signal: &Signal, target: &Target, cfg: &TopK) -> Book {
    book(signal, None, target, 1, 1, cfg.cost, |_, row, w, sel, _| {
        topk_weights(row, cfg.k, w, sel)
    })
}

/// What a block of bars contributes to a [`Book`]: per bar the net return, turnover,
/// exposure, the two ICs, the count of infinite signal cells and the tradable instruments.
type BarResult = (f64, f64, f64, f64, f64, usize, u32);

/// Blanks instruments of a bar's row: `mask(bar, row)`.
pub(crate) type Mask<'a> = dyn Fn(usize, &mut [f64]) + Sync + 'a;

/// Builds a book from a signal (`mask(bar, row)`, if any, may blank instruments of a bar's
/// row; a masked row no longer holds its own ranks, so [`Signal::ranks`] is then not relied
/// on): target weights chosen every `every` bars by
/// `choose(bar, row, weights, selection scratch, rank scratch)` and held in between, held
/// `lag` bars later, paying `cost` per unit of turnover; and the signal's ICs. The one engine
/// behind the reference book and every spec.
///
/// Bars are processed in blocks, in parallel: a block gathers the signal rows it needs,
/// chooses the weights of the bars it holds (and of the `lag + 1` bars before, which its first
/// bars trade against), and measures its bars. Every bar's numbers come from the same sums in
/// the same order whatever the blocks or threads, and no whole-panel copy of the signal or the
/// weights is ever made.
pub(crate) fn book(
    signal: &Signal,
    mask: Option<&Mask<'_>>,
    target: &Target,
    every: usize,
    lag: usize,
    cost: f64,
    choose: impl Fn(usize, &[f64], &mut [f64], &mut Selection, &mut ops::RankScratch) + Sync,
) -> Book {
    let sig = &*signal.values;
    let ranks = signal.ranks && mask.is_none();
    let (t, n) = (sig.t, sig.n);
    let (every, lag) = (every.max(1), lag.max(1));
    let mut bars: Vec<BarResult> =
        vec![(f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN, 0, 0); t];
    if n > 0 {
        let rebalance = |r: usize| r - r % every;
        // What is held before the first trade.
        let zero = vec![0.0; n];
        bars.par_chunks_mut(crate::eval::ROW_BLOCK)
            .enumerate()
            .for_each_init(
                || {
                    (
                        Vec::new(),
                        Vec::new(),
                        Selection::default(),
                        Vec::new(),
                        ops::RankScratch::default(),
                        Vec::new(),
                    )
                },
                |(rows, weights, sel, buf, scratch, known_row), (blk, out)| {
                    let a = blk * crate::eval::ROW_BLOCK;
                    let b = a + out.len();
                    // Weights are needed for bars w0..w1 (traded at bars a..b and the one before).
                    let (w0, w1) = (a.saturating_sub(lag + 1), b.saturating_sub(lag));
                    let g0 = if w1 > w0 { rebalance(w0).min(a) } else { a };
                    sig.rows_into(g0..b, rows);
                    if let Some(mask) = mask {
                        for (r, row) in rows.chunks_mut(n).enumerate() {
                            mask(g0 + r, row);
                        }
                    }
                    let row = |i: usize| &rows[(i - g0) * n..(i - g0 + 1) * n];
                    // Every bar's weights are written below: old contents need no clearing.
                    weights.resize(w1.saturating_sub(w0) * n, 0.0);
                    for r in w0..w1 {
                        let (done, rest) = weights.split_at_mut((r - w0) * n);
                        let w = &mut rest[..n];
                        if r > w0 && rebalance(r) == rebalance(r - 1) {
                            // Between rebalances the last target is held.
                            w.copy_from_slice(&done[(r - 1 - w0) * n..]);
                        } else {
                            w.fill(0.0);
                            choose(rebalance(r), row(rebalance(r)), w, sel, scratch);
                        }
                    }
                    let held_at = |i: usize| {
                        if i < lag {
                            &zero[..]
                        } else {
                            &weights[(i - lag - w0) * n..(i - lag - w0 + 1) * n]
                        }
                    };
                    for (i, o) in (a..b).zip(out.iter_mut()) {
                        let s = row(i);
                        let (ic, icp, inf) = ics(s, ranks, target, i, buf, scratch);
                        let (held, prev) =
                            (held_at(i), if i == 0 { &zero[..] } else { held_at(i - 1) });
                        let f = target.fwd.row(i);
                        let (gross, turn, expo, known) = pnl(held, prev, f);
                        // Instruments inside the universe with a known return.
                        let tradable = match mask {
                            Some(mask) => {
                                known_row.clear();
                                known_row.extend_from_slice(f);
                                mask(i, known_row);
                                known_row.iter().filter(|v| v.is_finite()).count()
                            }
                            None => f.iter().filter(|v| v.is_finite()).count(),
                        };
                        let tradable = u32::try_from(tradable).unwrap_or(u32::MAX);
                        *o = if expo > 0.0 && known {
                            (gross - cost * turn, turn, expo, ic, icp, inf, tradable)
                        } else {
                            (f64::NAN, f64::NAN, f64::NAN, ic, icp, inf, tradable)
                        };
                    }
                },
            );
    }
    Book {
        net: bars.iter().map(|b| b.0).collect(),
        turnover: bars.iter().map(|b| b.1).collect(),
        exposure: bars.iter().map(|b| b.2).collect(),
        ic: bars.iter().map(|b| b.3).collect(),
        ic_pearson: bars.iter().map(|b| b.4).collect(),
        nonfinite_signal_cells: bars.iter().map(|b| b.5).sum(),
        tradable: bars.iter().map(|b| b.6).collect(),
    }
}

/// A bar's gross return, turnover and exposure from the weights held now and before and the
/// returns (a missing return counts as 0), and whether any return is known: three sums in one
/// pass, in four lanes.
fn pnl(held: &[f64], prev: &[f64], f: &[f64]) -> (f64, f64, f64, bool) {
    let zero = [0.0; LANES];
    let (mut gross, mut turn, mut expo, mut known) = (zero, zero, zero, 0usize);
    let mut step = |l: usize, h: f64, p: f64, r: f64| {
        gross[l] += h * if r.is_nan() { 0.0 } else { r };
        turn[l] += (h - p).abs();
        expo[l] += h.abs();
        known += usize::from(r.is_finite());
    };
    let whole = held.len() - held.len() % LANES;
    for ((h, p), r) in held[..whole]
        .chunks_exact(LANES)
        .zip(prev[..whole].chunks_exact(LANES))
        .zip(f[..whole].chunks_exact(LANES))
    {
        for l in 0..LANES {
            step(l, h[l], p[l], r[l]);
        }
    }
    for j in whole..held.len() {
        step(j - whole, held[j], prev[j], f[j]);
    }
    (
        lanes_total(gross),
        lanes_total(turn),
        lanes_total(expo),
        known > 0,
    )
}

impl Book {
    /// The book as bytes, every value bit for bit (NaN payloads included): the bar count and the
    /// infinite-cell count as little-endian `u64`, then `net`, `turnover`, `ic`, `ic_pearson`
    /// and `exposure` as little-endian `f64`, then `tradable` as little-endian `u32` (0 where
    /// the book has none). For carrying books between processes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let t = self.net.len();
        let mut out = Vec::with_capacity(16 + 5 * 8 * t + 4 * t);
        out.extend_from_slice(&(t as u64).to_le_bytes());
        out.extend_from_slice(&(self.nonfinite_signal_cells as u64).to_le_bytes());
        for v in [
            &self.net,
            &self.turnover,
            &self.ic,
            &self.ic_pearson,
            &self.exposure,
        ] {
            for x in v {
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        for i in 0..t {
            let c = self.tradable.get(i).copied().unwrap_or(0);
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// Reads what [`Book::to_bytes`] wrote, returning the book and the bytes it used.
    ///
    /// # Errors
    /// Fewer bytes than the header says, naming how many were expected.
    pub fn from_bytes(bytes: &[u8]) -> Result<(Book, usize), String> {
        let word = |i: usize| -> Option<u64> {
            let b = bytes.get(i * 8..i * 8 + 8)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        let (Some(t), Some(cells)) = (word(0), word(1)) else {
            return Err("a book needs at least 16 bytes of header".into());
        };
        let t = usize::try_from(t).map_err(|_| "a book's bar count does not fit".to_string())?;
        let need = 16 + 5 * 8 * t + 4 * t;
        if bytes.len() < need {
            return Err(format!(
                "a book of {t} bars needs {need} bytes, {} are left",
                bytes.len()
            ));
        }
        let column = |c: usize| -> Vec<f64> {
            (0..t)
                .map(|i| f64::from_bits(word(2 + c * t + i).unwrap_or(0)))
                .collect()
        };
        Ok((
            Book {
                net: column(0),
                turnover: column(1),
                ic: column(2),
                ic_pearson: column(3),
                exposure: column(4),
                nonfinite_signal_cells: usize::try_from(cells).unwrap_or(usize::MAX),
                tradable: (0..t)
                    .map(|i| {
                        let at = 16 + 5 * 8 * t + 4 * i;
                        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                    })
                    .collect(),
            },
            need,
        ))
    }

    /// The reference metrics over bars `range` (active bars only).
    pub fn metrics(&self, range: std::ops::Range<usize>, periods_per_year: f64) -> RefMetrics {
        let nets: Vec<f64> = self.net[range.clone()]
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        let turns: Vec<f64> = self.turnover[range.clone()]
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        let ic: Vec<f64> = self.ic[range]
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        let stats = summary(&nets, periods_per_year);
        let ic_mean = ic.iter().sum::<f64>() / ic.len() as f64;
        RefMetrics {
            ann_return: stats.0,
            sharpe: stats.1,
            max_dd: stats.2,
            turnover: turns.iter().sum::<f64>() / turns.len() as f64,
            ic_mean,
            ic_ir: ic_mean / sample_std(&ic),
        }
    }
}

/// Runs the reference book on a signal and measures it over all bars.
pub fn backtest(signal: &Signal, target: &Target, cfg: &TopK) -> RefMetrics {
    let book = run(signal, target, cfg);
    book.metrics(0..book.net.len(), cfg.periods_per_year)
}

fn sample_std(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// (annualised return, Sharpe, maximum drawdown) of per-bar net returns.
pub fn summary(net: &[f64], periods: f64) -> (f64, f64, f64) {
    let n = net.len() as f64;
    // The running peak starts at the starting capital (1.0), as empyrical, quantstats and
    // pyfolio do, so a loss on the first bar is a drawdown.
    let mut eq = 1.0;
    let mut peak = 1.0f64;
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
    fn a_book_survives_its_bytes_bit_for_bit() {
        let b = Book {
            net: vec![f64::NAN, 0.01, -0.02],
            turnover: vec![f64::NAN, 1.0, 0.0],
            ic: vec![0.1, f64::INFINITY, f64::NAN],
            ic_pearson: vec![-0.0, 0.2, 0.3],
            exposure: vec![f64::NAN, 1.0, 1.0],
            nonfinite_signal_cells: 7,
            tradable: vec![0, 3, 10],
        };
        let mut bytes = b.to_bytes();
        bytes.extend_from_slice(b"rest");
        let (back, used) = Book::from_bytes(&bytes).unwrap();
        assert_eq!(used, bytes.len() - 4);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.net), bits(&b.net));
        assert_eq!(bits(&back.ic), bits(&b.ic));
        assert_eq!(bits(&back.ic_pearson), bits(&b.ic_pearson));
        assert_eq!(back.nonfinite_signal_cells, 7);
        assert_eq!(back.tradable, b.tradable);
        assert!(
            Book::from_bytes(&bytes[..30])
                .unwrap_err()
                .contains("needs 148 bytes")
        );
    }

    /// Pearson correlation of two rows over the instruments finite in both, by its definition.
    fn pearson(a: &[f64], b: &[f64]) -> f64 {
        let pairs = || {
            a.iter()
                .zip(b)
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let m = pairs().count();
        if m < 2 {
            return f64::NAN;
        }
        let (sa, sb) = pairs().fold((0.0, 0.0), |(p, q), (x, y)| (p + x, q + y));
        let (ma, mb) = (sa / m as f64, sb / m as f64);
        let (mut num, mut va, mut vb) = (0.0, 0.0, 0.0);
        for (x, y) in pairs() {
            num += (x - ma) * (y - mb);
            va += (x - ma) * (x - ma);
            vb += (y - mb) * (y - mb);
        }
        let r = num / (va * vb).sqrt();
        if r.is_finite() { r } else { f64::NAN }
    }

    /// A seeded generator of numbers in [0, 1) for the tests (a 64-bit LCG's upper bits).
    fn uniform(mut seed: u64) -> impl FnMut() -> f64 {
        move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn topk_breaks_ties_leftmost_and_skips_nan() {
        let mut w = vec![0.0; 5];
        topk_weights(
            &[1.0, 3.0, f64::NAN, 3.0, 3.0],
            2,
            &mut w,
            &mut Selection::default(),
        );
        assert_eq!(w, [0.0, 0.5, 0.0, 0.5, 0.0]);
        topk_weights(
            &[f64::NAN, 2.0, f64::INFINITY],
            2,
            &mut w[..3],
            &mut Selection::default(),
        );
        assert_eq!(&w[..3], [0.0, 1.0, 0.0]);
    }

    #[test]
    fn spearman_of_a_monotone_pair_is_one() {
        // Close prices whose next-bar returns are 10%, 20%, 30% and (for the 4th) 5%.
        let close = Mat {
            t: 2,
            n: 4,
            data: vec![1.0, 1.1, 1.0, 1.2, 1.0, 1.3, 1.0, 1.05],
        };
        let target = Target::new(&close);
        let ic = spearman(
            &[1.0, 2.0, 3.0, f64::NAN],
            &target,
            0,
            &mut Vec::new(),
            &mut ops::RankScratch::default(),
        );
        assert!((ic - 1.0).abs() < 1e-15);
        let ic = spearman(
            &[4.0, 3.0, 2.0, 1.0],
            &target,
            0,
            &mut Vec::new(),
            &mut ops::RankScratch::default(),
        );
        assert!((ic - 0.2).abs() < 1e-15, "{ic}");
    }

    /// The book bar after bar with whole-panel weights, the plain way: what the block-wise
    /// [`book`] must reproduce exactly, across block edges, rebalance periods longer than a
    /// block and lags of several bars.
    #[test]
    fn books_by_blocks_equal_the_plain_computation() {
        let (t, n) = (150, 23);
        let mut next = uniform(5);
        let close = Mat {
            t,
            n,
            data: (0..t * n).map(|_| 50.0 + next()).collect(),
        };
        let mut sig = Mat {
            t,
            n,
            data: (0..t * n).map(|_| next() - 0.5).collect(),
        };
        sig.data[7] = f64::NAN;
        sig.data[40] = f64::INFINITY;
        let target = Target::new(&close);
        let rows = Rows::from_mat(&sig);
        for (every, lag) in [(1, 1), (3, 1), (5, 2), (40, 3), (1, 7)] {
            let k = 5;
            let got = book(
                &Signal::plain(sig.clone()),
                None,
                &target,
                every,
                lag,
                0.001,
                |_, row, w, sel, _| topk_weights(row, k, w, sel),
            );
            let mut w = vec![0.0; t * n];
            let mut sel = Selection::default();
            for i in 0..t {
                if i % every == 0 {
                    topk_weights(rows.row(i), k, &mut w[i * n..(i + 1) * n], &mut sel);
                } else {
                    let (done, rest) = w.split_at_mut(i * n);
                    rest[..n].copy_from_slice(&done[(i - 1) * n..]);
                }
            }
            let zero = vec![0.0; n];
            let held = |i: usize| {
                if i < lag {
                    &zero[..]
                } else {
                    &w[(i - lag) * n..(i - lag + 1) * n]
                }
            };
            for i in 0..t {
                let (h, p, f) = (
                    held(i),
                    if i == 0 { &zero[..] } else { held(i - 1) },
                    target.fwd.row(i),
                );
                let gross: f64 = h
                    .iter()
                    .zip(f)
                    .map(|(a, r)| a * if r.is_nan() { 0.0 } else { *r })
                    .sum();
                let turn: f64 = h.iter().zip(p).map(|(a, b)| (a - b).abs()).sum();
                let active = h.iter().any(|v| *v != 0.0) && f.iter().any(|r| r.is_finite());
                let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
                let want = if active {
                    gross - 0.001 * turn
                } else {
                    f64::NAN
                };
                // Sums in another order differ in their last bits only.
                let near = |a: f64, b: f64| same(a, b) || (a - b).abs() <= 1e-12 * b.abs();
                assert!(
                    near(got.net[i], want),
                    "every {every} lag {lag} bar {i}: {} vs {want}",
                    got.net[i]
                );
                let want_turn = if active { turn } else { f64::NAN };
                assert!(
                    near(got.turnover[i], want_turn),
                    "every {every} lag {lag} bar {i}"
                );
                let sp = spearman(
                    rows.row(i),
                    &target,
                    i,
                    &mut Vec::new(),
                    &mut ops::RankScratch::default(),
                );
                let close = |a: f64, b: f64| same(a, b) || (a - b).abs() < 1e-12;
                assert!(same(got.ic[i], sp) && close(got.ic_pearson[i], pearson(rows.row(i), f)));
            }
            assert_eq!(got.nonfinite_signal_cells, 1);
        }
    }

    /// Top-k by its definition (largest finite values, leftmost first among ties), row after
    /// row with the previous row's k-th value as the hint: ties, NaN, infinities, and rows
    /// with fewer finite values than k.
    #[test]
    fn topk_follows_its_definition_row_after_row() {
        let mut next = uniform(9);
        let (n, k) = (40, 7);
        let mut sel = Selection::default();
        for r in 0..300 {
            let row: Vec<f64> = (0..n)
                .map(|_| {
                    let u = next();
                    match (u * 100.0) as usize {
                        0..=4 => f64::NAN,
                        5..=6 => f64::INFINITY,
                        7 => f64::NEG_INFINITY,
                        // Rows drift, so the hint is sometimes too high and sometimes too low.
                        _ if r % 50 < 3 => f64::NAN,
                        _ => ((next() * 8.0).floor() + (r % 7) as f64) * 0.5,
                    }
                })
                .collect();
            let mut got = vec![9.0; n];
            topk_weights(&row, k, &mut got, &mut sel);
            let mut idx: Vec<usize> = (0..n).filter(|&j| row[j].is_finite()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            idx.truncate(k);
            let mut want = vec![0.0; n];
            for &j in &idx {
                want[j] = 1.0 / idx.len() as f64;
            }
            assert_eq!(got, want, "row {r}: {row:?}");
        }
    }

    /// The rank IC by its definition: both rows ranked over the instruments finite in both,
    /// then correlated; with ties, NaN and infinities on either side.
    #[test]
    fn spearman_follows_its_definition() {
        let (t, n) = (30, 37);
        let mut next = uniform(3);
        // Prices on a coarse grid, so returns tie; some closes are missing.
        let mut close = Mat {
            t,
            n,
            data: (0..t * n).map(|_| 100.0 + (next() * 4.0).floor()).collect(),
        };
        for k in [5, 77, 300, 301, 640] {
            close.data[k] = f64::NAN;
        }
        let target = Target::new(&close);
        let mut scratch = ops::RankScratch::default();
        for i in 0..t {
            let sig: Vec<f64> = (0..n)
                .map(|j| match (i * 7 + j) % 11 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    _ => (next() * 5.0).floor(),
                })
                .collect();
            let f = target.fwd.row(i);
            let both: Vec<bool> = (0..n)
                .map(|j| sig[j].is_finite() && f[j].is_finite())
                .collect();
            let masked = |x: &[f64]| -> Vec<f64> {
                (0..n)
                    .map(|j| if both[j] { x[j] } else { f64::NAN })
                    .collect()
            };
            let (mut ra, mut rb) = (vec![0.0; n], vec![0.0; n]);
            ops::rank_avg(&masked(&sig), &mut ra, &mut scratch);
            ops::rank_avg(&masked(f), &mut rb, &mut scratch);
            let want = pearson(&ra, &rb);
            let got = spearman(&sig, &target, i, &mut Vec::new(), &mut scratch);
            assert!(
                (got.is_nan() && want.is_nan()) || (got - want).abs() < 1e-12,
                "bar {i}: {got} vs {want}"
            );
        }
    }

    /// A rank signal's IC taken from its own numbers equals the IC from sorting them, for
    /// percentile ranks and negated ones, with ties and with instruments missing on either side.
    #[test]
    fn rank_rows_serve_as_their_own_ranks() {
        let (t, n) = (40, 31);
        let mut next = uniform(11);
        let mut close = Mat {
            t,
            n,
            data: (0..t * n).map(|_| 50.0 + next()).collect(),
        };
        // A missing close blanks returns where the signal exists (the general path).
        close.data[3 * t + 10] = f64::NAN;
        let target = Target::new(&close);
        let mut scratch = ops::RankScratch::default();
        for negate in [false, true] {
            for i in 0..t {
                // Coarse values make ties; on two bars in three, some instruments are missing
                // (on the third, signal and return are known in the same places).
                let raw: Vec<f64> = (0..n)
                    .map(|j| {
                        if (i + j) % 9 == 0 && i % 3 != 0 {
                            f64::NAN
                        } else {
                            (next() * 6.0).floor()
                        }
                    })
                    .collect();
                let mut row = vec![0.0; n];
                ops::rank_avg(&raw, &mut row, &mut scratch);
                let count = raw.iter().filter(|v| !v.is_nan()).count() as f64;
                for v in &mut row {
                    *v /= count;
                    if negate {
                        *v = -*v;
                    }
                }
                let mut buf = Vec::new();
                let fast = ics(&row, true, &target, i, &mut buf, &mut scratch);
                let sorted = ics(&row, false, &target, i, &mut buf, &mut scratch);
                let same = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12;
                assert!(
                    same(fast.0, sorted.0) && same(fast.1, sorted.1),
                    "bar {i}: {fast:?} vs {sorted:?}"
                );
            }
        }
    }

    #[test]
    fn summary_by_hand() {
        let (ann, sharpe, dd) = summary(&[0.1, -0.5, 0.2], 3.0);
        assert!((ann - (1.1 * 0.5 * 1.2 - 1.0)).abs() < 1e-12);
        assert!((dd - (0.55 / 1.1 - 1.0)).abs() < 1e-12);
        // A loss on the first bar is a drawdown from the starting capital.
        let (_, _, dd) = summary(&[-0.1, 0.05], 252.0);
        assert!((dd - (-0.1)).abs() < 1e-12, "{dd}");
        let m = (0.1 - 0.5 + 0.2) / 3.0;
        let sd =
            (((0.1f64 - m).powi(2) + (-0.5f64 - m).powi(2) + (0.2f64 - m).powi(2)) / 2.0).sqrt();
        assert!((sharpe - m / sd * 3.0f64.sqrt()).abs() < 1e-12);
    }
}
