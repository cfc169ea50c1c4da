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
    /// `bash -c COMMAND` exits 0 (with `HOST` and `PORT` of the instance in its environment).
    Command(String),
}

/// Whether a running instance is still alive: checked every `interval`; a check taking
/// longer than `timeout` fails; after `failures` failed checks in a row it is killed, which
/// the supervisor treats as a crash (restart, backoff, crash loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub check: HealthCheck,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
}

/// How the readiness check runs while an instance starts: every `interval`, each check
/// failing when it takes longer than `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probing {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Probing {
    /// 50 ms between checks (a new version takes traffic as soon as it can), and a timeout
    /// of 2 s for a connection or HTTP request, 5 s for a command.
    pub fn default_for(check: &HealthCheck) -> Probing {
        Probing { interval: Duration::from_millis(50), timeout: default_timeout(check) }
    }
}

/// How long one check of `check`'s kind may take when `opsloop.yml` does not say.
pub fn default_timeout(check: &HealthCheck) -> Duration {
    match check {
        HealthCheck::Command(_) => Duration::from_secs(5),
        HealthCheck::Http { .. } | HealthCheck::Tcp => Duration::from_secs(2),
    }
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
    pub readiness: Probing,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// This many unplanned exits within `crash_window` is a crash loop: no more restarts.
    pub max_restarts: u32,
    pub crash_window: Duration,
    /// A memory limit in bytes: a cgroup of its own where one can be made (see [`crate::cgroup`]).
    pub memory_limit: Option<u64>,
    /// Checked while it runs, apart from the readiness check (`health`) that gates traffic.
    pub liveness: Option<Liveness>,
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

/// Why an instance never turned healthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// It exited too often while starting.
    #[error("{name} crash-loops ({restarts} restarts, last exit {last_exit:?})")]
    CrashLoop { name: String, restarts: u32, last_exit: Option<i32> },
    /// It kept running but never passed its readiness check within `limit`.
    #[error("{name} did not become healthy in {}s", .limit.as_secs())]
    Timeout { name: String, limit: Duration },
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
            && check(&self.spec.health, self.spec.host, self.spec.port, self.spec.readiness.timeout).await
    }

    /// Waits until the instance is healthy; an error when it crash-loops or `limit` passes.
    pub async fn wait_healthy(&self, limit: Duration) -> Result<(), HealthError> {
        let deadline = Instant::now() + limit;
        loop {
            if let InstanceState::CrashLoop { restarts, last_exit } = self.state() {
                return Err(HealthError::CrashLoop { name: self.spec.name.clone(), restarts, last_exit });
            }
            if self.healthy().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HealthError::Timeout { name: self.spec.name.clone(), limit });
            }
            tokio::time::sleep(self.spec.readiness.interval.max(Duration::from_millis(10))).await;
        }
    }

    /// SIGTERM to its process group, SIGKILL after the grace period; returns once it is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Whether something on `host`:`port` passes `health` now, within `timeout`.
pub async fn check(health: &HealthCheck, host: std::net::IpAddr, port: u16, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, check_once(health, host, port)).await.unwrap_or(false)
}

async fn check_once(health: &HealthCheck, host: std::net::IpAddr, port: u16) -> bool {
    if let HealthCheck::Command(command) = health {
        let run = tokio::process::Command::new("bash")
            .args(["-c", command])
            .env("HOST", host.to_string())
            .env("PORT", port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        return matches!(run.await, Ok(status) if status.success());
    }
    let Ok(mut stream) = tokio::net::TcpStream::connect((host, port)).await else { return false };
    match health {
        HealthCheck::Tcp | HealthCheck::Command(_) => true,
        HealthCheck::Http { path, status } => {
            use tokio::io::AsyncWriteExt;
            let request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_err() {
                return false;
            }
            let mut first = String::new();
            let mut reader = BufReader::new(stream);
            match reader.read_line(&mut first).await {
                Ok(_) => first.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()) == Some(*status),
                Err(_) => false,
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
    // The memory limit: a cgroup, else prlimit's address-space cap, else a warning.
    let mut command_line = spec.command.clone();
    let cgroup = match spec.memory_limit {
        None => None,
        Some(bytes) => match crate::cgroup::Cgroup::create(&spec.name, bytes) {
            Ok(cgroup) => Some(cgroup),
            Err(reason) => {
                match crate::cgroup::prlimit_command(&spec.command, bytes) {
                    Some(wrapped) => {
                        log(&spec.name, &format!("no cgroup ({reason}); capping its address space with prlimit"));
                        command_line = wrapped;
                    }
                    None => log(&spec.name, &format!("memory limit not enforced: no cgroup ({reason}) and no prlimit")),
                }
                None
            }
        },
    };
    let run = Runs { spec: &spec, command_line: &command_line, cgroup: cgroup.as_ref(), log: &log, state: &state };
    run.until_stopped(&mut stop).await;
    if let Some(cgroup) = cgroup {
        cgroup.remove();
    }
}

/// What one instance's runs share.
struct Runs<'a> {
    spec: &'a InstanceSpec,
    command_line: &'a [String],
    cgroup: Option<&'a crate::cgroup::Cgroup>,
    log: &'a LogSink,
    state: &'a watch::Sender<InstanceState>,
}

/// How one run ended.
enum RunEnd {
    Exited(Option<i32>),
    Stopped,
}

impl Runs<'_> {
    /// Starts, watches and restarts the instance until it is stopped or crash-loops.
    async fn until_stopped(&self, stop: &mut watch::Receiver<bool>) {
        let spec = self.spec;
        let mut exits: Vec<Instant> = Vec::new();
        let mut restarts = 0;
        loop {
            let exited = match self.run_once(restarts, stop).await {
                Some(RunEnd::Exited(code)) => code,
                Some(RunEnd::Stopped) => return,
                None => {
                    let _ = self.state.send(InstanceState::CrashLoop { restarts, last_exit: None });
                    return;
                }
            };
            let now = Instant::now();
            exits.retain(|at| now.duration_since(*at) < spec.crash_window);
            exits.push(now);
            (self.log)(&spec.name, &format!("exited ({exited:?})"));
            if exits.len() as u32 > spec.max_restarts {
                let _ = self.state.send(InstanceState::CrashLoop { restarts, last_exit: exited });
                return;
            }
            restarts += 1;
            let _ = self.state.send(InstanceState::Restarting { restarts, last_exit: exited });
            // 100 ms, 200 ms, 400 ms … up to 10 s.
            let pause = Duration::from_millis(100 * (1 << exits.len().min(7)) as u64).min(Duration::from_secs(10));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stopping(stop) => {
                    let _ = self.state.send(InstanceState::Stopped);
                    return;
                }
            }
        }
    }

    /// One run: `None` when it cannot even start.
    async fn run_once(&self, restarts: u32, stop: &mut watch::Receiver<bool>) -> Option<RunEnd> {
        let spec = self.spec;
        let port = spec.port.to_string();
        let argv: Vec<String> = self.command_line.iter().map(|arg| arg.replace("$PORT", &port)).collect();
        let (program, args) = argv.split_first()?;
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
                (self.log)(&spec.name, &format!("cannot start {program}: {error}"));
                return None;
            }
        };
        let pid = child.id().unwrap_or(0);
        if let Some(cgroup) = self.cgroup
            && let Err(error) = cgroup.add(pid)
        {
            (self.log)(&spec.name, &format!("memory limit not enforced: {error}"));
        }
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let (log, name) = (self.log.clone(), spec.name.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log(&name, &line);
                }
            });
        }
        let _ = self.state.send(InstanceState::Running { pid, restarts });
        let end = tokio::select! {
            exited = child.wait() => RunEnd::Exited(exited.ok().and_then(|status| status.code())),
            () = self.dead(pid) => {
                let _ = child.wait().await;
                RunEnd::Exited(None)
            }
            () = stopping(stop) => {
                signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                if tokio::time::timeout(spec.stop_grace, child.wait()).await.is_err() {
                    (self.log)(&spec.name, &format!("still running {}s after SIGTERM; killed", spec.stop_grace.as_secs()));
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait().await;
                }
                let _ = self.state.send(InstanceState::Stopped);
                RunEnd::Stopped
            }
        };
        // What it started is ended with it.
        signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        Some(end)
    }

    /// Resolves once the liveness check failed often enough in a row, after killing the
    /// instance's process group; never without a liveness check.
    async fn dead(&self, pid: u32) {
        let Some(liveness) = &self.spec.liveness else { return std::future::pending().await };
        let mut failed = 0;
        loop {
            tokio::time::sleep(liveness.interval).await;
            if check(&liveness.check, self.spec.host, self.spec.port, liveness.timeout).await {
                failed = 0;
                continue;
            }
            failed += 1;
            if failed >= liveness.failures.max(1) {
                (self.log)(&self.spec.name, &format!("failed its liveness check {failed} times in a row; killed"));
                signal_group(pid, nix::sys::signal::Signal::SIGKILL);
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

/// A free port in `range` (inclusive), tried from a point that moves with each call so
/// instances started together do not race for the same one; any free port without a range.
pub fn free_port_in(range: Option<(u16, u16)>) -> std::io::Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let Some((low, high)) = range.filter(|(low, high)| low <= high) else { return free_port() };
    let size = u32::from(high - low) + 1;
    let start = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % size;
    for offset in 0..size {
        let port = low + u16::try_from((start + offset) % size).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("no free port in {low}-{high}")))
}
