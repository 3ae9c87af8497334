//! A backtesting session: one panel set, one split, any number of strategies. The command
//! line and the agents' backtest tool both run strategies through it.

use std::sync::Arc;

use lim_market::{PanelSet, Part, SplitSpec, Splits, Timestamp};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::BacktestError;
use crate::eval::{Evaluator, Frame, Mat};
use crate::expr::Expr;
use crate::metrics::{self, Metrics, Year};
use crate::spec::StrategySpec;
use crate::stats::{self, Deflated};
use crate::topk::{Book, Target};
use crate::{frame, portfolio};

/// The bars of one part of the split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Which part.
    pub part: Part,
    /// First bar.
    pub first: Timestamp,
    /// Last bar.
    pub last: Timestamp,
    /// Bars.
    pub bars: usize,
}

/// A strategy's Sharpe ratio on one part against a baseline's on the same bars
/// ([`Session::versus_baseline`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharpeTest {
    /// The strategy.
    pub strategy: String,
    /// The part.
    pub part: Part,
    /// Its annualised Sharpe ratio less the baseline's.
    #[serde(with = "crate::nonfinite")]
    pub sharpe_difference: f64,
    /// The difference of their per-bar Sharpe ratios over its standard error: beyond ±1.96
    /// unlikely to be chance.
    #[serde(with = "crate::nonfinite")]
    pub z: f64,
}

/// One strategy's result. It reads back what it writes, except the book (see
/// [`Book::to_bytes`] for carrying that between processes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyResult {
    /// A name for the strategy.
    pub name: String,
    /// The spec that ran.
    pub spec: StrategySpec,
    /// Why it could not run, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Metrics per part asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<(Part, Metrics)>,
    /// With detail: calendar years of the parts shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub years: Vec<Year>,
    /// With detail: four walk-forward folds of the training part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folds: Vec<Metrics>,
    /// With folds (see [`Session::run_with_folds`]): Sharpe ratio on each of the selection
    /// folds of training and validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selection_folds: Vec<metrics::Fold>,
    /// With folds: its positions depend on the instruments' price levels (see
    /// [`Session::level_dependent`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub level_dependent: bool,
    /// With folds, for a book of equal weights on the names its signal ranks first (top-k,
    /// quantile long-short): how many times a year its holdings changed over the bars it is
    /// judged on (see [`Session::holding_changes_per_year`]); below
    /// [`MIN_HOLDING_CHANGES_PER_YEAR`] it is a fixed allocation, not a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_changes_per_year: Option<f64>,
    /// Nodes in the signal's expression tree, and its nesting depth (0 when it did not parse).
    pub nodes: usize,
    /// Nesting depth of the signal's expression.
    pub depth: usize,
    /// With detail: mean rank IC against the return over 1, 5, 10 and 20 bars.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::nonfinite::pairs"
    )]
    pub ic_decay: Vec<(usize, f64)>,
    /// Infinite signal values, treated as missing.
    pub infinite_signal_cells: usize,
    /// The book, for statistics over several strategies.
    #[serde(skip)]
    pub book: Option<Book>,
}

/// Multiple-testing statistics over every strategy of a run, on the validation part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultipleTesting {
    /// Strategies that ran.
    pub trials: usize,
    /// The best by validation Sharpe.
    pub best: String,
    /// Its annualised validation Sharpe.
    #[serde(with = "crate::nonfinite")]
    pub best_validation_sharpe: f64,
    /// Its deflated Sharpe ratio given all trials.
    pub deflated: Deflated,
    /// Probability of backtest overfitting by CSCV with 16 blocks, when computable.
    pub pbo: Option<f64>,
    /// CSCV splits evaluated.
    pub pbo_splits: usize,
    /// Bars a year of the session, which annualised `best_validation_sharpe`. Written only when
    /// it is not 252 (daily bars), so that runs recorded before it was kept, all of them read as
    /// daily, replay as they were.
    #[serde(default = "trading_days", skip_serializing_if = "is_trading_days")]
    pub periods_per_year: f64,
}

fn trading_days() -> f64 {
    252.0
}

fn is_trading_days(v: &f64) -> bool {
    *v == 252.0
}

impl MultipleTesting {
    /// The Sharpe ratio the best of as many tries at zero true skill would show
    /// (`deflated.expected_max`), annualised as `best_validation_sharpe` is: the figure to
    /// set beside it.
    pub fn luck_sharpe(&self) -> f64 {
        self.deflated.expected_max * self.periods_per_year.sqrt()
    }
}

/// The share of training and validation bars on which a book may differ after its prices were
/// rescaled and still count as free of price levels (see [`Session::level_dependent`]).
pub const LEVEL_TOLERANCE: f64 = 0.01;

/// The price-level check's factor for instrument `j`: a power of four, so that multiplying by
/// it (and taking square roots) is exact, different for neighbouring instruments.
fn level_scale(j: usize) -> f64 {
    4f64.powi([-3, 2, -1, 3, 1, -2, 4][j % 7])
}

/// A ranked book (top-k, quantile long-short) whose holdings change fewer times a year than
/// this over the bars it is judged on is a fixed allocation: what it earned is what those few
/// names earned, and each selection fold (some three years of daily bars) holds at most a
/// decision or two of its signal. Ranking index levels (`rank(high)`: always the two indices
/// quoted highest) is one; so is ranking anything that barely moves across instruments.
pub const MIN_HOLDING_CHANGES_PER_YEAR: f64 = 1.0;

/// Blocks that training and validation are cut into for a robust fitness: five, so that each
/// is long enough (about a sixth of the bars) for its Sharpe ratio to mean something.
pub const SELECTION_FOLDS: usize = 5;

/// A top-k book has a choice on a bar when it can leave out at least as many candidates as it
/// holds: `CHOICE_FACTOR × k` of them (see [`Session::selection_folds_of`]).
pub const CHOICE_FACTOR: usize = 2;

/// A panel set ready for backtests.
#[derive(Debug, Clone)]
pub struct Session {
    frame: Frame,
    times: Vec<Timestamp>,
    symbols: Vec<String>,
    sources: Vec<String>,
    splits: Splits,
    target: Target,
    periods: f64,
    frequency: lim_market::Frequency,
    instruments: usize,
    /// Per instrument: whether its prices may be adjusted by later events (shares and funds
    /// by splits and dividends, futures by rolls; an unknown kind is assumed to be).
    adjustable: Vec<bool>,
    /// Baselines' net returns over training and validation, by spec, as
    /// [`Session::closest_baselines`] ran them: every backtest call of a research run compares
    /// with the same few. Shared with the sessions [`Session::with_field`] makes, whose added
    /// fields no baseline reads.
    baseline_nets: BaselineNets,
}

/// See `Session::baseline_nets`.
type BaselineNets = std::sync::Arc<std::sync::Mutex<Vec<(StrategySpec, std::sync::Arc<Vec<f64>>)>>>;

impl Session {
    /// Takes the panels of `set` (which keeps its times and instruments) and splits its bars.
    ///
    /// # Errors
    /// The split leaves a part empty, or the set has no close prices.
    pub fn new(set: &mut PanelSet, split: SplitSpec) -> Result<Session, BacktestError> {
        let splits =
            Splits::new(&set.times, split).map_err(|e| BacktestError::Input(e.to_string()))?;
        let periods = set.frequency.periods_per_year_of(&set.times);
        let frame = frame::take_panels(set);
        let close = frame
            .fields
            .get("close")
            .ok_or_else(|| BacktestError::Input("the panels have no close prices".into()))?;
        let target = Target::new(close);
        Ok(Session {
            times: set.times.clone(),
            symbols: set.instruments.iter().map(|i| i.symbol.clone()).collect(),
            sources: set.sources.clone(),
            instruments: set.instruments.len(),
            adjustable: set
                .instruments
                .iter()
                .map(|i| {
                    use lim_market::AssetClass as A;
                    matches!(i.asset_class, A::Equity | A::Futures | A::Unknown)
                })
                .collect(),
            frame,
            splits,
            target,
            periods,
            frequency: set.frequency,
            baseline_nets: BaselineNets::default(),
        })
    }

    /// The bar times (rows of every field).
    pub fn times(&self) -> &[Timestamp] {
        &self.times
    }

    /// The instruments' symbols (columns of every field).
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// The dataset each instrument came from.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Names of the fields strategies may use.
    pub fn field_names(&self) -> Vec<String> {
        self.frame
            .field_names()
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// This session with one more field (e.g. a model's predictions), `values` column-major
    /// `times × symbols`, NaN where there is no value.
    ///
    /// # Errors
    /// The shape does not match, or the name is taken.
    pub fn with_field(&self, name: &str, values: Vec<f64>) -> Result<Session, BacktestError> {
        let (t, n) = (self.frame.t, self.frame.n);
        if values.len() != t * n {
            return Err(BacktestError::Input(format!(
                "field '{name}' has {} values; the session needs {t} bars × {n} instruments",
                values.len()
            )));
        }
        if self.frame.fields.contains_key(name) {
            return Err(BacktestError::Input(format!(
                "a field named '{name}' exists already; choose another name"
            )));
        }
        let mut s = self.clone();
        s.frame.fields.insert(
            name.to_string(),
            std::sync::Arc::new(Mat { t, n, data: values }),
        );
        Ok(s)
    }

    /// Instruments in the session.
    pub fn instruments(&self) -> usize {
        self.instruments
    }

    /// The bar frequency.
    pub fn frequency(&self) -> lim_market::Frequency {
        self.frequency
    }

    /// Bars a year, for annualising.
    pub fn periods(&self) -> f64 {
        self.periods
    }

    /// Bars in a trading day: 1 for daily bars, for intraday bars the data's own (see
    /// [`lim_market::Frequency::periods_per_year_of`]); what turns a baseline's days into bars.
    pub fn bars_per_day(&self) -> usize {
        (self.periods / 252.0).round().max(1.0) as usize
    }

    /// The split.
    pub fn splits(&self) -> &Splits {
        &self.splits
    }

    /// Bars and dates of each part.
    pub fn split_info(&self, parts: &[Part]) -> Vec<SplitInfo> {
        parts
            .iter()
            .map(|&p| {
                let r = self.splits.range(p);
                SplitInfo {
                    part: p,
                    first: self.times[r.start],
                    last: self.times[r.end - 1],
                    bars: r.len(),
                }
            })
            .collect()
    }

    /// The selection folds: training and validation in [`SELECTION_FOLDS`] blocks, the split's
    /// embargo between blocks (see [`crate::folds::blocks`]). The sealed test is never in one.
    pub fn selection_folds(&self) -> Vec<Vec<std::ops::Range<usize>>> {
        crate::folds::blocks(
            &[self.splits.train.clone(), self.splits.valid.clone()],
            SELECTION_FOLDS,
            self.splits.embargo,
        )
    }

    /// The first bar of training and validation on which a book is judged: the start of
    /// training, except for a top-k book, judged only from the first bar on which at least
    /// [`CHOICE_FACTOR`] × k instruments of its universe trade ([`Book::tradable`]). Before that
    /// (a universe whose instruments started trading at different times: equity indices from
    /// 1971 with one name, say), a book of k names holds all or nearly all of what trades
    /// whatever its signal says, so those bars say nothing about the signal: every top-k
    /// strategy of the run earns the same there. When no bar of training and validation offers
    /// such a choice, the start of training. What trades does not depend on the signal, so a
    /// signal's own warm-up (a 250-bar window) does not move it.
    pub fn judged_from(&self, spec: &StrategySpec, book: &Book) -> usize {
        let start = self.splits.train.start;
        let crate::spec::Portfolio::TopK { k } = spec.portfolio else {
            return start;
        };
        let need = u32::try_from(k.saturating_mul(CHOICE_FACTOR)).unwrap_or(u32::MAX);
        [self.splits.train.clone(), self.splits.valid.clone()]
            .into_iter()
            .flatten()
            .find(|&i| book.tradable.get(i).is_some_and(|c| *c >= need))
            .unwrap_or(start)
    }

    /// The selection folds of one strategy's book: [`Session::selection_folds`], cut over the
    /// bars from [`Session::judged_from`] on when that is later than the start of training.
    pub fn selection_folds_of(
        &self,
        spec: &StrategySpec,
        book: &Book,
    ) -> Vec<Vec<std::ops::Range<usize>>> {
        let from = self.judged_from(spec, book);
        if from <= self.splits.train.start {
            return self.selection_folds();
        }
        let parts: Vec<_> = [self.splits.train.clone(), self.splits.valid.clone()]
            .into_iter()
            .map(|p| p.start.max(from)..p.end)
            .filter(|p| !p.is_empty())
            .collect();
        crate::folds::blocks(&parts, SELECTION_FOLDS, self.splits.embargo)
    }

    /// [`Session::run`], each result with its Sharpe ratio on every selection fold (its own:
    /// see [`Session::selection_folds_of`]).
    pub fn run_with_folds(
        &self,
        specs: &[(String, StrategySpec)],
        parts: &[Part],
    ) -> Vec<StrategyResult> {
        let mut results = self.run(specs, parts, false);
        for r in &mut results {
            if let Some(book) = &r.book {
                let folds = self.selection_folds_of(&r.spec, book);
                r.selection_folds = metrics::on_folds(book, &folds, self.periods);
            }
        }
        self.mark_checks(&mut results);
        results
    }

    /// For a book of equal weights on the names its signal ranks first (top-k, quantile
    /// long-short), the times a year its holdings changed (bars on which it traded while it
    /// held something, per year of its active bars) from [`Session::judged_from`] to the end
    /// of validation; `None` for other books (a sign or proportional book's weights move with
    /// every value) and for one that never held anything there.
    pub fn holding_changes_per_year(&self, spec: &StrategySpec, book: &Book) -> Option<f64> {
        use crate::spec::Portfolio;
        if !matches!(
            spec.portfolio,
            Portfolio::TopK { .. } | Portfolio::QuantileLongShort { .. }
        ) {
            return None;
        }
        let bars = self.judged_from(spec, book)..self.splits.valid.end;
        let (turnover, exposure) = (book.turnover.get(bars.clone())?, book.exposure.get(bars)?);
        let active = turnover.iter().filter(|v| v.is_finite()).count();
        // A trade on a bar after one that held something: taking the first positions is not
        // a change of mind.
        let changes = turnover
            .iter()
            .skip(1)
            .zip(exposure)
            .filter(|(t, held)| **t > 1e-12 && **held > 0.0)
            .count();
        (active > 0).then(|| changes as f64 * self.periods / active as f64)
    }

    /// Sets every result's `level_dependent` (see [`Session::level_dependent`]) and
    /// `holding_changes_per_year` (see [`Session::holding_changes_per_year`]): the checks a
    /// report and a research run's fitness read, for results run here or on a cluster.
    pub fn mark_checks(&self, results: &mut [StrategyResult]) {
        self.mark_level_dependent(results);
        for r in results.iter_mut() {
            r.holding_changes_per_year = r
                .book
                .as_ref()
                .and_then(|b| self.holding_changes_per_year(&r.spec, b));
        }
    }

    /// Sets every result's `level_dependent` by [`Session::level_dependent`].
    fn mark_level_dependent(&self, results: &mut [StrategyResult]) {
        let level = self.level_dependent(results);
        for (r, l) in results.iter_mut().zip(level) {
            r.level_dependent = l;
        }
    }

    /// For each result, whether its book's positions depend on the price levels of instruments
    /// whose prices may be adjusted (shares, funds, futures): the signal is evaluated again
    /// with each such instrument's open, high, low, close and vwap multiplied by its own power
    /// of four, and the book built on it (its universe's dollar volumes from the rescaled
    /// closes, so a `min_dollar_volume` or `top_liquid` filter is checked too: an adjusted
    /// close times the traded volume is not what traded) must give the
    /// same net returns and turnover, to 1e-9, on all but [`LEVEL_TOLERANCE`] of the bars of
    /// training and validation. Multiplying by a power of four is exact, and so are sums,
    /// products, ratios and square roots of the results; logarithms and powers round, which
    /// can flip a near-tie of a rank on a rare bar, hence the tolerance. Back-adjusted prices (splits and dividends, LIM's own futures roll adjustment)
    /// set a past price level from later events, so a book that reads the level (`rank(-low)`
    /// buys the stocks that will split most) looks ahead. Indices, crypto and currencies have
    /// no such adjustment: their levels are as of their bars, and they are not checked; nor is
    /// a strategy whose signal reads no price field and whose universe has no liquidity
    /// filter, or one that did not run.
    pub fn level_dependent(&self, results: &[StrategyResult]) -> Vec<bool> {
        const PRICES: [&str; 5] = ["open", "high", "low", "close", "vwap"];
        let parsed: Vec<Option<Expr>> = results
            .iter()
            .map(|r| {
                r.book.as_ref()?;
                let e = self.parse(&r.spec.signal).ok()?;
                let u = &r.spec.universe;
                let mut reads = u.min_dollar_volume.is_some() || u.top_liquid.is_some();
                e.visit(&mut |x| {
                    if let Expr::Field(f) = x {
                        reads |= PRICES.contains(&f.as_str());
                    }
                });
                reads.then_some(e)
            })
            .collect();
        if parsed.iter().all(Option::is_none) || !self.adjustable.contains(&true) {
            return vec![false; results.len()];
        }
        let mut scaled = self.frame.clone();
        for name in PRICES {
            if let Some(m) = self.frame.fields.get(name) {
                let mut data = m.data.clone();
                for (j, col) in data.chunks_mut(m.t.max(1)).enumerate() {
                    if self.adjustable.get(j).copied().unwrap_or(true) {
                        let s = level_scale(j);
                        col.iter_mut().for_each(|v| *v *= s);
                    }
                }
                scaled.fields.insert(
                    name.to_string(),
                    Arc::new(Mat {
                        t: m.t,
                        n: m.n,
                        data,
                    }),
                );
            }
        }
        let good: Vec<Expr> = parsed.iter().flatten().cloned().collect();
        let eval = Evaluator::new(&scaled, &good);
        let bars = self.splits.train.start..self.splits.valid.end;
        parsed
            .par_iter()
            .zip(results)
            .map(|(e, r)| {
                let (Some(e), Some(book)) = (e, &r.book) else {
                    return false;
                };
                let signal = eval.signal(e);
                let other = portfolio::run(&r.spec, &signal, &scaled, &self.target, self.periods);
                let apart = |x: &f64, y: &f64| x.is_nan() != y.is_nan() || (x - y).abs() > 1e-9;
                // A book of another length (from another process's data) is not compared.
                let (Some(net), Some(net2), Some(turn), Some(turn2)) = (
                    book.net.get(bars.clone()),
                    other.net.get(bars.clone()),
                    book.turnover.get(bars.clone()),
                    other.turnover.get(bars.clone()),
                ) else {
                    return false;
                };
                let differing = net
                    .iter()
                    .zip(net2)
                    .zip(turn.iter().zip(turn2))
                    .filter(|((a, b), (c, d))| apart(a, b) || apart(c, d))
                    .count();
                differing as f64 > LEVEL_TOLERANCE * bars.len() as f64
            })
            .collect()
    }

    /// Refuses an expression that groups by a grouping from the data which has no label for
    /// some instrument of the session, naming them and the fix.
    fn check_groups(&self, e: &Expr) -> Result<(), String> {
        let mut used = Vec::new();
        e.visit(&mut |x| {
            if let Expr::Group(g) = x
                && !used.iter().any(|u| u == g)
            {
                used.push(g.clone());
            }
        });
        for g in used {
            let Some(ids) = self.frame.groups.get(&g) else {
                continue;
            };
            let missing: Vec<&str> = ids
                .iter()
                .zip(&self.symbols)
                .filter(|(id, _)| **id == crate::frame::MISSING_GROUP)
                .map(|(_, s)| s.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "grouping '{g}' (groups.csv) has no label for {} of the {} instruments: {}{}; add rows for them, or leave them out with --symbols",
                    missing.len(),
                    ids.len(),
                    missing[..missing.len().min(5)].join(", "),
                    if missing.len() > 5 { ", …" } else { "" }
                ));
            }
        }
        Ok(())
    }

    /// Runs strategies as one batch (shared sub-expressions computed once), measuring `parts`.
    /// `detail` adds years, walk-forward folds and IC decay. A strategy that cannot run gets an
    /// error; the others still run.
    pub fn run(
        &self,
        specs: &[(String, StrategySpec)],
        parts: &[Part],
        detail: bool,
    ) -> Vec<StrategyResult> {
        let names = self.frame.field_names();
        let groups = self.frame.group_names();
        let parsed: Vec<Result<Expr, String>> = specs
            .iter()
            .map(|(_, s)| {
                s.validate()
                    .and_then(|()| {
                        crate::expr::parse_with(&s.signal, &names, &groups)
                            .map_err(|e| e.to_string())
                    })
                    .and_then(|e| self.check_groups(&e).map(|()| e))
                    .and_then(|e| check_vol_forecast(s, &names).map(|()| e))
            })
            .collect();
        let good: Vec<Expr> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let eval = Evaluator::new(&self.frame, &good);
        let shown = self.splits.train.start
            ..parts
                .iter()
                .map(|p| self.splits.range(*p).end)
                .max()
                .unwrap_or(0);
        parsed
            .par_iter()
            .zip(specs)
            .map(|(p, (name, spec))| {
                let mut out = StrategyResult {
                    name: name.clone(),
                    spec: spec.clone(),
                    error: p.as_ref().err().cloned(),
                    metrics: Vec::new(),
                    years: Vec::new(),
                    folds: Vec::new(),
                    selection_folds: Vec::new(),
                    nodes: p.as_ref().map_or(0, Expr::size),
                    depth: p.as_ref().map_or(0, Expr::depth),
                    ic_decay: Vec::new(),
                    infinite_signal_cells: 0,
                    level_dependent: false,
                    holding_changes_per_year: None,
                    book: None,
                };
                let Ok(e) = p else { return out };
                let signal = eval.signal(e);
                let book = portfolio::run(spec, &signal, &self.frame, &self.target, self.periods);
                out.metrics = parts
                    .iter()
                    .map(|&pt| (pt, Metrics::of(&book, self.splits.range(pt), self.periods)))
                    .collect();
                if detail {
                    out.years = metrics::per_year(&book, &self.times, shown.clone(), self.periods);
                    out.folds =
                        metrics::walk_forward(&book, self.splits.train.clone(), 4, self.periods)
                            .into_iter()
                            .map(|(_, m)| m)
                            .collect();
                    if let Some(close) = self.frame.fields.get("close") {
                        out.ic_decay = metrics::ic_decay(
                            &signal.values,
                            close,
                            &[1, 5, 10, 20],
                            shown.clone(),
                        );
                    }
                }
                out.infinite_signal_cells = book.nonfinite_signal_cells;
                out.book = Some(book);
                out
            })
            .collect()
    }

    /// The values of `signals` over the whole session, each a `times × instruments` matrix,
    /// evaluated as one batch (shared sub-expressions computed once); a signal that does not
    /// parse gets its error.
    pub fn signal_values(&self, signals: &[String]) -> Vec<Result<Arc<Mat>, String>> {
        let parsed: Vec<Result<Expr, String>> = signals.iter().map(|s| self.parse(s)).collect();
        let good: Vec<Expr> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
        let eval = Evaluator::new(&self.frame, &good);
        parsed
            .into_iter()
            .map(|p| p.map(|e| eval.signal(&e).values))
            .collect()
    }

    /// `signal` parsed against this session's fields and groupings.
    ///
    /// # Errors
    /// It does not parse.
    pub fn parse(&self, signal: &str) -> Result<Expr, String> {
        let names = self.frame.field_names();
        let groups = self.frame.group_names();
        crate::expr::parse_with(signal, &names, &groups).map_err(|e| e.to_string())
    }

    /// The share of bars missing inside each instrument's trading life in the training part
    /// (between its first and last close there): the holidays of a union calendar across
    /// markets, which blank every strict window that spans one (see `Expr::with_min_count`).
    pub fn calendar_gaps(&self) -> f64 {
        let Some(close) = self.frame.fields.get("close") else {
            return 0.0;
        };
        let train = self.splits.range(Part::Train);
        let (mut missing, mut cells) = (0usize, 0usize);
        for j in 0..close.n {
            let c = &close.col(j)[train.clone()];
            let (Some(first), Some(last)) = (
                c.iter().position(|v| !v.is_nan()),
                c.iter().rposition(|v| !v.is_nan()),
            ) else {
                continue;
            };
            cells += last + 1 - first;
            missing += c[first..=last].iter().filter(|v| v.is_nan()).count();
        }
        if cells == 0 {
            0.0
        } else {
            missing as f64 / cells as f64
        }
    }

    /// The mean rank IC of `signal` against the return over the next `h` bars, for each of
    /// `horizons`, on the bars of `part` (the IC decay a tearsheet draws).
    ///
    /// # Errors
    /// The signal does not parse or uses a grouping the data lacks.
    pub fn ic_decay(
        &self,
        signal: &str,
        part: Part,
        horizons: &[usize],
    ) -> Result<Vec<(usize, f64)>, String> {
        let e = self.parse(signal)?;
        self.check_groups(&e)?;
        let Some(close) = self.frame.fields.get("close") else {
            return Err("the panel has no close prices".into());
        };
        let eval = Evaluator::new(&self.frame, std::slice::from_ref(&e));
        let values = eval.signal(&e);
        Ok(metrics::ic_decay(
            &values.values,
            close,
            horizons,
            self.splits.range(part),
        ))
    }

    /// Each result's Sharpe ratio against `baseline`'s on every part both were measured on,
    /// tested on that part's bars ([`crate::stats::sharpe_difference`]); results without a
    /// book, or parts where the test is undefined, are left out.
    pub fn versus_baseline(
        &self,
        results: &[StrategyResult],
        baseline: &StrategyResult,
    ) -> Vec<SharpeTest> {
        let Some(base_book) = &baseline.book else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for r in results {
            let Some(book) = &r.book else { continue };
            for (part, m) in &r.metrics {
                let Some((_, bm)) = baseline.metrics.iter().find(|(p, _)| p == part) else {
                    continue;
                };
                let range = self.splits.range(*part);
                if let Some(d) =
                    crate::stats::sharpe_difference(&book.net[range.clone()], &base_book.net[range])
                {
                    out.push(SharpeTest {
                        strategy: r.name.clone(),
                        part: *part,
                        sharpe_difference: m.sharpe - bm.sharpe,
                        z: d.z,
                    });
                }
            }
        }
        out
    }

    /// Each result against the always-long book built like itself (the first of
    /// [`crate::baseline::baselines`]: its universe filter, lag and costs), on `parts`, as
    /// [`Session::versus_baseline`] tests it: strategies of several constructions are each
    /// held against their own. Each distinct always-long book is run once.
    pub fn versus_always_long(
        &self,
        results: &[StrategyResult],
        parts: &[Part],
    ) -> Vec<SharpeTest> {
        let mut books: Vec<(StrategySpec, StrategyResult)> = Vec::new();
        let mut out = Vec::new();
        for r in results.iter().filter(|r| r.book.is_some()) {
            let Some(base) = crate::baseline::baselines(&r.spec, self.bars_per_day())
                .into_iter()
                .next()
            else {
                continue;
            };
            let i = match books.iter().position(|(s, _)| *s == base.1) {
                Some(i) => i,
                None => {
                    let Some(run) = self.run(std::slice::from_ref(&base), parts, false).pop()
                    else {
                        continue;
                    };
                    books.push((base.1, run));
                    books.len() - 1
                }
            };
            out.extend(self.versus_baseline(std::slice::from_ref(r), &books[i].1));
        }
        out
    }

    /// How each result's returns over `part` move with the always-long book of its own
    /// construction ([`crate::baseline::always_long`]): a correlation near ±1 is a position
    /// in the market, not a signal. Each distinct construction is run once per session (its
    /// returns kept with the closest baselines'; the sealed test's are run each time).
    pub fn always_long_co_move(
        &self,
        results: &[StrategyResult],
        part: Part,
    ) -> Vec<crate::metrics::CoMove> {
        let mut bases: Vec<(String, StrategySpec)> = Vec::new();
        let which: Vec<usize> = results
            .iter()
            .map(|r| {
                let b = crate::baseline::always_long(&r.spec);
                match bases.iter().position(|(_, s)| *s == b) {
                    Some(i) => i,
                    None => {
                        bases.push((format!("always long {}", bases.len() + 1), b));
                        bases.len() - 1
                    }
                }
            })
            .collect();
        let range = self.splits.range(part);
        let net = |r: &StrategyResult| -> Vec<f64> {
            r.book
                .as_ref()
                .map(|b| b.net[range.clone()].to_vec())
                .unwrap_or_default()
        };
        // Training and validation from the kept baseline returns; the sealed test is run.
        let base: Vec<Vec<f64>> = if part == Part::Test {
            self.run(&bases, &[part], false).iter().map(net).collect()
        } else {
            let from = range.start - self.splits.train.start;
            let specs: Vec<StrategySpec> = bases.iter().map(|(_, s)| s.clone()).collect();
            self.baseline_returns(&specs)
                .into_iter()
                .map(|n| {
                    n.and_then(|n| n.get(from..from + range.len()).map(<[f64]>::to_vec))
                        .unwrap_or_default()
                })
                .collect()
        };
        results
            .iter()
            .zip(&which)
            .map(|(r, &i)| crate::metrics::co_move(&net(r), base.get(i).map_or(&[], Vec::as_slice)))
            .collect()
    }

    /// Per result, its closest baseline over training and validation from the bar its book is
    /// judged from ([`Session::judged_from`]; see [`crate::baseline::closest`]) among the
    /// baselines of its own construction
    /// ([`crate::baseline::baselines`]), each distinct baseline run once; `None` for a result
    /// without a book.
    pub fn closest_baselines(&self, results: &[StrategyResult]) -> Vec<Option<(String, f64)>> {
        let mut bases: Vec<(String, StrategySpec)> = Vec::new();
        let which: Vec<Vec<(String, usize)>> = results
            .iter()
            .map(|r| {
                crate::baseline::baselines(&r.spec, self.bars_per_day())
                    .into_iter()
                    .map(|(name, spec)| {
                        let i = match bases.iter().position(|(_, s)| *s == spec) {
                            Some(i) => i,
                            None => {
                                bases.push((format!("b{}", bases.len() + 1), spec));
                                bases.len() - 1
                            }
                        };
                        (name, i)
                    })
                    .collect()
            })
            .collect();
        let seen = self.splits.train.start..self.splits.valid.end;
        let net = |r: &StrategyResult| -> Option<Vec<f64>> {
            r.book.as_ref().map(|b| b.net[seen.clone()].to_vec())
        };
        let base_net = if results.iter().any(|r| r.book.is_some()) {
            let specs: Vec<StrategySpec> = bases.iter().map(|(_, s)| s.clone()).collect();
            self.baseline_returns(&specs)
        } else {
            Vec::new()
        };
        results
            .iter()
            .zip(&which)
            .map(|(r, names)| {
                let own = net(r)?;
                // Over the bars the book is judged on: a top-k book's returns are every other
                // top-k book's where it had no choice.
                let skip = r
                    .book
                    .as_ref()
                    .map_or(0, |b| self.judged_from(&r.spec, b) - seen.start);
                let top_k = matches!(r.spec.portfolio, crate::spec::Portfolio::TopK { .. });
                let candidates: Vec<(&str, &str, &[f64])> = names
                    .iter()
                    .filter_map(|(name, i)| {
                        Some((
                            name.as_str(),
                            bases[*i].1.signal.as_str(),
                            base_net.get(*i)?.as_deref()?.get(skip..)?,
                        ))
                    })
                    .collect();
                crate::baseline::closest(own.get(skip..)?, top_k, &candidates)
            })
            .collect()
    }

    /// The net returns over training and validation of each of `specs` (baselines), each run
    /// once per session and kept: every round of a run compares with the same few.
    fn baseline_returns(&self, specs: &[StrategySpec]) -> Vec<Option<Arc<Vec<f64>>>> {
        let seen = self.splits.train.start..self.splits.valid.end;
        let cached = |spec: &StrategySpec| -> Option<Arc<Vec<f64>>> {
            let nets = self.baseline_nets.lock().ok()?;
            nets.iter().find(|(s, _)| s == spec).map(|(_, n)| n.clone())
        };
        let mut missing: Vec<(String, StrategySpec)> = Vec::new();
        for spec in specs {
            if cached(spec).is_none() && !missing.iter().any(|(_, s)| s == spec) {
                missing.push((format!("b{}", missing.len() + 1), spec.clone()));
            }
        }
        if !missing.is_empty() {
            let ran = self.run(&missing, &[Part::Train, Part::Validation], false);
            if let Ok(mut nets) = self.baseline_nets.lock() {
                for ((_, spec), r) in missing.into_iter().zip(&ran) {
                    if let Some(b) = &r.book {
                        nets.push((spec, Arc::new(b.net[seen.clone()].to_vec())));
                    }
                }
            }
        }
        specs.iter().map(cached).collect()
    }

    /// The deflated Sharpe ratio of the best validation Sharpe given every strategy that ran,
    /// and PBO over their validation returns.
    pub fn multiple_testing(&self, results: &[StrategyResult]) -> Option<MultipleTesting> {
        let valid = self.splits.range(Part::Validation);
        let runs: Vec<(&str, Vec<f64>)> = results
            .iter()
            .filter_map(|r| {
                r.book.as_ref().map(|b| {
                    (
                        r.name.as_str(),
                        b.net[valid.clone()]
                            .iter()
                            .map(|v| if v.is_nan() { 0.0 } else { *v })
                            .collect(),
                    )
                })
            })
            .collect();
        if runs.len() < 2 {
            return None;
        }
        // Sharpe ratios over active bars, as the metrics report them, and the best's evidence
        // from the same bars; PBO below needs equal lengths, so there an inactive bar counts as
        // a zero return.
        let active: Vec<Vec<f64>> = results
            .iter()
            .filter_map(|r| {
                r.book.as_ref().map(|b| {
                    b.net[valid.clone()]
                        .iter()
                        .copied()
                        .filter(|v| !v.is_nan())
                        .collect()
                })
            })
            .collect();
        let (best, best_sr, deflated) = stats::deflate_best(&active)?;
        let returns: Vec<Vec<f64>> = runs.iter().map(|(_, r)| r.clone()).collect();
        let pbo = stats::pbo(&returns, 16);
        Some(MultipleTesting {
            trials: runs.len(),
            best: runs[best].0.to_string(),
            best_validation_sharpe: best_sr * self.periods.sqrt(),
            deflated,
            pbo: pbo.as_ref().map(|p| p.pbo),
            pbo_splits: pbo.map_or(0, |p| p.splits),
            periods_per_year: self.periods,
        })
    }
}

/// A sign book sized by a forecast (`vol_forecast`) needs that field in the universe.
fn check_vol_forecast(spec: &StrategySpec, fields: &[&str]) -> Result<(), String> {
    match &spec.portfolio {
        crate::spec::Portfolio::SignThreshold {
            vol_forecast: Some(f),
            ..
        } if !fields.contains(&f.as_str()) => Err(format!(
            "strategy spec field 'portfolio.vol_forecast': this universe has no field '{f}' (its fields: {}); load a volatility model's prediction panel under that name (lim backtest --predictions NAME), or leave vol_forecast out to size by trailing volatility",
            fields.join(", ")
        )),
        _ => Ok(()),
    }
}
