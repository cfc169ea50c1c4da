//! Outgoing webhooks: each project's hooks, and a durable queue of deliveries. An event is
//! queued for every hook that wants it in one statement, so a crash after the event loses no
//! delivery; a delivery is claimed by moving its next attempt forward with a compare-and-set,
//! so two servers never send it at once.

use crate::audit::record_audit;
use crate::{Actor, Result, Store, with_pool};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationHook {
    pub id: i64,
    pub project_id: i64,
    pub url: String,
    /// The HMAC key, encrypted (the vault's business).
    pub secret: String,
    pub events: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub hook_id: i64,
    pub event: String,
    pub payload: String,
    /// pending, delivered or failed.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub response_status: Option<i64>,
    pub last_error: String,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

type HookRow = (i64, i64, String, String, String, String, i64);
type DeliveryRow = (i64, i64, String, String, String, i64, i64, Option<i64>, String, i64, Option<i64>);

fn hook_from((id, project_id, url, secret, events, created_by, created_at): HookRow) -> NotificationHook {
    let events = events.split(',').filter(|e| !e.is_empty()).map(str::to_owned).collect();
    NotificationHook { id, project_id, url, secret, events, created_by, created_at }
}

fn delivery_from(row: DeliveryRow) -> Delivery {
    let (
        id,
        hook_id,
        event,
        payload,
        state,
        attempts,
        next_attempt_at,
        response_status,
        last_error,
        created_at,
        delivered_at,
    ) = row;
    Delivery {
        id,
        hook_id,
        event,
        payload,
        state,
        attempts,
        next_attempt_at,
        response_status,
        last_error,
        created_at,
        delivered_at,
    }
}

const HOOK_COLUMNS: &str = "id, project_id, url, secret, events, created_by, created_at";
const DELIVERY_COLUMNS: &str = "id, hook_id, event, payload, state, attempts, next_attempt_at, response_status, \
     last_error, created_at, delivered_at";

impl Store {
    pub async fn create_notification_hook(
        &self,
        project: &crate::Project,
        url: &str,
        secret: &str,
        events: &[String],
        actor: Actor<'_>,
    ) -> Result<NotificationHook> {
        let now = self.now_ms();
        let events = events.join(",");
        let sql = format!(
            "INSERT INTO notification_hooks (project_id, url, secret, events, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {HOOK_COLUMNS}"
        );
        let row: HookRow = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let row: HookRow = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(project.id)
                .bind(url)
                .bind(secret)
                .bind(&events)
                .bind(actor.name)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            record_audit!(&mut *tx, now, actor, "notification_hook.create", &project.name, url);
            tx.commit().await?;
            row
        });
        Ok(hook_from(row))
    }

    pub async fn notification_hooks(&self, project_id: i64) -> Result<Vec<NotificationHook>> {
        let sql = format!("SELECT {HOOK_COLUMNS} FROM notification_hooks WHERE project_id = $1 ORDER BY id");
        let rows: Vec<HookRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(project_id).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(hook_from).collect())
    }

    pub async fn notification_hook(&self, hook_id: i64) -> Result<Option<NotificationHook>> {
        let sql = format!("SELECT {HOOK_COLUMNS} FROM notification_hooks WHERE id = $1");
        let row: Option<HookRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(hook_id).fetch_optional(pool).await?
        });
        Ok(row.map(hook_from))
    }

    /// Deletes a hook and its deliveries; `false` when the project has no such hook.
    pub async fn delete_notification_hook(
        &self,
        project: &crate::Project,
        hook_id: i64,
        actor: Actor<'_>,
    ) -> Result<bool> {
        let now = self.now_ms();
        Ok(with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let url: Option<String> =
                sqlx::query_scalar("DELETE FROM notification_hooks WHERE id = $1 AND project_id = $2 RETURNING url")
                    .bind(hook_id)
                    .bind(project.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(url) = &url {
                record_audit!(&mut *tx, now, actor, "notification_hook.delete", &project.name, url);
            }
            tx.commit().await?;
            url.is_some()
        }))
    }

    /// Queues `payload` for every hook of the project that wants `event`; returns how many.
    pub async fn queue_deliveries(&self, project_id: i64, event: &str, payload: &str) -> Result<u64> {
        let now = self.now_ms();
        // `events` is a short comma-separated list, matched with LIKE on both backends.
        Ok(with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO hook_deliveries (hook_id, event, payload, state, next_attempt_at, created_at)
                 SELECT id, $1, $2, 'pending', $3, $3 FROM notification_hooks
                 WHERE project_id = $4 AND (',' || events || ',') LIKE $5",
            )
            .bind(event)
            .bind(payload)
            .bind(now)
            .bind(project_id)
            .bind(format!("%,{event},%"))
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Claims up to `limit` deliveries due at `now`: each one's next attempt moves to
    /// `now + lease_ms`, so a crash mid-send retries it after the lease instead of losing it.
    pub async fn claim_due_deliveries(&self, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM hook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2"
        );
        let due: Vec<DeliveryRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(now).bind(limit).fetch_all(pool).await?
        });
        let mut claimed = Vec::new();
        for row in due {
            let delivery = delivery_from(row);
            let won = with_pool!(self, |pool| {
                sqlx::query(
                    "UPDATE hook_deliveries SET next_attempt_at = $1
                     WHERE id = $2 AND state = 'pending' AND next_attempt_at = $3",
                )
                .bind(now + lease_ms)
                .bind(delivery.id)
                .bind(delivery.next_attempt_at)
                .execute(pool)
                .await?
                .rows_affected()
            });
            if won == 1 {
                claimed.push(delivery);
            }
        }
        Ok(claimed)
    }

    /// Records one attempt: delivered, or failed with the next attempt at `retry_at` (`None`:
    /// no attempts left).
    pub async fn record_delivery_attempt(
        &self,
        delivery_id: i64,
        delivered: bool,
        response_status: Option<i64>,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let now = self.now_ms();
        let state = match (delivered, retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE hook_deliveries SET state = $1, attempts = attempts + 1, response_status = $2, last_error = $3,
                   next_attempt_at = $4, delivered_at = $5 WHERE id = $6",
            )
            .bind(state)
            .bind(response_status)
            .bind(error)
            .bind(retry_at.unwrap_or(now))
            .bind(delivered.then_some(now))
            .bind(delivery_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A hook's latest deliveries, newest first.
    pub async fn deliveries(&self, hook_id: i64, limit: i64) -> Result<Vec<Delivery>> {
        let sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM hook_deliveries WHERE hook_id = $1 ORDER BY id DESC LIMIT $2");
        let rows: Vec<DeliveryRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(hook_id).bind(limit).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(delivery_from).collect())
    }
}
