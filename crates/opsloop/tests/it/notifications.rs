//! Outgoing webhooks against a real HTTP receiver: signed, retried after a failure with the
//! same delivery id, and logged per hook.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};

use crate::agents::http_get;
use crate::harness::{Server, call_json, opsloop_client, text};
use crate::server_ci::project_with_pipeline;

#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
    }
}

/// Answers 500 to the first request and 200 to the rest, keeping what it received.
fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                if let Some((name, value)) = trimmed.split_once(':') {
                    headers.push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let first = {
                let mut log = log.lock().unwrap();
                log.push(Received { headers, body: String::from_utf8(body).unwrap() });
                log.len() == 1
            };
            let status = if first { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, received)
}

#[test]
fn pipeline_and_job_events_are_signed_retried_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsloop.toml");
    // The receiver listens on loopback, which webhooks may only reach when allowed.
    std::fs::write(&config, "[notifications]\nallow_private_targets = true\n").unwrap();
    let server = Server::start_in(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let token = server.token("maintainer");
    project_with_pipeline(&server, &token, dir.path(), "notified", "hello:\n  script: [echo hi]\n");
    let (url, received) = receiver();
    let endpoint = format!("{}/api/v1/projects/notified/notifications", server.url);
    let (_, created) = call_json(
        reqwest::Method::POST,
        &endpoint,
        &token,
        Some(serde_json::json!({ "url": url, "secret": "a shared secret of some length" })),
    );
    let hook = created["id"].to_string();
    assert_eq!(created["events"], serde_json::json!(["deployment", "incident", "job", "pipeline"]), "{created}");

    let run = opsloop_client(&server, &token, &["pipeline", "run", "notified", "--wait"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    // running, the job's end, success; the first POST answered 500 and is sent again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "deliveries: {:#?}", received.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = received.lock().unwrap().clone();
    // The first delivery was refused and came again later with the same id.
    let first_id = received[0].header("x-opsloop-delivery");
    assert_eq!(received.iter().filter(|d| d.header("x-opsloop-delivery") == first_id).count(), 2, "{received:#?}");
    for delivery in &received {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"a shared secret of some length").unwrap();
        mac.update(delivery.body.as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(delivery.header("x-opsloop-signature-256"), expected);
    }
    let mut unique: Vec<&Received> = received[1..].iter().collect();
    unique.sort_by_key(|d| d.header("x-opsloop-delivery").parse::<i64>().unwrap());
    let bodies: Vec<serde_json::Value> = unique.iter().map(|d| serde_json::from_str(&d.body).unwrap()).collect();
    let kinds: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| {
            let kind = b["object_kind"].as_str().unwrap();
            (kind, b[kind]["status"].as_str().unwrap())
        })
        .collect();
    assert_eq!(kinds, [("pipeline", "running"), ("job", "success"), ("pipeline", "success")], "{bodies:#?}");
    assert_eq!(unique[1].header("x-opsloop-event"), "job");
    assert_eq!(bodies[1]["job"]["name"], "hello");

    let log = http_get(&format!("{}/api/v1/projects/notified/notifications/{hook}/deliveries", server.url), &token);
    let log: serde_json::Value = serde_json::from_slice(&log).unwrap();
    let first = log.as_array().unwrap().iter().find(|d| d["id"].to_string().as_str() == first_id).unwrap();
    assert_eq!((first["state"].as_str(), first["attempts"].as_i64()), (Some("delivered"), Some(2)), "{log}");
    assert_eq!(first["response_status"], 200);
}

#[test]
fn webhooks_to_internal_addresses_are_refused_by_default() {
    let server = Server::start();
    let token = server.token("maintainer");
    let dir = tempfile::tempdir().unwrap();
    project_with_pipeline(&server, &token, dir.path(), "probe", "hello:\n  script: [echo hi]\n");
    let (url, received) = receiver();
    let endpoint = format!("{}/api/v1/projects/probe/notifications", server.url);
    let (_, created) = call_json(
        reqwest::Method::POST,
        &endpoint,
        &token,
        Some(serde_json::json!({ "url": url, "events": ["pipeline"] })),
    );
    let run = opsloop_client(&server, &token, &["pipeline", "run", "probe", "--wait"]);
    assert!(run.status.success());
    let path = format!("{}/api/v1/projects/probe/notifications/{}/deliveries", server.url, created["id"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log: serde_json::Value = serde_json::from_slice(&http_get(&path, &token)).unwrap();
        let refused =
            log.as_array().unwrap().iter().any(|d| d["last_error"].as_str().unwrap_or("").contains("refused"));
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(received.lock().unwrap().is_empty(), "nothing reached the loopback receiver");
}
