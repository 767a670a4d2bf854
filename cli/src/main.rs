//! The `ferrocast` binary: a thin `main` over the node libraries.

mod config;
mod ctl;
mod demo;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::Role;
use ferrocast_agent::{pb, Agent, AgentConfig};
use ferrocast_controller::Controller;
use ferrocast_edge::cluster::{ControllerOrigins, EdgeHooks};
use ferrocast_edge::upstream::quic::{OriginResolver, QuicUpstream, StaticOrigin};
use ferrocast_edge::Edge;
use ferrocast_origin::cluster::Cluster;
use ferrocast_origin::Origin;
use ferrocast_runtime::metrics::Metrics;
use ferrocast_runtime::tls::{generate_dev, TlsFiles};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Ferrocast: RTMP in, Low-Latency HLS out, on a cluster of origins, edges and
/// controllers. One binary, a subcommand per role.
#[derive(Debug, Parser)]
#[command(name = "ferrocast", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once and taken apart at once: the size of the role variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run an origin: RTMP ingest (1935), LL-HLS over HTTP (8081), QUIC relay to edges (4433/udp).
    Origin(config::OriginArgs),
    /// Run an edge: pulls streams from origins over QUIC, serves viewers over HTTP (8080).
    Edge(config::EdgeArgs),
    /// Run an origin, an edge and an embedded controller in one process, on loopback.
    ///
    /// The controller keeps its state in memory and the nodes use generated
    /// certificates: publish to rtmp://127.0.0.1:1935/live/KEY, watch at
    /// http://127.0.0.1:8080/, operate with `ferrocast ctl` (127.0.0.1:50051).
    Standalone(config::StandaloneArgs),
    /// Run a controller: node and operator gRPC API (50051), admin HTTP (8090), state on etcd or in memory.
    Controller(config::ControllerArgs),
    /// Operator CLI over the controller's gRPC API: nodes, streams, drain, kick, resolve,
    /// events, publish keys, signing keys, tokens and playback policies.
    Ctl(ctl::CtlArgs),
    /// Issue cluster certificates: a CA, then one per node (or a development set).
    ///
    /// The cluster CA is in DIR (ca.pem, ca-key.pem; created when both are missing,
    /// only read when present); a certificate per --node ROLE:ID, each
    /// written as that node's --tls-dir: DIR/ROLE-ID/{ca.pem,node.pem,node-key.pem}.
    /// Without --node: a development certificate for every role (node id "dev") in DIR
    /// itself, for one machine, not a cluster.
    Certs {
        /// The cluster CA's directory (may be read-only when the CA exists and --out is given).
        dir: std::path::PathBuf,
        /// A node to certify, ROLE:ID with ROLE controller, origin or edge and ID its
        /// --node-id (repeat it).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Extra DNS names or IPs for the node certificates (localhost, 127.0.0.1 and ::1
        /// are always in).
        #[arg(long = "dns", alias = "name")]
        dns: Vec<String>,
        /// Days the node certificates are valid (renew before: nodes reload new files).
        #[arg(long, default_value_t = ferrocast_runtime::tls::pki::DEFAULT_NODE_DAYS)]
        days: u32,
        /// Write the certificate of the one --node into OUTDIR instead of DIR/ROLE-ID.
        #[arg(long = "out", value_name = "OUTDIR")]
        out: Option<std::path::PathBuf>,
        /// An operator identity, `admin:NAME` or `read:NAME` (repeat it): writes
        /// operator-ca.pem (a separate CA, for the controller's --operator-ca) and
        /// operator-ROLE-NAME.pem with its -key.pem (for `ferrocast ctl --cert/--key`).
        #[arg(long = "operator")]
        operators: Vec<String>,
    },
    /// Load tools: RTMP publishers and LL-HLS / HLS viewers.
    Bench {
        #[command(subcommand)]
        tool: BenchTool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchTool {
    /// N concurrent RTMP publishers looping one FLV file in real time (default: the demo clip).
    Publish(ferrocast_bench::PublishArgs),
    /// N concurrent viewers that play like hls.js in low-latency mode, or classic HLS.
    View(ferrocast_bench::ViewArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Each role's flags, environment and file, checked before anything is bound.
    let (settings, role, demo) = match cli.command {
        Command::Origin(a) => {
            let demo = a.ingest.demo;
            (a.validate()?, Role::Origin, demo)
        }
        Command::Edge(a) => (a.validate()?, Role::Edge, false),
        Command::Controller(a) => (a.validate()?, Role::Controller, false),
        Command::Standalone(a) => {
            let demo = a.ingest.demo;
            (a.validate()?, Role::Standalone, demo)
        }
        Command::Certs {
            dir,
            nodes,
            dns,
            days,
            out,
            operators,
        } => {
            certs(&dir, &nodes, &dns, days, out.as_deref())?;
            if !operators.is_empty() {
                ferrocast_runtime::tls::generate_operator_dev(&dir, &operators)
                    .context("writing operator certificates")?;
                println!(
                    "wrote {}/operator-ca.pem and a certificate per operator",
                    dir.display()
                );
            }
            return Ok(());
        }
        Command::Bench { tool } => return bench(tool),
        Command::Ctl(args) => ctl::main(args),
    };
    // Held to the end of main: dropping it flushes the spans still batched for OTLP.
    let _telemetry = ferrocast_runtime::telemetry::init(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(settings, role, demo))
}

/// `ferrocast certs`: the CA in `dir` (created when missing), then a certificate per
/// node (or the development one).
fn certs(
    dir: &std::path::Path,
    nodes: &[String],
    dns: &[String],
    days: u32,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use ferrocast_runtime::tls::identity::NodeIdentity;
    use ferrocast_runtime::tls::pki::{ClusterCa, MAX_NODE_DAYS};
    if days == 0 || days > MAX_NODE_DAYS {
        anyhow::bail!("invalid days: {days} (1 to {MAX_NODE_DAYS})");
    }
    let ids = nodes
        .iter()
        .map(|n| {
            NodeIdentity::from_spec(n).with_context(|| {
                format!("invalid node {n:?}: ROLE:ID with ROLE controller, origin or edge and ID of letters, digits, . _ - (at most 128)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if out.is_some() && ids.len() != 1 {
        anyhow::bail!("invalid out: needs exactly one --node");
    }
    let (ca, created) = ClusterCa::load_or_create(dir).context("the cluster CA")?;
    if created {
        println!(
            "created a cluster CA in {}/{{ca.pem,ca-key.pem}}: keep ca-key.pem off the nodes",
            dir.display()
        );
    }
    if ids.is_empty() {
        let node = ca
            .issue(&ferrocast_runtime::tls::dev_identities(), dns, days)
            .context("issuing the development certificate")?;
        node.write_dir(dir, ca.bundle_pem())
            .context("writing the development certificate")?;
        println!("wrote {}/{{ca.pem,node.pem,node-key.pem}}", dir.display());
        eprintln!(
            "note: a development certificate, valid for {days} days, that is every role \
             (controller, origin, edge) as node \"{}\"; a cluster gets one certificate per \
             node: ferrocast certs {} --node origin:ID --node edge:ID ...",
            ferrocast_runtime::tls::DEV_NODE_ID,
            dir.display()
        );
        return Ok(());
    }
    for id in &ids {
        let node = ca
            .issue(std::slice::from_ref(id), dns, days)
            .with_context(|| format!("issuing the certificate of {id}"))?;
        let target = match out {
            Some(o) => o.to_owned(),
            None => dir.join(format!("{}-{}", id.role, id.id)),
        };
        node.write_dir(&target, ca.bundle_pem())
            .with_context(|| format!("writing the certificate of {id}"))?;
        println!(
            "wrote {}/{{ca.pem,node.pem,node-key.pem}} for {} (valid {days} days)",
            target.display(),
            id.uri()
        );
    }
    Ok(())
}

/// Runs a load tool; it prints its own progress and summary.
fn bench(tool: BenchTool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match tool {
            BenchTool::Publish(args) => {
                let clip = bytes::Bytes::from_static(demo::CLIP);
                ferrocast_bench::publish(args, clip).await.map(drop)
            }
            BenchTool::View(args) => ferrocast_bench::view(args).await.map(drop),
        }
    })
}

async fn run(settings: config::Settings, role: Role, demo: bool) -> anyhow::Result<()> {
    let registry = Arc::new(Metrics::new());
    if role == Role::Controller {
        return controller(settings, registry).await;
    }
    let tls = match (&settings.tls_dir, role) {
        (Some(dir), _) => Some(
            TlsFiles::in_dir(dir)
                .load()
                .context("loading cluster TLS")?,
        ),
        // Standalone talks to itself: a throwaway cluster identity is enough.
        (None, Role::Standalone) => {
            Some(generate_dev(None, &[]).context("generating certificates")?)
        }
        (None, _) => None,
    };
    // Nodes reach an `https://` controller with their cluster certificate.
    let controller_tls = match (&tls, role) {
        (Some(t), Role::Origin | Role::Edge) => Some(
            t.grpc_client_config()
                .context("cluster TLS for the controller")?,
        ),
        _ => None,
    };
    let shutdown = CancellationToken::new();
    ferrocast_runtime::shutdown::cancel_on_signal(shutdown.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let mut controllers = settings.controllers.clone();
    if role == Role::Standalone {
        // The embedded controller (in-memory state): origin and edge join it over
        // loopback gRPC exactly as separate nodes join a cluster.
        let c = Controller::bind(settings.controller.clone(), registry.clone())
            .await
            .context("starting the embedded controller")?;
        tracing::info!(grpc = %c.grpc_addr(), "embedded controller ready (in-memory state)");
        controllers = vec![format!("http://{}", c.grpc_addr())];
        tasks.spawn(c.run(shutdown.clone()));
    }
    let mut origin_quic = None;
    if role != Role::Edge {
        if tls.is_none() {
            tracing::warn!(
                "no --tls-dir: the QUIC relay is off, so edges cannot pull from this origin"
            );
        }
        // With a controller, the HTTP port's playback rules are the controller's (closed
        // until they arrive); without one there are none.
        let mut origin_cfg = settings.origin.clone();
        origin_cfg.playback_rules = rules_source(&controllers);
        let origin = Origin::bind(origin_cfg, registry.clone(), tls.as_ref())
            .await
            .context("starting the origin")?;
        origin_quic = origin.quic_addr();
        if !controllers.is_empty() {
            let host = advertised(&settings, origin.rtmp_addr());
            let mut cfg = AgentConfig::new(
                controllers.clone(),
                origin_node_id(&settings, role),
                pb::NodeRole::Origin,
            );
            cfg.region = settings.region.clone();
            cfg.addresses = pb::NodeAddresses {
                relay: origin_quic
                    .map(|q| format!("{host}:{}", q.port()))
                    .unwrap_or_default(),
                http: format!("http://{host}:{}", origin.http_addr().port()),
                rtmp: format!("{host}:{}", origin.rtmp_addr().port()),
            };
            cfg.capacity.max_streams = settings.origin.streams.max_streams as u32;
            cfg.tls = controller_tls.clone();
            let agent = Agent::new(cfg).context("invalid controller")?;
            // Playback keys, policies and revocations, as edges get them.
            let access = origin.access();
            agent.watch_access(move |snap| access.apply(snap), shutdown.clone());
            Cluster::start(agent, &origin.streams(), shutdown.clone());
        }
        tracing::info!(
            node = %settings.node_id,
            region = %settings.region,
            rtmp = %origin.rtmp_addr(),
            rtmps = ?origin.rtmps_addr(),
            http = %origin.http_addr(),
            admin = ?origin.admin_addr(),
            quic = ?origin_quic,
            controller = ?controllers,
            "origin ready; publish to rtmp://{}/live/KEY",
            origin.rtmp_addr(),
        );
        if demo {
            tasks.spawn(demo::run(origin.streams(), shutdown.child_token()));
        }
        tasks.spawn(origin.run(shutdown.clone()));
    }
    if role != Role::Origin {
        let tls = tls
            .as_ref()
            .context("invalid tls-dir: an edge needs the cluster certificates")?;
        let mut agent = None;
        let mut watcher = None;
        let resolver: Arc<dyn OriginResolver> = if controllers.is_empty() {
            let origin_addr = settings
                .origin_addr
                .or(origin_quic)
                .context("invalid origin: no origin QUIC address")?;
            Arc::new(StaticOrigin(origin_addr))
        } else {
            let mut cfg = AgentConfig::new(
                controllers.clone(),
                settings.node_id.clone(),
                pb::NodeRole::Edge,
            );
            cfg.region = settings.region.clone();
            cfg.tls = controller_tls.clone();
            let a = Agent::new(cfg.clone()).context("invalid controller")?;
            let table = a.watch_assignments(shutdown.clone());
            watcher = Some(a);
            agent = Some(cfg);
            Arc::new(ControllerOrigins(table))
        };
        let upstream = QuicUpstream::new(resolver, tls).context("starting the QUIC client")?;
        let mut edge_cfg = settings.edge.clone();
        edge_cfg.playback_rules = rules_source(&controllers);
        let edge = Edge::bind(edge_cfg, registry.clone(), Arc::new(upstream))
            .await
            .context("starting the edge")?;
        if let Some(a) = watcher {
            // Playback keys, policies and revocations, pushed by the controller.
            let access = edge.state().access.clone();
            a.watch_access(move |snap| access.apply(snap), shutdown.clone());
        }
        if let Some(mut cfg) = agent {
            let scheme = if settings.edge.http.tls.is_some() {
                "https"
            } else {
                "http"
            };
            cfg.addresses.http = match &settings.public_url {
                Some(url) => url.clone(),
                None => {
                    let host = advertised(&settings, edge.http_addr());
                    format!("{scheme}://{host}:{}", edge.http_addr().port())
                }
            };
            let agent = Agent::new(cfg).context("invalid controller")?;
            edge.state().set_cluster(agent.clone());
            let hooks = EdgeHooks::new(&edge.state());
            let token = shutdown.clone();
            tasks.spawn(async move { agent.run(hooks, token).await });
        }
        tracing::info!(
            node = %settings.node_id,
            region = %settings.region,
            http = %edge.http_addr(),
            admin = ?edge.admin_addr(),
            origin = ?settings.origin_addr.or(origin_quic),
            controller = ?controllers,
            "edge ready; watch at http://{}/",
            edge.http_addr(),
        );
        if demo {
            tracing::info!(url = %format!("http://{}/watch/demo", edge.http_addr()), "demo stream publishing");
        }
        tasks.spawn(edge.run(shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Where a viewer-serving node's playback rules come from: the controller when there is
/// one (every stream closed until its first snapshot), else nowhere (every stream open).
fn rules_source(controllers: &[String]) -> ferrocast_agent::access::RulesSource {
    if controllers.is_empty() {
        ferrocast_agent::access::RulesSource::None
    } else {
        ferrocast_agent::access::RulesSource::Controller
    }
}

/// The host others reach this node at: `--advertise-host`, else the listen IP, else
/// loopback (a node listening everywhere should be told its address).
fn advertised(settings: &config::Settings, listen: std::net::SocketAddr) -> String {
    match &settings.advertise_host {
        Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        Some(h) => h.clone(),
        None if listen.ip().is_unspecified() => {
            tracing::warn!("no --advertise-host: advertising 127.0.0.1 to the controller");
            "127.0.0.1".to_owned()
        }
        None => match listen.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
    }
}

/// Standalone runs an origin and an edge under one node id: the origin registers as
/// `ID-origin` so both fit in the cluster.
fn origin_node_id(settings: &config::Settings, role: Role) -> String {
    match role {
        Role::Standalone => format!("{}-origin", settings.node_id),
        _ => settings.node_id.clone(),
    }
}

async fn controller(settings: config::Settings, registry: Arc<Metrics>) -> anyhow::Result<()> {
    let c = Controller::bind(settings.controller, registry)
        .await
        .context("starting the controller")?;
    tracing::info!(node = %settings.node_id, grpc = %c.grpc_addr(), http = %c.http_addr(), "controller ready");
    let shutdown = CancellationToken::new();
    ferrocast_runtime::shutdown::cancel_on_signal(shutdown.clone());
    c.run(shutdown).await;
    Ok(())
}
