//! Pipeline schedules (GitLab's "pipeline schedules"). A run is claimed by moving
//! `next_run_at` forward with a compare-and-set, so one run starts once even with several
//! servers on one database.

use crate::audit::record_audit;
use crate::{Actor, Project, Result, Store, StoreError, with_pool};

#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    pub cron: String,
    pub timezone: String,
    pub git_ref: String,
    /// A JSON object of variable names to values.
    pub variables: String,
    pub enabled: bool,
    pub next_run_at: i64,
    pub last_pipeline_id: Option<i64>,
    pub created_at: i64,
}

type ScheduleRow = (i64, i64, String, String, String, String, String, bool, i64, Option<i64>, i64);

impl From<ScheduleRow> for Schedule {
    fn from(row: ScheduleRow) -> Self {
        let (
            id,
            project_id,
            description,
            cron,
            timezone,
            git_ref,
            variables,
            enabled,
            next_run_at,
            last_pipeline_id,
            created_at,
        ) = row;
        Schedule {
            id,
            project_id,
            description,
            cron,
            timezone,
            git_ref,
            variables,
            enabled,
            next_run_at,
            last_pipeline_id,
            created_at,
        }
    }
}

const COLUMNS: &str =
    "id, project_id, description, cron, timezone, ref, variables, enabled, next_run_at, last_pipeline_id, created_at";

impl Store {
    pub async fn create_schedule(&self, project: &Project, schedule: &Schedule, actor: Actor<'_>) -> Result<Schedule> {
        let now = self.now_ms();
        let detail = format!("cron={} tz={} ref={}", schedule.cron, schedule.timezone, schedule.git_ref);
        let row: ScheduleRow = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let row = sqlx::query_as::<_, ScheduleRow>(sqlx::AssertSqlSafe(format!(
                "INSERT INTO schedules (project_id, description, cron, timezone, ref, variables, enabled, next_run_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
            )))
            .bind(project.id)
            .bind(&schedule.description)
            .bind(&schedule.cron)
            .bind(&schedule.timezone)
            .bind(&schedule.git_ref)
            .bind(&schedule.variables)
            .bind(schedule.enabled)
            .bind(schedule.next_run_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            record_audit!(&mut *tx, now, actor, "schedule.create", &project.name, &detail);
            tx.commit().await?;
            row
        });
        Ok(row.into())
    }

    pub async fn list_schedules(&self, project_id: i64) -> Result<Vec<Schedule>> {
        let rows: Vec<ScheduleRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, ScheduleRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM schedules WHERE project_id = $1 ORDER BY id"
            )))
            .bind(project_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(Schedule::from).collect())
    }

    /// Turns a schedule on or off; when on, `next_run_at` is where it resumes.
    pub async fn set_schedule_enabled(
        &self,
        project: &Project,
        schedule_id: i64,
        enabled: bool,
        next_run_at: i64,
        actor: Actor<'_>,
    ) -> Result<()> {
        let now = self.now_ms();
        let detail = format!("id={schedule_id} enabled={enabled}");
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let changed =
                sqlx::query("UPDATE schedules SET enabled = $1, next_run_at = $2 WHERE id = $3 AND project_id = $4")
                    .bind(enabled)
                    .bind(next_run_at)
                    .bind(schedule_id)
                    .bind(project.id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if changed == 0 {
                return Err(StoreError::NotFound { what: "schedule" });
            }
            record_audit!(&mut *tx, now, actor, "schedule.update", &project.name, &detail);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn delete_schedule(&self, project: &Project, schedule_id: i64, actor: Actor<'_>) -> Result<()> {
        let now = self.now_ms();
        let detail = format!("id={schedule_id}");
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query("DELETE FROM schedules WHERE id = $1 AND project_id = $2")
                .bind(schedule_id)
                .bind(project.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if removed == 0 {
                return Err(StoreError::NotFound { what: "schedule" });
            }
            record_audit!(&mut *tx, now, actor, "schedule.delete", &project.name, &detail);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Enabled schedules whose next run is due at `now`.
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<Schedule>> {
        let rows: Vec<ScheduleRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, ScheduleRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM schedules WHERE enabled AND next_run_at <= $1 ORDER BY next_run_at LIMIT 100"
            )))
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(Schedule::from).collect())
    }

    /// Claims the run due at `due` by moving the schedule to `next`; `false` when another
    /// server (or an earlier tick) already did.
    pub async fn claim_schedule_run(&self, schedule_id: i64, due: i64, next: i64) -> Result<bool> {
        let claimed = with_pool!(self, |pool| {
            sqlx::query("UPDATE schedules SET next_run_at = $1 WHERE id = $2 AND next_run_at = $3")
                .bind(next)
                .bind(schedule_id)
                .bind(due)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(claimed == 1)
    }

    pub async fn schedule_ran(&self, schedule_id: i64, pipeline_id: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE schedules SET last_pipeline_id = $1 WHERE id = $2")
                .bind(pipeline_id)
                .bind(schedule_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn project_by_id(&self, project_id: i64) -> Result<Option<Project>> {
        type ProjectRow = (i64, String, String, String, String, String, i64, i64);
        let row: Option<ProjectRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, ProjectRow>(
                "SELECT id, name, description, repo_url, default_branch, pipeline_file, created_at, updated_at
                 FROM projects WHERE id = $1",
            )
            .bind(project_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(id, name, description, repo_url, default_branch, pipeline_file, created_at, updated_at)| {
            Project { id, name, description, repo_url, default_branch, pipeline_file, created_at, updated_at }
        }))
    }
}
