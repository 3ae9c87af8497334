//! From market data to model inputs: per-instrument bar features, windows, patches, targets.
//!
//! Features of bar `t` (prices back-adjusted for futures rolls, so every log ratio is
//! roll-clean): log return `ln C_t/C_{t-1}`, high–low range `ln H_t/L_t`, open gap
//! `ln O_t/C_{t-1}`, log volume change `ln (V_t+1)/(V_{t-1}+1)` and open-interest change
//! `ln (OI_t+1)/(OI_{t-1}+1)` (0 where the market has none). A window's features are
//! instance-normalised: each feature by its own mean and standard deviation over the window,
//! so no statistic ever comes from outside the window.

use lim_market::{AsOf, AssetClass, Field, Frequency, MarketData, PanelQuery, Timestamp};

use crate::config::ModelConfig;
use crate::error::FoundationError;

/// Features per bar.
pub const FEATURES: usize = 5;
/// Vocabulary sizes of the categorical embeddings.
pub const ASSET_VOCAB: usize = 8;
/// Exchange codes hash into this many buckets (0: unknown).
pub const EXCHANGE_VOCAB: usize = 64;
/// Bar-frequency buckets.
pub const FREQ_VOCAB: usize = 10;
/// Largest absolute value of a normalised input or target.
pub(crate) const CLIP: f32 = 10.0;

/// One instrument's bars, compacted to the bars that exist, as of a cutoff.
#[derive(Debug, Clone)]
pub struct InstrumentSeries {
    /// Symbol.
    pub symbol: String,
    /// Dataset it came from.
    pub dataset: String,
    /// Asset class, exchange and frequency ids for the embeddings.
    pub ids: [i64; 3],
    /// Row of each bar in the universe's time axis.
    pub rows: Vec<usize>,
    /// Features per bar.
    pub feats: Vec<[f32; FEATURES]>,
    /// Log return per bar (roll-clean), for targets.
    pub logret: Vec<f64>,
}

impl InstrumentSeries {
    /// Bars held.
    pub fn len(&self) -> usize {
        self.feats.len()
    }

    /// Whether no bar is held.
    pub fn is_empty(&self) -> bool {
        self.feats.is_empty()
    }
}

/// A set of instruments of one dataset on a shared time axis.
#[derive(Debug, Clone)]
pub struct Universe {
    /// Dataset name.
    pub dataset: String,
    /// The shared time axis.
    pub times: Vec<Timestamp>,
    /// Bar frequency.
    pub frequency: Frequency,
    /// The instruments.
    pub series: Vec<InstrumentSeries>,
}

/// Id of an asset class.
pub fn asset_id(a: AssetClass) -> i64 {
    match a {
        AssetClass::Equity => 1,
        AssetClass::Futures => 2,
        AssetClass::Index => 3,
        AssetClass::Crypto => 4,
        AssetClass::Fx => 5,
        AssetClass::Unknown => 6,
    }
}

/// Id of an exchange code: a stable hash bucket, 0 when unknown.
pub fn exchange_id(e: Option<&str>) -> i64 {
    match e {
        None => 0,
        Some(code) => {
            1 + (xxhash_rust::xxh3::xxh3_64(code.as_bytes()) % (EXCHANGE_VOCAB as u64 - 1)) as i64
        }
    }
}

/// Id of a bar frequency.
pub fn freq_id(f: Frequency) -> i64 {
    match f {
        Frequency::Daily => 1,
        Frequency::Intraday(s) => match s {
            0..=60 => 2,
            61..=300 => 3,
            301..=900 => 4,
            901..=1800 => 5,
            1801..=3600 => 6,
            3601..=14_400 => 7,
            _ => 8,
        },
    }
}

fn log_ratio(a: f64, b: f64) -> f32 {
    let v = (a / b).ln();
    if v.is_finite() { v as f32 } else { 0.0 }
}

/// Loads one dataset as of `cutoff` (nothing that closed after it is read) with roll-clean
/// back-adjusted prices, and turns every symbol into an [`InstrumentSeries`].
///
/// # Errors
/// Unknown dataset or symbol (with a suggestion), unreadable data.
pub fn load_universe(
    data: &dyn MarketData,
    dataset: &str,
    symbols: Option<&[String]>,
    cutoff: AsOf,
) -> Result<Universe, FoundationError> {
    let mut q = PanelQuery::new(cutoff, [dataset]).fields([
        Field::Open,
        Field::High,
        Field::Low,
        Field::Close,
        Field::Volume,
        Field::OpenInterest,
    ]);
    if let Some(s) = symbols {
        q = q.symbols(s.iter().cloned());
    }
    let set = data.panels(&q)?;
    let get = |f: Field| {
        set.panel(f).ok_or_else(|| {
            FoundationError::NoData(format!("dataset '{dataset}' has no {} field", f.name()))
        })
    };
    let (open, high, low, close, volume, oi) = (
        get(Field::Open)?,
        get(Field::High)?,
        get(Field::Low)?,
        get(Field::Close)?,
        get(Field::Volume)?,
        get(Field::OpenInterest)?,
    );
    let freq = freq_id(set.frequency);
    let mut series = Vec::with_capacity(set.instruments.len());
    for (s, inst) in set.instruments.iter().enumerate() {
        let c = close.column(s);
        let present: Vec<usize> = (0..c.len())
            .filter(|&t| c[t].is_finite() && c[t] > 0.0)
            .collect();
        let mut out = InstrumentSeries {
            symbol: inst.symbol.clone(),
            dataset: dataset.to_string(),
            ids: [
                asset_id(inst.asset_class),
                exchange_id(inst.exchange.as_deref()),
                freq,
            ],
            rows: Vec::with_capacity(present.len()),
            feats: Vec::with_capacity(present.len()),
            logret: Vec::with_capacity(present.len()),
        };
        for w in present.windows(2) {
            let (p, t) = (w[0], w[1]);
            let (o, h, l, v, vp, i, ip) = (
                open.get(t, s),
                high.get(t, s),
                low.get(t, s),
                volume.get(t, s),
                volume.get(p, s),
                oi.get(t, s),
                oi.get(p, s),
            );
            let r = log_ratio(c[t], c[p]);
            out.rows.push(t);
            out.feats.push([
                r,
                log_ratio(h, l).max(0.0),
                log_ratio(o, c[p]),
                log_ratio(v.max(0.0) + 1.0, vp.max(0.0) + 1.0),
                log_ratio(i.max(0.0) + 1.0, ip.max(0.0) + 1.0),
            ]);
            out.logret.push(f64::from(r));
        }
        series.push(out);
    }
    Ok(Universe {
        dataset: dataset.to_string(),
        times: set.times,
        frequency: set.frequency,
        series,
    })
}

/// Writes the instance-normalised patches of the window ending at bar `end` (inclusive) into
/// `out` (`n_patches × patch_len × FEATURES` values) and returns the window's standard
/// deviation of log returns (the scale of return targets).
pub fn write_window(
    s: &InstrumentSeries,
    end: usize,
    cfg: &ModelConfig,
    out: &mut Vec<f32>,
) -> f32 {
    let w = cfg.window();
    let start = end + 1 - w;
    let bars = &s.feats[start..=end];
    let mut mean = [0f64; FEATURES];
    let mut sd = [0f64; FEATURES];
    for b in bars {
        for k in 0..FEATURES {
            mean[k] += f64::from(b[k]);
        }
    }
    for m in &mut mean {
        *m /= w as f64;
    }
    for b in bars {
        for k in 0..FEATURES {
            let d = f64::from(b[k]) - mean[k];
            sd[k] += d * d;
        }
    }
    for v in &mut sd {
        *v = (*v / w as f64).sqrt() + 1e-5;
    }
    for p in 0..cfg.n_patches {
        let first = p * cfg.stride;
        for b in &bars[first..first + cfg.patch_len] {
            for k in 0..FEATURES {
                let z = ((f64::from(b[k]) - mean[k]) / sd[k]) as f32;
                out.push(z.clamp(-CLIP, CLIP));
            }
        }
    }
    sd[0] as f32
}

/// The sum of log returns over the `h` bars after `end`, if they exist.
pub fn forward_return(s: &InstrumentSeries, end: usize, h: usize) -> Option<f64> {
    if end + h >= s.len() {
        return None;
    }
    Some(s.logret[end + 1..=end + h].iter().sum())
}

/// A return scaled by the window's volatility and horizon, clipped.
pub fn scaled(ret: f64, sd: f32, h: usize) -> f32 {
    let z = ret / (f64::from(sd) * (h as f64).sqrt());
    (z as f32).clamp(-CLIP, CLIP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize) -> InstrumentSeries {
        InstrumentSeries {
            symbol: "X".into(),
            dataset: "d".into(),
            ids: [1, 0, 1],
            rows: (0..n).collect(),
            feats: (0..n)
                .map(|i| [i as f32, 1.0, (i % 3) as f32, 0.5, 0.0])
                .collect(),
            logret: (0..n).map(|i| i as f64).collect(),
        }
    }

    #[test]
    fn windows_are_normalised_within_the_window_only() {
        let cfg = ModelConfig::tiny();
        let s = series(40);
        let mut a = Vec::new();
        write_window(&s, 20, &cfg, &mut a);
        assert_eq!(a.len(), cfg.n_patches * cfg.patch_len * FEATURES);
        // Feature 0 is 5..=20 in the window: normalised mean 0.
        let m: f32 = a.iter().step_by(FEATURES).sum::<f32>() / cfg.window() as f32;
        assert!(m.abs() < 1e-5);
        // A constant feature normalises to zero, not to NaN.
        assert!(a.iter().skip(1).step_by(FEATURES).all(|v| v.abs() < 1e-3));
        // Changing bars after the window changes nothing.
        let mut s2 = s.clone();
        s2.feats[21] = [99.0; FEATURES];
        let mut b = Vec::new();
        write_window(&s2, 20, &cfg, &mut b);
        assert_eq!(a, b);
        assert_eq!(forward_return(&s, 20, 2), Some(43.0));
        assert_eq!(forward_return(&s, 38, 2), None);
    }

    #[test]
    fn ids_are_stable_and_in_range() {
        assert_eq!(exchange_id(None), 0);
        let a = exchange_id(Some("SHFE"));
        assert_eq!(a, exchange_id(Some("SHFE")));
        assert!((1..EXCHANGE_VOCAB as i64).contains(&a));
        assert_eq!(freq_id(Frequency::Daily), 1);
        assert_eq!(freq_id(Frequency::Intraday(300)), 3);
    }
}
