//! RTMP, sans-IO: the handshake, the chunk layer, protocol control messages
//! and the NetConnection / NetStream command flow of a publishing session,
//! for both ends (the server we run, and a client for our own tools and tests).
//!
//! Follows Adobe's "Real-Time Messaging Protocol (RTMP) specification" (2012),
//! plus the de-facto digest handshake that Flash Player 9+ clients (and OBS /
//! librtmp, ffmpeg) send. Callers feed bytes in and take bytes and events out;
//! nothing here reads a clock, a socket or a random source.

mod chunk;
mod client;
mod handshake;
mod message;
mod server;

pub use chunk::{ChunkDecoder, ChunkEncoder, RawMessage};
pub use client::{ClientEvent, ClientSession};
pub use message::msg_type;
pub use server::{ServerEvent, ServerSession};

use crate::amf0::Amf0Error;

/// Longest application or stream name (the part before any `?query`) a server session
/// passes on: the stream key rule's length (`ferrocast_names::valid_stream_key`), so an
/// oversized name is refused before anything else reads it.
pub const MAX_NAME_LEN: usize = ferrocast_names::MAX_STREAM_KEY_LEN;

/// Longest `?query` a server session passes on, on a publish name or a connect `app`:
/// where publish credentials travel (`key=`, `token=`). The cap is the cluster's
/// ([`ferrocast_names::MAX_CREDENTIAL_LEN`]): the controller refuses a longer credential too.
pub const MAX_QUERY_LEN: usize = ferrocast_names::MAX_CREDENTIAL_LEN;

/// Longest connect `tcUrl` (`rtmp://host:port/app?query`): a query and room for the
/// rest.
pub const MAX_TC_URL_LEN: usize = MAX_QUERY_LEN + 1024;

/// Resource limits for one RTMP connection. Everything a peer can make us hold
/// in memory is bounded by one of these.
// Not `Copy`, so callers' `.clone()` stays lint-clean and fields can grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest chunk size the peer may announce with Set Chunk Size.
    pub max_chunk_size: u32,
    /// Largest message length a chunk header may announce.
    pub max_message_size: u32,
    /// Bytes of unfinished messages held across all chunk streams.
    pub max_pending_bytes: usize,
    /// Distinct chunk stream ids the peer may use.
    pub max_chunk_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chunk_size: 65_536,
            max_message_size: 8 * 1024 * 1024,
            max_pending_bytes: 16 * 1024 * 1024,
            max_chunk_streams: 64,
        }
    }
}

/// Why an RTMP connection cannot go on. After an error a session or decoder
/// keeps returning it; the caller should close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtmpError {
    /// The peer's C0 / S0 asked for a protocol version other than 3.
    #[error("unsupported RTMP version {0} (only version 3 is supported)")]
    UnsupportedVersion(u8),
    /// The handshake could not be completed.
    #[error("RTMP handshake failed: {0}")]
    Handshake(&'static str),
    /// Set Chunk Size announced a size above our limit.
    #[error("chunk size {size} exceeds the limit of {max}")]
    ChunkSizeTooLarge {
        /// Size the peer announced.
        size: u32,
        /// Our limit.
        max: u32,
    },
    /// Set Chunk Size announced 0 or set the reserved top bit.
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    /// A chunk header announced a message longer than our limit.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Length the peer announced.
        size: u32,
        /// Our limit.
        max: u32,
    },
    /// The peer used more distinct chunk stream ids than allowed.
    #[error("more than {max} chunk streams")]
    TooManyChunkStreams {
        /// Our limit.
        max: usize,
    },
    /// Unfinished messages across all chunk streams hold more bytes than allowed.
    #[error("unfinished messages exceed {max} bytes")]
    PendingBytesExceeded {
        /// Our limit.
        max: usize,
    },
    /// A chunk header that is inconsistent with the chunk stream's state.
    #[error("bad chunk header: {0}")]
    BadChunkHeader(&'static str),
    /// An AMF0 payload could not be decoded.
    #[error("bad AMF0 payload: {0}")]
    Amf(#[from] Amf0Error),
    /// A message that is not allowed in the session's current state.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// A message whose payload does not have the shape its type requires.
    #[error("malformed message: {0}")]
    MalformedMessage(&'static str),
    /// A connect or publish command carried a name, query or URL longer than its cap
    /// ([`MAX_NAME_LEN`], [`MAX_QUERY_LEN`], [`MAX_TC_URL_LEN`]); the peer was told why.
    #[error("{what} of {len} bytes is longer than the limit of {max}")]
    TooLong {
        /// What was too long (`stream name`, `publish query`, `app`, `tcUrl`).
        what: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The peer created more message streams than a session allows.
    #[error("more than {max} message streams")]
    TooManyStreams {
        /// Our limit.
        max: u32,
    },
}
