//! Volatility forecasts and the baselines a quant would hold them against: the window's own
//! realised volatility, an exponentially weighted moving average (RiskMetrics, λ = 0.94), and
//! HAR-RV (Corsi 2009: the next period's realised volatility regressed on the last bar's, the
//! last week's and the last month's, in logs and on variances), fitted by least squares on the
//! training samples.
//! Scored on the samples of a period by QLIKE (Patton 2011's robust loss on variances), the
//! mean squared error of the log volatility, and the cross-sectional rank IC per date.
//!
//! Every forecast for a sample ending at bar `end` uses log returns up to `end` only; the
//! realised value uses the `horizon` bars after it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::features::InstrumentSeries;
use crate::finetune::{SampleSet, pearson, ranks, window_log_vol};

/// How good log-volatility forecasts were over a period's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolReport {
    /// Mean QLIKE of the variances: `RV²/σ̂² − ln(RV²/σ̂²) − 1` (0 when exact; lower is better).
    pub qlike: f64,
    /// Mean squared error of the log volatility.
    pub mse_log: f64,
    /// Mean per-date Spearman correlation of forecast and realised volatility across
    /// instruments (dates with at least three).
    pub rank_ic: f64,
    /// Samples scored.
    pub samples: usize,
    /// The QLIKE summed over each date's samples, date by date: what a test of two forecasts'
    /// losses over the same dates compares (not written out).
    #[serde(skip)]
    pub qlike_by_date: Vec<f64>,
}

/// Scores log-volatility forecasts `pred` (one per sample of `set`) against the realised ones.
pub fn vol_report(set: &SampleSet, pred: &[f64]) -> VolReport {
    let n = set.samples.len().min(pred.len());
    let (mut q, mut m) = (0.0, 0.0);
    let mut by_row: BTreeMap<usize, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut by_date: BTreeMap<usize, f64> = BTreeMap::new();
    for (s, p) in set.samples.iter().zip(pred) {
        // Variances' ratio from log volatilities: RV²/σ̂² = exp(2 (log RV − log σ̂)).
        let d = 2.0 * (s.ret - p);
        let loss = d.exp() - d - 1.0;
        q += loss;
        *by_date.entry(s.row).or_default() += loss;
        m += (s.ret - p).powi(2);
        let e = by_row.entry(s.row).or_default();
        e.0.push(*p);
        e.1.push(s.ret);
    }
    let ics: Vec<f64> = by_row
        .values()
        .filter(|(p, _)| p.len() >= 3)
        .filter_map(|(p, r)| pearson(&ranks(p), &ranks(r)))
        .collect();
    VolReport {
        qlike: q / n.max(1) as f64,
        mse_log: m / n.max(1) as f64,
        rank_ic: if ics.is_empty() {
            f64::NAN
        } else {
            ics.iter().sum::<f64>() / ics.len() as f64
        },
        samples: n,
        qlike_by_date: by_date.into_values().collect(),
    }
}

/// Floor of a volatility before its log (as the target's).
const MIN_VOL: f64 = 1e-6;

/// Log of the root mean square of the `w` log returns ending at `end` (fewer at the start).
pub fn trailing_log_vol(s: &InstrumentSeries, end: usize, w: usize) -> f64 {
    window_log_vol(s, end, w)
}

/// The window's own volatility as the forecast (what the model's target is relative to).
pub fn trailing(set: &SampleSet, w: usize) -> Vec<f64> {
    set.samples
        .iter()
        .map(|s| trailing_log_vol(&set.universe.series[s.series], s.end, w))
        .collect()
}

/// Exponentially weighted variance of the log returns up to and including `end`, started on
/// the first `seed` bars' mean square: `σ²ₜ = λ σ²ₜ₋₁ + (1 − λ) r²ₜ`.
pub fn ewma_log_vol(s: &InstrumentSeries, end: usize, lambda: f64) -> f64 {
    const SEED: usize = 20;
    let r: Vec<f64> = s.logret[..=end]
        .iter()
        .map(|x| if x.is_finite() { *x } else { 0.0 })
        .collect();
    let k = SEED.min(r.len());
    let mut var = r[..k].iter().map(|x| x * x).sum::<f64>() / k.max(1) as f64;
    for x in &r[k..] {
        var = lambda * var + (1.0 - lambda) * x * x;
    }
    var.sqrt().max(MIN_VOL).ln()
}

/// [`ewma_log_vol`] at every bar of `s`, in one pass: the same numbers, in the same order of
/// operations.
pub fn ewma_log_vols(s: &InstrumentSeries, lambda: f64) -> Vec<f64> {
    const SEED: usize = 20;
    let mut out = Vec::with_capacity(s.logret.len());
    let (mut sum, mut var) = (0.0, 0.0);
    for (i, x) in s.logret.iter().enumerate() {
        let x = if x.is_finite() { *x } else { 0.0 };
        if i < SEED {
            // The seed: the mean square of the bars so far.
            sum += x * x;
            var = sum / (i + 1) as f64;
        } else {
            var = lambda * var + (1.0 - lambda) * x * x;
        }
        out.push(var.sqrt().max(MIN_VOL).ln());
    }
    out
}

/// The EWMA forecast for every sample (RiskMetrics' λ = 0.94 for daily bars).
pub fn ewma(set: &SampleSet, lambda: f64) -> Vec<f64> {
    let mut done: Vec<Option<Vec<f64>>> = vec![None; set.universe.series.len()];
    set.samples
        .iter()
        .map(|s| {
            done[s.series]
                .get_or_insert_with(|| ewma_log_vols(&set.universe.series[s.series], lambda))[s.end]
        })
        .collect()
}

/// HAR-RV in logs: `log RVₜ₊ₕ = b₀ + b₁ log RV¹ₜ + b₂ log RV⁵ₜ + b₃ log RV²²ₜ`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Har {
    /// Intercept and the daily, weekly and monthly coefficients.
    pub coef: [f64; 4],
}

fn har_features(s: &InstrumentSeries, end: usize) -> [f64; 4] {
    [
        1.0,
        trailing_log_vol(s, end, 1),
        trailing_log_vol(s, end, 5),
        trailing_log_vol(s, end, 22),
    ]
}

impl Har {
    /// Least squares on `train`'s samples (normal equations, Gaussian elimination with partial
    /// pivoting). `None` when the system is singular.
    pub fn fit(train: &SampleSet) -> Option<Har> {
        let (mut a, mut c) = ([[0.0f64; 4]; 4], [0.0f64; 4]);
        for s in &train.samples {
            let x = har_features(&train.universe.series[s.series], s.end);
            for i in 0..4 {
                for j in 0..4 {
                    a[i][j] += x[i] * x[j];
                }
                c[i] += x[i] * s.ret;
            }
        }
        Some(Har {
            coef: crate::linear::solve(a, c)?,
        })
    }

    /// Its forecast for every sample of `set`.
    pub fn predict(&self, set: &SampleSet) -> Vec<f64> {
        set.samples
            .iter()
            .map(|s| {
                let x = har_features(&set.universe.series[s.series], s.end);
                (0..4).map(|i| self.coef[i] * x[i]).sum()
            })
            .collect()
    }
}

/// The mean square of the finite log returns of the `w` bars ending at `end` (0 when there is
/// none): a realised variance, without the floor a log needs.
fn window_variance(s: &InstrumentSeries, end: usize, w: usize) -> f64 {
    let r = &s.logret[end + 1 - w.min(end + 1)..=end];
    let (sum, n) = r
        .iter()
        .filter(|x| x.is_finite())
        .fold((0.0, 0usize), |(a, n), x| (a + x * x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn har_variance_features(s: &InstrumentSeries, end: usize) -> [f64; 4] {
    [
        1.0,
        window_variance(s, end, 1),
        window_variance(s, end, 5),
        window_variance(s, end, 22),
    ]
}

/// HAR-RV in Corsi's own form, on variances: `RVₜ₊ₕ = b₀ + b₁ RV¹ₜ + b₂ RV⁵ₜ + b₃ RV²²ₜ`,
/// each component the mean squared log return over its bars. A day without a price change
/// adds nothing to it, where in the log form it adds the floor's log and the forecast
/// collapses (thinly traded contracts).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HarVariance {
    /// Intercept and the daily, weekly and monthly coefficients.
    pub coef: [f64; 4],
    /// The least a forecast may be: a hundredth of the training samples' mean realised
    /// variance (a fit on levels can go negative).
    pub floor: f64,
}

impl HarVariance {
    /// Least squares of the realised variances of `train`'s samples on the components. `None`
    /// when the system is singular or there is no sample.
    pub fn fit(train: &SampleSet) -> Option<HarVariance> {
        let (mut a, mut c, mut total) = ([[0.0f64; 4]; 4], [0.0f64; 4], 0.0);
        for s in &train.samples {
            let x = har_variance_features(&train.universe.series[s.series], s.end);
            let y = (2.0 * s.ret).exp();
            total += y;
            for i in 0..4 {
                for j in 0..4 {
                    a[i][j] += x[i] * x[j];
                }
                c[i] += x[i] * y;
            }
        }
        if train.samples.is_empty() {
            return None;
        }
        Some(HarVariance {
            coef: crate::linear::solve(a, c)?,
            floor: 0.01 * total / train.samples.len() as f64,
        })
    }

    /// Its variance forecast for every sample of `set`.
    pub fn variances(&self, set: &SampleSet) -> Vec<f64> {
        set.samples
            .iter()
            .map(|s| {
                let x = har_variance_features(&set.universe.series[s.series], s.end);
                (0..4)
                    .map(|i| self.coef[i] * x[i])
                    .sum::<f64>()
                    .max(self.floor)
            })
            .collect()
    }

    /// The factor on its forecasts with the lowest QLIKE on `set`: the mean of realised over
    /// forecast variance (1 when there is no sample; see [`qlike_bias`]).
    pub fn scale_on(&self, set: &SampleSet) -> f64 {
        (2.0 * qlike_bias(set, &self.log_vols(set, 1.0))).exp()
    }

    /// Its log-volatility forecasts of `set`'s samples, the variances times `scale`.
    pub fn log_vols(&self, set: &SampleSet, scale: f64) -> Vec<f64> {
        self.variances(set)
            .iter()
            .map(|v| 0.5 * (v * scale).ln())
            .collect()
    }
}

/// Half the variance of the residuals of log-volatility forecasts `pred` on `set`, plus their
/// mean: added to a forecast of the log (a median), it gives the log of the mean volatility
/// under a lognormal error, which is what QLIKE scores.
pub fn lognormal_bias(set: &SampleSet, pred: &[f64]) -> f64 {
    let r: Vec<f64> = set
        .samples
        .iter()
        .zip(pred)
        .map(|(s, p)| s.ret - p)
        .collect();
    if r.len() < 2 {
        return 0.0;
    }
    let m = r.iter().sum::<f64>() / r.len() as f64;
    0.5 * r.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (r.len() - 1) as f64 + m
}

/// The shift of log-volatility forecasts `pred` with the lowest QLIKE on `set`: half the log of
/// the mean ratio of realised to forecast variance (0 when there is no sample). For forecasts
/// of the mean variance, where [`lognormal_bias`] is for forecasts of the log's median.
pub fn qlike_bias(set: &SampleSet, pred: &[f64]) -> f64 {
    let n = set.samples.len().min(pred.len());
    if n == 0 {
        return 0.0;
    }
    let m = set
        .samples
        .iter()
        .zip(pred)
        .map(|(s, p)| (2.0 * (s.ret - p)).exp())
        .sum::<f64>()
        / n as f64;
    0.5 * m.ln()
}

/// The model's log-volatility forecasts from its head's outputs (`pred + scale`).
pub fn model_log_vol(set: &SampleSet, pred: &[f32]) -> Vec<f64> {
    set.samples
        .iter()
        .zip(pred)
        .map(|(s, p)| f64::from(*p) + s.scale)
        .collect()
}

/// RiskMetrics' decay for daily bars, the EWMA baseline's and the blend's.
pub const EWMA_LAMBDA: f64 = 0.94;

/// A model's log-volatility forecast blended with EWMA's, `w·model + (1 − w)·EWMA + bias`: the
/// standard test of whether a forecast carries information the simple one lacks (a weight of 0
/// says it carries none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Blend {
    /// The model's weight, in twentieths from 0 to 1.
    pub weight: f64,
    /// The blend's lognormal bias correction (see [`lognormal_bias`]).
    pub bias: f64,
}

impl Blend {
    /// The weight whose blend has the lowest QLIKE on `valid`, each blend corrected by its own
    /// residuals there; ties go to the smaller weight. `model` holds the model's uncorrected
    /// log-volatility forecasts of `valid`'s samples. Nothing after `valid` is read.
    pub fn fit(valid: &SampleSet, model: &[f64]) -> Blend {
        let e = ewma(valid, EWMA_LAMBDA);
        let mut best = (f64::INFINITY, Blend::ewma_only());
        for k in 0..=20 {
            let weight = f64::from(k) / 20.0;
            let raw = mix(model, &e, weight);
            let bias = lognormal_bias(valid, &raw);
            let q = vol_report(valid, &raw.iter().map(|x| x + bias).collect::<Vec<_>>()).qlike;
            if q < best.0 {
                best = (q, Blend { weight, bias });
            }
        }
        best.1
    }

    fn ewma_only() -> Blend {
        Blend {
            weight: 0.0,
            bias: 0.0,
        }
    }

    /// The blend's forecasts of `set`'s samples, given the model's uncorrected ones.
    pub fn apply(&self, set: &SampleSet, model: &[f64]) -> Vec<f64> {
        mix(model, &ewma(set, EWMA_LAMBDA), self.weight)
            .iter()
            .map(|x| x + self.bias)
            .collect()
    }
}

fn mix(model: &[f64], ewma: &[f64], w: f64) -> Vec<f64> {
    model
        .iter()
        .zip(ewma)
        .map(|(m, e)| w * m + (1.0 - w) * e)
        .collect()
}

/// The baselines on `test`, HAR fitted on `train`; HAR and EWMA also with the lognormal
/// correction of their `valid` residuals, as the model gets (for EWMA the blends' weight 0, so
/// that a blend's gain over EWMA is not the correction's): (name, report).
pub fn baselines(
    train: &SampleSet,
    valid: &SampleSet,
    test: &SampleSet,
    window: usize,
) -> Vec<(String, VolReport)> {
    let e_test = ewma(test, EWMA_LAMBDA);
    let mut out = vec![
        (
            format!("trailing {window}-bar volatility"),
            vol_report(test, &trailing(test, window)),
        ),
        ("EWMA (λ 0.94)".to_string(), vol_report(test, &e_test)),
    ];
    if let Some(h) = Har::fit(train) {
        // Corrected from its training residuals, and (as the model is) from its validation ones.
        for (name, on) in [
            ("HAR-RV (log, bias-corrected)", train),
            ("HAR-RV (log, corrected on validation)", valid),
        ] {
            let bias = lognormal_bias(on, &h.predict(on));
            let p: Vec<f64> = h.predict(test).iter().map(|x| x + bias).collect();
            out.push((name.to_string(), vol_report(test, &p)));
        }
    }
    if let Some(h) = HarVariance::fit(train) {
        let p = h.log_vols(test, h.scale_on(valid));
        out.push((
            "HAR-RV (variance, scaled on validation)".to_string(),
            vol_report(test, &p),
        ));
    }
    let bias = lognormal_bias(valid, &ewma(valid, EWMA_LAMBDA));
    let corrected: Vec<f64> = e_test.iter().map(|x| x + bias).collect();
    out.push((
        "EWMA (λ 0.94, corrected on validation)".to_string(),
        vol_report(test, &corrected),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::Sample;

    fn series(rets: &[f64]) -> InstrumentSeries {
        InstrumentSeries {
            symbol: "X".into(),
            dataset: "d".into(),
            ids: [1, 0, 1],
            rows: (0..rets.len()).collect(),
            feats: vec![[0.0; crate::features::FEATURES]; rets.len()],
            logret: rets.to_vec(),
        }
    }

    #[test]
    fn baselines_by_hand() {
        let s = series(&[0.0, 0.01, -0.02, 0.03, -0.01, 0.02]);
        // Root mean square of the last three returns, as a log.
        let want = ((0.03f64.powi(2) + 0.01f64.powi(2) + 0.02f64.powi(2)) / 3.0)
            .sqrt()
            .ln();
        assert!((trailing_log_vol(&s, 5, 3) - want).abs() < 1e-12);
        // EWMA seeded on all six bars' mean square (fewer than 20), then no update.
        let seed = [0.0, 0.01, -0.02, 0.03, -0.01, 0.02]
            .iter()
            .map(|x: &f64| x * x)
            .sum::<f64>()
            / 6.0;
        assert!((ewma_log_vol(&s, 5, 0.94) - seed.sqrt().ln()).abs() < 1e-12);
        // In one pass, bit for bit, before and after the seed's 20 bars.
        let long: Vec<f64> = (0..60)
            .map(|i| 0.01 * ((i as f64) * 0.7).sin() + if i == 7 { f64::NAN } else { 0.0 })
            .collect();
        let l = series(&long);
        let all = ewma_log_vols(&l, 0.94);
        for (end, v) in all.iter().enumerate() {
            assert_eq!(*v, ewma_log_vol(&l, end, 0.94), "bar {end}");
        }
    }

    #[test]
    fn the_vol_target_uses_only_the_bars_after_the_window_and_the_scale_only_the_window() {
        use crate::finetune::{forward_log_vol, window_log_vol};
        let base = [0.01, -0.02, 0.03, -0.01, 0.02, 0.05, -0.04, 0.01];
        let s = series(&base);
        let want = ((0.05f64.powi(2) + 0.04f64.powi(2)) / 2.0).sqrt().ln();
        assert!((forward_log_vol(&s, 4, 2).unwrap() - want).abs() < 1e-12);
        assert!(
            forward_log_vol(&s, 6, 2).is_none(),
            "no bar 8 to complete the horizon"
        );
        // Changing the window's bars leaves the target; changing later bars leaves the scale.
        let mut early = base;
        early[2] = 0.5;
        assert_eq!(
            forward_log_vol(&series(&early), 4, 2),
            forward_log_vol(&s, 4, 2)
        );
        let mut late = base;
        late[5] = 0.5;
        assert_eq!(
            window_log_vol(&series(&late), 4, 5),
            window_log_vol(&s, 4, 5)
        );
        assert_ne!(
            forward_log_vol(&series(&late), 4, 2),
            forward_log_vol(&s, 4, 2)
        );
    }

    #[test]
    fn qlike_is_zero_for_an_exact_forecast_and_penalises_too_low_more_than_too_high() {
        let u = crate::features::Universe {
            dataset: "d".into(),
            frequency: lim_market::Frequency::Daily,
            times: vec![lim_market::Timestamp(0); 3],
            series: vec![series(&[0.0; 3])],
        };
        let sample = |ret: f64| Sample {
            series: 0,
            end: 0,
            row: 0,
            target: 0.0,
            ret,
            scale: 0.0,
        };
        let set = SampleSet {
            universe: u,
            samples: vec![sample(-4.0)],
        };
        assert_eq!(vol_report(&set, &[-4.0]).qlike, 0.0);
        let low = vol_report(&set, &[-4.5]).qlike;
        let high = vol_report(&set, &[-3.5]).qlike;
        assert!(low > high && high > 0.0, "{low} {high}");
    }

    /// The blend weighs the model by what it adds on validation: all of it when the model is
    /// exact, none when EWMA is and the model is noise; and it scores another set with the
    /// weight and correction it was fitted with.
    #[test]
    fn the_blend_with_ewma_weighs_the_model_by_what_it_adds() {
        let rets: Vec<f64> = (0..200)
            .map(|i| {
                0.01 * (1.0 + 0.8 * ((i as f64) * 0.05).sin()) * if i % 2 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        let s = series(&rets);
        let set = |truth: &dyn Fn(usize) -> f64| one_series_set(s.clone(), 30..190, truth);
        let noise = |end: usize| -4.6 + 0.3 * ((end as f64) * 1.7).sin();
        // The realised volatility is EWMA's own forecast: the noisy model gets no weight.
        let ewma_is_right = set(&|end| ewma_log_vol(&s, end, EWMA_LAMBDA));
        let model: Vec<f64> = ewma_is_right.samples.iter().map(|x| noise(x.end)).collect();
        let b = Blend::fit(&ewma_is_right, &model);
        assert_eq!(b.weight, 0.0, "{b:?}");
        assert!(b.bias.abs() < 1e-12, "{b:?}");
        // The model is exact (and EWMA is not): all the weight, no correction.
        let model_is_right = set(&noise);
        let exact: Vec<f64> = model_is_right.samples.iter().map(|x| x.ret).collect();
        let b = Blend::fit(&model_is_right, &exact);
        assert_eq!(b.weight, 1.0, "{b:?}");
        assert!(b.bias.abs() < 1e-12, "{b:?}");
        // Applied elsewhere: the fitted mix, shifted by the fitted correction.
        let half = Blend {
            weight: 0.5,
            bias: 0.1,
        };
        // EWMA off by a constant on validation and test: corrected on validation, it is exact.
        let offset = set(&|end| ewma_log_vol(&s, end, EWMA_LAMBDA) + 0.2);
        let rows = baselines(&offset, &offset, &offset, 5);
        let row = |name: &str| rows.iter().find(|r| r.0.starts_with(name)).unwrap().1.qlike;
        assert!(row("EWMA (λ 0.94)") > 0.05, "{rows:?}");
        assert!(row("EWMA (λ 0.94, corrected") < 1e-12, "{rows:?}");
        // Validation and test busier than training by the same amount: HAR corrected on
        // validation follows, HAR corrected on training does not.
        let busier = set(&|end| ewma_log_vol(&s, end, EWMA_LAMBDA) + 0.6);
        let rows = baselines(&offset, &busier, &busier, 5);
        let row = |name: &str| rows.iter().find(|r| r.0 == name).unwrap().1.qlike;
        assert!(
            row("HAR-RV (log, corrected on validation)")
                < 0.5 * row("HAR-RV (log, bias-corrected)"),
            "{rows:?}"
        );
        // So does HAR on variances, scaled on validation.
        assert!(
            row("HAR-RV (variance, scaled on validation)")
                < 0.5 * row("HAR-RV (log, bias-corrected)"),
            "{rows:?}"
        );
        let got = half.apply(&ewma_is_right, &model);
        let want =
            0.5 * model[3] + 0.5 * ewma_log_vol(&s, ewma_is_right.samples[3].end, 0.94) + 0.1;
        assert!((got[3] - want).abs() < 1e-12);
    }

    #[test]
    fn har_recovers_a_linear_law() {
        // Realised log vol built exactly from the HAR features: the fit finds the law.
        let rets: Vec<f64> = (0..300)
            .map(|i| {
                0.01 * (1.0 + 0.5 * ((i as f64) * 0.37).sin()) * if i % 2 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        let s = series(&rets);
        let law = [0.1, 0.2, 0.3, 0.4];
        let exact = |end: usize| {
            let x = har_features(&s, end);
            (0..4).map(|i| law[i] * x[i]).sum()
        };
        let set = one_series_set(s.clone(), 30..290, &exact);
        let h = Har::fit(&set).unwrap();
        for (a, b) in h.coef.iter().zip(law) {
            assert!((a - b).abs() < 1e-6, "{:?}", h.coef);
        }
    }

    fn one_series_set(
        s: InstrumentSeries,
        ends: std::ops::Range<usize>,
        truth: &dyn Fn(usize) -> f64,
    ) -> SampleSet {
        let n = s.logret.len();
        SampleSet {
            universe: crate::features::Universe {
                dataset: "d".into(),
                frequency: lim_market::Frequency::Daily,
                times: vec![lim_market::Timestamp(0); n],
                series: vec![s],
            },
            samples: ends
                .map(|end| Sample {
                    series: 0,
                    end,
                    row: end,
                    target: 0.0,
                    ret: truth(end),
                    scale: 0.0,
                })
                .collect(),
        }
    }

    #[test]
    fn har_on_variances_recovers_a_linear_law_and_its_scale_minimises_qlike() {
        let rets: Vec<f64> = (0..300)
            .map(|i| {
                0.01 * (1.0 + 0.5 * ((i as f64) * 0.37).sin()) * if i % 3 == 0 { 1.0 } else { -0.6 }
            })
            .collect();
        let s = series(&rets);
        let law = [2e-5, 0.3, 0.3, 0.2];
        let x = |end| har_variance_features(&s, end);
        // The realised log volatility of a variance that follows the law exactly.
        let exact = |end: usize| {
            let x = x(end);
            0.5 * (0..4).map(|i| law[i] * x[i]).sum::<f64>().ln()
        };
        let train = one_series_set(s.clone(), 30..290, &exact);
        let h = HarVariance::fit(&train).unwrap();
        for (a, b) in h.coef.iter().zip(law) {
            assert!((a - b).abs() < 1e-9 * b.max(1.0) * 1e3, "{:?}", h.coef);
        }
        assert!((h.scale_on(&train) - 1.0).abs() < 1e-9);
        // Realised variance 1.3 times the law, with noise: the scale is the QLIKE optimum.
        let busier = one_series_set(s.clone(), 30..290, &|end| {
            exact(end) + 0.5 * 1.3f64.ln() + 0.2 * ((end as f64) * 2.3).sin()
        });
        let c = h.scale_on(&busier);
        assert!(c > 1.2 && c < 1.5, "{c}");
        let q = |k: f64| vol_report(&busier, &h.log_vols(&busier, k)).qlike;
        assert!(
            q(c) < q(c * 1.05) && q(c) < q(c / 1.05),
            "{} {} {}",
            q(c),
            q(c * 1.05),
            q(c / 1.05)
        );
        assert!(q(c) < q(1.0));
        // The same optimum as a shift of any log forecast: a head trained on QLIKE gets it.
        let raw = h.log_vols(&busier, 1.0);
        let b = qlike_bias(&busier, &raw);
        assert!((b - 0.5 * c.ln()).abs() < 1e-12);
        let shifted =
            |k: f64| vol_report(&busier, &raw.iter().map(|x| x + k).collect::<Vec<_>>()).qlike;
        assert!(shifted(b) < shifted(b + 0.02) && shifted(b) < shifted(b - 0.02));
    }

    /// A day without a price change: the log form puts the floor's log into its daily
    /// component and its forecast collapses; on variances the day adds nothing.
    #[test]
    fn a_quiet_day_collapses_har_in_logs_and_not_on_variances() {
        let rets: Vec<f64> = (0..60)
            .map(|i| 0.01 * if i % 2 == 0 { 1.0 } else { -1.2 })
            .collect();
        let mut quiet = rets.clone();
        quiet[59] = 0.0;
        // Coefficients of the size fitted on daily data.
        let logs = Har {
            coef: [-0.5, 0.2, 0.3, 0.4],
        };
        let vars = HarVariance {
            coef: [1e-5, 0.35, 0.3, 0.25],
            floor: 1e-8,
        };
        let forecast = |r: &[f64]| {
            let set = one_series_set(series(r), 59..60, &|_| 0.0);
            (logs.predict(&set)[0], vars.log_vols(&set, 1.0)[0])
        };
        let (log_before, var_before) = forecast(&rets);
        let (log_after, var_after) = forecast(&quiet);
        assert!(
            (log_after - log_before).exp() < 0.2,
            "the log form fell to {:.3} of its forecast",
            (log_after - log_before).exp()
        );
        assert!(
            // The day's share of the variance forecast (b₁ r², about half here) is lost, no more.
            (var_after - var_before).exp() > 0.7,
            "the variance form fell to {:.3} of its forecast",
            (var_after - var_before).exp()
        );
    }
}
