//! Every kind of bad input gets an error naming the file, line, column and what was expected,
//! and loading never touches the user's files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::io::Write;
use std::path::{Path, PathBuf};

use lim_market::{AsOf, Cache, Catalog, Field, MarketError, PanelQuery, check_file};

const HEADER: &str = "ts,symbol,open,high,low,close,volume\n";

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
    p
}

/// The error of loading a one-file catalog.
fn load_error(body: &str) -> String {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "mine.csv", body);
    let catalog = Catalog::open_dir(dir.path(), None).unwrap_or_else(|e| panic!("{e}"));
    match catalog.load("mine", &[Field::Close]) {
        Ok(_) => panic!("expected an error for {body:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_header_names_the_field_and_the_expected_header() {
    let e = load_error("date,symbol,open,high,low,close,volume\n2024-01-02,A,1,1,1,1,1\n");
    assert!(e.contains("mine.csv' line 1, column 1"), "{e}");
    assert!(e.contains("field 1 is 'date', expected 'ts'"), "{e}");
    assert!(
        e.contains("ts,symbol,open,high,low,close,volume[,open_interest]"),
        "{e}"
    );
}

#[test]
fn non_numeric_and_non_positive_prices_are_located() {
    let e = load_error(&format!(
        "{HEADER}2024-01-02,A,1,2,0.5,1.5,100\n2024-01-03,A,1,2,abc,1.5,100\n"
    ));
    assert!(
        e.contains("line 3, column 18 (low): 'abc' is not a number, expected a positive price"),
        "{e}"
    );
    let e = load_error(&format!("{HEADER}2024-01-02,A,-37.63,2,0.5,1.5,100\n"));
    assert!(
        e.contains("line 2, column 14 (open): -37.63 is out of range, expected a positive price"),
        "{e}"
    );
    let e = load_error(&format!("{HEADER}2024-01-02,A,1,2,0.5,1.5,-3\n"));
    assert!(
        e.contains("(volume): -3 is out of range, expected a non-negative number"),
        "{e}"
    );
}

#[test]
fn duplicates_and_unsorted_rows_point_at_both_lines() {
    let e = load_error(&format!(
        "{HEADER}2024-01-02,A,1,1,1,1,1\n2024-01-02,A,1,1,1,1,1\n"
    ));
    assert!(
        e.contains(
            "line 3, column 1 (ts): duplicate row for (A, 2024-01-02): the same bar is at line 2"
        ),
        "{e}"
    );
    let e = load_error(&format!(
        "{HEADER}2024-01-03,A,1,1,1,1,1\n2024-01-02,A,1,1,1,1,1\n"
    ));
    assert!(
        e.contains("line 3")
            && e.contains("not sorted")
            && e.contains("line 2; sort rows by symbol, then ts"),
        "{e}"
    );
    let e = load_error(&format!(
        "{HEADER}2024-01-02,A,1,1,1,1,1\n2024-01-02,B,1,1,1,1,1\n2024-01-03,A,1,1,1,1,1\n"
    ));
    assert!(
        e.contains(
            "line 4, column 12 (symbol): rows of 'A' appear again after its block ended at line 2"
        ),
        "{e}"
    );
}

#[test]
fn mixed_frequencies_are_refused() {
    let e = load_error(&format!(
        "{HEADER}2024-01-02,A,1,1,1,1,1\n2024-01-03T10:00:00Z,A,1,1,1,1,1\n"
    ));
    assert!(
        e.contains("line 3, column 1 (ts): mixed frequencies"),
        "{e}"
    );
    let mut body = HEADER.to_string();
    for m in 0..10 {
        body.push_str(&format!("2024-01-02T10:{:02}:00Z,A,1,1,1,1,1\n", m * 5));
    }
    for h in 0..10 {
        body.push_str(&format!("2024-01-02T{:02}:00:00Z,B,1,1,1,1,1\n", h + 10));
    }
    let e = load_error(&body);
    assert!(
        e.contains("mixed frequencies: most bars are 5min apart but 'B' moves in 1h steps"),
        "{e}"
    );
}

#[test]
fn empty_header_only_and_truncated_files() {
    assert!(load_error("").contains("the file is empty, expected the header"));
    assert!(load_error(HEADER).contains("line 2: no data rows after the header"));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut body = HEADER.to_string();
    for d in 0..2000 {
        body.push_str(&format!(
            "{},A,1,1,1,1,{d}\n",
            lim_market::Timestamp(d * 86_400).date_string()
        ));
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let gz = enc.finish().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("cut.csv.gz");
    std::fs::write(&path, &gz[..gz.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let catalog = Catalog::open_dir(dir.path(), None).unwrap_or_else(|e| panic!("{e}"));
    let e = catalog
        .load("cut", &[Field::Close])
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cut.csv.gz") && e.contains("gzip stream ends early"),
        "{e}"
    );
}

#[test]
fn unknown_dataset_and_symbol_suggest_the_near_name() {
    let catalog = Catalog::bundled(None);
    let e = catalog
        .load("cn_future_daily", &[])
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("unknown dataset 'cn_future_daily' (did you mean 'cn_futures_daily'?)"),
        "{e}"
    );
    let q = PanelQuery::new(AsOf::LATEST, ["cn_futures_daily"]).symbols(["SHFE:CU"]);
    let e = catalog.panels(&q).map(|_| ()).unwrap_err();
    assert!(matches!(e, MarketError::UnknownSymbol { .. }));
    assert!(
        e.to_string().contains(
            "unknown symbol 'SHFE:CU' in dataset(s) cn_futures_daily (did you mean 'SHFE:CU0'?)"
        ),
        "{e}"
    );
}

#[test]
fn check_reports_every_problem_up_to_the_cap_and_keeps_counting() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut body = HEADER.to_string();
    for d in 0..30 {
        body.push_str(&format!(
            "{},A,1,1,1,{},1\n",
            lim_market::Timestamp(d * 86_400).date_string(),
            if d % 3 == 0 { "x" } else { "1" }
        ));
    }
    let p = write(dir.path(), "many.csv", &body);
    let r = check_file(&p, 4).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.problems.len(), r.total_problems, r.rows_ok), (4, 10, 20));
    assert_eq!(r.problems[1].line, 5);
    assert_eq!(r.problems[1].field.as_deref(), Some("close"));
}

#[test]
fn loading_never_writes_to_the_data_directory_or_its_files() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        data.path(),
        "mine.csv",
        &format!("{HEADER}2024-01-02,A,1,2,0.5,1.5,100\n"),
    );
    let before = (
        std::fs::read(&p).ok(),
        std::fs::metadata(&p).and_then(|m| m.modified()).ok(),
    );
    let catalog = Catalog::open_dir(data.path(), Some(Cache::new(cache.path())))
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..2 {
        catalog
            .load("mine", &[Field::Close])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let after = (
        std::fs::read(&p).ok(),
        std::fs::metadata(&p).and_then(|m| m.modified()).ok(),
    );
    assert_eq!(before, after);
    let names: Vec<_> = std::fs::read_dir(data.path())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["mine.csv"]);
}
