//! The origin side of the origin ↔ edge relay (protocol: `proto/relay.proto`): a QUIC
//! server with mutual TLS that answers subscriptions by pushing every new init segment
//! and part on its own unidirectional stream, followed by the playlist state that names
//! them, and answers fetches of older objects.
//!
//! Memory per edge is bounded: a connection has at most `max_pushes_in_flight` pushes
//! started and unwritten; a subscription that cannot push waits (the stream's `watch`
//! keeps only the latest snapshot, so nothing queues behind it) and, when it has fallen
//! more than `skip_after_parts` parts behind, skips ahead to the live tail. The edge
//! fetches what it lacks.

use crate::metrics::{KindLabels, OriginMetrics, ReasonLabels, ResultLabels};
use crate::package::{PartLookup, Snapshot};
use crate::stream::{valid_key, Stream, Streams};
use bytes::Bytes;
use ferrocast_media::hls::names::{self, Object};
use ferrocast_proto::frame::{self, FrameError, MAX_CONTROL_MESSAGE};
use ferrocast_proto::relay::{
    code, request, Fetch, FetchReply, FetchStatus, ObjectHeader, PlaylistState, Request, Subscribe,
    SubscribeReply, VariantInfo,
};
use ferrocast_tls::ClusterTls;
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

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

struct Ctx {
    streams: Arc<Streams>,
    metrics: Arc<OriginMetrics>,
    cfg: RelayConfig,
}

/// Serves edges on `endpoint` until `shutdown` is cancelled, then closes every
/// connection and waits (bounded) for the tasks to end.
pub async fn serve(
    endpoint: Endpoint,
    streams: Arc<Streams>,
    metrics: Arc<OriginMetrics>,
    shutdown: CancellationToken,
) {
    serve_with(endpoint, streams, metrics, RelayConfig::default(), shutdown).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    endpoint: Endpoint,
    streams: Arc<Streams>,
    metrics: Arc<OriginMetrics>,
    cfg: RelayConfig,
    shutdown: CancellationToken,
) {
    let local = endpoint.local_addr().ok();
    tracing::info!(addr = ?local, "relay listening");
    let ctx = Arc::new(Ctx {
        streams,
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
                .relay_refused
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
                            .relay_refused
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

async fn connection(ctx: Arc<Ctx>, conn: Connection, token: CancellationToken) {
    ctx.metrics.relay_connections.inc();
    ctx.metrics.relay_connections_open.inc();
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
    ctx.metrics.relay_connections_open.dec();
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

/// One request stream.
struct RequestCtx {
    ctx: Arc<Ctx>,
    conn: Connection,
    pushes: Arc<Semaphore>,
    tracker: TaskTracker,
    token: CancellationToken,
}

/// Why a request ended early.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    #[error("{0}")]
    Protocol(&'static str),
    #[error("cancelled")]
    Cancelled,
}

impl RequestCtx {
    async fn run(self, mut send: SendStream, mut recv: RecvStream) {
        let first = timeout(
            self.ctx.cfg.request_timeout,
            frame::read_msg::<_, Request>(&mut recv, MAX_CONTROL_MESSAGE),
        )
        .await;
        let result = match first {
            Err(_) => Err(RequestError::Protocol("no request in time")),
            Ok(Ok(None)) => Err(RequestError::Protocol("stream ended before the request")),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(Some(Request { kind: None }))) => Err(RequestError::Protocol("empty request")),
            Ok(Ok(Some(Request {
                kind: Some(request::Kind::Subscribe(s)),
            }))) => self.subscribe(s, &mut send, &mut recv).await,
            Ok(Ok(Some(Request {
                kind: Some(request::Kind::Fetch(f)),
            }))) => self.fetch(f, &mut send).await,
        };
        match result {
            Ok(()) | Err(RequestError::Cancelled) => {}
            Err(e) => {
                let violation = match &e {
                    RequestError::Frame(f) => f.is_protocol_violation(),
                    RequestError::Protocol(_) => true,
                    _ => false,
                };
                if violation {
                    self.ctx
                        .metrics
                        .relay_refused
                        .get_or_create(&ReasonLabels { reason: "protocol" })
                        .inc();
                    tracing::warn!(error = %e, "relay request refused");
                    let _ = send.reset(VarInt::from_u32(code::PROTOCOL));
                    let _ = recv.stop(VarInt::from_u32(code::PROTOCOL));
                } else {
                    tracing::debug!(error = %e, "relay request ended");
                    let _ = send.reset(VarInt::from_u32(code::INTERNAL));
                }
            }
        }
    }

    async fn subscribe(
        &self,
        req: Subscribe,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> Result<(), RequestError> {
        let stream = valid_key(&req.stream)
            .then(|| self.ctx.streams.get(&req.stream))
            .flatten();
        let span = tracing::info_span!("subscription", stream = %req.stream.chars().take(64).collect::<String>(), id = req.subscription);
        let Some(stream) = stream else {
            frame::write_msg(
                send,
                &SubscribeReply {
                    found: false,
                    epoch: 0,
                },
            )
            .await?;
            send.finish()?;
            tracing::debug!(parent: &span, "subscribe: no such stream");
            return Ok(());
        };
        let reply = SubscribeReply {
            found: true,
            epoch: stream.epoch(),
        };
        frame::write_msg(send, &reply).await?;
        let rx = stream.subscribe();
        // Hold the stream weakly so its end (the watch sender dropping) is seen.
        let weak = Arc::downgrade(&stream);
        drop(stream);
        self.ctx.metrics.relay_subscriptions.inc();
        let r = self
            .follow(req, weak, rx, send, recv)
            .instrument(span.clone())
            .await;
        self.ctx.metrics.relay_subscriptions.dec();
        r
    }

    async fn follow(
        &self,
        req: Subscribe,
        weak: Weak<Stream>,
        mut rx: watch::Receiver<Arc<Snapshot>>,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> Result<(), RequestError> {
        let mut cursor = Cursor::new(&req, &rx.borrow_and_update());
        tracing::info!(next = ?cursor.next_part, "edge subscribed");
        let mut sent_version = None;
        let mut gone_check = tokio::time::interval(Duration::from_secs(1));
        let mut last;
        let mut recv_done = false;
        loop {
            let snap = rx.borrow_and_update().clone();
            last = snap.clone();
            let now = now_ms();
            let batch = cursor.take_new(&snap, self.ctx.cfg.skip_after_parts);
            if batch.skipped > 0 {
                self.ctx.metrics.relay_parts_skipped.inc_by(batch.skipped);
                tracing::info!(
                    skipped = batch.skipped,
                    "edge too far behind; skipping ahead"
                );
            }
            let mut written = Vec::with_capacity(batch.objects.len());
            for (object, bytes, made_at_ms) in batch.objects {
                let permit = tokio::select! {
                    p = self.pushes.clone().acquire_owned() => p.expect("never closed"),
                    _ = self.token.cancelled() => return Err(RequestError::Cancelled),
                };
                let header = ObjectHeader {
                    stream: req.stream.clone(),
                    name: object_name(object),
                    // A part's own cut time; inits when sent.
                    made_at_ms: made_at_ms.unwrap_or(now),
                    len: bytes.len() as u64,
                    subscription: req.subscription,
                };
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                written.push(done_rx);
                let push = Push {
                    conn: self.conn.clone(),
                    metrics: self.ctx.metrics.clone(),
                    token: self.token.clone(),
                    kind: if matches!(object, Object::Init(_)) {
                        "init"
                    } else {
                        "part"
                    },
                };
                self.tracker
                    .spawn(push.run(header, bytes, permit, done_tx).in_current_span());
            }
            // The playlist state goes after the pushes it names are written (bounded:
            // a stalled edge gets the state anyway and fetches what it lacks).
            let deadline = Instant::now() + self.ctx.cfg.push_wait;
            for done in written {
                if tokio::time::timeout_at(deadline, done).await.is_err() {
                    break;
                }
            }
            if sent_version != Some(snap.version) {
                let state = playlist_state(&snap);
                tokio::select! {
                    r = frame::write_msg(send, &state) => r?,
                    _ = self.token.cancelled() => return Err(RequestError::Cancelled),
                }
                sent_version = Some(snap.version);
            }
            let gone = loop {
                tokio::select! {
                    r = rx.changed() => break r.is_err(),
                    _ = self.token.cancelled() => return Err(RequestError::Cancelled),
                    _ = send.stopped() => {
                        tracing::info!("edge unsubscribed");
                        return Ok(());
                    }
                    r = recv.read_chunk(16, true), if !recv_done => match r {
                        // The edge sends nothing after Subscribe; its FIN is harmless.
                        Ok(None) => recv_done = true,
                        Ok(Some(_)) => return Err(RequestError::Protocol("unexpected data after Subscribe")),
                        Err(_) => {
                            tracing::info!("edge unsubscribed");
                            return Ok(());
                        }
                    },
                    _ = gone_check.tick() => {
                        if !still_held(&self.ctx.streams, &weak, &req.stream) {
                            break true;
                        }
                    }
                }
            };
            if gone {
                break;
            }
        }
        // The origin no longer holds the stream: a final ended state, then a clean end.
        let mut state = playlist_state(&last);
        state.ended = true;
        frame::write_msg(send, &state).await?;
        send.finish()?;
        tracing::info!("stream gone; subscription ended");
        Ok(())
    }

    async fn fetch(&self, f: Fetch, send: &mut SendStream) -> Result<(), RequestError> {
        let (status, parts) = self.lookup(&f).await;
        let len: u64 = parts.iter().map(|b| b.len() as u64).sum();
        let result = match status {
            FetchStatus::Ok => "ok",
            FetchStatus::NotFound => "not_found",
            FetchStatus::NoStream => "no_stream",
        };
        self.ctx
            .metrics
            .relay_fetches
            .get_or_create(&ResultLabels { result })
            .inc();
        let reply = FetchReply {
            status: status as i32,
            len,
        };
        tokio::select! {
            r = async {
                frame::write_msg(send, &reply).await?;
                // A segment goes out as its parts back to back, without copying.
                for b in parts {
                    send.write_chunk(b).await?;
                }
                send.finish()?;
                Ok::<_, RequestError>(())
            } => r?,
            _ = self.token.cancelled() => return Err(RequestError::Cancelled),
        }
        self.ctx.metrics.relay_bytes_sent.inc_by(len);
        Ok(())
    }

    async fn lookup(&self, f: &Fetch) -> (FetchStatus, Vec<Bytes>) {
        let stream = valid_key(&f.stream)
            .then(|| self.ctx.streams.get(&f.stream))
            .flatten();
        let Some(stream) = stream else {
            return (FetchStatus::NoStream, Vec::new());
        };
        let Some(object) = names::parse(&f.name) else {
            return (FetchStatus::NotFound, Vec::new());
        };
        let mut rx = stream.subscribe();
        drop(stream);
        let deadline = Instant::now() + self.ctx.cfg.fetch_wait;
        loop {
            let snap = rx.borrow_and_update().clone();
            match find(&snap, object) {
                Found::Yes(parts) => return (FetchStatus::Ok, parts),
                Found::Never => return (FetchStatus::NotFound, Vec::new()),
                Found::Soon => {}
            }
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.changed()) => match r {
                    Ok(Ok(())) => {}
                    _ => return (FetchStatus::NotFound, Vec::new()),
                },
                _ = self.token.cancelled() => return (FetchStatus::NotFound, Vec::new()),
            }
        }
    }
}

/// One object push on its own unidirectional stream.
struct Push {
    conn: Connection,
    metrics: Arc<OriginMetrics>,
    token: CancellationToken,
    kind: &'static str,
}

impl Push {
    async fn run(
        self,
        header: ObjectHeader,
        bytes: Bytes,
        permit: OwnedSemaphorePermit,
        done: tokio::sync::oneshot::Sender<()>,
    ) {
        self.metrics.relay_pushes_in_flight.inc();
        let len = bytes.len() as u64;
        let r = tokio::select! {
            r = async {
                let mut s = self.conn.open_uni().await?;
                s.write_all(&frame::encode(&header)).await?;
                s.write_chunk(bytes).await?;
                s.finish()?;
                Ok::<_, RequestError>(())
            } => r,
            _ = self.token.cancelled() => Err(RequestError::Cancelled),
        };
        self.metrics.relay_pushes_in_flight.dec();
        drop(permit);
        match r {
            Ok(()) => {
                self.metrics
                    .relay_objects_sent
                    .get_or_create(&KindLabels { kind: self.kind })
                    .inc();
                self.metrics.relay_bytes_sent.inc_by(len);
                let _ = done.send(());
            }
            Err(e) => tracing::debug!(error = %e, object = header.name, "push failed"),
        }
    }
}

/// Whether the registry still holds this very stream.
fn still_held(streams: &Streams, weak: &Weak<Stream>, name: &str) -> bool {
    match (weak.upgrade(), streams.get(name)) {
        (Some(ours), Some(current)) => Arc::ptr_eq(&ours, &current),
        _ => false,
    }
}

fn playlist_state(snap: &Snapshot) -> PlaylistState {
    PlaylistState::new(
        snap.version,
        &snap.playlist,
        VariantInfo {
            codecs: snap.info.codecs.clone(),
            resolution: snap.info.resolution,
            frame_rate: snap.info.frame_rate,
            bandwidth: snap.info.bandwidth,
        },
    )
}

fn object_name(o: Object) -> String {
    match o {
        Object::Init(id) => names::init(id),
        Object::Part(msn, i) => names::part(msn, i),
        Object::Segment(msn) => names::segment(msn),
        Object::MediaPlaylist => names::MEDIA_PLAYLIST.to_owned(),
        Object::Multivariant => names::MULTIVARIANT.to_owned(),
    }
}

enum Found {
    Yes(Vec<Bytes>),
    Soon,
    Never,
}

fn find(snap: &Snapshot, object: Object) -> Found {
    match object {
        Object::Init(id) => snap.init(id).map_or(Found::Never, |b| Found::Yes(vec![b])),
        Object::Part(msn, i) => match snap.part(msn, i) {
            PartLookup::Found(b) => Found::Yes(vec![b]),
            PartLookup::Soon => Found::Soon,
            PartLookup::Never => Found::Never,
        },
        Object::Segment(msn) => snap.segment(msn).map_or(Found::Never, |s| {
            Found::Yes(s.parts.iter().map(|p| p.bytes.clone()).collect())
        }),
        Object::MediaPlaylist | Object::Multivariant => Found::Never,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a subscription has pushed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    /// First init id not pushed yet.
    next_init: u64,
    /// First part (msn, index) not pushed yet.
    next_part: (u64, u32),
}

/// New objects to push, oldest first.
#[derive(Debug, Default)]
struct Batch {
    /// Objects with the time parts were cut (none for inits).
    objects: Vec<(Object, Bytes, Option<i64>)>,
    skipped: u64,
}

impl Cursor {
    /// Starts after the edge's markers; without them (or with markers this origin
    /// cannot make sense of) at the segment being built.
    fn new(req: &Subscribe, snap: &Snapshot) -> Self {
        let live = snap.building_msn.unwrap_or(snap.playlist.next_msn);
        let next_part = match (req.have_msn, req.have_part) {
            (Some(m), Some(p)) => (m, p.saturating_add(1)),
            (Some(m), None) => (m.saturating_add(1), 0),
            _ => (live, 0),
        };
        // Markers ahead of what exists (another origin's numbering) restart at the tail.
        let next_part = if next_part.0 > live.saturating_add(1) {
            (live, 0)
        } else {
            next_part
        };
        Self {
            next_init: req.have_init_id.map_or(0, |i| i.saturating_add(1)),
            next_part,
        }
    }

    fn take_new(&mut self, snap: &Snapshot, skip_after: usize) -> Batch {
        let mut batch = Batch::default();
        for (id, bytes) in &snap.inits {
            if *id >= self.next_init {
                batch.objects.push((Object::Init(*id), bytes.clone(), None));
                self.next_init = id + 1;
            }
        }
        let mut parts = Vec::new();
        let next = self.next_part;
        let complete = snap
            .segments
            .iter()
            .filter(|s| s.msn >= next.0)
            .flat_map(|s| s.parts.iter().enumerate().map(move |(i, p)| (s.msn, i, p)));
        let pending = snap
            .building_msn
            .into_iter()
            .flat_map(|m| snap.pending.iter().enumerate().map(move |(i, p)| (m, i, p)));
        for (msn, i, p) in complete.chain(pending) {
            let Ok(i) = u32::try_from(i) else { continue };
            if (msn, i) >= next {
                parts.push((
                    Object::Part(msn, i),
                    p.bytes.clone(),
                    p.made_at_ms,
                    (msn, i),
                ));
            }
        }
        if parts.len() > skip_after {
            let skipped = parts.len() - skip_after;
            batch.skipped = skipped as u64;
            parts.drain(..skipped);
        }
        if let Some((_, _, _, (msn, i))) = parts.last() {
            self.next_part = (*msn, i + 1);
        }
        batch
            .objects
            .extend(parts.into_iter().map(|(o, b, at, _)| (o, b, Some(at))));
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{Packager, PackagerConfig};
    use ferrocast_media::flv::{self, FlvTag};

    fn demo_tags() -> Vec<FlvTag> {
        let data = Bytes::from(
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../cli/assets/demo.flv"
            ))
            .unwrap(),
        );
        flv::read_file(&data).unwrap()
    }

    /// Feeds tags until `until` holds for the snapshot.
    fn feed(
        p: &mut Packager,
        tags: &mut impl Iterator<Item = FlvTag>,
        until: impl Fn(&Snapshot) -> bool,
    ) {
        for t in tags.by_ref() {
            let r = match t.tag_type {
                8 => p.push_audio(
                    i64::from(t.timestamp_ms),
                    flv::parse_audio(&t.body).unwrap(),
                    0,
                ),
                9 => p.push_video(
                    i64::from(t.timestamp_ms),
                    flv::parse_video(&t.body).unwrap(),
                    0,
                ),
                _ => Ok(()),
            };
            r.unwrap();
            if until(&p.snapshot()) {
                return;
            }
        }
    }

    fn names_of(b: &Batch) -> Vec<Object> {
        b.objects.iter().map(|(o, _, _)| *o).collect()
    }

    #[test]
    fn cursor_pushes_each_object_once_and_resumes_after_markers() {
        let mut p = Packager::new(PackagerConfig::default(), None);
        p.begin_session();
        let mut tags = demo_tags().into_iter();
        feed(&mut p, &mut tags, |s| {
            s.playlist.segments.len() >= 2 && s.pending.len() >= 2
        });
        let snap = p.snapshot();
        let fresh = Subscribe::default();
        let mut c = Cursor::new(&fresh, &snap);
        let first = c.take_new(&snap, 100);
        let building = snap.building_msn.unwrap();
        let mut want = vec![Object::Init(0)];
        want.extend((0..snap.pending.len() as u32).map(|i| Object::Part(building, i)));
        assert_eq!(
            names_of(&first),
            want,
            "fresh: init + the live segment's parts"
        );
        assert!(c.take_new(&snap, 100).objects.is_empty(), "nothing twice");

        feed(&mut p, &mut tags, |s| {
            s.building_msn != Some(building) && !s.pending.is_empty()
        });
        let snap2 = p.snapshot();
        let next = c.take_new(&snap2, 100);
        let got = names_of(&next);
        assert_eq!(
            got.first(),
            Some(&Object::Part(building, snap.pending.len() as u32))
        );
        assert_eq!(
            got.last(),
            Some(&Object::Part(
                snap2.building_msn.unwrap(),
                snap2.pending.len() as u32 - 1
            ))
        );

        // A resumed subscription starts right after the markers, init not repeated.
        let resumed = Subscribe {
            have_init_id: Some(0),
            have_msn: Some(building),
            have_part: Some(0),
            ..Default::default()
        };
        let mut r = Cursor::new(&resumed, &snap2);
        let got = names_of(&r.take_new(&snap2, 100));
        assert_eq!(got.first(), Some(&Object::Part(building, 1)));
        assert!(!got.contains(&Object::Init(0)));

        // Far behind: only the newest parts, the rest counted as skipped.
        let mut far = Cursor::new(
            &Subscribe {
                have_msn: Some(0),
                have_part: Some(0),
                ..Default::default()
            },
            &snap2,
        );
        let b = far.take_new(&snap2, 3);
        assert_eq!(b.objects.len(), 4, "init + 3 newest parts");
        assert!(b.skipped > 0);

        // Markers from the future restart at the live tail.
        let future = Cursor::new(
            &Subscribe {
                have_msn: Some(1_000_000),
                ..Default::default()
            },
            &snap2,
        );
        assert_eq!(future.next_part, (snap2.building_msn.unwrap(), 0));
    }
}
