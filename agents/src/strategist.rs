//! The research workflow's LLM agents: the planner ([`plan_agent`]) and the strategist
//! ([`propose_agent`]) run on [`crate::agent`] with tools; the critic ([`critique`]) answers in
//! one structured reply. Every answer is checked (a plan against the goal and the data, each
//! proposal's signal against the strategy language) and a failing one goes back to the model
//! with the exact error.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::agent::{self, AgentError, AgentRun, Limits, Outcome, ProtocolMemo, Task, Toolbox};
use crate::client::LlmClient;
use crate::offline::Plan;
use crate::prompt;
use lim_backtest::spec::StrategySpec;

/// What the model must return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proposals {
    /// New strategies to backtest.
    pub strategies: Vec<StrategySpec>,
}

/// The critic's reading of a round of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Critique {
    /// Why the weak strategies failed and what the strong ones share, briefly.
    pub diagnosis: String,
    /// At most three hypotheses for the next round.
    pub hypotheses: Vec<String>,
    /// Whether the best result is plausibly luck given the number of trials.
    pub likely_luck: bool,
}

/// One line of the leaderboard shown to the model.
#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    /// The signal.
    pub signal: String,
    /// Training Sharpe.
    pub train_sharpe: f64,
    /// Validation Sharpe.
    pub validation_sharpe: f64,
}

/// The planning agent's final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChoice {
    /// The experiment plan.
    pub plan: Plan,
    /// Why this data and this book fit the goal, in one or two sentences.
    pub why: String,
    /// Whether to train the foundation model (a patch Transformer pretrained across markets)
    /// on data before the validation part and offer its out-of-sample forecasts as the field
    /// `forecast`: worth it when a learned forecast may add to price and volume signals; it
    /// costs minutes of CPU.
    #[serde(default)]
    pub foundation_model: bool,
}

/// The planning agent: the model may call `tools` (list and describe datasets) before it
/// commits to a plan; the plan must name datasets that exist and pass `check` (the goal's
/// market and limits, the data), or the problem goes back to it.
///
/// # Errors
/// The toolbox could not journal a call; every other ending is the run's [`Outcome`].
#[allow(clippy::too_many_arguments)] // each is a distinct input of the agent
pub async fn plan_agent<L: LlmClient>(
    client: &L,
    tools: &dyn Toolbox,
    memo: &ProtocolMemo,
    model: &str,
    goal: &str,
    suggestion: &Plan,
    datasets: &[String],
    check: impl Fn(&Plan) -> Result<(), String>,
) -> Result<AgentRun<PlanChoice>, AgentError> {
    let prompt_error = |e: minijinja::Error| AgentError::Tools(format!("prompt: {e}"));
    let task = Task {
        model: model.to_string(),
        system: prompt::render("plan_system", &serde_json::json!({})).map_err(prompt_error)?,
        user: prompt::render(
            "plan_task",
            &serde_json::json!({"goal": goal, "datasets": datasets,
                "suggestion": serde_json::to_string_pretty(suggestion).unwrap_or_default()}),
        )
        .map_err(prompt_error)?,
    };
    let limits = Limits {
        max_steps: 6,
        reply_tokens: 1_000,
        ..Limits::default()
    };
    let mut run = agent::run(client, tools, &task, memo, limits, |c: &PlanChoice| match c
        .plan
        .datasets
        .iter()
        .find(|d| !datasets.contains(d))
    {
        Some(d) => Err(format!(
            "datasets: '{d}' does not exist; choose from {}",
            datasets.join(", ")
        )),
        None => check(&c.plan),
    })
    .await?;
    if let Outcome::Answer { value } = &mut run.outcome {
        value.plan.goal = goal.to_string();
        value.plan.author = format!("LLM planner ({model})");
    }
    Ok(run)
}

/// The critic agent: it reads a round of results (`results`, rendered by the `critique`
/// prompt) and may call `tools` (diagnostics, leaderboard, lineage, memory) before it answers.
///
/// # Errors
/// A prompt failed to render, or the toolbox could not journal a call; every other ending is
/// the run's [`Outcome`].
pub async fn critique_agent<L: LlmClient>(
    client: &L,
    tools: &dyn Toolbox,
    memo: &ProtocolMemo,
    model: &str,
    results: &serde_json::Value,
    limits: Limits,
) -> Result<AgentRun<Critique>, AgentError> {
    let prompt_error = |e: minijinja::Error| AgentError::Tools(format!("prompt: {e}"));
    let task = Task {
        model: model.to_string(),
        system: prompt::render("critique_system", &serde_json::json!({})).map_err(prompt_error)?,
        user: prompt::render("critique", results).map_err(prompt_error)?,
    };
    agent::run(client, tools, &task, memo, limits, |c: &Critique| {
        if c.hypotheses.len() > 3 {
            Err("give at most three hypotheses".into())
        } else {
            Ok(())
        }
    })
    .await
}

/// What the strategist agent is given.
#[derive(Debug, Clone, Copy)]
pub struct ProposeInput<'a> {
    /// The model.
    pub model: &'a str,
    /// The plan.
    pub plan: &'a Plan,
    /// Fields signals may use.
    pub fields: &'a [&'a str],
    /// The best strategies so far.
    pub leaderboard: &'a [Tried],
    /// The critic's last notes.
    pub critique: Option<&'a str>,
    /// How many strategies to propose.
    pub count: usize,
    /// When the foundation model's tools are offered: the CPU-seconds left to train it, and the
    /// fields its predictions have become so far (read when an answer is checked, so a field
    /// the agent adds while it works can be used in its answer).
    pub foundation: Option<FoundationOffer<'a>>,
    /// The share of bars missing inside instruments' lives, in percent, when the universe's
    /// calendar has holes (see `Session::calendar_gaps`); `None` otherwise.
    pub calendar_gaps: Option<f64>,
}

/// The foundation model's tools, as offered to the strategist.
#[derive(Clone, Copy)]
pub struct FoundationOffer<'a> {
    /// Estimated CPU-seconds left for training.
    pub remaining_cpu_seconds: f64,
    /// The fields added so far.
    pub fields: &'a (dyn Fn() -> Vec<String> + Send + Sync),
}

impl std::fmt::Debug for FoundationOffer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundationOffer")
            .field("remaining_cpu_seconds", &self.remaining_cpu_seconds)
            .finish_non_exhaustive()
    }
}

/// The strategist agent: it may backtest candidates and read the leaderboard and lineage
/// (`tools`) before it answers with new strategy specs, each of which must validate and parse.
///
/// # Errors
/// A prompt failed to render, or the toolbox could not journal a call; every other ending is
/// the run's [`Outcome`].
pub async fn propose_agent<L: LlmClient>(
    client: &L,
    tools: &dyn Toolbox,
    memo: &ProtocolMemo,
    input: ProposeInput<'_>,
    limits: Limits,
) -> Result<AgentRun<Proposals>, AgentError> {
    let prompt_error = |e: minijinja::Error| AgentError::Tools(format!("prompt: {e}"));
    let system = prompt::render(
        "strategist_system",
        &serde_json::json!({"fields": input.fields, "cost_bps": input.plan.cost_bps, "tools": true,
            "foundation_cpu_seconds": input.foundation.as_ref().map(|f| f.remaining_cpu_seconds.round() as i64),
            "calendar_gaps": input.calendar_gaps.map(|g| (g * 10.0).round() / 10.0)}),
    )
    .map_err(prompt_error)?;
    let user = prompt::render(
        "propose",
        &serde_json::json!({"plan": input.plan, "leaderboard": input.leaderboard,
            "critique": input.critique, "count": input.count}),
    )
    .map_err(prompt_error)?;
    let task = Task {
        model: input.model.to_string(),
        system,
        user,
    };
    let fields = input.fields;
    let added = input.foundation.as_ref().map(|f| f.fields);
    agent::run(client, tools, &task, memo, limits, |p: &Proposals| {
        let added = added.map(|f| f()).unwrap_or_default();
        let mut all: Vec<&str> = fields.to_vec();
        all.extend(added.iter().map(String::as_str));
        check_proposals(p, &all)
    })
    .await
}

fn check_proposals(p: &Proposals, fields: &[&str]) -> Result<(), String> {
    if p.strategies.is_empty() {
        return Err("the list of strategies is empty".into());
    }
    for (i, s) in p.strategies.iter().enumerate() {
        s.validate()
            .map_err(|e| format!("strategy {}: {e}", i + 1))?;
        lim_backtest::parse(&s.signal, fields)
            .map_err(|e| format!("strategy {}: the signal does not parse: {e}", i + 1))?;
    }
    Ok(())
}
