//! `[deploy]` in `opsloop.toml`: the deploy engine's settings, owned here so the server and the
//! CLI read one type (the binary layers file, environment and flags into it).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployConfig {
    /// Where the deployment proxy listens (`None`: no proxy, deployments still run).
    pub proxy_listen: Option<SocketAddr>,
    /// How long a new instance may take to pass its health check.
    pub health_timeout_seconds: u64,
    /// Instances' ports come from this range (inclusive); any free port when unset.
    pub ports: Option<(u16, u16)>,
    /// The private key for SSH targets (default: the ssh client's own, `~/.ssh/id_*`).
    pub ssh_identity: Option<PathBuf>,
    /// The known-hosts file for SSH targets (default: `~/.ssh/known_hosts`).
    pub ssh_known_hosts: Option<PathBuf>,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            proxy_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8000))),
            health_timeout_seconds: 60,
            ports: None,
            ssh_identity: None,
            ssh_known_hosts: None,
        }
    }
}
