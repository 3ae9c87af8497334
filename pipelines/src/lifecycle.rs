//! A research run's life in the run store: created, resumed (or forked with changed settings),
//! executed to its report, interrupted or failed, replayed. The CLI parses flags, builds the
//! LLM client and the catalog, and prints; what a run *is* lives here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lim_agents::client::LlmClient;
use lim_market::MarketData;
use tokio::sync::Notify;

use crate::engine::{EngineError, Mode, Progress};
use crate::journal::{Clock, Journal, Kind, Record, Sink};
use crate::research::{self, ResearchConfig, ResearchParts, Services, Summary};
use crate::store::{RunMeta, RunStatus, Store, StoreError};

/// Why a run could not start, continue or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data directory cannot be described.
    #[error("cannot read the data: {0}")]
    Data(String),
    /// A stored configuration does not parse.
    #[error("run {run}: its stored configuration is unreadable: {message}")]
    Config {
        /// The run.
        run: String,
        /// Why.
        message: String,
    },
    /// The data differs from the data the run started with.
    #[error(
        "run {run} read other data: the datasets differ from the ones it started with ({difference}). Pass the same --data directory it used"
    )]
    DataChanged {
        /// The run.
        run: String,
        /// The first difference.
        difference: String,
    },
    /// A resume asked for other settings without forking.
    #[error(
        "run {run} was started with other settings; resuming would mix two configurations. What changed:\n  {}\nRun `lim resume {run} --fork ...` to start a new run with these settings, or drop the flags to continue as it was",
        changes.join("\n  ")
    )]
    SettingsChanged {
        /// The run.
        run: String,
        /// What changed, one line each.
        changes: Vec<String>,
    },
    /// The workflow could not be built.
    #[error("the research workflow is invalid: {0}")]
    Workflow(String),
    /// Ctrl-C (or another cancellation) stopped the run between journal writes.
    #[error("run {run} interrupted; what completed is journaled: `lim resume {run}` continues it")]
    Interrupted {
        /// The run.
        run: String,
    },
    /// A node failed.
    #[error(
        "run {run} stopped: {message}\nWhat completed is journaled; `lim resume {run}` continues from there"
    )]
    Failed {
        /// The run.
        run: String,
        /// What failed.
        message: String,
    },
    /// A replay ran into a difference from the journal, or did not get as far as it.
    #[error("replay of run {run} failed: {message}")]
    Diverged {
        /// The run.
        run: String,
        /// The first difference, or the node executions it did not reach.
        message: String,
    },
    /// The report could not be built or written.
    #[error("run {run}: cannot write its report: {message}")]
    Report {
        /// The run.
        run: String,
        /// Why.
        message: String,
    },
}

/// A run ready to execute: its record, configuration and journal so far.
#[derive(Debug)]
pub struct Ready {
    /// The run.
    pub meta: RunMeta,
    /// What it does.
    pub config: ResearchConfig,
    /// Its journal so far (empty for a new run).
    pub records: Vec<Record>,
}

/// What `lim resume` finds.
#[derive(Debug)]
pub enum Resumption {
    /// The run had finished; its report stands.
    Finished(RunMeta),
    /// It continues from its journal.
    Continue {
        /// The run.
        ready: Ready,
        /// Node executions done.
        done: usize,
        /// LLM answers journaled (read back, not asked again).
        llm_answers: usize,
        /// Problems found loading the journal (a torn last record).
        warnings: Vec<String>,
    },
    /// A new run with the changed settings.
    Forked {
        /// The new run.
        ready: Ready,
        /// The run it came from.
        from: String,
        /// What changed.
        changes: Vec<String>,
    },
}

/// Creates a run of `config` on `market` (read from `data_dir`, `None` for the bundled sample).
///
/// # Errors
/// The store or the catalog failed.
pub fn create(
    store: &Store,
    config: ResearchConfig,
    market: &dyn MarketData,
    data_dir: Option<&Path>,
    now_ms: i64,
) -> Result<Ready, RunError> {
    let manifest = research::manifest(market).map_err(|e| RunError::Data(e.to_string()))?;
    let fingerprint = research::fingerprint(&config, &manifest);
    let meta = RunMeta {
        id: store.new_run_id(&fingerprint)?,
        fingerprint,
        created_ms: now_ms,
        goal: config.goal.clone(),
        config: serde_json::to_value(&config).map_err(|e| RunError::Config {
            run: "(new)".into(),
            message: e.to_string(),
        })?,
        manifest,
        status: RunStatus::Running,
        stop_reason: None,
    };
    store.create_run(&meta)?;
    store.set_data_dir(&meta.id, data_dir)?;
    Ok(Ready {
        meta,
        config,
        records: Vec::new(),
    })
}

/// The stored configuration of `meta`.
///
/// # Errors
/// It does not parse.
pub fn config_of(meta: &RunMeta) -> Result<ResearchConfig, RunError> {
    serde_json::from_value(meta.config.clone()).map_err(|e| RunError::Config {
        run: meta.id.clone(),
        message: e.to_string(),
    })
}

/// Prepares to continue run `meta` with `wanted` settings on `market`: the same settings
/// continue it (truncating a torn journal tail), other settings start a fork when `fork` is
/// set and are refused otherwise; a finished run is left as it is unless forked.
///
/// # Errors
/// Other data, other settings without `fork`, or a store failure.
pub fn resume(
    store: &Store,
    meta: RunMeta,
    wanted: ResearchConfig,
    fork: bool,
    market: &dyn MarketData,
    now_ms: i64,
) -> Result<Resumption, RunError> {
    let stored = config_of(&meta)?;
    let changes = stored.differences(&wanted);
    let manifest = research::manifest(market).map_err(|e| RunError::Data(e.to_string()))?;
    if manifest != meta.manifest {
        return Err(RunError::DataChanged {
            run: meta.id.clone(),
            difference: crate::journal::first_difference(&meta.manifest, &manifest)
                .unwrap_or_default(),
        });
    }
    if !changes.is_empty() && !fork {
        return Err(RunError::SettingsChanged {
            run: meta.id,
            changes,
        });
    }
    if fork {
        let data_dir: Option<PathBuf> = store.data_dir(&meta.id)?;
        let ready = create(store, wanted, market, data_dir.as_deref(), now_ms)?;
        return Ok(Resumption::Forked {
            ready,
            from: meta.id,
            changes,
        });
    }
    if meta.status == RunStatus::Finished {
        return Ok(Resumption::Finished(meta));
    }
    let loaded = store.load(&meta.id)?;
    let last = loaded.records.last().map_or(0, |r| r.seq);
    store.truncate(&meta.id, last)?;
    let count = |k: Kind| loaded.records.iter().filter(|r| r.kind == k).count();
    let (done, llm_answers) = (count(Kind::Node), count(Kind::Llm));
    store.set_status(&meta.id, RunStatus::Running, None)?;
    Ok(Resumption::Continue {
        ready: Ready {
            meta,
            config: stored,
            records: loaded.records,
        },
        done,
        llm_answers,
        warnings: loaded.warnings,
    })
}

/// A finished run: its summary and where its report is.
#[derive(Debug)]
pub struct Finished {
    /// The summary.
    pub summary: Summary,
    /// The Markdown report.
    pub report: PathBuf,
    /// The HTML tearsheet.
    pub html: PathBuf,
}

/// Writes run `run`'s tearsheet (`report.html`, beside `report.md`) from its summary and the
/// curves among its `artifacts` (a run recorded without them gets a page without charts).
///
/// # Errors
/// The run directory cannot be made or the file written.
pub fn write_tearsheet(
    store: &Store,
    run: &str,
    summary: &Summary,
    artifacts: &crate::journal::Artifacts,
) -> Result<PathBuf, RunError> {
    let curves: Option<research::Curves> = artifacts
        .get("curves")
        .and_then(|c| serde_json::from_value(c.clone()).ok());
    let path = store.run_dir(run)?.join("report.html");
    std::fs::write(&path, research::tearsheet(summary, curves.as_ref())).map_err(|e| {
        RunError::Report {
            run: run.to_string(),
            message: format!("'{}': {e}", path.display()),
        }
    })?;
    Ok(path)
}

/// What executing a run needs besides the run itself.
pub struct Execution<L> {
    /// The LLM (`research::NoLlm` for the offline strategist).
    pub llm: L,
    /// Market data.
    pub market: Arc<dyn MarketData>,
    /// The foundation model, when the build has one.
    pub foundation: Option<Arc<dyn lim_tools::FoundationModel>>,
    /// The run's clock.
    pub clock: Arc<dyn Clock>,
    /// Where the journal's records go.
    pub sink: Arc<dyn Sink>,
    /// Notified to stop the run between journal writes.
    pub cancel: Option<Arc<Notify>>,
    /// Where backtests run when not here (see [`research::Services::remote_backtests`]).
    pub remote_backtests: Option<Arc<dyn lim_tools::RemoteBacktests>>,
}

impl<L> std::fmt::Debug for Execution<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution").finish_non_exhaustive()
    }
}

/// Runs `ready` to its end in `store`: claims it for this process, executes the workflow
/// (taking completed nodes from the journal), records an interruption or a failure as the
/// run's status, and on success rebuilds the report from the artifacts by this build, writes
/// it, remembers the run's findings and marks the run finished.
///
/// # Errors
/// Interrupted, a failed node, or a report that cannot be written; the status says which.
pub async fn execute<L: LlmClient + 'static>(
    store: &Arc<Store>,
    ready: Ready,
    parts: Execution<L>,
    mut progress: impl FnMut(&Progress<'_>, &Journal) + Send,
) -> Result<Finished, RunError> {
    let Ready {
        meta,
        config,
        records,
    } = ready;
    store.claim(&meta.id, std::process::id())?;
    let journal = Arc::new(Journal::new(records, parts.sink));
    let exec = research::executor(ResearchParts {
        services: Services {
            market: parts.market,
            llm: Arc::new(parts.llm),
            clock: parts.clock,
            foundation: parts.foundation,
            memory: store.clone(),
            remote_backtests: parts.remote_backtests,
        },
        config: config.clone(),
    })
    .map_err(|e| RunError::Workflow(e.to_string()))?;
    if let Some(cancel) = parts.cancel {
        let handle = exec.cancel_handle();
        tokio::spawn(async move {
            cancel.notified().await;
            handle.notify_one();
        });
    }
    let j = journal.clone();
    let result = exec
        .run(
            journal.clone(),
            research::initial(&config),
            Mode::Resume,
            |p| progress(p, &j),
        )
        .await;
    let state = match result {
        Ok(s) => s,
        Err(EngineError::Cancelled) => {
            store.set_status(
                &meta.id,
                RunStatus::Interrupted,
                Some("interrupted (Ctrl-C)"),
            )?;
            return Err(RunError::Interrupted { run: meta.id });
        }
        Err(e) => {
            store.set_status(&meta.id, RunStatus::Failed, Some(&e.to_string()))?;
            return Err(RunError::Failed {
                run: meta.id,
                message: e.to_string(),
            });
        }
    };
    // The report is rebuilt from the artifacts by this build, so a run journaled by older code
    // (or whose report step failed) finishes with today's ranking and rendering.
    let report_error = |message: String| RunError::Report {
        run: meta.id.clone(),
        message,
    };
    let (summary, report) = research::summarize(
        &state.artifacts,
        &config,
        journal.spent(&config.llm_budget()),
    )
    .map_err(|e| report_error(e.to_string()))?;
    store.remember(&meta.id, &research::findings_of(&meta.id, &summary))?;
    store.set_status(&meta.id, RunStatus::Finished, Some(&summary.stop_reason))?;
    let path = store.run_dir(&meta.id)?.join("report.md");
    std::fs::write(&path, &report)
        .map_err(|e| report_error(format!("'{}': {e}", path.display())))?;
    let html = write_tearsheet(store, &meta.id, &summary, &state.artifacts)?;
    Ok(Finished {
        summary,
        report: path,
        html,
    })
}

/// What a replay found: every recorded node execution ran again with outputs identical to the
/// journal's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Node executions the replay completed.
    pub node_executions: usize,
    /// Node executions the journal holds.
    pub recorded_node_executions: usize,
    /// LLM answers read back from the journal instead of asked.
    pub llm_answers: usize,
}

/// Replays run `meta` from its journal `records` on `market`: every node runs again against the
/// sealed journal, with no LLM (a recorded answer is read back; one the journal lacks is a
/// divergence), the run's creation time as its clock, and the research memory as the journal
/// recorded it. The data must be the data the run read (its manifest), and the replay must
/// reach every node execution the journal holds (a crashed run's journal ends mid-run).
///
/// # Errors
/// An unreadable configuration, other data, an invalid workflow, or a divergence.
pub async fn replay(
    meta: &RunMeta,
    records: Vec<Record>,
    market: Arc<dyn MarketData>,
    foundation: Option<Arc<dyn lim_tools::FoundationModel>>,
) -> Result<Replayed, RunError> {
    let config = config_of(meta)?;
    let manifest =
        research::manifest(market.as_ref()).map_err(|e| RunError::Data(e.to_string()))?;
    if manifest != meta.manifest {
        return Err(RunError::DataChanged {
            run: meta.id.clone(),
            difference: crate::journal::first_difference(&meta.manifest, &manifest)
                .unwrap_or_default(),
        });
    }
    let recorded: Vec<String> = records
        .iter()
        .filter(|r| r.kind == Kind::Node)
        .map(|r| r.exec.clone())
        .collect();
    let llm_answers = records.iter().filter(|r| r.kind == Kind::Llm).count();
    let exec = research::executor(ResearchParts {
        services: Services {
            foundation,
            market,
            llm: Arc::new(research::NoLlm),
            clock: Arc::new(crate::journal::FixedClock(meta.created_ms)),
            // The memory is read back from the journal, as the run saw it.
            memory: Arc::new(lim_tools::NoMemory),
            remote_backtests: None,
        },
        config: config.clone(),
    })
    .map_err(|e| RunError::Workflow(e.to_string()))?;
    let journal = Arc::new(Journal::sealed(records));
    let state = exec
        .run(journal, research::initial(&config), Mode::Replay, |_| {})
        .await
        .map_err(|e| RunError::Diverged {
            run: meta.id.clone(),
            message: e.to_string(),
        })?;
    let missing: Vec<&String> = recorded
        .iter()
        .filter(|e| !state.completed.contains(e))
        .collect();
    if !missing.is_empty() {
        return Err(RunError::Diverged {
            run: meta.id.clone(),
            message: format!("it did not reach the recorded node executions {missing:?}"),
        });
    }
    Ok(Replayed {
        node_executions: state.completed.len(),
        recorded_node_executions: recorded.len(),
        llm_answers,
    })
}
