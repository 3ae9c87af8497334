//! The experiment plan, trials and their robust fitness, the leaderboard.

use super::*;

/// The experiment plan, shown before anything is spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentPlan {
    /// Markets, strategy family, book, costs and the drawdown limit.
    pub strategy: Plan,
    /// Bar frequency of the data.
    pub frequency: String,
    /// Instruments in the chosen datasets.
    pub instruments: usize,
    /// What a signal predicts and how often the book trades.
    pub horizon: String,
    /// Train / validation / sealed test shares and the embargo.
    pub splits: String,
    /// What "better" means.
    pub objective: String,
    /// Constraints from the goal and the defaults.
    pub constraints: Vec<String>,
    /// When the run stops.
    pub budgets: Budgets,
    /// Whether the plan asks for the foundation model.
    pub foundation_model: bool,
    /// Whose plan this is and what the checks of [`crate::plan_check`] found.
    #[serde(default)]
    pub review: String,
    /// Fitness lost per unit of correlation with the closest baseline beyond
    /// [`MAX_BASELINE_CORRELATION`] (see [`baseline_penalty`]); 0 in plans recorded before.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub baseline_penalty: f64,
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl ExperimentPlan {
    /// Whether the book is cross-sectional (ranks across instruments).
    pub fn cross_sectional(&self) -> bool {
        !matches!(self.strategy.portfolio, Portfolio::SignThreshold { .. })
    }

    /// The fields strategies may use, with `added` (the foundation model's predictions).
    pub fn fields<'a>(&self, added: &'a [String]) -> Vec<&'a str> {
        let mut f = if self.cross_sectional() {
            vec!["open", "high", "low", "close", "volume", "vwap", "returns"]
        } else {
            vec!["returns"]
        };
        f.extend(added.iter().map(String::as_str));
        f
    }
}

/// One strategy tried, with its metrics on training and validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The signal (canonical form).
    pub signal: String,
    /// The iteration that proposed it (0: the seeds).
    pub generation: usize,
    /// Its parents (lineage).
    pub parents: Vec<String>,
    /// Robust fitness (see [`fitness`]); absent when it could not run or had no evidence.
    pub fitness: Option<f64>,
    /// Training metrics.
    pub train: Option<Metrics>,
    /// Validation metrics.
    pub validation: Option<Metrics>,
    /// Why it could not run.
    pub error: Option<String>,
    /// Why it ran but has no fitness: a part without enough active bars, an undefined Sharpe
    /// ratio. Such a strategy ranks below every scored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// Correlation of its validation returns with the always-long book of the same
    /// construction (see [`MAX_ALWAYS_LONG_CORRELATION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_long_correlation: Option<f64>,
    /// Its Sharpe ratio on each selection fold of training and validation (see
    /// [`lim_backtest::folds`]); empty in runs recorded before folds existed, which are
    /// scored on the two parts alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folds: Vec<Fold>,
    /// Nodes in its expression tree (0 in runs recorded before it was kept: no penalty).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nodes: usize,
    /// Its positions depend on the instruments' price levels
    /// ([`lim_backtest::session::Session::level_dependent`]); false in runs recorded before
    /// the check.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub level_dependent: bool,
    /// The baseline its training and validation returns correlate with most (either way), and
    /// that correlation (see [`baseline_penalty`]); absent in runs recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest_baseline: Option<(String, f64)>,
    /// For a ranked book, how many times a year its holdings changed over training and
    /// validation ([`lim_backtest::session::Session::holding_changes_per_year`]); absent for
    /// other books and in runs recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_changes_per_year: Option<f64>,
}

/// Why a book that reads price levels is rejected.
pub const LEVEL_DEPENDENT: &str = "looks ahead: its positions depend on the instruments' price levels (multiplying an instrument's prices by a constant changes them), and a back-adjusted price level is set by later splits, dividends and rolls; use returns or ratios of prices, and no dollar-volume universe filter (min_dollar_volume, top_liquid) on adjusted prices";

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Trial {
    /// Sets `fitness` and `rejected` from the metrics, by [`fitness`] less the plan's
    /// [`baseline_penalty`]. Reports and the final
    /// evaluator call it again on journaled trials, so a run recorded by older code is ranked
    /// by today's rules.
    pub fn score(&mut self, experiment: &ExperimentPlan) {
        let plan = &experiment.strategy;
        (self.fitness, self.rejected) = match (&self.train, &self.validation, &self.error) {
            (Some(_), Some(_), None) if self.level_dependent => {
                (None, Some(LEVEL_DEPENDENT.to_string()))
            }
            (Some(t), Some(v), None) => match fitness(plan, t, v, &self.folds, self.nodes) {
                // A long-only top-k book moves with the market by construction; its value is
                // in its excess over always-long, which the report shows. A book that can take
                // the other side (sign, long-short) and does not is degenerate.
                Ok(_)
                    if !matches!(plan.portfolio, Portfolio::TopK { .. })
                        && self
                            .always_long_correlation
                            .is_some_and(|c| c.abs() > MAX_ALWAYS_LONG_CORRELATION) =>
                {
                    (
                        None,
                        Some(format!(
                            "degenerate: its validation returns move with the always-long book (correlation {:.2}); beta, not a signal",
                            self.always_long_correlation.unwrap_or(f64::NAN)
                        )),
                    )
                }
                Ok(_)
                    if self
                        .holding_changes_per_year
                        .is_some_and(|c| c < MIN_HOLDING_CHANGES_PER_YEAR) =>
                {
                    (
                        None,
                        Some(format!(
                            "degenerate: a fixed allocation, its holdings changed {:.1} times a year over training and validation; what it earned is what those names earned, not a signal",
                            self.holding_changes_per_year.unwrap_or(f64::NAN)
                        )),
                    )
                }
                Ok(f) => (
                    Some(
                        f - baseline_penalty(
                            experiment.baseline_penalty,
                            self.closest_baseline.as_ref(),
                        ),
                    ),
                    None,
                ),
                Err(why) => (None, Some(why)),
            },
            _ => (None, None),
        };
    }
}

/// What one agent did in one node execution: the report's account of the model at work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentActivity {
    /// The node execution, e.g. `generate#2`.
    pub exec: String,
    /// How tool calls travelled.
    pub protocol: Protocol,
    /// Model replies.
    pub replies: u32,
    /// The tools it called, in order.
    pub tool_calls: Vec<String>,
    /// Calls whose tool reported a failure (bad arguments, unknown tool, refused).
    pub failed_tool_calls: usize,
    /// Replies that could not be used, and why.
    pub rejected_replies: Vec<String>,
    /// Whether it ended with a valid answer.
    pub answered: bool,
    /// Tokens it used.
    pub tokens: u64,
}

/// A critique and the loop's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critique {
    /// Which iteration it read.
    pub iteration: u32,
    /// What the results say.
    pub diagnosis: String,
    /// What to try next.
    pub hypotheses: Vec<String>,
    /// Why the loop stops, if it does.
    pub stop: Option<String>,
    /// The best robust fitness so far (-inf before any strategy had one).
    #[serde(with = "lim_backtest::nonfinite")]
    pub best_fitness: f64,
    /// Its signal.
    pub best_signal: String,
    /// Strategies tried so far.
    pub trials: usize,
    /// LLM spend so far.
    pub spent: Spent,
}

/// A finalist's metrics on validation and on the sealed test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finalist {
    /// The signal.
    pub signal: String,
    /// Validation metrics.
    pub validation: Metrics,
    /// Test metrics: computed once, at the end.
    pub test: Metrics,
    /// Against the always-long (equal weight) baseline on the test part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_always_long: Option<VersusBaseline>,
    /// The baseline whose training and validation returns its own correlate with most (either
    /// way), and that correlation; the report flags one beyond [`MAX_BASELINE_CORRELATION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest_baseline: Option<(String, f64)>,
}

/// A strategy whose training and validation returns correlate with a baseline's beyond this
/// (either way) is that baseline found again, not a new signal: the report says so, and the
/// fitness charges for it when the plan asks (see [`baseline_penalty`]).
pub use lim_backtest::baseline::MAX_BASELINE_CORRELATION;

/// The fitness a trial loses for being its closest baseline found again, at `per_unit` of
/// fitness per unit of correlation beyond [`MAX_BASELINE_CORRELATION`] (either way): at 2.5, a
/// copy of 12-1 momentum (correlation 1) pays 0.25 and one at 0.95 pays 0.125. What it found
/// is real, but nothing the baselines do not already hold; between two strategies that earn
/// alike, the new one ranks first. 0 when the correlation is unknown.
pub fn baseline_penalty(per_unit: f64, closest: Option<&(String, f64)>) -> f64 {
    closest.map_or(0.0, |(_, c)| {
        per_unit * (c.abs() - MAX_BASELINE_CORRELATION).max(0.0)
    })
}

impl Finalist {
    /// The sentence saying this finalist is a baseline found again, if it is one.
    pub fn rediscovered(&self) -> Option<String> {
        let (name, c) = self
            .closest_baseline
            .as_ref()
            .filter(|(_, c)| c.abs() > MAX_BASELINE_CORRELATION)?;
        Some(format!(
            "is the baseline {name}{} found again (correlation {c:.2} over training and validation): not a new signal.",
            if *c < 0.0 { " reversed" } else { "" }
        ))
    }
}

/// A ranked book whose holdings change fewer times a year than this is a fixed allocation: it
/// is rejected like any degenerate signal.
pub use lim_backtest::session::MIN_HOLDING_CHANGES_PER_YEAR;

/// A strategy whose validation returns correlate with the always-long book of its own
/// construction beyond this (either way) is holding the market, not following a signal (e.g. a
/// signal that is always positive under a sign book): it is rejected, except in long-only
/// top-k books, which move with the market by construction.
pub const MAX_ALWAYS_LONG_CORRELATION: f64 = 0.9;

/// Active bars (a book and a known return) a part needs before its Sharpe ratio counts as
/// evidence, for a strategy and for a plan's universe alike.
pub const MIN_ACTIVE_BARS: usize = 20;

/// Robustness first: a lower confidence bound of the Sharpe ratio across the selection folds
/// (see [`fold_lower_bound`]), less 5× any validation drawdown beyond the plan's limit, less
/// the [`complexity_penalty`] of its `nodes` ([`Trial::score`] also takes the
/// [`baseline_penalty`]). A trial recorded without folds is scored by the
/// worse of its training and validation Sharpe ratios. Turnover is not penalised again: its
/// costs are in every return.
///
/// # Errors
/// Why there is no evidence to score: a part with fewer than [`MIN_ACTIVE_BARS`] active bars
/// (a strategy that never traded in validation must not win on its training Sharpe), or a
/// Sharpe ratio that is not a number (constant returns).
pub fn fitness(
    plan: &Plan,
    train: &Metrics,
    valid: &Metrics,
    folds: &[Fold],
    nodes: usize,
) -> Result<f64, String> {
    for (part, m) in [("training", train), ("validation", valid)] {
        if m.bars < MIN_ACTIVE_BARS {
            return Err(format!(
                "no trades to judge in the {part} part: {} active bars of {} (at least {MIN_ACTIVE_BARS} needed)",
                m.bars,
                m.bars + m.inactive_bars
            ));
        }
        if !m.sharpe.is_finite() {
            return Err(format!(
                "the {part} Sharpe ratio is undefined (returns without variation over {} bars)",
                m.bars
            ));
        }
    }
    let excess = plan.max_drawdown.map_or(0.0, |limit| {
        let dd = valid.max_dd.abs();
        if dd.is_finite() {
            (dd - limit).max(0.0)
        } else {
            0.0
        }
    });
    let robust = if folds.is_empty() {
        train.sharpe.min(valid.sharpe)
    } else {
        fold_lower_bound(folds)
    };
    Ok(robust - DRAWDOWN_PENALTY * excess - complexity_penalty(nodes))
}

/// Fitness lost per unit of validation drawdown beyond the plan's limit.
pub const DRAWDOWN_PENALTY: f64 = 5.0;

/// Expression nodes that cost nothing: `rank(-ts_sum(returns, 5))` has 5.
pub const FREE_NODES: usize = 8;

/// Fitness lost per expression node beyond [`FREE_NODES`]: between two strategies that earn
/// alike, the simpler one is less likely to be fitted to noise (AlphaAgent's complexity
/// regulariser; measured on the research benchmark, see docs/research.md).
pub const NODE_PENALTY: f64 = 0.01;

/// The complexity penalty of an expression of `nodes` nodes (0 when unknown).
pub fn complexity_penalty(nodes: usize) -> f64 {
    NODE_PENALTY * nodes.saturating_sub(FREE_NODES) as f64
}

/// How many standard errors below the mean fold Sharpe ratio the fitness sits.
pub const FOLD_CONFIDENCE: f64 = 1.0;

/// The mean Sharpe ratio across folds less [`FOLD_CONFIDENCE`] standard errors of it: a
/// strategy that earns in every period beats one that earned the same on average in a few.
/// A fold with fewer than [`MIN_ACTIVE_BARS`] active bars, or an undefined Sharpe ratio,
/// counts as zero: it earned nothing there.
pub fn fold_lower_bound(folds: &[Fold]) -> f64 {
    let s: Vec<f64> = folds
        .iter()
        .map(|f| {
            if f.bars >= MIN_ACTIVE_BARS && f.sharpe.is_finite() {
                f.sharpe
            } else {
                0.0
            }
        })
        .collect();
    let k = s.len() as f64;
    let mean = s.iter().sum::<f64>() / k;
    if s.len() < 2 {
        return mean;
    }
    let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1.0);
    mean - FOLD_CONFIDENCE * (var / k).sqrt()
}

/// What [`fitness`] computes, in words, for the experiment plan: built from the constants it
/// uses, so the plan cannot say one thing while the fitness does another. `baseline_penalty`
/// is the plan's charge per unit of correlation with the closest baseline (0: none).
pub fn objective(baseline_penalty: f64) -> String {
    let errors = if FOLD_CONFIDENCE == 1.0 {
        "one standard error".to_string()
    } else {
        format!("{FOLD_CONFIDENCE} standard errors")
    };
    let folds = match lim_backtest::session::SELECTION_FOLDS {
        5 => "five".to_string(),
        n => n.to_string(),
    };
    let baseline = if baseline_penalty > 0.0 {
        format!(
            ", and {baseline_penalty} per unit of correlation with the closest baseline beyond {MAX_BASELINE_CORRELATION}"
        )
    } else {
        String::new()
    };
    format!(
        "robust Sharpe: a lower bound (mean less {errors}) of the Sharpe ratio over {folds} consecutive folds of training and validation, less {DRAWDOWN_PENALTY}× any validation drawdown beyond the limit and {NODE_PENALTY} per expression node beyond {FREE_NODES}{baseline}"
    )
}

/// The deflated Sharpe ratio of the best validation Sharpe among `trials`, from their Sharpe
/// ratios alone (returns taken as normal): what the critic sees during the loop. The report
/// uses the exact statistic over every trial's returns, computed by the final evaluator.
/// `periods` is the bars a year the Sharpe ratios were annualised with (the universe's
/// [`lim_backtest::session::Session::periods`]).
pub fn approximate_dsr(trials: &[Trial], periods: f64) -> f64 {
    let srs: Vec<(f64, usize)> = trials
        .iter()
        .filter_map(|t| t.validation)
        .filter(|v| v.sharpe.is_finite())
        .map(|v| (v.sharpe / periods.sqrt(), v.bars))
        .collect();
    if srs.len() < 2 {
        return f64::NAN;
    }
    let n = srs.len() as f64;
    let mean = srs.iter().map(|s| s.0).sum::<f64>() / n;
    let var = srs.iter().map(|s| (s.0 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let (sr, bars) = srs
        .iter()
        .copied()
        .fold((f64::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a });
    lim_backtest::stats::deflated_sharpe(sr, bars, 0.0, 3.0, srs.len(), var).dsr
}

/// Trial indices best first: by robust fitness, ties by order tried.
pub fn leaderboard(trials: &[Trial]) -> Vec<usize> {
    let fit = |t: &Trial| t.fitness.unwrap_or(f64::NEG_INFINITY);
    let mut order: Vec<usize> = (0..trials.len()).collect();
    order.sort_by(|&a, &b| fit(&trials[b]).total_cmp(&fit(&trials[a])).then(a.cmp(&b)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objective_says_what_the_fitness_does() {
        // The words every recorded plan carries; a change to a constant must show here.
        assert_eq!(
            objective(0.0),
            "robust Sharpe: a lower bound (mean less one standard error) of the Sharpe ratio over five consecutive folds of training and validation, less 5× any validation drawdown beyond the limit and 0.01 per expression node beyond 8"
        );
        assert!(
            objective(2.5).ends_with(
                ", and 2.5 per unit of correlation with the closest baseline beyond 0.9"
            ),
            "{}",
            objective(2.5)
        );
    }

    fn metrics(sharpe: f64, max_dd: f64) -> Metrics {
        Metrics {
            bars: 250,
            inactive_bars: 0,
            ann_return: 0.1,
            ann_vol: 0.1,
            sharpe,
            sortino: sharpe,
            calmar: 1.0,
            max_dd,
            max_dd_bars: 10,
            turnover: 0.1,
            hit_rate: 0.5,
            exposure: 1.0,
            ic: 0.0,
            rank_ic: 0.0,
            icir: 0.0,
            rank_icir: 0.0,
        }
    }

    fn folds(sharpes: &[f64]) -> Vec<Fold> {
        sharpes
            .iter()
            .map(|&sharpe| Fold { bars: 200, sharpe })
            .collect()
    }

    fn plan() -> Plan {
        lim_agents::offline::plan("trend in Chinese commodity futures", &[])
    }

    fn experiment(baseline_penalty: f64) -> ExperimentPlan {
        ExperimentPlan {
            strategy: plan(),
            frequency: "1d".into(),
            instruments: 30,
            horizon: "next bar".into(),
            splits: "60/20/20".into(),
            objective: "robust Sharpe".into(),
            constraints: Vec::new(),
            budgets: Budgets::default(),
            foundation_model: false,
            review: String::new(),
            baseline_penalty,
        }
    }

    /// An unscored trial of `signal` that earned a Sharpe ratio of about 0.9 in every fold.
    fn steady(signal: &str, always_long_correlation: Option<f64>) -> Trial {
        Trial {
            signal: signal.into(),
            generation: 1,
            parents: Vec::new(),
            fitness: None,
            train: Some(metrics(1.0, -0.05)),
            validation: Some(metrics(1.0, -0.05)),
            error: None,
            rejected: None,
            always_long_correlation,
            folds: folds(&[0.8, 0.9, 1.0, 0.9, 0.8]),
            nodes: 3,
            level_dependent: false,
            holding_changes_per_year: None,
            closest_baseline: None,
        }
    }

    #[test]
    fn a_baseline_found_again_ranks_below_a_new_signal_that_earns_alike() {
        let trial = |closest: Option<(&str, f64)>, per_unit: f64| {
            let mut t = steady("ts_sum(returns, 60)", Some(0.2));
            t.closest_baseline = closest.map(|(n, c)| (n.to_string(), c));
            t.score(&experiment(per_unit));
            t.fitness.unwrap()
        };
        let new = trial(Some(("time-series momentum, 63 days", 0.6)), 2.5);
        assert_eq!(new, trial(None, 2.5), "below 0.9 costs nothing");
        let copy = trial(Some(("time-series momentum, 63 days", 1.0)), 2.5);
        assert!((new - copy - 0.25).abs() < 1e-12, "{new} {copy}");
        let near = trial(Some(("time-series momentum, 63 days", 0.95)), 2.5);
        assert!((new - near - 0.125).abs() < 1e-12, "{new} {near}");
        let reversed = trial(Some(("short-term reversal, 5 days", -0.95)), 2.5);
        assert_eq!(near, reversed, "either way");
        let off = trial(Some(("time-series momentum, 63 days", 1.0)), 0.0);
        assert_eq!(off, new, "the default only reports it");
    }

    #[test]
    fn a_fixed_allocation_is_rejected_and_a_slow_signal_is_not() {
        let trial = |changes: Option<f64>| {
            let mut t = steady("rank(ts_sum(high, 250))", Some(0.95));
            t.holding_changes_per_year = changes;
            let mut e = experiment(0.0);
            e.strategy.portfolio = Portfolio::TopK { k: 2 };
            t.score(&e);
            t
        };
        let fixed = trial(Some(0.4));
        assert_eq!(fixed.fitness, None);
        assert!(
            fixed
                .rejected
                .as_deref()
                .is_some_and(|r| r.contains("fixed allocation") && r.contains("0.4 times a year")),
            "{:?}",
            fixed.rejected
        );
        // Twice a year is slow, not fixed; a run recorded before the count is not judged by it.
        for changes in [Some(2.0), None] {
            let t = trial(changes);
            assert!(
                t.fitness.is_some() && t.rejected.is_none(),
                "{changes:?}: {t:?}"
            );
        }
    }

    #[test]
    fn a_strategy_that_earns_in_every_fold_beats_one_that_earned_more_once() {
        let (t, v) = (metrics(1.0, -0.05), metrics(1.0, -0.05));
        let steady = fitness(&plan(), &t, &v, &folds(&[0.8, 0.9, 1.0, 0.9, 0.8]), 5).unwrap();
        let lucky = fitness(&plan(), &t, &v, &folds(&[4.0, -0.5, -0.4, 0.3, 1.6]), 5).unwrap();
        assert!(steady > lucky, "steady {steady} vs lucky {lucky}");
        // Mean 0.88, standard error 0.0374: the bound is their difference.
        assert!((steady - (0.88 - (0.028f64 / 4.0 / 5.0).sqrt())).abs() < 1e-12);
    }

    #[test]
    fn a_fold_without_trades_counts_as_earning_nothing() {
        let mut f = folds(&[1.0, 1.0, 1.0, 1.0, 1.0]);
        assert!((fold_lower_bound(&f) - 1.0).abs() < 1e-12);
        f[2] = Fold {
            bars: 3,
            sharpe: 9.0,
        };
        // Mean 0.8, standard deviation sqrt(0.2), standard error 0.2.
        assert!((fold_lower_bound(&f) - 0.6).abs() < 1e-12);
        f[2].sharpe = f64::NAN;
        f[2].bars = 200;
        assert!((fold_lower_bound(&f) - 0.6).abs() < 1e-12);
    }

    #[test]
    fn complexity_costs_fitness_beyond_the_free_nodes() {
        let (t, v, f) = (metrics(1.0, -0.05), metrics(1.0, -0.05), folds(&[1.0; 5]));
        let simple = fitness(&plan(), &t, &v, &f, FREE_NODES).unwrap();
        let baroque = fitness(&plan(), &t, &v, &f, FREE_NODES + 30).unwrap();
        assert!((simple - 1.0).abs() < 1e-12);
        assert!((simple - baroque - 0.3).abs() < 1e-12);
    }

    #[test]
    fn a_run_recorded_without_folds_is_scored_on_its_two_parts() {
        let f = fitness(&plan(), &metrics(0.4, -0.05), &metrics(1.2, -0.05), &[], 0).unwrap();
        assert!((f - 0.4).abs() < 1e-12);
    }
}
