//! One request stream of an edge connection: a subscription (follow a stream's
//! snapshots, push what is new to the edge, then the playlist state naming it) or a
//! fetch (one object, waiting briefly for a part about to exist), and the pushes a
//! subscription starts, each on its own unidirectional stream.

use super::cursor::Cursor;
use super::metrics::{KindLabels, ReasonLabels, RelayMetrics, ResultLabels};
use super::source::{Lookup, Snapshot, Source, SourceStream};
use super::{Ctx, SnapshotOf};
use crate::frame::{self, FrameError, MAX_CONTROL_MESSAGE};
use crate::wire::{
    code, object_name, request, Fetch, FetchReply, FetchStatus, ObjectHeader, PlaylistState,
    Request, Subscribe, SubscribeReply,
};
use bytes::Bytes;
use ferrocast_media::hls::names::{self, Object};
use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// One request stream.
pub(super) struct RequestCtx<S> {
    pub(super) ctx: Arc<Ctx<S>>,
    pub(super) conn: Connection,
    pub(super) pushes: Arc<Semaphore>,
    pub(super) tracker: TaskTracker,
    pub(super) token: CancellationToken,
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

impl<S: Source> RequestCtx<S> {
    pub(super) async fn run(self, mut send: SendStream, mut recv: RecvStream) {
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
                        .refused
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
        let stream = self.ctx.get(&req.stream);
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
        self.ctx.metrics.subscriptions.inc();
        let r = self
            .follow(req, weak, rx, send, recv)
            .instrument(span.clone())
            .await;
        self.ctx.metrics.subscriptions.dec();
        r
    }

    async fn follow(
        &self,
        req: Subscribe,
        weak: Weak<S::Stream>,
        mut rx: watch::Receiver<Arc<SnapshotOf<S>>>,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> Result<(), RequestError> {
        let mut cursor = Cursor::new(&req, &**rx.borrow_and_update());
        tracing::info!(next = ?cursor.next_part, "edge subscribed");
        let mut sent_version = None;
        let mut gone_check = tokio::time::interval(Duration::from_secs(1));
        let mut last;
        let mut recv_done = false;
        loop {
            let snap = rx.borrow_and_update().clone();
            last = snap.clone();
            let now = crate::unix_ms();
            let batch = cursor.take_new(&*snap, self.ctx.cfg.skip_after_parts);
            if batch.skipped > 0 {
                self.ctx.metrics.parts_skipped.inc_by(batch.skipped);
                tracing::info!(
                    skipped = batch.skipped,
                    "edge too far behind; skipping ahead"
                );
            }
            let mut written = Vec::with_capacity(batch.objects.len());
            for (object, bytes, made_at_ms) in batch.objects {
                // The cursor yields inits and parts, which always have a name.
                let Some(name) = object_name(object) else {
                    continue;
                };
                let permit = tokio::select! {
                    p = self.pushes.clone().acquire_owned() => p.expect("never closed"),
                    _ = self.token.cancelled() => return Err(RequestError::Cancelled),
                };
                let header = ObjectHeader {
                    stream: req.stream.clone(),
                    name,
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
            if sent_version != Some(snap.version()) {
                let state = playlist_state(&*snap);
                tokio::select! {
                    r = frame::write_msg(send, &state) => r?,
                    _ = self.token.cancelled() => return Err(RequestError::Cancelled),
                }
                sent_version = Some(snap.version());
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
                        if !still_held(self.ctx.source.as_ref(), &weak, &req.stream) {
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
        let mut state = playlist_state(&*last);
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
            .fetches
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
        self.ctx.metrics.bytes_sent.inc_by(len);
        Ok(())
    }

    async fn lookup(&self, f: &Fetch) -> (FetchStatus, Vec<Bytes>) {
        let stream = self.ctx.get(&f.stream);
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
            match snap.lookup(object) {
                Lookup::Found(parts) => return (FetchStatus::Ok, parts),
                Lookup::Never => return (FetchStatus::NotFound, Vec::new()),
                Lookup::Soon => {}
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
    metrics: Arc<RelayMetrics>,
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
        self.metrics.pushes_in_flight.inc();
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
        self.metrics.pushes_in_flight.dec();
        drop(permit);
        match r {
            Ok(()) => {
                self.metrics
                    .objects_sent
                    .get_or_create(&KindLabels { kind: self.kind })
                    .inc();
                self.metrics.bytes_sent.inc_by(len);
                let _ = done.send(());
            }
            Err(e) => tracing::debug!(error = %e, object = header.name, "push failed"),
        }
    }
}

/// Whether the source still holds this very stream (not a newer one of the same name).
fn still_held<S: Source>(source: &S, weak: &Weak<S::Stream>, name: &str) -> bool {
    match (weak.upgrade(), source.get(name)) {
        (Some(ours), Some(current)) => Arc::ptr_eq(&ours, &current),
        _ => false,
    }
}

fn playlist_state(snap: &impl Snapshot) -> PlaylistState {
    PlaylistState::new(snap.version(), snap.playlist(), snap.variant())
}
