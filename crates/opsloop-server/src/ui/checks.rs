//! The Checks page (`/checks`): every check of the `--checks-config` file with its health,
//! kind, last duration and status code and the conditions its last run failed, with a Run now
//! button; and the heartbeats with their state, last ping and when the next is expected (the
//! ping URL for admins only, since the URL is the credential that pings). The checks service
//! (`crate::checks`) decides all of it; these handlers only draw and translate.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use opsloop_checks::heartbeat::HeartbeatState;
use opsloop_checks::scheduler::{CheckStatus, Health};
use opsloop_core::Role;
use serde::Deserialize;

use super::{csrf_field, error_box, failure, layout, notice};
use crate::auth::Principal;
use crate::checks::{self, ChecksError, HeartbeatView};
use crate::state::AppState;
use crate::views::human_time;

const AREA: &str = "/checks";

#[derive(Debug, Default, Deserialize)]
pub struct ChecksQuery {
    #[serde(default)]
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CheckPath {
    check: String,
}

/// A check's health in the pipelines' colours: down reads as a failure, degraded and unknown
/// as waiting, up as fine; paused and maintenance uncoloured, since nobody is judged then.
fn health_badge(health: Health) -> Markup {
    let (class, word) = match health {
        Health::Up => ("status-success", "up"),
        Health::Down => ("status-failed", "down"),
        Health::Degraded => ("status-pending", "degraded"),
        Health::Unknown => ("status-pending", "unknown"),
        Health::Paused => ("", "paused"),
        Health::Maintenance => ("", "maintenance"),
    };
    html! { span class={ "badge health " (class) } data-health=(word) { (word) } }
}

fn heartbeat_badge(state: HeartbeatState) -> Markup {
    let (class, word) = match state {
        HeartbeatState::Up => ("status-success", "up"),
        HeartbeatState::Late => ("status-pending", "late"),
        HeartbeatState::Down => ("status-failed", "down"),
        HeartbeatState::New => ("", "new"),
    };
    html! { span class={ "badge health " (class) } data-health=(word) { (word) } }
}

fn duration(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 { format!("{ms:.0} ms") } else { format!("{:.2} s", ms / 1000.0) }
}

fn when(at_ms: Option<i64>) -> Markup {
    match at_ms {
        Some(at) => html! { (human_time(at)) },
        None => html! { span.muted { "—" } },
    }
}

fn check_row(status: &CheckStatus, principal: &Principal) -> Markup {
    let last = status.last.as_ref();
    html! {
        tr.check data-check=(status.key) {
            td { strong { (status.name) } @if let Some(group) = &status.group { " " span.muted { "(" (group) ")" } } }
            td { (health_badge(status.health)) }
            td { (last.map_or("—", |r| r.kind)) }
            td { @match last { Some(r) => (duration(r.duration)), None => span.muted { "not run yet" } } }
            td { @match last.and_then(|r| r.status) { Some(code) => (code), None => span.muted { "—" } } }
            td { (when(last.map(|r| r.timestamp_ms))) }
            td {
                @if let Some(result) = last {
                    @let failed: Vec<&str> = result.failed_conditions().map(|c| c.condition.as_str()).collect();
                    @if !failed.is_empty() {
                        ul.failed-conditions { @for condition in failed { li { code.error-text { (condition) } } } }
                    }
                    @for error in &result.errors { p.error-text { (error) } }
                }
            }
            td {
                @if principal.cap >= Role::Developer {
                    form.inline method="post" action={ "/checks/" (status.key) "/run" } {
                        (csrf_field(principal))
                        button.secondary type="submit" { "Run now" }
                    }
                }
            }
        }
    }
}

fn heartbeat_row(view: &HeartbeatView, admin: bool) -> Markup {
    let status = &view.status;
    html! {
        tr.heartbeat data-heartbeat=(status.key) {
            td { strong { (view.name) } }
            td { (heartbeat_badge(status.state)) }
            td { (when(status.last_ping_ms)) }
            td { (when(status.expected_ms)) }
            td { @match status.last_exit_code { Some(code) => (code), None => span.muted { "—" } } }
            @if admin {
                td { @if let Some(url) = &view.ping_url { code.ping-url { (url) } } }
            }
        }
    }
}

pub async fn page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<ChecksQuery>,
) -> Response {
    render(&state, &principal, query.notice.as_deref(), None).await
}

async fn render(state: &AppState, principal: &Principal, notice_key: Option<&str>, error: Option<&str>) -> Response {
    let statuses = match checks::statuses(state) {
        Ok(statuses) => Some(statuses),
        // No `--checks-config`: an empty state that says how to get one, not an error page.
        Err(ChecksError::NotConfigured) => None,
        Err(error) => return failure(error),
    };
    let admin = principal.is_admin();
    let heartbeats = match statuses {
        Some(_) => match checks::heartbeats(state, admin).await {
            Ok(heartbeats) => heartbeats,
            Err(error) => return failure(error),
        },
        None => Vec::new(),
    };
    let problem = state.checks.problem();
    layout("Checks", Some(principal), AREA, html! {
        h1 { "Checks" }
        (notice(notice_key))
        (error_box(error))
        (error_box(problem.as_deref()))
        @match &statuses {
            None => {
                div.card #checks-empty {
                    p { "No checks are configured." }
                    p.hint {
                        "Write endpoints (HTTP, TCP, DNS, TLS, commands) and heartbeats in a Gatus-format YAML file and start the server with "
                        code { "opsloop serve --checks-config FILE" } "."
                    }
                }
            }
            Some(statuses) => {
                p.hint {
                    "Each result is also a series (" a href="/metrics/graph?expr=opsloop_check_up" { code { "opsloop_check_up" } } ")"
                    "; a check going down raises a " code { "CheckDown" } " alert (see " a href="/alerting/alerts" { "Alerts" } ")."
                }
                h2 { "Checks" }
                @if statuses.is_empty() { p.muted { "The file has no endpoint." } }
                @else {
                    table.checks {
                        thead { tr {
                            th scope="col" { "Check" } th scope="col" { "Health" } th scope="col" { "Kind" }
                            th scope="col" { "Duration" } th scope="col" { "Status" } th scope="col" { "Last run" }
                            th scope="col" { "Failed conditions" } th scope="col" { span.muted { "Actions" } }
                        } }
                        tbody { @for status in statuses { (check_row(status, principal)) } }
                    }
                }
                h2 { "Heartbeats" }
                @if heartbeats.is_empty() { p.muted { "No heartbeat is configured." } }
                @else {
                    table.heartbeats {
                        thead { tr {
                            th scope="col" { "Heartbeat" } th scope="col" { "State" } th scope="col" { "Last ping" }
                            th scope="col" { "Expected by" } th scope="col" { "Exit code" }
                            @if admin { th scope="col" { "Ping URL" } }
                        } }
                        tbody { @for view in &heartbeats { (heartbeat_row(view, admin)) } }
                    }
                }
            }
        }
    })
    .into_response()
}

pub async fn run(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<CheckPath>,
) -> Response {
    match checks::run_now(&state, &path.check).await {
        // A fixed message by outcome: the flash never echoes request text.
        Ok(result) if result.success => Redirect::to("/checks?notice=check-passed").into_response(),
        Ok(_) => Redirect::to("/checks?notice=check-failed").into_response(),
        Err(ChecksError::Invalid(message)) => render(&state, &principal, None, Some(&message)).await,
        Err(error) => failure(error),
    }
}
