//! Release files on disk: each release's checkout and unpacked artifacts under
//! `<data-dir>/releases`, instances' logs, builds, and the sweeper that removes what nothing
//! needs.

use super::*;

pub(super) fn releases_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("releases")
}

/// Where a release's files are: per commit, and per artifact archive when it has one.
pub fn release_dir(state: &AppState, release: &Release) -> PathBuf {
    let artifact = serde_json::from_str::<ReleaseConfig>(&release.config).ok().and_then(|c| c.artifact);
    let name = match artifact {
        Some(artifact) => format!("{}-{}", release.commit_sha, &artifact.digest[..artifact.digest.len().min(12)]),
        None => release.commit_sha.clone(),
    };
    releases_dir(state).join(release.project_id.to_string()).join(&release.service).join(name)
}

/// Unpacks the artifacts of `job` of the newest pipeline at `commit` into `dir`.
pub(super) async fn unpack_artifacts(
    state: &AppState,
    project: &Project,
    commit: &str,
    job: &str,
    dir: &Path,
) -> Result<ArtifactRef, DeployError> {
    let found = state.store.artifacts_at_commit(project.id, commit, job).await?;
    let Some((pipeline_id, stored)) = found else {
        return Err(unavailable(format!(
            "no successful `{job}` job with artifacts at {}: run its pipeline first (the release is what it built)",
            &commit[..commit.len().min(12)]
        )));
    };
    let archive = state
        .objects()?
        .get(&stored.object_key)
        .await
        .map_err(|error| DeployError::Internal(format!("cannot read a job's artifacts: {error}")))?;
    let digest = crate::auth::credentials::digest_bytes(&archive);
    let target = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::objects::unzip_into(&archive, &target))
        .await
        .map_err(|e| DeployError::Internal(format!("unpacking artifacts stopped: {e}")))?
        .map_err(|error| unavailable(format!("the artifacts of `{job}` could not be unpacked: {error}")))?;
    Ok(ArtifactRef { job: job.to_owned(), pipeline_id, job_id: stored.job_id, digest })
}

/// The log file of a service in an environment (its instances' output, masked).
pub fn service_log(state: &AppState, project_id: i64, environment: &str, service: &str) -> PathBuf {
    state
        .config
        .data_dir
        .join("deploy-logs")
        .join(project_id.to_string())
        .join(environment)
        .join(format!("{service}.log"))
}

pub(super) async fn build_release(
    build: &str,
    dir: &Path,
    env: &[(String, String)],
    log: &opsloop_deploy::supervisor::LogSink,
) -> Result<(), String> {
    // The command is the project's own, from its repository, run as a pipeline job's script
    // would be; nothing from a request is spliced into it.
    let output = tokio::process::Command::new("bash")
        .args(["-c", build])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(1800), output)
        .await
        .map_err(|_| "the build ran longer than 30 minutes".to_owned())?
        .map_err(|e| format!("cannot run the build: {e}"))?;
    for line in String::from_utf8_lossy(&output.stdout).lines().chain(String::from_utf8_lossy(&output.stderr).lines()) {
        log("build", line);
    }
    if output.status.success() { Ok(()) } else { Err(format!("the build failed ({})", output.status)) }
}

/// Removes the files of releases nothing needs: not serving, not kept warm, not wanted by a
/// deployment that has yet to end, not among the `keep_newest` newest of their service (a
/// rollback target), and older than `min_age` (a release being unpacked is younger). Leftover
/// checkouts of requests cut short go too. Returns how many directories went.
pub async fn sweep_releases(state: &AppState, keep_newest: usize, min_age: Duration) -> usize {
    let mut needed: Vec<i64> = match state.store.serving_releases(None).await {
        Ok(serving) => serving.into_iter().map(|s| s.release_id).collect(),
        Err(_) => return 0,
    };
    match state.store.releases_in_use().await {
        Ok(in_use) => needed.extend(in_use),
        Err(_) => return 0,
    }
    needed.extend(
        state.deploy.warm.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().map(|w| w.release_id),
    );
    let mut keep = std::collections::HashSet::new();
    for id in needed {
        if let Ok(Some(release)) = state.store.release(id).await {
            keep.insert(release_dir(state, &release));
        }
    }
    let root = releases_dir(state);
    tokio::task::spawn_blocking(move || {
        let old_enough = |path: &Path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().unwrap_or_default() >= min_age)
        };
        let entries = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir).map(|read| read.flatten().map(|e| e.path()).collect()).unwrap_or_default()
        };
        let mut removed = 0;
        for project in entries(&root) {
            for dir in entries(&project) {
                let leftover = dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".checkout-"));
                if leftover {
                    if old_enough(&dir) && std::fs::remove_dir_all(&dir).is_ok() {
                        removed += 1;
                    }
                    continue;
                }
                // A service: its releases, newest first.
                let mut releases = entries(&dir);
                releases.sort_by_key(|path| std::cmp::Reverse(std::fs::metadata(path).and_then(|m| m.modified()).ok()));
                for release in releases.into_iter().skip(keep_newest) {
                    if !keep.contains(&release) && old_enough(&release) && std::fs::remove_dir_all(&release).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    })
    .await
    .unwrap_or(0)
}

/// Sweeps release files every ten minutes, keeping the five newest of each service.
pub async fn sweep_releases_forever(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(600));
    loop {
        interval.tick().await;
        let removed = sweep_releases(&state, 5, Duration::from_secs(3600)).await;
        if removed > 0 {
            tracing::info!(removed, "removed the files of releases nothing needs");
        }
    }
}
