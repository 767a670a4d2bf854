//! The controller process: [`Controller::bind`] (store, election, listeners, after the
//! configuration is validated) and [`Controller::run`], the list of its tasks and their
//! ordered shutdown.
//!
//! While the store is unreachable the controller is degraded, not dead (see
//! [`crate::health`]): writes are refused, reads and `/play` answer from the last good view.

use crate::access::{Access, PublishAuth};
use crate::admin_http::AdminHttp;
use crate::config::{ConfigError, ControllerConfig};
use crate::election::{Election, EtcdElection, LocalElection};
use crate::etcd::EtcdClient;
use crate::grpc::{GrpcServer, NODE_SERVICE};
use crate::hub::{self, Hub};
use crate::leader::{self, Leader};
use crate::load::{self, Loads};
use crate::region::RegionTable;
use crate::scheduler::PlacementPolicy;
use crate::sessions::Sessions;
use crate::state::Shared;
use crate::store::etcd::{EtcdStore, DEFAULT_PREFIX};
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::{compaction, health};
use ferrocast_runtime::metrics::Metrics;
use prometheus_client::metrics::gauge::Gauge;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The etcd election key of the controller replicas.
pub const ELECTION_NAME: &str = "/ferrocast/v1/election/controller";

/// How long the gRPC server may take to drain at shutdown.
const GRPC_DRAIN: Duration = Duration::from_secs(10);

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
            sessions: Sessions::default(),
            lease_ttl: cfg.lease_ttl,
            policy: PlacementPolicy::default(),
            hub,
            regions: RegionTable::new(cfg.region_cidrs.iter().cloned()),
            placement_cache: Default::default(),
            access: Arc::new(Access::new(cfg.publish_auth)),
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
        announce(&cfg, &grpc, &http);
        let (grpc_server, health) = match GrpcServer::new(&cfg, &shared, &registry).await {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, "the gRPC server cannot start");
                return;
            }
        };
        let ready = Arc::new(AtomicBool::new(false));

        // Background work, stopped after the election: watch streams end with the hub, so
        // the gRPC drain does not wait for them.
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();
        // The hub reads the store before anything is served, so watchers and `/play`
        // start from a view (when the store answers); so does the access view.
        let _ = shared.hub.poll_once().await;
        tasks.spawn(shared.hub.clone().run(background.clone()));
        let _ = shared.access.refresh(shared.store.as_ref()).await;
        tasks.spawn(
            shared
                .access
                .clone()
                .run(shared.store.clone(), background.clone()),
        );
        tasks.spawn(load::share_loads(shared.clone(), background.clone()));
        tasks.spawn(compaction::compact_history(
            shared.store.clone(),
            shared.leader.clone(),
            cfg.compact_every,
            background.clone(),
        ));
        tasks.spawn(health::follow_store(
            shared.hub.store_up(),
            health.clone(),
            store_up,
            background.clone(),
        ));
        tasks.close();

        let election_stop = CancellationToken::new();
        let first = match !cfg.etcd.is_enabled() {
            true => leader::win_alone(&*election, &shared.leader, &election_stop).await,
            false => None,
        };
        let election_task = tokio::spawn(leader::lead(
            first,
            election,
            shared.leader.clone(),
            is_leader,
            election_stop.clone(),
        ));

        let grpc_stop = CancellationToken::new();
        let grpc_task = tokio::spawn(grpc_server.serve(grpc, grpc_stop.clone()));
        let http_stop = CancellationToken::new();
        let admin = AdminHttp {
            ready: ready.clone(),
            registry,
            shared,
            region_header: cfg.region_header.clone(),
        };
        let http_task = tokio::spawn(admin.serve(http, cfg.http.clone(), http_stop.clone()));

        ready.store(true, Ordering::Relaxed);
        shutdown.cancelled().await;

        tracing::info!("controller shutting down");
        ready.store(false, Ordering::Relaxed);
        health
            .set_service_status(NODE_SERVICE, tonic_health::ServingStatus::NotServing)
            .await;
        election_stop.cancel();
        let _ = election_task.await;
        background.cancel();
        tasks.wait().await;
        grpc_stop.cancel();
        http_stop.cancel();
        if tokio::time::timeout(GRPC_DRAIN, grpc_task).await.is_err() {
            tracing::warn!("gRPC drain timed out");
        }
        let _ = http_task.await;
    }
}

/// The start-up lines: where the controller listens, on what store, with what TLS, and
/// loudly what is open that should not be.
fn announce(cfg: &ControllerConfig, grpc: &TcpListener, http: &TcpListener) {
    let grpc_addr = grpc.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(grpc = %grpc_addr,
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
        tracing::warn!(grpc = %grpc_addr,
            insecure_node_api = cfg.insecure_node_api,
            "NODE API WITHOUT IDENTITY: no --tls-dir, so anyone who reaches the gRPC port \
             may register as any node, claim and release any stream and read playback \
             secrets; keep this port on loopback, or run with --tls-dir and per-node \
             certificates (ferrocast certs DIR --node ROLE:ID)");
    }
    if cfg.publish_auth == PublishAuth::Open {
        tracing::warn!(
            "PUBLISHING IS OPEN: anyone who reaches an origin's RTMP port may publish any stream; \
             run with --publish-auth closed and create publish keys (ferrocast ctl keys create)"
        );
    }
}
