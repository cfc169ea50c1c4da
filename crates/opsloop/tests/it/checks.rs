//! `opsloop checks run` through the real binary, against servers this test starts: a passing
//! file exits 0, a failing check exits 1 with its condition in Gatus's form, an invalid file
//! exits 2 with the problem at file:line:column.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

use crate::harness::{BIN, text};

/// An HTTP server on a thread answering every request with `status` and `body`.
fn http_server(status: u16, body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(dir).env("NO_COLOR", "1").output().unwrap()
}

#[test]
fn checks_run_passes_fails_and_refuses() {
    let healthy = http_server(200, r#"{"status":"UP"}"#);
    let broken = http_server(503, "");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "storage:\n  type: memory\nendpoints:\n  - name: api\n    group: core\n    url: http://127.0.0.1:{healthy}/health\n    conditions:\n      - '[STATUS] == 200'\n      - '[BODY].status == UP'\n  - name: db\n    url: tcp://127.0.0.1:{tcp_port}\n    conditions: ['[CONNECTED] == true']\n"
    );
    std::fs::write(dir.path().join("good.yml"), &good).unwrap();
    let out = run(dir.path(), &["checks", "run", "good.yml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("✓ core/api  ") && stdout.contains("✓ db  "), "{stdout}");
    assert!(stdout.contains("2 of 2 check(s) passed"), "{stdout}");
    assert!(text(&out.stderr).contains("`storage` is Gatus's and is ignored"), "{}", text(&out.stderr));

    let bad = format!(
        "endpoints:\n  - name: api\n    url: http://127.0.0.1:{broken}/\n    conditions: ['[STATUS] == 200']\n  - name: db\n    url: tcp://127.0.0.1:{tcp_port}\n    conditions: ['[CONNECTED] == true']\n"
    );
    std::fs::write(dir.path().join("bad.yml"), &bad).unwrap();
    let out = run(dir.path(), &["checks", "run", "bad.yml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("✗ api  ") && stdout.contains("    [STATUS] (503) == 200"), "{stdout}");
    assert!(stdout.contains("1 of 2 check(s) passed"), "{stdout}");
    let out = run(dir.path(), &["checks", "run", "bad.yml", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["failed"], 1);
    assert_eq!(json["results"][0]["status"], 503);
    assert_eq!(json["results"][0]["conditions"][0]["condition"], "[STATUS] (503) == 200");
    assert_eq!(json["results"][1]["success"], true);

    std::fs::write(
        dir.path().join("invalid.yml"),
        "endpoints:\n  - name: api\n    url: http://127.0.0.1:1/\n    conditions:\n      - '[STATU] == 200'\n",
    )
    .unwrap();
    let out = run(dir.path(), &["checks", "run", "invalid.yml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid.yml:5:10: unknown placeholder `[STATU]`"), "{stderr}");
    assert!(stderr.contains("hint: did you mean `[STATUS]`?"), "{stderr}");
    drop(tcp);
}

/// The server runs the checks of `--checks-config` on their intervals: results become series,
/// a failing check an alert, and `opsloop check` shows them.
#[test]
fn the_server_runs_checks_stores_their_series_and_alerts_when_one_is_down() {
    use crate::harness::{Server, call_json, opsloop_client};
    let up = http_server(200, r#"{"status": "UP"}"#);
    let down = http_server(503, "no");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("checks.yml");
    std::fs::write(
        &config,
        format!(
            "endpoints:\n  - name: api\n    group: core\n    url: http://127.0.0.1:{up}/health\n    interval: 1s\n    conditions: ['[STATUS] == 200', '[BODY].status == UP']\n  - name: shop\n    url: http://127.0.0.1:{down}/\n    interval: 1s\n    conditions: ['[STATUS] == 200']\n"
        ),
    )
    .unwrap();
    let server = Server::start_in(&dir.path().join("data"), &["--checks-config", config.to_str().unwrap()]);
    let token = server.token("admin");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let alerts_url = format!("{}/alertmanager/api/v2/alerts", server.url);
    loop {
        let (_, alerts) = call_json(reqwest::Method::GET, &alerts_url, &token, None);
        let down = alerts
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["labels"]["alertname"] == "CheckDown" && a["labels"]["check"] == "shop");
        if down {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no CheckDown alert: {alerts}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let query = format!("{}/prometheus/api/v1/query?query=opsloop_check_up", server.url);
    let (_, answer) = call_json(reqwest::Method::GET, &query, &token, None);
    let mut seen: Vec<(String, String)> = answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"]["check"].as_str().unwrap().to_owned(), r["value"][1].as_str().unwrap().to_owned()))
        .collect();
    seen.sort();
    assert_eq!(seen, [("api".to_owned(), "1".to_owned()), ("shop".to_owned(), "0".to_owned())]);

    let listed = opsloop_client(&server, &token, &["check", "list"]);
    let shown = text(&listed.stdout);
    assert!(shown.contains("core_api") && shown.contains("up") && shown.contains("down"), "{shown}");
    let ran = opsloop_client(&server, &token, &["check", "run", "_shop"]);
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran.stderr));
    assert!(text(&ran.stdout).contains("[STATUS] (503) == 200"), "{}", text(&ran.stdout));
}
