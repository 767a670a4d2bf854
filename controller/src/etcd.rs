//! The controller's connection to etcd: [`EtcdConfig`] (endpoints, TLS, user and password),
//! checked before anything binds, and [`EtcdClient`], a thin layer over the `etcd-client`
//! crate that adds what the store and the election rely on: a lazy start (a controller
//! starts while etcd is down, and the data path never waits for it), a deadline on every
//! unary call, authentication that is renewed when etcd forgets a token, TLS through the
//! tree's own rustls connector (so that tonic's TLS feature stays off for the whole
//! workspace), and the mapping of etcd failures to [`StoreError`], here and nowhere else.

use crate::store::StoreError;
use etcd_client::{Client, ConnectOptions};
use ferrocast_tls::grpc::{operator_client_config, TlsConnector};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::Endpoint;

/// Where etcd is and how to prove who we are to it.
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    /// Member endpoints (`host:port`, `http://…` or `https://…`); empty: no etcd (the
    /// controller keeps its state in memory and leads alone).
    pub endpoints: Vec<String>,
    /// TLS to etcd; `None`: plaintext.
    pub tls: Option<EtcdTls>,
    /// An etcd user to authenticate as; `None`: no etcd authentication.
    pub auth: Option<EtcdAuth>,
}

/// TLS to etcd: the CA that signed the members' certificates and, for etcd's
/// `--client-cert-auth`, our client certificate (PEM files).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// PEM file of the CA certificates etcd's serving certificate must chain to.
    pub ca: PathBuf,
    /// PEM files of the client certificate chain and its private key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// An etcd user and password (etcd's `auth enable`).
#[derive(Clone)]
pub struct EtcdAuth {
    /// The user name.
    pub user: String,
    /// The password (never printed).
    pub password: String,
}

impl fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// An etcd configuration that cannot work, naming the field (as its flag is named).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdConfigError {
    /// A field has an unusable value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EtcdConfigError {
    EtcdConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Reads a PEM file of certificates, at least one.
fn read_certs(field: &'static str, path: &PathBuf) -> Result<(), EtcdConfigError> {
    let pem =
        std::fs::read(path).map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            field,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(())
}

impl EtcdConfig {
    /// A plaintext configuration without authentication.
    pub fn plain(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            auth: None,
        }
    }

    /// Whether etcd is used at all.
    pub fn is_enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Checks every field, reading the PEM files, without connecting.
    pub fn validate(&self) -> Result<(), EtcdConfigError> {
        self.options().map(drop)
    }

    /// The endpoints with their scheme (`https` with TLS), after checking every field.
    fn options(&self) -> Result<Vec<String>, EtcdConfigError> {
        if self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(invalid("etcd", "an endpoint is empty"));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for e in &self.endpoints {
            let e = e.trim();
            match e.split_once("://") {
                None => endpoints.push(format!("{scheme}://{e}")),
                Some((s, _)) if s == scheme => endpoints.push(e.to_owned()),
                Some(("https", _)) => {
                    return Err(invalid(
                        "etcd-ca",
                        format!("needed for the https endpoint {e:?}"),
                    ))
                }
                Some(("http", _)) => {
                    return Err(invalid(
                        "etcd",
                        format!("{e:?} is plaintext while --etcd-ca asks for TLS"),
                    ))
                }
                Some(_) => return Err(invalid("etcd", format!("{e:?}: not http(s)"))),
            }
        }
        if let Some(auth) = &self.auth {
            if auth.user.is_empty() {
                return Err(invalid("etcd-user", "is empty"));
            }
            if auth.password.is_empty() {
                return Err(invalid("etcd-password", "is empty"));
            }
        }
        if let Some(tls) = &self.tls {
            read_certs("etcd-ca", &tls.ca)?;
            if let Some((cert, key)) = &tls.identity {
                read_certs("etcd-cert", cert)?;
                let key_pem = std::fs::read(key)
                    .map_err(|e| invalid("etcd-key", format!("{}: {e}", key.display())))?;
                PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| invalid("etcd-key", format!("{}: {e}", key.display())))?;
            }
        }
        Ok(endpoints)
    }
}

/// Maps a failure of etcd to a store error. A transport failure reads "transport error"
/// alone; its causes say which (e.g. that etcd wants a client certificate), so they are
/// part of the message.
pub(crate) fn etcd_error(e: etcd_client::Error) -> StoreError {
    let (mut msg, cause) = match &e {
        etcd_client::Error::GRpcStatus(s) => (
            format!("etcd: {:?}: {}", s.code(), s.message()),
            std::error::Error::source(s),
        ),
        etcd_client::Error::TransportError(t) => {
            (format!("etcd: {t}"), std::error::Error::source(t))
        }
        other => (format!("etcd: {other}"), None),
    };
    let mut cause = cause;
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    // etcd's `--client-cert-auth` answers a missing or unknown client certificate with a
    // bare TLS alert: say what it means.
    if (msg.contains("BadCertificate") || msg.contains("CertificateRequired"))
        && !msg.contains(CERT_WANTED)
    {
        msg.push_str(&format!(" ({CERT_WANTED})"));
    }
    StoreError::Unavailable(msg)
}

/// What a refusal by etcd's `--client-cert-auth` means.
const CERT_WANTED: &str = "etcd wants a client certificate its CA signed: --etcd-cert, --etcd-key";

/// Whether etcd refused a call for want of a (valid, current) auth token: after a restart
/// etcd forgets simple tokens, and a token from before an auth change is refused as old.
fn needs_token(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unauthenticated
                || s.message().contains("user name is empty")
                || s.message().contains("revision of auth store is old")
        }
        _ => false,
    }
}

/// Dials the etcd members over TLS for one tonic channel: each new connection goes to the
/// next member in turn, skipping those that do not answer within the timeout, so a lost
/// member costs one reconnect. (etcd-client balances plaintext endpoints itself; with
/// our own TLS connector it is handed one channel, `raw-channel`.)
#[derive(Debug, Clone)]
struct Members {
    uris: Arc<[http::Uri]>,
    next: Arc<AtomicUsize>,
    tls: TlsConnector,
    /// Set when we have no client certificate.
    asked: Option<Arc<NoClientCert>>,
    timeout: Duration,
}

/// Presents no client certificate, and remembers that a server asked for one.
#[derive(Debug, Default)]
struct NoClientCert {
    asked: AtomicBool,
}

impl rustls::client::ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

impl Members {
    fn new(
        endpoints: &[String],
        tls: TlsConnector,
        asked: Option<Arc<NoClientCert>>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let uris = endpoints
            .iter()
            .map(|e| {
                e.parse::<http::Uri>()
                    .map_err(|err| StoreError::Unavailable(format!("etcd endpoint {e:?}: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Members {
            uris: uris.into(),
            next: Arc::new(AtomicUsize::new(0)),
            tls,
            asked,
            timeout,
        })
    }
}

impl tower_service::Service<http::Uri> for Members {
    type Response = <TlsConnector as tower_service::Service<http::Uri>>::Response;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _channel: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let n = this.uris.len();
            let first = this.next.fetch_add(1, Ordering::Relaxed);
            let mut last = None;
            for i in 0..n {
                let uri = this.uris[(first + i) % n].clone();
                let mut tls = this.tls.clone();
                let attempt = tower_service::Service::call(&mut tls, uri.clone());
                match tokio::time::timeout(this.timeout, attempt).await {
                    Ok(Ok(_))
                        if this
                            .asked
                            .as_ref()
                            .is_some_and(|a| a.asked.load(Ordering::Relaxed)) =>
                    {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!("{uri}: {CERT_WANTED}"),
                        ));
                    }
                    Ok(Ok(io)) => return Ok(io),
                    Ok(Err(e)) => last = Some(std::io::Error::other(format!("{uri}: {e}"))),
                    Err(_) => {
                        last = Some(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("{uri}: no answer within {:?}", this.timeout),
                        ))
                    }
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other("no etcd endpoint")))
        })
    }
}

/// A connection to an etcd cluster: one gRPC channel balanced over the endpoints.
#[derive(Clone)]
pub struct EtcdClient {
    client: Client,
    timeout: Duration,
    auth: Option<Arc<EtcdAuth>>,
    /// Whether the client carries a token etcd accepted; shared by every clone, as the
    /// token itself is.
    authenticated: Arc<AtomicBool>,
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl EtcdClient {
    /// A client of the cluster `cfg` names, with `timeout` as connect timeout and deadline
    /// of every unary call. Reads the PEM files but does not wait for etcd: the channel
    /// connects, and the user authenticates, on first use. Must run inside a tokio runtime.
    pub async fn connect(cfg: &EtcdConfig, timeout: Duration) -> Result<Self, StoreError> {
        if !cfg.is_enabled() {
            return Err(StoreError::Unavailable("no etcd endpoint".into()));
        }
        let endpoints = cfg
            .options()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // The user is not handed to etcd-client: it would authenticate inside `connect`,
        // which then fails while etcd is down. `authenticate` does it on first use instead.
        let options = ConnectOptions::new().with_keep_alive(Duration::from_secs(10), timeout);
        let client = match &cfg.tls {
            None => {
                let options = options.with_connect_timeout(timeout);
                Client::connect(&endpoints, Some(options)).await
            }
            Some(tls) => {
                let identity = tls
                    .identity
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path()));
                let config = operator_client_config(&tls.ca, identity)
                    .map_err(|e| StoreError::Unavailable(format!("etcd TLS: {e}")))?;
                // Without a certificate of our own, note when etcd asks for one: its
                // --client-cert-auth refuses us with a bare alert that hyper reports as
                // "connection closed", which says nothing.
                let (config, asked) = if identity.is_some() {
                    (config, None)
                } else {
                    let asked = Arc::new(NoClientCert::default());
                    let mut config = (*config).clone();
                    config.client_auth_cert_resolver = asked.clone();
                    (Arc::new(config), Some(asked))
                };
                let members = Members::new(&endpoints, TlsConnector::new(config), asked, timeout)?;
                // The URI only names the channel: `Members` dials the members, each by
                // its own name. `http` keeps tonic from asking for TLS of its own.
                let channel = Endpoint::from_static("http://etcd.members")
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(timeout)
                    .connect_with_connector_lazy(members);
                Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options)).await
            }
        }
        .map_err(etcd_error)?;
        Ok(EtcdClient {
            client,
            timeout,
            auth: cfg.auth.clone().map(Arc::new),
            authenticated: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The deadline of unary calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The KV service.
    pub fn kv(&self) -> etcd_client::KvClient {
        self.client.kv_client()
    }

    /// The Lease service.
    pub fn lease(&self) -> etcd_client::LeaseClient {
        self.client.lease_client()
    }

    /// The Election service.
    pub fn election(&self) -> etcd_client::ElectionClient {
        self.client.election_client()
    }

    /// Runs one unary call, made by `call`, under the deadline (authenticating first when
    /// a user is configured, and once more if etcd refuses the token).
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(&Self) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.bounded(self.with_token(call)).await
    }

    /// Runs `call`, which may take as long as it takes (a campaign), authenticated.
    pub async fn unbounded<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(&Self) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.with_token(call).await.map_err(etcd_error)
    }

    async fn with_token<T, F, Fut>(&self, call: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(&Self) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        if self.auth.is_none() {
            return call(self).await;
        }
        if !self.authenticated.load(Ordering::Acquire) {
            self.authenticate().await?;
        }
        match call(self).await {
            Err(e) if needs_token(&e) => {
                tracing::info!(error = %e, "etcd refused the auth token: authenticating again");
                self.authenticated.store(false, Ordering::Release);
                self.authenticate().await?;
                call(self).await
            }
            r => r,
        }
    }

    async fn authenticate(&self) -> Result<(), etcd_client::Error> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        // The auth client shares its token with every other client of this channel.
        self.client
            .auth_client()
            .set_client_auth(auth.user.clone(), auth.password.clone())
            .await?;
        self.authenticated.store(true, Ordering::Release);
        Ok(())
    }

    /// Grants a lease of at least `ttl` (etcd rounds up to whole seconds and to its own
    /// minimum); returns its id and granted TTL.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), StoreError> {
        let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1) as i64;
        let r = self
            .call(|c| {
                let mut lease = c.lease();
                async move { lease.grant(secs, None).await }
            })
            .await?;
        if !r.error().is_empty() {
            return Err(StoreError::Unavailable(format!(
                "etcd lease grant: {}",
                r.error()
            )));
        }
        Ok((r.id(), Duration::from_secs(r.ttl().max(0) as u64)))
    }

    /// Renews a lease once (to the TTL it was granted), or says
    /// [`StoreError::LeaseExpired`].
    pub async fn keep_alive_once(&self, id: i64) -> Result<(), StoreError> {
        // etcd-client's keep-alive opens the stream with one renewal and checks its answer.
        let r = self
            .call(|c| {
                let mut lease = c.lease();
                async move { lease.keep_alive(id).await.map(drop) }
            })
            .await;
        match r {
            Err(StoreError::Unavailable(m)) if m.contains("lease not found") => {
                Err(StoreError::LeaseExpired(id))
            }
            r => r,
        }
    }

    /// Ends a lease now, deleting its keys; an unknown lease is no error.
    pub async fn revoke(&self, id: i64) -> Result<(), StoreError> {
        let r = self
            .call(|c| {
                let mut lease = c.lease();
                async move { lease.revoke(id).await }
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(StoreError::Unavailable(m)) if m.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(etcd_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd: no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_the_scheme_tls_asks_for() {
        let eps = EtcdConfig::plain(["10.0.0.1:2379", "http://b:2379"])
            .options()
            .unwrap();
        assert_eq!(eps, ["http://10.0.0.1:2379", "http://b:2379"]);
    }

    #[test]
    fn an_https_endpoint_without_a_ca_names_the_flag() {
        let err = EtcdConfig::plain(["https://etcd:2379"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("etcd-ca:"), "{err}");
    }

    #[test]
    fn a_missing_pem_file_names_its_flag() {
        let cfg = EtcdConfig {
            tls: Some(EtcdTls {
                ca: "/nonexistent/ca.pem".into(),
                identity: None,
            }),
            ..EtcdConfig::plain(["etcd:2379"])
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.starts_with("etcd-ca: /nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn tls_files_and_schemes_are_checked() {
        let dir = std::env::temp_dir().join(format!("ferrocast-etcd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["etcd".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let cfg = EtcdConfig {
            tls: Some(EtcdTls {
                ca: ca.clone(),
                identity: Some((ca.clone(), dir.join("missing-key.pem"))),
            }),
            ..EtcdConfig::plain(["etcd:2379"])
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.starts_with("etcd-key:"), "{err}");
        let cfg = EtcdConfig {
            endpoints: vec!["http://etcd:2379".into()],
            ..cfg
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("etcd:") && err.contains("plaintext"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_password_is_never_printed() {
        let a = EtcdAuth {
            user: "ferrocast".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
