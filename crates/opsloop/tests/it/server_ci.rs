//! Pipelines on the server: run through the CLI against a real repository, logs stored, and
//! what a `kill -9` interrupts failed at the next start instead of lost or rerun.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Server, opsloop_client, text};

pub fn git_repo(dir: &Path, pipeline: &str) {
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

/// A repository under `root/name` holding `pipeline`, registered on `server` as project `name`.
pub fn project_with_pipeline(
    server: &Server,
    token: &str,
    root: &Path,
    name: &str,
    pipeline: &str,
) -> std::path::PathBuf {
    let repo = root.join(name);
    git_repo(&repo, pipeline);
    let created = opsloop_client(server, token, &["project", "create", name, "--repo", repo.to_str().unwrap()]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    repo
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
    assert!(detail["duration_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{detail}");
    let build = detail["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "build").unwrap().clone();
    assert_eq!(build["status"], "success");
    let log = run(&["job", "log", &build["id"].to_string()]);
    let log = text(&log.stdout);
    assert!(log.contains("$ echo \"built $CI_COMMIT_SHORT_SHA for $GREETING\""), "{log}");
    assert!(log.contains(" for hello"), "the pipeline variable reached the job: {log}");

    let failed = run(&["pipeline", "run", "bad", "--wait"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stdout));
    // A ref the repository does not have is refused, with the refs it has; no pipeline.
    let unknown_ref = run(&["pipeline", "run", "good", "--ref", "no-such-branch", "--wait", "--json"]);
    assert_eq!(unknown_ref.status.code(), Some(1));
    let said = text(&unknown_ref.stderr);
    assert!(said.contains("`no-such-branch` is no branch, tag or commit") && said.contains("it has: main"), "{said}");
    let again = run(&["pipeline", "run", "good", "--ref", "main", "--wait"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));

    let listed = run(&["pipeline", "list", "good", "--json"]);
    let pipelines: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<i64> = pipelines.as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 2, "the refused ref made no pipeline: {pipelines}");
    assert!(ids[0] > ids[1], "newest first: {ids:?}");

    let viewer = server.token("viewer");
    let denied = opsloop_client(&server, &viewer, &["pipeline", "run", "good"]);
    assert!(!denied.status.success() && text(&denied.stderr).contains("403"), "{}", text(&denied.stderr));
}

#[test]
fn after_kill_9_a_running_pipeline_is_failed_and_a_queued_one_runs_as_requested() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsloop.toml");
    // One job at a time, so the second pipeline waits in the queue behind the first.
    std::fs::write(&config, "[ci]\nconcurrent_jobs = 1\n").unwrap();
    let config_args = ["--config", config.to_str().unwrap()];
    let data_dir = dir.path().join("data");
    let mut server = Server::start_in(&data_dir, &config_args);
    let token = server.token("admin");
    let slow = dir.path().join("slow");
    git_repo(&slow, "long:\n  script: [echo started, sleep 30]\n");
    let quick = dir.path().join("quick");
    git_repo(&quick, "greet:\n  script: [echo \"greeting=$GREETING\"]\n");
    for (name, repo) in [("slow", &slow), ("quick", &quick)] {
        let created = opsloop_client(&server, &token, &["project", "create", name, "--repo", repo.to_str().unwrap()]);
        assert!(created.status.success());
    }
    let id = start_pipeline(&server, &token, "slow");
    wait_for_job(&server, &token, "slow", &id, "", "running");
    let queued =
        opsloop_client(&server, &token, &["pipeline", "run", "quick", "--variable", "GREETING=hello", "--json"]);
    let queued = serde_json::from_slice::<serde_json::Value>(&queued.stdout).unwrap()["id"].as_i64().unwrap();
    let shown = opsloop_client(&server, &token, &["pipeline", "show", "quick", &queued.to_string(), "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(detail["status"], "created", "queued behind the running one: {detail}");
    // A third, canceled while queued, never runs.
    let dropped = opsloop_client(&server, &token, &["pipeline", "run", "quick", "--json"]);
    let dropped = serde_json::from_slice::<serde_json::Value>(&dropped.stdout).unwrap()["id"].to_string();
    let canceled = opsloop_client(&server, &token, &["pipeline", "cancel", "quick", &dropped]);
    assert!(canceled.status.success(), "{}", text(&canceled.stderr));

    server.kill_hard();
    let restarted = Server::start_in(&data_dir, &config_args);
    let shown = opsloop_client(&restarted, &token, &["pipeline", "show", "slow", &id.to_string(), "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(detail["status"], "failed", "{detail}");
    assert!(detail["error"].as_str().unwrap_or_default().contains("runner_system_failure"), "{detail}");
    assert_eq!(detail["jobs"][0]["status"], "failed");

    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let shown = opsloop_client(&restarted, &token, &["pipeline", "show", "quick", &queued.to_string(), "--json"]);
        let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
        if detail["status"] == "success" || detail["status"] == "failed" {
            break detail;
        }
        assert!(Instant::now() < deadline, "the queued pipeline never ran after the restart: {detail}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(detail["status"], "success", "{detail}");
    let shown = opsloop_client(&restarted, &token, &["pipeline", "show", "quick", &dropped, "--json"]);
    let never: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        (never["status"].as_str(), never["jobs"].as_array().map(Vec::len)),
        (Some("canceled"), Some(0)),
        "{never}"
    );
    let log = opsloop_client(&restarted, &token, &["job", "log", &detail["jobs"][0]["id"].to_string()]);
    assert!(text(&log.stdout).contains("greeting=hello"), "its variable survived: {}", text(&log.stdout));
    // In clear the request would read `[["GREETING","hello"]]`; the job's own log echoes the name.
    let needle = br#""GREETING","hello""#;
    for file in ["opsloop.db", "opsloop.db-wal"] {
        let stored = std::fs::read(data_dir.join(file)).unwrap_or_default();
        let clear = stored.windows(needle.len()).any(|window| window == needle);
        assert!(!clear, "pipeline variables are stored encrypted ({file})");
    }
}

#[test]
fn a_push_to_a_bare_repository_starts_a_pipeline_through_the_post_receive_hook() {
    let server = Server::start();
    let token = server.token("developer");
    let root = tempfile::tempdir().unwrap();
    let bare = crate::harness::bare_repository_with_hook(&server, &token, root.path(), "app");
    let git = crate::harness::git_in;
    assert!(
        opsloop_client(
            &server,
            &server.token("admin"),
            &["project", "create", "app", "--repo", bare.to_str().unwrap()]
        )
        .status
        .success()
    );

    let work = root.path().join("work");
    git(root.path(), &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()]);
    std::fs::write(
        work.join(".gitlab-ci.yml"),
        "hello:\n  script: [echo \"pushed $CI_COMMIT_SHA via $CI_PIPELINE_SOURCE\"]\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "first"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let listed = opsloop_client(&server, &token, &["pipeline", "list", "app", "--json"]);
        let pipelines: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        if pipelines[0]["status"] == "success" {
            break pipelines[0].clone();
        }
        assert!(pipelines[0]["status"] != "failed", "{pipelines}");
        assert!(Instant::now() < deadline, "no pipeline after the push: {pipelines}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(detail["source"], "push");
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(&work).output().unwrap();
    assert_eq!(detail["sha"].as_str().unwrap(), text(&head.stdout).trim(), "the pushed commit ran");
}

#[tokio::test]
async fn encrypted_variables_reach_jobs_masked_and_never_the_database_in_clear() {
    let server = Server::start();
    let token = server.token("admin");
    let repos = tempfile::tempdir().unwrap();
    let repo = repos.path().join("secrets");
    git_repo(
        &repo,
        "show:\n  script:\n    - echo \"token=$API_TOKEN\"\n    - cat \"$KUBECONFIG\"\n    - 'echo \"deploy key: ${DEPLOY_KEY:-absent}\"'\n",
    );
    let git = |args: &[&str]| {
        Command::new("git").args(args).current_dir(&repo).stdout(Stdio::null()).status().unwrap();
    };
    git(&["branch", "feature"]);
    assert!(
        opsloop_client(&server, &token, &["project", "create", "secrets", "--repo", repo.to_str().unwrap()])
            .status
            .success()
    );

    let client = Server::client();
    let put = |key: &str, body: serde_json::Value| {
        let request = client
            .put(format!("{}/api/v1/projects/secrets/variables/{key}", server.url))
            .bearer_auth(&token)
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(put("API_TOKEN", serde_json::json!({"value": "tok-9f8e7d6c5b", "masked": true})).await, 204);
    assert_eq!(put("KUBECONFIG", serde_json::json!({"value": "apiVersion: v1", "file": true})).await, 204);
    assert_eq!(put("DEPLOY_KEY", serde_json::json!({"value": "only-on-main", "protected": true})).await, 204);
    assert_eq!(put("SHORT", serde_json::json!({"value": "abc", "masked": true})).await, 422, "too short to mask");
    let listed: serde_json::Value = client
        .get(format!("{}/api/v1/projects/secrets/variables", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!listed.to_string().contains("tok-9f8e7d6c5b"), "values are write-only: {listed}");

    let run = |git_ref: &str| {
        let output =
            opsloop_client(&server, &token, &["pipeline", "run", "secrets", "--ref", git_ref, "--wait", "--json"]);
        let detail: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(detail["status"], "success", "{detail}");
        let log = opsloop_client(&server, &token, &["job", "log", &detail["jobs"][0]["id"].to_string()]);
        text(&log.stdout)
    };
    let main_log = run("main");
    assert!(main_log.contains("token=[MASKED]"), "{main_log}");
    assert!(!main_log.contains("tok-9f8e7d6c5b"), "{main_log}");
    assert!(main_log.contains("apiVersion: v1"), "the file variable holds a path to the value: {main_log}");
    assert!(main_log.contains("deploy key: only-on-main"), "{main_log}");
    let feature_log = run("feature");
    assert!(
        feature_log.contains("deploy key: absent"),
        "protected variables stay on the default branch: {feature_log}"
    );

    let database = std::fs::read(server.data_dir.join("opsloop.db")).unwrap();
    let wal = std::fs::read(server.data_dir.join("opsloop.db-wal")).unwrap_or_default();
    for bytes in [&database, &wal] {
        assert!(!bytes.windows(14).any(|w| w == b"tok-9f8e7d6c5b"), "a secret is stored in clear");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.data_dir.join("secrets.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let audit: serde_json::Value = client
        .get(format!("{}/api/v1/admin/audit?limit=100", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(audit.to_string().contains("variable.use"), "{audit}");
}

#[test]
fn a_running_pipeline_can_be_canceled() {
    let server = Server::start();
    let token = server.token("admin");
    let repos = tempfile::tempdir().unwrap();
    let pipeline = "long:\n  script: [echo started, sleep 30]\n  after_script: [echo \"cleanup after $CI_JOB_STATUS\"]\nlater:\n  stage: deploy\n  script: [echo never]\n";
    project_with_pipeline(&server, &token, repos.path(), "long", pipeline);
    let started = opsloop_client(&server, &token, &["pipeline", "run", "long", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&started.stdout).unwrap()["id"].as_i64().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text(&opsloop_client(&server, &token, &["pipeline", "show", "long", &id, "--json"]).stdout)
        .contains("\"running\"")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let cancel = opsloop_client(&server, &token, &["pipeline", "cancel", "long", &id]);
    assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    let began = Instant::now();
    let detail = loop {
        let shown = opsloop_client(&server, &token, &["pipeline", "show", "long", &id, "--json"]);
        let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
        if detail["status"] == "canceled" {
            break detail;
        }
        assert!(began.elapsed() < Duration::from_secs(15), "not canceled: {detail}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let statuses: Vec<&str> =
        detail["jobs"].as_array().unwrap().iter().map(|j| j["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["canceled", "canceled"], "{detail}");
    let log = opsloop_client(&server, &token, &["job", "log", &detail["jobs"][0]["id"].to_string()]);
    assert!(text(&log.stdout).contains("cleanup after canceled"), "{}", text(&log.stdout));
    let again = opsloop_client(&server, &token, &["pipeline", "cancel", "long", &id]);
    assert!(!again.status.success() && text(&again.stderr).contains("not running"));
}

#[test]
fn a_job_that_prints_without_end_keeps_a_capped_log_and_runs_on() {
    let server = Server::start();
    let token = server.token("admin");
    let repos = tempfile::tempdir().unwrap();
    // 6.9 MB of output, then a marker that shows the job carried on past the cap.
    let pipeline = "loud:\n  script:\n    - seq 1 1000000\n    - echo finished > done.txt\n    - cat done.txt >&2\n";
    project_with_pipeline(&server, &token, repos.path(), "loud", pipeline);
    let run = |args: &[&str]| opsloop_client(&server, &token, args);
    let ran = run(&["pipeline", "run", "loud", "--wait", "--json"]);
    assert_eq!(ran.status.code(), Some(0), "{}\n{}", text(&ran.stdout), text(&ran.stderr));
    let detail: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let job = detail["jobs"][0]["id"].to_string();
    let log = text(&run(&["job", "log", &job]).stdout);
    assert!(log.len() <= 4 * 1024 * 1024 + 200, "the stored log is capped: {} bytes", log.len());
    assert!(log.len() > 4 * 1024 * 1024 - 200, "the log is kept up to the cap: {} bytes", log.len());
    assert!(log.contains("the job log exceeded 4 MiB"), "the cap is said in the log");
    assert!(!log.contains("finished"), "nothing after the cap is stored");
    assert_eq!(detail["jobs"][0]["status"], "success", "the job ran on to the end");
}

/// The most intervals of `log` (lines `start <ns>` / `end <ns>`) open at one moment.
fn most_at_once(log: &str) -> usize {
    let mut points: Vec<(u128, i32)> = log
        .lines()
        .filter_map(|line| {
            let (kind, at) = line.split_once(' ')?;
            let at: u128 = at.trim().parse().ok()?;
            Some((at, if kind == "start" { 1 } else { -1 }))
        })
        .collect();
    // At the same instant an end comes before a start: touching intervals do not overlap.
    points.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, delta) in points {
        open += delta;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}

#[test]
fn jobs_share_the_servers_slots_and_resource_groups_hold_across_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsloop.toml");
    std::fs::write(&config, "[ci]\nconcurrent_jobs = 2\n").unwrap();
    let server = Server::start_in(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let token = server.token("admin");
    let (jobs_log, deploys_log) = (dir.path().join("jobs.log"), dir.path().join("deploys.log"));
    let timed = |log: &Path| {
        let log = log.display();
        format!("[\"echo start $(date +%s%N) >> {log}\", \"sleep 1\", \"echo end $(date +%s%N) >> {log}\"]")
    };
    // Each pipeline: two plain jobs and a deploy in resource group `production`.
    let pipeline = format!(
        "a:\n  script: {jobs}\nb:\n  script: {jobs}\ndeploy:\n  resource_group: production\n  script: {deploys}\n",
        jobs = timed(&jobs_log),
        deploys = timed(&deploys_log)
    );
    let repo = dir.path().join("repo");
    git_repo(&repo, &pipeline);
    let run = |args: &[&str]| opsloop_client(&server, &token, args);
    assert!(run(&["project", "create", "app", "--repo", repo.to_str().unwrap()]).status.success());

    let both: Vec<_> = (0..2)
        .map(|_| {
            Command::new(crate::harness::BIN)
                .args(["pipeline", "run", "app", "--wait"])
                .env("OPSLOOP_SERVER", &server.url)
                .env("OPSLOOP_TOKEN", &token)
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in both {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    }
    let jobs = std::fs::read_to_string(&jobs_log).unwrap();
    let deploys = std::fs::read_to_string(&deploys_log).unwrap();
    assert_eq!((jobs.lines().count(), deploys.lines().count()), (8, 4), "every job ran once:\n{jobs}{deploys}");
    let all = format!("{jobs}{deploys}");
    assert!(most_at_once(&all) <= 2, "at most concurrent_jobs = 2 jobs at once over both pipelines:\n{all}");
    assert_eq!(most_at_once(&deploys), 1, "one deploy at a time across pipelines:\n{deploys}");
}

#[test]
fn junit_reports_become_the_pipelines_test_summary() {
    let server = Server::start();
    let token = server.token("admin");
    let repos = tempfile::tempdir().unwrap();
    let repo = repos.path().join("tested");
    let report = r#"<testsuite><testcase classname="cart" name="adds"/><testcase classname="cart" name="totals"><failure message="expected 3, got 4"/></testcase><testcase classname="cart" name="later"><skipped/></testcase></testsuite>"#;
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("report.xml"), report).unwrap();
    git_repo(
        &repo,
        "test:\n  script: [echo testing]\n  artifacts:\n    reports:\n      junit: report.xml\nlint:\n  script: [echo no tests here]\n",
    );
    let run = |args: &[&str]| opsloop_client(&server, &token, args);
    assert!(run(&["project", "create", "tested", "--repo", repo.to_str().unwrap()]).status.success());
    let ran = run(&["pipeline", "run", "tested", "--wait", "--json"]);
    assert_eq!(ran.status.code(), Some(0), "{}\n{}", text(&ran.stdout), text(&ran.stderr));
    let id = serde_json::from_slice::<serde_json::Value>(&ran.stdout).unwrap()["id"].to_string();
    let shown = run(&["pipeline", "show", "tested", &id, "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let tests = &detail["tests"];
    assert_eq!(
        (tests["passed"].as_i64(), tests["failed"].as_i64(), tests["skipped"].as_i64()),
        (Some(1), Some(1), Some(1)),
        "{detail}"
    );
    assert_eq!(tests["failures"][0]["job"], "test");
    assert!(tests["failures"][0]["case"].as_str().unwrap_or_default().contains("expected 3, got 4"), "{detail}");
}

fn wait_for_pipeline(server: &Server, token: &str, project: &str, id: &str, done: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = opsloop_client(server, token, &["pipeline", "show", project, id, "--json"]);
        let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
        if done.contains(&detail["status"].as_str().unwrap_or_default()) {
            return detail;
        }
        assert!(Instant::now() < deadline, "pipeline {id} never reached {done:?}: {detail}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a pipeline of `project` and returns its id.
fn start_pipeline(server: &Server, token: &str, project: &str) -> String {
    let started = opsloop_client(server, token, &["pipeline", "run", project, "--json"]);
    serde_json::from_slice::<serde_json::Value>(&started.stdout).unwrap()["id"].to_string()
}

/// Waits until the pipeline's job `name` (its first job when empty) has `status`; returns it.
fn wait_for_job(server: &Server, token: &str, project: &str, id: &str, name: &str, status: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = opsloop_client(server, token, &["pipeline", "show", project, id, "--json"]);
        let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
        let job = detail["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| if name.is_empty() { true } else { j["name"] == name }).cloned());
        if let Some(job) = job.filter(|j| j["status"] == status) {
            return job;
        }
        assert!(Instant::now() < deadline, "job `{name}` never became {status}: {detail}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn job_named<'a>(detail: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    detail["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap()
}

#[test]
fn a_failed_job_is_retried_with_its_upstream_artifacts_and_a_manual_job_is_played() {
    let server = Server::start();
    let token = server.token("maintainer");
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("flaky-ran-once");
    let pipeline = format!(
        "stages: [build, test, deploy]\n\
         build:\n  stage: build\n  script: [mkdir -p out, echo 'built artifact' > out/x.txt]\n  artifacts:\n    paths: [out/]\n\
         flaky:\n  stage: test\n  script: ['cat out/x.txt', 'test -f {mark} || {{ touch {mark}; echo first try fails; exit 3; }}']\n\
         deploy:\n  stage: deploy\n  when: manual\n  script: [echo deployed $CI_COMMIT_SHORT_SHA]\n",
        mark = mark.display()
    );
    let repo = project_with_pipeline(&server, &token, dir.path(), "shop", &pipeline);
    // Build output is ignored by git, as it usually is: a retry must still get it.
    std::fs::write(repo.join(".gitignore"), "out/\n").unwrap();
    crate::harness::commit_all(&repo, "ignore build output");
    let run = |args: &[&str]| opsloop_client(&server, &token, args);
    let first = run(&["pipeline", "run", "shop", "--wait", "--json"]);
    assert_eq!(first.status.code(), Some(1), "the flaky job fails the first time: {}", text(&first.stdout));
    let detail: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let id = detail["id"].to_string();
    assert_eq!(job_named(&detail, "deploy")["status"], "manual");
    let flaky = job_named(&detail, "flaky")["id"].to_string();
    let deploy = job_named(&detail, "deploy")["id"].to_string();

    // A manual job is played, not retried; a finished job is retried, not played.
    let refused = run(&["job", "retry", &deploy]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("only a finished job can be retried"), "{}", text(&refused.stderr));

    let retried = run(&["job", "retry", &flaky, "--json"]);
    assert!(retried.status.success(), "{}", text(&retried.stderr));
    let detail = wait_for_pipeline(&server, &token, "shop", &id, &["success", "failed"]);
    assert_eq!(detail["status"], "success", "{detail}");
    let log = text(&run(&["job", "log", &flaky]).stdout);
    assert!(log.contains("built artifact"), "the build job's stored artifact was restored: {log}");
    assert!(!log.lines().any(|line| line == "first try fails"), "the log is the new attempt's: {log}");

    let played = run(&["job", "play", &deploy]);
    assert!(played.status.success(), "{}", text(&played.stderr));
    let detail = wait_for_pipeline(&server, &token, "shop", &id, &["success", "failed"]);
    assert_eq!(job_named(&detail, "deploy")["status"], "success", "{detail}");
    assert!(text(&run(&["job", "log", &deploy]).stdout).contains("deployed "));
}

#[test]
fn one_job_is_canceled_and_what_needs_it_is_skipped() {
    let server = Server::start();
    let token = server.token("developer");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "slow:\n  script: [echo slow started, sleep 30]\nquick:\n  script: [sleep 1, echo quick done]\nafter:\n  needs: [slow]\n  script: [echo never]\n";
    let admin = server.token("admin");
    project_with_pipeline(&server, &admin, dir.path(), "mixed", pipeline);
    let run = |args: &[&str]| opsloop_client(&server, &token, args);
    let id = start_pipeline(&server, &token, "mixed");
    let slow = wait_for_job(&server, &token, "mixed", &id, "slow", "running")["id"].to_string();
    let canceled = run(&["job", "cancel", &slow]);
    assert!(canceled.status.success(), "{}", text(&canceled.stderr));
    let detail = wait_for_pipeline(&server, &token, "mixed", &id, &["success", "failed", "canceled"]);
    assert_eq!(detail["status"], "canceled", "{detail}");
    assert_eq!(job_named(&detail, "slow")["status"], "canceled");
    assert_eq!(job_named(&detail, "quick")["status"], "success");
    assert_eq!(job_named(&detail, "after")["status"], "skipped");
    assert_eq!(job_named(&detail, "after")["needs"], serde_json::json!(["slow"]));
    assert!(job_named(&detail, "quick")["needs"].is_null(), "stage-ordered jobs have no needs: {detail}");
    let again = run(&["job", "cancel", &slow]);
    assert_eq!(again.status.code(), Some(1), "a finished job cannot be canceled");
}

#[test]
fn instance_variables_reach_every_project_and_a_projects_own_wins() {
    let server = Server::start();
    let admin = server.token("admin");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "show:\n  script: ['echo \"secret=$INSTANCE_SECRET shared=$SHARED\"']\n";
    project_with_pipeline(&server, &admin, dir.path(), "one", pipeline);
    project_with_pipeline(&server, &admin, dir.path(), "two", pipeline);
    let put = |path: &str, body: serde_json::Value| api_put(&server, &admin, path, body);
    put(
        "/api/v1/admin/variables/INSTANCE_SECRET",
        serde_json::json!({"value": "instance-wide-secret", "masked": true}),
    );
    put("/api/v1/admin/variables/SHARED", serde_json::json!({"value": "from-instance"}));
    put("/api/v1/projects/two/variables/SHARED", serde_json::json!({"value": "from-project"}));
    for (project, shared) in [("one", "from-instance"), ("two", "from-project")] {
        let run = opsloop_client(&server, &admin, &["pipeline", "run", project, "--wait", "--json"]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let detail: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let log = text(&opsloop_client(&server, &admin, &["job", "log", &detail["jobs"][0]["id"].to_string()]).stdout);
        assert!(log.contains(&format!("secret=[MASKED] shared={shared}")), "{project}: {log}");
        assert!(!log.contains("instance-wide-secret"), "{log}");
    }
}

/// PUTs a JSON body to the server's API and asserts a 2xx.
fn api_put(server: &Server, token: &str, path: &str, body: serde_json::Value) {
    let (status, answer) =
        crate::harness::call_json(reqwest::Method::PUT, &format!("{}{path}", server.url), token, Some(body));
    assert!((200..300).contains(&status), "PUT {path}: {status} {answer}");
}

#[test]
fn a_projects_own_job_limit_holds_and_redundant_pipelines_are_auto_canceled() {
    let server = Server::start();
    let token = server.token("admin");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("jobs.log");
    let timed = format!(
        "[\"echo start $(date +%s%N) >> {log}\", \"sleep 0.5\", \"echo end $(date +%s%N) >> {log}\"]",
        log = log.display()
    );
    let pipeline = format!("a:\n  script: {timed}\nb:\n  script: {timed}\nc:\n  script: {timed}\n");
    project_with_pipeline(&server, &token, dir.path(), "limited", &pipeline);
    api_put(
        &server,
        &token,
        "/api/v1/projects/limited/ci-settings",
        serde_json::json!({"max_concurrent_jobs": 1, "auto_cancel_redundant": false}),
    );
    let run = opsloop_client(&server, &token, &["pipeline", "run", "limited", "--wait"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.lines().count(), 6, "{log}");
    assert_eq!(most_at_once(&log), 1, "one job of the project at a time although the server allows 4:\n{log}");

    let pipeline = "long:\n  interruptible: true\n  script: [echo working, sleep 30]\n";
    project_with_pipeline(&server, &token, dir.path(), "busy", pipeline);
    api_put(
        &server,
        &token,
        "/api/v1/projects/busy/ci-settings",
        serde_json::json!({"max_concurrent_jobs": 0, "auto_cancel_redundant": true}),
    );
    let run = |args: &[&str]| opsloop_client(&server, &token, args);
    let first = start_pipeline(&server, &token, "busy");
    wait_for_job(&server, &token, "busy", &first, "", "running");
    let second = start_pipeline(&server, &token, "busy");
    let detail = wait_for_pipeline(&server, &token, "busy", &first, &["canceled", "success", "failed"]);
    assert_eq!(detail["status"], "canceled", "the newer pipeline on main canceled it: {detail}");
    let newer = wait_for_pipeline(&server, &token, "busy", &second, &["running"]);
    assert_eq!(newer["status"], "running");
    assert!(run(&["pipeline", "cancel", "busy", &second]).status.success());
}

#[test]
fn caches_outlive_a_pipeline_on_the_server() {
    let server = Server::start();
    let token = server.token("admin");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "fill:\n  cache:\n    key: deps\n    paths: [deps/]\n  script:\n    - 'if [ -f deps/made ]; then echo \"cache hit: $(cat deps/made)\"; else echo cache miss; fi'\n    - mkdir -p deps && echo $CI_PIPELINE_ID > deps/made\n";
    project_with_pipeline(&server, &token, dir.path(), "cached", pipeline);
    let mut logs = Vec::new();
    for _ in 0..2 {
        let run = opsloop_client(&server, &token, &["pipeline", "run", "cached", "--wait", "--json"]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let detail: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        logs.push(text(&opsloop_client(&server, &token, &["job", "log", &detail["jobs"][0]["id"].to_string()]).stdout));
    }
    assert!(logs[0].lines().any(|l| l == "cache miss"), "{}", logs[0]);
    assert!(
        logs[1].lines().any(|l| l.starts_with("cache hit: ")),
        "the second pipeline found the first's cache: {}",
        logs[1]
    );
    // Both pipelines were checked out from the project's one mirror.
    let mirrors: Vec<_> = std::fs::read_dir(server.data_dir.join("mirrors")).unwrap().collect();
    assert_eq!(mirrors.len(), 1);
    let mirror = mirrors[0].as_ref().unwrap().path();
    assert!(mirror.file_name().unwrap().to_string_lossy().starts_with("1-") && mirror.join("HEAD").exists());
}

#[test]
fn kill_9_with_twenty_jobs_running_fails_them_all_and_ends_their_processes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsloop.toml");
    std::fs::write(&config, "[ci]\nconcurrent_jobs = 20\n").unwrap();
    let config_args = ["--config", config.to_str().unwrap()];
    let data_dir = dir.path().join("data");
    let mut server = Server::start_in(&data_dir, &config_args);
    let token = server.token("admin");
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let pipeline = format!(
        "first:\n  stage: build\n  script: [echo done early]\nmany:\n  stage: test\n  parallel: 20\n  script: ['echo $$ > {marks}/$CI_NODE_INDEX', 'sleep 60']\n",
        marks = marks.display()
    );
    project_with_pipeline(&server, &token, dir.path(), "crowd", &pipeline);
    let started = opsloop_client(&server, &token, &["pipeline", "run", "crowd", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&started.stdout).unwrap()["id"].to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&marks).unwrap().count() < 20 {
        assert!(Instant::now() < deadline, "twenty jobs never ran at once");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pids: Vec<String> = std::fs::read_dir(&marks)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap().trim().to_owned())
        .collect();
    assert!(pids.iter().all(|pid| Path::new(&format!("/proc/{pid}")).exists()));

    server.kill_hard();
    let restarted = Server::start_in(&data_dir, &config_args);
    let shown = opsloop_client(&restarted, &token, &["pipeline", "show", "crowd", &id, "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(detail["status"], "failed", "{detail}");
    let jobs = detail["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 21);
    assert_eq!(job_named(&detail, "first")["status"], "success", "what finished stays finished: {detail}");
    let failed = jobs.iter().filter(|j| j["status"] == "failed").count();
    assert_eq!(failed, 20, "every running job failed, none lost or left running: {detail}");
    // The jobs' processes did not outlive the server that started them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z ")))
    {
        assert!(Instant::now() < deadline, "job processes outlived the killed server: {pids:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!data_dir.join("pipelines").join(&id).exists(), "the interrupted checkout is cleaned up");
}

#[test]
fn the_log_cap_is_configurable_and_logs_are_stored_deflated() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsloop.toml");
    std::fs::write(&config, "[ci]\nmax_job_log_mib = 1\n").unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start_in(&data_dir, &["--config", config.to_str().unwrap()]);
    let token = server.token("admin");
    project_with_pipeline(&server, &token, dir.path(), "chatty", "talk:\n  script: [seq 1 400000]\n");
    let ran = opsloop_client(&server, &token, &["pipeline", "run", "chatty", "--wait", "--json"]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let detail: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let log = text(&opsloop_client(&server, &token, &["job", "log", &detail["jobs"][0]["id"].to_string()]).stdout);
    assert!(log.contains("the job log exceeded 1 MiB"), "{}", &log[log.len().saturating_sub(300)..]);
    assert!(log.len() > 1024 * 1024 - 200 && log.len() <= 1024 * 1024 + 200, "{} bytes", log.len());
    // A megabyte of numbers, deflated, takes far less room than itself.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stored = runtime.block_on(async {
        let store = opsloop_store::Store::open(opsloop_store::Location::SqliteFile(&data_dir.join("opsloop.db")))
            .await
            .unwrap();
        store.job_log_stored_bytes(detail["jobs"][0]["id"].as_i64().unwrap()).await.unwrap()
    });
    assert!(stored * 3 < 1024 * 1024, "the log takes {stored} bytes in the database");
}

#[test]
fn a_trigger_token_starts_a_trigger_pipeline_without_an_account() {
    let server = Server::start();
    let token = server.token("maintainer");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "report:\n  script: ['echo \"source=$CI_PIPELINE_SOURCE target=$TARGET\"']\n";
    project_with_pipeline(&server, &token, dir.path(), "triggered", pipeline);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = Server::client();
    let created: serde_json::Value = runtime.block_on(async {
        http.post(format!("{}/api/v1/projects/triggered/triggers", server.url))
            .bearer_auth(&token)
            .json(&serde_json::json!({"description": "nightly deploy script"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let trigger_token = created["token"].as_str().unwrap().to_owned();
    assert!(trigger_token.starts_with("olpt_"), "{created}");
    let fire = |token: &str| {
        runtime.block_on(async {
            // GitLab's documented form: token, ref, variables[KEY].
            let response = http
                .post(format!("{}/api/v1/projects/triggered/trigger/pipeline", server.url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}&ref=main&variables%5BTARGET%5D=staging"))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap_or_default())
        })
    };
    assert_eq!(fire("olpt_wrong").0, 401);
    let (status, pipeline) = fire(&trigger_token);
    assert_eq!(status, 201, "{pipeline}");
    assert_eq!(pipeline["source"], "trigger");
    let id = pipeline["id"].to_string();
    let detail = wait_for_pipeline(&server, &token, "triggered", &id, &["success", "failed"]);
    assert_eq!(detail["status"], "success", "{detail}");
    assert_eq!(detail["created_by"], "trigger:nightly deploy script", "{detail}");
    let log = text(&opsloop_client(&server, &token, &["job", "log", &detail["jobs"][0]["id"].to_string()]).stdout);
    assert!(log.contains("source=trigger target=staging"), "{log}");

    let trigger_id = created["id"].to_string();
    let revoked = runtime.block_on(async {
        http.delete(format!("{}/api/v1/projects/triggered/triggers/{trigger_id}", server.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(revoked, 204);
    assert_eq!(fire(&trigger_token).0, 401, "a revoked token starts nothing");
}

#[test]
fn a_delayed_job_is_scheduled_until_its_start_in_passes() {
    let server = Server::start();
    let token = server.token("admin");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "later:\n  when: delayed\n  start_in: 2 seconds\n  script: [echo on time]\n";
    project_with_pipeline(&server, &token, dir.path(), "delayed", pipeline);
    let run = |args: &[&str]| opsloop_client(&server, &token, args);
    let id = start_pipeline(&server, &token, "delayed");
    wait_for_job(&server, &token, "delayed", &id, "", "scheduled");
    let detail = wait_for_pipeline(&server, &token, "delayed", &id, &["success", "failed"]);
    assert_eq!(detail["jobs"][0]["status"], "success", "{detail}");
    let log = text(&run(&["job", "log", &detail["jobs"][0]["id"].to_string()]).stdout);
    assert!(log.contains("# delayed: starting in 2s") && log.contains("on time"), "{log}");
}

#[test]
fn after_kill_9_a_job_that_retries_runner_system_failures_runs_again_with_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = Server::start_in(&data_dir, &[]);
    let token = server.token("admin");
    let mark = dir.path().join("first-attempt");
    let pipeline = format!(
        "stages: [build, test, deploy]\n\
         build:\n  stage: build\n  script: [mkdir -p out, echo built > out/app.txt]\n  artifacts:\n    paths: [out/]\n\
         flaky-runner:\n  stage: test\n  retry:\n    max: 1\n    when: runner_system_failure\n  script:\n    - cat out/app.txt\n    - 'if [ -f {mark} ]; then echo second attempt; else touch {mark}; sleep 60; fi'\n\
         deploy:\n  stage: deploy\n  script: [echo deployed]\n",
        mark = mark.display()
    );
    project_with_pipeline(&server, &token, dir.path(), "resilient", &pipeline);
    let started = opsloop_client(&server, &token, &["pipeline", "run", "resilient", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&started.stdout).unwrap()["id"].to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Killed once the server has recorded the job as running: its process starting first
    // (the mark) and the `running` write landing a moment later is a window this test does
    // not aim at (a job still `pending` in the store is not known to have run).
    loop {
        let shown = opsloop_client(&server, &token, &["pipeline", "show", "resilient", &id, "--json"]);
        let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
        let jobs = detail["jobs"].as_array().cloned().unwrap_or_default();
        let running = jobs.iter().any(|j| j["name"] == "flaky-runner" && j["status"] == "running");
        if mark.exists() && running {
            break;
        }
        assert!(Instant::now() < deadline, "the first attempt never started: {detail}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill_hard();
    let restarted = Server::start_in(&data_dir, &[]);
    let detail = wait_for_pipeline(&restarted, &token, "resilient", &id, &["success"]);
    let statuses: Vec<(&str, &str)> = detail["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["name"].as_str().unwrap(), j["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("build", "success"), ("flaky-runner", "success"), ("deploy", "success")], "{detail}");
    let log = text(
        &opsloop_client(&restarted, &token, &["job", "log", &job_named(&detail, "flaky-runner")["id"].to_string()])
            .stdout,
    );
    assert!(log.contains("built") && log.contains("second attempt"), "the retry got build's artifacts: {log}");
}
