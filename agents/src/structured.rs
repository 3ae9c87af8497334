//! Structured output: ask for JSON matching a schema, check it, and send the exact error back
//! until the reply is right or the re-asks run out.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::chat::{ChatRequest, Message, ResponseFormat};
use crate::client::LlmClient;
use crate::error::LlmError;

/// The strict form of `T`'s schema that OpenAI-style structured outputs accept: definitions
/// inlined, every property required (optional ones stay nullable), no additional properties,
/// no `format` keywords, no `$schema`.
pub fn strict_schema<T: JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.meta_schema = None;
        s.inline_subschemas = true;
    });
    let mut v = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    tighten(&mut v);
    v
}

fn tighten(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("format");
            map.remove("default");
            if let Some(Value::Object(props)) = map.get("properties") {
                let names: Vec<Value> = props.keys().map(|k| Value::String(k.clone())).collect();
                map.insert("required".into(), Value::Array(names));
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            // Strict mode wants anyOf where schemars writes oneOf for tagged enums.
            if let Some(one) = map.remove("oneOf") {
                map.insert("anyOf".into(), one);
            }
            for child in map.values_mut() {
                tighten(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tighten),
        _ => {}
    }
}

/// Why a structured request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum StructuredError {
    /// The model never produced a valid reply.
    #[error("no valid reply after {attempts} attempt(s); last problem: {last}")]
    Invalid {
        /// Replies received.
        attempts: u32,
        /// What was wrong with the last one.
        last: String,
    },
    /// The call itself failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// The JSON value a reply most plausibly holds: code fences stripped, the outermost object
/// cut out of surrounding prose, trailing commas removed. `None` if there is no object at all.
pub fn extract_json(reply: &str) -> Option<String> {
    let t = reply.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .unwrap_or(t);
    let t = t.strip_suffix("```").unwrap_or(t).trim();
    let start = t.find('{')?;
    let end = t.rfind('}')?;
    if end < start {
        return None;
    }
    Some(drop_trailing_commas(&t[start..=end]))
}

/// Removes commas directly before `}` or `]`, outside strings.
fn drop_trailing_commas(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let (mut in_str, mut escaped) = (false, false);
    for (i, &c) in chars.iter().enumerate() {
        if in_str {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        if c == ','
            && chars[i + 1..]
                .iter()
                .find(|c| !c.is_whitespace())
                .is_some_and(|n| *n == '}' || *n == ']')
        {
            continue;
        }
        out.push(c);
    }
    out
}

/// The longest reply text echoed back to the model in a re-ask.
const ECHO_LIMIT: usize = 2_000;

/// Asks for a `T`, checking each reply with `check` (for rules the schema cannot state, such
/// as a signal that must parse in the strategy language), and re-asks at most `max_reasks`
/// times with the exact problem.
///
/// # Errors
/// [`StructuredError::Invalid`] when no reply passes; [`StructuredError::Llm`] when a call fails.
pub async fn ask<T, L>(
    client: &L,
    mut req: ChatRequest,
    max_reasks: u32,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, StructuredError>
where
    T: JsonSchema + DeserializeOwned,
    L: LlmClient,
{
    if matches!(req.response_format, ResponseFormat::Text) {
        req.response_format = ResponseFormat::JsonSchema {
            name: std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("reply")
                .to_string(),
            schema: strict_schema::<T>(),
        };
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        let reply = client.complete(&req).await?;
        let text = match reply.message.tool_calls.first() {
            Some(call) => call.arguments.clone(),
            None => reply.message.content.clone(),
        };
        let problem = match extract_json(&text) {
            None if text.trim().is_empty() => {
                "the reply was empty; reply with one JSON object".to_string()
            }
            None => "the reply holds no JSON object; reply with one JSON object and nothing else"
                .to_string(),
            Some(json) => match serde_json::from_str::<T>(&json) {
                Err(e) => format!("the JSON does not match the schema: {e}"),
                Ok(v) => match check(&v) {
                    Ok(()) => return Ok(v),
                    Err(e) => e,
                },
            },
        };
        if attempts > max_reasks {
            return Err(StructuredError::Invalid {
                attempts,
                last: problem,
            });
        }
        let echoed: String = text.chars().take(ECHO_LIMIT).collect();
        req.messages.push(Message::assistant(echoed));
        req.messages.push(Message::user(format!(
            "That reply cannot be used: {problem}. Reply again with a corrected JSON object only."
        )));
    }
}
