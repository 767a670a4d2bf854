//! Ferrocast's media core: pure, sans-IO parsers and writers for everything that
//! crosses the wire or lands in a cache. Nothing here does I/O, spawns tasks or
//! reads the clock; callers feed bytes and time in and take bytes and events out.

pub mod amf0;
pub mod cmaf;
pub mod codec;
pub mod flv;
pub mod hls;
pub mod rtmp;
