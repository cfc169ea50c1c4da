//! One helper that builds the app and sends it requests; tests call only this.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use opsloop_core::{Clock, Role};
use opsloop_server::{ServerConfig, accounts};
use opsloop_store::test_support::TestDatabase;
use opsloop_store::{Actor, Store, User};
use serde_json::Value;
use tower::ServiceExt;

pub const ACTOR: Actor<'static> = Actor { name: "test", source_ip: "127.0.0.1" };

pub struct TestApp {
    pub router: Router,
    pub state: opsloop_server::AppState,
    pub store: Store,
    pub admin: User,
    _db: Option<TestDatabase>,
    data_dir: std::sync::Arc<tempfile::TempDir>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn error_code(&self) -> String {
        self.json().pointer("/error/code").and_then(Value::as_str).unwrap_or_default().to_owned()
    }
}

pub const ONCALL: &str = "\
users:
  - name: alice
    email: alice@example.com
  - name: bob
    email: bob@example.com
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - rotation: 1w
        handoff: 2026-03-23T09:00
        users: [alice, bob]
escalation_policies:
  - name: default
    levels:
      - targets: [schedule:primary]
";

pub const CHECKS: &str = "\
checks:
  - name: truth
    command: ['true']
    conditions: ['[STATUS] == 0']
heartbeats:
  - name: nightly
    period: 24h
    grace: 1h
";

impl TestApp {
    pub async fn new() -> TestApp {
        let db = TestDatabase::sqlite().await;
        let store = db.store.clone();
        let data_dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let (router, state) = Self::router(&store, data_dir.path());
        let (admin, _) = accounts::create_user(&store, "admin", Some("admin password 123"), true, ACTOR).await.unwrap();
        TestApp { router, state, store, admin, _db: Some(db), data_dir }
    }

    fn router(store: &Store, data_dir: &std::path::Path) -> (Router, opsloop_server::AppState) {
        let mut config = ServerConfig::with_data_dir(data_dir.to_path_buf());
        config.auth.login_attempts_per_window = 3;
        // Every test app has someone on call: alice and bob by the week, from a Monday.
        let oncall = data_dir.join("oncall.yml");
        std::fs::write(&oncall, ONCALL).unwrap();
        config.alerting.oncall_file = Some(oncall);
        // And a check that passes, run by a command, and a heartbeat.
        let checks = data_dir.join("checks.yml");
        std::fs::write(&checks, CHECKS).unwrap();
        config.checks.config_file = Some(checks);
        let (router, state) = opsloop_server::build_app_and_state(store.clone(), config);
        (router.layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)))), state)
    }

    /// The same database and users, served by an app whose time is `clock`.
    pub async fn with_clock(clock: Arc<dyn Clock>, app: &TestApp) -> TestApp {
        let store = app.store.with_clock(clock);
        let (router, state) = Self::router(&store, app.data_dir.path());
        TestApp { router, state, store, admin: app.admin.clone(), _db: None, data_dir: app.data_dir.clone() }
    }

    pub async fn user(&self, name: &str) -> User {
        accounts::create_user(&self.store, name, Some("a long enough password"), false, ACTOR).await.unwrap().0
    }

    pub async fn token(&self, user: &User, role: Role) -> String {
        accounts::issue_token(&self.store, user, "test", role, None, ACTOR).await.unwrap().0
    }

    pub async fn project(&self, name: &str) -> opsloop_store::Project {
        let new = opsloop_store::NewProject {
            name,
            description: "",
            repo_url: "/srv/git/x.git",
            default_branch: "main",
            pipeline_file: ".gitlab-ci.yml",
        };
        self.store.create_project(new, self.admin.id, ACTOR).await.unwrap()
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply { status, headers, body }
    }

    /// An API call with an optional bearer token and a raw body (sent as JSON).
    pub async fn api(&self, method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_owned())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }
}
