//! The admission webhook: an HTTP POST to an operator's URL asking whether a publisher
//! may publish (origins) or a viewer may play (edges), for platforms that keep their
//! users elsewhere. See docs/access.md, "Admission webhook".
//!
//! One JSON body per question ([`AdmissionRequest`]); `2xx` allows, `4xx` denies (the
//! body may say why), anything else — a timeout, a `5xx`, a refused connection — is an
//! error that [`FailMode`] turns into an allow or a deny. With a secret, the body is
//! signed (HMAC-SHA256 over `"{timestamp}.{body}"`) so the operator can tell the request
//! came from the cluster and is fresh.
//!
//! The URL may be `http://` or `https://`; over HTTPS the webhook's certificate is checked
//! against `--admission-ca` or the system bundle, and an invalid one is an error like a
//! refused connection. Connections are pooled and reused, TLS ones included: hyper-util's
//! pooling client over hyper-rustls' connector (TCP through `HttpConnector` with the
//! connect timeout and no Nagle, then rustls naming the URL's host for SNI and the
//! certificate check), so a handshake is paid once per pooled connection, not per call.
//!
//! This crate asks; caching the answers (edges, per viewer) is the caller's business.
//! This file owns the question, the call and its verdict; `config` the settings and
//! their checks, `share` each client's share of the calls in flight.

mod config;
mod share;

pub use config::{AdmissionConfig, FailMode};

use bytes::Bytes;
use ferrocast_runtime::metrics::Metrics;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Header with the request's Unix time (seconds), signed with the body.
pub const TIMESTAMP_HEADER: &str = "x-ferrocast-timestamp";
/// Header with `sha256=HEX` of HMAC-SHA256(secret, `"{timestamp}.{body}"`).
pub const SIGNATURE_HEADER: &str = "x-ferrocast-signature";

/// Most bytes of a webhook's answer read (for a deny's reason).
const MAX_ANSWER: usize = 4096;
/// Most characters of a deny's reason passed on (to the RTMP error, the log, a 403).
const MAX_REASON: usize = 200;
/// What is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A publisher wants to publish (origin, RTMP).
    Publish,
    /// A viewer wants to play (edge, HLS).
    Play,
}

impl Action {
    /// The name in the request body and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
        }
    }
}

/// The question, as JSON: `{"action","stream","app","client_ip","query","node"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdmissionRequest<'a> {
    /// `publish` or `play`.
    pub action: &'static str,
    /// The stream key.
    pub stream: &'a str,
    /// The application (`live`).
    pub app: &'a str,
    /// The client's address as this node sees it (empty when unknown).
    pub client_ip: String,
    /// The client's query string (see docs/access.md for what is left out).
    pub query: &'a str,
    /// The node asking.
    pub node: &'a str,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the client in.
    Allow,
    /// Keep the client out, with the reason to show it and to log.
    Deny(Arc<str>),
}

/// How the verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The webhook answered (2xx or 4xx).
    Webhook,
    /// The webhook could not answer; the fail mode decided.
    Fallback,
    /// The webhook was not asked: every call slot (or this client's share of them) was
    /// taken. Always a deny, whatever the fail mode, so that a flood of made-up
    /// credentials cannot turn `fail: open` into "allow everyone"; not worth keeping
    /// (the client may try again at once).
    Busy,
}

/// A verdict and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Webhook or fallback (a fallback is cached for less time).
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    action: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

/// The webhook client of one node, with its metrics:
/// `ferrocast_admission_requests_total{action,result}` (result: allow, deny, error, busy) and
/// `ferrocast_admission_request_duration_seconds{action}`.
#[derive(Debug, Clone)]
pub struct Admission {
    cfg: Arc<AdmissionConfig>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Why an `https://` URL has no TLS configuration (its CA stopped loading after
    /// validation): every call fails with this, and the fail mode decides.
    no_tls: Option<Arc<str>>,
    metrics: AdmissionMetrics,
    /// Slots for calls in flight ([`AdmissionConfig::max_in_flight`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Calls in flight (or waiting for a slot) per client
    /// ([`AdmissionConfig::max_in_flight_per_client`]); an entry lives while its count
    /// is above zero, so the map holds at most one entry per call in flight.
    per_client: share::Shares,
}

/// The webhook's metrics, one set per process (shared by a standalone's origin and edge).
#[derive(Debug, Clone)]
struct AdmissionMetrics {
    requests: Family<OutcomeLabels, Counter>,
    duration: Family<ActionLabels, Histogram, fn() -> Histogram>,
}

/// Why a webhook call gave no verdict.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Connect(String),
    #[error("{0}")]
    Tls(String),
    #[error("answered {0}")]
    Status(http::StatusCode),
}

/// Spawns the client's connection tasks on the runtime the client was made on: calls
/// come from viewer requests, which may be served on the HTTP server's own I/O threads,
/// and a pooled connection must not live on (and die with) one of those.
#[derive(Debug, Clone)]
struct Home(Option<tokio::runtime::Handle>);

impl<F> hyper::rt::Executor<F> for Home
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        match &self.0 {
            Some(home) => drop(home.spawn(fut)),
            None => TokioExecutor::new().execute(fut),
        }
    }
}

impl Admission {
    /// A client for `cfg` (validated before), its metrics registered into `registry`.
    pub fn new(cfg: AdmissionConfig, registry: &Metrics) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.timeout));
        // hyper-rustls takes https:// URIs from the TCP connector and wraps them.
        connector.enforce_http(false);
        let (tls, no_tls) = match cfg.tls_config() {
            Ok(Some(tls)) => (tls, None),
            // http://: TLS is never used, but the connector wants a configuration.
            Ok(None) => (trust_nobody(), None),
            Err(error) => {
                // Validation loaded it; the files changed since. Every call fails (and
                // the fail mode decides) until a restart.
                tracing::error!(%error, "admission-ca does not load; https webhook calls will fail");
                (trust_nobody(), Some(error.to_string().into()))
            }
        };
        // From a configuration (not the builder): the builder refuses one with ALPN set,
        // and the webhook is offered `http/1.1` as it always was.
        let connector = HttpsConnector::from((connector, tls));
        let client = Client::builder(Home(tokio::runtime::Handle::try_current().ok()))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        let metrics = registry.shared(|r| {
            let m = AdmissionMetrics {
                requests: Family::default(),
                duration: Family::new_with_constructor(duration_histogram),
            };
            r.register(
                "ferrocast_admission_requests",
                "Admission webhook decisions by action and result (allow, deny, error, busy)",
                m.requests.clone(),
            );
            r.register(
                "ferrocast_admission_request_duration_seconds",
                "Admission webhook round trips, errors and timeouts included",
                m.duration.clone(),
            );
            m
        });
        Self {
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1))),
            per_client: Default::default(),
            cfg: Arc::new(cfg),
            client,
            no_tls,
            metrics,
        }
    }

    /// The settings.
    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    /// Asks the webhook about `stream` for `client_ip`; never fails: an error becomes
    /// the fail mode's verdict (and is logged), and a call that finds no free slot
    /// within the timeout, or whose client already has its share of calls in flight, is
    /// a [`Source::Busy`] deny whatever the fail mode.
    pub async fn check(
        &self,
        action: Action,
        stream: &str,
        client_ip: Option<std::net::IpAddr>,
        query: &str,
    ) -> Decision {
        let req = AdmissionRequest {
            action: action.as_str(),
            stream,
            app: "live",
            client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            query,
            node: &self.cfg.node,
        };
        let Some(_share) = share::ClientShare::take(
            &self.per_client,
            share::client_key(client_ip),
            self.cfg.max_in_flight_per_client.max(1),
        ) else {
            return self.busy(action, stream);
        };
        // A slot is waited for within the timeout, then the call has the whole timeout
        // of its own: a call that got its slot at the last moment is still asked, so a
        // fallback (the fail mode) always means the webhook itself could not answer,
        // and no slot in time always means busy. A viewer waits at most twice the
        // timeout.
        let Ok(Ok(_slot)) = tokio::time::timeout(self.cfg.timeout, self.in_flight.acquire()).await
        else {
            return self.busy(action, stream);
        };
        let asked = tokio::time::Instant::now();
        let out = tokio::time::timeout(self.cfg.timeout, self.call(&req))
            .await
            .map_err(|_| CallError::Timeout(self.cfg.timeout));
        self.metrics
            .duration
            .get_or_create(&ActionLabels {
                action: action.as_str(),
            })
            .observe(asked.elapsed().as_secs_f64());
        let out = out.and_then(|r| r);
        let (result, decision) = match out {
            Ok(Verdict::Allow) => (
                "allow",
                Decision {
                    verdict: Verdict::Allow,
                    source: Source::Webhook,
                },
            ),
            Ok(deny) => (
                "deny",
                Decision {
                    verdict: deny,
                    source: Source::Webhook,
                },
            ),
            Err(error) => {
                let verdict = match self.cfg.fail {
                    FailMode::Open => Verdict::Allow,
                    FailMode::Closed => {
                        Verdict::Deny(format!("admission webhook unavailable ({error})").into())
                    }
                };
                tracing::warn!(action = action.as_str(), %stream, %error, fail = ?self.cfg.fail,
                    "admission webhook error");
                (
                    "error",
                    Decision {
                        verdict,
                        source: Source::Fallback,
                    },
                )
            }
        };
        self.metrics
            .requests
            .get_or_create(&OutcomeLabels {
                action: action.as_str(),
                result,
            })
            .inc();
        decision
    }

    /// The deny of a call that found no slot: never the fail mode's allow, since slots
    /// run out exactly when someone floods the node with made-up credentials.
    fn busy(&self, action: Action, stream: &str) -> Decision {
        tracing::debug!(action = action.as_str(), %stream, "admission webhook busy; refused");
        self.metrics
            .requests
            .get_or_create(&OutcomeLabels {
                action: action.as_str(),
                result: "busy",
            })
            .inc();
        Decision {
            verdict: Verdict::Deny("admission webhook busy; try again".into()),
            source: Source::Busy,
        }
    }

    async fn call(&self, req: &AdmissionRequest<'_>) -> Result<Verdict, CallError> {
        let body = Bytes::from(serde_json::to_vec(req).expect("a request serializes"));
        let mut builder = http::Request::post(self.cfg.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("ferrocast/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(secret) = &self.cfg.secret {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string();
            builder = builder
                .header(SIGNATURE_HEADER, sign_body(secret, &ts, &body))
                .header(TIMESTAMP_HEADER, ts);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| CallError::Connect(e.to_string()))?;
        let host = || {
            let host = self.cfg.url.host().unwrap_or_default();
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        };
        if let Some(why) = &self.no_tls {
            return Err(CallError::Tls(format!(
                "TLS handshake with {} failed: no TLS client configuration ({why})",
                host()
            )));
        }
        let resp = self.client.request(request).await.map_err(|e| {
            // A certificate the webhook's should not be trusted for says so, in rustls'
            // words (`invalid peer certificate: UnknownIssuer`).
            match rustls_error(&e) {
                Some(tls) => CallError::Tls(format!("TLS handshake with {} failed: {tls}", host())),
                None => CallError::Connect(error_chain(&e)),
            }
        })?;
        let status = resp.status();
        // The body is read whatever the status: a deny's reason is in it, and a response
        // read to its end returns its connection to the pool, where one dropped with
        // bytes still to come is closed (and the next call pays new TCP and TLS
        // handshakes).
        let text = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(Verdict::Allow);
        }
        if !status.is_client_error() {
            return Err(CallError::Status(status));
        }
        Ok(Verdict::Deny(reason(status, &text).into()))
    }
}

/// `sha256=HEX` of HMAC-SHA256(secret, `"{timestamp}.{body}"`).
pub fn sign_body(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The reason of a deny: `{"reason": "..."}`'s, or the text body, printable and short;
/// the status when there is none.
fn reason(status: http::StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason")?.as_str().map(str::to_owned));
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    let clean = clean.trim();
    if clean.is_empty() {
        format!("denied by the admission webhook ({status})")
    } else {
        format!("denied by the admission webhook: {clean}")
    }
}

/// A client configuration that trusts no certificate, for a connector that must have
/// one but is never to complete a handshake (`http://` URLs, or a CA that stopped
/// loading, whose calls fail before connecting).
fn trust_nobody() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(cfg)
}

/// The rustls error under a client error, if a handshake failed: hyper-rustls wraps it
/// in an `io::Error` (twice), whose `source()` skips the wrapped error itself, so each
/// `io::Error` is opened with `get_ref`.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A scripted webhook: answers each request with the next canned response (after
    /// an optional delay) and records what it got.
    async fn webhook(
        answers: Vec<(Duration, &'static str)>,
    ) -> (http::Uri, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for (delay, answer) in answers {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                // Headers, then the body by its length.
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                tokio::time::sleep(delay).await;
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        (format!("http://{addr}/admit").parse().unwrap(), seen)
    }

    const OK: &str = "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
    const DENY: &str = "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: 34\r\nconnection: close\r\n\r\n{\"reason\":\"subscription\\nexpired\"}";
    const FAIL: &str =
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

    fn admission(url: http::Uri, fail: FailMode, secret: Option<&[u8]>) -> Admission {
        let mut cfg = AdmissionConfig::new(url, "o1");
        cfg.timeout = Duration::from_millis(300);
        cfg.fail = fail;
        cfg.secret = secret.map(Arc::from);
        cfg.validate().unwrap();
        Admission::new(cfg, &Metrics::new())
    }

    fn ip() -> Option<std::net::IpAddr> {
        Some([10, 0, 0, 7].into())
    }

    #[tokio::test]
    async fn answers_map_to_verdicts_and_errors_to_the_fail_mode() {
        let (url, seen) = webhook(vec![
            (Duration::ZERO, OK),
            (Duration::ZERO, DENY),
            (Duration::ZERO, FAIL),
            (Duration::from_secs(2), OK),
        ])
        .await;
        let a = admission(url.clone(), FailMode::Closed, Some(b"s3cret"));
        let d = a.check(Action::Publish, "cam", ip(), "user=7").await;
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.source, Source::Webhook);
        let d = a.check(Action::Play, "cam", ip(), "").await;
        assert_eq!(
            d.verdict,
            Verdict::Deny("denied by the admission webhook: subscription expired".into())
        );
        // A 503 and a timeout: errors, denied when failing closed.
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let d = a.check(Action::Play, "cam", ip(), "").await;
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "bounded by the timeout"
            );
            assert_eq!(d.source, Source::Fallback);
            assert!(
                matches!(&d.verdict, Verdict::Deny(r) if r.contains("admission webhook unavailable")),
                "{d:?}"
            );
        }
        // The first request: JSON body, signed.
        let first = seen.lock().unwrap()[0].clone();
        let (head, body) = first.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"action": "publish", "stream": "cam", "app": "live",
                "client_ip": "10.0.0.7", "query": "user=7", "node": "o1"})
        );
        assert!(head.starts_with("POST /admit HTTP/1.1"), "{head}");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap()
                .to_owned()
        };
        let ts = header(TIMESTAMP_HEADER);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{ts}.{body}").as_bytes());
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(header(SIGNATURE_HEADER), format!("sha256={want}"));
    }

    /// A webhook that accepts every connection and never answers; returns its URL and
    /// how many connections it accepted.
    async fn silent_webhook() -> (
        http::Uri,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: http::Uri = format!("http://{}/admit", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let m = most.clone();
        let server = tokio::spawn(async move {
            let mut socks = Vec::new();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                socks.push(sock);
                m.fetch_max(socks.len(), std::sync::atomic::Ordering::SeqCst);
            }
        });
        (url, most, server)
    }

    #[tokio::test]
    async fn calls_past_the_limit_are_refused_as_busy_even_when_failing_open() {
        let (url, most, server) = silent_webhook().await;
        let mut cfg = AdmissionConfig::new(url, "e1");
        cfg.timeout = Duration::from_millis(400);
        cfg.max_in_flight = 2;
        cfg.fail = FailMode::Open;
        cfg.validate().unwrap();
        let a = Arc::new(Admission::new(cfg, &Metrics::new()));
        let calls: Vec<_> = (0..8u8)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move {
                    // Eight clients, so that no per-client share is what limits them.
                    let ip = Some([10, 0, 0, i].into());
                    a.check(Action::Play, "cam", ip, &format!("viewer={i}"))
                        .await
                })
            })
            .collect();
        let mut seen = Vec::new();
        for c in calls {
            let d = tokio::time::timeout(Duration::from_secs(5), c)
                .await
                .expect("bounded by the timeout")
                .unwrap();
            seen.push(d.source);
            match d.source {
                // Asked and never answered: an outage, which the fail mode decides.
                Source::Fallback => assert_eq!(d.verdict, Verdict::Allow),
                // Never asked: refused, fail mode or not.
                Source::Busy => assert!(matches!(d.verdict, Verdict::Deny(_))),
                Source::Webhook => panic!("the webhook never answers"),
            }
        }
        // Two were asked at once; when they gave up, at most two of the waiting ones
        // (their own wait ending on the same tick) may have taken the slots over; the
        // others were refused.
        let asked = seen.iter().filter(|s| **s == Source::Fallback).count();
        assert!((2..=4).contains(&asked), "{seen:?}");
        assert!(seen.iter().filter(|s| **s == Source::Busy).count() >= 4);
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            asked,
            "the asked calls reached the webhook, the refused ones did not"
        );
        server.abort();
    }

    #[tokio::test]
    async fn one_client_gets_only_its_share_of_the_calls() {
        let (url, most, server) = silent_webhook().await;
        let mut cfg = AdmissionConfig::new(url, "e1");
        cfg.timeout = Duration::from_millis(600);
        cfg.max_in_flight = 8;
        cfg.max_in_flight_per_client = 2;
        cfg.fail = FailMode::Open;
        cfg.validate().unwrap();
        let a = Arc::new(Admission::new(cfg, &Metrics::new()));
        // A flood from one IPv6 /64, a new address per call.
        let flood: Vec<_> = (0..6u16)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move {
                    let ip = Some(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i).into());
                    let started = tokio::time::Instant::now();
                    let d = a
                        .check(Action::Play, "cam", ip, &format!("made-up={i}"))
                        .await;
                    (d, started.elapsed())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another client still finds a slot: it is asked (and, unanswered, fails open).
        let other = a.check(Action::Play, "cam", ip(), "viewer=1").await;
        assert_eq!(
            (other.verdict, other.source),
            (Verdict::Allow, Source::Fallback)
        );
        let mut busy = 0;
        for c in flood {
            let (d, took) = tokio::time::timeout(Duration::from_secs(5), c)
                .await
                .expect("bounded")
                .unwrap();
            if d.source == Source::Busy {
                busy += 1;
                assert!(matches!(d.verdict, Verdict::Deny(_)));
                assert!(
                    took < Duration::from_millis(300),
                    "refused at once: {took:?}"
                );
            }
        }
        assert_eq!(busy, 4, "two calls of the /64 asked, four refused");
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
        // Every share is given back.
        assert!(a.per_client.lock().unwrap().is_empty());
        server.abort();
    }

    #[tokio::test]
    async fn failing_open_allows_when_nobody_answers() {
        // A port nobody listens on.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: http::Uri = format!("http://{}/", dead.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(dead);
        let registry = Metrics::new();
        let mut cfg = AdmissionConfig::new(url, "e1");
        cfg.fail = FailMode::Open;
        let a = Admission::new(cfg.clone(), &registry);
        // A second client on the same registry (a standalone's origin and edge) shares
        // the metrics instead of registering them twice.
        let b = Admission::new(cfg, &registry);
        let d = a.check(Action::Play, "cam", None, "").await;
        b.check(Action::Play, "cam", None, "").await;
        assert_eq!((d.verdict, d.source), (Verdict::Allow, Source::Fallback));
        let text = registry.render();
        assert!(
            text.contains(r#"ferrocast_admission_requests_total{action="play",result="error"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_admission_request_duration_seconds_count{action=\"play\"} 2")
        );
        assert_eq!(
            text.matches("# TYPE ferrocast_admission_requests").count(),
            1
        );
    }

    /// A scratch directory, removed on drop.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("ferrocast-admission-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A test CA and a server certificate it signs for `names` (expired when asked),
    /// written to `dir` as `ca.pem`, `cert.pem`, `key.pem`.
    fn pki(dir: &std::path::Path, names: &[&str], expired: bool) {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        // A name of its own: CAs sharing one would differ only in their signatures.
        p.distinguished_name
            .push(DnType::CommonName, format!("test CA {}", dir.display()));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = p.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    /// What the HTTPS webhook saw.
    #[derive(Debug, Default)]
    struct TlsSeen {
        /// Completed TLS handshakes (one per connection).
        handshakes: usize,
        /// Requests answered.
        requests: usize,
        /// The SNI and ALPN id of each handshake.
        sessions: Vec<(Option<String>, Option<Vec<u8>>)>,
    }

    /// An HTTPS webhook on loopback (hyper over tokio-rustls, keep-alive on): `200` with
    /// a small JSON body, `403` when the request body mentions `mallory`.
    async fn tls_webhook(dir: &std::path::Path) -> (u16, Arc<Mutex<TlsSeen>>) {
        let tls = ferrocast_tls::public_server_config(
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
            &[b"h2", b"http/1.1"],
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(TlsSeen::default()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    {
                        let conn = tls.get_ref().1;
                        let mut l = log.lock().unwrap();
                        l.handshakes += 1;
                        l.sessions.push((
                            conn.server_name().map(str::to_owned),
                            conn.alpn_protocol().map(<[u8]>::to_vec),
                        ));
                    }
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let body = req.into_body().collect().await?.to_bytes();
                                log.lock().unwrap().requests += 1;
                                let (status, answer) = if body.windows(7).any(|w| w == b"mallory") {
                                    (403, &br#"{"reason":"banned"}"#[..])
                                } else {
                                    (200, &br#"{"ok":true}"#[..])
                                };
                                Ok::<_, hyper::Error>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(answer)))
                                        .expect("response"),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (port, seen)
    }

    fn https(host: &str, port: u16, ca: &std::path::Path, fail: FailMode) -> Admission {
        let mut cfg = AdmissionConfig::new(
            format!("https://{host}:{port}/admit").parse().unwrap(),
            "e1",
        );
        cfg.ca = Some(ca.to_owned());
        cfg.fail = fail;
        cfg.timeout = Duration::from_secs(5);
        cfg.validate().unwrap();
        Admission::new(cfg, &Metrics::new())
    }

    #[tokio::test]
    async fn an_https_webhook_is_trusted_through_its_ca_and_one_connection_serves_every_call() {
        let dir = Scratch::new("https-ok");
        pki(&dir.0, &["localhost"], false);
        let (port, seen) = tls_webhook(&dir.0).await;
        let a = https("localhost", port, &dir.0.join("ca.pem"), FailMode::Closed);
        let d = a.check(Action::Publish, "cam", ip(), "").await;
        assert_eq!((d.verdict, d.source), (Verdict::Allow, Source::Webhook));
        for _ in 0..4 {
            let d = a.check(Action::Play, "cam", ip(), "user=ann").await;
            assert_eq!((d.verdict, d.source), (Verdict::Allow, Source::Webhook));
        }
        let d = a.check(Action::Play, "cam", ip(), "user=mallory").await;
        assert_eq!(
            (d.verdict, d.source),
            (
                Verdict::Deny("denied by the admission webhook: banned".into()),
                Source::Webhook
            )
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.requests, 6);
        // One pooled connection; at most a second one, should a call start a moment
        // before the previous call's connection is back in the pool.
        assert!(
            (1..=2).contains(&seen.handshakes),
            "{} TLS handshakes for six calls",
            seen.handshakes
        );
        assert_eq!(
            seen.sessions[0],
            (Some("localhost".to_owned()), Some(b"http/1.1".to_vec())),
            "SNI from the URL's host; ALPN http/1.1"
        );
    }

    #[tokio::test]
    async fn untrusted_certificates_are_errors_that_follow_the_fail_mode() {
        let dir = Scratch::new("https-bad");
        let (good, other, old) = (dir.0.join("good"), dir.0.join("other"), dir.0.join("old"));
        for (d, expired) in [(&good, false), (&other, false), (&old, true)] {
            std::fs::create_dir_all(d).unwrap();
            pki(d, &["localhost"], expired);
        }
        let (port, seen) = tls_webhook(&good).await;
        let (old_port, old_seen) = tls_webhook(&old).await;
        let cases = [
            // Another CA's, a name the certificate is not for, an expired certificate.
            ("localhost", port, other.join("ca.pem"), "UnknownIssuer"),
            ("127.0.0.1", port, good.join("ca.pem"), "not valid for name"),
            ("localhost", old_port, old.join("ca.pem"), "expired"),
        ];
        for (host, port, ca, why) in cases {
            let closed = https(host, port, &ca, FailMode::Closed);
            let d = closed.check(Action::Play, "cam", ip(), "").await;
            assert_eq!(d.source, Source::Fallback, "{why}");
            let Verdict::Deny(reason) = d.verdict else {
                panic!("{why}: failing closed must deny");
            };
            assert!(
                reason.contains("admission webhook unavailable (TLS handshake with ")
                    && reason.contains(why),
                "{why}: {reason}"
            );
            let open = https(host, port, &ca, FailMode::Open);
            let d = open.check(Action::Publish, "cam", ip(), "").await;
            assert_eq!(
                (d.verdict, d.source),
                (Verdict::Allow, Source::Fallback),
                "{why}"
            );
        }
        assert_eq!(
            seen.lock().unwrap().requests,
            0,
            "nothing sent to an untrusted server"
        );
        assert_eq!(old_seen.lock().unwrap().requests, 0);
    }

    #[test]
    fn the_admission_ca_is_checked_at_start() {
        let dir = Scratch::new("ca-check");
        pki(&dir.0, &["localhost"], false);
        let with = |url: &str, ca: Option<std::path::PathBuf>| {
            let mut c = AdmissionConfig::new(url.parse().unwrap(), "n");
            c.ca = ca;
            c.validate()
        };
        with("https://hook.example/a", Some(dir.0.join("ca.pem"))).unwrap();
        std::fs::write(dir.0.join("empty.pem"), "").unwrap();
        std::fs::write(
            dir.0.join("junk.pem"),
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (url, ca, field, why) in [
            (
                "https://hook.example/a",
                "missing.pem",
                "admission-ca",
                "missing.pem",
            ),
            (
                "https://hook.example/a",
                "empty.pem",
                "admission-ca",
                "no CERTIFICATE block",
            ),
            (
                "https://hook.example/a",
                "junk.pem",
                "admission-ca",
                "junk.pem",
            ),
            (
                "http://hook.example/a",
                "ca.pem",
                "admission-ca",
                "only for an https://",
            ),
        ] {
            let err = with(url, Some(dir.0.join(ca))).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(why), "{ca}: {err}");
        }
        // Without --admission-ca: the system bundle, when this machine has one.
        let system = with("https://hook.example/a", None);
        if std::path::Path::new(ferrocast_tls::SYSTEM_CA_BUNDLE).exists() {
            system.unwrap();
        } else {
            let err = system.unwrap_err().to_string();
            assert!(err.contains("admission-ca"), "{err}");
        }
    }
    #[test]
    fn reasons_are_printable_and_short() {
        let s = http::StatusCode::FORBIDDEN;
        assert_eq!(
            reason(s, b""),
            "denied by the admission webhook (403 Forbidden)"
        );
        assert_eq!(
            reason(s, b"no\r\nway"),
            "denied by the admission webhook: no  way"
        );
        assert!(reason(s, &[b'x'; 5000]).len() < 260);
    }
}
