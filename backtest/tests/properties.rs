//! Properties over random expressions and random panels: printing round-trips, evaluation
//! never panics, and no expression can see the future.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::HashMap;
use std::sync::Arc;

use lim_backtest::expr::{Arg, BinOp, FUNCS, GROUPS};
use lim_backtest::topk::{self, TopK};
use lim_backtest::{Evaluator, Expr, Frame, Mat, parse};
use proptest::prelude::*;

const FIELDS: [&str; 5] = ["open", "close", "volume", "returns", "vwap"];

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        (0usize..FIELDS.len()).prop_map(|i| Expr::Field(FIELDS[i].to_string())),
        (0u32..100).prop_map(|v| Expr::Num(f64::from(v) / 4.0)),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 40, 3, |inner| {
        let ops = [
            BinOp::Add,
            BinOp::Sub,
            BinOp::Mul,
            BinOp::Div,
            BinOp::Pow,
            BinOp::Lt,
            BinOp::Ge,
            BinOp::And,
            BinOp::Or,
        ];
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Neg(Box::new(e))),
            (0usize..ops.len(), inner.clone(), inner.clone()).prop_map(move |(o, a, b)| Expr::Bin(
                ops[o],
                Box::new(a),
                Box::new(b)
            )),
            (
                0usize..FUNCS.len(),
                prop::collection::vec(inner, 3),
                1u32..8,
                0u32..=4
            )
                .prop_map(|(f, mut xs, d, q)| {
                    let func = &FUNCS[f];
                    let args = func
                        .args
                        .iter()
                        .map(|a| match a {
                            Arg::Expr => xs.pop().unwrap_or(Expr::Num(1.0)),
                            Arg::Window => Expr::Num(f64::from(d)),
                            Arg::Number => Expr::Num(f64::from(q) / 4.0),
                            Arg::Group => Expr::Group(GROUPS[0].to_string()),
                        })
                        .collect();
                    Expr::Call(func.name.to_string(), args)
                }),
        ]
    })
}

fn frame(t: usize, n: usize, seed: &[f64]) -> Frame {
    let mut fields = HashMap::new();
    for (k, name) in FIELDS.iter().enumerate() {
        let data = (0..t * n)
            .map(|i| {
                let v = seed[(i * 7 + k * 13) % seed.len()];
                // Some NaN holes, some zeros and negatives, as real signals have.
                if (i + k) % 17 == 3 { f64::NAN } else { v }
            })
            .collect();
        fields.insert(name.to_string(), Arc::new(Mat { t, n, data }));
    }
    let groups = HashMap::from([
        (
            "exchange".to_string(),
            (0..n as u32).map(|j| j % 2).collect(),
        ),
        ("asset_class".to_string(), vec![0; n]),
    ]);
    Frame {
        fields,
        groups,
        t,
        n,
    }
}

fn same_rows(a: &Mat, b: &Mat, upto: usize) -> bool {
    (0..a.n).all(|j| {
        (0..=upto).all(|i| {
            a.at(i, j).to_bits() == b.at(i, j).to_bits()
                || (a.at(i, j).is_nan() && b.at(i, j).is_nan())
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn printing_round_trips(e in expr()) {
        let text = e.to_string();
        let back = parse(&text, &FIELDS).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        prop_assert_eq!(back, e);
    }

    /// Perturbing every bar after `cut` changes no signal value at or before it.
    #[test]
    fn no_expression_sees_the_future(e in expr(), seed in prop::collection::vec(-3.0f64..3.0, 50), noise in prop::collection::vec(-5.0f64..5.0, 50), cut in 0usize..30) {
        let (t, n) = (30, 6);
        let base = frame(t, n, &seed);
        let mut later = base.clone();
        for (k, m) in later.fields.values_mut().enumerate() {
            let mut m2 = (**m).clone();
            for j in 0..n {
                for i in cut + 1..t {
                    m2.data[j * t + i] = noise[(i * 3 + j + k) % noise.len()];
                }
            }
            *m = Arc::new(m2);
        }
        let a = Evaluator::new(&base, std::slice::from_ref(&e)).eval(&e);
        let b = Evaluator::new(&later, std::slice::from_ref(&e)).eval(&e);
        prop_assert!(same_rows(&a, &b, cut), "{e} changed at or before bar {cut}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any expression on a panel full of NaN, ±inf and zeros evaluates and is booked without a
    /// panic, and the book's turnover is a turnover.
    #[test]
    fn any_expression_evaluates_and_books_on_bad_numbers(
        e in expr(),
        seed in prop::collection::vec(
            prop_oneof![
                4 => -3.0f64..3.0,
                1 => Just(f64::INFINITY),
                1 => Just(f64::NEG_INFINITY),
                1 => Just(f64::NAN),
                1 => Just(0.0),
            ],
            50,
        ),
    ) {
        let f = frame(30, 6, &seed);
        let signal = Evaluator::new(&f, std::slice::from_ref(&e)).signal(&e);
        let target = topk::Target::new(&f.fields["close"]);
        let m = topk::backtest(&signal, &target, &TopK { k: 3, ..TopK::default() });
        prop_assert!(m.turnover.is_nan() || (0.0..=2.0 + 1e-9).contains(&m.turnover), "{e}: turnover {}", m.turnover);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Parse → check → evaluate on any input: an error or a value, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in "[a-z_(),.0-9 +*/^<>=!&|-]{0,60}") {
        if let Ok(e) = parse(&text, &FIELDS) {
            let f = frame(12, 4, &[1.0, -2.0, 0.0, 3.5, f64::INFINITY]);
            let m = Evaluator::new(&f, std::slice::from_ref(&e)).eval(&e);
            prop_assert_eq!(m.data.len(), 48);
        }
    }
}
