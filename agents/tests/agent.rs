#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
//! The agent runtime against scripted models: tool calls and their errors as values, parallel
//! calls in call order, limits, the JSON protocol and the fallback to it.

use std::sync::Mutex;

use lim_agents::agent::{
    self, AgentRun, BoxFuture, Limits, Outcome, Protocol, ProtocolMemo, Task, Toolbox,
};
use lim_agents::chat::{ResponseFormat, Role, ToolCall, ToolDef, Usage};
use lim_agents::client::{ScriptedLlm, Turn};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
struct Answer {
    /// The chosen dataset.
    dataset: String,
}

/// Two tools: `echo {text}` and `test_period` (always refused); records each batch it runs.
#[derive(Default)]
struct Tools {
    batches: Mutex<Vec<Vec<String>>>,
}

impl Toolbox for Tools {
    fn definitions(&self) -> Vec<ToolDef> {
        vec![
            ToolDef {
                name: "echo".into(),
                description: "Echo text".into(),
                parameters: json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            },
            ToolDef {
                name: "test_period".into(),
                description: "Read the sealed test period".into(),
                parameters: json!({"type": "object", "properties": {}}),
            },
        ]
    }

    fn call_all<'a>(&'a self, calls: &'a [ToolCall]) -> BoxFuture<'a, Result<Vec<Value>, String>> {
        Box::pin(async move {
            self.batches
                .lock()
                .unwrap()
                .push(calls.iter().map(|c| c.name.clone()).collect());
            Ok(calls
                .iter()
                .map(|c| match c.name.as_str() {
                    "echo" => match serde_json::from_str::<Value>(&c.arguments)
                        .ok()
                        .and_then(|v| v.get("text").and_then(Value::as_str).map(String::from))
                    {
                        Some(t) => json!({"status": "done", "result": t}),
                        None => json!({"status": "failed", "kind": "invalid_arguments",
                            "message": "arguments of echo: missing field `text`"}),
                    },
                    "test_period" => json!({"status": "failed", "kind": "refused",
                        "message": "the test period is sealed"}),
                    other => json!({"status": "failed", "kind": "not_found",
                        "message": format!("no tool named '{other}'; the tools are echo, test_period")}),
                })
                .collect())
        })
    }
}

fn task() -> Task {
    Task {
        model: "scripted".into(),
        system: "You choose datasets.".into(),
        user: "Choose one.".into(),
    }
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 10,
        completion_tokens: 5,
    }
}

fn go(
    turns: Vec<Turn>,
    memo: &ProtocolMemo,
    limits: Limits,
) -> (AgentRun<Answer>, ScriptedLlm, Tools) {
    let llm = ScriptedLlm::new(turns, usage());
    let tools = Tools::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let run = rt
        .block_on(agent::run(
            &llm,
            &tools,
            &task(),
            memo,
            limits,
            |a: &Answer| {
                if a.dataset.is_empty() {
                    Err("dataset: empty".into())
                } else {
                    Ok(())
                }
            },
        ))
        .unwrap();
    (run, llm, tools)
}

fn call(name: &str, args: &str) -> Turn {
    Turn::ToolCall {
        name: name.into(),
        arguments: args.into(),
    }
}

#[test]
fn tool_errors_go_back_to_the_model_as_values_and_the_answer_ends_the_loop() {
    let memo = ProtocolMemo::new(Protocol::Native);
    let (run, llm, _) = go(
        vec![
            call("echo", r#"{"txt": "a"}"#),
            call("no_such_tool", "{}"),
            call("test_period", "{}"),
            call("final_answer", r#"{"dataset": ""}"#),
            call("final_answer", r#"{"dataset": "cn_futures_daily"}"#),
        ],
        &memo,
        Limits::default(),
    );
    assert_eq!(
        run.answer(),
        Some(&Answer {
            dataset: "cn_futures_daily".into()
        })
    );
    assert_eq!(run.steps, 5);
    assert_eq!(run.usage.total(), 75);
    assert_eq!(
        run.calls
            .iter()
            .map(|c| (c.tool.as_str(), c.ok))
            .collect::<Vec<_>>(),
        [
            ("echo", false),
            ("no_such_tool", false),
            ("test_period", false)
        ]
    );
    let reqs = llm.requests();
    // Native protocol: the tools plus final_answer, a call required.
    assert_eq!(
        reqs[0]
            .tools
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["echo", "test_period", "final_answer"]
    );
    assert_eq!(reqs[0].tool_choice.as_deref(), Some("required"));
    let last = |i: usize| reqs[i].messages.last().unwrap().clone();
    assert_eq!(last(1).role, Role::Tool);
    assert!(
        last(1).content.contains("missing field `text`"),
        "{:?}",
        last(1)
    );
    assert!(last(2).content.contains("no tool named 'no_such_tool'"));
    assert!(last(3).content.contains("the test period is sealed"));
    // The check's error went back too.
    assert!(
        last(4)
            .content
            .contains("the final answer is invalid: dataset: empty")
    );
}

#[test]
fn parallel_calls_run_as_one_batch_and_return_in_call_order() {
    let memo = ProtocolMemo::new(Protocol::Native);
    let (run, llm, tools) = go(
        vec![
            Turn::ToolCalls(vec![
                ("echo".into(), r#"{"text": "first"}"#.into()),
                ("test_period".into(), "{}".into()),
                ("echo".into(), r#"{"text": "third"}"#.into()),
            ]),
            call("final_answer", r#"{"dataset": "x"}"#),
        ],
        &memo,
        Limits::default(),
    );
    assert!(run.answer().is_some());
    assert_eq!(
        *tools.batches.lock().unwrap(),
        [vec!["echo", "test_period", "echo"]]
    );
    let msgs = &llm.requests()[1].messages;
    let n = msgs.len();
    assert_eq!(msgs[n - 4].tool_calls.len(), 3);
    let ids: Vec<_> = msgs[n - 3..]
        .iter()
        .map(|m| m.tool_call_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["call_1", "call_2", "call_3"]);
    assert!(msgs[n - 3].content.contains("first") && msgs[n - 1].content.contains("third"));
}

#[test]
fn the_step_and_token_limits_end_the_loop_with_their_outcome() {
    let memo = ProtocolMemo::new(Protocol::Native);
    let loops = (0..10)
        .map(|_| call("echo", r#"{"text": "again"}"#))
        .collect();
    let limits = Limits {
        max_steps: 4,
        ..Limits::default()
    };
    let (run, llm, _) = go(loops, &memo, limits);
    assert_eq!(run.outcome, Outcome::StepLimit { last_problem: None });
    assert_eq!(llm.requests().len(), 4);
    let loops = (0..10)
        .map(|_| call("echo", r#"{"text": "again"}"#))
        .collect();
    let limits = Limits {
        max_tokens: Some(40),
        ..Limits::default()
    };
    let (run, _, _) = go(loops, &memo, limits);
    assert_eq!(run.outcome, Outcome::TokenLimit { used: 45 });
}

#[test]
fn the_dollar_limit_and_the_deadline_end_the_loop_with_their_outcome() {
    let memo = ProtocolMemo::new(Protocol::Native);
    let loops = || {
        (0..10)
            .map(|_| call("echo", r#"{"text": "again"}"#))
            .collect()
    };
    // 10 prompt and 5 completion tokens a reply at $1000 and $2000 per million: 2 cents each.
    let limits = Limits {
        max_usd: Some(0.05),
        price: Some(lim_agents::client::Price {
            prompt: 1000.0,
            completion: 2000.0,
        }),
        ..Limits::default()
    };
    let (run, llm, _) = go(loops(), &memo, limits);
    assert_eq!(llm.requests().len(), 3);
    match run.outcome {
        Outcome::DollarLimit { usd } => assert!((usd - 0.06).abs() < 1e-12, "{usd}"),
        other => panic!("{other:?}"),
    }
    // The clock moves a minute a read; the deadline is three minutes in.
    let minute = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let limits = Limits {
        deadline: Some(agent::Deadline {
            at_ms: 180_000,
            now: std::sync::Arc::new(move || {
                minute.fetch_add(60_000, std::sync::atomic::Ordering::SeqCst)
            }),
        }),
        ..Limits::default()
    };
    let (run, llm, _) = go(loops(), &memo, limits);
    assert_eq!(run.outcome, Outcome::TimeLimit { at_ms: 180_000 });
    assert_eq!(llm.requests().len(), 3);
}

#[test]
fn the_json_protocol_constrains_each_reply_to_a_tool_call_or_the_answer() {
    let memo = ProtocolMemo::new(Protocol::Json);
    let (run, llm, tools) = go(
        vec![
            Turn::Text(r#"{"tool": "echo", "arguments": {"text": "hi"}}"#.into()),
            Turn::Cut(r#"{"final_answer": {"datas"#.into()),
            Turn::Text("I think cn futures".into()),
            Turn::Text(r#"{"final_answer": {"dataset": "cn_futures_daily"}}"#.into()),
        ],
        &memo,
        Limits::default(),
    );
    assert_eq!(run.protocol, Protocol::Json);
    assert_eq!(run.answer().unwrap().dataset, "cn_futures_daily");
    assert_eq!(*tools.batches.lock().unwrap(), [vec!["echo"]]);
    assert!(
        run.rejected_replies[0].contains("cut at max_tokens (1500)")
            && run.rejected_replies[0].contains("finish_reason: length"),
        "{:?}",
        run.rejected_replies
    );
    assert!(run.rejected_replies[1].contains("holds no JSON object"));
    let req = &llm.requests()[0];
    assert!(req.tools.is_empty());
    let ResponseFormat::JsonSchema { schema, .. } = &req.response_format else {
        panic!("{:?}", req.response_format)
    };
    let branches = schema["anyOf"].as_array().unwrap();
    assert_eq!(branches.len(), 3);
    assert_eq!(branches[0]["properties"]["tool"]["enum"], json!(["echo"]));
    assert!(branches[2]["properties"]["final_answer"]["properties"]["dataset"].is_object());
    // The tool's result came back as a user message.
    assert!(
        llm.requests()[1]
            .messages
            .last()
            .unwrap()
            .content
            .starts_with("Result of echo: ")
    );
}

#[test]
fn a_server_that_ignores_tools_moves_the_endpoint_to_the_json_protocol_for_good() {
    let memo = ProtocolMemo::new(Protocol::Auto);
    let (run, llm, _) = go(
        vec![
            Turn::Text("Sure! I would pick a dataset.".into()),
            Turn::Text(r#"{"final_answer": {"dataset": "a"}}"#.into()),
        ],
        &memo,
        Limits::default(),
    );
    assert_eq!(run.answer().unwrap().dataset, "a");
    assert_eq!(run.protocol, Protocol::Json);
    assert_eq!(memo.get(), Protocol::Json);
    let reqs = llm.requests();
    assert!(!reqs[0].tools.is_empty());
    assert!(reqs[1].tools.is_empty());
    assert!(matches!(
        reqs[1].response_format,
        ResponseFormat::JsonSchema { .. }
    ));
    assert!(run.rejected_replies[0].contains("switched to the JSON protocol"));
    // The next agent of the run starts with JSON.
    let (_, llm, _) = go(
        vec![Turn::Text(r#"{"final_answer": {"dataset": "b"}}"#.into())],
        &memo,
        Limits::default(),
    );
    assert!(llm.requests()[0].tools.is_empty());
}
