//! Deployment pages: a project's environments (which version runs where, its health, since
//! when), a deploy form, the history, and one deployment's page (its steps, the traffic
//! share over them, the old and new version's golden signals side by side, what changed
//! since the previous release, and a rollback button).

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use opsloop_core::{DeploymentStatus, Role};
use serde::Deserialize;

use super::pipelines::{auto_refresh, status_badge};
use super::{csrf_field, error_box, failure, layout};
use crate::auth::{Principal, ProjectContext};
use crate::deploy::{self, DeployRequest, ReleaseConfig, RollbackRequest, TimelineRecord, VersionFigures};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::human_time;

#[derive(Debug, Deserialize)]
pub struct DeployForm {
    service: String,
    environment: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    strategy: String,
}

#[derive(Debug, Deserialize)]
pub struct RollbackForm {
    service: String,
    environment: String,
    #[serde(default)]
    to: String,
}

#[derive(Debug, Deserialize)]
pub struct DeploymentPath {
    #[allow(dead_code)]
    project: String,
    deployment: i64,
}

fn running(status: &DeploymentStatus) -> bool {
    matches!(status, DeploymentStatus::Queued | DeploymentStatus::Running)
}

#[derive(Debug, Deserialize)]
pub struct StopForm {
    #[serde(default)]
    service: String,
}

#[derive(Debug, Deserialize)]
pub struct EnvironmentPath {
    #[allow(dead_code)]
    project: String,
    environment: String,
}

pub async fn stop_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<EnvironmentPath>,
    Form(form): Form<StopForm>,
) -> Response {
    let service = Some(form.service.trim()).filter(|s| !s.is_empty());
    if opsloop_core::validate_name("environment", &path.environment).is_err()
        || service.is_some_and(|s| opsloop_core::validate_name("service", s).is_err())
    {
        return render_environments(&state, &principal, &context, Some("that is no service or environment name")).await;
    }
    match deploy::stop_environment(&state, &principal, &context, &path.environment, service).await {
        Ok(_) => Redirect::to(&format!("/projects/{}/environments", context.project.name)).into_response(),
        Err(error) => render_environments(&state, &principal, &context, Some(&error.to_string())).await,
    }
}

pub async fn approve_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<DeploymentPath>,
) -> Response {
    let approved = deploy::approve(
        &state,
        &context.project,
        context.role,
        path.deployment,
        &principal.user.username,
        &principal.credential,
        principal.actor(),
    )
    .await;
    match approved {
        Ok(_) => {
            Redirect::to(&format!("/projects/{}/deployments/{}", context.project.name, path.deployment)).into_response()
        }
        Err(error) => failure(error),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// A release's version with its commit: once when the version is the commit itself (a release
/// cut from a branch is named by its short commit), both when they differ (`1.2.0 7ea179aad04a`).
/// The commit is `code.sha` so that it wraps (or is cut short) on a narrow screen.
pub(crate) fn version_and_commit(version: &str, commit: &str) -> Markup {
    let same = !version.is_empty() && (commit.starts_with(version) || version.starts_with(short(commit)));
    html! {
        @if same { code.sha title=(commit) { (version) } }
        @else { (version) " " code.sha.muted title=(commit) { (short(commit)) } }
    }
}

/// The Deployments area: the newest deployments of every project the viewer can see, each
/// linking to its page (a project's own history is on its Environments page).
pub async fn overview(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    const SHOWN: usize = 50;
    let member = if principal.user.is_admin { None } else { Some(principal.user.id) };
    let projects = match state.store.list_projects(member, &opsloop_store::PageRequest::first(100)).await {
        Ok(page) => page.items,
        Err(error) => return failure(error),
    };
    // The newest `SHOWN` of each project, merged: enough for the newest `SHOWN` overall.
    let mut recent = Vec::new();
    for project in &projects {
        match state.store.list_deployments(project.id, None, None, SHOWN as i64).await {
            Ok(deployments) => recent.extend(deployments.into_iter().map(|d| (project.name.as_str(), d))),
            Err(error) => return failure(error),
        }
    }
    recent.sort_by(|(_, a), (_, b)| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    recent.truncate(SHOWN);
    layout("Deployments", Some(&principal), "/deployments", html! {
        @if recent.iter().any(|(_, d)| running(&d.status) || d.status == DeploymentStatus::WaitingApproval) { (auto_refresh(3)) }
        h1 { "Deployments" }
        p.hint { "The newest deployments of your projects. Deploy, roll back and stop from a project's Environments page." }
        @if recent.is_empty() {
            @if projects.is_empty() {
                p.muted { "No projects yet: " a href="/projects#new-project" { "create one" } "." }
            } @else {
                p.muted { "No deployments yet. A pipeline job deploys with " code { "opsloop deploy" } ", or deploy from a project's Environments page:" }
                ul { @for project in &projects { li { a href={ "/projects/" (project.name) "/environments" } { "Environments of " (project.name) } } } }
            }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Deployment" } th scope="col" { "Project" } th scope="col" { "Status" }
                    th scope="col" { "Environment" } th scope="col" { "Service" } th scope="col" { "Version" }
                    th scope="col" { "By" } th scope="col" { "Created" }
                } }
                tbody {
                    @for (project, deployment) in &recent {
                        tr {
                            td { a href={ "/projects/" (project) "/deployments/" (deployment.id) } { "#" (deployment.id) } }
                            td { a href={ "/projects/" (project) "/environments" } { (project) } }
                            td { (status_badge(deployment.status)) }
                            td { (deployment.environment) }
                            td { (deployment.service) }
                            td { (version_and_commit(&deployment.version, &deployment.commit_sha)) }
                            td { (deployment.triggered_by) }
                            td { (human_time(deployment.created_at)) }
                        }
                    }
                }
            }
        }
    })
    .into_response()
}

pub async fn environments(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
) -> Response {
    render_environments(&state, &principal, &context, None).await
}

async fn render_environments(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    error: Option<&str>,
) -> Response {
    let project = &context.project;
    let serving = match crate::api::deployments::serving(state, project.id).await {
        Ok(serving) => serving,
        Err(error) => return failure(error),
    };
    let history = match state.store.list_deployments(project.id, None, None, 50).await {
        Ok(history) => history,
        Err(error) => return failure(error),
    };
    let base = format!("/projects/{}", project.name);
    let can_deploy = context.role >= Role::Developer;
    let proxy = state.deploy.proxy_address.get().map(|address| format!("http://{address}"));
    layout(&format!("{} · environments", project.name), Some(principal), "/projects", html! {
        @if history.iter().any(|d| running(&d.status)) { (auto_refresh(2)) }
        p { a href=(base) { "← " (project.name) } }
        h1 { "Environments of " (project.name) }
        p.hint {
            "Services and environments come from " code { "opsloop.yml" } " in the repository. "
            @if let Some(proxy) = &proxy { "They are reached through opsloop's proxy at " code { (proxy) } "." }
        }
        (error_box(error))
        @if serving.is_empty() {
            p.muted { "Nothing is deployed yet." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Environment" } th scope="col" { "Service" } th scope="col" { "Version" }
                    th scope="col" { "Health" } th scope="col" { "Since" } th scope="col" { "Signals" }
                    @if can_deploy { th scope="col" { span.muted { "Actions" } } }
                } }
                tbody {
                    @for entry in &serving {
                        tr {
                            td { (entry.environment) }
                            td { (entry.service) }
                            td { a href={ (base) "/deployments/" (entry.deployment_id) } { (version_and_commit(&entry.version, &entry.commit)) } }
                            td {
                                @if entry.instances > 0 && entry.healthy == entry.instances {
                                    span.badge.status-success { "healthy " (entry.healthy) "/" (entry.instances) }
                                } @else {
                                    span.badge.status-failed { "unhealthy " (entry.healthy) "/" (entry.instances) }
                                }
                            }
                            td { (crate::views::human_time_of(&entry.since)) }
                            td { a.signals href=(super::signals::link(&project.name, &entry.environment, &entry.service, None)) { "golden signals" } }
                            @if can_deploy {
                                td {
                                    form.inline method="post" action={ (base) "/rollbacks" } {
                                        (csrf_field(principal))
                                        input type="hidden" name="service" value=(entry.service);
                                        input type="hidden" name="environment" value=(entry.environment);
                                        button type="submit" title="Deploy the release that served before this one again" { "Roll back" }
                                    }
                                    " "
                                    form.inline method="post" action={ (base) "/environments/" (entry.environment) "/stop" } {
                                        (csrf_field(principal))
                                        input type="hidden" name="service" value=(entry.service);
                                        button type="submit" title="Stop its instances and drop its route" { "Stop" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if can_deploy {
            h2 { "Deploy" }
            form method="post" action={ (base) "/deployments" } aria-label="Deploy" {
                (csrf_field(principal))
                label { "Service " input type="text" name="service" required placeholder="web"; }
                " "
                label { "Environment " input type="text" name="environment" required placeholder="production"; }
                " "
                label { "Version " input type="text" name="version" placeholder=(project.default_branch); }
                " "
                label { "Strategy "
                    select name="strategy" {
                        option value="" { "the service's own" }
                        option value="blue-green" { "blue-green" }
                        option value="canary" { "canary 10% → 50% → 100%" }
                        option value="rolling" { "rolling" }
                        option value="recreate" { "recreate" }
                    }
                }
                " "
                button type="submit" { "Deploy" }
            }
        }
        h2 { "History" }
        @if history.len() >= 2 {
            form.inline method="get" action={ (base) "/compare" } aria-label="Compare two deployments" {
                label { "Compare deployment #" input type="number" name="from" min="1" required value=(history[1].id); }
                " "
                label { "with #" input type="number" name="to" min="1" required value=(history[0].id); }
                " "
                button type="submit" { "Compare" }
            }
        }
        @if history.is_empty() {
            p.muted { "No deployments yet." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Deployment" } th scope="col" { "Status" } th scope="col" { "Environment" }
                    th scope="col" { "Service" } th scope="col" { "Version" } th scope="col" { "Strategy" }
                    th scope="col" { "By" } th scope="col" { "Created" }
                } }
                tbody {
                    @for deployment in &history {
                        tr {
                            td { a href={ (base) "/deployments/" (deployment.id) } { "#" (deployment.id) } }
                            td { (status_badge(deployment.status)) }
                            td { (deployment.environment) }
                            td { (deployment.service) }
                            td { (version_and_commit(&deployment.version, &deployment.commit_sha)) }
                            td { (deployment.strategy) }
                            td { (deployment.triggered_by) }
                            td { (human_time(deployment.created_at)) }
                        }
                    }
                }
            }
        }
    })
    .into_response()
}

pub async fn deploy_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<DeployForm>,
) -> Response {
    let nonempty = |text: String| Some(text.trim().to_owned()).filter(|t| !t.is_empty());
    let request = DeployRequest {
        service: form.service.trim().to_owned(),
        environment: form.environment.trim().to_owned(),
        version: nonempty(form.version),
        strategy: nonempty(form.strategy),
        triggered_by: principal.user.username.clone(),
        pipeline_id: None,
    };
    let names_ok = opsloop_core::validate_name("service", &request.service).is_ok()
        && opsloop_core::validate_name("environment", &request.environment).is_ok()
        && request.version.as_deref().is_none_or(|v| crate::views::validate_branch(v).is_ok());
    if !names_ok {
        return render_environments(
            &state,
            &principal,
            &context,
            Some("that is no service, environment or version name"),
        )
        .await;
    }
    match deploy::request(&state, &context.project, context.role, request, principal.actor()).await {
        Ok(deployment) => {
            Redirect::to(&format!("/projects/{}/deployments/{}", context.project.name, deployment.id)).into_response()
        }
        Err(error) => render_environments(&state, &principal, &context, Some(&error.to_string())).await,
    }
}

pub async fn rollback_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<RollbackForm>,
) -> Response {
    if opsloop_core::validate_name("service", &form.service).is_err()
        || opsloop_core::validate_name("environment", &form.environment).is_err()
    {
        return render_environments(&state, &principal, &context, Some("that is no service or environment name")).await;
    }
    let request = RollbackRequest {
        service: form.service,
        environment: form.environment,
        to: Some(form.to.trim().to_owned()).filter(|t| !t.is_empty()),
        triggered_by: principal.user.username.clone(),
    };
    match deploy::rollback(&state, &context.project, context.role, request, principal.actor()).await {
        Ok(deployment) => {
            Redirect::to(&format!("/projects/{}/deployments/{}", context.project.name, deployment.id)).into_response()
        }
        Err(error) => render_environments(&state, &principal, &context, Some(&error.to_string())).await,
    }
}

fn figures_table(figures: &[VersionFigures], new_label: &str) -> Markup {
    let ms = |value: Option<f64>| value.map_or_else(|| "—".to_owned(), |ms| format!("{ms:.1} ms"));
    html! {
        table {
            thead { tr {
                th scope="col" { "Version" } th scope="col" { "Requests" } th scope="col" { "Errors" }
                th scope="col" { "Error rate" } th scope="col" { "p50" } th scope="col" { "p99" }
            } }
            tbody {
                @for row in figures {
                    tr {
                        td { (row.version) @if row.version == new_label { " " span.badge { "new" } } @else { " " span.badge { "old" } } }
                        td { (row.requests) }
                        td { (row.errors) }
                        td { @if row.requests > 0 { (format!("{:.2}%", row.errors as f64 * 100.0 / row.requests as f64)) } @else { "—" } }
                        td { (ms(row.p50_ms)) }
                        td { (ms(row.p99_ms)) }
                    }
                }
            }
        }
    }
}

pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<DeploymentPath>,
) -> Response {
    let project = &context.project;
    let deployment = match state.store.deployment(path.deployment).await {
        Ok(Some(deployment)) if deployment.project_id == project.id => deployment,
        Ok(_) => return failure(ApiError::not_found("deployment")),
        Err(error) => return failure(error),
    };
    let release = match state.store.release(deployment.release_id).await {
        Ok(Some(release)) => release,
        Ok(None) => return failure(ApiError::not_found("release")),
        Err(error) => return failure(error),
    };
    let previous = match deployment.previous_release_id {
        Some(id) => state.store.release(id).await.ok().flatten(),
        None => None,
    };
    let timeline = TimelineRecord::parse(&deployment.timeline);
    let new_label = deploy::version_label(&release);
    // While it runs, the figures are the live totals of both versions.
    let figures = if timeline.figures.is_empty() {
        let route = deploy::route_name(&project.name, &deployment.environment, &deployment.service);
        std::iter::once(&release)
            .chain(previous.as_ref())
            .map(|r| {
                let label = deploy::version_label(r);
                let now = state.deploy.proxy.signals().of(&route, &label).snapshot();
                let ms = |q: f64| now.latency_quantile(q).map(|d| d.as_secs_f64() * 1000.0);
                VersionFigures {
                    version: label,
                    requests: now.requests,
                    errors: now.errors,
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                }
            })
            .collect()
    } else {
        timeline.figures.clone()
    };
    let commits = match &previous {
        Some(previous) => deploy::commits_between(&state, project, &previous.commit_sha, &release.commit_sha).await,
        None => Vec::new(),
    };
    let changes = previous.as_ref().map(|p| deploy::config_changes(&p.config, &release.config)).unwrap_or_default();
    let config: Option<ReleaseConfig> = serde_json::from_str(&release.config).ok();
    let base = format!("/projects/{}", project.name);
    let approvals = state.store.deployment_approvals(deployment.id).await.unwrap_or_default();
    // The environment's service log holds every release's instances; this deployment's page
    // shows its own release's and the one it replaced (`[<route>@<label>#<n>] line`), not
    // those of deployments after it.
    let route = deploy::route_name(&project.name, &deployment.environment, &deployment.service);
    let prefixes: Vec<String> = std::iter::once(&release)
        .chain(previous.as_ref())
        .map(|r| format!("[{route}@{}#", deploy::version_label(r)))
        .collect();
    let log_tail =
        tail(&deploy::service_log(&state, project.id, &deployment.environment, &deployment.service), 40, &prefixes);
    layout(&format!("{} · deployment #{}", project.name, deployment.id), Some(&principal), "/projects", html! {
        @if running(&deployment.status) || deployment.status == DeploymentStatus::WaitingApproval { (auto_refresh(3)) }
        p { a href={ (base) "/environments" } { "← environments of " (project.name) } }
        h1 { "Deployment #" (deployment.id) " " (status_badge(deployment.status)) }
        dl.facts {
            dt { "Service" } dd { (deployment.service) }
            dt { "Environment" } dd { (deployment.environment) }
            dt { "Version" } dd { (version_and_commit(&release.version, &release.commit_sha)) }
            @if let Some(previous) = &previous { dt { "Replacing" } dd { (version_and_commit(&previous.version, &previous.commit_sha)) } }
            dt { "Strategy" } dd { (deployment.strategy) }
            dt { "By" } dd { (deployment.triggered_by) }
            dt { "Created" } dd { (human_time(deployment.created_at)) }
            @if let Some(finished) = deployment.finished_at { dt { "Finished" } dd { (human_time(finished)) } }
            @if let Some(artifact) = config.as_ref().and_then(|c| c.artifact.as_ref()) {
                dt { "Built by" }
                dd {
                    "job " code { (artifact.job) } " of "
                    a href={ (base) "/pipelines/" (artifact.pipeline_id) } { "pipeline #" (artifact.pipeline_id) }
                    ", archive sha256 " code { (short(&artifact.digest)) }
                }
            }
            @if let Some(config) = &config {
                dt { "SLO" } dd { "error rate ≤ " (format!("{:.1}%", config.max_error_rate * 100.0)) ", p99 ≤ " (config.max_p99_ms) " ms, over a bake of " (config.bake_ms / 1000) " s" }
            }
        }
        @if let Some(reason) = &deployment.reason {
            div.error role="alert" { (reason) }
        }
        @if deployment.status == DeploymentStatus::WaitingApproval {
            div.notice {
                "This environment needs approvals before a deployment starts."
                @if !approvals.is_empty() { " Approved by " (approvals.join(", ")) "." }
            }
            @if context.role >= Role::Developer {
                form.inline method="post" action={ (base) "/deployments/" (deployment.id) "/approve" } {
                    (csrf_field(&principal))
                    button type="submit" { "Approve" }
                }
            }
        } @else if !approvals.is_empty() {
            p.muted { "Approved by " (approvals.join(", ")) "." }
        }
        @if context.role >= Role::Developer && !running(&deployment.status) && deployment.status != DeploymentStatus::WaitingApproval {
            form.inline method="post" action={ (base) "/rollbacks" } {
                (csrf_field(&principal))
                input type="hidden" name="service" value=(deployment.service);
                input type="hidden" name="environment" value=(deployment.environment);
                @if deployment.status == DeploymentStatus::Success {
                    button type="submit" { "Roll back from this version" }
                } @else {
                    input type="hidden" name="to" value=(release.version);
                    button type="submit" { "Deploy this version again" }
                }
            }
        }
        h2 { "Steps" }
        @if timeline.steps.is_empty() {
            p.muted { @if deployment.status == DeploymentStatus::Queued { "Waiting for the environment's turn." } @else { "No steps recorded." } }
        } @else {
            ol.timeline {
                @for step in &timeline.steps {
                    li {
                        span.at { (format!("{:.1} s", step.at_ms as f64 / 1000.0)) }
                        (step.text)
                        @if let Some(percent) = step.traffic_percent {
                            " "
                            // SVG geometry, not an inline style: the Content-Security-Policy
                            // (`default-src 'self'`) blocks `style=""` attributes.
                            svg.weights viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label={ (percent.min(100)) "% of traffic to the new version" } {
                                title { (percent.min(100)) "% new, " (100 - percent.min(100)) "% old" }
                                rect.new x="0" y="0" height="10" width=(percent.min(100)) {}
                                rect.old y="0" height="10" x=(percent.min(100)) width=(100 - percent.min(100)) {}
                            }
                        }
                    }
                }
            }
        }
        h2 { "Golden signals" }
        p { a.signals href=(super::signals::link(&project.name, &deployment.environment, &deployment.service, Some(deployment.id))) { "Charts of the golden signals around this deployment" } " (old and new version side by side)" }
        p.hint { @if timeline.figures.is_empty() { "Totals so far, through the proxy." } @else { "Over the deployment, through the proxy." } }
        (figures_table(&figures, &new_label))
        @if let Some(previous) = &previous {
            h2 { "Changes since " (previous.version) }
            @if commits.is_empty() && changes.is_empty() {
                p.muted { "The same commit and configuration." }
            }
            @if !commits.is_empty() {
                ul { @for commit in &commits { li { code { (commit) } } } }
            }
            @if !changes.is_empty() {
                table {
                    thead { tr { th scope="col" { "Setting" } th scope="col" { "Before" } th scope="col" { "After" } } }
                    tbody { @for change in &changes { tr { td { code { (change.field) } } td { (side(&change.before)) } td { (side(&change.after)) } } } }
                }
            }
        }
        h2 { "Service log" }
        @if log_tail.is_empty() { p.muted { "No output yet." } } @else { pre.log { (log_tail) } }
    })
    .into_response()
}

/// The last `lines` lines of a file (the end of a service's log) that start with one of
/// `prefixes`, from its last 256 KiB.
fn tail(path: &std::path::Path, lines: usize, prefixes: &[String]) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return String::new() };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = length.saturating_sub(256 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().filter(|line| prefixes.iter().any(|p| line.starts_with(p.as_str()))).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[derive(Debug, Deserialize)]
pub struct CompareForm {
    from: i64,
    to: i64,
}

/// What changed between two deployments' releases.
pub async fn compare(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    axum::extract::Query(form): axum::extract::Query<CompareForm>,
) -> Response {
    let project = &context.project;
    let comparison = match deploy::compare(&state, project, form.from, form.to).await {
        Ok(comparison) => comparison,
        Err(error) => return failure(error),
    };
    let base = format!("/projects/{}", project.name);
    layout(&format!("{} · compare", project.name), Some(&principal), "/projects", html! {
        p { a href={ (base) "/environments" } { "← environments of " (project.name) } }
        h1 { "From " (comparison.from_version) " to " (comparison.to_version) }
        p.muted { code.sha { (short(&comparison.from_commit)) } " → " code.sha { (short(&comparison.to_commit)) } }
        h2 { "Commits" }
        @if comparison.commits.is_empty() {
            p.muted { "None between them (the same commit, or the second is not ahead of the first)." }
        } @else {
            ul { @for commit in &comparison.commits { li { code { (commit) } } } }
        }
        h2 { "Configuration" }
        @if comparison.changes.is_empty() {
            p.muted { "The same." }
        } @else {
            table {
                thead { tr { th scope="col" { "Setting" } th scope="col" { "Before" } th scope="col" { "After" } } }
                tbody { @for change in &comparison.changes { tr { td { code { (change.field) } } td { (side(&change.before)) } td { (side(&change.after)) } } } }
            }
        }
    })
    .into_response()
}

/// One side of a configuration change: the value, or a dash where the field is absent.
fn side(value: &Option<String>) -> Markup {
    match value {
        Some(value) => html! { code { (value) } },
        None => html! { span.muted { "—" } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployments_log_shows_its_own_releases_instances_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web.log");
        std::fs::write(
            &log,
            "[shop/production/web@v1#1#1] old starting\n[shop/production/web@v2#2#1] new ready\n\
             [shop/production/web@v3#3#1] a later deployment\n[shop/production/web@v1#12#1] another release\n",
        )
        .unwrap();
        let prefixes = vec!["[shop/production/web@v2#2#".to_owned(), "[shop/production/web@v1#1#".to_owned()];
        assert_eq!(
            tail(&log, 40, &prefixes),
            "[shop/production/web@v1#1#1] old starting\n[shop/production/web@v2#2#1] new ready"
        );
        assert_eq!(tail(&log, 1, &prefixes), "[shop/production/web@v2#2#1] new ready");
    }
}
