//! The real HTTP path against a local OpenAI-compatible server on 127.0.0.1: text, tool calls,
//! structured output with the json_object fallback, `finish_reason: "eos"`, and errors with
//! their retry hints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::Duration;

use lim_agents::chat::{FinishReason, ResponseFormat, ToolDef};
use lim_agents::openai::{OpenAi, OpenAiConfig};
use lim_agents::{ChatRequest, LlmClient, LlmError, Message, Recording};
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-0123456789abcdefghij";

fn reply(message: serde_json::Value, finish: &str) -> serde_json::Value {
    json!({"id": "x", "object": "chat.completion", "created": 1, "model": "local",
           "choices": [{"index": 0, "message": message, "finish_reason": finish}],
           "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})
}

async fn provider(server: &MockServer) -> OpenAi {
    OpenAi::new(OpenAiConfig {
        base_url: format!("{}/v1", server.uri()),
        api_key: Some(KEY.into()),
    })
    .unwrap()
}

fn req() -> ChatRequest {
    ChatRequest::new("local", vec![Message::user("propose a strategy")], 100)
}

#[tokio::test]
async fn text_replies_with_eos_parse_and_the_key_stays_out_of_the_trace() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(reply(
            json!({"role": "assistant", "content": "momentum"}),
            "eos",
        )))
        .mount(&server)
        .await;
    let rec = Recording::new(provider(&server).await);
    let r = rec.complete(&req()).await.unwrap();
    assert_eq!(
        (
            r.message.content.as_str(),
            r.finish_reason.clone(),
            r.usage.total()
        ),
        ("momentum", FinishReason::Stop, 17)
    );
    let sent = &server.received_requests().await.unwrap()[0];
    assert_eq!(
        sent.headers.get("authorization").unwrap().to_str().unwrap(),
        format!("Bearer {KEY}")
    );
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        (
            body["model"].as_str(),
            body["max_tokens"].as_u64(),
            body["stream"].as_bool()
        ),
        (Some("local"), Some(100), Some(false))
    );
    assert!(!rec.jsonl().contains(KEY));
}

/// The name of the test below, which re-runs itself in a child process whose environment holds
/// OpenAI's variables (setting them in this process would race the other tests).
const ENV_TEST: &str = "without_a_key_nothing_from_the_environment_is_sent";

#[tokio::test]
async fn without_a_key_nothing_from_the_environment_is_sent() {
    if std::env::var_os("LIM_OPENAI_ENV_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([ENV_TEST, "--exact", "--nocapture", "--test-threads", "1"])
            .env("LIM_OPENAI_ENV_CHILD", "1")
            .env("OPENAI_API_KEY", "sk-from-the-environment")
            .env("OPENAI_ORG_ID", "org-from-the-environment")
            .env("OPENAI_PROJECT_ID", "proj-from-the-environment")
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(reply(
            json!({"role": "assistant", "content": "momentum"}),
            "stop",
        )))
        .mount(&server)
        .await;
    let keyless = OpenAi::new(OpenAiConfig {
        base_url: format!("{}/v1", server.uri()),
        api_key: None,
    })
    .unwrap();
    // The request reaches the configured server, not the environment's base URL.
    keyless.complete(&req()).await.unwrap();
    let sent = &server.received_requests().await.unwrap()[0];
    for header in ["authorization", "openai-organization", "openai-project"] {
        assert!(
            sent.headers.get(header).is_none(),
            "{header} was sent: {:?}",
            sent.headers.get(header)
        );
    }
}

#[tokio::test]
async fn tool_calls_come_back_typed() {
    let server = MockServer::start().await;
    let call = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "backtest", "arguments": "{\"strategies\": []}"}}]});
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(reply(call, "tool_calls")))
        .mount(&server)
        .await;
    let mut r = req();
    r.tools.push(ToolDef {
        name: "backtest".into(),
        description: "run".into(),
        parameters: json!({"type": "object"}),
    });
    let out = provider(&server).await.complete(&r).await.unwrap();
    assert_eq!(out.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        (
            out.message.tool_calls[0].name.as_str(),
            out.message.tool_calls[0].arguments.as_str()
        ),
        ("backtest", "{\"strategies\": []}")
    );
    let body: serde_json::Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(body["tools"][0]["function"]["name"], "backtest");
}

#[tokio::test]
async fn a_server_without_json_schema_gets_json_object_and_the_reply_says_so() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("\"json_schema\""))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {"message": "response_format json_schema is not supported", "type": "invalid_request_error", "param": null, "code": null}})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("\"json_object\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(reply(
            json!({"role": "assistant", "content": "{\"signal\": \"rank(returns)\"}"}),
            "stop",
        )))
        .mount(&server)
        .await;
    let p = provider(&server).await;
    let mut r = req();
    r.response_format = ResponseFormat::JsonSchema {
        name: "spec".into(),
        schema: json!({"type": "object"}),
    };
    let out = p.complete(&r).await.unwrap();
    assert_eq!(out.message.content, "{\"signal\": \"rank(returns)\"}");
    assert!(
        out.notes[0].contains("fell back to json_object"),
        "{:?}",
        out.notes
    );
    // The next structured call goes straight to json_object.
    let again = p.complete(&r).await.unwrap();
    assert!(again.notes[0].contains("json_object"));
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn errors_are_classified_with_their_retry_hints() {
    let cases = [
        (ResponseTemplate::new(429).insert_header("retry-after", "2").set_body_string("busy"), LlmError::RateLimited { retry_after: Some(Duration::from_secs(2)) }),
        (ResponseTemplate::new(429).insert_header("retry-after-ms", "1500").set_body_json(json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": null}})), LlmError::RateLimited { retry_after: Some(Duration::from_millis(1500)) }),
        (ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "bad key", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})), LlmError::Unauthorized { status: 401 }),
    ];
    for (template, want) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(template)
            .mount(&server)
            .await;
        assert_eq!(
            provider(&server).await.complete(&req()).await.unwrap_err(),
            want
        );
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})))
        .mount(&server)
        .await;
    let e = provider(&server).await.complete(&req()).await.unwrap_err();
    assert!(
        matches!(e, LlmError::InsufficientQuota(_)) && !e.is_transient(),
        "{e:?}"
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
        .mount(&server)
        .await;
    let e = provider(&server).await.complete(&req()).await.unwrap_err();
    assert!(
        matches!(e, LlmError::Server { status: 503, .. }) && e.is_transient(),
        "{e:?}"
    );
}
