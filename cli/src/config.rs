//! Node configuration from flags, `FERROCAST_*` environment variables and a TOML file,
//! in that order of precedence, with the same names everywhere (`--rtmp-listen`,
//! `FERROCAST_RTMP_LISTEN`, `rtmp-listen = "..."`). Everything is validated before a
//! socket is bound; an error names the field.

use anyhow::{bail, Context};
use ferrocast_origin::OriginConfig;
use ferrocast_runtime::telemetry::LogFormat;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags shared by every node role.
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
    /// RTMP ingest address, host:port (default 0.0.0.0:1935).
    #[arg(long, env = "FERROCAST_RTMP_LISTEN")]
    pub rtmp_listen: Option<SocketAddr>,
    /// HTTP address for playlists, media, the player page and admin endpoints (default 0.0.0.0:8081).
    #[arg(long, env = "FERROCAST_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
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
}

/// The TOML file: the same keys as the flags, nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    node_id: Option<String>,
    region: Option<String>,
    rtmp_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    segment_target: Option<f64>,
    part_target: Option<f64>,
    window_segments: Option<usize>,
    reconnect_grace: Option<f64>,
    max_connections_per_ip: Option<usize>,
    handshake_timeout: Option<f64>,
    idle_timeout: Option<f64>,
    log_format: Option<String>,
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
    /// The origin's configuration.
    pub origin: OriginConfig,
}

impl Settings {
    /// Merges flags/env over the file over defaults and validates the result.
    pub fn resolve(args: NodeArgs, standalone: bool) -> anyhow::Result<Self> {
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
        if standalone {
            // A laptop default: nothing listens beyond this machine unless asked to.
            origin.rtmp_listen = SocketAddr::from(([127, 0, 0, 1], 1935));
            origin.http_listen = SocketAddr::from(([127, 0, 0, 1], 8081));
        }
        if let Some(a) = args.rtmp_listen.or(file.rtmp_listen) {
            origin.rtmp_listen = a;
        }
        if let Some(a) = args.http_listen.or(file.http_listen) {
            origin.http_listen = a;
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
        origin.validate()?;
        let node_id = args
            .node_id
            .or(file.node_id)
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "ferrocast".to_owned());
        let region = args
            .region
            .or(file.region)
            .unwrap_or_else(|| "default".to_owned());
        Ok(Self {
            node_id,
            region,
            log_format,
            origin,
        })
    }
}

fn seconds(field: &str, v: f64) -> anyhow::Result<Duration> {
    if !(0.1..=3600.0).contains(&v) {
        bail!("invalid {field}: must be between 0.1 and 3600 seconds");
    }
    Ok(Duration::from_secs_f64(v))
}
