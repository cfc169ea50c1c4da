//! Gatus's kinds opsloop does not run (`ssh://`, `ws://`, `wss://`, `sctp://`): a real Gatus
//! file with them still loads, and these checks report why they cannot run, never a pass.

use super::{Kind, Probe, ProbeContext};
use crate::config::Endpoint;
use crate::result::Observation;

pub(crate) struct Unsupported;

impl Kind for Unsupported {
    fn name(&self) -> &'static str {
        "unsupported"
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["ssh", "ws", "wss", "sctp"]
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, _ctx: &'a ProbeContext) -> Probe<'a> {
        let scheme = endpoint.url.split_once("://").map_or("", |(s, _)| s).to_owned();
        Box::pin(async move { Observation::failed(format!("{scheme}:// checks are not supported by opsloop")) })
    }
}
