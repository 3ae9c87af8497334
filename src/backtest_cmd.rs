//! `lim backtest`: run strategies on market data and show their metrics by split.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use lim_backtest::baseline;
use lim_backtest::metrics::CoMove;
use lim_backtest::session::{
    MIN_HOLDING_CHANGES_PER_YEAR, MultipleTesting, SharpeTest, SplitInfo, StrategyResult,
};
use lim_backtest::spec::{Portfolio, StrategySpec};
use lim_market::Part;
use lim_tools::ChooseUniverseArgs;
use serde::Serialize;
use std::io::IsTerminal as _;

use crate::DataArgs;
use crate::cluster_args::{self, ClusterArgs, Executor};
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
    /// Datasets to trade (see `lim data list`); several: --dataset a,b or --dataset a --dataset b.
    #[arg(
        long = "dataset",
        default_value = "us_equities_daily_adjusted",
        value_delimiter = ','
    )]
    datasets: Vec<String>,
    /// Comma-separated symbols (default: all of the datasets).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Names held by the top-k book of --expr and --batch strategies (default: a fifth of the
    /// instruments, at most 50; fewer than the instruments).
    #[arg(long, allow_negative_numbers = true, value_parser = crate::research_cmd::at_least_one::<u64>)]
    k: Option<u64>,
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
    #[command(flatten)]
    period: crate::research_cmd::PeriodArgs,
    /// Also show the sealed test part. Look at it once, at the end of a search: every look
    /// makes it less of a test.
    #[arg(long)]
    unseal_test: bool,
    /// A prediction panel written by `lim foundation predict`, usable in expressions under
    /// its name (repeatable). Values exist only after the model's data cutoff.
    #[arg(long = "predictions", value_name = "NAME")]
    predictions: Vec<String>,
    /// Models directory holding `predictions/` (default as for `lim foundation`).
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Directory the cluster's nodes share: inputs, outputs, logs and each batch's ledger. The
    /// same command run again (after a crash, say) attaches to its jobs still in the queue and
    /// reuses finished outputs.
    #[arg(long, value_name = "DIR", default_value = "lim-work")]
    work_dir: PathBuf,
    /// Wall-time limit for the cluster's work, e.g. 90s, 45m: what is still queued or running
    /// then is cancelled.
    #[arg(long, value_parser = crate::research_cmd::parse_minutes)]
    deadline: Option<f64>,
    /// Also write a self-contained HTML tearsheet (equity, drawdown, rolling Sharpe, rank IC,
    /// returns by year and month, metrics by part, beside the baselines) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Also write the metrics of every strategy and baseline by part, and their returns bar by
    /// bar, to DIR (`metrics` and `returns`, see --format).
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// File format of --export.
    #[arg(long, value_enum, default_value_t = crate::research_cmd::TableFormat::Parquet)]
    format: crate::research_cmd::TableFormat,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    datasets: Vec<String>,
    instruments: usize,
    /// Instruments left out as another's series (see `lim_market::same_series`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    same_series: Vec<lim_market::SameSeries>,
    splits: Vec<SplitInfo>,
    strategies: Vec<StrategyResult>,
    /// Over every strategy that ran, on the validation part.
    #[serde(skip_serializing_if = "Option::is_none")]
    multiple_testing: Option<MultipleTesting>,
    /// Per strategy, its validation returns against the always-long book of its construction.
    always_long: Vec<CoMove>,
    /// Baselines built like the first strategy, on the same parts (the first is always long).
    baselines: Vec<StrategyResult>,
    /// Per strategy and part shown, its Sharpe ratio against always long's (the first
    /// baseline), tested.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    versus_always_long: Vec<SharpeTest>,
}

/// One strategy of a batch file: its name, expression, and where the expression starts in the
/// file (line and column, from 1).
struct BatchLine {
    name: String,
    expr: String,
    line: usize,
    column: usize,
}

fn read_batch(path: &PathBuf) -> anyhow::Result<Vec<BatchLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read batch file '{}'", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            let (name, rest, at) = match l.split_once('|') {
                Some((n, e)) => (n.trim().to_string(), e, n.len() + 1),
                None => (format!("line{}", i + 1), l, 0),
            };
            let lead = rest.len() - rest.trim_start().len();
            BatchLine {
                name,
                expr: rest.trim().to_string(),
                line: i + 1,
                column: l[..at + lead].chars().count() + 1,
            }
        })
        .collect())
}

/// A batch strategy's error placed in its file: the expression parser counts from the start of
/// the expression (`line 1, column N: ...`), which becomes the file's line and column.
fn place_in_file(file: &std::path::Path, at: &BatchLine, error: &str) -> String {
    let file = file.display();
    match error
        .strip_prefix("line 1, column ")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(col, msg)| Some((col.trim().parse::<usize>().ok()?, msg)))
    {
        Some((col, msg)) => format!(
            "batch file '{file}' line {}, column {}:{msg}",
            at.line,
            at.column + col - 1
        ),
        None => format!("batch file '{file}' line {}: {error}", at.line),
    }
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
    let mut batch = Vec::new();
    let mut specs: Vec<(String, StrategySpec)> = match (&args.expr, &args.batch, &args.spec) {
        (Some(e), None, None) => vec![("expr".to_string(), StrategySpec::new(e.clone()))],
        (None, Some(path), None) => {
            batch = read_batch(path)?;
            batch
                .iter()
                .map(|b| (b.name.clone(), StrategySpec::new(b.expr.clone())))
                .collect()
        }
        (None, None, Some(path)) => read_specs(path)?,
        _ => bail!(
            "give a strategy with --expr 'EXPRESSION', a file of them with --batch FILE, or specs with --spec FILE"
        ),
    };
    if specs.is_empty() {
        bail!("no strategies given; write one per line as `name | expression`");
    }
    let catalog = args.data.catalog()?;
    let universe = ChooseUniverseArgs {
        datasets: args.datasets.clone(),
        symbols: args.symbols.clone(),
        frequency: None,
        train: args.train,
        valid: args.valid,
        embargo: args.embargo,
        as_of: args.period.as_of.clone(),
        earlier: args.period.earlier,
    };
    let (mut session, same_series) =
        lim_tools::load_universe(&catalog, &universe, None).map_err(|(_, m)| anyhow::anyhow!(m))?;
    let frequency = session.frequency();
    if args.cluster.executor == Executor::Slurm && !args.predictions.is_empty() {
        bail!(
            "--predictions is not available with --executor slurm yet (the workers would need the panels); run these strategies with --executor local"
        );
    }
    let dir = crate::foundation_cmd::models_dir(args.models_dir.clone()).join("predictions");
    for name in &args.predictions {
        let panel =
            lim_foundation::predict::PredictionPanel::read(&dir, name).with_context(|| {
                format!("prediction panel '{name}' (list them with `lim foundation list`)")
            })?;
        let (t, times) = (session.times().len(), session.times().to_vec());
        let mut values = vec![f64::NAN; t * session.symbols().len()];
        let mut matched = 0;
        for (c, sym) in session.symbols().iter().enumerate() {
            let Some(pc) = panel.symbols.iter().position(|s| s == sym) else {
                continue;
            };
            matched += 1;
            for (pr, pt) in panel.times.iter().enumerate() {
                if let Ok(r) = times.binary_search(pt) {
                    let v = panel.get(pr, pc);
                    if v.is_finite() {
                        values[c * t + r] = f64::from(v);
                    }
                }
            }
        }
        if matched == 0 {
            bail!(
                "prediction panel '{name}' covers none of the instruments of {} (it was made for '{}'); pass --dataset {}",
                args.datasets.join(", "),
                panel.info.dataset,
                panel.info.dataset
            );
        }
        session = session.with_field(name, values)?;
    }
    if args.spec.is_none() {
        let n = session.instruments();
        let k = match args.k {
            // Holding every instrument is the always-long baseline, not a choice.
            Some(k) if k > n as u64 || (k == n as u64 && n > 1) => bail!(
                "--k {k}: a top-k book must hold fewer names than the {n} instruments of {} (holding all of them is the always-long baseline); give --k of at most {}",
                args.datasets.join(", "),
                n.saturating_sub(1).max(1)
            ),
            Some(k) => k as usize,
            None => (n / 5).clamp(1, 50),
        };
        for (_, s) in specs.iter_mut() {
            s.portfolio = Portfolio::TopK { k };
            s.costs.bps = args.cost_bps;
        }
    }
    let mut parts = vec![Part::Train, Part::Validation];
    if args.unseal_test {
        parts.push(Part::Test);
    }
    let detail = specs.len() == 1;
    let mut strategies = match args.cluster.executor {
        Executor::Local => session.run(&specs, &parts, detail),
        Executor::Slurm => on_slurm(&args, &universe, &specs, &parts, detail)?,
    };
    // Results from the cluster come back with their books, so the check is the same here.
    session.mark_checks(&mut strategies);
    if let Some(file) = &args.batch {
        for (s, at) in strategies.iter_mut().zip(&batch) {
            if let Some(e) = &s.error {
                s.error = Some(place_in_file(file, at, e));
            }
        }
    }
    let baselines = specs
        .first()
        .map(|(_, s)| {
            session.run(
                &baseline::baselines(s, session.bars_per_day()),
                &parts,
                false,
            )
        })
        .unwrap_or_default();
    let report = Report {
        versus_always_long: session.versus_always_long(&strategies, &parts),
        datasets: args.datasets.clone(),
        instruments: session.instruments(),
        same_series,
        splits: session.split_info(&parts),
        multiple_testing: session.multiple_testing(&strategies),
        always_long: session.always_long_co_move(&strategies, Part::Validation),
        baselines,
        strategies,
    };
    if let Some(path) = &args.html {
        write_html(path, &report, &session, &parts)?;
        eprintln!("tearsheet: {}", path.display());
    }
    if let Some(dir) = &args.export {
        for path in export(dir, args.format.into(), &report, &session, &parts)? {
            eprintln!("table: {}", path.display());
        }
    }
    let failed = report
        .strategies
        .iter()
        .filter(|s| s.error.is_some())
        .count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if failed == report.strategies.len() {
        // Nothing ran: the tables would only show the baselines; the errors are the answer.
        for s in &report.strategies {
            if let Some(e) = &s.error {
                eprintln!("error in {}: {e}", s.name);
            }
        }
    } else {
        print_report(&report, frequency);
    }
    // A strategy that could not run fails the command, after whatever did run is shown.
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `specs` as a Slurm array job through the work directory and returns their results in
/// order.
fn on_slurm(
    args: &BacktestArgs,
    universe: &ChooseUniverseArgs,
    specs: &[(String, StrategySpec)],
    parts: &[Part],
    detail: bool,
) -> anyhow::Result<Vec<StrategyResult>> {
    let deadline = args
        .deadline
        .map(|m| std::time::SystemTime::now() + std::time::Duration::from_secs_f64(m * 60.0));
    let stop = cluster_args::stop_when(crate::interrupt_flag(), deadline, "the deadline passed");
    let tty = std::io::stderr().is_terminal();
    let slurm = cluster_args::slurm_backtests(
        &args.cluster,
        &args.data,
        args.data.data_dir().as_deref(),
        &args.work_dir,
        stop,
        tty,
    )?;
    let results = slurm.run_specs(universe, specs, parts, detail, false);
    if tty {
        eprintln!();
    }
    Ok(results?)
}

/// Writes `report`'s metrics and returns tables to `dir`.
fn export(
    dir: &Path,
    format: lim_market::parquet::Format,
    report: &Report,
    session: &lim_backtest::session::Session,
    parts: &[Part],
) -> anyhow::Result<Vec<PathBuf>> {
    use lim_pipelines::research::export;
    let rows = part_rows(report);
    let curves =
        lim_pipelines::research::curves_of(session, parts, &report.strategies, &report.baselines);
    let tables = [
        ("metrics", export::metrics_table(&rows)),
        ("returns", export::returns_table(&curves)),
    ];
    export::write_tables(dir, &tables, format)
        .with_context(|| format!("cannot export tables to '{}'", dir.display()))
}

/// Every strategy's, then every baseline's, metrics by part, each with what it is.
fn part_rows(
    report: &Report,
) -> Vec<(
    lim_pipelines::research::export::RowKind,
    lim_pipelines::research::PartRow,
)> {
    use lim_pipelines::research::export::RowKind;
    let tagged = report
        .strategies
        .iter()
        .map(|r| (RowKind::Strategy, r))
        .chain(report.baselines.iter().map(|r| (RowKind::Baseline, r)));
    tagged
        .flat_map(|(kind, r)| {
            r.metrics.iter().map(move |(part, m)| {
                (
                    kind,
                    lim_pipelines::research::PartRow {
                        name: r.name.clone(),
                        signal: r.spec.signal.clone(),
                        part: *part,
                        metrics: *m,
                    },
                )
            })
        })
        .collect()
}

/// The tearsheet of `report` (see `lim_pipelines::research::backtest_tearsheet`).
fn write_html(
    path: &Path,
    report: &Report,
    session: &lim_backtest::session::Session,
    parts: &[Part],
) -> anyhow::Result<()> {
    use lim_pipelines::research::{backtest_tearsheet, curves_of};
    let mut facts = vec![
        ("datasets".to_string(), report.datasets.join(", ")),
        ("instruments".to_string(), report.instruments.to_string()),
    ];
    if let Some(s) = report.strategies.first() {
        facts.push(("book".to_string(), describe(&s.spec)));
    }
    for s in &report.splits {
        facts.push((
            format!("{:?}", s.part).to_lowercase(),
            format!("{} to {} ({} bars)", s.first, s.last, s.bars),
        ));
    }
    if !parts.contains(&Part::Test) {
        facts.push((
            "test".to_string(),
            "sealed (--unseal-test shows it; look once, at the end)".to_string(),
        ));
    }
    if let Some(m) = &report.multiple_testing {
        facts.push((
            "multiple testing".to_string(),
            format!(
                "{} strategies; deflated Sharpe ratio of the best ({}) {:.2}; PBO {}",
                m.trials,
                m.best,
                m.deflated.dsr,
                m.pbo
                    .map_or("not computable".to_string(), |p| format!("{p:.2}"))
            ),
        ));
    }
    let rows: Vec<_> = part_rows(report).into_iter().map(|(_, r)| r).collect();
    let curves = curves_of(session, parts, &report.strategies, &report.baselines);
    let html = backtest_tearsheet(&facts, &rows, &curves, session.periods());
    std::fs::write(path, html)
        .with_context(|| format!("cannot write the tearsheet to '{}'", path.display()))
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
            vol_forecast,
            ..
        } => {
            format!(
                "sign beyond ±{threshold}, {:.0}% vol target{}",
                target_vol * 100.0,
                vol_forecast
                    .as_ref()
                    .map_or(String::new(), |f| format!(" (sized by the forecast '{f}')"))
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
    for same in &r.same_series {
        println!("  {same}");
    }
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
    ]);
    // Qlib's signal columns, apart so both tables fit the terminal.
    let mut ic = Table::new(&["strategy", "part", "IC", "ICIR", "rankIC", "rankICIR"]);
    for s in &r.strategies {
        for (p, m) in &s.metrics {
            let part = format!("{p:?}").to_lowercase();
            t.row(vec![
                s.name.clone(),
                part.clone(),
                pct(m.ann_return),
                pct(m.ann_vol),
                format!("{:.2}", m.sharpe),
                format!("{:.2}", m.sortino),
                pct(m.max_dd),
                format!("{:.2}", m.turnover),
                pct(m.hit_rate),
            ]);
            ic.row(vec![
                s.name.clone(),
                part,
                format!("{:.4}", m.ic),
                format!("{:.3}", m.icir),
                format!("{:.4}", m.rank_ic),
                format!("{:.3}", m.rank_icir),
            ]);
        }
    }
    print!("{}", t.render());
    print!("{}", ic.render());
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
    if !r.baselines.is_empty() {
        println!("baselines, built like the first strategy (same bars, universe, lag and costs):");
        let mut t = Table::new(&[
            "baseline", "part", "ann.ret", "sharpe", "max.dd", "turnover",
        ]);
        for b in &r.baselines {
            for (p, m) in &b.metrics {
                t.row(vec![
                    b.name.clone(),
                    format!("{p:?}").to_lowercase(),
                    pct(m.ann_return),
                    format!("{:.2}", m.sharpe),
                    pct(m.max_dd),
                    format!("{:.2}", m.turnover),
                ]);
            }
        }
        print!("{}", t.render());
    }
    if let Some(base) = r
        .baselines
        .first()
        .filter(|_| !r.versus_always_long.is_empty())
    {
        println!(
            "Sharpe over {}'s, and its z (beyond ±1.96 unlikely to be chance):",
            base.name
        );
        for s in &r.strategies {
            let parts: Vec<String> = r
                .versus_always_long
                .iter()
                .filter(|v| v.strategy == s.name)
                .map(|v| {
                    format!(
                        "{} {:+.2} (z {:.1})",
                        format!("{:?}", v.part).to_lowercase(),
                        v.sharpe_difference,
                        v.z
                    )
                })
                .collect();
            if !parts.is_empty() {
                println!("  {}: {}", s.name, parts.join(", "));
            }
        }
    }
    // A long-only top-k book moves with the market by construction; others need not.
    for (s, c) in r.strategies.iter().zip(&r.always_long) {
        if c.correlation.abs() > 0.9 && !matches!(s.spec.portfolio, Portfolio::TopK { .. }) {
            println!(
                "degenerate: {}'s validation returns move with the always-long book of its construction (correlation {:.2}, beta {:.2}): beta, not a signal",
                s.name, c.correlation, c.beta
            );
        }
    }
    for s in &r.strategies {
        if let Some(c) = s
            .holding_changes_per_year
            .filter(|c| *c < MIN_HOLDING_CHANGES_PER_YEAR)
        {
            println!(
                "degenerate: {} is a fixed allocation (its names changed {c:.1} times a year), not a signal",
                s.name
            );
        }
    }
    for s in r.strategies.iter().filter(|s| s.level_dependent) {
        println!(
            "looks ahead: {}'s positions depend on the instruments' price levels (multiplying an instrument's prices by a constant changes them); a back-adjusted price level is set by later splits, dividends and rolls: use returns or ratios of prices, and no dollar-volume universe filter (min_dollar_volume, top_liquid) on adjusted prices",
            s.name
        );
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
            m.luck_sharpe()
        );
        if let Some(p) = m.pbo {
            println!(
                "probability of backtest overfitting (CSCV, 16 blocks, {} splits): {p:.2}",
                m.pbo_splits
            );
        }
    }
}
