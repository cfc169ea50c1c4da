//! Browser-side security in-process: login CSRF, session CSRF on forms, the one-time password
//! flow, and login rate limiting. (The real-Chromium walk-through lives in the binary's tests.)

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

use crate::app::{Reply, TestApp};

fn set_cookies(reply: &Reply) -> Vec<String> {
    reply.headers.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
}

fn cookie_value(reply: &Reply, name: &str) -> Option<String> {
    set_cookies(reply).iter().find_map(|c| {
        c.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
    })
}

fn hidden_csrf(page: &str) -> String {
    let marker = r#"name="_csrf" value=""#;
    let start = page.find(marker).expect("a CSRF field on the page") + marker.len();
    page[start..].split('"').next().unwrap_or_default().to_owned()
}

async fn form(app: &TestApp, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Reply {
    let body = serde_urlencoded::to_string(fields).unwrap();
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .body(Body::from(body))
        .unwrap();
    app.send(request).await
}

async fn get(app: &TestApp, path: &str, cookie: &str) -> Reply {
    app.send(Request::builder().uri(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap()).await
}

/// Signs in through the login form; returns the session cookie.
async fn sign_in(app: &TestApp, username: &str, password: &str) -> Result<String, Reply> {
    let page = get(app, "/login", "").await;
    let login_csrf = cookie_value(&page, "opsloop_login_csrf").expect("login CSRF cookie");
    let csrf = hidden_csrf(&page.text());
    let reply = form(
        app,
        "/login",
        &format!("opsloop_login_csrf={login_csrf}"),
        &[("username", username), ("password", password), ("next", "/projects"), ("_csrf", &csrf)],
    )
    .await;
    match cookie_value(&reply, "opsloop_session") {
        Some(session) if reply.status == StatusCode::SEE_OTHER => Ok(format!("opsloop_session={session}")),
        _ => Err(reply),
    }
}

#[tokio::test]
async fn session_cookies_are_httponly_samesite_and_forms_need_the_csrf_token() {
    let app = TestApp::new().await;
    let page = get(&app, "/login", "").await;
    let login_csrf = cookie_value(&page, "opsloop_login_csrf").unwrap();
    // Without the matching form field, even the right password is refused.
    let reply = form(
        &app,
        "/login",
        &format!("opsloop_login_csrf={login_csrf}"),
        &[("username", "admin"), ("password", "admin password 123"), ("_csrf", "wrong")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let projects = get(&app, "/projects", &session).await;
    assert_eq!(projects.status, StatusCode::OK);
    let csrf = hidden_csrf(&projects.text());

    // A cross-site form post carries the cookie but not the token: refused, nothing created.
    let forged = form(&app, "/projects", &session, &[("name", "forged"), ("repo_url", "/a")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let forged = form(&app, "/projects", &session, &[("name", "forged"), ("repo_url", "/a"), ("_csrf", "guess")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(app.store.project_by_name("forged").await.unwrap().is_none());

    let made = form(&app, "/projects", &session, &[("name", "real"), ("repo_url", "/a"), ("_csrf", &csrf)]).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.text());
    assert!(app.store.project_by_name("real").await.unwrap().is_some());

    // The API accepts the session cookie only with the CSRF header on writes.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/projects")
        .header(header::COOKIE, &session)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name": "viaapi", "repo_url": "/a"}"#))
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::FORBIDDEN);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/projects")
        .header(header::COOKIE, &session)
        .header("x-csrf-token", &csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name": "viaapi", "repo_url": "/a"}"#))
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::CREATED);

    // Logging out ends the session on the server, not just in the browser.
    let reply = form(&app, "/logout", &session, &[("_csrf", &csrf)]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(get(&app, "/projects", &session).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn session_cookie_attributes() {
    let app = TestApp::new().await;
    let page = get(&app, "/login", "").await;
    let login_csrf = cookie_value(&page, "opsloop_login_csrf").unwrap();
    let csrf = hidden_csrf(&page.text());
    let reply = form(
        &app,
        "/login",
        &format!("opsloop_login_csrf={login_csrf}"),
        &[("username", "admin"), ("password", "admin password 123"), ("_csrf", &csrf)],
    )
    .await;
    let cookie = set_cookies(&reply).into_iter().find(|c| c.starts_with("opsloop_session=")).unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Secure"), "no TLS configured, so no Secure flag: {cookie}");
}

#[tokio::test]
async fn a_one_time_password_must_be_changed_before_anything_else() {
    let app = TestApp::new().await;
    let (_, password) =
        opsloop_server::accounts::create_user(&app.store, "newbie", None, false, crate::app::ACTOR).await.unwrap();
    let password = password.unwrap();
    let session = sign_in(&app, "newbie", &password).await.map_err(|r| r.text()).unwrap();
    let reply = get(&app, "/projects", &session).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.headers.get("location").unwrap(), "/settings?notice=must-change");
    let settings = get(&app, "/settings", &session).await;
    assert_eq!(settings.status, StatusCode::OK);
    let csrf = hidden_csrf(&settings.text());
    let changed = form(
        &app,
        "/settings/password",
        &session,
        &[
            ("current_password", &password),
            ("new_password", "a brand new passphrase"),
            ("confirm_password", "a brand new passphrase"),
            ("_csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.text());
    assert_eq!(get(&app, "/projects", &session).await.status, StatusCode::OK);
    assert!(sign_in(&app, "newbie", &password).await.is_err(), "the one-time password still works");
    assert!(sign_in(&app, "newbie", "a brand new passphrase").await.is_ok());
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_rate_limited() {
    let app = TestApp::new().await; // allows 3 failures per window
    for _ in 0..3 {
        let reply = sign_in(&app, "admin", "wrong password!!").await.unwrap_err();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = sign_in(&app, "admin", "admin password 123").await.unwrap_err();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "the right password is refused while blocked");
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn pages_escape_user_text() {
    let app = TestApp::new().await;
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let new = opsloop_store::NewProject {
        name: "xss",
        description: "<script>alert(1)</script>",
        repo_url: "/a",
        default_branch: "main",
        pipeline_file: ".gitlab-ci.yml",
    };
    app.store.create_project(new, app.admin.id, crate::app::ACTOR).await.unwrap();
    let page = get(&app, "/projects/xss", &session).await.text();
    assert!(!page.contains("<script>alert(1)</script>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[tokio::test]
async fn a_signed_in_person_can_sign_in_as_someone_else_and_password_changes_end_other_sessions() {
    let app = TestApp::new().await;
    app.user("bea").await;
    let first = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let second = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    // The login form carries the login cookie's token, not the session's: it still works.
    let page = get(&app, "/login", &first).await;
    let login_csrf = cookie_value(&page, "opsloop_login_csrf").unwrap();
    let reply = form(
        &app,
        "/login",
        &format!("{first}; opsloop_login_csrf={login_csrf}"),
        &[("username", "bea"), ("password", "a long enough password"), ("_csrf", &hidden_csrf(&page.text()))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());

    let settings = get(&app, "/settings", &first).await;
    let csrf = hidden_csrf(&settings.text());
    let fields = [
        ("current_password", "admin password 123"),
        ("new_password", "a different passphrase"),
        ("confirm_password", "a different passphrase"),
        ("_csrf", csrf.as_str()),
    ];
    assert_eq!(form(&app, "/settings/password", &first, &fields).await.status, StatusCode::SEE_OTHER);
    assert_eq!(get(&app, "/projects", &first).await.status, StatusCode::OK, "the session that changed it stays");
    assert_eq!(get(&app, "/projects", &second).await.status, StatusCode::SEE_OTHER, "other sessions end");
}

#[tokio::test]
async fn odd_methods_share_one_metrics_label() {
    let app = TestApp::new().await;
    for method in ["FOO", "BAR", "BAZ"] {
        let request = Request::builder().method(method).uri("/nothing").body(Body::empty()).unwrap();
        app.send(request).await;
    }
    let metrics = get(&app, "/metrics", "").await.text();
    assert!(metrics.contains(r#"method="OTHER""#), "{metrics}");
    assert!(!metrics.contains("FOO") && !metrics.contains("BAZ"), "{metrics}");
}

#[tokio::test]
async fn a_job_log_streams_as_server_sent_events_with_colours_escaped() {
    let app = TestApp::new().await;
    let project = app.project("web").await;
    let pipeline = app.store.create_pipeline(project.id, "main", "api", crate::app::ACTOR).await.unwrap();
    let jobs = app.store.start_pipeline(pipeline.id, "0", &[("build".into(), "build".into())]).await.unwrap();
    let job = jobs[0].id;
    app.store.job_started(job).await.unwrap();
    app.store.append_job_log(job, 0, "\u{1b}[32mcompiled\u{1b}[0m <ok>\n").await.unwrap();
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let page = get(&app, &format!("/projects/web/jobs/{job}"), &session).await.text();
    assert!(page.contains("<span class=\"ansi-2\">compiled</span> &lt;ok&gt;"), "{page}");
    assert!(page.contains(&format!("data-live=\"/projects/web/jobs/{job}/live?from=1\"")), "{page}");

    app.store.append_job_log(job, 1, "linked\n").await.unwrap();
    app.store.job_finished(job, opsloop_core::JobStatus::Success, Some(0)).await.unwrap();
    let stream = get(&app, &format!("/projects/web/jobs/{job}/live?from=1"), &session).await;
    assert_eq!(stream.headers.get("content-type").unwrap(), "text/event-stream");
    let body = stream.text();
    assert!(body.contains("data: linked") && body.contains("id: 2"), "{body}");
    assert!(body.contains("event: end"), "{body}");
    assert!(!body.contains("compiled"), "the stream starts where the page stopped");

    // A browser reconnecting after a dropped stream names the last event it saw.
    let request = Request::builder()
        .uri(format!("/projects/web/jobs/{job}/live?from=1"))
        .header(header::COOKIE, &session)
        .header("last-event-id", "2")
        .body(Body::empty())
        .unwrap();
    let resumed = app.send(request).await.text();
    assert!(!resumed.contains("linked") && resumed.contains("event: end"), "no line twice: {resumed}");
}

#[tokio::test]
async fn schedules_and_polling_are_managed_from_the_project_pages() {
    let app = TestApp::new().await;
    app.project("web").await;
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let pipelines = get(&app, "/projects/web/pipelines", &session).await.text();
    assert!(pipelines.contains(r#"href="/projects/web/schedules""#), "linked from the pipelines: {pipelines}");
    let page = get(&app, "/projects/web/schedules", &session).await.text();
    assert!(page.contains("No schedules yet.") && page.contains("Off."), "{page}");
    let csrf = hidden_csrf(&page);

    let bad = form(&app, "/projects/web/schedules", &session, &[("cron", "every night"), ("_csrf", &csrf)]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().contains("every night"), "the mistake is named: {}", bad.text());
    let fields =
        [("description", "nightly <build>"), ("cron", "0 3 * * *"), ("timezone", "Europe/Berlin"), ("_csrf", &csrf)];
    let created = form(&app, "/projects/web/schedules", &session, &fields).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.text());
    let page = get(&app, "/projects/web/schedules", &session).await.text();
    assert!(page.contains("nightly &lt;build&gt;") && page.contains("Europe/Berlin"), "{page}");
    assert!(page.contains("Disable"), "{page}");
    let id = app.store.list_schedules(app.store.project_by_name("web").await.unwrap().unwrap().id).await.unwrap()[0].id;

    let off = form(&app, &format!("/projects/web/schedules/{id}/disable"), &session, &[("_csrf", &csrf)]).await;
    assert_eq!(off.status, StatusCode::SEE_OTHER);
    let page = get(&app, "/projects/web/schedules", &session).await.text();
    assert!(page.contains(">disabled<") && page.contains("Enable"), "{page}");

    let too_often = form(&app, "/projects/web/polling", &session, &[("interval_seconds", "2"), ("_csrf", &csrf)]).await;
    assert_eq!(too_often.status, StatusCode::UNPROCESSABLE_ENTITY);
    let polled = form(&app, "/projects/web/polling", &session, &[("interval_seconds", "120"), ("_csrf", &csrf)]).await;
    assert_eq!(polled.status, StatusCode::SEE_OTHER);
    let page = get(&app, "/projects/web/schedules", &session).await.text();
    assert!(page.contains("polled every 120 seconds"), "{page}");

    let deleted = form(&app, &format!("/projects/web/schedules/{id}/delete"), &session, &[("_csrf", &csrf)]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(get(&app, "/projects/web/schedules", &session).await.text().contains("No schedules yet."));
    let forged = form(&app, "/projects/web/polling", &session, &[("interval_seconds", "0")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "no CSRF token, no change");
}

#[tokio::test]
async fn the_pipeline_page_sums_its_jobs_test_reports() {
    let app = TestApp::new().await;
    let project = app.project("web").await;
    let pipeline = app.store.create_pipeline(project.id, "main", "api", crate::app::ACTOR).await.unwrap();
    let jobs = [("unit".into(), "test".into()), ("e2e".into(), "test".into()), ("lint".into(), "test".into())];
    let jobs = app.store.start_pipeline(pipeline.id, "0", &jobs).await.unwrap();
    let report = |passed, failed, failures: &[&str]| opsloop_store::TestReport {
        passed,
        failed,
        skipped: 1,
        failures: failures.iter().map(|f| (*f).to_owned()).collect(),
    };
    app.store.record_test_report(jobs[0].id, &report(10, 1, &["cart.totals: expected <3>"])).await.unwrap();
    app.store.record_test_report(jobs[1].id, &report(4, 0, &[])).await.unwrap();
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let page = get(&app, &format!("/projects/web/pipelines/{}", pipeline.id), &session).await.text();
    assert!(page.contains("17 tests: "), "{page}");
    assert!(page.contains("14 passed") && page.contains("1 failed") && page.contains("2 skipped"), "{page}");
    assert!(page.contains("unit: <code>cart.totals: expected &lt;3&gt;</code>"), "{page}");

    let bare = app.store.create_pipeline(project.id, "main", "api", crate::app::ACTOR).await.unwrap();
    let page = get(&app, &format!("/projects/web/pipelines/{}", bare.id), &session).await.text();
    assert!(!page.contains("Tests"), "no test card without reports");
}

#[tokio::test]
async fn admins_register_and_revoke_agents_on_the_agents_page() {
    let app = TestApp::new().await;
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let page = get(&app, "/admin/agents", &session).await.text();
    assert!(page.contains("No agents yet.") && page.contains("Untagged jobs run on this server."), "{page}");
    let csrf = hidden_csrf(&page);
    let bad = form(&app, "/admin/agents", &session, &[("name", "Not A Name!"), ("_csrf", &csrf)]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text());
    let created = form(&app, "/admin/agents", &session, &[("name", "build-1"), ("_csrf", &csrf)]).await;
    assert_eq!(created.status, StatusCode::OK);
    let text = created.text();
    let token = text.split("olpa_").nth(1).map(|rest| format!("olpa_{}", rest.split('<').next().unwrap())).unwrap();
    assert!(
        text.contains("opsloop agent --server") && text.contains("--token-file") && text.contains(">offline<"),
        "{text}"
    );

    // The token works on the agent API, and the agent shows as online with its tags.
    let registered = app
        .api(
            Method::POST,
            "/api/v1/agent/register",
            Some(&token),
            Some(r#"{"tags": ["linux", "gpu"], "hostname": "box"}"#),
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());
    let page = get(&app, "/admin/agents", &session).await.text();
    assert!(page.contains(">online<") && page.contains("gpu, linux") && page.contains("box"), "{page}");

    let id = app.store.list_agents().await.unwrap()[0].id;
    let revoked = form(&app, &format!("/admin/agents/{id}/revoke"), &session, &[("_csrf", &csrf)]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert!(get(&app, "/admin/agents", &session).await.text().contains(">revoked<"));
    let refused = app.api(Method::POST, "/api/v1/agent/register", Some(&token), Some("{}")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_pipeline_page_draws_the_needs_graph() {
    let app = TestApp::new().await;
    let project = app.project("dag").await;
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let pipeline = app.store.create_pipeline(project.id, "main", "api", crate::app::ACTOR).await.unwrap();
    let jobs = [("compile", "build"), ("lint", "test"), ("unit <tests>", "test"), ("ship", "deploy")]
        .map(|(name, stage)| (name.to_owned(), stage.to_owned()));
    app.store.start_pipeline(pipeline.id, "abc", &jobs).await.unwrap();
    app.store
        .set_needs_graph(pipeline.id, r#"{"unit <tests>": ["compile"], "ship": ["unit <tests>", "lint"], "lint": []}"#)
        .await
        .unwrap();
    let page = get(&app, &format!("/projects/dag/pipelines/{}", pipeline.id), &session).await.text();
    assert!(page.contains(r#"<svg class="needs""#), "{page}");
    assert_eq!(page.matches(r#"class="edge""#).count(), 3, "one arrow per need: {page}");
    assert!(page.contains("unit &lt;tests&gt; needs compile"), "a text list for screen readers: {page}");
    assert!(page.contains("ship needs unit &lt;tests&gt;, lint"), "{page}");
}

#[tokio::test]
async fn maintainers_manage_variables_limits_and_webhooks_on_the_ci_settings_page() {
    let app = TestApp::new().await;
    app.project("shop").await;
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let pipelines = get(&app, "/projects/shop/pipelines", &session).await.text();
    assert!(pipelines.contains(r#"href="/projects/shop/settings/ci""#), "linked for maintainers: {pipelines}");
    let page = get(&app, "/projects/shop/settings/ci", &session).await.text();
    assert!(page.contains("No variables yet.") && page.contains("No webhooks yet."), "{page}");
    let csrf = hidden_csrf(&page);
    let base = "/projects/shop/settings/ci";

    let short = form(
        &app,
        &format!("{base}/variables"),
        &session,
        &[("key", "TOKEN"), ("value", "abc"), ("masked", "on"), ("_csrf", &csrf)],
    )
    .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY, "too short to mask");
    let saved = form(
        &app,
        &format!("{base}/variables"),
        &session,
        &[
            ("key", "DEPLOY_TOKEN"),
            ("value", "s3cret-value-123"),
            ("masked", "on"),
            ("environment_scope", "*"),
            ("_csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.text());
    let page = get(&app, base, &session).await.text();
    assert!(page.contains("DEPLOY_TOKEN") && page.contains(">masked<"), "{page}");
    assert!(!page.contains("s3cret-value-123"), "values are never shown");

    let limits = form(
        &app,
        &format!("{base}/limits"),
        &session,
        &[("max_concurrent_jobs", "2"), ("auto_cancel_redundant", "on"), ("_csrf", &csrf)],
    )
    .await;
    assert_eq!(limits.status, StatusCode::SEE_OTHER);
    let settings = app.store.ci_settings(app.store.project_by_name("shop").await.unwrap().unwrap().id).await.unwrap();
    assert_eq!((settings.max_concurrent_jobs, settings.auto_cancel_redundant), (2, true));

    let bad =
        form(&app, &format!("{base}/hooks"), &session, &[("url", "ftp://x"), ("pipeline", "on"), ("_csrf", &csrf)])
            .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let added = form(
        &app,
        &format!("{base}/hooks"),
        &session,
        &[("url", "https://chat.example.com/ci"), ("job", "on"), ("_csrf", &csrf)],
    )
    .await;
    assert_eq!(added.status, StatusCode::OK);
    assert!(added.text().contains("signing secret is shown only now"), "{}", added.text());
    let page = get(&app, base, &session).await.text();
    assert!(page.contains("https://chat.example.com/ci") && page.contains("none yet"), "{page}");
    let hook = app.store.notification_hooks(1).await.unwrap()[0].id;
    let log = get(&app, &format!("{base}/hooks/{hook}"), &session).await.text();
    assert!(log.contains("Nothing delivered yet."), "{log}");

    let deleted = form(
        &app,
        &format!("{base}/variables/delete"),
        &session,
        &[("key", "DEPLOY_TOKEN"), ("environment_scope", "*"), ("_csrf", &csrf)],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    let removed = form(&app, &format!("{base}/hooks/{hook}/delete"), &session, &[("_csrf", &csrf)]).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    let page = get(&app, base, &session).await.text();
    assert!(page.contains("No variables yet.") && page.contains("No webhooks yet."), "{page}");

    // Trigger tokens: shown once with a curl line, then revoked.
    let made =
        form(&app, &format!("{base}/triggers"), &session, &[("description", "release script"), ("_csrf", &csrf)]).await;
    assert_eq!(made.status, StatusCode::OK);
    assert!(made.text().contains("olpt_") && made.text().contains("/trigger/pipeline"), "{}", made.text());
    let trigger = app.store.list_triggers(1).await.unwrap()[0].id;
    let revoked = form(&app, &format!("{base}/triggers/{trigger}/delete"), &session, &[("_csrf", &csrf)]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert!(get(&app, base, &session).await.text().contains("No trigger tokens yet."));

    // Instance variables, on the admin pages.
    let admin = get(&app, "/admin/variables", &session).await.text();
    assert!(admin.contains("Instance variables") && admin.contains("every project"), "{admin}");
    let saved = form(
        &app,
        "/admin/variables",
        &session,
        &[("key", "REGISTRY"), ("value", "registry.example.com"), ("_csrf", &csrf)],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    assert!(get(&app, "/admin/variables", &session).await.text().contains("REGISTRY"));

    // A developer sees no settings link and may not open the page.
    let dana = app.user("dana").await;
    let project = app.store.project_by_name("shop").await.unwrap().unwrap();
    app.store.set_member(&project, &dana, opsloop_core::Role::Developer, crate::app::ACTOR).await.unwrap();
    let dana_session = sign_in(&app, "dana", "a long enough password").await.map_err(|r| r.text()).unwrap();
    assert!(!get(&app, "/projects/shop/pipelines", &dana_session).await.text().contains("/settings/ci"));
    assert_eq!(get(&app, base, &dana_session).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_schedule_made_in_the_ui_keeps_its_variables() {
    let app = TestApp::new().await;
    app.project("nightly").await;
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let csrf = hidden_csrf(&get(&app, "/projects/nightly/schedules", &session).await.text());
    let bad = form(
        &app,
        "/projects/nightly/schedules",
        &session,
        &[("cron", "0 3 * * *"), ("variables", "no equals sign"), ("_csrf", &csrf)],
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = [("cron", "0 3 * * *"), ("variables", "TARGET=staging\nDRY_RUN=1\n"), ("_csrf", &csrf)];
    assert_eq!(form(&app, "/projects/nightly/schedules", &session, &fields).await.status, StatusCode::SEE_OTHER);
    let schedule = &app.store.list_schedules(1).await.unwrap()[0];
    let variables: std::collections::BTreeMap<String, String> = serde_json::from_str(&schedule.variables).unwrap();
    assert_eq!(variables["TARGET"], "staging");
    assert_eq!(variables["DRY_RUN"], "1");
    let page = get(&app, "/projects/nightly/schedules", &session).await.text();
    assert!(page.contains("<code>DRY_RUN</code>") && page.contains("<code>TARGET</code>"), "{page}");
}

#[tokio::test]
async fn the_first_hour_pages_keep_the_navigation_and_advertise_nothing_missing() {
    let app = TestApp::new().await;
    let project = app.project("web").await;
    let session = sign_in(&app, "admin", "admin password 123").await.map_err(|r| r.text()).unwrap();
    let nav = r#"<nav class="areas""#;

    // Only areas that exist are linked; the ones that do not are no pages at all.
    let projects = get(&app, "/projects", &session).await.text();
    for area in ["/projects", "/pipelines", "/deployments"] {
        assert!(projects.contains(&format!(r#"href="{area}""#)), "{area} is linked: {projects}");
    }
    assert!(!projects.contains(r#"href="/monitoring""#), "{projects}");
    assert_eq!(get(&app, "/monitoring", &session).await.status, StatusCode::NOT_FOUND);

    // The Deployments area is a page of its own.
    let deployments = get(&app, "/deployments", &session).await;
    assert_eq!(deployments.status, StatusCode::OK);
    assert!(deployments.text().contains("No deployments yet.") && deployments.text().contains(nav));

    // Not-found pages, from the fallback and from a handler, keep the navigation when signed in.
    let missing = get(&app, "/no-such-page", &session).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text().contains(nav), "{}", missing.text());
    let missing = get(&app, "/projects/web/pipelines/999999", &session).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text().contains(nav) && missing.text().contains("pipeline"), "{}", missing.text());
    let anonymous = get(&app, "/no-such-page", "").await;
    assert!(!anonymous.text().contains(nav), "no navigation for a visitor");

    // The favicon is public.
    let icon = get(&app, "/favicon.ico", "").await;
    assert_eq!(icon.status, StatusCode::OK);
    assert_eq!(icon.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("image/svg+xml"));

    // A pipeline whose jobs are not planned yet says so instead of showing nothing.
    let pending = app.store.create_pipeline(project.id, "main", "api", crate::app::ACTOR).await.unwrap();
    let page = get(&app, &format!("/projects/web/pipelines/{}", pending.id), &session).await.text();
    assert!(page.contains("Waiting for checkout"), "{page}");
}
