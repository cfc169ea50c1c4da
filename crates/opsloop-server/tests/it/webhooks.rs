//! Forge webhooks: signatures checked before anything else, replays ignored, pushes become
//! pipelines at the pushed commit, merge requests `merge_request_event` pipelines.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use hmac::{Hmac, Mac};
use opsloop_core::Role;
use sha2::Sha256;

use crate::app::{Reply, TestApp};

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn post(app: &TestApp, forge: &str, headers: &[(&str, String)], body: &str) -> Reply {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/projects/web/hooks/{forge}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    app.send(request.body(Body::from(body.to_owned())).unwrap()).await
}

#[tokio::test]
async fn pushes_from_each_forge_need_their_signature_and_are_not_replayed() {
    let app = TestApp::new().await;
    let project = app.project("web").await;
    let token = app.token(&app.admin, Role::Admin).await;
    let settings = app.api(Method::GET, "/api/v1/projects/web/webhook", Some(&token), None).await.json();
    let secret = settings["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32);
    assert!(settings["urls"][0].as_str().unwrap().ends_with("/api/v1/projects/web/hooks/github"));
    let again = app.api(Method::GET, "/api/v1/projects/web/webhook", Some(&token), None).await.json();
    assert_eq!(again["secret"], secret.as_str(), "the secret is stable");

    let push = r#"{"ref": "refs/heads/main", "after": "9fceb02d0ae598e95dc970b74767f19372d61af8", "repository": {}}"#;
    let count = || async {
        app.store.list_pipelines(project.id, &opsloop_store::PageRequest::first(100)).await.unwrap().items.len()
    };

    // GitHub: wrong signature, then right, then the same delivery again.
    let wrong = [
        ("x-github-event", "push".to_owned()),
        ("x-hub-signature-256", format!("sha256={}", sign("nope", push))),
        ("x-github-delivery", "d-1".to_owned()),
    ];
    assert_eq!(post(&app, "github", &wrong, push).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(count().await, 0, "a bad signature creates nothing");
    let right = [
        ("x-github-event", "push".to_owned()),
        ("x-hub-signature-256", format!("sha256={}", sign(&secret, push))),
        ("x-github-delivery", "d-1".to_owned()),
    ];
    let created = post(&app, "github", &right, push).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let replay = post(&app, "github", &right, push).await;
    assert_eq!(
        (replay.status, replay.json()["status"].as_str().unwrap().to_owned()),
        (StatusCode::OK, "duplicate".to_owned())
    );
    assert_eq!(count().await, 1);
    let pipeline = app.store.pipeline_by_id(created.json()["pipeline"].as_i64().unwrap()).await.unwrap().unwrap();
    assert_eq!((pipeline.git_ref.as_str(), pipeline.source.as_str()), ("main", "push"));

    // GitLab: a token, not a signature.
    let gitlab = [
        ("x-gitlab-event", "Push Hook".to_owned()),
        ("x-gitlab-token", secret.clone()),
        ("x-gitlab-event-uuid", "g-1".to_owned()),
    ];
    assert_eq!(post(&app, "gitlab", &gitlab, push).await.status, StatusCode::CREATED);
    let bad_token = [("x-gitlab-event", "Push Hook".to_owned()), ("x-gitlab-token", "guess".to_owned())];
    assert_eq!(post(&app, "gitlab", &bad_token, push).await.status, StatusCode::UNAUTHORIZED);

    // Gitea: a bare hex signature.
    let gitea = [
        ("x-gitea-event", "push".to_owned()),
        ("x-gitea-signature", sign(&secret, push)),
        ("x-gitea-delivery", "t-1".to_owned()),
    ];
    assert_eq!(post(&app, "gitea", &gitea, push).await.status, StatusCode::CREATED);
    assert_eq!(count().await, 3);

    // Pings, branch deletions and unknown events create nothing; neither do unknown forges.
    let ping =
        [("x-github-event", "ping".to_owned()), ("x-hub-signature-256", format!("sha256={}", sign(&secret, "{}")))];
    assert_eq!(post(&app, "github", &ping, "{}").await.json()["status"], "pong");
    let deletion = r#"{"ref": "refs/heads/old", "after": "0000000000000000000000000000000000000000"}"#;
    let deleted =
        [("x-github-event", "push".to_owned()), ("x-hub-signature-256", format!("sha256={}", sign(&secret, deletion)))];
    assert_eq!(post(&app, "github", &deleted, deletion).await.json()["status"], "ignored");
    assert_eq!(post(&app, "bitbucket", &right, push).await.status, StatusCode::NOT_FOUND);
    assert_eq!(count().await, 3);
}

#[tokio::test]
async fn merge_requests_from_each_forge_start_merge_request_pipelines() {
    let app = TestApp::new().await;
    let project = app.project("web").await;
    let token = app.token(&app.admin, Role::Admin).await;
    let settings = app.api(Method::GET, "/api/v1/projects/web/webhook", Some(&token), None).await.json();
    let secret = settings["secret"].as_str().unwrap().to_owned();
    let sha = "9fceb02d0ae598e95dc970b74767f19372d61af8";
    let pipelines =
        || async { app.store.list_pipelines(project.id, &opsloop_store::PageRequest::first(100)).await.unwrap().items };

    // GitHub's pull_request shape (trimmed to what matters, plus noise it really sends).
    let opened = format!(
        r#"{{"action": "opened", "number": 7, "pull_request": {{"title": "x", "head": {{"ref": "feature/login", "sha": "{sha}"}}, "base": {{"ref": "main", "sha": "{sha}"}}}}, "repository": {{}}}}"#
    );
    let github = |body: &str, id: &str| {
        [
            ("x-github-event", "pull_request".to_owned()),
            ("x-hub-signature-256", format!("sha256={}", sign(&secret, body))),
            ("x-github-delivery", id.to_owned()),
        ]
    };
    let created = post(&app, "github", &github(&opened, "pr-1"), &opened).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let labeled = opened.replace("\"opened\"", "\"labeled\"");
    assert_eq!(post(&app, "github", &github(&labeled, "pr-2"), &labeled).await.json()["status"], "ignored");
    let forged = post(&app, "github", &github(&opened, "pr-3"), &opened.replace("opened", "reopened")).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "the signature covers the body");

    // GitLab's Merge Request Hook: an update without new commits runs nothing.
    let hook = |action: &str, oldrev: &str| {
        format!(
            r#"{{"object_kind": "merge_request", "object_attributes": {{"iid": 12, "action": "{action}", "source_branch": "fix", "target_branch": "main", "last_commit": {{"id": "{sha}"}}{oldrev}}}}}"#
        )
    };
    let gitlab = |id: &str| {
        [
            ("x-gitlab-event", "Merge Request Hook".to_owned()),
            ("x-gitlab-token", secret.clone()),
            ("x-gitlab-event-uuid", id.to_owned()),
        ]
    };
    let retitled = hook("update", "");
    assert_eq!(post(&app, "gitlab", &gitlab("mr-1"), &retitled).await.json()["status"], "ignored");
    let pushed = hook("update", r#", "oldrev": "1111111111111111111111111111111111111111""#);
    assert_eq!(post(&app, "gitlab", &gitlab("mr-2"), &pushed).await.status, StatusCode::CREATED);

    // Gitea says `synchronized`.
    let gitea_body = opened.replace("\"opened\"", "\"synchronized\"");
    let gitea = [
        ("x-gitea-event", "pull_request".to_owned()),
        ("x-gitea-signature", sign(&secret, &gitea_body)),
        ("x-gitea-delivery", "ge-1".to_owned()),
    ];
    assert_eq!(post(&app, "gitea", &gitea, &gitea_body).await.status, StatusCode::CREATED);

    let made = pipelines().await;
    let mut seen: Vec<(String, String)> = made.iter().map(|p| (p.git_ref.clone(), p.source.clone())).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("feature/login", "merge_request_event"),
            ("feature/login", "merge_request_event"),
            ("fix", "merge_request_event")
        ]
        .map(|(r, s)| (r.to_owned(), s.to_owned()))
    );
}
