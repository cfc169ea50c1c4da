//! `icmp://host`: one echo request through an unprivileged datagram ICMP socket (Linux's
//! "ping sockets"), so the server needs neither root nor CAP_NET_RAW, only its group inside
//! `net.ipv4.ping_group_range`. Where the kernel refuses the socket, the check fails with a
//! message saying so: an unreachable host and an unrunnable check are never a silent pass.

use std::net::SocketAddr;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

use super::{InvalidTarget, Kind, Probe, ProbeContext, host_port, lookup};
use crate::config::Endpoint;
use crate::result::Observation;

pub(crate) struct Icmp;

impl Kind for Icmp {
    fn name(&self) -> &'static str {
        "icmp"
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["icmp"]
    }

    fn validate(&self, url: &str) -> Result<(), InvalidTarget> {
        host_port(url, Some(0)).map(|_| ())
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, _ctx: &'a ProbeContext) -> Probe<'a> {
        Box::pin(probe(endpoint))
    }
}

const PAYLOAD: &[u8] = b"opsloop-checks";

async fn probe(endpoint: &Endpoint) -> Observation {
    let start = Instant::now();
    let mut seen = Observation::default();
    let host = match host_port(&endpoint.url, Some(0)) {
        Ok((host, _)) => host,
        Err(e) => return Observation::failed(e.to_string()),
    };
    let Some(addr) = lookup(&host, 0, endpoint.client.dns_resolver.as_ref(), &mut seen).await else {
        return seen;
    };
    match echo(addr).await {
        Ok(()) => {
            seen.connected = true;
            seen.ip = Some(addr.ip());
        }
        Err(e) => seen.errors.push(e),
    }
    seen.duration = start.elapsed();
    seen.timings.total = seen.duration;
    seen
}

async fn echo(addr: SocketAddr) -> Result<(), String> {
    let (domain, protocol, request, reply) = if addr.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8)
    } else {
        (Domain::IPV6, Protocol::ICMPV6, 128, 129)
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(protocol)).map_err(|e| {
        if matches!(e.kind(), std::io::ErrorKind::PermissionDenied) || e.raw_os_error() == Some(13) {
            format!(
                "ICMP checks need an unprivileged ping socket, which the kernel refused ({e}): \
                 allow this process's group with `sysctl net.ipv4.ping_group_range=\"0 2147483647\"`"
            )
        } else {
            format!("opening an ICMP socket: {e}")
        }
    })?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    // A connected datagram ICMP socket behaves as a UDP one for tokio: send, then receive
    // the echo replies the kernel routes to it (matched by its identifier).
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket)).map_err(|e| e.to_string())?;
    socket.connect(addr).await.map_err(|e| format!("ICMP to {addr}: {e}"))?;
    let mut packet = vec![request, 0, 0, 0, 0, 0, 0, 1];
    packet.extend_from_slice(PAYLOAD);
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    socket.send(&packet).await.map_err(|e| format!("ICMP echo to {addr}: {e}"))?;
    let mut buffer = [0u8; 1500];
    loop {
        let n = socket.recv(&mut buffer).await.map_err(|e| format!("ICMP echo to {addr}: {e}"))?;
        if n >= 8 && buffer[0] == reply {
            return Ok(());
        }
    }
}

/// The Internet checksum (the kernel recomputes it for IPv4 ping sockets; IPv6 does it itself).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
