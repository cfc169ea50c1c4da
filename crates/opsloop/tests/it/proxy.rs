//! `opsloop proxy` as a user runs it: routes from the command line, requests passed on with
//! X-Forwarded-* headers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::harness::{BIN, Server};

#[test]
fn the_proxy_passes_requests_to_its_route_with_forwarded_headers() {
    // An upstream that answers with the headers it got.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_address = upstream.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in upstream.incoming() {
            let Ok(mut stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut request = Vec::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                        request.push(line.trim_end().to_owned());
                    }
                    let length: usize = request
                        .iter()
                        .find_map(|h| {
                            h.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let answer = request.join("\n");
                    log.lock().unwrap().push(answer.clone());
                    write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}", answer.len()).unwrap();
                }
            });
        }
    });

    let mut proxy = Command::new(BIN)
        .args(["proxy", "--listen", "127.0.0.1:0", "--route", &format!("/=127.0.0.1:{}", upstream_address.port())])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(proxy.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let address = first.trim().strip_prefix("opsloop proxy listening on ").unwrap().to_owned();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = runtime.block_on(async {
        Server::client()
            .get(format!("http://{address}/shop/cart?item=1"))
            .header("host", "shop.example.com")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(answer.starts_with("GET /shop/cart?item=1 HTTP/1.1"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("x-forwarded-for: 127.0.0.1"), "{answer}");
    assert!(lower.contains("x-forwarded-host: shop.example.com"), "{answer}");
    assert!(lower.contains("x-forwarded-proto: http"), "{answer}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn lint_checks_a_deployment_manifest_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("opsloop.yml"),
        "services:\n  web:\n    command: [python3, server.py]\n    replicas: 0\nroutes:\n  - {service: api, environment: production}\n",
    )
    .unwrap();
    let output =
        crate::harness::opsloop(&["lint", "--file", "opsloop.yml", "--cwd", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(2), "{}", crate::harness::text(&output.stderr));
    let problems: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let at: Vec<(i64, String)> = problems
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["line"].as_i64().unwrap(), p["message"].as_str().unwrap().to_owned()))
        .collect();
    assert!(at.iter().any(|(line, m)| *line == 4 && m.contains("replicas")), "{at:?}");
    assert!(at.iter().any(|(line, m)| *line == 6 && m.contains("unknown service `api`")), "{at:?}");
    std::fs::write(dir.path().join("opsloop.yml"), "services:\n  web: {command: [python3, server.py]}\n").unwrap();
    let fine = crate::harness::opsloop(&["lint", "--file", "opsloop.yml", "--cwd", dir.path().to_str().unwrap()]);
    assert!(fine.status.success());
    assert!(crate::harness::text(&fine.stdout).contains("opsloop.yml is valid: 1 service(s)"));
}
