//! The bundled sample: small subsets of real datasets compiled into the binary, so that LIM
//! runs on a machine with no data of its own. Provenance is in `market/sample/README.md`.

use crate::source::Origin;

/// (file name, bytes) of every bundled dataset.
pub const FILES: &[(&str, &[u8])] = &[
    (
        "cn_futures_daily.csv.gz",
        include_bytes!("../sample/cn_futures_daily.csv.gz"),
    ),
    (
        "in_equities_5min.csv.gz",
        include_bytes!("../sample/in_equities_5min.csv.gz"),
    ),
    (
        "us_equities_daily_adjusted.csv.gz",
        include_bytes!("../sample/us_equities_daily_adjusted.csv.gz"),
    ),
    (
        "us_futures_daily.csv.gz",
        include_bytes!("../sample/us_futures_daily.csv.gz"),
    ),
];

/// The bundled datasets as origins.
pub fn origins() -> impl Iterator<Item = (String, Origin)> {
    FILES.iter().map(|(name, bytes)| {
        let stem = name.trim_end_matches(".csv.gz").to_string();
        (stem, Origin::Embedded { name, bytes })
    })
}
