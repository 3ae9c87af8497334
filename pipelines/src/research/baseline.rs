//! Baselines in a research run: what a strategy must beat, measured on the same bars with the
//! same costs and lag (the books are `lim_backtest::baseline`'s), and how finalists compare.

use super::*;

/// The baselines of a plan (see [`lim_backtest::baseline::baselines`]), with the plan's
/// costs and lag, their windows in days of `bars_per_day` bars (the universe's
/// [`lim_backtest::session::Session::bars_per_day`]).
pub fn baselines(plan: &ExperimentPlan, bars_per_day: usize) -> Vec<(String, StrategySpec)> {
    lim_backtest::baseline::baselines(
        &offline::spec_for(&plan.strategy, lim_tools::ALWAYS_LONG),
        bars_per_day,
    )
}

/// A baseline's validation and sealed-test metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// What it is.
    pub name: String,
    /// Its signal.
    pub signal: String,
    /// Validation metrics.
    pub validation: Metrics,
    /// Test metrics (a baseline is not selected, so reading its test costs no honesty).
    pub test: Metrics,
}

/// A finalist against the always-long (equal weight) baseline on the sealed test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VersusBaseline {
    /// Annualised return less the baseline's.
    #[serde(with = "lim_backtest::nonfinite")]
    pub excess_return: f64,
    /// Correlation and beta of its test returns with the baseline's.
    pub co_move: lim_backtest::metrics::CoMove,
    /// Annualised information ratio over the baseline on the test.
    #[serde(with = "lim_backtest::nonfinite", default = "nan")]
    pub information_ratio: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// The finalists held together, equal risk (weights inverse to validation volatility),
/// evaluated once on the sealed test beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Combined {
    /// The finalists held.
    pub members: Vec<String>,
    /// Their weights (sum to one).
    pub weights: Vec<f64>,
    /// Validation metrics.
    pub validation: Metrics,
    /// Test metrics.
    pub test: Metrics,
}
