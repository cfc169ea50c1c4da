//! Ending job processes that outlived their runner. A `kill -9` of the server (or an agent)
//! gives it no chance to end its jobs' process groups; at the next start, every process whose
//! environment says it belongs to a job under this runner's directory is killed. Jobs are
//! found by their `CI_PROJECT_DIR`, which every job process inherits (also after a `cd`).

use std::path::Path;

/// Kills (SIGKILL) the processes whose `CI_PROJECT_DIR` lies under `root`; returns how many.
/// Linux only (it reads `/proc`); elsewhere it finds none.
pub fn kill_orphans(root: &Path) -> usize {
    kill_marked("CI_PROJECT_DIR", root)
}

/// Kills (SIGKILL) the processes whose environment variable `variable` names a path under
/// `root` (deployed instances are found this way by their release directory).
pub fn kill_marked(variable: &str, root: &Path) -> usize {
    let Some(root) = root.to_str() else { return 0 };
    let marker = format!("{variable}={}/", root.trim_end_matches('/'));
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let own = std::process::id();
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        if u32::try_from(pid).is_ok_and(|pid| pid == own) {
            continue;
        }
        // Unreadable (another user's process, or gone): not ours.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let belongs = environ.split(|byte| *byte == 0).any(|variable| variable.starts_with(marker.as_bytes()));
        if belongs && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// `(parent pid, process group)` of `pid`, from `/proc/<pid>/stat` (the fields after the
/// command name, which may itself hold spaces and parentheses).
fn parent_and_group(pid: i32) -> Option<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let _state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some((parent, group))
}

fn has_marker(pid: i32, marker: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|environ| environ.split(|byte| *byte == 0).any(|variable| variable.starts_with(marker)))
}

/// After the server that started them died (`kill -9`): kills (SIGKILL) the process groups of
/// the instances it left, found by `variable` under `root` in their environment, and returns
/// how many groups. The top of an instance's tree has a parent that is not itself marked; it
/// is left alone while that parent runs `server_exe` (a server started since, whose
/// instances these are), and killed with its group otherwise (re-parented to init or a
/// subreaper: nobody supervises it any more).
pub fn kill_orphaned_groups(variable: &str, root: &Path, server_exe: &Path) -> usize {
    let Some(root) = root.to_str() else { return 0 };
    let marker = format!("{variable}={}/", root.trim_end_matches('/'));
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut groups = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        if !has_marker(pid, marker.as_bytes()) {
            continue;
        }
        let Some((parent, group)) = parent_and_group(pid) else { continue };
        if has_marker(parent, marker.as_bytes()) {
            continue;
        }
        let supervised = std::fs::read_link(format!("/proc/{parent}/exe")).is_ok_and(|exe| exe == server_exe);
        if !supervised && group > 1 {
            groups.insert(group);
        }
    }
    groups
        .into_iter()
        .filter(|group| {
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(*group), nix::sys::signal::Signal::SIGKILL).is_ok()
        })
        .count()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_process_of_a_job_under_the_root_is_killed_and_others_are_not() {
        let root = tempfile::tempdir().unwrap();
        let job_dir = root.path().join("pipelines/7/source/.opsloop/builds/test");
        let mut orphan = std::process::Command::new("sleep").arg("30").env("CI_PROJECT_DIR", &job_dir).spawn().unwrap();
        let mut bystander =
            std::process::Command::new("sleep").arg("30").env("CI_PROJECT_DIR", "/somewhere/else").spawn().unwrap();
        // A process is seen with its own environment once its exec is through; under load
        // that can take a moment after spawn returns.
        let mut killed = 0;
        for _ in 0..100 {
            killed += kill_orphans(&root.path().join("pipelines"));
            if killed > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(killed, 1);
        assert!(!orphan.wait().unwrap().success());
        assert!(bystander.try_wait().unwrap().is_none(), "a process of someone else's job is left alone");
        let _ = bystander.kill();
        let _ = bystander.wait();
    }
}
