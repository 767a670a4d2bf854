//! `OperatorService`, called by operators and `ferrocast ctl` (behind
//! [`OperatorAuth`](crate::auth::OperatorAuth)): list and get nodes and streams, drain,
//! kick, resolve a viewer, watch events, and the access records (publish keys, signing
//! keys, tokens, stream policies). Changing calls need an admin (`require_admin`) and are
//! audited (`audited`); reads are served by every replica, from the last good view
//! while the store is unreachable. A follower has no load reports of its own, so its
//! `Resolve` decides on those the leader shared.

use super::error::{required, ApiError, ApiResult};
use super::watch::{watch, BoxStream};
use crate::access;
use crate::auth::{require_admin, Caller};
use crate::hub::{ClusterView, Update};
use crate::load::load_to_pb;
use crate::model::Role;
use crate::scheduler::{place_viewer, PlacementError, PlacementReason, Snapshot};
use crate::state::Shared;
use crate::store::Fence;
use ferrocast_proto::controller::v1 as pb;
use pb::operator_service_server::OperatorService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `OperatorService`, called by operators and `ferrocast ctl` (behind the token check of
/// [`OperatorAuth`](crate::auth::OperatorAuth)).
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
        sh.sessions.kick(&a.value.origin, &r.stream);
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
    pub(super) async fn place(&self, r: pb::ResolveRequest) -> ApiResult<pb::ResolveReply> {
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
        let who = require_admin(&request, "DrainNode")?;
        let r = request.into_inner();
        let what = format!("node={} drain={}", r.node_id, r.drain);
        Ok(audited(&who, "DrainNode", &what, self.drain(r).await)?)
    }

    async fn kick_publisher(
        &self,
        request: Request<pb::KickPublisherRequest>,
    ) -> Result<Response<pb::KickPublisherReply>, Status> {
        let who = require_admin(&request, "KickPublisher")?;
        let r = request.into_inner();
        let what = format!("stream={}", r.stream);
        Ok(audited(&who, "KickPublisher", &what, self.kick(r).await)?)
    }

    async fn create_publish_key(
        &self,
        request: Request<pb::CreatePublishKeyRequest>,
    ) -> Result<Response<pb::PublishKeySecret>, Status> {
        let who = require_admin(&request, "CreatePublishKey")?;
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
        let who = require_admin(&request, "RotatePublishKey")?;
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
        let who = require_admin(&request, "RevokePublishKey")?;
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
        let who = require_admin(&request, "CreateSigningKey")?;
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
        let who = require_admin(&request, "RevokeSigningKey")?;
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
        let who = require_admin(&request, "IssueToken")?;
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
        let who = require_admin(&request, "RevokeToken")?;
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
        let who = require_admin(&request, "SetStreamAccess")?;
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
    /// The access records' writer, under this replica's `fence`.
    fn access_admin<'a>(&'a self, fence: &'a Fence) -> access::Admin<'a> {
        access::Admin {
            store: self.0.store.as_ref(),
            fence,
            access: &self.0.access,
        }
    }
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

/// What operators read, built from the shared state.
impl Shared {
    /// What operators see of node `id`: its record from `snap` and its last load report.
    fn node_info(&self, snap: &Snapshot, id: &str) -> Option<pb::NodeInfo> {
        let s = snap.nodes.get(id)?;
        let (load, at) = self.loads.of(id, self.leader.fence().is_some());
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

    /// What operators see of each stream (of `only`, or all): its assignment, its origin's
    /// bitrate and the edges serving it with their viewers.
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
