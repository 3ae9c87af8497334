//! A run's or a backtest's results as tables for pandas, polars and DuckDB: `metrics` (one row
//! per strategy or baseline and part, every metric of the report) and `returns` (one row per
//! bar and book: net return, and rank IC for strategies), written as Parquet or CSV.

use std::path::{Path, PathBuf};

use lim_backtest::metrics::Metrics;
use lim_market::Part;
use lim_market::parquet::{Column, Format, Table};
use lim_market::reader::TsForm;

use super::{CurveKind, Curves, PartRow, Summary};

/// What a row of the metrics table describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// A strategy that was searched or asked for.
    Strategy,
    /// A finalist of a run.
    Finalist,
    /// The finalists' equal-risk combination.
    Combined,
    /// A baseline.
    Baseline,
}

impl RowKind {
    fn as_str(self) -> &'static str {
        match self {
            RowKind::Strategy => "strategy",
            RowKind::Finalist => "finalist",
            RowKind::Combined => "combined",
            RowKind::Baseline => "baseline",
        }
    }
}

fn part_name(p: Part) -> &'static str {
    match p {
        Part::Train => "train",
        Part::Validation => "validation",
        Part::Test => "test",
    }
}

/// The metrics table: `name, kind, part`, one column per metric (as the JSON report names
/// them), then `signal`.
pub fn metrics_table(rows: &[(RowKind, PartRow)]) -> Table {
    let values: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|(_, r)| match serde_json::to_value(r.metrics) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        })
        .collect();
    let mut t = Table::default()
        .with(
            "name",
            Column::Text(rows.iter().map(|(_, r)| r.name.clone()).collect()),
        )
        .with(
            "kind",
            Column::Text(rows.iter().map(|(k, _)| k.as_str().to_string()).collect()),
        )
        .with(
            "part",
            Column::Text(
                rows.iter()
                    .map(|(_, r)| part_name(r.part).to_string())
                    .collect(),
            ),
        );
    let names: Vec<String> = values
        .first()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        let col: Vec<f64> = values.iter().map(|m| number(m.get(&name))).collect();
        t = t.with(&name, Column::Real(col));
    }
    // Last: a signal may hold commas (quoted in CSV).
    t.with(
        "signal",
        Column::Text(rows.iter().map(|(_, r)| r.signal.clone()).collect()),
    )
}

/// A metric as written by the JSON report: a number, or NaN/±inf spelled out (see
/// `lim_backtest::nonfinite`).
fn number(v: Option<&serde_json::Value>) -> f64 {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(serde_json::Value::String(s)) if s == "inf" => f64::INFINITY,
        Some(serde_json::Value::String(s)) if s == "-inf" => f64::NEG_INFINITY,
        _ => f64::NAN,
    }
}

/// The returns table: `ts, part, name, kind, net_return, rank_ic`, one row per bar and book
/// where the book traded (strategies' rank IC where it was defined, else empty).
pub fn returns_table(curves: &Curves) -> Table {
    let mut ts = Vec::new();
    let mut part = Vec::new();
    let mut name = Vec::new();
    let mut kind = Vec::new();
    let mut net = Vec::new();
    let mut ic = Vec::new();
    let part_of = |i: usize| {
        curves
            .parts
            .iter()
            .find(|(_, a, b)| (*a..*b).contains(&i))
            .map_or("gap", |(p, _, _)| part_name(*p))
    };
    for c in &curves.series {
        let k = match c.kind {
            CurveKind::Finalist => "strategy",
            CurveKind::Combined => "combined",
            CurveKind::Baseline => "baseline",
        };
        for (i, r) in c.net.iter().enumerate() {
            let Some(r) = r else { continue };
            let Some(t) = curves.times.get(i) else {
                continue;
            };
            ts.push(t.0);
            part.push(part_of(i).to_string());
            name.push(c.name.clone());
            kind.push(k.to_string());
            net.push(*r);
            ic.push(c.rank_ic.get(i).copied().flatten().unwrap_or(f64::NAN));
        }
    }
    let daily = ts.iter().all(|t| t % lim_market::time::DAY == 0);
    Table::default()
        .with(
            "ts",
            Column::Time(
                ts,
                if daily {
                    TsForm::Date
                } else {
                    TsForm::DateTime
                },
            ),
        )
        .with("part", Column::Text(part))
        .with("name", Column::Text(name))
        .with("kind", Column::Text(kind))
        .with("net_return", Column::Real(net))
        .with("rank_ic", Column::Real(ic))
}

/// A run's tables: metrics of the leaderboard (training and validation), the finalists, their
/// combination and the baselines (validation and the sealed test), and, when the run kept its
/// curves, the returns.
pub fn run_tables(summary: &Summary, curves: Option<&Curves>) -> Vec<(&'static str, Table)> {
    let mut rows = Vec::new();
    let row = |kind, name: &str, signal: &str, part, m: &Metrics| {
        (
            kind,
            PartRow {
                name: name.to_string(),
                signal: signal.to_string(),
                part,
                metrics: *m,
            },
        )
    };
    for e in &summary.leaderboard {
        let name = format!("#{}", e.rank);
        rows.push(row(
            RowKind::Strategy,
            &name,
            &e.signal,
            Part::Train,
            &e.train,
        ));
        rows.push(row(
            RowKind::Strategy,
            &name,
            &e.signal,
            Part::Validation,
            &e.validation,
        ));
    }
    for (i, f) in summary.finalists.iter().enumerate() {
        let name = format!("finalist {}", i + 1);
        rows.push(row(
            RowKind::Finalist,
            &name,
            &f.signal,
            Part::Validation,
            &f.validation,
        ));
        rows.push(row(
            RowKind::Finalist,
            &name,
            &f.signal,
            Part::Test,
            &f.test,
        ));
    }
    if let Some(c) = &summary.combined {
        let signal = c.members.join(" + ");
        rows.push(row(
            RowKind::Combined,
            "combined",
            &signal,
            Part::Validation,
            &c.validation,
        ));
        rows.push(row(
            RowKind::Combined,
            "combined",
            &signal,
            Part::Test,
            &c.test,
        ));
    }
    for b in &summary.baselines {
        rows.push(row(
            RowKind::Baseline,
            &b.name,
            &b.signal,
            Part::Validation,
            &b.validation,
        ));
        rows.push(row(
            RowKind::Baseline,
            &b.name,
            &b.signal,
            Part::Test,
            &b.test,
        ));
    }
    let mut out = vec![("metrics", metrics_table(&rows))];
    if let Some(c) = curves {
        out.push(("returns", returns_table(c)));
    }
    out
}

/// Writes each table to `dir/<name>.<ext>` and returns the paths.
///
/// # Errors
/// The directory cannot be made or a file written.
pub fn write_tables(
    dir: &Path,
    tables: &[(&str, Table)],
    format: Format,
) -> Result<Vec<PathBuf>, lim_market::MarketError> {
    std::fs::create_dir_all(dir).map_err(|source| lim_market::MarketError::Io {
        action: "cannot create the export directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for (name, table) in tables {
        let path = dir.join(format!("{name}.{}", format.extension()));
        table.write(&path, format)?;
        paths.push(path);
    }
    Ok(paths)
}
