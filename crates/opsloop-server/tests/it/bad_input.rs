//! Hostile and broken input at the API's edge: always a 4xx with a clear message in the
//! error format, never a 500, never a panic.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use opsloop_core::Role;

use crate::app::TestApp;

async fn create(app: &TestApp, token: &str, body: &str) -> crate::app::Reply {
    app.api(Method::POST, "/api/v1/projects", Some(token), Some(body)).await
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_get_clear_4xx() {
    let app = TestApp::new().await;
    let token = app.token(&app.admin, Role::Admin).await;
    let cases: &[(&str, StatusCode, &str, &str)] = &[
        (r#"{"name": "x", "repo_url": "/a""#, StatusCode::BAD_REQUEST, "malformed_json", "EOF"),
        ("not json at all", StatusCode::BAD_REQUEST, "malformed_json", "expected"),
        ("", StatusCode::BAD_REQUEST, "malformed_json", "EOF"),
        (r#"{"name": 5, "repo_url": "/a"}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "invalid type"),
        (r#"{"repo_url": "/a"}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "missing field `name`"),
        (
            r#"{"name": "x", "repo_url": "/a", "owner": "me"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "unknown field `owner`",
        ),
        (r#"[1, 2, 3]"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "invalid type"),
        (r#"{"name": "Ünïcödé", "repo_url": "/a"}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", "lowercase"),
        (
            r#"{"name": "x'); DROP TABLE projects;--", "repo_url": "/a"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "lowercase",
        ),
        (
            r#"{"name": "ok", "repo_url": "--upload-pack=touch /tmp/pwned"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "must not start with `-`",
        ),
        (
            r#"{"name": "ok", "repo_url": "/a", "default_branch": "a..b"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "branch",
        ),
        (
            r#"{"name": "ok", "repo_url": "/a", "pipeline_file": "../../etc/passwd"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "relative path",
        ),
        (
            r#"{"name": "ok", "repo_url": "/a", "description": null}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "invalid type: null",
        ),
    ];
    for (body, status, code, hint) in cases {
        let reply = create(&app, &token, body).await;
        assert_eq!(reply.status, *status, "{body}: {}", reply.text());
        assert_eq!(reply.error_code(), *code, "{body}: {}", reply.text());
        let message = reply.json().pointer("/error/message").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
        assert!(message.contains(hint), "{body}: message `{message}` should mention `{hint}`");
    }
    // Nothing was created by any of them.
    let list = app.api(Method::GET, "/api/v1/projects", Some(&token), None).await.json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
}

#[tokio::test]
async fn very_long_names_are_refused_and_sql_looking_text_is_stored_verbatim() {
    let app = TestApp::new().await;
    let token = app.token(&app.admin, Role::Admin).await;
    let long_name = "a".repeat(10_000);
    let reply = create(&app, &token, &format!(r#"{{"name": "{long_name}", "repo_url": "/a"}}"#)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.text().contains("limit is 64"), "{}", reply.text());
    assert!(reply.text().len() < 1000, "the error echoed the whole input back");

    let hostile = "'; DELETE FROM users; -- \u{202e}\u{1F600}";
    let body = serde_json::json!({"name": "quoted", "repo_url": "/a", "description": hostile}).to_string();
    let reply = create(&app, &token, &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let shown = app.api(Method::GET, "/api/v1/projects/quoted", Some(&token), None).await.json();
    assert_eq!(shown["description"], hostile);
    assert_eq!(app.store.count_users().await.unwrap(), 1, "the users table is intact");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = TestApp::new().await;
    let token = app.token(&app.admin, Role::Admin).await;
    let huge = format!(r#"{{"name": "big", "repo_url": "/a", "description": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let reply = create(&app, &token, &huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.text());
    assert_eq!(reply.error_code(), "body_too_large");
}

#[tokio::test]
async fn wrong_content_type_query_and_path_are_4xx_in_the_error_format() {
    let app = TestApp::new().await;
    let token = app.token(&app.admin, Role::Admin).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/projects")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"name": "x", "repo_url": "/a"}"#))
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.error_code(), "unsupported_media_type");

    let reply = app.api(Method::GET, "/api/v1/projects?limit=lots", Some(&token), None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::BAD_REQUEST, "invalid_query"));
    let reply = app.api(Method::GET, "/api/v1/projects?colour=red", Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "unknown query parameters are refused");
    let reply = app.api(Method::DELETE, "/api/v1/tokens/not-a-number", Some(&token), None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::BAD_REQUEST, "invalid_path"));
    let reply = app.api(Method::GET, "/api/v1/nothing-here", Some(&token), None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let reply = app.api(Method::PUT, "/api/v1/projects", Some(&token), None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let reply = app.api(Method::GET, "/api/v1/projects/no-such-project", Some(&token), None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let reply = app.api(Method::PUT, "/api/v1/projects/x/members/y", Some(&token), Some(r#"{"role": "god"}"#)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

/// Deterministic garbage (xorshift), so a failure reproduces.
fn garbage(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed & 0xff) as u8
        })
        .collect()
}

#[tokio::test]
async fn random_bytes_never_cause_a_server_error() {
    let app = TestApp::new().await;
    let token = app.token(&app.admin, Role::Admin).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let fragments = [r#"{"name":"#, r#""repo_url":"#, "\"", "{", "}", "[", "null", "1e999", "\\u0000", ","];
    for round in 0..300 {
        let mut body = garbage(&mut seed, round % 64);
        if round % 2 == 0 {
            body =
                fragments.iter().cycle().skip(round % 7).take(round % 11).flat_map(|f| f.bytes()).chain(body).collect();
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/projects")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let reply = app.send(request).await;
        assert!(reply.status.is_client_error(), "{:?} answered {}", String::from_utf8_lossy(&body), reply.status);
        assert!(!reply.error_code().is_empty(), "not in the error format: {}", reply.text());
    }
}
