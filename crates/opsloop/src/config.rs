//! Layered configuration: defaults < `opsloop.toml` < `OPSLOOP_*` environment < flags,
//! resolved once into the server's validated [`ServerConfig`].
//!
//! clap already applies "environment < flag" for each option; this module lays the file
//! underneath and validates the result, pointing at file:line:column when the file is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, NamedSource, SourceSpan};
use opsloop_server::{DatabaseConfig, LogFormat, ServerConfig};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::cli::{LogFormatArg, ServeArgs};

pub const DEFAULT_CONFIG_FILE: &str = "opsloop.toml";
pub const DEFAULT_DATA_DIR: &str = "./opsloop-data";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Spanned<String>>,
    data_dir: Option<PathBuf>,
    database_url: Option<Spanned<String>>,
    external_url: Option<Spanned<String>>,
    log_format: Option<Spanned<String>>,
    log_level: Option<String>,
    demo: Option<bool>,
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    ci: CiSection,
    #[serde(default)]
    artifacts: ArtifactsSection,
    #[serde(default)]
    notifications: NotificationsSection,
    #[serde(default)]
    deploy: DeploySection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    alerting: AlertingSection,
    #[serde(default)]
    checks: ChecksSection,
    #[serde(default)]
    logs: LogsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChecksSection {
    /// Checks and heartbeats in Gatus's format (`endpoints:`, `checks:`, `heartbeats:`).
    config_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsSection {
    enabled: Option<bool>,
    /// How long log lines are kept, e.g. `"31d"`; `"0s"` keeps them forever.
    retention: Option<Spanned<String>>,
    /// The most stored logs may take on disk, e.g. `"10GB"`.
    retention_size: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertingSection {
    /// The instance's `alertmanager.yml`: routes, receivers, inhibitions, time intervals.
    config_file: Option<PathBuf>,
    /// On-call as code: users, schedules, overrides, escalation policies.
    oncall_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    enabled: Option<bool>,
    /// A `prometheus.yml`: scrape targets, rule files, alertmanagers, remote write.
    config_file: Option<PathBuf>,
    /// How long samples are kept, e.g. `"15d"`.
    retention: Option<Spanned<String>>,
    /// The most stored samples may take on disk, e.g. `"10GB"`.
    retention_size: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploySection {
    proxy_listen: Option<Spanned<String>>,
    health_timeout_seconds: Option<u64>,
    ssh_identity: Option<PathBuf>,
    ssh_known_hosts: Option<PathBuf>,
    /// `"20000-29999"`: the ports instances listen on.
    port_range: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NotificationsSection {
    allow_private_targets: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ArtifactsSection {
    /// `local` (the data directory) or `s3`.
    storage: Option<StorageSetting>,
    s3_bucket: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_access_key_id: Option<String>,
    default_expire_in_days: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StorageSetting {
    Local,
    S3,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CiSection {
    concurrent_jobs: Option<usize>,
    executor: Option<ExecutorSetting>,
    agent_timeout_seconds: Option<u64>,
    max_job_log_mib: Option<usize>,
}

/// Where jobs without tags run.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum ExecutorSetting {
    Local,
    Agents,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    max_body_bytes: Option<usize>,
    request_timeout_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    session_ttl_hours: Option<u64>,
    login_attempts_per_window: Option<u32>,
    login_window_seconds: Option<u64>,
}

/// A configuration mistake, with the place in the file when there is one.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    #[diagnostic(code(opsloop::config::read), help("pass an existing file with --config or OPSLOOP_CONFIG"))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    InFile(Box<FileError>),
    #[error("{message}")]
    #[diagnostic(code(opsloop::config::invalid))]
    Value {
        message: String,
        #[help]
        help: Option<String>,
    },
}

/// A mistake at a place in the configuration file. Boxed in [`ConfigError`]: it carries the
/// file's text so the report can show the line.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(opsloop::config::invalid))]
pub struct FileError {
    pub message: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[label("here")]
    pub span: Option<SourceSpan>,
    #[help]
    help: Option<String>,
}

impl FileError {
    fn error(path: &Path, text: &str, span: Option<SourceSpan>, message: String, help: &str) -> ConfigError {
        ConfigError::InFile(Box::new(FileError {
            message,
            source_code: NamedSource::new(path.display().to_string(), text.to_owned()),
            span,
            help: Some(help.to_owned()),
        }))
    }
}

/// Everything the commands need, resolved and validated.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub server: ServerConfig,
    pub log_format: LogFormat,
    pub log_level: String,
    pub config_file: Option<PathBuf>,
}

struct LoadedFile {
    path: PathBuf,
    text: String,
    config: FileConfig,
}

impl LoadedFile {
    fn error_at(&self, span: std::ops::Range<usize>, message: String, help: &str) -> ConfigError {
        FileError::error(&self.path, &self.text, Some(span.into()), message, help)
    }
}

fn load_file(explicit: Option<&Path>) -> Result<Option<LoadedFile>, ConfigError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => PathBuf::from(DEFAULT_CONFIG_FILE),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    let config = toml::from_str::<FileConfig>(&text).map_err(|error| {
        let message = format!("invalid configuration: {}", error.message());
        let help = "see examples/opsloop.toml for every setting, its type and default";
        FileError::error(&path, &text, error.span().map(Into::into), message, help)
    })?;
    Ok(Some(LoadedFile { path, text, config }))
}

/// Layers file, environment and flags (the last two already merged by clap) over defaults.
pub fn resolve(
    args: &ServeArgs,
    log_format: Option<LogFormatArg>,
    log_level: Option<&str>,
) -> Result<Resolved, ConfigError> {
    let file = load_file(args.config.config.as_deref())?;
    let from_file = file.as_ref().map(|loaded| &loaded.config);
    let empty = FileConfig::default();
    let layer = from_file.unwrap_or(&empty);

    let data_dir = args
        .config
        .data_dir
        .clone()
        .or_else(|| layer.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let mut server = ServerConfig::with_data_dir(data_dir.clone());

    server.listen = match (&args.listen, &layer.listen, &file) {
        (Some(flag), _, _) => parse_listen(flag).map_err(|message| ConfigError::Value {
            message,
            help: Some("--listen / OPSLOOP_LISTEN takes ADDRESS:PORT, e.g. 127.0.0.1:8080".to_owned()),
        })?,
        (None, Some(value), Some(loaded)) => parse_listen(value.get_ref())
            .map_err(|message| loaded.error_at(value.span(), message, "write ADDRESS:PORT, e.g. \"127.0.0.1:8080\""))?,
        _ => server.listen,
    };

    server.deploy.proxy_listen = match (&args.proxy_listen, &layer.deploy.proxy_listen, &file) {
        (Some(flag), _, _) => parse_proxy_listen(flag).map_err(|message| ConfigError::Value {
            message,
            help: Some("--proxy-listen / OPSLOOP_PROXY_LISTEN takes ADDRESS:PORT or `off`".to_owned()),
        })?,
        (None, Some(value), Some(loaded)) => parse_proxy_listen(value.get_ref()).map_err(|message| {
            loaded.error_at(value.span(), message, "write ADDRESS:PORT, e.g. \"127.0.0.1:8000\", or \"off\"")
        })?,
        _ => server.deploy.proxy_listen,
    };
    server.deploy.health_timeout_seconds =
        layer.deploy.health_timeout_seconds.unwrap_or(server.deploy.health_timeout_seconds);
    server.deploy.ssh_identity = layer.deploy.ssh_identity.clone().map(opsloop_server::config::absolute);
    if let (Some(range), Some(loaded)) = (&layer.deploy.port_range, &file) {
        let parsed = range
            .get_ref()
            .split_once('-')
            .and_then(|(low, high)| Some((low.trim().parse::<u16>().ok()?, high.trim().parse::<u16>().ok()?)))
            .filter(|(low, high)| *low >= 1024 && low <= high);
        server.deploy.ports = Some(parsed.ok_or_else(|| {
            loaded.error_at(
                range.span(),
                "deploy.port_range is not a range of ports".to_owned(),
                "write \"LOW-HIGH\", e.g. \"20000-29999\" (ports from 1024)",
            )
        })?);
    }
    server.deploy.ssh_known_hosts = layer.deploy.ssh_known_hosts.clone().map(opsloop_server::config::absolute);

    server.metrics.enabled = layer.metrics.enabled.unwrap_or(server.metrics.enabled);
    server.metrics.config_file =
        args.metrics_config.clone().or_else(|| layer.metrics.config_file.clone()).map(opsloop_server::config::absolute);
    server.alerting.config_file = args
        .alerting_config
        .clone()
        .or_else(|| layer.alerting.config_file.clone())
        .map(opsloop_server::config::absolute);
    server.checks.config_file =
        args.checks_config.clone().or_else(|| layer.checks.config_file.clone()).map(opsloop_server::config::absolute);
    server.alerting.oncall_file =
        args.oncall_config.clone().or_else(|| layer.alerting.oncall_file.clone()).map(opsloop_server::config::absolute);
    if let (Some(value), Some(loaded)) = (&layer.metrics.retention, &file) {
        server.metrics.retention_seconds = parse_retention(value.get_ref()).ok_or_else(|| {
            loaded.error_at(
                value.span(),
                "metrics.retention is not a duration".to_owned(),
                "write e.g. \"15d\", \"12h\" or \"2w\"",
            )
        })?;
    }
    if let (Some(value), Some(loaded)) = (&layer.metrics.retention_size, &file) {
        server.metrics.retention_bytes = Some(parse_size(value.get_ref()).ok_or_else(|| {
            loaded.error_at(
                value.span(),
                "metrics.retention_size is not a size".to_owned(),
                "write e.g. \"512MB\" or \"10GB\"",
            )
        })?);
    }

    server.logs.enabled = layer.logs.enabled.unwrap_or(server.logs.enabled);
    if let (Some(value), Some(loaded)) = (&layer.logs.retention, &file) {
        let text = value.get_ref().trim();
        // `0s` (or `0`) is Loki's way to keep logs forever.
        let forever = matches!(text, "0" | "0s");
        server.logs.retention_seconds = if forever {
            0
        } else {
            parse_retention(text).ok_or_else(|| {
                loaded.error_at(
                    value.span(),
                    "logs.retention is not a duration".to_owned(),
                    "write e.g. \"31d\", \"744h\" or \"0s\" to keep logs forever",
                )
            })?
        };
    }
    if let (Some(value), Some(loaded)) = (&layer.logs.retention_size, &file) {
        server.logs.retention_bytes = Some(parse_size(value.get_ref()).ok_or_else(|| {
            loaded.error_at(
                value.span(),
                "logs.retention_size is not a size".to_owned(),
                "write e.g. \"512MB\" or \"10GB\"",
            )
        })?);
    }

    let database_url = match (&args.config.database_url, &layer.database_url) {
        (Some(url), _) => Some((url.clone(), None)),
        (None, Some(value)) => Some((value.get_ref().clone(), Some(value.span()))),
        (None, None) => None,
    };
    if let Some((url, span)) = database_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            let message = format!("database_url must be a postgres:// URL, not `{}`", opsloop_store::redact_url(&url));
            let help = "leave it unset to use SQLite in the data directory";
            return Err(match (span, &file) {
                (Some(span), Some(loaded)) => loaded.error_at(span, message, help),
                _ => ConfigError::Value { message, help: Some(help.to_owned()) },
            });
        }
        server.database = DatabaseConfig::Postgres { url };
    }

    let external_url = match (&args.external_url, &layer.external_url) {
        (Some(url), _) => Some((url.clone(), None)),
        (None, Some(value)) => Some((value.get_ref().clone(), Some(value.span()))),
        (None, None) => None,
    };
    if let Some((url, span)) = external_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            let message = format!("external_url must start with http:// or https://, not `{url}`");
            let help = "the URL people type to reach opsloop, e.g. https://ops.example.com";
            return Err(match (span, &file) {
                (Some(span), Some(loaded)) => loaded.error_at(span, message, help),
                _ => ConfigError::Value { message, help: Some(help.to_owned()) },
            });
        }
        server.external_url = Some(url.trim_end_matches('/').to_owned());
    }

    server.demo = args.demo || layer.demo.unwrap_or(false);
    let http = &layer.http;
    server.http.max_body_bytes = http.max_body_bytes.unwrap_or(server.http.max_body_bytes);
    server.http.request_timeout_seconds = http.request_timeout_seconds.unwrap_or(server.http.request_timeout_seconds);
    server.http.shutdown_grace_seconds = http.shutdown_grace_seconds.unwrap_or(server.http.shutdown_grace_seconds);
    let auth = &layer.auth;
    server.auth.session_ttl_hours = auth.session_ttl_hours.unwrap_or(server.auth.session_ttl_hours);
    server.auth.login_attempts_per_window =
        auth.login_attempts_per_window.unwrap_or(server.auth.login_attempts_per_window);
    server.auth.login_window_seconds = auth.login_window_seconds.unwrap_or(server.auth.login_window_seconds);
    server.ci.concurrent_jobs = layer.ci.concurrent_jobs.unwrap_or(server.ci.concurrent_jobs);
    server.ci.untagged_jobs_on_agents = match layer.ci.executor {
        Some(ExecutorSetting::Agents) => true,
        Some(ExecutorSetting::Local) => false,
        None => server.ci.untagged_jobs_on_agents,
    };
    server.ci.agent_timeout_seconds = layer.ci.agent_timeout_seconds.unwrap_or(server.ci.agent_timeout_seconds);
    if let Some(mib) = layer.ci.max_job_log_mib {
        server.ci.max_job_log_bytes = mib.saturating_mul(1024 * 1024);
    }
    server.notifications.allow_private_targets =
        layer.notifications.allow_private_targets.unwrap_or(server.notifications.allow_private_targets);
    let artifacts = &layer.artifacts;
    if let Some(days) = artifacts.default_expire_in_days {
        server.artifacts.default_expire_seconds = days.saturating_mul(86_400);
    }
    if artifacts.storage == Some(StorageSetting::S3) {
        let missing = |what: &str| {
            ConfigError::Value {
            message: format!("artifacts.storage = \"s3\" needs {what}"),
            help: Some(
                "set artifacts.s3_bucket and artifacts.s3_access_key_id in the file, and the secret in OPSLOOP_S3_SECRET_ACCESS_KEY"
                    .to_owned(),
            ),
        }
        };
        let secret = std::env::var("OPSLOOP_S3_SECRET_ACCESS_KEY")
            .or_else(|_| std::env::var("AWS_SECRET_ACCESS_KEY"))
            .map_err(|_| missing("a secret key in OPSLOOP_S3_SECRET_ACCESS_KEY"))?;
        server.artifacts.storage = opsloop_server::config::ArtifactStorage::S3(opsloop_server::config::S3Storage {
            bucket: artifacts.s3_bucket.clone().ok_or_else(|| missing("artifacts.s3_bucket"))?,
            endpoint: artifacts.s3_endpoint.clone(),
            region: artifacts.s3_region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
            access_key_id: artifacts.s3_access_key_id.clone().ok_or_else(|| missing("artifacts.s3_access_key_id"))?,
            secret_access_key: secret,
        });
    }
    validate_limits(&server)?;

    let log_format = match (log_format, &layer.log_format, &file) {
        (Some(LogFormatArg::Human), _, _) => LogFormat::Human,
        (Some(LogFormatArg::Json), _, _) => LogFormat::Json,
        (None, Some(value), Some(loaded)) => match value.get_ref().as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(loaded.error_at(
                    value.span(),
                    format!("log_format must be \"human\" or \"json\", not \"{other}\""),
                    "use \"json\" for log collectors, \"human\" for a terminal",
                ));
            }
        },
        _ => LogFormat::Human,
    };
    let log_level =
        log_level.map(str::to_owned).or_else(|| layer.log_level.clone()).unwrap_or_else(|| "info".to_owned());

    Ok(Resolved { server, log_format, log_level, config_file: file.map(|loaded| loaded.path) })
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| format!("`{text}` is not an ADDRESS:PORT to listen on"))
}

fn parse_proxy_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" { Ok(None) } else { parse_listen(text).map(Some) }
}

fn validate_limits(server: &ServerConfig) -> Result<(), ConfigError> {
    let checks: [(bool, &str); 9] = [
        (
            (1024 * 1024..=1024 * 1024 * 1024).contains(&server.ci.max_job_log_bytes),
            "ci.max_job_log_mib must be between 1 and 1024",
        ),
        ((1..=1000).contains(&server.ci.concurrent_jobs), "ci.concurrent_jobs must be between 1 and 1000"),
        ((2..=3600).contains(&server.ci.agent_timeout_seconds), "ci.agent_timeout_seconds must be between 2 and 3600"),
        (server.http.max_body_bytes >= 1024, "http.max_body_bytes must be at least 1024"),
        (server.http.request_timeout_seconds >= 1, "http.request_timeout_seconds must be at least 1"),
        (server.auth.session_ttl_hours >= 1, "auth.session_ttl_hours must be at least 1"),
        (server.auth.login_attempts_per_window >= 1, "auth.login_attempts_per_window must be at least 1"),
        (server.auth.login_window_seconds >= 1, "auth.login_window_seconds must be at least 1"),
        (
            (1..=3600).contains(&server.deploy.health_timeout_seconds),
            "deploy.health_timeout_seconds must be between 1 and 3600",
        ),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, message)) => Err(ConfigError::Value { message: (*message).to_owned(), help: None }),
        None => Ok(()),
    }
}

/// The resolved configuration as a user reads it, secrets redacted.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub config_file: Option<String>,
    pub listen: String,
    pub data_dir: String,
    pub database: String,
    pub database_url: Option<String>,
    pub external_url: Option<String>,
    pub log_format: &'static str,
    pub log_level: String,
    pub demo: bool,
    pub http: ShownHttp,
    pub auth: ShownAuth,
    pub ci: ShownCi,
    pub artifacts: ShownArtifacts,
    pub notifications: ShownNotifications,
    pub deploy: ShownDeploy,
    pub metrics: ShownMetrics,
    pub alerting: ShownAlerting,
    pub checks: ShownChecks,
    pub logs: ShownLogs,
}

#[derive(Debug, Serialize)]
pub struct ShownChecks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ShownLogs {
    pub enabled: bool,
    pub retention: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_size_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ShownAlerting {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oncall_file: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ShownMetrics {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    pub retention: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_size_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ShownDeploy {
    pub proxy_listen: String,
    pub health_timeout_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_known_hosts: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ShownNotifications {
    pub allow_private_targets: bool,
}

#[derive(Debug, Serialize)]
pub struct ShownArtifacts {
    pub storage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    pub default_expire_in_days: u64,
}

#[derive(Debug, Serialize)]
pub struct ShownCi {
    pub concurrent_jobs: usize,
    pub executor: &'static str,
    pub agent_timeout_seconds: u64,
    pub max_job_log_mib: usize,
}

#[derive(Debug, Serialize)]
pub struct ShownHttp {
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct ShownAuth {
    pub session_ttl_hours: u64,
    pub login_attempts_per_window: u32,
    pub login_window_seconds: u64,
}

impl Resolved {
    pub fn shown(&self) -> Shown {
        let server = &self.server;
        let (database, database_url) = match &server.database {
            DatabaseConfig::Sqlite { path } => (format!("sqlite:{}", path.display()), None),
            DatabaseConfig::Postgres { url } => ("postgres".to_owned(), Some(opsloop_store::redact_url(url))),
        };
        Shown {
            config_file: self.config_file.as_ref().map(|path| path.display().to_string()),
            listen: server.listen.to_string(),
            data_dir: server.data_dir.display().to_string(),
            database,
            database_url,
            external_url: server.external_url.clone(),
            log_format: match self.log_format {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            },
            log_level: self.log_level.clone(),
            demo: server.demo,
            http: ShownHttp {
                max_body_bytes: server.http.max_body_bytes,
                request_timeout_seconds: server.http.request_timeout_seconds,
                shutdown_grace_seconds: server.http.shutdown_grace_seconds,
            },
            auth: ShownAuth {
                session_ttl_hours: server.auth.session_ttl_hours,
                login_attempts_per_window: server.auth.login_attempts_per_window,
                login_window_seconds: server.auth.login_window_seconds,
            },
            ci: ShownCi {
                concurrent_jobs: server.ci.concurrent_jobs,
                executor: if server.ci.untagged_jobs_on_agents { "agents" } else { "local" },
                agent_timeout_seconds: server.ci.agent_timeout_seconds,
                max_job_log_mib: server.ci.max_job_log_bytes / (1024 * 1024),
            },
            notifications: ShownNotifications { allow_private_targets: server.notifications.allow_private_targets },
            deploy: ShownDeploy {
                proxy_listen: server
                    .deploy
                    .proxy_listen
                    .map_or_else(|| "off".to_owned(), |address| address.to_string()),
                health_timeout_seconds: server.deploy.health_timeout_seconds,
                port_range: server.deploy.ports.map(|(low, high)| format!("{low}-{high}")),
                ssh_identity: server.deploy.ssh_identity.as_ref().map(|p| p.display().to_string()),
                ssh_known_hosts: server.deploy.ssh_known_hosts.as_ref().map(|p| p.display().to_string()),
            },
            metrics: ShownMetrics {
                enabled: server.metrics.enabled,
                config_file: server.metrics.config_file.as_ref().map(|p| p.display().to_string()),
                retention: format!("{}s", server.metrics.retention_seconds),
                retention_size_bytes: server.metrics.retention_bytes,
            },
            checks: ShownChecks { config_file: server.checks.config_file.as_ref().map(|p| p.display().to_string()) },
            logs: ShownLogs {
                enabled: server.logs.enabled,
                retention: format!("{}s", server.logs.retention_seconds),
                retention_size_bytes: server.logs.retention_bytes,
            },
            alerting: ShownAlerting {
                config_file: server.alerting.config_file.as_ref().map(|p| p.display().to_string()),
                oncall_file: server.alerting.oncall_file.as_ref().map(|p| p.display().to_string()),
            },
            artifacts: match &server.artifacts.storage {
                opsloop_server::config::ArtifactStorage::Local => ShownArtifacts {
                    storage: "local",
                    s3_bucket: None,
                    s3_endpoint: None,
                    default_expire_in_days: server.artifacts.default_expire_seconds / 86_400,
                },
                opsloop_server::config::ArtifactStorage::S3(s3) => ShownArtifacts {
                    storage: "s3",
                    s3_bucket: Some(s3.bucket.clone()),
                    s3_endpoint: s3.endpoint.clone(),
                    default_expire_in_days: server.artifacts.default_expire_seconds / 86_400,
                },
            },
        }
    }
}

/// A retention time in Prometheus's words (`15d`, `12h`, `2w`, `1y`), in seconds.
fn parse_retention(s: &str) -> Option<u64> {
    opsloop_metrics::config::parse_duration(s.trim()).map(|d| d.as_secs()).filter(|&secs| secs > 0)
}

/// A size in Prometheus's words (`512MB`, `10GB`, `1TB`; powers of 1024 as Prometheus reads them).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match s[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" => 1 << 10,
        "MB" | "MIB" => 1 << 20,
        "GB" | "GIB" => 1 << 30,
        "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit).filter(|&b| b > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ConfigArgs;

    fn args_with_file(path: &Path) -> ServeArgs {
        ServeArgs {
            config: ConfigArgs { config: Some(path.to_path_buf()), ..ConfigArgs::default() },
            ..ServeArgs::default()
        }
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opsloop.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_logs_section_reads_lokis_words() {
        let (_dir, path) = write("[logs]\nenabled = false\nretention = \"744h\"\nretention_size = \"1GB\"\n");
        let resolved = resolve(&args_with_file(&path), None, None).unwrap();
        assert!(!resolved.server.logs.enabled);
        assert_eq!(resolved.server.logs.retention_seconds, 31 * 86_400);
        assert_eq!(resolved.server.logs.retention_bytes, Some(1 << 30));
        let (_dir, path) = write("[logs]\nretention = \"0s\"\n");
        assert_eq!(resolve(&args_with_file(&path), None, None).unwrap().server.logs.retention_seconds, 0);
        let (_dir, path) = write("[logs]\nretention = \"a month\"\n");
        let error = resolve(&args_with_file(&path), None, None).unwrap_err().to_string();
        assert!(error.contains("logs.retention"), "{error}");
    }

    #[test]
    fn the_metrics_section_reads_prometheus_words_and_points_at_mistakes() {
        let (_dir, path) = write("[metrics]\nretention = \"2w\"\nretention_size = \"512MB\"\n");
        let resolved = resolve(&args_with_file(&path), None, None).unwrap();
        assert_eq!(resolved.server.metrics.retention_seconds, 14 * 86_400);
        assert_eq!(resolved.server.metrics.retention_bytes, Some(512 << 20));
        let (_dir, path) = write("[metrics]\nretention = \"two weeks\"\n");
        let error = resolve(&args_with_file(&path), None, None).unwrap_err().to_string();
        assert!(error.contains("metrics.retention"), "{error}");
        assert_eq!(parse_size("10GB"), Some(10 << 30));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_retention("0d"), None, "no retention at all is a mistake, not a setting");
    }

    #[test]
    fn the_example_config_file_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/opsloop.toml");
        let resolved = resolve(&args_with_file(&example), None, None).unwrap();
        assert_eq!(resolved.server.listen.to_string(), "127.0.0.1:8080");
        let expected = std::env::current_dir().unwrap().join("opsloop-data");
        assert_eq!(resolved.server.data_dir, expected, "a relative data directory is made absolute at start-up");
        assert_eq!(resolved.log_format, LogFormat::Human);
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let (_dir, path) =
            write("listen = \"127.0.0.1:9000\"\ndata_dir = \"/var/lib/opsloop\"\n[auth]\nsession_ttl_hours = 2\n");
        let mut args = args_with_file(&path);
        let resolved = resolve(&args, None, None).unwrap();
        assert_eq!(resolved.server.listen.port(), 9000);
        assert_eq!(resolved.server.auth.session_ttl_hours, 2);
        assert_eq!(resolved.server.data_dir, PathBuf::from("/var/lib/opsloop"));
        assert_eq!(
            resolved.server.database,
            DatabaseConfig::Sqlite { path: PathBuf::from("/var/lib/opsloop/opsloop.db") }
        );
        args.listen = Some("127.0.0.1:9100".to_owned());
        args.config.data_dir = Some(PathBuf::from("/tmp/x"));
        let resolved = resolve(&args, Some(LogFormatArg::Json), Some("debug")).unwrap();
        assert_eq!(resolved.server.listen.port(), 9100);
        assert_eq!(resolved.server.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!((resolved.log_format, resolved.log_level.as_str()), (LogFormat::Json, "debug"));
    }

    #[test]
    fn errors_point_at_the_place_in_the_file() {
        let (_dir, path) = write("data_dir = \"/x\"\nlisten = \"not-an-address\"\n");
        let error = resolve(&args_with_file(&path), None, None).unwrap_err();
        let ConfigError::InFile(error) = &error else { panic!("{error:?}") };
        assert!(error.message.contains("not-an-address"), "{}", error.message);
        assert_eq!(error.span.map(|s| s.offset()), Some("data_dir = \"/x\"\nlisten = ".len()));

        let (_dir, path) = write("[http]\nmax_body_bites = 10\n");
        let error = resolve(&args_with_file(&path), None, None).unwrap_err();
        let ConfigError::InFile(error) = &error else { panic!("{error:?}") };
        assert!(error.message.contains("unknown field `max_body_bites`"), "{}", error.message);
        assert_eq!(error.span.map(|s| s.offset()), Some("[http]\n".len()));

        let (_dir, path) = write("listen = 8080\n");
        assert!(matches!(resolve(&args_with_file(&path), None, None), Err(ConfigError::InFile(_))));
    }

    #[test]
    fn shown_configuration_redacts_the_database_password() {
        let config =
            ConfigArgs { database_url: Some("postgres://ops:hunter2@db/ops".to_owned()), ..ConfigArgs::default() };
        let args = ServeArgs { config, ..ServeArgs::default() };
        let resolved = resolve(&args, None, None).unwrap();
        let shown = serde_json::to_string(&resolved.shown()).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn rejects_bad_values_from_flags() {
        let args = ServeArgs { listen: Some("nope".to_owned()), ..ServeArgs::default() };
        assert!(matches!(resolve(&args, None, None), Err(ConfigError::Value { .. })));
        let config = ConfigArgs { database_url: Some("mysql://x".to_owned()), ..ConfigArgs::default() };
        let args = ServeArgs { config, ..ServeArgs::default() };
        assert!(matches!(resolve(&args, None, None), Err(ConfigError::Value { .. })));
    }
}
