//! TLS on the controller's gRPC API: the server configuration (client certificates from
//! the cluster CA for nodes, from an optional operator CA for operators, and none for
//! callers with a bearer token), who a verified client certificate says the caller is
//! ([`PeerClassifier`]), and a connector that gives tonic channels a TLS stream (nodes
//! with their cluster certificate, `ferrocast ctl` with an operator CA and certificate).
//!
//! Operator identities: a certificate issued by the operator CA whose subject common
//! name is `admin:NAME` or `read:NAME` ([`OperatorIdentity`]) acts with that role as
//! `cert:NAME`. The operator CA is separate from the cluster CA, so a node's certificate
//! never makes its holder an operator.

use crate::der::tlv;
use crate::{
    config_err, provider, read_certs, read_key, ClusterServerVerifier, ClusterTls, TlsError,
};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

/// ALPN id of gRPC (HTTP/2 over TLS).
pub const H2_ALPN: &[u8] = b"h2";

/// What an operator certificate grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorGrant {
    /// Every operator call.
    Admin,
    /// The reads only.
    Read,
}

impl OperatorGrant {
    /// `admin` or `read`, as in the common name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Read => "read",
        }
    }
}

/// An operator named by a certificate's common name `ROLE:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorIdentity {
    /// The role.
    pub role: OperatorGrant,
    /// Who: 1 to 64 of letters, digits, `.`, `_`, `@`, `-`.
    pub name: String,
}

impl OperatorIdentity {
    /// Parses `admin:NAME` or `read:NAME`; anything else is no operator identity.
    pub fn parse(cn: &str) -> Option<Self> {
        let (role, name) = cn.split_once(':')?;
        let role = match role {
            "admin" => OperatorGrant::Admin,
            "read" => OperatorGrant::Read,
            _ => return None,
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
        if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
            return None;
        }
        Some(Self {
            role,
            name: name.to_owned(),
        })
    }
}

/// Who is at the other end of a gRPC connection, by its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No certificate (operators with a bearer token, health checks).
    Anonymous,
    /// A certificate of the cluster CA: a node.
    Node,
    /// An operator certificate with an identity.
    Operator(OperatorIdentity),
    /// An operator CA's certificate whose common name is no identity (given here).
    Unrecognized(String),
}

/// Tells nodes from operators by the CA that issued a verified client certificate.
#[derive(Debug, Clone)]
pub struct PeerClassifier {
    cluster: Arc<dyn ClientCertVerifier>,
    operator: Option<Arc<dyn ClientCertVerifier>>,
}

impl PeerClassifier {
    /// Classifies the certificate chain a handshake verified (leaf first).
    pub fn classify(&self, chain: Option<&[CertificateDer<'_>]>) -> Peer {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return Peer::Anonymous;
        };
        let now = UnixTime::now();
        let cn = subject_common_name(leaf);
        if let Some(op) = &self.operator {
            if op.verify_client_cert(leaf, intermediates, now).is_ok() {
                // With one CA for both (a deliberate choice), only a `ROLE:NAME` name
                // makes an operator; other certificates of that CA are nodes.
                match cn.as_deref().and_then(OperatorIdentity::parse) {
                    Some(id) => return Peer::Operator(id),
                    None if self
                        .cluster
                        .verify_client_cert(leaf, intermediates, now)
                        .is_ok() =>
                    {
                        return Peer::Node
                    }
                    None => return Peer::Unrecognized(cn.unwrap_or_default()),
                }
            }
        }
        if self
            .cluster
            .verify_client_cert(leaf, intermediates, now)
            .is_ok()
        {
            Peer::Node
        } else {
            Peer::Unrecognized(cn.unwrap_or_default())
        }
    }
}

fn roots(certs: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut r = RootCertStore::empty();
    for c in certs {
        r.add(c.clone()).map_err(config_err)?;
    }
    Ok(Arc::new(r))
}

fn client_verifier(
    certs: &[CertificateDer<'static>],
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let b = WebPkiClientVerifier::builder_with_provider(roots(certs)?, provider());
    let b = if optional {
        b.allow_unauthenticated()
    } else {
        b
    };
    b.build().map_err(config_err)
}

impl ClusterTls {
    /// The controller's gRPC server configuration: this node's certificate (reloaded
    /// with its files), ALPN `h2`, TLS 1.2 and 1.3. A client certificate is optional at
    /// the handshake (bearer-token operators and health probes have none) but must chain
    /// to the cluster CA or to `operator_ca` when one is presented; the calls check what
    /// the [`PeerClassifier`] makes of it.
    pub fn grpc_server_config(
        &self,
        operator_ca: &[CertificateDer<'static>],
    ) -> Result<(Arc<rustls::ServerConfig>, PeerClassifier), TlsError> {
        let mut all = self.ca.clone();
        all.extend(operator_ca.iter().cloned());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_client_cert_verifier(client_verifier(&all, true)?)
            .with_cert_resolver(self.cert.clone());
        cfg.alpn_protocols = vec![H2_ALPN.to_vec()];
        let classifier = PeerClassifier {
            cluster: client_verifier(&self.ca, false)?,
            operator: match operator_ca {
                [] => None,
                ca => Some(client_verifier(ca, false)?),
            },
        };
        Ok((Arc::new(cfg), classifier))
    }

    /// A node's client configuration for the controller: trusts the cluster CA and only a
    /// certificate that names a controller (the DNS name is not checked, as on the
    /// relay), presents this node's certificate, ALPN `h2`.
    pub fn grpc_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = provider();
        let verifier = Arc::new(ClusterServerVerifier {
            roots: roots(&self.ca)?,
            provider: provider.clone(),
            role: crate::identity::NodeRole::Controller,
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(self.cert.clone());
        cfg.alpn_protocols = vec![H2_ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// An operator's client configuration (`ferrocast ctl --ca [--cert --key]`): trusts the
/// CA in `ca` and checks the controller's name as given in its URL, as any TLS client
/// does; presents the certificate and key when given. ALPN `h2`.
pub fn operator_client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_root_certificates(roots(&read_certs(ca)?)?);
    let mut cfg = match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(config_err)?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![H2_ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// Connects tonic channels over TLS (`Endpoint::connect_with_connector`): TCP to the
/// URI's host and port (443 when none, no Nagle), then the handshake with `config`,
/// naming the host for SNI and the certificate check. hyper-rustls' connector, the one
/// the admission webhook's client uses too, with `https` enforced: this connector never
/// speaks plaintext.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    inner: HttpsConnector<HttpConnector>,
}

impl TlsConnector {
    /// A connector with this client configuration (its ALPN ids offered as they are).
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        let mut tcp = HttpConnector::new();
        // hyper-rustls takes https:// URIs from the TCP connector and wraps them.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        // From a configuration (not the builder, which refuses one with ALPN set).
        let mut inner = HttpsConnector::from((tcp, config));
        inner.enforce_https();
        Self { inner }
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<http::Uri>>::Response;
    type Error = <HttpsConnector<HttpConnector> as tower_service::Service<http::Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as tower_service::Service<http::Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        tower_service::Service::call(&mut self.inner, uri)
    }
}

/// The subject's common name of a DER certificate (the first CN attribute), if it has
/// one in a string type. A small DER walk over the fields before the subject; the
/// certificate was verified before this is asked.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, cert, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xA0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (tag, mut subject, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    while !subject.is_empty() {
        let (tag, mut rdn, after) = tlv(subject)?;
        subject = after;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, atv, after) = tlv(rdn)?;
            rdn = after;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = tlv(atv)?;
            if tag != OID || oid != CN_OID {
                continue;
            }
            let (tag, value, _) = tlv(value)?;
            // UTF8String, PrintableString, IA5String, TeletexString (as Latin-1-ish ASCII).
            return match tag {
                0x0C | 0x13 | 0x16 | 0x14 => std::str::from_utf8(value).ok().map(str::to_owned),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_follow_the_rule() {
        let id = OperatorIdentity::parse("admin:alice").unwrap();
        assert_eq!((id.role, id.name.as_str()), (OperatorGrant::Admin, "alice"));
        let id = OperatorIdentity::parse("read:bob@example.org").unwrap();
        assert_eq!(id.role, OperatorGrant::Read);
        for bad in [
            "alice",
            "root:alice",
            "admin:",
            "admin:a b",
            "read:a:b",
            ":x",
        ] {
            assert_eq!(OperatorIdentity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn nodes_and_operators_are_told_apart_by_their_ca() {
        let dir = std::env::temp_dir().join(format!("ferrocast-ops-{}", std::process::id()));
        let cluster = crate::generate_dev(None, &[]).unwrap();
        crate::generate_operator_dev(&dir, &["admin:alice".into(), "read:bob".into()]).unwrap();
        let op_ca = read_certs(&dir.join(crate::OPERATOR_CA_FILE)).unwrap();
        let (_, classifier) = cluster.grpc_server_config(&op_ca).unwrap();
        let alice = read_certs(&dir.join("operator-admin-alice.pem")).unwrap();
        assert_eq!(
            subject_common_name(&alice[0]).as_deref(),
            Some("admin:alice")
        );
        assert_eq!(
            classifier.classify(Some(&alice)),
            Peer::Operator(OperatorIdentity::parse("admin:alice").unwrap())
        );
        let bob = read_certs(&dir.join("operator-read-bob.pem")).unwrap();
        assert_eq!(
            classifier.classify(Some(&bob)),
            Peer::Operator(OperatorIdentity::parse("read:bob").unwrap())
        );
        let node = cluster.cert().current().cert.clone();
        assert_eq!(
            subject_common_name(&node[0]).as_deref(),
            Some("ferrocast development node")
        );
        assert_eq!(classifier.classify(Some(&node)), Peer::Node);
        assert_eq!(classifier.classify(None), Peer::Anonymous);
        // Without an operator CA, an operator's certificate is nobody.
        let (_, nodes_only) = cluster.grpc_server_config(&[]).unwrap();
        assert!(matches!(
            nodes_only.classify(Some(&alice)),
            Peer::Unrecognized(_)
        ));
        assert!(crate::generate_operator_dev(&dir, &["root:eve".into()]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn der_walk_survives_garbage() {
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[0x30, 0x03, 0x30, 0x01]), None);
    }
}
