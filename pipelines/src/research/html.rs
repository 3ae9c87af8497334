//! The run's tearsheet: one self-contained HTML file (inline SVG charts, inline CSS and a few
//! lines of script to sort the leaderboard; nothing fetched at view time), written beside
//! `report.md`. Built from the summary and the curves the final evaluator wrote.

use std::fmt::Write as _;

use lim_backtest::nonfinite::show;
use lim_market::{Part, Timestamp};

use super::{Curve, CurveKind, Curves, Summary};
use lim_backtest::metrics::Metrics;

/// Escapes text for HTML (text and attribute values alike); the run browser uses it too.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A percentage with one decimal, or "–".
fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}%", v * 100.0)
    } else {
        "–".into()
    }
}

/// Compounded equity from 1, a missing return counting as none.
fn equity(net: &[Option<f64>]) -> Vec<f64> {
    let mut eq = 1.0;
    net.iter()
        .map(|r| {
            eq *= 1.0 + r.unwrap_or(0.0);
            eq
        })
        .collect()
}

/// Drawdown from the running peak, the peak starting at the starting capital.
fn drawdown(eq: &[f64]) -> Vec<f64> {
    let mut peak = 1.0f64;
    eq.iter()
        .map(|&e| {
            peak = peak.max(e);
            e / peak - 1.0
        })
        .collect()
}

/// Mean of the known values among the last `w` (NaN until `w` bars have passed, or when fewer
/// than half of them are known).
fn rolling_mean(x: &[Option<f64>], w: usize) -> Vec<f64> {
    (0..x.len())
        .map(|t| {
            if t + 1 < w {
                return f64::NAN;
            }
            let known: Vec<f64> = x[t + 1 - w..=t].iter().flatten().copied().collect();
            if known.len() * 2 < w {
                f64::NAN
            } else {
                known.iter().sum::<f64>() / known.len() as f64
            }
        })
        .collect()
}

/// Annualised Sharpe ratio over the last `w` bars (NaN until then).
fn rolling_sharpe(x: &[Option<f64>], w: usize, periods: f64) -> Vec<f64> {
    (0..x.len())
        .map(|t| {
            if t + 1 < w {
                return f64::NAN;
            }
            let v: Vec<f64> = x[t + 1 - w..=t].iter().map(|r| r.unwrap_or(0.0)).collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let sd =
                (v.iter().map(|r| (r - m) * (r - m)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt();
            if sd > 0.0 {
                m / sd * periods.sqrt()
            } else {
                f64::NAN
            }
        })
        .collect()
}

/// A pixel column of a line: its x, and its lowest and highest points (bar, value).
type Column = (i64, (usize, f64), (usize, f64));

/// One line of a chart; its colour is its curve's place in the run's curves, the same in
/// every chart.
struct Line {
    name: String,
    values: Vec<f64>,
    color: usize,
    bold: bool,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f",
];

/// A line chart of `series` over the bars of `curves`, with the parts' boundaries marked.
fn chart(
    id: &str,
    title: &str,
    curves: &Curves,
    series: &[Line],
    fmt: fn(f64) -> String,
) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 280.0, 64.0, 12.0, 24.0, 28.0);
    let n = curves.times.len().max(2);
    let finite = series
        .iter()
        .flat_map(|l| l.values.iter().copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else if lo.is_finite() {
        (lo - 1.0, lo + 1.0)
    } else {
        (0.0, 1.0)
    };
    let x = |i: usize| left + (w - left - right) * i as f64 / (n - 1) as f64;
    let y = |v: f64| top + (h - top - bottom) * (hi - v) / (hi - lo);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure id="{id}"><figcaption>{}</figcaption><svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(title),
        esc(title)
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            w - right,
            y(v),
            y(v),
            left - 4.0,
            y(v) + 4.0,
            esc(&fmt(v))
        );
    }
    for (part, start, end) in &curves.parts {
        let label = match part {
            Part::Train => "train",
            Part::Validation => "validation",
            Part::Test => "test (sealed until the end)",
        };
        let _ = write!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{top}" y2="{}" stroke="#999" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" class="tick">{label}</text>"##,
            x(*start),
            x(*start),
            h - bottom,
            x(*start) + 4.0,
            top - 8.0
        );
        if let (Some(a), Some(b)) = (
            curves.times.get(*start),
            curves.times.get(end.saturating_sub(1)),
        ) {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" class="tick">{} → {}</text>"#,
                x(*start) + 4.0,
                h - 8.0,
                a.date_string(),
                b.date_string()
            );
        }
    }
    for line in series {
        // At most the lowest and the highest value per pixel column, in their order (the line
        // looks the same and the file stays small); a gap of missing values breaks the line.
        let mut d = String::new();
        let mut drawn = 0usize;
        let mut pen_up = true;
        let mut column: Option<Column> = None;
        let mut flush = |c: Option<Column>, d: &mut String, up: &mut bool| {
            if let Some((_, lo, hi)) = c {
                let (a, b) = if lo.0 <= hi.0 { (lo, hi) } else { (hi, lo) };
                for (i, v) in if a.0 == b.0 { vec![a] } else { vec![a, b] } {
                    let _ = write!(d, "{}{:.1},{:.1} ", if *up { "M" } else { "L" }, x(i), y(v));
                    *up = false;
                    drawn += 1;
                }
            }
        };
        for (i, v) in line.values.iter().enumerate() {
            if !v.is_finite() {
                flush(column.take(), &mut d, &mut pen_up);
                pen_up = true;
                continue;
            }
            let px = x(i).round() as i64;
            match &mut column {
                Some((c, lo, hi)) if *c == px => {
                    if *v < lo.1 {
                        *lo = (i, *v);
                    }
                    if *v > hi.1 {
                        *hi = (i, *v);
                    }
                }
                _ => {
                    flush(column.take(), &mut d, &mut pen_up);
                    column = Some((px, (i, *v), (i, *v)));
                }
            }
        }
        flush(column.take(), &mut d, &mut pen_up);
        let _ = write!(
            s,
            r#"<path data-series="{}" data-points="{drawn}" fill="none" stroke="{}" stroke-width="{}" d="{}"/>"#,
            esc(&line.name),
            COLORS[line.color % COLORS.len()],
            if line.bold { 2.0 } else { 1.2 },
            d.trim_end()
        );
    }
    s.push_str("</svg><ul class=\"legend\">");
    for line in series {
        let _ = write!(
            s,
            r#"<li><span style="background:{}"></span>{}</li>"#,
            COLORS[line.color % COLORS.len()],
            esc(&line.name)
        );
    }
    s.push_str("</ul></figure>");
    s
}

/// A cell's background for a return: green up, red down, stronger with size (full at 30 %).
fn heat(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let a = (v.abs() / 0.3).min(1.0) * 0.6;
    if v >= 0.0 {
        format!(r#" style="background:rgba(44,160,44,{a:.2})""#)
    } else {
        format!(r#" style="background:rgba(214,39,40,{a:.2})""#)
    }
}

/// The leaderboard's family tree as nested lists, seeds outermost; leaderboard strategies
/// carry their rank.
fn family_tree(summary: &Summary) -> String {
    let fam = &summary.family;
    let known = |sig: &str| fam.iter().any(|(s, _)| s == sig);
    let rank = |sig: &str| {
        summary
            .leaderboard
            .iter()
            .find(|e| e.signal == sig)
            .map(|e| e.rank)
    };
    fn node(
        s: &mut String,
        sig: &str,
        fam: &[(String, Option<String>)],
        rank: &dyn Fn(&str) -> Option<usize>,
        depth: usize,
    ) {
        let _ = write!(s, "<li><code>{}</code>", esc(sig));
        if let Some(r) = rank(sig) {
            let _ = write!(s, " <b>#{r}</b>");
        }
        let children: Vec<&str> = fam
            .iter()
            .filter(|(c, p)| p.as_deref() == Some(sig) && c != sig)
            .map(|(c, _)| c.as_str())
            .collect();
        if !children.is_empty() && depth < 30 {
            s.push_str("<ul>");
            for c in children {
                node(s, c, fam, rank, depth + 1);
            }
            s.push_str("</ul>");
        }
        s.push_str("</li>");
    }
    let mut s = String::from("<ul class=\"tree\">");
    for (sig, parent) in fam {
        if parent.as_deref().is_none_or(|p| !known(p)) {
            node(&mut s, sig, fam, &rank, 0);
        }
    }
    s.push_str("</ul>");
    s
}

/// Mean rank IC by forward horizon, one row per strategy, heat-mapped: how fast a signal's
/// information fades.
fn ic_decay_table(c: &Curves) -> String {
    let mut horizons: Vec<usize> = c
        .ic_decay
        .iter()
        .flat_map(|d| d.by_horizon.iter().map(|(h, _)| *h))
        .collect();
    horizons.sort_unstable();
    horizons.dedup();
    let mut s = String::from(
        "<h3 id=\"ic-decay\">IC decay: mean rank IC against the return over the next h bars</h3><table class=\"ic-decay\"><thead><tr><th>strategy</th>",
    );
    for h in &horizons {
        let _ = write!(s, "<th>h = {h}</th>");
    }
    s.push_str("</tr></thead><tbody>");
    for d in &c.ic_decay {
        let _ = write!(s, "<tr><td>{}</td>", esc(&d.name));
        for h in &horizons {
            let v = d
                .by_horizon
                .iter()
                .find(|(k, _)| k == h)
                .and_then(|(_, v)| *v)
                .unwrap_or(f64::NAN);
            // Rank ICs are small: scale the colour so that 0.05 is strong.
            let _ = write!(
                s,
                "<td data-v=\"{v}\"{}>{}</td>",
                heat(v * 6.0),
                if v.is_finite() {
                    format!("{v:.4}")
                } else {
                    "–".into()
                }
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// Compounded return per calendar year of `c`.
fn by_year(times: &[Timestamp], c: &Curve) -> Vec<(i32, f64)> {
    let mut out: Vec<(i32, f64)> = Vec::new();
    for (t, r) in times.iter().zip(&c.net) {
        let y = t.ymd().0;
        if out.last().is_none_or(|(yy, _)| *yy != y) {
            out.push((y, 1.0));
        }
        if let (Some(last), Some(r)) = (out.last_mut(), r) {
            last.1 *= 1.0 + r;
        }
    }
    out.into_iter().map(|(y, g)| (y, g - 1.0)).collect()
}

/// Compounded return per calendar month of `c`: (year, month, return).
fn by_month(times: &[Timestamp], c: &Curve) -> Vec<(i32, u32, f64)> {
    let mut out: Vec<(i32, u32, f64)> = Vec::new();
    for (t, r) in times.iter().zip(&c.net) {
        let (y, m, _) = t.ymd();
        if out.last().is_none_or(|(yy, mm, _)| (*yy, *mm) != (y, m)) {
            out.push((y, m, 1.0));
        }
        if let (Some(last), Some(r)) = (out.last_mut(), r) {
            last.2 *= 1.0 + r;
        }
    }
    out.into_iter().map(|(y, m, g)| (y, m, g - 1.0)).collect()
}

fn years_table(curves: &Curves) -> String {
    let mut years: Vec<i32> = curves.times.iter().map(|t| t.ymd().0).collect();
    years.dedup();
    let mut s =
        String::from("<div class=\"wide\"><table class=\"heat\"><thead><tr><th>series</th>");
    for y in &years {
        let _ = write!(s, "<th>{y}</th>");
    }
    s.push_str("</tr></thead><tbody>");
    for c in &curves.series {
        let _ = write!(s, "<tr><td>{}</td>", esc(&c.name));
        let ys = by_year(&curves.times, c);
        for y in &years {
            let v = ys.iter().find(|(yy, _)| yy == y).map_or(f64::NAN, |x| x.1);
            let _ = write!(s, "<td{}>{}</td>", heat(v), pct(v));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
    s
}

fn months_table(curves: &Curves, c: &Curve) -> String {
    let ms = by_month(&curves.times, c);
    let mut years: Vec<i32> = ms.iter().map(|m| m.0).collect();
    years.dedup();
    let mut s = String::from("<table class=\"heat\"><thead><tr><th>year</th>");
    for m in [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ] {
        let _ = write!(s, "<th>{m}</th>");
    }
    s.push_str("</tr></thead><tbody>");
    for y in years {
        let _ = write!(s, "<tr><td>{y}</td>");
        for m in 1..=12 {
            let v = ms
                .iter()
                .find(|x| x.0 == y && x.1 == m)
                .map_or(f64::NAN, |x| x.2);
            let _ = write!(s, "<td{}>{}</td>", heat(v), pct(v));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0;font-variant-numeric:tabular-nums}\
td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}td:last-child,th:last-child{text-align:left}\
th{background:#f4f4f4}th.sortable{cursor:pointer}code{font-size:12px}\
svg.chart{width:100%;height:auto;background:#fff}text.tick{font-size:11px;fill:#555}\
ul.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1em;font-size:12px}\
ul.legend span{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}\
figure{margin:1em 0}div.wide{overflow-x:auto}figcaption{font-weight:600}.note{color:#555}";

const SORT: &str = "document.querySelectorAll('table.sortable').forEach(function(t){\
t.querySelectorAll('th').forEach(function(th,i){th.classList.add('sortable');th.addEventListener('click',function(){\
var rows=Array.prototype.slice.call(t.tBodies[0].rows);var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';\
rows.sort(function(a,b){var x=a.cells[i].dataset.v||a.cells[i].textContent,y=b.cells[i].dataset.v||b.cells[i].textContent;\
var p=parseFloat(x),q=parseFloat(y);var c=(isNaN(p)||isNaN(q))?x.localeCompare(y):p-q;return asc?c:-c;});\
rows.forEach(function(r){t.tBodies[0].appendChild(r);});});});});";

/// A number cell that sorts by its value.
fn num(v: f64, digits: usize) -> String {
    format!(
        r#"<td data-v="{}">{}</td>"#,
        if v.is_finite() {
            v.to_string()
        } else {
            String::new()
        },
        show(v, digits, "–")
    )
}

/// What differs between the charts of a run's tearsheet and of a backtest's.
struct Titles {
    drawdown: &'static str,
    /// Whose rank IC is drawn.
    rank_ic_of: CurveKind,
    /// The monthly table's heading, before the first curve's name.
    months: &'static str,
}

/// The equity, drawdown, rolling Sharpe and rank IC charts of `c`, then returns by year and by
/// month of its first non-baseline curve (the section's closing tag is the caller's).
fn curve_sections(s: &mut String, c: &Curves, periods: f64, t: &Titles) {
    let lines = |keep: &dyn Fn(&Curve) -> bool, values: &dyn Fn(&Curve) -> Vec<f64>| {
        c.series
            .iter()
            .enumerate()
            .filter(|(_, x)| keep(x))
            .map(|(k, x)| Line {
                name: x.name.clone(),
                values: values(x),
                color: k,
                bold: x.kind == CurveKind::Combined,
            })
            .collect::<Vec<Line>>()
    };
    let all = |_: &Curve| true;
    let ours = |x: &Curve| x.kind != CurveKind::Baseline;
    s.push_str(&chart(
        "equity",
        "Equity (growth of 1, after costs)",
        c,
        &lines(&all, &|x| equity(&x.net)),
        |v| format!("{v:.2}"),
    ));
    s.push_str(&chart(
        "drawdown",
        t.drawdown,
        c,
        &lines(&ours, &|x| drawdown(&equity(&x.net))),
        pct,
    ));
    let w = (periods / 4.0).round().max(5.0) as usize;
    s.push_str(&chart(
        "rolling-sharpe",
        &format!("Rolling Sharpe ratio ({w} bars)"),
        c,
        &lines(&ours, &|x| rolling_sharpe(&x.net, w, periods)),
        |v| format!("{v:.1}"),
    ));
    s.push_str(&chart(
        "rank-ic",
        &format!("Rank IC against the next bar's return, {w}-bar mean"),
        c,
        &lines(&|x| x.kind == t.rank_ic_of, &|x| {
            rolling_mean(&x.rank_ic, w)
        }),
        |v| format!("{v:.3}"),
    ));
    if !c.ic_decay.is_empty() {
        s.push_str(&ic_decay_table(c));
    }
    s.push_str("</section><section id=\"years\"><h2>Returns by year</h2>");
    s.push_str(&years_table(c));
    if let Some(first) = c.series.iter().find(|x| x.kind == CurveKind::Finalist) {
        let _ = write!(s, "<h3>{} <code>{}</code></h3>", t.months, esc(&first.name));
        s.push_str(&months_table(c, first));
    }
}

/// The tearsheet of a run. `curves` is `None` for runs recorded before curves were written:
/// the charts are then left out, and the page says so.
pub fn tearsheet(summary: &Summary, curves: Option<&Curves>) -> String {
    let p = &summary.plan;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>LIM research report: {}</title><style>{STYLE}</style></head><body>",
        esc(&p.strategy.goal)
    );
    let _ = write!(
        s,
        "<h1>LIM research report</h1><p><b>Goal:</b> {}</p><p><b>Strategist:</b> {}</p>",
        esc(&p.strategy.goal),
        esc(&summary.strategist)
    );
    // Plan and stop.
    s.push_str("<section id=\"plan\"><h2>Plan</h2><table><tbody>");
    for (k, v) in [
        ("datasets", p.strategy.datasets.join(", ")),
        ("frequency", p.frequency.clone()),
        ("instruments", p.instruments.to_string()),
        ("book", p.horizon.clone()),
        ("splits", p.splits.clone()),
        ("objective", p.objective.clone()),
        ("constraints", p.constraints.join("; ")),
        ("budgets", p.budgets.describe()),
        ("review", p.review.clone()),
    ] {
        let _ = write!(s, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
    }
    let _ = write!(
        s,
        "</tbody></table><p id=\"stop\"><b>Stopped:</b> {} after {} strategies.</p></section>",
        esc(&summary.stop_reason),
        summary.trials
    );
    // Charts.
    s.push_str("<section id=\"curves\"><h2>Equity, drawdown and rolling Sharpe</h2>");
    match curves {
        Some(c) if !c.series.is_empty() => {
            let periods = lim_market::Frequency::parse(&p.frequency)
                .map_or(252.0, |f| f.periods_per_year_of(&c.times));
            curve_sections(
                &mut s,
                c,
                periods,
                &Titles {
                    drawdown: "Drawdown of the finalists and their combination",
                    rank_ic_of: CurveKind::Finalist,
                    months: "Monthly returns of the first finalist",
                },
            );
        }
        _ => s.push_str(
            "<p class=\"note\">This run was recorded before LIM kept its curves; the charts need a new run.</p>",
        ),
    }
    s.push_str("</section>");
    // Sealed test.
    s.push_str("<section id=\"finalists\"><h2>Sealed test period (evaluated once, on the finalists)</h2><table class=\"sortable\"><thead><tr><th>valid Sharpe</th><th>test Sharpe</th><th title=\"the test Sharpe against always long's, over its standard error: beyond ±1.96 unlikely to be chance\">z vs always long</th><th>test return</th><th>excess over always long</th><th>IR</th><th>test max DD</th><th>test IC</th><th>test ICIR</th><th>test rank IC</th><th>test rank ICIR</th><th>signal</th></tr></thead><tbody>");
    let z_of = |name: &str| summary.versus(name).map_or(f64::NAN, |t| t.z);
    for f in &summary.finalists {
        let (v, t) = (&f.validation, &f.test);
        let vs = f.vs_always_long;
        s.push_str("<tr>");
        s.push_str(&num(v.sharpe, 2));
        s.push_str(&num(t.sharpe, 2));
        s.push_str(&num(z_of(&f.signal), 1));
        let _ = write!(s, "<td>{}</td>", pct(t.ann_return));
        let _ = write!(
            s,
            "<td>{}</td>",
            vs.map_or("–".into(), |x| pct(x.excess_return))
        );
        s.push_str(&num(vs.map_or(f64::NAN, |x| x.information_ratio), 2));
        let _ = write!(s, "<td>{}</td>", pct(t.max_dd));
        s.push_str(&num(t.ic, 4));
        s.push_str(&num(t.icir, 3));
        s.push_str(&num(t.rank_ic, 4));
        s.push_str(&num(t.rank_icir, 3));
        let _ = write!(s, "<td><code>{}</code></td></tr>", esc(&f.signal));
    }
    if let Some(c) = &summary.combined {
        s.push_str("<tr>");
        s.push_str(&num(c.validation.sharpe, 2));
        s.push_str(&num(c.test.sharpe, 2));
        s.push_str(&num(z_of(super::COMBINED), 1));
        let _ = write!(
            s,
            "<td>{}</td><td>–</td><td>–</td><td>{}</td><td>–</td><td>–</td><td>–</td><td>–</td><td>the finalists combined, equal risk</td></tr>",
            pct(c.test.ann_return),
            pct(c.test.max_dd)
        );
    }
    s.push_str("</tbody></table>");
    let chance = summary.beyond_chance();
    if !chance.is_empty() {
        let _ = write!(
            s,
            "<p class=\"note\">Against always long (equal weight).{} z is Jobson and Korkie's test of a difference of Sharpe ratios, with Memmel's correction, on the test's bars; it assumes independent, normal returns.</p>",
            esc(&chance)
        );
    }
    if !summary.baselines.is_empty() {
        s.push_str("<h3>Baselines (same bars, costs and lag)</h3><table><thead><tr><th>baseline</th><th>valid Sharpe</th><th>test Sharpe</th><th>test return</th><th>test max DD</th><th>signal</th></tr></thead><tbody>");
        for b in &summary.baselines {
            let _ = write!(s, "<tr><td>{}</td>", esc(&b.name));
            s.push_str(&num(b.validation.sharpe, 2));
            s.push_str(&num(b.test.sharpe, 2));
            let _ = write!(
                s,
                "<td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                pct(b.test.ann_return),
                pct(b.test.max_dd),
                esc(&b.signal)
            );
        }
        s.push_str("</tbody></table>");
    }
    for f in &summary.finalists {
        if let Some(said) = f.rediscovered() {
            let _ = write!(s, "<p><code>{}</code> {}</p>", esc(&f.signal), esc(&said));
        }
    }
    s.push_str("</section>");
    // Multiple testing.
    s.push_str("<section id=\"multiple-testing\"><h2>Multiple testing</h2>");
    match &summary.multiple_testing {
        Some(m) => {
            let dsr = m.deflated.dsr;
            let _ = write!(
                s,
                "<p><b>Deflated Sharpe ratio {}</b>: the probability that the best validation Sharpe ratio (<code>{}</code>, {}) is real rather than the luck of trying {} strategies. {}</p>",
                show(dsr, 2, "n/a"),
                esc(&m.best),
                show(m.best_validation_sharpe, 2, "n/a"),
                m.trials,
                if dsr >= 0.95 {
                    "Above 0.95: unlikely to be luck."
                } else {
                    "Below 0.95: this run cannot rule out luck."
                }
            );
            match m.pbo {
                Some(pbo) => {
                    let _ = write!(
                        s,
                        "<p><b>Probability of backtest overfitting {}</b>: how often, over {} splits of the bars, the strategy best in one half ranked below the median in the other. {}</p>",
                        show(pbo, 2, "n/a"),
                        m.pbo_splits,
                        if pbo > 0.5 {
                            "Above 0.5: choosing the best by backtest did worse than chance here."
                        } else {
                            "At most 0.5: choosing by backtest carried some information."
                        }
                    );
                }
                None => s.push_str("<p><b>PBO</b> needs at least two strategies with returns.</p>"),
            }
        }
        None => s.push_str("<p>Fewer than two strategies ran: nothing to deflate.</p>"),
    }
    s.push_str("</section>");
    // Leaderboard, lineage.
    s.push_str("<section id=\"leaderboard\"><h2>Leaderboard (train and validation only)</h2><table class=\"sortable\"><thead><tr><th>#</th><th>iter</th><th>fitness</th><th>train Sharpe</th><th>valid Sharpe</th><th>valid return</th><th>valid max DD</th><th>valid turnover</th><th>valid rank IC</th><th>signal</th></tr></thead><tbody>");
    for e in &summary.leaderboard {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td>", e.rank, e.generation + 1);
        s.push_str(&num(e.fitness, 2));
        s.push_str(&num(e.train.sharpe, 2));
        s.push_str(&num(e.validation.sharpe, 2));
        let _ = write!(
            s,
            "<td>{}</td><td>{}</td>",
            pct(e.validation.ann_return),
            pct(e.validation.max_dd)
        );
        s.push_str(&num(e.validation.turnover, 2));
        s.push_str(&num(e.validation.rank_ic, 4));
        let _ = write!(s, "<td><code>{}</code></td></tr>", esc(&e.signal));
    }
    s.push_str("</tbody></table>");
    if !summary.family.is_empty() {
        s.push_str("<h3 id=\"family\">Family tree of the leaderboard (by first parent; # is the rank)</h3>");
        s.push_str(&family_tree(summary));
    }
    if !summary.ancestry.is_empty() {
        s.push_str("<h3>The leader's lineage</h3>");
        for a in &summary.ancestry {
            let _ = write!(s, "<ul><li><code>{}</code>", esc(a));
        }
        for _ in &summary.ancestry {
            s.push_str("</li></ul>");
        }
    }
    s.push_str("</section><section id=\"lineage\"><h2>Hypothesis lineage</h2><table><thead><tr><th>iteration</th><th>trials</th><th>best fitness</th><th>best</th><th>diagnosis and next hypotheses</th></tr></thead><tbody>");
    for c in &summary.lineage {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td>{}<td><code>{}</code></td><td>{} Next: {}</td></tr>",
            c.iteration,
            c.trials,
            num(c.best_fitness, 2),
            esc(&c.best_signal),
            esc(&c.diagnosis),
            esc(&c.hypotheses.join("; "))
        );
    }
    s.push_str("</tbody></table></section>");
    // Agents.
    let _ = write!(
        s,
        "<section id=\"agents\"><h2>Agents</h2><p>{} LLM calls, {} tokens, ${:.4}.</p>",
        summary.spent.calls, summary.spent.tokens, summary.spent.usd
    );
    if summary.agents.is_empty() {
        s.push_str("<p>No agent ran (the offline strategist).</p>");
    } else {
        s.push_str("<table><thead><tr><th>node</th><th>protocol</th><th>replies</th><th>tokens</th><th>failed tool calls</th><th>answered</th><th>tool calls</th></tr></thead><tbody>");
        for a in &summary.agents {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.exec),
                a.protocol,
                a.replies,
                a.tokens,
                a.failed_tool_calls,
                if a.answered { "yes" } else { "no" },
                esc(&a.tool_calls.join(", "))
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>");
    if let Some(f) = &summary.foundation {
        let _ = write!(
            s,
            "<section id=\"foundation\"><h2>Foundation model</h2><p>Training spent about {:.1} of {:.1} CPU-seconds.</p><table><thead><tr><th>model</th><th>CPU-seconds</th><th>holdout rank IC</th><th>steps run</th></tr></thead><tbody>",
            f.spent_cpu_seconds, f.budget_cpu_seconds
        );
        for t in &f.trained {
            let _ = write!(
                s,
                "<tr><td><code>{}</code></td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.model),
                t.cpu_seconds,
                t.finetuned
                    .as_ref()
                    .map_or("–".into(), |x| format!("{:.4}", x.holdout_rank_ic)),
                t.finetuned
                    .as_ref()
                    .map_or("–".into(), |x| x.steps_run.to_string())
            );
        }
        s.push_str("</tbody></table><ul>");
        for field in &f.fields {
            let _ = write!(
                s,
                "<li>Field <code>{}</code> from <code>{}</code>, learned up to {}. Why: {}</li>",
                esc(&field.name),
                esc(&field.model),
                field.cutoff,
                esc(&field.why)
            );
        }
        s.push_str("</ul></section>");
    }
    if !summary.notes.is_empty() {
        s.push_str("<section id=\"notes\"><h2>Notes</h2><ul>");
        for n in &summary.notes {
            let _ = write!(s, "<li>{}</li>", esc(n));
        }
        s.push_str("</ul></section>");
    }
    // The summary as data, for scripts and tests (`</` escaped so it cannot close the tag).
    let json = serde_json::to_string(summary)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let _ = write!(
        s,
        "<script type=\"application/json\" id=\"summary\">{json}</script><script>{SORT}</script></body></html>"
    );
    s
}

/// One strategy's (or baseline's) metrics on one part, for [`backtest_tearsheet`].
#[derive(Debug, Clone)]
pub struct PartRow {
    /// The strategy's name.
    pub name: String,
    /// Its signal.
    pub signal: String,
    /// Which part.
    pub part: Part,
    /// Its metrics there.
    pub metrics: Metrics,
}

/// The tearsheet of a `lim backtest`: what was run (`facts`), every strategy and baseline by
/// part (`rows`), and their curves over the parts shown (strategies as
/// [`CurveKind::Finalist`], baselines as [`CurveKind::Baseline`]); one self-contained file.
pub fn backtest_tearsheet(
    facts: &[(String, String)],
    rows: &[PartRow],
    curves: &Curves,
    periods: f64,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>LIM backtest</title><style>{STYLE}</style></head><body><h1>LIM backtest</h1><section id=\"setup\"><table><tbody>"
    );
    for (k, v) in facts {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</tbody></table></section><section id=\"curves\"><h2>Equity, drawdown and rolling Sharpe</h2>");
    curve_sections(
        &mut s,
        curves,
        periods,
        &Titles {
            drawdown: "Drawdown of the strategies",
            rank_ic_of: CurveKind::Finalist,
            months: "Monthly returns of",
        },
    );
    s.push_str("</section><section id=\"metrics\"><h2>Metrics by part</h2><table class=\"sortable\"><thead><tr><th>name</th><th>part</th><th>Sharpe</th><th>return</th><th>max DD</th><th>turnover</th><th>IC</th><th>ICIR</th><th>rank IC</th><th>rank ICIR</th><th>signal</th></tr></thead><tbody>");
    for r in rows {
        let m = &r.metrics;
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td>",
            esc(&r.name),
            match r.part {
                Part::Train => "train",
                Part::Validation => "validation",
                Part::Test => "test",
            }
        );
        s.push_str(&num(m.sharpe, 2));
        let _ = write!(
            s,
            "<td>{}</td><td>{}</td>",
            pct(m.ann_return),
            pct(m.max_dd)
        );
        s.push_str(&num(m.turnover, 3));
        s.push_str(&num(m.ic, 4));
        s.push_str(&num(m.icir, 3));
        s.push_str(&num(m.rank_ic, 4));
        s.push_str(&num(m.rank_icir, 3));
        let _ = write!(s, "<td><code>{}</code></td></tr>", esc(&r.signal));
    }
    let _ = write!(
        s,
        "</tbody></table></section><script>{SORT}</script></body></html>"
    );
    s
}

/// The curves of backtest results over the bars from the first training bar to the end of the
/// last of `parts`: `strategies` as [`CurveKind::Finalist`] (with rank IC), `baselines` as
/// [`CurveKind::Baseline`]. Results without a book are left out.
pub fn curves_of(
    session: &lim_backtest::session::Session,
    parts: &[Part],
    strategies: &[lim_backtest::session::StrategyResult],
    baselines: &[lim_backtest::session::StrategyResult],
) -> Curves {
    let splits = session.splits();
    let end = parts
        .iter()
        .map(|p| splits.range(*p).end)
        .max()
        .unwrap_or(splits.train.end);
    let whole = splits.train.start..end;
    let keep = |v: &[f64]| -> Vec<Option<f64>> {
        v[whole.clone()]
            .iter()
            .map(|x| x.is_finite().then_some(*x))
            .collect()
    };
    let mut series = Vec::new();
    for (list, kind) in [
        (strategies, CurveKind::Finalist),
        (baselines, CurveKind::Baseline),
    ] {
        for r in list {
            if let Some(b) = &r.book {
                series.push(Curve {
                    name: r.name.clone(),
                    kind,
                    net: keep(&b.net),
                    rank_ic: if kind == CurveKind::Finalist {
                        keep(&b.ic)
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }
    Curves {
        times: session.times()[whole.clone()].to_vec(),
        parts: parts
            .iter()
            .map(|&p| {
                let r = splits.range(p);
                (p, r.start - whole.start, r.end - whole.start)
            })
            .collect(),
        series,
        ic_decay: strategies
            .iter()
            .filter(|r| !r.ic_decay.is_empty())
            .map(|r| super::finalize::IcDecay::new(&r.name, &r.ic_decay))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equity_drawdown_and_rolling_figures_by_hand() {
        let net = [Some(-0.1), None, Some(0.2), Some(-0.5)];
        let eq = equity(&net);
        assert!((eq[3] - 0.9 * 1.2 * 0.5).abs() < 1e-12);
        let dd = drawdown(&eq);
        assert!(
            (dd[0] + 0.1).abs() < 1e-12,
            "a first-bar loss is a drawdown"
        );
        assert!((dd[3] - (0.54 / 1.08 - 1.0)).abs() < 1e-12);
        let m = rolling_mean(&net, 2);
        assert!(m[0].is_nan() && (m[1] + 0.1).abs() < 1e-12 && (m[3] + 0.15).abs() < 1e-12);
        assert_eq!(esc("a < b & \"c\""), "a &lt; b &amp; &quot;c&quot;");
    }
}
