//! The pulling end of the relay: an [`Upstream`] over QUIC to origins (protocol:
//! `relay/relay.proto`), asking an [`OriginResolver`] which origin holds each stream.
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
//!
//! `conn` keeps one origin's connection and routes its pushes; `subscription` is
//! one subscription's state machine; this module resolves, fetches and resubscribes.

mod conn;
mod subscription;

use crate::frame::{self, MAX_CONTROL_MESSAGE, MAX_OBJECT_LEN};
use crate::wire::{code, object_name, request, Fetch, FetchReply, FetchStatus, Request};
use bytes::Bytes;
use conn::{ConnectError, OriginConn};
use ferrocast_agent::origins::OriginResolver;
use ferrocast_media::hls::names::{self, Object};
use ferrocast_serve::upstream::{BoxFuture, Subscription, Upstream, UpstreamError, UpstreamEvent};
use ferrocast_tls::ClusterTls;
use quinn::{Connection, Endpoint, VarInt};
use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use subscription::{Session, SessionEnd, SubState};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Why `resolver` names no origin for a stream: unknown, or not known yet.
fn unresolved(resolver: &dyn OriginResolver) -> UpstreamError {
    if resolver.ready() {
        UpstreamError::NotFound
    } else {
        UpstreamError::Unavailable("origin assignments not known yet".into())
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

impl Inner {
    fn origin(&self, addr: SocketAddr) -> Arc<OriginConn> {
        lock(&self.origins)
            .entry(addr)
            .or_insert_with(|| Arc::new(OriginConn::new(addr)))
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
        let Some(name) = object_name(object) else {
            return Err(UpstreamError::NoSuchObject);
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
