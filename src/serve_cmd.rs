//! `lim serve`: the local run browser (see `lim_serve`).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::research_cmd::StoreArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on. Only loopback unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Port (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8750)]
    port: u16,
    /// Listen on a non-loopback address; needs --token (or LIM_SERVE_TOKEN).
    #[arg(long)]
    allow_remote: bool,
    /// The token every request must carry when remote (`?token=` once, or a Bearer header).
    #[arg(long)]
    token: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Only the CLI reads the environment.
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("LIM_SERVE_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let addr = SocketAddr::new(args.bind, args.port);
    lim_serve::check_bind(&addr, args.allow_remote, token.as_deref())?;
    let dir = args.store.dir();
    let app = lim_serve::App::open(&dir, token.filter(|_| args.allow_remote))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (is the port taken? try --port 0)"))?;
        let local = listener.local_addr()?;
        println!(
            "serving the runs of {} at http://{local}/ (read-only; Ctrl-C stops)",
            dir.display()
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        tokio::select! {
            r = lim_serve::serve(listener, lim_serve::router(app)) => r.context("the server failed")?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}
