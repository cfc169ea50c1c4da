//! Starting and stopping the real binary, and the few helpers every test needs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_opsloop");

/// A running `opsloop serve` with its own data directory.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    /// The deployment proxy (`--proxy-listen 127.0.0.1:0`, so tests never collide).
    pub proxy_url: String,
    pub data_dir: PathBuf,
    /// The one-time admin password printed at first start (empty on later starts).
    pub admin_password: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A fresh server on SQLite in a new temporary directory.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = dir.path().join("data");
        let mut server = Server::start_in(&data_dir, &[]);
        server._dir = Some(dir);
        server
    }

    /// A server on `data_dir` (which may hold data from an earlier run).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Server {
        Server::start_with_env(data_dir, extra_args, &[])
    }

    /// [`Server::start_in`] with extra environment variables (secrets that never go in files).
    pub fn start_with_env(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .envs(env.iter().copied());
        Server::spawn(command, data_dir.to_path_buf())
    }

    /// The README's first command as a user types it, `opsloop serve --demo`, in `cwd`: no
    /// `--data-dir` (so `./opsloop-data`, relative), free ports through the environment only.
    pub fn start_as_readme(cwd: &Path) -> Server {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--demo"])
            .current_dir(cwd)
            .env("OPSLOOP_LISTEN", "127.0.0.1:0")
            .env("OPSLOOP_PROXY_LISTEN", "127.0.0.1:0")
            .env_remove("OPSLOOP_DATA_DIR");
        Server::spawn(command, cwd.join("opsloop-data"))
    }

    fn spawn(mut command: Command, data_dir: PathBuf) -> Server {
        let mut child = command
            .env("NO_COLOR", "1")
            .env("OPSLOOP_LOG_LEVEL", "warn")
            .env_remove("OPSLOOP_DATABASE_URL")
            .env_remove("OPSLOOP_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start opsloop serve");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut admin_password = String::new();
        let mut expect_password = false;
        let mut proxy_url = String::new();
        let url = loop {
            let line = lines_rx.recv_timeout(Duration::from_secs(60)).expect("server printed its address in time");
            if expect_password && !line.trim().is_empty() {
                admin_password = line.trim().to_owned();
                expect_password = false;
            }
            if line.contains("one-time password") {
                expect_password = true;
            }
            if let Some(address) = line.strip_prefix("opsloop proxy listening on ") {
                proxy_url = address.trim().to_owned();
            }
            if let Some(address) = line.strip_prefix("opsloop listening on ") {
                break address.trim().to_owned();
            }
        };
        Server { child: Some(child), url, proxy_url, data_dir, admin_password, _dir: None }
    }

    /// A new API token for `admin` with `role`, made by the CLI against this server's data.
    pub fn token(&self, role: &str) -> String {
        let output = opsloop(&[
            "admin",
            "token",
            "create",
            "--name",
            "test",
            "--role",
            role,
            "--data-dir",
            self.data_dir.to_str().expect("utf-8 path"),
        ]);
        assert!(output.status.success(), "token create failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().expect("wait for server")
    }

    pub fn client() -> reqwest::Client {
        // reqwest is built without a bundled crypto provider; the binary installs ring, so do the tests.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Runs the CLI to completion.
pub fn opsloop(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("OPSLOOP_DATABASE_URL")
        .env_remove("OPSLOOP_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run opsloop")
}

/// Runs the CLI as a client of `server` with `token`.
pub fn opsloop_client(server: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env("OPSLOOP_SERVER", &server.url)
        .env("OPSLOOP_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("run opsloop")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One API call from a synchronous test: `(status, JSON body or null)`.
pub fn call_json(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut request = Server::client().request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    })
}

/// Commits everything in `repo` (a test repository).
pub fn commit_all(repo: &Path, message: &str) {
    for args in [&["add", "-A"][..], &["commit", "-qm", message]] {
        let status = Command::new("git")
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(repo)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    }
}

/// Says that a test is skipped because `peer` is absent. Under `CI=true` (where `.ci/run`
/// installs every peer) a missing peer fails the test instead of passing it silently.
pub fn skip(reason: &str) {
    opsloop_core::skip::skipped(reason);
}

/// A port that was free a moment ago, for a peer that cannot report the one it chose.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Runs git in `dir` with a fixed identity and `main` as the first branch, asserting success.
pub fn git_in(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// A bare repository `<root>/<project>.git` whose `post-receive` hook tells `server` of every
/// push (as `opsloop hook post-receive --project <project>` with `token`), as the README
/// shows a team to set it up.
pub fn bare_repository_with_hook(server: &Server, token: &str, root: &Path, project: &str) -> PathBuf {
    let bare = root.join(format!("{project}.git"));
    git_in(root, &["init", "-q", "--bare", bare.to_str().expect("utf-8 path")]);
    let hook = bare.join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nOPSLOOP_SERVER='{}' OPSLOOP_TOKEN='{token}' exec '{BIN}' hook post-receive --project {project}\n",
            server.url
        ),
    )
    .expect("write the hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("make the hook executable");
    bare
}
