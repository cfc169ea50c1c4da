//! The web UI: server-rendered HTML (maud), one embedded stylesheet, no JavaScript needed
//! except on the metrics graph, which draws what Prometheus's HTTP API answers (see `metrics`).
//! Every form posts with the session's CSRF token; the route table decides access.

mod account;
mod admin;
mod alerting;
mod ansi;
mod checks;
mod deployments;
mod incidents;
mod login;
mod metrics;
mod oncall;
mod pipelines;
mod projects;
mod rules;
mod schedules;
mod settings;
mod signals;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use crate::auth::{Access, CSRF_FIELD, Principal};
use crate::routes::{RouteTable, Surface};

/// The metrics subsystem's pages (see `crate::subsystem`).
pub use metrics::routes as metrics_routes;

pub const STYLESHEET: &str = include_str!("../../assets/style.css");
const LIVE_SCRIPT: &str = include_str!("../../assets/live.js");

/// The product areas, in navigation order. Only areas that exist are listed: a link to a
/// page saying "not available yet" costs a new user a click and trust. Later issues add the
/// rest (logs, infrastructure, security, insights) as they ship.
pub const AREAS: &[(&str, &str)] = &[
    ("/projects", "Projects"),
    ("/pipelines", "Pipelines"),
    ("/deployments", "Deployments"),
    ("/metrics/graph", "Metrics"),
    ("/incidents", "Incidents"),
    (alerting::AREA, "Alerts"),
    ("/oncall", "On-call"),
    ("/checks", "Checks"),
];

/// The icon browsers show in tabs and bookmarks: the brand's first letter on the accent colour.
/// Served as SVG (a few hundred bytes, sharp at any size) under both the address the page links
/// and `/favicon.ico`, which browsers ask for on their own.
const FAVICON: &str = include_str!("../../assets/favicon.svg");

pub fn routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let ui = Surface::Ui;
    table
        .add(ui, Method::GET, "/assets/style.css", Public, stylesheet)
        .add(ui, Method::GET, "/assets/live.js", Public, live_script)
        .add(ui, Method::GET, "/assets/favicon.svg", Public, favicon)
        .add(ui, Method::GET, "/favicon.ico", Public, favicon)
        .add(ui, Method::GET, "/", Authenticated, home)
}

/// The accounts subsystem's routes (see `crate::subsystem`).
pub fn accounts_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::{Maintainer, Owner, Viewer};
    let ui = Surface::Ui;
    table
        .add(ui, Method::GET, "/login", Public, login::form)
        .add(ui, Method::POST, "/login", Public, login::submit)
        .add(ui, Method::POST, "/logout", Authenticated, login::logout)
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
        .add(ui, Method::GET, "/settings", Authenticated, account::settings)
        .add(ui, Method::POST, "/settings/tokens", AuthenticatedWrite, account::create_token)
        .add(ui, Method::POST, "/settings/tokens/{id}/revoke", AuthenticatedWrite, account::revoke_token)
        .add(ui, Method::POST, "/settings/password", Authenticated, account::change_password)
        .add(ui, Method::GET, "/admin/users", Admin, admin::users)
        .add(ui, Method::POST, "/admin/users", Admin, admin::create_user)
        .add(ui, Method::GET, "/admin/audit", Admin, admin::audit)
}

/// The ci subsystem's routes (see `crate::subsystem`).
pub fn ci_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::{Developer, Maintainer, Viewer};
    let ui = Surface::Ui;
    table
        .add(ui, Method::GET, "/projects/{project}/pipelines", Project(Viewer), pipelines::list)
        .add(ui, Method::POST, "/projects/{project}/pipelines", Project(Developer), pipelines::run)
        .add(ui, Method::GET, "/projects/{project}/pipelines/{pipeline}", Project(Viewer), pipelines::show)
        .add(ui, Method::POST, "/projects/{project}/pipelines/{pipeline}/cancel", Project(Developer), pipelines::cancel)
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
        .add(ui, Method::POST, "/projects/{project}/settings/ci/triggers", Project(Maintainer), settings::add_trigger)
        .add(
            ui,
            Method::POST,
            "/projects/{project}/settings/ci/triggers/{trigger}/delete",
            Project(Maintainer),
            settings::delete_trigger,
        )
        .add(ui, Method::GET, "/pipelines", Authenticated, pipelines::overview)
}

/// The deployments subsystem's routes (see `crate::subsystem`).
pub fn deployments_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::{Developer, Viewer};
    let ui = Surface::Ui;
    table
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
        .add(ui, Method::GET, "/deployments", Authenticated, deployments::overview)
}

/// The notifications subsystem's routes (see `crate::subsystem`).
pub fn notifications_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::Maintainer;
    let ui = Surface::Ui;
    table
        .add(ui, Method::POST, "/projects/{project}/settings/ci/hooks", Project(Maintainer), settings::add_hook)
        .add(ui, Method::GET, "/projects/{project}/settings/ci/hooks/{hook}", Project(Maintainer), settings::hook_log)
        .add(
            ui,
            Method::POST,
            "/projects/{project}/settings/ci/hooks/{hook}/delete",
            Project(Maintainer),
            settings::delete_hook,
        )
}

/// The agents subsystem's routes (see `crate::subsystem`).
pub fn agents_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let ui = Surface::Ui;
    table
        .add(ui, Method::GET, "/admin/agents", Admin, admin::agents)
        .add(ui, Method::POST, "/admin/agents", Admin, admin::create_agent)
        .add(ui, Method::POST, "/admin/agents/{id}/revoke", Admin, admin::revoke_agent)
}

/// The alerting subsystem's pages (see `crate::subsystem`): incidents, on-call, and the
/// engine's alerts and silences. Writes need a writing credential, as in the API; which
/// incident a person may act on is the incidents service's decision.
pub fn alerting_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let ui = Surface::Ui;
    table
        .add(ui, Method::GET, "/incidents", Authenticated, incidents::list)
        .add(ui, Method::GET, "/incidents/{id}", Authenticated, incidents::show)
        .add(ui, Method::POST, "/incidents/{id}/acknowledge", AuthenticatedWrite, incidents::acknowledge)
        .add(ui, Method::POST, "/incidents/{id}/resolve", AuthenticatedWrite, incidents::resolve)
        .add(ui, Method::POST, "/incidents/{id}/notes", AuthenticatedWrite, incidents::add_note)
        .add(ui, Method::GET, "/oncall", Authenticated, oncall::page)
        .add(ui, Method::GET, "/alerting/alerts", Authenticated, alerting::alerts)
        .add(ui, Method::GET, "/alerting/silences", Authenticated, alerting::silences)
        .add(ui, Method::POST, "/alerting/silences", AuthenticatedWrite, alerting::create_silence)
        .add(ui, Method::POST, "/alerting/silences/{silence_id}/expire", AuthenticatedWrite, alerting::expire_silence)
}

/// The checks subsystem's pages (see `crate::subsystem`).
pub fn checks_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let ui = Surface::Ui;
    table.add(ui, Method::GET, "/checks", Authenticated, checks::page).add(
        ui,
        Method::POST,
        "/checks/{check}/run",
        AuthenticatedWrite,
        checks::run,
    )
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

async fn favicon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], FAVICON)
        .into_response()
}

async fn home() -> Redirect {
    Redirect::to("/projects")
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
                link rel="icon" type="image/svg+xml" href="/assets/favicon.svg";
            }
            body {
                a.skip href="#content" { "Skip to content" }
                header.top {
                    a.brand href="/" { "opsloop" }
                    @if let Some(principal) = principal {
                        nav.areas aria-label="Areas" {
                            ul {
                                @for (path, label) in AREAS {
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

/// A page for refusals and failures, with the status it stands for. Handlers do not hold the
/// principal at every failure, so this renders the frame without navigation and marks the
/// response with [`ErrorPage`]; the route middleware, which knows who is asking, renders it
/// again in the full frame (see [`with_navigation`]).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    error_page_for(None, status, message)
}

/// An error page in the frame of a signed-in person (with the navigation) or of a visitor.
pub fn error_page_for(principal: Option<&Principal>, status: StatusCode, message: &str) -> Response {
    let mut response = (status, error_markup(principal, status, message)).into_response();
    response.extensions_mut().insert(ErrorPage { status, message: message.to_owned() });
    response
}

fn error_markup(principal: Option<&Principal>, status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    layout(
        title,
        principal,
        "",
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/" { "Back to opsloop" } }
        },
    )
}

/// What an error page said, carried on its response so it can be drawn again with navigation.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    status: StatusCode,
    message: String,
}

/// An error page rendered without navigation, drawn again in `principal`'s frame; any other
/// response as it is.
pub fn with_navigation(response: Response, principal: Option<&Principal>) -> Response {
    let Some(principal) = principal else { return response };
    let Some(page) = response.extensions().get::<ErrorPage>().cloned() else { return response };
    let (mut parts, _) = response.into_parts();
    let redrawn = error_page_for(Some(principal), page.status, &page.message);
    let (_, body) = redrawn.into_parts();
    // Headers set on the way (cookies, for one) stay; only the body and its length change.
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// Text with `backticks` around code, as people write it in descriptions: the quoted parts
/// as `<code>`, the backticks themselves dropped. An unpaired backtick stays as typed.
pub fn inline_code(text: &str) -> Markup {
    let parts: Vec<&str> = text.split('`').collect();
    // An even number of parts means an odd number of backticks: the last one has no partner.
    let paired = if parts.len().is_multiple_of(2) { parts.len() - 1 } else { parts.len() };
    html! {
        @for (i, part) in parts.iter().enumerate() {
            @if i >= paired { "`" (part) }
            @else if i % 2 == 1 { code { (part) } }
            @else { (part) }
        }
    }
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
        "acknowledged" => "Incident acknowledged: its escalation stopped.",
        "resolved" => "Incident resolved.",
        "note-added" => "Note added to the timeline.",
        "silenced" => "Silence created: matching alerts are suppressed until it ends.",
        "silence-expired" => "Silence expired.",
        "check-passed" => "The check ran and passed.",
        "check-failed" => "The check ran and failed: its failed conditions are listed below.",
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
