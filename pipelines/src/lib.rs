//! LIM's workflow engine and durable research runs.
//!
//! - [`workflow`]: a [`Workflow`] is a `petgraph` `StableDiGraph` of [`NodeSpec`]s joined by
//!   [`Edge`]s (`next`, `conditional` on a named router, `back` with an iteration bound),
//!   validated when built, naming the offending nodes when it is not valid.
//! - [`engine`]: the [`Executor`] runs ready nodes concurrently on tokio and merges their
//!   results in topological order, so runs are deterministic.
//! - [`journal`]: every LLM exchange, tool call, data read, clock read and node completion,
//!   recorded and read back by decorators over the traits they cross.
//! - [`store`]: runs and their journals in SQLite (WAL), one transaction per completion.
//! - [`trace`]: self-contained, scrubbed JSON-lines traces of runs, for replay anywhere.
//! - [`research`]: the research workflow's nodes, the run lifecycle (start, resume, fork,
//!   replay) and the report.

pub mod bench;
pub mod cluster;
pub mod engine;
pub mod journal;
pub mod lifecycle;
pub mod plan_check;
pub mod research;
pub mod store;
pub mod trace;
pub mod workflow;

pub use engine::{Cx, Executor, Mode, Node, NodeError, RunState};
pub use journal::{Artifacts, Divergence, Journal, Kind, Record};
pub use store::{RunMeta, Store, StoreError};
pub use workflow::{BuildError, Edge, NodeKind, NodeSpec, Workflow, WorkflowBuilder, research};
