//! Failed-login limiting: a fixed window per key (client address, username).
//!
//! Written by hand because the need is tiny (count failures, forget them after a window)
//! and a general rate-limiting crate would add a dependency for a dozen lines.

use std::collections::HashMap;
use std::sync::Mutex;

use opsloop_core::Clock;

#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    window_ms: i64,
    failures: Mutex<HashMap<String, (u32, i64)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window_seconds: u64) -> Self {
        let window_ms = i64::try_from(window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        LoginLimiter { max_failures, window_ms, failures: Mutex::new(HashMap::new()) }
    }

    /// `Some(seconds to wait)` when any of `keys` has used up its failures.
    pub fn blocked(&self, keys: &[&str], clock: &dyn Clock) -> Option<u64> {
        let now = clock.now_ms();
        let failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.iter()
            .filter_map(|key| failures.get(*key))
            .filter(|(count, start)| *count >= self.max_failures && now - start < self.window_ms)
            .map(|(_, start)| u64::try_from((start + self.window_ms - now) / 1000 + 1).unwrap_or(1))
            .max()
    }

    pub fn record_failure(&self, keys: &[&str], clock: &dyn Clock) {
        let now = clock.now_ms();
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Bound memory under a spray of usernames: drop windows that have ended.
        if failures.len() > 10_000 {
            failures.retain(|_, (_, start)| now - *start < self.window_ms);
        }
        for key in keys {
            let entry = failures.entry((*key).to_owned()).or_insert((0, now));
            if now - entry.1 >= self.window_ms {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    pub fn record_success(&self, keys: &[&str]) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in keys {
            failures.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsloop_core::clock::ManualClock;

    #[test]
    fn blocks_after_max_failures_until_window_ends() {
        let clock = ManualClock::new(0);
        let limiter = LoginLimiter::new(3, 60);
        let keys = ["ip:1.2.3.4", "user:alice"];
        for _ in 0..3 {
            assert_eq!(limiter.blocked(&keys, &clock), None);
            limiter.record_failure(&keys, &clock);
        }
        assert_eq!(limiter.blocked(&keys, &clock), Some(61));
        assert!(limiter.blocked(&["user:alice"], &clock).is_some());
        assert!(limiter.blocked(&["user:bob"], &clock).is_none());
        clock.advance_ms(60_000);
        assert_eq!(limiter.blocked(&keys, &clock), None);
    }

    #[test]
    fn success_clears_failures() {
        let clock = ManualClock::new(0);
        let limiter = LoginLimiter::new(2, 60);
        limiter.record_failure(&["user:a"], &clock);
        limiter.record_success(&["user:a"]);
        limiter.record_failure(&["user:a"], &clock);
        assert_eq!(limiter.blocked(&["user:a"], &clock), None);
    }
}
