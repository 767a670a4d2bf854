//! The Ferrocast controller: cluster state (nodes under leases, stream assignments with
//! epochs and continuity) in a [`store::Store`] on etcd or in memory, placement as pure
//! functions ([`scheduler`]) applied by [`assign`], and leader election ([`election`],
//! published to the rest by [`leader`]).
//!
//! Only the leader writes assignments, with a [`store::Fence`] that etcd checks in the same
//! transaction, so a controller that lost its lease cannot overwrite its successor's work.
//!
//! [`hub`] keeps each replica's view of the cluster and broadcasts its changes to watchers;
//! [`play`] places viewers (`GET /play/{stream}`) by [`region`], on load reports kept by
//! [`load`].
//!
//! [`api`] serves the gRPC API over the [`state`] both services share, behind [`auth`]
//! (operators) and [`identity`] (nodes); [`server::Controller`] runs it all as a list of
//! tasks ([`grpc`], [`admin_http`], [`compaction`], [`health`], ...).

pub use config::{ConfigError, ControllerConfig, GrpcTls};
pub use server::Controller;

pub mod access;
pub mod admin_http;
pub mod api;
pub mod assign;
pub mod auth;
pub mod compaction;
pub mod config;
pub mod election;
pub mod etcd;
pub mod grpc;
pub mod health;
pub mod hub;
pub mod identity;
pub mod leader;
pub mod load;
pub mod model;
pub mod play;
pub mod region;
pub mod scheduler;
pub mod server;
pub mod sessions;
pub mod state;
pub mod store;
pub mod tls;
