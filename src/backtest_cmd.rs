//! `lim backtest`: run strategies on market data and show their metrics by split.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use lim_backtest::metrics::{self, Metrics, Year};
use lim_backtest::spec::{Portfolio, StrategySpec};
use lim_backtest::stats::{self, Deflated, Pbo};
use lim_backtest::{Evaluator, Expr, frame, parse, portfolio, topk};
use lim_market::{AsOf, Field, PanelQuery, Part, SplitSpec, Splits, Timestamp};
use rayon::prelude::*;
use serde::Serialize;

use crate::DataArgs;
use crate::table::{Table, pct};

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// A strategy expression, e.g. 'rank(ts_mean(returns, 20))'.
    #[arg(long, conflicts_with_all = ["batch", "spec"])]
    expr: Option<String>,
    /// A file of strategies, one per line: `name | expression` (or just the expression).
    #[arg(long, conflicts_with = "spec")]
    batch: Option<PathBuf>,
    /// A strategy spec (JSON; see --print-schema), or a JSON array of them.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Print the JSON Schema of strategy specs and exit.
    #[arg(long)]
    print_schema: bool,
    /// Datasets to trade (see `lim data list`).
    #[arg(long = "dataset", default_value = "us_equities_daily_adjusted")]
    datasets: Vec<String>,
    /// Comma-separated symbols (default: all of the datasets).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Names held by the top-k book of --expr and --batch strategies (default: a fifth of the
    /// instruments, at most 50).
    #[arg(long)]
    k: Option<usize>,
    /// Cost in basis points per unit of two-sided turnover, for --expr and --batch strategies.
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
    spec: StrategySpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<(Part, Metrics)>,
    /// Single strategies only: calendar years of the parts shown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    years: Vec<Year>,
    /// Single strategies only: four walk-forward folds of the training part.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    folds: Vec<Metrics>,
    /// Single strategies only: mean rank IC against the return over 1, 5, 10 and 20 bars.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ic_decay: Vec<(usize, f64)>,
    #[serde(skip_serializing_if = "is_zero")]
    infinite_signal_cells: usize,
}

/// A strategy's book and, for a single strategy, its IC by horizon.
type Run = (topk::Book, Vec<(usize, f64)>);

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Report {
    datasets: Vec<String>,
    instruments: usize,
    splits: Vec<Split>,
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

fn read_specs(path: &PathBuf) -> anyhow::Result<Vec<(String, StrategySpec)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read spec file '{}'", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("spec file '{}' is not valid JSON", path.display()))?;
    let list = match value {
        serde_json::Value::Array(v) => v,
        one => vec![one],
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let spec: StrategySpec = serde_json::from_value(v).with_context(|| {
                format!(
                    "spec file '{}', strategy {}: see `lim backtest --print-schema`",
                    path.display(),
                    i + 1
                )
            })?;
            Ok((format!("spec{}", i + 1), spec))
        })
        .collect()
}

pub fn run(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    if args.print_schema {
        println!("{}", serde_json::to_string_pretty(&StrategySpec::schema())?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut specs: Vec<(String, StrategySpec)> = match (&args.expr, &args.batch, &args.spec) {
        (Some(e), None, None) => vec![("expr".to_string(), StrategySpec::new(e.clone()))],
        (None, Some(path), None) => read_batch(path)?
            .into_iter()
            .map(|(n, e)| (n, StrategySpec::new(e)))
            .collect(),
        (None, None, Some(path)) => read_specs(path)?,
        _ => bail!(
            "give a strategy with --expr 'EXPRESSION', a file of them with --batch FILE, or specs with --spec FILE"
        ),
    };
    if specs.is_empty() {
        bail!("no strategies given; write one per line as `name | expression`");
    }
    let catalog = args.data.catalog()?;
    let fields: Vec<Field> = frame::FIELDS.to_vec();
    let mut q = PanelQuery::new(AsOf::LATEST, args.datasets.clone()).fields(fields);
    if let Some(s) = &args.symbols {
        q = q.symbols(s.clone());
    }
    let mut set = catalog.panels(&q)?;
    let frame = frame::take_panels(&mut set);
    let splits = Splits::new(
        &set.times,
        SplitSpec::Fractions {
            train: args.train,
            valid: args.valid,
            embargo: args.embargo,
        },
    )?;
    let periods = set.frequency.periods_per_year(1.0);
    if args.spec.is_none() {
        let k = args.k.unwrap_or((set.instruments.len() / 5).clamp(1, 50));
        for (_, s) in specs.iter_mut() {
            s.portfolio = Portfolio::TopK { k };
            s.costs.bps = args.cost_bps;
        }
    }
    let names = frame.field_names();
    let parsed: Vec<Result<Expr, String>> = specs
        .iter()
        .map(|(_, s)| {
            s.validate()
                .and_then(|()| parse(&s.signal, &names).map_err(|e| e.to_string()))
        })
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
    let single = specs.len() == 1;
    let shown = splits.train.start
        ..parts
            .iter()
            .map(|p| splits.range(*p).end)
            .max()
            .unwrap_or(0);
    let results: Vec<Option<Run>> = parsed
        .par_iter()
        .zip(&specs)
        .map(|(p, (_, spec))| {
            let e = p.as_ref().ok()?;
            let signal = eval.eval(e);
            let book = portfolio::run(spec, &signal, &frame, &target, periods);
            let decay = if single {
                metrics::ic_decay(
                    &signal,
                    &frame.fields["close"],
                    &[1, 5, 10, 20],
                    shown.clone(),
                )
            } else {
                Vec::new()
            };
            Some((book, decay))
        })
        .collect();
    let strategies: Vec<Outcome> = specs
        .iter()
        .zip(&parsed)
        .zip(&results)
        .map(|(((name, spec), p), r)| {
            let book = r.as_ref().map(|(b, _)| b);
            Outcome {
                name: name.clone(),
                spec: spec.clone(),
                error: p.as_ref().err().cloned(),
                metrics: book
                    .map(|b| {
                        parts
                            .iter()
                            .map(|&pt| (pt, Metrics::of(b, splits.range(pt), periods)))
                            .collect()
                    })
                    .unwrap_or_default(),
                years: book
                    .filter(|_| single)
                    .map(|b| metrics::per_year(b, &set.times, shown.clone(), periods))
                    .unwrap_or_default(),
                folds: book
                    .filter(|_| single)
                    .map(|b| {
                        metrics::walk_forward(b, splits.train.clone(), 4, periods)
                            .into_iter()
                            .map(|(_, m)| m)
                            .collect()
                    })
                    .unwrap_or_default(),
                ic_decay: r.as_ref().map(|(_, d)| d.clone()).unwrap_or_default(),
                infinite_signal_cells: book.map_or(0, |b| b.nonfinite_signal_cells),
            }
        })
        .collect();
    let books: Vec<Option<&topk::Book>> =
        results.iter().map(|r| r.as_ref().map(|(b, _)| b)).collect();
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
    books: &[Option<&topk::Book>],
    splits: &Splits,
) -> Option<MultipleTesting> {
    let valid = splits.range(Part::Validation);
    let runs: Vec<(&Outcome, Vec<f64>)> = outcomes
        .iter()
        .zip(books)
        .filter_map(|(o, b)| {
            b.map(|b| {
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

fn describe(spec: &StrategySpec) -> String {
    let book = match &spec.portfolio {
        Portfolio::TopK { k } => format!("top-{k} equal weight"),
        Portfolio::QuantileLongShort { quantile } => {
            format!("long/short the top/bottom {:.0}%", quantile * 100.0)
        }
        Portfolio::Proportional => "signal-proportional, dollar-neutral".to_string(),
        Portfolio::SignThreshold {
            threshold,
            target_vol,
            ..
        } => {
            format!(
                "sign beyond ±{threshold}, {:.0}% vol target",
                target_vol * 100.0
            )
        }
    };
    format!(
        "{book}, {} bar(s) of lag, rebalanced every {} bar(s), {} bps per unit turnover",
        spec.execution_lag,
        spec.rebalance_every,
        spec.costs.bps + spec.costs.slippage_bps
    )
}

fn print_report(r: &Report, freq: lim_market::Frequency) {
    println!("{} instruments of {}", r.instruments, r.datasets.join(", "));
    if let Some(s) = r.strategies.first() {
        println!("book: {}", describe(&s.spec));
    }
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
        "strategy", "part", "ann.ret", "vol", "sharpe", "sortino", "max.dd", "turnover", "hit",
        "rankIC", "ICIR",
    ]);
    for s in &r.strategies {
        for (p, m) in &s.metrics {
            t.row(vec![
                s.name.clone(),
                format!("{p:?}").to_lowercase(),
                pct(m.ann_return),
                pct(m.ann_vol),
                format!("{:.2}", m.sharpe),
                format!("{:.2}", m.sortino),
                pct(m.max_dd),
                format!("{:.2}", m.turnover),
                pct(m.hit_rate),
                format!("{:.4}", m.rank_ic),
                format!("{:.3}", m.icir),
            ]);
        }
    }
    print!("{}", t.render());
    if let Some(s) = r
        .strategies
        .first()
        .filter(|s| r.strategies.len() == 1 && !s.years.is_empty())
    {
        let line: Vec<String> = s
            .years
            .iter()
            .map(|y| format!("{} {}", y.year, pct(y.ret)))
            .collect();
        println!("by year: {}", line.join(", "));
        let folds: Vec<String> = s.folds.iter().map(|m| format!("{:.2}", m.sharpe)).collect();
        println!(
            "training walk-forward, Sharpe by quarter of the period: {}",
            folds.join(", ")
        );
        let decay: Vec<String> = s
            .ic_decay
            .iter()
            .map(|(h, ic)| format!("{h} bar(s) {ic:.4}"))
            .collect();
        println!("rank IC by horizon: {}", decay.join(", "));
    }
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
