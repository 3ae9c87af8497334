//! Building blocks of the benchmark binary (`bench-foundation`), kept here so that burn stays
//! inside this crate: one optimisation step of a configuration on synthetic windows.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{FinetuneConfig, Mode, ModelConfig, PretrainConfig};
use crate::model::{Predictor, PretrainBatch, Pretrainer};
use crate::pretrain::{optimizer, scalar};
use crate::rng::Rng;

/// What a step trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Masked-patch reconstruction plus multi-horizon forecasting.
    Pretrain,
    /// Full fine-tuning of a one-number head.
    Finetune,
}

/// A model, its optimizer and pre-built synthetic batches.
pub struct StepBench {
    objective: Objective,
    pretrainer: Option<Pretrainer>,
    predictor: Option<Predictor>,
    optim: ModuleOptimizer,
    batches: Vec<PretrainBatch>,
    next: usize,
}

impl std::fmt::Debug for StepBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepBench")
            .field("objective", &self.objective)
            .finish_non_exhaustive()
    }
}

fn synthetic(cfg: &ModelConfig, b: usize, rng: &mut Rng, device: &Device) -> PretrainBatch {
    let p = cfg.n_patches;
    let patches: Vec<f32> = (0..b * p * cfg.patch_dim())
        .map(|_| rng.normal() as f32)
        .collect();
    let mask: Vec<f32> = (0..b * p)
        .map(|_| f32::from(u8::from(rng.uniform() < 0.4)))
        .collect();
    let ids: Vec<i64> = (0..b)
        .flat_map(|i| [1 + (i % 5) as i64, (i % 7) as i64, 1])
        .collect();
    let nh = cfg.horizons.len();
    let targets: Vec<f32> = (0..b * nh).map(|_| rng.normal() as f32).collect();
    PretrainBatch {
        patches: Tensor::from_data(TensorData::new(patches, [b, p, cfg.patch_dim()]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, p]), device),
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 3]), device),
        targets: Tensor::from_data(TensorData::new(targets, [b, nh]), device),
    }
}

impl StepBench {
    /// A bench of `cfg` at `batch` windows per step on the CPU device, with `n` batches.
    pub fn new(objective: Objective, cfg: &ModelConfig, batch: usize, n: usize) -> StepBench {
        let device = Device::flex().autodiff();
        let mut rng = Rng::new(0, 0);
        let batches = (0..n.max(1))
            .map(|_| synthetic(cfg, batch, &mut rng, &device))
            .collect();
        let pre = Pretrainer::new(cfg, 0, &device);
        let (pretrainer, predictor, optim) = match objective {
            Objective::Pretrain => (
                Some(pre),
                None,
                optimizer(&PretrainConfig::new(1000, batch, 0).optim),
            ),
            Objective::Finetune => (
                None,
                Some(Predictor::new(pre.backbone, cfg.d_model, 0, &device)),
                optimizer(&FinetuneConfig::new(Mode::Full, 1000, batch, 0).optim),
            ),
        };
        StepBench {
            objective,
            pretrainer,
            predictor,
            optim,
            batches,
            next: 0,
        }
    }

    /// One step (forward, backward, AdamW update, loss read back); returns the loss.
    pub fn step(&mut self) -> f32 {
        let b = &self.batches[self.next % self.batches.len()];
        self.next += 1;
        if let Some(m) = self.pretrainer.take() {
            let loss = m.loss(b, 1.0).total;
            let v = scalar(&loss);
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            self.pretrainer = Some(self.optim.step(1e-4, m, grads));
            return v;
        }
        if let Some(m) = self.predictor.take() {
            let [n, _] = b.targets.dims();
            let y: Tensor<1> = b.targets.clone().narrow(1, 0, 1).reshape([n]);
            let loss = (m.forward(b.patches.clone(), b.ids.clone(), false) - y)
                .square()
                .mean();
            let v = scalar(&loss);
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            self.predictor = Some(self.optim.step(1e-4, m, grads));
            return v;
        }
        f32::NAN
    }
}

/// An untrained predictor of `cfg` on the CPU device (prediction cost does not depend on the
/// weights' values).
pub fn untrained_predictor(cfg: &ModelConfig) -> Predictor {
    let device = Device::flex();
    Predictor::new(
        Pretrainer::new(cfg, 0, &device).backbone,
        cfg.d_model,
        0,
        &device,
    )
}
