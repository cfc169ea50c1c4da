//! The project's git repository, read in-process (gix): what `HEAD` is, the facts GitLab's
//! predefined variables are made of, and the tracked files a workspace starts with.
//!
//! A `git` process costs one to three milliseconds to start, more than the answer takes to
//! read; a local run used to spawn about ten of them before its first job.

use std::io;
use std::path::{Path, PathBuf};

use gix::bstr::ByteSlice;

/// A repository around a project directory (which may be a subfolder of its working tree).
pub struct Repo {
    repo: gix::Repository,
    /// The project's place in the working tree, `/`-separated with a trailing `/`, or empty at
    /// the root: git lists files relative to where it is asked, and so does this.
    prefix: String,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo").field("git_dir", &self.repo.git_dir()).field("prefix", &self.prefix).finish()
    }
}

/// What `HEAD` and the configuration say, each `None` where git would have no answer.
#[derive(Debug, Clone, Default)]
pub struct HeadFacts {
    pub sha: Option<String>,
    /// The branch `HEAD` is on (short name); `None` when detached.
    pub branch: Option<String>,
    /// A tag pointing at `HEAD` (`git describe --exact-match --tags`).
    pub tag: Option<String>,
    /// `origin/HEAD`'s branch, without `origin/`.
    pub default_branch: Option<String>,
    /// `Name <email>` of HEAD's author.
    pub author: Option<String>,
    /// HEAD's commit time, ISO 8601 in the committer's offset (`%cI`).
    pub committed_at: Option<String>,
    pub message: Option<String>,
    pub user_name: Option<String>,
    pub user_email: Option<String>,
    pub origin_url: Option<String>,
}

impl Repo {
    /// The repository `project` is in, found as git finds it (upwards, honouring `GIT_DIR`);
    /// `None` outside one, or for a bare repository.
    pub fn open(project: &Path) -> Option<Repo> {
        let repo = gix::ThreadSafeRepository::discover_with_environment_overrides(project).ok()?.to_thread_local();
        let workdir = repo.workdir()?;
        let canonical = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let prefix = match canonical(project).strip_prefix(canonical(workdir)) {
            Ok(relative) if relative.as_os_str().is_empty() => String::new(),
            Ok(relative) => format!("{}/", relative.to_string_lossy()),
            Err(_) => String::new(),
        };
        Some(Repo { repo, prefix })
    }

    /// The top of the working tree.
    pub fn workdir(&self) -> Option<PathBuf> {
        self.repo.workdir().map(Path::to_path_buf)
    }

    /// Where `info/exclude` lives (shared by every worktree of the repository).
    pub fn common_dir(&self) -> PathBuf {
        self.repo.common_dir().to_path_buf()
    }

    pub fn head_facts(&self) -> HeadFacts {
        let config = self.repo.config_snapshot();
        let setting = |key: &str| config.string(key).map(|value| value.to_str_lossy().into_owned());
        let mut facts = HeadFacts {
            user_name: setting("user.name"),
            user_email: setting("user.email"),
            origin_url: setting("remote.origin.url"),
            default_branch: self.repo.find_reference("refs/remotes/origin/HEAD").ok().and_then(|reference| {
                match reference.target() {
                    gix::refs::TargetRef::Symbolic(name) => {
                        let short = name.shorten().to_str_lossy().into_owned();
                        Some(short.strip_prefix("origin/").map(str::to_owned).unwrap_or(short))
                    }
                    gix::refs::TargetRef::Object(_) => None,
                }
            }),
            ..HeadFacts::default()
        };
        let Ok(head) = self.repo.head() else { return facts };
        if head.is_unborn() {
            return facts;
        }
        facts.branch = head.referent_name().map(|name| name.shorten().to_str_lossy().into_owned());
        let Ok(commit) = self.repo.head_commit() else { return facts };
        let id = commit.id;
        facts.sha = Some(id.to_string());
        if let Ok(author) = commit.author() {
            let author = author.trim();
            facts.author = Some(format!("{} <{}>", author.name.to_str_lossy(), author.email.to_str_lossy()));
        }
        if let Ok(time) = commit.committer().and_then(|c| c.time()) {
            facts.committed_at = time.format(gix::date::time::format::ISO8601_STRICT).ok();
        }
        if let Ok(message) = commit.message_raw() {
            facts.message = Some(message.to_str_lossy().trim_end().to_owned());
        }
        facts.tag = self.tag_at(id);
        facts
    }

    /// A tag whose commit is `id`: an annotated one before a lightweight one, as `git describe`
    /// prefers, then the first by name.
    fn tag_at(&self, id: gix::ObjectId) -> Option<String> {
        let platform = self.repo.references().ok()?;
        let mut found: Vec<(bool, String)> = Vec::new();
        for reference in platform.tags().ok()?.flatten() {
            let mut reference = reference;
            let direct = reference.target().try_id().map(ToOwned::to_owned);
            let Ok(peeled) = reference.peel_to_id() else { continue };
            if peeled.detach() == id {
                let annotated = direct.is_some_and(|direct| direct != id);
                found.push((!annotated, reference.name().shorten().to_str_lossy().into_owned()));
            }
        }
        found.sort();
        found.into_iter().next().map(|(_, name)| name)
    }

    /// Git's tracked files below the project (`git ls-files --cached` there), relative to it.
    pub fn tracked_files(&self) -> io::Result<Vec<String>> {
        let index = self.repo.index_or_empty().map_err(io::Error::other)?;
        let mut files: Vec<String> = index
            .entries()
            .iter()
            .filter_map(|entry| {
                let path = entry.path(&index).to_str_lossy();
                path.strip_prefix(&self.prefix).filter(|p| !p.is_empty()).map(str::to_owned)
            })
            .collect();
        // An unmerged path has an entry per stage; git lists it once.
        files.dedup();
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git").args(args).current_dir(dir).output().unwrap();
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Each fact is what the `git` command it replaces says.
    #[test]
    fn facts_and_files_are_what_git_says() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "trunk"]);
        git(root, &["config", "user.name", "Ada L"]);
        git(root, &["config", "user.email", "ada@example.invalid"]);
        git(root, &["remote", "add", "origin", "git@example.invalid:group/project.git"]);
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        for file in ["a.txt", "sub/b.txt", "sub/deeper/c.txt"] {
            std::fs::write(root.join(file), file).unwrap();
        }
        git(root, &["add", "-A"]);
        let env = [("GIT_COMMITTER_DATE", "2024-03-04T05:06:07+02:00")];
        let commit = std::process::Command::new("git")
            .args(["commit", "-q", "-m", "subject line\n\nbody text\n"])
            .envs(env)
            .current_dir(root)
            .status()
            .unwrap();
        assert!(commit.success());
        git(root, &["tag", "-a", "v1.0", "-m", "release"]);
        git(root, &["tag", "light"]);
        git(root, &["symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk"]);

        let facts = Repo::open(root).unwrap().head_facts();
        assert_eq!(facts.sha.as_deref(), Some(git(root, &["rev-parse", "HEAD"]).as_str()));
        assert_eq!(facts.branch.as_deref(), Some("trunk"));
        assert_eq!(facts.tag.as_deref(), Some(git(root, &["describe", "--exact-match", "--tags", "HEAD"]).as_str()));
        assert_eq!(facts.default_branch.as_deref(), Some("trunk"));
        assert_eq!(facts.author.as_deref(), Some(git(root, &["log", "-1", "--format=%an <%ae>"]).as_str()));
        assert_eq!(facts.committed_at.as_deref(), Some("2024-03-04T05:06:07+02:00"));
        assert_eq!(facts.message.as_deref(), Some(git(root, &["log", "-1", "--format=%B"]).as_str()));
        assert_eq!(facts.user_name.as_deref(), Some("Ada L"));
        assert_eq!(facts.origin_url.as_deref(), Some("git@example.invalid:group/project.git"));

        // From a subfolder, as `git ls-files` there: below it, relative to it.
        let sub = Repo::open(&root.join("sub")).unwrap();
        assert_eq!(sub.tracked_files().unwrap(), ["b.txt", "deeper/c.txt"]);
        assert_eq!(
            sub.workdir().map(|w| std::fs::canonicalize(w).unwrap()),
            Some(std::fs::canonicalize(root).unwrap())
        );

        // Detached: no branch; a fresh repository: nothing.
        git(root, &["checkout", "-q", "--detach"]);
        assert_eq!(Repo::open(root).unwrap().head_facts().branch, None);
        let empty = tempfile::tempdir().unwrap();
        git(empty.path(), &["init", "-q"]);
        let facts = Repo::open(empty.path()).unwrap().head_facts();
        assert!(facts.sha.is_none() && facts.branch.is_none() && facts.tag.is_none());
        assert!(Repo::open(&std::env::temp_dir().join("opsloop-no-such-dir")).is_none());
    }
}
