//! The cluster as the controller sees it: nodes (what they registered), their load (reported
//! in heartbeats, in memory only), and stream assignments (which origin holds a stream,
//! under which epoch, with the continuity a new holder needs).
//!
//! Nodes and assignments are stored (JSON in etcd, readable with `etcdctl get`); load never
//! is: it changes every heartbeat and is only used for placement.

use ferrocast_proto::controller::v1 as pb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes publishers, packages streams, serves edges.
    Origin,
    /// Serves viewers from origins.
    Edge,
}

/// Hard limits of a node; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Streams an origin holds at once.
    pub max_streams: u32,
    /// Viewers an edge serves at once.
    pub max_viewers: u32,
    /// Egress bandwidth, bits per second.
    pub max_egress_bps: u64,
}

/// A node as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique, stable across restarts (`--node-id`).
    pub id: String,
    /// Origin or edge.
    pub role: Role,
    /// Region or zone, matched against the viewer's.
    pub region: String,
    /// Origins: relay (QUIC) `host:port` for edges.
    #[serde(default)]
    pub relay_addr: String,
    /// Edges: viewer-facing base URL.
    #[serde(default)]
    pub http_url: String,
    /// Origins: ingest (RTMP) `host:port`.
    #[serde(default)]
    pub rtmp_addr: String,
    /// Hard limits.
    pub capacity: Capacity,
}

/// Load of one stream on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLoad {
    /// Viewers of the stream on this node.
    pub viewers: u32,
    /// Ingest (origin) or egress (edge) bitrate, bits per second.
    pub bitrate_bps: u64,
}

/// A node's load as last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Viewers on the node, all streams.
    pub viewers: u32,
    /// Egress bitrate, bits per second.
    pub egress_bps: u64,
    /// Ingest bitrate, bits per second.
    pub ingress_bps: u64,
    /// Per stream the node serves (edges) or holds (origins).
    pub streams: BTreeMap<String, StreamLoad>,
}

/// What the next holder of a stream needs so its playlist goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continuity {
    /// Media sequence number of the next segment.
    pub next_msn: u64,
    /// Discontinuity sequence now; a new holder adds one.
    pub discontinuity: u64,
    /// End of the media timeline, milliseconds.
    pub timeline_end_ms: u64,
}

/// Whether an assignment's origin still holds the stream. "Orphaned" is not stored: it is
/// a live assignment whose origin's lease expired, which only the liveness of nodes tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentState {
    /// The origin holds the stream (if it is still alive).
    Live,
    /// The origin released it; kept for the epoch and continuity of the next claim.
    Released,
}

/// Which origin holds a stream. The epoch grows by one with every new holder and never
/// decreases, so it fences an origin that lost the stream without knowing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Stream key.
    pub stream: String,
    /// Holding (or last holding) origin's node id.
    pub origin: String,
    /// Starts at 1.
    pub epoch: u64,
    /// Continuity as last reported by the holder.
    pub continuity: Continuity,
    /// Live or released.
    pub state: AssignmentState,
}

impl From<Role> for pb::NodeRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Origin => pb::NodeRole::Origin,
            Role::Edge => pb::NodeRole::Edge,
        }
    }
}

impl TryFrom<pb::NodeRole> for Role {
    type Error = pb::NodeRole;
    fn try_from(r: pb::NodeRole) -> Result<Self, pb::NodeRole> {
        match r {
            pb::NodeRole::Origin => Ok(Role::Origin),
            pb::NodeRole::Edge => Ok(Role::Edge),
            other => Err(other),
        }
    }
}

impl From<Capacity> for pb::Capacity {
    fn from(c: Capacity) -> Self {
        pb::Capacity {
            max_streams: c.max_streams,
            max_viewers: c.max_viewers,
            max_egress_bps: c.max_egress_bps,
        }
    }
}

impl From<pb::Capacity> for Capacity {
    fn from(c: pb::Capacity) -> Self {
        Capacity {
            max_streams: c.max_streams,
            max_viewers: c.max_viewers,
            max_egress_bps: c.max_egress_bps,
        }
    }
}

impl From<Continuity> for pb::Continuity {
    fn from(c: Continuity) -> Self {
        pb::Continuity {
            next_msn: c.next_msn,
            discontinuity: c.discontinuity,
            timeline_end_ms: c.timeline_end_ms,
        }
    }
}

impl From<pb::Continuity> for Continuity {
    fn from(c: pb::Continuity) -> Self {
        Continuity {
            next_msn: c.next_msn,
            discontinuity: c.discontinuity,
            timeline_end_ms: c.timeline_end_ms,
        }
    }
}

impl From<&pb::LoadReport> for Load {
    fn from(r: &pb::LoadReport) -> Self {
        Load {
            viewers: r.viewers,
            egress_bps: r.egress_bps,
            ingress_bps: r.ingress_bps,
            streams: r
                .streams
                .iter()
                .map(|s| {
                    let load = StreamLoad {
                        viewers: s.viewers,
                        bitrate_bps: s.bitrate_bps,
                    };
                    (s.stream.clone(), load)
                })
                .collect(),
        }
    }
}

impl Assignment {
    /// The wire form; `origin_relay` is the holder's relay address and `origin_alive`
    /// whether its lease still holds (a live assignment of a dead origin is orphaned).
    pub fn to_pb(&self, origin_relay: &str, origin_alive: bool) -> pb::Assignment {
        let state = match (self.state, origin_alive) {
            (AssignmentState::Released, _) => pb::AssignmentState::Released,
            (AssignmentState::Live, true) => pb::AssignmentState::Live,
            (AssignmentState::Live, false) => pb::AssignmentState::Orphaned,
        };
        pb::Assignment {
            stream: self.stream.clone(),
            origin_id: self.origin.clone(),
            origin_relay: origin_relay.to_owned(),
            epoch: self.epoch,
            continuity: Some(self.continuity.into()),
            state: state.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_stable_json() {
        let a = Assignment {
            stream: "live1".into(),
            origin: "o1".into(),
            epoch: 3,
            continuity: Continuity {
                next_msn: 120,
                discontinuity: 2,
                timeline_end_ms: 240_000,
            },
            state: AssignmentState::Live,
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"stream":"live1","origin":"o1","epoch":3,"continuity":{"next_msn":120,"discontinuity":2,"timeline_end_ms":240000},"state":"live"}"#
        );
        assert_eq!(serde_json::from_str::<Assignment>(&json).unwrap(), a);
    }

    #[test]
    fn orphaned_is_derived_from_liveness() {
        let mut a = Assignment {
            stream: "s".into(),
            origin: "o1".into(),
            epoch: 1,
            continuity: Continuity::default(),
            state: AssignmentState::Live,
        };
        assert_eq!(a.to_pb("o1:4433", true).state(), pb::AssignmentState::Live);
        assert_eq!(a.to_pb("", false).state(), pb::AssignmentState::Orphaned);
        a.state = AssignmentState::Released;
        assert_eq!(a.to_pb("", true).state(), pb::AssignmentState::Released);
        assert_eq!(Role::try_from(pb::NodeRole::Edge), Ok(Role::Edge));
        assert!(Role::try_from(pb::NodeRole::Unspecified).is_err());
    }
}
