//! Strategy specifications: everything that turns a signal into a book, as JSON with a
//! JSON Schema (the structured output an LLM will be asked for).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A complete strategy: signal, universe, portfolio construction, timing, costs and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// The signal, an expression in LIM's strategy language, e.g. `rank(ts_sum(returns, 60))`.
    pub signal: String,
    /// Which instruments may be held.
    #[serde(default)]
    pub universe: Universe,
    /// How signal values become weights.
    #[serde(default)]
    pub portfolio: Portfolio,
    /// Rebalance every this many bars; weights are held in between.
    #[serde(default = "one")]
    pub rebalance_every: usize,
    /// Bars between the signal and the trade: 1 means a signal seen at the close of a bar is
    /// traded at the next close. At least 1.
    #[serde(default = "one")]
    pub execution_lag: usize,
    /// Trading costs.
    #[serde(default)]
    pub costs: Costs,
    /// Position and leverage limits.
    #[serde(default)]
    pub limits: Limits,
}

fn one() -> usize {
    1
}

/// A liquidity filter, applied bar by bar from information available at that bar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Universe {
    /// Minimum 20-bar average dollar volume (close × volume) to be eligible.
    #[serde(default)]
    pub min_dollar_volume: Option<f64>,
    /// Keep only this many most liquid instruments (by 20-bar average dollar volume).
    #[serde(default)]
    pub top_liquid: Option<usize>,
}

/// Portfolio construction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Portfolio {
    /// Equal weights on the k highest signals, long only.
    TopK {
        /// Names held.
        k: usize,
    },
    /// Long the top `quantile` of signals and short the bottom `quantile`, equal weights,
    /// half the gross on each side.
    QuantileLongShort {
        /// Fraction of the eligible instruments on each side, in (0, 0.5].
        quantile: f64,
    },
    /// Weights proportional to the cross-sectionally demeaned signal, dollar-neutral, gross 1.
    Proportional,
    /// Per instrument: long above `threshold`, short below `-threshold`, flat in between, each
    /// position sized to `target_vol` annualised volatility from its trailing `vol_window`
    /// bars of returns (or from a volatility forecast, `vol_forecast`), divided by the number
    /// of instruments (the futures trend case).
    SignThreshold {
        /// Dead band around zero.
        threshold: f64,
        /// Annualised volatility per position before dividing by the count.
        target_vol: f64,
        /// Bars of returns for the volatility estimate.
        vol_window: usize,
        /// Size by this field instead of the trailing estimate: each instrument's forecast of
        /// its volatility per bar (e.g. a volatility model's prediction panel, `lim foundation
        /// predict` of a model fine-tuned with `--target vol`). An instrument without a forecast on a bar
        /// is not held on it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vol_forecast: Option<String>,
    },
}

impl Default for Portfolio {
    fn default() -> Portfolio {
        Portfolio::TopK { k: 50 }
    }
}

/// Costs, in basis points of traded value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Costs {
    /// Commission and fees per unit of two-sided turnover.
    #[serde(default = "ten")]
    pub bps: f64,
    /// Slippage per unit of two-sided turnover, added to `bps`.
    #[serde(default)]
    pub slippage_bps: f64,
}

fn ten() -> f64 {
    10.0
}

impl Default for Costs {
    fn default() -> Costs {
        Costs {
            bps: 10.0,
            slippage_bps: 0.0,
        }
    }
}

/// Position limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest absolute weight of one instrument.
    #[serde(default)]
    pub max_weight: Option<f64>,
    /// Largest sum of absolute weights; books above it are scaled down.
    #[serde(default)]
    pub max_gross: Option<f64>,
}

impl StrategySpec {
    /// A spec with the given signal and every default.
    pub fn new(signal: impl Into<String>) -> StrategySpec {
        StrategySpec {
            signal: signal.into(),
            universe: Universe::default(),
            portfolio: Portfolio::default(),
            rebalance_every: 1,
            execution_lag: 1,
            costs: Costs::default(),
            limits: Limits::default(),
        }
    }

    /// Checks the numbers that the types cannot.
    ///
    /// # Errors
    /// A message naming the field and the accepted range.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, what: &str| Err(format!("strategy spec field '{field}': {what}"));
        if self.execution_lag == 0 {
            return bad(
                "execution_lag",
                "must be at least 1 (trading on the bar that made the signal would look ahead)",
            );
        }
        if self.rebalance_every == 0 {
            return bad("rebalance_every", "must be at least 1");
        }
        if !(self.costs.bps >= 0.0 && self.costs.slippage_bps >= 0.0) {
            return bad("costs", "bps and slippage_bps must be non-negative numbers");
        }
        match &self.portfolio {
            Portfolio::TopK { k: 0 } => return bad("portfolio.k", "must be at least 1"),
            Portfolio::QuantileLongShort { quantile } if !(*quantile > 0.0 && *quantile <= 0.5) => {
                return bad("portfolio.quantile", "must be in (0, 0.5]");
            }
            Portfolio::SignThreshold {
                threshold,
                target_vol,
                vol_window,
                ..
            } if !(*threshold >= 0.0 && *target_vol > 0.0 && *vol_window >= 2) => {
                return bad(
                    "portfolio",
                    "sign_threshold needs threshold >= 0, target_vol > 0 and vol_window >= 2",
                );
            }
            _ => {}
        }
        if let Some(w) = self.limits.max_weight
            && (w.is_nan() || w <= 0.0)
        {
            return bad("limits.max_weight", "must be positive");
        }
        if let Some(g) = self.limits.max_gross
            && (g.is_nan() || g <= 0.0)
        {
            return bad("limits.max_gross", "must be positive");
        }
        Ok(())
    }

    /// The JSON Schema of a spec.
    pub fn schema() -> serde_json::Value {
        schemars::schema_for!(StrategySpec).to_value()
    }
}
