//! Admin pages: users, agents and the audit log.

use axum::Extension;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{csrf_field, error_box, failure, layout};
use crate::accounts;
use crate::auth::Principal;
use crate::routes::urlencode;
use crate::state::AppState;
use crate::views::human_time;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    username: String,
    #[serde(default)]
    admin: Option<String>,
}

pub fn admin_tabs(current: &str) -> Markup {
    html! {
        nav aria-label="Admin" {
            p {
                a href="/admin/users" aria-current=[(current == "users").then_some("page")] { "Users" }
                " · "
                a href="/admin/agents" aria-current=[(current == "agents").then_some("page")] { "Agents" }
                " · "
                a href="/admin/variables" aria-current=[(current == "variables").then_some("page")] { "Variables" }
                " · "
                a href="/admin/audit" aria-current=[(current == "audit").then_some("page")] { "Audit log" }
            }
        }
    }
}

pub async fn users(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<PageQuery>,
) -> Response {
    render_users(&state, &principal, query.after, None, None).await
}

async fn render_users(
    state: &AppState,
    principal: &Principal,
    after: Option<String>,
    created: Option<(&str, Option<&str>)>,
    error: Option<(StatusCode, &str)>,
) -> Response {
    let page = match state.store.list_users(&opsloop_store::PageRequest { after, limit: 100 }).await {
        Ok(page) => page,
        Err(error) => return failure(error),
    };
    let markup = layout(
        "Users",
        Some(principal),
        "/admin",
        html! {
            h1 { "Users" }
            (admin_tabs("users"))
            (error_box(error.map(|(_, message)| message)))
            @if let Some((username, password)) = created {
                div.notice role="status" {
                    p { "User " strong { (username) } " created." }
                    @if let Some(password) = password {
                        p { "One-time password (shown only now; they choose a new one at first sign-in):" }
                        p.secret { (password) }
                    }
                }
            }
            table {
                thead { tr { th scope="col" { "Username" } th scope="col" { "Admin" } th scope="col" { "Created" } } }
                tbody {
                    @for user in &page.items {
                        tr { td { (user.username) } td { @if user.is_admin { "yes" } @else { "no" } } td { (human_time(user.created_at)) } }
                    }
                }
            }
            @if let Some(cursor) = &page.next_cursor { p { a href={ "/admin/users?after=" (urlencode(cursor)) } { "Next page" } } }
            h2 id="new-user" { "New user" }
            form.stack method="post" action="/admin/users" aria-labelledby="new-user" {
                (csrf_field(principal))
                label { "Username" input type="text" name="username" required maxlength="64"; }
                label { span { input type="checkbox" name="admin" value="on"; " Instance admin" } }
                button type="submit" { "Create user" }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    (status, markup).into_response()
}

pub async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<UserForm>,
) -> Response {
    let username = form.username.trim();
    match accounts::create_user(&state.store, username, None, form.admin.is_some(), principal.actor()).await {
        Ok((user, password)) => {
            render_users(&state, &principal, None, Some((&user.username, password.as_deref())), None).await
        }
        Err(error) => {
            let error = crate::error::ApiError::from(error);
            render_users(&state, &principal, None, None, Some((error.status, &error.message))).await
        }
    }
}

pub async fn audit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<PageQuery>,
) -> Response {
    let page = match state.store.list_audit(&opsloop_store::PageRequest { after: query.after, limit: 100 }).await {
        Ok(page) => page,
        Err(error) => return failure(error),
    };
    layout("Audit log", Some(&principal), "/admin", html! {
        h1 { "Audit log" }
        (admin_tabs("audit"))
        p.hint { "Every change, newest first. The log is append-only: the database refuses edits and deletions." }
        table {
            thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Detail" } th scope="col" { "From" } } }
            tbody {
                @for entry in &page.items {
                    tr {
                        td { (human_time(entry.at)) }
                        td { (entry.actor) }
                        td { code { (entry.action) } }
                        td { (entry.target) }
                        td { (entry.detail) }
                        td { (entry.source_ip) }
                    }
                }
            }
        }
        @if let Some(cursor) = &page.next_cursor { p { a href={ "/admin/audit?after=" (urlencode(cursor)) } { "Older entries" } } }
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct AgentForm {
    name: String,
}

pub async fn agents(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    render_agents(&state, &principal, None, None).await
}

async fn render_agents(
    state: &AppState,
    principal: &Principal,
    created: Option<(&str, &str)>,
    error: Option<(StatusCode, &str)>,
) -> Response {
    let agents = match state.store.list_agents().await {
        Ok(agents) => agents,
        Err(error) => return failure(error),
    };
    let now = state.clock.now_ms();
    let server = state.config.external_url.clone().unwrap_or_else(|| format!("http://{}", state.config.listen));
    let markup = layout(
        "Agents",
        Some(principal),
        "/admin",
        html! {
            h1 { "Agents" }
            (admin_tabs("agents"))
            p.hint {
                "Agents run jobs on other machines with " code { "opsloop agent" } ". Jobs with " code { "tags:" }
                " wait for an agent that has all of them."
                @if state.config.ci.untagged_jobs_on_agents { " Untagged jobs run on agents too." }
                @else { " Untagged jobs run on this server." }
            }
            (error_box(error.map(|(_, message)| message)))
            @if let Some((name, token)) = created {
                div.notice role="status" {
                    p { "Agent " strong { (name) } " registered. Its token is shown only now:" }
                    p.secret { (token) }
                    p { "Save it in a file only the agent's user can read, then start the agent on the machine that runs the jobs:" }
                    pre { code { "opsloop agent --server " (server) " --token-file ./agent-token --tags linux" } }
                }
            }
            @if agents.is_empty() {
                p.muted { "No agents yet." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Tags" }
                        th scope="col" { "Running jobs" } th scope="col" { "Last seen" } th scope="col" { "Host" }
                        th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for agent in agents {
                            @let view = crate::api::agents::AgentView::new(agent.clone(), now);
                            tr {
                                td { (agent.name) }
                                td {
                                    @if view.revoked { span.badge.status-canceled { "revoked" } }
                                    @else if view.online { span.badge.status-success { "online" } }
                                    @else { span.badge { "offline" } }
                                }
                                td { @if agent.tags.is_empty() { span.muted { "none" } } @else { (agent.tags.join(", ")) } }
                                td { (agent.running_jobs) " of " (agent.concurrency) }
                                td { @if agent.last_seen_at > 0 { (human_time(agent.last_seen_at)) } @else { span.muted { "never" } } }
                                td { (agent.hostname) @if !agent.version.is_empty() { " · " (agent.version) } }
                                td {
                                    @if !view.revoked {
                                        form.inline method="post" action={ "/admin/agents/" (agent.id) "/revoke" } {
                                            (csrf_field(principal))
                                            button type="submit" aria-label={ "Revoke agent " (agent.name) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 id="new-agent" { "New agent" }
            form.stack method="post" action="/admin/agents" aria-labelledby="new-agent" {
                (csrf_field(principal))
                label { "Name" input type="text" name="name" required maxlength="64" placeholder="build-1"; }
                button type="submit" { "Register agent" }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    (status, markup).into_response()
}

pub async fn create_agent(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<AgentForm>,
) -> Response {
    match crate::api::agents::create_agent(&state, &principal, form.name.trim()).await {
        Ok(created) => render_agents(&state, &principal, Some((&created.agent.name, &created.token)), None).await,
        Err(error) => render_agents(&state, &principal, None, Some((error.status, &error.message))).await,
    }
}

pub async fn revoke_agent(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Response {
    match state.store.revoke_agent(id, principal.actor()).await {
        Ok(_) => axum::response::Redirect::to("/admin/agents").into_response(),
        Err(error) => failure(error),
    }
}
