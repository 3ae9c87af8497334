//! The binary cache: a parsed dataset as dense little-endian matrices, one file per source.
//!
//! Layout: the magic `LIMCACH1`, a u64 header length, a JSON header (source fingerprint,
//! dataset summary, field offsets), zero padding to 8 bytes, the i64 time axis, then each
//! stored field as an f64 `symbols × times` column-major matrix. A cache whose fingerprint no
//! longer matches its source, or whose length is not what its header promises, is ignored and
//! rebuilt. Files are written under a temporary name and renamed, so a crash leaves either
//! the old cache or the new one, never half of one. The cache lives in a directory of its own:
//! the data directory is never written to.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetMeta, Field};
use crate::error::MarketError;
use crate::source::{Fingerprint, Origin};

const MAGIC: &[u8; 8] = b"LIMCACH1";

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    fingerprint: Fingerprint,
    meta: DatasetMeta,
    /// (field, byte offset) of each stored matrix.
    fields: Vec<(Field, u64)>,
    times_offset: u64,
    end: u64,
}

/// An open, validated cache file.
#[derive(Debug)]
pub struct CacheFile {
    file: File,
    header: Header,
}

impl Cache {
    /// A cache in `dir`, created on first write.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, name: &str, origin: &Origin) -> PathBuf {
        let id = xxhash_rust::xxh3::xxh3_64(origin.identity().as_bytes());
        self.dir.join(format!("{name}-{id:016x}.limc"))
    }

    /// Opens the cache of a source if it exists and is current.
    pub fn open(&self, name: &str, origin: &Origin, current: &Fingerprint) -> Option<CacheFile> {
        let mut file = File::open(self.path_for(name, origin)).ok()?;
        let mut head = [0u8; 16];
        file.read_exact(&mut head).ok()?;
        if &head[..8] != MAGIC || cfg!(target_endian = "big") {
            return None;
        }
        let len = u64::from_le_bytes(head[8..16].try_into().ok()?);
        if len > 1 << 30 {
            return None;
        }
        let mut json = vec![0u8; len as usize];
        file.read_exact(&mut json).ok()?;
        let header: Header = serde_json::from_slice(&json).ok()?;
        let actual = file.metadata().ok()?.len();
        (header.fingerprint == *current && header.end == actual)
            .then_some(CacheFile { file, header })
    }

    /// Writes a cache file. `fields` yields each stored field's matrix in turn, so the caller
    /// can build one matrix at a time and keep peak memory low.
    ///
    /// # Errors
    /// The cache directory or file cannot be written.
    #[allow(clippy::too_many_arguments)] // each is a distinct input; a struct would only rename them
    pub fn write(
        &self,
        origin: &Origin,
        fingerprint: Fingerprint,
        meta: &DatasetMeta,
        times: &[i64],
        order: &[Field],
        mut matrix: impl FnMut(Field) -> Vec<f64>,
        mut keep: impl FnMut(Field, Vec<f64>),
    ) -> Result<(), MarketError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| MarketError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&self.dir)
            .map_err(io("cannot create cache directory", &self.dir))?;
        let final_path = self.path_for(&meta.name, origin);
        let tmp = final_path.with_extension(format!("tmp{}", std::process::id()));
        let cells = (meta.symbols.len() * times.len()) as u64 * 8;
        // The header's length depends on the offsets it holds; a fixed-width rendering of the
        // offsets keeps that from going round in circles.
        let mut header = Header {
            fingerprint,
            meta: meta.clone(),
            fields: order.iter().map(|f| (*f, 0)).collect(),
            times_offset: 0,
            end: 0,
        };
        let json_len = serde_json::to_vec(&header).map(|v| v.len()).unwrap_or(0) as u64 + 64;
        let base = (16 + json_len).div_ceil(8) * 8;
        header.times_offset = base;
        let mut off = base + times.len() as u64 * 8;
        for f in header.fields.iter_mut() {
            f.1 = off;
            off += cells;
        }
        header.end = off;
        let mut json =
            serde_json::to_vec(&header).map_err(|e| MarketError::Query(e.to_string()))?;
        json.resize(json_len as usize, b' ');

        let mut w = BufWriter::with_capacity(
            1 << 20,
            File::create(&tmp).map_err(io("cannot write cache file", &tmp))?,
        );
        let result = (|| -> std::io::Result<()> {
            w.write_all(MAGIC)?;
            w.write_all(&json_len.to_le_bytes())?;
            w.write_all(&json)?;
            w.write_all(&vec![0u8; (base - 16 - json_len) as usize])?;
            w.write_all(bytemuck::cast_slice(times))?;
            for &f in order {
                let m = matrix(f);
                w.write_all(bytemuck::cast_slice(&m))?;
                keep(f, m);
            }
            w.flush()
        })();
        drop(w);
        if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, &final_path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(MarketError::Io {
                action: "cannot write cache file",
                path: final_path,
                source: e,
            });
        }
        Ok(())
    }
}

impl CacheFile {
    /// The dataset summary.
    pub fn meta(&self) -> &DatasetMeta {
        &self.header.meta
    }

    /// Reads the time axis.
    pub fn times(&mut self) -> std::io::Result<Vec<i64>> {
        let n = self.header.meta.times;
        let mut v = vec![0i64; n];
        self.file.seek(SeekFrom::Start(self.header.times_offset))?;
        self.file.read_exact(bytemuck::cast_slice_mut(&mut v))?;
        Ok(v)
    }

    /// Whether the cache holds a field.
    pub fn has(&self, field: Field) -> bool {
        self.header.fields.iter().any(|(f, _)| *f == field)
    }

    /// Reads one field's matrix.
    pub fn field(&mut self, field: Field) -> std::io::Result<Option<Vec<f64>>> {
        let Some(&(_, off)) = self.header.fields.iter().find(|(f, _)| *f == field) else {
            return Ok(None);
        };
        let n = self.header.meta.times * self.header.meta.symbols.len();
        let mut v = vec![0f64; n];
        self.file.seek(SeekFrom::Start(off))?;
        self.file.read_exact(bytemuck::cast_slice_mut(&mut v))?;
        Ok(Some(v))
    }
}
