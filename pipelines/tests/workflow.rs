//! Workflow building: the research workflow is valid, and each kind of broken graph is refused
//! with the offending nodes named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use lim_pipelines::{BuildError, Edge, NodeKind, WorkflowBuilder, research};

fn base() -> WorkflowBuilder {
    WorkflowBuilder::default()
        .node("start", NodeKind::Function, &[], &["goal"])
        .node("a", NodeKind::Agent, &["goal"], &["x"])
        .node("b", NodeKind::Tool, &["x"], &["y"])
        .node("end", NodeKind::Function, &["y"], &[])
        .edge("start", "a", Edge::Next)
        .edge("a", "b", Edge::Next)
        .edge("b", "end", Edge::Next)
}

#[test]
fn the_research_workflow_is_valid_and_renders() {
    let wf = research(20).unwrap();
    let order = wf.order();
    assert_eq!(order.first().map(String::as_str), Some("start"));
    assert_eq!(order.last().map(String::as_str), Some("end"));
    let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert!(
        pos("plan") < pos("generate")
            && pos("backtest") < pos("critique")
            && pos("critique") < pos("finalize")
    );
    let text = wf.to_text();
    assert!(
        text.contains("critique -> generate  [loop, at most 20 times]"),
        "{text}"
    );
    assert!(
        text.contains("data -> foundation  [if plan asks for a foundation model]"),
        "{text}"
    );
    let dot = wf.to_dot();
    assert!(
        dot.starts_with("digraph research {")
            && dot.contains("\"critique\" -> \"generate\" [label=\"≤20\", style=dashed];"),
        "{dot}"
    );
}

#[test]
fn a_forward_cycle_is_refused_naming_its_nodes() {
    let e = base().edge("b", "a", Edge::Next).build().unwrap_err();
    assert_eq!(e, BuildError::Cycle(vec!["a".into(), "b".into()]));
    assert!(
        e.to_string()
            .contains("mark the edge that closes a loop as a back edge")
    );
    // The same loop as a bounded back edge is fine.
    base()
        .edge("b", "a", Edge::Back { max_iterations: 3 })
        .build()
        .unwrap();
}

#[test]
fn unreachable_nodes_dead_ends_and_missing_inputs_are_named() {
    let e = base()
        .node("orphan", NodeKind::Tool, &[], &[])
        .edge("orphan", "end", Edge::Next)
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::Unreachable(vec!["orphan".into()]));
    let e = base()
        .node("sink", NodeKind::Tool, &["x"], &[])
        .edge("a", "sink", Edge::Next)
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::DeadEnd(vec!["sink".into()]));
    let e = base()
        .node("c", NodeKind::Tool, &["z", "x"], &[])
        .edge("a", "c", Edge::Next)
        .edge("c", "end", Edge::Next)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        BuildError::UnsatisfiedInput {
            node: "c".into(),
            missing: vec!["z".into()]
        }
    );
}

#[test]
fn malformed_edges_and_names_are_refused() {
    let e = base().edge("a", "nowhere", Edge::Next).build().unwrap_err();
    assert!(
        matches!(e, BuildError::UnknownNode { ref missing, .. } if missing == "nowhere"),
        "{e}"
    );
    let e = base()
        .node("a", NodeKind::Agent, &[], &[])
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::DuplicateNode("a".into()));
    let e = base()
        .edge("a", "b", Edge::Back { max_iterations: 2 })
        .build()
        .unwrap_err();
    assert!(
        matches!(e, BuildError::BadBackEdge { why, .. } if why.contains("earlier node")),
        "{e}"
    );
    let e = base()
        .edge("b", "a", Edge::Back { max_iterations: 0 })
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("at least 1"));
    let e = WorkflowBuilder::default()
        .node("end", NodeKind::Function, &[], &[])
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::MissingTerminal("start"));
}
