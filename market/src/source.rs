//! Where a dataset's bytes come from: a file on disk or the sample compiled into the binary.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::error::MarketError;

/// The origin of a dataset file.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A file on disk, opened read-only.
    File(PathBuf),
    /// Bytes compiled into the binary (the bundled sample).
    Embedded {
        /// File name, e.g. `cn_futures_daily.csv.gz`.
        name: &'static str,
        /// The file's bytes.
        bytes: &'static [u8],
    },
}

/// Identifies a version of a source: a cache built from another version is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Size in bytes.
    pub len: u64,
    /// Modification time in nanoseconds since the epoch (files) or a content hash (embedded).
    pub stamp: u128,
}

impl Origin {
    /// The name shown to users.
    pub fn display(&self) -> String {
        match self {
            Origin::File(p) => p.display().to_string(),
            Origin::Embedded { name, .. } => format!("<bundled sample>/{name}"),
        }
    }

    /// Whether the bytes are a Parquet file (by name).
    pub fn is_parquet(&self) -> bool {
        crate::parquet::is_parquet_name(&self.file_name())
    }

    /// The file name alone.
    pub fn file_name(&self) -> String {
        match self {
            Origin::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Origin::Embedded { name, .. } => (*name).to_string(),
        }
    }

    /// Opens the bytes for reading. Files are only ever opened read-only.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(&self) -> Result<(Box<dyn Read + Send>, u64), MarketError> {
        match self {
            Origin::File(p) => {
                let f = File::open(p).map_err(|source| MarketError::Io {
                    action: "cannot open data file",
                    path: p.clone(),
                    source,
                })?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                Ok((Box::new(f), len))
            }
            Origin::Embedded { bytes, .. } => Ok((Box::new(*bytes), bytes.len() as u64)),
        }
    }

    /// The decompressed size, when the bytes say: a plain file's length, or a gzip file's
    /// trailer (the size modulo 2^32 of its last member; right for single-member files under
    /// 4 GiB, and only used as a hint).
    pub fn decompressed_hint(&self) -> Option<u64> {
        use std::io::{Seek, SeekFrom};
        let (head, tail) = match self {
            Origin::Embedded { bytes, .. } => {
                let n = bytes.len();
                (
                    bytes.get(..2)?.to_vec(),
                    bytes.get(n.checked_sub(4)?..)?.to_vec(),
                )
            }
            Origin::File(p) => {
                let mut f = File::open(p).ok()?;
                let mut head = [0u8; 2];
                f.read_exact(&mut head).ok()?;
                f.seek(SeekFrom::End(-4)).ok()?;
                let mut tail = [0u8; 4];
                f.read_exact(&mut tail).ok()?;
                (head.to_vec(), tail.to_vec())
            }
        };
        if head == [0x1f, 0x8b] {
            Some(u64::from(u32::from_le_bytes(tail.try_into().ok()?)))
        } else {
            match self {
                Origin::Embedded { bytes, .. } => Some(bytes.len() as u64),
                Origin::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            }
        }
    }

    /// The current version of the source.
    ///
    /// # Errors
    /// The file's metadata cannot be read.
    pub fn fingerprint(&self) -> Result<Fingerprint, MarketError> {
        match self {
            Origin::File(p) => {
                let m = std::fs::metadata(p).map_err(|source| MarketError::Io {
                    action: "cannot read data file",
                    path: p.clone(),
                    source,
                })?;
                let stamp = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                Ok(Fingerprint {
                    len: m.len(),
                    stamp,
                })
            }
            Origin::Embedded { bytes, .. } => Ok(Fingerprint {
                len: bytes.len() as u64,
                stamp: u128::from(xxhash_rust::xxh3::xxh3_64(bytes)),
            }),
        }
    }

    /// A stable identity for cache file names: the canonical path, or the embedded name.
    pub fn identity(&self) -> String {
        match self {
            Origin::File(p) => std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
            Origin::Embedded { name, .. } => format!("embedded:{name}"),
        }
    }
}

/// The dataset name of a data file: its name without `.csv.gz`, `.csv` or `.parquet`.
pub fn dataset_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".csv.gz")
        .or_else(|| name.strip_suffix(".csv"))
        .or_else(|| name.strip_suffix(".parquet"))
        .map(str::to_string)
}
