//! Releases, deployments and what serves each environment. A deployment is queued, claimed
//! by a compare-and-set from `queued` to `running` (so it runs once), and finished in one
//! transaction with the environment's serving release.

use opsloop_core::{DeploymentStatus, Event, StatusParseError};

use crate::audit::record_audit;
use crate::events::record_event;
use crate::{Actor, Project, Result, Store, StoreError, with_pool};

/// One version of a service: a commit, and the service's configuration at that commit (JSON,
/// as the server wrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: i64,
    pub project_id: i64,
    pub service: String,
    pub version: String,
    pub commit_sha: String,
    pub config: String,
    pub created_at: i64,
}

type ReleaseRow = (i64, i64, String, String, String, String, i64);

fn release_from((id, project_id, service, version, commit_sha, config, created_at): ReleaseRow) -> Release {
    Release { id, project_id, service, version, commit_sha, config, created_at }
}

const RELEASE_COLUMNS: &str = "id, project_id, service, version, commit_sha, config, created_at";

/// A deployment with its release's version and commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: i64,
    pub project_id: i64,
    pub environment: String,
    pub service: String,
    pub release_id: i64,
    pub previous_release_id: Option<i64>,
    /// `blue-green`, `canary`, `rolling`, `recreate`.
    pub strategy: String,
    pub status: DeploymentStatus,
    pub triggered_by: String,
    pub reason: Option<String>,
    /// The steps so far and, once it ended, both versions' figures: JSON written and read by
    /// the server (`{"steps": [{"at_ms": 0, "text": "…"}], "figures": […]}`).
    pub timeline: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub version: String,
    pub commit_sha: String,
}

type DeploymentRow = (
    i64,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    String,
);

fn deployment_from(row: DeploymentRow) -> Result<Deployment> {
    let (
        id,
        project_id,
        environment,
        service,
        release_id,
        previous_release_id,
        strategy,
        status,
        triggered_by,
        reason,
        timeline,
        created_at,
        started_at,
        finished_at,
        version,
        commit_sha,
    ) = row;
    let status = status.parse().map_err(|e: StatusParseError| StoreError::Corrupt(e.to_string()))?;
    Ok(Deployment {
        id,
        project_id,
        environment,
        service,
        release_id,
        previous_release_id,
        strategy,
        status,
        triggered_by,
        reason,
        timeline,
        created_at,
        started_at,
        finished_at,
        version,
        commit_sha,
    })
}

const DEPLOYMENT_SELECT: &str = "SELECT d.id, d.project_id, d.environment, d.service, d.release_id,
        d.previous_release_id, d.strategy, d.status, d.triggered_by, d.reason, d.timeline,
        d.created_at, d.started_at, d.finished_at, r.version, r.commit_sha
     FROM deployments d JOIN releases r ON r.id = d.release_id";

pub struct NewDeployment<'a> {
    /// `Queued`, or `WaitingApproval` for an environment that needs approvals.
    pub status: DeploymentStatus,
    pub environment: &'a str,
    pub service: &'a str,
    pub release_id: i64,
    pub strategy: &'a str,
    pub triggered_by: &'a str,
    /// The pipeline whose job asked for it (through the pipeline's token).
    pub pipeline_id: Option<i64>,
}

/// The release serving a service in an environment, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingRelease {
    pub project_id: i64,
    pub environment: String,
    pub service: String,
    pub release_id: i64,
    pub deployment_id: i64,
    pub since: i64,
}

type ServingRow = (i64, String, String, i64, i64, i64);

fn serving_from((project_id, environment, service, release_id, deployment_id, since): ServingRow) -> ServingRelease {
    ServingRelease { project_id, environment, service, release_id, deployment_id, since }
}

impl Store {
    pub async fn create_release(
        &self,
        project_id: i64,
        service: &str,
        version: &str,
        commit_sha: &str,
        config: &str,
    ) -> Result<Release> {
        let now = self.now_ms();
        let sql = format!(
            "INSERT INTO releases (project_id, service, version, commit_sha, config, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {RELEASE_COLUMNS}"
        );
        let row: ReleaseRow = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(project_id)
                .bind(service)
                .bind(version)
                .bind(commit_sha)
                .bind(config)
                .bind(now)
                .fetch_one(pool)
                .await?
        });
        Ok(release_from(row))
    }

    pub async fn release(&self, release_id: i64) -> Result<Option<Release>> {
        let sql = format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1");
        let row: Option<ReleaseRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(release_id).fetch_optional(pool).await?
        });
        Ok(row.map(release_from))
    }

    /// Queues a deployment; the release it replaces is whatever serves when it is created.
    pub async fn create_deployment(
        &self,
        project: &Project,
        new: NewDeployment<'_>,
        actor: Actor<'_>,
    ) -> Result<Deployment> {
        let now = self.now_ms();
        let id: i64 = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let previous: Option<i64> = sqlx::query_scalar(
                "SELECT release_id FROM environment_services WHERE project_id = $1 AND environment = $2 AND service = $3",
            )
            .bind(project.id)
            .bind(new.environment)
            .bind(new.service)
            .fetch_optional(&mut *tx)
            .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO deployments (project_id, environment, service, release_id, previous_release_id,
                     strategy, status, triggered_by, pipeline_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind(project.id)
            .bind(new.environment)
            .bind(new.service)
            .bind(new.release_id)
            .bind(previous)
            .bind(new.strategy)
            .bind(new.status.as_str())
            .bind(new.triggered_by)
            .bind(new.pipeline_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let detail = format!("{} to {} ({})", new.service, new.environment, new.strategy);
            record_audit!(&mut *tx, now, actor, "deployment.create", &project.name, &detail);
            tx.commit().await?;
            id
        });
        self.deployment(id).await?.ok_or(crate::StoreError::NotFound { what: "deployment" })
    }

    pub async fn deployment(&self, deployment_id: i64) -> Result<Option<Deployment>> {
        let sql = format!("{DEPLOYMENT_SELECT} WHERE d.id = $1");
        let row: Option<DeploymentRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(deployment_id).fetch_optional(pool).await?
        });
        row.map(deployment_from).transpose()
    }

    /// A project's deployments, newest first, optionally of one service and environment.
    pub async fn list_deployments(
        &self,
        project_id: i64,
        service: Option<&str>,
        environment: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Deployment>> {
        let sql = format!(
            "{DEPLOYMENT_SELECT} WHERE d.project_id = $1 AND ($2 IS NULL OR d.service = $2)
               AND ($3 IS NULL OR d.environment = $3)
             ORDER BY d.id DESC LIMIT $4"
        );
        let rows: Vec<DeploymentRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(project_id)
                .bind(service)
                .bind(environment)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(deployment_from).collect()
    }

    /// The deployments a pipeline's jobs asked for (through its token), oldest first.
    pub async fn pipeline_deployments(&self, pipeline_id: i64) -> Result<Vec<Deployment>> {
        let sql = format!("{DEPLOYMENT_SELECT} WHERE d.pipeline_id = $1 ORDER BY d.id");
        let rows: Vec<DeploymentRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(pipeline_id).fetch_all(pool).await?
        });
        rows.into_iter().map(deployment_from).collect()
    }

    /// Every queued deployment, oldest first (to start again after a restart).
    pub async fn queued_deployments(&self) -> Result<Vec<Deployment>> {
        let sql = format!("{DEPLOYMENT_SELECT} WHERE d.status = 'queued' ORDER BY d.id");
        let rows: Vec<DeploymentRow> =
            with_pool!(self, |pool| { sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool).await? });
        rows.into_iter().map(deployment_from).collect()
    }

    /// `queued` → `running`; false when someone else took it (or it is no longer queued).
    pub async fn claim_deployment(&self, deployment_id: i64) -> Result<bool> {
        let now = self.now_ms();
        let claimed = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let project_id: Option<i64> = sqlx::query_scalar(
                "UPDATE deployments SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'queued'
                 RETURNING project_id",
            )
            .bind(now)
            .bind(deployment_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(project_id) = project_id {
                record_event!(&mut *tx, now, &Event::DeploymentStarted { project_id, deployment_id });
            }
            tx.commit().await?;
            project_id.is_some()
        });
        self.events_committed();
        Ok(claimed)
    }

    /// Keeps the timeline of a running deployment current, for those watching it.
    pub async fn set_deployment_timeline(&self, deployment_id: i64, timeline: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE deployments SET timeline = $1 WHERE id = $2 AND status = 'running'")
                .bind(timeline)
                .bind(deployment_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Ends a deployment and records which release serves afterwards: `Some(Some(id))` that
    /// one, `Some(None)` nothing, `None` as it was (the deployment failed before anything moved).
    pub async fn finish_deployment(
        &self,
        deployment: &Deployment,
        status: DeploymentStatus,
        reason: Option<&str>,
        timeline: &str,
        serving_release: Option<Option<i64>>,
    ) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let finished = sqlx::query(
                "UPDATE deployments SET status = $1, reason = $2, timeline = $3, finished_at = $4
                 WHERE id = $5 AND status IN ('queued', 'running')",
            )
            .bind(status.as_str())
            .bind(reason)
            .bind(timeline)
            .bind(now)
            .bind(deployment.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if finished == 1 {
                let event = Event::DeploymentFinished {
                    project_id: deployment.project_id,
                    deployment_id: deployment.id,
                    status,
                    reason: reason.map(str::to_owned),
                };
                record_event!(&mut *tx, now, &event);
            }
            match serving_release {
                None => {}
                Some(Some(release_id)) => {
                    // `since` moves only when the serving release changes.
                    sqlx::query(
                        "INSERT INTO environment_services (project_id, environment, service, release_id, deployment_id, since)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (project_id, environment, service) DO UPDATE SET
                             since = CASE WHEN environment_services.release_id = excluded.release_id
                                          THEN environment_services.since ELSE excluded.since END,
                             deployment_id = CASE WHEN environment_services.release_id = excluded.release_id
                                          THEN environment_services.deployment_id ELSE excluded.deployment_id END,
                             release_id = excluded.release_id",
                    )
                    .bind(deployment.project_id)
                    .bind(&deployment.environment)
                    .bind(&deployment.service)
                    .bind(release_id)
                    .bind(deployment.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                Some(None) => {
                    sqlx::query(
                        "DELETE FROM environment_services WHERE project_id = $1 AND environment = $2 AND service = $3",
                    )
                    .bind(deployment.project_id)
                    .bind(&deployment.environment)
                    .bind(&deployment.service)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
        });
        self.events_committed();
        Ok(())
    }

    /// Deployments a stopped process left `running` become `failed`; returns them.
    pub async fn fail_interrupted_deployments(&self, reason: &str) -> Result<Vec<Deployment>> {
        let now = self.now_ms();
        // The write comes first, alone: a SQLite transaction that reads before it writes cannot
        // wait for the write lock when another writer went first (it fails at once with
        // "database is locked", which the busy timeout does not cover); the start-up tasks
        // that write beside this one made that happen.
        let ids: Vec<(i64, i64)> = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let ids: Vec<(i64, i64)> = sqlx::query_as(
                "UPDATE deployments SET status = 'failed', reason = $1, finished_at = $2
                 WHERE status = 'running' RETURNING id, project_id",
            )
            .bind(reason)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for &(deployment_id, project_id) in &ids {
                let status = DeploymentStatus::Failed;
                let reason = Some(reason.to_owned());
                record_event!(&mut *tx, now, &Event::DeploymentFinished { project_id, deployment_id, status, reason });
            }
            tx.commit().await?;
            ids
        });
        self.events_committed();
        let mut failed = Vec::with_capacity(ids.len());
        for (id, _) in ids {
            if let Some(deployment) = self.deployment(id).await? {
                failed.push(deployment);
            }
        }
        failed.sort_by_key(|d| d.id);
        Ok(failed)
    }

    /// What serves where: every project's (`None`) or one project's.
    pub async fn serving_releases(&self, project_id: Option<i64>) -> Result<Vec<ServingRelease>> {
        let rows: Vec<ServingRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT project_id, environment, service, release_id, deployment_id, since
                 FROM environment_services WHERE ($1 IS NULL OR project_id = $1)
                 ORDER BY project_id, environment, service",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(serving_from).collect())
    }

    /// The manifest last applied from the project's default branch: `(commit, JSON)`.
    pub async fn applied_manifest(&self, project_id: i64) -> Result<Option<(String, String)>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as("SELECT commit_sha, manifest FROM applied_manifests WHERE project_id = $1")
                .bind(project_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Records `manifest` as applied (what it removed is stopped, and its serving records
    /// deleted, by the server under each environment's turn).
    pub async fn apply_manifest(
        &self,
        project: &Project,
        commit_sha: &str,
        manifest: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO applied_manifests (project_id, commit_sha, manifest, applied_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (project_id) DO UPDATE SET commit_sha = excluded.commit_sha,
                     manifest = excluded.manifest, applied_at = excluded.applied_at",
            )
            .bind(project.id)
            .bind(commit_sha)
            .bind(manifest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            record_audit!(&mut *tx, now, actor, "manifest.apply", &project.name, commit_sha);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records `username`'s approval; once `needed` people approved, the deployment moves
    /// from `waiting_approval` to `queued` (returns true then, exactly once).
    pub async fn approve_deployment(
        &self,
        project: &Project,
        deployment_id: i64,
        needed: i64,
        actor: Actor<'_>,
    ) -> Result<bool> {
        let now = self.now_ms();
        Ok(with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Approvers take turns on the deployment's row (a write lock on both backends), so
            // two last approvals at once cannot each count only their own.
            sqlx::query("UPDATE deployments SET status = status WHERE id = $1")
                .bind(deployment_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO deployment_approvals (deployment_id, username, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (deployment_id, username) DO NOTHING",
            )
            .bind(deployment_id)
            .bind(actor.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deployment_approvals WHERE deployment_id = $1")
                .bind(deployment_id)
                .fetch_one(&mut *tx)
                .await?;
            let released = if count >= needed {
                sqlx::query("UPDATE deployments SET status = 'queued' WHERE id = $1 AND status = 'waiting_approval'")
                    .bind(deployment_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1
            } else {
                false
            };
            record_audit!(&mut *tx, now, actor, "deployment.approve", &project.name, &format!("#{deployment_id}"));
            tx.commit().await?;
            released
        }))
    }

    /// Who approved a deployment, in order.
    pub async fn deployment_approvals(&self, deployment_id: i64) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT username FROM deployment_approvals WHERE deployment_id = $1 ORDER BY created_at, username",
            )
            .bind(deployment_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The pipeline behind the newest successful deployment of anything to `environment`.
    pub async fn deploying_pipeline(&self, project_id: i64, environment: &str) -> Result<Option<i64>> {
        let found: Option<Option<i64>> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT pipeline_id FROM deployments WHERE project_id = $1 AND environment = $2
                   AND status = 'success' AND pipeline_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            )
            .bind(project_id)
            .bind(environment)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.flatten())
    }

    /// Nothing serves `service` in `environment` any more (it was stopped).
    pub async fn remove_serving(
        &self,
        project: &Project,
        environment: &str,
        service: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM environment_services WHERE project_id = $1 AND environment = $2 AND service = $3")
                .bind(project.id)
                .bind(environment)
                .bind(service)
                .execute(&mut *tx)
                .await?;
            record_audit!(
                &mut *tx,
                now,
                actor,
                "environment.stop",
                &project.name,
                &format!("{service} in {environment}")
            );
            tx.commit().await?;
        });
        Ok(())
    }

    /// The releases deployments still need: those waiting for approval, queued or running.
    pub async fn releases_in_use(&self) -> Result<Vec<i64>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT DISTINCT release_id FROM deployments WHERE status IN ('waiting_approval', 'queued', 'running')",
            )
            .fetch_all(pool)
            .await?
        }))
    }
}
