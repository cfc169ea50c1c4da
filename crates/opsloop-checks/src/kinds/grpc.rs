//! `grpc://host:port` (cleartext HTTP/2) and `grpcs://host:port` (TLS, ALPN `h2`): one call
//! of the standard health service, `grpc.health.v1.Health/Check`, for the service named in
//! the endpoint's `body` (empty: the whole server). The request and answer are one-field
//! protobuf messages, encoded here by hand rather than through generated code.
//! `[CONNECTED]`: the HTTP/2 connection came up; `[STATUS]`: the gRPC status (0 is OK);
//! `[BODY]`: the serving status, `SERVING`, `NOT_SERVING`, `UNKNOWN` or `SERVICE_UNKNOWN`.

use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::tls::handshake;
use super::{InvalidTarget, Kind, Probe, ProbeContext, host_port, lookup};
use crate::config::Endpoint;
use crate::result::Observation;

pub(crate) struct Grpc;

impl Kind for Grpc {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["grpc", "grpcs"]
    }

    fn validate(&self, url: &str) -> Result<(), InvalidTarget> {
        host_port(url, None).map(|_| ())
    }

    fn missing_status(&self) -> i64 {
        -1
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, ctx: &'a ProbeContext) -> Probe<'a> {
        Box::pin(probe(endpoint, ctx))
    }
}

async fn probe(endpoint: &Endpoint, ctx: &ProbeContext) -> Observation {
    let start = Instant::now();
    let mut seen = Observation::default();
    let (host, port) = match host_port(&endpoint.url, None) {
        Ok(hp) => hp,
        Err(e) => return Observation::failed(e.to_string()),
    };
    let secure = endpoint.url.to_ascii_lowercase().starts_with("grpcs://");
    let Some(addr) = lookup(&host, port, endpoint.client.dns_resolver.as_ref(), &mut seen).await else {
        return seen;
    };
    let connect_start = Instant::now();
    let tcp = match tokio::net::TcpStream::connect(addr).await {
        Ok(tcp) => tcp,
        Err(e) => {
            seen.errors.push(format!("connecting to {addr}: {e}"));
            return seen;
        }
    };
    seen.timings.connect = Some(connect_start.elapsed());
    seen.ip = Some(addr.ip());
    let authority = format!("{host}:{port}");
    let service = endpoint.body.trim();
    let outcome = if secure {
        let tls_start = Instant::now();
        match handshake(tcp, &host, ctx.tls_h2(endpoint.client.insecure)).await {
            Ok((tls, not_after)) => {
                seen.timings.tls = Some(tls_start.elapsed());
                seen.cert_not_after_ms = not_after;
                check(tls, "https", &authority, service, &mut seen).await
            }
            Err(e) => Err(e),
        }
    } else {
        check(tcp, "http", &authority, service, &mut seen).await
    };
    match outcome {
        Ok((status, serving)) => {
            seen.status = Some(status);
            if let Some(serving) = serving {
                seen.body = serving.as_bytes().to_vec();
            }
        }
        Err(e) => seen.errors.push(e),
    }
    seen.duration = start.elapsed();
    seen.timings.total = seen.duration;
    seen
}

/// The call: the gRPC status, and the serving status when the answer had one.
async fn check<S>(
    io: S,
    scheme: &str,
    authority: &str,
    service: &str,
    seen: &mut Observation,
) -> Result<(i64, Option<&'static str>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let h2_error = |e: h2::Error| format!("HTTP/2 with {authority}: {e}");
    let (client, connection) = h2::client::handshake(io).await.map_err(h2_error)?;
    // The connection ends by itself once the client and its streams are dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    seen.connected = true;
    let mut client = client.ready().await.map_err(h2_error)?;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("{scheme}://{authority}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut send) = client.send_request(request, false).map_err(h2_error)?;
    send.send_data(frame(&encode_request(service)), true).map_err(h2_error)?;
    let response = response.await.map_err(h2_error)?;
    let (parts, mut body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(format!("{authority} answered HTTP {} to a gRPC call", parts.status.as_u16()));
    }
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(h2_error)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(h2_error)?;
    // A trailers-only answer (an error) carries grpc-status in the headers.
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
        .ok_or_else(|| format!("{authority} sent no grpc-status"))?;
    let serving = data.get(5..).map(decode_serving_status);
    Ok((status, serving))
}

/// `HealthCheckRequest { string service = 1; }`.
fn encode_request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    message
}

/// A gRPC message frame: uncompressed flag, big-endian length, the message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// `HealthCheckResponse { ServingStatus status = 1; }`; an absent field is 0, `UNKNOWN`.
fn decode_serving_status(message: &[u8]) -> &'static str {
    let mut status = 0u64;
    let mut i = 0;
    while i < message.len() {
        let tag = message[i];
        i += 1;
        let mut value = 0u64;
        let mut shift = 0;
        while i < message.len() {
            let byte = message[i];
            i += 1;
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 || shift > 63 {
                break;
            }
        }
        match tag {
            0x08 => status = value,
            // Skip a length-delimited field we do not know.
            t if t & 7 == 2 => i = i.saturating_add(usize::try_from(value).unwrap_or(usize::MAX)),
            _ => {}
        }
    }
    match status {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages() {
        assert!(encode_request("").is_empty());
        assert_eq!(encode_request("db"), vec![0x0a, 2, b'd', b'b']);
        assert_eq!(&frame(&[1, 2])[..], &[0, 0, 0, 0, 2, 1, 2]);
        assert_eq!(decode_serving_status(&[0x08, 1]), "SERVING");
        assert_eq!(decode_serving_status(&[0x08, 2]), "NOT_SERVING");
        assert_eq!(decode_serving_status(&[]), "UNKNOWN");
    }
}
