//! Numeric kernels. Time-series kernels work on one instrument's history (a contiguous
//! slice); cross-sectional kernels on one bar across instruments.
//!
//! The rolling statistics follow the arithmetic of the reference implementation (running sums
//! and a running-mean/sum-of-squares update, NaN whenever the window is not full of numbers),
//! so that LIM's results agree with it to the last few bits, not merely in spirit.

/// `len` zeros for a kernel to overwrite, written by all threads: a fresh buffer's pages are
/// first touched here, and one thread filling them would leave the others idle.
pub fn zeros(len: usize) -> Vec<f64> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0.0, len));
    v
}

/// Transposes a `rows × cols` row-major matrix into `cols × rows` row-major, in cache-sized
/// tiles (a naive loop misses the cache on every element of one side). Parallel over tiles.
pub fn transpose(src: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    use rayon::prelude::*;
    const TILE: usize = 32;
    let mut out = zeros(rows * cols);
    if rows == 0 || cols == 0 {
        return out;
    }
    // Each task owns TILE rows of the output (= TILE columns of the source).
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(cb, block)| {
            let c0 = cb * TILE;
            let cn = (cols - c0).min(TILE);
            for r0 in (0..rows).step_by(TILE) {
                let rn = (rows - r0).min(TILE);
                for c in 0..cn {
                    let dst = &mut block[c * rows + r0..c * rows + r0 + rn];
                    for (r, d) in dst.iter_mut().enumerate() {
                        *d = src[(r0 + r) * cols + c0 + c];
                    }
                }
            }
        });
    out
}

/// `out[t] = x[t - d]`, NaN for the first `d` bars.
pub fn shift(x: &[f64], d: usize, out: &mut [f64]) {
    let d = d.min(x.len());
    out[..d].fill(f64::NAN);
    out[d..].copy_from_slice(&x[..x.len() - d]);
}

/// Rolling sum over `w` bars; NaN unless all `w` are numbers.
pub fn move_sum(x: &[f64], w: usize, out: &mut [f64]) {
    move_sum_min(x, w, w, out);
}

/// Rolling sum over `w` bars of the numbers among them, where there are at least `m`
/// (bottleneck's `min_count`; the first bars' shorter windows count too). `m = w` is
/// [`move_sum`].
pub fn move_sum_min(x: &[f64], w: usize, m: usize, out: &mut [f64]) {
    if w == 1 {
        // The value itself, exactly: a running sum would leave rounding residue (which
        // breaks ties for a later rank).
        out[..x.len()].copy_from_slice(x);
        return;
    }
    let (mut sum, mut count) = (0.0, 0usize);
    for t in 0..x.len() {
        let a = x[t];
        if t < w {
            if !a.is_nan() {
                sum += a;
                count += 1;
            }
        } else {
            let old = x[t - w];
            match (a.is_nan(), old.is_nan()) {
                (false, false) => sum += a - old,
                (false, true) => {
                    sum += a;
                    count += 1;
                }
                (true, false) => {
                    sum -= old;
                    count -= 1;
                }
                (true, true) => {}
            }
        }
        // `count <= t + 1`, so with `m = w` this is "the window is full of numbers".
        out[t] = if count >= m { sum } else { f64::NAN };
    }
}

/// Rolling product over `w` bars; NaN unless all `w` are numbers. Multiplied out window by
/// window (O(w) a bar), so zeros and signs are exact, unlike `exp(ts_sum(log(x), d))`.
pub fn move_product(x: &[f64], w: usize, out: &mut [f64]) {
    let mut last_nan: Option<usize> = None;
    for t in 0..x.len() {
        if x[t].is_nan() {
            last_nan = Some(t);
        }
        let full = t + 1 >= w && last_nan.is_none_or(|k| k + w <= t);
        out[t] = if full {
            x[t + 1 - w..=t].iter().product()
        } else {
            f64::NAN
        };
    }
}

/// Rolling mean over `w` bars; NaN unless all `w` are numbers.
pub fn move_mean(x: &[f64], w: usize, out: &mut [f64]) {
    move_mean_min(x, w, w, out);
}

/// Rolling mean over `w` bars of the numbers among them, where there are at least `min`
/// (bottleneck's `min_count`). `min = w` is [`move_mean`].
pub fn move_mean_min(x: &[f64], w: usize, min: usize, out: &mut [f64]) {
    if w == 1 {
        out[..x.len()].copy_from_slice(x); // exactly, as in `move_sum_min`
        return;
    }
    let mut m = MeanWindow::new(w, min);
    for t in 0..x.len() {
        out[t] = m.push(t, x[t], if t >= w { x[t - w] } else { f64::NAN });
    }
}

/// The running state of one rolling mean: [`move_mean`] one bar at a time, so that several
/// means can advance in one loop (their additions then overlap) with the very same numbers.
#[derive(Debug, Clone, Copy)]
struct MeanWindow {
    w: usize,
    /// Numbers needed in the window (`w`: all of them).
    min: usize,
    sum: f64,
    count: usize,
    inv: f64,
}

impl MeanWindow {
    fn new(w: usize, min: usize) -> MeanWindow {
        MeanWindow {
            w,
            min,
            sum: 0.0,
            count: 0,
            inv: 0.0,
        }
    }

    /// Bar `t` with value `a`; `old` is the value leaving the window (bar `t - w`, ignored
    /// before that). Returns the mean, NaN unless at least `min` values are numbers.
    #[inline(always)]
    fn push(&mut self, t: usize, a: f64, old: f64) -> f64 {
        let w = self.w;
        if t < w {
            if !a.is_nan() {
                self.sum += a;
                self.count += 1;
            }
            // `count <= t + 1`: with `min = w` only the first full window qualifies.
            let out = if self.count >= self.min {
                self.sum / self.count as f64
            } else {
                f64::NAN
            };
            if t + 1 == w {
                self.inv = 1.0 / self.count as f64;
            }
            out
        } else {
            match (a.is_nan(), old.is_nan()) {
                (false, false) => self.sum += a - old,
                (false, true) => {
                    self.sum += a;
                    self.count += 1;
                    self.inv = 1.0 / self.count as f64;
                }
                (true, false) => {
                    self.sum -= old;
                    self.count -= 1;
                    self.inv = 1.0 / self.count as f64;
                }
                (true, true) => {}
            }
            if self.count >= self.min {
                self.sum * self.inv
            } else {
                f64::NAN
            }
        }
    }
}

/// Rolling covariance (`corr = false`; sample, scaled by `d / (d - 1)`) or correlation of two
/// series over `d` bars, the reference's formulation: moving means of x, y, xy, x² and y², with
/// each series NaN wherever the other is. The five means advance together in one loop.
pub fn move_cov_corr(x: &[f64], y: &[f64], d: usize, corr: bool, out: &mut [f64]) {
    move_cov_corr_min(x, y, d, d, corr, out);
}

/// [`move_cov_corr`] over the bars of the window where both are numbers, where there are at
/// least `min` (the covariance scaled by `n / (n - 1)` for those `n`).
pub fn move_cov_corr_min(x: &[f64], y: &[f64], d: usize, min: usize, corr: bool, out: &mut [f64]) {
    let pick = |i: usize| {
        let a = x[i] + 0.0 * y[i];
        let b = y[i] + 0.0 * a;
        [a, b, a * b, a * a, b * b]
    };
    let mut m = [MeanWindow::new(d, min); 5];
    let full = d as f64 / (d as f64 - 1.0);
    for (t, o) in out.iter_mut().enumerate().take(x.len()) {
        let v = pick(t);
        let old = if t >= d { pick(t - d) } else { [f64::NAN; 5] };
        let mx = m[0].push(t, v[0], old[0]);
        let my = m[1].push(t, v[1], old[1]);
        let mxy = m[2].push(t, v[2], old[2]);
        let n = m[0].count;
        let f = if n == d {
            full
        } else {
            n as f64 / (n as f64 - 1.0)
        };
        if !corr {
            *o = (mxy - mx * my) * f;
            continue;
        }
        let vx = m[3].push(t, v[3], old[3]) - mx * mx;
        let vy = m[4].push(t, v[4], old[4]) - my * my;
        let c = (mxy - mx * my) / (vx * vy).sqrt();
        let bad = vx <= 1e-14 * (mx * mx + 1e-300) || vy <= 1e-14 * (my * my + 1e-300);
        *o = if bad { f64::NAN } else { c.clamp(-1.0, 1.0) };
    }
}

/// Rolling variance (`sqrt = false`) or standard deviation over `w` bars with `ddof`.
pub fn move_var(x: &[f64], w: usize, ddof: usize, sqrt: bool, out: &mut [f64]) {
    move_var_min(x, w, w, ddof, sqrt, out);
}

/// [`move_var`] over the numbers of the window, where there are at least `min`.
pub fn move_var_min(x: &[f64], w: usize, min: usize, ddof: usize, sqrt: bool, out: &mut [f64]) {
    let (mut mean, mut ssq, mut count) = (0.0f64, 0.0f64, 0usize);
    let (mut inv, mut ddof_inv) = (0.0, 0.0);
    let fin = |ssq: f64, div: f64| {
        let v = if ssq < 0.0 { 0.0 } else { ssq } * div;
        if sqrt { v.sqrt() } else { v }
    };
    for t in 0..x.len() {
        let a = x[t];
        if t < w {
            if !a.is_nan() {
                count += 1;
                let delta = a - mean;
                mean += delta / count as f64;
                ssq += delta * (a - mean);
            }
            if t + 1 == w {
                out[t] = if count >= min {
                    if ssq < 0.0 {
                        ssq = 0.0;
                    }
                    let v = ssq / (count as f64 - ddof as f64);
                    if sqrt { v.sqrt() } else { v }
                } else {
                    f64::NAN
                };
                inv = 1.0 / count as f64;
                ddof_inv = 1.0 / (count as f64 - ddof as f64);
            } else {
                // A shorter first window (only when `min < w`).
                out[t] = if count >= min && count > ddof {
                    fin(ssq, 1.0 / (count as f64 - ddof as f64))
                } else {
                    f64::NAN
                };
            }
        } else {
            let mut old = x[t - w];
            match (a.is_nan(), old.is_nan()) {
                (false, false) => {
                    let delta = a - old;
                    old -= mean;
                    mean += delta * inv;
                    let ai = a - mean;
                    ssq += (ai + old) * delta;
                }
                (false, true) => {
                    count += 1;
                    inv = 1.0 / count as f64;
                    ddof_inv = 1.0 / (count as f64 - ddof as f64);
                    let delta = a - mean;
                    mean += delta * inv;
                    ssq += delta * (a - mean);
                }
                (true, false) => {
                    count -= 1;
                    inv = 1.0 / count as f64;
                    ddof_inv = 1.0 / (count as f64 - ddof as f64);
                    if count > 0 {
                        let delta = old - mean;
                        mean -= delta * inv;
                        ssq -= delta * (old - mean);
                    } else {
                        mean = 0.0;
                        ssq = 0.0;
                    }
                }
                (true, true) => {}
            }
            if count >= min && count > ddof {
                if ssq < 0.0 {
                    ssq = 0.0;
                }
                out[t] = fin(ssq, ddof_inv);
            } else {
                out[t] = f64::NAN;
            }
        }
    }
}

/// Which extreme a sliding-window scan looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extreme {
    /// The minimum.
    Min,
    /// The maximum.
    Max,
}

/// Rolling minimum or maximum (`arg = false`) or the bars since it (`arg = true`, 0 = now;
/// the newest wins ties). NaN unless all `w` values are numbers.
pub fn move_extreme(x: &[f64], w: usize, which: Extreme, arg: bool, out: &mut [f64]) {
    move_extreme_min(x, w, w, which, arg, out);
}

/// [`move_extreme`] over the numbers of the window, where there are at least `min`.
pub fn move_extreme_min(
    x: &[f64],
    w: usize,
    min: usize,
    which: Extreme,
    arg: bool,
    out: &mut [f64],
) {
    if w == 0 {
        out.fill(f64::NAN);
        return;
    }
    // One copy of the loops per case, so that no comparison or output decides at run time.
    match (which, arg) {
        (Extreme::Min, false) => extreme::<false, false>(x, w, min, out),
        (Extreme::Min, true) => extreme::<false, true>(x, w, min, out),
        (Extreme::Max, false) => extreme::<true, false>(x, w, min, out),
        (Extreme::Max, true) => extreme::<true, true>(x, w, min, out),
    }
}

fn extreme<const MAX: bool, const ARG: bool>(x: &[f64], w: usize, min: usize, out: &mut [f64]) {
    let n = x.len();
    let big = if MAX {
        f64::NEG_INFINITY
    } else {
        f64::INFINITY
    };
    let val = |i: usize| if x[i].is_nan() { big } else { x[i] };
    let better = |a: f64, b: f64| if MAX { a > b } else { a < b };
    // Blocks of `w` bars (van Herk / Gil-Werman). A window ending in a block starts in the block
    // before (or is the whole block): its best is the best of the earlier block from the
    // window's start on (`h`, kept from a backward walk over that block) against the best of
    // this block up to the window's end (`g`, carried forwards). Each walk carries its best
    // value and bar, so no step waits on a load of the step before, and the scratch is one
    // block long. Newer bars win ties.
    let (mut hv, mut hi) = (vec![big; w], vec![0usize; w]);
    let mut count = 0usize;
    for b in (0..n).step_by(w) {
        let e = (b + w).min(n);
        let (mut gv, mut gi) = (big, b);
        for t in b..e {
            let v = val(t);
            if !better(gv, v) {
                (gv, gi) = (v, t);
            }
            count += usize::from(!x[t].is_nan());
            if t >= w && !x[t - w].is_nan() {
                count -= 1;
            }
            // `count <= t + 1`; a shorter first window (only when `min < w`) lies in the
            // first block, so its best is `g`.
            out[t] = if count >= min {
                let s = (t + 1).saturating_sub(w);
                // `s < b`: the window reaches into the block before, at offset `s + w - b`.
                let (value, best) = if s < b && better(hv[s + w - b], gv) {
                    (hv[s + w - b], hi[s + w - b])
                } else {
                    (gv, gi)
                };
                if ARG { (t - best) as f64 } else { value }
            } else {
                f64::NAN
            };
        }
        let (mut best, mut at) = (big, e - 1);
        for i in (b..e).rev() {
            let v = val(i);
            if better(v, best) {
                (best, at) = (v, i);
            }
            hv[i - b] = best;
            hi[i - b] = at;
        }
    }
}

/// Rolling rank of the current value among the last `w` (ties averaged), scaled to [-1, 1]
/// as the reference's moving rank; NaN unless all `w` are numbers.
pub fn move_rank(x: &[f64], w: usize, out: &mut [f64]) {
    for t in 0..x.len() {
        let a = x[t];
        if t + 1 < w || a.is_nan() {
            out[t] = f64::NAN;
            continue;
        }
        // Branch-free counts over the window, so the loop vectorises; counts are whole
        // numbers, so the order of summation does not matter.
        let (mut g, mut e, mut n) = (0u32, 1u32, 1u32);
        for &b in &x[t + 1 - w..t] {
            let valid = u32::from(!b.is_nan());
            n += valid;
            g += 2 * u32::from(a > b);
            e += u32::from(a == b);
        }
        let (g, e, n) = (f64::from(g), f64::from(e), n as usize);
        out[t] = if n < w {
            f64::NAN
        } else if n == 1 {
            0.0
        } else {
            let r = 0.5 * (g + e - 1.0) / (n as f64 - 1.0);
            2.0 * (r - 0.5)
        };
    }
}

/// Percentile rank of the current value among the numbers of the last `w` bars, in (0, 1]
/// (ties averaged), where there are at least `min` of them; NaN where the current value is.
pub fn move_rank_pct_min(x: &[f64], w: usize, min: usize, out: &mut [f64]) {
    for t in 0..x.len() {
        let a = x[t];
        if a.is_nan() {
            out[t] = f64::NAN;
            continue;
        }
        let (mut below, mut equal, mut n) = (0u32, 0u32, 0u32);
        for &b in &x[(t + 1).saturating_sub(w)..=t] {
            n += u32::from(!b.is_nan());
            below += u32::from(b < a);
            equal += u32::from(b == a);
        }
        out[t] = if (n as usize) < min {
            f64::NAN
        } else {
            (f64::from(below) + 0.5 * (f64::from(equal) + 1.0)) / f64::from(n)
        };
    }
}

/// Linearly weighted mean of the numbers of the last `d` bars (newest weight `d`, the
/// weights of missing bars left out), where there are at least `min`.
pub fn decay_linear_min(x: &[f64], d: usize, min: usize, out: &mut [f64]) {
    for t in 0..x.len() {
        let (mut acc, mut total, mut n) = (0.0, 0.0, 0usize);
        for i in 0..d.min(t + 1) {
            let v = x[t - i];
            if !v.is_nan() {
                let wgt = (d - i) as f64;
                acc += v * wgt;
                total += wgt;
                n += 1;
            }
        }
        out[t] = if n >= min { acc / total } else { f64::NAN };
    }
}

/// Linearly weighted mean of the last `d` bars, newest weight `d`.
pub fn decay_linear(x: &[f64], d: usize, out: &mut [f64]) {
    let total: f64 = (1..=d).map(|k| k as f64).sum();
    let w: Vec<f64> = (1..=d).map(|k| k as f64 / total).collect();
    for t in 0..x.len() {
        if t + 1 < d {
            out[t] = f64::NAN;
            continue;
        }
        let mut acc = x[t] * w[d - 1];
        for i in 1..d {
            acc += x[t - i] * w[d - 1 - i];
        }
        out[t] = acc;
    }
}

/// Applies `f` to every full window of `d` bars with no NaN; NaN elsewhere.
pub fn window_map(x: &[f64], d: usize, out: &mut [f64], mut f: impl FnMut(&[f64]) -> f64) {
    let mut nans = 0usize;
    for t in 0..x.len() {
        if x[t].is_nan() {
            nans += 1;
        }
        if t >= d && x[t - d].is_nan() {
            nans -= 1;
        }
        out[t] = if t + 1 >= d && nans == 0 {
            f(&x[t + 1 - d..=t])
        } else {
            f64::NAN
        };
    }
}

/// Sample skewness of a window.
pub fn skew(w: &[f64]) -> f64 {
    let n = w.len() as f64;
    let m = w.iter().sum::<f64>() / n;
    let m2 = w.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
    let m3 = w.iter().map(|v| (v - m).powi(3)).sum::<f64>() / n;
    if n < 3.0 || m2 <= 0.0 {
        return f64::NAN;
    }
    (n * (n - 1.0)).sqrt() / (n - 2.0) * m3 / m2.powf(1.5)
}

/// Sample excess kurtosis of a window.
pub fn kurt(w: &[f64]) -> f64 {
    let n = w.len() as f64;
    let m = w.iter().sum::<f64>() / n;
    let m2 = w.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
    let m4 = w.iter().map(|v| (v - m).powi(4)).sum::<f64>() / n;
    if n < 4.0 || m2 <= 0.0 {
        return f64::NAN;
    }
    let g2 = m4 / (m2 * m2) - 3.0;
    ((n + 1.0) * g2 + 6.0) * (n - 1.0) / ((n - 2.0) * (n - 3.0))
}

/// Linear-interpolated quantile of a window.
pub fn quantile(w: &[f64], q: f64) -> f64 {
    let mut v = w.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Least-squares fit of a window on time 0..n: (slope, intercept, r²).
pub fn regress(w: &[f64]) -> (f64, f64, f64) {
    let n = w.len() as f64;
    let tm = (n - 1.0) / 2.0;
    let ym = w.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (i, y) in w.iter().enumerate() {
        let dx = i as f64 - tm;
        let dy = y - ym;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 {
        sxy * sxy / (sxx * syy)
    } else {
        f64::NAN
    };
    (slope, ym - slope * tm, r2)
}

/// Exponential moving average with `alpha = 2 / (d + 1)`, seeded with the first value and
/// reported once `d` bars have been seen; a NaN restarts it.
pub fn ema(x: &[f64], d: usize, out: &mut [f64]) {
    let alpha = 2.0 / (d as f64 + 1.0);
    let (mut s, mut seen) = (f64::NAN, 0usize);
    for t in 0..x.len() {
        if x[t].is_nan() {
            s = f64::NAN;
            seen = 0;
        } else if seen == 0 {
            s = x[t];
            seen = 1;
        } else {
            s += alpha * (x[t] - s);
            seen += 1;
        }
        out[t] = if seen >= d { s } else { f64::NAN };
    }
}

/// An order-preserving integer key of a float (NaN sorts after +inf, -0 as 0).
fn sort_key(v: f64) -> u64 {
    if v.is_nan() {
        // Above +inf's key (0xFFF0…): +inf ranks last among the numbers, so `rank` gives it 1
        // whether or not the row holds NaN (tied with NaN, it ranked above the count).
        return u64::MAX;
    }
    let b = (v + 0.0).to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// Reusable buffers for [`rank_avg`].
#[derive(Debug, Default, Clone)]
pub struct RankScratch {
    keys: Vec<u64>,
    a: Vec<(u32, u32)>,
    b: Vec<(u32, u32)>,
    counts: Vec<u32>,
    ikeys: Vec<i64>,
    /// The numbers [`rank_counted`] recognises at its last scale.
    halves: Halves,
    /// [`pct_rank`]'s quotients for rows of the last count (kept apart from `halves`: rows of
    /// whole numbers try scale 1 first, and one table would be remade twice a row).
    pct: Halves,
}

/// The numbers `(k · 0.5) / scale` for k = 0, 1, …, for one scale at a time (most rows share
/// one), made on demand: a lookup instead of a division per number, with the same bits.
#[derive(Debug, Default, Clone)]
struct Halves {
    scale: f64,
    values: Vec<f64>,
}

impl Halves {
    /// The table for `scale`, holding at least k = 0..=`k`.
    fn upto(&mut self, scale: f64, k: usize) -> &[f64] {
        if self.scale != scale {
            self.values.clear();
            self.scale = scale;
        }
        if k >= self.values.len() {
            let from = self.values.len();
            self.values
                .extend((from..=k).map(|k| (k as f64 * 0.5) / scale));
        }
        &self.values
    }
}

/// Sorts the indices of `keys` into `a` by the 24 bits of their key that matter most (from the
/// highest bit in which any two keys differ; all bits above it are shared), then by index: a
/// stable radix sort of at most three byte-wide passes, each skipped if no key differs in it.
/// When the top byte alone already spreads the keys thinly, the lowest byte is not sorted on.
/// Returns how many low bits of the sorted 24 were left unsorted (0 or 8): runs that agree in
/// the bits above (rare) are left for the caller to order by the full key. Below 64 keys,
/// everything is simply sorted by full key and index.
///
/// `differ` holds the bits in which some keys differ.
fn radix_high(s: &mut RankScratch, differ: u64) -> u32 {
    let n = s.keys.len();
    let shift = (64 - differ.leading_zeros()).saturating_sub(24);
    s.a.clear();
    s.a.extend(
        s.keys
            .iter()
            .enumerate()
            .map(|(i, k)| (((k >> shift) & 0xff_ffff) as u32, i as u32)),
    );
    if n < 64 {
        let keys = &s.keys;
        s.a.sort_unstable_by_key(|&(_, i)| (keys[i as usize], i));
        return 0;
    }
    let differ = (differ >> shift) as u32;
    // Counts of one byte, in two interleaved tables so that runs of equal bytes do not wait on
    // one counter, as start offsets.
    let offsets = |a: &[(u32, u32)], sh: u32| {
        let mut hist = [[0u32; 256]; 2];
        let pairs = a.chunks_exact(2);
        for &(k, _) in pairs.remainder() {
            hist[0][((k >> sh) & 0xff) as usize] += 1;
        }
        for p in pairs {
            hist[0][((p[0].0 >> sh) & 0xff) as usize] += 1;
            hist[1][((p[1].0 >> sh) & 0xff) as usize] += 1;
        }
        let (mut offs, mut sum, mut most) = ([0u32; 256], 0u32, 0u32);
        for ((o, c0), c1) in offs.iter_mut().zip(&hist[0]).zip(&hist[1]) {
            *o = sum;
            sum += c0 + c1;
            most = most.max(c0 + c1);
        }
        (offs, most)
    };
    let (top, most) = offsets(&s.a, 16);
    // At most one key in 16 shares its top byte with a given one: the two upper bytes leave
    // few keys tied, and ordering those few costs less than a pass over all.
    let low = if (most as usize) * 16 <= n { 1 } else { 0 };
    // Each pass writes all of `b`.
    s.b.resize(n, (0, 0));
    for b in low..3 {
        let sh = 8 * b;
        if (differ >> sh) & 0xff == 0 {
            continue;
        }
        let mut offs = if b == 2 { top } else { offsets(&s.a, sh).0 };
        // A stable scatter: equal bytes keep their order, so ties stay in index order.
        for &(k, i) in &s.a {
            let d = ((k >> sh) & 0xff) as usize;
            s.b[offs[d] as usize] = (k, i);
            offs[d] += 1;
        }
        std::mem::swap(&mut s.a, &mut s.b);
    }
    8 * low
}

/// The bits in which some of `keys` differ.
#[cfg(test)]
fn differing(keys: &[u64]) -> u64 {
    let (all, any) = keys
        .iter()
        .fold((u64::MAX, 0u64), |(all, any), &k| (all & k, any | k));
    all ^ any
}

/// Sorts the indices of `keys` by key, then index, into `a` (see [`radix_high`]).
#[cfg(test)]
fn sort_indices(s: &mut RankScratch) {
    let differ = differing(&s.keys);
    let unsorted = radix_high(s, differ);
    let n = s.a.len();
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && s.a[j].0 >> unsorted == s.a[i].0 >> unsorted {
            j += 1;
        }
        if j - i > 1 {
            let keys = &s.keys;
            s.a[i..j].sort_unstable_by_key(|&(_, idx)| (keys[idx as usize], idx));
        }
        i = j;
    }
}

/// Average-tie ranks 1..=n of a row, NaN ranked after every number (+inf included) and then
/// reset to NaN. The numpy reference ranks NaN as +inf, tied with it; the two differ only for
/// +inf in a row that also holds NaN.
pub fn rank_avg(row: &[f64], out: &mut [f64], scratch: &mut RankScratch) {
    rank_into(row, out, scratch, false);
}

/// Percentile ranks, the `rank` operator: average-tie ranks divided by the count of numbers
/// in the row (NaN stays NaN).
pub fn pct_rank(row: &[f64], out: &mut [f64], scratch: &mut RankScratch) {
    rank_into(row, out, scratch, true);
}

/// [`rank_avg`], or [`pct_rank`] when `pct`: ranks are halves `k / 2`, written as they are
/// found (`k · 0.5`, or the quotient `(k · 0.5) / count` from a table made once per count).
fn rank_into(row: &[f64], out: &mut [f64], scratch: &mut RankScratch, pct: bool) {
    let n = row.len();
    let finite = count_numbers(row);
    let counted = rank_counted(row, out, scratch, 1.0)
        || (finite > 0 && rank_counted(row, out, scratch, finite as f64));
    // Up to 2n: +inf ties with NaN (ranked as +inf) and may rank above the count.
    let table: &[f64] = if pct {
        scratch.pct.upto(finite as f64, 2 * n + 1)
    } else {
        &[]
    };
    let value = |k2: usize| if pct { table[k2] } else { k2 as f64 * 0.5 };
    if counted {
        if pct {
            for v in out.iter_mut() {
                if !v.is_nan() {
                    *v = value((*v * 2.0) as usize);
                }
            }
        }
        return;
    }
    // The keys, and the bits in which they differ, in one pass.
    scratch.keys.clear();
    let (mut all, mut any) = (u64::MAX, 0u64);
    for v in row {
        let k = sort_key(*v);
        scratch.keys.push(k);
        all &= k;
        any |= k;
    }
    let missing = sort_key(f64::NAN);
    let unsorted = radix_high(scratch, all ^ any);
    // One walk over the order: runs that agree in the sorted bits are ordered by the whole
    // key, then ranked.
    let (keys, order, table) = (&scratch.keys, &mut scratch.a, &scratch.pct.values);
    let value = |k2: usize| if pct { table[k2] } else { k2 as f64 * 0.5 };
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && order[j].0 >> unsorted == order[i].0 >> unsorted {
            j += 1;
        }
        if j - i == 1 {
            let idx = order[i].1 as usize;
            out[idx] = if row[idx].is_nan() {
                f64::NAN
            } else {
                value(2 * i + 2)
            };
        } else {
            // Each group of equal whole keys gets its average position (NaN keeps NaN).
            order[i..j].sort_unstable_by_key(|&(_, idx)| (keys[idx as usize], idx));
            let mut p = i;
            while p < j {
                let k = keys[order[p].1 as usize];
                let mut q = p + 1;
                while q < j && keys[order[q].1 as usize] == k {
                    q += 1;
                }
                // Positions p..q (from 0) average (p + q + 1) / 2 as ranks from 1.
                let r = value(p + q + 1);
                for &(_, idx) in &order[p..q] {
                    let idx = idx as usize;
                    out[idx] = if k == missing && row[idx].is_nan() {
                        f64::NAN
                    } else {
                        r
                    };
                }
                p = q;
            }
        }
        i = j;
    }
}

/// [`rank_avg`] by counting, for rows whose numbers are all ± multiples of one half divided by
/// `scale`, exactly as the `rank` operator writes them (`scale` 1: ranks, negated ranks, signs,
/// counts; `scale` the row's count: percentile ranks), within a range of about twice the row's
/// length. Gives up (returns false) at the first number that is not, which for real-valued data
/// is the first. Each number maps to the integer `k` with `v = ±(k / 2) / scale` exactly, so the
/// integers order and tie the numbers as sorting would; a value with `p` smaller ones and `c`
/// equal ones (itself included) ranks `p + (c + 1) / 2`, which is [`rank_avg`]'s result.
fn rank_counted(row: &[f64], out: &mut [f64], scratch: &mut RankScratch, scale: f64) -> bool {
    // Most rows that do not qualify fail at their first number: test it before the table,
    // which is kept for the scale that last qualified rather than rebuilt for every attempt.
    if let Some(a) = row.iter().find(|v| !v.is_nan()).map(|v| v.abs()) {
        let x = a * 2.0 * scale;
        if x.is_nan() || x >= 1e12 || ((x + 0.5) as i64 as f64 * 0.5) / scale != a {
            return false;
        }
    }
    let (keys, halves) = (&mut scratch.ikeys, &mut scratch.halves);
    keys.clear();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for &v in row {
        if v.is_nan() {
            keys.push(i64::MIN);
            continue;
        }
        let a = v.abs();
        let x = a * 2.0 * scale;
        if x.is_nan() || x >= 1e12 {
            return false;
        }
        // Round half up by truncation (a library call to `round` would cost more than all else).
        let k = (x + 0.5) as i64;
        let exact = if (k as usize) < 4 * row.len() + 64 {
            halves.upto(scale, k as usize)[k as usize]
        } else {
            (k as f64 * 0.5) / scale
        };
        if exact != a {
            return false;
        }
        let k = if v < 0.0 { -k } else { k };
        lo = lo.min(k);
        hi = hi.max(k);
        // Whole numbers spread wider than counting allows (volumes, say) stop here.
        if hi - lo > (4 * row.len() + 64) as i64 {
            return false;
        }
        keys.push(k);
    }
    if lo > hi {
        out.fill(f64::NAN);
        return true;
    }
    if hi - lo > (4 * row.len() + 64) as i64 {
        return false;
    }
    let counts = &mut scratch.counts;
    counts.clear();
    counts.resize((hi - lo) as usize + 1, 0);
    for &k in keys.iter().filter(|&&k| k != i64::MIN) {
        counts[(k - lo) as usize] += 1;
    }
    // Each bucket becomes twice the rank of its values: 2p + c + 1.
    let mut p = 0u32;
    for c in counts.iter_mut() {
        let k = *c;
        *c = 2 * p + k + 1;
        p += k;
    }
    for (o, &k) in out.iter_mut().zip(keys.iter()) {
        *o = if k == i64::MIN {
            f64::NAN
        } else {
            f64::from(counts[(k - lo) as usize]) * 0.5
        };
    }
    true
}

/// [`rank_avg`] of a row that may hold the `rank` operator's percentile ranks over `count`
/// instruments (e.g. a signal's row in the information coefficient): counted when it does.
pub fn rank_avg_of_ranks(row: &[f64], count: usize, out: &mut [f64], scratch: &mut RankScratch) {
    if count > 0 && rank_counted(row, out, scratch, count as f64) {
        return;
    }
    rank_avg(row, out, scratch);
}

/// How many numbers (non-NaN values) a row holds, in a loop the compiler vectorises.
pub fn count_numbers(row: &[f64]) -> usize {
    row.iter().map(|v| usize::from(!v.is_nan())).sum()
}

/// Sum and count of the numbers in a row, summed in order.
pub fn nansum_count(row: &[f64]) -> (f64, usize) {
    row.iter()
        .filter(|v| !v.is_nan())
        .fold((0.0, 0), |(s, c), v| (s + v, c + 1))
}

/// Mean and sample standard deviation (two-pass) of the numbers in a row.
pub fn nanmean_std(row: &[f64], ddof: usize) -> (f64, f64) {
    let (s, c) = nansum_count(row);
    if c == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = s / c as f64;
    let ss: f64 = row
        .iter()
        .filter(|v| !v.is_nan())
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let std = if c > ddof {
        (ss / (c - ddof) as f64).sqrt()
    } else {
        f64::NAN
    };
    (mean, std)
}

#[cfg(test)]
mod tests {
    /// A window of one bar is the value itself, bit for bit: Alpha101's alpha 29 ranks
    /// `ts_sum(x, 1)`, where a running sum's residue would break the ties of `x`.
    #[test]
    fn a_one_bar_sum_or_mean_is_the_value_itself() {
        let x: Vec<f64> = (0..200)
            .map(|i| {
                if i % 17 == 5 {
                    f64::NAN
                } else {
                    (i as f64 * 0.37).sin() * 1e3 + 0.1
                }
            })
            .collect();
        let (mut s, mut m) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        super::move_sum_min(&x, 1, 1, &mut s);
        super::move_mean_min(&x, 1, 1, &mut m);
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&s), bits(&x));
        assert_eq!(bits(&m), bits(&x));
    }

    use super::*;

    fn run(f: impl Fn(&[f64], &mut [f64]), x: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        f(x, &mut out);
        out
    }

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x.is_nan() && y.is_nan()) || (x - y).abs() < 1e-12)
    }

    /// A small seeded generator of 64-bit numbers for the tests.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// The ranks by definition: numbers below, plus the average position among equal
    /// numbers; NaN is left NaN and ranks after every number, +inf included.
    fn naive_ranks(row: &[f64]) -> Vec<f64> {
        row.iter()
            .map(|&v| {
                if v.is_nan() {
                    return f64::NAN;
                }
                let below = row.iter().filter(|&&w| w < v).count() as f64;
                let equal = row.iter().filter(|&&w| w == v).count() as f64;
                below + (equal + 1.0) / 2.0
            })
            .collect()
    }

    #[test]
    fn rolling_products_are_exact_for_zeros_and_signs_and_nan_until_full() {
        let x = [2.0, -1.0, 0.0, 3.0, 4.0, f64::NAN, 5.0, 6.0, 0.5];
        let mut out = vec![0.0; x.len()];
        move_product(&x, 2, &mut out);
        let want = [
            f64::NAN,
            -2.0,
            -0.0,
            0.0,
            12.0,
            f64::NAN,
            f64::NAN,
            30.0,
            3.0,
        ];
        assert!(same(&out, &want), "{out:?}");
    }

    #[test]
    fn the_rank_of_plus_infinity_is_one_even_beside_nan() {
        let row = [
            0.5,
            f64::NAN,
            f64::INFINITY,
            -1.0,
            f64::NAN,
            f64::NEG_INFINITY,
        ];
        let mut out = vec![0.0; row.len()];
        let mut scratch = RankScratch::default();
        pct_rank(&row, &mut out, &mut scratch);
        assert_eq!(out[2], 1.0);
        assert_eq!(out[5], 0.25);
        assert!(out[1].is_nan() && out[4].is_nan());
        rank_avg(&row, &mut out, &mut scratch);
        assert_eq!(&[out[0], out[2], out[3], out[5]], &[3.0, 4.0, 2.0, 1.0]);
    }

    #[test]
    fn sorted_ranks_follow_the_definition_row_after_row() {
        // Rows that drift, jump, hold values that differ only in their last bits (the radix
        // pass leaves them tied), ties, NaN and ±inf.
        let mut bits = xorshift(977);
        let mut next = || (bits() >> 11) as f64 / (1u64 << 53) as f64;
        let n = 300;
        let mut row: Vec<f64> = (0..n).map(|_| next()).collect();
        let mut scratch = RankScratch::default();
        let mut out = vec![0.0; n];
        for step in 0..40 {
            for v in row.iter_mut() {
                *v += 0.01 * (next() - 0.5);
            }
            if step % 7 == 3 {
                row.iter_mut().for_each(|v| *v = next());
            }
            if step % 5 == 1 {
                for (j, v) in row.iter_mut().enumerate().take(40) {
                    *v = 1.0 + (j % 9) as f64 * f64::EPSILON;
                }
                row[41] = f64::NAN;
                row[42] = f64::INFINITY;
                row[43] = f64::NEG_INFINITY;
                row[44] = row[45];
            }
            rank_avg(&row, &mut out, &mut scratch);
            assert!(same(&out, &naive_ranks(&row)), "step {step}");
        }
        // Narrow rows, where two bytes spread the keys thinly and the lowest is not sorted on:
        // neighbours that differ below those bytes must still be ordered.
        for step in 0..20 {
            let mut row: Vec<f64> = (0..n).map(|_| 1.0 + next()).collect();
            for j in (0..n).step_by(10) {
                row[j + 1] = row[j] + (step % 4) as f64 * 1e-6;
                row[j + 2] = row[j] - 1e-9;
            }
            scratch.keys.clear();
            scratch.keys.extend(row.iter().map(|v| sort_key(*v)));
            let differ = differing(&scratch.keys);
            assert_eq!(
                radix_high(&mut scratch, differ),
                8,
                "step {step}: two passes expected"
            );
            rank_avg(&row, &mut out, &mut scratch);
            assert!(same(&out, &naive_ranks(&row)), "narrow step {step}");
        }
    }

    #[test]
    fn percentile_ranks_are_the_ranks_divided_by_the_count() {
        // Rows of changing counts (NaN) and ties share one scratch, so its table is remade.
        let mut bits = xorshift(5);
        let mut scratch = RankScratch::default();
        // Quarters are sorted; halves are counted. +inf ranks last among the numbers, so never
        // above the count.
        for len in [1, 2, 7, 64, 65, 300, 64, 1] {
            for step in 0..6 {
                let row: Vec<f64> = (0..len)
                    .map(|_| match bits() % 9 {
                        0 | 1 => f64::NAN,
                        2 => f64::INFINITY,
                        k if step % 2 == 0 => (k % 4) as f64 + (bits() % 3) as f64 * 0.25,
                        k => (k % 4) as f64 * 0.5,
                    })
                    .collect();
                let mut got = vec![0.0; len];
                pct_rank(&row, &mut got, &mut scratch);
                let count = row.iter().filter(|v| !v.is_nan()).count() as f64;
                let want: Vec<f64> = naive_ranks(&row).iter().map(|r| r / count).collect();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())),
                    "{row:?}: {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn rolling_extremes_follow_their_definition() {
        // Random series with ties, NaN gaps and every window from 1 to 12 against a direct scan:
        // the value, and the bars since it with the newest winning ties.
        let mut bits = xorshift(31);
        let mut next = || bits() % 7;
        let x: Vec<f64> = (0..200)
            .map(|i| if i % 37 == 5 { f64::NAN } else { next() as f64 })
            .collect();
        for w in 1..=12 {
            for which in [Extreme::Min, Extreme::Max] {
                let (mut v, mut a) = (vec![0.0; x.len()], vec![0.0; x.len()]);
                move_extreme(&x, w, which, false, &mut v);
                move_extreme(&x, w, which, true, &mut a);
                for t in 0..x.len() {
                    if t + 1 < w || x[t + 1 - w..=t].iter().any(|v| v.is_nan()) {
                        assert!(v[t].is_nan() && a[t].is_nan(), "w {w} t {t}");
                        continue;
                    }
                    let mut best = t + 1 - w;
                    for i in t + 1 - w..=t {
                        let wins = match which {
                            Extreme::Min => x[i] <= x[best],
                            Extreme::Max => x[i] >= x[best],
                        };
                        if wins {
                            best = i;
                        }
                    }
                    assert_eq!((v[t], a[t]), (x[best], (t - best) as f64), "w {w} t {t}");
                }
            }
        }
    }

    #[test]
    fn counting_ranks_equal_sorting_ranks() {
        // Rows of half-integers (ranks, negated ranks, signs, ties, NaN, -0.0) take the
        // counting path; it must agree exactly with the radix path.
        let mut next = xorshift(12345);
        let mut scratch = RankScratch::default();
        for len in [1usize, 2, 5, 63, 64, 65, 500] {
            for spread in [1u64, 3, 40, 2000] {
                let row: Vec<f64> = (0..len)
                    .map(|_| match next() % 10 {
                        0 => f64::NAN,
                        1 => -0.0,
                        _ => (next() % spread) as f64 * 0.5 - (spread / 4) as f64,
                    })
                    .collect();
                let mut fast = vec![0.0; len];
                let counted = rank_counted(&row, &mut fast, &mut scratch, 1.0);
                let mut slow = vec![0.0; len];
                scratch.keys.clear();
                scratch.keys.extend(row.iter().map(|v| sort_key(*v)));
                sort_indices(&mut scratch);
                let (keys, order) = (&scratch.keys, &scratch.a);
                let mut i = 0;
                while i < order.len() {
                    let k = keys[order[i].1 as usize];
                    let mut j = i;
                    while j + 1 < order.len() && keys[order[j + 1].1 as usize] == k {
                        j += 1;
                    }
                    for &(_, idx) in &order[i..=j] {
                        slow[idx as usize] = 0.5 * (i + j) as f64 + 1.0;
                    }
                    i = j + 1;
                }
                for (o, v) in slow.iter_mut().zip(&row) {
                    if v.is_nan() {
                        *o = f64::NAN;
                    }
                }
                assert!(counted || spread > 40, "len {len} spread {spread}");
                if counted {
                    assert!(same(&fast, &slow), "len {len} spread {spread}: {row:?}");
                }
            }
        }
        // Percentile ranks as the operator writes them are counted, and agree.
        let raw: Vec<f64> = (0..300).map(|i| ((i * 7919) % 97) as f64).collect();
        let mut r = vec![0.0; 300];
        rank_avg(&raw, &mut r, &mut scratch);
        let pct: Vec<f64> = r.iter().map(|v| v / 300.0).collect();
        let (mut a, mut b) = (vec![0.0; 300], vec![0.0; 300]);
        assert!(rank_counted(&pct, &mut a, &mut scratch, 300.0));
        let neg: Vec<f64> = pct.iter().map(|v| -v).collect();
        assert!(rank_counted(&neg, &mut b, &mut scratch, 300.0));
        assert!(same(&a, &r));
        assert!(same(&b, &r.iter().map(|v| 301.0 - v).collect::<Vec<_>>()));
        // Real-valued rows are not counted.
        assert!(!rank_counted(
            &[0.25, 1.1],
            &mut [0.0; 2],
            &mut scratch,
            1.0
        ));
        assert!(!rank_counted(&[0.3, 0.7], &mut [0.0; 2], &mut scratch, 2.0));
    }

    #[test]
    fn rolling_statistics_by_hand() {
        let x = [1.0, 2.0, 4.0, f64::NAN, 5.0, 6.0, 7.0];
        let n = f64::NAN;
        assert!(same(
            &run(|x, o| move_sum(x, 2, o), &x),
            &[n, 3.0, 6.0, n, n, 11.0, 13.0]
        ));
        assert!(same(
            &run(|x, o| move_mean(x, 3, o), &x),
            &[n, n, 7.0 / 3.0, n, n, n, 6.0]
        ));
        let sd = run(|x, o| move_var(x, 3, 1, true, o), &x);
        assert!(
            (sd[2] - (7.0f64 / 3.0).sqrt()).abs() < 1e-12
                && (sd[6] - 1.0).abs() < 1e-12
                && sd[5].is_nan()
        );
        assert!(same(
            &run(|x, o| move_extreme(x, 3, Extreme::Max, false, o), &x),
            &[n, n, 4.0, n, n, n, 7.0]
        ));
        let y = [3.0, 1.0, 3.0, 2.0];
        // Max of (3, 1, 3) is at the newest 3: 0 bars ago; of (1, 3, 2) it is 1 bar ago.
        assert!(same(
            &run(|x, o| move_extreme(x, 3, Extreme::Max, true, o), &y),
            &[n, n, 0.0, 1.0]
        ));
        assert!(same(
            &run(|x, o| move_extreme(x, 3, Extreme::Min, true, o), &y),
            &[n, n, 1.0, 2.0]
        ));
        // Rank of 2 among (1, 3, 2): one below, itself; (0.5 * (2 + 1 - 1)) / 2 = 0.5 -> 0.
        assert!(same(&run(|x, o| move_rank(x, 3, o), &y), &[n, n, 0.5, 0.0]));
        assert!(same(
            &run(|x, o| decay_linear(x, 2, o), &[1.0, 4.0]),
            &[n, (1.0 + 8.0) / 3.0]
        ));
    }

    proptest::proptest! {
        #[test]
        fn radix_order_matches_the_standard_sort(xs in proptest::collection::vec(proptest::prelude::any::<f64>(), 0..300), dup in 0usize..5) {
            // Some repeated and near-equal values, to exercise ties and the full-key fix-up.
            let mut xs = xs;
            for k in 0..dup.min(xs.len()) {
                xs.push(xs[k]);
                xs.push(f64::from_bits(xs[k].to_bits() ^ 1));
            }
            let mut s = RankScratch { keys: xs.iter().map(|v| sort_key(*v)).collect(), ..RankScratch::default() };
            sort_indices(&mut s);
            let got: Vec<u32> = s.a.iter().map(|p| p.1).collect();
            let mut want: Vec<(u64, u32)> = s.keys.iter().enumerate().map(|(i, k)| (*k, i as u32)).collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(got, want.into_iter().map(|p| p.1).collect::<Vec<_>>());
        }
    }

    #[test]
    fn ranks_average_ties_and_keep_nan() {
        let mut out = vec![0.0; 5];
        rank_avg(
            &[3.0, f64::NAN, 1.0, 3.0, 2.0],
            &mut out,
            &mut RankScratch::default(),
        );
        assert!(same(&out, &[3.5, f64::NAN, 1.0, 3.5, 2.0]));
    }

    #[test]
    fn regression_on_time() {
        let (slope, intercept, r2) = regress(&[1.0, 3.0, 5.0, 7.0]);
        assert!(
            (slope - 2.0).abs() < 1e-12
                && (intercept - 1.0).abs() < 1e-12
                && (r2 - 1.0).abs() < 1e-12
        );
        assert!((quantile(&[4.0, 1.0, 3.0, 2.0], 0.5) - 2.5).abs() < 1e-12);
    }
}
