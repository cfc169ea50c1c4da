//! The metrics subsystem: opsloop in Prometheus's role. The engine (`opsloop-metrics`) stores,
//! scrapes and evaluates; this module holds it for the server (`MetricsHub`), decides what a
//! caller may see (`scope`), and serves Prometheus's HTTP API under `/prometheus` (`api`), so
//! Grafana's Prometheus data source takes `http://HOST:PORT/prometheus` as its URL.

pub mod api;
pub mod remote_write;
pub mod runtime;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use opsloop_metrics::config::Config;
use opsloop_metrics::labels::Matcher;
use opsloop_metrics::promql::{Engine, EngineOptions};
use opsloop_metrics::tsdb::{Tsdb, TsdbOptions};
use opsloop_store::{PageRequest, Store, StoreError};

use crate::auth::{Credential, Principal};
use crate::config::ServerConfig;

/// Why the metrics subsystem cannot answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    #[error("the metrics subsystem is turned off ([metrics] enabled = false)")]
    Disabled,
    #[error("the metrics storage could not be opened: {0}")]
    Storage(String),
}

/// What the server keeps of the metrics engine.
pub struct MetricsHub {
    storage: OnceLock<Result<Arc<Tsdb>, String>>,
    remote_writers: OnceLock<Vec<Arc<opsloop_metrics::remote::RemoteWriter>>>,
    pub engine: Engine,
    /// When this process started, for `status/runtimeinfo`.
    pub started_ms: i64,
    runtime: OnceLock<Arc<runtime::Runtime>>,
    config: Mutex<Option<Arc<Config>>>,
    reload_status: Mutex<runtime::ReloadStatus>,
    /// Held while a configuration is (re)loaded.
    pub reloading: tokio::sync::Mutex<()>,
}

impl Default for MetricsHub {
    fn default() -> Self {
        MetricsHub {
            storage: OnceLock::new(),
            remote_writers: OnceLock::new(),
            engine: Engine::new(EngineOptions::default()),
            started_ms: now_ms(),
            runtime: OnceLock::new(),
            config: Mutex::new(None),
            reload_status: Mutex::new(runtime::ReloadStatus::default()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl MetricsHub {
    /// Scraping, rules and the notifier, once the metrics worker has started.
    pub fn runtime(&self) -> Option<&Arc<runtime::Runtime>> {
        self.runtime.get()
    }

    pub(crate) fn runtime_or_init(&self, make: impl FnOnce() -> Arc<runtime::Runtime>) -> Arc<runtime::Runtime> {
        self.runtime.get_or_init(make).clone()
    }

    /// The `prometheus.yml` in force (the built-in one when none was given).
    pub fn config(&self) -> Option<Arc<Config>> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_config(&self, config: Arc<Config>) {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = Some(config);
    }

    pub fn reload_status(&self) -> runtime::ReloadStatus {
        self.reload_status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_reload_status(&self, status: runtime::ReloadStatus) {
        *self.reload_status.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// The series store, opened on first use under `<data-dir>/metrics` (its WAL replayed).
    pub fn storage(&self, config: &ServerConfig) -> Result<&Arc<Tsdb>, MetricsError> {
        if !config.metrics.enabled {
            return Err(MetricsError::Disabled);
        }
        self.storage.get_or_init(|| open_storage(config)).as_ref().map_err(|e| MetricsError::Storage(e.clone()))
    }
}

fn open_storage(config: &ServerConfig) -> Result<Arc<Tsdb>, String> {
    let options = TsdbOptions {
        retention: std::time::Duration::from_secs(config.metrics.retention_seconds),
        retention_size: config.metrics.retention_bytes.unwrap_or(0),
        ..TsdbOptions::default()
    };
    let dir = config.data_dir.join("metrics");
    Tsdb::open(&dir, options).map(Arc::new).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Cuts blocks from the head, merges them and applies retention, once a minute.
pub async fn compact_forever(state: crate::state::AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Ok(tsdb) = state.prometheus.storage(&state.config) else { continue };
        let tsdb = tsdb.clone();
        match tokio::task::spawn_blocking(move || tsdb.compact()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics compaction failed"),
            Err(e) => tracing::warn!(error = %e, "metrics compaction stopped"),
        }
    }
}

/// The matchers that limit what `principal` sees: nothing for an instance admin; for anyone
/// else, the series labelled with a project they belong to (prom-label-proxy's model: the
/// matcher joins every selector). `None` means they may see no series at all.
pub async fn scope(store: &Store, principal: &Principal) -> Result<Option<Vec<Matcher>>, StoreError> {
    if principal.is_admin() {
        return Ok(Some(Vec::new()));
    }
    let names = visible_projects(store, principal).await?;
    if names.is_empty() {
        return Ok(None);
    }
    let alternatives: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
    Ok(Matcher::regex("project", &alternatives.join("|"), false).ok().map(|m| vec![m]))
}

/// The names of the projects whose series (and log streams) a non-admin caller sees: their
/// memberships, or a pipeline token's own project.
pub async fn visible_projects(store: &Store, principal: &Principal) -> Result<Vec<String>, StoreError> {
    Ok(match &principal.credential {
        Credential::Pipeline { project_id, .. } => {
            store.project_by_id(*project_id).await?.map(|p| vec![p.name]).unwrap_or_default()
        }
        _ => {
            let mut names = Vec::new();
            let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
            loop {
                let found = store.list_projects(Some(principal.user.id), &page).await?;
                names.extend(found.items.into_iter().map(|p| p.name));
                match found.next_cursor {
                    Some(cursor) => page.after = Some(cursor),
                    None => break names,
                }
            }
        }
    })
}
