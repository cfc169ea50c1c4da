//! Schema migrations, one ordered list per backend, applied at start.
//!
//! Written here rather than with `sqlx::migrate!`: that macro needs sqlx's `macros`
//! feature, which compiles SQLite a second time, and we want a readiness check against
//! the exact list this binary carries.

use crate::{Backend, Result, Store, StoreError, with_pool};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sqlite: include_str!("../migrations/sqlite/0001_foundation.sql"),
        postgres: include_str!("../migrations/postgres/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "pipelines",
        sqlite: include_str!("../migrations/sqlite/0002_pipelines.sql"),
        postgres: include_str!("../migrations/postgres/0002_pipelines.sql"),
    },
    Migration {
        version: 3,
        name: "webhooks",
        sqlite: include_str!("../migrations/sqlite/0003_webhooks.sql"),
        postgres: include_str!("../migrations/postgres/0003_webhooks.sql"),
    },
    Migration {
        version: 4,
        name: "variables",
        sqlite: include_str!("../migrations/sqlite/0004_variables.sql"),
        postgres: include_str!("../migrations/postgres/0004_variables.sql"),
    },
    Migration {
        version: 5,
        name: "schedules",
        sqlite: include_str!("../migrations/sqlite/0005_schedules.sql"),
        postgres: include_str!("../migrations/postgres/0005_schedules.sql"),
    },
    Migration {
        version: 6,
        name: "polling",
        sqlite: include_str!("../migrations/sqlite/0006_polling.sql"),
        postgres: include_str!("../migrations/postgres/0006_polling.sql"),
    },
    Migration {
        version: 7,
        name: "pipeline requests",
        sqlite: include_str!("../migrations/sqlite/0007_pipeline_requests.sql"),
        postgres: include_str!("../migrations/postgres/0007_pipeline_requests.sql"),
    },
    Migration {
        version: 8,
        name: "test reports",
        sqlite: include_str!("../migrations/sqlite/0008_test_reports.sql"),
        postgres: include_str!("../migrations/postgres/0008_test_reports.sql"),
    },
    Migration {
        version: 9,
        name: "agents",
        sqlite: include_str!("../migrations/sqlite/0009_agents.sql"),
        postgres: include_str!("../migrations/postgres/0009_agents.sql"),
    },
    Migration {
        version: 10,
        name: "artifacts",
        sqlite: include_str!("../migrations/sqlite/0010_artifacts.sql"),
        postgres: include_str!("../migrations/postgres/0010_artifacts.sql"),
    },
    Migration {
        version: 11,
        name: "notifications",
        sqlite: include_str!("../migrations/sqlite/0011_notifications.sql"),
        postgres: include_str!("../migrations/postgres/0011_notifications.sql"),
    },
    Migration {
        version: 12,
        name: "instance variables",
        sqlite: include_str!("../migrations/sqlite/0012_instance_variables.sql"),
        postgres: include_str!("../migrations/postgres/0012_instance_variables.sql"),
    },
    Migration {
        version: 13,
        name: "ci settings",
        sqlite: include_str!("../migrations/sqlite/0013_ci_settings.sql"),
        postgres: include_str!("../migrations/postgres/0013_ci_settings.sql"),
    },
    Migration {
        version: 14,
        name: "pipeline graph",
        sqlite: include_str!("../migrations/sqlite/0014_pipeline_graph.sql"),
        postgres: include_str!("../migrations/postgres/0014_pipeline_graph.sql"),
    },
    Migration {
        version: 15,
        name: "compressed logs",
        sqlite: include_str!("../migrations/sqlite/0015_compressed_logs.sql"),
        postgres: include_str!("../migrations/postgres/0015_compressed_logs.sql"),
    },
    Migration {
        version: 16,
        name: "pipeline triggers",
        sqlite: include_str!("../migrations/sqlite/0016_pipeline_triggers.sql"),
        postgres: include_str!("../migrations/postgres/0016_pipeline_triggers.sql"),
    },
    Migration {
        version: 17,
        name: "deployments",
        sqlite: include_str!("../migrations/sqlite/0017_deployments.sql"),
        postgres: include_str!("../migrations/postgres/0017_deployments.sql"),
    },
    Migration {
        version: 18,
        name: "pipeline tokens",
        sqlite: include_str!("../migrations/sqlite/0018_pipeline_tokens.sql"),
        postgres: include_str!("../migrations/postgres/0018_pipeline_tokens.sql"),
    },
    Migration {
        version: 19,
        name: "applied manifests",
        sqlite: include_str!("../migrations/sqlite/0019_applied_manifests.sql"),
        postgres: include_str!("../migrations/postgres/0019_applied_manifests.sql"),
    },
    Migration {
        version: 20,
        name: "deployment approvals",
        sqlite: include_str!("../migrations/sqlite/0020_deployment_approvals.sql"),
        postgres: include_str!("../migrations/postgres/0020_deployment_approvals.sql"),
    },
    Migration {
        version: 21,
        name: "pipeline environments",
        sqlite: include_str!("../migrations/sqlite/0021_pipeline_environments.sql"),
        postgres: include_str!("../migrations/postgres/0021_pipeline_environments.sql"),
    },
    Migration {
        version: 22,
        name: "deployments by pipeline",
        sqlite: include_str!("../migrations/sqlite/0022_deployments_by_pipeline.sql"),
        postgres: include_str!("../migrations/postgres/0022_deployments_by_pipeline.sql"),
    },
    Migration {
        version: 23,
        name: "events",
        sqlite: include_str!("../migrations/sqlite/0023_events.sql"),
        postgres: include_str!("../migrations/postgres/0023_events.sql"),
    },
    Migration {
        version: 24,
        name: "alerting",
        sqlite: include_str!("../migrations/sqlite/0024_alerting.sql"),
        postgres: include_str!("../migrations/postgres/0024_alerting.sql"),
    },
    Migration {
        version: 25,
        name: "terraform",
        sqlite: include_str!("../migrations/sqlite/0025_terraform.sql"),
        postgres: include_str!("../migrations/postgres/0025_terraform.sql"),
    },
];

const LATEST: i64 = 25;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS opsloop_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

// An arbitrary constant naming opsloop's migration lock among other applications' advisory locks.
const PG_MIGRATION_LOCK: i64 = 0x006f_7073_6c6f_6f70;

pub(crate) async fn apply(store: &Store) -> Result<()> {
    let now = store.now_ms();
    match &store.backend {
        Backend::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            sqlx::raw_sql(CREATE_TABLE).execute(&mut *conn).await?;
            for migration in MIGRATIONS {
                // BEGIN IMMEDIATE takes the write lock first, so two processes opening one
                // file (the server and `opsloop admin`) cannot both apply a migration.
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                let outcome = apply_one_sqlite(&mut conn, migration, now).await;
                let finish = if outcome.is_ok() { "COMMIT" } else { "ROLLBACK" };
                sqlx::raw_sql(finish).execute(&mut *conn).await?;
                outcome?;
            }
        }
        Backend::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock($1)").bind(PG_MIGRATION_LOCK).execute(&mut *conn).await?;
            let outcome = apply_postgres(&mut conn, now).await;
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_MIGRATION_LOCK).execute(&mut *conn).await?;
            outcome?;
        }
    }
    Ok(())
}

async fn apply_one_sqlite(conn: &mut sqlx::SqliteConnection, migration: &Migration, now: i64) -> Result<()> {
    let applied: Option<i64> = sqlx::query_scalar("SELECT version FROM opsloop_migrations WHERE version = $1")
        .bind(migration.version)
        .fetch_optional(&mut *conn)
        .await?;
    if applied.is_some() {
        return Ok(());
    }
    let failed = |source| StoreError::Migration { version: migration.version, name: migration.name, source };
    sqlx::raw_sql(migration.sqlite).execute(&mut *conn).await.map_err(failed)?;
    sqlx::query("INSERT INTO opsloop_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(migration.version)
        .bind(migration.name)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(failed)?;
    tracing::info!(version = migration.version, name = migration.name, "applied migration");
    Ok(())
}

async fn apply_postgres(conn: &mut sqlx::PgConnection, now: i64) -> Result<()> {
    sqlx::raw_sql(CREATE_TABLE).execute(&mut *conn).await?;
    for migration in MIGRATIONS {
        let applied: Option<i64> = sqlx::query_scalar("SELECT version FROM opsloop_migrations WHERE version = $1")
            .bind(migration.version)
            .fetch_optional(&mut *conn)
            .await?;
        if applied.is_some() {
            continue;
        }
        let failed = |source| StoreError::Migration { version: migration.version, name: migration.name, source };
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(migration.postgres).execute(&mut *tx).await.map_err(failed)?;
        sqlx::query("INSERT INTO opsloop_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version = migration.version, name = migration.name, "applied migration");
    }
    Ok(())
}

pub(crate) async fn check_current(store: &Store) -> Result<()> {
    let found: Option<i64> = with_pool!(store, |pool| {
        sqlx::query_scalar("SELECT MAX(version) FROM opsloop_migrations").fetch_one(pool).await?
    });
    let found = found.unwrap_or(0);
    match found.cmp(&LATEST) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(StoreError::SchemaBehind { found, known: LATEST }),
        std::cmp::Ordering::Greater => Err(StoreError::SchemaTooNew { found, known: LATEST }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_list_is_ordered_and_latest_matches() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(LATEST));
    }
}
