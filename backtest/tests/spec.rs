//! Strategy specs: the schema the LLM will see, validation, and the default spec's
//! equivalence with the reference book.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use lim_backtest::metrics::{self, Metrics};
use lim_backtest::spec::{Portfolio, StrategySpec};
use lim_backtest::topk::{self, TopK};
use lim_backtest::{Evaluator, parse, portfolio};

#[test]
fn the_schema_is_stable() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/strategy_spec.schema.json");
    let got = serde_json::to_string_pretty(&StrategySpec::schema()).unwrap() + "\n";
    if std::env::var_os("LIM_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "the strategy spec schema changed; it is part of the LLM's prompt. Review and update {}:\n{got}",
        path.display()
    );
}

#[test]
fn specs_parse_with_defaults_and_refuse_unknown_fields_and_bad_numbers() {
    let s: StrategySpec = serde_json::from_str(r#"{"signal": "rank(returns)"}"#).unwrap();
    assert_eq!(s, StrategySpec::new("rank(returns)"));
    let s: StrategySpec =
        serde_json::from_str(r#"{"signal": "x", "portfolio": {"kind": "quantile_long_short", "quantile": 0.1}, "execution_lag": 2}"#).unwrap();
    assert_eq!(s.portfolio, Portfolio::QuantileLongShort { quantile: 0.1 });
    let e = serde_json::from_str::<StrategySpec>(r#"{"signal": "x", "leverage": 3}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `leverage`"), "{e}");
    let mut s = StrategySpec::new("x");
    s.execution_lag = 0;
    assert!(s.validate().unwrap_err().contains("execution_lag"));
    s.execution_lag = 1;
    s.portfolio = Portfolio::QuantileLongShort { quantile: 0.7 };
    assert!(s.validate().unwrap_err().contains("(0, 0.5]"));
}

#[test]
fn the_default_spec_is_the_reference_book() {
    let (set, frame) = common::reference_panel();
    let target = topk::Target::new(&frame.fields["close"]);
    let names = frame.field_names();
    for text in [
        "rank(ts_mean(close, 20) / close)",
        "-ts_corr(rank(volume), rank(close), 10)",
        "ts_delta(close, 5) / ts_std(close, 20)",
    ] {
        let e = parse(text, &names).unwrap();
        let sig = Evaluator::new(&frame, &[]).signal(&e);
        let reference = topk::backtest(&sig, &target, &TopK::default());
        let book = portfolio::run(&StrategySpec::new(text), &sig, &frame, &target, 252.0);
        let m = Metrics::of(&book, 0..frame.t, 252.0);
        for (a, b) in [
            (m.sharpe, reference.sharpe),
            (m.ann_return, reference.ann_return),
            (m.max_dd, reference.max_dd),
            (m.turnover, reference.turnover),
            (m.rank_ic, reference.ic_mean),
        ] {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1e-12),
                "{text}: {a} vs {b}"
            );
        }
        assert!(
            (m.exposure - 1.0).abs() < 1e-12,
            "a fully invested long book"
        );
        // The years add up to the whole.
        let years = metrics::per_year(&book, &set.times, 0..frame.t, 252.0);
        let total: f64 = years.iter().fold(1.0, |e, y| e * (1.0 + y.ret));
        let whole = (0..frame.t)
            .filter_map(|i| book.net[i].is_finite().then_some(book.net[i]))
            .fold(1.0, |e, r| e * (1.0 + r));
        assert!((total - whole).abs() < 1e-12);
        let folds = metrics::walk_forward(&book, 0..frame.t, 4, 252.0);
        assert_eq!(
            folds
                .iter()
                .map(|(_, m)| m.bars + m.inactive_bars)
                .sum::<usize>(),
            frame.t
        );
    }
}

#[test]
fn metrics_by_hand() {
    let book = topk::Book {
        net: vec![f64::NAN, 0.1, -0.2, 0.05, 0.1],
        turnover: vec![f64::NAN, 1.0, 0.0, 0.5, 0.5],
        ic: vec![f64::NAN, 0.1, 0.3, f64::NAN, 0.2],
        ic_pearson: vec![f64::NAN, 0.2, 0.0, 0.1, f64::NAN],
        exposure: vec![f64::NAN, 1.0, 1.0, 1.0, 1.0],
        nonfinite_signal_cells: 0,
        tradable: vec![1; 5],
    };
    let m = Metrics::of(&book, 0..5, 4.0);
    assert_eq!((m.bars, m.inactive_bars, m.max_dd_bars), (4, 1, 3));
    assert!((m.hit_rate - 0.75).abs() < 1e-15);
    assert!((m.max_dd - (0.88 / 1.1 - 1.0)).abs() < 1e-12);
    let downside = (0.04f64 / 4.0).sqrt();
    assert!((m.sortino - (0.05 / 4.0) / downside * 2.0).abs() < 1e-12);
    assert!((m.rank_ic - 0.2).abs() < 1e-12 && (m.rank_icir - 0.2 / 0.1).abs() < 1e-12);
    // Qlib's ICIR is the Pearson IC's: mean 0.1, sample standard deviation 0.1.
    assert!((m.ic - 0.1).abs() < 1e-12 && (m.icir - 1.0).abs() < 1e-12);
    assert!((m.calmar - m.ann_return / m.max_dd.abs()).abs() < 1e-15);
}
