//! LIM's market foundation model.
//!
//! A patch Transformer ([`model::Backbone`]) reads windows of per-instrument bar features
//! ([`features`]) from any market and bar frequency. It is pretrained ([`pretrain`]) on a
//! weighted mixture of datasets up to a cutoff with masked-patch reconstruction and
//! multi-horizon return forecasting, then fine-tuned ([`finetune`]) with a small head on a
//! downstream target (forward return or its cross-sectional rank), as a linear probe or in
//! full, beside the same head trained from scratch. A fine-tuned [`model::Predictor`] makes a
//! `times × symbols` prediction panel strictly after everything it learned from
//! ([`predict`]), which strategies can load as a field. [`transfer`] runs the whole
//! comparison, beside simple forecasts: [`vol`] for volatility, [`linear`] for returns. [`checkpoint::Store`] keeps models with their configuration, training state and
//! data manifest.
//!
//! burn stays inside this crate: its outward API speaks in market types, prediction panels
//! and checkpoints. Everything is synchronous and deterministic for a seed; the only IO is
//! reading data and writing checkpoints and prediction files.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod eval;
pub mod features;
pub mod finetune;
pub mod forecast;
pub mod linear;
pub mod memory;
pub mod model;
pub mod parallel;
pub mod predict;
pub mod pretrain;
pub mod rng;
pub mod transfer;
pub mod vol;

pub use burn::tensor::Device;
pub use checkpoint::{DataManifest, Kind, Meta, Store};
pub use config::{FinetuneConfig, MixtureEntry, Mode, ModelConfig, PretrainConfig, Target};
pub use device::DeviceKind;
pub use error::FoundationError;
