//! `http://` and `https://`: one request with the endpoint's method, headers and body (or a
//! GraphQL query), through a client shared by every check with the same client settings so
//! connections are pooled. The peer certificate comes from reqwest's `tls_info` (also on a
//! pooled connection), for `[CERTIFICATE_EXPIRATION]`. As in Gatus, `[RESPONSE_TIME]` runs
//! until the response headers, and the body is read only when a condition needs it.

use std::time::Instant;

use super::{Kind, Probe, ProbeContext, error_chain, not_after_ms};
use crate::config::Endpoint;
use crate::result::Observation;

/// A body is read up to this much (a status page, not a download).
const MAX_BODY: usize = 4 << 20;

pub(crate) struct Http;

impl Kind for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["http", "https"]
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, ctx: &'a ProbeContext) -> Probe<'a> {
        Box::pin(probe(endpoint, ctx))
    }
}

async fn probe(endpoint: &Endpoint, ctx: &ProbeContext) -> Observation {
    let client = match ctx.http_client(&endpoint.client) {
        Ok(client) => client,
        Err(e) => return Observation::failed(format!("building the HTTP client: {}", error_chain(&e))),
    };
    let mut request = client.request(endpoint.method.clone(), &endpoint.url).timeout(endpoint.client.timeout);
    for (name, value) in &endpoint.headers {
        request = request.header(name, value);
    }
    if endpoint.graphql {
        request = request
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "query": endpoint.body }).to_string());
    } else if !endpoint.body.is_empty() {
        request = request.body(endpoint.body.clone());
    }
    let start = Instant::now();
    let mut seen = Observation::default();
    match request.send().await {
        Err(e) => seen.errors.push(error_chain(&e)),
        Ok(mut response) => {
            seen.duration = start.elapsed();
            seen.timings.first_byte = Some(seen.duration);
            seen.connected = true;
            seen.status = Some(i64::from(response.status().as_u16()));
            seen.ip = response.remote_addr().map(|a| a.ip());
            seen.cert_not_after_ms = response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
                .and_then(not_after_ms);
            if endpoint.needs_body() {
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = MAX_BODY.saturating_sub(seen.body.len());
                            seen.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                            if room <= chunk.len() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            seen.errors.push(format!("reading the body: {}", error_chain(&e)));
                            break;
                        }
                    }
                }
            }
        }
    }
    seen.timings.total = start.elapsed();
    if seen.duration.is_zero() {
        seen.duration = seen.timings.total;
    }
    seen
}
