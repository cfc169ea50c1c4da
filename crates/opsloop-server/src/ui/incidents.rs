//! The Incidents pages: the list (`/incidents`, open or all) and one incident
//! (`/incidents/{id}`, the link the on-call pages carry) with its alerts, its timeline and the
//! Acknowledge, Resolve and note forms. Who sees and who may act is decided by the alerting
//! service (`crate::alerting::incidents`); these handlers only draw and translate.

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use opsloop_core::IncidentStatus;
use serde::Deserialize;

use super::{csrf_field, error_box, failure, layout, notice};
use crate::alerting::incidents::{self, VisibleIncident};
use crate::auth::Principal;
use crate::state::AppState;
use crate::views::human_time;

/// Every incident page counts as the Incidents area of the navigation.
const AREA: &str = "/incidents";

/// How many incidents the list shows; older ones are one API call away.
const SHOWN: i64 = 200;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    #[serde(default)]
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct IncidentPath {
    id: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    text: String,
}

/// An incident's status as a badge, in the pipelines' colours: triggered reads as a failure,
/// acknowledged as in progress, resolved as fine.
pub(super) fn status_badge(status: IncidentStatus) -> Markup {
    let class = match status {
        IncidentStatus::Triggered => "status-failed",
        IncidentStatus::Acknowledged => "status-running",
        IncidentStatus::Resolved => "status-success",
    };
    html! { span class={ "badge incident-status " (class) } data-status=(status.as_str()) { (status.as_str()) } }
}

fn severity_badge(severity: &str) -> Markup {
    let class = match severity {
        "critical" | "error" | "page" => "status-failed",
        "warning" => "status-pending",
        _ => "",
    };
    html! { span class={ "badge severity " (class) } { (severity) } }
}

/// How long ago, in the largest unit that is at least one.
pub(super) fn age(now_ms: i64, then_ms: i64) -> String {
    let seconds = (now_ms - then_ms).max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    }
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<ListQuery>,
) -> Response {
    // Open is the default view: what needs someone now.
    let all = query.status.as_deref() == Some("all");
    let listed = incidents::list(&state.store, &principal, None, !all, SHOWN).await;
    let visible = match listed {
        Ok(visible) => visible,
        Err(error) => return failure(error),
    };
    let now = state.clock.now_ms();
    let tabs = [("/incidents", "Open", !all), ("/incidents?status=all", "All", all)];
    layout("Incidents", Some(&principal), AREA, html! {
        h1 { "Incidents" }
        nav.subnav aria-label="Incident filter" {
            ul { @for (href, label, current) in tabs {
                li { a href=(href) aria-current=[current.then_some("page")] { (label) } }
            } }
        }
        p.hint {
            "An incident opens when an alert reaches a receiver with " code { "oncall_configs" }
            " (see " a href="/alerting/alerts" { "Alerts" } "), and pages the person " a href="/oncall" { "on call" } "."
        }
        @if visible.is_empty() {
            p.muted #no-incidents { @if all { "No incident yet." } @else { "No open incident." } }
        } @else {
            table.incidents {
                thead { tr {
                    th scope="col" { "Status" } th scope="col" { "Severity" } th scope="col" { "Title" }
                    th scope="col" { "Project" } th scope="col" { "Assignee" } th scope="col" { "Age" }
                } }
                tbody {
                    @for VisibleIncident { incident, project } in &visible {
                        tr data-incident=(incident.id) {
                            td { (status_badge(incident.status)) }
                            td { (severity_badge(&incident.severity)) }
                            td { a href={ "/incidents/" (incident.id) } { "#" (incident.id) " " (incident.title) } }
                            td { @match project { Some(name) => a href={ "/projects/" (name) } { (name) }, None => span.muted { "instance" } } }
                            td { @match &incident.assignee { Some(who) => (who), None => span.muted { "nobody" } } }
                            td.age title=(human_time(incident.created_at)) { (age(now, incident.created_at)) }
                        }
                    }
                }
            }
        }
    })
    .into_response()
}

pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<IncidentPath>,
    Query(query): Query<NoticeQuery>,
) -> Response {
    render(&state, &principal, path.id, query.notice.as_deref(), None).await
}

/// The incident's page, with a flash (`notice_key`) or an error over it.
async fn render(
    state: &AppState,
    principal: &Principal,
    id: i64,
    notice_key: Option<&str>,
    error: Option<&str>,
) -> Response {
    let (visible, timeline) = match incidents::show(&state.store, principal, id).await {
        Ok(found) => found,
        Err(error) => return failure(error),
    };
    let can_act = match incidents::can_act(&state.store, principal, &visible.incident).await {
        Ok(can) => can,
        Err(error) => return failure(error),
    };
    let incident = &visible.incident;
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&incident.alerts).unwrap_or_default();
    let now = state.clock.now_ms();
    let base = format!("/incidents/{}", incident.id);
    let title = format!("Incident #{}", incident.id);
    layout(&title, Some(principal), AREA, html! {
        p { a href="/incidents" { "← Incidents" } }
        h1 { (title) " " (status_badge(incident.status)) }
        (notice(notice_key))
        (error_box(error))
        p.incident-title { (incident.title) }
        dl.facts {
            dt { "Status" } dd #incident-status { (status_badge(incident.status)) }
            dt { "Severity" } dd { (severity_badge(&incident.severity)) }
            dt { "Project" } dd { @match &visible.project { Some(name) => a href={ "/projects/" (name) } { (name) }, None => span.muted { "the instance (no project label)" } } }
            dt { "Escalation policy" } dd { code { (incident.escalation_policy) } }
            dt { "Assignee" } dd { @match &incident.assignee { Some(who) => (who), None => span.muted { "nobody yet" } } }
            dt { "Opened" } dd { (human_time(incident.created_at)) " (" (age(now, incident.created_at)) " ago)" }
            @if let Some(at) = incident.acknowledged_at { dt { "Acknowledged" } dd { (human_time(at)) } }
            @if let Some(at) = incident.resolved_at { dt { "Resolved" } dd { (human_time(at)) } }
        }
        @if can_act && incident.status.is_open() {
            div.actions {
                @if incident.status == IncidentStatus::Triggered {
                    form.inline method="post" action={ (base) "/acknowledge" } {
                        (csrf_field(principal))
                        button type="submit" { "Acknowledge" }
                    }
                    " "
                }
                form.inline method="post" action={ (base) "/resolve" } {
                    (csrf_field(principal))
                    button.secondary type="submit" { "Resolve" }
                }
            }
        }
        h2 { "Alerts" }
        @if alerts.is_empty() { p.muted { "No alert recorded." } }
        @else {
            table.incident-alerts {
                thead { tr { th scope="col" { "Status" } th scope="col" { "Labels" } th scope="col" { "Summary" } th scope="col" { "Since" } } }
                tbody {
                    @for alert in &alerts {
                        tr {
                            td { span.badge { (alert["status"].as_str().unwrap_or("")) } }
                            td { (json_labels(&alert["labels"])) }
                            td { (alert["annotations"]["summary"].as_str().unwrap_or("")) }
                            td { (alert["startsAt"].as_str().map(crate::views::human_time_of).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        h2 { "Timeline" }
        ol.timeline #incident-timeline {
            @for event in &timeline {
                li data-kind=(event.kind) {
                    span.at title=(human_time(event.at)) { (human_time(event.at)) } " "
                    strong { (event.kind) } " "
                    span.muted { "by " (event.actor) } " "
                    (event_detail(&event.kind, &event.detail))
                }
            }
        }
        @if can_act {
            form.stack method="post" action={ (base) "/notes" } {
                (csrf_field(principal))
                label { "Add a note" textarea name="text" rows="3" required maxlength="10000" {} }
                button type="submit" { "Add note" }
            }
        } @else {
            p.hint { "Acting on this incident needs the developer role (in its project, or for the instance's incidents, a writing credential)." }
        }
    })
    .into_response()
}

/// Labels of an alert as the engine stored them (a JSON object).
fn json_labels(labels: &serde_json::Value) -> Markup {
    html! {
        @if let Some(map) = labels.as_object() {
            @for (name, value) in map { code.label { (name) "=\"" (value.as_str().unwrap_or("")) "\"" } " " }
        }
    }
}

/// A timeline entry's detail: the JSON kinds summarised for people, text as written.
fn event_detail(kind: &str, detail: &str) -> Markup {
    // `triggered` and `alerts` carry the alerts as JSON; the Alerts table above shows them.
    let alerts = serde_json::from_str::<serde_json::Value>(detail).ok().and_then(|v| v.as_array().map(Vec::len));
    if let Some(count) = alerts {
        return html! { span { "— " (count) " alert(s), as listed under Alerts" } };
    }
    match kind {
        "paged" => {
            let Ok(page) = serde_json::from_str::<serde_json::Value>(detail) else {
                return html! { span { (detail) } };
            };
            html! {
                span {
                    "— " (page["user"].as_str().unwrap_or("?")) " via " (page["contact"].as_str().unwrap_or("?"))
                    " (level " (page["level"]) ", attempt " (page["attempt"]) ")"
                    @if let Some(error) = page["error"].as_str() { " " span.error-text { "failed: " (error) } }
                }
            }
        }
        _ if detail.is_empty() => html! {},
        _ => html! { span { "— " (detail) } },
    }
}

pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<IncidentPath>,
) -> Response {
    change(&state, &principal, path.id, IncidentStatus::Acknowledged, "acknowledged").await
}

pub async fn resolve(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<IncidentPath>,
) -> Response {
    change(&state, &principal, path.id, IncidentStatus::Resolved, "resolved").await
}

async fn change(state: &AppState, principal: &Principal, id: i64, status: IncidentStatus, done: &str) -> Response {
    match incidents::set_status(&state.store, principal, id, status, "").await {
        Ok(_) => Redirect::to(&format!("/incidents/{id}?notice={done}")).into_response(),
        // Someone else was quicker (a conflict), or a rule refused: say so on the page.
        Err(incidents::AlertingError::WrongStatus(message)) => render(state, principal, id, None, Some(&message)).await,
        Err(error) => failure(error),
    }
}

pub async fn add_note(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<IncidentPath>,
    Form(form): Form<NoteForm>,
) -> Response {
    match incidents::add_note(&state.store, &principal, path.id, &form.text).await {
        Ok(()) => Redirect::to(&format!("/incidents/{}?notice=note-added", path.id)).into_response(),
        Err(incidents::AlertingError::Invalid(message)) => {
            render(&state, &principal, path.id, None, Some(&message)).await
        }
        Err(error) => failure(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(age(10_000, 5_000), "5 s");
        assert_eq!(age(3_600_000, 0), "1 h");
        assert_eq!(age(2 * 86_400_000, 0), "2 d");
        assert_eq!(age(0, 5_000), "0 s");
    }
}
