//! A project's CI/CD settings page (maintainers): its variables (values never shown), its own
//! job limit and auto-cancel, and its outgoing webhooks with their delivery logs; and the
//! admin page of instance variables. The rules are the API's (`api::variables`,
//! `api::polling::apply_ci_settings`, `api::notifications::create_hook`), so both refuse the
//! same input.

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{csrf_field, error_box, failure, layout};
use crate::api::notifications::CreateHook;
use crate::api::polling::CiSettingsView;
use crate::api::variables::SetVariable;
use crate::auth::{Principal, ProjectContext};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::human_time;

#[derive(Debug, Deserialize)]
pub struct VariableForm {
    key: String,
    value: String,
    #[serde(default)]
    environment_scope: String,
    masked: Option<String>,
    protected: Option<String>,
    file: Option<String>,
}

impl VariableForm {
    fn into_input(self) -> (String, SetVariable) {
        let scope = self.environment_scope.trim();
        let input = SetVariable {
            value: self.value,
            masked: self.masked.is_some(),
            protected: self.protected.is_some(),
            file: self.file.is_some(),
            environment_scope: (!scope.is_empty()).then(|| scope.to_owned()),
        };
        (self.key.trim().to_owned(), input)
    }
}

#[derive(Debug, Deserialize)]
pub struct DeleteVariableForm {
    key: String,
    environment_scope: String,
}

#[derive(Debug, Deserialize)]
pub struct LimitsForm {
    max_concurrent_jobs: String,
    auto_cancel_redundant: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct HookForm {
    url: String,
    pipeline: Option<String>,
    job: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TriggerForm {
    description: String,
}

#[derive(Debug, Deserialize)]
pub struct TriggerPath {
    #[allow(dead_code)]
    project: String,
    trigger: i64,
}

#[derive(Debug, Deserialize)]
pub struct HookPath {
    #[allow(dead_code)]
    project: String,
    hook: i64,
}

/// The variables table and the form to add one, for a project or the instance.
fn variables_section(
    principal: &Principal,
    variables: &[opsloop_store::StoredVariable],
    action: &str,
    note: &str,
) -> Markup {
    html! {
        section aria-labelledby="variables" {
            h2 id="variables" { "Variables" }
            p.hint { (note) " Values are encrypted and never shown again; masked ones read "
                code { "[MASKED]" } " in every log." }
            @if variables.is_empty() {
                p.muted { "No variables yet." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Key" } th scope="col" { "Environments" } th scope="col" { "Flags" }
                        th scope="col" { "Updated" } th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for variable in variables {
                            tr {
                                td { code { (variable.key) } }
                                td { (variable.environment_scope) }
                                td {
                                    @if variable.masked { span.badge { "masked" } " " }
                                    @if variable.protected { span.badge { "protected" } " " }
                                    @if variable.file { span.badge { "file" } }
                                }
                                td { (human_time(variable.updated_at)) }
                                td {
                                    form.inline method="post" action={ (action) "/delete" } {
                                        (csrf_field(principal))
                                        input type="hidden" name="key" value=(variable.key);
                                        input type="hidden" name="environment_scope" value=(variable.environment_scope);
                                        button type="submit" aria-label={ "Delete variable " (variable.key) } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form.stack method="post" action=(action) aria-label="Add or replace a variable" {
                (csrf_field(principal))
                label { "Key " input type="text" name="key" required maxlength="255" pattern="[A-Za-z_][A-Za-z0-9_]*" placeholder="DEPLOY_TOKEN"; }
                label { "Value " textarea name="value" rows="2" required {} }
                label { "Environments (* for all, or a pattern such as review/*) " input type="text" name="environment_scope" value="*"; }
                label { span { input type="checkbox" name="masked" value="on"; " Masked (hidden in logs; one line, at least 8 characters)" } }
                label { span { input type="checkbox" name="protected" value="on"; " Protected (default branch only)" } }
                label { span { input type="checkbox" name="file" value="on"; " File (the job gets a path to a file holding the value)" } }
                button type="submit" { "Save variable" }
            }
        }
    }
}

pub async fn page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
) -> Response {
    render(&state, &principal, &context, None, None).await
}

async fn render(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    secret: Option<(&str, &str)>,
    error: Option<(StatusCode, &str)>,
) -> Response {
    let project = &context.project;
    let loaded = async {
        let variables = state.store.list_variables(project.id).await?;
        let settings = state.store.ci_settings(project.id).await?;
        let hooks = state.store.notification_hooks(project.id).await?;
        let triggers = state.store.list_triggers(project.id).await?;
        let mut last = Vec::with_capacity(hooks.len());
        for hook in &hooks {
            last.push(state.store.deliveries(hook.id, 1).await?.into_iter().next());
        }
        Ok::<_, opsloop_store::StoreError>((variables, settings, hooks, last, triggers))
    };
    let (variables, settings, hooks, last, triggers) = match loaded.await {
        Ok(loaded) => loaded,
        Err(error) => return failure(error),
    };
    let base = format!("/projects/{}/settings/ci", project.name);
    let markup = layout(
        &format!("{} · CI/CD settings", project.name),
        Some(principal),
        "/pipelines",
        html! {
            p { a href={ "/projects/" (project.name) "/pipelines" } { "← Pipelines of " (project.name) } }
            h1 { "CI/CD settings of " (project.name) }
            (error_box(error.map(|(_, message)| message)))
            @if let Some((what, secret)) = secret {
                @if let Some(description) = what.strip_prefix("trigger:") {
                    div.notice role="status" {
                        p { "Trigger token " strong { (description) } " made. It is shown only now:" }
                        p.secret { (secret) }
                        p { "Start a pipeline with it:" }
                        pre { code { "curl -X POST -d token=" (secret) " -d ref=" (project.default_branch) " "
                            (state.config.external_url.clone().unwrap_or_else(|| format!("http://{}", state.config.listen)))
                            "/api/v1/projects/" (project.name) "/trigger/pipeline" } }
                    }
                } @else {
                    div.notice role="status" {
                        p { "Webhook for " strong { (what) } " added. Its signing secret is shown only now:" }
                        p.secret { (secret) }
                        p { "Each POST carries " code { "X-Opsloop-Signature-256: sha256=…" } ", the HMAC-SHA256 of the body under this secret." }
                    }
                }
            }
            (variables_section(principal, &variables, &format!("{base}/variables"),
                "Given to this project's pipelines; they win over instance variables of the same key."))
            section aria-labelledby="limits" {
                h2 id="limits" { "Jobs" }
                form.stack method="post" action={ (base) "/limits" } aria-labelledby="limits" {
                    (csrf_field(principal))
                    label { "Jobs of this project at once (0: only the server's limit) "
                        input type="number" name="max_concurrent_jobs" min="0" max="1000" value=(settings.max_concurrent_jobs); }
                    label { span {
                        input type="checkbox" name="auto_cancel_redundant" value="on" checked[settings.auto_cancel_redundant];
                        " Cancel older pipelines of the same ref when a new one starts (if their started jobs are all interruptible)"
                    } }
                    button type="submit" { "Save" }
                }
            }
            section aria-labelledby="triggers" {
                h2 id="triggers" { "Trigger tokens" }
                p.hint { "A script holding a trigger token starts pipelines of this project (source " code { "trigger" } ") without an account." }
                @if triggers.is_empty() {
                    p.muted { "No trigger tokens yet." }
                } @else {
                    table {
                        thead { tr { th scope="col" { "Description" } th scope="col" { "Made by" } th scope="col" { "Last used" } th scope="col" { "Actions" } } }
                        tbody {
                            @for trigger in &triggers {
                                tr {
                                    td { (trigger.description) }
                                    td { (trigger.created_by) }
                                    td { @match trigger.last_used_at { Some(at) => (human_time(at)), None => span.muted { "never" } } }
                                    td {
                                        form.inline method="post" action={ (base) "/triggers/" (trigger.id) "/delete" } {
                                            (csrf_field(principal))
                                            button type="submit" aria-label={ "Revoke trigger token " (trigger.description) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                form.stack method="post" action={ (base) "/triggers" } aria-label="Make a trigger token" {
                    (csrf_field(principal))
                    label { "Description " input type="text" name="description" required maxlength="255" placeholder="release script"; }
                    button type="submit" { "Make trigger token" }
                }
            }
            section aria-labelledby="hooks" {
                h2 id="hooks" { "Webhooks" }
                p.hint { "Pipeline and job events are POSTed as JSON, signed, and retried with backoff when the receiver fails." }
                @if hooks.is_empty() {
                    p.muted { "No webhooks yet." }
                } @else {
                    table {
                        thead { tr {
                            th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "Last delivery" } th scope="col" { "Actions" }
                        } }
                        tbody {
                            @for (hook, last) in hooks.iter().zip(&last) {
                                tr {
                                    td { code { (hook.url) } }
                                    td { (hook.events.join(", ")) }
                                    td {
                                        @match last {
                                            Some(delivery) => {
                                                span class={ "badge status-" (delivery_class(&delivery.state)) } { (delivery.state) }
                                                " " (human_time(delivery.created_at)) " · "
                                            }
                                            None => { span.muted { "none yet" } " · " }
                                        }
                                        a href={ (base) "/hooks/" (hook.id) } { "delivery log" }
                                    }
                                    td {
                                        form.inline method="post" action={ (base) "/hooks/" (hook.id) "/delete" } {
                                            (csrf_field(principal))
                                            button type="submit" aria-label={ "Delete webhook " (hook.url) } { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                form.stack method="post" action={ (base) "/hooks" } aria-label="Add a webhook" {
                    (csrf_field(principal))
                    label { "URL " input type="url" name="url" required placeholder="https://chat.example.com/hooks/ci"; }
                    fieldset {
                        legend { "Events" }
                        label { span { input type="checkbox" name="pipeline" value="on" checked; " Pipelines" } }
                        label { span { input type="checkbox" name="job" value="on" checked; " Jobs" } }
                    }
                    button type="submit" { "Add webhook" }
                }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    (status, markup).into_response()
}

fn delivery_class(state: &str) -> &'static str {
    match state {
        "delivered" => "success",
        "failed" => "failed",
        _ => "pending",
    }
}

fn back(context: &ProjectContext) -> Response {
    Redirect::to(&format!("/projects/{}/settings/ci", context.project.name)).into_response()
}

async fn done(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    result: Result<(), ApiError>,
) -> Response {
    match result {
        Ok(()) => back(context),
        Err(error) => render(state, principal, context, None, Some((error.status, &error.message))).await,
    }
}

pub async fn set_variable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<VariableForm>,
) -> Response {
    let (key, input) = form.into_input();
    let result = crate::api::variables::set_project_variable(&state, &principal, &context, key, input).await;
    done(&state, &principal, &context, result).await
}

pub async fn delete_variable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<DeleteVariableForm>,
) -> Response {
    let result = state
        .store
        .delete_variable(&context.project, &form.key, &form.environment_scope, principal.actor())
        .await
        .map_err(ApiError::from);
    done(&state, &principal, &context, result).await
}

pub async fn set_limits(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<LimitsForm>,
) -> Response {
    let result = match form.max_concurrent_jobs.trim().parse::<i64>() {
        Ok(max_concurrent_jobs) => {
            let input =
                CiSettingsView { max_concurrent_jobs, auto_cancel_redundant: form.auto_cancel_redundant.is_some() };
            crate::api::polling::apply_ci_settings(&state, &principal, &context, &input).await
        }
        Err(_) => Err(ApiError::invalid("the job limit is a whole number: 0 (none of its own) to 1000")),
    };
    done(&state, &principal, &context, result).await
}

pub async fn add_hook(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<HookForm>,
) -> Response {
    let mut events = Vec::new();
    if form.pipeline.is_some() {
        events.push("pipeline".to_owned());
    }
    if form.job.is_some() {
        events.push("job".to_owned());
    }
    if events.is_empty() {
        let error = ApiError::invalid("choose at least one event");
        return render(&state, &principal, &context, None, Some((error.status, &error.message))).await;
    }
    let input = CreateHook { url: form.url.trim().to_owned(), events, secret: None };
    match crate::api::notifications::create_hook(&state, &principal, &context, input).await {
        Ok(created) => render(&state, &principal, &context, Some((&created.hook.url, &created.secret)), None).await,
        Err(error) => render(&state, &principal, &context, None, Some((error.status, &error.message))).await,
    }
}

pub async fn delete_hook(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<HookPath>,
) -> Response {
    let result = match state.store.delete_notification_hook(&context.project, path.hook, principal.actor()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::not_found("webhook")),
        Err(error) => Err(ApiError::from(error)),
    };
    done(&state, &principal, &context, result).await
}

pub async fn add_trigger(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<TriggerForm>,
) -> Response {
    let input = crate::api::triggers::CreateTrigger { description: form.description };
    match crate::api::triggers::create_trigger(&state, &principal, &context, input).await {
        Ok(created) => {
            let what = format!("trigger:{}", created.trigger.description);
            render(&state, &principal, &context, Some((&what, &created.token)), None).await
        }
        Err(error) => render(&state, &principal, &context, None, Some((error.status, &error.message))).await,
    }
}

pub async fn delete_trigger(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<TriggerPath>,
) -> Response {
    let result = match state.store.delete_trigger(&context.project, path.trigger, principal.actor()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::not_found("trigger")),
        Err(error) => Err(ApiError::from(error)),
    };
    done(&state, &principal, &context, result).await
}

pub async fn hook_log(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<HookPath>,
) -> Response {
    let hook = match state.store.notification_hook(path.hook).await {
        Ok(Some(hook)) if hook.project_id == context.project.id => hook,
        Ok(_) => return failure(ApiError::not_found("webhook")),
        Err(error) => return failure(error),
    };
    let deliveries = match state.store.deliveries(hook.id, 100).await {
        Ok(deliveries) => deliveries,
        Err(error) => return failure(error),
    };
    let base = format!("/projects/{}/settings/ci", context.project.name);
    layout(&format!("Webhook {}", hook.url), Some(&principal), "/pipelines", html! {
        p { a href=(base) { "← CI/CD settings of " (context.project.name) } }
        h1 { "Deliveries to " code { (hook.url) } }
        p.hint { "The latest 100, newest first. A failed attempt is retried after 1 s, 2 s, 4 s … up to "
            (crate::notify::MAX_ATTEMPTS) " attempts." }
        @if deliveries.is_empty() {
            p.muted { "Nothing delivered yet." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Event" } th scope="col" { "State" } th scope="col" { "Attempts" }
                    th scope="col" { "Answer" } th scope="col" { "Created" } th scope="col" { "Payload" }
                } }
                tbody {
                    @for delivery in &deliveries {
                        tr {
                            td { (delivery.id) }
                            td { (delivery.event) }
                            td { span class={ "badge status-" (delivery_class(&delivery.state)) } { (delivery.state) } }
                            td { (delivery.attempts) }
                            td {
                                @if let Some(status) = delivery.response_status { (status) " " }
                                @if !delivery.last_error.is_empty() { span.muted { (delivery.last_error) } }
                            }
                            td { (human_time(delivery.created_at)) }
                            td { details { summary { "JSON" } pre { code { (delivery.payload) } } } }
                        }
                    }
                }
            }
        }
    })
    .into_response()
}

// ---- instance variables (admins) ----

pub async fn instance_variables(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    render_instance(&state, &principal, None).await
}

async fn render_instance(state: &AppState, principal: &Principal, error: Option<(StatusCode, &str)>) -> Response {
    let variables = match state.store.list_instance_variables().await {
        Ok(variables) => variables,
        Err(error) => return failure(error),
    };
    let markup = layout(
        "Instance variables",
        Some(principal),
        "/admin",
        html! {
            h1 { "Instance variables" }
            (super::admin::admin_tabs("variables"))
            (error_box(error.map(|(_, message)| message)))
            (variables_section(principal, &variables, "/admin/variables",
                "Given to every project's pipelines; a project's own variable of the same key wins."))
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    (status, markup).into_response()
}

pub async fn set_instance_variable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<VariableForm>,
) -> Response {
    let (key, input) = form.into_input();
    match crate::api::variables::set_instance_variable(&state, &principal, key, input).await {
        Ok(()) => Redirect::to("/admin/variables").into_response(),
        Err(error) => render_instance(&state, &principal, Some((error.status, &error.message))).await,
    }
}

pub async fn delete_instance_variable(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<DeleteVariableForm>,
) -> Response {
    match state.store.delete_instance_variable(&form.key, &form.environment_scope, principal.actor()).await {
        Ok(()) => Redirect::to("/admin/variables").into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            render_instance(&state, &principal, Some((error.status, &error.message))).await
        }
    }
}
