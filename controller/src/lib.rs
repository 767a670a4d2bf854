//! The Ferrocast controller: cluster state (nodes under leases, stream assignments with
//! epochs and continuity) in a [`store::Store`] on etcd or in memory, placement as pure
//! functions ([`scheduler`]) applied by [`assign`], and leader election ([`election`]).
//!
//! Only the leader writes assignments, with a [`store::Fence`] that etcd checks in the same
//! transaction, so a controller that lost its lease cannot overwrite its successor's work.
//!
//! [`hub`] keeps each replica's view of the cluster and broadcasts its changes to watchers;
//! [`play`] places viewers (`GET /play/{stream}`) by [`region`].
//!
//! [`api`] serves the gRPC API over them and [`server::Controller`] runs it all.

pub use server::{ConfigError, Controller, ControllerConfig};

pub mod access;
pub mod api;
pub mod assign;
pub mod election;
pub mod etcd;
pub mod hub;
pub mod identity;
pub mod model;
pub mod play;
pub mod region;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tls;
