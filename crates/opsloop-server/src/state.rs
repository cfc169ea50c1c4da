//! State shared by every request.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::Method;
use opsloop_core::Clock;
use opsloop_store::Store;

use crate::api::page_cache::PageCache;
use crate::auth::rate_limit::LoginLimiter;
use crate::auth::token_cache::TokenCache;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::routes::RouteSpec;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// A part of the server that could not be opened; each use reports it again (in the log, as
/// an internal error to the caller), and the server keeps serving what does not need it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("the artifact store is not available: {0}")]
    Objects(String),
    #[error("the secrets vault is not available: {0}")]
    Vault(String),
}

pub struct Inner {
    pub store: Store,
    pub config: ServerConfig,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub login_limiter: LoginLimiter,
    pub token_cache: TokenCache,
    pub page_cache: PageCache,
    /// Limits concurrent password verifications (argon2 is deliberately expensive).
    pub password_checks: tokio::sync::Semaphore,
    /// The CI subsystem's state: slots, locks and what runs in this process.
    pub ci: CiState,
    /// Where this server listens, once it does (jobs call back to it).
    pub bound_address: std::sync::OnceLock<std::net::SocketAddr>,
    /// The deployment proxy and what it routes to.
    pub deploy: crate::deploy::DeployHub,
    /// Live listeners of the event log.
    pub events: crate::events::EventBus,
    /// The metrics engine: series storage, queries.
    pub prometheus: crate::prometheus::MetricsHub,
    pub alerting: crate::alerting::AlertingHub,
    pub checks: crate::checks::ChecksHub,
    /// The logs engine: log streams, LogQL.
    pub loki: crate::loki::LogsHub,
    /// Where artifacts are kept, opened on first use.
    objects: std::sync::OnceLock<Result<crate::objects::ObjectStorage, String>>,
    /// The secrets vault, opened on first use (and at start by `serve`).
    vault: std::sync::OnceLock<Result<opsloop_secure::Vault, String>>,
    /// Every route's access decision, keyed by method and matched path.
    pub routes: HashMap<(Method, &'static str), RouteSpec>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    /// The artifact store; an error when it cannot be opened (a bad S3 setting, say).
    pub fn objects(&self) -> Result<&crate::objects::ObjectStorage, Unavailable> {
        self.objects
            .get_or_init(|| crate::objects::ObjectStorage::open(&self.config).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|error| Unavailable::Objects(error.clone()))
    }

    /// The vault for stored secrets; an error when its key cannot be read or made.
    pub fn vault(&self) -> Result<&opsloop_secure::Vault, Unavailable> {
        self.vault
            .get_or_init(|| opsloop_secure::Vault::open(&self.config.data_dir).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|error| Unavailable::Vault(error.clone()))
    }
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig, specs: &[RouteSpec]) -> Self {
        let clock = store.clock();
        let login_limiter = LoginLimiter::new(config.auth.login_attempts_per_window, config.auth.login_window_seconds);
        let routes = specs.iter().map(|spec| ((spec.method.clone(), spec.path), spec.clone())).collect();
        let metrics = Metrics::new(store.clone());
        let concurrent_jobs = config.ci.concurrent_jobs.max(1);
        let alerting = crate::alerting::AlertingHub::load(&config.alerting);
        let checks = crate::checks::ChecksHub::load(config.checks.config_file.as_deref());
        AppState(Arc::new(Inner {
            store,
            config,
            clock,
            metrics,
            login_limiter,
            token_cache: TokenCache::default(),
            page_cache: PageCache::default(),
            password_checks: tokio::sync::Semaphore::new(4),
            ci: CiState::new(concurrent_jobs),
            vault: std::sync::OnceLock::new(),
            deploy: crate::deploy::DeployHub::default(),
            events: crate::events::EventBus::default(),
            prometheus: crate::prometheus::MetricsHub::default(),
            alerting,
            checks,
            loki: crate::loki::LogsHub::default(),
            bound_address: std::sync::OnceLock::new(),
            objects: std::sync::OnceLock::new(),
            routes,
        }))
    }
}

/// What CI keeps while the server runs: one per server, shared by all its pipelines.
pub struct CiState {
    /// Pipelines running at once on this server.
    pub pipeline_slots: tokio::sync::Semaphore,
    /// Jobs running at once on this server, shared by all its pipelines.
    pub job_slots: Arc<tokio::sync::Semaphore>,
    /// Each project's `resource_group` locks, held across its pipelines.
    pub resource_groups: std::sync::Mutex<HashMap<i64, Arc<opsloop_runner::ResourceGroups>>>,
    /// Cancel switches of the pipelines running in this process.
    pub running_pipelines: std::sync::Mutex<HashMap<i64, crate::ci::RunningPipeline>>,
    /// Each project's own job limit and its slots (`project_ci_settings.max_concurrent_jobs`).
    pub project_slots: std::sync::Mutex<HashMap<i64, (i64, Arc<tokio::sync::Semaphore>)>>,
    /// Fetches of a project's mirror take turns.
    pub mirror_locks: std::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Jobs handed to agents that this process waits for.
    pub agent_hub: crate::agents::AgentHub,
}

impl CiState {
    fn new(concurrent_jobs: usize) -> Self {
        CiState {
            pipeline_slots: tokio::sync::Semaphore::new(concurrent_jobs),
            job_slots: Arc::new(tokio::sync::Semaphore::new(concurrent_jobs)),
            resource_groups: std::sync::Mutex::new(HashMap::new()),
            running_pipelines: std::sync::Mutex::new(HashMap::new()),
            project_slots: std::sync::Mutex::new(HashMap::new()),
            mirror_locks: std::sync::Mutex::new(HashMap::new()),
            agent_hub: crate::agents::AgentHub::default(),
        }
    }
}
