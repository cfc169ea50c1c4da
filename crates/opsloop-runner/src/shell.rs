//! Running a list of commands in bash with GitLab's semantics: each command echoed before it
//! runs, the first failing command ends the script with its exit code, the whole process
//! tree in its own process group so a timeout or cancellation can end all of it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use crate::events::Stream;

/// Marks an echoed command on the script's stdout: an ASCII record separator cannot appear at
/// the start of a line a command prints by accident, and only costs a missing echo if it does.
pub const COMMAND_MARKER: char = '\u{1e}';

/// Single-quotes `text` for bash.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The bash script for `commands`: `set -eo pipefail` like GitLab's runner, each command
/// announced through [`COMMAND_MARKER`] and then run as written.
pub fn script(commands: &[String]) -> String {
    // pipefail where the shell has it: bash does, a container image's plain `sh` may not.
    let mut script = String::from(
        "set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\nset +o noclobber 2>/dev/null || true\n",
    );
    for command in commands {
        let mut lines = command.lines();
        let first = lines.next().unwrap_or_default();
        let shown =
            if lines.next().is_some() { format!("{first} # collapsed multi-line command") } else { first.to_owned() };
        script.push_str(&format!("printf '\\036%s\\n' {}\n", quote(&shown)));
        script.push_str(command);
        script.push('\n');
    }
    script
}

/// How a script run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    TimedOut,
    Canceled,
}

/// A line of output from the script: an echoed command or a line on a stream.
#[derive(Debug, Clone)]
pub enum Line {
    Command(String),
    Output(Stream, String),
}

/// How a job's script is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    /// bash on this machine, in the workspace.
    Shell,
    /// bash inside bubblewrap: read-only root, private /tmp, only the workspace writable, and no
    /// network unless `network`.
    Sandbox { network: bool },
    /// A container through `engine` (podman or docker), the workspace mounted at `mount`.
    Container { engine: String, image: String, mount: String },
}

/// Where the script is, where it runs, and with what.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub script_path: &'a Path,
    pub dir: &'a Path,
    pub env: &'a [(String, String)],
    pub timeout: Option<Duration>,
    pub launcher: &'a Launcher,
    /// Start from an empty environment (plus a few basics such as PATH and HOME) instead of
    /// this process's: on the server and on agents, whose environments hold their own secrets.
    pub clean_env: bool,
}

/// What a job keeps of its runner's environment when `clean_env` is set.
const KEPT_VARIABLES: [&str; 11] =
    ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "TMPDIR"];

fn set_env(command: &mut Command, invocation: &Invocation<'_>) {
    if invocation.clean_env {
        command.env_clear();
        for name in KEPT_VARIABLES {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
    }
    command.envs(invocation.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

fn command_for(invocation: &Invocation<'_>, container_name: &str) -> Command {
    let script = invocation.script_path.as_os_str();
    match invocation.launcher {
        Launcher::Shell => {
            let mut command = Command::new("bash");
            command.arg("--noprofile").arg("--norc").arg(script).current_dir(invocation.dir);
            set_env(&mut command, invocation);
            command
        }
        Launcher::Sandbox { network } => {
            let mut command = Command::new("bwrap");
            // Own PID, IPC and UTS namespaces (no signalling the host's processes), the root
            // read-only, /tmp and /run private (no host sockets), only the workspace writable.
            command.args([
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
                "--tmpfs",
                "/run",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
            ]);
            if !network {
                command.arg("--unshare-net");
            }
            command
                .arg("--bind")
                .arg(invocation.dir)
                .arg(invocation.dir)
                .arg("--ro-bind")
                .arg(script)
                .arg(script)
                .arg("--die-with-parent")
                .arg("--chdir")
                .arg(invocation.dir)
                .args(["bash", "--noprofile", "--norc"])
                .arg(script)
                .current_dir(invocation.dir);
            set_env(&mut command, invocation);
            command
        }
        Launcher::Container { engine, image, mount } => {
            let mut command = Command::new(engine);
            command.args(["run", "--rm", "--init", "--network", "none", "--name"]).arg(container_name);
            if engine.ends_with("podman") {
                // Measured on these machines: podman works with runc and lowered ulimits only.
                command.args(["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]);
            }
            let mut volume = invocation.dir.as_os_str().to_owned();
            volume.push(format!(":{mount}"));
            let mut script_volume = script.to_owned();
            script_volume.push(":/opsloop-script.sh:ro");
            command.arg("-v").arg(volume).arg("-v").arg(script_volume).arg("-w").arg(mount);
            // `-e NAME` takes the value from the engine's own environment: values (secrets among
            // them) never appear on a command line another user could read.
            for (name, _) in invocation.env {
                command.arg("-e").arg(name);
            }
            command.envs(invocation.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            command.arg(image).args([
                "sh",
                "-c",
                "if command -v bash >/dev/null 2>&1; then exec bash /opsloop-script.sh; else exec sh /opsloop-script.sh; fi",
            ]);
            command
        }
    }
}

/// Longest output line passed on whole; longer ones are split, so one line without a newline
/// cannot hold the whole output in memory.
const MAX_LINE_BYTES: u64 = 64 * 1024;

static CONTAINER_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs `script_text` as described by `invocation`, calling `on_line` for each line. Ends
/// the whole process group on timeout or cancellation: SIGTERM, then SIGKILL after a grace.
pub async fn run(
    script_text: &str,
    invocation: &Invocation<'_>,
    mut cancel: watch::Receiver<bool>,
    on_line: &mut (dyn FnMut(Line) + Send),
) -> std::io::Result<Ending> {
    tokio::fs::write(invocation.script_path, script_text).await?;
    let timeout = invocation.timeout;
    let container_name = format!(
        "opsloop-{}-{}",
        std::process::id(),
        CONTAINER_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut command = command_for(invocation, &container_name);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = command.spawn()?;
    let group = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel::<Line>(1024);
    let stdout_task = stdout.map(|out| {
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(out);
            let mut buffer = Vec::new();
            while (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut buffer).await.is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&buffer).trim_end_matches(['\n', '\r']).to_owned();
                buffer.clear();
                let line = match text.strip_prefix(COMMAND_MARKER) {
                    Some(command) => Line::Command(command.to_owned()),
                    None => Line::Output(Stream::Stdout, text),
                };
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        })
    });
    let stderr_task = stderr.map(|err| {
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(err);
            let mut buffer = Vec::new();
            while (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut buffer).await.is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&buffer).trim_end_matches(['\n', '\r']).to_owned();
                buffer.clear();
                if tx.send(Line::Output(Stream::Stderr, text)).await.is_err() {
                    break;
                }
            }
        })
    });
    drop(lines_tx);

    let deadline = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(deadline);
    let mut ending = None;
    let mut status = None;
    loop {
        tokio::select! {
            line = lines_rx.recv() => match line {
                Some(line) => on_line(line),
                None => {
                    if status.is_none() {
                        status = Some(child.wait().await?);
                    }
                    break;
                }
            },
            exit = child.wait(), if status.is_none() => { status = Some(exit?); }
            () = &mut deadline, if ending.is_none() => {
                ending = Some(Ending::TimedOut);
                terminate(group, &mut child, &mut status).await;
            }
            changed = cancel.changed(), if ending.is_none() => {
                if changed.is_err() || *cancel.borrow() {
                    ending = Some(Ending::Canceled);
                    terminate(group, &mut child, &mut status).await;
                }
            }
        }
    }
    // Whatever the script left running in its group goes with it.
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    if let Some(task) = stdout_task {
        let _ = task.await;
    }
    if let Some(task) = stderr_task {
        let _ = task.await;
    }
    if let Some(ending) = ending {
        if let Launcher::Container { engine, .. } = invocation.launcher {
            // The engine's client is gone; the container may not be.
            let _ = Command::new(engine)
                .args(["rm", "--force", &container_name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        return Ok(ending);
    }
    let code = status.and_then(|s| s.code()).unwrap_or(1);
    Ok(Ending::Exited(code))
}

/// SIGTERM to the group, then SIGKILL once the grace is over or the script's shell has exited
/// (reaping it here, since an unreaped leader would keep answering for the group).
async fn terminate(
    group: Option<Pid>,
    child: &mut tokio::process::Child,
    status: &mut Option<std::process::ExitStatus>,
) {
    let Some(group) = group else { return };
    let _ = killpg(group, Signal::SIGTERM);
    let grace = Duration::from_secs(3);
    let started = std::time::Instant::now();
    while started.elapsed() < grace {
        if status.is_none()
            && let Ok(Some(exit)) = child.try_wait()
        {
            *status = Some(exit);
        }
        // The leader is gone and so is the rest of the group (ESRCH).
        if status.is_some() && killpg(group, None).is_err() {
            return;
        }
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
}

/// Parses GitLab durations: `3600`, `30s`, `10 minutes`, `1h 30m`, `2 hours 5 min`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim().to_ascii_lowercase();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    let mut unit = String::new();
    let mut found = false;
    let mut flush = |number: &mut String, unit: &mut String| -> Option<()> {
        if number.is_empty() {
            let filler = unit.is_empty() || unit == "and";
            unit.clear();
            return filler.then_some(());
        }
        let value: u64 = number.parse().ok()?;
        let factor = match unit.as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" | "" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(factor)?)?;
        number.clear();
        unit.clear();
        Some(())
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut number, &mut unit)?;
            }
            number.push(c);
            found = true;
        } else if c.is_ascii_alphabetic() {
            unit.push(c);
        } else if c.is_whitespace() || c == ',' {
            if !unit.is_empty() {
                flush(&mut number, &mut unit)?;
            }
        } else {
            return None;
        }
    }
    flush(&mut number, &mut unit)?;
    found.then(|| Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2 hours and 5 minutes"), Some(Duration::from_secs(7500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn scripts_echo_commands_safely() {
        let text = script(&["echo 'it''s'".to_owned(), "for i in 1 2; do\n  echo $i\ndone".to_owned()]);
        assert!(text.starts_with("set -e\n(set -o pipefail)"));
        assert!(text.contains(r"printf '\036%s\n' 'echo '\''it'\'''\''s'\'''"), "{text}");
        assert!(text.contains("for i in 1 2; do # collapsed multi-line command"));
    }

    fn invocation<'a>(
        script_path: &'a Path,
        dir: &'a Path,
        timeout: Option<Duration>,
        launcher: &'a Launcher,
    ) -> Invocation<'a> {
        Invocation { script_path, dir, env: &[], timeout, launcher, clean_env: false }
    }

    #[tokio::test]
    async fn runs_stops_at_first_failure_and_kills_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (_tx, rx) = watch::channel(false);
        let mut lines = Vec::new();
        let text =
            script(&["echo one".to_owned(), ">&2 echo two".to_owned(), "false".to_owned(), "echo never".to_owned()]);
        let (script_path, shell) = (dir.path().join("s.sh"), Launcher::Shell);
        let ending =
            run(&text, &invocation(&script_path, dir.path(), None, &shell), rx.clone(), &mut |l| lines.push(l))
                .await
                .unwrap();
        assert_eq!(ending, Ending::Exited(1));
        let shown: Vec<String> = lines
            .iter()
            .map(|l| match l {
                Line::Command(c) => format!("$ {c}"),
                Line::Output(Stream::Stdout, t) => format!("> {t}"),
                Line::Output(Stream::Stderr, t) => format!("! {t}"),
            })
            .collect();
        assert!(shown.contains(&"$ echo one".to_owned()) && shown.contains(&"> one".to_owned()));
        assert!(shown.contains(&"! two".to_owned()));
        assert!(!shown.iter().any(|l| l.contains("never") && l.starts_with('>')));

        let marker = dir.path().join("child-alive");
        let text = script(&[format!("(sleep 30; touch {}) &", marker.display()), "sleep 30".to_owned()]);
        let started = std::time::Instant::now();
        let script_path = dir.path().join("t.sh");
        let timeout = Some(Duration::from_millis(300));
        let ending = run(&text, &invocation(&script_path, dir.path(), timeout, &shell), rx, &mut |_| {}).await.unwrap();
        assert_eq!(ending, Ending::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!marker.exists(), "a background child outlived the timeout");
    }

    #[tokio::test]
    async fn the_sandbox_allows_only_the_workspace_and_no_network() {
        if std::process::Command::new("bwrap").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "CI installs bubblewrap");
            eprintln!("skipped: sandbox test, because bwrap is missing (apt-get install bubblewrap)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("ws");
        std::fs::create_dir_all(&workspace).unwrap();
        // Outside the workspace on the real (read-only) root: /tmp would be the sandbox's own.
        let elsewhere =
            tempfile::tempdir_in(std::env::var_os("CARGO_TARGET_TMPDIR").unwrap_or_else(|| "/var/tmp".into()))
                .unwrap_or_else(|_| tempfile::tempdir().unwrap());
        let outside = elsewhere.path().join("outside.txt");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let text = script(&[
            "echo inside > made-here.txt".to_owned(),
            format!("if echo x > {}; then echo WROTE-OUTSIDE; fi", outside.display()),
            format!("if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo NETWORK; else echo no-network; fi"),
        ]);
        let (_tx, rx) = watch::channel(false);
        let script_path = dir.path().join("s.sh");
        let sandbox = Launcher::Sandbox { network: false };
        let mut lines = Vec::new();
        let ending = run(&text, &invocation(&script_path, &workspace, None, &sandbox), rx, &mut |l| lines.push(l))
            .await
            .unwrap();
        let output: Vec<String> = lines
            .iter()
            .filter_map(|l| if let Line::Output(Stream::Stdout, t) = l { Some(t.clone()) } else { None })
            .collect();
        assert_eq!(ending, Ending::Exited(0), "{output:?}");
        assert!(workspace.join("made-here.txt").exists());
        assert!(!outside.exists() && !output.contains(&"WROTE-OUTSIDE".to_owned()), "{output:?}");
        assert!(output.contains(&"no-network".to_owned()), "{output:?}");
    }
}
