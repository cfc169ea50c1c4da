//! Every kind against real servers these tests start on 127.0.0.1: HTTPS with a self-signed
//! certificate that expires in five days, a flaky and a slow HTTP server, a TCP listener, a
//! DNS responder, a gRPC health server; a command; ICMP where the kernel allows it; and the
//! scheduler's flap damping on the flaky server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsloop_checks::config::{self, Endpoint};
use opsloop_checks::result::CheckResult;
use opsloop_checks::runner::Runner;
use opsloop_checks::scheduler::{Health, ResultSink, Scheduler, StateChange};
use opsloop_core::clock::SystemClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn runner() -> Runner {
    Runner::new(Arc::new(SystemClock), 16)
}

/// The first endpoint of a checks file.
fn endpoint(yaml: &str) -> Endpoint {
    let config = config::load(yaml, "test.yml").unwrap_or_else(|e| panic!("{e}"));
    config.endpoints.into_iter().next().unwrap()
}

async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) -> Option<String> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&buffer[..n]);
    }
    Some(String::from_utf8_lossy(&request).into_owned())
}

fn response(status: u16, body: &str) -> String {
    format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
}

/// An HTTP/1.1 server answering each request with `answer(request number, request)`, after
/// `delay`, keeping connections alive.
async fn http_server(delay: Duration, answer: fn(usize, &str) -> String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut stream).await {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(delay).await;
                    if stream.write_all(answer(n, &request).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A self-signed certificate for 127.0.0.1 that expires in `days` days (at midnight UTC).
fn certificate(days: i64) -> (rustls::pki_types::CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let expiry = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(24 * days)).unwrap();
    let date = expiry.to_zoned(jiff::tz::TimeZone::UTC).date();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(i32::from(date.year()), date.month() as u8, date.day() as u8);
    let cert = params.self_signed(&key).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (cert.der().clone(), key_der)
}

/// An HTTPS server (HTTP/1.1 over rustls) answering 200 `{"status":"UP"}`.
async fn https_server(days: i64) -> SocketAddr {
    let (cert, key) = certificate(days);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                while read_request(&mut tls).await.is_some() {
                    if tls.write_all(response(200, r#"{"status":"UP"}"#).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_certificate_expiry_in_five_days() {
    let addr = https_server(5).await;
    let check = endpoint(&format!(
        "endpoints:\n  - name: web\n    url: https://{addr}/health\n    client: {{insecure: true}}\n    conditions:\n      - '[STATUS] == 200'\n      - '[BODY].status == UP'\n      - '[CERTIFICATE_EXPIRATION] > 48h'\n      - '[CERTIFICATE_EXPIRATION] > 240h'\n"
    ));
    let result = runner().run(&check).await;
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    let outcomes: Vec<bool> = result.conditions.iter().map(|c| c.success).collect();
    assert_eq!(outcomes, [true, true, true, false], "{:?}", result.conditions);
    assert!(!result.success);
    assert!(result.conditions[3].condition.starts_with("[CERTIFICATE_EXPIRATION] ("), "{:?}", result.conditions[3]);
    assert!(result.conditions[3].condition.ends_with(") > 240h (864000000)"), "{:?}", result.conditions[3]);
    let expires_in = result.cert_not_after_ms.unwrap() - jiff::Timestamp::now().as_millisecond();
    assert!((4 * 86_400_000..=5 * 86_400_000).contains(&expires_in), "{expires_in}");
    assert_eq!(result.ip, Some("127.0.0.1".parse().unwrap()));

    // Verified (the default), the self-signed certificate is refused: not connected, and why.
    let strict = endpoint(&format!(
        "endpoints:\n  - name: web\n    url: https://{addr}/\n    conditions: ['[STATUS] == 200']\n"
    ));
    let result = runner().run(&strict).await;
    assert!(!result.success && !result.connected);
    assert!(result.errors.iter().any(|e| e.to_lowercase().contains("certificate")), "{:?}", result.errors);
    assert_eq!(result.conditions[0].condition, "[STATUS] (0) == 200");

    // The tls:// kind sees the same certificate.
    let tls = endpoint(&format!(
        "endpoints:\n  - name: tls\n    url: tls://{addr}\n    client: {{insecure: true}}\n    conditions: ['[CONNECTED] == true', '[CERTIFICATE_EXPIRATION] > 48h']\n"
    ));
    let result = runner().run(&tls).await;
    assert!(result.success, "{result:?}");
    assert!(result.timings.tls.is_some());
    let tls_strict = endpoint(&format!(
        "endpoints:\n  - name: tls\n    url: tls://{addr}\n    conditions: ['[CONNECTED] == true']\n"
    ));
    let result = runner().run(&tls_strict).await;
    assert!(!result.success && !result.errors.is_empty(), "{result:?}");
}

#[tokio::test]
async fn http_status_body_method_headers_and_redirects() {
    let addr = http_server(Duration::ZERO, |_, request| {
        if request.starts_with("GET /moved") {
            "HTTP/1.1 302 Found\r\nlocation: /here\r\ncontent-length: 0\r\n\r\n".to_owned()
        } else if request.starts_with("POST /echo") && request.to_lowercase().contains("x-token: abc") {
            response(201, r#"{"items":[{"id":1},{"id":2}]}"#)
        } else {
            response(200, r#"{"ok":true}"#)
        }
    })
    .await;
    let post = endpoint(&format!(
        "endpoints:\n  - name: post\n    url: http://{addr}/echo\n    method: POST\n    headers: {{X-Token: abc}}\n    body: '{{}}'\n    conditions: ['[STATUS] == 201', 'len([BODY].items) == 2', '[BODY].items[1].id == 2', '[RESPONSE_TIME] < 5000']\n"
    ));
    let result = runner().run(&post).await;
    assert!(result.success, "{result:?}");
    assert!(result.timings.first_byte.is_some());
    let follow = endpoint(&format!(
        "endpoints:\n  - name: r\n    url: http://{addr}/moved\n    conditions: ['[STATUS] == 200']\n"
    ));
    assert!(runner().run(&follow).await.success);
    let no_follow = endpoint(&format!(
        "endpoints:\n  - name: r\n    url: http://{addr}/moved\n    client: {{ignore-redirect: true}}\n    conditions: ['[STATUS] == 302']\n"
    ));
    assert!(runner().run(&no_follow).await.success);
}

#[tokio::test]
async fn a_slow_server_times_out_without_stalling_the_others() {
    let slow = http_server(Duration::from_secs(5), |_, _| response(200, "")).await;
    let fast = http_server(Duration::ZERO, |_, _| response(200, "")).await;
    let runner = runner();
    let slow_check = endpoint(&format!(
        "endpoints:\n  - name: slow\n    url: http://{slow}/\n    client: {{timeout: 300ms}}\n    conditions: ['[STATUS] == 200']\n"
    ));
    let fast_check = endpoint(&format!(
        "endpoints:\n  - name: fast\n    url: http://{fast}/\n    conditions: ['[STATUS] == 200']\n"
    ));
    let started = Instant::now();
    let (slow_result, fast_result) = tokio::join!(runner.run(&slow_check), async {
        let result = runner.run(&fast_check).await;
        (result, started.elapsed())
    });
    assert!(!slow_result.success);
    assert!(
        slow_result.errors.iter().any(|e| e.contains("timed out") || e.contains("timeout")),
        "{:?}",
        slow_result.errors
    );
    assert!(started.elapsed() < Duration::from_secs(2), "the timeout holds: {:?}", started.elapsed());
    assert!(fast_result.0.success);
    assert!(fast_result.1 < Duration::from_millis(250), "the fast check did not wait: {:?}", fast_result.1);
}

#[tokio::test]
async fn tcp_connects_and_refusals() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 64];
            if let Ok(n) = stream.read(&mut buffer).await
                && &buffer[..n] == b"PING\r\n"
            {
                let _ = stream.write_all(b"+PONG\r\n").await;
            }
        }
    });
    let check = endpoint(&format!(
        "endpoints:\n  - name: redis\n    url: tcp://{addr}\n    body: \"PING\\r\\n\"\n    conditions: ['[CONNECTED] == true', '[BODY] == +PONG']\n"
    ));
    let result = runner().run(&check).await;
    assert!(result.success, "{result:?}");
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let check = endpoint(&format!(
        "endpoints:\n  - name: none\n    url: tcp://{closed}\n    conditions: ['[CONNECTED] == true']\n"
    ));
    let result = runner().run(&check).await;
    assert!(!result.success && !result.errors.is_empty());
    assert_eq!(result.conditions[0].condition, "[CONNECTED] (false) == true");
}

/// A DNS responder: `example.test.` A 192.0.2.7, anything else NXDOMAIN.
async fn dns_server() -> SocketAddr {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..n]) else { continue };
            let mut answer = Message::new();
            answer.set_id(query.id()).set_message_type(MessageType::Response).set_recursion_desired(true);
            if let Some(q) = query.queries().first() {
                answer.add_query(q.clone());
                if q.name().to_ascii() == "example.test." {
                    answer.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
                    ));
                } else {
                    answer.set_response_code(ResponseCode::NXDomain);
                }
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn dns_answers_and_rcodes() {
    let server = dns_server().await;
    let check = endpoint(&format!(
        "endpoints:\n  - name: dns\n    url: {server}\n    dns: {{query-name: example.test, query-type: A}}\n    conditions: ['[DNS_RCODE] == NOERROR', '[BODY] == 192.0.2.7']\n"
    ));
    let result = runner().run(&check).await;
    assert!(result.success, "{result:?}");
    let missing = endpoint(&format!(
        "endpoints:\n  - name: dns\n    url: {server}\n    dns: {{query-name: missing.test, query-type: A}}\n    conditions: ['[DNS_RCODE] == NOERROR']\n"
    ));
    let result = runner().run(&missing).await;
    assert_eq!(result.conditions[0].condition, "[DNS_RCODE] (NXDOMAIN) == NOERROR");

    // client.dns-resolver: an HTTP check whose host only this DNS server knows.
    let http = http_server(Duration::ZERO, |_, _| response(200, "")).await;
    let via = endpoint(&format!(
        "endpoints:\n  - name: via\n    url: http://example.test:{}/\n    client: {{dns-resolver: 'udp://{server}'}}\n    conditions: ['[STATUS] == 200']\n",
        http.port()
    ));
    // The server listens on 127.0.0.1, the name resolves to 192.0.2.7 (TEST-NET): the request
    // must fail to connect there, which proves the name went through our resolver.
    let result = Runner::new(Arc::new(SystemClock), 4)
        .run(&Endpoint {
            client: config::ClientConfig { timeout: Duration::from_millis(500), ..via.client.clone() },
            ..via
        })
        .await;
    assert!(!result.success);
    assert!(
        !result.errors.iter().any(|e| e.contains("dns error")),
        "resolved through the configured server: {:?}",
        result.errors
    );
}

#[tokio::test]
async fn commands_exit_codes_output_and_timeouts() {
    let check = endpoint(
        "checks:\n  - name: c\n    command: [sh, -c, 'echo hello; echo oops >&2; exit 3']\n    conditions: ['[STATUS] == 0', '[BODY] == hello']\n",
    );
    let result = runner().run(&check).await;
    assert_eq!(result.status, Some(3));
    assert_eq!(result.conditions[0].condition, "[STATUS] (3) == 0");
    assert!(result.conditions[1].success);
    assert!(result.errors.iter().any(|e| e.contains("exited with 3: oops")), "{:?}", result.errors);
    let slow = endpoint(
        "checks:\n  - name: c\n    command: [sleep, '5']\n    client: {timeout: 200ms}\n    conditions: ['[STATUS] == 0']\n",
    );
    let started = Instant::now();
    let result = runner().run(&slow).await;
    assert!(!result.success && started.elapsed() < Duration::from_secs(2), "{:?} {result:?}", started.elapsed());
    let missing =
        endpoint("checks:\n  - name: c\n    command: [/nonexistent/program]\n    conditions: ['[STATUS] == 0']\n");
    let result = runner().run(&missing).await;
    assert!(!result.success && !result.connected && !result.errors.is_empty());
}

#[tokio::test]
async fn icmp_is_never_a_silent_pass() {
    let check = endpoint(
        "endpoints:\n  - name: ping\n    url: icmp://127.0.0.1\n    client: {timeout: 2s}\n    conditions: ['[CONNECTED] == true']\n",
    );
    let result = runner().run(&check).await;
    if result.success {
        assert!(result.connected);
    } else {
        assert!(!result.errors.is_empty(), "a failure says why");
        eprintln!("icmp here: {:?}", result.errors);
    }
}

/// A gRPC health server over cleartext HTTP/2: `SERVING` for "" and "db", `NOT_SERVING` else.
async fn grpc_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else { return };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    tokio::spawn(async move {
                        assert_eq!(request.uri().path(), "/grpc.health.v1.Health/Check");
                        let mut body = request.into_body();
                        let mut data = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            data.extend_from_slice(&chunk);
                        }
                        let service = String::from_utf8_lossy(data.get(7..).unwrap_or(&[])).into_owned();
                        let status = if service.is_empty() || service == "db" { 1 } else { 2 };
                        let response =
                            http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
                        let mut send = respond.send_response(response, false).unwrap();
                        send.send_data(bytes::Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]), false).unwrap();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        send.send_trailers(trailers).unwrap();
                    });
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_health() {
    let addr = grpc_server().await;
    let check = endpoint(&format!(
        "endpoints:\n  - name: g\n    url: grpc://{addr}\n    conditions: ['[CONNECTED] == true', '[STATUS] == 0', '[BODY] == SERVING']\n"
    ));
    let result = runner().run(&check).await;
    assert!(result.success, "{result:?}");
    let other = endpoint(&format!(
        "endpoints:\n  - name: g\n    url: grpc://{addr}\n    body: cache\n    conditions: ['[BODY] == SERVING']\n"
    ));
    let result = runner().run(&other).await;
    assert_eq!(result.conditions[0].condition, "[BODY] (NOT_SERVING) == SERVING");
}

#[derive(Default)]
struct Collect {
    results: Mutex<Vec<(bool, Health)>>,
    changes: Mutex<Vec<StateChange>>,
}

impl ResultSink for Collect {
    fn record(&self, result: &CheckResult, health: Health) {
        self.results.lock().unwrap().push((result.success, health));
    }
    fn state_changed(&self, change: &StateChange) {
        self.changes.lock().unwrap().push(change.clone());
    }
}

#[tokio::test]
async fn flap_damping_on_a_server_failing_every_third_request() {
    let flaky = http_server(Duration::ZERO, |n, _| response(if n % 3 == 0 { 500 } else { 200 }, "")).await;
    let file = |retries: u32| {
        format!(
            "endpoints:\n  - name: flaky\n    url: http://{flaky}/\n    interval: 50ms\n    retries: {retries}\n    conditions: ['[STATUS] == 200']\n"
        )
    };
    // retries: 2 — a single failure between successes never takes it down.
    let sink = Arc::new(Collect::default());
    let scheduler = Scheduler::new(runner(), sink.clone());
    scheduler.apply(&config::load(&file(2), "t.yml").unwrap().endpoints);
    while sink.results.lock().unwrap().len() < 9 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scheduler.stop();
    let results = sink.results.lock().unwrap().clone();
    assert!(results.iter().any(|(success, _)| !success), "{results:?}");
    assert!(results.iter().all(|(_, health)| *health != Health::Down), "{results:?}");
    assert!(results.iter().any(|(_, health)| *health == Health::Degraded), "{results:?}");
    let changes = sink.changes.lock().unwrap().clone();
    assert!(
        changes.iter().any(|c| c.to == Health::Degraded && c.failed_conditions == ["[STATUS] (500) == 200"]),
        "{changes:?}"
    );

    // retries: 1 (the default) — every failure is down.
    let sink = Arc::new(Collect::default());
    let scheduler = Scheduler::new(runner(), sink.clone());
    scheduler.apply(&config::load(&file(1), "t.yml").unwrap().endpoints);
    while sink.results.lock().unwrap().len() < 6 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = scheduler.status()[0].key.clone();
    assert!(scheduler.pause(&key));
    assert_eq!(scheduler.status()[0].health, Health::Paused);
    scheduler.stop();
    let results = sink.results.lock().unwrap().clone();
    assert!(results.iter().any(|(_, health)| *health == Health::Down), "{results:?}");
    assert!(sink.changes.lock().unwrap().iter().any(|c| c.to == Health::Paused));
}
