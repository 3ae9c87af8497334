//! The baselines' books against books computed by hand from their definitions, on a panel small
//! enough to check every bar: a baseline that drifts from what its name says would make every
//! "beats always long" in a report a lie.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use lim_backtest::baseline::baselines;
use lim_backtest::session::Session;
use lim_backtest::spec::{Portfolio, StrategySpec};
use lim_market::{Part, SplitSpec};

mod common;

const T: usize = 40;
const N: usize = 3;
const COST: f64 = 0.001;

/// Closes that wander differently per instrument, with no ties in their 5-bar returns.
fn closes() -> Vec<[f64; N]> {
    let mut c = vec![[100.0, 50.0, 20.0]];
    for t in 1..T {
        let prev = c[t - 1];
        c.push(std::array::from_fn(|i| {
            prev[i] * (1.0 + 0.02 * (1.3 * (t * (i + 1)) as f64 + i as f64).sin())
        }));
    }
    c
}

fn session(name: &str) -> Session {
    session_in(name, "tiny")
}

/// [`session`] from a data file named `stem` (its name says the instruments' kind).
fn session_in(name: &str, stem: &str) -> Session {
    let dir = std::env::temp_dir().join(format!(
        "lim-baselines-{}-{}",
        std::process::id(),
        name.replace(' ', "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{stem}.csv"));
    let mut csv = String::from("ts,symbol,open,high,low,close,volume\n");
    let c = closes();
    for i in 0..N {
        for (t, row) in c.iter().enumerate() {
            let day = chrono_day(t);
            let p = row[i];
            csv.push_str(&format!("{day},S{i},{p},{p},{p},{p},1000\n"));
        }
    }
    std::fs::write(&path, csv).unwrap();
    let mut set = common::panels(&path);
    std::fs::remove_dir_all(&dir).ok();
    Session::new(
        &mut set,
        SplitSpec::Fractions {
            train: 0.5,
            valid: 0.25,
            embargo: 0,
        },
    )
    .unwrap()
}

/// 2020-01-01 plus `t` days, as text.
fn chrono_day(t: usize) -> String {
    let (mut m, mut d) = (1usize, 1 + t);
    for len in [31, 29, 31] {
        if d <= len {
            break;
        }
        d -= len;
        m += 1;
    }
    format!("2020-{m:02}-{d:02}")
}

fn fwd(c: &[[f64; N]], t: usize, i: usize) -> f64 {
    c[t + 1][i] / c[t][i] - 1.0
}

fn net_of(name: &str, template: &StrategySpec) -> Vec<f64> {
    let s = session(name);
    let specs: Vec<_> = baselines(template, 1)
        .into_iter()
        .filter(|(n, _)| n == name)
        .collect();
    assert_eq!(specs.len(), 1, "no baseline named {name}");
    let r = s.run(&specs, &[Part::Train], false);
    assert_eq!(r[0].error, None);
    r[0].book.as_ref().unwrap().net.clone()
}

fn assert_bars(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g.is_nan() && w.is_nan()) || (g - w).abs() < 1e-12,
            "bar {t}: book {g}, by hand {w}"
        );
    }
}

#[test]
fn always_long_equal_weight_is_the_mean_next_bar_return_less_one_entry_cost() {
    let c = closes();
    // Weights 1/3 from bar 1 (the first bar with a return), held from bar 2; one unit of
    // turnover to enter; nothing known after the last bar.
    let want: Vec<f64> = (0..T)
        .map(|t| match t {
            0 | 1 => f64::NAN,
            t if t == T - 1 => f64::NAN,
            t => {
                let mean = (0..N).map(|i| fwd(&c, t, i)).sum::<f64>() / N as f64;
                mean - if t == 2 { COST } else { 0.0 }
            }
        })
        .collect();
    let template = StrategySpec::new("returns");
    assert_bars(&net_of("always long, equal weight", &template), &want);
}

#[test]
fn short_term_reversal_holds_the_worst_five_bar_loser_in_a_top_one_book() {
    let c = closes();
    let ret = |t: usize, i: usize| c[t][i] / c[t - 1][i] - 1.0;
    // The signal -rank(ts_sum(returns, 5)) is defined from bar 5; top-1 holds the lowest sum.
    let pick = |t: usize| {
        (0..N)
            .min_by(|&a, &b| {
                let s = |i: usize| (t - 4..=t).map(|u| ret(u, i)).sum::<f64>();
                s(a).total_cmp(&s(b))
            })
            .unwrap()
    };
    let want: Vec<f64> = (0..T)
        .map(|t| {
            if t < 6 || t == T - 1 {
                return f64::NAN;
            }
            let held = pick(t - 1);
            let turnover = if t == 6 {
                1.0
            } else if pick(t - 2) == held {
                0.0
            } else {
                2.0
            };
            fwd(&c, t, held) - COST * turnover
        })
        .collect();
    let mut template = StrategySpec::new("returns");
    template.portfolio = Portfolio::TopK { k: 1 };
    let got = net_of("short-term reversal, 5 days", &template);
    assert_bars(&got, &want);
    // The pick changes along the way, so turnover was exercised.
    assert!((7..T - 1).any(|t| pick(t - 1) != pick(t - 2)));
}

/// A book that reads the instruments' price levels is flagged: on back-adjusted prices the level
/// of a past bar is set by later splits, dividends and rolls, so such a book looks ahead.
/// Scale-free signals, and signs of signals that scale with the price, are not.
#[test]
fn books_that_read_price_levels_are_flagged() {
    let s = session("levels");
    let sign = Portfolio::SignThreshold {
        threshold: 0.0,
        target_vol: 0.1,
        vol_window: 5,
        vol_forecast: None,
    };
    let cases: [(&str, Option<&Portfolio>, bool); 10] = [
        ("rank(-low)", None, true),
        ("rank(-ts_sum(low, 5))", None, true),
        ("rank(-(close + 1))", None, true),
        ("rank(-ts_sum(returns, 5))", None, false),
        ("rank(close / delay(close, 5))", None, false),
        ("rank(ts_zscore(close, 10))", None, false),
        ("close - delay(close, 5)", Some(&sign), false),
        ("close - 30", Some(&sign), true),
        ("ts_std(close, 10) - ts_std(close, 20)", Some(&sign), false),
        // Logarithms round after rescaling, but the book does not change.
        ("rank(log(close) - delay(log(close), 3))", None, false),
    ];
    let specs: Vec<(String, StrategySpec)> = cases
        .iter()
        .map(|(signal, book, _)| {
            let mut spec = StrategySpec::new(*signal);
            spec.portfolio = book.cloned().unwrap_or(Portfolio::TopK { k: 1 });
            (signal.to_string(), spec)
        })
        .collect();
    let results = s.run_with_folds(&specs, &[Part::Train, Part::Validation]);
    for ((signal, _, expected), r) in cases.iter().zip(&results) {
        assert!(r.error.is_none(), "{signal}: {:?}", r.error);
        assert_eq!(r.level_dependent, *expected, "{signal}");
    }
    // Crypto prices are not adjusted: their levels are as of their bars, and nothing is flagged.
    let crypto = session_in("levels-crypto", "crypto_tiny");
    let results = crypto.run_with_folds(&specs, &[Part::Train, Part::Validation]);
    assert!(
        results
            .iter()
            .all(|r| r.error.is_none() && !r.level_dependent)
    );
    let results = s.run_with_folds(&specs, &[Part::Train, Part::Validation]);
    // The flag travels with the result (and is left out when false).
    let json = serde_json::to_value(&results[0]).unwrap();
    assert_eq!(json["level_dependent"], true);
    assert!(
        serde_json::to_value(&results[3])
            .unwrap()
            .get("level_dependent")
            .is_none()
    );
}

/// A universe chosen by dollar volume reads price levels too: on adjusted prices a past close
/// times the volume traded is not what traded (a later split divides the close, not the
/// volume), so which names pass depends on later events. Flagged where it changes the book.
#[test]
fn a_liquidity_filter_on_adjusted_prices_is_flagged() {
    let s = session("liquidity");
    let spec = |top: usize| {
        let mut spec = StrategySpec::new("rank(-ts_sum(returns, 5))");
        spec.portfolio = Portfolio::TopK { k: 1 };
        spec.universe.top_liquid = Some(top);
        (format!("top {top}"), spec)
    };
    // The most liquid name alone: which one it is depends on the level. All three: it does not.
    let specs = [spec(1), spec(3)];
    let flags: Vec<bool> = s
        .run_with_folds(&specs, &[Part::Train, Part::Validation])
        .iter()
        .map(|r| r.level_dependent)
        .collect();
    assert_eq!(flags, [true, false]);
    let crypto = session_in("liquidity-crypto", "crypto_tiny");
    let results = crypto.run_with_folds(&specs, &[Part::Train, Part::Validation]);
    assert!(
        results
            .iter()
            .all(|r| r.error.is_none() && !r.level_dependent)
    );
}

/// A strategy built like a baseline is that baseline found again (correlation 1 over training
/// and validation), a long-only top-k book is never compared with always-long, and asking again
/// (the second call reads the baselines' returns back) gives the same answer.
#[test]
fn a_strategy_that_is_a_baseline_is_named_as_its_closest() {
    let s = session("closest");
    let mut copy = StrategySpec::new("-rank(ts_sum(returns, 5))");
    copy.portfolio = Portfolio::TopK { k: 1 };
    let mut other = copy.clone();
    other.signal = "rank(ts_sum(returns, 3))".into();
    let specs = [("a".to_string(), copy), ("b".to_string(), other)];
    let results = s.run(&specs, &[Part::Train, Part::Validation], false);
    let closest = s.closest_baselines(&results);
    let (name, c) = closest[0].clone().unwrap();
    assert_eq!(name, "short-term reversal, 5 days");
    assert!((c - 1.0).abs() < 1e-12, "{c}");
    let (name, c) = closest[1].clone().unwrap();
    assert!(!name.starts_with("always long"), "{name}");
    assert!(c.abs() < 0.999, "{name} {c}");
    assert_eq!(s.closest_baselines(&results), closest);
}

/// A strategy is tested against always long on each part's own bars: the z of the difference of
/// their per-bar Sharpe ratios (Memmel's variance, written out here again), and the difference
/// of their annualised Sharpe ratios.
#[test]
fn a_strategy_is_tested_against_always_long_part_by_part() {
    let s = session("versus");
    let mut template = StrategySpec::new("-ts_sum(returns, 5)");
    template.portfolio = Portfolio::TopK { k: 1 };
    template.costs.bps = COST * 1e4;
    let parts = [Part::Train, Part::Validation];
    let results = s.run(&[("reversal".to_string(), template.clone())], &parts, false);
    let base = s.run(&baselines(&template, 1)[..1], &parts, false);
    assert_eq!(base[0].name, "always long, equal weight");
    let tests = s.versus_baseline(&results, &base[0]);
    assert_eq!(tests.len(), 2);
    let (book, base_book) = (
        results[0].book.as_ref().unwrap(),
        base[0].book.as_ref().unwrap(),
    );
    for (t, part) in tests.iter().zip(parts) {
        assert_eq!((t.strategy.as_str(), t.part), ("reversal", part));
        let r = s.splits().range(part);
        let pairs: Vec<(f64, f64)> = book.net[r.clone()]
            .iter()
            .zip(&base_book.net[r])
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| (*a, *b))
            .collect();
        let n = pairs.len() as f64;
        let mean = |f: fn(&(f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / n;
        let (ma, mb) = (mean(|p| p.0), mean(|p| p.1));
        let cov = |f: fn(&(f64, f64)) -> f64, g: fn(&(f64, f64)) -> f64, mf: f64, mg: f64| {
            pairs.iter().map(|p| (f(p) - mf) * (g(p) - mg)).sum::<f64>() / (n - 1.0)
        };
        let (va, vb) = (cov(|p| p.0, |p| p.0, ma, ma), cov(|p| p.1, |p| p.1, mb, mb));
        let rho = cov(|p| p.0, |p| p.1, ma, mb) / (va * vb).sqrt();
        let (sa, sb) = (ma / va.sqrt(), mb / vb.sqrt());
        let var = (2.0 * (1.0 - rho) + 0.5 * (sa * sa + sb * sb - 2.0 * sa * sb * rho * rho)) / n;
        let z = (sa - sb) / var.sqrt();
        assert!((t.z - z).abs() < 1e-9, "{part:?}: {} against {z}", t.z);
        let sharpe = |r: &lim_backtest::session::StrategyResult| {
            r.metrics.iter().find(|(p, _)| *p == part).unwrap().1.sharpe
        };
        assert!((t.sharpe_difference - (sharpe(&results[0]) - sharpe(&base[0]))).abs() < 1e-12);
    }
    assert_ne!(tests[0].z, tests[1].z, "each part on its own bars");
}

/// Strategies of several constructions are each tested against the always-long book built like
/// itself: the one with higher costs against always long paying those costs.
#[test]
fn each_strategy_is_tested_against_always_long_built_like_itself() {
    let s = session("versus-own");
    let parts = [Part::Train, Part::Validation];
    let mut cheap = StrategySpec::new("-ts_sum(returns, 5)");
    cheap.portfolio = Portfolio::TopK { k: 1 };
    cheap.costs.bps = COST * 1e4;
    let mut dear = cheap.clone();
    dear.costs.bps = 20.0 * COST * 1e4;
    let specs = [
        ("cheap".to_string(), cheap.clone()),
        ("dear".to_string(), dear.clone()),
    ];
    let results = s.run(&specs, &parts, false);
    let tests = s.versus_always_long(&results, &parts);
    assert_eq!(tests.len(), 4, "{tests:?}");
    for (r, spec) in results.iter().zip([&cheap, &dear]) {
        let own = s.run(&baselines(spec, 1)[..1], &parts, false);
        let want = s.versus_baseline(std::slice::from_ref(r), &own[0]);
        let got: Vec<_> = tests
            .iter()
            .filter(|t| t.strategy == r.name)
            .cloned()
            .collect();
        assert_eq!(got, want, "{}", r.name);
    }
    // Against always long built like the first, the dear strategy would look worse (always
    // long pays its costs once, on entry: in the training part).
    let first = s.run(&baselines(&cheap, 1)[..1], &parts, false);
    let unfair = s.versus_baseline(&results[1..], &first[0]);
    let fair: Vec<_> = tests.iter().filter(|t| t.strategy == "dear").collect();
    assert!(
        unfair[0].sharpe_difference < fair[0].sharpe_difference - 1.0
            && unfair
                .iter()
                .zip(&fair)
                .all(|(u, f)| u.sharpe_difference <= f.sharpe_difference),
        "{unfair:?} {fair:?}"
    );
}
