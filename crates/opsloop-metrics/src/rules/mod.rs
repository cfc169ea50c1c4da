//! Recording and alerting rules: rule files, the templates of alerts, evaluation and
//! notification, as Prometheus's `rules` and `notifier` packages do them.

pub mod file;
pub mod group;
pub mod manager;
pub mod notify;
pub mod template;

pub use file::{RuleDef, RuleGroup, RuleKind};
pub use group::{AlertState, Group, GroupOptions};
pub use manager::{ManagerOptions, RuleManager};
pub use notify::{Alert, AlertSink, Notifier};
