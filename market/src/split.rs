//! Train / validation / test splits over a time axis, with embargo gaps between them.
//!
//! The embargo drops `embargo` bars after the training part and after the validation part,
//! so that labels computed over a horizon (a forward return, say) cannot straddle two parts.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::MarketError;
use crate::time::{AsOf, Frequency, Timestamp};

/// How to split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum SplitSpec {
    /// By fractions of the bars: `train` and `valid` in (0, 1), the test part gets the rest.
    Fractions {
        /// Share of bars for training.
        train: f64,
        /// Share of bars for validation.
        valid: f64,
        /// Bars dropped after each of the first two parts.
        embargo: usize,
    },
    /// By dates: validation starts at `valid_start`, the test at `test_start`.
    Dates {
        /// First bar time of validation (before the embargo is applied to training's end).
        valid_start: Timestamp,
        /// First bar time of the test part.
        test_start: Timestamp,
        /// Bars dropped before each of the last two parts.
        embargo: usize,
    },
}

impl Default for SplitSpec {
    fn default() -> SplitSpec {
        SplitSpec::Fractions {
            train: 0.6,
            valid: 0.2,
            embargo: 5,
        }
    }
}

/// Which part of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Fitting and search.
    Train,
    /// Model and strategy selection.
    Validation,
    /// Sealed: looked at once, at the end.
    Test,
}

/// Bar-index ranges of the three parts. `train.end + embargo <= valid.start` and
/// `valid.end + embargo <= test.start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splits {
    /// Training bars.
    pub train: Range<usize>,
    /// Validation bars.
    pub valid: Range<usize>,
    /// Test bars.
    pub test: Range<usize>,
    /// Bars dropped between parts.
    pub embargo: usize,
}

impl Splits {
    /// Splits a time axis.
    ///
    /// # Errors
    /// Fractions out of range, or a part left with no bars.
    pub fn new(times: &[Timestamp], spec: SplitSpec) -> Result<Splits, MarketError> {
        let n = times.len();
        let (valid_start, test_start, embargo) = match spec {
            SplitSpec::Fractions {
                train,
                valid,
                embargo,
            } => {
                if !(train > 0.0 && valid > 0.0 && train + valid < 1.0) {
                    return Err(MarketError::Query(format!(
                        "split fractions train={train}, valid={valid} must be positive and sum to less than 1 (the test part gets the rest)"
                    )));
                }
                let a = (n as f64 * train).round() as usize;
                let b = (n as f64 * (train + valid)).round() as usize;
                (a, b, embargo)
            }
            SplitSpec::Dates {
                valid_start,
                test_start,
                embargo,
            } => {
                if valid_start >= test_start {
                    return Err(MarketError::Query(format!(
                        "validation start {valid_start} must come before test start {test_start}"
                    )));
                }
                (
                    times.partition_point(|t| *t < valid_start),
                    times.partition_point(|t| *t < test_start),
                    embargo,
                )
            }
        };
        let train = 0..valid_start.saturating_sub(embargo);
        let valid = valid_start..test_start.saturating_sub(embargo).max(valid_start);
        let test = test_start.min(n)..n;
        for (name, r) in [
            ("training", &train),
            ("validation", &valid),
            ("test", &test),
        ] {
            if r.is_empty() {
                return Err(MarketError::Query(format!(
                    "the {name} part is empty ({n} bars, embargo {embargo}); use more data, other split points or a shorter embargo"
                )));
            }
        }
        Ok(Splits {
            train,
            valid,
            test,
            embargo,
        })
    }

    /// The bars of a part.
    pub fn range(&self, part: Part) -> Range<usize> {
        match part {
            Part::Train => self.train.clone(),
            Part::Validation => self.valid.clone(),
            Part::Test => self.test.clone(),
        }
    }

    /// The as-of time at the end of a part: the close of its last bar.
    pub fn as_of(&self, part: Part, times: &[Timestamp], frequency: Frequency) -> AsOf {
        let last = self.range(part).end - 1;
        AsOf(Timestamp(times[last].0 + frequency.seconds()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: i64) -> Vec<Timestamp> {
        (0..n).map(|d| Timestamp(d * crate::time::DAY)).collect()
    }

    #[test]
    fn parts_are_disjoint_ordered_and_separated_by_the_embargo() {
        let s = Splits::new(
            &days(100),
            SplitSpec::Fractions {
                train: 0.6,
                valid: 0.2,
                embargo: 5,
            },
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            (s.train.clone(), s.valid.clone(), s.test.clone()),
            (0..55, 60..75, 80..100)
        );
        let as_of = s.as_of(Part::Train, &days(100), Frequency::Daily);
        assert!(as_of.sees(Timestamp(54 * crate::time::DAY), Frequency::Daily));
        assert!(!as_of.sees(Timestamp(55 * crate::time::DAY), Frequency::Daily));
    }

    #[test]
    fn an_embargo_that_eats_a_part_is_an_error() {
        let e = Splits::new(
            &days(20),
            SplitSpec::Fractions {
                train: 0.5,
                valid: 0.1,
                embargo: 5,
            },
        );
        assert!(e.is_err_and(|e| e.to_string().contains("validation part is empty")));
        let e = Splits::new(
            &days(20),
            SplitSpec::Fractions {
                train: 0.9,
                valid: 0.2,
                embargo: 0,
            },
        );
        assert!(e.is_err_and(|e| e.to_string().contains("sum to less than 1")));
    }
}
