//! What serves each environment across restarts: the releases brought back at start, and the
//! routes held, moved and stopped so no request reaches another environment's service.

use super::*;

/// Stops what serves `service` in `environment` (and its warm version) and drops its route.
/// Under the environment's turn, so no deployment runs in between; the record that it
/// serves goes too.
pub(crate) async fn stop_service(
    state: &AppState,
    project: &Project,
    environment: &str,
    service: &str,
    actor: Actor<'_>,
) -> Result<(), DeployError> {
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

pub(super) async fn start_serving(state: &AppState, entry: &opsloop_store::ServingRelease) -> Result<(), String> {
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
