//! What a book is judged on. A top-k book: the bars where it had a choice (before enough of its
//! universe trades, as with equity indices, one name in 1971 and ten by 2019, a book of k names
//! holds whatever trades, so every signal earns the same there and those bars must not make up
//! a selection fold). A ranked book that holds the same names throughout is an allocation, not a
//! signal. Any book: its co-movement with always-long, kept or run alike.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use lim_backtest::metrics;
use lim_backtest::session::{CHOICE_FACTOR, MIN_HOLDING_CHANGES_PER_YEAR, Session};
use lim_backtest::spec::{Portfolio, StrategySpec};
use lim_market::Part;

mod common;

const T: usize = 200;
/// When the three later instruments start trading.
const JOIN: usize = 80;

/// 2020-01-01 plus `t` days, as text (2020 is a leap year; `t` < 366).
fn day(t: usize) -> String {
    let mut d = t + 1;
    for (m, len) in [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        .into_iter()
        .enumerate()
    {
        if d <= len {
            return format!("2020-{:02}-{d:02}", m + 1);
        }
        d -= len;
    }
    panic!("day {t} is not in 2020")
}

/// S0 trades from the first bar and rises steadily; S1 to S3 join at bar [`JOIN`] and wander.
/// Each trades the same volume every day, S0 the most.
fn session() -> Session {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.csv");
    let mut csv = String::from("ts,symbol,open,high,low,close,volume\n");
    for i in 0..4usize {
        let mut p = 100.0;
        for t in 0..T {
            p *= if i == 0 {
                1.0 + 0.002 + 0.01 * (0.9 * t as f64).sin()
            } else {
                1.0 + 0.02 * (1.3 * (t * (i + 1)) as f64 + i as f64).sin()
            };
            if i == 0 || t >= JOIN {
                // S0 trades the most, S3 the least.
                let volume = 1000 * (4 - i);
                csv.push_str(&format!("{},S{i},{p},{p},{p},{p},{volume}\n", day(t)));
            }
        }
    }
    std::fs::write(&path, csv).unwrap();
    common::session(&path)
}

/// A top-1 book of `signal`, named by it.
fn top1(signal: &str) -> (String, StrategySpec) {
    let mut spec = StrategySpec::new(signal);
    spec.portfolio = Portfolio::TopK { k: 1 };
    (signal.to_string(), spec)
}

/// A sign book of `signal`, sized by 10 bars of volatility.
fn sign_book(signal: &str) -> StrategySpec {
    let mut spec = StrategySpec::new(signal);
    spec.portfolio = Portfolio::SignThreshold {
        threshold: 0.0,
        target_vol: 0.1,
        vol_window: 10,
        vol_forecast: None,
    };
    spec
}

#[test]
fn a_top_k_book_is_judged_from_where_it_had_a_choice() {
    let s = session();
    let sign = sign_book("ts_sum(returns, 5)");
    // A universe of the single most liquid instrument never offers a choice.
    let mut narrow = top1("rank(ts_sum(returns, 5))");
    narrow.1.universe.top_liquid = Some(1);
    let specs = vec![
        top1("rank(ts_sum(returns, 5))"),
        top1("rank(-ts_sum(returns, 5))"),
        ("sign".to_string(), sign),
        narrow,
    ];
    let results = s.run_with_folds(&specs, &[Part::Train, Part::Validation]);
    let session_folds = s.selection_folds();
    assert_eq!(
        session_folds[0][0].start, 0,
        "the session's folds start at bar 0"
    );

    for r in &results[..2] {
        assert!(r.error.is_none(), "{}: {:?}", r.name, r.error);
        let book = r.book.as_ref().unwrap();
        // What trades: S0 alone, then all four from the others' first bar.
        let first = book
            .tradable
            .iter()
            .position(|c| *c as usize >= CHOICE_FACTOR)
            .unwrap();
        assert_eq!(first, JOIN, "{}", r.name);
        assert!(
            book.tradable[..JOIN].iter().all(|c| *c == 1),
            "S0 alone before"
        );
        assert_eq!(book.tradable[JOIN], 4);
        let folds = s.selection_folds_of(&r.spec, book);
        assert_eq!(folds.len(), session_folds.len());
        assert_eq!(folds[0][0].start, first, "{}", r.name);
        assert!(folds.iter().flatten().all(|b| b.start >= first));
        assert_eq!(
            r.selection_folds,
            metrics::on_folds(book, &folds, s.periods())
        );
    }
    // On the session's first fold both books held S0 alone: the same returns, whatever the
    // signal. On their own folds the two opposite signals are told apart in every fold.
    let on_session = |i: usize| {
        metrics::on_folds(
            results[i].book.as_ref().unwrap(),
            &session_folds,
            s.periods(),
        )
    };
    assert_eq!(on_session(0)[0], on_session(1)[0]);
    for (a, b) in results[0]
        .selection_folds
        .iter()
        .zip(&results[1].selection_folds)
    {
        assert!(a.sharpe != b.sharpe, "{a:?} {b:?}");
    }
    // A sign book trades each instrument on its own: its folds are the session's. So are the
    // folds of a book whose universe never offers a choice: there is no better period to judge.
    for r in &results[2..] {
        let book = r.book.as_ref().unwrap();
        assert_eq!(
            s.selection_folds_of(&r.spec, book),
            session_folds,
            "{}",
            r.name
        );
    }
    assert!(
        results[3]
            .book
            .as_ref()
            .unwrap()
            .tradable
            .iter()
            .all(|c| *c <= 1)
    );
}

/// A top-k book that ranks what never changes across instruments (here the volume each trades
/// every day) holds the same name throughout: a fixed allocation. One that ranks recent
/// returns changes its names often. A sign book is not counted: its weights move with every
/// value of its signal.
#[test]
fn a_ranked_book_that_keeps_its_names_is_a_fixed_allocation() {
    let s = session();
    let sign = sign_book("ts_sum(returns, 5)");
    let specs = vec![
        top1("rank(volume)"),
        top1("rank(ts_sum(returns, 5))"),
        ("sign".to_string(), sign),
    ];
    let results = s.run_with_folds(&specs, &[Part::Train, Part::Validation]);
    let changes: Vec<Option<f64>> = results.iter().map(|r| r.holding_changes_per_year).collect();
    assert_eq!(changes[0], Some(0.0), "{changes:?}");
    assert!(
        changes[1].is_some_and(|c| c > 10.0 * MIN_HOLDING_CHANGES_PER_YEAR),
        "{changes:?}"
    );
    assert_eq!(changes[2], None);
    // It travels with the result, as the `backtest` tool and a cluster worker give it.
    let json = serde_json::to_value(&results[0]).unwrap();
    assert_eq!(json["holding_changes_per_year"], 0.0);
    assert!(
        serde_json::to_value(&results[2])
            .unwrap()
            .get("holding_changes_per_year")
            .is_none()
    );
}

/// A book's co-movement with always-long of its construction: on training and validation from
/// the baseline returns the session keeps, on the sealed test from a run; both as a fresh
/// session computes them, and always-long itself moves with itself.
#[test]
fn always_long_co_movement_is_the_same_kept_or_run() {
    let spec = sign_book(lim_backtest::baseline::ALWAYS_LONG);
    let other = sign_book("ts_sum(returns, 5)");
    let specs = vec![
        ("always long".to_string(), spec),
        ("trend".to_string(), other),
    ];
    let s = session();
    let results = s.run_with_folds(&specs, &[Part::Train, Part::Validation]);
    for part in [Part::Validation, Part::Train, Part::Test] {
        let first = s.always_long_co_move(&results, part);
        // The second call reads the kept returns; a fresh session runs them.
        assert_eq!(s.always_long_co_move(&results, part), first, "{part:?}");
        assert_eq!(
            session().always_long_co_move(&results, part),
            first,
            "{part:?}"
        );
        assert!(
            (first[0].correlation - 1.0).abs() < 1e-12,
            "{part:?}: {:?}",
            first[0]
        );
        assert!((first[0].beta - 1.0).abs() < 1e-12);
        assert!(
            first[1].correlation.abs() < 0.99 && first[1].bars > 20,
            "{:?}",
            first[1]
        );
    }
}
