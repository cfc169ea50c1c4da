//! Schedules: created with their next run, started once when due (even if the check runs
//! twice), skipped while disabled.

use axum::http::{Method, StatusCode};
use opsloop_core::Role;
use opsloop_core::clock::ManualClock;

use crate::app::TestApp;

#[tokio::test]
async fn a_due_schedule_starts_one_pipeline() {
    let start = 1_768_478_400_000; // 2026-01-15 12:00 UTC
    let clock = ManualClock::new(start);
    let base = TestApp::new().await;
    let app = TestApp::with_clock(std::sync::Arc::new(clock.clone()), &base).await;
    let project = app.project("nightly").await;
    let token = app.token(&app.admin, Role::Admin).await;
    let body = r#"{"cron": "0 3 * * *", "timezone": "Europe/Berlin", "ref": "main", "variables": {"NIGHTLY": "1"}}"#;
    let created = app.api(Method::POST, "/api/v1/projects/nightly/schedules", Some(&token), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let schedule = created.json();
    assert_eq!(schedule["next_run_at"], "2026-01-16T02:00:00Z", "03:00 in Berlin is 02:00 UTC in January");
    assert_eq!(schedule["variables"], serde_json::json!(["NIGHTLY"]), "names only");
    let bad = app
        .api(Method::POST, "/api/v1/projects/nightly/schedules", Some(&token), Some(r#"{"cron": "every day"}"#))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    let pipelines =
        || async { app.store.list_pipelines(project.id, &opsloop_store::PageRequest::first(10)).await.unwrap().items };
    assert_eq!(opsloop_server::schedules::run_due(&app.state).await, 0, "not due yet");
    clock.advance_ms(15 * 3_600_000);
    assert_eq!(opsloop_server::schedules::run_due(&app.state).await, 1);
    assert_eq!(opsloop_server::schedules::run_due(&app.state).await, 0, "one run starts once");
    let started = pipelines().await;
    assert_eq!((started.len(), started[0].source.as_str()), (1, "schedule"));

    let id = schedule["id"].as_i64().unwrap();
    let path = format!("/api/v1/projects/nightly/schedules/{id}");
    assert_eq!(
        app.api(Method::PATCH, &path, Some(&token), Some(r#"{"enabled": false}"#)).await.status,
        StatusCode::NO_CONTENT
    );
    clock.advance_ms(48 * 3_600_000);
    assert_eq!(opsloop_server::schedules::run_due(&app.state).await, 0, "disabled");
    let listed = app.api(Method::GET, "/api/v1/projects/nightly/schedules", Some(&token), None).await.json();
    assert_eq!(listed[0]["enabled"], false);
    assert_eq!(listed[0]["last_pipeline"], started[0].id);
}
