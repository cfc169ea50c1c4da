//! `/readyz` asks every subsystem, not only the database.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use opsloop_server::ServerConfig;
use opsloop_store::test_support::TestDatabase;
use tower::ServiceExt;

async fn readyz(config: ServerConfig, store: opsloop_store::Store) -> (StatusCode, String) {
    let router = opsloop_server::build_app(store, config)
        .layer(axum::extract::connect_info::MockConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))));
    let response = router.oneshot(Request::get("/readyz").body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_subsystem_that_cannot_work_makes_the_server_not_ready() {
    let db = TestDatabase::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let (status, body) = readyz(ServerConfig::with_data_dir(dir.path().to_path_buf()), db.store.clone()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));

    // The data directory is a file: the vault's key cannot be made there.
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let (status, body) = readyz(ServerConfig::with_data_dir(file), db.store.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("ci: the secrets vault is not available"), "{body}");
}
