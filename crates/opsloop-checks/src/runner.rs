//! Runs one check: its kind's probe under the endpoint's timeout, then its conditions, into a
//! [`CheckResult`]. A semaphore bounds how many probes run at once, so thousands of checks
//! due together queue instead of opening thousands of sockets; a probe past its timeout is
//! dropped (its socket closed, its process killed) and never holds up the others.

use std::sync::Arc;
use std::time::Instant;

use opsloop_core::clock::Clock;
use tokio::sync::Semaphore;

use crate::config::Endpoint;
use crate::duration::format_go;
use crate::kinds::ProbeContext;
use crate::result::{CheckResult, Observation};

/// How many probes run at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 256;

#[derive(Clone)]
pub struct Runner {
    ctx: Arc<ProbeContext>,
    permits: Arc<Semaphore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("available", &self.permits.available_permits()).finish_non_exhaustive()
    }
}

impl Runner {
    /// `concurrency`: probes at once (at least 1). Call within a tokio runtime.
    pub fn new(clock: Arc<dyn Clock>, concurrency: usize) -> Runner {
        Runner { ctx: Arc::new(ProbeContext::new()), permits: Arc::new(Semaphore::new(concurrency.max(1))), clock }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Runs `endpoint` once. Never fails: what went wrong is in the result's `errors`.
    pub async fn run(&self, endpoint: &Endpoint) -> CheckResult {
        // The semaphore is never closed; a failure to acquire would only mean running unbounded.
        let _permit = self.permits.acquire().await.ok();
        let timestamp_ms = self.clock.now_ms();
        let started = Instant::now();
        let timeout = endpoint.client.timeout;
        let mut seen = match tokio::time::timeout(timeout, endpoint.kind.probe(endpoint, &self.ctx)).await {
            Ok(seen) => seen,
            Err(_) => Observation::failed(format!("timed out after {}", format_go(timeout))),
        };
        if seen.timings.total.is_zero() {
            seen.timings.total = started.elapsed();
        }
        if seen.duration.is_zero() {
            seen.duration = seen.timings.total;
        }
        evaluate(endpoint, seen, timestamp_ms, self.clock.now_ms())
    }
}

/// The conditions of `endpoint` against what was seen (Gatus: the check succeeds when every
/// condition holds; errors alone do not fail it).
pub fn evaluate(endpoint: &Endpoint, mut seen: Observation, timestamp_ms: i64, now_ms: i64) -> CheckResult {
    let mut errors = seen.errors.clone();
    let status = seen.status;
    if status.is_none() {
        seen.status = Some(endpoint.kind.missing_status());
    }
    let mut conditions = Vec::with_capacity(endpoint.conditions.len());
    for condition in &endpoint.conditions {
        let (result, more) = condition.evaluate(&seen, now_ms, endpoint.ui.display);
        conditions.push(result);
        errors.extend(more);
    }
    let success = !conditions.is_empty() && conditions.iter().all(|c| c.success);
    CheckResult {
        key: endpoint.key(),
        name: endpoint.name.clone(),
        group: endpoint.group.clone(),
        kind: endpoint.kind.name(),
        success,
        timestamp_ms,
        duration: seen.duration,
        status,
        ip: seen.ip,
        connected: seen.connected,
        dns_rcode: seen.dns_rcode,
        cert_not_after_ms: seen.cert_not_after_ms,
        conditions,
        errors,
        timings: seen.timings,
    }
}
