//! `ferrocast controller`: its flags (the control group and the etcd group, which
//! standalone's embedded controller reads too, plus the shared groups) and their
//! validation into a [`ControllerConfig`].

use super::shared::{HttpLimitArgs, NodeArgs};
use super::{anywhere, layered, load, node_id_or_host, seconds, RoleArgs, Settings};
use anyhow::{bail, Context};
use ferrocast_controller::access::PublishAuth;
use ferrocast_controller::ControllerConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Controller and standalone: the gRPC API, operators, publishers, leases and regions.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[command(next_help_heading = "Control")]
#[serde(default, rename_all = "kebab-case")]
pub struct ControlArgs {
    /// gRPC address for the node and operator APIs (default 0.0.0.0:50051 with
    /// --tls-dir, 127.0.0.1:50051 without: see --insecure-node-api).
    #[arg(long, env = "FERROCAST_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Bearer token operator calls must carry (default: none, operator calls are open).
    #[arg(long, env = "FERROCAST_OPERATOR_TOKEN")]
    pub operator_token: Option<String>,
    /// A bearer token allowed only the operator reads (lists, gets, resolve, events);
    /// needs --operator-token (default: none).
    #[arg(long, env = "FERROCAST_OPERATOR_READ_TOKEN")]
    pub operator_read_token: Option<String>,
    /// `closed` (publishers need a publish key or a signed publish token; the
    /// controller's default) or `open` (anyone may publish; standalone's default,
    /// announced with a warning).
    #[arg(long, env = "FERROCAST_PUBLISH_AUTH")]
    pub publish_auth: Option<String>,
    /// Seconds a node's registration (and the leader's) lives without a heartbeat
    /// (default 5; at least 2 with etcd).
    #[arg(long, env = "FERROCAST_LEASE_TTL")]
    pub lease_ttl: Option<f64>,
    /// A client address block and its viewer region, `CIDR=REGION` (e.g.
    /// `10.1.0.0/16=eu-west`); repeat it, or comma-separate in the environment. The
    /// longest matching prefix wins (default: none).
    #[arg(
        long = "region-cidr",
        env = "FERROCAST_REGION_CIDR",
        value_delimiter = ','
    )]
    pub region_cidr: Vec<String>,
    /// A request header with the viewer's region, set by a trusted load balancer (e.g.
    /// `x-client-region`); wins over `--region-cidr` (default: none).
    #[arg(long, env = "FERROCAST_REGION_HEADER")]
    pub region_header: Option<String>,
}
layered!(ControlArgs {
    grpc_listen,
    operator_token,
    operator_read_token,
    publish_auth,
    lease_ttl,
    region_cidr,
    region_header
});

impl ControlArgs {
    /// Sets what was given on `controller`; `publish_auth` is the role's default.
    pub fn apply(
        &self,
        controller: &mut ControllerConfig,
        publish_auth: PublishAuth,
    ) -> anyhow::Result<()> {
        if let Some(a) = self.grpc_listen {
            controller.grpc_listen = a;
        }
        controller.operator_token = self.operator_token.clone();
        controller.operator_read_token = self.operator_read_token.clone();
        controller.publish_auth = match &self.publish_auth {
            Some(v) => v
                .parse()
                .map_err(|e: String| anyhow::anyhow!("invalid publish-auth: {e}"))?,
            None => publish_auth,
        };
        if let Some(v) = self.lease_ttl {
            controller.lease_ttl = seconds("lease-ttl", v)?;
        }
        controller.region_cidrs = self
            .region_cidr
            .iter()
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.parse())
            .collect::<Result<_, _>>()
            .context("invalid region-cidr")?;
        controller.region_header = self.region_header.clone();
        Ok(())
    }
}

/// Controller and standalone: where cluster state lives. The etcd client's TLS and
/// credentials belong here too.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[command(next_help_heading = "etcd")]
#[serde(default, rename_all = "kebab-case")]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (default: none, in-memory state and a lone
    /// controller).
    #[arg(long, env = "FERROCAST_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// PEM CA certificate(s) of the etcd members; turns on TLS to etcd (default: none,
    /// plaintext).
    #[arg(long, env = "FERROCAST_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd's `--client-cert-auth` (needs --etcd-ca and
    /// --etcd-key; default: none).
    #[arg(long, env = "FERROCAST_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(long, env = "FERROCAST_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user to authenticate as; the password comes from FERROCAST_ETCD_PASSWORD or
    /// --etcd-password-file, never a flag (default: none).
    #[arg(long, env = "FERROCAST_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// A file holding the password of --etcd-user (one line).
    #[arg(long, env = "FERROCAST_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}
layered!(EtcdArgs {
    etcd,
    etcd_ca,
    etcd_cert,
    etcd_key,
    etcd_user,
    etcd_password_file
});

impl EtcdArgs {
    /// Sets what was given on `controller`. Fallible for what joins this group: the
    /// etcd client's certificate files and credentials are checked here.
    pub fn apply(&self, controller: &mut ControllerConfig) -> anyhow::Result<()> {
        if !self.etcd.is_empty() {
            controller.etcd.endpoints = self.etcd.clone();
        }
        controller.etcd.tls = etcd_tls(
            self.etcd_ca.clone(),
            self.etcd_cert.clone(),
            self.etcd_key.clone(),
        )?;
        controller.etcd.auth = etcd_auth(self.etcd_user.clone(), self.etcd_password_file.clone())?;
        Ok(())
    }
}

/// TLS to etcd: `--etcd-ca` turns it on; a client certificate needs it.
fn etcd_tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<ferrocast_controller::etcd::EtcdTls>> {
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => anyhow::bail!("invalid etcd-cert: etcd-cert and etcd-key go together"),
    };
    match (ca, identity) {
        (Some(ca), identity) => Ok(Some(ferrocast_controller::etcd::EtcdTls { ca, identity })),
        (None, Some(_)) => anyhow::bail!("invalid etcd-cert: needs --etcd-ca (TLS to etcd)"),
        (None, None) => Ok(None),
    }
}

/// The etcd user, with its password from `FERROCAST_ETCD_PASSWORD` or a file: a flag
/// would show it to everyone who can list processes.
fn etcd_auth(
    user: Option<String>,
    password_file: Option<PathBuf>,
) -> anyhow::Result<Option<ferrocast_controller::etcd::EtcdAuth>> {
    let from_env = std::env::var("FERROCAST_ETCD_PASSWORD").ok();
    let Some(user) = user else {
        if password_file.is_some() || from_env.is_some() {
            anyhow::bail!("invalid etcd-password-file: needs --etcd-user");
        }
        return Ok(None);
    };
    let password = match (from_env, password_file) {
        (Some(_), Some(_)) => {
            anyhow::bail!("invalid etcd-password-file: FERROCAST_ETCD_PASSWORD is set too")
        }
        (Some(p), None) => p,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .map_err(|e| anyhow::anyhow!("invalid etcd-password-file: {}: {e}", f.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => anyhow::bail!(
            "invalid etcd-user: needs a password (FERROCAST_ETCD_PASSWORD or --etcd-password-file)"
        ),
    };
    Ok(Some(ferrocast_controller::etcd::EtcdAuth {
        user,
        password,
    }))
}

/// `ferrocast controller`.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControllerArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub control: ControlArgs,
    /// Serve the node API without --tls-dir on an address other than loopback. Nodes
    /// are then not known by a certificate: any client that reaches the port may act as
    /// any node. Only for a network that cluster nodes alone reach (default: off; such a
    /// --grpc-listen is refused).
    #[arg(long, env = "FERROCAST_INSECURE_NODE_API")]
    pub insecure_node_api: bool,
    /// PEM CA certificate(s) of operator client certificates, whose common name
    /// `admin:NAME` or `read:NAME` gives the role (needs --tls-dir; default: none).
    #[arg(long, env = "FERROCAST_OPERATOR_CA")]
    pub operator_ca: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpLimitArgs,
}
layered!(ControllerArgs {
    node,
    control,
    insecure_node_api,
    operator_ca,
    etcd,
    http
});

impl RoleArgs for ControllerArgs {
    fn config_file(&self) -> Option<&Path> {
        self.node.config.as_deref()
    }
}

impl ControllerArgs {
    /// Flags and environment over the file over defaults, checked.
    pub fn validate(self) -> anyhow::Result<Settings> {
        let a = load(self)?;
        let mut controller = ControllerConfig::default();
        if let Some(h) = a.node.http_listen {
            controller.http_listen = h;
        }
        a.http.apply(&mut controller.http)?;
        a.control.apply(&mut controller, PublishAuth::Closed)?;
        a.etcd.apply(&mut controller)?;
        controller.insecure_node_api = a.insecure_node_api;
        // What followers tell nodes and operators to retry a write at: the bound
        // address is useless when it is 0.0.0.0 (every replica would send callers to
        // themselves), so a replica behind a wildcard listener needs its own address.
        controller.advertise =
            controller_advertise(a.node.advertise_host.as_deref(), controller.grpc_listen)?;
        controller.tls = match (&a.node.tls_dir, &a.operator_ca) {
            (Some(dir), ca) => Some(ferrocast_controller::GrpcTls {
                cluster: ferrocast_tls::TlsFiles::in_dir(dir)
                    .load()
                    .context("invalid tls-dir")?,
                operator_ca: match ca {
                    Some(ca) => ferrocast_tls::read_certs(ca).context("invalid operator-ca")?,
                    None => Vec::new(),
                },
            }),
            (None, Some(_)) => {
                bail!("invalid operator-ca: needs --tls-dir (TLS on the gRPC port)")
            }
            (None, None) => None,
        };
        if controller.tls.is_some() && a.control.grpc_listen.is_none() {
            // Nodes are known by their certificates: the API may face the network.
            controller.grpc_listen = anywhere(50051);
        }
        controller.validate()?;
        Ok(Settings {
            node_id: node_id_or_host(a.node.node_id),
            region: "default".to_owned(),
            log_format: a.node.log_format.unwrap_or_default(),
            origin: Default::default(),
            edge: Default::default(),
            tls_dir: a.node.tls_dir,
            origin_addr: None,
            controller,
            controllers: Vec::new(),
            advertise_host: a.node.advertise_host,
            public_url: None,
        })
    }
}

/// The `host:port` a controller replica advertises as leader: `--advertise-host` with
/// the gRPC port, else the gRPC listen address when it is a real one, else `None` (the
/// bound address; a warning, since followers would redirect to a wildcard address).
fn controller_advertise(host: Option<&str>, grpc: SocketAddr) -> anyhow::Result<Option<String>> {
    match host {
        Some("") => bail!("invalid advertise-host: is empty"),
        Some(h) if h.contains(':') && !h.starts_with('[') => {
            Ok(Some(format!("[{h}]:{}", grpc.port())))
        }
        Some(h) => Ok(Some(format!("{h}:{}", grpc.port()))),
        None => {
            if grpc.ip().is_unspecified() {
                tracing::warn!(
                    grpc_listen = %grpc,
                    "no --advertise-host: with several controller replicas, followers cannot redirect callers to this leader"
                );
            }
            Ok(None)
        }
    }
}
