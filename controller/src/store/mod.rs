//! Where cluster state lives: the [`Store`] trait, with [`memory::MemoryStore`] (standalone,
//! unit tests) and [`etcd::EtcdStore`] (a real cluster).
//!
//! - Nodes live under a lease: a node whose lease is not kept alive disappears by itself.
//! - Assignments are written only with a [`Fence`] (proof of leadership) and the revision
//!   the writer read, so a stale leader, or a decision taken on stale data, fails instead
//!   of overwriting a newer one ([`StoreError::Fenced`], [`StoreError::Conflict`]).
//! - Access records (keys, policies, revocations) are opaque bytes by kind and name,
//!   written only by the leader, without a lease.
//! - Drains are kept apart from the node record, without a lease, so that a drained node
//!   that restarts stays drained.

pub mod etcd;
pub mod memory;

use crate::model::{Assignment, Node};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future (the store is used as `Arc<dyn Store>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Access records of one kind: name → opaque bytes.
pub type Records = Vec<(String, Vec<u8>)>;

/// Every access record at once, as one consistent read: (kind, name, opaque bytes), and
/// the store revision the read saw, so the revision says exactly which writes it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllRecords {
    /// The store's revision at the read (every earlier write is in, no later one).
    pub revision: Revision,
    /// (kind, name, value).
    pub records: Vec<(String, String, Vec<u8>)>,
}

/// A record's version: it changes on every write of the record (etcd's mod revision).
pub type Revision = i64;

/// A node's lease; the node is gone when the lease is not kept alive for its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// A record with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its revision, for the next conditional write.
    pub revision: Revision,
}

/// Proof of leadership carried by every assignment write: the election key and its
/// creation revision. It holds while that key exists with that revision, i.e. while the
/// leader's lease lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader's election key.
    pub key: String,
    /// The key's creation revision.
    pub revision: i64,
}

impl Fence {
    /// The fence of a lone controller (standalone, in-memory store), which always leads.
    /// The etcd store refuses it.
    pub fn standalone() -> Self {
        Fence {
            key: String::new(),
            revision: 0,
        }
    }
}

/// What went wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record changed since it was read: read again and decide again.
    #[error("{0} changed since it was read")]
    Conflict(String),
    /// The writer no longer leads: it must stop writing.
    #[error("not the leader any more")]
    Fenced,
    /// The lease expired or never existed: the node must register again.
    #[error("lease {0:x} expired or unknown")]
    LeaseExpired(i64),
    /// No such node.
    #[error("node {0} is not registered")]
    UnknownNode(String),
    /// The store could not be reached or failed; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// The decoding error.
        reason: String,
    },
}

impl StoreError {
    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Conflict(_))
    }
}

/// Cluster state. Every method is one round trip (or none, in memory).
pub trait Store: Send + Sync + Debug {
    /// Registers `node` under a new lease of `ttl`, replacing its previous record (the
    /// previous lease, if any, is left to expire or be revoked by the caller).
    fn register_node(
        &self,
        node: Node,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<LeaseId, StoreError>>;

    /// Renews a lease for its full TTL; [`StoreError::LeaseExpired`] when it is gone.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Ends a lease now: its node disappears at once (a clean shutdown).
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The live nodes (those whose lease holds), by id.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, StoreError>>;

    /// Marks a node draining (`true`) or not; only the leader writes it.
    fn set_draining(
        &self,
        node: String,
        draining: bool,
        fence: Fence,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The ids of draining nodes (live or not).
    fn draining(&self) -> BoxFuture<'_, Result<BTreeSet<String>, StoreError>>;

    /// A stream's assignment, if it has one.
    fn assignment(
        &self,
        stream: String,
    ) -> BoxFuture<'_, Result<Option<Versioned<Assignment>>, StoreError>>;

    /// Every assignment.
    fn assignments(&self) -> BoxFuture<'_, Result<Vec<Versioned<Assignment>>, StoreError>>;

    /// Writes `next` if the stream's record is still at `expected` (`None`: there is none)
    /// and `fence` still holds; returns the new revision.
    fn put_assignment(
        &self,
        next: Assignment,
        expected: Option<Revision>,
        fence: Fence,
    ) -> BoxFuture<'_, Result<Revision, StoreError>>;

    /// Every access record of `kind` (publish keys, signing keys, stream policies,
    /// revocations: see [`crate::access`]), as name → opaque bytes, without a lease.
    fn records(&self, kind: &'static str) -> BoxFuture<'_, Result<Records, StoreError>>;

    /// Every access record of every kind, read at one revision (see [`AllRecords`]).
    fn all_records(&self) -> BoxFuture<'_, Result<AllRecords, StoreError>>;

    /// Writes (`Some`) or deletes (`None`) one access record while `fence` holds.
    fn set_record(
        &self,
        kind: &'static str,
        name: String,
        value: Option<Vec<u8>>,
        fence: Fence,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The load reports the leader last shared (opaque bytes), for followers' placement.
    fn shared_loads(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;

    /// Replaces the shared load reports while `fence` holds.
    fn share_loads(&self, value: Vec<u8>, fence: Fence) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The store's revision now (every write takes the next one).
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>>;

    /// Forgets the history before `revision`: etcd keeps every version of every key until
    /// compacted, and each continuity or load write is one. Nothing here reads history.
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>>;
}
