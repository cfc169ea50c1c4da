//! Alerting as a subsystem of the server: incidents (this module's service layer, shared by
//! the API, the UI and the CLI through the API), and the hosting of the alerting engine
//! (`opsloop-alert`) as it lands. Handlers only translate [`AlertingError`] to HTTP.

pub mod incidents;

pub use incidents::AlertingError;
