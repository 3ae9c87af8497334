//! `lim serve`: a local, read-only web UI over a run store.
//!
//! Pages: the runs (status, progress of running runs, refreshed by polling `/api/runs`), a
//! run (its tearsheet once it has a report, else where it stands), its journal (node
//! executions, and each one's LLM exchanges, tool calls, data reads and completion), two runs
//! side by side, and the research memory. The store is opened read-only: nothing here can
//! change a run. It listens on loopback only, unless told `allow_remote` with a token that
//! every request must then carry (`Authorization: Bearer …`, or `?token=…` once, which sets a
//! cookie).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use lim_pipelines::journal::{Kind, Record, spent_in};
use lim_pipelines::research::{self, ResearchConfig, Summary};
use lim_pipelines::store::{RunMeta, RunOverview, Store, StoreError};
use serde::{Deserialize, Serialize};

mod pages;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without `--allow-remote`.
    #[error(
        "refusing to listen on {0}: the run browser binds to 127.0.0.1 (or ::1) unless --allow-remote is given with --token"
    )]
    Remote(SocketAddr),
    /// `--allow-remote` without a token.
    #[error(
        "--allow-remote needs a token (--token, or LIM_SERVE_TOKEN): every request must then carry it"
    )]
    NoToken,
    /// The store cannot be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks that listening on `addr` is allowed: loopback always; any other address only with
/// `allow_remote` and a non-empty token.
///
/// # Errors
/// Which rule it breaks and the fix.
pub fn check_bind(
    addr: &SocketAddr,
    allow_remote: bool,
    token: Option<&str>,
) -> Result<(), ServeError> {
    if allow_remote && token.is_none_or(str::is_empty) {
        return Err(ServeError::NoToken);
    }
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(ServeError::Remote(*addr));
    }
    Ok(())
}

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    store: Store,
    token: Option<String>,
}

impl App {
    /// The store in `dir`, opened read-only, and the token requests must carry (if any).
    ///
    /// # Errors
    /// There is no store there.
    pub fn open(dir: &Path, token: Option<String>) -> Result<App, ServeError> {
        Ok(App {
            store: Store::open_read_only(dir)?,
            token: token.filter(|t| !t.is_empty()),
        })
    }
}

/// The web UI's routes over `app`.
pub fn router(app: App) -> Router {
    let app = Arc::new(app);
    Router::new()
        .route("/", get(index))
        .route("/api/runs", get(api_runs))
        .route("/api/runs/{id}", get(api_run))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/journal", get(journal_page))
        .route("/compare", get(compare_page))
        .route("/memory", get(memory_page))
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .with_state(app)
}

/// Serves `router` on `listener` until the future is dropped.
///
/// # Errors
/// The listener failed.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

const COOKIE: &str = "lim_token";

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(token) = app.token.clone() else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(token.as_str()));
    let cookie = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .any(|c| c.trim() == format!("{COOKIE}={token}"))
        });
    let query = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == format!("token={token}")));
    if !(bearer || cookie || query) {
        return (
            StatusCode::UNAUTHORIZED,
            "this run browser needs its token: open it with ?token=TOKEN once, or send Authorization: Bearer TOKEN",
        )
            .into_response();
    }
    let mut res = next.run(req).await;
    if query
        && !cookie
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        ))
    {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

fn not_found(what: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::message("Not found", &what)),
    )
        .into_response()
}

fn failed(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Html(pages::message("Error", &e.to_string())),
    )
        .into_response()
}

/// The runs list, each run's status as it stands now (see [`lim_pipelines::store::RunStatus::live`]).
fn rows(app: &App) -> Result<Vec<RunOverview>, StoreError> {
    let mut rows = app.store.overview()?;
    for r in &mut rows {
        r.status = r.status.live(r.owner);
    }
    Ok(rows)
}

async fn index(State(app): State<Arc<App>>) -> Response {
    match rows(&app) {
        Ok(r) => Html(pages::index(&r)).into_response(),
        Err(e) => failed(e),
    }
}

async fn api_runs(State(app): State<Arc<App>>) -> Response {
    match rows(&app) {
        Ok(r) => json(&r),
        Err(e) => failed(e),
    }
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => failed(e),
    }
}

/// A run read back: its record, journal and (once it has one) its summary.
struct Loaded {
    meta: RunMeta,
    records: Vec<Record>,
    summary: Option<Summary>,
}

fn load(app: &App, id: &str) -> Result<Loaded, StoreError> {
    let meta = app.store.run(id)?;
    let records = app.store.load(&meta.id)?.records;
    let summary = serde_json::from_value::<ResearchConfig>(meta.config.clone())
        .ok()
        .filter(|_| {
            records
                .iter()
                .any(|r| r.kind == Kind::Node && r.body.pointer("/outputs/summary").is_some())
        })
        .and_then(|config| {
            let spent = spent_in(&records, &config.llm_budget(), |_| true);
            research::summarize(&research::artifacts_of(&records), &config, spent)
                .ok()
                .map(|(s, _)| s)
        });
    Ok(Loaded {
        meta,
        records,
        summary,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(StoreError::UnknownRun(id))) => Err(not_found(format!("no run '{id}' here"))),
        Ok(Err(e)) => Err(failed(e)),
        Err(e) => Err(failed(e)),
    }
}

async fn api_run(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    match blocking(move || load(&app, &id)).await {
        Ok(l) => json(&serde_json::json!({"run": l.meta, "summary": l.summary})),
        Err(r) => r,
    }
}

async fn run_page(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    let a = app.clone();
    let loaded = match blocking(move || load(&a, &id)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let owner = app.store.owner(&loaded.meta.id).ok().flatten();
    let status = loaded.meta.status.live(owner);
    match &loaded.summary {
        Some(s) => {
            let curves: Option<research::Curves> = research::artifacts_of(&loaded.records)
                .get("curves")
                .and_then(|c| serde_json::from_value(c.clone()).ok());
            Html(pages::with_nav(
                &research::tearsheet(s, curves.as_ref()),
                &loaded.meta.id,
            ))
            .into_response()
        }
        None => Html(pages::unfinished(&loaded.meta, status, &loaded.records)).into_response(),
    }
}

/// `?exec=` of the journal page.
#[derive(Debug, Deserialize)]
struct JournalQuery {
    exec: Option<String>,
}

async fn journal_page(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<JournalQuery>,
) -> Response {
    let loaded = match blocking(move || {
        let meta = app.store.run(&id)?;
        let records = app.store.load(&meta.id)?.records;
        Ok((meta, records))
    })
    .await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    Html(pages::journal(&loaded.0, &loaded.1, q.exec.as_deref())).into_response()
}

/// `?a=&b=` of the compare page.
#[derive(Debug, Deserialize)]
struct CompareQuery {
    a: String,
    b: String,
}

async fn compare_page(State(app): State<Arc<App>>, Query(q): Query<CompareQuery>) -> Response {
    match blocking(move || Ok((load(&app, &q.a)?, load(&app, &q.b)?))).await {
        Ok((a, b)) => Html(pages::compare(
            (&a.meta, a.summary.as_ref()),
            (&b.meta, b.summary.as_ref()),
        ))
        .into_response(),
        Err(r) => r,
    }
}

async fn memory_page(State(app): State<Arc<App>>) -> Response {
    match blocking(move || app.store.recall(&[], 500)).await {
        Ok(f) => Html(pages::memory(&f)).into_response(),
        Err(r) => r,
    }
}
