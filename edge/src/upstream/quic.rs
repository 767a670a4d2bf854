//! [`Upstream`] over QUIC to origins (protocol: `proto/relay.proto`).
//!
//! One connection per origin, opened on first use, with exponential backoff after a
//! failure (callers get `Unavailable` at once while backing off, so a dead origin is
//! not hammered). Each subscription runs one task that:
//! - emits pushed objects as they arrive (deduplicated),
//! - holds each playlist state until every part and init it newly names has been
//!   emitted, fetching the missing ones after `hold_timeout` (pushes are on independent
//!   streams and the origin skips ahead for a slow edge),
//! - after a lost connection reconnects and subscribes again with its `have_*` markers,
//!   so the stream goes on where it was; only a stream the origin no longer holds ends
//!   it (`Gone`).
//!
//! Everything is bounded: the event channel, the per-subscription queue of pushed
//! objects, and the number of push streams read at once per connection. A consumer
//! that stops reading stops the reading of its pushes, which the origin sees as flow
//! control and answers by skipping ahead.

use super::{BoxFuture, EdgePlaylist, Subscription, Upstream, UpstreamError, UpstreamEvent};
use bytes::Bytes;
use ferrocast_media::hls::names::{self, Object};
use ferrocast_media::hls::MediaPlaylist;
use ferrocast_proto::frame::{self, FrameError, MAX_CONTROL_MESSAGE, MAX_OBJECT_LEN};
use ferrocast_proto::relay::{
    code, request, Fetch, FetchReply, FetchStatus, ObjectHeader, PlaylistState, Request, Subscribe,
    SubscribeReply,
};
use ferrocast_tls::ClusterTls;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Where a stream is: the holding origin's relay address and the epoch it holds the
/// stream under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginChoice {
    /// The origin's QUIC relay address.
    pub addr: SocketAddr,
    /// The assignment's epoch: an origin answering with a lower one lost the stream
    /// (it is fenced) and is ignored. 0 accepts any origin (no controller).
    pub epoch: u64,
}

/// Which origin holds a stream: the controller's assignments
/// ([`crate::cluster::ControllerOrigins`]), or [`StaticOrigin`] without a controller.
pub trait OriginResolver: Send + Sync + Debug {
    /// The origin holding `stream`, or `None` when no live origin holds it.
    fn resolve(&self, stream: &str) -> Option<OriginChoice>;

    /// A counter bumped whenever an answer of [`resolve`](Self::resolve) may have
    /// changed, so subscriptions move to a new holder at once; `None` if answers never
    /// change.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Whether the resolver knows the cluster's assignments yet: until then a stream it
    /// cannot name is unavailable for now (the viewer retries), not unknown (which the
    /// edge would remember as absent).
    fn ready(&self) -> bool {
        true
    }

    /// Every stream a live origin holds now, as far as the resolver knows (none for a
    /// resolver that only answers per stream).
    fn streams(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Why `resolver` names no origin for a stream: unknown, or not known yet.
fn unresolved(resolver: &dyn OriginResolver) -> UpstreamError {
    if resolver.ready() {
        UpstreamError::NotFound
    } else {
        UpstreamError::Unavailable("origin assignments not known yet".into())
    }
}

/// Every stream is on one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticOrigin(pub SocketAddr);

impl OriginResolver for StaticOrigin {
    fn resolve(&self, _stream: &str) -> Option<OriginChoice> {
        Some(OriginChoice {
            addr: self.0,
            epoch: 0,
        })
    }
}

/// Resolves when `changes` ticks; never without a receiver (or once its sender is gone).
async fn changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *changes = None;
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Limits and deadlines of the QUIC upstream.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// Deadline for establishing a connection (handshake included).
    pub connect_timeout: Duration,
    /// Deadline for the origin's answer to a subscription.
    pub subscribe_timeout: Duration,
    /// Deadline for a whole fetch (request, reply, bytes).
    pub fetch_timeout: Duration,
    /// Events buffered per subscription before the consumer must read.
    pub events_capacity: usize,
    /// Pushed objects queued per subscription before pushes wait.
    pub objects_capacity: usize,
    /// How long a playlist state waits for the objects it names before fetching them.
    pub hold_timeout: Duration,
    /// Fetches run at once to fill in a held playlist's missing objects.
    pub fill_concurrency: usize,
    /// First reconnect delay; doubled after each failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// A subscription whose origin says "not found" after a reconnect keeps trying this
    /// long (the publisher may be coming back) before it reports `Gone`.
    pub resubscribe_grace: Duration,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// A connection silent for this long is dead.
    pub idle_timeout: Duration,
    /// Push streams read at once per connection (also the QUIC stream limit the origin
    /// sees).
    pub max_pushes: u32,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            subscribe_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(5),
            events_capacity: 64,
            objects_capacity: 16,
            hold_timeout: Duration::from_millis(200),
            fill_concurrency: 4,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            resubscribe_grace: Duration::from_secs(15),
            // A killed origin sends nothing: only silence reveals it. Keep-alives every
            // second keep a healthy connection busy, so 3 s of silence means it is gone
            // and the edge resubscribes (to the restarted or reassigned origin) at once.
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            max_pushes: 64,
        }
    }
}

/// The QUIC upstream. Dropping it stops every subscription and closes the connections.
#[derive(Debug)]
pub struct QuicUpstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: QuicConfig,
    resolver: Arc<dyn OriginResolver>,
    client: quinn::ClientConfig,
    /// Client endpoints by address family, bound on first use.
    endpoints: Mutex<[Option<Endpoint>; 2]>,
    origins: Mutex<HashMap<SocketAddr, Arc<OriginConn>>>,
    next_subscription: AtomicU64,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Unavailable(e.to_string())
}

impl QuicUpstream {
    /// An upstream with the cluster identity `tls` and default limits.
    pub fn new(resolver: Arc<dyn OriginResolver>, tls: &ClusterTls) -> io::Result<Self> {
        Self::with_config(resolver, tls, QuicConfig::default())
    }

    /// An upstream with explicit limits. Binds an IPv4 client endpoint now (IPv6 on
    /// first use); must be called inside a tokio runtime.
    pub fn with_config(
        resolver: Arc<dyn OriginResolver>,
        tls: &ClusterTls,
        cfg: QuicConfig,
    ) -> io::Result<Self> {
        let rustls = tls.client_config().map_err(io::Error::other)?;
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(rustls).map_err(io::Error::other)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_uni_streams(VarInt::from_u32(cfg.max_pushes))
            // The origin never opens requests.
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .keep_alive_interval(Some(cfg.keep_alive))
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(cfg.idle_timeout).map_err(io::Error::other)?,
            ));
        client.transport_config(Arc::new(transport));
        let v4 = Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                resolver,
                client,
                endpoints: Mutex::new([Some(v4), None]),
                origins: Mutex::default(),
                next_subscription: AtomicU64::new(1),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        })
    }

    /// Stops every subscription and closes the connections; waits (bounded) for the
    /// tasks to end.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let _ = timeout(Duration::from_secs(5), self.inner.tracker.wait()).await;
        let endpoints: Vec<Endpoint> = lock(&self.inner.endpoints)
            .iter()
            .flatten()
            .cloned()
            .collect();
        for e in endpoints {
            e.close(VarInt::from_u32(code::DONE), b"edge shutting down");
        }
    }
}

impl Drop for QuicUpstream {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
        for e in lock(&self.inner.endpoints).iter().flatten() {
            e.close(VarInt::from_u32(code::DONE), b"edge shutting down");
        }
    }
}

impl Upstream for QuicUpstream {
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.resolver.changes()
    }

    fn streams(&self) -> Vec<String> {
        self.inner.resolver.streams()
    }

    fn subscribe<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Subscription, UpstreamError>> {
        Box::pin(self.inner.clone().subscribe(stream.to_owned()))
    }

    fn fetch<'a>(
        &'a self,
        stream: &'a str,
        object: Object,
    ) -> BoxFuture<'a, Result<Bytes, UpstreamError>> {
        Box::pin(async move {
            // A name no origin could accept never costs a round trip.
            if !names::valid_stream_key(stream) {
                return Err(UpstreamError::NotFound);
            }
            let resolver = self.inner.resolver.as_ref();
            let choice = resolver
                .resolve(stream)
                .ok_or_else(|| unresolved(resolver))?;
            let origin = self.inner.origin(choice.addr);
            let conn = origin.connection(&self.inner).await.map_err(|e| e.error)?;
            self.inner.fetch_on(&conn, stream, object).await
        })
    }
}

/// Why a connection is not available, and until when not to try again.
#[derive(Debug)]
struct ConnectError {
    error: UpstreamError,
    retry_at: Instant,
}

/// One origin: its connection (if any) and the subscriptions routed on it.
#[derive(Debug)]
struct OriginConn {
    addr: SocketAddr,
    /// Async mutex on purpose: concurrent callers wait for one connection attempt
    /// instead of each dialing the origin.
    state: tokio::sync::Mutex<ConnState>,
    /// Pushed objects go to the subscription named in their header.
    routes: Arc<Mutex<HashMap<u64, mpsc::Sender<Pushed>>>>,
}

#[derive(Debug, Default)]
struct ConnState {
    conn: Option<Connection>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// A pushed object, as read off its stream.
#[derive(Debug)]
struct Pushed {
    object: Object,
    bytes: Bytes,
    made_at_ms: i64,
}

impl Inner {
    fn origin(&self, addr: SocketAddr) -> Arc<OriginConn> {
        lock(&self.origins)
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(OriginConn {
                    addr,
                    state: Default::default(),
                    routes: Default::default(),
                })
            })
            .clone()
    }

    fn endpoint(&self, addr: SocketAddr) -> io::Result<Endpoint> {
        let mut eps = lock(&self.endpoints);
        let slot = usize::from(addr.is_ipv6());
        if let Some(e) = &eps[slot] {
            return Ok(e.clone());
        }
        let bind: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let e = Endpoint::client(bind)?;
        eps[slot] = Some(e.clone());
        Ok(e)
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        self.cfg
            .backoff_min
            .saturating_mul(1 << exp)
            .min(self.cfg.backoff_max)
    }

    async fn subscribe(self: Arc<Self>, stream: String) -> Result<Subscription, UpstreamError> {
        if !names::valid_stream_key(&stream) {
            return Err(UpstreamError::NotFound);
        }
        let choice = self
            .resolver
            .resolve(&stream)
            .ok_or_else(|| unresolved(self.resolver.as_ref()))?;
        let mut sub = SubState::new(stream.clone());
        sub.changes = self.resolver.changes();
        let session = sub.open(&self, choice).await.map_err(|e| e.error)?;
        let (tx, rx) = mpsc::channel(self.cfg.events_capacity.max(1));
        let inner = self.clone();
        self.tracker.spawn(
            async move { inner.run_subscription(sub, session, tx).await }
                .instrument(tracing::info_span!("upstream", stream = %stream)),
        );
        Ok(Subscription { events: rx })
    }

    async fn run_subscription(
        self: Arc<Self>,
        mut sub: SubState,
        mut session: Session,
        events: mpsc::Sender<UpstreamEvent>,
    ) {
        loop {
            let choice = session.choice;
            let mut end = sub.run(&self, &mut session, &events).await;
            drop(session);
            if matches!(end, SessionEnd::Gone) {
                // An origin that lost the stream ends it; the new holder goes on.
                if let Some(c) = self.resolver.resolve(&sub.stream) {
                    if c.addr != choice.addr || c.epoch > choice.epoch {
                        end = SessionEnd::Lost("the stream moved".into());
                    }
                }
            }
            match end {
                SessionEnd::Unsubscribed | SessionEnd::Shutdown => return,
                SessionEnd::Gone => {
                    tracing::info!("origin no longer holds the stream");
                    let _ = events.send(UpstreamEvent::Gone).await;
                    return;
                }
                SessionEnd::Lost(why) => {
                    tracing::warn!(reason = %why, "subscription lost; resubscribing")
                }
            }
            match self.resubscribe(&mut sub, &events).await {
                Some(s) => session = s,
                None => return,
            }
        }
    }

    /// Subscribes again with the markers until it works, the stream is gone for longer
    /// than the grace period, or nobody listens any more.
    async fn resubscribe(
        self: &Arc<Self>,
        sub: &mut SubState,
        events: &mpsc::Sender<UpstreamEvent>,
    ) -> Option<Session> {
        let since = Instant::now();
        let mut failures = 0u32;
        loop {
            failures += 1;
            let mut wake = Instant::now() + self.backoff(failures);
            let choice = self.resolver.resolve(&sub.stream);
            if let Some(choice) = choice {
                match sub.open(self, choice).await {
                    Ok(s) => {
                        tracing::info!(attempts = failures, "resubscribed");
                        return Some(s);
                    }
                    Err(ConnectError {
                        error: UpstreamError::NotFound,
                        ..
                    }) => {}
                    Err(e) => {
                        tracing::debug!(error = %e.error, "resubscribe failed");
                        wake = wake.max(e.retry_at);
                    }
                }
            }
            if since.elapsed() > self.cfg.resubscribe_grace {
                tracing::warn!(
                    attempts = failures,
                    "could not resubscribe in time; stream gone"
                );
                let _ = events.send(UpstreamEvent::Gone).await;
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                // A new assignment: try it at once.
                _ = changed(&mut sub.changes) => {}
                _ = events.closed() => return None,
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    #[tracing::instrument(name = "upstream fetch", skip_all, fields(%stream, ?object))]
    async fn fetch_on(
        &self,
        conn: &Connection,
        stream: &str,
        object: Object,
    ) -> Result<Bytes, UpstreamError> {
        let name = match object {
            Object::Init(id) => names::init(id),
            Object::Part(msn, i) => names::part(msn, i),
            Object::Segment(msn) => names::segment(msn),
            Object::MediaPlaylist | Object::Multivariant => {
                return Err(UpstreamError::NoSuchObject)
            }
        };
        let req = Request {
            kind: Some(request::Kind::Fetch(Fetch {
                stream: stream.to_owned(),
                name,
            })),
        };
        let work = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(unavailable)?;
            frame::write_msg(&mut send, &req)
                .await
                .map_err(unavailable)?;
            let _ = send.finish();
            let reply: FetchReply = frame::read_msg(&mut recv, MAX_CONTROL_MESSAGE)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| unavailable("origin closed the fetch without a reply"))?;
            match FetchStatus::try_from(reply.status) {
                Ok(FetchStatus::Ok) => frame::read_body(&mut recv, reply.len, MAX_OBJECT_LEN)
                    .await
                    .map_err(unavailable),
                Ok(FetchStatus::NotFound) => Err(UpstreamError::NoSuchObject),
                Ok(FetchStatus::NoStream) => Err(UpstreamError::NotFound),
                Err(_) => Err(unavailable(format!(
                    "unknown fetch status {}",
                    reply.status
                ))),
            }
        };
        timeout(self.cfg.fetch_timeout, work)
            .await
            .unwrap_or_else(|_| Err(unavailable("fetch timed out")))
    }
}

impl OriginConn {
    /// The live connection, connecting if needed (unless backing off).
    async fn connection(&self, inner: &Arc<Inner>) -> Result<Connection, ConnectError> {
        let mut st = self.state.lock().await;
        if let Some(c) = &st.conn {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        st.conn = None;
        if let Some(at) = st.retry_at {
            if Instant::now() < at {
                return Err(ConnectError {
                    error: unavailable(format!("origin {}: {}", self.addr, st.last_error)),
                    retry_at: at,
                });
            }
        }
        let attempt = async {
            let endpoint = inner.endpoint(self.addr).map_err(unavailable)?;
            let connecting = endpoint
                .connect_with(inner.client.clone(), self.addr, &self.addr.ip().to_string())
                .map_err(unavailable)?;
            timeout(inner.cfg.connect_timeout, connecting)
                .await
                .map_err(|_| unavailable("connect timed out"))?
                .map_err(unavailable)
        };
        match attempt.await {
            Ok(conn) => {
                tracing::info!(origin = %self.addr, "connected to origin");
                st.conn = Some(conn.clone());
                st.failures = 0;
                st.retry_at = None;
                let routes = self.routes.clone();
                let c = conn.clone();
                let token = inner.shutdown.child_token();
                let max = inner.cfg.max_pushes as usize;
                inner.tracker.spawn(
                    accept_pushes(c, routes, max, token)
                        .instrument(tracing::info_span!("origin_conn", origin = %self.addr)),
                );
                Ok(conn)
            }
            Err(error) => {
                st.failures += 1;
                let retry_at = Instant::now() + inner.backoff(st.failures);
                st.retry_at = Some(retry_at);
                st.last_error = error.to_string();
                tracing::warn!(origin = %self.addr, %error, failures = st.failures, "cannot connect to origin");
                Err(ConnectError { error, retry_at })
            }
        }
    }
}

/// Reads the objects the origin pushes on this connection and routes each to its
/// subscription. At most `max` are read (and held, while their subscription's queue
/// is full) at once.
async fn accept_pushes(
    conn: Connection,
    routes: Arc<Mutex<HashMap<u64, mpsc::Sender<Pushed>>>>,
    max: usize,
    token: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let tracker = TaskTracker::new();
    let why = loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("never closed"),
            _ = token.cancelled() => break "shutdown".to_owned(),
        };
        let recv = tokio::select! {
            r = conn.accept_uni() => match r {
                Ok(r) => r,
                Err(e) => break e.to_string(),
            },
            _ = token.cancelled() => break "shutdown".to_owned(),
        };
        let routes = routes.clone();
        let token = token.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = read_push(recv, &routes) => {}
                _ = token.cancelled() => {}
            }
            drop(slot);
        });
    };
    if token.is_cancelled() {
        conn.close(VarInt::from_u32(code::DONE), b"edge shutting down");
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!(reason = %why, "origin connection closed");
}

async fn read_push(mut recv: RecvStream, routes: &Mutex<HashMap<u64, mpsc::Sender<Pushed>>>) {
    let read = async {
        let header: ObjectHeader = frame::read_msg(&mut recv, MAX_CONTROL_MESSAGE)
            .await?
            .ok_or(FrameError::Truncated)?;
        let bytes = frame::read_body(&mut recv, header.len, MAX_OBJECT_LEN).await?;
        Ok::<_, FrameError>((header, bytes))
    };
    let (header, bytes) = match timeout(Duration::from_secs(30), read).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            if e.is_protocol_violation() {
                tracing::warn!(error = %e, "malformed push");
                let _ = recv.stop(VarInt::from_u32(code::PROTOCOL));
            }
            return;
        }
        Err(_) => {
            let _ = recv.stop(VarInt::from_u32(code::PROTOCOL));
            return;
        }
    };
    let object = match names::parse(&header.name) {
        Some(o @ (Object::Init(_) | Object::Part(..))) => o,
        _ => {
            tracing::warn!(name = %header.name.chars().take(80).collect::<String>(), "push of an unknown object");
            return;
        }
    };
    let tx = lock(routes).get(&header.subscription).cloned();
    if let Some(tx) = tx {
        // Waits while the subscription is behind; `recv` is held meanwhile, so the
        // origin's stream credit stays used and it slows down.
        let _ = tx
            .send(Pushed {
                object,
                bytes,
                made_at_ms: header.made_at_ms,
            })
            .await;
    }
    drop(recv);
}

/// Removes a subscription's route when its session ends.
#[derive(Debug)]
struct Route {
    routes: Arc<Mutex<HashMap<u64, mpsc::Sender<Pushed>>>>,
    id: u64,
}

impl Drop for Route {
    fn drop(&mut self) {
        lock(&self.routes).remove(&self.id);
    }
}

/// One subscribe exchange on one connection.
#[derive(Debug)]
struct Session {
    /// Whom the session is with, to notice the stream moving elsewhere.
    choice: OriginChoice,
    conn: Connection,
    send: SendStream,
    /// Taken by the frame reader while the session runs.
    recv: Option<RecvStream>,
    objects: mpsc::Receiver<Pushed>,
    _route: Route,
}

enum SessionEnd {
    Unsubscribed,
    Shutdown,
    Gone,
    Lost(String),
}

/// A playlist state waiting for the objects it names.
#[derive(Debug)]
struct Held {
    playlist: Arc<EdgePlaylist>,
    /// Objects it newly names that were not emitted yet.
    missing: Vec<Object>,
    /// When to stop waiting for pushes and fetch.
    deadline: Instant,
    /// Edge clock when it arrived (stands in for made_at of fetched objects).
    arrived_ms: i64,
    /// Fill rounds so far; after a few the playlist goes out regardless.
    fills: u32,
}

/// What a subscription has delivered, carried across sessions.
#[derive(Debug)]
struct SubState {
    stream: String,
    /// Objects emitted (pruned as the window moves).
    emitted: HashSet<Object>,
    /// Highest init id emitted.
    have_init: Option<u64>,
    /// Last part named by the last emitted playlist.
    boundary: Option<(u64, u32)>,
    /// The last emitted playlist.
    last: Option<Arc<EdgePlaylist>>,
    held: Option<Held>,
    /// Objects the origin answered "no such object" for: a state naming one is stale.
    vanished: HashSet<Object>,
    /// The resolver's change counter, if its answers can change.
    changes: Option<tokio::sync::watch::Receiver<u64>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SubState {
    fn new(stream: String) -> Self {
        Self {
            stream,
            emitted: HashSet::new(),
            have_init: None,
            boundary: None,
            last: None,
            held: None,
            vanished: HashSet::new(),
            changes: None,
        }
    }

    /// Connects (if needed) and subscribes with the current markers.
    async fn open(
        &mut self,
        inner: &Arc<Inner>,
        choice: OriginChoice,
    ) -> Result<Session, ConnectError> {
        let origin = inner.origin(choice.addr);
        let conn = origin.connection(inner).await?;
        let lost = |e: String| ConnectError {
            error: UpstreamError::Unavailable(e),
            retry_at: Instant::now() + inner.cfg.backoff_min,
        };
        let id = inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        let (tx, objects) = mpsc::channel(inner.cfg.objects_capacity.max(1));
        // Routed before asking: pushes may overtake the reply.
        lock(&origin.routes).insert(id, tx);
        let route = Route {
            routes: origin.routes.clone(),
            id,
        };
        let req = Request {
            kind: Some(request::Kind::Subscribe(Subscribe {
                stream: self.stream.clone(),
                subscription: id,
                have_init_id: self.have_init,
                have_msn: self.boundary.map(|b| b.0),
                have_part: self.boundary.map(|b| b.1),
            })),
        };
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            frame::write_msg(&mut send, &req)
                .await
                .map_err(|e| e.to_string())?;
            let reply: SubscribeReply = frame::read_msg(&mut recv, MAX_CONTROL_MESSAGE)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("origin closed the subscription without a reply")?;
            Ok::<_, String>((send, recv, reply.found, reply.epoch))
        };
        let (send, recv, found, epoch) = timeout(inner.cfg.subscribe_timeout, exchange)
            .await
            .map_err(|_| lost("subscribe timed out".into()))?
            .map_err(lost)?;
        if found && epoch < choice.epoch {
            // A fenced origin (it lost the stream while frozen or cut off): not a source.
            tracing::info!(
                origin = %choice.addr,
                epoch,
                current = choice.epoch,
                "ignoring an origin that holds the stream under a stale epoch"
            );
        }
        if !found || epoch < choice.epoch {
            return Err(ConnectError {
                error: UpstreamError::NotFound,
                retry_at: Instant::now() + inner.cfg.backoff_min,
            });
        }
        Ok(Session {
            choice,
            conn,
            send,
            recv: Some(recv),
            objects,
            _route: route,
        })
    }

    async fn run(
        &mut self,
        inner: &Arc<Inner>,
        s: &mut Session,
        events: &mpsc::Sender<UpstreamEvent>,
    ) -> SessionEnd {
        // Frames are read by their own task: a frame read is not cancel-safe.
        let (state_tx, mut states) = mpsc::channel::<Result<Option<PlaylistState>, FrameError>>(2);
        let Some(mut recv) = s.recv.take() else {
            return SessionEnd::Lost("session already used".into());
        };
        let reader_token = inner.shutdown.child_token();
        let reader = {
            let token = reader_token.clone();
            inner.tracker.spawn(async move {
                loop {
                    let r = tokio::select! {
                        r = frame::read_msg::<_, PlaylistState>(&mut recv, MAX_CONTROL_MESSAGE) => r,
                        _ = token.cancelled() => return recv,
                    };
                    let end = !matches!(r, Ok(Some(_)));
                    if state_tx.send(r).await.is_err() || end {
                        return recv;
                    }
                }
            })
        };
        let end = self.session_loop(inner, s, &mut states, events).await;
        reader_token.cancel();
        if let Ok(mut recv) = reader.await {
            if matches!(end, SessionEnd::Unsubscribed | SessionEnd::Shutdown) {
                let _ = recv.stop(VarInt::from_u32(code::UNSUBSCRIBED));
            }
        }
        if matches!(end, SessionEnd::Unsubscribed | SessionEnd::Shutdown) {
            let _ = s.send.reset(VarInt::from_u32(code::UNSUBSCRIBED));
        }
        end
    }

    async fn session_loop(
        &mut self,
        inner: &Arc<Inner>,
        s: &mut Session,
        states: &mut mpsc::Receiver<Result<Option<PlaylistState>, FrameError>>,
        events: &mpsc::Sender<UpstreamEvent>,
    ) -> SessionEnd {
        let mut ended = false;
        let mut saw_end = false;
        loop {
            let deadline = self.held.as_ref().map(|h| h.deadline);
            tokio::select! {
                biased;
                _ = inner.shutdown.cancelled() => return SessionEnd::Shutdown,
                _ = events.closed() => return SessionEnd::Unsubscribed,
                _ = changed(&mut self.changes) => {
                    // Moved to another origin or a newer epoch: follow it. No answer
                    // (the holder's lease expired) keeps the session: the origin may still
                    // be serving, and the data path must not depend on the controller.
                    if let Some(c) = inner.resolver.resolve(&self.stream) {
                        if c.addr != s.choice.addr || c.epoch > s.choice.epoch {
                            tracing::info!(from = %s.choice.addr, to = %c.addr, epoch = c.epoch, "stream moved to another origin");
                            return SessionEnd::Lost("the stream moved".into());
                        }
                    }
                }
                p = s.objects.recv() => {
                    // The route lives as long as the session, so `None` cannot happen.
                    let Some(p) = p else { continue };
                    if !self.emit_object(p.object, p.bytes, p.made_at_ms, events).await {
                        return SessionEnd::Unsubscribed;
                    }
                }
                st = states.recv(), if !ended => match st {
                    Some(Ok(Some(state))) => {
                        saw_end = state.ended;
                        self.hold(state, inner.cfg.hold_timeout);
                    }
                    // The origin ends a stream with a last state marked ended, then
                    // closes; a close without it (a relay shutting down) is a lost
                    // session, not the end of the stream.
                    Some(Ok(None)) if saw_end => ended = true,
                    Some(Ok(None)) => {
                        return SessionEnd::Lost("the origin closed the subscription".into())
                    }
                    Some(Err(e)) => {
                        if e.is_protocol_violation() {
                            tracing::warn!(error = %e, "malformed playlist state");
                            s.conn.close(VarInt::from_u32(code::PROTOCOL), b"malformed playlist state");
                        }
                        return SessionEnd::Lost(e.to_string());
                    }
                    None => return SessionEnd::Lost("reader ended".into()),
                },
                _ = sleep_until_opt(deadline) => {
                    if !self.fill(inner, &s.conn, events).await {
                        return SessionEnd::Unsubscribed;
                    }
                }
            }
            if self.held.as_ref().is_some_and(|h| h.missing.is_empty())
                && !self.release(events).await
            {
                return SessionEnd::Unsubscribed;
            }
            if ended && self.held.is_none() {
                return SessionEnd::Gone;
            }
        }
    }

    /// Emits an object unless already emitted. False when nobody listens any more.
    async fn emit_object(
        &mut self,
        object: Object,
        bytes: Bytes,
        made_at_ms: i64,
        events: &mpsc::Sender<UpstreamEvent>,
    ) -> bool {
        if !self.emitted.insert(object) {
            return true;
        }
        if let Object::Init(id) = object {
            self.have_init = self.have_init.max(Some(id));
        }
        if let Some(h) = &mut self.held {
            h.missing.retain(|o| *o != object);
        }
        events
            .send(UpstreamEvent::Object {
                object,
                bytes,
                made_at_ms,
            })
            .await
            .is_ok()
    }

    /// Holds a new playlist state until the objects it newly names were emitted. A
    /// newer state replaces a held one (it names a superset).
    fn hold(&mut self, state: PlaylistState, wait: Duration) {
        let playlist = Arc::new(EdgePlaylist {
            playlist: state.playlist(),
            codecs: state.codecs,
            resolution: state.resolution.map(|r| (r.width, r.height)),
            frame_rate: state.frame_rate,
            bandwidth: state.bandwidth,
        });
        let named = self.named(&playlist);
        let p = &playlist.playlist;
        let oldest_init = p.segments.first().map_or(p.next_init_id, |s| s.init_id);
        self.vanished.retain(|o| match o {
            Object::Part(m, _) => *m >= p.media_sequence,
            Object::Init(id) => *id >= oldest_init,
            _ => false,
        });
        if !self.vanished.is_empty() && listed_parts(p).any(|o| self.vanished.contains(&o)) {
            // Older than what the origin holds now: a newer state follows.
            tracing::debug!(version = state.version, "outdated playlist state dropped");
            return;
        }
        let missing = named
            .into_iter()
            .filter(|o| !self.emitted.contains(o))
            .collect();
        // The wait (and the fill rounds) started with the oldest held state.
        let (deadline, fills) = self
            .held
            .as_ref()
            .map_or_else(|| (Instant::now() + wait, 0), |h| (h.deadline, h.fills));
        self.held = Some(Held {
            playlist,
            missing,
            deadline,
            arrived_ms: now_ms(),
            fills,
        });
    }

    /// The parts and inits `p` names that are new since the last emitted playlist.
    fn named(&self, p: &EdgePlaylist) -> Vec<Object> {
        let p = &p.playlist;
        let mut out = Vec::new();
        let mut inits: Vec<u64> = p.segments.iter().map(|s| s.init_id).collect();
        if !p.pending_parts.is_empty() {
            inits.push(p.next_init_id);
        }
        inits.sort_unstable();
        inits.dedup();
        out.extend(inits.into_iter().map(Object::Init));
        for o in listed_parts(p) {
            let Object::Part(msn, i) = o else { continue };
            let new = match (self.boundary, &self.last) {
                (Some(b), _) => (msn, i) > b,
                // The playlists so far named no part (a stream without media yet):
                // every part is new.
                (None, Some(_)) => true,
                // First playlist: the live segment's parts (older ones are fetched on
                // demand by whoever needs them).
                (None, None) => msn == p.next_msn,
            };
            if new {
                out.push(Object::Part(msn, i));
            }
        }
        out
    }

    /// Fetches the held playlist's missing objects. False when nobody listens.
    async fn fill(
        &mut self,
        inner: &Arc<Inner>,
        conn: &Connection,
        events: &mpsc::Sender<UpstreamEvent>,
    ) -> bool {
        let Some(held) = &mut self.held else {
            return true;
        };
        held.deadline = Instant::now() + inner.cfg.hold_timeout;
        held.fills += 1;
        if held.fills > MAX_FILLS {
            tracing::warn!(missing = ?held.missing, "objects still missing; playlist released without them");
            held.missing.clear();
            return true;
        }
        let missing = held.missing.clone();
        let made_at = held.arrived_ms;
        tracing::debug!(count = missing.len(), "fetching objects not pushed in time");
        let slots = Arc::new(Semaphore::new(inner.cfg.fill_concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for object in missing.iter().copied() {
            let inner = inner.clone();
            let conn = conn.clone();
            let stream = self.stream.clone();
            let slots = slots.clone();
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                (object, inner.fetch_on(&conn, &stream, object).await)
            });
        }
        let mut fetched = Vec::new();
        let mut vanished = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let Ok((object, r)) = r else { continue };
            match r {
                Ok(bytes) => fetched.push((object, bytes)),
                Err(UpstreamError::NoSuchObject) => vanished.push(object),
                // The stream itself is gone: its final state follows; don't wait.
                Err(UpstreamError::NotFound) => {
                    if let Some(h) = &mut self.held {
                        h.missing.retain(|o| *o != object);
                    }
                }
                Err(e) => tracing::debug!(?object, error = %e, "fill fetch failed"),
            }
        }
        if !vanished.is_empty() {
            // The state names objects the origin no longer holds: it is outdated (we
            // fell behind), and a newer state is on its way because the window moved.
            // Drop it rather than announce parts nobody can serve, and stop asking for
            // what vanished.
            tracing::debug!(count = vanished.len(), "held playlist outdated; dropped");
            self.vanished.extend(vanished);
            self.held = None;
        }
        // Emit in order (inits first, then parts by position).
        fetched.sort_by_key(|(o, _)| match o {
            Object::Init(id) => (0, *id, 0),
            Object::Part(m, i) => (1, *m, *i),
            _ => (2, 0, 0),
        });
        for (object, bytes) in fetched {
            if !self.emit_object(object, bytes, made_at, events).await {
                return false;
            }
        }
        true
    }

    /// Emits the held playlist. False when nobody listens.
    async fn release(&mut self, events: &mpsc::Sender<UpstreamEvent>) -> bool {
        let Some(held) = self.held.take() else {
            return true;
        };
        let p = &held.playlist.playlist;
        let last_part = if !p.pending_parts.is_empty() {
            Some((p.next_msn, p.pending_parts.len() as u32 - 1))
        } else {
            p.segments
                .iter()
                .rev()
                .find(|s| !s.parts.is_empty())
                .map(|s| (s.msn, s.parts.len() as u32 - 1))
        };
        self.boundary = self.boundary.max(last_part);
        // Forget what slid out of the window.
        let first = p.media_sequence;
        let oldest_init = p.segments.first().map_or(p.next_init_id, |s| s.init_id);
        self.emitted.retain(|o| match o {
            Object::Part(m, _) => *m >= first,
            Object::Init(id) => *id >= oldest_init,
            _ => false,
        });
        if self.last.as_deref() == Some(&*held.playlist) {
            return true;
        }
        self.last = Some(held.playlist.clone());
        events
            .send(UpstreamEvent::Playlist(held.playlist))
            .await
            .is_ok()
    }
}

/// Every part a playlist lists, in order.
fn listed_parts(p: &MediaPlaylist) -> impl Iterator<Item = Object> + '_ {
    p.segments
        .iter()
        .flat_map(|s| (0..s.parts.len()).map(move |i| (s.msn, i)))
        .chain((0..p.pending_parts.len()).map(|i| (p.next_msn, i)))
        .filter_map(|(msn, i)| Some(Object::Part(msn, u32::try_from(i).ok()?)))
}

/// Fill rounds before a held playlist goes out with objects still missing.
const MAX_FILLS: u32 = 3;

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_media::hls::{PartInfo, SegmentInfo};
    use ferrocast_proto::relay::VariantInfo;

    fn part() -> PartInfo {
        PartInfo {
            duration: 0.2,
            independent: true,
        }
    }

    /// A playlist with complete segments `msns` (each of `parts` parts) and `pending`
    /// parts of the next one.
    fn playlist(msns: std::ops::Range<u64>, parts: usize, pending: usize) -> PlaylistState {
        let p = MediaPlaylist {
            target_duration: 1,
            part_target: 0.2,
            media_sequence: msns.start,
            discontinuity_sequence: 0,
            segments: msns
                .clone()
                .map(|msn| SegmentInfo {
                    msn,
                    duration: 1.0,
                    program_date_time_ms: 0,
                    discontinuity: false,
                    init_id: 0,
                    parts: vec![part(); parts],
                })
                .collect(),
            next_msn: msns.end,
            next_init_id: 0,
            next_discontinuity: false,
            next_program_date_time_ms: None,
            pending_parts: vec![part(); pending],
            ended: false,
        };
        PlaylistState::new(1, &p, VariantInfo::default())
    }

    fn missing(s: &SubState) -> Vec<Object> {
        s.held
            .as_ref()
            .map(|h| h.missing.clone())
            .unwrap_or_default()
    }

    async fn emit(s: &mut SubState, o: Object, tx: &mpsc::Sender<UpstreamEvent>) {
        assert!(s.emit_object(o, Bytes::new(), 0, tx).await);
    }

    #[tokio::test]
    async fn playlists_wait_for_what_they_newly_name() {
        let (tx, mut rx) = mpsc::channel(100);
        let wait = Duration::from_secs(1);
        let mut s = SubState::new("s".into());
        // First playlist: the init and the live segment's parts.
        s.hold(playlist(0..2, 5, 2), wait);
        assert_eq!(
            missing(&s),
            [Object::Init(0), Object::Part(2, 0), Object::Part(2, 1)]
        );
        emit(&mut s, Object::Part(2, 1), &tx).await;
        emit(&mut s, Object::Init(0), &tx).await;
        assert_eq!(missing(&s), [Object::Part(2, 0)]);
        emit(&mut s, Object::Part(2, 0), &tx).await;
        assert!(missing(&s).is_empty());
        assert!(s.release(&tx).await);
        assert_eq!(s.boundary, Some((2, 1)));
        // The segment closes with one more part, and a new one starts.
        emit(&mut s, Object::Part(2, 2), &tx).await;
        s.hold(playlist(0..3, 3, 1), wait);
        assert_eq!(missing(&s), [Object::Part(3, 0)]);
        // A newer state replaces the held one and names a superset.
        s.hold(playlist(0..3, 3, 2), wait);
        assert_eq!(missing(&s), [Object::Part(3, 0), Object::Part(3, 1)]);
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 5, "four objects, once each, and the playlist");
        // Nothing twice.
        emit(&mut s, Object::Part(2, 2), &tx).await;
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_stream_without_media_then_with_media() {
        let (tx, _rx) = mpsc::channel(100);
        let mut s = SubState::new("s".into());
        s.hold(playlist(0..0, 0, 0), Duration::from_secs(1));
        assert!(missing(&s).is_empty());
        assert!(s.release(&tx).await);
        assert_eq!(s.boundary, None);
        // Everything the next playlist names is new, complete segments included.
        s.hold(playlist(0..1, 2, 1), Duration::from_secs(1));
        assert_eq!(
            missing(&s),
            [
                Object::Init(0),
                Object::Part(0, 0),
                Object::Part(0, 1),
                Object::Part(1, 0)
            ]
        );
    }

    #[tokio::test]
    async fn states_naming_vanished_objects_are_dropped() {
        let mut s = SubState::new("s".into());
        s.vanished.insert(Object::Part(5, 0));
        s.hold(playlist(4..6, 2, 1), Duration::from_secs(1));
        assert!(s.held.is_none(), "outdated state dropped");
        // Once the window moved past it, states are held again and the set shrinks.
        s.hold(playlist(6..8, 2, 1), Duration::from_secs(1));
        assert!(s.held.is_some());
        assert!(s.vanished.is_empty());
    }
}
