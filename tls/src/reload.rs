//! Certificates that follow their files: a [`CertStore`] hands rustls the current
//! certificate and key for every new handshake (server and client side) and reloads them
//! when the files change, so a renewed certificate (cert-manager rewriting a Secret, an
//! operator replacing the PEM files) takes effect without a restart.
//!
//! The files are checked lazily, at most every [`CHECK_INTERVAL`], by the handshake that
//! needs a certificate: a certificate only matters to a new handshake, so a background
//! task and a file-watching dependency would buy nothing but moving parts. A check reads
//! the two small files and compares their SHA-256 with the last seen (contents, not
//! mtimes: coarse timestamps and Kubernetes' symlink swaps of Secret volumes both defeat
//! mtime checks). New files that do not load (half-written, a key not matching the
//! certificate) are logged once and the previous certificate stays in use; a later
//! change is tried again, so a pair replaced one file at a time is picked up once both
//! are in place. Established connections keep the certificate they were set up with.

use crate::{config_err, read_certs, read_key, TlsError};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often, at most, the files are looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate chain and key, swapped when their files change.
pub struct CertStore {
    /// Read once per handshake, written on a reload: a lock held for a pointer copy
    /// costs nothing at handshake rates, so no `ArcSwap` dependency.
    current: RwLock<Arc<CertifiedKey>>,
    files: Option<Watched>,
}

struct Watched {
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    check: Mutex<Check>,
}

struct Check {
    next: Instant,
    /// The files behind the current certificate.
    loaded: Fingerprint,
    /// The last files that did not load (logged once).
    failed: Option<Fingerprint>,
}

/// SHA-256 of each file's contents (`None`: unreadable).
type Fingerprint = [Option<[u8; 32]>; 2];

fn fingerprint(cert: &Path, key: &Path) -> Fingerprint {
    use sha2::Digest as _;
    let one = |p: &Path| {
        std::fs::read(p)
            .ok()
            .map(|b| sha2::Sha256::digest(b).into())
    };
    [one(cert), one(key)]
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        let mut d = f.debug_struct("CertStore");
        d.field("chain_len", &self.load().cert.len());
        if let Some(w) = &self.files {
            d.field("cert", &w.cert).field("key", &w.key);
        }
        d.finish_non_exhaustive()
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let key = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(config_err)?;
    let ck = CertifiedKey::new(chain, key);
    // A key that does not belong to the certificate would fail every handshake.
    ck.keys_match().map_err(config_err)?;
    Ok(ck)
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    certified(read_certs(cert)?, read_key(key)?)
}

impl CertStore {
    /// A fixed certificate (generated, or from memory): never reloaded.
    pub fn fixed(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new(Arc::new(certified(chain, key)?)),
            files: None,
        })
    }

    /// Loads `cert` (PEM chain, leaf first) and `key` (PEM); they are reloaded when they
    /// change. Fails now, naming the file, when they do not load.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_files_every(cert, key, CHECK_INTERVAL)
    }

    /// [`CertStore::from_files`] with another check interval.
    pub fn from_files_every(cert: &Path, key: &Path, interval: Duration) -> Result<Self, TlsError> {
        let loaded = fingerprint(cert, key);
        let ck = load(cert, key)?;
        Ok(Self {
            current: RwLock::new(Arc::new(ck)),
            files: Some(Watched {
                cert: cert.to_owned(),
                key: key.to_owned(),
                interval,
                check: Mutex::new(Check {
                    next: Instant::now() + interval,
                    loaded,
                    failed: None,
                }),
            }),
        })
    }

    /// The certificate new handshakes get, after a check of the files when one is due.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.check_files(false);
        self.load()
    }

    fn load(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Looks at the files now (not waiting for the interval); true when a new
    /// certificate was loaded.
    pub fn reload_now(&self) -> bool {
        self.check_files(true)
    }

    fn check_files(&self, force: bool) -> bool {
        let Some(w) = &self.files else {
            return false;
        };
        // One checker at a time; the others go on with the current certificate.
        let Ok(mut check) = w.check.try_lock() else {
            return false;
        };
        let now = Instant::now();
        if !force && now < check.next {
            return false;
        }
        check.next = now + w.interval;
        let fp = fingerprint(&w.cert, &w.key);
        if fp == check.loaded || check.failed == Some(fp) {
            return false;
        }
        match load(&w.cert, &w.key) {
            Ok(ck) => {
                check.loaded = fp;
                check.failed = None;
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
                tracing::info!(cert = %w.cert.display(), "certificate reloaded");
                true
            }
            Err(error) => {
                check.failed = Some(fp);
                tracing::error!(cert = %w.cert.display(), key = %w.key.display(), %error,
                    "new certificate files do not load; keeping the current certificate");
                false
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_files_are_picked_up_and_bad_ones_keep_the_old_certificate() {
        let dir = std::env::temp_dir().join(format!("ferrocast-reload-{}", std::process::id()));
        let files = crate::TlsFiles::in_dir(&dir);
        crate::generate_dev(Some(&dir), &[]).unwrap();
        let store = CertStore::from_files_every(&files.cert, &files.key, Duration::ZERO).unwrap();
        let first = store.current().cert[0].clone();
        assert!(!store.reload_now(), "unchanged files are not reloaded");

        // A new pair (another CA: the store does not care).
        crate::generate_dev(Some(&dir), &["renewed.example".into()]).unwrap();
        let second = store.current().cert[0].clone();
        assert_ne!(first, second, "the next handshake gets the new certificate");
        let on_disk = read_certs(&files.cert).unwrap();
        assert_eq!(second, on_disk[0]);

        // Half-written: garbage certificate. The current one stays.
        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ngarbage").unwrap();
        assert!(!store.reload_now());
        assert_eq!(store.current().cert[0], second);
        // A key that does not match: refused too.
        let other = dir.join("other");
        crate::generate_dev(Some(&other), &[]).unwrap();
        std::fs::copy(other.join(crate::CERT_FILE), &files.cert).unwrap();
        assert!(!store.reload_now());
        assert_eq!(store.current().cert[0], second);
        // The matching key arrives: loaded.
        std::fs::copy(other.join(crate::KEY_FILE), &files.key).unwrap();
        assert!(store.reload_now());
        assert_eq!(store.current().cert[0], read_certs(&files.cert).unwrap()[0]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
