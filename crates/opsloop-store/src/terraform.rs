//! Terraform states kept for Terraform's `http` backend: per project and name, every version
//! written (as vault ciphertext: this module never sees a state's plaintext), and at most one
//! lock per state.
//!
//! What a write must satisfy, in the transaction that makes it:
//! - while the state is locked, the writer names the held lock's ID (Terraform sends `?ID=`);
//! - the lineage equals the latest version's (a different lineage is another state that
//!   would replace this one; Terraform refuses the same on `state push` without `-force`);
//! - the serial is above the latest's, or equal to it with the very same body (a retried
//!   write, answered as done without a new version). A lower serial, or the same serial with
//!   another body, is a stale writer that would silently undo someone's apply.
//!
//! The first version of a state may have any serial and lineage. Taking a lock is a
//! compare-and-set on the lock table's primary key, so of concurrent lockers exactly one wins.

use crate::audit::record_audit;
use crate::{Actor, Project, Result, Store, StoreError, with_pool};

/// One version of a state, without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerraformVersion {
    pub serial: i64,
    pub lineage: String,
    /// SHA-256 of the plaintext, hex.
    pub digest: String,
    /// Bytes of the plaintext.
    pub size: i64,
    pub created_by: String,
    pub pipeline_id: Option<i64>,
    pub job_id: Option<i64>,
    pub created_at: i64,
}

/// A held lock: Terraform's lock info as sent, and who in opsloop took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerraformLock {
    pub lock_id: String,
    /// Terraform's `Who` (user@host).
    pub who: String,
    /// Terraform's `Operation` (`OperationTypeApply`, …).
    pub operation: String,
    /// The whole lock info JSON, answered to the next locker as Terraform expects.
    pub info: String,
    /// The opsloop user whose credential took the lock.
    pub locked_by: String,
    pub created_at: i64,
}

/// A state in a project's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerraformStateSummary {
    pub name: String,
    pub created_at: i64,
    pub latest: Option<TerraformVersion>,
    pub lock: Option<TerraformLock>,
}

/// A version to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTerraformVersion<'a> {
    pub serial: i64,
    pub lineage: &'a str,
    pub ciphertext: &'a str,
    pub digest: &'a str,
    pub size: i64,
    pub created_by: &'a str,
    pub pipeline_id: Option<i64>,
    pub job_id: Option<i64>,
}

/// A lock to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTerraformLock<'a> {
    pub lock_id: &'a str,
    pub who: &'a str,
    pub operation: &'a str,
    pub info: &'a str,
    pub locked_by: &'a str,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    /// A new version.
    Written,
    /// The latest version already is this body at this serial (a retry).
    Unchanged,
    /// The state is locked and the writer did not name this lock.
    Locked(TerraformLock),
    /// The serial is below the latest, or equal to it with another body.
    StaleSerial { latest: i64 },
    /// The lineage is not the latest version's.
    OtherLineage { latest: String },
}

/// How taking a lock ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired,
    /// Someone else holds it: their lock.
    Held(TerraformLock),
}

/// How releasing a lock ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockOutcome {
    Released,
    /// Nothing was locked (Terraform's retried unlock finds it so).
    NotLocked,
    /// Another lock is held: its holder's.
    Held(TerraformLock),
}

type VersionRow = (i64, String, String, i64, String, Option<i64>, Option<i64>, i64);
type LockRow = (String, String, String, String, String, i64);

const VERSION_COLUMNS: &str =
    "v.serial, v.lineage, v.digest, v.size, v.created_by, v.pipeline_id, v.job_id, v.created_at";

fn version_from(
    (serial, lineage, digest, size, created_by, pipeline_id, job_id, created_at): VersionRow,
) -> TerraformVersion {
    TerraformVersion { serial, lineage, digest, size, created_by, pipeline_id, job_id, created_at }
}

fn lock_from((lock_id, who, operation, info, locked_by, created_at): LockRow) -> TerraformLock {
    TerraformLock { lock_id, who, operation, info, locked_by, created_at }
}

/// Ensures the state row exists and returns its id. A write, first in its transaction, so
/// SQLite takes the write lock before reading anything (and waits for it, not fails).
macro_rules! ensure_state {
    ($conn:expr, $project_id:expr, $name:expr, $now:expr) => {{
        sqlx::query(
            "INSERT INTO terraform_states (project_id, name, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (project_id, name) DO NOTHING",
        )
        .bind($project_id)
        .bind($name)
        .bind($now)
        .execute(&mut *$conn)
        .await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM terraform_states WHERE project_id = $1 AND name = $2")
            .bind($project_id)
            .bind($name)
            .fetch_one(&mut *$conn)
            .await?;
        id
    }};
}

macro_rules! held_lock {
    ($conn:expr, $state_id:expr) => {{
        let row: Option<LockRow> = sqlx::query_as(
            "SELECT lock_id, who, operation, info, locked_by, created_at FROM terraform_locks WHERE state_id = $1",
        )
        .bind($state_id)
        .fetch_optional(&mut *$conn)
        .await?;
        row.map(lock_from)
    }};
}

impl Store {
    async fn terraform_state_id(&self, project_id: i64, name: &str) -> Result<Option<i64>> {
        let id: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT id FROM terraform_states WHERE project_id = $1 AND name = $2")
                .bind(project_id)
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(id)
    }

    /// The project's states by name, each with its latest version and lock.
    pub async fn terraform_states(&self, project_id: i64) -> Result<Vec<TerraformStateSummary>> {
        let rows: Vec<(i64, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT id, name, created_at FROM terraform_states WHERE project_id = $1 ORDER BY name")
                .bind(project_id)
                .fetch_all(pool)
                .await?
        });
        let mut states = Vec::with_capacity(rows.len());
        for (id, name, created_at) in rows {
            let latest = self.terraform_latest_by_id(id).await?.map(|(version, _)| version);
            let lock = self.terraform_lock_by_id(id).await?;
            states.push(TerraformStateSummary { name, created_at, latest, lock });
        }
        Ok(states)
    }

    async fn terraform_latest_by_id(&self, state_id: i64) -> Result<Option<(TerraformVersion, String)>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS}, v.ciphertext FROM terraform_state_versions v
             WHERE v.state_id = $1 AND $2 = $2 ORDER BY v.serial DESC LIMIT 1"
        );
        self.terraform_version_query(sql, state_id, 0).await
    }

    async fn terraform_lock_by_id(&self, state_id: i64) -> Result<Option<TerraformLock>> {
        let row: Option<LockRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT lock_id, who, operation, info, locked_by, created_at FROM terraform_locks WHERE state_id = $1",
            )
            .bind(state_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(lock_from))
    }

    async fn terraform_version_query(
        &self,
        sql: String,
        state_id: i64,
        serial: i64,
    ) -> Result<Option<(TerraformVersion, String)>> {
        type Row = (i64, String, String, i64, String, Option<i64>, Option<i64>, i64, String);
        let row: Option<Row> = with_pool!(self, |pool| {
            // The latest-version query compares `$2` with itself: PostgreSQL refuses a bound
            // parameter a statement does not use.
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(state_id).bind(serial).fetch_optional(pool).await?
        });
        Ok(row.map(|(serial, lineage, digest, size, created_by, pipeline_id, job_id, created_at, ciphertext)| {
            (version_from((serial, lineage, digest, size, created_by, pipeline_id, job_id, created_at)), ciphertext)
        }))
    }

    /// The latest version of a state and its ciphertext; `None` when there is none yet.
    pub async fn terraform_latest(&self, project_id: i64, name: &str) -> Result<Option<(TerraformVersion, String)>> {
        match self.terraform_state_id(project_id, name).await? {
            Some(id) => self.terraform_latest_by_id(id).await,
            None => Ok(None),
        }
    }

    /// One version of a state by serial, with its ciphertext.
    pub async fn terraform_version(
        &self,
        project_id: i64,
        name: &str,
        serial: i64,
    ) -> Result<Option<(TerraformVersion, String)>> {
        let Some(id) = self.terraform_state_id(project_id, name).await? else { return Ok(None) };
        let sql = format!(
            "SELECT {VERSION_COLUMNS}, v.ciphertext FROM terraform_state_versions v
             WHERE v.state_id = $1 AND v.serial = $2"
        );
        self.terraform_version_query(sql, id, serial).await
    }

    /// Every version of a state, newest first; `None` when the state does not exist.
    pub async fn terraform_versions(&self, project_id: i64, name: &str) -> Result<Option<Vec<TerraformVersion>>> {
        let Some(id) = self.terraform_state_id(project_id, name).await? else { return Ok(None) };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM terraform_state_versions v WHERE v.state_id = $1 ORDER BY v.serial DESC"
        );
        let rows: Vec<VersionRow> = with_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_all(pool).await?
        });
        Ok(Some(rows.into_iter().map(version_from).collect()))
    }

    /// The lock held on a state, if any.
    pub async fn terraform_lock(&self, project_id: i64, name: &str) -> Result<Option<TerraformLock>> {
        match self.terraform_state_id(project_id, name).await? {
            Some(id) => self.terraform_lock_by_id(id).await,
            None => Ok(None),
        }
    }

    /// Writes a new version under the rules in this module's documentation. `lock_id` is the
    /// lock the writer says it holds (`?ID=`). A write naming a lock when none is held is
    /// accepted: the lock was force-released under a running apply, and refusing would cost
    /// that apply its state while the serial rule still stops it from undoing a newer write.
    pub async fn put_terraform_state(
        &self,
        project_id: i64,
        name: &str,
        lock_id: Option<&str>,
        version: &NewTerraformVersion<'_>,
    ) -> Result<StateWrite> {
        let now = self.now_ms();
        let latest_sql = format!(
            "SELECT {VERSION_COLUMNS} FROM terraform_state_versions v WHERE v.state_id = $1 ORDER BY v.serial DESC LIMIT 1"
        );
        let outcome = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let state_id = ensure_state!(tx, project_id, name, now);
            if let Some(lock) = held_lock!(tx, state_id)
                && lock_id != Some(lock.lock_id.as_str())
            {
                return Ok(StateWrite::Locked(lock));
            }
            let latest: Option<VersionRow> =
                sqlx::query_as(sqlx::AssertSqlSafe(latest_sql.clone())).bind(state_id).fetch_optional(&mut *tx).await?;
            if let Some(latest) = latest.map(version_from) {
                if latest.lineage != version.lineage {
                    return Ok(StateWrite::OtherLineage { latest: latest.lineage });
                }
                if version.serial == latest.serial && version.digest == latest.digest {
                    return Ok(StateWrite::Unchanged);
                }
                if version.serial <= latest.serial {
                    return Ok(StateWrite::StaleSerial { latest: latest.serial });
                }
            }
            let inserted = sqlx::query(
                "INSERT INTO terraform_state_versions
                    (state_id, serial, lineage, ciphertext, digest, size, created_by, pipeline_id, job_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(state_id)
            .bind(version.serial)
            .bind(version.lineage)
            .bind(version.ciphertext)
            .bind(version.digest)
            .bind(version.size)
            .bind(version.created_by)
            .bind(version.pipeline_id)
            .bind(version.job_id)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                // A concurrent writer took this serial first (PostgreSQL; SQLite serialises).
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    return Ok(StateWrite::StaleSerial { latest: version.serial });
                }
                Err(error) => return Err(StoreError::Database(error)),
            }
            tx.commit().await?;
            StateWrite::Written
        });
        Ok(outcome)
    }

    /// Takes a state's lock (creating the state if needed). Taking it again with the same lock
    /// ID succeeds, so a retried request after a lost answer does not lock its own holder out.
    pub async fn lock_terraform_state(
        &self,
        project_id: i64,
        name: &str,
        lock: &NewTerraformLock<'_>,
    ) -> Result<LockOutcome> {
        let now = self.now_ms();
        let outcome = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let state_id = ensure_state!(tx, project_id, name, now);
            let taken = sqlx::query(
                "INSERT INTO terraform_locks (state_id, lock_id, who, operation, info, locked_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (state_id) DO NOTHING",
            )
            .bind(state_id)
            .bind(lock.lock_id)
            .bind(lock.who)
            .bind(lock.operation)
            .bind(lock.info)
            .bind(lock.locked_by)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let outcome = if taken == 1 {
                LockOutcome::Acquired
            } else {
                match held_lock!(tx, state_id) {
                    Some(held) if held.lock_id == lock.lock_id => LockOutcome::Acquired,
                    Some(held) => LockOutcome::Held(held),
                    // Released between the two statements (PostgreSQL): still not ours; the
                    // caller retries as Terraform does on a held lock.
                    None => return Err(StoreError::Conflict("the lock changed hands; try again".to_owned())),
                }
            };
            tx.commit().await?;
            outcome
        });
        Ok(outcome)
    }

    /// Releases the lock `lock_id` holds.
    pub async fn unlock_terraform_state(&self, project_id: i64, name: &str, lock_id: &str) -> Result<UnlockOutcome> {
        let Some(state_id) = self.terraform_state_id(project_id, name).await? else {
            return Ok(UnlockOutcome::NotLocked);
        };
        let released = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM terraform_locks WHERE state_id = $1 AND lock_id = $2")
                .bind(state_id)
                .bind(lock_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if released == 1 {
            return Ok(UnlockOutcome::Released);
        }
        Ok(match self.terraform_lock_by_id(state_id).await? {
            Some(held) => UnlockOutcome::Held(held),
            None => UnlockOutcome::NotLocked,
        })
    }

    /// Releases whatever lock a state holds, recording who did it in the audit log (with the
    /// lock it broke). Returns the lock released, if there was one.
    pub async fn force_unlock_terraform_state(
        &self,
        project: &Project,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Option<TerraformLock>> {
        let now = self.now_ms();
        let Some(state_id) = self.terraform_state_id(project.id, name).await? else { return Ok(None) };
        let released = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let held: Option<LockRow> = sqlx::query_as(
                "DELETE FROM terraform_locks WHERE state_id = $1
                 RETURNING lock_id, who, operation, info, locked_by, created_at",
            )
            .bind(state_id)
            .fetch_optional(&mut *tx)
            .await?;
            let held = held.map(lock_from);
            if let Some(lock) = &held {
                let detail = format!(
                    "state={name} lock={} who={} locked_by={} operation={}",
                    lock.lock_id, lock.who, lock.locked_by, lock.operation
                );
                record_audit!(&mut *tx, now, actor, "terraform.force_unlock", &project.name, &detail);
            }
            tx.commit().await?;
            held
        });
        Ok(released)
    }

    /// Deletes a state with every version, audited. Refused (with the lock) while locked.
    pub async fn delete_terraform_state(
        &self,
        project: &Project,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Option<TerraformLock>> {
        let now = self.now_ms();
        let held = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // The delete comes first so SQLite takes its write lock before the lock is read.
            let deleted = sqlx::query(
                "DELETE FROM terraform_states WHERE project_id = $1 AND name = $2
                 AND NOT EXISTS (SELECT 1 FROM terraform_locks l WHERE l.state_id = terraform_states.id)",
            )
            .bind(project.id)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if deleted == 0 {
                let state_id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM terraform_states WHERE project_id = $1 AND name = $2")
                        .bind(project.id)
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(state_id) = state_id else { return Err(StoreError::NotFound { what: "terraform state" }) };
                return match held_lock!(tx, state_id) {
                    Some(lock) => Ok(Some(lock)),
                    // Unlocked between the two statements: the caller may simply ask again.
                    None => Err(StoreError::Conflict("the state's lock changed; try again".to_owned())),
                };
            }
            record_audit!(&mut *tx, now, actor, "terraform.delete", &project.name, &format!("state={name}"));
            tx.commit().await?;
            None
        });
        Ok(held)
    }
}
