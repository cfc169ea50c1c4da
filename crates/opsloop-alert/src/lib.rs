//! The Alertmanager and PagerDuty roles, as a library (no HTTP server, no store): alerts in,
//! routed through an `alertmanager.yml` route tree, grouped, silenced and inhibited the way
//! Alertmanager does, and sent through notification channels; on-call schedules and
//! escalation policies decide who is paged. Time comes from `opsloop_core::Clock`.

pub mod alerts;
pub mod config;
pub mod dispatch;
pub mod driver;
pub mod inhibit;
pub mod labels;
pub mod matcher;
pub mod nflog;
pub mod notify;
pub mod oncall;
pub mod route;
pub mod silence;
pub mod timeinterval;

pub use dispatch::{Engine, Notification, Snapshot};
