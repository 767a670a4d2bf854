//! [`MemoryStore`]: the store of a lone controller (`standalone`) and of unit tests. Leases
//! expire on `tokio::time`, so tests drive them with paused time; there is one leader, so
//! fences are not checked, but revisions are, like etcd's.

use super::{BoxFuture, Fence, LeaseId, Revision, Store, StoreError, Versioned};
use crate::model::{Assignment, Node};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    expires: Instant,
    node: String,
}

#[derive(Debug, Default)]
struct Inner {
    /// Last revision handed out; every write takes the next one, like etcd.
    revision: Revision,
    next_lease: i64,
    leases: HashMap<i64, Lease>,
    /// Node records with the lease that keeps each alive.
    nodes: BTreeMap<String, (Node, i64)>,
    draining: BTreeSet<String>,
    assignments: BTreeMap<String, Versioned<Assignment>>,
    /// Access records by (kind, name).
    records: BTreeMap<(&'static str, String), Vec<u8>>,
    /// The leader's shared load reports.
    loads: Option<Vec<u8>>,
}

impl Inner {
    /// Drops expired leases and their nodes, as etcd would have by now.
    fn expire(&mut self) {
        let now = Instant::now();
        let dead: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.drop_lease(id);
        }
    }

    fn drop_lease(&mut self, id: i64) {
        if let Some(l) = self.leases.remove(&id) {
            if self
                .nodes
                .get(&l.node)
                .is_some_and(|(_, lease)| *lease == id)
            {
                self.nodes.remove(&l.node);
            }
        }
    }
}

/// In-memory cluster state.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.expire();
        g
    }
}

impl Store for MemoryStore {
    fn register_node(
        &self,
        node: Node,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        let mut g = self.lock();
        g.next_lease += 1;
        let id = g.next_lease;
        let lease = Lease {
            ttl,
            expires: Instant::now() + ttl,
            node: node.id.clone(),
        };
        g.leases.insert(id, lease);
        g.revision += 1;
        g.nodes.insert(node.id.clone(), (node, id));
        Box::pin(std::future::ready(Ok(LeaseId(id))))
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut g = self.lock();
        let r = match g.leases.get_mut(&lease.0) {
            Some(l) => {
                l.expires = Instant::now() + l.ttl;
                Ok(())
            }
            None => Err(StoreError::LeaseExpired(lease.0)),
        };
        Box::pin(std::future::ready(r))
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.lock().drop_lease(lease.0);
        Box::pin(std::future::ready(Ok(())))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, StoreError>> {
        let nodes = self.lock().nodes.values().map(|(n, _)| n.clone()).collect();
        Box::pin(std::future::ready(Ok(nodes)))
    }

    fn set_draining(
        &self,
        node: String,
        draining: bool,
        _fence: Fence,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut g = self.lock();
        g.revision += 1;
        if draining {
            g.draining.insert(node);
        } else {
            g.draining.remove(&node);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn draining(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StoreError>> {
        let d = self.lock().draining.clone();
        Box::pin(std::future::ready(Ok(d)))
    }

    fn assignment(
        &self,
        stream: String,
    ) -> BoxFuture<'_, Result<Option<Versioned<Assignment>>, StoreError>> {
        let a = self.lock().assignments.get(&stream).cloned();
        Box::pin(std::future::ready(Ok(a)))
    }

    fn assignments(&self) -> BoxFuture<'_, Result<Vec<Versioned<Assignment>>, StoreError>> {
        let all = self.lock().assignments.values().cloned().collect();
        Box::pin(std::future::ready(Ok(all)))
    }

    fn put_assignment(
        &self,
        next: Assignment,
        expected: Option<Revision>,
        _fence: Fence,
    ) -> BoxFuture<'_, Result<Revision, StoreError>> {
        let mut g = self.lock();
        let current = g.assignments.get(&next.stream).map(|v| v.revision);
        let r = if current != expected {
            Err(StoreError::Conflict(format!(
                "assignment of {}",
                next.stream
            )))
        } else {
            g.revision += 1;
            let revision = g.revision;
            g.assignments.insert(
                next.stream.clone(),
                Versioned {
                    value: next,
                    revision,
                },
            );
            Ok(revision)
        };
        Box::pin(std::future::ready(r))
    }

    fn records(&self, kind: &'static str) -> BoxFuture<'_, Result<super::Records, StoreError>> {
        let all = self
            .lock()
            .records
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), v)| (name.clone(), v.clone()))
            .collect();
        Box::pin(std::future::ready(Ok(all)))
    }

    fn all_records(&self) -> BoxFuture<'_, Result<super::AllRecords, StoreError>> {
        // One lock: the records and the revision are of the same moment.
        let g = self.lock();
        let all = super::AllRecords {
            revision: g.revision,
            records: g
                .records
                .iter()
                .map(|((k, name), v)| ((*k).to_owned(), name.clone(), v.clone()))
                .collect(),
        };
        Box::pin(std::future::ready(Ok(all)))
    }

    fn set_record(
        &self,
        kind: &'static str,
        name: String,
        value: Option<Vec<u8>>,
        _fence: Fence,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut g = self.lock();
        g.revision += 1;
        match value {
            Some(v) => g.records.insert((kind, name), v),
            None => g.records.remove(&(kind, name)),
        };
        Box::pin(std::future::ready(Ok(())))
    }

    fn shared_loads(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let loads = self.lock().loads.clone();
        Box::pin(std::future::ready(Ok(loads)))
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        let revision = self.lock().revision;
        Box::pin(std::future::ready(Ok(revision)))
    }

    fn compact(&self, _revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        // No history is kept.
        Box::pin(std::future::ready(Ok(())))
    }

    fn share_loads(&self, value: Vec<u8>, _fence: Fence) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut g = self.lock();
        g.revision += 1;
        g.loads = Some(value);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AssignmentState, Capacity, Continuity, Role};

    fn node(id: &str) -> Node {
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

    fn ids(nodes: Vec<Node>) -> Vec<String> {
        nodes.into_iter().map(|n| n.id).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_unless_kept_alive() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(3);
        let a = store.register_node(node("a"), ttl).await.unwrap();
        let _b = store.register_node(node("b"), ttl).await.unwrap();
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(2)).await;
            store.keep_alive(a).await.unwrap();
        }
        assert_eq!(ids(store.nodes().await.unwrap()), ["a"]);
        tokio::time::advance(ttl).await;
        assert!(store.nodes().await.unwrap().is_empty());
        assert_eq!(
            store.keep_alive(a).await,
            Err(StoreError::LeaseExpired(a.0))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_registration_outlives_the_old_lease() {
        let store = MemoryStore::new();
        let old = store
            .register_node(node("a"), Duration::from_secs(1))
            .await
            .unwrap();
        let new = store
            .register_node(node("a"), Duration::from_secs(10))
            .await
            .unwrap();
        store.revoke(old).await.unwrap();
        assert_eq!(ids(store.nodes().await.unwrap()), ["a"]);
        store.revoke(new).await.unwrap();
        assert!(store.nodes().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn assignment_writes_compare_revisions() {
        let store = MemoryStore::new();
        let mut a = Assignment {
            stream: "s".into(),
            origin: "o1".into(),
            epoch: 1,
            continuity: Continuity::default(),
            state: AssignmentState::Live,
        };
        let fence = Fence::standalone();
        let r1 = store
            .put_assignment(a.clone(), None, fence.clone())
            .await
            .unwrap();
        // A second "create" loses: the record exists now.
        assert!(matches!(
            store.put_assignment(a.clone(), None, fence.clone()).await,
            Err(StoreError::Conflict(_))
        ));
        a.epoch = 2;
        let r2 = store
            .put_assignment(a.clone(), Some(r1), fence.clone())
            .await
            .unwrap();
        assert!(r2 > r1);
        // A writer that read r1 is stale now.
        assert!(matches!(
            store
                .put_assignment(a.clone(), Some(r1), fence.clone())
                .await,
            Err(StoreError::Conflict(_))
        ));
        let got = store.assignment("s".into()).await.unwrap().unwrap();
        assert_eq!((got.value.epoch, got.revision), (2, r2));
        assert_eq!(store.assignments().await.unwrap().len(), 1);

        store
            .set_draining("o1".into(), true, fence.clone())
            .await
            .unwrap();
        assert!(store.draining().await.unwrap().contains("o1"));
        store.set_draining("o1".into(), false, fence).await.unwrap();
        assert!(store.draining().await.unwrap().is_empty());
    }
}
