//! The role checks on top of the cluster CA's chain checks: a relay server takes only
//! edges as clients, a relay client only an origin as its server, a node only a
//! controller as its gRPC server ([`WrongRole`] says who was met instead). The server's
//! DNS name is not checked: nodes are addressed by IPs that change (pods), and the role
//! is what matters.

use crate::identity::{self, NodeRole};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::Arc;

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
pub(crate) struct RoleClientVerifier {
    pub(crate) chain: Arc<dyn ClientCertVerifier>,
    pub(crate) roles: &'static [NodeRole],
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
pub(crate) struct ClusterServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) role: NodeRole,
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
