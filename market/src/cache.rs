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

    /// Starts a cache file for a dataset: writes the header and the time axis under a
    /// temporary name. Fields are then written with [`CacheWriter::field`] (from several
    /// threads if wanted) and the file is put in place by [`CacheWriter::finish`].
    ///
    /// # Errors
    /// The cache directory or file cannot be written.
    pub fn begin(
        &self,
        origin: &Origin,
        fingerprint: Fingerprint,
        meta: &DatasetMeta,
        times: &[i64],
        fields: &[Field],
    ) -> Result<CacheWriter, MarketError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(io_error("cannot create cache directory", &self.dir))?;
        let path = self.path_for(&meta.name, origin);
        // The writer's own temporary file: two loads of one source at once, by two catalogs of
        // one process or by two processes, each write a whole file, and the last rename wins.
        let tmp = crate::files::temp_beside(&path);
        let cells = (meta.symbols.len() * times.len()) as u64 * 8;
        // The header's length depends on the offsets it holds; padding it to a length fixed
        // before the offsets are known keeps that from going round in circles.
        let mut header = Header {
            fingerprint,
            meta: meta.clone(),
            fields: fields.iter().map(|f| (*f, u64::MAX)).collect(),
            times_offset: u64::MAX,
            end: u64::MAX,
        };
        let json_len = serde_json::to_vec(&header).map(|v| v.len()).unwrap_or(0) as u64;
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
        let write = || -> std::io::Result<()> {
            let mut w = BufWriter::new(File::create(&tmp)?);
            w.write_all(MAGIC)?;
            w.write_all(&json_len.to_le_bytes())?;
            w.write_all(&json)?;
            w.write_all(&vec![0u8; (base - 16 - json_len) as usize])?;
            w.write_all(bytemuck::cast_slice(times))?;
            w.flush()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_error("cannot write cache file", &tmp)(e));
        }
        Ok(CacheWriter {
            tmp,
            path,
            offsets: header.fields,
            cells,
        })
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MarketError {
    let path = path.to_path_buf();
    move |source| MarketError::Io {
        action,
        path,
        source,
    }
}

/// A cache file being written. Dropping it without [`CacheWriter::finish`] removes it.
#[derive(Debug)]
pub struct CacheWriter {
    tmp: PathBuf,
    path: PathBuf,
    offsets: Vec<(Field, u64)>,
    cells: u64,
}

impl CacheWriter {
    /// Writes one field's matrix. Each call uses its own file handle, so threads may write
    /// different fields at once.
    ///
    /// # Errors
    /// The field was not announced to [`Cache::begin`], has the wrong size, or the write fails.
    pub fn field(&self, field: Field, matrix: &[f64]) -> Result<(), MarketError> {
        let Some(&(_, off)) = self.offsets.iter().find(|(f, _)| *f == field) else {
            return Err(MarketError::Query(format!(
                "cache file has no slot for field {}",
                field.name()
            )));
        };
        if matrix.len() as u64 * 8 != self.cells {
            return Err(MarketError::Query(format!(
                "cache matrix for {} has the wrong size",
                field.name()
            )));
        }
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(&self.tmp)?;
            f.seek(SeekFrom::Start(off))?;
            f.write_all(bytemuck::cast_slice(matrix))
        };
        write().map_err(io_error("cannot write cache file", &self.tmp))
    }

    /// Puts the finished file in place of any older cache of the same source.
    ///
    /// # Errors
    /// The rename fails.
    pub fn finish(self) -> Result<(), MarketError> {
        // After a rename, dropping `self` finds no temporary file to remove.
        std::fs::rename(&self.tmp, &self.path)
            .map_err(io_error("cannot write cache file", &self.path))
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
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
