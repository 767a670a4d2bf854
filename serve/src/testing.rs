//! An in-memory [`Upstream`] for tests: streams are created and fed by the test, which
//! pushes objects and playlists into live subscriptions and counts every `subscribe`
//! and `fetch` the edge makes; and [`open_state`], the viewer path over any upstream.

use crate::upstream::{
    BoxFuture, EdgePlaylist, Subscription, Upstream, UpstreamError, UpstreamEvent,
};
use bytes::Bytes;
use ferrocast_media::hls::names::Object;
use ferrocast_media::hls::{MediaPlaylist, PartInfo, SegmentInfo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Events a subscription may queue before the fake reports it as lagging.
const CHANNEL: usize = 4096;

#[derive(Debug, Default)]
struct FakeStream {
    objects: HashMap<Object, Bytes>,
    playlist: Option<Arc<EdgePlaylist>>,
    subscribers: Vec<mpsc::Sender<UpstreamEvent>>,
}

/// A scripted upstream.
#[derive(Debug, Default)]
pub struct MemoryUpstream {
    streams: Mutex<HashMap<String, FakeStream>>,
    subscribes: Mutex<HashMap<String, usize>>,
    fetches: AtomicUsize,
    /// How long each fetch takes (so concurrent requests overlap).
    fetch_delay: Mutex<Duration>,
    /// How long each subscribe takes.
    subscribe_delay: Mutex<Duration>,
    /// When set, every subscribe fails with this error.
    subscribe_error: Mutex<Option<UpstreamError>>,
    /// Assignment changes, as a controller-fed upstream announces them.
    changes: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
}

impl MemoryUpstream {
    /// An upstream holding no stream.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// An upstream that announces assignment changes ([`Self::assignments_changed`]).
    pub fn with_changes() -> Arc<Self> {
        let up = Self::default();
        *up.changes.lock().unwrap() = Some(tokio::sync::watch::channel(0).0);
        Arc::new(up)
    }

    /// Announces that where streams are has changed.
    pub fn assignments_changed(&self) {
        if let Some(tx) = self.changes.lock().unwrap().as_ref() {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Makes every fetch take `d`.
    pub fn set_fetch_delay(&self, d: Duration) {
        *lock(&self.fetch_delay) = d;
    }

    /// Makes every subscribe take `d`.
    pub fn set_subscribe_delay(&self, d: Duration) {
        *lock(&self.subscribe_delay) = d;
    }

    /// Makes every subscribe fail with `e` (None: back to normal).
    pub fn set_subscribe_error(&self, e: Option<UpstreamError>) {
        *lock(&self.subscribe_error) = e;
    }

    /// Creates a stream (no objects, no playlist yet).
    pub fn add_stream(&self, name: &str) {
        lock(&self.streams).entry(name.to_owned()).or_default();
    }

    /// Stores an object without pushing it (only fetchable).
    pub fn store(&self, name: &str, object: Object, bytes: Bytes) {
        let mut s = lock(&self.streams);
        s.entry(name.to_owned())
            .or_default()
            .objects
            .insert(object, bytes);
    }

    /// Stores an object and pushes it to every live subscription.
    pub fn push_object(&self, name: &str, object: Object, bytes: Bytes, made_at_ms: i64) {
        self.store(name, object, bytes.clone());
        self.send(
            name,
            UpstreamEvent::Object {
                object,
                bytes,
                made_at_ms,
            },
        );
    }

    /// Publishes a playlist to every live subscription (and to later subscribers).
    pub fn push_playlist(&self, name: &str, playlist: EdgePlaylist) {
        let p = Arc::new(playlist);
        lock(&self.streams)
            .entry(name.to_owned())
            .or_default()
            .playlist = Some(p.clone());
        self.send(name, UpstreamEvent::Playlist(p));
    }

    /// Tells subscribers the stream is gone and forgets it.
    pub fn remove_stream(&self, name: &str) {
        self.send(name, UpstreamEvent::Gone);
        lock(&self.streams).remove(name);
    }

    /// Ends every subscription of `name` as if the connection were lost for good.
    pub fn drop_subscriptions(&self, name: &str) {
        if let Some(s) = lock(&self.streams).get_mut(name) {
            s.subscribers.clear();
        }
    }

    /// Subscriptions of `name` still held by the edge.
    pub fn active_subscriptions(&self, name: &str) -> usize {
        let mut streams = lock(&self.streams);
        let Some(s) = streams.get_mut(name) else {
            return 0;
        };
        s.subscribers.retain(|tx| !tx.is_closed());
        s.subscribers.len()
    }

    /// `subscribe` calls for `name` so far (found or not).
    pub fn subscribe_calls(&self, name: &str) -> usize {
        lock(&self.subscribes).get(name).copied().unwrap_or(0)
    }

    /// `subscribe` calls for every name so far.
    pub fn total_subscribe_calls(&self) -> usize {
        lock(&self.subscribes).values().sum()
    }

    /// `fetch` calls so far.
    pub fn fetch_calls(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn send(&self, name: &str, ev: UpstreamEvent) {
        let mut streams = lock(&self.streams);
        if let Some(s) = streams.get_mut(name) {
            s.subscribers.retain(|tx| tx.try_send(ev.clone()).is_ok());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upstream for MemoryUpstream {
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.changes
            .lock()
            .unwrap()
            .as_ref()
            .map(|tx| tx.subscribe())
    }

    fn subscribe<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Subscription, UpstreamError>> {
        Box::pin(async move {
            *lock(&self.subscribes).entry(stream.to_owned()).or_default() += 1;
            let delay = *lock(&self.subscribe_delay);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(e) = lock(&self.subscribe_error).clone() {
                return Err(e);
            }
            let mut streams = lock(&self.streams);
            let s = streams.get_mut(stream).ok_or(UpstreamError::NotFound)?;
            let (tx, rx) = mpsc::channel(CHANNEL);
            // First events: what exists now (inits, parts), then the playlist.
            for (object, bytes) in &s.objects {
                if matches!(object, Object::Init(_) | Object::Part(..)) {
                    let _ = tx.try_send(UpstreamEvent::Object {
                        object: *object,
                        bytes: bytes.clone(),
                        made_at_ms: 0,
                    });
                }
            }
            if let Some(p) = &s.playlist {
                let _ = tx.try_send(UpstreamEvent::Playlist(p.clone()));
            }
            s.subscribers.push(tx);
            Ok(Subscription { events: rx })
        })
    }

    fn fetch<'a>(
        &'a self,
        stream: &'a str,
        object: Object,
    ) -> BoxFuture<'a, Result<Bytes, UpstreamError>> {
        Box::pin(async move {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let delay = *lock(&self.fetch_delay);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let streams = lock(&self.streams);
            let s = streams.get(stream).ok_or(UpstreamError::NotFound)?;
            s.objects
                .get(&object)
                .cloned()
                .ok_or(UpstreamError::NoSuchObject)
        })
    }
}

/// A live playlist for tests: `complete` segments of `parts` parts each starting at
/// `media_sequence`, then `pending` parts of the segment being built; 1 s parts,
/// 4 s target duration, init 0.
pub fn playlist(media_sequence: u64, complete: u64, parts: usize, pending: usize) -> EdgePlaylist {
    let part = PartInfo {
        duration: 1.0,
        independent: true,
    };
    let segments = (media_sequence..media_sequence + complete)
        .map(|msn| SegmentInfo {
            msn,
            duration: parts as f64,
            program_date_time_ms: 1_700_000_000_000 + i64::try_from(msn).unwrap_or(0) * 4000,
            discontinuity: false,
            init_id: 0,
            parts: vec![part.clone(); parts],
        })
        .collect();
    let next_msn = media_sequence + complete;
    EdgePlaylist {
        playlist: MediaPlaylist {
            target_duration: 4,
            part_target: 1.0,
            media_sequence,
            discontinuity_sequence: 0,
            segments,
            next_msn,
            next_init_id: 0,
            next_discontinuity: false,
            next_program_date_time_ms: Some(
                1_700_000_000_000 + i64::try_from(next_msn).unwrap_or(0) * 4000,
            ),
            pending_parts: vec![part; pending],
            ended: false,
        },
        codecs: "avc1.64001f,mp4a.40.2".to_owned(),
        resolution: Some((1280, 720)),
        frame_rate: Some(30.0),
        bandwidth: 2_000_000,
    }
}

/// Bytes standing in for part `i` of segment `msn`.
pub fn part_bytes(msn: u64, i: u32) -> Bytes {
    Bytes::from(format!("part {msn}.{i};"))
}

/// The viewer path of a node with the edge's defaults and no playback rules (every stream
/// open) over `upstream`, for tests that drive [`crate::http::respond`] directly.
pub fn open_state(upstream: Arc<dyn Upstream>) -> Arc<crate::http::HttpState> {
    let cfg = crate::http::ServeConfig {
        role: crate::metrics::Role::Edge,
        cache_capacity: 64 * 1024 * 1024,
        cache_idle: Duration::from_secs(60),
        streams: crate::state::StreamsConfig {
            idle_unsubscribe: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(2),
            max_streams: 1000,
            requests_off_runtime: false,
        },
        access: Arc::new(crate::access::PlaybackAccess::new(
            crate::access::RulesSource::None,
            "edge",
        )),
        admission: None,
    };
    let registry = Arc::new(ferrocast_runtime::metrics::Metrics::new());
    let state = crate::http::HttpState::new(cfg, upstream, registry);
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    state
}
