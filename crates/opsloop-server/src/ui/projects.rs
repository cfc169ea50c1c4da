//! Project pages: the list with a create form, and one project with its settings and members.

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use opsloop_core::Role;
use serde::Deserialize;

use super::{csrf_field, error_box, layout, notice, role_options};
use crate::api::projects::{
    CreateProject, DEFAULT_BRANCH, DEFAULT_PIPELINE_FILE, UpdateProject, create_project, remove_project_member,
    set_project_member, update_project,
};
use crate::auth::{Principal, ProjectContext};
use crate::routes::urlencode;
use crate::state::AppState;
use crate::views::human_time;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    notice: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ProjectForm {
    name: String,
    repo_url: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    default_branch: String,
    #[serde(default)]
    pipeline_file: String,
}

#[derive(Debug, Deserialize)]
pub struct EditForm {
    description: String,
    repo_url: String,
    default_branch: String,
    pipeline_file: String,
}

#[derive(Debug, Deserialize)]
pub struct MemberForm {
    username: String,
    role: String,
}

fn non_empty(text: String) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<ListQuery>,
) -> Response {
    render_list(&state, &principal, query.after, query.notice.as_deref(), None, None).await
}

async fn render_list(
    state: &AppState,
    principal: &Principal,
    after: Option<String>,
    notice_key: Option<&str>,
    error: Option<(StatusCode, &str)>,
    form: Option<&ProjectForm>,
) -> Response {
    let member = if principal.user.is_admin { None } else { Some(principal.user.id) };
    let page = match state.store.list_projects(member, &opsloop_store::PageRequest { after, limit: 50 }).await {
        Ok(page) => page,
        Err(error) => return super::failure(error),
    };
    let value = |pick: fn(&ProjectForm) -> &str| form.map(pick).unwrap_or_default().to_owned();
    let markup = layout(
        "Projects",
        Some(principal),
        "/projects",
        html! {
            h1 { "Projects" }
            (notice(notice_key))
            @if page.items.is_empty() {
                p.muted { "No projects yet. Create the first one below." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Repository" } th scope="col" { "Default branch" } th scope="col" { "Updated" } } }
                    tbody {
                        @for project in &page.items {
                            tr {
                                td { a href={ "/projects/" (project.name) } { (project.name) } }
                                td { code { (project.repo_url) } }
                                td { (project.default_branch) }
                                td { (human_time(project.updated_at)) }
                            }
                        }
                    }
                }
                @if let Some(cursor) = &page.next_cursor {
                    p { a href={ "/projects?after=" (urlencode(cursor)) } { "Next page" } }
                }
            }
            @if principal.cap >= Role::Developer {
                h2 id="new-project" { "New project" }
                (error_box(error.map(|(_, message)| message)))
                form.stack method="post" action="/projects" aria-labelledby="new-project" {
                    (csrf_field(principal))
                    label { "Name" small { "lowercase letters, digits, - _ ." } input type="text" name="name" required maxlength="64" pattern="[a-z0-9][a-z0-9._\\-]*" value=(value(|f| &f.name)); }
                    label { "Repository" small { "a git URL or an absolute path to a local repository" } input type="text" name="repo_url" required value=(value(|f| &f.repo_url)); }
                    label { "Description" input type="text" name="description" value=(value(|f| &f.description)); }
                    label { "Default branch" input type="text" name="default_branch" placeholder=(DEFAULT_BRANCH) value=(value(|f| &f.default_branch)); }
                    label { "Pipeline file" input type="text" name="pipeline_file" placeholder=(DEFAULT_PIPELINE_FILE) value=(value(|f| &f.pipeline_file)); }
                    button type="submit" { "Create project" }
                }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    (status, markup).into_response()
}

pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<ProjectForm>,
) -> Response {
    let input = CreateProject {
        name: form.name.trim().to_owned(),
        repo_url: form.repo_url.trim().to_owned(),
        description: form.description.trim().to_owned(),
        default_branch: non_empty(form.default_branch.clone()),
        pipeline_file: non_empty(form.pipeline_file.clone()),
    };
    match create_project(&state, &principal, input).await {
        Ok(project) => Redirect::to(&format!("/projects/{}?notice=created", project.name)).into_response(),
        Err(error) => {
            render_list(&state, &principal, None, None, Some((error.status, &error.message)), Some(&form)).await
        }
    }
}

pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Query(query): Query<NoticeQuery>,
) -> Response {
    render_project(&state, &principal, &context, query.notice.as_deref(), None).await
}

async fn render_project(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    notice_key: Option<&str>,
    error: Option<(StatusCode, &str)>,
) -> Response {
    let members = match state.store.list_members(context.project.id).await {
        Ok(members) => members,
        Err(error) => return super::failure(error),
    };
    let project = &context.project;
    let base = format!("/projects/{}", project.name);
    let can_manage = context.role >= Role::Maintainer;
    let markup = layout(
        &project.name,
        Some(principal),
        "/projects",
        html! {
            p { a href="/projects" { "← Projects" } }
            h1 { (project.name) " " span.badge { "your role: " (context.role) } }
            (notice(notice_key))
            (error_box(error.map(|(_, message)| message)))
            @if !project.description.is_empty() { p { (super::inline_code(&project.description)) } }
            dl.facts {
                dt { "Repository" } dd { code { (project.repo_url) } }
                dt { "Default branch" } dd { (project.default_branch) }
                dt { "Pipeline file" } dd { code { (project.pipeline_file) } }
                dt { "Created" } dd { (human_time(project.created_at)) }
                dt { "Updated" } dd { (human_time(project.updated_at)) }
            }
            p { a.button href={ (base) "/pipelines" } { "Pipelines" } " " a.button href={ (base) "/environments" } { "Environments" } }
        h2 { "Members" }
            table {
                thead { tr { th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "Added" } @if can_manage { th scope="col" { span.muted { "Actions" } } } } }
                tbody {
                    @for member in &members {
                        tr {
                            td { (member.username) }
                            td { (member.role) }
                            td { (human_time(member.created_at)) }
                            @if can_manage {
                                td {
                                    form.inline method="post" action={ (base) "/members/" (member.username) "/remove" } {
                                        (csrf_field(principal))
                                        button.secondary type="submit" aria-label={ "Remove " (member.username) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if can_manage {
                (member_form(principal, &base, context.role))
                (edit_form(principal, project, &base))
            }
            @if context.role >= Role::Owner {
                h2 { "Danger zone" }
                form method="post" action={ (base) "/delete" } {
                    (csrf_field(principal))
                    label { "Type the project name to delete it and everything in it"
                        input type="text" name="confirm" required autocomplete="off"; }
                    p { button.danger type="submit" { "Delete project" } }
                }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    (status, markup).into_response()
}

fn member_form(principal: &Principal, base: &str, own_role: Role) -> Markup {
    let grantable: Vec<Role> =
        Role::PROJECT_ROLES.into_iter().filter(|role| *role < Role::Owner || own_role >= Role::Owner).collect();
    html! {
        h3 id="add-member" { "Add or change a member" }
        form.stack method="post" action={ (base) "/members" } aria-labelledby="add-member" {
            (csrf_field(principal))
            label { "Username" input type="text" name="username" required maxlength="64"; }
            label { "Role" select name="role" { (role_options(&grantable, Role::Developer)) } }
            button type="submit" { "Save member" }
        }
    }
}

fn edit_form(principal: &Principal, project: &opsloop_store::Project, base: &str) -> Markup {
    html! {
        h2 id="settings" { "Settings" }
        form.stack method="post" action={ (base) "/edit" } aria-labelledby="settings" {
            (csrf_field(principal))
            label { "Description" input type="text" name="description" value=(project.description); }
            label { "Repository" input type="text" name="repo_url" required value=(project.repo_url); }
            label { "Default branch" input type="text" name="default_branch" required value=(project.default_branch); }
            label { "Pipeline file" input type="text" name="pipeline_file" required value=(project.pipeline_file); }
            button type="submit" { "Save settings" }
        }
    }
}

pub async fn edit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<EditForm>,
) -> Response {
    let input = UpdateProject {
        description: Some(form.description.trim().to_owned()),
        repo_url: Some(form.repo_url.trim().to_owned()),
        default_branch: Some(form.default_branch.trim().to_owned()),
        pipeline_file: Some(form.pipeline_file.trim().to_owned()),
    };
    match update_project(&state, &principal, &context, input).await {
        Ok(project) => Redirect::to(&format!("/projects/{}?notice=saved", project.name)).into_response(),
        Err(error) => render_project(&state, &principal, &context, None, Some((error.status, &error.message))).await,
    }
}

pub async fn set_member(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<MemberForm>,
) -> Response {
    match set_project_member(&state, &principal, &context, form.username.trim(), &form.role).await {
        Ok(()) => Redirect::to(&format!("/projects/{}?notice=member-saved", context.project.name)).into_response(),
        Err(error) => render_project(&state, &principal, &context, None, Some((error.status, &error.message))).await,
    }
}

pub async fn remove_member(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path((_, username)): Path<(String, String)>,
) -> Response {
    match remove_project_member(&state, &principal, &context, &username).await {
        Ok(()) => Redirect::to(&format!("/projects/{}?notice=member-removed", context.project.name)).into_response(),
        Err(error) => render_project(&state, &principal, &context, None, Some((error.status, &error.message))).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Form(form): Form<DeleteForm>,
) -> Response {
    if form.confirm.trim() != context.project.name {
        let message = "The name you typed does not match; nothing was deleted.";
        return render_project(&state, &principal, &context, None, Some((StatusCode::UNPROCESSABLE_ENTITY, message)))
            .await;
    }
    match state.store.delete_project(&context.project.name, principal.actor()).await {
        Ok(()) => {
            crate::objects::forget_project(&state, context.project.id);
            Redirect::to("/projects?notice=deleted").into_response()
        }
        Err(error) => super::failure(error),
    }
}
