//! From market data to a prediction panel, for the research workflow's foundation tools, in
//! three steps an agent can choose between: pretrain a backbone on a mixture up to a cutoff
//! ([`pretrain_backbone`]), fine-tune a head on the target (early stopping on the last quarter
//! before the cutoff, [`finetune_target`]), and predict every bar after the cutoff
//! ([`predict_target`]). [`forecast`] does all three.

use burn::tensor::Device;
use lim_market::{AsOf, MarketData, Timestamp};

use crate::config::{FinetuneConfig, MixtureEntry, ModelConfig, PretrainConfig};
use crate::error::FoundationError;
use crate::finetune::{Finetuned, finetune, samples, target_universe};
use crate::model::{Backbone, Predictor, Pretrainer};
use crate::predict::{About, PredictionPanel, predict_with};
use crate::pretrain::{PretrainData, Run};

/// The target of fine-tuning and prediction.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The target dataset.
    pub dataset: String,
    /// Its instruments (all when `None`).
    pub symbols: Option<Vec<String>>,
    /// Nothing that closed after this instant is learned from.
    pub cutoff: AsOf,
    /// Predictions run to the last bar visible at this instant.
    pub until: AsOf,
    /// The model's shape.
    pub model: ModelConfig,
}

/// What to train and predict in one call.
#[derive(Debug, Clone)]
pub struct ForecastSpec {
    /// The target.
    pub target: TargetSpec,
    /// Pretraining datasets and weights.
    pub mixture: Vec<MixtureEntry>,
    /// Pretraining settings.
    pub pretrain: PretrainConfig,
    /// Fine-tuning settings.
    pub finetune: FinetuneConfig,
    /// Seed of the head.
    pub seed: u64,
}

/// A backbone pretrained on `mixture` up to `cutoff` (on an autodiff `device`).
///
/// # Errors
/// Too little data before the cutoff, or an unknown dataset.
pub fn pretrain_backbone(
    data: &dyn MarketData,
    mixture: &[MixtureEntry],
    cutoff: AsOf,
    model: &ModelConfig,
    p: &PretrainConfig,
    device: &Device,
) -> Result<Backbone, FoundationError> {
    model.validate()?;
    let pd = PretrainData::load(data, mixture, cutoff, model)?;
    let mut run = Run::new(model, p, device);
    run.train(&pd, model, p, device, &mut |_| {}, &mut |_| Ok(()))?;
    Ok(run.into_weights().backbone)
}

/// An untrained backbone, seeded: the scratch arm.
pub fn scratch_backbone(model: &ModelConfig, seed: u64, device: &Device) -> Backbone {
    Pretrainer::new(model, seed, device).backbone
}

/// Fine-tunes a head (and, in full mode, `backbone`) on the target's bars before its cutoff:
/// the first three quarters train, the last quarter stops early.
///
/// # Errors
/// Too little data before the cutoff, an unknown dataset or symbol, or a failed step.
pub fn finetune_target(
    data: &dyn MarketData,
    target: &TargetSpec,
    backbone: Backbone,
    ft: &FinetuneConfig,
    seed: u64,
    device: &Device,
) -> Result<Finetuned, FoundationError> {
    target.model.validate()?;
    let u = target_universe(
        data,
        &target.dataset,
        target.symbols.as_deref(),
        target.cutoff,
    )?;
    let (Some(first), Some(last)) = (u.times.first().copied(), u.times.last().copied()) else {
        return Err(FoundationError::NoData(format!(
            "'{}' has no bar before the cutoff {}",
            target.dataset, target.cutoff
        )));
    };
    let split = AsOf(Timestamp(first.0 + (last.0 - first.0) / 4 * 3));
    let train = samples(u.clone(), &target.model, ft, None, split, "training")?;
    let valid = samples(
        u,
        &target.model,
        ft,
        Some(split),
        target.cutoff,
        "validation",
    )?;
    let model = Predictor::new(backbone, target.model.d_model, seed, device);
    finetune(
        model,
        &train,
        &valid,
        &target.model,
        ft,
        device,
        &mut |_| {},
    )
}

/// The predictions of `model` for every bar of the target after its cutoff.
///
/// # Errors
/// No bar after the cutoff, or an unknown dataset or symbol.
pub fn predict_target(
    data: &dyn MarketData,
    target: &TargetSpec,
    model: &Predictor,
    ft: &FinetuneConfig,
    device: &Device,
) -> Result<PredictionPanel, FoundationError> {
    let full = target_universe(
        data,
        &target.dataset,
        target.symbols.as_deref(),
        target.until,
    )?;
    let Some(start) = full
        .times
        .iter()
        .copied()
        .find(|t| !target.cutoff.sees(*t, full.frequency))
    else {
        return Err(FoundationError::NoData(format!(
            "'{}' has no bar after the cutoff {}",
            target.dataset, target.cutoff
        )));
    };
    let end = full.times.last().copied().unwrap_or(start);
    let about = About {
        model: "foundation",
        cfg: &target.model,
        cutoff: target.cutoff,
        finetune: Some(ft),
    };
    predict_with("forecast", model, &about, &full, start, end, device)
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
    let ad = device.clone().autodiff();
    let backbone = pretrain_backbone(
        data,
        &spec.mixture,
        spec.target.cutoff,
        &spec.target.model,
        &spec.pretrain,
        &ad,
    )?;
    let tuned = finetune_target(data, &spec.target, backbone, &spec.finetune, spec.seed, &ad)?;
    predict_target(data, &spec.target, &tuned.model, &spec.finetune, &ad)
}
