//! The origin's own viewers are served by the same handler as an edge's
//! ([`ferrocast_serve::http`]), over this in-process [`Upstream`]: a subscription turns
//! the stream's `watch` of packager [`Snapshot`]s into [`UpstreamEvent`]s (every new
//! init and part, then the playlist that names them) the moment the packager publishes
//! them, with no polling; `fetch` answers from the current snapshot. The serving rules
//! are thereby the edge's, fed two ways.

use crate::package::{PartLookup, Snapshot};
use crate::stream::{Stream, Streams};
use bytes::{Bytes, BytesMut};
use ferrocast_media::hls::names::Object;
use ferrocast_serve::upstream::{
    BoxFuture, EdgePlaylist, Listed, ListedState, Subscription, Upstream, UpstreamError,
    UpstreamEvent,
};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

/// Events a subscription may queue. When the serving side falls this far behind, the
/// forwarding task waits for it: snapshots in between coalesce in the `watch`, and
/// nothing grows.
const EVENTS: usize = 256;

/// The origin's streams as an [`Upstream`].
#[derive(Debug)]
pub struct LocalUpstream {
    streams: Arc<Streams>,
    /// One forwarding task per subscription; each ends with its subscription.
    tasks: TaskTracker,
}

impl LocalUpstream {
    /// Serves `streams`.
    pub fn new(streams: Arc<Streams>) -> Arc<Self> {
        Arc::new(Self {
            streams,
            tasks: TaskTracker::new(),
        })
    }

    /// Waits for every forwarding task, once the serving side has dropped its
    /// subscriptions (`ferrocast_serve::state::Streams::shutdown`).
    pub async fn shutdown(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What the serving side reads of a snapshot: its playlist and stream description.
pub fn edge_playlist(snap: &Snapshot) -> EdgePlaylist {
    EdgePlaylist {
        playlist: snap.playlist.clone(),
        codecs: snap.info.codecs.clone(),
        resolution: snap.info.resolution,
        frame_rate: snap.info.frame_rate,
        bandwidth: snap.info.bandwidth,
    }
}

impl Upstream for LocalUpstream {
    fn subscribe<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Subscription, UpstreamError>> {
        Box::pin(async move {
            let s = self.streams.get(stream).ok_or(UpstreamError::NotFound)?;
            let (tx, rx) = mpsc::channel(EVENTS);
            let snaps = s.subscribe();
            let held = Arc::downgrade(&s);
            self.tasks
                .spawn(forward(self.streams.clone(), held, snaps, tx));
            Ok(Subscription { events: rx })
        })
    }

    fn fetch<'a>(
        &'a self,
        stream: &'a str,
        object: Object,
    ) -> BoxFuture<'a, Result<Bytes, UpstreamError>> {
        Box::pin(async move {
            let s = self.streams.get(stream).ok_or(UpstreamError::NotFound)?;
            let snap = s.snapshot();
            let found = match object {
                Object::Init(id) => snap.init(id),
                Object::Part(msn, i) => match snap.part(msn, i) {
                    PartLookup::Found(b) => Some(b),
                    PartLookup::Soon | PartLookup::Never => None,
                },
                // Only for a segment whose parts the playlist no longer lists (the
                // serving side serves the others as their cached parts, zero-copy).
                Object::Segment(msn) => snap.segment(msn).map(|seg| {
                    let mut out = BytesMut::with_capacity(seg.len());
                    for p in &seg.parts {
                        out.extend_from_slice(&p.bytes);
                    }
                    out.freeze()
                }),
                Object::MediaPlaylist | Object::Multivariant => None,
            };
            found.ok_or(UpstreamError::NoSuchObject)
        })
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.streams.changes())
    }

    fn streams(&self) -> Vec<String> {
        self.streams
            .list()
            .iter()
            .map(|s| s.name().to_owned())
            .collect()
    }

    fn listed(&self) -> Vec<Listed> {
        self.streams
            .list()
            .iter()
            .map(|s| {
                let snap = s.snapshot();
                Listed {
                    name: s.name().to_owned(),
                    state: Some(ListedState {
                        // Live while a publisher is on it: a stream in its grace period
                        // is listed, but not as live.
                        live: s.has_publisher() && snap.live,
                        playlist: Arc::new(edge_playlist(&snap)),
                    }),
                }
            })
            .collect()
    }
}

/// Where a subscription stands: the next part not yet sent, the newest init sent.
#[derive(Debug, Default)]
struct Cursor {
    next_part: Option<(u64, usize)>,
    last_init: Option<u64>,
}

impl Cursor {
    /// The events `snap` adds: inits and parts not sent yet, then its playlist.
    fn events(&mut self, snap: &Snapshot) -> Vec<UpstreamEvent> {
        let mut out = Vec::new();
        for (id, bytes) in &snap.inits {
            if self.last_init.is_none_or(|last| *id > last) {
                out.push(UpstreamEvent::Object {
                    object: Object::Init(*id),
                    bytes: bytes.clone(),
                    made_at_ms: 0,
                });
                self.last_init = Some(*id);
            }
        }
        let complete = snap.segments.iter().map(|s| (s.msn, &s.parts[..]));
        let building = snap.building_msn.map(|msn| (msn, &snap.pending[..]));
        for (msn, parts) in complete.chain(building) {
            let from = match self.next_part {
                Some((next, _)) if msn < next => continue,
                Some((next, i)) if msn == next => i,
                _ => 0,
            };
            for (i, p) in parts.iter().enumerate().skip(from) {
                out.push(UpstreamEvent::Object {
                    object: Object::Part(msn, u32::try_from(i).unwrap_or(u32::MAX)),
                    bytes: p.bytes.clone(),
                    made_at_ms: p.made_at_ms,
                });
            }
            self.next_part = Some((msn, parts.len().max(from)));
        }
        out.push(UpstreamEvent::Playlist(Arc::new(edge_playlist(snap))));
        out
    }
}

/// Forwards one stream's snapshots to a subscription until the subscriber leaves, the
/// stream is dropped from the registry (or replaced by a new one: [`UpstreamEvent::Gone`],
/// and the next viewer request subscribes to the new one).
async fn forward(
    streams: Arc<Streams>,
    held: Weak<Stream>,
    mut snaps: watch::Receiver<Arc<Snapshot>>,
    tx: mpsc::Sender<UpstreamEvent>,
) {
    let mut changes = streams.changes();
    let name = match held.upgrade() {
        Some(s) => s.name().to_owned(),
        None => return,
    };
    let mut cursor = Cursor::default();
    let mut snap = snaps.borrow_and_update().clone();
    'snapshots: loop {
        for ev in cursor.events(&snap) {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                changed = snaps.changed() => match changed {
                    Ok(()) => {
                        snap = snaps.borrow_and_update().clone();
                        continue 'snapshots;
                    }
                    Err(_) => break 'snapshots,
                },
                changed = changes.changed() => {
                    let here = streams.get(&name);
                    if changed.is_err() || !here.is_some_and(|s| std::ptr::eq(Arc::as_ptr(&s), held.as_ptr())) {
                        break 'snapshots;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    }
    let _ = tx.send(UpstreamEvent::Gone).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::tests::{cfg, Clip};
    use crate::package::Packager;

    /// Stream "s" on a packager fed `seconds` of a 30 fps A/V clip, and the origin's
    /// viewer path over it.
    fn origin_serving(
        seconds: f64,
    ) -> (
        Arc<Streams>,
        crate::stream::Publisher,
        Arc<ferrocast_serve::http::HttpState>,
    ) {
        use crate::metrics::OriginMetrics;
        use crate::stream::StreamConfig;
        use ferrocast_agent::access::{PlaybackAccess, RulesSource};
        use ferrocast_runtime::metrics::Metrics;
        let streams = Streams::new(StreamConfig::default(), Arc::new(OriginMetrics::new()));
        let publisher = streams.claim("s").expect("claim");
        publisher
            .stream()
            .with_packager(|p| Clip::av(30.0, 60, seconds).feed(p));
        let origin = crate::serving_state(
            LocalUpstream::new(streams.clone()),
            &streams,
            &Default::default(),
            Arc::new(PlaybackAccess::new(RulesSource::None, "origin")),
            Arc::new(Metrics::new()),
        );
        (streams, publisher, origin)
    }

    fn parts_of(events: &[UpstreamEvent]) -> Vec<(u64, u32)> {
        events
            .iter()
            .filter_map(|e| match e {
                UpstreamEvent::Object {
                    object: Object::Part(m, i),
                    ..
                } => Some((*m, *i)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_init_and_part_is_sent_once_in_order_before_the_playlist_naming_it() {
        let mut c = Cursor::default();
        let empty = Packager::new(cfg(), None).snapshot();
        assert!(matches!(
            c.events(&empty).as_slice(),
            [UpstreamEvent::Playlist(_)]
        ));
        // The same publisher, a moment later and then later still.
        let at = |seconds: f64| {
            let mut p = Packager::new(cfg(), None);
            p.begin_session();
            Clip::av(30.0, 60, seconds).feed(&mut p);
            p.snapshot()
        };
        let (early, late) = (at(4.5), at(9.5));
        let mut events = c.events(&early);
        assert!(matches!(
            events.first(),
            Some(UpstreamEvent::Object {
                object: Object::Init(0),
                ..
            })
        ));
        assert!(matches!(events.last(), Some(UpstreamEvent::Playlist(_))));
        events.extend(c.events(&late));
        let mut expected = Vec::new();
        for s in &late.segments {
            expected.extend((0..s.parts.len() as u32).map(|i| (s.msn, i)));
        }
        let building = late.building_msn.expect("a segment being built");
        expected.extend((0..late.pending.len() as u32).map(|i| (building, i)));
        assert_eq!(parts_of(&events), expected, "each part once, in order");
        let inits = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    UpstreamEvent::Object {
                        object: Object::Init(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(inits, 1);
        // Nothing new: only the playlist again.
        assert!(matches!(
            c.events(&late).as_slice(),
            [UpstreamEvent::Playlist(_)]
        ));
    }

    /// One handler fed two ways: the origin's viewer path over its packager, and an
    /// edge's over an upstream that was pushed the same objects and playlist, answer
    /// every URL of the same moment with the same status, headers and bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn origin_and_edge_answer_the_same_moment_byte_for_byte() {
        use ferrocast_media::hls::names;
        use ferrocast_serve::testing::{open_state, MemoryUpstream};
        use http::{Method, Uri};
        use std::time::Duration;

        let (streams, publisher, origin) = origin_serving(9.5);
        origin
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let snap = publisher.stream().snapshot();
        let up = MemoryUpstream::new();
        up.add_stream("s");
        for ev in Cursor::default().events(&snap) {
            match ev {
                UpstreamEvent::Object {
                    object,
                    bytes,
                    made_at_ms,
                } => up.push_object("s", object, bytes, made_at_ms),
                UpstreamEvent::Playlist(p) => up.push_playlist("s", (*p).clone()),
                UpstreamEvent::Gone => unreachable!("a live stream"),
            }
        }
        // What an edge fetches on demand (older segments) is what the origin answers.
        let local = LocalUpstream::new(streams.clone());
        for seg in &snap.segments {
            let object = Object::Segment(seg.msn);
            let bytes = local.fetch("s", object).await.expect("a complete segment");
            up.store("s", object, bytes);
        }
        let edge = open_state(up);

        let p = &snap.playlist;
        let next = p.next_msn;
        let mut paths: Vec<String> = [
            "index.m3u8",
            "index.m3u8?_HLS_skip=YES",
            "master.m3u8",
            "index.m3u8?_HLS_msn=1",
            "index.m3u8?_HLS_msn=99",
            "index.m3u8?_HLS_part=1",
        ]
        .iter()
        .map(|q| format!("/live/s/{q}"))
        .collect();
        paths.push(format!("/live/s/index.m3u8?_HLS_msn={next}&_HLS_part=0"));
        paths.push(format!("/live/s/{}", names::init(0)));
        paths.push(format!("/live/s/{}", names::init(7)));
        for s in &p.segments {
            paths.push(format!("/live/s/{}", names::segment(s.msn)));
            for i in 0..s.parts.len() as u32 + 1 {
                paths.push(format!("/live/s/{}", names::part(s.msn, i)));
            }
        }
        for i in 0..p.pending_parts.len() as u32 {
            paths.push(format!("/live/s/{}", names::part(next, i)));
        }
        paths.push(format!("/live/s/{}", names::part(next + 2, 0)));
        paths.push(format!("/live/s/{}", names::segment(next + 2)));
        paths.push("/live/nothing/index.m3u8".to_owned());
        paths.push("/api/streams".to_owned());
        assert!(paths.len() > 20);

        for path in paths {
            let uri: Uri = path.parse().expect("uri");
            let answer = |state: Arc<ferrocast_serve::http::HttpState>| {
                let uri = uri.clone();
                async move {
                    let resp = tokio::time::timeout(
                        Duration::from_secs(10),
                        ferrocast_serve::http::respond(&state, &Method::GET, &uri),
                    )
                    .await
                    .expect("answered at once");
                    let (parts, body) = resp.into_parts();
                    let body = http_body_util::BodyExt::collect(body)
                        .await
                        .expect("infallible")
                        .to_bytes();
                    (parts.status, parts.headers, body)
                }
            };
            let (at_origin, at_edge) = (answer(origin.clone()).await, answer(edge.clone()).await);
            assert_eq!(at_origin.0, at_edge.0, "{path}: status");
            assert_eq!(at_origin.1, at_edge.1, "{path}: headers");
            assert_eq!(at_origin.2, at_edge.2, "{path}: body");
        }
    }

    /// A held request wakes the moment the packager publishes: the snapshot goes
    /// through this upstream to the serving side with no polling.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_requests_wake_when_the_packager_publishes() {
        use ferrocast_media::hls::names;
        use http::{Method, StatusCode, Uri};
        use std::time::{Duration, Instant};

        let (_streams, publisher, origin) = origin_serving(4.5);
        let p = publisher.stream().snapshot().playlist.clone();
        let hint = u32::try_from(p.pending_parts.len()).expect("few parts");
        let held = |path: String| {
            let state = origin.clone();
            tokio::spawn(async move {
                let uri: Uri = path.parse().expect("uri");
                let resp = ferrocast_serve::http::respond(&state, &Method::GET, &uri).await;
                (resp.status(), Instant::now())
            })
        };
        let reload = held(format!(
            "/live/s/index.m3u8?_HLS_msn={}&_HLS_part={hint}",
            p.next_msn
        ));
        let part = held(format!("/live/s/{}", names::part(p.next_msn, hint + 1)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!reload.is_finished() && !part.is_finished(), "both held");
        let published = Instant::now();
        publisher.stream().with_packager(|p| p.end());
        let limit = Duration::from_secs(5);
        let (status, at) = tokio::time::timeout(limit, reload)
            .await
            .expect("woke")
            .expect("task");
        assert_eq!(status, StatusCode::OK, "the ended playlist");
        assert!(
            at - published < Duration::from_millis(500),
            "woke {:?} later",
            at - published
        );
        let (status, at) = tokio::time::timeout(limit, part)
            .await
            .expect("woke")
            .expect("task");
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "an ended stream gets no more parts"
        );
        assert!(
            at - published < Duration::from_millis(500),
            "woke {:?} later",
            at - published
        );
    }
}
