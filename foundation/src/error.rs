//! The crate's error type: every variant names the offending input and, where possible, the fix.

use std::path::PathBuf;

use lim_market::MarketError;

/// What can go wrong in pretraining, fine-tuning, predicting and checkpointing.
#[derive(Debug, thiserror::Error)]
pub enum FoundationError {
    /// Reading market data failed (unknown dataset or symbol, unreadable file, ...).
    #[error(transparent)]
    Market(#[from] MarketError),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data selected leaves nothing to learn from or predict.
    #[error("{0}")]
    NoData(String),
    /// The window is longer than every selected history.
    #[error(
        "a window of {window} bars (plus {horizon} bars of targets) is longer than the history of every symbol of {scope} (longest: {longest} bars); use fewer or shorter patches, or a later cutoff or end"
    )]
    WindowTooLong {
        /// Bars per window.
        window: usize,
        /// Bars of targets after the window.
        horizon: usize,
        /// What was searched.
        scope: String,
        /// The longest history found.
        longest: usize,
    },
    /// A checkpoint was made with another model configuration.
    #[error(
        "checkpoint '{path}' was trained with another configuration ({detail}); use the configuration it was trained with, or choose another --name"
    )]
    ConfigMismatch {
        /// The checkpoint directory.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// A checkpoint file is missing, truncated or altered.
    #[error(
        "checkpoint '{path}' is corrupt: {detail}; delete it and train again (earlier checkpoints of the same model are kept beside it)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A model of that name exists and the command would overwrite it.
    #[error(
        "model '{name}' already exists in '{dir}'; pass --resume to continue it, or choose another --name"
    )]
    Exists {
        /// The model name.
        name: String,
        /// The models directory.
        dir: PathBuf,
    },
    /// No model of that name.
    #[error("no model '{name}' in '{dir}'{hint}; see `lim foundation list`")]
    UnknownModel {
        /// The model name.
        name: String,
        /// The models directory.
        dir: PathBuf,
        /// A suggestion, with its leading separator.
        hint: String,
    },
    /// A prediction period overlaps what the model learned from.
    #[error(
        "prediction period starts {start}, but model '{model}' learned from data up to {cutoff}; predict only after {cutoff} (strictly out of sample)"
    )]
    NotOutOfSample {
        /// The model name.
        model: String,
        /// First requested prediction time.
        start: String,
        /// The model's data cutoff.
        cutoff: String,
    },
    /// The requested device is not compiled in or not available.
    #[error("{0}")]
    Device(String),
    /// File IO.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// JSON (de)serialisation of a checkpoint's metadata.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// burn failed to read or write a record.
    #[error("{path}: {detail}")]
    Record {
        /// The file.
        path: PathBuf,
        /// burn's message.
        detail: String,
    },
    /// A tensor could not be read back.
    #[error("reading a tensor back failed: {0}")]
    Tensor(String),
    /// The processes training one model together lost each other or disagree.
    #[error("data-parallel group: {0}")]
    Group(String),
}

/// Wraps an IO error with its path.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FoundationError {
    let path = path.into();
    move |source| FoundationError::Io { path, source }
}
