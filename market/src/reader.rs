//! The uniform CSV reader: one pass over a (possibly gzipped) file into per-symbol columns.
//!
//! The format (see `docs/data.md`): header `ts,symbol,open,high,low,close,volume[,open_interest]`
//! then any extra numeric columns (e.g. `cap`), rows grouped by symbol and sorted by `ts` within
//! a symbol, one row per (symbol, ts).
//! Gzip input is decompressed on a second thread while this one parses, so the two cores
//! overlap. Problems are collected as values with file, line, column and field, up to a cap.

use std::fmt;
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread;

use serde::{Deserialize, Serialize};

use crate::time::{ParsedTs, parse_ts};

const BASE_HEADER: [&str; 7] = ["ts", "symbol", "open", "high", "low", "close", "volume"];
const EXPECTED_HEADER: &str =
    "ts,symbol,open,high,low,close,volume[,open_interest][,extra numeric columns]";
const CHUNK: usize = 1 << 20;

/// One thing wrong with a data file, located as precisely as the reader can.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The file's name as the user gave it.
    pub file: String,
    /// 1-based line number; 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based column of the offending field, when there is one.
    pub column: Option<usize>,
    /// The field's name (`close`, `ts`, ...), when there is one.
    pub field: Option<String>,
    /// What was found and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data file '{}'", self.file)?;
        if self.line > 0 {
            write!(f, " {} {}", line_unit(&self.file), self.line)?;
        }
        if let Some(c) = self.column {
            write!(f, ", column {c}")?;
        }
        if let Some(field) = &self.field {
            write!(f, " ({field})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a problem's `line` counts in a file: lines of a CSV file (the header is line 1),
/// rows of a Parquet file (the first row is row 1).
pub(crate) fn line_unit(file: &str) -> &'static str {
    if file.ends_with(".parquet") {
        "row"
    } else {
        "line"
    }
}

/// How timestamps were written in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsForm {
    /// `YYYY-MM-DD`: daily bars.
    Date,
    /// `YYYY-MM-DDTHH:MM:SSZ`: intraday bars, UTC open time.
    DateTime,
}

/// Rows kept but worth knowing about; they are not errors (see the data README's "quirks").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quirks {
    /// Rows where high < max(open, close) or low > min(open, close) or high < low.
    pub ohlc_inconsistent: u64,
    /// Rows with zero volume.
    pub zero_volume: u64,
}

/// A parsed file in long form: per-symbol runs of rows, one column per field.
#[derive(Debug, Default)]
pub struct RawData {
    /// Whether the header carried `open_interest`.
    pub has_open_interest: bool,
    /// How timestamps were written.
    pub ts_form: Option<TsForm>,
    /// Symbols in file order.
    pub symbols: Vec<String>,
    /// Row index where each symbol's run starts; `symbols.len() + 1` entries.
    pub starts: Vec<usize>,
    /// Bar open times, seconds since the epoch.
    pub ts: Vec<i64>,
    /// open, high, low, close, volume, open_interest (the last empty when absent).
    pub cols: [Vec<f64>; 6],
    /// Names of the numeric columns beyond the format's own, in file order.
    pub extra_names: Vec<String>,
    /// Their values, one column per name (NaN where a row leaves it empty).
    pub extra: Vec<Vec<f64>>,
    /// Data rows read (kept).
    pub rows: u64,
    /// Kept-but-odd rows.
    pub quirks: Quirks,
}

impl RawData {
    /// The rows of symbol `i`.
    pub fn run(&self, i: usize) -> std::ops::Range<usize> {
        self.starts[i]..self.starts[i + 1]
    }
}

/// Collects problems up to a cap and counts the rest.
#[derive(Debug)]
pub struct Problems {
    /// The problems kept, in file order.
    pub list: Vec<Problem>,
    /// All problems found, including those past the cap.
    pub total: usize,
    cap: usize,
    stop_at_cap: bool,
    file: String,
}

impl Problems {
    pub(crate) fn new(file: &str, opts: ReadOptions) -> Problems {
        Problems {
            list: Vec::new(),
            total: 0,
            cap: opts.max_problems.max(1),
            stop_at_cap: opts.stop_at_cap,
            file: file.to_string(),
        }
    }

    pub(crate) fn push(
        &mut self,
        line: u64,
        column: Option<usize>,
        field: Option<&str>,
        message: String,
    ) {
        self.total += 1;
        if self.list.len() < self.cap {
            self.list.push(Problem {
                file: self.file.clone(),
                line,
                column,
                field: field.map(str::to_string),
                message,
            });
        }
    }

    pub(crate) fn should_stop(&self) -> bool {
        self.stop_at_cap && self.total >= self.cap
    }
}

/// How far a read got, for progress display.
pub type ProgressFn<'a> = &'a (dyn Fn(u64) + Sync);

/// Options of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Keep at most this many problems.
    pub max_problems: usize,
    /// Stop reading once `max_problems` are found (loading); keep counting otherwise (checking).
    pub stop_at_cap: bool,
}

impl ReadOptions {
    /// Loading: stop at the first problem.
    pub const LOAD: ReadOptions = ReadOptions {
        max_problems: 1,
        stop_at_cap: true,
    };
    /// Checking: list up to `cap` problems and count all.
    pub fn check(cap: usize) -> ReadOptions {
        ReadOptions {
            max_problems: cap,
            stop_at_cap: false,
        }
    }
}

/// Reads a whole file (gzip detected by its magic bytes) into long form.
///
/// `bytes_read` is called now and then with the count of *input* bytes consumed so far.
///
/// `size_hint` is the expected decompressed size in bytes, if known: the columns are then
/// reserved once after the first chunk instead of growing by doubling, which saves both time
/// and peak memory.
pub fn read(
    input: Box<dyn Read + Send>,
    file: &str,
    opts: ReadOptions,
    size_hint: Option<u64>,
    progress: Option<ProgressFn<'_>>,
) -> (RawData, Problems) {
    let mut problems = Problems::new(file, opts);
    let mut parser = Parser::new();
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(4);
    thread::scope(|scope| {
        scope.spawn(move || produce(input, tx));
        consume(rx, &mut parser, &mut problems, size_hint, progress);
    });
    parser.finish(&mut problems);
    (parser.out.out, problems)
}

/// Sends decompressed chunks; stops quietly when the consumer hangs up.
fn produce(mut input: Box<dyn Read + Send>, tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>) {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
    let head = io::Cursor::new(magic[..got].to_vec());
    let mut reader: Box<dyn Read> = if got == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 16, head.chain(input)),
        ))
    } else {
        Box::new(head.chain(input))
    };
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.truncate(filled);
                    let _ = tx.send(Ok(buf));
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        buf.truncate(filled);
        let done = filled < CHUNK;
        if tx.send(Ok(buf)).is_err() || done {
            return;
        }
    }
}

fn consume(
    rx: Receiver<io::Result<Vec<u8>>>,
    parser: &mut Parser,
    problems: &mut Problems,
    size_hint: Option<u64>,
    progress: Option<ProgressFn<'_>>,
) {
    let mut carry: Vec<u8> = Vec::new();
    let mut consumed = 0u64;
    let mut reserved = false;
    for msg in rx {
        let chunk = match msg {
            Ok(c) => c,
            Err(e) => {
                let message = if e.kind() == io::ErrorKind::UnexpectedEof {
                    "the gzip stream ends early: the file is truncated or was still being written; copy or download it again".to_string()
                } else {
                    format!(
                        "cannot read or decompress the file after line {}: {e}",
                        parser.line
                    )
                };
                problems.push(0, None, None, message);
                parser.aborted = true;
                return;
            }
        };
        consumed += chunk.len() as u64;
        let mut rest: &[u8] = &chunk;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    carry.extend_from_slice(&rest[..i]);
                    let line = std::mem::take(&mut carry);
                    parser.line(&line, problems);
                    rest = &rest[i + 1..];
                }
                None => {
                    carry.extend_from_slice(rest);
                    continue;
                }
            }
        }
        let complete = match memchr::memrchr(b'\n', rest) {
            Some(i) => i + 1,
            None => 0,
        };
        if complete > 0 {
            for line in rest[..complete - 1].split(|&b| b == b'\n') {
                if problems.should_stop() || parser.aborted {
                    parser.aborted = true;
                    return;
                }
                parser.line(line, problems);
            }
        }
        carry.extend_from_slice(&rest[complete..]);
        if !reserved && parser.out.out.rows > 0 {
            reserved = true;
            if let Some(total) = size_hint {
                let per_row = consumed as f64 / parser.out.out.rows as f64;
                parser.out.reserve((total as f64 / per_row * 1.02) as usize);
            }
        }
        if let Some(p) = progress {
            p(consumed);
        }
    }
    if !carry.is_empty() && !problems.should_stop() {
        parser.line(&carry, problems);
    }
}

struct Parser {
    out: Rows,
    line: u64,
    ncols: usize,
    /// Where the format's own columns end (7, or 8 with open interest).
    nbase: usize,
    /// Field spans of the current row, reused.
    spans: Vec<(usize, usize)>,
    /// Extra values of the current row, reused.
    extra: Vec<f64>,
    header_seen: bool,
    aborted: bool,
}

/// The format's rules for rows, whatever file they come from: one timestamp form per file,
/// rows grouped by symbol and sorted by `ts`, one row per (symbol, ts), positive prices and
/// non-negative volumes. The CSV parser and the Parquet reader feed it rows in file order.
pub(crate) struct Rows {
    pub(crate) out: RawData,
    cur_symbol: Vec<u8>,
    symbol_last_line: u64,
    seen: std::collections::HashMap<Vec<u8>, u64>,
    last_ts: i64,
    last_ts_line: u64,
    first_form_line: u64,
    unit: &'static str,
}

/// The numeric fields in stored order.
pub(crate) const NUMBER_FIELDS: [&str; 6] =
    ["open", "high", "low", "close", "volume", "open_interest"];

/// Checks the name of an extra numeric column against the names already taken: a lowercase
/// identifier (so that strategies can name it), not a field of the format or a derived one.
/// The error says what is wrong and the fix.
pub(crate) fn check_extra_name(name: &str, taken: &[String]) -> Result<(), String> {
    let ident = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ident {
        return Err(format!(
            "extra column '{name}' is not a usable field name; name it in lowercase letters, digits and '_', starting with a letter (e.g. 'cap')"
        ));
    }
    if name == "ts" || name == "symbol" || crate::dataset::Field::parse(name).is_some() {
        return Err(format!(
            "extra column '{name}' repeats or shadows a field of the format; rename or drop it"
        ));
    }
    // A misspelt open interest would otherwise be read as an extra column of that name.
    if crate::error::closest(name, ["open_interest"]).is_some() && name.len() > 2 {
        return Err(format!(
            "extra column '{name}' looks like 'open_interest'; spell it so, right after volume (or rename the column)"
        ));
    }
    if taken.iter().any(|t| t == name) {
        return Err(format!("column '{name}' appears twice; keep one"));
    }
    Ok(())
}

impl Rows {
    pub(crate) fn new(has_open_interest: bool, unit: &'static str) -> Rows {
        Rows {
            out: RawData {
                starts: vec![0],
                has_open_interest,
                ..RawData::default()
            },
            cur_symbol: Vec::new(),
            symbol_last_line: 0,
            seen: std::collections::HashMap::new(),
            last_ts: i64::MIN,
            last_ts_line: 0,
            first_form_line: 0,
            unit,
        }
    }

    /// Declares the file's extra numeric columns (before any row).
    pub(crate) fn set_extra(&mut self, names: Vec<String>) {
        self.out.extra = vec![Vec::new(); names.len()];
        self.out.extra_names = names;
    }

    pub(crate) fn reserve(&mut self, rows: usize) {
        let more = rows.saturating_sub(self.out.ts.len());
        self.out.ts.reserve_exact(more);
        let n = if self.out.has_open_interest { 6 } else { 5 };
        for c in self.out.cols[..n].iter_mut().chain(&mut self.out.extra) {
            c.reserve_exact(more);
        }
    }

    /// Checks that a row's timestamp form matches the file's; false (with a problem) if not.
    pub(crate) fn form(
        &mut self,
        line: u64,
        form: TsForm,
        column: Option<usize>,
        problems: &mut Problems,
    ) -> bool {
        match self.out.ts_form {
            None => {
                self.out.ts_form = Some(form);
                self.first_form_line = line;
                true
            }
            Some(f) if f != form => {
                let (this, earlier) = match form {
                    TsForm::Date => ("a date", "date-times"),
                    TsForm::DateTime => ("a date-time", "dates"),
                };
                problems.push(
                    line,
                    column,
                    Some("ts"),
                    format!(
                        "mixed frequencies: this row has {this} but rows from {} {} hold {earlier}; put each frequency in its own file",
                        self.unit,
                        self.first_form_line
                    ),
                );
                false
            }
            Some(_) => true,
        }
    }

    /// Checks a row's symbol and its place in the file's order: `Some(new_symbol)` when the
    /// row may follow the rows before it, `None` (with a problem) when not. `shown_ts` is how
    /// the row's timestamp reads, for messages.
    pub(crate) fn order(
        &mut self,
        line: u64,
        sym: &[u8],
        ts: i64,
        shown_ts: &dyn Fn() -> String,
        columns: (Option<usize>, Option<usize>),
        problems: &mut Problems,
    ) -> Option<bool> {
        let (ts_col, sym_col) = columns;
        if sym.is_empty() || sym.iter().any(u8::is_ascii_whitespace) {
            problems.push(
                line,
                sym_col,
                Some("symbol"),
                format!(
                    "'{}' is not a symbol, expected a non-empty name without spaces",
                    String::from_utf8_lossy(sym)
                ),
            );
            return None;
        }
        let new_symbol = sym != self.cur_symbol.as_slice();
        if new_symbol {
            if let Some(&end) = self.seen.get(sym) {
                problems.push(
                    line,
                    sym_col,
                    Some("symbol"),
                    format!(
                        "rows of '{}' appear again after its block ended at {} {end}; rows must be grouped by symbol, then sorted by ts",
                        String::from_utf8_lossy(sym),
                        self.unit
                    ),
                );
                return None;
            }
        } else if ts == self.last_ts {
            problems.push(
                line,
                ts_col,
                Some("ts"),
                format!(
                    "duplicate row for ({}, {}): the same bar is at {} {}; keep one row per (symbol, ts)",
                    String::from_utf8_lossy(sym),
                    shown_ts(),
                    self.unit,
                    self.last_ts_line
                ),
            );
            return None;
        } else if ts < self.last_ts {
            problems.push(
                line,
                ts_col,
                Some("ts"),
                format!(
                    "rows are not sorted: {} comes after a later bar at {} {}; sort rows by symbol, then ts",
                    shown_ts(),
                    self.unit,
                    self.last_ts_line
                ),
            );
            return None;
        }
        Some(new_symbol)
    }

    /// Checks numeric field `k` (an index into [`NUMBER_FIELDS`]) is in range; false (with a
    /// problem) if not.
    pub(crate) fn in_range(
        line: u64,
        k: usize,
        v: f64,
        column: Option<usize>,
        problems: &mut Problems,
    ) -> bool {
        if (k < 4 && v <= 0.0) || v < 0.0 {
            let expected = if k < 4 {
                "a positive price (rows with non-positive prices must be dropped or fixed)"
            } else {
                "a non-negative number"
            };
            problems.push(
                line,
                column,
                Some(NUMBER_FIELDS[k]),
                format!("{v} is out of range, expected {expected}"),
            );
            return false;
        }
        true
    }

    /// Keeps a row that passed every check.
    pub(crate) fn push(
        &mut self,
        line: u64,
        sym: &[u8],
        new_symbol: bool,
        ts: i64,
        vals: [f64; 6],
        extra: &[f64],
    ) {
        if new_symbol {
            if !self.cur_symbol.is_empty() {
                self.seen
                    .insert(std::mem::take(&mut self.cur_symbol), self.symbol_last_line);
                self.out.starts.push(self.out.ts.len());
            }
            self.cur_symbol = sym.to_vec();
            self.out
                .symbols
                .push(String::from_utf8_lossy(sym).into_owned());
        }
        self.symbol_last_line = line;
        self.last_ts = ts;
        self.last_ts_line = line;

        let [o, h, l, c, v, oi] = vals;
        if h < o.max(c) || l > o.min(c) || h < l {
            self.out.quirks.ohlc_inconsistent += 1;
        }
        if v == 0.0 {
            self.out.quirks.zero_volume += 1;
        }
        self.out.ts.push(ts);
        for (col, v) in self.out.cols.iter_mut().zip([o, h, l, c, v]) {
            col.push(v);
        }
        if self.out.has_open_interest {
            self.out.cols[5].push(oi);
        }
        for (col, v) in self.out.extra.iter_mut().zip(extra) {
            col.push(*v);
        }
        self.out.rows += 1;
    }

    /// Closes the last symbol's run.
    pub(crate) fn finish(&mut self) {
        if !self.cur_symbol.is_empty() {
            self.out.starts.push(self.out.ts.len());
        }
    }
}

impl Parser {
    fn new() -> Parser {
        Parser {
            out: Rows::new(false, "line"),
            line: 0,
            ncols: 7,
            nbase: 7,
            spans: Vec::new(),
            extra: Vec::new(),
            header_seen: false,
            aborted: false,
        }
    }

    fn line(&mut self, raw: &[u8], problems: &mut Problems) {
        self.line += 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if !self.header_seen {
            self.header(line, problems);
            return;
        }
        if line.is_empty() {
            return;
        }
        self.row(line, problems);
    }

    fn header(&mut self, line: &[u8], problems: &mut Problems) {
        self.header_seen = true;
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let names: Vec<&str> = text.split(',').map(str::trim).collect();
        let ok_base = names.len() >= 7 && names[..7] == BASE_HEADER;
        if !ok_base {
            let (column, which) = first_mismatch(&names);
            let message = if text.is_empty() {
                format!("the header line is empty, expected '{EXPECTED_HEADER}'")
            } else {
                format!("header is '{text}', expected '{EXPECTED_HEADER}' ({which})")
            };
            problems.push(1, column, None, message);
            // Nothing below the header can be read with the wrong columns.
            self.aborted = true;
            return;
        }
        let oi = names.get(7) == Some(&"open_interest");
        self.nbase = if oi { 8 } else { 7 };
        self.ncols = names.len();
        self.out.out.has_open_interest = oi;
        let mut extra: Vec<String> = Vec::new();
        let mut column = names[..self.nbase]
            .iter()
            .map(|n| n.len() + 1)
            .sum::<usize>()
            + 1;
        for name in &names[self.nbase..] {
            if let Err(message) = check_extra_name(name, &extra) {
                problems.push(1, Some(column), Some(name), message);
                self.aborted = true;
                return;
            }
            extra.push((*name).to_string());
            column += name.len() + 1;
        }
        self.extra = vec![f64::NAN; extra.len()];
        self.out.set_extra(extra);
    }

    fn row(&mut self, line: &[u8], problems: &mut Problems) {
        if self.aborted {
            return;
        }
        let mut fields = std::mem::take(&mut self.spans);
        fields.clear();
        let mut start = 0;
        for i in memchr::memchr_iter(b',', line).chain(std::iter::once(line.len())) {
            fields.push((start, i));
            start = i + 1;
        }
        self.row_fields(line, &fields, problems);
        self.spans = fields;
    }

    fn row_fields(&mut self, line: &[u8], fields: &[(usize, usize)], problems: &mut Problems) {
        let n = fields.len();
        if n != self.ncols {
            let mut header = BASE_HEADER.join(",");
            if self.out.out.has_open_interest {
                header.push_str(",open_interest");
            }
            for e in &self.out.out.extra_names {
                header.push(',');
                header.push_str(e);
            }
            problems.push(
                self.line,
                None,
                None,
                format!("row has {n} fields, expected {} ({header})", self.ncols),
            );
            return;
        }
        let field = |k: usize| &line[fields[k].0..fields[k].1];
        let col = |k: usize| Some(fields[k].0 + 1);

        // ts
        let ts_bytes = field(0);
        let (ts, form) = match parse_ts(ts_bytes) {
            Some(ParsedTs::Date(t)) => (t.0, TsForm::Date),
            Some(ParsedTs::DateTime(t)) => (t.0, TsForm::DateTime),
            None => {
                problems.push(
                    self.line,
                    col(0),
                    Some("ts"),
                    format!(
                        "'{}' is not a timestamp, expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)",
                        String::from_utf8_lossy(ts_bytes)
                    ),
                );
                return;
            }
        };
        if !self.out.form(self.line, form, col(0), problems) {
            return;
        }

        // symbol: rows must come grouped by symbol, sorted by ts within each group.
        let sym = field(1);
        let shown = || String::from_utf8_lossy(ts_bytes).into_owned();
        let Some(new_symbol) =
            self.out
                .order(self.line, sym, ts, &shown, (col(0), col(1)), problems)
        else {
            return;
        };

        // Numbers: all parsed before anything is pushed, so a bad row leaves no trace.
        let mut vals = [f64::NAN; 6];
        for k in 0..self.nbase - 2 {
            let b = field(k + 2);
            if k == 5 && b.is_empty() {
                continue; // open interest may be missing
            }
            let v = match fast_float2::parse::<f64, _>(b) {
                Ok(v) if v.is_finite() => v,
                _ => {
                    let expected = if k < 4 {
                        "a positive price"
                    } else {
                        "a non-negative number"
                    };
                    let shown = if b.is_empty() {
                        "empty".to_string()
                    } else {
                        format!("'{}'", String::from_utf8_lossy(b))
                    };
                    let msg = if b.is_empty() {
                        format!("{} is {shown}, expected {expected}", NUMBER_FIELDS[k])
                    } else {
                        format!("{shown} is not a number, expected {expected}")
                    };
                    problems.push(self.line, col(k + 2), Some(NUMBER_FIELDS[k]), msg);
                    return;
                }
            };
            if !Rows::in_range(self.line, k, v, col(k + 2), problems) {
                return;
            }
            vals[k] = v;
        }
        // Extra columns: any finite number, or empty for none.
        for (j, k) in (self.nbase..self.ncols).enumerate() {
            let b = field(k);
            self.extra[j] = if b.is_empty() {
                f64::NAN
            } else {
                match fast_float2::parse::<f64, _>(b) {
                    Ok(v) if v.is_finite() => v,
                    _ => {
                        let name = &self.out.out.extra_names[j];
                        problems.push(
                            self.line,
                            col(k),
                            Some(name),
                            format!(
                                "'{}' is not a number, expected a number or nothing (extra column '{name}')",
                                String::from_utf8_lossy(b)
                            ),
                        );
                        return;
                    }
                }
            };
        }
        self.out
            .push(self.line, sym, new_symbol, ts, vals, &self.extra);
    }

    fn finish(&mut self, problems: &mut Problems) {
        self.out.finish();
        if self.aborted {
            return;
        }
        if self.line == 0 {
            problems.push(
                0,
                None,
                None,
                format!("the file is empty, expected the header '{EXPECTED_HEADER}' and rows"),
            );
        } else if self.out.out.rows == 0 && problems.total == 0 {
            problems.push(2, None, None, "no data rows after the header".to_string());
        }
    }
}

fn first_mismatch(names: &[&str]) -> (Option<usize>, String) {
    let mut column = 1;
    for (i, want) in BASE_HEADER.iter().enumerate() {
        match names.get(i) {
            Some(got) if got == want => column += got.len() + 1,
            Some(got) => {
                return (
                    Some(column),
                    format!("field {} is '{got}', expected '{want}'", i + 1),
                );
            }
            None => return (Some(column), format!("field '{want}' is missing")),
        }
    }
    let extra = names.get(7).copied().unwrap_or("");
    (
        Some(column),
        format!("field 8 is '{extra}', expected 'open_interest' or nothing"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (RawData, Problems) {
        read(
            Box::new(io::Cursor::new(text.as_bytes().to_vec())),
            "t.csv",
            ReadOptions::check(50),
            Some(text.len() as u64),
            None,
        )
    }

    #[test]
    fn reads_grouped_rows_with_optional_open_interest() {
        let (raw, p) = parse(
            "ts,symbol,open,high,low,close,volume,open_interest\n\
             2024-01-02,A,1,2,0.5,1.5,100,\n2024-01-03,A,1.5,2,1,1.8,0,7\n2024-01-02,B,10,11,9,10.5,5,3\n",
        );
        assert_eq!(p.total, 0, "{:?}", p.list);
        assert_eq!(raw.symbols, ["A", "B"]);
        assert_eq!(raw.starts, [0, 2, 3]);
        assert!(raw.cols[5][0].is_nan());
        assert_eq!(raw.cols[5][1], 7.0);
        assert_eq!(raw.quirks.zero_volume, 1);
        assert_eq!(raw.ts_form, Some(TsForm::Date));
    }

    #[test]
    fn locates_a_bad_price_by_line_column_and_field() {
        let (_, p) = parse("ts,symbol,open,high,low,close,volume\n2024-01-02,A,1,2,0.5,null,100\n");
        let msg = p.list[0].to_string();
        assert_eq!(
            msg,
            "data file 't.csv' line 2, column 22 (close): 'null' is not a number, expected a positive price"
        );
    }

    proptest::proptest! {
        /// Whatever the bytes, the reader returns data or problems, never a panic.
        #[test]
        fn arbitrary_input_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                                        rows in proptest::collection::vec("[0-9T:Z,.-]{0,40}", 0..12)) {
            let mut text = b"ts,symbol,open,high,low,close,volume\n".to_vec();
            for r in &rows {
                text.extend_from_slice(r.as_bytes());
                text.push(b'\n');
            }
            text.extend_from_slice(&body);
            let (raw, problems) = read(Box::new(io::Cursor::new(text)), "fuzz.csv", ReadOptions::check(10), None, None);
            proptest::prop_assert!(raw.rows > 0 || problems.total > 0 || raw.symbols.is_empty());
            let _ = crate::dataset::infer_frequency(&raw, "fuzz.csv");
            let _ = crate::dataset::align(&raw);
        }
    }

    #[test]
    fn chunk_boundaries_do_not_split_rows() {
        // Longer than one chunk so that lines straddle chunk edges.
        let mut text = String::from("ts,symbol,open,high,low,close,volume\n");
        let mut n = 0;
        while text.len() < 3 * CHUNK {
            let (y, m, d) = crate::time::civil_from_days(n);
            text.push_str(&format!("{y:04}-{m:02}-{d:02},SYM,1.25,2.5,1,2,{n}\n"));
            n += 1;
        }
        let (raw, p) = parse(&text);
        assert_eq!(p.total, 0, "{:?}", p.list.first());
        assert_eq!(raw.rows, n as u64);
        assert_eq!(raw.cols[4].last().copied(), Some((n - 1) as f64));
    }
}
