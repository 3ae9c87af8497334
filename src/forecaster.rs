//! The foundation model behind the research workflow's `forecast` tool.
//!
//! Pretrains a small patch Transformer on every dataset of the target's bar frequency up to
//! the tool's cutoff (the target weighted double), fine-tunes it on the target's forward
//! 5-bar return ranks, and predicts each bar after the cutoff. Deterministic for a seed on the
//! CPU device, so a replay recomputes the same field.

use std::sync::Arc;

use lim_foundation::forecast::{ForecastSpec, forecast};
use lim_foundation::{FinetuneConfig, MixtureEntry, Mode, ModelConfig, PretrainConfig};
use lim_market::{AsOf, MarketData, Timestamp};
use lim_tools::{ForecastRequest, Forecaster};

/// The foundation model as a [`Forecaster`].
#[derive(Debug, Clone)]
pub struct FoundationForecaster {
    market: Arc<dyn MarketData>,
    steps: usize,
}

impl FoundationForecaster {
    /// Trains on `market`'s data, `steps` pretraining and fine-tuning steps each.
    pub fn new(market: Arc<dyn MarketData>, steps: usize) -> FoundationForecaster {
        FoundationForecaster { market, steps }
    }
}

impl Forecaster for FoundationForecaster {
    fn describe(&self) -> String {
        format!(
            "the foundation model (patch Transformer, d_model 32, pretrained across markets for {} steps, fine-tuned on forward 5-bar return ranks)",
            self.steps
        )
    }

    fn forecast(&self, req: &ForecastRequest) -> Result<Vec<f64>, String> {
        let target = req
            .datasets
            .first()
            .ok_or("the universe names no dataset")?
            .clone();
        let metas = self.market.datasets().map_err(|e| e.to_string())?;
        let freq = metas
            .iter()
            .find(|m| m.name == target)
            .map(|m| m.frequency)
            .ok_or_else(|| format!("no dataset '{target}'"))?;
        let mixture: Vec<MixtureEntry> = metas
            .iter()
            .filter(|m| m.frequency == freq)
            .map(|m| MixtureEntry {
                dataset: m.name.clone(),
                weight: if m.name == target { 2.0 } else { 1.0 },
                symbols: None,
            })
            .collect();
        let symbols: Vec<String> = req
            .symbols
            .iter()
            .zip(&req.sources)
            .filter(|(_, src)| **src == target)
            .map(|(s, _)| s.clone())
            .collect();
        let after = |t: Timestamp| AsOf(Timestamp(t.0 + freq.seconds()));
        let last = req.times.last().copied().ok_or("no bars")?;
        let seed = req.seed;
        let spec = ForecastSpec {
            dataset: target.clone(),
            symbols: Some(symbols),
            mixture,
            cutoff: after(req.cutoff),
            until: after(last),
            model: ModelConfig::small(),
            pretrain: PretrainConfig::new(self.steps, 32, seed),
            finetune: FinetuneConfig::new(Mode::Full, self.steps, 32, seed),
            seed,
        };
        let panel = forecast(self.market.as_ref(), &spec, &lim_foundation::Device::flex())
            .map_err(|e| e.to_string())?;
        // Onto the request's grid: rows by time, columns by symbol; NaN where none.
        let t = req.times.len();
        let mut out = vec![f64::NAN; t * req.symbols.len()];
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
                .position(|(s, src)| s == sym && *src == target)
            else {
                continue;
            };
            for (pr, row) in rows.iter().enumerate() {
                if let Some(r) = row {
                    let v = panel.get(pr, pc);
                    if v.is_finite() {
                        out[c * t + r] = f64::from(v);
                    }
                }
            }
        }
        Ok(out)
    }
}
