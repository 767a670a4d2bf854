//! Who may call the operator API and as whom: [`OperatorAuth`] (the tonic interceptor
//! that checks bearer tokens and operator certificates, and counts and logs refusals),
//! the [`Caller`] it attaches to each request with its [`OperatorRole`], and `require_admin`,
//! the check every changing call makes.

use crate::api::{ApiError, ApiResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Status};

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorRole {
    /// Reads only: lists, gets, resolve, events.
    ReadOnly,
    /// Everything.
    Admin,
}

/// Who makes an operator call, as [`OperatorAuth`] identified them (a request extension).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`admin`, `read-only`), or `anonymous` when calls are open.
    pub name: Arc<str>,
    /// What the caller may do.
    pub role: OperatorRole,
    /// The caller's address.
    pub peer: Option<std::net::SocketAddr>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(p) => write!(f, "{}@{p}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// The caller of `req`, refused unless an admin.
pub(crate) fn require_admin<T>(req: &Request<T>, op: &str) -> ApiResult<Caller> {
    let caller = req.extensions().get::<Caller>().cloned().unwrap_or(Caller {
        // No interceptor in front: operator calls are open.
        name: Arc::from("anonymous"),
        role: OperatorRole::Admin,
        peer: crate::tls::remote_addr(req),
    });
    if caller.role != OperatorRole::Admin {
        tracing::warn!(target: "ferrocast::audit", who = %caller, op, "refused: read-only operator");
        return Err(ApiError::Forbidden(format!(
            "{op} needs an admin token or certificate; {} is read-only",
            caller.name
        )));
    }
    Ok(caller)
}

/// Who may call the operator API, and as whom ([`Caller`], which goes with the request):
///
/// - an operator certificate (TLS, verified against `--operator-ca`) whose common name
///   is `admin:NAME` or `read:NAME` acts with that role as `cert:NAME`; it wins over a
///   token sent with it. An operator CA's certificate with another name is refused;
/// - otherwise, with tokens configured, the call must carry
///   `authorization: Bearer <token>` of one of them (named `admin` and `read-only`);
/// - with neither tokens nor operator certificates configured, every call is allowed.
///
/// A refused call (no credential, a wrong token, an operator certificate without a
/// role) is counted in `ferrocast_controller_operator_auth_failures_total{reason}` and
/// logged (target `ferrocast::audit`) with the caller's address: at most one line per
/// address per [`AUTH_FAILURE_LOG_INTERVAL`], which says how many were not logged, so
/// that someone guessing tokens can neither pass unseen nor flood the log.
#[derive(Debug, Clone, Default)]
pub struct OperatorAuth {
    tokens: Arc<Vec<(String, Arc<str>, OperatorRole)>>,
    certificates: bool,
    failures: AuthFailures,
}

/// One log line per caller address per this long about its failed operator calls.
pub const AUTH_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Addresses whose failures are remembered for rate-limiting at most; past that, the
/// oldest are forgotten (so a flood from many addresses costs bounded memory, and at
/// worst more log lines).
const AUTH_FAILURE_ADDRESSES: usize = 4096;

/// Why an operator call was refused (the counter's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AuthFailure {
    /// No bearer token and no operator certificate.
    NoCredential,
    /// A bearer token that is none of the configured ones.
    WrongToken,
    /// An operator CA's certificate whose name gives no role.
    CertificateWithoutRole,
}

impl AuthFailure {
    fn as_str(self) -> &'static str {
        match self {
            AuthFailure::NoCredential => "no_credential",
            AuthFailure::WrongToken => "wrong_token",
            AuthFailure::CertificateWithoutRole => "certificate_without_role",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AuthFailureLabels {
    reason: &'static str,
}

/// The failure counter and the per-address log limiter, shared by every clone of the
/// interceptor.
#[derive(Debug, Clone, Default)]
struct AuthFailures {
    counter: prometheus_client::metrics::family::Family<
        AuthFailureLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    /// Address → (when its last line was logged, failures since not logged).
    logged: Arc<Mutex<FailureLog>>,
}

/// See [`AuthFailures::logged`].
type FailureLog = HashMap<Option<std::net::IpAddr>, (tokio::time::Instant, u64)>;

impl AuthFailures {
    /// Counts a refusal of the caller at `peer`, and logs it unless this address had a
    /// line within the interval.
    fn record(&self, peer: Option<std::net::SocketAddr>, why: AuthFailure, detail: &str) {
        self.counter
            .get_or_create(&AuthFailureLabels {
                reason: why.as_str(),
            })
            .inc();
        let now = tokio::time::Instant::now();
        let ip = peer.map(|p| p.ip());
        let suppressed = {
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, quiet)) = logged.get_mut(&ip) {
                if now.duration_since(*at) < AUTH_FAILURE_LOG_INTERVAL {
                    *quiet += 1;
                    return;
                }
                let quiet = std::mem::take(quiet);
                *at = now;
                quiet
            } else {
                if logged.len() >= AUTH_FAILURE_ADDRESSES {
                    logged.retain(|_, (at, _)| now.duration_since(*at) < AUTH_FAILURE_LOG_INTERVAL);
                    if logged.len() >= AUTH_FAILURE_ADDRESSES {
                        logged.clear();
                    }
                }
                logged.insert(ip, (now, 0));
                0
            }
        };
        tracing::warn!(target: "ferrocast::audit", peer = ?peer, reason = why.as_str(), detail,
            not_logged_since_last = suppressed, "refused: operator authentication failed");
    }
}

impl OperatorAuth {
    /// Checks for the admin `token`, or lets everything through with `None`.
    pub fn new(token: Option<String>) -> Self {
        Self::with_roles(token, None)
    }

    /// An admin token and a read-only token (which needs an admin token too).
    pub fn with_roles(admin: Option<String>, read_only: Option<String>) -> Self {
        let mut tokens = Vec::new();
        if let Some(t) = admin {
            tokens.push((t, Arc::from("admin"), OperatorRole::Admin));
        }
        if let Some(t) = read_only {
            tokens.push((t, Arc::from("read-only"), OperatorRole::ReadOnly));
        }
        OperatorAuth {
            tokens: Arc::new(tokens),
            certificates: false,
            failures: AuthFailures::default(),
        }
    }

    /// Registers `ferrocast_controller_operator_auth_failures_total` into `registry`.
    pub fn with_metrics(self, registry: &ferrocast_runtime::metrics::Metrics) -> Self {
        let counter = self.failures.counter.clone();
        registry.register(|r| {
            r.register(
                "ferrocast_controller_operator_auth_failures",
                "Operator API calls refused for their credential, by reason",
                counter,
            )
        });
        self
    }

    /// Whether operator certificates are accepted (an operator CA is configured); then
    /// calls are no longer open without a token.
    pub fn with_certificates(mut self, on: bool) -> Self {
        self.certificates = on;
        self
    }
}

impl tonic::service::Interceptor for OperatorAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let peer = crate::tls::remote_addr(&req);
        let cert = req
            .extensions()
            .get::<crate::tls::GrpcPeer>()
            .map(|p| p.peer.clone());
        if let (true, Some(cert)) = (self.certificates, cert) {
            use ferrocast_tls::grpc::{OperatorGrant, Peer};
            match &*cert {
                Peer::Operator(id) => {
                    let role = match id.role {
                        OperatorGrant::Admin => OperatorRole::Admin,
                        OperatorGrant::Read => OperatorRole::ReadOnly,
                    };
                    req.extensions_mut().insert(Caller {
                        name: Arc::from(format!("cert:{}", id.name)),
                        role,
                        peer,
                    });
                    return Ok(req);
                }
                Peer::Unrecognized(cn) => {
                    self.failures.record(
                        peer,
                        AuthFailure::CertificateWithoutRole,
                        &format!("certificate common name {cn:?}"),
                    );
                    return Err(Status::unauthenticated(format!(
                        "the operator certificate's common name {cn:?} is not admin:NAME or read:NAME"
                    )));
                }
                Peer::Anonymous | Peer::Node => {}
            }
        }
        if self.tokens.is_empty() && !self.certificates {
            req.extensions_mut().insert(Caller {
                name: Arc::from("anonymous"),
                role: OperatorRole::Admin,
                peer,
            });
            return Ok(req);
        }
        let given = req.metadata().get("authorization");
        let got = given
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Every token is compared, so the time taken does not tell which one matched.
        let found = self.tokens.iter().fold(None, |found, (t, name, role)| {
            if ferrocast_tokens::constant_time_eq(got.as_bytes(), t.as_bytes()) {
                Some((name.clone(), *role))
            } else {
                found
            }
        });
        if found.is_none() {
            // The token itself is never logged: a wrong one may be a real one mistyped.
            let why = match given {
                None => AuthFailure::NoCredential,
                Some(_) => AuthFailure::WrongToken,
            };
            self.failures.record(peer, why, "");
        }
        match found {
            Some((name, role)) => {
                req.extensions_mut().insert(Caller { name, role, peer });
                Ok(req)
            }
            None if self.certificates => Err(Status::unauthenticated(
                "operator calls need an operator certificate or a bearer token",
            )),
            None => Err(Status::unauthenticated(
                "operator calls need a bearer token",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_token() {
        use tonic::service::Interceptor;
        let mut open = OperatorAuth::new(None);
        assert!(open.call(Request::new(())).is_ok());
        let mut closed = OperatorAuth::new(Some("s3cret".into()));
        assert_eq!(
            closed.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(closed.call(req).is_ok());

        // Roles: the read-only token passes the check but is not an admin.
        let mut roles = OperatorAuth::with_roles(Some("adm".into()), Some("ro".into()));
        let with = |t: &str| {
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
            r
        };
        let ro = roles.call(with("ro")).unwrap();
        let err = Status::from(require_admin(&ro, "DrainNode").unwrap_err());
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let adm = roles.call(with("adm")).unwrap();
        assert_eq!(&*require_admin(&adm, "DrainNode").unwrap().name, "admin");
        assert!(roles.call(with("nope")).is_err());
        // Same length, one byte off; a prefix; a longer token: all refused.
        for wrong in ["adn", "ad", "adm2", "r", "ro "] {
            assert!(roles.call(with(wrong)).is_err(), "{wrong:?} is refused");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_operator_calls_are_counted_and_logged_once_per_address_per_interval() {
        use tonic::service::Interceptor;
        let registry = ferrocast_runtime::metrics::Metrics::new();
        let mut auth = OperatorAuth::new(Some("s3cret".into())).with_metrics(&registry);
        let from = |token: Option<&str>| {
            let mut r = Request::new(());
            if let Some(t) = token {
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            r
        };
        let failures = |auth: &OperatorAuth| {
            auth.failures
                .logged
                .lock()
                .unwrap()
                .values()
                .map(|(_, quiet)| *quiet)
                .sum::<u64>()
        };
        // A hand-made request has no remote address: these all count for the unknown one.
        for _ in 0..5 {
            assert!(auth.call(from(Some("guess"))).is_err());
        }
        assert!(auth.call(from(None)).is_err());
        assert_eq!(failures(&auth), 5, "one line, five held back");
        tokio::time::advance(AUTH_FAILURE_LOG_INTERVAL).await;
        assert!(auth.call(from(Some("guess"))).is_err());
        assert_eq!(
            failures(&auth),
            0,
            "the next line tells how many were held back"
        );
        let text = registry.render();
        for needle in [
            "ferrocast_controller_operator_auth_failures_total{reason=\"wrong_token\"} 6",
            "ferrocast_controller_operator_auth_failures_total{reason=\"no_credential\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        // A good token is no failure.
        assert!(auth.call(from(Some("s3cret"))).is_ok());
        assert!(registry.render().contains("reason=\"wrong_token\"} 6"));
    }
}
