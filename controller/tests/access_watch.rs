//! `WatchAccess` fails closed, in process against a real etcd: a replica that has not
//! read the access rules (etcd frozen since before it started) answers `UNAVAILABLE` (never an empty "everything open"
//! snapshot), and once it has, every snapshot names the store revision it was read at.

mod support;

use ferrocast_controller::{Controller, ControllerConfig};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_runtime::metrics::Metrics;
use pb::node_service_client::NodeServiceClient;
use std::sync::Arc;
use std::time::Duration;
use support::EtcdServer;
use tokio::time::timeout;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// Bound on every await of a test.
const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_access_is_unavailable_until_the_replica_has_read_the_rules() {
    // etcd frozen (SIGSTOP) before the replica starts: it has nothing to read.
    let etcd = EtcdServer::start().await;
    etcd.signal("STOP");
    let cfg = ControllerConfig {
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        etcd: etcd.config(),
        lease_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    let c = Controller::bind(cfg, Arc::new(Metrics::new()))
        .await
        .unwrap();
    let addr = c.grpc_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(c.run(stop.clone()));
    let mut client = timeout(WAIT, async {
        loop {
            let ep = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
            match ep.connect().await {
                Ok(ch) => return NodeServiceClient::new(ch),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the controller serves gRPC");
    let watch = |c: &mut NodeServiceClient<_>| {
        let mut c = c.clone();
        async move {
            timeout(
                WAIT,
                c.watch_access(pb::WatchAccessRequest {
                    node_id: "e1".into(),
                }),
            )
            .await
            .expect("answered in time")
        }
    };
    let err = watch(&mut client).await.expect_err("no rules read yet");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("not read the access rules"), "{err}");

    // etcd back: the replica reads the rules and serves them.
    etcd.signal("CONT");
    let snap = timeout(WAIT, async {
        loop {
            if let Ok(r) = watch(&mut client).await {
                let mut s = r.into_inner();
                if let Some(Ok(snap)) = s.next().await {
                    return snap;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("served once the rules are read");
    assert!(snap.revision >= 1, "versioned: {snap:?}");
    stop.cancel();
    timeout(WAIT, task).await.expect("stops in time").unwrap();
}
