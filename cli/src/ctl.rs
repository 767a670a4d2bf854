//! `ferrocast ctl`: the operator CLI over the controller's `OperatorService`.
//!
//! - Readable aligned tables by default, `--json` for machines (one JSON value per
//!   command; one object per line for `events`), written from small view structs.
//! - `--controller` may list several replicas: the first that answers is used. A write
//!   refused by a follower (`UNAVAILABLE` naming the leader in `ferrocast-leader`) is tried
//!   once more on the leader.
//! - Every failure prints one readable line on stderr and exits with code 1.

mod access;

use anyhow::{anyhow, bail, Context};
use ferrocast_controller::api::LEADER_METADATA;
use ferrocast_proto::controller::v1 as pb;
use pb::operator_service_client::OperatorServiceClient;
use serde::Serialize;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Operator commands against the controller's gRPC API.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Controller gRPC URL(s), comma-separated or repeated; the first that answers is used.
    #[arg(
        long = "controller",
        env = "FERROCAST_CONTROLLER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    controllers: Vec<String>,
    /// Operator bearer token (when the controller has `--operator-token`).
    #[arg(
        long,
        env = "FERROCAST_OPERATOR_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// PEM CA certificate(s) to trust for a TLS controller; with it, URLs without a
    /// scheme are `https://`. The controller's name in the URL is checked.
    #[arg(long, env = "FERROCAST_CTL_CA", global = true)]
    ca: Option<PathBuf>,
    /// PEM operator certificate (common name `admin:NAME` or `read:NAME`, issued by the
    /// controller's `--operator-ca`), instead of or besides a token; needs --ca.
    #[arg(long, env = "FERROCAST_CTL_CERT", global = true, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// PEM private key for `--cert`.
    #[arg(long, env = "FERROCAST_CTL_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// Deadline of each call: `5`, `5s`, `500ms` (default 5s). `events` waits without one.
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    timeout: Duration,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CtlCommand {
    /// List live nodes.
    Nodes {
        /// Only origins or only edges.
        #[arg(long, value_parser = ["origin", "edge"])]
        role: Option<String>,
    },
    /// One node in detail.
    Node {
        /// Node id.
        id: String,
    },
    /// List streams and where they are.
    Streams,
    /// One stream in detail.
    Stream {
        /// Stream key.
        name: String,
    },
    /// Drain a node (it keeps what it has and gets nothing new), or undo it.
    Drain {
        /// Node id.
        id: String,
        /// Undo the drain.
        #[arg(long)]
        undo: bool,
    },
    /// Disconnect a stream's publisher (at its origin's next heartbeat).
    Kick {
        /// Stream key.
        stream: String,
        /// Why, for the logs.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Where a viewer of STREAM would be sent.
    Resolve {
        /// Stream key.
        stream: String,
        /// The viewer's address (its region from the controller's CIDR table).
        #[arg(long)]
        client_ip: Option<IpAddr>,
        /// The viewer's region (wins over --client-ip).
        #[arg(long)]
        region: Option<String>,
    },
    /// Follow cluster events until Ctrl-C.
    Events {
        /// Stop after N events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Publish keys: create, list, rotate, revoke (secrets are shown once, stored hashed).
    #[command(subcommand)]
    Keys(access::KeysCommand),
    /// Signing keys of publish and playback tokens: create, list, revoke.
    #[command(subcommand, name = "signing-keys")]
    SigningKeys(access::SigningKeysCommand),
    /// Signed tokens: issue, revoke; sign with a local Ed25519 key, make a key pair.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// A stream's playback policy: token required, blocked, or open; or list them.
    Playback(access::PlaybackArgs),
}

/// `5`, `5s`, `1.5s`, `500ms` → a duration.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 5s, 500ms)"))?;
    let secs = v * scale;
    if !(0.001..=3600.0).contains(&secs) {
        return Err("must be between 1ms and 3600s".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs `ferrocast ctl`; on failure prints the reason and exits with code 1.
pub fn main(args: CtlArgs) -> ! {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(anyhow!(e).context("starting the async runtime")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::exit(0),
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ! {
    eprintln!("ferrocast ctl: error: {e:#}");
    std::process::exit(1)
}

type CallFuture<R> = Pin<Box<dyn Future<Output = Result<tonic::Response<R>, Status>> + Send>>;

/// A connection to one controller replica.
struct Ctl {
    client: OperatorServiceClient<Channel>,
    url: String,
    token: Option<String>,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn with_scheme(url: &str, tls: bool) -> String {
    match (url.contains("://"), tls) {
        (true, _) => url.to_owned(),
        (false, true) => format!("https://{url}"),
        (false, false) => format!("http://{url}"),
    }
}

async fn connect(
    url: &str,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<OperatorServiceClient<Channel>> {
    let ep = Endpoint::from_shared(with_scheme(url, tls.is_some()))
        .with_context(|| format!("invalid controller URL {url:?}"))?
        .connect_timeout(timeout);
    let connecting = match (ep.uri().scheme_str(), tls) {
        (Some("https"), Some(tls)) => {
            let connector = ferrocast_tls::grpc::TlsConnector::new(tls.clone());
            tokio::time::timeout(timeout, ep.connect_with_connector(connector)).await
        }
        (Some("https"), None) => {
            bail!("{url}: https needs --ca (the CA of the controller's certificate)")
        }
        (_, Some(_)) => bail!("{url}: --ca is for https:// controllers"),
        _ => tokio::time::timeout(timeout, ep.connect()).await,
    };
    let ch = connecting
        .map_err(|_| anyhow!("no connection within {timeout:?}"))?
        .map_err(|e| {
            // The TLS reason (unknown CA, wrong name) is in the error's sources.
            anyhow!(
                "{}",
                std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(": ")
            )
        })?;
    Ok(OperatorServiceClient::new(ch))
}

impl Ctl {
    async fn open(args: &CtlArgs) -> anyhow::Result<Ctl> {
        let tls = match &args.ca {
            Some(ca) => Some(
                ferrocast_tls::grpc::operator_client_config(
                    ca,
                    args.cert.as_deref().zip(args.key.as_deref()),
                )
                .context("invalid --ca/--cert/--key")?,
            ),
            None => None,
        };
        let mut failures = Vec::new();
        for url in args
            .controllers
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
        {
            match connect(url, args.timeout, tls.as_ref()).await {
                Ok(client) => {
                    return Ok(Ctl {
                        client,
                        url: url.to_owned(),
                        token: args.token.clone(),
                        timeout: args.timeout,
                        tls,
                    })
                }
                Err(e) => failures.push(format!("{url}: {e:#}")),
            }
        }
        if failures.is_empty() {
            bail!("no controller given (--controller URL or FERROCAST_CONTROLLER)");
        }
        bail!("cannot reach the controller ({})", failures.join("; "))
    }

    fn request<T>(&self, msg: T, deadline: bool) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        if deadline {
            r.set_timeout(self.timeout);
        }
        if let Some(t) = &self.token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| anyhow!("the token has characters a header cannot carry"))?;
            r.metadata_mut().insert("authorization", v);
        }
        Ok(r)
    }

    /// A read, on the connected replica.
    async fn read<T, R>(
        &self,
        msg: T,
        f: impl Fn(OperatorServiceClient<Channel>, tonic::Request<T>) -> CallFuture<R>,
    ) -> anyhow::Result<R> {
        let call = f(self.client.clone(), self.request(msg, true)?);
        self.bounded(call).await.map_err(|s| self.explain(&s))
    }

    /// A write: on a follower's refusal naming the leader, once more on the leader.
    async fn write<T: Clone, R>(
        &self,
        msg: T,
        f: impl Fn(OperatorServiceClient<Channel>, tonic::Request<T>) -> CallFuture<R>,
    ) -> anyhow::Result<R> {
        let call = f(self.client.clone(), self.request(msg.clone(), true)?);
        match self.bounded(call).await {
            Ok(r) => Ok(r),
            Err(s) if s.code() == Code::Unavailable => {
                let Some(leader) = s
                    .metadata()
                    .get(LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                else {
                    return Err(self.explain(&s));
                };
                let client = connect(&leader, self.timeout, self.tls.as_ref())
                    .await
                    .with_context(|| format!("cannot reach the leader {leader}"))?;
                let call = f(client, self.request(msg, true)?);
                self.bounded(call)
                    .await
                    .map_err(|s| anyhow!("{} (retried on the leader {leader})", self.explain(&s)))
            }
            Err(s) => Err(self.explain(&s)),
        }
    }

    async fn bounded<R>(&self, call: CallFuture<R>) -> Result<R, Status> {
        // The server enforces the deadline too; this also bounds a hung connection.
        match tokio::time::timeout(self.timeout + Duration::from_millis(500), call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("no answer")),
        }
    }

    fn explain(&self, s: &Status) -> anyhow::Error {
        let url = &self.url;
        match s.code() {
            Code::Unauthenticated => anyhow!(
                "unauthenticated: {url} needs an operator token (--token or FERROCAST_OPERATOR_TOKEN) or certificate (--cert/--key), or the one given is wrong ({})",
                s.message()
            ),
            Code::PermissionDenied => anyhow!("permission denied: {}", s.message()),
            Code::NotFound => anyhow!("not found: {}", s.message()),
            Code::InvalidArgument => anyhow!("invalid request: {}", s.message()),
            Code::FailedPrecondition => anyhow!("refused: {}", s.message()),
            Code::DeadlineExceeded => {
                anyhow!("no answer from {url} within {:?}", self.timeout)
            }
            // A plaintext client at a TLS port sees the connection fail (a transport or
            // HTTP/2 error), nothing clearer.
            Code::Unavailable | Code::Unknown if self.tls.is_none() => anyhow!(
                "{url}: {:?}: {} (if the controller runs with --tls-dir it speaks only TLS: use https:// with --ca)",
                s.code(),
                s.message()
            ),
            Code::Unavailable => anyhow!("unavailable: {url}: {}", s.message()),
            other => anyhow!("{url}: {other:?}: {}", s.message()),
        }
    }
}

async fn run(args: CtlArgs) -> anyhow::Result<()> {
    if matches!(&args.command, CtlCommand::Token(c) if c.is_local()) {
        if let CtlCommand::Token(c) = args.command {
            return access::token_local(c, args.json);
        }
    }
    let ctl = Ctl::open(&args).await?;
    let json = args.json;
    match args.command {
        CtlCommand::Nodes { role } => {
            let role = match role.as_deref() {
                Some("origin") => pb::NodeRole::Origin,
                Some("edge") => pb::NodeRole::Edge,
                _ => pb::NodeRole::Unspecified,
            };
            let req = pb::ListNodesRequest { role: role.into() };
            let r = ctl
                .read(req, |mut c, r| {
                    Box::pin(async move { c.list_nodes(r).await })
                })
                .await?;
            let views: Vec<NodeView> = r.nodes.iter().map(NodeView::from).collect();
            if json {
                print_json(&views)?;
            } else {
                print_nodes(&views);
            }
        }
        CtlCommand::Node { id } => {
            let req = pb::GetNodeRequest { node_id: id };
            let n = ctl
                .read(req, |mut c, r| Box::pin(async move { c.get_node(r).await }))
                .await?;
            let v = NodeView::from(&n);
            if json {
                print_json(&v)?;
            } else {
                print_node(&v);
            }
        }
        CtlCommand::Streams => {
            let r = ctl
                .read(pb::ListStreamsRequest {}, |mut c, r| {
                    Box::pin(async move { c.list_streams(r).await })
                })
                .await?;
            let views: Vec<StreamView> = r.streams.iter().map(StreamView::from).collect();
            if json {
                print_json(&views)?;
            } else {
                print_streams(&views);
            }
        }
        CtlCommand::Stream { name } => {
            let req = pb::GetStreamRequest { stream: name };
            let s = ctl
                .read(req, |mut c, r| {
                    Box::pin(async move { c.get_stream(r).await })
                })
                .await?;
            let v = StreamView::from(&s);
            if json {
                print_json(&v)?;
            } else {
                print_stream(&v);
            }
        }
        CtlCommand::Drain { id, undo } => {
            let req = pb::DrainNodeRequest {
                node_id: id.clone(),
                drain: !undo,
            };
            let r = ctl
                .write(req, |mut c, r| {
                    Box::pin(async move { c.drain_node(r).await })
                })
                .await?;
            let node = r.node.as_ref().map(NodeView::from);
            if json {
                print_json(&DrainView {
                    node_id: id,
                    draining: !undo,
                    node,
                })?;
            } else {
                let what = if undo {
                    "no longer draining"
                } else {
                    "draining"
                };
                match node {
                    Some(n) => println!("node {} {what} (state {})", n.id, n.state),
                    None => println!("node {id} {what} (not live now)"),
                }
            }
        }
        CtlCommand::Kick { stream, reason } => {
            let req = pb::KickPublisherRequest {
                stream: stream.clone(),
                reason,
            };
            let r = ctl
                .write(req, |mut c, r| {
                    Box::pin(async move { c.kick_publisher(r).await })
                })
                .await?;
            if json {
                print_json(&KickView {
                    stream,
                    origin_id: r.origin_id,
                })?;
            } else {
                println!(
                    "stream {stream}: publisher kicked at origin {} (at its next heartbeat)",
                    r.origin_id
                );
            }
        }
        CtlCommand::Resolve {
            stream,
            client_ip,
            region,
        } => {
            let req = pb::ResolveRequest {
                stream,
                client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                region: region.unwrap_or_default(),
            };
            let r = ctl
                .read(req, |mut c, r| Box::pin(async move { c.resolve(r).await }))
                .await?;
            let v = ResolveView::from(&r);
            if json {
                print_json(&v)?;
            } else {
                print_kv(&[
                    ("edge", v.edge_id.clone()),
                    ("url", v.url.clone()),
                    ("reason", v.reason.clone()),
                    ("client region", dash(&v.client_region)),
                    ("region match", yes_no(v.region_match)),
                    ("detail", v.detail.clone()),
                ]);
            }
        }
        CtlCommand::Events { count } => events(&ctl, json, count).await?,
        CtlCommand::Keys(c) => access::keys(&ctl, c, json).await?,
        CtlCommand::SigningKeys(c) => access::signing_keys(&ctl, c, json).await?,
        CtlCommand::Token(c) => access::token(&ctl, c, json).await?,
        CtlCommand::Playback(a) => access::playback(&ctl, a, json).await?,
    }
    Ok(())
}

async fn events(ctl: &Ctl, json: bool, count: Option<u64>) -> anyhow::Result<()> {
    if count == Some(0) {
        return Ok(());
    }
    let req = ctl.request(pb::WatchEventsRequest {}, false)?;
    let mut client = ctl.client.clone();
    let opened = tokio::time::timeout(ctl.timeout, client.watch_events(req))
        .await
        .map_err(|_| anyhow!("no answer from {} within {:?}", ctl.url, ctl.timeout))?;
    let mut stream = opened.map_err(|s| ctl.explain(&s))?.into_inner();
    let mut seen = 0u64;
    if !json {
        println!(
            "{:<24}  {:<16}  {:<12}  {:<16}  {:<12}  {:>5}  DETAIL",
            "TIME", "KIND", "NODE", "STREAM", "FROM", "EPOCH"
        );
    }
    loop {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            m = stream.message() => m,
        };
        let Some(e) = next.map_err(|s| ctl.explain(&s))? else {
            bail!("the controller ended the event stream");
        };
        let v = EventView::from(&e);
        if json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            println!(
                "{:<24}  {:<16}  {:<12}  {:<16}  {:<12}  {:>5}  {}",
                rfc3339(v.at_unix_ms),
                v.kind,
                dash(&v.node_id),
                dash(&v.stream),
                dash(&v.from_node),
                if v.epoch > 0 {
                    v.epoch.to_string()
                } else {
                    "-".into()
                },
                v.detail
            );
        }
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
    }
}

// ---- views (prost messages do not derive serde) ----

/// `NODE_ROLE_EDGE` → `edge`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

#[derive(Debug, Serialize)]
struct AddressesView {
    relay: String,
    http: String,
    rtmp: String,
}

#[derive(Debug, Serialize)]
struct CapacityView {
    max_streams: u32,
    max_viewers: u32,
    max_egress_bps: u64,
}

#[derive(Debug, Serialize)]
struct StreamLoadView {
    stream: String,
    viewers: u32,
    bitrate_bps: u64,
}

#[derive(Debug, Serialize)]
struct NodeView {
    id: String,
    role: String,
    region: String,
    state: String,
    addresses: AddressesView,
    capacity: CapacityView,
    viewers: u32,
    egress_bps: u64,
    ingress_bps: u64,
    streams: Vec<StreamLoadView>,
    last_heartbeat_unix_ms: u64,
}

impl From<&pb::NodeInfo> for NodeView {
    fn from(n: &pb::NodeInfo) -> Self {
        let a = n.addresses.clone().unwrap_or_default();
        let c = n.capacity.unwrap_or_default();
        let l = n.load.clone().unwrap_or_default();
        NodeView {
            id: n.node_id.clone(),
            role: short(n.role().as_str_name(), "NODE_ROLE_"),
            region: n.region.clone(),
            state: short(n.state().as_str_name(), "NODE_STATE_"),
            addresses: AddressesView {
                relay: a.relay,
                http: a.http,
                rtmp: a.rtmp,
            },
            capacity: CapacityView {
                max_streams: c.max_streams,
                max_viewers: c.max_viewers,
                max_egress_bps: c.max_egress_bps,
            },
            viewers: l.viewers,
            egress_bps: l.egress_bps,
            ingress_bps: l.ingress_bps,
            streams: l
                .streams
                .iter()
                .map(|s| StreamLoadView {
                    stream: s.stream.clone(),
                    viewers: s.viewers,
                    bitrate_bps: s.bitrate_bps,
                })
                .collect(),
            last_heartbeat_unix_ms: n.last_heartbeat_unix_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct ContinuityView {
    next_msn: u64,
    discontinuity: u64,
    timeline_end_ms: u64,
}

#[derive(Debug, Serialize)]
struct StreamView {
    stream: String,
    state: String,
    origin: String,
    origin_relay: String,
    epoch: u64,
    continuity: ContinuityView,
    viewers: u32,
    bitrate_bps: u64,
    edges: Vec<String>,
}

impl From<&pb::StreamInfo> for StreamView {
    fn from(s: &pb::StreamInfo) -> Self {
        let a = s.assignment.clone().unwrap_or_default();
        let c = a.continuity.unwrap_or_default();
        StreamView {
            stream: s.stream.clone(),
            state: short(a.state().as_str_name(), "ASSIGNMENT_STATE_"),
            origin: a.origin_id,
            origin_relay: a.origin_relay,
            epoch: a.epoch,
            continuity: ContinuityView {
                next_msn: c.next_msn,
                discontinuity: c.discontinuity,
                timeline_end_ms: c.timeline_end_ms,
            },
            viewers: s.viewers,
            bitrate_bps: s.bitrate_bps,
            edges: s.edges.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct DrainView {
    node_id: String,
    draining: bool,
    node: Option<NodeView>,
}

#[derive(Debug, Serialize)]
struct KickView {
    stream: String,
    origin_id: String,
}

#[derive(Debug, Serialize)]
struct ResolveView {
    edge_id: String,
    url: String,
    reason: String,
    client_region: String,
    region_match: bool,
    detail: String,
}

impl From<&pb::ResolveReply> for ResolveView {
    fn from(r: &pb::ResolveReply) -> Self {
        ResolveView {
            edge_id: r.edge_id.clone(),
            url: r.url.clone(),
            reason: short(r.reason().as_str_name(), "PLACEMENT_REASON_"),
            client_region: r.client_region.clone(),
            region_match: r.region_match,
            detail: r.detail.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct EventView {
    at_unix_ms: u64,
    kind: String,
    node_id: String,
    stream: String,
    from_node: String,
    epoch: u64,
    detail: String,
}

impl From<&pb::Event> for EventView {
    fn from(e: &pb::Event) -> Self {
        EventView {
            at_unix_ms: e.at_unix_ms,
            kind: short(e.kind().as_str_name(), "EVENT_KIND_"),
            node_id: e.node_id.clone(),
            stream: e.stream.clone(),
            from_node: e.from_node.clone(),
            epoch: e.epoch,
            detail: e.detail.clone(),
        }
    }
}

// ---- text output ----

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// `12_500_000` → `12.5M`.
fn bps(v: u64) -> String {
    match v {
        0 => "0".into(),
        v if v >= 1_000_000_000 => format!("{:.1}G", v as f64 / 1e9),
        v if v >= 1_000_000 => format!("{:.1}M", v as f64 / 1e6),
        v if v >= 1_000 => format!("{:.1}k", v as f64 / 1e3),
        v => v.to_string(),
    }
}

fn limit(v: u64) -> String {
    if v == 0 {
        "-".into()
    } else {
        v.to_string()
    }
}

/// How long ago `unix_ms` was, e.g. `1.2s`; `-` for never.
fn age(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{:.1}s", now.saturating_sub(unix_ms) as f64 / 1000.0)
}

/// Unix milliseconds → `2026-01-02T03:04:05.678Z`.
fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Prints rows under `header`, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                let pad = w - c.chars().count();
                out.push_str(c);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_kv(rows: &[(&str, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{:<w$}  {v}", format!("{k}:"), w = w + 1);
    }
}

fn print_nodes(nodes: &[NodeView]) {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let addr = match n.role.as_str() {
                "edge" => &n.addresses.http,
                _ => &n.addresses.relay,
            };
            vec![
                n.id.clone(),
                n.role.clone(),
                n.region.clone(),
                n.state.clone(),
                n.viewers.to_string(),
                n.streams.len().to_string(),
                bps(n.egress_bps.max(n.ingress_bps)),
                age(n.last_heartbeat_unix_ms),
                dash(addr),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ROLE",
            "REGION",
            "STATE",
            "VIEWERS",
            "STREAMS",
            "BITRATE",
            "HEARTBEAT",
            "ADDRESS",
        ],
        &rows,
    );
}

fn print_node(n: &NodeView) {
    print_kv(&[
        ("id", n.id.clone()),
        ("role", n.role.clone()),
        ("region", n.region.clone()),
        ("state", n.state.clone()),
        ("relay", dash(&n.addresses.relay)),
        ("http", dash(&n.addresses.http)),
        ("rtmp", dash(&n.addresses.rtmp)),
        (
            "capacity",
            format!(
                "streams {}, viewers {}, egress {}",
                limit(u64::from(n.capacity.max_streams)),
                limit(u64::from(n.capacity.max_viewers)),
                if n.capacity.max_egress_bps == 0 {
                    "-".into()
                } else {
                    bps(n.capacity.max_egress_bps)
                }
            ),
        ),
        ("viewers", n.viewers.to_string()),
        ("egress", bps(n.egress_bps)),
        ("ingress", bps(n.ingress_bps)),
        (
            "heartbeat",
            format!("{} ago", age(n.last_heartbeat_unix_ms)),
        ),
    ]);
    if !n.streams.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = n
            .streams
            .iter()
            .map(|s| vec![s.stream.clone(), s.viewers.to_string(), bps(s.bitrate_bps)])
            .collect();
        table(&["STREAM", "VIEWERS", "BITRATE"], &rows);
    }
}

fn print_streams(streams: &[StreamView]) {
    let rows: Vec<Vec<String>> = streams
        .iter()
        .map(|s| {
            vec![
                s.stream.clone(),
                s.state.clone(),
                dash(&s.origin),
                s.epoch.to_string(),
                s.viewers.to_string(),
                bps(s.bitrate_bps),
                if s.edges.is_empty() {
                    "-".into()
                } else {
                    s.edges.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "STREAM", "STATE", "ORIGIN", "EPOCH", "VIEWERS", "BITRATE", "EDGES",
        ],
        &rows,
    );
}

fn print_stream(s: &StreamView) {
    print_kv(&[
        ("stream", s.stream.clone()),
        ("state", s.state.clone()),
        ("origin", dash(&s.origin)),
        ("origin relay", dash(&s.origin_relay)),
        ("epoch", s.epoch.to_string()),
        (
            "continuity",
            format!(
                "next msn {}, discontinuity {}, timeline end {} ms",
                s.continuity.next_msn, s.continuity.discontinuity, s.continuity.timeline_end_ms
            ),
        ),
        ("viewers", s.viewers.to_string()),
        ("bitrate", bps(s.bitrate_bps)),
        ("edges", s.edges.join(", ")),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5m").is_err());
        assert!(parse_duration("0").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(bps(12_500_000), "12.5M");
        assert_eq!(short("NODE_ROLE_EDGE", "NODE_ROLE_"), "edge");
        assert_eq!(
            with_scheme("10.0.0.1:50051", false),
            "http://10.0.0.1:50051"
        );
        assert_eq!(
            with_scheme("10.0.0.1:50051", true),
            "https://10.0.0.1:50051"
        );
        assert_eq!(with_scheme("http://c:1", true), "http://c:1");
    }
}
