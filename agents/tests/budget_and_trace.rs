//! Budgets stop spending before the call that would exceed them; traces record every exchange
//! without secrets and replay it with no provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;

use lim_agents::client::{Budget, Budgeted, Price, Spent};
use lim_agents::{
    ChatRequest, LlmClient, LlmError, Message, Recording, Replaying, ScriptedLlm, Turn, Usage,
};

fn req(i: usize) -> ChatRequest {
    ChatRequest::new(
        "gpt-test",
        vec![Message::user(format!("propose strategy {i}"))],
        1_500,
    )
}

#[tokio::test]
async fn a_token_budget_refuses_the_seventh_1500_token_call_before_sending_it() {
    let script = ScriptedLlm::new(
        (0..10).map(|i| Turn::Text(format!("reply {i}"))),
        Usage {
            prompt_tokens: 0,
            completion_tokens: 1_500,
        },
    );
    let budget = Budget {
        max_tokens: Some(10_000),
        ..Budget::default()
    };
    let client = Budgeted::new(script, budget, Spent::default());
    let mut done = 0;
    let err = loop {
        match client.complete(&req(done)).await {
            Ok(_) => done += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(done, 6, "six calls fit, the seventh could not");
    assert!(
        matches!(err, LlmError::BudgetExceeded { unit: "tokens", .. }),
        "{err}"
    );
    assert_eq!(client.spent().tokens, 9_000);
}

#[tokio::test]
async fn a_tokeniser_denser_than_the_estimate_does_not_walk_the_run_past_its_token_budget() {
    // The provider counts 2,000 prompt tokens for a prompt estimated at about 200: after the
    // first reply the estimate is scaled to what the provider reports.
    let script = || {
        ScriptedLlm::new(
            (0..10).map(|i| Turn::Text(format!("reply {i}"))),
            Usage {
                prompt_tokens: 2_000,
                completion_tokens: 0,
            },
        )
    };
    let budget = Budget {
        max_tokens: Some(9_000),
        ..Budget::default()
    };
    let prompt = |i: usize| {
        ChatRequest::new(
            "gpt-test",
            vec![Message::user(format!("{} {i}", "x".repeat(600)))],
            10,
        )
    };
    let client = Budgeted::new(script(), budget.clone(), Spent::default());
    let mut done = 0;
    while client.complete(&prompt(done)).await.is_ok() {
        done += 1;
    }
    assert_eq!(done, 4, "a fifth call would have spent 10,000 tokens");
    assert!(client.spent().tokens <= 9_000, "{:?}", client.spent());
    // A resumed run starts from what its journaled replies taught it: 6,000 spent, one call
    // left, and the estimate already scaled.
    let ratio = lim_agents::client::prompt_ratio(&prompt(0), 2_000).unwrap();
    let resumed = Budgeted::new(
        script(),
        budget,
        Spent {
            tokens: 6_000,
            ..Spent::default()
        },
    )
    .with_prompt_scale(ratio);
    assert!(resumed.complete(&prompt(9)).await.is_ok());
    assert!(resumed.complete(&prompt(10)).await.is_err());
    assert_eq!(resumed.spent().tokens, 8_000);
}

#[test]
fn the_prompt_estimate_counts_every_digit_as_a_token() {
    // SmolLM2's tokeniser splits numbers digit by digit: a table of metrics is a token a digit.
    let digits = "0123456789".repeat(90);
    let r = ChatRequest::new("m", vec![Message::user(digits)], 1);
    assert!(
        r.estimated_prompt_tokens() >= 900,
        "{}",
        r.estimated_prompt_tokens()
    );
    let prose = "a".repeat(900);
    let r = ChatRequest::new("m", vec![Message::user(prose)], 1);
    assert!(
        r.estimated_prompt_tokens() >= 300,
        "{}",
        r.estimated_prompt_tokens()
    );
}

#[tokio::test]
async fn a_dollar_budget_uses_the_price_table() {
    let script = ScriptedLlm::new(
        (0..10).map(|i| Turn::Text(format!("reply {i}"))),
        Usage {
            prompt_tokens: 100,
            completion_tokens: 1_000,
        },
    );
    let prices = BTreeMap::from([(
        "gpt-test".to_string(),
        Price {
            prompt: 2.0,
            completion: 10.0,
        },
    )]);
    let budget = Budget {
        max_usd: Some(0.05),
        prices,
        ..Budget::default()
    };
    let client = Budgeted::new(script, budget, Spent::default());
    let mut done = 0;
    while client.complete(&req(done)).await.is_ok() {
        done += 1;
    }
    // Worst case per call ~ 1,500 x $10/M = $0.015: three fit under $0.05 with actual spend $0.0102 each.
    let spent = client.spent();
    assert!(
        spent.usd <= 0.05 && done >= 3,
        "{done} calls, ${}",
        spent.usd
    );
}

#[tokio::test]
async fn traces_scrub_secrets_and_replay_without_a_provider() {
    let script = ScriptedLlm::new(
        [
            Turn::Text("use momentum".into()),
            Turn::Text("use reversal".into()),
        ],
        Usage::default(),
    );
    let rec = Recording::new(script);
    let mut r1 = req(1);
    // A key that leaked into a prompt must not leak into the trace.
    r1.messages.push(Message::user(
        "Authorization: Bearer sk-abcdefghijklmnopqrstuvwxyz012345",
    ));
    let a = rec.complete(&r1).await.unwrap();
    let b = rec.complete(&req(2)).await.unwrap();
    let trace = rec.jsonl();
    assert!(!trace.contains("abcdefghijklmnop"), "{trace}");
    assert!(trace.contains("Bearer ***"));
    assert_eq!(trace.lines().count(), 2);

    // Replay answers the same requests identically, in order, with no LLM at all.
    let replay = Replaying::from_jsonl(&trace).unwrap();
    assert_eq!(replay.complete(&r1).await.unwrap(), a);
    assert_eq!(replay.complete(&req(2)).await.unwrap(), b);
    // A request that was never recorded is a typed miss naming its fingerprint.
    let miss = replay.complete(&req(3)).await.unwrap_err();
    assert_eq!(
        miss,
        LlmError::ReplayMiss {
            fingerprint: req(3).fingerprint()
        }
    );
}
