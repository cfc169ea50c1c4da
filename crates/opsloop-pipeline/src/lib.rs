//! The CI language of opsloop: GitLab CI YAML loaded with positions, validated, expanded
//! (`include`, `!reference`, `extends`, `default`) and planned into a job DAG.
//!
//! Pure: no processes, no clock of its own. The runner executes what this crate plans; the
//! server and `opsloop run` share it, so a pipeline means the same thing everywhere.

pub mod config;
pub mod expression;
pub mod inputs;
pub mod plan;
pub mod predefined;
pub mod variables;

// The shared configuration vocabulary, under the paths this crate always had.
pub use opsloop_config::{diagnostic, yaml};
