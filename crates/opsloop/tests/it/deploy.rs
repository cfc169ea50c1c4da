//! Deployments through the real server and its CLI: `opsloop deploy … --wait` against a
//! project whose `opsloop.yml` runs the example service, with clients requesting through the
//! server's proxy the whole time; a bad canary rolled back, an unhealthy release that never
//! takes traffic, a rollback to the warm old version, guards (protected, frozen), and a
//! `kill -9` of opsloop in the middle of a deployment.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::harness::{Server, call_json, commit_all, opsloop_client, text};

const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/service/server.py");

fn python_missing() -> bool {
    let missing = std::process::Command::new("python3").arg("--version").output().is_err();
    if missing {
        opsloop_core::skip::skipped("python3 is not installed (.ci/run installs it)");
    }
    missing
}

fn manifest(version: &str, extra_env: &str, bake: &str) -> String {
    format!(
        "\
services:
  web:
    command: [python3, server.py]
    env: {{VERSION: {version}{extra_env}}}
    health: {{http: /health, start_timeout: 5s}}
    slo: {{max_error_rate: 5%, max_p99: 2s, bake: {bake}}}
    keep_warm: 5m
    concurrency: 16
environments:
  production: {{tier: production, protected: true}}
  staging: {{tier: staging}}
  guarded: {{tier: production, approvals: 1}}
  frozen:
    freeze: [{{from: '2020-01-01T00:00:00Z', to: '2099-01-01T00:00:00Z'}}]
routes:
  - {{path: /, service: web, environment: production}}
  - {{host: staging.test, path: /, service: web, environment: staging}}
"
    )
}

/// A repository holding the example service and an `opsloop.yml`, registered as `shop`.
fn shop(server: &Server, token: &str, root: &Path) -> std::path::PathBuf {
    let repo = root.join("shop");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(SERVICE, repo.join("server.py")).unwrap();
    std::fs::write(repo.join("opsloop.yml"), manifest("v1", "", "1s")).unwrap();
    let init = std::process::Command::new("git").args(["init", "-q", "-b", "main"]).current_dir(&repo).status();
    assert!(init.unwrap().success());
    commit_all(&repo, "v1");
    let created = opsloop_client(server, token, &["project", "create", "shop", "--repo", repo.to_str().unwrap()]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    repo
}

/// Clients requesting through the proxy until stopped: answers by status, and socket errors.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    bad: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, clients: usize) -> Load {
        Load::start_for(url, None, clients)
    }

    /// Clients asking for `host` (the proxy routes by it).
    fn start_for(url: &str, host: Option<&str>, clients: usize) -> Load {
        let host = host.map(str::to_owned);
        let (stop, ok, bad) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (url, flags) = (url.to_owned(), (stop.clone(), ok.clone(), bad.clone()));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let client = Server::client();
                let mut tasks = Vec::new();
                for _ in 0..clients {
                    let (client, url, (stop, ok, bad)) = (client.clone(), url.clone(), flags.clone());
                    let host = host.clone();
                    tasks.push(tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let mut request = client.get(&url);
                            if let Some(host) = &host {
                                request = request.header("host", host);
                            }
                            match request.send().await {
                                Ok(response) if response.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                                _ => bad.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    }));
                }
                for task in tasks {
                    let _ = task.await;
                }
            });
        });
        Load { stop, ok, bad, thread: Some(thread) }
    }

    fn bad(&self) -> u64 {
        self.bad.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        (self.ok.load(Ordering::Relaxed), self.bad.load(Ordering::Relaxed))
    }
}

fn get(url: &str, host: Option<&str>) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut request = Server::client().get(url);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        match request.send().await {
            Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    })
}

fn deploy(server: &Server, token: &str, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["deploy", "web", "--project", "shop", "--wait", "--json"];
    all.extend_from_slice(args);
    let output = opsloop_client(server, token, &all);
    let detail = serde_json::from_slice(&output.stdout).unwrap_or_default();
    (output.status.code(), detail, text(&output.stderr))
}

/// Kills what a test server left running under its data directory when dropped after it (a
/// `kill -9` leaves the instances to the next start, which a test may never make).
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        opsloop_runner::reap::kill_marked("OPSLOOP_RELEASE_DIR", &self.0.join("releases"));
    }
}

/// A server on a fresh data directory with the `shop` project registered; what it deploys is
/// reaped when the fixture goes (after the server).
struct Fixture {
    server: Server,
    token: String,
    repo: std::path::PathBuf,
    data: std::path::PathBuf,
    _reaper: Reaper,
    _root: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let reaper = Reaper(data.clone());
        let server = Server::start_in(&data, &[]);
        let token = server.token("admin");
        let repo = shop(&server, &token, root.path());
        Fixture { server, token, repo, data, _reaper: reaper, _root: root }
    }
}

#[test]
fn deploy_roll_back_and_guard_through_the_cli_under_load() {
    if python_missing() {
        return;
    }
    let Fixture { server, token, repo, .. } = &Fixture::start();
    let (server, token) = (server, token.as_str());
    let front = format!("{}/", server.proxy_url);

    // The first release.
    let (code, first, stderr) = deploy(server, token, &["--env", "production"]);
    assert_eq!(code, Some(0), "{first}\n{stderr}");
    assert_eq!(first["status"], "success");
    assert_eq!(first["version"].as_str().unwrap().len(), 12, "a short commit: {first}");
    assert_eq!(get(&front, None), (200, "v1\n".to_owned()));

    // v2 blue-green while clients keep asking: not one request fails.
    std::fs::write(repo.join("opsloop.yml"), manifest("v2", "", "1s")).unwrap();
    commit_all(repo, "v2");
    let load = Load::start(&front, 4);
    let (code, second, stderr) = deploy(server, token, &["--env", "production"]);
    assert_eq!(code, Some(0), "{second}\n{stderr}");
    assert_eq!(get(&front, None), (200, "v2\n".to_owned()));
    assert_eq!(load.bad(), 0, "the switch lost no request");
    let steps: Vec<&str> = second["steps"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap()).collect();
    assert!(steps.iter().any(|s| s.contains("kept warm")), "{steps:?}");
    assert!(second["figures"].as_array().unwrap().len() == 2, "old and new version's figures: {second}");

    // v3 fails 20% of its requests: the canary is rolled back inside its bake window.
    std::fs::write(repo.join("opsloop.yml"), manifest("v3", ", FAIL_PERCENT: 20", "3s")).unwrap();
    commit_all(repo, "v3 (bad)");
    let (code, third, stderr) = deploy(server, token, &["--env", "production", "--strategy", "canary:50,100"]);
    assert_eq!(code, Some(1), "a rollback exits 1: {third}\n{stderr}");
    assert_eq!(third["status"], "rolled_back");
    assert!(third["reason"].as_str().unwrap().contains("error rate"), "{third}");
    assert_eq!(get(&front, None), (200, "v2\n".to_owned()));
    let leaked = load.bad();

    // v4's health check fails: it never takes traffic.
    std::fs::write(repo.join("opsloop.yml"), manifest("v4", ", HEALTH: fail", "1s")).unwrap();
    commit_all(repo, "v4 (unhealthy)");
    let started = Instant::now();
    let (code, fourth, _) = deploy(server, token, &["--env", "production"]);
    assert_eq!((code, fourth["status"].as_str()), (Some(1), Some("failed")), "{fourth}");
    assert!(started.elapsed() < Duration::from_secs(90));
    assert_eq!(load.bad(), leaked, "nothing failed after the rollback, and v4 took no traffic");

    // Roll back to the release before v2: v1, still warm, so a switch.
    let output = opsloop_client(
        server,
        token,
        &["rollback", "web", "--env", "production", "--project", "shop", "--wait", "--json"],
    );
    let rolled: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(output.status.code(), Some(0), "{rolled}\n{}", text(&output.stderr));
    assert_eq!(rolled["version"], first["version"]);
    let steps = rolled["steps"].to_string();
    assert!(steps.contains("still running (kept warm)"), "{steps}");
    assert_eq!(get(&front, None), (200, "v1\n".to_owned()));
    let (served, bad) = load.stop();
    assert_eq!(bad, leaked, "the rollback lost no request ({served} served)");

    // History, newest first, as a script reads it.
    let output =
        opsloop_client(server, token, &["deployments", "web", "--env", "production", "--project", "shop", "--json"]);
    let history: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let statuses: Vec<&str> = history.iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["success", "failed", "rolled_back", "success", "success"]);
    assert!(history[0]["triggered_by"].as_str().unwrap().ends_with("(rollback)"));

    // What changed from the first release to the second: the commit, and the VERSION setting.
    let (status, compared) = call_json(
        Method::GET,
        &format!("{}/api/v1/projects/shop/compare?from={}&to={}", server.url, first["id"], second["id"]),
        token,
        None,
    );
    assert_eq!(status, 200, "{compared}");
    assert!(compared["commits"].to_string().contains(" v2"), "{compared}");
    let version = compared["changes"].as_array().unwrap().iter().find(|c| c["field"] == "env.VERSION").cloned();
    let version = version.unwrap_or_else(|| panic!("a structured env.VERSION change: {compared}"));
    assert!(version["before"].is_string() && version["after"].is_string() && version["before"] != version["after"]);

    // What runs where, and the golden signals on /metrics.
    let (status, environments) =
        call_json(Method::GET, &format!("{}/api/v1/projects/shop/environments", server.url), token, None);
    assert_eq!(status, 200);
    assert_eq!(environments[0]["version"], first["version"], "{environments}");
    assert_eq!((environments[0]["healthy"].as_u64(), environments[0]["instances"].as_u64()), (Some(1), Some(1)));
    let metrics = get(&format!("{}/metrics", server.url), None).1;
    assert!(metrics.contains("opsloop_proxy_requests_total{service=\"shop/production/web\""), "{metrics}");
    assert!(metrics.contains("opsloop_proxy_saturation{service=\"shop/production/web\""), "{metrics}");

    // Another environment on another host, on the same proxy.
    let v2_commit = second["commit"].as_str().unwrap().to_owned();
    let (code, staged, _) = deploy(server, token, &["--env", "staging", "--version", &v2_commit]);
    assert_eq!(code, Some(0), "{staged}");
    assert_eq!(get(&front, Some("staging.test")), (200, "v2\n".to_owned()));
    assert_eq!(get(&front, None), (200, "v1\n".to_owned()), "production is untouched");

    // Guards: a developer may not deploy to the protected environment; nobody in a freeze.
    let developer = server.token("developer");
    let (status, body) = call_json(
        Method::POST,
        &format!("{}/api/v1/projects/shop/deployments", server.url),
        &developer,
        Some(serde_json::json!({"service": "web", "environment": "production"})),
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = call_json(
        Method::POST,
        &format!("{}/api/v1/projects/shop/deployments", server.url),
        token,
        Some(serde_json::json!({"service": "web", "environment": "frozen"})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("freeze"), "{body}");
    let (status, body) = call_json(
        Method::POST,
        &format!("{}/api/v1/projects/shop/deployments", server.url),
        token,
        Some(serde_json::json!({"service": "nope", "environment": "production"})),
    );
    assert_eq!(status, 422, "{body}");
}

/// The processes of deployed instances under `data_dir` whose release directory contains
/// `needle` (a commit).
fn instance_pids(data_dir: &Path, needle: &str) -> Vec<i32> {
    let marker = format!("OPSLOOP_RELEASE_DIR={}/", data_dir.join("releases").display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let found = environ.split(|b| *b == 0).any(|v| {
            let v = String::from_utf8_lossy(v);
            v.starts_with(&marker) && v.contains(needle)
        });
        if found {
            pids.push(pid);
        }
    }
    pids
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    wait_for_showing(what, limit, &mut done, String::new);
}

fn wait_for_showing(what: &str, limit: Duration, done: &mut impl FnMut() -> bool, show: impl Fn() -> String) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}: {}", show());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_crashed_instance_restarts_and_a_kill_9_mid_deployment_leaves_the_old_release_serving() {
    if python_missing() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _reaper = Reaper(data.clone());
    let mut server = Server::start_in(&data, &[]);
    let token = server.token("admin");
    let repo = shop(&server, &token, root.path());
    let (code, first, _) = deploy(&server, &token, &["--env", "production"]);
    assert_eq!(code, Some(0), "{first}");
    let v1 = first["commit"].as_str().unwrap().to_owned();

    // An instance dies: its supervisor starts it again, and it serves again.
    let pids = instance_pids(&data, &v1);
    assert_eq!(pids.len(), 1, "one instance of v1: {pids:?}");
    let _ = std::process::Command::new("kill").args(["-9", &pids[0].to_string()]).status();
    let front = format!("{}/", server.proxy_url);
    wait_for("v1 serving again after its crash", Duration::from_secs(10), || {
        get(&front, None) == (200, "v1\n".to_owned()) && instance_pids(&data, &v1).first() != Some(&pids[0])
    });

    // v2 bakes for a long time; opsloop is killed while v2 takes all the traffic.
    std::fs::write(repo.join("opsloop.yml"), manifest("v2", "", "60s")).unwrap();
    commit_all(&repo, "v2");
    let output =
        opsloop_client(&server, &token, &["deploy", "web", "--env", "production", "--project", "shop", "--json"]);
    let queued: Value = serde_json::from_slice(&output.stdout).unwrap();
    let id = queued["id"].as_i64().unwrap();
    let show = |server: &Server| {
        call_json(Method::GET, &format!("{}/api/v1/projects/shop/deployments/{id}", server.url), &token, None).1
    };
    wait_for_showing(
        "v2 taking the traffic",
        Duration::from_secs(20),
        &mut || show(&server)["steps"].to_string().contains("100% of traffic"),
        || show(&server).to_string(),
    );
    assert_eq!(get(&front, None), (200, "v2\n".to_owned()));
    let v2 = show(&server)["commit"].as_str().unwrap().to_owned();
    server.kill_hard();

    // Instances die with the server that supervised them, kill -9 or not: nothing serves
    // unmanaged until a next start that may never come.
    wait_for("the instances to go with the killed server", Duration::from_secs(5), || {
        instance_pids(&data, &v1).is_empty() && instance_pids(&data, &v2).is_empty()
    });

    // The next start: the deployment failed as interrupted, v1 serves again.
    let server = Server::start_in(&data, &[]);
    let deployment = show(&server);
    assert_eq!(deployment["status"], "failed", "{deployment}");
    assert!(deployment["reason"].as_str().unwrap().contains("interrupted"), "{deployment}");
    let front = format!("{}/", server.proxy_url);
    wait_for("v1 serving after the restart", Duration::from_secs(30), || get(&front, None) == (200, "v1\n".to_owned()));
    assert!(instance_pids(&data, &v2).is_empty(), "v2's instance was stopped at the restart");
    assert_eq!(instance_pids(&data, &v1).len(), 1, "exactly one v1 instance, started again");
    let (_, environments) =
        call_json(Method::GET, &format!("{}/api/v1/projects/shop/environments", server.url), &token, None);
    assert_eq!(environments[0]["commit"].as_str(), Some(v1.as_str()), "{environments}");
}

#[test]
fn gitops_plans_and_applies_the_default_branchs_manifest() {
    if python_missing() {
        return;
    }
    let Fixture { server, token, repo, .. } = &Fixture::start();
    let (server, token) = (server, token.as_str());
    let env = |args: &[&str]| {
        let mut all = vec!["environments"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--project", "shop"]);
        let output = opsloop_client(server, token, &all);
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };

    // First: everything is to be created.
    let plan = env(&["plan"]);
    assert!(plan.contains("+ service web") && plan.contains("+ environment production"), "{plan}");
    assert!(plan.contains("0 to remove"), "{plan}");
    let applied = env(&["apply"]);
    assert!(applied.starts_with('+') || applied.contains("Applied"), "{applied}");
    assert!(env(&["plan"]).contains("No changes"));

    let (code, staged, _) = deploy(server, token, &["--env", "staging"]);
    assert_eq!(code, Some(0), "{staged}");
    let (code, produced, _) = deploy(server, token, &["--env", "production"]);
    assert_eq!(code, Some(0), "{produced}");
    let front = format!("{}/", server.proxy_url);
    assert_eq!(get(&front, Some("staging.test")), (200, "v1\n".to_owned()));

    // The default branch changes: staging moves to another host, the service's env changes,
    // and the `frozen` environment goes away.
    let manifest = manifest("v2", "", "1s")
        .replace("host: staging.test", "host: staging.example")
        .replace("  frozen:\n    freeze: [{from: '2020-01-01T00:00:00Z', to: '2099-01-01T00:00:00Z'}]\n", "");
    std::fs::write(repo.join("opsloop.yml"), manifest).unwrap();
    commit_all(repo, "v2, staging elsewhere");
    let plan = env(&["plan", "--json"]);
    let plan: Value = serde_json::from_str(&plan).unwrap();
    let changes: Vec<(String, String, String)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().into(),
                c["name"].as_str().unwrap().into(),
                c["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(changes.contains(&("service".into(), "web".into(), "change".into())), "{changes:?}");
    let web = plan["changes"].as_array().unwrap().iter().find(|c| c["kind"] == "service" && c["name"] == "web");
    let detail = web.map(|c| c["detail"].as_str().unwrap_or_default().to_owned()).unwrap_or_default();
    assert!(detail.contains("env.VERSION: ") && !detail.contains("[["), "people read the fields: {detail}");
    assert!(changes.contains(&("route".into(), "web@staging".into(), "change".into())), "{changes:?}");
    assert!(changes.contains(&("environment".into(), "frozen".into(), "remove".into())), "{changes:?}");

    let applied = env(&["apply"]);
    assert!(applied.contains("staging: deployment #"), "staging (unprotected) is redeployed: {applied}");
    assert!(applied.contains("production: protected"), "production waits for a maintainer: {applied}");
    // The route moved at once; the redeploy brings v2 to staging.
    assert_eq!(get(&front, Some("staging.example")).0, 200);
    wait_for("staging on v2", Duration::from_secs(30), || {
        get(&front, Some("staging.example")) == (200, "v2\n".to_owned())
    });
    assert_eq!(get(&front, None), (200, "v1\n".to_owned()), "production is untouched");
    // The old host has no route of its own any more: production's catch-all answers it.
    assert_eq!(get(&front, Some("staging.test")), (200, "v1\n".to_owned()));
    let history =
        opsloop_client(server, token, &["deployments", "web", "--env", "staging", "--project", "shop", "--json"]);
    let history: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert!(history[0]["triggered_by"].as_str().unwrap().starts_with("gitops"), "{history:?}");
}

#[test]
fn a_deployment_to_an_environment_with_approvals_waits_for_someone_else() {
    if python_missing() {
        return;
    }
    let Fixture { server, token, data, .. } = &Fixture::start();
    let (server, token) = (server, token.as_str());
    let output = opsloop_client(server, token, &["deploy", "web", "--env", "guarded", "--project", "shop", "--json"]);
    let queued: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(queued["status"], "waiting_approval", "{queued}");
    let id = queued["id"].to_string();

    // The requester cannot approve it; another member can, and then it runs.
    let own = opsloop_client(server, token, &["approve", &id, "--project", "shop"]);
    assert!(!own.status.success() && text(&own.stderr).contains("someone other"), "{}", text(&own.stderr));
    let data_dir = data.to_str().unwrap();
    let created = crate::harness::opsloop(&["admin", "user", "create", "dana", "--data-dir", data_dir]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let member = opsloop_client(server, token, &["project", "member", "add", "shop", "dana", "--role", "developer"]);
    assert!(member.status.success(), "{}", text(&member.stderr));
    let dana = crate::harness::opsloop(&[
        "admin",
        "token",
        "create",
        "--name",
        "dana",
        "--role",
        "developer",
        "--user",
        "dana",
        "--data-dir",
        data_dir,
    ]);
    let dana = text(&dana.stdout).trim().to_owned();
    let approved = opsloop_client(server, &dana, &["approve", &id, "--project", "shop", "--json"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    let show =
        || call_json(Method::GET, &format!("{}/api/v1/projects/shop/deployments/{id}", server.url), token, None).1;
    wait_for("the approved deployment to succeed", Duration::from_secs(30), || show()["status"] == "success");
    let again = opsloop_client(server, &dana, &["approve", &id, "--project", "shop"]);
    assert!(text(&again.stderr).contains("not waiting"), "{}", text(&again.stderr));
}

/// A real OpenSSH server on 127.0.0.1, started for the test, that lets in the test's key.
struct Sshd {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    fn start_or_skip() -> Option<Sshd> {
        if !Path::new("/usr/sbin/sshd").exists() {
            assert!(std::env::var_os("CI").is_none(), "CI installs openssh-server, so sshd must be there");
            eprintln!("skipped: /usr/sbin/sshd is missing (apt-get install openssh-server)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let keygen = |file: &str| {
            let status = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.path().join(file))
                .status()
                .unwrap();
            assert!(status.success());
        };
        keygen("host_key");
        keygen("client_key");
        std::fs::copy(dir.path().join("client_key.pub"), dir.path().join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let user = text(&std::process::Command::new("id").arg("-un").output().unwrap().stdout).trim().to_owned();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("sshd listening", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(Sshd { child, port, dir })
    }

    fn user(&self) -> String {
        text(&std::process::Command::new("id").arg("-un").output().unwrap().stdout).trim().to_owned()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_service_deploys_to_an_ssh_host_and_switches_there_blue_green() {
    if python_missing() {
        return;
    }
    let Some(sshd) = Sshd::start_or_skip() else { return };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _reaper = Reaper(data.clone());
    let config = root.path().join("opsloop.toml");
    std::fs::write(
        &config,
        format!(
            "[deploy]\nssh_identity = \"{dir}/client_key\"\nssh_known_hosts = \"{dir}/known_hosts\"\n",
            dir = sshd.dir.path().display()
        ),
    )
    .unwrap();
    let mut server = Server::start_in(&data, &["--config", config.to_str().unwrap()]);
    let token = server.token("admin");
    let repo = shop(&server, &token, root.path());
    let with_remote = |version: &str| {
        // Over ssh a start copies the release first: on a loaded 2-core machine (the whole
        // suite at once) that alone took 5 s, so the start gets longer here.
        manifest(version, "", "1s")
            .replace("start_timeout: 5s", "start_timeout: 30s")
            .replace("keep_warm: 5m", "keep_warm: 0s\n    memory: 512M")
            .replace(
                "environments:\n",
                &format!(
                    "environments:\n  remote: {{tier: staging, targets: ['ssh://{}@127.0.0.1:{}']}}\n",
                    sshd.user(),
                    sshd.port
                ),
            )
            + "  - {host: remote.test, path: /, service: web, environment: remote}\n"
    };
    std::fs::write(repo.join("opsloop.yml"), with_remote("v1")).unwrap();
    commit_all(&repo, "v1 on a remote host");

    let (code, first, stderr) = deploy(&server, &token, &["--env", "remote"]);
    assert_eq!(code, Some(0), "{first}\n{stderr}");
    let front = format!("{}/", server.proxy_url);
    assert_eq!(get(&front, Some("remote.test")), (200, "v1\n".to_owned()));
    // The instance runs under sshd (its parent is a session of it), not under opsloop.
    let v1 = first["commit"].as_str().unwrap().to_owned();
    let remote_pids = instance_pids(&data, &v1)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| !c.starts_with("ssh") && c.contains("server.py"))
        })
        .collect::<Vec<_>>();
    let all: Vec<String> = instance_pids(&data, &v1)
        .iter()
        .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " "))
        .collect();
    assert_eq!(remote_pids.len(), 1, "one python instance: {remote_pids:?} of {all:?}");
    let parent = std::fs::read_to_string(format!("/proc/{}/stat", remote_pids[0])).unwrap();
    let ppid = parent.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().to_owned();
    let parent_name = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
    assert!(
        parent_name.starts_with("sshd") || parent_name.starts_with("bash") || parent_name.starts_with("sh"),
        "the instance's parent is {parent_name:?}"
    );
    // `memory: 512M` reaches the remote process as its address-space limit.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", remote_pids[0])).unwrap();
    let address_space = limits.lines().find(|l| l.starts_with("Max address space")).unwrap_or_default();
    assert!(address_space.split_whitespace().any(|n| n == "536870912"), "{address_space}");

    // v2 over SSH, blue-green, under load: nothing fails, and v1's remote process goes.
    std::fs::write(repo.join("opsloop.yml"), with_remote("v2")).unwrap();
    commit_all(&repo, "v2 on a remote host");
    let load = Load::start_for(&front, Some("remote.test"), 2);
    let (code, second, stderr) = deploy(&server, &token, &["--env", "remote", "--strategy", "blue-green"]);
    assert_eq!(code, Some(0), "{second}\n{stderr}");
    assert_eq!(get(&front, Some("remote.test")).1, "v2\n");
    let (_, bad) = load.stop();
    assert_eq!(bad, 0, "the switch over SSH lost no request");
    wait_for("v1's remote instance gone", Duration::from_secs(15), || {
        remote_pids.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    // A kill -9 of the server takes the remote instance with it: the reaper ends the local
    // ssh client, and the remote pseudo-terminal's hang-up ends the process there.
    let v2 = second["commit"].as_str().unwrap().to_owned();
    assert!(!instance_pids(&data, &v2).is_empty(), "v2 runs over ssh");
    server.kill_hard();
    wait_for("v2's remote instance gone with the server", Duration::from_secs(15), || {
        instance_pids(&data, &v2).is_empty()
    });
    // The releases copied to the "remote" host (this machine's home directory) go too.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let copied = Path::new(&home).join(".opsloop/releases");
    for commit in [&v1, second["commit"].as_str().unwrap()] {
        for entry in std::fs::read_dir(&copied).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&format!("shop-remote-web-{}", &commit[..12])) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[test]
fn a_route_taken_by_another_project_is_refused() {
    if python_missing() {
        return;
    }
    let Fixture { server, token, repo, .. } = &Fixture::start();
    let (server, token) = (server, token.as_str());
    let (code, first, _) = deploy(server, token, &["--env", "production"]);
    assert_eq!(code, Some(0), "{first}");
    // Another project with the same opsloop.yml wants the same host and path.
    let created = opsloop_client(server, token, &["project", "create", "copycat", "--repo", repo.to_str().unwrap()]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let output = opsloop_client(
        server,
        token,
        &["deploy", "web", "--env", "production", "--project", "copycat", "--wait", "--json"],
    );
    let refused: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(output.status.code(), Some(1), "{refused}");
    assert!(
        refused["reason"].as_str().unwrap_or_default().contains("already the route of shop/production/web"),
        "{refused}"
    );
    assert_eq!(get(&format!("{}/", server.proxy_url), None), (200, "v1\n".to_owned()), "shop still serves");
}

#[test]
fn a_release_runs_what_its_pipeline_built() {
    if python_missing() {
        return;
    }
    let Fixture { server, token, repo, .. } = &Fixture::start();
    let (server, token) = (server, token.as_str());
    std::fs::write(
        repo.join(".gitlab-ci.yml"),
        "build:\n  script: [mkdir -p dist, cp server.py dist/server.py]\n  artifacts:\n    paths: [dist/]\n",
    )
    .unwrap();
    let built = manifest("built", "", "1s").replace(
        "    command: [python3, server.py]\n",
        "    command: [python3, dist/server.py]\n    artifact: build\n",
    );
    std::fs::write(repo.join("opsloop.yml"), built).unwrap();
    commit_all(repo, "deploy what the pipeline builds");

    // Before its pipeline ran there is nothing to deploy.
    let early = opsloop_client(server, token, &["deploy", "web", "--env", "staging", "--project", "shop", "--wait"]);
    assert_eq!(early.status.code(), Some(1));
    assert!(text(&early.stderr).contains("no successful `build` job with artifacts"), "{}", text(&early.stderr));

    let ran = opsloop_client(server, token, &["pipeline", "run", "shop", "--wait"]);
    assert!(ran.status.success(), "{}{}", text(&ran.stdout), text(&ran.stderr));
    let (code, deployed, stderr) = deploy(server, token, &["--env", "staging"]);
    assert_eq!(code, Some(0), "{deployed}\n{stderr}");
    let front = format!("{}/", server.proxy_url);
    assert_eq!(get(&front, Some("staging.test")), (200, "built\n".to_owned()));
}
