//! Incidents over the API: who sees which, who may act, and the state machine's answers.

use axum::http::{Method, StatusCode};
use opsloop_core::Role;
use opsloop_store::NewIncident;

use crate::app::TestApp;

fn new_incident(project_id: Option<i64>, key: &str) -> NewIncident<'_> {
    NewIncident {
        project_id,
        dedup_key: key,
        title: "HighErrorRate on web",
        severity: "critical",
        escalation_policy: "default",
        alerts: r#"[{"labels": {"alertname": "HighErrorRate", "service": "web"}}]"#,
    }
}

#[tokio::test]
async fn project_incidents_are_seen_by_members_and_acted_on_by_developers() {
    let app = TestApp::new().await;
    let project = app.project("shop").await;
    let (incident, _) = app.store.open_or_join_incident(&new_incident(Some(project.id), "shop-web")).await.unwrap();
    let (instance, _) = app.store.open_or_join_incident(&new_incident(None, "instance")).await.unwrap();
    let viewer = app.user("vera").await;
    app.store.set_member(&project, &viewer, Role::Viewer, crate::app::ACTOR).await.unwrap();
    let developer = app.user("dave").await;
    app.store.set_member(&project, &developer, Role::Developer, crate::app::ACTOR).await.unwrap();
    let outsider = app.user("otto").await;
    let (viewer, developer, outsider) = (
        app.token(&viewer, Role::Owner).await,
        app.token(&developer, Role::Developer).await,
        app.token(&outsider, Role::Owner).await,
    );
    let path = format!("/api/v1/incidents/{}", incident.id);

    // The outsider sees the instance's incident only, and the project's is not found for them.
    let listed = app.api(Method::GET, "/api/v1/incidents", Some(&outsider), None).await;
    let ids: Vec<i64> = listed.json().as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [instance.id]);
    assert_eq!(app.api(Method::GET, &path, Some(&outsider), None).await.status, StatusCode::NOT_FOUND);
    let ack = format!("{path}/acknowledge");
    assert_eq!(app.api(Method::POST, &ack, Some(&outsider), None).await.status, StatusCode::NOT_FOUND);

    // A viewer member sees it but may not act.
    let shown = app.api(Method::GET, &path, Some(&viewer), None).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["project"], "shop");
    assert_eq!(shown.json()["alerts"][0]["labels"]["service"], "web");
    assert_eq!(app.api(Method::POST, &ack, Some(&viewer), None).await.status, StatusCode::FORBIDDEN);

    // A developer acknowledges once; twice is a conflict; then resolves with a note.
    let acked = app.api(Method::POST, &ack, Some(&developer), Some(r#"{"note": "on it"}"#)).await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.text());
    assert_eq!(acked.json()["status"], "acknowledged");
    assert_eq!(acked.json()["assignee"], "dave");
    let again = app.api(Method::POST, &ack, Some(&developer), None).await;
    assert_eq!((again.status, again.error_code().as_str()), (StatusCode::CONFLICT, "wrong_status"));
    let noted =
        app.api(Method::POST, &format!("{path}/notes"), Some(&developer), Some(r#"{"text": "rolled back"}"#)).await;
    assert_eq!(noted.status, StatusCode::OK);
    let resolved = app.api(Method::POST, &format!("{path}/resolve"), Some(&developer), None).await;
    let resolved = resolved.json();
    assert_eq!(resolved["status"], "resolved");
    let kinds: Vec<&str> =
        resolved["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["triggered", "acknowledged", "note", "resolved"]);

    // Filters and bad input.
    let open = app.api(Method::GET, "/api/v1/incidents?open=true", Some(&developer), None).await;
    let ids: Vec<i64> = open.json().as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [instance.id]);
    let bad = app.api(Method::GET, "/api/v1/incidents?status=sleeping", Some(&developer), None).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad = app.api(Method::POST, &format!("{path}/notes"), Some(&developer), Some(r#"{"text": " "}"#)).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}
