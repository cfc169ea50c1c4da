//! The metrics engine: Prometheus's data model, a PromQL evaluator over any [`storage::Queryable`],
//! and (in its own modules) the TSDB, scraping and rules. A library: no HTTP server, no store.

pub mod config;
pub mod labels;
pub mod promql;
pub mod relabel;
pub mod remote;
pub mod rules;
pub mod scrape;
pub mod storage;
pub mod textparse;
pub mod tsdb;

use std::path::PathBuf;

/// The `[metrics]` section of `opsloop.toml`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Run the metrics subsystem (scraping, storage, rules, the Prometheus API).
    pub enabled: bool,
    /// A `prometheus.yml` to scrape and evaluate rules from (`--metrics-config`).
    pub config_file: Option<PathBuf>,
    /// How long samples are kept (`retention`, Prometheus's 15 days by default).
    pub retention_seconds: u64,
    /// The most the stored blocks may take on disk, oldest dropped first (`retention_size`).
    pub retention_bytes: Option<u64>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, config_file: None, retention_seconds: 15 * 86_400, retention_bytes: None }
    }
}
