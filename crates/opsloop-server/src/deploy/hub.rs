//! The deployments' runtime in this process: the proxy, what serves each service in each
//! environment, warm standbys after a switch, and each environment's turn.

use super::*;

pub(super) type Key = (i64, String, String);
pub(super) type Turn = Arc<tokio::sync::Mutex<()>>;

pub(super) struct Live {
    pub(super) release_id: i64,
    pub(super) running: Running,
}

pub(super) struct Warm {
    pub(super) release_id: i64,
    pub(super) running: Running,
    pub(super) until: Instant,
}

/// The deployments side of the server's state.
pub struct DeployHub {
    pub proxy: Arc<Proxy>,
    /// Where the proxy listens, once it does.
    pub proxy_address: OnceLock<SocketAddr>,
    /// One deployment at a time per (project, environment).
    pub(super) turns: Mutex<HashMap<(i64, String), Turn>>,
    pub(super) serving: Mutex<HashMap<Key, Live>>,
    pub(super) warm: Mutex<HashMap<Key, Warm>>,
}

impl Default for DeployHub {
    fn default() -> Self {
        DeployHub {
            proxy: Proxy::new(Signals::default(), PROXY_TIMEOUT),
            proxy_address: OnceLock::new(),
            turns: Mutex::default(),
            serving: Mutex::default(),
            warm: Mutex::default(),
        }
    }
}

/// The instances one release serves in an environment, for metrics discovery.
#[derive(Debug, Clone)]
pub struct ServingInstances {
    pub project_id: i64,
    pub environment: String,
    pub service: String,
    pub release_id: i64,
    pub version: String,
    /// `host:port` of each instance.
    pub instances: Vec<(std::net::IpAddr, u16)>,
}

impl DeployHub {
    /// What serves where in this process, instance by instance.
    pub fn serving_instances(&self) -> Vec<ServingInstances> {
        let serving = self.serving.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        serving
            .iter()
            .map(|((project_id, environment, service), live)| ServingInstances {
                project_id: *project_id,
                environment: environment.clone(),
                service: service.clone(),
                release_id: live.release_id,
                version: live.running.version.clone(),
                instances: live.running.instances.iter().map(|i| (i.spec.host, i.spec.port)).collect(),
            })
            .collect()
    }

    pub(super) fn turn(&self, project_id: i64, environment: &str) -> Turn {
        let mut turns = self.turns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        turns.entry((project_id, environment.to_owned())).or_default().clone()
    }

    pub(super) fn take_serving(&self, key: &Key) -> Option<Live> {
        self.serving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key)
    }

    pub(super) fn put_serving(&self, key: Key, live: Live) {
        self.serving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, live);
    }

    /// The warm version of `key` if it is release `release_id` (a failed deployment leaves
    /// any other warm version where it is).
    pub(super) fn take_warm(&self, key: &Key, release_id: i64) -> Option<Warm> {
        let mut warm = self.warm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match warm.get(key) {
            Some(entry) if entry.release_id == release_id => warm.remove(key),
            _ => None,
        }
    }

    /// How many instances of what serves `key` pass their health check now, of how many.
    pub async fn health(&self, project_id: i64, environment: &str, service: &str) -> Option<(usize, usize)> {
        let key = (project_id, environment.to_owned(), service.to_owned());
        let ports: Vec<(std::net::IpAddr, u16, HealthCheck, Duration)> = {
            let serving = self.serving.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let live = serving.get(&key)?;
            let instances = live.running.instances.iter();
            instances.map(|i| (i.spec.host, i.spec.port, i.spec.health.clone(), i.spec.readiness.timeout)).collect()
        };
        let mut healthy = 0;
        for (host, port, health, timeout) in &ports {
            if opsloop_deploy::supervisor::check(health, *host, *port, *timeout).await {
                healthy += 1;
            }
        }
        Some((healthy, ports.len()))
    }

    /// Stops every instance this process runs (the server's shutdown).
    pub async fn stop_all(&self) {
        let serving: Vec<Live> = {
            let mut serving = self.serving.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            serving.drain().map(|(_, live)| live).collect()
        };
        let warm: Vec<Warm> = {
            let mut warm = self.warm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            warm.drain().map(|(_, warm)| warm).collect()
        };
        for running in serving.into_iter().map(|l| l.running).chain(warm.into_iter().map(|w| w.running)) {
            for instance in running.instances {
                instance.stop().await;
            }
        }
    }
}

/// The route name (and signals label) of a service in an environment.
pub fn route_name(project: &str, environment: &str, service: &str) -> String {
    format!("{project}/{environment}/{service}")
}

/// The signals label of a release: its version, made unique by its id.
pub fn version_label(release: &Release) -> String {
    format!("{}#{}", release.version, release.id)
}

/// Keeps `warm` running out of the route until its time is up (unless a rollback takes it
/// first, or a newer version takes its place).
pub(super) fn keep_warm(state: &AppState, key: Key, warm: Warm) {
    let until = warm.until;
    if let Some(older) =
        state.deploy.warm.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.clone(), warm)
    {
        tokio::spawn(stop_running(older.running));
    }
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
        let expired = {
            let mut warm = state.deploy.warm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match warm.get(&key) {
                Some(entry) if entry.until == until => warm.remove(&key),
                _ => None,
            }
        };
        if let Some(expired) = expired {
            stop_running(expired.running).await;
        }
    });
}

pub(super) async fn stop_running(running: Running) {
    for instance in running.instances {
        instance.stop().await;
    }
}

/// Runs the proxy on `address` until `shutdown` turns true; `Err` when it cannot listen.
pub fn serve_proxy(
    state: &AppState,
    address: SocketAddr,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, std::io::Error> {
    let proxy = state.deploy.proxy.clone();
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new().name("opsloop-proxy".into()).spawn(move || {
        // The listening sockets are made with tokio's socket type, which wants a runtime.
        let _runtime = runtime.enter();
        let result = proxy.serve_workers(address, workers, shutdown, |bound| {
            let _ = bound_tx.send(Ok(bound));
        });
        if let Err(error) = result {
            let _ = bound_tx.send(Err(error));
        }
    })?;
    let bound = bound_rx.recv().map_err(|_| std::io::Error::other("the proxy stopped before it listened"))??;
    let _ = state.deploy.proxy_address.set(bound);
    Ok(bound)
}
