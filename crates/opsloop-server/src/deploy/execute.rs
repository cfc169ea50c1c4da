//! Running a queued deployment: its environment's turn, the claim, the engine's strategy
//! with the release's instances, and the record of how it ended.

use super::*;

pub(super) fn spawn_run(state: &AppState, deployment: Deployment) {
    let state = state.clone();
    tokio::spawn(async move {
        let id = deployment.id;
        if let Err(message) = run(&state, deployment).await {
            tracing::error!(deployment = id, %message, "a deployment could not run");
        }
    });
}

pub(super) async fn run(state: &AppState, deployment: Deployment) -> Result<(), String> {
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

pub(super) type Finished = (DeploymentStatus, Option<String>, Option<i64>, Vec<VersionFigures>);

/// Runs the deployment; returns its status, reason, the release serving afterwards and the
/// versions' figures. Errors are failures before any traffic moved.
pub(super) async fn deploy_release(
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

/// The service's environment: `opsloop.yml`'s `env`, then its `secrets` from the project's
/// (or the instance's) CI/CD variables for this environment (an exact environment scope
/// wins over `*`, a project's over the instance's), then the release marker. Returns the
/// secret values too, for masking.
pub(super) async fn service_env(
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
pub(super) fn service_logger(
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

/// Where a service is reached in an environment: the route of the manifest applied from the
/// default branch (GitOps), else the release's own.
pub(super) async fn route_for(
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
