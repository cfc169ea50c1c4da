//! Pipeline schedules: cron expressions in a time zone (croner on jiff), checked by a
//! background task. Each due run is claimed in the store before it starts, so it runs once.

use std::str::FromStr;
use std::time::Duration;

use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use opsloop_store::Actor;

use crate::state::AppState;

/// Why a schedule has no next run.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{cron}` is not a cron expression: {source}")]
    Cron {
        cron: String,
        #[source]
        source: croner::errors::CronError,
    },
    #[error("`{timezone}` is not a known time zone (e.g. UTC, Europe/Berlin)")]
    TimeZone { timezone: String },
    /// The start time is outside what a timestamp can hold.
    #[error(transparent)]
    Time(#[from] jiff::Error),
    #[error("`{cron}` never matches: {source}")]
    NeverMatches {
        cron: String,
        #[source]
        source: croner::errors::CronError,
    },
}

/// The first time after `after_ms` (Unix ms) that `cron` matches in `timezone`.
pub fn next_run(cron: &str, timezone: &str, after_ms: i64) -> Result<i64, ScheduleError> {
    let parsed = Cron::from_str(cron).map_err(|source| ScheduleError::Cron { cron: cron.to_owned(), source })?;
    let zone = TimeZone::get(timezone).map_err(|_| ScheduleError::TimeZone { timezone: timezone.to_owned() })?;
    let start = Timestamp::from_millisecond(after_ms)?.to_zoned(zone);
    let next = parsed
        .find_next_occurrence(&start, false)
        .map_err(|source| ScheduleError::NeverMatches { cron: cron.to_owned(), source })?;
    Ok(next.timestamp().as_millisecond())
}

/// Starts every due schedule's pipeline once; returns how many started.
pub async fn run_due(state: &AppState) -> usize {
    let now = state.clock.now_ms();
    let due = match state.store.due_schedules(now).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "could not read due schedules");
            return 0;
        }
    };
    let mut started = 0;
    for schedule in due {
        // The next run after now: a server that was down skips the runs it missed, as GitLab does.
        let next = match next_run(&schedule.cron, &schedule.timezone, now) {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(schedule = schedule.id, message = %error, "schedule cannot run");
                i64::MAX
            }
        };
        match state.store.claim_schedule_run(schedule.id, schedule.next_run_at, next).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(schedule = schedule.id, %error, "could not claim a schedule run");
                continue;
            }
        }
        let Ok(Some(project)) = state.store.project_by_id(schedule.project_id).await else { continue };
        let variables: Vec<(String, String)> =
            serde_json::from_str::<std::collections::BTreeMap<String, String>>(&schedule.variables)
                .map(|map| map.into_iter().collect())
                .unwrap_or_default();
        let actor_name = format!("schedule:{}", schedule.id);
        let actor = Actor { name: &actor_name, source_ip: "" };
        match crate::ci::trigger(state, &project, &schedule.git_ref, None, "schedule", variables, actor).await {
            Ok(pipeline) => {
                // The pipeline runs either way; a failed record only shows the schedule as not
                // run yet (its next due time comes from the cron line, not this record).
                if let Err(error) = state.store.schedule_ran(schedule.id, pipeline.id).await {
                    tracing::error!(schedule = schedule.id, %error, "could not record the scheduled run");
                }
                started += 1;
            }
            Err(error) => {
                tracing::warn!(schedule = schedule.id, %error, "scheduled pipeline did not start")
            }
        }
    }
    started
}

/// Checks the schedules every few seconds until the server stops.
pub async fn run_forever(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(5));
    loop {
        interval.tick().await;
        run_due(&state).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_runs_follow_cron_in_the_time_zone() {
        // 2026-01-15 12:00:00 UTC
        let noon = 1_768_478_400_000;
        let next = next_run("30 2 * * *", "UTC", noon).unwrap();
        assert_eq!(next, noon + (14 * 60 + 30) * 60_000, "02:30 UTC the next day");
        let berlin = next_run("30 2 * * *", "Europe/Berlin", noon).unwrap();
        assert_eq!(berlin, next - 3_600_000, "02:30 in Berlin (UTC+1 in January) is an hour earlier");
        assert!(next_run("not cron", "UTC", noon).is_err());
        assert!(matches!(
            next_run("* * * * *", "Mars/Olympus", noon),
            Err(ScheduleError::TimeZone { timezone }) if timezone == "Mars/Olympus"
        ));
    }
}
