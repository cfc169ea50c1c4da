//! What the deployments service answers when it refuses or fails. Domain words, no HTTP:
//! `crate::error` maps each variant to a status and code in one place.

use opsloop_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The request names something that does not exist in `opsloop.yml`, or cannot be done
    /// as asked.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (a protected environment, approving one's own request).
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The version's files, its artifacts or its `opsloop.yml` cannot be had.
    #[error("{0}")]
    ReleaseUnavailable(String),
    /// The environment is in a deploy freeze.
    #[error("{0}")]
    Frozen(String),
    /// The deployment is not in a state that allows this (approving one that does not wait).
    #[error("{0}")]
    NotWaiting(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unavailable(#[from] crate::state::Unavailable),
    /// Playing the environment's `on_stop` job was refused.
    #[error(transparent)]
    OnStop(#[from] crate::ci::CiError),
    /// Something of ours failed (a file could not be written); the details are in the log.
    #[error("{0}")]
    Internal(String),
}
