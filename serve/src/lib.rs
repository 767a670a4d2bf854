//! The viewer-facing serving path that origins and edges share. A node serves viewers
//! from an [`upstream::Upstream`]: an edge's pulls from origins over QUIC, an origin's
//! is fed in process by its packager, tests feed one by hand ([`testing`]). Every way of
//! answering a viewer is written once, here, over that trait: one HTTP handler
//! ([`http`]) over per-stream states ([`state`]) and one object cache ([`cache`]),
//! behind one playback gate ([`access`]) and admission check ([`admission`]).

pub mod access;
pub mod admission;
pub mod cache;
pub mod http;
pub mod metrics;
pub mod state;
pub mod testing;
pub mod upstream;
