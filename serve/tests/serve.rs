//! The run browser over a real store on 127.0.0.1: pages and JSON, read-only, loopback unless
//! told otherwise with a token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod fixture;
use fixture::store_with_runs;

async fn get(addr: SocketAddr, path: &str, header: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

async fn start(dir: &Path, token: Option<&str>) -> SocketAddr {
    let app = lim_serve::App::open(dir, token.map(String::from)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lim_serve::serve(listener, lim_serve::router(app)));
    addr
}

/// The store's bytes, its write-ahead log included.
fn digest(dir: &Path) -> Vec<u8> {
    let mut b = std::fs::read(dir.join("runs.sqlite")).unwrap();
    b.extend(std::fs::read(dir.join("runs.sqlite-wal")).unwrap_or_default());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_list_show_and_compare_runs_without_changing_the_store() {
    let dir = tempfile::tempdir().unwrap();
    store_with_runs(dir.path(), 6);
    let before = digest(dir.path());
    let addr = start(dir.path(), None).await;

    let (code, body) = get(addr, "/api/runs", None).await;
    assert_eq!(code, 200);
    let runs: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(runs.len(), 6);
    assert_eq!(runs[0]["id"], "r00000005", "newest first");
    let r0 = runs.iter().find(|r| r["id"] == "r00000000").unwrap();
    assert_eq!(
        r0["status"], "stopped",
        "a running run whose process is gone"
    );
    assert_eq!(r0["trials"], 20);
    assert_eq!(r0["best_fitness"], 1.9);
    assert_eq!(r0["last_exec"], "backtest#1");

    let (code, index) = get(addr, "/", None).await;
    assert_eq!(code, 200);
    assert!(
        index.contains("goal number 3 &lt;b&gt;bold?&lt;/b&gt;"),
        "escaped"
    );
    assert!(index.contains("href=\"/runs/r00000004\""));

    let (code, page) = get(addr, "/runs/r00000001", None).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("No report yet") && page.contains("backtest#1"),
        "{page}"
    );

    let (code, j) = get(addr, "/runs/r00000001/journal?exec=plan%231", None).await;
    assert_eq!(code, 200);
    assert!(
        j.contains("plan &lt;this&gt;"),
        "the LLM request is shown, escaped"
    );

    let (code, c) = get(addr, "/compare?a=r00000001&b=r00000002", None).await;
    assert_eq!(code, 200);
    assert!(c.contains("id=\"a\"") && c.contains("r00000002"));

    assert_eq!(get(addr, "/memory", None).await.0, 200);
    assert_eq!(get(addr, "/runs/nope", None).await.0, 404);
    assert_eq!(digest(dir.path()), before, "serving changed the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_page_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    store_with_runs(dir.path(), 1);
    let addr = start(dir.path(), Some("s3cret")).await;
    let (code, body) = get(addr, "/api/runs", None).await;
    assert_eq!(code, 401);
    assert!(body.contains("?token="));
    assert_eq!(get(addr, "/api/runs?token=wrong", None).await.0, 401);
    assert_eq!(get(addr, "/api/runs?token=s3cret", None).await.0, 200);
    assert_eq!(
        get(addr, "/", Some("Authorization: Bearer s3cret")).await.0,
        200
    );
    assert_eq!(
        get(addr, "/", Some("Cookie: lim_token=s3cret")).await.0,
        200
    );
}

#[test]
fn only_loopback_unless_remote_is_allowed_with_a_token() {
    let local: SocketAddr = "127.0.0.1:8750".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:8750".parse().unwrap();
    assert!(lim_serve::check_bind(&local, false, None).is_ok());
    let e = lim_serve::check_bind(&any, false, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--allow-remote"), "{e}");
    let e = lim_serve::check_bind(&any, true, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token"), "{e}");
    assert!(lim_serve::check_bind(&any, true, Some("t")).is_ok());
}

#[test]
fn a_missing_store_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = lim_serve::App::open(&dir.path().join("none"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("runs.sqlite") && e.contains("--store"), "{e}");
    assert!(!dir.path().join("none").exists(), "nothing created");
}
