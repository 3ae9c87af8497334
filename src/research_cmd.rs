//! `lim research`, `lim runs`, `lim show`, `lim resume`, `lim replay`, `lim trace export`:
//! durable research runs in the run store.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use lim_agents::client::{Budgeted, LlmClient, Price, RetryPolicy, Retrying, Timed};
use lim_agents::openai::{OpenAi, OpenAiConfig};
use lim_backtest::metrics::Metrics;
use lim_backtest::nonfinite;
use lim_market::MarketData;
use lim_pipelines::engine::Progress;
use lim_pipelines::journal::{Clock, Journal, Kind, Record, Sink, SystemClock, spent_in};
use lim_pipelines::lifecycle::{self, Execution, Finished, Ready, Resumption};
use lim_pipelines::research::{
    self, ExperimentPlan, NoLlm, ResearchConfig, StrategistConfig, Summary,
};
use lim_pipelines::store::{RunMeta, RunStatus, Store, StoreError, StoreSink};
use lim_pipelines::trace;
use serde_json::Value;

use crate::DataArgs;
use crate::cluster_args::{self, ClusterArgs};
use crate::table::{Table, pct, wrap};

/// Where runs live.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Run store directory. Default: $LIM_RUNS, else ./lim-runs.
    #[arg(long, value_name = "DIR", global = true)]
    store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store's directory: `--store`, else `$LIM_RUNS`, else `./lim-runs`.
    pub fn dir(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(|| {
            std::env::var_os("LIM_RUNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("lim-runs"))
        })
    }

    fn open(&self) -> anyhow::Result<Arc<Store>> {
        Ok(Arc::new(Store::open(&self.dir())?))
    }

    /// The store, if one has been made there: commands that only read runs create nothing
    /// (a mistyped `--store` must not leave a directory behind).
    fn existing(&self) -> anyhow::Result<Option<Arc<Store>>> {
        if Store::exists(&self.dir()) {
            self.open().map(Some)
        } else {
            Ok(None)
        }
    }

    /// The store, which must exist: where no run was ever made, an error that says so.
    fn open_existing(&self) -> anyhow::Result<Arc<Store>> {
        self.existing()?.ok_or_else(|| {
            anyhow::anyhow!(
                "no run store at '{}': `lim research \"GOAL\"` makes one there; give --store (or set LIM_RUNS) to the directory your runs are in",
                self.dir().display()
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmKind {
    /// The deterministic evolutionary search (not an LLM).
    Offline,
    /// An OpenAI-compatible chat model (OpenAI, vLLM, Ollama, llama.cpp).
    Openai,
}

/// Budgets: each optional so that `lim resume` can tell what was asked to change.
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// Most strategy-loop iterations, at least 1 [default: 6].
    #[arg(long, allow_negative_numbers = true, value_parser = at_least_one::<u32>)]
    max_iterations: Option<u32>,
    /// Most dollars of LLM calls, priced by --price.
    #[arg(long, allow_negative_numbers = true, value_parser = positive)]
    budget_usd: Option<f64>,
    /// Most LLM tokens.
    #[arg(long, allow_negative_numbers = true, value_parser = at_least_one::<u64>)]
    max_tokens: Option<u64>,
    /// Wall-time limit from the run's start, e.g. 90s, 45m, 8h.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_minutes)]
    deadline: Option<f64>,
    /// Dollars per million prompt and completion tokens, e.g. 0.15,0.60.
    #[arg(long, value_parser = parse_price)]
    price: Option<Price>,
    /// Estimated CPU-seconds the foundation model may train for when the strategist chooses
    /// to (its pretrain and finetune tools refuse more) [default: 60; 0: no foundation tools].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative)]
    foundation_cpu_seconds: Option<f64>,
}

/// A count of at least one (for flags of any unsigned type: `at_least_one::<u32>`).
pub(crate) fn at_least_one<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    match s.trim().parse::<i64>() {
        Ok(v) if v >= 1 => T::try_from(v as u64).map_err(|_| format!("'{s}' is too large")),
        Ok(_) => Err(format!("'{s}' must be at least 1")),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// A number above zero.
fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        Ok(_) => Err(format!("'{s}' must be above zero")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

/// A number at or above zero.
fn non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        Ok(_) => Err(format!("'{s}' must be zero or more")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

pub(crate) fn parse_minutes(s: &str) -> Result<f64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; write e.g. 90s, 45m or 8h"))?;
    if v <= 0.0 || !v.is_finite() {
        return Err(format!(
            "'{s}': a duration must be above zero, e.g. 90s, 45m or 8h"
        ));
    }
    match unit {
        "s" => Ok(v / 60.0),
        "m" | "" => Ok(v),
        "h" => Ok(v * 60.0),
        _ => Err(format!("unknown unit in '{s}'; use s, m or h")),
    }
}

fn parse_price(s: &str) -> Result<Price, String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("'{s}': write PROMPT,COMPLETION dollars per million tokens"))?;
    let p = |x: &str| non_negative(x);
    Ok(Price {
        prompt: p(a)?,
        completion: p(b)?,
    })
}

impl BudgetArgs {
    fn apply(&self, c: &mut ResearchConfig) {
        let b = &mut c.budgets;
        if let Some(v) = self.max_iterations {
            b.max_iterations = v;
        }
        if let Some(v) = self.budget_usd {
            b.max_usd = Some(v);
        }
        if let Some(v) = self.max_tokens {
            b.max_tokens = Some(v);
        }
        if let Some(v) = self.deadline {
            b.deadline_minutes = Some(v);
        }
        if let Some(v) = self.price {
            b.price = Some(v);
        }
        if let Some(v) = self.foundation_cpu_seconds {
            b.foundation_cpu_seconds = v.max(0.0);
        }
    }
}

/// LLM connection flags.
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
    /// Who proposes strategies.
    #[arg(long, value_enum, default_value = "offline")]
    pub(crate) llm: LlmKind,
    /// Model name, with --llm openai.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// Base URL of the OpenAI-compatible API, with /v1.
    #[arg(long, default_value = "https://api.openai.com/v1")]
    base_url: String,
    /// Environment variable holding the API key (unset: no key, e.g. a local server).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub(crate) api_key_env: String,
}

#[derive(Debug, Args)]
pub struct ResearchArgs {
    /// The research goal, e.g. "find a robust trend strategy for Chinese commodity futures, max drawdown 15%".
    goal: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    budgets: BudgetArgs,
    /// New strategies per iteration (at least 1).
    #[arg(long, default_value_t = 12, allow_negative_numbers = true, value_parser = at_least_one::<usize>)]
    population: usize,
    /// Finalists evaluated once on the sealed test period (at least 1).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = at_least_one::<usize>)]
    finalists: usize,
    /// Seed: the same seed, data and answers give the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Train the foundation model on the first half of the training period and offer its
    /// out-of-sample predictions to strategies as the fields `forecast_ret_5` and
    /// `forecast_vol_5`.
    #[arg(long)]
    foundation: bool,
    /// Fitness a strategy loses per unit of correlation with its closest baseline beyond 0.9,
    /// either way (e.g. 2.5: a copy of 12-1 momentum pays 0.25). Off by default: on the
    /// research benchmark it lowered the finalists' test Sharpe (docs/research.md).
    #[arg(long, default_value_t = 0.0, value_parser = parse_penalty)]
    baseline_penalty: f64,
    #[command(flatten)]
    period: PeriodArgs,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Testing aid: stop making progress once journal record N is written (to be killed).
    #[arg(long, hide = true)]
    pause_at_record: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The run's id (or a unique prefix). Default: the newest run that stopped before its end
    /// (killed, interrupted or failed).
    run: Option<String>,
    #[command(flatten)]
    budgets: BudgetArgs,
    /// Start a new run with the changed settings instead of refusing them.
    #[arg(long)]
    fork: bool,
    /// Environment variable holding the API key, if the run uses an LLM (its model and URL
    /// are the run's own).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[arg(long, hide = true)]
    pause_at_record: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run's id (or a unique prefix). Default: the newest run in the store.
    run: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the summary as JSON instead of the Markdown report.
    #[arg(long)]
    json: bool,
    /// Write the run's HTML tearsheet (report.html in its directory) and print its path.
    #[arg(long)]
    html: bool,
    /// Write the run's metrics (every strategy, finalist, baseline and part) and the daily
    /// returns of its finalists, their combination and the baselines to DIR, for pandas,
    /// polars or DuckDB (see --format); prints the paths.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// File format of --export.
    #[arg(long, value_enum, default_value_t = TableFormat::Parquet)]
    format: TableFormat,
}

/// The file format of exported tables.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TableFormat {
    /// Apache Parquet (zstd).
    Parquet,
    /// CSV with a header.
    Csv,
}

impl From<TableFormat> for lim_market::parquet::Format {
    fn from(f: TableFormat) -> Self {
        match f {
            TableFormat::Parquet => lim_market::parquet::Format::Parquet,
            TableFormat::Csv => lim_market::parquet::Format::Csv,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A run id in the store, or a trace file written by `lim trace export`.
    source: String,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Write a run's self-contained, scrubbed JSON-lines trace.
    Export {
        /// The run's id (or a unique prefix).
        run: String,
        /// Output file ('-' for standard output). Default: the run's directory, trace.jsonl.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// Print what was written (run, records, path) as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A sink that stops the process's progress after record N (crash tests kill it there).
#[derive(Debug)]
struct PausingSink {
    inner: StoreSink,
    at: u64,
}

impl Sink for PausingSink {
    fn append(&self, records: &[Record]) -> Result<(), StoreError> {
        self.inner.append(records)?;
        if records.iter().any(|r| r.seq >= self.at) {
            eprintln!("paused at record {}", self.at);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Ok(())
    }
}

/// The runtime runs use: two workers (nodes, tools and the HTTP client; heavy work goes to the
/// blocking pool).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The foundation model behind the `pretrain`, `finetune` and `predict` tools.
fn foundation(market: &Arc<dyn MarketData>) -> Option<Arc<dyn lim_tools::FoundationModel>> {
    Some(Arc::new(crate::forecaster::FoundationForecaster::new(
        market.clone(),
    )))
}

fn config_from(args: &ResearchArgs) -> ResearchConfig {
    let mut c = ResearchConfig::new(&args.goal);
    c.seed = args.seed;
    c.population = args.population;
    c.finalists = args.finalists;
    c.strategist = strategist(&args.llm);
    c.foundation = args.foundation;
    c.baseline_penalty = args.baseline_penalty;
    c.as_of = args.period.as_of.clone();
    c.earlier = args.period.earlier;
    args.budgets.apply(&mut c);
    c
}

pub(crate) fn strategist(llm: &LlmArgs) -> StrategistConfig {
    match llm.llm {
        LlmKind::Offline => StrategistConfig::Offline,
        LlmKind::Openai => StrategistConfig::Llm {
            model: llm.model.clone(),
            base_url: llm.base_url.clone(),
        },
    }
}

pub fn research(args: ResearchArgs) -> anyhow::Result<ExitCode> {
    if args.goal.trim().is_empty() {
        bail!(
            "the goal is empty: say what to research, e.g. lim research \"find a robust trend strategy for Chinese commodity futures, max drawdown 15%\""
        );
    }
    if args.budgets.budget_usd.is_some() && args.budgets.price.is_none() {
        bail!(
            "--budget-usd needs the model's prices to count dollars: add --price PROMPT,COMPLETION (dollars per million tokens, e.g. --price 0.15,0.60)"
        );
    }
    let store = args.store.open()?;
    let market: Arc<dyn MarketData> = Arc::new(args.data.catalog()?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ready = lifecycle::create(
        &store,
        config_from(&args),
        market.as_ref(),
        args.data.data_dir().as_deref(),
        clock.now_ms(),
    )?;
    if !args.json {
        let id = &ready.meta.id;
        eprintln!(
            "run {id} (store {}); `lim resume {id}` continues it after a crash",
            store_dir_hint(&args.store)
        );
    }
    let remote = Remote {
        cluster: args.cluster.clone(),
        data: args.data.clone(),
        data_dir: args.data.data_dir(),
    };
    drive(
        &store,
        ready,
        &args.llm.api_key_env,
        (market, clock, remote),
        args.pause_at_record,
        args.json,
    )
}

/// Where the run's backtests go when not here, and the data the workers read.
struct Remote {
    cluster: ClusterArgs,
    data: DataArgs,
    data_dir: Option<std::path::PathBuf>,
}

fn store_dir_hint(s: &StoreArgs) -> String {
    s.store
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "$LIM_RUNS or ./lim-runs".into())
}

fn sink(store: &Arc<Store>, id: &str, pause: Option<u64>) -> Arc<dyn Sink> {
    let inner = StoreSink::new(store.clone(), id);
    match pause {
        Some(at) => Arc::new(PausingSink { inner, at }),
        None => Arc::new(inner),
    }
}

pub fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open_existing()?;
    let meta = match &args.run {
        Some(run) => store.run(run)?,
        None => {
            let meta = store.newest(RunStatus::resumable)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no run in '{}' stopped before its end: each has finished or is running (`lim runs` lists them); give a run's id to resume it anyway",
                    args.store.dir().display()
                )
            })?;
            eprintln!(
                "resuming {}, the newest run that stopped before its end",
                meta.id
            );
            meta
        }
    };
    let mut wanted = lifecycle::config_of(&meta)?;
    args.budgets.apply(&mut wanted);
    let remembered = store.data_dir(&meta.id)?;
    let remote = Remote {
        cluster: args.cluster.clone(),
        data: args.data.clone(),
        data_dir: args.data.data_dir().or_else(|| remembered.clone()),
    };
    let market: Arc<dyn MarketData> = Arc::new(args.data.catalog_or(remembered)?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ready = match lifecycle::resume(
        &store,
        meta,
        wanted,
        args.fork,
        market.as_ref(),
        clock.now_ms(),
    )? {
        Resumption::Finished(meta) => {
            eprintln!("run {} had finished; its report stands", meta.id);
            return show(ShowArgs {
                run: Some(meta.id),
                store: args.store,
                json: args.json,
                html: false,
                export: None,
                format: TableFormat::Parquet,
            });
        }
        Resumption::Forked {
            ready,
            from,
            changes,
        } => {
            eprintln!(
                "forked run {from} into {} with: {}",
                ready.meta.id,
                changes.join("; ")
            );
            ready
        }
        Resumption::Continue {
            ready,
            done,
            llm_answers,
            warnings,
        } => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            if !args.json {
                eprintln!(
                    "resuming run {}: {done} node executions done, {llm_answers} LLM answers journaled (read back, not asked again)",
                    ready.meta.id
                );
            }
            ready
        }
    };
    drive(
        &store,
        ready,
        &args.api_key_env,
        (market, clock, remote),
        args.pause_at_record,
        args.json,
    )
}

/// An OpenAI-compatible client at `base_url` with a time limit per call and retries (seeded
/// backoff); the key, if any, from the environment variable `api_key_env`.
pub(crate) fn openai_client(
    base_url: &str,
    api_key_env: &str,
    seed: u64,
) -> anyhow::Result<impl LlmClient + 'static> {
    // Only the CLI reads keys, and only from the named environment variable.
    let api_key = std::env::var(api_key_env).ok().filter(|k| !k.is_empty());
    let provider = OpenAi::new(OpenAiConfig {
        base_url: base_url.to_string(),
        api_key,
    })?;
    Ok(Retrying::new(
        Timed::new(provider, Duration::from_secs(120)),
        RetryPolicy::default(),
        seed,
    ))
}

fn drive(
    store: &Arc<Store>,
    ready: Ready,
    api_key_env: &str,
    world: (Arc<dyn MarketData>, Arc<dyn Clock>, Remote),
    pause: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match &ready.config.strategist {
        StrategistConfig::Offline => run_with(store, ready, NoLlm, world, pause, json),
        StrategistConfig::Llm { base_url, .. } => {
            let budget = ready.config.llm_budget();
            let spent = spent_in(&ready.records, &budget, |_| true);
            let client = Budgeted::new(
                openai_client(base_url, api_key_env, ready.config.seed)?,
                budget,
                spent,
            )
            .with_prompt_scale(lim_pipelines::journal::prompt_scale_in(&ready.records));
            run_with(store, ready, client, world, pause, json)
        }
    }
}

fn run_with<L: LlmClient + 'static>(
    store: &Arc<Store>,
    ready: Ready,
    llm: L,
    (market, clock, remote): (Arc<dyn MarketData>, Arc<dyn Clock>, Remote),
    pause: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let id = ready.meta.id.clone();
    let max_iter = ready.config.budgets.max_iterations;
    let budget = ready.config.llm_budget();
    let runtime = runtime()?;
    let tty = std::io::stderr().is_terminal() && !json;
    let mut trials = 0usize;
    let mut best = f64::NEG_INFINITY;
    let progress = |p: &Progress<'_>, journal: &Journal| {
        if let Some(plan) = p.outputs.get("plan")
            && !json
            && let Ok(plan) = serde_json::from_value::<ExperimentPlan>(plan.clone())
        {
            print_plan(&plan);
        }
        if let Some(t) = p.outputs.get("trials").and_then(Value::as_array) {
            trials = t.len();
            best = t
                .iter()
                .filter_map(|t| t.get("fitness").and_then(Value::as_f64))
                .fold(best, f64::max);
        }
        let iteration = p.exec.split('#').nth(1).unwrap_or("1");
        let spent = journal.spent(&budget);
        let line = format!(
            "iteration {iteration}/{max_iter} · {} {} · {trials} strategies · best robust Sharpe {best:.2} · {} LLM calls, {} tokens, ${:.4}",
            p.exec,
            if p.restored { "(journaled)" } else { "done" },
            spent.calls,
            spent.tokens,
            spent.usd
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if !json && p.exec.starts_with("critique") {
            eprintln!("{line}");
        }
    };
    // Ctrl-C stops the run between journal writes (and cancels its cluster jobs); `lim
    // resume` continues it.
    let cancel = Arc::new(tokio::sync::Notify::new());
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (on_ctrl_c, flag) = (cancel.clone(), interrupted.clone());
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            on_ctrl_c.notify_one();
        }
    });
    let remote_backtests = cluster_args::research_backtests(
        &remote.cluster,
        &remote.data,
        remote.data_dir.as_deref(),
        &store.run_dir(&id)?.join("work"),
        (
            interrupted,
            ready
                .config
                .budgets
                .deadline_minutes
                .map(|m| ready.meta.created_ms + (m * 60_000.0) as i64),
        ),
        tty,
    )?;
    let parts = Execution {
        llm,
        foundation: foundation(&market),
        market,
        clock,
        sink: sink(store, &id, pause),
        cancel: Some(cancel),
        remote_backtests,
    };
    let result = runtime.block_on(lifecycle::execute(store, ready, parts, progress));
    if tty {
        eprintln!();
    }
    let Finished {
        summary,
        report,
        html,
    } = result?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"run": id, "report": report, "html": html, "summary": summary})
            )?
        );
    } else {
        print_summary(&summary);
        println!(
            "report: {} (tearsheet: {})",
            report.display(),
            html.display()
        );
        println!("run {id}: `lim show {id}`, `lim replay {id}`");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(p: &ExperimentPlan) {
    println!("plan ({}):", p.strategy.author);
    println!(
        "  trade {} ({} instruments, {} bars); {:?} signals; costs {} bps",
        p.strategy.datasets.join(", "),
        p.instruments,
        p.frequency,
        p.strategy.family,
        p.strategy.cost_bps
    );
    for (what, text) in [
        ("horizon", p.horizon.to_string()),
        ("splits", p.splits.to_string()),
        ("objective", p.objective.to_string()),
        ("budget", p.budgets.describe()),
        ("review", p.review.clone()),
    ] {
        if text.is_empty() {
            continue;
        }
        println!("{}", wrap(&format!("  {what}: {text}"), 100, "    "));
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A Sharpe ratio for the terminal: "no trades" for a part without an active bar.
fn metric(bars: usize, v: f64) -> String {
    if bars == 0 {
        "no trades".into()
    } else {
        nonfinite::show(v, 2, "n/a")
    }
}

fn print_summary(s: &Summary) {
    println!("stopped: {} ({} strategies tried)", s.stop_reason, s.trials);
    let mut t = Table::new(&[
        "#",
        "iter",
        "fitness",
        "train.sharpe",
        "valid.sharpe",
        "valid.dd",
        "signal",
    ]);
    // Ranked by fitness, which is shown; `iter` counts as the progress lines do.
    for e in &s.leaderboard {
        t.row(vec![
            e.rank.to_string(),
            (e.generation + 1).to_string(),
            if e.fitness.is_finite() {
                format!("{:.2}", e.fitness)
            } else {
                "none".into()
            },
            metric(e.train.bars, e.train.sharpe),
            metric(e.validation.bars, e.validation.sharpe),
            pct(e.validation.max_dd),
            short(&e.signal, 60),
        ]);
    }
    print!("{}", t.render());
    println!(
        "sealed test period{}, evaluated once on the {} finalists:",
        s.test_period()
            .map(|p| format!(" ({} to {})", p.first, p.last))
            .unwrap_or_default(),
        s.finalists.len()
    );
    let mut t = Table::new(&[
        "valid.sharpe",
        "test.sharpe",
        "vs.long (z)",
        "test.return",
        "test.dd",
        "signal",
    ]);
    let row = |v: &Metrics, t: &Metrics, name: &str, label: String| {
        let shown = |x: f64| if t.bars == 0 { "-".into() } else { pct(x) };
        vec![
            metric(v.bars, v.sharpe),
            metric(t.bars, t.sharpe),
            s.versus_cell(name),
            shown(t.ann_return),
            shown(t.max_dd),
            label,
        ]
    };
    for f in &s.finalists {
        t.row(row(&f.validation, &f.test, &f.signal, short(&f.signal, 50)));
    }
    if let Some(c) = &s.combined {
        t.row(row(
            &c.validation,
            &c.test,
            lim_pipelines::research::COMBINED,
            "(the finalists combined, equal risk)".into(),
        ));
    }
    print!("{}", t.render());
    if let Some(line) = s.finalists_versus_always_long() {
        println!("{line}");
        let chance = s.beyond_chance();
        if !chance.is_empty() {
            println!("{}", chance.trim_start());
        }
    }
    if let Some(m) = &s.multiple_testing {
        println!(
            "over all {} trials: deflated Sharpe ratio {}{}",
            m.trials,
            nonfinite::show(m.deflated.dsr, 3, "undefined"),
            m.pbo
                .map(|p| format!("; probability of backtest overfitting {p:.2}"))
                .unwrap_or_default()
        );
    }
    println!(
        "LLM: {} calls, {} tokens, ${:.4}",
        s.spent.calls, s.spent.tokens, s.spent.usd
    );
}

/// A run's status as people should read it: a `running` run whose process is gone (killed,
/// crashed, machine restarted) is `stopped`. Knows only on systems with `/proc`.
/// A run in `lim runs`, with where its cluster batches stand when it has any.
#[derive(serde::Serialize)]
struct RunRow {
    #[serde(flatten)]
    meta: RunMeta,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cluster: Vec<lim_pipelines::cluster::slurm::BatchState>,
}

pub fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let Some(store) = args.store.existing()? else {
        if args.json {
            println!("[]");
        } else {
            println!(
                "no runs yet in '{}'; start one with `lim research \"GOAL\"`",
                args.store.dir().display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    // Batches of runs that used `--executor slurm`, with their queued tasks when Slurm answers.
    let slurm = lim_pipelines::cluster::slurm::Slurm {
        config: Default::default(),
        logs: std::path::PathBuf::new(),
    };
    let rows: Vec<RunRow> = store
        .runs()?
        .into_iter()
        .map(|mut r| {
            r.status = store.live_status(&r);
            let work = args.store.dir().join(&r.id).join("work");
            let cluster = if work.is_dir() {
                lim_pipelines::cluster::slurm::batches(&work, Some(&slurm))
            } else {
                Vec::new()
            };
            RunRow { meta: r, cluster }
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no runs yet; start one with `lim research \"GOAL\"`");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["run", "status", "started", "goal", "stopped because"]);
    // A cluster run's batches go under the table, so that it fits a terminal.
    let mut on_cluster = Vec::new();
    for RunRow { meta: r, cluster } in &rows {
        let jobs = if cluster.is_empty() {
            String::new()
        } else {
            let queued: Option<usize> = cluster.iter().map(|b| b.queued).sum();
            format!(
                "{} batches{}{}",
                cluster.len(),
                queued.map_or(String::new(), |q| format!(", {q} tasks queued")),
                match cluster.iter().map(|b| b.failures).sum::<usize>() {
                    0 => String::new(),
                    f => format!(", {f} retried"),
                }
            )
        };
        if !jobs.is_empty() {
            on_cluster.push(format!("{} on the cluster: {jobs}", r.id));
        }
        t.row(vec![
            r.id.clone(),
            r.status.to_string(),
            lim_market::Timestamp(r.created_ms / 1000).to_string(),
            // Widest row: an id with a suffix (11), `interrupted` (11), the time (20) and
            // these two, with the separators, 118 columns.
            short(&r.goal, 30),
            if r.status == RunStatus::Stopped {
                format!("died; `lim resume {}`", r.id)
            } else {
                short(r.stop_reason.as_deref().unwrap_or(""), 38)
            },
        ]);
    }
    print!("{}", t.render());
    for line in on_cluster {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn latest_artifact(records: &[Record], name: &str) -> Option<Value> {
    records
        .iter()
        .rev()
        .filter(|r| r.kind == Kind::Node)
        .find_map(|r| r.body.pointer(&format!("/outputs/{name}")).cloned())
}

pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open_existing()?;
    let meta = match &args.run {
        Some(run) => store.run(run)?,
        None => store.newest(|_| true)?.ok_or_else(|| {
            anyhow::anyhow!(
                "the run store '{}' has no runs yet; start one with `lim research \"GOAL\"`",
                args.store.dir().display()
            )
        })?,
    };
    let loaded = store.load(&meta.id)?;
    let config: ResearchConfig = serde_json::from_value(meta.config.clone())
        .with_context(|| format!("run {}: its configuration is unreadable", meta.id))?;
    // A finished run's report, rebuilt from its artifacts by this build (see `summarize`).
    let rebuilt = latest_artifact(&loaded.records, "summary").and_then(|_| {
        let spent = spent_in(&loaded.records, &config.llm_budget(), |_| true);
        research::summarize(&research::artifacts_of(&loaded.records), &config, spent).ok()
    });
    let summary = rebuilt
        .as_ref()
        .and_then(|(s, _)| serde_json::to_value(s).ok());
    // What --html and --export need: the finished run's summary.
    let finished = || match &rebuilt {
        Some((summary, _)) => Ok(summary),
        None => Err(anyhow::anyhow!(
            "run {} has no report yet (it is {}); `lim resume {}` finishes it",
            meta.id,
            store.live_status(&meta),
            meta.id
        )),
    };
    if args.html {
        let summary = finished()?;
        let path = lifecycle::write_tearsheet(
            &store,
            &meta.id,
            summary,
            &research::artifacts_of(&loaded.records),
        )?;
        // Absolute, so that it opens from wherever it is pasted.
        println!("{}", std::path::absolute(&path).unwrap_or(path).display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.export {
        let summary = finished()?;
        let curves: Option<research::Curves> = research::artifacts_of(&loaded.records)
            .get("curves")
            .and_then(|c| serde_json::from_value(c.clone()).ok());
        let tables = research::export::run_tables(summary, curves.as_ref());
        let paths = research::export::write_tables(dir, &tables, args.format.into())?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&paths)?);
        } else {
            for p in paths {
                println!("{}", p.display());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = rebuilt.map(|(_, r)| Value::String(r));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"run": meta, "summary": summary}))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    match report.as_ref().and_then(Value::as_str) {
        Some(r) => print!("{r}"),
        None => {
            let nodes: Vec<&str> = loaded
                .records
                .iter()
                .filter(|r| r.kind == Kind::Node)
                .map(|r| r.exec.as_str())
                .collect();
            let trials = latest_artifact(&loaded.records, "trials")
                .and_then(|t| t.as_array().map(Vec::len))
                .unwrap_or(0);
            println!(
                "run {} is {} ({}): {} node executions done (last {}), {trials} strategies tried; no report yet. `lim resume {}` continues it.",
                meta.id,
                store.live_status(&meta),
                meta.stop_reason.as_deref().unwrap_or("no reason recorded"),
                nodes.len(),
                nodes.last().unwrap_or(&"none"),
                meta.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (meta, loaded, remembered) = if Path::new(&args.source).is_file() {
        let text = std::fs::read_to_string(&args.source)
            .with_context(|| format!("cannot read the trace '{}'", args.source))?;
        let (meta, loaded) =
            trace::import(&text).with_context(|| format!("trace '{}'", args.source))?;
        (meta, loaded, None)
    } else {
        let store = args.store.open_existing().with_context(|| {
            format!(
                "'{}' is not a trace file, so it must be a run id",
                args.source
            )
        })?;
        let meta = store
            .run(&args.source)
            .with_context(|| format!("'{}' is neither a trace file nor a run id", args.source))?;
        let loaded = store.load(&meta.id)?;
        let remembered = store.data_dir(&meta.id)?;
        (meta, loaded, remembered)
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let market: Arc<dyn MarketData> = Arc::new(args.data.catalog_or(remembered)?);
    let runtime = runtime()?;
    let t0 = std::time::Instant::now();
    let replayed = runtime.block_on(lifecycle::replay(
        &meta,
        loaded.records,
        market.clone(),
        foundation(&market),
    ))?;
    let out = serde_json::json!({
        "run": meta.id,
        "identical": true,
        "node_executions": replayed.node_executions,
        "recorded_node_executions": replayed.recorded_node_executions,
        "llm_answers_read_back": replayed.llm_answers,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "replayed run {}: {} node executions, outputs identical to the journal's ({} LLM answers read back; no LLM, no network) in {:.2} s",
            meta.id,
            replayed.node_executions,
            replayed.llm_answers,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn trace_cmd(cmd: TraceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TraceCommand::Export {
            run,
            output,
            store,
            json,
        } => {
            let store = store.open_existing()?;
            let meta = store.run(&run)?;
            let loaded = store.load(&meta.id)?;
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            let text = trace::export(&meta, &loaded.records);
            match output.as_deref() {
                Some(p) if p == Path::new("-") => print!("{text}"),
                _ => {
                    let path = match output {
                        Some(p) => p,
                        None => store.run_dir(&meta.id)?.join("trace.jsonl"),
                    };
                    std::fs::write(&path, &text)
                        .with_context(|| format!("cannot write '{}'", path.display()))?;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "run": meta.id,
                                "records": loaded.records.len(),
                                "path": std::path::absolute(&path).unwrap_or(path),
                            })
                        );
                    } else {
                        eprintln!(
                            "wrote {} ({} records) to {}",
                            meta.id,
                            loaded.records.len(),
                            path.display()
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[command(subcommand)]
    action: Option<MemoryAction>,
    /// Only findings of runs on these datasets (e.g. cn_futures_daily; a run on two:
    /// --dataset a,b).
    #[arg(long = "dataset", global = true, value_delimiter = ',')]
    datasets: Vec<String>,
    /// How many findings to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum MemoryAction {
    /// Forget the findings (on --dataset, or all).
    Clear,
}

/// `lim memory`: what finished runs found, best robust fitness first; `lim memory clear`.
pub fn memory(args: MemoryArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open_existing()?;
    if let Some(MemoryAction::Clear) = args.action {
        let n = store.forget(&args.datasets)?;
        if args.json {
            println!("{}", serde_json::json!({"forgotten": n}));
        } else if n == 0 && !args.datasets.is_empty() {
            println!(
                "forgot 0 findings: {}",
                not_remembered(&store, &args.datasets)?
            );
        } else {
            println!("forgot {n} findings");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let found = store.recall(&args.datasets, args.limit)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    if found.is_empty() {
        if args.datasets.is_empty() {
            println!("the research memory is empty; finished runs add what they found");
        } else {
            println!("{}", not_remembered(&store, &args.datasets)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "datasets", "run", "fitness", "train", "valid", "test", "signal",
    ]);
    for f in &found {
        t.row(vec![
            short(&f.datasets, 24),
            f.run.clone(),
            f.fitness.map_or("-".into(), |v| nonfinite::show(v, 2, "-")),
            nonfinite::show(f.train_sharpe, 2, "-"),
            nonfinite::show(f.validation_sharpe, 2, "-"),
            f.test_sharpe
                .map_or("-".into(), |v| nonfinite::show(v, 2, "-")),
            short(&f.signal, 50),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

/// Why a `--dataset` filter found nothing: what the memory does hold, and the likeliest
/// meaning of a mistyped name.
fn not_remembered(store: &Store, datasets: &[String]) -> anyhow::Result<String> {
    let key = datasets.join("+");
    let held = store.remembered()?;
    if held.is_empty() {
        return Ok(format!(
            "no findings on '{key}': the research memory is empty; finished runs add what they found"
        ));
    }
    let hint = lim_market::error::suggestion(&key, held.iter().map(|(k, _)| k.as_str()));
    let list: Vec<String> = held.iter().map(|(k, n)| format!("{k} ({n})")).collect();
    Ok(format!(
        "no findings on '{key}'{hint}; the memory holds findings on {}",
        list.join(", ")
    ))
}

/// Which stretch of history a study uses: all of it, the data up to a time, or an earlier
/// period whose sealed test later studies never tested on.
#[derive(Debug, Clone, Default, Args)]
pub struct PeriodArgs {
    /// Use only the data up to this time, as if the study were made then: YYYY-MM-DD (the end
    /// of that day) or YYYY-MM-DDTHH:MM:SSZ. The split and its sealed test fall inside it.
    #[arg(long, value_name = "TIME", value_parser = parse_as_of)]
    pub as_of: Option<String>,
    /// Study an earlier period: end the data where the sealed test of the history would begin,
    /// N times over, so that the sealed test is a period the studies of the later data never
    /// tested on (docs/research.md).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub earlier: u32,
}

/// An `--as-of`: a date or an instant the market layer reads.
pub fn parse_as_of(s: &str) -> Result<String, String> {
    match lim_market::AsOf::parse(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!(
            "'{s}' is not a time: give YYYY-MM-DD (the end of that day) or YYYY-MM-DDTHH:MM:SSZ"
        )),
    }
}

/// A `--baseline-penalty`: a finite number, at least 0.
pub fn parse_penalty(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a penalty: give a number of at least 0 (e.g. 2.5)"
        )),
    }
}
