//! The tearsheet in a real browser: headless Chromium (Debian's package; `tests/browser/setup.sh`
//! installs it and prints `LIM_TEST_CHROMIUM`, `.ci/run` does both) opens a run's
//! `report.html` from disk with the network off. No console message (an error, an uncaught
//! exception), charts drawn with data after the page's scripts ran, and a screenshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn chromium(bin: &str, profile: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn the_tearsheet_loads_in_chromium_without_errors_and_draws_its_charts() {
    let Ok(bin) = std::env::var("LIM_TEST_CHROMIUM") else {
        eprintln!(
            "skipped: set LIM_TEST_CHROMIUM (tests/browser/setup.sh prints it; .ci/run does it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lim"))
        .args([
            "research",
            "find a robust trend strategy for Chinese commodity futures, max drawdown 15%",
            "--max-iterations",
            "2",
            "--population",
            "4",
            "--json",
            "--store",
        ])
        .arg(dir.path().join("runs"))
        .env("LIM_CACHE", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let html = Path::new(v["html"].as_str().unwrap()).to_path_buf();
    let url = format!("file://{}", html.display());
    // The DOM after the page's scripts ran, and everything the browser logged.
    let dom = chromium(&bin, &dir.path().join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&dom.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "the page logged: {console:#?}");
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in ["equity", "drawdown", "rolling-sharpe", "rank-ic"] {
        let start = dom
            .find(&format!("<figure id=\"{id}\""))
            .unwrap_or_else(|| panic!("no chart '{id}'"));
        let end = start + dom[start..].find("</figure>").unwrap();
        let drawn: Vec<usize> = dom[start..end]
            .split("data-points=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .collect();
        assert!(
            !drawn.is_empty() && drawn.iter().all(|n| *n > 100),
            "chart '{id}' is empty: {drawn:?}"
        );
    }
    let shot = dir.path().join("tearsheet.png");
    let status = chromium(&bin, &dir.path().join("profile-shot"))
        .arg("--window-size=1200,2400")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(status.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "{} bytes",
        png.len()
    );

    let id = v["run"].as_str().unwrap().to_string();
    serve_pages_load_without_errors(&bin, dir.path(), &dir.path().join("runs"), &id);
}

/// `lim serve` over the run just made: every page loads in Chromium without a console error
/// or a failed request, the run page draws its charts, and the runs page makes a screenshot.
fn serve_pages_load_without_errors(bin: &str, dir: &Path, store: &Path, id: &str) {
    use std::io::{BufRead as _, BufReader};
    let mut server = Command::new(env!("CARGO_BIN_EXE_lim"))
        .args(["serve", "--port", "0", "--store"])
        .arg(store)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    assert!(!id.is_empty());
    let pages = [
        "/".to_string(),
        format!("/runs/{id}"),
        format!("/runs/{id}/journal?exec=generate%231"),
        format!("/compare?a={id}&b={id}"),
        "/memory".to_string(),
    ];
    for (i, p) in pages.iter().enumerate() {
        let dom = chromium(bin, &dir.join(format!("profile-serve-{i}")))
            .arg("--dump-dom")
            .arg(format!("{base}{p}"))
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&dom.stderr);
        let console: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("CONSOLE") || l.contains("Failed to load"))
            .collect();
        assert!(console.is_empty(), "{p} logged: {console:#?}");
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(
            dom.contains("</html>") && !dom.contains("<h1>Error</h1>"),
            "{p}: {dom}"
        );
        if p.starts_with("/runs/") && !p.contains("journal") {
            assert!(dom.contains("data-points=\""), "the run page has no charts");
        }
    }
    let shot = dir.join("serve.png");
    let status = chromium(bin, &dir.join("profile-serve-shot"))
        .arg("--window-size=1200,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{base}/"))
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
    server.kill().unwrap();
    server.wait().unwrap();
}
