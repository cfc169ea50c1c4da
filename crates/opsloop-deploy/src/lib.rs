//! Deployments. For now the part every strategy stands on: the built-in reverse proxy
//! ([`proxy`]), whose routes switch atomically inside the running process, and the golden
//! signals it records per service version ([`signals`]). Releases, the supervisor, the
//! strategies and rollback (issue 5) build on these.

pub mod pool;
pub mod proxy;
pub mod signals;

pub use proxy::{Backend, Proxy, Route};
pub use signals::{Signals, Snapshot};
