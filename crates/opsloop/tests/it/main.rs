//! Integration tests of the real `opsloop` binary: started on a free port, spoken to over HTTP
//! and through its own CLI. One test binary for the crate keeps link times down.

// Test helpers may panic on failure: that is how a test reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod logs;
mod metrics;
mod notifications;
mod proxy;

mod agents;
mod alerting;
mod architecture;
mod artifacts;
mod browser;
mod checks;
mod cli;
mod conformance;
mod crash;
mod deploy;
mod readme;
mod remote_write;
mod run;
mod scan;
mod scrape;
mod server_ci;
mod terraform;
