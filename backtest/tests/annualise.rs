//! Intraday data: a bar is an hour or five minutes, a year has as many of them as the market
//! trades in a day, 252 times over, and a baseline's days are that many bars each.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use lim_backtest::baseline::baselines;
use lim_backtest::session::Session;
use lim_backtest::spec::{Portfolio, StrategySpec};
use lim_market::Part;

mod common;

/// One instrument whose price moves ±1 % every hour, `hours` bars a day (the last hours of each), over 40
/// days: per bar a return volatility of 1 %.
fn session(hours: usize) -> Session {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hourly.csv");
    let mut csv = String::from("ts,symbol,open,high,low,close,volume\n");
    let mut p = 100.0;
    let mut bar = 0;
    for d in 1..=40 {
        for h in 0..hours {
            p *= if bar % 2 == 0 { 1.01 } else { 0.99 };
            bar += 1;
            let (day, hour) = ((d - 1) % 28 + 1, 24 - hours + h);
            let month = if d <= 28 { 2 } else { 3 };
            csv.push_str(&format!(
                "2021-{month:02}-{day:02}T{hour:02}:00:00Z,S,{p},{p},{p},{p},1000\n"
            ));
        }
    }
    std::fs::write(&path, csv).unwrap();
    common::session(&path)
}

#[test]
fn intraday_volatility_is_annualised_by_the_bars_of_a_trading_day() {
    for hours in [24, 6] {
        let s = session(hours);
        let mut spec = StrategySpec::new("abs(returns) * 0 + 1");
        spec.portfolio = Portfolio::TopK { k: 1 };
        spec.costs.bps = 0.0;
        let r = s.run(&[("long".into(), spec)], &[Part::Validation], false);
        let m = r[0].metrics[0].1;
        let want = 0.01 * (252.0 * hours as f64).sqrt();
        assert!(
            (m.ann_vol / want - 1.0).abs() < 0.03,
            "{hours} bars a day: annual volatility {} where {want} was due",
            m.ann_vol
        );
    }
}

#[test]
fn a_baselines_days_are_the_data_s_trading_days() {
    let mut spec = StrategySpec::new("rank(returns)");
    spec.portfolio = Portfolio::TopK { k: 1 };
    for (hours, momentum, reversal) in [
        (24, "ts_sum(returns, 1512)", "-rank(ts_sum(returns, 120))"),
        (6, "ts_sum(returns, 378)", "-rank(ts_sum(returns, 30))"),
    ] {
        let s = session(hours);
        assert_eq!(s.bars_per_day(), hours);
        let b = baselines(&spec, s.bars_per_day());
        let signal = |name: &str| &b.iter().find(|(n, _)| n == name).unwrap().1.signal;
        assert_eq!(signal("time-series momentum, 63 days"), momentum);
        assert_eq!(signal("short-term reversal, 5 days"), reversal);
    }
    // Daily bars: the windows as written.
    let daily = baselines(&spec, 1);
    assert!(
        daily
            .iter()
            .any(|(_, b)| b.signal == "ts_sum(returns, 252) - ts_sum(returns, 21)")
    );
}

/// "Luck alone would give a Sharpe of …" sits beside the best validation Sharpe, so it is
/// annualised as that one is: by the hours of the data's trading day, not by 252 days.
#[test]
fn the_sharpe_luck_would_give_is_annualised_like_the_best() {
    let s = session(24);
    let runs: Vec<(String, StrategySpec)> = ["returns", "-returns", "ts_sum(returns, 3)"]
        .iter()
        .map(|e| {
            let mut spec = StrategySpec::new(*e);
            spec.portfolio = Portfolio::SignThreshold {
                threshold: 0.0,
                target_vol: 0.1,
                vol_window: 20,
                vol_forecast: None,
            };
            (e.to_string(), spec)
        })
        .collect();
    let r = s.run(&runs, &[Part::Validation], false);
    let m = s.multiple_testing(&r).unwrap();
    assert_eq!(m.periods_per_year, s.periods());
    let hourly = m.deflated.expected_max * (24.0 * 252f64).sqrt();
    assert!(
        (m.luck_sharpe() - hourly).abs() < 1e-9 * hourly.abs().max(1.0),
        "luck {} where {hourly} was due",
        m.luck_sharpe()
    );
}
