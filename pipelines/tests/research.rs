#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
//! Whole research runs in process, on the bundled sample: offline and with a scripted LLM
//! (output repairs, failures, budgets), replay, divergence, torn journal records.

use std::sync::Arc;

use lim_agents::chat::Usage;
use lim_agents::client::{ScriptedLlm, Turn};
use lim_agents::error::LlmError;
use lim_market::{Catalog, MarketData};
use lim_pipelines::engine::Mode;
use lim_pipelines::journal::{FixedClock, Journal, Kind, MemorySink, Record};
use lim_pipelines::research::{
    self, NoLlm, ResearchConfig, ResearchParts, Services, StrategistConfig, Summary,
};
use lim_pipelines::store::{RunMeta, Store, StoreSink};
use lim_pipelines::trace;
use lim_tools::{BacktestTool, Registry, ResearchLog, Universe};
use serde_json::{Value, json};

const GOAL: &str = "find a robust trend strategy for Chinese commodity futures, max drawdown 15%";

fn market() -> Arc<dyn MarketData> {
    Arc::new(Catalog::bundled(None))
}

fn small(goal: &str) -> ResearchConfig {
    let mut c = ResearchConfig::new(goal);
    c.population = 6;
    c.budgets.max_iterations = 3;
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `config` with `llm` against `journal`; returns the summary.
fn run<L: lim_agents::client::LlmClient + 'static>(
    config: &ResearchConfig,
    llm: L,
    journal: Arc<Journal>,
    mode: Mode,
) -> Result<Summary, String> {
    let services = Services {
        market: market(),
        llm: Arc::new(llm),
        clock: Arc::new(FixedClock(1_700_000_000_000)),
        foundation: None,
        memory: Arc::new(lim_tools::NoMemory),
        remote_backtests: None,
    };
    let artifacts = run_services(config, services, journal, mode)?;
    Ok(serde_json::from_value(artifacts["summary"].clone()).unwrap())
}

/// A fresh offline run of `config` on `market`: its artifacts.
fn offline_run(config: &ResearchConfig, market: Arc<dyn MarketData>) -> lim_pipelines::Artifacts {
    run_services(
        config,
        Services {
            market,
            llm: Arc::new(NoLlm),
            clock: Arc::new(FixedClock(0)),
            foundation: None,
            memory: Arc::new(lim_tools::NoMemory),
            remote_backtests: None,
        },
        fresh(),
        Mode::Resume,
    )
    .unwrap()
}

/// Runs `config` with `services` against `journal`; returns the final artifacts.
fn run_services<L: lim_agents::client::LlmClient + 'static>(
    config: &ResearchConfig,
    services: Services<L>,
    journal: Arc<Journal>,
    mode: Mode,
) -> Result<lim_pipelines::Artifacts, String> {
    let exec = research::executor(ResearchParts {
        services,
        config: config.clone(),
    })
    .unwrap();
    let state = runtime()
        .block_on(exec.run(journal, research::initial(config), mode, |_| {}))
        .map_err(|e| e.to_string())?;
    Ok(state.artifacts)
}

/// Summaries are equal as their JSON is (NaN metrics, such as a constant baseline's IC, are
/// equal to themselves there).
fn assert_same(a: &Summary, b: &Summary) {
    assert_eq!(
        serde_json::to_string(a).unwrap(),
        serde_json::to_string(b).unwrap()
    );
}

fn fresh() -> Arc<Journal> {
    Arc::new(Journal::new(Vec::new(), Arc::new(MemorySink::default())))
}

#[test]
fn an_offline_run_ends_with_a_sealed_test_and_statistics_over_every_trial() {
    let config = small(GOAL);
    let j = fresh();
    let s = run(&config, NoLlm, j.clone(), Mode::Resume).unwrap();
    assert_eq!(s.plan.strategy.datasets, ["cn_futures_daily"]);
    assert_eq!(s.plan.strategy.max_drawdown, Some(0.15));
    assert!(s.trials > 6, "{}", s.trials);
    assert_eq!(s.lineage.len(), 3);
    assert_eq!(s.stop_reason, "iteration budget reached (3 iterations)");
    assert_eq!(s.finalists.len(), 3);
    // The finalists come from the leaderboard, its best first, in its order (one too like a
    // finalist already taken is skipped).
    assert_eq!(s.finalists[0].signal, s.leaderboard[0].signal);
    let ranks: Vec<usize> = s
        .finalists
        .iter()
        .map(|f| {
            let e = s.leaderboard.iter().find(|e| e.signal == f.signal).unwrap();
            assert_eq!(f.validation.sharpe, e.validation.sharpe);
            e.rank
        })
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
    // A 60-day sum of returns under a sign book is the 63-day momentum baseline found again
    // (with minimum counts: the sample's calendar has holes): the leaderboard says so; by
    // default its fitness does not pay for it, and with --baseline-penalty it does.
    let again = |s: &Summary| {
        s.leaderboard
            .iter()
            .find(|e| e.signal == "ts_sum(returns, 60, 45)")
            .expect("ts_sum(returns, 60, 45) is scored")
            .clone()
    };
    let (name, c) = again(&s).closest_baseline.unwrap();
    assert_eq!(name, "time-series momentum, 63 days");
    assert!(c > 0.9, "{c}");
    let md = s.markdown();
    assert!(
        md.contains("is time-series momentum, 63 days (correlation"),
        "{md}"
    );
    assert!(!md.contains("fitness −"), "{md}");
    let mut charged = config.clone();
    charged.baseline_penalty = 2.5;
    let p = run(&charged, NoLlm, fresh(), Mode::Resume).unwrap();
    assert!(p.plan.objective.contains("2.5 per unit of correlation"));
    let paid = again(&s).fitness - again(&p).fitness;
    assert!((paid - 2.5 * (c - 0.9)).abs() < 1e-9, "{paid} {c}");
    assert!(p.markdown().contains(&format!("fitness −{paid:.2}")));
    // A seed that is always short under the sign book holds the market, not a signal.
    let degenerate = s
        .rejected
        .iter()
        .find(|r| r.signal == "-ts_std(returns, 60, 45)")
        .unwrap();
    assert!(
        degenerate.reason.starts_with(
            "degenerate: its validation returns move with the always-long book (correlation -1.00)"
        ),
        "{}",
        degenerate.reason
    );
    // Baselines on the same bars, the finalists compared with always-long.
    let names: Vec<&str> = s.baselines.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "always long, equal weight",
            "always long, volatility-targeted",
            "time-series momentum, 63 days",
            "time-series momentum, 12-1 months"
        ]
    );
    assert_eq!(s.baselines[0].test.exposure, 1.0);
    for f in &s.finalists {
        let vs = f.vs_always_long.unwrap();
        let want = f.test.ann_return - s.baselines[0].test.ann_return;
        assert!((vs.excess_return - want).abs() < 1e-15);
        assert!(vs.co_move.correlation.abs() <= 1.0);
    }
    assert!(
        s.markdown()
            .contains("finalists beat the test Sharpe of always long, equal weight")
    );
    // The finalists held together, equal risk, measured once beside them.
    let c = s.combined.as_ref().unwrap();
    let names: Vec<&str> = s.finalists.iter().map(|f| f.signal.as_str()).collect();
    assert_eq!(c.members, names);
    assert!((c.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(c.test.sharpe.is_finite() && c.test.bars > 0);
    assert!(s.markdown().contains("the finalists combined, equal risk"));
    // Multiple testing counts every strategy that ran, not the finalists.
    let m = s.multiple_testing.as_ref().unwrap();
    assert_eq!(m.trials, s.trials);
    // The leaderboard is sorted by robust fitness.
    for w in s.leaderboard.windows(2) {
        assert!(w[0].fitness >= w[1].fitness);
    }
    // The same seed gives the same run; a replay with no LLM reproduces it.
    let again = run(&config, NoLlm, fresh(), Mode::Resume).unwrap();
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
    let replayed = run(
        &config,
        NoLlm,
        Arc::new(Journal::sealed(j.records())),
        Mode::Replay,
    )
    .unwrap();
    assert_same(&s, &replayed);
    // Another seed explores differently.
    let mut other = config.clone();
    other.seed = 2;
    let o = run(&other, NoLlm, fresh(), Mode::Resume).unwrap();
    assert_ne!(
        o.leaderboard.iter().map(|e| &e.signal).collect::<Vec<_>>(),
        s.leaderboard.iter().map(|e| &e.signal).collect::<Vec<_>>()
    );
}

#[test]
fn agent_facing_tools_refuse_the_sealed_test_period() {
    let rt = runtime();
    let universe = Arc::new(Universe::new(None));
    let registry = Registry::default()
        .with(lim_tools::ChooseUniverse {
            market: market(),
            universe: universe.clone(),
        })
        .with(BacktestTool {
            universe,
            log: Arc::new(ResearchLog::default()),
            remote: None,
            scorer: None,
        });
    let r = rt.block_on(
        registry.call(
            "choose_universe",
            &json!({"datasets": ["cn_futures_daily"], "train": 0.6, "valid": 0.2, "embargo": 5})
                .to_string(),
        ),
    );
    assert_eq!(r["status"], "done", "{r}");
    let r = rt.block_on(
        registry.call(
            "backtest",
            &json!({"strategies": [{"signal": "ts_sum(returns, 20)"}], "include_test": true})
                .to_string(),
        ),
    );
    assert_eq!(
        (r["status"].as_str(), r["kind"].as_str()),
        (Some("failed"), Some("sealed")),
        "{r}"
    );
    // And the report's universe never describes the test part to the agents.
    let r = rt.block_on(
        registry.call(
            "choose_universe",
            &json!({"datasets": ["cn_futures_daily"], "train": 0.6, "valid": 0.2, "embargo": 5})
                .to_string(),
        ),
    );
    assert!(!r.to_string().contains("\"test\""), "{r}");
}

fn plan_reply() -> String {
    json!({"final_answer": {"plan": {"goal": GOAL, "datasets": ["cn_futures_daily"], "family": "trend",
        "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.1, "vol_window": 60},
        "max_drawdown": 0.15, "cost_bps": 10.0, "author": "x"},
        "why": "Chinese futures only, as the goal asks."}})
    .to_string()
}

fn proposals(signals: &[&str]) -> String {
    json!({"strategies": signals.iter().map(|s| json!({"signal": s})).collect::<Vec<_>>()})
        .to_string()
}

fn critique_reply(text: &str) -> String {
    json!({"diagnosis": text, "hypotheses": ["longer lookbacks"], "likely_luck": false}).to_string()
}

/// plan, critique 1, propose 2 (a broken reply, then a repair), critique 2 (fails),
/// propose 3, critique 3.
fn script() -> Vec<Turn> {
    vec![
        Turn::Text(plan_reply()),
        Turn::Text(critique_reply("seeds are weak")),
        Turn::Text("Here you go: {\"strategies\": [{\"signal\": \"ts_sum(returns, 20\"}]}".into()),
        Turn::Text(proposals(&[
            "ts_sum(returns, 30)",
            "decay_linear(returns, 60)",
        ])),
        Turn::Error(LlmError::Server {
            status: 500,
            message: "overloaded".into(),
        }),
        Turn::Text(proposals(&["ts_zscore(ts_sum(returns, 30), 60)"])),
        Turn::Text(critique_reply("longer windows help")),
    ]
}

fn llm_config() -> ResearchConfig {
    let mut c = small(GOAL);
    c.strategist = StrategistConfig::Llm {
        model: "scripted".into(),
        base_url: "http://127.0.0.1:9/v1".into(),
    };
    c
}

#[test]
fn a_scripted_llm_run_repairs_output_survives_a_failure_and_replays_without_the_llm() {
    let config = llm_config();
    let j = fresh();
    let llm = ScriptedLlm::new(
        script(),
        Usage {
            prompt_tokens: 100,
            completion_tokens: 50,
        },
    );
    let s = run(&config, llm, j.clone(), Mode::Resume).unwrap();
    assert!(s.strategist.contains("scripted"));
    assert_eq!(s.spent.calls, 7);
    // The failed call reported no usage.
    assert_eq!(s.spent.tokens, 6 * 150);
    let signals: Vec<&str> = s.leaderboard.iter().map(|e| e.signal.as_str()).collect();
    for proposed in [
        "ts_sum(returns, 30)",
        "decay_linear(returns, 60)",
        "ts_zscore(ts_sum(returns, 30), 60)",
    ] {
        assert!(
            signals.contains(&proposed) || s.trials > signals.len(),
            "{proposed} missing from {signals:?}"
        );
    }
    // The broken reply was re-asked with the parse error; the failed critique is in the lineage.
    assert!(
        s.lineage[1].diagnosis.contains("the LLM critique failed"),
        "{}",
        s.lineage[1].diagnosis
    );
    assert!(s.lineage[2].diagnosis.starts_with("longer windows help"));
    // Replay: no LLM at all, every answer read back, identical summary.
    let r = run(
        &config,
        NoLlm,
        Arc::new(Journal::sealed(j.records())),
        Mode::Replay,
    )
    .unwrap();
    assert_same(&s, &r);
    // A changed prompt is a divergence naming the node and the call.
    let mut records = j.records();
    let first_llm = records.iter_mut().find(|r| r.kind == Kind::Llm).unwrap();
    first_llm.body["request"]["messages"][0]["content"] = json!("an older system prompt");
    first_llm.body["fingerprint"] = json!("0000000000000000");
    let err = run(
        &config,
        NoLlm,
        Arc::new(Journal::sealed(records)),
        Mode::Replay,
    )
    .unwrap_err();
    assert!(
        err.starts_with("non-determinism in node execution 'plan#1', at llm call 0: the request differs from the journal's (/messages/0/content: from character 0, recorded \"an older system prompt\", this run \"You plan quantitative"),
        "{err}"
    );
}

#[test]
fn a_token_budget_stops_the_loop_and_the_run_still_reports() {
    let mut config = llm_config();
    config.budgets.max_iterations = 10;
    config.budgets.max_tokens = Some(400);
    let llm = ScriptedLlm::new(
        script(),
        Usage {
            prompt_tokens: 100,
            completion_tokens: 50,
        },
    );
    let s = run(&config, llm, fresh(), Mode::Resume).unwrap();
    // plan (150) + critique (150) + propose x2 (300) = 600 ≥ 400 at the second critique.
    assert!(
        s.stop_reason.starts_with("token budget spent"),
        "{}",
        s.stop_reason
    );
    assert!(s.lineage.len() < 10);
    assert_eq!(s.finalists.len(), 3);
}

#[test]
fn a_killed_run_resumes_from_the_store_without_asking_the_llm_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let config = llm_config();
    let meta = RunMeta {
        id: "r1".into(),
        fingerprint: "f".into(),
        created_ms: 0,
        goal: GOAL.into(),
        config: serde_json::to_value(&config).unwrap(),
        manifest: Value::Null,
        status: lim_pipelines::store::RunStatus::Running,
        stop_reason: None,
    };
    store.create_run(&meta).unwrap();
    let full = run(
        &config,
        ScriptedLlm::new(script(), Usage::default()),
        fresh(),
        Mode::Resume,
    )
    .unwrap();
    // A run that "dies" after its first critique: the LLM script ends there.
    let journal = Arc::new(Journal::new(
        Vec::new(),
        Arc::new(StoreSink::new(store.clone(), "r1")),
    ));
    let short: Vec<Turn> = script().into_iter().take(2).collect();
    let err = run(
        &config,
        ScriptedLlm::new(short, Usage::default()),
        journal,
        Mode::Resume,
    );
    // The third call found no turn: propose#2 gets an error and proposes nothing; the run
    // then stops early. Take only what precedes that call, as a kill would have left it.
    assert!(err.is_ok());
    let loaded = store.load("r1").unwrap();
    let cut = loaded
        .records
        .iter()
        .position(|r| r.exec == "generate#2")
        .unwrap();
    store.truncate("r1", loaded.records[cut - 1].seq).unwrap();
    let loaded = store.load("r1").unwrap();
    assert_eq!(
        loaded
            .records
            .iter()
            .filter(|r| r.kind == Kind::Llm)
            .count(),
        2
    );
    // Resume with the rest of the script only: the two journaled answers are read back.
    let rest: Vec<Turn> = script().into_iter().skip(2).collect();
    let llm = ScriptedLlm::new(rest, Usage::default());
    let journal = Arc::new(Journal::new(
        loaded.records,
        Arc::new(StoreSink::new(store.clone(), "r1")),
    ));
    let resumed = run(&config, llm, journal, Mode::Resume).unwrap();
    assert_eq!(
        serde_json::to_string(&resumed.leaderboard).unwrap(),
        serde_json::to_string(&full.leaderboard).unwrap()
    );
    assert_eq!(resumed.lineage, full.lineage);
}

#[test]
fn a_torn_final_record_is_ignored_and_a_corrupt_middle_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let meta = RunMeta {
        id: "r1".into(),
        fingerprint: "f".into(),
        created_ms: 0,
        goal: GOAL.into(),
        config: serde_json::to_value(small(GOAL)).unwrap(),
        manifest: Value::Null,
        status: lim_pipelines::store::RunStatus::Running,
        stop_reason: None,
    };
    store.create_run(&meta).unwrap();
    let journal = Arc::new(Journal::new(
        Vec::new(),
        Arc::new(StoreSink::new(store.clone(), "r1")),
    ));
    run(&small(GOAL), NoLlm, journal, Mode::Resume).unwrap();
    let all = store.load("r1").unwrap();
    assert!(all.warnings.is_empty());
    let n = all.records.len() as u64;
    // Half a JSON body in the last record: ignored, with a warning saying so.
    store.damage("r1", n, "{\"node\": \"rep").unwrap();
    let l = store.load("r1").unwrap();
    assert_eq!(l.records.len() as u64, n - 1);
    assert!(
        l.warnings[0].contains(&format!("the final journal record ({n}) is torn")),
        "{:?}",
        l.warnings
    );
    // A changed record before the end: refused, naming it.
    store.damage("r1", 3, "{\"node\": \"x\"}").unwrap();
    let err = store.load("r1").unwrap_err().to_string();
    assert!(
        err.starts_with("run r1: journal record 3 is corrupt (checksum mismatch)"),
        "{err}"
    );
}

#[test]
fn traces_round_trip_and_a_cut_trace_loses_only_its_last_line() {
    let j = fresh();
    run(&small(GOAL), NoLlm, j.clone(), Mode::Resume).unwrap();
    let meta = RunMeta {
        id: "r1".into(),
        fingerprint: "f".into(),
        created_ms: 0,
        goal: GOAL.into(),
        config: serde_json::to_value(small(GOAL)).unwrap(),
        manifest: Value::Null,
        status: lim_pipelines::store::RunStatus::Finished,
        stop_reason: None,
    };
    let records: Vec<Record> = j.records();
    let text = trace::export(&meta, &records);
    let (m, l) = trace::import(&text).unwrap();
    assert_eq!((m, l.records.clone()), (meta, records.clone()));
    let cut = &text[..text.len() - 40];
    let (_, l) = trace::import(cut).unwrap();
    assert_eq!(l.records.len(), records.len() - 1);
    assert!(l.warnings[0].contains("is torn"));
    let err = trace::import("{\"nope\": 1}\n").unwrap_err();
    assert_eq!(err.line, 1);
}

#[test]
fn a_refused_tool_call_is_noted_and_the_search_goes_on() {
    let config = llm_config();
    // 51 strategies: more than the backtest tool takes in one call.
    let many: Vec<String> = (2..53).map(|w| format!("ts_sum(returns, {w})")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let turns = vec![
        Turn::Text(plan_reply()),
        Turn::Text(critique_reply("seeds read")),
        Turn::Text(proposals(&many)),
        Turn::Text(critique_reply("that round failed")),
        Turn::Text(proposals(&["ts_sum(returns, 90)"])),
        Turn::Text(critique_reply("done")),
    ];
    let s = run(
        &config,
        ScriptedLlm::new(turns, Usage::default()),
        fresh(),
        Mode::Resume,
    )
    .unwrap();
    assert!(
        s.notes.iter().any(|n| n.starts_with("backtest#2: the backtest tool refused the round: give between 1 and 50 strategies, not 51")),
        "{:?}",
        s.notes
    );
    assert!(
        s.lineage[1].diagnosis.contains("51 failed to run"),
        "{}",
        s.lineage[1].diagnosis
    );
    // The third round ran normally and counts.
    assert!(
        s.leaderboard
            .iter()
            .any(|e| e.signal == "ts_sum(returns, 90)")
            || s.trials > 10
    );
    assert_eq!(s.stop_reason, "iteration budget reached (3 iterations)");
}

/// A clock that moves ten minutes at every reading.
#[derive(Debug, Default)]
struct Racing(std::sync::atomic::AtomicI64);

impl lim_pipelines::journal::Clock for Racing {
    fn now_ms(&self) -> i64 {
        self.0
            .fetch_add(600_000, std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_deadline_on_the_runs_clock_winds_the_run_down_and_replays_identically() {
    let mut config = small(GOAL);
    config.budgets.max_iterations = 20;
    config.budgets.deadline_minutes = Some(25.0);
    let j = fresh();
    let exec = research::executor(ResearchParts {
        services: Services {
            market: market(),
            llm: Arc::new(NoLlm),
            clock: Arc::new(Racing::default()),
            foundation: None,
            memory: Arc::new(lim_tools::NoMemory),
            remote_backtests: None,
        },
        config: config.clone(),
    })
    .unwrap();
    let state = runtime()
        .block_on(exec.run(j.clone(), research::initial(&config), Mode::Resume, |_| {}))
        .unwrap();
    let s: Summary = serde_json::from_value(state.artifacts["summary"].clone()).unwrap();
    // Start reads 0; critiques read 10, 20, 30 minutes: the third stops the loop.
    assert_eq!(s.stop_reason, "deadline reached");
    assert_eq!(s.lineage.len(), 3);
    assert_eq!(s.finalists.len(), 3);
    // The replay reads the journaled times, not its own clock.
    let replayed = run(
        &config,
        NoLlm,
        Arc::new(Journal::sealed(j.records())),
        Mode::Replay,
    )
    .unwrap();
    assert_same(&s, &replayed);
}

/// A stand-in for the foundation model: a deterministic pattern, and a value for every bar
/// (including the ones it may not predict, which the tool must drop).
#[derive(Debug)]
struct Pattern;

impl lim_tools::FoundationModel for Pattern {
    fn describe(&self) -> String {
        "a test pattern".into()
    }

    fn seconds_per_step(&self) -> f64 {
        0.01
    }

    fn pretrain(
        &self,
        req: &lim_tools::ModelRequest,
        _: &lim_tools::Recipe,
    ) -> Result<lim_tools::Pretrained, String> {
        Ok(lim_tools::Pretrained {
            datasets: req.datasets.clone(),
        })
    }

    fn finetune(
        &self,
        _: &lim_tools::ModelRequest,
        recipe: &lim_tools::Recipe,
    ) -> Result<lim_tools::Finetuned, String> {
        // A pretrained backbone "learns" more than a scratch one.
        Ok(lim_tools::Finetuned {
            holdout_rank_ic: if recipe.pretrain.is_some() { 0.03 } else { 0.0 },
            holdout_ic: 0.02,
            holdout_bars: 100,
            steps_run: recipe.finetune.map_or(0, |f| f.steps),
        })
    }

    fn predict(
        &self,
        req: &lim_tools::ModelRequest,
        _: &lim_tools::Recipe,
    ) -> Result<Vec<f64>, String> {
        let t = req.times.len();
        Ok((0..req.symbols.len() * t)
            .map(|k| ((k % t) % 7) as f64 - 3.0 + (k / t) as f64 * 0.1)
            .collect())
    }
}

fn run_with_forecaster(config: &ResearchConfig, journal: Arc<Journal>, mode: Mode) -> Summary {
    let exec = research::executor(ResearchParts {
        services: Services {
            market: market(),
            llm: Arc::new(NoLlm),
            clock: Arc::new(FixedClock(0)),
            foundation: Some(Arc::new(Pattern)),
            memory: Arc::new(lim_tools::NoMemory),
            remote_backtests: None,
        },
        config: config.clone(),
    })
    .unwrap();
    let state = runtime()
        .block_on(exec.run(journal, research::initial(config), mode, |_| {}))
        .unwrap();
    serde_json::from_value(state.artifacts["summary"].clone()).unwrap()
}

#[test]
fn the_foundation_field_is_out_of_sample_usable_resumable_and_replayable() {
    let mut config = small(GOAL);
    config.foundation = true;
    let j = fresh();
    let s = run_with_forecaster(&config, j.clone(), Mode::Resume);
    assert!(s.plan.foundation_model);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    let lab = s.foundation.clone().unwrap();
    // Pretrained once and fine-tuned twice (return ranks, volatility), 300 steps each at 0.01
    // CPU-seconds a step.
    assert_eq!(lab.trained.len(), 3, "{lab:?}");
    assert!((lab.spent_cpu_seconds - 9.0).abs() < 1e-9, "{lab:?}");
    let names: Vec<&str> = lab.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["forecast_ret_5", "forecast_vol_5"]);
    assert!(lab.fields[1].model.ends_with("v5"), "{lab:?}");
    let field = &lab.fields[0];
    assert!(field.model.starts_with("pre300s") && field.model.contains(".full300s"));
    // Every value the pattern gave at or before the cutoff (mid-training) was dropped.
    assert!(field.dropped_in_sample > 1000, "{field:?}");
    assert_eq!(field.coverage[1].1, 1.0);
    let report = s.markdown();
    assert!(report.contains("Field `forecast_ret_5`"), "{report}");
    assert!(report.contains("Field `forecast_vol_5`"), "{report}");
    let tried = j
        .records()
        .iter()
        .rev()
        .find_map(|r| r.body.pointer("/outputs/trials").cloned())
        .unwrap();
    let with_forecast: Vec<&Value> = tried
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["signal"].as_str().unwrap().contains("forecast_ret_5"))
        .collect();
    assert!(with_forecast.len() >= 3, "{tried}");
    assert!(
        with_forecast.iter().all(|t| t["error"].is_null()),
        "{with_forecast:?}"
    );
    // A replay recomputes the field and reproduces the run.
    let r = run_with_forecaster(
        &config,
        Arc::new(Journal::sealed(j.records())),
        Mode::Replay,
    );
    assert_same(&s, &r);
    // A run cut after its first generation resumes: the field is rebuilt before the backtests.
    let records = j.records();
    let cut = records.iter().position(|r| r.exec == "backtest#1").unwrap();
    let resumed = run_with_forecaster(
        &config,
        Arc::new(Journal::new(
            records[..cut].to_vec(),
            Arc::new(MemorySink::default()),
        )),
        Mode::Resume,
    );
    assert_eq!(
        serde_json::to_string(&resumed).unwrap(),
        serde_json::to_string(&s).unwrap()
    );
}

#[test]
fn a_foundation_head_the_budget_cannot_pay_costs_only_its_field() {
    let mut config = small(GOAL);
    config.foundation = true;
    // Pretraining and the return head cost 6 CPU-seconds; the volatility head's 3 do not fit.
    config.budgets.foundation_cpu_seconds = 7.5;
    let s = run_with_forecaster(&config, fresh(), Mode::Resume);
    let lab = s.foundation.clone().unwrap();
    let names: Vec<&str> = lab.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["forecast_ret_5"], "{lab:?}");
    assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
    assert!(
        s.notes[0].contains("the foundation model gave only forecast_ret_5 (forecast_vol_5: finetune: 300 steps cost"),
        "{:?}",
        s.notes
    );
}

fn plan_with(datasets: &[&str], max_drawdown: Option<f64>) -> lim_agents::offline::Plan {
    let mut p = lim_agents::offline::plan(GOAL, &["cn_futures_daily".to_string()]);
    p.datasets = datasets.iter().map(|d| d.to_string()).collect();
    p.max_drawdown = max_drawdown;
    p.portfolio = lim_backtest::spec::Portfolio::SignThreshold {
        threshold: 0.2,
        target_vol: 0.1,
        vol_window: 60,
        vol_forecast: None,
    };
    p
}

/// The plan a real small model wrote for a Chinese-futures goal: three markets, a 1000 %
/// drawdown; on the union of their calendars no book has an active bar in validation.
#[test]
fn plans_outside_the_goal_with_absurd_limits_or_untradable_parts_are_refused_by_field() {
    use lim_pipelines::plan_check::{PlanError, check, check_goal, check_tradable};
    let m = market();
    let metas = m.datasets().unwrap();
    let split = &lim_pipelines::research::ResearchConfig::new(GOAL).universe_args(Vec::new());
    let three = [
        "cn_futures_daily",
        "us_equities_daily_adjusted",
        "us_futures_daily",
    ];
    let goal = "find a trend strategy for Chinese commodity futures";

    let e = check_goal(&plan_with(&three, Some(0.15)), goal, &metas).unwrap_err();
    assert!(matches!(e, PlanError::ForeignMarket { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "datasets: 'us_equities_daily_adjusted' is US equities, but the goal asks for Chinese futures; trade only cn_futures_daily"
    );

    let e = check_goal(&plan_with(&["cn_futures_daily"], Some(10.0)), goal, &metas).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("max_drawdown: 10 (1000%) is not a drawdown limit"),
        "{e}"
    );
    // A limit the goal states may be tightened, not loosened or dropped.
    let e = check_goal(&plan_with(&["cn_futures_daily"], Some(0.3)), GOAL, &metas).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("max_drawdown: the goal limits drawdown to 15%, but the plan has 30%"),
        "{e}"
    );
    let e = check_goal(&plan_with(&["cn_futures_daily"], None), GOAL, &metas).unwrap_err();
    assert!(e.to_string().contains("but the plan has no limit"), "{e}");
    assert!(check_goal(&plan_with(&["cn_futures_daily"], Some(0.1)), GOAL, &metas).is_ok());

    // A goal that names no market: the three calendars pass the goal, not the data.
    let e = check(
        &plan_with(&three, None),
        "find a trend strategy",
        &metas,
        m.as_ref(),
        split,
    )
    .unwrap_err();
    match &e {
        PlanError::Untradable { short, .. } => {
            let valid = short.iter().find(|s| s.part == "validation").unwrap();
            assert!(valid.bars * 2 < valid.of, "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().starts_with("datasets: on the calendar of cn_futures_daily + us_equities_daily_adjusted + us_futures_daily the universe can trade on too few bars: training "), "{e}");
    assert!(e.to_string().contains(", validation 155 of 1259"), "{e}");
    // A top-k book holding half the universe or more is no selection.
    let mut p = plan_with(&["in_equities_5min"], None);
    p.portfolio = lim_backtest::spec::Portfolio::TopK { k: 3 };
    let e = check_goal(&p, "reversal in Indian stocks", &metas).unwrap_err();
    assert_eq!(
        e.to_string(),
        "portfolio: k: 3 of 5 instruments holds half of the universe or more, close to always long; use at most 1"
    );
    let mut sized = lim_agents::offline::plan(
        "reversal in Indian stocks",
        &["in_equities_5min".to_string()],
    );
    lim_pipelines::plan_check::size_book(&mut sized, &metas);
    assert_eq!(
        sized.portfolio,
        lim_backtest::spec::Portfolio::TopK { k: 1 }
    );
    check_goal(&sized, "reversal in Indian stocks", &metas).unwrap();
    // One instrument (a currency pair, say) leaves a top-k book no choice: the keyword plan
    // trades it with the sign book, and a top-k plan is refused with that advice.
    let mut one = metas.clone();
    for d in &mut one {
        d.symbols.truncate(1);
    }
    let mut single = sized.clone();
    lim_pipelines::plan_check::size_book(&mut single, &one);
    assert!(
        matches!(
            single.portfolio,
            lim_backtest::spec::Portfolio::SignThreshold { .. }
        ),
        "{:?}",
        single.portfolio
    );
    check_goal(&single, "reversal in Indian stocks", &one).unwrap();
    let e = check_goal(&sized, "reversal in Indian stocks", &one).unwrap_err();
    assert!(
        e.to_string().contains("of 1 instrument always holds")
            && e.to_string().contains("use a sign_threshold book"),
        "{e}"
    );
    // The keyword plan of the README's goal trades.
    let keyword = lim_agents::offline::plan(
        GOAL,
        &metas.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
    );
    check(&keyword, GOAL, &metas, m.as_ref(), split).unwrap();
    check_tradable(&keyword, m.as_ref(), split).unwrap();
}

fn bad_plan_reply(datasets: &[&str], max_drawdown: f64) -> String {
    json!({"final_answer": {"plan": {"goal": GOAL, "datasets": datasets, "family": "trend",
        "portfolio": {"kind": "sign_threshold", "threshold": 0.2, "target_vol": 0.1, "vol_window": 60},
        "max_drawdown": max_drawdown, "cost_bps": 11.0, "author": "x"}, "why": "more data"}})
    .to_string()
}

#[test]
fn a_models_plan_that_fails_the_checks_is_reasked_with_the_problem_then_the_keyword_plan_stands() {
    let mut config = llm_config();
    config.budgets.max_iterations = 1;
    let three = [
        "cn_futures_daily",
        "us_equities_daily_adjusted",
        "us_futures_daily",
    ];
    let llm = ScriptedLlm::new(
        vec![
            Turn::Text(bad_plan_reply(&three, 0.15)),
            Turn::Text(bad_plan_reply(&["cn_futures_daily"], 10.0)),
            Turn::ToolCall {
                name: "list_datasets".into(),
                arguments: "{}".into(),
            },
            Turn::ToolCall {
                name: "describe_dataset".into(),
                arguments: r#"{"name": "cn_futures_daily"}"#.into(),
            },
            Turn::Text(bad_plan_reply(&three, 10.0)),
            Turn::Text(bad_plan_reply(&three, 10.0)),
            Turn::Text(critique_reply("fine")),
        ],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    );
    let j = fresh();
    let s = run(&config, llm, j.clone(), Mode::Resume).unwrap();
    assert_eq!(s.plan.strategy.datasets, ["cn_futures_daily"]);
    assert_eq!(s.plan.strategy.max_drawdown, Some(0.15));
    assert!(
        s.plan
            .review
            .starts_with("the model gave no plan that passed the checks")
            && s.plan.review.contains("the keyword plan stands")
            && s.plan
                .review
                .ends_with("which passed every check (goal, limits, data)"),
        "{}",
        s.plan.review
    );
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("the keyword plan stands")),
        "{:?}",
        s.notes
    );
    // Each re-ask carried the exact problem, naming the field.
    let asks: Vec<String> = j
        .records()
        .iter()
        .filter(|r| r.kind == Kind::Llm && r.exec == "plan#1")
        .map(|r| r.body["request"]["messages"].to_string())
        .collect();
    assert_eq!(asks.len(), 6, "the planning agent's step limit");
    // The tools it called answered, bad arguments included, as tool messages.
    assert!(
        asks[3].contains("cn_futures_daily") && asks[3].contains("\"role\":\"tool\""),
        "{}",
        asks[3]
    );
    assert!(asks[4].contains("unknown field `name`"), "{}", asks[4]);
    let tool_calls = j
        .records()
        .iter()
        .filter(|r| r.kind == Kind::Tool && r.exec == "plan#1")
        .count();
    assert_eq!(tool_calls, 2);
    assert!(
        asks[1].contains("datasets: 'us_equities_daily_adjusted' is US equities"),
        "{}",
        asks[1]
    );
    assert!(
        asks[2].contains("max_drawdown: 10 (1000%) is not a drawdown limit"),
        "{}",
        asks[2]
    );
    // The report says whose plan it is.
    assert!(s.markdown().contains("- checked: the model gave no plan"));
}

#[test]
fn a_models_plan_that_passes_the_checks_is_the_plan() {
    let mut config = llm_config();
    config.budgets.max_iterations = 1;
    let llm = ScriptedLlm::new(
        vec![Turn::Text(plan_reply()), Turn::Text(critique_reply("fine"))],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    );
    let s = run(&config, llm, fresh(), Mode::Resume).unwrap();
    assert_eq!(s.plan.strategy.author, "LLM planner (scripted)");
    assert_eq!(
        s.plan.review,
        "the model's plan passed every check (goal, limits, data), without looking at the data, over native function calling, in 1 replies; it chose not to train the foundation model; why: Chinese futures only, as the goal asks."
    );
}

/// The strategist agent backtests on its own before it answers: its exploratory strategies
/// become trials (the deflated statistics count them), it cannot reach the test period, and
/// the run replays without the LLM.
#[test]
fn the_strategist_agents_exploratory_backtests_are_trials_and_the_test_stays_sealed() {
    let mut config = llm_config();
    config.budgets.max_iterations = 2;
    let call = |name: &str, args: Value| Turn::ToolCall {
        name: name.into(),
        arguments: args.to_string(),
    };
    let llm = ScriptedLlm::new(
        vec![
            Turn::Text(plan_reply()),
            Turn::Text(critique_reply("seeds are weak")),
            call(
                "backtest",
                json!({"strategies": [{"signal": "ts_sum(returns, 15)"}]}),
            ),
            call(
                "backtest",
                json!({"strategies": [{"signal": "ts_sum(returns, 15)"}], "include_test": true}),
            ),
            Turn::ToolCalls(vec![
                ("leaderboard".into(), json!({"top": 50}).to_string()),
                ("lineage".into(), json!({"signal": "nope"}).to_string()),
            ]),
            Turn::Text(proposals(&["ts_sum(returns, 30)"])),
            Turn::Text(critique_reply("explored")),
        ],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    );
    let j = fresh();
    let s = run(&config, llm, j.clone(), Mode::Resume).unwrap();
    let t = |sig: &str| {
        s.leaderboard.iter().any(|e| e.signal == sig) || s.rejected.iter().any(|r| r.signal == sig)
    };
    assert!(t("ts_sum(returns, 15)"), "the explored strategy is a trial");
    assert!(t("ts_sum(returns, 30)"), "the proposed strategy is a trial");
    assert_eq!(s.multiple_testing.as_ref().unwrap().trials, s.trials);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("backtested 1 strategy while it worked; it counts as a trial")),
        "{:?}",
        s.notes
    );
    let calls: Vec<Value> = j
        .records()
        .iter()
        .filter(|r| r.kind == Kind::Tool && r.exec == "generate#2")
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[1]["result"]["kind"], "sealed");
    // The leaderboard tool reads the run's real trials in the run's order: by the fitness the
    // run scored them with, best first, then the rejected. The strategy the agent backtested
    // itself in this turn is judged as the run judges (a fitness or a reason), not left out.
    let board = calls[2]["result"]["result"].as_array().unwrap();
    assert!(board.len() > 3, "{board:?}");
    let scored: Vec<f64> = board.iter().map_while(|t| t["fitness"].as_f64()).collect();
    assert!(scored.windows(2).all(|w| w[0] >= w[1]), "{board:?}");
    assert!(
        board[scored.len()..]
            .iter()
            .all(|t| t["rejected"].is_string()),
        "every strategy past the scored ones is a rejected one: {board:?}"
    );
    let explored = board
        .iter()
        .find(|t| t["signal"] == "ts_sum(returns, 15)")
        .expect("the agent's own backtest is on the board");
    assert!(
        explored["fitness"].is_number() || explored["rejected"].is_string(),
        "{explored}"
    );
    let fitness = |i: usize| board[i]["fitness"].as_f64().unwrap();
    let scored: Vec<f64> = s
        .leaderboard
        .iter()
        .filter(|e| e.generation == 0)
        .map(|e| e.fitness)
        .collect();
    assert_eq!(
        fitness(0),
        scored[0],
        "the run's best of the first round leads"
    );
    assert_eq!(calls[3]["result"]["kind"], "not_found");
    // The report accounts for the agent at work.
    let g = s.agents.iter().find(|a| a.exec == "generate#2").unwrap();
    assert_eq!(
        g.tool_calls,
        ["backtest", "backtest", "leaderboard", "lineage"]
    );
    assert_eq!((g.failed_tool_calls, g.replies, g.answered), (2, 4, true));
    assert!(s.markdown().contains(
        "| generate#2 | native | 4 | backtest, backtest, leaderboard, lineage | 2 | 0 | yes |"
    ));
    let replayed = run(
        &config,
        NoLlm,
        Arc::new(Journal::sealed(j.records())),
        Mode::Replay,
    )
    .unwrap();
    assert_same(&s, &replayed);
}

#[derive(Debug)]
struct Remembered(Vec<lim_tools::Finding>);

impl lim_tools::Memory for Remembered {
    fn findings(&self, _: &[String], limit: usize) -> Result<Vec<lim_tools::Finding>, String> {
        Ok(self.0.iter().take(limit).cloned().collect())
    }
}

/// A finding of an earlier run on the sample's Chinese futures.
fn finding(conclusion: &str, data_end: Option<&str>) -> lim_tools::Finding {
    lim_tools::Finding {
        datasets: "cn_futures_daily".into(),
        frequency: "1d".into(),
        run: "r1".into(),
        goal: GOAL.into(),
        signal: "ts_sum(returns, 120)".into(),
        train_sharpe: 0.5,
        validation_sharpe: 0.4,
        fitness: Some(0.3),
        test_sharpe: Some(-0.1),
        conclusion: conclusion.into(),
        data_end: data_end.map(str::to_string),
        validation_end: Some("2013-12-25".into()),
    }
}

/// A planner that reads the research memory before it plans, and a critic.
fn memory_reader() -> ScriptedLlm {
    ScriptedLlm::new(
        vec![
            Turn::ToolCall {
                name: "past_findings".into(),
                arguments: json!({"datasets": ["cn_futures_daily"]}).to_string(),
            },
            Turn::Text(plan_reply()),
            Turn::Text(critique_reply("fine")),
        ],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    )
}

/// Runs `config` with `llm` and `memory`, returning its journal.
fn run_with_memory(config: &ResearchConfig, llm: ScriptedLlm, memory: Remembered) -> Arc<Journal> {
    let services = Services {
        market: market(),
        llm: Arc::new(llm),
        clock: Arc::new(FixedClock(1_700_000_000_000)),
        foundation: None,
        memory: Arc::new(memory),
        remote_backtests: None,
    };
    let j = fresh();
    run_services(config, services, j.clone(), Mode::Resume).unwrap();
    j
}

/// What node execution `exec` asked the model second, after its first tool call.
fn asked_after_a_tool(j: &Journal, exec: &str) -> String {
    j.records()
        .into_iter()
        .filter(|r| r.kind == Kind::Llm && r.exec == exec)
        .nth(1)
        .unwrap()
        .body["request"]
        .to_string()
}

/// The planner reads what an earlier run found; the read is journaled, so a replay sees the
/// memory as the run saw it even after the memory is gone.
#[test]
fn the_research_memory_is_read_through_the_journal_and_replays_as_it_was() {
    let mut config = llm_config();
    config.budgets.max_iterations = 1;
    let finding = finding("long windows hold up", Some("2024-12-31"));
    let llm = memory_reader();
    let exec = |llm: ScriptedLlm, memory: Arc<dyn lim_tools::Memory>, j: Arc<Journal>, mode| {
        let services = Services {
            market: market(),
            llm: Arc::new(llm),
            clock: Arc::new(FixedClock(1_700_000_000_000)),
            foundation: None,
            memory,
            remote_backtests: None,
        };
        run_services(&config, services, j, mode)
    };
    let j = fresh();
    let state = exec(
        llm,
        Arc::new(Remembered(vec![finding])),
        j.clone(),
        Mode::Resume,
    )
    .unwrap();
    let reads: Vec<Record> = j
        .records()
        .into_iter()
        .filter(|r| r.kind == Kind::Memory)
        .collect();
    assert_eq!(reads.len(), 1);
    assert_eq!(
        reads[0].body["findings"][0]["conclusion"],
        "long windows hold up"
    );
    // The model saw the finding as the tool's result, without the test Sharpe: a planner does
    // not yet know where its own sealed test lies.
    let asked = j
        .records()
        .into_iter()
        .filter(|r| r.kind == Kind::Llm && r.exec == "plan#1")
        .nth(1)
        .unwrap()
        .body["request"]
        .to_string();
    assert!(asked.contains("long windows hold up"), "{asked}");
    assert!(!asked.contains("test_sharpe"), "{asked}");
    // Replayed with an empty memory: the journal's read stands.
    let replayed = exec(
        ScriptedLlm::new(Vec::new(), Usage::default()),
        Arc::new(lim_tools::NoMemory),
        Arc::new(Journal::sealed(j.records())),
        Mode::Replay,
    )
    .unwrap();
    assert_eq!(state["summary"], replayed["summary"]);
}

/// The critic diagnoses strategies the run tried (years, folds, IC decay, correlation) and
/// may not diagnose one it did not.
#[test]
fn the_critic_agent_diagnoses_tried_strategies_only() {
    let mut config = llm_config();
    config.budgets.max_iterations = 1;
    let spec = |s: &str| json!({"signal": s, "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.1, "vol_window": 60}});
    let llm = ScriptedLlm::new(
        vec![
            Turn::Text(plan_reply()),
            Turn::ToolCalls(vec![
                (
                    "diagnose".into(),
                    json!({"strategies": [spec("ts_sum(returns, 120, 90)"), spec("ts_sum(returns, 60, 45)")]})
                        .to_string(),
                ),
                (
                    "diagnose".into(),
                    json!({"strategies": [spec("ts_sum(returns, 7)")]}).to_string(),
                ),
            ]),
            Turn::Text(critique_reply("long windows are alike")),
        ],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    );
    let j = fresh();
    let s = run(&config, llm, j.clone(), Mode::Resume).unwrap();
    assert!(s.lineage[0].diagnosis.starts_with("long windows are alike"));
    let calls: Vec<Value> = j
        .records()
        .iter()
        .filter(|r| r.kind == Kind::Tool && r.exec == "critique#1")
        .map(|r| r.body["result"].clone())
        .collect();
    let d = &calls[0]["result"];
    assert_eq!(d["strategies"].as_array().unwrap().len(), 2);
    assert!(!d["strategies"][0]["years"].as_array().unwrap().is_empty());
    assert_eq!(d["strategies"][0]["folds"].as_array().unwrap().len(), 4);
    assert_eq!(d["strategies"][0]["ic_decay"].as_array().unwrap().len(), 4);
    let c = d["correlation"].as_array().unwrap();
    assert!((c[0][0].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(c[0][1], c[1][0]);
    assert!(
        !d.to_string().contains("\"test\""),
        "no test-period numbers"
    );
    assert_eq!(calls[1]["kind"], "invalid_arguments");
    assert!(
        calls[1]["message"]
            .as_str()
            .unwrap()
            .contains("has not been tried in this run")
    );
}

/// The planning agent decides whether the foundation model's forecast is worth training; the
/// report says what it chose and why.
#[test]
fn the_planning_agent_chooses_the_foundation_model() {
    let mut config = llm_config();
    config.budgets.max_iterations = 1;
    let mut answer: Value = serde_json::from_str(&plan_reply()).unwrap();
    answer["final_answer"]["foundation_model"] = json!(true);
    answer["final_answer"]["why"] = json!("a learned forecast may add to trend signals");
    let llm = ScriptedLlm::new(
        vec![
            Turn::Text(answer.to_string()),
            Turn::Text(critique_reply("fine")),
        ],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    );
    let services = Services {
        market: market(),
        llm: Arc::new(llm),
        clock: Arc::new(FixedClock(0)),
        foundation: Some(Arc::new(Pattern)),
        memory: Arc::new(lim_tools::NoMemory),
        remote_backtests: None,
    };
    let artifacts = run_services(&config, services, fresh(), Mode::Resume).unwrap();
    let s: Summary = serde_json::from_value(artifacts["summary"].clone()).unwrap();
    assert!(s.plan.foundation_model);
    assert!(
        s.plan
            .review
            .contains("it chose to train the foundation model; why: a learned forecast"),
        "{}",
        s.plan.review
    );
    assert!(s.foundation.is_some(), "the forecast field was trained");
}

/// A model's plan that trades three calendars for a goal naming no market passes the goal but
/// not the data; the re-ask names the field and the parts short of tradable bars.
#[test]
fn a_models_plan_with_an_untradable_validation_part_is_refused_by_the_data_check() {
    let mut config = llm_config();
    config.goal = "find a trend strategy".into();
    config.budgets.max_iterations = 1;
    let three = [
        "cn_futures_daily",
        "us_equities_daily_adjusted",
        "us_futures_daily",
    ];
    let llm = ScriptedLlm::new(
        vec![
            Turn::Text(bad_plan_reply(&three, 0.15)),
            Turn::Text(plan_reply()),
            Turn::Text(critique_reply("fine")),
        ],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    );
    let j = fresh();
    let s = run(&config, llm, j.clone(), Mode::Resume).unwrap();
    assert_eq!(s.plan.strategy.datasets, ["cn_futures_daily"]);
    let reask = j
        .records()
        .into_iter()
        .filter(|r| r.kind == Kind::Llm && r.exec == "plan#1")
        .nth(1)
        .unwrap()
        .body["request"]["messages"]
        .to_string();
    assert!(
        reask.contains("datasets: on the calendar of cn_futures_daily + us_equities_daily_adjusted + us_futures_daily the universe can trade on too few bars")
            && reask.contains("validation 155 of 1259"),
        "{reask}"
    );
}

/// The strategist chooses to train the foundation model: it pretrains, fine-tunes, is refused a
/// fine-tune the budget cannot pay and one from a backbone never trained, adds the field, and
/// proposes a strategy on it. The field survives a resume cut after the node, and the run replays.
#[test]
fn the_strategist_trains_the_foundation_model_within_its_budget_and_uses_its_field() {
    let mut config = llm_config();
    config.budgets.max_iterations = 2;
    config.budgets.foundation_cpu_seconds = 5.0;
    let call = |name: &str, args: Value| Turn::ToolCall {
        name: name.into(),
        arguments: args.to_string(),
    };
    let script = vec![
        Turn::Text(plan_reply()),
        Turn::Text(critique_reply("seeds are weak")),
        call("pretrain", json!({"steps": 200, "seed": 3})),
        Turn::ToolCalls(vec![
            // 0.01 CPU-seconds a step: 400 steps would overdraw the 3 left.
            (
                "finetune".into(),
                json!({"model": "pre200s3", "mode": "full", "steps": 400}).to_string(),
            ),
            (
                "finetune".into(),
                json!({"model": "pre100s3", "mode": "probe", "steps": 50}).to_string(),
            ),
            (
                "finetune".into(),
                json!({"model": "pre200s3", "mode": "probe", "steps": 100, "seed": 1}).to_string(),
            ),
        ]),
        call(
            "predict",
            json!({"model": "pre200s3.probe100s1", "name": "fm", "why": "holdout rank IC 0.03"}),
        ),
        call(
            "backtest",
            json!({"strategies": [{"signal": "ts_mean(fm, 10)"}]}),
        ),
        Turn::Text(proposals(&["ts_mean(fm, 5)"])),
        Turn::Text(critique_reply("the forecast helps a little")),
    ];
    let services = |llm: ScriptedLlm| Services {
        market: market(),
        llm: Arc::new(llm),
        clock: Arc::new(FixedClock(0)),
        foundation: Some(Arc::new(Pattern) as Arc<dyn lim_tools::FoundationModel>),
        memory: Arc::new(lim_tools::NoMemory),
        remote_backtests: None,
    };
    let usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 10,
    };
    let j = fresh();
    let artifacts = run_services(
        &config,
        services(ScriptedLlm::new(script.clone(), usage)),
        j.clone(),
        Mode::Resume,
    )
    .unwrap();
    let s: Summary = serde_json::from_value(artifacts["summary"].clone()).unwrap();
    let calls: Vec<Value> = j
        .records()
        .iter()
        .filter(|r| r.kind == Kind::Tool && r.exec == "generate#2")
        .map(|r| r.body["result"].clone())
        .collect();
    assert_eq!(calls[0]["result"]["model"], "pre200s3", "{calls:?}");
    assert_eq!(calls[1]["kind"], "over_budget", "{}", calls[1]);
    assert!(
        calls[1]["message"]
            .as_str()
            .unwrap()
            .contains("ask for at most 300 steps"),
        "{}",
        calls[1]
    );
    assert_eq!(calls[2]["kind"], "not_found", "{}", calls[2]);
    assert_eq!(calls[3]["result"]["model"], "pre200s3.probe100s1");
    assert_eq!(calls[3]["result"]["details"]["holdout_rank_ic"], 0.03);
    assert_eq!(calls[4]["result"]["name"], "fm");
    // The field was usable at once, in the loop and in the answer.
    assert!(
        calls[5]["result"]["strategies"][0]["error"].is_null(),
        "{}",
        calls[5]
    );
    let lab = s.foundation.clone().unwrap();
    assert!((lab.spent_cpu_seconds - 3.0).abs() < 1e-9, "{lab:?}");
    assert_eq!(lab.fields[0].why, "holdout rank IC 0.03");
    let tried = |sig: &str| {
        s.leaderboard.iter().any(|e| e.signal == sig) || s.rejected.iter().any(|r| r.signal == sig)
    };
    assert!(tried("ts_mean(fm, 10)") && tried("ts_mean(fm, 5)"), "{s:?}");
    assert!(s.markdown().contains("Why: holdout rank IC 0.03"));
    // Cut after the strategist's node: a resume rebuilds the field before the backtests, and
    // asks the LLM nothing it asked before.
    let records = j.records();
    let cut = records.iter().position(|r| r.exec == "backtest#2").unwrap();
    let resumed = run_services(
        &config,
        services(ScriptedLlm::new(script[script.len() - 1..].to_vec(), usage)),
        Arc::new(Journal::new(
            records[..cut].to_vec(),
            Arc::new(MemorySink::default()),
        )),
        Mode::Resume,
    )
    .unwrap();
    assert_eq!(resumed["summary"], artifacts["summary"]);
    let replayed = run_services(
        &config,
        services(ScriptedLlm::new(vec![], usage)),
        Arc::new(Journal::sealed(j.records())),
        Mode::Replay,
    )
    .unwrap();
    assert_eq!(replayed["summary"], artifacts["summary"]);
}

/// The run's deadline stops an agent's loop before its next reply, not only between nodes;
/// the clock reads are journaled, so a replay ends the loop at the same place.
#[test]
fn the_deadline_stops_an_agent_loop_before_its_next_reply() {
    let mut config = llm_config();
    config.budgets.max_iterations = 10;
    config.budgets.deadline_minutes = Some(25.0);
    let llm = ScriptedLlm::new(
        vec![
            Turn::Text(plan_reply()),
            Turn::Text(critique_reply("seeds are weak")),
        ],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    );
    let services = |llm: ScriptedLlm| Services {
        market: market(),
        llm: Arc::new(llm),
        // Start reads 0; critique#1's agent reads 10 minutes and answers, its stop rule reads
        // 20; generate#2's agent reads 30, past the deadline, and asks nothing.
        clock: Arc::new(Racing::default()),
        foundation: None,
        memory: Arc::new(lim_tools::NoMemory),
        remote_backtests: None,
    };
    let j = fresh();
    let artifacts = run_services(&config, services(llm), j.clone(), Mode::Resume).unwrap();
    let asked = j.records().iter().filter(|r| r.kind == Kind::Llm).count();
    assert_eq!(
        asked, 2,
        "only the plan and the first critique asked the LLM"
    );
    let s: Summary = serde_json::from_value(artifacts["summary"].clone()).unwrap();
    assert_eq!(s.stop_reason, "deadline reached");
    assert!(
        s.notes
            .iter()
            .any(|n| n.starts_with("generate#2") && n.contains("the run's deadline")),
        "{:?}",
        s.notes
    );
    let replayed = run_services(
        &config,
        services(ScriptedLlm::new(vec![], Usage::default())),
        Arc::new(Journal::sealed(j.records())),
        Mode::Replay,
    )
    .unwrap();
    assert_eq!(replayed["summary"], artifacts["summary"]);
}

/// The bundled Chinese futures, split as the research runs split them.
fn cn_futures_session() -> lim_backtest::session::Session {
    lim_tools::load_session(
        market().as_ref(),
        &serde_json::from_value(
            json!({"datasets": ["cn_futures_daily"], "train": 0.6, "valid": 0.2, "embargo": 5}),
        )
        .unwrap(),
        None,
    )
    .unwrap()
}

/// Finalists are chosen for diversity: a leader whose training and validation returns move
/// with an earlier finalist's gives way to the next one; too few different ones, and the best
/// of the rest that are not copies fill the places.
#[test]
fn finalists_that_are_the_same_bet_give_way_to_different_ones() {
    let session = cn_futures_session();
    // The keyword plan's book: the signal's sign, volatility-targeted.
    let plan = lim_agents::offline::plan(GOAL, &["cn_futures_daily".to_string()]);
    let spec = |s: &str| (s.to_string(), lim_agents::offline::spec_for(&plan, s));
    // Under a sign book, a sum and a mean over the same window are one strategy.
    let pool = vec![
        spec("ts_sum(returns, 60)"),
        spec("ts_mean(returns, 60)"),
        spec("-ts_sum(returns, 5)"),
    ];
    let names = |v: Vec<(String, lim_backtest::spec::StrategySpec)>| -> Vec<String> {
        v.into_iter().map(|(n, _)| n).collect()
    };
    assert_eq!(
        names(research::diverse(&session, pool.clone(), 2)),
        ["ts_sum(returns, 60)", "-ts_sum(returns, 5)"]
    );
    assert_eq!(names(research::diverse(&session, pool, 3)).len(), 3);
    // When the top of the leaderboard is copies of one book (8 = 2 finalists × 4 leaders), the
    // second finalist is the best different book further down, not a copy.
    let copies = [
        "ts_sum(returns, 60)",
        "ts_mean(returns, 60)",
        "ts_sum(returns, 60) * 2",
        "ts_mean(returns, 60) * 3",
        "ts_sum(returns, 60) / 2",
        "2 * ts_mean(returns, 60)",
        "ts_sum(returns, 60) + 0",
        "ts_mean(returns, 60) * 5",
    ];
    let mut pool: Vec<_> = copies.iter().map(|s| spec(s)).collect();
    pool.push(spec("-ts_sum(returns, 5)"));
    pool.push(spec("ts_sum(returns, 20)"));
    assert_eq!(
        names(research::diverse(&session, pool, 2)),
        ["ts_sum(returns, 60)", "-ts_sum(returns, 5)"]
    );
    // Beyond the top 8, a different book only fills a place that no non-copy of the top takes:
    // a near relative (55 bars against 60) at the top comes before it.
    let mut pool: Vec<_> = copies[..7].iter().map(|s| spec(s)).collect();
    pool.push(spec("ts_sum(returns, 55)"));
    pool.push(spec("-ts_sum(returns, 5)"));
    assert_eq!(
        names(research::diverse(&session, pool, 2)),
        ["ts_sum(returns, 60)", "ts_sum(returns, 55)"]
    );
    // Copies only when nothing else is left.
    let pool: Vec<_> = copies[..3].iter().map(|s| spec(s)).collect();
    assert_eq!(
        names(research::diverse(&session, pool, 2)),
        ["ts_sum(returns, 60)", "ts_mean(returns, 60)"]
    );
}

/// A finalist that is a baseline found again is named as such: its closest baseline and their
/// correlation over training and validation are kept, and the report says it is not new.
#[test]
fn a_finalist_that_is_a_baseline_found_again_is_named() {
    let session = cn_futures_session();
    let run = run(&small(GOAL), NoLlm, fresh(), Mode::Resume).unwrap();
    let spec = |s: &str| {
        (
            s.to_string(),
            lim_agents::offline::spec_for(&run.plan.strategy, s),
        )
    };
    let bases = research::baselines(&run.plan, 1);
    // 12-1 momentum written another way, and a short reversal that is no baseline.
    let finalists = [
        spec("ts_sum(returns, 252) - ts_sum(returns, 21) + 0"),
        spec("-ts_sum(returns, 3)"),
        spec("ts_sum(returns, 21) - ts_sum(returns, 252)"),
    ];
    let (f, _, _, _) = research::test_finalists(&session, &finalists, &bases);
    let (name, c) = f[0].closest_baseline.clone().unwrap();
    assert_eq!(name, "time-series momentum, 12-1 months");
    assert!(c > 0.99, "{c}");
    let (_, c) = f[1].closest_baseline.clone().unwrap();
    assert!(c.abs() < research::MAX_BASELINE_CORRELATION, "{c}");
    let mut s = run.clone();
    s.finalists = f;
    let report = s.markdown();
    assert!(
        report.contains("`ts_sum(returns, 252) - ts_sum(returns, 21) + 0` is the baseline time-series momentum, 12-1 months found again (correlation 1.00 over training and validation): not a new signal."),
        "{report}"
    );
    assert!(!report.contains("`-ts_sum(returns, 3)` is the baseline"));
    assert!(
        report.contains("`ts_sum(returns, 21) - ts_sum(returns, 252)` is the baseline time-series momentum, 12-1 months reversed found again (correlation -1.00"),
        "{report}"
    );
    let page = research::tearsheet(&s, None);
    assert!(page.contains("is the baseline time-series momentum, 12-1 months found again"));
}

/// Beating always long is tested, not only counted: each finalist and the combination get the
/// z of their test Sharpe against always long's, from their returns on the test's bars, and
/// the report says how many are above or below it beyond chance.
#[test]
fn each_finalist_is_tested_against_always_long_on_the_test_bars() {
    let config = small(GOAL);
    let artifacts = offline_run(&config, market());
    let s: Summary = serde_json::from_value(artifacts["summary"].clone()).unwrap();
    let curves: research::Curves = serde_json::from_value(artifacts["curves"].clone()).unwrap();
    let &(_, a, b) = curves
        .parts
        .iter()
        .find(|p| p.0 == lim_market::Part::Test)
        .unwrap();
    let test = |name: &str| -> Vec<f64> {
        let c = curves.series.iter().find(|c| c.name == name).unwrap();
        c.net[a..b].iter().map(|v| v.unwrap_or(f64::NAN)).collect()
    };
    let base = &s.baselines[0];
    assert_eq!(base.name, "always long, equal weight");
    let mut books: Vec<(&str, f64)> = s
        .finalists
        .iter()
        .map(|f| (f.signal.as_str(), f.test.sharpe))
        .collect();
    books.push((research::COMBINED, s.combined.as_ref().unwrap().test.sharpe));
    assert_eq!(s.versus_always_long.len(), books.len());
    for (name, sharpe) in books {
        let t = s
            .versus_always_long
            .iter()
            .find(|t| t.strategy == name)
            .unwrap();
        let by_hand =
            lim_backtest::stats::sharpe_difference(&test(name), &test(&base.name)).unwrap();
        assert!(
            (t.z - by_hand.z).abs() < 1e-12,
            "{name}: {} against {}",
            t.z,
            by_hand.z
        );
        assert!((t.sharpe_difference - (sharpe - base.test.sharpe)).abs() < 1e-12);
    }
    let above = s
        .versus_always_long
        .iter()
        .filter(|t| t.strategy != research::COMBINED && t.z >= 1.96)
        .count();
    let below = s
        .versus_always_long
        .iter()
        .filter(|t| t.strategy != research::COMBINED && t.z <= -1.96)
        .count();
    let report = s.markdown();
    assert!(
        report.contains(&format!(
            "Beyond chance (|z| ≥ 1.96): {above} above it, {below} below; the combination "
        )),
        "{report}"
    );
    assert!(
        report.contains("| Sharpe over always long (z) |"),
        "{report}"
    );
}

/// The tearsheet is one self-contained page: every section, four charts drawn from the
/// curves, the finalists' numbers as in the JSON summary, the summary itself embedded, and
/// nothing to fetch.
#[test]
fn the_tearsheet_holds_every_section_and_the_summarys_numbers_and_fetches_nothing() {
    let config = small(GOAL);
    let artifacts = offline_run(&config, market());
    let s: Summary = serde_json::from_value(artifacts["summary"].clone()).unwrap();
    let curves: research::Curves = serde_json::from_value(artifacts["curves"].clone()).unwrap();
    // Finalists, baselines and the combination, over every bar of the three parts.
    assert_eq!(
        curves.series.len(),
        s.finalists.len() + s.baselines.len() + usize::from(s.combined.is_some())
    );
    assert!(
        curves
            .series
            .iter()
            .all(|c| c.net.len() == curves.times.len())
    );
    let html = research::tearsheet(&s, Some(&curves));
    for id in [
        "plan",
        "curves",
        "years",
        "finalists",
        "multiple-testing",
        "leaderboard",
        "lineage",
        "agents",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\"")),
            "no section {id}"
        );
    }
    for id in ["equity", "drawdown", "rolling-sharpe", "rank-ic"] {
        assert!(
            html.contains(&format!("<figure id=\"{id}\"")),
            "no chart {id}"
        );
    }
    for f in &s.finalists {
        assert!(html.contains(&format!("data-v=\"{}\"", f.test.sharpe)));
    }
    // The leaderboard's family tree: every entry in it, each with its chain to a seed.
    assert!(html.contains("id=\"family\""));
    for e in &s.leaderboard {
        assert!(
            s.family.iter().any(|(sig, _)| *sig == e.signal),
            "{}",
            e.signal
        );
        let mut cur = Some(e.signal.clone());
        let mut steps = 0;
        while let Some(sig) = cur {
            cur = s
                .family
                .iter()
                .find(|(x, _)| *x == sig)
                .and_then(|(_, p)| p.clone());
            steps += 1;
            assert!(steps < 50, "a cycle above {}", e.signal);
        }
        assert!(html.contains(&format!(
            "<code>{}</code> <b>#{}</b>",
            research::escape_html(&e.signal),
            e.rank
        )));
    }
    // The finalists' IC decay on the sealed test, every horizon, as computed by the session.
    assert_eq!(curves.ic_decay.len(), s.finalists.len());
    assert!(html.contains("id=\"ic-decay\""));
    for d in &curves.ic_decay {
        let horizons: Vec<usize> = d.by_horizon.iter().map(|(h, _)| *h).collect();
        assert_eq!(horizons, research::IC_DECAY_HORIZONS);
        assert!(d.by_horizon.iter().any(|(_, v)| v.is_some()), "{d:?}");
        for (_, v) in &d.by_horizon {
            if let Some(v) = v {
                assert!(html.contains(&format!("data-v=\"{v}\"")), "{v} not shown");
            }
        }
    }
    let start = html.find("id=\"summary\">").unwrap() + "id=\"summary\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let embedded: Summary = serde_json::from_str(&html[start..end].replace("<\\/", "</")).unwrap();
    assert_eq!(
        serde_json::to_value(&embedded).unwrap(),
        serde_json::to_value(&s).unwrap()
    );
    for external in ["src=", "href=", "url(", "@import"] {
        assert!(!html.contains(external), "the page would fetch: {external}");
    }
    // A run recorded before curves existed still gets its page, without charts.
    let bare = research::tearsheet(&s, None);
    assert!(bare.contains("recorded before LIM kept its curves") && !bare.contains("<svg"));
}

/// A union calendar with holes (two markets with different holidays): the offline strategist's
/// windows and the baselines' signals need only 75 % of their bars, so the finalists trade in
/// the sealed test; with strict windows every window spanning a holiday of either market
/// would be blank.
#[test]
fn on_a_calendar_with_holes_the_search_and_the_baselines_tolerate_missing_bars() {
    use std::fmt::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("ts,symbol,open,high,low,close,volume\n");
    let (mut seed, day0) = (7u64, 10_957i64); // 2000-01-01
    for (k, sym) in [
        "XA:ONE", "XA:TWO", "XA:THREE", "XB:FOUR", "XB:FIVE", "XB:SIX",
    ]
    .iter()
    .enumerate()
    {
        let mut p = 100.0;
        for i in 0..2_000i64 {
            // Market A is shut every 25th day, market B every 31st (about 3 % of the union's
            // bars each, as stock indices of three countries).
            let shut = if k < 3 { i % 25 == 4 } else { i % 31 == 6 };
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            p *= 1.0 + 0.02 * u;
            if shut {
                continue;
            }
            let d = lim_market::Timestamp((day0 + i) * 86_400).date_string();
            let _ = writeln!(csv, "{d},{sym},{p},{},{},{p},1000", p * 1.01, p * 0.99);
        }
    }
    std::fs::write(dir.path().join("indices_daily.csv"), csv).unwrap();
    let market: Arc<dyn MarketData> = Arc::new(Catalog::open_dir(dir.path(), None).unwrap());
    let config = small("mean reversion in equity indices");
    let artifacts = offline_run(&config, market);
    let s: Summary = serde_json::from_value(artifacts["summary"].clone()).unwrap();
    assert!(!s.finalists.is_empty());
    for f in &s.finalists {
        assert!(
            f.test.bars > 20,
            "{} does not trade in the test: {:?}",
            f.signal,
            f.test
        );
    }
    let windowed = s
        .finalists
        .iter()
        .map(|f| f.signal.as_str())
        .chain(s.baselines.iter().map(|b| b.signal.as_str()))
        .filter(|sig| sig.contains("ts_"));
    for sig in windowed {
        let e = lim_backtest::parse(
            sig,
            &[
                "close",
                "returns",
                "open",
                "high",
                "low",
                "volume",
                "vwap",
                "dollar_volume",
            ],
        )
        .unwrap();
        assert_eq!(
            e.with_min_count(Some(0.75)).to_string(),
            sig,
            "{sig} does not tolerate the calendar's holes"
        );
    }
}

/// On back-adjusted US equities, a book that reads price levels (the search's mutations make
/// them: `rank(-low)`) is rejected as looking ahead and never reaches the leaderboard.
#[test]
fn strategies_that_read_price_levels_are_rejected_as_looking_ahead() {
    let mut config = small("short-term reversal in US stocks");
    config.budgets.max_iterations = 6;
    let s = run(&config, NoLlm, fresh(), Mode::Resume).unwrap();
    let level: Vec<&str> = s
        .rejected
        .iter()
        .filter(|r| r.reason == research::LEVEL_DEPENDENT)
        .map(|r| r.signal.as_str())
        .collect();
    assert!(!level.is_empty(), "{:?}", s.rejected);
    let levels = ["open", "high", "low", "close", "vwap"];
    for e in &s.leaderboard {
        // Every leader reads prices only through returns or ratios the check accepted.
        assert!(!level.contains(&e.signal.as_str()), "{}", e.signal);
    }
    assert!(
        level
            .iter()
            .all(|sig| levels.iter().any(|f| sig.contains(f))),
        "{level:?}"
    );
}

/// A run as of an earlier time reads only what earlier runs measured on data that had happened
/// by then: a finding whose test ran past the run's as-of time (or that does not say where its
/// data ended) is not shown to the model, and the test Sharpe it carries never reaches it.
#[test]
fn a_run_as_of_an_earlier_time_reads_no_finding_measured_after_it() {
    let mut config = llm_config();
    config.budgets.max_iterations = 1;
    config.as_of = Some("2019-12-31".into());
    let memory = Remembered(vec![
        finding("seen before the cut", Some("2019-12-31")),
        finding("measured after the cut", Some("2020-01-02")),
        finding("of no known period", None),
    ]);
    let j = run_with_memory(&config, memory_reader(), memory);
    let asked = asked_after_a_tool(&j, "plan#1");
    assert!(asked.contains("seen before the cut"), "{asked}");
    assert!(!asked.contains("measured after the cut"), "{asked}");
    assert!(!asked.contains("of no known period"), "{asked}");
}

/// Once the universe says where the run's sealed test begins (2020-12-21 on the sample), the
/// critic reads nothing measured on it: an earlier run's test Sharpe only if its test ended
/// before, and none of a run whose validation reached into it.
#[test]
fn the_critic_reads_nothing_of_earlier_runs_measured_on_its_sealed_test() {
    let mut config = llm_config();
    config.budgets.max_iterations = 1;
    let memory = Remembered(vec![
        lim_tools::Finding {
            test_sharpe: Some(0.777),
            validation_end: Some("2016-12-06".into()),
            ..finding("an earlier test", Some("2020-12-11"))
        },
        lim_tools::Finding {
            test_sharpe: Some(0.888),
            validation_end: Some("2020-12-11".into()),
            ..finding("the same test", Some("2024-12-31"))
        },
        lim_tools::Finding {
            validation_end: Some("2022-06-30".into()),
            ..finding("a validation into the test", Some("2024-12-31"))
        },
    ]);
    let read = || Turn::ToolCall {
        name: "past_findings".into(),
        arguments: json!({"datasets": ["cn_futures_daily"]}).to_string(),
    };
    let llm = ScriptedLlm::new(
        vec![
            read(),
            Turn::Text(plan_reply()),
            read(),
            Turn::Text(critique_reply("fine")),
        ],
        Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
        },
    );
    let j = run_with_memory(&config, llm, memory);
    let asked = |exec: &str| asked_after_a_tool(&j, exec);
    let critic = asked("critique#1");
    assert!(
        critic.contains("an earlier test") && critic.contains("0.777"),
        "{critic}"
    );
    assert!(
        critic.contains("the same test") && !critic.contains("0.888"),
        "{critic}"
    );
    assert!(!critic.contains("a validation into the test"), "{critic}");
    let planner = asked("plan#1");
    assert!(
        !planner.contains("0.777") && !planner.contains("0.888"),
        "{planner}"
    );
}
