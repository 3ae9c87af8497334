//! `lim research` end to end through the binary: the README's main command, durable runs
//! killed with SIGKILL and resumed, refused resumes, replays and traces, with an
//! OpenAI-compatible test server on 127.0.0.1 counting every LLM request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

const GOAL: &str = "find a robust trend strategy for Chinese commodity futures, max drawdown 15%";

fn lim() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lim"));
    // A cache of our own (written atomically, so tests may share it).
    c.env_remove("LIM_DATA").env_remove("LIM_RUNS").env(
        "LIM_CACHE",
        std::env::temp_dir().join("lim-test-cache-research"),
    );
    c
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A deterministic "model": every answer is a function of the request, and every request is
/// counted by its hash.
#[derive(Clone, Default)]
struct Brain {
    seen: Arc<Mutex<Vec<u64>>>,
}

fn reply(content: String) -> Value {
    json!({"id": "x", "object": "chat.completion", "created": 1, "model": "local",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 700, "completion_tokens": 80, "total_tokens": 780}})
}

fn last_is_tool(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["messages"].as_array()?.last()?["role"]
                .as_str()
                .map(|r| r == "tool")
        })
        .unwrap_or(false)
}

fn tool_calls(calls: &[(&str, Value)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            json!({"id": format!("call_{i}"), "type": "function",
            "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    json!({"id": "x", "object": "chat.completion", "created": 1, "model": "local",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": calls}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 700, "completion_tokens": 40, "total_tokens": 740}})
}

impl wiremock::Respond for Brain {
    fn respond(&self, req: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let mut h = DefaultHasher::new();
        body.hash(&mut h);
        let hash = h.finish();
        self.seen.lock().unwrap().push(hash);
        let content = if body.contains("You plan quantitative research") {
            json!({"final_answer": {"plan": {"goal": GOAL, "datasets": ["cn_futures_daily"], "family": "trend",
                "portfolio": {"kind": "sign_threshold", "threshold": 0.0, "target_vol": 0.1, "vol_window": 60},
                "max_drawdown": 0.15, "cost_bps": 10.0, "author": "model"}, "why": "the goal's market"}})
        } else if body.contains("You are the critic") {
            json!({"diagnosis": format!("Round {} read.", hash % 97), "hypotheses": ["longer windows"], "likely_luck": false})
        } else if body.contains("\"name\":\"backtest\"") && !last_is_tool(&body) {
            // The strategist agent first backtests a candidate and reads the leaderboard,
            // in one reply of two parallel calls.
            let w = 5 + hash % 50;
            return wiremock::ResponseTemplate::new(200).set_body_json(tool_calls(&[
                (
                    "backtest",
                    json!({"strategies": [{"signal": format!("ts_mean(returns, {w})")}]}),
                ),
                ("leaderboard", json!({"top": 3})),
            ]));
        } else {
            let w = [5, 10, 15, 20, 30, 40, 60, 90, 120];
            let pick = |k: u64| w[((hash >> (8 * k)) % w.len() as u64) as usize];
            json!({"strategies": [
                {"signal": format!("ts_sum(returns, {})", pick(0))},
                {"signal": format!("decay_linear(returns, {})", pick(1))},
                {"signal": format!("ts_zscore(ts_sum(returns, {}), {})", pick(2), pick(3))},
            ]})
        };
        wiremock::ResponseTemplate::new(200).set_body_json(reply(content.to_string()))
    }
}

fn server(rt: &tokio::runtime::Runtime, brain: &Brain) -> wiremock::MockServer {
    rt.block_on(async {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path("/v1/chat/completions"))
            .respond_with(brain.clone())
            .mount(&server)
            .await;
        server
    })
}

fn llm_args(uri: &str) -> Vec<String> {
    [
        "--llm",
        "openai",
        "--model",
        "local",
        "--base-url",
        &format!("{uri}/v1"),
        "--max-iterations",
        "3",
        "--population",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts `cmd`, waits until it pauses after journal record `at`, and kills it with SIGKILL.
/// Returns the run id it printed, if it printed one.
fn run_until_killed(mut cmd: Command, at: u64) -> Option<String> {
    cmd.args(["--pause-at-record", &at.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut id = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("run ") {
                id = rest.split_whitespace().next().map(String::from);
            }
            if line.starts_with("paused at record") {
                let _ = tx.send(Ok(id.clone()));
                return;
            }
            if line.starts_with("error") {
                let _ = tx.send(Err(line));
                return;
            }
        }
        let _ = tx.send(Err("exited without pausing".into()));
    });
    let got = rx.recv_timeout(Duration::from_secs(120));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    match got {
        Ok(Ok(id)) => id,
        other => panic!("the run did not pause at record {at}: {other:?}"),
    }
}

fn summary(store: &Path, id: &str) -> Value {
    let out = lim()
        .args(["show", id, "--json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    v["summary"].clone()
}

#[test]
fn the_readme_command_finishes_a_run_with_a_report_and_replays_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("runs");
    let out = lim()
        .args(["research", GOAL, "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let text = ok(&out);
    for want in [
        "plan (offline strategist",
        "trade cn_futures_daily",
        "deflated Sharpe ratio",
        "report: ",
        "vs.long (z)",
        "(the finalists combined, equal risk)",
        "finalists beat the test Sharpe of always long, equal weight (",
        "Beyond chance (|z| ≥ 1.96): ",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The sealed test is named by its bars: `sealed test period (FIRST to LAST), …`.
    let test = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("sealed test period (")?
                .strip_suffix("), evaluated once on the 3 finalists:")
        })
        .unwrap_or_else(|| panic!("no dated sealed test period in:\n{text}"));
    let (first, last) = test.split_once(" to ").unwrap();
    assert!(
        first.len() == 10 && last.len() == 10 && first < last,
        "{first} {last}"
    );
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|r| r.split(':').next()))
        .unwrap()
        .to_string();
    let report = std::fs::read_to_string(store.join(&id).join("report.md")).unwrap();
    for want in [
        "## Plan",
        "## Leaderboard (train and validation only)",
        &format!("## Sealed test period, {first} to {last}"),
        "- periods: train ",
        &format!("; sealed test {first} to {last}"),
        "## Multiple testing over all",
        "## Hypothesis lineage",
        "## Cost",
        "## Caveats",
    ] {
        assert!(report.contains(want), "missing {want:?}");
    }
    let runs = ok(&lim()
        .args(["runs", "--store"])
        .arg(&store)
        .output()
        .unwrap());
    assert!(runs.contains(&id) && runs.contains("finished"), "{runs}");
    let replay = ok(&lim()
        .args(["replay", &id, "--store"])
        .arg(&store)
        .output()
        .unwrap());
    assert!(
        replay.contains("outputs identical to the journal's"),
        "{replay}"
    );
    // A trace file replays anywhere, without the store.
    let trace = dir.path().join("t.jsonl");
    ok(&lim()
        .args(["trace", "export", &id, "-o"])
        .arg(&trace)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap());
    // Its --json says what was written.
    let written: Value = serde_json::from_str(&ok(&lim()
        .args(["trace", "export", &id, "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(written["run"], id.as_str());
    let path = Path::new(written["path"].as_str().unwrap());
    assert!(
        path.is_absolute() && path.ends_with("trace.jsonl"),
        "{written}"
    );
    assert_eq!(
        std::fs::read_to_string(path).unwrap().lines().count(),
        std::fs::read_to_string(&trace).unwrap().lines().count()
    );
    assert!(written["records"].as_u64().unwrap() > 0);
    let out = lim()
        .args(["replay", "--json"])
        .arg(&trace)
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["identical"], true);
    assert_eq!(v["node_executions"], v["recorded_node_executions"]);

    // Its metrics and daily returns as tables: the numbers are the report's.
    let export = dir.path().join("export");
    let paths = ok(&lim()
        .args(["show", &id, "--format", "csv", "--export"])
        .arg(&export)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap());
    assert!(
        paths.contains("metrics.csv") && paths.contains("returns.csv"),
        "{paths}"
    );
    let s = summary(&store, &id);
    let metrics = std::fs::read_to_string(export.join("metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let finalist = metrics
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r[1] == "finalist" && r[2] == "test")
        .expect("a finalist's test row");
    let sharpe: f64 = finalist[col("sharpe")].parse().unwrap();
    assert_eq!(
        sharpe,
        s["finalists"][0]["test"]["sharpe"].as_f64().unwrap(),
        "{metrics}"
    );
    let returns = std::fs::read_to_string(export.join("returns.csv")).unwrap();
    assert!(returns.starts_with("ts,part,name,kind,net_return,rank_ic\n"));
    for kind in [",strategy,", ",baseline,", ",combined,"] {
        assert!(returns.contains(kind), "no {kind} rows");
    }
    assert!(returns.contains(",test,") && returns.contains(",train,"));
    ok(&lim()
        .args(["show", &id, "--export"])
        .arg(&export)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap());
    let head = std::fs::read(export.join("metrics.parquet")).unwrap();
    assert_eq!(&head[..4], b"PAR1");
}

#[test]
fn runs_killed_at_random_points_resume_to_the_same_leaderboard_without_asking_twice() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let brain = Brain::default();
    let srv = server(&rt, &brain);
    let dir = tempfile::tempdir().unwrap();

    // The uninterrupted run.
    let store = dir.path().join("whole");
    let out = lim()
        .args(["research", GOAL, "--json", "--store"])
        .arg(&store)
        .args(llm_args(&srv.uri()))
        .output()
        .unwrap();
    let whole: Value = serde_json::from_str(&ok(&out)).unwrap();
    let calls = brain.seen.lock().unwrap().len();
    assert!(calls >= 5, "{calls} LLM calls");
    let trace = {
        let out = lim()
            .args([
                "trace",
                "export",
                whole["run"].as_str().unwrap(),
                "-o",
                "-",
                "--store",
            ])
            .arg(&store)
            .output()
            .unwrap();
        ok(&out)
    };
    let records = trace.lines().count() as u64 - 1;
    // A point inside the strategist's tool loop: after its first tool call is journaled,
    // before the model sees the result.
    let in_tool_loop = trace
        .lines()
        .skip(1)
        .position(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            r["kind"] == "tool" && r["exec"] == "generate#2"
        })
        .expect("the strategist agent called tools") as u64
        + 1;
    let leaderboard = serde_json::to_string(&whole["summary"]["leaderboard"]).unwrap();

    // Four runs, killed at 3, 3, 2 and 2 random points (seeded), resumed after each kill.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut kills = 0;
    for (k, per_run) in [3u64, 3, 2, 2].into_iter().enumerate() {
        brain.seen.lock().unwrap().clear();
        let store = dir.path().join(format!("killed{k}"));
        let mut points: Vec<u64> = (0..per_run).map(|_| 1 + next(records - 1)).collect();
        if k == 0 {
            points[0] = in_tool_loop;
        }
        points.sort_unstable();
        points.dedup();
        let mut cmd = lim();
        cmd.args(["research", GOAL, "--store"])
            .arg(&store)
            .args(llm_args(&srv.uri()));
        let id = run_until_killed(cmd, points[0]).expect("the run printed its id");
        kills += 1;
        for &at in &points[1..] {
            let mut cmd = lim();
            cmd.args(["resume", &id, "--store"]).arg(&store);
            run_until_killed(cmd, at);
            kills += 1;
        }
        // Without an id, `lim resume` takes the newest run that stopped before its end.
        let mut resume = lim();
        resume.arg("resume");
        if k % 2 == 0 {
            resume.arg(&id);
        }
        let out = resume
            .args(["--json", "--store"])
            .arg(&store)
            .output()
            .unwrap();
        let resumed: Value = serde_json::from_str(&ok(&out)).unwrap();
        assert_eq!(resumed["run"], id.as_str());
        assert_eq!(
            serde_json::to_string(&resumed["summary"]["leaderboard"]).unwrap(),
            leaderboard,
            "run killed at records {points:?} ended with another leaderboard"
        );
        assert_eq!(
            summary(&store, &id)["leaderboard"],
            whole["summary"]["leaderboard"]
        );
        // Every LLM request was made once: none repeated after a kill, none missing.
        let seen = brain.seen.lock().unwrap().clone();
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            seen.len(),
            "an LLM call was made twice (kills at {points:?})"
        );
        assert_eq!(seen.len(), calls, "kills at {points:?}");
        assert_eq!(resumed["summary"]["spent"], whole["summary"]["spent"]);
    }
    assert!(kills >= 10, "{kills} kills");
    // Once every run has finished, there is none to resume without an id.
    let out = lim()
        .arg("resume")
        .arg("--store")
        .arg(dir.path().join("killed3"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("stopped before its end"),
        "{err}"
    );
    drop(rt);
}

#[test]
fn a_resume_with_other_settings_is_refused_naming_them_or_forks() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("runs");
    let mut cmd = lim();
    cmd.args([
        "research",
        GOAL,
        "--max-iterations",
        "2",
        "--population",
        "3",
        "--store",
    ])
    .arg(&store);
    let id = run_until_killed(cmd, 6).unwrap();
    // A killed run is not "running": its process is gone.
    let runs = ok(&lim()
        .args(["runs", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap());
    let runs: Value = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs[0]["status"], "stopped", "{runs}");
    let out = lim()
        .args(["resume", &id, "--max-iterations", "5", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("budgets.max_iterations: 2 → 5"), "{err}");
    assert!(err.contains("--fork"), "{err}");
    // Nothing was lost: the run resumes as it was.
    let out = lim()
        .args(["resume", &id, "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["summary"]["lineage"].as_array().unwrap().len(), 2);
    // Asked to, it forks a new run with the new settings.
    let out = lim()
        .args([
            "resume",
            &id,
            "--max-iterations",
            "3",
            "--fork",
            "--json",
            "--store",
        ])
        .arg(&store)
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_ne!(v["run"].as_str().unwrap(), id);
    assert_eq!(v["summary"]["lineage"].as_array().unwrap().len(), 3);
    // A dollar budget without prices could never run out: refused with the fix.
    let out = lim()
        .args(["research", GOAL, "--budget-usd", "1", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --price PROMPT,COMPLETION"));
    // Other data is refused too.
    let other = dir.path().join("data");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("market/sample/cn_futures_daily.csv.gz"),
        other.join("cn_futures_daily.csv.gz"),
    )
    .unwrap();
    let out = lim()
        .args(["replay", &id, "--store"])
        .arg(&store)
        .arg("--data")
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read other data")
            && String::from_utf8_lossy(&out.stderr).contains("same --data directory it used"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_the_foundation_model_strategies_get_an_out_of_sample_forecast_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("runs");
    let out = lim()
        .args([
            "research",
            "trend in Chinese commodity futures",
            "--foundation",
            "--max-iterations",
            "2",
            "--population",
            "4",
            "--json",
            "--store",
        ])
        .arg(&store)
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    let lab = &v["summary"]["foundation"];
    let f = &lab["fields"][0];
    assert_eq!(f["name"], "forecast_ret_5", "{v}");
    assert_eq!(lab["fields"][1]["name"], "forecast_vol_5", "{v}");
    // Pretrained, then fine-tuned twice from that backbone, all paid from the budget.
    assert_eq!(lab["trained"].as_array().unwrap().len(), 3, "{lab}");
    assert!(f["model"].as_str().unwrap().starts_with("pre300s"), "{f}");
    assert!(lab["spent_cpu_seconds"].as_f64().unwrap() > 0.0, "{lab}");
    assert!(
        f["dropped_in_sample"].as_u64().unwrap() == 0,
        "the model predicted before its cutoff: {f}"
    );
    let report = std::fs::read_to_string(v["report"].as_str().unwrap()).unwrap();
    assert!(report.contains("## Foundation model"), "{report}");
    // Strategies on the forecast were tried and count among the trials.
    let id = v["run"].as_str().unwrap();
    let replay = ok(&lim()
        .args(["replay", id, "--store"])
        .arg(&store)
        .output()
        .unwrap());
    assert!(replay.contains("outputs identical"), "{replay}");
}

/// The store of a run against llama.cpp's server (SmolLM2-135M) whose plan traded three
/// calendars: no strategy had an active bar in validation, the report's NaN metrics could not
/// become the run's summary, and every `lim resume` died the same way.
#[test]
fn the_nan_report_run_resumes_to_a_finished_report_led_by_a_strategy_with_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nan-report-store");
    std::fs::copy(fixture.join("runs.sqlite"), dir.path().join("runs.sqlite")).unwrap();
    let store = dir.path().to_str().unwrap();
    let out = ok(&lim()
        .args(["resume", "rdbf2c091", "--store", store, "--json"])
        .output()
        .unwrap());
    let v: Value = serde_json::from_str(&out).unwrap();
    let board = v["summary"]["leaderboard"].as_array().unwrap();
    assert!(!board.is_empty(), "{out}");
    let lead = &board[0]["validation"];
    assert!(lead["bars"].as_u64().unwrap() >= 20, "{lead}");
    assert!(
        lead["sharpe"].as_f64().is_some_and(f64::is_finite),
        "{lead}"
    );
    assert_eq!(board[0]["signal"], "ts_sum(returns, 60)");
    // The strategy that led before, on its training Sharpe alone, is named as without evidence.
    let rejected = v["summary"]["rejected"].as_array().unwrap();
    let old_leader = rejected
        .iter()
        .find(|r| r["signal"] == "ts_sum(returns, 120)")
        .unwrap();
    assert!(
        old_leader["reason"]
            .as_str()
            .unwrap()
            .contains("validation part: 0 active bars"),
        "{old_leader}"
    );
    let runs: Value = serde_json::from_str(&ok(&lim()
        .args(["runs", "--store", store, "--json"])
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(runs[0]["status"], "finished");
    let report = ok(&lim()
        .args(["show", "rdbf2c091", "--store", store])
        .output()
        .unwrap());
    assert!(report.contains("| no trades |"), "{report}");
    // (The journaled critiques of the old run still say NaN in their text; tables do not.)
    assert!(!report.contains("| NaN"), "{report}");
    // The summary round-trips through `--json`.
    let shown: Value = serde_json::from_str(&ok(&lim()
        .args(["show", "rdbf2c091", "--store", store, "--json"])
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(shown["summary"]["leaderboard"], v["summary"]["leaderboard"]);
}

#[test]
fn a_finished_run_adds_its_findings_to_the_memory_and_clear_forgets_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let out = ok(&lim()
        .args([
            "research",
            GOAL,
            "--max-iterations",
            "1",
            "--json",
            "--store",
            store,
        ])
        .output()
        .unwrap());
    let run: Value = serde_json::from_str(&out).unwrap();
    let memory = |extra: &[&str]| -> Value {
        let mut args = vec!["memory", "--json", "--store", store];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&lim().args(&args).output().unwrap())).unwrap()
    };
    let found = memory(&["--dataset", "cn_futures_daily"]);
    let found = found.as_array().unwrap();
    assert!(!found.is_empty());
    assert_eq!(found[0]["run"], run["run"]);
    assert_eq!(
        found[0]["signal"],
        run["summary"]["leaderboard"][0]["signal"]
    );
    assert!(
        memory(&["--dataset", "us_futures_daily"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A name the memory holds nothing on says what it does hold, and the likely meaning.
    let text = ok(&lim()
        .args(["memory", "--store", store, "--dataset", "cn_futures_dialy"])
        .output()
        .unwrap());
    assert!(
        text.contains("no findings on 'cn_futures_dialy' (did you mean 'cn_futures_daily'?)")
            && text.contains(&format!("cn_futures_daily ({})", found.len())),
        "{text}"
    );
    let text = ok(&lim()
        .args(["memory", "clear", "--store", store, "--dataset", "nope"])
        .output()
        .unwrap());
    assert!(
        text.contains("forgot 0 findings: no findings on 'nope'"),
        "{text}"
    );
    // `lim show` without an id is the newest run; its tearsheet's path opens from anywhere.
    let newest = ok(&lim().args(["show", "--store", store]).output().unwrap());
    assert!(newest.contains("## Hypothesis lineage"), "{newest}");
    let page = ok(&lim()
        .args(["show", "--html", "--store", store])
        .output()
        .unwrap());
    let page = Path::new(page.trim());
    assert!(page.is_absolute() && page.is_file(), "{}", page.display());
    assert!(page.starts_with(dir.path().canonicalize().unwrap()) || page.starts_with(dir.path()));
    let cleared = memory(&["clear"]);
    assert_eq!(cleared["forgotten"].as_u64().unwrap() as usize, found.len());
    assert!(memory(&[]).as_array().unwrap().is_empty());
}

/// Commands that read runs create no store where there is none (a mistyped `--store` leaves
/// nothing behind), and say where they looked.
#[test]
fn reading_commands_name_a_missing_store_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let store = missing.to_str().unwrap();
    let runs = ok(&lim().args(["runs", "--store", store]).output().unwrap());
    assert!(runs.contains("no runs yet in"), "{runs}");
    let runs = ok(&lim()
        .args(["runs", "--json", "--store", store])
        .output()
        .unwrap());
    assert_eq!(serde_json::from_str::<Value>(&runs).unwrap(), json!([]));
    for args in [
        vec!["show"],
        vec!["show", "r123"],
        vec!["memory"],
        vec!["resume", "r123"],
        vec!["replay", "r123"],
        vec!["trace", "export", "r123"],
    ] {
        let out = lim().args(&args).args(["--store", store]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("no run store at") && err.contains("typo"),
            "{args:?}: {err}"
        );
    }
    assert!(!missing.exists(), "a store was created");
}

/// A run remembers its data directory: resume and replay need no `--data` again.
#[test]
fn a_run_started_on_a_data_directory_resumes_and_replays_without_naming_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("market/sample");
    std::fs::copy(
        sample.join("cn_futures_daily.csv.gz"),
        data.join("cn_futures_daily.csv.gz"),
    )
    .unwrap();
    let store = dir.path().join("runs");
    let mut cmd = lim();
    cmd.args(["research", GOAL, "--max-iterations", "2", "--data"])
        .arg(&data)
        .arg("--store")
        .arg(&store);
    let id = run_until_killed(cmd, 12).expect("the run printed its id");
    let out = lim()
        .args(["resume", &id, "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let resumed: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(
        resumed["summary"]["plan"]["strategy"]["datasets"],
        json!(["cn_futures_daily"])
    );
    ok(&lim()
        .args(["replay", &id, "--store"])
        .arg(&store)
        .output()
        .unwrap());
    // The bundled sample holds other datasets: naming it is refused, naming what changed.
    let other = lim()
        .args([
            "replay",
            &id,
            "--data",
            "/nonexistent-dir-for-lim-test",
            "--store",
        ])
        .arg(&store)
        .output()
        .unwrap();
    assert!(!other.status.success());
}

/// The research benchmark runs goals × seeds in its own store, reports them against
/// always-long, and reads finished runs back on a second call.
#[test]
fn the_research_benchmark_measures_runs_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let args = [
        "bench", "research", "--goals", "1", "--seeds", "1", "--json", "--store", store,
    ];
    let first: Value = serde_json::from_str(&ok(&lim().args(args).output().unwrap())).unwrap();
    let run = &first["runs"][0];
    snapshot_shape(&first, "tests/snapshots/bench_research.json");
    assert_eq!(run["finalists_test_sharpe"].as_array().unwrap().len(), 3);
    assert!(run["seconds"].as_f64().unwrap() > 0.0);
    // Every scored strategy tried, on the test: the finalists are among them, with the same
    // books and the report's test Sharpe, so at least as many of the pool beat always long.
    let tried = &run["tried"];
    let count = |v: &Value| v.as_u64().unwrap();
    assert_eq!(count(&tried["finalists_reproduced"]), 3, "{tried}");
    assert!(count(&tried["scored"]) <= count(&run["trials"]));
    assert!(count(&tried["scored"]) >= 3);
    assert!(
        count(&tried["beating_always_long"]) >= count(&run["finalists_beating_always_long"]),
        "{run}"
    );
    let best = run["finalists_test_sharpe"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    let pool_best = tried["best_test_sharpe"].as_f64().unwrap();
    assert!(pool_best >= best - 1e-12, "{pool_best} {best}");
    let median = tried["median_test_sharpe"].as_f64().unwrap();
    assert!(median <= pool_best);
    let rho = tried["validation_test_rank_correlation"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&rho));
    let again: Value = serde_json::from_str(&ok(&lim().args(args).output().unwrap())).unwrap();
    assert_eq!(again["runs"][0]["seconds"], 0.0, "read back, not run again");
    assert_eq!(
        again["runs"][0]["finalists_test_sharpe"],
        run["finalists_test_sharpe"]
    );
    assert_eq!(again["totals"]["runs"], 1);

    // The same goal a period earlier: another run, whose sealed test ends before the usual
    // one begins, so nothing judged on the usual test has seen it.
    let earlier_args = [&args[..], &["--earlier", "1"]].concat();
    let earlier: Value =
        serde_json::from_str(&ok(&lim().args(&earlier_args).output().unwrap())).unwrap();
    let e = &earlier["runs"][0];
    assert!(
        e["seconds"].as_f64().unwrap() > 0.0,
        "a run of its own: {e}"
    );
    assert_ne!(e["run"], run["run"]);
    let period = |r: &Value| {
        let p = r["test_period"].as_array().unwrap();
        (
            p[0].as_str().unwrap().to_string(),
            p[1].as_str().unwrap().to_string(),
        )
    };
    let (usual, before) = (period(run), period(e));
    assert!(
        before.0 < before.1 && before.1 < usual.0,
        "{before:?} {usual:?}"
    );
    let text = ok(&lim()
        .args(earlier_args.iter().filter(|a| **a != "--json"))
        .output()
        .unwrap());
    assert!(
        text.contains(&format!("test {} to {}", before.0, before.1)),
        "{text}"
    );
}

/// The shape of a JSON value: its keys, and for each value its kind (a number that is not
/// finite is written as null or a string by `nonfinite`, so all three read "number"); arrays by
/// their first element.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::Bool(_) => "bool".into(),
        Value::String(s) if !matches!(s.as_str(), "inf" | "-inf") => "string".into(),
        _ => "number".into(),
    }
}

/// Compares the shape of `v` with the snapshot at `path` (relative to the repository);
/// `LIM_UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot_shape(v: &Value, path: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let got = serde_json::to_string_pretty(&shape(v)).unwrap() + "\n";
    if std::env::var_os("LIM_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "the JSON schema of {} changed; if on purpose, rerun with LIM_UPDATE_SNAPSHOTS=1 and commit the snapshot",
        path.display()
    );
}

/// The research benchmark with an LLM strategist at any OpenAI-compatible endpoint: its runs
/// are other runs than the offline ones, and it counts the LLM's calls and tokens.
#[test]
fn the_research_benchmark_runs_an_llm_strategist_and_counts_its_tokens() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let brain = Brain::default();
    let srv = server(&rt, &brain);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let base = format!("{}/v1", srv.uri());
    let args = [
        "bench",
        "research",
        "--goals",
        "1",
        "--seeds",
        "1",
        "--json",
        "--store",
        store,
        "--llm",
        "openai",
        "--model",
        "local",
        "--base-url",
        &base,
    ];
    let v: Value = serde_json::from_str(&ok(&lim().args(args).output().unwrap())).unwrap();
    let run = &v["runs"][0];
    assert!(run["llm_calls"].as_u64().unwrap() > 0, "{run}");
    assert!(run["llm_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["totals"]["llm_tokens"], run["llm_tokens"]);
    let offline: Value = serde_json::from_str(&ok(&lim()
        .args([
            "bench", "research", "--goals", "1", "--seeds", "1", "--json", "--store", store,
        ])
        .output()
        .unwrap()))
    .unwrap();
    assert_ne!(offline["runs"][0]["run"], run["run"], "another run");
    assert_eq!(offline["runs"][0]["llm_calls"], 0);
    drop(srv);
}

/// With `--foundation`, every goal runs with the plan's foundation step: its two fields are in
/// the JSON with the count of strategies that read them, and the runs are other runs than
/// without.
#[test]
fn the_research_benchmark_runs_with_the_foundation_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let base = [
        "bench", "research", "--goals", "1", "--seeds", "1", "--json", "--store", store,
    ];
    let with: Value =
        serde_json::from_str(&ok(&lim().args(base).arg("--foundation").output().unwrap())).unwrap();
    snapshot_shape(&with, "tests/snapshots/bench_research_foundation.json");
    let run = &with["runs"][0];
    let used = &run["foundation"];
    assert_eq!(
        used["fields"],
        json!(["forecast_ret_5", "forecast_vol_5"]),
        "{run}"
    );
    // The fields were rebuilt for the re-runs (or the benchmark would have failed), and the
    // counts are of this run's leaderboard.
    assert!(used["leaderboard_reading"].as_u64().unwrap() <= used["leaderboard"].as_u64().unwrap());
    assert!(used["leaderboard"].as_u64().unwrap() > 0, "{used}");
    assert_eq!(
        with["totals"]["foundation_finalists_reading"],
        used["finalists_reading"]
    );
    let without: Value = serde_json::from_str(&ok(&lim().args(base).output().unwrap())).unwrap();
    assert!(without["runs"][0].get("foundation").is_none());
    assert_ne!(without["runs"][0]["run"], run["run"]);
}

/// With `--vol-sizing`, a sign-threshold book's finalists are re-run on the test sized by the
/// foundation model's volatility forecast: the trailing arm reproduces the report's finalists,
/// the forecast arm changes them, and the JSON keeps its shape.
#[test]
fn the_research_benchmark_sizes_finalists_by_a_volatility_forecast() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    let args = [
        "bench",
        "research",
        "--goals",
        "1",
        "--seeds",
        "1",
        "--json",
        "--store",
        store,
        "--vol-sizing",
        "--vol-model-steps",
        "8",
    ];
    let v: Value = serde_json::from_str(&ok(&lim().args(args).output().unwrap())).unwrap();
    snapshot_shape(&v, "tests/snapshots/bench_research_vol_sizing.json");
    let run = &v["runs"][0];
    let sized = &run["vol_sizing"];
    assert_eq!(sized["model"], "pre8s1.full8s1v5", "{sized}");
    assert_eq!(sized["trailing_test_sharpe"], run["finalists_test_sharpe"]);
    let (a, b) = (
        sized["trailing_test_sharpe"].as_array().unwrap(),
        sized["forecast_test_sharpe"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().zip(b).any(|(x, y)| x != y),
        "sizing by the forecast changed nothing: {sized}"
    );
    assert_eq!(v["totals"]["vol_sizing_finalists"], a.len());
    // Before costs every book does at least as well, and sizing by the forecast trades.
    let num = |k: &str| -> Vec<f64> {
        sized[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    for (net, gross) in [
        ("trailing_test_sharpe", "trailing_gross_test_sharpe"),
        ("forecast_test_sharpe", "forecast_gross_test_sharpe"),
    ] {
        for (n, g) in num(net).iter().zip(num(gross)) {
            assert!(g >= *n, "{gross} {g} below {net} {n}: {sized}");
        }
    }
    assert!(
        num("forecast_test_turnover").iter().all(|t| *t > 0.0),
        "{sized}"
    );
    // Fine-tuned in two stages, the model is another (the run itself is read back).
    let mut lp_ft = args.to_vec();
    lp_ft.push("--vol-model-lp-ft");
    let w: Value = serde_json::from_str(&ok(&lim().args(&lp_ft).output().unwrap())).unwrap();
    let other = &w["runs"][0]["vol_sizing"];
    assert_eq!(other["model"], "pre8s1.lpft8s1v5", "{other}");
    assert_eq!(other["trailing_test_sharpe"], sized["trailing_test_sharpe"]);
    assert_ne!(other["forecast_test_sharpe"], sized["forecast_test_sharpe"]);
}

/// Goals and budgets a run cannot work with are refused before anything runs, each with what
/// to write instead; nothing lands in the store.
#[test]
fn an_empty_goal_or_a_budget_below_one_is_refused_with_the_fix() {
    let store = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["   "], "the goal is empty"),
        (&["trend", "--max-iterations", "0"], "--max-iterations"),
        (&["trend", "--max-iterations", "-1"], "-1"),
        (&["trend", "--population", "0"], "must be at least 1"),
        (&["trend", "--finalists", "-2"], "must be at least 1"),
        (&["trend", "--deadline", "-5m"], "must be above zero"),
        (
            &["trend", "--budget-usd", "-5", "--price", "1,1"],
            "must be above zero",
        ),
    ];
    for (args, says) in cases {
        let out = lim()
            .arg("research")
            .args(args)
            .arg("--store")
            .arg(store.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
    let runs = lim()
        .args(["runs", "--json", "--store"])
        .arg(store.path())
        .output()
        .unwrap();
    let listed: Value = serde_json::from_str(&ok(&runs)).unwrap();
    assert_eq!(listed, json!([]), "runs were stored");
}

/// A goal the keyword rules do not understand is not silently studied on a market it never
/// named: the plan says what it took as a default, before anything is spent.
#[test]
fn a_goal_naming_no_market_says_the_plan_took_the_default() {
    let store = tempfile::tempdir().unwrap();
    let out = ok(&lim()
        .args([
            "research",
            "make me rich",
            "--max-iterations",
            "1",
            "--store",
        ])
        .arg(store.path())
        .output()
        .unwrap());
    // The plan's lines are wrapped to the terminal; read them as one text.
    let plan = out[..out.find("stopped:").unwrap_or(out.len())]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(plan.contains("review: the keyword plan"), "{plan}");
    assert!(plan.contains("names no market"), "{plan}");
    assert!(plan.contains("names no strategy family"), "{plan}");
}
