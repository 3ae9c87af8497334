//! Checkpoints: weights, configuration, training state and a data manifest, written
//! atomically, so training resumes after a kill and every model says what it learned from.
//!
//! Layout of a models directory:
//! ```text
//! <models>/<name>/LATEST               "ckpt-00000200" (replaced by rename)
//! <models>/<name>/ckpt-00000200/meta.json    config, manifest, state, file checksums
//! <models>/<name>/ckpt-00000200/model.bpk    weights (burnpack)
//! <models>/<name>/ckpt-00000200/optim.bpk    AdamW moments (burnpack)
//! <models>/<name>/ckpt-00000200/current.bpk  fine-tuning: the model being trained (model.bpk
//!                                            holds the best one so far)
//! ```
//! A checkpoint directory is filled under a temporary name and renamed into place, then
//! `LATEST` is replaced by writing a temporary file and renaming it. A kill at any moment
//! leaves the previous checkpoint intact and `LATEST` pointing at a complete one. The two
//! newest checkpoints are kept.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use lim_market::AsOf;
use serde::{Deserialize, Serialize};

use crate::config::{FinetuneConfig, MixtureEntry, ModelConfig, PretrainConfig};
use crate::error::{FoundationError, io};
use crate::finetune::{FinetuneProgress, FinetuneRun};
use crate::model::{Backbone, Predictor, Pretrainer};
use crate::pretrain::{TrainState, optimizer};

/// What a model learned from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataManifest {
    /// Datasets with their mixture weights.
    pub datasets: Vec<MixtureEntry>,
    /// Symbols used, per dataset.
    pub symbols: BTreeMap<String, Vec<String>>,
    /// Nothing that closed after this time was read, for samples, statistics or stopping.
    pub cutoff: AsOf,
    /// The seed of every random draw.
    pub seed: u64,
    /// The model this one was fine-tuned from, with its own manifest.
    pub parent: Option<Box<ParentRef>>,
}

/// A reference to the model a fine-tuned model started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentRef {
    /// Its name.
    pub name: String,
    /// Its step.
    pub step: usize,
    /// What it learned from.
    pub manifest: DataManifest,
}

/// Pretrained backbone or fine-tuned predictor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Backbone with pretraining heads.
    Pretrained,
    /// Backbone with a downstream head.
    Finetuned,
}

/// Everything about a checkpoint except its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Model name.
    pub name: String,
    /// What the weights file holds.
    pub kind: Kind,
    /// The model's shape.
    pub model: ModelConfig,
    /// Pretraining settings (pretrained models).
    pub pretrain: Option<PretrainConfig>,
    /// Fine-tuning settings (fine-tuned models).
    pub finetune: Option<FinetuneConfig>,
    /// What it learned from.
    pub manifest: DataManifest,
    /// Where training stood.
    pub state: TrainState,
    /// Free-form results (validation IC, ...).
    pub results: BTreeMap<String, f64>,
    /// Early-stopping state of a fine-tuning run (to resume it).
    #[serde(default)]
    pub finetune_progress: Option<FinetuneProgress>,
    /// xxh3 of each tensor file, checked before loading.
    pub checksums: BTreeMap<String, u64>,
}

/// A models directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn ckpt_name(step: usize) -> String {
    format!("ckpt-{step:08}")
}

/// Writes `bytes` to `path` atomically ([`lim_market::files::write_atomic`]: a writer's own
/// temporary file, then a rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FoundationError> {
    lim_market::files::write_atomic(path, bytes).map_err(io(path))
}

fn checksum(path: &Path) -> Result<u64, FoundationError> {
    let bytes = fs::read(path).map_err(io(path))?;
    Ok(xxhash_rust::xxh3::xxh3_64(&bytes))
}

impl Store {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a model of that name has a checkpoint.
    pub fn exists(&self, name: &str) -> bool {
        self.dir.join(name).join("LATEST").is_file()
    }

    /// Names of all models, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("LATEST").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    fn check_name(name: &str) -> Result<(), FoundationError> {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if ok {
            Ok(())
        } else {
            Err(FoundationError::Config(format!(
                "model name '{name}' may only hold letters, digits, '-', '_' and '.'"
            )))
        }
    }

    /// Refuses to start a new model over an existing one.
    ///
    /// # Errors
    /// [`FoundationError::Exists`], or a bad name.
    pub fn check_new(&self, name: &str) -> Result<(), FoundationError> {
        Store::check_name(name)?;
        if self.exists(name) {
            return Err(FoundationError::Exists {
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Writes a checkpoint: `model` (any module), optionally an optimizer and the model
    /// being trained when `model` is the best one so far, and `meta`.
    ///
    /// # Errors
    /// IO failures; the previous checkpoint stays intact.
    pub fn save<M: Module>(
        &self,
        meta: &Meta,
        model: &M,
        optim: Option<&ModuleOptimizer>,
        current: Option<&M>,
    ) -> Result<PathBuf, FoundationError> {
        Store::check_name(&meta.name)?;
        let root = self.dir.join(&meta.name);
        fs::create_dir_all(&root).map_err(io(&root))?;
        let final_dir = root.join(ckpt_name(meta.state.step));
        let tmp = root.join(format!(
            ".{}.tmp-{}",
            ckpt_name(meta.state.step),
            std::process::id()
        ));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let record = |e: burn::store::RecordError, p: &Path| FoundationError::Record {
            path: p.to_path_buf(),
            detail: e.to_string(),
        };
        let mut meta = meta.clone();
        meta.checksums.clear();
        let mp = tmp.join("model.bpk");
        model.clone().save_file(&mp).map_err(|e| record(e, &mp))?;
        meta.checksums.insert("model.bpk".into(), checksum(&mp)?);
        if let Some(c) = current {
            let cp = tmp.join("current.bpk");
            c.clone().save_file(&cp).map_err(|e| record(e, &cp))?;
            meta.checksums.insert("current.bpk".into(), checksum(&cp)?);
        }
        if let Some(o) = optim {
            let op = tmp.join("optim.bpk");
            o.save(&op).map_err(|e| record(e, &op))?;
            meta.checksums.insert("optim.bpk".into(), checksum(&op)?);
        }
        let mj = tmp.join("meta.json");
        let text = serde_json::to_string_pretty(&meta).map_err(|source| FoundationError::Json {
            path: mj.clone(),
            source,
        })?;
        fs::write(&mj, text).map_err(io(&mj))?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        write_atomic(&root.join("LATEST"), ckpt_name(meta.state.step).as_bytes())?;
        // Keep the two newest complete checkpoints.
        let mut old: Vec<PathBuf> = fs::read_dir(&root)
            .map_err(io(&root))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ckpt-"))
            })
            .collect();
        old.sort();
        let keep = old.len().saturating_sub(2);
        for p in &old[..keep] {
            if *p != final_dir {
                fs::remove_dir_all(p).map_err(io(p))?;
            }
        }
        Ok(final_dir)
    }

    /// The latest checkpoint directory of a model.
    ///
    /// # Errors
    /// No such model, or a `LATEST` that names a missing checkpoint.
    pub fn latest(&self, name: &str) -> Result<PathBuf, FoundationError> {
        let root = self.dir.join(name);
        let latest = root.join("LATEST");
        if !latest.is_file() {
            let names = self.names();
            let hint = lim_market::error::suggestion(name, names.iter().map(String::as_str));
            return Err(FoundationError::UnknownModel {
                name: name.to_string(),
                dir: self.dir.clone(),
                hint,
            });
        }
        let target = fs::read_to_string(&latest).map_err(io(&latest))?;
        let dir = root.join(target.trim());
        if !dir.join("meta.json").is_file() {
            return Err(FoundationError::Corrupt {
                path: latest,
                detail: format!("it names '{}', which holds no meta.json", target.trim()),
            });
        }
        Ok(dir)
    }

    /// Reads a model's latest metadata.
    ///
    /// # Errors
    /// Unknown model, unreadable or invalid metadata.
    pub fn meta(&self, name: &str) -> Result<(PathBuf, Meta), FoundationError> {
        let dir = self.latest(name)?;
        let p = dir.join("meta.json");
        let text = fs::read_to_string(&p).map_err(io(&p))?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| FoundationError::Corrupt {
            path: p.clone(),
            detail: format!("invalid metadata ({e})"),
        })?;
        Ok((dir, meta))
    }

    fn verified(dir: &Path, meta: &Meta, file: &str) -> Result<PathBuf, FoundationError> {
        let p = dir.join(file);
        let want = meta
            .checksums
            .get(file)
            .ok_or_else(|| FoundationError::Corrupt {
                path: p.clone(),
                detail: "no checksum recorded for it".into(),
            })?;
        let got = checksum(&p).map_err(|_| FoundationError::Corrupt {
            path: p.clone(),
            detail: "the file is missing or unreadable".into(),
        })?;
        if got != *want {
            return Err(FoundationError::Corrupt {
                path: p,
                detail: "its checksum does not match the one recorded when it was written".into(),
            });
        }
        Ok(p)
    }

    fn load_into<M: Module>(dir: &Path, meta: &Meta, fresh: M) -> Result<M, FoundationError> {
        let p = Store::verified(dir, meta, "model.bpk")?;
        fresh
            .try_load_file(&p)
            .map_err(|e| FoundationError::Corrupt {
                path: p,
                detail: format!("burn could not load it ({e})"),
            })
    }

    fn expect(
        dir: &Path,
        meta: &Meta,
        kind: Kind,
        cfg: Option<&ModelConfig>,
    ) -> Result<(), FoundationError> {
        if meta.kind != kind {
            return Err(FoundationError::ConfigMismatch {
                path: dir.to_path_buf(),
                detail: format!("it is a {:?} model, a {:?} one is needed", meta.kind, kind),
            });
        }
        if let Some(c) = cfg
            && let Some(d) = meta.model.difference(c)
        {
            return Err(FoundationError::ConfigMismatch {
                path: dir.to_path_buf(),
                detail: d,
            });
        }
        Ok(())
    }

    /// Loads a pretraining run to continue it (`cfg`: the configuration the caller expects;
    /// `None` accepts the stored one).
    ///
    /// # Errors
    /// Unknown model, another configuration, a corrupt file.
    pub fn load_pretrained(
        &self,
        name: &str,
        cfg: Option<&ModelConfig>,
        device: &Device,
    ) -> Result<
        (
            Meta,
            Pretrainer,
            Option<Pretrainer>,
            Option<ModuleOptimizer>,
        ),
        FoundationError,
    > {
        let (dir, meta) = self.meta(name)?;
        Store::expect(&dir, &meta, Kind::Pretrained, cfg)?;
        let fresh = Pretrainer::new(&meta.model, 0, device);
        let model = Store::load_into(&dir, &meta, fresh)?;
        // With a moving average, `model.bpk` holds it and `current.bpk` the optimised weights.
        let current = if meta.checksums.contains_key("current.bpk") {
            let cp = Store::verified(&dir, &meta, "current.bpk")?;
            Some(
                Pretrainer::new(&meta.model, 0, device)
                    .try_load_file(&cp)
                    .map_err(|e| FoundationError::Corrupt {
                        path: cp,
                        detail: format!("burn could not load it ({e})"),
                    })?,
            )
        } else {
            None
        };
        let optim = match (&meta.pretrain, meta.checksums.contains_key("optim.bpk")) {
            (Some(p), true) => {
                let op = Store::verified(&dir, &meta, "optim.bpk")?;
                Some(
                    optimizer(&p.optim)
                        .load(&op)
                        .map_err(|e| FoundationError::Corrupt {
                            path: op,
                            detail: format!("burn could not load it ({e})"),
                        })?,
                )
            }
            _ => None,
        };
        Ok((meta, model, current, optim))
    }

    /// Loads a pretrained backbone.
    ///
    /// # Errors
    /// As [`Store::load_pretrained`].
    pub fn load_backbone(
        &self,
        name: &str,
        device: &Device,
    ) -> Result<(Meta, Backbone), FoundationError> {
        // Only the weights: a fine-tuning run needs no pretraining optimizer state.
        let (dir, meta) = self.meta(name)?;
        Store::expect(&dir, &meta, Kind::Pretrained, None)?;
        let model = Store::load_into(&dir, &meta, Pretrainer::new(&meta.model, 0, device))?;
        Ok((meta, model.backbone))
    }

    /// Loads an unfinished fine-tuning run to continue it.
    ///
    /// # Errors
    /// Unknown model, one without fine-tuning state, a corrupt file.
    pub fn load_finetune_run(
        &self,
        name: &str,
        device: &Device,
    ) -> Result<(Meta, FinetuneRun), FoundationError> {
        let (dir, meta) = self.meta(name)?;
        Store::expect(&dir, &meta, Kind::Finetuned, None)?;
        let (Some(ft), Some(progress)) = (&meta.finetune, &meta.finetune_progress) else {
            return Err(FoundationError::Corrupt {
                path: dir.join("meta.json"),
                detail: "it holds no fine-tuning state to resume".into(),
            });
        };
        let fresh = || {
            Predictor::new(
                Pretrainer::new(&meta.model, 0, device).backbone,
                meta.model.d_model,
                0,
                device,
            )
        };
        let best = Store::load_into(&dir, &meta, fresh())?;
        let cp = Store::verified(&dir, &meta, "current.bpk")?;
        let model = fresh()
            .try_load_file(&cp)
            .map_err(|e| FoundationError::Corrupt {
                path: cp,
                detail: format!("burn could not load it ({e})"),
            })?;
        let op = Store::verified(&dir, &meta, "optim.bpk")?;
        let optim = optimizer(&ft.optim)
            .load(&op)
            .map_err(|e| FoundationError::Corrupt {
                path: op,
                detail: format!("burn could not load it ({e})"),
            })?;
        let run = FinetuneRun {
            model,
            optim,
            best,
            progress: progress.clone(),
        };
        Ok((meta, run))
    }

    /// Loads a fine-tuned predictor.
    ///
    /// # Errors
    /// Unknown model, not a fine-tuned one, a corrupt file.
    pub fn load_predictor(
        &self,
        name: &str,
        device: &Device,
    ) -> Result<(Meta, Predictor), FoundationError> {
        let (dir, meta) = self.meta(name)?;
        Store::expect(&dir, &meta, Kind::Finetuned, None)?;
        let fresh = Predictor::new(
            Pretrainer::new(&meta.model, 0, device).backbone,
            meta.model.d_model,
            0,
            device,
        );
        let model = Store::load_into(&dir, &meta, fresh)?;
        Ok((meta, model))
    }
}
