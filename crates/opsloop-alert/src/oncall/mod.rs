//! The on-call part of the alerting engine (PagerDuty's role): who is on call ([`schedule`]),
//! who gets paged and when ([`escalation`]), signed ack links ([`ack`]), calendar feeds
//! ([`ical`]), all configured as code ([`config`]). No I/O and no clock of its own: the host
//! passes instants (from `opsloop_core::Clock`, see [`now`]) and persists the state.

pub mod ack;
pub mod config;
pub mod escalation;
pub mod ical;
pub mod schedule;

pub use config::{OncallConfig, UserName};
pub use escalation::{Escalation, EscalationState, PageAction};
pub use schedule::Shift;

use jiff::Timestamp;
use opsloop_core::clock::Clock;
use serde::Serialize;

/// The instant a clock shows, for the functions here.
pub fn now(clock: &dyn Clock) -> Timestamp {
    Timestamp::from_millisecond(clock.now_ms()).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OncallError {
    #[error("unknown schedule `{name}`{}", hint.as_ref().map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default())]
    UnknownSchedule { name: String, hint: Option<String> },
    #[error("`{text}` is not a time: write 2026-03-28T09:00+01:00, or 2026-03-28T09:00 in the schedule's time zone")]
    BadTime { text: String },
}

fn schedule<'c>(config: &'c OncallConfig, name: &str) -> Result<&'c config::Schedule, OncallError> {
    config.schedule(name).ok_or_else(|| {
        let known: Vec<&str> = config.schedules.iter().map(|s| s.name.as_str()).collect();
        let hint = opsloop_config::diagnostic::nearest(name, &known).map(str::to_owned);
        OncallError::UnknownSchedule { name: name.to_owned(), hint }
    })
}

/// Who is on call for `schedule` at `at`: `opsloop oncall SCHEDULE --at TIME`.
pub fn who_is_on_call(
    config: &OncallConfig,
    schedule_name: &str,
    at: Timestamp,
) -> Result<Option<String>, OncallError> {
    Ok(schedule(config, schedule_name)?.on_call_at(at).map(|u| u.to_string()))
}

/// `--at TIME` read for a schedule: with an offset, or local to the schedule's zone.
pub fn parse_at(config: &OncallConfig, schedule_name: &str, text: &str) -> Result<Timestamp, OncallError> {
    let zone = &schedule(config, schedule_name)?.timezone;
    config::parse_instant(text, zone).ok_or_else(|| OncallError::BadTime { text: text.to_owned() })
}

/// What `opsloop oncall SCHEDULE --at TIME --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnCallAnswer {
    pub schedule: String,
    pub timezone: String,
    pub at: Timestamp,
    pub user: Option<String>,
    /// The edges of the shift `at` falls in, where they could be found.
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// [`who_is_on_call`] with the shift's edges, for `--json`.
pub fn on_call_answer(config: &OncallConfig, schedule_name: &str, at: Timestamp) -> Result<OnCallAnswer, OncallError> {
    let s = schedule(config, schedule_name)?;
    // Two of the longest rotation either side finds the edges of any ordinary shift.
    let longest = s.layers.iter().map(|l| l.rotation).max().unwrap_or(jiff::SignedDuration::ZERO);
    let reach = longest.checked_mul(2).unwrap_or(schedule::MAX_RENDER_SPAN) + jiff::SignedDuration::from_hours(24);
    let shift = s.shift_around(at, reach);
    Ok(OnCallAnswer {
        schedule: s.name.clone(),
        timezone: s.timezone_name.clone(),
        at,
        user: s.on_call_at(at).map(|u| u.to_string()),
        since: shift.as_ref().and_then(|x| x.1),
        until: shift.as_ref().and_then(|x| x.2),
    })
}
