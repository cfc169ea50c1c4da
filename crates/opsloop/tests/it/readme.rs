//! The README's commands, run as written: every command of its `sh` blocks, in order, in one
//! shell, from the directory where `opsloop serve --demo` was started, against that server.
//! Only what runs until stopped (`opsloop serve`, `opsloop agent`) and the two `cargo`
//! commands are left out (other tests cover them). A command that fails fails the test, with
//! its output.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BIN, Server, opsloop_client};

/// The commands of the README's `sh` blocks, a command with its `\` continuation lines.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = line.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if !line.trim_end().ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

/// What the README shows but this test cannot run as a step: programs that run until stopped.
fn runs_elsewhere(command: &str) -> bool {
    ["cargo ", "opsloop serve", "opsloop agent "].iter().any(|prefix| command.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_runs_as_written_against_the_demo() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let commands = readme_commands(&readme);
    assert!(commands.len() > 30, "the README's commands were found: {commands:?}");
    let cwd = tempfile::tempdir().unwrap();
    let server = tokio::task::block_in_place(|| Server::start_as_readme(cwd.path()));
    // A person reads on while the demo's first pipeline runs; the commands about its jobs and
    // deployments come once it has.
    let token = tokio::task::block_in_place(|| server.token("admin"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed =
            tokio::task::block_in_place(|| opsloop_client(&server, &token, &["pipeline", "list", "demo", "--json"]));
        let pipelines: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        if pipelines[0]["status"] == "success" {
            break;
        }
        assert!(Instant::now() < deadline, "the demo pipeline did not pass: {pipelines}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut script = String::from("set -u\n");
    let mut run = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        if runs_elsewhere(command) {
            eprintln!("not run here (runs until stopped, or builds): {}", command.trim());
            continue;
        }
        let command = command.replace("http://127.0.0.1:8080", &server.url);
        // The marker on a line of its own: curl's answers end without a newline.
        script.push_str(&format!(
            "echo '@@@ begin {index}'\n{command}rc=$?; printf '\\n@@@ end {index} %s\\n' \"$rc\"\n"
        ));
        run.push(index);
    }
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(cwd.path())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("OPSLOOP_SERVER", &server.url)
        .env_remove("OPSLOOP_TOKEN")
        .env_remove("OPSLOOP_DATA_DIR")
        .env_remove("OPSLOOP_DATABASE_URL")
        .env_remove("OPSLOOP_CONFIG")
        .env_remove("OPSLOOP_PROJECT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buffer = String::new();
        let _ = stdout.read_to_string(&mut buffer);
        buffer
    });
    let err = std::thread::spawn(move || {
        let mut buffer = String::new();
        let _ = stderr.read_to_string(&mut buffer);
        buffer
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    for index in &run {
        let ended = out.lines().find_map(|line| line.strip_prefix(&format!("@@@ end {index} ")));
        let begin = out.find(&format!("@@@ begin {index}\n")).unwrap_or(0);
        let shown = &out[begin..(begin + 3000).min(out.len())];
        match ended {
            Some("0") => {}
            Some(code) => {
                panic!(
                    "README command exited {code}:\n{}\n--- output ---\n{shown}\n--- stderr ---\n{err}",
                    commands[*index]
                )
            }
            None => panic!(
                "README command did not finish:\n{}\n--- output ---\n{shown}\n--- stderr ---\n{err}",
                commands[*index]
            ),
        }
    }
    eprintln!("{} README commands ran, {} left to other tests", run.len(), commands.len() - run.len());
    let releases = server.data_dir.join("releases");
    drop(server);
    opsloop_runner::reap::kill_marked("OPSLOOP_RELEASE_DIR", &releases);
}
