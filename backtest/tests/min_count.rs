//! Window operators with a minimum count (`ts_mean(x, 20, 10)`): each equals the statistic
//! over the numbers of its window computed the slow way, wherever the window holds at least
//! the minimum, and NaN elsewhere; without the argument nothing changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use lim_backtest::ops::{self, Extreme};
use lim_backtest::{Evaluator, parse};

/// A series with NaN runs and ties, from a small LCG (deterministic).
fn series(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(n);
    let mut gap = 0;
    for _ in 0..n {
        if gap > 0 {
            gap -= 1;
            out.push(f64::NAN);
        } else if next() < 0.08 {
            gap = (next() * 6.0) as usize;
            out.push(f64::NAN);
        } else {
            // Rounded, so that windows hold ties.
            out.push((next() * 40.0).round() / 4.0 - 5.0);
        }
    }
    out
}

/// The numbers of the window ending at `t`.
fn window(x: &[f64], w: usize, t: usize) -> Vec<f64> {
    x[(t + 1).saturating_sub(w)..=t]
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn check(name: &str, got: &[f64], want: impl Fn(usize) -> f64) {
    for (t, g) in got.iter().enumerate() {
        let w = want(t);
        assert!(close(*g, w), "{name} at bar {t}: got {g}, want {w}");
    }
}

#[test]
fn each_window_statistic_is_over_the_numbers_of_its_window() {
    let n = 400;
    for seed in 1..6 {
        let x = series(n, seed);
        let y = series(n, seed + 100);
        for (w, m) in [(5, 1), (10, 4), (20, 15), (7, 7)] {
            let need = |v: &[f64]| v.len() >= m;
            let mut out = vec![0.0; n];

            ops::move_sum_min(&x, w, m, &mut out);
            check("sum", &out, |t| {
                let v = window(&x, w, t);
                if need(&v) { v.iter().sum() } else { f64::NAN }
            });

            ops::move_mean_min(&x, w, m, &mut out);
            check("mean", &out, |t| {
                let v = window(&x, w, t);
                if need(&v) {
                    v.iter().sum::<f64>() / v.len() as f64
                } else {
                    f64::NAN
                }
            });

            ops::move_var_min(&x, w, m, 1, false, &mut out);
            check("var", &out, |t| {
                let v = window(&x, w, t);
                if !need(&v) || v.len() < 2 {
                    return f64::NAN;
                }
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
            });

            for which in [Extreme::Min, Extreme::Max] {
                ops::move_extreme_min(&x, w, m, which, false, &mut out);
                check("extreme", &out, |t| {
                    let v = window(&x, w, t);
                    if !need(&v) {
                        return f64::NAN;
                    }
                    let f = if which == Extreme::Min {
                        f64::min
                    } else {
                        f64::max
                    };
                    v.iter().copied().fold(v[0], f)
                });
            }

            ops::move_rank_pct_min(&x, w, m, &mut out);
            check("rank", &out, |t| {
                let v = window(&x, w, t);
                let a = x[t];
                if a.is_nan() || !need(&v) {
                    return f64::NAN;
                }
                let below = v.iter().filter(|b| **b < a).count() as f64;
                let equal = v.iter().filter(|b| **b == a).count() as f64;
                (below + (equal + 1.0) / 2.0) / v.len() as f64
            });

            ops::decay_linear_min(&x, w, m, &mut out);
            check("decay", &out, |t| {
                let (mut acc, mut total, mut k) = (0.0, 0.0, 0);
                for i in 0..w.min(t + 1) {
                    let v = x[t - i];
                    if !v.is_nan() {
                        acc += v * (w - i) as f64;
                        total += (w - i) as f64;
                        k += 1;
                    }
                }
                if k >= m { acc / total } else { f64::NAN }
            });

            ops::move_cov_corr_min(&x, &y, w, m, true, &mut out);
            check("corr", &out, |t| {
                let lo = (t + 1).saturating_sub(w);
                let pairs: Vec<(f64, f64)> = (lo..=t)
                    .filter(|&i| !x[i].is_nan() && !y[i].is_nan())
                    .map(|i| (x[i], y[i]))
                    .collect();
                if pairs.len() < m.max(2) {
                    return f64::NAN;
                }
                let k = pairs.len() as f64;
                let (mx, my) = (
                    pairs.iter().map(|p| p.0).sum::<f64>() / k,
                    pairs.iter().map(|p| p.1).sum::<f64>() / k,
                );
                let sxy: f64 = pairs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
                let sxx: f64 = pairs.iter().map(|p| (p.0 - mx).powi(2)).sum();
                let syy: f64 = pairs.iter().map(|p| (p.1 - my).powi(2)).sum();
                if sxx <= 1e-12 || syy <= 1e-12 {
                    f64::NAN
                } else {
                    sxy / (sxx * syy).sqrt()
                }
            });
        }
    }
}

/// With the minimum equal to the window, every operator gives what it gave without it, bit
/// for bit, on the reference panel (whose default agreement `reference.rs` checks).
#[test]
fn a_minimum_equal_to_the_window_changes_nothing() {
    let (_, frame) = common::reference_panel();
    let names = frame.field_names();
    let pairs = [
        ("ts_mean(returns, 10)", "ts_mean(returns, 10, 10)"),
        ("ts_sum(volume, 5)", "ts_sum(volume, 5, 5)"),
        ("ts_std(returns, 20)", "ts_std(returns, 20, 20)"),
        ("ts_zscore(close, 15)", "ts_zscore(close, 15, 15)"),
        ("ts_max(high, 8)", "ts_max(high, 8, 8)"),
        ("ts_argmin(low, 8)", "ts_argmin(low, 8, 8)"),
        ("ts_rank(close, 12)", "ts_rank(close, 12, 12)"),
        (
            "ts_corr(rank(vwap), rank(volume), 6)",
            "ts_corr(rank(vwap), rank(volume), 6, 6)",
        ),
        ("decay_linear(returns, 9)", "decay_linear(returns, 9, 9)"),
    ];
    for (plain, with) in pairs {
        let a = parse(plain, &names).unwrap();
        let b = parse(with, &names).unwrap();
        let eval = Evaluator::new(&frame, &[a.clone(), b.clone()]);
        let (va, vb) = (eval.signal(&a).values, eval.signal(&b).values);
        let bits = |m: &lim_backtest::Mat| m.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(bits(&va) == bits(&vb), "{with} differs from {plain}");
        assert_eq!(b.to_string(), with, "prints back as written");
    }
}

/// Alpha 96's first leg: a constant window makes a correlation NaN, and without a minimum
/// count every later window that sees it is NaN for its whole length. With one, far more of
/// the panel is defined.
#[test]
fn a_minimum_count_keeps_a_nan_from_spreading_through_later_windows() {
    let (_, frame) = common::reference_panel();
    let names = frame.field_names();
    let strict = parse(
        "ts_rank(decay_linear(ts_corr(rank(vwap), rank(volume), 4), 4), 8)",
        &names,
    )
    .unwrap();
    let tolerant = parse(
        "ts_rank(decay_linear(ts_corr(rank(vwap), rank(volume), 4, 3), 4, 1), 8, 1)",
        &names,
    )
    .unwrap();
    let eval = Evaluator::new(&frame, &[strict.clone(), tolerant.clone()]);
    let defined = |e| {
        let v = eval.signal(e).values;
        v.data.iter().filter(|x| !x.is_nan()).count() as f64 / v.data.len() as f64
    };
    let (s, t) = (defined(&strict), defined(&tolerant));
    eprintln!("defined share of the panel: strict {s:.3}, with minimum counts {t:.3}");
    assert!(
        t > s + 0.05,
        "defined share: strict {s:.3}, tolerant {t:.3}"
    );
}

#[test]
fn a_bad_minimum_count_is_refused_with_the_fix() {
    let names = ["close"];
    for (text, want) in [
        ("ts_mean(close, 10, 11)", "from 1 to its window"),
        ("ts_mean(close, 10, 0)", "from 1 to its window"),
        ("ts_mean(close, 10, 2.5)", "from 1 to its window"),
        (
            "ts_skew(close, 10, 5)",
            "ts_skew takes 2 argument(s), got 3",
        ),
        (
            "ts_mean(close, 10, 5, 1)",
            "takes 2 argument(s), got 4: ts_mean(x, d), then optionally min_count",
        ),
    ] {
        let e = parse(text, &names).unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
}

/// `with_min_count` gives every window operator its share of the window, leaves the others
/// alone, and strips them again with `None`.
#[test]
fn with_min_count_sets_and_strips_minimum_counts() {
    let names = ["close", "volume", "returns"];
    let e = parse(
        "rank(ts_corr(rank(close), rank(volume), 10)) - delay(ts_mean(returns, 20), 5) + ts_skew(returns, 30)",
        &names,
    )
    .unwrap();
    let t = e.with_min_count(Some(0.75));
    assert_eq!(
        t.to_string(),
        "rank(ts_corr(rank(close), rank(volume), 10, 8)) - delay(ts_mean(returns, 20, 15), 5) + ts_skew(returns, 30)"
    );
    assert_eq!(
        t.with_min_count(Some(0.75)),
        t,
        "applied twice is applied once"
    );
    assert_eq!(t.with_min_count(None), e);
    assert_eq!(
        parse("ts_max(close, 3)", &names)
            .unwrap()
            .with_min_count(Some(0.1))
            .to_string(),
        "ts_max(close, 3, 1)"
    );
}
