//! `lim backtest`: run strategies on market data and show their metrics by split.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use lim_backtest::stats::{self, Deflated, Pbo};
use lim_backtest::topk::{self, TopK};
use lim_backtest::{Evaluator, Expr, RefMetrics, frame, parse};
use lim_market::{AsOf, Field, PanelQuery, Part, SplitSpec, Splits, Timestamp};
use rayon::prelude::*;
use serde::Serialize;

use crate::DataArgs;
use crate::table::{Table, pct};

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// A strategy expression, e.g. 'rank(ts_mean(returns, 20))'.
    #[arg(long, conflicts_with = "batch")]
    expr: Option<String>,
    /// A file of strategies, one per line: `name | expression` (or just the expression).
    #[arg(long)]
    batch: Option<PathBuf>,
    /// Datasets to trade (see `lim data list`).
    #[arg(long = "dataset", default_value = "us_equities_daily_adjusted")]
    datasets: Vec<String>,
    /// Comma-separated symbols (default: all of the datasets).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Names held by the top-k book (default: a fifth of the instruments, at most 50).
    #[arg(long)]
    k: Option<usize>,
    /// Cost in basis points per unit of two-sided turnover.
    #[arg(long, default_value_t = 10.0)]
    cost_bps: f64,
    /// Share of bars for training; validation gets --valid, the sealed test the rest.
    #[arg(long, default_value_t = 0.6)]
    train: f64,
    /// Share of bars for validation.
    #[arg(long, default_value_t = 0.2)]
    valid: f64,
    /// Bars dropped between parts.
    #[arg(long, default_value_t = 5)]
    embargo: usize,
    /// Also show the sealed test part. Look at it once, at the end of a search: every look
    /// makes it less of a test.
    #[arg(long)]
    unseal_test: bool,
    #[command(flatten)]
    data: DataArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Split {
    part: Part,
    first: Timestamp,
    last: Timestamp,
    bars: usize,
}

#[derive(Serialize)]
struct Outcome {
    name: String,
    expr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<(Part, RefMetrics)>,
    #[serde(skip_serializing_if = "is_zero")]
    infinite_signal_cells: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Report {
    datasets: Vec<String>,
    instruments: usize,
    splits: Vec<Split>,
    book: TopK,
    strategies: Vec<Outcome>,
    /// Over every strategy that ran, on the validation part.
    #[serde(skip_serializing_if = "Option::is_none")]
    multiple_testing: Option<MultipleTesting>,
}

#[derive(Serialize)]
struct MultipleTesting {
    trials: usize,
    best: String,
    best_validation_sharpe: f64,
    deflated: Deflated,
    #[serde(skip_serializing_if = "Option::is_none")]
    pbo: Option<PboSummary>,
}

#[derive(Serialize)]
struct PboSummary {
    pbo: f64,
    splits: usize,
    blocks: usize,
}

fn read_batch(path: &PathBuf) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read batch file '{}'", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| match l.split_once('|') {
            Some((n, e)) => (n.trim().to_string(), e.trim().to_string()),
            None => (format!("line{}", i + 1), l.trim().to_string()),
        })
        .collect())
}

pub fn run(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    let items = match (&args.expr, &args.batch) {
        (Some(e), None) => vec![("expr".to_string(), e.clone())],
        (None, Some(path)) => read_batch(path)?,
        _ => bail!("give a strategy with --expr 'EXPRESSION' or a file of them with --batch FILE"),
    };
    if items.is_empty() {
        bail!("the batch file holds no strategies; write one per line as `name | expression`");
    }
    let catalog = args.data.catalog()?;
    let fields: Vec<Field> = frame::FIELDS.to_vec();
    let mut q = PanelQuery::new(AsOf::LATEST, args.datasets.clone()).fields(fields);
    if let Some(s) = &args.symbols {
        q = q.symbols(s.clone());
    }
    let set = catalog.panels(&q)?;
    let frame = frame::from_panels(&set);
    let splits = Splits::new(
        &set.times,
        SplitSpec::Fractions {
            train: args.train,
            valid: args.valid,
            embargo: args.embargo,
        },
    )?;
    let periods = set.frequency.periods_per_year(1.0);
    let k = args.k.unwrap_or((set.instruments.len() / 5).clamp(1, 50));
    let cfg = TopK {
        k,
        cost: args.cost_bps / 10_000.0,
        periods_per_year: periods,
    };
    let names = frame.field_names();
    let parsed: Vec<Result<Expr, String>> = items
        .iter()
        .map(|(_, e)| parse(e, &names).map_err(|e| e.to_string()))
        .collect();
    let good: Vec<Expr> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let eval = Evaluator::new(&frame, &good);
    let target = topk::Target::new(&frame.fields["close"]);
    let mut parts = vec![Part::Train, Part::Validation];
    if args.unseal_test {
        parts.push(Part::Test);
    }
    let books: Vec<Option<topk::Book>> = parsed
        .par_iter()
        .map(|p| {
            p.as_ref()
                .ok()
                .map(|e| topk::run(&eval.eval(e), &target, &cfg))
        })
        .collect();
    let strategies: Vec<Outcome> = items
        .iter()
        .zip(&parsed)
        .zip(&books)
        .map(|(((name, expr), p), book)| Outcome {
            name: name.clone(),
            expr: expr.clone(),
            error: p.as_ref().err().cloned(),
            metrics: book
                .as_ref()
                .map(|b| {
                    parts
                        .iter()
                        .map(|&pt| (pt, b.metrics(splits.range(pt), periods)))
                        .collect()
                })
                .unwrap_or_default(),
            infinite_signal_cells: book.as_ref().map_or(0, |b| b.nonfinite_signal_cells),
        })
        .collect();
    let multiple_testing = multiple_testing(&strategies, &books, &splits);
    let report = Report {
        datasets: args.datasets.clone(),
        instruments: set.instruments.len(),
        splits: parts
            .iter()
            .map(|&p| {
                let r = splits.range(p);
                Split {
                    part: p,
                    first: set.times[r.start],
                    last: set.times[r.end - 1],
                    bars: r.len(),
                }
            })
            .collect(),
        book: cfg,
        strategies,
        multiple_testing,
    };
    let failed = report
        .strategies
        .iter()
        .filter(|s| s.error.is_some())
        .count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, set.frequency);
    }
    Ok(if failed == report.strategies.len() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The deflated Sharpe ratio of the best validation Sharpe given every trial, and PBO over the
/// trials' validation returns.
fn multiple_testing(
    outcomes: &[Outcome],
    books: &[Option<topk::Book>],
    splits: &Splits,
) -> Option<MultipleTesting> {
    let valid = splits.range(Part::Validation);
    let runs: Vec<(&Outcome, Vec<f64>)> = outcomes
        .iter()
        .zip(books)
        .filter_map(|(o, b)| {
            b.as_ref().map(|b| {
                (
                    o,
                    b.net[valid.clone()]
                        .iter()
                        .map(|v| if v.is_nan() { 0.0 } else { *v })
                        .collect(),
                )
            })
        })
        .collect();
    if runs.len() < 2 {
        return None;
    }
    let per_bar_sharpe = |r: &[f64]| {
        let n = r.len() as f64;
        let m = r.iter().sum::<f64>() / n;
        m / (r.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    let srs: Vec<f64> = runs.iter().map(|(_, r)| per_bar_sharpe(r)).collect();
    let finite: Vec<f64> = srs.iter().copied().filter(|v| v.is_finite()).collect();
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    let variance =
        finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (finite.len() as f64 - 1.0);
    let (best, &best_sr) = srs
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let (skew, kurt) = stats::moments(&runs[best].1);
    let deflated = stats::deflated_sharpe(
        best_sr,
        runs[best].1.len(),
        skew,
        kurt,
        runs.len(),
        variance,
    );
    let returns: Vec<Vec<f64>> = runs.iter().map(|(_, r)| r.clone()).collect();
    let blocks = 16usize;
    let pbo = stats::pbo(&returns, blocks).map(|Pbo { pbo, splits, .. }| PboSummary {
        pbo,
        splits,
        blocks,
    });
    Some(MultipleTesting {
        trials: runs.len(),
        best: runs[best].0.name.clone(),
        best_validation_sharpe: best_sr * 252f64.sqrt(),
        deflated,
        pbo,
    })
}

fn print_report(r: &Report, freq: lim_market::Frequency) {
    println!(
        "{} instruments of {}; top-{} equal weight, one bar of lag, {} bps per unit turnover",
        r.instruments,
        r.datasets.join(", "),
        r.book.k,
        r.book.cost * 10_000.0
    );
    for s in &r.splits {
        println!(
            "  {:<10} {} → {} ({} bars)",
            format!("{:?}", s.part).to_lowercase(),
            s.first.display(freq),
            s.last.display(freq),
            s.bars
        );
    }
    if !r.splits.iter().any(|s| s.part == Part::Test) {
        println!("  test       sealed (--unseal-test shows it; look once, at the end)");
    }
    let mut t = Table::new(&[
        "strategy", "part", "ann.ret", "sharpe", "max.dd", "turnover", "IC", "ICIR",
    ]);
    for s in &r.strategies {
        for (p, m) in &s.metrics {
            t.row(vec![
                s.name.clone(),
                format!("{p:?}").to_lowercase(),
                pct(m.ann_return),
                format!("{:.2}", m.sharpe),
                pct(m.max_dd),
                format!("{:.2}", m.turnover),
                format!("{:.4}", m.ic_mean),
                format!("{:.3}", m.ic_ir),
            ]);
        }
    }
    print!("{}", t.render());
    for s in &r.strategies {
        if let Some(e) = &s.error {
            println!("error in {}: {e}", s.name);
        }
    }
    for s in r.strategies.iter().filter(|s| s.infinite_signal_cells > 0) {
        println!(
            "note: {} produced {} infinite signal values, treated as missing",
            s.name, s.infinite_signal_cells
        );
    }
    if let Some(m) = &r.multiple_testing {
        println!(
            "multiple testing over {} trials: best validation Sharpe {:.2} ({}), deflated Sharpe ratio {:.3} (luck alone would give {:.2})",
            m.trials,
            m.best_validation_sharpe,
            m.best,
            m.deflated.dsr,
            m.deflated.expected_max * 252f64.sqrt()
        );
        if let Some(p) = &m.pbo {
            println!(
                "probability of backtest overfitting (CSCV, {} blocks, {} splits): {:.2}",
                p.blocks, p.splits, p.pbo
            );
        }
    }
}
