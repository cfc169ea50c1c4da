//! Deployments. For now the parts every strategy stands on: the built-in reverse proxy
//! ([`proxy`]), whose routes switch atomically inside the running process; the golden
//! signals it records per service version ([`signals`]); and the [`supervisor`] that runs,
//! health-checks, restarts and stops instances. Releases, the strategies and rollback
//! (issue 5) build on these.

pub mod pool;
pub mod proxy;
pub mod signals;
pub mod supervisor;

pub use proxy::{Backend, Proxy, Route};
pub use signals::{Signals, Snapshot};
