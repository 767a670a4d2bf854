//! `ferrocast standalone`: an origin, an edge and an embedded controller in one process.
//! Its flags are the three roles' groups (less joining a controller, which it embeds)
//! and the embedded origin's own HTTP port; its defaults keep everything on loopback.

use super::controller::{ControlArgs, EtcdArgs};
use super::edge::EdgeServeArgs;
use super::origin::IngestArgs;
use super::shared::{AdmissionArgs, HttpLimitArgs, NodeArgs, ServingArgs};
use super::{layered, load, local, node_id_or_host, RoleArgs, Settings};
use ferrocast_controller::access::PublishAuth;
use ferrocast_controller::ControllerConfig;
use ferrocast_edge::EdgeConfig;
use ferrocast_origin::OriginConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// `ferrocast standalone`.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StandaloneArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub serving: ServingArgs,
    /// The embedded origin's HTTP address (default 127.0.0.1:8081).
    #[arg(long, env = "FERROCAST_ORIGIN_HTTP_LISTEN")]
    pub origin_http_listen: Option<SocketAddr>,
    #[command(flatten)]
    #[serde(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub edge: EdgeServeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub control: ControlArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub admission: AdmissionArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpLimitArgs,
}
layered!(StandaloneArgs {
    node,
    serving,
    origin_http_listen,
    ingest,
    edge,
    control,
    etcd,
    admission,
    http
});

impl RoleArgs for StandaloneArgs {
    fn config_file(&self) -> Option<&Path> {
        self.node.config.as_deref()
    }
}

impl StandaloneArgs {
    /// Flags and environment over the file over defaults, checked.
    pub fn validate(self) -> anyhow::Result<Settings> {
        let a = load(self)?;
        // A laptop default: nothing listens beyond this machine unless asked to.
        let mut origin = OriginConfig {
            rtmp_listen: local(1935),
            http_listen: a.origin_http_listen.unwrap_or(local(8081)),
            quic_listen: local(0),
            ..OriginConfig::default()
        };
        let mut edge = EdgeConfig {
            http_listen: a.node.http_listen.unwrap_or(local(8080)),
            // One admin port per process: the edge's view, with the process's metrics.
            admin_listen: Some(a.serving.admin_listen.unwrap_or(local(9080))),
            ..EdgeConfig::default()
        };
        // The embedded controller: gRPC for `ferrocast ctl` on loopback, admin HTTP on a
        // free loopback port (the edge answers /play and /metrics). Always plaintext:
        // origin and edge reach it over loopback.
        let mut controller = ControllerConfig {
            grpc_listen: local(50051),
            http_listen: local(0),
            ..ControllerConfig::default()
        };
        let https = a.serving.https_pair()?;
        a.ingest.apply(&mut origin, https.as_ref())?;
        edge.http.tls = a.serving.https()?;
        a.edge.apply(&mut edge)?;
        for http in [&mut origin.http, &mut edge.http, &mut controller.http] {
            a.http.apply(http)?;
        }
        a.control.apply(&mut controller, PublishAuth::Open)?;
        a.etcd.apply(&mut controller)?;
        let public_url = a.edge.public_url()?;
        let admission = a
            .admission
            .resolve(a.edge.admission_client_ip_header.clone())?;
        origin.admission = admission.clone();
        edge.admission = admission;
        origin.validate()?;
        edge.validate()?;
        let node_id = node_id_or_host(a.node.node_id);
        for adm in [origin.admission.as_mut(), edge.admission.as_mut()]
            .into_iter()
            .flatten()
        {
            adm.node = node_id.clone();
        }
        Ok(Settings {
            node_id,
            region: a.serving.region(),
            log_format: a.node.log_format.unwrap_or_default(),
            origin,
            edge,
            tls_dir: a.node.tls_dir,
            origin_addr: None,
            controller,
            controllers: Vec::new(),
            advertise_host: a.node.advertise_host,
            public_url,
        })
    }
}
