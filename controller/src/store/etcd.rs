//! [`EtcdStore`]: cluster state in etcd, as JSON under a prefix (default `/ferrocast/v1/`):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `nodes/{id}` | [`Node`] | the node's: gone when it stops heartbeating |
//! | `drain/{id}` | empty | none: a drained node that restarts stays drained |
//! | `streams/{stream}` | [`Assignment`] | none: outlives its origin (takeover, continuity) |
//! | `access/{kind}/{name}` | access record (JSON, see `crate::access`) | none |
//!
//! Drains and assignments are written in transactions that compare the leader's election
//! key (its creation revision) and, for assignments, the record's mod revision, so a writer
//! that lost leadership or read a stale record fails with nothing written.

use super::{BoxFuture, Fence, LeaseId, Revision, Store, StoreError, Versioned};
use crate::etcd::{prefix_end, EtcdClient};
use crate::model::{Assignment, Node};
use ferrocast_proto::etcd::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use ferrocast_proto::etcd::mvccpb::KeyValue;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::time::Duration;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/ferrocast/v1/";

/// Cluster state in etcd.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    client: EtcdClient,
    prefix: String,
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

fn put(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

fn delete(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key,
                ..Default::default()
            },
        )),
    }
}

fn get(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

fn compare_revision(key: Vec<u8>, target: compare::CompareTarget, revision: i64) -> Compare {
    let target_union = match target {
        compare::CompareTarget::Create => compare::TargetUnion::CreateRevision(revision),
        _ => compare::TargetUnion::ModRevision(revision),
    };
    Compare {
        result: compare::CompareResult::Equal.into(),
        target: target.into(),
        key,
        target_union: Some(target_union),
        range_end: Vec::new(),
    }
}

/// The compare that holds while `fence`'s leader key lives; `Fenced` for the standalone
/// fence, which means nothing in a shared store.
fn fence_compare(fence: &Fence) -> Result<Compare, StoreError> {
    if fence.key.is_empty() {
        return Err(StoreError::Fenced);
    }
    Ok(compare_revision(
        fence.key.as_bytes().to_vec(),
        compare::CompareTarget::Create,
        fence.revision,
    ))
}

/// Whether a failed transaction's read of the fence key (its only failure op) shows the
/// fence broken.
fn fence_broken(r: &TxnResponse, fence: &Fence) -> bool {
    let kvs = r.responses.first().and_then(|op| match &op.response {
        Some(response_op::Response::ResponseRange(range)) => Some(&range.kvs),
        _ => None,
    });
    !kvs.is_some_and(|kvs| kvs.iter().any(|kv| kv.create_revision == fence.revision))
}

impl EtcdStore {
    /// A store under `prefix` (which should end with `/`).
    pub fn new(client: EtcdClient, prefix: impl Into<String>) -> Self {
        EtcdStore {
            client,
            prefix: prefix.into(),
        }
    }

    /// The client, for the election on the same cluster.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    fn key(&self, kind: &str, name: &str) -> Vec<u8> {
        format!("{}{kind}/{name}", self.prefix).into_bytes()
    }

    async fn range_prefix(&self, kind: &str) -> Result<Vec<KeyValue>, StoreError> {
        let key = self.key(kind, "");
        let req = RangeRequest {
            range_end: prefix_end(&key),
            key,
            ..Default::default()
        };
        Ok(self.client.call(self.client.kv().range(req)).await?.kvs)
    }

    /// Applies `op` only while `fence` holds (this controller still leads).
    async fn fenced_write(&self, op: RequestOp, fence: &Fence) -> Result<(), StoreError> {
        let r = self
            .txn(TxnRequest {
                compare: vec![fence_compare(fence)?],
                success: vec![op],
                failure: Vec::new(),
            })
            .await?;
        if r.succeeded {
            Ok(())
        } else {
            Err(StoreError::Fenced)
        }
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        self.client.call(self.client.kv().txn(req)).await
    }
}

impl Store for EtcdStore {
    fn register_node(
        &self,
        node: Node,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        Box::pin(async move {
            let (lease, _) = self.client.grant(ttl).await?;
            let req = PutRequest {
                key: self.key("nodes", &node.id),
                value: encode(&node),
                lease,
                ..Default::default()
            };
            self.client.call(self.client.kv().put(req)).await?;
            Ok(LeaseId(lease))
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.client.keep_alive_once(lease.0).await.map(|_| ()) })
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.client.revoke(lease.0))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, StoreError>> {
        Box::pin(async move {
            let mut nodes = Vec::new();
            for kv in self.range_prefix("nodes").await? {
                // One bad record must not hide every other node from placement.
                match decode(&kv) {
                    Ok(n) => nodes.push(n),
                    Err(e) => tracing::warn!(error = %e, "skipping a node record"),
                }
            }
            Ok(nodes)
        })
    }

    fn set_draining(
        &self,
        node: String,
        draining: bool,
        fence: Fence,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let key = self.key("drain", &node);
            let op = if draining {
                put(key, Vec::new())
            } else {
                delete(key)
            };
            self.fenced_write(op, &fence).await
        })
    }

    fn draining(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StoreError>> {
        Box::pin(async move {
            let prefix = self.key("drain", "");
            Ok(self
                .range_prefix("drain")
                .await?
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned())
                .collect())
        })
    }

    fn assignment(
        &self,
        stream: String,
    ) -> BoxFuture<'_, Result<Option<Versioned<Assignment>>, StoreError>> {
        Box::pin(async move {
            let req = RangeRequest {
                key: self.key("streams", &stream),
                ..Default::default()
            };
            let r = self.client.call(self.client.kv().range(req)).await?;
            r.kvs
                .first()
                .map(|kv| {
                    Ok(Versioned {
                        value: decode(kv)?,
                        revision: kv.mod_revision,
                    })
                })
                .transpose()
        })
    }

    fn assignments(&self) -> BoxFuture<'_, Result<Vec<Versioned<Assignment>>, StoreError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for kv in self.range_prefix("streams").await? {
                match decode(&kv) {
                    Ok(value) => all.push(Versioned {
                        value,
                        revision: kv.mod_revision,
                    }),
                    Err(e) => tracing::warn!(error = %e, "skipping an assignment record"),
                }
            }
            Ok(all)
        })
    }

    fn put_assignment(
        &self,
        next: Assignment,
        expected: Option<Revision>,
        fence: Fence,
    ) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let key = self.key("streams", &next.stream);
            // An absent key has create revision 0; a present one is matched on its mod revision.
            let record = match expected {
                None => compare_revision(key.clone(), compare::CompareTarget::Create, 0),
                Some(rev) => compare_revision(key.clone(), compare::CompareTarget::Mod, rev),
            };
            let r = self
                .txn(TxnRequest {
                    compare: vec![fence_compare(&fence)?, record],
                    success: vec![put(key, encode(&next))],
                    failure: vec![get(fence.key.as_bytes().to_vec())],
                })
                .await?;
            if r.succeeded {
                Ok(r.header.map_or(0, |h| h.revision))
            } else if fence_broken(&r, &fence) {
                Err(StoreError::Fenced)
            } else {
                Err(StoreError::Conflict(format!(
                    "assignment of {}",
                    next.stream
                )))
            }
        })
    }

    fn records(&self, kind: &'static str) -> BoxFuture<'_, Result<super::Records, StoreError>> {
        Box::pin(async move {
            let dir = format!("access/{kind}");
            let prefix = self.key(&dir, "");
            Ok(self
                .range_prefix(&dir)
                .await?
                .into_iter()
                .map(|kv| {
                    let name = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
                    (name, kv.value)
                })
                .collect())
        })
    }

    fn all_records(&self) -> BoxFuture<'_, Result<super::AllRecords, StoreError>> {
        Box::pin(async move {
            // One range over `access/`: etcd answers it at one revision, named in the header.
            let prefix = self.key("access", "");
            let req = RangeRequest {
                range_end: prefix_end(&prefix),
                key: prefix.clone(),
                ..Default::default()
            };
            let r = self.client.call(self.client.kv().range(req)).await?;
            let revision = r
                .header
                .map(|h| h.revision)
                .ok_or_else(|| StoreError::Unavailable("etcd answered without a header".into()))?;
            let records = r
                .kvs
                .into_iter()
                .filter_map(|kv| {
                    let rest = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
                    let (kind, name) = rest.split_once('/')?;
                    Some((kind.to_owned(), name.to_owned(), kv.value))
                })
                .collect();
            Ok(super::AllRecords { revision, records })
        })
    }

    fn set_record(
        &self,
        kind: &'static str,
        name: String,
        value: Option<Vec<u8>>,
        fence: Fence,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let key = self.key(&format!("access/{kind}"), &name);
            let op = match value {
                Some(v) => put(key, v),
                None => delete(key),
            };
            self.fenced_write(op, &fence).await
        })
    }

    fn shared_loads(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let req = RangeRequest {
                key: self.key("loads", "shared"),
                ..Default::default()
            };
            let r = self.client.call(self.client.kv().range(req)).await?;
            Ok(r.kvs.into_iter().next().map(|kv| kv.value))
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let req = RangeRequest {
                key: self.key("loads", "shared"),
                count_only: true,
                ..Default::default()
            };
            let r = self.client.call(self.client.kv().range(req)).await?;
            r.header
                .map(|h| h.revision)
                .ok_or_else(|| StoreError::Unavailable("etcd answered without a header".into()))
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let req = CompactionRequest {
                revision,
                physical: false,
            };
            self.client.call(self.client.kv().compact(req)).await?;
            Ok(())
        })
    }

    fn share_loads(&self, value: Vec<u8>, fence: Fence) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let key = self.key("loads", "shared");
            self.fenced_write(put(key, value), &fence).await
        })
    }
}
