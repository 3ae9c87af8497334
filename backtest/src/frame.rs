//! Building an evaluation [`Frame`] from market-data panels.

use std::collections::HashMap;
use std::sync::Arc;

use lim_market::{Field, PanelSet};

use crate::eval::{Frame, Mat};

/// The fields strategies can read, in the order the parser lists them.
pub const FIELDS: [Field; 8] = [
    Field::Open,
    Field::High,
    Field::Low,
    Field::Close,
    Field::Volume,
    Field::Vwap,
    Field::Returns,
    Field::OpenInterest,
];

/// A frame over every field of [`FIELDS`] present in the panel set and its extra columns
/// (`cap`, …), plus groupings by exchange and asset class and those of the data. The panels are copied; [`take_panels`] moves them instead.
pub fn from_panels(set: &PanelSet) -> Frame {
    let mut copy = set.clone();
    take_panels(&mut copy)
}

/// The group id of an instrument that a grouping from the data has no label for.
pub const MISSING_GROUP: u32 = u32::MAX;

/// Like [`from_panels`], but moves the panels out of the set (its times and instruments stay)
/// instead of copying them: half the memory for large panels.
pub fn take_panels(set: &mut PanelSet) -> Frame {
    let (t, n) = (set.times.len(), set.instruments.len());
    let mut fields = HashMap::new();
    let extra: Vec<Field> = set
        .panels
        .keys()
        .copied()
        .filter(|f| matches!(f, Field::Extra(_)))
        .collect();
    for f in FIELDS.into_iter().chain(extra) {
        if let Some(p) = set.panels.remove(&f) {
            fields.insert(
                f.name().to_string(),
                Arc::new(Mat {
                    t,
                    n,
                    data: p.into_values(),
                }),
            );
        }
    }
    let label = |key: &dyn Fn(usize) -> String| -> Vec<u32> {
        let names: Vec<String> = (0..n).map(key).collect();
        let mut uniq = names.clone();
        uniq.sort();
        uniq.dedup();
        names
            .iter()
            .map(|s| uniq.iter().position(|u| u == s).unwrap_or(0) as u32)
            .collect()
    };
    let mut groups = HashMap::new();
    groups.insert(
        "exchange".to_string(),
        label(&|j| set.instruments[j].exchange.clone().unwrap_or_default()),
    );
    groups.insert(
        "asset_class".to_string(),
        label(&|j| set.instruments[j].asset_class.as_str().to_string()),
    );
    // Groupings from the data; an instrument without a label gets `MISSING_GROUP`, which
    // `Session::run` refuses before evaluating.
    for (name, labels) in &set.groups {
        let mut uniq: Vec<&String> = labels.iter().flatten().collect();
        uniq.sort();
        uniq.dedup();
        let ids = labels
            .iter()
            .map(|l| match l {
                Some(l) => uniq.binary_search(&l).map_or(MISSING_GROUP, |i| i as u32),
                None => MISSING_GROUP,
            })
            .collect();
        groups.insert(name.clone(), ids);
    }
    Frame {
        fields,
        groups,
        t,
        n,
    }
}
