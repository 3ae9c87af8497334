//! The critic's diagnostics: for strategies already tried in this run, their years, their
//! walk-forward folds, how their rank IC decays with the horizon, and how alike their
//! validation returns are. Training and validation only; the test stays sealed.

use std::sync::Arc;

use lim_backtest::metrics::{Metrics, Year, co_move};

use lim_backtest::spec::StrategySpec;
use lim_market::Part;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailureKind, ResearchLog, Tool, ToolOutcome, Universe};

/// Arguments of `diagnose`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiagnoseArgs {
    /// Strategies tried in this run (1 to 8), as their specs; the first is compared with the rest.
    pub strategies: Vec<StrategySpec>,
}

/// One strategy's diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The signal.
    pub signal: String,
    /// Training and validation metrics (turnover and exposure among them).
    pub metrics: Vec<(Part, Metrics)>,
    /// Calendar years of training and validation.
    pub years: Vec<Year>,
    /// Four walk-forward folds of the training part.
    pub folds: Vec<Metrics>,
    /// Mean rank IC against the return over 1, 5, 10 and 20 bars.
    pub ic_decay: Vec<(usize, f64)>,
}

/// What `diagnose` returns.
#[derive(Debug, Clone, Serialize)]
pub struct DiagnoseReport {
    /// Per strategy, in the order asked.
    pub strategies: Vec<Diagnosis>,
    /// Correlation of daily net returns over validation bars where both traded, row by row
    /// (NaN, written null, where fewer than 20 such bars exist).
    pub correlation: Vec<Vec<f64>>,
}

/// Diagnostics of strategies already tried.
#[derive(Debug, Clone)]
pub struct Diagnose {
    /// The universe.
    pub universe: Arc<Universe>,
    /// What the run has tried: only those may be diagnosed (new ideas are backtested, and
    /// counted, in the strategist's step).
    pub log: Arc<ResearchLog>,
}

impl Tool for Diagnose {
    const NAME: &'static str = "diagnose";
    type Args = DiagnoseArgs;
    type Output = DiagnoseReport;

    fn description(&self) -> String {
        "Diagnose strategies already tried in this run: per-year returns, four walk-forward folds of training, \
         rank IC decay over 1-20 bars, turnover and exposure, and the correlation of their validation returns. \
         Training and validation only."
            .into()
    }

    async fn call(&self, args: DiagnoseArgs) -> ToolOutcome<DiagnoseReport> {
        if args.strategies.is_empty() || args.strategies.len() > 8 {
            return ToolOutcome::failed(
                FailureKind::InvalidArguments,
                format!(
                    "give between 1 and 8 strategies, not {}",
                    args.strategies.len()
                ),
            );
        }
        let tried = self.log.trials();
        if let Some(s) = args
            .strategies
            .iter()
            .find(|s| !tried.iter().any(|t| t.signal == s.signal))
        {
            return ToolOutcome::failed(
                FailureKind::InvalidArguments,
                format!(
                    "'{}' has not been tried in this run; diagnose strategies from the leaderboard",
                    s.signal
                ),
            );
        }
        let Some(session) = self.universe.current() else {
            return ToolOutcome::failed(
                FailureKind::InvalidArguments,
                "no universe yet: call choose_universe first",
            );
        };
        let specs: Vec<(String, StrategySpec)> = args
            .strategies
            .into_iter()
            .map(|s| (s.signal.clone(), s))
            .collect();
        let work = tokio::task::spawn_blocking(move || {
            let results = session.run(&specs, &[Part::Train, Part::Validation], true);
            let valid = session.splits().range(Part::Validation);
            let returns: Vec<Vec<f64>> = results
                .iter()
                .map(|r| {
                    r.book
                        .as_ref()
                        .map(|b| b.net[valid.clone()].to_vec())
                        .unwrap_or_default()
                })
                .collect();
            let correlation = returns
                .iter()
                .map(|a| returns.iter().map(|b| co_move(a, b).correlation).collect())
                .collect();
            DiagnoseReport {
                strategies: results
                    .into_iter()
                    .map(|r| Diagnosis {
                        signal: r.name,
                        metrics: r.metrics,
                        years: r.years,
                        folds: r.folds,
                        ic_decay: r.ic_decay,
                    })
                    .collect(),
                correlation,
            }
        });
        match work.await {
            Ok(report) => ToolOutcome::Done { result: report },
            Err(e) => {
                ToolOutcome::failed(FailureKind::Failed, format!("the diagnosis failed: {e}"))
            }
        }
    }
}
