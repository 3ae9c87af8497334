//! Building blocks of the benchmark binary (`bench-foundation`), kept here so that burn stays
//! inside this crate: one optimisation step of a configuration on synthetic windows.

use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::FoundationError;
use crate::config::{FinetuneConfig, Mode, ModelConfig, PretrainConfig};
use crate::model::{Predictor, PretrainBatch, Pretrainer};
use crate::parallel::{shard_ranges, sharded_gradients};
use crate::pretrain::{optimizer, pretrain_gradients};
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
    pretrain: PretrainConfig,
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
    let nh = cfg.forecast_outputs();
    let targets: Vec<f32> = (0..b * nh).map(|_| rng.normal() as f32).collect();
    PretrainBatch {
        patches: Tensor::from_data(TensorData::new(patches, [b, p, cfg.patch_dim()]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, p]), device),
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 3]), device),
        targets: Tensor::from_data(TensorData::new(targets, [b, nh]), device),
    }
}

/// Trainable parameters of `cfg`'s pretraining model (backbone and heads).
pub fn parameters(cfg: &ModelConfig) -> usize {
    use burn::module::Module;
    Pretrainer::new(cfg, 0, &Device::flex().autodiff()).num_params()
}

impl StepBench {
    /// A bench of `cfg` at `batch` windows per step cut into `shards` shards (see
    /// [`crate::parallel`]) on the CPU device, with `n` batches.
    pub fn new(
        objective: Objective,
        cfg: &ModelConfig,
        batch: usize,
        shards: usize,
        n: usize,
    ) -> StepBench {
        let device = Device::flex().autodiff();
        let mut rng = Rng::new(0, 0);
        let batches = (0..n.max(1))
            .map(|_| synthetic(cfg, batch, &mut rng, &device))
            .collect();
        let pre = Pretrainer::new(cfg, 0, &device);
        let mut pretrain = PretrainConfig::new(1000, batch, 0);
        pretrain.optim.shards = shards;
        let (pretrainer, predictor, optim) = match objective {
            Objective::Pretrain => (Some(pre), None, optimizer(&pretrain.optim)),
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
            pretrain,
            batches,
            next: 0,
        }
    }

    /// One step (forward, backward, AdamW update, loss read back); returns the loss.
    ///
    /// # Errors
    /// None in practice: the step runs in one process (see [`crate::parallel::Solo`]).
    pub fn step(&mut self) -> Result<f32, FoundationError> {
        let b = &self.batches[self.next % self.batches.len()];
        self.next += 1;
        if let Some(m) = self.pretrainer.take() {
            let ((v, _, _), grads) = pretrain_gradients(&m, b.clone(), &self.pretrain)?;
            self.pretrainer = Some(self.optim.step(1e-4, m, grads));
            return Ok(v);
        }
        if let Some(m) = self.predictor.take() {
            let ranges = shard_ranges(b.len(), self.pretrain.optim.shards);
            let whole = (ranges.len() > 1).then_some(b.len());
            let shards = ranges.into_iter().map(|r| b.rows(r)).collect();
            let (v, grads) = sharded_gradients(&m, shards, |m, s: PretrainBatch| {
                let n = s.len();
                let y: Tensor<1> = s.targets.narrow(1, 0, 1).reshape([n]);
                vec![m.loss(s.patches, s.ids, y, false, whole, false)]
            });
            self.predictor = Some(self.optim.step(1e-4, m, grads));
            return Ok(v.first().copied().unwrap_or(f32::NAN));
        }
        Ok(f32::NAN)
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
