//! `lim data ...`: list, show, check and query datasets.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use lim_market::stats::ReturnStats;
use lim_market::{
    AsOf, AssetClass, DatasetMeta, Field, Frequency, MarketData, PanelQuery, Progress,
    ProgressSink, RollPolicy, Timestamp,
};
use serde::Serialize;

use crate::DataArgs;
use crate::table::{Table, pct, thousands};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List the datasets of a data directory: frequency, symbols, rows, date range.
    List {
        #[command(flatten)]
        data: DataArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dataset: per-symbol range, rows, gaps, detected rolls and return statistics.
    Show(ShowArgs),
    /// Validate a data file and report every problem (up to a cap). Exit code 1 if any.
    Check {
        /// The file to check (`.csv`, `.csv.gz` or `.parquet`).
        file: PathBuf,
        /// Report at most this many problems.
        #[arg(long, default_value_t = 50)]
        max_problems: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build aligned panels and print their shape and last rows.
    Panel(PanelArgs),
    /// Rewrite a data file as Parquet or CSV (by --out's extension), every row checked as a
    /// load checks it; the copy loads to the same panels bit for bit.
    Convert {
        /// The file to convert (`.csv`, `.csv.gz` or `.parquet`).
        file: PathBuf,
        /// The file to write, NAME.parquet or NAME.csv (default: the dataset's name with
        /// `.parquet`, or `.csv` for a Parquet input, in the current directory). Never
        /// overwritten.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RollArg {
    /// Raw spliced prices; roll jumps stay in the returns.
    None,
    /// Detect rolls, back-adjust prices, roll-clean returns.
    BackAdjust,
}

impl From<RollArg> for RollPolicy {
    fn from(r: RollArg) -> RollPolicy {
        match r {
            RollArg::None => RollPolicy::None,
            RollArg::BackAdjust => RollPolicy::BackAdjust,
        }
    }
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Dataset name (see `lim data list`).
    dataset: String,
    /// Show one symbol in detail, with its roll dates.
    #[arg(long)]
    symbol: Option<String>,
    /// Only data that had closed by this time: YYYY-MM-DD (end of day) or YYYY-MM-DDTHH:MM:SSZ.
    #[arg(long, value_parser = parse_as_of)]
    as_of: Option<AsOf>,
    /// Futures roll treatment.
    #[arg(long, value_enum, default_value = "back-adjust")]
    roll: RollArg,
    #[command(flatten)]
    data: DataArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PanelArgs {
    /// Dataset names.
    #[arg(required = true)]
    datasets: Vec<String>,
    /// Comma-separated symbols (default: all).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Comma-separated fields: open, high, low, close, volume, open_interest, returns,
    /// log_returns, vwap, dollar_volume.
    #[arg(long, value_delimiter = ',', default_value = "close")]
    fields: Vec<String>,
    /// Resample to a coarser frequency: 1h, 1d, 15min, ...
    #[arg(long, value_parser = parse_frequency)]
    frequency: Option<Frequency>,
    /// First bar (YYYY-MM-DD or date-time).
    #[arg(long, value_parser = parse_ts)]
    start: Option<Timestamp>,
    /// Last bar (YYYY-MM-DD or date-time).
    #[arg(long, value_parser = parse_ts)]
    end: Option<Timestamp>,
    /// Only data that had closed by this time (default: all data).
    #[arg(long, value_parser = parse_as_of)]
    as_of: Option<AsOf>,
    /// Futures roll treatment.
    #[arg(long, value_enum, default_value = "back-adjust")]
    roll: RollArg,
    /// Rows to print from the end.
    #[arg(long, default_value_t = 5)]
    tail: usize,
    #[command(flatten)]
    data: DataArgs,
    /// Print JSON (every row) instead of a preview.
    #[arg(long)]
    json: bool,
}

fn parse_as_of(s: &str) -> Result<AsOf, String> {
    AsOf::parse(s)
        .ok_or_else(|| format!("'{s}' is not a time, expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"))
}

fn parse_ts(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s)
        .ok_or_else(|| format!("'{s}' is not a time, expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"))
}

fn parse_frequency(s: &str) -> Result<Frequency, String> {
    Frequency::parse(s)
        .ok_or_else(|| format!("'{s}' is not a frequency, expected e.g. 5min, 1h, 1d"))
}

/// Shows parsing progress on stderr when it is a terminal.
pub fn progress_sink() -> ProgressSink {
    let tty = std::io::stderr().is_terminal();
    let last = Arc::new(AtomicU64::new(u64::MAX));
    Arc::new(move |p: &Progress| {
        if let Progress::CacheNotWritten { dataset, reason } = p {
            eprintln!(
                "warning: {dataset} loaded without a cache ({reason}); use --cache-dir DIR or --no-cache"
            );
            return;
        }
        if !tty {
            return;
        }
        match p {
            Progress::Parsing {
                dataset,
                done,
                total,
            } => {
                let pc = if *total > 0 { done * 100 / total } else { 0 };
                if last.swap(pc, Ordering::Relaxed) != pc {
                    eprint!(
                        "\rreading {dataset}: {pc:>3}% of {:.1} MB ",
                        *total as f64 / 1e6
                    );
                }
            }
            Progress::CacheNotWritten { .. } => {}
            Progress::Loaded { .. } => {
                if last.swap(u64::MAX, Ordering::Relaxed) != u64::MAX {
                    eprint!("\r\x1b[2K");
                }
            }
        }
    })
}

pub fn run(cmd: DataCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::List { data, json } => list(&data, json),
        DataCommand::Show(args) => show(args),
        DataCommand::Check {
            file,
            max_problems,
            json,
        } => check(&file, max_problems, json),
        DataCommand::Panel(args) => panel(args),
        DataCommand::Convert { file, out, json } => convert(&file, out, json),
    }
}

fn convert(file: &std::path::Path, out: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let out = match out {
        Some(o) => o,
        None => {
            let name = lim_market::source::dataset_name(file).with_context(|| {
                format!(
                    "'{}' is not a data file name, expected NAME.csv, NAME.csv.gz or NAME.parquet",
                    file.display()
                )
            })?;
            let ext = if lim_market::parquet::is_parquet_name(&file.to_string_lossy()) {
                "csv"
            } else {
                "parquet"
            };
            PathBuf::from(format!("{name}.{ext}"))
        }
    };
    let started = std::time::Instant::now();
    let report = lim_market::convert(file, &out)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} -> {}: {} rows, {} symbols, {:.1} MB in {:.1} s",
            report.from,
            report.to,
            thousands(report.rows),
            report.symbols,
            report.bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn classes(meta: &DatasetMeta) -> String {
    let mut c: Vec<&str> = meta
        .symbols
        .iter()
        .map(|s| s.instrument.asset_class.as_str())
        .collect();
    c.sort_unstable();
    c.dedup();
    c.join("+")
}

fn exchanges(meta: &DatasetMeta) -> String {
    let mut c: Vec<&str> = meta
        .symbols
        .iter()
        .filter_map(|s| s.instrument.exchange.as_deref())
        .collect();
    c.sort_unstable();
    c.dedup();
    if c.len() > 4 {
        format!("{} +{}", c[..3].join(","), c.len() - 3)
    } else if c.is_empty() {
        "-".into()
    } else {
        c.join(",")
    }
}

/// A date, or a date and minute for intraday data: narrow enough for a terminal table.
fn short_time(t: Timestamp, f: Frequency) -> String {
    if f.is_daily() {
        t.date_string()
    } else {
        let full = t.datetime_string();
        format!("{} {}", &full[..10], &full[11..16])
    }
}

#[derive(Serialize)]
struct ListJson<'a> {
    location: &'a str,
    datasets: Vec<DatasetMeta>,
    /// Groupings from `groups.csv` beside the datasets (for `group_*` functions).
    groupings: Vec<String>,
}

fn list(data: &DataArgs, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = data.catalog()?;
    let metas = catalog.datasets()?;
    let groupings: Vec<String> = catalog
        .group_table()
        .map(|g| g.names.clone())
        .unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&ListJson {
                location: catalog.location(),
                datasets: metas,
                groupings: groupings.clone(),
            })?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} datasets in {}", metas.len(), catalog.location());
    let mut t = Table::new(&[
        "dataset",
        "class",
        "exchanges",
        "freq",
        "symbols",
        "rows",
        "first",
        "last",
        "OI",
    ]);
    for m in &metas {
        t.row(vec![
            m.name.clone(),
            classes(m),
            exchanges(m),
            m.frequency.to_string(),
            m.symbols.len().to_string(),
            thousands(m.rows),
            short_time(m.first, m.frequency),
            short_time(m.last, m.frequency),
            if m.has_open_interest {
                "yes".into()
            } else {
                "-".into()
            },
        ]);
    }
    print!("{}", t.render());
    for m in metas.iter().filter(|m| !m.extra_fields.is_empty()) {
        println!(
            "extra fields of {}: {} (strategies use them by name)",
            m.name,
            m.extra_fields.join(", ")
        );
    }
    if let Some(g) = catalog.group_table() {
        println!(
            "groupings for group_* functions: exchange, asset_class, {} ({}, {} symbols)",
            g.names.join(", "),
            g.path.display(),
            g.rows.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct SymbolReport {
    symbol: String,
    exchange: Option<String>,
    asset_class: AssetClass,
    first: String,
    last: String,
    rows: u64,
    gaps: u64,
    rolls: Option<usize>,
    returns: ReturnStats,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roll_dates: Vec<lim_market::Roll>,
}

#[derive(Serialize)]
struct ShowJson {
    dataset: String,
    file: String,
    frequency: Frequency,
    as_of: String,
    roll_policy: RollPolicy,
    rows: u64,
    first: String,
    last: String,
    quirks: lim_market::reader::Quirks,
    /// Symbols that are another's series over the whole file (`lim_market::same_series`):
    /// research universes keep one copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    same_series: Vec<lim_market::SameSeries>,
    /// Fields strategies can use: the file's columns, then those derived from them.
    fields: Vec<&'static str>,
    /// Groupings from the directory's groups file, beside `exchange` and `asset_class`.
    groupings: Vec<String>,
    symbols: Vec<SymbolReport>,
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let catalog = args.data.catalog()?;
    let meta = catalog.meta(&args.dataset)?;
    let mut q = PanelQuery::new(args.as_of.unwrap_or(AsOf::LATEST), [args.dataset.clone()])
        .fields([Field::Returns, Field::Close])
        .roll(args.roll.into());
    if let Some(s) = &args.symbol {
        q = q.symbols([s.clone()]);
    }
    let set = catalog.panels(&q)?;
    let ret = set.panel(Field::Returns).context("returns panel missing")?;
    // As of a time, every figure is of the bars closed by then; otherwise of the whole file.
    let cut = args.as_of.is_some();
    // Intraday statistics are annualised by the bars in a typical trading day of this data.
    let periods = meta.frequency.periods_per_year_of(&set.times);
    let mut symbols = Vec::new();
    for (c, inst) in set.instruments.iter().enumerate() {
        let Some(sm) = meta
            .symbols
            .iter()
            .find(|s| s.instrument.symbol == inst.symbol)
        else {
            continue;
        };
        let (first, last, rows, gaps) = if cut {
            // Not traded by the as-of time: not shown.
            let Some(s) = set.span_of(c) else {
                continue;
            };
            (s.first, s.last, s.rows, s.gaps)
        } else {
            (sm.first, sm.last, sm.rows, sm.gaps)
        };
        let rolls = set.rolls.get(&inst.symbol);
        symbols.push(SymbolReport {
            symbol: inst.symbol.clone(),
            exchange: inst.exchange.clone(),
            asset_class: inst.asset_class,
            first: first.display(meta.frequency),
            last: last.display(meta.frequency),
            rows,
            gaps,
            rolls: rolls.map(Vec::len),
            returns: ReturnStats::of(ret.column(c), periods),
            roll_dates: if args.symbol.is_some() {
                rolls.cloned().unwrap_or_default()
            } else {
                Vec::new()
            },
        });
    }
    if cut && symbols.is_empty() {
        bail!(
            "dataset '{}' has no bars by --as-of {} (its data starts {}{}); pass a later --as-of",
            meta.name,
            set.as_of,
            meta.first.display(meta.frequency),
            args.symbol
                .as_ref()
                .map(|s| format!(", and {s} is not among its instruments by then"))
                .unwrap_or_default()
        );
    }
    let (rows, first, last) = if cut {
        (
            symbols.iter().map(|s| s.rows).sum(),
            symbols
                .iter()
                .map(|s| s.first.clone())
                .min()
                .unwrap_or_default(),
            symbols
                .iter()
                .map(|s| s.last.clone())
                .max()
                .unwrap_or_default(),
        )
    } else {
        (
            meta.rows,
            meta.first.display(meta.frequency),
            meta.last.display(meta.frequency),
        )
    };
    let report = ShowJson {
        dataset: meta.name.clone(),
        file: meta.file.clone(),
        frequency: meta.frequency,
        as_of: set.as_of.to_string(),
        roll_policy: q.roll,
        rows,
        first,
        last,
        quirks: meta.quirks,
        same_series: lim_market::same_series(&set, 0..set.times.len()),
        // What the strategy language reads (`lim_backtest::frame::FIELDS` and the file's
        // extra columns), not every field a panel query can derive.
        fields: meta
            .stored_fields()
            .into_iter()
            .chain(
                lim_backtest::frame::FIELDS
                    .into_iter()
                    .filter(|f| !f.is_stored()),
            )
            .map(Field::name)
            .collect(),
        groupings: catalog
            .group_table()
            .map(|g| g.names.clone())
            .unwrap_or_default(),
        symbols,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}  ({}, {} symbols, {} rows, {} → {}, as of {})",
        report.dataset,
        report.frequency,
        if cut {
            report.symbols.len()
        } else {
            meta.symbols.len()
        },
        thousands(report.rows),
        report.first,
        report.last,
        report.as_of
    );
    println!("file: {}", report.file);
    if let Some(d) = meta
        .manifest
        .as_ref()
        .and_then(|m| m.description.as_deref())
    {
        println!("{d}");
    }
    let stored = meta.stored_fields().len();
    println!(
        "fields: {} (from the file); {} (derived){}",
        report.fields[..stored].join(", "),
        report.fields[stored..].join(", "),
        if report.groupings.is_empty() {
            String::new()
        } else {
            format!("; groupings: {}", report.groupings.join(", "))
        }
    );
    println!(
        "quirks: {} OHLC-inconsistent rows kept, {} zero-volume rows",
        thousands(meta.quirks.ohlc_inconsistent),
        thousands(meta.quirks.zero_volume)
    );
    for same in &report.same_series {
        println!(
            "same series: {} is {} (corr. {:.4}, {} bars); research keeps {}",
            same.symbol,
            same.same_as,
            same.correlation,
            thousands(same.shared as u64),
            same.same_as
        );
    }
    if set.rolls.is_empty() {
        println!("returns: close to close");
    } else {
        let n: usize = set.rolls.values().map(Vec::len).sum();
        println!("returns: roll-clean ({n} rolls detected and back-adjusted; --roll none for raw)");
    }
    let mut t = Table::new(&[
        "symbol", "exch", "first", "last", "rows", "gaps", "rolls", "ann.ret", "ann.vol", "min",
        "max",
    ]);
    for s in &report.symbols {
        t.row(vec![
            s.symbol.clone(),
            s.exchange.clone().unwrap_or_else(|| "-".into()),
            s.first.clone(),
            s.last.clone(),
            thousands(s.rows),
            thousands(s.gaps),
            s.rolls.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            pct(s.returns.annual_mean),
            pct(s.returns.annual_vol),
            pct(s.returns.min),
            pct(s.returns.max),
        ]);
    }
    print!("{}", t.render());
    if let Some(s) = report.symbols.first().filter(|_| args.symbol.is_some()) {
        println!(
            "returns: {} bars, mean {:.5}, std {:.5}, skew {:.2}, excess kurtosis {:.2}",
            s.returns.count, s.returns.mean, s.returns.std, s.returns.skew, s.returns.kurtosis
        );
        if !s.roll_dates.is_empty() {
            let shown = s.roll_dates.len().min(12);
            println!(
                "last {shown} of {} rolls (date: price ratio applied to earlier bars):",
                s.roll_dates.len()
            );
            for r in &s.roll_dates[s.roll_dates.len() - shown..] {
                println!("  {}  ×{:.4}", r.ts.display(meta.frequency), r.factor);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(file: &std::path::Path, cap: usize, json: bool) -> anyhow::Result<ExitCode> {
    let report = lim_market::check_file(file, cap)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("{p}");
        }
        if report.total_problems > report.problems.len() {
            println!(
                "... and {} more problem(s) (raise --max-problems to see them)",
                report.total_problems - report.problems.len()
            );
        }
        let freq = report
            .frequency
            .map(|f| f.to_string())
            .unwrap_or_else(|| "unknown".into());
        println!(
            "{}: {} problem(s); {} good rows, {} symbols, frequency {freq}; {} OHLC-inconsistent rows (kept)",
            report.file,
            report.total_problems,
            thousands(report.rows_ok),
            report.symbols,
            thousands(report.quirks.ohlc_inconsistent)
        );
    }
    Ok(if report.total_problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Serialize)]
struct PanelJson {
    as_of: String,
    frequency: Frequency,
    times: Vec<String>,
    symbols: Vec<String>,
    /// field → one array per symbol (null where missing).
    panels: std::collections::BTreeMap<&'static str, Vec<Vec<Option<f64>>>>,
}

fn panel(args: PanelArgs) -> anyhow::Result<ExitCode> {
    let catalog = args.data.catalog()?;
    let mut fields = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    for d in &args.datasets {
        for e in catalog.meta(d)?.extra_fields {
            if !extra.contains(&e) {
                extra.push(e);
            }
        }
    }
    for f in &args.fields {
        match Field::parse(f) {
            Some(f) => fields.push(f),
            None if extra.contains(f) => fields.push(Field::extra(f)),
            None => bail!(
                "unknown field '{f}'; expected one of {}",
                Field::ALL
                    .iter()
                    .map(|f| f.name())
                    .chain(extra.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let mut q = PanelQuery::new(args.as_of.unwrap_or(AsOf::LATEST), args.datasets.clone())
        .fields(fields.clone())
        .range(args.start, args.end)
        .roll(args.roll.into());
    if let Some(s) = &args.symbols {
        q = q.symbols(s.clone());
    }
    if let Some(f) = args.frequency {
        q = q.frequency(f);
    }
    let set = catalog.panels(&q)?;
    if args.json {
        let out = PanelJson {
            as_of: set.as_of.to_string(),
            frequency: set.frequency,
            times: set.times.iter().map(|t| t.display(set.frequency)).collect(),
            symbols: set.instruments.iter().map(|i| i.symbol.clone()).collect(),
            panels: set
                .panels
                .iter()
                .map(|(f, p)| {
                    let cols = (0..p.symbols())
                        .map(|c| {
                            p.column(c)
                                .iter()
                                .map(|v| v.is_finite().then_some(*v))
                                .collect()
                        })
                        .collect();
                    (f.name(), cols)
                })
                .collect(),
        };
        println!("{}", serde_json::to_string(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} bars × {} symbols at {} ({} MB), as of {}",
        set.times.len(),
        set.instruments.len(),
        set.frequency,
        set.bytes() / 1_000_000,
        set.as_of
    );
    let shown: Vec<usize> = (0..set.instruments.len().min(6)).collect();
    for (f, p) in &set.panels {
        println!("\n{}:", f.name());
        let mut header = vec!["time".to_string()];
        header.extend(shown.iter().map(|&c| set.instruments[c].symbol.clone()));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = Table::new(&header);
        for r in set.times.len().saturating_sub(args.tail)..set.times.len() {
            let mut row = vec![set.times[r].display(set.frequency)];
            row.extend(shown.iter().map(|&c| {
                let v = p.get(r, c);
                if v.is_nan() {
                    "-".into()
                } else {
                    format!("{v:.6}")
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string()
                }
            }));
            t.row(row);
        }
        print!("{}", t.render());
    }
    if set.instruments.len() > shown.len() {
        println!(
            "({} more symbols; --json prints everything)",
            set.instruments.len() - shown.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
