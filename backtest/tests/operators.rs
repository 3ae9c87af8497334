//! Operators against their definitions: element-wise functions on the edge values of
//! docs/strategy-language.md (NaN, signed zeros, infinities), and cross-sectional row
//! statistics against the same arithmetic along each bar's row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::HashMap;
use std::sync::Arc;

use lim_backtest::{Evaluator, Frame, Mat, ops, parse};

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

/// A cell's value from its bar's row and its own value.
type RowFn = dyn Fn(&[f64], f64) -> f64;

#[test]
fn row_statistics_equal_their_arithmetic_along_each_row_bit_for_bit() {
    let (t, n) = (700, 37);
    let mut seed = 5u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    // Column-major, with missing values, a bar with one number and a bar with none.
    let mut data: Vec<f64> = (0..t * n)
        .map(|_| {
            let u = next();
            if u < 0.1 { f64::NAN } else { (u - 0.4) * 1e3 }
        })
        .collect();
    for j in 0..n {
        data[j * t + 3] = if j == 5 { 2.0 } else { f64::NAN };
        data[j * t + 4] = f64::NAN;
    }
    let frame = Frame {
        fields: HashMap::from([(
            "x".to_string(),
            Arc::new(Mat {
                t,
                n,
                data: data.clone(),
            }),
        )]),
        groups: HashMap::new(),
        t,
        n,
    };
    let names = frame.field_names();
    let signal = |text: &str| {
        let e = parse(text, &names).unwrap();
        Evaluator::new(&frame, &[]).signal(&e).values.data.clone()
    };
    let cases: [(&str, &RowFn); 4] = [
        ("zscore(x)", &|r, v| {
            let (m, s) = ops::nanmean_std(r, 1);
            (v - m) / s
        }),
        ("demean(x)", &|r, v| {
            let (s, c) = ops::nansum_count(r);
            v - s / c as f64
        }),
        ("scale(x)", &|r, v| {
            let total: f64 = r.iter().filter(|v| !v.is_nan()).map(|v| v.abs()).sum();
            v / total
        }),
        ("winsorize(x, 1.5)", &|r, v| {
            let (m, s) = ops::nanmean_std(r, 1);
            let (lo, hi) = (m - 1.5 * s, m + 1.5 * s);
            if lo.is_nan() || hi.is_nan() || v.is_nan() {
                f64::NAN
            } else {
                v.max(lo).min(hi)
            }
        }),
    ];
    for (text, want) in cases {
        let got = signal(text);
        for i in 0..t {
            let row: Vec<f64> = (0..n).map(|j| data[j * t + i]).collect();
            let want: Vec<f64> = row.iter().map(|&v| want(&row, v)).collect();
            let got: Vec<f64> = (0..n).map(|j| got[j * t + i]).collect();
            assert!(same(&got, &want), "{text}, bar {i}: {got:?} vs {want:?}");
        }
    }
}

/// Ranking ranks changes nothing, bit for bit, even on a row of NaN, signed zeros, ties and
/// infinities: the search may take `rank(rank(x))` for the `rank(x)` it is.
#[test]
fn ranking_ranks_changes_nothing() {
    for x in ["close", "-close", "close * 0", "abs(close) - 2.5"] {
        let once = format!("rank({x})");
        let twice = format!("rank(rank({x}))");
        assert!(
            same(&eval(&twice), &eval(&once)),
            "{x}: {:?} {:?}",
            eval(&twice),
            eval(&once)
        );
        let e = parse(
            &format!("ts_mean({twice}, 5) + rank(rank(rank(close)))"),
            &["close"],
        )
        .unwrap();
        assert_eq!(
            e.without_repeated_ranks().to_string(),
            parse(&format!("ts_mean({once}, 5) + rank(close)"), &["close"])
                .unwrap()
                .to_string()
        );
    }
}
