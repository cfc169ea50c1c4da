//! Repository polling against a real git repository: the first poll learns the refs, a new
//! commit or tag starts one `push` pipeline at that commit, an unchanged repository none.

use std::path::Path;
use std::process::Command;

use axum::http::{Method, StatusCode};
use opsloop_core::Role;
use opsloop_core::clock::ManualClock;

use crate::app::TestApp;

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn commit(repo: &Path, message: &str) -> String {
    std::fs::write(repo.join(".gitlab-ci.yml"), format!("job:\n  script: echo {message}\n")).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "--quiet", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

#[tokio::test]
async fn new_commits_and_tags_start_push_pipelines() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path();
    git(repo, &["init", "--quiet"]);
    commit(repo, "first");

    let clock = ManualClock::new(1_768_478_400_000);
    let base = TestApp::new().await;
    let app = TestApp::with_clock(std::sync::Arc::new(clock.clone()), &base).await;
    let project = app
        .store
        .create_project(
            opsloop_store::NewProject {
                name: "polled",
                description: "",
                repo_url: repo.to_str().unwrap(),
                default_branch: "main",
                pipeline_file: ".gitlab-ci.yml",
            },
            app.admin.id,
            opsloop_store::Actor { name: "test", source_ip: "" },
        )
        .await
        .unwrap();
    let token = app.token(&app.admin, Role::Admin).await;
    let path = "/api/v1/projects/polled/polling";
    let too_often = app.api(Method::PUT, path, Some(&token), Some(r#"{"interval_seconds": 1}"#)).await;
    assert_eq!(too_often.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", too_often.text());
    let set = app.api(Method::PUT, path, Some(&token), Some(r#"{"interval_seconds": 60}"#)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    assert_eq!(app.api(Method::GET, path, Some(&token), None).await.json()["interval_seconds"], 60);

    let poll = || opsloop_server::polling::poll_due(&app.state);
    assert_eq!(poll().await, 0, "the first poll only learns the refs");
    let second = commit(repo, "second");
    assert_eq!(poll().await, 0, "not due again before the interval");
    clock.advance_ms(60_000);
    assert_eq!(poll().await, 1, "the moved branch runs");
    clock.advance_ms(60_000);
    assert_eq!(poll().await, 0, "nothing changed");
    git(repo, &["tag", "-a", "-m", "release", "v1.0"]);
    clock.advance_ms(60_000);
    assert_eq!(poll().await, 1, "the new tag runs");

    let pipelines = app.store.list_pipelines(project.id, &opsloop_store::PageRequest::first(10)).await.unwrap().items;
    let mut seen: Vec<(String, String)> = pipelines.iter().map(|p| (p.git_ref.clone(), p.source.clone())).collect();
    seen.sort();
    assert_eq!(seen, vec![("main".into(), "push".into()), ("v1.0".into(), "push".into())]);
    let refs = app.store.polled_refs(project.id).await.unwrap();
    assert_eq!(refs.get("refs/heads/main"), Some(&second));
    assert_eq!(refs.get("refs/tags/v1.0"), Some(&second), "an annotated tag is peeled to its commit");

    let off = app.api(Method::PUT, path, Some(&token), Some(r#"{"interval_seconds": 0}"#)).await;
    assert_eq!(off.status, StatusCode::OK);
    commit(repo, "third");
    clock.advance_ms(3_600_000);
    assert_eq!(poll().await, 0, "polling is off");
}
