//! Baselines: the books a strategy must beat, on the same bars, universe filter, lag and costs.

use crate::spec::{Limits, Portfolio, StrategySpec};

/// A signal that is 1 wherever an instrument has a return: with any long book, always long.
pub const ALWAYS_LONG: &str = "abs(returns) * 0 + 1";

/// The always-long book of `spec`'s construction: its portfolio (any threshold at zero),
/// rebalancing, lag, limits and costs, with the [`ALWAYS_LONG`] signal. A long-short book of a
/// constant holds nothing, so for those the long book of all names stands in.
pub fn always_long(spec: &StrategySpec) -> StrategySpec {
    let mut b = spec.clone();
    b.signal = ALWAYS_LONG.to_string();
    match &mut b.portfolio {
        Portfolio::SignThreshold { threshold, .. } => *threshold = 0.0,
        p @ (Portfolio::QuantileLongShort { .. } | Portfolio::Proportional) => {
            *p = Portfolio::TopK { k: 100_000 }
        }
        Portfolio::TopK { k } => *k = 100_000,
    }
    b
}

/// The baselines for strategies built like `template` (its universe filter, lag and costs are
/// kept): always long with equal weights and volatility-targeted, time-series momentum over 63
/// days and 12-1 months (sign books, volatility-targeted, rebalanced every 5 bars), and, when
/// `template`'s book is cross-sectional, cross-sectional momentum (12-1) and 5-day reversal in
/// its own book. The first is the one strategies are compared with. Their windows are in
/// trading days of `bars_per_day` bars (1 for daily data; 24 for hourly crypto, whose 63 days
/// are 1,512 bars: see [`crate::session::Session::bars_per_day`]).
pub fn baselines(template: &StrategySpec, bars_per_day: usize) -> Vec<(String, StrategySpec)> {
    let days = |n: usize| n * bars_per_day.max(1);
    let like = |signal: &str, portfolio: Portfolio, rebalance_every: usize, limits: Limits| {
        let mut s = template.clone();
        s.signal = signal.to_string();
        s.portfolio = portfolio;
        s.rebalance_every = rebalance_every;
        s.limits = limits;
        s
    };
    let sign = || Portfolio::SignThreshold {
        threshold: 0.0,
        target_vol: 0.10,
        vol_window: 60,
        vol_forecast: None,
    };
    let sign_limits = Limits {
        max_weight: None,
        max_gross: Some(3.0),
    };
    let mut out = vec![
        (
            "always long, equal weight".to_string(),
            like(
                ALWAYS_LONG,
                Portfolio::TopK { k: 100_000 },
                1,
                Limits::default(),
            ),
        ),
        (
            "always long, volatility-targeted".to_string(),
            like(ALWAYS_LONG, sign(), 5, sign_limits.clone()),
        ),
        (
            "time-series momentum, 63 days".to_string(),
            like(
                &format!("ts_sum(returns, {})", days(63)),
                sign(),
                5,
                sign_limits.clone(),
            ),
        ),
        (
            "time-series momentum, 12-1 months".to_string(),
            like(
                &format!(
                    "ts_sum(returns, {}) - ts_sum(returns, {})",
                    days(252),
                    days(21)
                ),
                sign(),
                5,
                sign_limits,
            ),
        ),
    ];
    if !matches!(template.portfolio, Portfolio::SignThreshold { .. }) {
        let own = |signal: &str| {
            let mut s = template.clone();
            s.signal = signal.to_string();
            s
        };
        out.push((
            "cross-sectional momentum, 12-1 months".to_string(),
            own(&format!(
                "rank(ts_sum(returns, {}) - ts_sum(returns, {}))",
                days(252),
                days(21)
            )),
        ));
        out.push((
            "short-term reversal, 5 days".to_string(),
            own(&format!("-rank(ts_sum(returns, {}))", days(5))),
        ));
    }
    out
}

/// Correlation (either way) beyond which a strategy's returns are a baseline's found again
/// rather than a new signal: reports say so, and a research run can charge for it in the fitness.
pub const MAX_BASELINE_CORRELATION: f64 = 0.9;

/// The baseline whose returns `own` correlates with most, either way, and that correlation,
/// over the bars where both are known. `baselines` are (name, signal, returns over the same
/// bars). A long-only top-k book (`top_k`) is not compared with always-long: it moves with the
/// market by construction. `None` when no correlation is defined.
pub fn closest(
    own: &[f64],
    top_k: bool,
    baselines: &[(&str, &str, &[f64])],
) -> Option<(String, f64)> {
    baselines
        .iter()
        .filter(|(_, signal, _)| !(top_k && *signal == ALWAYS_LONG))
        .filter_map(|(name, _, returns)| {
            let c = crate::metrics::pearson(&crate::metrics::finite_pairs(own, returns));
            c.is_finite().then(|| (name.to_string(), c))
        })
        .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
}
