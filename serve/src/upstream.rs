//! Where a serving node gets its streams from. The serving core only sees this trait:
//! an edge's implementation talks to origins over QUIC (the controller's assignment
//! decides which origin holds each stream), and tests plug in an in-memory source
//! ([`crate::testing`]).

use bytes::Bytes;
use ferrocast_media::hls::{names::Object, MediaPlaylist};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future (keeps the trait object-safe without extra crates).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of live streams for the edge.
pub trait Upstream: Send + Sync + std::fmt::Debug + 'static {
    /// Subscribes to a stream's live tail. Resolves once the origin answered: Ok with a
    /// [`Subscription`] whose first events are the init segment(s) and the current
    /// playlist, or `Err(UpstreamError::NotFound)` when no origin holds the stream.
    /// Dropping the subscription unsubscribes. The implementation reconnects and resumes
    /// by itself (asking for what it missed) and never restarts the stream.
    fn subscribe<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Subscription, UpstreamError>>;

    /// Fetches one object on demand (an older segment or part, an init segment). Not
    /// coalesced here: the cache coalesces.
    fn fetch<'a>(
        &'a self,
        stream: &'a str,
        object: Object,
    ) -> BoxFuture<'a, Result<Bytes, UpstreamError>>;

    /// Bumped whenever where streams are may have changed (the controller's assignments):
    /// a "no origin holds it" learnt before a change is stale after it. `None`: never.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The streams that could be subscribed to now (the cluster's live streams), for
    /// listings; empty when the upstream cannot tell.
    fn streams(&self) -> Vec<String> {
        Vec::new()
    }

    /// The streams that could be subscribed to now, with what the upstream knows of
    /// each beyond its name (an origin's packager knows everything; a cluster's
    /// assignments only that the stream is live somewhere). By default [`Self::streams`]
    /// with nothing more.
    fn listed(&self) -> Vec<Listed> {
        self.streams()
            .into_iter()
            .map(|name| Listed { name, state: None })
            .collect()
    }
}

/// A stream an upstream could serve, as listings show it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The stream key.
    pub name: String,
    /// When the upstream knows it: whether the stream is live (a publisher is on it and
    /// it has media) and its current playlist.
    pub state: Option<ListedState>,
}

/// What an upstream knows of a listed stream.
#[derive(Debug, Clone)]
pub struct ListedState {
    /// A publisher is on it and it has media.
    pub live: bool,
    /// Its current playlist.
    pub playlist: Arc<EdgePlaylist>,
}

/// A live subscription: a bounded stream of events.
#[derive(Debug)]
pub struct Subscription {
    /// Events in order; closed when the upstream gives up for good.
    pub events: tokio::sync::mpsc::Receiver<UpstreamEvent>,
}

/// What a subscription delivers.
#[derive(Debug, Clone)]
pub enum UpstreamEvent {
    /// An object pushed by the origin (an init segment or a part). Complete segments are
    /// not pushed: the edge serves a segment as its parts back to back, or fetches it.
    Object {
        /// Which object.
        object: Object,
        /// Its bytes.
        bytes: Bytes,
        /// Origin wall clock (unix ms) when the object was made.
        made_at_ms: i64,
    },
    /// The playlist changed. Comes after the `Object` events of every part and init it
    /// names that is new since the previous `Playlist` event.
    Playlist(Arc<EdgePlaylist>),
    /// The origin no longer holds the stream (ended and aged out, or moved away).
    Gone,
}

/// A stream's playlist state as the origin published it.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePlaylist {
    /// What the media playlist shows (rendered by the same function as on the origin).
    pub playlist: MediaPlaylist,
    /// RFC 6381 codecs list.
    pub codecs: String,
    /// Video size.
    pub resolution: Option<(u32, u32)>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
    /// Peak bits per second.
    pub bandwidth: u64,
}

/// Why the upstream could not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No origin holds this stream (cached negatively for a short time).
    #[error("no origin holds this stream")]
    NotFound,
    /// The object does not exist.
    #[error("no such object")]
    NoSuchObject,
    /// The origin is unreachable, timed out or the connection was lost.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
}

impl UpstreamError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
