//! The run journal: every LLM exchange, tool call, data read, clock read and node completion
//! of a run, in order, each record keyed by the node execution that made it.
//!
//! The trace layer is a set of decorators over the traits that cross the run's boundary:
//! [`JournaledLlm`] over [`LlmClient`], [`JournaledTools`] over the tool [`Registry`],
//! [`JournaledMarket`] over [`MarketData`] and [`JournaledClock`] over [`Clock`]. Each looks its
//! call up in the journal by (node execution, kind, call number): a recorded LLM answer is
//! read back, never paid for twice; a recorded tool result or data read is recomputed and must
//! match, which is how a replay proves the run deterministic. A request that differs from
//! the recorded one is a [`Divergence`] naming the node and the first differing event.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lim_agents::chat::{ChatRequest, ChatResponse};
use lim_agents::client::scrub;
use lim_agents::client::{Budget, Exchange, LlmClient, Spent};
use lim_agents::error::LlmError;
use lim_market::{DatasetMeta, MarketData, MarketError, PanelQuery, PanelSet};
use lim_tools::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::StoreError;

/// Named artifacts a node consumes or produces.
pub type Artifacts = BTreeMap<String, Value>;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An LLM exchange.
    Llm,
    /// A tool call and its result.
    Tool,
    /// A data read and a digest of what it returned.
    Data,
    /// A read of the run's clock.
    Clock,
    /// A read of the research memory (read back on resume and replay, like the clock).
    Memory,
    /// A node completion with its outputs.
    Node,
}

impl Kind {
    /// The name used in the store and in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Llm => "llm",
            Kind::Tool => "tool",
            Kind::Data => "data",
            Kind::Clock => "clock",
            Kind::Memory => "memory",
            Kind::Node => "node",
        }
    }

    /// The inverse of [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "llm" => Kind::Llm,
            "tool" => Kind::Tool,
            "data" => Kind::Data,
            "clock" => Kind::Clock,
            "memory" => Kind::Memory,
            "node" => Kind::Node,
            _ => return None,
        })
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the run's journal, from 1.
    pub seq: u64,
    /// The node execution that made it, `node#visit`.
    pub exec: String,
    /// What it is.
    pub kind: Kind,
    /// The call number of this kind within the node execution, from 0.
    pub n: u32,
    /// The content.
    pub body: Value,
}

impl Record {
    /// A checksum over every field, stored beside the record: a torn or altered record does
    /// not match it.
    pub fn checksum(&self) -> String {
        let text = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.seq,
            self.exec,
            self.kind.as_str(),
            self.n,
            self.body
        );
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }
}

/// Where a journal's new records go. Each call is durable as a whole or not at all.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Appends `records` in order.
    ///
    /// # Errors
    /// The store could not write them; none of them count as written.
    fn append(&self, records: &[Record]) -> Result<(), StoreError>;
}

/// A sink that keeps records in memory (replays and tests).
#[derive(Debug, Default)]
pub struct MemorySink(Mutex<Vec<Record>>);

impl MemorySink {
    /// Records written so far.
    pub fn records(&self) -> Vec<Record> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Sink for MemorySink {
    fn append(&self, records: &[Record]) -> Result<(), StoreError> {
        if let Ok(mut r) = self.0.lock() {
            r.extend_from_slice(records);
        }
        Ok(())
    }
}

/// A run that did not repeat itself: the node and the first event that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("non-determinism in node execution '{exec}', at {event}: {detail}")]
pub struct Divergence {
    /// The node execution, `node#visit`.
    pub exec: String,
    /// The event, e.g. `llm call 0` or `outputs`.
    pub event: String,
    /// What differs.
    pub detail: String,
}

#[derive(Debug, Default)]
struct State {
    records: Vec<Record>,
    index: HashMap<(String, Kind, u32), usize>,
    next_seq: u64,
    divergence: Option<Divergence>,
}

/// A run's journal: the records read back from the store, and the ones this process adds.
#[derive(Debug)]
pub struct Journal {
    state: Mutex<State>,
    sink: Arc<dyn Sink>,
    sealed: bool,
}

impl Journal {
    /// A journal holding `records` (already in the sink) that appends new ones to `sink`.
    pub fn new(records: Vec<Record>, sink: Arc<dyn Sink>) -> Journal {
        Journal::build(records, sink, false)
    }

    /// A sealed journal for replay: nothing may be asked of an LLM that it does not hold.
    pub fn sealed(records: Vec<Record>) -> Journal {
        Journal::build(records, Arc::new(MemorySink::default()), true)
    }

    fn build(records: Vec<Record>, sink: Arc<dyn Sink>, sealed: bool) -> Journal {
        let mut st = State {
            next_seq: records.iter().map(|r| r.seq).max().unwrap_or(0) + 1,
            ..State::default()
        };
        for r in records {
            st.index
                .insert((r.exec.clone(), r.kind, r.n), st.records.len());
            st.records.push(r);
        }
        Journal {
            state: Mutex::new(st),
            sink,
            sealed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written: every update is
        // a single push or insert.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this journal is a replay's.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// The record of call `n` of `kind` by node execution `exec`, if journaled.
    pub fn lookup(&self, exec: &str, kind: Kind, n: u32) -> Option<Record> {
        let st = self.lock();
        st.index
            .get(&(exec.to_string(), kind, n))
            .map(|&i| st.records[i].clone())
    }

    /// Appends records atomically (one transaction in the store).
    ///
    /// # Errors
    /// The sink failed; nothing was added.
    pub fn append(
        &self,
        items: Vec<(String, Kind, u32, Value)>,
    ) -> Result<Vec<Record>, StoreError> {
        let mut st = self.lock();
        let mut seq = st.next_seq;
        let recs: Vec<Record> = items
            .into_iter()
            .map(|(exec, kind, n, body)| {
                let r = Record {
                    seq,
                    exec,
                    kind,
                    n,
                    body,
                };
                seq += 1;
                r
            })
            .collect();
        self.sink.append(&recs)?;
        st.next_seq = seq;
        for r in &recs {
            let i = st.records.len();
            st.index.insert((r.exec.clone(), r.kind, r.n), i);
            st.records.push(r.clone());
        }
        Ok(recs)
    }

    /// For a recomputed call (tool result, data read): checks `body` against the journaled
    /// record of (`exec`, `kind`, `n`) and notes a divergence at `event` if it differs (`explain`
    /// words the difference), or journals `body` if there is no record yet.
    ///
    /// # Errors
    /// The sink failed.
    pub fn check_or_record(
        &self,
        exec: &str,
        kind: Kind,
        n: u32,
        body: Value,
        event: impl FnOnce() -> String,
        explain: impl FnOnce(String) -> String,
    ) -> Result<(), StoreError> {
        match self.lookup(exec, kind, n) {
            Some(rec) => {
                if let Some(d) = first_difference(&rec.body, &body) {
                    self.diverge(Divergence {
                        exec: exec.to_string(),
                        event: event(),
                        detail: explain(d),
                    });
                }
                Ok(())
            }
            None => self
                .append(vec![(exec.to_string(), kind, n, body)])
                .map(drop),
        }
    }

    /// Notes a divergence; the first one is kept.
    pub fn diverge(&self, d: Divergence) {
        let mut st = self.lock();
        if st.divergence.is_none() {
            st.divergence = Some(d);
        }
    }

    /// The first divergence noted, if any.
    pub fn divergence(&self) -> Option<Divergence> {
        self.lock().divergence.clone()
    }

    /// Every record, in order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// The outputs a node execution completed with, if it did.
    pub fn completion(&self, exec: &str) -> Option<Artifacts> {
        self.lookup(exec, Kind::Node, 0)
            .and_then(|r| r.body.get("outputs").cloned())
            .and_then(|o| serde_json::from_value(o).ok())
    }

    /// Tokens, dollars and calls spent on LLM calls in this journal (answers read back
    /// included: they were paid for once).
    pub fn spent(&self, budget: &Budget) -> Spent {
        self.spent_where(budget, |_| true)
    }

    /// Like [`Journal::spent`], over the node executions `include` accepts.
    pub fn spent_where(&self, budget: &Budget, include: impl Fn(&str) -> bool) -> Spent {
        spent_in(&self.lock().records, budget, include)
    }
}

/// The largest ratio of the provider's prompt tokens to LIM's estimate among the answered LLM
/// calls of `records` (1 when none teaches anything): where a resumed run's token budget takes
/// up its estimate (`Budgeted::with_prompt_scale`).
pub fn prompt_scale_in(records: &[Record]) -> f64 {
    records
        .iter()
        .filter(|r| r.kind == Kind::Llm)
        .filter_map(|r| {
            let req: lim_agents::ChatRequest =
                serde_json::from_value(r.body.get("request")?.clone()).ok()?;
            let prompt = r
                .body
                .pointer("/outcome/Ok/usage/prompt_tokens")
                .and_then(Value::as_u64)?;
            lim_agents::client::prompt_ratio(&req, prompt)
        })
        .fold(1.0, f64::max)
}

/// Tokens, dollars and calls spent on the LLM calls among `records` of the node executions
/// `include` accepts (what [`Journal::spent_where`] counts, for records not in a journal).
pub fn spent_in(records: &[Record], budget: &Budget, include: impl Fn(&str) -> bool) -> Spent {
    let mut s = Spent::default();
    for r in records
        .iter()
        .filter(|r| r.kind == Kind::Llm && include(&r.exec))
    {
        s.calls += 1;
        let Some(usage) = r.body.pointer("/outcome/Ok/usage") else {
            continue;
        };
        let p = usage
            .get("prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let c = usage
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        s.tokens += p + c;
        let model = r
            .body
            .pointer("/request/model")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(price) = budget.prices.get(model) {
            s.usd += (p as f64 * price.prompt + c as f64 * price.completion) / 1e6;
        }
    }
    s
}

/// The first place two JSON values differ, as a JSON pointer and the two values (shortened).
pub fn first_difference(a: &Value, b: &Value) -> Option<String> {
    fn walk(a: &Value, b: &Value, path: &mut String) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, va) in x {
                    let len = path.len();
                    path.push('/');
                    path.push_str(k);
                    let found = match y.get(k) {
                        Some(vb) => walk(va, vb, path),
                        None => Some(format!("{path}: recorded has it, this run does not")),
                    };
                    if found.is_some() {
                        return found;
                    }
                    path.truncate(len);
                }
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{path}/{k}: this run has it, the recording does not"))
            }
            (Value::Array(x), Value::Array(y)) => {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    if let Some(f) = walk(va, vb, path) {
                        return Some(f);
                    }
                    path.truncate(len);
                }
                (x.len() != y.len()).then(|| {
                    format!(
                        "{path}: {} items recorded, {} in this run",
                        x.len(),
                        y.len()
                    )
                })
            }
            _ if a == b => None,
            (Value::String(x), Value::String(y)) => {
                let at = x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count();
                let window = |s: &str| -> String {
                    let from = at.saturating_sub(20);
                    let w: String = s.chars().skip(from).take(60).collect();
                    format!("{}{w}", if from > 0 { "…" } else { "" })
                };
                Some(format!(
                    "{}: from character {at}, recorded {:?}, this run {:?}",
                    if path.is_empty() { "/" } else { path },
                    window(x),
                    window(y)
                ))
            }
            _ => Some(format!(
                "{}: recorded {}, this run {}",
                if path.is_empty() { "/" } else { path },
                short(a),
                short(b)
            )),
        }
    }
    walk(a, b, &mut String::new())
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(79).collect::<String>())
    } else {
        s
    }
}

/// The LLM decorator of one node execution: a journaled answer is read back; otherwise the
/// inner client is asked and the exchange journaled, scrubbed, before the node sees it.
#[derive(Debug)]
pub struct JournaledLlm<L> {
    inner: Arc<L>,
    journal: Arc<Journal>,
    exec: String,
    n: AtomicU32,
}

impl<L> JournaledLlm<L> {
    /// Wraps `inner` for node execution `exec`.
    pub fn new(inner: Arc<L>, journal: Arc<Journal>, exec: &str) -> JournaledLlm<L> {
        JournaledLlm {
            inner,
            journal,
            exec: exec.to_string(),
            n: AtomicU32::new(0),
        }
    }
}

impl<L: LlmClient> LlmClient for JournaledLlm<L> {
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let fingerprint = req.fingerprint();
        let event = format!("llm call {n}");
        if let Some(rec) = self.journal.lookup(&self.exec, Kind::Llm, n) {
            let ex: Exchange = serde_json::from_value(rec.body)
                .map_err(|e| LlmError::Trace(format!("journal record {}: {e}", rec.seq)))?;
            if ex.fingerprint != fingerprint {
                let a = serde_json::to_value(&ex.request).unwrap_or(Value::Null);
                let b =
                    serde_json::from_str(&scrub(&serde_json::to_string(req).unwrap_or_default()))
                        .unwrap_or(Value::Null);
                self.journal.diverge(Divergence {
                    exec: self.exec.clone(),
                    event,
                    detail: format!(
                        "the request differs from the journal's ({}); a changed prompt means re-recording on purpose",
                        first_difference(&a, &b).unwrap_or_else(|| "same JSON, other fingerprint".into())
                    ),
                });
                return Err(LlmError::ReplayMiss { fingerprint });
            }
            return ex.outcome.map_err(LlmError::Recorded);
        }
        if self.journal.is_sealed() {
            self.journal.diverge(Divergence {
                exec: self.exec.clone(),
                event,
                detail: "this run asks an LLM for an answer the journal does not hold".into(),
            });
            return Err(LlmError::ReplayMiss { fingerprint });
        }
        let outcome = self.inner.complete(req).await;
        let ex = Exchange {
            fingerprint,
            request: req.clone(),
            outcome: outcome.clone().map_err(|e| e.to_string()),
        };
        let text = serde_json::to_string(&ex).map_err(|e| LlmError::Trace(e.to_string()))?;
        let body: Value =
            serde_json::from_str(&scrub(&text)).map_err(|e| LlmError::Trace(e.to_string()))?;
        self.journal
            .append(vec![(self.exec.clone(), Kind::Llm, n, body)])
            .map_err(|e| LlmError::Trace(e.to_string()))?;
        // The node sees what the journal holds, so a resumed run sees the same thing.
        outcome.map_err(|e| LlmError::Recorded(e.to_string()))
    }
}

/// The tool decorator of one node execution: every call is run and journaled; a call already
/// journaled must give the same result, or the run diverged.
#[derive(Debug)]
pub struct JournaledTools {
    registry: Registry,
    journal: Arc<Journal>,
    exec: String,
    n: AtomicU32,
}

impl JournaledTools {
    /// Wraps `registry` for node execution `exec`.
    pub fn new(registry: Registry, journal: Arc<Journal>, exec: &str) -> JournaledTools {
        JournaledTools {
            registry,
            journal,
            exec: exec.to_string(),
            n: AtomicU32::new(0),
        }
    }

    /// Calls tool `name` with `args`.
    ///
    /// # Errors
    /// The journal could not be written.
    pub async fn call(&self, name: &str, args: &Value) -> Result<Value, StoreError> {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let result = self.registry.call(name, &args.to_string()).await;
        self.record(n, name, args, result)
    }

    /// Runs `calls` (name, arguments as the model wrote them) concurrently and journals them
    /// in call order, so the journal does not depend on which finished first. When one of them
    /// is an exclusive tool (it changes state the others read), they run one at a time in call
    /// order instead.
    ///
    /// # Errors
    /// The journal could not be written, or a recorded result differs.
    pub async fn call_many(&self, calls: &[(String, String)]) -> Result<Vec<Value>, StoreError> {
        let first = self.n.fetch_add(calls.len() as u32, Ordering::SeqCst);
        let mut results = vec![Value::Null; calls.len()];
        if calls.iter().any(|(name, _)| self.registry.exclusive(name)) {
            // A call that changes what others read: one at a time, in call order.
            for (i, (name, args)) in calls.iter().enumerate() {
                results[i] = self.registry.call(name, args).await;
            }
        } else {
            let mut set = tokio::task::JoinSet::new();
            for (i, (name, args)) in calls.iter().enumerate() {
                let (registry, name, args) = (self.registry.clone(), name.clone(), args.clone());
                set.spawn(async move { (i, registry.call(&name, &args).await) });
            }
            while let Some(done) = set.join_next().await {
                if let Ok((i, r)) = done {
                    results[i] = r;
                }
            }
        }
        calls
            .iter()
            .zip(results)
            .enumerate()
            .map(|(i, ((name, args), result))| {
                // Arguments that are not JSON are kept as the text the model wrote.
                let args: Value =
                    serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.clone()));
                self.record(first + i as u32, name, &args, result)
            })
            .collect()
    }

    fn record(&self, n: u32, name: &str, args: &Value, result: Value) -> Result<Value, StoreError> {
        // Through text, as the journal holds it.
        let result: Value = serde_json::from_str(&result.to_string()).unwrap_or(Value::Null);
        let body = serde_json::json!({"tool": name, "args": args, "result": result});
        self.journal.check_or_record(
            &self.exec,
            Kind::Tool,
            n,
            body,
            || format!("tool call {n} ({name})"),
            |d| d,
        )?;
        Ok(result)
    }
}

impl lim_agents::agent::Toolbox for JournaledTools {
    fn definitions(&self) -> Vec<lim_agents::chat::ToolDef> {
        self.registry
            .specs()
            .into_iter()
            .map(|t| lim_agents::chat::ToolDef {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            })
            .collect()
    }

    fn call_all<'a>(
        &'a self,
        calls: &'a [lim_agents::chat::ToolCall],
    ) -> lim_agents::agent::BoxFuture<'a, Result<Vec<Value>, String>> {
        Box::pin(async move {
            let calls: Vec<(String, String)> = calls
                .iter()
                .map(|c| (c.name.clone(), c.arguments.clone()))
                .collect();
            self.call_many(&calls).await.map_err(|e| e.to_string())
        })
    }
}

/// The data decorator: each panel query is journaled with a digest of what it returned (the
/// datasets, their symbols, the time range and a hash of every value); a later read of the
/// same query must return the same data.
#[derive(Debug)]
pub struct JournaledMarket {
    inner: Arc<dyn MarketData>,
    journal: Arc<Journal>,
    exec: String,
    n: AtomicU32,
}

impl JournaledMarket {
    /// Wraps `inner` for node execution `exec`.
    pub fn new(inner: Arc<dyn MarketData>, journal: Arc<Journal>, exec: &str) -> JournaledMarket {
        JournaledMarket {
            inner,
            journal,
            exec: exec.to_string(),
            n: AtomicU32::new(0),
        }
    }
}

/// A digest of a panel set: shape, symbols, times and a hash of every value.
pub fn panel_digest(set: &PanelSet) -> Value {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for t in &set.times {
        h.update(&t.0.to_le_bytes());
    }
    for (f, p) in &set.panels {
        h.update(format!("{f:?}").as_bytes());
        for v in p.values() {
            h.update(&v.to_bits().to_le_bytes());
        }
    }
    for i in &set.instruments {
        h.update(i.symbol.as_bytes());
    }
    // Groupings from the data count only when there are some, so digests of data without a
    // groups file are those recorded before groupings existed.
    for (name, labels) in &set.groups {
        h.update(name.as_bytes());
        for l in labels {
            h.update(l.as_deref().unwrap_or("\u{0}").as_bytes());
            h.update(b"\x1f");
        }
    }
    serde_json::json!({
        "bars": set.times.len(),
        "instruments": set.instruments.len(),
        "first": set.times.first().map(|t| t.to_string()),
        "last": set.times.last().map(|t| t.to_string()),
        "hash": format!("{:016x}", h.digest()),
    })
}

impl MarketData for JournaledMarket {
    fn datasets(&self) -> Result<Vec<DatasetMeta>, MarketError> {
        self.inner.datasets()
    }

    fn panels(&self, query: &PanelQuery) -> Result<PanelSet, MarketError> {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let out = self.inner.panels(query);
        let body = serde_json::json!({
            "query": format!("{query:?}"),
            "result": match &out {
                Ok(set) => panel_digest(set),
                Err(e) => Value::String(e.to_string()),
            },
        });
        self.journal
            .check_or_record(
                &self.exec,
                Kind::Data,
                n,
                body,
                || format!("data read {n}"),
                |d| format!("the data differ from the recording's ({d}); was the data directory changed?"),
            )
            .map_err(|e| MarketError::Io {
                action: "cannot journal a data read in",
                path: "the run store".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        out
    }
}

/// The run's clock, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The machine's clock (live runs only; the CLI supplies it).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that never moves (tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

/// The clock decorator of one node execution: a journaled reading is read back, so a replay
/// sees the times the run saw.
#[derive(Debug)]
pub struct JournaledClock {
    inner: Arc<dyn Clock>,
    journal: Arc<Journal>,
    exec: String,
    n: AtomicU32,
}

impl JournaledClock {
    /// Wraps `inner` for node execution `exec`.
    pub fn new(inner: Arc<dyn Clock>, journal: Arc<Journal>, exec: &str) -> JournaledClock {
        JournaledClock {
            inner,
            journal,
            exec: exec.to_string(),
            n: AtomicU32::new(0),
        }
    }

    /// Now, as journaled.
    ///
    /// # Errors
    /// The journal could not be written.
    pub fn now_ms(&self) -> Result<i64, StoreError> {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        if let Some(v) = self
            .journal
            .lookup(&self.exec, Kind::Clock, n)
            .and_then(|r| r.body.as_i64())
        {
            return Ok(v);
        }
        let now = self.inner.now_ms();
        self.journal
            .append(vec![(self.exec.clone(), Kind::Clock, n, Value::from(now))])?;
        Ok(now)
    }
}

/// The memory decorator of one node execution: a read is journaled the first time and read
/// back afterwards, so a resumed or replayed run sees the memory as it was, not as later runs
/// left it.
#[derive(Debug)]
pub struct JournaledMemory {
    inner: Arc<dyn lim_tools::Memory>,
    journal: Arc<Journal>,
    exec: String,
    n: AtomicU32,
}

impl JournaledMemory {
    /// Wraps `inner` for node execution `exec`.
    pub fn new(
        inner: Arc<dyn lim_tools::Memory>,
        journal: Arc<Journal>,
        exec: &str,
    ) -> JournaledMemory {
        JournaledMemory {
            inner,
            journal,
            exec: exec.to_string(),
            n: AtomicU32::new(0),
        }
    }
}

impl lim_tools::Memory for JournaledMemory {
    fn findings(
        &self,
        datasets: &[String],
        limit: usize,
    ) -> Result<Vec<lim_tools::Finding>, String> {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        if let Some(r) = self.journal.lookup(&self.exec, Kind::Memory, n) {
            return serde_json::from_value(r.body["findings"].clone()).map_err(|e| e.to_string());
        }
        let found = self.inner.findings(datasets, limit)?;
        let body = serde_json::json!({"datasets": datasets, "limit": limit, "findings": found});
        self.journal
            .append(vec![(self.exec.clone(), Kind::Memory, n, body)])
            .map_err(|e| e.to_string())?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llm(n: u32, prompt: &str, prompt_tokens: u64) -> Record {
        let req = lim_agents::ChatRequest::new("m", vec![lim_agents::Message::user(prompt)], 10);
        Record {
            seq: u64::from(n) + 1,
            exec: "plan#1".into(),
            kind: Kind::Llm,
            n,
            body: serde_json::json!({
                "request": req,
                "outcome": {"Ok": {"usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 5}}},
            }),
        }
    }

    /// A resumed run's budget takes up what the journaled replies taught its estimate; short
    /// prompts teach nothing.
    #[test]
    fn the_prompt_scale_comes_back_from_the_journal() {
        assert_eq!(prompt_scale_in(&[]), 1.0);
        let long = "x".repeat(600); // estimated at 203 tokens
        let records = [llm(0, "hi", 900), llm(1, &long, 406), llm(2, &long, 300)];
        let scale = prompt_scale_in(&records);
        assert!((scale - 2.0).abs() < 1e-12, "{scale}");
    }
}
