//! The server's validated configuration. The binary layers defaults, `opsloop.toml`,
//! `OPSLOOP_*` variables and flags into this struct once; everything here is trusted.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Where the metadata database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// `<data-dir>/opsloop.db`.
    Sqlite { path: PathBuf },
    /// A `postgres://` URL; contains a password, so it is never printed unredacted.
    Postgres { url: String },
}

/// Where job artifacts are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactStorage {
    /// `<data-dir>/objects`.
    Local,
    S3(S3Storage),
}

/// An S3-compatible bucket. The secret key is never printed (`Debug` redacts it).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Storage {
    pub bucket: String,
    /// `http(s)://host:port` for S3-compatible services; AWS itself when absent.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .finish()
    }
}

/// The server's configuration: a few top-level settings and one section per subsystem, as in
/// `opsloop.toml` (`[http]`, `[auth]`, `[ci]`, `[artifacts]`, `[notifications]`, `[deploy]`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    /// The URL users reach opsloop at; `https://` marks session cookies `Secure`.
    pub external_url: Option<String>,
    /// Register the demo project from the embedded `examples/demo`.
    pub demo: bool,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub ci: CiConfig,
    pub artifacts: ArtifactsConfig,
    pub notifications: NotificationsConfig,
    /// The deploy engine's own section.
    pub deploy: opsloop_deploy::DeployConfig,
    /// The metrics engine's own section.
    pub metrics: opsloop_metrics::MetricsConfig,
    pub alerting: AlertingConfig,
    pub checks: ChecksConfig,
    pub logs: LogsConfig,
}

/// `[checks]`: synthetic checks and heartbeats in Gatus's format (`--checks-config`).
#[derive(Debug, Clone, Default)]
pub struct ChecksConfig {
    pub config_file: Option<PathBuf>,
}

/// `[logs]`: the logs store behind Loki's API (`/loki`).
#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub enabled: bool,
    /// Entries older than this are deleted (Loki's `retention_period`); 0 keeps them forever.
    pub retention_seconds: u64,
    /// The most the chunk files may take on disk; the oldest go first.
    pub retention_bytes: Option<u64>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        // 31 days: the retention Loki's documentation uses in its examples (`744h`).
        LogsConfig { enabled: true, retention_seconds: 31 * 86_400, retention_bytes: None }
    }
}

/// `[alerting]`: the instance's `alertmanager.yml` (`--alerting-config`) and on-call as code
/// (`--oncall-config`).
#[derive(Debug, Clone, Default)]
pub struct AlertingConfig {
    /// Routes, receivers, inhibitions and time intervals in Alertmanager's format.
    pub config_file: Option<PathBuf>,
    /// Users, schedules, overrides and escalation policies (`opsloop_alert::oncall::config`).
    pub oncall_file: Option<PathBuf>,
}

/// `[http]`: limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    pub shutdown_grace_seconds: u64,
}

/// `[auth]`: sessions and sign-in.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub session_ttl_hours: u64,
    /// Failed logins allowed per client address (and per username) in `login_window_seconds`.
    pub login_attempts_per_window: u32,
    pub login_window_seconds: u64,
}

/// `[ci]`: pipelines on this server and its agents.
#[derive(Debug, Clone)]
pub struct CiConfig {
    /// Jobs running at once on this server, over all pipelines (GitLab Runner's `concurrent`).
    pub concurrent_jobs: usize,
    /// Jobs without tags go to agents too (`[ci] executor = "agents"`); by default they run on
    /// this server, and only tagged jobs wait for an agent with those tags.
    pub untagged_jobs_on_agents: bool,
    /// A job whose agent is silent this long is failed (or retried, `runner_system_failure`).
    pub agent_timeout_seconds: u64,
    /// A job's stored log stops here, with a note; the job runs on.
    pub max_job_log_bytes: usize,
}

/// `[artifacts]`: where job artifacts are kept, and for how long.
#[derive(Debug, Clone)]
pub struct ArtifactsConfig {
    pub storage: ArtifactStorage,
    /// How long artifacts are kept when a job sets no `artifacts:expire_in` (GitLab: 30 days).
    pub default_expire_seconds: u64,
}

/// `[notifications]`: outgoing webhooks.
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    /// Outgoing webhooks may target loopback and private addresses (off: a maintainer could
    /// otherwise probe the server's own network through them).
    pub allow_private_targets: bool,
}

impl ServerConfig {
    /// Defaults for a given data directory: SQLite inside it, loopback only.
    ///
    /// A relative directory is made absolute here, once: git, job processes and instances run
    /// in other working directories, where `./opsloop-data` would name another place.
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        let data_dir = absolute(data_dir);
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: DatabaseConfig::Sqlite { path: data_dir.join("opsloop.db") },
            data_dir,
            external_url: None,
            demo: false,
            http: HttpConfig { max_body_bytes: 1024 * 1024, request_timeout_seconds: 30, shutdown_grace_seconds: 10 },
            auth: AuthConfig { session_ttl_hours: 12, login_attempts_per_window: 10, login_window_seconds: 300 },
            ci: CiConfig {
                concurrent_jobs: 4,
                untagged_jobs_on_agents: false,
                agent_timeout_seconds: 30,
                max_job_log_bytes: 4 * 1024 * 1024,
            },
            artifacts: ArtifactsConfig { storage: ArtifactStorage::Local, default_expire_seconds: 30 * 86_400 },
            notifications: NotificationsConfig { allow_private_targets: false },
            deploy: opsloop_deploy::DeployConfig::default(),
            metrics: opsloop_metrics::MetricsConfig::default(),
            alerting: AlertingConfig::default(),
            checks: ChecksConfig::default(),
            logs: LogsConfig::default(),
        }
    }

    pub fn secure_cookies(&self) -> bool {
        self.external_url.as_deref().is_some_and(|url| url.starts_with("https://"))
    }
}

/// `path` against the working directory at start-up (unchanged when already absolute, or when
/// the working directory cannot be read, in which case later use reports the error).
pub fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}
