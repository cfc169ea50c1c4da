//! The server exercised in-process: the whole `Router` (routes, access enforcement, limits)
//! driven with `oneshot`, on a real store.

// Test helpers may panic on failure: that is how a test reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app;

mod artifacts;
mod auth_matrix;
mod bad_input;
mod browser_flows;
mod incidents;
mod polling;
mod readiness;
mod releases;
mod schedules;
mod webhooks;
