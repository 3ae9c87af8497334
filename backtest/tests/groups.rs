//! Groupings from the data (`groups.csv` beside the datasets) in the strategy language:
//! industry neutralisation as Alpha101 writes it, and a clear refusal when a symbol has no
//! label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use lim_backtest::frame;
use lim_backtest::session::Session;
use lim_backtest::spec::StrategySpec;
use lim_backtest::{Evaluator, parse_with};
use lim_market::{AsOf, Catalog, Field, PanelQuery, Part, RollPolicy, SplitSpec};

const SYMBOLS: [&str; 4] = ["AA", "BB", "CC", "DD"];

fn data(groups: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("ts,symbol,open,high,low,close,volume\n");
    for (i, s) in SYMBOLS.iter().enumerate() {
        let mut p = 100.0;
        for d in 1..=28 {
            p *= 1.0 + 0.01 * ((d * (i + 2)) as f64).sin();
            csv.push_str(&format!("2024-02-{d:02},{s},{p},{p},{p},{p},1000\n"));
        }
    }
    std::fs::write(dir.path().join("stocks.csv"), csv).unwrap();
    std::fs::write(dir.path().join("groups.csv"), groups).unwrap();
    dir
}

fn panels(dir: &std::path::Path) -> lim_market::PanelSet {
    let catalog = Catalog::open_dir(dir, None).unwrap();
    assert_eq!(catalog.names().count(), 1, "groups.csv is not a dataset");
    let q = PanelQuery::new(AsOf::LATEST, ["stocks"])
        .fields(
            frame::FIELDS
                .into_iter()
                .filter(|f| *f != Field::OpenInterest),
        )
        .roll(RollPolicy::None);
    catalog.panels(&q).unwrap()
}

#[test]
fn group_demean_by_sector_subtracts_each_sectors_mean() {
    let dir = data(
        "symbol,sector,industry\nAA,tech,chips\nBB,tech,software\nCC,energy,oil\nDD,energy,oil\n",
    );
    let set = panels(dir.path());
    assert_eq!(
        set.groups["sector"],
        vec![
            Some("tech".into()),
            Some("tech".into()),
            Some("energy".into()),
            Some("energy".into())
        ]
    );
    let f = frame::from_panels(&set);
    assert_eq!(
        f.group_names(),
        ["exchange", "asset_class", "industry", "sector"]
    );
    let e = parse_with(
        "group_demean(returns, sector)",
        &f.field_names(),
        &f.group_names(),
    )
    .unwrap();
    let got = Evaluator::new(&f, std::slice::from_ref(&e)).signal(&e);
    let r = &f.fields["returns"];
    for t in 1..f.t {
        let v = |j: usize| r.data[j * f.t + t];
        let (tech, energy) = ((v(0) + v(1)) / 2.0, (v(2) + v(3)) / 2.0);
        let want = [v(0) - tech, v(1) - tech, v(2) - energy, v(3) - energy];
        for (j, w) in want.iter().enumerate() {
            let g = got.values.data[j * f.t + t];
            assert!((g - w).abs() < 1e-12, "bar {t}, {}: {g} vs {w}", SYMBOLS[j]);
        }
    }
    // Unknown groupings are refused with the ones there are.
    let err = parse_with(
        "group_rank(returns, sectr)",
        &f.field_names(),
        &f.group_names(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sector"), "{err}");
}

#[test]
fn a_symbol_without_a_label_is_refused_by_name() {
    let dir = data("symbol,sector\nAA,tech\nBB,tech\nCC,energy\n");
    let mut set = panels(dir.path());
    let session = Session::new(
        &mut set,
        SplitSpec::Fractions {
            train: 0.5,
            valid: 0.25,
            embargo: 0,
        },
    )
    .unwrap();
    let r = session.run(
        &[
            (
                "neutral".into(),
                StrategySpec::new("group_rank(returns, sector)"),
            ),
            ("plain".into(), StrategySpec::new("rank(returns)")),
        ],
        &[Part::Train],
        false,
    );
    let e = r[0].error.as_deref().unwrap();
    assert!(
        e.contains("'sector'") && e.contains("1 of the 4") && e.contains("DD"),
        "{e}"
    );
    assert!(
        r[1].error.is_none(),
        "a strategy without the grouping still runs"
    );
}
