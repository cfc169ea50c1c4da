//! Recording and alerting rules: rule files, the templates of alerts, evaluation and
//! notification, as Prometheus's `rules` and `notifier` packages do them.

pub mod file;
pub mod template;
