//! CI/CD variables of a project or of the whole instance. This module only ever sees ciphertext: encryption happens in
//! the server with `opsloop-secure`, so a database dump holds no secret.

use crate::audit::record_audit;
use crate::{Actor, Project, Result, Store, StoreError, with_pool};

#[derive(Debug, Clone)]
pub struct StoredVariable {
    pub key: String,
    pub environment_scope: String,
    pub ciphertext: String,
    pub masked: bool,
    pub protected: bool,
    pub file: bool,
    pub updated_at: i64,
}

type VariableRow = (String, String, String, bool, bool, bool, i64);

impl Store {
    /// Creates or replaces a variable (per key and environment scope).
    pub async fn set_variable(&self, project: &Project, variable: &StoredVariable, actor: Actor<'_>) -> Result<()> {
        let now = self.now_ms();
        let detail = format!(
            "key={} scope={} masked={} protected={} file={}",
            variable.key, variable.environment_scope, variable.masked, variable.protected, variable.file
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO project_variables (project_id, key, environment_scope, ciphertext, masked, protected, file, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (project_id, key, environment_scope) DO UPDATE SET
                    ciphertext = excluded.ciphertext, masked = excluded.masked, protected = excluded.protected,
                    file = excluded.file, updated_at = excluded.updated_at",
            )
            .bind(project.id)
            .bind(&variable.key)
            .bind(&variable.environment_scope)
            .bind(&variable.ciphertext)
            .bind(variable.masked)
            .bind(variable.protected)
            .bind(variable.file)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            record_audit!(&mut *tx, now, actor, "variable.set", &project.name, &detail);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn delete_variable(&self, project: &Project, key: &str, scope: &str, actor: Actor<'_>) -> Result<()> {
        let now = self.now_ms();
        let detail = format!("key={key} scope={scope}");
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query(
                "DELETE FROM project_variables WHERE project_id = $1 AND key = $2 AND environment_scope = $3",
            )
            .bind(project.id)
            .bind(key)
            .bind(scope)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if removed == 0 {
                return Err(StoreError::NotFound { what: "variable" });
            }
            record_audit!(&mut *tx, now, actor, "variable.delete", &project.name, &detail);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn list_variables(&self, project_id: i64) -> Result<Vec<StoredVariable>> {
        let rows: Vec<VariableRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, VariableRow>(
                "SELECT key, environment_scope, ciphertext, masked, protected, file, updated_at
                 FROM project_variables WHERE project_id = $1 ORDER BY key, environment_scope",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(variable_from).collect())
    }

    /// Creates or replaces an instance-wide variable (per key and environment scope).
    pub async fn set_instance_variable(&self, variable: &StoredVariable, actor: Actor<'_>) -> Result<()> {
        let now = self.now_ms();
        let detail = format!(
            "key={} scope={} masked={} protected={} file={}",
            variable.key, variable.environment_scope, variable.masked, variable.protected, variable.file
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO instance_variables (key, environment_scope, ciphertext, masked, protected, file, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (key, environment_scope) DO UPDATE SET
                    ciphertext = excluded.ciphertext, masked = excluded.masked, protected = excluded.protected,
                    file = excluded.file, updated_at = excluded.updated_at",
            )
            .bind(&variable.key)
            .bind(&variable.environment_scope)
            .bind(&variable.ciphertext)
            .bind(variable.masked)
            .bind(variable.protected)
            .bind(variable.file)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            record_audit!(&mut *tx, now, actor, "instance_variable.set", "instance", &detail);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn delete_instance_variable(&self, key: &str, scope: &str, actor: Actor<'_>) -> Result<()> {
        let now = self.now_ms();
        let detail = format!("key={key} scope={scope}");
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query("DELETE FROM instance_variables WHERE key = $1 AND environment_scope = $2")
                .bind(key)
                .bind(scope)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if removed == 0 {
                return Err(StoreError::NotFound { what: "variable" });
            }
            record_audit!(&mut *tx, now, actor, "instance_variable.delete", "instance", &detail);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn list_instance_variables(&self) -> Result<Vec<StoredVariable>> {
        let rows: Vec<VariableRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, VariableRow>(
                "SELECT key, environment_scope, ciphertext, masked, protected, file, updated_at
                 FROM instance_variables ORDER BY key, environment_scope",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(variable_from).collect())
    }
}

fn variable_from(
    (key, environment_scope, ciphertext, masked, protected, file, updated_at): VariableRow,
) -> StoredVariable {
    StoredVariable { key, environment_scope, ciphertext, masked, protected, file, updated_at }
}
