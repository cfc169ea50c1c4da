//! Job workspaces, artifacts and caches on the local disk, under the project's `.opsloop/`.
//!
//! Blocking file I/O: callers run these on `spawn_blocking`.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use opsloop_pipeline::config::glob_matches;

/// A job name made safe as one path component.
pub fn dir_name(job: &str) -> String {
    job.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// The project's files a job starts with: git's tracked files (from the working tree), or
/// every file when the project is not a git repository. `state_dir` is never included.
pub fn project_files(project: &Path, state_dir_name: &str) -> io::Result<Vec<String>> {
    let output = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(project)
        .output();
    let mut files = match output {
        Ok(output) if output.status.success() => output
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>(),
        _ => walk(project, project)?,
    };
    files.retain(|f| !(f == state_dir_name || f.starts_with(&format!("{state_dir_name}/")) || f.starts_with(".git/")));
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(root: &Path, dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            if entry.file_name() == ".git" {
                continue;
            }
            // Directories are listed too, so an empty one survives as an artifact.
            if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
            out.extend(walk(root, &path)?);
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(out)
}

/// Writes the files of `HEAD` (what a pipeline at this commit sees) into `target`, replacing
/// it, and lists them. `None` when `project` has no commit to take them from.
pub fn snapshot_head(project: &Path, target: &Path) -> io::Result<Option<Vec<String>>> {
    let has_head = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .current_dir(project)
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_head {
        return Ok(None);
    }
    let _ = std::fs::remove_dir_all(target);
    std::fs::create_dir_all(target)?;
    // `git archive | tar -x`, both with argument vectors.
    let mut archive = Command::new("git")
        .args(["archive", "--format=tar", "HEAD"])
        .current_dir(project)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = archive.stdout.take().ok_or_else(|| io::Error::other("git archive has no output"))?;
    let extracted = Command::new("tar").arg("-x").arg("-C").arg(target).stdin(stdout).status()?;
    let archived = archive.wait()?;
    if !archived.success() || !extracted.success() {
        return Err(io::Error::other("git archive HEAD | tar -x failed"));
    }
    let mut files = walk(target, target)?;
    files.sort();
    Ok(Some(files))
}

/// Every file and directory below `root`, relative and sorted.
pub fn list_tree(root: &Path) -> io::Result<Vec<String>> {
    let mut files = walk(root, root)?;
    files.sort();
    Ok(files)
}

/// Copies `files` (relative paths of files and directories) from `from` into `to`, keeping
/// permissions and symlinks.
pub fn copy_files(from: &Path, to: &Path, files: &[String]) -> io::Result<()> {
    for file in files {
        let source = from.join(file);
        let target = to.join(file);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let metadata = match std::fs::symlink_metadata(&source) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if metadata.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if metadata.file_type().is_symlink() {
            let link = std::fs::read_link(&source)?;
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(link, &target)?;
        } else if metadata.is_file() {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// Copies a whole directory tree into another (merging).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    if !from.exists() {
        return Ok(());
    }
    let files = walk(from, from)?;
    copy_files(from, to, &files)
}

/// A path from an `artifacts:`/`cache:` entry made relative to the workspace, or `None` when
/// it points outside (absolute elsewhere, or `..`).
pub fn relative_pattern(pattern: &str, workspace: &Path, project: &Path) -> Option<String> {
    let mut text = pattern.trim().to_owned();
    for prefix in [workspace.to_string_lossy().into_owned(), project.to_string_lossy().into_owned()] {
        if let Some(rest) = text.strip_prefix(&prefix) {
            text = rest.to_owned();
        }
    }
    let text = text.trim_start_matches('/').trim_start_matches("./").to_owned();
    if Path::new(&text).components().any(|c| matches!(c, Component::ParentDir)) {
        return None;
    }
    Some(text.trim_end_matches('/').to_owned())
}

/// Files in `workspace` matched by `patterns` and not by `exclude`.
pub fn collect(workspace: &Path, project: &Path, patterns: &[String], exclude: &[String]) -> io::Result<Vec<String>> {
    if !workspace.exists() {
        return Ok(Vec::new());
    }
    let all = walk(workspace, workspace)?;
    let mut chosen: Vec<String> = Vec::new();
    for pattern in patterns {
        let Some(pattern) = relative_pattern(pattern, workspace, project) else { continue };
        if pattern.is_empty() {
            chosen.extend(all.iter().cloned());
            continue;
        }
        chosen.extend(glob_matches(&pattern, &all));
    }
    let excluded: Vec<String> = exclude
        .iter()
        .filter_map(|p| relative_pattern(p, workspace, project))
        .flat_map(|p| glob_matches(&p, &chosen))
        .collect();
    chosen.retain(|f| !excluded.contains(f));
    chosen.sort();
    chosen.dedup();
    Ok(chosen)
}

/// Where one job's artifacts are kept.
pub fn artifacts_dir(state: &Path, job: &str) -> PathBuf {
    state.join("artifacts").join(dir_name(job))
}

/// Where a cache key's files are kept.
pub fn cache_dir(state: &Path, key: &str) -> PathBuf {
    state.join("cache").join(dir_name(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_globs_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        for file in ["path/file1", "path/file2", "path/sub/file3", "other.txt"] {
            std::fs::create_dir_all(ws.join(file).parent().unwrap()).unwrap();
            std::fs::write(ws.join(file), "x").unwrap();
        }
        let project = Path::new("/project");
        let chosen = collect(ws, project, &[format!("{}/path/", ws.display())], &["path/file2".to_owned()]).unwrap();
        assert_eq!(chosen, ["path", "path/file1", "path/sub", "path/sub/file3"]);
        assert_eq!(collect(ws, project, &["**/*.txt".to_owned()], &[]).unwrap(), ["other.txt"]);
        let kept_empty = collect(ws, project, &["path".to_owned()], &["path/sub/**".to_owned()]).unwrap();
        assert_eq!(
            kept_empty,
            ["path", "path/file1", "path/file2", "path/sub"],
            "the directory stays, its content goes"
        );
        assert_eq!(collect(ws, project, &["../etc/passwd".to_owned()], &[]).unwrap(), Vec::<String>::new());
        assert_eq!(dir_name("build: [a, b] 1/2"), "build___a__b__1_2");
    }
}
