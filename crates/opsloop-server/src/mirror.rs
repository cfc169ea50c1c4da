//! One mirror per project (`<data-dir>/mirrors/<id>.git`, `git clone --mirror`), fetched
//! before each pipeline, and a cheap checkout per pipeline from it (`git clone --shared`,
//! which borrows the mirror's objects instead of copying them). A repository is downloaded
//! once, then only what is new; every git command has a time limit, so a silent remote fails
//! the pipeline instead of hanging it. Fetches of one project's mirror take turns.

use std::path::Path;
use std::time::Duration;

use crate::state::AppState;

/// Cloning or fetching from the project's remote.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Local work: cloning from the mirror, resolving and checking out the commit.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs git in `dir`; arguments are a vector, never a shell line, and URLs come after `--`.
pub(crate) async fn git(dir: &Path, args: &[&str], limit: Duration) -> Result<String, String> {
    let command = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let name = args.first().copied().unwrap_or("");
    let output = tokio::time::timeout(limit, command)
        .await
        .map_err(|_| format!("git {name} did not finish in {}s", limit.as_secs()))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!("git {name} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Where a project's mirror of `repo_url` lives: one directory per URL, so a project whose
/// URL changes gets a new mirror while checkouts borrowing from the old one finish.
pub fn mirror_dir(state: &AppState, project_id: i64, repo_url: &str) -> std::path::PathBuf {
    let digest = crate::auth::credentials::digest(repo_url);
    state.config.data_dir.join("mirrors").join(format!("{project_id}-{}.git", &digest[..12]))
}

/// Brings the project's mirror up to date with `repo_url`, making it the first time. The
/// caller holds the project's mirror lock.
async fn update_mirror(mirror: &Path, repo_url: &str) -> Result<(), String> {
    let parent = mirror.parent().ok_or("no parent directory for the mirror")?;
    tokio::fs::create_dir_all(parent).await.map_err(|e| format!("{}: {e}", parent.display()))?;
    if mirror.join("HEAD").exists() {
        git(mirror, &["fetch", "--prune", "--quiet", "origin"], FETCH_TIMEOUT).await?;
        return Ok(());
    }
    let _ = tokio::fs::remove_dir_all(mirror).await;
    let target = mirror.to_str().ok_or("the data directory is not UTF-8")?;
    let made = git(parent, &["clone", "--mirror", "--quiet", "--", repo_url, target], FETCH_TIMEOUT).await;
    if let Err(error) = made {
        let _ = tokio::fs::remove_dir_all(mirror).await;
        return Err(error);
    }
    Ok(())
}

/// What the project's mirror says of a ref someone asked a pipeline for.
#[derive(Debug, PartialEq, Eq)]
pub enum RefCheck {
    /// A branch, tag or commit of the repository.
    Exists,
    /// Not there even after a fetch; the branches and tags that are.
    Missing { known: Vec<String> },
    /// No mirror yet, or the remote did not answer in time: the pipeline finds out itself.
    Unknown,
}

/// How long a request may wait for a fetch that checks its ref.
const CHECK_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `git_ref` names something in the project's repository: looked up in the mirror,
/// fetched once when not found there (a branch pushed a moment ago). The ref goes to git as
/// an argument after `--end-of-options`, never in a shell line.
pub async fn check_ref(state: &AppState, project_id: i64, repo_url: &str, git_ref: &str) -> RefCheck {
    let mirror = mirror_dir(state, project_id, repo_url);
    if !mirror.join("HEAD").exists() {
        return RefCheck::Unknown;
    }
    let lock = match state.ci.mirror_locks.lock() {
        Ok(mut locks) => locks.entry(project_id).or_default().clone(),
        Err(_) => return RefCheck::Unknown,
    };
    let _turn = lock.lock().await;
    let resolves = |mirror: std::path::PathBuf| async move {
        let spec = format!("{git_ref}^{{commit}}");
        git(&mirror, &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec], LOCAL_TIMEOUT).await.is_ok()
    };
    if resolves(mirror.clone()).await {
        return RefCheck::Exists;
    }
    if git(&mirror, &["fetch", "--prune", "--quiet", "origin"], CHECK_FETCH_TIMEOUT).await.is_err() {
        return RefCheck::Unknown;
    }
    if resolves(mirror.clone()).await {
        return RefCheck::Exists;
    }
    let listed = git(&mirror, &["for-each-ref", "--format=%(refname:short)", "refs/heads", "refs/tags"], LOCAL_TIMEOUT)
        .await
        .unwrap_or_default();
    RefCheck::Missing { known: listed.lines().map(str::to_owned).collect() }
}

/// Checks out `git_ref` (a branch, tag or commit) — or exactly `commit` when a push named it —
/// of the project's repository into `target`; returns the commit.
pub async fn checkout(
    state: &AppState,
    project_id: i64,
    repo_url: &str,
    git_ref: &str,
    commit: Option<&str>,
    target: &Path,
) -> Result<String, String> {
    // Fetching and cloning from the mirror take turns per project, so a fetch never changes
    // the mirror under a clone.
    let lock = state
        .ci
        .mirror_locks
        .lock()
        .map_err(|_| "the mirror locks are poisoned".to_owned())?
        .entry(project_id)
        .or_default()
        .clone();
    let turn = lock.lock().await;
    let mirror = mirror_dir(state, project_id, repo_url);
    update_mirror(&mirror, repo_url).await?;
    let parent = target.parent().ok_or("no parent directory for the checkout")?;
    tokio::fs::create_dir_all(parent).await.map_err(|e| format!("{}: {e}", parent.display()))?;
    let _ = tokio::fs::remove_dir_all(target).await;
    let (from, to) = (mirror.to_str().ok_or("not UTF-8")?, target.to_str().ok_or("not UTF-8")?);
    git(parent, &["clone", "--quiet", "--shared", "--no-checkout", "--", from, to], LOCAL_TIMEOUT).await?;
    drop(turn);
    let candidates = match commit {
        // A push names its commit: run exactly that, even if the branch moved on since.
        Some(commit) => vec![commit.to_owned()],
        None => vec![format!("origin/{git_ref}"), git_ref.to_owned()],
    };
    let mut sha = None;
    for candidate in &candidates {
        let spec = format!("{candidate}^{{commit}}");
        if let Ok(found) = git(target, &["rev-parse", "--verify", "--quiet", &spec], LOCAL_TIMEOUT).await {
            sha = Some(found);
            break;
        }
    }
    let sha = sha.ok_or_else(|| format!("`{git_ref}` is no branch, tag or commit of {repo_url}"))?;
    git(target, &["checkout", "--quiet", "--detach", &sha], LOCAL_TIMEOUT).await?;
    Ok(sha)
}

/// What `git_ref` is in a checkout made by [`checkout`] (branches as `origin/<name>`, tags as
/// themselves): a branch when the repository has such a branch, else a tag when it has such
/// a tag, else a bare commit. A push of a tag arrives as its short name, like a branch's.
pub async fn ref_kind(checkout: &Path, git_ref: &str) -> opsloop_pipeline::predefined::GitRef {
    use opsloop_pipeline::predefined::GitRef;
    let has = |full: String| async move {
        git(checkout, &["show-ref", "--verify", "--quiet", &full], LOCAL_TIMEOUT).await.is_ok()
    };
    if has(format!("refs/remotes/origin/{git_ref}")).await {
        GitRef::Branch(git_ref.to_owned())
    } else if has(format!("refs/tags/{git_ref}")).await {
        GitRef::Tag(git_ref.to_owned())
    } else {
        GitRef::Commit
    }
}
