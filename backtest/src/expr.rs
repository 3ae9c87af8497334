//! The strategy language: formulaic expressions over panel fields.
//!
//! [`parse`] turns text into an [`Expr`], checking every function name, arity and window as it
//! goes, so a parsed expression always evaluates. Errors carry the line and column and, for
//! names, the closest known one. `Display` prints an expression back such that
//! `parse(print(e)) == e`. Windows are positive integer literals, and no operator reads a bar
//! after the one being computed: look-ahead cannot be written.
//!
//! The reference for every operator is `docs/strategy-language.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ExprError;

/// Maximum nesting depth of an expression.
pub const MAX_DEPTH: usize = 48;
/// Maximum number of nodes in an expression.
pub const MAX_NODES: usize = 512;
/// Maximum length of an expression's text.
pub const MAX_LEN: usize = 8192;
/// Largest window accepted.
pub const MAX_WINDOW: usize = 10_000;

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `^` or `**`
    Pow,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `&&` or `and`
    And,
    /// `||` or `or`
    Or,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// Binding strength: higher binds tighter.
    fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div => 5,
            BinOp::Pow => 7,
        }
    }
}

/// Window functions that take an optional last argument, `min_count`: a window needs at least
/// that many numbers (bottleneck's `min_count`), and the statistic is over the numbers in it.
/// Without it, a window needs all of its bars to be numbers.
pub const MIN_COUNT_FUNCS: &[&str] = &[
    "ts_sum",
    "ts_mean",
    "ts_std",
    "ts_var",
    "ts_zscore",
    "ts_min",
    "ts_max",
    "ts_argmin",
    "ts_argmax",
    "ts_rank",
    "ts_corr",
    "ts_cov",
    "decay_linear",
];

/// Whether `name` takes the optional `min_count` argument (see [`MIN_COUNT_FUNCS`]).
pub fn takes_min_count(name: &str) -> bool {
    MIN_COUNT_FUNCS.contains(&name)
}

/// What kind of argument a function takes in a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// Any expression (a panel or a number).
    Expr,
    /// A positive integer literal: a look-back window in bars.
    Window,
    /// A number literal.
    Number,
    /// A grouping name, e.g. `exchange`.
    Group,
}

/// How a function computes: bar by bar, along time, or across instruments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Element-wise.
    Element,
    /// Along each instrument's history.
    TimeSeries,
    /// Across instruments at each bar.
    CrossSection,
}

/// A function of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Func {
    /// Its name.
    pub name: &'static str,
    /// Its arguments.
    pub args: &'static [Arg],
    /// Its kind.
    pub kind: Kind,
    /// One line on what it does.
    pub doc: &'static str,
}

use Arg::{Expr as E, Group as G, Number as Num, Window as W};
use Kind::{CrossSection as CS, Element as EL, TimeSeries as TS};

/// Every function, in the order of the reference page.
pub const FUNCS: &[Func] = &[
    Func {
        name: "abs",
        args: &[E],
        kind: EL,
        doc: "absolute value",
    },
    Func {
        name: "sign",
        args: &[E],
        kind: EL,
        doc: "-1, 0 or 1",
    },
    Func {
        name: "log",
        args: &[E],
        kind: EL,
        doc: "natural logarithm (NaN for x < 0, -inf at 0)",
    },
    Func {
        name: "sqrt",
        args: &[E],
        kind: EL,
        doc: "square root (NaN for x < 0)",
    },
    Func {
        name: "exp",
        args: &[E],
        kind: EL,
        doc: "e to the power x",
    },
    Func {
        name: "min",
        args: &[E, E],
        kind: EL,
        doc: "smaller of two values (NaN if either is)",
    },
    Func {
        name: "max",
        args: &[E, E],
        kind: EL,
        doc: "larger of two values (NaN if either is)",
    },
    Func {
        name: "clip",
        args: &[E, E, E],
        kind: EL,
        doc: "x limited to [lo, hi]",
    },
    Func {
        name: "where",
        args: &[E, E, E],
        kind: EL,
        doc: "a where cond is true (non-zero), else b; NaN where cond is NaN",
    },
    Func {
        name: "delay",
        args: &[E, W],
        kind: TS,
        doc: "the value d bars ago",
    },
    Func {
        name: "ts_delta",
        args: &[E, W],
        kind: TS,
        doc: "x - delay(x, d)",
    },
    Func {
        name: "ts_mean",
        args: &[E, W],
        kind: TS,
        doc: "mean over the last d bars",
    },
    Func {
        name: "ts_sum",
        args: &[E, W],
        kind: TS,
        doc: "sum over the last d bars",
    },
    Func {
        name: "ts_product",
        args: &[E, W],
        kind: TS,
        doc: "product over the last d bars",
    },
    Func {
        name: "ts_std",
        args: &[E, W],
        kind: TS,
        doc: "sample standard deviation over the last d bars",
    },
    Func {
        name: "ts_var",
        args: &[E, W],
        kind: TS,
        doc: "sample variance over the last d bars",
    },
    Func {
        name: "ts_min",
        args: &[E, W],
        kind: TS,
        doc: "minimum over the last d bars",
    },
    Func {
        name: "ts_max",
        args: &[E, W],
        kind: TS,
        doc: "maximum over the last d bars",
    },
    Func {
        name: "ts_argmin",
        args: &[E, W],
        kind: TS,
        doc: "position of the minimum in the window, 0 = oldest (newest wins ties)",
    },
    Func {
        name: "ts_argmax",
        args: &[E, W],
        kind: TS,
        doc: "position of the maximum in the window, 0 = oldest (newest wins ties)",
    },
    Func {
        name: "ts_rank",
        args: &[E, W],
        kind: TS,
        doc: "percentile rank of the current value in the window, in (0, 1]",
    },
    Func {
        name: "ts_zscore",
        args: &[E, W],
        kind: TS,
        doc: "(x - ts_mean) / ts_std",
    },
    Func {
        name: "ts_corr",
        args: &[E, E, W],
        kind: TS,
        doc: "Pearson correlation of x and y over the last d bars",
    },
    Func {
        name: "ts_cov",
        args: &[E, E, W],
        kind: TS,
        doc: "sample covariance of x and y over the last d bars",
    },
    Func {
        name: "ts_skew",
        args: &[E, W],
        kind: TS,
        doc: "sample skewness over the last d bars",
    },
    Func {
        name: "ts_kurt",
        args: &[E, W],
        kind: TS,
        doc: "sample excess kurtosis over the last d bars",
    },
    Func {
        name: "ts_ema",
        args: &[E, W],
        kind: TS,
        doc: "exponential moving average with alpha = 2 / (d + 1)",
    },
    Func {
        name: "decay_linear",
        args: &[E, W],
        kind: TS,
        doc: "linearly weighted mean, newest weight d",
    },
    Func {
        name: "ts_quantile",
        args: &[E, W, Num],
        kind: TS,
        doc: "q-quantile of the last d bars (linear interpolation)",
    },
    Func {
        name: "ts_slope",
        args: &[E, W],
        kind: TS,
        doc: "least-squares slope of x on time over the last d bars",
    },
    Func {
        name: "ts_rsquare",
        args: &[E, W],
        kind: TS,
        doc: "R² of the regression of x on time over the last d bars",
    },
    Func {
        name: "ts_resid",
        args: &[E, W],
        kind: TS,
        doc: "residual of the current bar from that regression",
    },
    Func {
        name: "rank",
        args: &[E],
        kind: CS,
        doc: "percentile rank across instruments, in (0, 1], ties averaged",
    },
    Func {
        name: "zscore",
        args: &[E],
        kind: CS,
        doc: "(x - mean) / std across instruments",
    },
    Func {
        name: "demean",
        args: &[E],
        kind: CS,
        doc: "x - mean across instruments",
    },
    Func {
        name: "scale",
        args: &[E],
        kind: CS,
        doc: "x / sum(|x|) across instruments",
    },
    Func {
        name: "winsorize",
        args: &[E, Num],
        kind: CS,
        doc: "x clipped to mean ± k std across instruments",
    },
    Func {
        name: "group_rank",
        args: &[E, G],
        kind: CS,
        doc: "rank within each group (e.g. exchange)",
    },
    Func {
        name: "group_demean",
        args: &[E, G],
        kind: CS,
        doc: "x - mean within each group",
    },
];

/// Groupings `group_*` functions accept.
pub const GROUPS: &[&str] = &["exchange", "asset_class"];

/// Looks a function up by name.
pub fn func(name: &str) -> Option<&'static Func> {
    FUNCS.iter().find(|f| f.name == name)
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// A non-negative number literal.
    Num(f64),
    /// A panel field or a registered prediction, by name.
    Field(String),
    /// A grouping name (only as a `group_*` argument).
    Group(String),
    /// `-x`
    Neg(Box<Expr>),
    /// `!x`
    Not(Box<Expr>),
    /// `a op b`
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `f(args)`
    Call(String, Vec<Expr>),
}

impl Expr {
    /// Nodes in the tree.
    pub fn size(&self) -> usize {
        match self {
            Expr::Num(_) | Expr::Field(_) | Expr::Group(_) => 1,
            Expr::Neg(e) | Expr::Not(e) => 1 + e.size(),
            Expr::Bin(_, a, b) => 1 + a.size() + b.size(),
            Expr::Call(_, args) => 1 + args.iter().map(Expr::size).sum::<usize>(),
        }
    }

    /// Nesting depth.
    pub fn depth(&self) -> usize {
        match self {
            Expr::Num(_) | Expr::Field(_) | Expr::Group(_) => 1,
            Expr::Neg(e) | Expr::Not(e) => 1 + e.depth(),
            Expr::Bin(_, a, b) => 1 + a.depth().max(b.depth()),
            Expr::Call(_, args) => 1 + args.iter().map(Expr::depth).max().unwrap_or(0),
        }
    }

    /// Fields the expression reads.
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(&mut |e| {
            if let Expr::Field(f) = e
                && !out.contains(f)
            {
                out.push(f.clone());
            }
        });
        out
    }

    /// Whether every row of this expression's value holds the `rank` operator's percentile
    /// ranks of that row's numbers, or their negations: `rank(x)` and `-rank(x)`.
    pub fn is_rank(&self) -> bool {
        match self {
            Expr::Call(name, _) => name == "rank",
            Expr::Neg(e) => e.is_rank(),
            _ => false,
        }
    }

    /// The expression with every `rank(rank(x))` written `rank(x)`: ranking ranks changes
    /// nothing (the order and the ties are the same, so are the count and so the percentiles),
    /// so the two are one strategy, which a search should try once.
    #[must_use]
    pub fn without_repeated_ranks(&self) -> Expr {
        match self {
            Expr::Num(_) | Expr::Field(_) | Expr::Group(_) => self.clone(),
            Expr::Neg(e) => Expr::Neg(Box::new(e.without_repeated_ranks())),
            Expr::Not(e) => Expr::Not(Box::new(e.without_repeated_ranks())),
            Expr::Bin(op, a, b) => Expr::Bin(
                *op,
                Box::new(a.without_repeated_ranks()),
                Box::new(b.without_repeated_ranks()),
            ),
            Expr::Call(name, args) => {
                let inner: Vec<Expr> = args.iter().map(Expr::without_repeated_ranks).collect();
                match inner.as_slice() {
                    [arg @ Expr::Call(n, a)] if name == "rank" && n == "rank" && a.len() == 1 => {
                        arg.clone()
                    }
                    _ => Expr::Call(name.clone(), inner),
                }
            }
        }
    }

    /// The expression with every window operator of [`MIN_COUNT_FUNCS`] given a minimum count
    /// of `share` of its window (rounded up, at least 1), or, for `None`, with every minimum
    /// count removed (the strict default). Applying it twice is applying it once.
    #[must_use]
    pub fn with_min_count(&self, share: Option<f64>) -> Expr {
        match self {
            Expr::Num(_) | Expr::Field(_) | Expr::Group(_) => self.clone(),
            Expr::Neg(e) => Expr::Neg(Box::new(e.with_min_count(share))),
            Expr::Not(e) => Expr::Not(Box::new(e.with_min_count(share))),
            Expr::Bin(op, a, b) => Expr::Bin(
                *op,
                Box::new(a.with_min_count(share)),
                Box::new(b.with_min_count(share)),
            ),
            Expr::Call(name, args) => {
                let declared = func(name).map_or(args.len(), |f| f.args.len());
                let mut out: Vec<Expr> = args
                    .iter()
                    .take(declared)
                    .map(|a| a.with_min_count(share))
                    .collect();
                if takes_min_count(name)
                    && let Some(s) = share
                    && let Some(d) = out
                        .iter()
                        .zip(func(name).map_or(&[][..], |f| f.args))
                        .find_map(|(a, k)| match (a, k) {
                            (Expr::Num(d), Arg::Window) => Some(*d),
                            _ => None,
                        })
                {
                    out.push(Expr::Num((d * s).ceil().clamp(1.0, d)));
                }
                Expr::Call(name.clone(), out)
            }
        }
    }

    /// The longest look-back in bars: how many bars pass before the first value can exist.
    pub fn warmup(&self) -> usize {
        match self {
            Expr::Num(_) | Expr::Field(_) | Expr::Group(_) => 0,
            Expr::Neg(e) | Expr::Not(e) => e.warmup(),
            Expr::Bin(_, a, b) => a.warmup().max(b.warmup()),
            Expr::Call(name, args) => {
                let inner = args.iter().map(Expr::warmup).max().unwrap_or(0);
                let window = args
                    .iter()
                    .zip(func(name).map(|f| f.args).unwrap_or(&[]))
                    .find_map(|(a, k)| match (a, k) {
                        (Expr::Num(d), Arg::Window) => Some(*d as usize),
                        _ => None,
                    });
                match (name.as_str(), window) {
                    ("delay" | "ts_delta", Some(d)) => inner + d,
                    (_, Some(d)) => inner + d - 1,
                    _ => inner,
                }
            }
        }
    }

    /// Whether the expression reads the field `name`.
    pub fn reads(&self, name: &str) -> bool {
        let mut found = false;
        self.visit(&mut |e| found |= matches!(e, Expr::Field(f) if f == name));
        found
    }

    pub(crate) fn visit(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Neg(e) | Expr::Not(e) => e.visit(f),
            Expr::Bin(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.visit(f)),
            _ => {}
        }
    }
}

/// Prints with the fewest parentheses that keep the tree: `parse(e.to_string()) == e`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(self, f, 0)
    }
}

fn write_expr(e: &Expr, f: &mut fmt::Formatter<'_>, min_prec: u8) -> fmt::Result {
    match e {
        Expr::Num(v) => write!(f, "{v}"),
        Expr::Field(n) | Expr::Group(n) => f.write_str(n),
        Expr::Neg(x) | Expr::Not(x) => {
            // Unary binds tighter than every binary operator but `^`.
            let paren = min_prec > 6;
            if paren {
                f.write_str("(")?;
            }
            f.write_str(if matches!(e, Expr::Neg(_)) { "-" } else { "!" })?;
            write_expr(x, f, 6)?;
            if paren {
                f.write_str(")")?;
            }
            Ok(())
        }
        Expr::Bin(op, a, b) => {
            let p = op.precedence();
            let paren = p < min_prec;
            if paren {
                f.write_str("(")?;
            }
            // Left-associative, except `^` which is right-associative.
            let (lp, rp) = if *op == BinOp::Pow {
                (p + 1, p)
            } else {
                (p, p + 1)
            };
            write_expr(a, f, lp)?;
            write!(f, " {} ", op.symbol())?;
            write_expr(b, f, rp)?;
            if paren {
                f.write_str(")")?;
            }
            Ok(())
        }
        Expr::Call(name, args) => {
            write!(f, "{name}(")?;
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_expr(a, f, 0)?;
            }
            f.write_str(")")
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
    text: String,
}

fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'#' {
            // A comment runs to the end of the line.
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let mut j = i + 1;
                if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text = &src[start..i];
            let v: f64 = text
                .parse()
                .map_err(|_| ExprError::at(src, start, format!("'{text}' is not a number")))?;
            out.push(Token {
                tok: Tok::Num(v),
                pos: start,
                text: text.to_string(),
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let text = &src[start..i];
            let tok = match text {
                "and" => Tok::Op("&&"),
                "or" => Tok::Op("||"),
                "not" => Tok::Op("!"),
                _ => Tok::Ident(text.to_string()),
            };
            out.push(Token {
                tok,
                pos: start,
                text: text.to_string(),
            });
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let (tok, len) = match two {
            "**" => (Tok::Op("^"), 2),
            "<=" => (Tok::Op("<="), 2),
            ">=" => (Tok::Op(">="), 2),
            "==" => (Tok::Op("=="), 2),
            "!=" => (Tok::Op("!="), 2),
            "&&" => (Tok::Op("&&"), 2),
            "||" => (Tok::Op("||"), 2),
            _ => match c {
                b'+' => (Tok::Op("+"), 1),
                b'-' => (Tok::Op("-"), 1),
                b'*' => (Tok::Op("*"), 1),
                b'/' => (Tok::Op("/"), 1),
                b'^' => (Tok::Op("^"), 1),
                b'<' => (Tok::Op("<"), 1),
                b'>' => (Tok::Op(">"), 1),
                b'!' => (Tok::Op("!"), 1),
                b'(' => (Tok::LParen, 1),
                b')' => (Tok::RParen, 1),
                b',' => (Tok::Comma, 1),
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    let hint = match ch {
                        '=' => " (use == to compare)",
                        '&' => " (use && or and)",
                        '|' => " (use || or or)",
                        '[' | ']' | '{' | '}' => " (only round parentheses group)",
                        _ => "",
                    };
                    return Err(ExprError::at(
                        src,
                        i,
                        format!("unexpected character '{ch}'{hint}"),
                    ));
                }
            },
        };
        out.push(Token {
            tok,
            pos: i,
            text: src[i..i + len].to_string(),
        });
        i += len;
    }
    out.push(Token {
        tok: Tok::End,
        pos: src.len(),
        text: String::new(),
    });
    Ok(out)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    at: usize,
    fields: &'a [&'a str],
    groups: &'a [&'a str],
    depth: usize,
}

/// Parses and checks an expression against the fields it may read.
///
/// # Errors
/// A syntax error, an unknown name, a wrong argument count or kind, a window that is not a
/// positive integer, or an expression past the size limits; each with line and column.
pub fn parse(src: &str, fields: &[&str]) -> Result<Expr, ExprError> {
    parse_with(src, fields, GROUPS)
}

/// [`parse`] with the groupings `group_*` functions may take (the built-in [`GROUPS`] and
/// those of the data's `groups.csv`, see [`crate::eval::Frame::group_names`]).
///
/// # Errors
/// As [`parse`].
pub fn parse_with(src: &str, fields: &[&str], groups: &[&str]) -> Result<Expr, ExprError> {
    if src.len() > MAX_LEN {
        return Err(ExprError::at(
            src,
            MAX_LEN,
            format!(
                "expression is {} characters long, the limit is {MAX_LEN}",
                src.len()
            ),
        ));
    }
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        at: 0,
        fields,
        groups,
        depth: 0,
    };
    let e = p.expr(0)?;
    let t = p.peek();
    if t.tok != Tok::End {
        let msg = match t.tok {
            Tok::RParen => "unmatched ')'".to_string(),
            _ => format!(
                "unexpected '{}' after a complete expression (missing operator?)",
                t.text
            ),
        };
        return Err(ExprError::at(src, t.pos, msg));
    }
    if e.size() > MAX_NODES {
        return Err(ExprError::at(
            src,
            0,
            format!(
                "expression has {} nodes, the limit is {MAX_NODES}",
                e.size()
            ),
        ));
    }
    if matches!(e, Expr::Group(_)) {
        return Err(ExprError::at(
            src,
            0,
            "a grouping name is not a signal".into(),
        ));
    }
    Ok(e)
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.toks[self.at.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.at += 1;
        t
    }

    fn err(&self, pos: usize, msg: String) -> ExprError {
        ExprError::at(self.src, pos, msg)
    }

    fn expr(&mut self, min_prec: u8) -> Result<Expr, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let pos = self.peek().pos;
            return Err(self.err(
                pos,
                format!("expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        let mut lhs = self.unary()?;
        while let Tok::Op(s) = &self.peek().tok {
            let op = match *s {
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "^" => BinOp::Pow,
                "<" => BinOp::Lt,
                "<=" => BinOp::Le,
                ">" => BinOp::Gt,
                ">=" => BinOp::Ge,
                "==" => BinOp::Eq,
                "!=" => BinOp::Ne,
                "&&" => BinOp::And,
                "||" => BinOp::Or,
                _ => break,
            };
            let p = op.precedence();
            if p < min_prec {
                break;
            }
            self.next();
            let rhs = if op == BinOp::Pow {
                self.expr(p)?
            } else {
                self.expr(p + 1)?
            };
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        match self.peek().tok {
            Tok::Op("-") => {
                self.next();
                // `-x ^ 2` is `-(x ^ 2)`, as in Python.
                Ok(Expr::Neg(Box::new(self.expr(7)?)))
            }
            Tok::Op("!") => {
                self.next();
                Ok(Expr::Not(Box::new(self.expr(7)?)))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let t = self.next();
        match t.tok {
            Tok::Num(v) => Ok(Expr::Num(v)),
            Tok::LParen => {
                let e = self.expr(0)?;
                let close = self.next();
                if close.tok != Tok::RParen {
                    return Err(self.err(
                        close.pos,
                        format!(
                            "expected ')' to close the '(' at column {}, found {}",
                            col(self.src, t.pos),
                            describe(&close)
                        ),
                    ));
                }
                Ok(e)
            }
            Tok::Ident(name) => {
                if self.peek().tok == Tok::LParen {
                    self.call(name, t.pos)
                } else if self.fields.contains(&name.as_str()) {
                    Ok(Expr::Field(name))
                } else if self.groups.contains(&name.as_str()) {
                    Ok(Expr::Group(name))
                } else if func(&name).is_some() {
                    Err(self.err(
                        t.pos,
                        format!("'{name}' is a function; call it as {name}(...)"),
                    ))
                } else {
                    let hint = lim_market::error::suggestion(
                        &name,
                        self.fields
                            .iter()
                            .copied()
                            .chain(self.groups.iter().copied())
                            .chain(FUNCS.iter().map(|f| f.name)),
                    );
                    Err(self.err(
                        t.pos,
                        format!(
                            "unknown field '{name}'{hint}; fields are {}; groupings are {}",
                            self.fields.join(", "),
                            self.groups.join(", ")
                        ),
                    ))
                }
            }
            _ => Err(self.err(
                t.pos,
                format!(
                    "expected a number, field or function, found {}",
                    describe(&t)
                ),
            )),
        }
    }

    fn call(&mut self, name: String, pos: usize) -> Result<Expr, ExprError> {
        let Some(f) = func(&name) else {
            let hint = lim_market::error::suggestion(&name, FUNCS.iter().map(|f| f.name));
            return Err(self.err(pos, format!("unknown function '{name}'{hint}")));
        };
        self.next(); // (
        let mut args = Vec::new();
        let mut positions = Vec::new();
        if self.peek().tok != Tok::RParen {
            loop {
                positions.push(self.peek().pos);
                args.push(self.expr(0)?);
                match self.peek().tok {
                    Tok::Comma => {
                        self.next();
                    }
                    Tok::RParen => break,
                    _ => {
                        let t = self.peek().clone();
                        return Err(self.err(
                            t.pos,
                            format!(
                                "expected ',' or ')' in the arguments of {name}, found {}",
                                describe(&t)
                            ),
                        ));
                    }
                }
            }
        }
        self.next(); // )
        let signature = || {
            let parts: Vec<&str> = f
                .args
                .iter()
                .map(|a| match a {
                    Arg::Expr => "x",
                    Arg::Window => "d",
                    Arg::Number => "k",
                    Arg::Group => "group",
                })
                .collect();
            format!("{}({})", f.name, parts.join(", "))
        };
        let optional = takes_min_count(&name);
        if args.len() != f.args.len() && !(optional && args.len() == f.args.len() + 1) {
            let extra = if optional {
                ", then optionally min_count (how many numbers a window needs)"
            } else {
                ""
            };
            return Err(self.err(
                pos,
                format!(
                    "{name} takes {} argument(s), got {}: {}{extra}",
                    f.args.len(),
                    args.len(),
                    signature()
                ),
            ));
        }
        if args.len() == f.args.len() + 1 {
            let window = args.iter().zip(f.args).find_map(|(a, k)| match (a, k) {
                (Expr::Num(d), Arg::Window) => Some(*d),
                _ => None,
            });
            let apos = positions[args.len() - 1];
            match (args.last(), window) {
                (Some(Expr::Num(m)), Some(d)) if *m >= 1.0 && m.fract() == 0.0 && *m <= d => {}
                _ => {
                    return Err(self.err(
                        apos,
                        format!(
                            "the minimum count of {name} must be an integer literal from 1 to its window: how many numbers a window needs (default: all of them), e.g. {}(x, 20, 10)",
                            name
                        ),
                    ));
                }
            }
        }
        for ((a, kind), &apos) in args.iter().zip(f.args).zip(&positions) {
            match (kind, a) {
                (Arg::Window, Expr::Num(d))
                    if *d >= 1.0 && d.fract() == 0.0 && *d <= MAX_WINDOW as f64 => {}
                (Arg::Window, Expr::Neg(_)) => {
                    return Err(self.err(apos, format!("the window of {name} must be a positive number of bars; a negative lag would read the future: {}", signature())));
                }
                (Arg::Window, _) => {
                    return Err(self.err(apos, format!("the window of {name} must be a positive integer literal up to {MAX_WINDOW}, e.g. 20: {}", signature())));
                }
                (Arg::Number, Expr::Num(_)) => {}
                (Arg::Number, Expr::Neg(inner)) if matches!(**inner, Expr::Num(_)) => {}
                (Arg::Number, _) => {
                    return Err(self.err(
                        apos,
                        format!(
                            "argument of {name} must be a number literal: {}",
                            signature()
                        ),
                    ));
                }
                (Arg::Group, Expr::Group(_)) => {}
                (Arg::Group, _) => {
                    return Err(self.err(
                        apos,
                        format!(
                            "{name} groups by one of {}: {}",
                            self.groups.join(", "),
                            signature()
                        ),
                    ));
                }
                (Arg::Expr, Expr::Group(g)) => {
                    return Err(self.err(
                        apos,
                        format!("'{g}' is a grouping, only group_rank and group_demean take one"),
                    ));
                }
                (Arg::Expr, _) => {}
            }
        }
        if name == "ts_quantile"
            && let Some(Expr::Num(q)) = args.get(2)
            && !(0.0..=1.0).contains(q)
        {
            return Err(self.err(
                positions[2],
                format!("the quantile of ts_quantile must be in [0, 1], got {q}"),
            ));
        }
        Ok(Expr::Call(name, args))
    }
}

fn describe(t: &Token) -> String {
    match t.tok {
        Tok::End => "the end of the expression".to_string(),
        _ => format!("'{}'", t.text),
    }
}

fn col(src: &str, pos: usize) -> usize {
    let line_start = src[..pos.min(src.len())].rfind('\n').map_or(0, |i| i + 1);
    src[line_start..pos.min(src.len())].chars().count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &[&str] = &["open", "high", "low", "close", "volume", "vwap", "returns"];

    fn p(s: &str) -> Expr {
        parse(s, F).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn precedence_follows_python() {
        assert_eq!(
            p("-x ** 2".replace('x', "close").as_str()).to_string(),
            "-close ^ 2"
        );
        assert_eq!(p("-close ^ 2"), Expr::Neg(Box::new(p("close ^ 2"))));
        assert_eq!(p("1 - 2 - 3").to_string(), "1 - 2 - 3");
        assert_eq!(p("1 - (2 - 3)").to_string(), "1 - (2 - 3)");
        assert_eq!(p("2 ^ 3 ^ 2"), p("2 ^ (3 ^ 2)"));
        assert_eq!(p("(2 ^ 3) ^ 2").to_string(), "(2 ^ 3) ^ 2");
        assert_eq!(
            p("rank(returns ** 2) * -1").to_string(),
            "rank(returns ^ 2) * -1"
        );
        assert_eq!(
            p("close > open and volume > 0 or returns < 0").to_string(),
            "close > open && volume > 0 || returns < 0"
        );
    }

    #[test]
    fn errors_locate_and_suggest() {
        let e = parse("rank(ts_men(close, 5))", F).unwrap_err().to_string();
        assert_eq!(
            e,
            "line 1, column 6: unknown function 'ts_men' (did you mean 'ts_mean'?)"
        );
        let e = parse("ts_mean(close,\n  -5)", F).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "line 2, column 3: the window of ts_mean must be a positive number of bars"
            ),
            "{e}"
        );
        let e = parse("ts_mean(close, 2.5)", F).unwrap_err().to_string();
        assert!(e.contains("positive integer literal"), "{e}");
        let e = parse("rank(clse)", F).unwrap_err().to_string();
        assert!(
            e.contains("unknown field 'clse' (did you mean 'close'?)"),
            "{e}"
        );
        let e = parse("ts_corr(close, 5)", F).unwrap_err().to_string();
        assert!(
            e.contains("ts_corr takes 3 argument(s), got 2: ts_corr(x, x, d)"),
            "{e}"
        );
        let e = parse("(close + open", F).unwrap_err().to_string();
        assert!(
            e.contains(
                "expected ')' to close the '(' at column 1, found the end of the expression"
            ),
            "{e}"
        );
        let e = parse("close = open", F).unwrap_err().to_string();
        assert!(
            e.contains("unexpected character '=' (use == to compare)"),
            "{e}"
        );
        let deep = format!("{}close{}", "abs(".repeat(60), ")".repeat(60));
        assert!(
            parse(&deep, F)
                .unwrap_err()
                .to_string()
                .contains("deeper than")
        );
    }

    #[test]
    fn warmup_adds_windows() {
        assert_eq!(p("ts_mean(close, 20)").warmup(), 19);
        assert_eq!(p("ts_mean(delay(close, 5), 20)").warmup(), 24);
        assert_eq!(p("rank(close)").warmup(), 0);
    }
}
