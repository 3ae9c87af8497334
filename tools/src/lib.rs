//! Tools: the only bridge between agents and LIM's engines.
//!
//! A [`Tool`] has typed arguments (their JSON Schema, from `schemars` and the doc comments, is
//! what the model sees), an async call, and failure as a value ([`ToolOutcome::Failed`]) that
//! goes back to the model so it can try again; only infrastructure failures would propagate.
//! [`DynTool`] is its object-safe twin and [`Registry`] lists tools in a stable order. Heavy
//! work runs on tokio's blocking pool, never on the reactor.

mod backtest;
mod data;
mod diagnose;
mod foundation;
mod memory;
mod research;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use backtest::{
    ALWAYS_LONG, BacktestArgs, BacktestReport, BacktestTool, RemoteBacktests, Scorer, Verdict,
    always_long,
};
pub use data::{DataEnd, DescribeDataset, DescribeDatasetArgs, ListDatasets, NoArgs};
pub use diagnose::{Diagnose, DiagnoseArgs, DiagnoseReport, Diagnosis};
pub use foundation::{
    FieldRecord, Finetune, FinetuneArgs, FinetuneStep, FinetuneTarget, Finetuned, FoundationModel,
    Lab, LabState, ModelRequest, Predict, PredictArgs, Pretrain, PretrainArgs, PretrainStep,
    Pretrained, Recipe, TrainReport, TrainedRecord, TuneMode,
};
pub use memory::{Finding, Memory, NoMemory, PastFindings, PastFindingsArgs};
pub use research::{
    ChooseUniverse, ChooseUniverseArgs, Leaderboard, LeaderboardArgs, Lineage, LineageArgs,
    ResearchLog, Trial, Universe, load_session, load_universe,
};

/// What the model is told about a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does and when to use it.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// Why a tool call failed, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The arguments did not match the schema.
    InvalidArguments,
    /// A dataset, symbol or tool that does not exist.
    NotFound,
    /// The sealed test period was asked for.
    Sealed,
    /// The work itself failed.
    Failed,
    /// The run's budget cannot pay for it.
    OverBudget,
}

/// A tool's result: a value, or a failure the model can act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ToolOutcome<T> {
    /// It worked.
    Done {
        /// The result.
        result: T,
    },
    /// It did not; `message` says why and what to do instead.
    Failed {
        /// The kind of failure.
        kind: FailureKind,
        /// The explanation.
        message: String,
    },
}

impl<T> ToolOutcome<T> {
    /// A failure.
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> ToolOutcome<T> {
        ToolOutcome::Failed {
            kind,
            message: message.into(),
        }
    }
}

/// A typed tool.
pub trait Tool: Send + Sync + 'static {
    /// The name the model calls it by.
    const NAME: &'static str;
    /// Whether it changes state other calls read (the universe, a budget): such a tool runs
    /// alone, in call order, never beside another call of the same reply.
    const EXCLUSIVE: bool = false;
    /// Its arguments; their schema is part of the prompt.
    type Args: DeserializeOwned + JsonSchema + Send;
    /// Its result.
    type Output: Serialize + Send;
    /// What it does, for the model.
    fn description(&self) -> String;
    /// Runs it.
    fn call(&self, args: Self::Args) -> impl Future<Output = ToolOutcome<Self::Output>> + Send;
}

/// The object-safe twin of [`Tool`], for registries.
pub trait DynTool: Send + Sync {
    /// The description the model sees.
    fn spec(&self) -> ToolSpec;
    /// See [`Tool::EXCLUSIVE`].
    fn exclusive(&self) -> bool;
    /// Runs the tool on JSON arguments; the outcome as JSON.
    fn call_json<'a>(&'a self, args: &'a str) -> Pin<Box<dyn Future<Output = Value> + Send + 'a>>;
}

/// A tool's parameters as a self-contained JSON Schema: definitions inlined (no `$ref`), since
/// servers that turn schemas into grammars (llama.cpp) cannot resolve references, and without
/// `$schema`.
pub fn parameters<A: JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.meta_schema = None;
        s.inline_subschemas = true;
    });
    settings
        .into_generator()
        .into_root_schema_for::<A>()
        .to_value()
}

impl<T: Tool> DynTool for T {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: T::NAME.to_string(),
            description: self.description(),
            parameters: parameters::<T::Args>(),
        }
    }

    fn exclusive(&self) -> bool {
        T::EXCLUSIVE
    }

    fn call_json<'a>(&'a self, args: &'a str) -> Pin<Box<dyn Future<Output = Value> + Send + 'a>> {
        Box::pin(async move {
            let outcome = match serde_json::from_str::<T::Args>(if args.trim().is_empty() {
                "{}"
            } else {
                args
            }) {
                Ok(a) => self.call(a).await,
                Err(e) => ToolOutcome::failed(
                    FailureKind::InvalidArguments,
                    format!("arguments of {}: {e}", T::NAME),
                ),
            };
            serde_json::to_value(outcome).unwrap_or_else(|e| serde_json::json!({"status": "failed", "kind": "failed", "message": e.to_string()}))
        })
    }
}

/// The tools an agent may use, listed by name.
#[derive(Default, Clone)]
pub struct Registry {
    tools: BTreeMap<String, Arc<dyn DynTool>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tools", &self.tools.keys())
            .finish()
    }
}

impl Registry {
    /// Adds a tool.
    pub fn with(mut self, tool: impl DynTool + 'static) -> Registry {
        let name = tool.spec().name;
        self.tools.insert(name, Arc::new(tool));
        self
    }

    /// Every tool's description, sorted by name: a stable prompt.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec()).collect()
    }

    /// Whether tool `name` must run alone (see [`Tool::EXCLUSIVE`]); false for unknown names.
    pub fn exclusive(&self, name: &str) -> bool {
        self.tools.get(name).is_some_and(|t| t.exclusive())
    }

    /// Calls a tool by name; an unknown name is a failure the model sees.
    pub async fn call(&self, name: &str, args: &str) -> Value {
        match self.tools.get(name) {
            Some(t) => t.call_json(args).await,
            None => {
                let known: Vec<&str> = self.tools.keys().map(String::as_str).collect();
                serde_json::to_value(ToolOutcome::<()>::failed(
                    FailureKind::NotFound,
                    format!("no tool named '{name}'; the tools are {}", known.join(", ")),
                ))
                .unwrap_or(Value::Null)
            }
        }
    }
}
