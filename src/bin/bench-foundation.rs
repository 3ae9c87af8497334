//! Foundation-model benchmark.
//!
//! `bench-foundation [--steps N] [--shards S]` times training steps of the reference
//! configuration (d_model 64, 2 layers, 4 heads, 32 patches of 16, batch 64) on synthetic
//! windows, each batch cut into S shards differentiated on S threads (default: the cores
//! available, at most 4; 1 = one thread), and prints one JSON line per objective: median, p10
//! and p90 wall milliseconds per step after three warm-up steps, the process CPU milliseconds
//! per step (all threads, averaged over the timed steps) and the peak RSS. A step is forward,
//! backward and the AdamW update, with the loss read back (the JAX peer blocks on its loss the
//! same way). `--activation gelu` times the exact GELU instead of the configuration's.
//!
//! `bench-foundation --presets [--steps N]` times pretraining steps of every preset (tiny,
//! small, reference, base, large) at 64 windows a step and prints, per preset, its parameters,
//! window, median step, windows per second, the steps that fit 8 hours and the peak RSS.
//!
//! `bench-foundation --predict DIR [--dataset cn_futures_daily]` times a prediction panel of
//! every symbol and every bar of a dataset with the reference configuration (untrained
//! weights: the cost does not depend on their values) and prints seconds and peak RSS.

mod common;

use common::{cpu_seconds, peak_rss_mb};
use std::time::Instant;

use anyhow::Context;
use lim_foundation::Device;
use lim_foundation::bench::{Objective, StepBench, untrained_predictor};
use lim_foundation::checkpoint::{DataManifest, Kind, Meta};
use lim_foundation::config::{Activation, ModelConfig};
use lim_foundation::features::load_universe;
use lim_foundation::parallel::DEFAULT_SHARDS;
use lim_foundation::predict::predict_panel;
use lim_foundation::pretrain::TrainState;
use lim_foundation::rng::Rng;
use lim_market::{AsOf, Catalog, Timestamp};

fn summary(
    name: &str,
    cfg: &ModelConfig,
    shards: usize,
    walls: &mut [f64],
    cpu: f64,
    loss: f32,
) -> String {
    walls.sort_by(f64::total_cmp);
    let q = |f: f64| walls[((walls.len() - 1) as f64 * f).round() as usize] * 1e3;
    format!(
        "{{\"objective\":\"{name}\",\"activation\":{},\"shards\":{shards},\"step_ms_median\":{:.2},\"step_ms_p10\":{:.2},\"step_ms_p90\":{:.2},\"cpu_ms_per_step\":{:.1},\"final_loss\":{loss:.4},\"steps\":{},\"peak_rss_mb\":{:.0}}}",
        serde_json::to_string(&cfg.activation).unwrap_or_default(),
        q(0.5),
        q(0.1),
        q(0.9),
        cpu / walls.len() as f64 * 1e3,
        walls.len(),
        peak_rss_mb()
    )
}

/// Pretraining throughput of every preset at 64 windows a step: windows per second, peak RSS
/// and the steps that fit 8 hours, one JSON line per preset.
fn presets_bench(steps: usize, shards: usize) -> anyhow::Result<()> {
    for name in ModelConfig::PRESETS {
        let Some(cfg) = ModelConfig::preset(name) else {
            continue;
        };
        let mut bench = StepBench::new(Objective::Pretrain, &cfg, 64, shards, steps + 2);
        for _ in 0..2 {
            bench.step()?;
        }
        let mut walls = Vec::new();
        let c0 = cpu_seconds();
        for _ in 0..steps {
            let t0 = Instant::now();
            std::hint::black_box(bench.step()?);
            walls.push(t0.elapsed().as_secs_f64());
        }
        let cpu = cpu_seconds() - c0;
        walls.sort_by(f64::total_cmp);
        let median = walls[walls.len() / 2];
        println!(
            "{{\"preset\":\"{name}\",\"parameters\":{},\"window_bars\":{},\"shards\":{shards},\"step_ms_median\":{:.1},\"cpu_ms_per_step\":{:.1},\"windows_per_s\":{:.0},\"steps_in_8h\":{},\"peak_rss_mb\":{:.0}}}",
            lim_foundation::bench::parameters(&cfg),
            cfg.window(),
            median * 1e3,
            cpu / steps as f64 * 1e3,
            64.0 / median,
            (8.0 * 3600.0 / median) as u64,
            peak_rss_mb()
        );
    }
    Ok(())
}

fn train_bench(steps: usize, shards: usize, activation: Option<Activation>) -> anyhow::Result<()> {
    let mut cfg = ModelConfig::reference();
    cfg.activation = activation.unwrap_or(cfg.activation);
    for (name, objective) in [
        ("pretrain_masked_patch_plus_forecast", Objective::Pretrain),
        ("finetune_full", Objective::Finetune),
    ] {
        let mut bench = StepBench::new(objective, &cfg, 64, shards, steps + 3);
        let mut loss = 0.0;
        for _ in 0..3 {
            loss = bench.step()?;
        }
        let mut walls = Vec::new();
        let c0 = cpu_seconds();
        for _ in 0..steps {
            let t0 = Instant::now();
            loss = bench.step()?;
            walls.push(t0.elapsed().as_secs_f64());
        }
        let cpu = cpu_seconds() - c0;
        println!("{}", summary(name, &cfg, shards, &mut walls, cpu, loss));
    }
    Ok(())
}

fn predict_bench(dir: &str, dataset: &str) -> anyhow::Result<()> {
    let cfg = ModelConfig::reference();
    let device = Device::flex();
    let catalog = Catalog::open_dir(std::path::Path::new(dir), None)?;
    let t0 = Instant::now();
    let u = load_universe(&catalog, dataset, None, AsOf::LATEST)?;
    let load_s = t0.elapsed().as_secs_f64();
    let model = untrained_predictor(&cfg);
    let meta = Meta {
        name: "bench".into(),
        kind: Kind::Finetuned,
        model: cfg.clone(),
        pretrain: None,
        finetune: None,
        manifest: DataManifest {
            datasets: vec![],
            symbols: Default::default(),
            cutoff: AsOf(Timestamp(0)),
            seed: 0,
            parent: None,
        },
        state: TrainState {
            step: 0,
            rng: Rng::new(0, 0),
            losses: vec![],
        },
        results: Default::default(),
        finetune_progress: None,
        checksums: Default::default(),
    };
    let start = *u.times.first().context("empty dataset")?;
    let end = *u.times.last().context("empty dataset")?;
    let t1 = Instant::now();
    let panel = predict_panel("bench", &model, &meta, &u, start, end, &device)?;
    let secs = t1.elapsed().as_secs_f64();
    let n = panel.values.iter().filter(|v| v.is_finite()).count();
    println!(
        "{{\"dataset\":\"{dataset}\",\"times\":{},\"symbols\":{},\"predictions\":{n},\"load_s\":{load_s:.2},\"predict_s\":{secs:.2},\"windows_per_s\":{:.0},\"peak_rss_mb\":{:.0}}}",
        panel.times.len(),
        panel.symbols.len(),
        n as f64 / secs,
        peak_rss_mb()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(dir) = get("--predict") {
        let ds = get("--dataset").unwrap_or_else(|| "cn_futures_daily".into());
        return predict_bench(&dir, &ds);
    }
    let steps = get("--steps").map(|s| s.parse()).transpose()?.unwrap_or(30);
    let shards = get("--shards")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(DEFAULT_SHARDS);
    let activation = get("--activation")
        .map(|a| serde_json::from_value(serde_json::Value::String(a)))
        .transpose()
        .context("--activation: gelu or gelu_tanh")?;
    if args.iter().any(|a| a == "--presets") {
        return presets_bench(steps.max(1), shards.max(1));
    }
    train_bench(steps.max(1), shards.max(1), activation)
}
