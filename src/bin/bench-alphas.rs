//! Alpha benchmark: every alpha of an alphas file on a panel, with the reference top-50 book.
//!
//! `bench-alphas PANEL.csv.gz ALPHAS.txt [--out metrics.csv]` loads the panel (LIM's uniform
//! format; `bench/alphas.sh` writes the peer's seeded panel in it), evaluates all alphas as
//! one batch (shared sub-expressions computed once, strategies in parallel on rayon's pool:
//! set `RAYON_NUM_THREADS`), and prints one JSON line: CPU seconds per strategy, wall time,
//! threads, peak RSS and the panel's bytes. `--out` writes per-alpha metrics as CSV.
//! `--each` instead prints each expression's signal time alone (`NAME MS`, best of five), for
//! `bench/ops.sh`. `--values DIR` also writes each alpha's signal to `DIR/NAME.f64` (raw
//! little-endian doubles, instrument by instrument, each instrument's bars in order), for
//! `bench/alpha101.sh`'s agreement check. A `groups.csv` beside the panel gives its
//! groupings (sector, industry, ...); extra numeric columns (cap) are fields.
//! `LIM_BENCH_DETAIL=1` adds each alpha's CPU time and memory after loading;
//! `LIM_BENCH_SPLIT=1` then times each signal on its own apart from its book.

mod common;

use common::{cpu_seconds, peak_rss_mb};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use lim_backtest::topk::{self, TopK};
use lim_backtest::{Evaluator, frame, parse_with};
use lim_market::{AsOf, Catalog, Field, PanelQuery, RollPolicy};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let (out, values) = (flag("--out"), flag("--values"));
    let pos: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--")
                && (*i == 0 || !matches!(args[i - 1].as_str(), "--out" | "--values"))
        })
        .map(|(_, a)| a)
        .collect();
    let [panel, alphas] = pos.as_slice() else {
        bail!("usage: bench-alphas PANEL.csv.gz ALPHAS.txt [--out metrics.csv] [--each]");
    };
    let panel = PathBuf::from(panel);
    let name = lim_market::source::dataset_name(&panel).context("PANEL must be NAME.csv.gz")?;
    let cache = std::env::temp_dir().join("lim-bench-cache");
    let dir = panel.parent().unwrap_or(std::path::Path::new("."));
    let cache = Some(lim_market::Cache::new(cache));
    let catalog = if dir.join("groups.csv").exists() {
        Catalog::open_dir(dir, cache)?
    } else {
        Catalog::single_file(&panel, cache)?
    };
    let q = PanelQuery::new(AsOf::LATEST, [name])
        .fields(
            frame::FIELDS
                .into_iter()
                .filter(|f| *f != Field::OpenInterest),
        )
        .extra_fields(true)
        .roll(RollPolicy::None);
    let mut set = catalog.panels(&q)?;
    let stage = |what: &str| {
        if std::env::var_os("LIM_BENCH_DETAIL").is_some() {
            let now = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                    l.split_whitespace().nth(1)?.parse::<f64>().ok()
                })
                .unwrap_or(f64::NAN);
            eprintln!(
                "after {what}: peak RSS {:.0} MB, RSS {:.0} MB",
                peak_rss_mb(),
                now / 1024.0
            );
        }
    };
    stage("loading the panels");
    let frame = frame::take_panels(&mut set);
    // The frame holds its own copy; the panels are not needed any more.
    drop(set);
    let base_bytes: usize = ["open", "high", "low", "close", "volume"]
        .iter()
        .filter_map(|f| frame.fields.get(*f))
        .map(|m| m.data.len() * 8)
        .sum();
    let text = std::fs::read_to_string(alphas.as_str())?;
    let items: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('|')
                .map(|(n, e)| (n.trim().to_string(), e.trim().to_string()))
        })
        .collect();
    let (names, groups) = (frame.field_names(), frame.group_names());
    let exprs = items
        .iter()
        .map(|(n, e)| parse_with(e, &names, &groups).with_context(|| format!("alpha {n}")))
        .collect::<Result<Vec<_>, _>>()?;
    let fwd = topk::Target::new(&frame.fields["close"]);
    stage("building the frame and the target");

    if args.iter().any(|a| a == "--each") {
        // Each expression's signal alone, nothing shared: the best of five, in milliseconds.
        for (e, (name, _)) in exprs.iter().zip(&items) {
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                std::hint::black_box(Evaluator::new(&frame, &[]).signal(e));
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("{name} {:.2}", best * 1e3);
        }
        return Ok(());
    }

    let (c0, t0) = (cpu_seconds(), Instant::now());
    let eval = Evaluator::new(&frame, &exprs);
    // Strategies one after another, each operation parallel across instruments or bars: the
    // memory of one strategy at a time, both cores busy.
    let detail = std::env::var_os("LIM_BENCH_DETAIL").is_some();
    let metrics: Vec<_> = exprs
        .iter()
        .zip(&items)
        .map(|(e, (name, _))| {
            let c = cpu_seconds();
            let m = topk::backtest(&eval.signal(e), &fwd, &TopK::default());
            if detail {
                eprintln!("{name} {:.3}", cpu_seconds() - c);
            }
            m
        })
        .collect();
    let (cpu, wall) = (cpu_seconds() - c0, t0.elapsed().as_secs_f64());
    if std::env::var_os("LIM_BENCH_SPLIT").is_some() {
        // Where the time goes: each signal evaluated on its own (nothing shared), then booked.
        let (mut signals, mut books) = (0.0, 0.0);
        for e in &exprs {
            let c1 = cpu_seconds();
            let sig = Evaluator::new(&frame, &[]).signal(e);
            let c2 = cpu_seconds();
            std::hint::black_box(topk::backtest(&sig, &fwd, &TopK::default()));
            (signals, books) = (signals + c2 - c1, books + cpu_seconds() - c2);
        }
        let k = exprs.len().max(1) as f64;
        eprintln!(
            "per strategy: signal alone {:.3} CPU-s, book {:.3} CPU-s",
            signals / k,
            books / k
        );
    }

    if let Some(dir) = values {
        std::fs::create_dir_all(&dir)?;
        for (e, (name, _)) in exprs.iter().zip(&items) {
            let sig = eval.signal(e);
            let bytes: Vec<u8> = sig
                .values
                .data
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            std::fs::write(dir.join(format!("{name}.f64")), bytes)?;
        }
    }
    if let Some(path) = out {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(f, "name,ann_return,sharpe,max_dd,turnover,ic_mean,ic_ir")?;
        for ((n, _), m) in items.iter().zip(&metrics) {
            writeln!(
                f,
                "{n},{:e},{:e},{:e},{:e},{:e},{:e}",
                m.ann_return, m.sharpe, m.max_dd, m.turnover, m.ic_mean, m.ic_ir
            )?;
        }
    }
    let json = serde_json::json!({
        "tool": "lim",
        "strategies": metrics.len(),
        "T": frame.t,
        "N": frame.n,
        "threads": rayon::current_num_threads(),
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_s_per_strategy": cpu / metrics.len() as f64,
        "panel_bytes": base_bytes,
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{json}");
    Ok(())
}
