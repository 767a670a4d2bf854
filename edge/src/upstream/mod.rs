//! Where the edge gets its streams from: the trait and its events live with the serving
//! path ([`ferrocast_serve::upstream`]); the QUIC implementation that pulls from origins
//! is the relay's client (`ferrocast_relay::client::QuicUpstream`).

pub use ferrocast_serve::upstream::*;
