//! Tools over market data.

use std::sync::Arc;

use lim_market::{AsOf, Frequency, MarketData, MarketError, SymbolMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailureKind, Tool, ToolOutcome};

/// No arguments.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// One line about a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetLine {
    /// Its name.
    pub name: String,
    /// Bar frequency.
    pub frequency: String,
    /// Instruments.
    pub symbols: usize,
    /// First bar.
    pub first: String,
    /// Last bar.
    pub last: String,
    /// Asset classes present.
    pub asset_classes: Vec<String>,
    /// Whether open interest is present.
    pub open_interest: bool,
    /// Numeric columns of the file beyond the format's own (e.g. `cap`), usable as fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_fields: Vec<String>,
}

/// Where a run's data ends, so that describing the datasets shows nothing after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataEnd {
    /// The whole stored history.
    #[default]
    Whole,
    /// At this time (`--as-of`): instruments that first trade later are left out, and a last
    /// bar after it is shown as the cut.
    AsOf(AsOf),
    /// Somewhere that depends on the universe chosen (`--earlier`: before the sealed test of
    /// the later data): no last bar and no bar count are shown.
    Cut,
}

impl DataEnd {
    /// The end of a run's data from its `as_of` text and `earlier` count; a text that is not a
    /// time hides the ends, like `earlier` (choosing the universe then says what is wrong).
    pub fn of(as_of: Option<&str>, earlier: u32) -> DataEnd {
        match (as_of, earlier) {
            (None, 0) => DataEnd::Whole,
            (Some(text), 0) => AsOf::parse(text).map_or(DataEnd::Cut, DataEnd::AsOf),
            _ => DataEnd::Cut,
        }
    }

    /// What to say of `s` (first bar, last bar, bar count), or `None` when it first trades
    /// after the end.
    fn describe(self, s: &SymbolMeta, f: Frequency) -> Option<(String, String, Option<u64>)> {
        let first = s.first.display(f);
        match self {
            DataEnd::Whole => Some((first, s.last.display(f), Some(s.rows))),
            DataEnd::AsOf(t) if !t.sees(s.first, f) => None,
            DataEnd::AsOf(t) if t.sees(s.last, f) => Some((first, s.last.display(f), Some(s.rows))),
            DataEnd::AsOf(t) => Some((first, format!("cut at {t} (the run's as-of time)"), None)),
            DataEnd::Cut => Some((
                first,
                "before the sealed test of the later data (cut when the universe is chosen)".into(),
                None,
            )),
        }
    }
}

/// Lists the datasets available.
#[derive(Debug, Clone)]
pub struct ListDatasets {
    /// Where the data comes from.
    pub market: Arc<dyn MarketData>,
    /// Where the run's data ends.
    pub end: DataEnd,
}

fn failure<T>(e: MarketError) -> ToolOutcome<T> {
    let kind = match e {
        MarketError::UnknownDataset { .. } | MarketError::UnknownSymbol { .. } => {
            FailureKind::NotFound
        }
        _ => FailureKind::Failed,
    };
    ToolOutcome::failed(kind, e.to_string())
}

impl Tool for ListDatasets {
    const NAME: &'static str = "list_datasets";
    type Args = NoArgs;
    type Output = Vec<DatasetLine>;

    fn description(&self) -> String {
        "List the market datasets available: name, bar frequency, number of instruments, date range, asset classes.".into()
    }

    async fn call(&self, _args: NoArgs) -> ToolOutcome<Vec<DatasetLine>> {
        let market = self.market.clone();
        let metas = match tokio::task::spawn_blocking(move || market.datasets()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return failure(e),
            Err(e) => return ToolOutcome::failed(FailureKind::Failed, e.to_string()),
        };
        let end = self.end;
        let lines = metas
            .into_iter()
            .filter_map(|m| {
                let f = m.frequency;
                let seen: Vec<&SymbolMeta> = m
                    .symbols
                    .iter()
                    .filter(|s| end.describe(s, f).is_some())
                    .collect();
                let mut classes: Vec<String> = seen
                    .iter()
                    .map(|s| s.instrument.asset_class.as_str().to_string())
                    .collect();
                classes.sort();
                classes.dedup();
                // The dataset's ends are its instruments' earliest first and latest last bar.
                let first = seen.iter().min_by_key(|s| s.first)?;
                let last = seen.iter().max_by_key(|s| s.last)?;
                Some(DatasetLine {
                    frequency: f.to_string(),
                    symbols: seen.len(),
                    first: first.first.display(f),
                    last: end.describe(last, f)?.1,
                    asset_classes: classes,
                    open_interest: m.has_open_interest,
                    extra_fields: m.extra_fields.clone(),
                    name: m.name.clone(),
                })
            })
            .collect();
        ToolOutcome::Done { result: lines }
    }
}

/// Arguments of `describe_dataset`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeDatasetArgs {
    /// The dataset's name, as `list_datasets` gives it.
    pub dataset: String,
}

/// One instrument of a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct SymbolLine {
    /// Symbol.
    pub symbol: String,
    /// Exchange, when known.
    pub exchange: Option<String>,
    /// First bar.
    pub first: String,
    /// Last bar.
    pub last: String,
    /// Bars (not counted when the run's data is cut before its last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// Describes one dataset's instruments.
#[derive(Debug, Clone)]
pub struct DescribeDataset {
    /// Where the data comes from.
    pub market: Arc<dyn MarketData>,
    /// Where the run's data ends.
    pub end: DataEnd,
}

impl Tool for DescribeDataset {
    const NAME: &'static str = "describe_dataset";
    type Args = DescribeDatasetArgs;
    type Output = Vec<SymbolLine>;

    fn description(&self) -> String {
        "Describe one dataset: each instrument's symbol, exchange, first and last bar and number of bars.".into()
    }

    async fn call(&self, args: DescribeDatasetArgs) -> ToolOutcome<Vec<SymbolLine>> {
        let market = self.market.clone();
        let metas = match tokio::task::spawn_blocking(move || market.datasets()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return failure(e),
            Err(e) => return ToolOutcome::failed(FailureKind::Failed, e.to_string()),
        };
        let names: Vec<String> = metas.iter().map(|m| m.name.clone()).collect();
        let Some(m) = metas.into_iter().find(|m| m.name == args.dataset) else {
            return ToolOutcome::failed(
                FailureKind::NotFound,
                format!(
                    "no dataset '{}'; the datasets are {}",
                    args.dataset,
                    names.join(", ")
                ),
            );
        };
        let f = m.frequency;
        let end = self.end;
        ToolOutcome::Done {
            result: m
                .symbols
                .into_iter()
                .filter_map(|s| {
                    let (first, last, rows) = end.describe(&s, f)?;
                    Some(SymbolLine {
                        first,
                        last,
                        rows,
                        exchange: s.instrument.exchange,
                        symbol: s.instrument.symbol,
                    })
                })
                .collect(),
        }
    }
}
