//! Where each job's artifacts archive is in the object store, how big it is, and when it
//! expires. The archive itself never passes through the database.

use crate::{Result, Store, with_pool};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobArtifacts {
    pub job_id: i64,
    pub object_key: String,
    pub size_bytes: i64,
    pub file_count: i64,
    pub created_at: i64,
    pub expire_at: Option<i64>,
}

type ArtifactRow = (i64, String, i64, i64, i64, Option<i64>);

fn from_row((job_id, object_key, size_bytes, file_count, created_at, expire_at): ArtifactRow) -> JobArtifacts {
    JobArtifacts { job_id, object_key, size_bytes, file_count, created_at, expire_at }
}

/// A pipeline's id, then an `ArtifactRow`.
type PipelineArtifactRow = (i64, i64, String, i64, i64, i64, Option<i64>);

impl Store {
    /// Records (or replaces, on a retry) the job's archive.
    pub async fn record_artifacts(
        &self,
        job_id: i64,
        object_key: &str,
        size_bytes: i64,
        file_count: i64,
        expire_at: Option<i64>,
    ) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO job_artifacts (job_id, object_key, size_bytes, file_count, created_at, expire_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (job_id) DO UPDATE SET object_key = $2, size_bytes = $3, file_count = $4,
                   created_at = $5, expire_at = $6",
            )
            .bind(job_id)
            .bind(object_key)
            .bind(size_bytes)
            .bind(file_count)
            .bind(now)
            .bind(expire_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The job's archive, unless it expired (the sweeper may not have removed it yet).
    pub async fn job_artifacts(&self, job_id: i64) -> Result<Option<JobArtifacts>> {
        let now = self.now_ms();
        let row: Option<ArtifactRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT job_id, object_key, size_bytes, file_count, created_at, expire_at FROM job_artifacts
                 WHERE job_id = $1 AND (expire_at IS NULL OR expire_at > $2)",
            )
            .bind(job_id)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(from_row))
    }

    /// The newest successful job named `job_name` of a pipeline at `commit` that kept artifacts
    /// (not expired): `(pipeline id, its artifacts)`. A release built by a pipeline comes from it.
    pub async fn artifacts_at_commit(
        &self,
        project_id: i64,
        commit: &str,
        job_name: &str,
    ) -> Result<Option<(i64, JobArtifacts)>> {
        let now = self.now_ms();
        let row: Option<PipelineArtifactRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT p.id, a.job_id, a.object_key, a.size_bytes, a.file_count, a.created_at, a.expire_at
                 FROM pipelines p JOIN jobs j ON j.pipeline_id = p.id JOIN job_artifacts a ON a.job_id = j.id
                 WHERE p.project_id = $1 AND p.sha = $2 AND j.name = $3 AND j.status = 'success'
                   AND (a.expire_at IS NULL OR a.expire_at > $4)
                 ORDER BY p.id DESC, j.id DESC LIMIT 1",
            )
            .bind(project_id)
            .bind(commit)
            .bind(job_name)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(pipeline_id, job_id, key, size, files, created, expire)| {
            (pipeline_id, from_row((job_id, key, size, files, created, expire)))
        }))
    }

    /// The archives of a pipeline's jobs that have not expired.
    pub async fn pipeline_artifacts(&self, pipeline_id: i64) -> Result<Vec<JobArtifacts>> {
        let now = self.now_ms();
        let rows: Vec<ArtifactRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT a.job_id, a.object_key, a.size_bytes, a.file_count, a.created_at, a.expire_at
                 FROM job_artifacts a JOIN jobs j ON j.id = a.job_id
                 WHERE j.pipeline_id = $1 AND (a.expire_at IS NULL OR a.expire_at > $2) ORDER BY a.job_id",
            )
            .bind(pipeline_id)
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Removes the records of archives expired at `now` and returns their object keys, for
    /// the caller to delete. A crash between the two leaves an orphan object, never a record
    /// that points nowhere.
    pub async fn take_expired_artifacts(&self, now: i64) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar("DELETE FROM job_artifacts WHERE expire_at <= $1 RETURNING object_key")
                .bind(now)
                .fetch_all(pool)
                .await?
        }))
    }
}
