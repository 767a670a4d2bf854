//! The Ferrocast origin: accepts RTMP publishers, packages each stream into CMAF parts
//! and segments, and serves LL-HLS over HTTP with the handler every node serves viewers
//! with ([`ferrocast_serve::http`], fed in process by the packager: [`local`]), behind
//! the same playback gate as an edge. `Origin::bind` validates and binds;
//! `Origin::run` serves until cancelled, then drains in order.

pub mod cluster;
pub mod ingest;
pub mod local;
pub mod metrics;
pub mod package;
mod relay_source;
pub mod stream;

use ferrocast_relay::server as relay;
use ferrocast_runtime::http::ServerLimits;
use ferrocast_runtime::metrics::Metrics;
use ferrocast_serve::http::{HttpState, ServeConfig};
use ferrocast_serve::metrics::Role;
use ferrocast_tls::ClusterTls;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything an origin needs to start.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// RTMP listen address (default 0.0.0.0:1935).
    pub rtmp_listen: SocketAddr,
    /// HTTP listen address (default 0.0.0.0:8081).
    pub http_listen: SocketAddr,
    /// Admin HTTP listen address: `/metrics`, `/healthz`, `/readyz` and every stream on
    /// `/api/streams`, kept off the HTTP port (default: none here; the `ferrocast
    /// origin` command's default is 0.0.0.0:9081).
    pub admin_listen: Option<SocketAddr>,
    /// RTMP limits and deadlines.
    pub ingest: ingest::IngestConfig,
    /// Packaging, grace period and stream limits.
    pub streams: stream::StreamConfig,
    /// HTTP server limits.
    pub http: ServerLimits,
    /// QUIC address edges pull from (default 0.0.0.0:4433/udp); the relay runs only
    /// when the origin has a cluster TLS identity.
    pub quic_listen: SocketAddr,
    /// The admission webhook asked before each publisher is claimed (default: none).
    pub admission: Option<ferrocast_admission::AdmissionConfig>,
    /// RTMPS ingest on its own port (default: off).
    pub rtmps: Option<RtmpsConfig>,
    /// Where the playback rules of the HTTP port come from (default: the controller, so
    /// every stream is refused until its first access snapshot; `None` only for an origin
    /// with no controller, whose streams are all open). The same rules and check as an
    /// edge's ([`ferrocast_agent::access`]).
    pub playback_rules: ferrocast_agent::access::RulesSource,
}

/// RTMPS ingest: TLS with a public certificate on its own port, then the same ingest as
/// RTMP (limits, deadlines, authorization).
#[derive(Debug, Clone)]
pub struct RtmpsConfig {
    /// Listen address (443 is usual for RTMPS; the docs use 1936).
    pub listen: SocketAddr,
    /// The server configuration ([`ferrocast_tls::public_server_config`], no
    /// ALPN), whose certificate follows its files.
    pub tls: Arc<rustls::ServerConfig>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            rtmp_listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            admin_listen: None,
            quic_listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            ingest: Default::default(),
            streams: Default::default(),
            http: Default::default(),
            admission: None,
            rtmps: None,
            playback_rules: ferrocast_agent::access::RulesSource::Controller,
        }
    }
}

pub use ferrocast_runtime::config::ConfigError;

impl OriginConfig {
    /// Checks every field before any socket is bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.streams.packager;
        let invalid = ConfigError::invalid;
        if !(0.05..=10.0).contains(&p.part_target) {
            return invalid("part-target", "must be between 0.05 and 10 seconds");
        }
        if !(0.5..=60.0).contains(&p.segment_target) {
            return invalid("segment-target", "must be between 0.5 and 60 seconds");
        }
        if p.part_target > p.segment_target {
            return invalid("part-target", "must not exceed segment-target");
        }
        if !(3..=1000).contains(&p.window_segments) {
            return invalid("window-segments", "must be between 3 and 1000");
        }
        if p.max_segment_duration < p.segment_target {
            return invalid("max-segment-duration", "must be at least segment-target");
        }
        if self.streams.max_streams == 0 {
            return invalid("max-streams", "must be at least 1");
        }
        self.http.validate()?;
        if let Some(a) = &self.admission {
            a.validate()?;
        }
        if self
            .admin_listen
            .is_some_and(|a| a.port() != 0 && a == self.http_listen)
        {
            return invalid("admin-listen", "must differ from http-listen");
        }
        Ok(())
    }
}

/// A bound, not yet running origin.
#[derive(Debug)]
pub struct Origin {
    cfg: OriginConfig,
    rtmp: TcpListener,
    rtmps: Option<TcpListener>,
    http: TcpListener,
    admin: Option<TcpListener>,
    quic: Option<quinn::Endpoint>,
    streams: Arc<stream::Streams>,
    metrics: Arc<metrics::OriginMetrics>,
    local: Arc<local::LocalUpstream>,
    state: Arc<HttpState>,
}

/// Bytes the viewer path's object cache may hold. It holds references to the bytes the
/// packager holds anyway, for parts viewers asked for lately; what it drops is answered
/// from the packager's snapshot again.
const SERVE_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// A cached object untouched this long is dropped: short, so that parts the packager
/// has already let go of are not kept alive for long by the cache.
const SERVE_CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The viewer path's state over the origin's own streams (what [`Origin::bind`] builds;
/// in-process tests drive it directly).
pub fn serving_state(
    upstream: Arc<local::LocalUpstream>,
    streams: &Arc<stream::Streams>,
    limits: &ServerLimits,
    access: Arc<ferrocast_agent::access::PlaybackAccess>,
    registry: Arc<Metrics>,
) -> Arc<HttpState> {
    let cfg = ServeConfig {
        role: Role::Origin,
        cache_capacity: SERVE_CACHE_BYTES,
        cache_idle: SERVE_CACHE_IDLE,
        streams: ferrocast_serve::state::StreamsConfig {
            // Unsubscribing costs nothing here; the edge's default.
            idle_unsubscribe: std::time::Duration::from_secs(30),
            // Only until the next stream is added: `LocalUpstream::changes`.
            negative_ttl: std::time::Duration::from_secs(2),
            max_streams: streams.config().max_streams,
            requests_off_runtime: limits.io_threads.is_some(),
        },
        access,
        // Viewers are admitted at edges; the origin's webhook is asked about publishers.
        admission: None,
    };
    HttpState::new(cfg, upstream, registry)
}

impl Origin {
    /// Validates `cfg`, binds the listeners and registers metrics into `registry`. With
    /// `tls` (the cluster identity) the QUIC relay for edges is bound too.
    pub async fn bind(
        mut cfg: OriginConfig,
        registry: Arc<Metrics>,
        tls: Option<&ClusterTls>,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        cfg.http.metrics = Some(ferrocast_runtime::http::HttpMetrics::shared(&registry));
        cfg.http.name = "origin";
        let quic =
            match tls {
                Some(tls) => Some(relay::server_endpoint(cfg.quic_listen, tls).map_err(
                    |source| ConfigError::Bind {
                        what: "quic",
                        addr: cfg.quic_listen,
                        source,
                    },
                )?),
                None => None,
            };
        let rtmp =
            TcpListener::bind(cfg.rtmp_listen)
                .await
                .map_err(|source| ConfigError::Bind {
                    what: "rtmp",
                    addr: cfg.rtmp_listen,
                    source,
                })?;
        let rtmps = match &cfg.rtmps {
            Some(r) => {
                Some(
                    TcpListener::bind(r.listen)
                        .await
                        .map_err(|source| ConfigError::Bind {
                            what: "rtmps",
                            addr: r.listen,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let http =
            TcpListener::bind(cfg.http_listen)
                .await
                .map_err(|source| ConfigError::Bind {
                    what: "http",
                    addr: cfg.http_listen,
                    source,
                })?;
        let admin = match cfg.admin_listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ConfigError::Bind {
                            what: "admin",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let metrics = Arc::new(metrics::OriginMetrics::new());
        metrics.register(&registry);
        let streams = stream::Streams::new(cfg.streams.clone(), metrics.clone());
        if let Some(a) = &cfg.admission {
            streams.set_admission(ferrocast_admission::Admission::new(a.clone(), &registry));
        }
        match streams.load_state() {
            Ok(0) => {}
            Ok(n) => tracing::info!(streams = n, "continuity restored from the state directory"),
            // A damaged file must not keep the origin down; numbering then starts afresh.
            Err(error) => {
                tracing::warn!(%error, "cannot read the continuity state; starting without it")
            }
        }
        let access = Arc::new(ferrocast_agent::access::PlaybackAccess::with_metrics(
            cfg.playback_rules,
            "origin",
            &registry,
        ));
        let local = local::LocalUpstream::new(streams.clone());
        let state = serving_state(local.clone(), &streams, &cfg.http, access, registry);
        Ok(Self {
            cfg,
            rtmp,
            rtmps,
            http,
            admin,
            quic,
            streams,
            metrics,
            local,
            state,
        })
    }

    /// The RTMP address actually bound.
    pub fn rtmp_addr(&self) -> SocketAddr {
        self.rtmp.local_addr().unwrap_or(self.cfg.rtmp_listen)
    }

    /// The RTMPS address actually bound, when RTMPS is on.
    pub fn rtmps_addr(&self) -> Option<SocketAddr> {
        self.rtmps.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTP address actually bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.cfg.http_listen)
    }

    /// The admin address actually bound, when there is an admin port.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The QUIC (relay) address actually bound, when the relay runs.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().and_then(|q| q.local_addr().ok())
    }

    /// The playback rules its HTTP port checks viewers with (fed the controller's
    /// `WatchAccess` snapshots, like an edge's).
    pub fn access(&self) -> Arc<ferrocast_agent::access::PlaybackAccess> {
        self.state.access.clone()
    }

    /// The stream registry (the demo publisher feeds it directly).
    pub fn streams(&self) -> Arc<stream::Streams> {
        self.streams.clone()
    }

    /// Serves until `shutdown` is cancelled: then readiness goes false, ingest stops,
    /// and HTTP drains within its grace period.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            cfg,
            rtmp,
            rtmps,
            http,
            admin,
            quic,
            streams,
            metrics,
            local,
            state,
        } = self;
        tracing::info!(rtmp = %rtmp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            http = %http.local_addr().map(|a| a.to_string()).unwrap_or_default(), "origin listening");
        let http_token = CancellationToken::new();
        let handler_state = state.clone();
        let http_task = tokio::spawn(ferrocast_runtime::http::serve(
            http,
            move |req| ferrocast_serve::http::handle(handler_state.clone(), req),
            cfg.http.clone(),
            http_token.clone(),
        ));
        // The admin port lives until the very end, so /metrics and /readyz tell the
        // drain's story.
        let admin_token = CancellationToken::new();
        let admin_task = admin.map(|listener| {
            let admin_state = state.clone();
            tokio::spawn(ferrocast_runtime::http::serve(
                listener,
                move |req| ferrocast_serve::http::admin(admin_state.clone(), req),
                ferrocast_runtime::respond::admin_limits(&cfg.http),
                admin_token.clone(),
            ))
        });
        let relay_token = CancellationToken::new();
        let relay_task = quic.map(|ep| {
            tokio::spawn(relay::serve(
                ep,
                streams.clone(),
                metrics.relay.clone(),
                relay_token.clone(),
            ))
        });
        let persist_token = CancellationToken::new();
        let persist_task = tokio::spawn(streams.clone().persist(persist_token.clone()));
        let rtmps = rtmps.zip(cfg.rtmps.as_ref().map(|r| r.tls.clone()));
        let ingest_task = tokio::spawn(ingest::serve(
            rtmp,
            rtmps,
            cfg.ingest.clone(),
            streams,
            metrics.clone(),
            shutdown.clone(),
        ));
        state.ready.store(true, Ordering::Relaxed);
        shutdown.cancelled().await;
        state.ready.store(false, Ordering::Relaxed);
        let _ = ingest_task.await;
        http_token.cancel();
        let _ = http_task.await;
        state.streams.shutdown().await;
        local.shutdown().await;
        persist_token.cancel();
        let _ = persist_task.await;
        // Edges last: they resubscribe elsewhere once this origin is gone.
        relay_token.cancel();
        if let Some(t) = relay_task {
            let _ = t.await;
        }
        admin_token.cancel();
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        tracing::info!("origin stopped");
    }
}
