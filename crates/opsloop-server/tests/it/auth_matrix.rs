//! The auth matrix: every route of the route table, not a hand-kept list, is checked for what
//! anonymous callers, under-privileged tokens and the right role get. A route added without
//! a fixture here fails the test, so nobody forgets to think about its access.

use axum::http::{Method, StatusCode};
use opsloop_core::Role;
use opsloop_server::auth::Access;
use opsloop_server::routes::Surface;

use crate::app::TestApp;

const SILENCE: &str = r#"{"matchers": [{"name": "alertname", "value": "Fixture", "isRegex": false}],
    "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "t", "comment": "c"}"#;

const TERRAFORM_STATE: &str = r#"{"version": 4, "serial": 1, "lineage": "fixture", "outputs": {}, "resources": []}"#;

/// A valid body for each write route, keyed by method and route pattern.
fn fixture_body(method: &Method, path: &str) -> Option<&'static str> {
    Some(match (method.as_str(), path) {
        ("POST", "/api/v1/projects") => r#"{"name": "fresh", "repo_url": "https://git.example.com/fresh.git"}"#,
        ("PATCH", "/api/v1/projects/{project}") => r#"{"description": "changed"}"#,
        ("PUT", "/api/v1/projects/{project}/members/{username}") => r#"{"role": "viewer"}"#,
        ("POST", "/api/v1/tokens") => r#"{"name": "made by test"}"#,
        ("POST", "/api/v1/admin/users") => r#"{"username": "newcomer"}"#,
        ("POST", "/api/v1/projects/{project}/pipelines") => r#"{"ref": "main"}"#,
        ("PUT", "/api/v1/projects/{project}/variables/{key}" | "/api/v1/admin/variables/{key}") => {
            r#"{"value": "a value"}"#
        }
        ("POST", "/api/v1/projects/{project}/pipelines/{pipeline}/cancel") => "",
        ("POST", "/api/v1/jobs/{job}/retry" | "/api/v1/jobs/{job}/play" | "/api/v1/jobs/{job}/cancel") => "",
        ("PUT", "/api/v1/projects/{project}/polling") => r#"{"interval_seconds": 60}"#,
        ("PUT", "/api/v1/projects/{project}/ci-settings") => {
            r#"{"max_concurrent_jobs": 2, "auto_cancel_redundant": true}"#
        }
        ("POST", "/api/v1/projects/{project}/schedules") => r#"{"cron": "0 3 * * *"}"#,
        ("PATCH", "/api/v1/projects/{project}/schedules/{schedule}") => r#"{"enabled": false}"#,
        ("POST", "/api/v1/projects/{project}/hooks/{forge}") => r#"{"ref": "refs/heads/main", "after": "00"}"#,
        ("POST", "/api/v1/projects/{project}/trigger/pipeline") => r#"{"token": "olpt_forged", "ref": "main"}"#,
        ("POST", "/api/v1/projects/{project}/deployments" | "/api/v1/projects/{project}/rollbacks") => {
            r#"{"service": "web", "environment": "production"}"#
        }
        ("POST", "/api/v1/projects/{project}/environments/apply") => "",
        ("POST", "/api/v1/projects/{project}/environments/{environment}/stop") => "{}",
        ("POST", "/api/v1/projects/{project}/deployments/{deployment}/approve") => "",
        ("POST", "/api/v1/projects/{project}/triggers") => r#"{"description": "deploy script"}"#,
        ("POST", "/api/v1/admin/agents") => r#"{"name": "builder"}"#,
        ("POST", "/api/v1/projects/{project}/notifications") => r#"{"url": "https://hooks.example.com/opsloop"}"#,
        ("POST", "/api/v1/incidents/{id}/acknowledge" | "/api/v1/incidents/{id}/resolve") => "",
        ("POST", "/api/v1/checks/{check}/run") => "",
        ("POST", "/api/v1/incidents/{id}/notes") => r#"{"text": "looking into it"}"#,
        ("POST", "/api/v1/agent/register") => r#"{"tags": ["linux"], "concurrency": 2}"#,
        // Prometheus's API: parameters go in the query string; remote write's body is snappy
        // (one zero byte: an empty WriteRequest).
        ("POST", "/prometheus/api/v1/write") => "\u{0}",
        ("POST", "/alertmanager/api/v2/alerts") => r#"[{"labels": {"alertname": "Fixture"}}]"#,
        ("POST", "/alertmanager/api/v2/silences") => SILENCE,
        ("POST", p) if p.starts_with("/prometheus/") => "",
        // Loki's push: an empty JSON push stores nothing and needs no project.
        ("POST", "/loki/api/v1/push") => r#"{"streams": []}"#,
        ("POST", p) if p.starts_with("/loki/") => "",
        ("POST", "/api/v1/agent/jobs/request") => "",
        ("POST", "/api/v1/agent/jobs/{job}/events") => r#"{"events": []}"#,
        ("PUT", "/api/v1/agent/jobs/{job}/artifacts" | "/api/v1/agent/jobs/{job}/caches/{key}") => "",
        ("POST", "/api/v1/agent/jobs/{job}/finish") => {
            r#"{"outcome": {"status": "Success", "exit_code": 0, "duration": {"secs": 1, "nanos": 0}, "coverage": null,
                "after_script_failed": false, "tail": [], "attempts": 1, "tests": null}}"#
        }
        ("POST", "/api/v1/projects/{project}/terraform/state/{name}") => TERRAFORM_STATE,
        ("POST", "/api/v1/projects/{project}/terraform/state/{name}/lock") => {
            r#"{"ID": "fixture-lock", "Operation": "OperationTypeApply", "Who": "t@host"}"#
        }
        ("DELETE", _) | ("GET", _) => return Some(""),
        _ => return None,
    })
}

#[tokio::test]
async fn every_api_route_denies_by_default_and_allows_the_right_role() {
    let specs = opsloop_server::route_specs();
    let api_routes: Vec<_> =
        specs.iter().filter(|spec| matches!(spec.surface, Surface::Api | Surface::Compat)).collect();
    assert!(api_routes.len() >= 28, "the route table lost routes: {}", api_routes.len());

    for (index, spec) in api_routes.iter().enumerate() {
        let app = TestApp::new().await;
        let label = format!("{} {}", spec.method, spec.path);
        let body = fixture_body(&spec.method, spec.path)
            .unwrap_or_else(|| panic!("{label}: add a fixture body to the auth matrix for this new route"));
        let body = (!body.is_empty()).then_some(body);

        // A project, a second member and a token id for the path parameters.
        let project = app.project(&format!("p{index}")).await;
        let bob = app.user("bob").await;
        app.store.set_member(&project, &bob, Role::Developer, crate::app::ACTOR).await.unwrap();

        // The principal with exactly the least role the route needs.
        let (right_user, right_role) = match spec.access {
            Access::Public | Access::Webhook | Access::Agent => (app.admin.clone(), Role::Viewer),
            Access::Authenticated => (app.user("reader").await, Role::Viewer),
            Access::AuthenticatedWrite => (app.user("writer").await, Role::Developer),
            Access::Admin => (app.admin.clone(), Role::Admin),
            Access::Project(role) | Access::Job(role) => {
                let member = app.user("member").await;
                app.store.set_member(&project, &member, role, crate::app::ACTOR).await.unwrap();
                (member, role)
            }
        };
        let right_token = app.token(&right_user, right_role).await;
        let own_token_id = app.store.list_tokens(right_user.id).await.unwrap()[0].id;
        let pipeline = app.store.create_pipeline(project.id, "main", "api", crate::app::ACTOR).await.unwrap();
        let variable = opsloop_store::StoredVariable {
            key: "TOKEN".into(),
            environment_scope: "*".into(),
            ciphertext: "sealed".into(),
            masked: false,
            protected: false,
            file: false,
            updated_at: 0,
        };
        app.store.set_variable(&project, &variable, crate::app::ACTOR).await.unwrap();
        app.store.set_instance_variable(&variable, crate::app::ACTOR).await.unwrap();
        let schedule = opsloop_store::Schedule {
            id: 0,
            project_id: project.id,
            description: String::new(),
            cron: "0 3 * * *".into(),
            timezone: "UTC".into(),
            git_ref: "main".into(),
            variables: "{}".into(),
            enabled: true,
            next_run_at: i64::MAX,
            last_pipeline_id: None,
            created_at: 0,
        };
        let schedule = app.store.create_schedule(&project, &schedule, crate::app::ACTOR).await.unwrap();
        let jobs = app.store.start_pipeline(pipeline.id, "0", &[("build".into(), "build".into())]).await.unwrap();
        let staged = tempfile::tempdir().unwrap();
        std::fs::write(staged.path().join("out.txt"), "artifact").unwrap();
        let key = format!("fixture/{}.zip", jobs[0].id);
        app.state.objects().unwrap().put_dir(&key, staged.path().to_path_buf()).await.unwrap();
        app.store.record_artifacts(jobs[0].id, &key, 1, 1, None).await.unwrap();
        let hook = app
            .store
            .create_notification_hook(&project, "https://h.example/x", "sealed", &["job".to_owned()], crate::app::ACTOR)
            .await
            .unwrap();
        let trigger = app.store.create_trigger(&project, "fixture", "digest", crate::app::ACTOR).await.unwrap();
        let release = app.store.create_release(project.id, "web", "v1", "abc", "{}").await.unwrap();
        let fixture_deployment = opsloop_store::NewDeployment {
            status: opsloop_core::DeploymentStatus::Queued,
            environment: "production",
            service: "web",
            release_id: release.id,
            strategy: "blue-green",
            triggered_by: "fixture",
            pipeline_id: None,
        };
        let deployment = app.store.create_deployment(&project, fixture_deployment, crate::app::ACTOR).await.unwrap();
        let (agent_token, agent) =
            opsloop_server::agents::service::issue_agent_token(&app.store, "fixture", crate::app::ACTOR).await.unwrap();
        // An incident of the instance: every signed-in user sees it, writers act on it.
        let incident = opsloop_store::NewIncident {
            project_id: None,
            dedup_key: "fixture",
            title: "Fixture",
            severity: "critical",
            escalation_policy: "",
            alerts: "[]",
        };
        let (incident, _) = app.store.open_or_join_incident(&incident).await.unwrap();
        let silence_id = if spec.path.contains("{silence_id}") {
            let driver = opsloop_server::alerting::engine::driver(&app.state).await.unwrap();
            let silence = serde_json::from_str(SILENCE).unwrap();
            driver.with(|engine| engine.set_silence(silence, jiff::Timestamp::now())).unwrap()
        } else {
            String::new()
        };
        // A Terraform state with one version, written as Terraform would (by an owner).
        if spec.path.contains("/terraform/") {
            let owner = app.token(&app.admin, Role::Admin).await;
            let path = format!("/api/v1/projects/{}/terraform/state/primary", project.name);
            let written = app.api(Method::POST, &path, Some(&owner), Some(TERRAFORM_STATE)).await;
            assert_eq!(written.status, StatusCode::NO_CONTENT, "{}", written.text());
        }
        let id = if spec.path.starts_with("/api/v1/admin/agents/") {
            agent.id
        } else if spec.path.starts_with("/api/v1/incidents/") {
            incident.id
        } else {
            own_token_id
        };
        let path = spec
            .path
            .replace("{project}", &project.name)
            .replace("{username}", "bob")
            .replace("{pipeline}", &pipeline.id.to_string())
            .replace("{key}", "TOKEN")
            .replace("{schedule}", &schedule.id.to_string())
            .replace("{job}", &jobs[0].id.to_string())
            .replace("{position}", "0")
            .replace("{hook}", &hook.id.to_string())
            .replace("{trigger}", &trigger.id.to_string())
            .replace("{deployment}", &deployment.id.to_string())
            .replace("{environment}", "production")
            .replace("{name}", "primary")
            .replace("{serial}", "1")
            .replace("{silence_id}", &silence_id)
            .replace("{check}", "_truth")
            .replace("/compare", &format!("/compare?from={0}&to={0}", deployment.id))
            .replace("{*path}", "out.txt")
            .replace("{id}", &id.to_string());
        // An agent's request for work would wait for one.
        let path = if spec.path == "/api/v1/agent/jobs/request" { format!("{path}?wait_seconds=0") } else { path };
        // Prometheus's API takes its parameters in the query string (or a form body).
        let path = match spec.path {
            "/prometheus/api/v1/query" | "/prometheus/api/v1/format_query" | "/prometheus/api/v1/query_exemplars" => {
                format!("{path}?query=up")
            }
            "/prometheus/api/v1/query_range" => format!("{path}?query=up&start=0&end=60&step=15"),
            "/prometheus/api/v1/series" => format!("{path}?match[]=up"),
            // Loki's too; `{app="x"}` is a selector and a log query.
            "/loki/api/v1/query"
            | "/loki/api/v1/query_range"
            | "/loki/api/v1/index/stats"
            | "/loki/api/v1/format_query"
            | "/loki/api/v1/label/{name}/values" => format!("{path}?query=%7Bapp%3D%22x%22%7D"),
            "/loki/api/v1/series" => format!("{path}?match[]=%7Bapp%3D%22x%22%7D"),
            _ => path,
        };

        // 1. No credentials: 401 unless the route is public; a webhook without its signature too.
        let anonymous = app.api(spec.method.clone(), &path, None, body).await;
        if spec.access == Access::Webhook {
            let path = path.replace("{forge}", "github");
            let unsigned_body = if path.contains("/trigger/") { body } else { Some(r#"{"ref": "refs/heads/main"}"#) };
            let unsigned = app.api(spec.method.clone(), &path, None, unsigned_body).await;
            assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED, "{label} without a signature");
            continue;
        }
        if spec.access == Access::Public {
            assert!(anonymous.status.is_success(), "{label}: public route answered {}", anonymous.status);
            continue;
        }
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{label} without credentials");
        assert_eq!(anonymous.error_code(), "unauthorized", "{label}");
        if spec.access == Access::Agent {
            // Agent routes take agent tokens only: no user credential passes, not even an admin's.
            for token in ["olpa_forged", right_token.as_str()] {
                let refused = app.api(spec.method.clone(), &path, Some(token), body).await;
                assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{label} with {token}");
            }
            // The agent passes; a job that is not running on it is gone for it.
            let allowed = app.api(spec.method.clone(), &path, Some(&agent_token), body).await;
            let passed = allowed.status.is_success() || allowed.error_code() == "job_gone";
            assert!(passed, "{label} with an agent token answered {}: {}", allowed.status, allowed.text());
            app.store.revoke_agent(agent.id, crate::app::ACTOR).await.unwrap();
            let revoked = app.api(spec.method.clone(), &path, Some(&agent_token), body).await;
            assert_eq!(revoked.status, StatusCode::UNAUTHORIZED, "{label} with a revoked agent token");
            continue;
        }

        // 2. A bad token is no better than none.
        let forged = app.api(spec.method.clone(), &path, Some("olp_forged"), body).await;
        assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{label} with a forged token");

        // 3. A viewer token on a write route: 403 (a non-member gets 404 on project routes).
        // Another system's API may read with POST (Prometheus's long queries): its Access says.
        let reads_with_post = spec.surface == Surface::Compat && spec.access == Access::Authenticated;
        if spec.method != Method::GET && !reads_with_post {
            let viewer = app.user("viewer").await;
            if let Access::Project(_) | Access::Job(_) = spec.access {
                app.store.set_member(&project, &viewer, Role::Viewer, crate::app::ACTOR).await.unwrap();
            }
            let viewer_token = app.token(&viewer, Role::Viewer).await;
            let refused = app.api(spec.method.clone(), &path, Some(&viewer_token), body).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{label} with a viewer token: {}", refused.text());
            // The admin's own power does not leak through a viewer-capped token.
            let capped_admin = app.token(&app.admin, Role::Viewer).await;
            let refused = app.api(spec.method.clone(), &path, Some(&capped_admin), body).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{label} with an admin's viewer token");
        }

        // 4. One role below what the route needs: refused.
        let below = match spec.access {
            Access::Project(role) | Access::Job(role) if role > Role::Viewer => {
                Some(Role::PROJECT_ROLES[role as usize - 1])
            }
            Access::Admin => Some(Role::Owner),
            _ => None,
        };
        if let Some(below) = below {
            let weaker = app.token(&right_user, below).await;
            let refused = app.api(spec.method.clone(), &path, Some(&weaker), body).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{label} with a {below} token");
        }
        if let Access::Project(_) | Access::Job(_) = spec.access {
            let outsider = app.user("outsider").await;
            let outsider_token = app.token(&outsider, Role::Owner).await;
            let hidden = app.api(spec.method.clone(), &path, Some(&outsider_token), body).await;
            assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{label} for a non-member");
        }

        // 5. The right role succeeds.
        let allowed = app.api(spec.method.clone(), &path, Some(&right_token), body).await;
        // Cancelling a pipeline that is not running is refused for what it is, after access passed.
        // So is acting on a job in the wrong state (the fixture job is pending), and deploying
        // from a project whose repository is not there.
        let passed = allowed.status.is_success()
            || matches!(
                allowed.error_code().as_str(),
                "not_running" | "wrong_status" | "release_unavailable" | "not_waiting"
            );
        assert!(passed, "{label} with a {right_role} token answered {}: {}", allowed.status, allowed.text());
    }
}

#[tokio::test]
async fn every_ui_route_sends_anonymous_visitors_to_login() {
    let app = TestApp::new().await;
    app.project("web").await;
    for spec in opsloop_server::route_specs().iter().filter(|spec| spec.surface == Surface::Ui) {
        let path = spec.path.replace("{project}", "web").replace("{username}", "admin").replace("{id}", "1");
        let reply = app.api(spec.method.clone(), &path, None, None).await;
        match (spec.access, spec.method.clone()) {
            (Access::Public, Method::GET) => assert!(reply.status.is_success(), "{path}: {}", reply.status),
            // The login form's POST has no CSRF cookie here, so it is refused before any check of credentials.
            (Access::Public, _) => assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}"),
            (_, Method::GET) => {
                assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
                let location = reply.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
                assert!(location.starts_with("/login"), "{path} redirected to {location}");
            }
            _ => assert_eq!(reply.status, StatusCode::SEE_OTHER, "{} {path}: {}", spec.method, reply.status),
        }
    }
}

#[tokio::test]
async fn the_openapi_document_and_the_route_table_agree() {
    let app = TestApp::new().await;
    let reply = app.api(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let document = reply.json();
    assert!(document["openapi"].as_str().unwrap_or_default().starts_with("3."), "{document}");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routed: Vec<(String, String)> = opsloop_server::route_specs()
        .into_iter()
        .filter(|spec| spec.surface == Surface::Api && spec.path != "/api/v1/openapi.json")
        .map(|spec| (spec.method.to_string(), spec.path.replace("{*", "{")))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed, "every API route is documented, and every documented operation exists");
}

#[tokio::test]
async fn public_routes_are_a_short_explicit_list() {
    let public: Vec<String> = opsloop_server::route_specs()
        .into_iter()
        .filter(|spec| spec.access == Access::Public)
        .map(|spec| format!("{} {}", spec.method, spec.path))
        .collect();
    assert_eq!(
        public,
        [
            "GET /healthz",
            "GET /readyz",
            "GET /metrics",
            "GET /api/v1/openapi.json",
            "GET /assets/style.css",
            "GET /assets/live.js",
            "GET /assets/favicon.svg",
            "GET /favicon.ico",
            "GET /login",
            "POST /login",
            "GET /prometheus/-/healthy",
            "GET /prometheus/-/ready",
            // Alertmanager's probes, as public as Alertmanager's own.
            "GET /alertmanager/-/healthy",
            "GET /alertmanager/-/ready",
            // Loki's readiness probe, as public as Loki's own.
            "GET /loki/ready"
        ]
    );
    let signed: Vec<String> = opsloop_server::route_specs()
        .into_iter()
        .filter(|spec| spec.access == Access::Webhook)
        .map(|spec| format!("{} {}", spec.method, spec.path))
        .collect();
    assert_eq!(
        signed,
        [
            "POST /api/v1/projects/{project}/hooks/{forge}",
            "POST /api/v1/projects/{project}/trigger/pipeline",
            // PagerDuty Events v2 in: the routing key in the body is an opsloop token.
            "POST /integrations/pagerduty/v2/enqueue",
            // Signed one-time links in pages: acknowledge without signing in.
            "GET /incidents/link/{token}",
            "POST /incidents/link/{token}",
            // Heartbeat pings: the token in the URL is the credential, as at Healthchecks.io.
            "GET /ping/{token}",
            "POST /ping/{token}",
            "GET /ping/{token}/{action}",
            "POST /ping/{token}/{action}"
        ],
        "routes that trust a signature instead of a user"
    );
    let agents: Vec<String> = opsloop_server::route_specs()
        .into_iter()
        .filter(|spec| spec.access == Access::Agent)
        .map(|spec| format!("{} {}", spec.method, spec.path))
        .collect();
    assert!(
        agents.iter().all(|route| route.contains(" /api/v1/agent/")),
        "agent tokens reach only the agent API: {agents:?}"
    );
}

#[tokio::test]
async fn revoked_tokens_stop_working_at_once() {
    let app = TestApp::new().await;
    let (secret, token) =
        opsloop_server::accounts::issue_token(&app.store, &app.admin, "t", Role::Admin, None, crate::app::ACTOR)
            .await
            .unwrap();
    let other = app.token(&app.admin, Role::Admin).await;
    assert_eq!(app.api(Method::GET, "/api/v1/me", Some(&secret), None).await.status, StatusCode::OK);
    let revoke = app.api(Method::DELETE, &format!("/api/v1/tokens/{}", token.id), Some(&other), None).await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    // Cached a moment ago, yet refused now: revocation clears the cache.
    assert_eq!(app.api(Method::GET, "/api/v1/me", Some(&secret), None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = TestApp::new().await;
    let (secret, _) =
        opsloop_server::accounts::issue_token(&app.store, &app.admin, "t", Role::Admin, Some(1), crate::app::ACTOR)
            .await
            .unwrap();
    assert_eq!(app.api(Method::GET, "/api/v1/me", Some(&secret), None).await.status, StatusCode::OK);
    let clock = opsloop_core::clock::ManualClock::new(opsloop_core::Clock::now_ms(&opsloop_core::SystemClock));
    clock.advance_ms(2 * 86_400_000);
    let later = TestApp::with_clock(std::sync::Arc::new(clock), &app).await;
    assert_eq!(later.api(Method::GET, "/api/v1/me", Some(&secret), None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_cannot_mint_a_stronger_token() {
    let app = TestApp::new().await;
    let developer = app.token(&app.admin, Role::Developer).await;
    let reply =
        app.api(Method::POST, "/api/v1/tokens", Some(&developer), Some(r#"{"name": "x", "role": "admin"}"#)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let reply =
        app.api(Method::POST, "/api/v1/tokens", Some(&developer), Some(r#"{"name": "x", "role": "viewer"}"#)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert!(reply.json()["token"].as_str().unwrap_or_default().starts_with("olp_"));
}

#[tokio::test]
async fn only_owners_make_owners() {
    let app = TestApp::new().await;
    let project = app.project("web").await;
    let maintainer = app.user("maint").await;
    app.user("carol").await;
    app.store.set_member(&project, &maintainer, Role::Maintainer, crate::app::ACTOR).await.unwrap();
    let token = app.token(&maintainer, Role::Owner).await;
    let reply =
        app.api(Method::PUT, "/api/v1/projects/web/members/carol", Some(&token), Some(r#"{"role": "owner"}"#)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let reply = app.api(Method::DELETE, "/api/v1/projects/web/members/admin", Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "a maintainer removed the owner: {}", reply.text());
    let reply = app
        .api(Method::PUT, "/api/v1/projects/web/members/carol", Some(&token), Some(r#"{"role": "developer"}"#))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
}

#[tokio::test]
async fn every_change_lands_in_the_audit_log_with_actor_and_address() {
    let app = TestApp::new().await;
    let token = app.token(&app.admin, Role::Admin).await;
    let created = app
        .api(Method::POST, "/api/v1/projects", Some(&token), Some(r#"{"name": "audited", "repo_url": "/srv/git/a"}"#))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let audit = app.api(Method::GET, "/api/v1/admin/audit?limit=1", Some(&token), None).await.json();
    let entry = &audit["items"][0];
    assert_eq!(entry["action"], "project.create");
    assert_eq!(entry["actor"], "admin");
    assert_eq!(entry["target"], "audited");
    assert_eq!(entry["source_ip"], "127.0.0.1");
}

#[tokio::test]
async fn project_lists_show_each_change_at_once_despite_the_page_cache() {
    let app = TestApp::new().await;
    let admin = app.token(&app.admin, Role::Admin).await;
    let dana = app.user("dana").await;
    let dana_token = app.token(&dana, Role::Developer).await;
    let names = |reply: crate::app::Reply| -> Vec<String> {
        reply.json()["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
    };
    assert!(names(app.api(Method::GET, "/api/v1/projects", Some(&admin), None).await).is_empty());
    let body = r#"{"name": "web", "repo_url": "/srv/git/web"}"#;
    assert_eq!(app.api(Method::POST, "/api/v1/projects", Some(&admin), Some(body)).await.status, StatusCode::CREATED);
    assert_eq!(names(app.api(Method::GET, "/api/v1/projects", Some(&admin), None).await), ["web"]);
    assert!(names(app.api(Method::GET, "/api/v1/projects", Some(&dana_token), None).await).is_empty());
    let add =
        app.api(Method::PUT, "/api/v1/projects/web/members/dana", Some(&admin), Some(r#"{"role": "viewer"}"#)).await;
    assert_eq!(add.status, StatusCode::NO_CONTENT);
    assert_eq!(names(app.api(Method::GET, "/api/v1/projects", Some(&dana_token), None).await), ["web"]);
    assert_eq!(
        app.api(Method::DELETE, "/api/v1/projects/web", Some(&admin), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(names(app.api(Method::GET, "/api/v1/projects", Some(&dana_token), None).await).is_empty());
    assert!(names(app.api(Method::GET, "/api/v1/projects", Some(&admin), None).await).is_empty());
}

/// A pipeline's token (CI_JOB_TOKEN) reaches its own project's deployment routes through the
/// API and nothing else: not the project's other routes, not another project, not the web UI,
/// not approvals.
#[tokio::test]
async fn a_pipeline_token_reaches_only_its_projects_deployment_routes() {
    let app = TestApp::new().await;
    let project = app.project("web").await;
    let other = app.project("other").await;
    let pipeline = app.store.create_pipeline(project.id, "main", "push", crate::app::ACTOR).await.unwrap();
    let token = "olpj_fixture-token-of-a-pipeline";
    let record = opsloop_store::PipelineToken {
        pipeline_id: pipeline.id,
        project_id: project.id,
        username: String::new(),
        expires_at: i64::MAX,
    };
    app.store.create_pipeline_token(&opsloop_server::auth::credentials::digest(token), &record).await.unwrap();

    let reply = app.api(Method::GET, "/api/v1/projects/web/deployments", Some(token), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = app.api(Method::GET, "/api/v1/projects/web/environments", Some(token), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    for (method, path) in [
        (Method::GET, "/api/v1/projects/web/variables"),
        (Method::GET, "/api/v1/projects/web/members"),
        (Method::POST, "/api/v1/projects/web/environments/apply"),
        (Method::GET, "/api/v1/me"),
        (Method::GET, "/api/v1/projects"),
    ] {
        let reply = app.api(method.clone(), path, Some(token), None).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}: {}", reply.text());
    }
    // Terraform's backend: a pipeline nobody started acts as a developer, so it reads (plans)
    // but neither writes nor deletes a state.
    let state = "/api/v1/projects/web/terraform/state/ci";
    let reply = app.api(Method::GET, state, Some(token), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    let body = r#"{"version": 4, "serial": 1, "lineage": "l", "resources": []}"#;
    let reply = app.api(Method::POST, state, Some(token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let reply = app.api(Method::DELETE, state, Some(token), None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let reply = app.api(Method::GET, &format!("/api/v1/projects/{}/deployments", other.name), Some(token), None).await;
    assert!(matches!(reply.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND), "{}", reply.text());
    let release = app.store.create_release(project.id, "web", "v1", "abc", "{}").await.unwrap();
    let waiting = opsloop_store::NewDeployment {
        status: opsloop_core::DeploymentStatus::WaitingApproval,
        environment: "production",
        service: "web",
        release_id: release.id,
        strategy: "blue-green",
        triggered_by: "dana",
        pipeline_id: None,
    };
    let deployment = app.store.create_deployment(&project, waiting, crate::app::ACTOR).await.unwrap();
    let approve = format!("/api/v1/projects/web/deployments/{}/approve", deployment.id);
    let reply = app.api(Method::POST, &approve, Some(token), None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    // The UI's approve form, with the token as a bearer (no session, so no CSRF token needed).
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri(format!("/projects/web/deployments/{}/approve", deployment.id))
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let reply = app.send(request).await;
    assert!(!reply.status.is_success() && !reply.status.is_redirection(), "{}: {}", reply.status, reply.text());
    assert_eq!(
        app.store.deployment(deployment.id).await.unwrap().unwrap().status,
        opsloop_core::DeploymentStatus::WaitingApproval
    );
}
