//! The CLI against a real server: version, config, admin commands, projects, shutdown.

use crate::harness::{Server, opsloop, opsloop_client, text};

#[test]
fn version_names_the_commit() {
    let output = opsloop(&["--version"]);
    assert!(output.status.success());
    let version = text(&output.stdout);
    assert!(version.starts_with(&format!("opsloop {}", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains("(commit "), "{version}");
}

#[test]
fn help_teaches_the_commands() {
    let output = opsloop(&["--help"]);
    let help = text(&output.stdout);
    for command in ["serve", "config", "admin", "project", "opsloop serve --demo"] {
        assert!(help.contains(command), "help lacks `{command}`:\n{help}");
    }
}

#[test]
fn config_show_layers_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("opsloop.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9999\"\n[auth]\nsession_ttl_hours = 3\n").unwrap();
    let output = std::process::Command::new(crate::harness::BIN)
        .args(["config", "show", "--json", "--config"])
        .arg(&file)
        .env("OPSLOOP_DATABASE_URL", "postgres://ops:topsecret@db.internal/ops")
        .env("OPSLOOP_LISTEN", "127.0.0.1:7777")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["listen"], "127.0.0.1:7777", "the environment beats the file");
    assert_eq!(shown["auth"]["session_ttl_hours"], 3, "the file beats the default");
    assert_eq!(shown["database"], "postgres");
    assert!(!text(&output.stdout).contains("topsecret"));

    let human = opsloop(&["config", "show", "--config", file.to_str().unwrap(), "--listen", "127.0.0.1:1234"]);
    assert!(text(&human.stdout).contains("listen = \"127.0.0.1:1234\""), "{}", text(&human.stdout));
}

#[test]
fn a_bad_config_file_is_reported_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("opsloop.toml");
    std::fs::write(&file, "data_dir = \"/tmp/x\"\n\n[http]\nmax_body_bites = 1\n").unwrap();
    let output = opsloop(&["config", "show", "--config", file.to_str().unwrap()]);
    assert!(!output.status.success());
    let report = text(&output.stderr);
    assert!(report.contains("unknown field `max_body_bites`"), "{report}");
    assert!(report.contains("opsloop.toml:4:1"), "the report names file:line:column:\n{report}");
    assert!(report.contains("help:"), "{report}");
}

#[tokio::test]
async fn the_server_answers_probes_and_stops_cleanly_on_sigterm() {
    let mut server = Server::start();
    assert!(server.admin_password.len() >= 16, "first start printed a one-time password");
    let client = Server::client();
    for (path, expected) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let body = client.get(format!("{}{path}", server.url)).send().await.unwrap().text().await.unwrap();
        assert_eq!(body.trim(), expected);
    }
    let response = client.get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"), "every response carries a request id");
    let metrics = client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    for family in [
        "opsloop_http_requests_total{",
        "opsloop_http_request_duration_seconds_bucket{",
        "opsloop_db_pool_connections{",
        "opsloop_build_info{",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}:\n{metrics}");
    }
    assert!(metrics.contains(r#"route="/readyz",status="200""#), "{metrics}");
    let status = server.terminate();
    assert!(status.success(), "SIGTERM should end the server cleanly, got {status}");
}

#[tokio::test]
async fn projects_through_the_cli() {
    let server = Server::start();
    let token = server.token("admin");
    let run = |args: &[&str]| opsloop_client(&server, &token, args);

    let created = run(&["project", "create", "web", "--repo", "/srv/git/web.git", "--description", "The shop"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let again = run(&["project", "create", "web", "--repo", "/srv/git/web.git"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already exists"), "{}", text(&again.stderr));
    let bad = run(&["project", "create", "Bad Name", "--repo", "/x"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("lowercase"), "{}", text(&bad.stderr));

    let listed = run(&["project", "list", "--json"]);
    let projects: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(projects[0]["name"], "web");
    assert_eq!(projects[0]["pipeline_file"], ".gitlab-ci.yml");
    assert_eq!(projects[0]["default_branch"], "main");

    let updated = run(&["project", "update", "web", "--default-branch", "trunk", "--json"]);
    assert!(updated.status.success(), "{}", text(&updated.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&run(&["project", "show", "web", "--json"]).stdout).unwrap();
    assert_eq!(shown["default_branch"], "trunk");
    assert_eq!(shown["description"], "The shop");

    let user = opsloop(&["admin", "user", "create", "dana", "--json", "--data-dir", server.data_dir.to_str().unwrap()]);
    assert!(user.status.success(), "{}", text(&user.stderr));
    let user: serde_json::Value = serde_json::from_slice(&user.stdout).unwrap();
    assert!(user["password"].as_str().is_some_and(|p| p.len() >= 16));
    assert!(run(&["project", "member", "add", "web", "dana", "--role", "developer"]).status.success());
    let members: serde_json::Value =
        serde_json::from_slice(&run(&["project", "member", "list", "web", "--json"]).stdout).unwrap();
    let roles: Vec<(String, String)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["username"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(roles, [("admin".to_owned(), "owner".to_owned()), ("dana".to_owned(), "developer".to_owned())]);
    assert!(run(&["project", "member", "remove", "web", "dana"]).status.success());

    let refused = run(&["project", "delete", "web"]);
    assert!(!refused.status.success(), "delete needs --yes");
    assert!(run(&["project", "delete", "web", "--yes"]).status.success());
    let listed = run(&["project", "list", "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&listed.stdout).unwrap(), serde_json::json!([]));

    let no_token = std::process::Command::new(crate::harness::BIN)
        .args(["project", "list", "--server", &server.url])
        .env_remove("OPSLOOP_TOKEN")
        .output()
        .unwrap();
    assert!(!no_token.status.success());
    assert!(text(&no_token.stderr).contains("OPSLOOP_TOKEN"), "{}", text(&no_token.stderr));
    let viewer = server.token("viewer");
    let denied = opsloop_client(&server, &viewer, &["project", "create", "x", "--repo", "/x"]);
    assert!(!denied.status.success());
    assert!(text(&denied.stderr).contains("403"), "{}", text(&denied.stderr));
}

/// The README's first command, literally: `opsloop serve --demo` from a fresh directory, with
/// no `--data-dir` (so the relative `./opsloop-data`), and the token command of its
/// Quickstart from the same directory. The demo pipeline passes, its deploy job serves the
/// service through the proxy, and stopping an environment leaves no fall-through.
#[tokio::test]
async fn the_readme_first_command_works_from_a_fresh_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start_as_readme(cwd.path());
    assert!(cwd.path().join("opsloop-data/opsloop.db").is_file(), "the data lives in ./opsloop-data");
    let in_cwd = |args: &[&str]| {
        std::process::Command::new(crate::harness::BIN)
            .args(args)
            .current_dir(cwd.path())
            .env("NO_COLOR", "1")
            .env_remove("OPSLOOP_DATA_DIR")
            .env_remove("OPSLOOP_DATABASE_URL")
            .output()
            .unwrap()
    };
    let created = in_cwd(&["admin", "token", "create", "--name", "laptop", "--role", "maintainer"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let token = text(&created.stdout).trim().to_owned();

    let shown = opsloop_client(&server, &token, &["project", "show", "demo", "--json"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let demo: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let repo = std::path::PathBuf::from(demo["repo_url"].as_str().unwrap());
    assert!(repo.join(".gitlab-ci.yml").is_file(), "{}", repo.display());
    let log = std::process::Command::new("git").args(["log", "--oneline"]).current_dir(&repo).output().unwrap();
    assert!(text(&log.stdout).contains("Demo project"), "the demo is a git repository with a commit");

    // Its first pipeline runs on start, and passes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let listed = opsloop_client(&server, &token, &["pipeline", "list", "demo", "--json"]);
        let pipelines: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        let status = pipelines[0]["status"].as_str().unwrap_or_default().to_owned();
        if status == "success" {
            break;
        }
        assert!(!matches!(status.as_str(), "failed" | "canceled"), "the demo pipeline {status}: {pipelines}");
        assert!(std::time::Instant::now() < deadline, "the demo pipeline did not finish: {pipelines}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A second pipeline on the same mirror works too (the first start's clone is reused).
    let again = opsloop_client(&server, &token, &["pipeline", "run", "demo", "--ref", "main", "--wait"]);
    assert!(again.status.success(), "{}{}", text(&again.stdout), text(&again.stderr));
    // What a newcomer mistypes gets an answer that says what is wrong.
    let refused = opsloop_client(&server, &token, &["pipeline", "run", "demo", "--ref", "nobranch"]);
    assert!(!refused.status.success(), "a ref that does not exist is refused, not a failed pipeline");
    assert!(text(&refused.stderr).contains("it has: main"), "{}", text(&refused.stderr));
    let missing = opsloop_client(&server, &token, &["job", "log", "999"]);
    assert!(text(&missing.stderr).contains("job not found"), "{}", text(&missing.stderr));
    let rejected = opsloop_client(&server, "olp_not-a-real-token", &["project", "list"]);
    assert!(text(&rejected.stderr).contains("this token was rejected"), "{}", text(&rejected.stderr));

    // Its `deploy` job deployed the service blue-green with the pipeline's own token, so the
    // proxy serves it, and the deployment says who asked.
    let listed = opsloop_client(&server, &token, &["deployments", "--project", "demo", "--json"]);
    let deployments: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
    let first = deployments.as_array().and_then(|all| all.last()).cloned().unwrap_or_default();
    assert_eq!(first["status"], "success", "{deployments}\n{}", text(&listed.stderr));
    assert_eq!(first["strategy"], "blue-green");
    assert!(first["triggered_by"].as_str().unwrap_or_default().contains("pipeline #"), "{deployments}");
    let client = Server::client();
    let answer = client.get(format!("{}/", server.proxy_url)).send().await.unwrap();
    assert_eq!(answer.text().await.unwrap(), "1.0.0\n");

    // Staging, deployed and stopped: its host answers 503, never production's service.
    let admin = server.token("admin");
    let deployed =
        opsloop_client(&server, &admin, &["deploy", "web", "--env", "staging", "--project", "demo", "--wait"]);
    assert!(deployed.status.success(), "{}{}", text(&deployed.stdout), text(&deployed.stderr));
    let staging = |client: &reqwest::Client, proxy: &str| {
        client.get(format!("{proxy}/")).header("host", "staging.localhost").send()
    };
    assert_eq!(staging(&client, &server.proxy_url).await.unwrap().status(), 200);
    let stopped = opsloop_client(&server, &admin, &["stop", "--env", "staging", "--project", "demo"]);
    assert!(stopped.status.success(), "{}{}", text(&stopped.stdout), text(&stopped.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = staging(&client, &server.proxy_url).await.unwrap();
        if answer.status() == 503 {
            assert!(answer.text().await.unwrap().contains("not running"), "the body says why");
            break;
        }
        assert_eq!(answer.status(), 200, "staging answers until it stops, then 503");
        assert!(std::time::Instant::now() < deadline, "staging still serves");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let production = client.get(format!("{}/", server.proxy_url)).send().await.unwrap();
    assert_eq!(production.text().await.unwrap(), "1.0.0\n", "production serves on");

    // After a restart too: production serves again, and stopped staging still answers 503.
    let mut server = server;
    assert!(server.terminate().success(), "a clean stop");
    let server = Server::start_as_readme(cwd.path());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let answer = client.get(format!("{}/", server.proxy_url)).send().await.unwrap();
        if answer.status() == 200 {
            assert_eq!(answer.text().await.unwrap(), "1.0.0\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "production serves again after the restart");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(staging(&client, &server.proxy_url).await.unwrap().status(), 503, "stopped staging stays stopped");

    // Stopping production plays the deploy job's `on_stop` job, which stops the service.
    let stopped = opsloop_client(&server, &admin, &["stop", "--env", "production", "--project", "demo"]);
    assert!(text(&stopped.stdout).contains("on_stop job"), "{}{}", text(&stopped.stdout), text(&stopped.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = client.get(format!("{}/", server.proxy_url)).send().await.unwrap();
        if answer.status() == 503 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "production still serves");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let listed = opsloop_client(&server, &admin, &["environments", "list", "--project", "demo", "--json"]);
    assert_eq!(text(&listed.stdout).trim(), "[]", "nothing runs in production any more");
    let releases = server.data_dir.join("releases");
    drop(server);
    opsloop_runner::reap::kill_marked("OPSLOOP_RELEASE_DIR", &releases);
}

/// The same server and CLI on PostgreSQL (skipped with a notice when none is configured).
#[tokio::test]
async fn the_server_runs_on_postgres() {
    let Some(database) = opsloop_store::test_support::TestDatabase::postgres().await else { return };
    let url = database.url().to_owned();
    database.store.close().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), &["--database-url", &url]);
    let token = {
        let output = std::process::Command::new(crate::harness::BIN)
            .args(["admin", "token", "create", "--name", "pg", "--role", "admin", "--database-url", &url])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout).trim().to_owned()
    };
    let created = opsloop_client(&server, &token, &["project", "create", "on-pg", "--repo", "/srv/git/pg.git"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let listed = opsloop_client(&server, &token, &["project", "list", "--json"]);
    assert!(text(&listed.stdout).contains("on-pg"));
    let metrics = Server::client().get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"backend="postgres""#), "{metrics}");
    drop(server);
    database.drop_database().await;
}

/// `opsloop … | head -1`: the reader goes away, and the command ends quietly, never a panic.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    for args in [&["config", "show"][..], &["config", "show", "--json"]] {
        let mut child = std::process::Command::new(crate::harness::BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(output.status.success(), "{args:?}: {:?} {stderr}", output.status);
    }
}
