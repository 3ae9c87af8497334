//! Element-wise functions on the edge values of docs/strategy-language.md: NaN, signed zeros
//! and infinities.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::HashMap;
use std::sync::Arc;

use lim_backtest::{Evaluator, Frame, Mat, parse};

const EDGES: [f64; 8] = [
    f64::NAN,
    -0.0,
    0.0,
    2.5,
    -3.0,
    0.25,
    f64::INFINITY,
    f64::NEG_INFINITY,
];

/// `text` over one bar whose `close` across instruments is [`EDGES`].
fn eval(text: &str) -> Vec<f64> {
    let n = EDGES.len();
    let close = Mat {
        t: 1,
        n,
        data: EDGES.to_vec(),
    };
    let frame = Frame {
        fields: HashMap::from([("close".to_string(), Arc::new(close))]),
        groups: HashMap::new(),
        t: 1,
        n,
    };
    let e = parse(text, &frame.field_names()).unwrap();
    Evaluator::new(&frame, &[]).signal(&e).values.data.clone()
}

fn same(got: &[f64], want: &[f64]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits())
}

#[test]
fn sign_is_minus_one_zero_or_one_and_keeps_nan() {
    let got = eval("sign(close)");
    let want = [f64::NAN, 0.0, 0.0, 1.0, -1.0, 1.0, 1.0, -1.0];
    assert!(same(&got, &want), "{got:?}");
}

#[test]
fn abs_sqrt_log_and_exp_follow_their_edge_cases() {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let cases: [(&str, [f64; 8]); 4] = [
        ("abs(close)", [nan, 0.0, 0.0, 2.5, 3.0, 0.25, inf, inf]),
        (
            "sqrt(close)",
            [nan, -0.0, 0.0, 2.5f64.sqrt(), nan, 0.5, inf, nan],
        ),
        (
            "log(close)",
            [nan, -inf, -inf, 2.5f64.ln(), nan, 0.25f64.ln(), inf, nan],
        ),
        (
            "exp(close)",
            [
                nan,
                1.0,
                1.0,
                2.5f64.exp(),
                (-3.0f64).exp(),
                0.25f64.exp(),
                inf,
                0.0,
            ],
        ),
    ];
    for (text, want) in cases {
        let got = eval(text);
        assert!(same(&got, &want), "{text}: {got:?}");
    }
}
