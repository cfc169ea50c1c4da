//! The release sweeper: the files of releases nothing needs go; what serves, what a
//! deployment still waits to run, and the newest of each service stay.

use std::time::Duration;

use opsloop_server::deploy;

use crate::app::{ACTOR, TestApp};

#[tokio::test]
async fn old_releases_files_go_and_needed_ones_stay() {
    let app = TestApp::new().await;
    let project = app.project("shop").await;
    let mut releases = Vec::new();
    for n in 0..5 {
        let release =
            app.store.create_release(project.id, "web", &format!("v{n}"), &format!("{n:040}"), "{}").await.unwrap();
        let dir = deploy::release_dir(&app.state, &release);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.py"), "print('hi')").unwrap();
        // Made one after the other, so "newest" is well defined.
        std::thread::sleep(Duration::from_millis(20));
        releases.push((release, dir));
    }
    let deployment = |release_id, status| opsloop_store::NewDeployment {
        status,
        environment: "production",
        service: "web",
        release_id,
        strategy: "blue-green",
        triggered_by: "dana",
        pipeline_id: None,
    };
    // v1 serves; v2 waits for an approval.
    let served = app
        .store
        .create_deployment(&project, deployment(releases[1].0.id, opsloop_core::DeploymentStatus::Queued), ACTOR)
        .await
        .unwrap();
    assert!(app.store.claim_deployment(served.id).await.unwrap());
    app.store
        .finish_deployment(&served, opsloop_core::DeploymentStatus::Success, None, "{}", Some(Some(releases[1].0.id)))
        .await
        .unwrap();
    app.store
        .create_deployment(
            &project,
            deployment(releases[2].0.id, opsloop_core::DeploymentStatus::WaitingApproval),
            ACTOR,
        )
        .await
        .unwrap();
    let leftover = releases[0].1.parent().unwrap().parent().unwrap().join(".checkout-cut-short");
    std::fs::create_dir_all(&leftover).unwrap();

    // Too young: nothing goes.
    assert_eq!(deploy::sweep_releases(&app.state, 1, Duration::from_secs(3600)).await, 0);
    // Keeping the newest one: v0 and v3 go, v1 (serving), v2 (waiting), v4 (newest) stay.
    let removed = deploy::sweep_releases(&app.state, 1, Duration::ZERO).await;
    assert_eq!(removed, 3, "v0, v3 and the leftover checkout");
    let exists: Vec<bool> = releases.iter().map(|(_, dir)| dir.exists()).collect();
    assert_eq!(exists, [false, true, true, false, true]);
    assert!(!leftover.exists());
}
