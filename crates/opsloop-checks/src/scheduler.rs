//! Every check on its interval: one lightweight task per check (a timer, not a thread),
//! its first run offset by a hash of its key so checks with the same interval spread over it
//! instead of firing together; runs go through the shared [`Runner`] (bounded concurrency).
//! Each result passes flap damping ([`Damper`]: `retries` failures in a row before down,
//! `successes` before up again) and goes to the host's [`ResultSink`] with the check's
//! health; a change of health is also reported as a [`StateChange`], dated by the injected
//! clock. Paused and maintenance are set by the host and win over the damped health.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::config::Endpoint;
use crate::result::CheckResult;
use crate::runner::Runner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not run yet, or not enough results to say.
    Unknown,
    Up,
    /// Failing, but fewer times in a row than `retries`: not down yet.
    Degraded,
    Down,
    /// Disabled in the file (`enabled: false`) or paused by the host: not run.
    Paused,
    /// Set by the host: runs and records, but is neither down nor up.
    Maintenance,
}

/// Flap damping on consecutive results; pure, so it is tested without servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damper {
    retries: u32,
    successes: u32,
    health: Health,
    failures: u32,
    passes: u32,
}

impl Damper {
    pub fn new(retries: u32, successes: u32) -> Damper {
        Damper { retries: retries.max(1), successes: successes.max(1), health: Health::Unknown, failures: 0, passes: 0 }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// The health after one more result.
    pub fn observe(&mut self, success: bool) -> Health {
        if success {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            // Degraded was never declared down: one success clears it. Down (and the very
            // first results) need `successes` in a row.
            let up = match self.health {
                Health::Degraded | Health::Up => true,
                _ => self.passes >= self.successes,
            };
            if up {
                self.health = Health::Up;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            if self.failures >= self.retries {
                self.health = Health::Down;
            } else if matches!(self.health, Health::Up | Health::Unknown) {
                self.health = Health::Degraded;
            }
        }
        self.health
    }
}

/// A check's health changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChange {
    pub key: String,
    pub name: String,
    pub group: Option<String>,
    pub from: Health,
    pub to: Health,
    /// Unix milliseconds, from the injected clock.
    pub at_ms: i64,
    /// Why, when a result caused it: the failed conditions (Gatus's form) and the errors.
    pub failed_conditions: Vec<String>,
    pub errors: Vec<String>,
}

/// Where results go; the host turns them into samples (`opsloop_check_up`,
/// `opsloop_check_duration_seconds`, `opsloop_check_status_code`,
/// `opsloop_check_cert_expiry_timestamp_seconds`) and events. Called from the checks' tasks:
/// keep it quick (hand off to a channel for slow work).
pub trait ResultSink: Send + Sync + 'static {
    /// Every result, with the check's health after it.
    fn record(&self, result: &CheckResult, health: Health);
    /// A check's health changed (by a result, or by pause, resume or maintenance).
    fn state_changed(&self, change: &StateChange);
}

/// What the host can show of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckStatus {
    pub key: String,
    pub name: String,
    pub group: Option<String>,
    pub health: Health,
    pub last: Option<CheckResult>,
}

#[derive(Debug)]
struct CheckState {
    damper: Damper,
    paused: bool,
    maintenance: bool,
    last: Option<CheckResult>,
}

impl CheckState {
    fn health(&self) -> Health {
        if self.paused {
            Health::Paused
        } else if self.maintenance {
            Health::Maintenance
        } else {
            self.damper.health()
        }
    }
}

struct Entry {
    endpoint: Arc<Endpoint>,
    state: Arc<Mutex<CheckState>>,
    task: Option<JoinHandle<()>>,
}

struct Inner {
    runner: Runner,
    sink: Arc<dyn ResultSink>,
    checks: Mutex<HashMap<String, Entry>>,
}

/// Runs checks on their intervals until [`Scheduler::stop`] (or drop).
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("runner", &self.inner.runner).finish_non_exhaustive()
    }
}

impl Scheduler {
    pub fn new(runner: Runner, sink: Arc<dyn ResultSink>) -> Scheduler {
        Scheduler { inner: Arc::new(Inner { runner, sink, checks: Mutex::new(HashMap::new()) }) }
    }

    /// Makes the running checks those of `endpoints`: an unchanged check keeps running with its
    /// state, a changed one restarts (from Unknown), a removed one stops. Call within a tokio
    /// runtime.
    pub fn apply(&self, endpoints: &[Endpoint]) {
        let mut checks = self.lock();
        let wanted: HashMap<String, &Endpoint> = endpoints.iter().map(|e| (e.key(), e)).collect();
        checks.retain(|key, entry| {
            let keep = wanted.get(key).is_some_and(|e| **e == *entry.endpoint);
            if !keep && let Some(task) = entry.task.take() {
                task.abort();
            }
            keep
        });
        for (key, endpoint) in wanted {
            if checks.contains_key(&key) {
                continue;
            }
            let endpoint = Arc::new(endpoint.clone());
            let state = Arc::new(Mutex::new(CheckState {
                damper: Damper::new(endpoint.retries, endpoint.successes),
                paused: !endpoint.enabled,
                maintenance: false,
                last: None,
            }));
            let task = endpoint.enabled.then(|| {
                let offset = spread(&key, endpoint.interval);
                tokio::spawn(run_check(Arc::clone(&self.inner), Arc::clone(&endpoint), Arc::clone(&state), offset))
            });
            checks.insert(key, Entry { endpoint, state, task });
        }
    }

    /// Runs the check `key` once now, through the same damping and sink (a host's
    /// "run now" button; tests).
    pub async fn run_now(&self, key: &str) -> Option<CheckResult> {
        let (endpoint, state) = {
            let checks = self.lock();
            let entry = checks.get(key)?;
            (Arc::clone(&entry.endpoint), Arc::clone(&entry.state))
        };
        Some(run_once(&self.inner, &endpoint, &state).await)
    }

    /// Stops running a check (its health becomes Paused) until [`Scheduler::resume`].
    pub fn pause(&self, key: &str) -> bool {
        self.update(key, |state| state.paused = true)
    }

    pub fn resume(&self, key: &str) -> bool {
        self.update(key, |state| state.paused = false)
    }

    /// In maintenance a check still runs and records, and its health is Maintenance.
    pub fn set_maintenance(&self, key: &str, on: bool) -> bool {
        self.update(key, |state| state.maintenance = on)
    }

    pub fn status(&self) -> Vec<CheckStatus> {
        let checks = self.lock();
        let mut out: Vec<CheckStatus> = checks
            .iter()
            .map(|(key, entry)| {
                let state = entry.state.lock().unwrap_or_else(|p| p.into_inner());
                CheckStatus {
                    key: key.clone(),
                    name: entry.endpoint.name.clone(),
                    group: entry.endpoint.group.clone(),
                    health: state.health(),
                    last: state.last.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Stops every check.
    pub fn stop(&self) {
        for (_, mut entry) in self.lock().drain() {
            if let Some(task) = entry.task.take() {
                task.abort();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.checks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, key: &str, change: impl FnOnce(&mut CheckState)) -> bool {
        let checks = self.lock();
        let Some(entry) = checks.get(key) else { return false };
        let mut state = entry.state.lock().unwrap_or_else(|p| p.into_inner());
        let from = state.health();
        change(&mut state);
        let to = state.health();
        drop(state);
        if from != to {
            let endpoint = &entry.endpoint;
            self.inner.sink.state_changed(&StateChange {
                key: key.to_owned(),
                name: endpoint.name.clone(),
                group: endpoint.group.clone(),
                from,
                to,
                at_ms: self.inner.runner.clock().now_ms(),
                failed_conditions: Vec::new(),
                errors: Vec::new(),
            });
        }
        true
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where in its interval a check first runs: FNV-1a of its key, so the spread is the same
/// after every restart.
fn spread(key: &str, interval: Duration) -> Duration {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(hash % millis)
}

async fn run_check(inner: Arc<Inner>, endpoint: Arc<Endpoint>, state: Arc<Mutex<CheckState>>, offset: Duration) {
    let interval = endpoint.interval.max(Duration::from_millis(10));
    let mut next = tokio::time::Instant::now() + offset;
    loop {
        tokio::time::sleep_until(next).await;
        let paused = state.lock().map(|s| s.paused).unwrap_or(false);
        if !paused {
            run_once(&inner, &endpoint, &state).await;
        }
        // A run longer than the interval skips the runs it overlapped rather than bunching up.
        let now = tokio::time::Instant::now();
        next += interval;
        while next <= now {
            next += interval;
        }
    }
}

async fn run_once(inner: &Inner, endpoint: &Endpoint, state: &Mutex<CheckState>) -> CheckResult {
    let result = inner.runner.run(endpoint).await;
    let (from, to) = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let from = state.health();
        state.damper.observe(result.success);
        state.last = Some(result.clone());
        (from, state.health())
    };
    inner.sink.record(&result, to);
    if from != to {
        inner.sink.state_changed(&StateChange {
            key: result.key.clone(),
            name: result.name.clone(),
            group: result.group.clone(),
            from,
            to,
            at_ms: inner.runner.clock().now_ms(),
            failed_conditions: result.failed_conditions().map(|c| c.condition.clone()).collect(),
            errors: result.errors.clone(),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damping_needs_retries_failures_and_successes() {
        let mut d = Damper::new(3, 2);
        assert_eq!(d.observe(true), Health::Unknown, "one success of two");
        assert_eq!(d.observe(true), Health::Up);
        assert_eq!(d.observe(false), Health::Degraded);
        assert_eq!(d.observe(false), Health::Degraded);
        assert_eq!(d.observe(true), Health::Up, "degraded was never down");
        for _ in 0..2 {
            d.observe(false);
        }
        assert_eq!(d.observe(false), Health::Down);
        assert_eq!(d.observe(true), Health::Down, "one success of two");
        assert_eq!(d.observe(false), Health::Down);
        assert_eq!(d.observe(true), Health::Down);
        assert_eq!(d.observe(true), Health::Up);
        let mut plain = Damper::new(1, 1);
        assert_eq!(plain.observe(false), Health::Down);
        assert_eq!(plain.observe(true), Health::Up);
    }

    #[test]
    fn spread_is_stable_and_within_the_interval() {
        let interval = Duration::from_secs(10);
        let offsets: Vec<Duration> = (0..100).map(|i| spread(&format!("_check-{i}"), interval)).collect();
        assert!(offsets.iter().all(|o| *o < interval));
        assert_eq!(spread("_a", interval), spread("_a", interval));
        let first_half = offsets.iter().filter(|o| **o < Duration::from_secs(5)).count();
        assert!((30..=70).contains(&first_half), "{first_half} of 100 in the first half");
    }
}
