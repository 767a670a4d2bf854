//! Service plumbing shared by every Ferrocast node: logging set-up, signal-driven
//! shutdown, the HTTP server loop with graceful drain, response bodies and the
//! Prometheus registry. Nothing media-specific lives here.

pub mod body;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
