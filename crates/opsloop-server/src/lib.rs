//! opsloop's server: the HTTP API (`/api/v1`), the web UI, authentication and roles, and the
//! wiring of engines to the metadata store.
//!
//! Entry points: [`serve`] runs the server until SIGINT/SIGTERM; [`build_app`] returns the
//! complete `Router` for in-process tests; [`route_specs`] lists every route with its access
//! decision. Engines never depend on this crate; it depends on them.

pub mod accounts;
pub mod agents;
pub mod alerting;
pub mod api;
pub mod auth;
pub mod checks;
pub mod ci;
pub mod config;
pub mod config_diff;
mod demo;
pub mod deploy;
pub mod error;
pub mod events;
pub mod gitops;
pub mod loki;
pub mod metrics;
mod mirror;
pub mod notify;
pub mod objects;
pub(crate) mod ops;
pub mod polling;
pub mod prometheus;
pub mod routes;
pub mod schedules;
pub mod state;
pub mod subsystem;
pub mod ui;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request, header};
use opsloop_store::{Location, Store};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use config::{DatabaseConfig, LogFormat, ServerConfig};
use routes::{RouteSpec, RouteTable};
pub use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] opsloop_store::StoreError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {address} for the deployment proxy: {source} (pass --proxy-listen ADDR:PORT elsewhere, or off)"
    )]
    ProxyBind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up failed: {0}")]
    Setup(String),
    #[error("setting up failed: {0}")]
    Demo(#[from] demo::DemoError),
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Every route of the server: probes, the API's and UI's own, then each subsystem's.
fn route_table() -> RouteTable {
    let table = ui::routes(api::routes(ops::routes(RouteTable::default())));
    subsystem::all().iter().fold(table, |table, subsystem| subsystem.routes(table))
}

/// Every route with its access decision, as the server enforces them.
pub fn route_specs() -> Vec<RouteSpec> {
    route_table().into_parts().1
}

/// Opens the metadata store the configuration names, applying migrations.
pub async fn open_store(config: &ServerConfig) -> Result<Store, ServerError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let store = match &config.database {
        DatabaseConfig::Sqlite { path } => Store::open(Location::SqliteFile(path)).await?,
        DatabaseConfig::Postgres { url } => Store::open(Location::Postgres(url)).await?,
    };
    Ok(store)
}

/// The complete application: routes, access enforcement, metrics, limits and tracing.
/// Time comes from the store's clock, so tests move one clock for everything.
pub fn build_app(store: Store, config: ServerConfig) -> Router {
    build_app_and_state(store, config).0
}

/// [`build_app`] and the state behind it (tests drive background work through it).
pub fn build_app_and_state(store: Store, config: ServerConfig) -> (Router, AppState) {
    let (router, specs) = route_table().into_parts();
    let max_body_bytes = config.http.max_body_bytes;
    let request_timeout = Duration::from_secs(config.http.request_timeout_seconds);
    let state = AppState::new(store, config, &specs);
    let router = router
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), routes::enforce))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(CatchPanicLayer::custom(ops::panic_response))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
                })
                // One access-log line per request at info, in the request's span (so with its id).
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state.clone());
    (router, state)
}

/// What `serve` prints once for the person who started it.
#[derive(Debug, Clone)]
pub struct StartupReport {
    pub address: SocketAddr,
    /// Where the deployment proxy listens (none with `--proxy-listen off`).
    pub proxy_address: Option<SocketAddr>,
    pub initial_admin_password: Option<String>,
}

/// Runs the server until SIGINT or SIGTERM, then lets in-flight requests finish for at most
/// `shutdown_grace_seconds`. `on_ready` is called once the port accepts connections.
pub async fn serve(config: ServerConfig, on_ready: impl FnOnce(&StartupReport)) -> Result<(), ServerError> {
    let store = open_store(&config).await?;
    // Bind first: if the port is taken, nothing is created whose one-time password would be lost.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind { address: config.listen, source })?;
    // The proxy's port too, before anything is created (its workers bind it for real later).
    if let Some(address) = config.deploy.proxy_listen.filter(|a| a.port() != 0) {
        std::net::TcpListener::bind(address).map_err(|source| ServerError::ProxyBind { address, source })?;
    }
    // The vault's key is made now, on first start, rather than at the first secret.
    opsloop_secure::Vault::open(&config.data_dir).map_err(|error| ServerError::Setup(error.to_string()))?;
    // Nothing runs yet: job processes still alive under the pipelines directory were left by
    // an earlier process that was killed, and their checkouts with them.
    let pipelines_dir = config.data_dir.join("pipelines");
    let orphans = opsloop_runner::reap::kill_orphans(&pipelines_dir);
    if orphans > 0 {
        tracing::warn!(processes = orphans, "killed job processes an earlier run left behind");
    }
    let _ = std::fs::remove_dir_all(&pipelines_dir);
    let unfinished = store.interrupted_jobs().await?;
    let interrupted = store.fail_interrupted().await?;
    if interrupted > 0 {
        tracing::warn!(pipelines = interrupted, "failed the pipelines an earlier run left unfinished");
    }
    let initial_admin_password =
        accounts::bootstrap_admin(&store).await.map_err(|error| ServerError::Setup(error.to_string()))?;
    if config.demo {
        demo::register(&store, &config.data_dir).await?;
    }
    let address = listener.local_addr().map_err(ServerError::Serve)?;
    let grace = Duration::from_secs(config.http.shutdown_grace_seconds);
    let demo = config.demo;
    let proxy_listen = config.deploy.proxy_listen;
    let (app, state) = build_app_and_state(store.clone(), config);
    let _ = state.bound_address.set(address);
    let (proxy_stop, proxy_stopped) = tokio::sync::watch::channel(false);
    let proxy_address = match proxy_listen {
        Some(address) => Some(
            deploy::serve_proxy(&state, address, proxy_stopped)
                .map_err(|source| ServerError::ProxyBind { address, source })?,
        ),
        None => None,
    };
    let subsystems = subsystem::all();
    let mut workers = Vec::new();
    for subsystem in &subsystems {
        for worker in subsystem.workers(&state) {
            tracing::debug!(subsystem = subsystem.name(), worker = worker.name, "starting");
            workers.push(tokio::spawn(worker.task));
        }
    }
    ci::resume_interrupted(&state, unfinished);
    let resumed = ci::resume_queued(&state).await;
    if resumed > 0 {
        tracing::info!(pipelines = resumed, "resumed the pipelines an earlier run left queued");
    }
    if demo {
        demo::run_first_pipeline(&state).await;
    }

    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_waiter = stop.clone();
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { stop_waiter.notified().await });
    let mut server = tokio::spawn(async move { server.await });
    on_ready(&StartupReport { address, proxy_address, initial_admin_password });
    tracing::info!(%address, "listening");

    tokio::select! {
        finished = &mut server => {
            finished.map_err(|e| ServerError::Serve(std::io::Error::other(e)))?.map_err(ServerError::Serve)?;
        }
        () = shutdown_signal() => {
            tracing::info!(grace_seconds = grace.as_secs(), "shutting down; letting in-flight requests finish");
            stop.notify_one();
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                tracing::warn!("in-flight requests did not finish in time; closing them");
                server.abort();
            }
        }
    }
    let _ = proxy_stop.send(true);
    for subsystem in subsystems.iter().rev() {
        subsystem.stop(&state).await;
    }
    for worker in &workers {
        worker.abort();
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = interrupt => {}, () = terminate => {} }
}
