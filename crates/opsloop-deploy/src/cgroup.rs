//! Memory limits for instances: a cgroup of their own under this process's cgroup, with the
//! limit set before the instance is moved in (its children follow it). cgroup v2 (`memory.max`)
//! when the memory controller is available there, else cgroup v1 (`memory.limit_in_bytes`).
//! Where neither can be written (no permission, no controller), [`prlimit_command`] caps the
//! address space instead with util-linux's `prlimit`, which is coarser; and without that, the
//! limit is not enforced and the supervisor says so in the instance's log.
//!
//! Hand-written because what is needed is a few file writes; the cgroup crates wrap far more
//! (and want unsafe code around fork, which this workspace forbids).

use std::path::{Path, PathBuf};

/// An instance's own cgroup; removed (once empty) by [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

/// What `/proc/self/mountinfo` and `/proc/self/cgroup` say about one hierarchy.
struct Hierarchy {
    mount: PathBuf,
    own: String,
    v2: bool,
}

fn hierarchies() -> Vec<Hierarchy> {
    let (Ok(mountinfo), Ok(cgroups)) =
        (std::fs::read_to_string("/proc/self/mountinfo"), std::fs::read_to_string("/proc/self/cgroup"))
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else { continue };
        let mount = before.split_whitespace().nth(4).unwrap_or_default();
        let mut after = after.split_whitespace();
        let (fstype, _source, options) = (after.next(), after.next(), after.next().unwrap_or_default());
        match fstype {
            Some("cgroup2") => {
                let own = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/");
                found.push(Hierarchy { mount: PathBuf::from(mount), own: own.to_owned(), v2: true });
            }
            Some("cgroup") if options.split(',').any(|o| o == "memory") => {
                let own = cgroups.lines().find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                    controllers.split(',').any(|c| c == "memory").then_some(path)
                });
                found.push(Hierarchy { mount: PathBuf::from(mount), own: own.unwrap_or("/").to_owned(), v2: false });
            }
            _ => {}
        }
    }
    found
}

/// Why an instance gets no cgroup of its own, or cannot join it.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup's directory could not be made (no permission, a read-only mount).
    #[error("{}: {source}", .dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A control file refused the value (no permission, the controller not handed down).
    #[error("{}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Neither cgroup v2 nor v1 offers a memory controller here.
    #[error("no cgroup hierarchy with a memory controller")]
    NoMemoryController,
    /// Every hierarchy with a memory controller refused, each for its own reason.
    #[error("{}", join(.failures))]
    Refused { failures: Vec<CgroupError> },
}

fn join(failures: &[CgroupError]) -> String {
    failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write { path: path.to_owned(), source })
}

impl Cgroup {
    /// Makes a cgroup named after `name` limited to `bytes` of memory.
    pub fn create(name: &str, bytes: u64) -> Result<Cgroup, CgroupError> {
        let leaf: String = format!("opsloop-{name}-{}", std::process::id())
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .collect();
        let mut failures = Vec::new();
        for hierarchy in hierarchies() {
            let parent = hierarchy.mount.join(hierarchy.own.trim_start_matches('/'));
            let dir = parent.join(&leaf);
            let limit_file = if hierarchy.v2 { "memory.max" } else { "memory.limit_in_bytes" };
            if hierarchy.v2 {
                // The parent must hand the memory controller down (fails where it may not).
                let _ = write(&parent.join("cgroup.subtree_control"), "+memory");
            }
            if let Err(source) = std::fs::create_dir_all(&dir) {
                failures.push(CgroupError::CreateDir { dir, source });
                continue;
            }
            match write(&dir.join(limit_file), &bytes.to_string()) {
                Ok(()) => return Ok(Cgroup { dir }),
                Err(error) => {
                    let _ = std::fs::remove_dir(&dir);
                    failures.push(error);
                }
            }
        }
        if failures.is_empty() {
            return Err(CgroupError::NoMemoryController);
        }
        Err(CgroupError::Refused { failures })
    }

    /// Moves the process `pid` (and so what it starts from now on) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The limit as the kernel holds it.
    pub fn limit(&self) -> Option<u64> {
        ["memory.max", "memory.limit_in_bytes"]
            .iter()
            .find_map(|file| std::fs::read_to_string(self.dir.join(file)).ok())
            .and_then(|text| text.trim().parse().ok())
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes the cgroup; its processes must be gone.
    pub fn remove(self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `command` wrapped in `prlimit --as=BYTES`, when `prlimit` is installed.
pub fn prlimit_command(command: &[String], bytes: u64) -> Option<Vec<String>> {
    let found = ["/usr/bin/prlimit", "/bin/prlimit"].into_iter().find(|p| Path::new(p).exists())?;
    let mut wrapped = vec![found.to_owned(), format!("--as={bytes}"), "--".to_owned()];
    wrapped.extend(command.iter().cloned());
    Some(wrapped)
}

/// `256M`, `1G`, `512Mi`, `65536` (bytes).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KB" | "Ki" | "KiB" => 1 << 10,
        "M" | "MB" | "Mi" | "MiB" => 1 << 20,
        "G" | "GB" | "Gi" | "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor).filter(|bytes| *bytes >= 1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1Gi"), Some(1 << 30));
        assert_eq!(parse_size("2097152"), Some(2 << 20));
        assert_eq!(parse_size("12k"), None, "below a mebibyte is a mistake");
        assert_eq!(parse_size("lots"), None);
    }
}
