//! Pipeline pages: a project's pipelines with a "Run pipeline" form, one pipeline's jobs by
//! stage, and a job's log. Running pages refresh themselves (a small script that waits while a
//! form is in use, or a meta refresh without JavaScript).

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use opsloop_core::{JobStatus, PipelineStatus, Role};
use serde::Deserialize;

use super::{csrf_field, error_box, failure, layout};
use crate::auth::{Principal, ProjectContext};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::{human_time, validate_branch};

#[derive(Debug, Deserialize)]
pub struct RunForm {
    #[serde(rename = "ref", default)]
    git_ref: String,
}

/// Pipelines and jobs that may still change, so their pages refresh.
trait Unfinished {
    fn running(&self) -> bool;
}

impl Unfinished for PipelineStatus {
    fn running(&self) -> bool {
        !self.is_finished()
    }
}

impl Unfinished for JobStatus {
    fn running(&self) -> bool {
        self.is_active()
    }
}

fn running(status: &impl Unfinished) -> bool {
    status.running()
}

/// Reloads a page of running work every `seconds`: through the embedded script, which waits
/// while someone is filling in a form on it, or a plain meta refresh without JavaScript.
pub(crate) fn auto_refresh(seconds: u32) -> Markup {
    html! {
        noscript { meta http-equiv="refresh" content=(seconds); }
        span hidden data-refresh=(seconds) {}
        script src="/assets/live.js" {}
    }
}

pub(crate) fn status_badge(status: impl std::fmt::Display) -> Markup {
    html! { span class={ "badge status-" (status) } { (status) } }
}

/// The Pipelines area: each project you can see with its latest pipeline.
pub async fn overview(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let member = if principal.user.is_admin { None } else { Some(principal.user.id) };
    let projects = match state.store.list_projects(member, &opsloop_store::PageRequest::first(100)).await {
        Ok(page) => page.items,
        Err(error) => return failure(error),
    };
    let mut rows = Vec::with_capacity(projects.len());
    for project in projects {
        let latest = match state.store.list_pipelines(project.id, &opsloop_store::PageRequest::first(1)).await {
            Ok(page) => page.items.into_iter().next(),
            Err(error) => return failure(error),
        };
        rows.push((project, latest));
    }
    layout("Pipelines", Some(&principal), "/pipelines", html! {
        h1 { "Pipelines" }
        p.hint { "Pipelines run your " code { ".gitlab-ci.yml" } " on the server, with the engine " code { "opsloop run" } " uses on your machine." }
        @if rows.is_empty() {
            p.muted { "No projects yet: " a href="/projects#new-project" { "create one" } "." }
        } @else {
            table {
                thead { tr { th scope="col" { "Project" } th scope="col" { "Latest pipeline" } th scope="col" { "Ref" } th scope="col" { "Created" } th scope="col" { "Duration" } } }
                tbody {
                    @for (project, latest) in &rows {
                        tr {
                            td { a href={ "/projects/" (project.name) "/pipelines" } { (project.name) } }
                            @if let Some(pipeline) = latest {
                                td { a href={ "/projects/" (project.name) "/pipelines/" (pipeline.id) } { "#" (pipeline.id) } " " (status_badge(pipeline.status)) }
                                td { (pipeline.git_ref) }
                                td { (human_time(pipeline.created_at)) }
                                td { @match crate::api::pipelines::duration_ms(pipeline) {
                                    Some(ms) => (human_duration(ms)),
                                    None => span.muted { "—" },
                                } }
                            } @else {
                                td.muted colspan="4" { "none yet" }
                            }
                        }
                    }
                }
            }
        }
    })
    .into_response()
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
) -> Response {
    render_list(&state, &principal, &context, None).await
}

async fn render_list(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    error: Option<(StatusCode, &str)>,
) -> Response {
    let project = &context.project;
    let page = match state.store.list_pipelines(project.id, &opsloop_store::PageRequest::first(50)).await {
        Ok(page) => page,
        Err(error) => return failure(error),
    };
    let any_running = page.items.iter().any(|p| running(&p.status));
    let base = format!("/projects/{}", project.name);
    let markup = layout(
        &format!("{} · pipelines", project.name),
        Some(principal),
        "/pipelines",
        html! {
            @if any_running { (auto_refresh(3)) }
            p { a href=(base) { "← " (project.name) } }
            h1 { "Pipelines of " (project.name) }
            p {
                a href={ (base) "/schedules" } { "Schedules and polling" }
                @if context.role >= Role::Maintainer { " · " a href={ (base) "/settings/ci" } { "CI/CD settings" } }
            }
            (error_box(error.map(|(_, message)| message)))
            @if context.role >= Role::Developer {
                form.inline method="post" action={ (base) "/pipelines" } aria-label="Run pipeline" {
                    (csrf_field(principal))
                    label { "Ref " input type="text" name="ref" value=(project.default_branch) required; }
                    " "
                    button type="submit" { "Run pipeline" }
                }
            }
            @if page.items.is_empty() {
                p.muted { "No pipelines yet." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Pipeline" } th scope="col" { "Status" } th scope="col" { "Ref" } th scope="col" { "Commit" } th scope="col" { "Trigger" } th scope="col" { "Started by" } th scope="col" { "Created" } th scope="col" { "Duration" } } }
                    tbody {
                        @for pipeline in &page.items {
                            tr {
                                td { a href={ (base) "/pipelines/" (pipeline.id) } { "#" (pipeline.id) } }
                                td { (status_badge(pipeline.status)) }
                                td { (pipeline.git_ref) }
                                td { code.sha title=(pipeline.sha) { (pipeline.sha.chars().take(8).collect::<String>()) } }
                                td { (pipeline.source) }
                                td { (pipeline.created_by) }
                                td { (human_time(pipeline.created_at)) }
                                td { @match crate::api::pipelines::duration_ms(pipeline) {
                                    Some(ms) => (human_duration(ms)),
                                    None => span.muted { "—" },
                                } }
                            }
                        }
                    }
                }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    (status, markup).into_response()
}

pub async fn run(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<RunForm>,
) -> Response {
    let git_ref = form.git_ref.trim();
    let git_ref = if git_ref.is_empty() { context.project.default_branch.as_str() } else { git_ref };
    if let Err(error) = validate_branch(git_ref) {
        let message = error.to_string();
        return render_list(&state, &principal, &context, Some((StatusCode::UNPROCESSABLE_ENTITY, &message))).await;
    }
    match crate::ci::trigger(&state, &context.project, git_ref, None, "web", Vec::new(), principal.actor()).await {
        Ok(pipeline) => {
            Redirect::to(&format!("/projects/{}/pipelines/{}", context.project.name, pipeline.id)).into_response()
        }
        Err(error) => {
            let error = ApiError::from(error);
            render_list(&state, &principal, &context, Some((error.status, &error.message))).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PipelinePath {
    #[allow(dead_code)]
    project: String,
    pipeline: i64,
}

pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<PipelinePath>,
) -> Response {
    let project = &context.project;
    let pipeline = match state.store.pipeline_by_id(path.pipeline).await {
        Ok(Some(pipeline)) if pipeline.project_id == project.id => pipeline,
        Ok(_) => return failure(ApiError::not_found("pipeline")),
        Err(error) => return failure(error),
    };
    let jobs = match state.store.jobs_of(pipeline.id).await {
        Ok(jobs) => jobs,
        Err(error) => return failure(error),
    };
    let tests = match state.store.pipeline_test_reports(pipeline.id).await {
        Ok(reports) => crate::api::pipelines::test_summary(reports),
        Err(error) => return failure(error),
    };
    let mut stages: Vec<(&str, Vec<&opsloop_store::Job>)> = Vec::new();
    for job in &jobs {
        match stages.iter_mut().find(|(stage, _)| *stage == job.stage) {
            Some((_, list)) => list.push(job),
            None => stages.push((&job.stage, vec![job])),
        }
    }
    let graph = match crate::api::pipelines::needs_graph(&state, pipeline.id).await {
        Ok(graph) => graph,
        Err(error) => return failure(error),
    };
    let base = format!("/projects/{}", project.name);
    let drawn = (!graph.is_empty()).then(|| needs_svg(&jobs, &graph, &base));
    layout(&format!("Pipeline #{}", pipeline.id), Some(&principal), "/pipelines", html! {
        @if running(&pipeline.status) { (auto_refresh(2)) }
        p { a href={ (base) "/pipelines" } { "← Pipelines of " (project.name) } }
        h1 { "Pipeline #" (pipeline.id) " " (status_badge(pipeline.status)) }
        dl.facts {
            dt { "Ref" } dd { (pipeline.git_ref) }
            dt { "Commit" } dd { code.sha { (pipeline.sha) } }
            dt { "Trigger" } dd { (pipeline.source) " by " (pipeline.created_by) }
            dt { "Created" } dd { (human_time(pipeline.created_at)) }
            @if let Some(started) = pipeline.started_at { dt { "Started" } dd { (human_time(started)) } }
            @if let Some(finished) = pipeline.finished_at { dt { "Finished" } dd { (human_time(finished)) } }
            @if let Some(ms) = crate::api::pipelines::duration_ms(&pipeline) { dt { "Duration" } dd { (human_duration(ms)) } }
        }
        @if !pipeline.error.is_empty() { pre.error role="alert" { (pipeline.error) } }
        @if running(&pipeline.status) && context.role >= Role::Developer {
            form method="post" action={ (base) "/pipelines/" (pipeline.id) "/cancel" } {
                (csrf_field(&principal))
                button.danger type="submit" { "Cancel pipeline" }
            }
        }
        @if jobs.is_empty() {
            @if running(&pipeline.status) {
                // Jobs are planned from the pipeline file once the commit is checked out; until
                // then there is nothing to list, and an empty page looks broken.
                p.notice role="status" { "Waiting for checkout: the jobs show up here once the commit is checked out and its pipeline file is read." }
            } @else {
                p.muted { "No jobs ran in this pipeline." }
            }
        }
        div.cards {
            @for (stage, list) in &stages {
                section.card aria-label={ "Stage " (stage) } {
                    h2 { (stage) }
                    ul {
                        @for job in list {
                            li {
                                a href={ (base) "/jobs/" (job.id) } { (job.name) } " " (status_badge(job.status))
                                @if let Some(ms) = job_duration_ms(job) { " " span.muted.duration { (human_duration(ms)) } }
                                @if job.status == JobStatus::Manual && !running(&pipeline.status) && context.role >= Role::Developer {
                                    " "
                                    form.inline method="post" action={ (base) "/jobs/" (job.id) "/play" } {
                                        (csrf_field(&principal))
                                        button type="submit" aria-label={ "Run manual job " (job.name) } { "▶ Run" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(drawn) = drawn {
            section aria-labelledby="needs-graph" {
                h2 id="needs-graph" { "Needs" }
                (drawn)
                ul.muted aria-label="What each job needs" {
                    @for (job, needs) in &graph {
                        li { (job) " needs " @if needs.is_empty() { "nothing (starts at once)" } @else { (needs.join(", ")) } }
                    }
                }
            }
        }
        @if let Some(tests) = &tests {
            section.card aria-label="Tests" {
                h2 { "Tests" }
                p {
                    (tests.passed + tests.failed + tests.skipped) " tests: "
                    strong { (tests.passed) " passed" } ", "
                    strong { (tests.failed) " failed" } ", "
                    (tests.skipped) " skipped"
                }
                @if !tests.failures.is_empty() {
                    ul.failures {
                        @for failure in &tests.failures {
                            li { (failure.job) ": " code { (failure.case) } }
                        }
                    }
                }
            }
        }
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct JobPath {
    #[allow(dead_code)]
    project: String,
    job: i64,
}

pub async fn job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<JobPath>,
) -> Response {
    let project = &context.project;
    let job = match state.store.job_by_id(path.job).await {
        Ok(Some((job, project_id))) if project_id == project.id => job,
        Ok(_) => return failure(ApiError::not_found("job")),
        Err(error) => return failure(error),
    };
    let mut chunks = Vec::new();
    loop {
        let from = chunks.last().map_or(0, |(seq, _): &(i64, String)| seq + 1);
        match state.store.job_log_since(job.id, from).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => chunks.extend(batch),
            Err(error) => return failure(error),
        }
    }
    // What is stored renders now; the live stream carries on from the next chunk.
    let next = chunks.last().map_or(0, |(seq, _)| seq + 1);
    let mut log = String::new();
    for (_, content) in &chunks {
        log.push_str(&super::ansi::to_html(content));
    }
    let base = format!("/projects/{}", project.name);
    let live = running(&job.status).then(|| format!("{base}/jobs/{}/live?from={next}", job.id));
    let artifacts = match state.store.job_artifacts(job.id).await {
        Ok(artifacts) => artifacts,
        Err(error) => return failure(error),
    };
    // Listing reads the whole archive: only for archives of a sensible size.
    let files = match &artifacts {
        Some(stored) if stored.size_bytes > 32 * 1024 * 1024 => Vec::new(),
        Some(stored) => match state.objects() {
            Ok(objects) => match objects.get(&stored.object_key).await {
                Ok(archive) => crate::objects::zip_entries(&archive).unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(job = job.id, %error, "could not read an artifacts archive");
                    Vec::new()
                }
            },
            Err(error) => return failure(error),
        },
        None => Vec::new(),
    };
    let deployments = match state.store.pipeline_deployments(job.pipeline_id).await {
        Ok(deployments) => deployments_of_job(&job, deployments),
        Err(error) => return failure(error),
    };
    layout(&format!("Job {}", job.name), Some(&principal), "/pipelines", html! {
        @if live.is_some() { noscript { meta http-equiv="refresh" content="2"; } }
        p { a href={ (base) "/pipelines/" (job.pipeline_id) } { "← Pipeline #" (job.pipeline_id) } }
        h1 { (job.name) " " (status_badge(job.status)) }
        p.muted { "Stage " (job.stage) @if let Some(code) = job.exit_code { ", exit code " (code) } " · " a href={ "/api/v1/jobs/" (job.id) "/log" } { "raw log" } }
        dl.facts {
            @if let Some(started) = job.started_at { dt { "Started" } dd { (human_time(started)) } }
            @if let Some(finished) = job.finished_at { dt { "Finished" } dd { (human_time(finished)) } }
            @if let Some(ms) = job_duration_ms(&job) { dt { "Duration" } dd { (human_duration(ms)) } }
            @if !deployments.is_empty() {
                dt { "Deployed" }
                dd {
                    @for (i, deployment) in deployments.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href={ (base) "/deployments/" (deployment.id) } { "deployment #" (deployment.id) }
                        " (" (deployment.service) " to " (deployment.environment) ") " (status_badge(deployment.status))
                    }
                }
            }
        }
        @if context.role >= opsloop_core::Role::Developer {
            @let action = match job.status.as_str() {
                "manual" => Some(("play", "Run this manual job")),
                "success" | "warning" | "failed" | "canceled" => Some(("retry", "Retry")),
                "pending" | "scheduled" | "running" => Some(("cancel", "Cancel job")),
                _ => None,
            };
            @if let Some((action, label)) = action {
                form.inline method="post" action={ (base) "/jobs/" (job.id) "/" (action) } {
                    (super::csrf_field(&principal))
                    button type="submit" { (label) }
                }
            }
        }
        pre.log aria-label="Job log" role=[live.is_some().then_some("log")] data-live=[live.as_deref()] { (maud::PreEscaped(log)) }
        @if let Some(stored) = &artifacts {
            section aria-labelledby="artifacts" {
                h2 id="artifacts" { "Artifacts" }
                p {
                    a href={ "/api/v1/jobs/" (job.id) "/artifacts" } download { "Download all (zip, " (human_size(stored.size_bytes)) ")" }
                    " · " (stored.file_count) " file(s)"
                    @match stored.expire_at {
                        Some(at) => { " · expire " (crate::views::human_time(at)) }
                        None => { " · kept until the job is deleted" }
                    }
                }
                @if !files.is_empty() {
                    ul.files {
                        @for (path, size) in files.iter().take(500) {
                            li { a href={ "/api/v1/jobs/" (job.id) "/artifacts/raw/" (path) } download { (path) } " " span.muted { (human_size(i64::try_from(*size).unwrap_or(i64::MAX))) } }
                        }
                    }
                    @if files.len() > 500 { p.muted { "… and " (files.len() - 500) " more in the zip." } }
                }
            }
        }
        @if live.is_some() { script src="/assets/live.js" {} }
    })
    .into_response()
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<PipelinePath>,
) -> Response {
    match state.store.pipeline_by_id(path.pipeline).await {
        Ok(Some(pipeline)) if pipeline.project_id == context.project.id => {
            let canceled = match crate::ci::cancel(&state, pipeline.id).await {
                Ok(canceled) => canceled,
                Err(error) => return failure(error),
            };
            if canceled {
                let entry = opsloop_store::NewAuditEntry {
                    actor: principal.actor(),
                    action: "pipeline.cancel",
                    target: &pipeline.id.to_string(),
                    detail: &context.project.name,
                };
                if let Err(error) = state.store.append_audit(entry).await {
                    return failure(error);
                }
            }
            Redirect::to(&format!("/projects/{}/pipelines/{}", context.project.name, pipeline.id)).into_response()
        }
        Ok(_) => failure(ApiError::not_found("pipeline")),
        Err(error) => failure(error),
    }
}

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    from: i64,
}

/// Server-sent events: each new log chunk as HTML (`log`), then `end` when the job is done.
pub async fn live(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<JobPath>,
    axum::extract::Query(query): axum::extract::Query<LiveQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    // A browser that lost the stream reconnects to the same address with the id of the last
    // event it saw; starting from there (not from `from`) keeps lines from showing twice.
    let resume =
        headers.get("last-event-id").and_then(|value| value.to_str().ok()).and_then(|value| value.parse::<i64>().ok());
    let from = resume.unwrap_or(query.from).max(0);
    match state.store.job_by_id(path.job).await {
        Ok(Some((_, project_id))) if project_id == context.project.id => {}
        Ok(_) => return failure(ApiError::not_found("job")),
        Err(error) => return failure(error),
    }
    let job_id = path.job;
    // (next chunk, finished?, polls without news) — the stream ends after the job does, or
    // after an hour of silence.
    let stream = futures::stream::unfold((from, false, 0u32), move |(next, done, idle)| {
        let store = state.store.clone();
        async move {
            if done || idle > 7200 {
                return None;
            }
            loop {
                let chunks = store.job_log_since(job_id, next).await.unwrap_or_default();
                if let Some((last, _)) = chunks.last() {
                    let html: String = chunks.iter().map(|(_, content)| super::ansi::to_html(content)).collect();
                    let event = Event::default().event("log").id((last + 1).to_string()).data(html);
                    return Some((Ok::<_, std::convert::Infallible>(event), (last + 1, false, 0)));
                }
                let finished =
                    store.job_by_id(job_id).await.ok().flatten().is_none_or(|(job, _)| !running(&job.status));
                if finished {
                    // One more look: the last chunk may have landed with the status.
                    if store.job_log_since(job_id, next).await.unwrap_or_default().is_empty() {
                        return Some((Ok(Event::default().event("end").data("done")), (next, true, idle)));
                    }
                    continue;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                return Some((Ok(Event::default().comment("waiting")), (next, false, idle + 1)));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// A byte count for people: `512 B`, `3.4 KiB`, `12.0 MiB`.
fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

async fn job_action(
    state: AppState,
    principal: Principal,
    context: ProjectContext,
    job: i64,
    action: &str,
) -> Response {
    let done = match action {
        "retry" => crate::api::pipelines::run_again(&state, &principal, &context, job, false).await,
        "play" => crate::api::pipelines::run_again(&state, &principal, &context, job, true).await,
        _ => crate::api::pipelines::cancel_one(&state, &principal, &context, job).await,
    };
    match done {
        Ok(_) => {
            axum::response::Redirect::to(&format!("/projects/{}/jobs/{job}", context.project.name)).into_response()
        }
        Err(error) => crate::ui::error_page(error.status, &error.message),
    }
}

pub async fn retry_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<JobPath>,
) -> Response {
    job_action(state, principal, context, path.job, "retry").await
}

pub async fn play_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<JobPath>,
) -> Response {
    job_action(state, principal, context, path.job, "play").await
}

pub async fn cancel_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<JobPath>,
) -> Response {
    job_action(state, principal, context, path.job, "cancel").await
}

/// The pipeline's `needs` as an SVG: a column per depth (a job with needs sits right of what
/// it needs; one without sits in its stage's column), an arrow per need, boxes in the
/// colours of their status, each a link to its job.
fn needs_svg(
    jobs: &[opsloop_store::Job],
    graph: &std::collections::BTreeMap<String, Vec<String>>,
    base: &str,
) -> Markup {
    let mut stages: Vec<&str> = Vec::new();
    for job in jobs {
        if !stages.contains(&job.stage.as_str()) {
            stages.push(&job.stage);
        }
    }
    let index_of = |name: &str| jobs.iter().position(|j| j.name == name);
    // Depths by repeated relaxation: needs are acyclic (the planner refuses cycles), so this
    // settles within as many rounds as there are jobs.
    let mut depth: Vec<i64> = jobs
        .iter()
        .map(|j| {
            if graph.contains_key(&j.name) { 0 } else { stages.iter().position(|s| *s == j.stage).unwrap_or(0) as i64 }
        })
        .collect();
    for _ in 0..jobs.len() {
        let mut changed = false;
        for (i, job) in jobs.iter().enumerate() {
            let Some(needs) = graph.get(&job.name) else { continue };
            let wanted = needs.iter().filter_map(|n| index_of(n)).map(|n| depth[n] + 1).max().unwrap_or(0);
            if wanted != depth[i] {
                depth[i] = wanted;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows_used: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    let position: Vec<(i64, i64)> = depth
        .iter()
        .map(|d| {
            let row = rows_used.entry(*d).or_insert(0);
            let at = (10 + d * COLUMN, 10 + *row * ROW);
            *row += 1;
            at
        })
        .collect();
    let width = 20 + (depth.iter().max().copied().unwrap_or(0) + 1) * COLUMN;
    let height = 20 + rows_used.values().max().copied().unwrap_or(1) * ROW;
    let label = |name: &str| -> String {
        if name.chars().count() > 22 {
            format!("{}…", name.chars().take(21).collect::<String>())
        } else {
            name.to_owned()
        }
    };
    html! {
        svg.needs role="img" aria-label="Needs graph: arrows go from a job to the jobs that need it"
            width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) } {
            defs {
                // The arrowhead at the end of each edge, at the job that needs the other.
                marker id="needs-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" markerHeight="8"
                    markerUnits="userSpaceOnUse" orient="auto" {
                    path.arrowhead d="M0 0 L8 4 L0 8 z" {}
                }
            }
            @for (i, job) in jobs.iter().enumerate() {
                @if let Some(needs) = graph.get(&job.name) {
                    @for need in needs {
                        @if let Some(from) = index_of(need) {
                            path.edge d=(edge_path(position[from], position[i])) marker-end="url(#needs-arrow)" {}
                        }
                    }
                }
            }
            @for (i, job) in jobs.iter().enumerate() {
                a href={ (base) "/jobs/" (job.id) } {
                    title { (job.name) ": " (job.status) }
                    rect class={ "node status-" (job.status) } x=(position[i].0) y=(position[i].1) width=(NODE_WIDTH) height=(NODE_HEIGHT) rx="6" {}
                    text x=(position[i].0 + 10) y=(position[i].1 + 18) { (label(&job.name)) }
                }
            }
        }
    }
}

/// How long a job ran, once it has started and finished.
fn job_duration_ms(job: &opsloop_store::Job) -> Option<i64> {
    Some(job.finished_at? - job.started_at?).filter(|ms| *ms >= 0)
}

/// The deployments a job asked for: a deploy job calls the API with its pipeline's token, so
/// its deployments are the pipeline's that were created while it ran (the store records the
/// pipeline, not the job).
fn deployments_of_job(
    job: &opsloop_store::Job,
    deployments: Vec<opsloop_store::Deployment>,
) -> Vec<opsloop_store::Deployment> {
    let Some(started) = job.started_at else { return Vec::new() };
    deployments
        .into_iter()
        .filter(|d| d.created_at >= started && job.finished_at.is_none_or(|finished| d.created_at <= finished))
        .collect()
}

/// Box size and spacing of the needs graph: columns are `COLUMN` apart (a gap of
/// `COLUMN - NODE_WIDTH` for edges to bend in), rows `ROW` apart (a gap of `ROW - NODE_HEIGHT`).
const NODE_WIDTH: i64 = 170;
const NODE_HEIGHT: i64 = 28;
const COLUMN: i64 = 230;
const ROW: i64 = 42;

/// An edge of the needs graph from the box at `from` to the box at `to` (top-left corners).
/// Neighbouring columns get one curve inside the gap between them. An edge that skips columns
/// would cut through the boxes in between, so it runs along the gap between two rows instead:
/// out of its box, along the lane, and into the target box, bending only in column gaps.
fn edge_path(from: (i64, i64), to: (i64, i64)) -> String {
    let (x1, y1) = (from.0 + NODE_WIDTH, from.1 + NODE_HEIGHT / 2);
    let (x2, y2) = (to.0, to.1 + NODE_HEIGHT / 2);
    if x2 - x1 <= COLUMN - NODE_WIDTH {
        return format!("M{x1} {y1} C{} {y1} {} {y2} {x2} {y2}", x1 + 30, x2 - 30);
    }
    // The gap below the source row when the target is lower, above it otherwise.
    let source_row = (from.1 - 10) / ROW;
    let lane_row = if to.1 > from.1 { source_row + 1 } else { source_row };
    let lane = 10 + lane_row * ROW - (ROW - NODE_HEIGHT) / 2;
    let bend = (COLUMN - NODE_WIDTH) / 2;
    format!(
        "M{x1} {y1} C{} {y1} {} {lane} {} {lane} L{} {lane} C{} {lane} {} {y2} {x2} {y2}",
        x1 + bend / 2,
        x1 + bend / 2,
        x1 + bend,
        x2 - bend,
        x2 - bend / 2,
        x2 - bend / 2,
    )
}

/// A duration for people: `850 ms`, `42 s`, `3 min 5 s`, `1 h 2 min`.
fn human_duration(ms: i64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0 => format!("{ms} ms"),
        1..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}
