//! Structured output against a corpus of malformed replies: each is repaired locally or within
//! two re-asks that quote the exact problem, or ends in a typed error; nothing panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use lim_agents::structured::{StructuredError, ask, strict_schema};
use lim_agents::{ChatRequest, Message, ScriptedLlm, Turn, Usage};
use lim_backtest::spec::StrategySpec;

const FIELDS: &[&str] = &["open", "high", "low", "close", "volume", "vwap", "returns"];
const VALID: &str = r#"{"signal": "rank(ts_sum(returns, 60))"}"#;

fn check(s: &StrategySpec) -> Result<(), String> {
    s.validate()?;
    lim_backtest::parse(&s.signal, FIELDS)
        .map(|_| ())
        .map_err(|e| format!("the signal does not parse: {e}"))
}

fn corpus() -> Vec<(&'static str, String)> {
    let long = format!(r#"{{"signal": "{}"}}"#, "x".repeat(100_000));
    let deep = format!(
        r#"{{"signal": "{}close{}"}}"#,
        "abs(".repeat(60),
        ")".repeat(60)
    );
    vec![
        ("truncated", r#"{"signal": "rank(returns)""#.into()),
        ("code fence", format!("```json\n{VALID}\n```")),
        ("trailing comma", r#"{"signal": "rank(returns)",}"#.into()),
        ("wrong type", r#"{"signal": 42}"#.into()),
        ("extra key", r#"{"signal": "rank(returns)", "leverage": 3}"#.into()),
        ("outside the language", r#"{"signal": "rank(ts_men(close, 5))"}"#.into()),
        ("100 KB string", long),
        ("empty", String::new()),
        ("prose", "I think a momentum strategy would work well here.".into()),
        ("prose around JSON", format!("Here you go: {VALID} Hope it helps!")),
        ("array", r#"[{"signal": "rank(returns)"}, {"signal": "x"}]"#.into()),
        ("null", "null".into()),
        ("number", "42".into()),
        ("missing nested field", r#"{"signal": "rank(returns)", "portfolio": {"kind": "top_k"}}"#.into()),
        ("unknown enum", r#"{"signal": "rank(returns)", "portfolio": {"kind": "best_k", "k": 5}}"#.into()),
        ("negative lag", r#"{"signal": "rank(returns)", "execution_lag": -1}"#.into()),
        ("zero lag", r#"{"signal": "rank(returns)", "execution_lag": 0}"#.into()),
        ("quantile out of range", r#"{"signal": "rank(returns)", "portfolio": {"kind": "quantile_long_short", "quantile": 0.9}}"#.into()),
        ("string for object", r#"{"signal": "rank(returns)", "costs": "10bps"}"#.into()),
        ("unbalanced parentheses", r#"{"signal": "rank(returns"}"#.into()),
        ("negative window", r#"{"signal": "ts_mean(close, -5)"}"#.into()),
        ("fractional window", r#"{"signal": "ts_mean(close, 2.5)"}"#.into()),
        ("misspelt field", r#"{"signal": "rank(clse)"}"#.into()),
        ("single quotes", r#"{'signal': 'rank(returns)'}"#.into()),
        ("comment", "{\"signal\": \"rank(returns)\" // momentum\n}".into()),
        ("double braces", r#"{{"signal": "rank(returns)"}}"#.into()),
        ("NaN literal", r#"{"signal": "rank(returns)", "rebalance_every": NaN}"#.into()),
        ("Python True", r#"{"signal": "rank(returns)", "limits": {"max_weight": True}}"#.into()),
        ("two objects", r#"first {"a": 1} then {"signal": "rank(returns)"}"#.into()),
        ("control characters", "\u{0}\u{1}{\"signal\":".into()),
        ("whitespace", "   \n  ".into()),
        ("huge k", r#"{"signal": "rank(returns)", "portfolio": {"kind": "top_k", "k": 1e30}}"#.into()),
        ("too deep", deep),
        ("look-ahead attempt", r#"{"signal": "delay(close, -1)"}"#.into()),
    ]
}

fn request() -> ChatRequest {
    ChatRequest::new(
        "m",
        vec![
            Message::system("You write strategy specs."),
            Message::user("Propose one."),
        ],
        800,
    )
}

#[tokio::test]
async fn every_malformed_reply_is_repaired_within_two_re_asks() {
    let corpus = corpus();
    assert!(corpus.len() >= 30);
    let mut repaired_locally = 0;
    for (name, bad) in &corpus {
        let llm = ScriptedLlm::new(
            [Turn::Text(bad.clone()), Turn::Text(VALID.into())],
            Usage::default(),
        );
        let spec: StrategySpec = ask(&llm, request(), 2, check)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let sent = llm.requests();
        if sent.len() == 1 {
            repaired_locally += 1;
            assert!(
                spec.signal == "rank(ts_sum(returns, 60))" || spec.signal == "rank(returns)",
                "{name}"
            );
            continue;
        }
        assert_eq!(sent.len(), 2, "{name}");
        assert_eq!(spec.signal, "rank(ts_sum(returns, 60))", "{name}");
        // The re-ask quotes the problem and echoes (a bounded part of) the bad reply.
        let reask = &sent[1].messages;
        let last = &reask[reask.len() - 1].content;
        assert!(
            last.starts_with("That reply cannot be used: "),
            "{name}: {last}"
        );
        assert!(
            reask[reask.len() - 2].content.chars().count() <= 2_000,
            "{name}"
        );
    }
    // Code fences, trailing commas and prose around the object need no re-ask.
    assert_eq!(repaired_locally, 3);
}

#[tokio::test]
async fn the_exact_problem_goes_back_to_the_model() {
    let llm = ScriptedLlm::new(
        [
            Turn::Text(r#"{"signal": "rank(ts_men(close, 5))"}"#.into()),
            Turn::Text(VALID.into()),
        ],
        Usage::default(),
    );
    let _: StrategySpec = ask(&llm, request(), 2, check).await.unwrap();
    let reask = llm.requests()[1].messages.last().unwrap().content.clone();
    assert!(
        reask.contains("line 1, column 6: unknown function 'ts_men' (did you mean 'ts_mean'?)"),
        "{reask}"
    );
}

#[tokio::test]
async fn three_bad_replies_end_in_a_typed_failure() {
    let llm = ScriptedLlm::new(
        (0..3).map(|_| Turn::Text("no idea".into())),
        Usage::default(),
    );
    let r: Result<StrategySpec, _> = ask(&llm, request(), 2, check).await;
    match r {
        Err(StructuredError::Invalid { attempts, last }) => {
            assert_eq!(attempts, 3);
            assert!(last.contains("no JSON object"), "{last}");
        }
        other => panic!("expected a typed failure, got {other:?}"),
    }
}

#[test]
fn the_strict_schema_is_closed_and_fully_required() {
    let s = strict_schema::<StrategySpec>();
    fn walk(v: &serde_json::Value, path: &str) {
        if let Some(map) = v.as_object() {
            assert!(
                !map.contains_key("format")
                    && !map.contains_key("$ref")
                    && !map.contains_key("oneOf"),
                "{path}"
            );
            if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
                assert_eq!(
                    map.get("additionalProperties"),
                    Some(&serde_json::Value::Bool(false)),
                    "{path}"
                );
                let req = map
                    .get("required")
                    .and_then(|r| r.as_array())
                    .map_or(0, Vec::len);
                assert_eq!(req, props.len(), "{path}");
            }
            for (k, c) in map {
                walk(c, &format!("{path}/{k}"));
            }
        } else if let Some(items) = v.as_array() {
            items.iter().for_each(|c| walk(c, path));
        }
    }
    walk(&s, "");
    assert!(s.get("$schema").is_none());
}
