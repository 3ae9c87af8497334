//! Plain aligned text tables that fit a terminal.

/// A table with a header row; numbers are right-aligned, text left-aligned.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut width = vec![0usize; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let numeric: Vec<bool> = (0..n)
            .map(|i| {
                self.rows.iter().all(|r| {
                    r.get(i).is_none_or(|c| {
                        c.trim_start_matches(['-', '+'])
                            .chars()
                            .next()
                            .is_none_or(|ch| ch.is_ascii_digit())
                            || c == "-"
                    })
                })
            })
            .collect();
        let mut out = String::new();
        for (k, r) in std::iter::once(&self.header).chain(&self.rows).enumerate() {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(n) {
                let pad = width[i] - c.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                if numeric[i] && k > 0 {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if i + 1 < n {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Formats a number with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A percentage with one decimal, or "-" for NaN.
pub fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1}%", x * 100.0)
    } else {
        "-".into()
    }
}

/// `text` broken at spaces into lines of at most `width` characters (a word longer than that
/// stays whole): the first keeps `text`'s own leading spaces, the others start with `indent`.
pub fn wrap(text: &str, width: usize, indent: &str) -> String {
    let body = text.trim_start_matches(' ');
    let mut out = String::new();
    let mut line = text[..text.len() - body.len()].to_string();
    let mut empty = true;
    for word in body.split(' ').filter(|w| !w.is_empty()) {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_within_the_width() {
        let text = "  objective: a lower bound of the Sharpe ratio over five folds";
        let w = wrap(text, 30, "    ");
        assert_eq!(
            w,
            "  objective: a lower bound of\n    the Sharpe ratio over five\n    folds"
        );
        assert!(w.lines().all(|l| l.chars().count() <= 30), "{w}");
        // A word longer than the width stays whole, on its own line.
        assert_eq!(
            wrap("a ts_mean(returns,20) b", 8, " "),
            "a\n ts_mean(returns,20)\n b"
        );
        assert_eq!(wrap("short", 80, "  "), "short");
    }
}
