//! Development certificates: a throw-away cluster CA with one node certificate that is
//! every role ([`generate_dev`], for standalone and tests), and a development operator
//! CA with client certificates for `ferrocast ctl` ([`generate_operator_dev`]). A
//! cluster uses `ferrocast certs` ([`crate::pki`]) instead.

use crate::identity::{self, NodeRole};
use crate::{pki, ClusterTls, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::Path;

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
/// [`crate::grpc::OperatorIdentity`]) into `dir`: `operator-ca.pem`, and
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
        let parsed = crate::grpc::OperatorIdentity::parse(id).ok_or_else(|| {
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

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
