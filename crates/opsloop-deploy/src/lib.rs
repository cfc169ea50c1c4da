//! Deployments. For now the parts every strategy stands on: the built-in reverse proxy
//! ([`proxy`]), whose routes switch atomically inside the running process; the golden
//! signals it records per service version ([`signals`]); the [`supervisor`] that runs,
//! health-checks, restarts and stops instances; and the [`strategy`] that deploys a release
//! blue-green or canary with automatic rollback. The deployment model (`opsloop.yml`,
//! [`manifest`]) and the diff of its desired state ([`desired`]) are here too; its records
//! and the CLI/API (issue 5) build on these.

pub mod cgroup;
pub mod config;
pub mod desired;
pub mod manifest;
pub mod pool;
pub mod proxy;
pub mod signals;
pub mod ssh;
pub mod strategy;
pub mod supervisor;
pub mod upstream;

pub use config::DeployConfig;
pub use proxy::{Backend, Proxy, Route};
pub use signals::{Signals, Snapshot};
