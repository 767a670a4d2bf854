//! `ferrocast origin`: its flags (the ingest and packaging group, which standalone's
//! embedded origin reads too, plus the shared groups) and their validation into an
//! [`OriginConfig`].

use super::shared::{AdmissionArgs, HttpLimitArgs, JoinArgs, NodeArgs, ServingArgs};
use super::{anywhere, layered, load, node_id_from_certificate, node_id_or_host, seconds};
use super::{Role, RoleArgs, Settings};
use anyhow::{bail, Context};
use ferrocast_origin::OriginConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Origin and standalone: RTMP ingest, packaging and the QUIC relay.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[command(next_help_heading = "Ingest and packaging")]
#[serde(default, rename_all = "kebab-case")]
pub struct IngestArgs {
    /// RTMP ingest address, host:port (default 0.0.0.0:1935; standalone 127.0.0.1:1935).
    #[arg(long, env = "FERROCAST_RTMP_LISTEN")]
    pub rtmp_listen: Option<SocketAddr>,
    /// RTMPS ingest address, host:port (default: off; 443 is usual, the docs use 1936).
    /// Uses --rtmps-cert/--rtmps-key, else the HTTPS pair.
    #[arg(long, env = "FERROCAST_RTMPS_LISTEN")]
    pub rtmps_listen: Option<SocketAddr>,
    /// PEM certificate chain for RTMPS (default: --https-cert).
    #[arg(long, env = "FERROCAST_RTMPS_CERT", requires = "rtmps_key")]
    pub rtmps_cert: Option<PathBuf>,
    /// PEM private key for `--rtmps-cert`.
    #[arg(long, env = "FERROCAST_RTMPS_KEY", requires = "rtmps_cert")]
    pub rtmps_key: Option<PathBuf>,
    /// QUIC address edges pull from, host:port/udp (default 0.0.0.0:4433; standalone a
    /// free loopback port).
    #[arg(long, env = "FERROCAST_QUIC_LISTEN")]
    pub quic_listen: Option<SocketAddr>,
    /// Directory where stream continuity is kept across restarts, so a publisher
    /// reconnecting after a crash continues numbering (default: memory only).
    #[arg(long, env = "FERROCAST_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// Seconds an RTMP client has to complete the handshake and start publishing; until
    /// it publishes, its traffic does not extend the deadline (default 10).
    #[arg(long, env = "FERROCAST_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<f64>,
    /// Seconds of silence after which an RTMP connection is closed (default 30).
    #[arg(long, env = "FERROCAST_IDLE_TIMEOUT")]
    pub idle_timeout: Option<f64>,
    /// Also publish a built-in test stream named "demo" (a flag, not a file key).
    #[arg(long, env = "FERROCAST_DEMO")]
    #[serde(skip)]
    pub demo: bool,
}
layered!(IngestArgs {
    rtmp_listen,
    rtmps_listen,
    rtmps_cert,
    rtmps_key,
    quic_listen,
    state_dir,
    segment_target,
    part_target,
    window_segments,
    reconnect_grace,
    max_connections_per_ip,
    handshake_timeout,
    idle_timeout,
    demo
});

impl IngestArgs {
    /// Sets what was given on `origin`; RTMPS falls back to the HTTPS pair.
    pub fn apply(
        &self,
        origin: &mut OriginConfig,
        https: Option<&(PathBuf, PathBuf)>,
    ) -> anyhow::Result<()> {
        if let Some(a) = self.rtmp_listen {
            origin.rtmp_listen = a;
        }
        if let Some(a) = self.quic_listen {
            origin.quic_listen = a;
        }
        let p = &mut origin.streams.packager;
        if let Some(v) = self.segment_target {
            p.segment_target = v;
        }
        if let Some(v) = self.part_target {
            p.part_target = v;
        }
        if let Some(v) = self.window_segments {
            p.window_segments = v;
        }
        if let Some(v) = self.reconnect_grace {
            if !(0.0..=3600.0).contains(&v) {
                bail!("invalid reconnect-grace: must be between 0 and 3600 seconds");
            }
            origin.streams.reconnect_grace = Duration::from_secs_f64(v);
        }
        if let Some(v) = self.max_connections_per_ip {
            if v == 0 {
                bail!("invalid max-connections-per-ip: must be at least 1");
            }
            origin.ingest.max_connections_per_ip = v;
        }
        if let Some(v) = self.handshake_timeout {
            origin.ingest.handshake_timeout = seconds("handshake-timeout", v)?;
        }
        if let Some(v) = self.idle_timeout {
            origin.ingest.idle_timeout = seconds("idle-timeout", v)?;
        }
        origin.streams.state_dir = self.state_dir.clone();
        let rtmps_pair = (&self.rtmps_cert, &self.rtmps_key);
        if let Some(addr) = self.rtmps_listen {
            let (cert, key) = match (rtmps_pair, https) {
                ((Some(c), Some(k)), _) => (c, k),
                ((None, None), Some((c, k))) => (c, k),
                ((None, None), None) => bail!(
                    "invalid rtmps-listen: needs a certificate (--rtmps-cert/--rtmps-key or --https-cert/--https-key)"
                ),
                _ => bail!("invalid rtmps-cert: rtmps-cert and rtmps-key go together"),
            };
            let tls = ferrocast_tls::public_server_config(cert, key, &[])
                .context("invalid rtmps-cert/rtmps-key")?;
            origin.rtmps = Some(ferrocast_origin::RtmpsConfig { listen: addr, tls });
        } else if rtmps_pair != (&None, &None) {
            bail!("invalid rtmps-cert: needs --rtmps-listen");
        }
        Ok(())
    }
}

/// `ferrocast origin`.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct OriginArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub serving: ServingArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub join: JoinArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub admission: AdmissionArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpLimitArgs,
}
layered!(OriginArgs {
    node,
    serving,
    join,
    ingest,
    admission,
    http
});

impl RoleArgs for OriginArgs {
    fn config_file(&self) -> Option<&Path> {
        self.node.config.as_deref()
    }
}

impl OriginArgs {
    /// Flags and environment over the file over defaults, checked.
    pub fn validate(self) -> anyhow::Result<Settings> {
        let a = load(self)?;
        let mut origin = OriginConfig::default();
        if let Some(h) = a.node.http_listen {
            origin.http_listen = h;
        }
        // The operators' port: /metrics and the protected streams' names never share
        // the viewers' port.
        origin.admin_listen = Some(a.serving.admin_listen.unwrap_or(anywhere(9081)));
        let https = a.serving.https_pair()?;
        a.ingest.apply(&mut origin, https.as_ref())?;
        origin.http.tls = a.serving.https()?;
        a.http.apply(&mut origin.http)?;
        let controllers = a.join.controller;
        origin.admission = a.admission.resolve(None)?;
        origin.validate()?;
        let node_id = match &a.node.tls_dir {
            Some(dir) => node_id_from_certificate(dir, Role::Origin, a.node.node_id, &controllers)?,
            None => a.node.node_id,
        };
        let node_id = node_id_or_host(node_id);
        if let Some(adm) = origin.admission.as_mut() {
            adm.node = node_id.clone();
        }
        Ok(Settings {
            node_id,
            region: a.serving.region(),
            log_format: a.node.log_format.unwrap_or_default(),
            origin,
            edge: Default::default(),
            tls_dir: a.node.tls_dir,
            origin_addr: None,
            controller: Default::default(),
            controllers,
            advertise_host: a.node.advertise_host,
            public_url: None,
        })
    }
}
