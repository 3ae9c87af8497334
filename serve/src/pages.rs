//! The run browser's pages: self-contained HTML (inline CSS, a few lines of script), nothing
//! fetched from elsewhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lim_backtest::nonfinite::show;
use lim_pipelines::journal::{Kind, Record};
use lim_pipelines::research::{Summary, escape_html as esc};
use lim_pipelines::store::{RunMeta, RunStatus};

use lim_pipelines::store::RunOverview;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;color:#1d2430}\
nav{padding:10px 0;border-bottom:1px solid #dde2ea;margin-bottom:12px}nav a{margin-right:14px}\
table{border-collapse:collapse;margin:8px 0 18px;width:100%}th,td{border-bottom:1px solid #e6e9ef;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f4f6f9}td.n{text-align:right;font-variant-numeric:tabular-nums}code,pre{font:12px ui-monospace,monospace}\
pre{background:#f6f8fa;padding:8px;overflow-x:auto;white-space:pre-wrap;max-height:480px;overflow-y:auto}\
.st-running{color:#0b62c4}.st-finished{color:#18794e}.st-failed{color:#c4320a}.st-stopped,.st-interrupted{color:#9a6700}\
.cols{display:grid;grid-template-columns:1fr 1fr;gap:18px}a{color:#0b62c4}";

/// A URL query value.
fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{} · LIM</title><style>{STYLE}</style></head><body><nav><a href=\"/\">Runs</a><a href=\"/memory\">Research memory</a></nav>{body}</body></html>",
        esc(title)
    )
}

/// A page that says one thing.
pub(crate) fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1><p>{}</p>", esc(title), esc(text)),
    )
}

fn status(s: RunStatus) -> String {
    format!("<span class=\"st-{0}\">{0}</span>", esc(s.as_str()))
}

fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = lim_market::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn row_html(r: &RunOverview) -> String {
    format!(
        "<tr data-run=\"{id}\"><td><input type=\"radio\" name=\"a\" value=\"{id}\"> <input type=\"radio\" name=\"b\" value=\"{id}\"></td><td><a href=\"/runs/{id}\">{id}</a></td><td>{created}</td><td>{goal}</td><td class=\"status\">{status}</td><td class=\"n trials\">{trials}</td><td class=\"n best\">{best}</td><td class=\"progress\">{records} records, last <code>{last}</code> · <a href=\"/runs/{id}/journal\">journal</a></td><td>{why}</td></tr>",
        id = esc(&r.id),
        created = when(r.created_ms),
        goal = esc(&r.goal),
        status = status(r.status),
        trials = r.trials,
        best = r
            .best_fitness
            .map_or_else(|| "-".to_string(), |f| show(f, 2, "-")),
        records = r.records,
        last = esc(r.last_exec.as_deref().unwrap_or("-")),
        why = esc(r.stop_reason.as_deref().unwrap_or("")),
    )
}

/// The runs, newest first; running runs' rows refresh every two seconds.
pub(crate) fn index(runs: &[RunOverview]) -> String {
    let mut b = format!(
        "<h1>Runs</h1><p>{} runs. Choose two (a and b) to <button id=\"compare\" type=\"button\">compare</button> them side by side.</p><table id=\"runs\"><thead><tr><th>a b</th><th>run</th><th>created (UTC)</th><th>goal</th><th>status</th><th>trials</th><th>best fitness</th><th>progress</th><th>stop reason</th></tr></thead><tbody>",
        runs.len()
    );
    for r in runs {
        b.push_str(&row_html(r));
    }
    b.push_str("</tbody></table>");
    b.push_str(
        "<script>\
document.getElementById('compare').onclick=function(){\
var a=document.querySelector('input[name=a]:checked'),b=document.querySelector('input[name=b]:checked');\
if(a&&b){location.href='/compare?a='+encodeURIComponent(a.value)+'&b='+encodeURIComponent(b.value);}};\
function refresh(){fetch('/api/runs').then(function(r){return r.json();}).then(function(rows){\
rows.forEach(function(r){var tr=document.querySelector('tr[data-run=\"'+r.id+'\"]');if(!tr){return;}\
var s=tr.querySelector('.status span');s.textContent=r.status;s.className='st-'+r.status;\
tr.querySelector('.trials').textContent=r.trials;\
tr.querySelector('.best').textContent=r.best_fitness===null?'-':r.best_fitness.toFixed(2);\
tr.querySelector('.progress code').textContent=r.last_exec||'-';});}).catch(function(){});}\
if(document.querySelector('.st-running')){setInterval(refresh,2000);}\
</script>",
    );
    page("Runs", &b)
}

/// A finished run's tearsheet with the browser's links at its top.
pub(crate) fn with_nav(tearsheet: &str, id: &str) -> String {
    let nav = format!(
        "<nav style=\"font:14px system-ui,sans-serif;padding:8px 16px\"><a href=\"/\">Runs</a> · <a href=\"/runs/{0}/journal\">journal of {0}</a> · <a href=\"/memory\">research memory</a></nav>",
        esc(id)
    );
    match tearsheet.find("<body>") {
        Some(i) => format!("{}{nav}{}", &tearsheet[..i + 6], &tearsheet[i + 6..]),
        None => tearsheet.to_string(),
    }
}

/// A run without a report yet: where it stands.
pub(crate) fn unfinished(meta: &RunMeta, live: RunStatus, records: &[Record]) -> String {
    let nodes: Vec<&str> = records
        .iter()
        .filter(|r| r.kind == Kind::Node)
        .map(|r| r.exec.as_str())
        .collect();
    let mut b = format!(
        "<h1>Run {id}</h1><p><b>Goal:</b> {goal}</p><p>Status: {st}{why}. No report yet: {n} node executions done, {r} journal records. {hint}</p><p><a href=\"/runs/{id}/journal\">Journal</a></p><h2>Node executions</h2><ol>",
        id = esc(&meta.id),
        goal = esc(&meta.goal),
        st = status(live),
        why = meta
            .stop_reason
            .as_deref()
            .map(|w| format!(" ({})", esc(w)))
            .unwrap_or_default(),
        n = nodes.len(),
        r = records.len(),
        hint = if live == RunStatus::Running {
            "This page does not refresh itself; reload it."
        } else {
            "`lim resume` continues it."
        }
    );
    for n in nodes {
        let _ = write!(b, "<li><code>{}</code></li>", esc(n));
    }
    b.push_str("</ol>");
    page(&format!("Run {}", meta.id), &b)
}

/// Pretty JSON, at most `limit` characters of it.
fn body(v: &serde_json::Value, limit: usize) -> String {
    let s = serde_json::to_string_pretty(v).unwrap_or_default();
    if s.len() <= limit {
        return esc(&s);
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… ({} more characters; `lim trace export` has all of it)",
        esc(&s[..end]),
        s.len() - end
    )
}

/// The journal: node executions with their events by kind, and one execution's events in full.
pub(crate) fn journal(meta: &RunMeta, records: &[Record], exec: Option<&str>) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut counts: BTreeMap<&str, BTreeMap<&'static str, usize>> = BTreeMap::new();
    for r in records {
        if !counts.contains_key(r.exec.as_str()) {
            order.push(&r.exec);
        }
        *counts
            .entry(&r.exec)
            .or_default()
            .entry(r.kind.as_str())
            .or_default() += 1;
    }
    let mut b = format!(
        "<h1>Journal of <a href=\"/runs/{id}\">{id}</a></h1><p>{} records in {} node executions. LLM calls are the requests and replies as sent and received; tool calls their arguments and results; data reads a digest of what was read.</p><table><thead><tr><th>node execution</th><th>llm</th><th>tool</th><th>data</th><th>clock</th><th>memory</th><th>completed</th></tr></thead><tbody>",
        records.len(),
        order.len(),
        id = esc(&meta.id)
    );
    for e in &order {
        let c = &counts[e];
        let n = |k: &str| c.get(k).copied().unwrap_or(0);
        let _ = write!(
            b,
            "<tr><td><a href=\"/runs/{}/journal?exec={}#events\">{}</a></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&meta.id),
            enc(e),
            esc(e),
            n("llm"),
            n("tool"),
            n("data"),
            n("clock"),
            n("memory"),
            if n("node") > 0 { "yes" } else { "no" }
        );
    }
    b.push_str("</tbody></table>");
    if let Some(exec) = exec {
        let _ = write!(
            b,
            "<h2 id=\"events\">Events of <code>{}</code></h2>",
            esc(exec)
        );
        for r in records.iter().filter(|r| r.exec == exec) {
            let _ = write!(
                b,
                "<h3>#{} {} {}</h3><pre>{}</pre>",
                r.seq,
                r.kind.as_str(),
                r.n,
                body(&r.body, 20_000)
            );
        }
    }
    page(&format!("Journal of {}", meta.id), &b)
}

fn summary_table(meta: &RunMeta, s: Option<&Summary>) -> String {
    let mut b = format!(
        "<h2><a href=\"/runs/{id}\">{id}</a></h2><p>{goal}</p>",
        id = esc(&meta.id),
        goal = esc(&meta.goal)
    );
    let Some(s) = s else {
        let _ = write!(b, "<p>No report yet ({}).</p>", status(meta.status));
        return b;
    };
    let mt = s.multiple_testing.as_ref();
    let rows: Vec<(&str, String)> = vec![
        ("datasets", esc(&s.plan.strategy.datasets.join(", "))),
        ("strategist", esc(&s.strategist)),
        ("stopped", esc(&s.stop_reason)),
        ("trials", s.trials.to_string()),
        (
            "deflated Sharpe ratio",
            mt.map_or("-".into(), |m| show(m.deflated.dsr, 2, "-")),
        ),
        (
            "PBO",
            mt.and_then(|m| m.pbo)
                .map_or("-".into(), |p| show(p, 2, "-")),
        ),
        (
            "combined test Sharpe",
            s.combined
                .as_ref()
                .map_or("-".into(), |c| show(c.test.sharpe, 2, "no trades")),
        ),
        (
            "always long test Sharpe",
            s.baselines
                .first()
                .map_or("-".into(), |c| show(c.test.sharpe, 2, "no trades")),
        ),
        ("LLM tokens", s.spent.tokens.to_string()),
    ];
    b.push_str("<table><tbody>");
    for (k, v) in rows {
        let _ = write!(b, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    b.push_str("</tbody></table><h3>Finalists</h3><table><thead><tr><th>signal</th><th>valid Sharpe</th><th>test Sharpe</th><th>test max DD</th></tr></thead><tbody>");
    for f in &s.finalists {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&f.signal),
            show(f.validation.sharpe, 2, "no trades"),
            show(f.test.sharpe, 2, "no trades"),
            show(f.test.max_dd * 100.0, 1, "no trades")
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// Two runs side by side.
pub(crate) fn compare(a: (&RunMeta, Option<&Summary>), b: (&RunMeta, Option<&Summary>)) -> String {
    page(
        &format!("{} vs {}", a.0.id, b.0.id),
        &format!(
            "<h1>Two runs side by side</h1><div class=\"cols\"><section id=\"a\">{}</section><section id=\"b\">{}</section></div>",
            summary_table(a.0, a.1),
            summary_table(b.0, b.1)
        ),
    )
}

/// What finished runs found.
pub(crate) fn memory(findings: &[lim_tools::Finding]) -> String {
    let mut b = format!(
        "<h1>Research memory</h1><p>{} findings of finished runs, best validation Sharpe first (`lim memory clear` forgets).</p><table><thead><tr><th>datasets</th><th>run</th><th>signal</th><th>train Sharpe</th><th>valid Sharpe</th><th>test Sharpe</th><th>conclusion</th></tr></thead><tbody>",
        findings.len()
    );
    for f in findings {
        let _ = write!(
            b,
            "<tr><td>{}</td><td><a href=\"/runs/{run}\">{run}</a></td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&f.datasets),
            esc(&f.signal),
            show(f.train_sharpe, 2, "-"),
            show(f.validation_sharpe, 2, "-"),
            f.test_sharpe.map_or("-".into(), |v| show(v, 2, "-")),
            esc(&f.conclusion),
            run = esc(&f.run),
        );
    }
    b.push_str("</tbody></table>");
    page("Research memory", &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(when(0), "1970-01-01 00:00");
        assert_eq!(when(1_764_979_200_000), "2025-12-06 00:00");
        assert_eq!(when(951_782_400_000 + 3_723_000), "2000-02-29 01:02");
    }

    #[test]
    fn text_is_escaped_and_queries_encoded() {
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(enc("generate#2"), "generate%232");
    }
}
