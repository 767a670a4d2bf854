//! One origin as the client sees it: its QUIC connection, opened on first use and
//! after a failure only once the backoff allows, and the task that reads the objects
//! the origin pushes and routes each to its subscription (bounded per connection).

use super::{lock, unavailable, Inner};
use crate::frame::{self, FrameError, MAX_CONTROL_MESSAGE, MAX_OBJECT_LEN};
use crate::wire::{code, ObjectHeader};
use bytes::Bytes;
use ferrocast_media::hls::names::{self, Object};
use ferrocast_serve::upstream::UpstreamError;
use quinn::{Connection, RecvStream, VarInt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Why a connection is not available, and until when not to try again.
#[derive(Debug)]
pub(super) struct ConnectError {
    pub(super) error: UpstreamError,
    pub(super) retry_at: Instant,
}

/// One origin: its connection (if any) and the subscriptions routed on it.
#[derive(Debug)]
pub(super) struct OriginConn {
    addr: SocketAddr,
    /// Async mutex on purpose: concurrent callers wait for one connection attempt
    /// instead of each dialing the origin.
    state: tokio::sync::Mutex<ConnState>,
    /// Pushed objects go to the subscription named in their header.
    pub(super) routes: Arc<Mutex<HashMap<u64, mpsc::Sender<Pushed>>>>,
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
pub(super) struct Pushed {
    pub(super) object: Object,
    pub(super) bytes: Bytes,
    pub(super) made_at_ms: i64,
}

impl OriginConn {
    /// The origin at `addr`, not connected yet.
    pub(super) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            state: Default::default(),
            routes: Default::default(),
        }
    }

    /// The live connection, connecting if needed (unless backing off).
    pub(super) async fn connection(&self, inner: &Arc<Inner>) -> Result<Connection, ConnectError> {
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
pub(super) struct Route {
    pub(super) routes: Arc<Mutex<HashMap<u64, mpsc::Sender<Pushed>>>>,
    pub(super) id: u64,
}

impl Drop for Route {
    fn drop(&mut self) {
        lock(&self.routes).remove(&self.id);
    }
}
