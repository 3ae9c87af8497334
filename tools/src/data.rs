//! Tools over market data.

use std::sync::Arc;

use lim_market::{MarketData, MarketError};
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

/// Lists the datasets available.
#[derive(Debug, Clone)]
pub struct ListDatasets {
    /// Where the data comes from.
    pub market: Arc<dyn MarketData>,
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
        let lines = metas
            .into_iter()
            .map(|m| {
                let mut classes: Vec<String> = m
                    .symbols
                    .iter()
                    .map(|s| s.instrument.asset_class.as_str().to_string())
                    .collect();
                classes.sort();
                classes.dedup();
                DatasetLine {
                    frequency: m.frequency.to_string(),
                    symbols: m.symbols.len(),
                    first: m.first.display(m.frequency),
                    last: m.last.display(m.frequency),
                    asset_classes: classes,
                    open_interest: m.has_open_interest,
                    extra_fields: m.extra_fields,
                    name: m.name,
                }
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
    /// Bars.
    pub rows: u64,
}

/// Describes one dataset's instruments.
#[derive(Debug, Clone)]
pub struct DescribeDataset {
    /// Where the data comes from.
    pub market: Arc<dyn MarketData>,
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
        ToolOutcome::Done {
            result: m
                .symbols
                .into_iter()
                .map(|s| SymbolLine {
                    first: s.first.display(f),
                    last: s.last.display(f),
                    rows: s.rows,
                    exchange: s.instrument.exchange,
                    symbol: s.instrument.symbol,
                })
                .collect(),
        }
    }
}
