//! Artifacts kept in S3: a real S3-compatible server (moto, from PyPI) on loopback.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::agents::http_get;
use crate::harness::{Server, opsloop_client, text};
use crate::server_ci::project_with_pipeline;

struct Moto(std::process::Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn artifacts_are_kept_in_s3() {
    // `moto_server`, or the module behind it when pip put the script off PATH.
    let launchers: [&[&str]; 2] = [&["moto_server"], &["python3", "-m", "moto.server"]];
    let Some(launcher) = launchers.into_iter().find(|launcher| {
        Command::new(launcher[0])
            .args(&launcher[1..])
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }) else {
        opsloop_core::skip::skipped("moto is not installed (pip install 'moto[server]'); .ci/run installs it");
        return;
    };
    let port = free_port();
    let moto = Moto(
        Command::new(launcher[0])
            .args(&launcher[1..])
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = Server::client();
    // moto creates a bucket on an unsigned PUT.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let made = runtime.block_on(async { http.put(format!("{endpoint}/opsloop-test")).send().await });
        if made.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(200));
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsloop.toml");
    std::fs::write(
        &config,
        format!(
            "[artifacts]\nstorage = \"s3\"\ns3_bucket = \"opsloop-test\"\ns3_endpoint = \"{endpoint}\"\ns3_access_key_id = \"testing\"\n"
        ),
    )
    .unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[("OPSLOOP_S3_SECRET_ACCESS_KEY", "testing")],
    );
    let token = server.token("admin");
    let pipeline = "report:\n  script: [mkdir -p out, echo 'coverage 91%' > out/report.txt]\n  artifacts:\n    paths: [out/]\n    expire_in: never\n";
    project_with_pipeline(&server, &token, dir.path(), "s3", pipeline);
    let run = opsloop_client(&server, &token, &["pipeline", "run", "s3", "--wait", "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}{}", text(&run.stdout), text(&run.stderr));
    let detail: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let job = &detail["jobs"][0];
    assert!(job["artifacts"]["expire_at"].is_null(), "expire_in: never: {job}");
    let file = http_get(&format!("{}/api/v1/jobs/{}/artifacts/raw/out/report.txt", server.url, job["id"]), &token);
    assert_eq!(text(&file).trim(), "coverage 91%");

    // The archive is in the bucket, where the server put it.
    let listing = runtime
        .block_on(async { http.get(format!("{endpoint}/opsloop-test?list-type=2")).send().await?.text().await })
        .unwrap();
    assert!(listing.contains("artifacts.zip"), "{listing}");
    drop(moto);
}
