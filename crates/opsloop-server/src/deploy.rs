//! Deployments on the server: the deploy engine (`opsloop-deploy`) wired to projects, the
//! store and the API.
//!
//! A deployment request names a service, an environment and a version (a branch, tag or
//! commit; the default branch's head when none). Two readings of `opsloop.yml` decide it:
//! the **default branch's** says which environments exist and how they are guarded
//! (protected, freeze windows), so a branch cannot lift its own protection; the **release's
//! commit's** says how the service runs (command, health, SLO, strategy). The release is that
//! commit checked out under `<data-dir>/releases/<project>/<service>/<commit>` plus the
//! service's configuration, kept as JSON with the release.
//!
//! One deployment at a time per environment: each waits for its environment's turn (a
//! fair lock), then claims its row (`queued` → `running`), so a queue survives a restart.
//! The proxy's routes are named `<project>/<environment>/<service>`, which is also the
//! `service` label of the golden signals.
//!
//! When opsloop stops, the instances it supervised are not adopted by the next process: it
//! kills what is left of them (found by `OPSLOOP_RELEASE_DIR` in their environment) and
//! starts the release each environment was serving again, health-gated, before routing to
//! it. A deployment that was running is marked `failed` (interrupted) and what served before
//! it serves again.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opsloop_core::DeploymentStatus;
use opsloop_deploy::manifest::{self, Manifest};
use opsloop_deploy::strategy::{Deployer, Outcome, Placement, Release as EngineRelease, Running, Slo, Step};
use opsloop_deploy::supervisor::HealthCheck;
use opsloop_deploy::{Proxy, Signals};
use opsloop_store::{Actor, Deployment, NewDeployment, Project, Release};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

pub const MANIFEST_FILE: &str = "opsloop.yml";
/// Every instance carries its release directory in this variable, so a later process can
/// find the instances an earlier one left behind.
const INSTANCE_MARKER: &str = "OPSLOOP_RELEASE_DIR";
const PROXY_TIMEOUT: Duration = Duration::from_secs(60);

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
    fn of(check: &HealthCheck) -> CheckConfig {
        match check {
            HealthCheck::Http { path, status } => {
                CheckConfig { http: Some(path.clone()), status: *status, command: None }
            }
            HealthCheck::Tcp => CheckConfig { http: None, status: 200, command: None },
            HealthCheck::Command(command) => CheckConfig { http: None, status: 200, command: Some(command.clone()) },
        }
    }

    fn check(&self) -> HealthCheck {
        match (&self.http, &self.command) {
            (Some(path), _) => HealthCheck::Http { path: path.clone(), status: self.status },
            (None, Some(command)) => HealthCheck::Command(command.clone()),
            (None, None) => HealthCheck::Tcp,
        }
    }
}

/// A duration as whole milliseconds, as release configurations store them.
fn millis(duration: Duration) -> u64 {
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
    fn engine_release(
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

    fn start_timeout(&self, state: &AppState) -> Duration {
        self.start_timeout_ms
            .map_or_else(|| Duration::from_secs(state.config.deploy.health_timeout_seconds), Duration::from_millis)
    }

    /// Where instances run: every target the environment names, taken in turn.
    fn placements(&self, state: &AppState) -> Vec<Placement> {
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

    fn health(&self) -> HealthCheck {
        CheckConfig { http: self.health_http.clone(), status: self.health_status, command: self.health_command.clone() }
            .check()
    }

    fn readiness(&self) -> opsloop_deploy::supervisor::Probing {
        let mut readiness = opsloop_deploy::supervisor::Probing::default_for(&self.health());
        if let Some(interval) = self.health_interval_ms {
            readiness.interval = Duration::from_millis(interval);
        }
        if let Some(timeout) = self.health_timeout_ms {
            readiness.timeout = Duration::from_millis(timeout);
        }
        readiness
    }

    fn liveness(&self) -> Option<opsloop_deploy::supervisor::Liveness> {
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
    fn route(&self, project: &str, service: &str, environment: &str) -> (Option<String>, String) {
        self.routes
            .iter()
            .find(|(env, _, _)| env == environment)
            .map(|(_, host, path)| (host.clone(), path.clone()))
            .unwrap_or_else(|| (Some(format!("{service}.{environment}.{project}.localhost")), "/".to_owned()))
    }
}

type Key = (i64, String, String);
type Turn = Arc<tokio::sync::Mutex<()>>;

struct Live {
    release_id: i64,
    running: Running,
}

struct Warm {
    release_id: i64,
    running: Running,
    until: Instant,
}

/// The deployments side of the server's state.
pub struct DeployHub {
    pub proxy: Arc<Proxy>,
    /// Where the proxy listens, once it does.
    pub proxy_address: OnceLock<SocketAddr>,
    /// One deployment at a time per (project, environment).
    turns: Mutex<HashMap<(i64, String), Turn>>,
    serving: Mutex<HashMap<Key, Live>>,
    warm: Mutex<HashMap<Key, Warm>>,
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

impl DeployHub {
    fn turn(&self, project_id: i64, environment: &str) -> Turn {
        let mut turns = self.turns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        turns.entry((project_id, environment.to_owned())).or_default().clone()
    }

    fn take_serving(&self, key: &Key) -> Option<Live> {
        self.serving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key)
    }

    fn put_serving(&self, key: Key, live: Live) {
        self.serving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, live);
    }

    /// The warm version of `key` if it is release `release_id` (a failed deployment leaves
    /// any other warm version where it is).
    fn take_warm(&self, key: &Key, release_id: i64) -> Option<Warm> {
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

fn releases_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("releases")
}

/// Where a release's files are: per commit, and per artifact archive when it has one.
pub fn release_dir(state: &AppState, release: &Release) -> PathBuf {
    let artifact = serde_json::from_str::<ReleaseConfig>(&release.config).ok().and_then(|c| c.artifact);
    let name = match artifact {
        Some(artifact) => format!("{}-{}", release.commit_sha, &artifact.digest[..artifact.digest.len().min(12)]),
        None => release.commit_sha.clone(),
    };
    releases_dir(state).join(release.project_id.to_string()).join(&release.service).join(name)
}

/// Unpacks the artifacts of `job` of the newest pipeline at `commit` into `dir`.
async fn unpack_artifacts(
    state: &AppState,
    project: &Project,
    commit: &str,
    job: &str,
    dir: &Path,
) -> Result<ArtifactRef, ApiError> {
    let found = state.store.artifacts_at_commit(project.id, commit, job).await?;
    let Some((pipeline_id, stored)) = found else {
        return Err(unavailable(format!(
            "no successful `{job}` job with artifacts at {}: run its pipeline first (the release is what it built)",
            &commit[..commit.len().min(12)]
        )));
    };
    let archive = state.objects()?.get(&stored.object_key).await.map_err(|error| {
        tracing::error!(%error, "cannot read a job's artifacts");
        ApiError::internal()
    })?;
    let digest = crate::auth::credentials::digest_bytes(&archive);
    let target = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::objects::unzip_into(&archive, &target))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|error| unavailable(format!("the artifacts of `{job}` could not be unpacked: {error}")))?;
    Ok(ArtifactRef { job: job.to_owned(), pipeline_id, job_id: stored.job_id, digest })
}

/// The log file of a service in an environment (its instances' output, masked).
pub fn service_log(state: &AppState, project_id: i64, environment: &str, service: &str) -> PathBuf {
    state
        .config
        .data_dir
        .join("deploy-logs")
        .join(project_id.to_string())
        .join(environment)
        .join(format!("{service}.log"))
}

/// What a person or a job asks for.
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    pub service: String,
    pub environment: String,
    pub version: Option<String>,
    pub strategy: Option<String>,
    pub triggered_by: String,
    /// The pipeline whose job asked (through its token).
    pub pipeline_id: Option<i64>,
}

/// A checked-out commit with its `opsloop.yml`.
pub(crate) struct Checkout {
    pub dir: PathBuf,
    pub sha: String,
    pub manifest: Manifest,
}

/// The version's files or its `opsloop.yml` cannot be had (checked after access passed).
fn unavailable(message: String) -> ApiError {
    ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "release_unavailable", message)
}

pub(crate) async fn checkout(state: &AppState, project: &Project, git_ref: &str) -> Result<Checkout, ApiError> {
    let dir = releases_dir(state).join(project.id.to_string()).join(format!(".checkout-{}", uuid::Uuid::new_v4()));
    let sha = match crate::mirror::checkout(state, project.id, &project.repo_url, git_ref, None, &dir).await {
        Ok(sha) => sha,
        Err(message) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(unavailable(message));
        }
    };
    let text = match tokio::fs::read_to_string(dir.join(MANIFEST_FILE)).await {
        Ok(text) => text,
        Err(_) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(unavailable(format!("{git_ref} ({}) has no {MANIFEST_FILE}", &sha[..sha.len().min(12)])));
        }
    };
    let (manifest, problems) = manifest::parse(&text);
    if let Some(first) = problems.first() {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let place = first.span.map(|s| format!(":{}:{}", s.line, s.column)).unwrap_or_default();
        let hint = first.hint.as_deref().map(|h| format!(" (hint: {h})")).unwrap_or_default();
        return Err(unavailable(format!(
            "{MANIFEST_FILE}{place} at {}: {}{hint}{}",
            &sha[..sha.len().min(12)],
            first.message,
            if problems.len() > 1 { format!(" and {} more problem(s)", problems.len() - 1) } else { String::new() }
        )));
    }
    Ok(Checkout { dir, sha, manifest })
}

/// The default branch's environment named `name`, with its guards checked for `role`.
async fn guarded_environment(
    state: &AppState,
    project: &Project,
    name: &str,
    role: opsloop_core::Role,
) -> Result<manifest::Environment, ApiError> {
    let governing = checkout(state, project, &project.default_branch).await?;
    let _ = tokio::fs::remove_dir_all(&governing.dir).await;
    let Some(environment) = governing.manifest.environments.into_iter().find(|e| e.name == name) else {
        return Err(ApiError::invalid(format!(
            "no environment `{name}` in {MANIFEST_FILE} on {}",
            project.default_branch
        )));
    };
    if environment.protected && role < opsloop_core::Role::Maintainer {
        return Err(ApiError::forbidden(format!("`{name}` is protected: deploying to it needs the maintainer role")));
    }
    if let Some(freeze) =
        environment.frozen_at(jiff::Timestamp::from_millisecond(state.clock.now_ms()).unwrap_or_default())
    {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "frozen",
            format!("`{name}` is in a deploy freeze until {}", freeze.to),
        ));
    }
    Ok(environment)
}

/// Resolves the request into a release and queues its deployment; the deployment runs in
/// the background (its environment's turn permitting).
pub async fn request(
    state: &AppState,
    project: &Project,
    role: opsloop_core::Role,
    request: DeployRequest,
    actor: Actor<'_>,
) -> Result<Deployment, ApiError> {
    let environment = guarded_environment(state, project, &request.environment, role).await?;
    if let Some(strategy) = &request.strategy {
        manifest::parse_strategy(strategy).map_err(|error| ApiError::invalid(error.to_string()))?;
    }
    let git_ref = request.version.clone().unwrap_or_else(|| project.default_branch.clone());
    let checkout = checkout(state, project, &git_ref).await?;
    let Some(service) = checkout.manifest.services.iter().find(|s| s.name == request.service) else {
        let _ = tokio::fs::remove_dir_all(&checkout.dir).await;
        let known: Vec<&str> = checkout.manifest.services.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError::invalid(format!(
            "no service `{}` in {MANIFEST_FILE} at {git_ref} (services: {})",
            request.service,
            known.join(", ")
        )));
    };
    let mut config = ReleaseConfig::of(service, &checkout.manifest);
    config.targets = environment.targets.iter().map(ToString::to_string).collect();
    config.protected_environment = environment.protected;
    if let Some(job) = &service.artifact {
        match unpack_artifacts(state, project, &checkout.sha, job, &checkout.dir).await {
            Ok(artifact) => config.artifact = Some(artifact),
            Err(error) => {
                let _ = tokio::fs::remove_dir_all(&checkout.dir).await;
                return Err(error);
            }
        }
    }
    let version = match &request.version {
        Some(version) if !checkout.sha.starts_with(version.as_str()) => version.clone(),
        _ => checkout.sha[..12.min(checkout.sha.len())].to_owned(),
    };
    let config_json = serde_json::to_string(&config).map_err(|_| ApiError::internal())?;
    let release =
        state.store.create_release(project.id, &request.service, &version, &checkout.sha, &config_json).await?;
    let target = release_dir(state, &release);
    if target.exists() {
        let _ = tokio::fs::remove_dir_all(&checkout.dir).await;
    } else {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|_| ApiError::internal())?;
        }
        if let Err(error) = tokio::fs::rename(&checkout.dir, &target).await {
            // The same commit, released by a request at the same moment, got there first.
            let _ = tokio::fs::remove_dir_all(&checkout.dir).await;
            if !target.exists() {
                tracing::error!(%error, "cannot keep a release's files");
                return Err(ApiError::internal());
            }
        }
    }
    let strategy = request.strategy.clone().unwrap_or_else(|| config.strategy.clone());
    queue(state, project, &release, &request, &strategy, environment.approvals, actor).await
}

async fn queue(
    state: &AppState,
    project: &Project,
    release: &Release,
    request: &DeployRequest,
    strategy: &str,
    approvals: u32,
    actor: Actor<'_>,
) -> Result<Deployment, ApiError> {
    let new = NewDeployment {
        status: if approvals > 0 { DeploymentStatus::WaitingApproval } else { DeploymentStatus::Queued },
        environment: &request.environment,
        service: &request.service,
        release_id: release.id,
        strategy,
        triggered_by: &request.triggered_by,
        pipeline_id: request.pipeline_id,
    };
    let deployment = state.store.create_deployment(project, new, actor).await?;
    if deployment.status == DeploymentStatus::Queued {
        spawn_run(state, deployment.clone());
    }
    Ok(deployment)
}

/// Approves a deployment waiting for approvals; the last one needed starts it. Nobody
/// approves their own deployment; a protected environment's approvers are maintainers.
pub async fn approve(
    state: &AppState,
    project: &Project,
    role: opsloop_core::Role,
    deployment_id: i64,
    approver: &str,
    principal_credential: &crate::auth::Credential,
    actor: Actor<'_>,
) -> Result<Deployment, ApiError> {
    let deployment = match state.store.deployment(deployment_id).await? {
        Some(deployment) if deployment.project_id == project.id => deployment,
        _ => return Err(ApiError::not_found("deployment")),
    };
    if deployment.status != DeploymentStatus::WaitingApproval {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "not_waiting",
            format!("deployment #{deployment_id} is {}, not waiting for approval", deployment.status),
        ));
    }
    if matches!(principal_credential, crate::auth::Credential::Pipeline { .. }) {
        return Err(ApiError::forbidden("a pipeline does not approve deployments; a person does"));
    }
    let requester = &deployment.triggered_by;
    if requester == approver || requester.starts_with(&format!("{approver} ")) {
        return Err(ApiError::forbidden("a deployment is approved by someone other than who asked for it"));
    }
    let environment = guarded_environment(state, project, &deployment.environment, role).await?;
    let needed = i64::from(environment.approvals.max(1));
    if state.store.approve_deployment(project, deployment_id, needed, actor).await? {
        let queued = state.store.deployment(deployment_id).await?.ok_or_else(|| ApiError::not_found("deployment"))?;
        spawn_run(state, queued);
    }
    state.store.deployment(deployment_id).await?.ok_or_else(|| ApiError::not_found("deployment"))
}

pub struct RollbackRequest {
    pub service: String,
    pub environment: String,
    pub to: Option<String>,
    pub triggered_by: String,
}

/// Deploys an earlier release again: `to` names its version (or a commit prefix); without
/// it, the release that served before the current one.
pub async fn rollback(
    state: &AppState,
    project: &Project,
    role: opsloop_core::Role,
    request: RollbackRequest,
    actor: Actor<'_>,
) -> Result<Deployment, ApiError> {
    let RollbackRequest { service, environment, to, triggered_by } = request;
    let (service, environment, to) = (service.as_str(), environment.as_str(), to.as_deref());
    let guarded = guarded_environment(state, project, environment, role).await?;
    let history = state.store.list_deployments(project.id, Some(service), Some(environment), 500).await?;
    let serving = state
        .store
        .serving_releases(Some(project.id))
        .await?
        .into_iter()
        .find(|s| s.environment == environment && s.service == service)
        .map(|s| s.release_id);
    let target = match to {
        Some(to) => history
            .iter()
            .filter(|d| Some(d.release_id) != serving)
            .find(|d| d.version == to || (to.len() >= 7 && d.commit_sha.starts_with(to)))
            .map(|d| d.release_id)
            .ok_or_else(|| ApiError::invalid(format!("`{service}` was never deployed to `{environment}` as `{to}`")))?,
        None => history
            .iter()
            .find(|d| d.status == DeploymentStatus::Success && Some(d.release_id) != serving)
            .map(|d| d.release_id)
            .ok_or_else(|| {
                ApiError::invalid(format!("no earlier release of `{service}` in `{environment}` to go back to"))
            })?,
    };
    let release = state.store.release(target).await?.ok_or_else(|| ApiError::not_found("release"))?;
    if !release_dir(state, &release).exists() {
        return Err(ApiError::invalid(format!(
            "the files of release {} are gone; deploy it by version",
            release.version
        )));
    }
    let request = DeployRequest {
        service: service.to_owned(),
        environment: environment.to_owned(),
        triggered_by: format!("{triggered_by} (rollback)"),
        ..DeployRequest::default()
    };
    queue(state, project, &release, &request, "blue-green", guarded.approvals, actor).await
}

fn spawn_run(state: &AppState, deployment: Deployment) {
    let state = state.clone();
    tokio::spawn(async move {
        let id = deployment.id;
        if let Err(message) = run(&state, deployment).await {
            tracing::error!(deployment = id, %message, "a deployment could not run");
        }
    });
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

async fn run(state: &AppState, deployment: Deployment) -> Result<(), String> {
    let hub = &state.deploy;
    let turn = hub.turn(deployment.project_id, &deployment.environment);
    let _turn = turn.lock().await;
    if !state.store.claim_deployment(deployment.id).await.map_err(|e| e.to_string())? {
        return Ok(());
    }
    let project = state.store.project_by_id(deployment.project_id).await.map_err(|e| e.to_string())?;
    let Some(project) = project else { return Ok(()) };
    let release = state.store.release(deployment.release_id).await.map_err(|e| e.to_string())?;
    let Some(release) = release else { return Ok(()) };
    let steps: Arc<Mutex<Vec<StepRecord>>> = Arc::default();
    let result = deploy_release(state, &project, &deployment, &release, steps.clone()).await;
    let (status, reason, serving_release, figures) = match result {
        Ok((status, reason, serving, figures)) => (status, reason, Some(serving), figures),
        // Nothing moved: what serves is as it was (the record is left alone).
        Err(reason) => (DeploymentStatus::Failed, Some(reason), None, Vec::new()),
    };
    let mut timeline =
        TimelineRecord { steps: steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(), figures };
    if let Some(reason) = &reason {
        tracing::warn!(deployment = deployment.id, %status, %reason, "deployment did not succeed");
        if timeline.steps.last().is_none_or(|s| !s.text.contains(reason.as_str())) {
            let at_ms = timeline.steps.last().map_or(0, |s| s.at_ms);
            timeline.steps.push(StepRecord { at_ms, text: format!("{status}: {reason}"), traffic_percent: None });
        }
    }
    let timeline_json = serde_json::to_string(&timeline).unwrap_or_else(|_| "{}".to_owned());
    state
        .store
        .finish_deployment(&deployment, status, reason.as_deref(), &timeline_json, serving_release)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

type Finished = (DeploymentStatus, Option<String>, Option<i64>, Vec<VersionFigures>);

/// Runs the deployment; returns its status, reason, the release serving afterwards and the
/// versions' figures. Errors are failures before any traffic moved.
async fn deploy_release(
    state: &AppState,
    project: &Project,
    deployment: &Deployment,
    release: &Release,
    steps: Arc<Mutex<Vec<StepRecord>>>,
) -> Result<Finished, String> {
    let config: ReleaseConfig =
        serde_json::from_str(&release.config).map_err(|e| format!("the release's configuration is unreadable: {e}"))?;
    let dir = release_dir(state, release);
    let (env, masked) = service_env(state, project, &deployment.environment, &config, &dir).await?;
    let log = service_logger(state, project.id, &deployment.environment, &deployment.service, masked)?;
    // One writer keeps the stored timeline current, always with the latest steps: writes
    // from separate tasks could land out of order and store an older list last.
    let (latest, mut written) = tokio::sync::watch::channel(String::new());
    {
        let store = state.store.clone();
        let id = deployment.id;
        tokio::spawn(async move {
            while written.changed().await.is_ok() {
                let json = written.borrow_and_update().clone();
                if let Err(error) = store.set_deployment_timeline(id, &json).await {
                    tracing::warn!(deployment = id, %error, "could not store the deployment's steps");
                }
            }
        });
    }
    let note = {
        let steps = steps.clone();
        let began = Instant::now();
        move |text: String, traffic_percent: Option<u32>| {
            let at_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(0);
            let record = StepRecord { at_ms, text, traffic_percent };
            let json = {
                let mut steps = steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                steps.push(record);
                serde_json::to_string(&TimelineRecord { steps: steps.clone(), figures: Vec::new() })
            };
            if let Ok(json) = json {
                let _ = latest.send(json);
            }
        }
    };
    let note = Arc::new(note);
    if let Some(build) = &config.build {
        let marker = dir.join(".opsloop-built");
        if !marker.exists() {
            note(format!("building: {build}"), None);
            build_release(build, &dir, &env, &log).await?;
            let _ = std::fs::write(&marker, b"");
        }
    }
    let route = route_name(&project.name, &deployment.environment, &deployment.service);
    let engine_release = config.engine_release(state, route.clone(), version_label(release), env, dir);
    let strategy = manifest::parse_strategy(&deployment.strategy).map_err(|error| error.to_string())?;
    let (host, path_prefix) = route_for(state, project, &config, &deployment.service, &deployment.environment).await?;
    let deployer = Deployer {
        proxy: state.deploy.proxy.clone(),
        host,
        path_prefix,
        slo: Slo {
            max_error_rate: config.max_error_rate,
            max_p99: Duration::from_millis(config.max_p99_ms),
            min_requests: config.min_requests,
        },
        bake: Duration::from_millis(config.bake_ms),
        health_timeout: config.start_timeout(state),
        log: log.clone(),
        on_step: Some({
            let note = note.clone();
            Arc::new(move |step: &Step| note(step.text.clone(), step.traffic))
        }),
        ports: state.config.deploy.ports,
    };
    let key: Key = (project.id, deployment.environment.clone(), deployment.service.clone());
    let hub = &state.deploy;
    let current = hub.take_serving(&key);
    let warm = hub.take_warm(&key, release.id);
    let old_label = current.as_ref().map(|live| live.running.version.clone());
    let before: Vec<(String, opsloop_deploy::Snapshot)> = [Some(engine_release.version.clone()), old_label.clone()]
        .into_iter()
        .flatten()
        .map(|label| {
            let snapshot = hub.proxy.signals().of(&route, &label).snapshot();
            (label, snapshot)
        })
        .collect();

    let (serving, retired, outcome) = match (current, warm) {
        // The release asked for is still warm: a route switch, no cold start.
        (Some(current), Some(warm)) => {
            note(format!("{} is still running (kept warm); switching traffic back to it", release.version), None);
            deployer.serve(&route, &warm.running);
            note(format!("100% of traffic to {}", warm.running.version), Some(100));
            (Some(Live { release_id: warm.release_id, running: warm.running }), Some(current), Outcome::Succeeded)
        }
        (current, warm) => {
            if let Some(warm) = warm {
                // Nothing serves, yet its release was warm: it cannot be (a restart stops
                // both), but should it be, it is started afresh instead.
                deployer.retire(warm.running).await;
            }
            match current {
                Some(current) => {
                    let current_id = current.release_id;
                    let deployed = deployer.deploy_keeping_old(current.running, &engine_release, &strategy).await;
                    let serving_id = if deployed.outcome == Outcome::Succeeded { release.id } else { current_id };
                    let retired = deployed.retired.map(|running| Live { release_id: current_id, running });
                    (Some(Live { release_id: serving_id, running: deployed.serving }), retired, deployed.outcome)
                }
                None => {
                    let (running, outcome, _) = deployer.deploy_first(&engine_release).await;
                    (running.map(|running| Live { release_id: release.id, running }), None, outcome)
                }
            }
        }
    };
    let figures = before
        .iter()
        .map(|(label, start)| {
            let window = hub.proxy.signals().of(&route, label).snapshot().since(start);
            let ms = |q: f64| window.latency_quantile(q).map(|d| d.as_secs_f64() * 1000.0);
            VersionFigures {
                version: label.clone(),
                requests: window.requests,
                errors: window.errors,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
            }
        })
        .collect();
    if let Some(retired) = retired {
        if config.keep_warm_ms > 0 {
            let until = Instant::now() + Duration::from_millis(config.keep_warm_ms);
            note(
                format!(
                    "{} kept warm for {} s for an instant rollback",
                    retired.running.version,
                    config.keep_warm_ms / 1000
                ),
                None,
            );
            keep_warm(state, key.clone(), Warm { release_id: retired.release_id, running: retired.running, until });
        } else {
            deployer.retire(retired.running).await;
        }
    }
    let serving_id = serving.as_ref().map(|live| live.release_id);
    if let Some(live) = serving {
        hub.put_serving(key, live);
    }
    Ok(match outcome {
        Outcome::Succeeded => (DeploymentStatus::Success, None, serving_id, figures),
        Outcome::RolledBack { reason } => (DeploymentStatus::RolledBack, Some(reason), serving_id, figures),
        Outcome::Failed { reason } => (DeploymentStatus::Failed, Some(reason), serving_id, figures),
    })
}

/// Keeps `warm` running out of the route until its time is up (unless a rollback takes it
/// first, or a newer version takes its place).
fn keep_warm(state: &AppState, key: Key, warm: Warm) {
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

async fn stop_running(running: Running) {
    for instance in running.instances {
        instance.stop().await;
    }
}

/// The service's environment: `opsloop.yml`'s `env`, then its `secrets` from the project's
/// (or the instance's) CI/CD variables for this environment (an exact environment scope
/// wins over `*`, a project's over the instance's), then the release marker. Returns the
/// secret values too, for masking.
async fn service_env(
    state: &AppState,
    project: &Project,
    environment: &str,
    config: &ReleaseConfig,
    dir: &Path,
) -> Result<(Vec<(String, String)>, Vec<String>), String> {
    use crate::api::variables::{Owner, reveal};
    let mut env = config.env.clone();
    let mut masked = Vec::new();
    if !config.secrets.is_empty() {
        let instance = state.store.list_instance_variables().await.map_err(|e| e.to_string())?;
        let own = state.store.list_variables(project.id).await.map_err(|e| e.to_string())?;
        for name in &config.secrets {
            // Rank: project over instance, exact scope over `*`.
            let candidates = own
                .iter()
                .map(|v| (Owner::Project(project.id), v, 2))
                .chain(instance.iter().map(|v| (Owner::Instance, v, 0)))
                .filter(|(_, v, _)| {
                    &v.key == name && (v.environment_scope == "*" || v.environment_scope == environment)
                })
                .filter(|(_, v, _)| !v.protected || config.protected_environment)
                .map(|(owner, v, rank)| (owner, v, rank + usize::from(v.environment_scope == environment)));
            let Some((owner, variable, _)) = candidates.max_by_key(|(_, _, rank)| *rank) else {
                return Err(format!(
                    "secret `{name}` is not a CI/CD variable of this project for `{environment}` \
                     (protected variables go only to protected environments)"
                ));
            };
            let value = reveal(state, owner, variable).map_err(|e| e.message)?;
            if !value.is_empty() {
                masked.push(value.clone());
            }
            env.push((name.clone(), value));
        }
    }
    env.push((INSTANCE_MARKER.to_owned(), dir.display().to_string()));
    Ok((env, masked))
}

/// A log sink appending `[instance] line` to the service's log file, secrets masked.
fn service_logger(
    state: &AppState,
    project_id: i64,
    environment: &str,
    service: &str,
    masked: Vec<String>,
) -> Result<opsloop_deploy::supervisor::LogSink, String> {
    let path = service_log(state, project_id, environment, service);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let file = Mutex::new(file);
    let masker = opsloop_runner::mask::Masker::new(masked);
    Ok(Arc::new(move |instance: &str, line: &str| {
        let line = masker.mask(line);
        let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(file, "[{instance}] {line}");
    }))
}

async fn build_release(
    build: &str,
    dir: &Path,
    env: &[(String, String)],
    log: &opsloop_deploy::supervisor::LogSink,
) -> Result<(), String> {
    // The command is the project's own, from its repository, run as a pipeline job's script
    // would be; nothing from a request is spliced into it.
    let output = tokio::process::Command::new("bash")
        .args(["-c", build])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(1800), output)
        .await
        .map_err(|_| "the build ran longer than 30 minutes".to_owned())?
        .map_err(|e| format!("cannot run the build: {e}"))?;
    for line in String::from_utf8_lossy(&output.stdout).lines().chain(String::from_utf8_lossy(&output.stderr).lines()) {
        log("build", line);
    }
    if output.status.success() { Ok(()) } else { Err(format!("the build failed ({})", output.status)) }
}

/// Where a service is reached in an environment: the route of the manifest applied from the
/// default branch (GitOps), else the release's own.
async fn route_for(
    state: &AppState,
    project: &Project,
    config: &ReleaseConfig,
    service: &str,
    environment: &str,
) -> Result<(Option<String>, String), String> {
    let (host, path) =
        match crate::gitops::applied_desired(state, project.id).await.and_then(|d| d.route(service, environment)) {
            Some(route) => route,
            None => config.route(&project.name, service, environment),
        };
    // A host and path belong to one service in one environment of one project.
    let own = route_name(&project.name, environment, service);
    if let Some(taken) = state.deploy.proxy.routes().into_iter().find(|r| {
        // A stopped service's route (no backends) holds its place but claims nothing.
        r.host == host && r.path_prefix == path && r.service != own && !r.backends.is_empty()
    }) {
        return Err(format!(
            "{}{path} is already the route of {}; give this service another host or path in opsloop.yml",
            host.as_deref().unwrap_or("any host "),
            taken.service
        ));
    }
    Ok((host, path))
}

/// Stops what serves `service` in `environment` (and its warm version) and drops its route.
/// Under the environment's turn, so no deployment runs in between; the record that it
/// serves goes too.
pub(crate) async fn stop_service(
    state: &AppState,
    project: &Project,
    environment: &str,
    service: &str,
    actor: Actor<'_>,
) -> Result<(), ApiError> {
    let turn = state.deploy.turn(project.id, environment);
    let _turn = turn.lock().await;
    let key: Key = (project.id, environment.to_owned(), service.to_owned());
    let route =
        state.deploy.proxy.routes().into_iter().find(|r| r.service == route_name(&project.name, environment, service));
    if let Some(route) = route {
        // Kept without backends, not removed: `staging.localhost` must not fall through to the
        // any-host route of production once staging stops.
        state.deploy.proxy.set_route(opsloop_deploy::Route { backends: Vec::new(), ..route });
    }
    let warm = state.deploy.warm.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
    for running in state.deploy.take_serving(&key).map(|l| l.running).into_iter().chain(warm.map(|w| w.running)) {
        // Out of the route now: what it is still answering passes whole before it stops.
        opsloop_deploy::strategy::drain(state.deploy.proxy.signals(), &running.instances).await;
        stop_running(running).await;
    }
    state.store.remove_serving(project, environment, service, actor).await?;
    tracing::info!(project = %project.name, environment, service, "stopped");
    Ok(())
}

/// What stopping an environment did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stopped {
    /// The services stopped here and now.
    pub services: Vec<String>,
    /// The `on_stop` job played instead (GitLab's `environment:on_stop`): it stops them.
    pub on_stop_job: Option<i64>,
}

/// Stops `service` (or every service) in `environment`. A person stopping a whole
/// environment that a pipeline deployed, whose deploy job names an `on_stop` job, gets that
/// manual job played instead (it runs `opsloop stop` with the pipeline's token); a pipeline's
/// own call, or an environment without one, is stopped here.
pub async fn stop_environment(
    state: &AppState,
    principal: &crate::auth::Principal,
    context: &crate::auth::ProjectContext,
    environment: &str,
    service: Option<&str>,
) -> Result<Stopped, ApiError> {
    let project = &context.project;
    guarded_environment(state, project, environment, context.role).await?;
    let from_pipeline = matches!(principal.credential, crate::auth::Credential::Pipeline { .. });
    if !from_pipeline
        && service.is_none()
        && let Some(job) = on_stop_job(state, project, environment).await?
    {
        let played = crate::api::pipelines::run_again(state, principal, context, job, true).await?;
        return Ok(Stopped { services: Vec::new(), on_stop_job: Some(played.id) });
    }
    let serving = state.store.serving_releases(Some(project.id)).await?;
    let mut stopped = Vec::new();
    for entry in serving.iter().filter(|s| s.environment == environment && service.is_none_or(|name| s.service == name))
    {
        stop_service(state, project, environment, &entry.service, principal.actor()).await?;
        stopped.push(entry.service.clone());
    }
    Ok(Stopped { services: stopped, on_stop_job: None })
}

/// The manual `on_stop` job of the pipeline that last deployed to `environment`, if any.
async fn on_stop_job(state: &AppState, project: &Project, environment: &str) -> Result<Option<i64>, ApiError> {
    let Some(pipeline_id) = state.store.deploying_pipeline(project.id, environment).await? else { return Ok(None) };
    let recorded: Vec<serde_json::Value> =
        serde_json::from_str(&state.store.pipeline_environments(pipeline_id).await?).unwrap_or_default();
    let Some(stop_name) = recorded
        .iter()
        .find(|e| e["environment"] == environment && e["on_stop"].is_string())
        .and_then(|e| e["on_stop"].as_str().map(str::to_owned))
    else {
        return Ok(None);
    };
    let jobs = state.store.jobs_of(pipeline_id).await?;
    Ok(jobs.into_iter().find(|j| j.name == stop_name && j.status == opsloop_core::JobStatus::Manual).map(|j| j.id))
}

/// Puts what serves `service` in `environment` behind a new host and path, dropping its old
/// route; false when nothing serves it here.
pub(crate) async fn move_route(
    state: &AppState,
    project: &Project,
    environment: &str,
    service: &str,
    host: Option<String>,
    path_prefix: String,
) -> bool {
    let name = route_name(&project.name, environment, service);
    let old = state.deploy.proxy.routes().into_iter().find(|r| r.service == name);
    let Some(old) = old else { return false };
    if old.host == host && old.path_prefix == path_prefix {
        return true;
    }
    let routes = state.deploy.proxy.routes();
    if let Some(taken) = routes
        .iter()
        .find(|r| r.host == host && r.path_prefix == path_prefix && r.service != old.service && !r.backends.is_empty())
    {
        tracing::warn!(route = %old.service, taken_by = %taken.service, "the new route is another service's; not moved");
        return false;
    }
    let new = opsloop_deploy::Route { host, path_prefix, service: name, backends: old.backends.clone() };
    state.deploy.proxy.set_route(new);
    state.deploy.proxy.remove_route(old.host.as_deref(), &old.path_prefix);
    true
}

/// At start: deployments a stopped process left running fail; instances it left behind are
/// killed; every environment's serving release starts again and takes its route; queued
/// deployments run.
pub async fn restore(state: &AppState) {
    let interrupted =
        match state.store.fail_interrupted_deployments("interrupted: opsloop stopped during the deployment").await {
            Ok(interrupted) => interrupted,
            Err(error) => {
                tracing::error!(%error, "cannot read the deployments left running");
                Vec::new()
            }
        };
    for deployment in &interrupted {
        tracing::warn!(deployment = deployment.id, service = %deployment.service, environment = %deployment.environment,
            "a deployment was interrupted by a restart; the release serving before it serves again");
    }
    let root = releases_dir(state);
    let killed = opsloop_runner::reap::kill_marked(INSTANCE_MARKER, &root);
    if killed > 0 {
        tracing::info!(processes = killed, "stopped the service instances an earlier run left behind");
    }
    let serving = state.store.serving_releases(None).await.unwrap_or_default();
    for entry in serving {
        if let Err(message) = start_serving(state, &entry).await {
            tracing::error!(project = entry.project_id, environment = %entry.environment, service = %entry.service,
                %message, "could not start a service again");
        }
    }
    for deployment in state.store.queued_deployments().await.unwrap_or_default() {
        spawn_run(state, deployment);
    }
    // What `opsloop.yml` routes but nothing serves answers 503 after a restart too.
    let mut page = opsloop_store::PageRequest::first(opsloop_store::PageRequest::MAX_LIMIT);
    loop {
        let Ok(projects) = state.store.list_projects(None, &page).await else { break };
        for project in &projects.items {
            hold_idle_routes(state, project).await;
        }
        match projects.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
}

/// Gives every route of the project's applied `opsloop.yml` whose service does not run in its
/// environment (never deployed, or stopped) a place in the proxy without backends, which
/// answers 503: `staging.localhost` must not fall through to production's any-host route.
/// A host and path another service serves is left to it.
pub(crate) async fn hold_idle_routes(state: &AppState, project: &Project) {
    let Some(desired) = crate::gitops::applied_desired(state, project.id).await else { return };
    let routes = state.deploy.proxy.routes();
    for key in desired.routes.keys() {
        let Some((service, environment)) = key.split_once('@') else { continue };
        let Some((host, path_prefix)) = desired.route(service, environment) else { continue };
        let name = route_name(&project.name, environment, service);
        let placed = routes.iter().any(|r| r.service == name);
        let taken = routes.iter().any(|r| r.host == host && r.path_prefix == path_prefix);
        if !placed && !taken {
            state.deploy.proxy.set_route(opsloop_deploy::Route {
                host,
                path_prefix,
                service: name,
                backends: Vec::new(),
            });
        }
    }
}

async fn start_serving(state: &AppState, entry: &opsloop_store::ServingRelease) -> Result<(), String> {
    // In the environment's turn: a deployment asked for meanwhile waits, and one that ran
    // first (so something serves already) is not undone.
    let turn = state.deploy.turn(entry.project_id, &entry.environment);
    let _turn = turn.lock().await;
    let key: Key = (entry.project_id, entry.environment.clone(), entry.service.clone());
    if state.deploy.serving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(&key) {
        return Ok(());
    }
    let project = state.store.project_by_id(entry.project_id).await.map_err(|e| e.to_string())?.ok_or("no project")?;
    let release = state.store.release(entry.release_id).await.map_err(|e| e.to_string())?.ok_or("no release")?;
    let config: ReleaseConfig = serde_json::from_str(&release.config).map_err(|e| e.to_string())?;
    let dir = release_dir(state, &release);
    let (env, masked) = service_env(state, &project, &entry.environment, &config, &dir).await?;
    let log = service_logger(state, project.id, &entry.environment, &entry.service, masked)?;
    let route = route_name(&project.name, &entry.environment, &entry.service);
    let (host, path_prefix) = route_for(state, &project, &config, &entry.service, &entry.environment).await?;
    let deployer = Deployer {
        proxy: state.deploy.proxy.clone(),
        host,
        path_prefix,
        slo: Slo { max_error_rate: 1.0, max_p99: Duration::MAX, min_requests: u64::MAX },
        bake: Duration::ZERO,
        health_timeout: config.start_timeout(state),
        log,
        on_step: None,
        ports: state.config.deploy.ports,
    };
    let engine_release = config.engine_release(state, route.clone(), version_label(&release), env, dir);
    let running = deployer.start(&engine_release).await.map_err(|error| error.to_string())?;
    deployer.serve(&route, &running);
    tracing::info!(route, version = %release.version, "serving again after a restart");
    state.deploy.put_serving(
        (project.id, entry.environment.clone(), entry.service.clone()),
        Live { release_id: release.id, running },
    );
    Ok(())
}

/// The fields of two releases' configurations that differ: `(field, before, after)`.
pub fn config_changes(before: &str, after: &str) -> Vec<crate::config_diff::FieldChange> {
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap_or_default();
    crate::config_diff::field_changes(&parse(before), &parse(after))
}

/// `git log --oneline old..new` in the project's mirror (at most 50 commits).
pub async fn commits_between(state: &AppState, project: &opsloop_store::Project, old: &str, new: &str) -> Vec<String> {
    if old == new {
        return Vec::new();
    }
    let mirror = crate::mirror::mirror_dir(state, project.id, &project.repo_url);
    let range = format!("{old}..{new}");
    let listed = crate::mirror::git(
        &mirror,
        &["log", "--oneline", "--no-decorate", "--max-count=50", &range, "--"],
        std::time::Duration::from_secs(10),
    )
    .await;
    listed.map(|text| text.lines().map(str::to_owned).collect()).unwrap_or_default()
}

/// What changed from one deployment's release to another's: the commits between them and the
/// configuration's fields.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    pub from_version: String,
    pub from_commit: String,
    pub to_version: String,
    pub to_commit: String,
    /// `git log --oneline from..to` (at most 50).
    pub commits: Vec<String>,
    /// `(setting, before, after)`.
    pub changes: Vec<crate::config_diff::FieldChange>,
}

/// Compares the releases of two deployments of `project`.
pub async fn compare(state: &AppState, project: &Project, from: i64, to: i64) -> Result<Comparison, ApiError> {
    let mut releases = Vec::new();
    for id in [from, to] {
        let deployment = match state.store.deployment(id).await? {
            Some(deployment) if deployment.project_id == project.id => deployment,
            _ => return Err(ApiError::not_found("deployment")),
        };
        releases.push(state.store.release(deployment.release_id).await?.ok_or_else(|| ApiError::not_found("release"))?);
    }
    let (before, after) = (&releases[0], &releases[1]);
    Ok(Comparison {
        from_version: before.version.clone(),
        from_commit: before.commit_sha.clone(),
        to_version: after.version.clone(),
        to_commit: after.commit_sha.clone(),
        commits: commits_between(state, project, &before.commit_sha, &after.commit_sha).await,
        changes: config_changes(&before.config, &after.config),
    })
}

/// Removes the files of releases nothing needs: not serving, not kept warm, not wanted by a
/// deployment that has yet to end, not among the `keep_newest` newest of their service (a
/// rollback target), and older than `min_age` (a release being unpacked is younger). Leftover
/// checkouts of requests cut short go too. Returns how many directories went.
pub async fn sweep_releases(state: &AppState, keep_newest: usize, min_age: Duration) -> usize {
    let mut needed: Vec<i64> = match state.store.serving_releases(None).await {
        Ok(serving) => serving.into_iter().map(|s| s.release_id).collect(),
        Err(_) => return 0,
    };
    match state.store.releases_in_use().await {
        Ok(in_use) => needed.extend(in_use),
        Err(_) => return 0,
    }
    needed.extend(
        state.deploy.warm.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().map(|w| w.release_id),
    );
    let mut keep = std::collections::HashSet::new();
    for id in needed {
        if let Ok(Some(release)) = state.store.release(id).await {
            keep.insert(release_dir(state, &release));
        }
    }
    let root = releases_dir(state);
    tokio::task::spawn_blocking(move || {
        let old_enough = |path: &Path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().unwrap_or_default() >= min_age)
        };
        let entries = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir).map(|read| read.flatten().map(|e| e.path()).collect()).unwrap_or_default()
        };
        let mut removed = 0;
        for project in entries(&root) {
            for dir in entries(&project) {
                let leftover = dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".checkout-"));
                if leftover {
                    if old_enough(&dir) && std::fs::remove_dir_all(&dir).is_ok() {
                        removed += 1;
                    }
                    continue;
                }
                // A service: its releases, newest first.
                let mut releases = entries(&dir);
                releases.sort_by_key(|path| std::cmp::Reverse(std::fs::metadata(path).and_then(|m| m.modified()).ok()));
                for release in releases.into_iter().skip(keep_newest) {
                    if !keep.contains(&release) && old_enough(&release) && std::fs::remove_dir_all(&release).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    })
    .await
    .unwrap_or(0)
}

/// Sweeps release files every ten minutes, keeping the five newest of each service.
pub async fn sweep_releases_forever(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(600));
    loop {
        interval.tick().await;
        let removed = sweep_releases(&state, 5, Duration::from_secs(3600)).await;
        if removed > 0 {
            tracing::info!(removed, "removed the files of releases nothing needs");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> ReleaseConfig {
        let (manifest, problems) = manifest::parse(yaml);
        assert!(problems.is_empty(), "{problems:?}");
        let stored = serde_json::to_value(ReleaseConfig::of(&manifest.services[0], &manifest)).unwrap();
        serde_json::from_value(stored).unwrap()
    }

    #[test]
    fn check_timing_set_in_opsloop_yml_is_kept_with_the_release() {
        let set = config(
            "services:\n  web:\n    command: [x]\n    health: {http: /health, interval: 1s, timeout: 3s}\n    \
             liveness: {tcp: true, interval: 5s, timeout: 1s}\n",
        );
        assert_eq!(
            set.readiness(),
            opsloop_deploy::supervisor::Probing { interval: Duration::from_secs(1), timeout: Duration::from_secs(3) }
        );
        assert_eq!(set.liveness().unwrap().timeout, Duration::from_secs(1));

        // Unset, nothing new is stored: a release recorded before these settings existed
        // compares equal, so GitOps redeploys nothing.
        let unset = ReleaseConfig::of(
            &manifest::parse("services:\n  web:\n    command: [x]\n    liveness: {command: 'true'}\n").0.services[0],
            &Manifest::default(),
        );
        let stored = serde_json::to_value(&unset).unwrap();
        assert!(stored.get("health_interval_ms").is_none() && stored.get("liveness_timeout_ms").is_none());
        let read: ReleaseConfig = serde_json::from_value(stored).unwrap();
        assert_eq!(read.readiness().timeout, Duration::from_secs(2));
        assert_eq!(read.liveness().unwrap().timeout, Duration::from_secs(5));
    }
}
