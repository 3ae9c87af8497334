//! Fault injection over 1,000 calls on a paused clock: rate limits with `Retry-After`, server
//! errors, stalls cut by the timeout, connection resets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::sync::Mutex;
use std::time::Duration;

use lim_agents::chat::{FinishReason, Usage};
use lim_agents::client::{RetryPolicy, SplitMix};
use lim_agents::{ChatRequest, ChatResponse, LlmClient, LlmError, Message, Retrying, Timed};
use tokio::time::Instant;

/// Fails at random, like a busy provider; logs every attempt.
struct Flaky {
    rng: Mutex<SplitMix>,
    log: Mutex<Vec<(String, Instant, &'static str)>>,
}

impl LlmClient for Flaky {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let call = req.messages[0].content.clone();
        let u = self.rng.lock().unwrap().next_f64();
        let kind = match u {
            u if u < 0.20 => "429",
            u if u < 0.25 => "500",
            u if u < 0.27 => "stall",
            u if u < 0.29 => "reset",
            _ => "ok",
        };
        self.log.lock().unwrap().push((call, Instant::now(), kind));
        match kind {
            "429" => Err(LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
            }),
            "500" => Err(LlmError::Server {
                status: 500,
                message: "overloaded".into(),
            }),
            "stall" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(LlmError::Connection("stalled".into()))
            }
            "reset" => Err(LlmError::Connection("connection reset by peer".into())),
            _ => Ok(ChatResponse {
                message: Message::assistant("ok"),
                finish_reason: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: 10,
                    completion_tokens: 1,
                },
                notes: Vec::new(),
            }),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_calls_through_a_flaky_provider() {
    let flaky = Flaky {
        rng: Mutex::new(SplitMix::new(7)),
        log: Mutex::new(Vec::new()),
    };
    let policy = RetryPolicy {
        max_attempts: 6,
        base: Duration::from_millis(200),
        cap: Duration::from_secs(20),
        budget: 10_000,
    };
    let client = Retrying::new(Timed::new(flaky, Duration::from_secs(30)), policy, 42);
    let mut ok = 0;
    for i in 0..1000 {
        let req = ChatRequest::new("m", vec![Message::user(format!("call {i}"))], 16);
        ok += usize::from(client.complete(&req).await.is_ok());
    }
    let log = client.inner().inner_ref().log.lock().unwrap().clone();
    eprintln!(
        "fault injection: {ok} of 1000 calls succeeded in {} attempts",
        log.len()
    );
    assert!(ok >= 990, "only {ok} of 1000 calls succeeded");
    assert!(log.len() <= 1600, "{} attempts for 1000 calls", log.len());
    // A retry of the same call after a 429 never comes sooner than its Retry-After.
    for w in log.windows(2) {
        if w[0].0 == w[1].0 && w[0].2 == "429" {
            assert!(
                w[1].1 - w[0].1 >= Duration::from_secs(1),
                "retried {:?} after a 429",
                w[1].1 - w[0].1
            );
        }
    }
    // Stalls were cut by the timeout, not waited out.
    assert!(log.iter().any(|e| e.2 == "stall"));
}

/// Counts attempts and always refuses the key.
struct Refusing(Mutex<u32>);

impl LlmClient for Refusing {
    async fn complete(&self, _req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        *self.0.lock().unwrap() += 1;
        Err(LlmError::Unauthorized { status: 401 })
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_tried_exactly_once() {
    let client = Retrying::new(Refusing(Mutex::new(0)), RetryPolicy::default(), 1);
    let e = client
        .complete(&ChatRequest::new("m", vec![Message::user("hi")], 16))
        .await
        .unwrap_err();
    assert_eq!(e, LlmError::Unauthorized { status: 401 });
    assert_eq!(*client.inner().0.lock().unwrap(), 1);
}
