//! Admin pages: users and the audit log.

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

fn admin_tabs(current: &str) -> Markup {
    html! {
        nav aria-label="Admin" {
            p {
                a href="/admin/users" aria-current=[(current == "users").then_some("page")] { "Users" }
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
        Err(error) => render_users(&state, &principal, None, None, Some((error.status, &error.message))).await,
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
