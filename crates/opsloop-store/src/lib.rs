//! opsloop's metadata database: SQLite (the embedded default) and PostgreSQL (for scale-out)
//! behind one API.
//!
//! The rest of opsloop calls typed methods on [`Store`]; no SQL leaves this crate. Each
//! domain's tables live in their own module. Queries are written once in the SQL both
//! backends accept (`$1` placeholders work on SQLite too) and dispatched to the right pool
//! by [`with_pool!`], so each method is compiled for both backends and tested on both.

mod agents;
mod artifacts;
mod audit;
mod ci;
mod deployments;
mod error;
mod events;
mod incidents;
mod migrate;
mod notifications;
mod polling;
mod projects;
mod schedules;
mod terraform;
mod triggers;
mod users;
mod variables;

#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use opsloop_core::{Clock, SystemClock};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use agents::{Agent, ClaimedAgentJob};
pub use artifacts::JobArtifacts;
pub use audit::{Actor, AuditEntry, NewAuditEntry};
pub use ci::{Job, Pipeline, PipelineRequest, TestReport};
pub use deployments::{Deployment, NewDeployment, Release, ServingRelease};
pub use error::StoreError;
pub use incidents::{Incident, IncidentEvent, IncidentFilter, NewIncident};
pub use notifications::{Delivery, NotificationHook};
pub use polling::CiSettings;
pub use projects::{Member, NewProject, Project, ProjectUpdate};
pub use schedules::Schedule;
pub use terraform::{
    LockOutcome, NewTerraformLock, NewTerraformVersion, StateWrite, TerraformLock, TerraformStateSummary,
    TerraformVersion, UnlockOutcome,
};
pub use triggers::{PipelineToken, PipelineTrigger};
pub use users::{ApiToken, NewUser, Session, User};
pub use variables::StoredVariable;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs `$body` with `$pool` bound to the concrete pool of whichever backend is open.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite($pool) => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which kind of database is behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }
}

/// A keyset page request: items strictly after `after` in the list's order.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

impl PageRequest {
    pub const MAX_LIMIT: u32 = 500;

    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }

    /// The limit clamped to `1..=MAX_LIMIT`, plus one extra row to learn whether a next page exists.
    fn fetch_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT)) + 1
    }
}

/// One page of a list, with the cursor for the next one (if any).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    fn from_rows(mut rows: Vec<T>, request: &PageRequest, cursor_of: impl Fn(&T) -> String) -> Self {
        let limit = request.limit.clamp(1, PageRequest::MAX_LIMIT) as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(cursor_of)
        } else {
            None
        };
        Page { items: rows, next_cursor }
    }
}

/// Pool statistics for opsloop's own `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// The metadata database. Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) backend: Backend,
    pub(crate) clock: Arc<dyn Clock>,
    max_connections: u32,
    /// Bumped by every project or membership write made through this store (all clones), so
    /// readers can tell whether something they derived from those tables is still current.
    project_changes: Arc<std::sync::atomic::AtomicU64>,
    /// Woken after a commit that recorded events, so subscribers in this process need not poll
    /// (they still do, slowly, for events other processes record).
    events_recorded: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.kind()).finish_non_exhaustive()
    }
}

/// Where the metadata lives.
#[derive(Debug, Clone)]
pub enum Location<'a> {
    SqliteFile(&'a Path),
    Postgres(&'a str),
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn open(location: Location<'_>) -> Result<Self> {
        Self::open_with_clock(location, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(location: Location<'_>, clock: Arc<dyn Clock>) -> Result<Self> {
        let store = match location {
            Location::SqliteFile(path) => Self::connect_sqlite(path, clock).await?,
            Location::Postgres(url) => Self::connect_postgres(url, clock).await?,
        };
        migrate::apply(&store).await?;
        Ok(store)
    }

    async fn connect_sqlite(path: &Path, clock: Arc<dyn Clock>) -> Result<Self> {
        // WAL lets readers run beside the one writer; synchronous=FULL makes a commit durable
        // before we acknowledge it, so neither kill -9 nor power loss drops an answered write.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let max_connections = 8;
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { target: path.display().to_string(), source })?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
            clock,
            max_connections,
            project_changes: Arc::default(),
            events_recorded: Arc::default(),
        })
    }

    async fn connect_postgres(url: &str, clock: Arc<dyn Clock>) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|source| StoreError::Connect { target: redact_url(url), source })?;
        let max_connections = 16;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { target: redact_url(url), source })?;
        Ok(Store {
            backend: Backend::Postgres(pool),
            clock,
            max_connections,
            project_changes: Arc::default(),
            events_recorded: Arc::default(),
        })
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Changes whenever this process writes projects or memberships; see `project_changes`.
    pub fn project_generation(&self) -> u64 {
        self.project_changes.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn projects_changed(&self) {
        self.project_changes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The clock every time-dependent decision uses (expiry, sessions, audit times).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The same database seen through another clock; for tests that move time.
    pub fn with_clock(&self, clock: Arc<dyn Clock>) -> Store {
        Store { clock, ..self.clone() }
    }

    /// Readiness: the database answers and every migration this build knows is applied.
    pub async fn check_ready(&self) -> Result<()> {
        migrate::check_current(self).await
    }

    pub fn pool_stats(&self) -> PoolStats {
        let (size, idle) = with_pool!(self, |pool| (pool.size(), pool.num_idle()));
        PoolStats { size, idle: u32::try_from(idle).unwrap_or(u32::MAX), max: self.max_connections }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

/// A database URL with any password replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("REDACTED"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable database url>".to_owned(),
    }
}

#[cfg(test)]
mod tests;
