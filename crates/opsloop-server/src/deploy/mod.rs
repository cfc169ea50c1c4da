//! Deployments on the server: the deploy engine (`opsloop-deploy`) wired to projects, the
//! store and the API.
//!
//! A deployment request names a service, an environment and a version (a branch, tag or
//! commit; the default branch's head when none). Two readings of `opsloop.yml` decide it:
//! the **default branch's** says which environments exist and how they are guarded
//! (protected, freeze windows), so a branch cannot lift its own protection; the **release's
//! commit's** says how the service runs (command, health, SLO, strategy). The release is that
//! commit checked out under `<data-dir>/releases/<project>/<service>/<commit>` plus the
//! service's configuration, kept as JSON with the release.
//!
//! One deployment at a time per environment: each waits for its environment's turn (a
//! fair lock), then claims its row (`queued` → `running`), so a queue survives a restart.
//! The proxy's routes are named `<project>/<environment>/<service>`, which is also the
//! `service` label of the golden signals.
//!
//! When opsloop stops, the instances it supervised are not adopted by the next process: it
//! kills what is left of them (found by `OPSLOOP_RELEASE_DIR` in their environment) and
//! starts the release each environment was serving again, health-gated, before routing to
//! it. A deployment that was running is marked `failed` (interrupted) and what served before
//! it serves again.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opsloop_core::DeploymentStatus;
use opsloop_deploy::manifest::{self, Manifest};
use opsloop_deploy::strategy::{Deployer, Outcome, Placement, Release as EngineRelease, Running, Slo, Step};
use opsloop_deploy::supervisor::HealthCheck;
use opsloop_deploy::{Proxy, Signals};
use opsloop_store::{Actor, Deployment, NewDeployment, Project, Release};
use serde::{Deserialize, Serialize};

use crate::state::AppState;

mod error;
mod execute;
mod files;
mod hub;
mod model;
mod service;
mod serving;

pub use error::DeployError;
use execute::*;
pub use files::*;
pub use hub::*;
pub use model::*;
pub use service::*;
pub use serving::*;

pub const MANIFEST_FILE: &str = "opsloop.yml";
/// Every instance carries its release directory in this variable, so a later process can
/// find the instances an earlier one left behind.
const INSTANCE_MARKER: &str = "OPSLOOP_RELEASE_DIR";
const PROXY_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> ReleaseConfig {
        let (manifest, problems) = manifest::parse(yaml);
        assert!(problems.is_empty(), "{problems:?}");
        let stored = serde_json::to_value(ReleaseConfig::of(&manifest.services[0], &manifest)).unwrap();
        serde_json::from_value(stored).unwrap()
    }

    #[test]
    fn check_timing_set_in_opsloop_yml_is_kept_with_the_release() {
        let set = config(
            "services:\n  web:\n    command: [x]\n    health: {http: /health, interval: 1s, timeout: 3s}\n    \
             liveness: {tcp: true, interval: 5s, timeout: 1s}\n",
        );
        assert_eq!(
            set.readiness(),
            opsloop_deploy::supervisor::Probing { interval: Duration::from_secs(1), timeout: Duration::from_secs(3) }
        );
        assert_eq!(set.liveness().unwrap().timeout, Duration::from_secs(1));

        // Unset, nothing new is stored: a release recorded before these settings existed
        // compares equal, so GitOps redeploys nothing.
        let unset = ReleaseConfig::of(
            &manifest::parse("services:\n  web:\n    command: [x]\n    liveness: {command: 'true'}\n").0.services[0],
            &Manifest::default(),
        );
        let stored = serde_json::to_value(&unset).unwrap();
        assert!(stored.get("health_interval_ms").is_none() && stored.get("liveness_timeout_ms").is_none());
        let read: ReleaseConfig = serde_json::from_value(stored).unwrap();
        assert_eq!(read.readiness().timeout, Duration::from_secs(2));
        assert_eq!(read.liveness().unwrap().timeout, Duration::from_secs(5));
    }
}
