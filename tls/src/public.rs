//! TLS toward the Internet rather than the cluster: the server configuration viewers
//! (HTTPS) and publishers (RTMPS) meet, with a public certificate that follows its
//! files, and the client configuration for a service outside the cluster (the admission
//! webhook), trusting a given CA or the system bundle.

use crate::reload::CertStore;
use crate::{config_err, provider, read_certs, TlsError};
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

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
