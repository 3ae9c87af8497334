//! The research memory: what earlier runs found, per dataset, so the next run builds on the
//! last instead of starting blind. The run store keeps it; this crate only defines what a
//! finding is, the trait it is read through (which the trace layer wraps), and the tool.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailureKind, Tool, ToolOutcome};

/// One strategy an earlier run tried, with what it showed and what its critic concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The datasets it traded, joined with `+`.
    pub datasets: String,
    /// Bar frequency.
    pub frequency: String,
    /// The run.
    pub run: String,
    /// The run's goal.
    pub goal: String,
    /// The signal.
    pub signal: String,
    /// Training Sharpe.
    #[serde(with = "lim_backtest::nonfinite")]
    pub train_sharpe: f64,
    /// Validation Sharpe.
    #[serde(with = "lim_backtest::nonfinite")]
    pub validation_sharpe: f64,
    /// Sharpe on the sealed test, if it was a finalist (read once, at that run's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_sharpe: Option<f64>,
    /// The critic's last diagnosis of that run.
    pub conclusion: String,
}

/// Where findings are read from.
pub trait Memory: Send + Sync + std::fmt::Debug {
    /// Findings for `datasets` (all when empty), best validation Sharpe first, at most `limit`.
    ///
    /// # Errors
    /// The memory cannot be read.
    fn findings(&self, datasets: &[String], limit: usize) -> Result<Vec<Finding>, String>;
}

/// A memory with nothing in it (a run without a store).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMemory;

impl Memory for NoMemory {
    fn findings(&self, _datasets: &[String], _limit: usize) -> Result<Vec<Finding>, String> {
        Ok(Vec::new())
    }
}

/// Arguments of `past_findings`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PastFindingsArgs {
    /// Datasets, as `list_datasets` names them; all when absent.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// How many, best validation Sharpe first (at most 50).
    #[serde(default = "twenty")]
    pub limit: usize,
}

fn twenty() -> usize {
    20
}

/// Reads the research memory.
#[derive(Debug, Clone)]
pub struct PastFindings {
    /// The memory (journaled in a run).
    pub memory: Arc<dyn Memory>,
}

impl Tool for PastFindings {
    const NAME: &'static str = "past_findings";
    type Args = PastFindingsArgs;
    type Output = Vec<Finding>;

    fn description(&self) -> String {
        "What earlier research runs found on these datasets: strategies tried, their training, validation \
         and (for finalists) test Sharpe ratios, and what each run's critic concluded. Build on them; \
         do not repeat what failed."
            .into()
    }

    async fn call(&self, args: PastFindingsArgs) -> ToolOutcome<Vec<Finding>> {
        match self
            .memory
            .findings(&args.datasets, args.limit.clamp(1, 50))
        {
            Ok(f) => ToolOutcome::Done { result: f },
            Err(e) => ToolOutcome::failed(FailureKind::Failed, e),
        }
    }
}
