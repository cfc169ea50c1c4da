//! The On-call page (`/oncall`): every schedule of the `--oncall-config` file with who is on
//! call now and until when, the next 14 days of shifts (layers, restrictions and overrides
//! applied, as `crate::alerting::oncall::shifts` computes them) and the schedule's iCal feed.
//! Times are shown in the schedule's own zone, since handoffs are written in it.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use maud::{Markup, html};

use super::{error_box, layout};
use crate::alerting::{AlertingError, oncall};
use crate::auth::Principal;
use crate::state::AppState;

const AREA: &str = "/oncall";

/// The days of shifts shown per schedule.
const DAYS: u32 = 14;

/// `at` in the zone named `zone` (`Mon 2026-03-30 09:00 CEST`); in UTC when the name is unknown.
fn local(at: Timestamp, zone: &str) -> String {
    match jiff::tz::TimeZone::get(zone) {
        Ok(tz) => at.to_zoned(tz).strftime("%a %Y-%m-%d %H:%M %Z").to_string(),
        Err(_) => at.strftime("%a %Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// The schedule's iCal feed, as the API serves it.
fn calendar_url(schedule: &str) -> String {
    // Schedule names are validated names (no `/`), but encode anyway: the link must stay one path.
    format!(
        "/api/v1/oncall/{}/calendar.ics",
        url::form_urlencoded::byte_serialize(schedule.as_bytes()).collect::<String>()
    )
}

pub async fn page(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let answers = match oncall::everyone_now(&state) {
        Ok(answers) => Some(answers),
        // No `--oncall-config`: an empty state that says how to get one, not an error page.
        Err(AlertingError::NotFound { .. }) => None,
        Err(error) => return super::failure(error),
    };
    let problem = state.alerting.problem();
    let body = html! {
        h1 { "On-call" }
        (error_box(problem.as_deref()))
        @match &answers {
            None => {
                div.card #oncall-empty {
                    p { "No on-call configuration is loaded, so no one is paged for incidents." }
                    p.hint {
                        "Write the users, schedules and escalation policies in a YAML file and start the server with "
                        code { "opsloop serve --oncall-config FILE" } "; "
                        code { "opsloop oncall check FILE" } " checks it first."
                    }
                }
            }
            Some(answers) if answers.is_empty() => { p.muted { "The on-call configuration has no schedule." } }
            Some(answers) => {
                p.hint { "Who is paged when an incident's escalation policy reaches a schedule, now and for the next " (DAYS) " days." }
                @for answer in answers { (schedule_section(&state, answer)) }
            }
        }
    };
    layout("On-call", Some(&principal), AREA, body).into_response()
}

fn schedule_section(state: &AppState, answer: &opsloop_alert::oncall::OnCallAnswer) -> Markup {
    let shifts = oncall::shifts(state, &answer.schedule, None, Some(DAYS));
    let zone = answer.timezone.as_str();
    html! {
        section.schedule data-schedule=(answer.schedule) {
            h2 { (answer.schedule) " " span.muted { "(" (zone) ")" } }
            p.now {
                @match &answer.user {
                    Some(user) => {
                        "On call now: " strong.oncall-user { (user) }
                        @if let Some(until) = answer.until { " until " (local(until, zone)) }
                    }
                    None => { span.error-text { "Nobody is on call now" } }
                }
            }
            p { a href=(calendar_url(&answer.schedule)) { "iCal feed" } span.hint { " — subscribe in a calendar (with an API token)" } }
            @match shifts {
                Ok(shifts) if shifts.is_empty() => p.muted { "No shift in the next " (DAYS) " days." },
                Ok(shifts) => {
                    table.shifts {
                        thead { tr { th scope="col" { "Who" } th scope="col" { "From" } th scope="col" { "Until" } } }
                        tbody {
                            @for shift in &shifts {
                                tr {
                                    td { (shift.user.as_str()) }
                                    td { (local(shift.start, zone)) }
                                    td { (local(shift.end, zone)) }
                                }
                            }
                        }
                    }
                }
                Err(error) => p.error role="alert" { (error.to_string()) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_the_schedules_zone() {
        let Ok(at) = "2026-03-30T07:00:00Z".parse::<Timestamp>() else { panic!("a time") };
        assert_eq!(local(at, "Europe/Berlin"), "Mon 2026-03-30 09:00 CEST");
        assert_eq!(local(at, "No/Such_Zone"), "Mon 2026-03-30 07:00 UTC");
        assert_eq!(calendar_url("primary"), "/api/v1/oncall/primary/calendar.ics");
    }
}
