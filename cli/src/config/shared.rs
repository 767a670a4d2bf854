//! The flag groups more than one role reads: the node's basics (every role), the HTTP
//! port's connection limits (every role), what a viewer-serving node adds (origin, edge,
//! standalone), the admission webhook (the same three) and joining a controller (origin
//! and edge). Each flag is defined once here, with its one doc line, and flattened into
//! the roles that read it.

use super::{layered, parse_bytes, seconds, Layer};
use anyhow::{bail, Context};
use ferrocast_runtime::admission::AdmissionConfig;
use ferrocast_runtime::telemetry::LogFormat;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Every role: the file, who this node is, its HTTP port, cluster TLS, logs.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct NodeArgs {
    /// TOML file with the same keys as the flags (e.g. `http-listen = "0.0.0.0:8080"`);
    /// flags and environment variables win over it.
    #[arg(long, env = "FERROCAST_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id (default: the host name).
    #[arg(long, env = "FERROCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// HTTP address: playlists, media, the player page and the probes (origin default
    /// 0.0.0.0:8081, edge 0.0.0.0:8080, standalone's edge 127.0.0.1:8080); a
    /// controller's admin endpoints and `/play` (default 0.0.0.0:8090).
    #[arg(long, env = "FERROCAST_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// The host or IP other nodes and viewers reach this node at (default: the listen
    /// address, or 127.0.0.1 when that is unspecified). On a controller: the host that
    /// followers redirect writes to, with the gRPC port (needed when listening on 0.0.0.0
    /// with more than one replica).
    #[arg(long, env = "FERROCAST_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Directory with the cluster CA and this node's certificate and key (`ca.pem`,
    /// `node.pem`, `node-key.pem`; `ferrocast certs DIR` makes a development set).
    #[arg(long, env = "FERROCAST_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Log format: text or json (default text).
    #[arg(long, env = "FERROCAST_LOG_FORMAT")]
    #[serde(deserialize_with = "log_format")]
    pub log_format: Option<LogFormat>,
}
layered!(NodeArgs {
    config,
    node_id,
    http_listen,
    advertise_host,
    tls_dir,
    log_format
});

/// `log-format` in the file, read as its flag is.
fn log_format<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<LogFormat>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map(Some)
        .map_err(|e: String| serde::de::Error::custom(format!("log-format: {e}")))
}

/// Every role: connection limits of the HTTP port (docs/access.md).
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[command(next_help_heading = "HTTP connection limits")]
#[serde(default, rename_all = "kebab-case")]
pub struct HttpLimitArgs {
    /// Most HTTP connections at once; more are accepted and closed at once (default: the
    /// descriptor limit, `ulimit -n`, less a quarter of it, at least 256 kept for
    /// upstream sockets and files; it must stay below the limit).
    #[arg(long, env = "FERROCAST_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Percent of --http-max-connections from which an address may add a connection
    /// only below its fair share, max(1, cap / (2 x addresses connected)); an IPv6 /64
    /// counts as one address (default 75).
    #[arg(long, env = "FERROCAST_HTTP_FAIR_SHARE_FROM")]
    pub http_fair_share_from: Option<u8>,
    /// Seconds from accept to the first complete request (TLS handshake and HTTP/2
    /// preface included), and for each HTTP/1.1 request header (default 10).
    #[arg(long, env = "FERROCAST_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<f64>,
    /// Seconds a connection may stay with no request in progress: between HTTP/1.1
    /// keep-alive requests, or HTTP/2 with no open stream (default 30).
    #[arg(long, env = "FERROCAST_HTTP_IDLE_TIMEOUT")]
    pub http_idle_timeout: Option<f64>,
    /// Seconds a response may go without the client taking any of it before the
    /// connection is closed (a reader that stopped reading, a shut HTTP/2 window;
    /// default 30). Time before the first byte (LL-HLS blocking reloads) is not counted.
    #[arg(long, env = "FERROCAST_HTTP_SEND_TIMEOUT")]
    pub http_send_timeout: Option<f64>,
    /// Seconds of HTTP/2 silence before a keep-alive PING (default 20; 0: no PINGs).
    #[arg(long, env = "FERROCAST_HTTP2_KEEPALIVE_INTERVAL")]
    pub http2_keepalive_interval: Option<f64>,
    /// Seconds a keep-alive PING has to be answered before the connection is closed
    /// (default 20).
    #[arg(long, env = "FERROCAST_HTTP2_KEEPALIVE_TIMEOUT")]
    pub http2_keepalive_timeout: Option<f64>,
    /// Most bytes of request header held per connection, with an optional K suffix
    /// (HTTP/1.1 read buffer, HTTP/2 header list; default 32K, at least 8K).
    #[arg(long, env = "FERROCAST_HTTP_MAX_HEADER_BYTES")]
    pub http_max_header_bytes: Option<String>,
    /// Length of the kernel's queue of HTTP connections not yet accepted (default 4096;
    /// capped by net.core.somaxconn).
    #[arg(long, env = "FERROCAST_HTTP_LISTEN_BACKLOG")]
    pub http_listen_backlog: Option<u32>,
}
layered!(HttpLimitArgs {
    http_max_connections,
    http_fair_share_from,
    http_header_timeout,
    http_idle_timeout,
    http_send_timeout,
    http2_keepalive_interval,
    http2_keepalive_timeout,
    http_max_header_bytes,
    http_listen_backlog
});

impl HttpLimitArgs {
    /// Sets what was given on `limits` and checks the result
    /// ([`ServerLimits::validate`](ferrocast_runtime::http::ServerLimits::validate)).
    pub fn apply(&self, limits: &mut ferrocast_runtime::http::ServerLimits) -> anyhow::Result<()> {
        if let Some(v) = self.http_max_connections {
            limits.max_connections = v;
        }
        if let Some(v) = self.http_fair_share_from {
            limits.fair_share_from_percent = v;
        }
        if let Some(v) = self.http_header_timeout {
            limits.header_read_timeout = seconds("http-header-timeout", v)?;
        }
        if let Some(v) = self.http_idle_timeout {
            limits.idle_timeout = seconds("http-idle-timeout", v)?;
        }
        if let Some(v) = self.http_send_timeout {
            limits.send_timeout = seconds("http-send-timeout", v)?;
        }
        match self.http2_keepalive_interval {
            Some(0.0) => limits.http2_keepalive_interval = None,
            Some(v) => {
                limits.http2_keepalive_interval = Some(seconds("http2-keepalive-interval", v)?)
            }
            None => {}
        }
        if let Some(v) = self.http2_keepalive_timeout {
            limits.http2_keepalive_timeout = seconds("http2-keepalive-timeout", v)?;
        }
        if let Some(v) = &self.http_max_header_bytes {
            let n = parse_bytes(v).context("invalid http-max-header-bytes")?;
            limits.max_header_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(v) = self.http_listen_backlog {
            limits.listen_backlog = v;
        }
        limits.validate()?;
        Ok(())
    }
}

/// Origin, edge and standalone: what a node that serves viewers adds.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ServingArgs {
    /// This node's region, used for viewer placement.
    #[arg(long, env = "FERROCAST_REGION")]
    pub region: Option<String>,
    /// The admin HTTP address, host:port, serving `/metrics`, `/healthz`, `/readyz` and
    /// every stream on `/api/streams` (edge default 0.0.0.0:9080, origin 0.0.0.0:9081,
    /// standalone 127.0.0.1:9080). Viewers are not meant to reach it: the HTTP port
    /// keeps only the probes and the streams anyone may watch.
    #[arg(long, env = "FERROCAST_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS on the HTTP port (HTTP/2 by ALPN); plain HTTP
    /// (HTTP/1.1 and h2c) without it.
    #[arg(long, env = "FERROCAST_HTTPS_CERT", requires = "https_key")]
    pub https_cert: Option<PathBuf>,
    /// PEM private key for `--https-cert`.
    #[arg(long, env = "FERROCAST_HTTPS_KEY", requires = "https_cert")]
    pub https_key: Option<PathBuf>,
}

// By hand for `region`: an empty FERROCAST_REGION (a Downward API label the node lacks)
// means unset, so the file's region shows through.
impl Layer for ServingArgs {
    fn under(self, lower: Self) -> Self {
        Self {
            region: self
                .region
                .filter(|r| !r.trim().is_empty())
                .under(lower.region),
            admin_listen: self.admin_listen.under(lower.admin_listen),
            https_cert: self.https_cert.under(lower.https_cert),
            https_key: self.https_key.under(lower.https_key),
        }
    }
}

impl ServingArgs {
    /// The region, "default" when none is given (or an empty one).
    pub fn region(&self) -> String {
        self.region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "default".to_owned())
    }

    /// The HTTPS pair as given, checked to go together.
    pub fn https_pair(&self) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        match (&self.https_cert, &self.https_key) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) => Ok(None),
            _ => bail!("invalid https-cert: https-cert and https-key go together"),
        }
    }

    /// The HTTP port's TLS, when `--https-cert` is given.
    pub fn https(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        self.https_pair()?
            .map(|(cert, key)| {
                ferrocast_runtime::tls::https_server_config(&cert, &key)
                    .context("invalid https-cert/https-key")
            })
            .transpose()
    }
}

/// Origin and edge: joining a controller.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct JoinArgs {
    /// Controller gRPC addresses, comma-separated (any replica; the leader is found).
    /// Without one an origin decides alone and an edge uses --origin.
    #[arg(long, env = "FERROCAST_CONTROLLER", value_delimiter = ',')]
    pub controller: Vec<String>,
}
layered!(JoinArgs { controller });

/// Origin, edge and standalone: the admission webhook (docs/access.md, "Admission
/// webhook").
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[command(next_help_heading = "Admission webhook")]
#[serde(default, rename_all = "kebab-case")]
pub struct AdmissionArgs {
    /// An operator's URL (http:// or https://) POSTed on each publish (before the stream
    /// is claimed) and on each new viewer (default: none).
    #[arg(long, env = "FERROCAST_ADMISSION_URL")]
    pub admission_url: Option<String>,
    /// Seconds the webhook has to answer, connection included (default 2).
    #[arg(long, env = "FERROCAST_ADMISSION_TIMEOUT")]
    pub admission_timeout: Option<f64>,
    /// What a webhook that cannot answer (timeout, 5xx, unreachable) means: `closed`
    /// (deny; the default) or `open` (allow).
    #[arg(long, env = "FERROCAST_ADMISSION_FAIL")]
    pub admission_fail: Option<String>,
    /// Signs each webhook request: `x-ferrocast-signature: sha256=HEX` of HMAC-SHA256
    /// over `"{x-ferrocast-timestamp}.{body}"` (default: unsigned).
    #[arg(long, env = "FERROCAST_ADMISSION_SECRET", hide_env_values = true)]
    pub admission_secret: Option<String>,
    /// Seconds a viewer's decision is reused (per stream, client IP and credential;
    /// default 30; 0 asks on every request).
    #[arg(long, env = "FERROCAST_ADMISSION_CACHE_TTL")]
    pub admission_cache_ttl: Option<f64>,
    /// PEM CA certificate(s) an https:// webhook's certificate must chain to (default:
    /// the system bundle, /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, env = "FERROCAST_ADMISSION_CA")]
    pub admission_ca: Option<PathBuf>,
}
layered!(AdmissionArgs {
    admission_url,
    admission_timeout,
    admission_fail,
    admission_secret,
    admission_cache_ttl,
    admission_ca
});

impl AdmissionArgs {
    /// The webhook's configuration, when `admission-url` is set (the node id is filled
    /// in later); the other `admission-*` settings without it are an error, not ignored.
    /// `client_ip_header` is the edge's `--admission-client-ip-header`.
    pub fn resolve(
        self,
        client_ip_header: Option<String>,
    ) -> anyhow::Result<Option<AdmissionConfig>> {
        let Some(url) = self.admission_url.filter(|u| !u.trim().is_empty()) else {
            if self.admission_timeout.is_some()
                || self.admission_fail.is_some()
                || self.admission_secret.is_some()
                || self.admission_cache_ttl.is_some()
                || self.admission_ca.is_some()
                || client_ip_header.is_some()
            {
                bail!("invalid admission-url: the other admission settings need it");
            }
            return Ok(None);
        };
        let url: http::Uri = url
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid admission-url: {e}"))?;
        let mut cfg = AdmissionConfig::new(url, "");
        if let Some(v) = self.admission_timeout {
            cfg.timeout = seconds("admission-timeout", v)?;
        }
        if let Some(v) = self.admission_fail {
            cfg.fail = v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("invalid admission-fail: {e}"))?;
        }
        cfg.secret = self
            .admission_secret
            .map(|s| std::sync::Arc::from(s.into_bytes()));
        if let Some(v) = self.admission_cache_ttl {
            if !(0.0..=3600.0).contains(&v) {
                bail!("invalid admission-cache-ttl: must be between 0 and 3600 seconds");
            }
            cfg.cache_ttl = Duration::from_secs_f64(v);
        }
        cfg.ca = self.admission_ca;
        if let Some(h) = client_ip_header.filter(|h| !h.trim().is_empty()) {
            cfg.client_ip_header = Some(
                http::HeaderName::try_from(h.trim())
                    .map_err(|e| anyhow::anyhow!("invalid admission-client-ip-header: {e}"))?,
            );
        }
        cfg.validate()?;
        Ok(Some(cfg))
    }
}
