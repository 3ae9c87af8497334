//! The `lim` binary end to end: what a user types and what they see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;
use std::process::{Command, Output};

fn lim(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lim"))
        .args(args)
        .env_remove("LIM_DATA")
        .env("LIM_CACHE", cache)
        .output()
        .expect("run lim")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON on stdout")
}

#[test]
fn data_list_shows_the_bundled_sample_without_any_setup() {
    let cache = tempfile::tempdir().unwrap();
    let v = json(&lim(&["data", "list", "--json"], cache.path()));
    let sets = v["datasets"].as_array().unwrap();
    let summary: Vec<(String, usize, String)> = sets
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["symbols"].as_array().unwrap().len(),
                d["frequency"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("cn_futures_daily".into(), 30, "1d".into()),
            ("in_equities_5min".into(), 5, "5min".into()),
            ("us_equities_daily_adjusted".into(), 50, "1d".into()),
            ("us_futures_daily".into(), 8, "1d".into()),
        ]
    );
    // The second run reads the cache and says the same.
    let again = json(&lim(&["data", "list", "--json"], cache.path()));
    assert_eq!(v, again);
    let table = lim(&["data", "list"], cache.path());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("4 datasets in <bundled sample>"), "{text}");
    assert!(
        text.lines().all(|l| l.chars().count() <= 120),
        "table wider than a terminal:\n{text}"
    );
}

#[test]
fn data_show_reports_rolls_and_return_statistics_per_symbol() {
    let cache = tempfile::tempdir().unwrap();
    let v = json(&lim(
        &[
            "data",
            "show",
            "cn_futures_daily",
            "--symbol",
            "SHFE:CU0",
            "--json",
        ],
        cache.path(),
    ));
    let cu = &v["symbols"][0];
    let whole_rows = cu["rows"].as_u64().unwrap();
    assert_eq!(cu["symbol"], "SHFE:CU0");
    assert!(cu["rolls"].as_u64().unwrap() > 50);
    assert_eq!(
        cu["roll_dates"].as_array().unwrap().len() as u64,
        cu["rolls"].as_u64().unwrap()
    );
    assert!(cu["returns"]["annual_vol"].as_f64().unwrap() > 0.05);
    assert_eq!(v["roll_policy"], "back_adjust");
    // Which fields a strategy can use on it: the file's, then the derived ones.
    assert_eq!(
        v["fields"],
        serde_json::json!([
            "open",
            "high",
            "low",
            "close",
            "volume",
            "open_interest",
            "vwap",
            "returns"
        ])
    );
    // As of a date, nothing later is shown.
    let v = json(&lim(
        &[
            "data",
            "show",
            "cn_futures_daily",
            "--symbol",
            "SHFE:CU0",
            "--as-of",
            "2015-06-30",
            "--json",
        ],
        cache.path(),
    ));
    let last_roll = v["symbols"][0]["roll_dates"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["ts"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last_roll.as_str() <= "2015-06-30", "{last_roll}");
    // Nor in the summary: the last bar, the rows and the symbol's span are those of bars
    // closed by then.
    let cu = &v["symbols"][0];
    for last in [&v["last"], &cu["last"]] {
        assert!(last.as_str().unwrap() <= "2015-06-30", "{last}");
    }
    assert!(cu["rows"].as_u64().unwrap() < whole_rows);
    assert_eq!(v["rows"], cu["rows"]);
    // Before the data begins there is nothing to show, and the error says so.
    let out = lim(
        &["data", "show", "cn_futures_daily", "--as-of", "1990-01-01"],
        cache.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no bars by --as-of") && err.contains("later --as-of"),
        "{err}"
    );
}

#[test]
fn data_check_lists_problems_and_fails_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.csv");
    std::fs::write(&file, "ts,symbol,open,high,low,close,volume\n2024-01-02,A,1,2,0.5,1.5,100\n2024-01-03,A,1,2,0.5,0,100\n2024-01-03,A,1,2,0.5,1,100\n2024-01-03,A,1,2,0.5,1,100\n").unwrap();
    let out = lim(&["data", "check", file.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("line 3, column 22 (close): 0 is out of range, expected a positive price"),
        "{text}"
    );
    assert!(text.contains("2 problem(s); 2 good rows"), "{text}");
    assert!(
        text.contains(
            "line 5, column 1 (ts): duplicate row for (A, 2024-01-03): the same bar is at line 4"
        ),
        "{text}"
    );
    let ok = dir.path().join("ok.csv");
    std::fs::write(
        &ok,
        "ts,symbol,open,high,low,close,volume\n2024-01-02,A,1,2,0.5,1.5,100\n",
    )
    .unwrap();
    assert_eq!(
        lim(&["data", "check", ok.to_str().unwrap()], dir.path())
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn mistakes_get_an_error_with_the_fix_and_a_nonzero_exit() {
    let cache = tempfile::tempdir().unwrap();
    let out = lim(&["data", "show", "cn_futures"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown dataset 'cn_futures' (did you mean 'cn_futures_daily'?)"),
        "{err}"
    );
    let out = lim(
        &["data", "list", "--data", "/nonexistent/lim-data"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("there is no data directory '/nonexistent/lim-data'")
            && err.contains("leave the data out for the bundled sample"),
        "{err}"
    );
    // A file where a directory belongs: the OS's reason, said once.
    let file = cache.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = lim(
        &["data", "list", "--data", file.to_str().unwrap()],
        cache.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read data directory"), "{err}");
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    // A misspelt function: a swap of two letters is a typo worth naming.
    let out = lim(&["backtest", "--expr", "rnak(close)"], cache.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown function 'rnak' (did you mean 'rank'?)"),
        "{err}"
    );
    // An as-of before the data says when the data begins, not that a split is empty.
    let err = |args: &[&str]| {
        let out = lim(args, cache.path());
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&[
        "backtest",
        "--expr",
        "ts_sum(returns, 20)",
        "--dataset",
        "cn_futures_daily",
        "--as-of",
        "1990-01-01",
    ]);
    assert!(
        e.contains("no bars by as_of 1990-01-01 (cn_futures_daily begins 20")
            && !e.contains("training part"),
        "{e}"
    );
    // A top-k book of no names, or of every name (the always-long baseline), is refused.
    let top = |k: &str| {
        err(&[
            "backtest",
            "--expr",
            "rank(returns)",
            "--dataset",
            "us_equities_daily_adjusted",
            "--k",
            k,
        ])
    };
    let e = top("0");
    assert!(
        e.contains("'0' must be at least 1") && !e.contains("18446744073709551615"),
        "{e}"
    );
    let e = top("1000");
    assert!(
        e.contains("--k 1000") && e.contains("always-long baseline"),
        "{e}"
    );
    // Two datasets, comma-separated as --symbols are.
    let v = json(&lim(
        &[
            "backtest",
            "--expr",
            "ts_sum(returns, 20)",
            "--dataset",
            "cn_futures_daily,us_futures_daily",
            "--json",
        ],
        cache.path(),
    ));
    assert_eq!(
        v["datasets"],
        serde_json::json!(["cn_futures_daily", "us_futures_daily"])
    );
}

#[test]
fn lim_data_points_at_a_directory_of_the_users_files() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("mine.csv"),
        "ts,symbol,open,high,low,close,volume\n2024-01-02,X:A,1,2,0.5,1.5,100\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lim"))
        .args(["data", "list", "--json"])
        .env("LIM_DATA", data.path())
        .env("LIM_CACHE", data.path().join("cache"))
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["datasets"][0]["name"], "mine");
    assert_eq!(
        v["datasets"][0]["symbols"][0]["instrument"]["exchange"],
        "X"
    );
}

#[test]
fn panels_resample_and_print_as_json() {
    let cache = tempfile::tempdir().unwrap();
    let v = json(&lim(
        &[
            "data",
            "panel",
            "in_equities_5min",
            "--symbols",
            "NSE:TCS",
            "--frequency",
            "1d",
            "--fields",
            "close,volume",
            "--json",
        ],
        cache.path(),
    ));
    assert_eq!(v["frequency"], "1d");
    assert_eq!(v["times"][0], "2023-07-03");
    assert_eq!(v["times"].as_array().unwrap().len(), 20);
    assert_eq!(v["panels"]["volume"][0].as_array().unwrap().len(), 20);
}

#[test]
fn an_unwritable_cache_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the cache directory should be: nothing can be created under it.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, "x").unwrap();
    let out = lim(&["data", "show", "us_futures_daily", "--json"], &blocked);
    let v = json(&out);
    assert_eq!(v["symbols"].as_array().unwrap().len(), 8);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: us_futures_daily loaded without a cache (cannot create cache directory"
        ),
        "{err}"
    );
}

#[test]
fn backtest_shows_train_and_validation_and_keeps_the_test_sealed() {
    let cache = tempfile::tempdir().unwrap();
    let v = json(&lim(
        &["backtest", "--expr", "rank(ts_mean(returns, 20))", "--json"],
        cache.path(),
    ));
    let parts: Vec<&str> = v["splits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["part"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["train", "validation"]);
    let m = &v["strategies"][0]["metrics"];
    assert_eq!(m.as_array().unwrap().len(), 2);
    assert!(m[0][1]["sharpe"].as_f64().unwrap().is_finite());
    let s = &v["strategies"][0];
    assert_eq!(
        s["spec"]["portfolio"]["k"], 10,
        "a fifth of the 50 bundled equities"
    );
    assert_eq!(s["ic_decay"].as_array().unwrap().len(), 4);
    assert!(s["years"].as_array().unwrap().len() >= 7);
    let v = json(&lim(
        &[
            "backtest",
            "--expr",
            "rank(ts_mean(returns, 20))",
            "--unseal-test",
            "--json",
        ],
        cache.path(),
    ));
    assert_eq!(v["splits"].as_array().unwrap().len(), 3);
}

#[test]
fn a_bad_strategy_in_a_batch_is_reported_and_the_rest_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("batch.txt");
    std::fs::write(&batch, "# momentum and a typo\nmom | rank(ts_sum(returns, 60))\nbad | rank(ts_men(close, 5))\nrev | -rank(ts_delta(close, 5))\n").unwrap();
    let out = lim(
        &["backtest", "--batch", batch.to_str().unwrap(), "--json"],
        dir.path(),
    );
    // What ran is reported, and the bad line fails the command.
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = v["strategies"].as_array().unwrap();
    assert_eq!(s.len(), 3);
    let e = s[1]["error"].as_str().unwrap();
    assert!(
        e.ends_with(
            "batch.txt' line 3, column 12: unknown function 'ts_men' (did you mean 'ts_mean'?)"
        ),
        "{e}"
    );
    assert!(
        s[0]["metrics"].as_array().is_some_and(|m| !m.is_empty())
            && s[2]["metrics"].as_array().is_some_and(|m| !m.is_empty())
    );
    let mt = &v["multiple_testing"];
    assert_eq!(mt["trials"], 2);
    let dsr = mt["deflated"]["dsr"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&dsr));
    // A lone strategy that cannot run gets its error and no tables of baselines.
    let out = lim(&["backtest", "--expr", "delay(returns, -1)"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty() && err.contains("a negative lag would read the future"),
        "{}\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_spec_file_sets_the_book_and_a_bad_one_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("trend.json");
    std::fs::write(&spec, r#"{"signal": "ts_sum(returns, 120)", "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.15, "vol_window": 60}, "rebalance_every": 5}"#).unwrap();
    let v = json(&lim(
        &[
            "backtest",
            "--spec",
            spec.to_str().unwrap(),
            "--dataset",
            "cn_futures_daily",
            "--json",
        ],
        dir.path(),
    ));
    let m = &v["strategies"][0]["metrics"][0][1];
    assert!(m["exposure"].as_f64().unwrap() > 0.0 && m["turnover"].as_f64().unwrap() > 0.0);
    std::fs::write(
        &spec,
        r#"{"signal": "close", "portfolio": {"kind": "top_k", "k": 5}, "execution_lag": 0}"#,
    )
    .unwrap();
    let out = lim(
        &["backtest", "--spec", spec.to_str().unwrap(), "--json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "every strategy failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["strategies"][0]["error"]
            .as_str()
            .unwrap()
            .contains("execution_lag")
    );
    // A sign book sized by a forecast the universe does not hold is refused by name.
    std::fs::write(
        &spec,
        r#"{"signal": "close", "portfolio": {"kind": "sign_threshold", "threshold": 0, "target_vol": 0.1, "vol_window": 20, "vol_forecast": "fvol"}}"#,
    )
    .unwrap();
    let out = lim(
        &[
            "backtest",
            "--spec",
            spec.to_str().unwrap(),
            "--dataset",
            "cn_futures_daily",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = v["strategies"][0]["error"].as_str().unwrap();
    assert!(
        e.contains("portfolio.vol_forecast") && e.contains("'fvol'") && e.contains("--predictions"),
        "{e}"
    );
    let schema = lim(&["backtest", "--print-schema"], dir.path());
    let schema = String::from_utf8_lossy(&schema.stdout);
    assert!(schema.contains("\"sign_threshold\"") && schema.contains("vol_forecast"));
}

#[test]
fn workflow_show_prints_the_research_graph_as_text_and_dot() {
    let dir = tempfile::tempdir().unwrap();
    let text = lim(&["workflow", "show"], dir.path());
    assert!(text.status.success());
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(t.lines().next().unwrap().starts_with("start"), "{t}");
    assert!(
        t.contains("critique -> generate  [loop, at most 20 times]"),
        "{t}"
    );
    let v = json(&lim(
        &["workflow", "show", "--json", "--max-iterations", "7"],
        dir.path(),
    ));
    assert_eq!(v["nodes"][0]["name"], "start");
    let plan = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "plan")
        .unwrap();
    assert_eq!(plan["kind"], "agent");
    assert_eq!(plan["inputs"], serde_json::json!(["goal"]));
    let back = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == "critique" && e["to"] == "generate")
        .unwrap();
    assert_eq!(back["kind"], "back");
    assert_eq!(back["max_iterations"], 7);
    assert_eq!(
        v["edges"].as_array().unwrap().len(),
        t.lines().filter(|l| l.contains(" -> ")).count()
    );
    let dot = lim(
        &["workflow", "show", "--dot", "--max-iterations", "5"],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&dot.stdout).contains("[label=\"≤5\", style=dashed]"));
}

/// Every backtest report carries baselines built like the strategy, and a signal of constant
/// sign under a sign book is named for what it is: the market, not a signal.
#[test]
fn backtest_reports_baselines_and_flags_a_constant_sign_signal() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.json");
    std::fs::write(
        &spec,
        r#"[{"signal": "ts_std(returns, 20)", "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.1, "vol_window": 60}, "rebalance_every": 5},
            {"signal": "ts_sum(returns, 60)", "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.1, "vol_window": 60}, "rebalance_every": 5}]"#,
    )
    .unwrap();
    let args = [
        "backtest",
        "--dataset",
        "cn_futures_daily",
        "--spec",
        spec.to_str().unwrap(),
    ];
    let out = lim(&[&args[..], &["--json"]].concat(), dir.path());
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names[..2],
        [
            "always long, equal weight",
            "always long, volatility-targeted"
        ]
    );
    let corr = |i: usize| v["always_long"][i]["correlation"].as_f64().unwrap();
    assert!(
        corr(0) > 0.99,
        "an always-positive signal is always long: {}",
        corr(0)
    );
    assert!(corr(1).abs() < 0.9, "{}", corr(1));
    // Each strategy's Sharpe ratio against always long's, part by part, with its z.
    let versus = v["versus_always_long"].as_array().unwrap();
    assert_eq!(versus.len(), 4, "two strategies, two parts: {versus:?}");
    let sharpe = |x: &serde_json::Value, part: &str| {
        x["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m[0] == part)
            .unwrap()[1]["sharpe"]
            .as_f64()
            .unwrap()
    };
    for (i, t) in versus.iter().enumerate() {
        let (strategy, part) = (&v["strategies"][i / 2], t["part"].as_str().unwrap());
        assert_eq!(t["strategy"], strategy["name"]);
        let by_hand = sharpe(strategy, part) - sharpe(&v["baselines"][0], part);
        assert!((t["sharpe_difference"].as_f64().unwrap() - by_hand).abs() < 1e-9);
        assert!(t["z"].as_f64().unwrap().is_finite());
    }
    let text = String::from_utf8_lossy(&lim(&args, dir.path()).stdout).into_owned();
    assert!(
        text.contains("Sharpe over always long, equal weight's, and its z")
            && text.contains("  spec2: train "),
        "{text}"
    );
    assert!(
        text.contains("degenerate: spec1's validation returns move with the always-long book"),
        "{text}"
    );
    assert!(!text.contains("degenerate: spec2"), "{text}");
}

/// A Slurm settings file with a mistake is refused before anything is submitted, naming the
/// file, the problem and the keys there are.
#[test]
fn a_bad_slurm_config_names_the_file_the_key_and_the_keys_there_are() {
    let cache = tempfile::tempdir().unwrap();
    let conf = cache.path().join("slurm.toml");
    std::fs::write(&conf, "partiton = \"short\"\nshards = 4\n").unwrap();
    let submit = || {
        lim(
            &[
                "backtest",
                "--expr",
                "rank(returns)",
                "--executor",
                "slurm",
                "--work-dir",
                cache.path().join("work").to_str().unwrap(),
                "--slurm-config",
                conf.to_str().unwrap(),
            ],
            cache.path(),
        )
    };
    let out = submit();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("slurm.toml")
            && err.contains("partiton")
            && err.contains("keys are partition"),
        "{err}"
    );
    assert!(
        !cache.path().join("work").exists(),
        "nothing written before the config is read"
    );
    // A group of processes per task is for pretraining, not for a batch of backtests.
    std::fs::write(&conf, "ntasks = 2\n").unwrap();
    let out = submit();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("slurm.toml") && err.contains("ntasks is for `lim foundation pretrain`"),
        "{err}"
    );
    assert!(!cache.path().join("work").exists());
}

/// `lim backtest --html` writes one self-contained tearsheet: charts with data, the metrics of
/// every strategy and baseline by part equal to the JSON report's, nothing fetched.
#[test]
fn backtest_html_writes_a_tearsheet_that_agrees_with_the_json() {
    let cache = tempfile::tempdir().unwrap();
    let page = cache.path().join("bt.html");
    let out = lim(
        &[
            "backtest",
            "--expr",
            "rank(-ts_sum(returns, 5))",
            "--json",
            "--html",
            page.to_str().unwrap(),
        ],
        cache.path(),
    );
    let v = json(&out);
    let html = std::fs::read_to_string(&page).unwrap();
    for attr in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(attr), "the page fetches something: {attr}");
    }
    for id in ["equity", "drawdown", "rolling-sharpe", "rank-ic"] {
        let at = html
            .find(&format!("<figure id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id}"));
        let fig = &html[at..at + html[at..].find("</figure>").unwrap()];
        assert!(fig.contains("data-points=\""), "chart {id} is empty");
    }
    assert!(html.contains("id=\"ic-decay\""), "no IC decay");
    let rows = html.matches("<tr><td>").count();
    let baselines = v["baselines"].as_array().unwrap().len();
    assert!(
        rows >= (1 + baselines) * 2,
        "{rows} rows for {baselines} baselines"
    );
    for (i, part) in ["train", "validation"].iter().enumerate() {
        let m = &v["strategies"][0]["metrics"][i];
        assert_eq!(m[0], *part);
        let sharpe = m[1]["sharpe"].as_f64().unwrap();
        assert!(
            html.contains(&format!(
                "<td>expr</td><td>{part}</td><td data-v=\"{sharpe}\">"
            )),
            "the {part} Sharpe {sharpe} is not in the page"
        );
    }
}

/// `lim backtest --export` writes the metrics of every strategy and baseline by part and their
/// returns bar by bar, as CSV or Parquet, with the JSON report's numbers.
#[test]
fn backtest_export_writes_tables_with_the_reports_numbers() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("tables");
    let run = |format: &str| {
        json(&lim(
            &[
                "backtest",
                "--expr",
                "rank(-ts_sum(returns, 5))",
                "--json",
                "--export",
                dir.to_str().unwrap(),
                "--format",
                format,
            ],
            cache.path(),
        ))
    };
    let v = run("csv");
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = metrics.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..3], ["name", "kind", "part"]);
    assert_eq!(header.last(), Some(&"signal"));
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let baselines = v["baselines"].as_array().unwrap().len();
    assert_eq!(rows.len(), (1 + baselines) * 2, "{metrics}");
    for (i, part) in ["train", "validation"].iter().enumerate() {
        let m = &v["strategies"][0]["metrics"][i];
        let row = rows
            .iter()
            .find(|r| r[0] == "expr" && r[2] == *part)
            .unwrap();
        assert_eq!(row[1], "strategy");
        for name in ["sharpe", "max_dd", "rank_ic", "turnover"] {
            let got: f64 = row[col(name)].parse().unwrap();
            assert_eq!(got, m[1][name].as_f64().unwrap(), "{part} {name}");
        }
    }
    let returns = std::fs::read_to_string(dir.join("returns.csv")).unwrap();
    assert!(returns.starts_with("ts,part,name,kind,net_return,rank_ic\n"));
    assert!(returns.lines().count() > 100, "{returns}");
    assert!(
        !returns.contains(",test,"),
        "the sealed test leaked into the export"
    );
    run("parquet");
    for t in ["metrics", "returns"] {
        let bytes = std::fs::read(dir.join(format!("{t}.parquet"))).unwrap();
        assert!(
            bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
            "{t}"
        );
    }
}

/// Extra numeric columns of a user's file (`cap`) are fields: `lim data show` lists them and
/// strategies use them (Alpha101's alpha 56 needs market cap); data without the column
/// refuses the name.
#[test]
fn an_extra_column_such_as_cap_is_a_field_strategies_can_use() {
    let data = tempfile::tempdir().unwrap();
    let mut csv = String::from("ts,symbol,open,high,low,close,volume,cap\n");
    for s in 0..10 {
        let mut p = 50.0 + s as f64;
        for d in 0..300 {
            p *= 1.0 + 0.01 * (((d * (s + 3)) as f64) * 0.37).sin();
            let day = 19_000 + d;
            let (y, m, dd) = lim_market::time::civil_from_days(day);
            let cap = p * 2e6; // the same number of shares for all: ranks like close
            csv.push_str(&format!(
                "{y:04}-{m:02}-{dd:02},S{s},{p},{p},{p},{p},1000,{cap}\n"
            ));
        }
    }
    std::fs::write(data.path().join("stocks.csv"), csv).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lim"))
            .args(args)
            .env("LIM_DATA", data.path())
            .env("LIM_CACHE", data.path().join("cache"))
            .output()
            .unwrap()
    };
    let show = json(&run(&["data", "show", "stocks", "--json"]));
    let fields: Vec<&str> = show["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(fields.contains(&"cap"), "{fields:?}");
    let list = String::from_utf8_lossy(&run(&["data", "list"]).stdout).into_owned();
    assert!(list.contains("extra fields of stocks: cap"), "{list}");
    let text = String::from_utf8_lossy(&run(&["data", "show", "stocks"]).stdout).into_owned();
    assert!(
        text.contains("fields: open, high, low, close, volume, cap (from the file)"),
        "{text}"
    );
    let alpha56 =
        "-(rank(ts_sum(returns, 10) / ts_sum(ts_sum(returns, 2), 3)) * rank(returns * cap))";
    let sharpe = |expr: &str| {
        let arg = format!("--expr={expr}");
        let v = json(&run(&["backtest", "--dataset", "stocks", &arg, "--json"]));
        v["strategies"][0]["metrics"][0][1]["sharpe"]
            .as_f64()
            .unwrap()
    };
    let a = sharpe(alpha56);
    assert!(a.is_finite());
    // The field carries the file's numbers: with equal share counts, cap ranks like close.
    assert_eq!(sharpe("rank(cap)"), sharpe("rank(close)"));
    assert_ne!(sharpe("rank(cap)"), sharpe("rank(-close)"));
    let bundled = lim(&["backtest", "--expr", "rank(cap)", "--json"], data.path());
    assert!(
        !bundled.status.success(),
        "a strategy that cannot run fails the exit code"
    );
    let bundled: serde_json::Value = serde_json::from_slice(&bundled.stdout).unwrap();
    let err = bundled["strategies"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("unknown field 'cap'; fields are close"),
        "{err}"
    );
}

/// A file holding one index twice: `lim data show` names the copy, and `lim backtest` leaves it
/// out of the universe and says so.
#[test]
fn a_series_held_twice_is_named_and_traded_once() {
    let data = tempfile::tempdir().unwrap();
    let (mut idx, mut copy, mut other) = (String::new(), String::new(), String::new());
    let (mut x, mut a, mut b) = (3u64, 100.0f64, 80.0f64);
    let mut u = || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for d in 0..700i64 {
        a *= (0.02 * u()).exp();
        b *= (0.02 * u()).exp();
        let ts = lim_market::Timestamp(1_262_304_000 + d * 86_400).date_string();
        let row = |s: &str, c: f64| format!("{ts},{s},{c:.4},{c:.4},{c:.4},{c:.4},100\n");
        idx.push_str(&row("IDX", a));
        if d >= 50 {
            copy.push_str(&row("IDX_COPY", (a * 100.0).round() / 100.0));
        }
        other.push_str(&row("OTHER", b));
    }
    std::fs::write(
        data.path().join("idx.csv"),
        format!("ts,symbol,open,high,low,close,volume\n{idx}{copy}{other}"),
    )
    .unwrap();
    let dir = data.path().to_str().unwrap();
    let cache = data.path().join("cache");
    let v = json(&lim(
        &["data", "show", "idx", "--data", dir, "--json"],
        &cache,
    ));
    assert_eq!(v["same_series"][0]["symbol"], "IDX_COPY", "{v}");
    assert_eq!(v["same_series"][0]["same_as"], "IDX");
    let backtest = |more: &[&str]| {
        let mut a = vec!["backtest", "--data", dir, "--dataset", "idx"];
        a.extend(["--expr", "rank(ts_sum(returns, 5))"]);
        a.extend(more);
        lim(&a, &cache)
    };
    let b = json(&backtest(&["--json"]));
    assert_eq!(b["instruments"], 2, "{b}");
    assert_eq!(b["same_series"][0]["symbol"], "IDX_COPY");
    let text = backtest(&[]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("left out IDX_COPY, the same series as IDX"),
        "{out}"
    );
}

/// A reader that closes the pipe early (`lim ... | head`) ends lim quietly, as SIGPIPE ends
/// other tools: status 141 and no panic report.
#[test]
fn a_closed_pipe_ends_lim_quietly() {
    let cache = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_lim"))
        .args(["data", "list"])
        .env_remove("LIM_DATA")
        .env("LIM_CACHE", cache.path())
        .stdout(writer)
        .output()
        .expect("run lim");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

/// A batch with a bad line still shows what ran, names the file's own line and column, and
/// fails the exit code so that a script notices.
#[test]
fn a_bad_line_of_a_batch_is_placed_in_the_file_and_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.txt");
    std::fs::write(&file, "good | rank(returns)\n\nbad | rank(retrns)\n").unwrap();
    let out = lim(&["backtest", "--batch", file.to_str().unwrap()], dir.path());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("good"), "{text}");
    assert!(
        text.contains("mine.txt' line 3, column 12: unknown field 'retrns'"),
        "{text}"
    );
}
