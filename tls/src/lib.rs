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

mod der;
pub mod grpc;
pub mod identity;
pub mod pki;
pub mod reload;

use identity::NodeRole;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use reload::CertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
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

/// Who may be a relay client: edges. Not origins: an origin's certificate must not
/// pull media as if it were an edge (and be counted, admitted and served as one); a
/// tier of origins pulling from origins (shields) would get a role of its own.
pub const RELAY_CLIENT_ROLES: &[NodeRole] = &[NodeRole::Edge];

/// A verified certificate that names none of the roles the peer must have.
#[derive(thiserror::Error)]
#[error(
    "the peer's certificate names no {wanted} identity (ferrocast://{wanted}/ID); it names {found}"
)]
pub struct WrongRole {
    /// The roles that would do.
    pub wanted: String,
    /// What it names (`nothing`, or its identities).
    pub found: String,
}

// rustls shows a certificate error with `{:?}`: the sentence, not the struct.
impl std::fmt::Debug for WrongRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Fails with [`WrongRole`] unless `cert` names one of `roles`.
fn check_role(cert: &CertificateDer<'_>, roles: &[NodeRole]) -> Result<(), rustls::Error> {
    let ids = identity::identities(cert);
    if ids.iter().any(|i| roles.contains(&i.role)) {
        return Ok(());
    }
    let join = |v: Vec<String>| v.join(" or ");
    let err = WrongRole {
        wanted: join(roles.iter().map(|r| r.to_string()).collect()),
        found: match ids.as_slice() {
            [] => "nothing".to_owned(),
            ids => join(ids.iter().map(|i| i.to_string()).collect()),
        },
    };
    Err(rustls::Error::InvalidCertificate(
        rustls::CertificateError::Other(rustls::OtherError(Arc::new(err))),
    ))
}

/// The cluster CA's client check, then the role check.
#[derive(Debug)]
struct RoleClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    roles: &'static [NodeRole],
}

impl ClientCertVerifier for RoleClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        check_role(end_entity, self.roles)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Checks that the server's certificate chains to the cluster CA, is valid for
/// serverAuth and names `role`; the DNS name is not checked (see the module docs).
#[derive(Debug)]
struct ClusterServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    role: NodeRole,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        check_role(end_entity, &[self.role])?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A fresh self-signed development CA named `name`: its certificate and key (valid
/// [`pki::CA_DAYS`] days).
fn dev_ca(name: &str) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    pki::valid_for(&mut ca_params, pki::CA_DAYS);
    let ca = ca_params.self_signed(&ca_key)?;
    Ok((ca, ca_key))
}

/// The node id of development certificates ([`generate_dev`], `ferrocast certs DIR`
/// without `--node`).
pub const DEV_NODE_ID: &str = "dev";

/// The identities of a development certificate: every role, as node [`DEV_NODE_ID`].
/// One process that is origin, edge and embedded controller at once (standalone), or a
/// test that hands one directory to every node, needs a certificate that is all of
/// them; a cluster gets one certificate per node (`ferrocast certs --node ROLE:ID`).
pub fn dev_identities() -> Vec<identity::NodeIdentity> {
    [NodeRole::Controller, NodeRole::Origin, NodeRole::Edge]
        .into_iter()
        .filter_map(|r| identity::NodeIdentity::new(r, DEV_NODE_ID))
        .collect()
}

/// Generates a development cluster: a fresh CA and one node certificate signed by it
/// naming every role ([`dev_identities`]), valid for client and server use for
/// [`pki::DEFAULT_NODE_DAYS`] days, with SANs `localhost`, `127.0.0.1`, `::1` and
/// `names`. Written to `dir` (created if needed; the key file readable by the owner
/// only) when given; the CA key is not kept.
pub fn generate_dev(dir: Option<&Path>, names: &[String]) -> Result<ClusterTls, TlsError> {
    let ca = pki::ClusterCa::generate("Ferrocast development cluster CA", pki::CA_DAYS)?;
    let node = ca.issue(&dev_identities(), names, pki::DEFAULT_NODE_DAYS)?;
    if let Some(dir) = dir {
        node.write_dir(dir, ca.bundle_pem())?;
    }
    ClusterTls::from_der(
        vec![ca.cert().clone()],
        vec![node.cert_der.clone()],
        node.private_key()?,
    )
}

/// The operator CA's file name in the directory [`generate_operator_dev`] writes.
pub const OPERATOR_CA_FILE: &str = "operator-ca.pem";

/// Generates a development operator CA, separate from the cluster CA, and one client
/// certificate per identity (`admin:alice`, `read:bob`; see
/// [`grpc::OperatorIdentity`]) into `dir`: `operator-ca.pem`, and
/// `operator-ROLE-NAME.pem` with `operator-ROLE-NAME-key.pem` for each. An existing
/// operator CA in `dir` is replaced (its key is not kept).
pub fn generate_operator_dev(dir: &Path, identities: &[String]) -> Result<(), TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    let (ca, ca_key) = dev_ca("Ferrocast development operator CA")?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_path = dir.join(OPERATOR_CA_FILE);
    std::fs::write(&ca_path, ca.pem()).map_err(io(&ca_path))?;
    for id in identities {
        let parsed = grpc::OperatorIdentity::parse(id).ok_or_else(|| {
            TlsError::Config(format!(
                "operator identity {id:?}: must be admin:NAME or read:NAME (NAME: letters, digits, . _ @ -)"
            ))
        })?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, id.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        pki::valid_for(&mut params, pki::DEFAULT_NODE_DAYS);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        let stem = format!("operator-{}-{}", parsed.role.as_str(), parsed.name);
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

/// A viewer-facing HTTPS server configuration from PEM files (a public certificate
/// chain and its key, reloaded when they change): TLS 1.2 and 1.3, ALPN `h2` then
/// `http/1.1`.
pub fn https_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    public_server_config(cert, key, &[b"h2", b"http/1.1"])
}

/// A server configuration for clients on the Internet (HTTPS viewers, RTMPS
/// publishers): a public certificate chain and key from PEM files, reloaded when they
/// change; TLS 1.2 and 1.3; no client certificates; the given ALPN ids (none for RTMPS,
/// which has no ALPN id and whose encoders send none).
pub fn public_server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let store = Arc::new(CertStore::from_files(cert, key)?);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The system's CA bundle (Debian, and the distroless image Ferrocast ships in), trusted
/// by a client for a service outside the cluster when it is given no CA.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration for a service outside the cluster (an operator's HTTPS
/// admission webhook): trusts the CA certificates in `ca` or, without one, the system
/// bundle ([`SYSTEM_CA_BUNDLE`]); checks the server's name as any TLS client does; TLS
/// 1.2 and 1.3; no client certificate; the given ALPN ids.
///
/// A certificate of `ca` that rustls cannot use is an error (the operator named that
/// file); the system bundle's unusable entries are skipped, as long as one is left.
pub fn public_client_config(
    ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in read_certs(path)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    path: path.to_owned(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
        None => {
            let path = Path::new(SYSTEM_CA_BUNDLE);
            let (added, _) = roots.add_parsable_certificates(read_certs(path)?);
            if added == 0 {
                return Err(TlsError::Pem {
                    path: path.to_owned(),
                    reason: "no usable CA certificate".into(),
                });
            }
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
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
