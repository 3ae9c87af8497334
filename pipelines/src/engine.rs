//! The executor: runs a [`Workflow`]'s nodes on tokio, journaling each completion.
//!
//! Scheduling is by rounds. A node is *pending* once an edge into it is taken, and *ready*
//! when no other pending node can still reach it over forward edges (so a join waits for
//! every branch that is still going to run). The ready nodes of a round run concurrently
//! (a [`tokio::task::JoinSet`] bounded by a semaphore, each under a timeout), and their
//! results are merged in the workflow's topological order: the same inputs give the same run
//! whatever finishes first. Edges are then evaluated node by node in that order.
//!
//! With a journal that already holds a node execution's completion, [`Mode::Resume`] takes
//! its outputs instead of running it (completed nodes are never re-run); [`Mode::Replay`] runs
//! it again and requires the same outputs, or fails with the [`Divergence`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::stable_graph::NodeIndex;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::journal::{Artifacts, Divergence, Journal, Kind};
use crate::store::StoreError;
use crate::workflow::{Edge, Workflow};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A declared input is missing or has the wrong shape.
    #[error("input '{name}': {why}")]
    Input {
        /// The artifact.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The journal or the run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An agent could not run (a prompt failed to render, a tool call could not be journaled).
    #[error(transparent)]
    Agent(#[from] lim_agents::agent::AgentError),
    /// The market data could not be read.
    #[error(transparent)]
    Market(#[from] lim_market::MarketError),
    /// An artifact could not be written or read as JSON.
    #[error("an artifact's JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A tool the node relies on failed; `message` is the tool's own.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The tool.
        tool: String,
        /// Why.
        message: String,
    },
    /// State the node needs is not there (`what` says which and why).
    #[error("{0}")]
    Missing(String),
    /// The node's work panicked or was cancelled on its thread.
    #[error("the node's work stopped: {0}")]
    Task(String),
}

/// What a node execution gets: its identity, the run's artifacts, the journal and a seed.
#[derive(Debug, Clone)]
pub struct Cx {
    /// The node's name.
    pub node: String,
    /// Which visit of the node this is, from 1 (loops visit nodes again).
    pub visit: u32,
    /// `node#visit`: the key of everything this execution journals.
    pub exec: String,
    /// Every artifact produced so far (the latest value of each).
    pub artifacts: Artifacts,
    /// The run's journal.
    pub journal: Arc<Journal>,
    /// A seed for this execution, derived from the run's seed and `exec`.
    pub seed: u64,
    /// Node executions completed before this one, in order.
    pub completed: Arc<[String]>,
}

impl Cx {
    /// LLM spend up to now in this run: the calls of completed node executions and this
    /// one's so far (a replay's journal holds later calls too; they do not count yet).
    pub fn spent(&self, budget: &lim_agents::client::Budget) -> lim_agents::client::Spent {
        self.journal.spent_where(budget, |e| {
            e == self.exec || self.completed.iter().any(|c| c == e)
        })
    }
}

impl Cx {
    /// A required artifact, typed.
    ///
    /// # Errors
    /// It is missing or does not deserialize.
    pub fn input<T: DeserializeOwned>(&self, name: &str) -> Result<T, NodeError> {
        let v = self.artifacts.get(name).ok_or_else(|| NodeError::Input {
            name: name.into(),
            why: "missing".into(),
        })?;
        serde_json::from_value(v.clone()).map_err(|e| NodeError::Input {
            name: name.into(),
            why: e.to_string(),
        })
    }

    /// An artifact that may not exist yet (e.g. one produced later in a loop).
    ///
    /// # Errors
    /// It exists and does not deserialize.
    pub fn optional<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, NodeError> {
        match self.artifacts.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.input(name).map(Some),
        }
    }
}

/// What a node does. Implementations journal everything they ask of the outside world
/// through the decorators in [`crate::journal`].
pub trait Node: Send + Sync {
    /// Runs the node.
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>>;

    /// Re-establishes in-memory state after a completion was read back from the journal
    /// instead of run (e.g. a loaded universe). Most nodes have none.
    fn restore(&self, _cx: Cx, _outputs: &Artifacts) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async { Ok(()) })
    }

    /// How long the node may take.
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

/// Where node executions run: in this process by default; a distributed backend would take
/// the heavy ones elsewhere without touching workflow code.
pub trait Runner: Send + Sync {
    /// Runs `node` with `cx`.
    fn run(&self, node: Arc<dyn Node>, cx: Cx) -> BoxFuture<'static, Result<Artifacts, NodeError>>;
}

/// Runs nodes on the local tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalRunner;

impl Runner for LocalRunner {
    fn run(&self, node: Arc<dyn Node>, cx: Cx) -> BoxFuture<'static, Result<Artifacts, NodeError>> {
        Box::pin(async move { node.run(cx).await })
    }
}

/// A router: decides whether a conditional edge is taken.
pub type Router = Arc<dyn Fn(&RunState) -> bool + Send + Sync>;

/// The state routers see.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    /// The latest value of every artifact.
    pub artifacts: Artifacts,
    /// Completed visits per node.
    pub visits: BTreeMap<String, u32>,
    /// Times each back edge (`from->to`) was taken.
    pub loops: BTreeMap<String, u32>,
    /// Set when a back edge's bound stopped a loop.
    pub exhausted: bool,
    /// Node executions in completion order.
    pub completed: Vec<String>,
}

/// How to treat completions already in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Take them instead of running the node.
    Resume,
    /// Run the node again and require the same outputs.
    Replay,
}

/// A progress report, sent as each node execution completes.
#[derive(Debug)]
pub struct Progress<'a> {
    /// `node#visit`.
    pub exec: &'a str,
    /// Its outputs.
    pub outputs: &'a Artifacts,
    /// Whether they were read back from the journal.
    pub restored: bool,
    /// Wall time it took (zero when restored).
    pub elapsed: Duration,
}

/// Why a run stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The workflow names a node or router that has no implementation.
    #[error("the workflow needs {what} '{name}', which was not supplied")]
    Missing {
        /// "node" or "router".
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A node failed.
    #[error("node '{exec}' failed: {error}")]
    Node {
        /// The node execution.
        exec: String,
        /// The error.
        error: NodeError,
    },
    /// A node took too long.
    #[error("node '{exec}' timed out after {limit:?}")]
    Timeout {
        /// The node execution.
        exec: String,
        /// The limit.
        limit: Duration,
    },
    /// A node has no edge to take.
    #[error("node '{0}' completed but none of its edges applies; check its routers")]
    Stuck(String),
    /// The run did not repeat itself.
    #[error(transparent)]
    Divergence(#[from] Divergence),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The journal could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs a workflow.
pub struct Executor {
    workflow: Workflow,
    nodes: BTreeMap<String, Arc<dyn Node>>,
    routers: BTreeMap<String, Router>,
    runner: Arc<dyn Runner>,
    parallelism: usize,
    default_timeout: Duration,
    seed: u64,
    cancel: Arc<Notify>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("nodes", &self.nodes.keys())
            .field("routers", &self.routers.keys())
            .field("parallelism", &self.parallelism)
            .finish()
    }
}

/// The seed of a node execution: the run's seed mixed with its key.
pub fn exec_seed(seed: u64, exec: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(exec.as_bytes(), seed)
}

impl Executor {
    /// An executor for `workflow`.
    pub fn new(workflow: Workflow, seed: u64) -> Executor {
        Executor {
            workflow,
            nodes: BTreeMap::new(),
            routers: BTreeMap::new(),
            runner: Arc::new(LocalRunner),
            parallelism: 4,
            default_timeout: Duration::from_secs(6 * 3600),
            seed,
            cancel: Arc::new(Notify::new()),
        }
    }

    /// Supplies the implementation of node `name`.
    pub fn node(mut self, name: &str, node: impl Node + 'static) -> Executor {
        self.nodes.insert(name.into(), Arc::new(node));
        self
    }

    /// Supplies router `name`.
    pub fn router(
        mut self,
        name: &str,
        f: impl Fn(&RunState) -> bool + Send + Sync + 'static,
    ) -> Executor {
        self.routers.insert(name.into(), Arc::new(f));
        self
    }

    /// Runs nodes elsewhere.
    pub fn runner(mut self, runner: Arc<dyn Runner>) -> Executor {
        self.runner = runner;
        self
    }

    /// At most `n` nodes at once.
    pub fn parallelism(mut self, n: usize) -> Executor {
        self.parallelism = n.max(1);
        self
    }

    /// The timeout of nodes that set none.
    pub fn default_timeout(mut self, d: Duration) -> Executor {
        self.default_timeout = d;
        self
    }

    /// A handle that cancels the run: `notify_one` stops it between or during nodes.
    pub fn cancel_handle(&self) -> Arc<Notify> {
        self.cancel.clone()
    }

    fn check(&self) -> Result<(), EngineError> {
        for name in self.workflow.order() {
            if !self.nodes.contains_key(&name) {
                return Err(EngineError::Missing { what: "node", name });
            }
        }
        for (_, _, e) in self.workflow.edges() {
            if let Edge::Conditional { router } = e
                && !self.routers.contains_key(&router)
            {
                return Err(EngineError::Missing {
                    what: "router",
                    name: router,
                });
            }
        }
        Ok(())
    }

    /// Runs the workflow from `start` to `end` with `initial` artifacts.
    ///
    /// # Errors
    /// A node failed or timed out, the run diverged from its journal, it was cancelled, or
    /// the journal could not be written. Completed nodes stay journaled: resume continues.
    pub async fn run(
        &self,
        journal: Arc<Journal>,
        initial: Artifacts,
        mode: Mode,
        mut progress: impl FnMut(&Progress<'_>),
    ) -> Result<RunState, EngineError> {
        self.check()?;
        let wf = &self.workflow;
        let reach = wf.forward_reachability();
        let mut state = RunState {
            artifacts: initial,
            ..RunState::default()
        };
        let mut pending: BTreeSet<NodeIndex> = BTreeSet::from([wf.index_of("start")]);
        let semaphore = Arc::new(Semaphore::new(self.parallelism));
        while !pending.is_empty() {
            let mut ready: Vec<NodeIndex> = pending
                .iter()
                .copied()
                .filter(|&n| !pending.iter().any(|&m| m != n && reach.contains(&(m, n))))
                .collect();
            ready.sort_by_key(|&i| wf.position(i));
            let completed: Arc<[String]> = state.completed.clone().into();
            let mut set = JoinSet::new();
            let mut results: BTreeMap<
                usize,
                (String, Result<Artifacts, EngineError>, bool, Duration),
            > = BTreeMap::new();
            for (k, &i) in ready.iter().enumerate() {
                let name = wf.name_of(i);
                let visit = state.visits.get(&name).copied().unwrap_or(0) + 1;
                let exec = format!("{name}#{visit}");
                let node = self.nodes[&name].clone();
                for input in wf.inputs_of(i) {
                    if !state.artifacts.contains_key(&input) {
                        return Err(EngineError::Node {
                            exec,
                            error: NodeError::Input {
                                name: input,
                                why: "no node has produced it yet".into(),
                            },
                        });
                    }
                }
                let cx = Cx {
                    node: name.clone(),
                    visit,
                    exec: exec.clone(),
                    artifacts: state.artifacts.clone(),
                    journal: journal.clone(),
                    seed: exec_seed(self.seed, &exec),
                    completed: completed.clone(),
                };
                if mode == Mode::Resume
                    && let Some(outputs) = journal.completion(&exec)
                {
                    node.restore(cx, &outputs)
                        .await
                        .map_err(|error| EngineError::Node {
                            exec: exec.clone(),
                            error,
                        })?;
                    results.insert(k, (exec, Ok(outputs), true, Duration::ZERO));
                    continue;
                }
                let limit = node.timeout().unwrap_or(self.default_timeout);
                let fut = self.runner.run(node, cx);
                let sem = semaphore.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let t0 = Instant::now();
                    let out = match tokio::time::timeout(limit, fut).await {
                        Ok(Ok(a)) => Ok(a),
                        Ok(Err(error)) => Err(EngineError::Node {
                            exec: exec.clone(),
                            error,
                        }),
                        Err(_) => Err(EngineError::Timeout {
                            exec: exec.clone(),
                            limit,
                        }),
                    };
                    (k, exec, out, t0.elapsed())
                });
            }
            loop {
                let next = tokio::select! {
                    n = set.join_next() => n,
                    () = self.cancel.notified() => {
                        set.abort_all();
                        return Err(EngineError::Cancelled);
                    }
                };
                let Some(joined) = next else { break };
                match joined {
                    Ok((k, exec, out, dt)) => {
                        if out.is_err() {
                            // Fail fast: the others' work is lost, not their journaled calls.
                            set.abort_all();
                        }
                        results.insert(k, (exec, out, false, dt));
                    }
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => {
                        return Err(EngineError::Node {
                            exec: "?".into(),
                            error: NodeError::Task(format!("a node task panicked: {e}")),
                        });
                    }
                }
            }
            // Merge in topological order.
            let mut done = Vec::new();
            for (k, (exec, out, restored, elapsed)) in results {
                let outputs = out?;
                if let Some(d) = journal.divergence() {
                    return Err(d.into());
                }
                let i = ready[k];
                let name = wf.name_of(i);
                let outputs = if restored {
                    outputs
                } else {
                    // Outputs go through text, as the journal holds them, so that a run and its
                    // resumption see the same values.
                    let text = serde_json::json!({"node": name, "outputs": outputs}).to_string();
                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let outputs = body
                        .get("outputs")
                        .cloned()
                        .and_then(|o| serde_json::from_value(o).ok())
                        .unwrap_or(outputs);
                    journal.check_or_record(
                        &exec,
                        Kind::Node,
                        0,
                        body,
                        || "outputs".into(),
                        |d| d,
                    )?;
                    if let Some(d) = journal.divergence() {
                        return Err(d.into());
                    }
                    outputs
                };
                progress(&Progress {
                    exec: &exec,
                    outputs: &outputs,
                    restored,
                    elapsed,
                });
                for (k, v) in &outputs {
                    state.artifacts.insert(k.clone(), v.clone());
                }
                *state.visits.entry(name).or_default() += 1;
                state.completed.push(exec);
                pending.remove(&i);
                done.push(i);
            }
            for i in done {
                let took = self.follow(i, &mut state, &mut pending)?;
                if !took && wf.name_of(i) != "end" {
                    return Err(EngineError::Stuck(wf.name_of(i)));
                }
            }
        }
        Ok(state)
    }

    /// Takes the edges out of `i`; returns whether any was taken.
    fn follow(
        &self,
        i: NodeIndex,
        state: &mut RunState,
        pending: &mut BTreeSet<NodeIndex>,
    ) -> Result<bool, EngineError> {
        let wf = &self.workflow;
        let edges = wf.edges_from(i);
        let mut took = false;
        let conditional = |state: &RunState, pending: &mut BTreeSet<NodeIndex>| {
            let mut any = false;
            for (to, e) in &edges {
                if let Edge::Conditional { router } = e
                    && self.routers.get(router).is_some_and(|r| r(state))
                {
                    pending.insert(*to);
                    any = true;
                }
            }
            any
        };
        let took_conditional = conditional(state, pending);
        took |= took_conditional;
        for (to, e) in &edges {
            if matches!(e, Edge::Next) {
                pending.insert(*to);
                took = true;
            }
        }
        if !took_conditional {
            for (to, e) in &edges {
                if let Edge::Back { max_iterations } = e {
                    let key = format!("{}->{}", wf.name_of(i), wf.name_of(*to));
                    let n = state.loops.entry(key).or_default();
                    if *n < *max_iterations {
                        *n += 1;
                        pending.insert(*to);
                        took = true;
                    } else {
                        state.exhausted = true;
                        took |= conditional(state, pending);
                    }
                }
            }
        }
        Ok(took)
    }
}
