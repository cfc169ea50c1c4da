//! Remote write out of the server: a `remote_write` entry in `--metrics-config` forwards what
//! the server stores (here, samples pushed to its own remote-write endpoint) to a real
//! Prometheus 2.42, where a query finds them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opsloop_metrics::labels::Labels;
use opsloop_metrics::storage::Sample;

use crate::harness::{Server, free_port, skip};

#[tokio::test]
async fn what_the_server_stores_reaches_a_real_prometheus() {
    if Command::new("prometheus").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return skip("remote write to Prometheus, because prometheus is missing (apt-get install prometheus)");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("receiver.yml"), "global: {}\n").unwrap();
    let port = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("receiver.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("prometheus").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{external_labels: {{origin: opsloop}}}}\n\
             remote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n    \
             queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 500ms}}\n"
        ),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start_in(&data_dir, &["--metrics-config", config.to_str().unwrap()]);
    let token = server.token("admin");
    let client = Server::client();

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let labels = Labels::from_pairs([("__name__", "forwarded_total"), ("project", "demo")]);
    let samples: Vec<Sample> = (0..10).map(|i| Sample { t: now - 60_000 + i * 5000, v: i as f64 }).collect();
    let body = opsloop_metrics::remote::encode(&[(labels, samples)]);
    let response = client
        .post(format!("{}/prometheus/api/v1/write", server.url))
        .bearer_auth(&token)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // Prometheus may still be starting, and the sender retries until it is up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let query = format!("http://127.0.0.1:{port}/api/v1/query");
        let time = format!("{:.3}", now as f64 / 1000.0);
        let answer = client.get(query).query(&[("query", "forwarded_total[5m]"), ("time", &time)]).send().await;
        if let Ok(r) = answer
            && let Ok(json) = r.json::<serde_json::Value>().await
            && json["data"]["result"][0]["values"].as_array().is_some_and(|v| v.len() == 10)
        {
            break Ok(json);
        }
        if Instant::now() > deadline {
            break Err("the samples did not reach Prometheus");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let found = found.unwrap();
    let series = &found["data"]["result"][0];
    assert_eq!(series["metric"]["origin"], "opsloop", "external labels are added: {found}");
    assert_eq!(series["metric"]["project"], "demo");
    assert_eq!(series["values"][9][1], "9");
}
