//! One subscription's state machine, carried across sessions (one subscribe exchange on
//! one connection each): it emits pushed objects once, holds each playlist state until
//! the objects it newly names were emitted (fetching the missing ones after a wait), and
//! resubscribes with its `have_*` markers so a stream goes on where it was.

use super::conn::{ConnectError, Pushed, Route};
use super::{changed, lock, Inner};
use crate::frame::{self, FrameError, MAX_CONTROL_MESSAGE};
use crate::wire::{code, request, PlaylistState, Request, Subscribe, SubscribeReply};
use bytes::Bytes;
use ferrocast_agent::origins::OriginChoice;
use ferrocast_media::hls::names::Object;
use ferrocast_media::hls::MediaPlaylist;
use ferrocast_serve::upstream::{EdgePlaylist, UpstreamError, UpstreamEvent};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout, Instant};

/// One subscribe exchange on one connection.
#[derive(Debug)]
pub(super) struct Session {
    /// Whom the session is with, to notice the stream moving elsewhere.
    pub(super) choice: OriginChoice,
    conn: Connection,
    send: SendStream,
    /// Taken by the frame reader while the session runs.
    recv: Option<RecvStream>,
    objects: mpsc::Receiver<Pushed>,
    _route: Route,
}

/// Why a session ended.
pub(super) enum SessionEnd {
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
pub(super) struct SubState {
    pub(super) stream: String,
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
    pub(super) changes: Option<tokio::sync::watch::Receiver<u64>>,
}

impl SubState {
    pub(super) fn new(stream: String) -> Self {
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
    pub(super) async fn open(
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

    pub(super) async fn run(
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
            arrived_ms: crate::unix_ms(),
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
    use crate::wire::VariantInfo;
    use ferrocast_media::hls::{PartInfo, SegmentInfo};

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
