//! The market crate's error type.

use std::path::PathBuf;

use crate::reader::Problem;

/// Everything that can go wrong reading, caching or querying market data. Each variant names
/// the input at fault and, where one exists, the fix.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The operating system refused a read or write.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was being attempted ("cannot read data file").
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A data file broke the uniform format. `more` counts further problems not shown.
    #[error("{first}{}", more_suffix(*.more, file))]
    Invalid {
        /// The file's name as the user gave it.
        file: String,
        /// The first problem found.
        first: Box<Problem>,
        /// How many further problems were found before parsing stopped.
        more: usize,
    },

    /// A data directory holds no dataset files.
    #[error(
        "data directory '{0}' holds no '*.csv' or '*.csv.gz' files; point --data at a directory of files in the uniform format (see docs/data.md)"
    )]
    EmptyDirectory(PathBuf),

    /// No dataset of that name in the catalog.
    #[error("unknown dataset '{name}'{}; known datasets: {}", did_you_mean(.suggestion), .known.join(", "))]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The closest known name, if one is close.
        suggestion: Option<String>,
        /// Every dataset in the catalog.
        known: Vec<String>,
    },

    /// A symbol not present in the dataset(s) asked for.
    #[error("unknown symbol '{symbol}' in {scope}{}", did_you_mean(.suggestion))]
    UnknownSymbol {
        /// The symbol asked for.
        symbol: String,
        /// The dataset(s) searched.
        scope: String,
        /// The closest known symbol, if one is close.
        suggestion: Option<String>,
    },

    /// A query that cannot be answered as posed.
    #[error("invalid query: {0}")]
    Query(String),

    /// A groups file (`groups.csv`) that cannot be used.
    #[error("groups file '{path}' line {line}: {message}")]
    Groups {
        /// The file.
        path: PathBuf,
        /// The line (1 for the header).
        line: usize,
        /// What is wrong and the fix.
        message: String,
    },

    /// A sidecar manifest that cannot be read.
    #[error("manifest '{path}': {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

fn more_suffix(more: usize, file: &str) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" (and {more} more problem(s); run `lim data check {file}` to list them)")
    }
}

/// " (did you mean 'x'?)" for the candidate [`closest`] to `name`, or nothing: the hint every
/// "unknown name" error of LIM ends with.
pub fn suggestion<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(&closest(name, candidates))
}

/// The closest candidate to `name` (a unique prefix match, else by edit distance), if it is
/// close enough to be a plausible typo. Shared by every "did you mean" in LIM.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let candidates: Vec<&str> = candidates.into_iter().collect();
    // A unique candidate that starts with what was typed is the likeliest meaning.
    let prefixed: Vec<&&str> = candidates
        .iter()
        .filter(|c| c.to_ascii_lowercase().starts_with(&lower))
        .collect();
    if let [only] = prefixed.as_slice() {
        return Some((**only).to_string());
    }
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Edits between `a` and `b`: insertions, deletions, substitutions, and swaps of two
/// neighbouring characters, each one edit (optimal string alignment), since a swap (`rnak`
/// for `rank`) is the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i - 2, i - 1 and i of the table.
    let mut before: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 0..a.len() {
        let mut cur = vec![i + 1; b.len() + 1];
        for j in 0..b.len() {
            let mut d = (prev[j] + usize::from(a[i] != b[j]))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                d = d.min(before[j - 1] + 1);
            }
            cur[j + 1] = d;
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance};

    #[test]
    fn a_swap_of_neighbours_is_one_edit() {
        assert_eq!(edit_distance("rnak", "rank"), 1);
        assert_eq!(edit_distance("ts_maen", "ts_mean"), 1);
        assert_eq!(edit_distance("close", "close"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            closest("rnak", ["rank", "ts_rank", "delay"]).as_deref(),
            Some("rank")
        );
    }

    #[test]
    fn suggests_near_names_only() {
        let known = ["cn_futures_daily", "us_futures_daily", "crypto_daily"];
        assert_eq!(
            closest("cn_future_daily", known).as_deref(),
            Some("cn_futures_daily")
        );
        assert_eq!(closest("equities", known), None);
        assert_eq!(
            closest("cn_futures", known).as_deref(),
            Some("cn_futures_daily")
        );
        assert_eq!(
            closest("shfe:cu0", ["SHFE:CU0", "SHFE:ZN0"]).as_deref(),
            Some("SHFE:CU0")
        );
    }
}
