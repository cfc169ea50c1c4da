//! A project's pipeline schedules and repository polling: listed for everyone on the project,
//! created, switched on and off and deleted by maintainers. The rules are the API's
//! (`api::schedules::create_schedule`, `set_enabled`), so both refuse the same input.

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use opsloop_core::Role;
use serde::Deserialize;

use super::{csrf_field, error_box, failure, layout};
use crate::api::polling::MIN_INTERVAL_SECONDS;
use crate::api::schedules::{CreateSchedule, ScheduleView, create_schedule, set_enabled};
use crate::auth::{Principal, ProjectContext};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ScheduleForm {
    #[serde(default)]
    description: String,
    cron: String,
    #[serde(default)]
    timezone: String,
    #[serde(rename = "ref", default)]
    git_ref: String,
    /// One `KEY=value` per line.
    #[serde(default)]
    variables: String,
}

#[derive(Debug, Deserialize)]
pub struct PollingForm {
    interval_seconds: String,
}

#[derive(Debug, Deserialize)]
pub struct SchedulePath {
    #[allow(dead_code)]
    project: String,
    schedule: i64,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
) -> Response {
    render(&state, &principal, &context, None).await
}

async fn render(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    error: Option<(StatusCode, &str)>,
) -> Response {
    let project = &context.project;
    let schedules = match state.store.list_schedules(project.id).await {
        Ok(schedules) => schedules,
        Err(error) => return failure(error),
    };
    let interval = match state.store.poll_interval(project.id).await {
        Ok(interval) => interval,
        Err(error) => return failure(error),
    };
    let base = format!("/projects/{}", project.name);
    let maintainer = context.role >= Role::Maintainer;
    let markup = layout(
        &format!("{} · schedules", project.name),
        Some(principal),
        "/pipelines",
        html! {
            p { a href={ (base) "/pipelines" } { "← Pipelines of " (project.name) } }
            h1 { "Schedules of " (project.name) }
            (error_box(error.map(|(_, message)| message)))
            @if schedules.is_empty() {
                p.muted { "No schedules yet." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Description" } th scope="col" { "Cron" } th scope="col" { "Time zone" }
                        th scope="col" { "Ref" } th scope="col" { "Variables" } th scope="col" { "Next run" } th scope="col" { "Last pipeline" }
                        @if maintainer { th scope="col" { "Actions" } }
                    } }
                    tbody {
                        @for schedule in schedules {
                            @let id = schedule.id;
                            @let enabled = schedule.enabled;
                            @let view = ScheduleView::from(schedule.clone());
                            tr {
                                td { (schedule.description) }
                                td { code { (schedule.cron) } }
                                td { (schedule.timezone) }
                                td { (schedule.git_ref) }
                                td { @for name in &view.variables { code { (name) } " " } }
                                td { @match &view.next_run_at { Some(at) => (crate::views::human_time_of(at)), None => span.muted { "disabled" } } }
                                td { @if let Some(pipeline) = view.last_pipeline {
                                    a href={ (base) "/pipelines/" (pipeline) } { "#" (pipeline) }
                                } }
                                @if maintainer {
                                    td {
                                        form.inline method="post" action={ (base) "/schedules/" (id) "/" (if enabled { "disable" } else { "enable" }) } {
                                            (csrf_field(principal))
                                            button type="submit" { (if enabled { "Disable" } else { "Enable" }) }
                                        }
                                        " "
                                        form.inline method="post" action={ (base) "/schedules/" (id) "/delete" } {
                                            (csrf_field(principal))
                                            button type="submit" { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if maintainer {
                section.card {
                    h2 { "New schedule" }
                    form method="post" action={ (base) "/schedules" } aria-label="New schedule" {
                        (csrf_field(principal))
                        label { "Description " input type="text" name="description" maxlength="255"; }
                        label { "Cron (minute hour day month weekday) " input type="text" name="cron" placeholder="30 2 * * 1-5" required; }
                        label { "Time zone " input type="text" name="timezone" value="UTC"; }
                        label { "Ref " input type="text" name="ref" value=(project.default_branch); }
                        label { "Variables, one KEY=value per line " textarea name="variables" rows="3" placeholder="DEPLOY_TARGET=staging" {} }
                        button type="submit" { "Create schedule" }
                    }
                }
            }
            section.card {
                h2 { "Repository polling" }
                p.muted {
                    @if interval > 0 { "The repository is polled every " (interval) " seconds; each new commit or tag starts a push pipeline." }
                    @else { "Off. Polling suits repositories that cannot send a webhook." }
                }
                @if maintainer {
                    form.inline method="post" action={ (base) "/polling" } aria-label="Repository polling" {
                        (csrf_field(principal))
                        label { "Seconds between polls (0: off) " input type="number" name="interval_seconds" min="0" value=(interval); }
                        " "
                        button type="submit" { "Save" }
                    }
                }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    (status, markup).into_response()
}

fn back(context: &ProjectContext) -> Response {
    Redirect::to(&format!("/projects/{}/schedules", context.project.name)).into_response()
}

pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<ScheduleForm>,
) -> Response {
    let non_empty = |text: String| (!text.trim().is_empty()).then(|| text.trim().to_owned());
    let mut variables = std::collections::BTreeMap::new();
    for line in form.variables.lines().map(str::trim).filter(|line| !line.is_empty()) {
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                variables.insert(key.trim().to_owned(), value.to_owned());
            }
            _ => {
                let message = format!("`{line}` is not KEY=value");
                return render(&state, &principal, &context, Some((StatusCode::UNPROCESSABLE_ENTITY, &message))).await;
            }
        }
    }
    let input = CreateSchedule {
        cron: form.cron.trim().to_owned(),
        timezone: non_empty(form.timezone),
        git_ref: non_empty(form.git_ref),
        description: form.description.trim().to_owned(),
        variables,
    };
    match create_schedule(&state, &principal, &context, input).await {
        Ok(_) => back(&context),
        Err(error) => render(&state, &principal, &context, Some((error.status, &error.message))).await,
    }
}

async fn switch(state: AppState, principal: Principal, context: ProjectContext, id: i64, on: bool) -> Response {
    match set_enabled(&state, &principal, &context, id, on).await {
        Ok(()) => back(&context),
        Err(error) => render(&state, &principal, &context, Some((error.status, &error.message))).await,
    }
}

pub async fn enable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<SchedulePath>,
) -> Response {
    switch(state, principal, context, path.schedule, true).await
}

pub async fn disable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<SchedulePath>,
) -> Response {
    switch(state, principal, context, path.schedule, false).await
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<SchedulePath>,
) -> Response {
    match state.store.delete_schedule(&context.project, path.schedule, principal.actor()).await {
        Ok(()) => back(&context),
        Err(error) => {
            let error = ApiError::from(error);
            render(&state, &principal, &context, Some((error.status, &error.message))).await
        }
    }
}

pub async fn polling(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<PollingForm>,
) -> Response {
    let seconds = form.interval_seconds.trim().parse::<i64>();
    let result = match seconds {
        Ok(seconds) => crate::api::polling::set_interval(&state, &principal, &context, seconds).await,
        Err(_) => Err(ApiError::invalid(format!(
            "seconds between polls must be a whole number: 0 (off) or at least {MIN_INTERVAL_SECONDS}"
        ))),
    };
    match result {
        Ok(()) => back(&context),
        Err(error) => render(&state, &principal, &context, Some((error.status, &error.message))).await,
    }
}
