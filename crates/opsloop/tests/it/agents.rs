//! Agents as separate processes: jobs handed out to them run exactly once, their artifacts
//! reach the jobs after them, and a job whose agent is killed fails or is retried.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BIN, Server, opsloop, opsloop_client, text};
use crate::server_ci::project_with_pipeline;

/// A running `opsloop agent`, its stderr kept in a file.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(server: &Server, name: &str, root: &Path, extra: &[&str]) -> Agent {
        let created =
            opsloop(&["admin", "agent", "create", "--name", name, "--data-dir", server.data_dir.to_str().unwrap()]);
        assert!(created.status.success(), "{}", text(&created.stderr));
        let token = text(&created.stdout).trim().to_owned();
        assert!(token.starts_with("olpa_"), "{token}");
        let log = root.join(format!("{name}.log"));
        // The token through the environment, as a service manager would pass it: jobs must not see it.
        let child = Command::new(BIN)
            .args(["agent", "--server", &server.url, "--work-dir"])
            .arg(root.join(name))
            .args(extra)
            .env("OPSLOOP_AGENT_TOKEN", &token)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// A GET with a bearer token; the body, after asserting a 2xx.
pub fn http_get(url: &str, token: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let response = Server::client().get(url).bearer_auth(token).send().await.unwrap();
        assert!(response.status().is_success(), "GET {url}: {}", response.status());
        response.bytes().await.unwrap().to_vec()
    })
}

fn agents_config(dir: &Path, timeout: u64) -> PathBuf {
    let config = dir.join("opsloop.toml");
    std::fs::write(&config, format!("[ci]\nexecutor = \"agents\"\nagent_timeout_seconds = {timeout}\n")).unwrap();
    config
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_agents_run_fifty_jobs_each_exactly_once_with_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let config = agents_config(dir.path(), 10);
    let server = Server::start_in(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let token = server.token("admin");
    let ran = dir.path().join("ran.log");
    let mut pipeline = format!(
        "stages: [build, test]\nbuild:\n  stage: build\n  script: [mkdir -p out, echo \"made by build\" > out/made.txt, echo build >> {ran}]\n  artifacts:\n    paths: [out/]\n",
        ran = ran.display()
    );
    pipeline.push_str(&format!(
        "check:\n  stage: test\n  script: [cat out/made.txt, test \"$(cat out/made.txt)\" = \"made by build\", echo check >> {ran}, 'echo \"token=${{OPSLOOP_AGENT_TOKEN:-absent}}\"', 'echo \"server=$OPSLOOP_SERVER\"', '\"$OPSLOOP_BIN\" environments list --json']\n",
        ran = ran.display()
    ));
    for i in 0..48 {
        pipeline.push_str(&format!(
            "job{i}:\n  stage: test\n  script: [sleep 0.05, echo $CI_JOB_NAME >> {ran}]\n",
            ran = ran.display()
        ));
    }
    project_with_pipeline(&server, &token, dir.path(), "fleet", &pipeline);
    let agents = [
        Agent::start(&server, "a1", dir.path(), &["--concurrency", "3"]),
        Agent::start(&server, "a2", dir.path(), &["--concurrency", "3"]),
    ];
    let run = opsloop_client(&server, &token, &["pipeline", "run", "fleet", "--wait", "--json"]);
    let outputs = || agents.iter().map(Agent::output).collect::<Vec<_>>().join("\n");
    assert_eq!(run.status.code(), Some(0), "{}\n{}\nagents:\n{}", text(&run.stdout), text(&run.stderr), outputs());
    let detail: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(detail["jobs"].as_array().unwrap().len(), 50);

    let mut lines: Vec<String> = std::fs::read_to_string(&ran).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 50, "every job ran once: {lines:?}");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 50, "no job ran twice");
    let started = |agent: &Agent| agent.output().matches(") started, attempt 1").count();
    let (first, second) = (started(&agents[0]), started(&agents[1]));
    assert_eq!(first + second, 50, "{}", outputs());
    assert!(first > 0 && second > 0, "both agents took jobs ({first} and {second})");

    // The check job read the build job's artifact, which went agent → server → agent.
    let check = detail["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "check").unwrap();
    let log = text(&opsloop_client(&server, &token, &["job", "log", &check["id"].to_string()]).stdout);
    assert!(log.contains("made by build"), "{log}");
    assert!(log.lines().any(|l| l == "token=absent"), "jobs do not inherit the agent's environment: {log}");
    // The pipeline's token works from an agent, against the server as the agent reaches it.
    assert!(log.lines().any(|l| l.trim_end_matches('/') == format!("server={}", server.url)), "{log}");
    assert!(log.lines().any(|l| l.trim() == "[]"), "the job called the API with its token: {log}");
    assert!(log.contains("waiting for an agent"), "{log}");

    // The build job's artifacts, made on an agent, are in the object store for download.
    let build = detail["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "build").unwrap();
    assert_eq!(build["artifacts"]["files"], 1, "{build}");
    let file = format!("{}/api/v1/jobs/{}/artifacts/raw/out/made.txt", server.url, build["id"]);
    assert_eq!(text(&http_get(&file, &token)).trim(), "made by build");

    let listed = opsloop(&["admin", "agent", "list", "--json", "--data-dir", server.data_dir.to_str().unwrap()]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a1", "a2"]);
    assert!(listed.as_array().unwrap().iter().all(|a| a["online"] == true && a["running_jobs"] == 0), "{listed}");
}

#[test]
fn a_job_whose_agent_is_killed_is_retried_or_failed() {
    let dir = tempfile::tempdir().unwrap();
    let config = agents_config(dir.path(), 3);
    let server = Server::start_in(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let token = server.token("admin");
    let mark = dir.path().join("first-attempt");
    let pipeline = format!(
        "victim:\n  tags: [linux]\n  retry:\n    max: 1\n    when: runner_system_failure\n  script:\n    - if [ -f {mark} ]; then echo second attempt; else touch {mark}; echo first attempt; sleep 20; fi\n",
        mark = mark.display()
    );
    project_with_pipeline(&server, &token, dir.path(), "retried", &pipeline);
    project_with_pipeline(
        &server,
        &token,
        dir.path(),
        "lost",
        "lonely:\n  tags: [linux]\n  script: [echo running, sleep 20]\n",
    );
    let run = |args: &[&str]| opsloop_client(&server, &token, args);

    let mut doomed = Agent::start(&server, "doomed", dir.path(), &["--tags", "linux"]);
    let started = run(&["pipeline", "run", "retried", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&started.stdout).unwrap()["id"].to_string();
    wait_for("the first attempt", Duration::from_secs(30), || mark.exists());
    doomed.kill_hard();
    let mut rescuer = Agent::start(&server, "rescuer", dir.path(), &["--tags", "linux,docker"]);
    let mut detail = serde_json::Value::Null;
    wait_for("the retried pipeline to end", Duration::from_secs(40), || {
        detail =
            serde_json::from_slice(&run(&["pipeline", "show", "retried", &id, "--json"]).stdout).unwrap_or_default();
        matches!(detail["status"].as_str(), Some("success" | "failed"))
    });
    assert_eq!(detail["status"], "success", "{detail}");
    let job = detail["jobs"][0]["id"].to_string();
    let log = text(&run(&["job", "log", &job]).stdout);
    assert!(log.contains("first attempt") && log.contains("second attempt"), "{log}");
    assert!(log.contains("agent doomed sent no heartbeat") && log.contains("retrying"), "{log}");

    // Without `retry`, the job fails as a runner system failure, and the pipeline with it.
    let started = run(&["pipeline", "run", "lost", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&started.stdout).unwrap()["id"].to_string();
    wait_for("the job to start on the agent", Duration::from_secs(30), || {
        rescuer.output().contains("(lonely) started")
    });
    std::thread::sleep(Duration::from_millis(300));
    rescuer.kill_hard();
    wait_for("the lost pipeline to end", Duration::from_secs(40), || {
        detail = serde_json::from_slice(&run(&["pipeline", "show", "lost", &id, "--json"]).stdout).unwrap_or_default();
        matches!(detail["status"].as_str(), Some("success" | "failed"))
    });
    assert_eq!(detail["status"], "failed", "{detail}");
    let log = text(&run(&["job", "log", &detail["jobs"][0]["id"].to_string()]).stdout);
    assert!(log.contains("runner_system_failure"), "{log}");
}

#[test]
fn caches_are_shared_between_the_server_and_its_agents() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsloop.toml");
    std::fs::write(&config, "[ci]\nagent_timeout_seconds = 10\n").unwrap();
    let server = Server::start_in(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let token = server.token("admin");
    // `fill` has no tags and runs on the server; `use` needs an agent with `linux`.
    let pipeline = "stages: [build, test]\n\
        fill:\n  stage: build\n  cache: {key: deps, paths: [deps/]}\n  script: [mkdir -p deps, echo from-the-server > deps/marker]\n\
        use:\n  stage: test\n  tags: [linux]\n  cache: {key: deps, paths: [deps/], policy: pull}\n  script: ['cat deps/marker', 'cat \"$CONFIG_FILE\"; echo', 'stat -c %a \"$CONFIG_FILE\"']\n";
    project_with_pipeline(&server, &token, dir.path(), "shared", pipeline);
    let _agent = Agent::start(&server, "cacher", dir.path(), &["--tags", "linux"]);
    // A file-type variable reaches the agent's job as a private file there.
    let url = format!("{}/api/v1/projects/shared/variables/CONFIG_FILE", server.url);
    let body = serde_json::json!({"value": "apiVersion: v1", "file": true});
    assert_eq!(crate::harness::call_json(reqwest::Method::PUT, &url, &token, Some(body)).0, 204);
    let run = opsloop_client(&server, &token, &["pipeline", "run", "shared", "--wait", "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}{}", text(&run.stdout), text(&run.stderr));
    let detail: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let used = detail["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "use").unwrap();
    let log = text(&opsloop_client(&server, &token, &["job", "log", &used["id"].to_string()]).stdout);
    assert!(log.lines().any(|line| line == "from-the-server"), "the agent got the server's cache: {log}");
    assert!(log.lines().any(|line| line == "apiVersion: v1"), "the file variable's contents: {log}");
    assert!(log.lines().any(|line| line == "600"), "written for the job's user only: {log}");
}

#[test]
fn a_child_pipeline_that_would_need_agents_fails_instead_of_running_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = agents_config(dir.path(), 10);
    let server = Server::start_in(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let token = server.token("admin");
    let marker = dir.path().join("ran-on-the-server");
    let repo =
        project_with_pipeline(&server, &token, dir.path(), "parent", "child:\n  trigger:\n    include: child.yml\n");
    std::fs::write(repo.join("child.yml"), format!("inner:\n  script: [touch {}]\n", marker.display())).unwrap();
    crate::harness::commit_all(&repo, "child");
    let run = opsloop_client(&server, &token, &["pipeline", "run", "parent", "--wait", "--json"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stdout));
    let detail: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let log = text(&opsloop_client(&server, &token, &["job", "log", &detail["jobs"][0]["id"].to_string()]).stdout);
    assert!(log.contains("must run on an agent"), "{log}");
    assert!(!marker.exists(), "with executor = agents, no job ran on the server");
}

/// A tag pushed to a bare repository served by opsloop runs the tag's jobs (`only: tags`,
/// `rules: - if: $CI_COMMIT_TAG`), on the server and on an agent, with `CI_COMMIT_TAG` set
/// and `CI_COMMIT_BRANCH` unset — what `opsloop run` gives the same checkout.
#[test]
fn a_pushed_tag_runs_tag_jobs_on_the_server_and_on_an_agent_as_opsloop_run_does() {
    let server = Server::start();
    let token = server.token("admin");
    let root = tempfile::tempdir().unwrap();
    let bare = crate::harness::bare_repository_with_hook(&server, &token, root.path(), "app");
    let git = crate::harness::git_in;
    let created = opsloop_client(&server, &token, &["project", "create", "app", "--repo", bare.to_str().unwrap()]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let _agent = Agent::start(&server, "tagger", root.path(), &["--tags", "linux"]);

    let say = "'echo \"tag=${CI_COMMIT_TAG:-unset} branch=${CI_COMMIT_BRANCH:-unset} ref=$CI_COMMIT_REF_NAME\"'";
    let pipeline = format!(
        "on-tags:\n  only: [tags]\n  script: [{say}]\n\
         if-tag:\n  rules:\n    - if: $CI_COMMIT_TAG\n  script: [{say}]\n\
         on-agent:\n  tags: [linux]\n  rules:\n    - if: $CI_COMMIT_TAG\n  script: [{say}]\n\
         on-branch:\n  rules:\n    - if: $CI_COMMIT_BRANCH\n  script: [{say}]\n"
    );
    let work = root.path().join("work");
    git(root.path(), &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()]);
    std::fs::write(work.join(".gitlab-ci.yml"), pipeline).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "first"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    git(&work, &["tag", "v1.0"]);
    git(&work, &["push", "-q", "origin", "v1.0"]);

    // Both pipelines pass: the branch's and the tag's.
    let mut finished = serde_json::Value::Null;
    wait_for("the branch's and the tag's pipelines to pass", Duration::from_secs(60), || {
        let listed = opsloop_client(&server, &token, &["pipeline", "list", "app", "--json"]);
        finished = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        let all = finished.as_array().cloned().unwrap_or_default();
        assert!(!all.iter().any(|p| p["status"] == "failed"), "{finished}");
        all.len() == 2 && all.iter().all(|p| p["status"] == "success")
    });
    let tag_pipeline = finished.as_array().unwrap().iter().find(|p| p["ref"] == "v1.0").unwrap()["id"].to_string();
    let detail = opsloop_client(&server, &token, &["pipeline", "show", "app", &tag_pipeline, "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&detail.stdout).unwrap();
    let mut names: Vec<String> =
        detail["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["if-tag", "on-agent", "on-tags"], "the tag's jobs, and no branch job: {detail}");
    for job in detail["jobs"].as_array().unwrap() {
        let log = opsloop_client(&server, &token, &["job", "log", &job["id"].to_string()]);
        let log = text(&log.stdout);
        assert!(log.contains("tag=v1.0 branch=unset ref=v1.0"), "{}: {log}", job["name"]);
    }

    // `opsloop run` at the same checkout plans the same jobs and gives the same values.
    git(&work, &["checkout", "-q", "v1.0"]);
    let listed = Command::new(BIN).args(["run", "--list-json"]).current_dir(&work).output().unwrap();
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let mut local: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    local.sort_unstable();
    assert_eq!(local, ["if-tag", "on-agent", "on-tags"]);
    let ran = Command::new(BIN).args(["run", "if-tag"]).current_dir(&work).env("NO_COLOR", "1").output().unwrap();
    assert!(text(&ran.stdout).contains("tag=v1.0 branch=unset ref=v1.0"), "{}", text(&ran.stdout));
}
