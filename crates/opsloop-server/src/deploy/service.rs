//! The deployments service: what the API and the UI call. It decides (the default branch's
//! guards, approvals, rollbacks, stopping an environment, comparing releases) and answers in
//! [`DeployError`]; the handlers only translate.

use super::*;

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
pub(super) fn unavailable(message: String) -> DeployError {
    DeployError::ReleaseUnavailable(message)
}

pub(crate) async fn checkout(state: &AppState, project: &Project, git_ref: &str) -> Result<Checkout, DeployError> {
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
pub(super) async fn guarded_environment(
    state: &AppState,
    project: &Project,
    name: &str,
    role: opsloop_core::Role,
) -> Result<manifest::Environment, DeployError> {
    let governing = checkout(state, project, &project.default_branch).await?;
    let _ = tokio::fs::remove_dir_all(&governing.dir).await;
    let Some(environment) = governing.manifest.environments.into_iter().find(|e| e.name == name) else {
        return Err(DeployError::Invalid(format!(
            "no environment `{name}` in {MANIFEST_FILE} on {}",
            project.default_branch
        )));
    };
    if environment.protected && role < opsloop_core::Role::Maintainer {
        return Err(DeployError::Forbidden(format!(
            "`{name}` is protected: deploying to it needs the maintainer role"
        )));
    }
    if let Some(freeze) =
        environment.frozen_at(jiff::Timestamp::from_millisecond(state.clock.now_ms()).unwrap_or_default())
    {
        return Err(DeployError::Frozen(format!("`{name}` is in a deploy freeze until {}", freeze.to)));
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
) -> Result<Deployment, DeployError> {
    let environment = guarded_environment(state, project, &request.environment, role).await?;
    if let Some(strategy) = &request.strategy {
        manifest::parse_strategy(strategy).map_err(|error| DeployError::Invalid(error.to_string()))?;
    }
    let git_ref = request.version.clone().unwrap_or_else(|| project.default_branch.clone());
    let checkout = checkout(state, project, &git_ref).await?;
    let Some(service) = checkout.manifest.services.iter().find(|s| s.name == request.service) else {
        let _ = tokio::fs::remove_dir_all(&checkout.dir).await;
        let known: Vec<&str> = checkout.manifest.services.iter().map(|s| s.name.as_str()).collect();
        return Err(DeployError::Invalid(format!(
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
    let config_json = serde_json::to_string(&config)
        .map_err(|e| DeployError::Internal(format!("cannot encode a release's configuration: {e}")))?;
    let release =
        state.store.create_release(project.id, &request.service, &version, &checkout.sha, &config_json).await?;
    let target = release_dir(state, &release);
    if target.exists() {
        let _ = tokio::fs::remove_dir_all(&checkout.dir).await;
    } else {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| DeployError::Internal(format!("cannot create {}: {e}", parent.display())))?;
        }
        if let Err(error) = tokio::fs::rename(&checkout.dir, &target).await {
            // The same commit, released by a request at the same moment, got there first.
            let _ = tokio::fs::remove_dir_all(&checkout.dir).await;
            if !target.exists() {
                return Err(DeployError::Internal(format!("cannot keep a release's files: {error}")));
            }
        }
    }
    let strategy = request.strategy.clone().unwrap_or_else(|| config.strategy.clone());
    queue(state, project, &release, &request, &strategy, environment.approvals, actor).await
}

pub(super) async fn queue(
    state: &AppState,
    project: &Project,
    release: &Release,
    request: &DeployRequest,
    strategy: &str,
    approvals: u32,
    actor: Actor<'_>,
) -> Result<Deployment, DeployError> {
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
) -> Result<Deployment, DeployError> {
    let deployment = match state.store.deployment(deployment_id).await? {
        Some(deployment) if deployment.project_id == project.id => deployment,
        _ => return Err(DeployError::NotFound { what: "deployment" }),
    };
    if deployment.status != DeploymentStatus::WaitingApproval {
        return Err(DeployError::NotWaiting(format!(
            "deployment #{deployment_id} is {}, not waiting for approval",
            deployment.status
        )));
    }
    if matches!(principal_credential, crate::auth::Credential::Pipeline { .. }) {
        return Err(DeployError::Forbidden("a pipeline does not approve deployments; a person does".to_owned()));
    }
    let requester = &deployment.triggered_by;
    if requester == approver || requester.starts_with(&format!("{approver} ")) {
        return Err(DeployError::Forbidden(
            "a deployment is approved by someone other than who asked for it".to_owned(),
        ));
    }
    let environment = guarded_environment(state, project, &deployment.environment, role).await?;
    let needed = i64::from(environment.approvals.max(1));
    if state.store.approve_deployment(project, deployment_id, needed, actor).await? {
        let queued =
            state.store.deployment(deployment_id).await?.ok_or_else(|| DeployError::NotFound { what: "deployment" })?;
        spawn_run(state, queued);
    }
    state.store.deployment(deployment_id).await?.ok_or_else(|| DeployError::NotFound { what: "deployment" })
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
) -> Result<Deployment, DeployError> {
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
            .ok_or_else(|| {
                DeployError::Invalid(format!("`{service}` was never deployed to `{environment}` as `{to}`"))
            })?,
        None => history
            .iter()
            .find(|d| d.status == DeploymentStatus::Success && Some(d.release_id) != serving)
            .map(|d| d.release_id)
            .ok_or_else(|| {
                DeployError::Invalid(format!("no earlier release of `{service}` in `{environment}` to go back to"))
            })?,
    };
    let release = state.store.release(target).await?.ok_or_else(|| DeployError::NotFound { what: "release" })?;
    if !release_dir(state, &release).exists() {
        return Err(DeployError::Invalid(format!(
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
) -> Result<Stopped, DeployError> {
    let project = &context.project;
    guarded_environment(state, project, environment, context.role).await?;
    let from_pipeline = matches!(principal.credential, crate::auth::Credential::Pipeline { .. });
    if !from_pipeline
        && service.is_none()
        && let Some(job) = on_stop_job(state, project, environment).await?
    {
        let (job, _) = state.store.job_by_id(job).await?.ok_or(DeployError::NotFound { what: "job" })?;
        let pipeline =
            state.store.pipeline_by_id(job.pipeline_id).await?.ok_or(DeployError::NotFound { what: "pipeline" })?;
        let played = crate::ci::run_again(state, principal, project, job, &pipeline, crate::ci::Again::Play).await?;
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
pub(super) async fn on_stop_job(
    state: &AppState,
    project: &Project,
    environment: &str,
) -> Result<Option<i64>, DeployError> {
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
pub async fn compare(state: &AppState, project: &Project, from: i64, to: i64) -> Result<Comparison, DeployError> {
    let mut releases = Vec::new();
    for id in [from, to] {
        let deployment = match state.store.deployment(id).await? {
            Some(deployment) if deployment.project_id == project.id => deployment,
            _ => return Err(DeployError::NotFound { what: "deployment" }),
        };
        releases.push(
            state
                .store
                .release(deployment.release_id)
                .await?
                .ok_or_else(|| DeployError::NotFound { what: "release" })?,
        );
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
