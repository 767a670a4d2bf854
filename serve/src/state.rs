//! Per-stream state: the one upstream subscription per stream, the task that consumes
//! its events (objects into the cache, playlists into a watch of [`ServeSnapshot`]), idle
//! unsubscribe, and the negative cache of unknown streams.
//!
//! Coalescing of subscriptions: the stream map is a moka cache used only for its
//! `try_get_with`, so however many viewers of a stream arrive at once, one
//! `Upstream::subscribe` runs and the others wait for it (and share its error). A
//! `NotFound` answer is remembered for `negative_ttl`; the check happens again inside
//! the coalesced initialiser, so a flood of requests for a stream that does not exist
//! reaches the upstream at most once per key per TTL.

use crate::cache::ObjectCache;
use crate::metrics::{ServeMetrics, StreamLabels};
use crate::upstream::{EdgePlaylist, Subscription, Upstream, UpstreamError, UpstreamEvent};
use arc_swap::ArcSwap;
use bytes::Bytes;
use ferrocast_media::hls::{self, RenderOptions};
use ferrocast_runtime::respond::Prepared;
use moka::future::Cache;
use moka::ops::compute::Op;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Why a stream's state ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The upstream no longer holds the stream.
    Gone,
    /// The subscription ended with an error; the next viewer request resubscribes.
    Lost,
    /// No viewer for the idle period.
    Idle,
    /// The edge is shutting down.
    Shutdown,
}

/// What viewers of one stream read: the playlist as the upstream published it, and its
/// renderings, made once per change however many viewers ask.
#[derive(Debug, Default)]
pub struct ServeSnapshot {
    /// Bumped on every change.
    pub version: u64,
    /// The latest playlist; None until the first one arrives.
    pub playlist: Option<Arc<EdgePlaylist>>,
    /// Set once the state ended; waiters wake up and answer.
    pub closed: Option<Closed>,
    rendered: OnceLock<Prepared>,
    rendered_skip: OnceLock<Prepared>,
}

impl ServeSnapshot {
    /// At least one part exists ([`hls::locate::has_media`]).
    pub fn live(&self) -> bool {
        self.playlist
            .as_ref()
            .is_some_and(|p| hls::locate::has_media(&p.playlist))
    }

    /// The media playlist text (delta update with `skip`), rendered by the pure
    /// [`hls::render_media`], so every node serves identical bytes for the same state.
    pub fn rendered(&self, skip: bool) -> Option<Bytes> {
        self.prepared(skip).map(|p| p.body().clone())
    }

    /// The media playlist as a whole response (headers and body), built on the first
    /// request for this version: every later viewer of the version gets a copy of the
    /// header map and a share of the body.
    pub fn prepared(&self, skip: bool) -> Option<&Prepared> {
        let p = self.playlist.as_ref()?;
        let cell = if skip {
            &self.rendered_skip
        } else {
            &self.rendered
        };
        Some(cell.get_or_init(|| {
            Prepared::playlist(Bytes::from(hls::render_media(
                &p.playlist,
                &RenderOptions { skip },
            )))
        }))
    }

    /// How long a blocking request may be held: about three target durations
    /// (see [`hls::hold_limit`]).
    pub fn block_timeout(&self) -> Duration {
        hls::hold_limit(self.playlist.as_deref().map(|p| &p.playlist))
    }
}

/// Estimates active viewers of a stream without tracking who they are.
///
/// An LL-HLS player keeps one blocking playlist request (`_HLS_msn`) in flight almost
/// all the time, so those are counted while in flight: one per viewer. A classic player
/// reloads the plain playlist about once per target duration, so plain reloads in the
/// last target duration (at most [`Self::BUCKETS`] seconds) count one each. Part and
/// segment requests are not counted: they belong to viewers already counted by their
/// playlist requests. The estimate needs no per-client memory (an IP set would cost
/// memory per viewer and miscount behind NAT and CDNs).
#[derive(Debug, Default)]
pub struct ViewerMeter {
    blocking: AtomicI64,
    /// (second << 32 | plain reloads in that second), a ring indexed by second: atomics,
    /// not a lock, because every plain reload of every viewer passes here.
    reloads: [AtomicU64; ViewerMeter::BUCKETS],
}

impl ViewerMeter {
    /// Longest window of plain reloads, seconds.
    pub const BUCKETS: usize = 8;

    /// Counts a plain (non-blocking) playlist reload at second `now_s`.
    pub fn reload(&self, now_s: u64) {
        let slot = &self.reloads[(now_s % Self::BUCKETS as u64) as usize];
        let second = now_s & u64::from(u32::MAX);
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            // Same second: count it (the count stays far below 2^32 per second).
            if cur >> 32 == second {
                slot.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match slot.compare_exchange_weak(
                cur,
                second << 32 | 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Counts a blocking playlist request while the guard lives.
    pub fn blocking(self: &Arc<Self>) -> BlockingGuard {
        self.blocking.fetch_add(1, Ordering::Relaxed);
        BlockingGuard(self.clone())
    }

    /// The estimate at second `now_s`, counting reloads over `window_s` seconds.
    pub fn estimate(&self, now_s: u64, window_s: u64) -> i64 {
        let window = window_s.clamp(1, Self::BUCKETS as u64);
        let now_s = now_s & u64::from(u32::MAX);
        let plain: u64 = self
            .reloads
            .iter()
            .map(|slot| {
                let v = slot.load(Ordering::Relaxed);
                (v >> 32, v & u64::from(u32::MAX))
            })
            .filter(|(s, n)| *n > 0 && *s <= now_s && now_s - *s < window)
            .map(|(_, n)| n)
            .sum();
        self.blocking.load(Ordering::Relaxed).max(0) + i64::try_from(plain).unwrap_or(i64::MAX)
    }
}

/// Decrements the blocking count on drop.
#[derive(Debug)]
pub struct BlockingGuard(Arc<ViewerMeter>);

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        self.0.blocking.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One stream held by the edge.
#[derive(Debug)]
pub struct StreamState {
    name: Arc<str>,
    tx: watch::Sender<Arc<ServeSnapshot>>,
    closed: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last viewer request.
    last_seen_ms: AtomicU64,
    epoch: Instant,
    viewers: Arc<ViewerMeter>,
    cancel: CancellationToken,
}

impl StreamState {
    fn new(name: Arc<str>, epoch: Instant, cancel: CancellationToken) -> Arc<Self> {
        let st = Arc::new(Self {
            name,
            tx: watch::Sender::new(Arc::new(ServeSnapshot::default())),
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_seen_ms: AtomicU64::new(0),
            epoch,
            viewers: Arc::default(),
            cancel,
        });
        st.touch();
        st
    }

    /// The stream key.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// A receiver of every snapshot change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServeSnapshot>> {
        self.tx.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<ServeSnapshot> {
        self.tx.borrow().clone()
    }

    /// Whether the state ended (its map entry is about to go).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The viewer estimate of this stream.
    pub fn viewers(&self) -> &Arc<ViewerMeter> {
        &self.viewers
    }

    /// Seconds since the edge's epoch (the viewer meter's clock).
    pub fn now_s(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Marks a viewer request in flight until the guard drops; the stream is not idle
    /// while any is.
    pub fn enter(self: &Arc<Self>) -> RequestGuard {
        // No touch here: while the request is in flight the stream is not idle, and
        // the guard touches when it drops.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Read before writing: requests within the same millisecond leave the shared
        // cache line alone.
        if ms > self.last_seen_ms.load(Ordering::Relaxed) {
            self.last_seen_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(
            now.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)),
        ))
    }

    fn publish(&self, playlist: Arc<EdgePlaylist>) {
        self.tx.send_modify(|s| {
            *s = Arc::new(ServeSnapshot {
                version: s.version + 1,
                playlist: Some(playlist),
                closed: None,
                rendered: OnceLock::new(),
                rendered_skip: OnceLock::new(),
            });
        });
    }

    fn close(&self, why: Closed) {
        self.closed.store(true, Ordering::Release);
        self.tx.send_modify(|s| {
            *s = Arc::new(ServeSnapshot {
                version: s.version + 1,
                playlist: s.playlist.clone(),
                closed: Some(why),
                rendered: OnceLock::new(),
                rendered_skip: OnceLock::new(),
            });
        });
    }
}

/// Marks one viewer request in flight.
#[derive(Debug)]
pub struct RequestGuard(Arc<StreamState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Limits of the stream registry.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// No viewer request for this long → unsubscribe and drop the state.
    pub idle_unsubscribe: Duration,
    /// How long an unknown stream is answered 404 without asking upstream again.
    pub negative_ttl: Duration,
    /// Most streams held at once; further streams are refused (503).
    pub max_streams: usize,
    /// Viewer requests are served on runtimes of their own (the HTTP server's I/O
    /// threads): the upstream's work and the stream tasks they start are then sent to
    /// the runtime the registry is made on. Off, everything runs where it is called.
    pub requests_off_runtime: bool,
}

/// Every stream the edge holds.
#[derive(Debug)]
pub struct Streams {
    map: Cache<Arc<str>, Arc<StreamState>>,
    /// Unknown streams, with the upstream's [`Upstream::changes`] count when learnt: an
    /// entry from before the assignments last changed no longer counts (a stream
    /// assigned a moment after a viewer asked is subscribed at once, not a TTL later).
    negative: Cache<Arc<str>, u64>,
    changes: Option<tokio::sync::watch::Receiver<u64>>,
    /// The states in `map`, published for lock-free reads: every viewer request looks
    /// its stream up here first, and goes to `map` (moka: read log, housekeeping,
    /// coalesced subscribe) only for a stream not held yet or closing.
    live: ArcSwap<HashMap<Arc<str>, Arc<StreamState>>>,
    upstream: Arc<dyn Upstream>,
    cache: ObjectCache,
    metrics: Arc<ServeMetrics>,
    cfg: StreamsConfig,
    tasks: TaskTracker,
    cancel: CancellationToken,
    epoch: Instant,
    /// With [`StreamsConfig::requests_off_runtime`], the runtime the registry was made
    /// on: stream tasks run there, not on the HTTP server's I/O threads where the
    /// requests that start them are served.
    home: Option<tokio::runtime::Handle>,
}

impl Streams {
    /// An empty registry.
    pub fn new(
        cfg: StreamsConfig,
        upstream: Arc<dyn Upstream>,
        cache: ObjectCache,
        metrics: Arc<ServeMetrics>,
    ) -> Arc<Self> {
        let home = cfg
            .requests_off_runtime
            .then(tokio::runtime::Handle::try_current)
            .and_then(Result::ok);
        let upstream: Arc<dyn Upstream> = match &home {
            Some(home) => Arc::new(OnHome {
                inner: upstream,
                home: home.clone(),
            }),
            None => upstream,
        };
        Arc::new(Self {
            map: Cache::builder().build(),
            live: ArcSwap::default(),
            negative: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.negative_ttl)
                .build(),
            changes: upstream.changes(),
            upstream,
            cache,
            metrics,
            cfg,
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            epoch: Instant::now(),
            home,
        })
    }

    /// How many times the upstream's assignments changed (0 without a controller).
    fn assignments_version(&self) -> u64 {
        self.changes.as_ref().map_or(0, |rx| *rx.borrow())
    }

    /// Whether `key` is negatively cached under the current assignments.
    async fn known_unknown(&self, key: &Arc<str>) -> bool {
        self.negative.get(key).await == Some(self.assignments_version())
    }

    /// The upstream objects are fetched from.
    pub fn upstream(&self) -> &dyn Upstream {
        &*self.upstream
    }

    /// The object cache.
    pub fn cache(&self) -> &ObjectCache {
        &self.cache
    }

    /// The stream's state, subscribing upstream if the edge does not hold it yet.
    /// Concurrent callers for the same stream share one subscription attempt.
    pub async fn get_or_subscribe(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Arc<StreamState>, UpstreamError> {
        if let Some(st) = self.live.load().get(name) {
            if !st.is_closed() {
                return Ok(st.clone());
            }
        }
        // Boxed: moka's futures are kilobytes, and a held viewer request (a blocking
        // reload, a preload hint) would carry their size for as long as it waits.
        Box::pin(self.subscribe_slow(name)).await
    }

    /// The stream's state through moka: coalesced subscription, negative cache,
    /// replacement of a closed state.
    async fn subscribe_slow(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Arc<StreamState>, UpstreamError> {
        let key: Arc<str> = Arc::from(name);
        // Two rounds: a state that closed (idle, lost, gone) between lookup and use is
        // removed and replaced once.
        for _ in 0..2 {
            if let Some(st) = self.map.get(&key).await {
                if !st.is_closed() {
                    return Ok(st);
                }
                self.remove_if_same(&st).await;
            }
            if self.known_unknown(&key).await {
                self.metrics.subscribe("negative");
                return Err(UpstreamError::NotFound);
            }
            let st = self
                .map
                .try_get_with(key.clone(), self.subscribe_new(key.clone()))
                .await
                .map_err(|e| (*e).clone())?;
            if !st.is_closed() {
                return Ok(st);
            }
            self.remove_if_same(&st).await;
        }
        Err(UpstreamError::Unavailable(
            "the subscription ended at once".to_owned(),
        ))
    }

    async fn subscribe_new(
        self: &Arc<Self>,
        key: Arc<str>,
    ) -> Result<Arc<StreamState>, UpstreamError> {
        // Checked again here: this runs once per coalesced group, after the previous
        // group may have learnt that the stream does not exist.
        if self.known_unknown(&key).await {
            self.metrics.subscribe("negative");
            return Err(UpstreamError::NotFound);
        }
        let version = self.assignments_version();
        if self.map.entry_count() >= self.cfg.max_streams as u64 {
            self.metrics.subscribe("limit");
            return Err(UpstreamError::Unavailable(
                "edge stream limit reached".to_owned(),
            ));
        }
        match self.upstream.subscribe(&key).await {
            Ok(sub) => {
                self.metrics.subscribe("ok");
                let st = StreamState::new(key.clone(), self.epoch, self.cancel.child_token());
                self.metrics.streams.inc();
                self.live.rcu(|live| {
                    let mut live = HashMap::clone(live);
                    live.insert(key.clone(), st.clone());
                    live
                });
                let span = tracing::info_span!("edge_stream", stream = %key);
                let task = run_stream(self.clone(), st.clone(), sub).instrument(span);
                match &self.home {
                    Some(home) => self.tasks.spawn_on(task, home),
                    None => self.tasks.spawn(task),
                };
                Ok(st)
            }
            Err(UpstreamError::NotFound) => {
                self.metrics.subscribe("not_found");
                self.negative.insert(key, version).await;
                Err(UpstreamError::NotFound)
            }
            Err(e) => {
                self.metrics.subscribe("unavailable");
                tracing::warn!(stream = %key, error = %e, "upstream subscribe failed");
                Err(e)
            }
        }
    }

    async fn remove_if_same(&self, st: &Arc<StreamState>) {
        if self
            .live
            .load()
            .get(&st.name)
            .is_some_and(|s| Arc::ptr_eq(s, st))
        {
            self.live.rcu(|live| {
                let mut live = HashMap::clone(live);
                if live.get(&st.name).is_some_and(|s| Arc::ptr_eq(s, st)) {
                    live.remove(&st.name);
                }
                live
            });
        }
        self.map
            .entry(st.name.clone())
            .and_compute_with(|e| {
                let op = match e {
                    Some(e) if Arc::ptr_eq(e.value(), st) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// The streams held now, by name.
    pub fn list(&self) -> Vec<Arc<StreamState>> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|(_, st)| st)
            .filter(|st| !st.is_closed())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Ends every subscription and waits for the stream tasks.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Runs the upstream's work on the edge's own runtime. Viewer requests are served on
/// the HTTP server's I/O threads; what the upstream starts for them (QUIC connections
/// and their drivers, subscription tasks) must outlive those threads and stop in the
/// edge's own shutdown order.
#[derive(Debug)]
struct OnHome {
    inner: Arc<dyn Upstream>,
    home: tokio::runtime::Handle,
}

fn join_error(e: tokio::task::JoinError) -> UpstreamError {
    UpstreamError::Unavailable(format!("upstream task ended: {e}"))
}

impl Upstream for OnHome {
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.changes()
    }

    fn streams(&self) -> Vec<String> {
        self.inner.streams()
    }

    fn subscribe<'a>(
        &'a self,
        stream: &'a str,
    ) -> crate::upstream::BoxFuture<'a, Result<Subscription, UpstreamError>> {
        let (inner, stream) = (self.inner.clone(), stream.to_owned());
        let task = self
            .home
            .spawn(async move { inner.subscribe(&stream).await });
        Box::pin(async move { task.await.unwrap_or_else(|e| Err(join_error(e))) })
    }

    fn fetch<'a>(
        &'a self,
        stream: &'a str,
        object: ferrocast_media::hls::names::Object,
    ) -> crate::upstream::BoxFuture<'a, Result<Bytes, UpstreamError>> {
        let (inner, stream) = (self.inner.clone(), stream.to_owned());
        let task = self
            .home
            .spawn(async move { inner.fetch(&stream, object).await });
        Box::pin(async move { task.await.unwrap_or_else(|e| Err(join_error(e))) })
    }
}

/// Consumes one subscription until the stream is gone, lost, idle or the edge stops.
async fn run_stream(streams: Arc<Streams>, st: Arc<StreamState>, mut sub: Subscription) {
    let metrics = &streams.metrics;
    let labels = StreamLabels {
        stream: st.name.to_string(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            biased;
            _ = st.cancel.cancelled() => break Closed::Shutdown,
            ev = sub.events.recv() => match ev {
                Some(UpstreamEvent::Object { object, bytes, made_at_ms }) => {
                    metrics.objects_received.inc();
                    // 0: the upstream does not know when it was made.
                    if made_at_ms > 0 {
                        let delay_ms = unix_ms().saturating_sub(made_at_ms).max(0);
                        metrics.propagation_delay.observe(delay_ms as f64 / 1000.0);
                    }
                    streams.cache.insert(&st.name, object, bytes).await;
                }
                Some(UpstreamEvent::Playlist(p)) => st.publish(p),
                Some(UpstreamEvent::Gone) => break Closed::Gone,
                None => break Closed::Lost,
            },
            _ = tick.tick() => {
                let snap = st.snapshot();
                let window = snap.playlist.as_ref().map_or(1, |p| u64::from(p.playlist.target_duration));
                metrics.viewers.get_or_create(&labels).set(st.viewers.estimate(st.now_s(), window));
                metrics.cache_size_bytes.set(i64::try_from(streams.cache.weighted_size()).unwrap_or(i64::MAX));
                if st.idle_for().is_some_and(|d| d >= streams.cfg.idle_unsubscribe) {
                    break Closed::Idle;
                }
            }
        }
    };
    // Unsubscribe first, then tell waiters, then leave the map.
    drop(sub);
    match why {
        Closed::Lost => tracing::warn!("upstream subscription ended; next request resubscribes"),
        _ => tracing::info!(reason = ?why, "stream dropped"),
    }
    st.close(why);
    streams.remove_if_same(&st).await;
    metrics.viewers.remove(&labels);
    metrics.streams.dec();
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::playlist;

    #[test]
    fn viewers_are_blocking_requests_plus_recent_reloads() {
        let m = Arc::new(ViewerMeter::default());
        let a = m.blocking();
        let _b = m.blocking();
        m.reload(100);
        m.reload(101);
        m.reload(104);
        assert_eq!(
            m.estimate(104, 4),
            2 + 2,
            "reloads at 101 and 104 are within 4 s"
        );
        assert_eq!(m.estimate(104, 1), 2 + 1);
        drop(a);
        assert_eq!(m.estimate(120, 4), 1);
        // The window is capped by the ring size.
        assert_eq!(m.estimate(104, 1000), 1 + 3);
    }

    #[test]
    fn a_version_is_rendered_once_for_every_viewer() {
        let snap = ServeSnapshot {
            version: 1,
            playlist: Some(Arc::new(playlist(10, 2, 4, 2))),
            ..ServeSnapshot::default()
        };
        let a = snap.prepared(false).expect("rendered").response();
        let b = snap.prepared(false).expect("rendered").response();
        assert_eq!(a.headers(), b.headers());
        let (pa, pb) = (snap.rendered(false).unwrap(), snap.rendered(false).unwrap());
        assert_eq!(pa.as_ptr(), pb.as_ptr(), "one rendering shared");
        assert_eq!(
            pa,
            Bytes::from(hls::render_media(
                &snap.playlist.as_ref().unwrap().playlist,
                &RenderOptions { skip: false }
            ))
        );
        let skip = snap.rendered(true).unwrap();
        assert_ne!(skip.as_ptr(), pa.as_ptr());
        assert!(ServeSnapshot::default().prepared(false).is_none());
    }

    #[test]
    fn reloads_counted_from_both_threads_add_up() {
        let m = Arc::new(ViewerMeter::default());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        m.reload(7);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(m.estimate(7, 1), 20_000);
        // Eight seconds later the slot is reused from zero.
        m.reload(15);
        assert_eq!(m.estimate(15, 1), 1);
    }
}
