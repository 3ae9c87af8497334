//! Pretraining: windows drawn from a weighted mixture of datasets up to a cutoff,
//! masked-patch reconstruction plus multi-horizon return forecasting, AdamW with warm-up and
//! cosine decay, per-parameter gradient-norm clipping, resumable from a checkpoint.

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use lim_market::{AsOf, MarketData};
use serde::{Deserialize, Serialize};

use crate::config::{MixtureEntry, ModelConfig, OptimConfig, PretrainConfig};
use crate::error::FoundationError;
use crate::features::{InstrumentSeries, forward_return, load_universe, scaled, write_window};
use crate::model::{PretrainBatch, Pretrainer};
use crate::rng::Rng;

/// The windows pretraining may draw from: every dataset of the mixture cut at the cutoff.
#[derive(Debug, Clone)]
pub struct PretrainData {
    /// The cutoff every series was cut at.
    pub cutoff: AsOf,
    /// Per dataset: its mixture entry and the series long enough for one window plus targets.
    pub sets: Vec<(MixtureEntry, Vec<InstrumentSeries>)>,
}

impl PretrainData {
    /// Loads the mixture as of `cutoff`.
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
        if mixture.is_empty() {
            return Err(FoundationError::Config(
                "no pretraining dataset; name at least one with --datasets".into(),
            ));
        }
        let need = cfg.window() + cfg.max_horizon();
        let mut sets = Vec::new();
        let mut longest = 0;
        for entry in mixture {
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
            if !usable.is_empty() {
                sets.push((entry.clone(), usable));
            }
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
            .map(|(e, s)| {
                (
                    e.dataset.clone(),
                    s.iter().map(|x| x.symbol.clone()).collect(),
                )
            })
            .collect()
    }

    /// Draws one batch: a dataset by weight, a series uniformly, a window end uniformly.
    pub fn batch(
        &self,
        cfg: &ModelConfig,
        batch: usize,
        mask_ratio: f64,
        rng: &mut Rng,
        device: &Device,
    ) -> PretrainBatch {
        let total: f64 = self.sets.iter().map(|(e, _)| e.weight).sum();
        let (w, p, nh) = (cfg.window(), cfg.n_patches, cfg.horizons.len());
        let mut patches = Vec::with_capacity(batch * p * cfg.patch_dim());
        let mut mask = Vec::with_capacity(batch * p);
        let mut ids = Vec::with_capacity(batch * 3);
        let mut targets = Vec::with_capacity(batch * nh);
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
            let s = &set[rng.below(set.len())];
            let span = s.len() - w - cfg.max_horizon() + 1;
            let end = w - 1 + rng.below(span);
            let sd = write_window(s, end, cfg, &mut patches);
            for &h in &cfg.horizons {
                let r = forward_return(s, end, h).unwrap_or(0.0);
                targets.push(scaled(r, sd, h));
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
        PretrainBatch {
            patches: Tensor::from_data(
                TensorData::new(patches, [batch, p, cfg.patch_dim()]),
                device,
            ),
            mask: Tensor::from_data(TensorData::new(mask, [batch, p]), device),
            ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, 3]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch, nh]), device),
        }
    }
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
    /// The optimizer with its moments.
    pub optim: ModuleOptimizer,
    /// Step, generator, losses.
    pub state: TrainState,
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
        Run {
            model: Pretrainer::new(cfg, p.optim.seed, device),
            optim: optimizer(&p.optim),
            state: TrainState {
                step: 0,
                rng: Rng::new(p.optim.seed, 0xDA7A),
                losses: Vec::new(),
            },
        }
    }

    /// One optimisation step; returns the losses.
    pub fn step(
        &mut self,
        data: &PretrainData,
        cfg: &ModelConfig,
        p: &PretrainConfig,
        device: &Device,
    ) -> (f32, f32, f32) {
        let batch = data.batch(
            cfg,
            p.optim.batch,
            p.mask_ratio,
            &mut self.state.rng,
            device,
        );
        let loss = self.model.loss(&batch, p.forecast_weight);
        let values = (
            scalar(&loss.total),
            scalar(&loss.recon),
            scalar(&loss.forecast),
        );
        let grads = GradientsParams::from_grads(loss.total.backward(), &self.model);
        let lr = p.optim.lr_at(self.state.step);
        let model = self.model.clone();
        self.model = self.optim.step(lr, model, grads);
        self.state.step += 1;
        self.state
            .losses
            .push((self.state.step, values.0, values.1, values.2));
        values
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
        let started = Instant::now();
        let first = self.state.step;
        while self.state.step < p.optim.steps {
            let lr = p.optim.lr_at(self.state.step);
            let (loss, _, _) = self.step(data, cfg, p, device);
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

    /// The model without autodiff, for inference or export.
    pub fn inference_model(&self) -> Pretrainer {
        self.model.valid()
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

/// A scalar tensor's value.
pub(crate) fn scalar(t: &Tensor<1>) -> f32 {
    t.clone().into_scalar::<f32>()
}
