//! The Alertmanager and PagerDuty roles, as a library (no HTTP server, no store): alerts in,
//! routed through an `alertmanager.yml` route tree, grouped, silenced and inhibited the way
//! Alertmanager does, and sent through notification channels; on-call schedules and
//! escalation policies decide who is paged. Time comes from `opsloop_core::Clock`.

pub mod config;
pub mod labels;
pub mod matcher;
pub mod route;
pub mod timeinterval;
