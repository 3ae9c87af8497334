//! Configurations: the model's shape, pretraining, fine-tuning and the data mixture.
//!
//! All of them are plain serde structs, written into every checkpoint as JSON, so a model
//! always says how it was built and trained.

use serde::{Deserialize, Serialize};

use crate::error::FoundationError;
use crate::features::FEATURES;
use crate::parallel::DEFAULT_SHARDS;

/// The shape of the patch Transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Width of every token.
    pub d_model: usize,
    /// Encoder layers.
    pub n_layers: usize,
    /// Attention heads (must divide `d_model`).
    pub n_heads: usize,
    /// Width of the feed-forward block.
    pub d_ff: usize,
    /// Bars per patch.
    pub patch_len: usize,
    /// Bars between the starts of consecutive patches (`patch_len` for non-overlapping).
    pub stride: usize,
    /// Patches per window.
    pub n_patches: usize,
    /// Dropout in the encoder (0 keeps training independent of burn's global generator).
    pub dropout: f64,
    /// Pretraining forecast horizons, in bars.
    pub horizons: Vec<usize>,
    /// The feed-forward blocks' activation. Checkpoints written before the setting existed
    /// used the exact GELU.
    #[serde(default)]
    pub activation: Activation,
    /// Pretraining also forecasts the log realised volatility of the next bars at every
    /// horizon, relative to the window's own (the forecast head's second half). Off in
    /// checkpoints written before the setting existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vol_targets: bool,
}

/// The activation of the encoder's feed-forward blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The exact GELU, `x·Φ(x)` (with the error function).
    #[default]
    Gelu,
    /// The tanh approximation of the GELU, `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (JAX's
    /// default GELU), computed as the equal `x·σ(2·√(2/π)·(x + 0.044715·x³))`.
    GeluTanh,
}

impl ModelConfig {
    /// The reference configuration of the benchmark: d_model 64, 2 layers, 4 heads,
    /// 32 non-overlapping patches of 16 bars (a 512-bar window).
    pub fn reference() -> ModelConfig {
        ModelConfig {
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            d_ff: 256,
            patch_len: 16,
            stride: 16,
            n_patches: 32,
            dropout: 0.0,
            horizons: vec![1, 5, 20],
            activation: Activation::GeluTanh,
            vol_targets: false,
        }
    }

    /// The overnight CPU preset: d_model 128, 4 layers, 8 heads, 32 patches of 16 bars (a
    /// 512-bar window). Sized so that pretraining fits 8 hours on 2 cores (docs/foundation.md
    /// gives its measured throughput and the steps that fit).
    pub fn base() -> ModelConfig {
        ModelConfig {
            d_model: 128,
            n_layers: 4,
            n_heads: 8,
            d_ff: 512,
            ..ModelConfig::reference()
        }
    }

    /// The GPU preset: d_model 256, 6 layers, 8 heads, 32 patches of 16 bars. On 2 CPU cores
    /// its pretraining takes days; on a GPU (`--device cuda`) hours.
    pub fn large() -> ModelConfig {
        ModelConfig {
            d_model: 256,
            n_layers: 6,
            n_heads: 8,
            d_ff: 1024,
            ..ModelConfig::reference()
        }
    }

    /// The presets by name, smallest first.
    pub const PRESETS: [&'static str; 5] = ["tiny", "small", "reference", "base", "large"];

    /// A preset by name (see [`ModelConfig::PRESETS`]).
    pub fn preset(name: &str) -> Option<ModelConfig> {
        Some(match name {
            "tiny" => ModelConfig::tiny(),
            "small" => ModelConfig::small(),
            "reference" => ModelConfig::reference(),
            "base" => ModelConfig::base(),
            "large" => ModelConfig::large(),
            _ => return None,
        })
    }

    /// A small configuration that trains in seconds on a CPU (the transfer default on the
    /// bundled sample): a 64-bar window of 8 patches.
    pub fn small() -> ModelConfig {
        ModelConfig {
            d_model: 32,
            n_layers: 2,
            n_heads: 4,
            d_ff: 64,
            patch_len: 8,
            stride: 8,
            n_patches: 8,
            dropout: 0.0,
            horizons: vec![1, 5, 20],
            activation: Activation::GeluTanh,
            vol_targets: false,
        }
    }

    /// A tiny configuration for tests.
    pub fn tiny() -> ModelConfig {
        ModelConfig {
            d_model: 16,
            n_layers: 1,
            n_heads: 2,
            d_ff: 32,
            patch_len: 4,
            stride: 4,
            n_patches: 4,
            dropout: 0.0,
            horizons: vec![1, 3],
            activation: Activation::GeluTanh,
            vol_targets: false,
        }
    }

    /// Bars per window.
    pub fn window(&self) -> usize {
        (self.n_patches - 1) * self.stride + self.patch_len
    }

    /// Values per patch token (`patch_len` bars × features).
    pub fn patch_dim(&self) -> usize {
        self.patch_len * FEATURES
    }

    /// Outputs of the pretraining forecast head: a scaled return per horizon, and with
    /// [`ModelConfig::vol_targets`] a log volatility ratio per horizon after them.
    pub fn forecast_outputs(&self) -> usize {
        self.horizons.len() * if self.vol_targets { 2 } else { 1 }
    }

    /// The longest pretraining horizon.
    pub fn max_horizon(&self) -> usize {
        self.horizons.iter().copied().max().unwrap_or(0)
    }

    /// Checks the shape.
    ///
    /// # Errors
    /// A zero size, heads that do not divide `d_model`, a stride longer than a patch, or no
    /// horizon.
    pub fn validate(&self) -> Result<(), FoundationError> {
        let bad = |m: String| Err(FoundationError::Config(m));
        if self.d_model == 0 || self.n_layers == 0 || self.n_heads == 0 || self.d_ff == 0 {
            return bad("d_model, layers, heads and d_ff must be positive".into());
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(format!(
                "d_model {} is not a multiple of heads {}; pick heads that divide it",
                self.d_model, self.n_heads
            ));
        }
        if self.patch_len == 0 || self.n_patches == 0 || self.stride == 0 {
            return bad("patch length, stride and number of patches must be positive".into());
        }
        if self.stride > self.patch_len {
            return bad(format!(
                "stride {} is longer than the patch length {}; bars between patches would be skipped",
                self.stride, self.patch_len
            ));
        }
        if self.horizons.is_empty() || self.horizons.contains(&0) {
            return bad("horizons must be a non-empty list of positive bar counts".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// Describes the first setting in which a checkpoint's configuration (`self`) differs
    /// from the requested one, if any.
    pub fn difference(&self, requested: &ModelConfig) -> Option<String> {
        let other = requested;
        let mut a = serde_json::to_value(self).ok()?;
        let mut b = serde_json::to_value(other).ok()?;
        // Settings left out of the JSON when off are compared too.
        for (v, c) in [(&mut a, self), (&mut b, other)] {
            if let Some(o) = v.as_object_mut() {
                o.insert("vol_targets".into(), c.vol_targets.into());
            }
        }
        let (a, b) = (a.as_object()?, b.as_object()?);
        a.iter().find(|(k, v)| b.get(*k) != Some(*v)).map(|(k, v)| {
            let theirs = b.get(k).map_or("nothing".to_string(), ToString::to_string);
            format!("{k} is {v} in the checkpoint, {theirs} requested")
        })
    }
}

/// One dataset of the pretraining mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureEntry {
    /// Dataset name.
    pub dataset: String,
    /// Relative sampling weight.
    pub weight: f64,
    /// Symbols to use (all when `None`).
    pub symbols: Option<Vec<String>>,
}

impl MixtureEntry {
    /// Parses `name` or `name:weight`.
    ///
    /// # Errors
    /// A weight that is not a positive number.
    pub fn parse(text: &str) -> Result<MixtureEntry, FoundationError> {
        let (name, weight) = match text.rsplit_once(':') {
            Some((n, w)) if w.parse::<f64>().is_ok() => (n, w.parse::<f64>().unwrap_or(1.0)),
            _ => (text, 1.0),
        };
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(FoundationError::Config(format!(
                "dataset '{text}': weight must be a positive number, as in cn_futures_daily:2"
            )));
        }
        Ok(MixtureEntry {
            dataset: name.to_string(),
            weight,
            symbols: None,
        })
    }
}

/// Optimisation settings shared by pretraining and fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Optimisation steps.
    pub steps: usize,
    /// Windows per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps, then cosine decay to `lr × min_lr_ratio`.
    pub warmup: usize,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Gradient clipping: largest L2 norm of each parameter's gradient.
    pub clip_norm: f64,
    /// Seed of every random draw (initialisation, sampling, masks).
    pub seed: u64,
    /// Shards each batch is cut into, each differentiated on its own thread (see
    /// [`crate::parallel`]); 1 runs the step on the calling thread alone. Results are
    /// reproducible for a seed and a shard count. Checkpoints written before the setting
    /// existed were trained with 1.
    #[serde(default = "one")]
    pub shards: usize,
}

fn one() -> usize {
    1
}

impl OptimConfig {
    /// Learning rate at a step: linear warm-up, then cosine decay.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// Zero steps, batch or shards, a non-positive learning rate.
    pub fn validate(&self) -> Result<(), FoundationError> {
        if self.steps == 0 || self.batch == 0 || self.shards == 0 {
            return Err(FoundationError::Config(
                "steps, batch and shards must be positive".into(),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(FoundationError::Config(format!(
                "learning rate {} must be positive",
                self.lr
            )));
        }
        Ok(())
    }
}

/// Pretraining: masked-patch reconstruction plus multi-horizon return forecasting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Optimisation.
    pub optim: OptimConfig,
    /// Fraction of patches masked.
    pub mask_ratio: f64,
    /// Weight of the forecasting loss beside the reconstruction loss.
    pub forecast_weight: f64,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: usize,
    /// Decay of an exponential moving average of the weights, updated after every step
    /// (e.g. 0.999): the averaged weights are the ones checkpointed for use and fine-tuned
    /// from; the optimised ones are kept beside them to continue. `None`: no average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
}

impl PretrainConfig {
    /// Defaults for a number of steps and a seed.
    pub fn new(steps: usize, batch: usize, seed: u64) -> PretrainConfig {
        let mut p = PretrainConfig {
            optim: OptimConfig {
                steps,
                batch,
                lr: 1e-3,
                warmup: 1,
                min_lr_ratio: 0.1,
                weight_decay: 1e-4,
                clip_norm: 1.0,
                seed,
                shards: DEFAULT_SHARDS,
            },
            mask_ratio: 0.4,
            forecast_weight: 1.0,
            checkpoint_every: 0,
            ema: None,
        };
        p.set_steps(steps);
        p
    }

    /// Sets the run's length, its warm-up a tenth of it.
    pub fn set_steps(&mut self, steps: usize) {
        self.optim.steps = steps;
        self.optim.warmup = (steps / 10).max(1);
    }
}

/// What a downstream head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The forward `horizon`-bar log return, scaled by the window's return volatility.
    ForwardReturn,
    /// The cross-sectional rank of the forward return among the universe, in [-0.5, 0.5].
    Rank,
    /// The log of the next `horizon` bars' realised volatility (root mean square of their log
    /// returns), learned relative to the window's own volatility: the head predicts how much
    /// busier the next bars are than the window was.
    LogVol,
}

/// What a volatility target ([`Target::LogVol`]) is learned relative to: the head predicts
/// the log of the next bars' realised volatility less the anchor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolAnchor {
    /// The window's own realised volatility (how much busier the next bars are).
    #[default]
    Window,
    /// The EWMA forecast (λ 0.94) at the window's last bar, from the series' bars up to it:
    /// the head learns only what to change in the simple forecast.
    Ewma,
}

impl VolAnchor {
    /// The anchor's log volatilities over `series`, for windows `window` bars long.
    pub fn over(
        self,
        series: &[crate::features::InstrumentSeries],
        window: usize,
    ) -> AnchorVols<'_> {
        AnchorVols {
            anchor: self,
            series,
            window,
            ewma: vec![None; series.len()],
        }
    }

    fn is_window(&self) -> bool {
        *self == VolAnchor::Window
    }
}

/// What a volatility head ([`Target::LogVol`]) minimises in training, and what early stopping
/// watches on validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolLoss {
    /// The squared error of the log volatility: the head forecasts a median, which the
    /// lognormal correction turns into a mean variance before QLIKE scores it.
    #[default]
    Mse,
    /// QLIKE itself, `RV²/σ̂² − ln(RV²/σ̂²) − 1` on the variances (Patton 2011): the head
    /// forecasts the mean variance directly, and is corrected by the one factor that minimises
    /// QLIKE on validation.
    Qlike,
}

impl VolLoss {
    fn is_mse(&self) -> bool {
        *self == VolLoss::Mse
    }
}

/// A [`VolAnchor`]'s log volatility at any window's last bar; EWMA's is computed once per
/// series, the first time it is asked for.
#[derive(Debug)]
pub struct AnchorVols<'a> {
    anchor: VolAnchor,
    series: &'a [crate::features::InstrumentSeries],
    window: usize,
    ewma: Vec<Option<Vec<f64>>>,
}

impl AnchorVols<'_> {
    /// The anchor's log volatility for the window of series `i` ending at bar `end`.
    pub fn at(&mut self, i: usize, end: usize) -> f64 {
        let s = &self.series[i];
        match self.anchor {
            VolAnchor::Window => crate::finetune::window_log_vol(s, end, self.window),
            VolAnchor::Ewma => self.ewma[i]
                .get_or_insert_with(|| crate::vol::ewma_log_vols(s, crate::vol::EWMA_LAMBDA))[end],
        }
    }
}

/// How the backbone is treated when fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Train only the head on a frozen backbone.
    Probe,
    /// Train backbone and head.
    Full,
    /// Train backbone and head from a random initialisation (the baseline).
    Scratch,
}

impl Mode {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Probe => "probe",
            Mode::Full => "full",
            Mode::Scratch => "scratch",
        }
    }
}

/// Fine-tuning a head on a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Optimisation (steps are an upper bound; early stopping may end sooner).
    pub optim: OptimConfig,
    /// What to predict.
    pub target: Target,
    /// Forward horizon in bars.
    pub horizon: usize,
    /// Probe, full fine-tuning, or from scratch.
    pub mode: Mode,
    /// Steps between validation rank-IC evaluations.
    pub eval_every: usize,
    /// Evaluations without improvement before stopping.
    pub patience: usize,
    /// Full fine-tuning in two stages (LP-FT, Kumar et al. 2022): first the head alone on the
    /// frozen backbone ([`FinetuneConfig::probe_stage`]), then everything from that stage's
    /// best model, so that a random head's first gradients do not distort the pretrained
    /// features. Each stage has the step budget and early stopping. Only for [`Mode::Full`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lp_ft: bool,
    /// What a volatility target is learned relative to (models tuned before it existed: the
    /// window).
    #[serde(default, skip_serializing_if = "VolAnchor::is_window")]
    pub vol_anchor: VolAnchor,
    /// What a volatility head is trained and stopped early on (models tuned before it existed:
    /// the squared error).
    #[serde(default, skip_serializing_if = "VolLoss::is_mse")]
    pub vol_loss: VolLoss,
}

impl FinetuneConfig {
    /// Defaults.
    pub fn new(mode: Mode, steps: usize, batch: usize, seed: u64) -> FinetuneConfig {
        FinetuneConfig {
            optim: OptimConfig {
                steps,
                batch,
                lr: if mode == Mode::Probe { 3e-3 } else { 5e-4 },
                warmup: (steps / 20).max(1),
                min_lr_ratio: 0.1,
                weight_decay: 1e-4,
                clip_norm: 1.0,
                seed,
                shards: DEFAULT_SHARDS,
            },
            target: Target::Rank,
            horizon: 5,
            mode,
            eval_every: (steps / 10).max(1),
            patience: 4,
            lp_ft: false,
            vol_anchor: VolAnchor::Window,
            vol_loss: VolLoss::Mse,
        }
    }

    /// The first stage of an [`FinetuneConfig::lp_ft`] run: a probe with this run's steps,
    /// batch, seed, target, horizon and shards.
    pub fn probe_stage(&self) -> FinetuneConfig {
        let mut p = FinetuneConfig::new(
            Mode::Probe,
            self.optim.steps,
            self.optim.batch,
            self.optim.seed,
        );
        p.target = self.target;
        p.horizon = self.horizon;
        p.optim.shards = self.optim.shards;
        p.vol_anchor = self.vol_anchor;
        p.vol_loss = self.vol_loss;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = PretrainConfig::new(100, 8, 1).optim;
        assert!(c.lr_at(0) < c.lr_at(5));
        assert!((c.lr_at(9) - c.lr).abs() < 1e-12);
        assert!(c.lr_at(50) < c.lr && c.lr_at(50) > c.lr * c.min_lr_ratio);
        assert!((c.lr_at(100) - c.lr * c.min_lr_ratio).abs() < 1e-12);
    }

    #[test]
    fn config_checks_name_the_problem() {
        let mut c = ModelConfig::tiny();
        c.n_heads = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("heads 3"), "{e}");
        assert_eq!(ModelConfig::reference().window(), 512);
        assert!(
            ModelConfig::tiny()
                .difference(&ModelConfig::small())
                .is_some()
        );
        assert!(MixtureEntry::parse("x:-1").is_err());
        assert_eq!(MixtureEntry::parse("a:2").unwrap().weight, 2.0);
    }
}
