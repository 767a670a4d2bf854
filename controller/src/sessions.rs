//! The node sessions this replica holds: registrations (node id → lease, which is also
//! the incarnation, and role) and the kicks waiting for a node's next heartbeat.
//!
//! Kept in memory by the replica that took them: after a leader change, a node's next
//! heartbeat gets `NOT_FOUND` and the node registers again with the new leader.

use crate::model::Role;
use crate::store::LeaseId;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

/// A registered node as this replica knows it: its lease (also its incarnation) and
/// role (a heartbeat must come from a certificate of that role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The node's lease in the store.
    pub lease: LeaseId,
    /// The role it registered as.
    pub role: Role,
}

/// Registrations and pending kicks, by node id.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<SessionsInner>,
}

#[derive(Debug, Default)]
struct SessionsInner {
    registrations: HashMap<String, Registration>,
    /// Streams whose publisher an origin must disconnect, delivered with its next heartbeat.
    kicks: HashMap<String, BTreeSet<String>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, SessionsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `node`'s registration; returns the one it replaces.
    pub fn register(&self, node: &str, registration: Registration) -> Option<Registration> {
        self.lock()
            .registrations
            .insert(node.to_owned(), registration)
    }

    /// `node`'s registration with this replica, if any.
    pub fn registration(&self, node: &str) -> Option<Registration> {
        self.lock().registrations.get(node).copied()
    }

    /// Asks `origin` to disconnect the publisher of `stream` at its next heartbeat.
    pub fn kick(&self, origin: &str, stream: &str) {
        self.lock()
            .kicks
            .entry(origin.to_owned())
            .or_default()
            .insert(stream.to_owned());
    }

    /// The kicks waiting for `node`, which are delivered now.
    pub fn take_kicks(&self, node: &str) -> BTreeSet<String> {
        self.lock().kicks.remove(node).unwrap_or_default()
    }
}
