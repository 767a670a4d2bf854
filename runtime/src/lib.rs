//! Service plumbing shared by every Ferrocast node: logging set-up, signal-driven
//! shutdown, the HTTP server loop with graceful drain and connection limits, response
//! bodies and the Prometheus registry. Nothing media-specific lives here.

pub mod access;
pub mod admission;
pub mod body;
pub mod config;
pub(crate) mod conn;
pub mod http;
pub mod metrics;
pub mod net;
pub mod respond;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
