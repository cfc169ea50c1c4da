//! `opsloop serve --demo`: registers a demo project from the `examples/demo` files embedded in
//! the binary, written out as a git repository under the data directory, so the demo works
//! from any working directory.

use std::path::{Path, PathBuf};

use opsloop_store::{Actor, NewProject, Store};

const FILES: &[(&str, &str, bool)] = &[
    (".gitlab-ci.yml", include_str!("../../../examples/demo/.gitlab-ci.yml"), false),
    ("README.md", include_str!("../../../examples/demo/README.md"), false),
    ("app.sh", include_str!("../../../examples/demo/app.sh"), true),
    ("test.sh", include_str!("../../../examples/demo/test.sh"), true),
    ("opsloop.yml", include_str!("../../../examples/demo/opsloop.yml"), false),
    // The example service the deployment tests use, deployed by the demo's pipeline.
    ("server.py", include_str!("../../../examples/service/server.py"), true),
];

pub const DEMO_PROJECT: &str = "demo";

/// Why the demo project could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] opsloop_store::StoreError),
    #[error("cannot resolve {}: {source}", .path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the demo repository at {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the demo needs the `admin` user created at first start")]
    NoAdmin,
}

pub async fn register(store: &Store, data_dir: &Path) -> Result<(), DemoError> {
    if store.project_by_name(DEMO_PROJECT).await?.is_some() {
        return Ok(());
    }
    let repo = data_dir.join("demo");
    let repo = std::path::absolute(&repo).map_err(|source| DemoError::Resolve { path: repo.clone(), source })?;
    write_repository(&repo)?;
    let admin = store.user_by_username("admin").await?.ok_or(DemoError::NoAdmin)?;
    let repo_url = repo.display().to_string();
    let project = NewProject {
        name: DEMO_PROJECT,
        description: "A tiny service with a build → test → deploy pipeline, registered by `opsloop serve --demo`.",
        repo_url: &repo_url,
        default_branch: "main",
        pipeline_file: ".gitlab-ci.yml",
    };
    store.create_project(project, admin.id, Actor::SYSTEM).await?;
    tracing::info!(repo = %repo.display(), "registered the demo project");
    Ok(())
}

fn write_repository(repo: &Path) -> Result<(), DemoError> {
    let io = |source: std::io::Error| DemoError::Write { path: repo.to_owned(), source };
    std::fs::create_dir_all(repo).map_err(io)?;
    for (name, content, executable) in FILES {
        let path = repo.join(name);
        std::fs::write(&path, content).map_err(io)?;
        #[cfg(unix)]
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
    }
    if repo.join(".git").exists() {
        return Ok(());
    }
    // Arguments as a vector, never a shell string. A missing git leaves a plain directory,
    // which is still browsable; pipelines will say they need git.
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(repo)
            .env("GIT_AUTHOR_NAME", "opsloop demo")
            .env("GIT_AUTHOR_EMAIL", "demo@opsloop.invalid")
            .env("GIT_COMMITTER_NAME", "opsloop demo")
            .env("GIT_COMMITTER_EMAIL", "demo@opsloop.invalid")
            .output()
    };
    let steps: [&[&str]; 3] = [&["init", "-q", "-b", "main"], &["add", "."], &["commit", "-q", "-m", "Demo project"]];
    for step in steps {
        match git(step) {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                tracing::warn!(stderr = %String::from_utf8_lossy(&output.stderr), "git failed while creating the demo repository");
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "git is not available; the demo repository is a plain directory");
                break;
            }
        }
    }
    Ok(())
}

/// The demo shows a pipeline from the start: its first one runs when the server starts.
pub async fn run_first_pipeline(state: &crate::state::AppState) {
    let project = match state.store.project_by_name(DEMO_PROJECT).await {
        Ok(Some(project)) => project,
        _ => return,
    };
    let none_yet = state
        .store
        .list_pipelines(project.id, &opsloop_store::PageRequest::first(1))
        .await
        .is_ok_and(|page| page.items.is_empty());
    if none_yet
        && let Err(error) = crate::ci::trigger(state, &project, "main", None, "web", Vec::new(), Actor::SYSTEM).await
    {
        tracing::warn!(%error, "could not start the demo pipeline");
    }
}
