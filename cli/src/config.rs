//! Node configuration from flags, `FERROCAST_*` environment variables and a TOML file,
//! in that order of precedence, with the same names everywhere (`--rtmp-listen`,
//! `FERROCAST_RTMP_LISTEN`, `rtmp-listen = "..."`). Everything is validated before a
//! socket is bound; an error names the field.

use anyhow::{bail, Context};
use ferrocast_controller::access::PublishAuth;
use ferrocast_controller::ControllerConfig;
use ferrocast_edge::EdgeConfig;
use ferrocast_origin::OriginConfig;
use ferrocast_runtime::admission::AdmissionConfig;
use ferrocast_runtime::telemetry::LogFormat;
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Flags shared by every node role (each role uses the ones that concern it).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// TOML file with the same keys as the flags (e.g. `rtmp-listen = "0.0.0.0:1935"`).
    #[arg(long, env = "FERROCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id (default: the host name).
    #[arg(long, env = "FERROCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// This node's region, used for viewer placement.
    #[arg(long, env = "FERROCAST_REGION")]
    pub region: Option<String>,
    /// RTMP ingest address, host:port (origin; default 0.0.0.0:1935).
    #[arg(long, env = "FERROCAST_RTMP_LISTEN")]
    pub rtmp_listen: Option<SocketAddr>,
    /// HTTP address for playlists, media, the player page and admin endpoints
    /// (origin default 0.0.0.0:8081, edge and standalone 0.0.0.0:8080, controller
    /// 0.0.0.0:8090 with the admin endpoints only).
    #[arg(long, env = "FERROCAST_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Origin, edge and standalone: the admin HTTP address, host:port, serving
    /// `/metrics`, `/healthz`, `/readyz` and every stream on `/api/streams` (edge default
    /// 0.0.0.0:9080, origin 0.0.0.0:9081, standalone 127.0.0.1:9080). Viewers are not
    /// meant to reach it: the HTTP port keeps only the probes and the streams anyone may
    /// watch.
    #[arg(long, env = "FERROCAST_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Standalone only: the embedded origin's HTTP address (default 127.0.0.1:8081).
    #[arg(long, env = "FERROCAST_ORIGIN_HTTP_LISTEN")]
    pub origin_http_listen: Option<SocketAddr>,
    /// QUIC address edges pull from, host:port/udp (origin; default 0.0.0.0:4433).
    #[arg(long, env = "FERROCAST_QUIC_LISTEN")]
    pub quic_listen: Option<SocketAddr>,
    /// Directory with the cluster CA and this node's certificate and key (`ca.pem`,
    /// `node.pem`, `node-key.pem`; `ferrocast certs DIR` makes a development set).
    #[arg(long, env = "FERROCAST_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// PEM certificate chain for HTTPS on the HTTP port (HTTP/2 by ALPN); plain HTTP
    /// (HTTP/1.1 and h2c) without it.
    #[arg(long, env = "FERROCAST_HTTPS_CERT", requires = "https_key")]
    pub https_cert: Option<PathBuf>,
    /// PEM private key for `--https-cert`.
    #[arg(long, env = "FERROCAST_HTTPS_KEY", requires = "https_cert")]
    pub https_key: Option<PathBuf>,
    /// Origin: directory where stream continuity is kept across restarts, so a publisher
    /// reconnecting after a crash continues numbering (default: memory only).
    #[arg(long, env = "FERROCAST_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Edge: the origin's QUIC address, host:port (until the controller assigns origins).
    #[arg(long, env = "FERROCAST_ORIGIN")]
    pub origin: Option<String>,
    /// Edge: most bytes the object cache holds, with an optional K/M/G suffix (default 512M).
    #[arg(long, env = "FERROCAST_CACHE_CAPACITY")]
    pub cache_capacity: Option<String>,
    /// Edge: seconds without a viewer before a stream is unsubscribed (default 30).
    #[arg(long, env = "FERROCAST_IDLE_UNSUBSCRIBE")]
    pub idle_unsubscribe: Option<f64>,
    /// Edge: serve viewer connections on this many threads of their own, each with its own
    /// event loop, as nginx runs a worker per core (default: one per core; 0: on the
    /// node's shared runtime).
    #[arg(long, env = "FERROCAST_HTTP_IO_THREADS")]
    pub http_io_threads: Option<usize>,
    // --- Connection limits of the HTTP port (origin, edge, standalone; docs/access.md) ---
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
    /// Target segment duration in seconds; segments are cut at the next keyframe (default 2).
    #[arg(long, env = "FERROCAST_SEGMENT_TARGET")]
    pub segment_target: Option<f64>,
    /// Maximum LL-HLS part duration in seconds (default 0.25).
    #[arg(long, env = "FERROCAST_PART_TARGET")]
    pub part_target: Option<f64>,
    /// Segments listed in the playlist (default 10).
    #[arg(long, env = "FERROCAST_WINDOW_SEGMENTS")]
    pub window_segments: Option<usize>,
    /// Seconds a dropped publisher has to come back and continue the stream (default 10).
    #[arg(long, env = "FERROCAST_RECONNECT_GRACE")]
    pub reconnect_grace: Option<f64>,
    /// Most RTMP connections from one IP address (default 32).
    #[arg(long, env = "FERROCAST_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds an RTMP client has to complete the handshake (default 10).
    #[arg(long, env = "FERROCAST_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<f64>,
    /// Seconds of silence after which an RTMP connection is closed (default 30).
    #[arg(long, env = "FERROCAST_IDLE_TIMEOUT")]
    pub idle_timeout: Option<f64>,
    /// Log format: text or json (default text).
    #[arg(long, env = "FERROCAST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Controller: gRPC address for the node and operator APIs (default 0.0.0.0:50051
    /// with --tls-dir, 127.0.0.1:50051 without: see --insecure-node-api).
    #[arg(long, env = "FERROCAST_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Controller: serve the node API without --tls-dir on an address other than
    /// loopback. Nodes are then not known by a certificate: any client that reaches the
    /// port may act as any node. Only for a network that cluster nodes alone reach
    /// (default: off; such a --grpc-listen is refused).
    #[arg(long, env = "FERROCAST_INSECURE_NODE_API")]
    pub insecure_node_api: bool,
    /// Controller: etcd endpoints, comma-separated (default: none, in-memory state and a
    /// lone controller).
    #[arg(long, env = "FERROCAST_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Controller: PEM CA certificate(s) of the etcd members; turns on TLS to etcd
    /// (default: none, plaintext).
    #[arg(long, env = "FERROCAST_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Controller: PEM client certificate for etcd's `--client-cert-auth` (needs --etcd-ca
    /// and --etcd-key; default: none).
    #[arg(long, env = "FERROCAST_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Controller: PEM private key of --etcd-cert.
    #[arg(long, env = "FERROCAST_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// Controller: etcd user to authenticate as; the password comes from
    /// FERROCAST_ETCD_PASSWORD or --etcd-password-file, never a flag (default: none).
    #[arg(long, env = "FERROCAST_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// Controller: a file holding the password of --etcd-user (one line).
    #[arg(long, env = "FERROCAST_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// Controller: bearer token operator calls must carry (default: none, operator calls
    /// are open).
    #[arg(long, env = "FERROCAST_OPERATOR_TOKEN")]
    pub operator_token: Option<String>,
    /// Controller: a bearer token allowed only the operator reads (lists, gets, resolve,
    /// events); needs --operator-token (default: none).
    #[arg(long, env = "FERROCAST_OPERATOR_READ_TOKEN")]
    pub operator_read_token: Option<String>,
    /// Controller and standalone: `closed` (publishers need a publish key or a signed
    /// publish token; the controller's default) or `open` (anyone may publish;
    /// standalone's default, announced with a warning).
    #[arg(long, env = "FERROCAST_PUBLISH_AUTH")]
    pub publish_auth: Option<String>,
    /// Controller: seconds a node's registration (and the leader's) lives without a
    /// heartbeat (default 5; at least 2 with etcd).
    #[arg(long, env = "FERROCAST_LEASE_TTL")]
    pub lease_ttl: Option<f64>,
    /// Origin and edge: controller gRPC addresses, comma-separated (any replica; the
    /// leader is found). Without one an origin decides alone and an edge uses --origin.
    #[arg(long, env = "FERROCAST_CONTROLLER", value_delimiter = ',')]
    pub controller: Vec<String>,
    /// The host or IP other nodes and viewers reach this node at (default: the listen
    /// address, or 127.0.0.1 when that is unspecified). On a controller: the host that
    /// followers redirect writes to, with the gRPC port (needed when listening on 0.0.0.0
    /// with more than one replica).
    #[arg(long, env = "FERROCAST_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Edge: the base URL viewers reach this edge at, which `/play` redirects to (e.g.
    /// `https://edge-3.cdn.example.com`; default: http(s)://ADVERTISE-HOST:PORT).
    #[arg(long, env = "FERROCAST_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Controller: a client address block and its viewer region, `CIDR=REGION`
    /// (e.g. `10.1.0.0/16=eu-west`); repeat it, or comma-separate in the environment. The
    /// longest matching prefix wins (default: none).
    #[arg(
        long = "region-cidr",
        env = "FERROCAST_REGION_CIDR",
        value_delimiter = ','
    )]
    pub region_cidr: Vec<String>,
    /// Controller: a request header with the viewer's region, set by a trusted load
    /// balancer (e.g. `x-client-region`); wins over `--region-cidr` (default: none).
    #[arg(long, env = "FERROCAST_REGION_HEADER")]
    pub region_header: Option<String>,

    // --- Admission webhook (docs/access.md, "Admission webhook") ---
    /// Origin, edge and standalone: an operator's URL (http:// or https://) POSTed on
    /// each publish (before the stream is claimed) and on each new viewer (default: none).
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
    /// Edge: seconds a viewer's decision is reused (per stream, client IP and
    /// credential; default 30; 0 asks on every request).
    #[arg(long, env = "FERROCAST_ADMISSION_CACHE_TTL")]
    pub admission_cache_ttl: Option<f64>,
    /// PEM CA certificate(s) an https:// webhook's certificate must chain to (default:
    /// the system bundle, /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, env = "FERROCAST_ADMISSION_CA")]
    pub admission_ca: Option<PathBuf>,
    /// Edge and standalone: a request header with the viewer's address, set by the load
    /// balancer in front (e.g. `x-forwarded-for`; its first address), told to the webhook
    /// instead of the peer address. Only for a balancer that sets it on every request:
    /// a viewer reaching the edge directly could send any address (default: none).
    #[arg(long, env = "FERROCAST_ADMISSION_CLIENT_IP_HEADER")]
    pub admission_client_ip_header: Option<String>,
    // TLS on every hop (docs/access.md). `--tls-dir` on a controller turns on TLS on its
    // gRPC port, with client certificates of the cluster CA for nodes.
    /// Origin and standalone: RTMPS ingest address, host:port (default: off; 443 is
    /// usual, the docs use 1936). Uses --rtmps-cert/--rtmps-key, else the HTTPS pair.
    #[arg(long, env = "FERROCAST_RTMPS_LISTEN")]
    pub rtmps_listen: Option<SocketAddr>,
    /// PEM certificate chain for RTMPS (default: --https-cert).
    #[arg(long, env = "FERROCAST_RTMPS_CERT", requires = "rtmps_key")]
    pub rtmps_cert: Option<PathBuf>,
    /// PEM private key for `--rtmps-cert`.
    #[arg(long, env = "FERROCAST_RTMPS_KEY", requires = "rtmps_cert")]
    pub rtmps_key: Option<PathBuf>,
    /// Controller: PEM CA certificate(s) of operator client certificates, whose common
    /// name `admin:NAME` or `read:NAME` gives the role (needs --tls-dir; default: none).
    #[arg(long, env = "FERROCAST_OPERATOR_CA")]
    pub operator_ca: Option<PathBuf>,
}

/// The TOML file: the same keys as the flags, nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    node_id: Option<String>,
    region: Option<String>,
    rtmp_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    origin_http_listen: Option<SocketAddr>,
    quic_listen: Option<SocketAddr>,
    tls_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    https_cert: Option<PathBuf>,
    https_key: Option<PathBuf>,
    origin: Option<String>,
    cache_capacity: Option<String>,
    idle_unsubscribe: Option<f64>,
    http_io_threads: Option<usize>,
    http_max_connections: Option<usize>,
    http_fair_share_from: Option<u8>,
    http_header_timeout: Option<f64>,
    http_idle_timeout: Option<f64>,
    http_send_timeout: Option<f64>,
    http2_keepalive_interval: Option<f64>,
    http2_keepalive_timeout: Option<f64>,
    http_max_header_bytes: Option<String>,
    http_listen_backlog: Option<u32>,
    segment_target: Option<f64>,
    part_target: Option<f64>,
    window_segments: Option<usize>,
    reconnect_grace: Option<f64>,
    max_connections_per_ip: Option<usize>,
    handshake_timeout: Option<f64>,
    idle_timeout: Option<f64>,
    log_format: Option<String>,
    grpc_listen: Option<SocketAddr>,
    insecure_node_api: Option<bool>,
    etcd: Option<Vec<String>>,
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    etcd_user: Option<String>,
    etcd_password_file: Option<PathBuf>,
    operator_token: Option<String>,
    operator_read_token: Option<String>,
    publish_auth: Option<String>,
    lease_ttl: Option<f64>,
    controller: Option<Vec<String>>,
    advertise_host: Option<String>,
    public_url: Option<String>,
    region_cidr: Option<Vec<String>>,
    region_header: Option<String>,
    admission_url: Option<String>,
    admission_timeout: Option<f64>,
    admission_fail: Option<String>,
    admission_secret: Option<String>,
    admission_cache_ttl: Option<f64>,
    admission_ca: Option<PathBuf>,
    admission_client_ip_header: Option<String>,
    // TLS on every hop.
    rtmps_listen: Option<SocketAddr>,
    rtmps_cert: Option<PathBuf>,
    rtmps_key: Option<PathBuf>,
    operator_ca: Option<PathBuf>,
}

/// Which node(s) this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// RTMP ingest, packaging, origin HTTP, the QUIC relay.
    Origin,
    /// Viewer HTTP fed from an origin over QUIC.
    Edge,
    /// Origin and edge in one process, on loopback, with generated certificates.
    Standalone,
    /// The controller: cluster state, placement, failover.
    Controller,
}

/// Resolved settings for one process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node id.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// Log format.
    pub log_format: LogFormat,
    /// The origin's configuration (origin and standalone).
    pub origin: OriginConfig,
    /// The edge's configuration (edge and standalone).
    pub edge: EdgeConfig,
    /// Cluster TLS directory, if given.
    pub tls_dir: Option<PathBuf>,
    /// Edge: the origin's QUIC address.
    pub origin_addr: Option<SocketAddr>,
    /// The controller's configuration (controller; standalone embeds one).
    pub controller: ControllerConfig,
    /// Origin and edge: controller gRPC addresses (empty: no controller).
    pub controllers: Vec<String>,
    /// Origin and edge: the host other nodes and viewers reach this node at.
    pub advertise_host: Option<String>,
    /// Edge: the base URL viewers are sent to (no trailing slash).
    pub public_url: Option<String>,
}

impl Settings {
    /// Merges flags/env over the file over defaults and validates the result.
    pub fn resolve(args: NodeArgs, role: Role) -> anyhow::Result<Self> {
        // First: the HTTP connection caps' defaults are derived from the descriptor
        // limit, so it must be the one the node will run with.
        ferrocast_runtime::net::raise_descriptor_limit();
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let log_format = match (args.log_format, file.log_format) {
            (Some(f), _) => f,
            (None, Some(f)) => f
                .parse()
                .map_err(|e: String| anyhow::anyhow!("log-format: {e}"))?,
            (None, None) => LogFormat::Text,
        };
        let mut origin = OriginConfig::default();
        let mut edge = EdgeConfig::default();
        if role == Role::Standalone {
            // A laptop default: nothing listens beyond this machine unless asked to.
            let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
            origin.rtmp_listen = local(1935);
            origin.http_listen = local(8081);
            origin.quic_listen = local(0);
            edge.http_listen = local(8080);
        }
        let mut controller = ControllerConfig::default();
        if role == Role::Standalone {
            // The embedded controller: gRPC for `ferrocast ctl` on loopback, admin HTTP
            // on a free loopback port (the edge answers /play and /metrics).
            controller.grpc_listen = SocketAddr::from(([127, 0, 0, 1], 50051));
            controller.http_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        if let Some(a) = args.rtmp_listen.or(file.rtmp_listen) {
            origin.rtmp_listen = a;
        }
        let http = args.http_listen.or(file.http_listen);
        match role {
            Role::Controller => controller.http_listen = http.unwrap_or(controller.http_listen),
            Role::Origin => origin.http_listen = http.unwrap_or(origin.http_listen),
            Role::Edge | Role::Standalone => edge.http_listen = http.unwrap_or(edge.http_listen),
        }
        // The operators' port: every node that serves viewers has one, so that /metrics
        // and the protected streams' names never share the viewers' port. Standalone's
        // one admin port serves the edge's view (its metrics registry is the process's).
        let admin = args.admin_listen.or(file.admin_listen);
        match role {
            Role::Controller if admin.is_some() => {
                bail!("invalid admin-listen: the controller's http-listen is its admin port")
            }
            Role::Controller => {}
            Role::Origin => {
                origin.admin_listen = Some(admin.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9081))));
            }
            Role::Edge => {
                edge.admin_listen = Some(admin.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9080))));
            }
            Role::Standalone => {
                edge.admin_listen = Some(admin.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9080))));
            }
        }
        if let Some(a) = args.origin_http_listen.or(file.origin_http_listen) {
            if role != Role::Standalone {
                bail!("invalid origin-http-listen: only for standalone (use http-listen)");
            }
            origin.http_listen = a;
        }
        if let Some(a) = args.quic_listen.or(file.quic_listen) {
            origin.quic_listen = a;
        }
        let p = &mut origin.streams.packager;
        if let Some(v) = args.segment_target.or(file.segment_target) {
            p.segment_target = v;
        }
        if let Some(v) = args.part_target.or(file.part_target) {
            p.part_target = v;
        }
        if let Some(v) = args.window_segments.or(file.window_segments) {
            p.window_segments = v;
        }
        if let Some(v) = args.reconnect_grace.or(file.reconnect_grace) {
            if !(0.0..=3600.0).contains(&v) {
                bail!("invalid reconnect-grace: must be between 0 and 3600 seconds");
            }
            origin.streams.reconnect_grace = Duration::from_secs_f64(v);
        }
        if let Some(v) = args.max_connections_per_ip.or(file.max_connections_per_ip) {
            if v == 0 {
                bail!("invalid max-connections-per-ip: must be at least 1");
            }
            origin.ingest.max_connections_per_ip = v;
        }
        if let Some(v) = args.handshake_timeout.or(file.handshake_timeout) {
            origin.ingest.handshake_timeout = seconds("handshake-timeout", v)?;
        }
        if let Some(v) = args.idle_timeout.or(file.idle_timeout) {
            origin.ingest.idle_timeout = seconds("idle-timeout", v)?;
        }
        origin.streams.state_dir = args.state_dir.or(file.state_dir);
        let https_pair = (
            args.https_cert.or(file.https_cert),
            args.https_key.or(file.https_key),
        );
        let rtmps_listen = args.rtmps_listen.or(file.rtmps_listen);
        let rtmps_pair = (
            args.rtmps_cert.or(file.rtmps_cert),
            args.rtmps_key.or(file.rtmps_key),
        );
        if let Some(addr) = rtmps_listen {
            if !matches!(role, Role::Origin | Role::Standalone) {
                bail!("invalid rtmps-listen: only origins and standalone take publishers");
            }
            let (cert, key) = match (rtmps_pair, &https_pair) {
                ((Some(c), Some(k)), _) => (c, k),
                ((None, None), (Some(c), Some(k))) => (c.clone(), k.clone()),
                ((None, None), _) => bail!(
                    "invalid rtmps-listen: needs a certificate (--rtmps-cert/--rtmps-key or --https-cert/--https-key)"
                ),
                _ => bail!("invalid rtmps-cert: rtmps-cert and rtmps-key go together"),
            };
            let tls = ferrocast_runtime::tls::public_server_config(&cert, &key, &[])
                .context("invalid rtmps-cert/rtmps-key")?;
            origin.rtmps = Some(ferrocast_origin::RtmpsConfig { listen: addr, tls });
        } else if rtmps_pair != (None, None) {
            bail!("invalid rtmps-cert: needs --rtmps-listen");
        }
        match https_pair {
            (Some(cert), Some(key)) => {
                let tls = ferrocast_runtime::tls::https_server_config(&cert, &key)
                    .context("invalid https-cert/https-key")?;
                match role {
                    Role::Origin => origin.http.tls = Some(tls),
                    Role::Edge | Role::Standalone => edge.http.tls = Some(tls),
                    Role::Controller => bail!("invalid https-cert: not for the controller"),
                }
            }
            (None, None) => {}
            _ => bail!("invalid https-cert: https-cert and https-key go together"),
        }
        if let Some(v) = args.cache_capacity.or(file.cache_capacity) {
            edge.cache_capacity = parse_bytes(&v).context("invalid cache-capacity")?;
        }
        if let Some(v) = args.idle_unsubscribe.or(file.idle_unsubscribe) {
            edge.idle_unsubscribe = seconds("idle-unsubscribe", v)?;
        }
        // One per core by default: on this kind of machine they carry 1.2-1.3 times the
        // requests of the shared runtime (docs/benchmarks.md, "The 10,000-viewer goal").
        let io_threads = args
            .http_io_threads
            .or(file.http_io_threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if io_threads > 256 {
            bail!("invalid http-io-threads: {io_threads} (at most 256)");
        }
        edge.http.io_threads = (io_threads > 0).then_some(io_threads);
        let limits = HttpLimitArgs {
            max_connections: args.http_max_connections.or(file.http_max_connections),
            fair_share_from: args.http_fair_share_from.or(file.http_fair_share_from),
            header_timeout: args.http_header_timeout.or(file.http_header_timeout),
            idle_timeout: args.http_idle_timeout.or(file.http_idle_timeout),
            send_timeout: args.http_send_timeout.or(file.http_send_timeout),
            keepalive_interval: args
                .http2_keepalive_interval
                .or(file.http2_keepalive_interval),
            keepalive_timeout: args
                .http2_keepalive_timeout
                .or(file.http2_keepalive_timeout),
            max_header_bytes: args.http_max_header_bytes.or(file.http_max_header_bytes),
            listen_backlog: args.http_listen_backlog.or(file.http_listen_backlog),
        };
        for http in [&mut origin.http, &mut edge.http, &mut controller.http] {
            limits.apply(http)?;
        }
        let grpc_listen_given = args.grpc_listen.or(file.grpc_listen);
        if let Some(a) = grpc_listen_given {
            controller.grpc_listen = a;
        }
        controller.insecure_node_api =
            args.insecure_node_api || file.insecure_node_api.unwrap_or(false);
        if !args.etcd.is_empty() {
            controller.etcd.endpoints = args.etcd;
        } else if let Some(e) = file.etcd {
            controller.etcd.endpoints = e;
        }
        controller.etcd.tls = etcd_tls(
            args.etcd_ca.or(file.etcd_ca),
            args.etcd_cert.or(file.etcd_cert),
            args.etcd_key.or(file.etcd_key),
        )?;
        controller.etcd.auth = etcd_auth(
            args.etcd_user.or(file.etcd_user),
            args.etcd_password_file.or(file.etcd_password_file),
        )?;
        controller.operator_token = args.operator_token.or(file.operator_token);
        controller.operator_read_token = args.operator_read_token.or(file.operator_read_token);
        controller.publish_auth = match args.publish_auth.or(file.publish_auth) {
            Some(v) => v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("invalid publish-auth: {e}"))?,
            None if role == Role::Standalone => PublishAuth::Open,
            None => PublishAuth::Closed,
        };
        if let Some(v) = args.lease_ttl.or(file.lease_ttl) {
            controller.lease_ttl = seconds("lease-ttl", v)?;
        }
        let controllers = if !args.controller.is_empty() {
            args.controller
        } else {
            file.controller.unwrap_or_default()
        };
        if !controllers.is_empty() && !matches!(role, Role::Origin | Role::Edge) {
            bail!("invalid controller: only origins and edges join a controller");
        }
        let advertise_host = args.advertise_host.or(file.advertise_host);
        if role == Role::Controller {
            // What followers tell nodes and operators to retry a write at: the bound
            // address is useless when it is 0.0.0.0 (every replica would send callers to
            // themselves), so a replica behind a wildcard listener needs its own address.
            controller.advertise =
                controller_advertise(advertise_host.as_deref(), controller.grpc_listen)?;
        }
        let public_url = match args.public_url.or(file.public_url) {
            None => None,
            Some(_) if !matches!(role, Role::Edge | Role::Standalone) => {
                bail!("invalid public-url: only edges are sent viewers")
            }
            Some(u) => Some(public_base_url(&u)?),
        };
        let cidrs = if args.region_cidr.is_empty() {
            file.region_cidr.unwrap_or_default()
        } else {
            args.region_cidr
        };
        controller.region_cidrs = cidrs
            .iter()
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.parse())
            .collect::<Result<_, _>>()
            .context("invalid region-cidr")?;
        controller.region_header = args.region_header.or(file.region_header);
        let admission = admission(
            AdmissionArgs {
                url: args.admission_url.or(file.admission_url),
                timeout: args.admission_timeout.or(file.admission_timeout),
                fail: args.admission_fail.or(file.admission_fail),
                secret: args.admission_secret.or(file.admission_secret),
                cache_ttl: args.admission_cache_ttl.or(file.admission_cache_ttl),
                ca: args.admission_ca.or(file.admission_ca),
                client_ip_header: args
                    .admission_client_ip_header
                    .or(file.admission_client_ip_header),
            },
            role,
        )?;
        if matches!(role, Role::Origin | Role::Standalone) {
            origin.admission = admission.clone();
        }
        if matches!(role, Role::Edge | Role::Standalone) {
            edge.admission = admission;
        }
        let tls_dir = args.tls_dir.or(file.tls_dir);
        let operator_ca = args.operator_ca.or(file.operator_ca);
        if role == Role::Controller {
            controller.tls = match (&tls_dir, &operator_ca) {
                (Some(dir), ca) => Some(ferrocast_controller::server::GrpcTls {
                    cluster: ferrocast_runtime::tls::TlsFiles::in_dir(dir)
                        .load()
                        .context("invalid tls-dir")?,
                    operator_ca: match ca {
                        Some(ca) => {
                            ferrocast_runtime::tls::read_certs(ca).context("invalid operator-ca")?
                        }
                        None => Vec::new(),
                    },
                }),
                (None, Some(_)) => {
                    bail!("invalid operator-ca: needs --tls-dir (TLS on the gRPC port)")
                }
                (None, None) => None,
            };
            if controller.tls.is_some() && grpc_listen_given.is_none() {
                // Nodes are known by their certificates: the API may face the network.
                controller.grpc_listen = SocketAddr::from(([0, 0, 0, 0], 50051));
            }
            controller.validate()?;
        } else if operator_ca.is_some() {
            bail!("invalid operator-ca: only for the controller");
        }
        if matches!(role, Role::Origin | Role::Standalone) {
            origin.validate()?;
        }
        if matches!(role, Role::Edge | Role::Standalone) {
            edge.validate()?;
        }
        let origin_addr = match args.origin.or(file.origin) {
            Some(a) => Some(resolve_addr(&a).context("invalid origin")?),
            None => None,
        };
        if role == Role::Edge {
            if origin_addr.is_none() && controllers.is_empty() {
                bail!(
                    "invalid origin: an edge needs --controller URL or --origin HOST:PORT (the origin's QUIC address)"
                );
            }
            if tls_dir.is_none() {
                bail!("invalid tls-dir: an edge needs the cluster certificates (--tls-dir DIR)");
            }
        }
        let node_id = args.node_id.or(file.node_id);
        let node_id = match (&tls_dir, role) {
            (Some(dir), Role::Origin | Role::Edge) => {
                node_id_from_certificate(dir, role, node_id, &controllers)?
            }
            _ => node_id,
        };
        let node_id = node_id
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "ferrocast".to_owned());
        for a in [origin.admission.as_mut(), edge.admission.as_mut()]
            .into_iter()
            .flatten()
        {
            a.node = node_id.clone();
        }
        let region = args
            .region
            // An empty FERROCAST_REGION (a Downward API label the node lacks) means unset.
            .filter(|r| !r.trim().is_empty())
            .or(file.region)
            .unwrap_or_else(|| "default".to_owned());
        Ok(Self {
            node_id,
            region,
            log_format,
            origin,
            edge,
            tls_dir,
            origin_addr,
            controller,
            controllers,
            advertise_host,
            public_url,
        })
    }
}

/// The node id of an origin or edge with `--tls-dir`: its certificate's
/// `ferrocast://ROLE/ID` for its role when `--node-id` is not given (contract: a node
/// takes its id from its certificate). A `--node-id` the certificate does not name is
/// an error when a controller is reached over TLS, which refuses calls as another node.
fn node_id_from_certificate(
    dir: &std::path::Path,
    role: Role,
    given: Option<String>,
    controllers: &[String],
) -> anyhow::Result<Option<String>> {
    use ferrocast_runtime::tls::identity::NodeRole;
    let want = match role {
        Role::Origin => NodeRole::Origin,
        _ => NodeRole::Edge,
    };
    let ids = ferrocast_runtime::tls::TlsFiles::in_dir(dir)
        .identities()
        .context("invalid tls-dir")?;
    let mine: Vec<&str> = ids
        .iter()
        .filter(|i| i.role == want)
        .map(|i| i.id.as_str())
        .collect();
    let tls_controller = controllers.iter().any(|c| c.starts_with("https://"));
    match (given, mine.as_slice()) {
        (None, [id, ..]) => Ok(Some((*id).to_owned())),
        (Some(id), named) if named.is_empty() || named.contains(&id.as_str()) || !tls_controller => {
            Ok(Some(id))
        }
        (Some(id), named) => bail!(
            "invalid node-id: {id:?}, but the certificate in --tls-dir names {want} {}; the controller refuses calls as another node",
            named.join(", ")
        ),
        (None, []) => Ok(None),
    }
}

/// Validates a viewer-facing base URL: `http` or `https`, a host, no query or fragment;
/// returned without a trailing slash so paths append to it.
fn public_base_url(url: &str) -> anyhow::Result<String> {
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
    Ok(url.trim_end_matches('/').to_owned())
}

/// The `admission-*` settings as given.
struct AdmissionArgs {
    url: Option<String>,
    timeout: Option<f64>,
    fail: Option<String>,
    secret: Option<String>,
    cache_ttl: Option<f64>,
    ca: Option<PathBuf>,
    client_ip_header: Option<String>,
}

/// The webhook's configuration, when `admission-url` is set (the node id is filled in
/// later); the other `admission-*` settings without it are an error, not ignored.
fn admission(a: AdmissionArgs, role: Role) -> anyhow::Result<Option<AdmissionConfig>> {
    let Some(url) = a.url.filter(|u| !u.trim().is_empty()) else {
        if a.timeout.is_some()
            || a.fail.is_some()
            || a.secret.is_some()
            || a.cache_ttl.is_some()
            || a.ca.is_some()
            || a.client_ip_header.is_some()
        {
            bail!("invalid admission-url: the other admission settings need it");
        }
        return Ok(None);
    };
    if role == Role::Controller {
        bail!("invalid admission-url: origins and edges ask the webhook, not the controller");
    }
    let url: http::Uri = url
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid admission-url: {e}"))?;
    let mut cfg = AdmissionConfig::new(url, "");
    if let Some(v) = a.timeout {
        cfg.timeout = seconds("admission-timeout", v)?;
    }
    if let Some(v) = a.fail {
        cfg.fail = v
            .parse()
            .map_err(|e: String| anyhow::anyhow!("invalid admission-fail: {e}"))?;
    }
    cfg.secret = a.secret.map(|s| std::sync::Arc::from(s.into_bytes()));
    if let Some(v) = a.cache_ttl {
        if !(0.0..=3600.0).contains(&v) {
            bail!("invalid admission-cache-ttl: must be between 0 and 3600 seconds");
        }
        cfg.cache_ttl = Duration::from_secs_f64(v);
    }
    cfg.ca = a.ca;
    if let Some(h) = a.client_ip_header.filter(|h| !h.trim().is_empty()) {
        if !matches!(role, Role::Edge | Role::Standalone) {
            bail!("invalid admission-client-ip-header: only edges see viewers' requests");
        }
        cfg.client_ip_header = Some(
            http::HeaderName::try_from(h.trim())
                .map_err(|e| anyhow::anyhow!("invalid admission-client-ip-header: {e}"))?,
        );
    }
    cfg.validate()?;
    Ok(Some(cfg))
}

/// The HTTP port's connection limits as given (flag, environment or file).
struct HttpLimitArgs {
    max_connections: Option<usize>,
    fair_share_from: Option<u8>,
    header_timeout: Option<f64>,
    idle_timeout: Option<f64>,
    send_timeout: Option<f64>,
    keepalive_interval: Option<f64>,
    keepalive_timeout: Option<f64>,
    max_header_bytes: Option<String>,
    listen_backlog: Option<u32>,
}

impl HttpLimitArgs {
    /// Sets what was given on `limits` and checks the result
    /// ([`ServerLimits::validate`](ferrocast_runtime::http::ServerLimits::validate)).
    fn apply(&self, limits: &mut ferrocast_runtime::http::ServerLimits) -> anyhow::Result<()> {
        if let Some(v) = self.max_connections {
            limits.max_connections = v;
        }
        if let Some(v) = self.fair_share_from {
            limits.fair_share_from_percent = v;
        }
        if let Some(v) = self.header_timeout {
            limits.header_read_timeout = seconds("http-header-timeout", v)?;
        }
        if let Some(v) = self.idle_timeout {
            limits.idle_timeout = seconds("http-idle-timeout", v)?;
        }
        if let Some(v) = self.send_timeout {
            limits.send_timeout = seconds("http-send-timeout", v)?;
        }
        match self.keepalive_interval {
            Some(0.0) => limits.http2_keepalive_interval = None,
            Some(v) => {
                limits.http2_keepalive_interval = Some(seconds("http2-keepalive-interval", v)?)
            }
            None => {}
        }
        if let Some(v) = self.keepalive_timeout {
            limits.http2_keepalive_timeout = seconds("http2-keepalive-timeout", v)?;
        }
        if let Some(v) = &self.max_header_bytes {
            let n = parse_bytes(v).context("invalid http-max-header-bytes")?;
            limits.max_header_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(v) = self.listen_backlog {
            limits.listen_backlog = v;
        }
        limits.validate()?;
        Ok(())
    }
}

fn seconds(field: &str, v: f64) -> anyhow::Result<Duration> {
    if !(0.1..=3600.0).contains(&v) {
        bail!("invalid {field}: must be between 0.1 and 3600 seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// `512M`, `2G`, `65536`, `64K` → bytes.
fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..]
                .trim_end_matches(['B', 'b', 'i'])
                .to_ascii_uppercase();
            let mult = match unit.as_str() {
                "K" => 1u64 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "" => 1,
                other => bail!("unknown unit {other:?} (use K, M or G)"),
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a size"))?;
    n.checked_mul(mult).context("size overflows")
}

/// `host:port` → the first address it resolves to.
fn resolve_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("cannot resolve {s:?}"))?
        .next()
        .with_context(|| format!("{s:?} resolves to no address"))
}

/// The `host:port` a controller replica advertises as leader: `--advertise-host` with
/// the gRPC port, else the gRPC listen address when it is a real one, else `None` (the
/// bound address; a warning, since followers would redirect to a wildcard address).
fn controller_advertise(host: Option<&str>, grpc: SocketAddr) -> anyhow::Result<Option<String>> {
    match host {
        Some("") => bail!("invalid advertise-host: is empty"),
        Some(h) if h.contains(':') && !h.starts_with('[') => {
            Ok(Some(format!("[{h}]:{}", grpc.port())))
        }
        Some(h) => Ok(Some(format!("{h}:{}", grpc.port()))),
        None => {
            if grpc.ip().is_unspecified() {
                tracing::warn!(
                    grpc_listen = %grpc,
                    "no --advertise-host: with several controller replicas, followers cannot redirect callers to this leader"
                );
            }
            Ok(None)
        }
    }
}

/// TLS to etcd: `--etcd-ca` turns it on; a client certificate needs it.
fn etcd_tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<ferrocast_controller::etcd::EtcdTls>> {
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("invalid etcd-cert: etcd-cert and etcd-key go together"),
    };
    match (ca, identity) {
        (Some(ca), identity) => Ok(Some(ferrocast_controller::etcd::EtcdTls { ca, identity })),
        (None, Some(_)) => bail!("invalid etcd-cert: needs --etcd-ca (TLS to etcd)"),
        (None, None) => Ok(None),
    }
}

/// The etcd user, with its password from `FERROCAST_ETCD_PASSWORD` or a file: a flag
/// would show it to everyone who can list processes.
fn etcd_auth(
    user: Option<String>,
    password_file: Option<PathBuf>,
) -> anyhow::Result<Option<ferrocast_controller::etcd::EtcdAuth>> {
    let from_env = std::env::var("FERROCAST_ETCD_PASSWORD").ok();
    let Some(user) = user else {
        if password_file.is_some() || from_env.is_some() {
            bail!("invalid etcd-password-file: needs --etcd-user");
        }
        return Ok(None);
    };
    let password = match (from_env, password_file) {
        (Some(_), Some(_)) => {
            bail!("invalid etcd-password-file: FERROCAST_ETCD_PASSWORD is set too")
        }
        (Some(p), None) => p,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .with_context(|| format!("invalid etcd-password-file: {}", f.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => bail!(
            "invalid etcd-user: needs a password (FERROCAST_ETCD_PASSWORD or --etcd-password-file)"
        ),
    };
    Ok(Some(ferrocast_controller::etcd::EtcdAuth {
        user,
        password,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: NodeArgs,
    }

    fn args(v: &[&str]) -> NodeArgs {
        T::parse_from(std::iter::once("t").chain(v.iter().copied())).a
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("512M").expect("ok"), 512 << 20);
        assert_eq!(parse_bytes("2GiB").expect("ok"), 2 << 30);
        assert_eq!(parse_bytes("65536").expect("ok"), 65536);
        assert!(parse_bytes("12X").is_err());
        assert!(parse_bytes("M").is_err());
    }

    #[test]
    fn file_values_yield_to_flags_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("ferrocast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "part-target = 0.5\nwindow-segments = 6\nrtmp-listen = \"127.0.0.1:2000\"\n",
        )
        .expect("write");
        let f = file.to_str().expect("utf-8");
        let s = Settings::resolve(
            args(&["--config", f, "--window-segments", "8"]),
            Role::Origin,
        )
        .expect("valid");
        assert_eq!(s.origin.streams.packager.part_target, 0.5);
        assert_eq!(
            s.origin.streams.packager.window_segments, 8,
            "flag beats file"
        );
        assert_eq!(s.origin.rtmp_listen.port(), 2000);
        std::fs::write(&file, "no-such-key = 1\n").expect("write");
        let err = Settings::resolve(args(&["--config", f]), Role::Origin).expect_err("unknown key");
        assert!(format!("{err:#}").contains("no-such-key"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_viewer_node_has_an_admin_port() {
        let certs =
            std::env::temp_dir().join(format!("ferrocast-cfg-admin-{}", std::process::id()));
        ferrocast_runtime::tls::generate_dev(Some(&certs), &[]).expect("certs");
        let edge = [
            "--origin",
            "127.0.0.1:4433",
            "--tls-dir",
            certs.to_str().expect("utf-8"),
        ];
        let s = Settings::resolve(args(&[]), Role::Origin).expect("valid");
        assert_eq!(s.origin.admin_listen, Some("0.0.0.0:9081".parse().unwrap()));
        let s = Settings::resolve(args(&edge), Role::Edge).expect("valid");
        assert_eq!(s.edge.admin_listen, Some("0.0.0.0:9080".parse().unwrap()));
        let s = Settings::resolve(args(&[]), Role::Standalone).expect("valid");
        assert_eq!(s.edge.admin_listen, Some("127.0.0.1:9080".parse().unwrap()));
        assert_eq!(s.origin.admin_listen, None, "one admin port per process");
        let s = Settings::resolve(
            args(&[
                "--admin-listen",
                "127.0.0.1:7000",
                "--controller",
                "http://c:1",
            ]),
            Role::Origin,
        )
        .expect("valid");
        assert_eq!(
            s.origin.admin_listen,
            Some("127.0.0.1:7000".parse().unwrap())
        );
        // From the file, and checked before anything binds.
        let dir = std::env::temp_dir().join(format!("ferrocast-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "admin-listen = \"127.0.0.1:7001\"\n").expect("write");
        let f = file.to_str().expect("utf-8");
        let s = Settings::resolve(args(&["--config", f]), Role::Origin).expect("valid");
        assert_eq!(
            s.origin.admin_listen,
            Some("127.0.0.1:7001".parse().unwrap())
        );
        let _ = std::fs::remove_dir_all(&dir);
        let same = [
            &edge[..],
            &[
                "--http-listen",
                "127.0.0.1:7002",
                "--admin-listen",
                "127.0.0.1:7002",
            ],
        ]
        .concat();
        let err = Settings::resolve(args(&same), Role::Edge).expect_err("same port");
        assert!(format!("{err:#}").contains("admin-listen"), "{err:#}");
        let err = Settings::resolve(
            args(&["--admin-listen", "127.0.0.1:7003"]),
            Role::Controller,
        )
        .expect_err("not for the controller");
        assert!(format!("{err:#}").contains("admin-listen"), "{err:#}");
        let _ = std::fs::remove_dir_all(&certs);
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err = Settings::resolve(
            args(&["--part-target", "5", "--segment-target", "2"]),
            Role::Origin,
        )
        .expect_err("invalid");
        assert!(format!("{err:#}").contains("part-target"), "{err:#}");
        let err = Settings::resolve(args(&[]), Role::Edge).expect_err("edge needs an origin");
        assert!(format!("{err:#}").contains("origin"), "{err:#}");
        let err = Settings::resolve(
            args(&[
                "--cache-capacity",
                "1K",
                "--origin",
                "127.0.0.1:4433",
                "--tls-dir",
                "/x",
            ]),
            Role::Edge,
        )
        .expect_err("too small");
        assert!(format!("{err:#}").contains("cache-capacity"), "{err:#}");
    }

    #[test]
    fn http_connection_limits_are_flags_with_defaults_for_origin_and_edge() {
        let s = Settings::resolve(args(&[]), Role::Standalone).expect("valid");
        let limit = ferrocast_runtime::net::descriptor_limit().expect("RLIMIT_NOFILE");
        for http in [&s.origin.http, &s.edge.http] {
            assert!((http.max_connections as u64) < limit);
            assert_eq!(http.header_read_timeout, Duration::from_secs(10));
            assert_eq!(http.idle_timeout, Duration::from_secs(30));
            assert_eq!(http.send_timeout, Duration::from_secs(30));
            assert_eq!(http.http2_keepalive_interval, Some(Duration::from_secs(20)));
            assert_eq!(http.max_header_bytes, 32 * 1024);
            assert_eq!(http.listen_backlog, 4096);
            assert_eq!(http.fair_share_from_percent, 75);
        }
        // The controller's admin port: the same timeouts, a small cap (operators and
        // probes, not viewers).
        let c = &s.controller.http;
        assert!(c.max_connections <= 1024);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.name, "controller");
        let s = Settings::resolve(
            args(&[
                "--http-max-connections",
                "100",
                "--http-fair-share-from",
                "50",
                "--http-header-timeout",
                "0.5",
                "--http-idle-timeout",
                "2",
                "--http-send-timeout",
                "3",
                "--http2-keepalive-interval",
                "0",
                "--http2-keepalive-timeout",
                "4",
                "--http-max-header-bytes",
                "16K",
                "--http-listen-backlog",
                "512",
            ]),
            Role::Standalone,
        )
        .expect("valid");
        for http in [&s.origin.http, &s.edge.http, &s.controller.http] {
            assert_eq!(http.max_connections, 100);
            assert_eq!(http.fair_share_from_percent, 50);
            assert_eq!(http.header_read_timeout, Duration::from_millis(500));
            assert_eq!(http.idle_timeout, Duration::from_secs(2));
            assert_eq!(http.send_timeout, Duration::from_secs(3));
            assert_eq!(http.http2_keepalive_interval, None);
            assert_eq!(http.http2_keepalive_timeout, Duration::from_secs(4));
            assert_eq!(http.max_header_bytes, 16 * 1024);
            assert_eq!(http.listen_backlog, 512);
        }
        for (flag, value) in [
            ("--http-max-connections", "0"),
            ("--http-max-connections", "100000000"),
            ("--http-fair-share-from", "0"),
            ("--http-header-timeout", "0"),
            ("--http-send-timeout", "99999"),
            ("--http-max-header-bytes", "1K"),
            ("--http-listen-backlog", "0"),
        ] {
            let err = Settings::resolve(args(&[flag, value]), Role::Origin).expect_err(flag);
            assert!(
                format!("{err:#}").contains(flag.trim_start_matches('-')),
                "{flag}: {err:#}"
            );
        }
        // The same keys in the file; a flag still wins.
        let dir = std::env::temp_dir().join(format!("ferrocast-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "http-idle-timeout = 5\nhttp-max-header-bytes = \"64K\"\n\
             http-listen-backlog = 1000\nhttp-send-timeout = 7\n",
        )
        .expect("write");
        let f = file.to_str().expect("utf-8");
        let s = Settings::resolve(
            args(&["--config", f, "--http-send-timeout", "9"]),
            Role::Origin,
        )
        .expect("valid");
        assert_eq!(s.origin.http.idle_timeout, Duration::from_secs(5));
        assert_eq!(s.origin.http.max_header_bytes, 64 * 1024);
        assert_eq!(s.origin.http.listen_backlog, 1000);
        assert_eq!(s.origin.http.send_timeout, Duration::from_secs(9));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn http_io_threads_are_one_per_core_by_default_and_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let s = Settings::resolve(args(&[]), Role::Standalone).expect("valid");
        assert_eq!(s.edge.http.io_threads, Some(cores));
        let s =
            Settings::resolve(args(&["--http-io-threads", "2"]), Role::Standalone).expect("valid");
        assert_eq!(s.edge.http.io_threads, Some(2));
        let s =
            Settings::resolve(args(&["--http-io-threads", "0"]), Role::Standalone).expect("valid");
        assert_eq!(s.edge.http.io_threads, None);
        let err = Settings::resolve(args(&["--http-io-threads", "1000"]), Role::Standalone)
            .expect_err("too many");
        assert!(format!("{err:#}").contains("http-io-threads"), "{err:#}");
    }

    #[test]
    fn public_url_is_a_base_url_for_edges_only() {
        let edge = |url: &str| Settings::resolve(args(&["--public-url", url]), Role::Standalone);
        let s = edge("https://edge-3.cdn.example.com/").expect("valid");
        assert_eq!(
            s.public_url.as_deref(),
            Some("https://edge-3.cdn.example.com")
        );
        let s = edge("http://[2001:db8::1]:8080").expect("valid");
        assert_eq!(s.public_url.as_deref(), Some("http://[2001:db8::1]:8080"));
        for bad in [
            "edge.example.com",
            "ftp://e.example",
            "https://e.example/?a=1",
            "https://e.example/#x",
            "https://",
        ] {
            let err = edge(bad).expect_err(bad);
            assert!(format!("{err:#}").contains("public-url"), "{bad}: {err:#}");
        }
        let err = Settings::resolve(args(&["--public-url", "https://o.example"]), Role::Origin)
            .expect_err("origins are not sent viewers");
        assert!(format!("{err:#}").contains("public-url"), "{err:#}");
    }

    #[test]
    fn an_empty_region_means_the_default_one() {
        let s = Settings::resolve(args(&["--region", ""]), Role::Origin).expect("valid");
        assert_eq!(s.region, "default");
        let s = Settings::resolve(args(&["--region", "eu-west"]), Role::Origin).expect("valid");
        assert_eq!(s.region, "eu-west");
    }

    #[test]
    fn etcd_tls_and_user_flags() {
        let dir = std::env::temp_dir().join(format!("ferrocast-etcd-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let err = Settings::resolve(
            args(&[
                "--etcd",
                "e:2379",
                "--etcd-cert",
                "c.pem",
                "--etcd-key",
                "k.pem",
            ]),
            Role::Controller,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid etcd-cert: needs --etcd-ca (TLS to etcd)"
        );
        let err = Settings::resolve(
            args(&["--etcd", "e:2379", "--etcd-ca", "/nonexistent/ca.pem"]),
            Role::Controller,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("etcd-ca: /nonexistent/ca.pem"),
            "{err}"
        );
        let err = Settings::resolve(
            args(&["--etcd", "e:2379", "--etcd-user", "fc"]),
            Role::Controller,
        );
        if std::env::var_os("FERROCAST_ETCD_PASSWORD").is_none() {
            assert!(err.unwrap_err().to_string().contains("needs a password"));
        }
        let pw = password.display().to_string();
        let s = Settings::resolve(
            args(&[
                "--etcd",
                "e:2379",
                "--etcd-user",
                "fc",
                "--etcd-password-file",
                &pw,
            ]),
            Role::Controller,
        )
        .expect("valid");
        let auth = s.controller.etcd.auth.expect("a user");
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("fc", "s3cret")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn controller_flags() {
        let s = Settings::resolve(
            args(&[
                "--grpc-listen",
                "127.0.0.1:6000",
                "--etcd",
                "10.0.0.1:2379,10.0.0.2:2379",
                "--operator-token",
                "t0k",
            ]),
            Role::Controller,
        )
        .expect("valid");
        assert_eq!(s.controller.grpc_listen.port(), 6000);
        assert_eq!(
            s.controller.etcd.endpoints,
            ["10.0.0.1:2379", "10.0.0.2:2379"]
        );
        assert_eq!(s.controller.operator_token.as_deref(), Some("t0k"));
        assert_eq!(s.controller.http_listen.port(), 8090);
        assert_eq!(
            s.controller.advertise, None,
            "a real listen address is advertised"
        );
        let s = Settings::resolve(
            args(&[
                "--grpc-listen",
                "0.0.0.0:6000",
                "--advertise-host",
                "10.0.0.9",
                "--insecure-node-api",
                "--operator-token",
                "t0k",
            ]),
            Role::Controller,
        )
        .expect("valid");
        assert_eq!(s.controller.advertise.as_deref(), Some("10.0.0.9:6000"));
        let s = Settings::resolve(args(&["--advertise-host", "fd00::9"]), Role::Controller)
            .expect("valid");
        assert_eq!(s.controller.advertise.as_deref(), Some("[fd00::9]:50051"));
        let err = Settings::resolve(args(&["--advertise-host", ""]), Role::Controller)
            .expect_err("empty");
        assert!(format!("{err:#}").contains("advertise-host"), "{err:#}");
        let err = Settings::resolve(args(&["--operator-token", "a b"]), Role::Controller)
            .expect_err("whitespace");
        assert!(format!("{err:#}").contains("operator-token"), "{err:#}");
        let s = Settings::resolve(
            args(&[
                "--region-cidr",
                "10.1.0.0/16=eu-west",
                "--region-cidr",
                "2001:db8::/32=us-east",
                "--region-header",
                "x-client-region",
            ]),
            Role::Controller,
        )
        .expect("valid");
        let cidrs: Vec<String> = s
            .controller
            .region_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(cidrs, ["10.1.0.0/16=eu-west", "2001:db8::/32=us-east"]);
        assert_eq!(
            s.controller.region_header.as_deref(),
            Some("x-client-region")
        );
        let err = Settings::resolve(args(&["--region-cidr", "10.1.2.3/16=eu"]), Role::Controller)
            .expect_err("host bits");
        assert!(format!("{err:#}").contains("region-cidr"), "{err:#}");
        let err = Settings::resolve(args(&["--region-header", "bad header"]), Role::Controller)
            .expect_err("header name");
        assert!(format!("{err:#}").contains("region-header"), "{err:#}");
    }

    #[test]
    fn admission_flags() {
        let s = Settings::resolve(
            args(&[
                "--admission-url",
                "http://127.0.0.1:9000/admit",
                "--admission-timeout",
                "0.5",
                "--admission-fail",
                "open",
                "--admission-secret",
                "s",
                "--admission-cache-ttl",
                "10",
                "--node-id",
                "o7",
            ]),
            Role::Origin,
        )
        .expect("valid");
        let a = s.origin.admission.expect("configured");
        assert_eq!(a.url, "http://127.0.0.1:9000/admit");
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.fail, ferrocast_runtime::admission::FailMode::Open);
        assert_eq!(a.secret.as_deref(), Some(&b"s"[..]));
        assert_eq!(a.cache_ttl, Duration::from_secs(10));
        assert_eq!(a.node, "o7");
        assert!(s.edge.admission.is_none(), "an origin's only");
        // Defaults: 2 s, closed.
        let s = Settings::resolve(args(&["--admission-url", "http://h/"]), Role::Origin)
            .expect("valid");
        let a = s.origin.admission.expect("configured");
        assert_eq!(
            (a.timeout, a.fail),
            (
                Duration::from_secs(2),
                ferrocast_runtime::admission::FailMode::Closed
            )
        );
        for (bad, field) in [
            (&["--admission-url", "ftp://h/"][..], "admission-url"),
            (&["--admission-url", "https://"][..], "admission-url"),
            (
                &["--admission-url", "http://h/", "--admission-fail", "maybe"][..],
                "admission-fail",
            ),
            (
                &["--admission-url", "http://h/", "--admission-timeout", "0"][..],
                "admission-timeout",
            ),
            (&["--admission-fail", "open"][..], "admission-url"),
        ] {
            let err = Settings::resolve(args(bad), Role::Origin).expect_err("invalid");
            assert!(format!("{err:#}").contains(field), "{bad:?}: {err:#}");
        }
        let err = Settings::resolve(args(&["--admission-url", "http://h/"]), Role::Controller)
            .expect_err("not for the controller");
        assert!(format!("{err:#}").contains("admission-url"), "{err:#}");
    }

    #[test]
    fn admission_over_https_and_the_client_ip_header() {
        let dir = std::env::temp_dir().join(format!("ferrocast-cfg-adm-{}", std::process::id()));
        ferrocast_runtime::tls::generate_dev(Some(&dir), &[]).expect("certs");
        let ca = dir.join("ca.pem");
        let ca = ca.to_str().expect("utf-8");
        let https = ["--admission-url", "https://auth.example/admit"];
        let s = Settings::resolve(
            args(&[&https[..], &["--admission-ca", ca]].concat()),
            Role::Standalone,
        )
        .expect("valid");
        for a in [s.origin.admission, s.edge.admission] {
            let a = a.expect("configured");
            assert_eq!(a.url, "https://auth.example/admit");
            assert_eq!(a.ca.as_deref(), Some(std::path::Path::new(ca)));
        }
        // The TOML key, and the header for edges.
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            format!(
                "admission-url = \"https://auth.example/\"\nadmission-ca = \"{ca}\"\nadmission-client-ip-header = \"X-Forwarded-For\"\n"
            ),
        )
        .expect("write");
        let f = file.to_str().expect("utf-8");
        let s = Settings::resolve(args(&["--config", f]), Role::Standalone).expect("valid");
        let a = s.edge.admission.expect("configured");
        assert_eq!(a.ca.as_deref(), Some(std::path::Path::new(ca)));
        assert_eq!(
            a.client_ip_header.as_ref().map(|h| h.as_str()),
            Some("x-forwarded-for")
        );
        let key = dir.join("node-key.pem");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        for (bad, role, field) in [
            (
                &[&https[..], &["--admission-ca", "/no/such/ca.pem"]].concat(),
                Role::Origin,
                "admission-ca",
            ),
            (
                &[
                    &https[..],
                    &["--admission-ca", empty.to_str().expect("utf-8")],
                ]
                .concat(),
                Role::Origin,
                "admission-ca",
            ),
            (
                &[
                    &https[..],
                    &["--admission-ca", key.to_str().expect("utf-8")],
                ]
                .concat(),
                Role::Origin,
                "admission-ca",
            ),
            (
                &["--admission-url", "http://h/", "--admission-ca", ca][..].to_vec(),
                Role::Origin,
                "admission-ca",
            ),
            (
                &["--admission-ca", ca][..].to_vec(),
                Role::Origin,
                "admission-url",
            ),
            (
                &[
                    "--admission-url",
                    "http://h/",
                    "--admission-client-ip-header",
                    "x-real-ip",
                ][..]
                    .to_vec(),
                Role::Origin,
                "admission-client-ip-header",
            ),
            (
                &[
                    "--admission-url",
                    "http://h/",
                    "--admission-client-ip-header",
                    "bad header",
                ][..]
                    .to_vec(),
                Role::Standalone,
                "admission-client-ip-header",
            ),
        ] {
            let err = Settings::resolve(args(bad), role).expect_err("invalid");
            assert!(format!("{err:#}").contains(field), "{bad:?}: {err:#}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_flags_are_checked_before_anything_binds() {
        let dir = std::env::temp_dir().join(format!("ferrocast-cfg-tls-{}", std::process::id()));
        ferrocast_runtime::tls::generate_dev(Some(&dir), &[]).expect("certs");
        let (cert, key) = (dir.join("node.pem"), dir.join("node-key.pem"));
        let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
        let err = Settings::resolve(args(&["--rtmps-listen", "127.0.0.1:1936"]), Role::Origin)
            .expect_err("no certificate");
        assert!(format!("{err:#}").contains("rtmps-listen"), "{err:#}");
        // The HTTPS pair serves RTMPS too.
        let s = Settings::resolve(
            args(&[
                "--rtmps-listen",
                "127.0.0.1:1936",
                "--https-cert",
                cert,
                "--https-key",
                key,
            ]),
            Role::Origin,
        )
        .expect("valid");
        assert_eq!(s.origin.rtmps.expect("rtmps").listen.port(), 1936);
        let err = Settings::resolve(
            args(&["--rtmps-cert", cert, "--rtmps-key", key]),
            Role::Origin,
        )
        .expect_err("a certificate without a port");
        assert!(format!("{err:#}").contains("rtmps-listen"), "{err:#}");
        let err = Settings::resolve(
            args(&[
                "--rtmps-listen",
                "127.0.0.1:1936",
                "--rtmps-cert",
                key,
                "--rtmps-key",
                key,
            ]),
            Role::Origin,
        )
        .expect_err("a key is no certificate");
        assert!(format!("{err:#}").contains("rtmps-cert"), "{err:#}");
        let err = Settings::resolve(args(&["--operator-ca", cert]), Role::Controller)
            .expect_err("operator CA without TLS");
        assert!(format!("{err:#}").contains("operator-ca"), "{err:#}");
        let d = dir.to_str().expect("utf-8");
        let s = Settings::resolve(
            args(&["--tls-dir", d, "--operator-ca", cert]),
            Role::Controller,
        )
        .expect("valid");
        let tls = s.controller.tls.expect("gRPC TLS");
        assert_eq!(tls.operator_ca.len(), 1);
        // Standalone's embedded controller stays loopback plaintext.
        let s = Settings::resolve(args(&["--tls-dir", d]), Role::Standalone).expect("valid");
        assert!(s.controller.tls.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
    #[test]
    fn a_plaintext_node_api_stays_on_loopback_unless_told_otherwise() {
        let s = Settings::resolve(args(&[]), Role::Controller).expect("valid");
        assert_eq!(s.controller.grpc_listen, "127.0.0.1:50051".parse().unwrap());
        let err = Settings::resolve(args(&["--grpc-listen", "0.0.0.0:50051"]), Role::Controller)
            .expect_err("plaintext node API on the network");
        assert!(format!("{err:#}").contains("grpc-listen"), "{err:#}");
        let s = Settings::resolve(
            args(&[
                "--grpc-listen",
                "0.0.0.0:50051",
                "--insecure-node-api",
                "--operator-token",
                "t0k",
            ]),
            Role::Controller,
        )
        .expect("explicitly insecure");
        assert!(s.controller.insecure_node_api);
        // An operator API beyond loopback is never open: it needs a credential.
        let err = Settings::resolve(
            args(&["--grpc-listen", "0.0.0.0:50051", "--insecure-node-api"]),
            Role::Controller,
        )
        .expect_err("an open operator API on the network");
        assert!(format!("{err:#}").contains("operator-token"), "{err:#}");
        // With certificates, the default faces the network.
        let dir = std::env::temp_dir().join(format!("ferrocast-cfg-grpc-{}", std::process::id()));
        ferrocast_runtime::tls::generate_dev(Some(&dir), &[]).expect("certs");
        let d = dir.to_str().expect("utf-8");
        let err = Settings::resolve(args(&["--tls-dir", d]), Role::Controller)
            .expect_err("no operator credential");
        assert!(format!("{err:#}").contains("operator-token"), "{err:#}");
        let s = Settings::resolve(
            args(&["--tls-dir", d, "--operator-token", "t0k"]),
            Role::Controller,
        )
        .expect("valid");
        assert_eq!(s.controller.grpc_listen, "0.0.0.0:50051".parse().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_node_takes_its_id_from_its_certificate() {
        use ferrocast_runtime::tls::identity::NodeIdentity;
        use ferrocast_runtime::tls::pki::ClusterCa;
        let dir = std::env::temp_dir().join(format!("ferrocast-cfg-id-{}", std::process::id()));
        let ca = ClusterCa::generate("test", 1).expect("CA");
        let o7 = NodeIdentity::from_spec("origin:o7").expect("identity");
        ca.issue(&[o7], &[], 1)
            .expect("issue")
            .write_dir(&dir, ca.bundle_pem())
            .expect("write");
        let d = dir.to_str().expect("utf-8");
        let s = Settings::resolve(args(&["--tls-dir", d]), Role::Origin).expect("valid");
        assert_eq!(s.node_id, "o7");
        // Another id: refused when the controller checks certificates, allowed otherwise.
        let err = Settings::resolve(
            args(&[
                "--tls-dir",
                d,
                "--node-id",
                "o8",
                "--controller",
                "https://c:50051",
            ]),
            Role::Origin,
        )
        .expect_err("an id the certificate does not name");
        assert!(format!("{err:#}").contains("invalid node-id"), "{err:#}");
        let s = Settings::resolve(
            args(&[
                "--tls-dir",
                d,
                "--node-id",
                "o8",
                "--controller",
                "http://c:50051",
            ]),
            Role::Origin,
        )
        .expect("plaintext controller");
        assert_eq!(s.node_id, "o8");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
