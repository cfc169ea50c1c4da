//! The append-only audit log: who changed what, when, and from where.
//!
//! Append-only is enforced by the database itself (triggers on both backends), not only by
//! this module offering no update or delete.

use crate::{Page, PageRequest, Result, Store, with_pool};

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub source_ip: String,
}

/// Who makes a change, recorded with it in the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub source_ip: &'a str,
}

impl Actor<'static> {
    /// Changes made by opsloop itself (first start, the demo).
    pub const SYSTEM: Actor<'static> = Actor { name: "system", source_ip: "" };
}

#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub actor: Actor<'a>,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: &'a str,
}

/// Appends an audit record on `$conn`, normally the transaction that makes the change,
/// so a change and its record commit or vanish together.
macro_rules! record_audit {
    ($conn:expr, $now:expr, $actor:expr, $action:expr, $target:expr, $detail:expr) => {{
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail, source_ip) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($now)
        .bind($actor.name)
        .bind($action)
        .bind($target)
        .bind($detail)
        .bind($actor.source_ip)
        .execute($conn)
        .await?;
    }};
}
pub(crate) use record_audit;

type AuditRow = (i64, i64, String, String, String, String, String);

impl From<AuditRow> for AuditEntry {
    fn from((id, at, actor, action, target, detail, source_ip): AuditRow) -> Self {
        AuditEntry { id, at, actor, action, target, detail, source_ip }
    }
}

impl Store {
    pub async fn append_audit(&self, entry: NewAuditEntry<'_>) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| record_audit!(pool, now, entry.actor, entry.action, entry.target, entry.detail));
        Ok(())
    }

    /// Newest first; the cursor is the id to continue below.
    pub async fn list_audit(&self, page: &PageRequest) -> Result<Page<AuditEntry>> {
        let before = page.after.as_deref().and_then(|cursor| cursor.parse::<i64>().ok()).unwrap_or(i64::MAX);
        let rows: Vec<AuditRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, AuditRow>(
                "SELECT id, at, actor, action, target, detail, source_ip FROM audit_log
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(before)
            .bind(page.fetch_limit())
            .fetch_all(pool)
            .await?
        });
        let rows: Vec<AuditEntry> = rows.into_iter().map(AuditEntry::from).collect();
        Ok(Page::from_rows(rows, page, |entry| entry.id.to_string()))
    }
}
