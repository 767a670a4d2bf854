//! What keeps an HTTP connection honest: the state each connection is in (waiting for
//! its first request, handling, sending, idle between requests), a watchdog that closes
//! the ones that stop doing their part, the per-address table behind the fair-share rule,
//! and the metrics of both. The server loop (`http.rs`) wires them together.
//!
//! Time is kept as milliseconds since the connection was accepted, in atomics, so that
//! the hot path (every poll of a response body) is one clock read and one relaxed store,
//! and the watchdog sleeps until the earliest deadline the state allows instead of
//! ticking: a few thousand idle viewers cost no wake-ups between their deadlines.

use crate::body::ChunksBody;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Why the server closed (or refused) a connection; the `reason` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No complete first request (nor TLS handshake, nor HTTP/2 preface) in time.
    FirstRequest,
    /// No request in progress for the idle timeout (HTTP/1.1 keep-alive, HTTP/2 with
    /// no open stream).
    Idle,
    /// A response had nothing accepted by the peer for the send timeout.
    SendStall,
    /// HTTP/2 keep-alive PING unanswered.
    PingTimeout,
    /// An HTTP/1.1 request header not complete within the header timeout.
    HeaderTimeout,
    /// A request header larger than the header buffer.
    HeaderTooLarge,
    /// The peer closed, or a protocol error ended the connection.
    Peer,
    /// The TLS handshake failed.
    Tls,
    /// Drained at shutdown.
    Shutdown,
    /// Refused: every slot taken.
    Full,
    /// Refused: the address holds its fair share while the listener is filling up.
    PerAddress,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::FirstRequest => "first_request_timeout",
            Reason::Idle => "idle_timeout",
            Reason::SendStall => "send_timeout",
            Reason::PingTimeout => "ping_timeout",
            Reason::HeaderTimeout => "header_timeout",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::Peer => "peer",
            Reason::Tls => "tls",
            Reason::Shutdown => "shutdown",
            Reason::Full => "full",
            Reason::PerAddress => "per_address",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) listener: &'static str,
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// The HTTP servers' connection metrics, one set per process (a standalone's edge and
/// origin share it, told apart by the `listener` label):
/// `ferrocast_http_connections_open{listener}`,
/// `ferrocast_http_connections_limit{listener}` (the connection cap in force),
/// `ferrocast_http_connections_closed_total{listener,reason}` and
/// `ferrocast_http_connections_refused_total{listener,reason}`.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    open: Family<ListenerLabels, Gauge>,
    limit: Family<ListenerLabels, Gauge>,
    pub(crate) closed: Family<ReasonLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
}

impl HttpMetrics {
    /// The process's set, registered into `registry` on first use.
    pub fn shared(registry: &crate::metrics::Metrics) -> Self {
        registry.shared(|reg| {
            let m = HttpMetrics::default();
            reg.register(
                "ferrocast_http_connections_open",
                "HTTP connections open",
                m.open.clone(),
            );
            reg.register(
                "ferrocast_http_connections_limit",
                "Most HTTP connections served at once",
                m.limit.clone(),
            );
            reg.register(
                "ferrocast_http_connections_closed",
                "HTTP connections closed, by reason",
                m.closed.clone(),
            );
            reg.register(
                "ferrocast_http_connections_refused",
                "HTTP connections refused on accept, by reason",
                m.refused.clone(),
            );
            m
        })
    }

    pub(crate) fn set_limit(&self, listener: &'static str, limit: usize) {
        self.limit
            .get_or_create(&ListenerLabels { listener })
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    pub(crate) fn closed(&self, listener: &'static str, reason: Reason) {
        let reason = reason.label();
        self.closed
            .get_or_create(&ReasonLabels { listener, reason })
            .inc();
    }

    pub(crate) fn refused(&self, listener: &'static str, reason: Reason) {
        let reason = reason.label();
        self.refused
            .get_or_create(&ReasonLabels { listener, reason })
            .inc();
    }

    fn open_gauge(&self, listener: &'static str) -> Gauge {
        self.open
            .get_or_create(&ListenerLabels { listener })
            .clone()
    }
}

/// The timeouts the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// From accept to the first complete request.
    pub first_request: Duration,
    /// With no request in progress, after the last one ended.
    pub idle: Duration,
    /// With a response being sent, without the peer taking any of it.
    pub send: Duration,
}

/// What one connection is doing, shared by its requests, its response bodies and its
/// watchdog.
#[derive(Debug)]
pub(crate) struct ConnState {
    start: Instant,
    /// Requests whose header arrived (ever).
    seen: AtomicU64,
    /// Requests being handled or sent.
    in_flight: AtomicUsize,
    /// Response bodies not yet sent to the end.
    sending: AtomicUsize,
    /// When the last request ended (ms since `start`).
    last_end: AtomicU64,
    /// When a response body last handed data to the connection (ms since `start`).
    last_progress: AtomicU64,
}

impl ConnState {
    pub(crate) fn new(start: Instant) -> Arc<Self> {
        Arc::new(Self {
            start,
            seen: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            sending: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            last_progress: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request's header arrived: it is in flight until the guard (then its response
    /// body) is dropped.
    pub(crate) fn request(self: &Arc<Self>) -> RequestGuard {
        self.seen.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard {
            state: self.clone(),
            sending: false,
        }
    }

    /// The earliest deadline (ms since `start`) and what passing it means; `None` while
    /// requests are being handled and nothing is being sent (an LL-HLS blocking reload
    /// is legitimately held for seconds before its first byte).
    fn deadline(&self, t: &Timeouts) -> Option<(u64, Reason)> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if self.sending.load(Ordering::Relaxed) > 0 {
            let last = self.last_progress.load(Ordering::Relaxed);
            return Some((last.saturating_add(ms(t.send)), Reason::SendStall));
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if self.seen.load(Ordering::Relaxed) == 0 {
            return Some((ms(t.first_request), Reason::FirstRequest));
        }
        let last = self.last_end.load(Ordering::Relaxed);
        Some((last.saturating_add(ms(t.idle)), Reason::Idle))
    }

    /// Resolves when the connection has overstayed one of `t`, with the reason.
    ///
    /// Lazy: requests and bodies only store atomics and never wake the watchdog (a wake
    /// and a new timer per request cost the edge ~12 % of its playlist rate). It sleeps
    /// to the earliest deadline, or for `min(idle, send)` while none applies, and looks
    /// again. No deadline is missed: a deadline that appears while it sleeps (a request
    /// ends, a body starts) lies at least `min(idle, send)` after the event, and the
    /// watchdog wakes within that.
    pub(crate) async fn watch(&self, t: Timeouts) -> Reason {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let tick = ms(t.idle.min(t.send)).max(1);
        loop {
            let now = self.now_ms();
            let wait = match self.deadline(&t) {
                None => tick,
                Some((at, reason)) if now >= at => return reason,
                Some((at, _)) => (at - now).min(tick),
            };
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// One request in flight on a connection; moved into its response body, so the
/// request ends when the body is sent (or dropped).
#[derive(Debug)]
pub(crate) struct RequestGuard {
    state: Arc<ConnState>,
    sending: bool,
}

impl RequestGuard {
    /// The handler answered: from now on the response must make progress.
    pub(crate) fn into_body(mut self, body: ChunksBody) -> GuardedBody {
        let s = &self.state;
        s.last_progress.store(s.now_ms(), Ordering::Relaxed);
        s.sending.fetch_add(1, Ordering::Relaxed);
        self.sending = true;
        GuardedBody {
            inner: body,
            pending: Bytes::new(),
            guard: self,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let s = &self.state;
        s.last_end.store(s.now_ms(), Ordering::Relaxed);
        if self.sending {
            s.sending.fetch_sub(1, Ordering::Relaxed);
        }
        s.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Most bytes handed to the connection per poll of a body. The body is polled again
/// only once the connection has room (HTTP/1.1: its write buffer flushed; HTTP/2: the
/// stream's window open and its buffer drained), so each poll is a sign the peer took
/// about this much. A viewer that keeps up with a live stream takes a whole segment
/// (a few hundred KiB at a few Mbit/s) within a segment's duration, far inside the send
/// timeout, so slices only matter for objects over 1 MiB; a reader slower than 1 MiB per
/// send timeout (35 kB/s at 30 s) is dropped. Smaller slices cost throughput: at 64 KiB
/// the edge served 35 % fewer segments per second (a flush and a poll per slice).
const SLICE: usize = 1024 * 1024;

/// A response body that reports progress to its connection and ends its request when
/// dropped. Buffers are sliced (without copying) into [`SLICE`]-sized frames.
#[derive(Debug)]
pub(crate) struct GuardedBody {
    inner: ChunksBody,
    pending: Bytes,
    guard: RequestGuard,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let s = &self.guard.state;
        s.last_progress.store(s.now_ms(), Ordering::Relaxed);
        if self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let n = self.pending.len().min(SLICE);
        let chunk = self.pending.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let extra = self.pending.remaining() as u64;
        // Upper before lower: `set_lower` refuses to pass the current upper bound.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + extra);
        }
        hint.set_lower(inner.lower() + extra);
        hint
    }
}

/// The HTTP/2 client preface; a connection that starts with it speaks h2 (prior
/// knowledge, or ALPN `h2` over TLS), anything else is HTTP/1.x.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first bytes tell HTTP/2 from HTTP/1.x: `(is_h2, bytes read)`. The
/// caller bounds it with the first-request deadline (hyper-util's detection has none).
pub(crate) async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<(bool, Bytes)> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; PREFACE.len()];
    let mut n = 0;
    loop {
        let got = io.read(&mut buf[n..]).await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        n += got;
        if buf[..n] != PREFACE[..n] {
            return Ok((false, Bytes::copy_from_slice(&buf[..n])));
        }
        if n == PREFACE.len() {
            return Ok((true, Bytes::copy_from_slice(&buf[..n])));
        }
    }
}

/// An IO that first replays the bytes [`sniff`] read, then reads from the socket.
#[derive(Debug)]
pub(crate) struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    pub(crate) fn new(prefix: Bytes, inner: I) -> Self {
        Self { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connections open per client address, and the fair-share rule over them.
///
/// The rule: below `share_from` open connections (a fraction of the cap) anyone may
/// connect; from there on, a new connection is refused when its address already holds
/// `max(1, cap / (2 × addresses connected))`. A single busy address (a NAT, the
/// loopback load tool) can use the listener up to `share_from` on its own; one that
/// floods it cannot take the last slots from everyone else, and every other address
/// still gets at least one connection until the cap.
#[derive(Debug)]
pub(crate) struct Addresses {
    cap: usize,
    share_from: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    gauge: Option<Gauge>,
}

impl Addresses {
    pub(crate) fn new(
        cap: usize,
        share_from: usize,
        metrics: Option<&HttpMetrics>,
        listener: &'static str,
    ) -> Arc<Self> {
        Arc::new(Self {
            cap,
            share_from,
            open: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            gauge: metrics.map(|m| m.open_gauge(listener)),
        })
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Reason> {
        let ip = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.total.load(Ordering::Relaxed);
        if total >= self.cap {
            return Err(Reason::Full);
        }
        let mine = open.get(&ip).copied().unwrap_or(0);
        if total >= self.share_from {
            let addresses = open.len() + usize::from(mine == 0);
            let share = (self.cap / (2 * addresses.max(1))).max(1);
            if mine >= share {
                return Err(Reason::PerAddress);
            }
        }
        *open.entry(ip).or_insert(0) += 1;
        self.total.store(total + 1, Ordering::Relaxed);
        drop(open);
        if let Some(g) = &self.gauge {
            g.inc();
        }
        Ok(Slot {
            table: self.clone(),
            ip,
        })
    }
}

/// What the fair share counts as one client: an IPv4 address (IPv4-mapped IPv6
/// included), or an IPv6 /64, since one subscriber or host is routinely given a whole
/// /64 and could otherwise claim a share per address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// A connection's place in [`Addresses`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<Addresses>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
        self.table.total.fetch_sub(1, Ordering::Relaxed);
        drop(open);
        if let Some(g) = &self.table.gauge {
            g.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_address_may_fill_up_to_the_share_threshold_others_still_get_in() {
        let table = Addresses::new(100, 75, None, "t");
        let mut held: Vec<Slot> = (0..75).map(|_| table.admit(ip(1)).expect("free")).collect();
        assert_eq!(table.admit(ip(1)).unwrap_err(), Reason::PerAddress);
        // Another address: its share is 100 / (2 * 2) = 25.
        for _ in 0..25 {
            held.push(table.admit(ip(2)).expect("within its share"));
        }
        assert_eq!(table.admit(ip(3)).unwrap_err(), Reason::Full);
        held.truncate(99);
        // Back below the cap, the flooding address is still over its share; a newcomer
        // is not.
        assert_eq!(table.admit(ip(1)).unwrap_err(), Reason::PerAddress);
        held.push(table.admit(ip(3)).expect("a newcomer gets one"));
        drop(held);
        assert_eq!(table.total.load(Ordering::Relaxed), 0);
        assert!(table.open.lock().expect("lock").is_empty());
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_client() {
        let table = Addresses::new(4, 0, None, "t");
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("mapped");
        // share from the start: cap 4 / (2 x 1 address) = 2 for the first client.
        let _a = table.admit(a).expect("first");
        let _b = table.admit(b).expect("second, same /64");
        assert_eq!(table.admit(b).unwrap_err(), Reason::PerAddress);
        let _c = table.admit(c).expect("another /64");
        let _m = table.admit(mapped).expect("mapped v4");
        assert_eq!(table.admit(ip(1)).unwrap_err(), Reason::Full);
        assert_eq!(table.open.lock().expect("lock").len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_follows_the_connection_through_its_phases() {
        let t = Timeouts {
            first_request: Duration::from_secs(5),
            idle: Duration::from_secs(7),
            send: Duration::from_secs(3),
        };
        let start = Instant::now();
        let state = ConnState::new(start);
        assert_eq!(state.watch(t).await, Reason::FirstRequest);
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        let state = ConnState::new(Instant::now());
        let guard = state.request();
        // Held (a blocking reload): no deadline at all.
        let held = tokio::time::timeout(Duration::from_secs(60), state.watch(t)).await;
        assert!(held.is_err(), "a handled request has no deadline");
        let mut body = guard.into_body(ChunksBody::full(Bytes::from(vec![1u8; 3 * SLICE])));
        assert_eq!(body.size_hint().exact(), Some(3 * SLICE as u64));
        let watch = state.watch(t);
        tokio::pin!(watch);
        // Polling the body is progress: three slices, a second apart, then the end.
        for left in (0..3u64).rev() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let data = frame
                .expect("frame")
                .expect("ok")
                .into_data()
                .expect("data");
            assert_eq!(data.len(), SLICE);
            assert_eq!(body.size_hint().exact(), Some(left * SLICE as u64));
            assert!(
                futures_poll(watch.as_mut()).is_none(),
                "progress keeps it open"
            );
        }
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        drop(body);
        let ended = Instant::now();
        assert_eq!(watch.await, Reason::Idle);
        assert_eq!(ended.elapsed(), Duration::from_secs(7));

        let state = ConnState::new(Instant::now());
        let body = state
            .request()
            .into_body(ChunksBody::full(Bytes::from_static(b"x")));
        let stalled = Instant::now();
        assert_eq!(state.watch(t).await, Reason::SendStall);
        assert_eq!(stalled.elapsed(), Duration::from_secs(3));
        drop(body);
    }

    /// Polls `f` once; `Some` if it is ready.
    fn futures_poll<F: std::future::Future>(f: Pin<&mut F>) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match f.poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn sniffing_tells_h2_from_http1_and_rewinds() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&PREFACE[..10]).await.expect("write");
        client.write_all(&PREFACE[10..]).await.expect("write");
        client.write_all(b"rest").await.expect("write");
        let (h2, prefix) = sniff(&mut server).await.expect("sniff");
        assert!(h2);
        let mut io = Rewind::new(prefix, server);
        let mut all = vec![0u8; 28];
        io.read_exact(&mut all).await.expect("read");
        assert_eq!(&all[..24], PREFACE);
        assert_eq!(&all[24..], b"rest");

        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let (h2, prefix) = sniff(&mut server).await.expect("sniff");
        assert!(!h2);
        assert!(b"GET / HTTP/1.1\r\n".starts_with(&prefix));
    }
}
