//! Pipelines the server runs, their jobs and the jobs' logs.
//!
//! Statuses are GitLab's words (`created`, `pending`, `running`, `success`, `failed`,
//! `canceled`, `skipped`, `manual`, `warning`), stored as text. Logs are appended in chunks, each
//! its own row, so a crash loses at most the chunk being written, never what was stored.

use opsloop_core::{Event, JobStatus, PipelineStatus, StatusParseError};

use crate::audit::record_audit;
use crate::events::record_event;
use crate::{Actor, Page, PageRequest, Result, Store, StoreError, with_pool};

/// A job's JUnit summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub passed: i64,
    pub failed: i64,
    pub skipped: i64,
    /// `classname.name: message` of each failed or erroring case.
    pub failures: Vec<String>,
}

/// What a pipeline was asked to run, beyond its ref.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineRequest {
    /// The pushed commit; empty: the ref's head when the pipeline starts.
    pub sha: String,
    /// The trigger's variables, encoded (and encrypted) by the caller; empty: none.
    pub variables: String,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: i64,
    pub project_id: i64,
    pub git_ref: String,
    pub sha: String,
    pub source: String,
    pub status: PipelineStatus,
    pub created_by: String,
    pub error: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

type PipelineRow = (i64, i64, String, String, String, String, String, String, i64, Option<i64>, Option<i64>);

impl TryFrom<PipelineRow> for Pipeline {
    type Error = StoreError;
    fn try_from(row: PipelineRow) -> Result<Self> {
        let (id, project_id, git_ref, sha, source, status, created_by, error, created_at, started_at, finished_at) =
            row;
        Ok(Pipeline {
            id,
            project_id,
            git_ref,
            sha,
            source,
            status: status.parse().map_err(|e: StatusParseError| StoreError::Corrupt(e.to_string()))?,
            created_by,
            error,
            created_at,
            started_at,
            finished_at,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub pipeline_id: i64,
    pub position: i64,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub exit_code: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

type JobRow = (i64, i64, i64, String, String, String, Option<i64>, Option<i64>, Option<i64>);

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(row: JobRow) -> Result<Self> {
        let (id, pipeline_id, position, name, stage, status, exit_code, started_at, finished_at) = row;
        let status = status.parse().map_err(|e: StatusParseError| StoreError::Corrupt(e.to_string()))?;
        Ok(Job { id, pipeline_id, position, name, stage, status, exit_code, started_at, finished_at })
    }
}

const PIPELINE_COLUMNS: &str =
    "id, project_id, ref, sha, source, status, created_by, error, created_at, started_at, finished_at";

impl Store {
    /// Records a new pipeline (`created`) for a project; the caller then plans and runs it.
    pub async fn create_pipeline(
        &self,
        project_id: i64,
        git_ref: &str,
        source: &str,
        actor: Actor<'_>,
    ) -> Result<Pipeline> {
        self.create_requested_pipeline(project_id, git_ref, source, &PipelineRequest::default(), actor).await
    }

    /// A new pipeline with what it was asked to run, in the same row, so a pipeline still
    /// queued at a crash can start after the restart as requested.
    pub async fn create_requested_pipeline(
        &self,
        project_id: i64,
        git_ref: &str,
        source: &str,
        request: &PipelineRequest,
        actor: Actor<'_>,
    ) -> Result<Pipeline> {
        let now = self.now_ms();
        let row: PipelineRow = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let row = sqlx::query_as::<_, PipelineRow>(
                "INSERT INTO pipelines (project_id, ref, source, status, created_by, created_at, requested_sha, requested_variables)
                 VALUES ($1, $2, $3, 'created', $4, $5, $6, $7)
                 RETURNING id, project_id, ref, sha, source, status, created_by, error, created_at, started_at, finished_at",
            )
            .bind(project_id)
            .bind(git_ref)
            .bind(source)
            .bind(actor.name)
            .bind(now)
            .bind(&request.sha)
            .bind(&request.variables)
            .fetch_one(&mut *tx)
            .await?;
            let detail = format!("ref={git_ref} source={source}");
            record_audit!(&mut *tx, now, actor, "pipeline.create", &row.0.to_string(), &detail);
            tx.commit().await?;
            row
        });
        row.try_into()
    }

    /// The pipeline was planned at `sha` into `jobs` (name, stage), all `pending`; it runs now.
    pub async fn start_pipeline(&self, pipeline_id: i64, sha: &str, jobs: &[(String, String)]) -> Result<Vec<Job>> {
        let now = self.now_ms();
        let rows: Vec<JobRow> = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let project_id: i64 = sqlx::query_scalar(
                "UPDATE pipelines SET sha = $1, status = 'running', started_at = $2 WHERE id = $3 RETURNING project_id",
            )
            .bind(sha)
            .bind(now)
            .bind(pipeline_id)
            .fetch_one(&mut *tx)
            .await?;
            record_event!(&mut *tx, now, &Event::PipelineStarted { project_id, pipeline_id });
            let mut rows = Vec::with_capacity(jobs.len());
            for (position, (name, stage)) in jobs.iter().enumerate() {
                let row = sqlx::query_as::<_, JobRow>(
                    "INSERT INTO jobs (pipeline_id, position, name, stage, status) VALUES ($1, $2, $3, $4, 'pending')
                     RETURNING id, pipeline_id, position, name, stage, status, exit_code, started_at, finished_at",
                )
                .bind(pipeline_id)
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .bind(name)
                .bind(stage)
                .fetch_one(&mut *tx)
                .await?;
                rows.push(row);
            }
            tx.commit().await?;
            rows
        });
        self.events_committed();
        rows.into_iter().map(Job::try_from).collect()
    }

    /// Ends a pipeline with `status`, and an error text when it could not run; records
    /// [`Event::PipelineFinished`] with it.
    pub async fn finish_pipeline(&self, pipeline_id: i64, status: PipelineStatus, error: &str) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let project_id: Option<i64> = sqlx::query_scalar(
                "UPDATE pipelines SET status = $1, error = $2, finished_at = $3 WHERE id = $4 RETURNING project_id",
            )
            .bind(status.as_str())
            .bind(error)
            .bind(now)
            .bind(pipeline_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(project_id) = project_id {
                record_event!(&mut *tx, now, &Event::PipelineFinished { project_id, pipeline_id, status });
            }
            tx.commit().await?;
        });
        self.events_committed();
        Ok(())
    }

    /// The job waits for its `start_in` (GitLab's `scheduled`).
    pub async fn job_scheduled(&self, job_id: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE jobs SET status = 'scheduled' WHERE id = $1 AND status = 'pending'")
                .bind(job_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn job_started(&self, job_id: i64) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            sqlx::query("UPDATE jobs SET status = 'running', started_at = $1 WHERE id = $2")
                .bind(now)
                .bind(job_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Ends a job; records [`Event::JobFinished`] with it.
    pub async fn job_finished(&self, job_id: i64, status: JobStatus, exit_code: Option<i64>) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let ids: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE jobs SET status = $1, exit_code = $2, finished_at = $3 WHERE id = $4
                 RETURNING pipeline_id, (SELECT project_id FROM pipelines WHERE pipelines.id = jobs.pipeline_id)",
            )
            .bind(status.as_str())
            .bind(exit_code)
            .bind(now)
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((pipeline_id, project_id)) = ids {
                record_event!(&mut *tx, now, &Event::JobFinished { project_id, pipeline_id, job_id, status });
            }
            tx.commit().await?;
        });
        self.events_committed();
        Ok(())
    }

    /// Records a job's test summary (once; a second report for the job replaces the first).
    pub async fn record_test_report(&self, job_id: i64, report: &TestReport) -> Result<()> {
        let failures = serde_json::to_string(&report.failures).unwrap_or_else(|_| "[]".to_owned());
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM job_test_reports WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
            // The earlier run's artifacts are not this run's (the new run overwrites the object).
            sqlx::query("DELETE FROM job_artifacts WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO job_test_reports (job_id, passed, failed, skipped, failures) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(job_id)
            .bind(report.passed)
            .bind(report.failed)
            .bind(report.skipped)
            .bind(failures)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The test summaries of a pipeline's jobs, in job order, as (job name, report).
    pub async fn pipeline_test_reports(&self, pipeline_id: i64) -> Result<Vec<(String, TestReport)>> {
        let rows: Vec<(String, i64, i64, i64, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT j.name, r.passed, r.failed, r.skipped, r.failures
                 FROM job_test_reports r JOIN jobs j ON j.id = r.job_id
                 WHERE j.pipeline_id = $1 ORDER BY j.position",
            )
            .bind(pipeline_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(name, passed, failed, skipped, failures)| {
                let report = TestReport {
                    passed,
                    failed,
                    skipped,
                    failures: serde_json::from_str(&failures).unwrap_or_default(),
                };
                (name, report)
            })
            .collect())
    }

    /// Appends one chunk of a job's log.
    /// Appends a chunk of a job's log, deflated (logs are repetitive: typically 5 to 20 times
    /// smaller).
    pub async fn append_job_log(&self, job_id: i64, seq: i64, content: &str) -> Result<()> {
        let deflated = deflate(content);
        with_pool!(self, |pool| {
            sqlx::query("INSERT INTO job_log_chunks (job_id, seq, content, gz) VALUES ($1, $2, '', $3)")
                .bind(job_id)
                .bind(seq)
                .bind(&deflated)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Bytes a job's log takes in the database (deflated chunks plus any stored as text).
    pub async fn job_log_stored_bytes(&self, job_id: i64) -> Result<i64> {
        let sizes: Vec<(String, Option<Vec<u8>>)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT content, gz FROM job_log_chunks WHERE job_id = $1")
                .bind(job_id)
                .fetch_all(pool)
                .await?
        });
        let total: usize = sizes.iter().map(|(content, gz)| content.len() + gz.as_ref().map_or(0, Vec::len)).sum();
        Ok(i64::try_from(total).unwrap_or(i64::MAX))
    }

    /// A job's whole log, chunks in order.
    pub async fn job_log(&self, job_id: i64) -> Result<String> {
        let chunks: Vec<(String, Option<Vec<u8>>)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT content, gz FROM job_log_chunks WHERE job_id = $1 ORDER BY seq")
                .bind(job_id)
                .fetch_all(pool)
                .await?
        });
        Ok(chunks.into_iter().map(|(content, gz)| inflate(content, gz)).collect())
    }

    pub async fn pipeline_by_id(&self, pipeline_id: i64) -> Result<Option<Pipeline>> {
        let row: Option<PipelineRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, PipelineRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE id = $1"
            )))
            .bind(pipeline_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(Pipeline::try_from).transpose()
    }

    /// A project's pipelines, newest first; the cursor is the id to continue below.
    pub async fn list_pipelines(&self, project_id: i64, page: &PageRequest) -> Result<Page<Pipeline>> {
        let before = page.after.as_deref().and_then(|cursor| cursor.parse::<i64>().ok()).unwrap_or(i64::MAX);
        let rows: Vec<PipelineRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, PipelineRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE project_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            )))
            .bind(project_id)
            .bind(before)
            .bind(page.fetch_limit())
            .fetch_all(pool)
            .await?
        });
        let rows: Vec<Pipeline> = rows.into_iter().map(Pipeline::try_from).collect::<Result<_>>()?;
        Ok(Page::from_rows(rows, page, |p| p.id.to_string()))
    }

    pub async fn jobs_of(&self, pipeline_id: i64) -> Result<Vec<Job>> {
        let rows: Vec<JobRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, JobRow>(
                "SELECT id, pipeline_id, position, name, stage, status, exit_code, started_at, finished_at
                 FROM jobs WHERE pipeline_id = $1 ORDER BY position",
            )
            .bind(pipeline_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Job::try_from).collect()
    }

    /// A job and the project it belongs to.
    pub async fn job_by_id(&self, job_id: i64) -> Result<Option<(Job, i64)>> {
        type JobWithProject = (i64, i64, i64, String, String, String, Option<i64>, Option<i64>, Option<i64>, i64);
        let row: Option<JobWithProject> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT j.id, j.pipeline_id, j.position, j.name, j.stage, j.status, j.exit_code, j.started_at,
                            j.finished_at, p.project_id
                     FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id WHERE j.id = $1",
            )
            .bind(job_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(|r| Ok((Job::try_from((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8))?, r.9))).transpose()
    }

    /// Takes a queued pipeline for running (created → pending); `false` when it is no longer
    /// queued (claimed by another run, or canceled).
    pub async fn claim_pipeline(&self, pipeline_id: i64) -> Result<bool> {
        let claimed = with_pool!(self, |pool| {
            sqlx::query("UPDATE pipelines SET status = 'pending' WHERE id = $1 AND status = 'created'")
                .bind(pipeline_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// Cancels a pipeline that has not been claimed yet; `false` when it is no longer queued.
    pub async fn cancel_queued_pipeline(&self, pipeline_id: i64) -> Result<bool> {
        let now = self.now_ms();
        let canceled = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let project_id: Option<i64> = sqlx::query_scalar(
                "UPDATE pipelines SET status = 'canceled', finished_at = $1 WHERE id = $2 AND status = 'created'
                 RETURNING project_id",
            )
            .bind(now)
            .bind(pipeline_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(project_id) = project_id {
                let status = PipelineStatus::Canceled;
                record_event!(&mut *tx, now, &Event::PipelineFinished { project_id, pipeline_id, status });
            }
            tx.commit().await?;
            project_id.is_some()
        });
        self.events_committed();
        Ok(canceled)
    }

    /// Pipelines that were created but never started (queued when the server stopped), oldest
    /// first, with what they were asked to run.
    pub async fn queued_pipelines(&self) -> Result<Vec<(Pipeline, PipelineRequest)>> {
        let ids: Vec<(i64, String, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, requested_sha, requested_variables FROM pipelines WHERE status = 'created' ORDER BY id",
            )
            .fetch_all(pool)
            .await?
        });
        let mut queued = Vec::with_capacity(ids.len());
        for (id, sha, variables) in ids {
            if let Some(pipeline) = self.pipeline_by_id(id).await? {
                queued.push((pipeline, PipelineRequest { sha, variables }));
            }
        }
        Ok(queued)
    }

    /// Fails what an earlier process was running when it stopped; pipelines still queued
    /// (`created`) are left for [`Store::queued_pipelines`] to resume.
    pub async fn fail_interrupted(&self) -> Result<u64> {
        let now = self.now_ms();
        let error = "the server stopped while this pipeline ran (runner_system_failure)";
        let touched = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE jobs SET status = 'failed', finished_at = $1
                 WHERE status IN ('created', 'pending', 'scheduled', 'running')",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Their jobs on agents are no one's now: an agent running one is told to stop.
            sqlx::query(
                "UPDATE agent_jobs SET state = 'done' WHERE state IN ('queued', 'running')
                 AND pipeline_id IN (SELECT id FROM pipelines WHERE status IN ('pending', 'running'))",
            )
            .execute(&mut *tx)
            .await?;
            let failed: Vec<(i64, i64)> = sqlx::query_as(
                "UPDATE pipelines SET status = 'failed', error = $1, finished_at = $2
                 WHERE status IN ('pending', 'running') RETURNING id, project_id",
            )
            .bind(error)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for &(pipeline_id, project_id) in &failed {
                let status = PipelineStatus::Failed;
                record_event!(&mut *tx, now, &Event::PipelineFinished { project_id, pipeline_id, status });
            }
            tx.commit().await?;
            failed.len()
        });
        self.events_committed();
        Ok(u64::try_from(touched).unwrap_or(u64::MAX))
    }
}

impl Store {
    /// Records the pipeline's `needs` graph (JSON, opaque to the store).
    pub async fn set_needs_graph(&self, pipeline_id: i64, graph: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE pipelines SET needs_graph = $1 WHERE id = $2")
                .bind(graph)
                .bind(pipeline_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records the pipeline's jobs with an `environment:` (JSON, opaque to the store).
    pub async fn set_pipeline_environments(&self, pipeline_id: i64, environments: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE pipelines SET environments = $1 WHERE id = $2")
                .bind(environments)
                .bind(pipeline_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn pipeline_environments(&self, pipeline_id: i64) -> Result<String> {
        let found: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT environments FROM pipelines WHERE id = $1")
                .bind(pipeline_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(found.unwrap_or_else(|| "[]".to_owned()))
    }

    pub async fn needs_graph(&self, pipeline_id: i64) -> Result<String> {
        let graph: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT needs_graph FROM pipelines WHERE id = $1")
                .bind(pipeline_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(graph.unwrap_or_else(|| "{}".to_owned()))
    }

    /// What the pipeline was asked to run (its trigger variables, still encrypted).
    pub async fn pipeline_request(&self, pipeline_id: i64) -> Result<Option<PipelineRequest>> {
        let row: Option<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT requested_sha, requested_variables FROM pipelines WHERE id = $1")
                .bind(pipeline_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(sha, variables)| PipelineRequest { sha, variables }))
    }

    /// Opens a finished pipeline's job to run again (retry, or play a manual one): the
    /// pipeline turns `running`, the job `pending` with its log and test report cleared.
    /// `false` when the pipeline is not finished or the job's status is not one of `from`:
    /// a compare-and-set, so two clicks start it once.
    pub async fn reopen_job(
        &self,
        job_id: i64,
        pipeline_id: i64,
        from: &[JobStatus],
        actor: Actor<'_>,
        action: &str,
    ) -> Result<bool> {
        let now = self.now_ms();
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 2)).collect();
        let job_sql = format!(
            "UPDATE jobs SET status = 'pending', exit_code = NULL, started_at = NULL, finished_at = NULL
             WHERE id = $1 AND status IN ({})",
            placeholders.join(", ")
        );
        Ok(with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let opened = sqlx::query(
                "UPDATE pipelines SET status = 'running', finished_at = NULL, error = ''
                 WHERE id = $1 AND status IN ('success', 'failed', 'canceled')",
            )
            .bind(pipeline_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(job_sql.clone())).bind(job_id);
            for status in &from {
                query = query.bind(status);
            }
            let reopened = opened == 1 && query.execute(&mut *tx).await?.rows_affected() == 1;
            if !reopened {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query("DELETE FROM job_log_chunks WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM job_test_reports WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
            record_audit!(&mut *tx, now, actor, action, &job_id.to_string(), &format!("pipeline={pipeline_id}"));
            tx.commit().await?;
            true
        }))
    }

    /// The unfinished jobs of the pipelines an earlier process left running: `(pipeline, job,
    /// status)`. Read before [`Store::fail_interrupted`] turns them failed.
    pub async fn interrupted_jobs(&self) -> Result<Vec<(i64, i64, JobStatus)>> {
        let rows: Vec<(i64, i64, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT j.pipeline_id, j.id, j.status FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
                 WHERE p.status IN ('pending', 'running') AND j.status IN ('created', 'pending', 'scheduled', 'running')
                 ORDER BY j.pipeline_id, j.id",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(pipeline, job, status)| {
                let status = status.parse().map_err(|e: StatusParseError| StoreError::Corrupt(e.to_string()))?;
                Ok((pipeline, job, status))
            })
            .collect()
    }

    /// Opens the jobs an interrupted (now failed) pipeline had not finished, to run again: the
    /// pipeline turns `running`, the jobs `pending` with their logs cleared. `false` when the
    /// pipeline is no longer failed (a compare-and-set).
    pub async fn reopen_interrupted(&self, pipeline_id: i64, job_ids: &[i64], actor: Actor<'_>) -> Result<bool> {
        let now = self.now_ms();
        Ok(with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let opened = sqlx::query(
                "UPDATE pipelines SET status = 'running', finished_at = NULL, error = '' WHERE id = $1 AND status = 'failed'",
            )
            .bind(pipeline_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if opened != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            for job_id in job_ids {
                sqlx::query(
                    "UPDATE jobs SET status = 'pending', exit_code = NULL, started_at = NULL, finished_at = NULL
                     WHERE id = $1 AND pipeline_id = $2",
                )
                .bind(job_id)
                .bind(pipeline_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM job_log_chunks WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM job_test_reports WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM job_artifacts WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
            }
            let detail = format!("runner_system_failure; jobs={job_ids:?}");
            record_audit!(&mut *tx, now, actor, "pipeline.resume", &pipeline_id.to_string(), &detail);
            tx.commit().await?;
            true
        }))
    }

    /// Ends a pipeline whose job ran again, with the status its jobs now give it.
    pub async fn settle_pipeline(&self, pipeline_id: i64) -> Result<PipelineStatus> {
        let statuses: Vec<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT status FROM jobs WHERE pipeline_id = $1")
                .bind(pipeline_id)
                .fetch_all(pool)
                .await?
        });
        let has = |wanted: JobStatus| statuses.iter().any(|s| s == wanted.as_str());
        let status = if has(JobStatus::Failed) {
            PipelineStatus::Failed
        } else if has(JobStatus::Canceled) {
            PipelineStatus::Canceled
        } else {
            PipelineStatus::Success
        };
        self.finish_pipeline(pipeline_id, status, "").await?;
        Ok(status)
    }

    /// The project a job belongs to (for access checks on job routes).
    pub async fn project_of_job(&self, job_id: i64) -> Result<Option<crate::Project>> {
        type ProjectRow = (i64, String, String, String, String, String, i64, i64);
        let row: Option<ProjectRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, ProjectRow>(
                "SELECT p.id, p.name, p.description, p.repo_url, p.default_branch, p.pipeline_file, p.created_at, p.updated_at
                 FROM jobs j JOIN pipelines pl ON pl.id = j.pipeline_id JOIN projects p ON p.id = pl.project_id
                 WHERE j.id = $1",
            )
            .bind(job_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(id, name, description, repo_url, default_branch, pipeline_file, created_at, updated_at)| {
            crate::Project { id, name, description, repo_url, default_branch, pipeline_file, created_at, updated_at }
        }))
    }
}

impl Store {
    /// The project's webhook secret, made (from `fresh`) the first time it is asked for.
    pub async fn webhook_secret(&self, project_id: i64, fresh: &str) -> Result<String> {
        let secret: String = with_pool!(self, |pool| {
            sqlx::query("UPDATE projects SET webhook_secret = $1 WHERE id = $2 AND webhook_secret = ''")
                .bind(fresh)
                .bind(project_id)
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT webhook_secret FROM projects WHERE id = $1")
                .bind(project_id)
                .fetch_one(pool)
                .await?
        });
        Ok(secret)
    }

    /// The secret as stored, without making one (empty: webhooks are not set up).
    pub async fn current_webhook_secret(&self, project_id: i64) -> Result<String> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT webhook_secret FROM projects WHERE id = $1")
                .bind(project_id)
                .fetch_one(pool)
                .await?
        }))
    }

    /// Records a webhook delivery; `false` when it was seen before (a replay).
    pub async fn record_delivery(&self, project_id: i64, delivery: &str) -> Result<bool> {
        let now = self.now_ms();
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO webhook_deliveries (project_id, delivery, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (project_id, delivery) DO NOTHING",
            )
            .bind(project_id)
            .bind(delivery)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }
}

impl Store {
    /// A job's log chunks from number `from` on, with their numbers (for live views).
    pub async fn job_log_since(&self, job_id: i64, from: i64) -> Result<Vec<(i64, String)>> {
        let rows: Vec<(i64, String, Option<Vec<u8>>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT seq, content, gz FROM job_log_chunks WHERE job_id = $1 AND seq >= $2 ORDER BY seq LIMIT 64",
            )
            .bind(job_id)
            .bind(from)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(seq, content, gz)| (seq, inflate(content, gz))).collect())
    }
}

fn deflate(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text.as_bytes());
    encoder.finish().unwrap_or_default()
}

/// A stored chunk's text: deflated in `gz`, or (written by an earlier version) in `content`.
fn inflate(content: String, gz: Option<Vec<u8>>) -> String {
    use std::io::Read;
    let Some(gz) = gz else { return content };
    let mut text = String::new();
    match flate2::read::DeflateDecoder::new(gz.as_slice()).read_to_string(&mut text) {
        Ok(_) => text,
        Err(_) => "# this part of the log is damaged and cannot be read\n".to_owned(),
    }
}

#[cfg(test)]
mod compression {
    #[test]
    fn chunks_deflate_and_inflate() {
        let text = "$ make\ncc -O2 main.c\n".repeat(500);
        let deflated = super::deflate(&text);
        assert!(deflated.len() * 10 < text.len(), "{} -> {}", text.len(), deflated.len());
        assert_eq!(super::inflate(String::new(), Some(deflated)), text);
        assert_eq!(super::inflate("old text".to_owned(), None), "old text");
    }
}
