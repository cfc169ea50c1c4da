//! opsloop's own `/metrics` as real Prometheus tooling reads it: `promtool check metrics` on
//! the text format, and a real Prometheus (Debian's 2.42) scraping the server, which
//! negotiates OpenMetrics.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Server, free_port, skip, text};

fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

#[tokio::test]
async fn promtool_accepts_the_text_format_and_openmetrics_is_negotiated() {
    if !installed("promtool") {
        return skip("promtool check, because promtool is missing (apt-get install prometheus)");
    }
    let server = Server::start();
    let client = Server::client();
    // Some traffic first, so every family has samples.
    client.get(format!("{}/healthz", server.url)).send().await.unwrap();
    let response = client.get(format!("{}/metrics", server.url)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let body = response.text().await.unwrap();
    assert!(!body.contains("# EOF") && !body.contains(" info\n"), "no OpenMetrics-only syntax:\n{body}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", text(&checked.stdout), text(&checked.stderr));
    // promtool exits 3 for lint remarks (naming advice) and 1 for a parse error.
    assert!(checked.status.code() != Some(1), "promtool could not parse /metrics:\n{said}\n{body}");
    assert!(!said.contains("error"), "promtool: {said}");

    let openmetrics = client
        .get(format!("{}/metrics", server.url))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(openmetrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let body = openmetrics.text().await.unwrap();
    assert!(body.ends_with("# EOF\n") && body.contains("# TYPE opsloop_build info"), "{body}");
}

#[tokio::test]
async fn a_real_prometheus_scrapes_opsloop() {
    if !installed("prometheus") {
        return skip("Prometheus scrape, because prometheus is missing (apt-get install prometheus)");
    }
    let server = Server::start();
    let target = server.url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
             scrape_configs:\n  - job_name: opsloop\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Server::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = serde_json::Value::Null;
    let verdict = loop {
        if Instant::now() > deadline {
            break Err(format!("the target did not turn up: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(response) = client.get(format!("http://127.0.0.1:{port}/api/v1/targets")).send().await else {
            continue;
        };
        last = response.json().await.unwrap_or_default();
        let target = &last["data"]["activeTargets"][0];
        match target["health"].as_str() {
            Some("up") => break Ok(()),
            Some("down") => break Err(format!("Prometheus marks opsloop down: {}", target["lastError"])),
            _ => {}
        }
    };
    let series = match verdict {
        Ok(()) => {
            let query = format!("http://127.0.0.1:{port}/api/v1/query?query=opsloop_build_info");
            client.get(query).send().await.unwrap().json::<serde_json::Value>().await.unwrap()
        }
        Err(_) => serde_json::Value::Null,
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    verdict.unwrap();
    assert_eq!(series["data"]["result"][0]["metric"]["job"], "opsloop", "{series}");
}
