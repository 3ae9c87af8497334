//! Selection folds: the bars a strategy is chosen on, cut into consecutive blocks with an
//! embargo between them, so that a fitness can ask "does it work in every period?" rather than
//! "does it work on average?".
//!
//! Strategies here have no fitted parameters (an expression is evaluated as written), so a fold
//! is a block of bars to measure, not a train/test pair: what a block measures is what the
//! strategy earned on bars no other block contains. The embargo keeps blocks apart: a
//! position opened on the last bars of one block and the forward return that pays it never
//! reach the next block's first bars. Blocks never cross the gap between parts, and a part that
//! is not listed (the sealed test) contributes nothing.

use std::ops::Range;

/// The folds of `parts` (ordered, disjoint ranges of bars, e.g. training then validation):
/// their bars taken together are cut into `k` consecutive blocks of near-equal length, each
/// block split where it crosses from one part into the next (the split's own embargo already
/// separates the parts), and `embargo` bars dropped at the start of every block after the
/// first. Empty when there are fewer bars than blocks.
///
/// Guarantees (property-tested): every returned range lies inside one of `parts`; ranges are
/// ordered and disjoint; two ranges of different blocks are at least `embargo` bars apart.
pub fn blocks(parts: &[Range<usize>], k: usize, embargo: usize) -> Vec<Vec<Range<usize>>> {
    let total: usize = parts.iter().map(Range::len).sum();
    if k == 0 || total < k {
        return Vec::new();
    }
    // Position `i` in the concatenation of the parts, as a bar index.
    let bar = |i: usize| {
        let mut rest = i;
        for p in parts {
            if rest < p.len() {
                return p.start + rest;
            }
            rest -= p.len();
        }
        parts.last().map_or(0, |p| p.end)
    };
    let mut out = Vec::with_capacity(k);
    for b in 0..k {
        let (lo, hi) = (b * total / k, (b + 1) * total / k);
        let (first, last) = (bar(lo), bar(hi - 1) + 1);
        let drop_from = if b == 0 { first } else { first + embargo };
        let ranges: Vec<Range<usize>> = parts
            .iter()
            .filter_map(|p| {
                let start = p.start.max(first).max(drop_from);
                let end = p.end.min(last);
                (start < end).then_some(start..end)
            })
            .collect();
        out.push(ranges);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn training_and_validation_in_five_blocks() {
        // Training 0..600, validation 605..800 (embargo 5), test after: never touched.
        let f = blocks(&[0..600, 605..800], 5, 5);
        assert_eq!(f.len(), 5);
        assert_eq!(f[0], vec![0..159]);
        assert_eq!(f[1], vec![164..318]);
        assert_eq!(f[2], vec![323..477]);
        assert_eq!(f[3], vec![482..600, 605..641]);
        assert_eq!(f[4], vec![646..800]);
    }

    proptest! {
        #[test]
        fn blocks_respect_parts_and_embargo(
            lens in proptest::collection::vec(1usize..200, 1..4),
            gap in 0usize..10,
            k in 1usize..8,
            embargo in 0usize..10,
        ) {
            let mut parts = Vec::new();
            let mut at = 0;
            for l in &lens {
                parts.push(at..at + l);
                at += l + gap;
            }
            let test = at..at + 50;
            let folds = blocks(&parts, k, embargo);
            let total: usize = lens.iter().sum();
            prop_assert_eq!(folds.len(), if total < k { 0 } else { k });
            let mut last_end: Option<usize> = None;
            for (b, fold) in folds.iter().enumerate() {
                for (j, r) in fold.iter().enumerate() {
                    prop_assert!(!r.is_empty());
                    prop_assert!(parts.iter().any(|p| p.start <= r.start && r.end <= p.end));
                    prop_assert!(r.end <= test.start, "a fold reached the sealed test");
                    if let Some(e) = last_end {
                        prop_assert!(r.start >= e);
                        if j == 0 && b > 0 {
                            prop_assert!(r.start - e >= embargo, "blocks closer than the embargo");
                        }
                    }
                    last_end = Some(r.end);
                }
            }
            // What is dropped is the embargo at most, once per block.
            let kept: usize = folds.iter().flatten().map(Range::len).sum();
            if total >= k {
                prop_assert!(kept + k * embargo >= total);
            }
        }
    }
}
