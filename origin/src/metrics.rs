//! The origin's Prometheus metrics (`ferrocast_<area>_<what>_<unit>`); those of its
//! viewer HTTP are the serving path's (`ferrocast_serve::metrics`).

use ferrocast_runtime::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Labels naming why an ingest connection was closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A short fixed reason (bounded set).
    pub reason: &'static str,
}

/// Labels of a relay object counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// init or part.
    pub kind: &'static str,
}

/// Labels of a relay fetch counter (and of claims during a controller outage).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok, not_found, no_stream or error (continued or refused for outage claims).
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
    /// Objects pushed to edges, by kind.
    pub relay_objects_sent: Family<KindLabels, Counter>,
    /// Object bytes sent to edges (pushes and fetches).
    pub relay_bytes_sent: Counter,
    /// Edge subscriptions open now.
    pub relay_subscriptions: Gauge,
    /// Fetches answered, by result.
    pub relay_fetches: Family<ResultLabels, Counter>,
    /// Edge connections established.
    pub relay_connections: Counter,
    /// Edge connections open now.
    pub relay_connections_open: Gauge,
    /// Edge connections refused (tls, busy, ...) or closed for a protocol violation.
    pub relay_refused: Family<ReasonLabels, Counter>,
    /// Pushes started but not yet written, across connections.
    pub relay_pushes_in_flight: Gauge,
    /// Parts not pushed because a subscriber was too far behind (it fetches them).
    pub relay_parts_skipped: Counter,
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
            r.register(
                "relay_objects_sent",
                "Objects pushed to edges, by kind",
                self.relay_objects_sent.clone(),
            );
            r.register(
                "relay_bytes_sent",
                "Object bytes sent to edges (pushes and fetches)",
                self.relay_bytes_sent.clone(),
            );
            r.register(
                "relay_subscriptions",
                "Edge subscriptions open now",
                self.relay_subscriptions.clone(),
            );
            r.register(
                "relay_fetches",
                "Edge fetches answered, by result",
                self.relay_fetches.clone(),
            );
            r.register(
                "relay_connections",
                "Edge connections established",
                self.relay_connections.clone(),
            );
            r.register(
                "relay_connections_open",
                "Edge connections open now",
                self.relay_connections_open.clone(),
            );
            r.register(
                "relay_refused",
                "Edge connections refused or closed for a violation, by reason",
                self.relay_refused.clone(),
            );
            r.register(
                "relay_pushes_in_flight",
                "Object pushes started and not yet written",
                self.relay_pushes_in_flight.clone(),
            );
            r.register(
                "relay_parts_skipped",
                "Parts not pushed to an edge that fell too far behind",
                self.relay_parts_skipped.clone(),
            );
        });
    }
}
