//! What the relay server serves, as a trait the node implements: the streams it holds,
//! each a `watch` of immutable snapshots, and what a snapshot holds. The server needs no
//! more than this, so it does not depend on the origin's packager (the origin implements
//! these traits over its own types in `origin/src/relay_source.rs`).

use crate::wire::VariantInfo;
use bytes::Bytes;
use ferrocast_media::hls::names::Object;
use ferrocast_media::hls::MediaPlaylist;
use std::sync::Arc;
use tokio::sync::watch;

/// The streams this node can relay.
pub trait Source: Send + Sync + 'static {
    /// One stream.
    type Stream: SourceStream;

    /// The stream named `name`, if this node holds it now. The server asks again (and
    /// compares with [`Arc::ptr_eq`]) to notice that the stream it follows was dropped or
    /// replaced. Called only with valid stream keys.
    fn get(&self, name: &str) -> Option<Arc<Self::Stream>>;
}

/// One stream this node holds.
pub trait SourceStream: Send + Sync + 'static {
    /// What the stream looks like at one moment.
    type Snapshot: Snapshot;

    /// The epoch under which this node holds the stream (0 without a controller).
    fn epoch(&self) -> u64;

    /// Its snapshots: the current one now, a new one at every visible change; closed when
    /// the stream is dropped.
    fn subscribe(&self) -> watch::Receiver<Arc<Self::Snapshot>>;
}

/// One part a snapshot holds, as pushed to edges.
#[derive(Debug, Clone, Copy)]
pub struct PartRef<'a> {
    /// Media sequence number of its segment.
    pub msn: u64,
    /// Its index within the segment.
    pub index: u32,
    /// Its bytes.
    pub bytes: &'a Bytes,
    /// Wall clock when it was cut, unix ms.
    pub made_at_ms: i64,
}

/// Where a requested object stands in a snapshot.
#[derive(Debug)]
pub enum Lookup {
    /// Here it is (a segment as its parts, back to back).
    Found(Vec<Bytes>),
    /// Not yet, but close enough to be worth waiting for.
    Soon,
    /// It does not exist and never will.
    Never,
}

/// A stream at one moment: immutable, cheap to share.
pub trait Snapshot: Send + Sync + 'static {
    /// Grows with every visible change of the stream.
    fn version(&self) -> u64;

    /// What the media playlist shows.
    fn playlist(&self) -> &MediaPlaylist;

    /// What the multivariant playlist says about the stream.
    fn variant(&self) -> VariantInfo;

    /// Media sequence number of the segment being built (or next to be): where a fresh
    /// subscription starts.
    fn live_msn(&self) -> u64;

    /// The init segments held, by id, oldest first.
    fn inits(&self) -> impl Iterator<Item = (u64, &Bytes)> + '_;

    /// Every part held in segment `msn` and later, in order, the segment being built
    /// included.
    fn parts_from(&self, msn: u64) -> impl Iterator<Item = PartRef<'_>> + '_;

    /// Looks up one object for a fetch.
    fn lookup(&self, object: Object) -> Lookup;
}
