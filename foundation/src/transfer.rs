//! The transfer experiment: does pretraining help a downstream target?
//!
//! On one target universe and three consecutive periods (fine-tune training up to
//! `train_end`, validation for early stopping up to `valid_end`, test up to `test_end`), it
//! compares the same head and backbone
//! (a) trained from scratch on the target,
//! (b) pretrained on the target market only (up to `train_end`), then fine-tuned (probe and full),
//! (c) pretrained across markets (up to `train_end`), then fine-tuned (probe and full),
//! by IC, rank IC and ICIR on the test period, which no model and no stopping rule has seen;
//! for a volatility target also by QLIKE and the MSE of the log volatility, beside the simple
//! forecasts of [`crate::vol`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use lim_market::{AsOf, MarketData};
use serde::Serialize;

use crate::config::{FinetuneConfig, MixtureEntry, Mode, ModelConfig, PretrainConfig, Target};
use crate::error::FoundationError;
use crate::finetune::{
    IcReport, SampleSet, finetune, ic_report, predict_samples, samples, target_universe,
};
use crate::model::{Backbone, Predictor, Pretrainer};
use crate::pretrain::{PretrainData, Run, StepReport};
use crate::vol::{Blend, VolReport, model_log_vol, vol_report};

/// What to compare.
#[derive(Debug, Clone, Serialize)]
pub struct TransferSpec {
    /// Target dataset (the fine-tuning universe).
    pub target: String,
    /// Target symbols (all when `None`).
    pub symbols: Option<Vec<String>>,
    /// The cross-market pretraining mixture.
    pub cross: Vec<MixtureEntry>,
    /// End of fine-tune training data, and pretraining cutoff.
    pub train_end: AsOf,
    /// End of validation (early stopping).
    pub valid_end: AsOf,
    /// End of the test period.
    pub test_end: AsOf,
    /// Model shape.
    pub model: ModelConfig,
    /// Pretraining settings (both pretrained arms).
    pub pretrain: PretrainConfig,
    /// Fine-tuning steps (upper bound) and batch.
    pub finetune_steps: usize,
    /// Fine-tuning batch.
    pub finetune_batch: usize,
    /// Target kind.
    pub target_kind: Target,
    /// Forward horizon in bars.
    pub horizon: usize,
    /// Seed.
    pub seed: u64,
    /// Fine-tune on only the last this many bars of the target's training period (all of it
    /// when `None`): the sample-efficiency axis. Pretraining still reads up to `train_end`.
    pub train_bars: Option<usize>,
    /// A model pretrained beforehand (models directory, name; `lim foundation pretrain`)
    /// stands in for the cross-market pretraining: one long pretraining serves every cell of
    /// a grid. Its cutoff must not be after `train_end`, and its shape must be `model`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_from: Option<(PathBuf, String)>,
    /// Only these arms (names of [`ARMS`]; all when empty). A pretraining no chosen arm needs
    /// is not run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<String>,
    /// The full arms fine-tune in two stages (LP-FT, Kumar et al. 2022): first the head alone
    /// on the frozen pretrained backbone, as the probe arm does, then everything from there,
    /// so that a random head's first gradients do not distort the pretrained features.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lp_ft: bool,
    /// What a volatility target is learned relative to.
    #[serde(default)]
    pub vol_anchor: crate::config::VolAnchor,
    /// What volatility heads are trained on.
    #[serde(default)]
    pub vol_loss: crate::config::VolLoss,
}

/// Every arm named is one of [`ARMS`].
///
/// # Errors
/// An unknown arm, named with the list of arms.
pub fn check_arms(arms: &[String]) -> Result<(), FoundationError> {
    match arms.iter().find(|a| !ARMS.contains(&a.as_str())) {
        Some(bad) => Err(FoundationError::Config(format!(
            "unknown arm '{bad}': the arms are {}",
            ARMS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The arms of a comparison, in order.
pub const ARMS: [&str; 5] = [
    "scratch",
    "target-only probe",
    "target-only full",
    "cross-market probe",
    "cross-market full",
];

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    /// Short label.
    pub name: String,
    /// Datasets the backbone was pretrained on (empty: from scratch).
    pub pretrained_on: Vec<String>,
    /// Fine-tuning mode.
    pub mode: Mode,
    /// Final pretraining loss (mean of the last 10 steps), if pretrained.
    pub pretrain_loss: Option<f32>,
    /// Step kept by early stopping, and steps run.
    pub best_step: usize,
    /// Steps run before stopping.
    pub steps_run: usize,
    /// Validation ICs (what early stopping saw).
    pub valid: IcReport,
    /// Test ICs.
    pub test: IcReport,
    /// Test volatility scores (volatility targets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vol: Option<VolReport>,
    /// Its forecast blended with EWMA's, the weight chosen on validation, and the blend's test
    /// scores (volatility targets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_ewma: Option<(Blend, VolReport)>,
    /// Wall seconds of fine-tuning.
    pub seconds: f64,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct TransferReport {
    /// The settings.
    pub spec: TransferSpec,
    /// Samples per period: train, validation, test.
    pub samples: [usize; 3],
    /// Test dates.
    pub test_dates: usize,
    /// Windows per pretraining dataset (target-only, cross-market).
    pub pretrain_series: Vec<(String, usize)>,
    /// Seconds of each pretraining (target-only, cross-market).
    pub pretrain_seconds: [f64; 2],
    /// The rows.
    pub arms: Vec<Arm>,
    /// For volatility targets, the simple forecasts on the same test samples (HAR fitted on
    /// the training samples).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<(String, VolReport)>,
    /// For return targets, the linear model on classic features (fitted on the training
    /// samples) and two of those features alone, on the same test samples (see
    /// [`crate::linear`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub return_baselines: Vec<(String, IcReport)>,
    /// Every simple forecast above, by name, scored on the validation period as on the test
    /// (QLIKE for volatility, rank IC for returns): how a researcher picks among them without
    /// looking at the test. A forecast corrected or scaled on validation is scored on the data
    /// it was corrected on, as a model is early-stopped on it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub valid_scores: Vec<(String, f64)>,
}

/// A pretrained backbone, its final loss, seconds taken and series per dataset.
type Pretrained = (Backbone, f32, f64, Vec<(String, usize)>);

/// One arm to fine-tune: label, backbone, pretraining datasets, mode, pretraining loss.
type Plan = (&'static str, Backbone, Vec<String>, Mode, Option<f32>);

fn pretrain(
    data: &dyn MarketData,
    mixture: &[MixtureEntry],
    spec: &TransferSpec,
    device: &Device,
    label: &str,
    progress: &mut dyn FnMut(&str, &StepReport),
) -> Result<Pretrained, FoundationError> {
    let started = Instant::now();
    let pd = PretrainData::load(data, mixture, spec.train_end, &spec.model)?;
    let series = pd
        .sets
        .iter()
        .map(|(e, s)| (e.dataset.clone(), s.len()))
        .collect();
    let mut run = Run::new(&spec.model, &spec.pretrain, device);
    run.train(
        &pd,
        &spec.model,
        &spec.pretrain,
        device,
        &mut |r| progress(label, r),
        &mut |_| Ok(()),
    )?;
    let loss = final_loss(&run.state.losses);
    Ok((
        run.into_weights().backbone,
        loss,
        started.elapsed().as_secs_f64(),
        series,
    ))
}

/// A pretraining's final loss: the mean total of its last 10 logged steps.
fn final_loss(losses: &[(usize, f32, f32, f32)]) -> f32 {
    let tail: Vec<f32> = losses.iter().rev().take(10).map(|l| l.1).collect();
    tail.iter().sum::<f32>() / tail.len().max(1) as f32
}

/// The backbone of the model `name` in the models directory `dir`, pretrained beforehand, its
/// final loss (mean of its last 10 logged steps), no seconds (spent elsewhere) and its datasets.
fn pretrained_elsewhere(
    dir: &Path,
    name: &str,
    spec: &TransferSpec,
    device: &Device,
) -> Result<(Backbone, f32, f64, Vec<String>), FoundationError> {
    let (meta, backbone) = crate::checkpoint::Store::new(dir).load_backbone(name, device)?;
    if meta.manifest.cutoff > spec.train_end {
        return Err(FoundationError::Config(format!(
            "model '{name}' learned from data up to {}, after the fine-tuning cutoff {}: its cross-market arms would have seen the validation period; pretrain with a --cutoff no later than --train-end",
            meta.manifest.cutoff, spec.train_end
        )));
    }
    if let Some(d) = meta.model.difference(&spec.model) {
        return Err(FoundationError::Config(format!(
            "model '{name}' has another shape than the one asked for ({d}); give the same --config and shape options it was pretrained with"
        )));
    }
    let loss = final_loss(&meta.state.losses);
    let names = meta
        .manifest
        .datasets
        .iter()
        .map(|e| e.dataset.clone())
        .collect();
    Ok((backbone, loss, 0.0, names))
}

/// Runs the comparison. `device` is the plain device; training uses its autodiff twin.
///
/// # Errors
/// Unknown datasets or symbols, periods without samples, windows longer than the history.
pub fn run(
    data: &dyn MarketData,
    spec: &TransferSpec,
    device: &Device,
    progress: &mut dyn FnMut(&str, &StepReport),
) -> Result<TransferReport, FoundationError> {
    run_with(data, spec, None, device, progress)
}

/// [`run`], with `factors` to choose one more return baseline from: the best of them on the
/// training samples, either way round ([`crate::linear::best_factor`]).
///
/// # Errors
/// As [`run`], and factors that could not be computed.
pub fn run_with(
    data: &dyn MarketData,
    spec: &TransferSpec,
    factors: Option<&dyn crate::linear::FactorSource>,
    device: &Device,
    progress: &mut dyn FnMut(&str, &StepReport),
) -> Result<TransferReport, FoundationError> {
    spec.model.validate()?;
    if !(spec.train_end < spec.valid_end && spec.valid_end < spec.test_end) {
        return Err(FoundationError::Config(
            "periods must be ordered: --train-end < --valid-end < --test-end".into(),
        ));
    }
    let ad = device.clone().autodiff();
    let ft = |mode: Mode| {
        let mut f = FinetuneConfig::new(mode, spec.finetune_steps, spec.finetune_batch, spec.seed);
        f.target = spec.target_kind;
        f.horizon = spec.horizon;
        f.optim.shards = spec.pretrain.optim.shards;
        f.vol_anchor = spec.vol_anchor;
        f.vol_loss = spec.vol_loss;
        f
    };
    let base = ft(Mode::Full);
    let syms = spec.symbols.as_deref();
    let u = target_universe(data, &spec.target, syms, spec.valid_end)?;
    let mut train: SampleSet = samples(
        u.clone(),
        &spec.model,
        &base,
        None,
        spec.train_end,
        "training",
    )?;
    if let Some(bars) = spec.train_bars {
        train = train.last_bars(bars);
    }
    let valid = samples(
        u,
        &spec.model,
        &base,
        Some(spec.train_end),
        spec.valid_end,
        "validation",
    )?;
    let ut = target_universe(data, &spec.target, syms, spec.test_end)?;
    let test = samples(
        ut,
        &spec.model,
        &base,
        Some(spec.valid_end),
        spec.test_end,
        "test",
    )?;

    check_arms(&spec.arms)?;
    let wanted = |name: &str| spec.arms.is_empty() || spec.arms.iter().any(|a| a == name);
    let wants = |prefix: &str| ARMS.iter().any(|a| a.starts_with(prefix) && wanted(a));
    let target_mix = vec![MixtureEntry {
        dataset: spec.target.clone(),
        weight: 1.0,
        symbols: spec.symbols.clone(),
    }];
    let mut series = Vec::new();
    // Progress names each model's place among all the run trains: a step's ETA is its own
    // model's, and more may follow.
    let models = usize::from(wants("target-only"))
        + usize::from(wants("cross-market") && spec.cross_from.is_none())
        + ARMS.iter().filter(|a| wanted(a)).count();
    let mut trained = 0;
    let mut next_label = |what: &str| {
        trained += 1;
        format!("model {trained} of {models}, {what}")
    };
    let own = if wants("target-only") {
        let (b, loss, s, ser) = pretrain(
            data,
            &target_mix,
            spec,
            &ad,
            &next_label("pretrain target-only"),
            progress,
        )?;
        series.extend(ser);
        Some((b, loss, s, vec![spec.target.clone()]))
    } else {
        None
    };
    let cross = match (&spec.cross_from, wants("cross-market")) {
        (_, false) => None,
        (Some((dir, name)), true) => Some(pretrained_elsewhere(dir, name, spec, &ad)?),
        (None, true) => {
            let (b, loss, s, ser) = pretrain(
                data,
                &spec.cross,
                spec,
                &ad,
                &next_label("pretrain cross-market"),
                progress,
            )?;
            series.extend(ser);
            let names = spec.cross.iter().map(|e| e.dataset.clone()).collect();
            Some((b, loss, s, names))
        }
    };
    let (own_s, cross_s) = (
        own.as_ref().map_or(0.0, |o| o.2),
        cross.as_ref().map_or(0.0, |c| c.2),
    );
    let mut plans: Vec<Plan> = Vec::new();
    if wanted(ARMS[0]) {
        let scratch = Pretrainer::new(&spec.model, spec.seed.wrapping_add(1), &ad).backbone;
        plans.push((ARMS[0], scratch, vec![], Mode::Scratch, None));
    }
    for (pretrained, probe, full) in [(own, ARMS[1], ARMS[2]), (cross, ARMS[3], ARMS[4])] {
        let Some((backbone, loss, _, on)) = pretrained else {
            continue;
        };
        if wanted(probe) {
            plans.push((probe, backbone.clone(), on.clone(), Mode::Probe, Some(loss)));
        }
        if wanted(full) {
            plans.push((full, backbone, on, Mode::Full, Some(loss)));
        }
    }
    let mut arms = Vec::new();
    for (name, backbone, on, mode, loss) in plans {
        let started = Instant::now();
        let model = Predictor::new(backbone, spec.model.d_model, spec.seed, &ad);
        let label = next_label(&format!("finetune {name}"));
        // With LP-FT the full arms first run the probe arm's fine-tuning, whose best model
        // (head trained, backbone as pretrained) is where the full stage starts.
        let mut tune = ft(mode);
        tune.lp_ft = spec.lp_ft && mode == Mode::Full;
        let out = finetune(model, &train, &valid, &spec.model, &tune, &ad, &mut |r| {
            progress(&label, r)
        })?;
        let pred = predict_samples(&out.model, &test, &spec.model, &ad)?;
        let (vol, with_ewma) = if spec.target_kind == Target::LogVol {
            // A forecast of the log is a median: half the validation residuals' variance
            // turns it into the mean variance that QLIKE scores (known before the test). A
            // head trained on QLIKE forecasts that mean already; it gets the factor with the
            // lowest QLIKE on validation.
            let vp = model_log_vol(
                &valid,
                &predict_samples(&out.model, &valid, &spec.model, &ad)?,
            );
            let bias = match spec.vol_loss {
                crate::config::VolLoss::Mse => crate::vol::lognormal_bias(&valid, &vp),
                crate::config::VolLoss::Qlike => crate::vol::qlike_bias(&valid, &vp),
            };
            let raw = model_log_vol(&test, &pred);
            let tp: Vec<f64> = raw.iter().map(|p| p + bias).collect();
            let blend = Blend::fit(&valid, &vp);
            (
                Some(vol_report(&test, &tp)),
                Some((blend, vol_report(&test, &blend.apply(&test, &raw)))),
            )
        } else {
            (None, None)
        };
        arms.push(Arm {
            vol,
            with_ewma,
            name: name.to_string(),
            pretrained_on: on,
            mode,
            pretrain_loss: loss,
            best_step: out.best_step,
            steps_run: out.steps_run,
            valid: out.valid,
            test: ic_report(&test, &pred),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let test_dates = arms.first().map_or(0, |a: &Arm| a.test.dates);
    let (baselines, return_baselines, valid_scores) = if spec.target_kind == Target::LogVol {
        let w = spec.model.window();
        let on_valid = crate::vol::baselines(&train, &valid, &valid, w)
            .into_iter()
            .map(|(name, v)| (name, v.qlike))
            .collect();
        (
            crate::vol::baselines(&train, &valid, &test, w),
            Vec::new(),
            on_valid,
        )
    } else {
        let (on_test, on_valid) = return_baselines(&train, &valid, &test, spec, factors)?;
        let scores = on_valid.into_iter().map(|(n, r)| (n, r.rank_ic)).collect();
        (Vec::new(), on_test, scores)
    };
    Ok(TransferReport {
        spec: spec.clone(),
        samples: [train.samples.len(), valid.samples.len(), test.samples.len()],
        test_dates,
        pretrain_series: series,
        pretrain_seconds: [own_s, cross_s],
        arms,
        baselines,
        return_baselines,
        valid_scores,
    })
}

/// Simple forecasts of a return target by name, with their scores.
type ReturnBaselines = Vec<(String, IcReport)>;

/// The return baselines scored on the test and on validation: the linear model and the
/// classic features alone, fitted on `train`, and the best outside factor on `train`.
fn return_baselines(
    train: &SampleSet,
    valid: &SampleSet,
    test: &SampleSet,
    spec: &TransferSpec,
    factors: Option<&dyn crate::linear::FactorSource>,
) -> Result<(ReturnBaselines, ReturnBaselines), FoundationError> {
    let mut on_test = crate::linear::baselines(train, test);
    let mut on_valid = crate::linear::baselines(train, valid);
    if let Some(f) = factors {
        let load = |until| {
            f.factors(&spec.target, spec.symbols.as_deref(), until)
                .map_err(|m| FoundationError::Config(format!("factor baselines: {m}")))
        };
        // Chosen on data up to the validation's end, as the training samples were cut from;
        // scored on data up to the test's end.
        let (chosen_on, scored_on) = (load(spec.valid_end)?, load(spec.test_end)?);
        let label = |name: &str| {
            format!(
                "{}{} factors on training ({name})",
                crate::eval::FACTOR_ARM,
                chosen_on.len()
            )
        };
        if let Some((name, r)) = crate::linear::best_factor(train, test, &chosen_on, &scored_on) {
            on_test.push((label(&name), r));
        }
        if let Some((name, r)) = crate::linear::best_factor(train, valid, &chosen_on, &chosen_on) {
            on_valid.push((label(&name), r));
        }
    }
    Ok((on_test, on_valid))
}
