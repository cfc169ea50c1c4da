//! The traffic switch, measured: how long from `Proxy::set_route` until the new version
//! answers a request through the proxy, while clients keep the proxy busy; and that none of
//! their requests fails across all the switches. Issue 5's target: 0 errors, the new version
//! serving within 10 ms of the switch.
//!
//! `cargo bench -p opsloop-deploy --bench switch`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opsloop_deploy::{Backend, Proxy, Route, Signals};

/// An upstream answering every request with `name`.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request: hyper::Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        name.as_bytes(),
                    ))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    address
}

fn route(address: SocketAddr, version: &str) -> Route {
    Route {
        host: None,
        path_prefix: "/".into(),
        service: "web".into(),
        backends: vec![Backend { address, version: version.into(), weight: 1 }],
    }
}

fn switch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (proxy, front, blue, green) = runtime.block_on(async {
        let (blue, green) = (upstream("blue").await, upstream("green").await);
        let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
        proxy.set_route(route(blue, "blue"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = listener.local_addr().unwrap();
        tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
        (proxy, front, blue, green)
    });
    // Clients keeping the proxy busy through every switch.
    let running = Arc::new(AtomicBool::new(true));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    for _ in 0..8 {
        let (running, served, failed) = (running.clone(), served.clone(), failed.clone());
        runtime.spawn(async move {
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let url: hyper::Uri = format!("http://{front}/").parse().unwrap();
            while running.load(Ordering::Relaxed) {
                match client.get(url.clone()).await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.into_body().collect().await;
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let probe: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url: hyper::Uri = format!("http://{front}/").parse().unwrap();
    let mut next_is_green = true;
    let mut took_all: Vec<Duration> = Vec::new();
    c.bench_function("switch, then the new version answers", |b| {
        b.iter(|| {
            let (address, name) = if next_is_green { (green, "green") } else { (blue, "blue") };
            next_is_green = !next_is_green;
            let began = Instant::now();
            proxy.set_route(route(address, name));
            let answer = runtime.block_on(async {
                let response = probe.get(url.clone()).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            });
            let took = began.elapsed();
            took_all.push(took);
            assert_eq!(answer, name.as_bytes(), "the first request after the switch went to the new version");
        });
    });
    running.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    took_all.sort();
    let at = |q: f64| took_all[((took_all.len() - 1) as f64 * q) as usize];
    let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
    println!(
        "{} switches under load: the new version answered after p50 {p50:?}, p99 {p99:?}, max {max:?}; \
         {served} requests served across them, {failed} failed",
        took_all.len()
    );
    assert_eq!(failed, 0, "a switch lost a request");
    assert!(p99 < Duration::from_millis(10), "p99 of switch-to-answer was {p99:?}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3));
    targets = switch
}
criterion_main!(benches);
