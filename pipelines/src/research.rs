//! The research workflow's nodes, its routers, and the report.
//!
//! plan → data → (foundation) → generate → backtest → critique ⟲ … → finalize → report.
//! Every node reads and writes JSON artifacts; every LLM call, tool call, data read and clock
//! read goes through the journal's decorators, so a run resumes after a crash without paying
//! for an answer twice and replays with no LLM at all. Only [`Finalize`] holds the universe
//! itself, and with it the sealed test period; the agent-facing tools refuse it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use lim_agents::agent::{Outcome, Protocol, ProtocolMemo};
use lim_agents::chat::ChatRequest;
use lim_agents::client::{Budget, LlmClient, Price, Spent};
use lim_agents::error::LlmError;
use lim_agents::offline::{self, Candidate, Evolution, Plan};
use lim_agents::strategist::{self, Tried};
use lim_backtest::metrics::Metrics;
use lim_backtest::nonfinite::show;
use lim_backtest::session::MultipleTesting;
use lim_backtest::spec::{Portfolio, StrategySpec};
use lim_market::{MarketData, Part};
use lim_tools::{
    BacktestTool, ChooseUniverse, DescribeDataset, ForecastTool, Forecaster, ListDatasets,
    Registry, ResearchLog, Universe,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::engine::{BoxFuture, Cx, Executor, Node, NodeError, RunState};
use crate::journal::{
    Artifacts, Clock, JournaledClock, JournaledLlm, JournaledMarket, JournaledTools,
};
use crate::{plan_check, workflow};

/// Who proposes strategies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StrategistConfig {
    /// The deterministic evolutionary search (not an LLM).
    Offline,
    /// An OpenAI-compatible chat model.
    Llm {
        /// Model name.
        model: String,
        /// The API's base URL.
        base_url: String,
    },
}

/// When a run stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budgets {
    /// Strategy-loop iterations (generate, backtest, critique).
    pub max_iterations: u32,
    /// Dollars of LLM calls (priced by `price`).
    pub max_usd: Option<f64>,
    /// LLM tokens.
    pub max_tokens: Option<u64>,
    /// Minutes of wall time from the run's start (the run's clock).
    pub deadline_minutes: Option<f64>,
    /// Iterations without a better strategy before the search counts as converged.
    pub patience: u32,
    /// Dollars per million prompt and completion tokens, for `max_usd` and the report.
    pub price: Option<Price>,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets {
            max_iterations: 6,
            max_usd: None,
            max_tokens: None,
            deadline_minutes: None,
            patience: 3,
            price: None,
        }
    }
}

/// Everything that decides what a run does, and so its fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResearchConfig {
    /// The research goal.
    pub goal: String,
    /// Who proposes strategies.
    pub strategist: StrategistConfig,
    /// The run's seed.
    pub seed: u64,
    /// New strategies per iteration.
    pub population: usize,
    /// Finalists evaluated once on the sealed test period.
    pub finalists: usize,
    /// Training share of the bars (validation follows; the rest is the sealed test).
    pub train: f64,
    /// Validation share.
    pub valid: f64,
    /// Bars dropped between parts.
    pub embargo: usize,
    /// When to stop.
    pub budgets: Budgets,
    /// Ask for the foundation model's predictions as a field (also when the goal says so).
    #[serde(default)]
    pub foundation: bool,
}

impl ResearchConfig {
    /// A configuration with the defaults of `lim research`.
    pub fn new(goal: &str) -> ResearchConfig {
        ResearchConfig {
            goal: goal.to_string(),
            strategist: StrategistConfig::Offline,
            seed: 1,
            population: 12,
            finalists: 3,
            train: 0.6,
            valid: 0.2,
            embargo: 5,
            budgets: Budgets::default(),
            foundation: false,
        }
    }

    /// The LLM budget, for the client decorators and the spend.
    pub fn llm_budget(&self) -> Budget {
        let mut prices = BTreeMap::new();
        if let (Some(p), StrategistConfig::Llm { model, .. }) =
            (self.budgets.price, &self.strategist)
        {
            prices.insert(model.clone(), p);
        }
        Budget {
            max_tokens: self.budgets.max_tokens,
            max_usd: self.budgets.max_usd,
            prices,
        }
    }

    /// What differs from `other`, field by field (for refusing a resume).
    pub fn differences(&self, other: &ResearchConfig) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or(Value::Null);
        let b = serde_json::to_value(other).unwrap_or(Value::Null);
        let mut out = Vec::new();
        diff(&a, &b, String::new(), &mut out);
        out
    }
}

fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    p,
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} → {b}")),
        _ => {}
    }
}

/// The experiment plan, shown before anything is spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentPlan {
    /// Markets, strategy family, book, costs and the drawdown limit.
    pub strategy: Plan,
    /// Bar frequency of the data.
    pub frequency: String,
    /// Instruments in the chosen datasets.
    pub instruments: usize,
    /// What a signal predicts and how often the book trades.
    pub horizon: String,
    /// Train / validation / sealed test shares and the embargo.
    pub splits: String,
    /// What "better" means.
    pub objective: String,
    /// Constraints from the goal and the defaults.
    pub constraints: Vec<String>,
    /// When the run stops.
    pub budgets: Budgets,
    /// Whether the plan asks for the foundation model.
    pub foundation_model: bool,
    /// Whose plan this is and what the checks of [`crate::plan_check`] found.
    #[serde(default)]
    pub review: String,
}

impl ExperimentPlan {
    /// Whether the book is cross-sectional (ranks across instruments).
    pub fn cross_sectional(&self) -> bool {
        !matches!(self.strategy.portfolio, Portfolio::SignThreshold { .. })
    }

    /// The fields strategies may use (with `forecast`, the model's predictions).
    pub fn fields<'a>(&self, forecast: Option<&'a str>) -> Vec<&'a str> {
        let mut f = if self.cross_sectional() {
            vec!["open", "high", "low", "close", "volume", "vwap", "returns"]
        } else {
            vec!["returns"]
        };
        f.extend(forecast);
        f
    }
}

/// One strategy tried, with its metrics on training and validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The signal (canonical form).
    pub signal: String,
    /// The iteration that proposed it (0: the seeds).
    pub generation: usize,
    /// Its parents (lineage).
    pub parents: Vec<String>,
    /// Robust fitness (see [`fitness`]); absent when it could not run or had no evidence.
    pub fitness: Option<f64>,
    /// Training metrics.
    pub train: Option<Metrics>,
    /// Validation metrics.
    pub validation: Option<Metrics>,
    /// Why it could not run.
    pub error: Option<String>,
    /// Why it ran but has no fitness: a part without enough active bars, an undefined Sharpe
    /// ratio. Such a strategy ranks below every scored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

impl Trial {
    /// Sets `fitness` and `rejected` from the metrics, by [`fitness`]. Reports and the final
    /// evaluator call it again on journaled trials, so a run recorded by older code is ranked
    /// by today's rules.
    pub fn score(&mut self, plan: &Plan) {
        (self.fitness, self.rejected) = match (&self.train, &self.validation, &self.error) {
            (Some(t), Some(v), None) => match fitness(plan, t, v) {
                Ok(f) => (Some(f), None),
                Err(why) => (None, Some(why)),
            },
            _ => (None, None),
        };
    }
}

/// A critique and the loop's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critique {
    /// Which iteration it read.
    pub iteration: u32,
    /// What the results say.
    pub diagnosis: String,
    /// What to try next.
    pub hypotheses: Vec<String>,
    /// Why the loop stops, if it does.
    pub stop: Option<String>,
    /// The best robust fitness so far (-inf before any strategy had one).
    #[serde(with = "lim_backtest::nonfinite")]
    pub best_fitness: f64,
    /// Its signal.
    pub best_signal: String,
    /// Strategies tried so far.
    pub trials: usize,
    /// LLM spend so far.
    pub spent: Spent,
}

/// A finalist's metrics on validation and on the sealed test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finalist {
    /// The signal.
    pub signal: String,
    /// Validation metrics.
    pub validation: Metrics,
    /// Test metrics: computed once, at the end.
    pub test: Metrics,
}

/// Active bars (a book and a known return) a part needs before its Sharpe ratio counts as
/// evidence, for a strategy and for a plan's universe alike.
pub const MIN_ACTIVE_BARS: usize = 20;

/// Robustness first: the worse of the training and validation Sharpe ratios, less a penalty
/// for a validation drawdown beyond the plan's limit.
///
/// # Errors
/// Why there is no evidence to score: a part with fewer than [`MIN_ACTIVE_BARS`] active bars
/// (a strategy that never traded in validation must not win on its training Sharpe), or a
/// Sharpe ratio that is not a number (constant returns).
pub fn fitness(plan: &Plan, train: &Metrics, valid: &Metrics) -> Result<f64, String> {
    for (part, m) in [("training", train), ("validation", valid)] {
        if m.bars < MIN_ACTIVE_BARS {
            return Err(format!(
                "no trades to judge in the {part} part: {} active bars of {} (at least {MIN_ACTIVE_BARS} needed)",
                m.bars,
                m.bars + m.inactive_bars
            ));
        }
        if !m.sharpe.is_finite() {
            return Err(format!(
                "the {part} Sharpe ratio is undefined (returns without variation over {} bars)",
                m.bars
            ));
        }
    }
    let excess = plan.max_drawdown.map_or(0.0, |limit| {
        let dd = valid.max_dd.abs();
        if dd.is_finite() {
            (dd - limit).max(0.0)
        } else {
            0.0
        }
    });
    Ok(train.sharpe.min(valid.sharpe) - 5.0 * excess)
}

fn fail(e: impl std::fmt::Display) -> NodeError {
    NodeError::Failed(e.to_string())
}

fn out(pairs: Vec<(&str, Value)>) -> Artifacts {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, NodeError> {
    serde_json::to_value(v).map_err(fail)
}

fn notes_with(cx: &Cx, note: Option<String>) -> Result<Value, NodeError> {
    let mut notes: Vec<String> = cx.optional("notes")?.unwrap_or_default();
    notes.extend(note.map(|n| format!("{}: {n}", cx.exec)));
    to_value(&notes)
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
    pub forecaster: Option<Arc<dyn Forecaster>>,
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
            forecaster: self.forecaster.clone(),
        }
    }
}

struct Start<L>(Services<L>);

impl<L: LlmClient + 'static> Node for Start<L> {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let clock = JournaledClock::new(self.0.clock.clone(), cx.journal.clone(), &cx.exec);
            let started = clock.now_ms()?;
            Ok(out(vec![
                ("goal", cx.input::<Value>("goal")?),
                ("started_ms", Value::from(started)),
            ]))
        })
    }
}

struct PlanNode<L> {
    services: Services<L>,
    config: ResearchConfig,
    /// The endpoint's tool-calling protocol, found by the first agent and kept for the run.
    protocol: Arc<ProtocolMemo>,
}

impl<L: LlmClient + 'static> Node for PlanNode<L> {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let goal: String = cx.input("goal")?;
            let metas = self.services.market.datasets().map_err(fail)?;
            let available: Vec<String> = metas.iter().map(|d| d.name.clone()).collect();
            let keyword = offline::plan(&goal, &available);
            let market = Arc::new(JournaledMarket::new(
                self.services.market.clone(),
                cx.journal.clone(),
                &cx.exec,
            ));
            let c = &self.config;
            let check = |p: &Plan| {
                plan_check::check(
                    p,
                    &goal,
                    &metas,
                    market.as_ref(),
                    (c.train, c.valid, c.embargo),
                )
            };
            // The planning agent: it may look at the data before it commits; what it gave, or
            // why nothing it gave passed.
            let mut asked = None;
            if let StrategistConfig::Llm { model, .. } = &self.config.strategist {
                let llm =
                    JournaledLlm::new(self.services.llm.clone(), cx.journal.clone(), &cx.exec);
                let data: Arc<dyn MarketData> = market.clone();
                let registry = Registry::default()
                    .with(ListDatasets {
                        market: data.clone(),
                    })
                    .with(DescribeDataset { market: data });
                let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
                let run = strategist::plan_agent(
                    &llm,
                    &tools,
                    &self.protocol,
                    model,
                    &goal,
                    &keyword,
                    &available,
                    |p| check(p).map_err(|e| e.to_string()),
                )
                .await
                .map_err(fail)?;
                let protocol = match run.protocol {
                    Protocol::Json => "the JSON protocol (the server ignores tools)",
                    _ => "native function calling",
                };
                let looked = if run.calls.is_empty() {
                    format!("without looking at the data, over {protocol}")
                } else {
                    format!(
                        "after {} tool calls over {protocol} ({})",
                        run.calls.len(),
                        run.calls
                            .iter()
                            .map(|c| c.tool.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                asked = Some(match run.outcome {
                    Outcome::Answer { value } => Ok((value, looked, run.steps)),
                    Outcome::StepLimit { last_problem } => Err(format!(
                        "{} replies without a valid plan; last problem: {}",
                        run.steps,
                        last_problem.unwrap_or_else(|| "none".into())
                    )),
                    Outcome::TokenLimit { used } => Err(format!("token limit ({used} tokens)")),
                    Outcome::LlmFailed { message } => Err(message),
                });
            }
            let (plan, review, note) = match asked {
                Some(Ok((choice, looked, steps))) => (
                    choice.plan,
                    format!(
                        "the model's plan passed every check (goal, limits, data), {looked}, in {steps} replies; why: {}",
                        choice.why
                    ),
                    None,
                ),
                refused => {
                    let mut review = match &refused {
                        Some(Err(e)) => format!(
                            "the model gave no plan that passed the checks ({e}); the keyword plan stands"
                        ),
                        _ => "the keyword plan".to_string(),
                    };
                    let clean = match check(&keyword) {
                        Ok(()) => {
                            review.push_str(", which passed every check (goal, limits, data)");
                            refused.is_none()
                        }
                        Err(e) => {
                            review.push_str(&format!(", which does not pass every check: {e}"));
                            false
                        }
                    };
                    let note = (!clean).then(|| review.clone());
                    (keyword, review, note)
                }
            };
            let chosen: Vec<_> = metas
                .iter()
                .filter(|m| plan.datasets.contains(&m.name))
                .collect();
            let frequency = chosen
                .first()
                .map(|m| m.frequency.to_string())
                .unwrap_or_default();
            let instruments = chosen.iter().map(|m| m.symbols.len()).sum();
            let mut constraints = vec![format!(
                "costs of {} bps per unit of turnover in every backtest",
                plan.cost_bps
            )];
            if let Some(dd) = plan.max_drawdown {
                constraints.push(format!(
                    "validation drawdown at most {:.0}% (penalised beyond)",
                    dd * 100.0
                ));
            }
            constraints.push("signals see bar t and trade at t+1 (no look-ahead)".into());
            let foundation_model =
                self.config.foundation || goal.to_lowercase().contains("foundation model");
            let horizon = match plan.portfolio {
                Portfolio::SignThreshold { .. } => {
                    "next-bar return; sign of the signal, volatility-targeted, rebalanced every 5 bars"
                }
                _ => "next-bar return; cross-sectional ranks, rebalanced every bar",
            };
            let ep = ExperimentPlan {
                frequency,
                instruments,
                horizon: horizon.into(),
                splits: format!(
                    "train {:.0}%, validation {:.0}%, sealed test {:.0}% of bars, embargo {} bars",
                    c.train * 100.0,
                    c.valid * 100.0,
                    (1.0 - c.train - c.valid) * 100.0,
                    c.embargo
                ),
                objective: "robust Sharpe: the worse of train and validation Sharpe, less 5× any validation drawdown beyond the limit".into(),
                constraints,
                budgets: c.budgets.clone(),
                foundation_model,
                strategy: plan,
                review,
            };
            Ok(out(vec![
                ("plan", to_value(&ep)?),
                ("notes", notes_with(&cx, note)?),
            ]))
        })
    }
}

fn universe_args(config: &ResearchConfig, plan: &ExperimentPlan) -> Value {
    json!({
        "datasets": plan.strategy.datasets,
        "train": config.train,
        "valid": config.valid,
        "embargo": config.embargo,
    })
}

struct DataNode {
    market: Arc<dyn MarketData>,
    universe: Arc<Universe>,
    config: ResearchConfig,
}

impl Node for DataNode {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let market = JournaledMarket::new(self.market.clone(), cx.journal.clone(), &cx.exec);
            let registry = Registry::default().with(ChooseUniverse {
                market: Arc::new(market),
                universe: self.universe.clone(),
            });
            let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
            let r = tools
                .call("choose_universe", &universe_args(&self.config, &plan))
                .await?;
            match r.get("status").and_then(Value::as_str) {
                Some("done") => Ok(out(vec![(
                    "universe",
                    r.get("result").cloned().unwrap_or(Value::Null),
                )])),
                _ => Err(fail(format!(
                    "choose_universe failed: {}",
                    crate::trace::field(&r, "/message")
                ))),
            }
        })
    }

    fn restore(&self, cx: Cx, _outputs: &Artifacts) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let registry = Registry::default().with(ChooseUniverse {
                market: self.market.clone(),
                universe: self.universe.clone(),
            });
            let r = registry
                .call(
                    "choose_universe",
                    &universe_args(&self.config, &plan).to_string(),
                )
                .await;
            match r.get("status").and_then(Value::as_str) {
                Some("done") => Ok(()),
                _ => Err(fail(format!(
                    "cannot reload the universe: {}",
                    crate::trace::field(&r, "/message")
                ))),
            }
        })
    }
}

/// The name of the foundation model's field.
pub const FORECAST: &str = "forecast";

struct Foundation {
    forecaster: Option<Arc<dyn Forecaster>>,
    universe: Arc<Universe>,
}

impl Foundation {
    fn registry(&self) -> Option<Registry> {
        self.forecaster.clone().map(|forecaster| {
            Registry::default().with(ForecastTool {
                forecaster,
                universe: self.universe.clone(),
            })
        })
    }
}

impl Node for Foundation {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let Some(registry) = self.registry() else {
                return Ok(out(vec![
                    ("predictions", Value::Null),
                    (
                        "notes",
                        notes_with(
                            &cx,
                            Some("the plan asked for the foundation model, which this build does not include; strategies use price and volume fields only".into()),
                        )?,
                    ),
                ]));
            };
            let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
            let r = tools
                .call(
                    "forecast",
                    &json!({"name": FORECAST, "seed": cx.seed % 1_000_000}),
                )
                .await?;
            match r.get("status").and_then(Value::as_str) {
                Some("done") => Ok(out(vec![(
                    "predictions",
                    r.get("result").cloned().unwrap_or(Value::Null),
                )])),
                _ => Ok(out(vec![
                    ("predictions", Value::Null),
                    (
                        "notes",
                        notes_with(
                            &cx,
                            Some(format!(
                                "the foundation model gave no predictions ({}); strategies use price and volume fields only",
                                crate::trace::field(&r, "/message")
                            )),
                        )?,
                    ),
                ])),
            }
        })
    }

    fn restore(&self, cx: Cx, outputs: &Artifacts) -> BoxFuture<'_, Result<(), NodeError>> {
        let done = outputs.get("predictions").is_some_and(|p| !p.is_null());
        Box::pin(async move {
            let (Some(registry), true) = (self.registry(), done) else {
                return Ok(());
            };
            let r = registry
                .call(
                    "forecast",
                    &json!({"name": FORECAST, "seed": cx.seed % 1_000_000}).to_string(),
                )
                .await;
            match r.get("status").and_then(Value::as_str) {
                Some("done") => Ok(()),
                _ => Err(fail(format!(
                    "cannot rebuild the foundation model's field: {}",
                    crate::trace::field(&r, "/message")
                ))),
            }
        })
    }
}

struct Generate<L> {
    services: Services<L>,
    config: ResearchConfig,
}

impl<L: LlmClient + 'static> Node for Generate<L> {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let trials: Vec<Trial> = cx.optional("trials")?.unwrap_or_default();
            let critique: Option<Critique> = cx.optional("hypotheses")?;
            let generation = cx.visit as usize - 1;
            let cs = plan.cross_sectional();
            let history: Vec<Candidate> = trials
                .iter()
                .map(|t| Candidate {
                    signal: t.signal.clone(),
                    generation: t.generation,
                    parents: t.parents.clone(),
                    fitness: Some(t.fitness.unwrap_or(f64::NEG_INFINITY)),
                })
                .collect();
            let forecast = cx
                .optional::<Value>("predictions")?
                .is_some()
                .then_some(FORECAST);
            let mut evo = Evolution::resume(cx.seed, cs, history);
            if let Some(f) = forecast {
                evo.allow(f);
            }
            let mut note = None;
            let proposals: Vec<(String, Vec<String>)> = if generation == 0 {
                let mut seeds = offline::seeds(plan.strategy.family, cs);
                if let Some(f) = forecast {
                    seeds.extend(if cs {
                        vec![format!("rank({f})"), format!("rank(ts_mean({f}, 5))")]
                    } else {
                        vec![
                            f.to_string(),
                            format!("ts_mean({f}, 5)"),
                            format!("ts_mean({f}, 20)"),
                        ]
                    });
                }
                seeds.into_iter().map(|s| (s, Vec::new())).collect()
            } else {
                match &self.config.strategist {
                    StrategistConfig::Offline => {
                        evo.propose(self.config.population, generation, cs)
                    }
                    StrategistConfig::Llm { model, .. } => {
                        let mut best: Vec<&Trial> = trials
                            .iter()
                            .filter(|t| t.fitness.is_some_and(f64::is_finite))
                            .collect();
                        best.sort_by(|a, b| {
                            b.fitness
                                .unwrap_or(f64::MIN)
                                .total_cmp(&a.fitness.unwrap_or(f64::MIN))
                        });
                        let tried: Vec<Tried> = best
                            .iter()
                            .take(8)
                            .filter_map(|t| {
                                Some(Tried {
                                    signal: t.signal.clone(),
                                    train_sharpe: t.train?.sharpe,
                                    validation_sharpe: t.validation?.sharpe,
                                })
                            })
                            .collect();
                        let text = critique
                            .as_ref()
                            .map(|c| format!("{} Next: {}", c.diagnosis, c.hypotheses.join("; ")));
                        let llm = JournaledLlm::new(
                            self.services.llm.clone(),
                            cx.journal.clone(),
                            &cx.exec,
                        );
                        match strategist::propose(
                            &llm,
                            model,
                            &plan.strategy,
                            &plan.fields(forecast),
                            &tried,
                            text.as_deref(),
                            self.config.population,
                            2,
                        )
                        .await
                        {
                            Ok(specs) => {
                                specs.into_iter().map(|s| (s.signal, Vec::new())).collect()
                            }
                            Err(e) => {
                                note = Some(format!("the LLM proposed no valid strategy: {e}"));
                                Vec::new()
                            }
                        }
                    }
                }
            };
            let added = evo.add(proposals, generation);
            let candidates: Vec<Candidate> =
                added.iter().map(|&i| evo.history[i].clone()).collect();
            Ok(out(vec![
                ("candidates", to_value(&candidates)?),
                ("notes", notes_with(&cx, note)?),
            ]))
        })
    }
}

struct Backtest {
    universe: Arc<Universe>,
}

impl Node for Backtest {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let candidates: Vec<Candidate> = cx.input("candidates")?;
            let mut trials: Vec<Trial> = cx.optional("trials")?.unwrap_or_default();
            let mut note = None;
            if !candidates.is_empty() {
                let registry = Registry::default().with(BacktestTool {
                    universe: self.universe.clone(),
                    log: Arc::new(ResearchLog::default()),
                });
                let tools = JournaledTools::new(registry, cx.journal.clone(), &cx.exec);
                let specs: Vec<StrategySpec> = candidates
                    .iter()
                    .map(|c| offline::spec_for(&plan.strategy, &c.signal))
                    .collect();
                let r = tools
                    .call("backtest", &json!({ "strategies": specs }))
                    .await?;
                let results = r.pointer("/result/strategies").and_then(Value::as_array);
                match results {
                    Some(results) => {
                        for (c, res) in candidates.iter().zip(results) {
                            let metric = |part: &str| -> Option<Metrics> {
                                res.get("metrics")?
                                    .as_array()?
                                    .iter()
                                    .find(|m| m.get(0).and_then(Value::as_str) == Some(part))
                                    .and_then(|m| serde_json::from_value(m.get(1)?.clone()).ok())
                            };
                            let mut trial = Trial {
                                signal: c.signal.clone(),
                                generation: c.generation,
                                parents: c.parents.clone(),
                                fitness: None,
                                train: metric("train"),
                                validation: metric("validation"),
                                error: res.get("error").and_then(Value::as_str).map(String::from),
                                rejected: None,
                            };
                            trial.score(&plan.strategy);
                            trials.push(trial);
                        }
                    }
                    None => {
                        let why = crate::trace::field(&r, "/message");
                        note = Some(format!("the backtest tool refused the round: {why}"));
                        trials.extend(candidates.iter().map(|c| Trial {
                            signal: c.signal.clone(),
                            generation: c.generation,
                            parents: c.parents.clone(),
                            fitness: None,
                            train: None,
                            validation: None,
                            error: Some(why.clone()),
                            rejected: None,
                        }));
                    }
                }
            }
            Ok(out(vec![
                ("trials", to_value(&trials)?),
                ("notes", notes_with(&cx, note)?),
            ]))
        })
    }
}

struct CritiqueNode<L> {
    services: Services<L>,
    config: ResearchConfig,
}

fn best(trials: &[Trial]) -> Option<(usize, f64)> {
    trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.fitness.filter(|f| f.is_finite()).map(|f| (i, f)))
        .fold(None, |acc: Option<(usize, f64)>, (i, f)| match acc {
            Some((_, g)) if g >= f => acc,
            _ => Some((i, f)),
        })
}

impl<L: LlmClient + 'static> Node for CritiqueNode<L> {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let trials: Vec<Trial> = cx.input("trials")?;
            let candidates: Vec<Candidate> = cx.input("candidates")?;
            let started: i64 = cx.input("started_ms")?;
            let mut lineage: Vec<Critique> = cx.optional("lineage")?.unwrap_or_default();
            let iteration = cx.visit;
            let generation = iteration as usize - 1;
            let round: Vec<&Trial> = trials
                .iter()
                .filter(|t| t.generation == generation)
                .collect();
            let (best_i, best_f) = best(&trials).unwrap_or((0, f64::NEG_INFINITY));
            let best_signal = trials
                .get(best_i)
                .map(|t| t.signal.clone())
                .unwrap_or_default();
            let gaps: Vec<f64> = round
                .iter()
                .filter_map(|t| Some(t.train?.sharpe - t.validation?.sharpe))
                .filter(|g| g.is_finite())
                .collect();
            let gap = if gaps.is_empty() {
                f64::NAN
            } else {
                gaps.iter().sum::<f64>() / gaps.len() as f64
            };
            let round_best = best(&round.iter().map(|t| (*t).clone()).collect::<Vec<_>>());
            let mut diagnosis = format!(
                "iteration {iteration}: {} new strategies, {} failed to run, {} without evidence; best robust Sharpe so far {}; mean train−validation Sharpe gap this round {}",
                round.len(),
                round.iter().filter(|t| t.error.is_some()).count(),
                round.iter().filter(|t| t.rejected.is_some()).count(),
                show(best_f, 2, "none yet"),
                show(gap, 2, "unknown (no strategy traded in both parts)"),
            );
            if gap > 0.5 {
                diagnosis.push_str(" (large: in-sample fit that does not carry over)");
            }
            let mut hypotheses = vec![
                format!("vary the lookbacks and smoothing of the leader, {best_signal}"),
                "combine the leader with a signal of another family to diversify".into(),
            ];
            if let StrategistConfig::Llm { model, .. } = &self.config.strategist {
                let results: Vec<Value> = round
                    .iter()
                    .filter_map(|t| {
                        let (tr, v) = (t.train?, t.validation?);
                        Some(json!({"signal": t.signal, "train_sharpe": tr.sharpe, "train_dd": tr.max_dd,
                            "validation_sharpe": v.sharpe, "validation_dd": v.max_dd, "turnover": v.turnover, "rank_ic": v.rank_ic}))
                    })
                    .collect();
                let ctx = json!({"results": results, "trials": trials.len(), "best": best_signal,
                    "dsr": approximate_dsr(&trials, &cx.input::<ExperimentPlan>("plan")?.frequency)});
                let llm =
                    JournaledLlm::new(self.services.llm.clone(), cx.journal.clone(), &cx.exec);
                match strategist::critique(&llm, model, &ctx, 2).await {
                    Ok(c) => {
                        diagnosis = format!("{} ({diagnosis})", c.diagnosis);
                        hypotheses = c.hypotheses;
                    }
                    Err(e) => diagnosis.push_str(&format!("; the LLM critique failed: {e}")),
                }
            }
            let budget = self.config.llm_budget();
            let spent = cx.spent(&budget);
            let b = &self.config.budgets;
            let clock =
                JournaledClock::new(self.services.clock.clone(), cx.journal.clone(), &cx.exec);
            let now = clock.now_ms()?;
            let improved_recently = round_best.is_some_and(|(_, f)| f >= best_f)
                || lineage
                    .iter()
                    .rev()
                    .take(b.patience.saturating_sub(1) as usize)
                    .any(|c| c.best_fitness < best_f);
            let stop = if candidates.is_empty() && iteration > 1 {
                Some("the strategist proposed nothing new".to_string())
            } else if iteration >= b.max_iterations {
                Some(format!(
                    "iteration budget reached ({} iterations)",
                    b.max_iterations
                ))
            } else if b.max_tokens.is_some_and(|m| spent.tokens >= m) {
                Some(format!("token budget spent ({} tokens)", spent.tokens))
            } else if b.max_usd.is_some_and(|m| spent.usd >= m) {
                Some(format!("dollar budget spent (${:.4})", spent.usd))
            } else if b
                .deadline_minutes
                .is_some_and(|m| (now - started) as f64 >= m * 60_000.0)
            {
                Some("deadline reached".to_string())
            } else if iteration > b.patience && !improved_recently {
                Some(format!(
                    "converged: no better strategy in the last {} iterations",
                    b.patience
                ))
            } else {
                None
            };
            let c = Critique {
                iteration,
                diagnosis,
                hypotheses,
                stop,
                best_fitness: best_f,
                best_signal,
                trials: trials.len(),
                spent,
            };
            lineage.push(c.clone());
            Ok(out(vec![
                ("hypotheses", to_value(&c)?),
                ("lineage", to_value(&lineage)?),
            ]))
        })
    }
}

/// The deflated Sharpe ratio of the best validation Sharpe among `trials`, from their Sharpe
/// ratios alone (returns taken as normal): what the critic sees during the loop. The report
/// uses the exact statistic over every trial's returns, computed by the final evaluator.
pub fn approximate_dsr(trials: &[Trial], frequency: &str) -> f64 {
    let periods =
        lim_market::Frequency::parse(frequency).map_or(252.0, |f| f.periods_per_year(1.0));
    let srs: Vec<(f64, usize)> = trials
        .iter()
        .filter_map(|t| t.validation)
        .filter(|v| v.sharpe.is_finite())
        .map(|v| (v.sharpe / periods.sqrt(), v.bars))
        .collect();
    if srs.len() < 2 {
        return f64::NAN;
    }
    let n = srs.len() as f64;
    let mean = srs.iter().map(|s| s.0).sum::<f64>() / n;
    let var = srs.iter().map(|s| (s.0 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let (sr, bars) = srs
        .iter()
        .copied()
        .fold((f64::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a });
    lim_backtest::stats::deflated_sharpe(sr, bars, 0.0, 3.0, srs.len(), var).dsr
}

/// The final evaluator: the only node holding the universe, and so the sealed test period.
struct Finalize {
    universe: Arc<Universe>,
    config: ResearchConfig,
}

impl Node for Finalize {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let plan: ExperimentPlan = cx.input("plan")?;
            let mut trials: Vec<Trial> = cx.input("trials")?;
            trials.iter_mut().for_each(|t| t.score(&plan.strategy));
            let session = self
                .universe
                .current()
                .ok_or_else(|| fail("no universe: the data node did not run"))?;
            let finalists = self.config.finalists;
            let work = tokio::task::spawn_blocking(move || {
                let ranked = leaderboard(&trials);
                let spec = |s: &str| (s.to_string(), offline::spec_for(&plan.strategy, s));
                let chosen: Vec<(String, StrategySpec)> = ranked
                    .iter()
                    .filter(|&&i| trials[i].fitness.is_some_and(f64::is_finite))
                    .take(finalists)
                    .map(|&i| spec(&trials[i].signal))
                    .collect();
                let finalists = test_finalists(&session, &chosen);
                // Multiple testing over every trial of the run.
                let all: Vec<(String, StrategySpec)> = trials
                    .iter()
                    .filter(|t| t.error.is_none())
                    .map(|t| spec(&t.signal))
                    .collect();
                let books = session.run(&all, &[Part::Train, Part::Validation], false);
                let mt: Option<MultipleTesting> = session.multiple_testing(&books);
                (ranked, finalists, mt)
            });
            let (ranked, finalists, mt) = work.await.map_err(fail)?;
            Ok(out(vec![
                ("ranking", to_value(&ranked)?),
                ("finalists", to_value(&finalists)?),
                (
                    "test_results",
                    to_value(
                        &finalists
                            .iter()
                            .map(|f| (f.signal.clone(), f.test))
                            .collect::<Vec<_>>(),
                    )?,
                ),
                ("deflated", to_value(&mt)?),
            ]))
        })
    }
}

/// The sealed test: the finalists' metrics on validation and, once, on the test part.
pub fn test_finalists(
    session: &lim_backtest::session::Session,
    finalists: &[(String, StrategySpec)],
) -> Vec<Finalist> {
    session
        .run(finalists, &[Part::Validation, Part::Test], false)
        .iter()
        .filter_map(|r| match r.metrics.as_slice() {
            [(_, v), (_, t)] => Some(Finalist {
                signal: r.name.clone(),
                validation: *v,
                test: *t,
            }),
            _ => None,
        })
        .collect()
}

/// Trial indices best first: by robust fitness, ties by order tried.
pub fn leaderboard(trials: &[Trial]) -> Vec<usize> {
    let fit = |t: &Trial| t.fitness.unwrap_or(f64::NEG_INFINITY);
    let mut order: Vec<usize> = (0..trials.len()).collect();
    order.sort_by(|&a, &b| fit(&trials[b]).total_cmp(&fit(&trials[a])).then(a.cmp(&b)));
    order
}

struct Report {
    config: ResearchConfig,
}

impl Node for Report {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let summary = Summary::from_artifacts(
                &cx.artifacts,
                &self.config,
                cx.spent(&self.config.llm_budget()),
            )?;
            Ok(out(vec![
                ("report", Value::String(summary.markdown())),
                ("summary", to_value(&summary)?),
            ]))
        })
    }
}

struct Nothing;

impl Node for Nothing {
    fn run(&self, _cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async { Ok(Artifacts::new()) })
    }
}

/// A leaderboard row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based rank.
    pub rank: usize,
    /// The signal.
    pub signal: String,
    /// The iteration that proposed it.
    pub generation: usize,
    /// Its parents.
    pub parents: Vec<String>,
    /// Robust fitness.
    #[serde(with = "lim_backtest::nonfinite")]
    pub fitness: f64,
    /// Training metrics.
    pub train: Metrics,
    /// Validation metrics.
    pub validation: Metrics,
}

/// A strategy that ran but could not be scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// The signal.
    pub signal: String,
    /// Why it has no fitness.
    pub reason: String,
}

/// The run's summary and its Markdown report, computed from its artifacts by today's code, so
/// a run journaled by older code (or one whose report step failed) reports by current rules.
///
/// # Errors
/// An artifact the report needs is missing or malformed.
pub fn summarize(
    artifacts: &Artifacts,
    config: &ResearchConfig,
    spent: Spent,
) -> Result<(Summary, String), NodeError> {
    let summary = Summary::from_artifacts(artifacts, config, spent)?;
    let report = summary.markdown();
    Ok((summary, report))
}

/// A run's artifacts as its journal leaves them: each name's latest value over the completed
/// node executions, in journal order (what the engine's state holds at the end of a run).
pub fn artifacts_of(records: &[crate::journal::Record]) -> Artifacts {
    let mut out = Artifacts::new();
    for r in records
        .iter()
        .filter(|r| r.kind == crate::journal::Kind::Node)
    {
        if let Some(Value::Object(o)) = r.body.get("outputs") {
            out.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    out
}

/// What a run found: the report's content as data (`--json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The plan.
    pub plan: ExperimentPlan,
    /// Who proposed strategies.
    pub strategist: String,
    /// Strategies tried.
    pub trials: usize,
    /// The ten best by robust fitness (scored strategies only).
    pub leaderboard: Vec<Entry>,
    /// Strategies that ran but had no evidence to score, with the reason.
    #[serde(default)]
    pub rejected: Vec<Rejected>,
    /// The finalists' validation and sealed test metrics.
    pub finalists: Vec<Finalist>,
    /// Deflated Sharpe ratio and PBO over every trial.
    pub multiple_testing: Option<MultipleTesting>,
    /// The critiques, iteration by iteration.
    pub lineage: Vec<Critique>,
    /// The leader's ancestry: the leader, its first parent, that one's first parent, ….
    pub ancestry: Vec<String>,
    /// What the foundation model added (its `forecast` tool report), when the plan used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foundation: Option<Value>,
    /// Why the loop stopped.
    pub stop_reason: String,
    /// LLM spend.
    pub spent: Spent,
    /// What nodes noted on the way.
    pub notes: Vec<String>,
}

impl Summary {
    /// The summary of a run from its artifacts (see [`summarize`]).
    ///
    /// # Errors
    /// An artifact the report needs is missing or malformed.
    pub fn from_artifacts(
        a: &Artifacts,
        config: &ResearchConfig,
        spent: Spent,
    ) -> Result<Summary, NodeError> {
        let get = |k: &str| a.get(k).cloned().unwrap_or(Value::Null);
        let de = |k: &str| -> Result<Value, NodeError> { Ok(get(k)) };
        let plan: ExperimentPlan = serde_json::from_value(de("plan")?).map_err(fail)?;
        let mut trials: Vec<Trial> = serde_json::from_value(de("trials")?).map_err(fail)?;
        trials.iter_mut().for_each(|t| t.score(&plan.strategy));
        let rejected = trials
            .iter()
            .filter_map(|t| {
                Some(Rejected {
                    signal: t.signal.clone(),
                    reason: t.rejected.clone()?,
                })
            })
            .collect();
        let lineage: Vec<Critique> = serde_json::from_value(get("lineage")).unwrap_or_default();
        let leaderboard = leaderboard(&trials)
            .into_iter()
            .filter_map(|i| {
                let t = &trials[i];
                Some((t, t.fitness?, t.train?, t.validation?))
            })
            .take(10)
            .enumerate()
            .map(|(k, (t, fitness, train, validation))| Entry {
                rank: k + 1,
                signal: t.signal.clone(),
                generation: t.generation,
                parents: t.parents.clone(),
                fitness,
                train,
                validation,
            })
            .collect();
        let mut ancestry: Vec<String> = Vec::new();
        if let Some(&lead) = self::leaderboard(&trials)
            .first()
            .filter(|&&i| trials[i].fitness.is_some())
        {
            let mut cur = Some(trials[lead].signal.clone());
            while let Some(sig) = cur.take() {
                if ancestry.contains(&sig) || ancestry.len() > 20 {
                    break;
                }
                cur = trials
                    .iter()
                    .find(|t| t.signal == sig)
                    .and_then(|t| t.parents.first().cloned());
                ancestry.push(sig);
            }
        }
        let stop_reason = lineage
            .last()
            .and_then(|c| c.stop.clone())
            .unwrap_or_else(|| "the workflow's loop bound".into());
        Ok(Summary {
            strategist: match &config.strategist {
                StrategistConfig::Offline => offline::DISCLAIMER.to_string(),
                StrategistConfig::Llm { model, base_url } => {
                    format!("LLM strategist: model {model} at {base_url}")
                }
            },
            trials: trials.len(),
            leaderboard,
            rejected,
            finalists: serde_json::from_value(get("finalists")).map_err(fail)?,
            multiple_testing: serde_json::from_value(get("deflated")).map_err(fail)?,
            lineage,
            ancestry,
            foundation: a.get("predictions").filter(|p| !p.is_null()).cloned(),
            stop_reason,
            spent,
            notes: serde_json::from_value(get("notes")).unwrap_or_default(),
            plan,
        })
    }

    /// The report, in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.plan;
        let _ = writeln!(s, "# LIM research report\n");
        let _ = writeln!(s, "**Goal:** {}\n", p.strategy.goal);
        let _ = writeln!(s, "**Strategist:** {}\n", self.strategist);
        let _ = writeln!(s, "## Plan\n");
        let _ = writeln!(
            s,
            "- datasets: {} ({} instruments, {} bars)",
            p.strategy.datasets.join(", "),
            p.instruments,
            p.frequency
        );
        let _ = writeln!(
            s,
            "- family: {:?}; book: {}",
            p.strategy.family,
            serde_json::to_string(&p.strategy.portfolio).unwrap_or_default()
        );
        let _ = writeln!(s, "- horizon: {}", p.horizon);
        if !p.review.is_empty() {
            let _ = writeln!(s, "- checked: {}", p.review);
        }
        let _ = writeln!(s, "- splits: {}", p.splits);
        let _ = writeln!(s, "- objective: {}", p.objective);
        for c in &p.constraints {
            let _ = writeln!(s, "- constraint: {c}");
        }
        let b = &p.budgets;
        let _ = writeln!(
            s,
            "- budget: {} iterations{}{}{}; converged after {} iterations without a better strategy",
            b.max_iterations,
            b.max_usd.map(|u| format!(", ${u}")).unwrap_or_default(),
            b.max_tokens
                .map(|t| format!(", {t} tokens"))
                .unwrap_or_default(),
            b.deadline_minutes
                .map(|m| format!(", {m} minutes"))
                .unwrap_or_default(),
            b.patience
        );
        let _ = writeln!(
            s,
            "\n## Stopped\n\n{} after {} strategies.\n",
            self.stop_reason, self.trials
        );
        if let Some(f) = &self.foundation {
            let coverage = f
                .get("coverage")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .map(|x| {
                            format!(
                                "{} {:.0}%",
                                crate::trace::field(x, "/0"),
                                x.get(1).and_then(Value::as_f64).unwrap_or(0.0) * 100.0
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "## Foundation model\n\n{} learned from data up to {}; its out-of-sample predictions are the field `{}` (coverage: {coverage}). Predictions at or before its cutoff dropped: {}.\n",
                crate::trace::field(f, "/model"),
                crate::trace::field(f, "/cutoff"),
                crate::trace::field(f, "/field"),
                crate::trace::field(f, "/dropped_in_sample"),
            );
        }
        let _ = writeln!(s, "## Leaderboard (train and validation only)\n");
        let _ = writeln!(
            s,
            "| # | iter | fitness | train Sharpe | valid Sharpe | valid return | valid max DD | valid turnover | signal |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for e in &self.leaderboard {
            let v = &e.validation;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | `{}` |",
                e.rank,
                e.generation,
                show(e.fitness, 2, "none"),
                cell(&e.train, e.train.sharpe, 2, 1.0, ""),
                cell(v, v.sharpe, 2, 1.0, ""),
                cell(v, v.ann_return, 1, 100.0, "%"),
                cell(v, v.max_dd, 1, 100.0, "%"),
                cell(v, v.turnover, 3, 1.0, ""),
                e.signal
            );
        }
        if self.leaderboard.is_empty() {
            let _ = writeln!(
                s,
                "| – | – | – | – | – | – | – | – | no strategy had enough active bars in both parts to be scored |"
            );
        }
        if !self.rejected.is_empty() {
            let _ = writeln!(
                s,
                "\n{} strategies ran but had no evidence to score; they rank below every scored one:\n",
                self.rejected.len()
            );
            for r in self.rejected.iter().take(10) {
                let _ = writeln!(s, "- `{}`: {}", r.signal, r.reason);
            }
            if self.rejected.len() > 10 {
                let _ = writeln!(s, "- … and {} more", self.rejected.len() - 10);
            }
        }
        let _ = writeln!(
            s,
            "\n## Sealed test period (evaluated once, on the finalists)\n"
        );
        let _ = writeln!(
            s,
            "| valid Sharpe | test Sharpe | test return | test max DD | signal |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        for f in &self.finalists {
            let (v, t) = (&f.validation, &f.test);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | `{}` |",
                cell(v, v.sharpe, 2, 1.0, ""),
                cell(t, t.sharpe, 2, 1.0, ""),
                cell(t, t.ann_return, 1, 100.0, "%"),
                cell(t, t.max_dd, 1, 100.0, "%"),
                f.signal
            );
        }
        for f in &self.finalists {
            if let Some(r) = self.rejected.iter().find(|r| r.signal == f.signal) {
                let _ = writeln!(
                    s,
                    "\n`{}` was made a finalist by the rules this run was recorded with; today's rank it last ({}).",
                    f.signal, r.reason
                );
            }
        }
        let _ = writeln!(s, "\n## Multiple testing over all {} trials\n", self.trials);
        match &self.multiple_testing {
            Some(m) => {
                let _ = writeln!(
                    s,
                    "- best validation Sharpe {}; deflated Sharpe ratio {} (probability that its true Sharpe is above zero, given {} trials)",
                    show(m.best_validation_sharpe, 2, "undefined"),
                    show(m.deflated.dsr, 3, "undefined"),
                    m.trials
                );
                let _ = writeln!(
                    s,
                    "- the best of {} tries at zero true skill would show a Sharpe of about {}",
                    m.trials,
                    show(m.deflated.expected_max * 252f64.sqrt(), 2, "undefined")
                );
                match m.pbo {
                    Some(pbo) => {
                        let _ =
                            writeln!(s, "- probability of backtest overfitting (CSCV): {pbo:.2}");
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            "- probability of backtest overfitting: not computed (too few trials or bars)"
                        );
                    }
                }
                if m.deflated.dsr.is_nan() || m.deflated.dsr < 0.95 {
                    let _ = writeln!(
                        s,
                        "- **the best validation result is not significant after deflation: treat it as luck until shown otherwise**"
                    );
                }
            }
            None => {
                let _ = writeln!(s, "- fewer than two strategies ran; no statistics");
            }
        }
        let _ = writeln!(s, "\n## Hypothesis lineage\n");
        if !self.ancestry.is_empty() {
            let _ = writeln!(s, "The leader descends from (newest first):\n");
            for (k, a) in self.ancestry.iter().enumerate() {
                let _ = writeln!(s, "{}`{a}`", "  ".repeat(k) + "- ");
            }
            s.push('\n');
        }
        for c in &self.lineage {
            let _ = writeln!(s, "{}. {}", c.iteration, c.diagnosis);
            for h in &c.hypotheses {
                let _ = writeln!(s, "   - next: {h}");
            }
        }
        let _ = writeln!(
            s,
            "\n## Cost\n\n{} LLM calls, {} tokens, ${:.4}.\n",
            self.spent.calls, self.spent.tokens, self.spent.usd
        );
        if !self.notes.is_empty() {
            let _ = writeln!(s, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
            s.push('\n');
        }
        let _ = writeln!(s, "## Caveats\n");
        let _ = writeln!(
            s,
            "- Costs of {} bps per unit turnover are in every number above; slippage beyond that is not modelled.",
            p.strategy.cost_bps
        );
        let _ = writeln!(
            s,
            "- Futures series are stitched across rolls (back-adjusted returns); equities data may carry survivorship bias (see docs/data.md)."
        );
        let _ = writeln!(
            s,
            "- The test period was read once, by the final evaluator, after the search had ended; no feedback the strategist saw came from it."
        );
        s
    }
}

/// A metric of a part for the report: "no trades" when the part had no active bar, otherwise
/// `v × scale` with `places` decimals and `unit` (or `n/a`, `∞`).
fn cell(m: &Metrics, v: f64, places: usize, scale: f64, unit: &str) -> String {
    if m.bars == 0 {
        "no trades".into()
    } else if v.is_finite() {
        format!("{:.places$}{unit}", v * scale)
    } else {
        show(v, places, "n/a")
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
    let wf = workflow::research(config.budgets.max_iterations.max(1))?;
    Ok(Executor::new(wf, config.seed)
        .node("start", Start(services.clone()))
        .node(
            "plan",
            PlanNode {
                services: services.clone(),
                config: config.clone(),
                protocol: Arc::new(ProtocolMemo::new(Protocol::Auto)),
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
                forecaster: services.forecaster.clone(),
                universe: universe.clone(),
            },
        )
        .node(
            "generate",
            Generate {
                services: services.clone(),
                config: config.clone(),
            },
        )
        .node(
            "backtest",
            Backtest {
                universe: universe.clone(),
            },
        )
        .node(
            "critique",
            CritiqueNode {
                services,
                config: config.clone(),
            },
        )
        .node(
            "finalize",
            Finalize {
                universe,
                config: config.clone(),
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
