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
