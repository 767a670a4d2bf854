//! Node identity: who a cluster certificate says its holder is. Each node certificate
//! carries a subject-alternative-name URI `ferrocast://ROLE/NODE_ID` ([`NodeIdentity`]),
//! with ROLE one of `controller`, `origin`, `edge`. The controller binds every node call
//! to it and relay peers check each other's role, so a certificate is one node in one
//! role, not "any member of the cluster".
//!
//! This is the one place that reads it, for the controller, the relay and the nodes
//! alike. The certificate is parsed with rustls-webpki, already in the tree as rustls's
//! certificate verifier: its `valid_uri_names` reads the SAN extension with the same
//! parser that verified the chain, so no X.509 crate is added (rcgen, the other
//! certificate crate in the tree, only writes).

use rustls::pki_types::CertificateDer;
use std::fmt;

/// The URI scheme of node identities.
pub const SCHEME: &str = "ferrocast://";

/// Longest node id a certificate may name (ids are keys in the store and labels in logs).
pub const MAX_NODE_ID: usize = 128;

/// What a node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRole {
    /// A controller replica (serves the gRPC API).
    Controller,
    /// An origin (RTMP ingest, relay server).
    Origin,
    /// An edge (viewers, relay client).
    Edge,
}

impl NodeRole {
    /// The name in the URI: `controller`, `origin` or `edge`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Origin => "origin",
            Self::Edge => "edge",
        }
    }

    /// Parses `controller`, `origin` or `edge`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "controller" => Some(Self::Controller),
            "origin" => Some(Self::Origin),
            "edge" => Some(Self::Edge),
            _ => None,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node: its role and id, as `ferrocast://ROLE/NODE_ID` names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIdentity {
    /// The role.
    pub role: NodeRole,
    /// The node id (`--node-id`): 1 to [`MAX_NODE_ID`] of letters, digits, `.`, `_`, `-`.
    pub id: String,
}

/// Whether `id` may be a node id in a certificate: what a hostname, a pod name or a
/// StatefulSet ordinal looks like, nothing that needs escaping in a URI or a log line.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl NodeIdentity {
    /// An identity, when `id` is a valid node id.
    pub fn new(role: NodeRole, id: &str) -> Option<Self> {
        valid_node_id(id).then(|| Self {
            role,
            id: id.to_owned(),
        })
    }

    /// Parses `ferrocast://ROLE/NODE_ID` (nothing after the id); anything else is none.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(SCHEME)?;
        let (role, id) = rest.split_once('/')?;
        Self::new(NodeRole::parse(role)?, id)
    }

    /// Parses `ROLE:ID` (the `ferrocast certs --node` form).
    pub fn from_spec(spec: &str) -> Option<Self> {
        let (role, id) = spec.split_once(':')?;
        Self::new(NodeRole::parse(role)?, id)
    }

    /// `ferrocast://ROLE/NODE_ID`.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}", self.role, self.id)
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.id)
    }
}

/// Every node identity a DER certificate names (its `ferrocast://` SAN URIs, in order;
/// other URIs are ignored). Empty for a certificate that names none, or that does not
/// parse. Asked only of certificates a handshake has verified.
pub fn identities(cert: &CertificateDer<'_>) -> Vec<NodeIdentity> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    let mut out: Vec<NodeIdentity> = ee
        .valid_uri_names()
        .filter_map(NodeIdentity::from_uri)
        .collect();
    out.dedup();
    out
}

/// Whether any identity of the certificate has `role`.
pub fn has_role(cert: &CertificateDer<'_>, roles: &[NodeRole]) -> bool {
    identities(cert).iter().any(|i| roles.contains(&i.role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_only_in_the_contract_form() {
        let id = NodeIdentity::from_uri("ferrocast://origin/o-1").unwrap();
        assert_eq!((id.role, id.id.as_str()), (NodeRole::Origin, "o-1"));
        assert_eq!(id.uri(), "ferrocast://origin/o-1");
        assert_eq!(
            NodeIdentity::from_spec("edge:edge-0.pod"),
            NodeIdentity::new(NodeRole::Edge, "edge-0.pod")
        );
        for bad in [
            "ferrocast://origin/",
            "ferrocast://origin",
            "ferrocast://shield/x",
            "ferrocast://origin/a/b",
            "ferrocast://origin/a?b",
            "https://origin/a",
            "FERROCAST://origin/a",
            "ferrocast://Origin/a",
        ] {
            assert_eq!(NodeIdentity::from_uri(bad), None, "{bad}");
        }
        assert_eq!(
            NodeIdentity::from_uri(&format!("ferrocast://edge/{}", "a".repeat(129))),
            None
        );
        assert_eq!(NodeIdentity::from_spec("origin"), None);
        assert_eq!(NodeIdentity::from_spec("root:x"), None);
    }

    #[test]
    fn garbage_names_no_one() {
        assert!(identities(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])).is_empty());
        assert!(identities(&CertificateDer::from(Vec::new())).is_empty());
    }
}
