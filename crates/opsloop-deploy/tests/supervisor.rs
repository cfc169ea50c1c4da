//! The supervisor with real processes: health, restarts, crash loops, graceful stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsloop_deploy::supervisor::{
    HealthCheck, HealthError, Instance, InstanceSpec, InstanceState, LogSink, Probing, free_port,
};

fn spec(dir: &std::path::Path, command: &[&str], health: HealthCheck) -> InstanceSpec {
    InstanceSpec {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        name: "web@v1#1".into(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        env: vec![("GREETING".into(), "hello".into())],
        dir: dir.to_owned(),
        port: free_port().unwrap(),
        readiness: Probing::default_for(&health),
        health,
        stop_grace: Duration::from_millis(500),
        max_restarts: 3,
        crash_window: Duration::from_secs(60),
        memory_limit: None,
        liveness: None,
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
    assert!(matches!(error, HealthError::CrashLoop { restarts: 3, last_exit: Some(3), .. }), "{error:?}");
    assert!(error.to_string().contains("crash-loops"), "{error}");
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

/// A memory limit holds: an instance that allocates past it is killed (and, doing so on
/// every start, crash-loops), while one that stays within it runs on.
#[tokio::test]
async fn a_memory_limit_kills_an_instance_that_goes_past_it() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        opsloop_core::skip::skipped("python3 is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let allocate = |mib: u32| {
        format!("import time; x = bytearray({mib} * 1024 * 1024); print('holding', len(x), flush=True); time.sleep(60)")
    };
    let mut greedy = spec(dir.path(), &["python3", "-c", &allocate(200)], HealthCheck::Tcp);
    greedy.memory_limit = Some(64 << 20);
    greedy.max_restarts = 1;
    let (log, lines) = collect();
    let instance = Instance::start(greedy, log);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !matches!(instance.state(), InstanceState::CrashLoop { .. }) {
        assert!(std::time::Instant::now() < deadline, "not stopped by its limit: {:?}", lines.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let said = lines.lock().unwrap().join("\n");
    assert!(!said.contains("holding"), "it never got its 200 MiB: {said}");
    if said.contains("not enforced") {
        eprintln!("skipped: no way to limit memory here: {said}");
        return;
    }

    let mut modest = spec(dir.path(), &["python3", "-c", &allocate(8)], HealthCheck::Tcp);
    modest.memory_limit = Some(64 << 20);
    let (log, lines) = collect();
    let instance = Instance::start(modest, log);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lines.lock().unwrap().iter().any(|l| l.starts_with("holding")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", lines.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(instance.state(), InstanceState::Running { .. }));
    instance.stop().await;
}

/// A liveness check that starts failing gets the instance killed and started again.
#[tokio::test]
async fn a_failing_liveness_check_restarts_the_instance() {
    let dir = tempfile::tempdir().unwrap();
    // Alive while the file exists.
    let alive = dir.path().join("alive");
    std::fs::write(&alive, "").unwrap();
    let mut watched = spec(dir.path(), &["sleep", "60"], HealthCheck::Tcp);
    watched.liveness = Some(opsloop_deploy::supervisor::Liveness {
        check: HealthCheck::Command(format!("test -e {}", alive.display())),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        failures: 2,
    });
    let (log, lines) = collect();
    let instance = Instance::start(watched, log);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(instance.state(), InstanceState::Running { restarts: 0, .. }), "{:?}", instance.state());
    std::fs::remove_file(&alive).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lines.lock().unwrap().iter().any(|l| l.contains("liveness")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", lines.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&alive, "").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(instance.state(), InstanceState::Running { restarts: 1.., .. }) {
        assert!(std::time::Instant::now() < deadline, "{:?}", instance.state());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    instance.stop().await;
}

/// A check that gets no answer fails once its timeout passes (here 200 ms), not later.
#[tokio::test]
async fn a_check_without_an_answer_fails_at_its_timeout() {
    // Connections are taken into the backlog and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let http = HealthCheck::Http { path: "/health".into(), status: 200 };
    let began = std::time::Instant::now();
    let host = std::net::Ipv4Addr::LOCALHOST.into();
    assert!(!opsloop_deploy::supervisor::check(&http, host, port, Duration::from_millis(200)).await);
    let waited = began.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(1), "{waited:?}");
    assert!(opsloop_deploy::supervisor::check(&HealthCheck::Tcp, host, port, Duration::from_millis(200)).await);
}
