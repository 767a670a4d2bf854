//! Cluster TLS: the certificates nodes present to each other on the origin ↔ edge relay
//! and to the controller's gRPC API. Every node holds the cluster CA, its own certificate
//! chain and key, read from a `--tls-dir` (`ca.pem`, `node.pem`, `node-key.pem`) or
//! generated for development by [`generate_dev`]. Viewer-facing HTTPS and RTMPS use a
//! public certificate ([`public_server_config`]).
//!
//! Both directions are authenticated: the server requires a client certificate chained
//! to the cluster CA, and the client trusts only that CA. Clients check the chain and
//! the serverAuth usage but not the server's name: nodes are addressed by IPs that
//! change (pods), and a private cluster CA only issues certificates to cluster nodes.
//!
//! Certificates loaded from files are reloaded when the files change ([`reload`]); the
//! CA files are read once.

pub mod grpc;
pub mod reload;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use reload::CertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
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

    /// Reads and checks the three files; the certificate and key are reloaded when they
    /// change.
    pub fn load(&self) -> Result<ClusterTls, TlsError> {
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
    /// the cluster CA; ALPN `ferrocast-relay/1`.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(config_err)?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.cert.clone());
        cfg.alpn_protocols = vec![RELAY_ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }

    /// TLS 1.3 client config for the relay: trusts only the cluster CA and presents
    /// this node's certificate; ALPN `ferrocast-relay/1`.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = provider();
        let verifier = Arc::new(ClusterServerVerifier {
            roots: self.roots()?,
            provider: provider.clone(),
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

/// Checks that the server's certificate chains to the cluster CA and is valid for
/// serverAuth; the name is not checked (see the module docs).
#[derive(Debug)]
struct ClusterServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
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

/// A fresh self-signed development CA named `name`: its certificate and key.
fn dev_ca(name: &str) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key)?;
    Ok((ca, ca_key))
}

/// Generates a development cluster: a fresh CA and one node certificate signed by it,
/// valid for client and server use, with SANs `localhost`, `127.0.0.1`, `::1` and
/// `names`. Written to `dir` (created if needed; the key file readable by the owner
/// only) when given.
pub fn generate_dev(dir: Option<&Path>, names: &[String]) -> Result<ClusterTls, TlsError> {
    let (ca, ca_key) = dev_ca("Ferrocast development cluster CA")?;

    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    sans.extend(names.iter().filter(|n| !n.is_empty()).cloned());
    sans.dedup();
    let node_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ferrocast node");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node = params.signed_by(&node_key, &ca, &ca_key)?;

    if let Some(dir) = dir {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let files = TlsFiles::in_dir(dir);
        std::fs::write(&files.ca, ca.pem()).map_err(io(&files.ca))?;
        std::fs::write(&files.cert, node.pem()).map_err(io(&files.cert))?;
        write_private(&files.key, node_key.serialize_pem().as_bytes()).map_err(io(&files.key))?;
        // The CA key is not written: a development cluster is regenerated, not extended.
    }
    ClusterTls::from_der(
        vec![ca.der().clone()],
        vec![node.der().clone()],
        PrivateKeyDer::try_from(node_key.serialize_der()).map_err(config_err)?,
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
        let mut c = ClientConnection::new(client.client_config().unwrap(), name)?;
        let mut s = ServerConnection::new(server.server_config().unwrap())?;
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
