//! The gRPC API in process: a tonic client against a [`Controller`] on `127.0.0.1:0`, on
//! the in-memory store and on a real etcd (two replicas: a leader and a follower). Also
//! health, server reflection (v1 and v1alpha) and the operator token.

mod support;

use ferrocast_controller::api::LEADER_METADATA;
use ferrocast_controller::{Controller, ControllerConfig};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_runtime::metrics::Metrics;
use pb::node_service_client::NodeServiceClient;
use pb::operator_service_client::OperatorServiceClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::EtcdServer;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

/// Bound on every await of a test.
const WAIT: Duration = Duration::from_secs(10);

/// A controller running in this process.
struct Running {
    addr: SocketAddr,
    http: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn start(mut cfg: ControllerConfig) -> Running {
        cfg.grpc_listen = "127.0.0.1:0".parse().unwrap();
        cfg.http_listen = "127.0.0.1:0".parse().unwrap();
        let c = Controller::bind(cfg, Arc::new(Metrics::new()))
            .await
            .unwrap();
        let (addr, http) = (c.grpc_addr(), c.http_addr());
        let stop = CancellationToken::new();
        let task = tokio::spawn(c.run(stop.clone()));
        Running {
            addr,
            http,
            stop,
            task,
        }
    }

    async fn channel(&self) -> Channel {
        let ep = format!("http://{}", self.addr);
        timeout(
            WAIT,
            Channel::from_shared(ep)
                .unwrap()
                .timeout(Duration::from_secs(5))
                .connect(),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    }

    async fn stop(self) {
        self.stop.cancel();
        timeout(WAIT, self.task)
            .await
            .expect("stops in time")
            .unwrap();
    }
}

fn register(id: &str, role: pb::NodeRole, max_viewers: u32) -> pb::RegisterRequest {
    pb::RegisterRequest {
        node_id: id.into(),
        role: role.into(),
        addresses: Some(pb::NodeAddresses {
            relay: format!("{id}:4433"),
            http: format!("http://{id}.example"),
            rtmp: String::new(),
        }),
        region: "eu".into(),
        capacity: Some(pb::Capacity {
            max_viewers,
            ..Default::default()
        }),
    }
}

async fn reg(c: &mut NodeServiceClient<Channel>, r: pb::RegisterRequest) -> u64 {
    timeout(WAIT, c.register(r))
        .await
        .unwrap()
        .unwrap()
        .into_inner()
        .incarnation
}

/// One heartbeat on a new stream: its reply or the stream's error.
async fn beat(
    c: &mut NodeServiceClient<Channel>,
    id: &str,
    incarnation: u64,
    load: pb::LoadReport,
) -> Result<pb::HeartbeatReply, tonic::Status> {
    let req = pb::HeartbeatRequest {
        node_id: id.into(),
        incarnation,
        load: Some(load),
    };
    let fut = async {
        let mut replies = c
            .heartbeat(tokio_stream::iter(vec![req]))
            .await?
            .into_inner();
        match replies.message().await? {
            Some(r) => Ok(r),
            None => Err(tonic::Status::internal("no reply")),
        }
    };
    timeout(WAIT, fut).await.expect("heartbeat in time")
}

fn viewers(stream: &str, n: u32) -> pb::LoadReport {
    pb::LoadReport {
        viewers: n,
        streams: vec![pb::StreamLoad {
            stream: stream.into(),
            viewers: n,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn claim(
    c: &mut NodeServiceClient<Channel>,
    node: &str,
    stream: &str,
) -> Result<pb::ClaimStreamReply, tonic::Status> {
    let req = pb::ClaimStreamRequest {
        node_id: node.into(),
        stream: stream.into(),
        ..Default::default()
    };
    timeout(WAIT, c.claim_stream(req))
        .await
        .expect("claim in time")
        .map(|r| r.into_inner())
}

fn epoch(r: &pb::ClaimStreamReply) -> u64 {
    r.assignment.as_ref().map(|a| a.epoch).unwrap_or(0)
}

/// Claim, duplicate refusal, takeover after the holder's lease expires, and the old
/// holder fenced; `ttl` is the controller's lease TTL.
async fn claim_and_takeover(c: &mut NodeServiceClient<Channel>, ttl: Duration, st: &str) {
    let o1 = reg(c, register("o1", pb::NodeRole::Origin, 0)).await;
    let o2 = reg(c, register("o2", pb::NodeRole::Origin, 0)).await;

    let r = claim(c, "o1", st).await.unwrap();
    assert_eq!((r.outcome(), epoch(&r)), (pb::ClaimOutcome::Granted, 1));
    let r = claim(c, "o1", st).await.unwrap();
    assert_eq!((r.outcome(), epoch(&r)), (pb::ClaimOutcome::AlreadyHeld, 1));
    let r = claim(c, "o2", st).await.unwrap();
    assert_eq!(r.outcome(), pb::ClaimOutcome::RefusedDuplicate, "{r:?}");
    assert_eq!(r.assignment.as_ref().unwrap().origin_id, "o1");

    // o1 reports its continuity under epoch 1, then goes silent; o2 keeps beating.
    let report = pb::LoadReport {
        streams: vec![pb::StreamLoad {
            stream: st.into(),
            epoch: 1,
            continuity: Some(pb::Continuity {
                next_msn: 42,
                discontinuity: 0,
                timeline_end_ms: 84_000,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let hb = beat(c, "o1", o1, report.clone()).await.unwrap();
    assert!(hb.kick_streams.is_empty());
    let deadline = Instant::now() + ttl + ttl / 2;
    while Instant::now() < deadline {
        beat(c, "o2", o2, Default::default()).await.unwrap();
        sleep(ttl / 4).await;
    }
    let r = claim(c, "o2", st).await.unwrap();
    assert_eq!(
        (r.outcome(), epoch(&r)),
        (pb::ClaimOutcome::TakenOver, 2),
        "{r:?}"
    );
    let cont = r.assignment.unwrap().continuity.unwrap();
    assert_eq!(cont.next_msn, 42);

    // o1 wakes up: its registration is over, and a re-registered o1 is told to kick.
    let err = beat(c, "o1", o1, report.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let o1 = reg(c, register("o1", pb::NodeRole::Origin, 0)).await;
    let hb = beat(c, "o1", o1, report).await.unwrap();
    assert_eq!(hb.kick_streams, [st]);
    let stale = pb::ReleaseStreamRequest {
        node_id: "o1".into(),
        stream: st.into(),
        epoch: 1,
        continuity: None,
    };
    let err = c.release_stream(stale).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_register_claim_takeover_resolve_and_list() {
    // Two seconds, as on etcd: a heartbeat every quarter of it still arrives in time on a
    // machine busy with builds.
    let ttl = Duration::from_secs(2);
    let ctl = Running::start(ControllerConfig {
        lease_ttl: ttl,
        ..ControllerConfig::default()
    })
    .await;
    let ch = ctl.channel().await;
    let mut node = NodeServiceClient::new(ch.clone());
    let mut op = OperatorServiceClient::new(ch);

    let o0 = reg(&mut node, register("o0", pb::NodeRole::Origin, 0)).await;
    let r = claim(&mut node, "o0", "s").await.unwrap();
    assert_eq!(r.outcome(), pb::ClaimOutcome::Granted);

    // Two edges; e1 already serves the stream: the viewer goes there.
    let e1 = reg(&mut node, register("e1", pb::NodeRole::Edge, 100)).await;
    let e2 = reg(&mut node, register("e2", pb::NodeRole::Edge, 100)).await;
    let hb = beat(&mut node, "e1", e1, viewers("s", 10)).await.unwrap();
    assert_eq!(hb.state(), pb::NodeState::Up);
    beat(&mut node, "e2", e2, Default::default()).await.unwrap();
    let req = pb::ResolveRequest {
        stream: "s".into(),
        region: "eu".into(),
        ..Default::default()
    };
    let r = op.resolve(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.edge_id, "e1");
    assert_eq!(r.reason(), pb::PlacementReason::AlreadyServing);
    assert!(r.region_match);
    assert_eq!(r.url, "http://e1.example/live/s/index.m3u8");
    // A new stream goes to the least loaded edge.
    let other = pb::ResolveRequest {
        stream: "t".into(),
        ..req.clone()
    };
    let r = op.resolve(other).await.unwrap().into_inner();
    assert_eq!(
        (r.edge_id.as_str(), r.reason()),
        ("e2", pb::PlacementReason::LeastLoaded)
    );

    let nodes = op
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let mut ids: Vec<_> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["e1", "e2", "o0"]);
    let edges = op
        .list_nodes(pb::ListNodesRequest {
            role: pb::NodeRole::Edge.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(edges.len(), 2);
    let e1_info = edges.iter().find(|n| n.node_id == "e1").unwrap();
    assert_eq!(e1_info.load.as_ref().unwrap().viewers, 10);
    assert!(e1_info.last_heartbeat_unix_ms > 0);

    let streams = op
        .list_streams(pb::ListStreamsRequest {})
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert_eq!(streams.len(), 1);
    let s = &streams[0];
    assert_eq!((s.stream.as_str(), s.viewers), ("s", 10));
    assert_eq!(s.edges, ["e1"]);
    let a = s.assignment.as_ref().unwrap();
    assert_eq!((a.origin_id.as_str(), a.epoch), ("o0", 1));
    assert_eq!(a.state(), pb::AssignmentState::Live);

    // Drain e1: the viewer goes to e2 now, and e1's heartbeat says draining.
    let d = op
        .drain_node(pb::DrainNodeRequest {
            node_id: "e1".into(),
            drain: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.node.unwrap().state(), pb::NodeState::Draining);
    let hb = beat(&mut node, "e1", e1, viewers("s", 10)).await.unwrap();
    assert_eq!(hb.state(), pb::NodeState::Draining);
    let r = op.resolve(req).await.unwrap().into_inner();
    assert_eq!(r.edge_id, "e2");

    // Kick: the holder hears it with its next heartbeat.
    let k = op
        .kick_publisher(pb::KickPublisherRequest {
            stream: "s".into(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.origin_id, "o0");
    let hb = beat(&mut node, "o0", o0, Default::default()).await.unwrap();
    assert_eq!(hb.kick_streams, ["s"]);
    let err = op
        .get_stream(pb::GetStreamRequest {
            stream: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Admin HTTP.
    let body = support::cluster::http_get(ctl.http, "/metrics", &[])
        .await
        .body;
    assert!(body.contains("ferrocast_controller_leader 1"), "{body}");
    assert_eq!(
        support::cluster::http_get(ctl.http, "/readyz", &[])
            .await
            .status,
        200
    );

    claim_and_takeover(&mut node, ttl, "t").await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_calls_need_the_token_when_one_is_configured() {
    let ctl = Running::start(ControllerConfig {
        operator_token: Some("s3cret".into()),
        ..ControllerConfig::default()
    })
    .await;
    let ch = ctl.channel().await;
    let mut op = OperatorServiceClient::new(ch);
    let err = op
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(pb::ListNodesRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    assert!(op
        .list_nodes(req)
        .await
        .unwrap()
        .into_inner()
        .nodes
        .is_empty());
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_v1_and_v1alpha() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let ctl = Running::start(ControllerConfig::default()).await;
    let ch = ctl.channel().await;

    let mut health = HealthClient::new(ch.clone());
    let r = health
        .check(HealthCheckRequest {
            service: "ferrocast.controller.v1.NodeService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let want = [
        "ferrocast.controller.v1.NodeService",
        "ferrocast.controller.v1.OperatorService",
        "grpc.health.v1.Health",
    ];
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut c = ServerReflectionClient::new(ch.clone());
        let mut replies = c
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let r = timeout(WAIT, replies.message()).await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = r.unwrap().message_response else {
            panic!("no service list")
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        for w in want {
            assert!(names.iter().any(|n| n == w), "v1 lists {names:?}");
        }
    }
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "ferrocast.controller.v1.NodeService".into(),
            )),
        };
        let mut c = ServerReflectionClient::new(ch);
        let mut replies = c
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let r = timeout(WAIT, replies.message()).await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(fd)) = r.unwrap().message_response else {
            panic!("no file descriptor")
        };
        assert!(!fd.file_descriptor_proto.is_empty());
    }

    // The real grpcurl, when installed (Debian 12 has no package for it).
    if std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok()
    {
        let addr = ctl.addr.to_string();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("grpcurl")
                .args(["-plaintext", "-max-time", "5", &addr, "list"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        for w in want {
            assert!(text.contains(w), "grpcurl list: {text}");
        }
    } else {
        eprintln!("grpcurl is not installed: reflection checked with the tonic client only");
    }
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_serves_writes_follower_redirects_and_takeover_works() {
    let etcd = EtcdServer::start().await;
    let ttl = Duration::from_secs(2);
    let cfg = ControllerConfig {
        etcd: etcd.config(),
        lease_ttl: ttl,
        ..ControllerConfig::default()
    };
    let a = Running::start(cfg.clone()).await;
    // Let `a` win the election before `b` starts campaigning.
    let mut ca = NodeServiceClient::new(a.channel().await);
    let start = Instant::now();
    loop {
        let r = ca.register(register("probe", pb::NodeRole::Edge, 0)).await;
        if r.is_ok() {
            break;
        }
        assert!(start.elapsed() < WAIT, "a never led: {r:?}");
        sleep(Duration::from_millis(100)).await;
    }
    let b = Running::start(cfg).await;
    let mut cb = NodeServiceClient::new(b.channel().await);

    // The follower refuses writes and names the leader.
    let err = claim(&mut cb, "o1", "s").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let leader = err.metadata().get(LEADER_METADATA).expect("leader named");
    assert_eq!(leader.to_str().unwrap(), a.addr.to_string());

    claim_and_takeover(&mut ca, ttl, "s").await;

    // The follower reads the same state.
    let mut ob = OperatorServiceClient::new(b.channel().await);
    let s = ob
        .get_stream(pb::GetStreamRequest { stream: "s".into() })
        .await
        .unwrap()
        .into_inner();
    let a_s = s.assignment.unwrap();
    assert_eq!((a_s.origin_id.as_str(), a_s.epoch), ("o2", 2));

    // The leader stops (and resigns): the follower takes over within a lease.
    a.stop().await;
    let start = Instant::now();
    loop {
        let r = cb.register(register("o3", pb::NodeRole::Origin, 0)).await;
        if r.is_ok() {
            break;
        }
        assert!(start.elapsed() < ttl * 3, "b never led: {r:?}");
        sleep(Duration::from_millis(100)).await;
    }
    b.stop().await;
}
