//! Zero downtime through the proxy: clients keep requesting while traffic switches between
//! two versions (blue-green switches and canary steps); no request fails, and the new version
//! answers at once after each switch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opsloop_deploy::{Backend, Proxy, Route, Signals};

/// An upstream on a free port (HTTP/1.1 and HTTP/2) whose every request gets `answer`'s response.
async fn hyper_upstream<F, Fut, B>(answer: F) -> SocketAddr
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let answered = answer(request);
                    async move { Ok::<_, std::convert::Infallible>(answered.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// A tiny upstream that answers every request with `name`, after an optional pause.
async fn upstream(name: &'static str, pause: Duration) -> SocketAddr {
    hyper_upstream(move |_request| async move {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        hyper::Response::new(Full::new(Bytes::from_static(name.as_bytes())))
    })
    .await
}

/// Serves `proxy` on a free port for the rest of the test; its address.
async fn serve_until_the_end(proxy: &Arc<Proxy>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
    front
}

fn route(backends: Vec<Backend>) -> Vec<Route> {
    vec![Route { host: None, path_prefix: "/".into(), service: "web".into(), backends }]
}

fn only(address: SocketAddr, version: &str) -> Vec<Backend> {
    vec![Backend { address, version: version.to_owned(), weight: 1 }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_switches_without_a_failed_request() {
    // A little latency upstream, so switches happen while requests are in flight.
    let blue = upstream("blue", Duration::from_millis(2)).await;
    let green = upstream("green", Duration::from_millis(2)).await;
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(10));
    proxy.switch(route(only(blue, "v1")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(proxy.clone().serve(listener, async move {
        let _ = stop_rx.await;
    }));

    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            while running.load(Ordering::Relaxed) {
                let uri: hyper::Uri = format!("http://{front}/").parse().unwrap();
                match client.get(uri).await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let probe: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let ask = |probe: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>| async move {
        let response = probe.get(format!("http://{front}/").parse().unwrap()).await.unwrap();
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };

    // Six blue-green switches: after each, the very next request is answered by the new one.
    let mut worst = Duration::ZERO;
    for step in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (address, name, version) = if step % 2 == 0 { (green, "green", "v2") } else { (blue, "blue", "v1") };
        let switched = Instant::now();
        proxy.switch(route(only(address, version)));
        assert_eq!(ask(probe.clone()).await, name);
        worst = worst.max(switched.elapsed());
    }
    // Three canary steps, 10% → 50% → 100% of traffic to green.
    for percent in [10, 50, 100] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.switch(route(vec![
            Backend { address: blue, version: "v1".into(), weight: 100 - percent },
            Backend { address: green, version: "v2".into(), weight: percent },
        ]));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 1000, "the load kept going: {ok} requests");
    assert_eq!(failed, 0, "no request failed across 9 switches ({ok} succeeded)");
    // The switch itself is a pointer swap; the probe's round trip (2 ms upstream pause
    // included) is what this measures.
    assert!(worst < Duration::from_millis(50), "the new version answered {worst:?} after the switch");

    // Both versions' signals saw the traffic, and all of it succeeded.
    let snapshots = proxy.signals().snapshots();
    let total: u64 = snapshots.iter().map(|(_, _, s)| s.requests).sum();
    assert!(total >= ok, "{snapshots:?}");
    assert!(snapshots.iter().all(|(_, _, s)| s.errors == 0 && s.in_flight == 0), "{snapshots:?}");
    assert_eq!(snapshots.iter().map(|(_, v, _)| v.as_str()).collect::<Vec<_>>(), ["v1", "v2"]);

    let _ = stop_tx.send(());
    served.await.unwrap();
}

#[tokio::test]
async fn a_dead_upstream_is_a_bad_gateway_counted_as_an_error() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(2));
    proxy.switch(route(only(dead, "broken")));
    let front = serve_until_the_end(&proxy).await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client.get(format!("http://{front}/x").parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 502);
    let (_, _, signals) = &proxy.signals().snapshots()[0];
    assert_eq!((signals.requests, signals.errors), (1, 1));
    let missing = client.get(format!("http://{front}/x").parse::<hyper::Uri>().unwrap()).await.unwrap();
    assert_eq!(missing.status(), 502);
    proxy.switch(Vec::new());
    let unrouted = client.get(format!("http://{front}/x").parse::<hyper::Uri>().unwrap()).await.unwrap();
    assert_eq!(unrouted.status(), 404);
}

#[tokio::test]
async fn an_upstream_that_closes_its_connections_loses_no_request() {
    // Every answer ends its connection, so pooled connections go stale all the time.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request: hyper::Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"once"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    proxy.switch(route(only(closing, "v1")));
    let front = serve_until_the_end(&proxy).await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..100 {
        let response = client.get(format!("http://{front}/").parse().unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "once");
    }
    let (_, _, signals) = &proxy.signals().snapshots()[0];
    assert_eq!((signals.requests, signals.errors), (100, 0));
}

#[tokio::test]
async fn an_upgraded_connection_carries_bytes_both_ways() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    // An upstream that switches protocols, then echoes what it reads.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let mut asked_upgrade = false;
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            asked_upgrade |= line.to_ascii_lowercase().starts_with("upgrade: echo");
            if line == "\r\n" {
                break;
            }
        }
        assert!(asked_upgrade, "the Upgrade header reached the upstream");
        let mut stream = reader.into_inner();
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 64];
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            if read == 0 {
                break;
            }
            stream.write_all(&buffer[..read]).await.unwrap();
        }
    });
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    proxy.switch(route(only(echo, "v1")));
    let front = serve_until_the_end(&proxy).await;

    let mut client = tokio::net::TcpStream::connect(front).await.unwrap();
    client
        .write_all(b"GET /socket HTTP/1.1\r\nHost: chat.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(client);
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
    }
    let mut client = reader.into_inner();
    for message in ["ping", "pong and more"] {
        client.write_all(message.as_bytes()).await.unwrap();
        let mut back = vec![0u8; message.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message.as_bytes());
    }
}

/// An upstream that answers with the request it got: method, target, then its headers as
/// sorted `name: value` lines (framing headers left out). `/big` answers 1 MiB, chunked.
async fn echo_upstream() -> SocketAddr {
    hyper_upstream(|request: hyper::Request<Incoming>| async move {
        if request.uri().path() == "/big" {
            let chunks = (0..256).map(|i| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
                    b'a' + (i % 26) as u8;
                    4096
                ])))
            });
            return hyper::Response::new(http_body_util::Either::Left(http_body_util::StreamBody::new(
                futures::stream::iter(chunks),
            )));
        }
        let mut lines: Vec<String> = request
            .headers()
            .iter()
            .filter(|(name, _)| *name != "content-length" && *name != "transfer-encoding")
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect();
        lines.sort();
        let text = format!("{} {}\n{}\n", request.method(), request.uri(), lines.join("\n"));
        hyper::Response::new(http_body_util::Either::Right(Full::new(Bytes::from(text))))
    })
    .await
}

#[tokio::test]
async fn requests_with_and_without_a_body_reach_the_upstream_alike() {
    let echo = echo_upstream().await;
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    proxy.switch(route(only(echo, "v1")));
    let front = serve_until_the_end(&proxy).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let ask = |method: &str, body: &'static str| {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{front}/path?q=1"))
            .header("host", "app.example.com:8000")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .header("x-forwarded-host", "forged.example.com")
            .header("x-custom", "kept")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let client = client.clone();
        async move {
            let response = client.request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(response.headers().contains_key("date"), "every answer carries a Date");
            String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
        }
    };
    // GET without a body takes the lean client; POST with one takes hyper's.
    let lean = ask("GET", "").await;
    let hyper_path = ask("POST", "a body").await;
    let headers = |echoed: &str| echoed.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(lean.lines().next(), Some("GET /path?q=1"));
    assert_eq!(hyper_path.lines().next(), Some("POST /path?q=1"));
    assert_eq!(headers(&lean), headers(&hyper_path));
    assert_eq!(
        headers(&lean),
        [
            "host: app.example.com:8000",
            "x-custom: kept",
            "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1",
            "x-forwarded-host: app.example.com:8000",
            "x-forwarded-proto: http",
        ]
    );

    // A large streamed answer comes whole through the lean client, twice on its pool.
    for _ in 0..2 {
        let big = client.get(format!("http://{front}/big").parse().unwrap()).await.unwrap();
        let body = big.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 256 * 4096);
        assert!(body.chunks(4096).enumerate().all(|(i, chunk)| chunk.iter().all(|b| *b == b'a' + (i % 26) as u8)));
    }
    let (_, _, signals) = &proxy.signals().snapshots()[0];
    assert_eq!((signals.requests, signals.errors), (4, 0));
}

#[tokio::test]
async fn stopping_lets_requests_in_flight_finish() {
    let slow = upstream("slow but whole", Duration::from_millis(300)).await;
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    proxy.switch(route(only(slow, "v1")));
    let front_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = front_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(proxy.clone().serve(front_listener, async move {
        let _ = stopped.await;
    }));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let in_flight = tokio::spawn(client.get(format!("http://{front}/").parse().unwrap()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "slow but whole");
    // Once its last connection has closed, the proxy's serving loop returns.
    tokio::time::timeout(Duration::from_secs(5), serving).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(front).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn a_streamed_answer_counts_in_flight_until_its_last_byte() {
    // Draining an instance waits for this count: a long download must not be cut when its
    // response head has arrived but its body has not.
    let streaming = hyper_upstream(|_request| async {
        let parts = futures::stream::unfold(0, |sent| async move {
            if sent == 4 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            Some((Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from("part "))), sent + 1))
        });
        hyper::Response::new(http_body_util::StreamBody::new(parts))
    })
    .await;
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    proxy.switch(route(only(streaming, "v1")));
    let front = serve_until_the_end(&proxy).await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let load = proxy.signals().backend(streaming);

    let response = client.get(format!("http://{front}/download").parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(load.in_flight(), 1, "the head has come, the body has not");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "part part part part ");
    let deadline = Instant::now() + Duration::from_secs(2);
    while load.in_flight() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(load.in_flight(), 0, "the last byte passed on ends the count");
}
