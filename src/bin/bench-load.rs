//! Load benchmark: a market-data file into close and volume panels.
//!
//! `bench-load [--mode parse|first|cached] [--reps N] FILE` prints one JSON line with the
//! seconds per load (min and median), the panel bytes and the peak RSS of one load. Run each
//! mode in its own process so that the peak RSS belongs to that mode alone; `bench/load.sh`
//! does that and runs the pandas peer beside it.
//!
//! * `parse`: parse the CSV, no cache at all.
//! * `first`: parse and write the binary cache (a fresh cache directory each repetition).
//! * `cached`: read from a cache written beforehand.

#[allow(dead_code)] // shared by the benchmarks; this one reads only the peak RSS
mod common;

use common::peak_rss_mb;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use lim_market::{Cache, Catalog, Field, LoadSource};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut mode, mut reps, mut file, mut dir) = (
        "parse".to_string(),
        3usize,
        None::<PathBuf>,
        None::<PathBuf>,
    );
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => mode = args.next().context("--mode needs a value")?,
            "--reps" => reps = args.next().context("--reps needs a value")?.parse()?,
            "--cache-dir" => dir = Some(args.next().context("--cache-dir needs a value")?.into()),
            _ => file = Some(PathBuf::from(a)),
        }
    }
    let file = file.context(
        "usage: bench-load [--mode parse|first|cached] [--reps N] [--cache-dir DIR] FILE",
    )?;
    let name = lim_market::source::dataset_name(&file)
        .context("FILE must be NAME.csv, NAME.csv.gz or NAME.parquet")?;
    let scratch = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| scratch.path().to_path_buf());
    let fields = [Field::Close, Field::Volume];
    if mode == "cached"
        && Catalog::single_file(&file, Some(Cache::new(&dir)))?
            .load(&name, &[])?
            .1
            != LoadSource::Cache
    {
        eprintln!(
            "note: the cache was written by this process; for a clean peak RSS run `--mode first --reps 1 --cache-dir DIR` first"
        );
    }
    let mut times = Vec::new();
    let mut shape = (0, 0, 0);
    let mut peak_first = f64::NAN;
    for rep in 0..reps {
        let cache = match mode.as_str() {
            "parse" => None,
            "first" => Some(Cache::new(if rep == 0 {
                dir.clone()
            } else {
                dir.join(format!("rep{rep}"))
            })),
            "cached" => Some(Cache::new(&dir)),
            other => bail!("unknown mode '{other}', expected parse, first or cached"),
        };
        let t0 = Instant::now();
        let (ds, source) = Catalog::single_file(&file, cache)?.load(&name, &fields)?;
        times.push(t0.elapsed().as_secs_f64());
        match (&source, mode.as_str()) {
            (LoadSource::Cache, "cached") | (LoadSource::Parsed { cache_error: None }, _) => {}
            _ => bail!("mode {mode}: unexpected load source {source:?}"),
        }
        let bytes: usize = ds.fields.values().map(|v| v.len() * 8).sum();
        shape = (ds.meta.rows, ds.meta.symbols.len(), bytes);
        std::hint::black_box(&ds);
        drop(ds);
        if rep == 0 {
            // The allocator keeps freed pages across repetitions, so the peak that belongs to
            // one load is the one after the first.
            peak_first = peak_rss_mb();
        }
    }
    times.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "tool": "lim",
        "mode": mode,
        "path": file.file_name().map(|n| n.to_string_lossy().into_owned()),
        "rows": shape.0,
        "symbols": shape.1,
        "panel_bytes": shape.2,
        "seconds_min": times.first(),
        "seconds_median": times[times.len() / 2],
        "peak_rss_mb": peak_first,
    });
    println!("{out}");
    Ok(())
}
