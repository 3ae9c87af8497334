//! Pretraining: windows drawn from a weighted mixture of datasets up to a cutoff (in memory,
//! or streamed from files a window at a time),
//! masked-patch reconstruction plus multi-horizon return forecasting, AdamW with warm-up and
//! cosine decay, per-parameter gradient-norm clipping, resumable from a checkpoint.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use lim_market::{AsOf, MarketData};
use serde::{Deserialize, Serialize};

use crate::config::{MixtureEntry, ModelConfig, OptimConfig, PretrainConfig};
use crate::error::{FoundationError, io};
use crate::features::{
    CLIP, FEATURES, InstrumentSeries, forward_return, load_universe, scaled, write_window,
};
use crate::finetune::{forward_log_vol, window_log_vol};
use crate::model::{PretrainBatch, PretrainLoss, Pretrainer};
use crate::parallel::{Exchange, Solo, group_gradients, shard_ranges};
use crate::rng::Rng;

/// The windows pretraining may draw from: every dataset of the mixture cut at the cutoff.
#[derive(Debug, Clone)]
pub struct PretrainData {
    /// The cutoff every series was cut at.
    pub cutoff: AsOf,
    /// Per dataset: its mixture entry and the series long enough for one window plus targets.
    pub sets: Vec<(MixtureEntry, Bars)>,
}

/// Where one dataset's series are kept while pretraining draws windows from them.
#[derive(Debug, Clone)]
pub enum Bars {
    /// In memory: [`PretrainData::load`].
    Memory(Vec<InstrumentSeries>),
    /// In a file, read a window at a time: [`PretrainData::load_streamed`].
    Disk(SpilledSet),
}

impl Bars {
    /// Series held.
    pub fn len(&self) -> usize {
        match self {
            Bars::Memory(v) => v.len(),
            Bars::Disk(d) => d.series.len(),
        }
    }

    /// Whether no series is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bars of series `i`.
    pub fn bars(&self, i: usize) -> usize {
        match self {
            Bars::Memory(v) => v[i].len(),
            Bars::Disk(d) => d.series[i].len,
        }
    }

    /// Bars of every series together.
    pub fn total_bars(&self) -> usize {
        (0..self.len()).map(|i| self.bars(i)).sum()
    }

    /// Symbols, in order.
    pub fn symbols(&self) -> Vec<String> {
        match self {
            Bars::Memory(v) => v.iter().map(|x| x.symbol.clone()).collect(),
            Bars::Disk(d) => d.series.iter().map(|x| x.symbol.clone()).collect(),
        }
    }

    /// The series in memory, if they are.
    pub fn in_memory(&self) -> Option<&[InstrumentSeries]> {
        match self {
            Bars::Memory(v) => Some(v),
            Bars::Disk(_) => None,
        }
    }
}

/// Bytes a bar takes in a spilled file: its features (f32) and its log return (f64), little
/// endian, so what is read back is bit for bit what was written.
const SPILLED_BAR: usize = FEATURES * 4 + 8;

/// One dataset's series written to a file ([`PretrainData::load_streamed`]): only their names,
/// ids and places stay in memory, and a window is read when it is drawn.
#[derive(Debug, Clone)]
pub struct SpilledSet {
    path: PathBuf,
    file: Arc<File>,
    series: Vec<SpilledSeries>,
}

#[derive(Debug, Clone)]
struct SpilledSeries {
    symbol: String,
    dataset: String,
    ids: [i64; 3],
    len: usize,
    /// Byte offset of its first bar.
    offset: u64,
}

impl SpilledSet {
    /// Writes `series` to `path` (replacing it) and opens it for reading.
    fn write(path: &Path, series: &[InstrumentSeries]) -> Result<SpilledSet, FoundationError> {
        let mut out = BufWriter::new(File::create(path).map_err(io(path))?);
        let mut index = Vec::with_capacity(series.len());
        let mut offset = 0u64;
        for s in series {
            for (f, r) in s.feats.iter().zip(&s.logret) {
                let mut rec = [0u8; SPILLED_BAR];
                for (k, v) in f.iter().enumerate() {
                    rec[k * 4..k * 4 + 4].copy_from_slice(&v.to_le_bytes());
                }
                rec[FEATURES * 4..].copy_from_slice(&r.to_le_bytes());
                out.write_all(&rec).map_err(io(path))?;
            }
            index.push(SpilledSeries {
                symbol: s.symbol.clone(),
                dataset: s.dataset.clone(),
                ids: s.ids,
                len: s.len(),
                offset,
            });
            offset += (s.len() * SPILLED_BAR) as u64;
        }
        // Not synced to disk: the process reads it back at once, and a crash rewrites it.
        out.flush().map_err(io(path))?;
        Ok(SpilledSet {
            path: path.to_path_buf(),
            file: Arc::new(File::open(path).map_err(io(path))?),
            series: index,
        })
    }

    /// Reads `n` bars of series `i` from bar `first` into `into` (its rows left empty).
    fn read(
        &self,
        i: usize,
        first: usize,
        n: usize,
        buf: &mut Vec<u8>,
        into: &mut InstrumentSeries,
    ) -> Result<(), FoundationError> {
        let s = &self.series[i];
        buf.resize(n * SPILLED_BAR, 0);
        read_at(&self.file, buf, s.offset + (first * SPILLED_BAR) as u64)
            .map_err(io(&self.path))?;
        into.symbol.clone_from(&s.symbol);
        into.dataset.clone_from(&s.dataset);
        into.ids = s.ids;
        into.rows.clear();
        into.feats.clear();
        into.logret.clear();
        for rec in buf.chunks_exact(SPILLED_BAR) {
            let mut f = [0f32; FEATURES];
            for (k, v) in f.iter_mut().enumerate() {
                let mut b = [0u8; 4];
                b.copy_from_slice(&rec[k * 4..k * 4 + 4]);
                *v = f32::from_le_bytes(b);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&rec[FEATURES * 4..]);
            into.feats.push(f);
            into.logret.push(f64::from_le_bytes(b));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

impl PretrainData {
    /// Loads the mixture as of `cutoff`, every dataset's series in memory.
    ///
    /// # Errors
    /// An unknown dataset or symbol; a cutoff that leaves no window of `cfg.window()` bars plus
    /// targets in any dataset.
    pub fn load(
        data: &dyn MarketData,
        mixture: &[MixtureEntry],
        cutoff: AsOf,
        cfg: &ModelConfig,
    ) -> Result<PretrainData, FoundationError> {
        PretrainData::load_into(data, mixture, cutoff, cfg, None)
    }

    /// [`PretrainData::load`], streamed: each dataset is loaded on its own, written to a file
    /// in `dir` (created if need be) and dropped, and batches read their windows from the
    /// files. Memory holds one dataset while loading and a batch's windows while training,
    /// whatever the mixture's size; the batches are bit for bit those of
    /// [`PretrainData::load`]. The files are the caller's to remove.
    ///
    /// # Errors
    /// As [`PretrainData::load`]; `dir` cannot be written.
    pub fn load_streamed(
        data: &dyn MarketData,
        mixture: &[MixtureEntry],
        cutoff: AsOf,
        cfg: &ModelConfig,
        dir: &Path,
    ) -> Result<PretrainData, FoundationError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        PretrainData::load_into(data, mixture, cutoff, cfg, Some(dir))
    }

    fn load_into(
        data: &dyn MarketData,
        mixture: &[MixtureEntry],
        cutoff: AsOf,
        cfg: &ModelConfig,
        spill: Option<&Path>,
    ) -> Result<PretrainData, FoundationError> {
        if mixture.is_empty() {
            return Err(FoundationError::Config(
                "no pretraining dataset; name at least one with --datasets".into(),
            ));
        }
        let need = cfg.window() + cfg.max_horizon();
        let mut sets = Vec::new();
        let mut longest = 0;
        for (k, entry) in mixture.iter().enumerate() {
            let u = load_universe(data, &entry.dataset, entry.symbols.as_deref(), cutoff)?;
            longest = longest.max(
                u.series
                    .iter()
                    .map(InstrumentSeries::len)
                    .max()
                    .unwrap_or(0),
            );
            let usable: Vec<InstrumentSeries> =
                u.series.into_iter().filter(|s| s.len() >= need).collect();
            if usable.is_empty() {
                continue;
            }
            let bars = match spill {
                None => Bars::Memory(usable),
                // The entry's place in the mixture names the file: a dataset may be listed
                // twice, with other symbols.
                Some(dir) => Bars::Disk(SpilledSet::write(
                    &dir.join(format!("{k:02}-{}.bars", entry.dataset)),
                    &usable,
                )?),
            };
            sets.push((entry.clone(), bars));
        }
        let names: Vec<&str> = mixture.iter().map(|m| m.dataset.as_str()).collect();
        if longest == 0 {
            return Err(FoundationError::NoData(format!(
                "cutoff {} leaves no training data in {}; choose a later --cutoff (see `lim data list` for each dataset's first bar)",
                show(cutoff),
                names.join(", ")
            )));
        }
        if sets.is_empty() {
            return Err(FoundationError::WindowTooLong {
                window: cfg.window(),
                horizon: cfg.max_horizon(),
                scope: format!("{} as of {}", names.join(", "), show(cutoff)),
                longest,
            });
        }
        Ok(PretrainData { cutoff, sets })
    }

    /// Symbols used, per dataset.
    pub fn symbols(&self) -> Vec<(String, Vec<String>)> {
        self.sets
            .iter()
            .map(|(e, s)| (e.dataset.clone(), s.symbols()))
            .collect()
    }

    /// Draws one batch: a dataset by weight, a series uniformly, a window end uniformly.
    ///
    /// # Errors
    /// A streamed dataset's file cannot be read.
    pub fn batch(
        &self,
        cfg: &ModelConfig,
        batch: usize,
        mask_ratio: f64,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<PretrainBatch, FoundationError> {
        let total: f64 = self.sets.iter().map(|(e, _)| e.weight).sum();
        let (w, p, nh) = (cfg.window(), cfg.n_patches, cfg.forecast_outputs());
        let mut patches = Vec::with_capacity(batch * p * cfg.patch_dim());
        let mut mask = Vec::with_capacity(batch * p);
        let mut ids = Vec::with_capacity(batch * 3);
        let mut targets = Vec::with_capacity(batch * nh);
        // A streamed window, read into these.
        let mut buf = Vec::new();
        let mut read = InstrumentSeries {
            symbol: String::new(),
            dataset: String::new(),
            ids: [0; 3],
            rows: Vec::new(),
            feats: Vec::with_capacity(w + cfg.max_horizon()),
            logret: Vec::with_capacity(w + cfg.max_horizon()),
        };
        for _ in 0..batch {
            let mut pick = rng.uniform() * total;
            let mut set = &self.sets[self.sets.len() - 1].1;
            for (e, s) in &self.sets {
                if pick < e.weight {
                    set = s;
                    break;
                }
                pick -= e.weight;
            }
            let i = rng.below(set.len());
            let span = set.bars(i) - w - cfg.max_horizon() + 1;
            let end = w - 1 + rng.below(span);
            // The window and its targets; a streamed one is read from its file alone.
            let (s, end) = match set {
                Bars::Memory(v) => (&v[i], end),
                Bars::Disk(d) => {
                    d.read(i, end + 1 - w, w + cfg.max_horizon(), &mut buf, &mut read)?;
                    (&read, w - 1)
                }
            };
            let sd = write_window(s, end, cfg, &mut patches);
            for &h in &cfg.horizons {
                let r = forward_return(s, end, h).unwrap_or(0.0);
                targets.push(scaled(r, sd, h));
            }
            if cfg.vol_targets {
                let own = window_log_vol(s, end, w);
                for &h in &cfg.horizons {
                    let v = forward_log_vol(s, end, h).map_or(0.0, |v| v - own);
                    targets.push((v as f32).clamp(-CLIP, CLIP));
                }
            }
            ids.extend_from_slice(&s.ids);
            let before = mask.len();
            for _ in 0..p {
                mask.push(if rng.uniform() < mask_ratio {
                    1f32
                } else {
                    0.0
                });
            }
            // At least one masked patch per window, so every window teaches reconstruction.
            if mask[before..].iter().all(|m| *m == 0.0) {
                mask[before + rng.below(p)] = 1.0;
            }
        }
        Ok(PretrainBatch {
            patches: Tensor::from_data(
                TensorData::new(patches, [batch, p, cfg.patch_dim()]),
                device,
            ),
            mask: Tensor::from_data(TensorData::new(mask, [batch, p]), device),
            ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, 3]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch, nh]), device),
        })
    }
}

/// Seconds a pretraining step of `cfg` and `p` takes on this machine: the median of `timed`
/// steps, after one untimed, of a throwaway run on `data` (seed and batches of its own, so
/// the run being sized is not touched). What `lim foundation pretrain --hours` divides by.
///
/// # Errors
/// A streamed dataset's file cannot be read.
pub fn seconds_per_step(
    data: &PretrainData,
    cfg: &ModelConfig,
    p: &PretrainConfig,
    device: &Device,
    timed: usize,
) -> Result<f64, FoundationError> {
    let mut probe = p.clone();
    probe.optim.seed = p.optim.seed.wrapping_add(0x5EED);
    let mut run = Run::new(cfg, &probe, device);
    run.step(data, cfg, &probe, device)?;
    let mut times = Vec::with_capacity(timed);
    for _ in 0..timed.max(1) {
        let t = Instant::now();
        run.step(data, cfg, &probe, device)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The steps that fit `hours` at `seconds_per_step` each (at least one).
pub fn steps_in(hours: f64, seconds_per_step: f64) -> usize {
    ((hours * 3600.0 / seconds_per_step).floor() as usize).max(1)
}

/// The losses `(total, reconstruction, forecast)` of a batch and the gradients of the total,
/// over `p.optim.shards` shards of the batch (see [`crate::parallel`]).
///
/// # Errors
/// None in practice: a group of one process exchanges nothing.
pub(crate) fn pretrain_gradients(
    model: &Pretrainer,
    batch: PretrainBatch,
    p: &PretrainConfig,
) -> Result<((f32, f32, f32), GradientsParams), FoundationError> {
    pretrain_gradients_in(model, batch, p, &mut Solo)
}

/// [`pretrain_gradients`] with the shards spread over `group` (the same in every process).
fn pretrain_gradients_in(
    model: &Pretrainer,
    batch: PretrainBatch,
    p: &PretrainConfig,
    group: &mut dyn Exchange,
) -> Result<((f32, f32, f32), GradientsParams), FoundationError> {
    let fw = p.forecast_weight;
    let parts = |l: PretrainLoss| vec![l.total, l.recon, l.forecast];
    let ranges = shard_ranges(batch.len(), p.optim.shards);
    let (v, grads) = if ranges.len() == 1 {
        group_gradients(model, vec![batch], |m, b| parts(m.loss(&b, fw)), group)?
    } else {
        let (masked, windows) = (batch.masked(), batch.len());
        let shards = ranges.into_iter().map(|r| batch.rows(r)).collect();
        group_gradients(
            model,
            shards,
            |m, b| parts(m.shard_loss(&b, fw, masked, windows)),
            group,
        )?
    };
    let at = |i: usize| v.get(i).copied().unwrap_or(f32::NAN);
    Ok(((at(0), at(1), at(2)), grads))
}

/// Where a training run stands: enough to continue it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps done.
    pub step: usize,
    /// The sampling generator's state.
    pub rng: Rng,
    /// Loss per logged step: `(step, total, reconstruction, forecast)`.
    pub losses: Vec<(usize, f32, f32, f32)>,
}

/// One progress report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Steps done.
    pub step: usize,
    /// Steps planned.
    pub steps: usize,
    /// Loss of this step.
    pub loss: f32,
    /// Learning rate of this step.
    pub lr: f64,
    /// Windows per second since the run (or resume) started.
    pub samples_per_s: f64,
    /// Seconds left at that rate.
    pub eta_s: f64,
}

/// A fresh optimizer for a configuration.
pub fn optimizer(o: &OptimConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(o.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(o.clip_norm as f32)))
        .init()
}

/// A model, its optimizer and where training stands.
pub struct Run {
    /// The model.
    pub model: Pretrainer,
    /// The exponential moving average of its weights, with [`PretrainConfig::ema`].
    pub ema: Option<Pretrainer>,
    /// The optimizer with its moments.
    pub optim: ModuleOptimizer,
    /// Step, generator, losses.
    pub state: TrainState,
}

/// `ema` moved towards `model` by `1 − decay`: each weight becomes
/// `decay · ema + (1 − decay) · model`. Both are the same module (the same parameter ids);
/// the average is not differentiated.
pub fn ema_update<M: Module>(ema: M, model: &M, decay: f64) -> M {
    use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
    use std::collections::HashMap;
    struct Collect(HashMap<ParamId, Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val().detach();
            let n = t.dims().iter().product::<usize>();
            self.0.insert(param.id, t.reshape([n]));
        }
    }
    struct Blend {
        current: HashMap<ParamId, Tensor<1>>,
        decay: f64,
    }
    impl ModuleMapper for Blend {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some(current) = self.current.remove(&param.id) else {
                return param;
            };
            let d = self.decay;
            param.map(|t| {
                let grad = t.is_require_grad();
                let dims = t.dims();
                // A new leaf: the average is not part of any graph.
                let v = t
                    .detach()
                    .mul_scalar(d)
                    .add(current.reshape(dims).mul_scalar(1.0 - d))
                    .detach();
                if grad { v.require_grad() } else { v }
            })
        }
    }
    let mut c = Collect(HashMap::new());
    model.visit(&mut c);
    ema.map(&mut Blend {
        current: c.0,
        decay,
    })
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Run {
    /// A new run: a seeded model on `device` (an autodiff device) and a fresh optimizer.
    pub fn new(cfg: &ModelConfig, p: &PretrainConfig, device: &Device) -> Run {
        let model = Pretrainer::new(cfg, p.optim.seed, device);
        Run {
            ema: p.ema.map(|_| model.clone()),
            model,
            optim: optimizer(&p.optim),
            state: TrainState {
                step: 0,
                rng: Rng::new(p.optim.seed, 0xDA7A),
                losses: Vec::new(),
            },
        }
    }

    /// One optimisation step; returns the losses.
    ///
    /// # Errors
    /// A streamed dataset's file cannot be read.
    pub fn step(
        &mut self,
        data: &PretrainData,
        cfg: &ModelConfig,
        p: &PretrainConfig,
        device: &Device,
    ) -> Result<(f32, f32, f32), FoundationError> {
        self.step_in(data, cfg, p, device, &mut Solo)
    }

    /// One optimisation step with the step's shards spread over `group`: every process of the
    /// group draws the same batch, and all take the same step (see [`crate::parallel`]).
    ///
    /// # Errors
    /// The group failed.
    pub fn step_in(
        &mut self,
        data: &PretrainData,
        cfg: &ModelConfig,
        p: &PretrainConfig,
        device: &Device,
        group: &mut dyn Exchange,
    ) -> Result<(f32, f32, f32), FoundationError> {
        let batch = data.batch(
            cfg,
            p.optim.batch,
            p.mask_ratio,
            &mut self.state.rng,
            device,
        )?;
        let (values, grads) = pretrain_gradients_in(&self.model, batch, p, group)?;
        let lr = p.optim.lr_at(self.state.step);
        let model = self.model.clone();
        self.model = self.optim.step(lr, model, grads);
        if let (Some(decay), Some(ema)) = (p.ema, self.ema.take()) {
            self.ema = Some(ema_update(ema, &self.model, decay));
        }
        self.state.step += 1;
        self.state
            .losses
            .push((self.state.step, values.0, values.1, values.2));
        Ok(values)
    }

    /// Trains until `p.optim.steps`, calling `report` after every step and `checkpoint` every
    /// `p.checkpoint_every` steps and at the end.
    ///
    /// # Errors
    /// Whatever `checkpoint` returns.
    pub fn train(
        &mut self,
        data: &PretrainData,
        cfg: &ModelConfig,
        p: &PretrainConfig,
        device: &Device,
        report: &mut dyn FnMut(&StepReport),
        checkpoint: &mut dyn FnMut(&Run) -> Result<(), FoundationError>,
    ) -> Result<(), FoundationError> {
        self.train_in(data, cfg, p, device, &mut Solo, report, checkpoint)
    }

    /// [`Run::train`] as one process of `group`: every step's shards are spread over the
    /// group's processes, which all train the same model; `checkpoint` is called in every
    /// process (one of them, usually rank 0, should write).
    ///
    /// # Errors
    /// Whatever `checkpoint` returns; the group failed.
    #[allow(clippy::too_many_arguments)]
    pub fn train_in(
        &mut self,
        data: &PretrainData,
        cfg: &ModelConfig,
        p: &PretrainConfig,
        device: &Device,
        group: &mut dyn Exchange,
        report: &mut dyn FnMut(&StepReport),
        checkpoint: &mut dyn FnMut(&Run) -> Result<(), FoundationError>,
    ) -> Result<(), FoundationError> {
        let started = Instant::now();
        let first = self.state.step;
        while self.state.step < p.optim.steps {
            let lr = p.optim.lr_at(self.state.step);
            let (loss, _, _) = self.step_in(data, cfg, p, device, group)?;
            let done = self.state.step - first;
            let rate = (done * p.optim.batch) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            report(&StepReport {
                step: self.state.step,
                steps: p.optim.steps,
                loss,
                lr,
                samples_per_s: rate,
                eta_s: ((p.optim.steps - self.state.step) * p.optim.batch) as f64 / rate.max(1e-9),
            });
            if p.checkpoint_every > 0
                && self.state.step.is_multiple_of(p.checkpoint_every)
                && self.state.step < p.optim.steps
            {
                checkpoint(self)?;
            }
        }
        checkpoint(self)
    }

    /// The weights to use: the moving average when there is one, else the model.
    pub fn weights(&self) -> &Pretrainer {
        self.ema.as_ref().unwrap_or(&self.model)
    }

    /// [`Run::weights`], taken.
    pub fn into_weights(self) -> Pretrainer {
        self.ema.unwrap_or(self.model)
    }

    /// The weights to use without autodiff, for inference or export.
    pub fn inference_model(&self) -> Pretrainer {
        self.weights().valid()
    }
}

/// An as-of time as the user wrote it: a date for the end of a day, else the instant.
pub fn show(a: AsOf) -> String {
    let t = (a.0).0;
    if t.rem_euclid(86_400) == 0 {
        lim_market::Timestamp(t - 1).date_string()
    } else {
        a.0.datetime_string()
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{ModuleVisitor, Param};

    use super::*;

    /// The largest difference between two gradients of every parameter, relative to the
    /// parameter's largest gradient (at least 1e-3: the attention keys' biases get gradients
    /// that are zero but for rounding).
    struct Compare<'a> {
        a: &'a GradientsParams,
        b: &'a GradientsParams,
        worst: f32,
        params: usize,
    }

    impl ModuleVisitor for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let (Some(a), Some(b)) = (self.a.get::<D>(param.id), self.b.get::<D>(param.id)) else {
                panic!("a gradient is missing");
            };
            let diff = (a.clone() - b).abs().max().into_scalar::<f32>();
            let scale = a.abs().max().into_scalar::<f32>().max(1e-3);
            self.worst = self.worst.max(diff / scale);
            self.params += 1;
        }
    }

    /// Every weight, flattened, in visiting order.
    struct Weights(Vec<Vec<f32>>);

    impl ModuleVisitor for Weights {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(
                param
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap_or_default(),
            );
        }
    }

    fn weights(m: &Pretrainer) -> Vec<Vec<f32>> {
        let mut w = Weights(Vec::new());
        m.visit(&mut w);
        w.0
    }

    #[test]
    fn the_moving_average_blends_every_weight_by_its_decay() {
        let cfg = ModelConfig::tiny();
        let device = Device::flex().autodiff();
        let a = Pretrainer::new(&cfg, 1, &device);
        // The same module (parameter ids) with other values: one optimiser step away.
        let b = crate::model::reseeded(a.clone(), 2);
        let (wa, wb) = (weights(&a), weights(&b));
        let blended = weights(&ema_update(a, &b, 0.75));
        assert_eq!(blended.len(), wa.len());
        let mut changed = 0;
        for ((x, y), z) in wa.iter().zip(&wb).zip(&blended) {
            for ((x, y), z) in x.iter().zip(y).zip(z) {
                assert!((z - (0.75 * x + 0.25 * y)).abs() <= 1e-6 * (1.0 + x.abs() + y.abs()));
                changed += usize::from(x != y);
            }
        }
        assert!(changed > 100, "the two models should differ");
    }

    #[test]
    fn shards_add_up_to_the_whole_batch() {
        let cfg = ModelConfig::tiny();
        let device = Device::flex().autodiff();
        let (b, p, w) = (7, cfg.n_patches, cfg.patch_dim());
        let mut rng = Rng::new(3, 3);
        let mut normal = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
        let patches = normal(b * p * w);
        let targets = normal(b * cfg.horizons.len());
        let mask: Vec<f32> = (0..b * p)
            .map(|i| ((i * 7) % 3 == 0) as u8 as f32)
            .collect();
        let ids: Vec<i64> = (0..b).flat_map(|i| [i as i64 % 3, 1, 0]).collect();
        let batch = PretrainBatch {
            patches: Tensor::from_data(TensorData::new(patches, [b, p, w]), &device),
            mask: Tensor::from_data(TensorData::new(mask, [b, p]), &device),
            ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 3]), &device),
            targets: Tensor::from_data(TensorData::new(targets, [b, cfg.horizons.len()]), &device),
        };
        let model = Pretrainer::new(&cfg, 1, &device);
        let run = |shards: usize| {
            let mut p = PretrainConfig::new(10, b, 1);
            p.optim.shards = shards;
            pretrain_gradients(&model, batch.clone(), &p).unwrap()
        };
        let (whole, g1) = run(1);
        let (split, g3) = run(3);
        let (again, g3b) = run(3);
        for (x, y) in [(whole.0, split.0), (whole.1, split.1), (whole.2, split.2)] {
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
        }
        let mut cmp = Compare {
            a: &g1,
            b: &g3,
            worst: 0.0,
            params: 0,
        };
        model.visit(&mut cmp);
        assert!(cmp.params > 10);
        assert!(
            cmp.worst < 1e-4,
            "relative gradient difference {}",
            cmp.worst
        );
        // The same shards give the same numbers, bit for bit.
        assert_eq!(split, again);
        let mut same = Compare {
            a: &g3,
            b: &g3b,
            worst: 0.0,
            params: 0,
        };
        model.visit(&mut same);
        assert_eq!(same.worst, 0.0);
    }
}
