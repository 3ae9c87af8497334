//! Agreement with the peer reference (numpy + bottleneck, `../shared/bench/backtest.py`):
//! every one of the 100 alphas of `alphas.txt`, on a seeded 100 × 400 panel, gives the same
//! six metrics within 1e-9 relative. The fixture and the expected values were made by
//! `bench/make_reference.py`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use lim_backtest::topk::{self, TopK};
use lim_backtest::{Evaluator, parse};

fn close_enough(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-15
}

#[test]
fn all_100_alphas_agree_with_the_reference_within_1e_9() {
    let dir = common::fixtures();
    let (_, frame) = common::reference_panel();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference_panel.expected.json")).unwrap(),
    )
    .unwrap();
    let alphas = expected["alphas"].as_array().unwrap();
    assert_eq!(alphas.len(), 100);
    let names = frame.field_names();
    let exprs: Vec<_> = alphas
        .iter()
        .map(|a| parse(a["expr"].as_str().unwrap(), &names).unwrap())
        .collect();
    let eval = Evaluator::new(&frame, &exprs);
    let fwd = topk::Target::new(&frame.fields["close"]);
    let mut failures = Vec::new();
    for (a, e) in alphas.iter().zip(&exprs) {
        let m = topk::backtest(&eval.signal(e), &fwd, &TopK::default());
        let got = [
            m.ann_return,
            m.sharpe,
            m.max_dd,
            m.turnover,
            m.ic_mean,
            m.ic_ir,
        ];
        for (k, g) in [
            "ann_return",
            "sharpe",
            "max_dd",
            "turnover",
            "ic_mean",
            "ic_ir",
        ]
        .iter()
        .zip(got)
        {
            let want = a[k].as_f64().unwrap_or(f64::NAN);
            if !close_enough(g, want) {
                failures.push(format!(
                    "{} {k}: lim {g:.15e}, reference {want:.15e}  ({})",
                    a["name"], a["expr"]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The same batch on one thread and on three gives bit-identical books.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (_, frame) = common::reference_panel();
    let names = frame.field_names();
    let exprs: Vec<_> = [
        "rank(ts_mean(close, 20) / close)",
        "-ts_corr(rank(volume), rank(close), 10)",
        "zscore(ts_mean(returns, 60))",
        "rank(decay_linear(ts_corr(vwap, ts_mean(volume, 20), 10), 5))",
    ]
    .iter()
    .map(|e| parse(e, &names).unwrap())
    .collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let eval = Evaluator::new(&frame, &exprs);
            let target = topk::Target::new(&frame.fields["close"]);
            exprs
                .iter()
                .map(|e| {
                    let b = topk::run(&eval.signal(e), &target, &TopK::default());
                    b.net
                        .iter()
                        .chain(&b.ic)
                        .map(|v| v.to_bits())
                        .collect::<Vec<u64>>()
                })
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(run(1), run(3));
}
