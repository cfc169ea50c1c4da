//! The configuration vocabulary of opsloop: what every parser of a user's file shares — the
//! pipeline engine's `.gitlab-ci.yml`, the deploy engine's `opsloop.yml`, and the metrics,
//! alerting, checks and infra files to come. A YAML tree whose every node keeps its
//! file:line:column ([`yaml`]), and [`diagnostic`]s that say what is wrong, where, and how to
//! fix it. No engine depends on another engine for these.

pub mod diagnostic;
pub mod yaml;
