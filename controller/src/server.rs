//! The controller process: [`ControllerConfig`] (validated before anything binds),
//! [`Controller::bind`] (store, election, listeners) and [`Controller::run`] (the gRPC
//! server with health and reflection, the admin HTTP server with `/play/{stream}`, the
//! election loop, the cluster [`Hub`]).
//!
//! While the store is unreachable the controller is degraded, not dead: `/healthz` stays
//! 200, `/readyz` answers 503 `degraded`, gRPC health reports `NodeService` (and the
//! server as a whole) `NOT_SERVING` because writes fail, `OperatorService` stays
//! `SERVING` (reads answer from the last good view), `ferrocast_controller_store_up` is 0,
//! and `/play` keeps placing viewers on the last good view.

use crate::api::{Leader, Loads, NodeApi, OperatorApi, OperatorAuth, Shared};
use crate::election::{Election, EtcdElection, Leadership, LocalElection};
use crate::etcd::{EtcdClient, EtcdConfig, EtcdConfigError};
use crate::hub::{self, Hub};
use crate::play;
use crate::region::{RegionCidr, RegionTable};
use crate::scheduler::PlacementPolicy;
use crate::store::etcd::{EtcdStore, DEFAULT_PREFIX};
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::tls::NodeAuth;
use ferrocast_proto::controller::v1 as pb;
use ferrocast_proto::controller::FILE_DESCRIPTOR_SET;
use ferrocast_runtime::http::{PeerAddr, Request, Response, ServerLimits};
use ferrocast_runtime::metrics::Metrics;
use ferrocast_runtime::respond;
use ferrocast_runtime::tls::ClusterTls;
use pb::node_service_server::NodeServiceServer;
use pb::operator_service_server::OperatorServiceServer;
use prometheus_client::metrics::gauge::Gauge;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// The etcd election key of the controller replicas.
pub const ELECTION_NAME: &str = "/ferrocast/v1/election/controller";
/// Largest request a client may send (load reports of a busy node fit easily).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest reply the controller sends (ListStreams of a large cluster).
pub const MAX_REPLY_BYTES: usize = 16 << 20;
/// Deadline of every call (a stream only for its opening); clients may ask for less.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Controller configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// gRPC (node and operator APIs, health, reflection) listen address (default
    /// 127.0.0.1:50051: without TLS the node API knows no caller, so it stays on loopback
    /// unless [`ControllerConfig::insecure_node_api`]; the CLI makes it 0.0.0.0:50051
    /// with `--tls-dir`).
    pub grpc_listen: SocketAddr,
    /// Admin HTTP (`/healthz`, `/readyz`, `/metrics`) listen address.
    pub http_listen: SocketAddr,
    /// etcd endpoints, TLS and user; no endpoint: in-memory store and a lone,
    /// always-leading controller.
    pub etcd: EtcdConfig,
    /// TTL of node leases (and of the leader's lease on etcd).
    pub lease_ttl: Duration,
    /// Bearer token operator calls must carry (admin role); `None`: operator calls are open.
    pub operator_token: Option<String>,
    /// A bearer token allowed only the operator reads; needs `operator_token`.
    pub operator_read_token: Option<String>,
    /// Whether publishers need a credential (`--publish-auth open|closed`).
    pub publish_auth: crate::access::PublishAuth,
    /// The gRPC address followers redirect writes to; defaults to the bound address.
    pub advertise: Option<String>,
    /// Client address blocks → viewer region (`--region-cidr 10.1.0.0/16=eu-west`), for
    /// `/play` and `Resolve`; the longest matching prefix wins. Default: none.
    pub region_cidrs: Vec<RegionCidr>,
    /// A request header carrying the viewer's region, set by a trusted load balancer
    /// (e.g. `x-client-region`); it wins over `region_cidrs`. Default: none (never trusted).
    pub region_header: Option<String>,
    /// TLS on the gRPC port (`--tls-dir`, `--operator-ca`); `None`: plaintext.
    pub tls: Option<GrpcTls>,
    /// Serve the node API without TLS on an address other than loopback
    /// (`--insecure-node-api`): any client that reaches it is then any node. Default
    /// false: such a configuration is refused.
    pub insecure_node_api: bool,
    /// How often the leader compacts the store's history, keeping one period of it
    /// (default 5 minutes, as kube-apiserver compacts its etcd).
    pub compact_every: Duration,
    /// Connection limits and timeouts of the admin HTTP port (`/play`, probes,
    /// `/metrics`): the `--http-*` flags origins and edges take, with a smaller
    /// connection cap by default (operators, probes and `/play` redirects, not viewers).
    pub http: ServerLimits,
}

/// TLS on the controller's gRPC port.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// The cluster identity: the certificate the controller presents (reloaded when its
    /// files change) and the CA node client certificates must chain to.
    pub cluster: ClusterTls,
    /// CA certificates of operator client certificates (`--operator-ca`); empty: none,
    /// operators use bearer tokens.
    pub operator_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8090)),
            etcd: EtcdConfig::default(),
            lease_ttl: Duration::from_secs(5),
            compact_every: Duration::from_secs(300),
            http: {
                let defaults = ServerLimits::default();
                ServerLimits {
                    max_connections: defaults.max_connections.min(1024),
                    drain_grace: Duration::from_secs(5),
                    name: "controller",
                    ..defaults
                }
            },
            operator_token: None,
            operator_read_token: None,
            publish_auth: crate::access::PublishAuth::Open,
            advertise: None,
            region_cidrs: Vec::new(),
            region_header: None,
            tls: None,
            insecure_node_api: false,
        }
    }
}

/// A configuration that cannot work, naming the field, or a listener that cannot bind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field has an unusable value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (as its flag is named).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A listener could not bind.
    #[error("cannot bind {field} {addr}: {source}")]
    Bind {
        /// The field naming the address.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

impl ControllerConfig {
    /// Checks every field; nothing is bound before this passes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.lease_ttl < Duration::from_millis(100) || self.lease_ttl > Duration::from_secs(300)
        {
            return invalid("lease-ttl", "must be between 100ms and 300s");
        }
        if self.etcd.is_enabled() && self.lease_ttl < Duration::from_secs(2) {
            return invalid(
                "lease-ttl",
                "must be at least 2s with etcd (its minimum TTL)",
            );
        }
        if let Err(EtcdConfigError::Invalid { field, reason }) = self.etcd.validate() {
            return Err(ConfigError::Invalid { field, reason });
        }
        if let Some(t) = &self.operator_token {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(
                    "operator-token",
                    "must be non-empty, without whitespace or control characters",
                );
            }
        }
        if let Some(t) = &self.operator_read_token {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(
                    "operator-read-token",
                    "must be non-empty, without whitespace or control characters",
                );
            }
            if self.operator_token.is_none() {
                return invalid("operator-read-token", "needs --operator-token (admin) too");
            }
            if self.operator_token.as_ref() == Some(t) {
                return invalid("operator-read-token", "must differ from operator-token");
            }
        }
        if self.advertise.as_deref() == Some("") {
            return invalid("advertise", "is empty");
        }
        if let Some(h) = &self.region_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return invalid("region-header", "is not a valid HTTP header name");
            }
        }
        if let Some(t) = &self.tls {
            if let Err(e) = t.cluster.grpc_server_config(&t.operator_ca) {
                return invalid("tls-dir", &e.to_string());
            }
        }
        if self.tls.is_none() && !self.grpc_listen.ip().is_loopback() && !self.insecure_node_api {
            // Closed by default: NodeService has no caller identity without TLS.
            return invalid(
                "grpc-listen",
                "without --tls-dir the node API takes every caller for the node it claims to \
                 be, so it listens on loopback only; give the controller --tls-dir (node \
                 certificates: ferrocast certs DIR --node ROLE:ID), or --insecure-node-api \
                 on a network only cluster nodes reach",
            );
        }
        if let Err(e) = self.http.validate() {
            return Err(ConfigError::Invalid {
                field: "http",
                reason: e.to_string(),
            });
        }
        let operator_credential = self.operator_token.is_some()
            || self.tls.as_ref().is_some_and(|t| !t.operator_ca.is_empty());
        if !operator_credential && !self.grpc_listen.ip().is_loopback() {
            // Closed by default: an operator API reachable from the network with no
            // credential would let anyone drain nodes, kick publishers and mint keys.
            return invalid(
                "operator-token",
                "the operator API listens beyond loopback, so it needs a credential: \
                 --operator-token (or FERROCAST_OPERATOR_TOKEN) or --operator-ca",
            );
        }
        Ok(())
    }
}

/// A bound controller, ready to [`run`](Controller::run).
#[derive(Debug)]
pub struct Controller {
    cfg: ControllerConfig,
    grpc: TcpListener,
    http: TcpListener,
    shared: Arc<Shared>,
    election: Arc<dyn Election>,
    registry: Arc<Metrics>,
    is_leader: Gauge,
    store_up: Gauge,
}

impl Controller {
    /// Validates `cfg`, builds the store and election, and binds both listeners.
    pub async fn bind(cfg: ControllerConfig, registry: Arc<Metrics>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let bind = |field, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ConfigError::Bind {
                    field,
                    addr,
                    source,
                })
        };
        let grpc = bind("grpc-listen", cfg.grpc_listen).await?;
        let http = bind("http-listen", cfg.http_listen).await?;
        let grpc_addr = grpc.local_addr().unwrap_or(cfg.grpc_listen);
        let (store, election): (Arc<dyn Store>, Arc<dyn Election>) = if !cfg.etcd.is_enabled() {
            (Arc::new(MemoryStore::new()), Arc::new(LocalElection))
        } else {
            let client = EtcdClient::connect(&cfg.etcd, Duration::from_secs(2))
                .await
                .map_err(|e| ConfigError::Invalid {
                    field: "etcd",
                    reason: e.to_string(),
                })?;
            let advertise = cfg
                .advertise
                .clone()
                .unwrap_or_else(|| grpc_addr.to_string());
            let election =
                EtcdElection::new(client.clone(), ELECTION_NAME, advertise, cfg.lease_ttl);
            (
                Arc::new(EtcdStore::new(client, DEFAULT_PREFIX)),
                Arc::new(election),
            )
        };
        let is_leader = Gauge::default();
        registry.register(|r| {
            r.register(
                "ferrocast_controller_leader",
                "1 while this controller replica leads",
                is_leader.clone(),
            )
        });
        let store_up = Gauge::default();
        registry.register(|r| {
            r.register(
                "ferrocast_controller_store_up",
                "1 while the last read of the state store (etcd) succeeded",
                store_up.clone(),
            )
        });
        let hub = Arc::new(Hub::new(
            store.clone(),
            hub::DEFAULT_INTERVAL,
            hub::DEFAULT_BACKLOG,
        ));
        let shared = Arc::new(Shared {
            store,
            election: election.clone(),
            leader: Arc::new(Leader::default()),
            loads: Loads::default(),
            lease_ttl: cfg.lease_ttl,
            policy: PlacementPolicy::default(),
            hub,
            regions: RegionTable::new(cfg.region_cidrs.iter().cloned()),
            placement_cache: Default::default(),
            access: Arc::new(crate::access::Access::new(cfg.publish_auth)),
        });
        Ok(Controller {
            cfg,
            grpc,
            http,
            shared,
            election,
            registry,
            is_leader,
            store_up,
        })
    }

    /// The gRPC address actually bound.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.cfg.grpc_listen)
    }

    /// The admin HTTP address actually bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.cfg.http_listen)
    }

    /// Serves until `shutdown`: then readiness goes off, leadership is resigned (a
    /// successor is elected at once), and both servers drain.
    pub async fn run(self, shutdown: CancellationToken) {
        let Controller {
            cfg,
            grpc,
            http,
            shared,
            election,
            registry,
            is_leader,
            store_up,
        } = self;
        tracing::info!(grpc = %grpc.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            http = %http.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            store = if !cfg.etcd.is_enabled() { "memory" } else { "etcd" },
            grpc_tls = match &cfg.tls {
                None => "off",
                Some(t) if t.operator_ca.is_empty() => "mutual TLS for nodes",
                Some(_) => "mutual TLS for nodes and operator certificates",
            },
            "controller listening");
        if cfg.tls.is_none() && cfg.grpc_listen.ip().is_loopback() {
            // Loopback only (standalone, one machine): said, not shouted.
            tracing::info!(grpc = %cfg.grpc_listen,
                "node API without identity on loopback (no --tls-dir): local processes may act as any node");
        } else if cfg.tls.is_none() {
            // NodeService has no identity without TLS (controller/src/identity.rs).
            tracing::warn!(grpc = %grpc.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                insecure_node_api = cfg.insecure_node_api,
                "NODE API WITHOUT IDENTITY: no --tls-dir, so anyone who reaches the gRPC port \
                 may register as any node, claim and release any stream and read playback \
                 secrets; keep this port on loopback, or run with --tls-dir and per-node \
                 certificates (ferrocast certs DIR --node ROLE:ID)");
        }
        let ready = Arc::new(AtomicBool::new(false));

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<NodeServiceServer<NodeApi>>().await;
        health
            .set_serving::<OperatorServiceServer<OperatorApi>>()
            .await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let (Ok(reflection_v1), Ok(reflection_v1alpha)) =
            (reflection().build_v1(), reflection().build_v1alpha())
        else {
            // The descriptor set is committed and checked by the codegen test.
            tracing::error!("the committed descriptor set does not decode");
            return;
        };
        // The hub reads the store before anything is served, so watchers and `/play` start
        // from a view (when the store answers).
        let hub_token = CancellationToken::new();
        let _ = shared.hub.poll_once().await;
        let hub_task = tokio::spawn(shared.hub.clone().run(hub_token.clone()));
        if cfg.publish_auth == crate::access::PublishAuth::Open {
            tracing::warn!(
                "PUBLISHING IS OPEN: anyone who reaches an origin's RTMP port may publish any stream; \
                 run with --publish-auth closed and create publish keys (ferrocast ctl keys create)"
            );
        }
        let _ = shared.access.refresh(shared.store.as_ref()).await;
        let access_task = tokio::spawn(
            shared
                .access
                .clone()
                .run(shared.store.clone(), hub_token.clone()),
        );
        let loads_task = tokio::spawn(crate::api::share_loads(shared.clone(), hub_token.clone()));
        let compact_task = tokio::spawn(crate::api::compact_history(
            shared.clone(),
            cfg.compact_every,
            hub_token.clone(),
        ));
        let store_task = tokio::spawn(follow_store(
            shared.hub.store_up(),
            health.clone(),
            store_up,
            hub_token.clone(),
        ));

        let election_token = CancellationToken::new();
        // A lone controller leads at once: win before serving, so no call sees a follower.
        let first = if !cfg.etcd.is_enabled() {
            election.campaign(election_token.clone()).await.ok()
        } else {
            None
        };
        if let Some(l) = &first {
            shared.leader.set(Some(l.fence().clone()));
        }
        let election_task = tokio::spawn(lead(
            first,
            election,
            shared.leader.clone(),
            is_leader,
            election_token.clone(),
        ));

        let node = NodeServiceServer::new(NodeApi(shared.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_REPLY_BYTES);
        let node = tonic::service::interceptor::InterceptedService::new(
            node,
            NodeAuth {
                required: cfg.tls.is_some(),
            },
        );
        let operator = tonic::service::interceptor::InterceptedService::new(
            OperatorServiceServer::new(OperatorApi(shared.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_REPLY_BYTES),
            OperatorAuth::with_roles(cfg.operator_token.clone(), cfg.operator_read_token.clone())
                .with_certificates(cfg.tls.as_ref().is_some_and(|t| !t.operator_ca.is_empty()))
                .with_metrics(&registry),
        );
        let grpc_token = CancellationToken::new();
        let grpc_stop = grpc_token.clone();
        let tls = match &cfg.tls {
            Some(t) => match t.cluster.grpc_server_config(&t.operator_ca) {
                Ok(c) => Some(c),
                Err(error) => {
                    // Checked by `validate`; the files were read then.
                    tracing::error!(%error, "gRPC TLS configuration");
                    return;
                }
            },
            None => None,
        };
        let grpc_task = tokio::spawn(async move {
            let router = tonic::transport::Server::builder()
                .timeout(CALL_TIMEOUT)
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(5)))
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(node)
                .add_service(operator);
            let r = match tls {
                Some((config, classifier)) => {
                    let accept = crate::tls::incoming(grpc, config, classifier, grpc_stop.clone());
                    router
                        .serve_with_incoming_shutdown(accept, grpc_stop.cancelled_owned())
                        .await
                }
                None => {
                    router
                        .serve_with_incoming_shutdown(
                            TcpListenerStream::new(grpc),
                            grpc_stop.cancelled_owned(),
                        )
                        .await
                }
            };
            if let Err(error) = r {
                tracing::error!(%error, "gRPC server failed");
            }
        });

        let http_token = CancellationToken::new();
        let admin_state = Arc::new(Admin {
            ready: ready.clone(),
            registry: registry.clone(),
            shared: shared.clone(),
            region_header: cfg.region_header.clone(),
        });
        let http_task = tokio::spawn(ferrocast_runtime::http::serve(
            http,
            move |req: Request| {
                let admin = admin_state.clone();
                async move { admin.handle(req) }
            },
            ServerLimits {
                metrics: Some(ferrocast_runtime::http::HttpMetrics::shared(&registry)),
                ..cfg.http.clone()
            },
            http_token.clone(),
        ));

        ready.store(true, Ordering::Relaxed);
        shutdown.cancelled().await;
        tracing::info!("controller shutting down");
        ready.store(false, Ordering::Relaxed);
        health.set_not_serving::<NodeServiceServer<NodeApi>>().await;
        election_token.cancel();
        let _ = election_task.await;
        // Watch streams end now, so the gRPC drain does not wait for them.
        hub_token.cancel();
        let _ = hub_task.await;
        let _ = store_task.await;
        let _ = access_task.await;
        let _ = loads_task.await;
        let _ = compact_task.await;
        grpc_token.cancel();
        http_token.cancel();
        if tokio::time::timeout(Duration::from_secs(10), grpc_task)
            .await
            .is_err()
        {
            tracing::warn!("gRPC drain timed out");
        }
        let _ = http_task.await;
    }
}

/// The election loop: campaign (unless `first` is already won), publish the fence, hold
/// until lost or cancelled, repeat.
async fn lead(
    first: Option<Leadership>,
    election: Arc<dyn Election>,
    leader: Arc<Leader>,
    gauge: Gauge,
    cancel: CancellationToken,
) {
    let mut first = first;
    loop {
        let campaign = match first.take() {
            Some(l) => Ok(l),
            None => election.campaign(cancel.clone()).await,
        };
        let leadership = match campaign {
            Ok(l) => l,
            Err(error) => {
                if !cancel.is_cancelled() {
                    tracing::warn!(%error, "campaign ended");
                }
                return;
            }
        };
        leader.set(Some(leadership.fence().clone()));
        gauge.set(1);
        let lost = leadership.lost();
        tokio::select! {
            _ = cancel.cancelled() => {
                leader.set(None);
                gauge.set(0);
                leadership.resign().await;
                return;
            }
            _ = lost.cancelled() => {
                leader.set(None);
                gauge.set(0);
                tracing::warn!("leadership lost; campaigning again");
            }
        }
    }
}

/// Follows the store's reachability into the gauge and gRPC health until `cancel`.
async fn follow_store(
    mut up: tokio::sync::watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    gauge: Gauge,
    cancel: CancellationToken,
) {
    use tonic_health::ServingStatus;
    loop {
        let now = *up.borrow_and_update();
        gauge.set(i64::from(now));
        let status = if now {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // Writes need the store; reads (the operator API) are served from the last view.
        health
            .set_service_status(
                <NodeServiceServer<NodeApi> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        health.set_service_status("", status).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = up.changed() => if r.is_err() { return },
        }
    }
}

/// The admin HTTP server's state.
#[derive(Debug)]
struct Admin {
    ready: Arc<AtomicBool>,
    registry: Arc<Metrics>,
    shared: Arc<Shared>,
    region_header: Option<String>,
}

impl Admin {
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
        match respond::common(req.method(), path, ready, &self.registry, |_| false) {
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
