//! Zero downtime, as the issue states it: a steady load through the proxy while six
//! blue-green deployments and three canary promotions happen, one after another. Every
//! request must be answered 200: not one non-2xx answer, not one socket error. The load is
//! an in-repo client (hyper, keep-alive connections) and must reach 1,000 requests a second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opsloop_deploy::strategy::{Deployer, Outcome, Release, Slo, Strategy};
use opsloop_deploy::supervisor::{HealthCheck, Probing};
use opsloop_deploy::{Proxy, Signals};

const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/service/server.py");

fn release(version: &str) -> Release {
    Release {
        service: "web".into(),
        version: version.into(),
        command: vec!["python3".into(), SERVICE.into()],
        env: vec![("VERSION".to_owned(), version.to_owned())],
        dir: std::env::temp_dir(),
        replicas: 2,
        health: HealthCheck::Http { path: "/health".into(), status: 200 },
        readiness: Probing::default_for(&HealthCheck::Tcp),
        targets: Vec::new(),
        memory_limit: None,
        liveness: None,
        concurrency: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_blue_green_deployments_and_three_canaries_under_load_lose_nothing() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        opsloop_core::skip::skipped("python3 is not installed (.ci/run installs it)");
        return;
    }
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    let (stop_proxy, stopped) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let serving = {
        let proxy = proxy.clone();
        let address: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        tokio::task::spawn_blocking(move || {
            proxy.serve_workers(address, 2, stopped, move |bound| bound_tx.send(bound).unwrap())
        })
    };
    let front = bound_rx.recv().unwrap();
    let deployer = Deployer {
        proxy: proxy.clone(),
        host: None,
        path_prefix: "/".into(),
        slo: Slo { max_error_rate: 0.01, max_p99: Duration::from_secs(1), min_requests: 50 },
        bake: Duration::from_millis(700),
        health_timeout: Duration::from_secs(10),
        log: Arc::new(|_, _| {}),
        on_step: None,
        ports: None,
    };
    let mut serving_now = deployer.start(&release("v0")).await.unwrap();
    deployer.serve("web", &serving_now);

    let running = Arc::new(AtomicBool::new(true));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (running, ok, bad) = (running.clone(), ok.clone(), bad.clone());
            tokio::spawn(async move {
                let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
                let url: hyper::Uri = format!("http://{front}/").parse().unwrap();
                while running.load(Ordering::Relaxed) {
                    match client.get(url.clone()).await {
                        Ok(response) if response.status() == 200 => {
                            let _ = response.into_body().collect().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut plan: Vec<(String, Strategy)> = (1..=6).map(|n| (format!("v{n}"), Strategy::BlueGreen)).collect();
    plan.extend((7..=9).map(|n| (format!("v{n}"), Strategy::Canary { steps: vec![10, 50, 100] })));
    for (version, strategy) in &plan {
        let (next, outcome, steps) = deployer.deploy(serving_now, &release(version), strategy).await;
        assert_eq!(outcome, Outcome::Succeeded, "{version}: {steps:?}");
        assert_eq!(next.version, *version);
        serving_now = next;
    }
    let elapsed = started.elapsed();
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    let rate = ok as f64 / elapsed.as_secs_f64();
    eprintln!("{ok} requests in {:.1} s ({rate:.0}/s) over 9 deployments, {bad} failed", elapsed.as_secs_f64());
    assert_eq!(bad, 0, "no request failed ({ok} answered)");
    assert!(rate >= 1000.0, "the load reached only {rate:.0} requests/s");
    for instance in serving_now.instances {
        instance.stop().await;
    }
    let _ = stop_proxy.send(true);
    serving.await.unwrap().unwrap();
}
