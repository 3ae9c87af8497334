//! The reference fixture, shared by the tests that compare against it, and panels of a data
//! file a test writes.

#![allow(dead_code)] // each test crate uses a part

use std::path::{Path, PathBuf};

use lim_backtest::session::Session;
use lim_backtest::{Frame, frame};
use lim_market::{AsOf, Catalog, Field, PanelQuery, PanelSet, RollPolicy, SplitSpec};

/// The fixture directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The seeded 100 x 400 reference panel as panels and as an evaluation frame.
pub fn reference_panel() -> (PanelSet, Frame) {
    let set = panels(&fixtures().join("reference_panel.csv.gz"));
    let frame = frame::from_panels(&set);
    (set, frame)
}

/// Every instrument of one data file in the uniform format (named by its stem), as of now,
/// with the backtester's fields (no open interest) and no roll adjustment.
pub fn panels(path: &Path) -> PanelSet {
    let catalog = Catalog::single_file(path, None).expect("data file loads");
    let name = catalog.names().next().expect("one dataset").to_string();
    let q = PanelQuery::new(AsOf::LATEST, [name])
        .fields(
            frame::FIELDS
                .into_iter()
                .filter(|f| *f != Field::OpenInterest),
        )
        .roll(RollPolicy::None);
    catalog.panels(&q).expect("panels load")
}

/// A session of one data file, split 60 % training, 20 % validation and the rest sealed test,
/// two bars of embargo between parts.
pub fn session(path: &Path) -> Session {
    let mut set = panels(path);
    Session::new(
        &mut set,
        SplitSpec::Fractions {
            train: 0.6,
            valid: 0.2,
            embargo: 2,
        },
    )
    .expect("the split leaves every part some bars")
}
