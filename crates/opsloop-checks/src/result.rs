//! What a probe saw ([`Observation`]) and what a check concluded from it ([`CheckResult`]),
//! the shapes Gatus's `Result` and `ConditionResult` have, so conditions resolve the same
//! placeholders from the same facts.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// The facts one probe gathered; the placeholders of conditions read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// `[CONNECTED]`: the target answered (TCP connected, TLS handshake done, HTTP answered…).
    pub connected: bool,
    /// `[STATUS]`: the HTTP status, a command's exit code, a gRPC status; 0 when none (as Gatus).
    pub status: Option<i64>,
    /// `[BODY]`: the response body (HTTP, TCP, UDP), a DNS answer, a command's stdout.
    pub body: Vec<u8>,
    /// `[IP]`: the address actually spoken to.
    pub ip: Option<IpAddr>,
    /// `[DNS_RCODE]`: `NOERROR`, `NXDOMAIN`… as Gatus (miekg/dns) spells them.
    pub dns_rcode: Option<String>,
    /// The peer certificate's notAfter, Unix milliseconds.
    pub cert_not_after_ms: Option<i64>,
    /// `[RESPONSE_TIME]`: as Gatus measures it (an HTTP check: until the response headers).
    pub duration: Duration,
    pub timings: Timings,
    /// What went wrong, in words; a failed probe always says why.
    pub errors: Vec<String>,
}

impl Observation {
    /// A probe that failed before it could observe anything.
    pub fn failed(error: impl Into<String>) -> Self {
        Observation { errors: vec![error.into()], ..Observation::default() }
    }
}

/// Phases of a probe, where the kind can measure them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    #[serde(serialize_with = "ms_opt", skip_serializing_if = "Option::is_none")]
    pub dns: Option<Duration>,
    #[serde(serialize_with = "ms_opt", skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    #[serde(serialize_with = "ms_opt", skip_serializing_if = "Option::is_none")]
    pub tls: Option<Duration>,
    /// Until the first byte (HTTP: the response headers).
    #[serde(serialize_with = "ms_opt", skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<Duration>,
    /// The whole probe, body included.
    #[serde(serialize_with = "ms")]
    pub total: Duration,
}

/// One condition as Gatus reports it: `[STATUS] (503) == 200`, and whether it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionResult {
    pub condition: String,
    pub success: bool,
}

/// One run of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// `group_name` as Gatus keys endpoints (see [`crate::config::Endpoint::key`]).
    pub key: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind that ran it: `http`, `tcp`, `dns`…
    pub kind: &'static str,
    /// Every condition held (Gatus: errors alone do not fail a check; its conditions do).
    pub success: bool,
    /// When the run started, Unix milliseconds (from the injected clock).
    pub timestamp_ms: i64,
    #[serde(rename = "duration_ms", serialize_with = "ms")]
    pub duration: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_rcode: Option<String>,
    /// The peer certificate's notAfter, Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_not_after_ms: Option<i64>,
    pub conditions: Vec<ConditionResult>,
    pub errors: Vec<String>,
    pub timings: Timings,
}

impl CheckResult {
    /// The conditions that did not hold.
    pub fn failed_conditions(&self) -> impl Iterator<Item = &ConditionResult> {
        self.conditions.iter().filter(|c| !c.success)
    }
}

fn ms<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1000.0)
}

fn ms_opt<S: serde::Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => ms(d, serializer),
        None => serializer.serialize_none(),
    }
}
