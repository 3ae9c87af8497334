//! What decides a run: the goal, the strategist, the seed, the splits and the budgets.

use super::*;

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
    /// Iterations, the one that found the best strategy among them, after which a search
    /// that has not bettered it counts as converged: with 3, two iterations in a row without a
    /// better strategy.
    pub patience: u32,
    /// Dollars per million prompt and completion tokens, for `max_usd` and the report.
    pub price: Option<Price>,
    /// Estimated CPU-seconds the foundation model may train for (its tools refuse more).
    /// Runs recorded before the budget existed read 0: no foundation tools.
    #[serde(default)]
    pub foundation_cpu_seconds: f64,
}

impl Budgets {
    /// The budget in words: "6 iterations, $5, 200000 tokens, 480 minutes".
    pub fn describe(&self) -> String {
        format!(
            "{} iterations{}{}{}",
            self.max_iterations,
            self.max_usd.map(|u| format!(", ${u}")).unwrap_or_default(),
            self.max_tokens
                .map(|t| format!(", {t} tokens"))
                .unwrap_or_default(),
            self.deadline_minutes
                .map(|m| format!(", {m:.0} minutes"))
                .unwrap_or_default()
        )
    }
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
            foundation_cpu_seconds: 60.0,
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
    /// Fitness lost per unit of correlation with the closest baseline beyond
    /// [`super::MAX_BASELINE_CORRELATION`] (see [`super::baseline_penalty`]); 0, the default,
    /// only reports it. Left out of the fingerprint when 0, so runs recorded before it keep
    /// theirs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub baseline_penalty: f64,
    /// The data ends here, as if the run were made then (`YYYY-MM-DD` or an RFC 3339
    /// instant); all stored data when absent. Left out of the fingerprint when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// Studies an earlier period: the data ends where the sealed test of the history would
    /// begin, this many times over (`lim_tools::ChooseUniverseArgs::earlier`). Left out of
    /// the fingerprint when 0.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub earlier: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
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
            baseline_penalty: 0.0,
            as_of: None,
            earlier: 0,
        }
    }

    /// The universe of `datasets` with this run's split and data cut: what the run's data
    /// node, its plan check and the benchmark's re-runs load.
    pub fn universe_args(&self, datasets: Vec<String>) -> lim_tools::ChooseUniverseArgs {
        lim_tools::ChooseUniverseArgs {
            datasets,
            symbols: None,
            frequency: None,
            train: self.train,
            valid: self.valid,
            embargo: self.embargo,
            as_of: self.as_of.clone(),
            earlier: self.earlier,
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
