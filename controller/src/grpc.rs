//! The controller's gRPC server: both services behind their interceptors (nodes by
//! certificate, [`NodeAuth`]; operators by token or certificate, [`OperatorAuth`]),
//! health and reflection, message size limits and a call deadline, on plaintext or
//! mutual TLS. [`GrpcServer::new`] assembles it before anything is served, so a
//! configuration that cannot serve stops the controller instead of one task.

use crate::api::{NodeApi, OperatorApi};
use crate::auth::OperatorAuth;
use crate::config::ControllerConfig;
use crate::state::Shared;
use crate::tls::NodeAuth;
use ferrocast_proto::controller::v1 as pb;
use ferrocast_proto::controller::FILE_DESCRIPTOR_SET;
use ferrocast_runtime::metrics::Metrics;
use ferrocast_tls::grpc::PeerClassifier;
use pb::node_service_server::NodeServiceServer;
use pb::operator_service_server::OperatorServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;

/// Largest request a client may send (load reports of a busy node fit easily).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest reply the controller sends (ListStreams of a large cluster).
pub const MAX_REPLY_BYTES: usize = 16 << 20;
/// Deadline of every call (a stream only for its opening); clients may ask for less.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The name gRPC health reports the node API under (`NOT_SERVING` while the store is
/// unreachable: its writes fail).
pub const NODE_SERVICE: &str = <NodeServiceServer<NodeApi> as tonic::server::NamedService>::NAME;

/// Why the gRPC server cannot be assembled (both are checked by
/// [`ControllerConfig::validate`] first, so this is a broken build or changed files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// The committed descriptor set does not decode (checked by the codegen test).
    #[error("the committed descriptor set does not decode: {0}")]
    Reflection(String),
    /// The TLS configuration cannot be built from its files.
    #[error("gRPC TLS configuration: {0}")]
    Tls(String),
}

/// The gRPC server, assembled and ready to serve.
#[derive(Debug)]
pub struct GrpcServer {
    router: Router,
    tls: Option<(Arc<rustls::ServerConfig>, PeerClassifier)>,
}

impl GrpcServer {
    /// Assembles the services over `shared`; the health reporter it returns says both
    /// are serving until told otherwise.
    pub async fn new(
        cfg: &ControllerConfig,
        shared: &Arc<Shared>,
        registry: &Metrics,
    ) -> Result<(Self, HealthReporter), GrpcError> {
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
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        let tls = match &cfg.tls {
            Some(t) => Some(
                t.cluster
                    .grpc_server_config(&t.operator_ca)
                    .map_err(|e| GrpcError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let node = InterceptedService::new(
            NodeServiceServer::new(NodeApi(shared.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_REPLY_BYTES),
            NodeAuth {
                required: cfg.tls.is_some(),
            },
        );
        let operator = InterceptedService::new(
            OperatorServiceServer::new(OperatorApi(shared.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_REPLY_BYTES),
            OperatorAuth::with_roles(cfg.operator_token.clone(), cfg.operator_read_token.clone())
                .with_certificates(cfg.tls.as_ref().is_some_and(|t| !t.operator_ca.is_empty()))
                .with_metrics(registry),
        );
        let router = tonic::transport::Server::builder()
            .timeout(CALL_TIMEOUT)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(node)
            .add_service(operator);
        Ok((GrpcServer { router, tls }, health))
    }

    /// Serves on `listener` until `stop`, then drains.
    pub async fn serve(self, listener: TcpListener, stop: CancellationToken) {
        let r = match self.tls {
            Some((config, classifier)) => {
                let accept = crate::tls::incoming(listener, config, classifier, stop.clone());
                self.router
                    .serve_with_incoming_shutdown(accept, stop.cancelled_owned())
                    .await
            }
            None => {
                self.router
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        stop.cancelled_owned(),
                    )
                    .await
            }
        };
        if let Err(error) = r {
            tracing::error!(%error, "gRPC server failed");
        }
    }
}
