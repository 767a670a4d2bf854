//! The origin's Prometheus metrics (`ferrocast_<area>_<what>_<unit>`); those of its
//! viewer HTTP are the serving path's (`ferrocast_serve::metrics`).

use ferrocast_relay::server::metrics::RelayMetrics;
use ferrocast_runtime::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;

/// Labels naming why an ingest connection was closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A short fixed reason (bounded set).
    pub reason: &'static str,
}

/// Labels of a claim counter during a controller outage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// continued or refused.
    pub result: &'static str,
}

/// Every metric the origin exports.
#[derive(Debug, Default)]
pub struct OriginMetrics {
    /// RTMP connections accepted.
    pub ingest_connections: Counter,
    /// RTMP connections open now.
    pub ingest_connections_open: Gauge,
    /// RTMP connections closed for a protocol or limit violation, by reason.
    pub ingest_rejected: Family<ReasonLabels, Counter>,
    /// Media bytes received from publishers.
    pub ingest_bytes: Counter,
    /// Streams held.
    pub streams: Gauge,
    /// Publishers claimed while the controller could not be reached, by result
    /// (`continued`: the credential that won the stream; `refused`: anyone else).
    pub outage_claims: Family<ResultLabels, Counter>,
    /// The relay server's metrics (`ferrocast_relay_*`).
    pub relay: Arc<RelayMetrics>,
}

impl OriginMetrics {
    /// Fresh metrics, not yet registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every metric under the `ferrocast` prefix.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(|r| {
            let r = r.sub_registry_with_prefix("ferrocast");
            r.register(
                "ingest_connections",
                "RTMP connections accepted",
                self.ingest_connections.clone(),
            );
            r.register(
                "ingest_connections_open",
                "RTMP connections open now",
                self.ingest_connections_open.clone(),
            );
            r.register(
                "ingest_rejected",
                "RTMP connections closed for bad input or limits",
                self.ingest_rejected.clone(),
            );
            r.register(
                "ingest_media_bytes",
                "Media bytes received from publishers",
                self.ingest_bytes.clone(),
            );
            r.register(
                "origin_streams",
                "Streams held by this origin",
                self.streams.clone(),
            );
            r.register(
                "origin_outage_claims",
                "Publishers claimed while the controller could not be reached, by result",
                self.outage_claims.clone(),
            );
        });
        self.relay.register(metrics);
    }
}
