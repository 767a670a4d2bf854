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
use crate::etcd::EtcdClient;
use crate::model::{Assignment, Node};
use etcd_client::{
    Compare, CompareOp, GetOptions, GetResponse, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
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
    serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

/// The compare that holds while `fence`'s leader key lives (its creation revision is the
/// one the election gave); `Fenced` for the standalone fence, which means nothing in a
/// shared store.
fn fence_compare(fence: &Fence) -> Result<Compare, StoreError> {
    if fence.key.is_empty() {
        return Err(StoreError::Fenced);
    }
    Ok(Compare::create_revision(
        fence.key.as_bytes(),
        CompareOp::Equal,
        fence.revision,
    ))
}

/// Whether a failed transaction's read of the fence key (its only failure op) shows the
/// fence broken.
fn fence_broken(r: &TxnResponse, fence: &Fence) -> bool {
    let read = r.op_responses().into_iter().next();
    !matches!(read, Some(TxnOpResponse::Get(range))
        if range.kvs().iter().any(|kv| kv.create_revision() == fence.revision))
}

/// The revision an answer was given at.
fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Unavailable("etcd answered without a header".into()))
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

    async fn get(&self, key: Vec<u8>, opts: Option<GetOptions>) -> Result<GetResponse, StoreError> {
        self.client
            .call(|c| {
                let (mut kv, key, opts) = (c.kv(), key.clone(), opts.clone());
                async move { kv.get(key, opts).await }
            })
            .await
    }

    async fn range_prefix(&self, kind: &str) -> Result<Vec<KeyValue>, StoreError> {
        let key = self.key(kind, "");
        Ok(self
            .get(key, Some(GetOptions::new().with_prefix()))
            .await?
            .take_kvs())
    }

    /// Applies `op` only while `fence` holds (this controller still leads).
    async fn fenced_write(&self, op: TxnOp, fence: &Fence) -> Result<(), StoreError> {
        let txn = Txn::new().when([fence_compare(fence)?]).and_then([op]);
        if self.txn(txn).await?.succeeded() {
            Ok(())
        } else {
            Err(StoreError::Fenced)
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.client
            .call(|c| {
                let (mut kv, txn) = (c.kv(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await
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
            let (key, value) = (self.key("nodes", &node.id), encode(&node));
            self.client
                .call(|c| {
                    let (mut kv, key, value) = (c.kv(), key.clone(), value.clone());
                    async move {
                        kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                            .await
                    }
                })
                .await?;
            Ok(LeaseId(lease))
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.client.keep_alive_once(lease.0).await })
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
                TxnOp::put(key, Vec::new(), None)
            } else {
                TxnOp::delete(key, None)
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
                .map(|kv| String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned())
                .collect())
        })
    }

    fn assignment(
        &self,
        stream: String,
    ) -> BoxFuture<'_, Result<Option<Versioned<Assignment>>, StoreError>> {
        Box::pin(async move {
            let r = self.get(self.key("streams", &stream), None).await?;
            r.kvs()
                .first()
                .map(|kv| {
                    Ok(Versioned {
                        value: decode(kv)?,
                        revision: kv.mod_revision(),
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
                        revision: kv.mod_revision(),
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
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
            };
            let txn = Txn::new()
                .when([fence_compare(&fence)?, record])
                .and_then([TxnOp::put(key, encode(&next), None)])
                .or_else([TxnOp::get(fence.key.as_bytes(), None)]);
            let r = self.txn(txn).await?;
            if r.succeeded() {
                Ok(r.header().map_or(0, |h| h.revision()))
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
                    let (key, value) = kv.into_key_value();
                    (
                        String::from_utf8_lossy(&key[prefix.len()..]).into_owned(),
                        value,
                    )
                })
                .collect())
        })
    }

    fn all_records(&self) -> BoxFuture<'_, Result<super::AllRecords, StoreError>> {
        Box::pin(async move {
            // One range over `access/`: etcd answers it at one revision, named in the header.
            let prefix = self.key("access", "");
            let mut r = self
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            let revision = revision_of(r.header())?;
            let records = r
                .take_kvs()
                .into_iter()
                .filter_map(|kv| {
                    let (key, value) = kv.into_key_value();
                    let rest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                    let (kind, name) = rest.split_once('/')?;
                    Some((kind.to_owned(), name.to_owned(), value))
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
                Some(v) => TxnOp::put(key, v, None),
                None => TxnOp::delete(key, None),
            };
            self.fenced_write(op, &fence).await
        })
    }

    fn shared_loads(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let mut r = self.get(self.key("loads", "shared"), None).await?;
            Ok(r.take_kvs()
                .into_iter()
                .next()
                .map(|kv| kv.into_key_value().1))
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let opts = GetOptions::new().with_count_only();
            let r = self.get(self.key("loads", "shared"), Some(opts)).await?;
            revision_of(r.header())
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // Not physical: etcd frees the space in the background, and no caller waits.
            self.client
                .call(|c| {
                    let mut kv = c.kv();
                    async move { kv.compact(revision, None).await }
                })
                .await?;
            Ok(())
        })
    }

    fn share_loads(&self, value: Vec<u8>, fence: Fence) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let key = self.key("loads", "shared");
            self.fenced_write(TxnOp::put(key, value, None), &fence)
                .await
        })
    }
}
