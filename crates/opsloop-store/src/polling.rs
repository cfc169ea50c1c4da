//! Polling repositories for new commits: how often each project is polled, and the refs seen.

use std::collections::HashMap;

use crate::audit::record_audit;
use crate::{Actor, Project, Result, Store, with_pool};

impl Store {
    /// Polls the project's repository every `seconds` (0: never).
    pub async fn set_poll_interval(&self, project: &Project, seconds: i64, actor: Actor<'_>) -> Result<()> {
        let now = self.now_ms();
        let detail = format!("poll every {seconds}s");
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE projects SET poll_interval_seconds = $1 WHERE id = $2")
                .bind(seconds)
                .bind(project.id)
                .execute(&mut *tx)
                .await?;
            record_audit!(&mut *tx, now, actor, "project.polling", &project.name, &detail);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn poll_interval(&self, project_id: i64) -> Result<i64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT poll_interval_seconds FROM projects WHERE id = $1")
                .bind(project_id)
                .fetch_one(pool)
                .await?
        }))
    }

    /// Projects due for a poll at `now`, each claimed (its poll time moved to `now`) so one
    /// server polls it, with the time of its previous poll (0: never polled).
    pub async fn claim_due_polls(&self, now: i64) -> Result<Vec<(Project, i64)>> {
        let due: Vec<(i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, polled_at FROM projects
                 WHERE poll_interval_seconds > 0 AND polled_at + poll_interval_seconds * 1000 <= $1",
            )
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        let mut claimed = Vec::new();
        for (id, polled_at) in due {
            let won = with_pool!(self, |pool| {
                sqlx::query("UPDATE projects SET polled_at = $1 WHERE id = $2 AND polled_at = $3")
                    .bind(now)
                    .bind(id)
                    .bind(polled_at)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
            if won == 1
                && let Some(project) = self.project_by_id(id).await?
            {
                claimed.push((project, polled_at));
            }
        }
        Ok(claimed)
    }

    /// The refs seen at the last poll (`refs/heads/main` → sha).
    pub async fn polled_refs(&self, project_id: i64) -> Result<HashMap<String, String>> {
        let rows: Vec<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT ref, sha FROM polled_refs WHERE project_id = $1")
                .bind(project_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().collect())
    }

    /// Replaces the refs seen with `refs`.
    pub async fn set_polled_refs(&self, project_id: i64, refs: &[(String, String)]) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM polled_refs WHERE project_id = $1").bind(project_id).execute(&mut *tx).await?;
            for (name, sha) in refs {
                sqlx::query("INSERT INTO polled_refs (project_id, ref, sha) VALUES ($1, $2, $3)")
                    .bind(project_id)
                    .bind(name)
                    .bind(sha)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The project's CI settings (defaults when never set).
    pub async fn ci_settings(&self, project_id: i64) -> Result<CiSettings> {
        let row: Option<(i64, bool)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT max_concurrent_jobs, auto_cancel_redundant FROM project_ci_settings WHERE project_id = $1",
            )
            .bind(project_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map_or_else(CiSettings::default, |(max_concurrent_jobs, auto_cancel_redundant)| CiSettings {
            max_concurrent_jobs,
            auto_cancel_redundant,
        }))
    }

    pub async fn set_ci_settings(&self, project: &Project, settings: &CiSettings, actor: Actor<'_>) -> Result<()> {
        let now = self.now_ms();
        let detail = format!(
            "max_concurrent_jobs={} auto_cancel_redundant={}",
            settings.max_concurrent_jobs, settings.auto_cancel_redundant
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO project_ci_settings (project_id, max_concurrent_jobs, auto_cancel_redundant) VALUES ($1, $2, $3)
                 ON CONFLICT (project_id) DO UPDATE SET max_concurrent_jobs = $2, auto_cancel_redundant = $3",
            )
            .bind(project.id)
            .bind(settings.max_concurrent_jobs)
            .bind(settings.auto_cancel_redundant)
            .execute(&mut *tx)
            .await?;
            record_audit!(&mut *tx, now, actor, "project.ci_settings", &project.name, &detail);
            tx.commit().await?;
        });
        Ok(())
    }
}

/// A project's CI settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CiSettings {
    /// Jobs of this project running at once, here and on agents; 0: no limit of its own.
    pub max_concurrent_jobs: i64,
    /// A new pipeline cancels older ones on the same ref whose started jobs are all interruptible.
    pub auto_cancel_redundant: bool,
}
