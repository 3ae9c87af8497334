//! The [`LlmClient`] trait, its decorators, and [`ScriptedLlm`] for tests.
//!
//! Each decorator implements the trait it wraps, so a provider is composed, e.g.
//! `Recording<Budgeted<Retrying<Timed<OpenAi>>>>`: retries happen inside the budget, and the
//! trace records what the budget let through.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::chat::scrub;
use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall, Usage};
use crate::error::LlmError;

/// A chat model.
pub trait LlmClient: Send + Sync {
    /// Sends one request and waits for the reply.
    ///
    /// # Errors
    /// Transport, provider and budget failures, classified in [`LlmError`].
    fn complete(
        &self,
        req: &ChatRequest,
    ) -> impl Future<Output = Result<ChatResponse, LlmError>> + Send;
}

/// A small deterministic generator (SplitMix64): jitter must come from the run's seed so that
/// runs are reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next value in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Base of the exponential backoff.
    pub base: Duration,
    /// Longest backoff between two attempts (a longer `Retry-After` still wins).
    pub cap: Duration,
    /// Retries allowed over the client's lifetime, across all calls.
    pub budget: u32,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            budget: 10_000,
        }
    }
}

/// Retries transient failures (429, 5xx, timeouts, connection resets) with exponential backoff
/// and full jitter, never sooner than the provider's `Retry-After`; never retries a bad
/// request, a refused key or exhausted quota.
#[derive(Debug)]
pub struct Retrying<L> {
    inner: L,
    policy: RetryPolicy,
    state: Mutex<(SplitMix, u32)>,
}

impl<L> Retrying<L> {
    /// Wraps `inner`; jitter is drawn from `seed`.
    pub fn new(inner: L, policy: RetryPolicy, seed: u64) -> Retrying<L> {
        Retrying {
            inner,
            policy,
            state: Mutex::new((SplitMix::new(seed), policy.budget)),
        }
    }

    /// The wrapped client.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// Decides whether to retry after `attempt` failed attempts, and how long to wait.
    fn backoff(&self, attempt: u32, err: &LlmError) -> Option<Duration> {
        if !err.is_transient() || attempt >= self.policy.max_attempts {
            return None;
        }
        let mut state = self.state.lock().ok()?;
        if state.1 == 0 {
            return None;
        }
        state.1 -= 1;
        let ceiling = self
            .policy
            .base
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.policy.cap);
        let jitter = ceiling.mul_f64(state.0.next_f64());
        Some(match err {
            LlmError::RateLimited {
                retry_after: Some(d),
            } => jitter.max(*d),
            _ => jitter,
        })
    }
}

impl<L: LlmClient> LlmClient for Retrying<L> {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.inner.complete(req).await {
                Ok(r) => return Ok(r),
                Err(e) => match self.backoff(attempt, &e) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None if attempt == 1 => return Err(e),
                    None => {
                        return Err(LlmError::RetriesExhausted {
                            attempts: attempt,
                            last: Box::new(e),
                        });
                    }
                },
            }
        }
    }
}

/// Cuts a request off after a timeout.
///
/// # Cancel safety
/// The inner future is dropped at the timeout; the provider may still bill the call.
#[derive(Debug)]
pub struct Timed<L> {
    inner: L,
    limit: Duration,
}

impl<L> Timed<L> {
    /// Wraps `inner` with a per-request `limit`.
    pub fn new(inner: L, limit: Duration) -> Timed<L> {
        Timed { inner, limit }
    }

    /// The wrapped client.
    pub fn inner_ref(&self) -> &L {
        &self.inner
    }
}

impl<L: LlmClient> LlmClient for Timed<L> {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        match tokio::time::timeout(self.limit, self.inner.complete(req)).await {
            Ok(r) => r,
            Err(_) => Err(LlmError::Timeout(self.limit)),
        }
    }
}

/// Dollar prices per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Per million prompt tokens.
    pub prompt: f64,
    /// Per million completion tokens.
    pub completion: f64,
}

/// A spending limit in tokens and/or dollars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Most tokens (prompt + completion) over the run.
    pub max_tokens: Option<u64>,
    /// Most dollars over the run.
    pub max_usd: Option<f64>,
    /// Prices by model name; a model without a price costs nothing in dollars.
    pub prices: BTreeMap<String, Price>,
}

/// What a [`Budgeted`] client has spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Tokens.
    pub tokens: u64,
    /// Dollars.
    pub usd: f64,
    /// Calls made.
    pub calls: u64,
}

/// Refuses, before sending, any call whose worst case (estimated prompt plus `max_tokens` of
/// completion) would take spending past the budget; counts what each reply actually used.
///
/// The prompt estimate learns from the provider: once a reply reports more prompt tokens than
/// its request was estimated at (of requests estimated at [`LEARN_FROM_TOKENS`] or more), later
/// estimates are scaled up by the largest such ratio seen, so a tokeniser denser than the
/// estimate's assumption cannot walk the run past its budget.
#[derive(Debug)]
pub struct Budgeted<L> {
    inner: L,
    budget: Budget,
    spent: Mutex<Spent>,
    /// Largest ratio of reported to estimated prompt tokens so far (at least 1).
    prompt_scale: Mutex<f64>,
}

impl<L> Budgeted<L> {
    /// Wraps `inner` with `budget`, starting from `already` spent (a resumed run).
    pub fn new(inner: L, budget: Budget, already: Spent) -> Budgeted<L> {
        Budgeted {
            inner,
            budget,
            spent: Mutex::new(already),
            prompt_scale: Mutex::new(1.0),
        }
    }

    /// Starts the prompt estimate's scale at `scale` (at least 1): what the provider's replies
    /// already journaled taught a run being resumed (see [`prompt_ratio`]).
    pub fn with_prompt_scale(self, scale: f64) -> Budgeted<L> {
        if let Ok(mut s) = self.prompt_scale.lock() {
            *s = s.max(scale);
        }
        self
    }

    /// Spending so far.
    pub fn spent(&self) -> Spent {
        self.spent.lock().map(|s| *s).unwrap_or_default()
    }

    fn usd(&self, model: &str, prompt: u64, completion: u64) -> f64 {
        self.budget.prices.get(model).map_or(0.0, |p| {
            (prompt as f64 * p.prompt + completion as f64 * p.completion) / 1e6
        })
    }

    /// The request's prompt estimate, scaled by what the provider has reported so far.
    fn estimated_prompt(&self, req: &ChatRequest) -> u64 {
        let scale = self.prompt_scale.lock().map(|s| *s).unwrap_or(1.0);
        (req.estimated_prompt_tokens() as f64 * scale).ceil() as u64
    }

    fn check(&self, req: &ChatRequest) -> Result<(), LlmError> {
        let spent = self.spent();
        let prompt = self.estimated_prompt(req);
        let worst = prompt + u64::from(req.max_tokens);
        if let Some(limit) = self.budget.max_tokens
            && spent.tokens + worst > limit
        {
            return Err(LlmError::BudgetExceeded {
                unit: "tokens",
                projected: worst as f64,
                remaining: limit.saturating_sub(spent.tokens) as f64,
                limit: limit as f64,
            });
        }
        if let Some(limit) = self.budget.max_usd {
            let cost = self.usd(&req.model, prompt, u64::from(req.max_tokens));
            if spent.usd + cost > limit {
                return Err(LlmError::BudgetExceeded {
                    unit: "USD",
                    projected: cost,
                    remaining: (limit - spent.usd).max(0.0),
                    limit,
                });
            }
        }
        Ok(())
    }
}

impl<L: LlmClient> LlmClient for Budgeted<L> {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.check(req)?;
        let r = self.inner.complete(req).await?;
        let usd = self.usd(&req.model, r.usage.prompt_tokens, r.usage.completion_tokens);
        if let Some(ratio) = prompt_ratio(req, r.usage.prompt_tokens)
            && let Ok(mut scale) = self.prompt_scale.lock()
        {
            *scale = scale.max(ratio);
        }
        if let Ok(mut s) = self.spent.lock() {
            s.tokens += r.usage.total();
            s.usd += usd;
            s.calls += 1;
        }
        Ok(r)
    }
}

/// Prompts estimated below this many tokens teach the estimate nothing: a chat template's fixed
/// overhead would make a short prompt's ratio large and every later estimate too cautious.
pub const LEARN_FROM_TOKENS: u64 = 100;

/// How many times its estimate a request's prompt turned out to be, as the provider counted
/// it (`None` for prompts too short to learn from, see [`LEARN_FROM_TOKENS`]).
pub fn prompt_ratio(req: &ChatRequest, prompt_tokens: u64) -> Option<f64> {
    let estimate = req.estimated_prompt_tokens();
    (estimate >= LEARN_FROM_TOKENS).then(|| prompt_tokens as f64 / estimate as f64)
}

/// One planned turn of a [`ScriptedLlm`].
#[derive(Debug, Clone)]
pub enum Turn {
    /// A text reply.
    Text(String),
    /// A tool call with JSON arguments.
    ToolCall {
        /// Tool name.
        name: String,
        /// Arguments as JSON text (may be malformed on purpose).
        arguments: String,
    },
    /// Several tool calls in one reply (name, JSON arguments), to be run concurrently.
    ToolCalls(Vec<(String, String)>),
    /// A text reply cut at `max_tokens` (`finish_reason: length`).
    Cut(String),
    /// A failure.
    Error(LlmError),
}

/// A test double that plays planned turns in order, reporting `usage` for each reply, and
/// keeps every request it was sent.
#[derive(Debug)]
pub struct ScriptedLlm {
    turns: Mutex<VecDeque<Turn>>,
    usage: Usage,
    seen: Mutex<Vec<ChatRequest>>,
}

impl ScriptedLlm {
    /// Plays `turns`, each reply reporting `usage`.
    pub fn new(turns: impl IntoIterator<Item = Turn>, usage: Usage) -> ScriptedLlm {
        ScriptedLlm {
            turns: Mutex::new(turns.into_iter().collect()),
            usage,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl LlmClient for ScriptedLlm {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        if let Ok(mut s) = self.seen.lock() {
            s.push(req.clone());
        }
        let turn = self.turns.lock().ok().and_then(|mut t| t.pop_front());
        let (message, finish_reason) = match turn {
            None => return Err(LlmError::Malformed("the script has no more turns".into())),
            Some(Turn::Error(e)) => return Err(e),
            Some(Turn::Text(t)) => (Message::assistant(t), FinishReason::Stop),
            Some(Turn::Cut(t)) => (Message::assistant(t), FinishReason::Length),
            Some(Turn::ToolCalls(calls)) => (
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, (name, arguments))| ToolCall {
                            id: format!("call_{}", i + 1),
                            name,
                            arguments,
                        })
                        .collect(),
                    tool_call_id: None,
                },
                FinishReason::ToolCalls,
            ),
            Some(Turn::ToolCall { name, arguments }) => (
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name,
                        arguments,
                    }],
                    tool_call_id: None,
                },
                FinishReason::ToolCalls,
            ),
        };
        Ok(ChatResponse {
            message,
            finish_reason,
            usage: self.usage,
            notes: Vec::new(),
        })
    }
}

/// One recorded exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The request, scrubbed of secrets.
    pub request: ChatRequest,
    /// The reply or the error's text.
    pub outcome: Result<ChatResponse, String>,
}

/// Records every exchange, scrubbed, as JSON lines.
#[derive(Debug)]
pub struct Recording<L> {
    inner: L,
    lines: Mutex<Vec<String>>,
}

impl<L> Recording<L> {
    /// Wraps `inner`.
    pub fn new(inner: L) -> Recording<L> {
        Recording {
            inner,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped client.
    pub fn inner_ref(&self) -> &L {
        &self.inner
    }

    /// The trace so far, one JSON object per line.
    pub fn jsonl(&self) -> String {
        self.lines
            .lock()
            .map(|l| l.iter().map(|s| format!("{s}\n")).collect())
            .unwrap_or_default()
    }
}

impl<L: LlmClient> LlmClient for Recording<L> {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let outcome = self.inner.complete(req).await;
        let ex = Exchange {
            fingerprint: req.fingerprint(),
            request: req.clone(),
            outcome: outcome.clone().map_err(|e| e.to_string()),
        };
        let line = serde_json::to_string(&ex).map_err(|e| LlmError::Trace(e.to_string()))?;
        if let Ok(mut l) = self.lines.lock() {
            l.push(scrub(&line));
        }
        outcome
    }
}

/// Answers from a recorded trace, with no provider at all. Each fingerprint's replies are
/// given in recorded order; an unknown request is a [`LlmError::ReplayMiss`].
#[derive(Debug)]
pub struct Replaying {
    replies: Mutex<HashMap<String, VecDeque<Result<ChatResponse, String>>>>,
}

impl Replaying {
    /// Loads a JSON-lines trace written by [`Recording`].
    ///
    /// # Errors
    /// A line that is not an exchange, with its number.
    pub fn from_jsonl(text: &str) -> Result<Replaying, LlmError> {
        let mut replies: HashMap<String, VecDeque<_>> = HashMap::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let ex: Exchange = serde_json::from_str(line)
                .map_err(|e| LlmError::Trace(format!("line {}: {e}", i + 1)))?;
            replies
                .entry(ex.fingerprint)
                .or_default()
                .push_back(ex.outcome);
        }
        Ok(Replaying {
            replies: Mutex::new(replies),
        })
    }
}

impl LlmClient for Replaying {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let fingerprint = req.fingerprint();
        let next = self
            .replies
            .lock()
            .ok()
            .and_then(|mut r| r.get_mut(&fingerprint).and_then(VecDeque::pop_front));
        match next {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(LlmError::Malformed(format!("recorded failure: {e}"))),
            None => Err(LlmError::ReplayMiss { fingerprint }),
        }
    }
}
