//! LIM's workflow engine.
//!
//! A [`Workflow`] is a `petgraph` `StableDiGraph` of [`NodeSpec`]s joined by [`Edge`]s: `next`,
//! `conditional` (taken when a named router over the run state says so) and `back` (a loop
//! edge with an iteration bound). [`WorkflowBuilder::build`] validates the graph before anything
//! runs (forward edges acyclic, every node reachable from the start, the end reachable from
//! every node, every input produced upstream) and names the offending nodes when it fails.
//! [`research`] is the research workflow `lim workflow show` prints. The executor and the run
//! store come next.

pub mod workflow;

pub use workflow::{BuildError, Edge, NodeKind, NodeSpec, Workflow, WorkflowBuilder, research};
