//! The controller's configuration ([`ControllerConfig`], [`GrpcTls`]) and its validation
//! ([`ControllerConfig::validate`]): every field is checked before anything binds, and a
//! bad value is a [`ConfigError`] naming the field as its flag is named.

use crate::etcd::{EtcdConfig, EtcdConfigError};
use crate::region::RegionCidr;
use ferrocast_runtime::http::ServerLimits;
use ferrocast_tls::ClusterTls;
use std::net::SocketAddr;
use std::time::Duration;

/// Controller configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// gRPC (node and operator APIs, health, reflection) listen address (default
    /// 127.0.0.1:50051: without TLS the node API knows no caller, so it stays on loopback
    /// unless [`ControllerConfig::insecure_node_api`]; the CLI makes it 0.0.0.0:50051
    /// with `--tls-dir`).
    pub grpc_listen: SocketAddr,
    /// Admin HTTP (`/healthz`, `/readyz`, `/metrics`) listen address.
    pub http_listen: SocketAddr,
    /// etcd endpoints, TLS and user; no endpoint: in-memory store and a lone,
    /// always-leading controller.
    pub etcd: EtcdConfig,
    /// TTL of node leases (and of the leader's lease on etcd).
    pub lease_ttl: Duration,
    /// Bearer token operator calls must carry (admin role); `None`: operator calls are open.
    pub operator_token: Option<String>,
    /// A bearer token allowed only the operator reads; needs `operator_token`.
    pub operator_read_token: Option<String>,
    /// Whether publishers need a credential (`--publish-auth open|closed`).
    pub publish_auth: crate::access::PublishAuth,
    /// The gRPC address followers redirect writes to; defaults to the bound address.
    pub advertise: Option<String>,
    /// Client address blocks → viewer region (`--region-cidr 10.1.0.0/16=eu-west`), for
    /// `/play` and `Resolve`; the longest matching prefix wins. Default: none.
    pub region_cidrs: Vec<RegionCidr>,
    /// A request header carrying the viewer's region, set by a trusted load balancer
    /// (e.g. `x-client-region`); it wins over `region_cidrs`. Default: none (never trusted).
    pub region_header: Option<String>,
    /// TLS on the gRPC port (`--tls-dir`, `--operator-ca`); `None`: plaintext.
    pub tls: Option<GrpcTls>,
    /// Serve the node API without TLS on an address other than loopback
    /// (`--insecure-node-api`): any client that reaches it is then any node. Default
    /// false: such a configuration is refused.
    pub insecure_node_api: bool,
    /// How often the leader compacts the store's history, keeping one period of it
    /// (default 5 minutes, as kube-apiserver compacts its etcd).
    pub compact_every: Duration,
    /// Connection limits and timeouts of the admin HTTP port (`/play`, probes,
    /// `/metrics`): the `--http-*` flags origins and edges take, with a smaller
    /// connection cap by default (operators, probes and `/play` redirects, not viewers).
    pub http: ServerLimits,
}

/// TLS on the controller's gRPC port.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// The cluster identity: the certificate the controller presents (reloaded when its
    /// files change) and the CA node client certificates must chain to.
    pub cluster: ClusterTls,
    /// CA certificates of operator client certificates (`--operator-ca`); empty: none,
    /// operators use bearer tokens.
    pub operator_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8090)),
            etcd: EtcdConfig::default(),
            lease_ttl: Duration::from_secs(5),
            compact_every: Duration::from_secs(300),
            http: {
                let defaults = ServerLimits::default();
                ServerLimits {
                    max_connections: defaults.max_connections.min(1024),
                    drain_grace: Duration::from_secs(5),
                    name: "controller",
                    ..defaults
                }
            },
            operator_token: None,
            operator_read_token: None,
            publish_auth: crate::access::PublishAuth::Open,
            advertise: None,
            region_cidrs: Vec::new(),
            region_header: None,
            tls: None,
            insecure_node_api: false,
        }
    }
}

/// A configuration that cannot work, naming the field, or a listener that cannot bind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field has an unusable value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (as its flag is named).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A listener could not bind.
    #[error("cannot bind {field} {addr}: {source}")]
    Bind {
        /// The field naming the address.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

impl ControllerConfig {
    /// Checks every field; nothing is bound before this passes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.lease_ttl < Duration::from_millis(100) || self.lease_ttl > Duration::from_secs(300)
        {
            return invalid("lease-ttl", "must be between 100ms and 300s");
        }
        if self.etcd.is_enabled() && self.lease_ttl < Duration::from_secs(2) {
            return invalid(
                "lease-ttl",
                "must be at least 2s with etcd (its minimum TTL)",
            );
        }
        if let Err(EtcdConfigError::Invalid { field, reason }) = self.etcd.validate() {
            return Err(ConfigError::Invalid { field, reason });
        }
        if let Some(t) = &self.operator_token {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(
                    "operator-token",
                    "must be non-empty, without whitespace or control characters",
                );
            }
        }
        if let Some(t) = &self.operator_read_token {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(
                    "operator-read-token",
                    "must be non-empty, without whitespace or control characters",
                );
            }
            if self.operator_token.is_none() {
                return invalid("operator-read-token", "needs --operator-token (admin) too");
            }
            if self.operator_token.as_ref() == Some(t) {
                return invalid("operator-read-token", "must differ from operator-token");
            }
        }
        if self.advertise.as_deref() == Some("") {
            return invalid("advertise", "is empty");
        }
        if let Some(h) = &self.region_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return invalid("region-header", "is not a valid HTTP header name");
            }
        }
        if let Some(t) = &self.tls {
            if let Err(e) = t.cluster.grpc_server_config(&t.operator_ca) {
                return invalid("tls-dir", &e.to_string());
            }
        }
        if self.tls.is_none() && !self.grpc_listen.ip().is_loopback() && !self.insecure_node_api {
            // Closed by default: NodeService has no caller identity without TLS.
            return invalid(
                "grpc-listen",
                "without --tls-dir the node API takes every caller for the node it claims to \
                 be, so it listens on loopback only; give the controller --tls-dir (node \
                 certificates: ferrocast certs DIR --node ROLE:ID), or --insecure-node-api \
                 on a network only cluster nodes reach",
            );
        }
        if let Err(e) = self.http.validate() {
            return Err(ConfigError::Invalid {
                field: "http",
                reason: e.to_string(),
            });
        }
        let operator_credential = self.operator_token.is_some()
            || self.tls.as_ref().is_some_and(|t| !t.operator_ca.is_empty());
        if !operator_credential && !self.grpc_listen.ip().is_loopback() {
            // Closed by default: an operator API reachable from the network with no
            // credential would let anyone drain nodes, kick publishers and mint keys.
            return invalid(
                "operator-token",
                "the operator API listens beyond loopback, so it needs a credential: \
                 --operator-token (or FERROCAST_OPERATOR_TOKEN) or --operator-ca",
            );
        }
        Ok(())
    }
}
