//! The webhook's settings (`--admission-*`): what they mean, their defaults, and the
//! checks that run before any port is bound (the URL, the CA an `https://` URL is
//! trusted through, the bounds of every number). Also the one rule for which address a
//! viewer is counted and asked about (the trusted header, else the peer).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// ALPN id offered to an HTTPS webhook: the client speaks HTTP/1.1 only.
const HTTP1_ALPN: &[u8] = b"http/1.1";

/// What the webhook's silence means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Allow when the webhook cannot answer (availability first).
    Open,
    /// Deny when the webhook cannot answer (the default: nobody slips in during an outage).
    #[default]
    Closed,
}

impl std::str::FromStr for FailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(FailMode::Open),
            "closed" => Ok(FailMode::Closed),
            _ => Err(format!("{s:?}: expected open or closed")),
        }
    }
}

/// The webhook's settings (`--admission-*`).
#[derive(Clone)]
pub struct AdmissionConfig {
    /// Where to POST (`http://` or `https://`).
    pub url: http::Uri,
    /// `https://`: PEM CA certificate(s) the webhook's certificate must chain to; the
    /// system bundle ([`ferrocast_tls::SYSTEM_CA_BUNDLE`]) when unset.
    pub ca: Option<PathBuf>,
    /// The whole exchange (connect, request, answer) must finish within this; a call
    /// may first wait as long for a free slot ([`AdmissionConfig::max_in_flight`]).
    pub timeout: Duration,
    /// What an error means.
    pub fail: FailMode,
    /// Signs each body when set.
    pub secret: Option<Arc<[u8]>>,
    /// Edges: how long a viewer's decision is reused.
    pub cache_ttl: Duration,
    /// Edges: most viewer decisions held.
    pub cache_entries: u64,
    /// This node's id, sent in every request.
    pub node: String,
    /// Edges: a request header with the viewer's address, set by a trusted load balancer
    /// (its first address); the peer address when unset, absent or unparsable.
    pub client_ip_header: Option<http::HeaderName>,
    /// Most webhook calls in flight at once from this node: a flood of distinct viewers
    /// (or of made-up credentials) waits for a slot within the timeout, then is refused
    /// as busy (never allowed, whatever the fail mode), instead of becoming a flood at the
    /// operator's webhook.
    pub max_in_flight: usize,
    /// Most of those calls for one client (an IPv4 address, an IPv6 /64): one client
    /// making up credentials cannot take every slot from the others; its calls past
    /// this share are refused as busy at once.
    pub max_in_flight_per_client: usize,
}

impl std::fmt::Debug for AdmissionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionConfig")
            .field("url", &self.url)
            .field("ca", &self.ca)
            .field("timeout", &self.timeout)
            .field("fail", &self.fail)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_entries", &self.cache_entries)
            .field("node", &self.node)
            .field("client_ip_header", &self.client_ip_header)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_per_client", &self.max_in_flight_per_client)
            .finish()
    }
}

impl AdmissionConfig {
    /// Defaults around `url`: 2 s timeout, fail closed, no secret, 30 s cache.
    pub fn new(url: http::Uri, node: impl Into<String>) -> Self {
        Self {
            url,
            ca: None,
            timeout: Duration::from_secs(2),
            fail: FailMode::Closed,
            secret: None,
            cache_ttl: Duration::from_secs(30),
            cache_entries: 100_000,
            node: node.into(),
            client_ip_header: None,
            max_in_flight: 256,
            max_in_flight_per_client: 16,
        }
    }

    /// The TLS client configuration for an `https://` URL (`None` for `http://`): the
    /// CA bundle read and checked, ALPN `http/1.1`.
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, ferrocast_tls::TlsError> {
        if self.url.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Ok(None);
        }
        ferrocast_tls::public_client_config(self.ca.as_deref(), &[HTTP1_ALPN]).map(Some)
    }

    /// The viewer's address: the first address of the trusted header when one is
    /// configured and the request has a parsable one, else `peer`.
    pub fn client_ip(&self, headers: &http::HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        let Some(name) = &self.client_ip_header else {
            return peer;
        };
        // `x-forwarded-for: client, proxy1, …`; an address may carry a port.
        let first = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .unwrap_or("");
        first
            .parse::<IpAddr>()
            .ok()
            .or_else(|| first.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            .or(peer)
    }

    /// Checks every field; the error names the flag.
    pub fn validate(&self) -> Result<(), ferrocast_runtime::config::ConfigError> {
        let invalid = ferrocast_runtime::config::ConfigError::invalid;
        match self.url.scheme_str() {
            Some("http" | "https") if self.url.host().is_some_and(|h| !h.is_empty()) => {}
            _ => {
                return invalid(
                    "admission-url",
                    "expected http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH",
                )
            }
        }
        if self.url.scheme_str() == Some("http") && self.ca.is_some() {
            return invalid("admission-ca", "only for an https:// admission-url");
        }
        if let Err(e) = self.tls_config() {
            let reason = match &self.ca {
                Some(_) => e.to_string(),
                None => format!(
                    "an https:// admission-url needs a CA: none given and the system bundle is unusable ({e})"
                ),
            };
            return invalid("admission-ca", &reason);
        }
        if self.timeout < Duration::from_millis(10) || self.timeout > Duration::from_secs(60) {
            return invalid("admission-timeout", "must be between 0.01 and 60 seconds");
        }
        if self.cache_ttl > Duration::from_secs(3600) {
            return invalid("admission-cache-ttl", "must be at most 3600 seconds");
        }
        if self.cache_entries == 0 {
            return invalid("admission-cache-entries", "must be at least 1");
        }
        if self.max_in_flight == 0 || self.max_in_flight_per_client == 0 {
            return invalid("admission-max-in-flight", "must be at least 1");
        }
        if self.secret.as_ref().is_some_and(|s| s.is_empty()) {
            return invalid("admission-secret", "must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_header_names_the_viewer() {
        let mut c = AdmissionConfig::new("http://h/".parse().unwrap(), "n");
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        assert_eq!(c.client_ip(&h, peer), peer, "ignored unless configured");
        c.client_ip_header = Some(http::HeaderName::from_static("x-forwarded-for"));
        assert_eq!(c.client_ip(&h, peer), Some([203, 0, 113, 9].into()));
        h.insert("x-forwarded-for", "[2001:db8::7]:443".parse().unwrap());
        assert_eq!(c.client_ip(&h, peer), Some("2001:db8::7".parse().unwrap()));
        h.insert("x-forwarded-for", "unknown".parse().unwrap());
        assert_eq!(c.client_ip(&h, peer), peer, "unparsable: the peer");
        assert_eq!(
            c.client_ip(&http::HeaderMap::new(), peer),
            peer,
            "absent: the peer"
        );
    }

    #[test]
    fn settings_are_validated() {
        let ok = AdmissionConfig::new("http://127.0.0.1:9/x".parse().unwrap(), "n");
        ok.validate().unwrap();
        for (url, field) in [
            ("ftp://example.com/", "admission-url"),
            ("/relative", "admission-url"),
        ] {
            let c = AdmissionConfig::new(url.parse().unwrap(), "n");
            assert!(c.validate().unwrap_err().to_string().contains(field));
        }
        let mut c = ok.clone();
        c.timeout = Duration::ZERO;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("admission-timeout"));
        let mut c = ok;
        c.secret = Some(Arc::from(&b""[..]));
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("admission-secret"));
        assert_eq!("open".parse::<FailMode>(), Ok(FailMode::Open));
        assert!("maybe".parse::<FailMode>().is_err());
    }
}
