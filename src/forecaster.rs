//! The foundation model behind the research workflow's `pretrain`, `finetune` and `predict`
//! tools.
//!
//! Pretrains a small patch Transformer on every dataset of the target's bar frequency up to
//! the tools' cutoff (the target weighted double), fine-tunes it on the target's forward 5-bar
//! return ranks, and predicts each bar after the cutoff. Deterministic for a recipe on the CPU
//! device, so a replay recomputes the same field. What it trained is kept for the process's
//! life, keyed by recipe and target; a recipe whose backbone it lacks (after a resume) is
//! trained from its name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lim_foundation::finetune::IcReport;
use lim_foundation::forecast::{
    TargetSpec, finetune_target, predict_target, pretrain_backbone, scratch_backbone,
};
use lim_foundation::model::{Backbone, Predictor};
use lim_foundation::{Device, FinetuneConfig, MixtureEntry, Mode, ModelConfig, PretrainConfig};
use lim_market::{AsOf, MarketData, Timestamp};
use lim_tools::{FoundationModel, ModelRequest, Pretrained, Recipe, TuneMode};

/// Estimated CPU-seconds per training step of the `small` preset, batch 32, both stages; see
/// `docs/foundation.md` for how it was measured.
pub const SECONDS_PER_STEP: f64 = 0.01;

const BATCH: usize = 32;

/// The foundation model as a [`FoundationModel`].
pub struct FoundationForecaster {
    market: Arc<dyn MarketData>,
    device: Device,
    backbones: Mutex<HashMap<String, Backbone>>,
    tuned: Mutex<HashMap<String, (Predictor, FinetuneConfig, IcReport, usize)>>,
}

impl std::fmt::Debug for FoundationForecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoundationForecaster")
            .finish_non_exhaustive()
    }
}

/// The target of a request: its first dataset's instruments, and the datasets of its bar
/// frequency for pretraining.
struct Target {
    spec: TargetSpec,
    mixture: Vec<MixtureEntry>,
    key: String,
}

impl FoundationForecaster {
    /// Trains on `market`'s data.
    pub fn new(market: Arc<dyn MarketData>) -> FoundationForecaster {
        FoundationForecaster {
            market,
            device: Device::flex().autodiff(),
            backbones: Mutex::new(HashMap::new()),
            tuned: Mutex::new(HashMap::new()),
        }
    }

    fn target(&self, req: &ModelRequest) -> Result<Target, String> {
        let dataset = req
            .datasets
            .first()
            .ok_or("the universe names no dataset")?
            .clone();
        let metas = self.market.datasets().map_err(|e| e.to_string())?;
        let freq = metas
            .iter()
            .find(|m| m.name == dataset)
            .map(|m| m.frequency)
            .ok_or_else(|| format!("no dataset '{dataset}'"))?;
        let mixture: Vec<MixtureEntry> = metas
            .iter()
            .filter(|m| m.frequency == freq)
            .map(|m| MixtureEntry {
                dataset: m.name.clone(),
                weight: if m.name == dataset { 2.0 } else { 1.0 },
                symbols: None,
            })
            .collect();
        let symbols: Vec<String> = req
            .symbols
            .iter()
            .zip(&req.sources)
            .filter(|(_, src)| **src == dataset)
            .map(|(s, _)| s.clone())
            .collect();
        let after = |t: Timestamp| AsOf(Timestamp(t.0 + freq.seconds()));
        let last = req.times.last().copied().ok_or("no bars")?;
        let key = format!(
            "{dataset}|{}|{}|{}",
            req.cutoff.0,
            last.0,
            symbols.join(",")
        );
        Ok(Target {
            spec: TargetSpec {
                dataset,
                symbols: Some(symbols),
                cutoff: after(req.cutoff),
                until: after(last),
                model: ModelConfig::small(),
            },
            mixture,
            key,
        })
    }

    /// The backbone of `recipe`, trained if it is not kept.
    fn backbone(&self, t: &Target, recipe: &Recipe) -> Result<Backbone, String> {
        let key = format!("{}@{}", recipe.base(), t.key);
        if let Some(b) = self.backbones.lock().map_err(|e| e.to_string())?.get(&key) {
            return Ok(b.clone());
        }
        let b = match recipe.pretrain {
            None => scratch_backbone(
                &t.spec.model,
                recipe.finetune.map_or(0, |f| f.seed).wrapping_add(1),
                &self.device,
            ),
            Some(p) => pretrain_backbone(
                self.market.as_ref(),
                &t.mixture,
                t.spec.cutoff,
                &t.spec.model,
                &PretrainConfig::new(p.steps, BATCH, p.seed),
                &self.device,
            )
            .map_err(|e| e.to_string())?,
        };
        self.backbones
            .lock()
            .map_err(|e| e.to_string())?
            .insert(key, b.clone());
        Ok(b)
    }

    /// The fine-tuned model of `recipe` with its holdout figures, trained if it is not kept.
    fn tuned(
        &self,
        t: &Target,
        recipe: &Recipe,
    ) -> Result<(Predictor, FinetuneConfig, IcReport, usize), String> {
        let f = recipe
            .finetune
            .ok_or_else(|| format!("'{recipe}' is not fine-tuned"))?;
        let key = format!("{recipe}@{}", t.key);
        if let Some(m) = self.tuned.lock().map_err(|e| e.to_string())?.get(&key) {
            return Ok(m.clone());
        }
        let backbone = self.backbone(t, recipe)?;
        let mode = match (f.mode, recipe.pretrain) {
            (TuneMode::Probe, _) => Mode::Probe,
            (TuneMode::Full | TuneMode::LpFt, Some(_)) => Mode::Full,
            (TuneMode::Full, None) => Mode::Scratch,
            (TuneMode::LpFt, None) => {
                return Err(format!("'{recipe}': LP-FT needs a pretrained backbone"));
            }
        };
        let mut ft = FinetuneConfig::new(mode, f.steps, BATCH, f.seed);
        ft.lp_ft = f.mode == TuneMode::LpFt;
        if f.target.is_volatility() {
            ft.target = lim_foundation::Target::LogVol;
        }
        ft.horizon = f.target.horizon();
        let done = finetune_target(
            self.market.as_ref(),
            &t.spec,
            backbone,
            &ft,
            f.seed,
            &self.device,
        )
        .map_err(|e| e.to_string())?;
        let kept = (done.model, ft, done.valid, done.steps_run);
        self.tuned
            .lock()
            .map_err(|e| e.to_string())?
            .insert(key, kept.clone());
        Ok(kept)
    }
}

impl FoundationModel for FoundationForecaster {
    fn describe(&self) -> String {
        "the foundation model (patch Transformer, d_model 32)".into()
    }

    fn seconds_per_step(&self) -> f64 {
        SECONDS_PER_STEP
    }

    fn pretrain(&self, req: &ModelRequest, recipe: &Recipe) -> Result<Pretrained, String> {
        let t = self.target(req)?;
        self.backbone(&t, recipe)?;
        Ok(Pretrained {
            datasets: t.mixture.iter().map(|m| m.dataset.clone()).collect(),
        })
    }

    fn finetune(
        &self,
        req: &ModelRequest,
        recipe: &Recipe,
    ) -> Result<lim_tools::Finetuned, String> {
        let t = self.target(req)?;
        let (_, _, ic, steps_run) = self.tuned(&t, recipe)?;
        Ok(lim_tools::Finetuned {
            holdout_rank_ic: ic.rank_ic,
            holdout_ic: ic.ic,
            holdout_bars: ic.dates,
            steps_run,
        })
    }

    fn predict(&self, req: &ModelRequest, recipe: &Recipe) -> Result<Vec<f64>, String> {
        let t = self.target(req)?;
        let (model, ft, _, _) = self.tuned(&t, recipe)?;
        let panel = predict_target(self.market.as_ref(), &t.spec, &model, &ft, &self.device)
            .map_err(|e| e.to_string())?;
        // Onto the request's grid: rows by time, columns by symbol; NaN where none.
        let n = req.times.len();
        let mut out = vec![f64::NAN; n * req.symbols.len()];
        let rows: Vec<Option<usize>> = panel
            .times
            .iter()
            .map(|x| req.times.binary_search(x).ok())
            .collect();
        for (pc, sym) in panel.symbols.iter().enumerate() {
            let Some(c) = req
                .symbols
                .iter()
                .zip(&req.sources)
                .position(|(s, src)| s == sym && *src == t.spec.dataset)
            else {
                continue;
            };
            for (pr, row) in rows.iter().enumerate() {
                if let Some(r) = row {
                    let v = panel.get(pr, pc);
                    if v.is_finite() {
                        out[c * n + r] = f64::from(v);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The strategy language's classic factors as candidates for the foundation grid's baseline
/// "the best single factor chosen on training": the offline strategist's seeds of every family,
/// in their per-instrument form (a cross-sectional rank would not change a rank IC), evaluated
/// on the target's panel as of the test's end (every expression looks back only).
pub struct SeedFactors<'a> {
    /// Where the panels come from.
    pub market: &'a dyn MarketData,
}

impl std::fmt::Debug for SeedFactors<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedFactors").finish_non_exhaustive()
    }
}

impl SeedFactors<'_> {
    /// The candidate expressions, each once, in the seeds' order.
    pub fn expressions() -> Vec<String> {
        use lim_agents::offline::{Family, seeds};
        let mut out: Vec<String> = Vec::new();
        for family in [Family::Trend, Family::Reversal, Family::Mixed] {
            for s in seeds(family, false) {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }
}

impl lim_foundation::linear::FactorSource for SeedFactors<'_> {
    fn factors(
        &self,
        dataset: &str,
        symbols: Option<&[String]>,
        until: AsOf,
    ) -> Result<Vec<lim_foundation::linear::FactorPanel>, String> {
        let mut q = lim_market::PanelQuery::new(until, [dataset.to_string()])
            .fields(lim_backtest::frame::FIELDS);
        if let Some(s) = symbols {
            q = q.symbols(s.to_vec());
        }
        let mut set = self.market.panels(&q).map_err(|e| e.to_string())?;
        let session = lim_backtest::session::Session::new(&mut set, Default::default())
            .map_err(|e| e.to_string())?;
        let exprs = Self::expressions();
        session
            .signal_values(&exprs)
            .into_iter()
            .zip(exprs)
            .map(|(m, name)| {
                let m = m.map_err(|e| format!("{name}: {e}"))?;
                Ok(lim_foundation::linear::FactorPanel {
                    name,
                    times: session.times().to_vec(),
                    symbols: session.symbols().to_vec(),
                    values: m.data.clone(),
                })
            })
            .collect()
    }
}
