//! The Gatus / Uptime Kuma role, as a library (no HTTP server, no store): checks read from
//! Gatus's endpoint format, run on a scheduler that spreads them over their interval,
//! judged by Gatus's conditions, with flap damping; heartbeats that go late. Results are
//! handed to a sink the host turns into samples and events.
