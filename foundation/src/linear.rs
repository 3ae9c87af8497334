//! The simple baselines of return targets: a linear model on four classic features, two of
//! those features alone, the best of them on training, and the best of a set of outside
//! factors on training ([`FactorSource`]: the binary supplies LIM's strategy-language seeds),
//! scored like the model's arms on the same test samples (an outside factor on those where it
//! has a value).
//!
//! Features of a sample (its window's last bar `end`, nothing after it): momentum, the log
//! return over bars `end-59 ..= end-5` (the last week skipped); short-term reversal, the log
//! return over `end-4 ..= end`; volatility, the log of the last 20 bars' root mean square
//! return; volume trend, the log volume change over the last 5 bars. Each is standardised
//! across the instruments of its date (so the model ranks instruments, as the targets do), and
//! the forward return is demeaned across them; least squares on the training samples gives
//! the weights. Nothing about the test period enters the fit.

use std::collections::{BTreeMap, HashMap};

use lim_market::{AsOf, Timestamp};

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

/// Causal scores of every instrument at every bar, from outside this crate: candidates for the
/// baseline "the best single factor chosen on training" (the binary evaluates strategy-language
/// expressions; this crate knows nothing of the language).
pub trait FactorSource: Sync + std::fmt::Debug {
    /// Every candidate over `dataset` (only `symbols` when given), from bars up to `until`.
    ///
    /// # Errors
    /// The data could not be loaded or the factors evaluated, in words.
    fn factors(
        &self,
        dataset: &str,
        symbols: Option<&[String]>,
        until: AsOf,
    ) -> Result<Vec<FactorPanel>, String>;
}

/// One factor's values, `times × symbols`, column-major (NaN where it has none).
#[derive(Debug, Clone, PartialEq)]
pub struct FactorPanel {
    /// The factor (e.g. its expression).
    pub name: String,
    /// Bar times, ascending.
    pub times: Vec<Timestamp>,
    /// Symbols.
    pub symbols: Vec<String>,
    /// Values, symbol by symbol.
    pub values: Vec<f64>,
}

impl FactorPanel {
    /// The factor at each sample of `set` (its window's last bar), NaN where it has none.
    fn at_samples(&self, set: &SampleSet) -> Vec<f64> {
        let column: HashMap<&str, usize> = self
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let nt = self.times.len();
        set.samples
            .iter()
            .map(|s| {
                let sym = set.universe.series[s.series].symbol.as_str();
                let time = set.universe.times[s.row];
                match (column.get(sym), self.times.binary_search(&time)) {
                    (Some(&j), Ok(t)) => self.values[j * nt + t],
                    _ => f64::NAN,
                }
            })
            .collect()
    }
}

/// The factor, either way round, with the best mean rank IC on `train` (of `chosen_on`,
/// computed from data no later than the training samples' universe, so that nothing of the
/// test period shapes the choice, not even through the market layer's whole-history checks
/// such as a futures roll rule), and its scores on `test` (of `scored_on`, the same factors
/// computed up to the test's end, in the same order): `(name, test scores)`, the name saying
/// when it was reversed. `None` without a factor that scores on training dates, or without
/// test dates where it has values.
pub fn best_factor(
    train: &SampleSet,
    test: &SampleSet,
    chosen_on: &[FactorPanel],
    scored_on: &[FactorPanel],
) -> Option<(String, IcReport)> {
    #[allow(clippy::cast_possible_truncation)]
    let scores =
        |v: &[f64], sign: f64| -> Vec<f32> { v.iter().map(|x| (sign * x) as f32).collect() };
    let mut best: Option<(usize, f64, f64)> = None;
    for (k, p) in chosen_on.iter().enumerate() {
        let v = p.at_samples(train);
        for sign in [1.0, -1.0] {
            let r = ic_report(train, &scores(&v, sign));
            if r.dates > 0 && r.rank_ic.is_finite() && best.is_none_or(|b| r.rank_ic > b.2) {
                best = Some((k, sign, r.rank_ic));
            }
        }
    }
    let (k, sign, _) = best?;
    let p = scored_on.iter().find(|p| p.name == chosen_on[k].name)?;
    let name = if sign > 0.0 {
        p.name.clone()
    } else {
        format!("{}, reversed", p.name)
    };
    let report = ic_report(test, &scores(&p.at_samples(test), sign));
    (report.dates > 0).then_some((name, report))
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

    /// Four instruments over 40 dates; the forward return is the instrument's index, reversed
    /// in the second half (the "test"). One factor ranks by the index, one is noise, one has
    /// no value on training: the first is chosen (either way round) on training, and its test
    /// score is what it earns there.
    #[test]
    fn the_best_factor_is_chosen_on_training_and_scored_on_the_test() {
        use crate::features::{InstrumentSeries, Universe};
        use crate::finetune::Sample;
        let (n, t) = (4usize, 40usize);
        let times: Vec<Timestamp> = (0..t as i64).map(|d| Timestamp(d * 86_400)).collect();
        let series = (0..n)
            .map(|j| InstrumentSeries {
                symbol: format!("S{j}"),
                dataset: "d".into(),
                ids: [1, 0, 1],
                rows: (0..t).collect(),
                feats: vec![[0.0; crate::features::FEATURES]; t],
                logret: vec![0.0; t],
            })
            .collect();
        let universe = Universe {
            dataset: "d".into(),
            frequency: lim_market::Frequency::Daily,
            times: times.clone(),
            series,
        };
        let set = |rows: std::ops::Range<usize>, sign: f64| SampleSet {
            universe: universe.clone(),
            samples: rows
                .flat_map(|r| {
                    (0..n).map(move |j| Sample {
                        series: j,
                        end: r,
                        row: r,
                        target: 0.0,
                        ret: sign * j as f64,
                        scale: 0.0,
                    })
                })
                .collect(),
        };
        let (train, test) = (set(0..20, -1.0), set(20..40, 1.0));
        let panel = |name: &str, f: &dyn Fn(usize, usize) -> f64| FactorPanel {
            name: name.into(),
            times: times.clone(),
            // Columns in another order than the universe's series: looked up by symbol.
            symbols: (0..n).rev().map(|j| format!("S{j}")).collect(),
            values: (0..n)
                .rev()
                .flat_map(|j| (0..t).map(move |r| (j, r)))
                .map(|(j, r)| f(j, r))
                .collect(),
        };
        let panels = [
            panel("noise", &|j, r| ((j * 7 + r * 3) % 5) as f64),
            panel("index", &|j, _| j as f64),
            panel("late", &|j, r| if r < 20 { f64::NAN } else { -(j as f64) }),
        ];
        let (name, report) = best_factor(&train, &test, &panels, &panels).unwrap();
        // A factor with no value on any training date is never chosen; nothing to choose from
        // gives no baseline.
        let only_late = [panel("late", &|j, r| {
            if r < 20 { f64::NAN } else { j as f64 }
        })];
        assert!(best_factor(&train, &test, &only_late, &only_late).is_none());
        // On training the return falls with the index: the index factor, reversed.
        assert_eq!(name, "index, reversed");
        assert!((report.rank_ic + 1.0).abs() < 1e-12, "{report:?}");
        assert_eq!(report.dates, 20);
    }
}
