//! The run browser's runs list over a store of 1,000 runs: time to answer `/api/runs` and `/`
//! over HTTP on 127.0.0.1 (target: under 50 ms). `cargo run --release --bin bench-serve`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

#[path = "../../serve/tests/fixture/mod.rs"]
mod fixture;

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn time_get(addr: std::net::SocketAddr, path: &str) -> (f64, usize) {
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200"), "{path} failed");
    (t.elapsed().as_secs_f64() * 1000.0, out.len())
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    fixture::store_with_runs(dir.path(), 1000);
    eprintln!("made 1,000 runs in {:.1} s", t.elapsed().as_secs_f64());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = lim_serve::App::open(dir.path(), None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(lim_serve::serve(listener, lim_serve::router(app)));
        for path in ["/api/runs", "/"] {
            let mut ms = Vec::new();
            let mut bytes = 0;
            for _ in 0..21 {
                let (m, b) = time_get(addr, path).await;
                ms.push(m);
                bytes = b;
            }
            ms.sort_by(f64::total_cmp);
            println!(
                "{path:<10} 1,000 runs: median {:.1} ms, worst {:.1} ms, {} KB",
                ms[10],
                ms[20],
                bytes / 1024
            );
        }
    });
}
