//! The supervisor with real processes: health, restarts, crash loops, graceful stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsloop_deploy::supervisor::{HealthCheck, Instance, InstanceSpec, InstanceState, LogSink, free_port};

fn spec(dir: &std::path::Path, command: &[&str], health: HealthCheck) -> InstanceSpec {
    InstanceSpec {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        name: "web@v1#1".into(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        env: vec![("GREETING".into(), "hello".into())],
        dir: dir.to_owned(),
        port: free_port().unwrap(),
        health,
        stop_grace: Duration::from_millis(500),
        max_restarts: 3,
        crash_window: Duration::from_secs(60),
    }
}

fn collect() -> (LogSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    (Arc::new(move |_name: &str, line: &str| sink.lock().unwrap().push(line.to_owned())), lines)
}

#[tokio::test]
async fn an_instance_that_fails_once_is_restarted_and_becomes_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let script = "if [ -f started-once ]; then exec python3 -m http.server $PORT --bind 127.0.0.1; else touch started-once; echo first start fails; exit 1; fi";
    let http = HealthCheck::Http { path: "/".into(), status: 200 };
    let (log, lines) = collect();
    let instance = Instance::start(spec(dir.path(), &["bash", "-c", script], http), log);
    instance.wait_healthy(Duration::from_secs(20)).await.unwrap();
    assert!(matches!(instance.state(), InstanceState::Running { restarts: 1, .. }), "{:?}", instance.state());
    assert!(lines.lock().unwrap().iter().any(|l| l == "first start fails"));
    let port = instance.spec.port;
    instance.stop().await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens after the stop");
}

#[tokio::test]
async fn an_instance_that_keeps_dying_ends_in_a_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (log, lines) = collect();
    let instance = Instance::start(
        spec(dir.path(), &["bash", "-c", "echo up as $GREETING on $PORT; exit 3"], HealthCheck::Tcp),
        log,
    );
    let error = instance.wait_healthy(Duration::from_secs(20)).await.unwrap_err();
    assert!(error.contains("crash-loops"), "{error}");
    assert_eq!(instance.state(), InstanceState::CrashLoop { restarts: 3, last_exit: Some(3) });
    let started = lines.lock().unwrap().iter().filter(|l| l.starts_with("up as hello on ")).count();
    assert_eq!(started, 4, "the first start and 3 restarts");
    instance.stop().await;
}

#[tokio::test]
async fn a_stop_is_graceful_and_then_firm() {
    let dir = tempfile::tempdir().unwrap();
    let (log, lines) = collect();
    let polite = "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.05; done";
    let instance = Instance::start(spec(dir.path(), &["bash", "-c", polite], HealthCheck::Tcp), log.clone());
    while !lines.lock().unwrap().iter().any(|l| l == "ready") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    instance.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(lines.lock().unwrap().iter().any(|l| l == "bye"), "{:?}", lines.lock().unwrap());

    let stubborn = "trap '' TERM; echo stubborn; while true; do sleep 0.05; done";
    let instance = Instance::start(spec(dir.path(), &["bash", "-c", stubborn], HealthCheck::Tcp), log);
    while !lines.lock().unwrap().iter().any(|l| l == "stubborn") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let began = std::time::Instant::now();
    instance.stop().await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert!(lines.lock().unwrap().iter().any(|l| l.contains("after SIGTERM; killed")), "{:?}", lines.lock().unwrap());
}
