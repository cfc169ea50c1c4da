//! Polls project repositories for new commits, for forges that cannot send a webhook
//! (Jenkins' "Poll SCM"). Each due project is claimed in the store, so with several servers
//! on one database a project is polled once per interval.

use std::collections::HashMap;
use std::time::Duration;

use opsloop_store::{Actor, Project};

use crate::state::AppState;

/// A changed ref to run: (ref name as a pipeline sees it, commit).
type Change = (String, String);

/// How long one `git ls-remote` may take before it is killed: a silent remote must not hold up
/// the polls of every other project.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// The branches and tags of `repo_url` (`refs/heads/main` → commit). Tags are peeled to the
/// commit they name. The URL comes after `--` so it is never read as an option.
async fn remote_refs(repo_url: &str) -> Result<Vec<(String, String)>, String> {
    let command = tokio::process::Command::new("git")
        .args(["ls-remote", "--heads", "--tags", "--", repo_url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(LS_REMOTE_TIMEOUT, command)
        .await
        .map_err(|_| format!("git ls-remote gave no answer in {}s", LS_REMOTE_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        return Err(format!("git ls-remote failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let mut refs: HashMap<String, String> = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((sha, name)) = line.split_once('\t') else { continue };
        match name.strip_suffix("^{}") {
            // The peeled line of an annotated tag names the commit; it wins over the tag object.
            Some(tag) => {
                refs.insert(tag.to_owned(), sha.to_owned());
            }
            None => {
                refs.entry(name.to_owned()).or_insert_with(|| sha.to_owned());
            }
        }
    }
    let mut refs: Vec<_> = refs.into_iter().collect();
    refs.sort();
    Ok(refs)
}

/// The refs that are new or moved since `seen`, as pipeline refs (`main`, `v1.0`).
fn changes(seen: &HashMap<String, String>, now: &[(String, String)]) -> Vec<Change> {
    now.iter()
        .filter(|(name, sha)| seen.get(name) != Some(sha))
        .filter_map(|(name, sha)| {
            let short = name.strip_prefix("refs/heads/").or_else(|| name.strip_prefix("refs/tags/"))?;
            Some((short.to_owned(), sha.clone()))
        })
        .collect()
}

/// Polls every due project once; returns how many pipelines started.
pub async fn poll_due(state: &AppState) -> usize {
    let now = state.clock.now_ms();
    let due = match state.store.claim_due_polls(now).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "could not read the projects due for a poll");
            return 0;
        }
    };
    let mut started = 0;
    for (project, previous_poll) in due {
        started += poll(state, &project, previous_poll == 0).await;
    }
    started
}

async fn poll(state: &AppState, project: &Project, first_poll: bool) -> usize {
    let refs = match remote_refs(&project.repo_url).await {
        Ok(refs) => refs,
        Err(message) => {
            tracing::warn!(project = %project.name, %message, "could not poll the repository");
            return 0;
        }
    };
    let seen = match state.store.polled_refs(project.id).await {
        Ok(seen) => seen,
        Err(error) => {
            tracing::warn!(project = %project.name, %error, "could not read the refs seen");
            return 0;
        }
    };
    // The first poll only learns what is there: turning polling on must not run a pipeline
    // for every branch and tag the repository ever had.
    let changed = if first_poll { Vec::new() } else { changes(&seen, &refs) };
    if let Err(error) = state.store.set_polled_refs(project.id, &refs).await {
        tracing::warn!(project = %project.name, %error, "could not record the refs seen");
        return 0;
    }
    let mut started = 0;
    for (git_ref, sha) in changed {
        let actor = Actor { name: "poll", source_ip: "" };
        match crate::ci::trigger(state, project, &git_ref, Some(&sha), "push", Vec::new(), actor).await {
            Ok(_) => started += 1,
            Err(error) => {
                tracing::warn!(project = %project.name, %git_ref, %error, "polled pipeline did not start")
            }
        }
    }
    started
}

/// Polls due projects every few seconds until the server stops.
pub async fn run_forever(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(5));
    loop {
        interval.tick().await;
        poll_due(&state).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn only_new_and_moved_refs_run() {
        let seen: HashMap<_, _> = refs(&[("refs/heads/main", "a"), ("refs/heads/old", "b")]).into_iter().collect();
        let now = refs(&[("refs/heads/main", "c"), ("refs/heads/old", "b"), ("refs/tags/v1", "d"), ("HEAD", "c")]);
        assert_eq!(changes(&seen, &now), refs(&[("main", "c"), ("v1", "d")]));
    }
}
