//! Heartbeat monitors (the Healthchecks.io role): a job pings when it ran, and the monitor
//! goes late when a ping is overdue and down when the grace period has passed too. The
//! schedule is a period (`every 1h`) or a cron expression in an IANA time zone, where the next
//! expected ping is found by croner on jiff, so a daily `0 3 * * *` in Europe/Berlin expects
//! its ping 23 hours after the last on the night clocks go forward.
//!
//! A pure state machine: time comes in as arguments (Unix milliseconds), nothing sleeps. The
//! host feeds it pings and calls [`Heartbeat::tick`] at [`Heartbeat::next_deadline`].

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// Lines of ping bodies kept (a job's last output lines, to show why it failed).
pub const BODY_LINES: usize = 10;
/// A kept line is cut at this many characters.
const LINE_CHARS: usize = 1000;

#[derive(Debug, Clone)]
pub enum Schedule {
    /// A ping is expected this long after the last.
    Period(Duration),
    /// A ping is expected at each time the expression matches, in `timezone`.
    Cron(Box<CronSchedule>),
}

#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub expression: String,
    pub cron: croner::Cron,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression `{expression}`: {reason}")]
    Cron { expression: String, reason: String },
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
}

impl Schedule {
    pub fn cron(expression: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let cron = croner::Cron::from_str(expression)
            .map_err(|e| ScheduleError::Cron { expression: expression.to_owned(), reason: e.to_string() })?;
        let zone = jiff::tz::TimeZone::get(timezone).map_err(|_| ScheduleError::TimeZone(timezone.to_owned()))?;
        Ok(Schedule::Cron(Box::new(CronSchedule {
            expression: expression.to_owned(),
            cron,
            timezone: zone,
            timezone_name: timezone.to_owned(),
        })))
    }

    /// When the ping after one at `after_ms` is expected; `None` for a cron that never matches
    /// again.
    pub fn next_expected(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Period(period) => {
                Some(after_ms.saturating_add(i64::try_from(period.as_millis()).unwrap_or(i64::MAX)))
            }
            Schedule::Cron(schedule) => {
                let start = jiff::Timestamp::from_millisecond(after_ms).ok()?.to_zoned(schedule.timezone.clone());
                let next = schedule.cron.find_next_occurrence(&start, false).ok()?;
                Some(next.timestamp().as_millisecond())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeartbeatSpec {
    pub name: String,
    pub group: Option<String>,
    pub schedule: Schedule,
    /// How long after the expected time a ping may still come before the monitor is down;
    /// also how long a started run may take.
    pub grace: Duration,
}

impl HeartbeatSpec {
    /// `group_name`, as endpoints are keyed.
    pub fn key(&self) -> String {
        crate::config::key(self.group.as_deref(), &self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatState {
    /// No ping yet: nothing is expected (as Healthchecks.io's "new").
    New,
    Up,
    /// The expected ping is overdue, within the grace period.
    Late,
    Down,
}

/// What a job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Success,
    /// The job started; a success later measures the run.
    Start,
    Fail,
    /// The job's exit code: 0 is a success, anything else a failure.
    ExitCode(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeartbeatChange {
    pub key: String,
    pub from: HeartbeatState,
    pub to: HeartbeatState,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    spec: HeartbeatSpec,
    key: String,
    state: HeartbeatState,
    /// The last success or failure (a start is not a ping the schedule counts).
    last_ping_ms: Option<i64>,
    running_since_ms: Option<i64>,
    last_run: Option<Duration>,
    last_exit_code: Option<i32>,
    lines: VecDeque<String>,
}

/// What a monitor shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeartbeatStatus {
    pub key: String,
    pub state: HeartbeatState,
    pub last_ping_ms: Option<i64>,
    pub running_since_ms: Option<i64>,
    /// Start to success (or failure) of the last measured run.
    pub last_run_ms: Option<u64>,
    pub last_exit_code: Option<i32>,
    /// The next ping is expected by then.
    pub expected_ms: Option<i64>,
    pub last_lines: Vec<String>,
}

impl Heartbeat {
    pub fn new(spec: HeartbeatSpec) -> Self {
        let key = spec.key();
        Heartbeat {
            spec,
            key,
            state: HeartbeatState::New,
            last_ping_ms: None,
            running_since_ms: None,
            last_run: None,
            last_exit_code: None,
            lines: VecDeque::new(),
        }
    }

    pub fn spec(&self) -> &HeartbeatSpec {
        &self.spec
    }

    pub fn state(&self) -> HeartbeatState {
        self.state
    }

    /// A ping at `now_ms`, with its body (a job's output; the last lines are kept).
    pub fn ping(&mut self, ping: Ping, body: &str, now_ms: i64) -> Option<HeartbeatChange> {
        self.keep_lines(body);
        let success = match ping {
            Ping::Start => {
                self.running_since_ms = Some(now_ms);
                return None;
            }
            Ping::Success => true,
            Ping::Fail => false,
            Ping::ExitCode(code) => {
                self.last_exit_code = Some(code);
                code == 0
            }
        };
        if let Some(started) = self.running_since_ms.take() {
            self.last_run = Some(Duration::from_millis(u64::try_from(now_ms - started).unwrap_or(0)));
        }
        self.last_ping_ms = Some(now_ms);
        self.set(if success { HeartbeatState::Up } else { HeartbeatState::Down }, now_ms)
    }

    /// Moves to late or down when their time has come.
    pub fn tick(&mut self, now_ms: i64) -> Option<HeartbeatChange> {
        if self.state == HeartbeatState::Down {
            return None;
        }
        if let Some(started) = self.running_since_ms
            && now_ms >= started.saturating_add(self.grace_ms())
        {
            return self.set(HeartbeatState::Down, now_ms);
        }
        let (late_at, down_at) = self.deadlines()?;
        if now_ms >= down_at {
            self.set(HeartbeatState::Down, now_ms)
        } else if now_ms >= late_at {
            self.set(HeartbeatState::Late, now_ms)
        } else {
            None
        }
    }

    /// When [`Heartbeat::tick`] may next change the state; `None` when only a ping can.
    pub fn next_deadline(&self) -> Option<i64> {
        if self.state == HeartbeatState::Down {
            return None;
        }
        let running = self.running_since_ms.map(|s| s.saturating_add(self.grace_ms()));
        let scheduled =
            self.deadlines().map(|(late, down)| if self.state == HeartbeatState::Late { down } else { late });
        match (running, scheduled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn status(&self) -> HeartbeatStatus {
        HeartbeatStatus {
            key: self.key.clone(),
            state: self.state,
            last_ping_ms: self.last_ping_ms,
            running_since_ms: self.running_since_ms,
            last_run_ms: self.last_run.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            last_exit_code: self.last_exit_code,
            expected_ms: self.deadlines().map(|(late, _)| late),
            last_lines: self.lines.iter().cloned().collect(),
        }
    }

    fn grace_ms(&self) -> i64 {
        i64::try_from(self.spec.grace.as_millis()).unwrap_or(i64::MAX)
    }

    /// (late from, down from) after the last ping; none before the first.
    fn deadlines(&self) -> Option<(i64, i64)> {
        let expected = self.spec.schedule.next_expected(self.last_ping_ms?)?;
        Some((expected, expected.saturating_add(self.grace_ms())))
    }

    fn set(&mut self, to: HeartbeatState, at_ms: i64) -> Option<HeartbeatChange> {
        let from = self.state;
        self.state = to;
        (from != to).then(|| HeartbeatChange { key: self.key.clone(), from, to, at_ms })
    }

    fn keep_lines(&mut self, body: &str) {
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            if self.lines.len() == BODY_LINES {
                self.lines.pop_front();
            }
            self.lines.push_back(line.chars().take(LINE_CHARS).collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    fn spec(schedule: Schedule, grace_min: u64) -> HeartbeatSpec {
        HeartbeatSpec { name: "backup".into(), group: None, schedule, grace: Duration::from_secs(grace_min * 60) }
    }

    fn ms(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn on_time_then_late_then_down() {
        let mut hb = Heartbeat::new(spec(Schedule::Period(Duration::from_secs(3600)), 10));
        assert_eq!(hb.tick(10 * HOUR), None, "a new monitor expects nothing");
        assert_eq!(hb.state(), HeartbeatState::New);
        let change = hb.ping(Ping::Success, "", 0).unwrap();
        assert_eq!((change.from, change.to), (HeartbeatState::New, HeartbeatState::Up));
        assert_eq!(hb.next_deadline(), Some(HOUR));
        assert_eq!(hb.tick(HOUR - 1), None);
        assert_eq!(hb.ping(Ping::Success, "", HOUR - 1), None, "on time: still up");
        assert_eq!(hb.tick(2 * HOUR - 2), None);
        assert_eq!(hb.tick(2 * HOUR - 1).map(|c| c.to), Some(HeartbeatState::Late));
        assert_eq!(hb.next_deadline(), Some(2 * HOUR - 1 + 10 * MIN));
        assert_eq!(hb.tick(2 * HOUR - 1 + 10 * MIN).map(|c| c.to), Some(HeartbeatState::Down));
        assert_eq!(hb.next_deadline(), None);
        assert_eq!(hb.ping(Ping::Success, "", 3 * HOUR).map(|c| c.to), Some(HeartbeatState::Up));
    }

    #[test]
    fn cron_in_berlin_across_the_spring_dst_change() {
        // Daily at 03:00 Berlin time. Clocks go from 02:00 to 03:00 on 2024-03-31, so the
        // ping after 2024-03-30 03:00 CET (02:00Z) is due 23 hours later, at 01:00Z.
        let schedule = Schedule::cron("0 3 * * *", "Europe/Berlin").unwrap();
        let mut hb = Heartbeat::new(spec(schedule, 30));
        hb.ping(Ping::Success, "", ms("2024-03-30T02:00:00Z"));
        assert_eq!(hb.status().expected_ms, Some(ms("2024-03-31T01:00:00Z")));
        assert_eq!(hb.tick(ms("2024-03-31T00:59:59Z")), None);
        assert_eq!(hb.tick(ms("2024-03-31T01:00:00Z")).map(|c| c.to), Some(HeartbeatState::Late));
        assert_eq!(hb.tick(ms("2024-03-31T01:30:00Z")).map(|c| c.to), Some(HeartbeatState::Down));
        // In autumn (2024-10-27, 03:00 CEST back to 02:00 CET) the day has 25 hours.
        hb.ping(Ping::Success, "", ms("2024-10-26T01:00:00Z"));
        assert_eq!(hb.status().expected_ms, Some(ms("2024-10-27T02:00:00Z")));
        assert!(Schedule::cron("0 3 * * *", "Mars/Olympus").is_err());
        assert!(Schedule::cron("61 * * * *", "UTC").is_err());
    }

    #[test]
    fn start_then_success_measures_the_run_and_keeps_lines() {
        let mut hb = Heartbeat::new(spec(Schedule::Period(Duration::from_secs(86_400)), 60));
        hb.ping(Ping::Start, "", 1_000);
        assert_eq!(hb.status().running_since_ms, Some(1_000));
        let body: String = (1..=15).map(|i| format!("line {i}\n")).collect();
        hb.ping(Ping::Success, &body, 1_000 + 95_000);
        let status = hb.status();
        assert_eq!(status.last_run_ms, Some(95_000));
        assert_eq!(status.running_since_ms, None);
        assert_eq!(status.last_lines.len(), BODY_LINES);
        assert_eq!(status.last_lines.last().map(String::as_str), Some("line 15"));
        // A run that starts and never finishes is down after the grace period.
        hb.ping(Ping::Start, "", 2 * HOUR);
        assert_eq!(hb.next_deadline(), Some(3 * HOUR));
        assert_eq!(hb.tick(3 * HOUR).map(|c| c.to), Some(HeartbeatState::Down));
    }

    #[test]
    fn failures_and_exit_codes() {
        let mut hb = Heartbeat::new(spec(Schedule::Period(Duration::from_secs(3600)), 5));
        hb.ping(Ping::Success, "", 0);
        assert_eq!(hb.ping(Ping::Fail, "disk full", MIN).map(|c| c.to), Some(HeartbeatState::Down));
        assert_eq!(hb.status().last_lines, vec!["disk full".to_owned()]);
        assert_eq!(hb.ping(Ping::ExitCode(0), "", 2 * MIN).map(|c| c.to), Some(HeartbeatState::Up));
        assert_eq!(hb.ping(Ping::ExitCode(3), "", 3 * MIN).map(|c| c.to), Some(HeartbeatState::Down));
        assert_eq!(hb.status().last_exit_code, Some(3));
    }
}
