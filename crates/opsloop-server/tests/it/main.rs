//! The server exercised in-process: the whole `Router` (routes, access enforcement, limits)
//! driven with `oneshot`, on a real store.

mod app;

mod auth_matrix;
mod bad_input;
mod browser_flows;
