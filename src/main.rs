//! `lim`: the command-line front end of LIM.
//!
//! This binary is the only place that reads environment variables and decides where data and
//! caches live; the libraries take everything as arguments.

mod backtest_cmd;
mod bench_cmd;
mod cluster_args;
mod data_cmd;
mod forecaster;
mod foundation_cmd;
mod research_cmd;
mod serve_cmd;
mod table;
mod worker_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lim_market::{Cache, Catalog};

#[derive(Debug, Parser)]
#[command(
    name = "lim",
    version,
    about = "LLM agents around a market foundation model, for honest strategy research"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and validate market data.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Backtest strategy expressions: metrics by split, multiple-testing statistics.
    Backtest(backtest_cmd::BacktestArgs),
    /// Research toward a goal: plan, data, strategy loop, sealed test, report. Durable: every
    /// step is journaled in the run store.
    Research(research_cmd::ResearchArgs),
    /// List the runs in the run store.
    Runs(research_cmd::RunsArgs),
    /// Print a run's report (or where an unfinished run stands).
    Show(research_cmd::ShowArgs),
    /// Benchmarks of LIM's research (`lim bench research`).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// The research memory: what finished runs found, per dataset (`lim memory clear` forgets).
    Memory(research_cmd::MemoryArgs),
    /// Continue a run after a crash or kill; journaled work is not redone or paid for again.
    Resume(research_cmd::ResumeArgs),
    /// Re-execute a run (id or trace file) against its journal: no LLM, no network.
    Replay(research_cmd::ReplayArgs),
    /// Export traces.
    #[command(subcommand)]
    Trace(research_cmd::TraceCommand),
    /// Show the research workflow.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// The market foundation model: pretrain, fine-tune, predict, transfer, list.
    #[command(subcommand)]
    Foundation(Box<foundation_cmd::FoundationCommand>),
    /// Run one unit of work from a work directory (what a cluster job runs).
    Worker(worker_cmd::WorkerArgs),
    /// Browse the run store in a web browser: runs, reports, journals, comparisons (read-only).
    Serve(serve_cmd::ServeArgs),
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Print the research workflow's nodes and edges (text, or Graphviz DOT with --dot).
    Show {
        /// Print Graphviz DOT (`lim workflow show --dot | dot -Tsvg > workflow.svg`).
        #[arg(long, conflicts_with = "json")]
        dot: bool,
        /// Print JSON: the nodes (kind, inputs, outputs) in order, then the edges.
        #[arg(long)]
        json: bool,
        /// Iteration bound of the strategy loop.
        #[arg(long, default_value_t = 20)]
        max_iterations: u32,
    },
}

fn workflow(cmd: WorkflowCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkflowCommand::Show {
            dot,
            json,
            max_iterations,
        } => {
            let wf = lim_pipelines::research(max_iterations)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&wf.to_json())?);
            } else {
                print!("{}", if dot { wf.to_dot() } else { wf.to_text() });
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where data and caches come from; shared by every command that reads data.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Data directory of `*.csv` / `*.csv.gz` files in the uniform format. Default: $LIM_DATA,
    /// else the bundled sample.
    #[arg(long, value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    /// Cache directory. Default: $LIM_CACHE, else $XDG_CACHE_HOME/lim, else ~/.cache/lim.
    #[arg(long, value_name = "DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Parse sources every time; read and write no cache.
    #[arg(long, global = true)]
    no_cache: bool,
}

impl DataArgs {
    /// The cache, resolved from flags and environment.
    pub fn cache(&self) -> Option<Cache> {
        if self.no_cache {
            return None;
        }
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        self.cache_dir
            .clone()
            .or_else(|| env("LIM_CACHE"))
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("lim")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("lim")))
            .map(Cache::new)
    }

    /// The catalog: `--data`, then `$LIM_DATA`, then the bundled sample.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        self.catalog_or(None)
    }

    /// The data directory the flags or the environment name, if any.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.data.clone().or_else(|| {
            std::env::var_os("LIM_DATA")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// The catalog of the flags or the environment, else of `remembered` (a run's own data
    /// directory), else the bundled sample.
    pub fn catalog_or(&self, remembered: Option<PathBuf>) -> anyhow::Result<Catalog> {
        let catalog = match self.data_dir().or(remembered) {
            Some(dir) => Catalog::open_dir(&dir, self.cache())?,
            None => Catalog::bundled(self.cache()),
        };
        Ok(catalog.with_progress(data_cmd::progress_sink()))
    }
}

/// A flag set by the first Ctrl-C, for synchronous loops that poll it (the Slurm coordinator
/// cancels its jobs when it is set).
pub(crate) fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            && rt.block_on(tokio::signal::ctrl_c()).is_ok()
        {
            set.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    flag
}

/// A reader that stops early (`lim research ... | head`) closes the pipe, and the next print
/// fails with EPIPE, which `println!` turns into a panic. Exit quietly instead, with the status
/// a shell gives a process killed by SIGPIPE (141); any other panic is reported as usual. A run
/// cut short this way is journaled like a killed one: `lim resume` continues it.
fn quiet_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Backtest(args) => backtest_cmd::run(args),
        Command::Workflow(cmd) => workflow(cmd),
        Command::Research(args) => research_cmd::research(args),
        Command::Runs(args) => research_cmd::runs(args),
        Command::Show(args) => research_cmd::show(args),
        Command::Memory(args) => research_cmd::memory(args),
        Command::Bench(cmd) => bench_cmd::run(cmd),
        Command::Resume(args) => research_cmd::resume(args),
        Command::Replay(args) => research_cmd::replay(args),
        Command::Trace(cmd) => research_cmd::trace_cmd(cmd),
        Command::Foundation(cmd) => foundation_cmd::run(*cmd),
        Command::Worker(args) => worker_cmd::run(args),
        Command::Serve(args) => serve_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            // Many errors already end with their cause's text; print each only once.
            let mut said = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !said.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                said = text;
            }
            ExitCode::from(2)
        }
    }
}
