//! `udp://host:port`: send the `body` as one datagram and wait for one back. UDP has no
//! connection, so `[CONNECTED]` is true only when an answer came (an ICMP "port unreachable"
//! or silence until the timeout leaves it false).

use std::time::Instant;

use super::{InvalidTarget, Kind, Probe, ProbeContext, host_port, lookup};
use crate::config::Endpoint;
use crate::result::Observation;

pub(crate) struct Udp;

impl Kind for Udp {
    fn name(&self) -> &'static str {
        "udp"
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["udp"]
    }

    fn validate(&self, url: &str) -> Result<(), InvalidTarget> {
        host_port(url, None).map(|_| ())
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, _ctx: &'a ProbeContext) -> Probe<'a> {
        Box::pin(probe(endpoint))
    }
}

async fn probe(endpoint: &Endpoint) -> Observation {
    let start = Instant::now();
    let mut seen = Observation::default();
    let (host, port) = match host_port(&endpoint.url, None) {
        Ok(hp) => hp,
        Err(e) => return Observation::failed(e.to_string()),
    };
    let Some(addr) = lookup(&host, port, endpoint.client.dns_resolver.as_ref(), &mut seen).await else {
        return seen;
    };
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let exchange = async {
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        socket.connect(addr).await?;
        socket.send(endpoint.body.as_bytes()).await?;
        let mut buffer = vec![0; 64 * 1024];
        let n = socket.recv(&mut buffer).await?;
        buffer.truncate(n);
        Ok::<_, std::io::Error>(buffer)
    };
    // The runner's timeout ends a silent exchange; the observation then says "timed out".
    match exchange.await {
        Ok(body) => {
            seen.connected = true;
            seen.ip = Some(addr.ip());
            seen.body = body;
        }
        Err(e) => seen.errors.push(format!("udp {addr}: {e}")),
    }
    seen.duration = start.elapsed();
    seen.timings.total = seen.duration;
    seen
}
