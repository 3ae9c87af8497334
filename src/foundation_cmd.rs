//! `lim foundation ...`: pretrain, fine-tune, predict, compare transfer, list models.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use lim_foundation::checkpoint::{DataManifest, Kind, Meta, ParentRef, Store};
use lim_foundation::config::{
    FinetuneConfig, MixtureEntry, Mode, ModelConfig, PretrainConfig, Target,
};
use lim_foundation::finetune::{FinetuneRun, samples, target_universe};
use lim_foundation::model::{Predictor, Pretrainer};
use lim_foundation::predict::predict_panel;
use lim_foundation::pretrain::{PretrainData, Run, StepReport};
use lim_foundation::transfer::{self, TransferReport, TransferSpec};
use lim_foundation::{Device, DeviceKind};
use lim_market::{AsOf, Timestamp};
use serde::Serialize;

use crate::DataArgs;
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum FoundationCommand {
    /// Pretrain a backbone on a weighted mixture of datasets up to a cutoff (resumable).
    Pretrain(PretrainArgs),
    /// Fine-tune a head on a target: linear probe or full, on a pretrained model or from scratch.
    Finetune(FinetuneArgs),
    /// Write a fine-tuned model's prediction panel for a universe and period (strictly after
    /// everything it learned from).
    Predict(PredictArgs),
    /// Compare scratch, target-only pretraining and cross-market pretraining on a held-out
    /// test period (IC, rank IC, ICIR; with --target-kind vol, QLIKE beside EWMA and HAR-RV).
    Transfer(TransferArgs),
    /// The evaluation grid: targets × seeds of the transfer comparison, each cell kept in --out
    /// as it finishes (a killed grid continues where it stopped), then a table over seeds with
    /// each arm's paired difference from scratch and its t-statistic.
    Eval(Box<EvalArgs>),
    /// List models with their data manifests and lineage.
    List(ListArgs),
}

/// The models directory: `explicit`, else $LIM_MODELS, else $XDG_DATA_HOME/lim/models, else
/// ~/.local/share/lim/models.
pub fn models_dir(explicit: Option<PathBuf>) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    explicit
        .or_else(|| env("LIM_MODELS"))
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("lim").join("models")))
        .or_else(|| env("HOME").map(|d| d.join(".local/share/lim/models")))
        .unwrap_or_else(|| PathBuf::from("lim-models"))
}

/// Where models live and which device computes.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Models directory. Default: $LIM_MODELS, else $XDG_DATA_HOME/lim/models, else
    /// ~/.local/share/lim/models.
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Compute device: cpu (burn's flex backend), cuda or wgpu (builds with those features).
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl ModelArgs {
    fn store(&self) -> Store {
        Store::new(models_dir(self.models_dir.clone()))
    }

    fn device(&self) -> anyhow::Result<Device> {
        Ok(DeviceKind::parse(&self.device)?.device()?)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// d_model 16, 1 layer, 4 patches of 4 (tests).
    Tiny,
    /// d_model 32, 2 layers, 8 patches of 8 (a 64-bar window).
    Small,
    /// d_model 64, 2 layers, 4 heads, 32 patches of 16 (the benchmark's reference).
    Reference,
    /// d_model 128, 4 layers, 8 heads, 32 patches of 16: pretrains overnight on 2 cores
    /// (docs/foundation.md: steps that fit 8 hours).
    Base,
    /// d_model 256, 6 layers, 8 heads, 32 patches of 16: for a GPU (`--device cuda`).
    Large,
}

/// The model's shape: a preset with overrides.
#[derive(Debug, Clone, Args)]
pub struct ShapeArgs {
    /// Starting configuration.
    #[arg(long, value_enum, default_value = "small")]
    config: Preset,
    /// Token width.
    #[arg(long)]
    d_model: Option<usize>,
    /// Encoder layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Bars per patch.
    #[arg(long)]
    patch_len: Option<usize>,
    /// Bars between patch starts.
    #[arg(long)]
    stride: Option<usize>,
    /// Patches per window.
    #[arg(long)]
    patches: Option<usize>,
    /// Pretraining also forecasts the log realised volatility of the next bars at every
    /// horizon, relative to the window's own, beside the returns (docs/foundation.md)
    #[arg(long)]
    vol_targets: bool,
}

impl ShapeArgs {
    fn config(&self) -> anyhow::Result<ModelConfig> {
        let mut c = match self.config {
            Preset::Tiny => ModelConfig::tiny(),
            Preset::Small => ModelConfig::small(),
            Preset::Reference => ModelConfig::reference(),
            Preset::Base => ModelConfig::base(),
            Preset::Large => ModelConfig::large(),
        };
        if let Some(v) = self.d_model {
            c.d_model = v;
            c.d_ff = 4 * v;
        }
        c.n_layers = self.layers.unwrap_or(c.n_layers);
        c.n_heads = self.heads.unwrap_or(c.n_heads);
        if let Some(v) = self.patch_len {
            c.patch_len = v;
            c.stride = v;
        }
        c.stride = self.stride.unwrap_or(c.stride);
        c.n_patches = self.patches.unwrap_or(c.n_patches);
        c.vol_targets = self.vol_targets;
        c.validate()?;
        Ok(c)
    }
}

/// Pretraining as one process of a data-parallel group (see docs/cluster.md).
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Train as one of this many processes (on one node or several): each differentiates its
    /// share of every step's --shards, and together they train the very model one process
    /// trains with the same --shards, bit for bit. Under `srun`, Slurm's task count and rank
    /// are used unless given.
    #[arg(long, requires = "rank", value_parser = clap::value_parser!(u64).range(1..=1024))]
    world: Option<u64>,
    /// This process's place in the group, from 0 (rank 0 writes the checkpoints).
    #[arg(long, requires = "world")]
    rank: Option<u64>,
    /// The file through which the processes find rank 0: in a directory they all see, unique to
    /// the launch. Default: <models>/<name>/rendezvous (under srun, with the job and step ids).
    #[arg(long, value_name = "FILE")]
    rendezvous: Option<PathBuf>,
    /// Address rank 0 listens on: an address of the cluster network, or 0.0.0.0:0 to be
    /// reached by the node's name. Default: 127.0.0.1:0 (one node); under an `srun` step over
    /// several nodes, 0.0.0.0:0.
    #[arg(long, value_name = "HOST:PORT")]
    group_bind: Option<String>,
    /// Seconds to wait for the others to join, and for any one step's gradients.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    group_timeout: u64,
}

/// What Slurm tells a process `srun` started: its rank, the step's task count, the job and
/// step ids, and the node's name. `None` outside an `srun` step of more than one task.
fn srun_task() -> Option<(u64, u64, String, Option<String>)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let tasks: u64 = var("SLURM_STEP_NUM_TASKS")?.parse().ok()?;
    let rank: u64 = var("SLURM_PROCID")?.parse().ok()?;
    if tasks < 2 {
        return None;
    }
    let id = format!(
        "{}.{}",
        var("SLURM_JOB_ID").unwrap_or_default(),
        var("SLURM_STEP_ID").unwrap_or_default()
    );
    Some((rank, tasks, id, var("SLURMD_NODENAME")))
}

/// Nodes of the `srun` step this process belongs to (1 outside one).
fn srun_nodes() -> u64 {
    std::env::var("SLURM_STEP_NUM_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

impl GroupArgs {
    /// This process's group: `(rank, world, rendezvous)`, or `None` when it trains alone.
    fn resolve(
        &self,
        models: &std::path::Path,
        name: &str,
    ) -> anyhow::Result<Option<(usize, usize, lim_pipelines::cluster::group::Rendezvous)>> {
        let srun = srun_task();
        let (rank, world, id, node) = match (self.rank, self.world, srun) {
            (Some(r), Some(w), srun) => (r, w, None, srun.and_then(|s| s.3)),
            (_, _, Some((r, w, id, node))) => (r, w, Some(id), node),
            _ => return Ok(None),
        };
        if rank >= world {
            anyhow::bail!(
                "--rank {rank} is outside a group of --world {world}; ranks run from 0 to {}",
                world - 1
            );
        }
        if world == 1 {
            return Ok(None);
        }
        let file = match (&self.rendezvous, &id) {
            (Some(f), _) => f.clone(),
            (None, Some(id)) => models.join(name).join(format!("rendezvous-{id}")),
            (None, None) => models.join(name).join("rendezvous"),
        };
        let bind = match &self.group_bind {
            Some(b) => b.clone(),
            // Several nodes: every interface, reached by the node's name.
            None if id.is_some() && srun_nodes() > 1 => "0.0.0.0:0".to_string(),
            None => "127.0.0.1:0".to_string(),
        };
        let wildcard = bind
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified());
        let advertise = if wildcard {
            Some(node.or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            }).context("--group-bind is a wildcard address and this node's name is unknown; give the address the others should reach instead")?)
        } else {
            None
        };
        Ok(Some((
            rank as usize,
            world as usize,
            lim_pipelines::cluster::group::Rendezvous {
                file,
                bind,
                advertise,
                timeout: std::time::Duration::from_secs(self.group_timeout.max(1)),
            },
        )))
    }
}

/// The TCP group as the foundation model's [`lim_foundation::parallel::Exchange`].
struct TcpExchange(lim_pipelines::cluster::group::TcpGroup);

impl lim_foundation::parallel::Exchange for TcpExchange {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn world(&self) -> usize {
        self.0.world()
    }
    fn all_gather(&mut self, mine: Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
        self.0.all_gather(mine).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Model name (a directory under the models directory).
    #[arg(long)]
    name: String,
    /// Comma-separated datasets with optional weights: cn_futures_daily:2,us_equities_daily_adjusted
    #[arg(long, value_delimiter = ',', required = true)]
    datasets: Vec<String>,
    /// Only these symbols (of any of the datasets).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Nothing that closed after this time is read: YYYY-MM-DD (end of day) or date-time.
    #[arg(long, value_parser = parse_as_of)]
    cutoff: AsOf,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Optimisation steps.
    #[arg(long, default_value_t = 500)]
    steps: usize,
    /// Instead of --steps: as many steps as fit this many hours here, from the median time of a
    /// few steps of a throwaway run (e.g. 8 for a night). The count is printed and kept in the
    /// checkpoint, so --resume and the model's settings are as with --steps.
    #[arg(long, conflicts_with = "steps", value_parser = parse_hours)]
    hours: Option<f64>,
    /// Windows per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Shards each batch is cut into, each differentiated on its own thread (default 2 on every
    /// machine, so a seed gives the same model everywhere). A run is reproducible for a seed and a shard count; a
    /// resumed run keeps the count it started with.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    shards: Option<u64>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.999): the
    /// average is the checkpointed model that fine-tuning starts from.
    #[arg(long, value_parser = parse_decay)]
    ema: Option<f64>,
    /// Continue the model's latest checkpoint (same configuration and data).
    #[arg(long)]
    resume: bool,
    /// Stream the mixture from disk instead of holding it in memory: each dataset is loaded
    /// alone and written beside the model's checkpoints (28 bytes a bar, removed when the run
    /// ends), and every window is read when it is drawn. The same batches, bit for bit; memory
    /// no longer grows with the mixture.
    #[arg(long)]
    stream: bool,
    #[command(flatten)]
    group: GroupArgs,
    #[command(flatten)]
    job: crate::cluster_args::JobArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Print the final summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Train only the head on the frozen backbone.
    Probe,
    /// Train backbone and head.
    Full,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetArg {
    /// Cross-sectional rank of the forward return.
    Rank,
    /// Forward log return scaled by the window's volatility.
    Return,
    /// Log realised volatility of the next bars (QLIKE, MSE and rank IC; HAR-RV and EWMA beside).
    Vol,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Target {
        match t {
            TargetArg::Rank => Target::Rank,
            TargetArg::Return => Target::ForwardReturn,
            TargetArg::Vol => Target::LogVol,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VolAnchorArg {
    /// The window's own realised volatility.
    Window,
    /// The EWMA forecast (λ 0.94) at the window's last bar: the head learns only the
    /// correction to it.
    Ewma,
}

impl From<VolAnchorArg> for lim_foundation::config::VolAnchor {
    fn from(a: VolAnchorArg) -> Self {
        match a {
            VolAnchorArg::Window => Self::Window,
            VolAnchorArg::Ewma => Self::Ewma,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VolLossArg {
    /// The squared error of the log volatility, then the lognormal correction.
    Mse,
    /// QLIKE of the variances, the loss the forecasts are scored by.
    Qlike,
}

impl From<VolLossArg> for lim_foundation::config::VolLoss {
    fn from(a: VolLossArg) -> Self {
        match a {
            VolLossArg::Mse => Self::Mse,
            VolLossArg::Qlike => Self::Qlike,
        }
    }
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// Name of the fine-tuned model.
    #[arg(long)]
    name: String,
    /// The pretrained model to start from (omit with --scratch).
    #[arg(long, required_unless_present = "scratch")]
    from: Option<String>,
    /// Train the same backbone and head from a random initialisation (the baseline).
    #[arg(long, conflicts_with = "from")]
    scratch: bool,
    /// Target dataset.
    #[arg(long)]
    dataset: String,
    /// Target universe (default: every symbol of the dataset).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Last date of training targets.
    #[arg(long, value_parser = parse_as_of)]
    train_end: AsOf,
    /// Last date of validation (early stopping on rank IC).
    #[arg(long, value_parser = parse_as_of)]
    valid_end: AsOf,
    /// Probe (frozen backbone) or full fine-tuning.
    #[arg(long, value_enum, default_value = "full")]
    mode: ModeArg,
    /// Full fine-tuning in two stages (LP-FT): the head alone on the frozen backbone first (as
    /// --mode probe, with the same steps), then everything from that stage's best model. Only
    /// the second stage is checkpointed: a run stopped in the first starts over.
    #[arg(long, conflicts_with = "scratch")]
    lp_ft: bool,
    /// What the head predicts.
    #[arg(long, value_enum, default_value = "rank")]
    target: TargetArg,
    /// What a volatility target is learned relative to (--target vol).
    #[arg(long, value_enum, default_value = "window")]
    vol_anchor: VolAnchorArg,
    /// What a volatility head is trained and stopped early on (--target vol).
    #[arg(long, value_enum, default_value = "mse")]
    vol_loss: VolLossArg,
    /// Forward horizon in bars.
    #[arg(long, default_value_t = 5)]
    horizon: usize,
    /// Most optimisation steps (early stopping may end sooner).
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Shards each batch is cut into, each differentiated on its own thread (default 2 on every
    /// machine, so a seed gives the same model everywhere). A run is reproducible for a seed and a shard count; a
    /// resumed run keeps the count it started with.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    shards: Option<u64>,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Shape of a --scratch model.
    #[command(flatten)]
    shape: ShapeArgs,
    /// Continue the model's latest checkpoint (repeat the original command and add this).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    job: crate::cluster_args::JobArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The fine-tuned model.
    #[arg(long)]
    model_name: String,
    /// Name to register the panel under (default: the model's name).
    #[arg(long)]
    name: Option<String>,
    /// Dataset of the universe (default: the model's fine-tuning dataset).
    #[arg(long)]
    dataset: Option<String>,
    /// Universe (default: the model's fine-tuning universe).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// First bar to predict (must be after the model's cutoff).
    #[arg(long, value_parser = parse_ts)]
    start: Timestamp,
    /// Last bar to predict (default: the end of the data).
    #[arg(long, value_parser = parse_ts)]
    end: Option<Timestamp>,
    /// Output directory (default: <models>/predictions).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the panel in long form (ts, symbol, value) as Parquet or CSV beside the
    /// panel LIM reads, for pandas, polars or DuckDB.
    #[arg(long, value_enum)]
    format: Option<crate::research_cmd::TableFormat>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Where the prediction runs (here, or as one Slurm job writing to the shared output
    /// directory; run again, it finds the finished job) and with what resources.
    #[command(flatten)]
    job: crate::cluster_args::JobArgs,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Target dataset.
    #[arg(long, default_value = "cn_futures_daily")]
    target: String,
    /// Target universe (default: all its symbols).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// Cross-market mixture, `name[:weight]`, comma-separated (default: every dataset of the
    /// data source except 5-minute ones, and the target).
    #[arg(long, value_delimiter = ',')]
    cross: Option<Vec<String>>,
    /// End of fine-tune training, and pretraining cutoff.
    #[arg(long, value_parser = parse_as_of, default_value = "2019-12-31")]
    train_end: AsOf,
    /// End of validation.
    #[arg(long, value_parser = parse_as_of, default_value = "2021-12-31")]
    valid_end: AsOf,
    /// End of the test period.
    #[arg(long, value_parser = parse_as_of, default_value = "2024-12-31")]
    test_end: AsOf,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Pretraining steps per pretrained model (default: 300 on the bundled sample, 3000 on
    /// a data directory).
    #[arg(long)]
    pretrain_steps: Option<usize>,
    /// Most fine-tuning steps per arm.
    #[arg(long, default_value_t = 300)]
    finetune_steps: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Shards each batch is cut into, each differentiated on its own thread (default 2 on every
    /// machine, so a seed gives the same model everywhere). Results are reproducible for a seed and a shard count.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    shards: Option<u64>,
    /// Pretrain with an exponential moving average of the weights (decay, e.g. 0.999), whose
    /// average the arms fine-tune from.
    #[arg(long, value_parser = parse_decay)]
    ema: Option<f64>,
    /// Fine-tune the cross-market arms from this model of the models directory, pretrained
    /// beforehand (`lim foundation pretrain`, e.g. the `base` preset overnight), instead of
    /// pretraining one per run. Its cutoff must not be after --train-end, and its shape must
    /// be the one asked for (same --config). Give such a grid its own --out.
    #[arg(long, value_name = "MODEL")]
    cross_from: Option<String>,
    /// Only these arms, comma-separated: scratch, target-only-probe, target-only-full,
    /// cross-market-probe, cross-market-full (default: all). A pretraining no chosen arm needs
    /// is skipped. Give such a grid its own --out.
    #[arg(long, value_delimiter = ',', value_name = "ARM")]
    arms: Option<Vec<String>>,
    /// Fine-tune the pretrained full arms in two stages (LP-FT): the head alone on the frozen
    /// backbone first (as the probe arm), then everything from there. Give such a grid its own
    /// --out.
    #[arg(long)]
    lp_ft: bool,
    /// What the heads predict.
    #[arg(long, value_enum, default_value = "rank")]
    target_kind: TargetArg,
    /// What volatility targets are learned relative to. Give such a grid its own --out.
    #[arg(long, value_enum, default_value = "window")]
    vol_anchor: VolAnchorArg,
    /// What volatility heads are trained and stopped early on. Give such a grid its own --out.
    #[arg(long, value_enum, default_value = "mse")]
    vol_loss: VolLossArg,
    /// Forward horizon in bars.
    #[arg(long, default_value_t = 5)]
    horizon: usize,
    /// Seed (of the first run).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Repeat the whole comparison with this many consecutive seeds and report the spread.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON.
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

/// Progress on stderr: about twenty lines per run, or every step's line rewritten in place
/// on a terminal.
fn progress(label: &str) -> impl FnMut(&StepReport) + '_ {
    let tty = std::io::stderr().is_terminal();
    move |r: &StepReport| {
        let every = (r.steps / 20).max(1);
        let line = format!(
            "{label}: step {}/{}  loss {:.4}  lr {:.1e}  {:.0} samples/s  ETA {:.0}s",
            r.step, r.steps, r.loss, r.lr, r.samples_per_s, r.eta_s
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
            if r.step == r.steps {
                eprintln!();
            }
        } else if r.step.is_multiple_of(every) || r.step == r.steps {
            eprintln!("{line}");
        }
    }
}

pub fn run(cmd: FoundationCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FoundationCommand::Pretrain(a) => pretrain(a),
        FoundationCommand::Finetune(a) => finetune_cmd(a),
        FoundationCommand::Predict(a) => predict(a),
        FoundationCommand::Transfer(a) => transfer_cmd(a),
        FoundationCommand::Eval(a) => eval_cmd(*a),
        FoundationCommand::List(a) => list(a),
    }
}

fn mixture(items: &[String], symbols: &Option<Vec<String>>) -> anyhow::Result<Vec<MixtureEntry>> {
    items
        .iter()
        .map(|d| {
            let mut e = MixtureEntry::parse(d)?;
            e.symbols = symbols.clone();
            Ok(e)
        })
        .collect()
}

fn pretrain(a: PretrainArgs) -> anyhow::Result<ExitCode> {
    let store = a.model.store();
    if a.job.executor == crate::cluster_args::Executor::Slurm {
        let shards = a
            .shards
            .map_or(lim_foundation::parallel::DEFAULT_SHARDS, |s| s as usize);
        let n = a.job.processes()?;
        if n > shards {
            anyhow::bail!(
                "ntasks {n} is more than --shards {shards}: each process needs a shard of every step; give --shards {n} or more"
            );
        }
        if a.group.world.is_some() {
            anyhow::bail!(
                "--world and --rank are for a process started by hand; with --executor slurm, give --ntasks"
            );
        }
        return trained_on_slurm(&a.job, &a.data, &store, &a.name, a.json);
    }
    let device = a.model.device()?.autodiff();
    let mut cfg = a.shape.config()?;
    if a.resume
        && let Ok((_, meta)) = store.meta(&a.name)
    {
        // Not a shape setting: a run continues with the activation it started with.
        cfg.activation = meta.model.activation;
    }
    let mut p = PretrainConfig::new(a.steps, a.batch, a.seed);
    p.optim.lr = a.lr;
    p.ema = a.ema;
    p.optim.shards = a.shards.map_or(p.optim.shards, |s| s as usize);
    p.checkpoint_every = a.checkpoint_every;
    p.optim.validate()?;
    let mix = mixture(&a.datasets, &a.symbols)?;
    let catalog = a.data.catalog()?;
    if a.job.ntasks.is_some() {
        anyhow::bail!(
            "--ntasks is for --executor slurm (srun starts the processes); to start a group by hand, give each process --world and --rank"
        );
    }
    let group = a.group.resolve(store.dir(), &a.name)?;
    let rank = group.as_ref().map_or(0, |g| g.0);
    if a.hours.is_some() && (a.resume || group.is_some()) {
        anyhow::bail!(
            "--hours sizes a new run in one process: a resumed run keeps the steps it started with (drop --hours), and the processes of a group must agree on theirs (give --steps)"
        );
    }
    let (run, cfg, mut p, mix, cutoff) = if a.resume {
        let (meta, model, current, optim) = store.load_pretrained(&a.name, Some(&cfg), &device)?;
        let p = meta
            .pretrain
            .clone()
            .context("checkpoint has no pretraining settings")?;
        let optim = optim.context("checkpoint has no optimizer state; it cannot be resumed")?;
        eprintln!(
            "resuming '{}' at step {}/{} (its data: {}, cutoff {})",
            a.name,
            meta.state.step,
            p.optim.steps,
            meta.manifest
                .datasets
                .iter()
                .map(|d| d.dataset.as_str())
                .collect::<Vec<_>>()
                .join(","),
            meta.manifest.cutoff
        );
        // With a moving average, the checkpoint's model is the average and `current` the
        // weights being optimised.
        let (model, ema) = match current {
            Some(current) => (current, Some(model)),
            None => (model, None),
        };
        let run = Run {
            model,
            ema,
            optim,
            state: meta.state.clone(),
        };
        (
            run,
            meta.model,
            p,
            meta.manifest.datasets,
            meta.manifest.cutoff,
        )
    } else {
        if rank == 0 {
            store.check_new(&a.name)?;
        }
        (Run::new(&cfg, &p, &device), cfg, p, mix, a.cutoff)
    };
    if let Some((_, world, _)) = &group
        && p.optim.shards < *world
    {
        anyhow::bail!(
            "--shards {} is fewer than the group's {world} processes: each process needs a shard of every step; give --shards {world} or more (a resumed run keeps the shards it started with)",
            p.optim.shards
        );
    }
    let streamed = a
        .stream
        .then(|| store.dir().join(&a.name).join(format!("stream-{rank}")));
    let data = match &streamed {
        Some(dir) => PretrainData::load_streamed(&catalog, &mix, cutoff, &cfg, dir)?,
        None => PretrainData::load(&catalog, &mix, cutoff, &cfg)?,
    };
    if let Some(hours) = a.hours {
        let step = lim_foundation::pretrain::seconds_per_step(&data, &cfg, &p, &device, 5)?;
        p.set_steps(lim_foundation::pretrain::steps_in(hours, step));
        eprintln!(
            "--hours {hours}: a step takes {:.0} ms here, so {} steps",
            step * 1000.0,
            p.optim.steps
        );
    }
    let mut exchange: Box<dyn lim_foundation::parallel::Exchange> = match &group {
        Some((rank, world, rv)) => {
            eprintln!(
                "pretrain: rank {rank} of {world}, meeting through {}",
                rv.file.display()
            );
            Box::new(TcpExchange(lim_pipelines::cluster::group::TcpGroup::join(
                *rank, *world, rv,
            )?))
        }
        None => Box::new(lim_foundation::parallel::Solo),
    };
    let manifest = DataManifest {
        datasets: mix.clone(),
        symbols: data.symbols().into_iter().collect(),
        cutoff,
        seed: p.optim.seed,
        parent: None,
    };
    let started = Instant::now();
    let mut run = run;
    let mut report = progress("pretrain");
    let name = a.name.clone();
    let mut saved = PathBuf::new();
    run.train_in(
        &data,
        &cfg,
        &p,
        &device,
        exchange.as_mut(),
        &mut report,
        &mut |r| {
            if rank != 0 {
                return Ok(());
            }
            let meta = Meta {
                name: name.clone(),
                kind: Kind::Pretrained,
                model: cfg.clone(),
                pretrain: Some(p.clone()),
                finetune: None,
                manifest: manifest.clone(),
                state: r.state.clone(),
                results: Default::default(),
                finetune_progress: None,
                checksums: Default::default(),
            };
            // With a moving average, the average is the model to use and the optimised weights
            // are kept beside it to continue.
            let current = r.ema.as_ref().map(|_| &r.model);
            saved = store.save(&meta, r.weights(), Some(&r.optim), current)?;
            Ok(())
        },
    )?;
    #[derive(Serialize)]
    struct Out<'a> {
        name: &'a str,
        checkpoint: String,
        steps: usize,
        final_loss: f32,
        seconds: f64,
        windows_per_dataset: Vec<(String, usize)>,
    }
    let out = Out {
        name: &a.name,
        checkpoint: saved.display().to_string(),
        steps: run.state.step,
        final_loss: run.state.losses.last().map_or(f32::NAN, |l| l.1),
        seconds: started.elapsed().as_secs_f64(),
        windows_per_dataset: data
            .sets
            .iter()
            .map(|(e, s)| (e.dataset.clone(), s.len()))
            .collect(),
    };
    drop(data);
    if let Some(dir) = &streamed {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the streamed mixture in {}", dir.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "pretrained '{}': {} steps, final loss {:.4}, {:.1}s; checkpoint {}",
            out.name, out.steps, out.final_loss, out.seconds, out.checkpoint
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn finetune_cmd(a: FinetuneArgs) -> anyhow::Result<ExitCode> {
    let store = a.model.store();
    a.job.one_process("lim foundation finetune")?;
    if a.job.executor == crate::cluster_args::Executor::Slurm {
        return trained_on_slurm(&a.job, &a.data, &store, &a.name, a.json);
    }
    let device = a.model.device()?.autodiff();
    let catalog = a.data.catalog()?;
    let mode = if a.scratch {
        Mode::Scratch
    } else {
        match a.mode {
            ModeArg::Probe => Mode::Probe,
            ModeArg::Full => Mode::Full,
        }
    };
    if a.lp_ft && mode != Mode::Full {
        anyhow::bail!(
            "--lp-ft is a way of full fine-tuning: drop --mode probe, or drop --lp-ft for a probe"
        );
    }
    let mut ft = FinetuneConfig::new(mode, a.steps, a.batch, a.seed);
    ft.target = a.target.into();
    ft.horizon = a.horizon;
    ft.optim.shards = a.shards.map_or(ft.optim.shards, |s| s as usize);
    ft.lp_ft = a.lp_ft;
    ft.vol_anchor = a.vol_anchor.into();
    ft.vol_loss = a.vol_loss.into();
    ft.optim.validate()?;
    if a.train_end >= a.valid_end {
        anyhow::bail!("--train-end must be before --valid-end");
    }
    let mut stored_cutoff = None;
    let (cfg, run, parent) = if a.resume {
        let (meta, run) = store.load_finetune_run(&a.name, &device)?;
        if let Some(stored) = &meta.finetune {
            // A resumed run keeps the shard count it started with.
            ft.optim.shards = stored.optim.shards;
        }
        if meta.finetune.as_ref() != Some(&ft) {
            anyhow::bail!(
                "model '{}' was fine-tuned with other settings (mode, --lp-ft, target, horizon, steps, batch or seed); repeat its original command with --resume",
                a.name
            );
        }
        if meta.manifest.datasets.first().map(|d| d.dataset.as_str()) != Some(a.dataset.as_str()) {
            anyhow::bail!(
                "model '{}' was fine-tuned on another dataset; repeat its original command with --resume",
                a.name
            );
        }
        eprintln!(
            "resuming '{}' at step {}/{}",
            a.name, run.progress.step, ft.optim.steps
        );
        stored_cutoff = Some(meta.manifest.cutoff);
        (meta.model, run, meta.manifest.parent.map(|p| *p))
    } else {
        store.check_new(&a.name)?;
        let (cfg, backbone, parent) = match &a.from {
            Some(from) => {
                let (meta, backbone) = store.load_backbone(from, &device)?;
                let parent = ParentRef {
                    name: from.clone(),
                    step: meta.state.step,
                    manifest: meta.manifest.clone(),
                };
                (meta.model, backbone, Some(parent))
            }
            None => {
                let cfg = a.shape.config()?;
                let b = Pretrainer::new(&cfg, a.seed.wrapping_add(1), &device).backbone;
                (cfg, b, None)
            }
        };
        let model = Predictor::new(backbone, cfg.d_model, a.seed, &device);
        (cfg, FinetuneRun::new(model, &ft), parent)
    };
    // The model has seen everything up to the later of its own validation end and its
    // parent's cutoff: predictions must come after both.
    let cutoff = parent
        .as_ref()
        .map_or(a.valid_end, |p| p.manifest.cutoff.max(a.valid_end));
    if stored_cutoff.is_some_and(|c| c != cutoff) {
        anyhow::bail!(
            "model '{}' was fine-tuned with another --valid-end; repeat its original command with --resume",
            a.name
        );
    }
    let u = target_universe(&catalog, &a.dataset, a.symbols.as_deref(), a.valid_end)?;
    let train = samples(u.clone(), &cfg, &ft, None, a.train_end, "training")?;
    let valid = samples(u, &cfg, &ft, Some(a.train_end), a.valid_end, "validation")?;
    let started = Instant::now();
    let mut report = progress("finetune");
    let manifest = DataManifest {
        datasets: vec![MixtureEntry {
            dataset: a.dataset.clone(),
            weight: 1.0,
            symbols: a.symbols.clone(),
        }],
        symbols: [(
            a.dataset.clone(),
            train
                .universe
                .series
                .iter()
                .map(|s| s.symbol.clone())
                .collect(),
        )]
        .into_iter()
        .collect(),
        cutoff,
        seed: a.seed,
        parent: parent.map(Box::new),
    };
    let mut path = PathBuf::new();
    let mut run = run;
    if ft.lp_ft && !a.resume {
        // The full stage, checkpointed as any run, starts from the probe stage's best model;
        // a resumed run is always in the full stage.
        let mut probe_report = progress("finetune, probe stage");
        let probed = lim_foundation::finetune::probe_stage(
            run.model,
            &train,
            &valid,
            &cfg,
            &ft,
            &device,
            &mut probe_report,
        )?;
        run = FinetuneRun::new(probed, &ft);
    }
    run.train(&train, &valid, &cfg, &ft, &device, &mut report, &mut |r| {
        let mut results = std::collections::BTreeMap::new();
        if let Some((_, step, v)) = &r.progress.best {
            results.insert("best_step".to_string(), *step as f64);
            results.insert("valid_ic".to_string(), v.ic);
            results.insert("valid_rank_ic".to_string(), v.rank_ic);
            results.insert("valid_icir".to_string(), v.icir);
        }
        let meta = Meta {
            name: a.name.clone(),
            kind: Kind::Finetuned,
            model: cfg.clone(),
            pretrain: None,
            finetune: Some(ft.clone()),
            manifest: manifest.clone(),
            state: lim_foundation::pretrain::TrainState {
                step: r.progress.step,
                rng: r.progress.rng,
                losses: Vec::new(),
            },
            results,
            finetune_progress: Some(r.progress.clone()),
            checksums: Default::default(),
        };
        path = store.save(&meta, &r.best, Some(&r.optim), Some(&r.model))?;
        Ok(())
    })?;
    let out = run.finish(&valid, &cfg, &device)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "name": a.name, "checkpoint": path.display().to_string(), "mode": mode.as_str(),
                "steps_run": out.steps_run, "best_step": out.best_step, "valid": out.valid,
                "samples": [train.samples.len(), valid.samples.len()],
                "seconds": started.elapsed().as_secs_f64(), "cutoff": cutoff,
            })
        );
    } else {
        println!(
            "fine-tuned '{}' ({}): best step {} of {}, validation IC {:.4}, rank IC {:.4}, ICIR {:.3}; {:.1}s; checkpoint {}",
            a.name,
            mode.as_str(),
            out.best_step,
            out.steps_run,
            out.valid.ic,
            out.valid.rank_ic,
            out.valid.icir,
            started.elapsed().as_secs_f64(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn predict(a: PredictArgs) -> anyhow::Result<ExitCode> {
    let store = a.model.store();
    a.job.one_process("lim foundation predict")?;
    if a.job.executor == crate::cluster_args::Executor::Slurm {
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| store.dir().join("predictions"));
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create '{}'", out.display()))?;
        let out = out.canonicalize()?;
        let summary = on_slurm(&a.job, &a.data, &store, ("--out", &out), None)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            println!(
                "predicted as a Slurm job into {}: {}",
                out.display(),
                serde_json::to_string(&summary)?
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let device = a.model.device()?;
    let (meta, model) = store.load_predictor(&a.model_name, &device)?;
    let catalog = a.data.catalog()?;
    let dataset = a
        .dataset
        .clone()
        .or_else(|| meta.manifest.datasets.first().map(|d| d.dataset.clone()))
        .context("no dataset; pass --dataset")?;
    let symbols = a
        .symbols
        .clone()
        .or_else(|| meta.manifest.symbols.get(&dataset).cloned());
    let as_of = a
        .end
        .map_or(AsOf::LATEST, |e| AsOf(Timestamp(e.0 + 86_400)));
    let started = Instant::now();
    let u = target_universe(&catalog, &dataset, symbols.as_deref(), as_of)?;
    let end = a
        .end
        .unwrap_or_else(|| u.times.last().copied().unwrap_or(a.start));
    let name = a.name.clone().unwrap_or_else(|| a.model_name.clone());
    let panel = predict_panel(&name, &model, &meta, &u, a.start, end, &device)?;
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| store.dir().join("predictions"));
    let path = panel.write(&dir)?;
    if let Some(format) = a.format {
        let format: lim_market::parquet::Format = format.into();
        let long = dir.join(format!("{name}.long.{}", format.extension()));
        panel.table().write(&long, format)?;
        eprintln!("long form: {}", long.display());
    }
    let filled = panel.values.iter().filter(|v| v.is_finite()).count();
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "name": name, "file": path.display().to_string(), "times": panel.times.len(),
                "symbols": panel.symbols.len(), "predictions": filled, "seconds": secs,
                "model_cutoff": meta.manifest.cutoff,
            })
        );
    } else {
        println!(
            "wrote '{name}': {} times x {} symbols ({filled} predictions) to {} in {secs:.1}s",
            panel.times.len(),
            panel.symbols.len(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The comparison `a` asks for on `catalog` (seed `a.seed`).
fn transfer_spec(a: &TransferArgs, catalog: &lim_market::Catalog) -> anyhow::Result<TransferSpec> {
    let bundled = catalog.location() == "<bundled sample>";
    let cross: Vec<String> = match &a.cross {
        Some(c) => c.clone(),
        None => {
            let mut v: Vec<String> = catalog
                .names()
                .filter(|n| !n.contains("5min"))
                .map(str::to_string)
                .collect();
            if !v.contains(&a.target) {
                v.push(a.target.clone());
            }
            v
        }
    };
    let mut pretrain = PretrainConfig::new(
        a.pretrain_steps.unwrap_or(if bundled { 300 } else { 3000 }),
        a.batch,
        a.seed,
    );
    pretrain.checkpoint_every = 0;
    pretrain.ema = a.ema;
    pretrain.optim.shards = a.shards.map_or(pretrain.optim.shards, |s| s as usize);
    Ok(TransferSpec {
        target: a.target.clone(),
        symbols: a.symbols.clone(),
        cross: mixture(&cross, &None)?,
        train_end: a.train_end,
        valid_end: a.valid_end,
        test_end: a.test_end,
        model: a.shape.config()?,
        pretrain,
        finetune_steps: a.finetune_steps,
        finetune_batch: a.batch,
        target_kind: a.target_kind.into(),
        horizon: a.horizon,
        seed: a.seed,
        train_bars: None,
        cross_from: a
            .cross_from
            .as_ref()
            .map(|name| (models_dir(a.model.models_dir.clone()), name.clone())),
        arms: a
            .arms
            .iter()
            .flatten()
            .map(|arm| {
                // Written with hyphens on the command line: cross-market-full.
                lim_foundation::transfer::ARMS
                    .iter()
                    .find(|a| a.replace(' ', "-") == *arm)
                    .map_or(arm.clone(), |a| a.to_string())
            })
            .collect(),
        lp_ft: a.lp_ft,
        vol_anchor: a.vol_anchor.into(),
        vol_loss: a.vol_loss.into(),
    })
}

/// Training progress on stderr: one line per step in place on a terminal, a tenth of the steps
/// otherwise, a new line for each model.
fn step_printer() -> impl FnMut(&str, &lim_foundation::pretrain::StepReport) {
    let mut last = String::new();
    let tty = std::io::stderr().is_terminal();
    move |label: &str, r: &lim_foundation::pretrain::StepReport| {
        if label != last {
            if tty && !last.is_empty() {
                eprintln!();
            }
            last = label.to_string();
        }
        let every = (r.steps / 10).max(1);
        let line = format!(
            "{label}: step {}/{}  loss {:.4}  {:.0} samples/s  ETA {:.0}s",
            r.step, r.steps, r.loss, r.samples_per_s, r.eta_s
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else if r.step.is_multiple_of(every) {
            eprintln!("{line}");
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Targets as KIND:HORIZON, comma-separated; KIND is rank, return or vol (default: vol:5,
    /// vol:20, rank:5 on your data; vol:5, rank:5 on the bundled sample).
    #[arg(long, value_delimiter = ',')]
    grid: Option<Vec<String>>,
    /// Directory of the grid's cells (one JSON file each); a cell found there is not run again.
    #[arg(long, value_name = "DIR", default_value = "lim-eval")]
    out: PathBuf,
    /// Sample efficiency: fine-tune on only the last N bars of the target's training period,
    /// for each N given (comma-separated; `all` for the whole period, the default), e.g.
    /// 250,500,1000,all. Pretraining still reads everything up to the cutoff.
    #[arg(long, value_delimiter = ',', value_name = "N")]
    train_bars: Option<Vec<String>>,
    /// Compare every model arm with the same arm of another grid (its --out), cell by cell:
    /// same target, training size and seed. For what a change of recipe did (--vol-loss,
    /// --vol-anchor, --lp-ft); a grid of other periods or another target is refused.
    #[arg(long, value_name = "DIR")]
    against: Option<PathBuf>,
    /// Everything else, as for `lim foundation transfer` (its --target-kind and --horizon are
    /// replaced by --grid; seeds are --seed, --seed + 1, …).
    #[command(flatten)]
    transfer: TransferArgs,
    /// Where the grid runs: here, or as a Slurm array job of one task per seed, each writing
    /// its cells into --out (which the nodes must share); the table is then made here from
    /// the cells. Run again, it finds the finished tasks.
    #[command(flatten)]
    job: crate::cluster_args::JobArgs,
}

fn parse_target(s: &str) -> anyhow::Result<(lim_foundation::config::Target, usize)> {
    use lim_foundation::config::Target;
    let (k, h) = s.split_once(':').unwrap_or((s, "5"));
    let kind = match k.trim() {
        "rank" => Target::Rank,
        "return" => Target::ForwardReturn,
        "vol" => Target::LogVol,
        other => anyhow::bail!(
            "--grid target '{s}': '{other}' is not a target kind; use rank, return or vol, e.g. vol:20"
        ),
    };
    let h: usize = h.trim().parse().ok().filter(|h| *h > 0).with_context(|| {
        format!("--grid target '{s}': the horizon must be a whole number of bars, e.g. vol:20")
    })?;
    Ok((kind, h))
}

/// A difference and its t-statistic as two cells (`-` where missing).
fn diff(v: Option<(f64, f64)>) -> [String; 2] {
    [
        v.map_or("-".into(), |(d, _)| format!("{d:+.4}")),
        v.filter(|(_, t)| t.is_finite())
            .map_or("-".into(), |(_, t)| format!("{t:+.1}")),
    ]
}

/// The widest arm name the eval tables print; a longer one (the best outside factor's, which
/// carries its expression) keeps its parenthesis in a note under its table.
const ARM_WIDTH: usize = 44;

/// The eval grid's rows as one table per target, so that they fit a terminal: the target and
/// its metric head the table, and a column appears only where a row of it has a value.
fn eval_tables(rows: &[lim_foundation::eval::Row]) -> String {
    let mut targets: Vec<&str> = Vec::new();
    for r in rows {
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
    }
    let t_of = |t: Option<f64>| t.map_or("-".into(), |t| format!("{t:+.1}"));
    let mut out = String::new();
    for target in targets {
        let these: Vec<&lim_foundation::eval::Row> =
            rows.iter().filter(|r| r.target == target).collect();
        let vol = these.iter().any(|r| r.metric == "qlike");
        let valid = these.iter().any(|r| r.valid.is_some());
        let dm = these.iter().any(|r| r.vs_best_simple_dm_t.is_some());
        let nw = these.iter().any(|r| r.rank_ic_nw_t.is_some());
        let mut head = vec!["arm", "seeds", "mean", "sd"];
        if valid {
            head.push("valid");
        }
        head.extend(["vs scratch", "t", "vs simple", "t"]);
        if dm {
            head.push("DM t");
        }
        if nw {
            head.push("NW t");
        }
        let mut table = Table::new(&head);
        let mut notes = Vec::new();
        for r in &these {
            let mut arm = r.arm.clone();
            if arm.chars().count() > ARM_WIDTH
                && arm.ends_with(')')
                && let Some(open) = arm.find(" (")
            {
                let mark = char::from(b'a' + (notes.len() % 26) as u8);
                notes.push(format!("({mark}) {}", &arm[open + 2..arm.len() - 1]));
                arm = format!("{} ({mark})", &arm[..open]);
            }
            let mut line = vec![
                match (r.weight, r.best_simple) {
                    (Some(w), _) => format!("{arm} (w {w:.2})"),
                    (None, true) => format!("{arm} *"),
                    (None, false) => arm,
                },
                r.seeds.to_string(),
                format!("{:.4}", r.mean),
                if r.sd.is_finite() {
                    format!("{:.4}", r.sd)
                } else {
                    "-".into()
                },
            ];
            if valid {
                line.push(r.valid.map_or("-".into(), |v| format!("{v:.4}")));
            }
            line.extend(diff(r.vs_scratch));
            line.extend(diff(r.vs_best_simple));
            if dm {
                line.push(t_of(r.vs_best_simple_dm_t));
            }
            if nw {
                line.push(t_of(r.rank_ic_nw_t));
            }
            table.row(line);
        }
        out.push_str(&format!(
            "{target}: test {}\n",
            if vol {
                "QLIKE (lower is better)"
            } else {
                "rank IC (higher is better)"
            }
        ));
        out.push_str(&table.render());
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

fn eval_cmd(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let t = &a.transfer;
    let device = t.model.device()?;
    let catalog = t.data.catalog()?;
    let bundled = catalog.location() == "<bundled sample>";
    let grid: Vec<String> = a.grid.clone().unwrap_or_else(|| {
        let d: &[&str] = if bundled {
            &["vol:5", "rank:5"]
        } else {
            &["vol:5", "vol:20", "rank:5"]
        };
        d.iter().map(|s| s.to_string()).collect()
    });
    let targets = grid
        .iter()
        .map(|s| parse_target(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let seeds: Vec<u64> = (0..t.seeds.max(1) as u64)
        .map(|k| t.seed.wrapping_add(k))
        .collect();
    let sizes = a
        .train_bars
        .clone()
        .unwrap_or_else(|| vec!["all".into()])
        .iter()
        .map(|n| match n.trim() {
            "all" => Ok(None),
            n => n
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 20)
                .map(Some)
                .with_context(|| {
                    format!("--train-bars '{n}': give a number of bars of at least 20, or all")
                }),
        })
        .collect::<anyhow::Result<Vec<Option<usize>>>>()?;
    let base = transfer_spec(t, &catalog)?;
    let started = Instant::now();
    if a.job.executor == crate::cluster_args::Executor::Slurm {
        grid_on_slurm(&a, &seeds)?;
    }
    let mut printer = step_printer();
    let cells = lim_foundation::eval::run_grid(
        &catalog,
        &base,
        &lim_foundation::eval::Grid {
            targets: &targets,
            train_bars: &sizes,
            seeds: &seeds,
            factors: Some(&crate::forecaster::SeedFactors { market: &catalog }),
        },
        &device,
        &a.out,
        &mut |label, r| printer(label, r),
    )?;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let rows = lim_foundation::eval::summarize(&cells);
    let against = match &a.against {
        None => None,
        Some(dir) => {
            let other = lim_foundation::eval::read_cells(dir)
                .with_context(|| format!("--against '{}'", dir.display()))?;
            let v = lim_foundation::eval::versus(&cells, &other);
            if v.is_empty() {
                anyhow::bail!(
                    "--against '{}': no cell there has this grid's targets, training sizes and seeds \
                     ({} cells there); give the --out of a grid run with the same --grid, \
                     --train-bars, --seed and --seeds",
                    dir.display(),
                    other.len()
                );
            }
            // What the two grids were made with differently; other periods are refused.
            let settings = lim_foundation::eval::against_settings(&a.out, dir)?;
            Some((v, settings))
        }
    };
    if t.json {
        let mut out = serde_json::json!({"cells": cells, "rows": rows});
        if let Some((v, settings)) = &against {
            out["against"] = serde_json::to_value(v)?;
            out["against_settings"] = serde_json::to_value(settings)?;
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Newey–West t-statistics exist for return targets only.
    let nw = rows.iter().any(|r| r.rank_ic_nw_t.is_some());
    // Diebold–Mariano t-statistics exist for volatility targets whose cells kept their losses.
    let dm = rows.iter().any(|r| r.vs_best_simple_dm_t.is_some());
    // How each target's best simple forecast was picked (`eval::summarize`): on validation
    // where every simple forecast had a score there, else on the test.
    let best: Vec<bool> = rows
        .iter()
        .filter(|r| r.best_simple)
        .map(|r| r.chosen_on_validation)
        .collect();
    let chosen_on = if best.iter().all(|v| *v) {
        "validation (valid)"
    } else if best.iter().any(|v| *v) {
        "validation where every simple forecast has a score (valid), else on the test"
    } else {
        "the test, which favours it"
    };
    print!("{}", eval_tables(&rows));
    let ran = cells.iter().filter(|c| c.seconds > 0.0).count();
    println!(
        "{} cells ({ran} run now, {} read back from {}), {:.0}s.\n\
         w: a blend's weight on the model; vs simple: against the best simple forecast of\n\
         the target (*), chosen on {chosen_on};\n\
         t: paired t-statistic over seeds{}{}.",
        cells.len(),
        cells.len() - ran,
        a.out.display(),
        started.elapsed().as_secs_f64(),
        if dm {
            ",\n\
             which measures the seeds' spread, not the test period's; DM t: against the best\n\
             simple forecast over the test dates (Diebold–Mariano, Newey–West errors), the mean\n\
             over seeds: beyond ±2, unlikely to be chance"
        } else {
            ""
        },
        if nw {
            ";\nNW t: the mean over seeds of the rank IC's Newey–West t"
        } else {
            ""
        },
    );
    if let (Some((v, settings)), Some(dir)) = (&against, &a.against) {
        println!("\nagainst the same arms of {}:", dir.display());
        for s in settings {
            println!("  made with (here / there) {s}");
        }
        let mut table = Table::new(&[
            "target", "arm", "seeds", "here", "there", "diff", "t", "DM t",
        ]);
        for r in v {
            let mut line = vec![
                r.target.clone(),
                r.arm.clone(),
                r.seeds.to_string(),
                format!("{:.4}", r.mean),
                format!("{:.4}", r.other),
            ];
            line.extend(diff(r.diff));
            line.push(r.dm_t.map_or("-".into(), |t| format!("{t:+.1}")));
            table.row(line);
        }
        print!("{}", table.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the grid of `a` on Slurm, one array task per seed: each task is this command for its
/// seed alone, with the output, models and data directories made absolute (the nodes must see
/// them), and writes its cells into the shared output directory.
fn grid_on_slurm(a: &EvalArgs, seeds: &[u64]) -> anyhow::Result<()> {
    use lim_pipelines::cluster::work::CommandUnit;
    a.job.one_process("lim foundation eval")?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create '{}'", a.out.display()))?;
    let out = a.out.canonicalize()?;
    let (mut replaced, mut shared) = node_paths(
        &a.transfer.model.store(),
        &a.transfer.data,
        &[("--out", &out)],
    )?;
    replaced.extend(["--seeds", "--seed"]);
    shared.extend(["--seeds".to_string(), "1".to_string()]);
    let units: Vec<CommandUnit> = seeds
        .iter()
        .map(|seed| {
            let mut extra = shared.clone();
            extra.extend(["--seed".to_string(), seed.to_string()]);
            CommandUnit {
                args: crate::cluster_args::job_command_line(&replaced, &extra),
                resume_args: Vec::new(),
                resume_when: None,
            }
        })
        .collect();
    eprintln!(
        "eval: {} seeds as a Slurm array job; cells into {}",
        units.len(),
        out.display()
    );
    crate::cluster_args::run_jobs(&a.job, &a.transfer.data, units)?;
    Ok(())
}

fn transfer_cmd(a: TransferArgs) -> anyhow::Result<ExitCode> {
    let device = a.model.device()?;
    let catalog = a.data.catalog()?;
    let spec = transfer_spec(&a, &catalog)?;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut reports = Vec::new();
    let mut printer = step_printer();
    for k in 0..a.seeds.max(1) {
        let mut spec = spec.clone();
        spec.seed = a.seed.wrapping_add(k as u64);
        spec.pretrain.optim.seed = spec.seed;
        let factors = crate::forecaster::SeedFactors { market: &catalog };
        let report =
            transfer::run_with(&catalog, &spec, Some(&factors), &device, &mut |label, r| {
                printer(&format!("seed {}: {label}", spec.seed), r);
            })?;
        reports.push(report);
    }
    if tty {
        eprintln!();
    }
    let summary = seed_summary(&reports);
    if a.json {
        let v = serde_json::json!({ "runs": reports, "over_seeds": summary });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in &reports {
            print_transfer(r, catalog.location());
        }
        if reports.len() > 1 {
            let mut t = Table::new(&[
                "arm",
                "seeds",
                "test IC mean",
                "test rank IC mean",
                "sd",
                "test ICIR mean",
            ]);
            for s in &summary {
                t.row(vec![
                    s.arm.clone(),
                    s.seeds.to_string(),
                    format!("{:+.4}", s.ic_mean),
                    format!("{:+.4}", s.rank_ic_mean),
                    format!("{:.4}", s.rank_ic_sd),
                    format!("{:+.3}", s.icir_mean),
                ]);
            }
            println!("over {} seeds:", reports.len());
            print!("{}", t.render());
            if summary.iter().any(|s| s.qlike.is_some()) {
                let mut q = Table::new(&["forecast", "seeds", "test QLIKE mean", "sd"]);
                for s in &summary {
                    if let Some((m, sd)) = s.qlike {
                        q.row(vec![
                            s.arm.clone(),
                            s.seeds.to_string(),
                            format!("{m:.4}"),
                            format!("{sd:.4}"),
                        ]);
                    }
                }
                let names: Vec<String> = reports[0].baselines.iter().map(|b| b.0.clone()).collect();
                for (i, name) in names.iter().enumerate() {
                    let v: Vec<f64> = reports
                        .iter()
                        .filter_map(|r| r.baselines.get(i).map(|b| b.1.qlike))
                        .collect();
                    let (m, sd) = mean_sd(&v);
                    q.row(vec![
                        name.clone(),
                        v.len().to_string(),
                        format!("{m:.4}"),
                        format!("{sd:.4}"),
                    ]);
                }
                print!("{}", q.render());
            }
        }
        println!(
            "ICs are per-date cross-sectional means; ICIR = mean IC / std IC over test dates (not annualised). {:.0}s in all.",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One arm's test metrics averaged over seeds.
#[derive(Debug, Serialize)]
struct SeedSummary {
    arm: String,
    seeds: usize,
    ic_mean: f64,
    rank_ic_mean: f64,
    rank_ic_sd: f64,
    icir_mean: f64,
    /// Volatility targets: mean and standard deviation of the test QLIKE over seeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    qlike: Option<(f64, f64)>,
}

fn seed_summary(reports: &[TransferReport]) -> Vec<SeedSummary> {
    let Some(first) = reports.first() else {
        return Vec::new();
    };
    first
        .arms
        .iter()
        .enumerate()
        .map(|(i, arm)| {
            let arms: Vec<_> = reports.iter().filter_map(|r| r.arms.get(i)).collect();
            let n = arms.len() as f64;
            let mean =
                |f: &dyn Fn(&transfer::Arm) -> f64| arms.iter().map(|a| f(a)).sum::<f64>() / n;
            let rank_ic_mean = mean(&|a| a.test.rank_ic);
            let var = arms
                .iter()
                .map(|a| (a.test.rank_ic - rank_ic_mean).powi(2))
                .sum::<f64>()
                / (n - 1.0).max(1.0);
            SeedSummary {
                arm: arm.name.clone(),
                seeds: arms.len(),
                ic_mean: mean(&|a| a.test.ic),
                rank_ic_mean,
                rank_ic_sd: var.sqrt(),
                icir_mean: mean(&|a| a.test.icir),
                qlike: arm.vol.as_ref().map(|_| {
                    let q: Vec<f64> = arms
                        .iter()
                        .filter_map(|a| a.vol.as_ref().map(|v| v.qlike))
                        .collect();
                    mean_sd(&q)
                }),
            }
        })
        .collect()
}

/// Mean and sample standard deviation (0 for one value).
fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let m = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

/// The last date an end-of-day as-of time sees.
fn day(a: AsOf) -> String {
    Timestamp(a.0.0 - 1).date_string()
}

fn print_transfer(r: &TransferReport, location: &str) {
    // The simple forecasts' scores on validation, how one chooses among them.
    let valid = |name: &str, show: fn(f64) -> String| {
        r.valid_scores
            .iter()
            .find(|(n, _)| n == name)
            .map_or("-".into(), |(_, v)| show(*v))
    };
    let s = &r.spec;
    println!(
        "transfer to {} ({}), target {:?} at {} bars, seed {}; data {location}",
        s.target,
        s.symbols
            .as_ref()
            .map_or("all symbols".to_string(), |v| v.join(",")),
        s.target_kind,
        s.horizon,
        s.seed
    );
    println!(
        "train to {}, validation to {}, test to {}; samples {} / {} / {}; {} test dates",
        day(s.train_end),
        day(s.valid_end),
        day(s.test_end),
        r.samples[0],
        r.samples[1],
        r.samples[2],
        r.test_dates
    );
    println!(
        "model d_model {} x {} layers, {} patches of {} (window {});\npretraining {} steps x {} windows ({:.0}s target-only, {:.0}s cross-market)",
        s.model.d_model,
        s.model.n_layers,
        s.model.n_patches,
        s.model.patch_len,
        s.model.window(),
        s.pretrain.optim.steps,
        s.pretrain.optim.batch,
        r.pretrain_seconds[0],
        r.pretrain_seconds[1]
    );
    let used: Vec<String> = r
        .pretrain_series
        .iter()
        .skip(1)
        .map(|(d, n)| format!("{d} ({n})"))
        .collect();
    println!("cross-market series used: {}", used.join(", "));
    let mut t = Table::new(&[
        "arm",
        "mode",
        "steps",
        "valid rank IC",
        "test IC",
        "test rank IC",
        "test ICIR",
    ]);
    for a in &r.arms {
        t.row(vec![
            a.name.clone(),
            a.mode.as_str().to_string(),
            format!("{}/{}", a.best_step, a.steps_run),
            format!("{:+.4}", a.valid.rank_ic),
            format!("{:+.4}", a.test.ic),
            format!("{:+.4}", a.test.rank_ic),
            format!("{:+.3}", a.test.icir),
        ]);
    }
    print!("{}", t.render());
    if r.spec.target_kind == Target::LogVol {
        let mut t = Table::new(&[
            "forecast",
            "test QLIKE",
            "test MSE log vol",
            "test rank IC",
            "valid QLIKE",
        ]);
        let rows = r
            .arms
            .iter()
            .filter_map(|a| Some((a.name.clone(), a.vol.clone()?)))
            .chain(r.arms.iter().filter_map(|a| {
                let (blend, v) = a.with_ewma.clone()?;
                Some((
                    format!("{} with EWMA (weight {:.2})", a.name, blend.weight),
                    v,
                ))
            }))
            .chain(r.baselines.iter().cloned());
        for (name, v) in rows {
            let on_valid = valid(&name, |v| format!("{v:.4}"));
            t.row(vec![
                name,
                format!("{:.4}", v.qlike),
                format!("{:.4}", v.mse_log),
                format!("{:+.4}", v.rank_ic),
                on_valid,
            ]);
        }
        println!(
            "volatility forecasts on the test samples (lower QLIKE and MSE are better;\n\
             valid QLIKE: the simple forecasts on validation, how to choose among them):"
        );
        print!("{}", t.render());
    }
    if !r.return_baselines.is_empty() {
        let mut t = Table::new(&[
            "simple forecast",
            "test IC",
            "test rank IC",
            "NW t",
            "valid rank IC",
        ]);
        for (name, v) in &r.return_baselines {
            t.row(vec![
                name.clone(),
                format!("{:+.4}", v.ic),
                format!("{:+.4}", v.rank_ic),
                format!("{:+.2}", v.rank_ic_nw_t),
                valid(name, |v| format!("{v:+.4}")),
            ]);
        }
        println!(
            "simple forecasts on the same test samples (linear: least squares on the training\n\
             samples; valid rank IC: on validation, how to choose among them):"
        );
        print!("{}", t.render());
    }
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let store = a.model.store();
    let mut rows = Vec::new();
    for name in store.names() {
        match store.meta(&name) {
            Ok((_, m)) => rows.push(m),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no models in {}", store.dir().display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["name", "kind", "step", "shape", "cutoff", "data", "from"]);
    for m in &rows {
        let steps = m
            .pretrain
            .as_ref()
            .map(|p| p.optim.steps)
            .or(m.finetune.as_ref().map(|f| f.optim.steps))
            .unwrap_or(0);
        let mut lineage = Vec::new();
        let mut p = m.manifest.parent.as_deref();
        while let Some(parent) = p {
            lineage.push(format!("{}@{}", parent.name, parent.step));
            p = parent.manifest.parent.as_deref();
        }
        t.row(vec![
            m.name.clone(),
            match (m.kind, m.finetune.as_ref()) {
                (Kind::Pretrained, _) => "pretrained".to_string(),
                (Kind::Finetuned, Some(f)) => format!("finetuned/{}", f.mode.as_str()),
                (Kind::Finetuned, None) => "finetuned".to_string(),
            },
            format!("{}/{steps}", m.state.step),
            format!(
                "d{}x{} p{}x{}",
                m.model.d_model, m.model.n_layers, m.model.n_patches, m.model.patch_len
            ),
            day(m.manifest.cutoff),
            m.manifest
                .datasets
                .iter()
                .map(|d| {
                    let n = m.manifest.symbols.get(&d.dataset).map_or(0, Vec::len);
                    format!("{}({n})", d.dataset)
                })
                .collect::<Vec<_>>()
                .join(","),
            if lineage.is_empty() {
                "-".into()
            } else {
                lineage.join(" <- ")
            },
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

/// A moving-average decay: a number in (0, 1).
fn parse_hours(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(h) if h > 0.0 && h.is_finite() => Ok(h),
        _ => Err(format!(
            "'{s}' is not a number of hours; give a positive number, such as 8 or 0.5"
        )),
    }
}

fn parse_decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if d > 0.0 && d < 1.0 => Ok(d),
        _ => Err(format!(
            "'{s}' is not a decay; give a number between 0 and 1, such as 0.999"
        )),
    }
}

/// Runs this training command as a Slurm job (see `JobArgs`): the same command line on a
/// node, its checkpoints in the shared models directory, continued with `--resume` after a
/// failed attempt; prints the job's summary.
fn trained_on_slurm(
    job: &crate::cluster_args::JobArgs,
    data: &DataArgs,
    store: &lim_foundation::Store,
    name: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let latest = store.dir().join(name).join("LATEST");
    let summary = on_slurm(
        job,
        data,
        store,
        ("--models-dir", store.dir()),
        Some(latest),
    )?;
    let models = store.dir().canonicalize()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "'{name}' trained as a Slurm job; its checkpoints are in {}: {}",
            models.join(name).display(),
            serde_json::to_string(&summary)?
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs this command as one Slurm job (see `JobArgs`): the same command line on a node, with
/// the models directory, the data directory and `shared` (a flag and the directory the job
/// writes, made absolute: the nodes must see it) in place of the user's; continued with
/// `--resume` after a failed attempt when `resume_when` exists. Returns the job's `--json`
/// summary.
fn on_slurm(
    job: &crate::cluster_args::JobArgs,
    data: &DataArgs,
    store: &lim_foundation::Store,
    shared: (&'static str, &std::path::Path),
    resume_when: Option<PathBuf>,
) -> anyhow::Result<serde_json::Value> {
    use lim_pipelines::cluster::work::CommandUnit;
    let shared: &[(&'static str, &std::path::Path)] = if shared.0 == "--models-dir" {
        &[]
    } else {
        &[shared]
    };
    let (replaced, extra) = node_paths(store, data, shared)?;
    let models = store.dir().canonicalize()?;
    let resume_when = resume_when.map(|p| match p.strip_prefix(store.dir()) {
        Ok(rel) => models.join(rel),
        Err(_) => p,
    });
    let unit = CommandUnit {
        args: crate::cluster_args::job_command_line(&replaced, &extra),
        resume_args: if resume_when.is_some() {
            vec!["--resume".to_string()]
        } else {
            Vec::new()
        },
        resume_when,
    };
    crate::cluster_args::run_job(job, data, unit)
}

/// The flags a job's command line gets in place of the user's, so that a node finds what the
/// job reads and writes: the models directory (created here), each of `shared` (a flag and
/// its directory) and the data directory, made absolute. Returns the flags replaced and the
/// arguments to append.
fn node_paths(
    store: &lim_foundation::Store,
    data: &DataArgs,
    shared: &[(&'static str, &std::path::Path)],
) -> anyhow::Result<(Vec<&'static str>, Vec<String>)> {
    std::fs::create_dir_all(store.dir())
        .with_context(|| format!("cannot create '{}'", store.dir().display()))?;
    let models = store.dir().canonicalize()?;
    let mut extra = vec!["--models-dir".to_string(), models.display().to_string()];
    let mut replaced = vec!["--models-dir", "--data"];
    for (flag, dir) in shared {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        extra.extend([flag.to_string(), dir.display().to_string()]);
        replaced.push(flag);
    }
    if let Some(d) = data.data_dir() {
        let d = d.canonicalize().unwrap_or(d);
        extra.extend(["--data".to_string(), d.display().to_string()]);
    }
    Ok((replaced, extra))
}
