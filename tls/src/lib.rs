//! Cluster TLS: the certificates nodes present to each other on the origin ↔ edge relay
//! and to the controller's gRPC API. Every node holds the cluster CA, its own certificate
//! chain and key, read from a `--tls-dir` (`ca.pem`, `node.pem`, `node-key.pem`, as
//! `ferrocast certs` writes them: [`pki`]) or generated for development by
//! [`generate_dev`]. Viewer-facing HTTPS and RTMPS use a public certificate
//! ([`public_server_config`]).
//!
//! Both directions are authenticated: the server requires a client certificate chained
//! to the cluster CA, and the client trusts only that CA. On top of the chain, each side
//! checks the other's role as its certificate names it ([`identity`]): the relay server
//! takes only edges as clients, a relay client takes only an origin as server, and a
//! node takes only a controller as its gRPC server. The server's DNS name is not
//! checked: nodes are addressed by IPs that change (pods), and the role is what matters.
//!
//! Certificates loaded from files are reloaded when the files change ([`reload`]); the
//! CA files are read once.
//!
//! This file owns the `--tls-dir` files and the relay's configurations; `verify` holds
//! the role checks, `dev` the development certificates, `public` the TLS toward the
//! Internet (viewers, publishers, the admission webhook), [`grpc`] the controller API's.

mod der;
mod dev;
pub mod grpc;
pub mod identity;
pub mod pki;
mod public;
pub mod reload;
mod verify;

pub use dev::{dev_identities, generate_dev, generate_operator_dev, DEV_NODE_ID, OPERATOR_CA_FILE};
pub use public::{
    https_server_config, public_client_config, public_server_config, SYSTEM_CA_BUNDLE,
};
pub use verify::{WrongRole, RELAY_CLIENT_ROLES};

pub(crate) use dev::write_private;
pub(crate) use verify::{ClusterServerVerifier, RoleClientVerifier};

use identity::NodeRole;
use reload::CertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN id of the origin ↔ edge relay.
pub const RELAY_ALPN: &[u8] = b"ferrocast-relay/1";

/// File names inside a `--tls-dir`.
pub const CA_FILE: &str = "ca.pem";
/// This node's certificate chain (leaf first).
pub const CERT_FILE: &str = "node.pem";
/// This node's private key (PKCS#8, SEC1 or PKCS#1).
pub const KEY_FILE: &str = "node-key.pem";

/// Why the cluster TLS material could not be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("tls configuration: {0}")]
    Config(String),
}

/// Where a node's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Cluster CA certificate(s), PEM.
    pub ca: PathBuf,
    /// This node's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// This node's private key, PEM.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join(CA_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }

    /// The node identities the certificate names (`ferrocast://ROLE/ID`; empty when it
    /// names none).
    pub fn identities(&self) -> Result<Vec<identity::NodeIdentity>, TlsError> {
        let certs = read_certs(&self.cert)?;
        Ok(certs.first().map(identity::identities).unwrap_or_default())
    }

    /// Reads and checks the three files; the certificate and key are reloaded when they
    /// change.
    pub fn load(&self) -> Result<ClusterTls, TlsError> {
        if let Some(key) = self.ca.parent().map(|d| d.join(pki::CA_KEY_FILE)) {
            if key.exists() {
                tracing::warn!(ca_key = %key.display(),
                    "the cluster CA's key is in this node's TLS directory: whoever reads it can \
                     issue certificates for any node; give nodes only ca.pem, node.pem and node-key.pem");
            }
        }
        let ca = read_certs(&self.ca)?;
        let cert = Arc::new(CertStore::from_files(&self.cert, &self.key)?);
        let tls = ClusterTls { ca, cert };
        // Fail now, naming the files, rather than at the first connection.
        tls.server_config()?;
        tls.client_config()?;
        Ok(tls)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: format!("no usable private key: {e}"),
    })
}

/// Reads every certificate of a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// A node's cluster identity: the CA it trusts and the certificate it presents (shared
/// by clones, and reloaded from its files when they change).
#[derive(Debug, Clone)]
pub struct ClusterTls {
    ca: Vec<CertificateDer<'static>>,
    cert: Arc<CertStore>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

impl ClusterTls {
    /// Material already in memory (DER), e.g. from a secret store.
    pub fn from_der(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            ca,
            cert: Arc::new(CertStore::fixed(chain, key)?),
        })
    }

    /// The cluster CA certificates.
    pub fn ca(&self) -> &[CertificateDer<'static>] {
        &self.ca
    }

    /// The certificate this node presents (its store, which follows the files).
    pub fn cert(&self) -> &Arc<CertStore> {
        &self.cert
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone()).map_err(config_err)?;
        }
        Ok(Arc::new(roots))
    }

    /// TLS 1.3 server config for the relay: requires a client certificate chained to
    /// the cluster CA that names an edge ([`RELAY_CLIENT_ROLES`]); ALPN
    /// `ferrocast-relay/1`.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let chain = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(config_err)?;
        let verifier = Arc::new(RoleClientVerifier {
            chain,
            roles: RELAY_CLIENT_ROLES,
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.cert.clone());
        cfg.alpn_protocols = vec![RELAY_ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }

    /// TLS 1.3 client config for the relay: trusts only the cluster CA, and only a
    /// server certificate that names an origin; presents this node's certificate; ALPN
    /// `ferrocast-relay/1`.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = provider();
        let verifier = Arc::new(ClusterServerVerifier {
            roots: self.roots()?,
            provider: provider.clone(),
            role: NodeRole::Origin,
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(self.cert.clone());
        cfg.alpn_protocols = vec![RELAY_ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, ServerConnection};

    /// Runs a TLS handshake in memory; the first error either side raises.
    fn handshake(client: &ClusterTls, server: &ClusterTls) -> Result<Vec<u8>, rustls::Error> {
        let name = ServerName::try_from("localhost").unwrap();
        let c = ClientConnection::new(client.client_config().unwrap(), name)?;
        let s = ServerConnection::new(server.server_config().unwrap())?;
        pump(c, s)
    }

    /// Moves TLS records between `c` and `s` until both finished the handshake: the
    /// server's ALPN choice, or the first error either side raises.
    fn pump(mut c: ClientConnection, mut s: ServerConnection) -> Result<Vec<u8>, rustls::Error> {
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(s.alpn_protocol().unwrap_or_default().to_vec());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn same_ca_handshakes_with_alpn() {
        let tls = generate_dev(None, &["origin-0".into()]).unwrap();
        assert_eq!(handshake(&tls, &tls).unwrap(), RELAY_ALPN);
    }

    #[test]
    fn client_cert_from_another_ca_is_refused() {
        let cluster = generate_dev(None, &[]).unwrap();
        let other = generate_dev(None, &[]).unwrap();
        // Trusts the right CA, but presents a certificate the cluster CA never issued.
        let intruder = ClusterTls {
            ca: cluster.ca.clone(),
            cert: other.cert.clone(),
        };
        let err = handshake(&intruder, &cluster).unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "unexpected error {err:?}"
        );
        // And a client trusting another CA refuses the cluster's server.
        let err = handshake(&other, &cluster).unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    /// A node of `ca` naming `who` (`ROLE:ID`).
    fn node(ca: &pki::ClusterCa, who: &[&str]) -> ClusterTls {
        let ids: Vec<_> = who
            .iter()
            .map(|w| identity::NodeIdentity::from_spec(w).unwrap())
            .collect();
        let cert = ca.issue(&ids, &[], 1).unwrap();
        ClusterTls::from_der(
            vec![ca.cert().clone()],
            vec![cert.cert_der.clone()],
            cert.private_key().unwrap(),
        )
        .unwrap()
    }

    fn wrong_role(err: rustls::Error) -> String {
        match err {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(e)) => {
                e.0.downcast_ref::<WrongRole>()
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| panic!("not a role error: {e:?}"))
            }
            e => panic!("not a certificate error: {e:?}"),
        }
    }

    #[test]
    fn relay_peers_check_each_others_role() {
        let ca = pki::ClusterCa::generate("test CA", 1).unwrap();
        let (origin, edge) = (node(&ca, &["origin:o1"]), node(&ca, &["edge:e1"]));
        let (controller, nobody) = (node(&ca, &["controller:c1"]), node(&ca, &[]));
        assert_eq!(handshake(&edge, &origin).unwrap(), RELAY_ALPN);
        // An origin's certificate is no edge on the relay; nor is a certificate of no one.
        let msg = wrong_role(handshake(&origin, &origin).unwrap_err());
        assert!(
            msg.contains("no edge identity") && msg.contains("origin/o1"),
            "{msg}"
        );
        let msg = wrong_role(handshake(&nobody, &origin).unwrap_err());
        assert!(msg.contains("names nothing"), "{msg}");
        // An edge checks that its server is an origin.
        let msg = wrong_role(handshake(&edge, &edge).unwrap_err());
        assert!(msg.contains("no origin identity"), "{msg}");
        let msg = wrong_role(handshake(&edge, &controller).unwrap_err());
        assert!(msg.contains("controller/c1"), "{msg}");
        // Nodes take only a controller as their gRPC server.
        let grpc = |client: &ClusterTls, server: &ClusterTls| {
            let name = ServerName::try_from("localhost").unwrap();
            let c = ClientConnection::new(client.grpc_client_config().unwrap(), name).unwrap();
            let (cfg, _) = server.grpc_server_config(&[]).unwrap();
            pump(c, ServerConnection::new(cfg).unwrap()).map(|_| ())
        };
        assert!(grpc(&edge, &controller).is_ok());
        let msg = wrong_role(grpc(&edge, &origin).unwrap_err());
        assert!(msg.contains("no controller identity"), "{msg}");
        // Development certificates are every role (standalone is all three).
        let dev = generate_dev(None, &[]).unwrap();
        assert_eq!(handshake(&dev, &dev).unwrap(), RELAY_ALPN);
    }

    #[test]
    fn written_files_load_back() {
        let dir = std::env::temp_dir().join(format!("ferrocast-tls-{}", std::process::id()));
        let generated = generate_dev(Some(&dir), &["edge-1.example".into()]).unwrap();
        let loaded = TlsFiles::in_dir(&dir).load().unwrap();
        assert_eq!(loaded.ca, generated.ca);
        assert_eq!(loaded.cert.current().cert, generated.cert.current().cert);
        assert_eq!(handshake(&loaded, &generated).unwrap(), RELAY_ALPN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key must not be group/world readable");
        }
        std::fs::write(dir.join(CA_FILE), "not pem").unwrap();
        let err = TlsFiles::in_dir(&dir).load().unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
