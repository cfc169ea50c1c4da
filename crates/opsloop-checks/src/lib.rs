//! The Gatus / Uptime Kuma role, as a library (no HTTP server, no store): checks read from
//! Gatus's endpoint format, run on a scheduler that spreads them over their interval,
//! judged by Gatus's conditions, with flap damping; heartbeats that go late. Results are
//! handed to a sink the host turns into samples and events.
//!
//! What a host calls:
//! - [`config::load`] / [`config::load_file`]: a Gatus `config.yaml` (plus opsloop's
//!   `checks:` and `heartbeats:`) into [`config::Config`], or every problem at file:line:column.
//! - [`runner::Runner::run`]: one check, once, into a [`result::CheckResult`].
//! - [`scheduler::Scheduler`]: every check on its interval, states with flap damping, results
//!   and state changes into the host's [`scheduler::ResultSink`].
//! - [`heartbeat::Heartbeat`]: a pure state machine per heartbeat monitor, fed pings and ticks.

pub mod condition;
pub mod config;
pub mod duration;
pub mod heartbeat;
pub mod kinds;
pub mod result;
pub mod runner;
pub mod scheduler;
