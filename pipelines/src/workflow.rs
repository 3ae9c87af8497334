//! Workflow graphs: building, validation, rendering.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{Dfs, EdgeRef, IntoEdgeReferences, Reversed};
use serde::{Deserialize, Serialize};

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Asks an LLM (or the offline strategist) and acts on the reply.
    Agent,
    /// Calls a tool.
    Tool,
    /// A plain function.
    Function,
}

/// A node: a name, a kind, and the artifacts it consumes and produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Unique name, e.g. `plan`.
    pub name: String,
    /// What it does.
    pub kind: NodeKind,
    /// Artifacts it needs.
    pub inputs: Vec<String>,
    /// Artifacts it produces.
    pub outputs: Vec<String>,
}

/// How control passes between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Edge {
    /// Always.
    Next,
    /// When the named router over the run state says so.
    Conditional {
        /// The router's name.
        router: String,
    },
    /// Back to an earlier node, at most `max_iterations` times.
    Back {
        /// The loop bound.
        max_iterations: u32,
    },
}

/// Why a workflow is invalid; each names the nodes at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Two nodes share a name.
    #[error("two nodes are named '{0}'; names must be unique")]
    DuplicateNode(String),
    /// An edge names a node that does not exist.
    #[error("edge {from} -> {to}: no node named '{missing}'")]
    UnknownNode {
        /// Edge source.
        from: String,
        /// Edge target.
        to: String,
        /// The name not found.
        missing: String,
    },
    /// The start or end node is missing.
    #[error("the workflow has no node named '{0}' (it needs a 'start' and an 'end')")]
    MissingTerminal(&'static str),
    /// Forward edges form a cycle; loops must use back edges.
    #[error(
        "the forward edges form a cycle through {0:?}; mark the edge that closes a loop as a back edge with an iteration bound"
    )]
    Cycle(Vec<String>),
    /// Nodes the start cannot reach.
    #[error("unreachable from 'start': {0:?}")]
    Unreachable(Vec<String>),
    /// Nodes from which the end cannot be reached.
    #[error("'end' cannot be reached from {0:?}")]
    DeadEnd(Vec<String>),
    /// Inputs no upstream node produces.
    #[error("node '{node}' needs {missing:?}, which no node before it produces")]
    UnsatisfiedInput {
        /// The node.
        node: String,
        /// The missing artifacts.
        missing: Vec<String>,
    },
    /// A back edge without a bound or going forward.
    #[error("back edge {from} -> {to}: {why}")]
    BadBackEdge {
        /// Edge source.
        from: String,
        /// Edge target.
        to: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// A validated workflow.
#[derive(Debug, Clone)]
pub struct Workflow {
    graph: StableDiGraph<NodeSpec, Edge>,
    names: BTreeMap<String, NodeIndex>,
    /// Each node's place in [`Workflow::order`], computed once when built.
    rank: BTreeMap<NodeIndex, usize>,
}

/// Collects nodes and edges, then validates them.
#[derive(Debug, Default, Clone)]
pub struct WorkflowBuilder {
    nodes: Vec<NodeSpec>,
    edges: Vec<(String, String, Edge)>,
}

impl WorkflowBuilder {
    /// Adds a node.
    pub fn node(
        mut self,
        name: &str,
        kind: NodeKind,
        inputs: &[&str],
        outputs: &[&str],
    ) -> WorkflowBuilder {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        self.nodes.push(NodeSpec {
            name: name.into(),
            kind,
            inputs: v(inputs),
            outputs: v(outputs),
        });
        self
    }

    /// Adds an edge.
    pub fn edge(mut self, from: &str, to: &str, edge: Edge) -> WorkflowBuilder {
        self.edges.push((from.into(), to.into(), edge));
        self
    }

    /// Builds and validates.
    ///
    /// # Errors
    /// The first problem found, naming the nodes at fault.
    pub fn build(self) -> Result<Workflow, BuildError> {
        let mut graph = StableDiGraph::new();
        let mut names = BTreeMap::new();
        for n in self.nodes {
            if names.contains_key(&n.name) {
                return Err(BuildError::DuplicateNode(n.name));
            }
            let name = n.name.clone();
            names.insert(name, graph.add_node(n));
        }
        for (from, to, e) in self.edges {
            let (Some(&a), Some(&b)) = (names.get(&from), names.get(&to)) else {
                let missing = if names.contains_key(&from) {
                    to.clone()
                } else {
                    from.clone()
                };
                return Err(BuildError::UnknownNode { from, to, missing });
            };
            if let Edge::Back { max_iterations: 0 } = e {
                return Err(BuildError::BadBackEdge {
                    from,
                    to,
                    why: "a loop needs max_iterations of at least 1",
                });
            }
            graph.add_edge(a, b, e);
        }
        let mut wf = Workflow {
            graph,
            names,
            rank: BTreeMap::new(),
        };
        wf.validate()?;
        wf.rank = wf
            .order()
            .iter()
            .enumerate()
            .map(|(k, n)| (wf.names[n], k))
            .collect();
        Ok(wf)
    }
}

impl Workflow {
    fn idx(&self, name: &'static str) -> Result<NodeIndex, BuildError> {
        self.names
            .get(name)
            .copied()
            .ok_or(BuildError::MissingTerminal(name))
    }

    fn name(&self, i: NodeIndex) -> String {
        self.graph[i].name.clone()
    }

    /// The graph without its back edges (node indices are kept: the graph is stable).
    fn forward(&self) -> StableDiGraph<NodeSpec, Edge> {
        let mut g = self.graph.clone();
        g.retain_edges(|g, e| !matches!(g[e], Edge::Back { .. }));
        g
    }

    fn validate(&self) -> Result<(), BuildError> {
        let (start, end) = (self.idx("start")?, self.idx("end")?);
        // Forward edges acyclic.
        let fwd = self.forward();
        let order = petgraph::algo::toposort(&fwd, None).map_err(|c| {
            let mut cyc: Vec<String> = petgraph::algo::tarjan_scc(&fwd)
                .into_iter()
                .find(|scc| scc.len() > 1 && scc.contains(&c.node_id()))
                .unwrap_or_else(|| vec![c.node_id()])
                .into_iter()
                .map(|i| self.name(i))
                .collect();
            cyc.sort();
            BuildError::Cycle(cyc)
        })?;
        // Back edges must point backwards in the forward order.
        let pos: BTreeMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(k, i)| (*i, k)).collect();
        for e in (&self.graph).edge_references() {
            if let Edge::Back { .. } = e.weight()
                && pos.get(&e.target()) >= pos.get(&e.source())
            {
                return Err(BuildError::BadBackEdge {
                    from: self.name(e.source()),
                    to: self.name(e.target()),
                    why: "a back edge must return to an earlier node",
                });
            }
        }
        // Reachability from start, over every edge.
        let mut seen = BTreeSet::new();
        let mut dfs = Dfs::new(&self.graph, start);
        while let Some(n) = dfs.next(&self.graph) {
            seen.insert(n);
        }
        let unreachable: Vec<String> = self
            .graph
            .node_indices()
            .filter(|n| !seen.contains(n))
            .map(|n| self.name(n))
            .collect();
        if !unreachable.is_empty() {
            return Err(BuildError::Unreachable(unreachable));
        }
        // The end reachable from every node.
        let rev = Reversed(&self.graph);
        let mut back = BTreeSet::new();
        let mut dfs = Dfs::new(rev, end);
        while let Some(n) = dfs.next(rev) {
            back.insert(n);
        }
        let dead: Vec<String> = self
            .graph
            .node_indices()
            .filter(|n| !back.contains(n))
            .map(|n| self.name(n))
            .collect();
        if !dead.is_empty() {
            return Err(BuildError::DeadEnd(dead));
        }
        // Every input produced by some node before it on every forward path: checked as
        // "produced by an ancestor over forward edges".
        for &n in &order {
            let mut produced = BTreeSet::new();
            let rev = Reversed(&fwd);
            let mut dfs = Dfs::new(rev, n);
            while let Some(a) = dfs.next(rev) {
                if a != n {
                    produced.extend(self.graph[a].outputs.iter().cloned());
                }
            }
            let missing: Vec<String> = self.graph[n]
                .inputs
                .iter()
                .filter(|i| !produced.contains(*i))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(BuildError::UnsatisfiedInput {
                    node: self.name(n),
                    missing,
                });
            }
        }
        Ok(())
    }

    /// The name of node `i`.
    pub fn name_of(&self, i: NodeIndex) -> String {
        self.name(i)
    }

    /// The index of node `name` (`start` and `end` always exist in a built workflow).
    pub fn index_of(&self, name: &str) -> NodeIndex {
        self.names
            .get(name)
            .copied()
            .unwrap_or_else(|| NodeIndex::new(usize::MAX))
    }

    /// The artifacts node `i` requires.
    pub fn inputs_of(&self, i: NodeIndex) -> Vec<String> {
        self.graph[i].inputs.clone()
    }

    /// Every edge as (from, to, edge), in a deterministic order.
    pub fn edges(&self) -> Vec<(String, String, Edge)> {
        self.edges_sorted()
    }

    /// Node `i`'s place in the topological order ([`Workflow::order`]).
    pub fn position(&self, i: NodeIndex) -> usize {
        self.rank.get(&i).copied().unwrap_or(usize::MAX)
    }

    /// The edges out of `i` with their targets, targets in topological order.
    pub fn edges_from(&self, i: NodeIndex) -> Vec<(NodeIndex, Edge)> {
        let mut v: Vec<(NodeIndex, Edge)> = self
            .graph
            .edges(i)
            .map(|e| (e.target(), e.weight().clone()))
            .collect();
        v.sort_by_key(|(t, _)| self.position(*t));
        v
    }

    /// Pairs (a, b) with b reachable from a over one or more forward edges.
    pub fn forward_reachability(&self) -> BTreeSet<(NodeIndex, NodeIndex)> {
        let fwd = self.forward();
        let mut out = BTreeSet::new();
        for a in fwd.node_indices() {
            let mut dfs = Dfs::new(&fwd, a);
            while let Some(b) = dfs.next(&fwd) {
                if b != a {
                    out.insert((a, b));
                }
            }
        }
        out
    }

    /// Node names in a forward topological order (ties by name: deterministic).
    pub fn order(&self) -> Vec<String> {
        let fwd = self.forward();
        let mut indeg: BTreeMap<NodeIndex, usize> =
            self.graph.node_indices().map(|n| (n, 0)).collect();
        for e in (&fwd).edge_references() {
            *indeg.entry(e.target()).or_default() += 1;
        }
        let mut ready: BTreeSet<(String, NodeIndex)> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| (self.name(*n), *n))
            .collect();
        let mut out = Vec::new();
        while let Some(first) = ready.iter().next().cloned() {
            ready.remove(&first);
            out.push(first.0.clone());
            for m in fwd.neighbors_directed(first.1, Direction::Outgoing) {
                if let Some(d) = indeg.get_mut(&m) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert((self.name(m), m));
                    }
                }
            }
        }
        out
    }

    fn edges_sorted(&self) -> Vec<(String, String, Edge)> {
        let mut v: Vec<(String, String, Edge)> = (&self.graph)
            .edge_references()
            .map(|e| {
                (
                    self.name(e.source()),
                    self.name(e.target()),
                    e.weight().clone(),
                )
            })
            .collect();
        let order = self.order();
        let pos = |n: &str| order.iter().position(|o| o == n).unwrap_or(usize::MAX);
        v.sort_by_key(|e| (pos(&e.0), pos(&e.1)));
        v
    }

    /// A plain-text rendering: nodes in order with their artifacts, then the edges.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for name in self.order() {
            let n = &self.graph[self.names[&name]];
            let line = format!(
                "{:<10} {:<8} in: {:<28} out: {}",
                n.name,
                format!("{:?}", n.kind).to_lowercase(),
                n.inputs.join(", "),
                n.outputs.join(", ")
            );
            let _ = writeln!(s, "{}", line.trim_end());
        }
        s.push('\n');
        for (a, b, e) in self.edges_sorted() {
            let label = match e {
                Edge::Next => String::new(),
                Edge::Conditional { router } => format!("  [if {router}]"),
                Edge::Back { max_iterations } => {
                    format!("  [loop, at most {max_iterations} times]")
                }
            };
            let _ = writeln!(s, "{a} -> {b}{label}");
        }
        s
    }

    /// The graph as data: nodes in order (name, kind, inputs, outputs), then the edges
    /// (`from`, `to`, and the edge's `kind` with its router or loop bound).
    pub fn to_json(&self) -> serde_json::Value {
        let nodes: Vec<&NodeSpec> = self
            .order()
            .iter()
            .map(|name| &self.graph[self.names[name]])
            .collect();
        let edges: Vec<serde_json::Value> = self
            .edges_sorted()
            .into_iter()
            .map(|(from, to, edge)| {
                let mut e = serde_json::json!({"from": from, "to": to});
                if let (Some(e), Ok(serde_json::Value::Object(kind))) =
                    (e.as_object_mut(), serde_json::to_value(&edge))
                {
                    e.extend(kind);
                }
                e
            })
            .collect();
        serde_json::json!({"nodes": nodes, "edges": edges})
    }

    /// A Graphviz DOT rendering.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph research {\n  rankdir=LR;\n");
        for name in self.order() {
            let n = &self.graph[self.names[&name]];
            let shape = match n.kind {
                NodeKind::Agent => "ellipse",
                NodeKind::Tool => "box",
                NodeKind::Function => "diamond",
            };
            let _ = writeln!(s, "  \"{}\" [shape={shape}];", n.name);
        }
        for (a, b, e) in self.edges_sorted() {
            let attrs = match e {
                Edge::Next => String::new(),
                Edge::Conditional { router } => format!(" [label=\"{router}\"]"),
                Edge::Back { max_iterations } => {
                    format!(" [label=\"≤{max_iterations}\", style=dashed]")
                }
            };
            let _ = writeln!(s, "  \"{a}\" -> \"{b}\"{attrs};");
        }
        s.push_str("}\n");
        s
    }
}

/// The research workflow: plan, data, optional foundation model, then the strategy loop
/// (generate, backtest, critique) until a budget or convergence, then the sealed test of the
/// finalists with multiple-testing statistics over every trial, then the report.
///
/// # Errors
/// Never for this fixed graph; the signature keeps the builder's checks honest.
pub fn research(max_iterations: u32) -> Result<Workflow, BuildError> {
    use Edge::{Back, Conditional, Next};
    use NodeKind::{Agent, Function, Tool};
    WorkflowBuilder::default()
        .node("start", Function, &[], &["goal", "started_ms"])
        .node("plan", Agent, &["goal"], &["plan", "notes"])
        .node("data", Tool, &["plan"], &["universe"])
        .node("foundation", Tool, &["plan", "universe"], &["foundation"])
        .node("generate", Agent, &["plan", "universe"], &["candidates"])
        .node(
            "backtest",
            Tool,
            &["plan", "candidates", "universe"],
            &["trials"],
        )
        .node(
            "critique",
            Agent,
            &["trials", "candidates", "started_ms"],
            &["hypotheses", "lineage"],
        )
        .node(
            "finalize",
            Tool,
            &["plan", "trials"],
            &["ranking", "finalists", "test_results", "deflated"],
        )
        .node(
            "report",
            Function,
            &["plan", "finalists", "test_results", "deflated"],
            &["report", "summary"],
        )
        .node("end", Function, &["report"], &[])
        .edge("start", "plan", Next)
        .edge("plan", "data", Next)
        .edge(
            "data",
            "foundation",
            Conditional {
                router: "plan asks for a foundation model".into(),
            },
        )
        .edge(
            "data",
            "generate",
            Conditional {
                router: "no foundation model".into(),
            },
        )
        .edge("foundation", "generate", Next)
        .edge("generate", "backtest", Next)
        .edge("backtest", "critique", Next)
        .edge("critique", "generate", Back { max_iterations })
        .edge(
            "critique",
            "finalize",
            Conditional {
                router: "budget spent or converged".into(),
            },
        )
        .edge("finalize", "report", Next)
        .edge("report", "end", Next)
        .build()
}
