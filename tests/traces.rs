//! The committed traces under `tests/traces/` replay exactly: no LLM, no network, no GPU.
//!
//! A changed prompt, tool or engine that alters a run shows up here as a divergence naming
//! the node and the first differing event. When the change is intended, re-record on purpose:
//! `LIM_RERECORD=1 cargo test --test traces`, and commit the new traces with the change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::PathBuf;
use std::sync::Arc;

use lim_agents::chat::Usage;
use lim_agents::client::{LlmClient, ScriptedLlm, Turn};
use lim_agents::error::LlmError;
use lim_market::{Catalog, MarketData};
use lim_pipelines::engine::Mode;
use lim_pipelines::journal::{FixedClock, Journal, Kind, MemorySink};
use lim_pipelines::research::{
    self, NoLlm, ResearchConfig, ResearchParts, Services, StrategistConfig,
};
use lim_pipelines::store::RunMeta;
use lim_pipelines::trace;
use serde_json::{Value, json};

const CLOCK: i64 = 1_795_000_000_000;

// The binary's foundation model, so a committed trace replays real training.
#[path = "../src/forecaster.rs"]
#[allow(dead_code)]
mod forecaster;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/traces")
}

fn market() -> Arc<dyn MarketData> {
    Arc::new(Catalog::bundled(None))
}

/// Scenarios whose name says so have the foundation model.
fn foundation(name: &str) -> Option<Arc<dyn lim_tools::FoundationModel>> {
    name.contains("foundation")
        .then(|| Arc::new(forecaster::FoundationForecaster::new(market())) as _)
}

fn run<L: LlmClient + 'static>(
    name: &str,
    config: &ResearchConfig,
    llm: L,
    journal: Arc<Journal>,
    mode: Mode,
) -> Result<lim_pipelines::RunState, String> {
    let exec = research::executor(ResearchParts {
        services: Services {
            market: market(),
            llm: Arc::new(llm),
            clock: Arc::new(FixedClock(CLOCK)),
            foundation: foundation(name),
            memory: Arc::new(lim_tools::NoMemory),
            remote_backtests: None,
        },
        config: config.clone(),
    })
    .unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(exec.run(journal, research::initial(config), mode, |_| {}))
        .map_err(|e| e.to_string())
}

fn small(goal: &str) -> ResearchConfig {
    let mut c = ResearchConfig::new(goal);
    c.population = 4;
    c.budgets.max_iterations = 3;
    c
}

/// The scenarios behind the traces.
fn scenarios() -> Vec<(&'static str, ResearchConfig, Option<Vec<Turn>>)> {
    let goal = "find a robust trend strategy for Chinese commodity futures, max drawdown 15%";
    let mut llm = small(goal);
    llm.strategist = StrategistConfig::Llm {
        model: "scripted".into(),
        base_url: "http://127.0.0.1:9/v1".into(),
    };
    let plan = json!({"goal": goal, "datasets": ["cn_futures_daily"], "family": "trend",
        "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.1, "vol_window": 60},
        "max_drawdown": 0.15, "cost_bps": 10.0, "author": "x"});
    let critique = |t: &str| {
        json!({"diagnosis": t, "hypotheses": ["longer lookbacks"], "likely_luck": false})
            .to_string()
    };
    let answer =
        json!({"final_answer": {"plan": plan, "why": "Chinese futures, as the goal says"}});
    let turns = vec![
        Turn::Text(answer.to_string()),
        Turn::Text(critique("the seeds trade too often")),
        // A reply that does not parse, then its repair after the re-ask.
        Turn::Text("{\"strategies\": [{\"signal\": \"ts_sum(returns, 20\"}]}".into()),
        Turn::Text(json!({"strategies": [{"signal": "ts_sum(returns, 30)"}, {"signal": "decay_linear(returns, 60)"}]}).to_string()),
        // The provider fails during a critique; the loop goes on without it.
        Turn::Error(LlmError::Server { status: 503, message: "overloaded".into() }),
        Turn::Text(json!({"strategies": [{"signal": "ts_zscore(ts_sum(returns, 30), 60)"}]}).to_string()),
        Turn::Text(critique("longer windows help")),
    ];
    let mut one = llm.clone();
    one.budgets.max_iterations = 1;
    // Native function calling: two calls in one reply (run concurrently, journaled in order),
    // then the final answer as a call.
    let native = vec![
        Turn::ToolCalls(vec![
            ("list_datasets".into(), "{}".into()),
            (
                "describe_dataset".into(),
                r#"{"dataset": "cn_futures_daily"}"#.into(),
            ),
        ]),
        Turn::ToolCall {
            name: "final_answer".into(),
            arguments: answer["final_answer"].to_string(),
        },
        Turn::Text(critique("trend seeds hold up")),
    ];
    // A server that ignores tools: text first, then the JSON protocol, a bad call, a good one.
    let json_protocol = vec![
        Turn::Text("I will look at the Chinese futures first.".into()),
        Turn::Text(json!({"tool": "describe_dataset", "arguments": {"name": "x"}}).to_string()),
        Turn::Text(
            json!({"tool": "describe_dataset", "arguments": {"dataset": "cn_futures_daily"}})
                .to_string(),
        ),
        Turn::Text(answer.to_string()),
        Turn::Text(critique("trend seeds hold up")),
    ];
    // The strategist backtests a candidate and reads the leaderboard before it answers; the
    // critic diagnoses the leader.
    let mut two = llm.clone();
    two.budgets.max_iterations = 2;
    let strategist = vec![
        Turn::Text(answer.to_string()),
        Turn::Text(critique("the seeds trade too often")),
        Turn::ToolCalls(vec![
            ("backtest".into(), json!({"strategies": [{"signal": "ts_sum(returns, 15)"}]}).to_string()),
            ("leaderboard".into(), json!({"top": 3}).to_string()),
        ]),
        Turn::Text(json!({"strategies": [{"signal": "ts_sum(returns, 30)"}]}).to_string()),
        Turn::ToolCall {
            name: "diagnose".into(),
            arguments: json!({"strategies": [{"signal": "ts_sum(returns, 30)",
                "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.1, "vol_window": 60}}]})
            .to_string(),
        },
        Turn::Text(critique("thirty days holds up")),
    ];
    // The strategist judges a forecast worth a try: it pretrains the real foundation model
    // briefly, fine-tunes a probe, adds its predictions as a field and backtests a signal on it.
    let mut lab = two.clone();
    lab.budgets.foundation_cpu_seconds = 2.0;
    let foundation = vec![
        Turn::Text(answer.to_string()),
        Turn::Text(critique("the seeds trade too often")),
        Turn::ToolCall {
            name: "pretrain".into(),
            arguments: json!({"steps": 60, "seed": 1}).to_string(),
        },
        Turn::ToolCall {
            name: "finetune".into(),
            arguments: json!({"model": "pre60s1", "mode": "probe", "steps": 40, "seed": 1})
                .to_string(),
        },
        Turn::ToolCall {
            name: "predict".into(),
            arguments: json!({"model": "pre60s1.probe40s1", "name": "fm",
                "why": "a forecast may time the trend"})
            .to_string(),
        },
        Turn::ToolCall {
            name: "backtest".into(),
            arguments: json!({"strategies": [{"signal": "ts_mean(fm, 10)"}]}).to_string(),
        },
        Turn::Text(json!({"strategies": [{"signal": "ts_mean(fm, 20)"}]}).to_string()),
        Turn::Text(critique("the forecast is weak")),
    ];
    vec![
        ("offline_cn_futures_trend", small(goal), None),
        (
            "scripted_strategist_trains_the_foundation_model",
            lab,
            Some(foundation),
        ),
        (
            "scripted_strategist_and_critic_call_tools",
            two,
            Some(strategist),
        ),
        (
            "scripted_planner_calls_tools_in_parallel",
            one.clone(),
            Some(native),
        ),
        ("scripted_planner_json_protocol", one, Some(json_protocol)),
        ("scripted_llm_repairs_and_failures", llm, Some(turns)),
        (
            "offline_us_equities_reversal",
            small("short-term reversal in US stocks"),
            None,
        ),
    ]
}

fn record(name: &str, config: &ResearchConfig, turns: Option<Vec<Turn>>) {
    let sink = Arc::new(MemorySink::default());
    let journal = Arc::new(Journal::new(Vec::new(), sink));
    match turns {
        Some(t) => run(
            name,
            config,
            ScriptedLlm::new(
                t,
                Usage {
                    prompt_tokens: 600,
                    completion_tokens: 90,
                },
            ),
            journal.clone(),
            Mode::Resume,
        ),
        None => run(name, config, NoLlm, journal.clone(), Mode::Resume),
    }
    .unwrap();
    let manifest = research::manifest(market().as_ref()).unwrap();
    let meta = RunMeta {
        id: name.into(),
        fingerprint: research::fingerprint(config, &manifest),
        created_ms: CLOCK,
        goal: config.goal.clone(),
        config: serde_json::to_value(config).unwrap(),
        manifest,
        status: lim_pipelines::store::RunStatus::Finished,
        stop_reason: None,
    };
    std::fs::write(
        dir().join(format!("{name}.jsonl")),
        trace::export(&meta, &journal.records()),
    )
    .unwrap();
}

#[test]
fn committed_traces_replay_exactly() {
    if std::env::var_os("LIM_RERECORD").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        for (name, config, turns) in scenarios() {
            record(name, &config, turns);
        }
    }
    let mut replayed = 0;
    for (name, _, _) in scenarios() {
        let path = dir().join(format!("{name}.jsonl"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; record it with LIM_RERECORD=1", path.display()));
        let (meta, loaded) = trace::import(&text).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let config: ResearchConfig = serde_json::from_value(meta.config.clone()).unwrap();
        assert_eq!(
            meta.manifest,
            research::manifest(market().as_ref()).unwrap(),
            "{name}: the bundled sample changed; re-record with LIM_RERECORD=1"
        );
        let recorded: Vec<String> = loaded
            .records
            .iter()
            .filter(|r| r.kind == Kind::Node)
            .map(|r| r.exec.clone())
            .collect();
        let recorded_summary = loaded
            .records
            .iter()
            .rev()
            .find_map(|r| r.body.pointer("/outputs/summary").cloned())
            .unwrap();
        let state = run(name, &config, NoLlm, Arc::new(Journal::sealed(loaded.records)), Mode::Replay)
            .unwrap_or_else(|e| {
                panic!("{name}: {e}\nIf the change is intended, re-record: LIM_RERECORD=1 cargo test --test traces")
            });
        assert_eq!(state.completed, recorded, "{name}");
        assert_eq!(state.artifacts["summary"], recorded_summary, "{name}");
        replayed += 1;
    }
    assert_eq!(replayed, 7);
}

#[test]
fn the_traces_cover_llm_repairs_failures_and_both_kinds_of_book() {
    let read = |n: &str| std::fs::read_to_string(dir().join(format!("{n}.jsonl"))).unwrap();
    let llm = read("scripted_llm_repairs_and_failures");
    assert!(
        llm.contains("overloaded"),
        "a provider failure is journaled"
    );
    assert!(
        llm.contains("the JSON does not match the schema") || llm.contains("does not parse"),
        "a re-ask after a bad reply is journaled"
    );
    let (_, l) = trace::import(&read("offline_us_equities_reversal")).unwrap();
    let plan: Value = l
        .records
        .iter()
        .find_map(|r| r.body.pointer("/outputs/plan").cloned())
        .unwrap();
    assert_eq!(plan["strategy"]["portfolio"]["kind"], "top_k");
    let (_, l) = trace::import(&read("offline_cn_futures_trend")).unwrap();
    assert!(
        l.records.iter().all(|r| r.kind != Kind::Llm),
        "the offline strategist asks no LLM"
    );
    // The strategist trained the foundation model, and its field reached the leaderboard.
    let (_, l) = trace::import(&read("scripted_strategist_trains_the_foundation_model")).unwrap();
    let tools: Vec<&str> = l
        .records
        .iter()
        .filter(|r| r.kind == Kind::Tool)
        .filter_map(|r| r.body["tool"].as_str())
        .collect();
    for t in ["pretrain", "finetune", "predict", "backtest"] {
        assert!(tools.contains(&t), "{t} in {tools:?}");
    }
    let summary = l
        .records
        .iter()
        .rev()
        .find_map(|r| r.body.pointer("/outputs/summary").cloned())
        .unwrap();
    assert_eq!(summary["foundation"]["fields"][0]["name"], "fm");
    assert!(summary.to_string().contains("ts_mean(fm, 20)"));
}
