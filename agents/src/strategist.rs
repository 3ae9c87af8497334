//! The LLM strategist: proposes strategy specs for a plan, given what has been tried, through
//! any [`LlmClient`] with structured output. Every proposal's signal must parse in the strategy
//! language; a reply that does not gets the exact error back (see [`crate::structured`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::chat::{ChatRequest, Message};
use crate::client::LlmClient;
use crate::offline::Plan;
use crate::prompt;
use crate::structured::{StructuredError, ask};
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

/// Asks `client` for `count` new strategies.
///
/// # Errors
/// The call failed, or no valid reply came within `max_reasks` re-asks.
pub async fn propose<L: LlmClient>(
    client: &L,
    model: &str,
    plan: &Plan,
    fields: &[&str],
    leaderboard: &[Tried],
    count: usize,
    max_reasks: u32,
) -> Result<Vec<StrategySpec>, StructuredError> {
    let render = |name: &str, ctx: serde_json::Value| {
        prompt::render(name, &ctx).map_err(|e| StructuredError::Invalid {
            attempts: 0,
            last: format!("prompt {name}: {e}"),
        })
    };
    let system = render(
        "strategist_system",
        serde_json::json!({"fields": fields, "cost_bps": plan.cost_bps}),
    )?;
    let user = render(
        "propose",
        serde_json::json!({"plan": plan, "leaderboard": leaderboard, "critique": null, "count": count}),
    )?;
    let req = ChatRequest::new(
        model,
        vec![Message::system(system), Message::user(user)],
        2_000,
    );
    let check = |p: &Proposals| -> Result<(), String> {
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
    };
    Ok(ask::<Proposals, L>(client, req, max_reasks, check)
        .await?
        .strategies)
}
