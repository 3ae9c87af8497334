//! The backtest tool: strategy specs in, metrics on the training and validation parts out.
//! The test part is sealed: the tool refuses it, whatever the model asks.

use std::sync::Arc;

use lim_backtest::metrics::CoMove;
use lim_backtest::session::{MultipleTesting, SplitInfo, StrategyResult};
use lim_backtest::spec::StrategySpec;
use lim_market::Part;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailureKind, Tool, ToolOutcome};

/// Arguments of `backtest`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestArgs {
    /// The strategies to test, at most 50 per call.
    pub strategies: Vec<StrategySpec>,
    /// Must be false: the test period is sealed until the research run ends.
    #[serde(default)]
    pub include_test: bool,
}

/// What `backtest` returns.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// The parts measured.
    pub splits: Vec<SplitInfo>,
    /// One result per strategy, in order.
    pub strategies: Vec<StrategyResult>,
    /// Over the strategies of this call.
    pub multiple_testing: Option<MultipleTesting>,
    /// Per strategy, how its validation returns move with the always-long book of the same
    /// construction and costs: a correlation near 1 is beta dressed as a signal.
    pub always_long: Vec<CoMove>,
    /// Per strategy, the baseline its training and validation returns correlate with most
    /// (either way); beyond 0.9 it is that baseline found again, which reports say (and a
    /// research run can charge for in the fitness). Null for a strategy that did not run.
    pub closest_baseline: Vec<Option<ClosestBaseline>>,
}

/// A strategy's closest baseline (see [`lim_backtest::baseline::closest`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClosestBaseline {
    /// The baseline's name.
    pub baseline: String,
    /// The correlation of the returns (negative: the baseline reversed).
    pub correlation: f64,
}

pub use lim_backtest::baseline::{ALWAYS_LONG, always_long};

/// Backtests strategy specs in the universe chosen last (one universe, one split), recording
/// every strategy it runs in the research log.
#[derive(Debug, Clone)]
pub struct BacktestTool {
    /// The universe (see `choose_universe`).
    pub universe: Arc<crate::Universe>,
    /// Where every trial is recorded.
    pub log: Arc<crate::ResearchLog>,
    /// Another place to run the backtests (a cluster), used while the universe can be loaded
    /// there (see [`crate::Universe::recipe`]); in this process otherwise. Results are the same
    /// bit for bit either way.
    pub remote: Option<Arc<dyn RemoteBacktests>>,
    /// The run's verdict on each strategy, so that the log (and the `leaderboard` tool) ranks
    /// what this call tried as the run will; without one they are recorded unscored.
    pub scorer: Option<Arc<dyn Scorer>>,
}

/// How a research run judges a strategy: its robust fitness, or why it has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// The fitness the run ranks by.
    pub fitness: Option<f64>,
    /// Why the run gives it no fitness.
    pub rejected: Option<String>,
}

/// The run's judge of backtested strategies (`lim_pipelines` scores by its plan's fitness).
pub trait Scorer: Send + Sync + std::fmt::Debug {
    /// One verdict per strategy of `report`, in order.
    fn score(&self, report: &BacktestReport) -> Vec<Verdict>;
}

/// Backtests run elsewhere: another process, a cluster (`lim_pipelines::cluster`).
pub trait RemoteBacktests: Send + Sync + std::fmt::Debug {
    /// Runs `specs` on the universe `recipe` loads, measuring `parts` with the selection
    /// folds, and returns one result per spec, in order, each with its book.
    ///
    /// # Errors
    /// Why the work could not be done there (the message reaches the caller).
    fn run(
        &self,
        recipe: &crate::ChooseUniverseArgs,
        specs: &[(String, StrategySpec)],
        parts: &[Part],
    ) -> Result<Vec<lim_backtest::session::StrategyResult>, String>;
}

impl Tool for BacktestTool {
    const NAME: &'static str = "backtest";
    type Args = BacktestArgs;
    type Output = BacktestReport;

    fn description(&self) -> String {
        "Backtest strategy specs (signal expression, universe, portfolio, rebalancing, lag, costs, limits) and return \
         their metrics on the training and validation periods, with the Sharpe ratio on each of five consecutive \
         folds of them (`selection_folds`; a top-k book's folds start where at least twice k instruments of its \
         universe trade). The test period is sealed. `level_dependent: true` means the \
         positions depend on the instruments' price levels, which back-adjustment sets from later events: such a \
         strategy looks ahead and is rejected; use returns or ratios of prices, and no dollar-volume universe filter \
         on adjusted prices. `holding_changes_per_year` counts how often a ranked book's holdings changed: below 1 \
         it is a fixed allocation (e.g. ranking price levels across instruments), not a signal, and is rejected. \
         `closest_baseline` names the \
         simple baseline (momentum, reversal, always long) each strategy's returns correlate with most: beyond 0.9 \
         it is that baseline found again, not a new idea."
            .into()
    }

    async fn call(&self, args: BacktestArgs) -> ToolOutcome<BacktestReport> {
        if args.include_test {
            return ToolOutcome::failed(
                FailureKind::Sealed,
                "the test period is sealed: it is evaluated once, on the finalists, when the run ends; use the validation metrics to choose",
            );
        }
        if args.strategies.is_empty() || args.strategies.len() > 50 {
            return ToolOutcome::failed(
                FailureKind::InvalidArguments,
                format!(
                    "give between 1 and 50 strategies, not {}",
                    args.strategies.len()
                ),
            );
        }
        let Some(session) = self.universe.current() else {
            return ToolOutcome::failed(
                FailureKind::InvalidArguments,
                "no universe yet: call choose_universe first",
            );
        };
        let log = self.log.clone();
        let specs: Vec<(String, StrategySpec)> = args
            .strategies
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("s{}", i + 1), s))
            .collect();
        let parts = [Part::Train, Part::Validation];
        let remote = self.remote.clone().zip(self.universe.recipe());
        let scorer = self.scorer.clone();
        let work = tokio::task::spawn_blocking(move || {
            let results = match &remote {
                Some((r, recipe)) => r.run(recipe, &specs, &parts)?,
                None => session.run_with_folds(&specs, &parts),
            };
            let mt = session.multiple_testing(&results);
            let always_long = session.always_long_co_move(&results, Part::Validation);
            let closest_baseline = session
                .closest_baselines(&results)
                .into_iter()
                .map(|c| {
                    c.map(|(baseline, correlation)| ClosestBaseline {
                        baseline,
                        correlation,
                    })
                })
                .collect();
            let report = BacktestReport {
                splits: session.split_info(&parts),
                strategies: results,
                multiple_testing: mt,
                always_long,
                closest_baseline,
            };
            // Every result is tried (the deflated statistics count it), with the run's verdict
            // when it has a judge; one that reads adjusted price levels is kept out of the
            // leaderboard by its flag.
            let verdicts = scorer.map(|s| s.score(&report)).unwrap_or_default();
            for (i, r) in report.strategies.iter().enumerate() {
                if let [(_, train), (_, validation)] = r.metrics.as_slice() {
                    let verdict = verdicts.get(i).cloned().unwrap_or_default();
                    log.record(crate::Trial {
                        signal: r.spec.signal.clone(),
                        generation: 0,
                        parents: Vec::new(),
                        train: *train,
                        validation: *validation,
                        level_dependent: r.level_dependent,
                        fitness: verdict.fitness,
                        rejected: verdict.rejected,
                    });
                }
            }
            Ok::<_, String>(report)
        });
        match work.await {
            Ok(Ok(report)) => ToolOutcome::Done { result: report },
            Ok(Err(why)) => ToolOutcome::failed(
                FailureKind::Failed,
                format!("the backtests could not run on the cluster: {why}"),
            ),
            Err(e) => ToolOutcome::failed(FailureKind::Failed, format!("the backtest failed: {e}")),
        }
    }
}
