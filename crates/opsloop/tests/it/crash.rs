//! `kill -9` while clients write: after a restart every write that was answered 2xx is there,
//! and the database opens cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::harness::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::start();
    let token = server.token("admin");
    let url = server.url.clone();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = Server::client();

    let mut writers = Vec::new();
    for writer in 0..4 {
        let (client, url, token, acknowledged) = (client.clone(), url.clone(), token.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("crash-{writer}-{i}");
                let body = serde_json::json!({ "name": name, "repo_url": "/srv/git/crash.git" });
                let sent = client.post(format!("{url}/api/v1/projects")).bearer_auth(&token).json(&body).send().await;
                match sent {
                    Ok(response) if response.status().is_success() => acknowledged.lock().await.push(name),
                    Ok(response) => panic!("write refused before the crash: {}", response.status()),
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }

    // Let writes flow, then kill the server mid-stream.
    let started = Instant::now();
    while acknowledged.lock().await.len() < 60 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_hard();
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(acknowledged.len() >= 60, "too few writes before the crash: {}", acknowledged.len());

    // Restart on the same data: it must come up ready, with every acknowledged project.
    let restarted = Server::start_in(&server.data_dir, &[]);
    let ready = client.get(format!("{}/readyz", restarted.url)).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let mut stored = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let page: serde_json::Value = client
            .get(format!("{}/api/v1/projects", restarted.url))
            .query(&[("limit", "500"), ("after", after.as_str())])
            .bearer_auth(&token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        for item in page["items"].as_array().expect("items") {
            stored.insert(item["name"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => after = cursor.to_owned(),
            None => break,
        }
    }
    let lost: Vec<_> = acknowledged.iter().filter(|name| !stored.contains(*name)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost after kill -9: {lost:?}", lost.len());
    eprintln!("crash test: {} acknowledged writes, all present after restart", acknowledged.len());
}
