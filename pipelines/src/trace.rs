//! Self-contained traces: a run's metadata and journal as JSON lines.
//!
//! The first line is `{"lim_trace": 1, "run": {...}}` (goal, config, data manifest,
//! fingerprint); each further line is one journal record with its checksum. LLM exchanges
//! were scrubbed of secrets when journaled; exporting scrubs the whole text again. A torn
//! final line (a trace cut short) is ignored with a warning; a bad line before it is an
//! error naming its line number.

use lim_agents::client::scrub;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::journal::Record;
use crate::store::{Loaded, RunMeta};

/// The trace format's version.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    lim_trace: u32,
    run: RunMeta,
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(flatten)]
    record: Record,
    checksum: String,
}

/// A trace that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("trace line {line}: {why}")]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub why: String,
}

/// Writes a run as a trace.
pub fn export(meta: &RunMeta, records: &[Record]) -> String {
    let mut out = String::new();
    let header = Header {
        lim_trace: VERSION,
        run: meta.clone(),
    };
    out.push_str(&serde_json::to_string(&header).unwrap_or_default());
    out.push('\n');
    for r in records {
        let line = Line {
            checksum: r.checksum(),
            record: r.clone(),
        };
        out.push_str(&serde_json::to_string(&line).unwrap_or_default());
        out.push('\n');
    }
    scrub(&out)
}

/// Reads a trace.
///
/// # Errors
/// The header is missing or of another version, or a line before the last is not a valid
/// record.
pub fn import(text: &str) -> Result<(RunMeta, Loaded), TraceError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l))
        .collect();
    let Some(&(_, first)) = lines.first() else {
        return Err(TraceError {
            line: 1,
            why: "the trace is empty; export one with `lim trace export RUN`".into(),
        });
    };
    let header: Header = serde_json::from_str(first).map_err(|e| TraceError {
        line: 1,
        why: format!("not a LIM trace header ({e}); export one with `lim trace export RUN`"),
    })?;
    if header.lim_trace != VERSION {
        return Err(TraceError {
            line: 1,
            why: format!(
                "trace format {} is not supported (this LIM reads format {VERSION})",
                header.lim_trace
            ),
        });
    }
    let ends_cleanly = text.ends_with('\n');
    let mut loaded = Loaded::default();
    let total = lines.len();
    for (k, &(line, l)) in lines.iter().enumerate().skip(1) {
        let parsed = serde_json::from_str::<Line>(l)
            .map_err(|e| e.to_string())
            .and_then(|x| {
                if x.record.checksum() != x.checksum {
                    Err("checksum mismatch (the record was altered)".to_string())
                } else if x.record.seq != loaded.records.len() as u64 + 1 {
                    Err(format!(
                        "record {} where {} was expected",
                        x.record.seq,
                        loaded.records.len() + 1
                    ))
                } else {
                    Ok(x.record)
                }
            });
        match parsed {
            Ok(r) => loaded.records.push(r),
            Err(why) if k + 1 == total && (!ends_cleanly || why.contains("checksum")) => {
                loaded.warnings.push(format!(
                    "trace line {line}, the last, is torn ({why}) and was ignored"
                ));
            }
            Err(why) => return Err(TraceError { line, why }),
        }
    }
    Ok((header.run, loaded))
}

/// The value of a JSON pointer in a record body, as text (for listings).
pub fn field(body: &Value, pointer: &str) -> String {
    match body.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}
