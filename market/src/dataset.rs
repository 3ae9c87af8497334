//! A dataset in dense form: one time axis, one column per symbol, one matrix per field.
//!
//! Matrices are column-major (each symbol's history is contiguous), which suits the
//! time-series work that dominates downstream, and makes a symbol subset or a date range a
//! plain slice copy. Missing bars are NaN.

use std::collections::BTreeMap;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::instrument::{Instrument, Manifest, classify};
use crate::reader::{Problem, Quirks, RawData, TsForm};
use crate::time::{Frequency, Timestamp};

/// A panel field. The first six are stored; the next four are derived when a panel is built;
/// [`Field::Extra`] is a further numeric column of a data file (e.g. `cap`), stored.
///
/// Serialized as its name (`"close"`, `"cap"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Bar open.
    Open,
    /// Bar high.
    High,
    /// Bar low.
    Low,
    /// Bar close.
    Close,
    /// Traded volume in the file's units.
    Volume,
    /// Open interest (futures); NaN where the source has none.
    OpenInterest,
    /// Close-to-close simple return against the symbol's previous bar (roll-clean for futures).
    Returns,
    /// Close-to-close log return (roll-clean for futures).
    LogReturns,
    /// Typical-price proxy for VWAP: (high + low + close) / 3.
    Vwap,
    /// close × volume.
    DollarVolume,
    /// A numeric column of the data file beyond the format's own (see [`Field::extra`]).
    Extra(&'static str),
}

/// Names of extra columns, each leaked once so that [`Field`] stays `Copy`: a process meets a
/// handful of them.
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = names.get(name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(n);
    n
}

impl Serialize for Field {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Field::parse(&name).unwrap_or_else(|| Field::extra(&name)))
    }
}

impl Field {
    /// Fields held in files and caches, in storage order.
    pub const STORED: [Field; 6] = [
        Field::Open,
        Field::High,
        Field::Low,
        Field::Close,
        Field::Volume,
        Field::OpenInterest,
    ];
    /// Every field.
    pub const ALL: [Field; 10] = [
        Field::Open,
        Field::High,
        Field::Low,
        Field::Close,
        Field::Volume,
        Field::OpenInterest,
        Field::Returns,
        Field::LogReturns,
        Field::Vwap,
        Field::DollarVolume,
    ];

    /// The name used in files, expressions and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Field::Open => "open",
            Field::High => "high",
            Field::Low => "low",
            Field::Close => "close",
            Field::Volume => "volume",
            Field::OpenInterest => "open_interest",
            Field::Returns => "returns",
            Field::LogReturns => "log_returns",
            Field::Vwap => "vwap",
            Field::DollarVolume => "dollar_volume",
            Field::Extra(name) => name,
        }
    }

    /// Parses the name of one of the format's own fields ([`Field::ALL`]).
    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The extra numeric column `name` (which should not be one of [`Field::ALL`]).
    pub fn extra(name: &str) -> Field {
        Field::Extra(intern(name))
    }

    /// Whether data files hold it (as opposed to deriving it).
    pub fn is_stored(self) -> bool {
        matches!(self, Field::Extra(_)) || self.stored_index().is_some()
    }

    /// Index into storage order, for stored fields.
    pub fn stored_index(self) -> Option<usize> {
        Field::STORED.iter().position(|f| *f == self)
    }

    /// Stored fields needed to compute this one.
    pub fn inputs(self) -> Vec<Field> {
        match self {
            Field::Returns | Field::LogReturns => vec![Field::Close],
            Field::Vwap => vec![Field::High, Field::Low, Field::Close],
            Field::DollarVolume => vec![Field::Close, Field::Volume],
            stored => vec![stored],
        }
    }
}

/// What is known of one symbol without loading its prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolMeta {
    /// Symbol, exchange and asset class.
    pub instrument: Instrument,
    /// First bar.
    pub first: Timestamp,
    /// Last bar.
    pub last: Timestamp,
    /// Bars present.
    pub rows: u64,
    /// Bars on the dataset's calendar between `first` and `last` with no row.
    pub gaps: u64,
}

/// A dataset's summary: everything `lim data list` needs, kept in the cache header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// Dataset name: the file name without `.csv` / `.csv.gz`.
    pub name: String,
    /// The file as the user knows it.
    pub file: String,
    /// Inferred bar frequency.
    pub frequency: Frequency,
    /// Whether the file has an `open_interest` column with at least one value.
    pub has_open_interest: bool,
    /// Data rows.
    pub rows: u64,
    /// First bar of any symbol.
    pub first: Timestamp,
    /// Last bar of any symbol.
    pub last: Timestamp,
    /// Distinct bar times (the length of the time axis).
    pub times: usize,
    /// Rows kept but odd.
    pub quirks: Quirks,
    /// Per-symbol summary, in file order.
    pub symbols: Vec<SymbolMeta>,
    /// The sidecar manifest, when there is one.
    pub manifest: Option<Manifest>,
    /// Numeric columns beyond the format's own (e.g. `cap`), in file order: fields too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_fields: Vec<String>,
}

impl DatasetMeta {
    /// The stored fields of the file: the format's own (open interest when it has a column)
    /// and its extra columns.
    pub fn stored_fields(&self) -> Vec<Field> {
        Field::STORED
            .into_iter()
            .filter(|f| *f != Field::OpenInterest || self.has_open_interest)
            .chain(self.extra_fields.iter().map(|n| Field::extra(n)))
            .collect()
    }
}

impl DatasetMeta {
    /// Position of a symbol.
    pub fn symbol_index(&self, symbol: &str) -> Option<usize> {
        self.symbols
            .iter()
            .position(|s| s.instrument.symbol == symbol)
    }
}

/// A dataset with some of its stored fields in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The summary.
    pub meta: DatasetMeta,
    /// The time axis: every bar time of any symbol, ascending.
    pub times: Vec<Timestamp>,
    /// Loaded stored fields, each `symbols × times`, column-major.
    pub fields: BTreeMap<Field, Vec<f64>>,
}

impl Dataset {
    /// Number of bar times.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether the time axis is empty.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// One symbol's series of a loaded field.
    pub fn series(&self, field: Field, symbol: usize) -> Option<&[f64]> {
        let t = self.times.len();
        self.fields
            .get(&field)
            .map(|v| &v[symbol * t..(symbol + 1) * t])
    }
}

/// Infers the bar frequency: daily for dates; for date-times, the most common step between a
/// symbol's consecutive bars. A symbol whose own step differs is a mixed-frequency problem.
pub(crate) fn infer_frequency(raw: &RawData, file: &str) -> Result<Frequency, Problem> {
    match raw.ts_form {
        None | Some(TsForm::Date) => return Ok(Frequency::Daily),
        Some(TsForm::DateTime) => {}
    }
    let mut overall: HashMap<i64, u64> = HashMap::new();
    let mut per_symbol: Vec<(usize, i64)> = Vec::new();
    for s in 0..raw.symbols.len() {
        let ts = &raw.ts[raw.run(s)];
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for w in ts.windows(2) {
            *counts.entry(w[1] - w[0]).or_default() += 1;
        }
        if let Some((&step, _)) = counts.iter().max_by_key(|(step, n)| (**n, -**step)) {
            per_symbol.push((s, step));
            for (k, v) in counts {
                *overall.entry(k).or_default() += v;
            }
        }
    }
    let Some((&step, _)) = overall.iter().max_by_key(|(step, n)| (**n, -**step)) else {
        return Ok(Frequency::Daily);
    };
    if step <= 0 || step >= crate::time::DAY || crate::time::DAY % step != 0 {
        return Err(Problem {
            file: file.to_string(),
            line: 0,
            column: None,
            field: Some("ts".into()),
            message: format!(
                "bars are mostly {step} s apart, which does not divide a day; expected 1min, 5min, 15min, 30min, 1h or similar"
            ),
        });
    }
    let freq = Frequency::Intraday(step as u32);
    if let Some(&(s, other)) = per_symbol.iter().find(|(_, st)| *st != step) {
        return Err(Problem {
            file: file.to_string(),
            line: 0,
            column: None,
            field: Some("ts".into()),
            message: format!(
                "mixed frequencies: most bars are {freq} apart but '{}' moves in {} steps; put each frequency in its own file",
                raw.symbols[s],
                Frequency::Intraday(other as u32)
            ),
        });
    }
    Ok(freq)
}

/// Builds the union time axis and each row's position on it.
pub(crate) fn align(raw: &RawData) -> (Vec<i64>, Vec<u32>) {
    let mut axis: Vec<i64> = Vec::new();
    let mut merged: Vec<i64> = Vec::new();
    for s in 0..raw.symbols.len() {
        let run = &raw.ts[raw.run(s)];
        // Each run is sorted; merge it into the sorted axis, skipping the common case where it
        // adds nothing new.
        let (mut i, mut j) = (0, 0);
        merged.clear();
        merged.reserve(axis.len() + run.len());
        while i < axis.len() || j < run.len() {
            let take_axis = j >= run.len() || (i < axis.len() && axis[i] <= run[j]);
            if take_axis {
                if j < run.len() && axis[i] == run[j] {
                    j += 1;
                }
                merged.push(axis[i]);
                i += 1;
            } else {
                merged.push(run[j]);
                j += 1;
            }
        }
        if merged.len() != axis.len() {
            std::mem::swap(&mut axis, &mut merged);
        }
    }
    let mut pos = vec![0u32; raw.ts.len()];
    for s in 0..raw.symbols.len() {
        let r = raw.run(s);
        let mut k = 0usize;
        for (row, &t) in r.clone().zip(&raw.ts[r]) {
            while axis[k] < t {
                k += 1;
            }
            pos[row] = k as u32;
        }
    }
    (axis, pos)
}

/// Scatters one long column onto the dense `symbols × times` matrix.
pub(crate) fn scatter(raw: &RawData, col: &[f64], pos: &[u32], t: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; raw.symbols.len() * t];
    for s in 0..raw.symbols.len() {
        let dst = &mut out[s * t..(s + 1) * t];
        for row in raw.run(s) {
            dst[pos[row] as usize] = col[row];
        }
    }
    out
}

/// Summarises a parsed file.
pub(crate) fn summarize(
    raw: &RawData,
    name: &str,
    file: &str,
    frequency: Frequency,
    axis: &[i64],
    pos: &[u32],
    manifest: Option<Manifest>,
) -> DatasetMeta {
    let symbols: Vec<SymbolMeta> = (0..raw.symbols.len())
        .map(|s| {
            let r = raw.run(s);
            let (first, last) = (raw.ts[r.start], raw.ts[r.end - 1]);
            let span = (pos[r.end - 1] - pos[r.start]) as u64 + 1;
            SymbolMeta {
                instrument: classify(&raw.symbols[s], name, manifest.as_ref()),
                first: Timestamp(first),
                last: Timestamp(last),
                rows: r.len() as u64,
                gaps: span - r.len() as u64,
            }
        })
        .collect();
    DatasetMeta {
        name: name.to_string(),
        file: file.to_string(),
        frequency,
        has_open_interest: raw.has_open_interest && raw.cols[5].iter().any(|v| !v.is_nan()),
        rows: raw.rows,
        first: Timestamp(axis.first().copied().unwrap_or(0)),
        last: Timestamp(axis.last().copied().unwrap_or(0)),
        times: axis.len(),
        quirks: raw.quirks,
        symbols,
        manifest,
        extra_fields: raw.extra_names.clone(),
    }
}
