//! Parquet datasets load like their CSV twins, bit for bit, and bad Parquet files are refused
//! with the file, the column and the fix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;

use lim_market::parquet::{Column, Format, Table};
use lim_market::reader::{self, ReadOptions, TsForm};
use lim_market::{AsOf, Catalog, Field, PanelQuery, PanelSet, RollPolicy};

fn panels(catalog: &Catalog, name: &str) -> PanelSet {
    let q = PanelQuery::new(AsOf::LATEST, [name])
        .fields(Field::ALL)
        .roll(RollPolicy::BackAdjust);
    catalog.panels(&q).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_same(a: &PanelSet, b: &PanelSet, what: &str) {
    assert_eq!(a.times, b.times, "{what}: times");
    assert_eq!(a.instruments, b.instruments, "{what}: instruments");
    assert_eq!(a.rolls, b.rolls, "{what}: rolls");
    assert_eq!(
        a.panels.keys().collect::<Vec<_>>(),
        b.panels.keys().collect::<Vec<_>>(),
        "{what}: fields"
    );
    for (f, p) in &a.panels {
        let q = &b.panels[f];
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(p.values()) == bits(q.values()),
            "{what}: {f:?} differs"
        );
    }
}

/// Every bundled dataset (daily and 5-minute, with and without open interest) written as
/// Parquet loads to the same panels as its CSV.
#[test]
fn a_dataset_written_as_parquet_loads_to_the_same_panel_as_its_csv() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = Catalog::bundled(None);
    for (file, bytes) in lim_market::sample::FILES {
        let name = file.trim_end_matches(".csv.gz");
        let (raw, problems) = reader::read(
            Box::new(std::io::Cursor::new(bytes.to_vec())),
            file,
            ReadOptions::LOAD,
            None,
            None,
        );
        assert_eq!(problems.total, 0, "{file}");
        Table::of_raw(&raw)
            .write(&dir.path().join(format!("{name}.parquet")), Format::Parquet)
            .unwrap();
        let from_parquet = Catalog::open_dir(dir.path(), None).unwrap();
        let a = panels(&bundled, name);
        let b = panels(&from_parquet, name);
        assert!(!a.times.is_empty());
        assert_same(&a, &b, name);
        let (ma, mb) = (
            bundled.meta(name).unwrap(),
            from_parquet.meta(name).unwrap(),
        );
        assert_eq!(ma.frequency, mb.frequency, "{name}");
        assert_eq!(ma.rows, mb.rows, "{name}");
        assert_eq!(ma.has_open_interest, mb.has_open_interest, "{name}");
    }
}

/// Writes a one-dataset directory holding `table` as `mine.parquet` and returns the load error.
fn load_error(table: &Table) -> String {
    let dir = tempfile::tempdir().unwrap();
    table
        .write(&dir.path().join("mine.parquet"), Format::Parquet)
        .unwrap();
    let catalog = Catalog::open_dir(dir.path(), None).unwrap();
    match catalog.load("mine", &[Field::Close]) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn good() -> Table {
    let day = 86_400;
    Table::default()
        .with(
            "ts",
            Column::Time(vec![19_000 * day, 19_001 * day], TsForm::Date),
        )
        .with("symbol", Column::Text(vec!["A".into(), "A".into()]))
        .with("open", Column::Real(vec![1.0, 1.1]))
        .with("high", Column::Real(vec![1.2, 1.3]))
        .with("low", Column::Real(vec![0.9, 1.0]))
        .with("close", Column::Real(vec![1.1, 1.2]))
        .with("volume", Column::Real(vec![10.0, 12.0]))
}

fn replace(table: Table, name: &str, column: Option<Column>) -> Table {
    let mut columns: Vec<(String, Column)> = Vec::new();
    for (n, c) in table.columns {
        if n == name {
            if let Some(c) = column.clone() {
                columns.push((n, c));
            }
        } else {
            columns.push((n, c));
        }
    }
    Table { columns }
}

#[test]
fn the_good_table_loads() {
    let dir = tempfile::tempdir().unwrap();
    good()
        .write(&dir.path().join("mine.parquet"), Format::Parquet)
        .unwrap();
    let (ds, _) = Catalog::open_dir(dir.path(), None)
        .unwrap()
        .load("mine", &[Field::Close])
        .unwrap();
    assert_eq!(ds.series(Field::Close, 0).unwrap(), [1.1, 1.2]);
}

#[test]
fn a_column_of_the_wrong_type_is_named_with_the_fix() {
    let e = load_error(&replace(
        good(),
        "close",
        Some(Column::Text(vec!["1.1".into(), "1.2".into()])),
    ));
    assert!(e.contains("mine.parquet"), "{e}");
    assert!(e.contains("column 6 (close)"), "{e}");
    assert!(e.contains("has type BYTE_ARRAY, expected a number"), "{e}");
    assert!(e.contains("cast the column before writing"), "{e}");
}

#[test]
fn a_missing_column_is_named() {
    let e = load_error(&replace(good(), "volume", None));
    assert!(e.contains("mine.parquet"), "{e}");
    assert!(e.contains("column 'volume' is missing"), "{e}");
}

#[test]
fn a_column_shadowing_a_field_is_named_and_pandas_index_is_ignored() {
    let e = load_error(&good().with("vwap", Column::Real(vec![1.0, 1.0])));
    assert!(
        e.contains("column 8 (vwap): extra column 'vwap' repeats or shadows a field of the format; rename or drop it"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    good()
        .with("__index_level_0__", Column::Int(vec![0, 1]))
        .write(&dir.path().join("mine.parquet"), Format::Parquet)
        .unwrap();
    assert!(
        Catalog::open_dir(dir.path(), None)
            .unwrap()
            .load("mine", &[Field::Close])
            .is_ok()
    );
}

#[test]
fn rows_break_the_csv_rules_by_row_number() {
    let unsorted = replace(
        good(),
        "ts",
        Some(Column::Time(
            vec![19_001 * 86_400, 19_000 * 86_400],
            TsForm::Date,
        )),
    );
    let e = load_error(&unsorted);
    assert!(
        e.contains(
            "row 2, column 1 (ts): rows are not sorted: 2022-01-08 comes after a later bar at row 1"
        ),
        "{e}"
    );
    let e = load_error(&replace(
        good(),
        "low",
        Some(Column::Real(vec![0.9, f64::NAN])),
    ));
    assert!(
        e.contains("row 2, column 5 (low): low is null, expected a positive price"),
        "{e}"
    );
    let e = load_error(&replace(
        good(),
        "open",
        Some(Column::Real(vec![1.0, -1.0])),
    ));
    assert!(
        e.contains("row 2, column 3 (open): -1 is out of range"),
        "{e}"
    );
}

#[test]
fn a_file_that_is_not_parquet_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.parquet"), "ts,symbol\n").unwrap();
    let e = Catalog::open_dir(dir.path(), None)
        .unwrap()
        .load("mine", &[Field::Close])
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("mine.parquet"), "{e}");
    assert!(e.contains("not a readable Parquet file"), "{e}");
}

#[test]
fn a_dataset_in_two_files_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    good()
        .write(&dir.path().join("mine.parquet"), Format::Parquet)
        .unwrap();
    good()
        .write(&dir.path().join("mine.csv"), Format::Csv)
        .unwrap();
    let e = Catalog::open_dir(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("two files hold dataset 'mine'"), "{e}");
}

/// A CSV table written by `Table` is a valid uniform CSV file.
#[test]
fn a_table_written_as_csv_is_the_uniform_format() {
    let dir = tempfile::tempdir().unwrap();
    good()
        .write(&dir.path().join("mine.csv"), Format::Csv)
        .unwrap();
    let text = std::fs::read_to_string(dir.path().join("mine.csv")).unwrap();
    assert_eq!(
        text,
        "ts,symbol,open,high,low,close,volume\n2022-01-08,A,1,1.2,0.9,1.1,10\n2022-01-09,A,1.1,1.3,1,1.2,12\n"
    );
    assert!(check(&dir.path().join("mine.csv")));
}

fn check(path: &Path) -> bool {
    lim_market::check_file(path, 10).unwrap().total_problems == 0
}

/// `groups.parquet` (text columns) is read like `groups.csv`, and is not taken for a dataset.
#[test]
fn groups_parquet_reads_like_groups_csv() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(
        a.path().join("groups.csv"),
        "symbol,sector,industry\nA,Tech,Chips\nB,Energy,\n",
    )
    .unwrap();
    Table::default()
        .with("symbol", Column::Text(vec!["A".into(), "B".into()]))
        .with("sector", Column::Text(vec!["Tech".into(), "Energy".into()]))
        .with(
            "industry",
            Column::Text(vec!["Chips".into(), String::new()]),
        )
        .write(&b.path().join("groups.parquet"), Format::Parquet)
        .unwrap();
    for d in [&a, &b] {
        good()
            .write(&d.path().join("mine.parquet"), Format::Parquet)
            .unwrap();
    }
    let csv = Catalog::open_dir(a.path(), None).unwrap();
    let pq = Catalog::open_dir(b.path(), None).unwrap();
    assert_eq!(pq.names().collect::<Vec<_>>(), ["mine"]);
    let (x, y) = (csv.group_table().unwrap(), pq.group_table().unwrap());
    assert_eq!((&x.names, &x.rows), (&y.names, &y.rows));
    assert_eq!(y.rows["B"], [Some("Energy".to_string()), None]);
}

/// Timestamps written as text load like dates; a text file that mixes dates and date-times is
/// refused as the CSV reader refuses it.
#[test]
fn text_timestamps_load_like_dates_and_mixed_forms_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    replace(
        good(),
        "ts",
        Some(Column::Text(vec!["2022-01-08".into(), "2022-01-09".into()])),
    )
    .write(&dir.path().join("mine.parquet"), Format::Parquet)
    .unwrap();
    let (ds, _) = Catalog::open_dir(dir.path(), None)
        .unwrap()
        .load("mine", &[Field::Close])
        .unwrap();
    let (want, _) = {
        let d = tempfile::tempdir().unwrap();
        good()
            .write(&d.path().join("mine.parquet"), Format::Parquet)
            .unwrap();
        Catalog::open_dir(d.path(), None)
            .unwrap()
            .load("mine", &[Field::Close])
            .unwrap()
    };
    assert_eq!(ds.times, want.times);
    assert_eq!(ds.meta.frequency, want.meta.frequency);
    let e = load_error(&replace(
        good(),
        "ts",
        Some(Column::Text(vec![
            "2022-01-08".into(),
            "2022-01-09T10:00:00Z".into(),
        ])),
    ));
    assert!(e.contains("row 2, column 1 (ts): mixed frequencies"), "{e}");
}
