//! Agents and the queue of jobs handed to them. A job is claimed by exactly one agent: on
//! PostgreSQL the chosen row is locked with `FOR UPDATE SKIP LOCKED`, so concurrent claims pass
//! each other instead of queueing on the same row; on both backends the claim itself is a
//! compare-and-set on the job's state.

use crate::audit::record_audit;
use crate::{Actor, Backend, Result, Store, with_pool};

/// A registered agent. Its token is only ever stored as a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: i64,
    pub name: String,
    pub tags: Vec<String>,
    pub concurrency: i64,
    pub version: String,
    pub hostname: String,
    pub created_by: String,
    pub created_at: i64,
    /// 0 when it never connected.
    pub last_seen_at: i64,
    pub revoked_at: Option<i64>,
    /// Jobs it runs now.
    pub running_jobs: i64,
}

/// A job an agent has just claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedAgentJob {
    pub job_id: i64,
    pub pipeline_id: i64,
    /// The encrypted spec, as it was queued.
    pub spec: String,
    pub attempt: i64,
}

type AgentRow = (i64, String, String, i64, String, String, String, i64, i64, Option<i64>, i64);

const AGENT_COLUMNS: &str = "a.id, a.name, a.tags, a.concurrency, a.version, a.hostname, a.created_by, a.created_at,
     a.last_seen_at, a.revoked_at,
     (SELECT COUNT(*) FROM agent_jobs j WHERE j.agent_id = a.id AND j.state = 'running')";

fn agent_from(row: AgentRow) -> Agent {
    let (id, name, tags, concurrency, version, hostname, created_by, created_at, last_seen_at, revoked_at, running) =
        row;
    Agent {
        id,
        name,
        tags: split_tags(&tags),
        concurrency,
        version,
        hostname,
        created_by,
        created_at,
        last_seen_at,
        revoked_at,
        running_jobs: running,
    }
}

fn split_tags(text: &str) -> Vec<String> {
    text.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

/// Tags as stored: sorted, deduplicated, comma-separated (callers refuse tags with commas).
pub fn join_tags(tags: &[String]) -> String {
    let mut tags: Vec<&str> = tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).collect();
    tags.sort_unstable();
    tags.dedup();
    tags.join(",")
}

/// An agent runs a job when it has every tag the job asks for.
fn agent_fits(agent_tags: &[String], job_tags: &str) -> bool {
    split_tags(job_tags).iter().all(|tag| agent_tags.contains(tag))
}

/// How many queued jobs one claim reads at a time, looking for one whose tags fit.
const CLAIM_WINDOW: i64 = 500;

impl Store {
    pub async fn create_agent(&self, name: &str, token_digest: &str, actor: Actor<'_>) -> Result<Agent> {
        let now = self.now_ms();
        let id: i64 = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO agents (name, token_digest, created_by, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(name)
            .bind(token_digest)
            .bind(actor.name)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            record_audit!(&mut *tx, now, actor, "agent.create", name, "");
            tx.commit().await?;
            id
        });
        self.agent_by_id(id).await?.ok_or(crate::StoreError::NotFound { what: "agent" })
    }

    pub async fn agent_by_id(&self, id: i64) -> Result<Option<Agent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.id = $1");
        let row: Option<AgentRow> = with_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(agent_from))
    }

    /// The agent holding this token, unless it was revoked.
    pub async fn agent_by_token(&self, token_digest: &str) -> Result<Option<Agent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.token_digest = $1 AND a.revoked_at IS NULL");
        let row: Option<AgentRow> = with_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(token_digest)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(agent_from))
    }

    pub async fn list_agents(&self) -> Result<Vec<Agent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents a ORDER BY a.name");
        let rows: Vec<AgentRow> =
            with_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool).await?);
        Ok(rows.into_iter().map(agent_from).collect())
    }

    /// Revokes the agent's token; `false` when there is no such agent or it was revoked already.
    pub async fn revoke_agent(&self, id: i64, actor: Actor<'_>) -> Result<bool> {
        let now = self.now_ms();
        Ok(with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let name: Option<String> = sqlx::query_scalar(
                "UPDATE agents SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING name",
            )
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(name) = &name {
                record_audit!(&mut *tx, now, actor, "agent.revoke", name, "");
            }
            tx.commit().await?;
            name.is_some()
        }))
    }

    /// What an agent says of itself when it starts.
    pub async fn register_agent(
        &self,
        id: i64,
        tags: &[String],
        concurrency: i64,
        version: &str,
        hostname: &str,
    ) -> Result<()> {
        let now = self.now_ms();
        let tags = join_tags(tags);
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE agents SET tags = $1, concurrency = $2, version = $3, hostname = $4, last_seen_at = $5
                 WHERE id = $6",
            )
            .bind(&tags)
            .bind(concurrency)
            .bind(version)
            .bind(hostname)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn agent_seen(&self, id: i64) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2").bind(now).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// Queues a job for the agents (again, on a retry: its attempt counts up).
    pub async fn queue_agent_job(&self, job_id: i64, pipeline_id: i64, tags: &[String], spec: &str) -> Result<()> {
        let now = self.now_ms();
        let tags = join_tags(tags);
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO agent_jobs (job_id, pipeline_id, tags, spec, state, queued_at)
                 VALUES ($1, $2, $3, $4, 'queued', $5)
                 ON CONFLICT (job_id) DO UPDATE SET state = 'queued', spec = $4, attempt = agent_jobs.attempt + 1,
                   queued_at = $5, agent_id = NULL, claimed_at = NULL, heartbeat_at = NULL, cancel_requested = 0",
            )
            .bind(job_id)
            .bind(pipeline_id)
            .bind(&tags)
            .bind(spec)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Claims the oldest queued job whose tags `agent_tags` cover, for agent `agent_id`. The
    /// queue is read in pages, so jobs no online agent can take never hide the ones behind
    /// them; on PostgreSQL only the chosen row is locked (`FOR UPDATE SKIP LOCKED`), so
    /// agents claiming at once pass each other.
    pub async fn claim_agent_job(&self, agent_id: i64, agent_tags: &[String]) -> Result<Option<ClaimedAgentJob>> {
        let now = self.now_ms();
        let mut after = 0_i64;
        loop {
            let page: Vec<(i64, String)> = with_pool!(self, |pool| {
                sqlx::query_as(
                    "SELECT job_id, tags FROM agent_jobs WHERE state = 'queued' AND job_id > $1
                     ORDER BY job_id LIMIT $2",
                )
                .bind(after)
                .bind(CLAIM_WINDOW)
                .fetch_all(pool)
                .await?
            });
            let Some(last) = page.last().map(|(id, _)| *id) else { return Ok(None) };
            after = last;
            let fitting: Vec<i64> =
                page.iter().filter(|(_, tags)| agent_fits(agent_tags, tags)).map(|(id, _)| *id).collect();
            if fitting.is_empty() {
                continue;
            }
            let claimed: Option<(i64, i64, String, i64)> = match &self.backend {
                Backend::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    let locked: Option<i64> = sqlx::query_scalar(
                        "SELECT job_id FROM agent_jobs WHERE job_id = ANY($1) AND state = 'queued'
                         ORDER BY job_id LIMIT 1 FOR UPDATE SKIP LOCKED",
                    )
                    .bind(&fitting)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let mut claimed = None;
                    if let Some(job_id) = locked {
                        claimed = sqlx::query_as(
                            "UPDATE agent_jobs SET state = 'running', agent_id = $1, claimed_at = $2, heartbeat_at = $2
                             WHERE job_id = $3 AND state = 'queued'
                             RETURNING job_id, pipeline_id, spec, attempt",
                        )
                        .bind(agent_id)
                        .bind(now)
                        .bind(job_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    claimed
                }
                Backend::Sqlite(pool) => {
                    // SQLite has one writer at a time; the state check in the UPDATE is the claim.
                    let mut claimed = None;
                    for job_id in &fitting {
                        claimed = sqlx::query_as(
                            "UPDATE agent_jobs SET state = 'running', agent_id = $1, claimed_at = $2, heartbeat_at = $2
                             WHERE job_id = $3 AND state = 'queued'
                             RETURNING job_id, pipeline_id, spec, attempt",
                        )
                        .bind(agent_id)
                        .bind(now)
                        .bind(job_id)
                        .fetch_optional(pool)
                        .await?;
                        if claimed.is_some() {
                            break;
                        }
                    }
                    claimed
                }
            };
            if let Some((job_id, pipeline_id, spec, attempt)) = claimed {
                return Ok(Some(ClaimedAgentJob { job_id, pipeline_id, spec, attempt }));
            }
        }
    }

    /// The agent still runs the job: `Some(cancel_requested)`, or `None` when the job is no
    /// longer this agent's (finished, lost, or its pipeline gone) and the agent should stop it.
    pub async fn agent_job_heartbeat(&self, job_id: i64, agent_id: i64) -> Result<Option<bool>> {
        let now = self.now_ms();
        let cancel: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "UPDATE agent_jobs SET heartbeat_at = $1 WHERE job_id = $2 AND agent_id = $3 AND state = 'running'
                 RETURNING cancel_requested",
            )
            .bind(now)
            .bind(job_id)
            .bind(agent_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(cancel.map(|c| c != 0))
    }

    /// The agent reports the job's end; `false` when it was no longer this agent's job.
    pub async fn finish_agent_job(&self, job_id: i64, agent_id: i64) -> Result<bool> {
        Ok(with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE agent_jobs SET state = 'done' WHERE job_id = $1 AND agent_id = $2 AND state = 'running'",
            )
            .bind(job_id)
            .bind(agent_id)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// Cancels a job handed to the agents: a queued one is taken off the queue (`true`), a
    /// running one is asked to stop at its agent's next heartbeat (`false`).
    pub async fn cancel_agent_job(&self, job_id: i64) -> Result<bool> {
        Ok(with_pool!(self, |pool| {
            let dequeued = sqlx::query("UPDATE agent_jobs SET state = 'done' WHERE job_id = $1 AND state = 'queued'")
                .bind(job_id)
                .execute(pool)
                .await?
                .rows_affected()
                == 1;
            if !dequeued {
                sqlx::query("UPDATE agent_jobs SET cancel_requested = 1 WHERE job_id = $1 AND state = 'running'")
                    .bind(job_id)
                    .execute(pool)
                    .await?;
            }
            dequeued
        }))
    }

    /// Jobs whose agent has not heartbeated since `deadline`, marked lost; each with its agent.
    pub async fn take_lost_agent_jobs(&self, deadline: i64) -> Result<Vec<(i64, Option<i64>)>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "UPDATE agent_jobs SET state = 'lost' WHERE state = 'running' AND heartbeat_at < $1
                 RETURNING job_id, agent_id",
            )
            .bind(deadline)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The job's state in the agents' queue, if it was ever queued.
    pub async fn agent_job_state(&self, job_id: i64) -> Result<Option<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT state FROM agent_jobs WHERE job_id = $1")
                .bind(job_id)
                .fetch_optional(pool)
                .await?
        }))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn an_agent_fits_a_job_when_it_has_every_tag() {
        let tags = vec!["docker".to_owned(), "linux".to_owned()];
        assert!(agent_fits(&tags, ""));
        assert!(agent_fits(&tags, "linux"));
        assert!(agent_fits(&tags, "docker,linux"));
        assert!(!agent_fits(&tags, "gpu,linux"));
        assert!(!agent_fits(&[], "linux"));
        assert_eq!(join_tags(&["b".into(), " a".into(), "b".into(), String::new()]), "a,b");
    }
}
