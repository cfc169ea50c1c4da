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

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    /// The URL users reach opsloop at; `https://` marks session cookies `Secure`.
    pub external_url: Option<String>,
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
    pub shutdown_grace_seconds: u64,
    pub session_ttl_hours: u64,
    /// Failed logins allowed per client address (and per username) in `login_window_seconds`.
    pub login_attempts_per_window: u32,
    pub login_window_seconds: u64,
    /// Register the demo project from the embedded `examples/demo`.
    pub demo: bool,
    /// Jobs running at once on this server, over all pipelines (GitLab Runner's `concurrent`).
    pub concurrent_jobs: usize,
    /// Jobs without tags go to agents too (`[ci] executor = "agents"`); by default they run on
    /// this server, and only tagged jobs wait for an agent with those tags.
    pub untagged_jobs_on_agents: bool,
    /// A job whose agent is silent this long is failed (or retried, `runner_system_failure`).
    pub agent_timeout_seconds: u64,
    /// A job's stored log stops here, with a note; the job runs on.
    pub max_job_log_bytes: usize,
    pub artifacts: ArtifactStorage,
    /// Outgoing webhooks may target loopback and private addresses (off: a maintainer could
    /// otherwise probe the server's own network through them).
    pub allow_private_webhook_targets: bool,
    /// How long artifacts are kept when a job sets no `artifacts:expire_in` (GitLab: 30 days).
    pub default_artifacts_expire_seconds: u64,
    /// Where the deployment proxy listens (`None`: no proxy, deployments still run).
    pub proxy_listen: Option<SocketAddr>,
    /// How long a new instance may take to pass its health check.
    pub deploy_health_timeout_seconds: u64,
    /// Instances' ports come from this range (inclusive); any free port when unset.
    pub deploy_ports: Option<(u16, u16)>,
    /// The private key for SSH targets (default: the ssh client's own, `~/.ssh/id_*`).
    pub ssh_identity: Option<PathBuf>,
    /// The known-hosts file for SSH targets (default: `~/.ssh/known_hosts`).
    pub ssh_known_hosts: Option<PathBuf>,
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
            max_body_bytes: 1024 * 1024,
            request_timeout_seconds: 30,
            shutdown_grace_seconds: 10,
            session_ttl_hours: 12,
            login_attempts_per_window: 10,
            login_window_seconds: 300,
            demo: false,
            concurrent_jobs: 4,
            untagged_jobs_on_agents: false,
            agent_timeout_seconds: 30,
            max_job_log_bytes: 4 * 1024 * 1024,
            artifacts: ArtifactStorage::Local,
            allow_private_webhook_targets: false,
            default_artifacts_expire_seconds: 30 * 86_400,
            proxy_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8000))),
            deploy_health_timeout_seconds: 60,
            deploy_ports: None,
            ssh_identity: None,
            ssh_known_hosts: None,
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
