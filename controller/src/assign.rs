//! Applies placement decisions to the store: read the assignment, decide with the pure
//! [`scheduler`](crate::scheduler), write conditionally on the revision read and under the
//! leader's fence, and on a conflict (someone wrote in between) read and decide again.
//! Also fences origins: a continuity report or a release under an epoch that is not the
//! current one is refused.

use crate::model::{Assignment, AssignmentState, Continuity, Load};
use crate::scheduler::{decide_claim, ClaimDecision, GrantKind, NodeStatus, Snapshot};
use crate::store::{Fence, Store, StoreError};
use std::collections::HashMap;

/// Conditional writes tried before giving up on a hotly contended stream.
const MAX_ATTEMPTS: usize = 4;

/// Why an assignment change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssignError {
    /// The store failed (including [`StoreError::Fenced`]: this controller no longer leads).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The origin wrote under an epoch that is over: it lost the stream and must stop.
    #[error("stream {stream}: epoch {epoch} is stale (current {current})")]
    StaleEpoch {
        /// Stream key.
        stream: String,
        /// The writer's epoch.
        epoch: u64,
        /// The assignment's epoch.
        current: u64,
    },
    /// The stream has no assignment.
    #[error("stream {0} has no assignment")]
    NoAssignment(String),
}

/// The live nodes with their drains and the load reports in `loads`.
pub async fn snapshot(
    store: &dyn Store,
    loads: &HashMap<String, Load>,
) -> Result<Snapshot, StoreError> {
    let nodes = store.nodes().await?;
    let draining = store.draining().await?;
    let nodes = nodes
        .into_iter()
        .map(|node| {
            let status = NodeStatus {
                draining: draining.contains(&node.id),
                load: loads.get(&node.id).cloned().unwrap_or_default(),
                node,
            };
            (status.node.id.clone(), status)
        })
        .collect();
    Ok(Snapshot { nodes })
}

/// Decides `node`'s claim of `stream` over `snapshot` and stores a grant. A refusal
/// changes nothing.
pub async fn claim(
    store: &dyn Store,
    fence: &Fence,
    snapshot: &Snapshot,
    node: &str,
    stream: &str,
) -> Result<ClaimDecision, AssignError> {
    for _ in 0..MAX_ATTEMPTS {
        let current = store.assignment(stream.to_owned()).await?;
        let decision = decide_claim(snapshot, current.as_ref().map(|v| &v.value), node, stream);
        let ClaimDecision::Grant { kind, assignment } = &decision else {
            return Ok(decision);
        };
        if *kind == GrantKind::AlreadyHeld {
            return Ok(decision);
        }
        let expected = current.map(|v| v.revision);
        match store
            .put_assignment(assignment.clone(), expected, fence.clone())
            .await
        {
            Ok(_) => return Ok(decision),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict(format!("assignment of {stream}")).into())
}

/// Records the continuity reported by the origin holding `stream` under `epoch`, and with
/// `release` gives the stream up. Refused with [`AssignError::StaleEpoch`] unless `epoch`
/// is the current, live one.
pub async fn report(
    store: &dyn Store,
    fence: &Fence,
    stream: &str,
    epoch: u64,
    continuity: Continuity,
    release: bool,
) -> Result<Assignment, AssignError> {
    for _ in 0..MAX_ATTEMPTS {
        let Some(current) = store.assignment(stream.to_owned()).await? else {
            return Err(AssignError::NoAssignment(stream.to_owned()));
        };
        let cur = &current.value;
        if cur.epoch != epoch || cur.state != AssignmentState::Live {
            return Err(AssignError::StaleEpoch {
                stream: stream.to_owned(),
                epoch,
                current: cur.epoch,
            });
        }
        if !release && cur.continuity == continuity {
            // Nothing new (heartbeats repeat the report between segments): no write.
            return Ok(cur.clone());
        }
        let mut next = cur.clone();
        next.continuity = continuity;
        if release {
            next.state = AssignmentState::Released;
        }
        match store
            .put_assignment(next.clone(), Some(current.revision), fence.clone())
            .await
        {
            Ok(_) => return Ok(next),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict(format!("assignment of {stream}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Capacity, Node, Role};
    use crate::scheduler::Refusal;
    use crate::store::memory::MemoryStore;
    use std::time::Duration;

    fn origin(id: &str) -> Node {
        Node {
            id: id.into(),
            role: Role::Origin,
            region: "eu".into(),
            relay_addr: format!("{id}:4433"),
            http_url: String::new(),
            rtmp_addr: String::new(),
            capacity: Capacity::default(),
        }
    }

    fn cont(next_msn: u64) -> Continuity {
        Continuity {
            next_msn,
            discontinuity: 0,
            timeline_end_ms: next_msn * 2000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn claim_takeover_and_fencing_of_the_old_origin() {
        let store = MemoryStore::new();
        let fence = Fence::standalone();
        let ttl = Duration::from_secs(3);
        let no_load = HashMap::new();
        let l1 = store.register_node(origin("o1"), ttl).await.unwrap();
        let l2 = store.register_node(origin("o2"), ttl).await.unwrap();
        let snap = snapshot(&store, &no_load).await.unwrap();

        let d = claim(&store, &fence, &snap, "o1", "s").await.unwrap();
        assert!(matches!(
            d,
            ClaimDecision::Grant {
                kind: GrantKind::New,
                ..
            }
        ));
        let d = claim(&store, &fence, &snap, "o2", "s").await.unwrap();
        assert_eq!(
            d,
            ClaimDecision::Refuse(Refusal::Duplicate {
                holder: "o1".into()
            })
        );
        report(&store, &fence, "s", 1, cont(10), false)
            .await
            .unwrap();

        // o1 dies: o2 keeps its lease alive, o1 does not.
        tokio::time::advance(Duration::from_secs(2)).await;
        store.keep_alive(l2).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            store.keep_alive(l1).await,
            Err(StoreError::LeaseExpired(l1.0))
        );
        let snap = snapshot(&store, &no_load).await.unwrap();
        let d = claim(&store, &fence, &snap, "o2", "s").await.unwrap();
        let ClaimDecision::Grant { kind, assignment } = d else {
            panic!("{d:?}")
        };
        assert_eq!(kind, GrantKind::TakenOver { from: "o1".into() });
        assert_eq!((assignment.epoch, assignment.continuity), (2, cont(10)));

        // o1 wakes up and reports under epoch 1: refused.
        assert_eq!(
            report(&store, &fence, "s", 1, cont(11), false).await,
            Err(AssignError::StaleEpoch {
                stream: "s".into(),
                epoch: 1,
                current: 2
            })
        );
        let a = report(&store, &fence, "s", 2, cont(12), true)
            .await
            .unwrap();
        assert_eq!(a.state, AssignmentState::Released);
        // Released: no more reports under epoch 2; the next claim gets epoch 3.
        assert!(report(&store, &fence, "s", 2, cont(13), false)
            .await
            .is_err());
        let d = claim(&store, &fence, &snap, "o2", "s").await.unwrap();
        let ClaimDecision::Grant { assignment, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!((assignment.epoch, assignment.continuity), (3, cont(12)));
        assert_eq!(
            report(&store, &fence, "x", 1, cont(1), false).await,
            Err(AssignError::NoAssignment("x".into()))
        );
    }
}
