//! GitOps for deployments: `opsloop.yml` on the default branch is the desired state. A plan
//! compares it with the manifest last applied (services, environments and routes: created,
//! changed, removed); applying it
//! - stops what serves a removed service or in a removed environment, and drops its route;
//! - moves a changed route of what serves to its new host and path (one swap each);
//! - redeploys a changed service where it runs, with its own strategy (and so its automatic
//!   rollback), except in protected environments, which wait for a maintainer's deploy;
//! - records the manifest as applied.
//!
//! It is applied by itself when a pipeline on the default branch passes, and on demand
//! (`opsloop environments plan|apply`, the API).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::deploy::{self, DeployRequest, ReleaseConfig};
use crate::error::ApiError;
use crate::state::AppState;
use opsloop_store::{Actor, Project};

/// The parts of `opsloop.yml` a plan compares, as JSON values (so any field counts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub services: BTreeMap<String, serde_json::Value>,
    pub environments: BTreeMap<String, serde_json::Value>,
    /// `service@environment` → `{host, path}`.
    pub routes: BTreeMap<String, serde_json::Value>,
}

impl Desired {
    fn of(manifest: &opsloop_deploy::manifest::Manifest) -> Desired {
        let mut desired = Desired::default();
        for service in &manifest.services {
            let mut config = ReleaseConfig::of(service, manifest);
            config.routes.clear();
            desired.services.insert(service.name.clone(), serde_json::to_value(&config).unwrap_or_default());
        }
        for environment in &manifest.environments {
            let value = serde_json::json!({
                "tier": environment.tier,
                "protected": environment.protected,
                "approvals": environment.approvals,
                "targets": environment.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "freezes": environment.freezes.iter().map(|f| format!("{} – {}", f.from, f.to)).collect::<Vec<_>>(),
            });
            desired.environments.insert(environment.name.clone(), value);
        }
        for route in &manifest.routes {
            let key = format!("{}@{}", route.service, route.environment);
            desired.routes.insert(key, serde_json::json!({ "host": route.host, "path": route.path }));
        }
        desired
    }

    /// The route `opsloop.yml` gives a service in an environment, if it names one.
    pub fn route(&self, service: &str, environment: &str) -> Option<(Option<String>, String)> {
        let value = self.routes.get(&format!("{service}@{environment}"))?;
        let host = value["host"].as_str().map(str::to_owned);
        Some((host, value["path"].as_str().unwrap_or("/").to_owned()))
    }

    fn protected(&self, environment: &str) -> bool {
        self.environments.get(environment).is_some_and(|e| e["protected"].as_bool() == Some(true))
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Change {
    /// `service`, `environment` or `route`.
    pub kind: String,
    pub name: String,
    /// `create`, `change` or `remove`.
    pub action: String,
    /// What changed (the fields, `env.VERSION: 1.0.0 → 1.1.0; …`), or what applying it does.
    pub detail: String,
    /// The fields that changed, one by one (empty for a creation or removal).
    pub fields: Vec<crate::config_diff::FieldChange>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plan {
    /// The default branch's commit the plan is for.
    pub commit: String,
    /// The commit applied last, if any.
    pub applied_commit: Option<String>,
    pub changes: Vec<Change>,
}

fn diff(
    kind: &str,
    before: &BTreeMap<String, serde_json::Value>,
    after: &BTreeMap<String, serde_json::Value>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (name, value) in after {
        match before.get(name) {
            None => changes.push(Change {
                kind: kind.to_owned(),
                name: name.clone(),
                action: "create".to_owned(),
                detail: String::new(),
                fields: Vec::new(),
            }),
            Some(old) if old != value => {
                let fields = crate::config_diff::field_changes(old, value);
                changes.push(Change {
                    kind: kind.to_owned(),
                    name: name.clone(),
                    action: "change".to_owned(),
                    detail: crate::config_diff::summary(&fields),
                    fields,
                });
            }
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|name| !after.contains_key(*name)) {
        changes.push(Change {
            kind: kind.to_owned(),
            name: name.clone(),
            action: "remove".to_owned(),
            detail: String::new(),
            fields: Vec::new(),
        });
    }
    changes
}

async fn applied(state: &AppState, project: &Project) -> Result<Option<(String, Desired)>, ApiError> {
    Ok(state
        .store
        .applied_manifest(project.id)
        .await?
        .map(|(commit, json)| (commit, serde_json::from_str(&json).unwrap_or_default())))
}

/// The manifest last applied for the project (routes of what serves come from it).
pub async fn applied_desired(state: &AppState, project_id: i64) -> Option<Desired> {
    let (_, json) = state.store.applied_manifest(project_id).await.ok()??;
    serde_json::from_str(&json).ok()
}

/// The plan from what was applied to the default branch's head (or to `commit` on it).
pub async fn plan(state: &AppState, project: &Project, commit: Option<&str>) -> Result<(Plan, Desired), ApiError> {
    let head = deploy::checkout(state, project, commit.unwrap_or(&project.default_branch)).await?;
    let _ = tokio::fs::remove_dir_all(&head.dir).await;
    let desired = Desired::of(&head.manifest);
    let (applied_commit, before) = match applied(state, project).await? {
        Some((commit, before)) => (Some(commit), before),
        None => (None, Desired::default()),
    };
    let mut changes = diff("service", &before.services, &desired.services);
    changes.extend(diff("environment", &before.environments, &desired.environments));
    changes.extend(diff("route", &before.routes, &desired.routes));
    Ok((Plan { commit: head.sha, applied_commit, changes }, desired))
}

/// Applies the plan (see the module's description); returns it, each change's `detail`
/// saying what was done.
pub async fn apply(
    state: &AppState,
    project: &Project,
    commit: Option<&str>,
    actor: Actor<'_>,
) -> Result<Plan, ApiError> {
    let (mut plan, desired) = plan(state, project, commit).await?;
    let serving = state.store.serving_releases(Some(project.id)).await?;
    let removed: Vec<(String, String)> = serving
        .iter()
        .filter(|s| !desired.services.contains_key(&s.service) || !desired.environments.contains_key(&s.environment))
        .map(|s| (s.environment.clone(), s.service.clone()))
        .collect();
    // Recorded first: deployments started below take their routes from it.
    let json = serde_json::to_string(&desired).map_err(|_| ApiError::internal())?;
    state.store.apply_manifest(project, &plan.commit, &json, actor).await?;
    for (environment, service) in &removed {
        if let Err(error) = deploy::stop_service(state, project, environment, service, actor).await {
            tracing::warn!(project = %project.name, environment, service, error = %error.message, "could not stop a removed service");
        }
    }
    for change in &mut plan.changes {
        match (change.kind.as_str(), change.action.as_str()) {
            ("route", "create" | "change") => {
                let Some((service, environment)) = change.name.split_once('@') else { continue };
                if let Some((host, path)) = desired.route(service, environment)
                    && deploy::move_route(state, project, environment, service, host, path).await
                {
                    change.detail = format!("{} (what serves moved to it)", change.detail).trim().to_owned();
                }
            }
            ("service", "change") => {
                let mut done = Vec::new();
                for entry in serving.iter().filter(|s| {
                    s.service == change.name && !removed.contains(&(s.environment.clone(), s.service.clone()))
                }) {
                    if desired.protected(&entry.environment) {
                        done.push(format!("{}: protected, deploy it as a maintainer", entry.environment));
                        continue;
                    }
                    let request = DeployRequest {
                        service: change.name.clone(),
                        environment: entry.environment.clone(),
                        version: Some(plan.commit.clone()),
                        strategy: None,
                        triggered_by: format!("gitops ({})", &plan.commit[..plan.commit.len().min(12)]),
                        pipeline_id: None,
                    };
                    match deploy::request(state, project, opsloop_core::Role::Developer, request, actor).await {
                        Ok(deployment) => done.push(format!("{}: deployment #{}", entry.environment, deployment.id)),
                        Err(error) => done.push(format!("{}: {}", entry.environment, error.message)),
                    }
                }
                if !done.is_empty() {
                    change.detail = format!("{}; redeployed: {}", change.detail, done.join(", "));
                }
            }
            (_, "remove") => {
                let stopped: Vec<String> = removed
                    .iter()
                    .filter(|(environment, service)| match change.kind.as_str() {
                        "service" => *service == change.name,
                        "environment" => *environment == change.name,
                        _ => false,
                    })
                    .map(|(environment, service)| format!("{service} in {environment}"))
                    .collect();
                if !stopped.is_empty() {
                    change.detail = format!("stopped {}", stopped.join(", "));
                }
            }
            _ => {}
        }
    }
    deploy::hold_idle_routes(state, project).await;
    Ok(plan)
}

/// After a pipeline on the default branch passed: apply its commit's `opsloop.yml` (the
/// tested one, not whatever the branch has moved on to), if there is one, and log what
/// changed.
pub async fn apply_after_pipeline(state: &AppState, project: &Project, commit: &str) {
    match apply(state, project, Some(commit), Actor::SYSTEM).await {
        Ok(plan) if plan.changes.is_empty() => {}
        Ok(plan) => {
            for change in &plan.changes {
                tracing::info!(project = %project.name, kind = %change.kind, name = %change.name,
                    action = %change.action, detail = %change.detail, "applied opsloop.yml");
            }
        }
        Err(error) if error.code == "release_unavailable" => {
            tracing::debug!(project = %project.name, error = %error.message, "no opsloop.yml to apply");
        }
        Err(error) => tracing::warn!(project = %project.name, error = %error.message, "could not apply opsloop.yml"),
    }
}
