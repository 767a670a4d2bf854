//! The viewer-facing serving path that origins and edges share. A node serves viewers
//! from an [`upstream::Upstream`]: an edge's pulls from origins over QUIC, an origin's
//! is fed in process by its packager, tests feed one by hand ([`testing`]). Every way of
//! answering a viewer is written once, here, over that trait.

pub mod testing;
pub mod upstream;
