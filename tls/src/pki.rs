//! The cluster's certificate authority as `ferrocast certs` uses it: a CA created for
//! development or read from an operator's files (a Kubernetes Secret, Helm's `genCA`, an
//! `openssl` CA), and node certificates issued by it, one per node, each naming its
//! [`NodeIdentity`] and expiring (default [`DEFAULT_NODE_DAYS`] days).
//!
//! Rotation is writing new files: nodes reload their certificate and key when the files
//! change ([`crate::reload`]), so a node certificate is renewed by issuing it again into
//! the node's directory before it expires. A new CA is introduced as a bundle: `ca.pem`
//! holding the old and the new CA certificates is rolled out to every node first (the CA
//! file is read at start, so nodes restart one at a time), then node certificates of the
//! new CA, then the old CA leaves the bundle. With a bundle in `DIR/ca.pem`, the
//! certificate that matches `DIR/ca-key.pem` is the one that signs.
//!
//! Keys: rcgen on ring reads PKCS#8 only, while Helm's `genCA` writes a PKCS#1 RSA key and
//! `openssl ecparam -genkey` a SEC1 EC key. Both are the inner part of a PKCS#8 document,
//! so they are wrapped (a few DER bytes, `pkcs8_of`) rather than bringing another key
//! parser. The issuer's name must be byte-equal to the CA certificate's subject for a
//! chain to build, so it is rebuilt from that subject and every issued certificate is
//! verified against the CA before it is written.

use crate::der::{self, tlv};
use crate::identity::NodeIdentity;
use crate::{config_err, provider, read, write_private, TlsError, CA_FILE};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The CA's private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How long a node certificate is valid unless told otherwise.
pub const DEFAULT_NODE_DAYS: u32 = 90;
/// How long a CA `ferrocast certs` creates is valid.
pub const CA_DAYS: u32 = 3650;
/// Longest validity `--days` accepts (a node certificate is meant to be renewed).
pub const MAX_NODE_DAYS: u32 = 3650;
/// Node certificates start this long before they are issued (clocks differ).
const BACKDATE: Duration = Duration::from_secs(3600);

/// A cluster CA that can issue node certificates.
pub struct ClusterCa {
    /// Every certificate of `ca.pem`, PEM, as read or created (a bundle during rotation).
    bundle_pem: String,
    /// The certificate matching the key.
    cert: CertificateDer<'static>,
    /// The issuer as rcgen signs with it (its subject rebuilt from `cert`).
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

/// A node certificate and its key, as issued.
pub struct NodeCert {
    /// Who it names.
    pub identities: Vec<NodeIdentity>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The key, PKCS#8 PEM.
    pub key_pem: String,
    /// The key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Valid from [`BACKDATE`] ago for `days` days. Dates are offsets from 1970 in rcgen's
/// date type, which this crate need not name (no direct `time` dependency).
pub(super) fn valid_for(params: &mut CertificateParams, days: u32) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let now = unix_now();
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + Duration::from_secs(u64::from(days) * 86_400);
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.to_owned();
    move |source| TlsError::Io { path, source }
}

fn pem_err(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl ClusterCa {
    /// A fresh self-signed CA named `name`, valid `days` days (ECDSA P-256).
    pub fn generate(name: &str, days: u32) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        // Node certificates only: no intermediate CA below this one.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        valid_for(&mut params, days);
        let issuer = params.self_signed(&key)?;
        Ok(Self {
            bundle_pem: issuer.pem(),
            cert: issuer.der().clone(),
            issuer,
            key,
        })
    }

    /// Reads `DIR/ca.pem` and `DIR/ca-key.pem`, or, when neither exists, creates a
    /// development CA there (the key readable by its owner only). True when created.
    /// Existing files are only read: DIR may be a read-only Secret mount.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), TlsError> {
        let (cert, key) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
        match (cert.exists(), key.exists()) {
            (true, true) => Ok((Self::load(&cert, &key)?, false)),
            (false, false) => {
                let ca = Self::generate("Ferrocast cluster CA", CA_DAYS)?;
                std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                write_private(&key, ca.key.serialize_pem().as_bytes()).map_err(io_err(&key))?;
                std::fs::write(&cert, &ca.bundle_pem).map_err(io_err(&cert))?;
                Ok((ca, true))
            }
            (true, false) => Err(pem_err(
                &key,
                "missing: the CA certificate is here but not its key (both or neither)",
            )),
            (false, true) => Err(pem_err(
                &cert,
                "missing: the CA key is here but not its certificate (both or neither)",
            )),
        }
    }

    /// Reads a CA from PEM files: `cert` (one certificate or a bundle; the one matching
    /// the key signs) and `key` (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let bundle = read(cert)?;
        let certs = crate::read_certs(cert)?;
        let key_pair = load_key(key)?;
        let spki = key_pair.public_key_der();
        let ca_cert = certs
            .into_iter()
            .find(|c| {
                webpki::EndEntityCert::try_from(c)
                    .is_ok_and(|ee| ee.subject_public_key_info().as_ref() == spki.as_slice())
            })
            .ok_or_else(|| {
                pem_err(
                    cert,
                    format!("no certificate here matches the key in {}", key.display()),
                )
            })?;
        let subject = webpki::EndEntityCert::try_from(&ca_cert)
            .map_err(|e| pem_err(cert, format!("not a usable certificate: {e}")))?
            .subject()
            .to_vec();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = distinguished_name(&subject)
            .ok_or_else(|| pem_err(cert, "the CA's subject name is not one rcgen can write"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = params.self_signed(&key_pair)?;
        let bundle_pem = String::from_utf8(bundle).map_err(|_| pem_err(cert, "not UTF-8"))?;
        Ok(Self {
            bundle_pem,
            cert: ca_cert,
            issuer,
            key: key_pair,
        })
    }

    /// `ca.pem` as nodes get it: every CA certificate of the bundle.
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// The certificate that signs.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Issues a certificate for client and server use naming `identities`
    /// (`ferrocast://ROLE/ID` SAN URIs), with DNS/IP SANs `localhost`, `127.0.0.1`, `::1`
    /// and `dns`, valid from an hour ago for `days` days. Checked against this CA before
    /// it is returned.
    pub fn issue(
        &self,
        identities: &[NodeIdentity],
        dns: &[String],
        days: u32,
    ) -> Result<NodeCert, TlsError> {
        if days == 0 || days > MAX_NODE_DAYS {
            return Err(TlsError::Config(format!(
                "days: {days} is not between 1 and {MAX_NODE_DAYS}"
            )));
        }
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        for n in dns.iter().filter(|n| !n.is_empty()) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let mut params = CertificateParams::new(names)?;
        for id in identities {
            let uri = rcgen::Ia5String::try_from(id.uri())?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        // `ROLE/ID`: never `ROLE:NAME`, which an operator CA's certificate would be.
        let cn = match identities {
            [one] => one.to_string(),
            _ => "ferrocast development node".to_owned(),
        };
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        valid_for(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        self.verify(cert.der())?;
        Ok(NodeCert {
            identities: identities.to_vec(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }

    /// Fails unless `cert` chains to this CA now (a subject rcgen wrote differently, a
    /// key that is not the CA's, an expired CA).
    fn verify(&self, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).map_err(config_err)?;
        let parsed = rustls::server::ParsedCertificate::try_from(cert).map_err(config_err)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &[],
            UnixTime::now(),
            provider().signature_verification_algorithms.all,
        )
        .map_err(|e| {
            TlsError::Config(format!(
                "an issued certificate does not verify against the CA: {e}"
            ))
        })
    }
}

impl NodeCert {
    /// Writes a `--tls-dir`: `ca.pem` (`ca_bundle`), `node.pem` and `node-key.pem` (the
    /// key readable by its owner only), creating `dir` when needed.
    pub fn write_dir(&self, dir: &Path, ca_bundle: &str) -> Result<PathBuf, TlsError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = crate::TlsFiles::in_dir(dir);
        write_private(&files.key, self.key_pem.as_bytes()).map_err(io_err(&files.key))?;
        std::fs::write(&files.cert, &self.cert_pem).map_err(io_err(&files.cert))?;
        std::fs::write(&files.ca, ca_bundle).map_err(io_err(&files.ca))?;
        Ok(dir.to_owned())
    }

    /// The key as rustls takes it.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::try_from(self.key_der.clone()).map_err(config_err)
    }
}

/// Reads a private key, PEM: PKCS#8, PKCS#1 RSA or SEC1 EC.
pub fn load_key(path: &Path) -> Result<KeyPair, TlsError> {
    let pem = read(path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| pem_err(path, format!("no usable private key: {e}")))?;
    let candidates = pkcs8_of(&key);
    candidates
        .iter()
        .find_map(|der| KeyPair::try_from(der.as_slice()).ok())
        .ok_or_else(|| {
            pem_err(
                path,
                "a key ring cannot sign with (RSA of 2048 bits or more, ECDSA P-256 or P-384, Ed25519)",
            )
        })
}

const RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];

/// The PKCS#8 documents `key` may be: itself; a PKCS#1 RSA key wrapped with the
/// rsaEncryption algorithm; a SEC1 EC key wrapped with its curve (the one its
/// parameters name, or each curve ring signs with when it names none).
fn pkcs8_of(key: &PrivateKeyDer<'_>) -> Vec<Vec<u8>> {
    let wrap = |alg: Vec<u8>, inner: &[u8]| {
        let version = der::encode(0x02, &[0x00]);
        let alg = der::encode(0x30, &alg);
        let key = der::encode(0x04, inner);
        der::encode(0x30, &[version, alg, key].concat())
    };
    match key {
        PrivateKeyDer::Pkcs8(k) => vec![k.secret_pkcs8_der().to_vec()],
        PrivateKeyDer::Pkcs1(k) => {
            let alg = [der::encode(0x06, RSA_ENCRYPTION), der::encode(0x05, &[])].concat();
            vec![wrap(alg, k.secret_pkcs1_der())]
        }
        PrivateKeyDer::Sec1(k) => {
            let sec1 = k.secret_sec1_der();
            let curves: Vec<&[u8]> = match sec1_curve(sec1) {
                Some(c) => vec![c],
                None => vec![P256, P384],
            };
            curves
                .into_iter()
                .map(|curve| {
                    let alg = [der::encode(0x06, EC_PUBLIC_KEY), der::encode(0x06, curve)].concat();
                    wrap(alg, sec1)
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The named curve of a SEC1 `ECPrivateKey` (its `[0]` parameters), if given.
fn sec1_curve(sec1: &[u8]) -> Option<&[u8]> {
    let (tag, body, _) = tlv(sec1)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = tlv(body)?; // version
    let (_, _, mut rest) = tlv(rest)?; // privateKey
    while !rest.is_empty() {
        let (tag, value, after) = tlv(rest)?;
        if tag == 0xA0 {
            let (tag, oid, _) = tlv(value)?;
            return (tag == 0x06).then_some(oid);
        }
        rest = after;
    }
    None
}

/// An rcgen name that writes exactly `subject` (the contents of a certificate's subject
/// SEQUENCE): one attribute per RDN, each type once, string types kept. `None` for a
/// name rcgen cannot reproduce (multi-valued or repeated attributes, other string types).
fn distinguished_name(subject: &[u8]) -> Option<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    let mut seen = Vec::new();
    let mut rest = subject;
    while !rest.is_empty() {
        let (tag, rdn, after) = tlv(rest)?;
        rest = after;
        let (tag2, atv, rdn_rest) = tlv(rdn)?;
        if tag != 0x31 || tag2 != 0x30 || !rdn_rest.is_empty() {
            return None;
        }
        let (tag, oid, value) = tlv(atv)?;
        let (vtag, value, end) = tlv(value)?;
        if tag != 0x06 || !end.is_empty() {
            return None;
        }
        let ty = DnType::from_oid(&der::oid_arcs(oid)?);
        if seen.contains(&ty) {
            return None;
        }
        seen.push(ty.clone());
        let text = std::str::from_utf8(value).ok()?.to_owned();
        let value = match vtag {
            0x0C => DnValue::Utf8String(text),
            0x13 => DnValue::PrintableString(text.try_into().ok()?),
            0x16 => DnValue::Ia5String(text.try_into().ok()?),
            0x14 => DnValue::TeletexString(text.try_into().ok()?),
            _ => return None,
        };
        dn.push(ty, value);
    }
    Some(dn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{identities, NodeRole};

    #[test]
    fn issued_certificates_name_their_node_and_expire() {
        let ca = ClusterCa::generate("test CA", 30).unwrap();
        let edge = NodeIdentity::new(NodeRole::Edge, "edge-7").unwrap();
        let cert = ca
            .issue(std::slice::from_ref(&edge), &["edge-7.example".into()], 5)
            .unwrap();
        assert_eq!(identities(&cert.cert_der), vec![edge]);
        let ee = webpki::EndEntityCert::try_from(&cert.cert_der).unwrap();
        let dns: Vec<&str> = ee.valid_dns_names().collect();
        assert!(
            dns.contains(&"localhost") && dns.contains(&"edge-7.example"),
            "{dns:?}"
        );
        // Valid now, not in six days.
        let in_days =
            |d: u64| UnixTime::since_unix_epoch(unix_now() + Duration::from_secs(d * 86_400));
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add(ca.cert().clone()).unwrap();
            r
        };
        let check = |now| {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &rustls::server::ParsedCertificate::try_from(&cert.cert_der).unwrap(),
                &roots,
                &[],
                now,
                provider().signature_verification_algorithms.all,
            )
        };
        assert!(check(in_days(4)).is_ok());
        assert!(check(in_days(6)).is_err(), "still valid after its days");
        assert!(ca.issue(&[], &[], 0).is_err());
        assert!(ca.issue(&[], &[], MAX_NODE_DAYS + 1).is_err());
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA made by `openssl` with each key format an operator may hand us (Helm's
    /// `genCA` writes PKCS#1 RSA), read as `ferrocast certs DIR` reads it; what it
    /// issues verifies against it, with rustls (in `issue`) and with `openssl verify`.
    #[test]
    fn ca_keys_made_by_openssl_sign_node_certificates() {
        let base = std::env::temp_dir().join(format!("ferrocast-pki-{}", std::process::id()));
        let keys: [(&str, &[&str]); 5] = [
            (
                "pkcs1-rsa",
                &["genrsa", "-traditional", "-out", "ca-key.pem", "2048"],
            ),
            (
                "pkcs8-rsa",
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    "ca-key.pem",
                ],
            ),
            (
                "sec1-p256",
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    "ca-key.pem",
                ],
            ),
            (
                "sec1-p384",
                &[
                    "ecparam",
                    "-name",
                    "secp384r1",
                    "-genkey",
                    "-noout",
                    "-out",
                    "ca-key.pem",
                ],
            ),
            (
                "pkcs8-p256",
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    "ca-key.pem",
                ],
            ),
        ];
        for (kind, genkey) in keys {
            let dir = base.join(kind);
            std::fs::create_dir_all(&dir).unwrap();
            openssl(&dir, genkey);
            let head = std::fs::read_to_string(dir.join(CA_KEY_FILE)).unwrap();
            let label = head.lines().next().unwrap_or_default().to_owned();
            match kind {
                "pkcs1-rsa" => assert_eq!(label, "-----BEGIN RSA PRIVATE KEY-----"),
                k if k.starts_with("sec1") => assert_eq!(label, "-----BEGIN EC PRIVATE KEY-----"),
                _ => assert_eq!(label, "-----BEGIN PRIVATE KEY-----"),
            }
            openssl(
                &dir,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    "ca-key.pem",
                    "-days",
                    "30",
                    "-subj",
                    "/O=Example Streaming/CN=example cluster CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-out",
                    "ca.pem",
                ],
            );
            let (ca, created) =
                ClusterCa::load_or_create(&dir).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert!(!created, "{kind}: an existing CA is read, not replaced");
            let origin = NodeIdentity::new(NodeRole::Origin, "o1").unwrap();
            let node = ca
                .issue(std::slice::from_ref(&origin), &[], DEFAULT_NODE_DAYS)
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(identities(&node.cert_der), vec![origin]);
            let out_dir = node
                .write_dir(&dir.join("origin-o1"), ca.bundle_pem())
                .unwrap();
            openssl(
                &out_dir,
                &[
                    "verify",
                    "-CAfile",
                    "ca.pem",
                    "-purpose",
                    "sslserver",
                    "node.pem",
                ],
            );
            openssl(
                &out_dir,
                &[
                    "verify",
                    "-CAfile",
                    "ca.pem",
                    "-purpose",
                    "sslclient",
                    "node.pem",
                ],
            );
            // And the directory loads as a node's --tls-dir.
            crate::TlsFiles::in_dir(&out_dir)
                .load()
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        // A bundle during rotation (another CA first): the certificate matching the key signs.
        let dir = base.join("pkcs1-rsa");
        let other = ClusterCa::generate("old CA", 30).unwrap();
        let bundle = format!(
            "{}{}",
            other.bundle_pem(),
            std::fs::read_to_string(dir.join(CA_FILE)).unwrap()
        );
        std::fs::write(dir.join(CA_FILE), &bundle).unwrap();
        let (ca, _) = ClusterCa::load_or_create(&dir).unwrap();
        assert_eq!(ca.bundle_pem(), bundle);
        ca.issue(&[], &[], 1).unwrap();
        // A key without its certificate is refused, naming the file.
        std::fs::remove_file(dir.join(CA_FILE)).unwrap();
        let err = ClusterCa::load_or_create(&dir).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        // A key that matches no certificate.
        std::fs::write(dir.join(CA_FILE), other.bundle_pem()).unwrap();
        let err = ClusterCa::load_or_create(&dir).unwrap_err();
        assert!(err.to_string().contains("matches the key"), "{err}");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_missing_ca_is_created_once_and_then_only_read() {
        let dir = std::env::temp_dir().join(format!("ferrocast-pki-new-{}", std::process::id()));
        let (first, created) = ClusterCa::load_or_create(&dir).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "CA key must not be group/world readable");
        }
        let (again, created) = ClusterCa::load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(first.cert(), again.cert());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn der_helpers_survive_garbage() {
        assert_eq!(sec1_curve(&[]), None);
        assert_eq!(sec1_curve(&[0x30, 0x02, 0x02]), None);
        assert!(distinguished_name(&[0x31, 0x80]).is_none());
        assert!(distinguished_name(&[]).is_some());
    }
}
