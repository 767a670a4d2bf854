//! The admin HTTP port: `/play/{stream}` (a viewer's redirect to an edge, decided by
//! [`play`] on the hub's view with recent load reports), `/healthz`, `/readyz` (503
//! `degraded` while the store is unreachable) and `/metrics`. No player page on the
//! controller; anything else is 404.

use crate::play;
use crate::state::Shared;
use ferrocast_runtime::http::{PeerAddr, Request, Response, ServerLimits};
use ferrocast_runtime::metrics::Metrics;
use ferrocast_runtime::respond;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The admin HTTP server's state.
#[derive(Debug)]
pub struct AdminHttp {
    /// Whether `/readyz` says ready (off again at shutdown).
    pub ready: Arc<AtomicBool>,
    /// What `/metrics` renders.
    pub registry: Arc<Metrics>,
    /// The cluster view and placement `/play` decides on.
    pub shared: Arc<Shared>,
    /// The trusted request header carrying a viewer's region, if any.
    pub region_header: Option<String>,
}

impl AdminHttp {
    /// Serves the admin port on `listener` under `limits` (with the HTTP metrics) until
    /// `stop`, then drains.
    pub async fn serve(self, listener: TcpListener, limits: ServerLimits, stop: CancellationToken) {
        let metrics = ferrocast_runtime::http::HttpMetrics::shared(&self.registry);
        let admin = Arc::new(self);
        ferrocast_runtime::http::serve(
            listener,
            move |req: Request| {
                let admin = admin.clone();
                async move { admin.handle(req) }
            },
            ServerLimits {
                metrics: Some(metrics),
                ..limits
            },
            stop,
        )
        .await
    }

    /// `/play/{stream}` and the admin endpoints (no player page on the controller);
    /// anything else is 404.
    fn handle(&self, req: Request) -> Response {
        let path = req.uri().path();
        let read = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
        if let (Some(stream), true) = (path.strip_prefix("/play/"), read) {
            return self.play(&req, stream);
        }
        let ready = self.ready.load(Ordering::Relaxed);
        if path == "/readyz" && ready && !self.shared.hub.is_store_up() {
            return respond::text(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "degraded: state store unreachable; writes refused, reads served from the last good view\n",
            );
        }
        let known = matches!(path, "/healthz" | "/readyz" | "/metrics");
        match respond::common(
            req.method(),
            path,
            req.headers().get(http::header::ACCEPT),
            ready,
            &self.registry,
            |_| false,
        ) {
            Some((_, r)) if known || r.status() != http::StatusCode::OK => r,
            _ => respond::error(http::StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn play(&self, req: &Request, stream: &str) -> Response {
        let sh = &self.shared;
        let Some(view) = sh.hub.view() else {
            return play::respond(Err(play::PlayError::Placement(
                crate::scheduler::PlacementError::NoEdge,
            )));
        };
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let region = play::client_region(
            req.headers(),
            self.region_header.as_deref(),
            &sh.regions,
            peer,
        );
        let snapshot = sh.placement(&view);
        let decision = play::decide(&snapshot, stream, region, &sh.policy, req.uri().query());
        match &decision {
            Ok(d) => {
                tracing::debug!(%stream, edge = %d.placement.edge, region = ?region, "viewer placed")
            }
            Err(error) => tracing::debug!(%stream, %error, region = ?region, "viewer not placed"),
        }
        play::respond(decision)
    }
}
