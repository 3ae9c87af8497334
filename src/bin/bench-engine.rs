//! Workflow engine benchmark: overhead per node execution, journal write latency in the
//! SQLite run store, resuming a run of 1,000+ node executions, the overhead of a journaled
//! tool call (journal and dispatch, the tool doing nothing), and replaying a 20-step scripted
//! tool loop of the agent runtime.
//!
//! `cargo run --release --bin bench-engine [-- --nodes 1000]` prints JSON.

use std::sync::Arc;
use std::time::Instant;

use lim_pipelines::engine::{BoxFuture, Mode};
use lim_pipelines::journal::{Journal, Kind, MemorySink, Sink};
use lim_pipelines::store::{RunMeta, RunStatus, Store, StoreSink};
use lim_pipelines::{Artifacts, Cx, Edge, Executor, Node, NodeError, NodeKind, WorkflowBuilder};
use serde_json::json;

/// A tool that does nothing: what a call costs beyond the tool's own work.
#[derive(Debug)]
struct Nop;

impl lim_tools::Tool for Nop {
    const NAME: &'static str = "nop";
    type Args = lim_tools::NoArgs;
    type Output = u32;

    fn description(&self) -> String {
        "Does nothing.".into()
    }

    async fn call(&self, _args: lim_tools::NoArgs) -> lim_tools::ToolOutcome<u32> {
        lim_tools::ToolOutcome::Done { result: 1 }
    }
}

/// Runs the agent on `llm` with a `nop` toolbox journaled in `journal`; returns its replies.
fn agent_loop<L: lim_agents::LlmClient + 'static>(
    rt: &tokio::runtime::Runtime,
    llm: L,
    journal: Arc<Journal>,
) -> anyhow::Result<u32> {
    use lim_agents::agent::{self, Limits, Protocol, ProtocolMemo, Task};
    use lim_pipelines::journal::{JournaledLlm, JournaledTools};
    let llm = JournaledLlm::new(Arc::new(llm), journal.clone(), "generate#1");
    let tools = JournaledTools::new(
        lim_tools::Registry::default().with(Nop),
        journal,
        "generate#1",
    );
    let task = Task {
        model: "scripted".into(),
        system: "Bench.".into(),
        user: "Call nop, then answer.".into(),
    };
    let limits = Limits {
        max_steps: 30,
        ..Limits::default()
    };
    let run = rt.block_on(agent::run(
        &llm,
        &tools,
        &task,
        &ProtocolMemo::new(Protocol::Native),
        limits,
        |_: &lim_agents::strategist::Proposals| Ok(()),
    ))?;
    anyhow::ensure!(run.answer().is_some(), "the loop gave no answer");
    Ok(run.steps)
}

/// A node that does nothing but produce a small artifact.
struct Step;

impl Node for Step {
    fn run(&self, cx: Cx) -> BoxFuture<'_, Result<Artifacts, NodeError>> {
        Box::pin(async move {
            let mut out = Artifacts::new();
            out.insert(cx.node.clone(), json!({"visit": cx.visit, "seed": cx.seed}));
            Ok(out)
        })
    }
}

fn executor(loops: u32) -> anyhow::Result<Executor> {
    use NodeKind::Function;
    let wf = WorkflowBuilder::default()
        .node("start", Function, &[], &[])
        .node("work", Function, &[], &["work"])
        .node("check", Function, &["work"], &["check"])
        .node("end", Function, &[], &[])
        .edge("start", "work", Edge::Next)
        .edge("work", "check", Edge::Next)
        .edge(
            "check",
            "work",
            Edge::Back {
                max_iterations: loops,
            },
        )
        .edge(
            "check",
            "end",
            Edge::Conditional {
                router: "bound".into(),
            },
        )
        .build()?;
    Ok(Executor::new(wf, 1)
        .node("start", Step)
        .node("work", Step)
        .node("check", Step)
        .node("end", Step)
        .router("bound", |s| s.exhausted))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: u32 = args
        .iter()
        .position(|a| a == "--nodes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let loops = nodes / 2;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // 1. Engine overhead, journal in memory.
    let exec = executor(loops)?;
    let journal = Arc::new(Journal::new(Vec::new(), Arc::new(MemorySink::default())));
    let t = Instant::now();
    let s = rt.block_on(exec.run(journal, Artifacts::new(), Mode::Resume, |_| {}))?;
    let mem = t.elapsed().as_secs_f64();
    let executions = s.completed.len();

    // 2. The same run journaled in SQLite (one transaction per completion).
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(dir.path())?);
    store.create_run(&RunMeta {
        id: "bench".into(),
        fingerprint: "bench".into(),
        created_ms: 0,
        goal: "bench".into(),
        config: json!({}),
        manifest: json!([]),
        status: RunStatus::Running,
        stop_reason: None,
    })?;
    let journal = Arc::new(Journal::new(
        Vec::new(),
        Arc::new(StoreSink::new(store.clone(), "bench")),
    ));
    let t = Instant::now();
    rt.block_on(exec.run(journal, Artifacts::new(), Mode::Resume, |_| {}))?;
    let sqlite = t.elapsed().as_secs_f64();

    // 3. Journal writes of a typical LLM exchange (~4 KB), one transaction each.
    store.create_run(&RunMeta {
        id: "writes".into(),
        ..store.run("bench")?
    })?;
    let sink = StoreSink::new(store.clone(), "writes");
    let body = json!({"request": "x".repeat(3000), "response": "y".repeat(1000)});
    let mut lat: Vec<f64> = Vec::new();
    for i in 0..500u64 {
        let rec = lim_pipelines::Record {
            seq: i + 1,
            exec: "bench#1".into(),
            kind: Kind::Llm,
            n: i as u32,
            body: body.clone(),
        };
        let t = Instant::now();
        sink.append(&[rec])?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);

    // 4. Resume the finished run: load and check the journal, restore every node.
    let t = Instant::now();
    let loaded = store.load("bench")?;
    let n_records = loaded.records.len();
    let journal = Arc::new(Journal::new(
        loaded.records,
        Arc::new(StoreSink::new(store.clone(), "bench")),
    ));
    let mut restored = 0usize;
    rt.block_on(exec.run(journal, Artifacts::new(), Mode::Resume, |p| {
        restored += usize::from(p.restored)
    }))?;
    let resume = t.elapsed().as_secs_f64();

    // 5. A tool call's overhead: dispatch through the registry and a journal record.
    let calls = 2_000u32;
    let per_call = |journal: Arc<Journal>| -> anyhow::Result<f64> {
        let tools = lim_pipelines::journal::JournaledTools::new(
            lim_tools::Registry::default().with(Nop),
            journal,
            "bench#1",
        );
        let t = Instant::now();
        for _ in 0..calls {
            rt.block_on(tools.call("nop", &json!({})))?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3 / f64::from(calls))
    };
    let tool_memory = per_call(Arc::new(Journal::new(
        Vec::new(),
        Arc::new(MemorySink::default()),
    )))?;
    store.create_run(&RunMeta {
        id: "tools".into(),
        ..store.run("bench")?
    })?;
    let tool_sqlite = per_call(Arc::new(Journal::new(
        Vec::new(),
        Arc::new(StoreSink::new(store.clone(), "tools")),
    )))?;

    // 6. A 20-step tool loop, recorded with a scripted model, then replayed with none.
    use lim_agents::client::{ScriptedLlm, Turn};
    let mut turns: Vec<Turn> = (0..20)
        .map(|_| Turn::ToolCall {
            name: "nop".into(),
            arguments: "{}".into(),
        })
        .collect();
    turns.push(Turn::Text(
        json!({"strategies": [{"signal": "ts_sum(returns, 20)"}]}).to_string(),
    ));
    let recorded = Arc::new(Journal::new(Vec::new(), Arc::new(MemorySink::default())));
    let steps = agent_loop(
        &rt,
        ScriptedLlm::new(turns, lim_agents::Usage::default()),
        recorded.clone(),
    )?;
    let t = Instant::now();
    agent_loop(
        &rt,
        lim_pipelines::research::NoLlm,
        Arc::new(Journal::sealed(recorded.records())),
    )?;
    let replay_loop = t.elapsed().as_secs_f64() * 1e3;

    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "node_executions": executions,
            "engine_ms_per_node_memory_journal": mem * 1e3 / executions as f64,
            "engine_ms_per_node_sqlite_journal": sqlite * 1e3 / executions as f64,
            "journal_write_4kb_ms": {"p50": lat[lat.len() / 2], "p99": lat[lat.len() * 99 / 100], "max": lat[lat.len() - 1]},
            "resume": {"records": n_records, "restored_nodes": restored, "seconds": resume},
            "tool_call_overhead_ms": {"memory_journal": tool_memory, "sqlite_journal": tool_sqlite},
            "agent_tool_loop_replay": {"replies": steps, "ms": replay_loop},
        }))?
    );
    Ok(())
}
