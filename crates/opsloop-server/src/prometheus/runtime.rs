//! The metrics engine at work on the server: the `prometheus.yml` given by `[metrics]
//! config_file` (or `--metrics-config`) drives scraping, rule evaluation and the notifier that
//! sends alerts to Alertmanagers. It is reloaded on SIGHUP and on `POST /prometheus/-/reload`;
//! an invalid new file (or rule file) is reported and the running configuration kept, as
//! Prometheus does. Without a file, opsloop scrapes itself every 15 s.

use std::sync::Arc;
use std::time::Duration;

use opsloop_metrics::config::{self, Config};
use opsloop_metrics::rules::file::{RuleGroup, load_patterns};
use opsloop_metrics::rules::group::GroupOptions;
use opsloop_metrics::rules::manager::{ManagerOptions, RuleManager};
use opsloop_metrics::rules::notify::Notifier;
use opsloop_metrics::scrape::ScrapeManager;

use crate::state::AppState;

/// What the last (re)load did, for `status/runtimeinfo` and `status/config`.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub success: bool,
    pub at_ms: i64,
    pub error: Option<String>,
    /// The text of the configuration in force.
    pub yaml: String,
}

/// The configuration opsloop runs with when it was given none: itself, as job `opsloop`.
fn default_config(state: &AppState) -> Result<(Config, String), config::ConfigError> {
    let address = state.bound_address.get().map(|a| a.to_string()).unwrap_or_else(|| state.config.listen.to_string());
    // JSON is YAML; serde_json quotes the address safely.
    let text = serde_json::json!({
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": [{"job_name": "opsloop", "static_configs": [{"targets": [address]}]}],
    })
    .to_string();
    let config = config::load(&text, "<built-in configuration>", &state.config.data_dir)?;
    Ok((config, text))
}

/// The scrape job opsloop adds for the instances of deployed services that declare
/// `metrics:` in `opsloop.yml`: its own service discovery. Each instance's series carry
/// `project`, `service`, `environment`, `version` and `instance`, so a project's members see
/// them and nobody else does.
pub const SERVICES_JOB: &str = "opsloop-services";

/// The target groups of [`SERVICES_JOB`], one per serving release with a metrics endpoint.
async fn discovered_services(state: &AppState) -> Vec<serde_json::Value> {
    let mut groups = Vec::new();
    let mut projects: std::collections::HashMap<i64, Option<String>> = std::collections::HashMap::new();
    for serving in state.deploy.serving_instances() {
        let Ok(Some(release)) = state.store.release(serving.release_id).await else { continue };
        let Ok(config) = serde_json::from_str::<crate::deploy::ReleaseConfig>(&release.config) else { continue };
        let Some((path, port)) = config.metrics else { continue };
        let project = match projects.get(&serving.project_id) {
            Some(name) => name.clone(),
            None => {
                let name = state.store.project_by_id(serving.project_id).await.ok().flatten().map(|p| p.name);
                projects.insert(serving.project_id, name.clone());
                name
            }
        };
        let Some(project) = project else { continue };
        for (host, own_port) in &serving.instances {
            let address = std::net::SocketAddr::new(*host, port.unwrap_or(*own_port)).to_string();
            groups.push(serde_json::json!({
                "targets": [address],
                "labels": {
                    "__metrics_path__": path,
                    "project": project,
                    "service": serving.service,
                    "environment": serving.environment,
                    "version": serving.version,
                },
            }));
        }
    }
    groups
}

/// `config` with [`SERVICES_JOB`] added when services are discovered (and the file does not
/// already define a job of that name).
fn with_services(config: &Config, groups: &[serde_json::Value], dir: &std::path::Path) -> Config {
    let mut config = config.clone();
    config.scrape_configs.retain(|c| c.job_name != SERVICES_JOB);
    if groups.is_empty() {
        return config;
    }
    let text = serde_json::json!({
        "scrape_configs": [{"job_name": SERVICES_JOB, "scrape_interval": "15s", "static_configs": groups}],
    })
    .to_string();
    match config::load(&text, "<deployed services>", dir) {
        Ok(services) => config.scrape_configs.extend(services.scrape_configs),
        Err(e) => tracing::warn!(error = %e, "metrics: discovered services not scraped"),
    }
    config
}

/// Reads the configuration to run with (the file when one is set, else the built-in one)
/// and the rule files it names.
pub fn load(state: &AppState) -> Result<(Config, String, Vec<RuleGroup>), String> {
    match &state.config.metrics.config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            let config = config::load(&text, &path.display().to_string(), dir).map_err(|e| e.to_string())?;
            let groups = load_patterns(&config.rule_files, dir).map_err(|e| e.to_string())?;
            Ok((config, text, groups))
        }
        None => default_config(state).map(|(c, t)| (c, t, Vec::new())).map_err(|e| e.to_string()),
    }
}

/// The parts that run a configuration.
pub struct Runtime {
    pub scraper: ScrapeManager,
    pub rules: RuleManager,
    pub notifier: Notifier,
    /// The deployed instances last handed to the scraper.
    services: std::sync::Mutex<Vec<serde_json::Value>>,
}

/// Loads the configuration and applies it; on an error the running one stays.
pub async fn reload(state: &AppState, runtime: &Runtime) -> Result<(), String> {
    // One reload at a time: two racing ones could leave the older file in force.
    let _turn = state.prometheus.reloading.lock().await;
    let now = state.clock.now_ms();
    let loaded = load(state);
    let mut status = state.prometheus.reload_status();
    match loaded {
        Ok((config, yaml, groups)) => {
            for warning in &config.warnings {
                tracing::warn!(warning = %warning, "metrics configuration");
            }
            let services = discovered_services(state).await;
            runtime.scraper.apply_config(&with_services(&config, &services, &state.config.data_dir)).await;
            *runtime.services.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = services;
            runtime.notifier.apply_config(&config.alerting, &config.global.external_labels);
            runtime.rules.set_options(rule_options(state, &config, &runtime.notifier));
            runtime.rules.update(groups).await;
            state.prometheus.set_config(Arc::new(config));
            status = ReloadStatus { success: true, at_ms: now, error: None, yaml };
            state.prometheus.set_reload_status(status);
            Ok(())
        }
        Err(error) => {
            tracing::error!(error = %error, "metrics configuration not loaded; the previous one stays in force");
            status.success = false;
            status.at_ms = now;
            status.error = Some(error.clone());
            state.prometheus.set_reload_status(status);
            Err(error)
        }
    }
}

fn rule_options(state: &AppState, config: &Config, notifier: &Notifier) -> ManagerOptions {
    ManagerOptions {
        group: GroupOptions {
            engine: state.prometheus.engine.clone(),
            external_labels: config.global.external_labels.clone(),
            external_url: state
                .config
                .external_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", state.config.listen))
                .trim_end_matches('/')
                .to_owned()
                + "/metrics/graph",
            sink: Some(Arc::new(crate::alerting::engine::Fanout(vec![
                Arc::new(notifier.clone()),
                Arc::new(crate::alerting::engine::RuleSink(state.clone())),
            ]))),
            ..GroupOptions::default()
        },
        evaluation_interval: config.global.evaluation_interval,
    }
}

/// Scraping, rules and the notifier, made on first use (by the worker at start-up, or by a
/// reload asked over the API first). Call within the tokio runtime.
pub fn started(state: &AppState) -> Result<Arc<Runtime>, super::MetricsError> {
    // Through the appender: what is scraped or recorded is forwarded by remote write too.
    let storage = state.prometheus.appender(&state.config)?;
    Ok(state.prometheus.runtime_or_init(|| {
        let notifier = Notifier::new(opsloop_metrics::rules::notify::DEFAULT_QUEUE_CAPACITY);
        let sending = notifier.clone();
        tokio::spawn(async move { sending.run(std::future::pending::<()>()).await });
        Arc::new(Runtime {
            scraper: ScrapeManager::new(storage.clone()),
            rules: RuleManager::new(storage, ManagerOptions::default()),
            notifier,
            services: std::sync::Mutex::new(Vec::new()),
        })
    }))
}

/// The metrics worker: loads the configuration and starts scraping, rules and the notifier,
/// then reloads on SIGHUP until the server stops (`POST /prometheus/-/reload` calls [`reload`]
/// itself, to answer with the outcome).
pub async fn run_forever(state: AppState) {
    let runtime = match started(&state) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "metrics: no storage, nothing is scraped");
            return;
        }
    };
    let _ = reload(&state, &runtime).await;
    let manager = runtime;
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut discovery = tokio::time::interval(Duration::from_secs(5));
    loop {
        #[cfg(unix)]
        let signal = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signal = std::future::pending::<()>();
        tokio::select! {
            _ = signal => {
                let _ = reload(&state, &manager).await;
            }
            _ = discovery.tick() => refresh_services(&state, &manager).await,
        }
        // A burst of signals is one reload.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Re-applies the configuration in force when the deployed instances changed (a deployment
/// started, moved or stopped them); unchanged jobs keep running.
async fn refresh_services(state: &AppState, runtime: &Runtime) {
    let Some(config) = state.prometheus.config() else { return };
    let services = discovered_services(state).await;
    let changed = *runtime.services.lock().unwrap_or_else(std::sync::PoisonError::into_inner) != services;
    if !changed {
        return;
    }
    let _turn = state.prometheus.reloading.lock().await;
    runtime.scraper.apply_config(&with_services(&config, &services, &state.config.data_dir)).await;
    *runtime.services.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = services;
}
