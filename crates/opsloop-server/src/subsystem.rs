//! The server as a host of subsystems: each domain (accounts, CI, agents, deployments,
//! notifications, the event bus) says in one place which routes it serves, which background
//! workers it runs and what it does at shutdown; [`all`] lists them. Start-up, shutdown and
//! the route table are written once, for every subsystem, in `lib.rs`.
//!
//! A new subsystem (metrics, alerting, logs…) is a module with a type implementing
//! [`Subsystem`] and one line in [`all`].

use std::future::Future;
use std::pin::Pin;

use crate::routes::RouteTable;
use crate::state::AppState;

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A background task of a subsystem: runs from start-up until the server stops.
pub struct Worker {
    pub name: &'static str,
    pub task: BoxFuture<'static>,
}

impl Worker {
    pub fn new(name: &'static str, task: impl Future<Output = ()> + Send + 'static) -> Self {
        Worker { name, task: Box::pin(task) }
    }
}

pub trait Subsystem: Send + Sync {
    /// Shown in logs (`worker stopped`, …).
    fn name(&self) -> &'static str;

    /// Adds the subsystem's API and UI routes, each with its access decision.
    fn routes(&self, table: RouteTable) -> RouteTable {
        table
    }

    /// Its background workers, started once the server accepts connections and aborted when
    /// it stops (after [`Subsystem::stop`]).
    fn workers(&self, _state: &AppState) -> Vec<Worker> {
        Vec::new()
    }

    /// Lets go of what outlives a request (processes, listeners) when the server stops.
    fn stop<'a>(&'a self, _state: &'a AppState) -> BoxFuture<'a> {
        Box::pin(async {})
    }

    /// What keeps the subsystem from working, if anything; `/readyz` reports every subsystem's
    /// problems beside the database's.
    fn problem(&self, _state: &AppState) -> Option<String> {
        None
    }
}

/// Every subsystem's problem, named by the subsystem.
pub fn problems(state: &AppState) -> Vec<String> {
    all().iter().filter_map(|s| s.problem(state).map(|problem| format!("{}: {problem}", s.name()))).collect()
}

/// Every subsystem, in start-up order.
pub fn all() -> Vec<Box<dyn Subsystem>> {
    vec![
        Box::new(Accounts),
        Box::new(Ci),
        Box::new(Agents),
        Box::new(Deployments),
        Box::new(Notifications),
        Box::new(Monitoring),
        Box::new(Alerting),
        Box::new(Checks),
        Box::new(Logs),
        Box::new(Infra),
    ]
}

/// Infrastructure as code: Terraform's state backend.
struct Infra;

impl Subsystem for Infra {
    fn name(&self) -> &'static str {
        "infra"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::api::infra_routes(table)
    }
    // States are stored encrypted, so they need the vault too; `Ci` already reports it.
}

/// Synthetic checks and heartbeats: results as samples, changes as alerts.
struct Checks;

impl Subsystem for Checks {
    fn name(&self) -> &'static str {
        "checks"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::ui::checks_routes(crate::checks::api::routes(table))
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        if !state.checks.configured() {
            return Vec::new();
        }
        let starting = state.clone();
        vec![
            Worker::new("checks", async move { crate::checks::start(&starting) }),
            Worker::new("heartbeats", crate::checks::tick_heartbeats_forever(state.clone())),
        ]
    }
    fn problem(&self, state: &AppState) -> Option<String> {
        state.checks.problem()
    }
}

/// Alerting: incidents, and (as the engine lands) Alertmanager's API, routing and on-call.
struct Alerting;

impl Subsystem for Alerting {
    fn name(&self) -> &'static str {
        "alerting"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::ui::alerting_routes(crate::alerting::links::routes(crate::alerting::api::routes(
            crate::api::alerting_routes(table),
        )))
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        let starting = state.clone();
        vec![
            Worker::new("alerting", async move {
                if let Err(e) = crate::alerting::engine::driver(&starting).await {
                    tracing::error!(error = %e, "the alerting engine could not start");
                }
            }),
            Worker::new("escalation", crate::alerting::engine::escalate_forever(state.clone())),
        ]
    }
    fn stop<'a>(&'a self, state: &'a AppState) -> BoxFuture<'a> {
        Box::pin(async move {
            if let Some(driver) = state.alerting.engine.get() {
                crate::alerting::engine::save(state, driver).await;
            }
        })
    }
    fn problem(&self, state: &AppState) -> Option<String> {
        state.alerting.problem()
    }
}

/// Metrics: series storage, PromQL and Prometheus's HTTP API.
struct Monitoring;

impl Subsystem for Monitoring {
    fn name(&self) -> &'static str {
        "metrics"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::ui::metrics_routes(crate::prometheus::api::routes(table))
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        if !state.config.metrics.enabled {
            return Vec::new();
        }
        let mut workers = vec![
            Worker::new("metrics compactor", crate::prometheus::compact_forever(state.clone())),
            Worker::new("metrics", crate::prometheus::runtime::run_forever(state.clone())),
        ];
        workers.extend(crate::prometheus::remote_write::workers(state));
        workers
    }
    fn stop<'a>(&'a self, state: &'a AppState) -> BoxFuture<'a> {
        Box::pin(async move {
            // Stopping the loops writes their staleness markers before the storage closes.
            if let Some(runtime) = state.prometheus.runtime() {
                runtime.scraper.stop().await;
                runtime.rules.stop().await;
            }
            if let Ok(tsdb) = state.prometheus.storage(&state.config)
                && let Err(e) = tsdb.close()
            {
                tracing::warn!(error = %e, "closing the metrics storage");
            }
        })
    }
    fn problem(&self, state: &AppState) -> Option<String> {
        match state.prometheus.storage(&state.config) {
            Err(crate::prometheus::MetricsError::Disabled) | Ok(_) => None,
            Err(e) => Some(e.to_string()),
        }
    }
}

/// Logs: the log store, LogQL and Loki's HTTP API.
struct Logs;

impl Subsystem for Logs {
    fn name(&self) -> &'static str {
        "logs"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::loki::api::routes(table)
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        if !state.config.logs.enabled {
            return Vec::new();
        }
        vec![Worker::new("logs upkeep", crate::loki::upkeep_forever(state.clone()))]
    }
    fn stop<'a>(&'a self, state: &'a AppState) -> BoxFuture<'a> {
        Box::pin(async move {
            // Everything into chunk files, so the next start replays an empty WAL.
            if let Some(store) = state.loki.opened() {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "flushing the logs store"),
                    Err(e) => tracing::warn!(error = %e, "flushing the logs store stopped"),
                }
            }
        })
    }
    fn problem(&self, state: &AppState) -> Option<String> {
        match state.loki.store(&state.config) {
            Err(crate::loki::LogsError::Disabled) | Ok(_) => None,
            Err(e) => Some(e.to_string()),
        }
    }
}

/// Users, sessions, tokens, projects and members.
struct Accounts;

impl Subsystem for Accounts {
    fn name(&self) -> &'static str {
        "accounts"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::ui::accounts_routes(crate::api::accounts_routes(table))
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        vec![Worker::new("session sweeper", crate::accounts::sweep_sessions_forever(state.store.clone()))]
    }
}

/// Pipelines: runs, schedules, polling, triggers, forge webhooks, variables, artifacts.
struct Ci;

impl Subsystem for Ci {
    fn name(&self) -> &'static str {
        "ci"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::ui::ci_routes(crate::api::ci_routes(table))
    }
    fn problem(&self, state: &AppState) -> Option<String> {
        // Pipelines with variables need the vault; every job's artifacts need the object store.
        let vault = state.vault().err();
        let objects = state.objects().err();
        let found: Vec<String> = vault.into_iter().chain(objects).map(|e| e.to_string()).collect();
        (!found.is_empty()).then(|| found.join("; "))
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        vec![
            Worker::new("scheduler", crate::schedules::run_forever(state.clone())),
            Worker::new("poller", crate::polling::run_forever(state.clone())),
            Worker::new("artifact sweeper", crate::objects::sweep_forever(state.clone())),
        ]
    }
}

/// Agents that run jobs on other machines.
struct Agents;

impl Subsystem for Agents {
    fn name(&self) -> &'static str {
        "agents"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::ui::agents_routes(crate::api::agents_routes(table))
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        vec![Worker::new("heartbeat watcher", crate::agents::watch_heartbeats(state.clone()))]
    }
}

/// Releases, deployments, environments and the proxy's routes.
struct Deployments;

impl Subsystem for Deployments {
    fn name(&self) -> &'static str {
        "deployments"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::ui::deployments_routes(crate::api::deployments_routes(table))
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        let restoring = state.clone();
        vec![
            // What each environment served before the restart, back on its routes.
            Worker::new("restore", async move { crate::deploy::restore(&restoring).await }),
            Worker::new("release sweeper", crate::deploy::sweep_releases_forever(state.clone())),
        ]
    }
    fn problem(&self, state: &AppState) -> Option<String> {
        // Asked for a proxy, but `serve` has not (or could not) put one on its port.
        let wanted = state.config.deploy.proxy_listen.is_some() && state.bound_address.get().is_some();
        (wanted && state.deploy.proxy_address.get().is_none())
            .then(|| "the deployment proxy is not listening".to_owned())
    }
    fn stop<'a>(&'a self, state: &'a AppState) -> BoxFuture<'a> {
        // The instances go with the server; the next start brings back what each environment
        // was serving.
        Box::pin(state.deploy.stop_all())
    }
}

/// Outgoing webhooks, and the event bus that feeds them.
struct Notifications;

impl Subsystem for Notifications {
    fn name(&self) -> &'static str {
        "notifications"
    }
    fn routes(&self, table: RouteTable) -> RouteTable {
        crate::ui::notifications_routes(crate::api::notifications_routes(table))
    }
    fn workers(&self, state: &AppState) -> Vec<Worker> {
        vec![
            Worker::new("event bus", crate::events::run_forever(state.clone())),
            Worker::new("webhook sender", crate::notify::deliver_forever(state.clone())),
        ]
    }
}
