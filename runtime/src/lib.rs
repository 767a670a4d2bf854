//! Service plumbing shared by every Ferrocast node: logging and telemetry set-up,
//! signal-driven shutdown, the HTTP server loop with graceful drain and connection
//! limits, response bodies, the Prometheus registry, socket options and the
//! configuration error. Nothing media-specific, and nothing about who may do what:
//! certificates live in `ferrocast-tls`, access tokens in `ferrocast-tokens`, the
//! admission webhook in `ferrocast-admission`.

pub mod body;
pub mod config;
pub(crate) mod conn;
pub mod http;
pub mod metrics;
pub mod net;
pub mod respond;
pub mod shutdown;
pub mod telemetry;
