//! The tool belt as a model sees it: stable definitions, failures as values, a sealed test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::sync::Arc;

use lim_backtest::session::Session;
use lim_market::{AsOf, Catalog, MarketData, PanelQuery, SplitSpec};
use lim_tools::{
    BacktestTool, ChooseUniverse, ChooseUniverseArgs, DataEnd, DescribeDataset, Leaderboard,
    Lineage, ListDatasets, Registry, ResearchLog, Universe,
};

fn registry() -> Registry {
    registry_on(Arc::new(ResearchLog::default()))
}

/// The signals a `leaderboard` call shows, in its order.
fn signals(lb: &serde_json::Value) -> Vec<&str> {
    lb["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["signal"].as_str().unwrap())
        .collect()
}

/// The tool belt over a run's `log`.
fn registry_on(log: Arc<ResearchLog>) -> Registry {
    let catalog = Arc::new(Catalog::bundled(None));
    let mut set = catalog
        .panels(
            &PanelQuery::new(AsOf::LATEST, ["us_equities_daily_adjusted"])
                .fields(lim_backtest::frame::FIELDS),
        )
        .unwrap();
    let session = Arc::new(Session::new(&mut set, SplitSpec::default()).unwrap());
    let market: Arc<dyn MarketData> = catalog;
    let universe = Arc::new(Universe::new(Some(session)));
    Registry::default()
        .with(ListDatasets {
            market: market.clone(),
            end: DataEnd::Whole,
        })
        .with(DescribeDataset {
            market: market.clone(),
            end: DataEnd::Whole,
        })
        .with(ChooseUniverse {
            market,
            universe: universe.clone(),
        })
        .with(BacktestTool {
            universe,
            log: log.clone(),
            remote: None,
            scorer: None,
        })
        .with(Leaderboard { log: log.clone() })
        .with(Lineage { log })
}

#[test]
fn tool_definitions_are_stable() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/tools.json");
    let got = serde_json::to_string_pretty(&registry().specs()).unwrap() + "\n";
    if std::env::var_os("LIM_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "the tool definitions changed; they are part of the prompt. Review and update {}:\n{got}",
        path.display()
    );
}

#[tokio::test]
async fn the_backtest_tool_measures_train_and_validation_and_refuses_the_test() {
    let r = registry();
    let out = r.call("backtest", r#"{"strategies": [{"signal": "rank(ts_sum(returns, 60))", "portfolio": {"kind": "top_k", "k": 10}}]}"#).await;
    assert_eq!(out["status"], "done", "{out}");
    let parts: Vec<&str> = out["result"]["splits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["part"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["train", "validation"]);
    assert!(
        out["result"]["strategies"][0]["metrics"][1][1]["sharpe"]
            .as_f64()
            .unwrap()
            .is_finite()
    );

    let sealed = r
        .call(
            "backtest",
            r#"{"strategies": [{"signal": "rank(returns)"}], "include_test": true}"#,
        )
        .await;
    assert_eq!(
        (sealed["status"].as_str(), sealed["kind"].as_str()),
        (Some("failed"), Some("sealed"))
    );

    // A bad strategy is reported in its slot; malformed arguments come back as a failure.
    let bad = r
        .call(
            "backtest",
            r#"{"strategies": [{"signal": "rank(ts_men(close, 5))"}]}"#,
        )
        .await;
    assert!(
        bad["result"]["strategies"][0]["error"]
            .as_str()
            .unwrap()
            .contains("did you mean 'ts_mean'")
    );
    let malformed = r.call("backtest", r#"{"strategies": "momentum"}"#).await;
    assert_eq!(malformed["kind"], "invalid_arguments");
    let unknown = r.call("optimise", "{}").await;
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("the tools are backtest, choose_universe, describe_dataset, leaderboard, lineage, list_datasets")
    );
}

#[tokio::test]
async fn data_tools_list_and_describe() {
    let r = registry();
    let list = r.call("list_datasets", "").await;
    assert_eq!(list["result"].as_array().unwrap().len(), 4);
    let d = r
        .call("describe_dataset", r#"{"dataset": "cn_futures_daily"}"#)
        .await;
    assert_eq!(d["result"].as_array().unwrap().len(), 30);
    let missing = r
        .call("describe_dataset", r#"{"dataset": "lse_equities"}"#)
        .await;
    assert_eq!(missing["kind"], "not_found");
}

/// A run whose data ends early (`--as-of`, `--earlier`) describes the datasets to its
/// planner only up to that end: no instrument that first trades later, no bar after it, and
/// under `--earlier`, whose end depends on the universe chosen, no last bar or count at all.
#[tokio::test]
async fn data_tools_describe_nothing_after_the_runs_end() {
    let market: Arc<dyn MarketData> = Arc::new(Catalog::bundled(None));
    let tools = |end: DataEnd| {
        Registry::default()
            .with(ListDatasets {
                market: market.clone(),
                end,
            })
            .with(DescribeDataset {
                market: market.clone(),
                end,
            })
    };
    let whole = tools(DataEnd::Whole);
    let all = whole
        .call("describe_dataset", r#"{"dataset": "cn_futures_daily"}"#)
        .await["result"]
        .clone();
    let cut = "2010-12-31";
    let r = tools(DataEnd::of(Some(cut), 0));
    let list = r.call("list_datasets", "").await["result"].clone();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"in_equities_5min"),
        "it starts in 2023: {names:?}"
    );
    let d = r
        .call("describe_dataset", r#"{"dataset": "cn_futures_daily"}"#)
        .await["result"]
        .clone();
    let d = d.as_array().unwrap();
    let later = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["first"].as_str().unwrap() > cut)
        .count();
    assert!(
        later > 0 && d.len() == 30 - later,
        "{} of 30, {later} later",
        d.len()
    );
    for s in d {
        let (first, last) = (s["first"].as_str().unwrap(), s["last"].as_str().unwrap());
        assert!(first <= cut, "{s}");
        assert!(
            last <= cut || (last.starts_with("cut at 2011-01-01") && s.get("rows").is_none()),
            "{s}"
        );
    }
    for line in list.as_array().unwrap() {
        let last = line["last"].as_str().unwrap();
        assert!(last <= cut || last.starts_with("cut at "), "{line}");
    }
    // `--earlier`: the end is not known before the universe is chosen.
    let r = tools(DataEnd::of(None, 1));
    let d = r
        .call("describe_dataset", r#"{"dataset": "cn_futures_daily"}"#)
        .await["result"]
        .clone();
    assert!(d.as_array().unwrap().iter().all(|s| {
        s.get("rows").is_none()
            && s["last"]
                .as_str()
                .unwrap()
                .starts_with("before the sealed test")
    }));
}

#[tokio::test]
async fn choosing_a_universe_changes_what_backtests_run_on_and_the_log_remembers() {
    let r = registry();
    let u = r
        .call(
            "choose_universe",
            r#"{"datasets": ["cn_futures_daily"], "symbols": ["SHFE:CU0", "DCE:I0", "CZCE:TA0"]}"#,
        )
        .await;
    assert_eq!(u["result"]["instruments"], 3, "{u}");
    assert_eq!(
        u["result"]["splits"].as_array().unwrap().len(),
        2,
        "the test part is not described"
    );
    let spec = r#"{"strategies": [{"signal": "ts_sum(returns, 60)", "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.1, "vol_window": 60}}]}"#;
    let b = r.call("backtest", spec).await;
    assert_eq!(b["status"], "done", "{b}");
    let bad = r
        .call(
            "choose_universe",
            r#"{"datasets": ["cn_futures_daily"], "frequency": "1h"}"#,
        )
        .await;
    assert_eq!(
        bad["kind"], "invalid_arguments",
        "daily bars cannot become hourly: {bad}"
    );
    let lb = r.call("leaderboard", r#"{"top": 5}"#).await;
    assert_eq!(lb["result"][0]["signal"], "ts_sum(returns, 60)");
    let lin = r
        .call("lineage", r#"{"signal": "ts_sum(returns, 60)"}"#)
        .await;
    assert_eq!(lin["result"].as_array().unwrap().len(), 1);
    let none = r.call("lineage", r#"{"signal": "rank(close)"}"#).await;
    assert_eq!(none["kind"], "not_found");
}

/// A strategy that reads adjusted price levels is flagged in the backtest's result, counts as
/// tried (its lineage is there), and never appears on the leaderboard.
#[tokio::test]
async fn strategies_reading_adjusted_price_levels_are_tried_but_never_leaders() {
    let r = registry();
    let spec = r#"{"strategies": [
        {"signal": "rank(-low)", "portfolio": {"kind": "top_k", "k": 5}},
        {"signal": "rank(-ts_sum(returns, 5))", "portfolio": {"kind": "top_k", "k": 5}}
    ]}"#;
    let b = r.call("backtest", spec).await;
    assert_eq!(b["status"], "done", "{b}");
    assert_eq!(b["result"]["strategies"][0]["level_dependent"], true, "{b}");
    assert!(
        b["result"]["strategies"][1]
            .get("level_dependent")
            .is_none()
    );
    let lb = r.call("leaderboard", r#"{"top": 5}"#).await;
    let shown = signals(&lb);
    assert_eq!(shown, ["rank(-ts_sum(returns, 5))"], "{lb}");
    let lin = r.call("lineage", r#"{"signal": "rank(-low)"}"#).await;
    assert_eq!(lin["status"], "done", "{lin}");
}

/// Servers that turn a schema into a grammar (llama.cpp) cannot follow references: every
/// tool's parameters are self-contained.
#[test]
fn tool_parameters_have_no_references() {
    for spec in registry().specs() {
        let text = spec.parameters.to_string();
        assert!(
            !text.contains("$ref") && !text.contains("$defs"),
            "{}: {text}",
            spec.name
        );
    }
}

/// A universe holding one series twice (an index from two sources) keeps one copy, the one with
/// the longer history, and says which it left out; an instrument that merely moves with
/// another stays.
#[tokio::test]
async fn a_universe_keeps_one_copy_of_a_series_it_holds_twice() {
    let dir = tempfile::tempdir().unwrap();
    // Rows grouped by symbol, as the format wants.
    let mut rows: [String; 3] = Default::default();
    let (mut x, mut a, mut b) = (7u64, 100.0f64, 50.0f64);
    let mut step = || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for d in 0..800i64 {
        let (ra, rb) = (0.02 * step(), 0.02 * step());
        a *= ra.exp();
        // OTHER follows IDX half of the way, with moves of its own.
        b *= (0.5 * ra + rb).exp();
        let ts = lim_market::Timestamp(1_262_304_000 + d * 86_400).date_string();
        let row = |sym: &str, c: f64| format!("{ts},{sym},{c:.4},{c:.4},{c:.4},{c:.4},1000\n");
        rows[0].push_str(&row("IDX", a));
        // The same index from a second source that starts later, rounded to cents.
        if d >= 100 {
            rows[1].push_str(&row("IDX_COPY", (a * 100.0).round() / 100.0));
        }
        rows[2].push_str(&row("OTHER", b));
    }
    let text = format!("ts,symbol,open,high,low,close,volume\n{}", rows.concat());
    std::fs::write(dir.path().join("idx.csv"), text).unwrap();
    let market: Arc<dyn MarketData> = Arc::new(Catalog::open_dir(dir.path(), None).unwrap());
    let universe = Arc::new(Universe::new(None));
    let r = Registry::default()
        .with(ChooseUniverse {
            market,
            universe: universe.clone(),
        })
        .with(BacktestTool {
            universe: universe.clone(),
            log: Arc::new(ResearchLog::default()),
            remote: None,
            scorer: None,
        });
    let u = r.call("choose_universe", r#"{"datasets": ["idx"]}"#).await;
    assert_eq!(u["result"]["instruments"], 2, "{u}");
    let same = &u["result"]["same_series"];
    assert_eq!(same.as_array().unwrap().len(), 1, "{u}");
    assert_eq!(same[0]["symbol"], "IDX_COPY");
    assert_eq!(same[0]["same_as"], "IDX");
    assert!(same[0]["correlation"].as_f64().unwrap() > 0.999);
    let spec = r#"{"strategies": [{"signal": "rank(ts_sum(returns, 5))", "portfolio": {"kind": "top_k", "k": 1}}]}"#;
    assert_eq!(r.call("backtest", spec).await["status"], "done");
    assert_eq!(universe.current().unwrap().symbols(), ["IDX", "OTHER"]);
}

/// A study of an earlier period (`earlier`) holds exactly the bars before the sealed test of
/// the study of the whole history, and its own sealed test ends there; a study as of a time
/// (`as_of`) sees nothing after it. Bad values are refused by name.
#[tokio::test]
async fn an_earlier_period_ends_where_the_later_sealed_test_begins() {
    let catalog = Catalog::bundled(None);
    let args = |as_of: Option<&str>, earlier| ChooseUniverseArgs {
        datasets: vec!["us_equities_daily_adjusted".into()],
        symbols: None,
        frequency: None,
        train: 0.6,
        valid: 0.2,
        embargo: 5,
        as_of: as_of.map(String::from),
        earlier,
    };
    let load = |a: &ChooseUniverseArgs| lim_tools::load_session(&catalog, a, None);
    let whole = load(&args(None, 0)).unwrap();
    let test_start = |s: &Session| s.splits().range(lim_market::Part::Test).start;
    let one = load(&args(None, 1)).unwrap();
    assert_eq!(one.times(), &whole.times()[..test_start(&whole)]);
    let two = load(&args(None, 2)).unwrap();
    assert_eq!(two.times(), &one.times()[..test_start(&one)]);
    assert!(two.times().len() > 100, "{}", two.times().len());

    // As of the earlier study's last day: the same bars.
    let last = one.times().last().unwrap().date_string();
    let as_of = load(&args(Some(&last), 0)).unwrap();
    assert_eq!(as_of.times(), one.times());
    // And the tool says where the data ends.
    let r = registry()
        .call(
            "choose_universe",
            &serde_json::json!({"datasets": ["us_equities_daily_adjusted"], "earlier": 1})
                .to_string(),
        )
        .await;
    assert_eq!(r["result"]["data_ends"], last.as_str(), "{r}");

    let e = load(&args(Some("2020-13-45"), 0)).unwrap_err();
    assert!(
        e.1.contains("as_of '2020-13-45'") && e.1.contains("YYYY-MM-DD"),
        "{}",
        e.1
    );
    let e = load(&args(None, 40)).unwrap_err();
    assert!(e.1.contains("ask for fewer with `earlier`"), "{}", e.1);
}

/// The agent's leaderboard is in the run's own order: robust fitness first (a high validation
/// Sharpe ratio can rest on a few bars), then strategies not scored yet by validation Sharpe,
/// then those the run rejected.
#[tokio::test]
async fn the_leaderboard_ranks_as_the_run_does() {
    let log = Arc::new(ResearchLog::default());
    let spec = r#"{"strategies": [
        {"signal": "rank(-ts_sum(returns, 5))", "portfolio": {"kind": "top_k", "k": 5}},
        {"signal": "rank(ts_sum(returns, 60))", "portfolio": {"kind": "top_k", "k": 5}},
        {"signal": "rank(-ts_std(returns, 20))", "portfolio": {"kind": "top_k", "k": 5}},
        {"signal": "rank(ts_mean(returns, 10))", "portfolio": {"kind": "top_k", "k": 5}}
    ]}"#;
    let b = registry_on(log.clone()).call("backtest", spec).await;
    assert_eq!(b["status"], "done", "{b}");
    let mut trials = log.trials();
    assert_eq!(trials.len(), 4);
    // By validation Sharpe, best first; then the run's verdicts turn the order around.
    trials.sort_by(|a, b| b.validation.sharpe.total_cmp(&a.validation.sharpe));
    let by_sharpe: Vec<String> = trials.iter().map(|t| t.signal.clone()).collect();
    trials[0].fitness = Some(0.1);
    trials[1].rejected = Some("degenerate".into());
    trials[3].fitness = Some(0.5);
    let lb = registry_on(Arc::new(ResearchLog::with_trials(trials)))
        .call("leaderboard", r#"{"top": 10}"#)
        .await;
    let shown = signals(&lb);
    assert_eq!(
        shown,
        [&by_sharpe[3], &by_sharpe[0], &by_sharpe[2], &by_sharpe[1]],
        "{lb}"
    );
    assert_eq!(lb["result"][0]["fitness"], 0.5);
    assert_eq!(lb["result"][3]["rejected"], "degenerate");
}
