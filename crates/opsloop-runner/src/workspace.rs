//! Job workspaces, artifacts and caches on the local disk, under the project's `.opsloop/`.
//!
//! Blocking file I/O: callers run these on `spawn_blocking`.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use opsloop_pipeline::config::glob_matches;

/// A job name or cache key as one path component: the name itself when it is plainly safe,
/// otherwise its safe characters plus a digest of the whole name, so two names never share a
/// directory (`build:x` and `build/x`) and `..` or an empty key cannot escape.
/// Longer names are cut to this many characters (plus the digest): a path component may hold
/// 255 bytes, and a matrix value can be longer than that.
const MAX_DIR_NAME: usize = 100;

pub fn dir_name(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if safe == name && !name.is_empty() && !name.starts_with('.') && safe.len() <= MAX_DIR_NAME {
        return safe;
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let kept: String = safe.trim_start_matches('.').chars().take(MAX_DIR_NAME).collect();
    format!("{kept}-{}", &digest[..12])
}

/// The project's files a job starts with: git's tracked files and the untracked ones git does
/// not ignore (from the working tree), or every file when the project is not a git repository.
/// `state_dir` is never included.
pub fn project_files(project: &Path, state_dir_name: &str) -> io::Result<Vec<String>> {
    let Some(repo) = crate::repo::Repo::open(project) else { return listed_files(project, state_dir_name, None) };
    let mut files = repo.tracked_files()?;
    // Untracked files that `.gitignore` and its kin leave in: git's own rules (global excludes,
    // `info/exclude`, every level's `.gitignore`) are many, so git is asked for these.
    files.extend(git_list(project, &["ls-files", "-z", "--others", "--exclude-standard"]).unwrap_or_default());
    listed_files(project, state_dir_name, Some(files))
}

/// Git's tracked files as they are in the working tree, edits included and deleted ones left
/// out (what gitlab-ci-local copies into a job), or every file outside a git repository.
pub fn tracked_files(project: &Path, state_dir_name: &str) -> io::Result<Vec<String>> {
    let tracked = crate::repo::Repo::open(project).map(|repo| repo.tracked_files()).transpose()?;
    let mut files = listed_files(project, state_dir_name, tracked)?;
    files.retain(|f| project.join(f).symlink_metadata().is_ok());
    Ok(files)
}

/// What `git <args>` lists (`-z` separated), or `None` when git fails.
fn git_list(project: &Path, args: &[&str]) -> Option<Vec<String>> {
    let output = Command::new("git").args(args).current_dir(project).output().ok()?;
    output.status.success().then(|| {
        output
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    })
}

/// `listed` (or, outside a repository, every file below `project`) without the state folder
/// and `.git`, sorted.
fn listed_files(project: &Path, state_dir_name: &str, listed: Option<Vec<String>>) -> io::Result<Vec<String>> {
    let mut files = match listed {
        Some(files) => files,
        None => walk(project, project)?,
    };
    let state_prefix = format!("{state_dir_name}/");
    files.retain(|f| !(f == state_dir_name || f.starts_with(&state_prefix) || f.starts_with(".git/")));
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
    // A throw-away index checked out into the target: the files of HEAD as a clone has them
    // (unlike `git archive`, which applies export-ignore and export-subst).
    let index = target.with_extension("index");
    let mut prefix = target.as_os_str().to_owned();
    prefix.push("/");
    let steps: [Vec<std::ffi::OsString>; 2] = [
        vec!["read-tree".into(), "HEAD".into()],
        vec!["checkout-index".into(), "--all".into(), "--force".into(), {
            let mut p: std::ffi::OsString = "--prefix=".into();
            p.push(&prefix);
            p
        }],
    ];
    for args in steps {
        let status = Command::new("git").args(&args).env("GIT_INDEX_FILE", &index).current_dir(project).status()?;
        if !status.success() {
            let _ = std::fs::remove_file(&index);
            return Err(io::Error::other(format!("git {} failed", args[0].to_string_lossy())));
        }
    }
    let _ = std::fs::remove_file(&index);
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

/// Where `relative` goes below `root`, refusing paths that leave it (absolute, `..`) and
/// any existing symlink on the way: a job must not redirect a later copy (artifacts into the
/// project, a cache into a workspace) outside the directory it is meant for.
fn safe_target(root: &Path, relative: &str) -> io::Result<PathBuf> {
    let refuse =
        |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, format!("refusing to write `{relative}`: {why}"));
    let mut target = root.to_path_buf();
    let parts: Vec<Component<'_>> = Path::new(relative).components().collect();
    for (index, component) in parts.iter().enumerate() {
        let Component::Normal(part) = component else { return Err(refuse("it leaves the directory")) };
        target.push(part);
        let is_last = index + 1 == parts.len();
        if let Ok(metadata) = std::fs::symlink_metadata(&target)
            && metadata.file_type().is_symlink()
        {
            if !is_last {
                return Err(refuse("a folder on its way is a symbolic link"));
            }
            // The entry itself may be replaced, never followed.
            std::fs::remove_file(&target)?;
        }
    }
    Ok(target)
}

/// Copies `files` (relative paths of files and directories) from `from` into `to`, keeping
/// permissions and symlinks (copied as links, never followed).
pub fn copy_files(from: &Path, to: &Path, files: &[String]) -> io::Result<()> {
    for file in files {
        let target = safe_target(to, file)?;
        let source = from.join(file);
        let metadata = match std::fs::symlink_metadata(&source) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
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

/// Files that jobs' workspaces leave out, from a file of rsync exclude patterns (what
/// gitlab-ci-local's `.gitlab-ci-local-ignores` holds): `name` anywhere, `/path` from the
/// project's root, `dir/` only directories, `*`, `**` and `?` wildcards; blank lines and `#`
/// comments are skipped. Include rules (`+ pattern`) are not supported and are skipped.
#[derive(Debug, Clone, Default)]
pub struct Ignores {
    rules: Vec<IgnoreRule>,
}

#[derive(Debug, Clone)]
struct IgnoreRule {
    regex: regex::Regex,
    /// From the root, not at any depth.
    anchored: bool,
    /// Several components (`a/b`): matched against whole trailing components.
    has_slash: bool,
    directory_only: bool,
}

impl Ignores {
    pub fn parse(text: &str) -> Ignores {
        let rules = text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#') && !line.starts_with(';'))
            .filter(|line| !line.starts_with("+ "))
            .filter_map(|line| {
                let line = line.strip_prefix("- ").unwrap_or(line);
                let directory_only = line.ends_with('/');
                let line = line.trim_end_matches('/');
                let anchored = line.starts_with('/');
                let line = line.trim_start_matches('/');
                let regex = regex::Regex::new(&format!("^{}$", glob_regex(line))).ok()?;
                Some(IgnoreRule { regex, anchored, has_slash: line.contains('/'), directory_only })
            })
            .collect();
        Ignores { rules }
    }

    /// Whether `path` (a file, relative to the project) is left out: it or a folder it is in
    /// matches a rule.
    pub fn ignores(&self, path: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let parts: Vec<&str> = path.split('/').collect();
        (1..=parts.len()).any(|end| {
            let is_dir = end < parts.len();
            let prefix = &parts[..end];
            self.rules.iter().any(|rule| {
                if rule.directory_only && !is_dir {
                    return false;
                }
                if rule.anchored {
                    rule.regex.is_match(&prefix.join("/"))
                } else if rule.has_slash {
                    (0..end).any(|start| rule.regex.is_match(&prefix[start..].join("/")))
                } else {
                    rule.regex.is_match(prefix[end - 1])
                }
            })
        })
    }
}

/// An rsync wildcard pattern as a regular expression body.
fn glob_regex(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(".*");
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out
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
        assert_eq!(dir_name("consume"), "consume");
        assert_ne!(dir_name("build:x"), dir_name("build/x"));
        assert!(dir_name("build: [a, b] 1/2").starts_with("build___a__b__1_2-"));
        // A matrix value of hundreds of characters still makes a usable, unique file name.
        let long = format!("deploy: [{}]", "x".repeat(300));
        assert!(dir_name(&long).len() <= MAX_DIR_NAME + 13);
        assert_ne!(dir_name(&long), dir_name(&format!("deploy: [{}y]", "x".repeat(300))));
        for hostile in ["..", ".", "", "../x"] {
            let name = dir_name(hostile);
            assert!(!name.is_empty() && !name.starts_with('.') && !name.contains('/'), "{hostile:?} -> {name}");
        }
    }

    #[test]
    fn ignores_read_rsync_patterns() {
        let ignores = Ignores::parse("# comment\n*-big-*\n/build/\nlogs/*.log\n- tmp\n+ keep\n");
        assert!(ignores.ignores("test-big-file.txt"));
        assert!(ignores.ignores("sub/test-big-file.txt"));
        assert!(!ignores.ignores("test-small-file.txt"));
        assert!(ignores.ignores("build/out.bin"));
        assert!(!ignores.ignores("src/build/out.bin"), "anchored at the root");
        assert!(!ignores.ignores("build"), "only a folder named build");
        assert!(ignores.ignores("app/logs/a.log"));
        assert!(!ignores.ignores("app/logs/sub/a.log"));
        assert!(ignores.ignores("tmp/x") && ignores.ignores("a/tmp"));
        assert!(!ignores.ignores("keep"));
        assert!(!Ignores::default().ignores("anything"));
    }

    #[test]
    fn copies_never_follow_symlinks_at_the_destination() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join("d")).unwrap();
        std::fs::write(from.path().join("d/f"), "payload").unwrap();
        std::os::unix::fs::symlink(outside.path(), to.path().join("d")).unwrap();
        assert!(copy_files(from.path(), to.path(), &["d/f".to_owned()]).is_err());
        assert!(!outside.path().join("f").exists());
        std::fs::write(from.path().join("g"), "new").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), to.path().join("g")).unwrap();
        copy_files(from.path(), to.path(), &["g".to_owned()]).unwrap();
        assert!(!outside.path().join("victim").exists(), "the link was replaced, not followed");
        assert!(copy_files(from.path(), to.path(), &["../escape".to_owned()]).is_err());
    }
}
