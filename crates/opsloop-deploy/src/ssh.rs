//! Instances on other hosts, over SSH (OpenSSH's `ssh` client; no agent to install there).
//!
//! A release is copied once per host (`tar` through `ssh`) into
//! `~/.opsloop/releases/<release>`, with its environment in a file readable only by the
//! remote user (so secrets never appear on a command line). An instance is then the local
//! process `ssh -tt HOST 'cd DIR && . ./.opsloop-env && exec env PORT=N COMMAND…'`, run by
//! the same [`supervisor`](crate::supervisor) as a local one: it restarts it with backoff,
//! declares a crash loop, and stops it with SIGTERM to the `ssh` client, whose pseudo-terminal
//! then hangs up the remote process group (SIGHUP). Health is checked over the network, at
//! the host's address and the instance's port, and the proxy sends traffic there.
//!
//! Every piece of the remote command line is quoted for the remote shell; the command and its
//! arguments come from the project's `opsloop.yml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// How opsloop reaches one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// `-i`: the private key (default: the ssh client's own choice, `~/.ssh/id_*`).
    pub identity: Option<PathBuf>,
    /// `UserKnownHostsFile` (default: `~/.ssh/known_hosts`). New hosts are accepted and
    /// remembered (`StrictHostKeyChecking=accept-new`); a changed key is refused.
    pub known_hosts: Option<PathBuf>,
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a release could not be copied to a host.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// `tar` or `ssh` could not be started here (not installed, no permission).
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `tar` could not pack the release's directory.
    #[error("tar failed: {stderr}")]
    Tar { code: Option<i32>, stderr: String },
    #[error("ssh has no stdin")]
    NoStdin,
    /// The host took longer than `limit` (unreachable, or the copy is too large).
    #[error("ssh to {target} did not finish in {}s", .limit.as_secs())]
    Timeout { target: String, limit: Duration },
    /// Waiting for the `ssh` client failed.
    #[error("ssh to {target}: {source}")]
    Wait {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// The remote command (or the connection) failed; `stderr` is what `ssh` printed.
    #[error("ssh to {target} failed: {stderr}")]
    Failed { target: String, code: Option<i32>, stderr: String },
}

/// Quotes `text` for a POSIX shell: `'…'`, with each `'` written as `'\''`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl SshTarget {
    /// `user@host:port`, for logs and instance names.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// The options every `ssh` call takes, up to and including the destination.
    fn base_args(&self, tty: bool) -> Vec<String> {
        let mut args = vec![
            "-p".to_owned(),
            self.port.to_string(),
            "-o".to_owned(),
            "BatchMode=yes".to_owned(),
            "-o".to_owned(),
            "StrictHostKeyChecking=accept-new".to_owned(),
            "-o".to_owned(),
            "ConnectTimeout=10".to_owned(),
            "-o".to_owned(),
            "ServerAliveInterval=5".to_owned(),
        ];
        if tty {
            // A pseudo-terminal: when the client goes, the remote process group gets SIGHUP.
            args.push("-tt".to_owned());
        }
        if let Some(identity) = &self.identity {
            args.extend([
                "-i".to_owned(),
                identity.display().to_string(),
                "-o".to_owned(),
                "IdentitiesOnly=yes".to_owned(),
            ]);
        }
        if let Some(known) = &self.known_hosts {
            args.extend(["-o".to_owned(), format!("UserKnownHostsFile={}", known.display())]);
        }
        args.push("--".to_owned());
        args.push(format!("{}@{}", self.user, self.host));
        args
    }

    /// Where a release lives on the host (relative to the remote user's home).
    pub fn remote_dir(release_key: &str) -> String {
        format!(".opsloop/releases/{release_key}")
    }

    /// Copies `local_dir` (without `.git`) to the host, with `env` as its environment file.
    /// A release already there is left as it is, apart from its environment file.
    pub async fn upload(&self, local_dir: &Path, release_key: &str, env: &[(String, String)]) -> Result<(), SshError> {
        let remote = Self::remote_dir(release_key);
        let env_file: String =
            env.iter().map(|(name, value)| format!("export {name}={}\n", shell_quote(value))).collect();
        // The directory is unpacked beside and renamed, so a copy cut short is never used.
        let script = format!(
            "set -e; umask 077; d={dir}; if [ ! -d \"$d\" ]; then mkdir -p \"$d.part\" && tar -x -f - -C \"$d.part\" \
             && mv \"$d.part\" \"$d\"; else cat >/dev/null; fi",
            dir = shell_quote(&remote)
        );
        let archive = tar_of(local_dir).await?;
        run_ssh(self, &script, &archive).await?;
        let write_env = format!("set -e; umask 077; cat > {}/.opsloop-env", shell_quote(&remote));
        run_ssh(self, &write_env, env_file.as_bytes()).await
    }

    /// The local command that runs `command` on the host in the release's directory with
    /// `PORT` set (the supervisor puts the port in place of `$PORT`). A `memory_limit` caps
    /// the remote process's address space (`ulimit -v`, as `prlimit --as` does for a local
    /// instance without a cgroup): a cgroup there would need opsloop's own agent on the host.
    pub fn command(&self, release_key: &str, command: &[String], memory_limit: Option<u64>) -> Vec<String> {
        let remote = Self::remote_dir(release_key);
        let program: Vec<String> = command.iter().map(|arg| shell_quote(arg).replace("$PORT", "'$PORT'")).collect();
        // Whole KiB, at least one: what `ulimit -v` counts in.
        let limit =
            memory_limit.map(|bytes| format!("ulimit -v {} && ", bytes.div_ceil(1024).max(1))).unwrap_or_default();
        // `$PORT` stays outside the quotes above only as the literal the supervisor replaces.
        let line = format!(
            "cd {} && {limit}set -a && . ./.opsloop-env && set +a && exec env PORT=$PORT {}",
            shell_quote(&remote),
            program.join(" ")
        );
        let mut argv = vec!["ssh".to_owned()];
        argv.extend(self.base_args(true));
        argv.push(line);
        argv
    }
}

/// `tar -c` of a directory without its `.git`, in memory (releases are source trees).
async fn tar_of(dir: &Path) -> Result<Vec<u8>, SshError> {
    let output = tokio::process::Command::new("tar")
        .args(["-c", "-f", "-", "--exclude=./.git", "-C"])
        .arg(dir)
        .arg(".")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| SshError::Spawn { program: "tar", source })?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(SshError::Tar { code: output.status.code(), stderr })
    }
}

async fn run_ssh(target: &SshTarget, script: &str, input: &[u8]) -> Result<(), SshError> {
    let mut child = tokio::process::Command::new("ssh")
        .args(target.base_args(false))
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SshError::Spawn { program: "ssh", source })?;
    let mut stdin = child.stdin.take().ok_or(SshError::NoStdin)?;
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
    });
    let output = tokio::time::timeout(SETUP_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| SshError::Timeout { target: target.label(), limit: SETUP_TIMEOUT })?
        .map_err(|source| SshError::Wait { target: target.label(), source })?;
    let _ = writer.await;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(SshError::Failed { target: target.label(), code: output.status.code(), stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_the_port_stays_replaceable() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let target =
            SshTarget { user: "deploy".into(), host: "10.0.0.5".into(), port: 2222, identity: None, known_hosts: None };
        let program = ["python3".into(), "server.py".into(), "--port=$PORT".into(), "a b; rm -rf /".into()];
        let argv = target.command("r1", &program, None);
        assert_eq!(argv[0], "ssh");
        assert!(argv.contains(&"deploy@10.0.0.5".to_owned()));
        let line = argv.last().unwrap();
        assert!(line.contains("'a b; rm -rf /'"), "{line}");
        assert!(line.contains("'--port='$PORT''"), "{line}");
        assert!(line.contains("exec env PORT=$PORT 'python3'"), "{line}");
        assert!(!line.contains("ulimit"), "{line}");
        let limited = target.command("r1", &program, Some(256 << 20));
        assert!(limited.last().unwrap().contains("&& ulimit -v 262144 && set -a"), "{limited:?}");
    }
}
