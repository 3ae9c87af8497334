//! From signal to book for any [`StrategySpec`]: universe filter, portfolio construction,
//! rebalancing, execution lag, limits and costs.

use crate::eval::{Frame, Mat, Signal};
use crate::ops;
use crate::spec::{Portfolio, StrategySpec};
use crate::topk::{Book, Mask, Rows, Selection, Target, book, topk_weights};

/// Runs a spec's book on an evaluated signal. `periods_per_year` annualises the volatility
/// target of sign-threshold books.
pub fn run(
    spec: &StrategySpec,
    signal: &Signal,
    frame: &Frame,
    target: &Target,
    periods_per_year: f64,
) -> Book {
    let liquidity = (spec.universe.min_dollar_volume.is_some()
        || spec.universe.top_liquid.is_some())
    .then(|| average_dollar_volume(frame))
    .flatten();
    let vol = match &spec.portfolio {
        Portfolio::SignThreshold {
            vol_forecast: Some(field),
            ..
        } => frame.fields.get(field).map(|f| Rows::from_mat(f)),
        Portfolio::SignThreshold { vol_window, .. } => frame.fields.get("returns").map(|r| {
            let sd = r.map_cols(|c, o| ops::move_var(c, *vol_window, 1, true, o));
            Rows::from_mat(&sd)
        }),
        _ => None,
    };
    let cost = (spec.costs.bps + spec.costs.slippage_bps) / 10_000.0;
    let mask = liquidity
        .as_ref()
        .map(|adv| move |i: usize, row: &mut [f64]| outside_universe(spec, row, adv.row(i)));
    book(
        signal,
        mask.as_ref().map(|m| m as &Mask<'_>),
        target,
        spec.rebalance_every,
        spec.execution_lag,
        cost,
        |i, row, w, sel, scratch| {
            weights(
                &spec.portfolio,
                row,
                vol.as_ref().map(|v| v.row(i)),
                periods_per_year,
                w,
                sel,
                scratch,
            );
            limit(spec, w);
        },
    )
}

/// The 20-bar average dollar volume of every instrument, bar by bar; `None` without close and
/// volume fields.
fn average_dollar_volume(frame: &Frame) -> Option<Rows> {
    let (close, volume) = (frame.fields.get("close")?, frame.fields.get("volume")?);
    let dv = Mat {
        t: close.t,
        n: close.n,
        data: close
            .data
            .iter()
            .zip(&volume.data)
            .map(|(c, v)| c * v)
            .collect(),
    };
    Some(Rows::from_mat(
        &dv.map_cols(|c, o| ops::move_mean(c, 20, o)),
    ))
}

/// Marks a bar's instruments outside the universe as missing, given their liquidity `liq`.
fn outside_universe(spec: &StrategySpec, row: &mut [f64], liq: &[f64]) {
    if let Some(floor) = spec.universe.min_dollar_volume {
        for (s, l) in row.iter_mut().zip(liq) {
            if l.is_nan() || *l < floor {
                *s = f64::NAN;
            }
        }
    }
    if let Some(top) = spec.universe.top_liquid {
        let mut order: Vec<usize> = (0..row.len()).filter(|&j| liq[j].is_finite()).collect();
        order.sort_by(|&a, &b| liq[b].total_cmp(&liq[a]).then(a.cmp(&b)));
        let keep: std::collections::HashSet<usize> = order.into_iter().take(top).collect();
        for (j, s) in row.iter_mut().enumerate() {
            if !keep.contains(&j) {
                *s = f64::NAN;
            }
        }
    }
}

fn weights(
    p: &Portfolio,
    row: &[f64],
    vol: Option<&[f64]>,
    periods: f64,
    w: &mut [f64],
    sel: &mut Selection,
    scratch: &mut ops::RankScratch,
) {
    w.fill(0.0);
    match *p {
        Portfolio::TopK { k } => topk_weights(row, k, w, sel),
        Portfolio::QuantileLongShort { quantile } => {
            let valid = row.iter().filter(|v| v.is_finite()).count();
            let m = ((valid as f64 * quantile).floor() as usize).max(1);
            if valid < 2 * m {
                return;
            }
            let masked: Vec<f64> = row
                .iter()
                .map(|v| if v.is_finite() { *v } else { f64::NAN })
                .collect();
            let mut ranks = vec![0.0; row.len()];
            ops::rank_avg(&masked, &mut ranks, scratch);
            // Order by rank, then by position, so ties resolve the same way every time.
            let mut order: Vec<usize> = (0..row.len()).filter(|&j| masked[j].is_finite()).collect();
            order.sort_by(|&a, &b| ranks[a].total_cmp(&ranks[b]).then(a.cmp(&b)));
            for &j in &order[..m] {
                w[j] = -0.5 / m as f64;
            }
            for &j in &order[order.len() - m..] {
                w[j] = 0.5 / m as f64;
            }
        }
        Portfolio::Proportional => {
            let (s, c) = ops::nansum_count(
                &row.iter()
                    .map(|v| if v.is_finite() { *v } else { f64::NAN })
                    .collect::<Vec<_>>(),
            );
            if c < 2 {
                return;
            }
            let mean = s / c as f64;
            let gross: f64 = row
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| (v - mean).abs())
                .sum();
            if gross > 0.0 {
                for (o, v) in w.iter_mut().zip(row) {
                    *o = if v.is_finite() {
                        (v - mean) / gross
                    } else {
                        0.0
                    };
                }
            }
        }
        Portfolio::SignThreshold {
            threshold,
            target_vol,
            ..
        } => {
            let Some(vol) = vol else { return };
            let active = row
                .iter()
                .zip(vol)
                .filter(|(s, v)| s.is_finite() && v.is_finite() && **v > 0.0)
                .count();
            if active == 0 {
                return;
            }
            for ((o, s), v) in w.iter_mut().zip(row).zip(vol) {
                if s.is_finite() && v.is_finite() && *v > 0.0 && s.abs() > threshold {
                    *o = s.signum() * target_vol / (v * periods.sqrt()) / active as f64;
                }
            }
        }
    }
}

fn limit(spec: &StrategySpec, w: &mut [f64]) {
    if let Some(cap) = spec.limits.max_weight {
        for v in w.iter_mut() {
            *v = v.max(-cap).min(cap);
        }
    }
    if let Some(g) = spec.limits.max_gross {
        let gross: f64 = w.iter().map(|v| v.abs()).sum();
        if gross > g {
            for v in w.iter_mut() {
                *v *= g / gross;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::spec::{Limits, StrategySpec};

    fn w(p: &Portfolio, row: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; row.len()];
        let vol = vec![0.02; row.len()];
        weights(
            p,
            row,
            Some(&vol),
            252.0,
            &mut out,
            &mut Selection::default(),
            &mut ops::RankScratch::default(),
        );
        out
    }

    #[test]
    fn constructions_by_hand() {
        let row = [0.3, -1.0, f64::NAN, 2.0, 0.1, -0.2];
        let q = w(&Portfolio::QuantileLongShort { quantile: 0.2 }, &row);
        // 5 valid values: one long (2.0), one short (-1.0), half the gross each.
        assert_eq!(q, [0.0, -0.5, 0.0, 0.5, 0.0, 0.0]);
        let p = w(&Portfolio::Proportional, &row);
        assert!(
            p.iter().sum::<f64>().abs() < 1e-15
                && (p.iter().map(|v| v.abs()).sum::<f64>() - 1.0).abs() < 1e-15
        );
        assert!(p[3] > p[0] && p[1] < 0.0 && p[2] == 0.0);
        let s = w(
            &Portfolio::SignThreshold {
                threshold: 0.25,
                target_vol: 0.1,
                vol_window: 20,
                vol_forecast: None,
            },
            &row,
        );
        // |s| > 0.25 for 0.3, -1, 2: each 10% / (2% x sqrt(252)) / 5 active instruments.
        let size = 0.1 / (0.02 * 252f64.sqrt()) / 5.0;
        assert!(
            (s[0] - size).abs() < 1e-15
                && (s[1] + size).abs() < 1e-15
                && s[4] == 0.0
                && s[5] == 0.0
        );
    }

    #[test]
    fn limits_cap_weights_then_gross() {
        let mut spec = StrategySpec::new("close");
        spec.limits = Limits {
            max_weight: Some(0.4),
            max_gross: Some(0.5),
        };
        let mut x = vec![0.9, -0.1, 0.2];
        limit(&spec, &mut x);
        // Capped to 0.4, -0.1, 0.2 (gross 0.7), then scaled to gross 0.5.
        let k = 0.5 / 0.7;
        assert!((x[0] - 0.4 * k).abs() < 1e-15 && (x[1] + 0.1 * k).abs() < 1e-15);
    }

    /// Two instruments; the signal always prefers the first. Its returns are +1% a bar.
    fn tiny() -> (Frame, Signal, Target) {
        let t = 12;
        let close: Vec<f64> = (0..t)
            .map(|i| 100.0 * 1.01f64.powi(i as i32))
            .chain((0..t).map(|_| 50.0))
            .collect();
        let close = Mat {
            t,
            n: 2,
            data: close,
        };
        let signal = Signal::plain(Mat {
            t,
            n: 2,
            data: (0..2 * t).map(|k| if k < t { 1.0 } else { 0.0 }).collect(),
        });
        let frame = Frame {
            fields: HashMap::from([("close".into(), Arc::new(close.clone()))]),
            groups: HashMap::new(),
            t,
            n: 2,
        };
        let target = Target::new(&close);
        (frame, signal, target)
    }

    #[test]
    fn lag_delays_the_book_and_costs_come_off_turnover() {
        let (frame, signal, target) = tiny();
        let mut spec = StrategySpec::new("close");
        spec.portfolio = Portfolio::TopK { k: 1 };
        spec.costs.bps = 0.0;
        let b1 = run(&spec, &signal, &frame, &target, 252.0);
        assert!(b1.net[0].is_nan());
        assert!((b1.net[1] - 0.01).abs() < 1e-12);
        spec.execution_lag = 3;
        let b3 = run(&spec, &signal, &frame, &target, 252.0);
        assert!(b3.net[2].is_nan() && (b3.net[3] - 0.01).abs() < 1e-12);
        spec.costs = crate::spec::Costs {
            bps: 10.0,
            slippage_bps: 5.0,
        };
        let bc = run(&spec, &signal, &frame, &target, 252.0);
        // Entering the book turns over 1 unit at 15 bps; then nothing changes.
        assert!((bc.net[3] - (0.01 - 0.0015)).abs() < 1e-12 && (bc.net[4] - 0.01).abs() < 1e-12);
    }

    #[test]
    fn a_sign_book_sizes_by_a_volatility_forecast_field_where_it_has_one() {
        let (mut frame, signal, target) = tiny();
        // The forecast: 2 % a bar for the first instrument from bar 4 on, nothing before.
        let t = frame.t;
        let forecast = Mat {
            t,
            n: 2,
            data: (0..2 * t)
                .map(|k| if k < t && k >= 4 { 0.02 } else { f64::NAN })
                .collect(),
        };
        frame.fields.insert("fvol".into(), Arc::new(forecast));
        let mut spec = StrategySpec::new("close");
        spec.portfolio = Portfolio::SignThreshold {
            threshold: 0.5,
            target_vol: 0.1,
            vol_window: 20,
            vol_forecast: Some("fvol".into()),
        };
        spec.costs.bps = 0.0;
        let b = run(&spec, &signal, &frame, &target, 252.0);
        // Held from the bar after the forecast starts: 10 % / (2 % x sqrt(252)), the only
        // active instrument; it earns 1 % a bar.
        let size = 0.1 / (0.02 * 252f64.sqrt());
        for i in 0..5 {
            assert!(
                b.net[i].is_nan() || b.net[i] == 0.0,
                "bar {i}: {}",
                b.net[i]
            );
        }
        assert!((b.net[5] - size * 0.01).abs() < 1e-12, "{}", b.net[5]);
        // Sized by the trailing 20 bars instead, it would never trade in 12 bars.
        spec.portfolio = Portfolio::SignThreshold {
            threshold: 0.5,
            target_vol: 0.1,
            vol_window: 20,
            vol_forecast: None,
        };
        let trailing = run(&spec, &signal, &frame, &target, 252.0);
        assert!(trailing.net.iter().all(|v| v.is_nan() || *v == 0.0));
    }
}

/// The book of several books held side by side with `weights` (e.g. equal risk: inverse
/// volatility), bar by bar over the books that have a return there (their weights renormalised),
/// so a bar where one member is inactive is carried by the others. Turnover and exposure are the
/// members' weighted means; a combination has no single signal, so its ICs are NaN.
pub fn combine(books: &[&Book], weights: &[f64]) -> Book {
    let bars = books.iter().map(|b| b.net.len()).min().unwrap_or(0);
    let mix = |field: fn(&Book) -> &Vec<f64>, t: usize| -> f64 {
        let (mut sum, mut w) = (0.0, 0.0);
        for (b, &wi) in books.iter().zip(weights) {
            let v = field(b)[t];
            if v.is_finite() && wi.is_finite() {
                sum += wi * v;
                w += wi;
            }
        }
        if w > 0.0 { sum / w } else { f64::NAN }
    };
    Book {
        net: (0..bars).map(|t| mix(|b| &b.net, t)).collect(),
        turnover: (0..bars).map(|t| mix(|b| &b.turnover, t)).collect(),
        exposure: (0..bars).map(|t| mix(|b| &b.exposure, t)).collect(),
        ic: vec![f64::NAN; bars],
        ic_pearson: vec![f64::NAN; bars],
        nonfinite_signal_cells: 0,
        tradable: vec![0; bars],
    }
}

#[cfg(test)]
mod combine_tests {
    use super::*;

    fn book(net: Vec<f64>) -> Book {
        let n = net.len();
        Book {
            net,
            turnover: vec![0.1; n],
            exposure: vec![1.0; n],
            ic: vec![f64::NAN; n],
            ic_pearson: vec![f64::NAN; n],
            nonfinite_signal_cells: 0,
            tradable: vec![0; n],
        }
    }

    #[test]
    fn weights_are_renormalised_over_the_members_that_traded() {
        let a = book(vec![0.01, 0.02, f64::NAN, f64::NAN]);
        let b = book(vec![0.03, f64::NAN, 0.04, f64::NAN]);
        let c = combine(&[&a, &b], &[1.0, 3.0]);
        let want = [0.025, 0.02, 0.04];
        for (got, want) in c.net.iter().zip(want) {
            assert!((got - want).abs() < 1e-15, "{got} {want}");
        }
        assert!(c.net[3].is_nan());
        assert!((c.turnover[0] - 0.1).abs() < 1e-15);
    }
}
