//! Running units of work as Slurm array jobs, with the work directory as the record.
//!
//! A batch of units is one job name (`lim-` and a digest of the units' digests), so the same
//! batch submitted again, or looked for after a crash, is found by name. Before every
//! submission the batch's ledger (`jobs/<name>.ledger`, JSON lines) records the intent (which
//! shards, which attempt), and after it the job id. The coordinator then polls `squeue` for
//! the name: it waits while tasks are queued or running, reads outputs (checksummed) as they
//! appear, and when nothing is left in the queue resubmits only the shards without a valid
//! output, up to the retry bound, recording why each failed. A coordinator that is killed and
//! started again with the same units attaches to the tasks still queued or running and never
//! submits work that has an output or is in the queue. Stopping (Ctrl-C, a deadline) cancels
//! the batch (`scancel --name`) and waits until the queue is empty.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::work::{WorkDir, WorkError, WorkOutput};

/// Slurm settings: flags of `lim backtest` or a TOML file of the same keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    /// Partition (`--partition`); the cluster's default when absent.
    pub partition: Option<String>,
    /// Account (`--account`).
    pub account: Option<String>,
    /// Shards the strategies are cut into: one array task each.
    pub shards: usize,
    /// CPUs per task (`--cpus-per-task`); the worker uses as many threads.
    pub cpus_per_task: usize,
    /// Processes per job (`--ntasks`), started by `srun`: the members of a data-parallel
    /// training group. 1 for everything else.
    pub ntasks: usize,
    /// Memory per task (`--mem`, e.g. "2G").
    pub mem: Option<String>,
    /// Time limit per task (`--time`, e.g. "00:30:00").
    pub time: Option<String>,
    /// Generic resources (`--gres`, e.g. "gpu:1").
    pub gres: Option<String>,
    /// Extra `#SBATCH` lines, verbatim (e.g. "--qos=low").
    pub extra: Vec<String>,
    /// Resubmissions of a shard that ended without a valid output.
    pub max_retries: u32,
    /// Milliseconds between polls of the queue.
    pub poll_ms: u64,
}

impl Default for SlurmConfig {
    fn default() -> SlurmConfig {
        SlurmConfig {
            partition: None,
            account: None,
            shards: 8,
            cpus_per_task: 1,
            ntasks: 1,
            mem: None,
            time: None,
            gres: None,
            extra: Vec::new(),
            max_retries: 2,
            poll_ms: 500,
        }
    }
}

/// Why a batch did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A scheduler command failed.
    #[error("{command}: {message}")]
    Scheduler {
        /// The command line.
        command: String,
        /// What it said.
        message: String,
    },
    /// The work directory failed.
    #[error(transparent)]
    Work(#[from] WorkError),
    /// A shard failed more often than the retry bound allows.
    #[error(
        "shard {index} (input {digest}) failed {attempts} times, the last: {reason}; its log is in {log}"
    )]
    Failed {
        /// The shard.
        index: usize,
        /// Its input.
        digest: String,
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        reason: String,
        /// The last attempt's log.
        log: String,
    },
    /// Stopped before the end: the batch was cancelled and nothing of it is queued.
    #[error("stopped ({0}); the batch was cancelled and nothing of it is left in the queue")]
    Stopped(String),
}

/// A task in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The array job's id.
    pub job: String,
    /// The array index.
    pub index: usize,
    /// Its state as the scheduler names it (PENDING, RUNNING…).
    pub state: String,
}

/// What the coordinator needs of a scheduler: Slurm's commands, or a stand-in in tests.
pub trait Scheduler {
    /// Submits `script` as an array job named `name` over `indices`; returns the job id.
    ///
    /// # Errors
    /// The submission was refused.
    fn submit(&self, name: &str, script: &Path, indices: &[usize]) -> Result<String, ClusterError>;
    /// Tasks named `name` still queued or running.
    ///
    /// # Errors
    /// The queue cannot be read.
    fn active(&self, name: &str) -> Result<Vec<Task>, ClusterError>;
    /// Cancels every task named `name`.
    ///
    /// # Errors
    /// The cancellation was refused.
    fn cancel(&self, name: &str) -> Result<(), ClusterError>;
    /// Why task `index` of `job` ended, if the scheduler still knows (state and exit code).
    fn ended(&self, job: &str, index: usize) -> Option<String>;
}

/// Slurm through its command-line tools (`sbatch`, `squeue`, `scancel`, `scontrol`), found on
/// `PATH`; they read `SLURM_CONF` from the environment the CLI was started in.
#[derive(Debug, Clone)]
pub struct Slurm {
    /// The settings.
    pub config: SlurmConfig,
    /// Where the logs go (`%A_%a.log` inside).
    pub logs: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String, ClusterError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| ClusterError::Scheduler {
        command: line.clone(),
        message: format!("{e} (is Slurm installed and SLURM_CONF set?)"),
    })?;
    if !out.status.success() {
        return Err(ClusterError::Scheduler {
            command: line,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `0,1,2,5,7,8` as `0-2,5,7-8`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            let _ = write!(out, "{}-{}", indices[i], indices[j]);
        } else {
            let _ = write!(out, "{}", indices[i]);
        }
        i = j + 1;
    }
    out
}

impl Scheduler for Slurm {
    fn submit(&self, name: &str, script: &Path, indices: &[usize]) -> Result<String, ClusterError> {
        let c = &self.config;
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--job-name={name}"))
            .arg(format!("--array={}", array_spec(indices)))
            .arg(format!(
                "--output={}",
                self.logs.join("%A_%a.log").display()
            ))
            .arg(format!("--cpus-per-task={}", c.cpus_per_task.max(1)));
        if c.ntasks > 1 {
            cmd.arg(format!("--ntasks={}", c.ntasks));
        }
        for (flag, v) in [
            ("partition", &c.partition),
            ("account", &c.account),
            ("mem", &c.mem),
            ("time", &c.time),
            ("gres", &c.gres),
        ] {
            if let Some(v) = v {
                cmd.arg(format!("--{flag}={v}"));
            }
        }
        cmd.arg(script);
        let out = run(&mut cmd)?;
        // `--parsable` prints "jobid" or "jobid;cluster".
        Ok(out.trim().split(';').next().unwrap_or_default().to_string())
    }

    fn active(&self, name: &str) -> Result<Vec<Task>, ClusterError> {
        let out = run(Command::new("squeue")
            .args(["-h", "-r", "-o", "%F|%K|%T"])
            .arg(format!("--name={name}")))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().split('|');
                let job = f.next()?.to_string();
                let index = f.next()?.parse().ok()?;
                let state = f.next()?.to_string();
                Some(Task { job, index, state })
            })
            .collect())
    }

    fn cancel(&self, name: &str) -> Result<(), ClusterError> {
        run(Command::new("scancel").arg(format!("--name={name}"))).map(|_| ())
    }

    fn ended(&self, job: &str, index: usize) -> Option<String> {
        let out =
            run(Command::new("scontrol").args(["-o", "show", "job", &format!("{job}_{index}")]))
                .ok()?;
        let field = |k: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_string)
        };
        Some(format!(
            "{} (exit code {}, reason {})",
            field("JobState=")?,
            field("ExitCode=").unwrap_or_else(|| "?".into()),
            field("Reason=").unwrap_or_else(|| "None".into())
        ))
    }
}

/// How far a batch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The batch's job name.
    pub name: String,
    /// Shards with a valid output.
    pub done: usize,
    /// Shards running.
    pub running: usize,
    /// Shards queued.
    pub pending: usize,
    /// Shards in all.
    pub total: usize,
    /// Resubmissions so far.
    pub retries: u32,
}

/// One line of a batch's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LedgerEntry {
    /// About to submit these shards (written before `sbatch`).
    Submit {
        /// Attempt number of this submission (1 for the first).
        attempt: u32,
        /// The shards.
        indices: Vec<usize>,
    },
    /// The submission's job id.
    Submitted {
        /// The job.
        job: String,
    },
    /// A shard ended without a valid output.
    Failed {
        /// The shard.
        index: usize,
        /// The job it ran in.
        job: String,
        /// Why.
        reason: String,
    },
}

/// The batch's ledger: its entries so far.
pub fn read_ledger(path: &Path) -> Vec<LedgerEntry> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // A line torn by a crash is the last one: it is skipped.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn append(path: &Path, e: &LedgerEntry) -> Result<(), WorkError> {
    let err = |source| WorkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let mut line = serde_json::to_string(e).unwrap_or_default();
    line.push('\n');
    f.write_all(line.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Where one batch of a work directory stands (see [`batches`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchState {
    /// Its job name.
    pub name: String,
    /// Its shards.
    pub shards: usize,
    /// Submissions recorded (1 plus resubmissions).
    pub submissions: usize,
    /// Shards that ended without an output, over all submissions.
    pub failures: usize,
    /// Its tasks still queued or running, when the scheduler answered.
    pub queued: Option<usize>,
}

/// The batches recorded in the work directory `work` (a run's `work/`), in name order, each
/// with its tasks in `sched`'s queue when one is given and answers.
pub fn batches(work: &Path, sched: Option<&dyn Scheduler>) -> Vec<BatchState> {
    let Ok(dir) = std::fs::read_dir(work.join("jobs")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ledger"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let jobs = work.join("jobs");
            let ledger = read_ledger(&jobs.join(format!("{name}.ledger")));
            let count = |f: fn(&LedgerEntry) -> bool| ledger.iter().filter(|e| f(e)).count();
            BatchState {
                shards: std::fs::read_to_string(jobs.join(format!("{name}.list")))
                    .map_or(0, |t| t.lines().count()),
                submissions: count(|e| matches!(e, LedgerEntry::Submit { .. })),
                failures: count(|e| matches!(e, LedgerEntry::Failed { .. })),
                queued: sched.and_then(|s| s.active(&name).ok()).map(|a| a.len()),
                name,
            }
        })
        .collect()
}

/// The job name of a batch of inputs in a work directory: the same work in another directory
/// (another run) is another batch, so runs never attach to, or cancel, each other's jobs.
pub fn batch_name(work: &Path, digests: &[String]) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(
        format!("{}\n{}", work.display(), digests.join("\n")).as_bytes(),
    );
    format!("lim-{:012x}", h & 0xffff_ffff_ffff)
}

/// How the worker is started on the cluster's nodes.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The `lim` executable (on a path the nodes share).
    pub program: PathBuf,
    /// Arguments after the worker's own (e.g. `--data DIR`).
    pub args: Vec<String>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Reads the queue, riding out a scheduler that does not answer for a while (a controller
/// restarting, a timeout under load): up to [`QUEUE_TRIES`] reads, `poll` apart and doubling
/// up to 20 polls (at most 10 s), before the batch fails with the last error.
fn active_patiently(
    sched: &dyn Scheduler,
    name: &str,
    poll: Duration,
) -> Result<Vec<Task>, ClusterError> {
    let mut wait = poll;
    let mut tries = 1;
    loop {
        match sched.active(name) {
            Ok(a) => return Ok(a),
            Err(e) if tries >= QUEUE_TRIES => return Err(e),
            Err(_) => {
                std::thread::sleep(wait);
                wait = (wait * 2).min((poll * 20).min(Duration::from_secs(10)));
                tries += 1;
            }
        }
    }
}

/// Reads of the queue before an unanswering scheduler fails the batch (about a minute with
/// the default poll).
pub const QUEUE_TRIES: u32 = 10;

/// Runs the units named by `digests` (stored in `wd`) on `sched` and returns their outputs in
/// order. `stop` is asked between polls; when it names a reason the batch is cancelled.
///
/// # Errors
/// A shard failed past the retry bound, the scheduler or the work directory failed, or it
/// was stopped.
pub fn run_batch(
    wd: &WorkDir,
    digests: &[String],
    sched: &dyn Scheduler,
    config: &SlurmConfig,
    worker: &WorkerCommand,
    stop: &dyn Fn() -> Option<String>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<WorkOutput>, ClusterError> {
    let name = batch_name(wd.root(), digests);
    let jobs = wd.root().join("jobs");
    let list = jobs.join(format!("{name}.list"));
    let script = jobs.join(format!("{name}.sh"));
    let ledger = jobs.join(format!("{name}.ledger"));
    std::fs::write(&list, digests.join("\n") + "\n").map_err(|source| WorkError::Io {
        path: list.clone(),
        source,
    })?;
    let mut sh = String::from("#!/bin/sh\n");
    for line in &config.extra {
        let _ = writeln!(sh, "#SBATCH {line}");
    }
    let _ = writeln!(
        sh,
        "export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\nexec {}{} worker --work-dir {} --list {} --index \"$SLURM_ARRAY_TASK_ID\" {}",
        // A group's processes: one worker per task; one failing stops the others.
        if config.ntasks > 1 {
            "srun --kill-on-bad-exit=1 --cpus-per-task=\"${SLURM_CPUS_PER_TASK:-1}\" "
        } else {
            ""
        },
        quote(&worker.program.display().to_string()),
        quote(&wd.root().display().to_string()),
        quote(&list.display().to_string()),
        worker
            .args
            .iter()
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    );
    std::fs::write(&script, sh).map_err(|source| WorkError::Io {
        path: script.clone(),
        source,
    })?;
    let mut outputs: Vec<Option<WorkOutput>> = vec![None; digests.len()];
    let poll = Duration::from_millis(config.poll_ms.max(10));
    loop {
        if let Some(why) = stop() {
            sched.cancel(&name)?;
            for _ in 0..300 {
                if sched.active(&name)?.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            return Err(ClusterError::Stopped(why));
        }
        let active = active_patiently(sched, &name, poll)?;
        for (i, d) in digests.iter().enumerate() {
            if outputs[i].is_none() {
                match wd.output(d) {
                    Ok(o) => outputs[i] = o,
                    // Damaged (a torn write, a full disk): run it again.
                    Err(WorkError::Corrupt { path, .. }) if active.is_empty() => {
                        let _ = std::fs::remove_file(path);
                    }
                    Err(WorkError::Corrupt { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let entries = read_ledger(&ledger);
        let mut attempts = vec![0u32; digests.len()];
        let mut last_job = vec![String::new(); digests.len()];
        let mut current: Option<Vec<usize>> = None;
        for e in &entries {
            match e {
                LedgerEntry::Submit { indices, .. } => {
                    for &i in indices {
                        if let Some(a) = attempts.get_mut(i) {
                            *a += 1;
                        }
                    }
                    current = Some(indices.clone());
                }
                LedgerEntry::Submitted { job } => {
                    for &i in current.iter().flatten() {
                        if let Some(j) = last_job.get_mut(i) {
                            j.clone_from(job);
                        }
                    }
                }
                LedgerEntry::Failed { .. } => {}
            }
        }
        let done = outputs.iter().filter(|o| o.is_some()).count();
        // A task whose output is in counts as done while Slurm finishes it.
        let open: Vec<&Task> = active
            .iter()
            .filter(|t| outputs.get(t.index).is_some_and(Option::is_none))
            .collect();
        let running = open.iter().filter(|t| t.state == "RUNNING").count();
        progress(&Progress {
            name: name.clone(),
            done,
            running,
            pending: open.len() - running,
            total: digests.len(),
            retries: attempts.iter().map(|a| a.saturating_sub(1)).sum(),
        });
        if done == digests.len() {
            return Ok(outputs.into_iter().flatten().collect());
        }
        if active.is_empty() {
            let missing: Vec<usize> = (0..digests.len())
                .filter(|&i| outputs[i].is_none())
                .collect();
            for &i in &missing {
                if attempts[i] == 0 {
                    continue;
                }
                let log = wd
                    .root()
                    .join("logs")
                    .join(format!("{}_{i}.log", last_job[i]));
                // The worker's error line, else its last words.
                let said = std::fs::read_to_string(&log).ok().and_then(|t| {
                    let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
                    lines
                        .iter()
                        .rev()
                        .find(|l| l.starts_with("error"))
                        .or(lines.last())
                        .map(|l| l.to_string())
                });
                let reason = match (sched.ended(&last_job[i], i), said) {
                    (Some(s), Some(l)) => format!("{s}: {l}"),
                    (Some(s), None) => s,
                    (None, Some(l)) => l,
                    (None, None) => "ended without an output or a log".to_string(),
                };
                append(
                    &ledger,
                    &LedgerEntry::Failed {
                        index: i,
                        job: last_job[i].clone(),
                        reason: reason.clone(),
                    },
                )?;
                if attempts[i] > config.max_retries {
                    return Err(ClusterError::Failed {
                        index: i,
                        digest: digests[i].clone(),
                        attempts: attempts[i],
                        reason,
                        log: log.display().to_string(),
                    });
                }
            }
            let attempt = missing.iter().map(|&i| attempts[i]).max().unwrap_or(0) + 1;
            append(
                &ledger,
                &LedgerEntry::Submit {
                    attempt,
                    indices: missing.clone(),
                },
            )?;
            let job = sched.submit(&name, &script, &missing)?;
            append(&ledger, &LedgerEntry::Submitted { job })?;
            continue;
        }
        std::thread::sleep(poll);
    }
}

/// The backtest tool's work as Slurm array jobs: each call is one batch (see [`run_batch`]),
/// its shards measured with the selection folds, as the tool does in process.
#[derive(Clone)]
pub struct SlurmBacktests {
    /// The shared work directory (a run's own, so its batches are found again on resume).
    pub work: super::work::WorkDir,
    /// The scheduler and its settings.
    pub slurm: Slurm,
    /// How nodes start the worker.
    pub worker: WorkerCommand,
    /// Asked between polls: a reason to stop (Ctrl-C) cancels the batch.
    pub stop: std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>,
    /// Told how each batch is doing.
    pub progress: std::sync::Arc<dyn Fn(&Progress) + Send + Sync>,
}

impl std::fmt::Debug for SlurmBacktests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmBacktests")
            .field("work", &self.work)
            .field("slurm", &self.slurm)
            .finish_non_exhaustive()
    }
}

impl SlurmBacktests {
    /// Runs `specs` on the universe `recipe` loads as one batch of shards, measuring `parts`
    /// (`detail`: years, walk-forward folds and IC decay; `selection_folds`: the fitness
    /// folds), and returns one result per spec, in order, each with its book.
    ///
    /// # Errors
    /// The work directory or the scheduler failed, a shard failed past the retry bound, or
    /// the batch was stopped.
    pub fn run_specs(
        &self,
        recipe: &lim_tools::ChooseUniverseArgs,
        specs: &[(String, lim_backtest::spec::StrategySpec)],
        parts: &[lim_market::Part],
        detail: bool,
        selection_folds: bool,
    ) -> Result<Vec<lim_backtest::session::StrategyResult>, ClusterError> {
        let digests = super::work::shard(specs, self.slurm.config.shards)
            .into_iter()
            .map(|specs| {
                self.work.put(&super::work::WorkUnit::Backtest(
                    super::work::BacktestShard {
                        universe: recipe.clone(),
                        specs,
                        parts: parts.to_vec(),
                        detail,
                        selection_folds,
                    },
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stop = || (self.stop)();
        let mut progress = |p: &Progress| (self.progress)(p);
        Ok(run_batch(
            &self.work,
            &digests,
            &self.slurm,
            &self.slurm.config,
            &self.worker,
            &stop,
            &mut progress,
        )?
        .into_iter()
        .flat_map(|o| o.results)
        .collect())
    }
}

impl lim_tools::RemoteBacktests for SlurmBacktests {
    fn run(
        &self,
        recipe: &lim_tools::ChooseUniverseArgs,
        specs: &[(String, lim_backtest::spec::StrategySpec)],
        parts: &[lim_market::Part],
    ) -> Result<Vec<lim_backtest::session::StrategyResult>, String> {
        self.run_specs(recipe, specs, parts, false, true)
            .map_err(|e| e.to_string())
    }
}
