//! Strategies with real processes behind the real proxy, under load: a good blue-green
//! deployment, a canary that fails 20% of its requests and is rolled back inside its bake
//! window, a release whose health check fails and never takes traffic, a rolling deployment,
//! a failed rolling step, and recreate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opsloop_deploy::strategy::{Deployer, Outcome, Release, Slo, Strategy};
use opsloop_deploy::supervisor::{HealthCheck, Probing};
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
        readiness: Probing::default_for(&HealthCheck::Tcp),
        targets: Vec::new(),
        memory_limit: None,
        liveness: None,
        concurrency: None,
    }
}

/// A proxy on a free port with a deployer for its `/` route.
async fn deployer(min_requests: u64, bake: Duration, health_timeout: Duration) -> (Deployer, std::net::SocketAddr) {
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
    let deployer = Deployer {
        proxy,
        host: None,
        path_prefix: "/".into(),
        slo: Slo { max_error_rate: 0.05, max_p99: Duration::from_millis(500), min_requests },
        bake,
        health_timeout,
        log: Arc::new(|_, _| {}),
        on_step: None,
        ports: None,
    };
    (deployer, front)
}

/// Clients requesting through the proxy until stopped, counting answers that are not 200.
struct Load {
    running: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    bad: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(front: std::net::SocketAddr, clients: usize) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let clients = (0..clients)
            .map(|_| {
                let (running, ok, bad) = (running.clone(), ok.clone(), bad.clone());
                tokio::spawn(async move {
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
                })
            })
            .collect();
        Load { running, ok, bad, clients }
    }

    fn failed(&self) -> u64 {
        self.bad.load(Ordering::Relaxed)
    }

    fn served(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    async fn stop(self) {
        self.running.store(false, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
    }
}

/// One request through the proxy: its status and body.
async fn ask(front: std::net::SocketAddr) -> (u16, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client.get(format!("http://{front}/").parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    (status, String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

fn python_missing() -> bool {
    let missing = std::process::Command::new("python3").arg("--version").output().is_err();
    if missing {
        opsloop_core::skip::skipped("python3 is not installed (.ci/run installs it)");
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_succeeds_a_failing_canary_rolls_back_and_an_unhealthy_release_takes_no_traffic() {
    if python_missing() {
        return;
    }
    let (deployer, front) = deployer(30, Duration::from_millis(1500), Duration::from_secs(4)).await;
    let v1 = deployer.start(&release("v1", &[])).await.unwrap();
    deployer.serve("web", &v1);
    let load = Load::start(front, 6);

    // 1. A good release, blue-green: no request fails, and v2 serves afterwards.
    let (serving, outcome, timeline) = deployer.deploy(v1, &release("v2", &[]), &Strategy::BlueGreen).await;
    assert_eq!(outcome, Outcome::Succeeded, "{timeline:?}");
    assert_eq!(ask(front).await, (200, "v2\n".to_owned()));
    assert_eq!(load.failed(), 0, "the switch lost no request ({} served)", load.served());

    // 2. A canary that fails 20% of its requests: rolled back within its first bake window.
    let (serving, outcome, timeline) = deployer
        .deploy(serving, &release("v3", &[("FAIL_PERCENT", "20")]), &Strategy::Canary { steps: vec![50, 100] })
        .await;
    let Outcome::RolledBack { reason } = outcome else { panic!("not rolled back: {outcome:?} {timeline:?}") };
    assert!(reason.contains("error rate"), "{reason}");
    assert!(timeline.iter().any(|s| s.text.starts_with("rolled back to v2")), "{timeline:?}");
    assert!(timeline.last().unwrap().at < Duration::from_secs(10), "{timeline:?}");
    assert_eq!(serving.version, "v2");
    let leaked = load.failed();
    for _ in 0..20 {
        assert_eq!(ask(front).await, (200, "v2\n".to_owned()));
    }

    // 3. A release whose health check fails never receives traffic.
    let (serving, outcome, _) =
        deployer.deploy(serving, &release("v4", &[("HEALTH", "fail")]), &Strategy::BlueGreen).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert_eq!(deployer.proxy.signals().of("web", "v4").snapshot().requests, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failed = load.failed();
    load.stop().await;
    assert_eq!(failed, leaked, "after the rollback no request failed");
    assert_eq!(ask(front).await, (200, "v2\n".to_owned()));
    for instance in serving.instances {
        instance.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_replaces_instances_without_a_failed_request_and_recreate_restarts() {
    if python_missing() {
        return;
    }
    let (deployer, front) = deployer(20, Duration::from_millis(700), Duration::from_secs(10)).await;
    let three = |version: &str, extra: &[(&str, &str)]| Release { replicas: 3, ..release(version, extra) };
    let v1 = deployer.start(&three("v1", &[])).await.unwrap();
    deployer.serve("web", &v1);
    let load = Load::start(front, 4);

    let (v2, outcome, timeline) = deployer.deploy(v1, &three("v2", &[]), &Strategy::Rolling { batch: 1 }).await;
    assert_eq!(outcome, Outcome::Succeeded, "{timeline:?}");
    assert_eq!(timeline.iter().filter(|s| s.text.contains(" instance(s) on v2")).count(), 3, "{timeline:?}");
    assert_eq!(load.failed(), 0, "rolling lost no request ({} served)", load.served());
    assert_eq!(v2.instances.len(), 3);
    assert_eq!(ask(front).await, (200, "v2\n".to_owned()));

    // A rolling step whose instance fails every request (under the same load) brings the old
    // version back at full strength.
    let (serving, outcome, timeline) =
        deployer.deploy(v2, &three("v3", &[("FAIL_PERCENT", "100")]), &Strategy::Rolling { batch: 1 }).await;
    assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?} {timeline:?}");
    load.stop().await;
    assert_eq!((serving.version.as_str(), serving.instances.len()), ("v2", 3));
    for _ in 0..10 {
        assert_eq!(ask(front).await, (200, "v2\n".to_owned()));
    }

    // Recreate: the old version stops, the new one starts and serves.
    let (v4, outcome, timeline) = deployer.deploy(serving, &three("v4", &[]), &Strategy::Recreate).await;
    assert_eq!(outcome, Outcome::Succeeded, "{timeline:?}");
    assert_eq!(ask(front).await, (200, "v4\n".to_owned()));
    for instance in v4.instances {
        instance.stop().await;
    }
}

/// Instances leaving a route answer what they were sent before they stop, however long it
/// takes (here every answer takes 800 ms, longer than any fixed grace would have been).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_finish_on_instances_that_leave_the_route() {
    if python_missing() {
        return;
    }
    let (mut deployer, front) = deployer(5, Duration::from_millis(300), Duration::from_secs(10)).await;
    deployer.slo.max_p99 = Duration::from_secs(5);
    let slow = |version: &str| Release { replicas: 2, ..release(version, &[("SLOW_MS", "800")]) };
    let v1 = deployer.start(&slow("v1")).await.unwrap();
    deployer.serve("web", &v1);
    let load = Load::start(front, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (v2, outcome, timeline) = deployer.deploy(v1, &slow("v2"), &Strategy::Rolling { batch: 1 }).await;
    assert_eq!(outcome, Outcome::Succeeded, "{timeline:?}");
    let (v3, outcome, timeline) = deployer.deploy(v2, &slow("v3"), &Strategy::Recreate).await;
    assert_eq!(outcome, Outcome::Succeeded, "{timeline:?}");
    // Recreate has a gap with no instance at all (503s by design); what went out before it
    // was answered. Count only failures of another kind: none of the 800 ms requests broke.
    let served = load.served();
    load.stop().await;
    assert!(served > 0);
    let broken = deployer.proxy.signals().snapshots().iter().map(|(_, _, s)| s.errors).sum::<u64>();
    assert_eq!(broken, 0, "no request to a leaving instance failed: {timeline:?}");
    for instance in v3.instances {
        instance.stop().await;
    }
}

/// Downloads still streaming from a release that is rolled back pass whole: its instances are
/// drained, counted until each answer's body has ended, before they stop (a failing release's
/// answers are answers someone waits for). The in-flight gauge counts the streams meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_lets_downloads_from_the_bad_release_finish() {
    if python_missing() {
        return;
    }
    let (deployer, front) = deployer(60, Duration::from_secs(3), Duration::from_secs(10)).await;
    let v1 = deployer.start(&release("v1", &[])).await.unwrap();
    deployer.serve("web", &v1);
    let load = Load::start(front, 1);
    let running = Arc::new(AtomicBool::new(true));
    let (whole, cut, from_bad) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let starter = {
        let (running, whole, cut, from_bad) = (running.clone(), whole.clone(), cut.clone(), from_bad.clone());
        tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut downloads = Vec::new();
            // A new download every 10 ms, so several start while the bad release takes traffic.
            while running.load(Ordering::Relaxed) {
                let (client, whole, cut, from_bad) = (client.clone(), whole.clone(), cut.clone(), from_bad.clone());
                downloads.push(tokio::spawn(async move {
                    let Ok(response) = client.get(format!("http://{front}/stream").parse().unwrap()).await else {
                        cut.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let bad = response.headers().get("x-version").is_some_and(|v| v == "v2");
                    let length = response.into_body().collect().await.map(|body| body.to_bytes().len());
                    if length.is_ok_and(|length| length == 32 * 1024) {
                        whole.fetch_add(1, Ordering::Relaxed);
                    } else {
                        cut.fetch_add(1, Ordering::Relaxed);
                    }
                    if bad {
                        from_bad.fetch_add(1, Ordering::Relaxed);
                    }
                }));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for download in downloads {
                download.await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let streaming = deployer.proxy.signals().of("web", "v1").snapshot().in_flight;
    assert!(streaming > 0, "downloads in progress count in flight until their bodies end");
    let (serving, outcome, timeline) =
        deployer.deploy(v1, &release("v2", &[("FAIL_PERCENT", "100")]), &Strategy::BlueGreen).await;
    assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?} {timeline:?}");
    running.store(false, Ordering::Relaxed);
    starter.await.unwrap();
    load.stop().await;
    let (whole, cut, from_bad) =
        (whole.load(Ordering::Relaxed), cut.load(Ordering::Relaxed), from_bad.load(Ordering::Relaxed));
    assert!(from_bad > 0, "some downloads went to the bad release ({whole} whole): {timeline:?}");
    assert_eq!(cut, 0, "no download was cut ({whole} whole, {from_bad} from the bad release): {timeline:?}");
    for instance in serving.instances {
        instance.stop().await;
    }
}
