//! Pipelines on the server: run through the CLI against a real repository, logs stored, and
//! what a `kill -9` interrupts failed at the next start instead of lost or rerun.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Server, opsloop_client, text};

fn git_repo(dir: &Path, pipeline: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(".gitlab-ci.yml"), pipeline).unwrap();
    for args in [&["init", "-q", "-b", "main"][..], &["add", "-A"], &["commit", "-qm", "pipeline"]] {
        let status = Command::new("git")
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[test]
fn pipelines_run_on_the_server_with_their_logs() {
    let server = Server::start();
    let token = server.token("admin");
    let repos = tempfile::tempdir().unwrap();
    let good = repos.path().join("good");
    git_repo(
        &good,
        "build:\n  stage: build\n  script: [echo \"built $CI_COMMIT_SHORT_SHA for $GREETING\"]\ntest:\n  script: [echo tested]\n",
    );
    let bad = repos.path().join("bad");
    git_repo(&bad, "broken:\n  script: [echo about to fail, exit 4]\n");
    let run = |args: &[&str]| opsloop_client(&server, &token, args);
    assert!(run(&["project", "create", "good", "--repo", good.to_str().unwrap()]).status.success());
    assert!(run(&["project", "create", "bad", "--repo", bad.to_str().unwrap()]).status.success());

    let ok = run(&["pipeline", "run", "good", "--ref", "main", "--variable", "GREETING=hello", "--wait", "--json"]);
    assert_eq!(ok.status.code(), Some(0), "{}\n{}", text(&ok.stdout), text(&ok.stderr));
    let detail: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(detail["status"], "success");
    assert_eq!(detail["source"], "api");
    assert_eq!(detail["sha"].as_str().unwrap().len(), 40);
    let build = detail["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "build").unwrap().clone();
    assert_eq!(build["status"], "success");
    let log = run(&["job", "log", &build["id"].to_string()]);
    let log = text(&log.stdout);
    assert!(log.contains("$ echo \"built $CI_COMMIT_SHORT_SHA for $GREETING\""), "{log}");
    assert!(log.contains(" for hello"), "the pipeline variable reached the job: {log}");

    let failed = run(&["pipeline", "run", "bad", "--wait"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stdout));
    let unknown_ref = run(&["pipeline", "run", "good", "--ref", "no-such-branch", "--wait", "--json"]);
    assert_eq!(unknown_ref.status.code(), Some(1));
    let detail: serde_json::Value = serde_json::from_slice(&unknown_ref.stdout).unwrap();
    assert!(detail["error"].as_str().unwrap_or_default().contains("no-such-branch"), "{detail}");

    let listed = run(&["pipeline", "list", "good", "--json"]);
    let pipelines: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let statuses: Vec<&str> = pipelines.as_array().unwrap().iter().map(|p| p["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "success"], "newest first");

    let viewer = server.token("viewer");
    let denied = opsloop_client(&server, &viewer, &["pipeline", "run", "good"]);
    assert!(!denied.status.success() && text(&denied.stderr).contains("403"), "{}", text(&denied.stderr));
}

#[test]
fn a_pipeline_interrupted_by_kill_9_is_failed_at_the_next_start() {
    let mut server = Server::start();
    let token = server.token("admin");
    let repos = tempfile::tempdir().unwrap();
    let slow = repos.path().join("slow");
    git_repo(&slow, "long:\n  script: [echo started, sleep 30]\n");
    assert!(
        opsloop_client(&server, &token, &["project", "create", "slow", "--repo", slow.to_str().unwrap()])
            .status
            .success()
    );
    let started = opsloop_client(&server, &token, &["pipeline", "run", "slow", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&started.stdout).unwrap()["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = opsloop_client(&server, &token, &["pipeline", "show", "slow", &id.to_string(), "--json"]);
        let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
        if detail["jobs"][0]["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the job never started: {detail}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill_hard();
    let restarted = Server::start_in(&server.data_dir, &[]);
    let shown = opsloop_client(&restarted, &token, &["pipeline", "show", "slow", &id.to_string(), "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(detail["status"], "failed", "{detail}");
    assert!(detail["error"].as_str().unwrap_or_default().contains("runner_system_failure"), "{detail}");
    assert_eq!(detail["jobs"][0]["status"], "failed");
}
