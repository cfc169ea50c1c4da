//! The store's errors, split by whose fault they are so the API can map them to statuses.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("a project keeps at least one owner: make someone else owner first")]
    LastOwner,
    #[error("cannot connect to the database at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database schema is at version {found}, newer than this opsloop knows ({known}); upgrade opsloop")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the database schema is at version {found}; migrations up to {known} are not applied")]
    SchemaBehind { found: i64, known: i64 },
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Maps a unique-constraint violation to a user-facing conflict; other errors pass through.
    pub(crate) fn conflict_on_unique(error: sqlx::Error, message: impl FnOnce() -> String) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
            _ => StoreError::Database(error),
        }
    }
}
