//! The replica's view of the cluster and its changes, shared by every watcher: one
//! poll-and-diff loop per replica ([`Hub::run`]) reads nodes, drains and assignments from
//! the store every `interval`, publishes the [`ClusterView`], and broadcasts what changed
//! as one [`Update`] (assignment upserts and removals for `WatchAssignments`, [`pb::Event`]s
//! for `WatchEvents`).
//!
//! - Polling, not an etcd watch: node liveness is the presence of a leased key, and an
//!   assignment's wire state (live or orphaned) depends on it, so every change a watcher
//!   sees is a difference between two views; the same diff reconciles after the store was
//!   unreachable, with nothing to resume.
//! - Every replica runs one, leader or follower: watching is a read.
//! - A watcher subscribes to the view and the broadcast at once ([`Hub::subscribe`]), so
//!   its snapshot plus the updates after it are exactly the state. The broadcast is
//!   bounded: a watcher that falls behind by more than its capacity is told so and dropped
//!   (it reconnects and gets a fresh snapshot); nobody buffers for it.
//! - While the store is unreachable the last good view is kept (reads and `/play` use it),
//!   `store_up` goes false, and no update is sent.
//! - Continuity-only changes of an assignment (every origin heartbeat rewrites it) are not
//!   updates: watchers care who holds a stream under which epoch, not its sequence numbers.

use crate::model::{Assignment, AssignmentState, Load, Node};
use crate::scheduler::{NodeStatus, Snapshot};
use crate::store::{Store, StoreError};
use ferrocast_proto::controller::v1 as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Default poll interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
/// Default number of updates a watcher may fall behind before it is dropped.
pub const DEFAULT_BACKLOG: usize = 256;

/// The cluster as last read from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Live nodes (lease holds), by id.
    pub nodes: BTreeMap<String, Node>,
    /// Draining node ids (live or not).
    pub draining: BTreeSet<String>,
    /// Assignments by stream.
    pub assignments: BTreeMap<String, Assignment>,
}

impl ClusterView {
    /// Reads the whole view (three reads, concurrently).
    pub async fn read(store: &dyn Store) -> Result<ClusterView, StoreError> {
        let (nodes, draining, assignments) =
            tokio::join!(store.nodes(), store.draining(), store.assignments());
        Ok(ClusterView {
            nodes: nodes?.into_iter().map(|n| (n.id.clone(), n)).collect(),
            draining: draining?,
            assignments: assignments?
                .into_iter()
                .map(|v| (v.value.stream.clone(), v.value))
                .collect(),
        })
    }

    /// The wire form of `a`: its origin's relay address, orphaned if the origin is dead.
    pub fn assignment_pb(&self, a: &Assignment) -> pb::Assignment {
        let origin = self.nodes.get(&a.origin);
        let relay = origin.map(|o| o.relay_addr.as_str()).unwrap_or("");
        a.to_pb(relay, origin.is_some())
    }

    /// Every assignment in wire form, by stream.
    pub fn assignments_pb(&self) -> Vec<pb::Assignment> {
        self.assignments
            .values()
            .map(|a| self.assignment_pb(a))
            .collect()
    }

    /// The placement snapshot of this view with the load reports in `loads`.
    pub fn placement(&self, loads: &HashMap<String, Load>) -> Snapshot {
        Snapshot {
            nodes: self
                .nodes
                .values()
                .map(|n| {
                    let status = NodeStatus {
                        node: n.clone(),
                        draining: self.draining.contains(&n.id),
                        load: loads.get(&n.id).cloned().unwrap_or_default(),
                    };
                    (n.id.clone(), status)
                })
                .collect(),
        }
    }

    fn is_live_and_draining(&self, id: &str) -> bool {
        self.nodes.contains_key(id) && self.draining.contains(id)
    }
}

/// What changed between two views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// When the change was seen, Unix milliseconds.
    pub at_unix_ms: u64,
    /// `upsert` and `removed` events, by stream.
    pub assignments: Vec<pb::AssignmentEvent>,
    /// Node and stream events.
    pub events: Vec<pb::Event>,
}

impl Update {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.assignments.is_empty() && self.events.is_empty()
    }
}

/// What watchers compare: who holds a stream, where, under which epoch, in which state.
fn watched(a: &pb::Assignment) -> (&str, &str, u64, i32) {
    (&a.origin_id, &a.origin_relay, a.epoch, a.state)
}

fn upsert(a: pb::Assignment) -> pb::AssignmentEvent {
    pb::AssignmentEvent {
        kind: Some(pb::assignment_event::Kind::Upsert(a)),
    }
}

/// The changes from `old` to `new`, stamped `at_unix_ms`. Pure.
pub fn diff(old: &ClusterView, new: &ClusterView, at_unix_ms: u64) -> Update {
    let mut up = Update {
        at_unix_ms,
        ..Update::default()
    };
    let event = |kind: pb::EventKind, node: &str, detail: String| pb::Event {
        at_unix_ms,
        kind: kind.into(),
        node_id: node.to_owned(),
        detail,
        ..Default::default()
    };

    // Nodes.
    for (id, n) in &new.nodes {
        let was_draining = old.is_live_and_draining(id);
        let draining = new.draining.contains(id);
        if !old.nodes.contains_key(id) {
            let role = match n.role {
                crate::model::Role::Origin => "origin",
                crate::model::Role::Edge => "edge",
            };
            let detail = format!("{role} in region {}", n.region);
            up.events.push(event(pb::EventKind::NodeUp, id, detail));
        } else if was_draining && !draining {
            up.events
                .push(event(pb::EventKind::NodeUp, id, "drain undone".into()));
        }
        if draining && !was_draining {
            up.events.push(event(
                pb::EventKind::NodeDraining,
                id,
                "draining: keeps what it has, gets nothing new".into(),
            ));
        }
    }
    for id in old.nodes.keys().filter(|id| !new.nodes.contains_key(*id)) {
        up.events.push(event(
            pb::EventKind::NodeDown,
            id,
            "lease expired or revoked".into(),
        ));
    }

    // Assignments.
    for (stream, a) in &new.assignments {
        let next = new.assignment_pb(a);
        let before = old.assignments.get(stream);
        let prev = before.map(|b| old.assignment_pb(b));
        if prev.as_ref().is_some_and(|p| watched(p) == watched(&next)) {
            continue;
        }
        let stream_event = |kind: pb::EventKind, from: &str, detail: String| pb::Event {
            stream: stream.clone(),
            from_node: from.to_owned(),
            epoch: a.epoch,
            ..event(kind, &a.origin, detail)
        };
        let was_live = before.is_some_and(|b| b.state == AssignmentState::Live);
        let alive = new.nodes.contains_key(&a.origin);
        match (before, a.state) {
            (Some(b), AssignmentState::Live)
                if b.state == AssignmentState::Live
                    && (b.origin != a.origin || b.epoch != a.epoch) =>
            {
                let detail = format!("epoch {} on {} → epoch {}", b.epoch, b.origin, a.epoch);
                up.events
                    .push(stream_event(pb::EventKind::StreamMoved, &b.origin, detail));
            }
            (Some(b), AssignmentState::Live) if was_live => {
                // Same holder and epoch: only its liveness (or relay address) changed.
                let was_alive = old.nodes.contains_key(&b.origin);
                if was_alive && !alive {
                    let detail = format!("orphaned: origin {} is down", a.origin);
                    up.events
                        .push(stream_event(pb::EventKind::StreamStopped, "", detail));
                } else if !was_alive && alive {
                    let detail = format!("origin {} is back", a.origin);
                    up.events
                        .push(stream_event(pb::EventKind::StreamStarted, "", detail));
                }
            }
            (_, AssignmentState::Live) => {
                let detail = format!("on {} under epoch {}", a.origin, a.epoch);
                up.events
                    .push(stream_event(pb::EventKind::StreamStarted, "", detail));
            }
            (_, AssignmentState::Released) if was_live => {
                up.events.push(stream_event(
                    pb::EventKind::StreamStopped,
                    "",
                    "released by its origin".into(),
                ));
            }
            (_, AssignmentState::Released) => {}
        }
        up.assignments.push(upsert(next));
    }
    for (stream, b) in &old.assignments {
        if new.assignments.contains_key(stream) {
            continue;
        }
        if b.state == AssignmentState::Live {
            up.events.push(pb::Event {
                stream: stream.clone(),
                epoch: b.epoch,
                ..event(
                    pb::EventKind::StreamStopped,
                    &b.origin,
                    "assignment deleted".into(),
                )
            });
        }
        up.assignments.push(pb::AssignmentEvent {
            kind: Some(pb::assignment_event::Kind::Removed(stream.clone())),
        });
    }
    up
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A watcher's start: the view at subscription and every update after it.
#[derive(Debug)]
pub struct Subscription {
    /// The view the updates apply to.
    pub view: Arc<ClusterView>,
    /// The updates; `Lagged` means this watcher fell too far behind and must be dropped.
    pub updates: broadcast::Receiver<Arc<Update>>,
}

/// One per replica: polls the store, keeps the last good view, broadcasts changes.
#[derive(Debug)]
pub struct Hub {
    store: Arc<dyn Store>,
    interval: Duration,
    /// Held while publishing and while subscribing, so a subscriber's view and its first
    /// update are consecutive.
    publish: Mutex<()>,
    view: watch::Sender<Option<Arc<ClusterView>>>,
    updates: broadcast::Sender<Arc<Update>>,
    store_up: watch::Sender<bool>,
    closing: CancellationToken,
}

impl Hub {
    /// A hub over `store` polling every `interval`; a watcher may fall `backlog` updates
    /// behind.
    pub fn new(store: Arc<dyn Store>, interval: Duration, backlog: usize) -> Self {
        Hub {
            store,
            interval,
            publish: Mutex::new(()),
            view: watch::Sender::new(None),
            updates: broadcast::Sender::new(backlog.max(1)),
            store_up: watch::Sender::new(false),
            closing: CancellationToken::new(),
        }
    }

    /// Polls until `cancel`, then ends every watcher's stream (see [`Hub::closing`]).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let polled = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.poll_once() => r,
            };
            if let Err(error) = polled {
                tracing::debug!(%error, "cluster poll failed");
            }
        }
        self.closing.cancel();
    }

    /// One poll: read, diff against the last good view, publish. On a store failure the
    /// last view stays and `store_up` goes false.
    pub async fn poll_once(&self) -> Result<(), StoreError> {
        let new = match ClusterView::read(self.store.as_ref()).await {
            Ok(v) => v,
            Err(e) => {
                if self
                    .store_up
                    .send_if_modified(|up| std::mem::replace(up, false))
                {
                    tracing::warn!(error = %e, "state store unreachable: serving reads from the last good view");
                }
                return Err(e);
            }
        };
        if self
            .store_up
            .send_if_modified(|up| !std::mem::replace(up, true))
        {
            tracing::info!("state store reachable");
        }
        let _g = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.view.borrow().clone();
        match old {
            None => {
                self.view.send_replace(Some(Arc::new(new)));
            }
            Some(old) if *old == new => {}
            Some(old) => {
                let update = diff(&old, &new, unix_ms());
                self.view.send_replace(Some(Arc::new(new)));
                if !update.is_empty() {
                    // No receiver is no error.
                    let _ = self.updates.send(Arc::new(update));
                }
            }
        }
        Ok(())
    }

    /// The last good view, if the store was ever read.
    pub fn view(&self) -> Option<Arc<ClusterView>> {
        self.view.borrow().clone()
    }

    /// Whether the last poll reached the store; changes are observable.
    pub fn store_up(&self) -> watch::Receiver<bool> {
        self.store_up.subscribe()
    }

    /// Whether the last poll reached the store.
    pub fn is_store_up(&self) -> bool {
        *self.store_up.borrow()
    }

    /// Fires when the hub stops: watcher streams end then.
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    /// The current view and the updates after it; waits for the first successful read.
    /// `None` when the hub stopped first.
    pub async fn subscribe(&self) -> Option<Subscription> {
        let mut first = self.view.subscribe();
        tokio::select! {
            _ = self.closing.cancelled() => return None,
            r = first.wait_for(Option::is_some) => { r.ok()?; }
        }
        let _g = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        let view = self.view.borrow().clone()?;
        Some(Subscription {
            view,
            updates: self.updates.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Capacity, Continuity, Role};
    use crate::store::memory::MemoryStore;
    use crate::store::Fence;

    fn node(id: &str, role: Role) -> Node {
        Node {
            id: id.into(),
            role,
            region: "eu".into(),
            relay_addr: format!("{id}:4433"),
            http_url: String::new(),
            rtmp_addr: String::new(),
            capacity: Capacity::default(),
        }
    }

    fn live(stream: &str, origin: &str, epoch: u64) -> Assignment {
        Assignment {
            stream: stream.into(),
            origin: origin.into(),
            epoch,
            continuity: Continuity::default(),
            state: AssignmentState::Live,
        }
    }

    fn view(nodes: &[&str], draining: &[&str], assignments: &[Assignment]) -> ClusterView {
        ClusterView {
            nodes: nodes
                .iter()
                .map(|id| (id.to_string(), node(id, Role::Origin)))
                .collect(),
            draining: draining.iter().map(|d| d.to_string()).collect(),
            assignments: assignments
                .iter()
                .map(|a| (a.stream.clone(), a.clone()))
                .collect(),
        }
    }

    fn kinds(u: &Update) -> Vec<(pb::EventKind, &str, &str, &str, u64)> {
        u.events
            .iter()
            .map(|e| {
                (
                    e.kind(),
                    e.node_id.as_str(),
                    e.stream.as_str(),
                    e.from_node.as_str(),
                    e.epoch,
                )
            })
            .collect()
    }

    fn upserts(u: &Update) -> Vec<(String, u64, pb::AssignmentState)> {
        u.assignments
            .iter()
            .filter_map(|e| match &e.kind {
                Some(pb::assignment_event::Kind::Upsert(a)) => {
                    Some((a.origin_id.clone(), a.epoch, a.state()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stream_lifecycle_as_events() {
        use pb::EventKind::*;
        let empty = view(&[], &[], &[]);
        let up = view(&["o1", "o2"], &[], &[]);
        let u = diff(&empty, &up, 7);
        assert_eq!(
            kinds(&u),
            [(NodeUp, "o1", "", "", 0), (NodeUp, "o2", "", "", 0)]
        );
        assert!(u.events.iter().all(|e| e.at_unix_ms == 7));

        let claimed = view(&["o1", "o2"], &[], &[live("s", "o1", 1)]);
        let u = diff(&up, &claimed, 8);
        assert_eq!(kinds(&u), [(StreamStarted, "o1", "s", "", 1)]);
        assert_eq!(upserts(&u), [("o1".into(), 1, pb::AssignmentState::Live)]);

        // Continuity alone is no change.
        let mut reported = claimed.clone();
        reported
            .assignments
            .get_mut("s")
            .unwrap()
            .continuity
            .next_msn = 40;
        assert!(diff(&claimed, &reported, 9).is_empty());

        // o1's lease expires: node down, stream orphaned.
        let orphaned = view(&["o2"], &[], &[live("s", "o1", 1)]);
        let u = diff(&claimed, &orphaned, 10);
        assert_eq!(
            kinds(&u),
            [
                (NodeDown, "o1", "", "", 0),
                (StreamStopped, "o1", "s", "", 1)
            ]
        );
        assert_eq!(
            upserts(&u),
            [("o1".into(), 1, pb::AssignmentState::Orphaned)]
        );

        let moved = view(&["o2"], &["o2"], &[live("s", "o2", 2)]);
        let u = diff(&orphaned, &moved, 11);
        assert_eq!(
            kinds(&u),
            [
                (NodeDraining, "o2", "", "", 0),
                (StreamMoved, "o2", "s", "o1", 2)
            ]
        );
        assert_eq!(upserts(&u), [("o2".into(), 2, pb::AssignmentState::Live)]);

        let mut released = view(&["o2"], &[], &[live("s", "o2", 2)]);
        released.assignments.get_mut("s").unwrap().state = AssignmentState::Released;
        let u = diff(&moved, &released, 12);
        assert_eq!(
            kinds(&u),
            [(NodeUp, "o2", "", "", 0), (StreamStopped, "o2", "s", "", 2)]
        );
        assert_eq!(
            upserts(&u),
            [("o2".into(), 2, pb::AssignmentState::Released)]
        );

        let gone = view(&["o2"], &[], &[]);
        let u = diff(&released, &gone, 13);
        assert!(u.events.is_empty());
        assert_eq!(
            u.assignments,
            [pb::AssignmentEvent {
                kind: Some(pb::assignment_event::Kind::Removed("s".into()))
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watchers_get_a_snapshot_then_updates_and_a_slow_one_is_dropped() {
        let store = Arc::new(MemoryStore::new());
        let hub = Arc::new(Hub::new(store.clone(), DEFAULT_INTERVAL, 2));
        hub.poll_once().await.unwrap();
        assert!(*hub.store_up().borrow());
        let mut fast = hub.subscribe().await.unwrap();
        let mut slow = hub.subscribe().await.unwrap();
        assert!(fast.view.assignments.is_empty());

        let ttl = Duration::from_secs(5);
        store
            .register_node(node("o1", Role::Origin), ttl)
            .await
            .unwrap();
        hub.poll_once().await.unwrap();
        let u = fast.updates.recv().await.unwrap();
        assert_eq!(u.events[0].kind(), pb::EventKind::NodeUp);

        for i in 0..3 {
            store
                .put_assignment(live(&format!("s{i}"), "o1", 1), None, Fence::standalone())
                .await
                .unwrap();
            hub.poll_once().await.unwrap();
            let u = fast.updates.recv().await.unwrap();
            assert_eq!(upserts(&u), [("o1".into(), 1, pb::AssignmentState::Live)]);
        }
        // Four updates, room for two: the slow watcher lagged.
        assert!(matches!(
            slow.updates.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        // A new subscriber starts from the current view.
        let late = hub.subscribe().await.unwrap();
        assert_eq!(late.view.assignments.len(), 3);
    }
}
