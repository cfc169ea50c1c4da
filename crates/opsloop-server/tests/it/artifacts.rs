//! Artifacts in the object store: downloads (zip, file list, one file as an attachment) and
//! the sweeper that honours `expire_in`.

use axum::http::{Method, StatusCode, header};
use opsloop_core::Role;
use opsloop_core::clock::ManualClock;

use crate::app::{ACTOR, TestApp};

#[tokio::test]
async fn artifacts_download_and_expire() {
    let clock = ManualClock::new(1_768_478_400_000);
    let base = TestApp::new().await;
    let app = TestApp::with_clock(std::sync::Arc::new(clock.clone()), &base).await;
    let project = app.project("web").await;
    let pipeline = app.store.create_pipeline(project.id, "main", "api", ACTOR).await.unwrap();
    let jobs = app
        .store
        .start_pipeline(pipeline.id, "abc", &[("build".into(), "build".into()), ("keep".into(), "build".into())])
        .await
        .unwrap();
    let staged = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(staged.path().join("dist")).unwrap();
    std::fs::write(staged.path().join("dist/app.html"), "<script>alert(1)</script>").unwrap();
    std::fs::write(staged.path().join("notes.txt"), "release notes").unwrap();
    let objects = app.state.objects().unwrap();
    for job in &jobs {
        let key = opsloop_server::objects::artifacts_key(project.id, pipeline.id, job.id);
        let (size, files) = objects.put_dir(&key, staged.path().to_path_buf()).await.unwrap();
        assert_eq!(files, 2);
        // `build` expires in an hour; `keep` never.
        let expire = (job.name == "build").then(|| app.store.now_ms() + 3_600_000);
        app.store.record_artifacts(job.id, &key, size as i64, 2, expire).await.unwrap();
    }
    let token = app.token(&app.admin, Role::Viewer).await;
    let build = jobs[0].id;

    let detail =
        app.api(Method::GET, &format!("/api/v1/projects/web/pipelines/{}", pipeline.id), Some(&token), None).await;
    let detail = detail.json();
    assert_eq!(detail["jobs"][0]["artifacts"]["files"], 2, "{detail}");
    assert!(detail["jobs"][0]["artifacts"]["expire_at"].is_string());
    assert!(detail["jobs"][1]["artifacts"]["expire_at"].is_null());

    let zip = app.api(Method::GET, &format!("/api/v1/jobs/{build}/artifacts"), Some(&token), None).await;
    assert_eq!(zip.status, StatusCode::OK);
    assert_eq!(zip.headers[header::CONTENT_TYPE], "application/zip");
    let mut entries = opsloop_server::objects::zip_entries(&zip.body).unwrap();
    entries.sort();
    assert_eq!(entries, [("dist/app.html".to_owned(), 25), ("notes.txt".to_owned(), 13)]);
    let files = app.api(Method::GET, &format!("/api/v1/jobs/{build}/artifacts/files"), Some(&token), None).await;
    assert_eq!(files.json().as_array().unwrap().len(), 2);
    let page =
        app.api(Method::GET, &format!("/api/v1/jobs/{build}/artifacts/raw/dist/app.html"), Some(&token), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.text(), "<script>alert(1)</script>");
    // Never rendered as a page of this site.
    assert_eq!(page.headers[header::CONTENT_TYPE], "application/octet-stream");
    assert!(page.headers[header::CONTENT_DISPOSITION].to_str().unwrap().starts_with("attachment"));
    let missing =
        app.api(Method::GET, &format!("/api/v1/jobs/{build}/artifacts/raw/../etc/passwd"), Some(&token), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let outsider = app.user("outsider").await;
    let outsider = app.token(&outsider, Role::Owner).await;
    let hidden = app.api(Method::GET, &format!("/api/v1/jobs/{build}/artifacts"), Some(&outsider), None).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "another project's artifacts are not there for outsiders");

    // An hour and a minute later the sweeper deletes `build`'s archive; `keep`'s stays.
    assert_eq!(opsloop_server::objects::sweep_expired(&app.state).await.unwrap(), 0);
    clock.advance_ms(3_660_000);
    assert_eq!(opsloop_server::objects::sweep_expired(&app.state).await.unwrap(), 1);
    let gone = app.api(Method::GET, &format!("/api/v1/jobs/{build}/artifacts"), Some(&token), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let key = opsloop_server::objects::artifacts_key(project.id, pipeline.id, build);
    assert!(objects.get(&key).await.is_err(), "the object itself is deleted");
    let kept = app.api(Method::GET, &format!("/api/v1/jobs/{}/artifacts", jobs[1].id), Some(&token), None).await;
    assert_eq!(kept.status, StatusCode::OK);
}
