//! The relay server's Prometheus metrics (`ferrocast_relay_*`), owned here so that every
//! node running the server exports the same set; the node registers them with its own.

use ferrocast_runtime::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Labels of a pushed-object counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// init or part.
    pub kind: &'static str,
}

/// Labels of a fetch counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok, not_found or no_stream.
    pub result: &'static str,
}

/// Labels naming why an edge connection or request was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// tls, busy, transport, timeout, handshake or protocol.
    pub reason: &'static str,
}

/// Every metric of the relay server.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Objects pushed to edges, by kind.
    pub objects_sent: Family<KindLabels, Counter>,
    /// Object bytes sent to edges (pushes and fetches).
    pub bytes_sent: Counter,
    /// Edge subscriptions open now.
    pub subscriptions: Gauge,
    /// Fetches answered, by result.
    pub fetches: Family<ResultLabels, Counter>,
    /// Edge connections established.
    pub connections: Counter,
    /// Edge connections open now.
    pub connections_open: Gauge,
    /// Edge connections refused (tls, busy, ...) or closed for a protocol violation.
    pub refused: Family<ReasonLabels, Counter>,
    /// Pushes started but not yet written, across connections.
    pub pushes_in_flight: Gauge,
    /// Parts not pushed because a subscriber was too far behind (it fetches them).
    pub parts_skipped: Counter,
}

impl RelayMetrics {
    /// Registers every metric as `ferrocast_relay_*`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(|r| {
            let r = r.sub_registry_with_prefix("ferrocast");
            r.register(
                "relay_objects_sent",
                "Objects pushed to edges, by kind",
                self.objects_sent.clone(),
            );
            r.register(
                "relay_bytes_sent",
                "Object bytes sent to edges (pushes and fetches)",
                self.bytes_sent.clone(),
            );
            r.register(
                "relay_subscriptions",
                "Edge subscriptions open now",
                self.subscriptions.clone(),
            );
            r.register(
                "relay_fetches",
                "Edge fetches answered, by result",
                self.fetches.clone(),
            );
            r.register(
                "relay_connections",
                "Edge connections established",
                self.connections.clone(),
            );
            r.register(
                "relay_connections_open",
                "Edge connections open now",
                self.connections_open.clone(),
            );
            r.register(
                "relay_refused",
                "Edge connections refused or closed for a violation, by reason",
                self.refused.clone(),
            );
            r.register(
                "relay_pushes_in_flight",
                "Object pushes started and not yet written",
                self.pushes_in_flight.clone(),
            );
            r.register(
                "relay_parts_skipped",
                "Parts not pushed to an edge that fell too far behind",
                self.parts_skipped.clone(),
            );
        });
    }
}
