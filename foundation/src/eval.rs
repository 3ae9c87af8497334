//! The evaluation grid: targets × seeds of the transfer comparison ([`crate::transfer`]),
//! each cell kept in a directory as it finishes, so a killed grid continues where it stopped;
//! and the table over seeds: each arm's mean test score, its spread, and its paired difference
//! from the scratch arm with a t-statistic.
//!
//! A cell is one target (kind and horizon) and one seed: every arm (scratch, target-only and
//! cross-market pretraining, probe and full fine-tuning) and the simple forecasts: for
//! volatility trailing, EWMA and HAR-RV; for returns a linear model on four classic features
//! and momentum and reversal alone; all on the same test samples.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::config::Target;
use crate::error::{FoundationError, io};
use crate::pretrain::StepReport;
use crate::transfer::{self, TransferSpec};
use burn::tensor::Device;

/// One arm's test scores in one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmScore {
    /// The arm (`scratch`, `cross-market full`…) or simple forecast (`EWMA 0.94`…).
    pub arm: String,
    /// Test rank IC (per-date cross-sectional mean).
    #[serde(with = "nan_as_null")]
    pub rank_ic: f64,
    /// Test IC (Pearson; NaN for the simple volatility forecasts).
    #[serde(with = "nan_as_null")]
    pub ic: f64,
    /// Test QLIKE (volatility targets).
    pub qlike: Option<f64>,
    /// The test rank IC's Newey–West t-statistic (see [`crate::finetune::IcReport`]).
    #[serde(with = "nan_as_null", default = "nan")]
    pub rank_ic_nw_t: f64,
    /// For an arm blended with EWMA ([`crate::vol::Blend`]): the model's weight, chosen on
    /// validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Volatility targets: the test QLIKE summed over each date's samples, date by date
    /// ([`crate::vol::VolReport::qlike_by_date`]; empty in cells written before it was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qlike_by_date: Vec<f64>,
    /// Simple forecasts: the same score on validation (QLIKE for volatility, rank IC for
    /// returns; [`crate::transfer::TransferReport::valid_scores`]), what the best of them is
    /// chosen by. None for models, and in cells written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<f64>,
}

/// How the row of an arm blended with EWMA ends (`cross-market full with EWMA`).
pub const WITH_EWMA: &str = " with EWMA";

fn nan() -> f64 {
    f64::NAN
}

/// A number that may be NaN, written as `null` and read back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// One target and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The target kind.
    pub kind: Target,
    /// Its horizon in bars.
    pub horizon: usize,
    /// The seed.
    pub seed: u64,
    /// Bars of target training history fine-tuned on (`None`: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_bars: Option<usize>,
    /// The arms, then the simple forecasts.
    pub arms: Vec<ArmScore>,
    /// Wall seconds it took (0 when read back).
    pub seconds: f64,
}

/// The axes of an evaluation grid: every target × training size × seed is a cell.
#[derive(Debug, Clone, Copy)]
pub struct Grid<'a> {
    /// Target kinds and horizons.
    pub targets: &'a [(Target, usize)],
    /// Bars of target training history (`None`: all; empty: all only).
    pub train_bars: &'a [Option<usize>],
    /// Seeds.
    pub seeds: &'a [u64],
    /// Candidates for one more return baseline, the best of them on training (none: no such
    /// baseline).
    pub factors: Option<&'a dyn crate::linear::FactorSource>,
}

/// How the row of the best outside factor on training begins (see `transfer::run_with`).
pub const FACTOR_ARM: &str = "best of ";

/// The file name of a cell.
pub fn cell_name(kind: Target, horizon: usize, train_bars: Option<usize>, seed: u64) -> String {
    let n = train_bars.map(|n| format!("-n{n}")).unwrap_or_default();
    format!("{}-h{horizon}{n}-s{seed}.json", kind_name(kind))
}

fn kind_name(kind: Target) -> &'static str {
    match kind {
        Target::Rank => "rank",
        Target::ForwardReturn => "return",
        Target::LogVol => "vol",
    }
}

/// The file in a grid's directory that records its recipe.
pub const RECIPE_FILE: &str = "grid.json";

/// What every cell of a grid shares: `base` without what varies from cell to cell (target,
/// horizon, training size, seed) and without where a pretrained model lies (only its name).
pub fn recipe(base: &TransferSpec) -> serde_json::Value {
    let mut v = serde_json::to_value(base).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for k in ["target_kind", "horizon", "seed", "train_bars"] {
            m.remove(k);
        }
        if let Some(optim) = m
            .get_mut("pretrain")
            .and_then(|p| p.get_mut("optim"))
            .and_then(|o| o.as_object_mut())
        {
            optim.remove("seed");
        }
        if let Some(name) = base.cross_from.as_ref().map(|(_, name)| name.clone()) {
            m.insert("cross_from".into(), name.into());
        }
    }
    v
}

/// The recipe of the grid in `dir`, if one was recorded.
pub fn read_recipe(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join(RECIPE_FILE)).ok()?).ok()
}

/// Where two recipes differ, setting by setting (`lp_ft: true / false`), in `a`'s order and
/// then `b`'s.
pub fn recipe_differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    fn flat(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v.as_object() {
            Some(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flat(&key, x, out);
                }
            }
            None => out.push((prefix.to_string(), v.to_string())),
        }
    }
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    flat("", a, &mut fa);
    flat("", b, &mut fb);
    let get = |f: &[(String, String)], k: &str| {
        f.iter()
            .find(|(x, _)| x == k)
            .map_or("(unset)".to_string(), |(_, v)| v.clone())
    };
    let mut keys: Vec<&String> = fa.iter().map(|(k, _)| k).collect();
    keys.extend(
        fb.iter()
            .map(|(k, _)| k)
            .filter(|k| !fa.iter().any(|(x, _)| x == *k)),
    );
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (get(&fa, k), get(&fb, k));
            (x != y).then(|| format!("{k}: {x} / {y}"))
        })
        .collect()
}

/// Settings two grids must share for their cells to be compared date by date: the target's
/// universe and the periods.
pub const SHARED_SETTINGS: [&str; 5] = ["target", "symbols", "train_end", "valid_end", "test_end"];

/// What the grids in `here` and `there` were made with differently (nothing when either
/// recipe is unknown: a grid from before recipes were recorded), for [`versus`].
///
/// # Errors
/// They differ in a [`SHARED_SETTINGS`] setting: their cells hold other samples.
pub fn against_settings(here: &Path, there: &Path) -> Result<Vec<String>, FoundationError> {
    let (Some(a), Some(b)) = (read_recipe(here), read_recipe(there)) else {
        return Ok(Vec::new());
    };
    let d = recipe_differences(&a, &b);
    let clash: Vec<&String> = d
        .iter()
        .filter(|x| {
            SHARED_SETTINGS
                .iter()
                .any(|k| x.starts_with(&format!("{k}:")) || x.starts_with(&format!("{k}.")))
        })
        .collect();
    if clash.is_empty() {
        return Ok(d);
    }
    Err(FoundationError::Config(format!(
        "'{}' holds a grid of other samples (this grid / that one: {}); compare grids of the same \
         target and periods",
        there.display(),
        clash
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

/// Records `base`'s recipe in `dir`, or checks it against the one recorded there: a cell read
/// back must have been made the way the rest of the grid is. A directory of cells from before
/// recipes were recorded takes this one.
///
/// # Errors
/// `dir` holds a grid made with other settings, or cannot be written.
pub fn check_recipe(dir: &Path, base: &TransferSpec) -> Result<(), FoundationError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let here = recipe(base);
    if let Some(there) = read_recipe(dir) {
        let d = recipe_differences(&here, &there);
        if d.is_empty() {
            return Ok(());
        }
        return Err(FoundationError::Config(format!(
            "'{}' holds a grid made with other settings (this run / that grid: {}); give this \
             grid its own --out, or run it with the settings that grid was made with",
            dir.display(),
            d.join("; ")
        )));
    }
    let path = dir.join(RECIPE_FILE);
    let text = serde_json::to_vec_pretty(&here).map_err(|source| FoundationError::Json {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &text)
}

/// Runs every cell of the `grid` not already in `dir` (read back otherwise), with
/// `base` for everything else, and returns all of them in grid order. `progress` hears which
/// cell is training and how far.
///
/// # Errors
/// `dir` holds a grid made with other settings ([`check_recipe`]); a cell could not run
/// (data, configuration); or `dir` cannot be written.
pub fn run_grid(
    data: &dyn lim_market::MarketData,
    base: &TransferSpec,
    grid: &Grid<'_>,
    device: &Device,
    dir: &Path,
    progress: &mut dyn FnMut(&str, &StepReport),
) -> Result<Vec<Cell>, FoundationError> {
    // Bad settings are refused before anything is written.
    transfer::check_arms(&base.arms)?;
    check_recipe(dir, base)?;
    let mut cells = Vec::new();
    let all = [None];
    let sizes = if grid.train_bars.is_empty() {
        &all[..]
    } else {
        grid.train_bars
    };
    for &(kind, horizon) in grid.targets {
        for &bars in sizes {
            for &seed in grid.seeds {
                let path = dir.join(cell_name(kind, horizon, bars, seed));
                // A return cell written before factor baselines existed lacks that row: it is
                // run again rather than mixed with cells that have it.
                // So is a volatility cell written before the blends with EWMA existed.
                let outdated = |c: &Cell| {
                    if kind == Target::LogVol {
                        return !c.arms.iter().any(|a| a.arm.ends_with(WITH_EWMA));
                    }
                    grid.factors.is_some() && !c.arms.iter().any(|a| a.arm.starts_with(FACTOR_ARM))
                };
                if let Some(c) = read_cell(&path).filter(|c| !outdated(c)) {
                    cells.push(Cell { seconds: 0.0, ..c });
                    continue;
                }
                let mut spec = base.clone();
                spec.target_kind = kind;
                spec.horizon = horizon;
                spec.seed = seed;
                spec.train_bars = bars;
                spec.pretrain.optim.seed = seed;
                let started = Instant::now();
                let name = cell_name(kind, horizon, bars, seed);
                let report =
                    transfer::run_with(data, &spec, grid.factors, device, &mut |label, r| {
                        progress(&format!("{} {label}", name.trim_end_matches(".json")), r);
                    })?;
                let mut arms: Vec<ArmScore> = report
                    .arms
                    .iter()
                    .map(|a| ArmScore {
                        arm: a.name.clone(),
                        rank_ic: a.test.rank_ic,
                        ic: a.test.ic,
                        qlike: a.vol.as_ref().map(|v| v.qlike),
                        rank_ic_nw_t: a.test.rank_ic_nw_t,
                        weight: None,
                        qlike_by_date: a
                            .vol
                            .as_ref()
                            .map(|v| v.qlike_by_date.clone())
                            .unwrap_or_default(),
                        valid: None,
                    })
                    .collect();
                arms.extend(report.arms.iter().filter_map(|a| {
                    let (blend, v) = a.with_ewma.as_ref()?;
                    Some(ArmScore {
                        arm: format!("{}{WITH_EWMA}", a.name),
                        rank_ic: v.rank_ic,
                        ic: f64::NAN,
                        qlike: Some(v.qlike),
                        rank_ic_nw_t: f64::NAN,
                        weight: Some(blend.weight),
                        qlike_by_date: v.qlike_by_date.clone(),
                        valid: None,
                    })
                }));
                let valid_score = |name: &str| {
                    report
                        .valid_scores
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| *v)
                        .filter(|v| v.is_finite())
                };
                arms.extend(report.return_baselines.iter().map(|(name, r)| ArmScore {
                    arm: name.clone(),
                    rank_ic: r.rank_ic,
                    ic: r.ic,
                    qlike: None,
                    rank_ic_nw_t: r.rank_ic_nw_t,
                    weight: None,
                    qlike_by_date: Vec::new(),
                    valid: valid_score(name),
                }));
                arms.extend(report.baselines.iter().map(|(name, v)| ArmScore {
                    arm: name.clone(),
                    rank_ic: v.rank_ic,
                    ic: f64::NAN,
                    qlike: Some(v.qlike),
                    rank_ic_nw_t: f64::NAN,
                    weight: None,
                    qlike_by_date: v.qlike_by_date.clone(),
                    valid: valid_score(name),
                }));
                let cell = Cell {
                    kind,
                    horizon,
                    seed,
                    train_bars: bars,
                    arms,
                    seconds: started.elapsed().as_secs_f64(),
                };
                write_cell(&path, &cell)?;
                cells.push(cell);
            }
        }
    }
    Ok(cells)
}

/// A cell written by [`run_grid`]; `None` when missing or unreadable (it is then run again).
fn read_cell(path: &Path) -> Option<Cell> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_cell(path: &Path, cell: &Cell) -> Result<(), FoundationError> {
    let text = serde_json::to_vec_pretty(cell).map_err(|source| FoundationError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &text)
}

/// One arm of one target over seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The target, e.g. `vol h20`.
    pub target: String,
    /// The arm or simple forecast.
    pub arm: String,
    /// The score: `qlike` for volatility (lower is better), `rank_ic` otherwise.
    pub metric: &'static str,
    /// Seeds scored.
    pub seeds: usize,
    /// Mean over seeds.
    pub mean: f64,
    /// Standard deviation over seeds.
    pub sd: f64,
    /// Mean paired difference from the scratch arm (same seed), and its t-statistic; none for
    /// scratch itself or with fewer than two seeds.
    pub vs_scratch: Option<(f64, f64)>,
    /// Return targets: the mean over seeds of the rank IC's Newey–West t-statistic.
    pub rank_ic_nw_t: Option<f64>,
    /// Blends with EWMA: the mean over seeds of the model's weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Simple forecasts: the mean over seeds of the score on validation, when every cell kept
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<f64>,
    /// Models and blends: the mean paired difference from the best simple forecast of the
    /// target, and its t-statistic; none with fewer than two seeds. The best is the one with
    /// the lowest mean QLIKE or the highest mean rank IC on *validation*, as a researcher
    /// would choose it, when every simple forecast of the target has a validation score
    /// (`valid`); in cells written before those were kept, on the test, which favours the
    /// simple forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_best_simple: Option<(f64, f64)>,
    /// Whether this row is that best simple forecast.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub best_simple: bool,
    /// For the best simple forecast: whether it was chosen on validation (every simple
    /// forecast of the target had a score there) rather than on the test.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chosen_on_validation: bool,
    /// Volatility targets, models and blends: the Diebold–Mariano t-statistic of the test
    /// QLIKE against the best simple forecast's, over the test dates (their losses' difference
    /// date by date, Newey–West standard errors over [`dm_lags`] lags), averaged over seeds:
    /// whether the test period, not only the seeds, tells the two apart. Negative: the model is
    /// better. None for cells written before the losses by date were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_best_simple_dm_t: Option<f64>,
    /// The same test against every simple forecast of the target (HAR-RV when EWMA is the
    /// best, say), by name (JSON only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dm_t_vs_simple: Vec<(String, f64)>,
    /// The same test against the scratch arm (what pretraining gives, over the test dates;
    /// JSON only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_scratch_dm_t: Option<f64>,
}

/// Lags of the Diebold–Mariano test over `dates` test dates of `horizon`-bar targets: the
/// usual automatic count, and at least twice the horizon, since targets that overlap make
/// their losses correlate over that many dates.
pub fn dm_lags(dates: usize, horizon: usize) -> usize {
    crate::finetune::newey_west_lags(dates).max(2 * horizon)
}

/// Whether `arm` is a model (an arm of [`crate::transfer::ARMS`], or one blended with EWMA)
/// rather than a simple forecast.
pub fn is_model(arm: &str) -> bool {
    crate::transfer::ARMS.contains(&arm) || arm.ends_with(WITH_EWMA)
}

/// The mean of `diffs` and its t-statistic, with two of them or more.
fn paired(diffs: &[f64]) -> Option<(f64, f64)> {
    (diffs.len() > 1).then(|| {
        let (m, sd) = mean_sd(diffs);
        (m, m / (sd / (diffs.len() as f64).sqrt()))
    })
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        f64::NAN
    };
    (m, sd)
}

/// The QLIKE by date of `arm` in `c`, when the cell kept it.
fn losses<'a>(c: &'a Cell, arm: &str) -> Option<&'a [f64]> {
    c.arms
        .iter()
        .find(|a| a.arm == arm)
        .map(|a| a.qlike_by_date.as_slice())
        .filter(|l| !l.is_empty())
}

/// The cells of another grid's directory (every file that reads as one).
///
/// # Errors
/// `dir` cannot be read.
pub fn read_cells(dir: &Path) -> Result<Vec<Cell>, FoundationError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with(RECIPE_FILE))
        .collect();
    paths.sort();
    Ok(paths.iter().filter_map(|p| read_cell(p)).collect())
}

/// One model arm of one target against the same arm of another grid, cell by cell (same
/// target, training size and seed): how a change of recipe (a loss, an anchor, LP-FT) moved it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Versus {
    /// The target, e.g. `vol h20 n500`.
    pub target: String,
    /// The model arm.
    pub arm: String,
    /// Its mean score over the seeds both grids have, here and there.
    pub mean: f64,
    /// The other grid's.
    pub other: f64,
    /// The mean paired difference (here less there) and its t-statistic over seeds; none with
    /// fewer than two seeds.
    pub diff: Option<(f64, f64)>,
    /// Volatility targets: the Diebold–Mariano t of the difference over the test dates, the
    /// mean over seeds (negative: lower QLIKE here). None when the cells did not keep their
    /// losses by date or their test dates differ.
    pub dm_t: Option<f64>,
    /// Seeds paired.
    pub seeds: usize,
}

/// Every model arm of `cells` against the same arm of `other`'s matching cells, in the order
/// of [`summarize`]'s rows.
pub fn versus(cells: &[Cell], other: &[Cell]) -> Vec<Versus> {
    let mut out: Vec<Versus> = Vec::new();
    let mut acc: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = Vec::new();
    for c in cells {
        let Some(o) = other.iter().find(|o| {
            (o.kind, o.horizon, o.train_bars, o.seed) == (c.kind, c.horizon, c.train_bars, c.seed)
        }) else {
            continue;
        };
        let vol = c.kind == Target::LogVol;
        let score = |a: &ArmScore| {
            if vol {
                a.qlike.unwrap_or(f64::NAN)
            } else {
                a.rank_ic
            }
        };
        for a in c.arms.iter().filter(|a| is_model(&a.arm)) {
            let Some(b) = o.arms.iter().find(|b| b.arm == a.arm) else {
                continue;
            };
            let (x, y) = (score(a), score(b));
            if !(x.is_finite() && y.is_finite()) {
                continue;
            }
            let target = target_label(c.kind, c.horizon, c.train_bars);
            let i = match out
                .iter()
                .position(|v| v.target == target && v.arm == a.arm)
            {
                Some(i) => i,
                None => {
                    out.push(Versus {
                        target,
                        arm: a.arm.clone(),
                        mean: f64::NAN,
                        other: f64::NAN,
                        diff: None,
                        dm_t: None,
                        seeds: 0,
                    });
                    acc.push(Default::default());
                    out.len() - 1
                }
            };
            acc[i].0.push(x);
            acc[i].1.push(y);
            let (l, m) = (&a.qlike_by_date, &b.qlike_by_date);
            if vol && !l.is_empty() && l.len() == m.len() {
                let d: Vec<f64> = l.iter().zip(m).map(|(p, q)| p - q).collect();
                let t = crate::finetune::newey_west_t(&d, dm_lags(d.len(), c.horizon));
                if t.is_finite() {
                    acc[i].2.push(t);
                }
            }
        }
    }
    for (v, (here, there, dm)) in out.iter_mut().zip(acc) {
        v.seeds = here.len();
        v.mean = mean_sd(&here).0;
        v.other = mean_sd(&there).0;
        let diffs: Vec<f64> = here.iter().zip(&there).map(|(x, y)| x - y).collect();
        v.diff = paired(&diffs);
        v.dm_t = (!dm.is_empty()).then(|| mean_sd(&dm).0);
    }
    out
}

fn target_label(kind: Target, horizon: usize, bars: Option<usize>) -> String {
    format!(
        "{} h{horizon}{}",
        kind_name(kind),
        bars.map(|n| format!(" n{n}")).unwrap_or_default()
    )
}

/// The table over seeds of `cells`, target by target in grid order, arms in cell order.
pub fn summarize(cells: &[Cell]) -> Vec<Row> {
    let mut targets: Vec<(Target, usize, Option<usize>)> = Vec::new();
    for c in cells {
        if !targets.contains(&(c.kind, c.horizon, c.train_bars)) {
            targets.push((c.kind, c.horizon, c.train_bars));
        }
    }
    let mut rows = Vec::new();
    for (kind, horizon, bars) in targets {
        let these: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.kind == kind && c.horizon == horizon && c.train_bars == bars)
            .collect();
        let vol = kind == Target::LogVol;
        let score = |a: &ArmScore| {
            if vol {
                a.qlike.unwrap_or(f64::NAN)
            } else {
                a.rank_ic
            }
        };
        let scratch = |c: &Cell| c.arms.iter().find(|a| a.arm == "scratch").map(score);
        let names: Vec<String> = these
            .first()
            .map(|c| c.arms.iter().map(|a| a.arm.clone()).collect())
            .unwrap_or_default();
        let first = rows.len();
        for name in names {
            let pairs: Vec<(f64, Option<f64>)> = these
                .iter()
                .filter_map(|c| {
                    c.arms
                        .iter()
                        .find(|a| a.arm == name)
                        .map(|a| (score(a), scratch(c)))
                })
                .filter(|(s, _)| s.is_finite())
                .collect();
            let (mean, sd) = mean_sd(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
            let diffs: Vec<f64> = pairs
                .iter()
                .filter_map(|(s, b)| b.map(|b| s - b))
                .filter(|d| d.is_finite())
                .collect();
            let vs_scratch = (name != "scratch").then(|| paired(&diffs)).flatten();
            let nw: Vec<f64> = these
                .iter()
                .filter_map(|c| c.arms.iter().find(|a| a.arm == name))
                .map(|a| a.rank_ic_nw_t)
                .filter(|t| t.is_finite())
                .collect();
            let rank_ic_nw_t = (!vol && !nw.is_empty()).then(|| mean_sd(&nw).0);
            let weights: Vec<f64> = these
                .iter()
                .filter_map(|c| c.arms.iter().find(|a| a.arm == name)?.weight)
                .collect();
            let weight = (!weights.is_empty()).then(|| mean_sd(&weights).0);
            let valid: Vec<f64> = these
                .iter()
                .filter_map(|c| c.arms.iter().find(|a| a.arm == name)?.valid)
                .collect();
            let valid =
                (!valid.is_empty() && valid.len() == these.len()).then(|| mean_sd(&valid).0);
            rows.push(Row {
                target: target_label(kind, horizon, bars),
                arm: name,
                metric: if vol { "qlike" } else { "rank_ic" },
                seeds: pairs.len(),
                mean,
                sd,
                vs_scratch,
                rank_ic_nw_t,
                weight,
                valid,
                vs_best_simple: None,
                best_simple: false,
                chosen_on_validation: false,
                vs_best_simple_dm_t: None,
                dm_t_vs_simple: Vec::new(),
                vs_scratch_dm_t: None,
            });
        }
        // The best simple forecast of this target, chosen on validation when every one of
        // them was scored there (on the test otherwise), and every model paired with it by seed.
        let better = |a: f64, b: f64| if vol { a < b } else { a > b };
        let simple_rows = || {
            rows[first..]
                .iter()
                .filter(|r| !is_model(&r.arm) && r.mean.is_finite())
        };
        let on_valid = simple_rows().all(|r| r.valid.is_some_and(f64::is_finite));
        let by = |r: &Row| {
            if on_valid {
                r.valid.unwrap_or(f64::NAN)
            } else {
                r.mean
            }
        };
        let best = simple_rows()
            .fold(None::<&Row>, |b, r| match b {
                Some(b) if !better(by(r), by(b)) => Some(b),
                _ => Some(r),
            })
            .map(|r| r.arm.clone());
        let Some(best) = best else { continue };
        let of = |c: &Cell, name: &str| {
            c.arms
                .iter()
                .find(|a| a.arm == name)
                .map(score)
                .filter(|s| s.is_finite())
        };
        // The Diebold–Mariano t of `arm` against `other` over the test dates, the mean over
        // seeds (volatility targets whose cells kept their losses by date).
        let dm_t = |arm: &str, other: &str| {
            let dm: Vec<f64> = these
                .iter()
                .filter_map(|c| {
                    let (m, b) = (losses(c, arm)?, losses(c, other)?);
                    (m.len() == b.len()).then(|| {
                        let d: Vec<f64> = m.iter().zip(b).map(|(x, y)| x - y).collect();
                        crate::finetune::newey_west_t(&d, dm_lags(d.len(), horizon))
                    })
                })
                .filter(|t| t.is_finite())
                .collect();
            (vol && !dm.is_empty()).then(|| mean_sd(&dm).0)
        };
        let simple: Vec<String> = rows[first..]
            .iter()
            .filter(|r| !is_model(&r.arm))
            .map(|r| r.arm.clone())
            .collect();
        for row in &mut rows[first..] {
            if is_model(&row.arm) && row.arm != "scratch" {
                row.vs_scratch_dm_t = dm_t(&row.arm, "scratch");
            }
            if row.arm == best {
                row.best_simple = true;
                row.chosen_on_validation = on_valid;
            } else if is_model(&row.arm) {
                let diffs: Vec<f64> = these
                    .iter()
                    .filter_map(|c| Some(of(c, &row.arm)? - of(c, &best)?))
                    .collect();
                row.vs_best_simple = paired(&diffs);
                row.vs_best_simple_dm_t = dm_t(&row.arm, &best);
                row.dm_t_vs_simple = simple
                    .iter()
                    .filter_map(|s| Some((s.clone(), dm_t(&row.arm, s)?)))
                    .collect();
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(seed: u64, scratch: f64, cross: f64) -> Cell {
        Cell {
            kind: Target::LogVol,
            horizon: 20,
            seed,
            train_bars: None,
            arms: vec![
                ArmScore {
                    arm: "scratch".into(),
                    rank_ic: 0.1,
                    ic: 0.1,
                    qlike: Some(scratch),
                    rank_ic_nw_t: f64::NAN,
                    weight: None,
                    qlike_by_date: Vec::new(),
                    valid: None,
                },
                ArmScore {
                    arm: "cross-market full".into(),
                    rank_ic: 0.2,
                    ic: 0.2,
                    qlike: Some(cross),
                    rank_ic_nw_t: 1.5,
                    weight: None,
                    qlike_by_date: Vec::new(),
                    valid: None,
                },
            ],
            seconds: 1.0,
        }
    }

    #[test]
    fn each_training_size_is_its_own_target_and_file() {
        let mut small = cell(1, 0.30, 0.25);
        small.train_bars = Some(250);
        let rows = summarize(&[cell(1, 0.24, 0.20), small]);
        let targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(
            targets,
            ["vol h20", "vol h20", "vol h20 n250", "vol h20 n250"]
        );
        assert_eq!(
            cell_name(Target::Rank, 5, Some(250), 42),
            "rank-h5-n250-s42.json"
        );
        assert_eq!(cell_name(Target::Rank, 5, None, 42), "rank-h5-s42.json");
    }

    #[test]
    fn rows_pair_each_arm_with_scratch_by_seed() {
        let rows = summarize(&[
            cell(1, 0.24, 0.20),
            cell(2, 0.23, 0.21),
            cell(3, 0.25, 0.20),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].arm, "scratch");
        assert!(rows[0].vs_scratch.is_none());
        let r = &rows[1];
        assert_eq!(
            (r.target.as_str(), r.metric, r.seeds),
            ("vol h20", "qlike", 3)
        );
        assert!((r.mean - 0.61 / 3.0).abs() < 1e-12);
        // Differences -0.04, -0.02, -0.05: mean -0.11/3, sd 0.01528, t = mean / (sd / sqrt 3).
        let (d, t) = r.vs_scratch.unwrap();
        assert!((d + 0.11 / 3.0).abs() < 1e-12);
        let sd = ((0.04f64 - 0.11 / 3.0).powi(2)
            + (0.02f64 - 0.11 / 3.0).powi(2)
            + (0.05f64 - 0.11 / 3.0).powi(2))
            / 2.0;
        assert!((t - d / (sd.sqrt() / 3f64.sqrt())).abs() < 1e-9, "{t}");
    }

    /// Every model row is paired with the best simple forecast of its target (by mean over
    /// seeds, lowest QLIKE), seed by seed; simple forecasts are not paired with it.
    #[test]
    fn models_are_paired_with_the_best_simple_forecast() {
        let simple = |arm: &str, qlike: f64| ArmScore {
            arm: arm.into(),
            rank_ic: f64::NAN,
            ic: f64::NAN,
            qlike: Some(qlike),
            rank_ic_nw_t: f64::NAN,
            weight: None,
            qlike_by_date: Vec::new(),
            valid: None,
        };
        let cells: Vec<Cell> = [(1, 0.20, 0.205), (2, 0.21, 0.204), (3, 0.19, 0.206)]
            .iter()
            .map(|&(seed, cross, ewma)| {
                let mut c = cell(seed, 0.25, cross);
                c.arms.push(simple("HAR-RV", 0.22));
                c.arms.push(simple("EWMA", ewma));
                let mut blend = simple("cross-market full with EWMA", ewma - 0.01);
                blend.weight = Some(0.3);
                c.arms.push(blend);
                c
            })
            .collect();
        let rows = summarize(&cells);
        let row = |arm: &str| rows.iter().find(|r| r.arm == arm).unwrap();
        assert!(row("EWMA").best_simple && !row("HAR-RV").best_simple);
        assert_eq!(row("EWMA").vs_best_simple, None);
        assert_eq!(row("HAR-RV").vs_best_simple, None);
        // cross − EWMA by seed: −0.005, +0.006, −0.016.
        let (d, t) = row("cross-market full").vs_best_simple.unwrap();
        assert!((d + 0.005).abs() < 1e-12, "{d}");
        let sd = ((0.0f64).powi(2) + 0.011f64.powi(2) + 0.011f64.powi(2)) / 2.0;
        assert!((t - d / (sd.sqrt() / 3f64.sqrt())).abs() < 1e-9, "{t}");
        let (d, _) = row("cross-market full with EWMA").vs_best_simple.unwrap();
        assert!((d + 0.01).abs() < 1e-12, "{d}");
        assert!(row("scratch").vs_best_simple.unwrap().0 > 0.0);
        // Cells without the losses by date have no Diebold–Mariano test.
        assert_eq!(row("cross-market full").vs_best_simple_dm_t, None);
    }

    /// The simple forecast a researcher would have picked is the best on validation, not the
    /// one that turned out best on the test; cells without validation scores (written before
    /// they were kept) fall back to the test, which favours the simple forecast.
    #[test]
    fn the_best_simple_forecast_is_chosen_on_validation() {
        let simple = |arm: &str, test: f64, valid: Option<f64>| ArmScore {
            arm: arm.into(),
            rank_ic: f64::NAN,
            ic: f64::NAN,
            qlike: Some(test),
            rank_ic_nw_t: f64::NAN,
            weight: None,
            qlike_by_date: Vec::new(),
            valid,
        };
        let grid = |ewma_valid: Option<f64>| -> Vec<Row> {
            let cells: Vec<Cell> = (1..=3)
                .map(|seed| {
                    let mut c = cell(seed, 0.25, 0.21 + 0.001 * seed as f64);
                    // HAR-RV: better on validation, worse on the test; EWMA the other way.
                    c.arms.push(simple("HAR-RV", 0.23, Some(0.30)));
                    c.arms.push(simple("EWMA", 0.20, ewma_valid));
                    c
                })
                .collect();
            summarize(&cells)
        };
        let rows = grid(Some(0.31));
        let row = |arm: &str| rows.iter().find(|r| r.arm == arm).unwrap();
        assert!(row("HAR-RV").best_simple && !row("EWMA").best_simple);
        assert!(row("HAR-RV").chosen_on_validation);
        assert_eq!(row("HAR-RV").valid, Some(0.30));
        assert_eq!(row("cross-market full").valid, None);
        // cross − HAR-RV: 0.211 − 0.23, 0.212 − 0.23, 0.213 − 0.23.
        let (d, _) = row("cross-market full").vs_best_simple.unwrap();
        assert!((d + 0.018).abs() < 1e-12, "{d}");
        // One simple forecast without a validation score: all are judged on the test.
        let rows = grid(None);
        let row = |arm: &str| rows.iter().find(|r| r.arm == arm).unwrap();
        assert!(row("EWMA").best_simple && !row("HAR-RV").best_simple);
        // EWMA has no validation score here, but a forecast that has one can be picked on the
        // test too: the row says how it was picked, not whether it has a score.
        assert!(!row("EWMA").chosen_on_validation);
        let (d, _) = row("cross-market full").vs_best_simple.unwrap();
        assert!((d - 0.012).abs() < 1e-12, "{d}");
    }

    /// The Diebold–Mariano test compares a model's and the best simple forecast's losses date
    /// by date: a lead on nearly every date is told from chance, one that a few dates make is
    /// not, however consistent across seeds.
    #[test]
    fn a_model_is_tested_against_the_best_simple_forecast_over_the_test_dates() {
        let dates = 400;
        let with_losses = |arm: &str, losses: Vec<f64>| ArmScore {
            arm: arm.into(),
            rank_ic: f64::NAN,
            ic: f64::NAN,
            qlike: Some(losses.iter().sum::<f64>() / losses.len() as f64),
            rank_ic_nw_t: f64::NAN,
            weight: None,
            qlike_by_date: losses,
            valid: None,
        };
        // A loss that wanders from date to date, the same for every forecast.
        let base: Vec<f64> = (0..dates)
            .map(|i| 1.0 + ((i * 37) % 11) as f64 / 10.0)
            .collect();
        let cells: Vec<Cell> = (0..2u64)
            .map(|seed| {
                let mut c = cell(seed, 1.0, 1.0);
                c.horizon = 5;
                c.arms.clear();
                c.arms.push(with_losses("EWMA", base.clone()));
                // Worse than EWMA by 0.02 on every date, give or take 0.01.
                let har: Vec<f64> = base
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x + 0.02 + if i % 3 == 0 { 0.01 } else { -0.005 })
                    .collect();
                c.arms.push(with_losses("HAR-RV", har));
                // Better on every date by 0.01, give or take 0.005.
                let steady: Vec<f64> = base
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x - 0.01 + if i % 2 == 0 { 0.005 } else { -0.005 })
                    .collect();
                c.arms.push(with_losses("cross-market full", steady));
                // Better on average by as much, all of it from two dates.
                let lucky: Vec<f64> = base
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x + if i % 200 == 0 { -2.0 } else { 0.0 })
                    .collect();
                c.arms.push(with_losses("scratch", lucky));
                c
            })
            .collect();
        let rows = summarize(&cells);
        let row = |arm: &str| rows.iter().find(|r| r.arm == arm).unwrap();
        assert!(row("EWMA").best_simple);
        let steady = row("cross-market full").vs_best_simple_dm_t.unwrap();
        let lucky = row("scratch").vs_best_simple_dm_t.unwrap();
        assert!(steady < -10.0, "{steady}");
        assert!(lucky > -1.96 && lucky < 0.0, "{lucky}");
        // Against every simple forecast by name, the best among them.
        let against = &row("cross-market full").dm_t_vs_simple;
        assert_eq!(against.len(), 2);
        assert_eq!(against[0], ("EWMA".to_string(), steady));
        assert!(
            against[1].0 == "HAR-RV" && against[1].1 < steady,
            "{against:?}"
        );
        assert!(row("EWMA").dm_t_vs_simple.is_empty());
        // Against scratch (here the lucky arm): the same mean loss, so not told apart.
        assert!(row("cross-market full").vs_scratch_dm_t.unwrap().abs() < 1.0);
        assert_eq!(row("scratch").vs_scratch_dm_t, None);
        // Both leads are the same on average and on every seed.
        let (a, _) = row("cross-market full").vs_best_simple.unwrap();
        let (b, _) = row("scratch").vs_best_simple.unwrap();
        assert!((a - b).abs() < 1e-12, "{a} {b}");
        assert_eq!(dm_lags(721, 20), 40);
        assert_eq!(dm_lags(721, 1), 6);
    }

    #[test]
    fn a_finished_cell_is_read_back_and_a_torn_one_is_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(cell_name(Target::LogVol, 20, None, 1));
        let mut c = cell(1, 0.2, 0.1);
        c.arms[0].ic = f64::NAN;
        write_cell(&path, &c).unwrap();
        let back = read_cell(&path).expect("a cell with a NaN reads back");
        assert!(back.arms[0].ic.is_nan());
        assert_eq!(back.arms[1], c.arms[1]);
        std::fs::write(&path, "{\"kind\": \"log_vol\", \"hori").unwrap();
        assert_eq!(read_cell(&path), None);
        assert_eq!(cell_name(Target::Rank, 5, None, 7), "rank-h5-s7.json");
    }

    /// Another grid's cells are paired with these by target, training size and seed; only the
    /// model arms are compared, and over the test dates where both kept their losses.
    #[test]
    fn a_grid_is_compared_with_another_cell_by_cell() {
        let losses = |level: f64, wobble: f64| -> Vec<f64> {
            (0..300)
                .map(|i| level + if i % 2 == 0 { wobble } else { -wobble })
                .collect()
        };
        let with = |c: &mut Cell, arm: usize, l: Vec<f64>| {
            c.arms[arm].qlike = Some(l.iter().sum::<f64>() / l.len() as f64);
            c.arms[arm].qlike_by_date = l;
        };
        let mut here = Vec::new();
        let mut there = Vec::new();
        for seed in 1..=3u64 {
            let mut a = cell(seed, 0.0, 0.0);
            with(&mut a, 0, losses(0.30, 0.01));
            with(&mut a, 1, losses(0.20 + 0.001 * seed as f64, 0.01));
            a.arms.push(ArmScore {
                arm: "EWMA".into(),
                ..a.arms[0].clone()
            });
            let mut b = cell(seed, 0.0, 0.0);
            with(&mut b, 0, losses(0.30, 0.01));
            with(&mut b, 1, losses(0.25, 0.012));
            b.arms.push(ArmScore {
                arm: "EWMA".into(),
                ..b.arms[0].clone()
            });
            here.push(a);
            there.push(b);
        }
        // A cell the other grid lacks, and one of another training size, are left out.
        here.push(cell(9, 0.1, 0.1));
        let mut sized = cell(1, 0.5, 0.5);
        sized.train_bars = Some(250);
        there.push(sized);
        let v = versus(&here, &there);
        let arms: Vec<&str> = v.iter().map(|x| x.arm.as_str()).collect();
        assert_eq!(arms, ["scratch", "cross-market full"], "{v:?}");
        let scratch = &v[0];
        assert_eq!(scratch.seeds, 3);
        assert!(scratch.diff.unwrap().0.abs() < 1e-12, "{scratch:?}");
        let cross = &v[1];
        assert_eq!(cross.seeds, 3);
        assert!(
            (cross.mean - 0.202).abs() < 1e-9 && (cross.other - 0.25).abs() < 1e-9,
            "{cross:?}"
        );
        let (d, t) = cross.diff.unwrap();
        assert!((d + 0.048).abs() < 1e-9 && t < -10.0, "{cross:?}");
        assert!(cross.dm_t.unwrap() < -10.0, "{cross:?}");
        assert_eq!(cross.target, "vol h20");
    }

    #[test]
    fn recipes_differ_setting_by_setting() {
        let a =
            serde_json::json!({"lp_ft": true, "model": {"d_model": 64, "layers": 2}, "steps": 300});
        let b = serde_json::json!({"model": {"d_model": 128, "layers": 2}, "steps": 300, "vol_loss": "qlike"});
        assert_eq!(
            recipe_differences(&a, &b),
            [
                "lp_ft: true / (unset)",
                "model.d_model: 64 / 128",
                r#"vol_loss: (unset) / "qlike""#
            ]
        );
        assert!(recipe_differences(&a, &a).is_empty());
    }
}
