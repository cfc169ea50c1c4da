//! Records the git commit the binary is built from, for `opsloop --version` and `/metrics`.

use std::process::Command;

fn main() {
    let commit = std::env::var("OPSLOOP_BUILD_COMMIT").ok().or_else(git_commit).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=OPSLOOP_BUILD_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=OPSLOOP_BUILD_COMMIT");
    if let Some(git_dir) = run_git(&["rev-parse", "--absolute-git-dir"]) {
        for watched in ["HEAD", "refs/heads", "packed-refs", "index"] {
            println!("cargo:rerun-if-changed={git_dir}/{watched}");
        }
    }
}

fn git_commit() -> Option<String> {
    let commit = run_git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = run_git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|status| !status.is_empty());
    Some(if dirty { format!("{commit}-dirty") } else { commit })
}

fn run_git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
