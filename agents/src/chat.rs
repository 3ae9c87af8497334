//! LIM's own chat types. Providers translate to and from them, so traces do not depend on any
//! provider library's types and survive upgrades.

use serde::{Deserialize, Serialize};

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// The researcher or LIM on their behalf.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call, echoed in the tool's reply.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as the JSON text the model wrote.
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The speaker.
    pub role: Role,
    /// The text.
    pub content: String,
    /// Tool calls, for assistant messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call answered, for tool messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message of `role` with `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// The shape the reply must take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// JSON matching a schema (strict).
    JsonSchema {
        /// A name for the schema.
        name: String,
        /// The schema.
        schema: serde_json::Value,
    },
}

/// A request to a chat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name as the provider knows it.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// Required reply shape.
    #[serde(default)]
    pub response_format: ResponseFormat,
    /// With `tools`: "auto", "required" or "none" (the provider's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Sampling seed, for providers that honour it.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Most tokens the reply may have.
    pub max_tokens: u32,
}

impl ChatRequest {
    /// A request for `model` with `messages` and a reply of at most `max_tokens`.
    pub fn new(model: impl Into<String>, messages: Vec<Message>, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            messages,
            tools: Vec::new(),
            response_format: ResponseFormat::Text,
            tool_choice: None,
            temperature: None,
            seed: None,
            max_tokens,
        }
    }

    /// A stable fingerprint of the request, secrets scrubbed: what replay matches on.
    pub fn fingerprint(&self) -> String {
        let json = scrub(&serde_json::to_string(self).unwrap_or_default());
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(json.as_bytes()))
    }

    /// A cautious count of the prompt's tokens, for budgeting before a call; the provider's
    /// own count replaces it afterwards. Three bytes a token for text (JSON: schemas,
    /// arguments, tool results tokenise denser than prose) and one token for every digit
    /// (some tokenisers, SmolLM2's among them, split numbers digit by digit, and prompts
    /// carrying metrics are full of them): a budget must not be overrun by an estimate that
    /// is too low.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        fn tokens(text: &str) -> u64 {
            let digits = text.bytes().filter(u8::is_ascii_digit).count() as u64;
            digits + (text.len() as u64 - digits).div_ceil(3)
        }
        let messages: u64 = self
            .messages
            .iter()
            .map(|m| {
                // A message's role and the template's markers around it.
                3 + tokens(&m.content)
                    + m.tool_calls
                        .iter()
                        .map(|c| 6 + tokens(&c.name) + tokens(&c.arguments))
                        .sum::<u64>()
            })
            .sum();
        let tools: u64 = self
            .tools
            .iter()
            .map(|t| tokens(&t.description) + tokens(&t.parameters.to_string()))
            .sum();
        messages + tools
    }
}

/// Tokens a call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

impl Usage {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end (OpenAI's `stop`, and `eos` from some local servers).
    Stop,
    /// The token limit.
    Length,
    /// It called tools.
    ToolCalls,
    /// Filtered by the provider.
    ContentFilter,
    /// Anything else, kept as given.
    Other(String),
}

/// A model's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The reply.
    pub message: Message,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens used.
    pub usage: Usage,
    /// What the provider had to do differently (e.g. a structured-output fallback), for the trace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Replaces anything that looks like a secret (API keys, bearer tokens) in `text`.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let hit = ["sk-", "Bearer "]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min_by_key(|(i, _)| *i);
        let Some((i, prefix)) = hit else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..i]);
        let after = &rest[i + prefix.len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(after.len());
        if len >= 8 {
            out.push_str(if prefix == "sk-" {
                "sk-***"
            } else {
                "Bearer ***"
            });
            rest = &after[len..];
        } else {
            out.push_str(prefix);
            rest = after;
        }
    }
    out
}
