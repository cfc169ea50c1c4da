//! From a discovered address to a scrape target: the label set Prometheus gives it before and
//! after `relabel_configs`, the URL it is scraped at, and where in the interval it is scraped.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{ScrapeConfig, TargetGroup, parse_duration};
use crate::labels::{Labels, LabelsBuilder};
use crate::relabel;

pub const ADDRESS: &str = "__address__";
pub const SCHEME: &str = "__scheme__";
pub const METRICS_PATH: &str = "__metrics_path__";
pub const SCRAPE_INTERVAL: &str = "__scrape_interval__";
pub const SCRAPE_TIMEOUT: &str = "__scrape_timeout__";
pub const PARAM_PREFIX: &str = "__param_";
pub const META_PREFIX: &str = "__meta_";

/// A target as relabelling left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Every label after relabelling, internal `__` ones included (`__scheme__`, `__param_*`…).
    pub labels: Labels,
    /// The labels before relabelling, as discovery gave them.
    pub discovered_labels: Labels,
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Target {
    /// The labels a target shows and adds to its samples: the ones not starting with `__`.
    pub fn public_labels(&self) -> Labels {
        Labels::from_pairs(
            self.labels.iter().filter(|l| !l.name.starts_with("__")).map(|l| (l.name.clone(), l.value.clone())),
        )
    }

    /// Where in each interval this target is scraped: a hash of the target, so a restart keeps
    /// the same phase and many targets spread evenly rather than all scraping at once. `seed`
    /// (the external labels' hash) makes two replicas of a pair scrape at different moments.
    pub fn offset(&self, now_nanos: u128, seed: u64) -> Duration {
        let interval = self.interval.as_nanos().max(1);
        let base = interval - now_nanos % interval;
        let offset =
            u128::from(fnv1a(self.labels.to_string().as_bytes(), fnv1a(self.url.as_bytes(), 0)) ^ seed) % interval;
        let mut next = base + offset;
        if next > interval {
            next -= interval;
        }
        Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
    }
}

/// FNV-1a, 64 bits: stable across processes and versions, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("no address")]
    NoAddress,
    #[error("{0:?} is not a valid hostname")]
    InvalidAddress(String),
    #[error("invalid scheme {0:?}")]
    InvalidScheme(String),
    #[error("error parsing scrape interval: {0:?}")]
    InvalidInterval(String),
    #[error("error parsing scrape timeout: {0:?}")]
    InvalidTimeout(String),
    #[error("scrape timeout cannot be greater than scrape interval ({timeout:?} > {interval:?})")]
    TimeoutOverInterval { timeout: String, interval: String },
    #[error("invalid scrape URL: {0}")]
    InvalidUrl(String),
}

fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut rest = ms;
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// The label set of one discovered address, relabelled: `Ok(None)` when `relabel_configs`
/// dropped it. Follows Prometheus's `PopulateLabels`.
pub fn populate(
    config: &ScrapeConfig,
    group: &TargetGroup,
    address: &str,
    extra: &BTreeMap<String, String>,
) -> Result<Option<Target>, TargetError> {
    let mut lb = LabelsBuilder::default();
    for (n, v) in &group.labels {
        lb.set(n.clone(), v.clone());
    }
    for (n, v) in extra {
        lb.set(n.clone(), v.clone());
    }
    lb.set(ADDRESS.into(), address.into());
    let defaults = [
        ("job", config.job_name.clone()),
        (SCRAPE_INTERVAL, duration_text(config.scrape_interval)),
        (SCRAPE_TIMEOUT, duration_text(config.scrape_timeout)),
        (METRICS_PATH, config.metrics_path.clone()),
        (SCHEME, config.scheme.clone()),
    ];
    for (name, value) in defaults {
        if lb.get(name).is_none() {
            lb.set(name.into(), value);
        }
    }
    for (name, values) in &config.params {
        let label = format!("{PARAM_PREFIX}{name}");
        if lb.get(&label).is_none()
            && let Some(first) = values.first()
        {
            lb.set(label, first.clone());
        }
    }
    let discovered_labels = lb.build();
    if !relabel::process_builder(&mut lb, &config.relabel_configs) {
        return Ok(None);
    }
    let address = lb.get(ADDRESS).unwrap_or("").to_owned();
    if address.is_empty() {
        return Err(TargetError::NoAddress);
    }
    let scheme = lb.get(SCHEME).unwrap_or("http").to_owned();
    if scheme != "http" && scheme != "https" {
        return Err(TargetError::InvalidScheme(scheme));
    }
    // Prometheus 2.x adds the scheme's port to an address without one.
    let address = if has_port(&address) {
        address
    } else {
        let with_port = format!("{address}:{}", if scheme == "https" { 443 } else { 80 });
        lb.set(ADDRESS.into(), with_port.clone());
        with_port
    };
    if address.contains('/') {
        return Err(TargetError::InvalidAddress(address));
    }
    let interval_text = lb.get(SCRAPE_INTERVAL).unwrap_or("").to_owned();
    let interval = parse_duration(&interval_text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| TargetError::InvalidInterval(interval_text.clone()))?;
    let timeout_text = lb.get(SCRAPE_TIMEOUT).unwrap_or("").to_owned();
    let timeout = parse_duration(&timeout_text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| TargetError::InvalidTimeout(timeout_text.clone()))?;
    if timeout > interval {
        return Err(TargetError::TimeoutOverInterval { timeout: timeout_text, interval: interval_text });
    }
    // Meta labels are for relabelling only.
    for l in lb.build().iter() {
        if l.name.starts_with(META_PREFIX) {
            lb.del(&l.name);
        }
    }
    if lb.get("instance").is_none() {
        lb.set("instance".into(), address.clone());
    }
    let labels = lb.build();
    let url = scrape_url(config, &labels, &scheme, &address)?;
    Ok(Some(Target { labels, discovered_labels, url, interval, timeout }))
}

fn has_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((host, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.is_empty(),
        None => false,
    }
}

/// `scheme://address/path?params`, where a `__param_x` label overrides the first `x` value.
fn scrape_url(config: &ScrapeConfig, labels: &Labels, scheme: &str, address: &str) -> Result<String, TargetError> {
    let path = labels.get(METRICS_PATH).unwrap_or("/metrics");
    let mut params: BTreeMap<String, Vec<String>> = config.params.clone();
    for l in labels.iter() {
        if let Some(name) = l.name.strip_prefix(PARAM_PREFIX) {
            let values = params.entry(name.to_owned()).or_default();
            match values.first_mut() {
                Some(first) => first.clone_from(&l.value),
                None => values.push(l.value.clone()),
            }
        }
    }
    let mut url = url::Url::parse(&format!("{scheme}://{address}"))
        .map_err(|e| TargetError::InvalidUrl(format!("{scheme}://{address}: {e}")))?;
    url.set_path(path);
    if !params.is_empty() {
        let mut q = url.query_pairs_mut();
        for (name, values) in &params {
            for v in values {
                q.append_pair(name, v);
            }
        }
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use std::path::Path;

    fn config(yaml: &str) -> ScrapeConfig {
        let c = load(yaml, "p.yml", Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
        c.scrape_configs.into_iter().next().unwrap_or_else(|| panic!("one job"))
    }

    #[test]
    fn labels_before_and_after_relabelling() {
        let c = config(
            "scrape_configs:\n- job_name: node\n  scrape_interval: 30s\n  params: {module: [a, b]}\n  static_configs: [{targets: [h1], labels: {env: prod, __meta_x: m}}]\n  relabel_configs:\n  - {source_labels: [__meta_x], target_label: from_meta}\n",
        );
        let g = &c.static_configs[0];
        let t = populate(&c, g, "h1", &BTreeMap::new()).ok().flatten().unwrap_or_else(|| panic!("a target"));
        assert_eq!(
            t.discovered_labels.to_string(),
            r#"{__address__="h1", __meta_x="m", __metrics_path__="/metrics", __param_module="a", __scheme__="http", __scrape_interval__="30s", __scrape_timeout__="10s", env="prod", job="node"}"#
        );
        assert_eq!(t.public_labels().to_string(), r#"{env="prod", from_meta="m", instance="h1:80", job="node"}"#);
        // The url crate leaves out a default port.
        assert_eq!(t.url, "http://h1/metrics?module=a&module=b");
        assert_eq!(t.interval, Duration::from_secs(30));
        let off = t.offset(0, 0);
        assert!(off <= t.interval);
        assert_eq!(off, t.offset(0, 0));
        assert_ne!(t.offset(0, 0), t.offset(0, 12345));
    }

    #[test]
    fn blackbox_pattern_and_drops() {
        let c = config(
            "scrape_configs:\n- job_name: bb\n  metrics_path: /probe\n  static_configs: [{targets: ['https://example.com']}]\n  relabel_configs:\n  - {source_labels: [__address__], target_label: __param_target}\n  - {source_labels: [__param_target], target_label: instance}\n  - {target_label: __address__, replacement: '127.0.0.1:9115'}\n",
        );
        let t = populate(&c, &c.static_configs[0], "https://example.com", &BTreeMap::new())
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("a target"));
        assert_eq!(t.url, "http://127.0.0.1:9115/probe?target=https%3A%2F%2Fexample.com");
        assert_eq!(t.public_labels().get("instance"), Some("https://example.com"));
        let c = config(
            "scrape_configs:\n- job_name: x\n  relabel_configs:\n  - {source_labels: [__address__], regex: 'keep.*', action: keep}\n",
        );
        let g = TargetGroup::default();
        assert_eq!(populate(&c, &g, "other:1", &BTreeMap::new()), Ok(None));
        assert!(populate(&c, &g, "keep:1", &BTreeMap::new()).is_ok_and(|t| t.is_some()));
        let c = config("scrape_configs:\n- job_name: x\n");
        assert_eq!(populate(&c, &g, "", &BTreeMap::new()), Err(TargetError::NoAddress));
    }
}
