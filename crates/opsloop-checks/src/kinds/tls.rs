//! `tls://host:port` and `starttls://host:port` (SMTP): a TLS handshake that verifies the
//! chain and the host name against the Mozilla roots (unless `client.insecure`), and the
//! peer certificate's notAfter for `[CERTIFICATE_EXPIRATION]`. Also the TLS configurations
//! every kind that speaks TLS shares.

use std::sync::Arc;
use std::time::Instant;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{InvalidTarget, Kind, Probe, ProbeContext, host_port, lookup, not_after_ms};
use crate::config::Endpoint;
use crate::result::Observation;

pub(crate) struct Tls;
pub(crate) struct StartTls;

impl Kind for Tls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["tls"]
    }

    fn validate(&self, url: &str) -> Result<(), InvalidTarget> {
        host_port(url, None).map(|_| ())
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, ctx: &'a ProbeContext) -> Probe<'a> {
        Box::pin(probe(endpoint, ctx, false))
    }
}

impl Kind for StartTls {
    fn name(&self) -> &'static str {
        "starttls"
    }

    fn schemes(&self) -> &'static [&'static str] {
        &["starttls"]
    }

    fn validate(&self, url: &str) -> Result<(), InvalidTarget> {
        host_port(url, None).map(|_| ())
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, ctx: &'a ProbeContext) -> Probe<'a> {
        Box::pin(probe(endpoint, ctx, true))
    }
}

/// A rustls client configuration on ring: Mozilla's roots, or (insecure) any certificate.
pub(crate) fn client_config(insecure: bool, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| rustls::ClientConfig::builder_with_protocol_versions(rustls::DEFAULT_VERSIONS));
    let mut config = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider))).with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// `client.insecure: true`: any certificate, any name (signatures are still checked, so the
/// handshake is a real one).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS handshake over `stream`; the peer's leaf certificate's notAfter with it.
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(tokio_rustls::client::TlsStream<S>, Option<i64>), String> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with {host}: {}", super::error_chain(&e)))?;
    let not_after = tls.get_ref().1.peer_certificates().and_then(|certs| certs.first()).and_then(|c| not_after_ms(c));
    Ok((tls, not_after))
}

async fn probe(endpoint: &Endpoint, ctx: &ProbeContext, starttls: bool) -> Observation {
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
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => {
            seen.errors.push(format!("connecting to {addr}: {e}"));
            seen.timings.total = start.elapsed();
            return seen;
        }
    };
    seen.timings.connect = Some(connect_start.elapsed());
    seen.ip = Some(addr.ip());
    if starttls && let Err(e) = smtp_starttls(&mut stream).await {
        seen.errors.push(format!("STARTTLS with {addr}: {e}"));
        seen.timings.total = start.elapsed();
        return seen;
    }
    let tls_start = Instant::now();
    match handshake(stream, &host, ctx.tls(endpoint.client.insecure)).await {
        Ok((_, not_after)) => {
            seen.timings.tls = Some(tls_start.elapsed());
            seen.connected = true;
            seen.cert_not_after_ms = not_after;
        }
        Err(e) => seen.errors.push(e),
    }
    seen.duration = start.elapsed();
    seen.timings.total = seen.duration;
    seen
}

/// SMTP up to the point TLS starts: greeting, EHLO, STARTTLS, each answered in the 2xx range.
async fn smtp_starttls(stream: &mut TcpStream) -> Result<(), String> {
    let (read, mut write) = stream.split();
    let mut reader = BufReader::new(read);
    smtp_reply(&mut reader).await?;
    write.write_all(b"EHLO opsloop\r\n").await.map_err(|e| e.to_string())?;
    smtp_reply(&mut reader).await?;
    write.write_all(b"STARTTLS\r\n").await.map_err(|e| e.to_string())?;
    smtp_reply(&mut reader).await?;
    Ok(())
}

/// One SMTP reply; a multi-line one continues while the fourth character is `-`.
async fn smtp_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<String, String> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("the server closed the connection".to_owned());
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return if line.starts_with('2') { Ok(line) } else { Err(format!("server said {:?}", line.trim_end())) };
        }
    }
}
