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

use opsloop_deploy::desired::{self, Action, Declared, Kind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::deploy::DeployError;
use crate::deploy::{self, DeployRequest, ReleaseConfig};
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
            let key = desired::route_key(&route.service, &route.environment);
            desired.routes.insert(key, serde_json::json!({ "host": route.host, "path": route.path }));
        }
        desired
    }

    /// The route `opsloop.yml` gives a service in an environment, if it names one.
    pub fn route(&self, service: &str, environment: &str) -> Option<(Option<String>, String)> {
        let value = self.routes.get(&desired::route_key(service, environment))?;
        let host = value["host"].as_str().map(str::to_owned);
        Some((host, value["path"].as_str().unwrap_or("/").to_owned()))
    }

    fn protected(&self, environment: &str) -> bool {
        self.environments.get(environment).is_some_and(|e| e["protected"].as_bool() == Some(true))
    }

    /// The deploy engine's diff from `before` to this: services, then environments, then
    /// routes. Stored values compare as JSON, so a configuration recorded by an older
    /// version reads as changed exactly when it did before.
    fn changes_since(&self, before: &Desired) -> Vec<Change> {
        let kinds = [
            (Kind::Service, &before.services, &self.services),
            (Kind::Environment, &before.environments, &self.environments),
            (Kind::Route, &before.routes, &self.routes),
        ];
        kinds
            .into_iter()
            .flat_map(|(kind, before, after)| {
                desired::diff(Declared { kind, before, after }, crate::config_diff::fields)
            })
            .map(Change::from)
            .collect()
    }
}

/// A change as the API and the pages show it: the engine's change, its fields in the API's
/// shape, and a `detail` that applying it extends with what was done.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Change {
    /// `service`, `environment` or `route`.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub kind: Kind,
    pub name: String,
    /// `create`, `change` or `remove`.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub action: Action,
    /// What changed (the fields, `env.VERSION: 1.0.0 → 1.1.0; …`), or what applying it does.
    pub detail: String,
    /// The fields that changed, one by one (empty for a creation or removal).
    pub fields: Vec<crate::config_diff::FieldChange>,
}

impl From<desired::Change> for Change {
    fn from(change: desired::Change) -> Self {
        let detail = change.summary();
        let desired::Change { kind, name, action, fields } = change;
        Change { kind, name, action, detail, fields: fields.into_iter().map(Into::into).collect() }
    }
}

/// The engine's kinds and actions are written as their names (`service`, `create`).
fn as_text<S: serde::Serializer>(value: &impl std::fmt::Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plan {
    /// The default branch's commit the plan is for.
    pub commit: String,
    /// The commit applied last, if any.
    pub applied_commit: Option<String>,
    pub changes: Vec<Change>,
}

async fn applied(state: &AppState, project: &Project) -> Result<Option<(String, Desired)>, DeployError> {
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
pub async fn plan(state: &AppState, project: &Project, commit: Option<&str>) -> Result<(Plan, Desired), DeployError> {
    let head = deploy::checkout(state, project, commit.unwrap_or(&project.default_branch)).await?;
    let _ = tokio::fs::remove_dir_all(&head.dir).await;
    let desired = Desired::of(&head.manifest);
    let (applied_commit, before) = match applied(state, project).await? {
        Some((commit, before)) => (Some(commit), before),
        None => (None, Desired::default()),
    };
    let changes = desired.changes_since(&before);
    Ok((Plan { commit: head.sha, applied_commit, changes }, desired))
}

/// Applies the plan (see the module's description); returns it, each change's `detail`
/// saying what was done.
pub async fn apply(
    state: &AppState,
    project: &Project,
    commit: Option<&str>,
    actor: Actor<'_>,
) -> Result<Plan, DeployError> {
    let (mut plan, desired) = plan(state, project, commit).await?;
    let serving = state.store.serving_releases(Some(project.id)).await?;
    let removed: Vec<(String, String)> = serving
        .iter()
        .filter(|s| !desired.services.contains_key(&s.service) || !desired.environments.contains_key(&s.environment))
        .map(|s| (s.environment.clone(), s.service.clone()))
        .collect();
    // Recorded first: deployments started below take their routes from it.
    let json = serde_json::to_string(&desired)
        .map_err(|e| DeployError::Internal(format!("cannot encode the desired state: {e}")))?;
    state.store.apply_manifest(project, &plan.commit, &json, actor).await?;
    for (environment, service) in &removed {
        if let Err(error) = deploy::stop_service(state, project, environment, service, actor).await {
            tracing::warn!(project = %project.name, environment, service, %error, "could not stop a removed service");
        }
    }
    for change in &mut plan.changes {
        match (change.kind, change.action) {
            (Kind::Route, Action::Create | Action::Change) => {
                let Some((service, environment)) = change.name.split_once('@') else { continue };
                if let Some((host, path)) = desired.route(service, environment)
                    && deploy::move_route(state, project, environment, service, host, path).await
                {
                    change.detail = format!("{} (what serves moved to it)", change.detail).trim().to_owned();
                }
            }
            (Kind::Service, Action::Change) => {
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
                        Err(error) => done.push(format!("{}: {}", entry.environment, error)),
                    }
                }
                if !done.is_empty() {
                    change.detail = format!("{}; redeployed: {}", change.detail, done.join(", "));
                }
            }
            (_, Action::Remove) => {
                let stopped: Vec<String> = removed
                    .iter()
                    .filter(|(environment, service)| match change.kind {
                        Kind::Service => *service == change.name,
                        Kind::Environment => *environment == change.name,
                        Kind::Route => false,
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
        Err(DeployError::ReleaseUnavailable(message)) => {
            tracing::debug!(project = %project.name, error = %message, "no opsloop.yml to apply");
        }
        Err(error) => tracing::warn!(project = %project.name, %error, "could not apply opsloop.yml"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The API and the CLI read plans as they always did: kinds and actions by name, the
    /// detail from the changed fields.
    #[test]
    fn a_plan_is_written_as_before() {
        let before = Desired {
            services: BTreeMap::from([
                ("web".to_owned(), json!({"env": [["VERSION", "1.0.0"]], "replicas": 1})),
                ("old".to_owned(), json!({"replicas": 1})),
            ]),
            environments: BTreeMap::from([("staging".to_owned(), json!({"protected": false}))]),
            routes: BTreeMap::new(),
        };
        let after = Desired {
            services: BTreeMap::from([("web".to_owned(), json!({"env": [["VERSION", "1.1.0"]], "replicas": 1}))]),
            environments: before.environments.clone(),
            routes: BTreeMap::from([("web@staging".to_owned(), json!({"host": null, "path": "/"}))]),
        };
        let changes = serde_json::to_value(after.changes_since(&before)).unwrap_or_default();
        assert_eq!(
            changes,
            json!([
                {"kind": "service", "name": "web", "action": "change", "detail": "env.VERSION: 1.0.0 → 1.1.0",
                 "fields": [{"field": "env.VERSION", "before": "1.0.0", "after": "1.1.0"}]},
                {"kind": "service", "name": "old", "action": "remove", "detail": "", "fields": []},
                {"kind": "route", "name": "web@staging", "action": "create", "detail": "", "fields": []},
            ])
        );
        assert_eq!(after.route("web", "staging"), Some((None, "/".to_owned())));
    }
}
