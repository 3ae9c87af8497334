//! Parquet in and out: datasets in the uniform columns read like their CSV twins, and tables
//! (datasets, metrics, daily returns, prediction panels) written as Parquet or CSV.
//!
//! A Parquet dataset has the columns `ts, symbol, open, high, low, close, volume` and optionally
//! `open_interest`, by name and in any order; pandas' index columns (`__index_level_0__`) are
//! ignored, anything else is refused by name. `ts` is a `DATE`, a `TIMESTAMP` (any unit; whole
//! seconds; a column of midnights is daily) or text as in the CSV format; `symbol` is text;
//! numbers are any floating or integer type. Nulls are allowed in `open_interest` only. Rows
//! obey the CSV format's rules (grouped by symbol, sorted by `ts`, one row per bar, positive
//! prices), checked by the same code, so a file converted either way loads to the same panel
//! bit for bit.
//!
//! Only the `parquet` crate's low-level column API is used (no Arrow): decoding goes straight
//! into the long-form columns the CSV reader fills. Snappy, zstd, LZ4 and gzip pages are read;
//! files are written with zstd.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, FloatType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnDescriptor, Type as SchemaType};

use crate::error::MarketError;
use crate::reader::{NUMBER_FIELDS, Problems, ProgressFn, RawData, ReadOptions, Rows, TsForm};
use crate::source::Origin;
use crate::time::{DAY, ParsedTs, parse_ts};

/// Whether a file name is a Parquet file's.
pub fn is_parquet_name(name: &str) -> bool {
    name.ends_with(".parquet")
}

/// Reads a Parquet dataset into long form, with the CSV reader's checks. Problems are located
/// by row (1-based), column (1-based position in the file's schema) and field.
pub fn read(
    origin: &Origin,
    opts: ReadOptions,
    progress: Option<ProgressFn<'_>>,
) -> (RawData, Problems) {
    let display = origin.display();
    let mut problems = Problems::new(&display, opts);
    let raw = match origin {
        Origin::File(p) => match std::fs::metadata(p) {
            Ok(m) => read_from(
                OwnHandles {
                    path: p.clone(),
                    len: m.len(),
                },
                &mut problems,
                progress,
            ),
            Err(e) => {
                problems.push(0, None, None, format!("cannot open the file: {e}"));
                None
            }
        },
        Origin::Embedded { bytes, .. } => {
            read_from(bytes::Bytes::from_static(bytes), &mut problems, progress)
        }
    };
    (raw.unwrap_or_default(), problems)
}

/// A file whose every reader has a handle (and an offset) of its own, so that columns can be
/// decoded on several threads at once (`File`'s readers share one offset).
struct OwnHandles {
    path: std::path::PathBuf,
    len: u64,
}

impl parquet::file::reader::Length for OwnHandles {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for OwnHandles {
    type T = std::io::BufReader<File>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use std::io::Seek;
        let mut f = File::open(&self.path)?;
        f.seek(std::io::SeekFrom::Start(start))?;
        Ok(std::io::BufReader::new(f))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        use std::io::{Read, Seek};
        let mut f = File::open(&self.path)?;
        f.seek(std::io::SeekFrom::Start(start))?;
        let mut buffer = vec![0; length];
        f.read_exact(&mut buffer)?;
        Ok(buffer.into())
    }
}

/// Where each uniform column sits in the file.
struct Layout {
    /// Column index per field: ts, symbol, open..volume, open_interest, then the extra
    /// numeric columns.
    index: Vec<Option<usize>>,
    /// Names of the extra numeric columns, in file order.
    extra: Vec<String>,
}

impl Layout {
    /// The name of field `f` (an index into [`Layout::index`]).
    fn name(&self, f: usize) -> &str {
        NAMES
            .get(f)
            .copied()
            .unwrap_or_else(|| &self.extra[f - NAMES.len()])
    }
}

const NAMES: [&str; 8] = [
    "ts",
    "symbol",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "open_interest",
];

fn read_from<R: ChunkReader + 'static>(
    input: R,
    problems: &mut Problems,
    progress: Option<ProgressFn<'_>>,
) -> Option<RawData> {
    let reader = match SerializedFileReader::new(input) {
        Ok(r) => r,
        Err(e) => {
            problems.push(
                0,
                None,
                None,
                format!(
                    "not a readable Parquet file ({e}); write it with pyarrow, polars or DuckDB, or convert a CSV with `lim data convert`"
                ),
            );
            return None;
        }
    };
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let layout = layout(schema.columns(), problems)?;
    let has_oi = layout.index[7].is_some();
    let col = |f: usize| layout.index[f].map(|i| i + 1);
    let mut rows = Rows::new(has_oi, "row");
    rows.set_extra(layout.extra.clone());
    let nfields = layout.index.len();
    let mut extra_row = vec![f64::NAN; layout.extra.len()];
    let total_rows = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
    rows.reserve(total_rows);
    let total_bytes: i64 = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.compressed_size())
        .sum();
    let mut done_bytes = 0i64;
    let mut row_number = 0u64;
    // Timestamps stored as times (not text) decide daily or intraday by the whole file.
    let mut forms = Vec::new();
    for g in 0..reader.num_row_groups() {
        let group = match reader.get_row_group(g) {
            Ok(group) => group,
            Err(e) => {
                problems.push(0, None, None, format!("row group {g} cannot be read: {e}"));
                return None;
            }
        };
        let n = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        // Two lanes of column decoders, one per core; symbol and ts lead them.
        let mut lanes: [Vec<(usize, Decoder)>; 2] = [Vec::new(), Vec::new()];
        let order = [1, 0].into_iter().chain(2..nfields);
        for (k, f) in order.enumerate() {
            let Some(i) = layout.index[f] else { continue };
            let desc = schema.column(i);
            let decoder = group
                .get_column_reader(i)
                .map_err(|e| format!("cannot be read in row group {g}: {e}"))
                .and_then(|c| Decoder::new(c, &desc, layout.name(f)));
            match decoder {
                Ok(d) => lanes[k % 2].push((f, d)),
                Err(message) => {
                    problems.push(0, Some(i + 1), Some(layout.name(f)), message);
                    return None;
                }
            }
        }
        let mut left = n;
        while left > 0 {
            let batch = left.min(BATCH);
            left -= batch;
            let [a, b] = &mut lanes;
            let decode = |lane: &mut Vec<(usize, Decoder)>| {
                lane.iter_mut()
                    .map(|(f, d)| (*f, d.next(batch)))
                    .collect::<Vec<_>>()
            };
            let (ra, rb) = std::thread::scope(|s| {
                let other = s.spawn(|| decode(b));
                (decode(a), other.join())
            });
            let Ok(rb) = rb else {
                problems.push(0, None, None, "a column decoder failed".into());
                return None;
            };
            let mut values: Vec<Option<Values>> = (0..nfields).map(|_| None).collect();
            for (f, v) in ra.into_iter().chain(rb) {
                match v {
                    Ok(v) if v.len() == batch => values[f] = Some(v),
                    Ok(v) => {
                        problems.push(
                            0,
                            col(f),
                            Some(layout.name(f)),
                            format!(
                                "holds {} values where its row group has {batch} more rows; the file is damaged",
                                v.len()
                            ),
                        );
                        return None;
                    }
                    Err(message) => {
                        problems.push(0, col(f), Some(layout.name(f)), message);
                        return None;
                    }
                }
            }
            let mut values = values.into_iter();
            let (Some(Some(ts)), Some(Some(Values::Text(sym, sym_present)))) =
                (values.next(), values.next())
            else {
                return None;
            };
            if let Some(r) = sym_present.iter().position(|p| !p) {
                problems.push(
                    row_number + r as u64 + 1,
                    col(1),
                    Some("symbol"),
                    "symbol is null, expected a name".into(),
                );
                return None;
            }
            let times = times(ts, col(0), row_number, &mut forms, problems)?;
            let nums: Vec<Option<(Vec<f64>, Vec<bool>)>> =
                values.map(|v| v.map(Values::into_numbers)).collect();
            for r in 0..batch {
                if problems.should_stop() {
                    return None;
                }
                row_number += 1;
                let line = row_number;
                let t = times.secs[r];
                let form = times.form(r);
                if !rows.form(line, form, col(0), problems) {
                    continue;
                }
                let shown = || times.shown(r);
                let Some(new_symbol) =
                    rows.order(line, sym[r].data(), t, &shown, (col(0), col(1)), problems)
                else {
                    continue;
                };
                let mut vals = [f64::NAN; 6];
                let mut ok = true;
                for (k, slot) in vals.iter_mut().enumerate() {
                    let Some((v, present)) = &nums[k] else {
                        continue;
                    };
                    if !present[r] {
                        if k == 5 {
                            continue; // open interest may be missing
                        }
                        let expected = if k < 4 {
                            "a positive price"
                        } else {
                            "a non-negative number"
                        };
                        problems.push(
                            line,
                            col(k + 2),
                            Some(NUMBER_FIELDS[k]),
                            format!("{} is null, expected {expected}", NUMBER_FIELDS[k]),
                        );
                        ok = false;
                        break;
                    }
                    let x = v[r];
                    if !x.is_finite() {
                        problems.push(
                            line,
                            col(k + 2),
                            Some(NUMBER_FIELDS[k]),
                            format!("{x} is not a finite number"),
                        );
                        ok = false;
                        break;
                    }
                    if !Rows::in_range(line, k, x, col(k + 2), problems) {
                        ok = false;
                        break;
                    }
                    *slot = x;
                }
                // Extra columns: any finite number; null for none.
                for (j, slot) in extra_row.iter_mut().enumerate() {
                    let k = 6 + j;
                    let Some((v, present)) = &nums[k] else {
                        continue;
                    };
                    *slot = if present[r] { v[r] } else { f64::NAN };
                    if ok && slot.is_infinite() {
                        problems.push(
                            line,
                            col(k + 2),
                            Some(layout.name(k + 2)),
                            format!("{slot} is not a finite number"),
                        );
                        ok = false;
                    }
                }
                if ok {
                    rows.push(line, sym[r].data(), new_symbol, t, vals, &extra_row);
                }
            }
        }
        done_bytes += reader.metadata().row_group(g).compressed_size();
        if let Some(p) = progress {
            p(u64::try_from(done_bytes.min(total_bytes)).unwrap_or(0));
        }
    }
    rows.finish();
    // A daily file stored as TIMESTAMPs is known to be daily only at its end.
    if let Some(form) = Times::file_form(&forms) {
        rows.out.ts_form = Some(form);
    }
    if rows.out.rows == 0 && problems.total == 0 {
        problems.push(0, None, None, "the file has no rows".to_string());
    }
    Some(rows.out)
}

/// Rows decoded per column at a time: memory stays bounded on files of any size.
const BATCH: usize = 1 << 18;

/// Finds the uniform columns by name.
fn layout(columns: &[Arc<ColumnDescriptor>], problems: &mut Problems) -> Option<Layout> {
    let mut index = vec![None; NAMES.len()];
    let mut extra = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let name = c.name();
        if name.starts_with("__index_level_") {
            continue; // pandas' index
        }
        if c.max_rep_level() > 0 {
            problems.push(
                0,
                Some(i + 1),
                Some(name),
                "is a list column; expected one value per row".to_string(),
            );
            return None;
        }
        match NAMES.iter().position(|n| *n == name) {
            Some(f) => index[f] = Some(i),
            None => match crate::reader::check_extra_name(name, &extra) {
                Ok(()) => {
                    extra.push(name.to_string());
                    index.push(Some(i));
                }
                Err(message) => {
                    problems.push(0, Some(i + 1), Some(name), message);
                    return None;
                }
            },
        }
    }
    if let Some(f) = (0..7).find(|&f| index[f].is_none()) {
        problems.push(
            0,
            None,
            Some(NAMES[f]),
            format!(
                "column '{}' is missing; a dataset needs {} (and may have open_interest)",
                NAMES[f],
                NAMES[..7].join(", ")
            ),
        );
        return None;
    }
    Some(Layout { index, extra })
}

/// A batch of one column, decoded, with a presence flag per row.
enum Values {
    Text(Vec<ByteArray>, Vec<bool>),
    Int(Vec<i64>, Vec<bool>, Kind),
    Real(Vec<f64>, Vec<bool>),
}

/// What an integer column holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Date,
    /// A timestamp in units of this many per second.
    Timestamp(i64),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Text(_, p) | Values::Int(_, p, _) | Values::Real(_, p) => p.len(),
        }
    }

    fn into_numbers(self) -> (Vec<f64>, Vec<bool>) {
        match self {
            #[allow(clippy::cast_precision_loss)]
            Values::Int(v, p, _) => (v.into_iter().map(|x| x as f64).collect(), p),
            Values::Real(v, p) => (v, p),
            // Refused by type when the decoder was made.
            Values::Text(_, p) => (vec![f64::NAN; p.len()], p),
        }
    }
}

/// A column chunk's typed reader.
enum Decoder {
    Text(ColumnReaderImpl<ByteArrayType>, i16),
    Int32(ColumnReaderImpl<Int32Type>, i16, Kind),
    Int64(ColumnReaderImpl<Int64Type>, i16, Kind),
    Float(ColumnReaderImpl<FloatType>, i16),
    Double(ColumnReaderImpl<DoubleType>, i16),
}

impl Decoder {
    /// A decoder for `field`, refusing a type the field cannot have (the message names the
    /// type found, the type expected and the fix).
    fn new(col: ColumnReader, desc: &ColumnDescriptor, field: &str) -> Result<Decoder, String> {
        let def = desc.max_def_level();
        let expect_number = field != "ts" && field != "symbol";
        let type_error = |found: &str| {
            let expected = match field {
                "ts" => "DATE, TIMESTAMP or text like 2024-01-02 / 2024-01-02T09:30:00Z",
                "symbol" => "text (STRING)",
                _ => "a number (DOUBLE, FLOAT or an integer)",
            };
            format!(
                "has type {found}, expected {expected}; cast the column before writing the file"
            )
        };
        let logical = desc.logical_type_ref();
        match col {
            ColumnReader::ByteArrayColumnReader(r) => {
                let is_text = matches!(logical, Some(LogicalType::String | LogicalType::Enum))
                    || matches!(
                        desc.converted_type(),
                        ConvertedType::UTF8 | ConvertedType::ENUM
                    )
                    || logical.is_none();
                if expect_number || !is_text {
                    return Err(type_error("BYTE_ARRAY"));
                }
                Ok(Decoder::Text(r, def))
            }
            ColumnReader::DoubleColumnReader(r) if expect_number => Ok(Decoder::Double(r, def)),
            ColumnReader::FloatColumnReader(r) if expect_number => Ok(Decoder::Float(r, def)),
            ColumnReader::Int32ColumnReader(r) => {
                let date = matches!(logical, Some(LogicalType::Date))
                    || desc.converted_type() == ConvertedType::DATE;
                if (field == "ts") != date || field == "symbol" {
                    return Err(type_error(if date { "DATE" } else { "INT32" }));
                }
                let kind = if date { Kind::Date } else { Kind::Plain };
                Ok(Decoder::Int32(r, def, kind))
            }
            ColumnReader::Int64ColumnReader(r) => {
                let kind = match logical {
                    Some(LogicalType::Timestamp(t)) => Kind::Timestamp(per_second(&t.unit)),
                    _ => match desc.converted_type() {
                        ConvertedType::TIMESTAMP_MILLIS => Kind::Timestamp(1_000),
                        ConvertedType::TIMESTAMP_MICROS => Kind::Timestamp(1_000_000),
                        _ => Kind::Plain,
                    },
                };
                let is_time = matches!(kind, Kind::Timestamp(_));
                if (field == "ts") != is_time || field == "symbol" {
                    return Err(type_error(if is_time { "TIMESTAMP" } else { "INT64" }));
                }
                Ok(Decoder::Int64(r, def, kind))
            }
            ColumnReader::BoolColumnReader(_) => Err(type_error("BOOLEAN")),
            ColumnReader::Int96ColumnReader(_) => Err(type_error(
                "INT96 (a legacy timestamp; pyarrow: coerce_timestamps='us')",
            )),
            ColumnReader::FixedLenByteArrayColumnReader(_) => {
                Err(type_error("FIXED_LEN_BYTE_ARRAY"))
            }
            ColumnReader::DoubleColumnReader(_) => Err(type_error("DOUBLE")),
            ColumnReader::FloatColumnReader(_) => Err(type_error("FLOAT")),
        }
    }

    /// The next `n` rows (fewer at the chunk's end), nulls spread by definition level.
    fn next(&mut self, n: usize) -> Result<Values, String> {
        macro_rules! read {
            ($r:expr, $def:expr, $t:ty) => {{
                let (r, def) = ($r, $def);
                let mut values: Vec<$t> = Vec::with_capacity(n);
                let mut defs: Vec<i16> = Vec::with_capacity(if def > 0 { n } else { 0 });
                let mut got = 0;
                while got < n {
                    let d = if def > 0 { Some(&mut defs) } else { None };
                    match r.read_records(n - got, d, None, &mut values) {
                        Ok((0, _, _)) => break,
                        Ok((records, _, _)) => got += records,
                        Err(e) => return Err(format!("cannot be decoded: {e}")),
                    }
                }
                let present: Vec<bool> = if def > 0 {
                    defs.iter().map(|&d| d == def).collect()
                } else {
                    vec![true; values.len()]
                };
                (spread(values, &present), present)
            }};
        }
        Ok(match self {
            Decoder::Text(r, def) => {
                let (v, p) = read!(r, *def, ByteArray);
                Values::Text(v, p)
            }
            Decoder::Double(r, def) => {
                let (v, p) = read!(r, *def, f64);
                Values::Real(v, p)
            }
            Decoder::Float(r, def) => {
                let (v, p) = read!(r, *def, f32);
                Values::Real(v.into_iter().map(f64::from).collect(), p)
            }
            Decoder::Int32(r, def, kind) => {
                let kind = *kind;
                let (v, p) = read!(r, *def, i32);
                Values::Int(v.into_iter().map(i64::from).collect(), p, kind)
            }
            Decoder::Int64(r, def, kind) => {
                let kind = *kind;
                let (v, p) = read!(r, *def, i64);
                Values::Int(v, p, kind)
            }
        })
    }
}

/// Dense values and presence flags to one slot per row (nulls hold the default).
fn spread<T: Default + Clone>(values: Vec<T>, present: &[bool]) -> Vec<T> {
    if values.len() == present.len() {
        return values;
    }
    let mut out = Vec::with_capacity(present.len());
    let mut it = values.into_iter();
    for &p in present {
        out.push(if p {
            it.next().unwrap_or_default()
        } else {
            T::default()
        });
    }
    out
}

fn per_second(unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::MILLIS => 1_000,
        TimeUnit::MICROS => 1_000_000,
        TimeUnit::NANOS => 1_000_000_000,
    }
}

/// A batch's bar times in seconds and what the form of each is.
struct Times {
    secs: Vec<i64>,
    /// Text timestamps (each row's form is its own, in `forms`), else `None`.
    text: Option<Vec<ByteArray>>,
    /// Each text timestamp's form.
    forms: Vec<TsForm>,
    /// The form of stored times: dates, or instants (daily or not is decided per file).
    stored: TsForm,
}

impl Times {
    fn form(&self, r: usize) -> TsForm {
        match self.forms.get(r) {
            Some(f) => *f,
            // Instants are checked for a consistent form at the end (see `file_form`); a
            // day's rows may hold midnight and non-midnight instants alike.
            None => TsForm::Date,
        }
    }

    fn shown(&self, r: usize) -> String {
        match &self.text {
            Some(t) => text(&t[r]),
            None => {
                let t = crate::time::Timestamp(self.secs[r]);
                if self.stored == TsForm::Date || self.secs[r].rem_euclid(DAY) == 0 {
                    t.date_string()
                } else {
                    t.datetime_string()
                }
            }
        }
    }

    /// The file's form from the stored-time batches' forms (`None` for text timestamps).
    fn file_form(forms: &[TsForm]) -> Option<TsForm> {
        if forms.is_empty() {
            None
        } else if forms.contains(&TsForm::DateTime) {
            Some(TsForm::DateTime)
        } else {
            Some(TsForm::Date)
        }
    }
}

/// Bar times in seconds of a batch; `forms` collects the stored-time batches' forms.
fn times(
    ts: Values,
    column: Option<usize>,
    first_row: u64,
    forms: &mut Vec<TsForm>,
    problems: &mut Problems,
) -> Option<Times> {
    let null = |problems: &mut Problems, r: usize| {
        problems.push(
            first_row + r as u64 + 1,
            column,
            Some("ts"),
            "ts is null, expected a bar time".to_string(),
        );
    };
    match ts {
        Values::Text(v, p) => {
            let mut secs = Vec::with_capacity(v.len());
            let mut row_forms = Vec::with_capacity(v.len());
            for (r, (b, present)) in v.iter().zip(&p).enumerate() {
                if !present {
                    null(problems, r);
                    return None;
                }
                match parse_ts(b.data()) {
                    Some(ParsedTs::Date(t)) => {
                        secs.push(t.0);
                        row_forms.push(TsForm::Date);
                    }
                    Some(ParsedTs::DateTime(t)) => {
                        secs.push(t.0);
                        row_forms.push(TsForm::DateTime);
                    }
                    None => {
                        problems.push(
                            first_row + r as u64 + 1,
                            column,
                            Some("ts"),
                            format!(
                                "'{}' is not a timestamp, expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)",
                                text(b)
                            ),
                        );
                        return None;
                    }
                }
            }
            Some(Times {
                secs,
                text: Some(v),
                forms: row_forms,
                stored: TsForm::Date,
            })
        }
        Values::Int(v, p, kind) => {
            if let Some(r) = p.iter().position(|x| !x) {
                null(problems, r);
                return None;
            }
            let secs: Vec<i64> = match kind {
                Kind::Date => v.iter().map(|d| d * DAY).collect(),
                Kind::Timestamp(per) => {
                    if let Some(r) = v.iter().position(|x| x.rem_euclid(per) != 0) {
                        problems.push(
                            first_row + r as u64 + 1,
                            column,
                            Some("ts"),
                            format!(
                                "the timestamp at row {} has a fraction of a second; bars start on whole seconds",
                                first_row + r as u64 + 1
                            ),
                        );
                        return None;
                    }
                    v.iter().map(|x| x.div_euclid(per)).collect()
                }
                Kind::Plain => return None,
            };
            let daily = kind == Kind::Date || secs.iter().all(|s| s.rem_euclid(DAY) == 0);
            let stored = if daily {
                TsForm::Date
            } else {
                TsForm::DateTime
            };
            forms.push(stored);
            Some(Times {
                secs,
                text: None,
                forms: Vec::new(),
                stored,
            })
        }
        Values::Real(..) => None,
    }
}

fn text(b: &ByteArray) -> String {
    String::from_utf8_lossy(b.data()).into_owned()
}

/// A column of a [`Table`].
#[derive(Debug, Clone)]
pub enum Column {
    /// Numbers; NaN is written as null (Parquet) or an empty field (CSV).
    Real(Vec<f64>),
    /// Whole numbers.
    Int(Vec<i64>),
    /// Text.
    Text(Vec<String>),
    /// Times in seconds since the epoch: dates (`DATE`, `YYYY-MM-DD`) or UTC date-times
    /// (`TIMESTAMP` in microseconds, `YYYY-MM-DDTHH:MM:SSZ`).
    Time(Vec<i64>, TsForm),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Real(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Time(v, _) => v.len(),
        }
    }
}

/// A table to write: named columns of equal length.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The columns, in order.
    pub columns: Vec<(String, Column)>,
}

/// How to write a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Apache Parquet (zstd pages).
    Parquet,
    /// Comma-separated text with a header.
    Csv,
}

impl Format {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

impl Table {
    /// Adds a column.
    pub fn with(mut self, name: &str, column: Column) -> Table {
        self.columns.push((name.to_string(), column));
        self
    }

    /// Rows in the table.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    /// The uniform format's table of a dataset in long form.
    pub fn of_raw(raw: &RawData) -> Table {
        let mut symbols = Vec::with_capacity(raw.ts.len());
        for (i, s) in raw.symbols.iter().enumerate() {
            symbols.extend(std::iter::repeat_n(s.clone(), raw.run(i).len()));
        }
        let form = raw.ts_form.unwrap_or(TsForm::Date);
        let mut t = Table::default()
            .with("ts", Column::Time(raw.ts.clone(), form))
            .with("symbol", Column::Text(symbols));
        let n = if raw.has_open_interest { 6 } else { 5 };
        for (k, name) in NUMBER_FIELDS.iter().enumerate().take(n) {
            t = t.with(name, Column::Real(raw.cols[k].clone()));
        }
        for (name, col) in raw.extra_names.iter().zip(&raw.extra) {
            t = t.with(name, Column::Real(col.clone()));
        }
        t
    }

    /// Writes the table to `path` in `format`, replacing the file by rename so a reader never
    /// sees half of it.
    ///
    /// # Errors
    /// Columns of unequal length, or the file cannot be written.
    pub fn write(&self, path: &Path, format: Format) -> Result<(), MarketError> {
        let n = self.rows();
        if let Some((name, _)) = self.columns.iter().find(|(_, c)| c.len() != n) {
            return Err(MarketError::Query(format!(
                "column '{name}' has another length than the table's {n} rows"
            )));
        }
        let io = |source: std::io::Error| MarketError::Io {
            action: "cannot write table",
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension(format!("{}.partial", format.extension()));
        match format {
            Format::Csv => std::fs::write(&tmp, self.to_csv()).map_err(io)?,
            Format::Parquet => {
                let file = File::create(&tmp).map_err(io)?;
                self.write_parquet(file).map_err(|e| MarketError::Io {
                    action: "cannot write Parquet table",
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            }
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The table as CSV text: numbers in their shortest round-tripping form, NaN as empty.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| n.as_str()).collect();
        out.push_str(&names.join(","));
        out.push('\n');
        for r in 0..self.rows() {
            for (i, (_, c)) in self.columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match c {
                    Column::Real(v) if v[r].is_nan() => {}
                    Column::Real(v) => out.push_str(&v[r].to_string()),
                    Column::Int(v) => out.push_str(&v[r].to_string()),
                    Column::Text(v) => out.push_str(&csv_field(&v[r])),
                    Column::Time(v, TsForm::Date) => {
                        out.push_str(&crate::time::Timestamp(v[r]).date_string());
                    }
                    Column::Time(v, TsForm::DateTime) => {
                        out.push_str(&crate::time::Timestamp(v[r]).datetime_string());
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    fn write_parquet(&self, file: File) -> parquet::errors::Result<()> {
        let mut fields = Vec::new();
        for (name, c) in &self.columns {
            let (physical, logical, optional) = match c {
                Column::Real(v) => (PhysicalType::DOUBLE, None, v.iter().any(|x| x.is_nan())),
                Column::Int(_) => (PhysicalType::INT64, None, false),
                Column::Text(_) => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String), false),
                Column::Time(_, TsForm::Date) => {
                    (PhysicalType::INT32, Some(LogicalType::Date), false)
                }
                Column::Time(_, TsForm::DateTime) => (
                    PhysicalType::INT64,
                    Some(LogicalType::timestamp(true, TimeUnit::MICROS)),
                    false,
                ),
            };
            let repetition = if optional {
                parquet::basic::Repetition::OPTIONAL
            } else {
                parquet::basic::Repetition::REQUIRED
            };
            fields.push(Arc::new(
                SchemaType::primitive_type_builder(name, physical)
                    .with_repetition(repetition)
                    .with_logical_type(logical)
                    .build()?,
            ));
        }
        let schema = Arc::new(
            SchemaType::group_type_builder("lim")
                .with_fields(fields)
                .build()?,
        );
        // Dictionary pages (the default) beat byte-stream-split doubles here: prices of a
        // few significant digits repeat (60 against 72 MB for the US equities).
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .set_created_by(format!("lim {}", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let nullable: Vec<bool> = self
            .columns
            .iter()
            .map(|(_, c)| matches!(c, Column::Real(v) if v.iter().any(|x| x.is_nan())))
            .collect();
        let mut writer = SerializedFileWriter::new(file, schema, props)?;
        const GROUP: usize = 1 << 20;
        let n = self.rows();
        let mut start = 0;
        while start < n || (n == 0 && start == 0) {
            let end = (start + GROUP).min(n);
            let mut group = writer.next_row_group()?;
            for ((_, c), &nullable) in self.columns.iter().zip(&nullable) {
                let Some(mut col) = group.next_column()? else {
                    break;
                };
                match c {
                    Column::Real(v) => {
                        let part = &v[start..end];
                        let w = col.typed::<DoubleType>();
                        if nullable {
                            let defs: Vec<i16> =
                                part.iter().map(|x| i16::from(!x.is_nan())).collect();
                            let dense: Vec<f64> =
                                part.iter().copied().filter(|x| !x.is_nan()).collect();
                            w.write_batch(&dense, Some(&defs), None)?;
                        } else {
                            w.write_batch(part, None, None)?;
                        }
                    }
                    Column::Int(v) => {
                        col.typed::<Int64Type>()
                            .write_batch(&v[start..end], None, None)?;
                    }
                    Column::Text(v) => {
                        let part: Vec<ByteArray> = v[start..end]
                            .iter()
                            .map(|s| ByteArray::from(s.as_str()))
                            .collect();
                        col.typed::<ByteArrayType>()
                            .write_batch(&part, None, None)?;
                    }
                    Column::Time(v, TsForm::Date) => {
                        let days: Vec<i32> = v[start..end]
                            .iter()
                            .map(|s| i32::try_from(s.div_euclid(DAY)).unwrap_or(i32::MAX))
                            .collect();
                        col.typed::<Int32Type>().write_batch(&days, None, None)?;
                    }
                    Column::Time(v, TsForm::DateTime) => {
                        let micros: Vec<i64> =
                            v[start..end].iter().map(|s| s * 1_000_000).collect();
                        col.typed::<Int64Type>().write_batch(&micros, None, None)?;
                    }
                }
                col.close()?;
            }
            group.close()?;
            if end == n {
                break;
            }
            start = end;
        }
        writer.close()?;
        Ok(())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Column names, and rows of text cells (`None`: null).
pub type TextTable = (Vec<String>, Vec<Vec<Option<String>>>);

/// A Parquet file whose columns are all text (nulls allowed), as column names and rows: what a
/// small reference table such as `groups.parquet` holds.
///
/// # Errors
/// The file cannot be read, or a column is not text (named, with the fix).
pub fn read_text_table(path: &Path) -> Result<TextTable, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let reader = SerializedFileReader::new(OwnHandles {
        path: path.to_path_buf(),
        len,
    })
    .map_err(|e| format!("not a readable Parquet file ({e})"))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let names: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .filter(|n| !n.starts_with("__index_level_"))
        .collect();
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(|e| e.to_string())?;
        let n = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        let mut cols = Vec::new();
        for (i, c) in schema.columns().iter().enumerate() {
            if c.name().starts_with("__index_level_") {
                continue;
            }
            let col = group.get_column_reader(i).map_err(|e| e.to_string())?;
            let mut d = Decoder::new(col, c, "symbol")
                .map_err(|e| format!("column {} ({}) {e}", i + 1, c.name()))?;
            match d.next(n)? {
                Values::Text(v, p) => cols.push(
                    v.iter()
                        .zip(p)
                        .map(|(b, p)| p.then(|| text(b)))
                        .collect::<Vec<_>>(),
                ),
                _ => return Err(format!("column {} ({}) is not text", i + 1, c.name())),
            }
        }
        for r in 0..n {
            rows.push(cols.iter().map(|c| c[r].clone()).collect());
        }
    }
    Ok((names, rows))
}
