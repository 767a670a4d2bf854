//! The gRPC API as thin tonic impls: [`NodeApi`] (`NodeService`, `node`) and
//! [`OperatorApi`] (`OperatorService`, `operator`) over the [`Shared`](crate::state::Shared)
//! state, the pure [`scheduler`](crate::scheduler) and the leader's fence; every failure
//! becomes a `Status` in one place (`error`); the server streams come from `watch`.
//!
//! - Writes (register, heartbeat, claim, release, drain, kick, access records) are served
//!   only by the leader. A follower answers them with `UNAVAILABLE` and the leader's gRPC
//!   address in the [`LEADER_METADATA`] response metadata (absent while there is no
//!   leader); the client retries there. Reads (list, get, resolve, watches) are served by
//!   every replica, from the hub's last good view while the store is unreachable.
//! - Who calls is decided before a call reaches these impls: nodes by their certificate
//!   ([`crate::identity`]), operators by [`crate::auth`].

mod error;
mod node;
mod operator;
mod watch;

pub(crate) use error::ApiResult;
pub use error::{ApiError, LEADER_METADATA};
pub use node::NodeApi;
pub use operator::OperatorApi;
