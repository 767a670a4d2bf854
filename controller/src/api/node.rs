//! `NodeService`, called by origins and edges: register, heartbeat (load reports in,
//! drain state and kicks out), claim and release streams, and the watches of assignments
//! and access rules. Thin over [`assign`], [`Sessions`](crate::sessions::Sessions) and
//! the [`Hub`](crate::hub::Hub); every caller is checked against its certificate first
//! ([`NodeCaller`]).
//!
//! Writes (register, heartbeat, claim, release) are served only by the leader; a follower
//! answers with the leader's address ([`ApiError::NotLeader`]). The watches are served by
//! every replica.

use super::error::{required, ApiError, ApiResult};
use super::operator::OperatorApi;
use super::watch::{async_stream_of, watch, BoxStream};
use crate::assign::{self, AssignError};
use crate::hub::{ClusterView, Update};
use crate::identity::{node_role, NodeCaller};
use crate::load::unix_ms;
use crate::model::{Continuity, Load, Node, Role};
use crate::scheduler::{ClaimDecision, GrantKind, Refusal};
use crate::sessions::Registration;
use crate::state::Shared;
use ferrocast_proto::controller::v1 as pb;
use ferrocast_tls::identity::NodeRole;
use pb::node_service_server::NodeService;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

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
            .sessions
            .register(&r.node_id, Registration { lease, role });
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
        let reg = sh.sessions.registration(&hb.node_id);
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
        sh.loads.report(&hb.node_id, Load::from(&report), unix_ms());
        kicks.extend(sh.sessions.take_kicks(&hb.node_id));
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
        if !ferrocast_names::valid_stream_key(&r.stream) {
            return Err(ApiError::Invalid("stream: not a stream key".into()));
        }
        if r.credential.len() > ferrocast_names::MAX_CREDENTIAL_LEN {
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
