//! What a job's environment gets: GitLab's predefined variables, the project's and instance's
//! CI/CD variables (decrypted for the pipelines allowed to see them), the trigger's variables
//! and the pipeline's own token.

use super::*;

/// The encryption context of stored pipeline variables.
pub(super) const VARIABLES_CONTEXT: &str = "pipeline-variables";

/// The trigger variables a pipeline was started with, decrypted.
pub(super) async fn pipeline_variables(state: &AppState, pipeline_id: i64) -> Result<Vec<(String, String)>, String> {
    let request = state.store.pipeline_request(pipeline_id).await.map_err(|e| e.to_string())?.unwrap_or_default();
    decode_variables(state, &request.variables)
}

pub(super) fn decode_variables(state: &AppState, stored: &str) -> Result<Vec<(String, String)>, String> {
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    state
        .vault()
        .map_err(|_| "the secrets vault is not available".to_owned())
        .and_then(|vault| vault.decrypt(stored, VARIABLES_CONTEXT).map_err(|e| e.to_string()))
        .and_then(|json| serde_json::from_str::<Vec<(String, String)>>(&json).map_err(|e| e.to_string()))
}

/// How long a pipeline's token lasts at most (it is deleted when the run ends).
pub(super) const PIPELINE_TOKEN_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// Makes the run's token and gives it to its jobs (masked): `CI_JOB_TOKEN` as on GitLab,
/// and `OPSLOOP_TOKEN`, `OPSLOOP_SERVER`, `OPSLOOP_PROJECT`, so `opsloop deploy` in a job
/// needs no setup. Returns the token's digest (to delete it when the run ends).
pub(super) async fn pipeline_token(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    acting_user: &str,
    secrets: &mut Secrets,
) -> Result<String, String> {
    let token = format!(
        "{}{}",
        crate::auth::PIPELINE_TOKEN_PREFIX,
        crate::auth::credentials::new_secret().map_err(|e| e.to_string())?
    );
    let digest = crate::auth::credentials::digest(&token);
    let record = opsloop_store::PipelineToken {
        pipeline_id: pipeline.id,
        project_id: project.id,
        username: acting_user.to_owned(),
        expires_at: state.store.now_ms() + PIPELINE_TOKEN_LIFETIME_MS,
    };
    state.store.create_pipeline_token(&digest, &record).await.map_err(|e| e.to_string())?;
    let server = server_url(state);
    for (name, value) in [
        ("CI_JOB_TOKEN", token.clone()),
        ("OPSLOOP_TOKEN", token.clone()),
        ("OPSLOOP_SERVER", server),
        ("OPSLOOP_PROJECT", project.name.clone()),
        // This very binary, for jobs on this machine where `opsloop` is not on the PATH.
        ("OPSLOOP_BIN", std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "opsloop".into())),
    ] {
        secrets.overrides.push(opsloop_runner::Override { name: name.to_owned(), value, environment: None });
    }
    secrets.masked.push(token);
    Ok(digest)
}

pub(super) struct Secrets {
    pub(super) overrides: Vec<opsloop_runner::Override>,
    pub(super) masked: Vec<String>,
}

/// The CI/CD variables this pipeline may see, decrypted: the instance's, then the project's
/// (which win: later overrides take precedence); protected ones only on the default branch,
/// file-type ones written to private files, masked ones listed for masking. Their use is
/// recorded in the audit log (names, never values).
pub(super) async fn project_variables(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    dir: &Path,
) -> Result<Secrets, String> {
    use crate::api::variables::Owner;
    let instance = state.store.list_instance_variables().await.map_err(|e| e.to_string())?;
    let own = state.store.list_variables(project.id).await.map_err(|e| e.to_string())?;
    let stored = instance
        .into_iter()
        .map(|v| (Owner::Instance, v))
        .chain(own.into_iter().map(|v| (Owner::Project(project.id), v)));
    let protected_ref = pipeline.git_ref == project.default_branch;
    let mut secrets = Secrets { overrides: Vec::new(), masked: Vec::new() };
    let mut used = Vec::new();
    for (owner, variable) in stored {
        if variable.protected && !protected_ref {
            continue;
        }
        let value = crate::api::variables::reveal(state, owner, &variable).map_err(|e| e.message)?;
        if variable.masked {
            secrets.masked.push(value.clone());
        }
        let value = if variable.file {
            let files = dir.join("variables");
            std::fs::create_dir_all(&files).map_err(|e| e.to_string())?;
            let owner_tag = match owner {
                Owner::Instance => "instance",
                Owner::Project(_) => "project",
            };
            let path = files.join(format!(
                "{}-{owner_tag}-{}",
                variable.key,
                crate::auth::credentials::digest(&variable.environment_scope)
            ));
            let _ = std::fs::remove_file(&path);
            opsloop_secure::write_private(&path, value.as_bytes()).map_err(|e| e.to_string())?;
            path.display().to_string()
        } else {
            value
        };
        used.push(variable.key.clone());
        let environment = (variable.environment_scope != "*").then_some(variable.environment_scope);
        secrets.overrides.push(opsloop_runner::Override { name: variable.key, value, environment });
    }
    if !used.is_empty() {
        let detail = format!("pipeline={} keys={}", pipeline.id, used.join(","));
        let entry = opsloop_store::NewAuditEntry {
            actor: Actor { name: &pipeline.created_by, source_ip: "" },
            action: "variable.use",
            target: &project.name,
            detail: &detail,
        };
        state.store.append_audit(entry).await.map_err(|e| e.to_string())?;
    }
    Ok(secrets)
}

/// GitLab's predefined variables for a pipeline of `project` checked out in `checkout`, with
/// the meaning `opsloop run` gives them (`opsloop_pipeline::predefined`): a tag's pipeline
/// has `CI_COMMIT_TAG` and no `CI_COMMIT_BRANCH`, whatever the ref's spelling was.
pub(super) async fn predefined(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    sha: &str,
    checkout: &std::path::Path,
) -> Vec<(String, String)> {
    use opsloop_pipeline::predefined::{CommitFacts, PipelineFacts};
    let git_ref = crate::mirror::ref_kind(checkout, &pipeline.git_ref).await;
    let logged = crate::mirror::git(
        checkout,
        &["log", "-1", "--format=%an <%ae>%x00%cI%x00%B", sha, "--"],
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap_or_default();
    let mut parts = logged.splitn(3, '\0');
    let commit = CommitFacts {
        author: parts.next().unwrap_or_default().to_owned(),
        timestamp: parts.next().unwrap_or_default().to_owned(),
        message: parts.next().unwrap_or_default().to_owned(),
    };
    let base = server_url(state);
    opsloop_pipeline::predefined::variables(&PipelineFacts {
        pipeline_id: pipeline.id,
        source: pipeline.source.clone(),
        sha: sha.to_owned(),
        git_ref,
        commit,
        default_branch: project.default_branch.clone(),
        project_path: project.name.clone(),
        project_id: project.id,
        repository_url: project.repo_url.clone(),
        project_url: format!("{base}/projects/{}", project.name),
        pipeline_url: format!("{base}/projects/{}/pipelines/{}", project.name, pipeline.id),
        user_login: pipeline.created_by.clone(),
        user_email: String::new(),
        user_name: pipeline.created_by.clone(),
    })
}

/// How jobs and people reach this server: its external URL, else the address it listens on.
pub(super) fn server_url(state: &AppState) -> String {
    match &state.config.external_url {
        Some(url) => url.clone(),
        None => {
            let address = state.bound_address.get().copied().unwrap_or(state.config.listen);
            let host = if address.ip().is_unspecified() { "127.0.0.1".to_owned() } else { address.ip().to_string() };
            format!("http://{host}:{}", address.port())
        }
    }
}
