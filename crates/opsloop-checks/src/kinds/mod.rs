//! The kinds of check, registered in one place: [`KINDS`]. Each kind is a module that says
//! which URLs it runs (by scheme, or by a key such as `dns:` or `command:`) and probes one
//! endpoint into an [`Observation`]; conditions are evaluated by the runner, the same way
//! for every kind. A new kind is a file here and a line in [`KINDS`].
//!
//! [`ProbeContext`] holds what probes share: the HTTP clients (one per distinct client
//! setting, so connections are pooled across checks) and the TLS configurations.

mod command;
mod dns;
mod grpc;
mod http;
mod icmp;
mod tcp;
mod tls;
mod udp;
mod unsupported;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ClientConfig, Endpoint, Resolver};
use crate::result::Observation;

/// Every kind, tried in this order (kinds that claim by a key come before URL schemes).
static KINDS: &[&dyn Kind] = &[
    &command::Command,
    &dns::Dns,
    &http::Http,
    &tcp::Tcp,
    &udp::Udp,
    &tls::Tls,
    &tls::StartTls,
    &icmp::Icmp,
    &grpc::Grpc,
    &unsupported::Unsupported,
];

/// What a probe returns: the facts, never an error (a failure is an observation with errors).
pub type Probe<'a> = Pin<Box<dyn Future<Output = Observation> + Send + 'a>>;

/// One kind of check.
pub trait Kind: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The URL schemes it runs (`tcp` for `tcp://…`).
    fn schemes(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether it runs this target; by default, by scheme (and not a DNS or command check).
    fn claims(&self, target: &Target) -> bool {
        !target.dns && !target.command && target.scheme.as_deref().is_some_and(|s| self.schemes().contains(&s))
    }

    /// Checks the URL when the file is read (a port where one is needed…).
    fn validate(&self, _url: &str) -> Result<(), InvalidTarget> {
        Ok(())
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, ctx: &'a ProbeContext) -> Probe<'a>;

    /// What `[STATUS]` reads when the probe got no status (a timeout, a refused
    /// connection). Gatus's 0 for HTTP; a kind whose success status is 0 (an exit code, a
    /// gRPC status) says something else, or a timeout would pass `[STATUS] == 0`.
    fn missing_status(&self) -> i64 {
        0
    }
}

/// A URL a kind cannot run, said in words for the configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTarget(pub String);

/// What decides the kind of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lowercase, without `://`; `None` for a URL without one (a DNS server's address).
    pub scheme: Option<String>,
    pub dns: bool,
    pub command: bool,
}

impl Target {
    pub fn of(url: &str, dns: bool, command: bool) -> Target {
        Target { scheme: url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()), dns, command }
    }
}

/// A registered kind, as endpoints hold it.
#[derive(Clone, Copy)]
pub struct KindRef(&'static dyn Kind);

impl KindRef {
    pub fn name(self) -> &'static str {
        self.0.name()
    }
    pub fn validate(self, url: &str) -> Result<(), InvalidTarget> {
        self.0.validate(url)
    }
    pub fn probe<'a>(self, endpoint: &'a Endpoint, ctx: &'a ProbeContext) -> Probe<'a> {
        self.0.probe(endpoint, ctx)
    }
    pub fn missing_status(self) -> i64 {
        self.0.missing_status()
    }
}

impl std::fmt::Debug for KindRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for KindRef {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

/// The kind that runs `target`, if any.
pub fn kind_for(target: &Target) -> Option<KindRef> {
    KINDS.iter().find(|k| k.claims(target)).map(|k| KindRef(*k))
}

/// Every URL scheme some kind runs, for hints.
pub fn schemes() -> Vec<&'static str> {
    KINDS.iter().flat_map(|k| k.schemes().iter().copied()).collect()
}

/// The parts a socket kind needs from `scheme://host:port[/…]`.
pub(crate) fn host_port(url: &str, default_port: Option<u16>) -> Result<(String, u16), InvalidTarget> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match crate::config::split_host_port(authority, default_port.unwrap_or(0)) {
        Some((host, 0)) if !host.is_empty() && default_port.is_none() => {
            Err(InvalidTarget(format!("{url:?} needs a port: write it as scheme://host:port")))
        }
        Some((host, port)) if !host.is_empty() => Ok((host, port)),
        _ => Err(InvalidTarget(format!("{url:?} is not scheme://host:port"))),
    }
}

/// An error and its causes, on one line (reqwest's own message hides the cause).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A certificate's notAfter in Unix milliseconds.
pub(crate) fn not_after_ms(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.validity().not_after.timestamp().checked_mul(1000)
}

/// Settings an HTTP client is built for; checks with equal settings share one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    insecure: bool,
    ignore_redirect: bool,
    resolver: Option<Resolver>,
    proxy: Option<String>,
}

/// What probes share.
pub struct ProbeContext {
    clients: Mutex<HashMap<ClientKey, reqwest::Client>>,
    tls_verified: Arc<rustls::ClientConfig>,
    tls_insecure: Arc<rustls::ClientConfig>,
    /// The same with ALPN `h2`, for gRPC over TLS.
    tls_h2: [Arc<rustls::ClientConfig>; 2],
}

impl std::fmt::Debug for ProbeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeContext").finish_non_exhaustive()
    }
}

impl Default for ProbeContext {
    fn default() -> Self {
        ProbeContext::new()
    }
}

impl ProbeContext {
    pub fn new() -> ProbeContext {
        // reqwest comes without a TLS provider in this workspace; the binary installs ring, and
        // so does this if nobody has, so a library user cannot hit reqwest's panic.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        ProbeContext {
            clients: Mutex::new(HashMap::new()),
            tls_verified: Arc::new(tls::client_config(false, &[])),
            tls_insecure: Arc::new(tls::client_config(true, &[])),
            tls_h2: [Arc::new(tls::client_config(false, &[b"h2"])), Arc::new(tls::client_config(true, &[b"h2"]))],
        }
    }

    pub(crate) fn tls(&self, insecure: bool) -> Arc<rustls::ClientConfig> {
        Arc::clone(if insecure { &self.tls_insecure } else { &self.tls_verified })
    }

    pub(crate) fn tls_h2(&self, insecure: bool) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls_h2[usize::from(insecure)])
    }

    /// The shared client for these settings (built once; reqwest clients are cheap to clone).
    pub(crate) fn http_client(&self, config: &ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
        let key = ClientKey {
            insecure: config.insecure,
            ignore_redirect: config.ignore_redirect,
            resolver: config.dns_resolver.clone(),
            proxy: config.proxy_url.clone(),
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("opsloop-checks/", env!("CARGO_PKG_VERSION")))
            .tls_info(true)
            .danger_accept_invalid_certs(key.insecure)
            .redirect(if key.ignore_redirect {
                reqwest::redirect::Policy::none()
            } else {
                reqwest::redirect::Policy::limited(10)
            });
        if let Some(resolver) = &key.resolver {
            builder = builder.dns_resolver(Arc::new(dns::ViaServer(resolver.clone())));
        }
        if let Some(proxy) = &key.proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy)?);
        }
        let client = builder.build()?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// Resolves `host` (through `resolver` when the check names one) and records how long it took.
pub(crate) async fn lookup(
    host: &str,
    port: u16,
    resolver: Option<&Resolver>,
    seen: &mut Observation,
) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let start = Instant::now();
    let found = match resolver {
        Some(resolver) => {
            dns::resolve_via(resolver, host, Duration::from_secs(5)).await.map(|ips| ips.first().copied())
        }
        None => tokio::net::lookup_host((host, port))
            .await
            .map(|mut addrs| addrs.next().map(|a| a.ip()))
            .map_err(|e| e.to_string()),
    };
    seen.timings.dns = Some(start.elapsed());
    match found {
        Ok(Some(ip)) => Some(SocketAddr::new(ip, port)),
        Ok(None) => {
            seen.errors.push(format!("{host}: no address found"));
            None
        }
        Err(e) => {
            seen.errors.push(format!("resolving {host}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_target() {
        let kind = |url: &str, dns: bool, command: bool| kind_for(&Target::of(url, dns, command)).map(KindRef::name);
        assert_eq!(kind("https://x", false, false), Some("http"));
        assert_eq!(kind("HTTP://x", false, false), Some("http"));
        assert_eq!(kind("tcp://x:1", false, false), Some("tcp"));
        assert_eq!(kind("8.8.8.8", true, false), Some("dns"));
        assert_eq!(kind("", false, true), Some("command"));
        assert_eq!(kind("icmp://x", false, false), Some("icmp"));
        assert_eq!(kind("grpc://x:1", false, false), Some("grpc"));
        assert_eq!(kind("ssh://x:22", false, false), Some("unsupported"));
        assert_eq!(kind("ftp://x", false, false), None);
        assert_eq!(kind("8.8.8.8", false, false), None);
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("tcp://db:5432", None), Ok(("db".into(), 5432)));
        assert_eq!(host_port("tls://[::1]:443/x", None), Ok(("::1".into(), 443)));
        assert!(host_port("tcp://db", None).is_err());
        assert_eq!(host_port("icmp://example.org", Some(0)), Ok(("example.org".into(), 0)));
        assert!(host_port("tcp://:80", None).is_err());
    }
}
