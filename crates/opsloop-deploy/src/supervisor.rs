//! The supervisor: runs one instance of a service as its own process group, captures its
//! output, restarts it when it dies (exponential backoff) until it crashes too often
//! (crash loop), answers whether it is healthy (HTTP or TCP check on its port), and stops it
//! gracefully (SIGTERM to the whole group, a grace period, then SIGKILL).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// How an instance shows it can take traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `GET http://127.0.0.1:PORT{path}` answers `status`.
    Http { path: String, status: u16 },
    /// Something accepts connections on the port.
    Tcp,
}

#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// For logs: `service@version#n`.
    pub name: String,
    /// The program and its arguments; `$PORT` in any of them becomes the instance's port.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    /// Where the instance listens: loopback for a local one, the host's address over SSH.
    pub host: std::net::IpAddr,
    pub port: u16,
    pub health: HealthCheck,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// This many unplanned exits within `crash_window` is a crash loop: no more restarts.
    pub max_restarts: u32,
    pub crash_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    Running {
        pid: u32,
        restarts: u32,
    },
    /// Died; starts again after a pause.
    Restarting {
        restarts: u32,
        last_exit: Option<i32>,
    },
    /// Died too often: left stopped.
    CrashLoop {
        restarts: u32,
        last_exit: Option<i32>,
    },
    Stopped,
}

/// Where an instance's output lines go.
pub type LogSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A running (or restarting) instance. [`Instance::stop`] stops it gracefully; dropping it
/// stops it too, without waiting.
#[derive(Debug)]
pub struct Instance {
    pub spec: InstanceSpec,
    state: watch::Receiver<InstanceState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    /// Starts the instance; `log` receives `(instance name, line)` for each line it prints.
    pub fn start(spec: InstanceSpec, log: LogSink) -> Instance {
        let (state_tx, state) = watch::channel(InstanceState::Restarting { restarts: 0, last_exit: None });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(spec.clone(), log, state_tx, stop_rx));
        Instance { spec, state, stop, task }
    }

    pub fn state(&self) -> InstanceState {
        self.state.borrow().clone()
    }

    /// Whether the instance passes its health check now.
    pub async fn healthy(&self) -> bool {
        matches!(self.state(), InstanceState::Running { .. })
            && check(&self.spec.health, self.spec.host, self.spec.port).await
    }

    /// Waits until the instance is healthy; an error when it crash-loops or `limit` passes.
    pub async fn wait_healthy(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let InstanceState::CrashLoop { restarts, last_exit } = self.state() {
                return Err(format!("{} crash-loops ({restarts} restarts, last exit {last_exit:?})", self.spec.name));
            }
            if self.healthy().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{} did not become healthy in {}s", self.spec.name, limit.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to its process group, SIGKILL after the grace period; returns once it is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Whether something on `host`:`port` passes `health` now.
pub async fn check(health: &HealthCheck, host: std::net::IpAddr, port: u16) -> bool {
    let connect = tokio::net::TcpStream::connect((host, port));
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), connect).await else { return false };
    match health {
        HealthCheck::Tcp => true,
        HealthCheck::Http { path, status } => {
            use tokio::io::AsyncWriteExt;
            let request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_err() {
                return false;
            }
            let mut first = String::new();
            let mut reader = BufReader::new(stream);
            let read = reader.read_line(&mut first);
            match tokio::time::timeout(Duration::from_secs(2), read).await {
                Ok(Ok(_)) => first.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()) == Some(*status),
                _ => false,
            }
        }
    }
}

fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

async fn supervise(
    spec: InstanceSpec,
    log: LogSink,
    state: watch::Sender<InstanceState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut exits: Vec<Instant> = Vec::new();
    let mut restarts = 0;
    loop {
        let port = spec.port.to_string();
        let argv: Vec<String> = spec.command.iter().map(|arg| arg.replace("$PORT", &port)).collect();
        let Some((program, args)) = argv.split_first() else {
            let _ = state.send(InstanceState::CrashLoop { restarts, last_exit: None });
            return;
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(&spec.dir)
            .env("PORT", &port)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group: a stop reaches everything it started.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                log(&spec.name, &format!("cannot start {program}: {error}"));
                let _ = state.send(InstanceState::CrashLoop { restarts, last_exit: None });
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let (log, name) = (log.clone(), spec.name.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log(&name, &line);
                }
            });
        }
        let _ = state.send(InstanceState::Running { pid, restarts });
        let exited = tokio::select! {
            exited = child.wait() => exited.ok().and_then(|status| status.code()),
            () = stopping(&mut stop) => {
                signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                if tokio::time::timeout(spec.stop_grace, child.wait()).await.is_err() {
                    log(&spec.name, &format!("still running {}s after SIGTERM; killed", spec.stop_grace.as_secs()));
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait().await;
                }
                let _ = state.send(InstanceState::Stopped);
                return;
            }
        };
        // What it started is ended with it.
        signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        let now = Instant::now();
        exits.retain(|at| now.duration_since(*at) < spec.crash_window);
        exits.push(now);
        log(&spec.name, &format!("exited ({exited:?})"));
        if exits.len() as u32 > spec.max_restarts {
            let _ = state.send(InstanceState::CrashLoop { restarts, last_exit: exited });
            return;
        }
        restarts += 1;
        let _ = state.send(InstanceState::Restarting { restarts, last_exit: exited });
        // 100 ms, 200 ms, 400 ms … up to 10 s.
        let pause = Duration::from_millis(100 * (1 << exits.len().min(7)) as u64).min(Duration::from_secs(10));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stopping(&mut stop) => {
                let _ = state.send(InstanceState::Stopped);
                return;
            }
        }
    }
}

/// Waits until a stop is asked for (or the instance's owner is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// A free port on loopback (bound and released: good enough to hand to a new instance).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
