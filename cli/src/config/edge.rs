//! `ferrocast edge`: its flags (the viewer-cache group, which standalone's embedded edge
//! reads too, plus the shared groups) and their validation into an [`EdgeConfig`].

use super::shared::{AdmissionArgs, HttpLimitArgs, JoinArgs, NodeArgs, ServingArgs};
use super::{anywhere, layered, load, node_id_from_certificate, node_id_or_host};
use super::{parse_bytes, resolve_addr, seconds, Role, RoleArgs, Settings};
use anyhow::{bail, Context};
use ferrocast_edge::EdgeConfig;
use serde::Deserialize;
use std::path::Path;

/// Edge and standalone: the object cache, viewer threads and what viewers are told.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[command(next_help_heading = "Edge")]
#[serde(default, rename_all = "kebab-case")]
pub struct EdgeServeArgs {
    /// Most bytes the object cache holds, with an optional K/M/G suffix (default 512M).
    #[arg(long, env = "FERROCAST_CACHE_CAPACITY")]
    pub cache_capacity: Option<String>,
    /// Seconds without a viewer before a stream is unsubscribed (default 30).
    #[arg(long, env = "FERROCAST_IDLE_UNSUBSCRIBE")]
    pub idle_unsubscribe: Option<f64>,
    /// Serve viewer connections on this many threads of their own, each with its own
    /// event loop, as nginx runs a worker per core (default: one per core; 0: on the
    /// node's shared runtime).
    #[arg(long, env = "FERROCAST_HTTP_IO_THREADS")]
    pub http_io_threads: Option<usize>,
    /// The base URL viewers reach this edge at, which `/play` redirects to (e.g.
    /// `https://edge-3.cdn.example.com`; default: http(s)://ADVERTISE-HOST:PORT).
    #[arg(long, env = "FERROCAST_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A request header with the viewer's address, set by the load balancer in front
    /// (e.g. `x-forwarded-for`; its first address), told to the admission webhook
    /// instead of the peer address. Only for a balancer that sets it on every request:
    /// a viewer reaching the edge directly could send any address (default: none).
    #[arg(long, env = "FERROCAST_ADMISSION_CLIENT_IP_HEADER")]
    pub admission_client_ip_header: Option<String>,
}
layered!(EdgeServeArgs {
    cache_capacity,
    idle_unsubscribe,
    http_io_threads,
    public_url,
    admission_client_ip_header
});

impl EdgeServeArgs {
    /// Sets what was given on `edge`.
    pub fn apply(&self, edge: &mut EdgeConfig) -> anyhow::Result<()> {
        if let Some(v) = &self.cache_capacity {
            edge.cache_capacity = parse_bytes(v).context("invalid cache-capacity")?;
        }
        if let Some(v) = self.idle_unsubscribe {
            edge.idle_unsubscribe = seconds("idle-unsubscribe", v)?;
        }
        // One per core by default: on this kind of machine they carry 1.2-1.3 times the
        // requests of the shared runtime (docs/benchmarks.md, "The 10,000-viewer goal").
        let io_threads = self
            .http_io_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if io_threads > 256 {
            bail!("invalid http-io-threads: {io_threads} (at most 256)");
        }
        edge.http.io_threads = (io_threads > 0).then_some(io_threads);
        Ok(())
    }

    /// `--public-url`, checked: `http` or `https`, a host, no query or fragment;
    /// returned without a trailing slash so paths append to it.
    pub fn public_url(&self) -> anyhow::Result<Option<String>> {
        let Some(url) = &self.public_url else {
            return Ok(None);
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid public-url {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => bail!("invalid public-url {url:?}: must start with http:// or https://"),
        }
        if uri.host().is_none_or(str::is_empty) {
            bail!("invalid public-url {url:?}: no host");
        }
        if uri.query().is_some() || url.contains('#') {
            bail!("invalid public-url {url:?}: no query or fragment");
        }
        Ok(Some(url.trim_end_matches('/').to_owned()))
    }
}

/// `ferrocast edge`.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EdgeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub serving: ServingArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub join: JoinArgs,
    /// The origin's QUIC address, host:port (without --controller, which assigns origins).
    #[arg(long, env = "FERROCAST_ORIGIN")]
    pub origin: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub edge: EdgeServeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub admission: AdmissionArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpLimitArgs,
}
layered!(EdgeArgs {
    node,
    serving,
    join,
    origin,
    edge,
    admission,
    http
});

impl RoleArgs for EdgeArgs {
    fn config_file(&self) -> Option<&Path> {
        self.node.config.as_deref()
    }
}

impl EdgeArgs {
    /// Flags and environment over the file over defaults, checked.
    pub fn validate(self) -> anyhow::Result<Settings> {
        let a = load(self)?;
        let mut edge = EdgeConfig::default();
        if let Some(h) = a.node.http_listen {
            edge.http_listen = h;
        }
        edge.admin_listen = Some(a.serving.admin_listen.unwrap_or(anywhere(9080)));
        edge.http.tls = a.serving.https()?;
        a.edge.apply(&mut edge)?;
        a.http.apply(&mut edge.http)?;
        let public_url = a.edge.public_url()?;
        edge.admission = a
            .admission
            .resolve(a.edge.admission_client_ip_header.clone())?;
        edge.validate()?;
        let controllers = a.join.controller;
        let origin_addr = match &a.origin {
            Some(o) => Some(resolve_addr(o).context("invalid origin")?),
            None => None,
        };
        if origin_addr.is_none() && controllers.is_empty() {
            bail!(
                "invalid origin: an edge needs --controller URL or --origin HOST:PORT (the origin's QUIC address)"
            );
        }
        let Some(dir) = &a.node.tls_dir else {
            bail!("invalid tls-dir: an edge needs the cluster certificates (--tls-dir DIR)");
        };
        let node_id = node_id_or_host(node_id_from_certificate(
            dir,
            Role::Edge,
            a.node.node_id,
            &controllers,
        )?);
        if let Some(adm) = edge.admission.as_mut() {
            adm.node = node_id.clone();
        }
        Ok(Settings {
            node_id,
            region: a.serving.region(),
            log_format: a.node.log_format.unwrap_or_default(),
            origin: Default::default(),
            edge,
            tls_dir: a.node.tls_dir,
            origin_addr,
            controller: Default::default(),
            controllers,
            advertise_host: a.node.advertise_host,
            public_url,
        })
    }
}
