//! Forge webhooks: signatures checked before anything else, replays ignored, pushes become
//! pipelines at the pushed commit.

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
