//! The Ferrocast edge: subscribes to streams upstream (origins over QUIC, see
//! [`upstream`]) when a viewer first asks, holds every pushed part in a byte-weighted
//! moka cache, and serves LL-HLS through the serving path both roles share
//! ([`ferrocast_serve`]). `Edge::bind` validates and binds; `Edge::run` serves (ready
//! once its playback rules are known, see [`ferrocast_serve::access`]) until cancelled,
//! then drains in order: readiness off, stop accepting, in-flight requests finish,
//! subscriptions end.

pub mod cluster;

#[cfg(test)]
mod tests;

use ferrocast_runtime::http::ServerLimits;
use ferrocast_runtime::metrics::Metrics;
use ferrocast_serve::upstream::Upstream;
use ferrocast_serve::{access, admission, http, metrics, state};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything an edge needs to start (the upstream is passed to [`Edge::bind`]).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Viewer HTTP listen address (default 0.0.0.0:8080).
    pub http_listen: SocketAddr,
    /// Admin HTTP listen address: `/metrics`, `/healthz`, `/readyz` and every stream on
    /// `/api/streams`, kept off the viewer port (default: none here; the `ferrocast edge`
    /// command's default is 0.0.0.0:9080).
    pub admin_listen: Option<SocketAddr>,
    /// Most bytes the object cache holds (default 512 MiB).
    pub cache_capacity: u64,
    /// A cached object untouched for this long is dropped (default 60 s).
    pub cache_idle: Duration,
    /// No viewer request for a stream for this long → unsubscribe and drop its state
    /// (default 30 s).
    pub idle_unsubscribe: Duration,
    /// How long an unknown stream is answered 404 without asking upstream again
    /// (default 2 s).
    pub negative_ttl: Duration,
    /// Most streams held at once; requests for more are answered 503 (default 10,000).
    pub max_streams: usize,
    /// After shutdown starts, how long to keep accepting with readiness false, so load
    /// balancers see `/readyz` fail before connections are refused (default 0 s).
    pub drain_delay: Duration,
    /// HTTP server limits, including the drain grace for in-flight requests.
    pub http: ServerLimits,
    /// The admission webhook asked about each new viewer (default: none).
    pub admission: Option<ferrocast_admission::AdmissionConfig>,
    /// Where playback rules come from (default: the controller, so every stream is
    /// refused and `/readyz` fails until its first access snapshot; `None` only for an
    /// edge with no controller, whose streams are all open).
    pub playback_rules: access::RulesSource,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: None,
            cache_capacity: 512 * 1024 * 1024,
            cache_idle: Duration::from_secs(60),
            idle_unsubscribe: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(2),
            max_streams: 10_000,
            drain_delay: Duration::ZERO,
            http: ServerLimits::default(),
            admission: None,
            playback_rules: access::RulesSource::Controller,
        }
    }
}

pub use ferrocast_runtime::config::ConfigError;

impl EdgeConfig {
    /// Checks every field before anything is bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = ConfigError::invalid;
        if self.cache_capacity < 1024 * 1024 {
            return invalid("cache-capacity", "must be at least 1 MiB");
        }
        if self.cache_idle < Duration::from_secs(1) {
            return invalid("cache-idle", "must be at least 1 second");
        }
        if self.idle_unsubscribe < Duration::from_secs(1) {
            return invalid("idle-unsubscribe", "must be at least 1 second");
        }
        if self.negative_ttl.is_zero() || self.negative_ttl > Duration::from_secs(300) {
            return invalid("negative-ttl", "must be between 1 ms and 300 seconds");
        }
        if self.max_streams == 0 {
            return invalid("max-streams", "must be at least 1");
        }
        if self.drain_delay > Duration::from_secs(300) {
            return invalid("drain-delay", "must be at most 300 seconds");
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

    /// The shared state the HTTP handlers serve from, without binding anything (what
    /// [`Edge::bind`] builds; in-process tests drive it directly).
    pub fn build_state(
        &self,
        registry: Arc<Metrics>,
        upstream: Arc<dyn Upstream>,
    ) -> Arc<http::HttpState> {
        let admission = self
            .admission
            .clone()
            .map(|a| admission::ViewerAdmission::new(a, &registry));
        let access = Arc::new(access::PlaybackAccess::with_metrics(
            self.playback_rules,
            "edge",
            &registry,
        ));
        let cfg = http::ServeConfig {
            role: metrics::Role::Edge,
            cache_capacity: self.cache_capacity,
            cache_idle: self.cache_idle,
            streams: state::StreamsConfig {
                idle_unsubscribe: self.idle_unsubscribe,
                negative_ttl: self.negative_ttl,
                max_streams: self.max_streams,
                requests_off_runtime: self.http.io_threads.is_some(),
            },
            access,
            admission,
        };
        http::HttpState::new(cfg, upstream, registry)
    }
}

/// A bound, not yet running edge.
#[derive(Debug)]
pub struct Edge {
    cfg: EdgeConfig,
    http: TcpListener,
    admin: Option<TcpListener>,
    state: Arc<http::HttpState>,
}

impl Edge {
    /// Validates `cfg`, binds the viewer listener and registers metrics into `registry`.
    pub async fn bind(
        mut cfg: EdgeConfig,
        registry: Arc<Metrics>,
        upstream: Arc<dyn Upstream>,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        cfg.http.metrics = Some(ferrocast_runtime::http::HttpMetrics::shared(&registry));
        cfg.http.name = "edge";
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
        let state = cfg.build_state(registry, upstream);
        Ok(Self {
            cfg,
            http,
            admin,
            state,
        })
    }

    /// The admin address actually bound, when there is an admin port.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTP address actually bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.cfg.http_listen)
    }

    /// The state the handlers serve from (stream registry, cache, metrics).
    pub fn state(&self) -> Arc<http::HttpState> {
        self.state.clone()
    }

    /// Serves until `shutdown` is cancelled, then: readiness false, keep accepting for
    /// `drain_delay`, stop accepting, let in-flight requests finish within the drain
    /// grace (their subscriptions keep running meanwhile), then end every subscription.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            cfg,
            http,
            admin,
            state,
        } = self;
        tracing::info!(http = %http.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            admin = ?admin.as_ref().and_then(|a| a.local_addr().ok()), "edge listening");
        // The admin port lives until the very end, so /metrics and /readyz tell the
        // drain's story; its own small limits: operators and scrapers, not viewers.
        let admin_token = CancellationToken::new();
        let admin_task = admin.map(|listener| {
            let admin_state = state.clone();
            tokio::spawn(ferrocast_runtime::http::serve(
                listener,
                move |req| http::admin(admin_state.clone(), req),
                ferrocast_runtime::respond::admin_limits(&cfg.http),
                admin_token.clone(),
            ))
        });
        let http_token = CancellationToken::new();
        let handler_state = state.clone();
        let http_task = tokio::spawn(ferrocast_runtime::http::serve(
            http,
            move |req| http::handle(handler_state.clone(), req),
            cfg.http.clone(),
            http_token.clone(),
        ));
        // Not ready before the playback rules are known: until then every stream is
        // refused, and a balancer should send viewers to an edge that can decide.
        let rules = state.access.clone();
        tokio::select! {
            _ = rules.wait_ready() => state.ready.store(true, Ordering::Relaxed),
            _ = shutdown.cancelled() => {}
        }
        shutdown.cancelled().await;
        state.ready.store(false, Ordering::Relaxed);
        tracing::info!(delay = ?cfg.drain_delay, "edge draining");
        if !cfg.drain_delay.is_zero() {
            tokio::time::sleep(cfg.drain_delay).await;
        }
        http_token.cancel();
        let _ = http_task.await;
        state.streams.shutdown().await;
        admin_token.cancel();
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        tracing::info!("edge stopped");
    }
}
