//! DNS checks (`url: 8.8.8.8` with a `dns:` block): one query of the given type to the given
//! server, over UDP (TCP with `tcp://`, or when the answer is truncated). `[DNS_RCODE]` is
//! the response code as Gatus spells it (`NOERROR`, `NXDOMAIN`…) and `[BODY]` the last
//! answer's value, as Gatus sets it. hickory-proto encodes and decodes the messages; the
//! transport is these few lines, so the server asked is exactly the one configured, which is
//! also what `client.dns-resolver` of the other kinds resolves through.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType as WireType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{InvalidTarget, Kind, Probe, ProbeContext, Target};
use crate::config::{Endpoint, RecordType, Resolver, Transport, parse_resolver};
use crate::result::Observation;

pub(crate) struct Dns;

impl Kind for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn claims(&self, target: &Target) -> bool {
        target.dns && !target.command
    }

    fn validate(&self, url: &str) -> Result<(), InvalidTarget> {
        parse_resolver(url, false).map(|_| ()).ok_or_else(|| {
            InvalidTarget(format!(
                "a DNS check's url is the server to ask: `8.8.8.8`, `1.1.1.1:53` or `tcp://…`, not {url:?}"
            ))
        })
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, _ctx: &'a ProbeContext) -> Probe<'a> {
        Box::pin(probe(endpoint))
    }
}

async fn probe(endpoint: &Endpoint) -> Observation {
    let start = Instant::now();
    let (Some(server), Some(query)) = (parse_resolver(&endpoint.url, false), endpoint.dns.as_ref()) else {
        return Observation::failed("a DNS check needs a server url and a `dns:` query");
    };
    let mut seen = Observation { ip: server.host.parse().ok(), ..Observation::default() };
    match exchange(&server, &query.name, query.record_type, endpoint.client.timeout).await {
        Ok(answer) => {
            seen.connected = true;
            seen.dns_rcode = Some(rcode_name(u16::from(answer.response_code())));
            // Gatus keeps the last answer's value.
            if let Some(value) = answer.answers().iter().rev().find_map(|r| value_of(r.data())) {
                seen.body = value.into_bytes();
            }
        }
        Err(e) => seen.errors.push(e),
    }
    seen.duration = start.elapsed();
    seen.timings.total = seen.duration;
    seen
}

fn wire_type(record_type: RecordType) -> WireType {
    match record_type {
        RecordType::A => WireType::A,
        RecordType::Aaaa => WireType::AAAA,
        RecordType::Cname => WireType::CNAME,
        RecordType::Mx => WireType::MX,
        RecordType::Ns => WireType::NS,
        RecordType::Ptr => WireType::PTR,
        RecordType::Soa => WireType::SOA,
        RecordType::Srv => WireType::SRV,
        RecordType::Txt => WireType::TXT,
    }
}

fn value_of(data: &RData) -> Option<String> {
    Some(match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(name) => name.to_string(),
        RData::MX(mx) => mx.exchange().to_string(),
        RData::NS(ns) => ns.to_string(),
        RData::PTR(ptr) => ptr.to_string(),
        RData::SRV(srv) => srv.target().to_string(),
        RData::SOA(soa) => soa.mname().to_string(),
        RData::TXT(txt) => txt.txt_data().iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect(),
        _ => return None,
    })
}

/// miekg/dns's names of response codes, which Gatus's `[DNS_RCODE]` compares against.
fn rcode_name(code: u16) -> String {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADSIG",
        _ => return code.to_string(),
    };
    name.to_owned()
}

static NEXT_ID: AtomicU16 = AtomicU16::new(0);

fn query_id() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    NEXT_ID.fetch_add(1, Ordering::Relaxed).wrapping_mul(40503) ^ (nanos as u16)
}

/// One query to `server`, answered within `timeout`.
pub(crate) async fn exchange(
    server: &Resolver,
    name: &str,
    record_type: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    let name = Name::from_ascii(name).map_err(|e| format!("invalid name {name:?}: {e}"))?;
    let id = query_id();
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, wire_type(record_type)));
    let packet = message.to_vec().map_err(|e| format!("encoding the query: {e}"))?;
    let addr = server_addr(server).await?;
    let work = async {
        if server.transport == Transport::Udp {
            let answer = over_udp(addr, &packet, id).await?;
            if !answer.truncated() {
                return Ok(answer);
            }
        }
        over_tcp(addr, &packet).await
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no DNS answer from {addr} within {timeout:?}"))?
}

async fn server_addr(server: &Resolver) -> Result<SocketAddr, String> {
    if let Ok(ip) = server.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, server.port));
    }
    tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .map_err(|e| format!("resolving the DNS server {}: {e}", server.host))?
        .next()
        .ok_or_else(|| format!("the DNS server {} has no address", server.host))
}

async fn over_udp(addr: SocketAddr, packet: &[u8], id: u16) -> Result<Message, String> {
    let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let io = |e: std::io::Error| format!("DNS over UDP to {addr}: {e}");
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(addr).await.map_err(io)?;
    socket.send(packet).await.map_err(io)?;
    let mut buffer = vec![0; 4096];
    loop {
        let n = socket.recv(&mut buffer).await.map_err(io)?;
        // A stray or spoofed datagram with another id is not the answer; keep waiting.
        if let Ok(message) = Message::from_vec(&buffer[..n])
            && message.id() == id
        {
            return Ok(message);
        }
    }
}

async fn over_tcp(addr: SocketAddr, packet: &[u8]) -> Result<Message, String> {
    let io = |e: std::io::Error| format!("DNS over TCP to {addr}: {e}");
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    let len = u16::try_from(packet.len()).map_err(|_| "query too long".to_owned())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await.map_err(io)?;
    let answer_len = stream.read_u16().await.map_err(io)?;
    let mut buffer = vec![0; usize::from(answer_len)];
    stream.read_exact(&mut buffer).await.map_err(io)?;
    Message::from_vec(&buffer).map_err(|e| format!("decoding the answer from {addr}: {e}"))
}

/// The addresses of `host` (A, else AAAA) as `server` answers.
pub(crate) async fn resolve_via(server: &Resolver, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    let fqdn = if host.ends_with('.') { host.to_owned() } else { format!("{host}.") };
    for record_type in [RecordType::A, RecordType::Aaaa] {
        let answer = exchange(server, &fqdn, record_type, timeout).await?;
        let ips: Vec<IpAddr> = answer
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        if !ips.is_empty() {
            return Ok(ips);
        }
    }
    Err(format!("{} has no address for {host}", server.host))
}

/// reqwest's resolver for `client.dns-resolver`.
pub(crate) struct ViaServer(pub Resolver);

impl reqwest::dns::Resolve for ViaServer {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let server = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = resolve_via(&server, &host, Duration::from_secs(5))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            let addrs: reqwest::dns::Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
