//! The research workflow's nodes, its routers, and the report.
//!
//! plan → data → (foundation) → generate → backtest → critique ⟲ … → finalize → report.
//! Every node reads and writes JSON artifacts; every LLM call, tool call, data read and clock
//! read goes through the journal's decorators, so a run resumes after a crash without paying
//! for an answer twice and replays with no LLM at all. Several nodes share the universe; only [`Finalize`] reads
//! itself, and with it the sealed test period; the agent-facing tools refuse it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use lim_agents::agent::{Deadline, Limits, Outcome, Protocol, ProtocolMemo};
use lim_agents::chat::ChatRequest;
use lim_agents::client::{Budget, LlmClient, Price, Spent};
use lim_agents::error::LlmError;
use lim_agents::offline::{self, Candidate, Evolution, Plan};
use lim_agents::strategist::{self, FoundationOffer, ProposeInput, Tried};
use lim_backtest::metrics::{Fold, Metrics};
use lim_backtest::nonfinite::show;
use lim_backtest::session::{MultipleTesting, SharpeTest};
use lim_backtest::spec::{Portfolio, StrategySpec};
use lim_market::{MarketData, Part};
use lim_tools::{
    BacktestTool, ChooseUniverse, DescribeDataset, Diagnose, Finetune, FoundationModel, Lab,
    LabState, Leaderboard, Lineage, ListDatasets, Memory, PastFindings, Predict, Pretrain,
    Registry, ResearchLog, Universe,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::engine::{BoxFuture, Cx, Executor, Node, NodeError, RunState};
use crate::journal::{
    Artifacts, Clock, JournaledClock, JournaledLlm, JournaledMarket, JournaledMemory,
    JournaledTools,
};
use crate::{plan_check, workflow};

mod baseline;
mod config;
mod data;
pub mod export;
mod finalize;
mod html;
mod plan;
mod report;
mod search;
mod trial;

pub use baseline::{Baseline, Combined, VersusBaseline, baselines};

/// Calendar holes beyond which the offline strategist's windows and the baselines tolerate
/// missing bars (a share of the training part's bars inside instruments' lives). A hole blanks
/// every strict window that spans it: at a share g a window of w bars is blank with
/// probability about 1 − (1 − g)^w, so at 1 % nearly every 250-bar window is (92 %), and at
/// 0.1 % about a fifth. (It was 2 % until the eighteenth session, which left the bundled
/// sample's Chinese futures, at about 1 %, flat for most of their training part under a
/// 250-bar window: one stray bar on an exchange holiday is a hole for every other contract.)
pub const GAP_THRESHOLD: f64 = 0.001;
/// The share of each window that must hold numbers when they do.
pub const GAP_MIN_SHARE: f64 = 0.75;

/// The minimum-count share for a universe whose union calendar leaves holes (markets with
/// different holidays): `Some(GAP_MIN_SHARE)` beyond [`GAP_THRESHOLD`], else `None`.
pub fn gap_tolerance(session: &lim_backtest::session::Session) -> Option<f64> {
    (session.calendar_gaps() > GAP_THRESHOLD).then_some(GAP_MIN_SHARE)
}

/// `signal` with window minimum counts of `share` (unchanged for `None` or when it does not
/// parse against `session`).
pub fn tolerant(
    session: Option<&lim_backtest::session::Session>,
    signal: &str,
    share: Option<f64>,
) -> String {
    match (session, share) {
        (Some(s), Some(_)) => s
            .parse(signal)
            .map(|e| e.with_min_count(share).to_string())
            .unwrap_or_else(|_| signal.to_string()),
        _ => signal.to_string(),
    }
}

pub use config::{Budgets, ResearchConfig, StrategistConfig};
pub use data::{FORECAST_RET, FORECAST_VOL};
pub use finalize::{
    COMBINED, Curve, CurveKind, Curves, IC_DECAY_HORIZONS, IcDecay, MAX_FINALIST_CORRELATION,
    diverse, test_finalists,
};
pub use html::{PartRow, backtest_tearsheet, curves_of, esc as escape_html, tearsheet};
pub use report::{Entry, Rejected, SIGNIFICANT_Z, Summary, artifacts_of, findings_of, summarize};

pub use trial::{
    AgentActivity, Critique, ExperimentPlan, Finalist, LEVEL_DEPENDENT,
    MAX_ALWAYS_LONG_CORRELATION, MAX_BASELINE_CORRELATION, MIN_ACTIVE_BARS,
    MIN_HOLDING_CHANGES_PER_YEAR, Trial, approximate_dsr, baseline_penalty, fitness, leaderboard,
    objective,
};

use data::{DataNode, Foundation, lab_fields, lab_state, lab_tools, restore_lab};
use finalize::{Finalize, Nothing, Report};
use plan::{PlanNode, Start};
use search::{Backtest, CritiqueNode, Generate};

fn out(pairs: Vec<(&str, Value)>) -> Artifacts {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, NodeError> {
    Ok(serde_json::to_value(v)?)
}

fn notes_with(cx: &Cx, note: Option<String>) -> Result<Value, NodeError> {
    let mut notes: Vec<String> = cx.optional("notes")?.unwrap_or_default();
    notes.extend(note.map(|n| format!("{}: {n}", cx.exec)));
    to_value(&notes)
}

/// The run's agent activity with this node execution's agent run `r` appended.
fn agents_with<T>(cx: &Cx, r: &lim_agents::agent::AgentRun<T>) -> Result<Value, NodeError> {
    let mut all: Vec<AgentActivity> = cx.optional("agents")?.unwrap_or_default();
    all.push(AgentActivity {
        exec: cx.exec.clone(),
        protocol: r.protocol,
        replies: r.steps,
        tool_calls: r.calls.iter().map(|c| c.tool.clone()).collect(),
        failed_tool_calls: r.calls.iter().filter(|c| !c.ok).count(),
        rejected_replies: r.rejected_replies.clone(),
        answered: r.answer().is_some(),
        tokens: r.usage.total(),
    });
    to_value(&all)
}

/// An agent loop's limits: its steps and reply size, what is left of the run's dollar budget,
/// and the run's deadline, read on the node's journaled `clock` before each reply (a clock
/// that cannot be journaled counts as past the deadline).
fn agent_limits(
    config: &ResearchConfig,
    cx: &Cx,
    clock: &Arc<JournaledClock>,
    max_steps: u32,
    reply_tokens: u32,
) -> Result<Limits, NodeError> {
    let b = &config.budgets;
    let deadline = match b.deadline_minutes {
        Some(m) => {
            let started: i64 = cx.input("started_ms")?;
            let clock = clock.clone();
            Some(Deadline {
                at_ms: started + (m * 60_000.0) as i64,
                now: Arc::new(move || clock.now_ms().unwrap_or(i64::MAX)),
            })
        }
        None => None,
    };
    let spent = cx.spent(&config.llm_budget());
    Ok(Limits {
        max_steps,
        max_tokens: None,
        reply_tokens,
        max_usd: b.max_usd.map(|m| (m - spent.usd).max(0.0)),
        price: b.price,
        deadline,
    })
}

/// The `past_findings` tool of a node execution, its reads journaled, showing only findings
/// measured on data that had happened by `end`, where the run's data ends, and nothing measured
/// on the run's sealed test once `universe` says where it begins.
fn past_findings<L>(
    services: &Services<L>,
    cx: &Cx,
    config: &ResearchConfig,
    universe: Option<&lim_backtest::session::Session>,
) -> PastFindings {
    PastFindings {
        memory: Arc::new(JournaledMemory::new(
            services.memory.clone(),
            cx.journal.clone(),
            &cx.exec,
        )),
        end: data_end(config, universe),
        test_start: universe.and_then(|s| {
            let test = s.splits().range(lim_market::Part::Test);
            s.times().get(test.start).copied()
        }),
    }
}

/// Where the run's data ends, for what it may read of the research memory: the whole history,
/// its `--as-of` time, or with `--earlier` the close of the universe's last bar once the
/// universe is chosen (before, `Cut`: no finding is known to lie before it).
fn data_end(
    config: &ResearchConfig,
    universe: Option<&lim_backtest::session::Session>,
) -> lim_tools::DataEnd {
    match lim_tools::DataEnd::of(config.as_of.as_deref(), config.earlier) {
        lim_tools::DataEnd::Cut => universe
            .and_then(|s| {
                let last = *s.times().last()?;
                let close = last.0.saturating_add(s.frequency().seconds());
                Some(lim_tools::DataEnd::AsOf(lim_market::AsOf(
                    lim_market::Timestamp(close),
                )))
            })
            .unwrap_or(lim_tools::DataEnd::Cut),
        end => end,
    }
}

/// An LLM that is never there: replays of offline runs, and offline runs themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLlm;

impl LlmClient for NoLlm {
    async fn complete(
        &self,
        req: &ChatRequest,
    ) -> Result<lim_agents::chat::ChatResponse, LlmError> {
        Err(LlmError::ReplayMiss {
            fingerprint: req.fingerprint(),
        })
    }
}

/// What the research nodes share.
pub struct Services<L> {
    /// Market data (journaled per node execution).
    pub market: Arc<dyn MarketData>,
    /// The LLM, when the strategist is one.
    pub llm: Arc<L>,
    /// The run's clock.
    pub clock: Arc<dyn Clock>,
    /// The foundation model, when this build has one.
    pub foundation: Option<Arc<dyn FoundationModel>>,
    /// The research memory (`lim_tools::NoMemory` for none).
    pub memory: Arc<dyn Memory>,
    /// Where the backtest tool's work runs when not here (a cluster); `None`: in this process.
    /// Results are identical either way, so it is not part of the run's configuration.
    pub remote_backtests: Option<Arc<dyn lim_tools::RemoteBacktests>>,
}

impl<L> std::fmt::Debug for Services<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("market", &self.market)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<L> Clone for Services<L> {
    fn clone(&self) -> Services<L> {
        Services {
            market: self.market.clone(),
            llm: self.llm.clone(),
            clock: self.clock.clone(),
            foundation: self.foundation.clone(),
            memory: self.memory.clone(),
            remote_backtests: self.remote_backtests.clone(),
        }
    }
}

/// Everything a research run needs.
#[derive(Debug)]
pub struct ResearchParts<L> {
    /// The services.
    pub services: Services<L>,
    /// The configuration.
    pub config: ResearchConfig,
}

/// Router names of the research workflow.
pub const FOUNDATION: &str = "plan asks for a foundation model";
/// See [`FOUNDATION`].
pub const NO_FOUNDATION: &str = "no foundation model";
/// See [`FOUNDATION`].
pub const DONE: &str = "budget spent or converged";

fn plan_wants_foundation(s: &RunState) -> bool {
    s.artifacts
        .get("plan")
        .and_then(|p| p.get("foundation_model"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The research workflow with its nodes and routers, ready to run.
///
/// # Errors
/// The workflow failed validation (never for the fixed graph).
pub fn executor<L: LlmClient + 'static>(
    parts: ResearchParts<L>,
) -> Result<Executor, workflow::BuildError> {
    let ResearchParts { services, config } = parts;
    let universe = Arc::new(Universe::new(None));
    let remote = services.remote_backtests.clone();
    // The endpoint's tool-calling protocol, found by the first agent and kept for the run.
    let protocol = Arc::new(ProtocolMemo::new(Protocol::Auto));
    let wf = workflow::research(config.budgets.max_iterations.max(1))?;
    Ok(Executor::new(wf, config.seed)
        .node("start", Start(services.clone()))
        .node(
            "plan",
            PlanNode {
                services: services.clone(),
                config: config.clone(),
                protocol: protocol.clone(),
            },
        )
        .node(
            "data",
            DataNode {
                market: services.market.clone(),
                universe: universe.clone(),
                config: config.clone(),
            },
        )
        .node(
            "foundation",
            Foundation {
                model: services.foundation.clone(),
                universe: universe.clone(),
                config: config.clone(),
            },
        )
        .node(
            "generate",
            Generate {
                services: services.clone(),
                config: config.clone(),
                universe: universe.clone(),
                protocol: protocol.clone(),
            },
        )
        .node(
            "backtest",
            Backtest {
                universe: universe.clone(),
                remote: services.remote_backtests.clone(),
            },
        )
        .node(
            "critique",
            CritiqueNode {
                services,
                config: config.clone(),
                universe: universe.clone(),
                protocol,
            },
        )
        .node(
            "finalize",
            Finalize {
                universe,
                config: config.clone(),
                remote,
            },
        )
        .node("report", Report { config })
        .node("end", Nothing)
        .router(FOUNDATION, plan_wants_foundation)
        .router(NO_FOUNDATION, |s| !plan_wants_foundation(s))
        .router(DONE, |s| {
            s.exhausted
                || s.artifacts
                    .get("hypotheses")
                    .and_then(|h| h.get("stop"))
                    .is_some_and(|v| !v.is_null())
        }))
}

/// The initial artifacts of a run.
pub fn initial(config: &ResearchConfig) -> Artifacts {
    out(vec![("goal", Value::String(config.goal.clone()))])
}

/// What a run reads: each dataset's name, file, rows, symbols and time range.
///
/// # Errors
/// The catalog cannot describe its datasets.
pub fn manifest(market: &dyn MarketData) -> Result<Value, lim_market::MarketError> {
    let metas = market.datasets()?;
    Ok(Value::Array(
        metas
            .iter()
            .map(|m| {
                json!({"name": m.name, "rows": m.rows, "symbols": m.symbols.len(),
                    "first": m.first.to_string(), "last": m.last.to_string()})
            })
            .collect(),
    ))
}

/// The run's fingerprint: workflow, configuration and data manifest.
pub fn fingerprint(config: &ResearchConfig, manifest: &Value) -> String {
    let wf = workflow::research(config.budgets.max_iterations.max(1))
        .map(|w| w.to_text())
        .unwrap_or_default();
    let text = json!({"workflow": wf, "config": config, "manifest": manifest}).to_string();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}
