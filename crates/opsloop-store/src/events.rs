//! The event log (`opsloop_core::Event`): appended inside the transaction of the change that
//! caused it, so an event exists exactly when its change does (a crash loses neither alone);
//! read by subscribers after their own cursor, which they move only once they handled an event.

use opsloop_core::{Event, RecordedEvent};

use crate::{Result, Store, StoreError, with_pool};

/// Appends `$event` to the log on `$conn` (a transaction's connection). The caller commits and
/// then calls `Store::events_committed`.
macro_rules! record_event {
    ($conn:expr, $now:expr, $event:expr) => {{
        let event: &opsloop_core::Event = $event;
        let payload = serde_json::to_string(event).map_err(|e| crate::StoreError::Corrupt(e.to_string()))?;
        sqlx::query("INSERT INTO events (at, kind, project_id, payload) VALUES ($1, $2, $3, $4)")
            .bind($now)
            .bind(event.kind())
            .bind(event.project_id())
            .bind(payload)
            .execute($conn)
            .await?;
    }};
}
pub(crate) use record_event;

impl Store {
    /// Wakes the subscribers waiting in this process; call after committing recorded events.
    pub(crate) fn events_committed(&self) {
        self.events_recorded.notify_waiters();
    }

    /// Resolves when this process next commits an event (or never: callers bound the wait).
    /// Listens from the moment it is called, not from its first poll, so an event committed
    /// between a read of the log and the wait is not slept through.
    pub fn event_recorded(&self) -> tokio::sync::futures::Notified<'_> {
        self.events_recorded.notified()
    }

    /// Up to `limit` events after `after_id`, oldest first.
    pub async fn events_after(&self, after_id: i64, limit: i64) -> Result<Vec<RecordedEvent>> {
        let rows: Vec<(i64, i64, String)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT id, at, payload FROM events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after_id)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(id, at, payload)| {
                let event = serde_json::from_str::<Event>(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))?;
                Ok(RecordedEvent { id, at, event })
            })
            .collect()
    }

    /// The newest event's id (0 when the log is empty).
    pub async fn last_event_id(&self) -> Result<i64> {
        let id: Option<i64> =
            with_pool!(self, |pool| { sqlx::query_scalar("SELECT MAX(id) FROM events").fetch_one(pool).await? });
        Ok(id.unwrap_or(0))
    }

    /// Where `subscriber` stands in the log. A subscriber seen for the first time starts at the
    /// end: it reacts to what happens from now on, not to the whole history.
    pub async fn event_cursor(&self, subscriber: &str) -> Result<i64> {
        let last = self.last_event_id().await?;
        let id: i64 = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO event_cursors (subscriber, last_id) VALUES ($1, $2) ON CONFLICT (subscriber) DO NOTHING",
            )
            .bind(subscriber)
            .bind(last)
            .execute(pool)
            .await?;
            sqlx::query_scalar("SELECT last_id FROM event_cursors WHERE subscriber = $1")
                .bind(subscriber)
                .fetch_one(pool)
                .await?
        });
        Ok(id)
    }

    /// `subscriber` handled every event up to `id`.
    pub async fn advance_event_cursor(&self, subscriber: &str, id: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE event_cursors SET last_id = $1 WHERE subscriber = $2 AND last_id < $1")
                .bind(id)
                .bind(subscriber)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes events recorded before `before_ms` that every subscriber has handled.
    pub async fn prune_events(&self, before_ms: i64) -> Result<u64> {
        let deleted = with_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM events WHERE at < $1
                   AND id <= COALESCE((SELECT MIN(last_id) FROM event_cursors), 0)",
            )
            .bind(before_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(deleted)
    }
}
