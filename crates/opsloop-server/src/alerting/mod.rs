//! Alerting as a subsystem of the server: incidents ([`incidents`], the service layer shared
//! by the API and the UI), on-call as code ([`oncall`]), and the hosting of the alerting
//! engine (`opsloop-alert`). Handlers only translate [`AlertingError`] to HTTP.

pub mod api;
pub mod engine;
pub mod incidents;
pub mod links;
pub mod oncall;

use std::sync::Arc;

pub use incidents::AlertingError;
use opsloop_alert::oncall::OncallConfig;

use crate::config::AlertingConfig;

/// The URL people reach this server at: `external_url`, else the address it listens on (the
/// bound one: `--listen 127.0.0.1:0` picks a port at start).
pub fn base_url(state: &crate::state::AppState) -> String {
    match (&state.config.external_url, state.bound_address.get()) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(address)) => format!("http://{address}"),
        (None, None) => format!("http://{}", state.config.listen),
    }
}

/// What alerting keeps while the server runs.
#[derive(Default)]
pub struct AlertingHub {
    /// The on-call configuration, when `--oncall-config` names a valid file.
    oncall: Option<Arc<OncallConfig>>,
    /// Why the on-call file could not be used (shown by `/readyz`).
    problem: Option<String>,
    /// The running engine ([`engine::driver`]).
    pub engine: tokio::sync::OnceCell<opsloop_alert::driver::Driver>,
    /// When the engine started (Alertmanager's `uptime`).
    pub started: std::sync::OnceLock<jiff::Timestamp>,
    /// Signs the one-time links in pages ([`links`]), its key read on first use.
    pub link_signer: tokio::sync::OnceCell<opsloop_alert::oncall::ack::AckSigner>,
    /// Wakes the escalation worker when an incident starts escalating.
    pub escalations_due: tokio::sync::Notify,
}

impl AlertingHub {
    /// Reads the on-call file once at start; `serve` has already refused an invalid one, so a
    /// problem here is a file that changed in between.
    pub fn load(config: &AlertingConfig) -> Self {
        let Some(path) = &config.oncall_file else { return AlertingHub::default() };
        match opsloop_alert::oncall::config::load_file(path) {
            Ok(oncall) => AlertingHub { oncall: Some(Arc::new(oncall)), ..AlertingHub::default() },
            Err(error) => AlertingHub { problem: Some(error.to_string()), ..AlertingHub::default() },
        }
    }

    pub fn oncall(&self) -> Option<Arc<OncallConfig>> {
        self.oncall.clone()
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.clone()
    }
}
