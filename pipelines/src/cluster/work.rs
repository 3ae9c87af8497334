//! Units of work that run in another process (`lim worker`), and the shared directory they
//! travel through.
//!
//! An input is a JSON file named by the digest of its content (`inputs/<digest>.json`), so the
//! same work always has the same name and is never run twice for want of recognising it. An
//! output (`outputs/<digest>.out`) is one JSON header line, which carries a checksum of
//! everything after it, then the books as raw bytes ([`Book::to_bytes`]): a torn or altered
//! output is refused by name, and is run again rather than read.

use std::path::{Path, PathBuf};

use lim_backtest::session::StrategyResult;
use lim_backtest::spec::StrategySpec;
use lim_backtest::topk::Book;
use lim_market::{Frequency, MarketData, Part};
use lim_tools::ChooseUniverseArgs;
use serde::{Deserialize, Serialize};

/// The output format's name and version, first in every header.
pub const FORMAT: &str = "lim-work-output/2";

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkUnit {
    /// A shard of backtests on one universe and split.
    Backtest(BacktestShard),
    /// A `lim` command whose work lands in directories the nodes share (a pretraining or
    /// fine-tuning job and its checkpoints), run by `lim worker` as a child process.
    Command(CommandUnit),
}

/// A `lim` command as a unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandUnit {
    /// Its arguments after `lim` (e.g. `foundation pretrain --name m ... --json`).
    pub args: Vec<String>,
    /// When this path exists (a checkpoint left by an earlier attempt), `resume_args` are
    /// added: a retried training job continues where the failed one stopped.
    pub resume_when: Option<PathBuf>,
    /// See `resume_when`.
    pub resume_args: Vec<String>,
}

impl CommandUnit {
    /// The arguments to run now.
    pub fn args_now(&self) -> Vec<String> {
        let mut args = self.args.clone();
        if self.resume_when.as_ref().is_some_and(|p| p.exists()) {
            args.extend(self.resume_args.iter().cloned());
        }
        args
    }
}

/// Strategies to backtest on one universe: what `Session::run` is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestShard {
    /// The datasets, symbols, frequency and split (as the `choose_universe` tool takes them).
    pub universe: ChooseUniverseArgs,
    /// Named strategies.
    pub specs: Vec<(String, StrategySpec)>,
    /// Parts measured.
    pub parts: Vec<Part>,
    /// Years, walk-forward folds and IC decay too.
    pub detail: bool,
    /// Sharpe ratio on the selection folds too.
    pub selection_folds: bool,
}

/// Why a unit could not be stored, read or run.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file is not what its name or checksum says.
    #[error("{path}: {why}; delete it and the work is run again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The unit could not run (its data, its universe).
    #[error("{0}")]
    Run(String),
}

/// What a backtest shard produced: one result per strategy, in order, with its book.
#[derive(Debug, Clone)]
pub struct WorkOutput {
    /// The input's digest.
    pub input: String,
    /// The results.
    pub results: Vec<StrategyResult>,
    /// A command unit's summary (its `--json` output).
    pub summary: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    input: String,
    /// xxh3-64 of every byte after the header line, hex.
    checksum: String,
    results: Vec<StrategyResult>,
    /// Which results carry a book in the payload, in order.
    books: Vec<bool>,
    /// A command unit's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    summary: Option<serde_json::Value>,
}

fn hex64(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

impl WorkUnit {
    /// The unit as canonical JSON (what its digest is taken of).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The digest naming the unit: xxh3-128 of its JSON, hex.
    pub fn digest(&self) -> String {
        format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(self.to_json().as_bytes())
        )
    }

    /// Runs the unit on `market`.
    ///
    /// # Errors
    /// The universe cannot be loaded.
    pub fn execute(&self, market: &dyn MarketData) -> Result<Vec<StrategyResult>, WorkError> {
        match self {
            WorkUnit::Command(_) => Err(WorkError::Run(
                "a command unit is run by `lim worker`, not here".into(),
            )),
            WorkUnit::Backtest(shard) => {
                let frequency = match shard.universe.frequency.as_deref() {
                    None => None,
                    Some(f) => Some(Frequency::parse(f).ok_or_else(|| {
                        WorkError::Run(format!("'{f}' is not a frequency; use e.g. 1d, 1h, 5min"))
                    })?),
                };
                let session = lim_tools::load_session(market, &shard.universe, frequency)
                    .map_err(|(_, m)| WorkError::Run(m))?;
                Ok(if shard.selection_folds {
                    session.run_with_folds(&shard.specs, &shard.parts)
                } else {
                    session.run(&shard.specs, &shard.parts, shard.detail)
                })
            }
        }
    }
}

/// The shared directory units and their outputs travel through.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkError + '_ {
    move |source| WorkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically ([`lim_market::files::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WorkError> {
    lim_market::files::write_atomic(path, bytes).map_err(io(path))
}

impl WorkDir {
    /// The work directory at `root` (created with its subdirectories when missing).
    ///
    /// # Errors
    /// It cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<WorkDir, WorkError> {
        let root = root.into();
        for sub in ["inputs", "outputs", "logs", "jobs"] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let root = root.canonicalize().map_err(io(&root))?;
        Ok(WorkDir { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the input of `digest` lives.
    pub fn input_path(&self, digest: &str) -> PathBuf {
        self.root.join("inputs").join(format!("{digest}.json"))
    }

    /// Where the output of `digest` lives.
    pub fn output_path(&self, digest: &str) -> PathBuf {
        self.root.join("outputs").join(format!("{digest}.out"))
    }

    /// Stores `unit` under its digest (left alone when already there) and returns the digest.
    ///
    /// # Errors
    /// It cannot be written.
    pub fn put(&self, unit: &WorkUnit) -> Result<String, WorkError> {
        let digest = unit.digest();
        let path = self.input_path(&digest);
        if !path.exists() {
            write_atomic(&path, unit.to_json().as_bytes())?;
        }
        Ok(digest)
    }

    /// Reads the input of `digest`, checking that its content has that digest.
    ///
    /// # Errors
    /// Missing, unreadable, or not what its name says.
    pub fn get(&self, digest: &str) -> Result<WorkUnit, WorkError> {
        let path = self.input_path(digest);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let unit: WorkUnit = serde_json::from_str(&text).map_err(|e| WorkError::Corrupt {
            path: path.clone(),
            why: format!("not a work unit ({e})"),
        })?;
        if unit.digest() != digest {
            return Err(WorkError::Corrupt {
                path,
                why: format!("its content has digest {}, not {digest}", unit.digest()),
            });
        }
        Ok(unit)
    }

    /// Writes the output of `digest`.
    ///
    /// # Errors
    /// It cannot be written.
    pub fn put_output(&self, digest: &str, results: &[StrategyResult]) -> Result<(), WorkError> {
        self.put_output_with(digest, results, None)
    }

    /// Writes the output of a command unit: its summary.
    ///
    /// # Errors
    /// It cannot be written.
    pub fn put_summary(&self, digest: &str, summary: serde_json::Value) -> Result<(), WorkError> {
        self.put_output_with(digest, &[], Some(summary))
    }

    fn put_output_with(
        &self,
        digest: &str,
        results: &[StrategyResult],
        summary: Option<serde_json::Value>,
    ) -> Result<(), WorkError> {
        let mut payload = Vec::new();
        for r in results {
            if let Some(b) = &r.book {
                payload.extend_from_slice(&b.to_bytes());
            }
        }
        let header = Header {
            format: FORMAT.to_string(),
            input: digest.to_string(),
            checksum: hex64(&payload),
            results: results.to_vec(),
            books: results.iter().map(|r| r.book.is_some()).collect(),
            summary,
        };
        let mut bytes = serde_json::to_vec(&header).map_err(|e| WorkError::Run(e.to_string()))?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&payload);
        write_atomic(&self.output_path(digest), &bytes)
    }

    /// Reads the output of `digest`: `None` when there is none yet.
    ///
    /// # Errors
    /// Unreadable, or its checksum, format or input does not match.
    pub fn output(&self, digest: &str) -> Result<Option<WorkOutput>, WorkError> {
        let path = self.output_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let corrupt = |why: String| WorkError::Corrupt {
            path: path.clone(),
            why,
        };
        let nl = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("no header line".into()))?;
        let header: Header = serde_json::from_slice(&bytes[..nl])
            .map_err(|e| corrupt(format!("the header is not readable ({e})")))?;
        if header.format != FORMAT {
            return Err(corrupt(format!(
                "format '{}', this build reads '{FORMAT}'",
                header.format
            )));
        }
        if header.input != digest {
            return Err(corrupt(format!(
                "it answers input {}, not {digest}",
                header.input
            )));
        }
        let payload = &bytes[nl + 1..];
        if hex64(payload) != header.checksum {
            return Err(corrupt(format!(
                "checksum {} does not match its content ({})",
                header.checksum,
                hex64(payload)
            )));
        }
        let mut results = header.results;
        let mut at = 0;
        for (r, has) in results.iter_mut().zip(&header.books) {
            if *has {
                let (book, used) = Book::from_bytes(&payload[at..]).map_err(corrupt)?;
                r.book = Some(book);
                at += used;
            }
        }
        Ok(Some(WorkOutput {
            input: digest.to_string(),
            results,
            summary: header.summary,
        }))
    }
}

/// Cuts `specs` into at most `shards` consecutive shards of near-equal size (none empty).
pub fn shard<T: Clone>(specs: &[T], shards: usize) -> Vec<Vec<T>> {
    let n = specs.len();
    let k = shards.clamp(1, n.max(1));
    (0..k)
        .map(|i| specs[i * n / k..(i + 1) * n / k].to_vec())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(signal: &str) -> WorkUnit {
        WorkUnit::Backtest(BacktestShard {
            universe: serde_json::from_value(serde_json::json!({"datasets": ["cn_futures_daily"]}))
                .unwrap(),
            specs: vec![("a".into(), StrategySpec::new(signal))],
            parts: vec![Part::Train, Part::Validation],
            detail: false,
            selection_folds: true,
        })
    }

    #[test]
    fn shards_cover_every_spec_once_in_order() {
        let v: Vec<usize> = (0..10).collect();
        let s = shard(&v, 3);
        assert_eq!(s, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8, 9]]);
        assert_eq!(shard(&v, 50).len(), 10);
        assert_eq!(shard(&v, 0).len(), 1);
    }

    #[test]
    fn an_input_is_named_by_its_content_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let wd = WorkDir::open(dir.path()).unwrap();
        let u = unit("rank(returns)");
        let d = wd.put(&u).unwrap();
        assert_eq!(d, unit("rank(returns)").digest());
        assert_ne!(d, unit("rank(-returns)").digest());
        assert_eq!(wd.get(&d).unwrap(), u);
        std::fs::write(wd.input_path(&d), unit("rank(-returns)").to_json()).unwrap();
        let e = wd.get(&d).unwrap_err().to_string();
        assert!(e.contains("not ") && e.contains(&d), "{e}");
    }

    #[test]
    fn an_output_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wd = WorkDir::open(dir.path()).unwrap();
        let d = "0123";
        assert!(wd.output(d).unwrap().is_none());
        let mut r: StrategyResult = serde_json::from_value(serde_json::json!({
            "name": "a", "spec": {"signal": "rank(returns)"}, "nodes": 2, "depth": 2,
            "infinite_signal_cells": 0
        }))
        .unwrap();
        r.book = Some(Book {
            net: vec![f64::NAN, 0.5],
            turnover: vec![f64::NAN, 1.0],
            ic: vec![0.0, 0.1],
            ic_pearson: vec![0.0, 0.2],
            exposure: vec![f64::NAN, 1.0],
            nonfinite_signal_cells: 0,
            tradable: vec![3, 4],
        });
        wd.put_output(d, &[r.clone(), r.clone()]).unwrap();
        let back = wd.output(d).unwrap().unwrap();
        assert_eq!(back.results.len(), 2);
        assert_eq!(back.results[1].book.as_ref().unwrap().net[1], 0.5);
        assert_eq!(back.results[1].book.as_ref().unwrap().tradable, [3, 4]);
        let path = wd.output_path(d);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let e = wd.output(d).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("delete it"), "{e}");
    }
}
