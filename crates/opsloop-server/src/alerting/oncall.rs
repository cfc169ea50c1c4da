//! On-call as a service: who is on call for a schedule at an instant, a schedule's shifts,
//! and its calendar feed, from the configuration `--oncall-config` names.

use jiff::Timestamp;
use opsloop_alert::oncall::{self, OnCallAnswer, OncallConfig, Shift};

use super::AlertingError;

fn config(state: &crate::state::AppState) -> Result<std::sync::Arc<OncallConfig>, AlertingError> {
    state
        .alerting
        .oncall()
        .ok_or(AlertingError::NotFound { what: "on-call configuration (start with --oncall-config FILE)" })
}

fn schedule_error(error: oncall::OncallError) -> AlertingError {
    match error {
        oncall::OncallError::UnknownSchedule { .. } => AlertingError::NotFoundNamed(error.to_string()),
        oncall::OncallError::BadTime { .. } => AlertingError::Invalid(error.to_string()),
    }
}

fn now(state: &crate::state::AppState) -> Timestamp {
    oncall::now(state.store.clock().as_ref())
}

/// Who is on call for `schedule` at `at` (now when absent), with the shift's edges.
pub fn who(state: &crate::state::AppState, schedule: &str, at: Option<&str>) -> Result<OnCallAnswer, AlertingError> {
    let config = config(state)?;
    let at = match at {
        None | Some("") | Some("now") => now(state),
        Some(text) => oncall::parse_at(&config, schedule, text).map_err(schedule_error)?,
    };
    oncall::on_call_answer(&config, schedule, at).map_err(schedule_error)
}

/// Every schedule with who is on call now.
pub fn everyone_now(state: &crate::state::AppState) -> Result<Vec<OnCallAnswer>, AlertingError> {
    let config = config(state)?;
    let at = now(state);
    config.schedules.iter().map(|s| oncall::on_call_answer(&config, &s.name, at).map_err(schedule_error)).collect()
}

/// The bounds of a window asked for: `from` (default now) and `days` (1–92, default 14).
fn window(
    state: &crate::state::AppState,
    from: Option<&str>,
    days: Option<u32>,
) -> Result<(Timestamp, Timestamp), AlertingError> {
    let from = match from {
        None | Some("") | Some("now") => now(state),
        Some(text) => text.parse::<Timestamp>().map_err(|_| {
            AlertingError::Invalid(format!("`{text}` is not an RFC 3339 time (e.g. 2026-03-28T09:00:00Z)"))
        })?,
    };
    let days = days.unwrap_or(14);
    if !(1..=92).contains(&days) {
        return Err(AlertingError::Invalid("days must be between 1 and 92".to_owned()));
    }
    let to = from
        .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days)))
        .map_err(|_| AlertingError::Invalid("the window ends out of range".to_owned()))?;
    Ok((from, to))
}

/// The final schedule (layers, restrictions and overrides applied) over a window.
pub fn shifts(
    state: &crate::state::AppState,
    schedule: &str,
    from: Option<&str>,
    days: Option<u32>,
) -> Result<Vec<Shift>, AlertingError> {
    let config = config(state)?;
    let found = config.schedule(schedule).ok_or_else(|| {
        schedule_error(oncall::OncallError::UnknownSchedule { name: schedule.to_owned(), hint: None })
    })?;
    let (from, to) = window(state, from, days)?;
    Ok(found.final_schedule(from, to))
}

/// The schedule as an iCalendar feed, from a week ago to 8 weeks ahead.
pub fn calendar(state: &crate::state::AppState, schedule: &str) -> Result<String, AlertingError> {
    let config = config(state)?;
    let found = config.schedule(schedule).ok_or_else(|| {
        schedule_error(oncall::OncallError::UnknownSchedule { name: schedule.to_owned(), hint: None })
    })?;
    let generated = now(state);
    let week = jiff::SignedDuration::from_hours(24 * 7);
    let from = generated.checked_sub(week).unwrap_or(generated);
    let to = generated.checked_add(week * 8).unwrap_or(generated);
    Ok(oncall::ical::schedule_feed(found, from, to, generated))
}
