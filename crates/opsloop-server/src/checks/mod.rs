//! Checks as a subsystem of the server: the checks engine (`opsloop-checks`) run from the
//! instance's Gatus-format file (`--checks-config`), every result a sample in the metrics
//! store (`opsloop_check_up`, `opsloop_check_duration_seconds`, `opsloop_check_status_code`,
//! `opsloop_check_cert_expiry_timestamp_seconds`), every change of health an alert for the
//! alerting engine (`CheckDown`, resolved when the check is up again); heartbeats pinged at
//! `/ping/<token>` (Healthchecks.io's URL scheme) that go down when a ping is late
//! (`HeartbeatMissed`). Handlers (`api.rs`) only translate [`ChecksError`].

pub mod api;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use opsloop_checks::config::Config;
use opsloop_checks::heartbeat::{Heartbeat, HeartbeatChange, HeartbeatState, HeartbeatStatus, Ping};
use opsloop_checks::result::CheckResult;
use opsloop_checks::runner::Runner;
use opsloop_checks::scheduler::{CheckStatus, Health, ResultSink, Scheduler, StateChange};
use opsloop_metrics::labels::Labels;
use opsloop_metrics::storage::{Appendable, Sample};

use crate::state::AppState;

/// Checks run at once; the rest wait their turn (a slow check never stalls the others, its
/// own timeout ends it).
const CONCURRENCY: usize = 64;

/// Where the heartbeats' ping tokens are kept (the store's subsystem state).
const TOKENS: &str = "heartbeat-tokens";

#[derive(Debug, thiserror::Error)]
pub enum ChecksError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("checks are not configured: start the server with --checks-config FILE")]
    NotConfigured,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] opsloop_store::StoreError),
}

/// A heartbeat monitor and the token its pings carry.
struct Monitor {
    heartbeat: Heartbeat,
    token: String,
}

/// What the checks subsystem keeps while the server runs.
#[derive(Default)]
pub struct ChecksHub {
    config: Option<Config>,
    problem: Option<String>,
    scheduler: OnceLock<Scheduler>,
    /// By key; created with their tokens on first use.
    monitors: tokio::sync::OnceCell<Mutex<HashMap<String, Monitor>>>,
}

impl ChecksHub {
    /// Reads the checks file once at start; `serve` has already refused an invalid one.
    pub fn load(path: Option<&std::path::Path>) -> ChecksHub {
        let Some(path) = path else { return ChecksHub::default() };
        match opsloop_checks::config::load_file(path) {
            Ok(config) => ChecksHub { config: Some(config), ..ChecksHub::default() },
            Err(error) => ChecksHub { problem: Some(error.to_string()), ..ChecksHub::default() },
        }
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.clone()
    }

    pub fn configured(&self) -> bool {
        self.config.is_some()
    }
}

/// Starts the scheduler on the file's endpoints (once).
pub fn start(state: &AppState) {
    let Some(config) = &state.checks.config else { return };
    let scheduler = state.checks.scheduler.get_or_init(|| {
        let runner = Runner::new(state.store.clock(), CONCURRENCY);
        Scheduler::new(runner, Arc::new(Sink(state.clone())))
    });
    scheduler.apply(&config.endpoints);
}

/// Every check with its health and last result.
pub fn statuses(state: &AppState) -> Result<Vec<CheckStatus>, ChecksError> {
    if !state.checks.configured() {
        return Err(ChecksError::NotConfigured);
    }
    Ok(state.checks.scheduler.get().map(Scheduler::status).unwrap_or_default())
}

/// Runs one check now (`opsloop check run`), recording its result as a scheduled run would.
pub async fn run_now(state: &AppState, key: &str) -> Result<CheckResult, ChecksError> {
    let config = state.checks.config.as_ref().ok_or(ChecksError::NotConfigured)?;
    if let Some(scheduler) = state.checks.scheduler.get()
        && let Some(result) = scheduler.run_now(key).await
    {
        return Ok(result);
    }
    // Not scheduled (tests serve without workers): run it once, unrecorded.
    let endpoint = config
        .endpoints
        .iter()
        .find(|e| e.key() == key)
        .ok_or_else(|| ChecksError::NotFound(format!("check {key}")))?;
    Ok(Runner::new(state.store.clock(), 1).run(endpoint).await)
}

async fn monitors(state: &AppState) -> Result<&Mutex<HashMap<String, Monitor>>, ChecksError> {
    state
        .checks
        .monitors
        .get_or_try_init(|| async {
            let specs = state.checks.config.as_ref().map(|c| c.heartbeats.clone()).unwrap_or_default();
            let mut tokens: HashMap<String, String> = match state.store.subsystem_state(TOKENS).await? {
                Some(saved) => serde_json::from_str(&saved).unwrap_or_default(),
                None => HashMap::new(),
            };
            let mut changed = false;
            let mut monitors = HashMap::new();
            for spec in specs {
                let key = spec.key();
                let token = match tokens.get(&key) {
                    Some(token) => token.clone(),
                    None => {
                        let token = crate::auth::credentials::new_secret()
                            .map_err(|e| ChecksError::Invalid(format!("making a ping token: {e}")))?;
                        tokens.insert(key.clone(), token.clone());
                        changed = true;
                        token
                    }
                };
                monitors.insert(key, Monitor { heartbeat: Heartbeat::new(spec), token });
            }
            if changed {
                let text = serde_json::to_string(&tokens).map_err(|e| ChecksError::Invalid(e.to_string()))?;
                state.store.save_subsystem_state(TOKENS, &text).await?;
            }
            Ok(Mutex::new(monitors))
        })
        .await
}

/// A heartbeat's status with its ping URL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeartbeatView {
    #[serde(flatten)]
    pub status: HeartbeatStatus,
    pub name: String,
    /// Only for admins: the URL is the credential that pings it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_url: Option<String>,
}

pub async fn heartbeats(state: &AppState, with_urls: bool) -> Result<Vec<HeartbeatView>, ChecksError> {
    let monitors = monitors(state).await?;
    let base = crate::alerting::base_url(state);
    let guard = monitors.lock().unwrap_or_else(|p| p.into_inner());
    let mut views: Vec<HeartbeatView> = guard
        .values()
        .map(|m| HeartbeatView {
            status: m.heartbeat.status(),
            name: m.heartbeat.spec().name.clone(),
            ping_url: with_urls.then(|| format!("{}/ping/{}", base.trim_end_matches('/'), m.token)),
        })
        .collect();
    views.sort_by(|a, b| a.status.key.cmp(&b.status.key));
    Ok(views)
}

/// A ping: `/ping/<token>[/start|/fail|/<exit code>]`, with the job's output as the body.
pub async fn ping(state: &AppState, token: &str, kind: Ping, body: &str) -> Result<(), ChecksError> {
    let monitors = monitors(state).await?;
    let now = state.store.now_ms();
    let change = {
        let mut guard = monitors.lock().unwrap_or_else(|p| p.into_inner());
        // Compared in constant time: a token is a credential.
        let monitor = guard
            .values_mut()
            .find(|m| subtle::ConstantTimeEq::ct_eq(m.token.as_bytes(), token.as_bytes()).into())
            .ok_or_else(|| ChecksError::NotFound("heartbeat".to_owned()))?;
        monitor.heartbeat.ping(kind, body, now)
    };
    if let Some(change) = change {
        heartbeat_changed(state, &change);
    }
    Ok(())
}

/// Moves every heartbeat's clock: late pings turn monitors down.
pub async fn tick_heartbeats_forever(state: AppState) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let Ok(monitors) = monitors(&state).await else { continue };
        let now = state.store.now_ms();
        let changes: Vec<HeartbeatChange> = {
            let mut guard = monitors.lock().unwrap_or_else(|p| p.into_inner());
            guard.values_mut().filter_map(|m| m.heartbeat.tick(now)).collect()
        };
        for change in changes {
            heartbeat_changed(&state, &change);
        }
        let statuses: Vec<HeartbeatStatus> = {
            let guard = monitors.lock().unwrap_or_else(|p| p.into_inner());
            guard.values().map(|m| m.heartbeat.status()).collect()
        };
        let samples: Vec<(Labels, Sample)> = statuses
            .iter()
            .map(|s| {
                let up = if s.state == HeartbeatState::Down { 0.0 } else { 1.0 };
                (
                    Labels::from_pairs([("__name__", "opsloop_heartbeat_up"), ("heartbeat", s.key.as_str())]),
                    Sample { t: now, v: up },
                )
            })
            .collect();
        append(&state, &samples);
    }
}

fn heartbeat_changed(state: &AppState, change: &HeartbeatChange) {
    tracing::info!(heartbeat = %change.key, from = ?change.from, to = ?change.to, "heartbeat changed");
    let firing = match change.to {
        HeartbeatState::Down => true,
        HeartbeatState::Up => change.from == HeartbeatState::Down,
        _ => return,
    };
    let labels = [("alertname", "HeartbeatMissed"), ("heartbeat", change.key.as_str()), ("severity", "critical")];
    let summary = format!("heartbeat {} missed its expected ping", change.key);
    alert(state, &labels, &summary, firing, change.at_ms);
}

/// Hands an alert to the alerting engine: firing until resolved (`endsAt` now).
fn alert(state: &AppState, labels: &[(&str, &str)], summary: &str, firing: bool, at_ms: i64) {
    let state = state.clone();
    let labels = opsloop_alert::labels::LabelSet::from_pairs(labels.iter().copied());
    let summary = summary.to_owned();
    tokio::spawn(async move {
        let driver = match crate::alerting::engine::driver(&state).await {
            Ok(driver) => driver,
            Err(e) => {
                tracing::warn!(error = %e, "a check's alert could not reach the alerting engine");
                return;
            }
        };
        let at = jiff::Timestamp::from_millisecond(at_ms).ok();
        let posted = opsloop_alert::alerts::PostableAlert {
            labels,
            annotations: opsloop_alert::labels::LabelSet::from_pairs([("summary", summary.as_str())]),
            starts_at: if firing { at } else { None },
            ends_at: if firing { None } else { at },
            generator_url: String::new(),
        };
        let now = opsloop_alert::oncall::now(state.store.clock().as_ref());
        if let Err(e) = driver.with(|engine| engine.put(vec![posted], now)) {
            tracing::warn!(error = %e, "a check's alert was refused");
        }
    });
}

fn append(state: &AppState, samples: &[(Labels, Sample)]) {
    if samples.is_empty() {
        return;
    }
    if let Ok(tsdb) = state.prometheus.storage(&state.config)
        && let Err(e) = tsdb.append(samples)
    {
        tracing::warn!(error = %e, "storing check results");
    }
}

/// Results to samples, health changes to alerts.
struct Sink(AppState);

impl ResultSink for Sink {
    fn record(&self, result: &CheckResult, _health: Health) {
        let group = result.group.as_deref().unwrap_or("");
        let series = |name: &str| {
            Labels::from_pairs([
                ("__name__", name),
                ("check", result.name.as_str()),
                ("group", group),
                ("kind", result.kind),
            ])
        };
        let t = result.timestamp_ms;
        let mut samples = vec![
            (series("opsloop_check_up"), Sample { t, v: if result.success { 1.0 } else { 0.0 } }),
            (series("opsloop_check_duration_seconds"), Sample { t, v: result.duration.as_secs_f64() }),
        ];
        if let Some(status) = result.status {
            samples.push((series("opsloop_check_status_code"), Sample { t, v: status as f64 }));
        }
        if let Some(not_after) = result.cert_not_after_ms {
            samples.push((
                series("opsloop_check_cert_expiry_timestamp_seconds"),
                Sample { t, v: not_after as f64 / 1000.0 },
            ));
        }
        append(&self.0, &samples);
    }

    fn state_changed(&self, change: &StateChange) {
        tracing::info!(check = %change.key, from = ?change.from, to = ?change.to, "check changed");
        let firing = match change.to {
            Health::Down => true,
            Health::Up => change.from == Health::Down,
            _ => return,
        };
        let group = change.group.clone().unwrap_or_default();
        let labels = [
            ("alertname", "CheckDown"),
            ("check", change.name.as_str()),
            ("group", group.as_str()),
            ("severity", "critical"),
        ];
        let mut summary = format!("check {} is down", change.key);
        if !change.failed_conditions.is_empty() {
            summary.push_str(&format!(": {}", change.failed_conditions.join("; ")));
        }
        alert(&self.0, &labels, &summary, firing, change.at_ms);
    }
}
