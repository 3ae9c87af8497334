//! The patch Transformer: a backbone shared by every market and frequency, the pretraining
//! heads, and the downstream head.
//!
//! Tokens are patches of instance-normalised bar features, embedded linearly, plus a learned
//! position embedding and learned embeddings of the instrument's asset class, exchange and bar
//! frequency. A pre-norm Transformer encoder mixes them.

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::attention::MultiHeadAttention;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{quiet_softmax, sigmoid, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{Activation, ModelConfig};
use crate::features::{ASSET_VOCAB, EXCHANGE_VOCAB, FREQ_VOCAB};
use crate::rng::Rng;

/// The shared encoder.
#[derive(Module, Debug)]
pub struct Backbone {
    patch: Linear,
    pos: Param<Tensor<2>>,
    mask_token: Param<Tensor<1>>,
    asset: Embedding,
    exchange: Embedding,
    freq: Embedding,
    encoder: TransformerEncoder,
    norm: LayerNorm,
    #[module(skip)]
    activation: Activation,
}

impl Backbone {
    fn new(cfg: &ModelConfig, device: &Device) -> Backbone {
        let d = cfg.d_model;
        Backbone {
            patch: LinearConfig::new(cfg.patch_dim(), d).init(device),
            pos: Param::from_tensor(Tensor::zeros([cfg.n_patches, d], device)),
            mask_token: Param::from_tensor(Tensor::zeros([d], device)),
            asset: EmbeddingConfig::new(ASSET_VOCAB, d).init(device),
            exchange: EmbeddingConfig::new(EXCHANGE_VOCAB, d).init(device),
            freq: EmbeddingConfig::new(FREQ_VOCAB, d).init(device),
            encoder: TransformerEncoderConfig::new(d, cfg.d_ff, cfg.n_heads, cfg.n_layers)
                .with_norm_first(true)
                .with_dropout(cfg.dropout)
                .init(device),
            norm: LayerNormConfig::new(d).init(device),
            activation: cfg.activation,
        }
    }

    /// Encodes `patches` `[B, P, patch_dim]`; `mask` `[B, P]` (1 = masked) replaces a patch's
    /// embedding by the mask token; `ids` `[B, 3]` are asset, exchange and frequency ids.
    /// Returns `[B, P, d_model]`.
    pub fn forward(
        &self,
        patches: Tensor<3>,
        mask: Option<Tensor<2>>,
        ids: Tensor<2, Int>,
    ) -> Tensor<3> {
        let [b, p, _] = patches.dims();
        let mut x = rows(&self.patch, patches);
        if let Some(m) = mask {
            let m: Tensor<3> = m.unsqueeze_dim(2);
            let token = self.mask_token.val().unsqueeze::<3>();
            x = x * (m.clone().neg() + 1.0) + token * m;
        }
        let pos = self.pos.val().unsqueeze::<3>();
        let cat = self.asset.forward(ids.clone().narrow(1, 0, 1))
            + self.exchange.forward(ids.clone().narrow(1, 1, 1))
            + self.freq.forward(ids.narrow(1, 2, 1));
        let x = x + pos + cat;
        let d = x.dims()[2];
        let h = self.encode(x);
        let out = self.norm.forward(h);
        debug_assert_eq!(out.dims(), [b, p, d]);
        out
    }

    /// The pre-norm encoder layers: self-attention, then the feed-forward block with the
    /// configured activation, each around a residual connection.
    fn encode(&self, mut x: Tensor<3>) -> Tensor<3> {
        for layer in &self.encoder.layers {
            let h = layer.norm_2.forward(x.clone());
            let h = attend(&layer.mha, h);
            x = x + layer.dropout.forward(h);
            let h = layer.norm_1.forward(x.clone());
            let h = rows(&layer.pwff.linear_inner, h);
            let h = layer.pwff.dropout.forward(activate(h, self.activation));
            let h = rows(&layer.pwff.linear_outer, h);
            x = x + layer.dropout.forward(h);
        }
        x
    }

    /// A summary vector per window: the mean over patches beside the last patch, `[B, 2d]`.
    pub fn pooled(&self, h: Tensor<3>) -> Tensor<2> {
        let [b, p, d] = h.dims();
        let mean = h.clone().mean_dim(1).reshape([b, d]);
        let last = h.narrow(1, p - 1, 1).reshape([b, d]);
        Tensor::cat(vec![mean, last], 1)
    }
}

/// `linear` applied to every token of `x` `[B, P, d]` as one matrix product over the `B·P`
/// rows (burn multiplies a `[B, P, d]` input batch by batch when `P` fills its row tiles, and
/// the weight's gradient then takes `B` small products and a sum).
fn rows(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, p, d] = x.dims();
    let y = linear.forward(x.reshape([b * p, d]));
    let o = y.dims()[1];
    y.reshape([b, p, o])
}

/// Multi-head self-attention of `x` `[B, P, d]` with `mha`'s projections (as burn's
/// `MultiHeadAttention::forward` without masks, its projections taken over all `B·P` rows).
fn attend(mha: &MultiHeadAttention, x: Tensor<3>) -> Tensor<3> {
    let [b, p, d] = x.dims();
    let (h, dk) = (mha.n_heads, mha.d_k);
    let x = x.reshape([b * p, d]);
    let heads = |l: &Linear, x: Tensor<2>| l.forward(x).reshape([b, p, h, dk]).swap_dims(1, 2);
    let q = heads(&mha.query, x.clone());
    let k = heads(&mha.key, x.clone());
    let v = heads(&mha.value, x);
    let scores = q.matmul(k.transpose()).div_scalar((dk as f32).sqrt());
    let weights = if mha.quiet_softmax {
        quiet_softmax(scores, 3)
    } else {
        softmax(scores, 3)
    };
    let weights = mha.dropout.forward(weights);
    let context = weights.matmul(v).swap_dims(1, 2).reshape([b * p, d]);
    mha.output.forward(context).reshape([b, p, d])
}

fn activate(x: Tensor<3>, a: Activation) -> Tensor<3> {
    match a {
        Activation::Gelu => burn::tensor::activation::gelu(x),
        Activation::GeluTanh => {
            // ½·x·(1 + tanh(u)) = x·σ(2u), u = √(2/π)·(x + 0.044715·x³).
            let c = 2.0 * (2.0 / std::f64::consts::PI).sqrt();
            let z = x.clone().square().mul_scalar(c * 0.044715).add_scalar(c) * x.clone();
            x * sigmoid(z)
        }
    }
}

/// Backbone plus the pretraining heads.
#[derive(Module, Debug)]
pub struct Pretrainer {
    /// The shared encoder.
    pub backbone: Backbone,
    recon: Linear,
    forecast: Linear,
}

/// One pretraining batch, already on the device.
#[derive(Debug, Clone)]
pub struct PretrainBatch {
    /// `[B, P, patch_dim]` normalised patches.
    pub patches: Tensor<3>,
    /// `[B, P]`, 1 where a patch is masked.
    pub mask: Tensor<2>,
    /// `[B, 3]` embedding ids.
    pub ids: Tensor<2, Int>,
    /// `[B, outputs]` scaled forward returns per horizon, then (with the model's `vol_targets`)
    /// forward log volatility relative to the window's, per horizon.
    pub targets: Tensor<2>,
}

impl PretrainBatch {
    /// Windows in the batch.
    pub fn len(&self) -> usize {
        self.targets.dims()[0]
    }

    /// Whether the batch holds no window.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The windows `rows` of the batch.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> PretrainBatch {
        let (start, n) = (rows.start, rows.len());
        PretrainBatch {
            patches: self.patches.clone().narrow(0, start, n),
            mask: self.mask.clone().narrow(0, start, n),
            ids: self.ids.clone().narrow(0, start, n),
            targets: self.targets.clone().narrow(0, start, n),
        }
    }

    /// Masked patches in the batch (at least 1: the reconstruction loss's denominator).
    pub fn masked(&self) -> f32 {
        self.mask.clone().sum().into_scalar::<f32>().max(1.0)
    }
}

/// The two pretraining losses.
#[derive(Debug)]
pub struct PretrainLoss {
    /// Weighted sum, to differentiate.
    pub total: Tensor<1>,
    /// Masked-patch reconstruction MSE.
    pub recon: Tensor<1>,
    /// Forecast MSE.
    pub forecast: Tensor<1>,
}

impl Pretrainer {
    /// A seeded model.
    pub fn new(cfg: &ModelConfig, seed: u64, device: &Device) -> Pretrainer {
        let d = cfg.d_model;
        let m = Pretrainer {
            backbone: Backbone::new(cfg, device),
            recon: LinearConfig::new(d, cfg.patch_dim()).init(device),
            forecast: LinearConfig::new(2 * d, cfg.forecast_outputs()).init(device),
        };
        m.map(&mut SeededInit::new(seed))
    }

    /// Reconstruction and forecasting losses of a batch.
    pub fn loss(&self, batch: &PretrainBatch, forecast_weight: f64) -> PretrainLoss {
        self.losses(batch, forecast_weight, None)
    }

    /// The part of a whole batch's losses that falls on `shard`, a range of its windows: the
    /// shard's sums divided by the whole batch's masked-patch count ([`PretrainBatch::masked`])
    /// and window count, so that the shards' parts add up to the whole batch's losses.
    pub fn shard_loss(
        &self,
        shard: &PretrainBatch,
        forecast_weight: f64,
        masked: f32,
        windows: usize,
    ) -> PretrainLoss {
        self.losses(shard, forecast_weight, Some((masked, windows)))
    }

    fn losses(
        &self,
        batch: &PretrainBatch,
        forecast_weight: f64,
        whole: Option<(f32, usize)>,
    ) -> PretrainLoss {
        let h = self.backbone.forward(
            batch.patches.clone(),
            Some(batch.mask.clone()),
            batch.ids.clone(),
        );
        let rec = rows(&self.recon, h.clone());
        let err = (rec - batch.patches.clone()).square().mean_dim(2);
        let [b, p, _] = err.dims();
        let err: Tensor<2> = err.reshape([b, p]);
        let masked_err = (err * batch.mask.clone()).sum();
        let f = self.forecast.forward(self.backbone.pooled(h));
        let sq = (f - batch.targets.clone()).square();
        let (recon, forecast) = match whole {
            None => (
                masked_err / batch.mask.clone().sum().clamp_min(1.0),
                sq.mean(),
            ),
            Some((masked, windows)) => {
                let n = (windows * sq.dims()[1]) as f32;
                (masked_err.div_scalar(masked), sq.sum().div_scalar(n))
            }
        };
        let total = recon.clone() + forecast.clone() * forecast_weight;
        PretrainLoss {
            total,
            recon,
            forecast,
        }
    }
}

/// Backbone plus a downstream head predicting one number per window.
#[derive(Module, Debug)]
pub struct Predictor {
    /// The encoder (pretrained or not).
    pub backbone: Backbone,
    head: Linear,
}

impl Predictor {
    /// A predictor over a backbone, with a seeded head.
    pub fn new(backbone: Backbone, d_model: usize, seed: u64, device: &Device) -> Predictor {
        let head = LinearConfig::new(2 * d_model, 1)
            .init(device)
            .map(&mut SeededInit::new(seed ^ 0x4EAD));
        Predictor { backbone, head }
    }

    /// The squared-error loss of `patches` against `y` (with `qlike`, QLIKE of the variances
    /// whose log volatilities the outputs and `y` are: `eᵈ − d − 1`, `d = 2 (y − output)`): the
    /// mean over the batch, or with `windows`, the sum over this shard of a batch of that many
    /// windows divided by it (the shard's part of the batch's mean).
    pub fn loss(
        &self,
        patches: Tensor<3>,
        ids: Tensor<2, Int>,
        y: Tensor<1>,
        frozen: bool,
        windows: Option<usize>,
        qlike: bool,
    ) -> Tensor<1> {
        let e = y - self.forward(patches, ids, frozen);
        let sq = if qlike {
            let d = e.mul_scalar(2.0);
            (d.clone().exp() - d).sub_scalar(1.0)
        } else {
            e.square()
        };
        match windows {
            None => sq.mean(),
            Some(n) => sq.sum().div_scalar(n as f32),
        }
    }

    /// Predictions `[B]`; with `frozen`, no gradient reaches the backbone (a linear probe).
    pub fn forward(&self, patches: Tensor<3>, ids: Tensor<2, Int>, frozen: bool) -> Tensor<1> {
        let h = self.backbone.forward(patches, None, ids);
        let mut z = self.backbone.pooled(h);
        if frozen {
            z = z.detach();
        }
        let [b, _] = z.dims();
        self.head.forward(z).reshape([b])
    }
}

/// Replaces every parameter with values drawn from our own seeded generator (burn's generator
/// is process-global, so two models built on two threads would not be reproducible).
/// Layer-norm scales start at 1, biases at 0, embeddings at N(0, 0.02²), weights at
/// N(0, 1/fan_in).
struct SeededInit {
    rng: Rng,
    path: Vec<String>,
}

impl SeededInit {
    fn new(seed: u64) -> SeededInit {
        SeededInit {
            rng: Rng::new(seed, 0x1417),
            path: Vec::new(),
        }
    }
}

/// `m` with every weight drawn again from `seed`, its parameter ids kept.
#[cfg(test)]
pub(crate) fn reseeded<M: Module>(m: M, seed: u64) -> M {
    m.map(&mut SeededInit::new(seed))
}

impl ModuleMapper for SeededInit {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.last().cloned().unwrap_or_default();
        let small = self.path.iter().any(|p| {
            matches!(
                p.as_str(),
                "pos" | "mask_token" | "asset" | "exchange" | "freq"
            )
        });
        let rng = &mut self.rng;
        param.map(|t| {
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = if name == "gamma" {
                vec![1.0; n]
            } else if name == "beta" || name == "bias" {
                vec![0.0; n]
            } else {
                let sd = if small || D < 2 {
                    0.02
                } else {
                    1.0 / (dims[0] as f64).sqrt()
                };
                (0..n).map(|_| (rng.normal() * sd) as f32).collect()
            };
            let grad = t.is_require_grad();
            let fresh = Tensor::<D>::from_data(TensorData::new(values, dims), &t.device());
            if grad { fresh.require_grad() } else { fresh }
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::transformer::TransformerEncoderInput;
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn shard_losses_of_a_predictor_add_up_to_the_batch_loss() {
        let device = Device::flex();
        let cfg = ModelConfig::tiny();
        let m = Predictor::new(Pretrainer::new(&cfg, 3, &device).backbone, 16, 3, &device);
        let n = 5;
        let dims = [n, cfg.n_patches, cfg.patch_dim()];
        let p = Tensor::<3>::random(dims, Distribution::Default, &device);
        let ids = Tensor::<2, Int>::zeros([n, 3], &device);
        let y = Tensor::<1>::random([n], Distribution::Default, &device);
        let out: Vec<f32> = m
            .forward(p.clone(), ids.clone(), false)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let ys: Vec<f32> = y
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        for qlike in [false, true] {
            let whole = m
                .loss(p.clone(), ids.clone(), y.clone(), false, None, qlike)
                .into_scalar::<f32>();
            // By hand, from the outputs: squared error, or QLIKE of the variances.
            let want = out
                .iter()
                .zip(&ys)
                .map(|(o, y)| {
                    let d = 2.0 * f64::from(y - o);
                    if qlike {
                        d.exp() - d - 1.0
                    } else {
                        d * d / 4.0
                    }
                })
                .sum::<f64>()
                / n as f64;
            assert!(
                (f64::from(whole) - want).abs() <= 1e-5 * want.max(1.0),
                "qlike {qlike}: {whole} {want}"
            );
            let parts: f32 = [0..2, 2..5]
                .into_iter()
                .map(|r| {
                    let k = r.len();
                    m.loss(
                        p.clone().narrow(0, r.start, k),
                        ids.clone().narrow(0, r.start, k),
                        y.clone().narrow(0, r.start, k),
                        false,
                        Some(n),
                        qlike,
                    )
                    .into_scalar::<f32>()
                })
                .sum();
            assert!(
                (whole - parts).abs() <= 1e-6 * whole.abs().max(1.0),
                "{whole} {parts}"
            );
        }
    }

    #[test]
    fn the_exact_gelu_encodes_as_burns_encoder_did() {
        let device = Device::flex();
        for mut cfg in [ModelConfig::tiny(), ModelConfig::reference()] {
            cfg.activation = Activation::Gelu;
            let b = Pretrainer::new(&cfg, 2, &device).backbone;
            let dims = [3, cfg.n_patches, cfg.d_model];
            let x = Tensor::<3>::random(dims, Distribution::Default, &device);
            let ours = b.encode(x.clone());
            let burns = b.encoder.forward(TransformerEncoderInput::new(x));
            let diff = (ours - burns.clone()).abs().max().into_scalar::<f32>();
            let scale = burns.abs().max().into_scalar::<f32>();
            // The same operations; only the order of a product's sums may differ.
            assert!(diff <= 1e-6 * scale, "{diff} of {scale}");
        }
    }
}
