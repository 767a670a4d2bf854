//! Placement decisions as pure functions over a [`Snapshot`] of the live nodes: which
//! origin may hold a stream ([`decide_claim`]) and which edge a viewer goes to
//! ([`place_viewer`]). No I/O, no clock: the caller builds the snapshot (nodes whose lease
//! holds, operator drains, the last load reports) and applies the decision.

use crate::model::{Assignment, AssignmentState, Continuity, Load, Node, Role};
use std::collections::BTreeMap;

/// One live node: what it registered, whether it is draining, its last load report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// As registered.
    pub node: Node,
    /// Keeps what it has, gets nothing new.
    pub draining: bool,
    /// Last reported load.
    pub load: Load,
}

/// The live nodes by id. A node absent from the snapshot is dead (its lease expired).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Live nodes.
    pub nodes: BTreeMap<String, NodeStatus>,
}

impl Snapshot {
    /// Whether `id` is live.
    pub fn is_live(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }
}

/// How a claim was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantKind {
    /// Nobody held the stream (or it was released): a new epoch.
    New,
    /// The claimant already holds it (a retry): same epoch.
    AlreadyHeld,
    /// Taken from an origin whose lease expired: a new epoch, same continuity.
    TakenOver {
        /// The previous holder.
        from: String,
    },
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The claimant is not live (never registered, or its lease expired).
    UnknownNode,
    /// The claimant is not an origin.
    NotAnOrigin,
    /// The claimant is draining.
    Draining,
    /// The claimant holds `max_streams` already.
    AtCapacity {
        /// Its limit.
        max_streams: u32,
    },
    /// The stream is live on another origin (a duplicate publisher).
    Duplicate {
        /// The live holder.
        holder: String,
    },
}

/// The answer to "may `claimant` hold `stream`?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Yes; `assignment` is what to store (and to tell the origin).
    Grant {
        /// How.
        kind: GrantKind,
        /// The new assignment.
        assignment: Assignment,
    },
    /// No.
    Refuse(Refusal),
}

/// Decides a claim of `stream` by `claimant`, given the stream's current assignment.
///
/// A live holder keeps its stream; only a holder absent from the snapshot (dead) loses it,
/// to the first healthy origin under capacity that claims it, with epoch + 1 and the
/// stored continuity. A released stream is claimed like a new one but keeps its epoch
/// sequence and continuity, so the playlist of a publisher that comes back goes on.
pub fn decide_claim(
    snapshot: &Snapshot,
    current: Option<&Assignment>,
    claimant: &str,
    stream: &str,
) -> ClaimDecision {
    let Some(status) = snapshot.nodes.get(claimant) else {
        return ClaimDecision::Refuse(Refusal::UnknownNode);
    };
    if status.node.role != Role::Origin {
        return ClaimDecision::Refuse(Refusal::NotAnOrigin);
    }
    let live_holder = current.filter(|a| a.state == AssignmentState::Live);
    if let Some(a) = live_holder {
        if a.origin == claimant {
            return ClaimDecision::Grant {
                kind: GrantKind::AlreadyHeld,
                assignment: a.clone(),
            };
        }
        if snapshot.is_live(&a.origin) {
            return ClaimDecision::Refuse(Refusal::Duplicate {
                holder: a.origin.clone(),
            });
        }
    }
    if status.draining {
        return ClaimDecision::Refuse(Refusal::Draining);
    }
    let max_streams = status.node.capacity.max_streams;
    if max_streams > 0 && status.load.streams.len() >= max_streams as usize {
        return ClaimDecision::Refuse(Refusal::AtCapacity { max_streams });
    }
    let (kind, epoch, continuity) = match current {
        None => (GrantKind::New, 1, Continuity::default()),
        Some(a) if a.state == AssignmentState::Released => {
            (GrantKind::New, a.epoch + 1, a.continuity)
        }
        Some(a) => (
            GrantKind::TakenOver {
                from: a.origin.clone(),
            },
            a.epoch + 1,
            a.continuity,
        ),
    };
    ClaimDecision::Grant {
        kind,
        assignment: Assignment {
            stream: stream.to_owned(),
            origin: claimant.to_owned(),
            epoch,
            continuity,
            state: AssignmentState::Live,
        },
    }
}

/// Tuning of viewer placement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacementPolicy {
    /// Utilization (0..1) up to which an edge already serving a stream gets more of its
    /// viewers; past it the stream spreads to another edge. Below 1 so that an edge keeps
    /// headroom for the streams it serves when they grow.
    pub load_bound: f64,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        PlacementPolicy { load_bound: 0.8 }
    }
}

/// Why an edge was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementReason {
    /// It already serves the stream and is under the load bound.
    AlreadyServing,
    /// The least loaded edge with room.
    LeastLoaded,
}

/// Where a viewer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The chosen edge's id.
    pub edge: String,
    /// Why it.
    pub reason: PlacementReason,
    /// Whether it is in the viewer's region (false: no edge with room there, or the
    /// viewer's region is unknown).
    pub region_match: bool,
}

/// Why no edge was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// No live edge that is not draining.
    #[error("no live edge")]
    NoEdge,
    /// Every live edge is at capacity.
    #[error("every edge is at capacity")]
    Full,
}

/// How full a node is, 0 (idle) to 1 (at a limit) or more: the highest of its viewer and
/// egress utilizations. A node without limits is always 0.
pub fn utilization(status: &NodeStatus) -> f64 {
    let cap = status.node.capacity;
    let mut u: f64 = 0.0;
    if cap.max_viewers > 0 {
        u = u.max(f64::from(status.load.viewers) / f64::from(cap.max_viewers));
    }
    if cap.max_egress_bps > 0 {
        u = u.max(status.load.egress_bps as f64 / cap.max_egress_bps as f64);
    }
    u
}

/// Chooses the edge for a viewer of `stream` from `client_region` (`None`: unknown).
///
/// Candidates are live, non-draining edges below capacity. The viewer's region first (any
/// edge anywhere when none is there); among those, an edge already serving the stream while
/// under `policy.load_bound` (its cache is warm, the origin sends the stream once), else the
/// least loaded. Ties go to the lowest utilization, then to an edge serving the stream,
/// then to the lowest id, so the decision is deterministic.
pub fn place_viewer(
    snapshot: &Snapshot,
    stream: &str,
    client_region: Option<&str>,
    policy: &PlacementPolicy,
) -> Result<Placement, PlacementError> {
    let edges: Vec<(&NodeStatus, f64)> = snapshot
        .nodes
        .values()
        .filter(|s| s.node.role == Role::Edge && !s.draining)
        .map(|s| (s, utilization(s)))
        .collect();
    if edges.is_empty() {
        return Err(PlacementError::NoEdge);
    }
    let with_room: Vec<(&NodeStatus, f64)> = edges.into_iter().filter(|(_, u)| *u < 1.0).collect();
    if with_room.is_empty() {
        return Err(PlacementError::Full);
    }
    let in_region: Vec<(&NodeStatus, f64)> = match client_region {
        Some(r) => with_room
            .iter()
            .copied()
            .filter(|(s, _)| s.node.region == r)
            .collect(),
        None => Vec::new(),
    };
    let region_match = !in_region.is_empty();
    let pool = if region_match { in_region } else { with_room };

    let serves = |s: &NodeStatus| s.load.streams.contains_key(stream);
    let better = |a: &(&NodeStatus, f64), b: &(&NodeStatus, f64)| {
        a.1.total_cmp(&b.1)
            .then_with(|| serves(b.0).cmp(&serves(a.0)))
            .then_with(|| a.0.node.id.cmp(&b.0.node.id))
    };
    let serving = pool
        .iter()
        .filter(|(s, u)| serves(s) && *u < policy.load_bound)
        .min_by(|a, b| better(a, b));
    let (choice, reason) = match serving {
        Some(c) => (c, PlacementReason::AlreadyServing),
        None => (
            pool.iter()
                .min_by(|a, b| better(a, b))
                .expect("pool is not empty"),
            PlacementReason::LeastLoaded,
        ),
    };
    Ok(Placement {
        edge: choice.0.node.id.clone(),
        reason,
        region_match,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Capacity, StreamLoad};
    use std::collections::BTreeSet;

    fn node(id: &str, role: Role, region: &str, max_viewers: u32, max_streams: u32) -> NodeStatus {
        NodeStatus {
            node: Node {
                id: id.into(),
                role,
                region: region.into(),
                relay_addr: String::new(),
                http_url: format!("http://{id}"),
                rtmp_addr: String::new(),
                capacity: Capacity {
                    max_streams,
                    max_viewers,
                    max_egress_bps: 0,
                },
            },
            draining: false,
            load: Load::default(),
        }
    }

    fn snapshot(nodes: impl IntoIterator<Item = NodeStatus>) -> Snapshot {
        Snapshot {
            nodes: nodes.into_iter().map(|n| (n.node.id.clone(), n)).collect(),
        }
    }

    fn origin(id: &str) -> NodeStatus {
        node(id, Role::Origin, "eu", 0, 2)
    }

    fn edge(id: &str, region: &str) -> NodeStatus {
        node(id, Role::Edge, region, 100, 0)
    }

    fn live(stream: &str, origin: &str, epoch: u64) -> Assignment {
        Assignment {
            stream: stream.into(),
            origin: origin.into(),
            epoch,
            continuity: Continuity {
                next_msn: 42,
                discontinuity: 1,
                timeline_end_ms: 84_000,
            },
            state: AssignmentState::Live,
        }
    }

    /// Adds one viewer of `stream` to `edge`'s load, as its next report would.
    fn add_viewer(snap: &mut Snapshot, edge: &str, stream: &str) {
        let load = &mut snap.nodes.get_mut(edge).unwrap().load;
        load.viewers += 1;
        load.streams.entry(stream.into()).or_default().viewers += 1;
    }

    #[test]
    fn first_claim_is_epoch_one() {
        let snap = snapshot([origin("o1")]);
        let d = decide_claim(&snap, None, "o1", "s");
        let ClaimDecision::Grant { kind, assignment } = d else {
            panic!("{d:?}")
        };
        assert_eq!(kind, GrantKind::New);
        assert_eq!(assignment.epoch, 1);
        assert_eq!(assignment.origin, "o1");
        assert_eq!(assignment.continuity, Continuity::default());
        assert_eq!(assignment.state, AssignmentState::Live);
    }

    #[test]
    fn a_retry_by_the_holder_keeps_its_epoch() {
        let snap = snapshot([origin("o1")]);
        let cur = live("s", "o1", 4);
        assert_eq!(
            decide_claim(&snap, Some(&cur), "o1", "s"),
            ClaimDecision::Grant {
                kind: GrantKind::AlreadyHeld,
                assignment: cur.clone()
            }
        );
    }

    #[test]
    fn a_stream_live_elsewhere_is_a_duplicate() {
        let snap = snapshot([origin("o1"), origin("o2")]);
        let cur = live("s", "o1", 1);
        assert_eq!(
            decide_claim(&snap, Some(&cur), "o2", "s"),
            ClaimDecision::Refuse(Refusal::Duplicate {
                holder: "o1".into()
            })
        );
    }

    #[test]
    fn a_dead_holder_is_taken_over_with_the_next_epoch_and_its_continuity() {
        let snap = snapshot([origin("o2")]); // o1's lease expired
        let cur = live("s", "o1", 7);
        let d = decide_claim(&snap, Some(&cur), "o2", "s");
        let ClaimDecision::Grant { kind, assignment } = d else {
            panic!("{d:?}")
        };
        assert_eq!(kind, GrantKind::TakenOver { from: "o1".into() });
        assert_eq!(assignment.epoch, 8);
        assert_eq!(assignment.origin, "o2");
        assert_eq!(assignment.continuity, cur.continuity);
    }

    #[test]
    fn a_released_stream_goes_on_with_the_next_epoch() {
        let snap = snapshot([origin("o1"), origin("o2")]);
        let mut cur = live("s", "o1", 2);
        cur.state = AssignmentState::Released;
        for claimant in ["o1", "o2"] {
            let d = decide_claim(&snap, Some(&cur), claimant, "s");
            let ClaimDecision::Grant { kind, assignment } = d else {
                panic!("{d:?}")
            };
            assert_eq!(kind, GrantKind::New);
            assert_eq!(assignment.epoch, 3);
            assert_eq!(assignment.continuity.next_msn, 42);
        }
    }

    #[test]
    fn unhealthy_claimants_are_refused() {
        let mut draining = origin("o1");
        draining.draining = true;
        let mut full = origin("o2");
        for s in ["a", "b"] {
            full.load.streams.insert(s.into(), StreamLoad::default());
        }
        let snap = snapshot([draining, full, edge("e1", "eu")]);
        let refused = |c| match decide_claim(&snap, None, c, "s") {
            ClaimDecision::Refuse(r) => r,
            g => panic!("{g:?}"),
        };
        assert_eq!(refused("o1"), Refusal::Draining);
        assert_eq!(refused("o2"), Refusal::AtCapacity { max_streams: 2 });
        assert_eq!(refused("e1"), Refusal::NotAnOrigin);
        assert_eq!(refused("o9"), Refusal::UnknownNode);
        // A draining holder still keeps what it has.
        let cur = live("s", "o1", 1);
        assert!(matches!(
            decide_claim(&snap, Some(&cur), "o1", "s"),
            ClaimDecision::Grant {
                kind: GrantKind::AlreadyHeld,
                ..
            }
        ));
    }

    #[test]
    fn region_comes_first_then_falls_back_anywhere() {
        let mut snap = snapshot([edge("eu1", "eu"), edge("us1", "us"), edge("us2", "us")]);
        // us1 is busier than eu1 but in the viewer's region.
        snap.nodes.get_mut("us1").unwrap().load.viewers = 50;
        let policy = PlacementPolicy::default();
        let p = place_viewer(&snap, "s", Some("us"), &policy).unwrap();
        assert_eq!((p.edge.as_str(), p.region_match), ("us2", true));
        let p = place_viewer(&snap, "s", Some("eu"), &policy).unwrap();
        assert_eq!((p.edge.as_str(), p.region_match), ("eu1", true));
        // No edge in "ap": the least loaded anywhere.
        let p = place_viewer(&snap, "s", Some("ap"), &policy).unwrap();
        assert_eq!((p.edge.as_str(), p.region_match), ("eu1", false));
        let p = place_viewer(&snap, "s", None, &policy).unwrap();
        assert_eq!((p.edge.as_str(), p.region_match), ("eu1", false));
        // A full edge in the region does not count as the region having room.
        snap.nodes.get_mut("eu1").unwrap().load.viewers = 100;
        let p = place_viewer(&snap, "s", Some("eu"), &policy).unwrap();
        assert_eq!((p.edge.as_str(), p.region_match), ("us2", false));
    }

    #[test]
    fn an_edge_serving_the_stream_wins_while_under_its_bound() {
        let mut snap = snapshot([edge("e1", "eu"), edge("e2", "eu")]);
        for _ in 0..60 {
            add_viewer(&mut snap, "e2", "hot");
        }
        let policy = PlacementPolicy::default();
        let p = place_viewer(&snap, "hot", Some("eu"), &policy).unwrap();
        assert_eq!(p.edge, "e2");
        assert_eq!(p.reason, PlacementReason::AlreadyServing);
        // Another stream goes to the idle edge.
        let p = place_viewer(&snap, "cold", Some("eu"), &policy).unwrap();
        assert_eq!(p.edge, "e1");
        assert_eq!(p.reason, PlacementReason::LeastLoaded);
    }

    #[test]
    fn draining_dead_and_full_edges_are_never_chosen() {
        let mut snap = snapshot([edge("e1", "eu"), edge("e2", "eu"), origin("o1")]);
        snap.nodes.get_mut("e1").unwrap().draining = true;
        snap.nodes
            .get_mut("e1")
            .unwrap()
            .load
            .streams
            .insert("s".into(), StreamLoad::default());
        let policy = PlacementPolicy::default();
        assert_eq!(
            place_viewer(&snap, "s", Some("eu"), &policy).unwrap().edge,
            "e2"
        );
        snap.nodes.get_mut("e2").unwrap().load.viewers = 100;
        assert_eq!(
            place_viewer(&snap, "s", Some("eu"), &policy),
            Err(PlacementError::Full)
        );
        snap.nodes.remove("e2"); // its lease expired
        assert_eq!(
            place_viewer(&snap, "s", Some("eu"), &policy),
            Err(PlacementError::NoEdge)
        );
    }

    #[test]
    fn egress_counts_towards_utilization() {
        let mut a = edge("e1", "eu");
        a.node.capacity.max_egress_bps = 1_000;
        a.load.egress_bps = 900;
        a.load.viewers = 10;
        assert!((utilization(&a) - 0.9).abs() < 1e-9);
        let snap = snapshot([a, edge("e2", "eu")]);
        let mut serving = snap.clone();
        serving
            .nodes
            .get_mut("e1")
            .unwrap()
            .load
            .streams
            .insert("s".into(), StreamLoad::default());
        // e1 serves "s" but is past the bound on egress: e2 gets the viewer.
        let p = place_viewer(&serving, "s", None, &PlacementPolicy::default()).unwrap();
        assert_eq!(p.edge, "e2");
    }

    /// One hot stream, four edges of 100 viewers, bound 0.8: the stream stays on one edge
    /// until that edge reaches the bound, then spreads to one more edge at a time; once
    /// every edge serves it past the bound the viewers go to the least loaded, evenly, and
    /// past every edge's capacity there is no room.
    #[test]
    fn a_hot_streams_viewers_spread_over_more_edges_as_load_grows() {
        let mut snap = snapshot((1..=4).map(|i| edge(&format!("e{i}"), "eu")));
        let policy = PlacementPolicy::default();
        let serving = |snap: &Snapshot| -> BTreeSet<String> {
            snap.nodes
                .values()
                .filter(|s| s.load.streams.contains_key("hot"))
                .map(|s| s.node.id.clone())
                .collect()
        };
        for viewer in 1..=400u32 {
            let p = place_viewer(&snap, "hot", Some("eu"), &policy).unwrap();
            add_viewer(&mut snap, &p.edge, "hot");
            let expected_edges = viewer.div_ceil(80).min(4) as usize;
            assert_eq!(
                serving(&snap).len(),
                expected_edges,
                "after {viewer} viewers"
            );
            if viewer <= 320 {
                // Fill one edge to the bound before opening the next.
                let full = snap.nodes.values().filter(|s| s.load.viewers == 80).count();
                assert_eq!(full as u32, viewer / 80, "after {viewer} viewers");
            }
        }
        let loads: Vec<u32> = snap.nodes.values().map(|s| s.load.viewers).collect();
        assert_eq!(loads, [100, 100, 100, 100]);
        assert_eq!(
            place_viewer(&snap, "hot", Some("eu"), &policy),
            Err(PlacementError::Full)
        );
    }

    #[test]
    fn spreading_is_even_past_the_bound() {
        let mut snap = snapshot((1..=3).map(|i| edge(&format!("e{i}"), "eu")));
        let policy = PlacementPolicy { load_bound: 0.5 };
        for _ in 0..150 {
            let p = place_viewer(&snap, "hot", None, &policy).unwrap();
            add_viewer(&mut snap, &p.edge, "hot");
        }
        for _ in 0..30 {
            let p = place_viewer(&snap, "hot", None, &policy).unwrap();
            assert_eq!(p.reason, PlacementReason::LeastLoaded);
            add_viewer(&mut snap, &p.edge, "hot");
        }
        let loads: Vec<u32> = snap.nodes.values().map(|s| s.load.viewers).collect();
        assert_eq!(loads, [60, 60, 60]);
    }
}
