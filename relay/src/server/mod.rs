//! The serving end of the relay (protocol: `relay/relay.proto`): a QUIC server with
//! mutual TLS that answers subscriptions by pushing every new init segment and part on
//! its own unidirectional stream, followed by the playlist state that names them, and
//! answers fetches of older objects. It serves any [`Source`] (an origin's streams), so
//! it knows nothing of how snapshots are made.
//!
//! Memory per edge is bounded: a connection has at most `max_pushes_in_flight` pushes
//! started and unwritten; a subscription that cannot push waits (the stream's `watch`
//! keeps only the latest snapshot, so nothing queues behind it) and, when it has fallen
//! more than `skip_after_parts` parts behind, skips ahead to the live tail. The edge
//! fetches what it lacks.
//!
//! This module binds, accepts and keeps connections; `exchange` answers one request
//! stream; `cursor` decides what a subscription pushes next.

mod cursor;
mod exchange;
pub mod metrics;
pub mod source;

use crate::wire::code;
use exchange::RequestCtx;
use ferrocast_media::hls::names;
use ferrocast_tls::ClusterTls;
use metrics::{ReasonLabels, RelayMetrics};
use quinn::{Connection, ConnectionError, Endpoint, VarInt};
use source::{Source, SourceStream};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// A snapshot of a stream of source `S`.
type SnapshotOf<S> = <<S as Source>::Stream as SourceStream>::Snapshot;

/// Limits and deadlines of the relay server.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most edge connections at once; more are refused.
    pub max_connections: usize,
    /// Most requests (subscriptions + fetches) open on one connection.
    pub max_requests_per_connection: u32,
    /// Most pushes started and not yet written, per connection.
    pub max_pushes_in_flight: usize,
    /// A subscriber more than this many parts behind skips ahead to the newest ones.
    pub skip_after_parts: usize,
    /// How long the playlist state waits for the pushes it names to be written.
    pub push_wait: Duration,
    /// How long a fetch of a part that is about to exist waits for it.
    pub fetch_wait: Duration,
    /// Deadline for the first frame of a request.
    pub request_timeout: Duration,
    /// A connection with no traffic for this long is closed (edges send keep-alives).
    pub idle_timeout: Duration,
    /// How long shutdown waits for connections to close.
    pub drain_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_requests_per_connection: 1024,
            max_pushes_in_flight: 32,
            skip_after_parts: 24,
            push_wait: Duration::from_millis(500),
            fetch_wait: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Binds the relay's QUIC endpoint on `addr` with the cluster TLS (client certificates
/// required) and the default limits. Call it inside a tokio runtime.
pub fn server_endpoint(addr: SocketAddr, tls: &ClusterTls) -> io::Result<Endpoint> {
    server_endpoint_with(addr, tls, &RelayConfig::default())
}

/// [`server_endpoint`] with explicit limits.
pub fn server_endpoint_with(
    addr: SocketAddr,
    tls: &ClusterTls,
    cfg: &RelayConfig,
) -> io::Result<Endpoint> {
    let rustls = tls.server_config().map_err(io::Error::other)?;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(rustls).map_err(io::Error::other)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(cfg.max_requests_per_connection))
        // Edges never open unidirectional streams.
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(cfg.idle_timeout).map_err(io::Error::other)?,
        ));
    server.transport_config(Arc::new(transport));
    Endpoint::server(server, addr)
}

struct Ctx<S> {
    source: Arc<S>,
    metrics: Arc<RelayMetrics>,
    cfg: RelayConfig,
}

impl<S: Source> Ctx<S> {
    /// The stream named `name`; a name no stream could have never reaches the source.
    fn get(&self, name: &str) -> Option<Arc<S::Stream>> {
        names::valid_stream_key(name)
            .then(|| self.source.get(name))
            .flatten()
    }
}

/// Serves edges the streams of `source` on `endpoint` until `shutdown` is cancelled,
/// then closes every connection and waits (bounded) for the tasks to end.
pub async fn serve<S: Source>(
    endpoint: Endpoint,
    source: Arc<S>,
    metrics: Arc<RelayMetrics>,
    shutdown: CancellationToken,
) {
    serve_with(endpoint, source, metrics, RelayConfig::default(), shutdown).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with<S: Source>(
    endpoint: Endpoint,
    source: Arc<S>,
    metrics: Arc<RelayMetrics>,
    cfg: RelayConfig,
    shutdown: CancellationToken,
) {
    let local = endpoint.local_addr().ok();
    tracing::info!(addr = ?local, "relay listening");
    let ctx = Arc::new(Ctx {
        source,
        metrics,
        cfg,
    });
    let slots = Arc::new(Semaphore::new(ctx.cfg.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ctx.metrics
                .refused
                .get_or_create(&ReasonLabels { reason: "busy" })
                .inc();
            tracing::warn!(peer = %incoming.remote_address(), "relay connection refused: too many connections");
            incoming.refuse();
            continue;
        };
        let peer = incoming.remote_address();
        let ctx = ctx.clone();
        let token = shutdown.child_token();
        tracker.spawn(
            async move {
                let _slot = slot;
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        let reason = handshake_reason(&e);
                        ctx.metrics
                            .refused
                            .get_or_create(&ReasonLabels { reason })
                            .inc();
                        tracing::warn!(error = %e, reason, "relay handshake failed; edge refused");
                        return;
                    }
                };
                connection(ctx, conn, token).await
            }
            .instrument(tracing::info_span!("relay_conn", %peer)),
        );
    }
    endpoint.close(VarInt::from_u32(code::DONE), b"shutting down");
    tracker.close();
    if timeout(ctx.cfg.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("relay connections did not close in time");
    }
    let _ = timeout(ctx.cfg.drain_timeout, endpoint.wait_idle()).await;
    tracing::info!(addr = ?local, "relay stopped");
}

fn handshake_reason(e: &ConnectionError) -> &'static str {
    match e {
        // 0x100..=0x1ff: a TLS alert carried as a QUIC error (RFC 9001 §4.8).
        ConnectionError::TransportError(t) if (0x100..0x200).contains(&u64::from(t.code)) => "tls",
        ConnectionError::ConnectionClosed(c)
            if (0x100..0x200).contains(&u64::from(c.error_code)) =>
        {
            "tls"
        }
        ConnectionError::TransportError(_) => "transport",
        ConnectionError::TimedOut => "timeout",
        _ => "handshake",
    }
}

async fn connection<S: Source>(ctx: Arc<Ctx<S>>, conn: Connection, token: CancellationToken) {
    ctx.metrics.connections.inc();
    ctx.metrics.connections_open.inc();
    tracing::info!(conn = conn.stable_id(), "edge connected");
    let pushes = Arc::new(Semaphore::new(ctx.cfg.max_pushes_in_flight.max(1)));
    let tracker = TaskTracker::new();
    let why = loop {
        let (send, recv) = tokio::select! {
            _ = token.cancelled() => {
                conn.close(VarInt::from_u32(code::DONE), b"shutting down");
                break "shutdown".to_owned();
            }
            r = conn.accept_bi() => match r {
                Ok(s) => s,
                Err(e) => break e.to_string(),
            },
        };
        let req = RequestCtx {
            ctx: ctx.clone(),
            conn: conn.clone(),
            pushes: pushes.clone(),
            tracker: tracker.clone(),
            token: token.child_token(),
        };
        tracker.spawn(req.run(send, recv).in_current_span());
    };
    // Requests end with the connection; make sure the waiting ones notice.
    token.cancel();
    tracker.close();
    tracker.wait().await;
    ctx.metrics.connections_open.dec();
    match conn.close_reason() {
        Some(ConnectionError::ApplicationClosed(c))
            if c.error_code == VarInt::from_u32(code::DONE) =>
        {
            tracing::info!(reason = why, "edge disconnected")
        }
        Some(ConnectionError::LocallyClosed) | None => {
            tracing::info!(reason = why, "edge connection closed")
        }
        Some(e) => tracing::warn!(reason = %e, "edge connection lost"),
    }
}
