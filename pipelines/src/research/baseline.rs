//! Baselines: what a strategy must beat, measured on the same bars with the same costs and
//! lag. Always long (equal weight and volatility-targeted), time-series momentum (63 days and
//! 12-1 months), and for cross-sectional plans cross-sectional momentum and short-term
//! reversal.

use super::*;

/// The baselines of a plan, named, as specs with the plan's costs.
pub fn baselines(plan: &ExperimentPlan) -> Vec<(String, StrategySpec)> {
    let p = &plan.strategy;
    let with = |portfolio: Portfolio, signal: &str| {
        let mut q = p.clone();
        q.portfolio = portfolio;
        offline::spec_for(&q, signal)
    };
    let sign = Portfolio::SignThreshold {
        threshold: 0.0,
        target_vol: 0.10,
        vol_window: 60,
    };
    let mut out = vec![
        (
            "always long, equal weight".to_string(),
            with(Portfolio::TopK { k: 100_000 }, lim_tools::ALWAYS_LONG),
        ),
        (
            "always long, volatility-targeted".to_string(),
            with(sign.clone(), lim_tools::ALWAYS_LONG),
        ),
        (
            "time-series momentum, 63 days".to_string(),
            with(sign.clone(), "ts_sum(returns, 63)"),
        ),
        (
            "time-series momentum, 12-1 months".to_string(),
            with(sign, "ts_sum(returns, 252) - ts_sum(returns, 21)"),
        ),
    ];
    if plan.cross_sectional() {
        out.push((
            "cross-sectional momentum, 12-1 months".to_string(),
            with(
                p.portfolio.clone(),
                "rank(ts_sum(returns, 252) - ts_sum(returns, 21))",
            ),
        ));
        out.push((
            "short-term reversal, 5 days".to_string(),
            with(p.portfolio.clone(), "-rank(ts_sum(returns, 5))"),
        ));
    }
    out
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
}
