//! `command:` checks (opsloop's): run a program with an argument vector, never through a
//! shell, so nothing in the file is re-parsed. `[STATUS]` is the exit code (128 + the signal
//! when killed), `[BODY]` its standard output, `[CONNECTED]` that it started. The runner's
//! timeout drops the probe, which kills the process.

use std::process::Stdio;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Kind, Probe, ProbeContext, Target};
use crate::config::Endpoint;
use crate::result::Observation;

/// Output kept per stream; the rest is read and dropped so the program never blocks on a pipe.
const MAX_OUTPUT: usize = 64 * 1024;

pub(crate) struct Command;

impl Kind for Command {
    fn name(&self) -> &'static str {
        "command"
    }

    fn claims(&self, target: &Target) -> bool {
        target.command
    }

    fn missing_status(&self) -> i64 {
        -1
    }

    fn probe<'a>(&'a self, endpoint: &'a Endpoint, _ctx: &'a ProbeContext) -> Probe<'a> {
        Box::pin(probe(endpoint))
    }
}

async fn probe(endpoint: &Endpoint) -> Observation {
    let start = Instant::now();
    let Some((program, args)) = endpoint.command.split_first() else {
        return Observation::failed("a command check needs a program");
    };
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Observation::failed(format!("starting {program}: {e}")),
    };
    let mut seen = Observation { connected: true, ..Observation::default() };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out, err, status) = tokio::join!(read_bounded(stdout), read_bounded(stderr), child.wait());
    seen.body = out;
    match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1);
            seen.status = Some(i64::from(code));
            if code != 0 {
                let last = String::from_utf8_lossy(&err);
                let last = last.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                seen.errors.push(format!(
                    "{program} exited with {code}{}",
                    if last.is_empty() { String::new() } else { format!(": {last}") }
                ));
            }
        }
        Err(e) => seen.errors.push(format!("waiting for {program}: {e}")),
    }
    seen.duration = start.elapsed();
    seen.timings.total = seen.duration;
    seen
}

async fn read_bounded<R: AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let Some(mut stream) = stream else { return Vec::new() };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}
