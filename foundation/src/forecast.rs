//! From market data to a prediction panel in one call, for the research workflow's `forecast`
//! tool: pretrain on a mixture up to a cutoff, fine-tune on the target dataset (early stopping
//! on the last quarter before the cutoff), and predict every bar after the cutoff.

use burn::tensor::Device;
use lim_market::{AsOf, MarketData, Timestamp};

use crate::config::{FinetuneConfig, MixtureEntry, ModelConfig, PretrainConfig};
use crate::error::FoundationError;
use crate::finetune::{finetune, samples, target_universe};
use crate::model::Predictor;
use crate::predict::{About, PredictionPanel, predict_with};
use crate::pretrain::{PretrainData, Run};

/// What to train and predict.
#[derive(Debug, Clone)]
pub struct ForecastSpec {
    /// The target dataset.
    pub dataset: String,
    /// Its instruments (all when `None`).
    pub symbols: Option<Vec<String>>,
    /// Pretraining datasets and weights.
    pub mixture: Vec<MixtureEntry>,
    /// Nothing that closed after this instant is learned from.
    pub cutoff: AsOf,
    /// Predictions run to the last bar visible at this instant.
    pub until: AsOf,
    /// The model's shape.
    pub model: ModelConfig,
    /// Pretraining settings.
    pub pretrain: PretrainConfig,
    /// Fine-tuning settings.
    pub finetune: FinetuneConfig,
    /// Seed of the head.
    pub seed: u64,
}

/// Trains as `spec` says and predicts every bar after its cutoff.
///
/// # Errors
/// Too little data before the cutoff, an unknown dataset or symbol, or a failed step.
pub fn forecast(
    data: &dyn MarketData,
    spec: &ForecastSpec,
    device: &Device,
) -> Result<PredictionPanel, FoundationError> {
    spec.model.validate()?;
    let ad = device.clone().autodiff();
    let u = target_universe(data, &spec.dataset, spec.symbols.as_deref(), spec.cutoff)?;
    let (Some(first), Some(last)) = (u.times.first().copied(), u.times.last().copied()) else {
        return Err(FoundationError::NoData(format!(
            "'{}' has no bar before the cutoff {}",
            spec.dataset, spec.cutoff
        )));
    };
    // Fine-tuning trains on the first three quarters before the cutoff, stops early on the rest.
    let split = AsOf(Timestamp(first.0 + (last.0 - first.0) / 4 * 3));
    let train = samples(
        u.clone(),
        &spec.model,
        &spec.finetune,
        None,
        split,
        "training",
    )?;
    let valid = samples(
        u,
        &spec.model,
        &spec.finetune,
        Some(split),
        spec.cutoff,
        "validation",
    )?;
    let pd = PretrainData::load(data, &spec.mixture, spec.cutoff, &spec.model)?;
    let mut run = Run::new(&spec.model, &spec.pretrain, &ad);
    run.train(
        &pd,
        &spec.model,
        &spec.pretrain,
        &ad,
        &mut |_| {},
        &mut |_| Ok(()),
    )?;
    let model = Predictor::new(run.model.backbone, spec.model.d_model, spec.seed, &ad);
    let tuned = finetune(
        model,
        &train,
        &valid,
        &spec.model,
        &spec.finetune,
        &ad,
        &mut |_| {},
    )?;
    let full = target_universe(data, &spec.dataset, spec.symbols.as_deref(), spec.until)?;
    let Some(start) = full
        .times
        .iter()
        .copied()
        .find(|t| !spec.cutoff.sees(*t, full.frequency))
    else {
        return Err(FoundationError::NoData(format!(
            "'{}' has no bar after the cutoff {}",
            spec.dataset, spec.cutoff
        )));
    };
    let end = full.times.last().copied().unwrap_or(start);
    let about = About {
        model: "foundation",
        cfg: &spec.model,
        cutoff: spec.cutoff,
        finetune: Some(&spec.finetune),
    };
    predict_with("forecast", &tuned.model, &about, &full, start, end, &ad)
}
