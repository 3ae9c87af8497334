//! Aligned `times × symbols` panels for a selection of datasets, as of a point in time.
//!
//! A [`PanelQuery`] always carries an [`AsOf`]; the dataset is cut there *before* anything is
//! derived from it (resampling, roll detection, back-adjustment, returns), so no value in a
//! [`PanelSet`] can depend on a bar that had not closed by then.

use std::collections::BTreeMap;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::dataset::{Dataset, Field};
use crate::error::{MarketError, closest};
use crate::instrument::{AssetClass, Instrument, session_of};
use crate::roll::{self, Roll, RollConfig};
use crate::time::{AsOf, Frequency, Timestamp};

/// How to treat spliced futures series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RollPolicy {
    /// Raw prices and returns, roll jumps included.
    None,
    /// Detect rolls, back-adjust prices by ratio, roll-clean returns (see [`crate::roll`]).
    #[default]
    BackAdjust,
}

/// What to load. Build with [`PanelQuery::new`]: the as-of time is not optional.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PanelQuery {
    /// Nothing that closed after this instant is returned.
    pub as_of: AsOf,
    /// Datasets to draw from.
    pub datasets: Vec<String>,
    /// Symbols to keep; all when `None`.
    pub symbols: Option<Vec<String>>,
    /// First bar time to keep (inclusive).
    pub start: Option<Timestamp>,
    /// Last bar time to keep (inclusive).
    pub end: Option<Timestamp>,
    /// Resample to this (coarser) frequency.
    pub frequency: Option<Frequency>,
    /// Fields to build.
    pub fields: Vec<Field>,
    /// Also every extra numeric column of the datasets (e.g. `cap`), as [`Field::Extra`]
    /// panels: NaN for instruments of a dataset without the column. Not part of the query's
    /// recorded form (its `Debug` and serialised forms leave it out): on data without such
    /// columns the answer is the same, so runs journaled before the option existed replay and
    /// resume; on data with them the answer differs and the journal's data check says so.
    #[serde(skip)]
    pub extra_fields: bool,
    /// Futures roll treatment.
    pub roll: RollPolicy,
    /// Roll detector thresholds.
    pub roll_config: RollConfig,
}

impl std::fmt::Debug for PanelQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `extra_fields` is left out: see its documentation.
        f.debug_struct("PanelQuery")
            .field("as_of", &self.as_of)
            .field("datasets", &self.datasets)
            .field("symbols", &self.symbols)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("frequency", &self.frequency)
            .field("fields", &self.fields)
            .field("roll", &self.roll)
            .field("roll_config", &self.roll_config)
            .finish()
    }
}

impl PanelQuery {
    /// A query of close prices of every symbol of `datasets`, as of `as_of`.
    pub fn new(as_of: AsOf, datasets: impl IntoIterator<Item = impl Into<String>>) -> PanelQuery {
        PanelQuery {
            as_of,
            datasets: datasets.into_iter().map(Into::into).collect(),
            symbols: None,
            start: None,
            end: None,
            frequency: None,
            fields: vec![Field::Close],
            extra_fields: false,
            roll: RollPolicy::default(),
            roll_config: RollConfig::default(),
        }
    }

    /// Sets the fields.
    pub fn fields(mut self, fields: impl IntoIterator<Item = Field>) -> PanelQuery {
        self.fields = fields.into_iter().collect();
        self
    }

    /// Adds every extra numeric column of the datasets (see [`PanelQuery::extra_fields`]).
    pub fn extra_fields(mut self, yes: bool) -> PanelQuery {
        self.extra_fields = yes;
        self
    }

    /// Keeps only these symbols.
    pub fn symbols(mut self, symbols: impl IntoIterator<Item = impl Into<String>>) -> PanelQuery {
        self.symbols = Some(symbols.into_iter().map(Into::into).collect());
        self
    }

    /// Keeps bars in `[start, end]`.
    pub fn range(mut self, start: Option<Timestamp>, end: Option<Timestamp>) -> PanelQuery {
        self.start = start;
        self.end = end;
        self
    }

    /// Resamples to a coarser frequency.
    pub fn frequency(mut self, f: Frequency) -> PanelQuery {
        self.frequency = Some(f);
        self
    }

    /// Sets the roll policy.
    pub fn roll(mut self, policy: RollPolicy) -> PanelQuery {
        self.roll = policy;
        self
    }
}

/// A `times × symbols` matrix, column-major: each symbol's history is contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    times: usize,
    symbols: usize,
    data: Vec<f64>,
}

impl Panel {
    /// A panel of NaN.
    pub fn nan(times: usize, symbols: usize) -> Panel {
        Panel {
            times,
            symbols,
            data: vec![f64::NAN; times * symbols],
        }
    }

    /// Wraps column-major data.
    ///
    /// # Errors
    /// `data.len() != times * symbols`.
    pub fn from_columns(
        times: usize,
        symbols: usize,
        data: Vec<f64>,
    ) -> Result<Panel, MarketError> {
        if data.len() != times * symbols {
            return Err(MarketError::Query(format!(
                "panel data has {} values, expected {times} × {symbols}",
                data.len()
            )));
        }
        Ok(Panel {
            times,
            symbols,
            data,
        })
    }

    /// Number of bar times (rows).
    pub fn times(&self) -> usize {
        self.times
    }

    /// Number of symbols (columns).
    pub fn symbols(&self) -> usize {
        self.symbols
    }

    /// The value at bar `t` of symbol `s`.
    pub fn get(&self, t: usize, s: usize) -> f64 {
        self.data[s * self.times + t]
    }

    /// One symbol's history.
    pub fn column(&self, s: usize) -> &[f64] {
        &self.data[s * self.times..(s + 1) * self.times]
    }

    /// Where column `s` has values: its first and last row holding a finite value and how many
    /// rows hold one; `None` when none does (an instrument that had not traded by the as-of).
    pub fn span(&self, s: usize) -> Option<(usize, usize, usize)> {
        let col = self.column(s);
        let first = col.iter().position(|v| v.is_finite())?;
        let last = col.iter().rposition(|v| v.is_finite())?;
        let present = col[first..=last].iter().filter(|v| v.is_finite()).count();
        Some((first, last, present))
    }

    /// One symbol's history, mutable.
    pub fn column_mut(&mut self, s: usize) -> &mut [f64] {
        &mut self.data[s * self.times..(s + 1) * self.times]
    }

    /// All values, column-major.
    pub fn values(&self) -> &[f64] {
        &self.data
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 8
    }

    /// The values, column-major, without copying.
    pub fn into_values(self) -> Vec<f64> {
        self.data
    }
}

/// The answer to a [`PanelQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct PanelSet {
    /// The query's as-of time.
    pub as_of: AsOf,
    /// Bar frequency of every panel.
    pub frequency: Frequency,
    /// The time axis (rows), ascending.
    pub times: Vec<Timestamp>,
    /// The instruments (columns).
    pub instruments: Vec<Instrument>,
    /// The dataset each column came from.
    pub sources: Vec<String>,
    /// The panels asked for.
    pub panels: BTreeMap<Field, Panel>,
    /// Detected rolls per futures symbol (empty unless the roll policy adjusts).
    pub rolls: BTreeMap<String, Vec<Roll>>,
    /// Bars dropped as stray (not the main contract) per futures symbol.
    pub stray: BTreeMap<String, Vec<Timestamp>>,
    /// Groupings from the data directory's `groups.csv`: grouping name → label per
    /// instrument (`None` where the file has no label for the symbol).
    pub groups: BTreeMap<String, Vec<Option<String>>>,
}

/// Where an instrument has bars in a panel set (see [`PanelSet::span_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Its first bar.
    pub first: Timestamp,
    /// Its last bar.
    pub last: Timestamp,
    /// Bars it has.
    pub rows: u64,
    /// Bars of the set's time axis between its first and last with none.
    pub gaps: u64,
}

impl PanelSet {
    /// Where column `c` has a close: first and last bar, bars and gaps on this set's axis;
    /// `None` when it has none (an instrument that had not traded by the as-of time), or when
    /// the set holds no close panel.
    pub fn span_of(&self, c: usize) -> Option<Span> {
        let (f, l, present) = self.panel(Field::Close)?.span(c)?;
        Some(Span {
            first: self.times[f],
            last: self.times[l],
            rows: present as u64,
            gaps: (l + 1 - f - present) as u64,
        })
    }

    /// A panel by field.
    pub fn panel(&self, field: Field) -> Option<&Panel> {
        self.panels.get(&field)
    }

    /// Column index of a symbol.
    pub fn column_of(&self, symbol: &str) -> Option<usize> {
        self.instruments.iter().position(|i| i.symbol == symbol)
    }

    /// Bytes held by all panels.
    pub fn bytes(&self) -> usize {
        self.panels.values().map(Panel::bytes).sum()
    }
}

/// One symbol's bars (only bars that exist), with the stored fields a query needs.
struct Series {
    instrument: Instrument,
    times: Vec<Timestamp>,
    fields: BTreeMap<Field, Vec<f64>>,
    rolls: Vec<Roll>,
    stray: Vec<Timestamp>,
}

impl Catalog {
    /// Builds aligned panels. See [`PanelQuery`].
    ///
    /// # Errors
    /// Unknown dataset or symbol, a frequency that cannot be reached by resampling, datasets
    /// of different frequencies without a target frequency, or a file that cannot be loaded.
    pub fn panels(&self, q: &PanelQuery) -> Result<PanelSet, MarketError> {
        if q.datasets.is_empty() {
            return Err(MarketError::Query(
                "no dataset selected; name at least one (see `lim data list`)".into(),
            ));
        }
        if q.fields.is_empty() {
            return Err(MarketError::Query("no field selected".into()));
        }
        let mut stored: Vec<Field> = q.fields.iter().flat_map(|f| f.inputs()).collect();
        if q.roll == RollPolicy::BackAdjust {
            stored.extend([
                Field::Open,
                Field::Close,
                Field::Volume,
                Field::OpenInterest,
            ]);
        }
        if q.frequency.is_some() {
            // Resampling OHLC needs the whole bar.
            stored.extend([Field::Open, Field::High, Field::Low, Field::Close]);
        }
        stored.sort();
        stored.dedup();

        // Symbols used as stored (no resampling, no roll bars dropped) are cut from their
        // dataset only when placed in the panels, one at a time, so that no second copy of the
        // whole data exists beside the panels; their bars are known without building them.
        // Others are built here, since their bars are known only then.
        let mut loaded: Vec<(String, Dataset)> = Vec::new();
        let mut plan: Vec<(usize, usize, Option<Series>)> = Vec::new();
        let mut times: Vec<Timestamp> = Vec::new();
        let mut frequency: Option<(Frequency, String)> = None;
        // Extra columns asked for by name, and those of every dataset when the query says so.
        let mut extra: Vec<Field> = q
            .fields
            .iter()
            .copied()
            .filter(|f| matches!(f, Field::Extra(_)))
            .collect();
        let mut stored_of: Vec<Vec<Field>> = Vec::new();
        for name in &q.datasets {
            let (ds, _) = self.load_with(name, &stored, q.extra_fields)?;
            let mut stored = stored.clone();
            if q.extra_fields {
                for n in &ds.meta.extra_fields {
                    let f = Field::extra(n);
                    stored.push(f);
                    if !extra.contains(&f) {
                        extra.push(f);
                    }
                }
            }
            let stored = &stored;
            let native = ds.meta.frequency;
            let target = q.frequency.unwrap_or(native);
            check_resample(native, target, name)?;
            match &frequency {
                Some((f, other)) if *f != target => {
                    return Err(MarketError::Query(format!(
                        "datasets '{other}' ({f}) and '{name}' ({target}) have different frequencies; pass a common frequency such as --frequency 1d to resample"
                    )));
                }
                _ => frequency = Some((target, name.clone())),
            }
            stored_of.push(stored.clone());
            let cols = select_symbols(&ds, q.symbols.as_deref(), &q.datasets, self)?;
            let mut used = vec![false; ds.times.len()];
            for c in cols {
                let futures = ds.meta.symbols[c].instrument.asset_class == AssetClass::Futures;
                if target == native && !(futures && q.roll == RollPolicy::BackAdjust) {
                    for t in present_rows(&ds, c, stored, q.as_of) {
                        used[t] = true;
                    }
                    plan.push((loaded.len(), c, None));
                    continue;
                }
                let mut s = series_as_of(&ds, c, stored, q.as_of);
                if target != native {
                    let session = session_of(&s.instrument, ds.meta.manifest.as_ref());
                    s = resample(s, target, session, q.as_of);
                }
                derive(&mut s, q);
                times.extend_from_slice(&s.times);
                plan.push((loaded.len(), c, Some(s)));
            }
            times.extend(
                ds.times
                    .iter()
                    .zip(&used)
                    .filter(|(_, u)| **u)
                    .map(|(t, _)| *t),
            );
            loaded.push((name.clone(), ds));
        }
        let frequency = frequency.map(|(f, _)| f).unwrap_or(Frequency::Daily);
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (d, c, _) in &plan {
            let (ds, data) = (&loaded[*d].0, &loaded[*d].1);
            let symbol = &data.meta.symbols[*c].instrument.symbol;
            if let Some(prev) = seen.insert(symbol, ds) {
                return Err(MarketError::Query(format!(
                    "symbol '{symbol}' is in both '{prev}' and '{ds}'; select one of them with --symbol or query the datasets separately"
                )));
            }
        }
        let count = plan.len();
        let series = plan.into_iter().map(|(d, c, built)| {
            let (name, ds) = &loaded[d];
            let s = built.unwrap_or_else(|| {
                let mut s = series_as_of(ds, c, &stored_of[d], q.as_of);
                derive(&mut s, q);
                s
            });
            (name.clone(), s)
        });
        let mut fields = q.fields.clone();
        for f in extra {
            if !fields.contains(&f) {
                fields.push(f);
            }
        }
        let mut set = assemble(times, series, count, q, &fields, frequency);
        if let Some(table) = &self.groups {
            let symbols: Vec<&str> = set.instruments.iter().map(|i| i.symbol.as_str()).collect();
            set.groups = table.labels(&symbols);
        }
        Ok(set)
    }
}

fn check_resample(native: Frequency, target: Frequency, name: &str) -> Result<(), MarketError> {
    let ok = match (native, target) {
        (a, b) if a == b => true,
        (Frequency::Intraday(a), Frequency::Intraday(b)) => b > a && b % a == 0,
        (Frequency::Intraday(_), Frequency::Daily) => true,
        (Frequency::Daily, Frequency::Intraday(_)) => false,
        (Frequency::Daily, Frequency::Daily) => true,
    };
    if ok {
        Ok(())
    } else {
        Err(MarketError::Query(format!(
            "cannot resample '{name}' from {native} to {target}: bars can only be combined into coarser bars whose length is a multiple of {native}"
        )))
    }
}

fn select_symbols(
    ds: &Dataset,
    symbols: Option<&[String]>,
    datasets: &[String],
    catalog: &Catalog,
) -> Result<Vec<usize>, MarketError> {
    let Some(symbols) = symbols else {
        return Ok((0..ds.meta.symbols.len()).collect());
    };
    let mut cols = Vec::new();
    for s in symbols {
        match ds.meta.symbol_index(s) {
            Some(i) => cols.push(i),
            None if datasets.len() > 1 => {
                // It may belong to another selected dataset; checked once all are seen.
                let elsewhere = datasets.iter().any(|d| {
                    catalog
                        .meta(d)
                        .map(|m| m.symbol_index(s).is_some())
                        .unwrap_or(false)
                });
                if !elsewhere {
                    return Err(unknown_symbol(s, ds, datasets));
                }
            }
            None => return Err(unknown_symbol(s, ds, datasets)),
        }
    }
    Ok(cols)
}

fn unknown_symbol(symbol: &str, ds: &Dataset, datasets: &[String]) -> MarketError {
    MarketError::UnknownSymbol {
        symbol: symbol.to_string(),
        scope: format!("dataset(s) {}", datasets.join(", ")),
        suggestion: closest(
            symbol,
            ds.meta.symbols.iter().map(|s| s.instrument.symbol.as_str()),
        ),
    }
}

/// The rows of a dataset where one symbol has a bar visible at the as-of time: its close
/// exists (or its first stored field, for data without a close).
fn present_rows<'a>(
    ds: &'a Dataset,
    col: usize,
    stored: &[Field],
    as_of: AsOf,
) -> impl Iterator<Item = usize> + 'a {
    let freq = ds.meta.frequency;
    let visible = ds.times.partition_point(|t| as_of.sees(*t, freq));
    let close = ds
        .series(Field::Close, col)
        .or_else(|| stored.first().and_then(|f| ds.series(*f, col)));
    close
        .into_iter()
        .flat_map(move |c| (0..visible).filter(move |&t| !c[t].is_nan()))
}

/// Cuts one symbol's bars at the as-of time, keeping only bars that exist.
fn series_as_of(ds: &Dataset, col: usize, stored: &[Field], as_of: AsOf) -> Series {
    let present: Vec<usize> = present_rows(ds, col, stored, as_of).collect();
    let mut fields = BTreeMap::new();
    for &f in stored {
        let v = match ds.series(f, col) {
            Some(src) => present.iter().map(|&t| src[t]).collect(),
            None => vec![f64::NAN; present.len()],
        };
        fields.insert(f, v);
    }
    Series {
        instrument: ds.meta.symbols[col].instrument.clone(),
        times: present.iter().map(|&t| ds.times[t]).collect(),
        fields,
        rolls: Vec::new(),
        stray: Vec::new(),
    }
}

/// The open time of the coarse bar that a bar opening at `ts` falls into.
pub fn bucket_of(
    ts: Timestamp,
    target: Frequency,
    session: crate::instrument::Session,
) -> Timestamp {
    let off = i64::from(session.utc_offset_minutes) * 60;
    let local = ts.0 + off;
    let day = local.div_euclid(crate::time::DAY) * crate::time::DAY;
    match target {
        Frequency::Daily => Timestamp(day),
        Frequency::Intraday(len) => {
            let len = i64::from(len);
            let open = day + i64::from(session.open_minute) * 60;
            Timestamp(open + (local - open).div_euclid(len) * len - off)
        }
    }
}

/// Combines bars into coarser ones: first open, highest high, lowest low, last close, summed
/// volume, last open interest. A coarse bar that has not closed by the as-of time is dropped.
fn resample(
    s: Series,
    target: Frequency,
    session: crate::instrument::Session,
    as_of: AsOf,
) -> Series {
    let mut times: Vec<Timestamp> = Vec::new();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for (i, &t) in s.times.iter().enumerate() {
        let b = bucket_of(t, target, session);
        if times.last() == Some(&b) {
            if let Some(g) = groups.last_mut() {
                g.1 = i + 1;
            }
        } else {
            times.push(b);
            groups.push((i, i + 1));
        }
    }
    let keep: Vec<bool> = times.iter().map(|t| as_of.sees(*t, target)).collect();
    let mut fields = BTreeMap::new();
    for (f, v) in &s.fields {
        let agg: Vec<f64> = groups
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(&(a, b), _)| {
                let xs = &v[a..b];
                match f {
                    Field::Open => xs[0],
                    Field::High => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    Field::Low => xs.iter().copied().fold(f64::INFINITY, f64::min),
                    Field::Volume => xs.iter().sum(),
                    _ => xs[xs.len() - 1],
                }
            })
            .collect();
        fields.insert(*f, agg);
    }
    let times = times
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(t, _)| t)
        .collect();
    Series {
        instrument: s.instrument,
        times,
        fields,
        rolls: Vec::new(),
        stray: Vec::new(),
    }
}

/// Detects rolls and computes derived fields on one symbol's bars.
fn derive(s: &mut Series, q: &PanelQuery) {
    let futures =
        q.roll == RollPolicy::BackAdjust && s.instrument.asset_class == AssetClass::Futures;
    if futures && let Some(oi) = s.fields.get(&Field::OpenInterest) {
        let stray = roll::stray_bars(oi, &q.roll_config);
        if !stray.is_empty() {
            let mut keep = vec![true; s.times.len()];
            for &t in &stray {
                keep[t] = false;
            }
            s.stray = stray.iter().map(|&t| s.times[t]).collect();
            let kept = |v: &[f64]| {
                v.iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(x, _)| *x)
                    .collect::<Vec<f64>>()
            };
            s.times = s
                .times
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(t, _)| *t)
                .collect();
            for v in s.fields.values_mut() {
                *v = kept(v);
            }
        }
    }
    let n = s.times.len();
    let raw_close = s
        .fields
        .get(&Field::Close)
        .cloned()
        .unwrap_or_else(|| vec![f64::NAN; n]);
    if q.fields.contains(&Field::DollarVolume) {
        let v = s
            .fields
            .get(&Field::Volume)
            .cloned()
            .unwrap_or_else(|| vec![f64::NAN; n]);
        s.fields.insert(
            Field::DollarVolume,
            raw_close.iter().zip(&v).map(|(c, v)| c * v).collect(),
        );
    }
    if futures {
        let get = |f: Field| {
            s.fields
                .get(&f)
                .cloned()
                .unwrap_or_else(|| vec![f64::NAN; n])
        };
        let (open, volume, oi) = (
            get(Field::Open),
            get(Field::Volume),
            get(Field::OpenInterest),
        );
        let rolls = roll::detect(
            &s.times,
            &open,
            &raw_close,
            &volume,
            Some(&oi),
            &q.roll_config,
        );
        let mut prices: Vec<&mut [f64]> = s
            .fields
            .iter_mut()
            .filter(|(f, _)| matches!(f, Field::Open | Field::High | Field::Low | Field::Close))
            .map(|(_, v)| v.as_mut_slice())
            .collect();
        roll::back_adjust(&mut prices, &rolls);
        s.rolls = rolls.into_iter().map(|(_, r)| r).collect();
    }
    let close = s
        .fields
        .get(&Field::Close)
        .cloned()
        .unwrap_or_else(|| vec![f64::NAN; n]);
    let mut ret = vec![f64::NAN; n];
    for t in 1..n {
        ret[t] = close[t] / close[t - 1] - 1.0;
    }
    if q.fields.contains(&Field::LogReturns) {
        s.fields
            .insert(Field::LogReturns, ret.iter().map(|r| r.ln_1p()).collect());
    }
    if q.fields.contains(&Field::Returns) {
        s.fields.insert(Field::Returns, ret);
    }
    if q.fields.contains(&Field::Vwap) {
        let get = |f: Field| {
            s.fields
                .get(&f)
                .cloned()
                .unwrap_or_else(|| vec![f64::NAN; n])
        };
        let (h, l) = (get(Field::High), get(Field::Low));
        s.fields.insert(
            Field::Vwap,
            (0..n).map(|t| (h[t] + l[t] + close[t]) / 3.0).collect(),
        );
    }
}

/// Aligns `count` series on `times` (theirs, in any order, repeats allowed) within the
/// query's range, placing each series as it comes.
fn assemble(
    mut times: Vec<Timestamp>,
    all: impl Iterator<Item = (String, Series)>,
    count: usize,
    q: &PanelQuery,
    fields: &[Field],
    frequency: Frequency,
) -> PanelSet {
    let in_range = |t: &Timestamp| q.start.is_none_or(|s| *t >= s) && q.end.is_none_or(|e| *t <= e);
    times.retain(in_range);
    times.sort_unstable();
    times.dedup();
    let index: HashMap<Timestamp, usize> = times.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let nt = times.len();
    let mut panels: BTreeMap<Field, Panel> =
        fields.iter().map(|f| (*f, Panel::nan(nt, count))).collect();
    let mut rolls = BTreeMap::new();
    let mut stray = BTreeMap::new();
    let mut instruments = Vec::with_capacity(count);
    let mut sources = Vec::with_capacity(count);
    for (c, (ds, s)) in all.enumerate() {
        let rows: Vec<(usize, usize)> = s
            .times
            .iter()
            .enumerate()
            .filter_map(|(i, t)| index.get(t).map(|&r| (i, r)))
            .collect();
        for (f, panel) in panels.iter_mut() {
            if let Some(v) = s.fields.get(f) {
                let col = panel.column_mut(c);
                for &(i, r) in &rows {
                    col[r] = v[i];
                }
            }
        }
        if s.instrument.asset_class == AssetClass::Futures && q.roll == RollPolicy::BackAdjust {
            rolls.insert(s.instrument.symbol.clone(), s.rolls);
            stray.insert(s.instrument.symbol.clone(), s.stray);
        }
        instruments.push(s.instrument);
        sources.push(ds);
    }
    PanelSet {
        as_of: q.as_of,
        frequency,
        times,
        instruments,
        sources,
        panels,
        rolls,
        stray,
        groups: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_where_a_column_has_values() {
        let nan = f64::NAN;
        let p = Panel::from_columns(5, 2, vec![nan, 1.0, nan, 2.0, nan, nan, nan, nan, nan, nan])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.span(0), Some((1, 3, 2)));
        assert_eq!(p.span(1), None);
    }
}
