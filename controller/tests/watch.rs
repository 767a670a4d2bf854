//! `WatchAssignments` and `WatchEvents` against a real etcd with two controller replicas
//! (watchers on the follower), and a controller whose etcd stops answering: degraded
//! health, reads and `/play` from the last good view, watchers that stay open and resume.

mod support;

use ferrocast_controller::ControllerConfig;
use ferrocast_proto::controller::v1 as pb;
use pb::assignment_event::Kind;
use pb::node_service_client::NodeServiceClient;
use pb::operator_service_client::OperatorServiceClient;
use std::time::Duration;
use support::cluster::{eventually, http_get, load, node, register, Beating, Running, WAIT};
use support::EtcdServer;
use tokio::time::{timeout, Instant};
use tonic::Streaming;

const TTL: Duration = Duration::from_secs(2);

fn etcd_config(etcd: &EtcdServer) -> ControllerConfig {
    ControllerConfig {
        etcd: etcd.config(),
        lease_ttl: TTL,
        ..ControllerConfig::default()
    }
}

/// The next message of `s` that `pick` accepts, within `within`.
async fn next_matching<T: std::fmt::Debug, R>(
    s: &mut Streaming<T>,
    within: Duration,
    what: &str,
    mut pick: impl FnMut(&T) -> Option<R>,
) -> (R, Vec<T>) {
    let deadline = Instant::now() + within;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match timeout(left, s.message()).await {
            Err(_) => panic!("no {what} within {within:?}; saw {skipped:?}"),
            Ok(Err(e)) => panic!("stream failed waiting for {what}: {e:?}"),
            Ok(Ok(None)) => panic!("stream ended waiting for {what}"),
            Ok(Ok(Some(m))) => m,
        };
        if let Some(r) = pick(&m) {
            return (r, skipped);
        }
        skipped.push(m);
    }
}

fn upsert_of<'a>(
    e: &'a pb::AssignmentEvent,
    stream: &str,
    origin: &str,
    state: pb::AssignmentState,
) -> Option<&'a pb::Assignment> {
    match &e.kind {
        Some(Kind::Upsert(a))
            if a.stream == stream && a.origin_id == origin && a.state() == state =>
        {
            Some(a)
        }
        _ => None,
    }
}

async fn claim(
    c: &mut NodeServiceClient<tonic::transport::Channel>,
    node: &str,
    stream: &str,
) -> pb::ClaimStreamReply {
    let req = pb::ClaimStreamRequest {
        node_id: node.into(),
        stream: stream.into(),
        ..Default::default()
    };
    timeout(WAIT, c.claim_stream(req))
        .await
        .expect("claim in time")
        .expect("claim")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_streams_claim_orphan_and_takeover_to_watchers() {
    let etcd = EtcdServer::start().await;
    let a = Running::start(etcd_config(&etcd)).await;
    let mut na = NodeServiceClient::new(a.channel().await);
    // o2 registers once `a` leads; `b` starts after, so it follows.
    let o2 = register(&mut na, node("o2", pb::NodeRole::Origin, "eu", 0)).await;
    let _o2_alive = Beating::start(na.clone(), "o2", o2, load(0, &[]), TTL / 4);
    let b = Running::start(etcd_config(&etcd)).await;

    let mut nb = NodeServiceClient::new(b.channel().await);
    let mut ob = OperatorServiceClient::new(b.channel().await);
    let req = pb::WatchAssignmentsRequest {
        node_id: "e1".into(),
    };
    let mut watch = timeout(WAIT, nb.watch_assignments(req.clone()))
        .await
        .unwrap()
        .expect("the follower serves WatchAssignments")
        .into_inner();
    let mut events = timeout(WAIT, ob.watch_events(pb::WatchEventsRequest {}))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let (snapshot, _) = next_matching(&mut watch, WAIT, "snapshot", |e| match &e.kind {
        Some(Kind::Snapshot(s)) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert!(snapshot.assignments.is_empty(), "{snapshot:?}");

    // o1 registers and claims on the leader; the follower's watcher sees it live.
    register(&mut na, node("o1", pb::NodeRole::Origin, "eu", 0)).await;
    let claimed = Instant::now();
    let r = claim(&mut na, "o1", "s").await;
    assert_eq!(r.outcome(), pb::ClaimOutcome::Granted);
    let (live, skipped) = next_matching(&mut watch, WAIT, "the claim", |e| {
        upsert_of(e, "s", "o1", pb::AssignmentState::Live).cloned()
    })
    .await;
    let latency = claimed.elapsed();
    eprintln!("claim → follower watcher: {latency:?}");
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!((live.epoch, live.origin_relay.as_str()), (1, "o1:4433"));

    // o1 never heartbeats: when its lease expires, the assignment is orphaned.
    let (orphaned, _) = next_matching(&mut watch, TTL + WAIT, "the orphan", |e| {
        upsert_of(e, "s", "o1", pb::AssignmentState::Orphaned).cloned()
    })
    .await;
    assert_eq!(orphaned.epoch, 1);

    // o2 takes over under the next epoch.
    let r = claim(&mut na, "o2", "s").await;
    assert_eq!(r.outcome(), pb::ClaimOutcome::TakenOver, "{r:?}");
    let (moved, _) = next_matching(&mut watch, WAIT, "the takeover", |e| {
        upsert_of(e, "s", "o2", pb::AssignmentState::Live).cloned()
    })
    .await;
    assert_eq!((moved.epoch, moved.origin_relay.as_str()), (2, "o2:4433"));

    // The events, in order: o1 up, s started on o1, o1 down, s moved from o1 to o2.
    let (moved_event, before) = next_matching(&mut events, WAIT, "stream moved", |e| {
        (e.kind() == pb::EventKind::StreamMoved).then(|| e.clone())
    })
    .await;
    assert_eq!(
        (
            moved_event.stream.as_str(),
            moved_event.node_id.as_str(),
            moved_event.from_node.as_str(),
            moved_event.epoch
        ),
        ("s", "o2", "o1", 2)
    );
    let position = |kind: pb::EventKind, node: &str| {
        before
            .iter()
            .position(|e| e.kind() == kind && e.node_id == node)
            .unwrap_or_else(|| panic!("no {kind:?} of {node} in {before:?}"))
    };
    let up = position(pb::EventKind::NodeUp, "o1");
    let started = position(pb::EventKind::StreamStarted, "o1");
    let down = position(pb::EventKind::NodeDown, "o1");
    assert!(up < started && started < down, "{before:?}");
    assert_eq!(before[started].stream, "s");
    assert_eq!(before[started].epoch, 1);
    assert!(before
        .iter()
        .chain([&moved_event])
        .all(|e| e.at_unix_ms > 1_600_000_000_000));

    // A late watcher starts from a snapshot of the current state.
    let mut late = timeout(WAIT, nb.watch_assignments(req))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let (snapshot, _) = next_matching(&mut late, WAIT, "snapshot", |e| match &e.kind {
        Some(Kind::Snapshot(s)) => Some(s.clone()),
        _ => None,
    })
    .await;
    let s = &snapshot.assignments[0];
    assert_eq!(
        (
            snapshot.assignments.len(),
            s.origin_id.as_str(),
            s.epoch,
            s.state()
        ),
        (1, "o2", 2, pb::AssignmentState::Live)
    );

    drop(_o2_alive);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_the_controller_is_degraded_serves_reads_and_recovers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let etcd = EtcdServer::start().await;
    let c = Running::start(etcd_config(&etcd)).await;
    let mut nc = NodeServiceClient::new(c.channel().await);
    let mut oc = OperatorServiceClient::new(c.channel().await);
    let mut health = HealthClient::new(c.channel().await);
    let e1 = register(&mut nc, node("e1", pb::NodeRole::Edge, "eu", 100)).await;
    let beating = Beating::start(nc.clone(), "e1", e1, load(3, &[("s", 3)]), TTL / 4);
    let location = "http://e1.example/live/s/index.m3u8";
    let placed = eventually(WAIT, || async {
        let r = http_get(c.http, "/play/s", &[]).await;
        (r.status == 302).then_some(r)
    })
    .await
    .expect("placed on e1");
    assert_eq!(placed.headers["location"], location);
    let mut watch = timeout(
        WAIT,
        nc.watch_assignments(pb::WatchAssignmentsRequest::default()),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    next_matching(&mut watch, WAIT, "snapshot", |e| {
        matches!(e.kind, Some(Kind::Snapshot(_))).then_some(())
    })
    .await;
    let node_health = || HealthCheckRequest {
        service: "ferrocast.controller.v1.NodeService".into(),
    };

    etcd.signal("STOP");
    let metrics = eventually(WAIT, || async {
        let m = http_get(c.http, "/metrics", &[]).await.body;
        m.contains("ferrocast_controller_store_up 0").then_some(m)
    })
    .await;
    assert!(metrics.is_some(), "store_up never went to 0");
    let ready = http_get(c.http, "/readyz", &[]).await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("degraded"), "{}", ready.body);
    assert_eq!(http_get(c.http, "/healthz", &[]).await.status, 200);
    let h = timeout(WAIT, health.check(node_health()))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(h.status(), ServingStatus::NotServing);
    // Reads answer from the last good view, at once.
    let started = Instant::now();
    let nodes = timeout(WAIT, oc.list_nodes(pb::ListNodesRequest::default()))
        .await
        .unwrap()
        .expect("reads are served")
        .into_inner()
        .nodes;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(nodes.iter().any(|n| n.node_id == "e1"), "{nodes:?}");
    let r = http_get(c.http, "/play/s", &[]).await;
    assert_eq!((r.status, r.headers["location"].as_str()), (302, location));

    etcd.signal("CONT");
    let back = eventually(Duration::from_secs(20), || async {
        let m = http_get(c.http, "/metrics", &[]).await.body;
        let ready = http_get(c.http, "/readyz", &[]).await.status == 200;
        (ready && m.contains("ferrocast_controller_store_up 1")).then_some(())
    })
    .await;
    assert!(back.is_some(), "never recovered");
    let h = timeout(WAIT, health.check(node_health()))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(h.status(), ServingStatus::Serving);

    // The watcher opened before the outage is still open and sees what happens now.
    register(&mut nc, node("o1", pb::NodeRole::Origin, "eu", 0)).await;
    let r = claim(&mut nc, "o1", "s").await;
    assert_eq!(r.outcome(), pb::ClaimOutcome::Granted, "{r:?}");
    next_matching(&mut watch, WAIT, "the claim after the outage", |e| {
        upsert_of(e, "s", "o1", pb::AssignmentState::Live).map(|_| ())
    })
    .await;
    drop(beating);
    c.stop().await;
}

/// Where the follower's `/play/s` sends a viewer: the edge id in its `Location`
/// (`http://{id}.example/...`), or the status when it does not redirect.
async fn follower_play(c: &Running) -> Result<String, u16> {
    let r = http_get(c.http, "/play/s", &[]).await;
    match r.headers.get("location") {
        Some(l) if r.status == 302 => Ok(l
            .trim_start_matches("http://")
            .split('.')
            .next()
            .unwrap_or("")
            .to_owned()),
        _ => Err(r.status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_places_viewers_with_the_leaders_load_reports() {
    let etcd = EtcdServer::start().await;
    let a = Running::start(etcd_config(&etcd)).await;
    let mut na = NodeServiceClient::new(a.channel().await);
    // Two edges of 100 viewers: `a-full` is full, `b-free` idle. Heartbeats reach only the
    // leader; without its reports a follower sees both idle and picks `a-full` (the
    // tie-break is the id).
    let full = register(&mut na, node("a-full", pb::NodeRole::Edge, "eu", 100)).await;
    let free = register(&mut na, node("b-free", pb::NodeRole::Edge, "eu", 100)).await;
    let _full = Beating::start(
        na.clone(),
        "a-full",
        full,
        load(100, &[("s", 100)]),
        TTL / 4,
    );
    let free_beat = Beating::start(na.clone(), "b-free", free, load(0, &[]), TTL / 4);
    let b = Running::start(etcd_config(&etcd)).await;
    let ob = OperatorServiceClient::new(b.channel().await);

    let started = Instant::now();
    eventually(WAIT, || async {
        (follower_play(&b).await.as_deref() == Ok("b-free")).then_some(())
    })
    .await
    .expect("the follower never sent a viewer to the edge with room");
    eprintln!(
        "leader's load → follower placement: {:?}",
        started.elapsed()
    );
    for _ in 0..20 {
        assert_eq!(follower_play(&b).await.as_deref(), Ok("b-free"));
    }
    // The follower's node list shows the reported load too.
    let nodes = timeout(WAIT, ob.clone().list_nodes(pb::ListNodesRequest::default()))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let viewers = |id: &str| {
        nodes
            .nodes
            .iter()
            .find(|n| n.node_id == id)
            .and_then(|n| n.load.as_ref())
            .map(|l| l.viewers)
    };
    assert_eq!(viewers("a-full"), Some(100));
    assert_eq!(viewers("b-free"), Some(0));

    // b-free fills up too: the follower answers 503 (every edge at capacity).
    drop(free_beat);
    let _free = Beating::start(
        na.clone(),
        "b-free",
        free,
        load(100, &[("t", 100)]),
        TTL / 4,
    );
    eventually(WAIT, || async {
        (follower_play(&b).await == Err(503)).then_some(())
    })
    .await
    .expect("the follower kept placing viewers on full edges");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_the_store_history() {
    use etcd_client::GetOptions;
    let etcd = EtcdServer::start().await;
    let raw = etcd.client(WAIT).await;
    let c = Running::start(ControllerConfig {
        compact_every: Duration::from_millis(300),
        ..etcd_config(&etcd)
    })
    .await;
    let mut n = NodeServiceClient::new(c.channel().await);
    // Writes: a node, a claim, load reports shared by the leader.
    let o1 = register(&mut n, node("o1", pb::NodeRole::Origin, "eu", 0)).await;
    let _alive = Beating::start(n.clone(), "o1", o1, load(0, &[]), TTL / 4);
    assert_eq!(
        claim(&mut n, "o1", "s").await.outcome(),
        pb::ClaimOutcome::Granted
    );
    // A count of every key from `/` on as of `revision` (0: now); answers at the revision it read.
    let count_at = |revision: i64| {
        raw.call(move |c| {
            let mut kv = c.kv();
            let opts = GetOptions::new()
                .with_from_key()
                .with_revision(revision)
                .with_count_only();
            async move { kv.get("/", Some(opts)).await }
        })
    };
    let old = count_at(0)
        .await
        .expect("range")
        .header()
        .expect("header")
        .revision();
    // Within a few periods, the history before `old` is gone: reading at it is refused
    // as compacted, while the present reads as before.
    let compacted = eventually(Duration::from_secs(10), || async {
        match count_at(old).await {
            Err(e) if e.to_string().contains("compacted") => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(compacted.is_some(), "revision {old} was never compacted");
    let mut o = OperatorServiceClient::new(c.channel().await);
    let s = timeout(
        WAIT,
        o.get_stream(pb::GetStreamRequest { stream: "s".into() }),
    )
    .await
    .unwrap()
    .expect("the assignment survives compaction")
    .into_inner();
    assert_eq!(s.stream, "s");
    assert_eq!(s.assignment.map(|a| a.origin_id).as_deref(), Some("o1"));
    c.stop().await;
}
