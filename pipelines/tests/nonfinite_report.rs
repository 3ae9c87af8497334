#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
//! Metrics of any book over any range (empty, all missing, constant, infinite) go through the
//! journal's JSON, the summary and the report without an error, and come back as they were.

use lim_agents::offline;
use lim_backtest::metrics::Metrics;
use lim_backtest::topk::Book;
use lim_pipelines::research::{self, ExperimentPlan, Finalist, ResearchConfig, Trial};
use proptest::prelude::*;
use serde_json::{Value, json};

fn cell() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -0.05f64..0.05,
        2 => Just(f64::NAN),
        1 => Just(0.0),
        1 => Just(0.01),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
    ]
}

fn book(n: usize) -> impl Strategy<Value = Book> {
    (
        prop::collection::vec(cell(), n),
        prop::collection::vec(cell(), n),
        prop::collection::vec(cell(), n),
    )
        .prop_map(|(net, turnover, ic)| Book {
            exposure: turnover.clone(),
            ic_pearson: ic.clone(),
            net,
            turnover,
            tradable: vec![1; ic.len()],
            ic,
            nonfinite_signal_cells: 0,
        })
}

/// Bitwise equality that takes any NaN as equal to any other.
fn same(a: &Metrics, b: &Metrics) -> bool {
    let eq = |x: f64, y: f64| (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits();
    serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap()
        && eq(a.sharpe, b.sharpe)
        && eq(a.calmar, b.calmar)
        && eq(a.sortino, b.sortino)
        && eq(a.max_dd, b.max_dd)
}

fn plan() -> ExperimentPlan {
    let config = ResearchConfig::new("find a trend strategy for Chinese commodity futures");
    ExperimentPlan {
        strategy: offline::plan(&config.goal, &["cn_futures_daily".to_string()]),
        frequency: "1d".into(),
        instruments: 30,
        horizon: "next bar".into(),
        splits: "60/20/20".into(),
        objective: "robust Sharpe".into(),
        constraints: Vec::new(),
        budgets: config.budgets.clone(),
        foundation_model: false,
        review: String::new(),
        baseline_penalty: 0.0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn metrics_of_any_split_round_trip_and_render(
        b in (0usize..40).prop_flat_map(book),
        cut in 0usize..40,
    ) {
        let n = b.net.len();
        let cut = cut.min(n);
        let (train, valid) = (Metrics::of(&b, 0..cut, 252.0), Metrics::of(&b, cut..n, 252.0));
        for m in [&train, &valid] {
            let text = serde_json::to_string(m).unwrap();
            let back: Metrics = serde_json::from_str(&text).unwrap();
            prop_assert!(same(m, &back), "{text}");
            let value: Metrics = serde_json::from_value(serde_json::to_value(m).unwrap()).unwrap();
            prop_assert!(same(m, &value));
        }
        let p = plan();
        let mut trial = Trial {
            signal: "ts_sum(returns, 20)".into(),
            generation: 0,
            parents: Vec::new(),
            fitness: None,
            train: Some(train),
            validation: Some(valid),
            error: None,
            rejected: None,
            always_long_correlation: None,
            folds: Vec::new(),
            nodes: 0,
            level_dependent: false,
            holding_changes_per_year: None,
            closest_baseline: None,
        };
        trial.score(&p);
        // No evidence, no fitness: a part without enough active bars is rejected, with a reason.
        if valid.bars < research::MIN_ACTIVE_BARS || !valid.sharpe.is_finite() {
            prop_assert!(trial.fitness.is_none() && trial.rejected.is_some());
        }
        prop_assert!(trial.fitness.is_none_or(f64::is_finite));
        let artifacts = [
            ("plan", serde_json::to_value(&p).unwrap()),
            ("trials", serde_json::to_value(vec![&trial, &trial]).unwrap()),
            ("finalists", serde_json::to_value(vec![Finalist {
                signal: trial.signal.clone(), validation: valid, test: train,
                vs_always_long: Some(research::VersusBaseline {
                    excess_return: valid.ann_return - train.ann_return,
                    co_move: lim_backtest::metrics::co_move(&b.net, &b.net),
                    information_ratio: lim_backtest::metrics::information_ratio(&b.net, &b.net, 252.0),
                }),
                closest_baseline: None,
            }]).unwrap()),
            ("baselines", serde_json::to_value(vec![research::Baseline {
                name: "always long, equal weight".into(), signal: "1".into(),
                validation: valid, test: train,
            }]).unwrap()),
            ("deflated", Value::Null),
            ("lineage", json!([])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let config = ResearchConfig::new(&p.strategy.goal);
        let (summary, report) =
            research::summarize(&artifacts, &config, Default::default()).unwrap();
        prop_assert!(!report.contains("NaN") && !report.contains("inf |"), "{report}");
        let text = serde_json::to_string(&summary).unwrap();
        let again: research::Summary = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(text, serde_json::to_string(&again).unwrap());
    }
}
