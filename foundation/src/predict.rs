//! Prediction panels: a fine-tuned model's output for a universe and period, `times ×
//! symbols`, computed strictly after everything the model learned from, and written as a
//! file that strategies can load as a field.
//!
//! File format (`<models>/predictions/<name>.csv` and `<name>.json`): a wide CSV with header
//! `ts,<symbol 1>,<symbol 2>,...`, one row per bar time (`YYYY-MM-DD` for daily bars, else
//! `YYYY-MM-DDTHH:MM:SSZ`), empty cells where there is no prediction (too little history or
//! no bar); and a JSON sidecar with the model, its data cutoff, the dataset, frequency, target
//! and horizon. A volatility model's panel (`--target vol`) holds the forecast realised
//! volatility per bar over its horizon (root mean square of log returns, not annualised), which
//! a sign book can size positions by (`vol_forecast`); other models' panels hold the head's
//! score.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use lim_market::{AsOf, Frequency, Timestamp};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Meta;
use crate::config::Target;
use crate::error::{FoundationError, io};
use crate::features::{Universe, write_window};
use crate::model::Predictor;

/// Windows per forward pass when predicting. Small enough that one pass's buffers (about 4 MiB
/// for the largest at the reference configuration) stay in the caches and in the heap glibc
/// keeps (see [`crate::memory`]): 1,024 windows per pass took 40 % longer, with twice the peak
/// RSS.
pub(crate) const PREDICT_CHUNK: usize = 128;

/// A window to predict: series, last bar, row of the panel.
type Job = (usize, usize, usize);

/// Predictions of `model` (on a plain device) for `items`, in order, in passes of
/// [`PREDICT_CHUNK`] windows; `window` appends an item's patches and embedding ids. The passes
/// are split in consecutive runs over the cores (at most 4 threads), so every window is
/// computed in the same pass whatever the number of threads.
pub(crate) fn predict_windows<T: Sync>(
    model: &Predictor,
    items: &[T],
    cfg: &crate::config::ModelConfig,
    device: &Device,
    window: impl Fn(&T, &mut Vec<f32>, &mut Vec<i64>) + Sync,
) -> Result<Vec<f32>, FoundationError> {
    crate::memory::keep_freed_buffers();
    let passes: Vec<&[T]> = items.chunks(PREDICT_CHUNK).collect();
    let threads = crate::parallel::workers().min(passes.len()).max(1);
    let run = |model: &Predictor, passes: &[&[T]]| {
        let mut out = Vec::new();
        let (mut patches, mut ids) = (Vec::new(), Vec::new());
        for pass in passes {
            patches.clear();
            ids.clear();
            for item in *pass {
                window(item, &mut patches, &mut ids);
            }
            let b = pass.len();
            let p = Tensor::<3>::from_data(
                TensorData::new(patches.clone(), [b, cfg.n_patches, cfg.patch_dim()]),
                device,
            );
            let i = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, 3]), device);
            let y = model.forward(p, i, false).into_data();
            let y = y
                .as_slice::<f32>()
                .map_err(|e| FoundationError::Tensor(e.to_string()))?;
            out.extend_from_slice(y);
        }
        Ok::<_, FoundationError>(out)
    };
    let parts: Vec<&[&[T]]> = passes
        .chunks(passes.len().div_ceil(threads).max(1))
        .collect();
    let outputs: Vec<Result<Vec<f32>, FoundationError>> = std::thread::scope(|scope| {
        let run = &run;
        let handles: Vec<_> = parts
            .iter()
            .skip(1)
            .map(|part| {
                let model = model.clone();
                scope.spawn(move || run(&model, part))
            })
            .collect();
        let mut out = vec![parts.first().map_or(Ok(Vec::new()), |p| run(model, p))];
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        out
    });
    let mut predicted = Vec::with_capacity(items.len());
    for o in outputs {
        predicted.extend(o?);
    }
    Ok(predicted)
}

/// What a prediction file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PanelInfo {
    /// The registered name.
    pub name: String,
    /// The model that made it.
    pub model: String,
    /// The latest data the model (and its parents) learned from.
    pub model_cutoff: AsOf,
    /// Dataset of the universe.
    pub dataset: String,
    /// Bar frequency.
    pub frequency: Frequency,
    /// What the values predict.
    pub target: Target,
    /// Forward horizon in bars.
    pub horizon: usize,
}

/// A `times × symbols` prediction panel, column-major, NaN where there is no prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionPanel {
    /// Provenance.
    pub info: PanelInfo,
    /// Bar times (rows).
    pub times: Vec<Timestamp>,
    /// Symbols (columns).
    pub symbols: Vec<String>,
    /// Values, column-major.
    pub values: Vec<f32>,
}

impl PredictionPanel {
    /// The value at row `t`, column `s`.
    pub fn get(&self, t: usize, s: usize) -> f32 {
        self.values[s * self.times.len() + t]
    }

    /// Writes `<dir>/<name>.csv` and `<dir>/<name>.json` (each via a temporary file and a
    /// rename). Returns the CSV path.
    ///
    /// # Errors
    /// IO failures.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, FoundationError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let csv = dir.join(format!("{}.csv", self.info.name));
        let mut text = String::with_capacity(self.values.len() * 10);
        text.push_str("ts");
        for s in &self.symbols {
            text.push(',');
            text.push_str(s);
        }
        text.push('\n');
        for (t, ts) in self.times.iter().enumerate() {
            text.push_str(&ts.display(self.info.frequency));
            for s in 0..self.symbols.len() {
                text.push(',');
                let v = self.get(t, s);
                if v.is_finite() {
                    text.push_str(&format!("{v}"));
                }
            }
            text.push('\n');
        }
        crate::checkpoint::write_atomic(&csv, text.as_bytes())?;
        let json = dir.join(format!("{}.json", self.info.name));
        let info =
            serde_json::to_string_pretty(&self.info).map_err(|source| FoundationError::Json {
                path: json.clone(),
                source,
            })?;
        crate::checkpoint::write_atomic(&json, info.as_bytes())?;
        Ok(csv)
    }

    /// The panel in long form (`ts, symbol, value`, one row per prediction made), for
    /// pandas, polars or DuckDB.
    pub fn table(&self) -> lim_market::parquet::Table {
        use lim_market::parquet::{Column, Table};
        let (mut ts, mut sym, mut val) = (Vec::new(), Vec::new(), Vec::new());
        for (t, time) in self.times.iter().enumerate() {
            for (s, name) in self.symbols.iter().enumerate() {
                let v = self.get(t, s);
                if v.is_finite() {
                    ts.push(time.0);
                    sym.push(name.clone());
                    val.push(f64::from(v));
                }
            }
        }
        let form = if self.info.frequency == Frequency::Daily {
            lim_market::reader::TsForm::Date
        } else {
            lim_market::reader::TsForm::DateTime
        };
        Table::default()
            .with("ts", Column::Time(ts, form))
            .with("symbol", Column::Text(sym))
            .with("value", Column::Real(val))
    }

    /// Reads a panel written by [`PredictionPanel::write`].
    ///
    /// # Errors
    /// Missing or malformed files (the message names file and line).
    pub fn read(dir: &Path, name: &str) -> Result<PredictionPanel, FoundationError> {
        let json = dir.join(format!("{name}.json"));
        let text = fs::read_to_string(&json).map_err(io(&json))?;
        let info: PanelInfo =
            serde_json::from_str(&text).map_err(|source| FoundationError::Json {
                path: json.clone(),
                source,
            })?;
        let csv = dir.join(format!("{name}.csv"));
        let text = fs::read_to_string(&csv).map_err(io(&csv))?;
        let mut lines = text.lines();
        let bad = |line: usize, what: String| FoundationError::Corrupt {
            path: csv.clone(),
            detail: format!("line {line}: {what}"),
        };
        let header = lines.next().ok_or_else(|| bad(1, "empty file".into()))?;
        let symbols: Vec<String> = header.split(',').skip(1).map(str::to_string).collect();
        let mut times = Vec::new();
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for (i, line) in lines.enumerate() {
            let mut cells = line.split(',');
            let ts = cells.next().unwrap_or_default();
            times.push(
                Timestamp::parse(ts).ok_or_else(|| bad(i + 2, format!("'{ts}' is not a time")))?,
            );
            let row: Result<Vec<f32>, _> = cells
                .map(|c| {
                    if c.is_empty() {
                        Ok(f32::NAN)
                    } else {
                        c.parse::<f32>()
                    }
                })
                .collect();
            let row = row.map_err(|e| bad(i + 2, e.to_string()))?;
            if row.len() != symbols.len() {
                return Err(bad(
                    i + 2,
                    format!("{} values for {} symbols", row.len(), symbols.len()),
                ));
            }
            rows.push(row);
        }
        let nt = times.len();
        let mut values = vec![f32::NAN; nt * symbols.len()];
        for (t, row) in rows.iter().enumerate() {
            for (s, v) in row.iter().enumerate() {
                values[s * nt + t] = *v;
            }
        }
        Ok(PredictionPanel {
            info,
            times,
            symbols,
            values,
        })
    }
}

/// Predicts every bar of `universe` in `[start, end]` that has a full window, as one panel.
/// `universe` must have been loaded as of `end` or earlier; each prediction uses only the
/// window ending at its own bar.
///
/// # Errors
/// A period that starts at or before the model's cutoff ([`FoundationError::NotOutOfSample`]),
/// or no bar in it.
pub fn predict_panel(
    name: &str,
    model: &Predictor,
    meta: &Meta,
    universe: &Universe,
    start: Timestamp,
    end: Timestamp,
    device: &Device,
) -> Result<PredictionPanel, FoundationError> {
    let about = About {
        model: &meta.name,
        cfg: &meta.model,
        cutoff: meta.manifest.cutoff,
        finetune: meta.finetune.as_ref(),
    };
    predict_with(name, model, &about, universe, start, end, device)
}

/// What [`predict_with`] needs to know of a model.
#[derive(Debug, Clone, Copy)]
pub struct About<'a> {
    /// Its name.
    pub model: &'a str,
    /// Its shape.
    pub cfg: &'a crate::config::ModelConfig,
    /// The latest data it learned from.
    pub cutoff: AsOf,
    /// How it was fine-tuned.
    pub finetune: Option<&'a crate::config::FinetuneConfig>,
}

/// [`predict_panel`] for a model held in memory rather than a checkpoint.
///
/// # Errors
/// As [`predict_panel`].
pub fn predict_with(
    name: &str,
    model: &Predictor,
    about: &About<'_>,
    universe: &Universe,
    start: Timestamp,
    end: Timestamp,
    device: &Device,
) -> Result<PredictionPanel, FoundationError> {
    let cutoff = about.cutoff;
    if cutoff.sees(start, universe.frequency) {
        return Err(FoundationError::NotOutOfSample {
            model: about.model.to_string(),
            start: start.display(universe.frequency),
            cutoff: crate::pretrain::show(cutoff),
        });
    }
    let cfg = about.cfg;
    let first = universe.times.partition_point(|t| *t < start);
    let last = universe.times.partition_point(|t| *t <= end);
    if first >= last {
        return Err(FoundationError::NoData(format!(
            "no bar of '{}' between {} and {}; pick a period inside the data",
            universe.dataset,
            start.display(universe.frequency),
            end.display(universe.frequency)
        )));
    }
    let nt = last - first;
    let ns = universe.series.len();
    let mut values = vec![f32::NAN; nt * ns];
    let model = model.valid();
    let device = device.clone().inner();
    let w = cfg.window();
    // (column, row) of each window to predict, in batches.
    let mut jobs: Vec<Job> = Vec::new();
    for (si, s) in universe.series.iter().enumerate() {
        for end_bar in w.saturating_sub(1)..s.len() {
            let row = s.rows[end_bar];
            if row >= first && row < last {
                jobs.push((si, end_bar, row - first));
            }
        }
    }
    if jobs.is_empty() {
        return Err(FoundationError::WindowTooLong {
            window: w,
            horizon: 0,
            scope: format!(
                "'{}' up to {}",
                universe.dataset,
                end.display(universe.frequency)
            ),
            longest: universe.series.iter().map(|s| s.len()).max().unwrap_or(0),
        });
    }
    let predicted = predict_windows(&model, &jobs, cfg, &device, |&(si, e, _), patches, ids| {
        write_window(&universe.series[si], e, cfg, patches);
        ids.extend_from_slice(&universe.series[si].ids);
    })?;
    let ft = about.finetune;
    // A volatility model's head says how much busier the next bars will be than the window
    // was (in logs); the panel holds the forecast itself, the realised volatility per bar
    // (root mean square of log returns), ready to size positions with.
    let vol = ft.is_some_and(|f| f.target == Target::LogVol);
    let mut anchor = ft
        .map_or(crate::config::VolAnchor::Window, |f| f.vol_anchor)
        .over(&universe.series, w);
    for (&(si, e, t), v) in jobs.iter().zip(predicted) {
        values[si * nt + t] = if vol {
            vol_forecast(&universe.series[si], e, w, anchor.at(si, e), v)
        } else {
            v
        };
    }
    Ok(PredictionPanel {
        info: PanelInfo {
            name: name.to_string(),
            model: about.model.to_string(),
            model_cutoff: cutoff,
            dataset: universe.dataset.clone(),
            frequency: universe.frequency,
            target: ft.map_or(Target::Rank, |f| f.target),
            horizon: ft.map_or(0, |f| f.horizon),
        },
        times: universe.times[first..last].to_vec(),
        symbols: universe.series.iter().map(|s| s.symbol.clone()).collect(),
        values,
    })
}
/// A volatility model's forecast for the window of `s` ending at bar `end`: the head's output
/// `head` added to the anchor's log volatility `base`, exponentiated. A window without
/// movement (a halted or dormant series) gets none, whatever the anchor: an EWMA anchor decays
/// slowly through months of one settlement price, and a book sized by it would hold such a
/// contract dozens of times over.
fn vol_forecast(
    s: &crate::features::InstrumentSeries,
    end: usize,
    w: usize,
    base: f64,
    head: f32,
) -> f32 {
    if crate::finetune::halted(s, end, w) || base <= crate::finetune::MIN_VOL.ln() {
        f32::NAN
    } else {
        (f64::from(head) + base).exp() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FEATURES, InstrumentSeries};

    /// Months of one settlement price: no forecast there, even where the anchor (EWMA, decayed
    /// but not at the floor) would give one; where the window moved, the head scales the anchor.
    #[test]
    fn no_volatility_forecast_on_a_window_that_did_not_move() {
        let logret: Vec<f64> = (0..80)
            .map(|i| {
                if i < 40 {
                    0.01 * ((i as f64) * 1.3).sin()
                } else {
                    0.0
                }
            })
            .collect();
        let s = InstrumentSeries {
            symbol: "SHFE:FU0".into(),
            dataset: "fut".into(),
            ids: [2, 0, 1],
            rows: (0..80).collect(),
            feats: vec![[0.0; FEATURES]; 80],
            logret,
        };
        let ewma_base = 0.0005f64.ln();
        assert!(vol_forecast(&s, 79, 16, ewma_base, 0.1).is_nan());
        assert!(vol_forecast(&s, 30, 16, crate::finetune::MIN_VOL.ln(), 0.1).is_nan());
        let moved = vol_forecast(&s, 30, 16, ewma_base, 0.1);
        assert_eq!(moved, (f64::from(0.1f32) + ewma_base).exp() as f32);
    }
}
