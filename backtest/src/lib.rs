//! LIM's strategy language and backtester.
//!
//! * [`expr`]: the language (parse, check, print) that strategies, and the LLMs that write
//!   them, use; see `docs/strategy-language.md`.
//! * [`eval`]: evaluating expressions over `times × instruments` matrices ([`eval::Frame`]),
//!   sharing sub-expressions across a batch.
//! * [`topk`]: the reference top-k book and its metrics, checked against the peer reference.
//!
//! The backtester knows nothing of LLMs, and nothing here does IO.

pub mod baseline;
pub mod error;
pub mod eval;
pub mod expr;
pub mod folds;
pub mod frame;
pub mod metrics;
pub mod nonfinite;
pub mod ops;
pub mod portfolio;
pub mod session;
pub mod spec;
pub mod stats;
pub mod topk;

pub use error::{BacktestError, ExprError};
pub use eval::{Evaluator, Frame, Mat, Signal};
pub use expr::{Expr, parse, parse_with};
pub use topk::{RefMetrics, TopK};
