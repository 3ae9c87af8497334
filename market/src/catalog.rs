//! A catalog: the datasets of one data directory (or of the bundled sample), loaded on demand
//! through the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cache::Cache;
use crate::dataset::{self, Dataset, DatasetMeta, Field};
use crate::error::{MarketError, closest};
use crate::instrument::Manifest;
use crate::reader::{self, Problem, ReadOptions};
use crate::source::{Origin, dataset_name};

/// Progress of long work, for a caller to display.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Parsing a data file: input bytes consumed of the total.
    Parsing {
        /// Dataset name.
        dataset: String,
        /// Input bytes consumed.
        done: u64,
        /// Input bytes in all.
        total: u64,
    },
    /// The cache could not be written; loading went on without it.
    CacheNotWritten {
        /// Dataset name.
        dataset: String,
        /// Why.
        reason: String,
    },
    /// A dataset finished loading.
    Loaded {
        /// Dataset name.
        dataset: String,
        /// Whether it came from the cache.
        from_cache: bool,
    },
}

/// Receives [`Progress`] events.
pub type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How a dataset was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadSource {
    /// Read from a current cache file.
    Cache,
    /// Parsed from the source; `cache_error` says why no cache was written, if one was wanted.
    Parsed {
        /// Why the cache could not be written.
        cache_error: Option<String>,
    },
}

#[derive(Debug)]
struct Entry {
    origin: Origin,
    manifest: Option<Manifest>,
}

/// The datasets of a data directory or of the bundled sample.
pub struct Catalog {
    location: String,
    entries: BTreeMap<String, Entry>,
    cache: Option<Cache>,
    progress: Option<ProgressSink>,
    metas: Mutex<BTreeMap<String, DatasetMeta>>,
    /// Groupings from `groups.csv` beside the datasets.
    pub(crate) groups: Option<std::sync::Arc<crate::groups::GroupTable>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("location", &self.location)
            .field("datasets", &self.entries.keys())
            .finish()
    }
}

impl Catalog {
    /// Scans a directory for `*.csv`, `*.csv.gz` and `*.parquet` files; `<stem>.meta.json` beside a file is
    /// its manifest. Nothing is parsed yet.
    ///
    /// # Errors
    /// The directory cannot be read, holds no data files, or a manifest is malformed.
    pub fn open_dir(dir: &Path, cache: Option<Cache>) -> Result<Catalog, MarketError> {
        let read = std::fs::read_dir(dir).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                MarketError::Query(format!(
                    "there is no data directory '{}': name a directory of *.csv or *.csv.gz files in the uniform format (docs/data.md), or leave the data out for the bundled sample",
                    dir.display()
                ))
            } else {
                MarketError::Io {
                    action: "cannot read data directory",
                    path: dir.to_path_buf(),
                    source,
                }
            }
        })?;
        let mut entries = BTreeMap::new();
        for item in read.flatten() {
            let path = item.path();
            if !path.is_file()
                || path
                    .file_name()
                    .is_some_and(|f| crate::groups::FILES.iter().any(|g| f == *g))
            {
                continue;
            }
            let Some(name) = dataset_name(&path) else {
                continue;
            };
            if let Some(other) = entries.get(&name) {
                let Entry { origin, .. } = other;
                return Err(MarketError::Query(format!(
                    "two files hold dataset '{name}': '{}' and '{}'; keep one of them in '{}' (move the other away)",
                    origin.file_name(),
                    path.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    dir.display()
                )));
            }
            let manifest = read_manifest(&dir.join(format!("{name}.meta.json")))?;
            entries.insert(
                name,
                Entry {
                    origin: Origin::File(path),
                    manifest,
                },
            );
        }
        if entries.is_empty() {
            return Err(MarketError::EmptyDirectory(dir.to_path_buf()));
        }
        let mut catalog = Catalog::from_entries(dir.display().to_string(), entries, cache);
        catalog.groups = crate::groups::GroupTable::find(dir)?.map(std::sync::Arc::new);
        Ok(catalog)
    }

    /// The groupings of `groups.csv` beside the datasets, if there is one.
    pub fn group_table(&self) -> Option<&crate::groups::GroupTable> {
        self.groups.as_deref()
    }

    /// The bundled sample.
    pub fn bundled(cache: Option<Cache>) -> Catalog {
        let entries = crate::sample::origins()
            .map(|(n, origin)| {
                (
                    n,
                    Entry {
                        origin,
                        manifest: None,
                    },
                )
            })
            .collect();
        Catalog::from_entries("<bundled sample>".to_string(), entries, cache)
    }

    /// A catalog of one file, e.g. for `lim data check` or ad-hoc use.
    ///
    /// # Errors
    /// The path has no `.csv` / `.csv.gz` / `.parquet` name.
    pub fn single_file(path: &Path, cache: Option<Cache>) -> Result<Catalog, MarketError> {
        let name = dataset_name(path).ok_or_else(|| {
            MarketError::Query(format!(
                "'{}' is not a data file name, expected NAME.csv, NAME.csv.gz or NAME.parquet",
                path.display()
            ))
        })?;
        let manifest = match path.parent() {
            Some(dir) => read_manifest(&dir.join(format!("{name}.meta.json")))?,
            None => None,
        };
        let mut entries = BTreeMap::new();
        entries.insert(
            name,
            Entry {
                origin: Origin::File(path.to_path_buf()),
                manifest,
            },
        );
        Ok(Catalog::from_entries(
            path.display().to_string(),
            entries,
            cache,
        ))
    }

    fn from_entries(
        location: String,
        entries: BTreeMap<String, Entry>,
        cache: Option<Cache>,
    ) -> Catalog {
        Catalog {
            location,
            entries,
            cache,
            progress: None,
            metas: Mutex::new(BTreeMap::new()),
            groups: None,
        }
    }

    /// Reports progress of long loads to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Catalog {
        self.progress = Some(sink);
        self
    }

    /// Where the datasets come from.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Dataset names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn entry(&self, name: &str) -> Result<&Entry, MarketError> {
        self.entries
            .get(name)
            .ok_or_else(|| MarketError::UnknownDataset {
                name: name.to_string(),
                suggestion: closest(name, self.names()),
                known: self.names().map(str::to_string).collect(),
            })
    }

    /// The origin of a dataset.
    ///
    /// # Errors
    /// Unknown dataset.
    pub fn origin(&self, name: &str) -> Result<&Origin, MarketError> {
        Ok(&self.entry(name)?.origin)
    }

    /// A dataset's summary, from the cache when current, else by loading it.
    ///
    /// # Errors
    /// Unknown dataset, unreadable or invalid file.
    pub fn meta(&self, name: &str) -> Result<DatasetMeta, MarketError> {
        if let Some(m) = self.metas.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(m);
        }
        let entry = self.entry(name)?;
        if let Some(cache) = &self.cache {
            let fp = entry.origin.fingerprint()?;
            if let Some(file) = cache.open(name, &entry.origin, &fp) {
                let meta = file.meta().clone();
                self.remember(&meta);
                return Ok(meta);
            }
        }
        Ok(self.load(name, &[])?.0.meta)
    }

    fn remember(&self, meta: &DatasetMeta) {
        if let Ok(mut m) = self.metas.lock() {
            m.insert(meta.name.clone(), meta.clone());
        }
    }

    /// Loads a dataset with the given stored fields in memory (derived fields are ignored here;
    /// see [`crate::panel`]). The source is parsed only when no current cache exists; a parse
    /// writes the cache for next time.
    ///
    /// # Errors
    /// Unknown dataset, unreadable file, or a file that breaks the format (the error locates
    /// the first problem).
    pub fn load(&self, name: &str, fields: &[Field]) -> Result<(Dataset, LoadSource), MarketError> {
        self.load_with(name, fields, false)
    }

    /// [`Catalog::load`], with every extra numeric column of the file as well when
    /// `all_extra`.
    ///
    /// # Errors
    /// As [`Catalog::load`].
    pub fn load_with(
        &self,
        name: &str,
        fields: &[Field],
        all_extra: bool,
    ) -> Result<(Dataset, LoadSource), MarketError> {
        let entry = self.entry(name)?;
        let fingerprint = entry.origin.fingerprint()?;
        let mut wanted: Vec<Field> = fields.iter().copied().filter(|f| f.is_stored()).collect();
        wanted.sort();
        wanted.dedup();
        let with_extra = |wanted: &mut Vec<Field>, extra: &[String]| {
            if all_extra {
                wanted.extend(extra.iter().map(|n| Field::extra(n)));
                wanted.sort();
                wanted.dedup();
            }
        };

        if let Some(cache) = &self.cache
            && let Some(mut file) = cache.open(name, &entry.origin, &fingerprint)
        {
            let read = (|| -> std::io::Result<Dataset> {
                let times = file
                    .times()?
                    .into_iter()
                    .map(crate::time::Timestamp)
                    .collect();
                let mut out = BTreeMap::new();
                let mut wanted = wanted.clone();
                with_extra(&mut wanted, &file.meta().extra_fields);
                for &f in &wanted {
                    if let Some(m) = file.field(f)? {
                        out.insert(f, m);
                    }
                }
                Ok(Dataset {
                    meta: file.meta().clone(),
                    times,
                    fields: out,
                })
            })();
            // A cache that cannot be read is rebuilt below rather than trusted.
            if let Ok(ds) = read {
                self.remember(&ds.meta);
                self.emit(Progress::Loaded {
                    dataset: name.to_string(),
                    from_cache: true,
                });
                return Ok((ds, LoadSource::Cache));
            }
        }

        let total = match &entry.origin {
            Origin::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Origin::Embedded { bytes, .. } => bytes.len() as u64,
        };
        let file = entry.origin.file_name();
        let sink = self.progress.clone();
        let dataset = name.to_string();
        let report = move |done: u64| {
            if let Some(s) = &sink {
                s(&Progress::Parsing {
                    dataset: dataset.clone(),
                    done,
                    total,
                });
            }
        };
        let (mut raw, problems) = read_origin(&entry.origin, ReadOptions::LOAD, Some(&report))?;
        if let Some(first) = problems.list.into_iter().next() {
            return Err(MarketError::Invalid {
                file,
                first: Box::new(first),
                more: problems.total.saturating_sub(1),
            });
        }
        let frequency =
            dataset::infer_frequency(&raw, &entry.origin.display()).map_err(|first| {
                MarketError::Invalid {
                    file: file.clone(),
                    first: Box::new(first),
                    more: 0,
                }
            })?;
        let (axis, pos) = dataset::align(&raw);
        let meta = dataset::summarize(
            &raw,
            name,
            &entry.origin.display(),
            frequency,
            &axis,
            &pos,
            entry.manifest.clone(),
        );
        let t = axis.len();

        // The bar times are no longer needed once every row knows its place on the axis.
        raw.ts = Vec::new();

        // Dense matrices are built on two threads, each taking its long columns by value and
        // dropping each once scattered, so the peak is the long form plus two matrices plus the
        // matrices kept. Fields not asked for go first, so their columns are freed early.
        let stored: Vec<Field> = Field::STORED
            .into_iter()
            .filter(|f| *f != Field::OpenInterest || raw.has_open_interest)
            .chain(raw.extra_names.iter().map(|n| Field::extra(n)))
            .collect();
        with_extra(&mut wanted, &raw.extra_names);
        let cached = self.cache.is_some();
        let mut order: Vec<Field> = stored
            .iter()
            .copied()
            .filter(|f| !wanted.contains(f))
            .collect();
        order.extend(stored.iter().copied().filter(|f| wanted.contains(f)));
        order.retain(|f| cached || wanted.contains(f));
        let writer = match &self.cache {
            Some(cache) => cache
                .begin(&entry.origin, fingerprint, &meta, &axis, &stored)
                .map(Some),
            None => Ok(None),
        };
        let (writer_owned, mut cache_error) = match writer {
            Ok(w) => (w, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut lanes: [Vec<(Field, Vec<f64>)>; 2] = [Vec::new(), Vec::new()];
        for (i, f) in order.iter().enumerate() {
            let col = match f {
                Field::Extra(n) => {
                    let j = raw.extra_names.iter().position(|e| e == n).unwrap_or(0);
                    std::mem::take(&mut raw.extra[j])
                }
                f => std::mem::take(&mut raw.cols[f.stored_index().unwrap_or(0)]),
            };
            lanes[i % 2].push((*f, col));
        }
        let (raw, pos, writer, wanted) = (&raw, &pos, writer_owned.as_ref(), &wanted);
        let work = move |lane: Vec<(Field, Vec<f64>)>| {
            let mut kept = Vec::new();
            let mut error = None;
            for (f, col) in lane {
                let m = dataset::scatter(raw, &col, pos, t);
                drop(col);
                if let Some(w) = writer
                    && error.is_none()
                {
                    error = w.field(f, &m).err().map(|e| e.to_string());
                }
                if wanted.contains(&f) {
                    kept.push((f, m));
                }
            }
            (kept, error)
        };
        let [a, b] = lanes;
        let (ra, rb) = std::thread::scope(|s| {
            let other = s.spawn(move || work(b));
            let mine = work(a);
            (mine, other.join())
        });
        let rb = rb.unwrap_or_else(|_| (Vec::new(), Some("cache worker failed".to_string())));
        let mut kept = BTreeMap::new();
        for (kept_part, error) in [ra, rb] {
            kept.extend(kept_part);
            cache_error = cache_error.or(error);
        }
        if let Some(w) = writer_owned
            && cache_error.is_none()
        {
            cache_error = w.finish().err().map(|e| e.to_string());
        }
        self.remember(&meta);
        if let Some(reason) = &cache_error {
            self.emit(Progress::CacheNotWritten {
                dataset: name.to_string(),
                reason: reason.clone(),
            });
        }
        self.emit(Progress::Loaded {
            dataset: name.to_string(),
            from_cache: false,
        });
        let times = axis.into_iter().map(crate::time::Timestamp).collect();
        Ok((
            Dataset {
                meta,
                times,
                fields: kept,
            },
            LoadSource::Parsed { cache_error },
        ))
    }

    fn emit(&self, p: Progress) {
        if let Some(s) = &self.progress {
            s(&p);
        }
    }
}

fn read_manifest(path: &Path) -> Result<Option<Manifest>, MarketError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| MarketError::Manifest {
                path: path.to_path_buf(),
                message: format!("{e}; expected keys asset_class, exchange, session, description"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MarketError::Io {
            action: "cannot read manifest",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a CSV or Parquet file into long form with the format's checks.
///
/// # Errors
/// A CSV file cannot be opened (a Parquet file's open failure is a problem of the read).
fn read_origin(
    origin: &Origin,
    opts: ReadOptions,
    progress: Option<reader::ProgressFn<'_>>,
) -> Result<(reader::RawData, reader::Problems), MarketError> {
    if origin.is_parquet() {
        return Ok(crate::parquet::read(origin, opts, progress));
    }
    let (input, _) = origin.open()?;
    Ok(reader::read(
        input,
        &origin.display(),
        opts,
        origin.decompressed_hint(),
        progress,
    ))
}

/// What [`convert`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    /// The file read.
    pub from: String,
    /// The file written.
    pub to: String,
    /// Rows written.
    pub rows: u64,
    /// Symbols written.
    pub symbols: usize,
    /// The written file's size in bytes.
    pub bytes: u64,
}

/// Rewrites a data file in the format of `out`'s name (`.parquet` or `.csv`), checking every
/// row on the way as a load does. Never overwrites a file.
///
/// # Errors
/// The input cannot be read or breaks the format (the first problem is named), `out` exists
/// or has another extension, or cannot be written.
pub fn convert(input: &Path, out: &Path) -> Result<ConvertReport, MarketError> {
    let format = match out.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.ends_with(".parquet") => crate::parquet::Format::Parquet,
        Some(n) if n.ends_with(".csv") => crate::parquet::Format::Csv,
        _ => {
            return Err(MarketError::Query(format!(
                "'{}' is not a file name to convert to; name it NAME.parquet or NAME.csv",
                out.display()
            )));
        }
    };
    if out.exists() {
        return Err(MarketError::Query(format!(
            "'{}' exists; remove it or name another output file",
            out.display()
        )));
    }
    let origin = Origin::File(input.to_path_buf());
    let (raw, problems) = read_origin(&origin, ReadOptions::LOAD, None)?;
    if let Some(first) = problems.list.into_iter().next() {
        return Err(MarketError::Invalid {
            file: origin.file_name(),
            first: Box::new(first),
            more: problems.total.saturating_sub(1),
        });
    }
    crate::parquet::Table::of_raw(&raw).write(out, format)?;
    Ok(ConvertReport {
        from: origin.display(),
        to: out.display().to_string(),
        rows: raw.rows,
        symbols: raw.symbols.len(),
        bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
    })
}

/// The outcome of checking one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The file checked.
    pub file: String,
    /// Rows that passed.
    pub rows_ok: u64,
    /// Problems found, up to the cap.
    pub problems: Vec<Problem>,
    /// All problems found.
    pub total_problems: usize,
    /// Kept-but-odd rows.
    pub quirks: reader::Quirks,
    /// Symbols found.
    pub symbols: usize,
    /// The inferred frequency, when it could be inferred.
    pub frequency: Option<crate::time::Frequency>,
}

/// Validates a file and reports every problem up to `cap`. Never modifies the file.
///
/// # Errors
/// The file cannot be opened.
pub fn check_file(path: &Path, cap: usize) -> Result<CheckReport, MarketError> {
    let origin = Origin::File(PathBuf::from(path));
    let display = origin.display();
    let (raw, mut problems) = read_origin(&origin, ReadOptions::check(cap), None)?;
    let frequency = match dataset::infer_frequency(&raw, &display) {
        Ok(f) => Some(f),
        Err(p) => {
            problems.total += 1;
            problems.list.push(p);
            None
        }
    };
    Ok(CheckReport {
        file: display,
        rows_ok: raw.rows,
        problems: problems.list,
        total_problems: problems.total,
        quirks: raw.quirks,
        symbols: raw.symbols.len(),
        frequency,
    })
}
