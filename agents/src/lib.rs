//! LIM's LLM layer.
//!
//! [`chat`] holds LIM's own request and response types; [`client::LlmClient`] is the seam every
//! model sits behind, and its decorators ([`client::Retrying`], [`client::Timed`],
//! [`client::Budgeted`], [`client::Recording`], [`client::Replaying`]) each implement it too.
//! [`structured`] asks for JSON that matches a schema and re-asks with the exact error until it
//! does. [`client::ScriptedLlm`] plays planned turns in tests.

pub mod agent;
pub mod chat;
pub mod client;
pub mod error;
pub mod offline;
pub mod openai;
pub mod prompt;
pub mod strategist;
pub mod structured;

pub use chat::{ChatRequest, ChatResponse, Message, Role, Usage};
pub use client::{LlmClient, Recording, Replaying, Retrying, ScriptedLlm, Timed, Turn};
pub use error::LlmError;
