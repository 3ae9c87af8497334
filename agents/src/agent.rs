//! The agent runtime: a model is given a task, the definitions of the tools it may call and the
//! schema of the final answer it must produce; it calls tools (each through a [`Toolbox`], which
//! the workflow journals), sees their results or their errors as tool messages, and ends with a
//! final answer that validates, or at a step or token limit, with a typed [`Outcome`].
//!
//! Two protocols, because many servers ignore `tools`:
//! - [`Protocol::Native`]: function calling (`tools`, `tool_choice: required`); the final answer
//!   is the call of a tool named [`FINAL`] whose parameters are the answer's schema. Parallel
//!   calls in one reply run concurrently (the toolbox's business) and come back in call order.
//! - [`Protocol::Json`]: the reply must be one JSON object, `{"tool": NAME, "arguments": {…}}`
//!   or `{"final_answer": {…}}`, constrained by a `json_schema` response format with one branch
//!   per tool (llama.cpp enforces it with a grammar).
//!
//! [`Protocol::Auto`] starts native and falls back to JSON, for good, the first time a server
//! answers a tools request with text that is neither a call nor a final answer; the protocol in
//! use is in every [`AgentRun`] (and so in the node's journaled output).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::chat::{
    ChatRequest, FinishReason, Message, ResponseFormat, Role, ToolCall, ToolDef, Usage,
};
use crate::client::{LlmClient, Price};
use crate::structured::{extract_json, strict_schema};

/// The name of the native protocol's final-answer tool.
pub const FINAL: &str = "final_answer";

/// A boxed future, for the object-safe [`Toolbox`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The tools an agent may call. The workflow's implementation journals every call, so a resumed
/// or replayed run sees the same results.
pub trait Toolbox: Send + Sync {
    /// What the model is told about each tool.
    fn definitions(&self) -> Vec<ToolDef>;

    /// Runs `calls` (concurrently if it likes) and returns their results in call order. A tool's
    /// failure (bad arguments, an unknown tool, a refusal) is a result, not an error.
    ///
    /// # Errors
    /// Only what must stop the agent: the journal could not be written, or the run diverged.
    fn call_all<'a>(&'a self, calls: &'a [ToolCall]) -> BoxFuture<'a, Result<Vec<Value>, String>>;
}

/// How tool calls travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Native function calling.
    Native,
    /// One JSON object per reply, constrained by a schema.
    Json,
    /// Native until the server shows it ignores tools, then JSON.
    Auto,
}

/// The protocol an endpoint was found to need, remembered across the agents of a run.
#[derive(Debug)]
pub struct ProtocolMemo(Mutex<Protocol>);

impl ProtocolMemo {
    /// Starts with `p`.
    pub fn new(p: Protocol) -> ProtocolMemo {
        ProtocolMemo(Mutex::new(p))
    }

    /// The protocol to use now.
    pub fn get(&self) -> Protocol {
        self.0.lock().map(|p| *p).unwrap_or(Protocol::Json)
    }

    fn set(&self, p: Protocol) {
        if let Ok(mut g) = self.0.lock() {
            *g = p;
        }
    }
}

/// The instant an agent loop must end by, on the run's clock (a journaled clock, so a replay
/// ends where the run ended).
#[derive(Clone)]
pub struct Deadline {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    /// The run's clock.
    pub now: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("at_ms", &self.at_ms)
            .finish_non_exhaustive()
    }
}

/// When an agent must stop without an answer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Model replies (each tool-calling reply and each answer attempt is one).
    pub max_steps: u32,
    /// Prompt and completion tokens over the whole loop.
    pub max_tokens: Option<u64>,
    /// Completion tokens per reply.
    pub reply_tokens: u32,
    /// Dollars over the whole loop, priced by `price` (no limit without a price).
    pub max_usd: Option<f64>,
    /// Dollars per million prompt and completion tokens.
    pub price: Option<Price>,
    /// No new reply is asked for after this instant.
    pub deadline: Option<Deadline>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_steps: 8,
            max_tokens: None,
            reply_tokens: 1_500,
            max_usd: None,
            price: None,
            deadline: None,
        }
    }
}

/// What an agent is asked to do.
#[derive(Debug, Clone)]
pub struct Task {
    /// The model.
    pub model: String,
    /// The system message.
    pub system: String,
    /// The task itself.
    pub user: String,
}

/// One tool call and its result, as the model saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The tool.
    pub tool: String,
    /// Its arguments, as the model wrote them.
    pub arguments: String,
    /// Whether the tool reported success.
    pub ok: bool,
}

/// How an agent ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome<T> {
    /// A final answer that validated.
    Answer {
        /// The answer.
        value: T,
    },
    /// `max_steps` replies without a valid answer.
    StepLimit {
        /// The last problem, if the model tried to answer.
        last_problem: Option<String>,
    },
    /// The token limit of the loop was reached.
    TokenLimit {
        /// Tokens used.
        used: u64,
    },
    /// The dollar limit of the loop was reached.
    DollarLimit {
        /// Dollars spent.
        usd: f64,
    },
    /// The deadline passed.
    TimeLimit {
        /// The deadline, milliseconds since the epoch.
        at_ms: i64,
    },
    /// The LLM call failed (including a run budget refusing it).
    LlmFailed {
        /// Why.
        message: String,
    },
}

/// An agent's run: its outcome and what it did on the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRun<T> {
    /// How it ended.
    pub outcome: Outcome<T>,
    /// The protocol used at the end.
    pub protocol: Protocol,
    /// Model replies.
    pub steps: u32,
    /// Every tool call, in order.
    pub calls: Vec<Step>,
    /// Replies that could not be used, and why (cut at max_tokens, no JSON, an invalid answer).
    pub rejected_replies: Vec<String>,
    /// Tokens used.
    pub usage: Usage,
}

impl<T> AgentRun<T> {
    /// The answer, if there is one.
    pub fn answer(&self) -> Option<&T> {
        match &self.outcome {
            Outcome::Answer { value } => Some(value),
            _ => None,
        }
    }
}

/// Why the loop must stop with an error rather than an outcome.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The toolbox could not journal a call, or the run diverged.
    #[error("tool calls: {0}")]
    Tools(String),
}

/// What a reply asked for.
enum Reading<T> {
    Calls(Vec<ToolCall>),
    Answer(T),
    /// Unusable; the text goes back to the model.
    Problem(String),
    /// Text where a native call was expected: the server may ignore tools.
    IgnoredTools(String),
}

/// The JSON protocol's response schema: one branch per tool, one for the answer.
pub fn json_protocol_schema(tools: &[ToolDef], answer: &Value) -> Value {
    let mut branches: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({"type": "object",
                "properties": {"tool": {"type": "string", "enum": [t.name]}, "arguments": t.parameters},
                "required": ["tool", "arguments"], "additionalProperties": false})
        })
        .collect();
    branches.push(json!({"type": "object", "properties": {FINAL: answer},
        "required": [FINAL], "additionalProperties": false}));
    json!({"anyOf": branches})
}

fn cut(text: &str) -> String {
    const N: usize = 300;
    if text.chars().count() > N {
        format!("{}…", text.chars().take(N).collect::<String>())
    } else {
        text.to_string()
    }
}

/// Runs an agent: `check` validates a final answer beyond its schema (its error goes back to
/// the model, like a tool error).
///
/// # Errors
/// Only [`AgentError::Tools`]; everything else ends as an [`Outcome`].
pub async fn run<L, T>(
    client: &L,
    tools: &dyn Toolbox,
    task: &Task,
    memo: &ProtocolMemo,
    limits: Limits,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<AgentRun<T>, AgentError>
where
    L: LlmClient,
    T: DeserializeOwned + JsonSchema,
{
    let defs = tools.definitions();
    let answer_schema = strict_schema::<T>();
    let mut messages = vec![Message::system(&task.system), Message::user(&task.user)];
    let mut out = AgentRun {
        outcome: Outcome::StepLimit { last_problem: None },
        protocol: memo.get(),
        steps: 0,
        calls: Vec::new(),
        rejected_replies: Vec::new(),
        usage: Usage::default(),
    };
    while out.steps < limits.max_steps {
        if let Some(max) = limits.max_tokens
            && out.usage.total() >= max
        {
            out.outcome = Outcome::TokenLimit {
                used: out.usage.total(),
            };
            return Ok(out);
        }
        if let (Some(max), Some(p)) = (limits.max_usd, limits.price) {
            let usd = (out.usage.prompt_tokens as f64 * p.prompt
                + out.usage.completion_tokens as f64 * p.completion)
                / 1e6;
            if usd >= max {
                out.outcome = Outcome::DollarLimit { usd };
                return Ok(out);
            }
        }
        if let Some(d) = &limits.deadline
            && (d.now)() >= d.at_ms
        {
            out.outcome = Outcome::TimeLimit { at_ms: d.at_ms };
            return Ok(out);
        }
        let protocol = match memo.get() {
            Protocol::Auto => Protocol::Native,
            p => p,
        };
        out.protocol = protocol;
        let mut req = ChatRequest::new(&task.model, messages.clone(), limits.reply_tokens);
        match protocol {
            Protocol::Native | Protocol::Auto => {
                req.tools = defs.clone();
                req.tools.push(ToolDef {
                    name: FINAL.into(),
                    description: "Give the final answer; call it once, when you are done.".into(),
                    parameters: answer_schema.clone(),
                });
                req.tool_choice = Some("required".into());
            }
            Protocol::Json => {
                req.response_format = ResponseFormat::JsonSchema {
                    name: "agent_step".into(),
                    schema: json_protocol_schema(&defs, &answer_schema),
                };
            }
        }
        out.steps += 1;
        let reply = match client.complete(&req).await {
            Ok(r) => r,
            Err(e) => {
                out.outcome = Outcome::LlmFailed {
                    message: e.to_string(),
                };
                return Ok(out);
            }
        };
        out.usage.prompt_tokens += reply.usage.prompt_tokens;
        out.usage.completion_tokens += reply.usage.completion_tokens;
        let reading = read::<T>(
            &reply.message,
            &reply.finish_reason,
            protocol,
            &check,
            &limits,
        );
        match reading {
            Reading::Answer(value) => {
                out.outcome = Outcome::Answer { value };
                return Ok(out);
            }
            Reading::Calls(calls) => {
                let results = tools.call_all(&calls).await.map_err(AgentError::Tools)?;
                messages.push(Message {
                    role: Role::Assistant,
                    content: reply.message.content.clone(),
                    tool_calls: calls.clone(),
                    tool_call_id: None,
                });
                for (call, result) in calls.iter().zip(&results) {
                    out.calls.push(Step {
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                        ok: result.get("status").and_then(Value::as_str) == Some("done"),
                    });
                    let text = result.to_string();
                    match protocol {
                        Protocol::Json => messages.push(Message::user(format!(
                            "Result of {}: {text}\nReply with the next JSON object: a tool call or the final answer.",
                            call.name
                        ))),
                        _ => messages.push(Message {
                            role: Role::Tool,
                            content: text,
                            tool_calls: Vec::new(),
                            tool_call_id: Some(call.id.clone()),
                        }),
                    }
                }
            }
            Reading::IgnoredTools(text) if memo.get() == Protocol::Auto => {
                memo.set(Protocol::Json);
                out.rejected_replies.push(format!(
                    "the server answered a tools request with text ({}); switched to the JSON protocol",
                    cut(&text)
                ));
                // The same question again, under the JSON protocol (this reply counted a step).
            }
            Reading::Problem(problem) | Reading::IgnoredTools(problem) => {
                out.rejected_replies.push(problem.clone());
                out.outcome = Outcome::StepLimit {
                    last_problem: Some(problem.clone()),
                };
                messages.push(Message::assistant(cut(&reply.message.content)));
                messages.push(Message::user(format!(
                    "{problem}\nCall a tool or give the final answer, as the protocol says."
                )));
            }
        }
    }
    Ok(out)
}

fn read<T: DeserializeOwned>(
    msg: &Message,
    finish: &FinishReason,
    protocol: Protocol,
    check: &impl Fn(&T) -> Result<(), String>,
    limits: &Limits,
) -> Reading<T> {
    let answer = |v: &Value| -> Reading<T> {
        match serde_json::from_value::<T>(v.clone()) {
            Ok(a) => match check(&a) {
                Ok(()) => Reading::Answer(a),
                Err(e) => Reading::Problem(format!("the final answer is invalid: {e}")),
            },
            Err(e) => Reading::Problem(format!("the final answer does not match its schema: {e}")),
        }
    };
    if *finish == FinishReason::Length {
        return Reading::Problem(format!(
            "the reply was cut at max_tokens ({}) before it was complete (finish_reason: length); answer more briefly",
            limits.reply_tokens
        ));
    }
    if !msg.tool_calls.is_empty() {
        let (finals, calls): (Vec<&ToolCall>, Vec<&ToolCall>) =
            msg.tool_calls.iter().partition(|c| c.name == FINAL);
        if let Some(f) = finals.first() {
            if !calls.is_empty() {
                return Reading::Problem(format!(
                    "{FINAL} must be the only call of its reply; call the tools first"
                ));
            }
            return match serde_json::from_str::<Value>(&f.arguments) {
                Ok(v) => answer(&v),
                Err(e) => Reading::Problem(format!("the arguments of {FINAL} are not JSON: {e}")),
            };
        }
        return Reading::Calls(calls.into_iter().cloned().collect());
    }
    let Some(text) = extract_json(&msg.content) else {
        return match protocol {
            Protocol::Json => Reading::Problem(format!(
                "the reply holds no JSON object ({}); reply with one JSON object and nothing else",
                cut(&msg.content)
            )),
            _ => Reading::IgnoredTools(msg.content.clone()),
        };
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Reading::Problem(format!("the reply's JSON does not parse: {e}")),
    };
    if let Some(a) = v.get(FINAL) {
        return answer(a);
    }
    if let Some(name) = v.get("tool").and_then(Value::as_str) {
        let arguments = v.get("arguments").cloned().unwrap_or(json!({}));
        return Reading::Calls(vec![ToolCall {
            id: "json_1".into(),
            name: name.to_string(),
            arguments: arguments.to_string(),
        }]);
    }
    // A bare answer, without the wrapper: read leniently, as many models write it.
    if serde_json::from_value::<T>(v.clone()).is_ok() {
        return answer(&v);
    }
    match protocol {
        Protocol::Json => Reading::Problem(format!(
            "the reply is neither a tool call {{\"tool\", \"arguments\"}} nor {{\"{FINAL}\": …}}"
        )),
        _ => Reading::IgnoredTools(msg.content.clone()),
    }
}
