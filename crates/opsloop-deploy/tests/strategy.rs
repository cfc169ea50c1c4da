//! Strategies with real processes behind the real proxy, under load: a good blue-green
//! deployment, a canary that fails 20% of its requests and is rolled back inside its bake
//! window, and a release whose health check fails and never takes traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opsloop_deploy::strategy::{Deployer, Outcome, Release, Slo, Strategy};
use opsloop_deploy::supervisor::HealthCheck;
use opsloop_deploy::{Proxy, Signals};

const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/service/server.py");

fn release(version: &str, extra: &[(&str, &str)]) -> Release {
    let mut env = vec![("VERSION".to_owned(), version.to_owned())];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Release {
        service: "web".into(),
        version: version.into(),
        command: vec!["python3".into(), SERVICE.into()],
        env,
        dir: std::env::temp_dir(),
        replicas: 2,
        health: HealthCheck::Http { path: "/health".into(), status: 200 },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_succeeds_a_failing_canary_rolls_back_and_an_unhealthy_release_takes_no_traffic() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 is not installed (.ci/run installs it)");
        return;
    }
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
    let deployer = Deployer {
        proxy: proxy.clone(),
        host: None,
        path_prefix: "/".into(),
        slo: Slo { max_error_rate: 0.05, max_p99: Duration::from_millis(500), min_requests: 30 },
        bake: Duration::from_millis(1500),
        health_timeout: Duration::from_secs(4),
        log: Arc::new(|_, _| {}),
    };
    let v1 = deployer.start(&release("v1", &[])).await.unwrap();
    deployer.serve("web", &v1);

    // Steady load through the proxy, counting what is not a 200.
    let running = Arc::new(AtomicBool::new(true));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (running, ok, bad) = (running.clone(), ok.clone(), bad.clone());
        clients.push(tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            while running.load(Ordering::Relaxed) {
                match client.get(format!("http://{front}/").parse().unwrap()).await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let ask = || async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let response = client.get(format!("http://{front}/").parse().unwrap()).await.unwrap();
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };

    // 1. A good release, blue-green: no request fails, and v2 serves afterwards.
    let (serving, outcome, timeline) = deployer.deploy(v1, &release("v2", &[]), &Strategy::BlueGreen).await;
    assert_eq!(outcome, Outcome::Succeeded, "{timeline:?}");
    assert_eq!(ask().await.trim(), "v2");
    assert_eq!(bad.load(Ordering::Relaxed), 0, "the switch lost no request ({} served)", ok.load(Ordering::Relaxed));

    // 2. A canary that fails 20% of its requests: rolled back within its first bake window.
    let (serving, outcome, timeline) = deployer
        .deploy(serving, &release("v3", &[("FAIL_PERCENT", "20")]), &Strategy::Canary { steps: vec![50, 100] })
        .await;
    let Outcome::RolledBack { reason } = outcome else { panic!("not rolled back: {outcome:?} {timeline:?}") };
    assert!(reason.contains("error rate"), "{reason}");
    assert!(timeline.iter().any(|s| s.text.starts_with("rolled back to v2")), "{timeline:?}");
    assert!(timeline.last().unwrap().at < Duration::from_secs(10), "{timeline:?}");
    assert_eq!(serving.version, "v2");
    let leaked = bad.load(Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(ask().await.trim(), "v2");
    }

    // 3. A release whose health check fails never receives traffic.
    let (serving, outcome, _) =
        deployer.deploy(serving, &release("v4", &[("HEALTH", "fail")]), &Strategy::BlueGreen).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert_eq!(proxy.signals().of("web", "v4").snapshot().requests, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(bad.load(Ordering::Relaxed), leaked, "after the rollback no request failed");
    assert_eq!(ask().await.trim(), "v2");
    for instance in serving.instances {
        instance.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replaces_instances_without_a_failed_request_and_recreate_restarts() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 is not installed (.ci/run installs it)");
        return;
    }
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
    let deployer = Deployer {
        proxy: proxy.clone(),
        host: None,
        path_prefix: "/".into(),
        slo: Slo { max_error_rate: 0.05, max_p99: Duration::from_millis(500), min_requests: 20 },
        bake: Duration::from_millis(700),
        health_timeout: Duration::from_secs(10),
        log: Arc::new(|_, _| {}),
    };
    let three = |version: &str, extra: &[(&str, &str)]| Release { replicas: 3, ..release(version, extra) };
    let v1 = deployer.start(&three("v1", &[])).await.unwrap();
    deployer.serve("web", &v1);
    let ask = || async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let response = client.get(format!("http://{front}/").parse().unwrap()).await.unwrap();
        (
            response.status().as_u16(),
            String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
        )
    };

    let running = Arc::new(AtomicBool::new(true));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (running, ok, bad) = (running.clone(), ok.clone(), bad.clone());
        clients.push(tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            while running.load(Ordering::Relaxed) {
                match client.get(format!("http://{front}/").parse().unwrap()).await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let (v2, outcome, timeline) = deployer.deploy(v1, &three("v2", &[]), &Strategy::Rolling { batch: 1 }).await;
    assert_eq!(outcome, Outcome::Succeeded, "{timeline:?}");
    assert_eq!(timeline.iter().filter(|s| s.text.contains(" instance(s) on v2")).count(), 3, "{timeline:?}");
    assert_eq!(bad.load(Ordering::Relaxed), 0, "rolling lost no request ({} served)", ok.load(Ordering::Relaxed));
    assert_eq!(v2.instances.len(), 3);
    assert_eq!(ask().await, (200, "v2\n".to_owned()));

    // A rolling step whose instance fails every request (under the same load) brings the old
    // version back at full strength.
    let (serving, outcome, timeline) =
        deployer.deploy(v2, &three("v3", &[("FAIL_PERCENT", "100")]), &Strategy::Rolling { batch: 1 }).await;
    assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?} {timeline:?}");
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!((serving.version.as_str(), serving.instances.len()), ("v2", 3));
    for _ in 0..10 {
        assert_eq!(ask().await, (200, "v2\n".to_owned()));
    }

    // Recreate: the old version stops, the new one starts and serves.
    let (v4, outcome, timeline) = deployer.deploy(serving, &three("v4", &[]), &Strategy::Recreate).await;
    assert_eq!(outcome, Outcome::Succeeded, "{timeline:?}");
    assert_eq!(ask().await, (200, "v4\n".to_owned()));
    for instance in v4.instances {
        instance.stop().await;
    }
}
