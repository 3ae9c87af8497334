//! The backtest crate's errors.

/// A strategy expression that cannot be parsed or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ExprError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong and, where possible, the fix.
    pub message: String,
}

impl ExprError {
    pub(crate) fn at(src: &str, pos: usize, message: String) -> ExprError {
        let pos = pos.min(src.len());
        let before = &src[..pos];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ExprError {
            line,
            column: before[line_start..].chars().count() + 1,
            message,
        }
    }
}

/// Everything that can go wrong running a backtest.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The strategy's expression is invalid.
    #[error("strategy {0}")]
    Expr(#[from] ExprError),
    /// The inputs do not fit together.
    #[error("invalid input: {0}")]
    Input(String),
}
