//! Extra numeric columns of a data file (`cap`, `shares`, …) are fields: read from CSV and
//! Parquet alike, kept by the cache, placed in panels (NaN where a dataset lacks them), and
//! refused with the column and the fix when their name or a value is unusable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;

use lim_market::parquet::{Format, Table};
use lim_market::{AsOf, Cache, Catalog, Field, PanelQuery, PanelSet, RollPolicy};

const EQUITIES: &str = "ts,symbol,open,high,low,close,volume,cap,shares\n\
2024-01-02,AAA,10,11,9,10,100,1000.5,100\n\
2024-01-03,AAA,10,12,10,11,120,,100\n\
2024-01-04,AAA,11,12,10,12,130,1200,\n\
2024-01-02,BBB,20,21,19,20,50,-3,7\n\
2024-01-04,BBB,20,22,20,21,60,2100,7\n";

const OTHER: &str = "ts,symbol,open,high,low,close,volume\n\
2024-01-03,CCC,5,6,4,5,10\n\
2024-01-04,CCC,5,6,4,6,11\n";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn query(datasets: &[&str]) -> PanelQuery {
    PanelQuery::new(AsOf::LATEST, datasets.iter().copied())
        .fields([Field::Close])
        .extra_fields(true)
        .roll(RollPolicy::None)
}

fn column(set: &PanelSet, field: &str, symbol: &str) -> Vec<f64> {
    let p = set
        .panel(Field::extra(field))
        .unwrap_or_else(|| panic!("no {field} panel"));
    p.column(set.column_of(symbol).unwrap()).to_vec()
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn same_set(a: &PanelSet, b: &PanelSet) -> bool {
    a.times == b.times
        && a.instruments == b.instruments
        && a.panels.len() == b.panels.len()
        && a.panels.iter().all(|(f, p)| {
            b.panels
                .get(f)
                .is_some_and(|q| same(p.values(), q.values()))
        })
}

#[test]
fn extra_columns_are_fields_in_panels_from_csv_cache_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "eq.csv", EQUITIES);
    write(dir.path(), "other.csv", OTHER);
    let cache = tempfile::tempdir().unwrap();
    let catalog = Catalog::open_dir(dir.path(), Some(Cache::new(cache.path()))).unwrap();
    let meta = catalog.meta("eq").unwrap();
    assert_eq!(meta.extra_fields, ["cap", "shares"]);
    let names: Vec<&str> = meta.stored_fields().iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        ["open", "high", "low", "close", "volume", "cap", "shares"]
    );

    let set = catalog.panels(&query(&["eq", "other"])).unwrap();
    let nan = f64::NAN;
    // The union calendar is 01-02..01-04; empty cells and missing bars are NaN.
    assert!(same(&column(&set, "cap", "AAA"), &[1000.5, nan, 1200.0]));
    assert!(same(&column(&set, "cap", "BBB"), &[-3.0, nan, 2100.0]));
    assert!(same(&column(&set, "shares", "AAA"), &[100.0, 100.0, nan]));
    // A dataset without the column: NaN for its instruments.
    assert!(same(&column(&set, "cap", "CCC"), &[nan, nan, nan]));
    // Without the flag, no extra panel.
    let plain = catalog.panels(&query(&["eq"]).extra_fields(false)).unwrap();
    assert!(plain.panel(Field::extra("cap")).is_none());
    // Asked by name, it comes alone.
    let named = catalog
        .panels(
            &query(&["eq"])
                .extra_fields(false)
                .fields([Field::Close, Field::extra("shares")]),
        )
        .unwrap();
    assert!(named.panel(Field::extra("cap")).is_none());
    assert!(same(&column(&named, "shares", "AAA"), &[100.0, 100.0, nan]));

    // From the cache the second time: the same panels, bit for bit.
    let again = Catalog::open_dir(dir.path(), Some(Cache::new(cache.path()))).unwrap();
    let (_, source) = again.load("eq", &[Field::Close]).unwrap();
    assert_eq!(source, lim_market::LoadSource::Cache);
    let cached = again.panels(&query(&["eq", "other"])).unwrap();
    assert!(same_set(&cached, &set));

    // Written as Parquet (`lim data convert`), read back: the same panels; and back to CSV.
    let pq = tempfile::tempdir().unwrap();
    let report =
        lim_market::convert(&dir.path().join("eq.csv"), &pq.path().join("eq.parquet")).unwrap();
    assert_eq!(report.rows, 5);
    write(pq.path(), "other.csv", OTHER);
    let from_parquet = Catalog::open_dir(pq.path(), None).unwrap();
    assert_eq!(
        from_parquet.meta("eq").unwrap().extra_fields,
        ["cap", "shares"]
    );
    assert!(same_set(
        &from_parquet.panels(&query(&["eq", "other"])).unwrap(),
        &set
    ));
    lim_market::convert(&pq.path().join("eq.parquet"), &pq.path().join("back.csv")).unwrap();
    let back = std::fs::read_to_string(pq.path().join("back.csv")).unwrap();
    assert!(
        back.starts_with("ts,symbol,open,high,low,close,volume,cap,shares\n"),
        "{back}"
    );
}

fn load_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.csv", text);
    match Catalog::open_dir(dir.path(), None)
        .unwrap()
        .load("bad", &[Field::Close])
    {
        Ok(_) => panic!("expected an error for {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unusable_extra_columns_are_refused_with_the_column_and_the_fix() {
    let row = "2024-01-02,A,1,2,0.5,1.5,100,1\n";
    let e = load_error(&format!(
        "ts,symbol,open,high,low,close,volume,Market Cap\n{row}"
    ));
    assert!(
        e.contains("line 1, column 38 (Market Cap): extra column 'Market Cap' is not a usable field name; name it in lowercase letters"),
        "{e}"
    );
    let e = load_error(&format!(
        "ts,symbol,open,high,low,close,volume,returns\n{row}"
    ));
    assert!(
        e.contains("(returns): extra column 'returns' repeats or shadows a field of the format"),
        "{e}"
    );
    let e = load_error(&format!(
        "ts,symbol,open,high,low,close,volume,openinterest\n{row}"
    ));
    assert!(
        e.contains("looks like 'open_interest'; spell it so, right after volume"),
        "{e}"
    );
    let e = load_error(
        "ts,symbol,open,high,low,close,volume,cap,cap\n2024-01-02,A,1,2,0.5,1.5,100,1,2\n",
    );
    assert!(e.contains("column 'cap' appears twice; keep one"), "{e}");
    let e =
        load_error("ts,symbol,open,high,low,close,volume,cap\n2024-01-02,A,1,2,0.5,1.5,100,n/a\n");
    assert!(
        e.contains("line 2, column 30 (cap): 'n/a' is not a number, expected a number or nothing (extra column 'cap')"),
        "{e}"
    );
    let e = load_error("ts,symbol,open,high,low,close,volume,cap\n2024-01-02,A,1,2,0.5,1.5,100\n");
    assert!(
        e.contains("row has 7 fields, expected 8 (ts,symbol,open,high,low,close,volume,cap)"),
        "{e}"
    );
}

#[test]
fn open_interest_and_extra_columns_go_together() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "fut.csv",
        "ts,symbol,open,high,low,close,volume,open_interest,basis\n\
         2024-01-02,X,1,2,0.5,1.5,100,7,0.25\n2024-01-03,X,1.5,2,1,1.8,90,8,\n",
    );
    let catalog = Catalog::open_dir(dir.path(), None).unwrap();
    let meta = catalog.meta("fut").unwrap();
    assert!(meta.has_open_interest);
    assert_eq!(meta.extra_fields, ["basis"]);
    let set = catalog
        .panels(&query(&["fut"]).fields([Field::OpenInterest]))
        .unwrap();
    assert!(same(&column(&set, "basis", "X"), &[0.25, f64::NAN]));
    let oi = set.panel(Field::OpenInterest).unwrap().column(0).to_vec();
    assert_eq!(oi, [7.0, 8.0]);
    // Written out as a table, both are columns.
    let t = Table::of_raw(
        &lim_market::reader::read(
            Box::new(std::io::Cursor::new(
                std::fs::read(dir.path().join("fut.csv")).unwrap(),
            )),
            "fut.csv",
            lim_market::reader::ReadOptions::LOAD,
            None,
            None,
        )
        .0,
    );
    let out = dir.path().join("t.parquet");
    t.write(&out, Format::Parquet).unwrap();
    let names: Vec<&str> = t.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[7..], ["open_interest", "basis"]);
}
