//! Pipeline trigger tokens: a script holding one starts pipelines of its project. Only the
//! token's digest is stored.

use crate::audit::record_audit;
use crate::{Actor, Project, Result, Store, with_pool};

/// A pipeline trigger token's record (the token itself is only a digest here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineTrigger {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

type TriggerRow = (i64, i64, String, String, i64, Option<i64>);

fn trigger_from((id, project_id, description, created_by, created_at, last_used_at): TriggerRow) -> PipelineTrigger {
    PipelineTrigger { id, project_id, description, created_by, created_at, last_used_at }
}

impl Store {
    pub async fn create_trigger(
        &self,
        project: &Project,
        description: &str,
        token_digest: &str,
        actor: Actor<'_>,
    ) -> Result<PipelineTrigger> {
        let now = self.now_ms();
        let row: TriggerRow = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let row: TriggerRow = sqlx::query_as(
                "INSERT INTO pipeline_triggers (project_id, description, token_digest, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 RETURNING id, project_id, description, created_by, created_at, last_used_at",
            )
            .bind(project.id)
            .bind(description)
            .bind(token_digest)
            .bind(actor.name)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            record_audit!(&mut *tx, now, actor, "trigger.create", &project.name, description);
            tx.commit().await?;
            row
        });
        Ok(trigger_from(row))
    }

    pub async fn list_triggers(&self, project_id: i64) -> Result<Vec<PipelineTrigger>> {
        let rows: Vec<TriggerRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, project_id, description, created_by, created_at, last_used_at
                 FROM pipeline_triggers WHERE project_id = $1 ORDER BY id",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(trigger_from).collect())
    }

    pub async fn delete_trigger(&self, project: &Project, trigger_id: i64, actor: Actor<'_>) -> Result<bool> {
        let now = self.now_ms();
        Ok(with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let description: Option<String> = sqlx::query_scalar(
                "DELETE FROM pipeline_triggers WHERE id = $1 AND project_id = $2 RETURNING description",
            )
            .bind(trigger_id)
            .bind(project.id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(description) = &description {
                record_audit!(&mut *tx, now, actor, "trigger.delete", &project.name, description);
            }
            tx.commit().await?;
            description.is_some()
        }))
    }

    /// The project's trigger with this token digest, marked used now.
    pub async fn use_trigger(&self, project_id: i64, token_digest: &str) -> Result<Option<PipelineTrigger>> {
        let now = self.now_ms();
        let row: Option<TriggerRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "UPDATE pipeline_triggers SET last_used_at = $1 WHERE project_id = $2 AND token_digest = $3
                 RETURNING id, project_id, description, created_by, created_at, last_used_at",
            )
            .bind(now)
            .bind(project_id)
            .bind(token_digest)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(trigger_from))
    }
}

/// What a pipeline's token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineToken {
    pub pipeline_id: i64,
    pub project_id: i64,
    /// Who started the pipeline (a user's name, or a source such as `schedule`).
    pub username: String,
    pub expires_at: i64,
}

impl Store {
    pub async fn create_pipeline_token(&self, token_digest: &str, token: &PipelineToken) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO pipeline_tokens (token_digest, pipeline_id, project_id, username, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_digest)
            .bind(token.pipeline_id)
            .bind(token.project_id)
            .bind(&token.username)
            .bind(token.expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The unexpired pipeline token with this digest.
    pub async fn pipeline_token(&self, token_digest: &str) -> Result<Option<PipelineToken>> {
        let now = self.now_ms();
        let row: Option<(i64, i64, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT pipeline_id, project_id, username, expires_at FROM pipeline_tokens
                 WHERE token_digest = $1 AND expires_at > $2",
            )
            .bind(token_digest)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(pipeline_id, project_id, username, expires_at)| PipelineToken {
            pipeline_id,
            project_id,
            username,
            expires_at,
        }))
    }

    pub async fn delete_pipeline_token(&self, token_digest: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM pipeline_tokens WHERE token_digest = $1 OR expires_at < $2")
                .bind(token_digest)
                .bind(self.now_ms())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
