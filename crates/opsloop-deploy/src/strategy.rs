//! Deployment strategies on one machine: recreate, rolling, blue-green and canary, each
//! health-gated and watched through a bake window, with automatic rollback. The proxy carries the traffic, the
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
use crate::ssh::SshTarget;
use crate::supervisor::{HealthCheck, Instance, InstanceSpec, InstanceState, Liveness, LogSink, Probing, free_port_in};

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
    /// How often, and how patiently, `health` is checked while an instance starts.
    pub readiness: Probing,
    /// Where instances run, taken in turn (instance n on `targets[n % len]`); none: here.
    pub targets: Vec<Placement>,
    /// Bytes of memory each instance may use.
    pub memory_limit: Option<u64>,
    /// Checked while instances run (`health` is the readiness check that gates traffic).
    pub liveness: Option<Liveness>,
    /// Requests one instance is meant to take at once; saturation is measured against it.
    pub concurrency: Option<u32>,
}

/// Where an instance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Local,
    Ssh(SshTarget),
}

impl Release {
    /// The release's directory name on other hosts.
    fn key(&self) -> String {
        format!("{}-{}", self.service, self.version)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
            .collect()
    }
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
    /// Stop the old version, then start the new: a gap in service, for what cannot run twice.
    Recreate,
    /// Replace the old instances `batch` at a time, each batch health-gated and baked.
    Rolling {
        batch: u32,
    },
    BlueGreen,
    /// Percentages of traffic for the new version, in order; the last should be 100. While
    /// the old version still takes traffic, the new one is also compared with it.
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
    /// The new version's share of the traffic from this step on, when the step moved it.
    pub traffic: Option<u32>,
}

/// Why a release's instances did not all start healthy (none of them is left running).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The release could not be copied to one of its hosts.
    #[error(transparent)]
    Upload(#[from] crate::ssh::SshError),
    /// A host's name has no address.
    #[error("cannot resolve {host}")]
    Resolve { host: String },
    /// No port to listen on was free (in the configured range).
    #[error(transparent)]
    Port(#[from] std::io::Error),
    /// An instance crash-looped or never passed its readiness check.
    #[error(transparent)]
    Unhealthy(#[from] crate::supervisor::HealthError),
}

/// The instances serving one route, with their release (to start more of them again).
#[derive(Debug)]
pub struct Running {
    pub version: String,
    pub release: Release,
    pub instances: Vec<Instance>,
}

/// What a deployment left: what serves now, the old version when it was kept running (see
/// [`Deployer::deploy_keeping_old`]), the outcome and the timeline.
#[derive(Debug)]
pub struct Deployed {
    pub serving: Running,
    pub retired: Option<Running>,
    pub outcome: Outcome,
    pub steps: Vec<Step>,
}

/// Called with each step as it happens (a deployment's page shows them live).
pub type StepSink = Arc<dyn Fn(&Step) + Send + Sync>;

/// An instance that left a route is stopped once its requests in flight are answered, or
/// after this long at most.
const LEAVE_LIMIT: Duration = Duration::from_secs(10);

/// Deploys releases of one service behind one route of a proxy.
pub struct Deployer {
    pub proxy: Arc<Proxy>,
    pub host: Option<String>,
    pub path_prefix: String,
    pub slo: Slo,
    pub bake: Duration,
    pub health_timeout: Duration,
    pub log: LogSink,
    pub on_step: Option<StepSink>,
    /// Instances' ports come from this range (inclusive); any free port without one.
    pub ports: Option<(u16, u16)>,
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

    fn backends(instances: &[Instance], version: &str, weight: u32) -> Vec<Backend> {
        instances
            .iter()
            .map(|i| Backend {
                address: std::net::SocketAddr::new(i.spec.host, i.spec.port),
                version: version.to_owned(),
                weight,
            })
            .collect()
    }

    /// Starts `release`'s instances and waits until all are healthy.
    pub async fn start(&self, release: &Release) -> Result<Running, StartError> {
        let instances = self.start_instances(release, release.replicas.max(1), 1).await?;
        self.set_capacity(release, instances.len());
        Ok(Running { version: release.version.clone(), release: release.clone(), instances })
    }

    fn set_capacity(&self, release: &Release, instances: usize) {
        if let Some(per_instance) = release.concurrency {
            let signals = self.proxy.signals().of(&release.service, &release.version);
            signals.set_capacity(u64::from(per_instance) * instances as u64);
        }
    }

    /// Starts `count` instances of `release` numbered from `first`, all health-gated; on a
    /// failure none is left running.
    async fn start_instances(&self, release: &Release, count: u32, first: u32) -> Result<Vec<Instance>, StartError> {
        let mut instances = Vec::new();
        let placements: Vec<Placement> = (first..first + count)
            .map(|n| {
                let index = usize::try_from(n.saturating_sub(1)).unwrap_or(0);
                release.targets.get(index % release.targets.len().max(1)).cloned().unwrap_or(Placement::Local)
            })
            .collect();
        // Each host gets the release (once) before its instances start.
        let mut hosts: Vec<&SshTarget> = Vec::new();
        for placement in &placements {
            if let Placement::Ssh(target) = placement
                && !hosts.contains(&target)
            {
                hosts.push(target);
            }
        }
        let mut addresses = std::collections::HashMap::new();
        for target in hosts {
            target.upload(&release.dir, &release.key(), &release.env).await?;
            let found = tokio::net::lookup_host((target.host.as_str(), target.port)).await;
            let address = found.ok().and_then(|mut found| found.next()).map(|a| a.ip());
            let address = address.ok_or_else(|| StartError::Resolve { host: target.host.clone() })?;
            addresses.insert(target.label(), address);
        }
        if release.memory_limit.is_some() && placements.iter().any(|p| matches!(p, Placement::Ssh(_))) {
            (self.log)(
                &release.service,
                "on SSH hosts the memory limit caps each instance's address space (ulimit -v)",
            );
        }
        for (n, placement) in (first..first + count).zip(placements) {
            let (command, host, place) = match &placement {
                Placement::Local => (release.command.clone(), std::net::Ipv4Addr::LOCALHOST.into(), String::new()),
                Placement::Ssh(target) => (
                    target.command(&release.key(), &release.command, release.memory_limit),
                    addresses.get(&target.label()).copied().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
                    format!(" on {}", target.label()),
                ),
            };
            let spec = InstanceSpec {
                name: format!("{}@{}#{n}{place}", release.service, release.version),
                command,
                env: release.env.clone(),
                dir: release.dir.clone(),
                host,
                port: free_port_in(self.ports)?,
                health: release.health.clone(),
                readiness: release.readiness,
                stop_grace: Duration::from_secs(10),
                max_restarts: 3,
                crash_window: Duration::from_secs(60),
                // On another host a cgroup here would bind only the local ssh client; the remote
                // command line carries the limit instead (`SshTarget::command`).
                memory_limit: if matches!(placement, Placement::Local) { release.memory_limit } else { None },
                liveness: release.liveness.clone(),
            };
            instances.push(Instance::start(spec, self.log.clone()));
        }
        for instance in &instances {
            if let Err(reason) = instance.wait_healthy(self.health_timeout).await {
                for instance in instances {
                    instance.stop().await;
                }
                return Err(reason.into());
            }
        }
        Ok(instances)
    }

    /// Puts `running` behind the route on its own (the first deployment, or a rollback).
    pub fn serve(&self, service: &str, running: &Running) {
        self.proxy.set_route(self.route(service, Self::backends(&running.instances, &running.version, 1)));
    }

    async fn drain_instances(&self, instances: &[Instance]) {
        drain(self.proxy.signals(), instances).await;
    }

    /// Holds `version`'s traffic for the bake time; `Err(reason)` on a breach of the SLO, a
    /// crash loop, or (with a `baseline` version taking traffic beside it) a clearly worse
    /// error rate or p99 than the baseline's.
    async fn bake(
        &self,
        service: &str,
        version: &str,
        instances: &[Instance],
        baseline: Option<&str>,
    ) -> Result<(), String> {
        let signals = self.proxy.signals().of(service, version);
        let start: Snapshot = signals.snapshot();
        let base = baseline.map(|v| self.proxy.signals().of(service, v));
        let base_start = base.as_ref().map(|b| b.snapshot());
        let deadline = Instant::now() + self.bake;
        loop {
            let window = signals.snapshot().since(&start);
            if let Some(dead) = instances.iter().find(|i| matches!(i.state(), InstanceState::CrashLoop { .. })) {
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
                if let (Some(base), Some(base_start)) = (&base, &base_start) {
                    let reference = base.snapshot().since(base_start);
                    if reference.requests >= self.slo.min_requests {
                        let (ours, theirs) = (rate, reference.error_rate());
                        // Worse by more than noise: a point over, and twice the baseline's.
                        if ours > theirs + 0.01 && ours > 2.0 * theirs {
                            return Err(format!(
                                "error rate {:.1}% against the baseline's {:.1}% over {} requests",
                                ours * 100.0,
                                theirs * 100.0,
                                window.requests
                            ));
                        }
                        if let (Some(p99), Some(base_p99)) =
                            (window.latency_quantile(0.99), reference.latency_quantile(0.99))
                            && p99 > base_p99 * 2
                            && p99 > Duration::from_millis(50)
                        {
                            return Err(format!(
                                "p99 {} ms against the baseline's {} ms",
                                p99.as_millis(),
                                base_p99.as_millis()
                            ));
                        }
                    }
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
        let deployed = self.deploy_keeping_old(current, release, strategy).await;
        if let Some(retired) = deployed.retired {
            self.retire(retired).await;
        }
        (deployed.serving, deployed.outcome, deployed.steps)
    }

    /// [`Deployer::deploy`], except that after a successful blue-green or canary deployment
    /// the old version is not stopped but handed back (out of the route, still running), so
    /// a rollback to it within its keep-warm time is a route switch. Stop it with
    /// [`Deployer::retire`].
    pub async fn deploy_keeping_old(&self, current: Running, release: &Release, strategy: &Strategy) -> Deployed {
        let mut timeline = self.timeline();
        let (serving, retired, outcome) = match strategy {
            Strategy::Recreate => {
                let (serving, outcome) = self.recreate(current, release, &mut timeline).await;
                (serving, None, outcome)
            }
            Strategy::Rolling { batch } => {
                let (serving, outcome) = self.rolling(current, release, (*batch).max(1), &mut timeline).await;
                (serving, None, outcome)
            }
            Strategy::BlueGreen => self.shift(current, release, &[100], &mut timeline).await,
            Strategy::Canary { steps } => self.shift(current, release, steps, &mut timeline).await,
        };
        Deployed { serving, retired, outcome, steps: timeline.steps }
    }

    /// The first deployment of a service (nothing serves yet): started, health-gated, put on
    /// the route and baked. A breach leaves the route empty; there is nothing to go back to.
    pub async fn deploy_first(&self, release: &Release) -> (Option<Running>, Outcome, Vec<Step>) {
        let mut timeline = self.timeline();
        let service = release.service.clone();
        timeline.note(format!("starting {} instance(s) of {}", release.replicas.max(1), release.version));
        let next = match self.start(release).await {
            Ok(next) => next,
            Err(reason) => {
                timeline.note(format!("{} never became healthy; it took no traffic", release.version));
                return (None, Outcome::Failed { reason: reason.to_string() }, timeline.steps);
            }
        };
        self.serve(&service, &next);
        timeline.traffic(format!("100% of traffic to {}", release.version), 100);
        if let Err(reason) = self.bake(&service, &next.version, &next.instances, None).await {
            self.proxy.set_route(self.route(&service, Vec::new()));
            timeline.traffic(format!("{} stopped: {reason}", release.version), 0);
            self.retire(next).await;
            return (None, Outcome::Failed { reason }, timeline.steps);
        }
        timeline.note(format!("{} passed its bake window", release.version));
        (Some(next), Outcome::Succeeded, timeline.steps)
    }

    /// Drains what is still in flight to `old` (already out of the route) and stops it.
    pub async fn retire(&self, old: Running) {
        self.drain_instances(&old.instances).await;
        for instance in old.instances {
            instance.stop().await;
        }
    }

    fn timeline(&self) -> Timeline {
        Timeline { began: Instant::now(), steps: Vec::new(), on_step: self.on_step.clone() }
    }

    /// Blue-green and canary: the new version beside the old, traffic moved in steps.
    async fn shift(
        &self,
        current: Running,
        release: &Release,
        steps: &[u32],
        timeline: &mut Timeline,
    ) -> (Running, Option<Running>, Outcome) {
        let service = release.service.clone();
        timeline.note(format!("starting {} instance(s) of {}", release.replicas.max(1), release.version));
        let next = match self.start(release).await {
            Ok(next) => next,
            Err(reason) => {
                timeline.note(format!("{} never became healthy; it took no traffic", release.version));
                return (current, None, Outcome::Failed { reason: reason.to_string() });
            }
        };
        timeline.note(format!("{} is healthy", release.version));
        for percent in steps.iter().map(|p| (*p).min(100)) {
            let mut backends = Self::backends(&next.instances, &next.version, percent);
            if percent < 100 {
                backends.extend(Self::backends(&current.instances, &current.version, 100 - percent));
            }
            self.proxy.set_route(self.route(&service, backends));
            timeline.traffic(format!("{percent}% of traffic to {}", release.version), percent);
            let baseline = (percent < 100).then_some(current.version.as_str());
            if let Err(reason) = self.bake(&service, &next.version, &next.instances, baseline).await {
                self.serve(&service, &current);
                timeline.traffic(format!("rolled back to {}: {reason}", current.version), 0);
                self.drain_instances(&next.instances).await;
                for instance in next.instances {
                    instance.stop().await;
                }
                return (current, None, Outcome::RolledBack { reason });
            }
        }
        timeline.note(format!("{} passed its bake window", release.version));
        (next, Some(current), Outcome::Succeeded)
    }

    /// Replaces the old instances `batch` at a time: new ones start and pass their health
    /// check, join the route, bake; then as many old ones leave the route and stop. A breach
    /// brings the old version back to full strength, alone on the route.
    async fn rolling(
        &self,
        current: Running,
        release: &Release,
        batch: u32,
        timeline: &mut Timeline,
    ) -> (Running, Outcome) {
        let service = release.service.clone();
        let wanted = release.replicas.max(1);
        let Running { version: old_version, release: old_release, instances: mut old } = current;
        let mut new: Vec<Instance> = Vec::new();
        while (new.len() as u32) < wanted {
            let count = batch.min(wanted - new.len() as u32);
            let started = match self.start_instances(release, count, new.len() as u32 + 1).await {
                Ok(started) => started,
                Err(reason) => {
                    timeline.note(format!("{} never became healthy", release.version));
                    let old = Running { version: old_version, release: old_release, instances: old };
                    return (self.restore(old, new, &service).await, Outcome::Failed { reason: reason.to_string() });
                }
            };
            new.extend(started);
            self.set_capacity(release, new.len());
            let mut backends = Self::backends(&old, &old_version, 1);
            backends.extend(Self::backends(&new, &release.version, 1));
            self.proxy.set_route(self.route(&service, backends));
            let share = u32::try_from(new.len() * 100 / (new.len() + old.len()).max(1)).unwrap_or(100);
            timeline.traffic(format!("{} of {wanted} instance(s) on {}", new.len(), release.version), share);
            if let Err(reason) = self.bake(&service, &release.version, &new, None).await {
                timeline.traffic(format!("rolled back to {old_version}: {reason}"), 0);
                let old = Running { version: old_version, release: old_release, instances: old };
                return (self.restore(old, new, &service).await, Outcome::RolledBack { reason });
            }
            let leaving: Vec<Instance> = old.drain(..(count as usize).min(old.len())).collect();
            let mut backends = Self::backends(&old, &old_version, 1);
            backends.extend(Self::backends(&new, &release.version, 1));
            self.proxy.set_route(self.route(&service, backends));
            self.drain_instances(&leaving).await;
            for instance in leaving {
                instance.stop().await;
            }
        }
        let next = Running { version: release.version.clone(), release: release.clone(), instances: new };
        self.serve(&service, &next);
        self.drain_instances(&old).await;
        for instance in old {
            instance.stop().await;
        }
        timeline.traffic(format!("{} replaced {old_version}", release.version), 100);
        (next, Outcome::Succeeded)
    }

    /// After a failed rolling step: the old version back to its replica count, alone on the
    /// route; the new instances stopped.
    async fn restore(&self, mut old: Running, new: Vec<Instance>, service: &str) -> Running {
        let missing = old.release.replicas.max(1).saturating_sub(old.instances.len() as u32);
        if missing > 0 {
            match self.start_instances(&old.release, missing, old.instances.len() as u32 + 1).await {
                Ok(more) => old.instances.extend(more),
                Err(error) => {
                    (self.log)(&old.release.service, &format!("{} did not come back in full: {error}", old.version))
                }
            }
        }
        self.serve(service, &old);
        self.drain_instances(&new).await;
        for instance in new {
            instance.stop().await;
        }
        old
    }

    /// Stops the old version, then starts the new one; if the new one fails its health check
    /// or its bake window, the old version is started again.
    async fn recreate(&self, current: Running, release: &Release, timeline: &mut Timeline) -> (Running, Outcome) {
        let service = release.service.clone();
        self.proxy.set_route(self.route(&service, Vec::new()));
        self.drain_instances(&current.instances).await;
        let Running { version: old_version, release: old_release, instances } = current;
        for instance in instances {
            instance.stop().await;
        }
        timeline.note(format!("{old_version} stopped"));
        let failure = match self.start(release).await {
            Ok(next) => {
                self.serve(&service, &next);
                timeline.traffic(format!("{} serves", release.version), 100);
                match self.bake(&service, &next.version, &next.instances, None).await {
                    Ok(()) => return (next, Outcome::Succeeded),
                    Err(reason) => {
                        self.proxy.set_route(self.route(&service, Vec::new()));
                        for instance in next.instances {
                            instance.stop().await;
                        }
                        Outcome::RolledBack { reason }
                    }
                }
            }
            Err(reason) => Outcome::Failed { reason: reason.to_string() },
        };
        timeline.traffic(format!("{} failed; starting {old_version} again", release.version), 0);
        match self.start(&old_release).await {
            Ok(old) => {
                self.serve(&service, &old);
                (old, failure)
            }
            Err(error) => {
                let reason = format!("{failure:?}; and {old_version} did not start again: {error}");
                let nothing = Running { version: old_version, release: old_release, instances: Vec::new() };
                (nothing, Outcome::Failed { reason })
            }
        }
    }
}

/// The steps of one deployment, timed from its start.
struct Timeline {
    began: Instant,
    steps: Vec<Step>,
    on_step: Option<StepSink>,
}

impl Timeline {
    fn note(&mut self, text: String) {
        self.push(text, None);
    }

    fn traffic(&mut self, text: String, percent: u32) {
        self.push(text, Some(percent));
    }

    fn push(&mut self, text: String, traffic: Option<u32>) {
        let step = Step { at: self.began.elapsed(), text, traffic };
        if let Some(on_step) = &self.on_step {
            on_step(&step);
        }
        self.steps.push(step);
    }
}

/// Waits until `instances` (out of the route already) have answered what they were sent:
/// their backends' requests in flight reach zero (at most [`LEAVE_LIMIT`]). A request counts
/// until its answer's body has passed whole, so a download still streaming is waited for.
/// The one drain of every path (rollback, retire, rolling, recreate, and the server's stop):
/// a failing release's answers are answers someone is waiting for too.
pub async fn drain(signals: &crate::Signals, instances: &[Instance]) {
    // A request that read the old route table just before the switch counts itself a moment
    // later: give it that moment.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let counters: Vec<_> =
        instances.iter().map(|i| signals.backend(std::net::SocketAddr::new(i.spec.host, i.spec.port))).collect();
    let deadline = Instant::now() + LEAVE_LIMIT;
    while counters.iter().any(|c| c.in_flight() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
