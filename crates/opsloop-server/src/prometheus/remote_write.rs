//! Remote write out: the `remote_write` entries of the `prometheus.yml` named by `[metrics]
//! config_file` become `RemoteWriter`s, each with its durable queue under
//! `<data-dir>/metrics/remote-write/<name>`. Whatever the server appends through
//! [`MetricsHub::appender`] (scrapes, rules, remote write in) reaches them; [`workers`] sends.
//!
//! The writers are made once, with the storage, from the file as it was at that moment: a
//! changed `remote_write` section takes a restart.

use std::sync::Arc;

use opsloop_metrics::remote::{RemoteWriteStats, RemoteWriter, Tee, WriterOptions};
use opsloop_metrics::storage::Storage;
use sha2::Digest;

use super::{MetricsError, MetricsHub};
use crate::config::ServerConfig;
use crate::state::AppState;
use crate::subsystem::Worker;

/// One worker per `remote_write` entry, each sending its queue for as long as the server runs
/// (aborting it at shutdown is safe: what was not acknowledged stays queued).
pub fn workers(state: &AppState) -> Vec<Worker> {
    if state.prometheus.storage(&state.config).is_err() {
        return Vec::new();
    }
    state
        .prometheus
        .remote_writers(&state.config)
        .iter()
        .map(|w| Worker::new("metrics remote write", Arc::clone(w).run()))
        .collect()
}

impl MetricsHub {
    /// Where the server appends samples: the storage, and the remote writers' queues after it.
    /// It reads from the storage alone (rules query what they append).
    pub fn appender(&self, config: &ServerConfig) -> Result<Arc<dyn Storage>, MetricsError> {
        let storage = self.storage(config)?;
        let writers = self.remote_writers(config);
        if writers.is_empty() {
            return Ok(Arc::clone(storage) as Arc<dyn Storage>);
        }
        let storage: Arc<dyn Storage> = Arc::clone(storage) as Arc<dyn Storage>;
        Ok(Arc::new(Tee { storage, writers: writers.to_vec() }))
    }

    /// The writers of `config_file`'s `remote_write` entries, made on first use. A file that
    /// cannot be read or a queue that cannot be opened is logged and leaves that writer out,
    /// rather than keeping samples from being stored.
    pub fn remote_writers(&self, config: &ServerConfig) -> &[Arc<RemoteWriter>] {
        self.remote_writers.get_or_init(|| open_writers(config))
    }

    pub fn remote_write_stats(&self, config: &ServerConfig) -> Vec<RemoteWriteStats> {
        self.remote_writers(config).iter().map(|w| w.stats()).collect()
    }
}

fn open_writers(config: &ServerConfig) -> Vec<Arc<RemoteWriter>> {
    let Some(file) = &config.metrics.config_file else { return Vec::new() };
    if !config.metrics.enabled {
        return Vec::new();
    }
    let prometheus = match opsloop_metrics::config::load_file(file) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "metrics config: no remote write");
            return Vec::new();
        }
    };
    let root = config.data_dir.join("metrics").join("remote-write");
    let mut writers = Vec::new();
    for rw in prometheus.remote_write {
        let mut options = WriterOptions::new(root.join(queue_name(rw.name.as_deref(), &rw.url)));
        options.external_labels = prometheus.global.external_labels.clone();
        let url = rw.url.clone();
        match RemoteWriter::open(rw, options) {
            Ok(w) => writers.push(w),
            Err(e) => tracing::warn!(url, error = %e, "remote write left out"),
        }
    }
    writers
}

/// A directory name for a writer's queue: its `name` made safe, or a digest of its URL (so the
/// queue of an unnamed entry is found again after a restart, as long as the URL stays).
fn queue_name(name: Option<&str>, url: &str) -> String {
    match name {
        Some(n) if !n.is_empty() => {
            n.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
        }
        _ => format!("url-{}", &hex::encode(sha2::Sha256::digest(url.as_bytes()))[..16]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_safe_and_stable() {
        assert_eq!(queue_name(Some("../x y"), "http://a"), "___x_y");
        assert_eq!(queue_name(None, "http://a"), queue_name(Some(""), "http://a"));
        assert!(queue_name(None, "http://a").starts_with("url-"));
        assert_ne!(queue_name(None, "http://a"), queue_name(None, "http://b"));
    }
}
