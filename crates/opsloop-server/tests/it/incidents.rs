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
    // A deployment of web just before: the suspect. One of another service is not.
    let mut suspects = Vec::new();
    for service in ["web", "worker"] {
        let release = app.store.create_release(project.id, service, "v2", "abc123", "{}").await.unwrap();
        let new = opsloop_store::NewDeployment {
            status: opsloop_core::DeploymentStatus::Queued,
            environment: "production",
            service,
            release_id: release.id,
            strategy: "blue-green",
            triggered_by: "dave",
            pipeline_id: None,
        };
        suspects.push(app.store.create_deployment(&project, new, crate::app::ACTOR).await.unwrap().id);
    }
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
    let changes = shown.json()["changes"].clone();
    assert_eq!(changes.as_array().unwrap().len(), 1, "{changes}");
    assert_eq!(changes[0]["deployment"], suspects[0]);
    assert_eq!(changes[0]["commit"], "abc123");
    assert_eq!(changes[0]["url"], format!("/projects/shop/deployments/{}", suspects[0]));
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

#[tokio::test]
async fn who_is_on_call_follows_the_rotation_in_the_schedules_zone() {
    let app = TestApp::new().await;
    let reader = app.user("reader").await;
    let token = app.token(&reader, Role::Viewer).await;
    let at = |time: &str| format!("/api/v1/oncall/primary?at={}", time.replace('+', "%2B"));
    // Handoffs at 09:00 Berlin on Mondays: alice's first week, bob's second, across the DST
    // change of 29 March (09:00 is then 07:00Z, not 08:00Z).
    let cases = [
        ("2026-03-23T09:00", "alice"),
        ("2026-03-30T08:59", "alice"),
        ("2026-03-30T09:00", "bob"),
        ("2026-03-30T06:30:00Z", "alice"),
        ("2026-03-30T07:00:00Z", "bob"),
        ("2026-04-06T09:00+02:00", "alice"),
    ];
    for (time, user) in cases {
        let reply = app.api(Method::GET, &at(time), Some(&token), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{time}: {}", reply.text());
        assert_eq!(reply.json()["user"], user, "{time}");
    }
    let shift = app.api(Method::GET, &at("2026-03-31T12:00"), Some(&token), None).await.json();
    assert_eq!(
        (shift["since"].as_str(), shift["until"].as_str()),
        (Some("2026-03-30T07:00:00Z"), Some("2026-04-06T07:00:00Z"))
    );

    let unknown = app.api(Method::GET, "/api/v1/oncall/primray", Some(&token), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.text().contains("did you mean `primary`"), "{}", unknown.text());
    let bad = app.api(Method::GET, &at("tomorrow"), Some(&token), None).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    let shifts = app
        .api(Method::GET, "/api/v1/oncall/primary/shifts?from=2026-03-23T08:00:00Z&days=14", Some(&token), None)
        .await;
    let users: Vec<&str> = shifts
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["user"].as_str().unwrap())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|s| if s == "alice" { "alice" } else { "bob" })
        .collect();
    assert_eq!(users, ["alice", "bob", "alice"]);
    let calendar = app.api(Method::GET, "/api/v1/oncall/primary/calendar.ics", Some(&token), None).await;
    assert_eq!(calendar.status, StatusCode::OK);
    let text = calendar.text();
    assert!(text.starts_with("BEGIN:VCALENDAR\r\n") && text.contains("BEGIN:VEVENT"), "{text}");
}

#[tokio::test]
async fn checks_run_on_demand_and_heartbeats_take_pings_by_token() {
    let app = TestApp::new().await;
    let reader = app.user("reader").await;
    let reader_token = app.token(&reader, Role::Developer).await;
    let admin_token = app.token(&app.admin, Role::Admin).await;
    let ran = app.api(Method::POST, "/api/v1/checks/_truth/run", Some(&reader_token), None).await;
    assert_eq!(ran.status, StatusCode::OK, "{}", ran.text());
    assert_eq!(ran.json()["success"], true);
    let unknown = app.api(Method::POST, "/api/v1/checks/_nothing/run", Some(&reader_token), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Only an admin sees the ping URL: it is the credential.
    let listed = app.api(Method::GET, "/api/v1/checks", Some(&reader_token), None).await.json();
    assert_eq!(listed["heartbeats"][0]["key"], "_nightly");
    assert!(listed["heartbeats"][0].get("ping_url").is_none());
    let listed = app.api(Method::GET, "/api/v1/checks", Some(&admin_token), None).await.json();
    assert_eq!(listed["heartbeats"][0]["state"], "new");
    let url = listed["heartbeats"][0]["ping_url"].as_str().unwrap().to_owned();
    let path = &url[url.find("/ping/").unwrap()..];
    assert_eq!(app.api(Method::POST, &format!("{path}/start"), None, None).await.status, StatusCode::OK);
    let pinged = app.api(Method::POST, path, None, Some("backup done\n12 GB")).await;
    assert_eq!((pinged.status, pinged.text().as_str()), (StatusCode::OK, "OK"));
    let listed = app.api(Method::GET, "/api/v1/checks", Some(&admin_token), None).await.json();
    assert_eq!(listed["heartbeats"][0]["state"], "up");
    assert_eq!(listed["heartbeats"][0]["last_lines"][1], "12 GB");
    // A wrong token, or a bad action, is refused without saying more.
    assert_eq!(app.api(Method::GET, "/ping/not-a-token", None, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.api(Method::GET, &format!("{path}/sleep"), None, None).await.status, StatusCode::BAD_REQUEST);
}
