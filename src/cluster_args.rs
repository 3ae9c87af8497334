//! The flags that send heavy work to a cluster, shared by `lim backtest`, `lim research` and
//! `lim resume` (see docs/cluster.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Args;
use lim_pipelines::cluster::slurm::{Progress, Slurm, SlurmBacktests, SlurmConfig, WorkerCommand};
use lim_pipelines::cluster::work::WorkDir;

use crate::DataArgs;

/// Where heavy work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    /// In this process.
    Local,
    /// As Slurm array jobs (`sbatch`, `squeue`, `scancel` on PATH; SLURM_CONF as usual).
    Slurm,
}

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Where backtests run: here, or as a Slurm array job of --shards tasks, each a
    /// `lim worker` (results are the same bit for bit).
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    #[command(flatten)]
    pub site: SlurmSite,
    /// Array tasks a batch of backtests is cut into (default 8).
    #[arg(long)]
    pub shards: Option<usize>,
}

/// Which Slurm settings apply: a TOML file, then the partition and account flags. Shared by
/// backtests ([`ClusterArgs`]) and training jobs ([`JobArgs`]).
#[derive(Debug, Clone, Args)]
pub struct SlurmSite {
    /// Slurm settings as TOML: partition, account, shards, cpus_per_task, ntasks (pretraining
    /// only), mem, time, gres, extra (#SBATCH lines), max_retries, poll_ms. The flags override
    /// it.
    #[arg(long, value_name = "FILE")]
    pub slurm_config: Option<PathBuf>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    pub account: Option<String>,
}

impl SlurmSite {
    /// The Slurm settings: the file's, then the flags'.
    pub fn config(&self) -> anyhow::Result<SlurmConfig> {
        let mut config = match &self.slurm_config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the Slurm config '{}'", path.display())
                })?;
                toml::from_str::<SlurmConfig>(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "Slurm config '{}': {}; keys are partition, account, shards, cpus_per_task, ntasks, mem, time, gres, extra, max_retries, poll_ms",
                        path.display(),
                        e.message().trim()
                    )
                })?
            }
            None => SlurmConfig::default(),
        };
        if self.partition.is_some() {
            config.partition.clone_from(&self.partition);
        }
        if self.account.is_some() {
            config.account.clone_from(&self.account);
        }
        Ok(config)
    }
}

impl ClusterArgs {
    /// The Slurm settings: the file's, then the flags'. Backtests run one process per task.
    pub fn slurm_config(&self) -> anyhow::Result<SlurmConfig> {
        let mut config = self.site.config()?;
        if config.ntasks > 1 {
            anyhow::bail!(
                "Slurm config '{}': ntasks = {}: a batch of backtests runs one process per task; ntasks is for `lim foundation pretrain` (remove it from this file)",
                self.site
                    .slurm_config
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                config.ntasks
            );
        }
        if let Some(n) = self.shards {
            config.shards = n;
        }
        Ok(config)
    }
}

/// How a cluster node starts `lim worker` on the same data: this executable, the data
/// directory (`data_dir`, when not the bundled sample) and the cache flags.
pub fn worker_command(data: &DataArgs, data_dir: Option<&Path>) -> anyhow::Result<WorkerCommand> {
    let mut args = Vec::new();
    if let Some(d) = data_dir {
        let d = d.canonicalize().unwrap_or_else(|_| d.to_path_buf());
        args.extend(["--data".to_string(), d.display().to_string()]);
    }
    if let Some(c) = &data.cache_dir {
        args.extend(["--cache-dir".to_string(), c.display().to_string()]);
    }
    if data.no_cache {
        args.push("--no-cache".to_string());
    }
    Ok(WorkerCommand {
        program: std::env::current_exe().context("cannot find the lim executable")?,
        args,
    })
}

/// A progress printer for batches: one line per change, rewritten in place on a terminal.
pub fn progress_printer(tty: bool) -> impl FnMut(&Progress) + Send + 'static {
    let mut last = String::new();
    move |p: &Progress| {
        let line = format!(
            "slurm {}: {}/{} shards done, {} running, {} queued, {} retries",
            p.name, p.done, p.total, p.running, p.pending, p.retries
        );
        if line != last {
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
            last = line;
        }
    }
}

/// Backtests on Slurm through the work directory `work`, stopped when `stop` names a reason.
pub fn slurm_backtests(
    cluster: &ClusterArgs,
    data: &DataArgs,
    data_dir: Option<&Path>,
    work: &Path,
    stop: Arc<dyn Fn() -> Option<String> + Send + Sync>,
    tty: bool,
) -> anyhow::Result<SlurmBacktests> {
    let config = cluster.slurm_config()?;
    let work = WorkDir::open(work)?;
    let logs = work.root().join("logs");
    let printer = std::sync::Mutex::new(progress_printer(tty));
    Ok(SlurmBacktests {
        work,
        slurm: Slurm { config, logs },
        worker: worker_command(data, data_dir)?,
        stop,
        progress: Arc::new(move |p: &Progress| {
            if let Ok(mut f) = printer.lock() {
                f(p);
            }
        }),
    })
}

/// What stops a batch on the cluster: Ctrl-C (`interrupted`), or the wall clock passing
/// `deadline`, reported as `why`.
pub fn stop_when(
    interrupted: Arc<AtomicBool>,
    deadline: Option<std::time::SystemTime>,
    why: &'static str,
) -> Arc<dyn Fn() -> Option<String> + Send + Sync> {
    Arc::new(move || {
        if interrupted.load(Ordering::SeqCst) {
            Some("interrupted".to_string())
        } else if deadline.is_some_and(|d| std::time::SystemTime::now() >= d) {
            Some(why.to_string())
        } else {
            None
        }
    })
}

/// The research run's backtests on Slurm (`None` when they run here), through `work` (the
/// run's own directory), stopped by `stop` (Ctrl-C) or once the wall clock passes
/// `deadline_ms` (ms since the epoch: the run's creation plus its `--deadline`). A batch in
/// flight then is cancelled (`scancel`) and the backtest tool reports why; the run's stop
/// rule, reading its journaled clock, ends the run for its deadline at the next check. Replay
/// never comes here: it reads the tool's journaled answer.
pub fn research_backtests(
    cluster: &ClusterArgs,
    data: &DataArgs,
    data_dir: Option<&Path>,
    work: &Path,
    (stop, deadline_ms): (Arc<AtomicBool>, Option<i64>),
    tty: bool,
) -> anyhow::Result<Option<Arc<dyn lim_tools::RemoteBacktests>>> {
    if cluster.executor == Executor::Local {
        return Ok(None);
    }
    let deadline = deadline_ms.map(|ms| {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    });
    let stop = stop_when(stop, deadline, "the run's deadline passed");
    Ok(Some(Arc::new(slurm_backtests(
        cluster, data, data_dir, work, stop, tty,
    )?)))
}

/// Where a training command runs, and what its Slurm job asks for (`lim foundation pretrain`
/// and `finetune`; see docs/cluster.md).
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Where the training runs: here, or as one Slurm job (a `lim worker` on a node runs this
    /// very command; checkpoints land in the models directory, which the nodes must share).
    /// Run again after a crash, it attaches to the job instead of submitting it twice; a
    /// failed job is resubmitted and continues from its last checkpoint.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    #[command(flatten)]
    pub site: SlurmSite,
    /// CPUs for the job (`--cpus-per-task`; per process with --ntasks).
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// Processes of a data-parallel pretraining job, started by `srun` (add `--nodes=N` or a
    /// GPU per task through the Slurm config's extra lines); they find each other through the
    /// models directory and train the model one process trains with the same --shards.
    #[arg(long, value_name = "N")]
    pub ntasks: Option<usize>,
    /// Memory for the job (`--mem`, e.g. 8G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Generic resources (`--gres`, e.g. gpu:1; pair with --device cuda).
    #[arg(long)]
    pub gres: Option<String>,
    /// Wall-time limit of the job (`--time`, e.g. 08:00:00).
    #[arg(long, value_name = "LIMIT")]
    pub time_limit: Option<String>,
    /// Directory the coordinator and the job share: the unit, the job's log and its ledger.
    #[arg(long, value_name = "DIR", default_value = "lim-work")]
    pub job_dir: PathBuf,
}

impl JobArgs {
    /// Processes per task: `--ntasks`, else the Slurm config's `ntasks` (on Slurm), else 1.
    pub fn processes(&self) -> anyhow::Result<usize> {
        Ok(match self.ntasks {
            Some(n) => n,
            None if self.executor == Executor::Slurm => self.site.config()?.ntasks,
            None => 1,
        })
    }

    /// Refuses more than one process per task (`--ntasks`, or `ntasks` in the Slurm config)
    /// for `command`, which runs as one process.
    pub fn one_process(&self, command: &str) -> anyhow::Result<()> {
        let n = self.processes()?;
        if n > 1 {
            anyhow::bail!(
                "ntasks {n}: {command} runs as one process; only `lim foundation pretrain` trains as a group of processes (drop --ntasks, or ntasks from the Slurm config)"
            );
        }
        Ok(())
    }
}

/// The job flags of [`JobArgs`], which the job's own command line must not repeat.
const JOB_FLAGS: [&str; 10] = [
    "--executor",
    "--ntasks",
    "--slurm-config",
    "--partition",
    "--account",
    "--cpus-per-task",
    "--mem",
    "--gres",
    "--time-limit",
    "--job-dir",
];

/// This process's arguments without the job flags and `replaced` (each takes a value), with
/// `--json` and `extra` appended: the command a job runs.
pub fn job_command_line(replaced: &[&str], extra: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    let strip = |a: &str| JOB_FLAGS.contains(&a) || replaced.contains(&a);
    while let Some(a) = args.next() {
        if strip(&a) {
            args.next();
            continue;
        }
        if a.split_once('=').is_some_and(|(f, _)| strip(f)) {
            continue;
        }
        out.push(a);
    }
    if !out.iter().any(|a| a == "--json") {
        out.push("--json".to_string());
    }
    out.extend(extra.iter().cloned());
    out
}

/// Runs `unit` as one Slurm job with `job`'s resources (attaching to it when it is already
/// queued or done), and returns the command's `--json` summary.
pub fn run_job(
    job: &JobArgs,
    data: &DataArgs,
    unit: lim_pipelines::cluster::work::CommandUnit,
) -> anyhow::Result<serde_json::Value> {
    Ok(run_jobs(job, data, vec![unit])?
        .into_iter()
        .next()
        .unwrap_or(serde_json::Value::Null))
}

/// Runs `units` as one Slurm array job (one task each) with `job`'s resources per task,
/// attaching to it when it is already queued or done; returns each command's `--json`
/// summary, in order.
pub fn run_jobs(
    job: &JobArgs,
    data: &DataArgs,
    units: Vec<lim_pipelines::cluster::work::CommandUnit>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    use lim_pipelines::cluster::slurm::run_batch;
    use lim_pipelines::cluster::work::WorkUnit;
    let mut config = job.site.config()?;
    if let Some(c) = job.cpus_per_task {
        config.cpus_per_task = c;
    }
    if let Some(n) = job.ntasks {
        config.ntasks = n.max(1);
    }
    for (field, flag) in [
        (&mut config.mem, &job.mem),
        (&mut config.gres, &job.gres),
        (&mut config.time, &job.time_limit),
    ] {
        if flag.is_some() {
            field.clone_from(flag);
        }
    }
    let wd = WorkDir::open(&job.job_dir)?;
    let digests = units
        .into_iter()
        .map(|u| wd.put(&WorkUnit::Command(u)))
        .collect::<Result<Vec<_>, _>>()?;
    let worker = worker_command(data, data.data_dir().as_deref())?;
    let interrupted = crate::interrupt_flag();
    let stop = move || {
        interrupted
            .load(Ordering::SeqCst)
            .then(|| "interrupted".to_string())
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = progress_printer(tty);
    let slurm = Slurm {
        config: config.clone(),
        logs: wd.root().join("logs"),
    };
    let out = run_batch(
        &wd,
        &digests,
        &slurm,
        &config,
        &worker,
        &stop,
        &mut progress,
    );
    if tty {
        eprintln!();
    }
    Ok(out?
        .into_iter()
        .map(|o| o.summary.unwrap_or(serde_json::Value::Null))
        .collect())
}
