//! Evaluating expressions over panels.
//!
//! A [`Frame`] holds the input fields as `times × instruments` matrices (column-major, each
//! instrument's history contiguous). [`Evaluator::eval`] computes an expression bottom-up.
//! Within a batch, a sub-expression that several strategies share is computed once: the
//! [`Evaluator`] counts how often each sub-expression occurs across the batch, keeps a result
//! while later uses remain, and drops it after the last. Every kernel is deterministic and
//! instruments are independent, so results do not depend on the number of threads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::expr::{BinOp, Expr, Kind, func};
use crate::ops::{self, Extreme};

/// A `times × instruments` matrix, column-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    /// Bars.
    pub t: usize,
    /// Instruments.
    pub n: usize,
    /// Values, instrument by instrument.
    pub data: Vec<f64>,
}

impl Mat {
    /// A matrix of one value.
    pub fn filled(t: usize, n: usize, v: f64) -> Mat {
        Mat {
            t,
            n,
            data: vec![v; t * n],
        }
    }

    /// A matrix of zeros for a kernel to overwrite ([`ops::zeros`]), in the buffer of a
    /// temporary that died ([`recycle`]) when one of the size is spare.
    pub fn zeros(t: usize, n: usize) -> Mat {
        let data = match spare(t * n) {
            Some(mut v) => {
                v.par_iter_mut().for_each(|x| *x = 0.0);
                v
            }
            None => ops::zeros(t * n),
        };
        Mat { t, n, data }
    }

    /// A matrix whose every cell the caller writes: a spare buffer as it is, old values and
    /// all, or zeros (what [`Mat::zeros`] would give, without its pass of zeros).
    fn scratch(t: usize, n: usize) -> Mat {
        match spare(t * n) {
            Some(data) => Mat { t, n, data },
            None => Mat::zeros(t, n),
        }
    }

    /// One instrument's history.
    pub fn col(&self, j: usize) -> &[f64] {
        &self.data[j * self.t..(j + 1) * self.t]
    }

    /// The value at bar `i` of instrument `j`.
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[j * self.t + i]
    }

    /// Applies a time-series kernel to every instrument, in parallel.
    pub fn map_cols(&self, f: impl Fn(&[f64], &mut [f64]) + Sync) -> Mat {
        let mut out = Mat::zeros(self.t, self.n);
        if self.t > 0 {
            out.data
                .par_chunks_mut(self.t)
                .zip(self.data.par_chunks(self.t))
                .for_each(|(o, x)| f(x, o));
        }
        out
    }

    /// Applies a cross-sectional kernel to every bar, bars in parallel.
    pub fn map_rows(&self, f: impl Fn(&[f64], &mut [f64], &mut Scratch) + Sync) -> Mat {
        let (t, n) = (self.t, self.n);
        // Every cell is written: each row's result is scattered back whole.
        let mut out = Mat::scratch(t, n);
        if t == 0 || n == 0 {
            return out;
        }
        // Bars are taken a block at a time: the block is gathered into rows (a few contiguous
        // values per instrument), each row is replaced by its result, and the block is
        // scattered back into the output's columns. A task owns its block's slice of every
        // column, so no transposed copy of the whole matrix is ever made.
        let mut tiles: Vec<Vec<&mut [f64]>> = (0..t.div_ceil(ROW_BLOCK))
            .map(|_| Vec::with_capacity(n))
            .collect();
        for col in out.data.chunks_mut(t) {
            for (b, tile) in col.chunks_mut(ROW_BLOCK).enumerate() {
                tiles[b].push(tile);
            }
        }
        tiles.into_par_iter().enumerate().for_each_init(
            || (Scratch::default(), Vec::new(), vec![0.0; n]),
            |(scratch, rows, res), (b, mut cols)| {
                let a = b * ROW_BLOCK;
                let len = cols[0].len();
                self.rows_into(a..a + len, rows);
                for row in rows.chunks_mut(n) {
                    f(row, res, scratch);
                    row.copy_from_slice(res);
                }
                // Eight columns at a time, each row's eight values read from one cache line.
                const TILE: usize = 8;
                for (c, tile) in cols.chunks_mut(TILE).enumerate() {
                    let j0 = c * TILE;
                    for (r, row) in rows.chunks_exact(n).enumerate() {
                        for (k, col) in tile.iter_mut().enumerate() {
                            col[r] = row[j0 + k];
                        }
                    }
                }
            },
        );
        out
    }

    /// Per bar, the sum of `f(bar, value)` over the bar's numbers (NaN skipped) and how many
    /// there are. The sum is added in instrument order, the same sum bit for bit as a loop
    /// along the bar's row, but each instrument's history is read a block of bars at a time
    /// and no row is ever gathered. Bars in parallel.
    pub fn row_sums(&self, f: impl Fn(usize, f64) -> f64 + Sync) -> (Vec<f64>, Vec<u32>) {
        const BLOCK: usize = 512;
        let (t, n) = (self.t, self.n);
        let (mut sums, mut counts) = (vec![0.0; t], vec![0u32; t]);
        sums.par_chunks_mut(BLOCK)
            .zip(counts.par_chunks_mut(BLOCK))
            .enumerate()
            .for_each(|(b, (s, c))| {
                let a = b * BLOCK;
                for j in 0..n {
                    let col = &self.data[j * t + a..j * t + a + s.len()];
                    for (k, ((s, c), v)) in s.iter_mut().zip(c.iter_mut()).zip(col).enumerate() {
                        let number = !v.is_nan();
                        // Adding +0 to a sum begun at +0 changes nothing.
                        *s += if number { f(a + k, *v) } else { 0.0 };
                        *c += u32::from(number);
                    }
                }
            });
        (sums, counts)
    }

    /// Per bar, the mean and the sample standard deviation (two-pass) of its numbers:
    /// [`ops::nanmean_std`] of every row with `ddof` 1, without gathering rows.
    pub fn row_mean_std(&self) -> (Vec<f64>, Vec<f64>) {
        let (sums, counts) = self.row_sums(|_, v| v);
        // A bar without numbers: 0 / 0, NaN.
        let mean: Vec<f64> = sums
            .iter()
            .zip(&counts)
            .map(|(s, &c)| s / f64::from(c))
            .collect();
        let (ss, _) = self.row_sums(|i, v| (v - mean[i]) * (v - mean[i]));
        let std = ss
            .iter()
            .zip(&counts)
            .map(|(ss, &c)| {
                if c > 1 {
                    (ss / f64::from(c - 1)).sqrt()
                } else {
                    f64::NAN
                }
            })
            .collect();
        (mean, std)
    }

    /// `g(bar, value)` for every cell, in parallel.
    pub fn map_cells(&self, g: impl Fn(usize, f64) -> f64 + Sync) -> Mat {
        self.map_cols(|x, o| {
            for (i, (o, v)) in o.iter_mut().zip(x).enumerate() {
                *o = g(i, *v);
            }
        })
    }

    /// Bars `range`, one row per bar (instruments contiguous), into `rows`.
    pub fn rows_into(&self, range: std::ops::Range<usize>, rows: &mut Vec<f64>) {
        let (t, n, len) = (self.t, self.n, range.len());
        // Every cell is written below: old contents need no clearing.
        rows.resize(len * n, 0.0);
        // Eight instruments at a time: each row's eight values fill one cache line, written
        // whole before the next eight are read.
        const TILE: usize = 8;
        let whole = n - n % TILE;
        for j0 in (0..whole).step_by(TILE) {
            let src: [&[f64]; TILE] =
                std::array::from_fn(|k| &self.data[(j0 + k) * t + range.start..][..len]);
            for (r, dst) in rows.chunks_exact_mut(n).enumerate() {
                let dst = &mut dst[j0..j0 + TILE];
                for k in 0..TILE {
                    dst[k] = src[k][r];
                }
            }
        }
        for j in whole..n {
            let src = &self.data[j * t + range.start..j * t + range.end];
            for (r, v) in src.iter().enumerate() {
                rows[r * n + j] = *v;
            }
        }
    }
}

/// Bars per task in cross-sectional work: a block of rows stays in cache while it is gathered,
/// used and scattered.
pub(crate) const ROW_BLOCK: usize = 32;

/// Reusable space for cross-sectional kernels.
pub type Scratch = crate::ops::RankScratch;

/// Grouping labels per instrument (e.g. exchange), for `group_*` functions.
pub type Groups = HashMap<String, Vec<u32>>;

/// The input fields of a backtest.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// Field name → matrix. All matrices share a shape.
    pub fields: HashMap<String, Arc<Mat>>,
    /// Grouping name → group id per instrument.
    pub groups: Groups,
    /// Bars.
    pub t: usize,
    /// Instruments.
    pub n: usize,
}

impl Frame {
    /// Names of the groupings, for the parser: the built-in ones and those from the data.
    pub fn group_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = crate::expr::GROUPS.to_vec();
        let mut extra: Vec<&str> = self
            .groups
            .keys()
            .map(String::as_str)
            .filter(|g| !v.contains(g))
            .collect();
        extra.sort_unstable();
        v.extend(extra);
        v
    }

    /// Names of the fields, for the parser.
    pub fn field_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.fields.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// A value during evaluation: a constant or a matrix.
#[derive(Debug, Clone)]
pub enum Value {
    /// A constant.
    Scalar(f64),
    /// A matrix.
    Panel(Arc<Mat>),
}

/// An evaluated signal, and what its expression tells about its rows.
#[derive(Debug, Clone)]
pub struct Signal {
    /// The values, instrument by instrument.
    pub values: Arc<Mat>,
    /// Every row holds the `rank` operator's percentile ranks of that row's numbers, or their
    /// negations ([`Expr::is_rank`]). Such a row already orders and ties its instruments, so
    /// its rank IC needs no sorting.
    pub ranks: bool,
}

impl Signal {
    /// A signal known only by its values.
    pub fn plain(values: impl Into<Arc<Mat>>) -> Signal {
        Signal {
            values: values.into(),
            ranks: false,
        }
    }
}

/// Buffers of temporaries no one holds any more, kept for the next matrix of their size.
/// A fresh buffer costs a page fault per 4 KiB page when first written (about 2 µs each on
/// the 2-core development machine: 18 % of the Alpha101 benchmark's time), a spare one a
/// pass of zeros. Bounded: at most [`SPARE_MAX`] buffers are kept.
static SPARE: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
const SPARE_MAX: usize = 4;
/// Smaller matrices are left to the allocator.
const SPARE_MIN_LEN: usize = 1 << 15;

fn spare(len: usize) -> Option<Vec<f64>> {
    if len < SPARE_MIN_LEN {
        return None;
    }
    let mut s = SPARE.lock().ok()?;
    let i = s.iter().position(|v| v.len() == len)?;
    Some(s.swap_remove(i))
}

/// Keeps a temporary's buffer for [`Mat::zeros`] when nothing else holds the matrix.
fn recycle(m: Arc<Mat>) {
    if m.data.len() >= SPARE_MIN_LEN
        && let Ok(m) = Arc::try_unwrap(m)
        && let Ok(mut s) = SPARE.lock()
        && s.len() < SPARE_MAX
    {
        s.push(m.data);
    }
}

/// Evaluates expressions over a frame, sharing sub-expressions across a batch.
#[derive(Debug)]
pub struct Evaluator<'a> {
    frame: &'a Frame,
    /// Sub-expression → remaining uses; only those used more than once are cached.
    uses: Mutex<HashMap<String, usize>>,
    cache: Mutex<HashMap<String, Arc<Mat>>>,
    /// Most matrices kept at once; beyond it a shared result is recomputed instead.
    budget: usize,
}

impl<'a> Evaluator<'a> {
    /// An evaluator for one expression or a batch of them: `batch` lists every expression that
    /// will be evaluated, so shared parts can be kept exactly as long as they are needed.
    pub fn new(frame: &'a Frame, batch: &[Expr]) -> Evaluator<'a> {
        let mut uses: HashMap<String, usize> = HashMap::new();
        fn count(e: &Expr, uses: &mut HashMap<String, usize>) {
            if matches!(e, Expr::Num(_) | Expr::Field(_) | Expr::Group(_)) {
                return;
            }
            let n = uses.entry(e.to_string()).or_default();
            *n += 1;
            // Only the outermost shared node needs counting: its children are not recomputed.
            if *n > 1 {
                return;
            }
            match e {
                Expr::Neg(x) | Expr::Not(x) => count(x, uses),
                Expr::Bin(_, a, b) => {
                    count(a, uses);
                    count(b, uses);
                }
                Expr::Call(_, args) => args.iter().for_each(|a| count(a, uses)),
                _ => {}
            }
        }
        for e in batch {
            count(e, &mut uses);
        }
        uses.retain(|_, n| *n > 1);
        Evaluator {
            frame,
            uses: Mutex::new(uses),
            cache: Mutex::new(HashMap::new()),
            // Shared results kept at once: as many as fit in 64 MiB, at least two. On the
            // 100-alpha benchmark (20 MB matrices) 2 was both faster and lighter than 4 (0.12
            // vs 0.13 CPU-s per strategy, 443 vs 481 MB) and 1 or 0 recompute too much (0.16,
            // 0.17 CPU-s); on Alpha101's 8 MB matrices, 8 take 8 % less time than 2 (7.4 vs
            // 8.0 s on one thread) for 46 MB more.
            budget: ((64 << 20) / (frame.t * frame.n * 8).max(1)).max(2),
        }
    }

    /// Keeps at most `matrices` shared results at once (default: as many as fit in 64 MiB, at
    /// least 2): memory against recomputation.
    pub fn with_budget(mut self, matrices: usize) -> Evaluator<'a> {
        self.budget = matrices;
        self
    }

    /// Evaluates to a matrix (a constant is broadcast).
    pub fn eval(&self, e: &Expr) -> Arc<Mat> {
        match self.value(e) {
            Value::Panel(m) => m,
            Value::Scalar(v) => Arc::new(Mat::filled(self.frame.t, self.frame.n, v)),
        }
    }

    /// Evaluates a strategy's signal.
    pub fn signal(&self, e: &Expr) -> Signal {
        Signal {
            values: self.eval(e),
            ranks: e.is_rank(),
        }
    }

    fn value(&self, e: &Expr) -> Value {
        match e {
            Expr::Num(v) => return Value::Scalar(*v),
            Expr::Field(f) => {
                return match self.frame.fields.get(f) {
                    Some(m) => Value::Panel(m.clone()),
                    None => Value::Scalar(f64::NAN),
                };
            }
            Expr::Group(_) => return Value::Scalar(f64::NAN),
            _ => {}
        }
        // The printed form is the sub-expression's identity in the batch; print it once.
        let key = e.to_string();
        let shared = self
            .uses
            .lock()
            .is_ok_and(|u| u.contains_key(&key))
            .then_some(key);
        if let Some(key) = &shared
            && let Some(m) = self.take_cached(key)
        {
            return Value::Panel(m);
        }
        let v = self.compute(e);
        if let (Some(key), Value::Panel(m)) = (&shared, &v)
            && let Ok(mut c) = self.cache.lock()
        {
            // Another thread may have stored the same value meanwhile; both are identical.
            if c.len() < self.budget {
                c.entry(key.clone()).or_insert_with(|| m.clone());
            }
            drop(c);
            self.release(key);
        }
        v
    }

    fn take_cached(&self, key: &str) -> Option<Arc<Mat>> {
        let m = self.cache.lock().ok()?.get(key).cloned()?;
        self.release(key);
        Some(m)
    }

    /// Counts one use of a shared result and frees it after the last.
    fn release(&self, key: &str) {
        // A result recomputed because the budget kept it out of the cache may be used more
        // often than counted; once the count runs out it is simply no longer shared.
        let done = match self.uses.lock() {
            Ok(mut u) => {
                let left = u.get_mut(key).map(|n| {
                    *n = n.saturating_sub(1);
                    *n
                });
                if left == Some(0) {
                    u.remove(key);
                }
                left == Some(0)
            }
            Err(_) => false,
        };
        if done && let Ok(mut c) = self.cache.lock() {
            c.remove(key);
        }
    }

    fn compute(&self, e: &Expr) -> Value {
        match e {
            Expr::Neg(x) => unary(self.value(x), |v| -v),
            Expr::Not(x) => unary(self.value(x), |v| {
                if v.is_nan() {
                    f64::NAN
                } else {
                    f64::from(u8::from(v == 0.0))
                }
            }),
            Expr::Bin(op, a, b) => binary(*op, self.value(a), self.value(b)),
            Expr::Call(name, args) => self.call(name, args),
            Expr::Num(_) | Expr::Field(_) | Expr::Group(_) => Value::Scalar(f64::NAN),
        }
    }

    fn call(&self, name: &str, args: &[Expr]) -> Value {
        let window = |i: usize| match args.get(i) {
            Some(Expr::Num(d)) => *d as usize,
            _ => 1,
        };
        let number = |i: usize| match args.get(i) {
            Some(Expr::Num(v)) => *v,
            Some(Expr::Neg(x)) => match **x {
                Expr::Num(v) => -v,
                _ => f64::NAN,
            },
            _ => f64::NAN,
        };
        // The optional minimum count follows the declared arguments (default: the window).
        let min = |w: usize| match func(name).map(|f| f.args.len()) {
            Some(k) if args.len() == k + 1 => match args.get(k) {
                Some(Expr::Num(m)) => *m as usize,
                _ => w,
            },
            _ => w,
        };
        let kind = func(name).map(|f| f.kind);
        // Constants stay constants through element-wise functions.
        if kind == Some(Kind::Element) {
            let vals: Vec<Value> = args.iter().map(|a| self.value(a)).collect();
            return elementwise(name, vals);
        }
        let x = self.eval(&args[0]);
        let m = match name {
            "delay" => x.map_cols(|c, o| ops::shift(c, window(1), o)),
            "ts_delta" => {
                let d = window(1);
                x.map_cols(|c, o| {
                    ops::shift(c, d, o);
                    for (o, v) in o.iter_mut().zip(c) {
                        *o = v - *o;
                    }
                })
            }
            "ts_mean" => x.map_cols(|c, o| ops::move_mean_min(c, window(1), min(window(1)), o)),
            "ts_sum" => x.map_cols(|c, o| ops::move_sum_min(c, window(1), min(window(1)), o)),
            "ts_product" => x.map_cols(|c, o| ops::move_product(c, window(1), o)),
            "ts_std" => {
                x.map_cols(|c, o| ops::move_var_min(c, window(1), min(window(1)), 1, true, o))
            }
            "ts_var" => {
                x.map_cols(|c, o| ops::move_var_min(c, window(1), min(window(1)), 1, false, o))
            }
            "ts_min" => x.map_cols(|c, o| {
                ops::move_extreme_min(c, window(1), min(window(1)), Extreme::Min, false, o)
            }),
            "ts_max" => x.map_cols(|c, o| {
                ops::move_extreme_min(c, window(1), min(window(1)), Extreme::Max, false, o)
            }),
            "ts_argmin" | "ts_argmax" => {
                let d = window(1);
                let which = if name == "ts_argmin" {
                    Extreme::Min
                } else {
                    Extreme::Max
                };
                let m = min(d);
                x.map_cols(|c, o| {
                    ops::move_extreme_min(c, d, m, which, true, o);
                    // Bars since the extreme -> position in the window, 0 = oldest.
                    for v in o.iter_mut() {
                        *v = (d - 1) as f64 - *v;
                    }
                })
            }
            "ts_rank" if min(window(1)) < window(1) => {
                let d = window(1);
                x.map_cols(|c, o| ops::move_rank_pct_min(c, d, min(d), o))
            }
            "ts_rank" => {
                let d = window(1);
                x.map_cols(|c, o| {
                    ops::move_rank(c, d, o);
                    for v in o.iter_mut() {
                        *v = ((*v + 1.0) * 0.5 * (d - 1) as f64 + 1.0) / d as f64;
                    }
                })
            }
            "ts_zscore" => {
                let (d, m) = (window(1), min(window(1)));
                x.map_cols(|c, o| {
                    let mut sd = vec![0.0; c.len()];
                    ops::move_mean_min(c, d, m, o);
                    ops::move_var_min(c, d, m, 1, true, &mut sd);
                    for ((o, v), s) in o.iter_mut().zip(c).zip(&sd) {
                        *o = (v - *o) / s;
                    }
                })
            }
            "ts_corr" | "ts_cov" => {
                let y = self.eval(&args[1]);
                let m = pair_moments(&x, &y, window(2), min(window(2)), name == "ts_corr");
                recycle(y);
                m
            }
            "ts_skew" => x.map_cols(|c, o| ops::window_map(c, window(1), o, ops::skew)),
            "ts_kurt" => x.map_cols(|c, o| ops::window_map(c, window(1), o, ops::kurt)),
            "ts_ema" => x.map_cols(|c, o| ops::ema(c, window(1), o)),
            "decay_linear" if min(window(1)) < window(1) => {
                x.map_cols(|c, o| ops::decay_linear_min(c, window(1), min(window(1)), o))
            }
            "decay_linear" => x.map_cols(|c, o| ops::decay_linear(c, window(1), o)),
            "ts_quantile" => {
                let q = number(2);
                x.map_cols(|c, o| ops::window_map(c, window(1), o, |w| ops::quantile(w, q)))
            }
            "ts_slope" => {
                x.map_cols(|c, o| ops::window_map(c, window(1), o, |w| ops::regress(w).0))
            }
            "ts_rsquare" => {
                x.map_cols(|c, o| ops::window_map(c, window(1), o, |w| ops::regress(w).2))
            }
            "ts_resid" => x.map_cols(|c, o| {
                ops::window_map(c, window(1), o, |w| {
                    let (s, i, _) = ops::regress(w);
                    w[w.len() - 1] - (i + s * (w.len() - 1) as f64)
                })
            }),
            "rank" => x.map_rows(ops::pct_rank),
            // Row statistics are summed along columns: no rows gathered or scattered.
            "zscore" => {
                let (m, s) = x.row_mean_std();
                x.map_cells(|i, v| (v - m[i]) / s[i])
            }
            "demean" => {
                let (s, c) = x.row_sums(|_, v| v);
                x.map_cells(|i, v| v - s[i] / f64::from(c[i]))
            }
            "scale" => {
                let (total, _) = x.row_sums(|_, v| v.abs());
                x.map_cells(|i, v| v / total[i])
            }
            "winsorize" => {
                let k = number(1).abs();
                let (m, s) = x.row_mean_std();
                x.map_cells(|i, v| {
                    let (lo, hi) = (m[i] - k * s[i], m[i] + k * s[i]);
                    // f64::clamp panics on NaN bounds; a row without a spread stays NaN.
                    if lo.is_nan() || hi.is_nan() || v.is_nan() {
                        f64::NAN
                    } else {
                        v.max(lo).min(hi)
                    }
                })
            }
            "group_rank" | "group_demean" => {
                let group = match args.get(1) {
                    Some(Expr::Group(g)) => g.clone(),
                    _ => String::new(),
                };
                let ids = self
                    .frame
                    .groups
                    .get(&group)
                    .cloned()
                    .unwrap_or_else(|| vec![0; self.frame.n]);
                let groups = Membership::new(&ids);
                if name == "group_demean" {
                    x.map_rows(|r, o, _| groups.demean(r, o))
                } else {
                    x.map_rows(|r, o, scratch| groups.rank(r, o, scratch))
                }
            }
            _ => Mat::filled(x.t, x.n, f64::NAN),
        };
        recycle(x);
        Value::Panel(Arc::new(m))
    }
}

/// Instruments by group, found once per operator rather than once per bar.
struct Membership {
    /// Each instrument's group as a dense index (`usize::MAX`: none).
    of: Vec<usize>,
    /// The members of each group, in instrument order.
    members: Vec<Vec<usize>>,
}

impl Membership {
    fn new(ids: &[u32]) -> Membership {
        let mut labels: Vec<u32> = ids.to_vec();
        labels.sort_unstable();
        labels.dedup();
        let mut members = vec![Vec::new(); labels.len()];
        let of = ids
            .iter()
            .enumerate()
            .map(|(j, id)| {
                let g = labels.binary_search(id).unwrap_or(usize::MAX);
                if let Some(m) = members.get_mut(g) {
                    m.push(j);
                }
                g
            })
            .collect();
        Membership { of, members }
    }

    /// `r` minus its group's mean (of the numbers; summed in instrument order).
    fn demean(&self, r: &[f64], o: &mut [f64]) {
        let mut sum = vec![0.0; self.members.len()];
        let mut count = vec![0usize; self.members.len()];
        for (v, &g) in r.iter().zip(&self.of) {
            if !v.is_nan()
                && let (Some(s), Some(c)) = (sum.get_mut(g), count.get_mut(g))
            {
                *s += v;
                *c += 1;
            }
        }
        for ((o, v), &g) in o.iter_mut().zip(r).zip(&self.of) {
            *o = match (sum.get(g), count.get(g)) {
                (Some(s), Some(&c)) => v - s / c as f64,
                _ => f64::NAN,
            };
        }
    }

    /// The percentile rank of `r` within its group.
    fn rank(&self, r: &[f64], o: &mut [f64], scratch: &mut Scratch) {
        let (mut sub, mut out) = (Vec::new(), Vec::new());
        for m in &self.members {
            sub.clear();
            sub.extend(m.iter().map(|&j| r[j]));
            out.clear();
            out.resize(sub.len(), 0.0);
            ops::pct_rank(&sub, &mut out, scratch);
            for (k, &j) in m.iter().enumerate() {
                o[j] = out[k];
            }
        }
        for (o, &g) in o.iter_mut().zip(&self.of) {
            if g == usize::MAX {
                *o = f64::NAN;
            }
        }
    }
}

/// Rolling covariance or correlation from moving means of x, y, xy (and x², y²), with a window
/// NaN wherever either series is NaN, the reference's formulation.
fn pair_moments(x: &Mat, y: &Mat, d: usize, min: usize, corr: bool) -> Mat {
    let mut out = Mat::zeros(x.t, x.n);
    let t = x.t;
    if t == 0 {
        return out;
    }
    out.data
        .par_chunks_mut(t)
        .zip(x.data.par_chunks(t).zip(y.data.par_chunks(t)))
        .for_each(|(o, (xc, yc))| ops::move_cov_corr_min(xc, yc, d, min, corr, o));
    out
}

fn unary(v: Value, f: impl Fn(f64) -> f64 + Sync) -> Value {
    match v {
        Value::Scalar(s) => Value::Scalar(f(s)),
        Value::Panel(m) => Value::Panel(Arc::new(match Arc::try_unwrap(m) {
            // A temporary no one else holds is overwritten instead of copied.
            Ok(mut m) => {
                m.data.par_iter_mut().for_each(|x| *x = f(*x));
                m
            }
            Err(m) => {
                let mut out = Mat::scratch(m.t, m.n);
                out.data
                    .par_iter_mut()
                    .zip(m.data.par_iter())
                    .for_each(|(o, x)| *o = f(*x));
                out
            }
        })),
    }
}

/// `f` over two matrices of one shape, written over whichever is a temporary no one else holds
/// (the first if both), into a new matrix otherwise.
fn zip_panels(p: Arc<Mat>, q: Arc<Mat>, f: impl Fn(f64, f64) -> f64 + Sync) -> Mat {
    match Arc::try_unwrap(p) {
        Ok(mut p) => {
            p.data
                .par_iter_mut()
                .zip(q.data.par_iter())
                .for_each(|(x, y)| *x = f(*x, *y));
            recycle(q);
            p
        }
        Err(p) => match Arc::try_unwrap(q) {
            Ok(mut q) => {
                q.data
                    .par_iter_mut()
                    .zip(p.data.par_iter())
                    .for_each(|(y, x)| *y = f(*x, *y));
                recycle(p);
                q
            }
            Err(q) => {
                let mut out = Mat::scratch(p.t, p.n);
                out.data
                    .par_iter_mut()
                    .zip(p.data.par_iter().zip(q.data.par_iter()))
                    .for_each(|(o, (x, y))| *o = f(*x, *y));
                out
            }
        },
    }
}

/// `x ^ p` with the exact shortcuts of the reference for common exponents.
fn pow(x: f64, p: f64) -> f64 {
    match p {
        2.0 => x * x,
        0.5 => x.sqrt(),
        1.0 => x,
        -1.0 => 1.0 / x,
        0.0 => 1.0,
        _ => x.powf(p),
    }
}

fn apply_bin(op: BinOp, a: f64, b: f64) -> f64 {
    let cmp = |c: bool| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            f64::from(u8::from(c))
        }
    };
    let truth = |v: f64| v != 0.0;
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Pow => pow(a, b),
        BinOp::Lt => cmp(a < b),
        BinOp::Le => cmp(a <= b),
        BinOp::Gt => cmp(a > b),
        BinOp::Ge => cmp(a >= b),
        BinOp::Eq => cmp(a == b),
        BinOp::Ne => cmp(a != b),
        BinOp::And => cmp(truth(a) && truth(b)),
        BinOp::Or => cmp(truth(a) || truth(b)),
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Value {
    // One loop per operator, so the operator is not matched again for every cell.
    match op {
        BinOp::Add => zip_values(a, b, |x, y| x + y),
        BinOp::Sub => zip_values(a, b, |x, y| x - y),
        BinOp::Mul => zip_values(a, b, |x, y| x * y),
        BinOp::Div => zip_values(a, b, |x, y| x / y),
        _ => zip_values(a, b, move |x, y| apply_bin(op, x, y)),
    }
}

fn zip_values(a: Value, b: Value, f: impl Fn(f64, f64) -> f64 + Sync + Copy) -> Value {
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => Value::Scalar(f(x, y)),
        (Value::Panel(m), Value::Scalar(y)) => unary(Value::Panel(m), move |x| f(x, y)),
        (Value::Scalar(x), Value::Panel(m)) => unary(Value::Panel(m), move |y| f(x, y)),
        (Value::Panel(p), Value::Panel(q)) => Value::Panel(Arc::new(zip_panels(p, q, f))),
    }
}

fn elementwise(name: &str, vals: Vec<Value>) -> Value {
    // Arguments are taken by value, so a temporary can be overwritten in place.
    let arity = vals.len();
    let mut vals = vals.into_iter();
    let mut arg = move || vals.next().unwrap_or(Value::Scalar(f64::NAN));
    // Each function gets its own loop (a function pointer would be called per cell, and the
    // loop would not vectorise).
    match (name, arity) {
        ("abs", 1) => unary(arg(), f64::abs),
        // Without a branch per cell: signs are as unpredictable as the data.
        ("sign", 1) => unary(arg(), |x| {
            let s = f64::from(u8::from(x > 0.0)) - f64::from(u8::from(x < 0.0));
            if x.is_nan() { f64::NAN } else { s }
        }),
        ("log", 1) => unary(arg(), f64::ln),
        ("sqrt", 1) => unary(arg(), f64::sqrt),
        ("exp", 1) => unary(arg(), f64::exp),
        ("min", 2) => zip_values(arg(), arg(), |x, y| {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.min(y)
            }
        }),
        ("max", 2) => zip_values(arg(), arg(), |x, y| {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.max(y)
            }
        }),
        ("clip", 3) => {
            let (x, lo, hi) = (arg(), arg(), arg());
            let lower = zip_values(x, lo, |x, l| {
                if x.is_nan() || l.is_nan() {
                    f64::NAN
                } else {
                    x.max(l)
                }
            });
            zip_values(lower, hi, |x, h| {
                if x.is_nan() || h.is_nan() {
                    f64::NAN
                } else {
                    x.min(h)
                }
            })
        }
        ("where", 3) => zip3(&arg(), &arg(), &arg(), |c, a, b| {
            if c.is_nan() {
                f64::NAN
            } else if c != 0.0 {
                a
            } else {
                b
            }
        }),
        _ => Value::Scalar(f64::NAN),
    }
}

fn zip3(a: &Value, b: &Value, c: &Value, f: impl Fn(f64, f64, f64) -> f64 + Sync) -> Value {
    let shape = [a, b, c].into_iter().find_map(|v| match v {
        Value::Panel(m) => Some((m.t, m.n)),
        Value::Scalar(_) => None,
    });
    let at = |v: &Value, k: usize| match v {
        Value::Scalar(x) => *x,
        Value::Panel(m) => m.data[k],
    };
    match shape {
        None => Value::Scalar(f(at(a, 0), at(b, 0), at(c, 0))),
        Some((t, n)) => {
            let data = (0..t * n)
                .into_par_iter()
                .map(|k| f(at(a, k), at(b, k), at(c, k)))
                .collect();
            Value::Panel(Arc::new(Mat { t, n, data }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mat;

    /// Gathering bars into rows and scattering results back go eight instruments at a time:
    /// shapes that are not multiples of eight, nor of a block of bars, keep every cell.
    #[test]
    fn rows_and_row_maps_keep_every_cell_of_awkward_shapes() {
        for (t, n) in [(1, 1), (5, 7), (33, 8), (70, 19), (64, 16)] {
            let m = Mat {
                t,
                n,
                data: (0..t * n).map(|k| k as f64).collect(),
            };
            let mut rows = Vec::new();
            m.rows_into(3.min(t - 1)..t, &mut rows);
            for (r, row) in rows.chunks(n).enumerate() {
                for (j, v) in row.iter().enumerate() {
                    assert_eq!(
                        *v,
                        m.at(3.min(t - 1) + r, j),
                        "{t}x{n} bar {r} instrument {j}"
                    );
                }
            }
            // Each row's values, reversed across instruments and plus its bar's first value.
            let out = m.map_rows(|row, o, _| {
                for (j, x) in o.iter_mut().enumerate() {
                    *x = row[row.len() - 1 - j] + row[0];
                }
            });
            for i in 0..t {
                for j in 0..n {
                    assert_eq!(
                        out.at(i, j),
                        m.at(i, n - 1 - j) + m.at(i, 0),
                        "{t}x{n} ({i}, {j})"
                    );
                }
            }
        }
    }
}
