//! An OpenAI-compatible chat provider (OpenAI, vLLM, Ollama, llama.cpp servers) on async-openai.
//!
//! Requests and replies go through async-openai's "bring your own types" calls as plain JSON,
//! so non-OpenAI replies (`finish_reason: "eos"`, missing fields) parse leniently. async-openai's
//! own retry layer is replaced by a bare HTTP service: retries belong to [`crate::client::Retrying`],
//! which needs the `Retry-After` / `retry-after-ms` headers that async-openai's errors drop, so the
//! service keeps them aside. Servers that refuse `response_format: json_schema` get
//! `json_object` plus the schema in the prompt, once; the reply says so in its notes (and so in
//! the trace).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use serde_json::{Value, json};

use crate::chat::{
    ChatRequest, ChatResponse, FinishReason, Message, ResponseFormat, Role, ToolCall, Usage,
};
use crate::client::LlmClient;
use crate::error::LlmError;

/// Where and how to reach an OpenAI-compatible server. The API key is passed in by the caller
/// (the CLI reads it from a named environment variable); it is never logged or traced.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Base URL including `/v1`, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The key, if the server needs one.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What the last error response said about status and retry timing.
type Slot = Arc<Mutex<Option<(u16, Option<Duration>)>>>;

/// A bare HTTP service that notes the status and retry headers of error responses.
#[derive(Clone)]
struct Transport {
    http: reqwest::Client,
    slot: Slot,
    /// No key was given: the request goes without an `Authorization` header (async-openai
    /// always writes one, empty without a key).
    keyless: bool,
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    get("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        .or_else(|| get("retry-after").map(|s| Duration::from_secs_f64(s.max(0.0))))
}

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), OpenAIError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let (http, slot, keyless) = (self.http.clone(), self.slot.clone(), self.keyless);
        Box::pin(async move {
            let mut request = request.build().await?;
            if keyless {
                request.headers_mut().remove(reqwest::header::AUTHORIZATION);
            }
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            if !response.status().is_success()
                && let Ok(mut s) = slot.lock()
            {
                *s = Some((response.status().as_u16(), retry_after(response.headers())));
            }
            Ok(response)
        })
    }
}

/// The provider.
#[derive(Debug)]
pub struct OpenAi {
    config: OpenAiConfig,
    http: reqwest::Client,
    /// Set once a server refused `json_schema`: from then on ask with `json_object`.
    json_object_only: AtomicBool,
}

impl OpenAi {
    /// A provider for `config`.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<OpenAi, LlmError> {
        // TLS through rustls with the ring provider (no C toolchain beyond ring's); a provider
        // installed earlier by the process is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| LlmError::Connection(e.to_string()))?;
        Ok(OpenAi {
            config,
            http,
            json_object_only: AtomicBool::new(false),
        })
    }

    fn client(&self, slot: Slot) -> Client<OpenAIConfig> {
        // async-openai's defaults come from the environment (`OPENAI_API_KEY`,
        // `OPENAI_ORG_ID`, `OPENAI_PROJECT_ID`, `OPENAI_BASE_URL`); every one is overwritten
        // here, so that only what the caller configured is sent: without a key, none, whatever
        // the environment holds.
        let cfg = OpenAIConfig::new()
            .with_api_base(self.config.base_url.clone())
            .with_api_key(self.config.api_key.clone().unwrap_or_default())
            .with_org_id("")
            .with_project_id("");
        Client::with_config(cfg).with_http_service(Transport {
            http: self.http.clone(),
            slot,
            keyless: self.config.api_key.is_none(),
        })
    }

    async fn send(&self, body: Value) -> Result<Value, LlmError> {
        let slot: Slot = Arc::new(Mutex::new(None));
        let result: Result<Value, OpenAIError> =
            self.client(slot.clone()).chat().create_byot(body).await;
        let seen = slot.lock().ok().and_then(|s| *s);
        result.map_err(|e| classify(e, seen))
    }
}

fn classify(e: OpenAIError, seen: Option<(u16, Option<Duration>)>) -> LlmError {
    let (status, after) = match (&e, seen) {
        (OpenAIError::ApiError(a), s) => (Some(a.status_code.as_u16()), s.and_then(|s| s.1)),
        (_, Some((st, after))) => (Some(st), after),
        _ => (None, None),
    };
    let message = match &e {
        OpenAIError::ApiError(a) => a.api_error.message.clone(),
        other => other.to_string(),
    };
    let quota = matches!(&e, OpenAIError::ApiError(a) if a.api_error.r#type.as_deref() == Some("insufficient_quota") || a.api_error.code.as_deref() == Some("insufficient_quota"));
    match status {
        Some(429) if quota => LlmError::InsufficientQuota(message),
        Some(429) => LlmError::RateLimited { retry_after: after },
        Some(s @ (401 | 403)) => LlmError::Unauthorized { status: s },
        Some(400 | 404 | 422) => LlmError::BadRequest(message),
        Some(s) if s >= 500 => LlmError::Server { status: s, message },
        Some(s) => LlmError::Server { status: s, message },
        None => match e {
            OpenAIError::Reqwest(r) if r.is_timeout() => LlmError::Timeout(Duration::ZERO),
            OpenAIError::Reqwest(r) => LlmError::Connection(r.to_string()),
            OpenAIError::JSONDeserialize(err, _) => LlmError::Malformed(err.to_string()),
            other => LlmError::Malformed(other.to_string()),
        },
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The JSON body of a request; `json_object` asks for plain JSON mode with the schema in the
/// prompt instead of a strict `json_schema`.
pub fn body(req: &ChatRequest, json_object: bool) -> Value {
    let mut messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let mut v = json!({"role": role(m.role), "content": m.content});
            if !m.tool_calls.is_empty() {
                v["tool_calls"] = Value::Array(
                    m.tool_calls.iter().map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})).collect(),
                );
            }
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = json!(id);
            }
            v
        })
        .collect();
    let mut body = json!({"model": req.model, "stream": false, "max_tokens": req.max_tokens});
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(s) = req.seed {
        body["seed"] = json!(s);
    }
    if !req.tools.is_empty() {
        body["tools"] = Value::Array(
            req.tools.iter().map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})).collect(),
        );
        if let Some(choice) = &req.tool_choice {
            body["tool_choice"] = json!(choice);
        }
    }
    if let ResponseFormat::JsonSchema { name, schema } = &req.response_format {
        if json_object {
            body["response_format"] = json!({"type": "json_object"});
            messages.push(json!({"role": "system", "content": format!("Reply with one JSON object matching this JSON Schema:\n{schema}")}));
        } else {
            body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": true}});
        }
    }
    body["messages"] = Value::Array(messages);
    body
}

/// Reads a reply leniently: any `finish_reason` string, missing usage, tool calls or text.
pub fn parse_reply(v: &Value) -> Result<ChatResponse, LlmError> {
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| LlmError::Malformed(format!("no choices in the reply: {}", truncate(v))))?;
    let msg = choice
        .get("message")
        .ok_or_else(|| LlmError::Malformed("the first choice has no message".into()))?;
    let content = msg
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tool_calls: Vec<ToolCall> = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    name: c
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    arguments: c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let finish_reason = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("stop" | "eos" | "end_turn") | None => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_string()),
    };
    let usage = Usage {
        prompt_tokens: v
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        completion_tokens: v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    Ok(ChatResponse {
        message: Message {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        },
        finish_reason,
        usage,
        notes: Vec::new(),
    })
}

fn truncate(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

impl LlmClient for OpenAi {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let structured = matches!(req.response_format, ResponseFormat::JsonSchema { .. });
        let json_object = self.json_object_only.load(Ordering::Relaxed);
        match self.send(body(req, json_object)).await {
            Ok(v) => {
                let mut r = parse_reply(&v)?;
                if structured && json_object {
                    r.notes.push("asked with response_format json_object and the schema in the prompt (the server refused json_schema)".into());
                }
                Ok(r)
            }
            // A server without structured outputs: fall back to JSON mode, once, and remember.
            Err(LlmError::BadRequest(m))
                if structured
                    && !json_object
                    && (m.contains("response_format") || m.contains("json_schema")) =>
            {
                self.json_object_only.store(true, Ordering::Relaxed);
                let v = self.send(body(req, true)).await?;
                let mut r = parse_reply(&v)?;
                r.notes.push(format!("the server refused json_schema ({m}); fell back to json_object with the schema in the prompt"));
                Ok(r)
            }
            Err(e) => Err(e),
        }
    }
}
