//! The release model kept with each release (what it runs, how it is checked, where it goes)
//! and the timeline a deployment leaves: plain data, stored as JSON.

use super::*;

/// A service's configuration at a release's commit, kept as the release's `config`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleaseConfig {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
    pub replicas: u32,
    /// `tcp`, or the HTTP path whose answer must be `health_status`, or a command.
    pub health_http: Option<String>,
    pub health_status: u16,
    #[serde(default)]
    pub health_command: Option<String>,
    /// `(check, interval in ms, failures in a row)`.
    #[serde(default)]
    pub liveness: Option<(CheckConfig, u64, u32)>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub concurrency: Option<u32>,
    pub max_error_rate: f64,
    pub max_p99_ms: u64,
    pub min_requests: u64,
    pub bake_ms: u64,
    pub build: Option<String>,
    pub strategy: String,
    pub keep_warm_ms: u64,
    #[serde(default)]
    pub start_timeout_ms: Option<u64>,
    /// `health.interval` and `health.timeout`, and `liveness.timeout`, when they are not the
    /// defaults (`None`). Left out when unset, so configurations recorded before these
    /// existed compare equal, and GitOps sees no change to redeploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_timeout_ms: Option<u64>,
    /// `(environment, host, path prefix)` of the routes to this service.
    pub routes: Vec<(String, Option<String>, String)>,
    /// Where its instances run in the environment it was released for (`local`,
    /// `ssh://user@host:port`), from the default branch's `opsloop.yml`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Released for a protected environment: only then may protected CI/CD variables be its
    /// secrets (a developer could otherwise deploy any branch that reads them).
    #[serde(default)]
    pub protected_environment: bool,
    /// The pipeline artifacts the release runs (`artifact: JOB` in `opsloop.yml`).
    #[serde(default)]
    pub artifact: Option<ArtifactRef>,
    /// Where each instance serves Prometheus metrics: `(path, port)`, the instance's own port
    /// when `None`. Left out when unset, like the other late fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<(String, Option<u16>)>,
}

/// The artifacts a release was built into: which job of which pipeline, and the archive's
/// SHA-256 (part of the release's identity).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArtifactRef {
    pub job: String,
    pub pipeline_id: i64,
    pub job_id: i64,
    pub digest: String,
}

/// A check as stored: an HTTP path and status, a command, or (neither) TCP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckConfig {
    pub http: Option<String>,
    pub status: u16,
    pub command: Option<String>,
}

impl CheckConfig {
    pub(super) fn of(check: &HealthCheck) -> CheckConfig {
        match check {
            HealthCheck::Http { path, status } => {
                CheckConfig { http: Some(path.clone()), status: *status, command: None }
            }
            HealthCheck::Tcp => CheckConfig { http: None, status: 200, command: None },
            HealthCheck::Command(command) => CheckConfig { http: None, status: 200, command: Some(command.clone()) },
        }
    }

    pub(super) fn check(&self) -> HealthCheck {
        match (&self.http, &self.command) {
            (Some(path), _) => HealthCheck::Http { path: path.clone(), status: self.status },
            (None, Some(command)) => HealthCheck::Command(command.clone()),
            (None, None) => HealthCheck::Tcp,
        }
    }
}

/// A duration as whole milliseconds, as release configurations store them.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl ReleaseConfig {
    pub(crate) fn of(service: &manifest::Service, manifest: &Manifest) -> ReleaseConfig {
        let defaults = opsloop_deploy::supervisor::Probing::default_for(&service.health);
        let readiness = CheckConfig::of(&service.health);
        let (health_http, health_status, health_command) = (readiness.http, readiness.status, readiness.command);
        ReleaseConfig {
            command: service.command.clone(),
            env: service.env.clone(),
            secrets: service.secrets.clone(),
            replicas: service.replicas,
            health_http,
            health_status,
            health_command,
            liveness: service.liveness.as_ref().map(|l| {
                (CheckConfig::of(&l.check), u64::try_from(l.interval.as_millis()).unwrap_or(u64::MAX), l.failures)
            }),
            memory_bytes: service.memory,
            concurrency: service.concurrency,
            metrics: service.metrics.as_ref().map(|m| (m.path.clone(), m.port)),
            max_error_rate: service.slo.max_error_rate,
            max_p99_ms: u64::try_from(service.slo.max_p99.as_millis()).unwrap_or(u64::MAX),
            min_requests: service.slo.min_requests,
            bake_ms: u64::try_from(service.bake.as_millis()).unwrap_or(u64::MAX),
            build: service.build.clone(),
            strategy: manifest::strategy_name(&service.strategy),
            keep_warm_ms: u64::try_from(service.keep_warm.as_millis()).unwrap_or(u64::MAX),
            start_timeout_ms: service.start_timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            health_interval_ms: (service.readiness.interval != defaults.interval)
                .then(|| millis(service.readiness.interval)),
            health_timeout_ms: (service.readiness.timeout != defaults.timeout)
                .then(|| millis(service.readiness.timeout)),
            liveness_timeout_ms: service
                .liveness
                .as_ref()
                .filter(|l| l.timeout != opsloop_deploy::supervisor::default_timeout(&l.check))
                .map(|l| millis(l.timeout)),
            routes: manifest
                .routes
                .iter()
                .filter(|route| route.service == service.name)
                .map(|route| (route.environment.clone(), route.host.clone(), route.path.clone()))
                .collect(),
            targets: Vec::new(),
            protected_environment: false,
            artifact: None,
        }
    }

    /// What the engine runs: this configuration for a route (`service`) and version label.
    pub(super) fn engine_release(
        &self,
        state: &AppState,
        service: String,
        version: String,
        env: Vec<(String, String)>,
        dir: PathBuf,
    ) -> EngineRelease {
        EngineRelease {
            service,
            version,
            command: self.command.clone(),
            env,
            dir,
            replicas: self.replicas,
            health: self.health(),
            readiness: self.readiness(),
            targets: self.placements(state),
            memory_limit: self.memory_bytes,
            liveness: self.liveness(),
            concurrency: self.concurrency,
        }
    }

    pub(super) fn start_timeout(&self, state: &AppState) -> Duration {
        self.start_timeout_ms
            .map_or_else(|| Duration::from_secs(state.config.deploy.health_timeout_seconds), Duration::from_millis)
    }

    /// Where instances run: every target the environment names, taken in turn.
    pub(super) fn placements(&self, state: &AppState) -> Vec<Placement> {
        self.targets
            .iter()
            .filter_map(|text| manifest::target(text))
            .map(|target| match target {
                manifest::Target::Local => Placement::Local,
                manifest::Target::Ssh { user, host, port } => Placement::Ssh(opsloop_deploy::ssh::SshTarget {
                    user,
                    host,
                    port,
                    identity: state.config.deploy.ssh_identity.clone(),
                    known_hosts: state.config.deploy.ssh_known_hosts.clone(),
                }),
            })
            .collect()
    }

    pub(super) fn health(&self) -> HealthCheck {
        CheckConfig { http: self.health_http.clone(), status: self.health_status, command: self.health_command.clone() }
            .check()
    }

    pub(super) fn readiness(&self) -> opsloop_deploy::supervisor::Probing {
        let mut readiness = opsloop_deploy::supervisor::Probing::default_for(&self.health());
        if let Some(interval) = self.health_interval_ms {
            readiness.interval = Duration::from_millis(interval);
        }
        if let Some(timeout) = self.health_timeout_ms {
            readiness.timeout = Duration::from_millis(timeout);
        }
        readiness
    }

    pub(super) fn liveness(&self) -> Option<opsloop_deploy::supervisor::Liveness> {
        self.liveness.as_ref().map(|(check, interval_ms, failures)| {
            let check = check.check();
            let timeout = self
                .liveness_timeout_ms
                .map_or_else(|| opsloop_deploy::supervisor::default_timeout(&check), Duration::from_millis);
            opsloop_deploy::supervisor::Liveness {
                check,
                interval: Duration::from_millis(*interval_ms),
                timeout,
                failures: *failures,
            }
        })
    }

    /// Where the service is reached in `environment`: its route from `opsloop.yml`, or by
    /// default the host `<service>.<environment>.<project>.localhost`.
    pub(super) fn route(&self, project: &str, service: &str, environment: &str) -> (Option<String>, String) {
        self.routes
            .iter()
            .find(|(env, _, _)| env == environment)
            .map(|(_, host, path)| (host.clone(), path.clone()))
            .unwrap_or_else(|| (Some(format!("{service}.{environment}.{project}.localhost")), "/".to_owned()))
    }
}

/// One step as it is stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepRecord {
    pub at_ms: u64,
    pub text: String,
    /// The new version's share of the traffic from this step on (percent), when it moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_percent: Option<u32>,
}

/// A version's golden signals over a deployment, for its page.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionFigures {
    pub version: String,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// What a deployment's `timeline` column holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelineRecord {
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub figures: Vec<VersionFigures>,
}

impl TimelineRecord {
    pub fn parse(text: &str) -> TimelineRecord {
        serde_json::from_str(text).unwrap_or_default()
    }
}
