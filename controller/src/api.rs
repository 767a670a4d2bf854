//! The gRPC API as thin tonic impls over the [`Store`], the pure [`scheduler`] and the
//! leader's [`Fence`]: [`NodeApi`] (`NodeService`) and [`OperatorApi`] (`OperatorService`).
//!
//! - Writes (register, heartbeat, claim, release, drain, kick) are served only by the leader.
//!   A follower answers them with `UNAVAILABLE` and the leader's gRPC address in the
//!   `ferrocast-leader` response metadata (absent while there is no leader); the client
//!   retries there. Reads (list, get, resolve) are served by every replica.
//! - Load reports live in memory only ([`Loads`]): nothing per viewer reaches the store. A
//!   follower has no load reports, so its `Resolve` sees every edge idle.
//! - Every error becomes a [`Status`] in one place: `impl From<ApiError> for Status`.
//! - Registrations (node id → lease, which is also the incarnation) are kept by the
//!   replica that took them: after a leader change, a node's next heartbeat gets
//!   `NOT_FOUND` and the node registers again with the new leader.
//! - `WatchAssignments` and `WatchEvents` are served by every replica from its [`Hub`]:
//!   a snapshot (assignments only), then the changes the hub sees. A watcher that falls
//!   behind gets `RESOURCE_EXHAUSTED` and its stream ends; while the store is unreachable
//!   the stream stays open and silent, and resumes with the difference when it is back.
//! - While the store is unreachable, reads answer from the hub's last good view.

use crate::access::{self, Access, AccessError};
use crate::assign::{self, AssignError};
use crate::election::Election;
use crate::hub::{ClusterView, Hub, Update};
use crate::identity::{node_role, NodeCaller};
use crate::model::{Assignment, Continuity, Load, Node, Role};
use crate::region::RegionTable;
use crate::scheduler::{
    place_viewer, ClaimDecision, GrantKind, PlacementError, PlacementPolicy, PlacementReason,
    Refusal, Snapshot,
};
use crate::store::{Fence, LeaseId, Store, StoreError};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_tls::identity::NodeRole;
use pb::node_service_server::NodeService;
use pb::operator_service_server::OperatorService;
use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Response metadata key carrying the leader's gRPC address on a follower's refusal.
pub const LEADER_METADATA: &str = "ferrocast-leader";

/// Why a call failed; mapped to a [`Status`] by `From<ApiError> for Status` only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// This replica does not lead; `leader` is the leader's gRPC address when known.
    #[error("not the leader")]
    NotLeader {
        /// The leader's address, if there is a leader.
        leader: Option<String>,
    },
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// No such node or stream, or the node's registration is over (register again).
    #[error("{0}")]
    NotFound(String),
    /// What the caller would create exists already.
    #[error("{0}")]
    Exists(String),
    /// The caller acted under a stale epoch or on a state that forbids it.
    #[error("{0}")]
    Precondition(String),
    /// The caller's role does not allow the call.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AssignError> for ApiError {
    fn from(e: AssignError) -> Self {
        match e {
            AssignError::Store(s) => ApiError::Store(s),
            e @ AssignError::StaleEpoch { .. } => ApiError::Precondition(e.to_string()),
            e @ AssignError::NoAssignment(_) => ApiError::NotFound(e.to_string()),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(s) => ApiError::Store(s),
            AccessError::Invalid(m) => ApiError::Invalid(m),
            AccessError::NotFound(m) => ApiError::NotFound(m),
            AccessError::Exists(m) => ApiError::Exists(m),
            e => ApiError::Precondition(e.to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let msg = e.to_string();
        match e {
            ApiError::NotLeader { leader } => {
                let mut s = Status::unavailable(match &leader {
                    Some(l) => format!("not the leader; the leader is {l}"),
                    None => "not the leader; no leader elected yet".to_owned(),
                });
                if let Some(v) = leader.and_then(|l| l.parse().ok()) {
                    s.metadata_mut().insert(LEADER_METADATA, v);
                }
                s
            }
            ApiError::Invalid(_) => Status::invalid_argument(msg),
            ApiError::Forbidden(_) => Status::permission_denied(msg),
            ApiError::NotFound(_) => Status::not_found(msg),
            ApiError::Exists(_) => Status::already_exists(msg),
            ApiError::Precondition(_) => Status::failed_precondition(msg),
            ApiError::Store(StoreError::Fenced) => Status::unavailable(msg),
            ApiError::Store(StoreError::LeaseExpired(_) | StoreError::UnknownNode(_)) => {
                Status::not_found(msg)
            }
            ApiError::Store(StoreError::Conflict(_)) => Status::aborted(msg),
            ApiError::Store(StoreError::Unavailable(_)) => Status::unavailable(msg),
            ApiError::Store(_) => Status::internal(msg),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A registered node as this replica knows it: its lease (also its incarnation) and
/// role (a heartbeat must come from a certificate of that role).
#[derive(Debug, Clone, Copy)]
struct Registration {
    lease: LeaseId,
    role: Role,
}

/// In-memory per-node state fed by heartbeats: load reports and registrations.
#[derive(Debug, Default)]
pub struct Loads {
    inner: Mutex<LoadsInner>,
}

#[derive(Debug, Default)]
struct LoadsInner {
    loads: HashMap<String, (Load, u64)>,
    registrations: HashMap<String, Registration>,
    /// Streams whose publisher an origin must disconnect, delivered with its next heartbeat.
    kicks: HashMap<String, BTreeSet<String>>,
    /// The leader's reports as it last shared them through the store (a follower's view:
    /// only the leader receives heartbeats).
    from_leader: HashMap<String, (Load, u64)>,
}

/// Per-stream detail a shared load report keeps per node (the most watched streams): the
/// shared record stays small however many streams an edge serves.
pub const SHARED_STREAMS_PER_NODE: usize = 256;

/// How often the leader shares its load reports, and followers read them.
pub const SHARE_LOADS_EVERY: Duration = Duration::from_secs(1);

impl Loads {
    fn lock(&self) -> MutexGuard<'_, LoadsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last reported load of every node.
    pub fn snapshot(&self) -> HashMap<String, Load> {
        let g = self.lock();
        g.loads
            .iter()
            .map(|(k, (l, _))| (k.clone(), l.clone()))
            .collect()
    }

    /// The leader's reports as last shared (empty before the first read).
    pub fn from_leader(&self) -> HashMap<String, Load> {
        let g = self.lock();
        g.from_leader
            .iter()
            .map(|(k, (l, _))| (k.clone(), l.clone()))
            .collect()
    }

    /// This replica's reports in the shared form: per node its load, with the
    /// [`SHARED_STREAMS_PER_NODE`] most watched streams, and when it was reported.
    pub fn encode_shared(&self) -> Vec<u8> {
        use prost::Message as _;
        let g = self.lock();
        let mut nodes: Vec<pb::NodeInfo> = g
            .loads
            .iter()
            .map(|(id, (load, at))| {
                let mut report = load_to_pb(load);
                if report.streams.len() > SHARED_STREAMS_PER_NODE {
                    report
                        .streams
                        .sort_unstable_by_key(|s| std::cmp::Reverse(s.viewers));
                    report.streams.truncate(SHARED_STREAMS_PER_NODE);
                }
                pb::NodeInfo {
                    node_id: id.clone(),
                    load: Some(report),
                    last_heartbeat_unix_ms: *at,
                    ..Default::default()
                }
            })
            .collect();
        // A stable order, so unchanged reports encode to the same bytes.
        nodes.sort_unstable_by(|a, b| a.node_id.cmp(&b.node_id));
        pb::ListNodesReply { nodes }.encode_to_vec()
    }

    /// Takes the leader's shared reports, without those older than `max_age` at `now_ms`
    /// (a node that stopped reporting is not trusted to be as idle as it last was).
    pub fn set_from_leader(
        &self,
        bytes: &[u8],
        now_ms: u64,
        max_age: Duration,
    ) -> Result<(), prost::DecodeError> {
        use prost::Message as _;
        let shared = pb::ListNodesReply::decode(bytes)?;
        let oldest = now_ms.saturating_sub(max_age.as_millis() as u64);
        let loads = shared
            .nodes
            .into_iter()
            .filter(|n| n.last_heartbeat_unix_ms >= oldest)
            .map(|n| {
                let load = n.load.as_ref().map(Load::from).unwrap_or_default();
                (n.node_id, (load, n.last_heartbeat_unix_ms))
            })
            .collect();
        self.lock().from_leader = loads;
        Ok(())
    }
}

/// Compacts the store's history every `every` while this replica leads, up to the
/// revision of the previous tick: one period of history stays (for anyone watching), the
/// rest goes, so the database does not grow with every continuity or load write.
pub async fn compact_history(shared: Arc<Shared>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<crate::store::Revision> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if shared.leader.fence().is_none() {
            previous = None;
            continue;
        }
        let now = match shared.store.revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "reading the store revision");
                continue;
            }
        };
        if let Some(rev) = previous.filter(|r| *r < now) {
            match shared.store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "store history compacted"),
                // E.g. already compacted further by etcd's own auto-compaction.
                Err(e) => tracing::debug!(revision = rev, error = %e, "compacting the store"),
            }
        }
        previous = Some(now);
    }
}

/// Shares load reports between replicas through the store, every [`SHARE_LOADS_EVERY`]:
/// the leader (which alone receives heartbeats) writes its reports when they changed,
/// followers read them, so a viewer placed by any replica goes to an edge with room.
pub async fn share_loads(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(SHARE_LOADS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        match shared.leader.fence() {
            Some(fence) => {
                let bytes = shared.loads.encode_shared();
                if written.as_ref() == Some(&bytes) {
                    continue;
                }
                match shared.store.share_loads(bytes.clone(), fence).await {
                    Ok(()) => written = Some(bytes),
                    Err(e) => tracing::debug!(error = %e, "sharing load reports"),
                }
            }
            None => {
                written = None;
                match shared.store.shared_loads().await {
                    Ok(Some(bytes)) => {
                        // Reports older than a few leases are from nodes that stopped.
                        let max_age = shared.lease_ttl * 3;
                        if let Err(e) = shared.loads.set_from_leader(&bytes, unix_ms(), max_age) {
                            tracing::warn!(error = %e, "undecodable shared load reports");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "reading shared load reports"),
                }
            }
        }
    }
}

/// Who leads, as the election loop publishes it.
#[derive(Debug, Default)]
pub struct Leader {
    fence: Mutex<Option<Fence>>,
}

impl Leader {
    /// Publishes this replica's leadership (`Some`) or its loss (`None`).
    pub fn set(&self, fence: Option<Fence>) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// The fence to write with, if this replica leads.
    pub fn fence(&self) -> Option<Fence> {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What both services share.
#[derive(Debug)]
pub struct Shared {
    /// Cluster state.
    pub store: Arc<dyn Store>,
    /// Who leads (for a follower's redirect).
    pub election: Arc<dyn Election>,
    /// This replica's leadership.
    pub leader: Arc<Leader>,
    /// Heartbeat-fed load and registrations.
    pub loads: Loads,
    /// Node lease TTL.
    pub lease_ttl: Duration,
    /// Viewer placement policy.
    pub policy: PlacementPolicy,
    /// The replica's view of the cluster and its changes.
    pub hub: Arc<Hub>,
    /// Client address → region, for `Resolve` and `/play`.
    pub regions: RegionTable,
    /// The placement snapshot `/play` decides on.
    pub placement_cache: PlacementCache,
    /// Publish keys, signing keys, playback policies and revocations.
    pub access: Arc<Access>,
}

/// How old the load reports in a cached placement snapshot may be.
const PLACEMENT_MAX_AGE: Duration = Duration::from_millis(200);

/// The placement snapshot of the hub's view with the load reports, rebuilt when the view
/// changes or every [`PLACEMENT_MAX_AGE`], so a `/play` decision costs no copy of the
/// cluster.
#[derive(Debug, Default)]
pub struct PlacementCache {
    inner: Mutex<Option<CachedPlacement>>,
}

/// When it was built, of which view, and the snapshot.
type CachedPlacement = (tokio::time::Instant, Arc<ClusterView>, Arc<Snapshot>);

impl Shared {
    /// The load reports placement decides on: the leader's own, or on a follower those
    /// the leader shared (its own, from a past leadership, until the first arrive).
    fn current_loads(&self) -> HashMap<String, Load> {
        if self.leader.fence().is_none() {
            let shared = self.loads.from_leader();
            if !shared.is_empty() {
                return shared;
            }
        }
        self.loads.snapshot()
    }

    /// The fence, or the refusal a follower answers with.
    async fn fence(&self) -> ApiResult<Fence> {
        if let Some(f) = self.leader.fence() {
            return Ok(f);
        }
        let leader = self.election.leader().await.ok().flatten();
        Err(ApiError::NotLeader { leader })
    }

    /// The placement snapshot of `view` with recent load reports (see [`PlacementCache`]).
    pub fn placement(&self, view: &Arc<ClusterView>) -> Arc<Snapshot> {
        let now = tokio::time::Instant::now();
        let lock = || {
            self.placement_cache
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        if let Some((at, v, snap)) = lock().as_ref() {
            if Arc::ptr_eq(v, view) && now.duration_since(*at) < PLACEMENT_MAX_AGE {
                return snap.clone();
            }
        }
        // Built without the lock: concurrent requests may build twice, never wait.
        let snap = Arc::new(view.placement(&self.current_loads()));
        *lock() = Some((now, view.clone(), snap.clone()));
        snap
    }

    /// The hub's last good view, for reads while the store is unreachable.
    fn last_good(&self, e: StoreError) -> ApiResult<Arc<ClusterView>> {
        match (&e, self.hub.view()) {
            (StoreError::Unavailable(_), Some(view)) => Ok(view),
            _ => Err(e.into()),
        }
    }

    /// The last good view while the hub finds the store unreachable: reads then answer
    /// at once instead of waiting for the store's deadline.
    fn degraded_view(&self) -> Option<Arc<ClusterView>> {
        if self.hub.is_store_up() {
            return None;
        }
        self.hub.view()
    }

    /// The live nodes, from the store, or from the last good view when it is unreachable.
    async fn snapshot(&self) -> ApiResult<Snapshot> {
        let loads = self.current_loads();
        if let Some(view) = self.degraded_view() {
            return Ok(view.placement(&loads));
        }
        match assign::snapshot(self.store.as_ref(), &loads).await {
            Ok(s) => Ok(s),
            Err(e) => Ok(self.last_good(e)?.placement(&loads)),
        }
    }

    /// Assignments (of `only`, or all), from the store or the last good view.
    async fn assignments(&self, only: Option<&str>) -> ApiResult<Vec<Assignment>> {
        let from_view = |view: &ClusterView| -> Vec<Assignment> {
            view.assignments
                .values()
                .filter(|a| only.is_none_or(|s| a.stream == s))
                .cloned()
                .collect()
        };
        if let Some(view) = self.degraded_view() {
            return Ok(from_view(&view));
        }
        let read = match only {
            Some(s) => self
                .store
                .assignment(s.to_owned())
                .await
                .map(|a| a.into_iter().map(|v| v.value).collect()),
            None => self
                .store
                .assignments()
                .await
                .map(|all| all.into_iter().map(|v| v.value).collect()),
        };
        match read {
            Ok(a) => Ok(a),
            Err(e) => {
                let view = self.last_good(e)?;
                Ok(from_view(&view))
            }
        }
    }

    fn node_info(&self, snap: &Snapshot, id: &str) -> Option<pb::NodeInfo> {
        let s = snap.nodes.get(id)?;
        let (load, at) = {
            let g = self.loads.lock();
            let mine = g.loads.get(id);
            let shared = || g.from_leader.get(id);
            match self.leader.fence() {
                Some(_) => mine.cloned(),
                None => shared().or(mine).cloned(),
            }
            .unwrap_or_default()
        };
        Some(pb::NodeInfo {
            node_id: s.node.id.clone(),
            role: pb::NodeRole::from(s.node.role).into(),
            addresses: Some(pb::NodeAddresses {
                relay: s.node.relay_addr.clone(),
                http: s.node.http_url.clone(),
                rtmp: s.node.rtmp_addr.clone(),
            }),
            region: s.node.region.clone(),
            capacity: Some(s.node.capacity.into()),
            state: if s.draining {
                pb::NodeState::Draining
            } else {
                pb::NodeState::Up
            }
            .into(),
            load: Some(load_to_pb(&load)),
            last_heartbeat_unix_ms: at,
        })
    }

    async fn stream_infos(&self, only: Option<&str>) -> ApiResult<Vec<pb::StreamInfo>> {
        let snap = self.snapshot().await?;
        let assignments = self.assignments(only).await?;
        Ok(assignments
            .into_iter()
            .map(|a| {
                let origin = snap.nodes.get(&a.origin);
                let relay = origin.map(|o| o.node.relay_addr.as_str()).unwrap_or("");
                let mut info = pb::StreamInfo {
                    stream: a.stream.clone(),
                    assignment: Some(a.to_pb(relay, origin.is_some())),
                    ..Default::default()
                };
                for s in snap.nodes.values() {
                    let Some(l) = s.load.streams.get(&a.stream) else {
                        continue;
                    };
                    match s.node.role {
                        Role::Edge => {
                            info.viewers += l.viewers;
                            info.edges.push(s.node.id.clone());
                        }
                        Role::Origin if s.node.id == a.origin => info.bitrate_bps = l.bitrate_bps,
                        Role::Origin => {}
                    }
                }
                info
            })
            .collect())
    }
}

fn load_to_pb(l: &Load) -> pb::LoadReport {
    pb::LoadReport {
        viewers: l.viewers,
        egress_bps: l.egress_bps,
        ingress_bps: l.ingress_bps,
        streams: l
            .streams
            .iter()
            .map(|(k, s)| pb::StreamLoad {
                stream: k.clone(),
                viewers: s.viewers,
                bitrate_bps: s.bitrate_bps,
                ..Default::default()
            })
            .collect(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn required(field: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::Invalid(format!("{field} is required")));
    }
    Ok(())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `NodeService`, called by origins and edges.
#[derive(Debug, Clone)]
pub struct NodeApi(pub Arc<Shared>);

impl NodeApi {
    async fn register(
        &self,
        caller: &NodeCaller,
        r: pb::RegisterRequest,
    ) -> ApiResult<pb::RegisterReply> {
        required("node_id", &r.node_id)?;
        let role = Role::try_from(r.role())
            .map_err(|_| ApiError::Invalid("role must be origin or edge".into()))?;
        // Only as itself: a certificate of one node cannot take over another's record.
        caller.may_be("register", node_role(role), &r.node_id)?;
        let sh = &self.0;
        sh.fence().await?;
        let addr = r.addresses.unwrap_or_default();
        let node = Node {
            id: r.node_id.clone(),
            role,
            region: r.region,
            relay_addr: addr.relay,
            http_url: addr.http,
            rtmp_addr: addr.rtmp,
            capacity: r.capacity.unwrap_or_default().into(),
        };
        let lease = sh.store.register_node(node, sh.lease_ttl).await?;
        let previous = sh
            .loads
            .lock()
            .registrations
            .insert(r.node_id.clone(), Registration { lease, role });
        if let Some(old) = previous.filter(|p| p.lease != lease) {
            // The old registration ends now rather than at its TTL.
            if let Err(error) = sh.store.revoke(old.lease).await {
                tracing::debug!(node = %r.node_id, %error, "revoking the previous lease");
            }
        }
        tracing::info!(node = %r.node_id, ?role, "node registered");
        Ok(pb::RegisterReply {
            heartbeat_interval_ms: (sh.lease_ttl / 3).as_millis() as u32,
            lease_ttl_ms: sh.lease_ttl.as_millis() as u32,
            incarnation: lease.0 as u64,
        })
    }

    async fn heartbeat_one(
        &self,
        caller: &NodeCaller,
        hb: pb::HeartbeatRequest,
    ) -> ApiResult<pb::HeartbeatReply> {
        caller.is("heartbeat", &hb.node_id)?;
        let sh = &self.0;
        let fence = sh.fence().await?;
        let reg = sh.loads.lock().registrations.get(&hb.node_id).copied();
        let Some(reg) = reg.filter(|r| r.lease.0 as u64 == hb.incarnation) else {
            return Err(ApiError::NotFound(format!(
                "node {} incarnation {} is not registered here",
                hb.node_id, hb.incarnation
            )));
        };
        // As the node registered: an edge's certificate does not keep an origin alive
        // (nor report its streams) when both have the same id.
        caller.may_be("heartbeat", node_role(reg.role), &hb.node_id)?;
        sh.store.keep_alive(reg.lease).await?;
        let report = hb.load.unwrap_or_default();
        let mut kicks: BTreeSet<String> = BTreeSet::new();
        // A certificate binds the report to its node: an epoch is no secret (assignment
        // watchers see it), so only an origin's reports, and none for a stream the view
        // shows another origin holding under that very epoch, may move continuity.
        // (A stale view never matches an honest report: a new holder has a new epoch.)
        let view = caller.is_verified().then(|| sh.hub.view()).flatten();
        let reports_epochs = !caller.is_verified() || reg.role == Role::Origin;
        // Origins report continuity under their epoch; a stale epoch means the stream is
        // held by someone else now: the origin must drop its publisher.
        for s in report
            .streams
            .iter()
            .filter(|s| s.epoch > 0 && reports_epochs)
        {
            let holder = view.as_ref().and_then(|v| v.assignments.get(&s.stream));
            if let Some(a) = holder.filter(|a| a.origin != hb.node_id && a.epoch == s.epoch) {
                tracing::warn!(node = %hb.node_id, stream = %s.stream, holder = %a.origin,
                    "heartbeat reports a stream another origin holds; report ignored");
                continue;
            }
            let cont: Continuity = s.continuity.unwrap_or_default().into();
            match assign::report(sh.store.as_ref(), &fence, &s.stream, s.epoch, cont, false).await {
                Ok(_) => {}
                Err(AssignError::StaleEpoch { .. } | AssignError::NoAssignment(_)) => {
                    kicks.insert(s.stream.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let draining = sh.store.draining().await?.contains(&hb.node_id);
        {
            let mut g = sh.loads.lock();
            g.loads
                .insert(hb.node_id.clone(), (Load::from(&report), unix_ms()));
            if let Some(k) = g.kicks.remove(&hb.node_id) {
                kicks.extend(k);
            }
        }
        Ok(pb::HeartbeatReply {
            state: if draining {
                pb::NodeState::Draining
            } else {
                pb::NodeState::Up
            }
            .into(),
            kick_streams: kicks.into_iter().collect(),
        })
    }

    #[tracing::instrument(name = "controller decision", skip_all, fields(op = "claim", stream = %r.stream, node = %r.node_id))]
    async fn claim(
        &self,
        caller: &NodeCaller,
        r: pb::ClaimStreamRequest,
    ) -> ApiResult<pb::ClaimStreamReply> {
        required("node_id", &r.node_id)?;
        required("stream", &r.stream)?;
        // Only origins claim, as themselves: a claim checks a publish credential, so any
        // other caller would have an oracle for publish keys.
        caller.may_be("claim", NodeRole::Origin, &r.node_id)?;
        // Bounded before anything reads them (origins cap both at the RTMP layer already).
        if !ferrocast_media::hls::names::valid_stream_key(&r.stream) {
            return Err(ApiError::Invalid("stream: not a stream key".into()));
        }
        if r.credential.len() > ferrocast_media::rtmp::MAX_QUERY_LEN {
            return Err(ApiError::Invalid("credential: too long".into()));
        }
        let sh = &self.0;
        let fence = sh.fence().await?;
        if let Err(why) = sh
            .access
            .check_publish(sh.store.as_ref(), &r.stream, &r.credential)
            .await
        {
            tracing::warn!(node = %r.node_id, stream = %r.stream, client = %r.client_ip, reason = %why, "publisher refused");
            return Ok(pb::ClaimStreamReply {
                outcome: pb::ClaimOutcome::RefusedUnauthorized.into(),
                assignment: None,
                reason: why,
            });
        }
        let snap = sh.snapshot().await?;
        let decision =
            assign::claim(sh.store.as_ref(), &fence, &snap, &r.node_id, &r.stream).await?;
        let relay_of = |id: &str| {
            snap.nodes
                .get(id)
                .map(|s| s.node.relay_addr.clone())
                .unwrap_or_default()
        };
        let (outcome, assignment, reason) = match decision {
            ClaimDecision::Grant { kind, assignment } => {
                let (o, why) = match kind {
                    GrantKind::New => (pb::ClaimOutcome::Granted, "granted".to_owned()),
                    GrantKind::AlreadyHeld => {
                        (pb::ClaimOutcome::AlreadyHeld, "already held".to_owned())
                    }
                    GrantKind::TakenOver { from } => (
                        pb::ClaimOutcome::TakenOver,
                        format!("taken over from {from}, whose lease expired"),
                    ),
                };
                tracing::info!(node = %r.node_id, stream = %r.stream, epoch = assignment.epoch, %why, "claim granted");
                let relay = relay_of(&assignment.origin);
                (o, Some(assignment.to_pb(&relay, true)), why)
            }
            ClaimDecision::Refuse(refusal) => {
                let current = sh.store.assignment(r.stream.clone()).await?;
                let current = current.map(|v| {
                    let relay = relay_of(&v.value.origin);
                    let alive = snap.is_live(&v.value.origin);
                    v.value.to_pb(&relay, alive)
                });
                let (o, why) = match refusal {
                    Refusal::Duplicate { holder } => (
                        pb::ClaimOutcome::RefusedDuplicate,
                        format!("live on {holder}"),
                    ),
                    Refusal::UnknownNode => (
                        pb::ClaimOutcome::RefusedUnavailable,
                        "not registered (or its lease expired)".into(),
                    ),
                    Refusal::NotAnOrigin => {
                        (pb::ClaimOutcome::RefusedUnavailable, "not an origin".into())
                    }
                    Refusal::Draining => (pb::ClaimOutcome::RefusedUnavailable, "draining".into()),
                    Refusal::AtCapacity { max_streams } => (
                        pb::ClaimOutcome::RefusedUnavailable,
                        format!("at capacity ({max_streams} streams)"),
                    ),
                };
                (o, current, why)
            }
        };
        Ok(pb::ClaimStreamReply {
            outcome: outcome.into(),
            assignment,
            reason,
        })
    }

    async fn release(
        &self,
        caller: &NodeCaller,
        r: pb::ReleaseStreamRequest,
    ) -> ApiResult<pb::ReleaseStreamReply> {
        required("stream", &r.stream)?;
        // Only origins hold streams.
        caller.may_be("release", NodeRole::Origin, &r.node_id)?;
        let sh = &self.0;
        let fence = sh.fence().await?;
        if caller.is_verified() {
            // Only what the caller holds. The epoch check below fences a holder that
            // changes after this read (a new holder has a new epoch).
            let current = sh.store.assignment(r.stream.clone()).await?;
            if let Some(v) = current.filter(|v| v.value.origin != r.node_id) {
                return Err(caller.refuse(
                    "release",
                    format!("stream {} is held by {}", r.stream, v.value.origin),
                ));
            }
        }
        let cont = r.continuity.unwrap_or_default().into();
        assign::report(sh.store.as_ref(), &fence, &r.stream, r.epoch, cont, true).await?;
        tracing::info!(node = %r.node_id, stream = %r.stream, epoch = r.epoch, "stream released");
        Ok(pb::ReleaseStreamReply {})
    }
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let caller = NodeCaller::of(&request)?;
        Ok(Response::new(
            NodeApi::register(self, &caller, request.into_inner()).await?,
        ))
    }

    type HeartbeatStream = BoxStream<pb::HeartbeatReply>;

    async fn heartbeat(
        &self,
        request: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let api = self.clone();
        let caller = NodeCaller::of(&request)?;
        let mut incoming = request.into_inner();
        // One reply per heartbeat, in order; the first error ends the stream.
        let out = async_stream_of(move |tx| async move {
            while let Some(hb) = incoming.next().await {
                let reply = match hb {
                    Ok(hb) => api.heartbeat_one(&caller, hb).await.map_err(Status::from),
                    Err(s) => Err(s),
                };
                let end = reply.is_err();
                if tx.send(reply).await.is_err() || end {
                    break;
                }
            }
        });
        Ok(Response::new(out))
    }

    async fn claim_stream(
        &self,
        request: Request<pb::ClaimStreamRequest>,
    ) -> Result<Response<pb::ClaimStreamReply>, Status> {
        let caller = NodeCaller::of(&request)?;
        Ok(Response::new(
            self.claim(&caller, request.into_inner()).await?,
        ))
    }

    async fn release_stream(
        &self,
        request: Request<pb::ReleaseStreamRequest>,
    ) -> Result<Response<pb::ReleaseStreamReply>, Status> {
        let caller = NodeCaller::of(&request)?;
        Ok(Response::new(
            self.release(&caller, request.into_inner()).await?,
        ))
    }

    async fn place(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveReply>, Status> {
        // The operators' Resolve, for edges answering `/play`: a read, on any replica.
        NodeCaller::of(&request)?;
        let op = OperatorApi(self.0.clone());
        Ok(Response::new(op.place(request.into_inner()).await?))
    }

    type WatchAssignmentsStream = BoxStream<pb::AssignmentEvent>;

    async fn watch_assignments(
        &self,
        request: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        NodeCaller::of(&request)?;
        let node = request.into_inner().node_id;
        tracing::debug!(%node, "assignment watcher");
        let snapshot = |view: &ClusterView| {
            vec![pb::AssignmentEvent {
                kind: Some(pb::assignment_event::Kind::Snapshot(
                    pb::AssignmentSnapshot {
                        assignments: view.assignments_pb(),
                    },
                )),
            }]
        };
        Ok(Response::new(watch(
            self.0.hub.clone(),
            snapshot,
            |u: &Update| u.assignments.clone(),
        )))
    }

    type WatchAccessStream = BoxStream<pb::AccessSnapshot>;

    async fn watch_access(
        &self,
        request: Request<pb::WatchAccessRequest>,
    ) -> Result<Response<Self::WatchAccessStream>, Status> {
        // Playback rules carry verification secrets: only for the nodes that check
        // playback tokens (edges, and origins serving viewers).
        NodeCaller::of(&request)?.has_role("watch access", &[NodeRole::Edge, NodeRole::Origin])?;
        let node = request.into_inner().node_id;
        tracing::debug!(%node, "access watcher");
        // Never an empty view (that would say "everything open, nothing revoked"): before
        // this replica's first good read the node is told to try again, or another replica.
        if !self.0.access.loaded(ACCESS_FIRST_LOAD_WAIT).await {
            return Err(Status::unavailable(
                "this controller has not read the access rules yet",
            ));
        }
        let mut rx = self.0.access.subscribe();
        let closing = self.0.hub.closing();
        // Whole snapshots: each is small, and a watcher that misses some sees the last.
        Ok(Response::new(async_stream_of(move |tx| async move {
            loop {
                let snap = rx.borrow_and_update().edge_snapshot();
                if tx.send(Ok(snap)).await.is_err() {
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = closing.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("controller shutting down"))).await;
                        return;
                    }
                }
            }
        })))
    }
}

/// How long `WatchAccess` waits for a replica's first read of the access rules before it
/// answers `UNAVAILABLE`: under a node's 3 s call deadline, so the node moves on to
/// another replica rather than time out.
const ACCESS_FIRST_LOAD_WAIT: Duration = Duration::from_secs(2);

/// Messages a watcher may have queued before its connection's flow control holds the
/// sender; past them, updates wait in the hub's bounded backlog.
const WATCH_QUEUE: usize = 64;

/// How long the final error of a watcher stream may wait for room in its queue.
const WATCH_FAREWELL: Duration = Duration::from_secs(1);

/// A watcher's stream over the hub: `first` of the subscription's view, then `each`
/// update's messages. Ends with `RESOURCE_EXHAUSTED` when the watcher fell too far behind,
/// with `UNAVAILABLE` when the replica shuts down, and silently when the client leaves.
fn watch<T, F, E>(hub: Arc<Hub>, first: F, each: E) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(&ClusterView) -> Vec<T> + Send + 'static,
    E: Fn(&Update) -> Vec<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE);
    let closing = hub.closing();
    tokio::spawn(async move {
        let sub = tokio::select! {
            _ = tx.closed() => return,
            s = hub.subscribe() => s,
        };
        let Some(mut sub) = sub else {
            let _ = tx
                .send(Err(Status::unavailable("controller shutting down")))
                .await;
            return;
        };
        drop(hub);
        for m in first(&sub.view) {
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
        }
        loop {
            let update = tokio::select! {
                _ = tx.closed() => return,
                _ = closing.cancelled() => Err(Status::unavailable("controller shutting down")),
                r = sub.updates.recv() => match r {
                    Ok(u) => Ok(u),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        Err(Status::resource_exhausted(format!(
                            "watcher too slow: {n} updates behind; watch again for a fresh snapshot"
                        )))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        Err(Status::unavailable("controller shutting down"))
                    }
                },
            };
            match update {
                Ok(u) => {
                    for m in each(&u) {
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(status) => {
                    // The queue may be full of what the watcher did not read yet: wait a
                    // little for room, not for ever.
                    let _ = tokio::time::timeout(WATCH_FAREWELL, tx.send(Err(status))).await;
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A stream fed by `f` through a small bounded channel (a slow reader slows the producer).
fn async_stream_of<T, F, Fut>(f: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// `OperatorService`, called by operators and `ferrocast ctl` (behind the token check of
/// [`OperatorAuth`]).
#[derive(Debug, Clone)]
pub struct OperatorApi(pub Arc<Shared>);

impl OperatorApi {
    async fn list_nodes(&self, r: pb::ListNodesRequest) -> ApiResult<pb::ListNodesReply> {
        let sh = &self.0;
        let snap = sh.snapshot().await?;
        let want = Role::try_from(r.role()).ok();
        let nodes = snap
            .nodes
            .values()
            .filter(|s| want.is_none_or(|w| s.node.role == w))
            .filter_map(|s| sh.node_info(&snap, &s.node.id))
            .collect();
        Ok(pb::ListNodesReply { nodes })
    }

    async fn get_node(&self, r: pb::GetNodeRequest) -> ApiResult<pb::NodeInfo> {
        let snap = self.0.snapshot().await?;
        self.0
            .node_info(&snap, &r.node_id)
            .ok_or_else(|| ApiError::NotFound(format!("node {} is not live", r.node_id)))
    }

    async fn drain(&self, r: pb::DrainNodeRequest) -> ApiResult<pb::DrainNodeReply> {
        required("node_id", &r.node_id)?;
        let sh = &self.0;
        let fence = sh.fence().await?;
        sh.store
            .set_draining(r.node_id.clone(), r.drain, fence)
            .await?;
        tracing::info!(node = %r.node_id, drain = r.drain, "drain set");
        let snap = sh.snapshot().await?;
        Ok(pb::DrainNodeReply {
            node: sh.node_info(&snap, &r.node_id),
        })
    }

    async fn kick(&self, r: pb::KickPublisherRequest) -> ApiResult<pb::KickPublisherReply> {
        required("stream", &r.stream)?;
        let sh = &self.0;
        sh.fence().await?;
        let Some(a) = sh.store.assignment(r.stream.clone()).await? else {
            return Err(ApiError::NotFound(format!(
                "stream {} has no origin",
                r.stream
            )));
        };
        sh.loads
            .lock()
            .kicks
            .entry(a.value.origin.clone())
            .or_default()
            .insert(r.stream.clone());
        tracing::info!(stream = %r.stream, origin = %a.value.origin, reason = %r.reason, "publisher kicked");
        Ok(pb::KickPublisherReply {
            origin_id: a.value.origin,
        })
    }

    #[tracing::instrument(name = "controller decision", skip_all, fields(op = "resolve", stream = %r.stream))]
    async fn resolve(&self, r: pb::ResolveRequest) -> ApiResult<pb::ResolveReply> {
        required("stream", &r.stream)?;
        let snap = self.0.snapshot().await?;
        self.resolve_on(&snap, r)
    }

    /// [`Self::resolve`] over the hub's view (at most one poll old), as `/play` uses:
    /// an edge asks for every viewer that comes to it, and none of those should cost a
    /// store read. Before the hub's first poll, a fresh snapshot.
    async fn place(&self, r: pb::ResolveRequest) -> ApiResult<pb::ResolveReply> {
        required("stream", &r.stream)?;
        let sh = &self.0;
        match sh.hub.view() {
            Some(view) => self.resolve_on(&sh.placement(&view), r),
            None => self.resolve_on(&sh.snapshot().await?, r),
        }
    }

    fn resolve_on(&self, snap: &Snapshot, r: pb::ResolveRequest) -> ApiResult<pb::ResolveReply> {
        let sh = &self.0;
        // The region given, else the CIDR table's for the client address.
        let client_ip = match r.client_ip.as_str() {
            "" => None,
            ip => Some(ip.parse::<std::net::IpAddr>().map_err(|_| {
                ApiError::Invalid(format!("client_ip {ip:?} is not an IP address"))
            })?),
        };
        let region = Some(r.region.as_str())
            .filter(|r| !r.is_empty())
            .or_else(|| client_ip.and_then(|ip| sh.regions.lookup(ip)))
            .map(str::to_owned);
        let region = region.as_deref();
        let p = place_viewer(snap, &r.stream, region, &sh.policy).map_err(|e| match e {
            PlacementError::NoEdge => ApiError::Precondition("no live edge".into()),
            e => ApiError::Precondition(e.to_string()),
        })?;
        let base = snap
            .nodes
            .get(&p.edge)
            .map(|s| s.node.http_url.trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let (reason, why) = match p.reason {
            PlacementReason::AlreadyServing => (
                pb::PlacementReason::AlreadyServing,
                "already serves the stream, under its load bound",
            ),
            PlacementReason::LeastLoaded => (pb::PlacementReason::LeastLoaded, "least loaded"),
        };
        Ok(pb::ResolveReply {
            url: crate::play::play_location(&base, &r.stream, None),
            detail: format!("{}: {why}", p.edge),
            edge_id: p.edge,
            reason: reason.into(),
            client_region: region.unwrap_or("").to_owned(),
            region_match: p.region_match,
        })
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesReply>, Status> {
        Ok(Response::new(
            OperatorApi::list_nodes(self, request.into_inner()).await?,
        ))
    }

    async fn get_node(
        &self,
        request: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        Ok(Response::new(
            OperatorApi::get_node(self, request.into_inner()).await?,
        ))
    }

    async fn list_streams(
        &self,
        _request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsReply>, Status> {
        let streams = self.0.stream_infos(None).await?;
        Ok(Response::new(pb::ListStreamsReply { streams }))
    }

    async fn get_stream(
        &self,
        request: Request<pb::GetStreamRequest>,
    ) -> Result<Response<pb::StreamInfo>, Status> {
        let name = request.into_inner().stream;
        let info = self.0.stream_infos(Some(&name)).await?.into_iter().next();
        info.map(Response::new)
            .ok_or_else(|| ApiError::NotFound(format!("no stream {name}")).into())
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeReply>, Status> {
        let who = admin(&request, "DrainNode")?;
        let r = request.into_inner();
        let what = format!("node={} drain={}", r.node_id, r.drain);
        Ok(audited(&who, "DrainNode", &what, self.drain(r).await)?)
    }

    async fn kick_publisher(
        &self,
        request: Request<pb::KickPublisherRequest>,
    ) -> Result<Response<pb::KickPublisherReply>, Status> {
        let who = admin(&request, "KickPublisher")?;
        let r = request.into_inner();
        let what = format!("stream={}", r.stream);
        Ok(audited(&who, "KickPublisher", &what, self.kick(r).await)?)
    }

    async fn create_publish_key(
        &self,
        request: Request<pb::CreatePublishKeyRequest>,
    ) -> Result<Response<pb::PublishKeySecret>, Status> {
        let who = admin(&request, "CreatePublishKey")?;
        let r = request.into_inner();
        let what = format!("stream={}", r.stream);
        let out = async {
            let fence = self.0.fence().await?;
            let k = self
                .access_admin(&fence)
                .create_publish_key(r.stream)
                .await?;
            Ok(k)
        }
        .await;
        let what = match &out {
            Ok(k) => format!("{what} key={}", k.key.as_ref().map_or("", |k| &k.key_id)),
            Err(_) => what,
        };
        Ok(audited(&who, "CreatePublishKey", &what, out)?)
    }

    async fn list_publish_keys(
        &self,
        request: Request<pb::ListPublishKeysRequest>,
    ) -> Result<Response<pb::ListPublishKeysReply>, Status> {
        let r = request.into_inner();
        let keys = access::list_publish_keys(self.0.store.as_ref(), &r.stream)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListPublishKeysReply { keys }))
    }

    async fn rotate_publish_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::PublishKeySecret>, Status> {
        let who = admin(&request, "RotatePublishKey")?;
        let id = request.into_inner().key_id;
        let out = async {
            let fence = self.0.fence().await?;
            Ok(self.access_admin(&fence).rotate_publish_key(&id).await?)
        }
        .await;
        Ok(audited(
            &who,
            "RotatePublishKey",
            &format!("key={id}"),
            out,
        )?)
    }

    async fn revoke_publish_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::RevokeReply>, Status> {
        let who = admin(&request, "RevokePublishKey")?;
        let id = request.into_inner().key_id;
        let out = async {
            let fence = self.0.fence().await?;
            self.access_admin(&fence).revoke_publish_key(&id).await?;
            Ok(pb::RevokeReply {})
        }
        .await;
        Ok(audited(
            &who,
            "RevokePublishKey",
            &format!("key={id}"),
            out,
        )?)
    }

    async fn create_signing_key(
        &self,
        request: Request<pb::CreateSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKey>, Status> {
        let who = admin(&request, "CreateSigningKey")?;
        let r = request.into_inner();
        let what = format!(
            "purpose={} algorithm={}",
            r.purpose,
            if r.algorithm.is_empty() {
                "hmac-sha256"
            } else {
                &r.algorithm
            }
        );
        let out = async {
            let fence = self.0.fence().await?;
            Ok(self.access_admin(&fence).create_signing_key(r).await?)
        }
        .await;
        let what = match &out {
            Ok(k) => format!("{what} key={}", k.key_id),
            Err(_) => what,
        };
        Ok(audited(&who, "CreateSigningKey", &what, out)?)
    }

    async fn list_signing_keys(
        &self,
        _request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysReply>, Status> {
        let keys = access::list_signing_keys(self.0.store.as_ref())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListSigningKeysReply { keys }))
    }

    async fn revoke_signing_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::RevokeReply>, Status> {
        let who = admin(&request, "RevokeSigningKey")?;
        let id = request.into_inner().key_id;
        let out = async {
            let fence = self.0.fence().await?;
            self.access_admin(&fence).revoke_signing_key(&id).await?;
            Ok(pb::RevokeReply {})
        }
        .await;
        Ok(audited(
            &who,
            "RevokeSigningKey",
            &format!("key={id}"),
            out,
        )?)
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenReply>, Status> {
        let who = admin(&request, "IssueToken")?;
        let r = request.into_inner();
        let what = format!(
            "purpose={} stream={} ttl={}s",
            r.purpose, r.stream, r.ttl_seconds
        );
        // Signing reads keys only; any replica may do it, but the audit trail is the
        // leader's, like every other changing call.
        let out = async {
            let fence = self.0.fence().await?;
            Ok(self.access_admin(&fence).issue_token(r).await?)
        }
        .await;
        Ok(audited(&who, "IssueToken", &what, out)?)
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeReply>, Status> {
        let who = admin(&request, "RevokeToken")?;
        let token = request.into_inner().token;
        // The signature identifies the token; the log gets no usable token.
        let what = format!("token_key={}", token.split('.').next().unwrap_or(""));
        let out = async {
            let fence = self.0.fence().await?;
            self.access_admin(&fence).revoke_token(&token).await?;
            Ok(pb::RevokeReply {})
        }
        .await;
        Ok(audited(&who, "RevokeToken", &what, out)?)
    }

    async fn set_stream_access(
        &self,
        request: Request<pb::StreamAccess>,
    ) -> Result<Response<pb::StreamAccess>, Status> {
        let who = admin(&request, "SetStreamAccess")?;
        let r = request.into_inner();
        let what = format!(
            "stream={} token_required={} blocked={}",
            r.stream, r.token_required, r.blocked
        );
        let out = async {
            let fence = self.0.fence().await?;
            Ok(self.access_admin(&fence).set_stream(r).await?)
        }
        .await;
        Ok(audited(&who, "SetStreamAccess", &what, out)?)
    }

    async fn list_stream_access(
        &self,
        _request: Request<pb::ListStreamAccessRequest>,
    ) -> Result<Response<pb::ListStreamAccessReply>, Status> {
        let streams = access::list_streams(self.0.store.as_ref())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListStreamAccessReply { streams }))
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveReply>, Status> {
        Ok(Response::new(
            OperatorApi::resolve(self, request.into_inner()).await?,
        ))
    }

    type WatchEventsStream = BoxStream<pb::Event>;

    async fn watch_events(
        &self,
        _request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        Ok(Response::new(watch(
            self.0.hub.clone(),
            |_: &ClusterView| Vec::new(),
            |u: &Update| u.events.clone(),
        )))
    }
}

impl OperatorApi {
    fn access_admin<'a>(&'a self, fence: &'a Fence) -> access::Admin<'a> {
        access::Admin {
            store: self.0.store.as_ref(),
            fence,
            access: &self.0.access,
        }
    }
}

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorRole {
    /// Reads only: lists, gets, resolve, events.
    ReadOnly,
    /// Everything.
    Admin,
}

/// Who makes an operator call, as [`OperatorAuth`] identified them (a request extension).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`admin`, `read-only`), or `anonymous` when calls are open.
    pub name: Arc<str>,
    /// What the caller may do.
    pub role: OperatorRole,
    /// The caller's address.
    pub peer: Option<std::net::SocketAddr>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(p) => write!(f, "{}@{p}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// The caller of `req`, refused unless an admin.
fn admin<T>(req: &Request<T>, op: &str) -> ApiResult<Caller> {
    let caller = req.extensions().get::<Caller>().cloned().unwrap_or(Caller {
        // No interceptor in front: operator calls are open.
        name: Arc::from("anonymous"),
        role: OperatorRole::Admin,
        peer: crate::tls::remote_addr(req),
    });
    if caller.role != OperatorRole::Admin {
        tracing::warn!(target: "ferrocast::audit", who = %caller, op, "refused: read-only operator");
        return Err(ApiError::Forbidden(format!(
            "{op} needs an admin token or certificate; {} is read-only",
            caller.name
        )));
    }
    Ok(caller)
}

/// Logs a changing call with who made it and how it ended.
fn audited<T>(who: &Caller, op: &str, what: &str, out: ApiResult<T>) -> ApiResult<Response<T>> {
    match out {
        Ok(v) => {
            tracing::info!(target: "ferrocast::audit", who = %who, op, what, "operator call done");
            Ok(Response::new(v))
        }
        Err(e) => {
            tracing::info!(target: "ferrocast::audit", who = %who, op, what, error = %e, "operator call failed");
            Err(e)
        }
    }
}

/// Who may call the operator API, and as whom ([`Caller`], which goes with the request):
///
/// - an operator certificate (TLS, verified against `--operator-ca`) whose common name
///   is `admin:NAME` or `read:NAME` acts with that role as `cert:NAME`; it wins over a
///   token sent with it. An operator CA's certificate with another name is refused;
/// - otherwise, with tokens configured, the call must carry
///   `authorization: Bearer <token>` of one of them (named `admin` and `read-only`);
/// - with neither tokens nor operator certificates configured, every call is allowed.
///
/// A refused call (no credential, a wrong token, an operator certificate without a
/// role) is counted in `ferrocast_controller_operator_auth_failures_total{reason}` and
/// logged (target `ferrocast::audit`) with the caller's address: at most one line per
/// address per [`AUTH_FAILURE_LOG_INTERVAL`], which says how many were not logged, so
/// that someone guessing tokens can neither pass unseen nor flood the log.
#[derive(Debug, Clone, Default)]
pub struct OperatorAuth {
    tokens: Arc<Vec<(String, Arc<str>, OperatorRole)>>,
    certificates: bool,
    failures: AuthFailures,
}

/// One log line per caller address per this long about its failed operator calls.
pub const AUTH_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Addresses whose failures are remembered for rate-limiting at most; past that, the
/// oldest are forgotten (so a flood from many addresses costs bounded memory, and at
/// worst more log lines).
const AUTH_FAILURE_ADDRESSES: usize = 4096;

/// Why an operator call was refused (the counter's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AuthFailure {
    /// No bearer token and no operator certificate.
    NoCredential,
    /// A bearer token that is none of the configured ones.
    WrongToken,
    /// An operator CA's certificate whose name gives no role.
    CertificateWithoutRole,
}

impl AuthFailure {
    fn as_str(self) -> &'static str {
        match self {
            AuthFailure::NoCredential => "no_credential",
            AuthFailure::WrongToken => "wrong_token",
            AuthFailure::CertificateWithoutRole => "certificate_without_role",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AuthFailureLabels {
    reason: &'static str,
}

/// The failure counter and the per-address log limiter, shared by every clone of the
/// interceptor.
#[derive(Debug, Clone, Default)]
struct AuthFailures {
    counter: prometheus_client::metrics::family::Family<
        AuthFailureLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Address → (when its last line was logged, failures since not logged).
    logged: Arc<Mutex<FailureLog>>,
}

/// See [`AuthFailures::logged`].
type FailureLog = HashMap<Option<std::net::IpAddr>, (tokio::time::Instant, u64)>;

impl AuthFailures {
    /// Counts a refusal of the caller at `peer`, and logs it unless this address had a
    /// line within the interval.
    fn record(&self, peer: Option<std::net::SocketAddr>, why: AuthFailure, detail: &str) {
        self.counter
            .get_or_create(&AuthFailureLabels {
                reason: why.as_str(),
            })
            .inc();
        let now = tokio::time::Instant::now();
        let ip = peer.map(|p| p.ip());
        let suppressed = {
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, quiet)) = logged.get_mut(&ip) {
                if now.duration_since(*at) < AUTH_FAILURE_LOG_INTERVAL {
                    *quiet += 1;
                    return;
                }
                let quiet = std::mem::take(quiet);
                *at = now;
                quiet
            } else {
                if logged.len() >= AUTH_FAILURE_ADDRESSES {
                    logged.retain(|_, (at, _)| now.duration_since(*at) < AUTH_FAILURE_LOG_INTERVAL);
                    if logged.len() >= AUTH_FAILURE_ADDRESSES {
                        logged.clear();
                    }
                }
                logged.insert(ip, (now, 0));
                0
            }
        };
        tracing::warn!(target: "ferrocast::audit", peer = ?peer, reason = why.as_str(), detail,
            not_logged_since_last = suppressed, "refused: operator authentication failed");
    }
}

impl OperatorAuth {
    /// Checks for the admin `token`, or lets everything through with `None`.
    pub fn new(token: Option<String>) -> Self {
        Self::with_roles(token, None)
    }

    /// An admin token and a read-only token (which needs an admin token too).
    pub fn with_roles(admin: Option<String>, read_only: Option<String>) -> Self {
        let mut tokens = Vec::new();
        if let Some(t) = admin {
            tokens.push((t, Arc::from("admin"), OperatorRole::Admin));
        }
        if let Some(t) = read_only {
            tokens.push((t, Arc::from("read-only"), OperatorRole::ReadOnly));
        }
        OperatorAuth {
            tokens: Arc::new(tokens),
            certificates: false,
            failures: AuthFailures::default(),
        }
    }

    /// Registers `ferrocast_controller_operator_auth_failures_total` into `registry`.
    pub fn with_metrics(self, registry: &ferrocast_runtime::metrics::Metrics) -> Self {
        let counter = self.failures.counter.clone();
        registry.register(|r| {
            r.register(
                "ferrocast_controller_operator_auth_failures",
                "Operator API calls refused for their credential, by reason",
                counter,
            )
        });
        self
    }

    /// Whether operator certificates are accepted (an operator CA is configured); then
    /// calls are no longer open without a token.
    pub fn with_certificates(mut self, on: bool) -> Self {
        self.certificates = on;
        self
    }
}

impl tonic::service::Interceptor for OperatorAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let peer = crate::tls::remote_addr(&req);
        let cert = req
            .extensions()
            .get::<crate::tls::GrpcPeer>()
            .map(|p| p.peer.clone());
        if let (true, Some(cert)) = (self.certificates, cert) {
            use ferrocast_tls::grpc::{OperatorGrant, Peer};
            match &*cert {
                Peer::Operator(id) => {
                    let role = match id.role {
                        OperatorGrant::Admin => OperatorRole::Admin,
                        OperatorGrant::Read => OperatorRole::ReadOnly,
                    };
                    req.extensions_mut().insert(Caller {
                        name: Arc::from(format!("cert:{}", id.name)),
                        role,
                        peer,
                    });
                    return Ok(req);
                }
                Peer::Unrecognized(cn) => {
                    self.failures.record(
                        peer,
                        AuthFailure::CertificateWithoutRole,
                        &format!("certificate common name {cn:?}"),
                    );
                    return Err(Status::unauthenticated(format!(
                        "the operator certificate's common name {cn:?} is not admin:NAME or read:NAME"
                    )));
                }
                Peer::Anonymous | Peer::Node => {}
            }
        }
        if self.tokens.is_empty() && !self.certificates {
            req.extensions_mut().insert(Caller {
                name: Arc::from("anonymous"),
                role: OperatorRole::Admin,
                peer,
            });
            return Ok(req);
        }
        let given = req.metadata().get("authorization");
        let got = given
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Every token is compared, so the time taken does not tell which one matched.
        let found = self.tokens.iter().fold(None, |found, (t, name, role)| {
            if constant_time_eq(got.as_bytes(), t.as_bytes()) {
                Some((name.clone(), *role))
            } else {
                found
            }
        });
        if found.is_none() {
            // The token itself is never logged: a wrong one may be a real one mistyped.
            let why = match given {
                None => AuthFailure::NoCredential,
                Some(_) => AuthFailure::WrongToken,
            };
            self.failures.record(peer, why, "");
        }
        match found {
            Some((name, role)) => {
                req.extensions_mut().insert(Caller { name, role, peer });
                Ok(req)
            }
            None if self.certificates => Err(Status::unauthenticated(
                "operator calls need an operator certificate or a bearer token",
            )),
            None => Err(Status::unauthenticated(
                "operator calls need a bearer token",
            )),
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_status_codes() {
        let s = Status::from(ApiError::NotLeader {
            leader: Some("10.0.0.2:50051".into()),
        });
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.metadata().get(LEADER_METADATA).unwrap(), "10.0.0.2:50051");
        let stale = AssignError::StaleEpoch {
            stream: "s".into(),
            epoch: 1,
            current: 2,
        };
        assert_eq!(
            Status::from(ApiError::from(stale)).code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            Status::from(ApiError::Store(StoreError::LeaseExpired(1))).code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            Status::from(ApiError::Store(StoreError::Fenced)).code(),
            tonic::Code::Unavailable
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_that_does_not_read_is_dropped_with_an_error() {
        use crate::model::{Capacity, Node, Role};
        use crate::store::memory::MemoryStore;
        let store = Arc::new(MemoryStore::new());
        let hub = Arc::new(Hub::new(store.clone(), Duration::from_millis(200), 2));
        hub.poll_once().await.unwrap();
        // Each update is more than the watcher's queue holds.
        let mut stream = watch(
            hub.clone(),
            |_: &ClusterView| vec![0u32],
            |u: &Update| vec![1u32; WATCH_QUEUE + 10 * u.events.len()],
        );
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            0,
            "the snapshot first"
        );
        for i in 0..5 {
            let node = Node {
                id: format!("n{i}"),
                role: Role::Edge,
                region: "eu".into(),
                relay_addr: String::new(),
                http_url: String::new(),
                rtmp_addr: String::new(),
                capacity: Capacity::default(),
            };
            store
                .register_node(node, Duration::from_secs(30))
                .await
                .unwrap();
            hub.poll_once().await.unwrap();
        }
        let mut read = 0;
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => read += 1,
                    Some(Err(s)) => return Some(s),
                    None => return None,
                }
            }
        })
        .await
        .expect("the stream ends");
        let status = end.expect("with an error");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            read < 5 * (WATCH_QUEUE + 10),
            "dropped before the end: {read}"
        );
    }

    #[test]
    fn operator_token() {
        use tonic::service::Interceptor;
        let mut open = OperatorAuth::new(None);
        assert!(open.call(Request::new(())).is_ok());
        let mut closed = OperatorAuth::new(Some("s3cret".into()));
        assert_eq!(
            closed.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(closed.call(req).is_ok());
        assert!(!constant_time_eq(b"abc", b"abd"));

        // Roles: the read-only token passes the check but is not an admin.
        let mut roles = OperatorAuth::with_roles(Some("adm".into()), Some("ro".into()));
        let with = |t: &str| {
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
            r
        };
        let ro = roles.call(with("ro")).unwrap();
        let err = Status::from(admin(&ro, "DrainNode").unwrap_err());
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let adm = roles.call(with("adm")).unwrap();
        assert_eq!(&*admin(&adm, "DrainNode").unwrap().name, "admin");
        assert!(roles.call(with("nope")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_operator_calls_are_counted_and_logged_once_per_address_per_interval() {
        use tonic::service::Interceptor;
        let registry = ferrocast_runtime::metrics::Metrics::new();
        let mut auth = OperatorAuth::new(Some("s3cret".into())).with_metrics(&registry);
        let from = |token: Option<&str>| {
            let mut r = Request::new(());
            if let Some(t) = token {
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            r
        };
        let failures = |auth: &OperatorAuth| {
            auth.failures
                .logged
                .lock()
                .unwrap()
                .values()
                .map(|(_, quiet)| *quiet)
                .sum::<u64>()
        };
        // A hand-made request has no remote address: these all count for the unknown one.
        for _ in 0..5 {
            assert!(auth.call(from(Some("guess"))).is_err());
        }
        assert!(auth.call(from(None)).is_err());
        assert_eq!(failures(&auth), 5, "one line, five held back");
        tokio::time::advance(AUTH_FAILURE_LOG_INTERVAL).await;
        assert!(auth.call(from(Some("guess"))).is_err());
        assert_eq!(
            failures(&auth),
            0,
            "the next line tells how many were held back"
        );
        let text = registry.render();
        for needle in [
            "ferrocast_controller_operator_auth_failures_total{reason=\"wrong_token\"} 6",
            "ferrocast_controller_operator_auth_failures_total{reason=\"no_credential\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        // A good token is no failure.
        assert!(auth.call(from(Some("s3cret"))).is_ok());
        assert!(registry.render().contains("reason=\"wrong_token\"} 6"));
    }
}
