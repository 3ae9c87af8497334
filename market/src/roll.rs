//! Continuous futures: roll detection and back-adjustment.
//!
//! The futures files are main-contract series spliced without adjustment, so the bar where the
//! series switches contract carries the spread between the two contracts as if it were a
//! return. LIM's roll policy (documented in `docs/data.md`):
//!
//! * **Detect** a roll on bar `t` from liquidity, not price, so that a genuine price shock is
//!   never mistaken for a roll:
//!   - with open interest (the Chinese main-contract series): the switch to a new main
//!     contract shows as a discontinuity in open interest: a jump up,
//!     `ln(oi[t] / oi[t-1]) >= oi_jump`, or a jump of that size either way together with an
//!     overnight price gap of at least `gap_multiple` × the trailing median absolute return;
//!   - without it (Yahoo front-month series): volume collapses in the expiring contract for
//!     the two bars before the switch (both at most `volume_drop` × the trailing median) and
//!     rebounds on the switch bar (at least `volume_rebound` × the bar before, and at least
//!     60% of the trailing median).
//!
//!   A roll is not flagged within `min_spacing` bars of the previous one, unless the open
//!   interest discontinuity comes with such a price gap (some early series flip between two
//!   contracts on successive days). The detector only
//!   looks backwards, so whether bar `t` is a roll never depends on later data.
//! * **Stray bars**: some main-contract series switch to an illiquid contract for a single
//!   bar and back (open interest of a few hundred lots amid a million). A bar whose open
//!   interest is below `stray_fraction` × the trailing median is not the main contract; it is
//!   dropped (reported, never silently) before rolls are detected.
//! * **Adjust** by ratio: the roll bar's overnight gap `open[t] / close[t-1]` is taken to be
//!   the spread between the contracts, and every price before `t` is multiplied by it. The
//!   roll bar's return is then its open-to-close return, and prices stay positive. A market
//!   move in that one overnight gap is lost; this is the documented cost of working from a
//!   spliced series.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Detector thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RollConfig {
    /// Minimum log jump of open interest on a roll bar.
    pub oi_jump: f64,
    /// Volume on the two bars before a roll is at most this fraction of the trailing median.
    pub volume_drop: f64,
    /// Volume on the roll bar is at least this multiple of the bar before.
    pub volume_rebound: f64,
    /// Bars in the trailing median.
    pub lookback: usize,
    /// Minimum bars between two rolls.
    pub min_spacing: usize,
    /// An open-interest jump either way counts when the overnight gap is this many times the
    /// trailing median absolute return.
    pub gap_multiple: f64,
    /// Bars with open interest below this fraction of the trailing median are stray.
    pub stray_fraction: f64,
}

impl Default for RollConfig {
    fn default() -> RollConfig {
        RollConfig {
            oi_jump: 0.18,
            volume_drop: 0.5,
            volume_rebound: 2.0,
            lookback: 20,
            min_spacing: 10,
            gap_multiple: 4.0,
            stray_fraction: 0.1,
        }
    }
}

/// What a roll was detected from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollEvidence {
    /// Open interest jumped by this log ratio.
    OpenInterest(f64),
    /// Volume rebounded by this ratio after a collapse.
    Volume(f64),
}

/// One detected contract switch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Roll {
    /// The first bar on the new contract.
    pub ts: Timestamp,
    /// `open[t] / close[t-1]`: the price ratio applied to all earlier bars.
    pub factor: f64,
    /// Why it was flagged.
    pub evidence: RollEvidence,
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

/// Detects rolls on one symbol's bars (no missing bars: pass only rows that exist).
/// Returns bar indices and rolls.
pub fn detect(
    times: &[Timestamp],
    open: &[f64],
    close: &[f64],
    volume: &[f64],
    open_interest: Option<&[f64]>,
    cfg: &RollConfig,
) -> Vec<(usize, Roll)> {
    let n = close.len();
    let oi = open_interest.filter(|oi| oi.iter().filter(|v| **v > 0.0).count() * 2 >= n.max(1));
    let mut out: Vec<(usize, Roll)> = Vec::new();
    let start = cfg.lookback + 2;
    for t in start..n {
        let spaced = out
            .last()
            .is_none_or(|(last, _)| t - last >= cfg.min_spacing);
        let evidence = match oi {
            Some(oi) => {
                let (prev, now) = (oi[t - 1], oi[t]);
                let jump = (now / prev).ln();
                let gap = (open[t] / close[t - 1]).ln().abs();
                let scale =
                    median((t - cfg.lookback..t).map(|i| (close[i] / close[i - 1]).ln().abs()));
                // A discontinuity in open interest together with a price gap far beyond the
                // usual move is a contract switch even right after another one (some series
                // flip back and forth); a jump up on its own must respect the spacing.
                let strong = jump.abs() >= cfg.oi_jump && gap >= cfg.gap_multiple * scale;
                let ok = prev > 0.0 && now > 0.0 && (strong || (spaced && jump >= cfg.oi_jump));
                ok.then_some(RollEvidence::OpenInterest(jump))
            }
            None if !spaced => None,
            None => {
                let med = median(volume[t - 2 - cfg.lookback..t - 2].iter().copied());
                let before = volume[t - 1].max(volume[t - 2]);
                let ok = med > 0.0
                    && before <= cfg.volume_drop * med
                    && volume[t] >= cfg.volume_rebound * volume[t - 1].max(f64::MIN_POSITIVE)
                    && volume[t] >= 0.6 * med;
                ok.then(|| RollEvidence::Volume(volume[t] / volume[t - 1].max(1.0)))
            }
        };
        if let Some(evidence) = evidence {
            let factor = open[t] / close[t - 1];
            if factor.is_finite() && factor > 0.0 {
                out.push((
                    t,
                    Roll {
                        ts: times[t],
                        factor,
                        evidence,
                    },
                ));
            }
        }
    }
    out
}

/// Bars whose open interest is below `stray_fraction` × the median of the previous
/// `lookback` non-stray bars: a one-bar switch to an illiquid contract.
pub fn stray_bars(open_interest: &[f64], cfg: &RollConfig) -> Vec<usize> {
    let mut out = Vec::new();
    let mut window: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    for (t, &oi) in open_interest.iter().enumerate() {
        if oi.is_nan() || oi <= 0.0 {
            continue;
        }
        if window.len() == cfg.lookback {
            let med = median(window.iter().copied());
            if oi < cfg.stray_fraction * med {
                out.push(t);
                continue;
            }
            window.pop_front();
        }
        window.push_back(oi);
    }
    out
}

/// Multiplies every price before each roll by that roll's factor, in place.
pub fn back_adjust(prices: &mut [&mut [f64]], rolls: &[(usize, Roll)]) {
    let mut scale = 1.0;
    let mut next = rolls.len();
    let n = prices.first().map_or(0, |p| p.len());
    for t in (0..n).rev() {
        while next > 0 && rolls[next - 1].0 > t {
            scale *= rolls[next - 1].1.factor;
            next -= 1;
        }
        if scale != 1.0 {
            for p in prices.iter_mut() {
                p[t] *= scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_adjustment_makes_the_roll_bar_return_open_to_close() {
        let mut close = vec![100.0, 101.0, 110.0, 111.0];
        let open = [100.0, 100.5, 109.0, 110.0];
        let rolls = vec![(
            2,
            Roll {
                ts: Timestamp(0),
                factor: open[2] / close[1],
                evidence: RollEvidence::Volume(3.0),
            },
        )];
        back_adjust(&mut [&mut close], &rolls);
        let r = close[2] / close[1] - 1.0;
        assert!((r - (110.0 / 109.0 - 1.0)).abs() < 1e-12);
        assert_eq!(close[3], 111.0);
    }
}
