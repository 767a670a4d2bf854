//! A node's link to the controller.
//!
//! - [`Agent::run`] registers the node and keeps its lease alive with a heartbeat stream
//!   that carries the node's load ([`NodeHooks::load`]); kicks in the replies reach
//!   [`NodeHooks::kick`]. A lost registration (the controller answers `NOT_FOUND`, e.g.
//!   after a leader change or a freeze longer than the lease) registers again.
//! - [`Agent::claim`] and [`Agent::release`]: an origin asks before it accepts a
//!   publisher, and hands the stream back with its continuity when the stream ends.
//! - [`Agent::watch_assignments`]: edges keep an [`AssignmentTable`] (which origin holds
//!   each stream, under which epoch) fed by the controller's watch; the table survives
//!   any controller outage unchanged, so the data path keeps flowing; [`origins`] reads
//!   it as the answer to "which origin holds this stream" (or names one fixed origin
//!   without a controller).
//! - [`Agent::watch_access`] and [`access`]: the playback rules every viewer-serving node
//!   (edge, and origin on its HTTP port) checks requests with, closed until the first
//!   snapshot and never rolled back by a lagging replica.
//!
//! Every call follows the leader: a follower answers writes with `UNAVAILABLE` and the
//! leader's address in the `ferrocast-leader` metadata, and the call is retried there;
//! an unreachable controller makes the agent try the next configured one. Every call
//! has a deadline.

pub mod access;
mod endpoints;
pub mod origins;

pub use endpoints::LEADER_METADATA;
pub use ferrocast_proto::controller::v1 as pb;

use endpoints::Endpoints;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout, Instant};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// Assumed heartbeat interval before the controller names one (a third of its default
/// 5 s lease).
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(1667);

/// How a node presents itself to the controller.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Controller gRPC URLs (`http://host:50051`), any replica; the leader is found.
    pub controllers: Vec<String>,
    /// This node's id, unique in the cluster and stable across restarts.
    pub node_id: String,
    /// Origin or edge.
    pub role: pb::NodeRole,
    /// Region used for viewer placement.
    pub region: String,
    /// Where the node is reached (relay for origins, viewer URL for edges).
    pub addresses: pb::NodeAddresses,
    /// Hard limits.
    pub capacity: pb::Capacity,
    /// Deadline of one call, leader redirects and retries included.
    pub call_timeout: Duration,
    /// Deadline for connecting to one controller.
    pub connect_timeout: Duration,
    /// TLS to the controller (`https://` URLs): the node's cluster client configuration
    /// ([`ferrocast_tls::ClusterTls::grpc_client_config`]). `http://` URLs stay
    /// plaintext; an `https://` URL without it is refused.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl AgentConfig {
    /// A configuration with default deadlines.
    pub fn new(controllers: Vec<String>, node_id: String, role: pb::NodeRole) -> Self {
        AgentConfig {
            controllers,
            node_id,
            role,
            region: String::new(),
            addresses: pb::NodeAddresses::default(),
            capacity: pb::Capacity::default(),
            call_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// Why the agent could not start or a call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A configured controller URL is unusable.
    #[error("invalid controller address {0:?}: {1}")]
    InvalidEndpoint(String, String),
    /// No controller URL is configured.
    #[error("no controller configured")]
    NoController,
    /// No controller answered in time, or none leads.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
    /// The controller answered with an error.
    #[error("controller refused: {0}")]
    Refused(String),
    /// A replica answered that it cannot serve the call now (no leader elected yet, its
    /// store unreachable): an answer, not an outage, though worth asking again later.
    #[error("controller not serving: {0}")]
    NotServing(String),
}

impl AgentError {
    /// The one place a failed call is judged: was the controller not reached (an
    /// outage, [`AgentError::Unavailable`]: a node may carry on with what it already
    /// holds), or did it answer ([`AgentError::Refused`]: final)?
    ///
    /// The code alone cannot tell: tonic reports a refused connection as
    /// `UNAVAILABLE`, a reset one as `UNKNOWN` or `INTERNAL`, and a server may send
    /// any of those itself. What tells is where the status was made (see
    /// [`unreachable`]). A status a replica sent is an answer whatever its code —
    /// `UNKNOWN`, `CANCELLED`, and `UNAVAILABLE` for "no leader yet" or "store down"
    /// ([`AgentError::NotServing`]) — with one exception: a follower's redirect
    /// (`UNAVAILABLE` naming the leader) is no answer to the call, only the way to the
    /// replica that answers; the call ends on one only when the leader it names was
    /// not reached in time.
    fn from_status(s: tonic::Status) -> Self {
        if unreachable(&s) {
            return AgentError::Unavailable(s.message().to_owned());
        }
        match s.code() {
            Code::Unavailable if s.metadata().contains_key(LEADER_METADATA) => {
                AgentError::Unavailable(format!("the leader was not reached: {}", s.message()))
            }
            Code::Unavailable => AgentError::NotServing(s.message().to_owned()),
            code => AgentError::Refused(format!("{code:?}: {}", s.message())),
        }
    }

    /// Whether the controller could not be reached (rather than answered).
    pub fn is_outage(&self) -> bool {
        matches!(self, AgentError::Unavailable(_))
    }
}

/// Whether `s` was made on this side because no controller could be reached: tonic
/// keeps the transport error (connection refused or reset, TLS, a connect or keep-alive
/// timeout) as the source of the status it makes up, while a status decoded from a
/// server's headers or trailers has no source. (The agent's own deadline never becomes
/// a status: [`Endpoints::call`] returns [`AgentError::Unavailable`] for it directly.)
fn unreachable(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// What the agent needs from its node.
pub trait NodeHooks: Send + Sync + Debug + 'static {
    /// The node's load now (sent with every heartbeat).
    fn load(&self) -> pb::LoadReport;
    /// The controller wants the publisher of `stream` gone (kicked by an operator, or the
    /// stream is held under a newer epoch elsewhere: this node is fenced for it).
    fn kick(&self, stream: &str) {
        let _ = stream;
    }
}

/// The controller's answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The stream is this node's under `epoch`.
    Granted {
        /// The epoch to report the stream under.
        epoch: u64,
        /// The continuity the previous holder reported (none for a first claim).
        continuity: Option<pb::Continuity>,
        /// Whether another origin held it before (its lease expired, or it released it).
        taken_over: bool,
    },
    /// The stream is live on another origin (a duplicate publisher).
    Duplicate {
        /// Why, for the publisher's error and the log.
        reason: String,
    },
    /// This node may not take streams now (draining, at capacity, not registered).
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The publisher's credential was refused.
    Unauthorized {
        /// Why (never the credential).
        reason: String,
    },
}

/// A node's controller link. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: AgentConfig,
    endpoints: Endpoints,
    /// The current registration's incarnation (0: not registered).
    registered: watch::Sender<u64>,
    /// Whether the controller last said this node is draining.
    draining: AtomicBool,
    /// Unix ms of the last acknowledged heartbeat.
    last_ack: AtomicU64,
    /// The heartbeat interval the controller asked for, ms.
    heartbeat_ms: AtomicU64,
    /// Why the controller refused the last registration, or said it cannot take one now
    /// (cleared when one succeeds, or when none could be reached): a node a reachable
    /// controller turns away is not in an outage.
    register_refused: std::sync::Mutex<Option<String>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Agent {
    /// Checks the configuration; connects lazily.
    pub fn new(cfg: AgentConfig) -> Result<Agent, AgentError> {
        if cfg.node_id.is_empty() {
            return Err(AgentError::Refused("node id is empty".into()));
        }
        let endpoints = Endpoints::new(&cfg.controllers, cfg.connect_timeout, cfg.tls.clone())?;
        Ok(Agent {
            inner: Arc::new(Inner {
                cfg,
                endpoints,
                registered: watch::channel(0).0,
                draining: AtomicBool::new(false),
                last_ack: AtomicU64::new(0),
                heartbeat_ms: AtomicU64::new(DEFAULT_HEARTBEAT.as_millis() as u64),
                register_refused: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The node id this agent registers.
    pub fn node_id(&self) -> &str {
        &self.inner.cfg.node_id
    }

    /// Whether the controller acknowledged a heartbeat within `within`.
    pub fn in_touch(&self, within: Duration) -> bool {
        let last = self.inner.last_ack.load(Ordering::Relaxed);
        last > 0 && unix_ms().saturating_sub(last) <= within.as_millis() as u64
    }

    /// The heartbeat interval (the controller's, once registered): how stale the last
    /// report of a node can be.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.inner.heartbeat_ms.load(Ordering::Relaxed))
    }

    /// Whether the controller last said this node is draining.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Registers and heartbeats until `shutdown`, registering again whenever the
    /// registration is lost. Never returns an error: an unreachable controller is retried
    /// with a growing pause (the data path does not depend on it).
    pub async fn run(&self, hooks: Arc<dyn NodeHooks>, shutdown: CancellationToken) {
        let inner = &self.inner;
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let reg = tokio::select! {
                r = self.register() => r,
                _ = shutdown.cancelled() => return,
            };
            *lock(&inner.register_refused) = match &reg {
                Err(e) if !e.is_outage() => Some(e.to_string()),
                _ => None,
            };
            let reg = match reg {
                Ok(r) => r,
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(%error, "cannot register with the controller; retrying");
                    }
                    if pause(backoff(failures), &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            failures = 0;
            tracing::info!(
                node = %inner.cfg.node_id,
                incarnation = reg.incarnation,
                "registered with the controller"
            );
            inner.heartbeat_ms.store(
                u64::from(reg.heartbeat_interval_ms.max(100)),
                Ordering::Relaxed,
            );
            inner.registered.send_replace(reg.incarnation);
            let end = self.heartbeats(&reg, hooks.as_ref(), &shutdown).await;
            inner.registered.send_replace(0);
            match end {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "heartbeats ended; registering again");
                    if pause(Duration::from_millis(100), &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    async fn register(&self) -> Result<pb::RegisterReply, AgentError> {
        let cfg = &self.inner.cfg;
        let req = pb::RegisterRequest {
            node_id: cfg.node_id.clone(),
            role: cfg.role.into(),
            addresses: Some(cfg.addresses.clone()),
            region: cfg.region.clone(),
            capacity: Some(cfg.capacity),
        };
        self.inner
            .endpoints
            .call(cfg.call_timeout, |mut c| {
                let req = req.clone();
                async move { c.register(req).await }
            })
            .await
    }

    /// One heartbeat stream to the replica that took the registration; `Ok` on shutdown.
    async fn heartbeats(
        &self,
        reg: &pb::RegisterReply,
        hooks: &dyn NodeHooks,
        shutdown: &CancellationToken,
    ) -> Result<(), AgentError> {
        let inner = &self.inner;
        let interval = Duration::from_millis(u64::from(reg.heartbeat_interval_ms.max(100)));
        let (tx, rx) = mpsc::channel(2);
        let beat = || pb::HeartbeatRequest {
            node_id: inner.cfg.node_id.clone(),
            incarnation: reg.incarnation,
            load: Some(hooks.load()),
        };
        // The first heartbeat goes with the opening, so the node's load is known at once.
        tx.try_send(beat()).ok();
        let (idx, mut client) = inner.endpoints.current();
        let opened = timeout(
            inner.cfg.call_timeout,
            client.heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        let mut replies = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => {
                inner.endpoints.failed(idx, &s);
                return Err(AgentError::from_status(s));
            }
            Err(_) => {
                inner.endpoints.advance(idx);
                return Err(AgentError::Unavailable("heartbeat stream timed out".into()));
            }
        };
        let mut next = Instant::now();
        loop {
            let reply = tokio::select! {
                r = timeout(inner.cfg.call_timeout.max(interval * 2), replies.next()) => r,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let reply = match reply {
                Err(_) => {
                    inner.endpoints.advance(idx);
                    return Err(AgentError::Unavailable("heartbeat reply timed out".into()));
                }
                Ok(None) => {
                    return Err(AgentError::Unavailable(
                        "the controller closed the heartbeat stream".into(),
                    ))
                }
                Ok(Some(Err(s))) => {
                    inner.endpoints.failed(idx, &s);
                    return Err(AgentError::from_status(s));
                }
                Ok(Some(Ok(r))) => r,
            };
            inner.last_ack.store(unix_ms(), Ordering::Relaxed);
            let draining = reply.state() == pb::NodeState::Draining;
            if inner.draining.swap(draining, Ordering::Relaxed) != draining {
                tracing::info!(draining, "the controller changed this node's state");
            }
            for stream in &reply.kick_streams {
                tracing::warn!(%stream, "the controller asks to drop this stream's publisher");
                hooks.kick(stream);
            }
            next += interval;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
            if tx.send(beat()).await.is_err() {
                return Err(AgentError::Unavailable("heartbeat stream closed".into()));
            }
        }
    }

    /// Waits (up to the call deadline) until the node is registered. Not registered
    /// in time is an outage unless the controller refused the registration (an answer).
    async fn wait_registered(&self) -> Result<(), AgentError> {
        let mut rx = self.inner.registered.subscribe();
        let registered = timeout(self.inner.cfg.call_timeout, rx.wait_for(|i| *i != 0)).await;
        match registered {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(AgentError::Unavailable("the agent stopped".into())),
            Err(_) => Err(match lock(&self.inner.register_refused).clone() {
                Some(why) => AgentError::Refused(format!("not registered: {why}")),
                None => AgentError::Unavailable("not registered with the controller".into()),
            }),
        }
    }

    /// Asks the controller for `stream` before accepting its publisher.
    pub async fn claim(&self, stream: &str) -> Result<Claim, AgentError> {
        self.claim_with(stream, "", None).await
    }

    /// [`claim`](Agent::claim) for a publisher who presented `credential` (the publish
    /// URL's query) from `client_ip`.
    pub async fn claim_with(
        &self,
        stream: &str,
        credential: &str,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<Claim, AgentError> {
        self.wait_registered().await?;
        let cfg = &self.inner.cfg;
        let req = pb::ClaimStreamRequest {
            node_id: cfg.node_id.clone(),
            stream: stream.to_owned(),
            credential: credential.to_owned(),
            client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        let reply = self
            .inner
            .endpoints
            .call(cfg.call_timeout, |mut c| {
                let req = req.clone();
                async move { c.claim_stream(req).await }
            })
            .await?;
        let outcome = reply.outcome();
        let a = reply.assignment.unwrap_or_default();
        Ok(match outcome {
            pb::ClaimOutcome::Granted
            | pb::ClaimOutcome::AlreadyHeld
            | pb::ClaimOutcome::TakenOver => Claim::Granted {
                epoch: a.epoch,
                // A first claim comes with zeros: there is nothing to continue.
                continuity: a.continuity.filter(|c| *c != pb::Continuity::default()),
                taken_over: outcome == pb::ClaimOutcome::TakenOver,
            },
            pb::ClaimOutcome::RefusedDuplicate => Claim::Duplicate {
                reason: reply.reason,
            },
            pb::ClaimOutcome::RefusedUnauthorized => Claim::Unauthorized {
                reason: reply.reason,
            },
            _ => Claim::Unavailable {
                reason: reply.reason,
            },
        })
    }

    /// Hands `stream` back with its final continuity, so the next holder goes on from it.
    pub async fn release(
        &self,
        stream: &str,
        epoch: u64,
        continuity: pb::Continuity,
    ) -> Result<(), AgentError> {
        let cfg = &self.inner.cfg;
        let req = pb::ReleaseStreamRequest {
            node_id: cfg.node_id.clone(),
            stream: stream.to_owned(),
            epoch,
            continuity: Some(continuity),
        };
        self.inner
            .endpoints
            .call(cfg.call_timeout, |mut c| {
                let req = req.clone();
                async move { c.release_stream(req).await }
            })
            .await
            .map(drop)
    }

    /// Where a viewer of `stream` at `client_ip` (and/or in `region`) should watch: the
    /// controller's placement, for an edge's `/play`.
    pub async fn place(
        &self,
        stream: &str,
        client_ip: Option<std::net::IpAddr>,
        region: Option<&str>,
    ) -> Result<pb::ResolveReply, AgentError> {
        let req = pb::ResolveRequest {
            stream: stream.to_owned(),
            client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            region: region.unwrap_or_default().to_owned(),
        };
        self.inner
            .endpoints
            .call(self.inner.cfg.call_timeout, |mut c| {
                let req = req.clone();
                async move { c.place(req).await }
            })
            .await
    }

    /// Starts following the controller's assignments; the table fills once a replica
    /// answers and stays as it is while none does.
    pub fn watch_assignments(&self, shutdown: CancellationToken) -> Arc<AssignmentTable> {
        let table = Arc::new(AssignmentTable::default());
        let (agent, t) = (self.clone(), table.clone());
        tokio::spawn(async move { agent.follow(t, shutdown).await });
        table
    }

    async fn follow(&self, table: Arc<AssignmentTable>, shutdown: CancellationToken) {
        let inner = &self.inner;
        let mut failures = 0u32;
        loop {
            // Every replica serves the watch (a read): the current one will do.
            let (idx, mut client) = inner.endpoints.current();
            let req = pb::WatchAssignmentsRequest {
                node_id: inner.cfg.node_id.clone(),
            };
            let opened = tokio::select! {
                r = timeout(inner.cfg.call_timeout, client.watch_assignments(req)) => r,
                _ = shutdown.cancelled() => return,
            };
            let why = match opened {
                Ok(Ok(r)) => {
                    let mut events = r.into_inner();
                    loop {
                        let ev = tokio::select! {
                            e = events.next() => e,
                            _ = shutdown.cancelled() => return,
                        };
                        match ev {
                            Some(Ok(ev)) => {
                                failures = 0;
                                table.apply(ev);
                            }
                            Some(Err(s)) => break s.to_string(),
                            None => break "the controller closed the watch".to_owned(),
                        }
                    }
                }
                Ok(Err(s)) => s.to_string(),
                Err(_) => "opening the watch timed out".to_owned(),
            };
            table.live.store(false, Ordering::Relaxed);
            inner.endpoints.advance(idx);
            failures += 1;
            if failures == 1 || failures.is_multiple_of(20) {
                tracing::warn!(reason = %why, "assignment watch lost; keeping the last table");
            }
            if pause(backoff(failures), &shutdown).await {
                return;
            }
        }
    }
}

impl Agent {
    /// Starts following the controller's access state (playback keys, stream policies,
    /// revoked tokens): `apply` gets every snapshot (for
    /// [`access::PlaybackAccess::apply`], which ignores stale ones). While no controller
    /// answers, or none has read the rules yet (`UNAVAILABLE`), the last snapshot stays in
    /// force (the data path does not depend on the controller), or, before any, every
    /// stream stays closed.
    pub fn watch_access<F>(&self, apply: F, shutdown: CancellationToken)
    where
        F: Fn(pb::AccessSnapshot) + Send + Sync + 'static,
    {
        let agent = self.clone();
        tokio::spawn(async move {
            let inner = &agent.inner;
            let mut failures = 0u32;
            loop {
                // Every replica serves the watch (a read): the current one will do.
                let (idx, mut client) = inner.endpoints.current();
                let req = pb::WatchAccessRequest {
                    node_id: inner.cfg.node_id.clone(),
                };
                let opened = tokio::select! {
                    r = timeout(inner.cfg.call_timeout, client.watch_access(req)) => r,
                    _ = shutdown.cancelled() => return,
                };
                let why = match opened {
                    Ok(Ok(r)) => {
                        let mut snaps = r.into_inner();
                        loop {
                            let s = tokio::select! {
                                s = snaps.next() => s,
                                _ = shutdown.cancelled() => return,
                            };
                            match s {
                                Some(Ok(snap)) => {
                                    failures = 0;
                                    apply(snap);
                                }
                                Some(Err(s)) => break s.to_string(),
                                None => break "the controller closed the watch".to_owned(),
                            }
                        }
                    }
                    Ok(Err(s)) => s.to_string(),
                    Err(_) => "opening the watch timed out".to_owned(),
                };
                inner.endpoints.advance(idx);
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(reason = %why, "access watch lost; keeping the last access state");
                }
                if pause(backoff(failures), &shutdown).await {
                    return;
                }
            }
        });
    }
}

/// 100 ms doubling up to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(5))
}

/// Sleeps `d`; true when `shutdown` came first.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// Which origin holds each stream, as the controller last said.
#[derive(Debug)]
pub struct AssignmentTable {
    map: RwLock<HashMap<String, pb::Assignment>>,
    changes: watch::Sender<u64>,
    /// Whether a watch is open now.
    live: AtomicBool,
}

impl Default for AssignmentTable {
    fn default() -> Self {
        AssignmentTable {
            map: RwLock::default(),
            changes: watch::channel(0).0,
            live: AtomicBool::new(false),
        }
    }
}

impl AssignmentTable {
    /// The assignment of `stream`, if any.
    pub fn get(&self, stream: &str) -> Option<pb::Assignment> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .cloned()
    }

    /// The streams a live origin holds now, sorted: what an edge can offer viewers
    /// before any of them asked for one.
    pub fn live_streams(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|a| a.state() == pb::AssignmentState::Live)
            .map(|a| a.stream.clone())
            .collect();
        v.sort();
        v
    }

    /// Number of streams known.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no stream is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the watch is open now (false while no controller answers).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// A counter bumped after every change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Applies one watch event (public for tests of the consumers).
    pub fn apply(&self, ev: pb::AssignmentEvent) {
        use pb::assignment_event::Kind;
        let Some(kind) = ev.kind else { return };
        {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            match kind {
                Kind::Snapshot(s) => {
                    self.live.store(true, Ordering::Relaxed);
                    *map = s
                        .assignments
                        .into_iter()
                        .map(|a| (a.stream.clone(), a))
                        .collect();
                }
                Kind::Upsert(a) => {
                    // Epochs never go back: an older event cannot undo a newer one.
                    if map.get(&a.stream).is_some_and(|old| old.epoch > a.epoch) {
                        return;
                    }
                    map.insert(a.stream.clone(), a);
                }
                Kind::Removed(stream) => {
                    map.remove(&stream);
                }
            }
        }
        self.changes.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::assignment_event::Kind;

    fn a(stream: &str, origin: &str, epoch: u64) -> pb::Assignment {
        pb::Assignment {
            stream: stream.into(),
            origin_id: origin.into(),
            origin_relay: format!("{origin}:4433"),
            epoch,
            continuity: None,
            state: pb::AssignmentState::Live.into(),
        }
    }

    #[test]
    fn the_table_follows_snapshots_upserts_and_removals() {
        let t = AssignmentTable::default();
        let changes = t.changes();
        t.apply(pb::AssignmentEvent {
            kind: Some(Kind::Snapshot(pb::AssignmentSnapshot {
                assignments: vec![a("s1", "o1", 1), a("s2", "o1", 3)],
            })),
        });
        assert!(t.is_live());
        assert_eq!(t.len(), 2);
        t.apply(pb::AssignmentEvent {
            kind: Some(Kind::Upsert(a("s1", "o2", 2))),
        });
        assert_eq!(t.get("s1").unwrap().origin_id, "o2");
        // A stale event (lower epoch) is ignored.
        t.apply(pb::AssignmentEvent {
            kind: Some(Kind::Upsert(a("s2", "o9", 2))),
        });
        assert_eq!(t.get("s2").unwrap().origin_id, "o1");
        t.apply(pb::AssignmentEvent {
            kind: Some(Kind::Removed("s2".into())),
        });
        assert!(t.get("s2").is_none());
        assert_eq!(*changes.borrow(), 3);
    }

    #[test]
    fn live_streams_are_the_ones_a_live_origin_holds_sorted() {
        let t = AssignmentTable::default();
        let orphaned = pb::Assignment {
            state: pb::AssignmentState::Orphaned.into(),
            ..a("s0", "o1", 1)
        };
        t.apply(pb::AssignmentEvent {
            kind: Some(Kind::Snapshot(pb::AssignmentSnapshot {
                assignments: vec![a("s3", "o1", 1), orphaned, a("s1", "o2", 1)],
            })),
        });
        assert_eq!(t.live_streams(), ["s1", "s3"]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(50), Duration::from_secs(5));
    }

    #[test]
    fn a_status_a_server_sent_is_an_answer_whatever_its_code() {
        let e = AgentError::from_status(tonic::Status::unavailable("no leader elected yet"));
        assert!(matches!(e, AgentError::NotServing(_)), "{e:?}");
        assert!(!e.is_outage());
        for code in [
            Code::Unknown,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::Internal,
            Code::NotFound,
            Code::PermissionDenied,
        ] {
            // What tonic decodes from a server's trailers: no source.
            let e = AgentError::from_status(tonic::Status::new(code, "x"));
            assert!(matches!(e, AgentError::Refused(_)), "{code:?}: {e:?}");
            assert!(!e.is_outage());
        }
        // A follower's redirect is no answer: its leader was not reached in time.
        let mut redirect = tonic::Status::unavailable("not the leader");
        redirect
            .metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.2:50051".parse().unwrap());
        assert!(AgentError::from_status(redirect).is_outage());
        // What tonic makes up on this side keeps the transport error as its source.
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(AgentError::from_status(tonic::Status::from_error(Box::new(io))).is_outage());
    }

    /// A controller that answers every call with `code`.
    #[derive(Debug)]
    struct Answers(Arc<std::sync::Mutex<Code>>);

    type Never<T> = tokio_stream::Empty<Result<T, tonic::Status>>;

    impl Answers {
        fn status(&self) -> tonic::Status {
            tonic::Status::new(*lock(&self.0), "scripted")
        }
    }

    #[tonic::async_trait]
    impl pb::node_service_server::NodeService for Answers {
        async fn register(
            &self,
            _: tonic::Request<pb::RegisterRequest>,
        ) -> Result<tonic::Response<pb::RegisterReply>, tonic::Status> {
            Err(self.status())
        }
        type HeartbeatStream = Never<pb::HeartbeatReply>;
        async fn heartbeat(
            &self,
            _: tonic::Request<tonic::Streaming<pb::HeartbeatRequest>>,
        ) -> Result<tonic::Response<Self::HeartbeatStream>, tonic::Status> {
            Err(self.status())
        }
        async fn claim_stream(
            &self,
            _: tonic::Request<pb::ClaimStreamRequest>,
        ) -> Result<tonic::Response<pb::ClaimStreamReply>, tonic::Status> {
            Err(self.status())
        }
        async fn release_stream(
            &self,
            _: tonic::Request<pb::ReleaseStreamRequest>,
        ) -> Result<tonic::Response<pb::ReleaseStreamReply>, tonic::Status> {
            Err(self.status())
        }
        type WatchAssignmentsStream = Never<pb::AssignmentEvent>;
        async fn watch_assignments(
            &self,
            _: tonic::Request<pb::WatchAssignmentsRequest>,
        ) -> Result<tonic::Response<Self::WatchAssignmentsStream>, tonic::Status> {
            Err(self.status())
        }
        async fn place(
            &self,
            _: tonic::Request<pb::ResolveRequest>,
        ) -> Result<tonic::Response<pb::ResolveReply>, tonic::Status> {
            Err(self.status())
        }
        type WatchAccessStream = Never<pb::AccessSnapshot>;
        async fn watch_access(
            &self,
            _: tonic::Request<pb::WatchAccessRequest>,
        ) -> Result<tonic::Response<Self::WatchAccessStream>, tonic::Status> {
            Err(self.status())
        }
    }

    fn agent_for(addr: std::net::SocketAddr) -> Agent {
        let mut cfg = AgentConfig::new(
            vec![format!("http://{addr}")],
            "o1".into(),
            pb::NodeRole::Origin,
        );
        cfg.call_timeout = Duration::from_millis(800);
        cfg.connect_timeout = Duration::from_millis(300);
        Agent::new(cfg).expect("agent")
    }

    async fn release(agent: &Agent) -> AgentError {
        let r = timeout(
            Duration::from_secs(5),
            agent.release("cam", 1, pb::Continuity::default()),
        )
        .await
        .expect("the call keeps its deadline");
        r.expect_err("no controller grants here")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_a_silent_and_a_hanging_up_controller_are_outages() {
        // Stopped: the port refuses connections.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let e = release(&agent_for(addr)).await;
        assert!(e.is_outage(), "connection refused: {e:?}");

        // Silent: connections are taken and never answered (a frozen process).
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let e = release(&agent_for(addr)).await;
        assert!(e.is_outage(), "no answer: {e:?}");
        hold.abort();

        // Hanging up: every connection is closed at once (a process dying mid-call).
        let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = rude.local_addr().unwrap();
        let hang_up = tokio::spawn(async move {
            while let Ok((s, _)) = rude.accept().await {
                drop(s);
            }
        });
        let e = release(&agent_for(addr)).await;
        assert!(e.is_outage(), "reset: {e:?}");
        hang_up.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_error_a_reachable_controller_answers_is_final() {
        let code_now = Arc::new(std::sync::Mutex::new(Code::Internal));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(pb::node_service_server::NodeServiceServer::new(Answers(
                code_now.clone(),
            )))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        let agent = agent_for(addr);
        for code in [
            Code::Internal,
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::Unknown,
            Code::Cancelled,
            Code::DeadlineExceeded,
            // "No leader yet", "store down": retried until the deadline, then final.
            Code::Unavailable,
        ] {
            *lock(&code_now) = code;
            let e = release(&agent).await;
            assert!(
                matches!(&e, AgentError::Refused(m) | AgentError::NotServing(m) if m.contains("scripted")),
                "{code:?}: {e:?}"
            );
            assert!(!e.is_outage(), "{code:?}: {e:?}");
        }

        // A refused registration: a claim is refused too, not taken for an outage.
        *lock(&code_now) = Code::PermissionDenied;
        let hooks: Arc<dyn NodeHooks> = Arc::new(NoLoad);
        let running = stop.clone();
        let a = agent.clone();
        tokio::spawn(async move { a.run(hooks, running).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = timeout(Duration::from_secs(5), agent.claim("cam"))
            .await
            .expect("in time")
            .expect_err("not registered");
        assert!(
            matches!(&e, AgentError::Refused(m) if m.contains("not registered: controller refused")),
            "{e:?}"
        );
        stop.cancel();
    }

    #[derive(Debug)]
    struct NoLoad;

    impl NodeHooks for NoLoad {
        fn load(&self) -> pb::LoadReport {
            pb::LoadReport::default()
        }
    }
}
