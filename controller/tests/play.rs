//! `GET /play/{stream}` on the controller's admin HTTP: edges fabricated by registering
//! them over gRPC with heartbeats carrying load; the region from the trusted header or the
//! CIDR table of the peer address; 302, 503 and 400; draining and dead edges never chosen.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{eventually, http_get, load, node, register, Beating, HttpResponse, Running, WAIT};
use ferrocast_controller::ControllerConfig;
use ferrocast_proto::controller::v1 as pb;
use pb::node_service_client::NodeServiceClient;
use pb::operator_service_client::OperatorServiceClient;
use std::time::Duration;
use tokio::time::timeout;

const TTL: Duration = Duration::from_secs(1);
const HEADER: &str = "x-client-region";

async fn play(c: &Running, path: &str, region: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = region.map(|r| (HEADER, r)).into_iter().collect();
    http_get(c.http, path, &headers).await
}

/// Waits until `/play` sends the viewer to `edge` (the hub and load reports are at most a
/// few hundred milliseconds behind); returns that answer.
async fn until_placed(c: &Running, path: &str, region: Option<&str>, edge: &str) -> HttpResponse {
    let want = format!("http://{edge}.example/");
    eventually(WAIT, || async {
        let r = play(c, path, region).await;
        let ok = r.status == 302
            && r.headers
                .get("location")
                .is_some_and(|l| l.starts_with(&want));
        ok.then_some(r)
    })
    .await
    .unwrap_or_else(|| panic!("{path} from {region:?} never went to {edge}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_redirects_by_region_and_load_and_skips_draining_and_dead_edges() {
    let cidrs = [
        "10.0.0.0/8=eu-west",
        "127.0.0.0/8=eu-west",
        // The test's own address: the longer prefix wins.
        "127.0.0.1/32=us-east",
    ];
    let c = Running::start(ControllerConfig {
        lease_ttl: TTL,
        region_header: Some(HEADER.into()),
        region_cidrs: cidrs.iter().map(|s| s.parse().unwrap()).collect(),
        ..ControllerConfig::default()
    })
    .await;
    let ch = c.channel().await;
    let mut nodes = NodeServiceClient::new(ch.clone());
    let mut op = OperatorServiceClient::new(ch);

    // No edge yet: 503 with Retry-After; a bad key: 400.
    let r = play(&c, "/play/s", Some("eu-west")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.headers["retry-after"], "2");
    assert!(r.body.contains("no live edge"), "{}", r.body);
    for bad in ["/play/a.b", "/play/", "/play/x%20y", "/play/a/b"] {
        let r = play(&c, bad, None).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.body.contains("invalid stream key"), "{}", r.body);
    }

    let mut beating = Vec::new();
    for (id, region, report) in [
        ("eu-1", "eu-west", load(10, &[("s", 10)])),
        ("eu-2", "eu-west", load(0, &[])),
        ("us-1", "us-east", load(50, &[])),
        ("us-0", "us-east", load(0, &[])),
    ] {
        let inc = register(&mut nodes, node(id, pb::NodeRole::Edge, region, 100)).await;
        beating.push((id, Beating::start(nodes.clone(), id, inc, report, TTL / 4)));
    }

    // By header: the eu edge already serving s; the query string is kept.
    let r = until_placed(&c, "/play/s?token=abc", Some("eu-west"), "eu-1").await;
    assert_eq!(
        r.headers["location"],
        "http://eu-1.example/live/s/index.m3u8?token=abc"
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    // A stream nobody serves: the least loaded edge of the region.
    until_placed(&c, "/play/t", Some("eu-west"), "eu-2").await;
    // No header: the CIDR table's region of 127.0.0.1 (the /32 wins over the /8).
    until_placed(&c, "/play/s", None, "us-0").await;
    // The operator API resolves by client address the same way.
    let req = pb::ResolveRequest {
        stream: "s".into(),
        client_ip: "10.9.8.7".into(),
        region: String::new(),
    };
    let res = timeout(WAIT, op.resolve(req))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            res.edge_id.as_str(),
            res.client_region.as_str(),
            res.region_match
        ),
        ("eu-1", "eu-west", true)
    );

    // eu-1 drains: its viewers go to eu-2.
    let drain = pb::DrainNodeRequest {
        node_id: "eu-1".into(),
        drain: true,
    };
    timeout(WAIT, op.drain_node(drain)).await.unwrap().unwrap();
    until_placed(&c, "/play/s", Some("eu-west"), "eu-2").await;
    // us-0 dies (stops heartbeating): after its lease, us viewers go to us-1.
    beating.retain(|(id, _)| *id != "us-0");
    until_placed(&c, "/play/s", None, "us-1").await;

    // From now on, neither the draining nor the dead edge is ever chosen.
    for i in 0..20 {
        let region = ["eu-west", "us-east"][i % 2];
        let r = play(&c, &format!("/play/s{i}"), Some(region)).await;
        assert_eq!(r.status, 302, "{r:?}");
        let l = &r.headers["location"];
        assert!(
            !l.contains("eu-1.example") && !l.contains("us-0.example"),
            "{l}"
        );
    }
    // Every edge gone: 503 again.
    drop(beating);
    let r = eventually(WAIT, || async {
        let r = play(&c, "/play/s", Some("eu-west")).await;
        (r.status == 503).then_some(r)
    })
    .await
    .expect("503 once every edge is gone");
    assert_eq!(r.headers["cache-control"], "no-store");
    c.stop().await;
}
