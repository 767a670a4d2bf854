//! The origin ↔ edge relay, both ends in one crate (protocol: `relay/relay.proto`).
//!
//! - [`wire`]: the messages, generated from `relay.proto`, and their conversion to and
//!   from [`ferrocast_media::hls::MediaPlaylist`];
//! - [`frame`]: the length-prefixed framing on QUIC streams;
//! - [`server`]: the serving end an origin runs, generic over the streams it serves
//!   ([`server::source::Source`]);
//! - [`client`]: the pulling end an edge runs, a [`ferrocast_serve::upstream::Upstream`]
//!   that asks an [`ferrocast_agent::origins::OriginResolver`] where each stream is.
//!
//! Keeping both ends together keeps the protocol's two state machines and their tests in
//! one place; the node crates only plug in (the origin its streams, the edge its
//! resolver), and neither depends on the other.

pub mod client;
pub mod frame;
pub mod server;
pub mod wire;

/// Wall clock in unix milliseconds, the unit `made_at_ms` travels in (0 before 1970).
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
