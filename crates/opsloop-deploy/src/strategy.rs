//! Deployment strategies on one machine: blue-green and canary, each health-gated and watched
//! through a bake window, with automatic rollback. The proxy carries the traffic, the
//! supervisor runs the instances, the golden signals decide.
//!
//! Blue-green: green instances start on new ports; only once all are healthy does traffic
//! switch to them, in one step. Canary: the same, but traffic moves in steps (10% → 50% →
//! 100% by default), each held for the bake time. During every bake window the new version's
//! error rate and p99 are compared with the SLO (and its instances must stay up); a breach
//! sends traffic back to the old version at once, and the deployment ends `RolledBack` with
//! the reason and the figures. The old version keeps running until the new one has passed,
//! so a rollback is a route switch, not a cold start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proxy::{Backend, Proxy, Route};
use crate::signals::Snapshot;
use crate::supervisor::{HealthCheck, Instance, InstanceSpec, InstanceState, LogSink, free_port};

/// What a release needs to run: one version of a service.
#[derive(Debug, Clone)]
pub struct Release {
    pub service: String,
    pub version: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub replicas: u32,
    pub health: HealthCheck,
}

/// Limits the new version must keep during its bake windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Errors per request (5xx answers and upstream failures), e.g. 0.01.
    pub max_error_rate: f64,
    pub max_p99: Duration,
    /// Below this many requests in a window, the figures decide nothing.
    pub min_requests: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    BlueGreen,
    /// Percentages of traffic for the new version, in order; the last should be 100.
    Canary {
        steps: Vec<u32>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// Traffic went back to the old version.
    RolledBack {
        reason: String,
    },
    /// The new version never took traffic (it did not become healthy).
    Failed {
        reason: String,
    },
}

/// A step of a deployment, for its timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub text: String,
}

/// The instances serving one route, with their version.
#[derive(Debug)]
pub struct Running {
    pub version: String,
    pub instances: Vec<Instance>,
}

/// Deploys releases of one service behind one route of a proxy.
pub struct Deployer {
    pub proxy: Arc<Proxy>,
    pub host: Option<String>,
    pub path_prefix: String,
    pub slo: Slo,
    pub bake: Duration,
    pub health_timeout: Duration,
    pub log: LogSink,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer").field("path_prefix", &self.path_prefix).finish()
    }
}

impl Deployer {
    fn route(&self, service: &str, backends: Vec<Backend>) -> Route {
        Route { host: self.host.clone(), path_prefix: self.path_prefix.clone(), service: service.to_owned(), backends }
    }

    fn backends(running: &Running, weight: u32) -> Vec<Backend> {
        running
            .instances
            .iter()
            .map(|i| Backend {
                address: std::net::SocketAddr::from(([127, 0, 0, 1], i.spec.port)),
                version: running.version.clone(),
                weight,
            })
            .collect()
    }

    /// Starts `release`'s instances and waits until all are healthy.
    pub async fn start(&self, release: &Release) -> Result<Running, String> {
        let mut instances = Vec::new();
        for n in 1..=release.replicas.max(1) {
            let spec = InstanceSpec {
                name: format!("{}@{}#{n}", release.service, release.version),
                command: release.command.clone(),
                env: release.env.clone(),
                dir: release.dir.clone(),
                port: free_port().map_err(|e| e.to_string())?,
                health: release.health.clone(),
                stop_grace: Duration::from_secs(10),
                max_restarts: 3,
                crash_window: Duration::from_secs(60),
            };
            instances.push(Instance::start(spec, self.log.clone()));
        }
        for instance in &instances {
            if let Err(reason) = instance.wait_healthy(self.health_timeout).await {
                for instance in instances {
                    instance.stop().await;
                }
                return Err(reason);
            }
        }
        Ok(Running { version: release.version.clone(), instances })
    }

    /// Puts `running` behind the route on its own (the first deployment, or a rollback).
    pub fn serve(&self, service: &str, running: &Running) {
        self.proxy.set_route(self.route(service, Self::backends(running, 1)));
    }

    /// Waits until no request to `version` is in flight (at most `limit`).
    async fn drain(&self, service: &str, version: &str, limit: Duration) {
        let signals = self.proxy.signals().of(service, version);
        let deadline = Instant::now() + limit;
        while signals.snapshot().in_flight > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Holds the new version's traffic for the bake time; `Err(reason)` on a breach.
    async fn bake(&self, service: &str, running: &Running) -> Result<(), String> {
        let signals = self.proxy.signals().of(service, &running.version);
        let start: Snapshot = signals.snapshot();
        let deadline = Instant::now() + self.bake;
        loop {
            let window = signals.snapshot().since(&start);
            if let Some(dead) = running.instances.iter().find(|i| matches!(i.state(), InstanceState::CrashLoop { .. }))
            {
                return Err(format!("{} crash-loops", dead.spec.name));
            }
            if window.requests >= self.slo.min_requests {
                let rate = window.error_rate();
                if rate > self.slo.max_error_rate {
                    return Err(format!(
                        "error rate {:.1}% over {} requests breaks the SLO ({:.1}%)",
                        rate * 100.0,
                        window.requests,
                        self.slo.max_error_rate * 100.0
                    ));
                }
                if let Some(p99) = window.latency_quantile(0.99)
                    && p99 > self.slo.max_p99
                {
                    return Err(format!(
                        "p99 {} ms over {} requests breaks the SLO ({} ms)",
                        p99.as_millis(),
                        window.requests,
                        self.slo.max_p99.as_millis()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deploys `release` in place of `current` with `strategy`. Returns what serves the route
    /// afterwards (the new version, or the old one after a rollback), the outcome and the
    /// timeline. The version that no longer serves is drained and stopped.
    pub async fn deploy(
        &self,
        current: Running,
        release: &Release,
        strategy: &Strategy,
    ) -> (Running, Outcome, Vec<Step>) {
        let began = Instant::now();
        let mut timeline = Vec::new();
        let mut note = |text: String| timeline.push(Step { at: began.elapsed(), text });
        let service = release.service.clone();
        note(format!("starting {} instance(s) of {}", release.replicas.max(1), release.version));
        let next = match self.start(release).await {
            Ok(next) => next,
            Err(reason) => {
                note(format!("{} never became healthy; it took no traffic", release.version));
                return (current, Outcome::Failed { reason }, timeline);
            }
        };
        note(format!("{} is healthy", release.version));
        let steps = match strategy {
            Strategy::BlueGreen => vec![100],
            Strategy::Canary { steps } => steps.clone(),
        };
        for percent in steps {
            let percent = percent.min(100);
            let mut backends = Self::backends(&next, percent);
            if percent < 100 {
                backends.extend(Self::backends(&current, 100 - percent));
            }
            self.proxy.set_route(self.route(&service, backends));
            note(format!("{percent}% of traffic to {}", release.version));
            if let Err(reason) = self.bake(&service, &next).await {
                self.serve(&service, &current);
                note(format!("rolled back to {}: {reason}", current.version));
                self.drain(&service, &next.version, Duration::from_secs(10)).await;
                for instance in next.instances {
                    instance.stop().await;
                }
                return (current, Outcome::RolledBack { reason }, timeline);
            }
        }
        note(format!("{} passed its bake window", release.version));
        self.drain(&service, &current.version, Duration::from_secs(10)).await;
        for instance in current.instances {
            instance.stop().await;
        }
        note(format!("{} stopped", current.version));
        (next, Outcome::Succeeded, timeline)
    }
}
