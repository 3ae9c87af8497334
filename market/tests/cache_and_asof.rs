//! The binary cache, and the as-of guarantee: changing data after `t` never changes what a
//! query as of `t` returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;

use lim_market::{
    AsOf, Cache, Catalog, Field, Frequency, LoadSource, PanelQuery, PanelSet, RollPolicy, Timestamp,
};
use proptest::prelude::*;

fn catalog(data: &Path, cache: &Path) -> Catalog {
    Catalog::open_dir(data, Some(Cache::new(cache))).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn second_load_comes_from_the_cache_and_a_changed_source_is_reparsed() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = data.path().join("d.csv");
    let body = "ts,symbol,open,high,low,close,volume\n2024-01-02,A,1,2,0.5,1.5,100\n2024-01-03,A,1,2,0.5,1.75,100\n";
    std::fs::write(&file, body).unwrap_or_else(|e| panic!("{e}"));

    let (first, src) = catalog(data.path(), cache.path())
        .load("d", &[Field::Close])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(src, LoadSource::Parsed { cache_error: None });
    let (second, src) = catalog(data.path(), cache.path())
        .load("d", &[Field::Close])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(src, LoadSource::Cache);
    assert_eq!(first.fields, second.fields);
    assert_eq!(first.meta, second.meta);

    // A different size and mtime: the cache is stale.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&file, body.replace("1.75", "1.875")).unwrap_or_else(|e| panic!("{e}"));
    let (third, src) = catalog(data.path(), cache.path())
        .load("d", &[Field::Close])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(src, LoadSource::Parsed { .. }));
    assert_eq!(third.series(Field::Close, 0), Some(&[1.5, 1.875][..]));

    // A torn cache file is rebuilt, not trusted.
    for entry in std::fs::read_dir(cache.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        std::fs::write(entry.path(), &bytes[..bytes.len() - 8]).unwrap_or_else(|e| panic!("{e}"));
    }
    let (fourth, src) = catalog(data.path(), cache.path())
        .load("d", &[Field::Close])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(src, LoadSource::Parsed { .. }));
    assert_eq!(fourth.fields, third.fields);
}

#[test]
fn a_cache_holds_every_stored_field_whatever_the_first_load_asked_for() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = Catalog::bundled(Some(Cache::new(cache.path())));
    let (a, _) = c
        .load("cn_futures_daily", &[Field::Close])
        .unwrap_or_else(|e| panic!("{e}"));
    let c = Catalog::bundled(Some(Cache::new(cache.path())));
    let (b, src) = c
        .load("cn_futures_daily", &Field::STORED)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(src, LoadSource::Cache);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&a.fields[&Field::Close]) == bits(&b.fields[&Field::Close]));
    assert_eq!(b.fields.len(), 6);
    let (c2, _) = Catalog::bundled(None)
        .load("cn_futures_daily", &Field::STORED)
        .unwrap_or_else(|e| panic!("{e}"));
    // NaN-aware equality of everything read back from the cache against a fresh parse.
    for f in Field::STORED {
        let same = b.fields[&f]
            .iter()
            .zip(&c2.fields[&f])
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{f:?} differs after a cache round trip");
    }
}

/// A futures-like file: three symbols with open interest and volume patterns that trigger both
/// roll detectors, starting at different days.
fn futures_csv(prices: &[f64], bump: usize) -> String {
    let mut s = String::from("ts,symbol,open,high,low,close,volume,open_interest\n");
    for (k, sym) in ["SHFE:AA0", "SHFE:BB0", "CC=F"].iter().enumerate() {
        for (d, p) in prices.iter().enumerate().skip(k * 3) {
            let oi = if k < 2 {
                1000.0 + 500.0 * f64::from(u8::from((d + bump).is_multiple_of(17))) + d as f64
            } else {
                f64::NAN
            };
            let vol = if (d + k) % 13 == 11 || (d + k) % 13 == 12 {
                100.0
            } else {
                1000.0
            };
            let oi = if oi.is_nan() {
                String::new()
            } else {
                oi.to_string()
            };
            let ts = Timestamp(d as i64 * 86_400).date_string();
            s.push_str(&format!(
                "{ts},{sym},{},{},{},{},{vol},{oi}\n",
                p * 0.99,
                p * 1.02,
                p * 0.97,
                p
            ));
        }
    }
    s
}

fn query(data: &Path, as_of: AsOf, freq: Option<Frequency>) -> PanelSet {
    let c = Catalog::open_dir(data, None).unwrap_or_else(|e| panic!("{e}"));
    let mut q = PanelQuery::new(as_of, ["f"])
        .fields(Field::ALL)
        .roll(RollPolicy::BackAdjust);
    if let Some(f) = freq {
        q = q.frequency(f);
    }
    c.panels(&q).unwrap_or_else(|e| panic!("{e}"))
}

fn same(a: &PanelSet, b: &PanelSet) -> bool {
    a.times == b.times
        && a.rolls == b.rolls
        && a.stray == b.stray
        && a.panels.iter().all(|(f, p)| {
            b.panels.get(f).is_some_and(|q| {
                p.values()
                    .iter()
                    .zip(q.values())
                    .all(|(x, y)| x.to_bits() == y.to_bits())
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Perturbing every bar after the as-of day changes nothing in the answer, and the answer
    /// holds no bar after it: through roll detection, back-adjustment, returns and resampling.
    #[test]
    fn data_after_as_of_never_changes_a_query(
        steps in prop::collection::vec(-0.05f64..0.05, 60..120),
        cut_frac in 0.1f64..0.95,
        noise in prop::collection::vec(0.5f64..2.0, 120),
        weekly in any::<bool>(),
    ) {
        let mut prices = vec![100.0];
        for s in &steps {
            let last = prices[prices.len() - 1];
            prices.push(last * (1.0 + s));
        }
        let cut = ((prices.len() as f64) * cut_frac) as usize;
        let as_of = AsOf(Timestamp((cut as i64 + 1) * 86_400));
        let perturbed: Vec<f64> = prices.iter().enumerate().map(|(d, p)| if d > cut { p * noise[d % noise.len()] } else { *p }).collect();

        let a = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let b = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(a.path().join("f.csv"), futures_csv(&prices, 0)).unwrap_or_else(|e| panic!("{e}"));
        // The perturbed copy also moves the open-interest jumps; rows up to the cut are kept
        // byte-identical.
        let other = splice_prefix(&futures_csv(&prices, 0), &futures_csv(&perturbed, 5), cut);
        std::fs::write(b.path().join("f.csv"), other).unwrap_or_else(|e| panic!("{e}"));

        let freq = if weekly { None } else { Some(Frequency::Daily) };
        let pa = query(a.path(), as_of, freq);
        let pb = query(b.path(), as_of, freq);
        prop_assert!(pa.times.iter().all(|t| as_of.sees(*t, Frequency::Daily)));
        prop_assert!(same(&pa, &pb));
    }
}

/// Rows of `original` on or before day `cut`, rows of `changed` after it, per symbol.
fn splice_prefix(original: &str, changed: &str, cut: usize) -> String {
    let limit = Timestamp(cut as i64 * 86_400).date_string();
    let mut lines = original.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let keep = |l: &&str| l[..10] <= *limit;
    let mut out = vec![header];
    for sym in ["SHFE:AA0", "SHFE:BB0", "CC=F"] {
        let tag = format!(",{sym},");
        out.extend(
            original
                .lines()
                .skip(1)
                .filter(|l| l.contains(&tag))
                .filter(keep)
                .map(str::to_string),
        );
        out.extend(
            changed
                .lines()
                .skip(1)
                .filter(|l| l.contains(&tag))
                .filter(|l| !keep(l))
                .map(str::to_string),
        );
    }
    out.join("\n") + "\n"
}

/// Catalogs of one process loading one source at once, with one cache directory (the research
/// benchmark's runs, say): each writes its own whole cache file, none fails, and what is left
/// reads back as a fresh parse.
#[test]
fn loads_racing_to_cache_one_source_each_write_a_whole_file() {
    let fresh = Catalog::bundled(None)
        .load("cn_futures_daily", &Field::STORED)
        .unwrap_or_else(|e| panic!("{e}"))
        .0;
    for _ in 0..4 {
        let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let c = Catalog::bundled(Some(Cache::new(cache.path())));
                    start.wait();
                    let (_, src) = c
                        .load("cn_futures_daily", &[Field::Close])
                        .unwrap_or_else(|e| panic!("{e}"));
                    if let LoadSource::Parsed { cache_error } = src {
                        assert_eq!(cache_error, None, "a racing load could not write its cache");
                    }
                });
            }
        });
        let left: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 1, "temporary files left behind: {left:?}");
        let (cached, src) = Catalog::bundled(Some(Cache::new(cache.path())))
            .load("cn_futures_daily", &Field::STORED)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(src, LoadSource::Cache);
        for f in Field::STORED {
            let same = cached.fields[&f]
                .iter()
                .zip(&fresh.fields[&f])
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{f:?} differs after racing cache writes");
        }
    }
}
