//! What the gRPC services and the admin HTTP server share ([`Shared`]), and the reads
//! they make through it: from the store, or from the hub's last good view while the
//! store is unreachable (reads stay answered, writes are refused); the placement
//! snapshot `/play` decides on ([`PlacementCache`]); and the fence a write needs, or the
//! follower's refusal that points at the leader.

use crate::access::Access;
use crate::api::{ApiError, ApiResult};
use crate::assign;
use crate::election::Election;
use crate::hub::{ClusterView, Hub};
use crate::leader::Leader;
use crate::load::Loads;
use crate::model::{Assignment, Load};
use crate::region::RegionTable;
use crate::scheduler::{PlacementPolicy, Snapshot};
use crate::sessions::Sessions;
use crate::store::{Fence, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the gRPC services and the admin HTTP server share.
#[derive(Debug)]
pub struct Shared {
    /// Cluster state.
    pub store: Arc<dyn Store>,
    /// Who leads (for a follower's redirect).
    pub election: Arc<dyn Election>,
    /// This replica's leadership.
    pub leader: Arc<Leader>,
    /// Heartbeat-fed load reports.
    pub loads: Loads,
    /// Node registrations and pending kicks.
    pub sessions: Sessions,
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
/// changes or every `PLACEMENT_MAX_AGE`, so a `/play` decision costs no copy of the
/// cluster.
#[derive(Debug, Default)]
pub struct PlacementCache {
    inner: Mutex<Option<CachedPlacement>>,
}

/// When it was built, of which view, and the snapshot.
type CachedPlacement = (tokio::time::Instant, Arc<ClusterView>, Arc<Snapshot>);

impl Shared {
    /// The load reports placement decides on (see [`Loads::for_placement`]).
    fn current_loads(&self) -> HashMap<String, Load> {
        self.loads.for_placement(self.leader.fence().is_some())
    }

    /// The fence, or the refusal a follower answers with.
    pub(crate) async fn fence(&self) -> ApiResult<Fence> {
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
    pub(crate) async fn snapshot(&self) -> ApiResult<Snapshot> {
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
    pub(crate) async fn assignments(&self, only: Option<&str>) -> ApiResult<Vec<Assignment>> {
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
}
