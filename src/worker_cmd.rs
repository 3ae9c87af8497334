//! `lim worker`: runs one unit of work from a work directory and writes its output there (what
//! a Slurm array task runs; see `lim_pipelines::cluster`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use lim_pipelines::cluster::work::{CommandUnit, WorkDir, WorkUnit};

use crate::DataArgs;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The shared work directory (inputs/, outputs/, logs/, jobs/).
    #[arg(long, value_name = "DIR")]
    work_dir: PathBuf,
    /// The input's digest.
    #[arg(long, conflicts_with_all = ["list", "index"])]
    input: Option<String>,
    /// A file of input digests, one per line (an array job's list) …
    #[arg(long, requires = "index")]
    list: Option<PathBuf>,
    /// … and the line to run (the array task id, from 0).
    #[arg(long)]
    index: Option<usize>,
    #[command(flatten)]
    data: DataArgs,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let wd = WorkDir::open(&args.work_dir)?;
    let digest = match (&args.input, &args.list, args.index) {
        (Some(d), None, None) => d.clone(),
        (None, Some(list), Some(i)) => {
            let text = std::fs::read_to_string(list)
                .with_context(|| format!("cannot read the input list '{}'", list.display()))?;
            text.lines()
                .nth(i)
                .map(|l| l.trim().to_string())
                .with_context(|| {
                    format!(
                        "the input list '{}' has {} lines; there is no line {i}",
                        list.display(),
                        text.lines().count()
                    )
                })?
        }
        _ => bail!("give --input DIGEST, or --list FILE with --index N"),
    };
    if wd.output(&digest).is_ok_and(|o| o.is_some()) {
        eprintln!("{digest}: already done");
        return Ok(ExitCode::SUCCESS);
    }
    let unit = wd.get(&digest)?;
    if let WorkUnit::Command(c) = &unit {
        return run_command(&wd, &digest, c);
    }
    let market = args.data.catalog()?;
    let started = std::time::Instant::now();
    let results = unit.execute(&market)?;
    wd.put_output(&digest, &results)?;
    eprintln!(
        "{digest}: {} results in {:.2} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a command unit as a child `lim` (its progress goes to this task's log), and keeps its
/// `--json` summary as the output once it succeeds.
fn run_command(wd: &WorkDir, digest: &str, c: &CommandUnit) -> anyhow::Result<ExitCode> {
    let args = c.args_now();
    eprintln!("{digest}: lim {}", args.join(" "));
    let started = std::time::Instant::now();
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(&args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start lim for the command unit")?;
    if !out.status.success() {
        bail!(
            "the command 'lim {}' failed: {}",
            args.join(" "),
            out.status
        );
    }
    // In a group started by `srun`, rank 0 speaks for the job.
    let rank = std::env::var("SLURM_PROCID")
        .ok()
        .and_then(|r| r.parse::<u64>().ok());
    if rank.is_some_and(|r| r > 0) {
        eprintln!(
            "{digest}: rank {} done in {:.1} s",
            rank.unwrap_or(0),
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(text.trim())
        .unwrap_or_else(|_| serde_json::Value::String(text.trim().to_string()));
    wd.put_summary(digest, summary)?;
    eprintln!("{digest}: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
