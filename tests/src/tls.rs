//! TLS from the client side, for the tests of TLS on every hop: which certificate a
//! server presents to a new connection (a recording verifier that trusts anything, since
//! the point is to see the certificate, not to judge it), an HTTP/1.1 keep-alive
//! connection over TLS to show an established connection outlives a certificate reload,
//! and where grpcurl is.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Accepts any server certificate and remembers the leaf.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("lock") = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A finished TLS connection (blocking, with 10 s socket timeouts) and the leaf
/// certificate the server presented.
pub struct TlsClient {
    /// The stream.
    pub stream: StreamOwned<ClientConnection, TcpStream>,
    /// The server's leaf certificate.
    pub cert: CertificateDer<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Connects to `addr` offering `alpn` and completes the handshake.
    pub fn connect(addr: SocketAddr, alpn: &[&[u8]]) -> std::io::Result<Self> {
        let recorder = Arc::new(Recorder::default());
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        let conn = ClientConnection::new(Arc::new(cfg), name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        let cert = recorder
            .seen
            .lock()
            .expect("lock")
            .clone()
            .ok_or_else(|| std::io::Error::other("no server certificate"))?;
        Ok(Self { stream, cert })
    }

    /// One HTTP/1.1 keep-alive GET on this connection: the status code.
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<u16> {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"
        )?;
        self.stream.flush()?;
        // Headers, then a Content-Length body (the edge answers these with one).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                return Err(std::io::Error::other("closed before the response"));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok(status)
    }
}

/// The first certificate of a PEM file.
pub fn first_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .next()
        .unwrap_or_else(|| panic!("{}: no certificate", path.display()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The grpcurl binary: `$FERROCAST_GRPCURL`, else `target/tools/grpcurl` (where
/// `scripts/test.sh` puts it). Panics when missing: the grpcurl tests must not be
/// skipped silently.
pub fn grpcurl() -> PathBuf {
    let path = std::env::var_os("FERROCAST_GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/grpcurl"));
    assert!(
        path.is_file(),
        "grpcurl not found at {} (scripts/test.sh fetches it; or set FERROCAST_GRPCURL)",
        path.display()
    );
    path
}
