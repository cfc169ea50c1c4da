//! Scraping: the `scrape_configs` of a `prometheus.yml` run as one task per job (discovery,
//! refreshed at the discoveries' intervals) and one loop per target, appending through
//! [`Appendable`]. [`ScrapeManager::apply_config`] swaps configurations without disturbing
//! the jobs that did not change; [`ScrapeManager::targets`] is what `/api/v1/targets` shows.

pub mod discovery;
pub mod scrape_loop;
pub mod target;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{Config, HttpClientConfig, ScrapeConfig, TargetGroup};
use crate::labels::Labels;
use crate::storage::Appendable;
use discovery::FileSd;
use scrape_loop::{ScrapeLoop, Status};
use target::Target;

/// A target's health as the targets API words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

/// One active target, for `/api/v1/targets`.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub scrape_pool: String,
    pub scrape_url: String,
    /// The labels its samples get (no `__` labels).
    pub labels: Labels,
    pub discovered_labels: Labels,
    pub health: Health,
    /// Milliseconds since the epoch.
    pub last_scrape: Option<i64>,
    pub last_scrape_duration: Duration,
    pub last_error: Option<String>,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
}

/// A discovered target `relabel_configs` dropped.
#[derive(Debug, Clone)]
pub struct DroppedTarget {
    pub scrape_pool: String,
    pub discovered_labels: Labels,
}

#[derive(Debug, Clone, Default)]
pub struct TargetsSnapshot {
    pub active: Vec<TargetInfo>,
    pub dropped: Vec<DroppedTarget>,
}

struct ActiveTarget {
    target: Target,
    status: Arc<Mutex<Status>>,
}

#[derive(Default)]
struct JobShared {
    active: Mutex<Vec<ActiveTarget>>,
    dropped: Mutex<Vec<Labels>>,
}

struct Job {
    config: Arc<ScrapeConfig>,
    shared: Arc<JobShared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Runs the scrape jobs of the current configuration.
pub struct ScrapeManager {
    storage: Arc<dyn Appendable>,
    jobs: Mutex<BTreeMap<String, Job>>,
    offset_seed: AtomicU64,
}

impl std::fmt::Debug for ScrapeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeManager").finish_non_exhaustive()
    }
}

impl ScrapeManager {
    pub fn new(storage: Arc<dyn Appendable>) -> Self {
        // reqwest is built without a TLS provider of its own; the binary installs ring, and so
        // does this if nobody has, so that a library user cannot hit reqwest's panic.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        ScrapeManager { storage, jobs: Mutex::new(BTreeMap::new()), offset_seed: AtomicU64::new(0) }
    }

    /// Starts, restarts and stops jobs to match `config`. A job whose section is unchanged
    /// keeps running untouched; a changed or removed one is stopped (its targets' series
    /// marked stale) before its replacement starts. Call within a tokio runtime.
    pub async fn apply_config(&self, config: &Config) {
        self.offset_seed
            .store(target::fnv1a(config.global.external_labels.to_string().as_bytes(), 0), Ordering::Relaxed);
        let mut stopping = Vec::new();
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let wanted: HashMap<&str, &ScrapeConfig> =
                config.scrape_configs.iter().map(|c| (c.job_name.as_str(), c)).collect();
            let names: Vec<String> = jobs.keys().cloned().collect();
            for name in names {
                let keep = wanted.get(name.as_str()).is_some_and(|c| **c == *jobs[&name].config);
                if !keep && let Some(job) = jobs.remove(&name) {
                    let _ = job.stop.send(());
                    stopping.push(job.task);
                }
            }
            for c in &config.scrape_configs {
                if jobs.contains_key(&c.job_name) {
                    continue;
                }
                let config = Arc::new(c.clone());
                let shared = Arc::new(JobShared::default());
                let (stop, stopped) = oneshot::channel();
                let task = tokio::spawn(run_job(
                    Arc::clone(&config),
                    Arc::clone(&shared),
                    Arc::clone(&self.storage),
                    self.offset_seed.load(Ordering::Relaxed),
                    stopped,
                ));
                jobs.insert(c.job_name.clone(), Job { config, shared, stop, task });
            }
        }
        for task in stopping {
            let _ = task.await;
        }
    }

    /// Stops every job; every target's series are marked stale.
    pub async fn stop(&self) {
        let jobs = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, job) in jobs {
            let _ = job.stop.send(());
            let _ = job.task.await;
        }
    }

    /// The targets of every job, as the targets API shows them.
    pub fn targets(&self) -> TargetsSnapshot {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = TargetsSnapshot::default();
        for (name, job) in jobs.iter() {
            for a in job.shared.active.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let s = a.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                out.active.push(TargetInfo {
                    scrape_pool: name.clone(),
                    scrape_url: a.target.url.clone(),
                    labels: a.target.public_labels(),
                    discovered_labels: a.target.discovered_labels.clone(),
                    health: s.health,
                    last_scrape: s.last_scrape,
                    last_scrape_duration: s.last_duration,
                    last_error: s.last_error,
                    scrape_interval: a.target.interval,
                    scrape_timeout: a.target.timeout,
                });
            }
            for d in job.shared.dropped.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                out.dropped.push(DroppedTarget { scrape_pool: name.clone(), discovered_labels: d.clone() });
            }
        }
        out
    }
}

/// The HTTP client of a job. A TLS setting that cannot be honoured (an unreadable CA file)
/// falls back to the default client with a warning rather than stopping the job.
pub(crate) fn client_for(http: &HttpClientConfig) -> reqwest::Client {
    let mut b = reqwest::Client::builder().danger_accept_invalid_certs(http.tls_config.insecure_skip_verify).redirect(
        if http.follow_redirects { reqwest::redirect::Policy::limited(10) } else { reqwest::redirect::Policy::none() },
    );
    if let Some(ca) = &http.tls_config.ca_file {
        match std::fs::read(ca).map(|pem| reqwest::Certificate::from_pem_bundle(&pem)) {
            Ok(Ok(certs)) => {
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            Ok(Err(e)) => tracing::warn!(file = %ca.display(), error = %e, "reading CA file"),
            Err(e) => tracing::warn!(file = %ca.display(), error = %e, "reading CA file"),
        }
    }
    if let Some(proxy) = &http.proxy_url {
        match reqwest::Proxy::all(proxy) {
            Ok(p) => b = b.proxy(p),
            Err(e) => tracing::warn!(proxy, error = %e, "invalid proxy_url"),
        }
    }
    b.build().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "building the scrape client; using defaults");
        reqwest::Client::new()
    })
}

struct RunningLoop {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A job: discover, reconcile the loops with what was found, wait for the next refresh.
async fn run_job(
    config: Arc<ScrapeConfig>,
    shared: Arc<JobShared>,
    storage: Arc<dyn Appendable>,
    offset_seed: u64,
    mut stop: oneshot::Receiver<()>,
) {
    let client = client_for(&config.http);
    let mut file_sds: Vec<FileSd> = config.file_sd_configs.iter().map(|_| FileSd::default()).collect();
    let refresh = config
        .file_sd_configs
        .iter()
        .map(|c| c.refresh_interval)
        .chain(config.http_sd_configs.iter().map(|c| c.refresh_interval))
        .chain(config.dns_sd_configs.iter().map(|c| c.refresh_interval))
        .min();
    let mut loops: HashMap<String, RunningLoop> = HashMap::new();
    loop {
        let groups = tokio::select! {
            g = discover(&config, &client, &mut file_sds) => g,
            _ = &mut stop => break,
        };
        sync_targets(&config, &shared, &storage, &client, offset_seed, &groups, &mut loops);
        match refresh {
            Some(every) => tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => break,
            },
            None => {
                let _ = (&mut stop).await;
                break;
            }
        }
    }
    for (_, l) in loops.drain() {
        let _ = l.stop.send(());
        let _ = l.task.await;
    }
    shared.active.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

async fn discover(config: &ScrapeConfig, client: &reqwest::Client, file_sds: &mut [FileSd]) -> Vec<TargetGroup> {
    let mut groups: Vec<TargetGroup> = config.static_configs.clone();
    for (sd, cfg) in file_sds.iter_mut().zip(&config.file_sd_configs) {
        let (found, errors) = sd.refresh(cfg);
        for e in errors {
            tracing::warn!(job = %config.job_name, error = %e, "file discovery");
        }
        groups.extend(found);
    }
    for cfg in &config.http_sd_configs {
        match discovery::http_sd(client, cfg).await {
            Ok(found) => groups.extend(found),
            Err(e) => tracing::warn!(job = %config.job_name, error = %e, "HTTP discovery"),
        }
    }
    for cfg in &config.dns_sd_configs {
        let (found, errors) = discovery::dns_sd(cfg).await;
        for e in errors {
            tracing::warn!(job = %config.job_name, error = %e, "DNS discovery");
        }
        groups.extend(found);
    }
    groups
}

/// Starts loops for new targets and stops the ones whose target is gone; loops of targets
/// still there carry on (their cache, hence their staleness tracking, intact).
fn sync_targets(
    config: &Arc<ScrapeConfig>,
    shared: &JobShared,
    storage: &Arc<dyn Appendable>,
    client: &reqwest::Client,
    offset_seed: u64,
    groups: &[TargetGroup],
    loops: &mut HashMap<String, RunningLoop>,
) {
    let mut wanted: Vec<(String, Target)> = Vec::new();
    let mut dropped = Vec::new();
    let no_extra = BTreeMap::new();
    for g in groups {
        for address in &g.targets {
            match target::populate(config, g, address, &no_extra) {
                Ok(Some(t)) => {
                    let key = format!("{}{}", t.labels, t.url);
                    if !wanted.iter().any(|(k, _)| *k == key) {
                        wanted.push((key, t));
                    }
                }
                Ok(None) => {
                    let mut lb = crate::labels::LabelsBuilder::default();
                    for (n, v) in &g.labels {
                        lb.set(n.clone(), v.clone());
                    }
                    lb.set(target::ADDRESS.into(), address.clone());
                    lb.set("job".into(), config.job_name.clone());
                    dropped.push(lb.build());
                }
                Err(e) => tracing::warn!(job = %config.job_name, address, error = %e, "target skipped"),
            }
        }
    }
    let mut active = shared.active.lock().unwrap_or_else(|p| p.into_inner());
    let mut statuses: HashMap<String, Arc<Mutex<Status>>> =
        active.drain(..).map(|a| (format!("{}{}", a.target.labels, a.target.url), a.status)).collect();
    let keys: Vec<String> = loops.keys().cloned().collect();
    for key in keys {
        if !wanted.iter().any(|(k, _)| *k == key)
            && let Some(l) = loops.remove(&key)
        {
            // The loop marks its series stale as it ends.
            let _ = l.stop.send(());
            drop(l.task);
        }
    }
    for (key, t) in wanted {
        let status = statuses.remove(&key).unwrap_or_default();
        if let std::collections::hash_map::Entry::Vacant(slot) = loops.entry(key) {
            let (stop, stopped) = oneshot::channel();
            let scrape = ScrapeLoop::new(
                t.clone(),
                Arc::clone(config),
                client.clone(),
                Arc::clone(storage),
                Arc::clone(&status),
                offset_seed,
            );
            let task = tokio::spawn(scrape.run(stopped));
            slot.insert(RunningLoop { stop, task });
        }
        active.push(ActiveTarget { target: t, status });
    }
    *shared.dropped.lock().unwrap_or_else(|p| p.into_inner()) = dropped;
}
