//! Load reports: what each node last said it carries (viewers, bandwidth, per-stream
//! viewers), kept in memory only ([`Loads`]), so nothing per viewer reaches the store; and
//! their sharing between replicas ([`share_loads`]): only the leader receives heartbeats,
//! so it writes its reports to the store and followers read them, and a viewer placed by
//! any replica goes to an edge with room.

use crate::model::Load;
use crate::state::Shared;
use ferrocast_proto::controller::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Per-node load reports, each with when it was reported (Unix ms).
#[derive(Debug, Default)]
pub struct Loads {
    inner: Mutex<LoadsInner>,
}

#[derive(Debug, Default)]
struct LoadsInner {
    /// The reports this replica received (as leader).
    mine: HashMap<String, (Load, u64)>,
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

    /// Takes `node`'s report, made at `at_ms`.
    pub fn report(&self, node: &str, load: Load, at_ms: u64) {
        self.lock().mine.insert(node.to_owned(), (load, at_ms));
    }

    /// `node`'s last report and when it was made: on the leader its own; on a follower
    /// the leader's shared one, else its own from a past leadership.
    pub fn of(&self, node: &str, leading: bool) -> (Load, u64) {
        let g = self.lock();
        let mine = g.mine.get(node);
        match leading {
            true => mine.cloned(),
            false => g.from_leader.get(node).or(mine).cloned(),
        }
        .unwrap_or_default()
    }

    /// The last reported load of every node (this replica's own reports).
    pub fn snapshot(&self) -> HashMap<String, Load> {
        let g = self.lock();
        g.mine
            .iter()
            .map(|(k, (l, _))| (k.clone(), l.clone()))
            .collect()
    }

    /// The reports placement decides on: the leader's own, or on a follower those the
    /// leader shared (its own, from a past leadership, until the first arrive).
    pub fn for_placement(&self, leading: bool) -> HashMap<String, Load> {
        if !leading {
            let shared = self.from_leader();
            if !shared.is_empty() {
                return shared;
            }
        }
        self.snapshot()
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
            .mine
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

/// A load report as the API carries it.
pub(crate) fn load_to_pb(l: &Load) -> pb::LoadReport {
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

/// Now, in Unix milliseconds (when a report was taken).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
