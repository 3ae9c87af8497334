//! Market data for LIM.
//!
//! A data directory holds datasets, one file each, in the uniform format (`docs/data.md`) as
//! CSV (gzipped or not) or [`parquet`].
//! A [`Catalog`] scans a directory (or the bundled [`sample`]) and loads a dataset on demand:
//! the [`reader`] parses the file once into a dense [`Dataset`], and the [`cache`] keeps that
//! as a binary file for fast reloads. A [`PanelQuery`], which always carries an [`AsOf`] time,
//! turns datasets into aligned `times × symbols` [`Panel`]s, resampled to a coarser
//! [`Frequency`] if asked, with futures rolls detected and back-adjusted ([`roll`]) and
//! derived fields (returns, VWAP proxy, dollar volume). [`Splits`] cut a time axis into
//! train, validation and test parts with embargo gaps.
//!
//! Everything here is synchronous and deterministic. The only IO is reading data files and
//! reading and writing cache files; data files are never written (a [`convert`]ed copy is a new
//! file, and [`parquet::Table`] writes result tables where it is told).
//!
//! [`MarketData`] is the seam through which the rest of LIM reads data, so that a trace layer
//! can record and replay reads.

pub mod cache;
pub mod catalog;
pub mod dataset;
pub mod error;
pub mod files;
pub mod groups;
pub mod instrument;
pub mod panel;
pub mod parquet;
pub mod reader;
pub mod roll;
pub mod same;
pub mod sample;
pub mod source;
pub mod split;
pub mod stats;
pub mod time;

pub use cache::Cache;
pub use catalog::{
    Catalog, CheckReport, ConvertReport, LoadSource, Progress, ProgressSink, check_file, convert,
};
pub use dataset::{Dataset, DatasetMeta, Field, SymbolMeta};
pub use error::MarketError;
pub use groups::GroupTable;
pub use instrument::{AssetClass, Instrument, Manifest, Session};
pub use panel::{Panel, PanelQuery, PanelSet, RollPolicy, Span};
pub use reader::Problem;
pub use roll::{Roll, RollConfig};
pub use same::{SameSeries, same_series};
pub use split::{Part, SplitSpec, Splits};
pub use time::{AsOf, Frequency, Timestamp};

/// The read side of market data, as the rest of LIM sees it. Every data read crosses this
/// trait, so a trace layer can wrap it.
pub trait MarketData: Send + Sync + std::fmt::Debug {
    /// Summaries of every dataset.
    ///
    /// # Errors
    /// A dataset cannot be read.
    fn datasets(&self) -> Result<Vec<DatasetMeta>, MarketError>;

    /// Aligned panels for a query.
    ///
    /// # Errors
    /// See [`Catalog::panels`].
    fn panels(&self, query: &PanelQuery) -> Result<PanelSet, MarketError>;
}

impl MarketData for Catalog {
    fn datasets(&self) -> Result<Vec<DatasetMeta>, MarketError> {
        self.names().map(|n| self.meta(n)).collect()
    }

    fn panels(&self, query: &PanelQuery) -> Result<PanelSet, MarketError> {
        Catalog::panels(self, query)
    }
}
