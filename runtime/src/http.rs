//! The HTTP server loop shared by nodes: HTTP/1.1 and HTTP/2 (h2c by prior knowledge) on
//! one port, a graceful drain on cancellation, and the limits that keep one client from
//! locking everyone out (see [`ServerLimits`]): a connection cap below the descriptor
//! limit with a per-address fair share, a deadline for the first request, idle and send
//! timeouts, HTTP/2 keep-alive PINGs, capped header buffers and a deep accept queue.

use crate::body::ChunksBody;
use crate::config::ConfigError;
pub use crate::conn::HttpMetrics;
use crate::conn::{self, Addresses, ConnState, Reason, Timeouts};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Request and response types every handler uses.
pub type Request = http::Request<Incoming>;
/// Response with a zero-copy body.
pub type Response = http::Response<ChunksBody>;

/// The remote address of the connection a request came on, in the request's extensions
/// (`req.extensions().get::<PeerAddr>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Limits of the HTTP server loop. Each has a flag (`--http-*`, see the CLI) and shows
/// in [`HttpMetrics`] when it closes or refuses a connection.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Most connections served at once; past it new ones are accepted and closed at
    /// once (`refused_total{reason="full"}`). The default is the descriptor limit less
    /// a reserve ([`crate::net::default_max_connections`]).
    pub max_connections: usize,
    /// From this share of `max_connections` on (percent), an address may open a new
    /// connection only below its fair share: `max(1, max_connections / (2 × addresses
    /// connected))` (`refused_total{reason="per_address"}`; an IPv6 /64 counts as one
    /// address). Below it, any address may connect, so one NAT or load tool can use
    /// most of the listener on its own.
    pub fair_share_from_percent: u8,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_grace: Duration,
    /// From accept to the first complete request, TLS handshake and HTTP/2 preface
    /// included; also the longest an HTTP/1.1 request header may take to arrive.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress (HTTP/1.1 between keep-alive requests,
    /// HTTP/2 with no open stream) is closed after this long.
    pub idle_timeout: Duration,
    /// A connection sending a response of which the peer takes nothing (a reader that
    /// stopped reading, an HTTP/2 window kept shut) is closed after this long. Time a
    /// handler takes before its response (an LL-HLS blocking reload) does not count.
    pub send_timeout: Duration,
    /// HTTP/2: send a PING after this long without a frame from the peer (`None`: never).
    pub http2_keepalive_interval: Option<Duration>,
    /// HTTP/2: close the connection when a PING is not answered within this.
    pub http2_keepalive_timeout: Duration,
    /// Most bytes of request header held per connection: HTTP/1.1 read buffer, HTTP/2
    /// header list (at least 8 KiB, hyper's smallest buffer).
    pub max_header_bytes: usize,
    /// Length of the kernel's queue of connections not yet accepted (capped by
    /// `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Serve HTTPS with this configuration (ALPN picks h2 or http/1.1); plaintext
    /// HTTP/1.1 and h2c when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve connections on this many threads of their own, each with its own event
    /// loop and timers, the way nginx runs one worker process per core; `None`: on the
    /// caller's runtime. A multi-thread tokio runtime has a single I/O driver that one
    /// worker polls at a time, so on a busy machine its workers end up taking turns
    /// rather than serving side by side. Handlers then run on those threads: what they
    /// spawn belongs there, and ends when the server stops.
    pub io_threads: Option<usize>,
    /// Where connections opened, closed and refused are counted (`None`: nowhere).
    pub metrics: Option<HttpMetrics>,
    /// The `listener` label of those metrics (`edge`, `origin`, `controller`, ...).
    pub name: &'static str,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: crate::net::default_max_connections(),
            fair_share_from_percent: 75,
            drain_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            http2_keepalive_interval: Some(Duration::from_secs(20)),
            http2_keepalive_timeout: Duration::from_secs(20),
            max_header_bytes: 32 * 1024,
            listen_backlog: 4096,
            tls: None,
            io_threads: None,
            metrics: None,
            name: "http",
        }
    }
}

impl ServerLimits {
    /// Checks every limit; the error names the flag (`http-...`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = ConfigError::invalid;
        let positive = |d: Duration| !d.is_zero() && d <= Duration::from_secs(86_400);
        if self.max_connections == 0 {
            return invalid("http-max-connections", "must be at least 1");
        }
        if let Some(limit) = crate::net::descriptor_limit() {
            if self.max_connections as u64 >= limit {
                return invalid(
                    "http-max-connections",
                    &format!(
                        "{} is not below the descriptor limit ({limit}, ulimit -n): a flood \
                         would exhaust descriptors before the cap refuses it",
                        self.max_connections
                    ),
                );
            }
        }
        if !(1..=100).contains(&self.fair_share_from_percent) {
            return invalid(
                "http-fair-share-from",
                "must be between 1 and 100 (percent)",
            );
        }
        if !positive(self.header_read_timeout) {
            return invalid("http-header-timeout", "must be between 1 ms and a day");
        }
        if !positive(self.idle_timeout) {
            return invalid("http-idle-timeout", "must be between 1 ms and a day");
        }
        if !positive(self.send_timeout) {
            return invalid("http-send-timeout", "must be between 1 ms and a day");
        }
        if self.http2_keepalive_interval.is_some_and(|d| !positive(d)) {
            return invalid("http2-keepalive-interval", "must be between 1 ms and a day");
        }
        if !positive(self.http2_keepalive_timeout) {
            return invalid("http2-keepalive-timeout", "must be between 1 ms and a day");
        }
        if !(8192..=1024 * 1024).contains(&self.max_header_bytes) {
            return invalid("http-max-header-bytes", "must be between 8K and 1M");
        }
        if !(1..=65_535).contains(&self.listen_backlog) {
            return invalid("http-listen-backlog", "must be between 1 and 65535");
        }
        Ok(())
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            first_request: self.header_read_timeout,
            idle: self.idle_timeout,
            send: self.send_timeout,
        }
    }
}

/// What every connection of one server shares.
struct Shared {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    timeouts: Timeouts,
    metrics: Option<HttpMetrics>,
    name: &'static str,
}

impl Shared {
    fn closed(&self, reason: Reason) {
        if let Some(m) = &self.metrics {
            m.closed(self.name, reason);
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets open connections finish their requests for up to `limits.drain_grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    limits: ServerLimits,
    shutdown: CancellationToken,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    if let Err(error) = crate::net::set_listen_backlog(&listener, limits.listen_backlog) {
        tracing::warn!(%error, backlog = limits.listen_backlog, "cannot resize the accept queue");
    }
    let tracker = TaskTracker::new();
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // The idle timeout (ours) decides between requests; hyper's timer, which also
        // runs while waiting for the next request, is only the backstop.
        .header_read_timeout(limits.header_read_timeout.max(limits.idle_timeout))
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true)
        // While a request is in flight, do not read ahead to detect the client going
        // away: that read needs a fresh read buffer (the old one is still shared with
        // the request being answered), i.e. 8 KiB more per held request, and an edge
        // holds a blocking reload and a preload hint per LL-HLS viewer all the time.
        // A client that left is noticed when its answer is written instead, which
        // for a held request is within one part (or the block timeout).
        .half_close(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    let shared = Arc::new(Shared {
        h1,
        h2,
        timeouts: limits.timeouts(),
        metrics: limits.metrics.clone(),
        name: limits.name,
    });
    if let Some(m) = &limits.metrics {
        m.set_limit(limits.name, limits.max_connections);
    }
    let share_from = (limits.max_connections * usize::from(limits.fair_share_from_percent)) / 100;
    let addresses = Addresses::new(
        limits.max_connections,
        share_from,
        limits.metrics.as_ref(),
        limits.name,
    );
    let acceptor = limits.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut shards = match IoThreads::start(limits.io_threads.unwrap_or(0)) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot start the HTTP I/O threads; serving on the runtime");
            IoThreads::default()
        }
    };

    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Refused connections are accepted and closed at once rather than left in the
        // accept queue: the client learns now, and the queue stays free for others.
        let slot = match addresses.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                if let Some(m) = &limits.metrics {
                    m.refused(limits.name, reason);
                }
                tracing::debug!(%peer, reason = ?reason, "connection refused");
                continue;
            }
        };
        let accepted_at = tokio::time::Instant::now();
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shared = shared.clone();
        // A child token per connection: the connection task polls its token on every
        // wake-up, and polling takes the token node's lock; one shared node would be a
        // lock every connection of every worker thread contends on.
        let shutdown = shutdown.child_token();
        let acceptor = acceptor.clone();
        let shard = shards.next();
        // On an I/O thread, the socket must be registered with that thread's driver.
        let stream = match shard {
            None => Ok(Accepted::Here(stream)),
            Some(_) => stream.into_std().map(Accepted::HandedOver),
        };
        let stream = match stream {
            Ok(s) => s,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection over");
                continue;
            }
        };
        let connection = async move {
            let _slot = slot;
            let stream = match stream.register() {
                Ok(s) => s,
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot register the connection");
                    return;
                }
            };
            // The TLS handshake and the first request share one deadline from accept
            // (the watchdog's first-request timeout counts from the same instant).
            let deadline = accepted_at + shared.timeouts.first_request;
            let reason = match acceptor {
                None => {
                    serve_connection(stream, peer, accepted_at, &shared, handler, &shutdown).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, accepted_at, &shared, handler, &shutdown)
                                .await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            Reason::Tls
                        }
                        Err(_) => Reason::FirstRequest,
                    }
                }
            };
            if reason != Reason::Peer {
                tracing::debug!(%peer, reason = ?reason, "http connection closed");
            }
            shared.closed(reason);
        };
        match shard {
            None => tracker.spawn(connection),
            Some(handle) => tracker.spawn_on(connection, &handle),
        };
    }
    tracker.close();
    if tokio::time::timeout(limits.drain_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("http drain grace elapsed with connections still open");
    }
    drop(shards);
}

/// How long an idle HTTP/2 connection gets to see its GOAWAY out before it is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Serves one accepted connection (plain or TLS) until it ends, overstays a limit, or
/// shutdown drains it; why it ended.
async fn serve_connection<I, H, F>(
    mut io: I,
    peer: std::net::SocketAddr,
    accepted_at: tokio::time::Instant,
    shared: &Shared,
    handler: H,
    shutdown: &CancellationToken,
) -> Reason
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    // HTTP/1 or 2 is told by the first bytes, under the first-request deadline: a
    // connection that sends nothing, or a part of the HTTP/2 preface, is closed then.
    let deadline = accepted_at + shared.timeouts.first_request;
    let sniffed = tokio::select! {
        r = tokio::time::timeout_at(deadline, conn::sniff(&mut io)) => r,
        _ = shutdown.cancelled() => return Reason::Shutdown,
    };
    let (is_h2, prefix) = match sniffed {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Reason::Peer,
        Err(_) => return Reason::FirstRequest,
    };
    let state = ConnState::new(accepted_at);
    let svc_state = state.clone();
    let svc = service_fn(move |mut req: Request| {
        let guard = svc_state.request();
        req.extensions_mut().insert(PeerAddr(peer));
        // Called here, not inside the future: no clone of the handler per request.
        let response = handler(req);
        async move {
            let response = response.await;
            Ok::<_, std::convert::Infallible>(response.map(|body| guard.into_body(body)))
        }
    });
    let io = TokioIo::new(conn::Rewind::new(prefix, io));
    if is_h2 {
        let conn = shared.h2.serve_connection(io, svc);
        drive(conn, true, &state, shared.timeouts, peer, shutdown).await
    } else {
        let conn = shared.h1.serve_connection(io, svc).with_upgrades();
        drive(conn, false, &state, shared.timeouts, peer, shutdown).await
    }
}

/// A hyper connection of either version.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs `conn` against its watchdog and the shutdown token.
async fn drive<C: Graceful>(
    conn: C,
    is_h2: bool,
    state: &ConnState,
    timeouts: Timeouts,
    peer: std::net::SocketAddr,
    shutdown: &CancellationToken,
) -> Reason {
    tokio::pin!(conn);
    let ended = |res: hyper::Result<()>| match res {
        Ok(()) => Reason::Peer,
        Err(e) if e.is_parse_too_large() => Reason::HeaderTooLarge,
        Err(e) if e.is_timeout() && is_h2 => Reason::PingTimeout,
        Err(e) if e.is_timeout() => Reason::HeaderTimeout,
        Err(error) => {
            tracing::debug!(%peer, %error, "http connection ended with error");
            Reason::Peer
        }
    };
    let reason = tokio::select! {
        res = conn.as_mut() => return ended(res),
        reason = state.watch(timeouts) => reason,
        _ = shutdown.cancelled() => Reason::Shutdown,
    };
    match reason {
        // Drain: finish what is in flight (bounded by the server's drain grace), still
        // under the watchdog, so a stalled reader does not hold the drain up.
        Reason::Shutdown => {
            conn.as_mut().graceful();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = state.watch(timeouts) => {}
            }
        }
        // An idle HTTP/2 client is told by GOAWAY not to reuse the connection.
        Reason::Idle if is_h2 => {
            conn.as_mut().graceful();
            let _ = tokio::time::timeout(GOAWAY_GRACE, conn.as_mut()).await;
        }
        // Anything else is closed by dropping it.
        _ => {}
    }
    reason
}

/// The server's own I/O threads: one current-thread runtime each, fed connections
/// round-robin; they stop when this is dropped (dropping what still runs on them).
#[derive(Debug, Default)]
struct IoThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: usize,
    stop: CancellationToken,
}

impl IoThreads {
    fn start(n: usize) -> std::io::Result<Self> {
        let mut threads = IoThreads::default();
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let stop = threads.stop.clone();
            std::thread::Builder::new()
                .name(format!("http-io-{i}"))
                .spawn(move || rt.block_on(stop.cancelled()))?;
            threads.handles.push(handle);
        }
        Ok(threads)
    }

    /// The thread for the next connection; `None` without threads.
    fn next(&mut self) -> Option<tokio::runtime::Handle> {
        let h = self
            .handles
            .get(self.next % self.handles.len().max(1))?
            .clone();
        self.next = self.next.wrapping_add(1);
        Some(h)
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A connection accepted on the caller's runtime, or handed over as a std socket to be
/// registered with the driver of the I/O thread that serves it.
enum Accepted {
    Here(tokio::net::TcpStream),
    HandedOver(std::net::TcpStream),
}

impl Accepted {
    fn register(self) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Accepted::Here(s) => Ok(s),
            Accepted::HandedOver(s) => tokio::net::TcpStream::from_std(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Requests on I/O threads are answered there, keep-alive works, and cancelling
    /// drains and stops the server.
    #[tokio::test]
    async fn io_threads_serve_and_stop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let limits = ServerLimits {
            io_threads: Some(2),
            ..ServerLimits::default()
        };
        let handler = |_req: Request| async {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            crate::respond::text(
                http::StatusCode::OK,
                if thread.starts_with("http-io-") {
                    "io\n"
                } else {
                    "runtime\n"
                },
            )
        };
        let server = tokio::spawn(serve(listener, handler, limits, shutdown.clone()));
        let deadline = Duration::from_secs(10);
        for _ in 0..3 {
            let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
            for _ in 0..2 {
                c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("write");
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.ends_with(b"io\n") && !got.ends_with(b"runtime\n") {
                    let n = tokio::time::timeout(deadline, c.read(&mut buf))
                        .await
                        .expect("answered in time")
                        .expect("read");
                    assert!(n > 0, "closed early");
                    got.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&got);
                assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                assert!(text.ends_with("\r\n\r\nio\n"), "{text}");
            }
        }
        shutdown.cancel();
        tokio::time::timeout(deadline, server)
            .await
            .expect("stopped in time")
            .expect("server task");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    /// Timeouts short enough for a test, long enough for a loaded machine to meet them.
    fn short_limits(metrics: &HttpMetrics) -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_millis(600),
            idle_timeout: Duration::from_millis(600),
            send_timeout: Duration::from_millis(600),
            metrics: Some(metrics.clone()),
            name: "test",
            ..ServerLimits::default()
        }
    }

    /// `/big`: 64 MiB, more than any socket buffers; `/held`: answered after 2 s (as
    /// an LL-HLS blocking reload is); anything else: `ok`.
    async fn test_handler(req: Request) -> Response {
        match req.uri().path() {
            "/big" => {
                http::Response::new(ChunksBody::full(bytes::Bytes::from(vec![7u8; 64 << 20])))
            }
            "/held" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                crate::respond::text(http::StatusCode::OK, "held\n")
            }
            _ => crate::respond::text(http::StatusCode::OK, "ok\n"),
        }
    }

    async fn start(limits: ServerLimits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, test_handler, limits, shutdown.clone()));
        (addr, shutdown)
    }

    fn closed(m: &HttpMetrics, reason: &'static str) -> u64 {
        m.closed
            .get_or_create(&crate::conn::ReasonLabels {
                listener: "test",
                reason,
            })
            .get()
    }

    /// `closed(m, reason)` once it is non-zero (the server counts a close after the
    /// client may have seen it), or 0 after a second.
    async fn counted(m: &HttpMetrics, reason: &'static str) -> u64 {
        for _ in 0..100 {
            let n = closed(m, reason);
            if n > 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        0
    }

    /// Reads (and drops) whatever comes until the server closes `c`; how long that took
    /// from `since`. Panics if `c` is still open after `within`.
    async fn closed_by_server(
        c: &mut tokio::net::TcpStream,
        since: tokio::time::Instant,
        within: Duration,
    ) -> Duration {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match tokio::time::timeout_at(since + within, c.read(&mut buf)).await {
                Err(_) => panic!("still open after {within:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
                Ok(Ok(_)) => {}
            }
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_at_the_first_request_deadline() {
        let m = HttpMetrics::default();
        let (addr, _stop) = start(short_limits(&m)).await;
        let t0 = tokio::time::Instant::now();
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let took = closed_by_server(&mut c, t0, Duration::from_secs(5)).await;
        assert!(took >= Duration::from_millis(500), "closed early: {took:?}");
        assert_eq!(counted(&m, "first_request_timeout").await, 1);
    }

    #[tokio::test]
    async fn a_half_sent_http2_preface_is_closed_at_the_first_request_deadline() {
        let m = HttpMetrics::default();
        let (addr, _stop) = start(short_limits(&m)).await;
        let t0 = tokio::time::Instant::now();
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
        let took = closed_by_server(&mut c, t0, Duration::from_secs(5)).await;
        assert!(took >= Duration::from_millis(500), "closed early: {took:?}");
        // A complete preface with no request after it meets the same deadline.
        let t0 = tokio::time::Instant::now();
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .expect("write");
        let took = closed_by_server(&mut c, t0, Duration::from_secs(5)).await;
        assert!(took >= Duration::from_millis(500), "closed early: {took:?}");
        assert_eq!(counted(&m, "first_request_timeout").await, 2);
    }

    #[tokio::test]
    async fn an_idle_h2c_connection_is_closed_after_the_idle_timeout() {
        let m = HttpMetrics::default();
        let (addr, _stop) = start(short_limits(&m)).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        let conn = tokio::spawn(conn);
        // Two requests 400 ms apart: activity keeps it open past one idle timeout.
        for _ in 0..2 {
            let req = http::Request::get(format!("http://{addr}/"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request");
            let res = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
                .await
                .expect("answered in time")
                .expect("response");
            assert_eq!(res.status(), http::StatusCode::OK);
            drop(res);
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let idle_since = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("closed by the server in time")
            .expect("connection task")
            .ok();
        assert!(idle_since.elapsed() >= Duration::from_millis(100));
        // The client sees the GOAWAY before the server task ends and counts it.
        assert_eq!(counted(&m, "idle_timeout").await, 1);
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_closed_after_the_send_timeout() {
        let m = HttpMetrics::default();
        let (addr, _stop) = start(short_limits(&m)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Read nothing for a while: the socket buffers fill and the response stalls.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t0 = tokio::time::Instant::now();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match tokio::time::timeout_at(t0 + Duration::from_secs(10), c.read(&mut buf)).await {
                Err(_) => panic!("still open"),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got += n,
            }
        }
        assert!(got < 64 << 20, "the whole body was sent ({got} bytes)");
        assert_eq!(counted(&m, "send_timeout").await, 1);
    }

    #[tokio::test]
    async fn an_h2_stream_whose_window_stays_shut_is_closed_after_the_send_timeout() {
        let m = HttpMetrics::default();
        let (addr, _stop) = start(short_limits(&m)).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // The client grants no window: not one byte of a response can be sent, while the
        // connection itself stays lively (SETTINGS, PINGs).
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake(TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
        let conn = tokio::spawn(conn);
        let req = http::Request::get(format!("http://{addr}/big"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let res = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("headers in time")
            .expect("response");
        assert_eq!(res.status(), http::StatusCode::OK);
        let shut_since = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("closed by the server in time")
            .expect("connection task")
            .ok();
        assert!(shut_since.elapsed() >= Duration::from_millis(300));
        assert_eq!(counted(&m, "send_timeout").await, 1);
        drop(res);
    }

    #[tokio::test]
    async fn an_h2_peer_that_does_not_answer_pings_is_closed() {
        let m = HttpMetrics::default();
        let (addr, _stop) = start(ServerLimits {
            http2_keepalive_interval: Some(Duration::from_millis(300)),
            http2_keepalive_timeout: Duration::from_millis(300),
            ..short_limits(&m)
        })
        .await;
        // By hand, so nothing answers the PINGs: preface, empty SETTINGS, and a held
        // request (`GET /held`; HPACK :method GET, :scheme http, literal :path), which
        // keeps the idle and send timeouts out of the way.
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let mut block = vec![0x82, 0x86, 0x04, 5];
        block.extend_from_slice(b"/held");
        frames.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
        frames.extend_from_slice(&block);
        c.write_all(&frames).await.expect("write");
        let t0 = tokio::time::Instant::now();
        let took = closed_by_server(&mut c, t0, Duration::from_secs(5)).await;
        assert!(
            took < Duration::from_secs(2),
            "closed after the hold: {took:?}"
        );
        assert_eq!(counted(&m, "ping_timeout").await, 1);
    }

    #[tokio::test]
    async fn a_request_header_past_the_buffer_cap_is_refused() {
        let m = HttpMetrics::default();
        let (addr, _stop) = start(short_limits(&m)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let big = "a".repeat(40 * 1024);
        // The server may close before taking it all; the answer is what matters.
        let _ = c
            .write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
            .await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
            .await
            .expect("closed in time");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        assert_eq!(counted(&m, "header_too_large").await, 1);
    }

    #[tokio::test]
    async fn a_held_request_and_a_slow_steady_reader_are_not_cut_off() {
        let m = HttpMetrics::default();
        let (addr, _stop) = start(short_limits(&m)).await;
        // Held three times as long as every timeout before its first byte.
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /held HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(String::from_utf8_lossy(&got).ends_with("held\n"));
        // A reader taking 64 MiB in pauses shorter than the send timeout gets it all.
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut total = 0usize;
        let mut buf = vec![0u8; 4 << 20];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let n = tokio::time::timeout_at(deadline, c.read(&mut buf))
                .await
                .expect("in time")
                .expect("read");
            if n == 0 {
                break;
            }
            total += n;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(total > 64 << 20, "{total} bytes");
        assert_eq!(closed(&m, "send_timeout") + closed(&m, "idle_timeout"), 0);
    }
}
