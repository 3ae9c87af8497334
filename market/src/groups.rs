//! Groupings from data: a table of symbol → group label per grouping (sector, industry,
//! subindustry; any name), read from `groups.csv` (or `groups.csv.gz`, or `groups.parquet`
//! with text columns of the same names) beside the datasets.
//!
//! ```text
//! symbol,sector,industry
//! AAPL,Information Technology,Technology Hardware
//! XOM,Energy,Oil & Gas
//! ```
//!
//! Every panel set of the directory carries each grouping as a label per instrument (`None`
//! for a symbol the table lacks); the strategy language's `group_*` functions take the
//! grouping's name, and refuse a grouping that does not cover every instrument in use.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::MarketError;

/// The file names looked for in a data directory, in order.
pub const FILES: [&str; 3] = ["groups.csv", "groups.csv.gz", "groups.parquet"];

/// A symbol → label table per grouping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTable {
    /// Where it was read from.
    pub path: PathBuf,
    /// The groupings (the header after `symbol`), in file order.
    pub names: Vec<String>,
    /// Labels per symbol, in the order of `names` (an empty cell is no label).
    pub rows: HashMap<String, Vec<Option<String>>>,
}

fn invalid(path: &Path, line: usize, message: String) -> MarketError {
    MarketError::Groups {
        path: path.to_path_buf(),
        line,
        message,
    }
}

impl GroupTable {
    /// The table in `dir`, if it has one.
    ///
    /// # Errors
    /// The file is unreadable or malformed (named, with the line and the fix).
    pub fn find(dir: &Path) -> Result<Option<GroupTable>, MarketError> {
        for f in FILES {
            let p = dir.join(f);
            if p.is_file() {
                return GroupTable::read(&p).map(Some);
            }
        }
        Ok(None)
    }

    /// Reads a groups file: a header `symbol,NAME,…`, then one row per symbol.
    ///
    /// # Errors
    /// Unreadable, no `symbol` column first, a grouping name that is not an identifier or is
    /// taken (`exchange`, `asset_class`), a row of the wrong width, a symbol twice.
    pub fn read(path: &Path) -> Result<GroupTable, MarketError> {
        let io = |source| MarketError::Io {
            action: "cannot read groups file",
            path: path.to_path_buf(),
            source,
        };
        if path.extension().is_some_and(|e| e == "parquet") {
            let (cols, cells) = crate::parquet::read_text_table(path)
                .map_err(|message| invalid(path, 0, message))?;
            let mut text = cols.join(",");
            text.push('\n');
            for row in cells {
                let row: Vec<String> = row.into_iter().map(Option::unwrap_or_default).collect();
                if row.iter().any(|c| c.contains(',')) {
                    return Err(invalid(
                        path,
                        0,
                        format!(
                            "the label '{}' holds a comma, which is not supported",
                            row.join(" / ")
                        ),
                    ));
                }
                text.push_str(&row.join(","));
                text.push('\n');
            }
            return GroupTable::parse(path, &text);
        }
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        if path.extension().is_some_and(|e| e == "gz") {
            flate2::read::MultiGzDecoder::new(file)
                .read_to_string(&mut text)
                .map_err(io)?;
        } else {
            std::io::BufReader::new(file)
                .read_to_string(&mut text)
                .map_err(io)?;
        }
        GroupTable::parse(path, &text)
    }

    /// A groups table from its CSV text (see [`GroupTable::read`]).
    fn parse(path: &Path, text: &str) -> Result<GroupTable, MarketError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(invalid(
                path,
                1,
                "the file is empty; the first line is `symbol,sector,…`".into(),
            ));
        };
        let cols: Vec<&str> = header.split(',').map(str::trim).collect();
        if cols.first() != Some(&"symbol") || cols.len() < 2 {
            return Err(invalid(
                path,
                1,
                format!(
                    "the header is '{header}'; it must be `symbol` then one column per grouping, e.g. `symbol,sector,industry`"
                ),
            ));
        }
        let mut names = Vec::new();
        for c in &cols[1..] {
            let ok = c
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_lowercase() || ch == '_')
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if !ok {
                return Err(invalid(
                    path,
                    1,
                    format!(
                        "grouping name '{c}' must be lower-case letters, digits and _ (it is written in expressions, e.g. group_rank(x, sector))"
                    ),
                ));
            }
            if matches!(*c, "exchange" | "asset_class") || names.iter().any(|n| n == c) {
                return Err(invalid(
                    path,
                    1,
                    format!("grouping '{c}' is taken; rename the column"),
                ));
            }
            names.push((*c).to_string());
        }
        let mut rows = HashMap::new();
        for (i, line) in lines {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != cols.len() {
                return Err(invalid(
                    path,
                    i + 1,
                    format!(
                        "{} cells, the header has {} (a label with a comma is not supported)",
                        cells.len(),
                        cols.len()
                    ),
                ));
            }
            let labels = cells[1..]
                .iter()
                .map(|c| (!c.is_empty()).then(|| (*c).to_string()))
                .collect();
            if rows.insert(cells[0].to_string(), labels).is_some() {
                return Err(invalid(
                    path,
                    i + 1,
                    format!("symbol '{}' appears twice", cells[0]),
                ));
            }
        }
        Ok(GroupTable {
            path: path.to_path_buf(),
            names,
            rows,
        })
    }

    /// Each grouping's label per symbol of `symbols` (`None` where the table has none).
    pub fn labels(&self, symbols: &[&str]) -> BTreeMap<String, Vec<Option<String>>> {
        self.names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let v = symbols
                    .iter()
                    .map(|s| self.rows.get(*s).and_then(|r| r[k].clone()))
                    .collect();
                (name.clone(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<GroupTable, MarketError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("groups.csv");
        std::fs::write(&p, text).unwrap();
        GroupTable::read(&p)
    }

    #[test]
    fn labels_follow_the_symbols_asked_for() {
        let t = table("symbol,sector,industry\nA,Tech,Hardware\nB,Energy,\n").unwrap();
        let l = t.labels(&["B", "C", "A"]);
        assert_eq!(
            l["sector"],
            vec![Some("Energy".into()), None, Some("Tech".into())]
        );
        assert_eq!(l["industry"], vec![None, None, Some("Hardware".into())]);
    }

    #[test]
    fn bad_files_name_the_line_and_the_fix() {
        let e = table("ticker,sector\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("symbol,sector"), "{e}");
        let e = table("symbol,Sector\n").unwrap_err().to_string();
        assert!(e.contains("lower-case"), "{e}");
        let e = table("symbol,exchange\n").unwrap_err().to_string();
        assert!(e.contains("taken"), "{e}");
        let e = table("symbol,sector\nA,x\nA,y\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("twice"), "{e}");
        let e = table("symbol,sector\nA,x,z\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("3 cells"), "{e}");
    }
}
