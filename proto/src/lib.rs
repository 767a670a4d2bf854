//! Ferrocast wire messages. [`relay`] is the origin ↔ edge protocol documented in
//! `proto/relay.proto`: hand-written prost messages, the lossless conversion between
//! [`ferrocast_media::hls::MediaPlaylist`] and [`relay::PlaylistState`], and the
//! length-prefixed framing used on QUIC streams ([`frame`]).

pub mod frame;
pub mod relay;
