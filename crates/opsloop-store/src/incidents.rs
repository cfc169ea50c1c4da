//! Incidents and their timelines, and the small durable pieces alerting needs beside them:
//! a subsystem's state document, leases (one timer evaluator among replicas) and used nonces
//! (one-time links). An incident is opened or joined by its key in one transaction, and every
//! status change is a compare-and-set that records its timeline entry and its event together.

use opsloop_core::{Event, IncidentStatus, StatusParseError};

use crate::events::record_event;
use crate::{Result, Store, StoreError, with_pool};

/// An incident: what fired, who is on it, and where its escalation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub id: i64,
    pub project_id: Option<i64>,
    /// Alerts with this key join the incident while it is open (the notification group's key).
    pub dedup_key: String,
    pub title: String,
    pub severity: String,
    pub status: IncidentStatus,
    pub escalation_policy: String,
    pub assignee: Option<String>,
    /// JSON array of the alerts as last seen.
    pub alerts: String,
    /// The escalation engine's state (JSON), while it escalates.
    pub escalation: Option<String>,
    pub next_escalation_at: Option<i64>,
    pub created_at: i64,
    pub acknowledged_at: Option<i64>,
    pub resolved_at: Option<i64>,
}

/// One step of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentEvent {
    pub id: i64,
    pub incident_id: i64,
    pub at: i64,
    /// `triggered`, `alerts`, `paged`, `escalated`, `acknowledged`, `resolved`, `note`, …
    pub kind: String,
    pub actor: String,
    /// JSON or text, by kind.
    pub detail: String,
}

/// What opens an incident (or updates the open one with the same key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncident<'a> {
    pub project_id: Option<i64>,
    pub dedup_key: &'a str,
    pub title: &'a str,
    pub severity: &'a str,
    pub escalation_policy: &'a str,
    pub alerts: &'a str,
}

type IncidentRow = (
    i64,
    Option<i64>,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    i64,
    Option<i64>,
    Option<i64>,
);

const INCIDENT_COLUMNS: &str = "id, project_id, dedup_key, title, severity, status, escalation_policy, assignee, \
     alerts, escalation, next_escalation_at, created_at, acknowledged_at, resolved_at";

fn incident_from(row: IncidentRow) -> Result<Incident> {
    let (
        id,
        project_id,
        dedup_key,
        title,
        severity,
        status,
        escalation_policy,
        assignee,
        alerts,
        escalation,
        next_escalation_at,
        created_at,
        acknowledged_at,
        resolved_at,
    ) = row;
    let status = status.parse().map_err(|e: StatusParseError| StoreError::Corrupt(format!("incident {id}: {e}")))?;
    Ok(Incident {
        id,
        project_id,
        dedup_key,
        title,
        severity,
        status,
        escalation_policy,
        assignee,
        alerts,
        escalation,
        next_escalation_at,
        created_at,
        acknowledged_at,
        resolved_at,
    })
}

/// Filters for listing incidents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    /// Only open ones (triggered or acknowledged).
    pub open: bool,
    /// `Some(None)`: the instance's own; `Some(Some(id))`: one project's; `None`: all.
    pub project: Option<Option<i64>>,
    pub limit: i64,
}

impl Store {
    /// Opens an incident, or updates the alerts of the open one with the same key. Returns it
    /// and whether it is new.
    pub async fn open_or_join_incident(&self, new: &NewIncident<'_>) -> Result<(Incident, bool)> {
        let now = self.now_ms();
        let select = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE dedup_key = $1 AND status <> 'resolved' ORDER BY id DESC LIMIT 1"
        );
        let (id, created) = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let open: Option<IncidentRow> = sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
                .bind(new.dedup_key)
                .fetch_optional(&mut *tx)
                .await?;
            let result = match open {
                Some(row) => {
                    let id = row.0;
                    sqlx::query("UPDATE incidents SET alerts = $1 WHERE id = $2")
                        .bind(new.alerts)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "INSERT INTO incident_events (incident_id, at, kind, actor, detail) VALUES ($1, $2, 'alerts', 'alerting', $3)",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(new.alerts)
                    .execute(&mut *tx)
                    .await?;
                    (id, false)
                }
                None => {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO incidents (project_id, dedup_key, title, severity, status, escalation_policy, alerts, created_at)
                         VALUES ($1, $2, $3, $4, 'triggered', $5, $6, $7) RETURNING id",
                    )
                    .bind(new.project_id)
                    .bind(new.dedup_key)
                    .bind(new.title)
                    .bind(new.severity)
                    .bind(new.escalation_policy)
                    .bind(new.alerts)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO incident_events (incident_id, at, kind, actor, detail) VALUES ($1, $2, 'triggered', 'alerting', $3)",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(new.alerts)
                    .execute(&mut *tx)
                    .await?;
                    let event = Event::IncidentChanged {
                        project_id: new.project_id.unwrap_or(0),
                        incident_id: id,
                        status: IncidentStatus::Triggered,
                    };
                    record_event!(&mut *tx, now, &event);
                    (id, true)
                }
            };
            tx.commit().await?;
            result
        });
        if created {
            self.events_committed();
        }
        let incident = self.incident(id).await?.ok_or(StoreError::NotFound { what: "incident" })?;
        Ok((incident, created))
    }

    pub async fn incident(&self, id: i64) -> Result<Option<Incident>> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
        let row: Option<IncidentRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_optional(pool).await?
        });
        row.map(incident_from).transpose()
    }

    /// Incidents, newest first.
    pub async fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>> {
        let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1 = 1");
        if filter.open {
            sql.push_str(" AND status <> 'resolved'");
        }
        if filter.status.is_some() {
            sql.push_str(" AND status = $1");
        } else {
            sql.push_str(" AND $1 = $1");
        }
        match filter.project {
            None => sql.push_str(" AND $2 = $2"),
            Some(None) => sql.push_str(" AND project_id IS NULL AND $2 = $2"),
            Some(Some(_)) => sql.push_str(" AND project_id = $2"),
        }
        sql.push_str(" ORDER BY id DESC LIMIT $3");
        let status = filter.status.map(|s| s.as_str()).unwrap_or("");
        let project = filter.project.flatten().unwrap_or(0);
        let limit = if filter.limit <= 0 { 100 } else { filter.limit };
        let rows: Vec<IncidentRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(status)
                .bind(project)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(incident_from).collect()
    }

    /// Moves an incident to `status` from any state that may precede it (triggered →
    /// acknowledged; triggered or acknowledged → resolved), recording the timeline entry and
    /// the event in the same transaction. Returns false when it was not in such a state.
    pub async fn set_incident_status(
        &self,
        id: i64,
        status: IncidentStatus,
        actor: &str,
        detail: &str,
    ) -> Result<bool> {
        let now = self.now_ms();
        let (from, column) = match status {
            IncidentStatus::Acknowledged => ("('triggered')", "acknowledged_at"),
            IncidentStatus::Resolved => ("('triggered', 'acknowledged')", "resolved_at"),
            // Re-triggering is a new incident, never a step back.
            IncidentStatus::Triggered => return Ok(false),
        };
        let sql = format!(
            "UPDATE incidents SET status = $1, {column} = $2, next_escalation_at = NULL,
                 assignee = CASE WHEN $1 = 'acknowledged' THEN $3 ELSE assignee END
             WHERE id = $4 AND status IN {from}"
        );
        let changed = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(status.as_str())
                .bind(now)
                .bind(actor)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let changed = changed.rows_affected() == 1;
            if changed {
                sqlx::query(
                    "INSERT INTO incident_events (incident_id, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(now)
                .bind(status.as_str())
                .bind(actor)
                .bind(detail)
                .execute(&mut *tx)
                .await?;
                let project_id: Option<i64> = sqlx::query_scalar("SELECT project_id FROM incidents WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                let event = Event::IncidentChanged { project_id: project_id.unwrap_or(0), incident_id: id, status };
                record_event!(&mut *tx, now, &event);
            }
            tx.commit().await?;
            changed
        });
        if changed {
            self.events_committed();
        }
        Ok(changed)
    }

    /// Adds a step to an incident's timeline (a page sent, an escalation, a note).
    pub async fn add_incident_event(&self, incident_id: i64, kind: &str, actor: &str, detail: &str) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO incident_events (incident_id, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(incident_id)
            .bind(now)
            .bind(kind)
            .bind(actor)
            .bind(detail)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// An incident's timeline, oldest first.
    pub async fn incident_timeline(&self, incident_id: i64) -> Result<Vec<IncidentEvent>> {
        let rows: Vec<(i64, i64, i64, String, String, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, incident_id, at, kind, actor, detail FROM incident_events WHERE incident_id = $1 ORDER BY id",
            )
            .bind(incident_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, incident_id, at, kind, actor, detail)| IncidentEvent {
                id,
                incident_id,
                at,
                kind,
                actor,
                detail,
            })
            .collect())
    }

    /// Saves where an open incident's escalation stands, and when it next acts.
    pub async fn set_incident_escalation(&self, id: i64, state: &str, next_at: Option<i64>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE incidents SET escalation = $1, next_escalation_at = $2 WHERE id = $3 AND status = 'triggered'",
            )
            .bind(state)
            .bind(next_at)
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Triggered incidents whose escalation is due at `now` or before, oldest due first.
    pub async fn incidents_due(&self, now: i64, limit: i64) -> Result<Vec<Incident>> {
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE status = 'triggered' AND next_escalation_at IS NOT NULL AND next_escalation_at <= $1
             ORDER BY next_escalation_at LIMIT $2"
        );
        let rows: Vec<IncidentRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(now).bind(limit).fetch_all(pool).await?
        });
        rows.into_iter().map(incident_from).collect()
    }

    /// A subsystem's saved state document, if any.
    pub async fn subsystem_state(&self, name: &str) -> Result<Option<String>> {
        let value: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT value FROM subsystem_state WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(value)
    }

    /// Replaces a subsystem's state document.
    pub async fn save_subsystem_state(&self, name: &str, value: &str) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO subsystem_state (name, value, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(value)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Takes or renews the lease `name` for `holder` for `ttl_ms`: true when `holder` holds it
    /// now (it was free, expired, or already its own).
    pub async fn take_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = self.now_ms();
        let taken = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
            )
            .bind(name)
            .bind(holder)
            .bind(now + ttl_ms)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(taken == 1)
    }

    /// Marks a one-time nonce used: true the first time, false ever after.
    pub async fn use_nonce(&self, nonce: &str) -> Result<bool> {
        let now = self.now_ms();
        let inserted = with_pool!(self, |pool| {
            sqlx::query("INSERT INTO used_nonces (nonce, used_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING")
                .bind(nonce)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(inserted == 1)
    }
}
