//! The reference fixture, shared by the tests that compare against it.

use std::path::{Path, PathBuf};

use lim_backtest::{Frame, frame};
use lim_market::{AsOf, Catalog, Field, PanelQuery, PanelSet, RollPolicy};

/// The fixture directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The seeded 100 x 400 reference panel as panels and as an evaluation frame.
pub fn reference_panel() -> (PanelSet, Frame) {
    let catalog = Catalog::single_file(&fixtures().join("reference_panel.csv.gz"), None)
        .expect("fixture loads");
    let q = PanelQuery::new(AsOf::LATEST, ["reference_panel"])
        .fields(
            frame::FIELDS
                .into_iter()
                .filter(|f| *f != Field::OpenInterest),
        )
        .roll(RollPolicy::None);
    let set = catalog.panels(&q).expect("fixture panels");
    let frame = frame::from_panels(&set);
    (set, frame)
}
