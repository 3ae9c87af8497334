//! A run's life in the store: created, executed to its report, interrupted and resumed to the
//! same end, refused with other settings, forked, and left alone once finished.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::sync::Arc;

use lim_market::{Catalog, MarketData};
use lim_pipelines::journal::FixedClock;
use lim_pipelines::lifecycle::{self, Execution, Ready, Resumption, RunError};
use lim_pipelines::research::{NoLlm, ResearchConfig};
use lim_pipelines::store::{RunStatus, Store, StoreSink};

fn config() -> ResearchConfig {
    let mut c = ResearchConfig::new("trend in Chinese commodity futures");
    c.population = 4;
    c.budgets.max_iterations = 2;
    c
}

fn market() -> Arc<dyn MarketData> {
    Arc::new(Catalog::bundled(None))
}

fn execute(
    store: &Arc<Store>,
    ready: Ready,
    cancel: bool,
) -> Result<lifecycle::Finished, RunError> {
    let notify = Arc::new(tokio::sync::Notify::new());
    if cancel {
        notify.notify_one();
    }
    let sink = Arc::new(StoreSink::new(store.clone(), &ready.meta.id));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(lifecycle::execute(
            store,
            ready,
            Execution {
                llm: NoLlm,
                market: market(),
                foundation: None,
                clock: Arc::new(FixedClock(0)),
                sink,
                cancel: Some(notify),
                remote_backtests: None,
            },
            |_, _| {},
        ))
}

#[test]
fn a_run_is_created_executed_and_reported_and_a_finished_run_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let data = dir.path().join("data");
    let ready = lifecycle::create(&store, config(), market().as_ref(), Some(&data), 7).unwrap();
    let id = ready.meta.id.clone();
    assert_eq!(store.run(&id).unwrap().status, RunStatus::Running);
    // The run remembers its data directory.
    assert_eq!(
        store.data_dir(&id).unwrap().as_deref(),
        Some(data.as_path())
    );
    let done = execute(&store, ready, false).unwrap();
    let report = std::fs::read_to_string(&done.report).unwrap();
    assert!(report.starts_with("# LIM research report"));
    let meta = store.run(&id).unwrap();
    assert_eq!(meta.status, RunStatus::Finished);
    assert_eq!(
        meta.stop_reason.as_deref(),
        Some(done.summary.stop_reason.as_str())
    );
    // Its findings are in the research memory.
    let found = store.recall(&["cn_futures_daily".to_string()], 10).unwrap();
    assert!(!found.is_empty());
    match lifecycle::resume(&store, meta, config(), false, market().as_ref(), 8).unwrap() {
        Resumption::Finished(m) => assert_eq!(m.id, id),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_end_an_uninterrupted_run_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let whole = lifecycle::create(&store, config(), market().as_ref(), None, 0).unwrap();
    let whole = execute(&store, whole, false).unwrap();

    let other = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(other.path()).unwrap());
    let ready = lifecycle::create(&store, config(), market().as_ref(), None, 0).unwrap();
    let id = ready.meta.id.clone();
    match execute(&store, ready, true) {
        Err(RunError::Interrupted { run }) => assert_eq!(run, id),
        other => panic!("{other:?}"),
    }
    let meta = store.run(&id).unwrap();
    assert_eq!(meta.status, RunStatus::Interrupted);
    let resumed =
        match lifecycle::resume(&store, meta, config(), false, market().as_ref(), 1).unwrap() {
            Resumption::Continue { ready, .. } => execute(&store, ready, false).unwrap(),
            other => panic!("{other:?}"),
        };
    assert_eq!(
        serde_json::to_value(&resumed.summary).unwrap(),
        serde_json::to_value(&whole.summary).unwrap()
    );
}

#[test]
fn other_settings_are_refused_by_name_unless_forked_into_a_new_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let data = dir.path().join("data");
    let ready = lifecycle::create(&store, config(), market().as_ref(), Some(&data), 0).unwrap();
    let meta = ready.meta.clone();
    let mut wanted = config();
    wanted.budgets.max_iterations = 5;
    let e = lifecycle::resume(
        &store,
        meta.clone(),
        wanted.clone(),
        false,
        market().as_ref(),
        1,
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("budgets.max_iterations: 2 → 5") && text.contains("--fork"),
        "{text}"
    );
    match lifecycle::resume(&store, meta.clone(), wanted, true, market().as_ref(), 1).unwrap() {
        Resumption::Forked {
            ready,
            from,
            changes,
        } => {
            assert_eq!(from, meta.id);
            assert_ne!(ready.meta.id, meta.id);
            assert_eq!(ready.config.budgets.max_iterations, 5);
            assert_eq!(changes.len(), 1);
            // The fork reads the data its parent read.
            assert_eq!(
                store.data_dir(&ready.meta.id).unwrap().as_deref(),
                Some(data.as_path())
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_finished_run_replays_identically_and_a_changed_journal_or_other_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let ready = lifecycle::create(&store, config(), market().as_ref(), None, 7).unwrap();
    let id = ready.meta.id.clone();
    execute(&store, ready, false).unwrap();
    let meta = store.run(&id).unwrap();
    let records = store.load(&id).unwrap().records;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replay = |meta: &lim_pipelines::store::RunMeta, records| {
        runtime.block_on(lifecycle::replay(meta, records, market(), None))
    };

    let nodes = records
        .iter()
        .filter(|r| r.kind == lim_pipelines::journal::Kind::Node)
        .count();
    let replayed = replay(&meta, records.clone()).unwrap();
    assert_eq!(replayed.node_executions, nodes);
    assert_eq!(replayed.recorded_node_executions, nodes);
    assert_eq!(replayed.llm_answers, 0);

    // A data read's recorded digest that the data no longer gives is a divergence.
    let mut altered = records.clone();
    let read = altered
        .iter_mut()
        .find(|r| r.kind == lim_pipelines::journal::Kind::Data)
        .expect("the run read data");
    read.body["result"]["hash"] = serde_json::json!("0000000000000000");
    let exec = read.exec.clone();
    match replay(&meta, altered) {
        Err(RunError::Diverged { run, message }) => {
            assert_eq!(run, id);
            assert!(message.contains(&exec), "{message}");
        }
        other => panic!("expected a divergence, got {other:?}"),
    }

    // Another catalog than the run read is refused before anything runs.
    let mut other = meta.clone();
    other.manifest[0]["name"] = serde_json::json!("not_the_same_dataset");
    match replay(&other, records) {
        Err(e @ RunError::DataChanged { .. }) => {
            assert!(e.to_string().contains("--data"), "{e}");
        }
        other => panic!("expected other data to be refused, got {other:?}"),
    }
}

#[test]
fn a_run_is_found_by_a_unique_prefix_and_an_ambiguous_one_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = lifecycle::create(&store, config(), market().as_ref(), None, 1).unwrap();
    let mut other = config();
    other.goal = "momentum in US stocks".into();
    let b = lifecycle::create(&store, other, market().as_ref(), None, 2).unwrap();
    let (a, b) = (a.meta.id, b.meta.id);
    assert_eq!(store.run(&a).unwrap().id, a);
    assert_eq!(store.run(&b[..b.len() - 1]).unwrap().id, b);
    let e = store.run("r").unwrap_err().to_string();
    assert!(
        e.contains("starts several runs") && e.contains(&a) && e.contains(&b),
        "{e}"
    );
    let e = store.run("nothing-like-it").unwrap_err().to_string();
    assert!(e.contains("no run 'nothing-like-it'"), "{e}");
}

/// The research memory lists the strategies their runs ranked highest first: by robust
/// fitness, not by a validation Sharpe ratio that a few bars can make large; findings
/// remembered before fitness was kept come after, by validation Sharpe.
#[test]
fn the_memory_lists_findings_by_robust_fitness() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let finding = |signal: &str, validation_sharpe: f64, fitness: Option<f64>| lim_tools::Finding {
        datasets: "cn_futures_daily".into(),
        frequency: "1d".into(),
        run: "r1".into(),
        goal: "trend".into(),
        signal: signal.into(),
        train_sharpe: 0.5,
        validation_sharpe,
        fitness,
        test_sharpe: None,
        conclusion: String::new(),
        data_end: None,
        validation_end: None,
    };
    store
        .remember(
            "r1",
            &[
                finding("thin", 3.0, Some(0.1)),
                finding("robust", 1.0, Some(0.8)),
                finding("old, high", 2.0, None),
                finding("old, low", 0.5, None),
            ],
        )
        .unwrap();
    let order: Vec<String> = store
        .recall(&[], 10)
        .unwrap()
        .into_iter()
        .map(|f| f.signal)
        .collect();
    assert_eq!(order, ["robust", "thin", "old, high", "old, low"]);
    assert_eq!(
        store.remembered().unwrap(),
        [("cn_futures_daily".to_string(), 4)]
    );
}
