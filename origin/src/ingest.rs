//! RTMP ingest: the listeners (RTMP, and RTMPS on its own port), per-IP and total
//! connection limits shared by both, and one task per connection that drives the
//! sans-IO [`ServerSession`] with deadlines. RTMPS is the same code path over a TLS
//! stream: the TLS handshake counts against the handshake timeout. Any protocol, TLS or
//! limit violation closes only that connection, with a log line naming the reason.

use crate::metrics::{OriginMetrics, ReasonLabels};
use crate::stream::{valid_key, ClaimError, Credential, Publisher, Streams};
use bytes::Bytes;
use ferrocast_media::rtmp::{Limits, RtmpError, ServerEvent, ServerSession, MAX_QUERY_LEN};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Limits and deadlines of the RTMP listener.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// A connection must have completed the handshake and started publishing within
    /// this time; until then, traffic does not extend it (a client that trickles part of
    /// a message, or never publishes, holds a connection for this long at most).
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A write that cannot complete in this time (peer not reading) closes the connection.
    pub write_timeout: Duration,
    /// Most RTMP connections at once.
    pub max_connections: usize,
    /// Most RTMP connections from one IP address at once.
    pub max_connections_per_ip: usize,
    /// Chunk, message and buffer limits of the protocol decoder.
    pub limits: Limits,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_ip: 32,
            limits: Limits::default(),
        }
    }
}

/// Counts connections per IP; a guard gives its slot back on drop.
#[derive(Debug, Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

#[derive(Debug)]
struct PerIpGuard {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn try_acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpGuard {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut c = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// Accepts RTMP connections on `listener`, and RTMPS connections on `tls` when given,
/// until `shutdown`, then closes them (publishers reconnect to another origin; what they
/// sent is already packaged). Both listeners share the connection limits.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    cfg: IngestConfig,
    streams: Arc<Streams>,
    metrics: Arc<OriginMetrics>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        total: Arc::new(Semaphore::new(cfg.max_connections)),
        per_ip: Arc::new(PerIp::default()),
        tracker: TaskTracker::new(),
        cfg: Arc::new(cfg),
        streams,
        metrics,
        shutdown,
    });
    let plain = accept_loop(listener, None, shared.clone());
    let secure = async {
        if let Some((l, config)) = tls {
            accept_loop(
                l,
                Some(tokio_rustls::TlsAcceptor::from(config)),
                shared.clone(),
            )
            .await;
        }
    };
    tokio::join!(plain, secure);
    shared.tracker.close();
    shared.tracker.wait().await;
}

/// What the accept loops share.
struct Shared {
    total: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    tracker: TaskTracker,
    cfg: Arc<IngestConfig>,
    streams: Arc<Streams>,
    metrics: Arc<OriginMetrics>,
    shutdown: CancellationToken,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let scheme = if tls.is_some() { "rtmps" } else { "rtmp" };
    loop {
        let (sock, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, scheme, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = &shared.metrics;
        let Ok(permit) = shared.total.clone().try_acquire_owned() else {
            reject(metrics, "too_many_connections", peer);
            continue;
        };
        let Some(ip_guard) = shared
            .per_ip
            .try_acquire(peer.ip(), shared.cfg.max_connections_per_ip)
        else {
            reject(metrics, "too_many_connections_from_ip", peer);
            continue;
        };
        metrics.ingest_connections.inc();
        let (shared2, tls) = (shared.clone(), tls.clone());
        let span = tracing::info_span!("rtmp", conn = %peer, scheme);
        let task = async move {
            let _guards = (permit, ip_guard);
            let Shared {
                cfg,
                streams,
                metrics,
                shutdown,
                ..
            } = &*shared2;
            metrics.ingest_connections_open.inc();
            // One deadline for the TLS and the RTMP handshakes together.
            let handshake_by = Instant::now() + cfg.handshake_timeout;
            let result = match tls {
                None => {
                    Connection::new(sock, peer, cfg, streams, handshake_by)
                        .run(shutdown)
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout_at(handshake_by, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => {
                            Connection::new(tls, peer, cfg, streams, handshake_by)
                                .run(shutdown)
                                .await
                        }
                        Ok(Err(e)) => Err(ConnError::Tls(e)),
                        Err(_) => Err(ConnError::HandshakeTimeout),
                    }
                }
            };
            match result {
                Ok(()) => tracing::info!(%peer, "rtmp connection closed"),
                Err(e) => {
                    tracing::warn!(%peer, reason = %e, "rtmp connection closed on error");
                    metrics
                        .ingest_rejected
                        .get_or_create(&ReasonLabels { reason: e.label() })
                        .inc();
                }
            }
            metrics.ingest_connections_open.dec();
        };
        shared.tracker.spawn(task.instrument(span));
    }
}

fn reject(metrics: &OriginMetrics, reason: &'static str, peer: SocketAddr) {
    tracing::warn!(%peer, reason, "rtmp connection refused");
    metrics
        .ingest_rejected
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The handshake did not complete in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Nothing arrived for the idle timeout.
    #[error("idle timeout")]
    IdleTimeout,
    /// The peer did not read what we sent.
    #[error("write timed out")]
    WriteTimeout,
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Malformed RTMP or a protocol limit.
    #[error("protocol: {0}")]
    Protocol(#[from] ferrocast_media::rtmp::RtmpError),
    /// Malformed media or a packaging limit.
    #[error("media: {0}")]
    Media(#[from] crate::stream::IngestError),
    /// Publish refused.
    #[error("publish refused: {0}")]
    Refused(String),
    /// The RTMPS client's TLS handshake failed (plain RTMP or garbage on the RTMPS port,
    /// no common cipher suite).
    #[error("tls handshake: {0}")]
    Tls(std::io::Error),
}

impl ConnError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::Io(_) => "io",
            Self::Protocol(RtmpError::TooLong { .. }) => "too_long",
            Self::Protocol(_) => "protocol",
            Self::Media(_) => "media",
            Self::Refused(_) => "publish_refused",
            Self::Tls(_) => "tls_handshake",
        }
    }
}

/// Batches a publisher's reads. A 3 Mbps stream arrives as ~80 small messages a
/// second; waking for each costs more CPU than parsing it. Once publishing, the socket's
/// low-water mark is set to about [`ReadPacer::BATCH`] worth of the measured bitrate,
/// so the kernel wakes us for several messages at a time while adding at most that much
/// delay. Re-measured every second, so a bitrate drop lowers the mark quickly.
#[derive(Debug, Default)]
struct ReadPacer {
    window_start: Option<Instant>,
    bytes: usize,
    applied: usize,
}

impl ReadPacer {
    /// Added delay budget per batch.
    const BATCH: Duration = Duration::from_millis(30);
    /// Upper bound of the mark, whatever the bitrate.
    const MAX_LOWAT: usize = 16 * 1024;

    /// Counts a read; returns a new low-water mark when it should change.
    fn on_read(&mut self, n: usize, now: Instant, publishing: bool) -> Option<usize> {
        if !publishing {
            self.window_start = None;
            self.bytes = 0;
            return (self.applied > 1).then(|| {
                self.applied = 1;
                1
            });
        }
        let start = *self.window_start.get_or_insert(now);
        self.bytes += n;
        let elapsed = now - start;
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let rate = self.bytes as f64 / elapsed.as_secs_f64();
        let target = ((rate * Self::BATCH.as_secs_f64()) as usize).clamp(1, Self::MAX_LOWAT);
        self.window_start = Some(now);
        self.bytes = 0;
        // Small changes are not worth a syscall.
        let changed = target.abs_diff(self.applied) * 4 > self.applied.max(1);
        changed.then(|| {
            self.applied = target;
            target
        })
    }
}

/// A publisher's byte stream: plain TCP or TLS over it.
trait IngestIo: AsyncRead + AsyncWrite + Unpin {
    /// The TCP socket underneath (for socket options).
    fn tcp(&self) -> &TcpStream;
}

impl IngestIo for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl IngestIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

struct Connection<'a, S> {
    sock: S,
    handshake_by: Instant,
    peer: SocketAddr,
    cfg: &'a IngestConfig,
    streams: &'a Arc<Streams>,
    session: ServerSession,
    publisher: Option<(u32, Publisher)>,
}

/// Cheap non-cryptographic randomness for the handshake's S1 (it only has to differ
/// between connections; RTMP's handshake is no security boundary).
fn handshake_random(peer: SocketAddr) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ u64::from(peer.port()).rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    (0..1528)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl<'a, S: IngestIo> Connection<'a, S> {
    fn new(
        sock: S,
        peer: SocketAddr,
        cfg: &'a IngestConfig,
        streams: &'a Arc<Streams>,
        handshake_by: Instant,
    ) -> Self {
        let _ = sock.tcp().set_nodelay(true);
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u32)
            .unwrap_or(0);
        let session = ServerSession::new(cfg.limits.clone(), &handshake_random(peer), epoch);
        Self {
            sock,
            handshake_by,
            peer,
            cfg,
            streams,
            session,
            publisher: None,
        }
    }

    #[tracing::instrument(name = "publish session", skip_all, fields(peer = %self.peer))]
    async fn run(mut self, shutdown: &CancellationToken) -> Result<(), ConnError> {
        let mut buf = vec![0u8; 64 * 1024];
        // One timer for the connection, pushed forward at most once a second: a timer
        // per read would cost more than the read.
        let deadline = tokio::time::sleep_until(self.handshake_by);
        tokio::pin!(deadline);
        let mut idle_from = None::<Instant>;
        let mut pacer = ReadPacer::default();
        loop {
            let n = tokio::select! {
                biased;
                r = self.sock.read(&mut buf) => r?,
                _ = &mut deadline => {
                    return Err(if idle_from.is_some() { ConnError::IdleTimeout } else { ConnError::HandshakeTimeout });
                }
                _ = shutdown.cancelled() => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            let now = Instant::now();
            let fed = self.session.feed(&buf[..n]);
            // Events parsed before an error still count: media already accepted is kept.
            let handled = self.handle_events().await;
            self.flush().await?;
            fed?;
            handled?;
            // Only a publisher earns the idle deadline (from the read that carried its
            // publish on): before that, bytes that never make a publish (a partial
            // message, a trickle) do not keep the connection open past the handshake's.
            if self.publisher.is_some()
                && idle_from.is_none_or(|t| now - t >= Duration::from_secs(1))
            {
                idle_from = Some(now);
                deadline.as_mut().reset(now + self.cfg.idle_timeout);
            }
            if let Some(lowat) = pacer.on_read(n, now, self.publisher.is_some()) {
                if let Err(error) = ferrocast_runtime::net::set_recv_lowat(self.sock.tcp(), lowat) {
                    tracing::debug!(%error, "SO_RCVLOWAT not applied");
                }
            }
        }
    }

    async fn handle_events(&mut self) -> Result<(), ConnError> {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                ServerEvent::Publish {
                    stream_id,
                    app,
                    name,
                    ..
                } => self.on_publish(stream_id, &app, &name).await?,
                ServerEvent::Video {
                    stream_id,
                    timestamp,
                    payload,
                } => self.on_media(stream_id, timestamp, payload, true)?,
                ServerEvent::Audio {
                    stream_id,
                    timestamp,
                    payload,
                } => self.on_media(stream_id, timestamp, payload, false)?,
                ServerEvent::Unpublish { stream_id }
                    if self
                        .publisher
                        .as_ref()
                        .is_some_and(|(id, _)| *id == stream_id) =>
                {
                    self.publisher = None;
                }
                ServerEvent::Play { stream_id, .. } => {
                    self.session.reject_play(
                        stream_id,
                        "RTMP playback is not offered; play the HLS stream instead",
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn on_publish(&mut self, stream_id: u32, app: &str, name: &str) -> Result<(), ConnError> {
        let (app, app_query) = match app.split_once('?') {
            Some((a, q)) => (a, Some(q.trim_end_matches('/'))),
            None => (app, None),
        };
        let app = app.trim_end_matches('/');
        let (key, query) = name.split_once('?').unwrap_or((name, ""));
        // A credential may also come with the application (rtmp://h/live?key=…/STREAM).
        let query = match app_query {
            Some(q) if query.is_empty() => q,
            _ => query,
        };
        let refusal = if app != "live" {
            Some(format!(
                "unknown application {app:?}: publish to rtmp://host/live/KEY"
            ))
        } else if self.publisher.is_some() {
            Some("this connection is already publishing".to_owned())
        } else if !valid_key(key) {
            Some(ClaimError::InvalidKey(key.chars().take(80).collect()).to_string())
        } else if query.len() > MAX_QUERY_LEN {
            // The session caps each query already; this holds whichever one is used.
            Some(format!(
                "publish query of {} bytes is longer than the limit of {MAX_QUERY_LEN}",
                query.len()
            ))
        } else {
            let credential = Credential {
                query: query.to_owned(),
                client_ip: Some(self.peer.ip()),
            };
            match self.streams.publish_with(key, &credential).await {
                Ok(p) => {
                    self.publisher = Some((stream_id, p));
                    self.session.accept_publish(stream_id);
                    tracing::info!(peer = %self.peer, stream = key, "publishing");
                    None
                }
                Err(e) => {
                    match &e {
                        // The reason, never the credential.
                        ClaimError::Unauthorized(_, why) => {
                            tracing::warn!(peer = %self.peer, stream = key, reason = %why, "publisher refused: unauthorized");
                        }
                        ClaimError::Denied(_, why) => {
                            tracing::warn!(peer = %self.peer, stream = key, reason = %why, "publisher refused: admission");
                        }
                        ClaimError::Refused(_, why) => {
                            tracing::warn!(peer = %self.peer, stream = key, reason = %why, "publisher refused: the controller answered with an error");
                        }
                        ClaimError::Unreachable(_, why) => {
                            tracing::warn!(peer = %self.peer, stream = key, reason = %why, "publisher refused: controller unreachable");
                        }
                        _ => {}
                    }
                    Some(e.to_string())
                }
            }
        };
        match refusal {
            None => Ok(()),
            Some(reason) => {
                self.session
                    .reject_publish(stream_id, "NetStream.Publish.BadName", &reason);
                Err(ConnError::Refused(reason))
            }
        }
    }

    fn on_media(
        &mut self,
        stream_id: u32,
        ts: u32,
        payload: Bytes,
        video: bool,
    ) -> Result<(), ConnError> {
        let Some((id, p)) = &mut self.publisher else {
            return Ok(());
        };
        if *id != stream_id {
            return Ok(());
        }
        if video {
            p.video(ts, &payload)?;
        } else {
            p.audio(ts, &payload)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        while let Some(out) = self.session.take_output() {
            timeout(self.cfg.write_timeout, self.sock.write_all(&out))
                .await
                .map_err(|_| ConnError::WriteTimeout)??;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_pacer_follows_the_bitrate_and_resets_when_publishing_stops() {
        let mut p = ReadPacer::default();
        let t0 = Instant::now();
        assert_eq!(
            p.on_read(1000, t0, false),
            None,
            "nothing to undo before publishing"
        );
        // 375 KB/s (3 Mbps) in 100 reads over a second → 30 ms worth ≈ 11 KB.
        let mut got = None;
        for i in 0..=100u64 {
            got = got.or(p.on_read(3750, t0 + Duration::from_millis(i * 10), true));
        }
        let mark = got.expect("a mark after one second");
        assert!((10_000..=12_000).contains(&mark), "{mark}");
        // Same rate: no new syscall.
        let mut again = None;
        for i in 101..=201u64 {
            again = again.or(p.on_read(3750, t0 + Duration::from_millis(i * 10), true));
        }
        assert_eq!(again, None);
        // A very fast stream is capped.
        let mut capped = None;
        for i in 202..=302u64 {
            capped = capped.or(p.on_read(60_000, t0 + Duration::from_millis(i * 10), true));
        }
        assert_eq!(capped, Some(ReadPacer::MAX_LOWAT));
        // Publishing stopped: back to waking on every byte.
        assert_eq!(p.on_read(10, t0 + Duration::from_secs(4), false), Some(1));
        assert_eq!(p.on_read(10, t0 + Duration::from_secs(5), false), None);
    }
}
