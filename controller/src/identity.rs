//! Who calls `NodeService`: the node its certificate names ([`NodeCaller`]), and what
//! that node may do. With mutual TLS on the gRPC port every call is bound to the
//! caller's `ferrocast://ROLE/ID` identity (contract: `ferrocast_tls::identity`):
//!
//! - `Register` only as itself: the node id and role of the request are the
//!   certificate's (an edge's certificate cannot register as, and overwrite, an origin);
//! - `Heartbeat` only for its own node id and registered role; `ClaimStream` and
//!   `ReleaseStream` only by origins, as themselves; `ReleaseStream` only of a stream the
//!   caller holds;
//! - `WatchAccess` (playback rules with their verification secrets) only by edges and
//!   origins, which both check playback tokens.
//!
//! Without TLS nobody is known ([`NodeCaller::Unverified`]): every call is taken as it
//! says, which is only safe where the port is reachable by cluster nodes alone (loopback,
//! tests, standalone); the controller warns loudly at start. The caller is a request
//! extension set by `crate::tls::NodeAuth`; a request without one is refused, so a
//! service mounted without that interceptor is closed, not open.

use crate::api::ApiError;
use crate::model::Role;
use ferrocast_tls::identity::{NodeIdentity, NodeRole};
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::Request;

/// The caller of a `NodeService` call (a request extension).
#[derive(Debug, Clone)]
pub enum NodeCaller {
    /// No TLS on the gRPC port: the caller is whoever it says it is.
    Unverified,
    /// A cluster certificate naming these identities (at least one).
    Verified {
        /// The client's address, for log lines.
        addr: SocketAddr,
        /// What its certificate names.
        identities: Arc<[NodeIdentity]>,
    },
}

/// The certificate role of a registered node's role.
pub fn node_role(role: Role) -> NodeRole {
    match role {
        Role::Origin => NodeRole::Origin,
        Role::Edge => NodeRole::Edge,
    }
}

impl NodeCaller {
    /// The caller of `req`; none (no interceptor ran) is refused.
    pub fn of<T>(req: &Request<T>) -> Result<Self, ApiError> {
        req.extensions()
            .get::<NodeCaller>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("node call without a caller: the NodeAuth interceptor is missing");
                ApiError::Forbidden("the caller of this node call is unknown".into())
            })
    }

    fn deny(&self, op: &str, why: String) -> ApiError {
        if let Self::Verified { addr, identities } = self {
            let names: Vec<String> = identities.iter().map(|i| i.to_string()).collect();
            tracing::warn!(%addr, certificate = %names.join(","), op, reason = %why,
                "node call refused: not what the caller's certificate names");
        }
        ApiError::Forbidden(format!("{op}: {why}"))
    }

    /// The caller may act as node `id` in `role` (register as it, claim as it).
    pub fn may_be(&self, op: &str, role: NodeRole, id: &str) -> Result<(), ApiError> {
        match self {
            Self::Unverified => Ok(()),
            Self::Verified { identities, .. } => {
                if identities.iter().any(|i| i.role == role && i.id == id) {
                    Ok(())
                } else {
                    Err(self.deny(
                        op,
                        format!("the client certificate does not name {role}/{id}"),
                    ))
                }
            }
        }
    }

    /// The caller is node `id` (in whatever role).
    pub fn is(&self, op: &str, id: &str) -> Result<(), ApiError> {
        match self {
            Self::Unverified => Ok(()),
            Self::Verified { identities, .. } => {
                if identities.iter().any(|i| i.id == id) {
                    Ok(())
                } else {
                    Err(self.deny(
                        op,
                        format!("the client certificate does not name node {id:?}"),
                    ))
                }
            }
        }
    }

    /// The caller has one of `roles`.
    pub fn has_role(&self, op: &str, roles: &[NodeRole]) -> Result<(), ApiError> {
        match self {
            Self::Unverified => Ok(()),
            Self::Verified { identities, .. } => {
                if identities.iter().any(|i| roles.contains(&i.role)) {
                    Ok(())
                } else {
                    let want: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                    Err(self.deny(op, format!("only for {}", want.join(" and "))))
                }
            }
        }
    }

    /// Whether the caller is known by a certificate.
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified { .. })
    }

    /// A refusal for `op` (logged with the caller's certificate).
    pub fn refuse(&self, op: &str, why: String) -> ApiError {
        self.deny(op, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> NodeCaller {
        NodeCaller::Verified {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            identities: vec![NodeIdentity::new(NodeRole::Edge, "e1").unwrap()].into(),
        }
    }

    #[test]
    fn a_verified_caller_is_only_itself() {
        let e = edge();
        assert!(e.may_be("register", NodeRole::Edge, "e1").is_ok());
        assert!(matches!(
            e.may_be("register", NodeRole::Origin, "e1"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(e.may_be("register", NodeRole::Edge, "e2").is_err());
        assert!(e.is("heartbeat", "e1").is_ok());
        assert!(e.is("heartbeat", "o1").is_err());
        assert!(e
            .has_role("watch access", &[NodeRole::Edge, NodeRole::Origin])
            .is_ok());
        assert!(e.has_role("claim", &[NodeRole::Origin]).is_err());
        let u = NodeCaller::Unverified;
        assert!(u.may_be("register", NodeRole::Origin, "anything").is_ok());
        assert!(!u.is_verified() && e.is_verified());
        assert!(
            NodeCaller::of(&Request::new(())).is_err(),
            "no extension: refused"
        );
    }
}
