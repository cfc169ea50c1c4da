//! Throw-away databases for tests: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL database on the server named by `OPSLOOP_TEST_POSTGRES_URL`.
//!
//! Public (behind the `test-support` feature) so the server's tests use the same helper.

use crate::{Location, Store};

pub const POSTGRES_URL_VAR: &str = "OPSLOOP_TEST_POSTGRES_URL";

pub struct TestDatabase {
    pub store: Store,
    /// Keeps the SQLite directory alive as long as the store.
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
    postgres_url: Option<String>,
}

impl TestDatabase {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(Location::SqliteFile(&dir.path().join("opsloop.db"))).await.expect("open sqlite");
        TestDatabase { store, _dir: Some(dir), postgres: None, postgres_url: None }
    }

    /// A fresh database on the test PostgreSQL server, or `None` (with a printed notice) when
    /// `OPSLOOP_TEST_POSTGRES_URL` is unset.
    pub async fn postgres() -> Option<Self> {
        let Ok(base_url) = std::env::var(POSTGRES_URL_VAR) else {
            opsloop_core::skip::skipped(&format!(
                "PostgreSQL store test, because {POSTGRES_URL_VAR} is unset (.ci/run sets it)"
            ));
            return None;
        };
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("randomness");
        let name = format!("opsloop_test_{}", hex::encode(random));
        let admin = sqlx::PgPool::connect(&base_url).await.expect("connect to OPSLOOP_TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let mut url = url::Url::parse(&base_url).expect("OPSLOOP_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        let store = Store::open(Location::Postgres(url.as_str())).await.expect("open postgres");
        Some(TestDatabase { store, _dir: None, postgres: Some((base_url, name)), postgres_url: Some(url.to_string()) })
    }

    /// The URL of this test database (PostgreSQL only; empty for SQLite).
    pub fn url(&self) -> &str {
        self.postgres_url.as_deref().unwrap_or_default()
    }

    pub async fn drop_database(self) {
        self.store.close().await;
        if let Some((base_url, name)) = &self.postgres
            && let Ok(admin) = sqlx::PgPool::connect(base_url).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }
}
