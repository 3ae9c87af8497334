//! Instruments that are one series twice: a dataset that carries an index from two sources
//! (`indices_daily` has the S&P 500 and the Nasdaq Composite from Xueqiu and again from the
//! `arch` package's Yahoo files), or a symbol listed under two names. A cross-sectional book
//! over such a universe holds the same thing twice and an equal-weight benchmark weighs it
//! double, so a research universe keeps one of each.
//!
//! Two instruments are the same series when their bar-to-bar log returns over the rows given
//! (the caller passes those before its sealed test) correlate at [`SAME_CORRELATION`] or more
//! over at least [`MIN_SHARED`] shared returns. Share classes of one company (GOOG and GOOGL)
//! correlate about 0.99 and are kept: they are different instruments.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::dataset::Field;
use crate::panel::{Panel, PanelSet};

/// Correlation of returns at or above which two instruments are one series.
pub const SAME_CORRELATION: f64 = 0.999;
/// Returns both instruments must have, on the same bars, to be compared.
pub const MIN_SHARED: usize = 250;
/// Shared returns compared first; a pair below 0.99 on these is not compared further.
const FIRST_LOOK: usize = 100;

/// One instrument found to be another's series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SameSeries {
    /// The instrument left out: the copy with the shorter history (of two as long, the later
    /// column).
    pub symbol: String,
    /// The instrument kept.
    pub same_as: String,
    /// Correlation of their returns on the shared bars.
    pub correlation: f64,
    /// Returns compared.
    pub shared: usize,
}

impl std::fmt::Display for SameSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "left out {}, the same series as {} (correlation {:.4}, {} bars)",
            self.symbol, self.same_as, self.correlation, self.shared
        )
    }
}

/// Log returns of a column from one row to the next over `rows` (NaN where either close is
/// missing or not positive), and the bars with a close in the whole panel.
fn returns(close: &Panel, s: usize, rows: &Range<usize>) -> (Vec<f64>, usize) {
    let c = close.column(s);
    let ok = |x: f64| x.is_finite() && x > 0.0;
    let mut r = vec![f64::NAN; rows.len()];
    for (k, t) in rows.clone().enumerate() {
        if t > 0 && ok(c[t]) && ok(c[t - 1]) {
            r[k] = (c[t] / c[t - 1]).ln();
        }
    }
    (r, c.iter().filter(|&&x| ok(x)).count())
}

/// Pearson correlation of `a` and `b` over the rows where both are finite, looking at no more
/// than `limit` of them; with the count.
fn correlation(a: &[f64], b: &[f64], limit: usize) -> (f64, usize) {
    let (mut n, mut sa, mut sb, mut saa, mut sbb, mut sab) = (0usize, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        n += 1;
        sa += x;
        sb += y;
        saa += x * x;
        sbb += y * y;
        sab += x * y;
        if n == limit {
            break;
        }
    }
    if n < 2 {
        return (f64::NAN, n);
    }
    let nf = n as f64;
    let va = saa - sa * sa / nf;
    let vb = sbb - sb * sb / nf;
    if va <= 0.0 || vb <= 0.0 {
        return (f64::NAN, n);
    }
    ((sab - sa * sb / nf) / (va * vb).sqrt(), n)
}

/// The instruments of `set` that are another's series over `rows` (see the module's
/// documentation), in column order of the one left out. Of two copies the one with the longer
/// history is kept: its bars are counted over the whole panel, since copies of one series earn
/// the same wherever both trade, so which one carries the series on changes what is held, not
/// what it earned (an index's file from a package frozen in 2018 gives way to the source that
/// goes on). Reads the close panel only; without one, finds nothing.
pub fn same_series(set: &PanelSet, rows: Range<usize>) -> Vec<SameSeries> {
    let Some(close) = set.panel(Field::Close) else {
        return Vec::new();
    };
    let rows = rows.start.min(close.times())..rows.end.min(close.times());
    let cols: Vec<(Vec<f64>, usize)> = (0..close.symbols())
        .map(|s| returns(close, s, &rows))
        .collect();
    let starts: Vec<usize> = cols
        .iter()
        .map(|(r, _)| r.iter().position(|x| x.is_finite()).unwrap_or(r.len()))
        .collect();
    let mut out: Vec<(usize, SameSeries)> = Vec::new();
    let mut dropped = vec![false; cols.len()];
    for i in 0..cols.len() {
        for j in i + 1..cols.len() {
            if dropped[i] || dropped[j] {
                continue;
            }
            // From the first return both have: a column that starts late is not scanned
            // through its empty years for every pair.
            let from = starts[i].max(starts[j]);
            let (a, b) = (&cols[i].0[from..], &cols[j].0[from..]);
            let (first, n) = correlation(a, b, FIRST_LOOK);
            if n < FIRST_LOOK.min(MIN_SHARED) || first.is_nan() || first < 0.99 {
                continue;
            }
            let (rho, shared) = correlation(a, b, usize::MAX);
            if shared < MIN_SHARED || rho.is_nan() || rho < SAME_CORRELATION {
                continue;
            }
            let (drop, keep) = if cols[j].1 <= cols[i].1 {
                (j, i)
            } else {
                (i, j)
            };
            dropped[drop] = true;
            out.push((
                drop,
                SameSeries {
                    symbol: set.instruments[drop].symbol.clone(),
                    same_as: set.instruments[keep].symbol.clone(),
                    correlation: rho,
                    shared,
                },
            ));
        }
    }
    out.sort_by_key(|(d, _)| *d);
    out.into_iter().map(|(_, s)| s).collect()
}

impl PanelSet {
    /// Leaves out the instruments (columns) named, from every panel and grouping; the time
    /// axis is kept as it is.
    pub fn without_symbols(&mut self, symbols: &[&str]) {
        let keep: Vec<usize> = (0..self.instruments.len())
            .filter(|&s| !symbols.contains(&self.instruments[s].symbol.as_str()))
            .collect();
        if keep.len() == self.instruments.len() {
            return;
        }
        for p in self.panels.values_mut() {
            let times = p.times();
            let data: Vec<f64> = keep
                .iter()
                .flat_map(|&s| p.column(s).iter().copied())
                .collect();
            // The kept columns, whole: the length always matches.
            if let Ok(kept) = Panel::from_columns(times, keep.len(), data) {
                *p = kept;
            }
        }
        for labels in self.groups.values_mut() {
            *labels = keep.iter().map(|&s| labels[s].clone()).collect();
        }
        for name in symbols {
            self.rolls.remove(*name);
            self.stray.remove(*name);
        }
        self.sources = keep.iter().map(|&s| self.sources[s].clone()).collect();
        self.instruments = keep.iter().map(|&s| self.instruments[s].clone()).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::{AssetClass, Instrument};
    use crate::time::{AsOf, Frequency, Timestamp};
    use std::collections::BTreeMap;

    /// A set of closes, one column per symbol, 600 daily bars.
    fn set(cols: &[(&str, Vec<f64>)]) -> PanelSet {
        let t = cols[0].1.len();
        let mut close = Panel::nan(t, cols.len());
        for (k, (_, c)) in cols.iter().enumerate() {
            close.column_mut(k).copy_from_slice(c);
        }
        let mut panels = BTreeMap::new();
        panels.insert(Field::Close, close);
        PanelSet {
            as_of: AsOf::LATEST,
            frequency: Frequency::Daily,
            times: (0..t as i64).map(|d| Timestamp(d * 86_400)).collect(),
            instruments: cols
                .iter()
                .map(|(s, _)| Instrument {
                    symbol: s.to_string(),
                    exchange: None,
                    asset_class: AssetClass::Index,
                })
                .collect(),
            sources: vec!["d".into(); cols.len()],
            panels,
            rolls: BTreeMap::new(),
            stray: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// A random walk of `n` closes from a seed (a small LCG: no dependency).
    fn walk(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut c = 100.0;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                c *= (0.02 * u).exp();
                c
            })
            .collect()
    }

    #[test]
    fn one_index_from_two_sources_is_kept_once_and_a_close_cousin_is_not() {
        let spx = walk(600, 1);
        // The same index from another source: rounded to cents, starting later.
        let copy: Vec<f64> = spx
            .iter()
            .enumerate()
            .map(|(t, c)| {
                if t < 200 {
                    f64::NAN
                } else {
                    (c * 100.0).round() / 100.0
                }
            })
            .collect();
        // A share class of the same company: mostly the same moves, its own noise.
        let noise = walk(600, 9);
        let cousin: Vec<f64> = spx
            .iter()
            .zip(&noise)
            .map(|(a, b)| a * (b / 100.0).powf(0.15))
            .collect();
        let other = walk(600, 2);
        let mut s = set(&[
            ("COPY", copy),
            ("SPX", spx),
            ("COUSIN", cousin),
            ("OTHER", other),
        ]);
        let found = same_series(&s, 0..600);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].symbol.as_str(), found[0].same_as.as_str()),
            ("COPY", "SPX")
        );
        assert!(found[0].correlation > 0.999 && found[0].shared == 399);
        // The cousin correlates highly, and is not the same series.
        let cols = |s: &PanelSet| {
            (0..4.min(s.instruments.len()))
                .map(|k| returns(s.panel(Field::Close).unwrap(), k, &(0..600)).0)
                .collect::<Vec<_>>()
        };
        let r = cols(&s);
        let (rho, _) = correlation(&r[1], &r[2], usize::MAX);
        assert!(rho > 0.9 && rho < SAME_CORRELATION, "{rho}");
        // Too few shared bars to tell: nothing found.
        assert!(same_series(&s, 0..300).is_empty());

        s.without_symbols(&["COPY"]);
        let names: Vec<&str> = s.instruments.iter().map(|i| i.symbol.as_str()).collect();
        assert_eq!(names, ["SPX", "COUSIN", "OTHER"]);
        assert_eq!(s.sources.len(), 3);
        let close = s.panel(Field::Close).unwrap();
        assert_eq!((close.times(), close.symbols()), (600, 3));
        assert_eq!(close.column(0), walk(600, 1).as_slice());
        assert!(same_series(&s, 0..600).is_empty());
    }
}
