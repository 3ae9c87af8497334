//! The research benchmark: a fixed suite of goals × seeds run with the offline strategist, the
//! yardstick for every change to the strategist or the objective. Per run it measures what a
//! change must improve out of sample: the finalists' and their combination's test Sharpe beside
//! the always-long baseline, the deflated Sharpe ratio and PBO, and whether validation rank
//! predicts test rank over the leaderboard (Spearman, computed after the search, for the
//! benchmark only: nothing of it reaches the search).
//!
//! Runs live in a run store like any other; a finished run is read back, an unfinished one is
//! resumed, so an interrupted benchmark continues where it stopped.

use std::sync::Arc;

use lim_backtest::session::Session;
use lim_backtest::spec::StrategySpec;
use lim_market::{MarketData, Part};
use serde::{Deserialize, Serialize};

use crate::engine::Mode;
use crate::journal::{Clock, Journal};
use crate::research::{self, ResearchConfig, ResearchParts, Services, StrategistConfig, Summary};
use crate::store::{RunMeta, RunStatus, Store, StoreError, StoreSink};
use lim_agents::client::LlmClient;

/// The suite's goals: Chinese and US futures, US equities, crypto and equity indices. Goals
/// whose market the data lacks run on what the keyword planner finds, and say so.
pub const GOALS: [&str; 6] = [
    "find a robust trend strategy for Chinese commodity futures, max drawdown 15%",
    "trend following on US futures",
    "short-term reversal in US stocks",
    "cross-sectional momentum in US equities",
    "trend in crypto",
    "mean reversion in equity indices",
];

/// One goal and seed, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalResult {
    /// The goal.
    pub goal: String,
    /// The seed.
    pub seed: u64,
    /// The run, in the store.
    pub run: String,
    /// The datasets the plan traded.
    pub datasets: Vec<String>,
    /// Strategies tried.
    pub trials: usize,
    /// The sealed test's first and last bars (absent in results written before they were
    /// kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_period: Option<(String, String)>,
    /// The finalists' test Sharpe ratios.
    pub finalists_test_sharpe: Vec<f64>,
    /// The finalists combined (equal risk), test Sharpe.
    #[serde(with = "lim_backtest::nonfinite")]
    pub combined_test_sharpe: f64,
    /// Always long (equal weight), test Sharpe.
    #[serde(with = "lim_backtest::nonfinite")]
    pub always_long_test_sharpe: f64,
    /// Finalists whose test Sharpe beats always long's.
    pub finalists_beating_always_long: usize,
    /// Each finalist's test Sharpe against always long's, as a z ([`lim_backtest::session::SharpeTest`]:
    /// beyond ±1.96 unlikely to be chance), in finalist order; `None` where it cannot be
    /// tested (absent in results written before it was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalists_z_vs_always_long: Vec<Option<f64>>,
    /// The same of the finalists' combination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined_z_vs_always_long: Option<f64>,
    /// Deflated Sharpe ratio of the best validation result.
    #[serde(with = "lim_backtest::nonfinite")]
    pub dsr: f64,
    /// Probability of backtest overfitting.
    #[serde(with = "lim_backtest::nonfinite")]
    pub pbo: f64,
    /// Spearman correlation of validation and test Sharpe over the leaderboard.
    #[serde(with = "lim_backtest::nonfinite")]
    pub validation_test_rank_correlation: f64,
    /// Spearman correlation of robust fitness (what the search ranks by) and test Sharpe over
    /// the leaderboard.
    #[serde(with = "lim_backtest::nonfinite", default = "nan")]
    pub fitness_test_rank_correlation: f64,
    /// Every scored strategy the run tried, re-run on the sealed test: how the search's
    /// choice compares with what it chose from (absent in results written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tried: Option<Tried>,
    /// Wall seconds of the run (0 when read back from the store).
    pub seconds: f64,
    /// CPU seconds (user and system, every thread) of the run, when the caller measured them
    /// (0 when read back from the store).
    #[serde(default)]
    pub cpu_seconds: f64,
    /// LLM calls of the run (answers read back on resume count: they were paid for once).
    #[serde(default)]
    pub llm_calls: u64,
    /// LLM tokens of the run.
    #[serde(default)]
    pub llm_tokens: u64,
    /// LLM dollars of the run, at the run's price (0 without one).
    #[serde(default)]
    pub llm_usd: f64,
    /// With `--vol-sizing`, for a sign-threshold book: its finalists on the test sized by
    /// trailing volatility and by the foundation model's volatility forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vol_sizing: Option<VolSizing>,
    /// With `--foundation`: the fields the plan's foundation step made, and how many
    /// strategies read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foundation: Option<FoundationUse>,
}

/// Every scored strategy of a run on the sealed test, measured after the run for the benchmark
/// only. Finalists no better than this pool mean the search's choice added nothing; a pool
/// that rarely beats always long means the goal's family did not pay in the test period,
/// whatever was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    /// Scored strategies (those with a fitness).
    pub scored: usize,
    /// Of them, those whose test Sharpe beats always long's.
    pub beating_always_long: usize,
    /// Their median test Sharpe.
    #[serde(with = "lim_backtest::nonfinite")]
    pub median_test_sharpe: f64,
    /// Their best test Sharpe: what a choice in hindsight would have had.
    #[serde(with = "lim_backtest::nonfinite")]
    pub best_test_sharpe: f64,
    /// Finalists whose sealed-test Sharpe in the report this re-run reproduces: all of them,
    /// unless the run was recorded by code that built its books otherwise.
    pub finalists_reproduced: usize,
    /// Spearman correlation of validation and test Sharpe over all of them (the leaderboard's
    /// is over its ten).
    #[serde(with = "lim_backtest::nonfinite")]
    pub validation_test_rank_correlation: f64,
    /// Spearman correlation of robust fitness and test Sharpe over all of them.
    #[serde(with = "lim_backtest::nonfinite")]
    pub fitness_test_rank_correlation: f64,
}

/// What a run with the foundation model made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundationUse {
    /// The fields its predictions became.
    pub fields: Vec<String>,
    /// Leaderboard strategies whose signal reads one of them …
    pub leaderboard_reading: usize,
    /// … of this many.
    pub leaderboard: usize,
    /// Finalists whose signal reads one of them.
    pub finalists_reading: usize,
}

/// The finalists of a sign-threshold book re-run on the sealed test twice, the signals fixed:
/// positions sized by the book's trailing volatility, and by a volatility forecast of the
/// foundation model (fine-tuned on the universe's bars before the middle of the training
/// part, predicting the next 5 or 20 bars' realised volatility). Does forecasting volatility
/// pay?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolSizing {
    /// The volatility model (its recipe).
    pub model: String,
    /// Its rank IC with realised volatility on its holdout (before the training part's middle).
    #[serde(with = "lim_backtest::nonfinite")]
    pub holdout_rank_ic: f64,
    /// Test Sharpe of each finalist sized by trailing volatility.
    pub trailing_test_sharpe: Vec<f64>,
    /// Test Sharpe of each finalist sized by the forecast.
    pub forecast_test_sharpe: Vec<f64>,
    /// The same before costs: sized by trailing volatility …
    #[serde(default)]
    pub trailing_gross_test_sharpe: Vec<f64>,
    /// … and by the forecast.
    #[serde(default)]
    pub forecast_gross_test_sharpe: Vec<f64>,
    /// Test turnover of each finalist sized by trailing volatility …
    #[serde(default)]
    pub trailing_test_turnover: Vec<f64>,
    /// … and by the forecast.
    #[serde(default)]
    pub forecast_test_turnover: Vec<f64>,
}

/// The benchmark's totals over its runs (means skip what is not a number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Runs measured.
    pub runs: usize,
    /// Mean over runs of the finalists' mean test Sharpe.
    #[serde(with = "lim_backtest::nonfinite")]
    pub mean_finalist_test_sharpe: f64,
    /// Mean test Sharpe of the finalists' combination.
    #[serde(with = "lim_backtest::nonfinite")]
    pub mean_combined_test_sharpe: f64,
    /// Mean test Sharpe of always long.
    #[serde(with = "lim_backtest::nonfinite")]
    pub mean_always_long_test_sharpe: f64,
    /// Finalists beating always long, and finalists in all.
    pub finalists_beating_always_long: usize,
    /// Finalists in all.
    pub finalists: usize,
    /// Goals (over all their seeds) where more than half the finalists beat always long, and
    /// goals in all: the research issue's first criterion.
    pub goals_where_most_finalists_beat_always_long: usize,
    /// Goals in all.
    pub goals: usize,
    /// Finalists whose test Sharpe is above always long's beyond chance (z at least
    /// [`research::SIGNIFICANT_Z`]) …
    #[serde(default)]
    pub finalists_above_always_long_beyond_chance: usize,
    /// … below it beyond chance …
    #[serde(default)]
    pub finalists_below_always_long_beyond_chance: usize,
    /// … and tested.
    #[serde(default)]
    pub finalists_tested_against_always_long: usize,
    /// Runs whose combination is above always long beyond chance …
    #[serde(default)]
    pub runs_combined_above_always_long_beyond_chance: usize,
    /// … below it beyond chance …
    #[serde(default)]
    pub runs_combined_below_always_long_beyond_chance: usize,
    /// … and tested.
    #[serde(default)]
    pub runs_combined_tested_against_always_long: usize,
    /// Runs whose combined book's test Sharpe is at least its median finalist's (runs with
    /// finalists and a combined book): the research issue's third criterion.
    pub runs_combined_at_least_median_finalist: usize,
    /// Runs with finalists and a combined book.
    pub runs_with_combination: usize,
    /// Mean validation→test rank correlation.
    #[serde(with = "lim_backtest::nonfinite")]
    pub mean_validation_test_rank_correlation: f64,
    /// Its t-statistic across runs (mean over its standard error): how clearly positive it is.
    #[serde(with = "lim_backtest::nonfinite", default = "nan")]
    pub validation_test_rank_correlation_t: f64,
    /// Mean fitness→test rank correlation.
    #[serde(with = "lim_backtest::nonfinite")]
    pub mean_fitness_test_rank_correlation: f64,
    /// Every scored strategy of every run, re-run on the sealed test ([`Tried`]; runs measured
    /// before it was kept count nothing) …
    #[serde(default)]
    pub tried: usize,
    /// … those beating their run's always long …
    #[serde(default)]
    pub tried_beating_always_long: usize,
    /// … goals (over all their seeds) where more than half of them do: where the goal's
    /// family paid on the test whatever the search chose …
    #[serde(default)]
    pub goals_where_most_tried_beat_always_long: usize,
    /// … the mean over runs of their median test Sharpe (what a pick at random from the pool
    /// would give, beside the finalists' mean) …
    #[serde(with = "lim_backtest::nonfinite", default = "nan")]
    pub mean_tried_median_test_sharpe: f64,
    /// … and the mean over runs of their validation→test rank correlation, with its t across
    /// runs.
    #[serde(with = "lim_backtest::nonfinite", default = "nan")]
    pub mean_tried_validation_test_rank_correlation: f64,
    /// Its t-statistic across runs.
    #[serde(with = "lim_backtest::nonfinite", default = "nan")]
    pub tried_validation_test_rank_correlation_t: f64,
    /// Mean deflated Sharpe ratio.
    #[serde(with = "lim_backtest::nonfinite")]
    pub mean_dsr: f64,
    /// Wall seconds spent running (runs read back count nothing).
    pub seconds: f64,
    /// CPU seconds spent running.
    pub cpu_seconds: f64,
    /// LLM tokens over all runs.
    pub llm_tokens: u64,
    /// LLM dollars over all runs.
    pub llm_usd: f64,
    /// With `--vol-sizing`: finalists whose test Sharpe is higher sized by the forecast than
    /// by trailing volatility …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vol_sizing_finalists_better: Option<usize>,
    /// … finalists compared …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vol_sizing_finalists: Option<usize>,
    /// … and the mean test Sharpe of each sizing over those finalists: (trailing, forecast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vol_sizing_mean_test_sharpe: Option<(f64, f64)>,
    /// The same before costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vol_sizing_mean_gross_test_sharpe: Option<(f64, f64)>,
    /// Mean test turnover of each sizing: (trailing, forecast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vol_sizing_mean_test_turnover: Option<(f64, f64)>,
    /// With `--foundation`: finalists whose signal reads a foundation field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foundation_finalists_reading: Option<usize>,
}

/// One of the research goal's criteria, judged on a benchmark's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Criterion {
    /// What it asks.
    pub criterion: &'static str,
    /// Whether the totals meet it.
    pub holds: bool,
    /// What was measured, e.g. `4 of 6 goals`.
    pub measured: String,
}

/// The t-statistic across runs at which the validation→test rank correlation counts as
/// clearly positive.
pub const CLEARLY_POSITIVE_T: f64 = 2.0;

impl Totals {
    /// The research goal's three criteria (docs/research.md), judged on these totals: most of
    /// a goal's finalists beat always long in more than half the goals; the leaderboard's
    /// validation→test rank correlation is positive with a t across runs of at least
    /// [`CLEARLY_POSITIVE_T`]; the combination is at least as good as its median finalist in
    /// more than half the runs that have one. None holds on empty totals.
    pub fn goal_criteria(&self) -> [Criterion; 3] {
        let most = |k: usize, n: usize| n > 0 && 2 * k > n;
        let (rho, t) = (
            self.mean_validation_test_rank_correlation,
            self.validation_test_rank_correlation_t,
        );
        [
            Criterion {
                criterion: "most finalists beat always long in most goals",
                holds: most(self.goals_where_most_finalists_beat_always_long, self.goals),
                measured: format!(
                    "{} of {} goals",
                    self.goals_where_most_finalists_beat_always_long, self.goals
                ),
            },
            Criterion {
                criterion: "the validation→test rank correlation is clearly positive (t ≥ 2)",
                holds: rho > 0.0 && t >= CLEARLY_POSITIVE_T,
                measured: format!("{rho:.2}, t {t:.1}"),
            },
            Criterion {
                criterion: "the combination is at least its median finalist in most runs",
                holds: most(
                    self.runs_combined_at_least_median_finalist,
                    self.runs_with_combination,
                ),
                measured: format!(
                    "{} of {} runs",
                    self.runs_combined_at_least_median_finalist, self.runs_with_combination
                ),
            },
        ]
    }
}

fn nan() -> f64 {
    f64::NAN
}

/// The mean of the finite `values` (NaN without any).
fn finite_mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.iter().sum::<f64>() / v.len() as f64
}

/// The mean of the finite `values` over its standard error (NaN with fewer than two, or none
/// spread).
fn t_across(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    let n = v.len() as f64;
    let m = finite_mean(v.iter().copied());
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    if v.len() < 2 || var <= 0.0 {
        f64::NAN
    } else {
        m / (var / n).sqrt()
    }
}

/// The totals of `results`.
pub fn totals(results: &[GoalResult]) -> Totals {
    let mean = |f: &dyn Fn(&GoalResult) -> f64| finite_mean(results.iter().map(f));
    // Per goal: finalists beating always long, finalists; the same of every scored strategy.
    let mut goals: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut goals_tried: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for r in results {
        let g = goals.entry(r.goal.as_str()).or_default();
        g.0 += r.finalists_beating_always_long;
        g.1 += r.finalists_test_sharpe.len();
        if let Some(t) = &r.tried {
            let g = goals_tried.entry(r.goal.as_str()).or_default();
            g.0 += t.beating_always_long;
            g.1 += t.scored;
        }
    }
    let most = |goals: &std::collections::BTreeMap<&str, (usize, usize)>| {
        goals.values().filter(|(beat, all)| 2 * beat > *all).count()
    };
    let tried: Vec<&Tried> = results.iter().filter_map(|r| r.tried.as_ref()).collect();
    let tried_mean = |f: &dyn Fn(&Tried) -> f64| finite_mean(tried.iter().map(|t| f(t)));
    // Per run with finalists and a combination: (combined, median finalist).
    let combined: Vec<(f64, f64)> = results
        .iter()
        .filter_map(|r| {
            let s: Vec<f64> = r
                .finalists_test_sharpe
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            if s.is_empty() || !r.combined_test_sharpe.is_finite() {
                return None;
            }
            let median = lim_backtest::ops::quantile(&s, 0.5);
            Some((r.combined_test_sharpe, median))
        })
        .collect();
    // Per finalist sized both ways: (trailing, forecast) after costs, before costs and
    // turnover; only finalists with all six numbers count, so every figure covers the same.
    let sized_finalists: Vec<[(f64, f64); 3]> = results
        .iter()
        .filter_map(|r| r.vol_sizing.as_ref())
        .flat_map(|v| {
            (0..v.trailing_test_sharpe.len()).filter_map(move |i| {
                let at = |x: &Vec<f64>| x.get(i).copied().unwrap_or(f64::NAN);
                let row = [
                    (at(&v.trailing_test_sharpe), at(&v.forecast_test_sharpe)),
                    (
                        at(&v.trailing_gross_test_sharpe),
                        at(&v.forecast_gross_test_sharpe),
                    ),
                    (at(&v.trailing_test_turnover), at(&v.forecast_test_turnover)),
                ];
                row.iter()
                    .all(|(a, b)| a.is_finite() && b.is_finite())
                    .then_some(row)
            })
        })
        .collect();
    let means = |k: usize| {
        let n = sized_finalists.len() as f64;
        (!sized_finalists.is_empty()).then(|| {
            (
                sized_finalists.iter().map(|r| r[k].0).sum::<f64>() / n,
                sized_finalists.iter().map(|r| r[k].1).sum::<f64>() / n,
            )
        })
    };
    let finalist_z: Vec<f64> = results
        .iter()
        .flat_map(|r| r.finalists_z_vs_always_long.iter().flatten().copied())
        .collect();
    let combined_z: Vec<f64> = results
        .iter()
        .filter_map(|r| r.combined_z_vs_always_long)
        .collect();
    let above = |z: &[f64]| z.iter().filter(|z| **z >= research::SIGNIFICANT_Z).count();
    let below = |z: &[f64]| z.iter().filter(|z| **z <= -research::SIGNIFICANT_Z).count();
    let sized = results.iter().any(|r| r.vol_sizing.is_some());
    let with_model = results.iter().any(|r| r.foundation.is_some());
    Totals {
        foundation_finalists_reading: with_model.then(|| {
            results
                .iter()
                .filter_map(|r| r.foundation.as_ref())
                .map(|f| f.finalists_reading)
                .sum()
        }),
        vol_sizing_finalists_better: sized
            .then(|| sized_finalists.iter().filter(|r| r[0].1 > r[0].0).count()),
        vol_sizing_finalists: sized.then_some(sized_finalists.len()),
        vol_sizing_mean_test_sharpe: means(0),
        vol_sizing_mean_gross_test_sharpe: means(1),
        vol_sizing_mean_test_turnover: means(2),
        runs: results.len(),
        mean_finalist_test_sharpe: mean(&|r| {
            r.finalists_test_sharpe.iter().sum::<f64>() / r.finalists_test_sharpe.len() as f64
        }),
        mean_combined_test_sharpe: mean(&|r| r.combined_test_sharpe),
        mean_always_long_test_sharpe: mean(&|r| r.always_long_test_sharpe),
        finalists_beating_always_long: results
            .iter()
            .map(|r| r.finalists_beating_always_long)
            .sum(),
        finalists: results.iter().map(|r| r.finalists_test_sharpe.len()).sum(),
        goals_where_most_finalists_beat_always_long: most(&goals),
        goals: goals.len(),
        finalists_above_always_long_beyond_chance: above(&finalist_z),
        finalists_below_always_long_beyond_chance: below(&finalist_z),
        finalists_tested_against_always_long: finalist_z.len(),
        runs_combined_above_always_long_beyond_chance: above(&combined_z),
        runs_combined_below_always_long_beyond_chance: below(&combined_z),
        runs_combined_tested_against_always_long: combined_z.len(),
        runs_combined_at_least_median_finalist: combined.iter().filter(|(c, m)| c >= m).count(),
        runs_with_combination: combined.len(),
        mean_validation_test_rank_correlation: mean(&|r| r.validation_test_rank_correlation),
        validation_test_rank_correlation_t: t_across(
            results.iter().map(|r| r.validation_test_rank_correlation),
        ),
        mean_fitness_test_rank_correlation: mean(&|r| r.fitness_test_rank_correlation),
        tried: tried.iter().map(|t| t.scored).sum(),
        tried_beating_always_long: tried.iter().map(|t| t.beating_always_long).sum(),
        goals_where_most_tried_beat_always_long: most(&goals_tried),
        mean_tried_median_test_sharpe: tried_mean(&|t| t.median_test_sharpe),
        mean_tried_validation_test_rank_correlation: tried_mean(&|t| {
            t.validation_test_rank_correlation
        }),
        tried_validation_test_rank_correlation_t: t_across(
            tried.iter().map(|t| t.validation_test_rank_correlation),
        ),
        mean_dsr: mean(&|r| r.dsr),
        seconds: results.iter().map(|r| r.seconds).sum(),
        cpu_seconds: results.iter().map(|r| r.cpu_seconds).sum(),
        llm_tokens: results.iter().map(|r| r.llm_tokens).sum(),
        llm_usd: results.iter().map(|r| r.llm_usd).sum(),
    }
}

/// Why a benchmark run could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data could not be described or loaded.
    #[error("data: {0}")]
    Data(String),
    /// The run failed.
    #[error("run {run}: {message}")]
    Run {
        /// The run.
        run: String,
        /// What failed.
        message: String,
    },
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    use lim_backtest::metrics::{finite_pairs, pearson};
    use lim_backtest::ops::{RankScratch, rank_avg};
    let pairs = finite_pairs(a, b);
    let mut scratch = RankScratch::default();
    let mut rank = |v: Vec<f64>| {
        let mut r = vec![0.0; v.len()];
        rank_avg(&v, &mut r, &mut scratch);
        r
    };
    let ra = rank(pairs.iter().map(|p| p.0).collect());
    let rb = rank(pairs.iter().map(|p| p.1).collect());
    pearson(&finite_pairs(&ra, &rb))
}

/// Validation and test Sharpe of `signals`, re-run on `session` with the plan's book (NaN
/// where a part has no metrics).
fn validation_and_test(summary: &Summary, session: &Session, signals: &[&str]) -> Vec<(f64, f64)> {
    let specs: Vec<(String, StrategySpec)> = signals
        .iter()
        .map(|s| {
            (
                s.to_string(),
                lim_agents::offline::spec_for(&summary.plan.strategy, s),
            )
        })
        .collect();
    session
        .run(&specs, &[Part::Validation, Part::Test], false)
        .iter()
        .map(|r| match r.metrics.as_slice() {
            [(_, val), (_, test)] => (val.sharpe, test.sharpe),
            _ => (f64::NAN, f64::NAN),
        })
        .collect()
}

/// Spearman correlations of validation with test Sharpe, and of robust fitness (what the
/// search ranked by) with test Sharpe, over `sharpes` (validation, test) and `fitness`.
fn rank_correlations(sharpes: &[(f64, f64)], fitness: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = sharpes.iter().map(|s| s.0).collect();
    let t: Vec<f64> = sharpes.iter().map(|s| s.1).collect();
    (spearman(&v, &t), spearman(fitness, &t))
}

/// Every scored strategy of the run (its journaled trials, scored by today's rules as the
/// report scores them) on the sealed test, beside always long's test Sharpe `base`; and the
/// leaderboard's rank correlations, read from the same backtests (the leaderboard is the best
/// ten of them).
fn tried(
    artifacts: &crate::journal::Artifacts,
    summary: &Summary,
    session: &Session,
    base: f64,
) -> Result<(Tried, (f64, f64)), BenchError> {
    let mut trials: Vec<research::Trial> = artifacts
        .get("trials")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| BenchError::Data(format!("the run's trials: {e}")))?
        .unwrap_or_default();
    trials.iter_mut().for_each(|t| t.score(&summary.plan));
    let pool: Vec<(&str, f64)> = trials
        .iter()
        .filter_map(|t| Some((t.signal.as_str(), t.fitness.filter(|f| f.is_finite())?)))
        .collect();
    let signals: Vec<&str> = pool.iter().map(|p| p.0).collect();
    let sharpes = validation_and_test(summary, session, &signals);
    let fitness: Vec<f64> = pool.iter().map(|p| p.1).collect();
    let (rho, fitness_rho) = rank_correlations(&sharpes, &fitness);
    let of = |signal: &str| {
        signals
            .iter()
            .position(|s| *s == signal)
            .map_or((f64::NAN, f64::NAN), |i| sharpes[i])
    };
    let board: Vec<(f64, f64)> = summary.leaderboard.iter().map(|e| of(&e.signal)).collect();
    let board_fitness: Vec<f64> = summary.leaderboard.iter().map(|e| e.fitness).collect();
    let leaderboard = rank_correlations(&board, &board_fitness);
    let finite: Vec<f64> = sharpes
        .iter()
        .map(|s| s.1)
        .filter(|x| x.is_finite())
        .collect();
    let finalists_reproduced = summary
        .finalists
        .iter()
        .filter(|f| (of(&f.signal).1 - f.test.sharpe).abs() <= 1e-9)
        .count();
    let tried = Tried {
        scored: pool.len(),
        beating_always_long: finite.iter().filter(|s| **s > base).count(),
        median_test_sharpe: if finite.is_empty() {
            f64::NAN
        } else {
            lim_backtest::ops::quantile(&finite, 0.5)
        },
        best_test_sharpe: finite.iter().copied().fold(f64::NAN, f64::max),
        finalists_reproduced,
        validation_test_rank_correlation: rho,
        fitness_test_rank_correlation: fitness_rho,
    };
    Ok((tried, leaderboard))
}

/// Runs (or reads back, or resumes) `goal` with `seed` in `store` and measures it.
///
/// # Errors
/// The store, the data or the run failed.
pub async fn run_goal<L: LlmClient + 'static>(
    market: Arc<dyn MarketData>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    (goal, seed): (&str, u64),
    strategist: &StrategistConfig,
    llm: Arc<L>,
    Variant {
        baseline_penalty,
        vol_model,
        foundation,
        as_of,
        earlier,
    }: Variant,
) -> Result<GoalResult, BenchError> {
    let mut config = ResearchConfig::new(goal);
    config.seed = seed;
    config.strategist = strategist.clone();
    config.foundation = foundation.is_some();
    config.baseline_penalty = baseline_penalty;
    config.as_of = as_of;
    config.earlier = earlier;
    let manifest =
        research::manifest(market.as_ref()).map_err(|e| BenchError::Data(e.to_string()))?;
    let fingerprint = research::fingerprint(&config, &manifest);
    let started = std::time::Instant::now();
    let existing = store
        .runs_with_fingerprint(&fingerprint)?
        .into_iter()
        .next();
    let (id, records) = match existing {
        Some(id) => {
            let loaded = store.load(&id)?;
            (id, loaded.records)
        }
        None => {
            let id = store.new_run_id(&fingerprint)?;
            store.create_run(&RunMeta {
                id: id.clone(),
                fingerprint,
                created_ms: clock.now_ms(),
                goal: goal.to_string(),
                config: serde_json::to_value(&config).unwrap_or_default(),
                manifest,
                status: RunStatus::Running,
                stop_reason: None,
            })?;
            (id, Vec::new())
        }
    };
    let finished = store.run(&id)?.status == RunStatus::Finished;
    let budget = config.llm_budget();
    let (artifacts, spent) = if finished {
        (
            research::artifacts_of(&records),
            crate::journal::spent_in(&records, &budget, |_| true),
        )
    } else {
        let journal = Arc::new(Journal::new(
            records,
            Arc::new(StoreSink::new(store.clone(), &id)),
        ));
        let exec = research::executor(ResearchParts {
            services: Services {
                market: market.clone(),
                llm,
                clock,
                foundation: foundation.clone(),
                memory: Arc::new(lim_tools::NoMemory),
                remote_backtests: None,
            },
            config: config.clone(),
        })
        .map_err(|e| BenchError::Run {
            run: id.clone(),
            message: e.to_string(),
        })?;
        let state = exec
            .run(
                journal.clone(),
                research::initial(&config),
                Mode::Resume,
                |_| {},
            )
            .await
            .map_err(|e| BenchError::Run {
                run: id.clone(),
                message: e.to_string(),
            })?;
        (state.artifacts, journal.spent(&budget))
    };
    let (summary, _) =
        research::summarize(&artifacts, &config, spent).map_err(|e| BenchError::Run {
            run: id.clone(),
            message: e.to_string(),
        })?;
    if !finished {
        store.set_status(&id, RunStatus::Finished, Some(&summary.stop_reason))?;
    }
    let args = config.universe_args(summary.plan.strategy.datasets.clone());
    let mut session = Arc::new(
        lim_tools::load_session(market.as_ref(), &args, None)
            .map_err(|(_, m)| BenchError::Data(m))?,
    );
    // The foundation fields, rebuilt from their models' names, so that strategies reading
    // them can be re-run.
    let used = match (&foundation, &summary.foundation) {
        (Some(model), Some(state)) => {
            let universe = Arc::new(lim_tools::Universe::new(Some(session.clone())));
            lim_tools::Lab::new(
                model.clone(),
                universe.clone(),
                lim_tools::LabState::default(),
            )
            .restore_fields(state)
            .map_err(|m| BenchError::Data(format!("rebuilding the foundation fields: {m}")))?;
            if let Some(s) = universe.current() {
                session = s;
            }
            let fields: Vec<String> = state.fields.iter().map(|f| f.name.clone()).collect();
            let reads = |signal: &str| {
                session
                    .parse(signal)
                    .is_ok_and(|e| fields.iter().any(|f| e.reads(f)))
            };
            Some(FoundationUse {
                leaderboard_reading: summary
                    .leaderboard
                    .iter()
                    .filter(|e| reads(&e.signal))
                    .count(),
                leaderboard: summary.leaderboard.len(),
                finalists_reading: summary
                    .finalists
                    .iter()
                    .filter(|f| reads(&f.signal))
                    .count(),
                fields,
            })
        }
        (Some(_), None) => Some(FoundationUse {
            fields: Vec::new(),
            leaderboard_reading: 0,
            leaderboard: summary.leaderboard.len(),
            finalists_reading: 0,
        }),
        _ => None,
    };
    let base = summary
        .baselines
        .first()
        .map_or(f64::NAN, |b| b.test.sharpe);
    let (tried, (rho, fitness_rho)) = tried(&artifacts, &summary, &session, base)?;

    let vol_sizing = match vol_model {
        Some(model) => vol_sizing(&summary, session, model, seed).await?,
        None => None,
    };
    let finalists: Vec<f64> = summary.finalists.iter().map(|f| f.test.sharpe).collect();
    let z_of = |name: &str| summary.versus(name).map(|t| t.z).filter(|z| z.is_finite());
    Ok(GoalResult {
        finalists_z_vs_always_long: if summary.versus_always_long.is_empty() {
            Vec::new()
        } else {
            summary.finalists.iter().map(|f| z_of(&f.signal)).collect()
        },
        combined_z_vs_always_long: z_of(research::COMBINED),
        goal: goal.to_string(),
        seed,
        run: id,
        datasets: summary.plan.strategy.datasets.clone(),
        trials: summary.trials,
        test_period: summary
            .test_period()
            .map(|p| (p.first.clone(), p.last.clone())),
        finalists_beating_always_long: finalists.iter().filter(|s| **s > base).count(),
        finalists_test_sharpe: finalists,
        combined_test_sharpe: summary
            .combined
            .as_ref()
            .map_or(f64::NAN, |c| c.test.sharpe),
        always_long_test_sharpe: base,
        dsr: summary
            .multiple_testing
            .as_ref()
            .map_or(f64::NAN, |m| m.deflated.dsr),
        pbo: summary
            .multiple_testing
            .as_ref()
            .and_then(|m| m.pbo)
            .unwrap_or(f64::NAN),
        validation_test_rank_correlation: rho,
        fitness_test_rank_correlation: fitness_rho,
        tried: Some(tried),
        seconds: if finished {
            0.0
        } else {
            started.elapsed().as_secs_f64()
        },
        cpu_seconds: 0.0,
        llm_calls: spent.calls,
        llm_tokens: spent.tokens,
        llm_usd: spent.usd,
        vol_sizing,
        foundation: used,
    })
}

/// What a benchmark run varies besides goal and seed: a research setting, and the foundation
/// models it uses besides its search.
#[derive(Debug, Clone, Default)]
pub struct Variant {
    /// With `--baseline-penalty`: the research setting of that name (0: none).
    pub baseline_penalty: f64,
    /// With `--vol-sizing`: the volatility model that re-sizes the finalists.
    pub vol_model: Option<VolModel>,
    /// With `--foundation`: the model of the plan's foundation step.
    pub foundation: Option<Arc<dyn lim_tools::FoundationModel>>,
    /// With `--as-of`: the research setting of that name (the data ends there).
    pub as_of: Option<String>,
    /// With `--earlier`: the research setting of that name (an earlier period).
    pub earlier: u32,
}

/// The volatility model of [`VolSizing`]: the foundation model, and the steps of its
/// pretraining and of its fine-tuning.
#[derive(Debug, Clone)]
pub struct VolModel {
    /// The foundation model.
    pub model: Arc<dyn lim_tools::FoundationModel>,
    /// Steps of each stage (300 in the benchmark's figures).
    pub steps: usize,
    /// What it forecasts: the next 5 or 20 bars' volatility.
    pub target: lim_tools::FinetuneTarget,
    /// How it is fine-tuned: `Full`, or `LpFt` (both stages with `steps`).
    pub mode: lim_tools::TuneMode,
}

/// The field the volatility forecast becomes.
const FORECAST_VOL: &str = "forecast_vol";

/// [`VolSizing`] for `summary`'s finalists on `session` (`None` unless the book sizes by
/// volatility and there are finalists). The model is pretrained and fine-tuned through the
/// agents' own tools, so it learns only from bars before the middle of the training part.
async fn vol_sizing(
    summary: &Summary,
    session: Arc<Session>,
    VolModel {
        model,
        steps,
        target,
        mode,
    }: VolModel,
    seed: u64,
) -> Result<Option<VolSizing>, BenchError> {
    use lim_backtest::spec::Portfolio;
    use lim_tools::{Tool, ToolOutcome};
    let plan = &summary.plan.strategy;
    if !matches!(plan.portfolio, Portfolio::SignThreshold { .. }) || summary.finalists.is_empty() {
        return Ok(None);
    }
    let universe = Arc::new(lim_tools::Universe::new(Some(session)));
    let lab = Arc::new(lim_tools::Lab::new(
        model,
        universe.clone(),
        lim_tools::LabState::new(f64::INFINITY),
    ));
    let failed = |what: &str, message: String| BenchError::Data(format!("{what}: {message}"));
    let pre = match (lim_tools::Pretrain { lab: lab.clone() })
        .call(lim_tools::PretrainArgs { steps, seed })
        .await
    {
        ToolOutcome::Done { result } => result.model,
        ToolOutcome::Failed { message, .. } => return Err(failed("pretraining", message)),
    };
    let tuned = match (lim_tools::Finetune { lab: lab.clone() })
        .call(lim_tools::FinetuneArgs {
            model: pre,
            mode,
            steps,
            seed,
            target,
        })
        .await
    {
        ToolOutcome::Done { result } => result,
        ToolOutcome::Failed { message, .. } => return Err(failed("fine-tuning", message)),
    };
    if let ToolOutcome::Failed { message, .. } = (lim_tools::Predict { lab: lab.clone() })
        .call(lim_tools::PredictArgs {
            model: tuned.model.clone(),
            name: FORECAST_VOL.into(),
            why: "the benchmark sizes the finalists by it".into(),
        })
        .await
    {
        return Err(failed("predicting", message));
    }
    let Some(session) = universe.current() else {
        return Ok(None);
    };
    // Per finalist: trailing, forecast, and both again without costs.
    let mut specs = Vec::new();
    for f in &summary.finalists {
        let trailing = lim_agents::offline::spec_for(plan, &f.signal);
        let mut forecast = trailing.clone();
        if let Portfolio::SignThreshold { vol_forecast, .. } = &mut forecast.portfolio {
            *vol_forecast = Some(FORECAST_VOL.into());
        }
        for (k, mut spec) in [trailing.clone(), forecast.clone(), trailing, forecast]
            .into_iter()
            .enumerate()
        {
            if k >= 2 {
                spec.costs.bps = 0.0;
            }
            specs.push((f.signal.clone(), spec));
        }
    }
    let results = session.run(&specs, &[Part::Test], false);
    let metric = |arm: usize, f: fn(&lim_backtest::metrics::Metrics) -> f64| -> Vec<f64> {
        (0..summary.finalists.len())
            .map(|i| {
                results
                    .get(4 * i + arm)
                    .and_then(|r| r.metrics.first())
                    .map_or(f64::NAN, |(_, m)| f(m))
            })
            .collect()
    };
    Ok(Some(VolSizing {
        model: tuned.model,
        holdout_rank_ic: tuned.details.holdout_rank_ic,
        trailing_test_sharpe: metric(0, |m| m.sharpe),
        forecast_test_sharpe: metric(1, |m| m.sharpe),
        trailing_gross_test_sharpe: metric(2, |m| m.sharpe),
        forecast_gross_test_sharpe: metric(3, |m| m.sharpe),
        trailing_test_turnover: metric(0, |m| m.turnover),
        forecast_test_turnover: metric(1, |m| m.turnover),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn spearman_ranks_ties_by_their_mean_rank() {
        let r = super::spearman(&[1.0, 2.0, 2.0, 4.0], &[10.0, 20.0, 30.0, 40.0]);
        // Ranks 1, 2.5, 2.5, 4 against 1, 2, 3, 4.
        assert!((r - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-12, "{r}");
        assert!(super::spearman(&[1.0, 2.0], &[1.0, 2.0]).is_nan());
        let a: Vec<f64> = (0..30).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x * x).collect();
        assert!((super::spearman(&a, &b) - 1.0).abs() < 1e-12);
        let c: Vec<f64> = a.iter().map(|x| -x).collect();
        assert!((super::spearman(&a, &c) + 1.0).abs() < 1e-12);
    }

    /// The totals state the research issue's criteria: goals where most finalists beat always
    /// long (over all their seeds), and runs whose combination is at least its median finalist.
    #[test]
    fn totals_count_the_goals_and_runs_that_meet_the_criteria() {
        let run = |goal: &str, finalists: &[f64], combined: f64, beat: usize| super::GoalResult {
            goal: goal.into(),
            seed: 1,
            run: "r".into(),
            datasets: Vec::new(),
            trials: 10,
            finalists_test_sharpe: finalists.to_vec(),
            combined_test_sharpe: combined,
            always_long_test_sharpe: 0.5,
            finalists_beating_always_long: beat,
            finalists_z_vs_always_long: Vec::new(),
            combined_z_vs_always_long: None,
            dsr: 0.5,
            pbo: 0.5,
            validation_test_rank_correlation: 0.0,
            fitness_test_rank_correlation: 0.0,
            tried: None,
            test_period: None,
            seconds: 0.0,
            cpu_seconds: 0.0,
            llm_calls: 0,
            llm_tokens: 0,
            llm_usd: 0.0,
            vol_sizing: None,
            foundation: None,
        };
        let t = super::totals(&[
            // Goal a: 2 + 1 of 6 beat (not most); medians 0.6 and 0.2.
            run("a", &[0.6, 0.7, 0.1], 0.6, 2),
            run("a", &[0.1, 0.2, 0.3, 0.9], 0.1, 1),
            // Goal b: 3 of 3 beat; median 0.8, combination 0.9.
            run("b", &[0.7, 0.8, 0.9], 0.9, 3),
            // No combination: not counted among runs with one.
            run("c", &[], f64::NAN, 0),
        ]);
        assert_eq!(
            (t.goals_where_most_finalists_beat_always_long, t.goals),
            (1, 3)
        );
        assert_eq!(
            (
                t.runs_combined_at_least_median_finalist,
                t.runs_with_combination
            ),
            (2, 3)
        );
        assert_eq!(
            t.vol_sizing_finalists, None,
            "no run was sized by a forecast"
        );
        // The research goal's criteria: 1 of 3 goals is not most; 2 of 3 runs is.
        let c = t.goal_criteria();
        assert!(!c[0].holds && c[0].measured == "1 of 3 goals", "{c:?}");
        assert!(c[2].holds && c[2].measured == "2 of 3 runs", "{c:?}");
        // The four runs' correlations are all 0: no spread, no t.
        assert!(t.validation_test_rank_correlation_t.is_nan());
        assert!(
            !c[1].holds,
            "a correlation of 0 is not clearly positive: {c:?}"
        );
        let with_rho = |rho: f64| {
            let mut r = run("a", &[0.1], 0.1, 0);
            r.validation_test_rank_correlation = rho;
            r
        };
        let t2 = super::totals(&[with_rho(0.1), with_rho(0.3), with_rho(f64::NAN)]);
        // Mean 0.2, standard deviation 0.1414, standard error 0.1: t = 2.
        assert!((t2.validation_test_rank_correlation_t - 2.0).abs() < 1e-9);
        let c = t2.goal_criteria();
        assert!(c[1].holds && c[1].measured == "0.20, t 2.0", "{c:?}");
        let t3 = super::totals(&[with_rho(0.1), with_rho(0.35), with_rho(f64::NAN)]);
        assert!(
            t3.validation_test_rank_correlation_t < 2.0 && !t3.goal_criteria()[1].holds,
            "wider spread, t below 2"
        );
        // Sized by a forecast: pairs with a number on both sides are compared.
        let mut sized = run("a", &[0.1, 0.2, 0.3], 0.2, 0);
        sized.vol_sizing = Some(super::VolSizing {
            model: "m".into(),
            holdout_rank_ic: 0.5,
            trailing_test_sharpe: vec![0.1, 0.2, 0.3],
            forecast_test_sharpe: vec![0.4, 0.1, f64::NAN],
            trailing_gross_test_sharpe: vec![0.2, 0.3, 0.4],
            forecast_gross_test_sharpe: vec![0.6, 0.3, 0.1],
            trailing_test_turnover: vec![1.0, 2.0, 3.0],
            forecast_test_turnover: vec![2.0, 2.0, 5.0],
        });
        let t = super::totals(&[sized, run("b", &[0.5], 0.5, 0)]);
        assert_eq!(
            (t.vol_sizing_finalists_better, t.vol_sizing_finalists),
            (Some(1), Some(2))
        );
        let (a, b) = t.vol_sizing_mean_test_sharpe.unwrap();
        assert!(
            (a - 0.15).abs() < 1e-12 && (b - 0.25).abs() < 1e-12,
            "{a} {b}"
        );
        // The third finalist lacks a number, so no figure counts it.
        let (a, b) = t.vol_sizing_mean_gross_test_sharpe.unwrap();
        assert!(
            (a - 0.25).abs() < 1e-12 && (b - 0.45).abs() < 1e-12,
            "{a} {b}"
        );
        assert_eq!(t.vol_sizing_mean_test_turnover, Some((1.5, 2.0)));
        // Every strategy tried: counted per goal over its seeds, like the finalists.
        let with_tried = |goal: &str, beat: usize, scored: usize, median: f64, rho: f64| {
            let mut r = run(goal, &[0.1], 0.1, 0);
            r.tried = Some(super::Tried {
                scored,
                beating_always_long: beat,
                median_test_sharpe: median,
                best_test_sharpe: 1.0,
                finalists_reproduced: 1,
                validation_test_rank_correlation: rho,
                fitness_test_rank_correlation: 0.0,
            });
            r
        };
        let t = super::totals(&[
            // Goal a: 28 + 2 of 60 beat: half, not most.
            with_tried("a", 28, 40, 0.2, 0.1),
            with_tried("a", 2, 20, 0.4, 0.3),
            // Goal b: 11 of 20.
            with_tried("b", 11, 20, 0.6, f64::NAN),
            // Measured before the pool was kept: counts nothing.
            run("b", &[0.1], 0.1, 0),
        ]);
        assert_eq!((t.tried_beating_always_long, t.tried), (41, 80));
        assert_eq!(t.goals_where_most_tried_beat_always_long, 1);
        assert!((t.mean_tried_median_test_sharpe - 0.4).abs() < 1e-12);
        assert!((t.mean_tried_validation_test_rank_correlation - 0.2).abs() < 1e-12);
        assert!((t.tried_validation_test_rank_correlation_t - 2.0).abs() < 1e-9);
        // Against always long beyond chance: |z| at least 1.96 either way; untested ones
        // count nowhere.
        let with_z = |finalists: Vec<Option<f64>>, combined: Option<f64>| {
            let mut r = run("a", &[0.1], 0.1, 0);
            r.finalists_z_vs_always_long = finalists;
            r.combined_z_vs_always_long = combined;
            r
        };
        let t = super::totals(&[
            with_z(vec![Some(2.5), Some(1.9), None, Some(-1.96)], Some(2.0)),
            with_z(vec![Some(-3.0), Some(0.0)], Some(-1.0)),
            // Measured before the tests were kept.
            run("b", &[0.1], 0.1, 0),
        ]);
        assert_eq!(
            (
                t.finalists_above_always_long_beyond_chance,
                t.finalists_below_always_long_beyond_chance,
                t.finalists_tested_against_always_long
            ),
            (1, 2, 5)
        );
        assert_eq!(
            (
                t.runs_combined_above_always_long_beyond_chance,
                t.runs_combined_below_always_long_beyond_chance,
                t.runs_combined_tested_against_always_long
            ),
            (1, 0, 2)
        );
    }
}
