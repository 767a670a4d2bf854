//! The serving path's Prometheus metrics (`_total` on counters: prometheus-client
//! appends it when a counter is registered). Dashboards and alerts name them per role,
//! so each role registers them under the names it always had ([`Role`]): an edge every
//! one as `ferrocast_edge_<what>_<unit>`, an origin its viewer requests and bytes as
//! `ferrocast_http_requests_total` and `ferrocast_http_response_bytes_total` (its cache
//! only mirrors the packager's window, nothing an operator watches).

use ferrocast_runtime::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::OnceLock;

/// Labels of an HTTP request counter: what was asked for and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// playlist, part, segment, init, page, api, admin, other.
    pub kind: &'static str,
    /// HTTP status code.
    pub status: u16,
}

/// A bounded, fixed set of outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The outcome.
    pub result: &'static str,
}

/// Labels naming a stream (bounded by the edge's `max_streams`; removed when the edge
/// drops the stream).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// The stream key.
    pub stream: String,
}

/// Which node serves: the names its serving metrics are exported under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An origin, serving its own packager's streams.
    Origin,
    /// An edge, serving streams pulled from origins.
    Edge,
}

/// Every metric of the serving path.
#[derive(Debug)]
pub struct ServeMetrics {
    /// HTTP requests by kind and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// HTTP response body bytes sent.
    pub http_response_bytes: Counter,
    /// Object cache lookups: `hit` (in memory), `miss` (this request fetched it
    /// upstream), `coalesced` (waited for another request's fetch).
    pub cache_lookups: Family<ResultLabels, Counter>,
    /// Bytes held by the object cache (moka's weighted size, refreshed on inserts and
    /// once a second by each stream task).
    pub cache_size_bytes: Gauge,
    /// Upstream fetches by result: ok, no_such_object, not_found, unavailable.
    pub upstream_fetches: Family<ResultLabels, Counter>,
    /// Upstream subscriptions by result: ok, not_found, unavailable; `negative` counts
    /// requests answered from the negative cache without asking upstream.
    pub upstream_subscribes: Family<ResultLabels, Counter>,
    /// Objects pushed by the upstream.
    pub objects_received: Counter,
    /// Streams held now.
    pub streams: Gauge,
    /// Estimated active viewers per stream (see `state::ViewerMeter`).
    pub viewers: Family<StreamLabels, Gauge>,
    /// Origin made an object → the edge holds it (wall clocks of both nodes), seconds.
    pub propagation_delay: Histogram,
    /// `http_requests` counters of the common label sets, resolved once: a family
    /// lookup takes a lock and hashes the labels, on every request of every viewer.
    hot_requests: [OnceLock<Counter>; HOT_KINDS.len() * HOT_STATUSES.len()],
    /// `cache_lookups` counters by result, resolved once.
    hot_cache: [OnceLock<Counter>; HOT_CACHE.len()],
}

const HOT_KINDS: [&str; 4] = ["playlist", "part", "segment", "init"];
const HOT_STATUSES: [u16; 4] = [200, 400, 404, 503];
const HOT_CACHE: [&str; 3] = ["hit", "miss", "coalesced"];

impl Default for ServeMetrics {
    fn default() -> Self {
        Self {
            http_requests: Family::default(),
            http_response_bytes: Counter::default(),
            cache_lookups: Family::default(),
            cache_size_bytes: Gauge::default(),
            upstream_fetches: Family::default(),
            upstream_subscribes: Family::default(),
            objects_received: Counter::default(),
            streams: Gauge::default(),
            viewers: Family::default(),
            // 1 ms .. ~4 s: the goal is p99 ≤ 10 ms on loopback, a WAN hop is ~100 ms.
            propagation_delay: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0,
            ]),
            hot_requests: std::array::from_fn(|_| OnceLock::new()),
            hot_cache: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl ServeMetrics {
    /// Fresh metrics, not yet registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one viewer request by kind and status.
    pub fn request(&self, kind: &'static str, status: u16) {
        let k = HOT_KINDS.iter().position(|k| *k == kind);
        let s = HOT_STATUSES.iter().position(|s| *s == status);
        let labels = RequestLabels { kind, status };
        match (k, s) {
            (Some(k), Some(s)) => self.hot_requests[k * HOT_STATUSES.len() + s]
                .get_or_init(|| self.http_requests.get_or_create(&labels).clone())
                .inc(),
            _ => self.http_requests.get_or_create(&labels).inc(),
        };
    }

    /// Counts one outcome of a cache lookup.
    pub(crate) fn cache(&self, result: &'static str) {
        let labels = ResultLabels { result };
        match HOT_CACHE.iter().position(|r| *r == result) {
            Some(i) => self.hot_cache[i]
                .get_or_init(|| self.cache_lookups.get_or_create(&labels).clone())
                .inc(),
            None => self.cache_lookups.get_or_create(&labels).inc(),
        };
    }

    /// Counts one upstream fetch.
    pub(crate) fn fetch(&self, result: &'static str) {
        self.upstream_fetches
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one subscription attempt.
    pub(crate) fn subscribe(&self, result: &'static str) {
        self.upstream_subscribes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Registers the metrics under the names of `role` (see the module header).
    pub fn register(&self, metrics: &Metrics, role: Role) {
        if role == Role::Origin {
            metrics.register(|r| {
                let r = r.sub_registry_with_prefix("ferrocast");
                r.register(
                    "http_requests",
                    "HTTP requests by kind and status",
                    self.http_requests.clone(),
                );
                r.register(
                    "http_response_bytes",
                    "HTTP response body bytes",
                    self.http_response_bytes.clone(),
                );
            });
            return;
        }
        metrics.register(|r| {
            let r = r.sub_registry_with_prefix("ferrocast_edge");
            r.register(
                "http_requests",
                "Viewer HTTP requests by kind and status",
                self.http_requests.clone(),
            );
            r.register(
                "http_response_bytes",
                "Viewer HTTP response body bytes",
                self.http_response_bytes.clone(),
            );
            r.register(
                "cache_lookups",
                "Object cache lookups: hit, miss (fetched upstream), coalesced (waited for another fetch)",
                self.cache_lookups.clone(),
            );
            r.register(
                "cache_size_bytes",
                "Bytes held by the object cache",
                self.cache_size_bytes.clone(),
            );
            r.register(
                "upstream_fetches",
                "On-demand upstream fetches by result",
                self.upstream_fetches.clone(),
            );
            r.register(
                "upstream_subscribes",
                "Upstream subscription attempts by result (negative: answered from the negative cache)",
                self.upstream_subscribes.clone(),
            );
            r.register(
                "objects_received",
                "Objects pushed by the upstream",
                self.objects_received.clone(),
            );
            r.register("streams", "Streams held by this edge", self.streams.clone());
            r.register(
                "viewers",
                "Estimated active viewers per stream (in-flight blocking playlist requests plus plain playlist reloads in the last target duration)",
                self.viewers.clone(),
            );
            r.register(
                "propagation_delay_seconds",
                "Origin made an object to the edge holding it",
                self.propagation_delay.clone(),
            );
        });
    }
}
