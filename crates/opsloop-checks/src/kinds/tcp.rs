//! `tcp://host:port`: connect (`[CONNECTED]`), and when the endpoint has a `body`, send it
//! and read the first answer into `[BODY]` (Gatus's TCP checks do the same).

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{InvalidTarget, Kind, Probe, ProbeContext, host_port, lookup};
use crate::config::Endpoint;
use crate::result::Observation;

pub(crate) struct Tcp;

impl Kind for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["tcp"]
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
    let connect_start = Instant::now();
    match tokio::net::TcpStream::connect(addr).await {
        Err(e) => seen.errors.push(format!("connecting to {addr}: {e}")),
        Ok(mut stream) => {
            seen.timings.connect = Some(connect_start.elapsed());
            seen.duration = start.elapsed();
            seen.connected = true;
            seen.ip = Some(addr.ip());
            if !endpoint.body.is_empty() {
                let mut buffer = vec![0; 64 * 1024];
                let exchange = async {
                    stream.write_all(endpoint.body.as_bytes()).await?;
                    stream.read(&mut buffer).await
                };
                match exchange.await {
                    Ok(n) => seen.body = buffer[..n].to_vec(),
                    Err(e) => seen.errors.push(format!("talking to {addr}: {e}")),
                }
                seen.timings.first_byte = Some(start.elapsed());
            }
        }
    }
    seen.timings.total = start.elapsed();
    seen
}
