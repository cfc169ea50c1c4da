//! The web UI: server-rendered HTML (maud), one embedded stylesheet, no JavaScript needed.
//! Every form posts with the session's CSRF token; the route table decides access.

mod account;
mod admin;
mod ansi;
mod deployments;
mod login;
mod pipelines;
mod projects;
mod schedules;
mod settings;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use crate::auth::{Access, CSRF_FIELD, Principal};
use crate::routes::{RouteTable, Surface};

pub const STYLESHEET: &str = include_str!("../../assets/style.css");
const LIVE_SCRIPT: &str = include_str!("../../assets/live.js");

/// The product areas, in navigation order; later issues fill the ones marked `coming`.
pub const AREAS: &[(&str, &str, &str)] = &[
    ("/projects", "Projects", ""),
    ("/pipelines", "Pipelines", "Pipelines run your .gitlab-ci.yml on every push, on schedules and on demand."),
    ("/deployments", "Deployments", "Environments, releases and zero-downtime deploys with automatic rollback."),
    ("/monitoring", "Monitoring", "Checks, scraped metrics, PromQL and dashboards."),
    ("/logs", "Logs", "Every job's and service's output, searchable, with live tail."),
    ("/alerts", "Alerts & Incidents", "Alert rules, routing, incidents and on-call."),
    ("/infrastructure", "Infrastructure", "Terraform-language plans, applies and drift detection."),
    ("/security", "Security", "Secrets, secret scanning, dependency audit and SBOMs."),
    ("/insights", "Insights", "DORA metrics computed from what opsloop saw."),
];

pub fn routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::{Developer, Maintainer, Owner, Viewer};
    let ui = Surface::Ui;
    let mut table = table
        .add(ui, Method::GET, "/assets/style.css", Public, stylesheet)
        .add(ui, Method::GET, "/assets/live.js", Public, live_script)
        .add(ui, Method::GET, "/login", Public, login::form)
        .add(ui, Method::POST, "/login", Public, login::submit)
        .add(ui, Method::POST, "/logout", Authenticated, login::logout)
        .add(ui, Method::GET, "/", Authenticated, home)
        .add(ui, Method::GET, "/projects", Authenticated, projects::list)
        .add(ui, Method::POST, "/projects", AuthenticatedWrite, projects::create)
        .add(ui, Method::GET, "/projects/{project}", Project(Viewer), projects::show)
        .add(ui, Method::POST, "/projects/{project}/edit", Project(Maintainer), projects::edit)
        .add(ui, Method::POST, "/projects/{project}/members", Project(Maintainer), projects::set_member)
        .add(
            ui,
            Method::POST,
            "/projects/{project}/members/{username}/remove",
            Project(Maintainer),
            projects::remove_member,
        )
        .add(ui, Method::POST, "/projects/{project}/delete", Project(Owner), projects::delete)
        .add(ui, Method::GET, "/projects/{project}/pipelines", Project(Viewer), pipelines::list)
        .add(ui, Method::POST, "/projects/{project}/pipelines", Project(Developer), pipelines::run)
        .add(ui, Method::GET, "/projects/{project}/pipelines/{pipeline}", Project(Viewer), pipelines::show)
        .add(ui, Method::POST, "/projects/{project}/pipelines/{pipeline}/cancel", Project(Developer), pipelines::cancel)
        .add(ui, Method::GET, "/projects/{project}/environments", Project(Viewer), deployments::environments)
        .add(ui, Method::GET, "/projects/{project}/compare", Project(Viewer), deployments::compare)
        .add(ui, Method::POST, "/projects/{project}/deployments", Project(Developer), deployments::deploy_form)
        .add(ui, Method::GET, "/projects/{project}/deployments/{deployment}", Project(Viewer), deployments::show)
        .add(ui, Method::POST, "/projects/{project}/rollbacks", Project(Developer), deployments::rollback_form)
        .add(
            ui,
            Method::POST,
            "/projects/{project}/environments/{environment}/stop",
            Project(Developer),
            deployments::stop_form,
        )
        .add(
            ui,
            Method::POST,
            "/projects/{project}/deployments/{deployment}/approve",
            Project(Developer),
            deployments::approve_form,
        )
        .add(ui, Method::GET, "/projects/{project}/schedules", Project(Viewer), schedules::list)
        .add(ui, Method::POST, "/projects/{project}/schedules", Project(Maintainer), schedules::create)
        .add(
            ui,
            Method::POST,
            "/projects/{project}/schedules/{schedule}/enable",
            Project(Maintainer),
            schedules::enable,
        )
        .add(
            ui,
            Method::POST,
            "/projects/{project}/schedules/{schedule}/disable",
            Project(Maintainer),
            schedules::disable,
        )
        .add(
            ui,
            Method::POST,
            "/projects/{project}/schedules/{schedule}/delete",
            Project(Maintainer),
            schedules::delete,
        )
        .add(ui, Method::POST, "/projects/{project}/polling", Project(Maintainer), schedules::polling)
        .add(ui, Method::GET, "/projects/{project}/jobs/{job}", Project(Viewer), pipelines::job)
        .add(ui, Method::GET, "/projects/{project}/jobs/{job}/live", Project(Viewer), pipelines::live)
        .add(ui, Method::POST, "/projects/{project}/jobs/{job}/retry", Project(Developer), pipelines::retry_job)
        .add(ui, Method::POST, "/projects/{project}/jobs/{job}/play", Project(Developer), pipelines::play_job)
        .add(ui, Method::POST, "/projects/{project}/jobs/{job}/cancel", Project(Developer), pipelines::cancel_job)
        .add(ui, Method::GET, "/settings", Authenticated, account::settings)
        .add(ui, Method::POST, "/settings/tokens", AuthenticatedWrite, account::create_token)
        .add(ui, Method::POST, "/settings/tokens/{id}/revoke", AuthenticatedWrite, account::revoke_token)
        .add(ui, Method::POST, "/settings/password", Authenticated, account::change_password)
        .add(ui, Method::GET, "/admin/users", Admin, admin::users)
        .add(ui, Method::POST, "/admin/users", Admin, admin::create_user)
        .add(ui, Method::GET, "/admin/variables", Admin, settings::instance_variables)
        .add(ui, Method::POST, "/admin/variables", Admin, settings::set_instance_variable)
        .add(ui, Method::POST, "/admin/variables/delete", Admin, settings::delete_instance_variable)
        .add(ui, Method::GET, "/projects/{project}/settings/ci", Project(Maintainer), settings::page)
        .add(ui, Method::POST, "/projects/{project}/settings/ci/variables", Project(Maintainer), settings::set_variable)
        .add(
            ui,
            Method::POST,
            "/projects/{project}/settings/ci/variables/delete",
            Project(Maintainer),
            settings::delete_variable,
        )
        .add(ui, Method::POST, "/projects/{project}/settings/ci/limits", Project(Maintainer), settings::set_limits)
        .add(ui, Method::POST, "/projects/{project}/settings/ci/hooks", Project(Maintainer), settings::add_hook)
        .add(ui, Method::POST, "/projects/{project}/settings/ci/triggers", Project(Maintainer), settings::add_trigger)
        .add(
            ui,
            Method::POST,
            "/projects/{project}/settings/ci/triggers/{trigger}/delete",
            Project(Maintainer),
            settings::delete_trigger,
        )
        .add(ui, Method::GET, "/projects/{project}/settings/ci/hooks/{hook}", Project(Maintainer), settings::hook_log)
        .add(
            ui,
            Method::POST,
            "/projects/{project}/settings/ci/hooks/{hook}/delete",
            Project(Maintainer),
            settings::delete_hook,
        )
        .add(ui, Method::GET, "/admin/agents", Admin, admin::agents)
        .add(ui, Method::POST, "/admin/agents", Admin, admin::create_agent)
        .add(ui, Method::POST, "/admin/agents/{id}/revoke", Admin, admin::revoke_agent)
        .add(ui, Method::GET, "/admin/audit", Admin, admin::audit);
    table = table.add(ui, Method::GET, "/pipelines", Authenticated, pipelines::overview);
    for (path, _, blurb) in AREAS {
        if !blurb.is_empty() && *path != "/pipelines" {
            table = table.add(ui, Method::GET, path, Authenticated, area_page);
        }
    }
    table
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], STYLESHEET)
        .into_response()
}

async fn live_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        LIVE_SCRIPT,
    )
        .into_response()
}

async fn home() -> Redirect {
    Redirect::to("/projects")
}

async fn area_page(axum::Extension(principal): axum::Extension<Principal>, uri: axum::http::Uri) -> Markup {
    let path = uri.path().to_owned();
    let (title, blurb) =
        AREAS.iter().find(|(area, _, _)| *area == path).map_or(("Not found", ""), |(_, title, blurb)| (*title, *blurb));
    layout(
        title,
        Some(&principal),
        &path,
        html! {
            h1 { (title) }
            p { (blurb) }
            p.muted { "This area is not available in this version of opsloop yet." }
        },
    )
}

/// The page frame: skip link, navigation of all areas, account menu, content.
pub fn layout(title: &str, principal: Option<&Principal>, current: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · opsloop" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body {
                a.skip href="#content" { "Skip to content" }
                header.top {
                    a.brand href="/" { "opsloop" }
                    @if let Some(principal) = principal {
                        nav.areas aria-label="Areas" {
                            ul {
                                @for (path, label, _) in AREAS {
                                    li { a href=(path) aria-current=[(current.starts_with(path)).then_some("page")] { (label) } }
                                }
                            }
                        }
                        nav.account aria-label="Account" {
                            ul {
                                li { a href="/settings" { (principal.user.username) } }
                                @if principal.is_admin() {
                                    li { a href="/admin/users" { "Admin" } }
                                }
                                li {
                                    form.inline method="post" action="/logout" {
                                        (csrf_field(principal))
                                        button.link type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                }
                main id="content" { (content) }
            }
        }
    }
}

/// The hidden CSRF field every form of a signed-in page carries.
pub fn csrf_field(principal: &Principal) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(principal.csrf_token().unwrap_or_default()); }
}

/// A page for refusals and failures, with the status it stands for.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let page = layout(
        title,
        None,
        "",
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/" { "Back to opsloop" } }
        },
    );
    (status, page).into_response()
}

/// An HTML page for a failure from the store or the shared API logic.
pub fn failure(error: impl Into<crate::error::ApiError>) -> Response {
    let error = error.into();
    error_page(error.status, &error.message)
}

/// A fixed message chosen by a `?notice=` key; never echoes request text.
pub fn notice_text(key: Option<&str>) -> Option<&'static str> {
    Some(match key? {
        "created" => "Created.",
        "saved" => "Saved.",
        "deleted" => "Deleted.",
        "member-saved" => "Member saved.",
        "member-removed" => "Member removed.",
        "revoked" => "Token revoked.",
        "password-changed" => "Password changed.",
        "must-change" => "Choose a new password before you go on: the one you signed in with was for one use only.",
        _ => return None,
    })
}

pub fn notice(key: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = notice_text(key) { p.notice role="status" { (text) } }
    }
}

pub fn error_box(message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message { p.error role="alert" { (message) } }
    }
}

/// Role choices for a `<select>`, with `selected` preselected.
pub fn role_options(roles: &[opsloop_core::Role], selected: opsloop_core::Role) -> Markup {
    html! {
        @for role in roles {
            option value=(role.as_str()) selected[*role == selected] { (role.as_str()) }
        }
    }
}
