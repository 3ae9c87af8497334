#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
//! The executor: concurrency, deterministic merging, loops, timeouts, resume and replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lim_pipelines::engine::{BoxFuture, EngineError, Mode};
use lim_pipelines::journal::{Journal, MemorySink};
use lim_pipelines::{Artifacts, Cx, Edge, Executor, Node, NodeError, NodeKind, WorkflowBuilder};
use serde_json::{Value, json};

/// A node that waits, counts its runs and writes `value` to `artifact`.
struct Emit {
    artifact: &'static str,
    value: Value,
    delay_ms: u64,
    runs: Arc<AtomicU32>,
    barrier: Option<Arc<tokio::sync::Barrier>>,
    fail_first: bool,
}

impl Emit {
    fn new(artifact: &'static str, value: Value) -> Emit {
        Emit {
            artifact,
            value,
            delay_ms: 0,
            runs: Arc::new(AtomicU32::new(0)),
            barrier: None,
            fail_first: false,
        }
    }
}

impl Node for Emit {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let n = self.runs.fetch_add(1, Ordering::SeqCst);
            if let Some(b) = &self.barrier {
                b.wait().await;
            }
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            if self.fail_first && n == 0 {
                return Err(NodeError::Missing("flaky".into()));
            }
            let mut out = Artifacts::new();
            out.insert(self.artifact.into(), self.value.clone());
            out.insert("visit".into(), json!(format!("{}", cx.exec)));
            Ok(out)
        })
    }
}

fn diamond() -> lim_pipelines::Workflow {
    use NodeKind::Function;
    WorkflowBuilder::default()
        .node("start", Function, &[], &[])
        .node("a", Function, &[], &["x"])
        .node("b", Function, &[], &["x"])
        .node("join", Function, &["x"], &["y"])
        .node("end", Function, &[], &[])
        .edge("start", "a", Edge::Next)
        .edge("start", "b", Edge::Next)
        .edge("a", "join", Edge::Next)
        .edge("b", "join", Edge::Next)
        .edge("join", "end", Edge::Next)
        .build()
        .unwrap()
}

fn journal() -> Arc<Journal> {
    Arc::new(Journal::new(Vec::new(), Arc::new(MemorySink::default())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_nodes_run_together_and_merge_in_topological_order() {
    // Both branches must meet at a barrier: if they ran one after the other, the run would
    // hang and time out. 'b' finishes first, but 'x' must hold 'b's value only because 'b'
    // comes after 'a' in topological order (names break ties), not because of timing.
    for (da, db) in [(50, 0), (0, 50)] {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let a = Emit {
            delay_ms: da,
            barrier: Some(barrier.clone()),
            ..Emit::new("x", json!("from a"))
        };
        let b = Emit {
            delay_ms: db,
            barrier: Some(barrier),
            ..Emit::new("x", json!("from b"))
        };
        let exec = Executor::new(diamond(), 1)
            .node("start", Emit::new("s", json!(1)))
            .node("a", a)
            .node("b", b)
            .node("join", Emit::new("y", json!(2)))
            .node("end", Emit::new("e", json!(3)))
            .default_timeout(Duration::from_secs(5));
        let state = exec
            .run(journal(), Artifacts::new(), Mode::Resume, |_| {})
            .await
            .unwrap();
        assert_eq!(state.artifacts["x"], json!("from b"));
        assert_eq!(
            state.completed,
            ["start#1", "a#1", "b#1", "join#1", "end#1"]
        );
    }
}

#[tokio::test]
async fn parallelism_one_serialises_and_a_slow_node_times_out_by_name() {
    let slow = Emit {
        delay_ms: 500,
        ..Emit::new("x", json!(1))
    };
    let exec = Executor::new(diamond(), 1)
        .node("start", Emit::new("s", json!(1)))
        .node("a", slow)
        .node("b", Emit::new("x", json!(2)))
        .node("join", Emit::new("y", json!(2)))
        .node("end", Emit::new("e", json!(3)))
        .parallelism(1)
        .default_timeout(Duration::from_millis(100));
    let err = exec
        .run(journal(), Artifacts::new(), Mode::Resume, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Timeout { exec, .. } if exec == "a#1"),
        "{err}"
    );
}

fn looped(max: u32) -> lim_pipelines::Workflow {
    use NodeKind::Function;
    WorkflowBuilder::default()
        .node("start", Function, &[], &[])
        .node("work", Function, &[], &["w"])
        .node("check", Function, &["w"], &["c"])
        .node("end", Function, &[], &[])
        .edge("start", "work", Edge::Next)
        .edge("work", "check", Edge::Next)
        .edge(
            "check",
            "work",
            Edge::Back {
                max_iterations: max,
            },
        )
        .edge(
            "check",
            "end",
            Edge::Conditional {
                router: "done".into(),
            },
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_loop_stops_at_its_router_or_its_bound() {
    // The router stops at the third check; the bound (10) is not reached.
    let exec = Executor::new(looped(10), 1)
        .node("start", Emit::new("s", json!(1)))
        .node("work", Emit::new("w", json!(1)))
        .node("check", Emit::new("c", json!(1)))
        .node("end", Emit::new("e", json!(1)))
        .router("done", |s| s.visits.get("check").copied() >= Some(3));
    let s = exec
        .run(journal(), Artifacts::new(), Mode::Resume, |_| {})
        .await
        .unwrap();
    assert_eq!(s.visits["work"], 3);
    assert!(!s.exhausted);
    // A router that never says done: the bound ends the loop after 1 + 4 visits.
    let exec = Executor::new(looped(4), 1)
        .node("start", Emit::new("s", json!(1)))
        .node("work", Emit::new("w", json!(1)))
        .node("check", Emit::new("c", json!(1)))
        .node("end", Emit::new("e", json!(1)))
        .router("done", |s| s.exhausted);
    let s = exec
        .run(journal(), Artifacts::new(), Mode::Resume, |_| {})
        .await
        .unwrap();
    assert_eq!((s.visits["work"], s.exhausted), (5, true));
    assert_eq!(s.completed.last().map(String::as_str), Some("end#1"));
}

#[tokio::test]
async fn missing_implementations_are_named() {
    let exec = Executor::new(looped(2), 1)
        .node("start", Emit::new("s", json!(1)))
        .node("work", Emit::new("w", json!(1)))
        .node("check", Emit::new("c", json!(1)))
        .node("end", Emit::new("e", json!(1)));
    let err = exec
        .run(journal(), Artifacts::new(), Mode::Resume, |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the workflow needs router 'done', which was not supplied"
    );
}

#[tokio::test]
async fn resume_skips_completed_nodes_and_replay_catches_a_changed_output() {
    let j = journal();
    let work = Emit {
        fail_first: false,
        ..Emit::new("w", json!(1))
    };
    let work_runs = work.runs.clone();
    let check = Emit {
        fail_first: true,
        ..Emit::new("c", json!(1))
    };
    let check_runs = check.runs.clone();
    let exec = Executor::new(looped(3), 7)
        .node("start", Emit::new("s", json!(1)))
        .node("work", work)
        .node("check", check)
        .node("end", Emit::new("e", json!(1)))
        .router("done", |s| s.exhausted);
    let err = exec
        .run(j.clone(), Artifacts::new(), Mode::Resume, |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("node 'check#1' failed: flaky"),
        "{err}"
    );
    assert_eq!(work_runs.load(Ordering::SeqCst), 1);
    // Resume with the same journal: 'work#1' is read back, not run again.
    let mut restored = Vec::new();
    let s = exec
        .run(j.clone(), Artifacts::new(), Mode::Resume, |p| {
            if p.restored {
                restored.push(p.exec.to_string());
            }
        })
        .await
        .unwrap();
    assert_eq!(restored, ["start#1", "work#1"]);
    assert_eq!(work_runs.load(Ordering::SeqCst), 4);
    assert_eq!(check_runs.load(Ordering::SeqCst), 5);
    assert_eq!(s.completed.len(), 10);

    // Replay against the journal: the same nodes reproduce it...
    let sealed = Arc::new(Journal::sealed(j.records()));
    exec.run(sealed, Artifacts::new(), Mode::Replay, |_| {})
        .await
        .unwrap();
    // ...and a node whose output changed is named with the first difference.
    let changed = Executor::new(looped(3), 7)
        .node("start", Emit::new("s", json!(1)))
        .node("work", Emit::new("w", json!(1)))
        .node("check", Emit::new("c", json!(2)))
        .node("end", Emit::new("e", json!(1)))
        .router("done", |s| s.exhausted);
    let sealed = Arc::new(Journal::sealed(j.records()));
    let err = changed
        .run(sealed, Artifacts::new(), Mode::Replay, |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "non-determinism in node execution 'check#1', at outputs: /outputs/c: recorded 1, this run 2"
    );
}

#[tokio::test]
async fn cancellation_stops_a_running_node() {
    let slow = Emit {
        delay_ms: 10_000,
        ..Emit::new("w", json!(1))
    };
    let exec = Executor::new(looped(1), 1)
        .node("start", Emit::new("s", json!(1)))
        .node("work", slow)
        .node("check", Emit::new("c", json!(1)))
        .node("end", Emit::new("e", json!(1)))
        .router("done", |s| s.exhausted);
    let cancel = exec.cancel_handle();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.notify_one();
    });
    let t0 = std::time::Instant::now();
    let err = exec
        .run(journal(), Artifacts::new(), Mode::Resume, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled));
    assert!(t0.elapsed() < Duration::from_secs(5));
}
