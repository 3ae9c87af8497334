//! Fine-tuning a downstream head on a target (forward return or its cross-sectional rank),
//! as a linear probe on a frozen backbone, full fine-tuning, or from scratch, with early
//! stopping on validation rank IC; and the information-coefficient metrics.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use lim_market::{AsOf, MarketData};
use serde::{Deserialize, Serialize};

use crate::config::{FinetuneConfig, Mode, ModelConfig, Target, VolLoss};
use crate::error::FoundationError;
use crate::features::{Universe, forward_return, load_universe, scaled, write_window};
use crate::model::Predictor;
use crate::parallel::{shard_ranges, sharded_gradients};
use crate::pretrain::{StepReport, optimizer};
use crate::rng::Rng;

/// One training or evaluation example: the window of `series` ending at bar `end`.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Index of the series in the universe.
    pub series: usize,
    /// Last bar of the window.
    pub end: usize,
    /// Row of that bar in the universe's time axis (the date of the prediction).
    pub row: usize,
    /// The training target.
    pub target: f32,
    /// The realised quantity the target is made of: the forward log return, or for
    /// [`Target::LogVol`] the log of the forward realised volatility.
    pub ret: f64,
    /// What turns the head's output into that quantity's scale (added to it): the log of the
    /// window's volatility for [`Target::LogVol`], 0 otherwise.
    pub scale: f64,
}

/// Samples of one period of a universe.
#[derive(Debug, Clone)]
pub struct SampleSet {
    /// The universe the samples index into.
    pub universe: Universe,
    /// The samples, ordered by series then bar.
    pub samples: Vec<Sample>,
}

impl SampleSet {
    /// The samples of the last `bars` dates of the set (all of them when it has fewer): a
    /// training set cut to its most recent history, as a scarce target market would have. The
    /// cut only drops samples, so nothing after the set's own end enters.
    #[must_use]
    pub fn last_bars(mut self, bars: usize) -> SampleSet {
        let mut rows: Vec<usize> = self.samples.iter().map(|s| s.row).collect();
        rows.sort_unstable();
        rows.dedup();
        if rows.len() > bars {
            let first = rows[rows.len() - bars];
            self.samples.retain(|s| s.row >= first);
        }
        self
    }
}

/// Builds the samples whose window ends after `after` (if given) and whose forward return is
/// complete by `until`; `universe` must have been loaded as of `until` or earlier.
///
/// # Errors
/// No sample in the period.
pub fn samples(
    universe: Universe,
    cfg: &ModelConfig,
    ft: &FinetuneConfig,
    after: Option<AsOf>,
    until: AsOf,
    what: &str,
) -> Result<SampleSet, FoundationError> {
    let w = cfg.window();
    let h = ft.horizon;
    let mut out = Vec::new();
    for (si, s) in universe.series.iter().enumerate() {
        if s.len() < w + h {
            continue;
        }
        for end in w - 1..s.len() - h {
            let t = universe.times[s.rows[end]];
            // A window ending on a bar the earlier period could see belongs to that period.
            if after.is_some_and(|a| a.sees(t, universe.frequency)) {
                continue;
            }
            // The target's last bar must have closed by the end of the period.
            if !until.sees(universe.times[s.rows[end + h]], universe.frequency) {
                break;
            }
            let Some(ret) = forward_return(s, end, h) else {
                break;
            };
            let ret = match ft.target {
                // A window without movement is a halted or dormant series (a contract quoted
                // at one settlement price for months): nothing to scale a forecast by (no
                // prediction panel makes one there), so it is no sample.
                Target::LogVol if halted(s, end, w) => continue,
                Target::LogVol => forward_log_vol(s, end, h).unwrap_or(ret),
                _ => ret,
            };
            out.push(Sample {
                series: si,
                end,
                row: s.rows[end],
                target: 0.0,
                ret,
                scale: 0.0,
            });
        }
    }
    if out.is_empty() {
        let longest = universe.series.iter().map(|s| s.len()).max().unwrap_or(0);
        if longest < w + h {
            return Err(FoundationError::WindowTooLong {
                window: w,
                horizon: h,
                scope: format!("'{}' ({what})", universe.dataset),
                longest,
            });
        }
        return Err(FoundationError::NoData(format!(
            "no {what} sample of '{}' between {} and {}: a window of {w} bars needs history before the period and {h} bars after each date; widen the period",
            universe.dataset,
            after.map_or("the start".to_string(), crate::pretrain::show),
            crate::pretrain::show(until)
        )));
    }
    match ft.target {
        Target::Rank => {
            let mut by_row: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, s) in out.iter().enumerate() {
                by_row.entry(s.row).or_default().push(i);
            }
            for idx in by_row.values() {
                let rets: Vec<f64> = idx.iter().map(|&i| out[i].ret).collect();
                let ranks = ranks(&rets);
                let n = idx.len();
                for (k, &i) in idx.iter().enumerate() {
                    out[i].target = if n > 1 {
                        (ranks[k] / (n - 1) as f64 - 0.5) as f32
                    } else {
                        0.0
                    };
                }
            }
        }
        Target::ForwardReturn => {
            let mut buf = Vec::new();
            for s in &mut out {
                buf.clear();
                let sd = write_window(&universe.series[s.series], s.end, cfg, &mut buf);
                s.target = scaled(s.ret, sd, h);
            }
        }
        Target::LogVol => {
            let mut anchor = ft.vol_anchor.over(&universe.series, cfg.window());
            for s in &mut out {
                s.scale = anchor.at(s.series, s.end);
                s.target =
                    ((s.ret - s.scale) as f32).clamp(-crate::features::CLIP, crate::features::CLIP);
            }
        }
    }
    Ok(SampleSet {
        universe,
        samples: out,
    })
}

/// Floor of a volatility before its log: a window or a horizon with no movement at all.
pub(crate) const MIN_VOL: f64 = 1e-6;

/// The log of the realised volatility of the `h` bars after `end` (root mean square of their
/// log returns), if they exist: only bars after the window.
pub fn forward_log_vol(s: &crate::features::InstrumentSeries, end: usize, h: usize) -> Option<f64> {
    if h == 0 || end + h >= s.len() {
        return None;
    }
    let r = &s.logret[end + 1..=end + h];
    Some(
        (r.iter().map(|x| x * x).sum::<f64>() / h as f64)
            .sqrt()
            .max(MIN_VOL)
            .ln(),
    )
}

/// The log of the realised volatility of the `w` bars ending at `end` (the window's).
pub fn window_log_vol(s: &crate::features::InstrumentSeries, end: usize, w: usize) -> f64 {
    let r = &s.logret[end + 1 - w.min(end + 1)..=end];
    let finite: Vec<f64> = r.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        return MIN_VOL.ln();
    }
    (finite.iter().map(|x| x * x).sum::<f64>() / finite.len() as f64)
        .sqrt()
        .max(MIN_VOL)
        .ln()
}

/// Whether the `w` bars ending at `end` did not move at all: their realised volatility is at
/// the floor.
pub fn halted(s: &crate::features::InstrumentSeries, end: usize, w: usize) -> bool {
    window_log_vol(s, end, w) <= MIN_VOL.ln()
}

/// Zero-based average ranks (ties share their mean rank).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation; `None` when either side is constant.
pub(crate) fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    let d = (saa * sbb).sqrt();
    (d > 1e-300).then(|| sab / d)
}

/// Information coefficients of predictions against realised forward returns, per date.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IcReport {
    /// Mean per-date Pearson correlation.
    pub ic: f64,
    /// Mean per-date Spearman correlation.
    pub rank_ic: f64,
    /// Mean IC over its standard deviation across dates (not annualised).
    pub icir: f64,
    /// Mean rank IC over its standard deviation.
    pub rank_icir: f64,
    /// Dates with at least three instruments.
    pub dates: usize,
    /// The mean rank IC's t-statistic with Newey–West standard errors (Bartlett weights,
    /// `floor(4 (dates/100)^(2/9))` lags), robust to the autocorrelation of overlapping
    /// forward returns. Reports written before it existed read NaN.
    #[serde(default = "nan")]
    pub rank_ic_nw_t: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// The t-statistic of the mean of `x` with Newey–West standard errors over `lags` lags
/// (Bartlett weights `1 - l/(lags+1)`); NaN with fewer than two values or no variance.
pub fn newey_west_t(x: &[f64], lags: usize) -> f64 {
    let n = x.len();
    if n < 2 {
        return f64::NAN;
    }
    let m = x.iter().sum::<f64>() / n as f64;
    let gamma =
        |l: usize| -> f64 { (l..n).map(|t| (x[t] - m) * (x[t - l] - m)).sum::<f64>() / n as f64 };
    let mut s = gamma(0);
    for l in 1..=lags.min(n - 1) {
        s += 2.0 * (1.0 - l as f64 / (lags as f64 + 1.0)) * gamma(l);
    }
    if s > 0.0 {
        m / (s / n as f64).sqrt()
    } else {
        f64::NAN
    }
}

/// The usual automatic Newey–West lag count for `n` observations, `floor(4 (n/100)^(2/9))`.
pub fn newey_west_lags(n: usize) -> usize {
    (4.0 * (n as f64 / 100.0).powf(2.0 / 9.0)).floor() as usize
}

/// Per-date ICs of `pred` (aligned with `set.samples`).
pub fn ic_report(set: &SampleSet, pred: &[f32]) -> IcReport {
    let mut by_row: BTreeMap<usize, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (s, p) in set.samples.iter().zip(pred) {
        // A forecaster without a value for a sample (a factor's warm-up) is not scored there.
        if !p.is_finite() {
            continue;
        }
        let e = by_row.entry(s.row).or_default();
        e.0.push(f64::from(*p) + s.scale);
        e.1.push(s.ret);
    }
    let (mut ics, mut rics) = (Vec::new(), Vec::new());
    for (p, r) in by_row.values() {
        if p.len() < 3 {
            continue;
        }
        if let Some(ic) = pearson(p, r) {
            ics.push(ic);
        }
        if let Some(ric) = pearson(&ranks(p), &ranks(r)) {
            rics.push(ric);
        }
    }
    let stats = |v: &[f64]| {
        if v.is_empty() {
            return (0.0, 0.0);
        }
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt();
        (m, if sd > 0.0 { m / sd } else { 0.0 })
    };
    let (ic, icir) = stats(&ics);
    let (rank_ic, rank_icir) = stats(&rics);
    IcReport {
        ic,
        rank_ic,
        icir,
        rank_icir,
        dates: rics.len(),
        rank_ic_nw_t: newey_west_t(&rics, newey_west_lags(rics.len())),
    }
}

fn batch_tensors(
    set: &SampleSet,
    idx: &[usize],
    cfg: &ModelConfig,
    device: &Device,
) -> (Tensor<3>, Tensor<2, Int>, Tensor<1>) {
    let mut patches = Vec::with_capacity(idx.len() * cfg.n_patches * cfg.patch_dim());
    let mut ids = Vec::with_capacity(idx.len() * 3);
    let mut targets = Vec::with_capacity(idx.len());
    for &i in idx {
        let s = set.samples[i];
        let series = &set.universe.series[s.series];
        write_window(series, s.end, cfg, &mut patches);
        ids.extend_from_slice(&series.ids);
        targets.push(s.target);
    }
    let b = idx.len();
    (
        Tensor::from_data(
            TensorData::new(patches, [b, cfg.n_patches, cfg.patch_dim()]),
            device,
        ),
        Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 3]), device),
        Tensor::from_data(TensorData::new(targets, [b]), device),
    )
}

/// Predictions for every sample of `set`, in order, without autodiff.
///
/// # Errors
/// A tensor that cannot be read back.
pub fn predict_samples(
    model: &Predictor,
    set: &SampleSet,
    cfg: &ModelConfig,
    device: &Device,
) -> Result<Vec<f32>, FoundationError> {
    let model = model.valid();
    let device = device.clone().inner();
    crate::predict::predict_windows(&model, &set.samples, cfg, &device, |s, patches, ids| {
        let series = &set.universe.series[s.series];
        write_window(series, s.end, cfg, patches);
        ids.extend_from_slice(&series.ids);
    })
}

/// The loss of the windows `idx` of `set` and its gradients, over `ft.optim.shards` shards of
/// the batch (see [`crate::parallel`]).
pub(crate) fn finetune_gradients(
    model: &Predictor,
    set: &SampleSet,
    idx: &[usize],
    cfg: &ModelConfig,
    frozen: bool,
    ft: &FinetuneConfig,
    device: &Device,
) -> (f32, GradientsParams) {
    let ranges = shard_ranges(idx.len(), ft.optim.shards);
    let whole = (ranges.len() > 1).then_some(idx.len());
    let shards = ranges
        .into_iter()
        .map(|r| batch_tensors(set, &idx[r], cfg, device))
        .collect();
    let qlike = ft.target == Target::LogVol && ft.vol_loss == VolLoss::Qlike;
    let (v, grads) = sharded_gradients(model, shards, |m, (p, ids, y)| {
        vec![m.loss(p, ids, y, frozen, whole, qlike)]
    });
    (v.first().copied().unwrap_or(f32::NAN), grads)
}

/// The outcome of a fine-tuning run.
#[derive(Debug)]
pub struct Finetuned {
    /// The best model by validation rank IC.
    pub model: Predictor,
    /// Its step.
    pub best_step: usize,
    /// Its validation ICs.
    pub valid: IcReport,
    /// Steps run before stopping.
    pub steps_run: usize,
    /// Validation rank IC per evaluation: `(step, rank IC)`.
    pub curve: Vec<(usize, f64)>,
}

/// Where a fine-tuning run stands: enough to continue it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneProgress {
    /// Steps done.
    pub step: usize,
    /// The sampling generator's state.
    pub rng: Rng,
    /// Best validation rank IC so far, its step and report.
    pub best: Option<(f64, usize, IcReport)>,
    /// Evaluations since the best one.
    pub since_best: usize,
    /// Validation rank IC per evaluation.
    pub curve: Vec<(usize, f64)>,
    /// Whether early stopping ended the run.
    pub stopped: bool,
}

/// A fine-tuning run: the model being trained, its optimizer, the best model so far.
pub struct FinetuneRun {
    /// The model being trained.
    pub model: Predictor,
    /// The optimizer with its moments.
    pub optim: ModuleOptimizer,
    /// The best model so far (the starting model before any evaluation).
    pub best: Predictor,
    /// Step, generator, early-stopping state.
    pub progress: FinetuneProgress,
}

impl std::fmt::Debug for FinetuneRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinetuneRun")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl FinetuneRun {
    /// A new run from a model (on an autodiff device).
    pub fn new(model: Predictor, ft: &FinetuneConfig) -> FinetuneRun {
        FinetuneRun {
            best: model.clone(),
            model,
            optim: optimizer(&ft.optim),
            progress: FinetuneProgress {
                step: 0,
                rng: Rng::new(ft.optim.seed, 0xF17E),
                best: None,
                since_best: 0,
                curve: Vec::new(),
                stopped: false,
            },
        }
    }

    /// Trains the head (probe) or all of it (full, scratch) on `train`, evaluating rank IC on
    /// `valid` every `eval_every` steps and keeping the best; stops after `patience`
    /// evaluations without improvement. Calls `checkpoint` after every evaluation and at the
    /// end.
    ///
    /// # Errors
    /// A tensor that cannot be read back; whatever `checkpoint` returns.
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        &mut self,
        train: &SampleSet,
        valid: &SampleSet,
        cfg: &ModelConfig,
        ft: &FinetuneConfig,
        device: &Device,
        report: &mut dyn FnMut(&StepReport),
        checkpoint: &mut dyn FnMut(&FinetuneRun) -> Result<(), FoundationError>,
    ) -> Result<(), FoundationError> {
        let frozen = ft.mode == Mode::Probe;
        let n = train.samples.len();
        let started = Instant::now();
        let first = self.progress.step;
        while self.progress.step < ft.optim.steps && !self.progress.stopped {
            let idx: Vec<usize> = (0..ft.optim.batch)
                .map(|_| self.progress.rng.below(n))
                .collect();
            let (value, grads) =
                finetune_gradients(&self.model, train, &idx, cfg, frozen, ft, device);
            let lr = ft.optim.lr_at(self.progress.step);
            let model = self.model.clone();
            self.model = self.optim.step(lr, model, grads);
            self.progress.step += 1;
            let step = self.progress.step;
            let rate = ((step - first) * ft.optim.batch) as f64
                / started.elapsed().as_secs_f64().max(1e-9);
            report(&StepReport {
                step,
                steps: ft.optim.steps,
                loss: value,
                lr,
                samples_per_s: rate,
                eta_s: ((ft.optim.steps - step) * ft.optim.batch) as f64 / rate.max(1e-9),
            });
            if step.is_multiple_of(ft.eval_every) || step == ft.optim.steps {
                let pred = predict_samples(&self.model, valid, cfg, device)?;
                let r = ic_report(valid, &pred);
                let score = criterion(valid, &pred, &r, ft);
                self.progress.curve.push((step, score));
                if self.progress.best.is_none_or(|b| score > b.0) {
                    self.progress.best = Some((score, step, r));
                    self.best = self.model.clone();
                    self.progress.since_best = 0;
                } else {
                    self.progress.since_best += 1;
                    self.progress.stopped = self.progress.since_best >= ft.patience;
                }
                if step < ft.optim.steps && !self.progress.stopped {
                    checkpoint(self)?;
                }
            }
        }
        checkpoint(self)
    }

    /// The outcome: the best model and its validation report.
    ///
    /// # Errors
    /// A tensor that cannot be read back.
    pub fn finish(
        self,
        valid: &SampleSet,
        cfg: &ModelConfig,
        device: &Device,
    ) -> Result<Finetuned, FoundationError> {
        let (best_step, report) = match self.progress.best {
            Some((_, s, r)) => (s, r),
            None => (
                0,
                ic_report(valid, &predict_samples(&self.best, valid, cfg, device)?),
            ),
        };
        Ok(Finetuned {
            model: self.best,
            best_step,
            valid: report,
            steps_run: self.progress.step,
            curve: self.progress.curve,
        })
    }
}

/// What early stopping maximises: the rank IC, or for [`Target::LogVol`] the negative mean
/// squared error of the predicted log volatility (with [`VolLoss::Qlike`], the negative mean
/// QLIKE of the uncorrected forecasts).
fn criterion(set: &SampleSet, pred: &[f32], r: &IcReport, ft: &FinetuneConfig) -> f64 {
    match ft.target {
        Target::LogVol if ft.vol_loss == VolLoss::Qlike => {
            -crate::vol::vol_report(set, &crate::vol::model_log_vol(set, pred)).qlike
        }
        Target::LogVol => {
            let n = set.samples.len().max(1) as f64;
            -set.samples
                .iter()
                .zip(pred)
                .map(|(s, p)| (f64::from(*p) + s.scale - s.ret).powi(2))
                .sum::<f64>()
                / n
        }
        _ => r.rank_ic,
    }
}

/// Fine-tunes `model` without checkpoints (see [`FinetuneRun::train`]); with
/// [`FinetuneConfig::lp_ft`], its probe stage first (reported as step reports like the rest),
/// and the returned figures are the full stage's.
///
/// # Errors
/// A tensor that cannot be read back.
pub fn finetune(
    model: Predictor,
    train: &SampleSet,
    valid: &SampleSet,
    cfg: &ModelConfig,
    ft: &FinetuneConfig,
    device: &Device,
    report: &mut dyn FnMut(&StepReport),
) -> Result<Finetuned, FoundationError> {
    let model = probe_stage(model, train, valid, cfg, ft, device, report)?;
    let mut run = FinetuneRun::new(model, ft);
    run.train(train, valid, cfg, ft, device, report, &mut |_| Ok(()))?;
    run.finish(valid, cfg, device)
}

/// The first stage of an [`FinetuneConfig::lp_ft`] run: `model` after a probe
/// ([`FinetuneConfig::probe_stage`], not checkpointed), where the full stage starts; `model`
/// itself for any other run.
///
/// # Errors
/// A tensor that cannot be read back.
pub fn probe_stage(
    model: Predictor,
    train: &SampleSet,
    valid: &SampleSet,
    cfg: &ModelConfig,
    ft: &FinetuneConfig,
    device: &Device,
    report: &mut dyn FnMut(&StepReport),
) -> Result<Predictor, FoundationError> {
    if !(ft.lp_ft && ft.mode == Mode::Full) {
        return Ok(model);
    }
    Ok(finetune(model, train, valid, cfg, &ft.probe_stage(), device, report)?.model)
}

/// Loads the target universe as of `until` (nothing later is read).
///
/// # Errors
/// Unknown dataset or symbol.
pub fn target_universe(
    data: &dyn MarketData,
    dataset: &str,
    symbols: Option<&[String]>,
    until: AsOf,
) -> Result<Universe, FoundationError> {
    load_universe(data, dataset, symbols, until)
}

#[cfg(test)]
mod nw_tests {
    use super::*;

    #[test]
    fn newey_west_equals_the_plain_t_without_lags_and_shrinks_with_positive_autocorrelation() {
        let x = [0.1, 0.3, -0.2, 0.4, 0.0, 0.2];
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
        assert!((newey_west_t(&x, 0) - m / (var / n).sqrt()).abs() < 1e-12);
        // A slowly moving series: neighbours agree, so its mean is less certain.
        let slow: Vec<f64> = (0..200).map(|t| ((t / 10) % 2) as f64 * 0.1).collect();
        // Blocks of ten equal values: t falls from 14.1 to 7.3 with eight lags.
        assert!((newey_west_t(&slow, 0) - 14.142_135_623_730_9).abs() < 1e-9);
        assert!((newey_west_t(&slow, 8) - 7.254_762_501_100_1).abs() < 1e-9);
        assert_eq!(newey_west_lags(100), 4);
        assert_eq!(newey_west_lags(700), 6);
        assert!(newey_west_t(&[1.0], 3).is_nan());
    }
}

#[cfg(test)]
mod halted_tests {
    use super::*;
    use crate::features::{FEATURES, InstrumentSeries};
    use lim_market::{Frequency, Timestamp};

    /// A contract quoted at one price for months (no trade, one settlement print a day), then
    /// trading again: no volatility sample has a window that did not move, the others stay.
    #[test]
    fn a_volatility_sample_needs_a_window_that_moved() {
        let n = 130;
        let logret: Vec<f64> = (0..n)
            .map(|i| {
                if (60..100).contains(&i) {
                    0.0
                } else {
                    0.01 * ((i as f64) * 1.3).sin()
                }
            })
            .collect();
        let start = Timestamp::from_ymd(2010, 1, 4).0;
        let u = Universe {
            dataset: "fut".into(),
            times: (0..n as i64)
                .map(|d| Timestamp(start + d * 86_400))
                .collect(),
            frequency: Frequency::Daily,
            series: vec![InstrumentSeries {
                symbol: "SHFE:FU0".into(),
                dataset: "fut".into(),
                ids: [2, 0, 1],
                rows: (0..n).collect(),
                feats: vec![[0.0; FEATURES]; n],
                logret,
            }],
        };
        let cfg = ModelConfig::tiny();
        let w = cfg.window();
        let mut ft = FinetuneConfig::new(Mode::Full, 1, 1, 1);
        ft.horizon = 2;
        let until = AsOf(u.times[n - 1]);
        let ends = |target| {
            let mut ft = ft.clone();
            ft.target = target;
            let set = samples(u.clone(), &cfg, &ft, None, until, "test").unwrap();
            set.samples.iter().map(|s| s.end).collect::<Vec<_>>()
        };
        let vol = ends(Target::LogVol);
        // Return targets keep every window, halted or not.
        let all = ends(Target::Rank);
        let flat: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&e| e + 1 >= 60 + w && e < 100)
            .collect();
        assert_eq!(flat.len(), 100 - (60 + w - 1));
        let moved: Vec<usize> = all.iter().copied().filter(|e| !flat.contains(e)).collect();
        assert_eq!(vol, moved);
    }
}
