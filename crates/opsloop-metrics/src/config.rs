//! `prometheus.yml`, read so that a team's existing file works unchanged: the same keys, the
//! same defaults (1m interval, 10s timeout, `/metrics`, `http`) and the same checks as
//! Prometheus 2.x's `config` package, with every problem at file:line:column and a misspelt key
//! answered with the key it was meant to be.
//!
//! Read with opsloop-config's YAML tree rather than serde: serde loses positions, and
//! Prometheus's own loader is strict (unknown and repeated keys are errors), which a
//! positioned walk does naturally.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opsloop_config::diagnostic::{Diagnostic, Sources, nearest};
use opsloop_config::yaml::{self, Key, Node, Span, Value};

use crate::labels::Labels;
use crate::relabel::{self, Action, Regexp, RelabelConfig, is_valid_label_name};

pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: GlobalConfig,
    pub scrape_configs: Vec<ScrapeConfig>,
    pub rule_files: Vec<String>,
    pub alerting: AlertingConfig,
    pub remote_write: Vec<RemoteWriteConfig>,
    pub remote_read: Vec<RemoteReadConfig>,
    /// What loaded but will not do anything here (service discovery opsloop lacks).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalConfig {
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub evaluation_interval: Duration,
    pub external_labels: Labels,
    pub query_log_file: Option<String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
            scrape_timeout: DEFAULT_SCRAPE_TIMEOUT,
            evaluation_interval: DEFAULT_EVALUATION_INTERVAL,
            external_labels: Labels::new(),
            query_log_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authorization {
    /// `Bearer` unless written otherwise.
    pub kind: String,
    pub credentials: Option<String>,
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: Option<String>,
}

/// The HTTP client settings every section that talks HTTP shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpClientConfig {
    pub basic_auth: Option<BasicAuth>,
    /// `bearer_token` and `bearer_token_file` end up here too, as Prometheus folds them in.
    pub authorization: Option<Authorization>,
    pub tls_config: TlsConfig,
    pub proxy_url: Option<String>,
    pub follow_redirects: bool,
    pub enable_http2: bool,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            basic_auth: None,
            authorization: None,
            tls_config: TlsConfig::default(),
            proxy_url: None,
            follow_redirects: true,
            enable_http2: true,
        }
    }
}

/// `static_configs` entry, and what file and HTTP discovery return.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Where the group came from, for `__meta_filepath` and for replacing it on change.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileSdConfig {
    /// Patterns, made absolute against the configuration file's directory.
    pub files: Vec<String>,
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSdConfig {
    pub url: String,
    pub refresh_interval: Duration,
    pub http: HttpClientConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsSdConfig {
    pub names: Vec<String>,
    pub record_type: String,
    pub port: u16,
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub metrics_path: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub scheme: String,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub body_size_limit: u64,
    pub sample_limit: u64,
    pub target_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    pub http: HttpClientConfig,
    pub static_configs: Vec<TargetGroup>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub http_sd_configs: Vec<HttpSdConfig>,
    pub dns_sd_configs: Vec<DnsSdConfig>,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertingConfig {
    pub alert_relabel_configs: Vec<RelabelConfig>,
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerConfig {
    pub static_configs: Vec<TargetGroup>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub path_prefix: String,
    pub scheme: String,
    pub timeout: Duration,
    pub api_version: String,
    pub http: HttpClientConfig,
    pub relabel_configs: Vec<RelabelConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub capacity: u64,
    pub max_shards: u64,
    pub min_shards: u64,
    pub max_samples_per_send: u64,
    pub batch_send_deadline: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_on_http_429: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 2500,
            max_shards: 200,
            min_shards: 1,
            max_samples_per_send: 500,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            retry_on_http_429: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteConfig {
    pub url: String,
    pub name: Option<String>,
    pub remote_timeout: Duration,
    pub headers: BTreeMap<String, String>,
    pub write_relabel_configs: Vec<RelabelConfig>,
    pub queue_config: QueueConfig,
    pub http: HttpClientConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteReadConfig {
    pub url: String,
    pub name: Option<String>,
    pub remote_timeout: Duration,
    pub headers: BTreeMap<String, String>,
    pub read_recent: bool,
    pub required_matchers: BTreeMap<String, String>,
    pub http: HttpClientConfig,
}

/// Why a file was refused: every problem found, rendered at file:line:column.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{rendered}")]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
    pub rendered: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Reads a `prometheus.yml` from disk; relative paths in it (file discovery patterns) are
/// taken from the file's directory, as Prometheus takes them.
pub fn load_file(path: &Path) -> Result<Config, LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(load(&text, &path.display().to_string(), dir)?)
}

/// Parses a `prometheus.yml` text; `path` names it in errors, `dir` anchors relative paths.
pub fn load(text: &str, path: &str, dir: &Path) -> Result<Config, ConfigError> {
    let mut sources = Sources::default();
    let file = sources.add(path, text);
    let mut d = Decoder { diags: Vec::new(), warnings: Vec::new(), dir: dir.to_path_buf() };
    let config = match yaml::parse_with_header(text, file) {
        Ok(parsed) => {
            for key in &parsed.duplicates {
                d.error(key.span, format!("key `{}` is already set in this mapping", key.name));
            }
            if parsed.spec.is_some() {
                d.error(parsed.body.span, "a prometheus.yml holds one YAML document");
            }
            d.config(&parsed.body)
        }
        Err(e) => {
            d.error(e.span, format!("invalid YAML: {}", e.message));
            None
        }
    };
    match config {
        Some(c) if !d.diags.iter().any(Diagnostic::is_error) => Ok(c),
        _ => {
            let rendered = d.diags.iter().map(|x| sources.render(x)).collect::<Vec<_>>().join("\n");
            Err(ConfigError { diagnostics: d.diags, rendered })
        }
    }
}

/// `1y2w3d4h5m6s7ms` or `0`, units in that order, each at most once: Prometheus's durations.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = text;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `ms` before `m`, or `5ms` reads as five minutes and a stray `s`.
        let (index, unit_ms, len) = if rest.starts_with("ms") {
            (6, 1, 2)
        } else {
            let (i, (u, ms)) = UNITS.iter().enumerate().find(|(_, (u, _))| u.len() == 1 && rest.starts_with(u))?;
            (i, *ms, u.len())
        };
        if index < next_unit {
            return None;
        }
        next_unit = index + 1;
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
        rest = &rest[len..];
    }
    Some(Duration::from_millis(total))
}

const TOP_KEYS: &[&str] = &[
    "global",
    "alerting",
    "rule_files",
    "scrape_config_files",
    "scrape_configs",
    "storage",
    "tracing",
    "remote_write",
    "remote_read",
];
const GLOBAL_KEYS: &[&str] =
    &["scrape_interval", "scrape_timeout", "evaluation_interval", "external_labels", "query_log_file"];
const HTTP_KEYS: &[&str] = &[
    "basic_auth",
    "authorization",
    "oauth2",
    "bearer_token",
    "bearer_token_file",
    "tls_config",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
    "follow_redirects",
    "enable_http2",
];
/// Service discoveries Prometheus has and opsloop does not: accepted, with a warning.
const OTHER_SD_KEYS: &[&str] = &[
    "azure_sd_configs",
    "consul_sd_configs",
    "digitalocean_sd_configs",
    "docker_sd_configs",
    "dockerswarm_sd_configs",
    "ec2_sd_configs",
    "eureka_sd_configs",
    "gce_sd_configs",
    "hetzner_sd_configs",
    "ionos_sd_configs",
    "kubernetes_sd_configs",
    "kuma_sd_configs",
    "lightsail_sd_configs",
    "linode_sd_configs",
    "marathon_sd_configs",
    "nerve_sd_configs",
    "nomad_sd_configs",
    "openstack_sd_configs",
    "ovhcloud_sd_configs",
    "puppetdb_sd_configs",
    "scaleway_sd_configs",
    "serverset_sd_configs",
    "triton_sd_configs",
    "uyuni_sd_configs",
    "vultr_sd_configs",
];
const SCRAPE_KEYS: &[&str] = &[
    "job_name",
    "honor_labels",
    "honor_timestamps",
    "params",
    "scrape_interval",
    "scrape_timeout",
    "metrics_path",
    "scheme",
    "body_size_limit",
    "sample_limit",
    "target_limit",
    "label_limit",
    "label_name_length_limit",
    "label_value_length_limit",
    "static_configs",
    "file_sd_configs",
    "http_sd_configs",
    "dns_sd_configs",
    "relabel_configs",
    "metric_relabel_configs",
];
const RELABEL_KEYS: &[&str] =
    &["source_labels", "separator", "regex", "modulus", "target_label", "replacement", "action"];
const ALERTMANAGER_KEYS: &[&str] = &[
    "static_configs",
    "file_sd_configs",
    "http_sd_configs",
    "dns_sd_configs",
    "path_prefix",
    "scheme",
    "timeout",
    "api_version",
    "relabel_configs",
];
const REMOTE_WRITE_KEYS: &[&str] = &[
    "url",
    "name",
    "remote_timeout",
    "headers",
    "write_relabel_configs",
    "queue_config",
    "metadata_config",
    "send_exemplars",
    "send_native_histograms",
    "sigv4",
];
const REMOTE_READ_KEYS: &[&str] =
    &["url", "name", "remote_timeout", "headers", "read_recent", "required_matchers", "filter_external_labels"];
/// Headers remote write sets itself; Prometheus refuses a configuration that overrides them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "retry-after",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
];

fn concat(lists: &[&[&'static str]]) -> Vec<&'static str> {
    lists.iter().flat_map(|l| l.iter().copied()).collect()
}

struct Decoder {
    diags: Vec<Diagnostic>,
    warnings: Vec<String>,
    dir: PathBuf,
}

/// A mapping whose keys have been checked against the known ones.
struct Fields<'n> {
    entries: &'n [(Key, Node)],
    span: Span,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries.iter().rev().find(|(k, _)| k.name == name).map(|(_, v)| v).filter(|v| v.value != Value::Null)
    }
}

impl Decoder {
    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(message, Some(span)));
    }

    /// A mapping with only `known` keys; an unknown key is an error naming the nearest known
    /// one. `null` reads as an empty mapping, as YAML's decoders read it.
    fn fields<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<Fields<'n>> {
        let entries: &'n [(Key, Node)] = match &node.value {
            Value::Mapping(entries) => entries,
            Value::Null => &[],
            _ => {
                self.error(node.span, format!("{what} must be a mapping, not {}", node.kind()));
                return None;
            }
        };
        for (key, _) in entries {
            if !known.contains(&key.name.as_str()) {
                let mut d = Diagnostic::error(format!("unknown key `{}` in {what}", key.name), Some(key.span));
                d = match nearest(&key.name, known) {
                    Some(meant) => d.with_hint(format!("did you mean `{meant}`?")),
                    None => d.with_hint(format!("{what} takes: {}", known.join(", "))),
                };
                self.diags.push(d);
            }
        }
        Some(Fields { entries, span: node.span })
    }

    fn string(&mut self, node: Option<&Node>, what: &str) -> Option<String> {
        let node = node?;
        match &node.value {
            Value::String(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => node.scalar_text(),
            _ => {
                self.error(node.span, format!("`{what}` must be a string, not {}", node.kind()));
                None
            }
        }
    }

    fn duration(&mut self, node: Option<&Node>, what: &str) -> Option<Duration> {
        let node = node?;
        let text = self.string(Some(node), what)?;
        match parse_duration(&text) {
            Some(d) => Some(d),
            None => {
                let d = Diagnostic::error(format!("`{what}`: not a valid duration string: {text:?}"), Some(node.span))
                    .with_hint("durations are like 30s, 1m, 1h30m, 500ms");
                self.diags.push(d);
                None
            }
        }
    }

    /// A duration where zero means "not set", as a Go zero value does.
    fn duration_set(&mut self, node: Option<&Node>, what: &str) -> Option<Duration> {
        self.duration(node, what).filter(|d| !d.is_zero())
    }

    fn boolean(&mut self, node: Option<&Node>, what: &str, default: bool) -> bool {
        let Some(node) = node else { return default };
        match node.value {
            Value::Bool(b) => b,
            _ => {
                self.error(node.span, format!("`{what}` must be true or false, not {}", node.kind()));
                default
            }
        }
    }

    fn uint(&mut self, node: Option<&Node>, what: &str) -> u64 {
        let Some(node) = node else { return 0 };
        match node.value {
            Value::Int(n) if n >= 0 => n as u64,
            _ => {
                self.error(node.span, format!("`{what}` must be a non-negative integer, not {}", node.kind()));
                0
            }
        }
    }

    /// A byte size like `10MB` or `0` (Prometheus's `body_size_limit`).
    fn bytes(&mut self, node: Option<&Node>, what: &str) -> u64 {
        let Some(node) = node else { return 0 };
        let Some(text) = self.string(Some(node), what) else { return 0 };
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let unit = match &text[digits..] {
            "" | "B" => Some(1u64),
            "KB" | "KiB" => Some(1 << 10),
            "MB" | "MiB" => Some(1 << 20),
            "GB" | "GiB" => Some(1 << 30),
            "TB" | "TiB" => Some(1 << 40),
            _ => None,
        };
        match (text[..digits].parse::<u64>().ok(), unit) {
            (Some(n), Some(u)) => n.saturating_mul(u),
            _ => {
                self.error(node.span, format!("`{what}`: invalid size {text:?}"));
                0
            }
        }
    }

    fn string_list(&mut self, node: Option<&Node>, what: &str) -> Vec<String> {
        let Some(node) = node else { return Vec::new() };
        match &node.value {
            Value::Sequence(items) => items.iter().filter_map(|i| self.string(Some(i), what)).collect(),
            _ => {
                self.error(node.span, format!("`{what}` must be a list, not {}", node.kind()));
                Vec::new()
            }
        }
    }

    fn string_map(&mut self, node: Option<&Node>, what: &str) -> Vec<(Key, String)> {
        let Some(node) = node else { return Vec::new() };
        match &node.value {
            Value::Mapping(entries) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    let value = if v.value == Value::Null { Some(String::new()) } else { self.string(Some(v), what) };
                    if let Some(value) = value {
                        out.push((k.clone(), value));
                    }
                }
                out
            }
            _ => {
                self.error(node.span, format!("`{what}` must be a mapping, not {}", node.kind()));
                Vec::new()
            }
        }
    }

    fn label_map(&mut self, node: Option<&Node>, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, value) in self.string_map(node, what) {
            if !is_valid_label_name(&key.name) {
                self.error(key.span, format!("{:?} is not a valid label name", key.name));
                continue;
            }
            out.insert(key.name, value);
        }
        out
    }

    fn list<'n>(&mut self, node: Option<&'n Node>, what: &str) -> &'n [Node] {
        let Some(node) = node else { return &[] };
        match &node.value {
            Value::Sequence(items) => {
                for item in items {
                    if item.value == Value::Null {
                        self.error(item.span, format!("empty or null section in {what}"));
                    }
                }
                items
            }
            _ => {
                self.error(node.span, format!("`{what}` must be a list, not {}", node.kind()));
                &[]
            }
        }
    }

    fn path(&self, text: &str) -> String {
        let p = Path::new(text);
        if p.is_absolute() { text.to_owned() } else { self.dir.join(p).display().to_string() }
    }

    fn config(&mut self, root: &Node) -> Option<Config> {
        let top = self.fields(root, "the top level", TOP_KEYS)?;
        let global = self.global(top.get("global"));
        let mut rule_files = Vec::new();
        for (i, pattern) in self.string_list(top.get("rule_files"), "rule_files").into_iter().enumerate() {
            if glob::Pattern::new(&pattern).is_err() {
                let span = top.get("rule_files").and_then(|n| match &n.value {
                    Value::Sequence(items) => items.get(i).map(|x| x.span),
                    _ => None,
                });
                self.error(span.unwrap_or(top.span), format!("rule_files: syntax error in pattern {pattern:?}"));
            }
            rule_files.push(pattern);
        }
        let mut scrape_configs: Vec<ScrapeConfig> = Vec::new();
        for node in self.list(top.get("scrape_configs"), "scrape_configs") {
            if node.value == Value::Null {
                continue;
            }
            let Some(sc) = self.scrape_config(node, &global) else { continue };
            if scrape_configs.iter().any(|other| other.job_name == sc.job_name) {
                let span = node.get("job_name").map_or(node.span, |n| n.span);
                self.error(span, format!("found multiple scrape configs with job name {:?}", sc.job_name));
            }
            scrape_configs.push(sc);
        }
        let alerting = self.alerting(top.get("alerting"));
        let mut remote_write: Vec<RemoteWriteConfig> = Vec::new();
        for node in self.list(top.get("remote_write"), "remote_write") {
            if let Some(rw) = self.remote_write(node) {
                if let Some(name) = &rw.name
                    && remote_write.iter().any(|o| o.name.as_ref() == Some(name))
                {
                    self.error(node.span, format!("found multiple remote write configs with job name {name:?}"));
                }
                remote_write.push(rw);
            }
        }
        let mut remote_read = Vec::new();
        for node in self.list(top.get("remote_read"), "remote_read") {
            if let Some(rr) = self.remote_read(node) {
                remote_read.push(rr);
            }
        }
        if top.get("scrape_config_files").is_some() {
            self.warnings.push("scrape_config_files is not supported; its scrape configs are not loaded".into());
        }
        Some(Config {
            global,
            scrape_configs,
            rule_files,
            alerting,
            remote_write,
            remote_read,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn global(&mut self, node: Option<&Node>) -> GlobalConfig {
        let mut g = GlobalConfig::default();
        let Some(node) = node else { return g };
        let Some(f) = self.fields(node, "global", GLOBAL_KEYS) else { return g };
        let interval = self.duration_set(f.get("scrape_interval"), "scrape_interval");
        let timeout = self.duration_set(f.get("scrape_timeout"), "scrape_timeout");
        g.scrape_interval = interval.unwrap_or(DEFAULT_SCRAPE_INTERVAL);
        g.scrape_timeout = match timeout {
            Some(t) => {
                if t > g.scrape_interval {
                    let span = f.get("scrape_timeout").map_or(f.span, |n| n.span);
                    self.error(span, "global scrape timeout greater than scrape interval");
                }
                t
            }
            // The default timeout never exceeds a short interval.
            None => DEFAULT_SCRAPE_TIMEOUT.min(g.scrape_interval),
        };
        g.evaluation_interval = self
            .duration_set(f.get("evaluation_interval"), "evaluation_interval")
            .unwrap_or(DEFAULT_EVALUATION_INTERVAL);
        let labels = self.label_map(f.get("external_labels"), "external_labels");
        g.external_labels = Labels::from_pairs(labels);
        g.query_log_file = self.string(f.get("query_log_file"), "query_log_file");
        g
    }

    fn http_client(&mut self, f: &Fields<'_>) -> HttpClientConfig {
        let mut h = HttpClientConfig::default();
        if let Some(node) = f.get("basic_auth")
            && let Some(b) =
                self.fields(node, "basic_auth", &["username", "username_file", "password", "password_file"])
        {
            let password = self.string(b.get("password"), "password");
            let password_file =
                self.string(b.get("password_file"), "password_file").map(|p| PathBuf::from(self.path(&p)));
            if password.is_some() && password_file.is_some() {
                self.error(node.span, "at most one of basic_auth password & password_file must be configured");
            }
            let username = self.string(b.get("username"), "username").unwrap_or_default();
            h.basic_auth = Some(BasicAuth { username, password, password_file });
        }
        if let Some(node) = f.get("authorization")
            && let Some(a) = self.fields(node, "authorization", &["type", "credentials", "credentials_file"])
        {
            let kind = self.string(a.get("type"), "type").unwrap_or_else(|| "Bearer".into());
            if kind.eq_ignore_ascii_case("basic") {
                self.error(node.span, "authorization type cannot be set to \"basic\", use \"basic_auth\" instead");
            }
            let credentials = self.string(a.get("credentials"), "credentials");
            let credentials_file =
                self.string(a.get("credentials_file"), "credentials_file").map(|p| PathBuf::from(self.path(&p)));
            if credentials.is_some() && credentials_file.is_some() {
                self.error(node.span, "at most one of authorization credentials & credentials_file must be configured");
            }
            h.authorization = Some(Authorization { kind, credentials, credentials_file });
        }
        let bearer = self.string(f.get("bearer_token"), "bearer_token");
        let bearer_file = self.string(f.get("bearer_token_file"), "bearer_token_file");
        let auth_count = [h.basic_auth.is_some(), f.get("oauth2").is_some(), bearer.is_some(), bearer_file.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if auth_count > 1 {
            self.error(
                f.span,
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured",
            );
        }
        if h.authorization.is_some() && (bearer.is_some() || bearer_file.is_some()) {
            self.error(f.span, "authorization is not compatible with bearer_token & bearer_token_file");
        }
        if h.authorization.is_some() && (h.basic_auth.is_some() || f.get("oauth2").is_some()) {
            self.error(f.span, "at most one of basic_auth, oauth2 & authorization must be configured");
        }
        if bearer.is_some() || bearer_file.is_some() {
            h.authorization = Some(Authorization {
                kind: "Bearer".into(),
                credentials: bearer,
                credentials_file: bearer_file.map(|p| PathBuf::from(self.path(&p))),
            });
        }
        if f.get("oauth2").is_some() {
            self.warnings.push("oauth2 is not supported; requests go without it".into());
        }
        if let Some(node) = f.get("tls_config")
            && let Some(t) = self.fields(
                node,
                "tls_config",
                &[
                    "ca",
                    "ca_file",
                    "cert",
                    "cert_file",
                    "key",
                    "key_file",
                    "server_name",
                    "insecure_skip_verify",
                    "min_version",
                    "max_version",
                ],
            )
        {
            let file = |d: &mut Self, key: &str| d.string(t.get(key), key).map(|p| PathBuf::from(d.path(&p)));
            let tls = TlsConfig {
                ca_file: file(self, "ca_file"),
                cert_file: file(self, "cert_file"),
                key_file: file(self, "key_file"),
                server_name: self.string(t.get("server_name"), "server_name"),
                insecure_skip_verify: self.boolean(t.get("insecure_skip_verify"), "insecure_skip_verify", false),
                min_version: self.string(t.get("min_version"), "min_version"),
            };
            match (&tls.cert_file, &tls.key_file) {
                (Some(c), None) => self.error(
                    node.span,
                    format!("client cert file {:?} specified without client key file", c.display().to_string()),
                ),
                (None, Some(k)) => self.error(
                    node.span,
                    format!("client key file {:?} specified without client cert file", k.display().to_string()),
                ),
                _ => {}
            }
            h.tls_config = tls;
        }
        h.proxy_url = self.string(f.get("proxy_url"), "proxy_url");
        h.follow_redirects = self.boolean(f.get("follow_redirects"), "follow_redirects", true);
        h.enable_http2 = self.boolean(f.get("enable_http2"), "enable_http2", true);
        h
    }

    fn scrape_config(&mut self, node: &Node, global: &GlobalConfig) -> Option<ScrapeConfig> {
        let known = concat(&[SCRAPE_KEYS, HTTP_KEYS, OTHER_SD_KEYS]);
        let f = self.fields(node, "a scrape config", &known)?;
        let job_name = self.string(f.get("job_name"), "job_name").unwrap_or_default();
        if job_name.is_empty() {
            self.error(node.span, "job_name is empty");
        }
        let interval = self.duration_set(f.get("scrape_interval"), "scrape_interval");
        let timeout = self.duration_set(f.get("scrape_timeout"), "scrape_timeout");
        let scrape_interval = interval.unwrap_or(global.scrape_interval);
        let scrape_timeout = match timeout {
            Some(t) => t,
            None if global.scrape_timeout > scrape_interval => scrape_interval,
            None => global.scrape_timeout,
        };
        if scrape_timeout > scrape_interval {
            let span = f.get("scrape_timeout").map_or(node.span, |n| n.span);
            self.error(
                span,
                format!("scrape timeout greater than scrape interval for scrape config with job name {job_name:?}"),
            );
        }
        let mut params = BTreeMap::new();
        if let Some(p) = f.get("params") {
            match &p.value {
                Value::Mapping(entries) => {
                    for (k, v) in entries {
                        let values = self.string_list(Some(v), "params");
                        params.insert(k.name.clone(), values);
                    }
                }
                _ => self.error(p.span, format!("`params` must be a mapping, not {}", p.kind())),
            }
        }
        for key in OTHER_SD_KEYS {
            if f.get(key).is_some() {
                self.warnings.push(format!("job {job_name:?}: {key} is not supported; its targets are not discovered"));
            }
        }
        let relabel_configs = self.relabel_configs(f.get("relabel_configs"), "relabel_configs");
        // Prometheus checks the address a target ends up with, so a path is fine when
        // relabelling may rewrite `__address__` (the blackbox exporter's pattern).
        let rewrites_address =
            relabel_configs.iter().any(|r| r.target_label == "__address__" || r.action == Action::LabelMap);
        let mut static_configs = Vec::new();
        for item in self.list(f.get("static_configs"), "static_configs") {
            if let Some(g) = self.target_group(item, !rewrites_address) {
                static_configs.push(g);
            }
        }
        let mut file_sd_configs = Vec::new();
        for item in self.list(f.get("file_sd_configs"), "file_sd_configs") {
            if let Some(c) = self.file_sd(item) {
                file_sd_configs.push(c);
            }
        }
        let mut http_sd_configs = Vec::new();
        for item in self.list(f.get("http_sd_configs"), "http_sd_configs") {
            let known = concat(&[&["url", "refresh_interval"], HTTP_KEYS]);
            let Some(h) = self.fields(item, "an http_sd_config", &known) else { continue };
            let url = self.string(h.get("url"), "url").unwrap_or_default();
            if url.is_empty() {
                self.error(item.span, "URL is missing");
            } else if !(url.starts_with("http://") || url.starts_with("https://")) || url::Url::parse(&url).is_err() {
                let span = h.get("url").map_or(item.span, |n| n.span);
                self.error(span, "URL scheme must be 'http' or 'https'");
            }
            let refresh_interval =
                self.duration_set(h.get("refresh_interval"), "refresh_interval").unwrap_or(Duration::from_secs(60));
            let http = self.http_client(&h);
            http_sd_configs.push(HttpSdConfig { url, refresh_interval, http });
        }
        let mut dns_sd_configs = Vec::new();
        for item in self.list(f.get("dns_sd_configs"), "dns_sd_configs") {
            let Some(d) = self.fields(item, "a dns_sd_config", &["names", "type", "port", "refresh_interval"]) else {
                continue;
            };
            let names = self.string_list(d.get("names"), "names");
            if names.is_empty() {
                self.error(item.span, "DNS-SD config must contain at least one SRV record name");
            }
            let record_type = self.string(d.get("type"), "type").unwrap_or_else(|| "SRV".into()).to_ascii_uppercase();
            if !["SRV", "A", "AAAA", "MX", "NS"].contains(&record_type.as_str()) {
                self.error(item.span, format!("invalid DNS-SD records type {record_type}"));
            }
            let port = self.uint(d.get("port"), "port");
            if record_type != "SRV" && port == 0 {
                self.error(item.span, "a port is required in DNS-SD configs for all record types except SRV");
            }
            let refresh_interval =
                self.duration_set(d.get("refresh_interval"), "refresh_interval").unwrap_or(Duration::from_secs(30));
            dns_sd_configs.push(DnsSdConfig {
                names,
                record_type,
                port: u16::try_from(port).unwrap_or(0),
                refresh_interval,
            });
        }
        let metric_relabel_configs = self.relabel_configs(f.get("metric_relabel_configs"), "metric_relabel_configs");
        let http = self.http_client(&f);
        Some(ScrapeConfig {
            job_name,
            scrape_interval,
            scrape_timeout,
            metrics_path: self.string(f.get("metrics_path"), "metrics_path").unwrap_or_else(|| "/metrics".into()),
            params,
            scheme: self.string(f.get("scheme"), "scheme").unwrap_or_else(|| "http".into()),
            honor_labels: self.boolean(f.get("honor_labels"), "honor_labels", false),
            honor_timestamps: self.boolean(f.get("honor_timestamps"), "honor_timestamps", true),
            body_size_limit: self.bytes(f.get("body_size_limit"), "body_size_limit"),
            sample_limit: self.uint(f.get("sample_limit"), "sample_limit"),
            target_limit: self.uint(f.get("target_limit"), "target_limit"),
            label_limit: self.uint(f.get("label_limit"), "label_limit"),
            label_name_length_limit: self.uint(f.get("label_name_length_limit"), "label_name_length_limit"),
            label_value_length_limit: self.uint(f.get("label_value_length_limit"), "label_value_length_limit"),
            http,
            static_configs,
            file_sd_configs,
            http_sd_configs,
            dns_sd_configs,
            relabel_configs,
            metric_relabel_configs,
        })
    }

    fn target_group(&mut self, node: &Node, check_addresses: bool) -> Option<TargetGroup> {
        let f = self.fields(node, "a static config", &["targets", "labels"])?;
        let targets = self.string_list(f.get("targets"), "targets");
        for t in &targets {
            // Prometheus refuses a path in an address: it belongs in metrics_path.
            if check_addresses && t.contains('/') {
                let span = f.get("targets").map_or(node.span, |n| n.span);
                let d = Diagnostic::error(format!("{t:?} is not a valid hostname"), Some(span))
                    .with_hint("a target is host:port; put the path in `metrics_path`");
                self.diags.push(d);
            }
        }
        let labels = self.label_map(f.get("labels"), "labels");
        Some(TargetGroup { targets, labels, source: String::new() })
    }

    fn file_sd(&mut self, node: &Node) -> Option<FileSdConfig> {
        let f = self.fields(node, "a file_sd_config", &["files", "refresh_interval"])?;
        let files = self.string_list(f.get("files"), "files");
        if files.is_empty() {
            self.error(node.span, "file service discovery config must contain at least one path name");
        }
        let mut out = Vec::new();
        for name in files {
            if !valid_file_sd_name(&name) {
                let span = f.get("files").map_or(node.span, |n| n.span);
                let d = Diagnostic::error(format!("path name {name:?} is not valid for file discovery"), Some(span))
                    .with_hint(
                        "file discovery reads .json, .yml or .yaml files; a `*` may only be in the last path element",
                    );
                self.diags.push(d);
            }
            out.push(self.path(&name));
        }
        let refresh_interval =
            self.duration_set(f.get("refresh_interval"), "refresh_interval").unwrap_or(Duration::from_secs(300));
        Some(FileSdConfig { files: out, refresh_interval })
    }

    fn relabel_configs(&mut self, node: Option<&Node>, what: &str) -> Vec<RelabelConfig> {
        let mut out = Vec::new();
        for item in self.list(node, what) {
            if item.value == Value::Null {
                continue;
            }
            let Some(f) = self.fields(item, "a relabel config", RELABEL_KEYS) else { continue };
            let mut c = RelabelConfig {
                source_labels: self.string_list(f.get("source_labels"), "source_labels"),
                ..RelabelConfig::default()
            };
            if let Some(s) = f.entries.iter().rev().find(|(k, _)| k.name == "separator") {
                c.separator = self.string(Some(&s.1), "separator").unwrap_or_default();
            }
            if let Some(r) = f.get("regex") {
                let text = self.string(Some(r), "regex").unwrap_or_default();
                match Regexp::new(&text) {
                    Ok(re) => c.regex = re,
                    Err(e) => self.error(r.span, e.to_string()),
                }
            }
            c.modulus = self.uint(f.get("modulus"), "modulus");
            c.target_label = self.string(f.get("target_label"), "target_label").unwrap_or_default();
            if let Some(r) = f.entries.iter().rev().find(|(k, _)| k.name == "replacement") {
                c.replacement = self.string(Some(&r.1), "replacement").unwrap_or_default();
            }
            if let Some(a) = f.get("action") {
                let text = self.string(Some(a), "action").unwrap_or_default();
                match relabel::Action::parse(&text) {
                    Some(action) => c.action = action,
                    None => {
                        let lower = text.to_ascii_lowercase();
                        let mut d = Diagnostic::error(format!("unknown relabel action {text:?}"), Some(a.span));
                        d = match nearest(&lower, &Action::ALL) {
                            Some(meant) => d.with_hint(format!("did you mean `{meant}`?")),
                            None => d.with_hint(format!("actions: {}", Action::ALL.join(", "))),
                        };
                        self.diags.push(d);
                        continue;
                    }
                }
            }
            if let Err(e) = c.validate() {
                self.error(item.span, e.to_string());
            }
            out.push(c);
        }
        out
    }

    fn alerting(&mut self, node: Option<&Node>) -> AlertingConfig {
        let mut a = AlertingConfig::default();
        let Some(node) = node else { return a };
        let Some(f) = self.fields(node, "alerting", &["alert_relabel_configs", "alertmanagers"]) else { return a };
        a.alert_relabel_configs = self.relabel_configs(f.get("alert_relabel_configs"), "alert_relabel_configs");
        let known = concat(&[ALERTMANAGER_KEYS, HTTP_KEYS, OTHER_SD_KEYS]);
        for item in self.list(f.get("alertmanagers"), "alertmanagers") {
            let Some(m) = self.fields(item, "an alertmanager config", &known) else { continue };
            let api_version = self.string(m.get("api_version"), "api_version").unwrap_or_else(|| "v2".into());
            if api_version != "v1" && api_version != "v2" {
                let span = m.get("api_version").map_or(item.span, |n| n.span);
                self.error(
                    span,
                    format!("expected Alertmanager api version to be one of [v1 v2] but got {api_version}"),
                );
            }
            let mut static_configs = Vec::new();
            for g in self.list(m.get("static_configs"), "static_configs") {
                if let Some(g) = self.target_group(g, false) {
                    static_configs.push(g);
                }
            }
            let mut file_sd_configs = Vec::new();
            for g in self.list(m.get("file_sd_configs"), "file_sd_configs") {
                if let Some(g) = self.file_sd(g) {
                    file_sd_configs.push(g);
                }
            }
            let http = self.http_client(&m);
            a.alertmanagers.push(AlertmanagerConfig {
                static_configs,
                file_sd_configs,
                path_prefix: self.string(m.get("path_prefix"), "path_prefix").unwrap_or_else(|| "/".into()),
                scheme: self.string(m.get("scheme"), "scheme").unwrap_or_else(|| "http".into()),
                timeout: self.duration_set(m.get("timeout"), "timeout").unwrap_or(Duration::from_secs(10)),
                api_version,
                http,
                relabel_configs: self.relabel_configs(m.get("relabel_configs"), "relabel_configs"),
            });
        }
        a
    }

    fn headers(&mut self, node: Option<&Node>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, value) in self.string_map(node, "headers") {
            if RESERVED_HEADERS.contains(&key.name.to_ascii_lowercase().as_str()) {
                self.error(key.span, format!("{} is a reserved header. It must not be changed", key.name));
            }
            out.insert(key.name, value);
        }
        out
    }

    fn url(&mut self, f: &Fields<'_>, node: &Node, what: &str) -> String {
        match f.get("url") {
            None => {
                self.error(node.span, format!("url for {what} is empty"));
                String::new()
            }
            Some(u) => {
                let text = self.string(Some(u), "url").unwrap_or_default();
                if !text.is_empty() && url::Url::parse(&text).is_err() {
                    self.error(u.span, format!("invalid url {text:?}"));
                }
                text
            }
        }
    }

    fn remote_write(&mut self, node: &Node) -> Option<RemoteWriteConfig> {
        let known = concat(&[REMOTE_WRITE_KEYS, HTTP_KEYS]);
        let f = self.fields(node, "a remote_write config", &known)?;
        let url = self.url(&f, node, "remote_write");
        let mut queue_config = QueueConfig::default();
        if let Some(q) = f.get("queue_config") {
            let keys = [
                "capacity",
                "max_shards",
                "min_shards",
                "max_samples_per_send",
                "batch_send_deadline",
                "min_backoff",
                "max_backoff",
                "retry_on_http_429",
                "sample_age_limit",
            ];
            if let Some(q) = self.fields(q, "queue_config", &keys) {
                let d = QueueConfig::default();
                let num = |s: &mut Self, k: &str, default: u64| {
                    if q.get(k).is_some() { s.uint(q.get(k), k) } else { default }
                };
                queue_config = QueueConfig {
                    capacity: num(self, "capacity", d.capacity),
                    max_shards: num(self, "max_shards", d.max_shards),
                    min_shards: num(self, "min_shards", d.min_shards),
                    max_samples_per_send: num(self, "max_samples_per_send", d.max_samples_per_send),
                    batch_send_deadline: self
                        .duration(q.get("batch_send_deadline"), "batch_send_deadline")
                        .unwrap_or(d.batch_send_deadline),
                    min_backoff: self.duration(q.get("min_backoff"), "min_backoff").unwrap_or(d.min_backoff),
                    max_backoff: self.duration(q.get("max_backoff"), "max_backoff").unwrap_or(d.max_backoff),
                    retry_on_http_429: self.boolean(q.get("retry_on_http_429"), "retry_on_http_429", false),
                };
                let _ = self.duration(q.get("sample_age_limit"), "sample_age_limit");
            }
        }
        if let Some(m) = f.get("metadata_config") {
            let _ = self.fields(m, "metadata_config", &["send", "send_interval", "max_samples_per_send"]);
        }
        let http = self.http_client(&f);
        Some(RemoteWriteConfig {
            url,
            name: self.string(f.get("name"), "name"),
            remote_timeout: self
                .duration_set(f.get("remote_timeout"), "remote_timeout")
                .unwrap_or(Duration::from_secs(30)),
            headers: self.headers(f.get("headers")),
            write_relabel_configs: self.relabel_configs(f.get("write_relabel_configs"), "write_relabel_configs"),
            queue_config,
            http,
        })
    }

    fn remote_read(&mut self, node: &Node) -> Option<RemoteReadConfig> {
        let known = concat(&[REMOTE_READ_KEYS, HTTP_KEYS]);
        let f = self.fields(node, "a remote_read config", &known)?;
        let url = self.url(&f, node, "remote_read");
        let http = self.http_client(&f);
        Some(RemoteReadConfig {
            url,
            name: self.string(f.get("name"), "name"),
            remote_timeout: self
                .duration_set(f.get("remote_timeout"), "remote_timeout")
                .unwrap_or(Duration::from_secs(60)),
            headers: self.headers(f.get("headers")),
            read_recent: self.boolean(f.get("read_recent"), "read_recent", false),
            required_matchers: self.label_map(f.get("required_matchers"), "required_matchers"),
            http,
        })
    }
}

/// Prometheus's rule for file discovery paths: a `*` only in the last element, and a
/// `.json`, `.yml` or `.yaml` ending.
fn valid_file_sd_name(name: &str) -> bool {
    let lower_ok = [".json", ".yml", ".yaml", ".JSON", ".YML", ".YAML"].iter().any(|e| name.ends_with(e));
    let star_ok = match name.find('*') {
        None => true,
        Some(i) => !name[i + 1..].contains('/') && !name[i + 1..].contains('*'),
    };
    lower_ok && star_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Config {
        load(text, "prometheus.yml", Path::new("/etc/prometheus")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        match load(text, "prometheus.yml", Path::new("/etc/prometheus")) {
            Ok(c) => panic!("should fail: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1d2h3m4s5ms"), Some(Duration::from_millis(93_784_005)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "30", "1.5s", "1s1m", "1m1m", "-1s", "1x", "s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults_as_prometheus() {
        let c = ok("scrape_configs:\n- job_name: a\n  static_configs:\n  - targets: ['localhost:9090']\n");
        let sc = &c.scrape_configs[0];
        assert_eq!(sc.scrape_interval, Duration::from_secs(60));
        assert_eq!(sc.scrape_timeout, Duration::from_secs(10));
        assert_eq!(sc.metrics_path, "/metrics");
        assert_eq!(sc.scheme, "http");
        assert!(sc.honor_timestamps && !sc.honor_labels);
        assert_eq!(sc.static_configs[0].targets, vec!["localhost:9090".to_owned()]);
        // A short global interval pulls the default timeout down with it.
        let c = ok(
            "global:\n  scrape_interval: 5s\nscrape_configs:\n- job_name: a\n- job_name: b\n  scrape_interval: 2s\n",
        );
        assert_eq!(c.global.scrape_timeout, Duration::from_secs(5));
        assert_eq!(c.scrape_configs[0].scrape_timeout, Duration::from_secs(5));
        assert_eq!(c.scrape_configs[1].scrape_timeout, Duration::from_secs(2));
        assert_eq!(ok("").scrape_configs.len(), 0);
    }

    #[test]
    fn full_file() {
        let c = ok(r#"
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  external_labels: {cluster: eu1, replica: "0"}
rule_files: ["rules/*.yml"]
alerting:
  alertmanagers:
  - static_configs: [{targets: ["am:9093"]}]
    path_prefix: /am
    authorization: {credentials: secret}
scrape_configs:
- job_name: node
  scrape_interval: 30s
  scrape_timeout: 20s
  metrics_path: /probe
  params: {module: [http_2xx]}
  scheme: https
  basic_auth: {username: u, password: p}
  tls_config: {insecure_skip_verify: true}
  sample_limit: 1000
  static_configs:
  - targets: [a:9100, b:9100]
    labels: {env: prod}
  file_sd_configs:
  - files: [targets/*.json]
    refresh_interval: 1m
  relabel_configs:
  - source_labels: [__address__]
    target_label: __param_target
  - action: labeldrop
    regex: tmp_.*
  metric_relabel_configs:
  - source_labels: [__name__]
    regex: go_.*
    action: drop
- job_name: api
  bearer_token: tok
remote_write:
- url: https://remote/api/v1/write
  headers: {X-Scope-OrgID: team}
  write_relabel_configs: [{source_labels: [__name__], regex: "up", action: keep}]
  queue_config: {capacity: 10000, max_backoff: 10s}
remote_read:
- url: https://remote/api/v1/read
  read_recent: true
"#);
        assert_eq!(c.global.external_labels.get("cluster"), Some("eu1"));
        assert_eq!(c.global.evaluation_interval, Duration::from_secs(30));
        let node = &c.scrape_configs[0];
        assert_eq!(node.scrape_timeout, Duration::from_secs(20));
        assert_eq!(node.params["module"], vec!["http_2xx".to_owned()]);
        assert_eq!(node.http.basic_auth.as_ref().map(|b| b.username.as_str()), Some("u"));
        assert!(node.http.tls_config.insecure_skip_verify);
        assert_eq!(node.file_sd_configs[0].files, vec!["/etc/prometheus/targets/*.json".to_owned()]);
        assert_eq!(node.relabel_configs.len(), 2);
        assert_eq!(node.metric_relabel_configs[0].action, Action::Drop);
        let api = &c.scrape_configs[1];
        assert_eq!(api.scrape_interval, Duration::from_secs(15));
        assert_eq!(api.http.authorization.as_ref().and_then(|a| a.credentials.as_deref()), Some("tok"));
        assert_eq!(c.alerting.alertmanagers[0].api_version, "v2");
        assert_eq!(c.remote_write[0].queue_config.capacity, 10000);
        assert_eq!(c.remote_write[0].queue_config.max_shards, 200);
        assert!(c.remote_read[0].read_recent);
    }

    #[test]
    fn errors_point_at_the_place_with_a_hint() {
        let e = err("global:\n  scrape_intervall: 15s\n");
        assert!(e.contains("prometheus.yml:2:3: unknown key `scrape_intervall` in global"), "{e}");
        assert!(e.contains("did you mean `scrape_interval`?"), "{e}");
        let e = err("scrape_configs:\n- job_name: a\n  static_config:\n  - targets: [x]\n");
        assert!(e.contains("prometheus.yml:3:3") && e.contains("`static_configs`"), "{e}");
        let e = err("scrape_configs:\n- job_name: a\n  relabel_configs:\n  - action: lablemap\n");
        assert!(e.contains("did you mean `labelmap`?"), "{e}");
        let e = err("scrape_configs:\n- job_name: a\n  scrape_interval: 5s\n  scrape_timeout: 6s\n");
        assert!(e.contains("4:19: scrape timeout greater than scrape interval"), "{e}");
        let e = err("scrape_configs:\n- job_name: a\n- job_name: a\n");
        assert!(e.contains("3:13: found multiple scrape configs with job name \"a\""), "{e}");
        let e = err("global:\n  scrape_interval: 30\n");
        assert!(e.contains("not a valid duration string"), "{e}");
        let e = err("global:\n  scrape_interval: 1s\n  scrape_interval: 2s\n");
        assert!(e.contains("already set"), "{e}");
    }
}
