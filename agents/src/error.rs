//! The LLM layer's errors, classified so decorators can act on them.

use std::time::Duration;

/// A failed LLM call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// HTTP 429; retry after the given delay if the provider said.
    #[error("rate limited by the provider{}", retry_hint(.retry_after))]
    RateLimited {
        /// The provider's `Retry-After` / `retry-after-ms`, if any.
        retry_after: Option<Duration>,
    },
    /// HTTP 5xx.
    #[error("provider error (HTTP {status}): {message}")]
    Server {
        /// Status code.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The request took longer than allowed.
    #[error("the request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed or was reset.
    #[error("connection failed: {0}")]
    Connection(String),
    /// HTTP 400: the request itself is wrong; retrying cannot help.
    #[error("the provider rejected the request (HTTP 400): {0}")]
    BadRequest(String),
    /// HTTP 401/403: the key is wrong or missing.
    #[error(
        "the provider refused the API key (HTTP {status}); check the key's environment variable"
    )]
    Unauthorized {
        /// Status code.
        status: u16,
    },
    /// The account has no quota left; retrying cannot help.
    #[error("the provider reports insufficient quota: {0}")]
    InsufficientQuota(String),
    /// A call was refused before it was sent because it could exceed the budget.
    #[error(
        "budget exhausted: this call could cost up to {projected} {unit}, {remaining} {unit} remain of {limit}"
    )]
    BudgetExceeded {
        /// "tokens" or "USD".
        unit: &'static str,
        /// The call's worst case.
        projected: f64,
        /// What is left.
        remaining: f64,
        /// The whole budget.
        limit: f64,
    },
    /// Retries used up.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<LlmError>,
    },
    /// Replay found no recorded exchange for this request.
    #[error(
        "replay miss: no recorded exchange for request {fingerprint} (the request changed; re-record on purpose)"
    )]
    ReplayMiss {
        /// The request's fingerprint.
        fingerprint: String,
    },
    /// The reply could not be understood.
    #[error("malformed reply from the provider: {0}")]
    Malformed(String),
    /// The trace could not be written or read.
    #[error("trace: {0}")]
    Trace(String),
    /// A failure read back from a run's journal, with its original text.
    #[error("{0}")]
    Recorded(String),
}

fn retry_hint(d: &Option<Duration>) -> String {
    d.map(|d| format!(" (retry after {d:?})"))
        .unwrap_or_default()
}

impl LlmError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Timeout(_)
                | LlmError::Connection(_)
        )
    }
}
